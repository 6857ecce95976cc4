/* pgshard-migrate add-shard N: makes shard N (already in the config, empty) ready to take
 * buckets: the schema copied from shard 0 (pg_dump --schema-only | psql, the pgshard schema,
 * publications and subscriptions left out), the sharded tables' sequences started at
 * N * 2^48 + 1, and the shard recorded in the catalog's pgshard.shards. It owns no bucket
 * until moves give it some (plan --add-shard N --apply). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/buf.h"
#include "migrate/move.h"
#include "shardmap/catalog.h"

#define ADD_CI_MAX 2048

/* argv run with stdin from in (or -1) and stdout to out (or -1), the migrate user's password
 * in PGPASSWORD rather than on a command line anyone may read. Returns the child's pid. */
static pid_t add_spawn(char *const argv[], int in, int out, int close_fd, const char *password)
{
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    if (in >= 0)
        dup2(in, 0);
    if (out >= 0)
        dup2(out, 1);
    if (close_fd >= 0)
        close(close_fd);
    if (password)
        setenv("PGPASSWORD", password, 1);
    execvp(argv[0], argv);
    fprintf(stderr, "pgshard-migrate: add-shard: cannot run %s: %s\n", argv[0], strerror(errno));
    _exit(127);
}

static bool add_exited_ok(pid_t pid)
{
    int st;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR)
            return false;
    return WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

/* pg_dump --schema-only of shard 0 into psql on shard n, ON_ERROR_STOP. */
static int add_copy_schema(mv_move *m, int n)
{
    const cfg_config *cfg = m->o->cfg;
    char src[ADD_CI_MAX], dst[ADD_CI_MAX];
    if (mv_conninfo(cfg, 0, false, src, sizeof src) >= sizeof src ||
        mv_conninfo(cfg, n, false, dst, sizeof dst) >= sizeof dst)
        return mv_fail(m, "a shard's connection string is too long");
    const char *dump = getenv("PGSHARD_PG_DUMP"), *psql = getenv("PGSHARD_PSQL");
    dump = dump ? dump : "pg_dump";
    psql = psql ? psql : "psql";
    char *dump_argv[] = {(char *)dump,
                         "--schema-only",
                         "--exclude-schema=pgshard",
                         "--no-publications",
                         "--no-subscriptions",
                         "-d",
                         src,
                         NULL};
    char *psql_argv[] = {(char *)psql, "-X",        "-q", "-v", "ON_ERROR_STOP=1",
                         "-o",         "/dev/null", "-d", dst,  NULL};
    int fd[2];
    if (pipe(fd) < 0)
        return mv_fail(m, "pipe: %s", strerror(errno));
    fflush(NULL);
    const char *pw = cfg_migrate_user(cfg)->password;
    pid_t d = add_spawn(dump_argv, -1, fd[1], fd[0], pw);
    pid_t p = d > 0 ? add_spawn(psql_argv, fd[0], -1, fd[1], pw) : -1;
    close(fd[0]);
    close(fd[1]);
    bool dump_ok = d > 0 && add_exited_ok(d);
    bool psql_ok = p > 0 && add_exited_ok(p);
    if (!dump_ok || !psql_ok)
        return mv_fail(m, "copying the schema from shard 0 to shard %d failed (%s; its message is above)", n,
                       !dump_ok ? "pg_dump" : "psql");
    return 0;
}

static int add_run(mv_move *m, int n)
{
    char err[512], sn[16];
    sm_map *map = NULL;
    snprintf(sn, sizeof sn, "%d", n);
    if (sm_catalog_load(m->cat, (uint32_t)m->o->cfg->nshards, m->o->cfg->buckets, &map, err, sizeof err) < 0)
        return mv_fail(m, "%s", err);
    uint32_t owned = sm_map_shard_buckets(map, (uint32_t)n);
    sm_map_free(map);
    if (owned > 0)
        return mv_fail(m, "shard %d owns %u buckets already: it is not a new shard", n, owned);
    if (!(m->dst = mv_connect(m, n)))
        return -1;
    PGresult *res =
        mv_exec(m, m->dst, "reading shard's tables",
                "SELECT count(*) FROM pg_class AS c JOIN pg_namespace AS s ON s.oid = c.relnamespace"
                " WHERE c.relkind IN ('r', 'p') AND s.nspname NOT IN ('pg_catalog',"
                " 'information_schema', 'pgshard') AND s.nspname NOT LIKE 'pg\\_%'",
                0, NULL);
    if (!res)
        return -1;
    long long tables = mv_ll(res, 0, 0);
    PQclear(res);
    if (tables > 0)
        return mv_fail(m,
                       "shard %d already has %lld tables: add-shard copies the schema into an empty database",
                       n, tables);
    mv_say(m, "copying the schema from shard 0 to shard %d", n);
    if (add_copy_schema(m, n) < 0)
        return -1;
    pgs_buf b = {0};
    bool any = cfg_seq_range_sql(m->o->cfg, n, &b);
    pgs_buf_append_u8(&b, 0);
    int rc = pgs_buf_failed(&b) ? mv_fail(m, "out of memory")
             : any              ? mv_run(m, m->dst, "starting the sequences", (const char *)b.data, 0, NULL)
                                : 0;
    pgs_buf_free(&b);
    const char *p[] = {sn};
    if (rc < 0 ||
        mv_run(m, m->cat, "recording the shard",
               "INSERT INTO pgshard.shards (shard) VALUES ($1) ON CONFLICT (shard) DO NOTHING", 1, p) < 0)
        return -1;
    mv_say(m,
           "shard %d is ready and owns no bucket: give it some with plan --add-shard %d --apply, or move "
           "--buckets LIST --to %d",
           n, n, n);
    return 0;
}

int mig_add_shard(const mig_opts *o)
{
    char *end = NULL;
    long n = o->nargs == 1 ? strtol(o->args[0], &end, 10) : -1;
    if (o->nargs != 1 || *end || end == o->args[0] || n <= 0 || n >= o->cfg->nshards) {
        fprintf(stderr,
                "pgshard-migrate: add-shard takes one shard number, of a [shard.N] in the config other "
                "than 0 (add the section first)\n");
        return MIG_EXIT_USAGE;
    }
    mv_move m = {.o = o};
    int rc = -1;
    if (!cfg_migrate_user(o->cfg))
        fprintf(o->err,
                "pgshard-migrate: add-shard: no user to log in to the shards with: set migrate_user\n");
    else if ((m.cat = mig_connect(o)) != NULL)
        rc = add_run(&m, (int)n);
    if (rc < 0 && m.err[0])
        fprintf(o->err, "pgshard-migrate: add-shard %ld: %s\n", n, m.err);
    PQfinish(m.cat);
    PQfinish(m.dst);
    return rc < 0 ? MIG_EXIT_ERROR : MIG_EXIT_OK;
}

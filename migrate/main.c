/* pgshard-migrate's entry point: options, the config, the catalog connection and the
 * table of commands. What each command does is in its own file (init.c, status.c, check.c). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "migrate/mig.h"
#include "shardmap/catalog.h"

#define MIG_CONNECT_TIMEOUT_S 10

static void usage(FILE *f)
{
    fprintf(f,
            "pgshard-migrate %s: the shard map's catalog, for pgshard\n\n"
            "Usage: pgshard-migrate -c FILE COMMAND [options]\n\n"
            "Commands:\n"
            "  init            create the catalog in catalog_dsn (schema pgshard: bucket_map,\n"
            "                  tenant_map, map_version, proxies) and fill it with the default map\n"
            "                  of the config's shards and buckets; running it again changes nothing\n"
            "  status [--json] the map (buckets and tenant overrides per shard, map_version) and the\n"
            "                  proxies that use it (live: heartbeat within 5 s), as text or JSON\n"
            "  check [--json]  whether data can be moved between shards: the same tables, columns,\n"
            "                  primary keys and indexes on every shard; each sharded table's key\n"
            "                  column (of key_type) and a primary key or replica identity that\n"
            "                  includes it; wal_level = logical, a free replication slot and a free\n"
            "                  logical replication worker on every shard; no other move running.\n"
            "                  Each finding names the table or shard and its fix\n"
            "  list [--json]   every move the catalog records: keys, shards, state, step, error\n"
            "  move --buckets LIST --to N    move buckets (\"17,18,40-47\") from their shard to\n"
            "  move --tenant KEY --to N      shard N, or one tenant (a tenant override), under live\n"
            "                  traffic: copy (logical replication), catch up, freeze the moving\n"
            "                  keys on every live pgshard, flip the map, verify, clean up\n"
            "  resume ID       go on with a move that stopped, from the step it was in\n"
            "  abort ID        undo a move that has not flipped; the source is left as it was\n"
            "  verify ID [--json]  row counts and checksums of the moved keys on both shards, and\n"
            "                  the keys that differ; exit 1 when they differ\n"
            "  cleanup ID      finish a flipped move: subscription, publication, slot, the\n"
            "                  source's copy of the moved rows, the fence\n"
            "  add-shard N     prepare shard N (a [shard.N] of the config, an empty database): the\n"
            "                  schema of shard 0 (pg_dump --schema-only), its sequences' range, the\n"
            "                  catalog's pgshard.shards; it owns no bucket until moves give it some\n"
            "  plan [--add-shard N] [--max-moves K] [--apply] [--json]\n"
            "                  bucket moves that bring every shard within 10 %% of the mean size\n"
            "                  (rows and bytes measured per bucket on the shards), at most K buckets;\n"
            "                  --apply runs them\n\n"
            "Options:\n"
            "  -c, --config FILE   the pgshard INI file; its catalog_dsn names the catalog (required)\n"
            "  -h, --help          show this help\n"
            "  -V, --version       show the version\n\n"
            "Exit status: 0 done, 1 error (config, catalog unreachable or invalid), 2 usage;\n"
            "check exits 0 when it finds nothing and 1 on any finding; verify 1 when the shards\n"
            "differ; move, resume, abort and cleanup 1 when the move stopped (see list).\n"
            "It never prompts.\n",
            PGS_VERSION);
}

PGconn *mig_connect(const mig_opts *o)
{
    char err[512];
    if (!o->cfg->catalog_dsn) {
        fprintf(o->err, "pgshard-migrate: %s: no catalog_dsn in [pgshard]: there is no catalog to use\n",
                o->cfg->path);
        return NULL;
    }
    PGconn *conn =
        sm_catalog_connect(o->cfg->catalog_dsn, "pgshard-migrate", MIG_CONNECT_TIMEOUT_S, err, sizeof err);
    if (!conn)
        fprintf(o->err, "pgshard-migrate: catalog (catalog_dsn): cannot connect: %s\n", err);
    return conn;
}

static const struct {
    const char *name;
    int (*run)(const mig_opts *o);
    bool takes_json;
    bool takes_args;
} mig_commands[] = {
    {"init", mig_init, false, false},          {"status", mig_status, true, false},
    {"check", mig_check, true, false},         {"list", mig_list, true, false},
    {"move", mig_move, false, true},           {"resume", mig_resume, false, true},
    {"abort", mig_abort, false, true},         {"verify", mig_verify, true, true},
    {"cleanup", mig_cleanup, false, true},     {"plan", mig_plan, true, true},
    {"add-shard", mig_add_shard, false, true},
};

/* The command and its own options after the global ones: "status --json". */
static int mig_dispatch(const char *path, int argc, char **argv)
{
    const char *name = argv[0];
    mig_opts o = {.out = stdout, .err = stderr, .args = argv + 1};
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0)
            o.json = true;
        else
            o.args[o.nargs++] = argv[i];
    }
    for (size_t i = 0; i < sizeof mig_commands / sizeof mig_commands[0]; i++) {
        if (strcmp(name, mig_commands[i].name) != 0)
            continue;
        if (o.json && !mig_commands[i].takes_json) {
            fprintf(stderr, "pgshard-migrate: %s takes no --json\n", name);
            return MIG_EXIT_USAGE;
        }
        if (o.nargs > 0 && !mig_commands[i].takes_args) {
            fprintf(stderr, "pgshard-migrate: %s: unknown argument '%s'\n", name, o.args[0]);
            return MIG_EXIT_USAGE;
        }
        char err[512];
        cfg_config *cfg;
        if (cfg_load(path, &cfg, err, sizeof err) < 0) {
            fprintf(stderr, "pgshard-migrate: %s\n", err);
            return MIG_EXIT_ERROR;
        }
        o.cfg = cfg;
        int rc = mig_commands[i].run(&o);
        cfg_free(cfg);
        return rc;
    }
    fprintf(stderr, "pgshard-migrate: unknown command '%s' (try init, status, check, list or move; --help)\n",
            name);
    return MIG_EXIT_USAGE;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    const char *path = NULL;
    int ch;
    /* "+": stop at the command, whose own options (--json) follow it. */
    while ((ch = getopt_long(argc, argv, "+c:hV", opts, NULL)) != -1) {
        switch (ch) {
        case 'c':
            path = optarg;
            break;
        case 'h':
            usage(stdout);
            return MIG_EXIT_OK;
        case 'V':
            printf("pgshard-migrate %s\n", PGS_VERSION);
            return MIG_EXIT_OK;
        default:
            usage(stderr);
            return MIG_EXIT_USAGE;
        }
    }
    if (!path || optind >= argc) {
        usage(stderr);
        return MIG_EXIT_USAGE;
    }
    return mig_dispatch(path, argc - optind, argv + optind);
}

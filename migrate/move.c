/* pgshard-migrate move, resume and list: a move of buckets or of one tenant from its shard
 * (the source) to another (the target), as a state machine whose every step is recorded in
 * the catalog before and after it runs, so that a crash anywhere is followed by resume or
 * abort. The steps (ARCHITECTURE.md section 8):
 *
 *   check     the keys are on one source, nothing of them on the target, no other move
 *   prepare   on the source: the fence (a table, and a dormant trigger on each sharded
 *             table, created now because CREATE TRIGGER locks the table) and the marker
 *             table; the marker table on the target
 *   publish   a publication on the source whose row filter is the moving keys
 *   subscribe a subscription on the target that copies them (copy_data)
 *   sync      the initial copy done, then the target caught up with the source
 *   freeze    the proxies hold the moving keys and acknowledge; the fence is armed; the
 *             target catches up to a marker written after it; the map flips, in one
 *             catalog transaction with the version bump and NOTIFY
 *   verify    row counts and checksums of the moved keys, source against target
 *   cleanup   subscription, publication and slot dropped; the moved rows deleted from the
 *             source in batches; the fence removed once every live proxy has the new map
 *
 * Steps are idempotent, so a resume runs the step that was running again. */
#include "migrate/move.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "shardmap/catalog.h"
#include "shardmap/hash.h"
#include "shardmap/key.h"

#define MV_CONNECT_TIMEOUT "10"
#define MV_FREEZE_TRIES 3
#define MV_SYNC_REPORT_MS 2000
#define MV_CATCHUP_MS 600000 /* the catch-up before the freeze: lag, not a pause, so patient */
/* "pgshard" as a bigint advisory-lock key, plus one: serializes the creation of moves. */
#define MV_CREATE_LOCK "8099569346997806081"

static const char *const mv_steps[] = {"check",  "prepare", "publish", "subscribe", "sync",
                                       "freeze", "verify",  "cleanup", "done"};
enum { MV_STEP_FREEZE = 5, MV_STEP_DONE = 8 };

/* ---- small things ---- */

void mv_sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static uint64_t mv_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void mv_say(mv_move *m, const char *fmt, ...)
{
    char when[32];
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
    if (m->id > 0)
        fprintf(m->o->out, "%s move %lld: ", when, m->id);
    else
        fprintf(m->o->out, "%s ", when);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(m->o->out, fmt, ap);
    va_end(ap);
    fputc('\n', m->o->out);
    fflush(m->o->out);
}

int mv_fail(mv_move *m, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m->err, sizeof m->err, fmt, ap);
    va_end(ap);
    for (char *p = m->err; *p; p++)
        if (*p == '\n' || *p == '\r' || *p == '\t')
            *p = ' ';
    /* Before the move has an id, whoever is creating it reports m->err. */
    if (m->id > 0)
        fprintf(m->o->err, "pgshard-migrate: move %lld: %s\n", m->id, m->err);
    return -1;
}

PGresult *mv_exec(mv_move *m, PGconn *conn, const char *what, const char *sql, int n,
                  const char *const *params)
{
    /* Without parameters, the simple protocol: the script of the fence is several statements. */
    PGresult *res = n == 0 ? PQexec(conn, sql) : PQexecParams(conn, sql, n, NULL, params, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(res);
    if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK)
        return res;
    mv_fail(m, "%s: %s", what, res ? PQresultErrorMessage(res) : PQerrorMessage(conn));
    PQclear(res);
    return NULL;
}

int mv_run(mv_move *m, PGconn *conn, const char *what, const char *sql, int n, const char *const *params)
{
    PGresult *res = mv_exec(m, conn, what, sql, n, params);
    PQclear(res);
    return res ? 0 : -1;
}

long long mv_ll(const PGresult *res, int row, int col)
{
    return strtoll(PQgetvalue(res, row, col), NULL, 10);
}

void mv_log(mv_move *m, const char *step, const char *event, const char *detail)
{
    const char *p[] = {m->ids, step, event, detail};
    PGresult *res = PQexecParams(m->cat,
                                 "INSERT INTO pgshard.migration_log (migration_id, step, event, detail)"
                                 " VALUES ($1, $2, $3, $4)",
                                 4, NULL, p, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_COMMAND_OK)
        fprintf(m->o->err, "pgshard-migrate: move %lld: cannot write the log: %s", m->id,
                PQresultErrorMessage(res));
    PQclear(res);
}

int mv_set_state(mv_move *m, const char *state, const char *error)
{
    const char *p[] = {m->ids, state, error};
    if (mv_run(m, m->cat, "recording the state",
               "UPDATE pgshard.migrations SET state = $2, error = $3, updated_at = now() WHERE id = $1", 3,
               p) < 0)
        return -1;
    snprintf(m->state, sizeof m->state, "%s", state);
    return 0;
}

int mv_notify(mv_move *m)
{
    return mv_run(m, m->cat, "NOTIFY", "NOTIFY " SM_CATALOG_CHANNEL, 0, NULL);
}

/* fmt with the table as %1$s and the filter as %2$s, into a new string. */
char *mv_table_sql(const mv_table *t, const char *fmt)
{
    int n = snprintf(NULL, 0, fmt, t->qname, t->filter);
    char *s = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (s)
        snprintf(s, (size_t)n + 1, fmt, t->qname, t->filter);
    return s;
}

int mv_each_table(mv_move *m, PGconn *conn, const char *what, const char *fmt)
{
    for (int i = 0; i < m->ntables; i++) {
        char *sql = mv_table_sql(&m->tables[i], fmt);
        int rc = sql ? mv_run(m, conn, what, sql, 0, NULL) : mv_fail(m, "%s: out of memory", what);
        free(sql);
        if (rc < 0)
            return -1;
    }
    return 0;
}

long long mv_batches(mv_move *m, PGconn *conn, const char *what, const char *fmt)
{
    long long total = 0;
    for (int i = 0; i < m->ntables; i++) {
        char *sql = mv_table_sql(&m->tables[i], fmt);
        if (!sql)
            return mv_fail(m, "%s: out of memory", what);
        for (;;) {
            PGresult *res = mv_exec(m, conn, what, sql, 0, NULL);
            if (!res) {
                free(sql);
                return -1;
            }
            long long n = strtoll(PQcmdTuples(res), NULL, 10);
            PQclear(res);
            total += n;
            if (n == 0)
                break;
        }
        free(sql);
    }
    return total;
}

/* ---- the move's identity: its row, its tables, its connections ---- */

static void mv_free(mv_move *m)
{
    PQfinish(m->cat);
    PQfinish(m->src);
    PQfinish(m->dst);
    PQfinish(m->snap);
    free(m->buckets);
    free(m->tenant);
    for (int i = 0; i < m->ntables; i++) {
        free(m->tables[i].qname);
        free(m->tables[i].key);
        free(m->tables[i].filter);
        free(m->tables[i].pk);
    }
    free(m->tables);
    mv_seq_free(m);
}

/* The servers' NOTICEs ("schema pgshard already exists, skipping") are not the user's
 * business: the steps say what they do. */
static void mv_quiet(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

bool mv_has(PGconn *conn, const char *name)
{
    const char *p[] = {name};
    PGresult *res = PQexecParams(conn, "SELECT to_regclass($1) IS NOT NULL", 1, NULL, p, NULL, NULL, 0);
    bool yes = PQresultStatus(res) == PGRES_TUPLES_OK && strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    PQclear(res);
    return yes;
}

PGconn *mv_connect(mv_move *m, int shard)
{
    const cfg_config *cfg = m->o->cfg;
    const cfg_node *node = &cfg->shards[shard].primary;
    const cfg_user *user = cfg_migrate_user(cfg);
    char port[8], db[CFG_HOST_MAX];
    if (!user)
        return mv_fail(m,
                       "%s: no user to log in to the shards with: set migrate_user (or monitor_user) to a "
                       "[user.NAME] with a plain password",
                       cfg->path),
               NULL;
    snprintf(port, sizeof port, "%u", (unsigned)node->port);
    cfg_tables_dbname(cfg, db, sizeof db);
    cfg_conninfo ci;
    cfg_conninfo_make(&ci, cfg, node->host, port, user, db, "pgshard-migrate", MV_CONNECT_TIMEOUT, NULL);
    PGconn *conn = PQconnectdbParams(ci.keys, ci.vals, 0);
    if (conn && PQstatus(conn) == CONNECTION_OK) {
        PQsetNoticeProcessor(conn, mv_quiet, NULL);
        return conn;
    }
    mv_fail(m, "shard %d: cannot connect to %s:%s as %s: %s", shard, node->host, port, user->name,
            conn ? PQerrorMessage(conn) : "out of memory");
    PQfinish(conn);
    return NULL;
}

/* libpq's conninfo value quoting: in single quotes, with \ and ' escaped. */
static size_t mv_conninfo_value(char *out, size_t cap, size_t at, const char *key, const char *v)
{
    if (!v)
        return at;
    at += (size_t)snprintf(out + at, at < cap ? cap - at : 0, "%s%s='", at ? " " : "", key);
    for (; *v; v++) {
        if ((*v == '\\' || *v == '\'') && at < cap)
            out[at++] = '\\';
        if (at < cap)
            out[at++] = *v;
    }
    if (at < cap)
        out[at++] = '\'';
    if (at < cap)
        out[at] = '\0';
    return at;
}

size_t mv_conninfo(const cfg_config *cfg, int shard, bool password, char *out, size_t cap)
{
    const cfg_node *node = &cfg->shards[shard].primary;
    char port[8], db[CFG_HOST_MAX];
    snprintf(port, sizeof port, "%u", (unsigned)node->port);
    cfg_tables_dbname(cfg, db, sizeof db);
    cfg_conninfo ci;
    cfg_conninfo_make(&ci, cfg, node->host, port, cfg_migrate_user(cfg), db, "pgshard-migrate", NULL, NULL);
    size_t at = 0;
    out[0] = '\0';
    for (int i = 0; ci.keys[i]; i++)
        if (password || strcmp(ci.keys[i], "password") != 0)
            at = mv_conninfo_value(out, cap, at, ci.keys[i], ci.vals[i]);
    return at;
}

/* The hash SQL of a key kind, as the proxy computes it (shardmap/hash.c). */
static const char *mv_hash_fn(int kind)
{
    return kind == SM_KEY_INT    ? "hashint8extended(%s::int8, 0)"
           : kind == SM_KEY_UUID ? "uuid_hash_extended(%s, 0)"
                                 : "hashtextextended(%s, 0)";
}

static const char *mv_kind_name(int kind)
{
    return kind == SM_KEY_INT ? "int" : kind == SM_KEY_UUID ? "uuid" : "text";
}

/* The condition that selects a table's moving rows: its key's bucket among the move's
 * buckets, or its key equal to the tenant. Row filters of publications take it as it is. */
static char *mv_filter(mv_move *m, const mv_table *t)
{
    char hash[256], *lit = NULL, *out = NULL;
    size_t cap;
    if (m->tenant) {
        lit = PQescapeLiteral(m->src, m->tenant, strlen(m->tenant));
        if (!lit)
            return NULL;
        cap = strlen(t->key) + strlen(lit) + 8;
        if ((out = malloc(cap)))
            snprintf(out, cap, "%s = %s", t->key, lit);
        PQfreemem(lit);
        return out;
    }
    snprintf(hash, sizeof hash, mv_hash_fn(t->kind), t->key);
    /* "{1,2}" -> "(1,2)" */
    size_t nb = strlen(m->buckets);
    cap = strlen(hash) + nb + 48;
    if ((out = malloc(cap)))
        snprintf(out, cap, "(%s & %u) IN (%.*s)", hash, m->nbuckets - 1, (int)(nb - 2), m->buckets + 1);
    return out;
}

/* The sharded tables of the config, with their key's kind and primary key read from the
 * source. */
static int mv_load_tables(mv_move *m)
{
    const cfg_config *cfg = m->o->cfg;
    m->tables = calloc((size_t)cfg->ntables + 1, sizeof *m->tables);
    if (!m->tables)
        return mv_fail(m, "out of memory");
    for (int i = 0; i < cfg->ntables; i++) {
        const cfg_table *ct = &cfg->tables[i];
        if (ct->omnisharded)
            continue;
        char name[2 * CFG_NAME_MAX + 8];
        char *s = ct->schema[0] ? PQescapeIdentifier(m->src, ct->schema, strlen(ct->schema)) : NULL;
        char *n = PQescapeIdentifier(m->src, ct->name, strlen(ct->name));
        mv_table *t = &m->tables[m->ntables++];
        if (n)
            snprintf(name, sizeof name, "%s%s%s", s ? s : "", s ? "." : "", n);
        PQfreemem(s);
        PQfreemem(n);
        t->qname = n ? strdup(name) : NULL;
        t->key_name = ct->shard_key;
        char *k = PQescapeIdentifier(m->src, ct->shard_key, strlen(ct->shard_key));
        t->key = k ? strdup(k) : NULL;
        PQfreemem(k);
        if (!t->qname || !t->key)
            return mv_fail(m, "out of memory");
        const char *p[] = {t->qname, ct->shard_key};
        PGresult *res =
            mv_exec(m, m->src, "reading the tables",
                    "SELECT a.atttypid::int8, (SELECT 'ROW(' || string_agg(quote_ident(pa.attname), ', ' "
                    "ORDER BY k.ord)"
                    " || ')' FROM pg_index AS i, unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)"
                    " JOIN pg_attribute AS pa ON pa.attrelid = $1::regclass AND pa.attnum = k.attnum"
                    " WHERE i.indrelid = $1::regclass AND i.indisprimary)"
                    " FROM pg_attribute AS a WHERE a.attrelid = $1::regclass AND a.attname = $2 AND NOT "
                    "a.attisdropped",
                    2, p);
        if (!res)
            return -1;
        if (PQntuples(res) != 1) {
            PQclear(res);
            return mv_fail(m, "table %s has no column %s on shard %d: run pgshard-migrate check", t->qname,
                           ct->shard_key, m->source);
        }
        t->kind = sm_key_type_of((uint32_t)strtoul(PQgetvalue(res, 0, 0), NULL, 10));
        t->pk = PQgetisnull(res, 0, 1) ? NULL : strdup(PQgetvalue(res, 0, 1));
        PQclear(res);
        if (t->kind < 0)
            return mv_fail(m, "table %s: its key %s is not of a key type", t->qname, ct->shard_key);
        if (!(t->filter = mv_filter(m, t)))
            return mv_fail(m, "out of memory");
    }
    if (m->ntables == 0)
        return mv_fail(m, "the config lists no sharded table ([table.NAME] with shard_key): nothing to move");
    return 0;
}

/* Reads the move's row into m; m->id set. */
static int mv_read(mv_move *m)
{
    const char *p[] = {m->ids};
    PGresult *res = mv_exec(m, m->cat, "reading the move",
                            "SELECT source, target, buckets::text, tenant, state, step"
                            " FROM pgshard.migrations WHERE id = $1",
                            1, p);
    if (!res)
        return -1;
    if (PQntuples(res) != 1) {
        PQclear(res);
        return mv_fail(m, "no such move in pgshard.migrations");
    }
    m->source = (int)mv_ll(res, 0, 0);
    m->target = (int)mv_ll(res, 0, 1);
    m->buckets = PQgetisnull(res, 0, 2) ? NULL : strdup(PQgetvalue(res, 0, 2));
    m->tenant = PQgetisnull(res, 0, 3) ? NULL : strdup(PQgetvalue(res, 0, 3));
    snprintf(m->state, sizeof m->state, "%s", PQgetvalue(res, 0, 4));
    snprintf(m->step, sizeof m->step, "%s", PQgetvalue(res, 0, 5));
    PQclear(res);
    snprintf(m->name, sizeof m->name, "pgshard_move_%lld", m->id);
    if (!m->buckets && !m->tenant)
        return mv_fail(m, "out of memory");
    if (m->source >= m->o->cfg->nshards || m->target >= m->o->cfg->nshards)
        return mv_fail(m, "moves from shard %d to shard %d, which the config does not have", m->source,
                       m->target);
    return 0;
}

/* Opens what a move needs: its row, the source and target primaries, its tables. */
static int mv_open(mv_move *m)
{
    if (mv_read(m) < 0)
        return -1;
    if (!(m->src = mv_connect(m, m->source)) || !(m->dst = mv_connect(m, m->target)))
        return -1;
    return mv_load_tables(m);
}

/* ---- creating a move ---- */

typedef struct mv_args {
    const char *buckets; /* "17,18,40-47" */
    const char *tenant;
    int to;
} mv_args;

/* "17,18,40-47" into "{17,18,40,...}", each below nbuckets, without repeats. */
static char *mv_parse_buckets(const char *list, uint32_t nbuckets, char *err, size_t errlen)
{
    bool *seen = calloc(nbuckets, 1);
    size_t cap = 16 + (size_t)nbuckets * 7, at = 0;
    char *out = malloc(cap);
    const char *p = list;
    if (!seen || !out)
        goto oom;
    out[at++] = '{';
    while (*p) {
        char *end;
        long a = strtol(p, &end, 10), b = a;
        if (end == p || a < 0)
            goto bad;
        if (*end == '-') {
            p = end + 1;
            b = strtol(p, &end, 10);
            if (end == p || b < a)
                goto bad;
        }
        if (b >= (long)nbuckets) {
            snprintf(err, errlen, "bucket %ld: the map has buckets 0 to %u", b, nbuckets - 1);
            goto fail;
        }
        for (long x = a; x <= b; x++)
            if (!seen[x]) {
                seen[x] = true;
                at += (size_t)snprintf(out + at, cap - at, "%s%ld", at > 1 ? "," : "", x);
            }
        if (*end == ',' && end[1])
            end++;
        else if (*end)
            goto bad;
        p = end;
    }
    if (at == 1)
        goto bad;
    out[at++] = '}';
    out[at] = '\0';
    free(seen);
    return out;
bad:
    snprintf(err, errlen, "--buckets '%s': expected a list of buckets and ranges such as 17,18,40-47", list);
    goto fail;
oom:
    snprintf(err, errlen, "out of memory");
fail:
    free(seen);
    free(out);
    return NULL;
}

/* The type of the sharded tables' key, which a tenant's text is read as: key_type when
 * the first sharded table has one, else its column's type on shard 0. */
int mv_key_oid(mv_move *m, uint32_t *oid)
{
    const cfg_config *cfg = m->o->cfg;
    for (int i = 0; i < cfg->ntables; i++) {
        const cfg_table *t = &cfg->tables[i];
        if (t->omnisharded)
            continue;
        if (t->key_type != CFG_KEY_AUTO) {
            *oid = t->key_type == CFG_KEY_INT    ? SM_OID_INT8
                   : t->key_type == CFG_KEY_TEXT ? SM_OID_TEXT
                                                 : SM_OID_UUID;
            return 0;
        }
        char name[2 * CFG_NAME_MAX + 2];
        snprintf(name, sizeof name, "%s%s%s", t->schema, t->schema[0] ? "." : "", t->name);
        const char *p[] = {name, t->shard_key};
        PGconn *conn = mv_connect(m, 0);
        PGresult *res =
            conn ? mv_exec(m, conn, "reading the key's type",
                           "SELECT atttypid::int8 FROM pg_attribute WHERE attrelid = to_regclass($1)"
                           " AND attname = $2 AND NOT attisdropped",
                           2, p)
                 : NULL;
        bool ok = res && PQntuples(res) == 1;
        if (ok)
            *oid = (uint32_t)strtoul(PQgetvalue(res, 0, 0), NULL, 10);
        else if (res)
            mv_fail(m, "table %s has no column %s on shard 0: run pgshard-migrate check", name, t->shard_key);
        PQclear(res);
        PQfinish(conn);
        return ok ? 0 : -1;
    }
    return mv_fail(m, "the config lists no sharded table ([table.NAME] with shard_key): nothing to move");
}

typedef struct mv_ov_ctx {
    uint32_t oid, mask;
    int source, target;
    const bool *moving; /* by bucket */
    char *err;
    size_t errlen;
} mv_ov_ctx;

int mv_tenant_bucket(uint32_t oid, const char *tenant, size_t len, uint32_t nbuckets)
{
    sm_key key;
    if (sm_key_from_text(&key, oid, tenant, len) < 0)
        return -1;
    return (int)(sm_key_hash(&key) & (nbuckets - 1));
}

static int mv_ov_one(void *arg, const char *tenant, size_t len, uint32_t shard)
{
    mv_ov_ctx *c = arg;
    bool near = (int)shard == c->source || (int)shard == c->target;
    int b = near ? mv_tenant_bucket(c->oid, tenant, len, c->mask + 1) : -1;
    if (b < 0 || !c->moving[b])
        return 0;
    if ((int)shard == c->source)
        snprintf(c->err, c->errlen,
                 "tenant %.*s of bucket %u is kept on shard %d by a tenant override: the bucket's move would "
                 "take its rows away from it; move the tenant first (move --tenant), or leave its bucket out",
                 (int)len, tenant, (unsigned)b, c->source);
    else
        snprintf(c->err, c->errlen,
                 "tenant %.*s of bucket %u is on shard %d already by a tenant override: its rows there would "
                 "meet the bucket's copy; leave its bucket out, or move it to another shard",
                 (int)len, tenant, (unsigned)b, c->target);
    return -1;
}

/* A tenant of a moving bucket that an override keeps on the source would lose its rows to
 * the bucket's cleanup, and one that an override puts on the target has rows there that the
 * bucket's copy would meet: such a move is refused. */
static int mv_overrides_in(const mig_opts *o, const sm_map *map, const char *buckets, int source, int target,
                           char *err, size_t errlen)
{
    if (sm_map_override_count(map) == 0)
        return 0;
    mv_move probe = {.o = o};
    uint32_t n = sm_map_buckets(map);
    bool *moving = calloc(n, 1);
    if (!moving) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (const char *p = buckets + 1; *p && *p != '}';) {
        char *end;
        moving[strtoul(p, &end, 10) % n] = true;
        p = *end == ',' ? end + 1 : end;
    }
    mv_ov_ctx c = {
        .mask = n - 1, .source = source, .target = target, .moving = moving, .err = err, .errlen = errlen};
    int rc = mv_key_oid(&probe, &c.oid);
    if (rc < 0)
        snprintf(err, errlen, "%s", probe.err);
    else
        rc = sm_map_each_override(map, mv_ov_one, &c) != 0 ? -1 : 0;
    free(moving);
    return rc;
}

/* Inserts the move's row, after checking under a lock that no other move is active and
 * where the keys are now. Returns the id, or -1. */
static long long mv_create(const mig_opts *o, PGconn *cat, const mv_args *a)
{
    char err[MV_ERR_MAX] = "", canon[1024], target[16], nb[16], tb[16] = "";
    sm_map *map = NULL;
    char *buckets = NULL;
    long long id = -1;
    int source = -1;
    PGresult *res = NULL;
    /* The map is read before the lock (in a transaction of its own): only moves change it,
     * and the lock makes this the only one. */
    if (sm_catalog_load(cat, (uint32_t)o->cfg->nshards, o->cfg->buckets, &map, err, sizeof err) < 0)
        goto out;
    res = PQexec(cat, "BEGIN; SELECT pg_advisory_xact_lock(" MV_CREATE_LOCK ")");
    bool ok = PQresultStatus(res) == PGRES_TUPLES_OK;
    PQclear(res);
    res = NULL;
    if (!ok) {
        snprintf(err, sizeof err, "%s", PQerrorMessage(cat));
        goto out;
    }
    res = PQexec(cat, "SELECT id, source, target, state FROM pgshard.migrations"
                      " WHERE state NOT IN ('done', 'aborted') ORDER BY id LIMIT 1");
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        snprintf(err, sizeof err, "reading pgshard.migrations: %s (run pgshard-migrate init)",
                 PQresultErrorMessage(res));
        goto out;
    }
    if (PQntuples(res) > 0) {
        snprintf(err, sizeof err,
                 "move %s (shard %s to %s) is %s: one move at a time; resume or abort it first",
                 PQgetvalue(res, 0, 0), PQgetvalue(res, 0, 1), PQgetvalue(res, 0, 2), PQgetvalue(res, 0, 3));
        goto out;
    }
    PQclear(res);
    res = NULL;
    uint32_t nbuckets = sm_map_buckets(map);
    if (a->buckets) {
        if (!(buckets = mv_parse_buckets(a->buckets, nbuckets, err, sizeof err)))
            goto out;
        /* Every bucket on one shard, and no tenant of theirs held there by an override. */
        for (const char *p = buckets + 1; *p && *p != '}';) {
            char *end;
            long b = strtol(p, &end, 10);
            int s = sm_map_bucket_shard(map, (uint32_t)b);
            if (source >= 0 && s != source) {
                snprintf(err, sizeof err,
                         "bucket %ld is on shard %d and others on shard %d: a move has one source", b, s,
                         source);
                goto out;
            }
            source = s;
            p = *end == ',' ? end + 1 : end;
        }
    } else if (a->tenant) {
        mv_move probe = {.o = o};
        uint32_t oid = SM_OID_INT8;
        sm_key key;
        sm_key_buf kb;
        size_t len;
        int rc;
        if (mv_key_oid(&probe, &oid) < 0) {
            snprintf(err, sizeof err, "%s", probe.err);
            goto out;
        }
        if ((rc = sm_key_from_text(&key, oid, a->tenant, strlen(a->tenant))) < 0) {
            snprintf(err, sizeof err, "--tenant '%s': %s", a->tenant, sm_strerror(rc));
            goto out;
        }
        const char *c = sm_key_canonical(&key, &kb, &len);
        if (len >= sizeof canon) {
            snprintf(err, sizeof err, "--tenant: longer than %zu bytes", sizeof canon - 1);
            goto out;
        }
        memcpy(canon, c, len);
        canon[len] = '\0';
        if ((source = sm_map_route(map, &key, NULL)) < 0) {
            snprintf(err, sizeof err, "--tenant '%s': cannot route it", a->tenant);
            goto out;
        }
        /* The proxies tell in-flight transactions of the tenant by its bucket. */
        snprintf(tb, sizeof tb, "%u", (unsigned)(sm_key_hash(&key) & (nbuckets - 1)));
    }
    if (source == a->to) {
        snprintf(err, sizeof err, "the keys are on shard %d already", source);
        goto out;
    }
    if (buckets && mv_overrides_in(o, map, buckets, source, a->to, err, sizeof err) < 0)
        goto out;
    snprintf(target, sizeof target, "%d", a->to);
    snprintf(nb, sizeof nb, "%d", source);
    const char *p[] = {nb, target, buckets, a->buckets ? NULL : canon, a->buckets ? NULL : tb};
    res = PQexecParams(cat,
                       "INSERT INTO pgshard.migrations (source, target, buckets, tenant, tenant_bucket)"
                       " VALUES ($1, $2, $3::int[], $4, $5::int) RETURNING id",
                       5, NULL, p, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        snprintf(err, sizeof err, "recording the move: %s", PQresultErrorMessage(res));
        goto out;
    }
    id = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    res = PQexec(cat, "COMMIT");
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        snprintf(err, sizeof err, "recording the move: %s", PQresultErrorMessage(res));
        id = -1;
    }
out:
    PQclear(res);
    if (id < 0) {
        res = PQexec(cat, "ROLLBACK");
        PQclear(res);
        fprintf(o->err, "pgshard-migrate: move: %s\n", err);
    }
    free(buckets);
    sm_map_free(map);
    return id;
}

/* ---- the steps before the flip ---- */

/* The keys on one source that the map still gives it, nothing of them on the target. */
static int mv_step_check(mv_move *m)
{
    const char *p[] = {m->ids};
    PGresult *res = mv_exec(m, m->src, "wal_level", "SELECT current_setting('wal_level')", 0, NULL);
    if (!res)
        return -1;
    bool logical = strcmp(PQgetvalue(res, 0, 0), "logical") == 0;
    PQclear(res);
    if (!logical)
        return mv_fail(m,
                       "shard %d: wal_level is not logical, which a move needs (run pgshard-migrate check)",
                       m->source);
    res = mv_exec(m, m->cat, "other moves",
                  "SELECT string_agg(id::text, ', ') FROM pgshard.migrations"
                  " WHERE state NOT IN ('done', 'aborted') AND id <> $1",
                  1, p);
    if (!res)
        return -1;
    if (!PQgetisnull(res, 0, 0)) {
        mv_fail(m, "move %s is active too: one move at a time", PQgetvalue(res, 0, 0));
        PQclear(res);
        return -1;
    }
    PQclear(res);
    for (int i = 0; i < m->ntables; i++) {
        /* Rows of the moving keys on the target would collide with the copy, or are the
         * leftovers of an earlier move that was not cleaned up. Skipped once the copy ran. */
        char *sql = mv_table_sql(&m->tables[i], "SELECT count(*) FROM %1$s WHERE %2$s");
        if (!sql)
            return mv_fail(m, "out of memory");
        res = mv_exec(m, m->dst, "counting the target's rows", sql, 0, NULL);
        free(sql);
        if (!res)
            return -1;
        long long n = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
        PQclear(res);
        if (n > 0)
            return mv_fail(m,
                           "table %s on shard %d already has %lld rows of the moving keys: delete them first",
                           m->tables[i].qname, m->target, n);
    }
    return 0;
}

/* The fence: armed by a row of pgshard.fence, it makes the source refuse writes to the
 * moving keys from anyone. The trigger reads the table per row, which is cheap while no
 * fence is armed (a tiny table); creating the trigger locks its table, so it happens here,
 * long before the freeze. Cleanup and abort set pgshard.fence_bypass to delete. */
static const char mv_fence_sql[] =
    "CREATE SCHEMA IF NOT EXISTS pgshard;"
    "CREATE TABLE IF NOT EXISTS pgshard.fence (migration_id bigint PRIMARY KEY, buckets int[], tenant text,"
    " nbuckets int NOT NULL, target int NOT NULL, armed bool NOT NULL DEFAULT false);"
    "CREATE TABLE IF NOT EXISTS pgshard.move_marker (migration_id bigint PRIMARY KEY, seq bigint NOT NULL);"
    /* SECURITY DEFINER: the writers need no right on schema pgshard to be checked by it. */
    "CREATE OR REPLACE FUNCTION pgshard.fence() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER"
    " SET search_path = pg_catalog AS $f$"
    " DECLARE f record; k text; h bigint;"
    " BEGIN"
    "  IF coalesce(current_setting('pgshard.fence_bypass', true), '') <> 'on' THEN"
    "   FOR f IN SELECT * FROM pgshard.fence WHERE armed LOOP"
    "    FOR i IN 1..2 LOOP"
    "     k := NULL;"
    "     IF i = 1 AND TG_OP <> 'INSERT' THEN k := to_jsonb(OLD) ->> TG_ARGV[0];"
    "     ELSIF i = 2 AND TG_OP <> 'DELETE' THEN k := to_jsonb(NEW) ->> TG_ARGV[0]; END IF;"
    "     CONTINUE WHEN k IS NULL;"
    "     IF f.tenant IS NOT NULL THEN"
    "      CONTINUE WHEN k <> f.tenant;"
    "     ELSE"
    "      h := CASE TG_ARGV[1] WHEN 'int' THEN hashint8extended(k::int8, 0)"
    "           WHEN 'uuid' THEN uuid_hash_extended(k::uuid, 0) ELSE hashtextextended(k, 0) END;"
    "      CONTINUE WHEN NOT ((h & (f.nbuckets - 1))::int = ANY (f.buckets));"
    "     END IF;"
    "     RAISE EXCEPTION USING ERRCODE = '55000',"
    "      MESSAGE = format('tenant key %s of %s is moving to shard %s (pgshard move %s): write it through "
    "pgshard',"
    "                       k, TG_TABLE_NAME, f.target, f.migration_id),"
    "      HINT = 'retry the transaction; pgshard sends it to the key''s new shard';"
    "    END LOOP;"
    "   END LOOP;"
    "  END IF;"
    "  IF TG_OP = 'DELETE' THEN RETURN OLD; END IF;"
    "  RETURN NEW;"
    " END $f$;";

static int mv_step_prepare(mv_move *m)
{
    char nb[16], tg[16];
    snprintf(nb, sizeof nb, "%u", m->nbuckets);
    snprintf(tg, sizeof tg, "%d", m->target);
    const char *p[] = {m->ids, m->buckets, m->tenant, nb, tg};
    if (mv_run(m, m->src, "creating the fence", mv_fence_sql, 0, NULL) < 0 ||
        mv_run(m, m->src, "recording the fence",
               "INSERT INTO pgshard.fence (migration_id, buckets, tenant, nbuckets, target)"
               " VALUES ($1, $2::int[], $3, $4, $5) ON CONFLICT (migration_id) DO NOTHING",
               5, p) < 0 ||
        mv_run(m, m->dst, "creating the marker table",
               "CREATE SCHEMA IF NOT EXISTS pgshard;"
               "CREATE TABLE IF NOT EXISTS pgshard.move_marker (migration_id bigint PRIMARY KEY, seq bigint "
               "NOT NULL)",
               0, NULL) < 0)
        return -1;
    for (int i = 0; i < m->ntables; i++) {
        char sql[1024];
        const mv_table *t = &m->tables[i];
        char *key = PQescapeLiteral(m->src, t->key_name, strlen(t->key_name));
        if (!key)
            return mv_fail(m, "out of memory");
        snprintf(sql, sizeof sql,
                 "CREATE OR REPLACE TRIGGER pgshard_fence BEFORE INSERT OR UPDATE OR DELETE ON %s"
                 " FOR EACH ROW EXECUTE FUNCTION pgshard.fence(%s, '%s')",
                 t->qname, key, mv_kind_name(t->kind));
        PQfreemem(key);
        if (mv_run(m, m->src, "creating the fence trigger", sql, 0, NULL) < 0)
            return -1;
    }
    return 0;
}

static bool mv_exists(mv_move *m, PGconn *conn, const char *sql)
{
    const char *p[] = {m->name};
    PGresult *res = PQexecParams(conn, sql, 1, NULL, p, NULL, NULL, 0);
    bool yes = PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) > 0;
    PQclear(res);
    return yes;
}

static int mv_step_publish(mv_move *m)
{
    if (mv_exists(m, m->src, "SELECT 1 FROM pg_publication WHERE pubname = $1"))
        return 0;
    size_t cap = 256;
    for (int i = 0; i < m->ntables; i++)
        cap += strlen(m->tables[i].qname) + strlen(m->tables[i].filter) + 16;
    char *sql = malloc(cap);
    if (!sql)
        return mv_fail(m, "out of memory");
    size_t at = (size_t)snprintf(sql, cap, "CREATE PUBLICATION %s FOR TABLE ", m->name);
    for (int i = 0; i < m->ntables; i++)
        at +=
            (size_t)snprintf(sql + at, cap - at, "%s WHERE (%s), ", m->tables[i].qname, m->tables[i].filter);
    snprintf(sql + at, cap - at, "pgshard.move_marker WHERE (migration_id = %lld)", m->id);
    int rc = mv_run(m, m->src, "creating the publication", sql, 0, NULL);
    free(sql);
    return rc;
}

static int mv_step_subscribe(mv_move *m)
{
    if (mv_exists(m, m->dst, "SELECT 1 FROM pg_subscription WHERE subname = $1"))
        return 0;
    char ci[2048];
    /* The subscription logs in to the source as pgshard-migrate does. */
    if (mv_conninfo(m->o->cfg, m->source, true, ci, sizeof ci) >= sizeof ci)
        return mv_fail(m, "the source's connection string is too long");
    char *lit = PQescapeLiteral(m->dst, ci, strlen(ci));
    if (!lit)
        return mv_fail(m, "out of memory");
    char sql[4096];
    snprintf(sql, sizeof sql,
             "CREATE SUBSCRIPTION %s CONNECTION %s PUBLICATION %s"
             " WITH (copy_data = true, slot_name = '%s', synchronous_commit = 'off')",
             m->name, lit, m->name, m->name);
    PQfreemem(lit);
    return mv_run(m, m->dst, "creating the subscription", sql, 0, NULL);
}

/* Writes a new marker on the source (through the publication) and returns its number. */
static long long mv_marker_put(mv_move *m)
{
    const char *p[] = {m->ids};
    /* Committed with synchronous_commit on whatever the server's setting: the walsender
     * sends only flushed WAL, and flushing the marker's commit flushes every earlier write
     * too, instead of waiting for the WAL writer (up to wal_writer_delay, 200 ms). */
    if (mv_run(m, m->src, "writing the marker", "BEGIN; SET LOCAL synchronous_commit = on", 0, NULL) < 0)
        return -1;
    PGresult *res = mv_exec(m, m->src, "writing the marker",
                            "INSERT INTO pgshard.move_marker AS k VALUES ($1, 1)"
                            " ON CONFLICT (migration_id) DO UPDATE SET seq = k.seq + 1 RETURNING seq",
                            1, p);
    long long seq = res ? strtoll(PQgetvalue(res, 0, 0), NULL, 10) : -1;
    PQclear(res);
    if (mv_run(m, m->src, "writing the marker", res ? "COMMIT" : "ROLLBACK", 0, NULL) < 0)
        return -1;
    return seq;
}

/* Waits until the target has applied marker seq: logical replication applies the source's
 * transactions in commit order, so every write committed on the source before the marker
 * is then on the target. Returns 1 when it arrived, 0 at the deadline, -1 on error. */
static int mv_marker_wait(mv_move *m, long long seq, uint64_t deadline_ms, unsigned poll_ms)
{
    const char *p[] = {m->ids};
    for (;;) {
        PGresult *res = mv_exec(m, m->dst, "reading the marker",
                                "SELECT seq FROM pgshard.move_marker WHERE migration_id = $1", 1, p);
        if (!res)
            return -1;
        bool there = PQntuples(res) == 1 && strtoll(PQgetvalue(res, 0, 0), NULL, 10) >= seq;
        PQclear(res);
        if (there)
            return 1;
        if (mv_now_ms() >= deadline_ms)
            return 0;
        mv_sleep_ms(poll_ms);
    }
}

/* The moving rows of each table on the source (counted once, for the progress) and each
 * table's oid on the target (how the subscription names it). */
static int mv_sync_sizes(mv_move *m, long long *rows, char (*oids)[16])
{
    for (int i = 0; i < m->ntables; i++) {
        char *sql = mv_table_sql(&m->tables[i], "SELECT count(*) FROM %1$s WHERE %2$s");
        if (!sql)
            return mv_fail(m, "out of memory");
        PGresult *res = mv_exec(m, m->src, "counting the moving rows", sql, 0, NULL);
        free(sql);
        if (!res)
            return -1;
        rows[i] = mv_ll(res, 0, 0);
        PQclear(res);
        const char *p[] = {m->tables[i].qname};
        if (!(res = mv_exec(m, m->dst, "reading the target's tables", "SELECT $1::regclass::oid", 1, p)))
            return -1;
        snprintf(oids[i], sizeof oids[i], "%s", PQgetvalue(res, 0, 0));
        PQclear(res);
    }
    return 0;
}

/* One progress report: a bar redrawn in place on a terminal, a timestamped line otherwise. */
static void mv_sync_report(mv_move *m, long long done, long long total, double bytes, double secs, bool final)
{
    double frac = total > 0 ? (double)done / (double)total : 1.0;
    double rate = secs > 0 ? bytes / secs / 1e6 : 0;
    double eta = frac > 0.001 && frac < 1 ? secs * (1 - frac) / frac : 0;
    FILE *f = m->o->out;
    if (isatty(fileno(f))) {
        char bar[31];
        int fill = (int)(frac * 30 + 0.5);
        for (int k = 0; k < 30; k++)
            bar[k] = k < fill ? '#' : '.';
        bar[30] = '\0';
        fprintf(f, "\rmove %lld: sync [%s] %3.0f%%  %lld/%lld rows  %.0f MB  %.1f MB/s  ETA %.0f s   %s",
                m->id, bar, frac * 100, done, total, bytes / 1e6, rate, eta, final ? "\n" : "");
        fflush(f);
    } else {
        mv_say(m, "sync: %.0f %% (%lld of %lld rows), %.0f MB in %.0f s, %.1f MB/s, ETA %.0f s", frac * 100,
               done, total, bytes / 1e6, secs, rate, eta);
    }
}

/* The initial copy (every table of the subscription ready), then the catch-up. Progress:
 * rows of the tables copied whole plus those of the copies running, against the moving rows
 * counted on the source at the start; bytes as the copies report them. */
static int mv_step_sync(mv_move *m)
{
    const char *p[] = {m->name};
    long long *rows = calloc((size_t)m->ntables, sizeof *rows);
    char(*oids)[16] = calloc((size_t)m->ntables, sizeof *oids);
    double *tbytes = calloc((size_t)m->ntables, sizeof *tbytes);
    uint64_t start = mv_now_ms(), next_report = start;
    double bytes_done = 0;
    long long total = 0;
    if (!rows || !oids || !tbytes) {
        free(rows);
        free(oids);
        free(tbytes);
        return mv_fail(m, "out of memory");
    }
    int rc = mv_sync_sizes(m, rows, oids);
    for (int i = 0; rc == 0 && i < m->ntables; i++)
        total += rows[i];
    while (rc == 0) {
        PGresult *res =
            mv_exec(m, m->dst, "reading the subscription",
                    "SELECT r.srrelid::text, r.srsubstate IN ('r', 's'), coalesce(c.tuples_processed, 0),"
                    " coalesce(c.bytes_processed, 0), (SELECT sync_error_count + apply_error_count"
                    " FROM pg_stat_subscription_stats AS t WHERE t.subname = $1)"
                    " FROM pg_subscription AS s JOIN pg_subscription_rel AS r ON r.srsubid = s.oid"
                    " LEFT JOIN pg_stat_progress_copy AS c ON c.relid = r.srrelid"
                    " WHERE s.subname = $1",
                    1, p);
        if (!res) {
            rc = -1;
            break;
        }
        int n = PQntuples(res), ready = 0;
        long long done = 0;
        double bytes = 0;
        long long errors = n > 0 ? mv_ll(res, 0, 4) : 0;
        for (int r = 0; r < n; r++) {
            bool whole = strcmp(PQgetvalue(res, r, 1), "t") == 0;
            double b = strtod(PQgetvalue(res, r, 3), NULL);
            ready += whole;
            done += mv_ll(res, r, 2);
            for (int i = 0; i < m->ntables; i++) {
                if (strcmp(oids[i], PQgetvalue(res, r, 0)) != 0)
                    continue;
                done += whole ? rows[i] : 0;
                /* A finished copy leaves pg_stat_progress_copy: its last figure stays. */
                tbytes[i] = b > tbytes[i] ? b : tbytes[i];
            }
        }
        PQclear(res);
        for (int i = 0; i < m->ntables; i++)
            bytes += tbytes[i];
        bytes_done = bytes;
        uint64_t now = mv_now_ms();
        double secs = (double)(now - start) / 1000.0;
        if (errors > 0) {
            rc = mv_fail(m,
                         "the subscription on shard %d failed %lld times: see that server's log "
                         "(then abort, fix and move again)",
                         m->target, errors);
        } else if (n > 0 && ready == n) {
            mv_sync_report(m, total, total, bytes_done, secs, true);
            break;
        } else if (now >= next_report) {
            mv_sync_report(m, done > total ? total : done, total, bytes_done, secs, false);
            next_report = now + MV_SYNC_REPORT_MS;
        }
        mv_sleep_ms(100);
    }
    free(rows);
    free(oids);
    free(tbytes);
    if (rc < 0)
        return -1;
    mv_say(m, "sync: initial copy done in %.1f s; catching up", (double)(mv_now_ms() - start) / 1000.0);
    long long seq = mv_marker_put(m);
    if (seq < 0)
        return -1;
    int r = mv_marker_wait(m, seq, mv_now_ms() + MV_CATCHUP_MS, 20);
    if (r == 0)
        return mv_fail(m, "the target did not catch up with the source within %d s", MV_CATCHUP_MS / 1000);
    return r < 0 ? -1 : 0;
}

/* ---- freeze and flip ---- */

int mv_unfreeze(mv_move *m, const char *why)
{
    const char *p[] = {m->ids};
    if (m->snap)
        PQclear(PQexec(m->snap, "ROLLBACK"));
    /* A move whose flip committed (its answer lost) keeps its fence: the state is read
     * first. Then the fence goes before the proxies are told, so that a crash in between
     * leaves the keys held (resume or abort undoes it), never sent to an armed fence. */
    PGresult *res = mv_exec(m, m->cat, "unfreezing",
                            "SELECT 1 FROM pgshard.migrations WHERE id = $1"
                            " AND state IN ('freezing', 'failed') AND step = 'freeze'",
                            1, p);
    if (!res)
        return -1;
    bool frozen = PQntuples(res) == 1;
    PQclear(res);
    if (!frozen)
        return mv_fail(
            m, "cannot unfreeze: the move is no longer freezing (it flipped?): see pgshard-migrate list");
    if (mv_has(m->src, "pgshard.fence") &&
        mv_run(m, m->src, "disarming the fence",
               "UPDATE pgshard.fence SET armed = false WHERE migration_id = $1", 1, p) < 0)
        return -1;
    if (mv_run(m, m->cat, "unfreezing",
               "UPDATE pgshard.migrations SET state = 'running', updated_at = now() WHERE id = $1"
               " AND state IN ('freezing', 'failed') AND step = 'freeze'",
               1, p) < 0 ||
        mv_notify(m) < 0)
        return -1;
    snprintf(m->state, sizeof m->state, "running");
    mv_log(m, "freeze", "unfreeze", why);
    mv_say(m, "unfrozen: %s", why);
    return 0;
}

/* Waits for every live proxy's acknowledgement of freeze seq. Returns 1 when all have
 * acknowledged, 0 at the deadline (with the proxies still missing in missing), -1. */
static int mv_acks_wait(mv_move *m, const char *seq, uint64_t deadline_ms, char *missing, size_t cap)
{
    const char *p[] = {m->ids, seq};
    for (;;) {
        PGresult *res = mv_exec(m, m->cat, "reading the acknowledgements",
                                "SELECT string_agg(p.id, ', ') FROM pgshard.proxies AS p"
                                " WHERE p.last_seen > clock_timestamp() - interval '5 s'"
                                " AND NOT EXISTS (SELECT 1 FROM pgshard.migration_acks AS a"
                                " WHERE a.migration_id = $1 AND a.freeze_seq = $2 AND a.proxy_id = p.id)",
                                2, p);
        if (!res)
            return -1;
        bool all = PQgetisnull(res, 0, 0);
        snprintf(missing, cap, "%s", all ? "" : PQgetvalue(res, 0, 0));
        PQclear(res);
        if (all)
            return 1;
        if (mv_now_ms() >= deadline_ms)
            return 0;
        mv_sleep_ms(2);
    }
}

/* The map change, the state and the version bump in one catalog transaction. */
static int mv_flip(mv_move *m, const char *seq, long long *version)
{
    char tg[16];
    snprintf(tg, sizeof tg, "%d", m->target);
    const char *p[] = {m->ids, seq, tg, m->buckets ? m->buckets : m->tenant};
    PGresult *res = NULL;
    if (mv_run(m, m->cat, "flip", "BEGIN", 0, NULL) < 0)
        return -1;
    res = mv_exec(m, m->cat, "flip",
                  "SELECT 1 FROM pgshard.migrations WHERE id = $1 AND state = 'freezing' AND freeze_seq = $2"
                  " FOR UPDATE",
                  2, p);
    if (!res || PQntuples(res) != 1) {
        if (res)
            mv_fail(m, "flip: the move is no longer freezing (another pgshard-migrate?)");
        goto fail;
    }
    PQclear(res);
    res = m->buckets
              ? mv_exec(m, m->cat, "flip: bucket_map",
                        "UPDATE pgshard.bucket_map SET shard = $1 WHERE bucket = ANY ($2::int[])", 2, p + 2)
              : mv_exec(m, m->cat, "flip: tenant_map",
                        "INSERT INTO pgshard.tenant_map (tenant, shard) VALUES ($2, $1)"
                        " ON CONFLICT (tenant) DO UPDATE SET shard = EXCLUDED.shard",
                        2, p + 2);
    if (!res)
        goto fail;
    PQclear(res);
    uint64_t v;
    if (sm_catalog_bump(m->cat, &v, m->err, sizeof m->err) < 0) {
        mv_fail(m, "flip: %s", m->err);
        res = NULL;
        goto fail;
    }
    char vs[24];
    snprintf(vs, sizeof vs, "%" PRIu64, v);
    const char *q[] = {m->ids, vs};
    res = mv_exec(m, m->cat, "flip",
                  "UPDATE pgshard.migrations SET state = 'flipped', step = 'verify', flip_version = $2,"
                  " flipped_at = clock_timestamp(), updated_at = now() WHERE id = $1",
                  2, q);
    if (!res)
        goto fail;
    PQclear(res);
    if (mv_run(m, m->cat, "flip: COMMIT", "COMMIT", 0, NULL) < 0)
        return -1;
    *version = (long long)v;
    snprintf(m->state, sizeof m->state, "flipped");
    return 0;
fail:
    PQclear(res);
    PQclear(PQexec(m->cat, "ROLLBACK"));
    return -1;
}

/* The target's view just before the flip, kept for verify (see mv_move.snap). */
static void mv_snapshot(mv_move *m)
{
    if (m->snap == NULL)
        return;
    PGresult *res = PQexec(m->snap, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;"
                                    " SELECT count(*) FROM pgshard.move_marker");
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        PQfinish(m->snap);
        m->snap = NULL;
    }
    PQclear(res);
}

/* One freeze: returns 1 flipped, 0 unfrozen (try again), -1 failed. */
static int mv_freeze_once(mv_move *m, int attempt)
{
    char seq[16], missing[MV_ERR_MAX], why[MV_ERR_MAX + 128];
    const char *p[] = {m->ids};
    uint32_t timeout = m->o->cfg->freeze_timeout_ms;
    /* Connected before the freeze, so that logging in costs no frozen time. */
    if (!m->snap)
        m->snap = mv_connect(m, m->target);
    PGresult *res =
        mv_exec(m, m->cat, "freezing",
                "WITH f AS (UPDATE pgshard.migrations SET state = 'freezing',"
                " freeze_seq = freeze_seq + 1, updated_at = now() WHERE id = $1 RETURNING freeze_seq)"
                " SELECT freeze_seq, pg_notify('" SM_CATALOG_CHANNEL "', 'freeze') FROM f",
                1, p);
    if (!res)
        return -1;
    snprintf(seq, sizeof seq, "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
    snprintf(m->state, sizeof m->state, "freezing");
    uint64_t t0 = mv_now_ms(), deadline = t0 + timeout;
    int r = mv_acks_wait(m, seq, deadline, missing, sizeof missing);
    if (r <= 0) {
        if (r < 0)
            return -1;
        snprintf(why, sizeof why, "attempt %d: no acknowledgement within %u ms from %s", attempt, timeout,
                 missing);
        return mv_unfreeze(m, why) < 0 ? -1 : 0;
    }
    uint64_t t_ack = mv_now_ms();
    if (mv_run(m, m->src, "arming the fence", "UPDATE pgshard.fence SET armed = true WHERE migration_id = $1",
               1, p) < 0)
        return -1;
    long long mark = mv_marker_put(m);
    if (mark < 0)
        return -1;
    r = mv_marker_wait(m, mark, deadline, 1);
    if (r <= 0) {
        if (r < 0)
            return -1;
        snprintf(why, sizeof why, "attempt %d: the target did not catch up within %u ms", attempt, timeout);
        return mv_unfreeze(m, why) < 0 ? -1 : 0;
    }
    uint64_t t_caught = mv_now_ms();
    int advanced;
    if (mv_seq_sync(m, &advanced) < 0)
        return -1;
    mv_snapshot(m);
    long long version;
    if (mv_flip(m, seq, &version) < 0)
        return -1;
    uint64_t t_flip = mv_now_ms();
    snprintf(why, sizeof why,
             "frozen for %" PRIu64 " ms (acknowledged in %" PRIu64 " ms, caught up in %" PRIu64
             " ms, %d sequences advanced), map version %lld",
             t_flip - t0, t_ack - t0, t_caught - t_ack, advanced, version);
    mv_log(m, "freeze", "flipped", why);
    mv_say(m, "flipped: %s", why);
    return 1;
}

static int mv_step_freeze(mv_move *m)
{
    if (mv_seq_prepare(m) < 0)
        return -1;
    for (int attempt = 1; attempt <= MV_FREEZE_TRIES; attempt++) {
        if (attempt > 1) {
            /* The lag that made it miss may be a burst: let it drain, catching up unfrozen. */
            long long seq = mv_marker_put(m);
            if (seq < 0 || mv_marker_wait(m, seq, mv_now_ms() + MV_CATCHUP_MS, 20) < 0)
                return -1;
            mv_sleep_ms(500u * (unsigned)attempt);
        }
        int r = mv_freeze_once(m, attempt);
        if (r < 0 && strcmp(m->state, "freezing") == 0) {
            /* Not left frozen: the proxies would hold the keys until freeze_hold_ms. */
            char why[MV_ERR_MAX];
            snprintf(why, sizeof why, "%s", m->err);
            mv_unfreeze(m, why);
            snprintf(m->err, sizeof m->err, "%s", why);
        }
        if (r != 0)
            return r < 0 ? -1 : 0;
    }
    return mv_fail(m, "no freeze succeeded in %d attempts: %s (see pgshard-migrate list; resume tries again)",
                   MV_FREEZE_TRIES, m->err[0] ? m->err : "see the log");
}

static int mv_step_verify(mv_move *m)
{
    bool same;
    if (mv_verify(m, false, &same) < 0)
        return -1;
    return same ? 0
                : mv_fail(m,
                          "verify found differences (listed above): cleanup would delete the source's "
                          "copy, so the move stops here; compare, then run cleanup %lld",
                          m->id);
}

static int mv_step_cleanup(mv_move *m)
{
    return mv_cleanup(m);
}

static int (*const mv_step_fn[])(mv_move *m) = {
    mv_step_check, mv_step_prepare, mv_step_publish, mv_step_subscribe,
    mv_step_sync,  mv_step_freeze,  mv_step_verify,  mv_step_cleanup,
};

static int mv_step_index(const char *step)
{
    for (int i = 0; i <= MV_STEP_DONE; i++)
        if (strcmp(mv_steps[i], step) == 0)
            return i;
    return -1;
}

/* Test hook: PGSHARD_MIGRATE_CRASH_AFTER=STEP exits hard once STEP is recorded done. */
static void mv_crash_point(const char *step)
{
    const char *at = getenv("PGSHARD_MIGRATE_CRASH_AFTER");
    if (at && strcmp(at, step) == 0) {
        fflush(NULL);
        _exit(70);
    }
}

/* Runs the steps from the recorded one to the end. */
static int mv_drive(mv_move *m)
{
    int i = mv_step_index(m->step);
    if (i < 0)
        return mv_fail(m, "unknown step '%s' in the catalog", m->step);
    if ((strcmp(m->state, "freezing") == 0 || strcmp(m->state, "failed") == 0) && i == MV_STEP_FREEZE &&
        mv_unfreeze(m, "resumed after an interrupted freeze") < 0)
        return -1;
    if (strcmp(m->state, "failed") == 0 &&
        mv_set_state(m, i > MV_STEP_FREEZE ? "flipped" : "running", NULL) < 0)
        return -1;
    if (mv_run(m, m->cat, "recording the state", "UPDATE pgshard.migrations SET error = NULL WHERE id = $1",
               1, (const char *const[]){m->ids}) < 0)
        return -1;
    for (; i < MV_STEP_DONE; i++) {
        const char *step = mv_steps[i], *next = mv_steps[i + 1];
        mv_log(m, step, "start", NULL);
        mv_say(m, "%s", step);
        m->err[0] = '\0';
        if (mv_step_fn[i](m) < 0) {
            mv_log(m, step, "fail", m->err);
            mv_set_state(m, "failed", m->err);
            return -1;
        }
        const char *p[] = {m->ids, next};
        if (mv_run(m, m->cat, "recording the step",
                   "UPDATE pgshard.migrations SET step = $2, updated_at = now(),"
                   " state = CASE WHEN $2 = 'done' THEN 'done' ELSE state END WHERE id = $1",
                   2, p) < 0)
            return -1;
        mv_log(m, step, "done", NULL);
        mv_crash_point(step);
    }
    mv_say(m, "done: shard %d to shard %d", m->source, m->target);
    return 0;
}

/* ---- commands ---- */

static int mv_usage(const char *fmt, const char *arg)
{
    fprintf(stderr, "pgshard-migrate: ");
    fprintf(stderr, fmt, arg);
    fputc('\n', stderr);
    return MIG_EXIT_USAGE;
}

/* "ID" of resume, abort, verify and cleanup. */
static int mv_id_arg(const mig_opts *o, const char *cmd, long long *id)
{
    char *end;
    if (o->nargs != 1)
        return mv_usage("%s takes one argument, the move's id (see pgshard-migrate list)", cmd);
    *id = strtoll(o->args[0], &end, 10);
    if (*end || end == o->args[0] || *id <= 0)
        return mv_usage("'%s' is not a move's id", o->args[0]);
    return 0;
}

/* Opens move id for a command: catalog, row, connections, tables. */
static int mv_begin(mv_move *m, const mig_opts *o, long long id)
{
    m->o = o;
    m->id = id;
    snprintf(m->ids, sizeof m->ids, "%lld", id);
    m->nbuckets = o->cfg->buckets;
    if (!(m->cat = mig_connect(o)))
        return -1;
    return mv_open(m);
}

static int mv_exit(mv_move *m, int rc)
{
    mv_free(m);
    return rc < 0 ? MIG_EXIT_ERROR : MIG_EXIT_OK;
}

static int mv_start(const mig_opts *o, const mv_args *ap);

int mig_move(const mig_opts *o)
{
    mv_args a = {.to = -1};
    for (int i = 0; i < o->nargs; i += 2) {
        const char *arg = o->args[i], *val = i + 1 < o->nargs ? o->args[i + 1] : NULL;
        if (!val)
            return mv_usage("move: %s needs a value", arg);
        if (strcmp(arg, "--buckets") == 0)
            a.buckets = val;
        else if (strcmp(arg, "--tenant") == 0)
            a.tenant = val;
        else if (strcmp(arg, "--to") == 0) {
            char *end;
            long to = strtol(val, &end, 10);
            if (*end || end == val || to < 0 || to >= o->cfg->nshards)
                return mv_usage("move: --to %s: not a shard of the config", val);
            a.to = (int)to;
        } else
            return mv_usage("move: unknown argument '%s'", arg);
    }
    if ((a.buckets == NULL) == (a.tenant == NULL) || a.to < 0)
        return mv_usage("%s", "move: give --buckets LIST or --tenant KEY, and --to SHARD");
    return mv_start(o, &a);
}

int mv_move_buckets(const mig_opts *o, const char *buckets, int to)
{
    mv_args a = {.buckets = buckets, .to = to};
    return mv_start(o, &a);
}

/* Creates the move and runs it to its end. Returns an exit code. */
static int mv_start(const mig_opts *o, const mv_args *ap)
{
    const mv_args a = *ap;
    PGconn *cat = mig_connect(o);
    if (!cat)
        return MIG_EXIT_ERROR;
    long long id = mv_create(o, cat, &a);
    PQfinish(cat);
    if (id < 0)
        return MIG_EXIT_ERROR;
    mv_move m = {0};
    int rc = mv_begin(&m, o, id);
    if (rc == 0) {
        mv_say(&m, "%s %s from shard %d to shard %d", m.buckets ? "buckets" : "tenant",
               m.buckets ? m.buckets : m.tenant, m.source, m.target);
        rc = mv_drive(&m);
    }
    if (rc < 0 && m.cat)
        fprintf(o->err, "pgshard-migrate: move %lld stopped; run resume %lld to go on, or abort %lld\n", id,
                id, id);
    return mv_exit(&m, rc);
}

int mig_resume(const mig_opts *o)
{
    long long id;
    if (mv_id_arg(o, "resume", &id))
        return MIG_EXIT_USAGE;
    mv_move m = {0};
    int rc = mv_begin(&m, o, id);
    if (rc == 0 && strcmp(m.state, "aborted") == 0)
        rc = mv_fail(&m, "was aborted: nothing to resume");
    if (rc == 0 && strcmp(m.state, "done") == 0) {
        mv_say(&m, "done already: nothing to resume");
        return mv_exit(&m, 0);
    }
    if (rc == 0) {
        mv_log(&m, m.step, "resume", NULL);
        rc = mv_drive(&m);
    }
    return mv_exit(&m, rc);
}

int mig_abort(const mig_opts *o)
{
    long long id;
    if (mv_id_arg(o, "abort", &id))
        return MIG_EXIT_USAGE;
    mv_move m = {0};
    int rc = mv_begin(&m, o, id);
    if (rc == 0)
        rc = mv_abort(&m);
    return mv_exit(&m, rc);
}

int mig_verify(const mig_opts *o)
{
    long long id;
    if (mv_id_arg(o, "verify", &id))
        return MIG_EXIT_USAGE;
    mv_move m = {0};
    bool same = false;
    int rc = mv_begin(&m, o, id);
    if (rc == 0 && strcmp(m.step, "done") == 0)
        rc = mv_fail(&m, "is cleaned up: the source no longer has the moved rows to compare with");
    if (rc == 0)
        rc = mv_verify(&m, o->json, &same);
    mv_free(&m);
    return rc < 0 || !same ? MIG_EXIT_ERROR : MIG_EXIT_OK;
}

int mig_cleanup(const mig_opts *o)
{
    long long id;
    if (mv_id_arg(o, "cleanup", &id))
        return MIG_EXIT_USAGE;
    mv_move m = {0};
    int rc = mv_begin(&m, o, id);
    if (rc == 0 && mv_step_index(m.step) < MV_STEP_FREEZE + 1)
        rc = mv_fail(&m, "has not flipped (step %s): resume or abort it instead", m.step);
    if (rc == 0) {
        snprintf(m.step, sizeof m.step, "cleanup");
        rc = mv_drive(&m);
    }
    return mv_exit(&m, rc);
}

/* The catalog database behind the shard map (see catalog.h): creating the pgshard schema,
 * loading and validating a map from it, heartbeats and version bumps. Blocking libpq on the
 * caller's connection; what a map is and how it routes is map.c's business, not this
 * file's. */
#include "shardmap/catalog.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "shardmap/hash.h"

/* Serializes concurrent inits: "pgshard" in ASCII, as a bigint advisory-lock key. */
#define CAT_INIT_LOCK "8099569346997806080"

static const char cat_ddl[] =
    "CREATE SCHEMA IF NOT EXISTS pgshard;"
    "CREATE TABLE IF NOT EXISTS pgshard.bucket_map ("
    " bucket int PRIMARY KEY CHECK (bucket >= 0), shard int NOT NULL CHECK (shard >= 0));"
    "CREATE TABLE IF NOT EXISTS pgshard.tenant_map ("
    " tenant text PRIMARY KEY, shard int NOT NULL CHECK (shard >= 0));"
    "CREATE TABLE IF NOT EXISTS pgshard.map_version (version bigint NOT NULL);"
    /* One row: the index on a constant lets a second INSERT fail instead of making the
     * version ambiguous. */
    "CREATE UNIQUE INDEX IF NOT EXISTS map_version_one_row ON pgshard.map_version ((true));"
    "CREATE TABLE IF NOT EXISTS pgshard.proxies ("
    " id text PRIMARY KEY, host text, pid int, map_version bigint, last_seen timestamptz);"
    /* Moves (pgshard-migrate move): see catalog.h for what the proxies read of them. */
    "CREATE TABLE IF NOT EXISTS pgshard.migrations ("
    " id bigserial PRIMARY KEY, source int NOT NULL, target int NOT NULL,"
    " buckets int[], tenant text, tenant_bucket int,"
    " state text NOT NULL DEFAULT 'running', step text NOT NULL DEFAULT 'check',"
    " freeze_seq int NOT NULL DEFAULT 0, error text, flip_version bigint, flipped_at timestamptz,"
    " created_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz NOT NULL DEFAULT now(),"
    " CHECK ((buckets IS NULL) <> (tenant IS NULL)), CHECK (source <> target));"
    "CREATE TABLE IF NOT EXISTS pgshard.migration_log ("
    " id bigserial PRIMARY KEY, migration_id bigint NOT NULL,"
    " at timestamptz NOT NULL DEFAULT clock_timestamp(), step text NOT NULL, event text NOT NULL,"
    " detail text);"
    "CREATE TABLE IF NOT EXISTS pgshard.shards (shard int PRIMARY KEY CHECK (shard >= 0),"
    " added_at timestamptz NOT NULL DEFAULT now());"
    "CREATE TABLE IF NOT EXISTS pgshard.migration_acks ("
    " migration_id bigint NOT NULL, freeze_seq int NOT NULL, proxy_id text NOT NULL,"
    " at timestamptz NOT NULL DEFAULT clock_timestamp(), PRIMARY KEY (migration_id, freeze_seq, proxy_id));"
    /* Load per bucket, for plan: statements the proxies routed by a key of the bucket, all of
     * them (queries) and decayed with a half-life of an hour as of updated_at (recent). */
    "CREATE TABLE IF NOT EXISTS pgshard.bucket_load ("
    " bucket int PRIMARY KEY CHECK (bucket >= 0), queries bigint NOT NULL,"
    " recent double precision NOT NULL, updated_at timestamptz NOT NULL);";

static int cat_fail(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int cat_fail(char *err, size_t errlen, const char *fmt, ...)
{
    if (err != NULL && errlen > 0) {
        va_list ap;
        va_start(ap, fmt);
        if (vsnprintf(err, errlen, fmt, ap) < 0)
            err[0] = '\0';
        va_end(ap);
    }
    return SM_ECATALOG;
}

/* The failure of a statement, with advice when the schema or a table is missing. */
static int cat_fail_result(char *err, size_t errlen, const char *what, PGconn *conn, const PGresult *res)
{
    char msg[512];
    const char *state = res != NULL ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    bool missing = state != NULL && (strcmp(state, "42P01") == 0 || strcmp(state, "3F000") == 0);

    pgs_log_flatten(msg, sizeof(msg), res != NULL ? PQresultErrorMessage(res) : PQerrorMessage(conn));
    if (msg[0] == '\0')
        pgs_log_flatten(msg, sizeof(msg), PQerrorMessage(conn));
    return cat_fail(err, errlen, "%s: %s%s", what, msg, missing ? " (run pgshard-migrate init)" : "");
}

/* Runs sql (no parameters) and expects status; on failure fills err and returns NULL. */
static PGresult *cat_exec(PGconn *conn, const char *what, const char *sql, ExecStatusType status, char *err,
                          size_t errlen)
{
    PGresult *res = PQexec(conn, sql);

    if (PQresultStatus(res) == status)
        return res;
    cat_fail_result(err, errlen, what, conn, res);
    PQclear(res);
    return NULL;
}

static PGresult *cat_exec_params(PGconn *conn, const char *what, const char *sql, int n,
                                 const char *const *values, ExecStatusType status, char *err, size_t errlen)
{
    PGresult *res = PQexecParams(conn, sql, n, NULL, values, NULL, NULL, 0);

    if (PQresultStatus(res) == status)
        return res;
    cat_fail_result(err, errlen, what, conn, res);
    PQclear(res);
    return NULL;
}

static int cat_command(PGconn *conn, const char *what, const char *sql, char *err, size_t errlen)
{
    PGresult *res = cat_exec(conn, what, sql, PGRES_COMMAND_OK, err, errlen);

    PQclear(res);
    return res != NULL ? 0 : SM_ECATALOG;
}

/* Ends a transaction that failed; the first error is what the caller reports. */
static void cat_rollback(PGconn *conn)
{
    if (PQtransactionStatus(conn) != PQTRANS_IDLE)
        PQclear(PQexec(conn, "ROLLBACK"));
}

/* A decimal integer column value; NULL or anything else is refused. */
static bool cat_int(const PGresult *res, int row, int col, long long *out)
{
    char *end;
    const char *s;

    if (PQgetisnull(res, row, col))
        return false;
    s = PQgetvalue(res, row, col);
    errno = 0;
    *out = strtoll(s, &end, 10);
    return errno == 0 && end != s && *end == '\0';
}

static int cat_begin(PGconn *conn, const char *sql, char *err, size_t errlen)
{
    if (conn == NULL) {
        cat_fail(err, errlen, "no catalog connection");
        return SM_EINVAL;
    }
    if (PQtransactionStatus(conn) != PQTRANS_IDLE) {
        cat_fail(err, errlen, "the catalog connection is busy or inside a transaction");
        return SM_EINVAL;
    }
    return cat_command(conn, "begin", sql, err, errlen);
}

static int cat_commit(PGconn *conn, char *err, size_t errlen)
{
    int rc = cat_command(conn, "commit", "COMMIT", err, errlen);

    if (rc < 0)
        cat_rollback(conn);
    return rc;
}

PGconn *sm_catalog_connect(const char *dsn, const char *application_name, int connect_timeout_s, char *err,
                           size_t errlen)
{
    char timeout[16], msg[512];
    PGconn *conn;
    /* Keywords before dbname are overridden by the expanded dsn: the user's choices win. */
    const char *keys[] = {"application_name",    "connect_timeout",  "keepalives", "keepalives_idle",
                          "keepalives_interval", "keepalives_count", "dbname",     NULL};
    const char *vals[] = {application_name, timeout, "1", "5", "1", "3", dsn, NULL};

    if (dsn == NULL) {
        cat_fail(err, errlen, "no catalog_dsn");
        return NULL;
    }
    snprintf(timeout, sizeof(timeout), "%d", connect_timeout_s > 0 ? connect_timeout_s : 5);
    conn = PQconnectdbParams(keys, vals, 1);
    if (conn == NULL) {
        cat_fail(err, errlen, "out of memory");
        return NULL;
    }
    if (PQstatus(conn) != CONNECTION_OK) {
        pgs_log_flatten(msg, sizeof(msg), PQerrorMessage(conn));
        cat_fail(err, errlen, "%s", msg);
        PQfinish(conn);
        return NULL;
    }
    return conn;
}

/* ---- init ---- */

/* Whether the schema or any table of the contract is missing before the DDL runs. */
static int cat_missing(PGconn *conn, bool *missing, char *err, size_t errlen)
{
    PGresult *res =
        cat_exec(conn, "look for the schema",
                 "SELECT to_regnamespace('pgshard') IS NULL OR to_regclass('pgshard.bucket_map') IS NULL"
                 " OR to_regclass('pgshard.tenant_map') IS NULL"
                 " OR to_regclass('pgshard.map_version') IS NULL"
                 " OR to_regclass('pgshard.proxies') IS NULL",
                 PGRES_TUPLES_OK, err, errlen);

    if (res == NULL)
        return SM_ECATALOG;
    *missing = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    PQclear(res);
    return 0;
}

/* The default map written in SQL: the same integer division as sm_map_new_default. */
static int cat_fill_buckets(PGconn *conn, uint32_t nshards, uint32_t buckets, bool *filled, char *err,
                            size_t errlen)
{
    char ns[16], nb[16];
    const char *values[] = {ns, nb};
    PGresult *res;

    snprintf(ns, sizeof(ns), "%" PRIu32, nshards);
    snprintf(nb, sizeof(nb), "%" PRIu32, buckets);
    res = cat_exec_params(conn, "fill bucket_map",
                          "INSERT INTO pgshard.bucket_map (bucket, shard)"
                          " SELECT b, (b::bigint * $1::bigint / $2::bigint)::int"
                          " FROM generate_series(0, $2::int - 1) AS b"
                          " WHERE NOT EXISTS (SELECT 1 FROM pgshard.bucket_map)",
                          2, values, PGRES_COMMAND_OK, err, errlen);
    if (res == NULL)
        return SM_ECATALOG;
    *filled = strcmp(PQcmdTuples(res), "0") != 0;
    PQclear(res);
    return 0;
}

static int cat_first_version(PGconn *conn, bool *written, char *err, size_t errlen)
{
    PGresult *res = cat_exec(conn, "write map_version",
                             "INSERT INTO pgshard.map_version (version)"
                             " SELECT 1 WHERE NOT EXISTS (SELECT 1 FROM pgshard.map_version)",
                             PGRES_COMMAND_OK, err, errlen);

    if (res == NULL)
        return SM_ECATALOG;
    *written = strcmp(PQcmdTuples(res), "0") != 0;
    PQclear(res);
    return 0;
}

/* The checks sm_catalog_load makes, in SQL, so that init refuses a catalog made for
 * another layout before anything is committed. */
static int cat_check_layout(PGconn *conn, uint32_t nshards, uint32_t buckets, char *err, size_t errlen)
{
    long long count, lo, hi, smax, tmax;
    PGresult *res = cat_exec(conn, "check the map",
                             "SELECT (SELECT count(*) FROM pgshard.bucket_map),"
                             " (SELECT coalesce(min(bucket), 0) FROM pgshard.bucket_map),"
                             " (SELECT coalesce(max(bucket), -1) FROM pgshard.bucket_map),"
                             " (SELECT coalesce(max(shard), 0) FROM pgshard.bucket_map),"
                             " (SELECT coalesce(max(shard), 0) FROM pgshard.tenant_map)",
                             PGRES_TUPLES_OK, err, errlen);
    int rc = 0;

    if (res == NULL)
        return SM_ECATALOG;
    if (!cat_int(res, 0, 0, &count) || !cat_int(res, 0, 1, &lo) || !cat_int(res, 0, 2, &hi) ||
        !cat_int(res, 0, 3, &smax) || !cat_int(res, 0, 4, &tmax))
        rc = cat_fail(err, errlen, "check the map: unexpected answer");
    else if (count != buckets || lo != 0 || hi != (long long)buckets - 1)
        rc = cat_fail(err, errlen,
                      "bucket_map holds %lld buckets (%lld to %lld) but the config has buckets = %" PRIu32
                      ": the catalog was made for another layout",
                      count, lo, hi, buckets);
    else if (smax >= nshards || tmax >= nshards)
        rc = cat_fail(err, errlen,
                      "%s names shard %lld but the config has %" PRIu32
                      " shards ([shard.0] to [shard.%" PRIu32 "])",
                      smax >= nshards ? "bucket_map" : "tenant_map", smax >= nshards ? smax : tmax, nshards,
                      nshards - 1);
    PQclear(res);
    return rc;
}

static int cat_lock(PGconn *conn, char *err, size_t errlen)
{
    PGresult *res = cat_exec(conn, "lock", "SELECT pg_advisory_xact_lock(" CAT_INIT_LOCK ")", PGRES_TUPLES_OK,
                             err, errlen);

    PQclear(res);
    return res != NULL ? 0 : SM_ECATALOG;
}

static int cat_init_steps(PGconn *conn, uint32_t nshards, uint32_t buckets, char *err, size_t errlen)
{
    bool missing = false, filled = false, versioned = false;

    if (cat_command(conn, "quiet notices", "SET LOCAL client_min_messages = warning", err, errlen) < 0 ||
        cat_lock(conn, err, errlen) < 0)
        return SM_ECATALOG;
    if (cat_missing(conn, &missing, err, errlen) < 0 ||
        cat_command(conn, "create", cat_ddl, err, errlen) < 0 ||
        cat_fill_buckets(conn, nshards, buckets, &filled, err, errlen) < 0 ||
        cat_first_version(conn, &versioned, err, errlen) < 0 ||
        cat_check_layout(conn, nshards, buckets, err, errlen) < 0)
        return SM_ECATALOG;
    return (missing ? SM_CATALOG_CREATED : 0) | (filled ? SM_CATALOG_FILLED : 0) |
           (versioned ? SM_CATALOG_VERSIONED : 0);
}

static bool cat_layout_valid(uint32_t nshards, uint32_t buckets)
{
    return nshards >= 1 && nshards <= SM_MAX_SHARDS && buckets >= 1 && buckets <= SM_MAX_BUCKETS &&
           (buckets & (buckets - 1)) == 0;
}

int sm_catalog_init(PGconn *conn, uint32_t nshards, uint32_t buckets, char *err, size_t errlen)
{
    int rc;

    if (!cat_layout_valid(nshards, buckets)) {
        cat_fail(err, errlen, "%" PRIu32 " shards and %" PRIu32 " buckets is not a layout", nshards, buckets);
        return SM_EINVAL;
    }
    if ((rc = cat_begin(conn, "BEGIN", err, errlen)) < 0)
        return rc;
    rc = cat_init_steps(conn, nshards, buckets, err, errlen);
    if (rc < 0) {
        cat_rollback(conn);
        return rc;
    }
    return cat_commit(conn, err, errlen) < 0 ? SM_ECATALOG : rc;
}

/* ---- load ---- */

static int cat_read_version(PGconn *conn, uint64_t *version, char *err, size_t errlen)
{
    long long v;
    PGresult *res = cat_exec(conn, "map_version", "SELECT version FROM pgshard.map_version", PGRES_TUPLES_OK,
                             err, errlen);
    int rc = 0;

    if (res == NULL)
        return SM_ECATALOG;
    if (PQntuples(res) != 1)
        rc = cat_fail(err, errlen, "map_version has %d rows, not one%s", PQntuples(res),
                      PQntuples(res) == 0 ? " (run pgshard-migrate init)" : "");
    else if (!cat_int(res, 0, 0, &v) || v < 0)
        rc = cat_fail(err, errlen, "map_version holds '%s', not a version", PQgetvalue(res, 0, 0));
    else
        *version = (uint64_t)v;
    PQclear(res);
    return rc;
}

/* One bucket_map row into m; seen[] marks the buckets read so far. */
static int cat_bucket_row(sm_map *m, const PGresult *res, int row, uint8_t *seen, char *err, size_t errlen)
{
    long long b, s;
    uint32_t buckets = sm_map_buckets(m), nshards = sm_map_nshards(m);

    if (!cat_int(res, row, 0, &b) || !cat_int(res, row, 1, &s))
        return cat_fail(err, errlen, "bucket_map: row '%s', '%s' is not two integers",
                        PQgetvalue(res, row, 0), PQgetvalue(res, row, 1));
    if (b < 0 || b >= buckets)
        return cat_fail(err, errlen, "bucket_map: bucket %lld is not below buckets = %" PRIu32, b, buckets);
    if (s < 0 || s >= nshards)
        return cat_fail(err, errlen,
                        "bucket_map: bucket %lld is on shard %lld, but the config has %" PRIu32
                        " shards ([shard.0] to [shard.%" PRIu32 "])",
                        b, s, nshards, nshards - 1);
    seen[b] = 1;
    return sm_map_set_bucket(m, (uint32_t)b, (uint32_t)s) < 0
               ? cat_fail(err, errlen, "bucket_map: bucket %lld", b)
               : 0;
}

static int cat_read_buckets(PGconn *conn, sm_map *m, char *err, size_t errlen)
{
    uint32_t buckets = sm_map_buckets(m);
    PGresult *res = cat_exec(conn, "bucket_map", "SELECT bucket, shard FROM pgshard.bucket_map",
                             PGRES_TUPLES_OK, err, errlen);
    uint8_t *seen;
    int rc = 0;

    if (res == NULL)
        return SM_ECATALOG;
    if ((seen = calloc(buckets, 1)) == NULL) {
        PQclear(res);
        cat_fail(err, errlen, "out of memory");
        return SM_ENOMEM;
    }
    if (PQntuples(res) == 0)
        rc = cat_fail(err, errlen, "bucket_map is empty (run pgshard-migrate init)");
    for (int i = 0; rc == 0 && i < PQntuples(res); i++)
        rc = cat_bucket_row(m, res, i, seen, err, errlen);
    for (uint32_t b = 0; rc == 0 && b < buckets; b++)
        if (!seen[b])
            rc = cat_fail(err, errlen,
                          "bucket_map: bucket %" PRIu32 " has no row (it holds %d of %" PRIu32 ")", b,
                          PQntuples(res), buckets);
    free(seen);
    PQclear(res);
    return rc;
}

static int cat_override_row(sm_map *m, const PGresult *res, int row, char *err, size_t errlen)
{
    long long s;
    const char *tenant = PQgetvalue(res, row, 0);
    int len = PQgetlength(res, row, 0);
    int rc;

    if (PQgetisnull(res, row, 0) || !cat_int(res, row, 1, &s) || s < 0 || s >= sm_map_nshards(m))
        return cat_fail(err, errlen,
                        "tenant_map: tenant '%.64s' is on shard '%s', but the config has %" PRIu32
                        " shards ([shard.0] to [shard.%" PRIu32 "])",
                        tenant, PQgetvalue(res, row, 1), sm_map_nshards(m), sm_map_nshards(m) - 1);
    rc = sm_map_add_override(m, tenant, (size_t)len, (uint32_t)s);
    if (rc == SM_ENOMEM) {
        cat_fail(err, errlen, "out of memory");
        return rc;
    }
    return rc < 0 ? cat_fail(err, errlen, "tenant_map: tenant '%.64s': %s", tenant, sm_strerror(rc)) : 0;
}

static int cat_read_overrides(PGconn *conn, sm_map *m, char *err, size_t errlen)
{
    PGresult *res = cat_exec(conn, "tenant_map", "SELECT tenant, shard FROM pgshard.tenant_map",
                             PGRES_TUPLES_OK, err, errlen);
    int rc = 0;

    if (res == NULL)
        return SM_ECATALOG;
    for (int i = 0; rc == 0 && i < PQntuples(res); i++)
        rc = cat_override_row(m, res, i, err, errlen);
    PQclear(res);
    return rc;
}

/* ---- moves ---- */

/* Every column proxies read of the active moves, as one text per move: the signature of
 * sm_catalog_state and the load hash the same text, so they agree on what changed. */
#define CAT_MOVES_WHERE " FROM pgshard.migrations WHERE state NOT IN ('done', 'aborted')"
#define CAT_MOVES_SIG                                                                                        \
    "SELECT coalesce(string_agg(concat(id, '|', source, '|', target, '|', buckets, '|', tenant, '|',"        \
    " tenant_bucket, '|', state, '|', freeze_seq), ';' ORDER BY id), '')" CAT_MOVES_WHERE

/* A catalog made before moves existed has no migrations table: no moves, not an error. */
static int cat_has_moves(PGconn *conn, bool *has, char *err, size_t errlen)
{
    PGresult *res =
        cat_exec(conn, "look for migrations", "SELECT to_regclass('pgshard.migrations') IS NOT NULL",
                 PGRES_TUPLES_OK, err, errlen);

    if (res == NULL)
        return SM_ECATALOG;
    *has = PQntuples(res) == 1 && strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    PQclear(res);
    return 0;
}

static int cat_moves_sig(PGconn *conn, uint64_t *sig, char *err, size_t errlen)
{
    bool has = false;
    PGresult *res;

    *sig = 0;
    if (cat_has_moves(conn, &has, err, errlen) < 0)
        return SM_ECATALOG;
    if (!has)
        return 0;
    if ((res = cat_exec(conn, "migrations", CAT_MOVES_SIG, PGRES_TUPLES_OK, err, errlen)) == NULL)
        return SM_ECATALOG;
    if (PQntuples(res) == 1 && PQgetlength(res, 0, 0) > 0)
        *sig = sm_hash_text(PQgetvalue(res, 0, 0), (size_t)PQgetlength(res, 0, 0)) | 1;
    PQclear(res);
    return 0;
}

static const char *const cat_move_states[] = {
    [SM_MOVE_RUNNING] = "running",
    [SM_MOVE_FREEZING] = "freezing",
    [SM_MOVE_FLIPPED] = "flipped",
    [SM_MOVE_FAILED] = "failed",
};

/* Reads an int[] in its text form ({1,2,3}) into out (cap entries). Returns the count, or -1. */
static int cat_int_array(const char *s, uint32_t *out, size_t cap)
{
    size_t n = 0;
    char *end;

    if (*s++ != '{')
        return -1;
    while (*s != '}') {
        long long v;
        errno = 0;
        v = strtoll(s, &end, 10);
        if (errno != 0 || end == s || v < 0 || v > UINT32_MAX || n >= cap)
            return -1;
        out[n++] = (uint32_t)v;
        s = *end == ',' ? end + 1 : end;
    }
    return s[1] == '\0' ? (int)n : -1;
}

/* One migrations row (id, source, target, buckets, tenant, tenant_bucket, state, freeze_seq)
 * into m. An unknown state is refused: a proxy that does not know what a state means must not
 * guess whether the move's keys are held. */
static int cat_move_row(sm_map *m, const PGresult *res, int row, uint32_t *buckets, char *err, size_t errlen)
{
    long long id, src, dst, tb = -1, seq;
    sm_move mv = {.tenant_bucket = -1, .state = 0xff};
    int n = 0, rc;

    if (!cat_int(res, row, 0, &id) || !cat_int(res, row, 1, &src) || !cat_int(res, row, 2, &dst) ||
        !cat_int(res, row, 7, &seq) || (!PQgetisnull(res, row, 5) && !cat_int(res, row, 5, &tb)) || src < 0 ||
        dst < 0)
        return cat_fail(err, errlen, "migrations: row %d is not a move", row);
    for (size_t st = 0; st < sizeof(cat_move_states) / sizeof(cat_move_states[0]); st++)
        if (strcmp(PQgetvalue(res, row, 6), cat_move_states[st]) == 0)
            mv.state = (uint8_t)st;
    if (mv.state == 0xff)
        return cat_fail(err, errlen,
                        "migrations: move %lld has state '%.32s', which this pgshard does not know", id,
                        PQgetvalue(res, row, 6));
    if (!PQgetisnull(res, row, 3) &&
        (n = cat_int_array(PQgetvalue(res, row, 3), buckets, sm_map_buckets(m))) < 0)
        return cat_fail(err, errlen, "migrations: move %lld: buckets '%.64s' is not a list of buckets", id,
                        PQgetvalue(res, row, 3));
    mv.id = id;
    mv.source = src > UINT32_MAX ? UINT32_MAX : (uint32_t)src;
    mv.target = dst > UINT32_MAX ? UINT32_MAX : (uint32_t)dst;
    mv.freeze_seq = (int32_t)seq;
    mv.tenant_bucket = tb < 0 || tb > INT32_MAX ? -1 : (int32_t)tb;
    mv.buckets = PQgetisnull(res, row, 3) ? NULL : buckets;
    mv.nbuckets = (size_t)n;
    mv.tenant = PQgetisnull(res, row, 4) ? NULL : PQgetvalue(res, row, 4);
    mv.tenant_len = mv.tenant ? (size_t)PQgetlength(res, row, 4) : 0;
    rc = sm_map_add_move(m, &mv);
    return rc < 0 ? cat_fail(err, errlen, "migrations: move %lld (shard %lld to %lld): %s", id, src, dst,
                             sm_strerror(rc))
                  : 0;
}

static int cat_read_moves(PGconn *conn, sm_map *m, char *err, size_t errlen)
{
    uint64_t sig = 0;
    uint32_t *buckets;
    PGresult *res;
    int rc = 0;

    if (cat_moves_sig(conn, &sig, err, errlen) < 0)
        return SM_ECATALOG;
    sm_map_set_moves_sig(m, sig);
    if (sig == 0)
        return 0;
    res = cat_exec(
        conn, "migrations",
        "SELECT id, source, target, buckets, tenant, tenant_bucket, state, freeze_seq" CAT_MOVES_WHERE
        " ORDER BY id",
        PGRES_TUPLES_OK, err, errlen);
    if (res == NULL)
        return SM_ECATALOG;
    if ((buckets = malloc(sm_map_buckets(m) * sizeof(*buckets))) == NULL) {
        PQclear(res);
        cat_fail(err, errlen, "out of memory");
        return SM_ENOMEM;
    }
    for (int i = 0; rc == 0 && i < PQntuples(res); i++)
        rc = cat_move_row(m, res, i, buckets, err, errlen);
    free(buckets);
    PQclear(res);
    return rc;
}

static int cat_load_steps(PGconn *conn, sm_map *m, char *err, size_t errlen)
{
    uint64_t version = 0;
    int rc;

    if ((rc = cat_read_version(conn, &version, err, errlen)) < 0 ||
        (rc = cat_read_buckets(conn, m, err, errlen)) < 0 ||
        (rc = cat_read_overrides(conn, m, err, errlen)) < 0 ||
        (rc = cat_read_moves(conn, m, err, errlen)) < 0)
        return rc;
    sm_map_set_version(m, version);
    return 0;
}

int sm_catalog_load(PGconn *conn, uint32_t nshards, uint32_t buckets, sm_map **out, char *err, size_t errlen)
{
    sm_map *m = NULL;
    int rc;

    if (out == NULL)
        return SM_EINVAL;
    *out = NULL;
    if (!cat_layout_valid(nshards, buckets)) {
        cat_fail(err, errlen, "%" PRIu32 " shards and %" PRIu32 " buckets is not a layout", nshards, buckets);
        return SM_EINVAL;
    }
    if ((rc = cat_begin(conn, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", err, errlen)) < 0)
        return rc;
    rc = sm_map_new_default(&m, nshards, buckets);
    if (rc < 0) {
        cat_rollback(conn);
        cat_fail(err, errlen, "%s", sm_strerror(rc));
        return rc;
    }
    rc = cat_load_steps(conn, m, err, errlen);
    if (rc == 0)
        rc = cat_commit(conn, err, errlen);
    if (rc < 0) {
        cat_rollback(conn);
        sm_map_free(m);
        return rc;
    }
    *out = m;
    return 0;
}

int sm_catalog_version(PGconn *conn, uint64_t *version, char *err, size_t errlen)
{
    if (conn == NULL || version == NULL)
        return SM_EINVAL;
    return cat_read_version(conn, version, err, errlen);
}

int sm_catalog_state(PGconn *conn, uint64_t *version, uint64_t *moves_sig, char *err, size_t errlen)
{
    if (conn == NULL || version == NULL || moves_sig == NULL)
        return SM_EINVAL;
    if (cat_read_version(conn, version, err, errlen) < 0)
        return SM_ECATALOG;
    return cat_moves_sig(conn, moves_sig, err, errlen);
}

int sm_catalog_ack(PGconn *conn, int64_t migration_id, int32_t freeze_seq, const char *proxy_id, char *err,
                   size_t errlen)
{
    char sid[24], sseq[16];
    const char *values[] = {sid, sseq, proxy_id};
    PGresult *res;

    if (conn == NULL || proxy_id == NULL)
        return SM_EINVAL;
    snprintf(sid, sizeof(sid), "%" PRId64, migration_id);
    snprintf(sseq, sizeof(sseq), "%" PRId32, freeze_seq);
    res = cat_exec_params(conn, "acknowledge the freeze",
                          "WITH a AS (INSERT INTO pgshard.migration_acks (migration_id, freeze_seq, proxy_id)"
                          " VALUES ($1::bigint, $2::int, $3) ON CONFLICT DO NOTHING RETURNING 1)"
                          " SELECT pg_notify('" SM_CATALOG_ACK_CHANNEL
                          "', $1::bigint::text) FROM (SELECT count(*) FROM a) n",
                          3, values, PGRES_TUPLES_OK, err, errlen);
    PQclear(res);
    return res != NULL ? 0 : SM_ECATALOG;
}

/* ---- proxies and changes ---- */

int sm_catalog_heartbeat(PGconn *conn, const char *id, const char *host, int pid, uint64_t map_version,
                         char *err, size_t errlen)
{
    char spid[16], sver[24];
    const char *values[] = {id, host, spid, sver};
    PGresult *res;

    if (conn == NULL || id == NULL)
        return SM_EINVAL;
    snprintf(spid, sizeof(spid), "%d", pid);
    snprintf(sver, sizeof(sver), "%" PRIu64, map_version);
    res = cat_exec_params(conn, "heartbeat",
                          "INSERT INTO pgshard.proxies (id, host, pid, map_version, last_seen)"
                          " VALUES ($1, $2, $3::int, $4::bigint, now())"
                          " ON CONFLICT (id) DO UPDATE SET host = EXCLUDED.host, pid = EXCLUDED.pid,"
                          " map_version = EXCLUDED.map_version, last_seen = EXCLUDED.last_seen",
                          4, values, PGRES_COMMAND_OK, err, errlen);
    PQclear(res);
    return res != NULL ? 0 : SM_ECATALOG;
}

int sm_catalog_bucket_load(PGconn *conn, const char *buckets, const char *counts, char *err, size_t errlen)
{
    const char *values[] = {buckets, counts};
    PGresult *res;

    if (conn == NULL || buckets == NULL || counts == NULL)
        return SM_EINVAL;
    res = cat_exec_params(conn, "bucket load",
                          "INSERT INTO pgshard.bucket_load AS l (bucket, queries, recent, updated_at)"
                          " SELECT b, q, q, now() FROM unnest($1::int[], $2::bigint[]) u(b, q)"
                          " ON CONFLICT (bucket) DO UPDATE SET queries = l.queries + EXCLUDED.queries,"
                          " recent = l.recent * power(0.5, greatest(extract(epoch FROM now() - l.updated_at),"
                          " 0) / " SM_LOAD_HALF_LIFE_S ") + EXCLUDED.recent, updated_at = now()",
                          2, values, PGRES_COMMAND_OK, err, errlen);
    PQclear(res);
    return res != NULL ? 0 : SM_ECATALOG;
}

int sm_catalog_forget(PGconn *conn, const char *id, char *err, size_t errlen)
{
    const char *values[] = {id};
    PGresult *res;

    if (conn == NULL || id == NULL)
        return SM_EINVAL;
    res = cat_exec_params(conn, "forget", "DELETE FROM pgshard.proxies WHERE id = $1", 1, values,
                          PGRES_COMMAND_OK, err, errlen);
    PQclear(res);
    return res != NULL ? 0 : SM_ECATALOG;
}

int sm_catalog_bump(PGconn *conn, uint64_t *version, char *err, size_t errlen)
{
    long long v;
    PGresult *res;
    int rc = 0;

    if (conn == NULL)
        return SM_EINVAL;
    res = cat_exec(conn, "bump",
                   "WITH v AS (UPDATE pgshard.map_version SET version = version + 1 RETURNING version)"
                   " SELECT version, pg_notify('" SM_CATALOG_CHANNEL "', version::text) FROM v",
                   PGRES_TUPLES_OK, err, errlen);
    if (res == NULL)
        return SM_ECATALOG;
    if (PQntuples(res) != 1 || !cat_int(res, 0, 0, &v))
        rc = cat_fail(err, errlen, "map_version has %d rows, not one", PQntuples(res));
    else if (version != NULL)
        *version = (uint64_t)v;
    PQclear(res);
    return rc;
}

static void cat_proxy_row(const PGresult *res, int row, sm_catalog_proxy *p)
{
    long long v;
    const char *age = PQgetvalue(res, row, 4);

    snprintf(p->id, sizeof(p->id), "%s", PQgetvalue(res, row, 0));
    snprintf(p->host, sizeof(p->host), "%s", PQgetvalue(res, row, 1));
    p->pid = cat_int(res, row, 2, &v) ? (int)v : 0;
    p->map_version = cat_int(res, row, 3, &v) ? v : -1;
    p->age_s = PQgetisnull(res, row, 4) ? -1 : strtod(age, NULL);
}

int sm_catalog_proxies(PGconn *conn, sm_catalog_proxy **out, size_t *n, char *err, size_t errlen)
{
    PGresult *res;
    int rows;

    if (conn == NULL || out == NULL || n == NULL)
        return SM_EINVAL;
    *out = NULL;
    *n = 0;
    res = cat_exec(conn, "proxies",
                   "SELECT id, host, pid, map_version,"
                   " greatest(extract(epoch FROM clock_timestamp() - last_seen)::float8, 0)"
                   " FROM pgshard.proxies ORDER BY last_seen DESC NULLS LAST, id",
                   PGRES_TUPLES_OK, err, errlen);
    if (res == NULL)
        return SM_ECATALOG;
    rows = PQntuples(res);
    if (rows > 0 && (*out = calloc((size_t)rows, sizeof(**out))) == NULL) {
        PQclear(res);
        cat_fail(err, errlen, "out of memory");
        return SM_ENOMEM;
    }
    for (int i = 0; i < rows; i++)
        cat_proxy_row(res, i, &(*out)[i]);
    *n = (size_t)rows;
    PQclear(res);
    return 0;
}

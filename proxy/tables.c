/* The table registry (see tables.h): the config's [table.NAME] sections sorted for lookup
 * by name, and the start-time question to shard 0's primary about the type of each shard
 * key the config leaves open. Routing a query by these tables is not done here. */
#include "proxy/tables.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "common/log.h"
#include "parser/parser.h"

_Static_assert(PX_MAX_KEY_COLUMNS == PRS_MAX_KEY_COLUMNS, "the parser looks for this many key columns");

#define TABLES_CONNECT_TIMEOUT_S 10
#define TABLES_MSG_MAX 512

struct px_tables {
    int n;
    px_table *tables;                     /* owned: n entries sorted by (name, schema) */
    int ncols;                            /* distinct shard-key names */
    const char *cols[PX_MAX_KEY_COLUMNS]; /* borrowed from the cfg */
};

static int tables_cmp(const void *a, const void *b)
{
    const px_table *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    return c != 0 ? c : strcmp(x->schema, y->schema);
}

static uint32_t tables_oid_of(cfg_key_type t)
{
    return t == CFG_KEY_INT ? SM_OID_INT8 : t == CFG_KEY_TEXT ? SM_OID_TEXT : SM_OID_UUID;
}

/* The index of name in the distinct key columns, added when new; -1 when full. */
static int tables_key_column(px_tables *t, const char *name)
{
    for (int i = 0; i < t->ncols; i++)
        if (strcmp(t->cols[i], name) == 0)
            return i;
    if (t->ncols == PX_MAX_KEY_COLUMNS)
        return -1;
    t->cols[t->ncols] = name;
    return t->ncols++;
}

static int tables_add(px_tables *t, const cfg_table *ct, char *err, size_t errlen)
{
    px_table *pt = &t->tables[t->n++];
    *pt =
        (px_table){.schema = ct->schema, .name = ct->name, .omnisharded = ct->omnisharded, .key_column = -1};
    if (ct->omnisharded)
        return 0;
    pt->shard_key = ct->shard_key;
    pt->key_column = tables_key_column(t, ct->shard_key);
    if (pt->key_column < 0) {
        snprintf(err, errlen,
                 "[table.%s%s%s]: more than %d distinct shard_key column names; the tables must share "
                 "their shard-key names",
                 ct->schema, ct->schema[0] ? "." : "", ct->name, PX_MAX_KEY_COLUMNS);
        return -1;
    }
    if (ct->key_type != CFG_KEY_AUTO) {
        pt->key_oid = tables_oid_of(ct->key_type);
        pt->key_type = (sm_key_type)sm_key_type_of(pt->key_oid);
    }
    return 0;
}

int px_tables_build(const cfg_config *cfg, px_tables **out, char *err, size_t errlen)
{
    px_tables *t = calloc(1, sizeof(*t));
    *out = NULL;
    if (t == NULL ||
        (cfg->ntables > 0 && (t->tables = calloc((size_t)cfg->ntables, sizeof(px_table))) == NULL)) {
        px_tables_free(t);
        snprintf(err, errlen, "tables: out of memory");
        return -1;
    }
    for (int i = 0; i < cfg->ntables; i++) {
        if (tables_add(t, &cfg->tables[i], err, errlen) < 0) {
            px_tables_free(t);
            return -1;
        }
    }
    if (t->n > 1)
        qsort(t->tables, (size_t)t->n, sizeof(px_table), tables_cmp);
    *out = t;
    return 0;
}

void px_tables_free(px_tables *t)
{
    if (t == NULL)
        return;
    free(t->tables);
    free(t);
}

static const px_table *tables_exact(const px_tables *t, const char *schema, const char *name)
{
    px_table key = {.schema = schema, .name = name};
    return t->n > 0 ? bsearch(&key, t->tables, (size_t)t->n, sizeof(px_table), tables_cmp) : NULL;
}

const px_table *px_tables_find(const px_tables *t, const char *schema, const char *name)
{
    const px_table *hit;
    if (t == NULL || name == NULL)
        return NULL;
    if (schema != NULL && schema[0] != '\0') {
        hit = tables_exact(t, schema, name);
        return hit != NULL ? hit : tables_exact(t, "", name);
    }
    hit = tables_exact(t, "", name);
    return hit != NULL ? hit : tables_exact(t, "public", name);
}

int px_tables_count(const px_tables *t)
{
    return t != NULL ? t->n : 0;
}

const px_table *px_tables_at(const px_tables *t, int i)
{
    return t != NULL && i >= 0 && i < t->n ? &t->tables[i] : NULL;
}

const char *const *px_tables_key_columns(const px_tables *t, int *n)
{
    *n = t != NULL ? t->ncols : 0;
    return t != NULL ? t->cols : NULL;
}

/* ---- the key types, from shard 0 ---- */

/* One row whatever happens: whether the table exists, and the column's type if it has one.
 * to_regclass, unlike a ::regclass cast, answers NULL for a missing table; the names are
 * quoted so that they are taken exactly as the config writes them. */
static const char tables_type_query[] =
    "SELECT c.oid IS NOT NULL, a.atttypid::int8, format_type(a.atttypid, NULL)"
    " FROM (SELECT to_regclass(CASE WHEN $1 = '' THEN quote_ident($2)"
    " ELSE quote_ident($1) || '.' || quote_ident($2) END) AS oid) AS c"
    " LEFT JOIN pg_attribute AS a ON a.attrelid = c.oid AND a.attname = $3 AND a.attnum > 0"
    " AND NOT a.attisdropped";

static bool tables_need_types(const px_tables *t)
{
    for (int i = 0; i < t->n; i++)
        if (!t->tables[i].omnisharded && t->tables[i].key_oid == 0)
            return true;
    return false;
}

static PGconn *tables_connect(const cfg_config *cfg, const char *dbname, char *err, size_t errlen)
{
    const cfg_user *user = cfg_monitor_user(cfg);
    const cfg_node *node = &cfg->shards[0].primary;
    char port[8], timeout[8], msg[TABLES_MSG_MAX];
    if (user == NULL) {
        snprintf(err, errlen,
                 "reading the shard keys' types from shard 0 needs a user with a plain password "
                 "(monitor_user): set one, or set key_type in every sharded [table.NAME]");
        return NULL;
    }
    snprintf(port, sizeof(port), "%u", (unsigned)node->port);
    snprintf(timeout, sizeof(timeout), "%d", TABLES_CONNECT_TIMEOUT_S);
    cfg_conninfo ci;
    cfg_conninfo_make(&ci, cfg, node->host, port, user, dbname, "pgshard_tables", timeout, NULL);
    PGconn *conn = PQconnectdbParams(ci.keys, ci.vals, 0);
    if (conn != NULL && PQstatus(conn) == CONNECTION_OK)
        return conn;
    pgs_log_flatten(msg, sizeof(msg), conn != NULL ? PQerrorMessage(conn) : "out of memory");
    snprintf(err, errlen, "reading the shard keys' types: shard 0's primary %s:%u, database %s: %s",
             node->host, (unsigned)node->port, dbname, msg);
    PQfinish(conn);
    return NULL;
}

/* The answer of tables_type_query for pt into pt->key_oid and key_type, or err. */
static int tables_take_type(px_table *pt, const PGresult *res, const char *where, char *err, size_t errlen)
{
    const char *dot = pt->schema[0] ? "." : "";
    if (strcmp(PQgetvalue(res, 0, 0), "t") != 0) {
        snprintf(err, errlen,
                 "[table.%s%s%s]: no table %s%s%s in %s: create it, or set key_type = int | text | uuid",
                 pt->schema, dot, pt->name, pt->schema, dot, pt->name, where);
        return -1;
    }
    if (PQgetisnull(res, 0, 1)) {
        snprintf(err, errlen,
                 "[table.%s%s%s]: table %s%s%s has no column %s (shard_key) in %s: add it, or set key_type",
                 pt->schema, dot, pt->name, pt->schema, dot, pt->name, pt->shard_key, where);
        return -1;
    }
    uint32_t oid = (uint32_t)strtoul(PQgetvalue(res, 0, 1), NULL, 10);
    int kind = sm_key_type_of(oid);
    if (kind < 0) {
        snprintf(err, errlen,
                 "[table.%s%s%s]: column %s is of type %s, which cannot be a shard key (smallint, integer, "
                 "bigint, text, varchar or uuid): change it, or set key_type",
                 pt->schema, dot, pt->name, pt->shard_key, PQgetvalue(res, 0, 2));
        return -1;
    }
    pt->key_oid = oid;
    pt->key_type = (sm_key_type)kind;
    pgs_info("table_key", "table %s%s%s: sharded by %s (%s, read from shard 0)", pt->schema, dot, pt->name,
             pt->shard_key, PQgetvalue(res, 0, 2));
    return 0;
}

static int tables_ask(PGconn *conn, px_table *pt, const char *where, char *err, size_t errlen)
{
    const char *values[] = {pt->schema, pt->name, pt->shard_key};
    char msg[TABLES_MSG_MAX];
    PGresult *res = PQexecParams(conn, tables_type_query, 3, NULL, values, NULL, NULL, 0);
    int rc = -1;
    if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1) {
        rc = tables_take_type(pt, res, where, err, errlen);
    } else {
        pgs_log_flatten(msg, sizeof(msg), PQresultErrorMessage(res));
        snprintf(err, errlen, "[table.%s%s%s]: reading the shard key's type in %s: %s", pt->schema,
                 pt->schema[0] ? "." : "", pt->name, where, msg);
    }
    PQclear(res);
    return rc;
}

int px_tables_resolve(px_tables *t, const cfg_config *cfg, char *err, size_t errlen)
{
    char dbname[CFG_HOST_MAX], where[CFG_HOST_MAX * 2 + 64];
    if (!tables_need_types(t))
        return 0;
    cfg_tables_dbname(cfg, dbname, sizeof(dbname));
    PGconn *conn = tables_connect(cfg, dbname, err, errlen);
    if (conn == NULL)
        return -1;
    snprintf(where, sizeof(where), "database %s on shard 0 (%s:%u)", dbname, cfg->shards[0].primary.host,
             (unsigned)cfg->shards[0].primary.port);
    int rc = 0;
    for (int i = 0; rc == 0 && i < t->n; i++)
        if (!t->tables[i].omnisharded && t->tables[i].key_oid == 0)
            rc = tables_ask(conn, &t->tables[i], where, err, errlen);
    PQfinish(conn);
    return rc;
}

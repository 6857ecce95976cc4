/* pgshard-migrate check: whether the cluster is ready for moving data between shards. It
 * reads every shard's primary (and the catalog for moves already running) and lists what
 * is wrong, each finding with its fix, as text or one JSON document. It changes nothing. */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "migrate/mig.h"
#include "shardmap/key.h"

#define MIG_CHECK_TIMEOUT "10"
#define MIG_CHECK_TEXT_MAX 1024

typedef struct mig_finding {
    int shard;     /* -1: none */
    char *table;   /* owned; NULL: none */
    char *problem; /* owned */
    char *fix;     /* owned */
} mig_finding;

typedef struct mig_checker {
    const mig_opts *o;
    PGconn **conns;        /* owned: one per shard, NULL where the shard could not be reached */
    mig_finding *findings; /* owned */
    size_t n, cap;
    bool oom;
} mig_checker;

static char *mig_vformat(const char *fmt, va_list ap)
{
    char buf[MIG_CHECK_TEXT_MAX];
    vsnprintf(buf, sizeof buf, fmt, ap);
    return strdup(buf);
}

/* Records a finding; the problem is formatted, the fix is taken as it is. Memory running
 * out is remembered and turns the whole check into an error, never a silent pass. */
static void mig_find(mig_checker *c, int shard, const char *table, const char *fix, const char *fmt, ...)
{
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 16;
        mig_finding *f = realloc(c->findings, cap * sizeof *f);
        if (!f) {
            c->oom = true;
            return;
        }
        c->findings = f;
        c->cap = cap;
    }
    va_list ap;
    va_start(ap, fmt);
    mig_finding *f = &c->findings[c->n];
    f->shard = shard;
    f->table = table ? strdup(table) : NULL;
    f->problem = mig_vformat(fmt, ap);
    f->fix = strdup(fix);
    va_end(ap);
    if (!f->problem || !f->fix || (table && !f->table)) {
        free(f->table);
        free(f->problem);
        free(f->fix);
        c->oom = true;
        return;
    }
    c->n++;
}

/* libpq's messages end in a newline and may span lines; a finding is one line. */
static const char *mig_oneline(char *buf, size_t len, const char *msg)
{
    snprintf(buf, len, "%s", msg);
    for (char *p = buf; *p; p++)
        if (*p == '\n' || *p == '\r' || *p == '\t')
            *p = ' ';
    size_t n = strlen(buf);
    while (n > 0 && buf[n - 1] == ' ')
        buf[--n] = '\0';
    return buf;
}

static const char *mig_node_str(char *buf, size_t len, const cfg_node *n)
{
    bool v6 = strchr(n->host, ':') != NULL;
    snprintf(buf, len, "%s%s%s:%u", v6 ? "[" : "", n->host, v6 ? "]" : "", (unsigned)n->port);
    return buf;
}

/* Logs in to shard's primary as pgshard's monitor does (cfg_monitor_user, cfg_conninfo_make).
 * A node that cannot be reached is a finding: its checks cannot be made. */
static PGconn *mig_check_connect(mig_checker *c, int shard, const cfg_user *user, const char *db)
{
    const cfg_config *cfg = c->o->cfg;
    const cfg_node *node = &cfg->shards[shard].primary;
    char port[8], msg[MIG_CHECK_TEXT_MAX];
    snprintf(port, sizeof port, "%u", (unsigned)node->port);
    cfg_conninfo ci;
    cfg_conninfo_make(&ci, cfg, node->host, port, user, db, "pgshard-migrate", MIG_CHECK_TIMEOUT, NULL);
    PGconn *conn = PQconnectdbParams(ci.keys, ci.vals, 0);
    if (conn != NULL && PQstatus(conn) == CONNECTION_OK)
        return conn;
    mig_find(c, shard, NULL, "start it, or correct [shard.N] primary and the monitor's user and password",
             "cannot connect to database %s as %s: %s", db, user->name,
             mig_oneline(msg, sizeof msg, conn ? PQerrorMessage(conn) : "out of memory"));
    PQfinish(conn);
    return NULL;
}

/* A query that must answer rows; a failure is a finding on that shard. */
static PGresult *mig_check_query(mig_checker *c, int shard, const char *sql, int nparams,
                                 const char *const *params)
{
    char msg[MIG_CHECK_TEXT_MAX];
    PGresult *res = PQexecParams(c->conns[shard], sql, nparams, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) == PGRES_TUPLES_OK)
        return res;
    mig_find(c, shard, NULL,
             "see the server's message: the monitor's user must be able to read the system catalogs",
             "a check's query failed: %s", mig_oneline(msg, sizeof msg, PQresultErrorMessage(res)));
    PQclear(res);
    return NULL;
}

/* ---- 1. the same schema everywhere ---- */

/* Every user table and what a move depends on being equal, one (table, item, value) row
 * each: the table itself, its columns (value: the type with its modifier and NOT NULL),
 * its primary key (value: its columns) and its other indexes. An index is compared from
 * " USING " on, with UNIQUE, so that the index's own name (which may differ between shards)
 * does not count. */
static const char mig_schema_query[] =
    "WITH t AS (SELECT c.oid, format('%I.%I', n.nspname, c.relname) AS tbl"
    " FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace"
    " WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pgshard')"
    " AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%')"
    " SELECT tbl, 'table', '' FROM t"
    " UNION ALL SELECT t.tbl, format('column %I', a.attname), format_type(a.atttypid, a.atttypmod)"
    " || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END"
    " FROM t JOIN pg_attribute AS a ON a.attrelid = t.oid AND a.attnum > 0 AND NOT a.attisdropped"
    " UNION ALL SELECT t.tbl, 'primary key', '(' || (SELECT string_agg(quote_ident(a.attname), ', '"
    " ORDER BY k.ord) FROM unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)"
    " JOIN pg_attribute AS a ON a.attrelid = t.oid AND a.attnum = k.attnum) || ')'"
    " FROM t JOIN pg_index AS i ON i.indrelid = t.oid AND i.indisprimary"
    " UNION ALL SELECT t.tbl, 'index ' || CASE WHEN i.indisunique THEN 'unique ' ELSE '' END"
    " || substr(d.def, strpos(d.def, ' USING ') + 1), ''"
    " FROM t JOIN pg_index AS i ON i.indrelid = t.oid AND NOT i.indisprimary"
    " CROSS JOIN LATERAL (SELECT pg_get_indexdef(i.indexrelid) AS def) AS d";

typedef struct mig_item {
    const char *table; /* not owned: a value of a shard's PGresult */
    const char *item;  /* not owned: likewise */
    const char *value; /* not owned: likewise */
    int shard;
} mig_item;

static int mig_item_cmp(const void *a, const void *b)
{
    const mig_item *x = a, *y = b;
    int r = strcmp(x->table, y->table);
    if (r == 0)
        r = strcmp(x->item, y->item);
    return r != 0 ? r : (x->shard > y->shard) - (x->shard < y->shard);
}

/* "0, 2": the reachable shards in want that are not in have. */
static void mig_shard_list(const mig_checker *c, const bool *want, const bool *have, char *out, size_t len)
{
    size_t used = 0;
    out[0] = '\0';
    for (int s = 0; s < c->o->cfg->nshards && used < len; s++)
        if (c->conns[s] && want[s] && !have[s])
            used += (size_t)snprintf(out + used, len - used, "%s%d", used ? ", " : "", s);
}

/* The rows g[0..n) of one item differ in value: "integer on shard 0, bigint on shard 1". */
static void mig_schema_values(mig_checker *c, const mig_item *g, size_t n)
{
    char list[MIG_CHECK_TEXT_MAX];
    size_t used = 0;
    bool same = true;
    list[0] = '\0';
    for (size_t k = 0; k < n; k++) {
        same = same && strcmp(g[k].value, g[0].value) == 0;
        if (used < sizeof list)
            used += (size_t)snprintf(list + used, sizeof list - used, "%s%s on shard %d", k ? ", " : "",
                                     g[k].value, g[k].shard);
    }
    if (!same)
        mig_find(c, -1, g->table, "make the shards' definitions the same (ALTER TABLE)", "%s differs: %s",
                 g->item, list);
}

/* One item's rows g[0..n), found on the shards in have: a finding when a shard that has
 * the table lacks the item (or, for the table itself, any shard lacks it), or when the
 * shards that have it disagree on its value. */
static void mig_schema_group(mig_checker *c, const mig_item *g, size_t n, const bool *tables,
                             const bool *have)
{
    char missing[MIG_CHECK_TEXT_MAX];
    bool all[CFG_MAX_SHARDS];
    bool is_table = strcmp(g->item, "table") == 0;
    for (int s = 0; s < c->o->cfg->nshards; s++)
        all[s] = true;
    mig_shard_list(c, is_table ? all : tables, have, missing, sizeof missing);
    if (missing[0] != '\0' && is_table)
        mig_find(c, -1, g->table, "create it there as on the other shards, or drop it everywhere",
                 "missing on shard %s", missing);
    else if (missing[0] != '\0')
        mig_find(c, -1, g->table, "make the shards' definitions the same (ALTER TABLE, CREATE or DROP INDEX)",
                 "%s: missing on shard %s", g->item, missing);
    mig_schema_values(c, g, n);
}

/* items sorted by (table, item, shard): a table's rows are one run, its item's rows a run
 * within it. The shards that have the table are read from its "table" rows first. */
static void mig_schema_table(mig_checker *c, const mig_item *items, size_t n)
{
    bool tables[CFG_MAX_SHARDS] = {false}, have[CFG_MAX_SHARDS];
    for (size_t k = 0; k < n; k++)
        if (strcmp(items[k].item, "table") == 0)
            tables[items[k].shard] = true;
    for (size_t i = 0; i < n;) {
        memset(have, 0, sizeof have);
        size_t j = i;
        while (j < n && strcmp(items[j].item, items[i].item) == 0)
            have[items[j++].shard] = true;
        mig_schema_group(c, &items[i], j - i, tables, have);
        i = j;
    }
}

static void mig_schema_compare(mig_checker *c, mig_item *items, size_t n)
{
    qsort(items, n, sizeof *items, mig_item_cmp);
    for (size_t i = 0; i < n;) {
        size_t j = i;
        while (j < n && strcmp(items[j].table, items[i].table) == 0)
            j++;
        mig_schema_table(c, &items[i], j - i);
        i = j;
    }
}

static void mig_check_schemas(mig_checker *c)
{
    int nshards = c->o->cfg->nshards;
    PGresult *res[CFG_MAX_SHARDS] = {0};
    size_t n = 0;
    for (int s = 0; s < nshards; s++)
        if (c->conns[s] && (res[s] = mig_check_query(c, s, mig_schema_query, 0, NULL)))
            n += (size_t)PQntuples(res[s]);
    mig_item *items = calloc(n ? n : 1, sizeof *items);
    if (!items) {
        c->oom = true;
    } else {
        size_t k = 0;
        for (int s = 0; s < nshards; s++)
            for (int r = 0; res[s] && r < PQntuples(res[s]); r++)
                items[k++] = (mig_item){PQgetvalue(res[s], r, 0), PQgetvalue(res[s], r, 1),
                                        PQgetvalue(res[s], r, 2), s};
        mig_schema_compare(c, items, n);
    }
    free(items);
    for (int s = 0; s < nshards; s++)
        PQclear(res[s]);
}

/* ---- 2 and 3. each sharded table: its key column, and what logical replication needs ---- */

/* One row whatever happens, as proxy/tables.c asks: the table (to_regclass, NULL when
 * missing), the key column's type, the replica identity, the primary key's columns and
 * whether it (or the replica identity index) includes the key. */
static const char mig_table_query[] =
    "SELECT c.oid IS NOT NULL, a.atttypid::int8, format_type(a.atttypid, NULL), r.relreplident,"
    " (SELECT string_agg(quote_ident(pa.attname), ', ' ORDER BY k.ord) FROM pg_index AS i,"
    " unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)"
    " JOIN pg_attribute AS pa ON pa.attrelid = c.oid AND pa.attnum = k.attnum"
    " WHERE i.indrelid = c.oid AND i.indisprimary),"
    " (SELECT a.attnum = ANY (i.indkey) FROM pg_index AS i WHERE i.indrelid = c.oid AND i.indisprimary),"
    " (SELECT a.attnum = ANY (i.indkey) FROM pg_index AS i WHERE i.indrelid = c.oid AND i.indisreplident),"
    " (SELECT i.indnatts = 1 AND pa.atttypid = 'uuid'::regtype FROM pg_index AS i"
    " JOIN pg_attribute AS pa ON pa.attrelid = c.oid AND pa.attnum = i.indkey[0]"
    " WHERE i.indrelid = c.oid AND i.indisprimary)"
    " FROM (SELECT to_regclass(CASE WHEN $1 = '' THEN quote_ident($2)"
    " ELSE quote_ident($1) || '.' || quote_ident($2) END) AS oid) AS c"
    " LEFT JOIN pg_class AS r ON r.oid = c.oid"
    " LEFT JOIN pg_attribute AS a ON a.attrelid = c.oid AND a.attname = $3 AND a.attnum > 0"
    " AND NOT a.attisdropped";

static bool mig_true(const PGresult *res, int col)
{
    return !PQgetisnull(res, 0, col) && strcmp(PQgetvalue(res, 0, col), "t") == 0;
}

/* Whether the key column's type is one key_type allows (AUTO: any a key can have). */
static bool mig_key_type_fits(cfg_key_type want, uint32_t oid)
{
    int kind = sm_key_type_of(oid);
    static const int of[] = {
        [CFG_KEY_INT] = SM_KEY_INT, [CFG_KEY_TEXT] = SM_KEY_TEXT, [CFG_KEY_UUID] = SM_KEY_UUID};
    return kind >= 0 && (want == CFG_KEY_AUTO || kind == of[want]);
}

/* Logical replication copies UPDATEs and DELETEs by the replica identity; a move also
 * needs it to be unique across shards, which a primary key is when it includes the shard
 * key, or when it is a single uuid column (the "or UUID keys"). */
static void mig_check_identity(mig_checker *c, int s, const char *tn, const cfg_table *t, const PGresult *res)
{
    char ident = PQgetvalue(res, 0, 3)[0];
    if (ident == 'f')
        return;
    if (ident == 'n') {
        mig_find(c, s, tn,
                 "ALTER TABLE ... REPLICA IDENTITY DEFAULT with a primary key that includes the key",
                 "REPLICA IDENTITY NOTHING on shard %d: a move cannot copy its updates and deletes", s);
    } else if (ident == 'i' && !mig_true(res, 6)) {
        mig_find(c, s, tn, "use a replica identity index that includes the key, or a primary key that does",
                 "replica identity index on shard %d does not include the key %s", s, t->shard_key);
    } else if (ident == 'd' && PQgetisnull(res, 0, 4)) {
        mig_find(c, s, tn, "ALTER TABLE ... ADD PRIMARY KEY (the key, ...), or REPLICA IDENTITY FULL",
                 "no primary key on shard %d: a move cannot copy its updates and deletes", s);
    } else if (ident == 'd' && !mig_true(res, 5) && !mig_true(res, 7)) {
        mig_find(c, s, tn,
                 "make the key part of the primary key: DROP CONSTRAINT, then ADD PRIMARY KEY (key, ...)",
                 "primary key (%s) on shard %d does not include the key %s: it is not unique across shards",
                 PQgetvalue(res, 0, 4), s, t->shard_key);
    }
}

static void mig_check_table(mig_checker *c, int s, const cfg_table *t)
{
    char tn[2 * CFG_NAME_MAX + 2];
    snprintf(tn, sizeof tn, "%s%s%s", t->schema, t->schema[0] ? "." : "", t->name);
    const char *params[] = {t->schema, t->name, t->shard_key};
    PGresult *res = mig_check_query(c, s, mig_table_query, 3, params);
    if (!res)
        return;
    if (PQntuples(res) != 1 || !mig_true(res, 0)) {
        mig_find(c, s, tn, "create it there, or correct [table.NAME]",
                 "[table.%s] does not exist on shard %d", tn, s);
    } else if (PQgetisnull(res, 0, 1)) {
        mig_find(c, s, tn, "add the column there, or correct shard_key",
                 "no column %s (shard_key) on shard %d", t->shard_key, s);
    } else {
        if (!mig_key_type_fits(t->key_type, (uint32_t)strtoul(PQgetvalue(res, 0, 1), NULL, 10)))
            mig_find(c, s, tn, "change the column's type, or key_type",
                     "key %s is %s on shard %d, which is not a key_type = %s column", t->shard_key,
                     PQgetvalue(res, 0, 2), s, cfg_key_type_name(t->key_type));
        mig_check_identity(c, s, tn, t, res);
    }
    PQclear(res);
}

static void mig_check_tables(mig_checker *c)
{
    const cfg_config *cfg = c->o->cfg;
    for (int i = 0; i < cfg->ntables; i++)
        for (int s = 0; s < cfg->nshards; s++)
            if (!cfg->tables[i].omnisharded && c->conns[s])
                mig_check_table(c, s, &cfg->tables[i]);
}

/* ---- 4 and 5. what each shard, as a move's source or target, must allow ---- */

/* Background workers are the backends pg_stat_activity does not list as one of
 * PostgreSQL's own kinds; they count against max_worker_processes. */
static const char mig_server_query[] =
    "SELECT current_setting('wal_level'),"
    " current_setting('max_replication_slots')::int - (SELECT count(*) FROM pg_replication_slots),"
    " current_setting('max_logical_replication_workers')::int"
    " - (SELECT count(*) FROM pg_stat_subscription WHERE pid IS NOT NULL),"
    " current_setting('max_worker_processes')::int - (SELECT count(*) FROM pg_stat_activity"
    " WHERE backend_type NOT IN ('client backend', 'autovacuum launcher', 'autovacuum worker', 'walsender',"
    " 'walreceiver', 'walwriter', 'checkpointer', 'background writer', 'startup', 'archiver',"
    " 'wal summarizer', 'io worker', 'slotsync worker', 'standalone backend'))";

/* A count the server computed: a number, or 0 (nothing free) if it were ever not one. */
static long mig_long(const PGresult *res, int col)
{
    char *end;
    long v = strtol(PQgetvalue(res, 0, col), &end, 10);
    return *end == '\0' ? v : 0;
}

static void mig_check_server(mig_checker *c, int s)
{
    PGresult *res = mig_check_query(c, s, mig_server_query, 0, NULL);
    if (!res)
        return;
    if (strcmp(PQgetvalue(res, 0, 0), "logical") != 0)
        mig_find(c, s, NULL, "ALTER SYSTEM SET wal_level = logical, then restart it",
                 "wal_level is %s, a move needs logical", PQgetvalue(res, 0, 0));
    if (mig_long(res, 1) < 1)
        mig_find(c, s, NULL, "drop unused slots (pg_drop_replication_slot) or raise max_replication_slots",
                 "no free replication slot (%s free)", PQgetvalue(res, 0, 1));
    if (mig_long(res, 2) < 1)
        mig_find(c, s, NULL, "raise max_logical_replication_workers, or wait for other subscriptions",
                 "no free logical replication worker (%s free)", PQgetvalue(res, 0, 2));
    if (mig_long(res, 3) < 1)
        mig_find(c, s, NULL, "raise max_worker_processes (restart needed)",
                 "no free background worker process (%s free)", PQgetvalue(res, 0, 3));
    PQclear(res);
}

/* ---- 6. no other move ---- */

/* pgshard.migrations is where issue 12's moves will record themselves. Until a catalog
 * has that table no move can be running in it, so its absence (or no catalog at all) is
 * nothing to report. A row is shown whole, as JSON, since its columns are not fixed yet. */
static void mig_check_moves(mig_checker *c)
{
    char msg[MIG_CHECK_TEXT_MAX];
    if (!c->o->cfg->catalog_dsn)
        return;
    PGconn *conn = mig_connect(c->o);
    if (!conn) {
        mig_find(c, -1, NULL, "make catalog_dsn reachable",
                 "catalog (catalog_dsn): cannot connect to look for moves");
        return;
    }
    PGresult *res =
        PQexec(conn, "SELECT m::text FROM pgshard.migrations AS m WHERE m.state NOT IN ('done', 'aborted')");
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    bool ok = PQresultStatus(res) == PGRES_TUPLES_OK;
    if (!ok && !(state && strcmp(state, "42P01") == 0)) /* 42P01: no such table, no move */
        mig_find(c, -1, NULL, "check the catalog",
                 "catalog (catalog_dsn): reading pgshard.migrations failed: %s",
                 mig_oneline(msg, sizeof msg, PQresultErrorMessage(res)));
    for (int r = 0; ok && r < PQntuples(res); r++)
        mig_find(c, -1, NULL, "wait for it to finish, or abort it", "another move is running: %s",
                 PQgetvalue(res, r, 0));
    PQclear(res);
    PQfinish(conn);
}

/* ---- output ---- */

/* A finding of a table starts with it (its problem says which shard); one of a shard as
 * a whole with the shard and its primary, which JSON gives as "shard" alone. */
static void mig_check_text(const mig_checker *c)
{
    FILE *f = c->o->out;
    char where[CFG_HOST_MAX + 16];
    for (size_t i = 0; i < c->n; i++) {
        const mig_finding *x = &c->findings[i];
        if (x->table)
            fprintf(f, "table %s: ", x->table);
        else if (x->shard >= 0)
            fprintf(f, "shard %d (%s): ", x->shard,
                    mig_node_str(where, sizeof where, &c->o->cfg->shards[x->shard].primary));
        fprintf(f, "%s — fix: %s\n", x->problem, x->fix);
    }
    if (c->n == 0)
        fputs("no finding: ready for moves\n", f);
    else
        fprintf(f, "%zu finding%s\n", c->n, c->n == 1 ? "" : "s");
}

static void mig_check_json(const mig_checker *c)
{
    FILE *f = c->o->out;
    fprintf(f, "{\"ok\":%s,\"findings\":[", c->n == 0 ? "true" : "false");
    for (size_t i = 0; i < c->n; i++) {
        const mig_finding *x = &c->findings[i];
        fputs(i ? ",{\"shard\":" : "{\"shard\":", f);
        if (x->shard < 0)
            fputs("null", f);
        else
            fprintf(f, "%d", x->shard);
        fputs(",\"table\":", f);
        if (x->table)
            mig_json_cstr(f, x->table);
        else
            fputs("null", f);
        fputs(",\"problem\":", f);
        mig_json_cstr(f, x->problem);
        fputs(",\"fix\":", f);
        mig_json_cstr(f, x->fix);
        fputc('}', f);
    }
    fputs("]}\n", f);
}

static void mig_check_free(mig_checker *c)
{
    for (int s = 0; c->conns && s < c->o->cfg->nshards; s++)
        PQfinish(c->conns[s]);
    free(c->conns);
    for (size_t i = 0; i < c->n; i++) {
        free(c->findings[i].table);
        free(c->findings[i].problem);
        free(c->findings[i].fix);
    }
    free(c->findings);
}

/* The monitor's user logs in to every node; without one there is nothing to check with,
 * which is an error rather than a finding. */
static int mig_check_run(mig_checker *c)
{
    const cfg_config *cfg = c->o->cfg;
    const cfg_user *user = cfg_monitor_user(cfg);
    char db[CFG_HOST_MAX];
    if (!user) {
        fprintf(c->o->err,
                "pgshard-migrate: check: %s: no user to log in to the shards with: set monitor_user, "
                "or give a [user.NAME] a plain password\n",
                cfg->path);
        return -1;
    }
    c->conns = calloc((size_t)cfg->nshards, sizeof(PGconn *));
    if (!c->conns)
        return -1;
    cfg_tables_dbname(cfg, db, sizeof db);
    for (int s = 0; s < cfg->nshards; s++)
        c->conns[s] = mig_check_connect(c, s, user, db);
    mig_check_schemas(c);
    mig_check_tables(c);
    for (int s = 0; s < cfg->nshards; s++)
        if (c->conns[s])
            mig_check_server(c, s);
    mig_check_moves(c);
    return c->oom ? -1 : 0;
}

int mig_check(const mig_opts *o)
{
    mig_checker c = {.o = o};
    int rc = mig_check_run(&c);
    if (rc < 0 && c.oom)
        fprintf(o->err, "pgshard-migrate: check: out of memory\n");
    if (rc == 0 && o->json)
        mig_check_json(&c);
    else if (rc == 0)
        mig_check_text(&c);
    bool found = c.n > 0;
    mig_check_free(&c);
    if (rc == 0 && (fflush(o->out) != 0 || ferror(o->out))) {
        fprintf(o->err, "pgshard-migrate: check: cannot write the output\n");
        rc = -1;
    }
    return rc < 0 || found ? MIG_EXIT_ERROR : MIG_EXIT_OK;
}

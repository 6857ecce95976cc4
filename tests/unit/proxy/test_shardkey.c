/* Tests for proxy/shardkey.c (px_sk_route) over the parser's analysis, as route.c calls them:
 * a statement runs on one shard exactly when every occurrence of a sharded table in it is
 * restricted to keys of that shard (joins, self-joins, outer joins, subqueries, CTEs,
 * derived tables, set operations, UPDATE ... FROM, DELETE ... USING, bind parameters), and
 * is refused with 0A000 naming the occurrence otherwise. Tenants are chosen from the map so
 * that "same shard" and "other shard" hold whatever the hash gives. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "config/config.h"
#include "parser/parser.h"
#include "proxy/shardkey.h"
#include "proxy/tables.h"

#define N(a) (sizeof(a) / sizeof((a)[0]))

static const char ini[] = "[shard.0]\nprimary = 127.0.0.1:1\n[shard.1]\nprimary = 127.0.0.1:2\n"
                          "[shard.2]\nprimary = 127.0.0.1:3\n[user.app]\npassword = app\n"
                          "[table.orders]\nshard_key = tenant_id\nkey_type = int\n"
                          "[table.order_items]\nshard_key = tenant_id\nkey_type = int\n"
                          "[table.users]\nshard_key = tenant_id\nkey_type = int\n"
                          "[table.notes]\nshard_key = owner\nkey_type = int\n"
                          "[table.tenants]\nomnisharded = true\n";

typedef struct fixture {
    cfg_config *cfg;
    px_tables *tables;
    sm_map *map;
    const char *const *cols;
    int ncols;
    long a, b, c; /* a and b on one shard, c on another */
    int shard_a, shard_c;
} fixture;

static fixture fx;
static const char *fx_tenant; /* routes as under SET pgshard.tenant when set */
static int fx_nshards;        /* px_sk_input.nshards (0: DDL and omnisharded writes are not broadcast) */
static bool fx_cross_writes;  /* allow_cross_shard_writes */
static bool fx_split_inserts; /* two_phase_commit: INSERT rows of several shards are split */

static int shard_of(long tenant)
{
    char txt[32];
    int n = snprintf(txt, sizeof txt, "%ld", tenant);
    sm_key k;
    sm_route_why why;
    assert_int_equal(sm_key_from_text(&k, SM_OID_INT8, txt, (size_t)n), 0);
    return sm_map_route(fx.map, &k, &why);
}

static int setup(void **state)
{
    char err[256] = "";
    if (cfg_load_string(ini, "t.ini", &fx.cfg, err, sizeof err) != 0 ||
        px_tables_build(fx.cfg, &fx.tables, err, sizeof err) != 0)
        fail_msg("%s", err);
    assert_int_equal(sm_map_new_default(&fx.map, 3, 1024), 0);
    fx.cols = px_tables_key_columns(fx.tables, &fx.ncols);
    fx.a = 1;
    fx.shard_a = shard_of(fx.a);
    for (fx.b = 2; shard_of(fx.b) != fx.shard_a; fx.b++)
        ;
    for (fx.c = 2; shard_of(fx.c) == fx.shard_a; fx.c++)
        ;
    fx.shard_c = shard_of(fx.c);
    return 0;
}

static int teardown(void **state)
{
    sm_map_free(fx.map);
    px_tables_free(fx.tables);
    cfg_free(fx.cfg);
    return 0;
}

/* The Bind body of text parameters (no format codes). */
static size_t bind_body(uint8_t *buf, size_t cap, const char *const *params, size_t n)
{
    size_t o = 0;
    buf[o++] = 0; /* portal */
    buf[o++] = 0; /* statement */
    buf[o++] = 0, buf[o++] = 0;
    buf[o++] = 0, buf[o++] = (uint8_t)n;
    for (size_t i = 0; i < n; i++) {
        size_t l = strlen(params[i]);
        assert_true(o + 4 + l <= cap);
        buf[o++] = 0, buf[o++] = 0, buf[o++] = 0, buf[o++] = (uint8_t)l;
        memcpy(buf + o, params[i], l);
        o += l;
    }
    return o;
}

/* Replaces A, B and C (as words) in a template with the fixture's tenants. */
static void fill(const char *tpl, char *out, size_t cap)
{
    size_t o = 0;
    for (const char *p = tpl; *p && o + 24 < cap; p++) {
        bool word = (*p == 'A' || *p == 'B' || *p == 'C') && (p == tpl || p[-1] == ' ' || p[-1] == '(') &&
                    (p[1] == ' ' || p[1] == ')' || p[1] == ',' || p[1] == '\0');
        if (word)
            o += (size_t)snprintf(out + o, cap - o, "%ld", *p == 'A' ? fx.a : *p == 'B' ? fx.b : fx.c);
        else
            out[o++] = *p;
    }
    out[o] = '\0';
}

/* Routes tpl with its Bind parameters. With plan: also the plan of the statement (made
 * without the Bind, as for a named statement) and, in *planned, the Bind routed by it. */
static void route_planned(const char *tpl, const char *const *params, size_t nparams, px_sk_result *r,
                          px_sk_plan *plan, px_sk_result *planned)
{
    char sql[1024];
    fill(tpl, sql, sizeof sql);
    prs_lexed lx = PRS_LEXED_INIT;
    prs_query_info qi;
    prs_classify_opts opts = {fx.cols, (size_t)fx.ncols};
    assert_int_equal(prs_lex(sql, strlen(sql), &lx), 0);
    int rc = prs_classify_ex(sql, strlen(sql), &lx, &opts, &qi);
    if (rc != 0)
        fail_msg("%s: classify %d", sql, rc);
    uint8_t body[512];
    char vals[8][32];
    const char *pv[8];
    for (size_t i = 0; i < nparams; i++) {
        fill(params[i], vals[i], sizeof vals[i]);
        pv[i] = vals[i];
    }
    px_sk_bind bind = {body, 0, NULL, 0};
    if (params)
        bind.len = bind_body(body, sizeof body, pv, nparams);
    px_sk_input in = {.tables = fx.tables,
                      .default_shard = 0,
                      .map = fx.map,
                      .qi = &qi,
                      .sql = sql,
                      .len = strlen(sql),
                      .lex = &lx,
                      .bind = params ? &bind : NULL,
                      .tenant = fx_tenant,
                      .tenant_len = fx_tenant ? strlen(fx_tenant) : 0,
                      .pinned_shard = -1,
                      .nshards = fx_nshards,
                      .cross_writes = fx_cross_writes,
                      .split_inserts = fx_split_inserts};
    px_sk_route(&in, r);
    if (plan) {
        px_sk_input no_bind = in;
        no_bind.bind = NULL;
        px_sk_plan_make(&no_bind, false, plan);
        if (plan->kind == PX_SKP_PARAM)
            px_sk_route_planned(plan, &in, planned);
    }
    prs_lexed_free(&lx);
}

static void route(const char *tpl, const char *const *params, size_t nparams, px_sk_result *r)
{
    route_planned(tpl, params, nparams, r, NULL, NULL);
}

static void expect_shard(const char *tpl, int shard)
{
    px_sk_result r;
    route(tpl, NULL, 0, &r);
    if (r.verdict != PX_SK_SHARD || r.shard != shard)
        fail_msg("%s: verdict %d shard %d (want shard %d): %s", tpl, r.verdict, r.shard, shard, r.msg);
}

static void expect_refused(const char *tpl, const char *why)
{
    px_sk_result r;
    route(tpl, NULL, 0, &r);
    if (r.verdict != PX_SK_REFUSE || strcmp(r.sqlstate, "0A000") != 0 || !strstr(r.msg, why))
        fail_msg("%s: verdict %d shard %d, want refused with \"%s\": %s", tpl, r.verdict, r.shard, why,
                 r.msg);
}

/* A read no key restricts runs on every shard (its plan is checked by the planner's tests). */
static void expect_all(const char *tpl)
{
    px_sk_result r;
    route(tpl, NULL, 0, &r);
    if (r.verdict != PX_SK_ALL)
        fail_msg("%s: verdict %d shard %d, want every shard: %s", tpl, r.verdict, r.shard, r.msg);
}

static void test_joins(void **state)
{
    int sa = fx.shard_a;
    expect_shard(
        "SELECT * FROM orders o JOIN order_items i ON i.tenant_id = o.tenant_id AND i.order_id = o.id "
        "WHERE o.tenant_id = A",
        sa);
    expect_shard(
        "SELECT * FROM orders o JOIN order_items i ON o.tenant_id = i.tenant_id WHERE i.tenant_id = A", sa);
    expect_shard("SELECT * FROM orders o, users u WHERE o.tenant_id = A AND u.tenant_id = o.tenant_id", sa);
    expect_shard("SELECT * FROM orders o, users u WHERE o.tenant_id = A AND u.tenant_id = B", sa);
    expect_shard("SELECT * FROM users u JOIN orders o ON o.tenant_id = u.tenant_id JOIN order_items i ON "
                 "i.tenant_id = o.tenant_id WHERE u.tenant_id = A",
                 sa);
    expect_shard("SELECT * FROM order_items i JOIN orders o USING (tenant_id) WHERE o.tenant_id = A", sa);
    expect_shard("SELECT * FROM users u JOIN orders o ON (u.tenant_id, u.id) = (o.tenant_id, o.user_id) "
                 "WHERE u.tenant_id = A",
                 sa);
    expect_shard("SELECT * FROM orders o JOIN tenants t ON t.id = o.tenant_id WHERE o.tenant_id = A", sa);
    expect_shard("SELECT * FROM public.orders JOIN users ON users.tenant_id = orders.tenant_id WHERE "
                 "public.orders.tenant_id = A",
                 sa);
    expect_shard("SELECT * FROM orders o JOIN notes n ON n.owner = o.tenant_id WHERE o.tenant_id = A", sa);
    /* An unqualified key column with one sharded candidate. */
    expect_shard("SELECT * FROM orders o JOIN tenants t ON t.id = o.tenant_id WHERE tenant_id = A", sa);

    expect_refused("SELECT * FROM orders o JOIN order_items i ON i.order_id = o.id WHERE o.tenant_id = A",
                   "sharded table \"order_items\" (as \"i\") must name its tenant: add WHERE i.tenant_id");
    expect_refused("SELECT * FROM orders o, users u WHERE o.tenant_id = A", "\"users\" (as \"u\")");
    expect_refused("SELECT * FROM orders o, users u WHERE o.tenant_id = A AND u.tenant_id = C",
                   "belong to different shards");
    expect_all("SELECT * FROM orders o JOIN order_items i ON i.tenant_id = o.tenant_id WHERE o.tenant_id = A "
               "OR i.tenant_id = A");
    expect_all("SELECT * FROM orders o JOIN order_items i ON i.tenant_id = o.tenant_id WHERE tenant_id = A");
    /* users.tenant_id is not the key of notes */
    expect_refused("SELECT * FROM users u JOIN notes n ON n.tenant_id = u.tenant_id WHERE u.tenant_id = A",
                   "\"notes\" (as \"n\")");
    /* An aliased join hides its tables' names. */
    expect_all("SELECT * FROM (orders o JOIN users u ON u.tenant_id = o.tenant_id) j WHERE o.tenant_id = A");
}

static void test_outer_joins(void **state)
{
    int sa = fx.shard_a;
    expect_shard("SELECT * FROM users u LEFT JOIN orders o ON o.tenant_id = u.tenant_id AND o.user_id = u.id "
                 "WHERE u.tenant_id = A",
                 sa);
    expect_shard(
        "SELECT * FROM orders o RIGHT JOIN users u ON o.tenant_id = u.tenant_id WHERE u.tenant_id = A", sa);
    expect_shard("SELECT * FROM users u LEFT JOIN orders o ON o.tenant_id = B WHERE u.tenant_id = A", sa);
    /* Only the nullable side is keyed: the preserved side reads every tenant. */
    expect_refused(
        "SELECT * FROM users u LEFT JOIN orders o ON o.tenant_id = u.tenant_id WHERE o.tenant_id = A",
        "\"users\" (as \"u\")");
    expect_all("SELECT * FROM users u LEFT JOIN orders o ON u.tenant_id = A AND o.tenant_id = u.tenant_id");
    expect_refused(
        "SELECT * FROM users u FULL JOIN orders o ON o.tenant_id = u.tenant_id WHERE u.tenant_id = A",
        "\"orders\" (as \"o\")");
    expect_refused(
        "SELECT * FROM orders o RIGHT JOIN users u ON o.tenant_id = u.tenant_id WHERE o.tenant_id = A",
        "\"users\" (as \"u\")");
}

static void test_self_joins(void **state)
{
    expect_shard("SELECT * FROM users a JOIN users b ON b.tenant_id = a.tenant_id AND b.id = a.id + 1 WHERE "
                 "a.tenant_id = A",
                 fx.shard_a);
    expect_shard("SELECT * FROM users a, users b WHERE a.tenant_id = A AND b.tenant_id = B", fx.shard_a);
    expect_refused("SELECT * FROM users a, users b WHERE a.tenant_id = A AND b.tenant_id = C",
                   "belong to different shards");
    expect_refused("SELECT * FROM users a JOIN users b ON b.id = a.id WHERE a.tenant_id = A",
                   "\"users\" (as \"b\")");
}

static void test_subqueries(void **state)
{
    int sa = fx.shard_a;
    expect_shard("SELECT * FROM orders o WHERE o.tenant_id = A AND EXISTS (SELECT 1 FROM order_items i WHERE "
                 "i.tenant_id = o.tenant_id AND i.order_id = o.id)",
                 sa);
    expect_shard(
        "SELECT * FROM users WHERE tenant_id = A AND id IN (SELECT user_id FROM orders WHERE tenant_id = "
        "A)",
        sa);
    expect_shard(
        "SELECT u.id, (SELECT max(amount) FROM orders o WHERE o.tenant_id = u.tenant_id) FROM users u "
        "WHERE u.tenant_id = A",
        sa);
    expect_shard("SELECT * FROM orders o CROSS JOIN LATERAL (SELECT count(*) FROM order_items i WHERE "
                 "i.tenant_id = o.tenant_id) x WHERE o.tenant_id = A",
                 sa);
    expect_shard("SELECT * FROM orders WHERE tenant_id = A AND NOT EXISTS (SELECT 1 FROM order_items WHERE "
                 "tenant_id = orders.tenant_id)",
                 sa);
    expect_shard(
        "SELECT * FROM users u LEFT JOIN LATERAL (SELECT * FROM orders o WHERE o.tenant_id = u.tenant_id "
        "ORDER BY o.id DESC LIMIT 1) last ON true WHERE u.tenant_id = A",
        sa);
    /* The outer column is keyed only inside the subquery: the outer rows are not. */
    expect_refused(
        "SELECT * FROM orders o WHERE EXISTS (SELECT 1 FROM order_items i WHERE i.tenant_id = A AND "
        "o.tenant_id = i.tenant_id)",
        "\"orders\" (as \"o\")");
    expect_refused("SELECT * FROM users WHERE tenant_id = A AND id IN (SELECT user_id FROM orders)",
                   "\"orders\" must name its tenant");
    expect_refused("SELECT (SELECT count(*) FROM orders) FROM users WHERE tenant_id = A", "\"orders\"");
    expect_refused(
        "SELECT * FROM users WHERE tenant_id = A AND id IN (SELECT user_id FROM orders WHERE tenant_id "
        "= C)",
        "different shards");
    /* A non-LATERAL derived table does not see its siblings: u.tenant_id there is not this u. */
    expect_refused("SELECT * FROM users u, (SELECT * FROM orders o WHERE o.tenant_id = u.tenant_id) x WHERE "
                   "u.tenant_id = A",
                   "\"orders\" (as \"o\")");
}

static void test_ctes_derived_unions(void **state)
{
    int sa = fx.shard_a;
    expect_shard(
        "WITH big AS (SELECT * FROM orders WHERE tenant_id = A AND amount > 10) SELECT count(*) FROM big",
        sa);
    expect_shard("WITH o AS (SELECT * FROM orders WHERE tenant_id = A), u AS (SELECT * FROM users WHERE "
                 "tenant_id = B) SELECT * FROM o JOIN u ON u.id = o.user_id",
                 sa);
    expect_shard("SELECT count(*) FROM (SELECT * FROM orders WHERE tenant_id = A) big", sa);
    expect_shard(
        "SELECT id FROM users WHERE tenant_id = A UNION ALL SELECT id FROM orders WHERE tenant_id = B", sa);
    expect_shard(
        "SELECT id FROM users WHERE tenant_id = A INTERSECT SELECT user_id FROM orders WHERE tenant_id "
        "= A ORDER BY 1",
        sa);
    expect_shard(
        "WITH moved AS (UPDATE orders SET status = 'x' WHERE tenant_id = A RETURNING id) SELECT count(*) "
        "FROM moved",
        sa);
    expect_all("WITH big AS (SELECT * FROM orders) SELECT * FROM big WHERE tenant_id = A");
    expect_all("SELECT * FROM (SELECT * FROM orders) s WHERE s.tenant_id = A");
    /* The recursive branch reads users again, keyed only through the CTE: not followed. */
    expect_refused(
        "WITH RECURSIVE r AS (SELECT id FROM users WHERE tenant_id = A UNION ALL SELECT u.id FROM users u "
        "JOIN r ON u.id = r.id + 1) SELECT * FROM r",
        "\"users\" (as \"u\")");
    expect_shard(
        "WITH RECURSIVE r AS (SELECT id FROM users WHERE tenant_id = A UNION ALL SELECT u.id FROM users u "
        "JOIN r ON u.id = r.id + 1 WHERE u.tenant_id = A) SELECT * FROM r",
        sa);
    expect_refused(
        "SELECT id FROM users WHERE tenant_id = A UNION ALL SELECT id FROM orders WHERE tenant_id = C",
        "different shards");
    expect_refused("SELECT id FROM users WHERE tenant_id = A UNION SELECT id FROM orders", "\"orders\"");
    /* A CTE name used again in another scope is a table there. */
    expect_refused(
        "SELECT * FROM orders WHERE tenant_id = A AND EXISTS (WITH users AS (SELECT 1) SELECT 1 FROM "
        "users) AND id IN (SELECT id FROM users)",
        "\"users\" must name its tenant");
}

static void test_writes(void **state)
{
    int sa = fx.shard_a;
    expect_shard("UPDATE orders o SET status = 'paid' FROM users u WHERE o.tenant_id = A AND u.tenant_id = "
                 "o.tenant_id AND u.id = o.user_id",
                 sa);
    expect_shard(
        "DELETE FROM order_items i USING orders o WHERE i.tenant_id = A AND o.tenant_id = i.tenant_id "
        "AND o.id = i.order_id",
        sa);
    expect_shard(
        "UPDATE order_items SET price = 1 WHERE tenant_id = A AND order_id IN (SELECT id FROM orders "
        "WHERE tenant_id = A)",
        sa);
    expect_shard(
        "INSERT INTO orders (tenant_id, id) VALUES (A, (SELECT max(id) + 1 FROM orders WHERE tenant_id "
        "= A))",
        sa);
    expect_refused(
        "UPDATE orders o SET status = 'paid' FROM users u WHERE o.tenant_id = A AND u.id = o.user_id",
        "\"users\" (as \"u\")");
    expect_refused("DELETE FROM order_items WHERE tenant_id = A AND order_id IN (SELECT id FROM orders WHERE "
                   "tenant_id = C)",
                   "different shards");
    expect_refused("INSERT INTO orders (tenant_id, id) SELECT tenant_id, id FROM users WHERE tenant_id = A",
                   "INSERT ... SELECT");
    expect_refused(
        "INSERT INTO orders (tenant_id, id) VALUES (A, (SELECT max(id) FROM orders WHERE tenant_id = "
        "C))",
        "different shards");
    expect_refused("MERGE INTO orders o USING users u ON u.tenant_id = o.tenant_id AND u.id = o.user_id WHEN "
                   "MATCHED THEN UPDATE SET status = 'x'",
                   "MERGE");
    expect_refused(
        "WITH n AS (INSERT INTO orders (tenant_id, id) VALUES (A, 1) RETURNING id) SELECT * FROM n",
        "an INSERT in a WITH");
    expect_refused(
        "UPDATE tenants SET name = 'x' WHERE id IN (SELECT tenant_id FROM users WHERE tenant_id = A)",
        "omnisharded");
    expect_refused("UPDATE users SET tenant_id = B WHERE tenant_id = A", "may not change the shard key");
}

static void test_params(void **state)
{
    px_sk_result r;
    const char *join =
        "SELECT * FROM users u JOIN orders o ON o.tenant_id = u.tenant_id AND o.user_id = u.id "
        "WHERE u.tenant_id = $1 AND o.id <= $2";
    route(join, (const char *const[]){"C", "3"}, 2, &r);
    assert_int_equal(r.verdict, PX_SK_SHARD);
    assert_int_equal(r.shard, fx.shard_c);
    /* Parse without a Bind: decided at the Bind. */
    route(join, NULL, 0, &r);
    assert_int_equal(r.verdict, PX_SK_ANY);
    const char *two = "SELECT * FROM users u, orders o WHERE u.tenant_id = $1 AND o.tenant_id = $2";
    route(two, (const char *const[]){"A", "B"}, 2, &r);
    assert_int_equal(r.verdict, PX_SK_SHARD);
    assert_int_equal(r.shard, fx.shard_a);
    route(two, (const char *const[]){"A", "C"}, 2, &r);
    assert_int_equal(r.verdict, PX_SK_REFUSE);
    assert_non_null(strstr(r.msg, "different shards"));
    route("SELECT * FROM users u JOIN orders o ON o.user_id = u.id WHERE u.tenant_id = $1",
          (const char *const[]){"A"}, 1, &r);
    assert_int_equal(r.verdict, PX_SK_REFUSE);
}

static void expect_verdict(const char *tpl, int verdict)
{
    px_sk_result r;
    route(tpl, NULL, 0, &r);
    if (r.verdict != verdict)
        fail_msg("%s: verdict %d, want %d: %s", tpl, r.verdict, verdict, r.msg);
}

/* Statements that run on every shard: DDL, omnisharded writes, keyless writes when allowed. */
static void test_every_shard(void **state)
{
    (void)state;
    fx_nshards = 3;
    expect_verdict("CREATE INDEX orders_status ON orders (status)", PX_SK_EVERY);
    expect_verdict("ALTER TABLE users ADD COLUMN note text", PX_SK_EVERY);
    expect_verdict("INSERT INTO tenants (id, name) VALUES (1, 'a')", PX_SK_WRITE_OMNI);
    expect_verdict("UPDATE tenants SET name = 'b' WHERE id = 1", PX_SK_WRITE_OMNI);
    expect_refused("UPDATE orders SET status = 'x'", "must name its tenant");
    fx_cross_writes = true;
    expect_verdict("UPDATE orders SET status = 'x'", PX_SK_WRITE_ALL);
    expect_verdict("DELETE FROM orders o USING users u WHERE u.tenant_id = o.tenant_id AND u.id = o.user_id",
                   PX_SK_WRITE_ALL);
    expect_refused("DELETE FROM orders o USING users u WHERE u.id = o.user_id",
                   "other than on their shard key");
    expect_refused("UPDATE orders SET tenant_id = 5", "may not change the shard key");
    expect_shard("UPDATE orders SET status = 'x' WHERE tenant_id = A", fx.shard_a);
    fx_cross_writes = false;
    expect_refused("INSERT INTO orders (tenant_id, id) VALUES (A, 1), (C, 2)", "different shards");
    fx_split_inserts = true;
    expect_verdict("INSERT INTO orders (tenant_id, id) VALUES (A, 1), (C, 2)", PX_SK_WRITE_SPLIT);
    expect_shard("INSERT INTO orders (tenant_id, id) VALUES (A, 1), (B, 2)", fx.shard_a);
    fx_split_inserts = false;
    fx_nshards = 0;
}

static void test_unchanged(void **state)
{
    expect_shard("SELECT * FROM orders WHERE tenant_id = A AND id = 3", fx.shard_a);
    expect_shard("SELECT * FROM orders WHERE tenant_id IN (A, B)", fx.shard_a);
    expect_all("SELECT * FROM orders WHERE tenant_id IN (A, C)");
    expect_all("SELECT count(*) FROM orders");
    expect_refused("SELECT 1 FROM orders WHERE tenant_id = A; SELECT 2", "several statements");
    /* Keyless reads run on every shard when their sharded tables are joined on the key. */
    expect_all(
        "SELECT * FROM orders o JOIN order_items i ON i.tenant_id = o.tenant_id AND i.order_id = o.id");
    expect_all("SELECT * FROM users u LEFT JOIN orders o ON o.tenant_id = u.tenant_id");
    expect_all("SELECT o.id, t.name FROM orders o JOIN tenants t ON t.id = o.tenant_id");
    expect_refused(
        "SELECT * FROM orders o JOIN users u ON u.id = o.user_id",
        "joins sharded tables \"orders\" (as \"o\") and \"users\" (as \"u\") other than on their shard key");
    expect_refused("SELECT * FROM orders o, users u", "other than on their shard key");
    expect_refused("SELECT count(*) FROM orders FOR UPDATE", "must name its tenant");
    expect_all("COPY orders FROM STDIN"); /* split by key (fanout.c), refused there without a column list */
    expect_all("COPY orders TO STDOUT");
    expect_refused("LOCK TABLE orders", "must name its tenant");
    px_sk_result r;
    route("SELECT * FROM tenants", NULL, 0, &r);
    assert_int_equal(r.verdict, PX_SK_ANY);
    /* An unlisted table lives on default_shard 0. */
    route("SELECT * FROM orders o JOIN audit a ON a.id = o.id WHERE o.tenant_id = C", NULL, 0, &r);
    assert_int_equal(r.verdict, fx.shard_c == 0 ? PX_SK_SHARD : PX_SK_REFUSE);
}

/* A named statement's plan: only one relation, named once, with one key parameter, is
 * routed by reading that parameter; a Bind routed by the plan goes where its text would. */
static void test_plans(void **state)
{
    (void)state;
    static const struct {
        const char *sql;
        const char *param;
        bool by_param;
    } cases[] = {
        {"SELECT * FROM orders WHERE tenant_id = $1", "A", true},
        {"SELECT * FROM orders WHERE tenant_id = $1", "C", true},
        {"SELECT * FROM orders o WHERE o.tenant_id = $1 AND o.id > 3", "C", true},
        {"UPDATE orders SET amount = 1 WHERE tenant_id = $1 AND id = 2", "A", true},
        {"DELETE FROM orders WHERE tenant_id = $1", "C", true},
        {"INSERT INTO orders (tenant_id, id) VALUES ($1, 1)", "C", true},
        {"SELECT * FROM orders WHERE tenant_id IN ($1, 5)", "A", false},
        {"SELECT * FROM orders WHERE tenant_id = $1 AND tenant_id = 5", "A", false},
        {"SELECT * FROM orders o JOIN order_items i ON i.tenant_id = o.tenant_id WHERE o.tenant_id = $1", "A",
         false},
        {"SELECT * FROM orders o JOIN tenants t ON t.id = o.tenant_id WHERE o.tenant_id = $1", "A", false},
        {"INSERT INTO orders (tenant_id, id) VALUES ($1, 1), ($1, 2)", "A", false},
        {"SELECT * FROM orders WHERE tenant_id = 7", "A", false},
        {"SELECT * FROM tenants WHERE id = $1", "A", false},
    };
    for (size_t i = 0; i < N(cases); i++) {
        px_sk_result full, planned;
        px_sk_plan plan;
        route_planned(cases[i].sql, (const char *const[]){cases[i].param}, 1, &full, &plan, &planned);
        if ((plan.kind == PX_SKP_PARAM) != cases[i].by_param)
            fail_msg("%s: plan kind %d", cases[i].sql, plan.kind);
        if (plan.kind == PX_SKP_PARAM && (planned.verdict != full.verdict || planned.shard != full.shard))
            fail_msg("%s: planned verdict %d shard %d, by text %d %d", cases[i].sql, planned.verdict,
                     planned.shard, full.verdict, full.shard);
    }
    /* A key the column type refuses is refused the same way by both. */
    px_sk_result full, planned;
    px_sk_plan plan;
    route_planned("SELECT * FROM orders WHERE tenant_id = $1", (const char *const[]){"x"}, 1, &full, &plan,
                  &planned);
    assert_int_equal(plan.kind, PX_SKP_PARAM);
    assert_int_equal(planned.verdict, PX_SK_REFUSE);
    assert_int_equal(full.verdict, PX_SK_REFUSE);
    assert_string_equal(planned.sqlstate, full.sqlstate);
}

/* Under a tenant said outright, a key in the statement for another shard is refused (it
 * would find or write nothing on the tenant's shard); keys on the tenant's shard, and
 * statements without keys, go to the tenant's shard. */
static void test_tenant_conflict(void **state)
{
    (void)state;
    char a[32];
    snprintf(a, sizeof a, "%ld", fx.a);
    fx_tenant = a;
    expect_shard("SELECT * FROM orders", fx.shard_a);
    expect_shard("SELECT * FROM orders WHERE tenant_id = B", fx.shard_a);
    expect_shard("SELECT * FROM orders o JOIN order_items i ON i.order_id = o.id", fx.shard_a);
    expect_refused("SELECT * FROM orders WHERE tenant_id = C", "belongs to shard");
    expect_refused(
        "SELECT * FROM orders o JOIN order_items i ON i.tenant_id = o.tenant_id WHERE o.tenant_id = C",
        "belongs to shard");
    expect_refused("INSERT INTO orders (tenant_id, id) VALUES (A, 1), (C, 2)", "belongs to shard");
    expect_shard("INSERT INTO orders (tenant_id, id) VALUES (A, 1), (B, 2)", fx.shard_a);
    px_sk_result r;
    route("SELECT * FROM orders WHERE tenant_id = $1", (const char *const[]){"C"}, 1, &r);
    assert_int_equal(r.verdict, PX_SK_REFUSE);
    route("SELECT * FROM orders WHERE tenant_id = $1", (const char *const[]){"B"}, 1, &r);
    assert_int_equal(r.verdict, PX_SK_SHARD);
    assert_int_equal(r.shard, fx.shard_a);
    fx_tenant = NULL;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_joins),
        cmocka_unit_test(test_outer_joins),
        cmocka_unit_test(test_self_joins),
        cmocka_unit_test(test_subqueries),
        cmocka_unit_test(test_ctes_derived_unions),
        cmocka_unit_test(test_writes),
        cmocka_unit_test(test_params),
        cmocka_unit_test(test_unchanged),
        cmocka_unit_test(test_every_shard),
        cmocka_unit_test(test_plans),
        cmocka_unit_test(test_tenant_conflict),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}

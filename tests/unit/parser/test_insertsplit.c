/* Tests for parser/insertsplit.c: the per-shard INSERTs (exact text, and a round trip through
 * the parser and deparser), their rows, the parameter renumbering and its map, and the
 * refusals with their SQLSTATE. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <pg_query.h>
#include <pg_query/pg_query.pb-c.h>

#include "parser/insertsplit.h"

#define N(a) (sizeof(a) / sizeof((a)[0]))

/* What one part must be: its shard, its rows, its parameter map (0-terminated) and the
 * statement it runs, written by hand; NULL sql skips the text check. */
typedef struct want_part {
    int shard;
    uint32_t rows[8];
    uint32_t nrows;
    uint16_t params[16];
    const char *sql;
} want_part;

/* sql parsed and written back by libpg_query: the text the deparser gives that statement.
 * The caller frees it. */
static char *normalize(const char *sql)
{
    PgQueryProtobufParseResult p = pg_query_parse_protobuf(sql);
    if (p.error) {
        fprintf(stderr, "does not parse: %s: %s\n", sql, p.error->message);
        pg_query_free_protobuf_parse_result(p);
        return NULL;
    }
    PgQueryDeparseResult d = pg_query_deparse_protobuf(p.parse_tree);
    pg_query_free_protobuf_parse_result(p);
    char *out = d.error ? NULL : strdup(d.query);
    pg_query_free_deparse_result(d);
    return out;
}

static void positions_clear(ProtobufCMessage *m);

static void field_clear(ProtobufCMessage *m, const ProtobufCFieldDescriptor *f)
{
    char *at = (char *)m + f->offset;
    if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF &&
        *(const uint32_t *)((const char *)m + f->quantifier_offset) != f->id)
        return;
    if (f->type == PROTOBUF_C_TYPE_INT32 && f->label != PROTOBUF_C_LABEL_REPEATED &&
        (strcmp(f->name, "location") == 0 || strcmp(f->name, "stmt_location") == 0 ||
         strcmp(f->name, "stmt_len") == 0)) {
        *(int32_t *)at = 0;
        return;
    }
    if (f->type != PROTOBUF_C_TYPE_MESSAGE)
        return;
    if (f->label != PROTOBUF_C_LABEL_REPEATED) {
        positions_clear(*(ProtobufCMessage **)at);
        return;
    }
    size_t n = *(const size_t *)((const char *)m + f->quantifier_offset);
    for (size_t k = 0; k < n; k++)
        positions_clear((*(ProtobufCMessage ***)at)[k]);
}

/* Forgets where each token stood in the text, so that two statements with the same tree
 * pack to the same bytes. */
static void positions_clear(ProtobufCMessage *m)
{
    if (!m)
        return;
    for (unsigned i = 0; i < m->descriptor->n_fields; i++)
        field_clear(m, &m->descriptor->fields[i]);
}

/* sql's parse tree, packed, without positions: the same bytes for the same tree. (The
 * protobuf form, not the JSON one: libpg_query 15's JSON writes every negative integer
 * constant as {}.) The caller frees it. */
static uint8_t *tree_of(const char *sql, size_t *len)
{
    PgQueryProtobufParseResult p = pg_query_parse_protobuf(sql);
    if (p.error) {
        fprintf(stderr, "does not parse: %s: %s\n", sql, p.error->message);
        pg_query_free_protobuf_parse_result(p);
        return NULL;
    }
    PgQuery__ParseResult *tree =
        pg_query__parse_result__unpack(NULL, p.parse_tree.len, (const uint8_t *)p.parse_tree.data);
    pg_query_free_protobuf_parse_result(p);
    if (!tree)
        return NULL;
    positions_clear((ProtobufCMessage *)tree);
    *len = pg_query__parse_result__get_packed_size(tree);
    uint8_t *out = malloc(*len ? *len : 1);
    if (out)
        pg_query__parse_result__pack(tree, out);
    pg_query__parse_result__free_unpacked(tree, NULL);
    return out;
}

/* The part's statement has the tree of the hand-written one (the deparser lost or changed
 * nothing), and writing it back again gives the same text. */
static void check_sql(const char *got, const char *want)
{
    char *again = normalize(got);
    assert_non_null(again);
    assert_string_equal(again, got);
    free(again);
    if (!want)
        return;
    size_t got_len = 0, want_len = 0;
    uint8_t *got_tree = tree_of(got, &got_len), *want_tree = tree_of(want, &want_len);
    assert_non_null(got_tree);
    assert_non_null(want_tree);
    bool same = got_len == want_len && memcmp(got_tree, want_tree, got_len) == 0;
    if (!same)
        fprintf(stderr, "different trees:\n  got:  %s\n  want: %s\n", got, want);
    assert_true(same);
    free(got_tree);
    free(want_tree);
}

static void check_part(const prs_insert_part *got, const want_part *want)
{
    assert_int_equal(got->shard, want->shard);
    assert_int_equal(got->nrows, want->nrows);
    for (uint32_t i = 0; i < want->nrows; i++)
        assert_int_equal(got->rows[i], want->rows[i]);
    uint16_t np = 0;
    while (np < N(want->params) && want->params[np])
        np++;
    assert_int_equal(got->nparams, np);
    if (np == 0)
        assert_null(got->params);
    for (uint16_t k = 0; k < np; k++)
        assert_int_equal(got->params[k], want->params[k]);
    assert_non_null(got->sql);
    check_sql(got->sql, want->sql);
}

#define RET 1u  /* the statement has RETURNING */
#define SKIP 2u /* and may skip rows */

static void check_split(const char *sql, const int *shards, uint32_t nrows, unsigned flags,
                        const want_part *want, int nwant)
{
    prs_insert_split s;
    int rc = prs_insert_split_make(sql, strlen(sql), shards, nrows, &s);
    if (rc != 0)
        fprintf(stderr, "refused: %s: %s %s\n", sql, s.sqlstate, s.msg);
    assert_int_equal(rc, 0);
    assert_string_equal(s.sqlstate, "");
    assert_int_equal(s.returning, (flags & RET) != 0);
    assert_int_equal(s.may_skip_rows, (flags & SKIP) != 0);
    assert_int_equal(s.nparts, nwant);
    for (int k = 0; k < nwant; k++)
        check_part(&s.parts[k], &want[k]);
    prs_insert_split_free(&s);
    assert_null(s.parts);
    assert_int_equal(s.nparts, 0);
    prs_insert_split_free(&s);
}

/* Three shards, rows interleaved: each part keeps its rows in their order; casts, negative
 * numbers, DEFAULT and function calls come out as they went in. */
static void test_interleaved(void **state)
{
    (void)state;
    const char *sql = "insert into t (a, b) values (1, 'x'), (-2, '1'::int), (3, -3.5), (4, - '7'::int), "
                      "(5, default), (6, now()), (-7, 1e10)";
    const int shards[] = {5, 1, 3, 1, 5, 3, 1};
    const want_part want[] = {
        {1, {1, 3, 6}, 3, {0}, "INSERT INTO t (a, b) VALUES (-2, '1'::int), (4, - '7'::int), (-7, 1e10)"},
        {3, {2, 5}, 2, {0}, "INSERT INTO t (a, b) VALUES (3, -3.5), (6, now())"},
        {5, {0, 4}, 2, {0}, "INSERT INTO t (a, b) VALUES (1, 'x'), (5, DEFAULT)"},
    };
    check_split(sql, shards, N(shards), 0, want, N(want));
}

/* Exact texts, not only the round trip: a cast and a negative number must not be reshaped. */
static void test_exact_text(void **state)
{
    (void)state;
    const char *sql = "insert into t (a, b) values (-2, '1'::int), (-3.5, '{}'::int[])";
    const int shards[] = {0, 1};
    prs_insert_split s;
    assert_int_equal(prs_insert_split_make(sql, strlen(sql), shards, 2, &s), 0);
    assert_int_equal(s.nparts, 2);
    assert_string_equal(s.parts[0].sql, "INSERT INTO t (a, b) VALUES (-2, '1'::int)");
    assert_string_equal(s.parts[1].sql, "INSERT INTO t (a, b) VALUES (-3.5, '{}'::int[])");
    prs_insert_split_free(&s);
}

/* Every row on one shard: one part with every row, the statement unchanged. */
static void test_one_shard(void **state)
{
    (void)state;
    const char *sql = "INSERT INTO s.t (id, v) VALUES (1, 'a'), (2, 'b'), (3, 'c') RETURNING id";
    const int shards[] = {4, 4, 4};
    const want_part want[] = {{4, {0, 1, 2}, 3, {0}, sql}};
    check_split(sql, shards, N(shards), RET, want, N(want));
}

/* Negative shard numbers sort before the others. */
static void test_shard_order(void **state)
{
    (void)state;
    const char *sql = "insert into t values (0), (1), (2)";
    const int shards[] = {7, -1, 0};
    const want_part want[] = {
        {-1, {1}, 1, {0}, "insert into t values (1)"},
        {0, {2}, 1, {0}, "insert into t values (2)"},
        {7, {0}, 1, {0}, "insert into t values (0)"},
    };
    check_split(sql, shards, N(shards), 0, want, N(want));
}

/* Each part's parameters are renumbered 1..n in the order of their original numbers; those
 * in ON CONFLICT and RETURNING are in every part. */
static void test_params(void **state)
{
    (void)state;
    const char *sql = "insert into t (a, b) values ($1, $2), ($3, $4), ($6, $5) "
                      "on conflict (a) do update set b = excluded.b || $7 where t.a <> $8 "
                      "returning a, $9::text as tag";
    const int shards[] = {0, 1, 0};
    const want_part want[] = {
        {0,
         {0, 2},
         2,
         {1, 2, 5, 6, 7, 8, 9},
         "insert into t (a, b) values ($1, $2), ($4, $3) on conflict (a) do update set b = excluded.b || $5 "
         "where t.a <> $6 returning a, $7::text as tag"},
        {1,
         {1},
         1,
         {3, 4, 7, 8, 9},
         "insert into t (a, b) values ($1, $2) on conflict (a) do update set b = excluded.b || $3 "
         "where t.a <> $4 returning a, $5::text as tag"},
    };
    check_split(sql, shards, N(shards), RET | SKIP, want, N(want));
}

/* A parameter used in several rows, a part without parameters, and parameters inside
 * expressions (casts, arrays, function calls). */
static void test_params_shared(void **state)
{
    (void)state;
    const char *sql = "insert into t values ($2, 1), (2, 3), ($2, upper($4::text)), (array[$10, -1], $2)";
    const int shards[] = {1, 2, 3, 1};
    const want_part want[] = {
        {1, {0, 3}, 2, {2, 10}, "insert into t values ($1, 1), (array[$2, -1], $1)"},
        {2, {1}, 1, {0}, "insert into t values (2, 3)"},
        {3, {2}, 1, {2, 4}, "insert into t values ($1, upper($2::text))"},
    };
    check_split(sql, shards, N(shards), 0, want, N(want));
}

/* Quoted and schema-qualified names, a keyword as a column name, an alias, OVERRIDING,
 * ON CONFLICT ... DO UPDATE with EXCLUDED and RETURNING *. */
static void test_quoted(void **state)
{
    (void)state;
    const char *sql =
        "INSERT INTO \"My Schema\".\"Tab\" AS x (\"Id\", \"select\", \"we\"\"ird\", b) "
        "OVERRIDING SYSTEM VALUE VALUES (1, 'a', 'b', 2), (2, 'c', 'd', 3) "
        "ON CONFLICT (\"Id\") DO UPDATE SET \"select\" = EXCLUDED.\"select\", b = x.b + EXCLUDED.b "
        "WHERE x.b IS DISTINCT FROM EXCLUDED.b RETURNING *";
    const int shards[] = {1, 0};
    const char *tail =
        "ON CONFLICT (\"Id\") DO UPDATE SET \"select\" = excluded.\"select\", b = x.b + excluded.b "
        "WHERE x.b IS DISTINCT FROM excluded.b RETURNING *";
    char want0[512], want1[512];
    snprintf(want0, sizeof want0,
             "INSERT INTO \"My Schema\".\"Tab\" AS x (\"Id\", \"select\", \"we\"\"ird\", b) "
             "OVERRIDING SYSTEM VALUE VALUES (2, 'c', 'd', 3) %s",
             tail);
    snprintf(want1, sizeof want1,
             "INSERT INTO \"My Schema\".\"Tab\" AS x (\"Id\", \"select\", \"we\"\"ird\", b) "
             "OVERRIDING SYSTEM VALUE VALUES (1, 'a', 'b', 2) %s",
             tail);
    const want_part want[] = {{0, {1}, 1, {0}, want0}, {1, {0}, 1, {0}, want1}};
    check_split(sql, shards, N(shards), RET | SKIP, want, N(want));

    /* The deparser's own text, checked once word for word. */
    prs_insert_split s;
    assert_int_equal(prs_insert_split_make(sql, strlen(sql), shards, 2, &s), 0);
    assert_string_equal(s.parts[0].sql, want0);
    prs_insert_split_free(&s);
}

static void test_on_conflict_nothing(void **state)
{
    (void)state;
    const char *sql = "insert into s.t values (1), ($2) on conflict do nothing returning id, $1 as x";
    const int shards[] = {3, 2};
    const want_part want[] = {
        {2, {1}, 1, {1, 2}, "INSERT INTO s.t VALUES ($2) ON CONFLICT DO NOTHING RETURNING id, $1 AS x"},
        {3, {0}, 1, {1}, "INSERT INTO s.t VALUES (1) ON CONFLICT DO NOTHING RETURNING id, $1 AS x"},
    };
    check_split(sql, shards, N(shards), RET | SKIP, want, N(want));
}

/* DO UPDATE without WHERE writes every row once: nothing is skipped. */
static void test_on_conflict_update(void **state)
{
    (void)state;
    const char *sql = "insert into t (k, n) values (1, 1), (2, 1) on conflict (k) do update set n = t.n + "
                      "excluded.n returning k, n";
    const int shards[] = {0, 1};
    const want_part want[] = {
        {0,
         {0},
         1,
         {0},
         "insert into t (k, n) values (1, 1) on conflict (k) do update set n = t.n + "
         "excluded.n returning k, n"},
        {1,
         {1},
         1,
         {0},
         "insert into t (k, n) values (2, 1) on conflict (k) do update set n = t.n + "
         "excluded.n returning k, n"},
    };
    check_split(sql, shards, N(shards), RET, want, N(want));
}

/* Expression forms the deparser must write back to the same tree. */
static void test_expressions(void **state)
{
    (void)state;
    /* Seven values a row: PostgreSQL wants every row of one VALUES the same length. */
    static const char *const rows[] = {
        "(1::bigint, '1'::int, -1, - 1, -(-1), 2 ^ -1, -2147483648)",
        "(-9223372036854775808, 1.5e-3, '{}'::int[], array[1, -2], array[]::text[], row(1, 2), (1, 'x'))",
        "('x'::\"char\", 1::numeric(10, 2), E'a\\'b\\n', $$dollar's$$, U&'\\0041', B'101', X'ff')",
        "('a' || 'b', 'x' collate \"C\", interval '1 day', '1 hour'::interval, date '2020-01-01', true, "
        "null)",
        "(not false, current_timestamp, '{\"a\":1}'::jsonb -> 'a', coalesce(null, 1), "
        "case when 1 > 0 then 'p' else 'n' end, nullif(1, 2), greatest(1, 2))",
        "(1 between 0 and 2, 'a' like 'b%', 1 in (1, 2), 1 is distinct from 2, \"F\"(\"X\"), E'x\\\\y', "
        "- '7'::int)",
    };
    char sql[2048], want0[2048], want1[2048];
    size_t n = (size_t)snprintf(sql, sizeof sql, "insert into t values ");
    for (size_t i = 0; i < N(rows); i++)
        n += (size_t)snprintf(sql + n, sizeof sql - n, "%s%s", i ? ", " : "", rows[i]);
    assert_true(n < sizeof sql);
    snprintf(want0, sizeof want0, "insert into t values %s, %s, %s", rows[0], rows[2], rows[4]);
    snprintf(want1, sizeof want1, "insert into t values %s, %s, %s", rows[1], rows[3], rows[5]);
    const int shards[] = {0, 1, 0, 1, 0, 1};
    const want_part want[] = {{0, {0, 2, 4}, 3, {0}, want0}, {1, {1, 3, 5}, 3, {0}, want1}};
    check_split(sql, shards, N(shards), 0, want, N(want));
}

typedef struct refusal {
    const char *sql;
    uint32_t nrows;
    int rc;
    const char *sqlstate;
} refusal;

static void test_refusals(void **state)
{
    (void)state;
    const refusal cases[] = {
        {"insert into t select 1", 1, 1, "0A000"},
        {"insert into t select * from u", 1, 1, "0A000"},
        {"insert into t default values", 1, 1, "0A000"},
        {"with q as (select 1) insert into t values (1)", 1, 1, "0A000"},
        {"insert into t with q as (select 1) select * from q", 1, 1, "0A000"},
        {"insert into t values (1), (2) order by 1", 2, 1, "0A000"},
        {"insert into t values (1), (2) limit 1", 2, 1, "0A000"},
        {"insert into t values (1) union values (2)", 2, 1, "0A000"},
        {"insert into t values (1, 2), (3)", 2, 1, "42601"},
        {"insert into t values (1), (2, 3), (4)", 3, 1, "42601"},
        {"insert into t values (1), (2)", 3, 1, "XX000"},
        {"insert into t values (1), (2)", 1, 1, "XX000"},
        {"select 1", 1, 1, "0A000"},
        {"update t set a = 1", 1, 1, "0A000"},
        {"insert into t values (1); insert into t values (2)", 1, 1, "0A000"},
        {"insert into t values (1);;", 1, 0, ""},
        {"", 1, 1, "0A000"},
        {"insert into t valuez (1)", 1, 1, "42601"},
        {"insert into t values ($0)", 1, 1, "42P02"},
        {"insert into t values ($65536)", 1, 1, "42P02"},
        {"insert into t values (1) returning $70000", 1, 1, "42P02"},
    };
    const int shards[] = {0, 1, 2};
    for (size_t i = 0; i < N(cases); i++) {
        prs_insert_split s;
        int rc = prs_insert_split_make(cases[i].sql, strlen(cases[i].sql), shards, cases[i].nrows, &s);
        if (rc != cases[i].rc || strcmp(s.sqlstate, cases[i].sqlstate) != 0)
            fprintf(stderr, "case %zu: %s: rc %d %s %s\n", i, cases[i].sql, rc, s.sqlstate, s.msg);
        assert_int_equal(rc, cases[i].rc);
        assert_string_equal(s.sqlstate, cases[i].sqlstate);
        if (rc == 1) {
            assert_null(s.parts);
            assert_int_equal(s.nparts, 0);
            assert_int_equal(strncmp(s.msg, "pgshard: ", 9), 0);
        }
        prs_insert_split_free(&s);
    }
}

/* Input the proxy should never give is refused, not trusted. */
static void test_bad_input(void **state)
{
    (void)state;
    const int shards[] = {0, 1};
    prs_insert_split s;
    assert_int_equal(prs_insert_split_make(NULL, 5, shards, 1, &s), 1);
    assert_string_equal(s.sqlstate, "42601");
    assert_int_equal(prs_insert_split_make("insert into t values (1)", 24, NULL, 1, &s), 1);
    assert_string_equal(s.sqlstate, "XX000");
    assert_int_equal(prs_insert_split_make("insert into t values (1)", 24, shards, 0, &s), 1);
    assert_string_equal(s.sqlstate, "XX000");
    /* An embedded NUL would hide the rest of the text from the parser. */
    const char nul[] = "insert into t values (1)\0; drop table t";
    assert_int_equal(prs_insert_split_make(nul, sizeof nul - 1, shards, 1, &s), 1);
    assert_string_equal(s.sqlstate, "42601");
    /* Only len bytes are read: the text need not end with a NUL. */
    const char *two = "insert into t values (1), (2) garbage";
    assert_int_equal(prs_insert_split_make(two, 29, shards, 2, &s), 0);
    assert_int_equal(s.nparts, 2);
    prs_insert_split_free(&s);
    assert_int_equal(prs_insert_split_make(two, 29, shards, 2, NULL), -1);
    prs_insert_split_free(NULL);
}

/* Deep nesting is refused, not walked without bound. */
static void test_deep(void **state)
{
    (void)state;
    size_t terms = 2000, cap = terms * 2 + 64;
    char *sql = malloc(cap);
    assert_non_null(sql);
    size_t len = (size_t)snprintf(sql, cap, "insert into t values (1), (1");
    for (size_t i = 1; i < terms; i++) {
        sql[len++] = '+';
        sql[len++] = '1';
    }
    sql[len++] = ')';
    const int shards[] = {0, 1};
    prs_insert_split s;
    assert_int_equal(prs_insert_split_make(sql, len, shards, 2, &s), 1);
    assert_string_equal(s.sqlstate, "54001");
    assert_null(s.parts);
    prs_insert_split_free(&s);
    free(sql);
}

/* Many rows over a few shards: every row lands in exactly one part, in order. */
static void test_many_rows(void **state)
{
    (void)state;
    enum { ROWS = 500 };
    size_t cap = ROWS * 32 + 64, len = 0;
    char *sql = malloc(cap);
    int *shards = malloc(ROWS * sizeof *shards);
    assert_non_null(sql);
    assert_non_null(shards);
    len += (size_t)snprintf(sql, cap, "insert into t (k, v) values ");
    for (int i = 0; i < ROWS; i++) {
        len += (size_t)snprintf(sql + len, cap - len, "%s(%d, $%d)", i ? ", " : "", i, i + 1);
        shards[i] = (i * 7) % 3;
    }
    prs_insert_split s;
    assert_int_equal(prs_insert_split_make(sql, len, shards, ROWS, &s), 0);
    assert_int_equal(s.nparts, 3);
    uint32_t seen = 0;
    for (int k = 0; k < s.nparts; k++) {
        const prs_insert_part *p = &s.parts[k];
        assert_int_equal(p->shard, k);
        assert_int_equal(p->nparams, p->nrows);
        for (uint32_t i = 0; i < p->nrows; i++) {
            assert_int_equal(shards[p->rows[i]], k);
            assert_int_equal(p->params[i], p->rows[i] + 1);
            if (i)
                assert_true(p->rows[i] > p->rows[i - 1]);
        }
        seen += p->nrows;
        check_sql(p->sql, NULL);
    }
    assert_int_equal(seen, ROWS);
    prs_insert_split_free(&s);
    free(sql);
    free(shards);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_interleaved),
        cmocka_unit_test(test_exact_text),
        cmocka_unit_test(test_one_shard),
        cmocka_unit_test(test_shard_order),
        cmocka_unit_test(test_params),
        cmocka_unit_test(test_params_shared),
        cmocka_unit_test(test_quoted),
        cmocka_unit_test(test_on_conflict_nothing),
        cmocka_unit_test(test_on_conflict_update),
        cmocka_unit_test(test_expressions),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_many_rows),
        cmocka_unit_test(test_deep),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

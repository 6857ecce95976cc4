/* Tests for proxy/merge.c: plans written by hand (as parser/scatter.c would make them), the
 * shards' RowDescription and DataRow bodies built here, and the messages the merge outputs
 * rendered as text ("a|b" per row) to compare. Reference outputs for averages and float
 * formatting were taken from PostgreSQL 15. */
#include <locale.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/buf.h"
#include "common/proto.h"
#include "proxy/merge.h"

enum {
    BOOL = 16,
    BYTEA = 17,
    INT8 = 20,
    INT4 = 23,
    TEXT = 25,
    FLOAT4 = 700,
    FLOAT8 = 701,
    BPCHAR = 1042,
    DATE = 1082,
    TIME = 1083,
    TS = 1114,
    TSTZ = 1184,
    INTERVAL = 1186,
    TIMETZ = 1266,
    NUMERIC = 1700,
    UUID = 2950,
    POINT = 600,
};

/* A value of a binary row: len -1 is NULL. */
typedef struct tval {
    const void *p;
    int len;
} tval;

static prs_scatter *plan_new(int ncols, int nvisible)
{
    prs_scatter *p = calloc(1, sizeof *p);
    assert_non_null(p);
    p->ncols = (uint16_t)ncols;
    p->nvisible = (uint16_t)nvisible;
    p->limit = -1;
    for (int c = nvisible; c < ncols; c++)
        p->cols[c].hidden = true;
    return p;
}

static void plan_sort(prs_scatter *p, int col, bool desc, bool nulls_first)
{
    p->sort[p->nsort++] = (prs_sc_sort){(uint16_t)col, desc, nulls_first};
}

/* A RowDescription body: n columns named c1.. (or names) of the given types and format. */
static pgs_buf desc_body(int n, const uint32_t *types, uint16_t fmt, const char *const *names)
{
    pgs_buf b = PGS_BUF_INIT;
    pgs_buf_append_be16(&b, (uint16_t)n);
    for (int i = 0; i < n; i++) {
        char name[16];
        snprintf(name, sizeof name, "c%d", i + 1);
        pgs_buf_append_cstr(&b, names ? names[i] : name);
        pgs_buf_append_be32(&b, 16384);
        pgs_buf_append_be16(&b, (uint16_t)(i + 1));
        pgs_buf_append_be32(&b, types[i]);
        pgs_buf_append_be16(&b, 0xFFFF);
        pgs_buf_append_be32(&b, 0xFFFFFFFFu);
        pgs_buf_append_be16(&b, fmt);
    }
    return b;
}

static void feed_desc(px_merge *m, int nshards, int n, const uint32_t *types, uint16_t fmt)
{
    pgs_buf b = desc_body(n, types, fmt, NULL);
    for (int s = 0; s < nshards; s++)
        assert_int_equal(px_merge_row_desc(m, s, b.data, b.len), 0);
    pgs_buf_free(&b);
}

static int feed_row(px_merge *m, int s, int n, const char *const *vals)
{
    pgs_buf b = PGS_BUF_INIT;
    pgs_buf_append_be16(&b, (uint16_t)n);
    for (int i = 0; i < n; i++) {
        if (!vals[i]) {
            pgs_buf_append_be32(&b, 0xFFFFFFFFu);
            continue;
        }
        pgs_buf_append_be32(&b, (uint32_t)strlen(vals[i]));
        pgs_buf_append(&b, vals[i], strlen(vals[i]));
    }
    int rc = px_merge_data_row(m, s, b.data, b.len);
    pgs_buf_free(&b);
    return rc;
}

#define ROW(m, s, ...)                                                                                       \
    feed_row(m, s, (int)(sizeof((const char *[]){__VA_ARGS__}) / sizeof(const char *)),                      \
             (const char *[]){__VA_ARGS__})

static int feed_bin(px_merge *m, int s, int n, const tval *vals)
{
    pgs_buf b = PGS_BUF_INIT;
    pgs_buf_append_be16(&b, (uint16_t)n);
    for (int i = 0; i < n; i++) {
        pgs_buf_append_be32(&b, (uint32_t)vals[i].len);
        if (vals[i].len > 0)
            pgs_buf_append(&b, vals[i].p, (size_t)vals[i].len);
    }
    int rc = px_merge_data_row(m, s, b.data, b.len);
    pgs_buf_free(&b);
    return rc;
}

static void complete_all(px_merge *m, int nshards)
{
    for (int s = 0; s < nshards; s++)
        assert_int_equal(px_merge_complete(m, s), 0);
}

/* Renders the messages in out: each DataRow as "v|v\n" (NULL as "-", binary values as
 * "x" and hex when bin), CommandComplete as its tag. RowDescriptions are checked apart. */
static void render(const pgs_buf *out, bool bin, char *dst, size_t cap)
{
    size_t at = 0, w = 0;
    dst[0] = 0;
    while (at < out->len) {
        pgs_frame f;
        assert_int_equal(pgs_frame_read(out->data + at, out->len - at, PGS_MAX_MSG_LEN, &f), 1);
        pgs_reader r = pgs_reader_make(out->data + at + PGS_HDR_LEN, f.len - 4);
        if (f.type == 'D') {
            uint16_t n;
            assert_int_equal(pgs_rd_be16(&r, &n), 0);
            for (int i = 0; i < n; i++) {
                uint32_t l;
                const uint8_t *p;
                assert_int_equal(pgs_rd_be32(&r, &l), 0);
                if (i)
                    w += (size_t)snprintf(dst + w, cap - w, "|");
                if (l == 0xFFFFFFFFu) {
                    w += (size_t)snprintf(dst + w, cap - w, "-");
                    continue;
                }
                assert_int_equal(pgs_rd_bytes(&r, l, &p), 0);
                if (bin) {
                    w += (size_t)snprintf(dst + w, cap - w, "x");
                    for (uint32_t k = 0; k < l; k++)
                        w += (size_t)snprintf(dst + w, cap - w, "%02x", p[k]);
                } else {
                    w += (size_t)snprintf(dst + w, cap - w, "%.*s", (int)l, (const char *)p);
                }
            }
            w += (size_t)snprintf(dst + w, cap - w, "\n");
        } else if (f.type == 'C') {
            w += (size_t)snprintf(dst + w, cap - w, "%s", (const char *)r.p);
        }
        assert_true(w < cap);
        at += f.total;
    }
}

static char rendered[8192];

/* Outputs everything ready and renders it. */
static const char *drain(px_merge *m, bool bin)
{
    pgs_buf out = PGS_BUF_INIT;
    assert_int_equal(px_merge_output(m, &out, 1 << 20), 0);
    render(&out, bin, rendered, sizeof rendered);
    pgs_buf_free(&out);
    return rendered;
}

static void expect_error(px_merge *m, const char *sqlstate, const char *msg_part)
{
    const char *st;
    const char *msg = px_merge_error(m, &st);
    assert_string_equal(st, sqlstate);
    assert_non_null(strstr(msg, msg_part));
    assert_int_equal(strncmp(msg, "pgshard: ", 9), 0);
    pgs_buf out = PGS_BUF_INIT;
    assert_int_equal(px_merge_output(m, &out, 1 << 20), -1);
    pgs_buf_free(&out);
}

/* ---- concatenation ---- */

static void test_concat_offset_limit(void **state)
{
    prs_scatter *p = plan_new(1, 1);
    p->offset = 2;
    p->limit = 3;
    px_merge *m = px_merge_new(p, 3, (locale_t)0);
    const uint32_t t[] = {INT4};
    feed_desc(m, 3, 1, t, 0);
    assert_int_equal(ROW(m, 0, "1"), 0);
    assert_int_equal(ROW(m, 0, "2"), 0);
    assert_int_equal(ROW(m, 1, "3"), 0);
    assert_string_equal(drain(m, false), "3\n");
    assert_false(px_merge_satisfied(m));
    assert_int_equal(ROW(m, 2, "4"), 0);
    assert_int_equal(ROW(m, 2, "5"), 0);
    assert_string_equal(drain(m, false), "4\n5\n");
    assert_true(px_merge_satisfied(m));
    assert_true(px_merge_wants(m, 0)); /* read on: the rest is dropped */
    assert_int_equal(ROW(m, 1, "6"), 0);
    assert_int_equal(ROW(m, 0, "7"), 0);
    assert_false(px_merge_done(m));
    complete_all(m, 3);
    assert_string_equal(drain(m, false), "SELECT 3");
    assert_true(px_merge_done(m));
    px_merge_free(m);
    free(p);
}

static void test_concat_hidden_and_desc(void **state)
{
    prs_scatter *p = plan_new(2, 1);
    px_merge *m = px_merge_new(p, 2, (locale_t)0);
    const uint32_t t[] = {TEXT, INT4};
    feed_desc(m, 2, 2, t, 0);
    assert_int_equal(ROW(m, 1, "b", "2"), 0);
    pgs_buf out = PGS_BUF_INIT;
    assert_int_equal(px_merge_output(m, &out, 1 << 20), 0);
    /* T with one column c1 of type text, then the row without its hidden column */
    assert_int_equal(out.data[0], 'T');
    assert_int_equal(pgs_be16(out.data + 5), 1);
    assert_string_equal((const char *)out.data + 7, "c1");
    render(&out, false, rendered, sizeof rendered);
    assert_string_equal(rendered, "b\n");
    pgs_buf_free(&out);
    complete_all(m, 2);
    assert_string_equal(drain(m, false), "SELECT 1");
    px_merge_free(m);
    free(p);
}

static void test_select_star(void **state)
{
    prs_scatter *p = plan_new(0, 0);
    px_merge *m = px_merge_new(p, 2, (locale_t)0);
    const uint32_t t[] = {TEXT, INT4, BOOL};
    feed_desc(m, 2, 3, t, 0);
    assert_int_equal(ROW(m, 0, "a", "1", "t"), 0);
    assert_int_equal(ROW(m, 1, "b", NULL, "f"), 0);
    complete_all(m, 2);
    assert_string_equal(drain(m, false), "a|1|t\nb|-|f\nSELECT 2");
    px_merge_free(m);

    /* SELECT DISTINCT *: every column a group key */
    p->grouped = true;
    m = px_merge_new(p, 2, (locale_t)0);
    feed_desc(m, 2, 3, t, 0);
    assert_int_equal(ROW(m, 0, "a", "1", "t"), 0);
    assert_int_equal(ROW(m, 1, "a", "1", "t"), 0);
    assert_int_equal(ROW(m, 1, "a", NULL, "t"), 0);
    assert_int_equal(ROW(m, 0, "a", NULL, "t"), 0);
    complete_all(m, 2);
    assert_string_equal(drain(m, false), "a|1|t\na|-|t\nSELECT 2");
    px_merge_free(m);
    free(p);
}

static void test_limit_zero_and_no_desc(void **state)
{
    prs_scatter *p = plan_new(1, 1);
    p->limit = 0;
    px_merge *m = px_merge_new(p, 2, (locale_t)0);
    assert_true(px_merge_satisfied(m));
    const uint32_t t[] = {INT4};
    feed_desc(m, 2, 1, t, 0);
    assert_int_equal(ROW(m, 0, "1"), 0);
    complete_all(m, 2);
    assert_string_equal(drain(m, false), "SELECT 0");
    px_merge_free(m);
    free(p);
}

/* ---- k-way merge by type ---- */

typedef struct sort_case {
    const char *name;
    uint32_t type;
    const char *sorted[10]; /* ascending, NULL-terminated */
} sort_case;

static const sort_case sort_cases[] = {
    {"int8", INT8, {"-9223372036854775808", "-5", "0", "7", "10", "100", "9223372036854775807"}},
    {"text C", TEXT, {"A", "B", "a", "ab", "b", "\xc3\xa9"}},
    {"numeric", NUMERIC, {"-Infinity", "-1.5", "-1.25", "0", "0.001", "10", "10.5", "Infinity", "NaN"}},
    {"float8", FLOAT8, {"-Infinity", "-1e+20", "-1.5", "0", "1e-05", "3.14", "1e+300", "Infinity", "NaN"}},
    {"float4", FLOAT4, {"-3.4e+38", "-1", "0.1", "1.234567e+06", "Infinity", "NaN"}},
    {"timestamp",
     TS,
     {"-infinity", "0044-03-15 10:00:00 BC", "0001-01-01 00:00:00", "1999-12-31 23:59:59.999999",
      "2000-01-01 00:00:00", "2000-01-01 00:00:00.5", "10000-01-01 00:00:00", "infinity"}},
    {"timestamptz",
     TSTZ,
     {"2020-03-29 01:30:00+01", "2020-03-29 03:00:00+02", "2020-03-29 01:45:00+00",
      "2020-03-29 07:30:00+05:30", "2020-03-29 02:00:01-00:00:30"}},
    {"interval",
     INTERVAL,
     {"-1 years", "-00:00:01", "00:00:00", "1 day 24:00:00", "29 days", "1 mon", "1 mon 00:00:01", "1 year",
      "1 year 2 mons 3 days 04:05:06.5", "1 year 2 mons 3 days +100:00:00"}},
    {"uuid",
     UUID,
     {"00000000-0000-0000-0000-000000000000", "0fffffff-ffff-ffff-ffff-ffffffffffff",
      "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "ffffffff-ffff-ffff-ffff-ffffffffffff"}},
    {"bool", BOOL, {"f", "t"}},
    {"date",
     DATE,
     {"-infinity", "0002-01-01 BC", "0001-12-31 BC", "0001-01-01", "1999-12-31", "2000-02-29", "10000-01-01",
      "infinity"}},
    {"time", TIME, {"00:00:00", "09:30:00", "23:59:59.999999", "24:00:00"}},
    {"timetz", TIMETZ, {"12:00:00+02", "12:00:00+01", "11:00:00+00", "09:00:00-03"}},
    {"bytea", BYTEA, {"\\x", "\\x00", "\\x0001", "\\x01", "\\xff"}},
    {"bpchar", BPCHAR, {"a", "a b", "b  "}},
    {"name", 19, {"A", "B", "Z", "a", "b"}},
    {"int2 oid", 26, {"0", "7", "4294967295"}},
};

/* The values dealt round-robin to 3 shards (each shard's stream stays sorted), merged. */
static void run_sort_case(const sort_case *sc, bool desc, locale_t coll)
{
    int n = 0;
    char want[2048] = "";
    size_t w = 0;
    while (n < 10 && sc->sorted[n])
        n++;
    prs_scatter *p = plan_new(1, 1);
    p->shards_sorted = true;
    plan_sort(p, 0, desc, desc);
    px_merge *m = px_merge_new(p, 3, coll);
    feed_desc(m, 3, 1, &sc->type, 0);
    for (int k = 0; k < n; k++) {
        int i = desc ? n - 1 - k : k;
        assert_int_equal(ROW(m, (i * 7 + 1) % 3, sc->sorted[i]), 0);
        w += (size_t)snprintf(want + w, sizeof want - w, "%s\n", sc->sorted[i]);
    }
    snprintf(want + w, sizeof want - w, "SELECT %d", n);
    complete_all(m, 3);
    const char *got = drain(m, false);
    if (strcmp(got, want) != 0)
        print_error("case %s%s:\nwant:\n%s\ngot:\n%s\n", sc->name, desc ? " desc" : "", want, got);
    assert_string_equal(got, want);
    px_merge_free(m);
    free(p);
}

static void test_kway_types(void **state)
{
    for (size_t i = 0; i < sizeof sort_cases / sizeof sort_cases[0]; i++) {
        run_sort_case(&sort_cases[i], false, (locale_t)0);
        run_sort_case(&sort_cases[i], true, (locale_t)0);
    }
}

static void test_kway_collation(void **state)
{
    locale_t en = newlocale(LC_COLLATE_MASK, "en_US.UTF-8", (locale_t)0);
    if (en) {
        static const sort_case c = {"text en_US", TEXT, {"a", "A", "ab", "b", "B"}};
        run_sort_case(&c, false, en);
        freelocale(en);
    }
    locale_t cu = newlocale(LC_COLLATE_MASK, "C.UTF-8", (locale_t)0);
    if (!cu) {
        skip();
        return;
    }
    static const sort_case c = {"text C.UTF-8", TEXT, {"A", "B", "a", "ab", "b", "\xc3\xa9"}};
    run_sort_case(&c, false, cu);
    run_sort_case(&c, true, cu);
    freelocale(cu);
}

/* Two keys, NULLs first or last, the second key descending. */
static void test_kway_nulls_two_keys(void **state)
{
    static const struct {
        bool nulls_first;
        const char *want;
    } cases[] = {
        {false, "1|b\n1|a\n1|-\n2|x\n-|z\nSELECT 5"},
        {true, "-|z\n1|-\n1|b\n1|a\n2|x\nSELECT 5"},
    };
    for (size_t i = 0; i < 2; i++) {
        prs_scatter *p = plan_new(2, 2);
        p->shards_sorted = true;
        plan_sort(p, 0, false, cases[i].nulls_first);
        plan_sort(p, 1, true, cases[i].nulls_first);
        px_merge *m = px_merge_new(p, 2, (locale_t)0);
        const uint32_t t[] = {INT4, TEXT};
        feed_desc(m, 2, 2, t, 0);
        if (cases[i].nulls_first) {
            assert_int_equal(ROW(m, 0, NULL, "z"), 0);
            assert_int_equal(ROW(m, 0, "1", "b"), 0);
            assert_int_equal(ROW(m, 1, "1", NULL), 0);
            assert_int_equal(ROW(m, 1, "1", "a"), 0);
            assert_int_equal(ROW(m, 1, "2", "x"), 0);
        } else {
            assert_int_equal(ROW(m, 0, "1", "b"), 0);
            assert_int_equal(ROW(m, 0, "1", NULL), 0);
            assert_int_equal(ROW(m, 0, NULL, "z"), 0);
            assert_int_equal(ROW(m, 1, "1", "a"), 0);
            assert_int_equal(ROW(m, 1, "2", "x"), 0);
        }
        complete_all(m, 2);
        assert_string_equal(drain(m, false), cases[i].want);
        px_merge_free(m);
        free(p);
    }
}

/* Rows go out only while every unfinished shard has one queued; ties go to shard 0. */
static void test_kway_waits_and_ties(void **state)
{
    prs_scatter *p = plan_new(2, 1);
    p->shards_sorted = true;
    plan_sort(p, 1, false, false);
    px_merge *m = px_merge_new(p, 2, (locale_t)0);
    const uint32_t t[] = {TEXT, INT4};
    feed_desc(m, 2, 2, t, 0);
    assert_int_equal(ROW(m, 1, "s1-a", "1"), 0);
    assert_int_equal(ROW(m, 1, "s1-b", "5"), 0);
    assert_string_equal(drain(m, false), ""); /* shard 0 may still send a smaller row */
    assert_int_equal(ROW(m, 0, "s0-a", "1"), 0);
    /* shard 0's next row may tie with s1-a and would go first */
    assert_string_equal(drain(m, false), "s0-a\n");
    assert_int_equal(px_merge_complete(m, 0), 0);
    assert_string_equal(drain(m, false), "s1-a\ns1-b\n");
    assert_int_equal(px_merge_complete(m, 1), 0);
    assert_string_equal(drain(m, false), "SELECT 3");
    px_merge_free(m);
    free(p);
}

static void test_kway_backpressure_and_limit(void **state)
{
    prs_scatter *p = plan_new(1, 1);
    p->shards_sorted = true;
    p->limit = 3;
    plan_sort(p, 0, false, false);
    px_merge *m = px_merge_new(p, 2, (locale_t)0);
    const uint32_t t[] = {INT8};
    feed_desc(m, 2, 1, t, 0);
    char v[32];
    for (int i = 0; i < PX_MERGE_QUEUE_MAX; i++) {
        assert_true(px_merge_wants(m, 0));
        snprintf(v, sizeof v, "%d", i * 2);
        assert_int_equal(ROW(m, 0, v), 0);
    }
    assert_false(px_merge_wants(m, 0));
    assert_true(px_merge_wants(m, 1));
    assert_string_equal(drain(m, false), "");
    assert_int_equal(ROW(m, 1, "1"), 0);
    assert_int_equal(ROW(m, 1, "3"), 0);
    assert_string_equal(drain(m, false), "0\n1\n2\n");
    assert_true(px_merge_satisfied(m));
    assert_true(px_merge_wants(m, 0));
    complete_all(m, 2);
    assert_string_equal(drain(m, false), "SELECT 3");
    px_merge_free(m);
    free(p);
}

/* Rows flowing through queues that never empty: their room is reused as rows are taken
 * and the order survives. */
static void test_kway_queue_reuse(void **state)
{
    prs_scatter *p = plan_new(1, 1);
    p->shards_sorted = true;
    plan_sort(p, 0, false, false);
    px_merge *m = px_merge_new(p, 2, (locale_t)0);
    const uint32_t t[] = {INT8};
    feed_desc(m, 2, 1, t, 0);
    pgs_buf out = PGS_BUF_INIT;
    char v[32];
    assert_int_equal(ROW(m, 0, "0"), 0);
    assert_int_equal(ROW(m, 0, "2"), 0);
    for (int i = 0; i < 1000; i++) {
        snprintf(v, sizeof v, "%d", 2 * i + 1);
        assert_int_equal(ROW(m, 1, v), 0);
        snprintf(v, sizeof v, "%d", 2 * i + 4);
        assert_int_equal(ROW(m, 0, v), 0);
        assert_int_equal(px_merge_output(m, &out, SIZE_MAX), 0);
    }
    complete_all(m, 2);
    assert_int_equal(px_merge_output(m, &out, SIZE_MAX), 0);
    static char got[40000], want[40000];
    render(&out, false, got, sizeof got);
    size_t w = 0;
    for (int i = 0; i <= 2002; i++) /* shard 0: 0, 2, ..., 2002; shard 1: 1, 3, ..., 1999 */
        w += i == 2001 ? 0 : (size_t)snprintf(want + w, sizeof want - w, "%d\n", i);
    snprintf(want + w, sizeof want - w, "SELECT 2002");
    assert_string_equal(got, want);
    pgs_buf_free(&out);
    px_merge_free(m);
    free(p);
}

/* A slow client: output stops once `room` is passed and goes on at the next call. */
static void test_output_room(void **state)
{
    prs_scatter *p = plan_new(1, 1);
    p->shards_sorted = true;
    plan_sort(p, 0, false, false);
    px_merge *m = px_merge_new(p, 1, (locale_t)0);
    const uint32_t t[] = {INT4};
    feed_desc(m, 1, 1, t, 0);
    for (int i = 0; i < 10; i++) {
        char v[8];
        snprintf(v, sizeof v, "%d", i);
        assert_int_equal(ROW(m, 0, v), 0);
    }
    complete_all(m, 1);
    pgs_buf out = PGS_BUF_INIT;
    int calls = 0;
    while (!px_merge_done(m)) {
        assert_int_equal(px_merge_output(m, &out, out.len + 20), 0);
        calls++;
    }
    assert_true(calls > 3);
    render(&out, false, rendered, sizeof rendered);
    assert_string_equal(rendered, "0\n1\n2\n3\n4\n5\n6\n7\n8\n9\nSELECT 10");
    pgs_buf_free(&out);
    px_merge_free(m);
    free(p);
}

/* ---- binary format ---- */

static void be64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (56 - 8 * i));
}

static void test_kway_binary(void **state)
{
    /* int8, float8 and numeric binary, each column its own sort */
    static const int64_t ints[] = {-5, -1, 0, 3, 1000000000000};
    static const double dbl[] = {-1e300, -0.5, 0, 2.5, 1e300};
    /* numeric: -12.5, -0.0001, 0, 1.5, 10000 */
    static const uint16_t nums[][6] = {
        {2, 0, 0x4000, 1, 12, 5000}, {1, (uint16_t)-1, 0x4000, 4, 1, 0},
        {0, 0, 0, 0, 0, 0},          {2, 0, 0, 1, 1, 5000},
        {1, 1, 0, 0, 1, 0},
    };
    for (int col = 0; col < 3; col++) {
        prs_scatter *p = plan_new(1, 1);
        p->shards_sorted = true;
        plan_sort(p, 0, true, true);
        px_merge *m = px_merge_new(p, 2, (locale_t)0);
        const uint32_t types[] = {INT8, FLOAT8, NUMERIC};
        feed_desc(m, 2, 1, &types[col], 1);
        char want[1024] = "";
        size_t w = 0;
        for (int i = 4; i >= 0; i--) {
            uint8_t b[16];
            tval v = {b, 8};
            if (col == 0) {
                be64(b, (uint64_t)ints[i]);
            } else if (col == 1) {
                uint64_t u;
                memcpy(&u, &dbl[i], 8);
                be64(b, u);
            } else {
                v.len = 8 + 2 * nums[i][0];
                for (int k = 0; k < 4 + nums[i][0]; k++) {
                    b[2 * k] = (uint8_t)(nums[i][k] >> 8);
                    b[2 * k + 1] = (uint8_t)nums[i][k];
                }
            }
            assert_int_equal(feed_bin(m, i % 2, 1, &v), 0);
            w += (size_t)snprintf(want + w, sizeof want - w, "x");
            for (int k = 0; k < v.len; k++)
                w += (size_t)snprintf(want + w, sizeof want - w, "%02x", b[k]);
            w += (size_t)snprintf(want + w, sizeof want - w, "\n");
        }
        snprintf(want + w, sizeof want - w, "SELECT 5");
        complete_all(m, 2);
        assert_string_equal(drain(m, true), want);
        px_merge_free(m);
        free(p);
    }
}

/* Binary values of more types, ascending, as hex: each case merged from 3 shards. */
static const struct {
    uint32_t type;
    const char *hex[8];
} bin_cases[] = {
    {21, {"8000", "ffff", "0000", "7fff"}},
    {INT4, {"80000000", "ffffffff", "00000001"}},
    {FLOAT4, {"ff800000", "bf800000", "00000000", "3f800000", "7f800000", "7fc00000"}},
    {BOOL, {"00", "01"}},
    {DATE, {"80000000", "ffffffff", "00000000", "7fffffff"}},
    {TIME, {"0000000000000000", "0000000000000001", "000000141dd76000"}},
    {TS,
     {"8000000000000000", "ffffffffffffffff", "0000000000000000", "000000e8d4a51000", "7fffffffffffffff"}},
    {TSTZ, {"ffffffffffffffff", "0000000000000000"}},
    /* 12:00+02, 12:00+01, 11:00+00, 09:00-03: by UTC time, then by zone */
    {TIMETZ,
     {"0000000a0eebb000ffffe3e0", "0000000a0eebb000fffff1f0", "0000000938580c0000000000",
      "000000078b30c40000002a30"}},
    /* -1 us, 0, 24 h + 1 day, 29 days, 1 mon, 1 mon + 1 us, 12 mons */
    {INTERVAL,
     {"ffffffffffffffff0000000000000000", "00000000000000000000000000000000",
      "000000141dd760000000000100000000", "00000000000000000000001d00000000",
      "00000000000000000000000000000001", "00000000000000010000000000000001",
      "0000000000000000000000000000000c"}},
    {UUID,
     {"00000000000000000000000000000000", "0fffffffffffffffffffffffffffffff",
      "ffffffffffffffffffffffffffffffff"}},
    {TEXT, {"", "41", "61", "6162", "c3a9"}},
    {BYTEA, {"", "00", "0001", "01", "ff"}},
    {BPCHAR, {"61", "612062", "622020"}},
};

static void test_kway_binary_types(void **state)
{
    for (size_t c = 0; c < sizeof bin_cases / sizeof bin_cases[0]; c++) {
        prs_scatter *p = plan_new(1, 1);
        p->shards_sorted = true;
        plan_sort(p, 0, false, false);
        px_merge *m = px_merge_new(p, 3, (locale_t)0);
        feed_desc(m, 3, 1, &bin_cases[c].type, 1);
        char want[1024] = "";
        size_t w = 0;
        int n = 0;
        for (; n < 8 && bin_cases[c].hex[n]; n++) {
            uint8_t b[32];
            const char *hx = bin_cases[c].hex[n];
            tval v = {b, (int)strlen(hx) / 2};
            for (int k = 0; k < v.len; k++)
                b[k] = (uint8_t)(pgs_hex_value(hx[2 * k]) << 4 | pgs_hex_value(hx[2 * k + 1]));
            assert_int_equal(feed_bin(m, (n * 2 + 1) % 3, 1, &v), 0);
            w += (size_t)snprintf(want + w, sizeof want - w, "x%s\n", hx);
        }
        snprintf(want + w, sizeof want - w, "SELECT %d", n);
        complete_all(m, 3);
        const char *got = drain(m, true);
        if (strcmp(got, want) != 0)
            print_error("binary case %zu (type %u):\nwant:\n%s\ngot:\n%s\n", c, bin_cases[c].type, want, got);
        assert_string_equal(got, want);
        px_merge_free(m);
        free(p);
    }
}

/* A text HAVING constant against binary columns: count(*) > 2 AND bool_or(b) = 'true'. */
static void test_having_binary(void **state)
{
    static const char consts[] = "2\0true";
    prs_scatter *p = plan_new(3, 2);
    p->grouped = true;
    p->cols[0].kind = PRS_SC_GROUP;
    p->cols[1].kind = PRS_SC_COUNT;
    p->cols[2].kind = PRS_SC_BOOL_OR;
    p->str = malloc(sizeof consts);
    memcpy(p->str, consts, sizeof consts);
    p->str_len = sizeof consts;
    static const prs_sc_insn prog[] = {{PRS_SC_OP_COL, 1}, {PRS_SC_OP_CONST, 0}, {PRS_SC_OP_GT, 0},
                                       {PRS_SC_OP_COL, 2}, {PRS_SC_OP_CONST, 2}, {PRS_SC_OP_EQ, 0},
                                       {PRS_SC_OP_AND, 0}};
    memcpy(p->having, prog, sizeof prog);
    p->ninsns = sizeof prog / sizeof prog[0];
    plan_sort(p, 0, false, false);
    const uint32_t t[] = {INT4, INT8, BOOL};
    px_merge *m = px_merge_new(p, 2, (locale_t)0);
    feed_desc(m, 2, 3, t, 1);
    static const struct {
        int shard;
        uint8_t key, count, b;
    } rows[] = {{0, 1, 2, 0}, {1, 1, 1, 1}, {0, 2, 5, 0}, {1, 2, 1, 0}, {1, 3, 3, 1}};
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        uint8_t k[4] = {0, 0, 0, rows[i].key}, c[8] = {0, 0, 0, 0, 0, 0, 0, rows[i].count},
                b[1] = {rows[i].b};
        tval row[3] = {{k, 4}, {c, 8}, {b, 1}};
        assert_int_equal(feed_bin(m, rows[i].shard, 3, row), 0);
    }
    complete_all(m, 2);
    assert_string_equal(drain(m, true), "x00000001|x0000000000000003\nx00000003|x0000000000000003\nSELECT 2");
    px_merge_free(m);
    free(p->str);
    free(p);
}

/* ---- grouping ---- */

/* group by k: count(*), sum(x int4), min(x), max(x), avg(x) (sum + hidden count) */
static prs_scatter *plan_groups(void)
{
    prs_scatter *p = plan_new(7, 6);
    p->grouped = true;
    p->cols[0].kind = PRS_SC_GROUP;
    p->cols[1].kind = PRS_SC_COUNT;
    p->cols[2].kind = PRS_SC_SUM;
    p->cols[3].kind = PRS_SC_MIN;
    p->cols[4].kind = PRS_SC_MAX;
    p->cols[5].kind = PRS_SC_AVG;
    p->cols[5].arg = 6;
    p->cols[6].kind = PRS_SC_COUNT;
    plan_sort(p, 0, false, false);
    return p;
}

static const uint32_t group_types[] = {TEXT, INT8, INT8, INT4, INT4, INT8, INT8};

static void feed_groups(px_merge *m)
{
    feed_desc(m, 2, 7, group_types, 0);
    assert_int_equal(ROW(m, 0, "b", "2", "30", "10", "20", "30", "2"), 0);
    assert_int_equal(ROW(m, 0, "a", "2", "3", "1", "2", "3", "2"), 0);
    assert_int_equal(ROW(m, 1, "a", "1", "3", "3", "3", "3", "1"), 0);
    assert_int_equal(ROW(m, 1, "b", "1", "30", "30", "30", "30", "1"), 0);
    assert_int_equal(ROW(m, 1, "c", "2", "3", "1", "2", "3", "2"), 0);
    assert_int_equal(ROW(m, 1, "d", "1", NULL, NULL, NULL, NULL, "0"), 0);
    complete_all(m, 2);
}

static void test_group_aggregates(void **state)
{
    prs_scatter *p = plan_groups();
    px_merge *m = px_merge_new(p, 2, (locale_t)0);
    feed_groups(m);
    pgs_buf out = PGS_BUF_INIT;
    assert_int_equal(px_merge_output(m, &out, 1 << 20), 0);
    /* the avg column is numeric, typlen -1, typmod -1, no table */
    pgs_reader r = pgs_reader_make(out.data + 5, pgs_be32(out.data + 1) - 4);
    uint16_t n;
    assert_int_equal(pgs_rd_be16(&r, &n), 0);
    assert_int_equal(n, 6);
    for (int i = 0; i < 6; i++) {
        const char *name;
        uint32_t table, type, typmod;
        uint16_t att, typlen, fmt;
        pgs_rd_cstr(&r, &name);
        pgs_rd_be32(&r, &table);
        pgs_rd_be16(&r, &att);
        pgs_rd_be32(&r, &type);
        pgs_rd_be16(&r, &typlen);
        pgs_rd_be32(&r, &typmod);
        assert_int_equal(pgs_rd_be16(&r, &fmt), 0);
        assert_int_equal(type, i == 5 ? NUMERIC : group_types[i]);
        if (i == 5) {
            assert_int_equal(table, 0);
            assert_int_equal(typlen, 0xFFFF);
            assert_int_equal(typmod, 0xFFFFFFFFu);
        }
    }
    render(&out, false, rendered, sizeof rendered);
    assert_string_equal(rendered, "a|3|6|1|3|2.0000000000000000\n"
                                  "b|3|60|10|30|20.0000000000000000\n"
                                  "c|2|3|1|2|1.5000000000000000\n"
                                  "d|1|-|-|-|-\n"
                                  "SELECT 4");
    pgs_buf_free(&out);
    px_merge_free(m);
    free(p);
}

static void test_group_sort_desc_offset_limit(void **state)
{
    prs_scatter *p = plan_groups();
    p->nsort = 0;
    plan_sort(p, 1, true, true); /* count desc, then first seen */
    p->offset = 1;
    p->limit = 2;
    px_merge *m = px_merge_new(p, 2, (locale_t)0);
    feed_groups(m);
    assert_string_equal(drain(m, false), "a|3|6|1|3|2.0000000000000000\n"
                                         "c|2|3|1|2|1.5000000000000000\n"
                                         "SELECT 2");
    assert_true(px_merge_done(m));
    px_merge_free(m);
    free(p);
}

/* HAVING count(*) > 1 AND (max(x) < 25 OR sum(x) IS NULL) */
static void test_having(void **state)
{
    static const char consts[] = "1\0"
                                 "25";
    prs_scatter *p = plan_groups();
    p->str = malloc(sizeof consts);
    memcpy(p->str, consts, sizeof consts);
    p->str_len = sizeof consts;
    static const prs_sc_insn prog[] = {
        {PRS_SC_OP_COL, 1},   {PRS_SC_OP_CONST, 0}, {PRS_SC_OP_GT, 0},  {PRS_SC_OP_COL, 4},
        {PRS_SC_OP_CONST, 2}, {PRS_SC_OP_LT, 0},    {PRS_SC_OP_COL, 2}, {PRS_SC_OP_IS_NULL, 0},
        {PRS_SC_OP_OR, 0},    {PRS_SC_OP_AND, 0},
    };
    memcpy(p->having, prog, sizeof prog);
    p->ninsns = sizeof prog / sizeof prog[0];
    px_merge *m = px_merge_new(p, 2, (locale_t)0);
    feed_groups(m);
    assert_string_equal(drain(m, false), "a|3|6|1|3|2.0000000000000000\n"
                                         "c|2|3|1|2|1.5000000000000000\n"
                                         "SELECT 2");
    px_merge_free(m);
    free(p->str);
    free(p);
}

/* HAVING avg(x) >= 2 NOT: the NULL avg of d is unknown, so d never passes. */
static void test_having_unknown(void **state)
{
    static const char consts[] = "2";
    prs_scatter *p = plan_groups();
    p->str = malloc(sizeof consts);
    memcpy(p->str, consts, sizeof consts);
    p->str_len = sizeof consts;
    static const prs_sc_insn prog[] = {
        {PRS_SC_OP_COL, 5}, {PRS_SC_OP_CONST, 0}, {PRS_SC_OP_LT, 0}, {PRS_SC_OP_NOT, 0}};
    memcpy(p->having, prog, sizeof prog);
    p->ninsns = 4;
    px_merge *m = px_merge_new(p, 2, (locale_t)0);
    feed_groups(m);
    assert_string_equal(drain(m, false), "a|3|6|1|3|2.0000000000000000\n"
                                         "b|3|60|10|30|20.0000000000000000\n"
                                         "SELECT 2");
    px_merge_free(m);
    free(p->str);
    free(p);
}

/* sum and avg of numeric and float columns; texts as PostgreSQL 15 prints them. */
static void test_sum_avg_texts(void **state)
{
    static const struct {
        uint32_t type;
        const char *a, *b; /* the two shards' sums, each over one row */
        const char *sum, *avg;
    } cases[] = {
        {NUMERIC, "1.25", "2.5", "3.75", "1.8750000000000000"},
        {NUMERIC, "100000", "3", "100003", "50001.500000000000"},
        {NUMERIC, "-1", "0.000", "-1.000", "-0.50000000000000000000"},
        {NUMERIC, "99999999999999999999.5", "0.5", "100000000000000000000.0", "50000000000000000000.0"},
        {NUMERIC, "-2.5", "2.5", "0.0", "0.00000000000000000000"},
        {NUMERIC, "NaN", "1", "NaN", "NaN"},
        {NUMERIC, "Infinity", "1", "Infinity", "Infinity"},
        {NUMERIC, "Infinity", "-Infinity", "NaN", "NaN"},
        {FLOAT8, "0.1", "0.2", "0.30000000000000004", "0.15000000000000002"},
        {FLOAT8, "1", "2", "3", "1.5"},
        {FLOAT8, "1e+20", "1e+20", "2e+20", "1e+20"},
        {FLOAT8, "0.0001", "0.00001", "0.00011", "5.5e-05"},
        {FLOAT8, "100000000000000", "0", "100000000000000", "50000000000000"},
        {FLOAT8, "Infinity", "1", "Infinity", "Infinity"},
        {FLOAT4, "0.1", "0.2", "0.3", "0.15000000223517418"},
        {FLOAT4, "1234567", "1", "1.234568e+06", "617284"},
        /* ties to a neighbour are never the shortest for Ryu as PostgreSQL builds it */
        {FLOAT8, "5.544943823171303e+16", "-537608.7199044321", "5.5449438231175424e+16",
         "2.7724719115587712e+16"},
        {FLOAT4, "4.3350008e+07", "-2574.1306", "4.3347432e+07", "21673716.934692383"},
        /* next to a power of two (2^172 and 2^173) the shortest digits round up */
        {FLOAT8, "5.986310706507379e+51", "0", "5.986310706507379e+51", "2.9931553532536892e+51"},
        {FLOAT8, "5.986310706507379e+51", "5.986310706507379e+51", "1.1972621413014757e+52",
         "5.986310706507379e+51"},
        /* a decimal that strtold cannot tell from a midpoint, but is not one */
        {FLOAT8, "-4.792477062687517e-284", "0", "-4.792477062687517e-284", "-2.3962385313437586e-284"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        prs_scatter *p = plan_new(3, 2);
        p->grouped = true;
        p->cols[0].kind = PRS_SC_SUM;
        p->cols[1].kind = PRS_SC_AVG;
        p->cols[1].arg = 2;
        p->cols[2].kind = PRS_SC_COUNT;
        px_merge *m = px_merge_new(p, 2, (locale_t)0);
        const uint32_t t[] = {cases[i].type, cases[i].type, INT8};
        feed_desc(m, 2, 3, t, 0);
        assert_int_equal(ROW(m, 0, cases[i].a, cases[i].a, "1"), 0);
        assert_int_equal(ROW(m, 1, cases[i].b, cases[i].b, "1"), 0);
        complete_all(m, 2);
        char want[256];
        snprintf(want, sizeof want, "%s|%s\nSELECT 1", cases[i].sum, cases[i].avg);
        const char *got = drain(m, false);
        if (strcmp(got, want) != 0)
            print_error("case %zu: want %s got %s\n", i, want, got);
        assert_string_equal(got, want);
        px_merge_free(m);
        free(p);
    }
}

/* count(*), sum(x) without GROUP BY: one row, even when no shard matched a row. */
static void test_aggregate_without_group(void **state)
{
    prs_scatter *p = plan_new(3, 3);
    p->grouped = true;
    p->cols[0].kind = PRS_SC_COUNT;
    p->cols[1].kind = PRS_SC_SUM;
    p->cols[2].kind = PRS_SC_BOOL_AND;
    const uint32_t t[] = {INT8, NUMERIC, BOOL};
    px_merge *m = px_merge_new(p, 3, (locale_t)0);
    feed_desc(m, 3, 3, t, 0);
    assert_int_equal(ROW(m, 0, "2", "1.5", "t"), 0);
    assert_int_equal(ROW(m, 1, "0", NULL, NULL), 0);
    assert_int_equal(ROW(m, 2, "5", "-0.25", "f"), 0);
    complete_all(m, 3);
    assert_string_equal(drain(m, false), "7|1.25|f\nSELECT 1");
    px_merge_free(m);

    m = px_merge_new(p, 2, (locale_t)0);
    feed_desc(m, 2, 3, t, 0);
    complete_all(m, 2);
    assert_string_equal(drain(m, false), "0|-|-\nSELECT 1");
    px_merge_free(m);
    free(p);
}

static void test_sum_overflow(void **state)
{
    prs_scatter *p = plan_new(1, 1);
    p->grouped = true;
    p->cols[0].kind = PRS_SC_SUM;
    const uint32_t t[] = {INT8};
    px_merge *m = px_merge_new(p, 2, (locale_t)0);
    feed_desc(m, 2, 1, t, 0);
    assert_int_equal(ROW(m, 0, "9223372036854775807"), 0);
    assert_int_equal(ROW(m, 1, "1"), -1);
    expect_error(m, "22003", "bigint out of range");
    px_merge_free(m);
    free(p);
}

/* DISTINCT: numeric 1.0 and 1.00 are one value, float -0 and 0 too, bpchar ignores
 * trailing spaces; the first text seen is kept. */
static void test_distinct(void **state)
{
    prs_scatter *p = plan_new(3, 3);
    p->grouped = true;
    for (int c = 0; c < 3; c++)
        p->cols[c].kind = PRS_SC_GROUP;
    plan_sort(p, 0, false, false);
    plan_sort(p, 1, false, false);
    const uint32_t t[] = {NUMERIC, FLOAT8, BPCHAR};
    px_merge *m = px_merge_new(p, 2, (locale_t)0);
    feed_desc(m, 2, 3, t, 0);
    assert_int_equal(ROW(m, 0, "1.0", "-0", "a "), 0);
    assert_int_equal(ROW(m, 1, "1.00", "0", "a"), 0);
    assert_int_equal(ROW(m, 1, "01", "0", "a  "), 0);
    assert_int_equal(ROW(m, 0, "1.5", "0", "a"), 0);
    assert_int_equal(ROW(m, 0, "1", NULL, "a"), 0);
    assert_int_equal(ROW(m, 1, "1", NULL, "a"), 0);
    assert_int_equal(ROW(m, 0, "0.00", NULL, "b"), 0);
    assert_int_equal(ROW(m, 1, "0", NULL, "b"), 0);
    assert_int_equal(ROW(m, 1, "-0.0", NULL, "b"), 0);
    complete_all(m, 2);
    assert_string_equal(drain(m, false), "0.00|-|b\n1.0|-0|a \n1|-|a\n1.5|0|a\nSELECT 4");
    px_merge_free(m);
    free(p);
}

/* SELECT DISTINCT count(*), sum(x) ... GROUP BY g (g hidden): groups whose visible columns
 * are equal once merged are one row, after HAVING count(*) > 1; the partial counts of the
 * shards (1 and 2) never meet. */
static void test_distinct_groups(void **state)
{
    static const char consts[] = "1";
    prs_scatter *p = plan_new(3, 2);
    p->grouped = true;
    p->distinct = true;
    p->cols[0].kind = PRS_SC_COUNT;
    p->cols[1].kind = PRS_SC_SUM;
    p->cols[2].kind = PRS_SC_GROUP;
    p->str = malloc(sizeof consts);
    memcpy(p->str, consts, sizeof consts);
    p->str_len = sizeof consts;
    static const prs_sc_insn prog[] = {{PRS_SC_OP_COL, 0}, {PRS_SC_OP_CONST, 0}, {PRS_SC_OP_GT, 0}};
    memcpy(p->having, prog, sizeof prog);
    p->ninsns = 3;
    plan_sort(p, 0, true, true);
    const uint32_t t[] = {INT8, NUMERIC, TEXT};
    px_merge *m = px_merge_new(p, 2, (locale_t)0);
    feed_desc(m, 2, 3, t, 0);
    assert_int_equal(ROW(m, 0, "1", "1.5", "a"), 0);
    assert_int_equal(ROW(m, 1, "2", "1.50", "a"), 0);
    assert_int_equal(ROW(m, 0, "2", "1.5", "b"), 0);
    assert_int_equal(ROW(m, 1, "1", "3", "b"), 0);
    assert_int_equal(ROW(m, 0, "3", "3.00", "c"), 0);
    assert_int_equal(ROW(m, 1, "2", "9", "d"), 0);
    assert_int_equal(ROW(m, 1, "1", "5", "e"), 0);
    complete_all(m, 2);
    assert_string_equal(drain(m, false), "3|3.00\n3|4.5\n2|9\nSELECT 3");
    px_merge_free(m);
    free(p->str);
    free(p);
}

/* HAVING with a bare boolean (HAVING bool_and(b) AND NOT g): true passes, false and NULL do
 * not; a column that is not boolean is refused as the server refuses it. */
static void test_having_bool(void **state)
{
    static const prs_sc_insn prog[] = {
        {PRS_SC_OP_COL, 1}, {PRS_SC_OP_COL, 0}, {PRS_SC_OP_NOT, 0}, {PRS_SC_OP_AND, 0}};
    prs_scatter *p = plan_new(2, 2);
    p->grouped = true;
    p->cols[0].kind = PRS_SC_GROUP;
    p->cols[1].kind = PRS_SC_BOOL_AND;
    memcpy(p->having, prog, sizeof prog);
    p->ninsns = 4;
    const uint32_t t[] = {BOOL, BOOL};
    px_merge *m = px_merge_new(p, 2, (locale_t)0);
    feed_desc(m, 2, 2, t, 0);
    assert_int_equal(ROW(m, 0, "f", "t"), 0);
    assert_int_equal(ROW(m, 1, "f", "t"), 0);
    assert_int_equal(ROW(m, 0, "t", "t"), 0);
    assert_int_equal(ROW(m, 1, NULL, "t"), 0);
    complete_all(m, 2);
    assert_string_equal(drain(m, false), "f|t\nSELECT 1");
    px_merge_free(m);

    p->ninsns = 1; /* HAVING bool_and(b) alone, in binary */
    m = px_merge_new(p, 1, (locale_t)0);
    feed_desc(m, 1, 2, t, 1);
    const uint8_t one = 1, zero = 0;
    assert_int_equal(feed_bin(m, 0, 2, (const tval[]){{&one, 1}, {&zero, 1}}), 0);
    assert_int_equal(feed_bin(m, 0, 2, (const tval[]){{&zero, 1}, {&one, 1}}), 0);
    complete_all(m, 1);
    assert_string_equal(drain(m, true), "x00|x01\nSELECT 1");
    px_merge_free(m);

    const uint32_t t2[] = {BOOL, INT8};
    p->cols[1].kind = PRS_SC_COUNT;
    m = px_merge_new(p, 1, (locale_t)0);
    pgs_buf b = desc_body(2, t2, 0, NULL);
    assert_int_equal(px_merge_row_desc(m, 0, b.data, b.len), -1);
    pgs_buf_free(&b);
    expect_error(m, "42804", "argument of HAVING must be type boolean");
    px_merge_free(m);
    free(p);
}

/* sum(x) and avg(x) of an interval x: the fields added apart (interval_pl), the average as
 * PostgreSQL 15's interval_div by the count; expected texts from PostgreSQL 15. Columns:
 * sum, avg (each shard's sum), hidden count and avg. */
static prs_scatter *plan_interval(void)
{
    prs_scatter *p = plan_new(4, 2);
    p->grouped = true;
    p->cols[0].kind = PRS_SC_SUM;
    p->cols[1].kind = PRS_SC_AVG;
    p->cols[1].arg = 2;
    p->cols[1].avgf = 4;
    p->cols[2].kind = PRS_SC_COUNT;
    return p;
}

static void test_interval_sum_avg(void **state)
{
    static const char *const sums[] = {"1 year 2 mons -4 days +14:05:06.5", "4 mons 29 days 22:59:59.999998",
                                       "-1 years -11 mons +5 days -00:00:00.5"};
    static const char *const counts[] = {"2", "3", "2"};
    const uint32_t t[] = {INTERVAL, INTERVAL, INT8, INTERVAL};
    prs_scatter *p = plan_interval();
    px_merge *m = px_merge_new(p, 3, (locale_t)0);
    feed_desc(m, 3, 4, t, 0);
    for (int s = 0; s < 3; s++)
        assert_int_equal(ROW(m, s, sums[s], sums[s], counts[s], "0"), 0);
    complete_all(m, 3);
    assert_string_equal(drain(m, false),
                        "-5 mons +30 days 37:05:05.999998|-17 days +01:52:09.4656\nSELECT 1");
    px_merge_free(m);

    m = px_merge_new(p, 2, (locale_t)0);
    feed_desc(m, 2, 4, t, 0);
    for (int s = 0; s < 2; s++)
        assert_int_equal(ROW(m, s, sums[s], sums[s], counts[s], "0"), 0);
    complete_all(m, 2);
    assert_string_equal(drain(m, false),
                        "1 year 6 mons 25 days 37:05:06.499998|3 mons 23 days 07:25:01.3\nSELECT 1");
    px_merge_free(m);

    /* one shard: what the server printed comes back */
    m = px_merge_new(p, 1, (locale_t)0);
    feed_desc(m, 1, 4, t, 0);
    assert_int_equal(ROW(m, 0, sums[2], sums[2], "2", "0"), 0);
    complete_all(m, 1);
    assert_string_equal(drain(m, false),
                        "-1 years -11 mons +5 days -00:00:00.5|-11 mons -13 days +11:59:59.75\nSELECT 1");
    px_merge_free(m);

    /* binary: 16 bytes, microseconds, days, months */
    uint8_t b0[16], b1[16], cnt[8];
    be64(b0, (uint64_t)((4 * 3600 + 5 * 60 + 6) * INT64_C(1000000) + 500000));
    memcpy(b0 + 8, "\xff\xff\xff\xfc\x00\x00\x00\x0e", 8);
    be64(b1, (uint64_t)(33 * 3600 * INT64_C(1000000) - 500002));
    memcpy(b1 + 8, "\x00\x00\x00\x22\xff\xff\xff\xfb", 8);
    be64(cnt, 1);
    m = px_merge_new(p, 2, (locale_t)0);
    feed_desc(m, 2, 4, t, 1);
    assert_int_equal(feed_bin(m, 0, 4, (const tval[]){{b0, 16}, {b0, 16}, {cnt, 8}, {b0, 16}}), 0);
    assert_int_equal(feed_bin(m, 1, 4, (const tval[]){{b1, 16}, {b1, 16}, {cnt, 8}, {b1, 16}}), 0);
    complete_all(m, 2);
    assert_string_equal(drain(m, true),
                        "x0000001f1593e47e0000001e00000009|x0000000f8ac9f23f0000001e00000004\n"
                        "SELECT 1");
    px_merge_free(m);

    /* the months overflow as interval_pl's do */
    m = px_merge_new(p, 2, (locale_t)0);
    feed_desc(m, 2, 4, t, 0);
    assert_int_equal(ROW(m, 0, "178956970 years", "1 mon", "1", "0"), 0);
    assert_int_equal(ROW(m, 1, "178956970 years", "1 mon", "1", "0"), -1);
    expect_error(m, "22008", "interval out of range");
    px_merge_free(m);
    free(p);
}

/* count, sum of int8, numeric and float8, and avg, all in binary. */
static void test_group_binary(void **state)
{
    prs_scatter *p = plan_new(5, 4);
    p->grouped = true;
    p->cols[0].kind = PRS_SC_COUNT;
    p->cols[1].kind = PRS_SC_SUM;
    p->cols[2].kind = PRS_SC_SUM;
    p->cols[3].kind = PRS_SC_AVG;
    p->cols[3].arg = 4;
    p->cols[4].kind = PRS_SC_COUNT;
    const uint32_t t[] = {INT8, INT8, FLOAT8, NUMERIC, INT8};
    px_merge *m = px_merge_new(p, 2, (locale_t)0);
    feed_desc(m, 2, 5, t, 1);
    for (int s = 0; s < 2; s++) {
        uint8_t cnt[8], sum[8], f[8], one[8];
        /* numeric 1.25 and 2.5: {ndigits, weight, sign, dscale, digits} */
        static const uint8_t n125[] = {0, 2, 0, 0, 0, 0, 0, 2, 0, 1, 0x09, 0xc4};
        static const uint8_t n25[] = {0, 2, 0, 0, 0, 0, 0, 1, 0, 2, 0x13, 0x88};
        double d = s ? 0.2 : 0.1;
        uint64_t u;
        memcpy(&u, &d, 8);
        be64(cnt, (uint64_t)(s + 2));
        be64(sum, (uint64_t)(s ? -7 : 100));
        be64(f, u);
        be64(one, 1);
        tval row[5] = {{cnt, 8}, {sum, 8}, {f, 8}, {s ? n25 : n125, 12}, {one, 8}};
        assert_int_equal(feed_bin(m, s, 5, row), 0);
    }
    complete_all(m, 2);
    /* 5, 93, 0.30000000000000004 (0x3fd3333333333334), avg 1.8750000000000000:
     * ndigits 2, weight 0, sign 0, dscale 16, digits 1 8750 */
    assert_string_equal(drain(m, true), "x0000000000000005|x000000000000005d|x3fd3333333333334|"
                                        "x00020000000000100001222e\nSELECT 1");
    px_merge_free(m);
    free(p);
}

/* ---- errors ---- */

static void test_desc_mismatch(void **state)
{
    static const uint32_t a[] = {INT4, TEXT}, b[] = {INT8, TEXT};
    prs_scatter *p = plan_new(2, 2);
    px_merge *m = px_merge_new(p, 2, (locale_t)0);
    pgs_buf da = desc_body(2, a, 0, NULL), db = desc_body(2, b, 0, NULL);
    assert_int_equal(px_merge_row_desc(m, 0, da.data, da.len), 0);
    assert_int_equal(px_merge_row_desc(m, 1, db.data, db.len), -1);
    expect_error(m, "XX000", "the shards returned different row descriptions");
    px_merge_free(m);

    static const char *const names[] = {"x", "y"};
    pgs_buf dn = desc_body(2, a, 0, names);
    m = px_merge_new(p, 2, (locale_t)0);
    assert_int_equal(px_merge_row_desc(m, 0, da.data, da.len), 0);
    assert_int_equal(px_merge_row_desc(m, 1, dn.data, dn.len), -1);
    expect_error(m, "XX000", "different row descriptions");
    px_merge_free(m);
    pgs_buf_free(&da);
    pgs_buf_free(&db);
    pgs_buf_free(&dn);
    free(p);
}

/* The pool's list of libc collations, as the merge asks it. */
static int test_resolve(void *arg, const char *name, char *locale, size_t cap)
{
    (void)arg;
    if (strcmp(name, "\"C.utf8\"") == 0)
        return snprintf(locale, cap, "C.utf8") > 0;
    if (strcmp(name, "mine") == 0) /* a collation whose locale this machine lacks */
        return snprintf(locale, cap, "xx_NOWHERE.UTF-8") > 0;
    if (strcmp(name, "bytes") == 0)
        return snprintf(locale, cap, "POSIX") > 0;
    return 0;
}

typedef struct coll_case {
    bool grouped;
    bool unordered;    /* the database's collation is not reproduced here (ICU) */
    const char *c0;    /* the collation shard 0 names; NULL for an SQL NULL */
    const char *c1;    /* shard 1's */
    const char *want;  /* the merged rows, or NULL when refused */
    const char *error; /* part of the refusal */
} coll_case;

/* Text compared under the collation each shard names for the column, in its hidden
 * collation column: known ones merge, others are refused before any row is sent. */
static void test_collated(void **state)
{
    (void)state;
    static const coll_case cases[] = {
        {false, false, "\"C\"", "\"C\"", "B\na\nSELECT 2", NULL},
        {false, false, "\"default\"", "\"default\"", "B\na\nSELECT 2", NULL},
        {false, false, "ucs_basic", "ucs_basic", "B\na\nSELECT 2", NULL},
        {false, false, "bytes", "bytes", "B\na\nSELECT 2", NULL},
        {false, false, "\"C.utf8\"", "\"C.utf8\"", "B\na\nSELECT 2", NULL},
        {false, true, "\"C\"", "\"C\"", "B\na\nSELECT 2", NULL},
        {false, true, "\"default\"", "\"default\"", NULL, "cannot order text by column \"c1\""},
        {true, true, "\"default\"", "\"default\"", "a\nB\nSELECT 2", NULL},
        {false, false, "\"und-x-icu\"", "\"und-x-icu\"", NULL, "under collation \"und-x-icu\""},
        {true, false, "\"und-x-icu\"", "\"und-x-icu\"", NULL, "cannot group text by"},
        {false, false, "mine", "mine", NULL, "under collation mine"},
        {false, false, NULL, NULL, NULL, "indeterminate"},
        {false, false, "\"C\"", "\"default\"", NULL, "different collations"},
    };
    const uint32_t t[] = {TEXT, TEXT};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const coll_case *cc = &cases[i];
        prs_scatter *p = plan_new(2, 1);
        p->grouped = cc->grouped;
        p->shards_sorted = !cc->grouped;
        p->cols[0].kind = cc->grouped ? PRS_SC_GROUP : PRS_SC_PLAIN;
        p->cols[0].coll = 2;
        if (!cc->grouped)
            plan_sort(p, 0, false, false);
        px_merge *m = px_merge_new(p, 2, (locale_t)0);
        px_merge_set_collations(m, cc->unordered, test_resolve, NULL);
        feed_desc(m, 2, 2, t, 0);
        int rc = ROW(m, 0, "a", cc->c0);
        if (rc == 0)
            rc = ROW(m, 1, "B", cc->c1);
        if (cc->want) {
            assert_int_equal(rc, 0);
            complete_all(m, 2);
            assert_string_equal(drain(m, false), cc->want);
        } else {
            assert_int_equal(rc, -1);
            expect_error(m, "0A000", cc->error);
        }
        px_merge_free(m);
        free(p);
    }
}

/* Under * the columns' collations are unknown: ordering text by position is refused when
 * the RowDescription comes, name (whose collation is "C" unless a COLLATE says otherwise) as
 * well; other types merge. */
static void test_star_text_order(void **state)
{
    (void)state;
    const uint32_t types[] = {TEXT, 19, INT4};
    for (int c = 0; c < 3; c++) {
        prs_scatter *p = plan_new(0, 0);
        p->shards_sorted = true;
        plan_sort(p, c, false, false);
        px_merge *m = px_merge_new(p, 1, (locale_t)0);
        pgs_buf b = desc_body(3, types, 0, NULL);
        int rc = px_merge_row_desc(m, 0, b.data, b.len);
        assert_int_equal(rc, c == 2 ? 0 : -1);
        if (rc)
            expect_error(m, "0A000", "by position");
        pgs_buf_free(&b);
        px_merge_free(m);
        free(p);
    }
}

/* SELECT * ORDER BY a text column: the sort key and its collation are hidden after the
 * columns * gave, whose number only the RowDescription tells. */
static void test_star_hidden(void **state)
{
    (void)state;
    prs_scatter *p = plan_new(0, 0);
    p->shards_sorted = true;
    p->star_hidden = 2;
    p->cols[0] = (prs_sc_col){PRS_SC_PLAIN, true, 0, 0, 2};
    p->cols[1] = (prs_sc_col){PRS_SC_PLAIN, true, 0, 0, 0};
    plan_sort(p, PRS_SC_SORT_HIDDEN | 0, true, true);
    p->limit = 3;
    px_merge *m = px_merge_new(p, 2, (locale_t)0);
    const uint32_t t[] = {INT4, TEXT, TEXT, TEXT};
    pgs_buf out = PGS_BUF_INIT;
    feed_desc(m, 2, 4, t, 0);
    assert_int_equal(ROW(m, 0, "1", "x", NULL, "\"C\""), 0);
    assert_int_equal(ROW(m, 0, "2", "y", "b", "\"C\""), 0);
    assert_int_equal(ROW(m, 1, "3", "z", "c", "\"C\""), 0);
    assert_int_equal(ROW(m, 1, "4", "w", "a", "\"C\""), 0);
    complete_all(m, 2);
    assert_int_equal(px_merge_output(m, &out, 1 << 20), 0);
    assert_int_equal(out.data[0], 'T');
    assert_int_equal(pgs_be16(out.data + 5), 2); /* the columns * gave */
    render(&out, false, rendered, sizeof rendered);
    assert_string_equal(rendered, "1|x\n3|z\n2|y\nSELECT 3");
    pgs_buf_free(&out);
    px_merge_free(m);

    /* ORDER BY 3 names a hidden column on the shards: not in the select list */
    p->nsort = 0;
    plan_sort(p, 2, false, false);
    m = px_merge_new(p, 1, (locale_t)0);
    pgs_buf b = desc_body(4, t, 0, NULL);
    assert_int_equal(px_merge_row_desc(m, 0, b.data, b.len), -1);
    expect_error(m, "42P10", "ORDER BY position 3 is not in select list");
    pgs_buf_free(&b);
    px_merge_free(m);

    /* fewer columns than the hidden ones and one of * */
    m = px_merge_new(p, 1, (locale_t)0);
    b = desc_body(2, t, 0, NULL);
    assert_int_equal(px_merge_row_desc(m, 0, b.data, b.len), -1);
    expect_error(m, "XX000", "expects more than 2");
    pgs_buf_free(&b);
    px_merge_free(m);
    free(p);
}

static void test_malformed(void **state)
{
    static const struct {
        const char *name;
        const uint8_t body[16];
        size_t len;
    } rows[] = {
        {"empty", {0}, 0},
        {"one byte", {0}, 1},
        {"wrong count", {0, 2, 0, 0, 0, 1, '1', 0, 0, 0, 1, '2'}, 12},
        {"length past the end", {0, 1, 0, 0, 0, 9, '1'}, 7},
        {"negative length", {0, 1, 0x80, 0, 0, 0, '1'}, 7},
        {"trailing bytes", {0, 1, 0, 0, 0, 1, '1', 'x'}, 8},
        {"truncated length", {0, 1, 0, 0}, 4},
    };
    const uint32_t t[] = {INT4};
    for (int mode = 0; mode < 3; mode++) {
        for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
            prs_scatter *p = plan_new(1, 1);
            p->shards_sorted = mode == 1;
            p->grouped = mode == 2;
            p->cols[0].kind = mode == 2 ? PRS_SC_GROUP : PRS_SC_PLAIN;
            if (mode)
                plan_sort(p, 0, false, false);
            px_merge *m = px_merge_new(p, 1, (locale_t)0);
            feed_desc(m, 1, 1, t, 0);
            assert_int_equal(px_merge_data_row(m, 0, rows[i].body, rows[i].len), -1);
            expect_error(m, "08P01", "malformed DataRow");
            px_merge_free(m);
            free(p);
        }
    }
    /* values a sort or a sum cannot read */
    static const struct {
        uint32_t type;
        const char *v;
        bool sum;
    } bad[] = {{INT8, "12x", true},         {NUMERIC, "1.2.3", true},    {NUMERIC, "", true},
               {FLOAT8, "abc", true},       {DATE, "2020-13-01", false}, {TS, "2020-01-01T10:00:00", false},
               {INTERVAL, "1 week", false}, {UUID, "abc", false},        {BYTEA, "abc", false},
               {BOOL, "yes", false}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        prs_scatter *p = plan_new(1, 1);
        p->grouped = bad[i].sum;
        p->shards_sorted = !bad[i].sum;
        p->cols[0].kind = bad[i].sum ? PRS_SC_SUM : PRS_SC_PLAIN;
        plan_sort(p, 0, false, false);
        if (bad[i].sum)
            p->nsort = 0;
        px_merge *m = px_merge_new(p, 2, (locale_t)0);
        feed_desc(m, 2, 1, &bad[i].type, 0);
        int rc = ROW(m, 0, bad[i].v);
        if (rc == 0) {
            if (bad[i].type == BOOL)
                assert_int_equal(ROW(m, 1, "t"), 0);
            else
                assert_int_equal(ROW(m, 1, bad[i].v), 0);
            pgs_buf out = PGS_BUF_INIT;
            rc = px_merge_output(m, &out, 1 << 20);
            pgs_buf_free(&out);
        }
        assert_int_equal(rc, -1);
        /* Dates and intervals in text that do not read are taken for another DateStyle or
         * IntervalStyle of the session: refused, with the setting to change. */
        if (bad[i].type == DATE || bad[i].type == TS || bad[i].type == INTERVAL)
            expect_error(m, "0A000", "Style");
        else
            expect_error(m, "XX000", "cannot be read");
        px_merge_free(m);
        free(p);
    }
    /* a malformed RowDescription, and a row before any */
    prs_scatter *p = plan_new(1, 1);
    px_merge *m = px_merge_new(p, 1, (locale_t)0);
    assert_int_equal(ROW(m, 0, "1"), -1);
    expect_error(m, "08P01", "malformed");
    px_merge_free(m);
    m = px_merge_new(p, 1, (locale_t)0);
    static const uint8_t desc[] = {0, 1, 'a', 0, 0, 0};
    assert_int_equal(px_merge_row_desc(m, 0, desc, sizeof desc), -1);
    expect_error(m, "08P01", "malformed RowDescription");
    px_merge_free(m);
    free(p);
}

static void test_cannot_compare(void **state)
{
    prs_scatter *p = plan_new(1, 1);
    p->shards_sorted = true;
    plan_sort(p, 0, false, false);
    px_merge *m = px_merge_new(p, 1, (locale_t)0);
    pgs_buf d = desc_body(1, (const uint32_t[]){POINT}, 0, NULL);
    assert_int_equal(px_merge_row_desc(m, 0, d.data, d.len), -1);
    expect_error(m, "0A000", "cannot compare values of type 600 across shards");
    px_merge_free(m);
    pgs_buf_free(&d);

    p->shards_sorted = false;
    p->nsort = 0;
    p->grouped = true;
    p->cols[0].kind = PRS_SC_SUM;
    m = px_merge_new(p, 1, (locale_t)0);
    d = desc_body(1, (const uint32_t[]){TIME}, 0, NULL);
    assert_int_equal(px_merge_row_desc(m, 0, d.data, d.len), -1);
    expect_error(m, "0A000", "cannot combine");
    px_merge_free(m);
    pgs_buf_free(&d);
    free(p);
}

/* Mutated rows (bytes flipped, cut short, lengths changed) in every mode and format: the
 * merge answers each with 0 or an error of its own, never a crash (run under ASan). */
static uint32_t rng_state = 2463534242u;
static uint32_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 17;
    rng_state ^= rng_state << 5;
    return rng_state;
}

static void garbage_row(pgs_buf *b, uint16_t fmt)
{
    static const char *const text[] = {"12", "-1.50", "abc", "2020-01-01 10:00:00+02", "1 day -00:00:01"};
    static const uint8_t bin[][16] = {{0, 0, 0, 0, 0, 0, 0, 12},
                                      {0, 1, 0, 0, 0x40, 0, 0, 1, 0, 1},
                                      {'a', 'b', 'c'},
                                      {0, 0, 0, 0, 0, 0, 1, 0},
                                      {0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 1}};
    static const int binlen[] = {8, 10, 3, 8, 16};
    pgs_buf_clear(b);
    pgs_buf_append_be16(b, 5);
    for (int i = 0; i < 5; i++) {
        if (rng() % 8 == 0) {
            pgs_buf_append_be32(b, 0xFFFFFFFFu);
            continue;
        }
        size_t n = fmt ? (size_t)binlen[i] : strlen(text[i]);
        pgs_buf_append_be32(b, (uint32_t)n);
        pgs_buf_append(b, fmt ? (const void *)bin[i] : (const void *)text[i], n);
    }
    for (uint32_t k = rng() % 64 < 3 ? rng() % 4 + 1 : 0; k > 0 && b->len > 0; k--) {
        uint32_t what = rng() % 3, at = rng() % (uint32_t)b->len;
        if (what == 0)
            b->data[at] ^= (uint8_t)(1u << (rng() % 8));
        else if (what == 1)
            b->len = at;
        else
            b->data[at] = (uint8_t)rng();
    }
}

static void test_garbage(void **state)
{
    static const uint32_t t[] = {INT8, NUMERIC, TEXT, TSTZ, INTERVAL};
    static const uint8_t kinds[][5] = {
        {PRS_SC_PLAIN, PRS_SC_PLAIN, PRS_SC_PLAIN, PRS_SC_PLAIN, PRS_SC_PLAIN},
        {PRS_SC_COUNT, PRS_SC_SUM, PRS_SC_MIN, PRS_SC_MAX, PRS_SC_GROUP},
        {PRS_SC_SUM, PRS_SC_AVG, PRS_SC_GROUP, PRS_SC_GROUP, PRS_SC_MIN},
    };
    pgs_buf b = PGS_BUF_INIT;
    int outcomes[2] = {0, 0}; /* finished, failed */
    for (int round = 0; round < 300; round++) {
        int mode = round % 4;
        uint16_t fmt = (uint16_t)(round / 4 % 2);
        prs_scatter *p = plan_new(5, 4);
        p->grouped = mode >= 2;
        p->shards_sorted = mode == 1;
        for (int c = 0; c < 5; c++)
            p->cols[c] = (prs_sc_col){p->grouped ? kinds[mode - 1][c] : PRS_SC_PLAIN, c == 4, 0, 0, 0};
        p->cols[1].arg = 0;
        if (mode) {
            plan_sort(p, 3, false, false);
            plan_sort(p, 0, true, true);
        }
        p->limit = round % 3 == 0 ? 5 : -1;
        px_merge *m = px_merge_new(p, 3, (locale_t)0);
        feed_desc(m, 3, 5, t, fmt);
        int rc = 0;
        pgs_buf out = PGS_BUF_INIT;
        for (int i = 0; i < 40 && rc == 0; i++) {
            garbage_row(&b, fmt);
            rc = px_merge_data_row(m, (int)(rng() % 3), b.data, b.len);
            if (rc == 0 && i % 7 == 0)
                rc = px_merge_output(m, &out, 1 << 20);
        }
        if (rc == 0) {
            complete_all(m, 3);
            rc = px_merge_output(m, &out, 1 << 20);
        }
        outcomes[rc != 0]++;
        if (rc != 0) {
            const char *st;
            assert_int_equal(strncmp(px_merge_error(m, &st), "pgshard: ", 9), 0);
            assert_int_equal(strlen(st), 5);
        } else {
            assert_true(px_merge_done(m));
        }
        pgs_buf_free(&out);
        px_merge_free(m);
        free(p);
    }
    pgs_buf_free(&b);
    print_message("garbage: %d merges finished, %d failed\n", outcomes[0], outcomes[1]);
    assert_true(outcomes[0] > 0 && outcomes[1] > 0);
}

/* Plans the merge cannot carry out as written fail at the RowDescription. */
static void test_bad_plans(void **state)
{
    static const struct {
        const char *what;
        int ncols, nvisible;
        bool grouped, sorted;
        int sort_col, ninsns, avg_arg;
    } cases[] = {
        {"counts", 1, 2, false, false, -1, 0, -1},
        {"ORDER BY over unsorted shards", 1, 1, false, false, 0, 0, -1},
        {"HAVING without grouping", 1, 1, false, false, -1, 1, -1},
        {"a sort column", 1, 1, false, true, 3, 0, -1},
        {"avg()'s count column", 2, 1, true, false, -1, 0, 7},
        {"a HAVING column", 1, 1, true, false, -1, 1, -1},
    };
    const uint32_t t[] = {INT8, INT8};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        prs_scatter *p = plan_new(cases[i].ncols, cases[i].nvisible);
        p->grouped = cases[i].grouped;
        p->shards_sorted = cases[i].sorted;
        if (cases[i].sort_col >= 0)
            plan_sort(p, cases[i].sort_col, false, false);
        p->ninsns = (uint8_t)cases[i].ninsns;
        p->having[0] = (prs_sc_insn){PRS_SC_OP_COL, 9};
        if (cases[i].grouped)
            p->cols[0].kind = PRS_SC_COUNT;
        if (cases[i].avg_arg >= 0)
            p->cols[0] = (prs_sc_col){PRS_SC_AVG, false, (uint16_t)cases[i].avg_arg, 0, 0};
        px_merge *m = px_merge_new(p, 1, (locale_t)0);
        pgs_buf d = desc_body(cases[i].ncols, t, 0, NULL);
        assert_int_equal(px_merge_row_desc(m, 0, d.data, d.len), -1);
        expect_error(m, "XX000", cases[i].what);
        pgs_buf_free(&d);
        px_merge_free(m);
        free(p);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_concat_offset_limit),
        cmocka_unit_test(test_concat_hidden_and_desc),
        cmocka_unit_test(test_select_star),
        cmocka_unit_test(test_limit_zero_and_no_desc),
        cmocka_unit_test(test_kway_types),
        cmocka_unit_test(test_kway_collation),
        cmocka_unit_test(test_kway_nulls_two_keys),
        cmocka_unit_test(test_kway_waits_and_ties),
        cmocka_unit_test(test_kway_backpressure_and_limit),
        cmocka_unit_test(test_kway_queue_reuse),
        cmocka_unit_test(test_output_room),
        cmocka_unit_test(test_kway_binary),
        cmocka_unit_test(test_kway_binary_types),
        cmocka_unit_test(test_having_binary),
        cmocka_unit_test(test_group_aggregates),
        cmocka_unit_test(test_group_sort_desc_offset_limit),
        cmocka_unit_test(test_having),
        cmocka_unit_test(test_having_unknown),
        cmocka_unit_test(test_sum_avg_texts),
        cmocka_unit_test(test_aggregate_without_group),
        cmocka_unit_test(test_sum_overflow),
        cmocka_unit_test(test_distinct),
        cmocka_unit_test(test_distinct_groups),
        cmocka_unit_test(test_having_bool),
        cmocka_unit_test(test_interval_sum_avg),
        cmocka_unit_test(test_group_binary),
        cmocka_unit_test(test_desc_mismatch),
        cmocka_unit_test(test_collated),
        cmocka_unit_test(test_star_text_order),
        cmocka_unit_test(test_star_hidden),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_cannot_compare),
        cmocka_unit_test(test_garbage),
        cmocka_unit_test(test_bad_plans),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

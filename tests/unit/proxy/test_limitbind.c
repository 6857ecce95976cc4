/* Tests for proxy/limitbind.c: a client's Bind for a cross-shard read with LIMIT $n or
 * OFFSET $m built here, the shards' Bind rendered as text to compare, and the values the
 * merge is given. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "common/buf.h"
#include "proxy/limitbind.h"

enum { INT8 = 20, INT2 = 21, INT4 = 23, TEXT = 25, NUMERIC = 1700 };

/* One bound value: text, or binary bytes (len >= 0), or NULL (null). */
typedef struct val {
    const char *text;
    int len; /* binary: its length; -1: text */
    const uint8_t bin[8];
    int null;
} val;

#define T(s)                                                                                                 \
    {                                                                                                        \
        (s), -1, {0}, 0                                                                                      \
    }
#define NUL                                                                                                  \
    {                                                                                                        \
        NULL, -1, {0}, 1                                                                                     \
    }
#define B2(v)                                                                                                \
    {                                                                                                        \
        NULL, 2, {(uint8_t)((v) >> 8), (uint8_t)(v)}, 0                                                      \
    }
#define B4(v)                                                                                                \
    {                                                                                                        \
        NULL, 4, {(uint8_t)((v) >> 24), (uint8_t)((v) >> 16), (uint8_t)((v) >> 8), (uint8_t)(v)}, 0          \
    }
#define B8(hi, lo)                                                                                           \
    {                                                                                                        \
        NULL, 8, {(uint8_t)((hi) >> 24), (uint8_t)((hi) >> 16), (uint8_t)((hi) >> 8), (uint8_t)(hi),         \
                  (uint8_t)((lo) >> 24), (uint8_t)((lo) >> 16), (uint8_t)((lo) >> 8), (uint8_t)(lo)},        \
            0                                                                                                \
    }

/* A Bind body after its names: nf format codes, the values, one result format (text). */
static void bind_make(pgs_buf *b, int nf, const uint16_t *fmts, int np, const val *v)
{
    pgs_buf_append_be16(b, (uint16_t)nf);
    for (int i = 0; i < nf; i++)
        pgs_buf_append_be16(b, fmts[i]);
    pgs_buf_append_be16(b, (uint16_t)np);
    for (int i = 0; i < np; i++) {
        if (v[i].null) {
            pgs_buf_append_be32(b, UINT32_MAX);
        } else if (v[i].len < 0) {
            pgs_buf_append_be32(b, (uint32_t)strlen(v[i].text));
            pgs_buf_append(b, v[i].text, strlen(v[i].text));
        } else {
            pgs_buf_append_be32(b, (uint32_t)v[i].len);
            pgs_buf_append(b, v[i].bin, (size_t)v[i].len);
        }
    }
    pgs_buf_append_be16(b, 1);
    pgs_buf_append_be16(b, 0);
}

static void types_make(pgs_buf *b, int nt, const uint32_t *types)
{
    pgs_buf_append_be16(b, (uint16_t)nt);
    for (int i = 0; i < nt; i++)
        pgs_buf_append_be32(b, types[i]);
}

/* "f0,1 | 'x',NULL,0x0005 | r1" */
static void bind_text(const pgs_buf *b, char *out, size_t cap)
{
    const uint8_t *p = b->data;
    size_t len = 0;
    uint16_t nf = pgs_be16(p);
    p += 2;
    len += (size_t)snprintf(out + len, cap - len, "f");
    for (uint16_t i = 0; i < nf; i++, p += 2)
        len += (size_t)snprintf(out + len, cap - len, "%s%u", i ? "," : "", pgs_be16(p));
    uint16_t np = pgs_be16(p);
    p += 2;
    len += (size_t)snprintf(out + len, cap - len, " |");
    for (uint16_t i = 0; i < np; i++) {
        uint32_t n = pgs_be32(p);
        p += 4;
        len += (size_t)snprintf(out + len, cap - len, "%s", i ? "," : " ");
        if (n == UINT32_MAX) {
            len += (size_t)snprintf(out + len, cap - len, "NULL");
            continue;
        }
        len += (size_t)snprintf(out + len, cap - len, "'");
        for (uint32_t k = 0; k < n; k++)
            len += (size_t)snprintf(out + len, cap - len, p[k] >= 32 && p[k] < 127 ? "%c" : "\\x%02x", p[k]);
        len += (size_t)snprintf(out + len, cap - len, "'");
        p += n;
    }
    snprintf(out + len, cap - len, " | r%u", pgs_be16(p));
}

typedef struct bind_case {
    const char *what;
    uint16_t limit_param, offset_param;
    int64_t limit, offset; /* the plan's constants */
    int grouped;
    int nt;
    uint32_t types[3];
    int nf;
    uint16_t fmts[3];
    int np;
    val vals[3];
    int rc;
    const char *shards;  /* bind_text of the shards' Bind, or NULL: the client's unchanged */
    int64_t merge_limit; /* the plan's limit and offset afterwards */
    int64_t merge_offset;
} bind_case;

static const bind_case cases[] = {
    {"plain text", 1, 0, -1, 0, 0, 0, {0}, 0, {0}, 1, {T("5")}, 0, "f0 | '5' | r1", 5, 0},
    {"limit and offset",
     2,
     3,
     -1,
     0,
     0,
     0,
     {0},
     0,
     {0},
     3,
     {T("x"), T("5"), T("7")},
     0,
     "f0,0,0 | 'x','12',NULL | r1",
     5,
     7},
    {"blanks and a sign",
     1,
     2,
     -1,
     0,
     0,
     0,
     {0},
     0,
     {0},
     2,
     {T(" +5 "), T("\t2\n")},
     0,
     "f0,0 | '7',NULL | r1",
     5,
     2},
    {"constant offset added", 1, 0, -1, 4, 0, 0, {0}, 0, {0}, 1, {T("5")}, 0, "f0 | '9' | r1", 5, 4},
    {"constant limit, offset $1", 0, 1, 3, 0, 0, 0, {0}, 0, {0}, 1, {T("6")}, 0, "f0 | NULL | r1", 3, 6},
    {"NULL limit is none",
     1,
     2,
     -1,
     0,
     0,
     0,
     {0},
     0,
     {0},
     2,
     {NUL, T("4")},
     0,
     "f0,0 | NULL,NULL | r1",
     -1,
     4},
    {"NULL offset is 0", 1, 2, -1, 0, 0, 0, {0}, 0, {0}, 2, {T("3"), NUL}, 0, "f0,0 | '3',NULL | r1", 3, 0},
    {"zero", 1, 0, -1, 0, 0, 0, {0}, 0, {0}, 1, {T("0")}, 0, "f0 | '0' | r1", 0, 0},
    {"grouped: the shards are not limited",
     1,
     2,
     -1,
     0,
     1,
     0,
     {0},
     0,
     {0},
     2,
     {T("3"), T("1")},
     0,
     "f0,0 | NULL,NULL | r1",
     3,
     1},
    {"binary int8, one format for all",
     1,
     2,
     -1,
     0,
     0,
     2,
     {INT8, INT8},
     1,
     {1},
     2,
     {B8(0, 5), B8(0, 2)},
     0,
     "f0,0 | '7',NULL | r1",
     5,
     2},
    {"binary undeclared is int8",
     1,
     0,
     -1,
     0,
     0,
     0,
     {0},
     1,
     {1},
     1,
     {B8(1, 0)},
     0,
     "f0 | '4294967296' | r1",
     4294967296LL,
     0},
    {"binary int2 and int4, per value",
     2,
     3,
     -1,
     0,
     0,
     3,
     {TEXT, INT2, INT4},
     3,
     {1, 1, 1},
     3,
     {B4(9), B2(5), B4(2)},
     0,
     "f1,0,0 | '\\x00\\x00\\x00\\x09','7',NULL | r1",
     5,
     2},
    {"int4 text",
     1,
     0,
     -1,
     0,
     0,
     1,
     {INT4},
     0,
     {0},
     1,
     {T("2147483647")},
     0,
     "f0 | '2147483647' | r1",
     2147483647LL,
     0},
    /* limit + offset past the parameter's type: the shards return everything */
    {"int4 sum overflows",
     1,
     2,
     -1,
     0,
     0,
     2,
     {INT4, INT4},
     0,
     {0},
     2,
     {T("2147483647"), T("1")},
     0,
     "f0,0 | NULL,NULL | r1",
     2147483647LL,
     1},
    {"int2 sum overflows",
     1,
     2,
     -1,
     0,
     0,
     2,
     {INT2, INT2},
     0,
     {0},
     2,
     {T("32767"), T("1")},
     0,
     "f0,0 | NULL,NULL | r1",
     32767,
     1},
    {"int8 sum overflows",
     1,
     2,
     -1,
     0,
     0,
     0,
     {0},
     0,
     {0},
     2,
     {T("9223372036854775807"), T("10")},
     0,
     "f0,0 | NULL,NULL | r1",
     INT64_MAX,
     10},
    /* the server's own errors: the Bind goes unchanged and the shards raise them */
    {"negative limit", 1, 0, -1, 0, 0, 0, {0}, 0, {0}, 1, {T("-1")}, 0, NULL, -1, 0},
    {"negative offset", 1, 2, -1, 0, 0, 0, {0}, 0, {0}, 2, {T("1"), T("-3")}, 0, NULL, -1, 0},
    {"negative binary", 1, 0, -1, 0, 0, 1, {INT4}, 1, {1}, 1, {B4(0xffffffffu)}, 0, NULL, -1, 0},
    {"negative when grouped", 1, 0, -1, 0, 1, 0, {0}, 0, {0}, 1, {T("-1")}, 0, NULL, -1, 0},
    {"int4 out of range", 1, 0, -1, 0, 0, 1, {INT4}, 0, {0}, 1, {T("2147483648")}, 0, NULL, -1, 0},
    {"int8 out of range", 1, 0, -1, 0, 0, 0, {0}, 0, {0}, 1, {T("9223372036854775808")}, 0, NULL, -1, 0},
    {"binary of the wrong width", 1, 0, -1, 0, 0, 0, {0}, 1, {1}, 1, {B4(5)}, 0, NULL, -1, 0},
    {"too few values", 2, 0, -1, 0, 0, 0, {0}, 0, {0}, 1, {T("5")}, 0, NULL, -1, 0},
    {"format code 2", 1, 0, -1, 0, 0, 0, {0}, 1, {2}, 1, {T("5")}, 0, NULL, -1, 0},
    /* what pgshard cannot read exactly */
    {"numeric", 1, 0, -1, 0, 0, 1, {NUMERIC}, 0, {0}, 1, {T("5")}, 1, NULL, -1, 0},
    {"text type", 0, 1, -1, 0, 0, 1, {TEXT}, 0, {0}, 1, {T("5")}, 1, NULL, -1, 0},
    {"not decimal", 1, 0, -1, 0, 0, 0, {0}, 0, {0}, 1, {T("0x10")}, 1, NULL, -1, 0},
    {"empty", 1, 0, -1, 0, 0, 0, {0}, 0, {0}, 1, {T("")}, 1, NULL, -1, 0},
    {"fraction", 1, 0, -1, 0, 0, 0, {0}, 0, {0}, 1, {T("1.5")}, 1, NULL, -1, 0},
};

static void test_cases(void **state)
{
    (void)state;
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        const bind_case *c = &cases[k];
        prs_scatter plan;
        memset(&plan, 0, sizeof plan);
        plan.limit_param = c->limit_param;
        plan.offset_param = c->offset_param;
        plan.limit = c->limit;
        plan.offset = c->offset;
        plan.grouped = c->grouped;
        pgs_buf bind = PGS_BUF_INIT, types = PGS_BUF_INIT, out = PGS_BUF_INIT;
        bind_make(&bind, c->nf, c->fmts, c->np, c->vals);
        types_make(&types, c->nt, c->types);
        char state6[6] = "", msg[256] = "";
        int rc =
            px_limit_bind(&plan, types.data, types.len, bind.data, bind.len, &out, state6, msg, sizeof msg);
        if (rc != c->rc)
            fail_msg("%s: rc %d, expected %d (%s)", c->what, rc, c->rc, msg);
        if (rc == 1) {
            assert_string_equal(state6, "0A000");
            assert_non_null(strstr(msg, "must be a bigint, integer or smallint parameter"));
        } else if (!c->shards) {
            if (out.len != bind.len || memcmp(out.data, bind.data, bind.len) != 0)
                fail_msg("%s: the Bind was changed", c->what);
        } else {
            char text[256];
            bind_text(&out, text, sizeof text);
            if (strcmp(text, c->shards) != 0)
                fail_msg("%s: shards get \"%s\", expected \"%s\"", c->what, text, c->shards);
            if (plan.limit != c->merge_limit || plan.offset != c->merge_offset)
                fail_msg("%s: merge limit %lld offset %lld", c->what, (long long)plan.limit,
                         (long long)plan.offset);
        }
        pgs_buf_free(&bind);
        pgs_buf_free(&types);
        pgs_buf_free(&out);
    }
}

/* A Bind cut short anywhere goes to the shards as it is (they reject it). */
static void test_truncated(void **state)
{
    (void)state;
    pgs_buf bind = PGS_BUF_INIT;
    const val v[2] = {T("5"), T("6")};
    bind_make(&bind, 0, NULL, 2, v);
    for (size_t n = 0; n < bind.len - 4; n++) { /* the last 4 bytes: the result formats */
        prs_scatter plan;
        memset(&plan, 0, sizeof plan);
        plan.limit = -1;
        plan.limit_param = 2;
        pgs_buf out = PGS_BUF_INIT;
        char st[6], msg[64];
        assert_int_equal(px_limit_bind(&plan, NULL, 0, bind.data, n, &out, st, msg, sizeof msg), 0);
        assert_int_equal(out.len, n);
        assert_int_equal(plan.limit, -1);
        pgs_buf_free(&out);
    }
    pgs_buf_free(&bind);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cases),
        cmocka_unit_test(test_truncated),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

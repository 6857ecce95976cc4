/* Tests for parser/classify.c and parser/functions.c: the query corpus in
 * data/classify_corpus.tsv (kind, read-only, flags of each line, every mismatch listed),
 * the rule that texts differing only in literal values classify identically, shard-key
 * positions, SET values, tables and names. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "parser/parser.h"

#define N(a) (sizeof(a) / sizeof((a)[0]))

static const char *const key_columns[] = {"tenant_id", "aid"};
static const prs_classify_opts key_opts = {key_columns, 2};

/* Lexes, then classifies with the lexer's output, as the proxy does. */
static int classify(const char *sql, size_t len, prs_lexed *lx, prs_query_info *qi)
{
    int lrc = prs_lex(sql, len, lx);
    return prs_classify_ex(sql, len, lrc == 0 ? lx : NULL, &key_opts, qi);
}

static void flags_text(uint32_t flags, char *out, size_t cap)
{
    size_t o = 0;
    out[0] = '\0';
    for (uint32_t b = 0; b < 32; b++) {
        const char *name = (flags & (1u << b)) ? prs_flag_name(1u << b) : NULL;
        if (!name)
            continue;
        int n = snprintf(out + o, cap - o, "%s%s", o ? "," : "", name);
        if (n < 0 || (size_t)n >= cap - o)
            return;
        o += (size_t)n;
    }
    if (o == 0)
        snprintf(out, cap, "-");
}

static int parse_flags(const char *s, size_t n, uint32_t *flags)
{
    *flags = 0;
    if (n == 1 && s[0] == '-')
        return 0;
    while (n > 0) {
        const char *comma = memchr(s, ',', n);
        size_t k = comma ? (size_t)(comma - s) : n;
        uint32_t f = prs_flag_from_name(s, k);
        if (!f)
            return -1;
        *flags |= f;
        s += k;
        n -= k;
        if (n) {
            s++;
            n--;
        }
    }
    return 0;
}

typedef struct corpus_line {
    int lineno;
    int kind;
    int read_only;
    uint32_t flags;
    const char *sql;
    size_t len;
} corpus_line;

static char *read_corpus(size_t *size)
{
    const char *dir = getenv("PGS_TEST_DATA");
    char path[1024];
    snprintf(path, sizeof path, "%s/classify_corpus.tsv", dir ? dir : "data");
    FILE *f = fopen(path, "rb");
    if (!f)
        fail_msg("cannot open %s", path);
    char *buf = NULL;
    size_t len = 0, cap = 0, got;
    do {
        if (len + 4096 + 1 > cap) {
            cap = cap ? cap * 2 : 65536;
            buf = realloc(buf, cap);
            assert_non_null(buf);
        }
        got = fread(buf + len, 1, cap - len - 1, f);
        len += got;
    } while (got > 0);
    fclose(f);
    buf[len] = '\0';
    *size = len;
    return buf;
}

/* Splits the corpus into lines; a malformed line fails the test with its number. */
static size_t parse_corpus(char *buf, corpus_line **out)
{
    size_t n = 0, cap = 0;
    corpus_line *lines = NULL;
    int lineno = 0;
    for (char *line = buf; line && *line;) {
        char *nl = strchr(line, '\n');
        if (nl)
            *nl = '\0';
        lineno++;
        char *cur = line;
        line = nl ? nl + 1 : NULL;
        if (cur[0] == '#' || cur[0] == '\0')
            continue;
        char *t1 = strchr(cur, '\t'), *t2 = t1 ? strchr(t1 + 1, '\t') : NULL,
             *t3 = t2 ? strchr(t2 + 1, '\t') : NULL;
        if (!t1 || !t2 || !t3) {
            fail_msg("corpus line %d: want 4 tab-separated columns", lineno);
            break;
        }
        corpus_line cl = {lineno, prs_kind_from_name(cur, (size_t)(t1 - cur)), -1, 0, t3 + 1, strlen(t3 + 1)};
        if (cl.kind < 0)
            fail_msg("corpus line %d: unknown kind %.*s", lineno, (int)(t1 - cur), cur);
        if (t2 - t1 == 2 && (t1[1] == '0' || t1[1] == '1'))
            cl.read_only = t1[1] - '0';
        else
            fail_msg("corpus line %d: read_only must be 0 or 1", lineno);
        if (parse_flags(t2 + 1, (size_t)(t3 - t2 - 1), &cl.flags) < 0)
            fail_msg("corpus line %d: unknown flag in %.*s", lineno, (int)(t3 - t2 - 1), t2 + 1);
        if (n == cap) {
            cap = cap ? cap * 2 : 256;
            lines = realloc(lines, cap * sizeof *lines);
            assert_non_null(lines);
        }
        lines[n++] = cl;
    }
    *out = lines;
    return n;
}

static void test_corpus(void **state)
{
    size_t size;
    char *buf = read_corpus(&size);
    corpus_line *lines;
    size_t n = parse_corpus(buf, &lines);
    if (n < 300)
        fail_msg("corpus has %zu queries, want at least 300", n);
    prs_lexed lx = PRS_LEXED_INIT;
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        const corpus_line *cl = &lines[i];
        /* An exact-size copy, so reading past the end is caught. */
        char *sql = malloc(cl->len ? cl->len : 1);
        memcpy(sql, cl->sql, cl->len);
        prs_query_info qi;
        classify(sql, cl->len, &lx, &qi);
        if (qi.kind != cl->kind || qi.read_only != cl->read_only || qi.flags != cl->flags) {
            char got[256], want[256];
            flags_text(qi.flags, got, sizeof got);
            flags_text(cl->flags, want, sizeof want);
            print_message("corpus line %d: got %s %d %s, want %s %d %s: %s\n", cl->lineno,
                          prs_kind_name(qi.kind), qi.read_only, got, prs_kind_name(cl->kind), cl->read_only,
                          want, cl->sql);
            bad++;
        }
        free(sql);
    }
    prs_lexed_free(&lx);
    free(lines);
    free(buf);
    if (bad)
        fail_msg("%d of %zu corpus queries misclassified", bad, n);
}

/* A stand-in for every literal kind, different from any value in the corpus. */
static const char *replacement(const char *sql, const prs_literal *l)
{
    switch (l->kind) {
    case PRS_LIT_NUMBER:
        return memchr(sql + l->start, '.', l->len) || memchr(sql + l->start, 'e', l->len) ||
                       memchr(sql + l->start, 'E', l->len)
                   ? "7.25"
                   : "7";
    case PRS_LIT_STRING:
        return "'o''k'";
    case PRS_LIT_ESTRING:
        return "E'\\'q'";
    case PRS_LIT_USTRING:
        return "U&'\\0041'";
    case PRS_LIT_BITSTRING:
        return "B'1'";
    case PRS_LIT_HEXSTRING:
        return "X'A'";
    default:
        return "$v$ $$ $v$";
    }
}

/* The cache serves one analysis to every text with the same normalized form, so for each
 * corpus query a copy with every literal replaced must classify to the same bytes. */
static void test_literal_values_do_not_matter(void **state)
{
    size_t size;
    char *buf = read_corpus(&size);
    corpus_line *lines;
    size_t n = parse_corpus(buf, &lines);
    prs_lexed lx = PRS_LEXED_INIT, lx2 = PRS_LEXED_INIT;
    int bad = 0, checked = 0;
    for (size_t i = 0; i < n; i++) {
        const corpus_line *cl = &lines[i];
        prs_query_info a, b;
        if (classify(cl->sql, cl->len, &lx, &a) != 0 || lx.n_lits == 0)
            continue;
        pgs_buf v = PGS_BUF_INIT;
        size_t at = 0;
        for (uint32_t k = 0; k < lx.n_lits; k++) {
            pgs_buf_append(&v, cl->sql + at, lx.lits[k].start - at);
            pgs_buf_append(&v, replacement(cl->sql, &lx.lits[k]), strlen(replacement(cl->sql, &lx.lits[k])));
            at = lx.lits[k].start + lx.lits[k].len;
        }
        pgs_buf_append(&v, cl->sql + at, cl->len - at);
        assert_false(pgs_buf_failed(&v));
        int rc = classify((const char *)v.data, v.len, &lx2, &b);
        checked++;
        /* Whole-struct compare: the struct has no padding and the classifier zeroes unused
         * pool bytes, so equal classifications are equal bytes. */
        if (rc != 0 || memcmp(&a, &b, sizeof a) != 0 || lx.hash != lx2.hash) {
            print_message("corpus line %d: classification changed with literal values (rc %d): %.*s\n",
                          cl->lineno, rc, (int)v.len, (const char *)v.data);
            bad++;
        }
        pgs_buf_free(&v);
    }
    prs_lexed_free(&lx);
    prs_lexed_free(&lx2);
    free(lines);
    free(buf);
    assert_true(checked > 150);
    if (bad)
        fail_msg("%d corpus queries depend on a literal's value", bad);
}

/* ---- shard keys ---- */

typedef struct key_want {
    int src;
    uint32_t index;
    int cond;
    int row;
    int column;
    int negated;
} key_want;

static void check_keys(const char *sql, const key_want *want, size_t n)
{
    prs_lexed lx = PRS_LEXED_INIT;
    prs_query_info qi;
    int rc = classify(sql, strlen(sql), &lx, &qi);
    if (rc != 0)
        fail_msg("%s: %s", sql, prs_strerror(rc));
    if (qi.n_keys != n)
        fail_msg("%s: %u key refs, want %zu", sql, qi.n_keys, n);
    for (size_t i = 0; i < n; i++) {
        const prs_key_ref *r = &qi.keys[i];
        if (r->src != want[i].src || r->index != want[i].index || r->cond != want[i].cond ||
            r->row != want[i].row || r->column != want[i].column || r->negated != want[i].negated)
            fail_msg("%s: ref %zu is src %d index %u cond %u row %d column %u neg %u", sql, i, r->src,
                     r->index, r->cond, r->row, r->column, r->negated);
    }
    prs_lexed_free(&lx);
}

static void test_keys_where(void **state)
{
    /* Literal index counts every literal of the text: 'x' is literal 0 here. */
    check_keys("SELECT * FROM orders WHERE name = 'x' AND tenant_id = 42",
               (key_want[]){{PRS_KEY_LITERAL, 1, 0, -1, 0, 0}}, 1);
    check_keys("SELECT * FROM orders WHERE tenant_id = $2 AND id = $1",
               (key_want[]){{PRS_KEY_PARAM, 2, 0, -1, 0, 0}}, 1);
    check_keys("SELECT * FROM orders o WHERE 42 = o.tenant_id",
               (key_want[]){{PRS_KEY_LITERAL, 0, 0, -1, 0, 0}}, 1);
    check_keys("SELECT * FROM t WHERE tenant_id = '42'::bigint",
               (key_want[]){{PRS_KEY_LITERAL, 0, 0, -1, 0, 0}}, 1);
    check_keys("SELECT * FROM t WHERE tenant_id = $1::int8", (key_want[]){{PRS_KEY_PARAM, 1, 0, -1, 0, 0}},
               1);
    check_keys("SELECT * FROM t WHERE tenant_id = - 5", (key_want[]){{PRS_KEY_LITERAL, 0, 0, -1, 0, 1}}, 1);
    check_keys("SELECT * FROM t WHERE \"tenant_id\" = E'ab'", (key_want[]){{PRS_KEY_LITERAL, 0, 0, -1, 0, 0}},
               1);
    check_keys("SELECT * FROM t WHERE tenant_id IN (1, $1, 3)",
               (key_want[]){{PRS_KEY_LITERAL, 0, 0, -1, 0, 0},
                            {PRS_KEY_PARAM, 1, 0, -1, 0, 0},
                            {PRS_KEY_LITERAL, 1, 0, -1, 0, 0}},
               3);
    check_keys("SELECT * FROM t WHERE tenant_id = ANY($1)",
               (key_want[]){{PRS_KEY_PARAM_ARRAY, 1, 0, -1, 0, 0}}, 1);
    check_keys("SELECT * FROM t WHERE tenant_id = ANY($1::bigint[])",
               (key_want[]){{PRS_KEY_PARAM_ARRAY, 1, 0, -1, 0, 0}}, 1);
    check_keys("SELECT * FROM t WHERE tenant_id = ANY('{1,2}')",
               (key_want[]){{PRS_KEY_LITERAL_ARRAY, 0, 0, -1, 0, 0}}, 1);
    check_keys("SELECT * FROM t WHERE tenant_id = ANY(ARRAY[4, 5])",
               (key_want[]){{PRS_KEY_LITERAL, 0, 0, -1, 0, 0}, {PRS_KEY_LITERAL, 1, 0, -1, 0, 0}}, 2);
    /* Two key columns, two conditions. */
    check_keys("SELECT * FROM t WHERE (tenant_id = 1 AND x > 2) AND aid = $3",
               (key_want[]){{PRS_KEY_LITERAL, 0, 0, -1, 0, 0}, {PRS_KEY_PARAM, 3, 1, -1, 1, 0}}, 2);
    check_keys("UPDATE t SET v = 1 WHERE tenant_id = 2", (key_want[]){{PRS_KEY_LITERAL, 1, 0, -1, 0, 0}}, 1);
    check_keys("DELETE FROM t WHERE tenant_id = $1", (key_want[]){{PRS_KEY_PARAM, 1, 0, -1, 0, 0}}, 1);
    check_keys("EXPLAIN ANALYZE SELECT * FROM t WHERE tenant_id = 9",
               (key_want[]){{PRS_KEY_LITERAL, 0, 0, -1, 0, 0}}, 1);
    check_keys("PREPARE p AS SELECT * FROM t WHERE tenant_id = $1",
               (key_want[]){{PRS_KEY_PARAM, 1, 0, -1, 0, 0}}, 1);
}

static void test_keys_not_taken(void **state)
{
    static const char *const none[] = {
        "SELECT * FROM t WHERE tenant_id = 1 OR id = 2",
        "SELECT * FROM t WHERE NOT (tenant_id = 1)",
        "SELECT * FROM t WHERE tenant_id <> 1",
        "SELECT * FROM t WHERE tenant_id > 1",
        "SELECT * FROM t WHERE tenant_id NOT IN (1, 2)",
        "SELECT * FROM t WHERE tenant_id IN (1, other_col)",
        "SELECT * FROM t WHERE tenant_id IN (SELECT id FROM u)",
        "SELECT * FROM t WHERE tenant_id = other_col",
        "SELECT * FROM t WHERE tenant_id = f(1)",
        "SELECT * FROM t WHERE tenant_id = NULL",
        "SELECT * FROM t WHERE tenant_id = true",
        "SELECT * FROM t WHERE tenant_id = - -5",
        "SELECT * FROM t WHERE x IN (SELECT x FROM u WHERE t.tenant_id = 5)",
        "SELECT * FROM a LEFT JOIN b ON a.tenant_id = 5",
        "SELECT * FROM a FULL JOIN b ON b.tenant_id = 5",
        "SELECT * FROM a LEFT JOIN b ON tenant_id = 5",
        "SELECT * FROM a, b WHERE x.tenant_id = 5",
        "SELECT * FROM (a JOIN b ON true) j WHERE a.tenant_id = 5",
        "SELECT * FROM a WHERE public.a.tenant_id = 5",
        "SELECT * FROM a WHERE (SELECT tenant_id) = 5",
        "SELECT * FROM t WHERE \"TENANT_ID\" = 1",
        "SELECT * FROM t WHERE tenant_id = ANY(ARRAY[1, x])",
        "INSERT INTO t VALUES (1, 2)",
        "INSERT INTO t (tenant_id) SELECT 1",
        "COPY t (tenant_id) TO STDOUT",
        "COPY t FROM STDIN",
    };
    for (size_t i = 0; i < N(none); i++)
        check_keys(none[i], NULL, 0);
}

static void test_keys_insert_and_copy(void **state)
{
    check_keys(
        "INSERT INTO t (a, tenant_id, b) VALUES (1, 10, 'x'), (2, $1, 'y'), (3, DEFAULT, 'z'), (4, -7, 'w')",
        (key_want[]){{PRS_KEY_LITERAL, 1, 0, 0, 0, 0},
                     {PRS_KEY_PARAM, 1, 1, 1, 0, 0},
                     {PRS_KEY_LITERAL, 8, 2, 3, 0, 1}},
        3);
    prs_lexed lx = PRS_LEXED_INIT;
    prs_query_info qi;
    const char *q = "INSERT INTO t (a, tenant_id) VALUES (1, 2), (3, 4), (5, f())";
    assert_int_equal(classify(q, strlen(q), &lx, &qi), 0);
    assert_int_equal(qi.insert_rows, 3);
    assert_int_equal(qi.n_keys, 2);
    check_keys("COPY t (a, b, tenant_id) FROM STDIN", (key_want[]){{PRS_KEY_COPY_COLUMN, 2, 0, -1, 0, 0}}, 1);
    prs_lexed_free(&lx);
}

static void test_keys_truncated(void **state)
{
    pgs_buf q = PGS_BUF_INIT;
    const char *head = "SELECT * FROM t WHERE tenant_id IN (";
    pgs_buf_append(&q, head, strlen(head));
    for (int i = 0; i < PRS_MAX_KEYS + 1; i++)
        pgs_buf_append(&q, i ? ",1" : "1", i ? 2 : 1);
    pgs_buf_append(&q, ")", 1);
    prs_lexed lx = PRS_LEXED_INIT;
    prs_query_info qi;
    assert_int_equal(classify((const char *)q.data, q.len, &lx, &qi), 0);
    /* All or nothing: a partial IN list would name too few shards. */
    assert_int_equal(qi.n_keys, 0);
    assert_true(qi.flags & PRS_F_KEYS_TRUNCATED);
    pgs_buf_free(&q);

    const char *ins = "INSERT INTO t (tenant_id) VALUES (1)";
    pgs_buf_append(&q, ins, strlen(ins));
    for (int i = 0; i < PRS_MAX_KEYS + 5; i++)
        pgs_buf_append(&q, ",(2)", 4);
    assert_int_equal(classify((const char *)q.data, q.len, &lx, &qi), 0);
    assert_int_equal(qi.n_keys, PRS_MAX_KEYS);
    assert_int_equal(qi.insert_rows, PRS_MAX_KEYS + 6);
    assert_true(qi.flags & PRS_F_KEYS_TRUNCATED);
    pgs_buf_free(&q);
    prs_lexed_free(&lx);
}

static void test_keys_multi_statement(void **state)
{
    prs_lexed lx = PRS_LEXED_INIT;
    prs_query_info qi;
    const char *q = "UPDATE t SET a = 1 WHERE tenant_id = 5; DELETE FROM u WHERE tenant_id = $1";
    assert_int_equal(classify(q, strlen(q), &lx, &qi), 0);
    assert_int_equal(qi.n_keys, 2);
    assert_int_equal(qi.keys[0].stmt, 0);
    assert_int_equal(qi.keys[0].index, 1);
    assert_int_equal(qi.keys[1].stmt, 1);
    assert_int_equal(qi.keys[1].src, PRS_KEY_PARAM);
    assert_int_not_equal(qi.keys[0].cond, qi.keys[1].cond);
    prs_lexed_free(&lx);
}

/* Without key columns, or with prs_classify(), no refs are produced at all. */
static void test_no_key_columns(void **state)
{
    prs_query_info qi;
    const char *q = "SELECT * FROM t WHERE tenant_id = 1";
    assert_int_equal(prs_classify(q, strlen(q), &qi), 0);
    assert_int_equal(qi.n_keys, 0);
    assert_int_equal(qi.kind, PRS_KIND_SELECT);
}

/* Statements PostgreSQL refuses inside a transaction block are flagged (atomic DDL over
 * shards wraps the others in one). */
static void test_no_txn_block(void **state)
{
    (void)state;
    static const struct {
        const char *sql;
        bool flagged;
    } cases[] = {
        {"VACUUM t", true},
        {"ANALYZE t", false},
        {"CREATE INDEX CONCURRENTLY i ON t (a)", true},
        {"CREATE INDEX i ON t (a)", false},
        {"DROP INDEX CONCURRENTLY i", true},
        {"DROP INDEX i", false},
        {"REINDEX TABLE t", true},
        {"CREATE DATABASE d", true},
        {"ALTER SYSTEM SET work_mem = '1MB'", true},
        {"CREATE TABLE t (a int); CREATE INDEX CONCURRENTLY i ON t (a)", true},
        {"CREATE TABLE t (a int)", false},
        {"ALTER TABLE t ADD COLUMN b int", false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        prs_query_info qi;
        assert_int_equal(prs_classify(cases[i].sql, strlen(cases[i].sql), &qi), 0);
        if (((qi.flags & PRS_F_NO_TXN_BLOCK) != 0) != cases[i].flagged)
            fail_msg("%s: PRS_F_NO_TXN_BLOCK %s", cases[i].sql, cases[i].flagged ? "missing" : "set");
    }
}

/* ---- relation occurrences and the slots key conditions restrict ---- */

static void classify_ok(const char *sql, prs_lexed *lx, prs_query_info *qi)
{
    int rc = classify(sql, strlen(sql), lx, qi);
    if (rc != 0)
        fail_msg("%s: %s", sql, prs_strerror(rc));
}

/* The slot of occurrence occ's key column col, or -1. */
static int slot_of(const prs_query_info *qi, int occ, int col)
{
    for (int i = 0; i < qi->n_slots; i++)
        if (!qi->slots[i].cands && qi->slots[i].occ == occ && qi->slots[i].column == col)
            return i;
    return -1;
}

/* Whether the restrictions of occurrence a's key column reach occurrence b's. */
static bool reaches(const prs_query_info *qi, int a, int b)
{
    int sa = slot_of(qi, a, 0), sb = slot_of(qi, b, 0);
    return sa >= 0 && sb >= 0 && ((qi->slots[sb].from >> sa) & 1);
}

static void test_occurrences(void **state)
{
    prs_lexed lx = PRS_LEXED_INIT;
    prs_query_info qi;
    classify_ok("SELECT * FROM orders o JOIN users u ON u.tenant_id = o.tenant_id WHERE o.tenant_id = 1", &lx,
                &qi);
    assert_int_equal(qi.n_occs, 2);
    assert_string_equal(prs_info_str(&qi, qi.occs[0].alias), "o");
    assert_string_equal(prs_info_str(&qi, qi.tables[qi.occs[1].table].name), "users");
    assert_int_equal(qi.n_keys, 1);
    assert_int_equal(qi.keys[0].slot, slot_of(&qi, 0, 0));
    assert_true(reaches(&qi, 0, 1) && reaches(&qi, 1, 0));

    /* An outer join's ON reaches only into its nullable side; FULL nowhere. */
    classify_ok("SELECT * FROM users u LEFT JOIN orders o ON o.tenant_id = u.tenant_id", &lx, &qi);
    assert_true(reaches(&qi, 0, 1) && !reaches(&qi, 1, 0));
    classify_ok("SELECT * FROM users u RIGHT JOIN orders o ON o.tenant_id = u.tenant_id", &lx, &qi);
    assert_true(!reaches(&qi, 0, 1) && reaches(&qi, 1, 0));
    classify_ok("SELECT * FROM users u FULL JOIN orders o ON o.tenant_id = u.tenant_id", &lx, &qi);
    assert_true(!reaches(&qi, 0, 1) && !reaches(&qi, 1, 0));
    /* Through a third occurrence, to a fixed point. */
    classify_ok("SELECT * FROM a, b, c WHERE c.tenant_id = b.tenant_id AND b.tenant_id = a.tenant_id", &lx,
                &qi);
    assert_true(reaches(&qi, 0, 2) && reaches(&qi, 2, 0));

    /* A correlated equality reaches inwards only. */
    classify_ok("SELECT * FROM orders o WHERE EXISTS (SELECT 1 FROM items i WHERE i.tenant_id = o.tenant_id)",
                &lx, &qi);
    assert_int_equal(qi.n_occs, 2);
    assert_true(reaches(&qi, 0, 1) && !reaches(&qi, 1, 0));

    /* A CTE's name is not an occurrence; its body's relations are. The same name in another
     * scope is a table. */
    classify_ok("WITH c AS (SELECT * FROM orders WHERE tenant_id = 1) SELECT * FROM c", &lx, &qi);
    assert_int_equal(qi.n_occs, 1);
    assert_int_equal(qi.keys[0].slot, slot_of(&qi, 0, 0));
    classify_ok("SELECT * FROM x WHERE EXISTS (WITH x AS (SELECT 1) SELECT * FROM x)", &lx, &qi);
    assert_int_equal(qi.n_occs, 1);
    assert_int_equal(qi.n_tables, 1);
    assert_string_equal(prs_info_str(&qi, qi.tables[qi.occs[0].table].name), "x");

    /* An unqualified key column of a FROM of several relations: decided at route time. */
    classify_ok("SELECT * FROM orders, tenants t WHERE tenant_id = $1", &lx, &qi);
    assert_int_equal(qi.n_slots, 1);
    assert_int_equal(qi.slots[0].cands, 3);
    assert_int_equal(qi.slots[0].occ, PRS_NO_OCC);
    assert_int_equal(qi.keys[0].slot, 0);

    /* What targets say. */
    classify_ok("INSERT INTO orders (tenant_id) VALUES (1)", &lx, &qi);
    assert_int_equal(qi.occs[0].flags, PRS_OCC_WRITTEN | PRS_OCC_VALUES);
    classify_ok("INSERT INTO orders (tenant_id) SELECT tenant_id FROM users WHERE tenant_id = 1", &lx, &qi);
    assert_int_equal(qi.occs[0].flags, PRS_OCC_WRITTEN | PRS_OCC_UNPROVEN);
    assert_int_equal(qi.occs[1].flags, 0);
    classify_ok("DELETE FROM orders USING users u WHERE u.tenant_id = orders.tenant_id", &lx, &qi);
    assert_int_equal(qi.occs[0].flags, PRS_OCC_WRITTEN);
    assert_true(reaches(&qi, 1, 0));
    prs_lexed_free(&lx);
}

/* More occurrences than occs[] holds, or a relation the analysis does not place: flagged,
 * so the proxy refuses rather than route on a partial picture. */
static void test_occurrences_truncated(void **state)
{
    pgs_buf q = PGS_BUF_INIT;
    pgs_buf_append(&q, "SELECT * FROM t WHERE tenant_id = 1", 35);
    for (int i = 0; i < PRS_MAX_OCCS; i++)
        pgs_buf_append(&q, " AND EXISTS (SELECT 1 FROM t)", 29);
    prs_lexed lx = PRS_LEXED_INIT;
    prs_query_info qi;
    assert_int_equal(classify((const char *)q.data, q.len, &lx, &qi), 0);
    assert_true(qi.flags & PRS_F_OCCS_TRUNCATED);
    assert_int_equal(qi.n_occs, 0);
    assert_int_equal(qi.n_keys, 1);
    assert_int_equal(qi.keys[0].slot, PRS_NO_SLOT);
    pgs_buf_free(&q);
    classify_ok("SELECT * FROM t WHERE tenant_id = 1 AND EXISTS (SELECT 1 FROM t)", &lx, &qi);
    assert_false(qi.flags & PRS_F_OCCS_TRUNCATED);
    assert_int_equal(qi.n_occs, 2);
    prs_lexed_free(&lx);
}

/* ---- other fields ---- */

static void test_set_values(void **state)
{
    static const struct {
        const char *sql;
        const char *name, *value;
        int lit;
        uint32_t flags;
    } cases[] = {
        {"SET statement_timeout = 5000", "statement_timeout", NULL, 0, 0},
        {"SET search_path TO public", "search_path", "public", -1, 0},
        {"SET search_path TO a, b", "search_path", NULL, -1, 0},
        {"SET LOCAL lock_timeout TO DEFAULT", "lock_timeout", "DEFAULT", -1, PRS_F_SET_LOCAL},
        {"SET x = -5", "x", NULL, -1, 0},
        {"SET TIME ZONE 'UTC'", "timezone", NULL, 0, 0},
        {"SET pgshard.tenant = 'acme'", "pgshard.tenant", NULL, 0, PRS_F_PGSHARD_VAR},
        {"SET pgshard.target = replica", "pgshard.target", "replica", -1, PRS_F_PGSHARD_VAR},
        {"SET pgshard.target = PRIMARY;", "pgshard.target", "primary", -1, PRS_F_PGSHARD_VAR},
        {"set local PgShard.Target to Any", "pgshard.target", "any", -1, PRS_F_PGSHARD_VAR | PRS_F_SET_LOCAL},
        {"SET SESSION pgshard.max_lag_ms = 250", "pgshard.max_lag_ms", NULL, 0, PRS_F_PGSHARD_VAR},
        {"RESET pgshard.target", "pgshard.target", NULL, -1, PRS_F_PGSHARD_VAR},
        {"SHOW pgshard.max_lag_ms", "pgshard.max_lag_ms", NULL, -1, PRS_F_PGSHARD_VAR},
        {"RESET ALL", NULL, NULL, -1, 0},
    };
    prs_lexed lx = PRS_LEXED_INIT;
    for (size_t i = 0; i < N(cases); i++) {
        prs_query_info qi;
        int rc = classify(cases[i].sql, strlen(cases[i].sql), &lx, &qi);
        if (rc != 0)
            fail_msg("%s: %s", cases[i].sql, prs_strerror(rc));
        const char *name = prs_info_str(&qi, qi.set_name), *value = prs_info_str(&qi, qi.set_value);
        if ((name == NULL) != (cases[i].name == NULL) || (name && strcmp(name, cases[i].name) != 0) ||
            (value == NULL) != (cases[i].value == NULL) || (value && strcmp(value, cases[i].value) != 0) ||
            qi.set_value_lit != cases[i].lit || qi.flags != cases[i].flags || !qi.read_only)
            fail_msg("%s: name %s value %s lit %d flags %x", cases[i].sql, name ? name : "-",
                     value ? value : "-", qi.set_value_lit, qi.flags);
    }
    /* The literal's value is read with the lexer, from the text at hand. */
    const char *q = "SET pgshard.tenant = E'acme\\'s'";
    prs_query_info qi;
    assert_int_equal(classify(q, strlen(q), &lx, &qi), 0);
    pgs_buf v = PGS_BUF_INIT;
    assert_int_equal(prs_literal_value(q, strlen(q), &lx.lits[qi.set_value_lit], &v), 0);
    assert_int_equal(v.len, 6);
    assert_memory_equal(v.data, "acme's", 6);
    pgs_buf_free(&v);
    prs_lexed_free(&lx);
}

/* Session state that pins a server in transaction pooling, and what removes it. */
static void test_pins(void **state)
{
    (void)state;
    static const struct {
        const char *sql;
        uint8_t pin, unpin;
        bool read_only;
    } cases[] = {
        {"CREATE TEMP TABLE t (x int)", PRS_PIN_TEMP, 0, false},
        {"CREATE TEMPORARY TABLE t (x int) ON COMMIT DROP", 0, 0, false},
        {"CREATE TEMP TABLE t (x int) ON COMMIT DELETE ROWS", PRS_PIN_TEMP, 0, false},
        {"SELECT * FROM pg_temp.t", PRS_PIN_TEMP, 0, false},
        {"CREATE TABLE t (x int)", 0, 0, false},
        {"DECLARE c CURSOR WITH HOLD FOR SELECT 1", PRS_PIN_HOLD_CURSOR, 0, false},
        {"DECLARE c CURSOR FOR SELECT 1", 0, 0, true},
        {"CLOSE ALL", 0, PRS_PIN_HOLD_CURSOR, true},
        {"CLOSE c", 0, 0, true},
        {"SELECT pg_advisory_lock(7)", PRS_PIN_ADVISORY, 0, false},
        {"SELECT pg_try_advisory_lock_shared(1, 2)", PRS_PIN_ADVISORY, 0, false},
        {"SELECT pg_advisory_xact_lock(7)", 0, 0, false},
        {"SELECT pg_advisory_unlock(7)", 0, 0, false},
        {"SELECT pg_advisory_unlock_all()", 0, PRS_PIN_ADVISORY, false},
        {"LISTEN ch", PRS_PIN_LISTEN, 0, false},
        {"UNLISTEN ch", 0, 0, true},
        {"UNLISTEN *", 0, PRS_PIN_LISTEN, true},
        {"SELECT set_config('work_mem', '8MB', false)", PRS_PIN_SET_CONFIG, 0, false},
        {"SELECT set_config('work_mem', '8MB', $1)", PRS_PIN_SET_CONFIG, 0, false},
        {"SELECT set_config('work_mem', '8MB', true)", 0, 0, false},
        {"SELECT set_config('work_mem', '8MB', 'on'::boolean)", 0, 0, false},
        {"DISCARD ALL", 0, PRS_PIN_ALL, true},
        {"DISCARD TEMP", 0, PRS_PIN_TEMP, true},
        {"DISCARD PLANS", 0, 0, true},
        {"SELECT 1; LISTEN a; SELECT pg_advisory_lock(1)", PRS_PIN_LISTEN | PRS_PIN_ADVISORY, 0, false},
    };
    prs_lexed lx = PRS_LEXED_INIT;
    for (size_t i = 0; i < N(cases); i++) {
        prs_query_info qi;
        int rc = classify(cases[i].sql, strlen(cases[i].sql), &lx, &qi);
        if (rc != 0)
            fail_msg("%s: %s", cases[i].sql, prs_strerror(rc));
        if (qi.pin != cases[i].pin || qi.unpin != cases[i].unpin || qi.read_only != cases[i].read_only)
            fail_msg("%s: pin %x unpin %x read_only %d", cases[i].sql, qi.pin, qi.unpin, qi.read_only);
    }
    prs_lexed_free(&lx);
}

static void check_tables(const char *sql, const char *const *want, size_t n)
{
    prs_lexed lx = PRS_LEXED_INIT;
    prs_query_info qi;
    assert_int_equal(classify(sql, strlen(sql), &lx, &qi), 0);
    if (qi.n_tables != n)
        fail_msg("%s: %u tables, want %zu", sql, qi.n_tables, n);
    /* In any order: the walk follows the tree, not the text. */
    for (size_t i = 0; i < n; i++) {
        bool found = false;
        for (size_t j = 0; j < qi.n_tables && !found; j++) {
            char full[256];
            const char *schema = prs_info_str(&qi, qi.tables[j].schema);
            snprintf(full, sizeof full, "%s%s%s", schema ? schema : "", schema ? "." : "",
                     prs_info_str(&qi, qi.tables[j].name));
            found = strcmp(full, want[i]) == 0;
        }
        if (!found)
            fail_msg("%s: table %s not reported", sql, want[i]);
    }
    prs_lexed_free(&lx);
}

static void test_tables(void **state)
{
    check_tables("SELECT * FROM orders o JOIN app.lines l ON l.oid = o.id JOIN orders o2 ON true",
                 (const char *const[]){"orders", "app.lines"}, 2);
    check_tables("WITH x AS (SELECT * FROM a) SELECT * FROM x, b, public.x",
                 (const char *const[]){"a", "b", "public.x"}, 3);
    check_tables("INSERT INTO \"Weird Name\" SELECT * FROM src", (const char *const[]){"Weird Name", "src"},
                 2);
    check_tables("UPDATE t SET a = 1 FROM u WHERE t.id = u.id; DELETE FROM v",
                 (const char *const[]){"t", "u", "v"}, 3);
    check_tables("LOCK TABLE a, b", (const char *const[]){"a", "b"}, 2);
    check_tables("COPY s.t FROM STDIN", (const char *const[]){"s.t"}, 1);
    check_tables("SELECT 1", NULL, 0);

    pgs_buf q = PGS_BUF_INIT;
    pgs_buf_append(&q, "SELECT * FROM t0", 16);
    for (int i = 1; i < PRS_MAX_TABLES + 4; i++) {
        char part[32];
        int n = snprintf(part, sizeof part, ", t%d", i);
        pgs_buf_append(&q, part, (size_t)n);
    }
    prs_lexed lx = PRS_LEXED_INIT;
    prs_query_info qi;
    assert_int_equal(classify((const char *)q.data, q.len, &lx, &qi), 0);
    assert_int_equal(qi.n_tables, PRS_MAX_TABLES);
    assert_true(qi.flags & PRS_F_TABLES_TRUNCATED);
    assert_true(qi.read_only);
    pgs_buf_free(&q);
    prs_lexed_free(&lx);
}

static void test_names_and_isolation(void **state)
{
    static const struct {
        const char *sql;
        const char *object;
        int isolation;
    } cases[] = {
        {"PREPARE get_it (int) AS SELECT $1", "get_it", 0},
        {"EXECUTE get_it(1)", "get_it", 0},
        {"DEALLOCATE get_it", "get_it", 0},
        {"DEALLOCATE ALL", NULL, 0},
        {"LISTEN \"Jobs\"", "Jobs", 0},
        {"NOTIFY jobs, 'x'", "jobs", 0},
        {"SAVEPOINT s1", "s1", 0},
        {"ROLLBACK TO SAVEPOINT s1", "s1", 0},
        {"DECLARE cur CURSOR FOR SELECT 1", "cur", 0},
        {"FETCH 10 FROM cur", "cur", 0},
        {"PREPARE TRANSACTION 'gid'", NULL, 0},
        {"BEGIN ISOLATION LEVEL SERIALIZABLE", NULL, PRS_ISO_SERIALIZABLE},
        {"START TRANSACTION ISOLATION LEVEL READ COMMITTED", NULL, PRS_ISO_READ_COMMITTED},
        {"SET TRANSACTION ISOLATION LEVEL REPEATABLE READ", NULL, PRS_ISO_REPEATABLE_READ},
        {"BEGIN ISOLATION LEVEL READ UNCOMMITTED", NULL, PRS_ISO_READ_UNCOMMITTED},
        /* the session's default, not a transaction's level */
        {"SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE", NULL, 0},
    };
    prs_lexed lx = PRS_LEXED_INIT;
    for (size_t i = 0; i < N(cases); i++) {
        prs_query_info qi;
        assert_int_equal(classify(cases[i].sql, strlen(cases[i].sql), &lx, &qi), 0);
        const char *obj = prs_info_str(&qi, qi.object_name);
        if ((obj == NULL) != (cases[i].object == NULL) || (obj && strcmp(obj, cases[i].object) != 0) ||
            qi.isolation != cases[i].isolation)
            fail_msg("%s: object %s isolation %d", cases[i].sql, obj ? obj : "-", qi.isolation);
    }
    prs_lexed_free(&lx);
}

static void test_kind_mask_and_multi(void **state)
{
    prs_lexed lx = PRS_LEXED_INIT;
    prs_query_info qi;
    const char *q = "BEGIN; SELECT 1; COMMIT";
    assert_int_equal(classify(q, strlen(q), &lx, &qi), 0);
    assert_int_equal(qi.n_statements, 3);
    assert_int_equal(qi.kind, PRS_KIND_BEGIN);
    assert_true(qi.kind_mask ==
                ((1ull << PRS_KIND_BEGIN) | (1ull << PRS_KIND_SELECT) | (1ull << PRS_KIND_COMMIT)));
    prs_lexed_free(&lx);
}

static void test_errors(void **state)
{
    prs_query_info qi;
    assert_int_equal(prs_classify("SELEC 1", 7, &qi), PRS_ESYNTAX);
    assert_int_equal(qi.kind, PRS_KIND_UNKNOWN);
    assert_false(qi.read_only);
    assert_int_equal(prs_classify("SELECT 'x", 9, &qi), PRS_EUNTERM_STRING);
    assert_false(qi.read_only);
    assert_int_equal(prs_classify("SELECT 1\0; DROP TABLE t", 23, &qi), PRS_ENUL);
    assert_false(qi.read_only);
    assert_int_equal(prs_classify(NULL, 3, &qi), PRS_EINVAL);
    assert_int_equal(prs_classify(NULL, 0, &qi), 0);
    assert_int_equal(qi.kind, PRS_KIND_EMPTY);
    assert_int_equal(prs_classify("x", 1, NULL), PRS_EINVAL);
}

/* Text that would build a tree deep enough to overflow libpg_query's or protobuf-c's
 * recursion is refused before parsing, and goes to the primary. */
static void test_deep_nesting(void **state)
{
    static const int sizes[] = {3000, 60000};
    for (size_t s = 0; s < N(sizes); s++) {
        pgs_buf q = PGS_BUF_INIT;
        pgs_buf_append(&q, "SELECT ", 7);
        for (int i = 0; i < sizes[s]; i++)
            pgs_buf_append(&q, "1+", 2);
        pgs_buf_append(&q, "1", 1);
        prs_query_info qi;
        assert_int_equal(prs_classify((const char *)q.data, q.len, &qi), PRS_ETOOCOMPLEX);
        assert_false(qi.read_only);
        assert_int_equal(qi.kind, PRS_KIND_UNKNOWN);
        pgs_buf_free(&q);
    }
}

/* Shapes that nest one tree level per token or bracket, repeated up to the limit. */
static const struct {
    const char *head, *unit, *middle, *close;
    int cost; /* nesting estimate per repetition */
} deep_shapes[] = {
    {"SELECT ", "NOT ", "true", "", 1},
    {"SELECT ", "1+", "1", "", 1},
    {"SELECT ", "- ", "x", "", 1},
    {"SELECT 1", "::int", "", "", 1},
    {"SELECT x", " IS NULL", "", "", 1},
    {"SELECT * FROM t0", " JOIN t ON true", "", "", 1},
    {"SELECT 1", " UNION SELECT 1", "", "", 1},
    {"SELECT ", "CASE WHEN x THEN ", "1", " END", 2},
    {"SELECT ", "(SELECT ", "1", ")", 4},
    {"SELECT ", "f(", "1", ")", 4},
    {"SELECT ", "ARRAY[", "1", "]", 4},
    {"SELECT * FROM t WHERE ", "x IN (SELECT y FROM t WHERE ", "true", ")", 5},
};

static char *deep_text(size_t shape, int reps)
{
    pgs_buf q = PGS_BUF_INIT;
    pgs_buf_append(&q, deep_shapes[shape].head, strlen(deep_shapes[shape].head));
    for (int i = 0; i < reps; i++)
        pgs_buf_append(&q, deep_shapes[shape].unit, strlen(deep_shapes[shape].unit));
    pgs_buf_append(&q, deep_shapes[shape].middle, strlen(deep_shapes[shape].middle));
    for (int i = 0; i < reps; i++)
        pgs_buf_append(&q, deep_shapes[shape].close, strlen(deep_shapes[shape].close));
    pgs_buf_append(&q, "", 1);
    assert_false(pgs_buf_failed(&q));
    return (char *)q.data;
}

static void *classify_deep_shapes(void *arg)
{
    int *failures = arg;
    prs_lexed lx = PRS_LEXED_INIT;
    for (size_t s = 0; s < N(deep_shapes); s++) {
        int reps = (PRS_MAX_NESTING - 8) / deep_shapes[s].cost;
        char *q = deep_text(s, reps);
        prs_query_info qi;
        int rc = classify(q, strlen(q), &lx, &qi);
        if (rc != 0 || lx.max_nesting > PRS_MAX_NESTING) {
            print_message("shape %zu x%d: rc %d nesting %u\n", s, reps, rc, lx.max_nesting);
            (*failures)++;
        }
        free(q);
        q = deep_text(s, PRS_MAX_NESTING + 1);
        if (prs_lex(q, strlen(q), &lx) != 0 || lx.max_nesting <= PRS_MAX_NESTING) {
            print_message("shape %zu over the limit: nesting %u\n", s, lx.max_nesting);
            (*failures)++;
        }
        free(q);
    }
    prs_lexed_free(&lx);
    return NULL;
}

/* Everything up to PRS_MAX_NESTING parses on a 2 MiB stack, the size libuv gives its
 * threads when the stack rlimit is unlimited; one level more is refused. */
static void test_nesting_limit_fits_worker_stack(void **state)
{
    pthread_attr_t attr;
    pthread_t t;
    int failures = 0;
    assert_int_equal(pthread_attr_init(&attr), 0);
    assert_int_equal(pthread_attr_setstacksize(&attr, 2u << 20), 0);
    assert_int_equal(pthread_create(&t, &attr, classify_deep_shapes, &failures), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    pthread_attr_destroy(&attr);
    assert_int_equal(failures, 0);
}

static void test_safe_function_table(void **state)
{
    size_t n;
    const char *const *names = prs_safe_functions(&n);
    assert_true(n >= 150);
    for (size_t i = 1; i < n; i++)
        if (strcmp(names[i - 1], names[i]) >= 0)
            fail_msg("safe function table not sorted at %s, %s", names[i - 1], names[i]);
    for (size_t i = 0; i < n; i++)
        assert_true(prs_function_is_safe(names[i]));
    static const char *const never[] = {"nextval",    "setval",    "pg_advisory_lock",   "txid_current",
                                        "set_config", "pg_notify", "pg_current_wal_lsn", "lo_import",
                                        "dblink"};
    for (size_t i = 0; i < N(never); i++)
        assert_false(prs_function_is_safe(never[i]));
}

static void test_names_tables(void **state)
{
    for (int k = 0; k < PRS_KIND__COUNT; k++) {
        const char *name = prs_kind_name((prs_kind)k);
        assert_non_null(name);
        assert_int_equal(prs_kind_from_name(name, strlen(name)), k);
    }
    assert_null(prs_kind_name(PRS_KIND__COUNT));
    assert_int_equal(prs_kind_from_name("nope", 4), -1);
    for (uint32_t b = 0; b <= 18; b++) {
        const char *name = prs_flag_name(1u << b);
        assert_non_null(name);
        assert_int_equal(prs_flag_from_name(name, strlen(name)), 1u << b);
    }
    assert_int_equal(prs_flag_from_name("nope", 4), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_corpus),
        cmocka_unit_test(test_literal_values_do_not_matter),
        cmocka_unit_test(test_keys_where),
        cmocka_unit_test(test_keys_not_taken),
        cmocka_unit_test(test_keys_insert_and_copy),
        cmocka_unit_test(test_keys_truncated),
        cmocka_unit_test(test_keys_multi_statement),
        cmocka_unit_test(test_no_key_columns),
        cmocka_unit_test(test_no_txn_block),
        cmocka_unit_test(test_occurrences),
        cmocka_unit_test(test_occurrences_truncated),
        cmocka_unit_test(test_set_values),
        cmocka_unit_test(test_pins),
        cmocka_unit_test(test_tables),
        cmocka_unit_test(test_names_and_isolation),
        cmocka_unit_test(test_kind_mask_and_multi),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_deep_nesting),
        cmocka_unit_test(test_nesting_limit_fits_worker_stack),
        cmocka_unit_test(test_safe_function_table),
        cmocka_unit_test(test_names_tables),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

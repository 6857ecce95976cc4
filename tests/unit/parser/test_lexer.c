/* Tests for parser/lexer.c: quoting edge cases, comments and hints, statement counts,
 * errors on unterminated input, literal values, and that texts differing only in their
 * literals share one normalized text and hash. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "parser/lexer.h"

typedef struct lit_want {
    const char *raw;   /* the literal's bytes in the text */
    const char *value; /* what prs_literal_value gives, NULL to skip */
    int kind;
} lit_want;

/* Lexes sql and checks the normalized text and each literal. The text is copied into a
 * buffer of exactly its length, so ASan catches any read past the end. */
static void check_lex(const char *sql, const char *norm, const lit_want *lits, size_t n_lits)
{
    size_t len = strlen(sql);
    char *copy = malloc(len ? len : 1);
    assert_non_null(copy);
    memcpy(copy, sql, len); // NOLINT(bugprone-not-null-terminated-result): exact size on purpose
    prs_lexed lx = PRS_LEXED_INIT;
    int rc = prs_lex(copy, len, &lx);
    if (rc != 0)
        fail_msg("prs_lex(%s) = %s", sql, prs_strerror(rc));
    if (prs_lexed_len(&lx) != strlen(norm) || memcmp(prs_lexed_text(&lx), norm, strlen(norm)) != 0)
        fail_msg("prs_lex(%s): normalized [%.*s], want [%s]", sql, (int)prs_lexed_len(&lx),
                 prs_lexed_text(&lx), norm);
    assert_int_equal(lx.n_lits, n_lits);
    for (size_t i = 0; i < n_lits; i++) {
        const prs_literal *l = &lx.lits[i];
        assert_int_equal(l->len, strlen(lits[i].raw));
        assert_memory_equal(copy + l->start, lits[i].raw, l->len);
        assert_int_equal(l->kind, lits[i].kind);
        assert_int_equal(prs_lexed_find(&lx, l->start), (int)i);
        if (!lits[i].value)
            continue;
        pgs_buf v = PGS_BUF_INIT;
        assert_int_equal(prs_literal_value(copy, len, l, &v), 0);
        assert_int_equal(v.len, strlen(lits[i].value));
        if (v.len)
            assert_memory_equal(v.data, lits[i].value, v.len);
        pgs_buf_free(&v);
    }
    prs_lexed_free(&lx);
    free(copy);
}

static int lex_rc(const char *sql)
{
    size_t len = strlen(sql);
    char *copy = malloc(len ? len : 1);
    memcpy(copy, sql, len); // NOLINT(bugprone-not-null-terminated-result): exact size on purpose
    prs_lexed lx = PRS_LEXED_INIT;
    int rc = prs_lex(copy, len, &lx);
    if (rc != 0) {
        assert_int_equal(lx.n_lits, 0);
        assert_int_equal(prs_lexed_len(&lx), 0);
    }
    prs_lexed_free(&lx);
    free(copy);
    return rc;
}

#define N(a) (sizeof(a) / sizeof((a)[0]))

static void test_simple(void **state)
{
    static const lit_want l[] = {{"17", "17", PRS_LIT_NUMBER}, {"'x'", "x", PRS_LIT_STRING}};
    check_lex("SELECT  *\n\tFROM t WHERE a = 17 AND b = 'x'", "SELECT * FROM t WHERE a = ? AND b = ?", l,
              N(l));
    check_lex("", "", NULL, 0);
    check_lex("   \n ", "", NULL, 0);
}

static void test_doubled_quotes(void **state)
{
    static const lit_want l[] = {
        {"'it''s'", "it's", PRS_LIT_STRING}, {"''''", "'", PRS_LIT_STRING}, {"''", "", PRS_LIT_STRING}};
    check_lex("select 'it''s', '''', ''", "select ?, ?, ?", l, N(l));
    /* A backslash does nothing in a standard string: the quote after it ends the string. */
    static const lit_want l2[] = {{"'a\\'", "a\\", PRS_LIT_STRING}};
    check_lex("select 'a\\' as x", "select ? as x", l2, N(l2));
}

static void test_escape_strings(void **state)
{
    static const lit_want l[] = {
        {"E'\\''", "'", PRS_LIT_ESTRING},
        {"e'a\\nb\\tc'", "a\nb\tc", PRS_LIT_ESTRING},
        {"E'it''s \\\\'", "it's \\", PRS_LIT_ESTRING},
        {"E'\\x41\\101\\u00e9\\U0001F600'", "AA\xc3\xa9\xf0\x9f\x98\x80", PRS_LIT_ESTRING},
        {"E'\\uD83D\\uDE00'", "\xf0\x9f\x98\x80", PRS_LIT_ESTRING}};
    check_lex(
        "SELECT E'\\'', e'a\\nb\\tc', E'it''s \\\\', E'\\x41\\101\\u00e9\\U0001F600', E'\\uD83D\\uDE00'",
        "SELECT ?, ?, ?, ?, ?", l, N(l));
    /* An identifier ending in e is not an E'' prefix. */
    static const lit_want l2[] = {{"'x'", "x", PRS_LIT_STRING}};
    check_lex("select date'x'", "select date?", l2, N(l2));
}

static void test_other_strings(void **state)
{
    static const lit_want l[] = {{"U&'d\\0061t\\+000061'", "data", PRS_LIT_USTRING},
                                 {"U&'d!0061t' UESCAPE '!'", "dat", PRS_LIT_USTRING},
                                 {"B'1010'", "1010", PRS_LIT_BITSTRING},
                                 {"x'1F'", "1F", PRS_LIT_HEXSTRING},
                                 {"'nat'", "nat", PRS_LIT_STRING}};
    check_lex("select U&'d\\0061t\\+000061', U&'d!0061t' UESCAPE '!', B'1010', x'1F', N'nat', U&\"c\"",
              "select ?, ?, ?, ?, N?, U&\"c\"", l, N(l));
}

static void test_continuation(void **state)
{
    /* Joined only across a newline, as PostgreSQL does. */
    static const lit_want l[] = {
        {"'a'\n  'b'", "ab", PRS_LIT_STRING}, {"'c'", "c", PRS_LIT_STRING}, {"'d'", "d", PRS_LIT_STRING}};
    check_lex("select 'a'\n  'b', 'c' 'd'", "select ?, ? ?", l, N(l));
    static const lit_want l2[] = {{"E'\\n'\r\n'\\t'", "\n\t", PRS_LIT_ESTRING}};
    check_lex("select E'\\n'\r\n'\\t'", "select ?", l2, N(l2));
}

static void test_dollar_quotes(void **state)
{
    static const lit_want l[] = {
        {"$$a'b$$", "a'b", PRS_LIT_DOLLAR},
        {"$fn$ select $$x$$; -- not a comment $fn$", " select $$x$$; -- not a comment ", PRS_LIT_DOLLAR},
        {"$a$$b$$a$", "$b$", PRS_LIT_DOLLAR},
        {"$_1$ $_2$ $_1$", " $_2$ ", PRS_LIT_DOLLAR}};
    check_lex("select $$a'b$$, $fn$ select $$x$$; -- not a comment $fn$, $a$$b$$a$, $_1$ $_2$ $_1$",
              "select ?, ?, ?, ?", l, N(l));
    /* $ inside an identifier is part of it; $n stays; a lone $ is itself. */
    check_lex("select a$b$c, $1, $23 from t$ where x = $ y", "select a$b$c, $1, $23 from t$ where x = $ y",
              NULL, 0);
}

static void test_params(void **state)
{
    prs_lexed lx = PRS_LEXED_INIT;
    const char *q = "UPDATE t SET a = $3 WHERE id = $12 AND b = $1";
    assert_int_equal(prs_lex(q, strlen(q), &lx), 0);
    assert_int_equal(lx.max_param, 12);
    assert_int_equal(lx.n_lits, 0);
    prs_lexed_free(&lx);
}

static void test_numbers(void **state)
{
    static const lit_want l[] = {{"42", "42", PRS_LIT_NUMBER},      {"4.2", "4.2", PRS_LIT_NUMBER},
                                 {".5", ".5", PRS_LIT_NUMBER},      {"1e-3", "1e-3", PRS_LIT_NUMBER},
                                 {"1.5E+10", NULL, PRS_LIT_NUMBER}, {"7.", "7.", PRS_LIT_NUMBER},
                                 {"5", "5", PRS_LIT_NUMBER}};
    check_lex("select 42, 4.2, .5, 1e-3, 1.5E+10, 7., -5", "select ?, ?, ?, ?, ?, ?, -?", l, N(l));
    /* PostgreSQL 15 rejects numbers with trailing identifier characters (no 0x literals
     * before 16): they are copied as they are, never turned into a placeholder. */
    check_lex("select 0x1F, 12abc, 1e", "select 0x1F, 12abc, 1e", NULL, 0);
    static const lit_want l2[] = {{"1", NULL, PRS_LIT_NUMBER}, {"2", NULL, PRS_LIT_NUMBER}};
    check_lex("select a[1:2], t.x::int", "select a[?:?], t.x::int", l2, N(l2));
}

static void test_comments(void **state)
{
    static const lit_want l[] = {{"'-- not a comment'", "-- not a comment", PRS_LIT_STRING},
                                 {"'/* nor this */'", "/* nor this */", PRS_LIT_STRING}};
    check_lex(
        "/* lead */ select /* a /* nested */ still */ '-- not a comment', -- tail\n '/* nor this */' -- end",
        "select ?, ?", l, N(l));
    check_lex("select 1--", "select ?", (lit_want[]){{"1", "1", PRS_LIT_NUMBER}}, 1);
    check_lex("select a/**/from t", "select a from t", NULL, 0);
    check_lex("select a-/**/-b, a+--x\n1", "select a- -b, a+ ?", (lit_want[]){{"1", NULL, PRS_LIT_NUMBER}},
              1);
    check_lex("select 1 /*/ still comment */", "select ?", (lit_want[]){{"1", NULL, PRS_LIT_NUMBER}}, 1);
    check_lex("select \"a -- b\", \"x\"\"/*\"", "select \"a -- b\", \"x\"\"/*\"", NULL, 0);
}

static void test_unicode(void **state)
{
    static const lit_want l[] = {{"'日本'", "日本", PRS_LIT_STRING}};
    check_lex("SELECT café, \"Ünïcode\" FROM données WHERE nom = '日本'",
              "SELECT café, \"Ünïcode\" FROM données WHERE nom = ?", l, N(l));
    /* Invalid UTF-8 is bytes like any other: identifier bytes outside quotes. */
    check_lex("select \xff\xfe", "select \xff\xfe", NULL, 0);
}

static void test_operators_escaped(void **state)
{
    /* The jsonb ? operators cannot be confused with a placeholder. */
    check_lex(
        "select d ? 'k', d ?| array['a'], d \\ 1", "select d \\? ?, d \\?| array[?], d \\\\ ?",
        (lit_want[]){{"'k'", "k", PRS_LIT_STRING}, {"'a'", "a", PRS_LIT_STRING}, {"1", "1", PRS_LIT_NUMBER}},
        3);
}

static void test_statements(void **state)
{
    static const struct {
        const char *sql;
        unsigned n;
    } cases[] = {
        {"select 1", 1},
        {"select 1;", 1},
        {"select 1; select 2", 2},
        {"select 1;;  ; select 2;", 2},
        {";", 0},
        {"", 0},
        {"-- only a comment", 0},
        {"select ';'; select $$;$$; select \";\" -- ;", 3},
        {"create rule r as on insert to t do (insert into a values (1); insert into b values (2))", 1},
        {"begin; update t set a = 1; commit;", 3},
    };
    for (size_t i = 0; i < N(cases); i++) {
        prs_lexed lx = PRS_LEXED_INIT;
        assert_int_equal(prs_lex(cases[i].sql, strlen(cases[i].sql), &lx), 0);
        if (lx.n_statements != cases[i].n)
            fail_msg("%s: %u statements, want %u", cases[i].sql, lx.n_statements, cases[i].n);
        prs_lexed_free(&lx);
    }
}

static void test_unterminated(void **state)
{
    assert_int_equal(lex_rc("select 'abc"), PRS_EUNTERM_STRING);
    assert_int_equal(lex_rc("select 'it''"), PRS_EUNTERM_STRING);
    assert_int_equal(lex_rc("select E'\\'"), PRS_EUNTERM_STRING);
    assert_int_equal(lex_rc("select E'abc\\"), PRS_EUNTERM_STRING);
    assert_int_equal(lex_rc("select B'01"), PRS_EUNTERM_STRING);
    assert_int_equal(lex_rc("select U&'x"), PRS_EUNTERM_STRING);
    assert_int_equal(lex_rc("select 'a'\n'b"), PRS_EUNTERM_STRING);
    assert_int_equal(lex_rc("select /* a"), PRS_EUNTERM_COMMENT);
    assert_int_equal(lex_rc("select /* a /* b */"), PRS_EUNTERM_COMMENT);
    assert_int_equal(lex_rc("select /*"), PRS_EUNTERM_COMMENT);
    assert_int_equal(lex_rc("select /*/"), PRS_EUNTERM_COMMENT);
    assert_int_equal(lex_rc("select $$abc"), PRS_EUNTERM_DOLLAR);
    assert_int_equal(lex_rc("select $q$abc$$"), PRS_EUNTERM_DOLLAR);
    assert_int_equal(lex_rc("select $q$abc$q"), PRS_EUNTERM_DOLLAR);
    assert_int_equal(lex_rc("select \"abc"), PRS_EUNTERM_IDENT);
    assert_int_equal(lex_rc("select \"a\"\""), PRS_EUNTERM_IDENT);
    assert_int_equal(lex_rc("select U&\"a"), PRS_EUNTERM_IDENT);
    assert_int_equal(lex_rc("select '"), PRS_EUNTERM_STRING);
    assert_int_equal(prs_lex("x", 1, NULL), PRS_EINVAL);
}

static void test_nul_byte(void **state)
{
    prs_lexed lx = PRS_LEXED_INIT;
    static const char q[] = "select 1\0; delete from t";
    assert_int_equal(prs_lex(q, sizeof q - 1, &lx), PRS_ENUL);
    static const char q2[] = "select '\0'";
    assert_int_equal(prs_lex(q2, sizeof q2 - 1, &lx), PRS_ENUL);
    prs_lexed_free(&lx);
}

/* Every prefix of a text lexes without reading past its end (ASan checks the reads). */
static void test_prefixes(void **state)
{
    static const char *const texts[] = {
        "/* pgshard: tenant='a' */ SELECT E'\\'x', U&'a' UESCAPE '!', $t$ $$ $t$, \"q\"\"\", 1.5e-3, $1 -- c",
        "select 'a'\n'b', B'1', X'f', /* /* */ */ a ? b, 0x1, $",
    };
    prs_lexed lx = PRS_LEXED_INIT;
    for (size_t t = 0; t < N(texts); t++) {
        size_t len = strlen(texts[t]);
        for (size_t n = 0; n <= len; n++) {
            char *copy = malloc(n ? n : 1);
            memcpy(copy, texts[t], n);
            int rc = prs_lex(copy, n, &lx);
            assert_true(rc == 0 || rc == PRS_EUNTERM_STRING || rc == PRS_EUNTERM_COMMENT ||
                        rc == PRS_EUNTERM_DOLLAR || rc == PRS_EUNTERM_IDENT);
            for (uint32_t i = 0; rc == 0 && i < lx.n_lits; i++) {
                pgs_buf v = PGS_BUF_INIT;
                assert_true(lx.lits[i].start + lx.lits[i].len <= n);
                (void)prs_literal_value(copy, n, &lx.lits[i], &v);
                pgs_buf_free(&v);
            }
            free(copy);
        }
    }
    prs_lexed_free(&lx);
}

static void lex_ok(prs_lexed *lx, const char *sql)
{
    int rc = prs_lex(sql, strlen(sql), lx);
    if (rc)
        fail_msg("%s: %s", sql, prs_strerror(rc));
}

static void test_same_key(void **state)
{
    static const char *const groups[][4] = {
        {"SELECT abalance FROM pgbench_accounts WHERE aid = 17",
         "SELECT abalance FROM pgbench_accounts WHERE aid = 123456789",
         "SELECT abalance FROM pgbench_accounts WHERE aid = 1.5e3 -- other comment",
         "/* pgshard: tenant=9 */ SELECT   abalance\nFROM pgbench_accounts WHERE aid = 0"},
        {"select * from t where name = 'bob' and x in (1, 2)",
         "select * from t where name = E'al\\'ice' and x in (3.5, $$7$$)",
         "select * from t where name = U&'\\0062ob' and x in (B'1', X'ff')",
         "select * from t where name = 'a'\n'b' and x in (1, 2)"},
    };
    prs_lexed a = PRS_LEXED_INIT, b = PRS_LEXED_INIT;
    for (size_t g = 0; g < N(groups); g++) {
        lex_ok(&a, groups[g][0]);
        for (size_t i = 1; i < 4; i++) {
            lex_ok(&b, groups[g][i]);
            if (a.hash != b.hash || prs_lexed_len(&a) != prs_lexed_len(&b) ||
                memcmp(prs_lexed_text(&a), prs_lexed_text(&b), prs_lexed_len(&a)) != 0)
                fail_msg("[%.*s] and [%.*s] differ", (int)prs_lexed_len(&a), prs_lexed_text(&a),
                         (int)prs_lexed_len(&b), prs_lexed_text(&b));
        }
    }
    /* And texts that differ in anything but literals do not share a key. */
    static const char *const differ[] = {
        "select * from t where a = 1",       "select * from t where a = $1",
        "select * from t where b = 1",       "select * from t where a = -1",
        "select * from t where a = 1;",      "select * from t where a = 1; select 2",
        "select * from t where a = '1' 'x'", "select * from t where a ? 'x'",
        "SELECT * from t where a = 1",       "select * from \"t\" where a = 1",
    };
    for (size_t i = 0; i < N(differ); i++) {
        lex_ok(&a, differ[i]);
        for (size_t j = i + 1; j < N(differ); j++) {
            lex_ok(&b, differ[j]);
            if (a.hash == b.hash)
                fail_msg("%s and %s share a hash", differ[i], differ[j]);
        }
    }
    prs_lexed_free(&a);
    prs_lexed_free(&b);
}

static void hints_of(prs_lexed *lx, const char *sql)
{
    lex_ok(lx, sql);
}

static void test_hints(void **state)
{
    prs_lexed lx = PRS_LEXED_INIT;
    const char *q = "/* pgshard: target=replica max_lag_ms=500 tenant=42 */ SELECT 1";
    hints_of(&lx, q);
    assert_true(lx.hints.present);
    assert_false(lx.hints.malformed);
    assert_int_equal(lx.hints.target, PRS_TARGET_REPLICA);
    assert_true(lx.hints.has_max_lag);
    assert_int_equal(lx.hints.max_lag_ms, 500);
    assert_int_equal(lx.hints.tenant_len, 2);
    assert_memory_equal(q + lx.hints.tenant_start, "42", 2);

    /* Not part of the key. */
    uint64_t h = lx.hash;
    hints_of(&lx, "SELECT 2");
    assert_false(lx.hints.present);
    assert_int_equal(lx.hash, h);

    /* Embedded, quoted, commas, case of keys and values. */
    q = "SELECT * FROM t /*pgshard:TARGET=Primary,tenant='acme corp'*/ WHERE a = 1";
    hints_of(&lx, q);
    assert_true(lx.hints.present);
    assert_int_equal(lx.hints.target, PRS_TARGET_PRIMARY);
    assert_false(lx.hints.has_max_lag);
    assert_int_equal(lx.hints.tenant_len, 9);
    assert_memory_equal(q + lx.hints.tenant_start, "acme corp", 9);

    /* Later comments override earlier ones; unknown keys and bad values are flagged. */
    hints_of(&lx, "/* pgshard: target=any */ select /* pgshard: target=replica max_lag_ms=x foo=1 junk */ 1");
    assert_int_equal(lx.hints.target, PRS_TARGET_REPLICA);
    assert_false(lx.hints.has_max_lag);
    assert_true(lx.hints.malformed);

    /* Other comments, and hint-looking text in strings, are not hints. */
    hints_of(&lx, "/* app: x */ select '/* pgshard: target=replica */' -- pgshard: target=any");
    assert_false(lx.hints.present);
    assert_int_equal(lx.hints.target, PRS_TARGET_DEFAULT);
    hints_of(&lx, "select 1 /* pgshard: max_lag_ms=99999999999 */");
    assert_true(lx.hints.malformed);
    assert_false(lx.hints.has_max_lag);
    prs_lexed_free(&lx);
}

/* Tokens PostgreSQL 15's scanner cuts where the lexer used to cut them otherwise; fuzz_lexer
 * found each by comparing the literals with pg_query_scan's constants. */
static void test_scanner_tokens(void **state)
{
    /* $1 followed by a dollar-quoted string: the $ does not make the parameter junk. */
    static const lit_want l[] = {{"$$x$$", "x", PRS_LIT_DOLLAR}};
    check_lex("select $1$$x$$", "select $1?", l, N(l));
    /* ".." is one token, so the number after it has no leading dot. */
    static const lit_want l2[] = {
        {"5", "5", PRS_LIT_NUMBER}, {"1", "1", PRS_LIT_NUMBER}, {"5", "5", PRS_LIT_NUMBER}};
    check_lex("select ..5, 1..5", "select ..?, ?..?", l2, N(l2));
    /* The UESCAPE string goes on across lines like any other: '!' '' is "!". */
    static const lit_want l3[] = {{"U&'d!0061t' UESCAPE '!'\n''", "dat", PRS_LIT_USTRING}};
    check_lex("select U&'d!0061t' UESCAPE '!'\n''", "select ?", l3, N(l3));
}

static void test_literal_value_errors(void **state)
{
    prs_lexed lx = PRS_LEXED_INIT;
    static const char *const bad[] = {"select E'\\uD83D'",        "select E'\\u12'",
                                      "select U&'\\12'",          "select E'\\0'",
                                      "select U&'x' UESCAPE '+'", "select U&'x' UESCAPE '!'\n'!'"};
    for (size_t i = 0; i < N(bad); i++) {
        lex_ok(&lx, bad[i]);
        assert_int_equal(lx.n_lits, 1);
        pgs_buf v = PGS_BUF_INIT;
        assert_int_equal(prs_literal_value(bad[i], strlen(bad[i]), &lx.lits[0], &v), PRS_EINVAL);
        pgs_buf_free(&v);
    }
    prs_lexed_free(&lx);
}

static void test_hash(void **state)
{
    assert_int_not_equal(prs_hash64("a", 1, 0), prs_hash64("b", 1, 0));
    assert_int_not_equal(prs_hash64("a", 1, 0), prs_hash64("a", 1, 1));
    assert_int_equal(prs_hash64("abcdefghij", 10, 7), prs_hash64("abcdefghij", 10, 7));
    assert_int_not_equal(prs_hash64("", 0, 0), prs_hash64("\0", 1, 0));
}

/* Reusing one prs_lexed across texts must not leak literals or hints between them. */
static void test_reuse(void **state)
{
    prs_lexed lx = PRS_LEXED_INIT;
    lex_ok(&lx, "/* pgshard: tenant=1 */ select 1, 2, 3, $4");
    assert_int_equal(lx.n_lits, 3);
    lex_ok(&lx, "select x");
    assert_int_equal(lx.n_lits, 0);
    assert_int_equal(lx.max_param, 0);
    assert_false(lx.hints.present);
    assert_int_equal(lex_rc("select 'x"), PRS_EUNTERM_STRING);
    prs_lexed_free(&lx);
}

static uint32_t nesting_of(const char *sql)
{
    prs_lexed lx = PRS_LEXED_INIT;
    lex_ok(&lx, sql);
    uint32_t n = lx.max_nesting;
    prs_lexed_free(&lx);
    return n;
}

static void test_nesting_estimate(void **state)
{
    assert_int_equal(nesting_of("select a"), 0);
    assert_int_equal(nesting_of("select 1+2+3"), 2);
    /* An operator is counted once however many characters it has. */
    assert_int_equal(nesting_of("select a->>'x', b::int"), 1);
    /* Commas and AND/OR start siblings. */
    assert_int_equal(nesting_of("select a+b, c+d, e+f"), 1);
    assert_int_equal(nesting_of("select * from t where a = 1 and b = 2 and c = 3 or d = 4"), 2);
    /* Brackets and CASE open levels; closing them gives the depth back. */
    assert_int_equal(nesting_of("select f(g(1))"), 8);
    assert_int_equal(nesting_of("select f(1), g(2), h(3)"), 4);
    assert_int_equal(nesting_of("select case when a = 1 then 2 when a = 3 then 4 else 5 end"), 3);
    assert_int_equal(nesting_of("select not not not x"), 3);
    assert_int_equal(nesting_of("select 1 union select 2 union select 3"), 2);
    /* Statements do not add up. */
    assert_int_equal(nesting_of("select 1+1; select 2+2; select 3+3"), 1);
    /* Wide is not deep: a bulk INSERT stays flat. */
    pgs_buf q = PGS_BUF_INIT;
    pgs_buf_append(&q, "insert into t (a, b) values (1, 'x')", 36);
    for (int i = 0; i < 5000; i++)
        pgs_buf_append(&q, ", (1, 'x')", 10);
    prs_lexed lx = PRS_LEXED_INIT;
    assert_int_equal(prs_lex((const char *)q.data, q.len, &lx), 0);
    assert_true(lx.max_nesting <= 8);
    /* Deep is deep, and past 255 open brackets the estimate saturates. */
    pgs_buf_clear(&q);
    pgs_buf_append(&q, "select ", 7);
    for (int i = 0; i < 300; i++)
        pgs_buf_append(&q, "(", 1);
    assert_int_equal(prs_lex((const char *)q.data, q.len, &lx), 0);
    assert_int_equal(lx.max_nesting, UINT32_MAX);
    pgs_buf_free(&q);
    prs_lexed_free(&lx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_simple),
        cmocka_unit_test(test_doubled_quotes),
        cmocka_unit_test(test_escape_strings),
        cmocka_unit_test(test_other_strings),
        cmocka_unit_test(test_continuation),
        cmocka_unit_test(test_dollar_quotes),
        cmocka_unit_test(test_params),
        cmocka_unit_test(test_numbers),
        cmocka_unit_test(test_comments),
        cmocka_unit_test(test_unicode),
        cmocka_unit_test(test_operators_escaped),
        cmocka_unit_test(test_statements),
        cmocka_unit_test(test_unterminated),
        cmocka_unit_test(test_nul_byte),
        cmocka_unit_test(test_prefixes),
        cmocka_unit_test(test_same_key),
        cmocka_unit_test(test_hints),
        cmocka_unit_test(test_scanner_tokens),
        cmocka_unit_test(test_literal_value_errors),
        cmocka_unit_test(test_hash),
        cmocka_unit_test(test_reuse),
        cmocka_unit_test(test_nesting_estimate),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

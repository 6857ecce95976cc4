/* libFuzzer target for the lexer: arbitrary bytes through prs_lex, and every literal it finds
 * through prs_literal_value, with the lexer's promises checked on each input (a broken one
 * traps like a crash), and its literals compared with the constants PostgreSQL's own scanner
 * (libpg_query's pg_query_scan) finds in the same text: a literal cut differently is a shard
 * key read wrongly. fuzz_parser covers the lexer too, but behind the whole parse. Not a unit
 * test. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <pg_query.h>
#include <pg_query/pg_query.pb-c.h>

#include "parser/lexer.h"

#define CHECK(cond)                                                                                          \
    do {                                                                                                     \
        if (!(cond))                                                                                         \
            __builtin_trap();                                                                                \
    } while (0)

static bool lex_error_known(int rc)
{
    return rc == PRS_EUNTERM_STRING || rc == PRS_EUNTERM_COMMENT || rc == PRS_EUNTERM_DOLLAR ||
           rc == PRS_EUNTERM_IDENT || rc == PRS_ENUL;
}

/* The bytes a literal of each kind starts with: the router and the key extractor take the
 * kind's word for what the text is. */
static bool literal_opening_valid(const uint8_t *s, const prs_literal *l)
{
    const uint8_t *p = s + l->start;
    uint8_t c = p[0] | 0x20;
    switch ((prs_lit_kind)l->kind) {
    case PRS_LIT_NUMBER:
        return (p[0] >= '0' && p[0] <= '9') || p[0] == '.';
    case PRS_LIT_STRING:
        return p[0] == '\'' && p[l->len - 1] == '\'';
    case PRS_LIT_ESTRING:
        return c == 'e' && l->len >= 3 && p[1] == '\'' && p[l->len - 1] == '\'';
    case PRS_LIT_BITSTRING:
        return c == 'b' && l->len >= 3 && p[1] == '\'' && p[l->len - 1] == '\'';
    case PRS_LIT_HEXSTRING:
        return c == 'x' && l->len >= 3 && p[1] == '\'' && p[l->len - 1] == '\'';
    case PRS_LIT_USTRING:
        return c == 'u' && l->len >= 4 && p[1] == '&' && p[2] == '\'' && p[l->len - 1] == '\'';
    case PRS_LIT_DOLLAR:
        return p[0] == '$' && l->len >= 4 && p[l->len - 1] == '$';
    }
    return false;
}

/* Each literal lies inside the text, after the one before it, is found by its offset and
 * decodes to at most its own length (escapes and quotes only ever shrink). */
static void check_literals(const char *sql, size_t size, const prs_lexed *lx)
{
    uint32_t prev_end = 0;
    for (uint32_t i = 0; i < lx->n_lits; i++) {
        const prs_literal *l = &lx->lits[i];
        CHECK(l->len > 0 && (size_t)l->start + l->len <= size);
        CHECK(l->start >= prev_end);
        CHECK(l->segments >= 1);
        CHECK(literal_opening_valid((const uint8_t *)sql, l));
        prev_end = l->start + l->len;
        CHECK(prs_lexed_find(lx, l->start) == (int)i);

        pgs_buf v = PGS_BUF_INIT;
        int rc = prs_literal_value(sql, size, l, &v);
        CHECK(rc == 0 || rc == PRS_EINVAL);
        if (rc == 0 && l->kind == PRS_LIT_NUMBER)
            CHECK(v.len == l->len && memcmp(v.data, sql + l->start, v.len) == 0);
        else if (rc == 0)
            CHECK(v.len < l->len);
        pgs_buf_free(&v);
    }
}

/* Placeholders in the normalized text are the literals: every unescaped `?` is one. Quoted
 * identifiers are copied as they are, `?` and all, so texts with one are not counted. */
static void check_placeholders(const char *sql, size_t size, const prs_lexed *lx)
{
    if (size && memchr(sql, '"', size))
        return;
    const char *t = prs_lexed_text(lx);
    uint32_t n = 0;
    for (size_t i = 0; i < prs_lexed_len(lx); i++) {
        if (t[i] == '\\')
            i++;
        else if (t[i] == '?')
            n++;
    }
    CHECK(n == lx->n_lits);
}

static void check_lexed(const char *sql, size_t size, const prs_lexed *lx)
{
    size_t len = prs_lexed_len(lx);
    const char *t = prs_lexed_text(lx);
    /* prs_lex reserves 2 * size + 1 bytes once and writes without further checks. */
    CHECK(len <= 2 * size);
    CHECK(len == 0 || (t[0] != ' ' && t[len - 1] != ' '));
    CHECK(lx->n_statements <= size && lx->n_lits <= size);
    CHECK(lx->hash == prs_hash64(t, len, 0));
    const prs_hints *h = &lx->hints;
    CHECK(h->target <= PRS_TARGET_ANY);
    CHECK(h->tenant_len == 0 || (size_t)h->tenant_start + h->tenant_len <= size);
    CHECK(!h->malformed || h->present);
    check_literals(sql, size, lx);
    check_placeholders(sql, size, lx);
}

/* The scanner's token for a literal of each kind. */
static bool token_matches(const prs_literal *l, PgQuery__Token tok)
{
    switch ((prs_lit_kind)l->kind) {
    case PRS_LIT_NUMBER:
        return tok == PG_QUERY__TOKEN__ICONST || tok == PG_QUERY__TOKEN__FCONST;
    case PRS_LIT_STRING:
    case PRS_LIT_ESTRING:
    case PRS_LIT_DOLLAR:
        return tok == PG_QUERY__TOKEN__SCONST;
    case PRS_LIT_USTRING:
        return tok == PG_QUERY__TOKEN__USCONST;
    case PRS_LIT_BITSTRING:
        return tok == PG_QUERY__TOKEN__BCONST;
    case PRS_LIT_HEXSTRING:
        return tok == PG_QUERY__TOKEN__XCONST;
    }
    return false;
}

static bool token_is_constant(PgQuery__Token tok)
{
    return tok == PG_QUERY__TOKEN__ICONST || tok == PG_QUERY__TOKEN__FCONST ||
           tok == PG_QUERY__TOKEN__SCONST || tok == PG_QUERY__TOKEN__USCONST ||
           tok == PG_QUERY__TOKEN__BCONST || tok == PG_QUERY__TOKEN__XCONST;
}

/* Every constant the scanner finds starts where a literal of the matching kind does, and the
 * other way round; the escape string of a UESCAPE clause is part of the U& literal before it.
 * Texts the scanner rejects are not compared, but one the lexer finds unterminated must be
 * rejected by the scanner too. */
static void check_against_scanner(const char *sql, size_t size, const prs_lexed *lx, int lrc)
{
    char *text = malloc(size + 1);
    CHECK(text != NULL);
    memcpy(text, sql, size);
    text[size] = '\0';
    PgQueryScanResult r = pg_query_scan(text);
    if (r.error || lrc == PRS_ENUL) {
        pg_query_free_scan_result(r);
        free(text);
        return;
    }
    CHECK(lrc == 0);
    PgQuery__ScanResult *scan = pg_query__scan_result__unpack(NULL, r.pbuf.len, (const uint8_t *)r.pbuf.data);
    CHECK(scan != NULL);
    uint32_t j = 0, covered = 0;
    for (size_t i = 0; i < scan->n_tokens; i++) {
        const PgQuery__ScanToken *t = scan->tokens[i];
        if (!token_is_constant(t->token) || (uint32_t)t->start < covered)
            continue;
        CHECK(j < lx->n_lits && lx->lits[j].start == (uint32_t)t->start &&
              token_matches(&lx->lits[j], t->token));
        covered = lx->lits[j].start + lx->lits[j].len;
        j++;
    }
    CHECK(j == lx->n_lits);
    pg_query__scan_result__free_unpacked(scan, NULL);
    pg_query_free_scan_result(r);
    free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *sql = (const char *)data;
    prs_lexed lx = PRS_LEXED_INIT;
    int rc = prs_lex(sql, size, &lx);
    if (rc < 0) {
        CHECK(lex_error_known(rc));
        CHECK(lx.n_lits == 0 && prs_lexed_len(&lx) == 0);
        check_against_scanner(sql, size, &lx, rc);
        prs_lexed_free(&lx);
        return 0;
    }
    CHECK(rc == 0);
    check_lexed(sql, size, &lx);
    check_against_scanner(sql, size, &lx, rc);

    /* A connection reuses one prs_lexed for every query: lexing again into the same buffers
     * must give the same result. */
    uint64_t hash = lx.hash;
    size_t len = prs_lexed_len(&lx);
    uint32_t n_lits = lx.n_lits;
    CHECK(prs_lex(sql, size, &lx) == 0);
    CHECK(lx.hash == hash && prs_lexed_len(&lx) == len && lx.n_lits == n_lits);
    prs_lexed_free(&lx);
    return 0;
}

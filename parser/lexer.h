/* The one-pass SQL lexer that normalizes query text into a parse-cache key: literals become
 * `?`, comments go, whitespace runs become one space, `pgshard:` hint comments are read.
 * It does not parse SQL and does no I/O; it never reads past the length it is given. */
#ifndef PRS_LEXER_H
#define PRS_LEXER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"

/* Error codes of the parser library. The lexer's say why the text could not be
 * normalized; the caller then hands the text to libpg_query or sends it to the primary. */
enum {
    PRS_EUNTERM_STRING = -1,  /* a '...', E'...', B'...', X'...' or U&'...' without its closing quote */
    PRS_EUNTERM_COMMENT = -2, /* a block comment (possibly nested) without its closing star-slash */
    PRS_EUNTERM_DOLLAR = -3,  /* $tag$ without its closing $tag$ */
    PRS_EUNTERM_IDENT = -4,   /* "... without its closing double quote */
    PRS_ENUL = -5,            /* a NUL byte inside the text: the server would stop reading there */
    PRS_ETOOLONG = -6,        /* longer than the lexer's 32-bit offsets allow */
    PRS_ENOMEM = -7,
    PRS_ESYNTAX = -8,      /* libpg_query rejected the text */
    PRS_EINVAL = -9,       /* bad argument */
    PRS_ETOOCOMPLEX = -10, /* nested too deeply to hand to libpg_query safely (see max_nesting) */
};

const char *prs_strerror(int err);

typedef enum prs_lit_kind {
    PRS_LIT_NUMBER = 1, /* 42, 4.2, .5, 1e-3 (a leading minus is an operator, not part of it) */
    PRS_LIT_STRING,     /* '...' with '' escapes; also the string of N'...' (N stays a word) */
    PRS_LIT_ESTRING,    /* E'...' with backslash escapes */
    PRS_LIT_USTRING,    /* U&'...', including a following UESCAPE 'c' clause */
    PRS_LIT_BITSTRING,  /* B'...' */
    PRS_LIT_HEXSTRING,  /* X'...' */
    PRS_LIT_DOLLAR,     /* $$...$$ or $tag$...$tag$ */
} prs_lit_kind;

/* Where one literal sits in the original text. Quoted literals run from their prefix (E, B,
 * X, U&) or opening quote to the closing quote of their last segment: PostgreSQL joins
 * 'a'<newline>'b' into one constant and so does the lexer. */
typedef struct prs_literal {
    uint32_t start;
    uint32_t len;
    uint8_t kind;     /* prs_lit_kind */
    uint8_t segments; /* quoted segments joined by newlines, 1 for most; saturates at 255 */
} prs_literal;

typedef enum prs_target {
    PRS_TARGET_DEFAULT = 0, /* no hint */
    PRS_TARGET_PRIMARY,
    PRS_TARGET_REPLICA,
    PRS_TARGET_ANY,
} prs_target;

/* What `/ * pgshard: target=replica max_lag_ms=500 tenant=42 * /` comments said. Values
 * point into the original text. A later hint comment overrides an earlier one key by key. */
typedef struct prs_hints {
    bool present;   /* at least one pgshard: comment */
    bool malformed; /* a key or value was not understood (it was ignored) */
    bool has_max_lag;
    uint8_t target; /* prs_target */
    uint32_t max_lag_ms;
    uint32_t tenant_start; /* tenant value, quotes stripped; tenant_len 0 means none */
    uint32_t tenant_len;
} prs_hints;

/* The lexer's output. Its buffers are reused by the next prs_lex() on the same struct, so
 * a connection or worker keeps one and the steady state allocates nothing. */
typedef struct prs_lexed {
    pgs_buf norm;            /* owned: normalized text, not NUL-terminated */
    pgs_buf lit_store;       /* owned: storage behind lits */
    const prs_literal *lits; /* points into lit_store; in text order */
    uint32_t n_lits;
    uint32_t max_param;    /* the highest $n seen, 0 if none */
    uint32_t n_statements; /* non-empty statements separated by ; outside parentheses */
    uint32_t max_nesting;  /* an upper bound on the parse tree's depth, see below */
    uint64_t hash;         /* prs_hash64 of the normalized text */
    prs_hints hints;
} prs_lexed;

#define PRS_LEXED_INIT                                                                                       \
    {                                                                                                        \
        .norm = PGS_BUF_INIT, .lit_store = PGS_BUF_INIT                                                      \
    }

/* libpg_query and protobuf-c build and unpack parse trees recursively, about 1 KiB of stack
 * per level, so `SELECT 1+1+...+1` of a few thousand terms overflows a worker's stack. The
 * lexer bounds the depth from the tokens: brackets and CASE open levels, and operators and
 * chaining keywords (NOT, IS, ::, JOIN, UNION, ...) each add one until a comma, AND/OR or
 * WHEN/THEN/ELSE starts a sibling. Texts over PRS_MAX_NESTING are not parsed at all. */
#define PRS_MAX_NESTING 400

/* Normalizes sql[0..len). On error the output is left empty (n_lits 0, norm empty). */
int prs_lex(const char *sql, size_t len, prs_lexed *out);
void prs_lexed_free(prs_lexed *lx);

static inline const char *prs_lexed_text(const prs_lexed *lx)
{
    return (const char *)lx->norm.data;
}
static inline size_t prs_lexed_len(const prs_lexed *lx)
{
    return lx->norm.len;
}

/* Index of the literal that starts at byte offset `at` of the text, or -1. */
int prs_lexed_find(const prs_lexed *lx, uint32_t at);

/* Appends the value a literal stands for to `out` (not NUL-terminated): quotes and prefixes
 * stripped, escapes resolved, segments joined; numbers as written; B'..'/X'..' as their
 * digits. Returns 0, PRS_EINVAL for an escape PostgreSQL would reject, or PRS_ENOMEM. */
int prs_literal_value(const char *sql, size_t len, const prs_literal *lit, pgs_buf *out);

/* A 64-bit hash (one-lane xxHash64 construction) used for cache keys. */
uint64_t prs_hash64(const void *p, size_t n, uint64_t seed);

#endif

/* The normalizing SQL lexer (see lexer.h): one pass over the bytes, PostgreSQL 15's scan.l
 * rules for where literals, identifiers and comments begin and end, and nothing about what
 * the tokens mean. Also the literal decoder and the hash used for cache keys. */
#include "parser/lexer.h"

#include <string.h>

const char *prs_strerror(int err)
{
    switch (err) {
    case 0:
        return "ok";
    case PRS_EUNTERM_STRING:
        return "unterminated quoted string";
    case PRS_EUNTERM_COMMENT:
        return "unterminated /* comment";
    case PRS_EUNTERM_DOLLAR:
        return "unterminated dollar-quoted string";
    case PRS_EUNTERM_IDENT:
        return "unterminated quoted identifier";
    case PRS_ENUL:
        return "NUL byte in query text";
    case PRS_ETOOLONG:
        return "query text too long";
    case PRS_ENOMEM:
        return "out of memory";
    case PRS_ESYNTAX:
        return "syntax error";
    case PRS_EINVAL:
        return "invalid argument";
    case PRS_ETOOCOMPLEX:
        return "query nested too deeply";
    default:
        return "unknown error";
    }
}

/* Character classes of scan.l. Bytes >= 0x80 are identifier characters whatever the
 * encoding, as in PostgreSQL. \v is not whitespace in PostgreSQL 15. One table lookup per
 * byte: every byte of every routed query passes through these. */
enum { C_SPACE = 1, C_DIGIT = 2, C_IDSTART = 4, C_DOLLAR = 8 };
static const uint8_t char_class[256] = {
    [' '] = C_SPACE,
    ['\t'] = C_SPACE,
    ['\n'] = C_SPACE,
    ['\r'] = C_SPACE,
    ['\f'] = C_SPACE,
    ['0' ... '9'] = C_DIGIT,
    ['a' ... 'z'] = C_IDSTART,
    ['A' ... 'Z'] = C_IDSTART,
    ['_'] = C_IDSTART,
    ['$'] = C_DOLLAR,
    [0x80 ... 0xff] = C_IDSTART,
};
static inline bool is_space(uint8_t c)
{
    return char_class[c] & C_SPACE;
}
static inline bool is_digit(uint8_t c)
{
    return char_class[c] & C_DIGIT;
}
static inline bool is_ident_start(uint8_t c)
{
    return char_class[c] & C_IDSTART;
}
static inline bool is_ident_cont(uint8_t c)
{
    return char_class[c] & (C_IDSTART | C_DIGIT | C_DOLLAR);
}
static inline bool is_dolq_cont(uint8_t c)
{
    return char_class[c] & (C_IDSTART | C_DIGIT);
}
static inline uint8_t lower(uint8_t c)
{
    return (c >= 'A' && c <= 'Z') ? (uint8_t)(c + 32) : c;
}

#define NEST_LEVELS 256
#define NEST_BRACKET_WEIGHT 4 /* a call, subquery or array: several tree levels */
#define NEST_CASE_WEIGHT 2

/* The running estimate behind prs_lexed.max_nesting (see lexer.h). */
typedef struct nesting {
    uint32_t sum; /* estimated depth at this point of the text */
    uint32_t max;
    uint32_t top; /* open brackets; level 0 is the statement */
    bool overflow;
    uint32_t count[NEST_LEVELS]; /* chaining tokens since the last separator, per level */
    bool is_case[NEST_LEVELS];
} nesting;

typedef struct lexer {
    const uint8_t *s;
    size_t n;
    uint8_t *out; /* the normalized text, reserved to the worst case up front */
    size_t o;
    bool space;      /* whitespace or a comment since the last token */
    bool seg_tokens; /* a token since the last top-level ; */
    uint32_t depth;  /* parentheses */
    bool prev_op;    /* the last token was an operator character */
    prs_lexed *lx;
    nesting nest;
} lexer;

static void nest_raise(nesting *N, uint32_t by)
{
    N->sum += by;
    if (N->sum > N->max)
        N->max = N->sum;
}

static void nest_open(nesting *N, bool is_case)
{
    if (N->overflow)
        return;
    if (N->top + 1 >= NEST_LEVELS) {
        N->overflow = true;
        N->max = UINT32_MAX;
        return;
    }
    N->top++;
    N->count[N->top] = 0;
    N->is_case[N->top] = is_case;
    nest_raise(N, is_case ? NEST_CASE_WEIGHT : NEST_BRACKET_WEIGHT);
}

static void nest_pop(nesting *N)
{
    N->sum -= N->count[N->top] + (N->is_case[N->top] ? NEST_CASE_WEIGHT : NEST_BRACKET_WEIGHT);
    N->top--;
}

/* A closing bracket also closes a CASE left open inside it; END closes only a CASE. */
static void nest_close(nesting *N, bool is_end)
{
    if (N->overflow)
        return;
    if (is_end) {
        if (N->top > 0 && N->is_case[N->top])
            nest_pop(N);
        return;
    }
    while (N->top > 0 && N->is_case[N->top])
        nest_pop(N);
    if (N->top > 0)
        nest_pop(N);
}

static void nest_chain(nesting *N)
{
    if (N->overflow)
        return;
    N->count[N->top]++;
    nest_raise(N, 1);
}

/* Siblings start over; `extra` is the level their common parent adds (AND/OR's BoolExpr). */
static void nest_separator(nesting *N, uint32_t extra)
{
    if (N->overflow)
        return;
    N->sum -= N->count[N->top];
    N->count[N->top] = extra;
    nest_raise(N, extra);
}

static void nest_statement_end(nesting *N)
{
    if (N->overflow)
        return;
    if (N->top > 0) {
        nest_separator(N, 0);
        return;
    }
    N->sum = 0;
    N->count[0] = 0;
}

enum { W_CHAIN = 1, W_SEPARATOR, W_BOOL, W_CASE, W_END };

static bool same_lower(const uint8_t *p, const char *w, size_t n)
{
    for (size_t k = 1; k < n; k++)
        if (lower(p[k]) != (uint8_t)w[k])
            return false;
    return true;
}

#define KEYWORD(word, role)                                                                                  \
    if (n == sizeof(word) - 1 && same_lower(p, word, n))                                                     \
    return role

/* Keywords that matter to the nesting estimate. Every identifier of every query comes
 * here, so the first letter picks the few candidates before any comparison. */
static int keyword_role(const uint8_t *p, size_t n)
{
    if (n < 2 || n > 9)
        return 0;
    switch (lower(p[0])) {
    case 'a':
        KEYWORD("at", W_CHAIN);
        KEYWORD("and", W_BOOL);
        return 0;
    case 'b':
        KEYWORD("between", W_CHAIN);
        return 0;
    case 'c':
        KEYWORD("case", W_CASE);
        KEYWORD("collate", W_CHAIN);
        return 0;
    case 'e':
        KEYWORD("end", W_END);
        KEYWORD("else", W_SEPARATOR);
        KEYWORD("except", W_CHAIN);
        return 0;
    case 'i':
        KEYWORD("is", W_CHAIN);
        KEYWORD("in", W_CHAIN);
        KEYWORD("ilike", W_CHAIN);
        KEYWORD("isnull", W_CHAIN);
        KEYWORD("intersect", W_CHAIN);
        return 0;
    case 'j':
        KEYWORD("join", W_CHAIN);
        return 0;
    case 'l':
        KEYWORD("like", W_CHAIN);
        return 0;
    case 'n':
        KEYWORD("not", W_CHAIN);
        KEYWORD("notnull", W_CHAIN);
        return 0;
    case 'o':
        KEYWORD("or", W_BOOL);
        KEYWORD("overlaps", W_CHAIN);
        return 0;
    case 's':
        KEYWORD("similar", W_CHAIN);
        return 0;
    case 't':
        KEYWORD("then", W_SEPARATOR);
        return 0;
    case 'u':
        KEYWORD("union", W_CHAIN);
        return 0;
    case 'w':
        KEYWORD("when", W_SEPARATOR);
        return 0;
    default:
        return 0;
    }
}

#undef KEYWORD

static void nest_word(nesting *N, const uint8_t *p, size_t n)
{
    switch (keyword_role(p, n)) {
    case W_CHAIN:
        nest_chain(N);
        break;
    case W_SEPARATOR:
        nest_separator(N, 0);
        break;
    case W_BOOL:
        nest_separator(N, 1);
        break;
    case W_CASE:
        nest_open(N, true);
        break;
    case W_END:
        nest_close(N, true);
        break;
    default:
        break;
    }
}

static bool is_op_char(uint8_t c)
{
    switch (c) {
    case '+':
    case '-':
    case '*':
    case '/':
    case '<':
    case '>':
    case '=':
    case '~':
    case '!':
    case '@':
    case '#':
    case '%':
    case '^':
    case '&':
    case '|':
    case '`':
    case '?':
    case ':':
        return true;
    default:
        return false;
    }
}

/* A separator is written only between two tokens, so the text has no leading or trailing
 * space and every run of whitespace and comments becomes exactly one space. */
static inline void token_start(lexer *L)
{
    if (L->space && L->o > 0)
        L->out[L->o++] = ' ';
    L->space = false;
    L->seg_tokens = true;
    L->prev_op = false;
}

static inline void emit(lexer *L, const uint8_t *p, size_t n)
{
    memcpy(L->out + L->o, p, n);
    L->o += n;
}

static int push_lit(lexer *L, size_t start, size_t end, prs_lit_kind kind, unsigned segments)
{
    pgs_buf *st = &L->lx->lit_store;
    if (st->cap - st->len < sizeof(prs_literal) && pgs_buf_reserve(st, sizeof(prs_literal)) < 0)
        return PRS_ENOMEM;
    prs_literal lit = {(uint32_t)start, (uint32_t)(end - start), (uint8_t)kind,
                       (uint8_t)(segments > 255 ? 255 : segments)};
    memcpy(st->data + st->len, &lit, sizeof lit);
    st->len += sizeof lit;
    L->lx->n_lits++;
    token_start(L);
    L->out[L->o++] = '?';
    return 0;
}

/* One quoted segment starting at the opening quote s[i]. Returns the index after the
 * closing quote, or 0 when the text ends first (0 cannot be a valid end). In E'' strings a
 * backslash escapes the next byte; everywhere but B'' and X'' a doubled quote is a quote. */
static size_t scan_segment(const uint8_t *s, size_t n, size_t i, prs_lit_kind kind)
{
    bool backslash = kind == PRS_LIT_ESTRING;
    bool doubled = kind != PRS_LIT_BITSTRING && kind != PRS_LIT_HEXSTRING;
    for (i++; i < n; i++) {
        if (s[i] == '\\' && backslash) {
            i++;
            continue;
        }
        if (s[i] != '\'')
            continue;
        if (doubled && i + 1 < n && s[i + 1] == '\'') {
            i++;
            continue;
        }
        return i + 1;
    }
    return 0;
}

/* PostgreSQL joins 'a' and 'b' into one constant when only whitespace containing a newline
 * separates them. Returns the index of the next segment's quote, or 0. */
static size_t continuation(const uint8_t *s, size_t n, size_t i)
{
    bool newline = false;
    for (; i < n && is_space(s[i]); i++)
        newline |= s[i] == '\n' || s[i] == '\r';
    return (newline && i < n && s[i] == '\'') ? i : 0;
}

/* After U&'...': whitespace, UESCAPE, whitespace, a string, which may go on in further
 * segments like any other ('!'<newline>'' is "!"). Returns the index after the clause, or 0
 * when there is none; *q is the string's opening quote. */
static size_t uescape_clause(const uint8_t *s, size_t n, size_t i, size_t *q)
{
    static const char kw[] = "uescape";
    while (i < n && is_space(s[i]))
        i++;
    if (n - i < sizeof kw - 1)
        return 0;
    for (size_t k = 0; k < sizeof kw - 1; k++)
        if (lower(s[i + k]) != (uint8_t)kw[k])
            return 0;
    i += sizeof kw - 1;
    if (i < n && is_ident_cont(s[i]))
        return 0;
    while (i < n && is_space(s[i]))
        i++;
    if (i >= n || s[i] != '\'')
        return 0;
    *q = i;
    for (;;) {
        size_t end = scan_segment(s, n, i, PRS_LIT_STRING);
        if (end == 0)
            return 0;
        i = continuation(s, n, end);
        if (i == 0)
            return end;
    }
}

/* A quoted literal whose first quote is at q and whose prefix starts at start. */
static int lex_quoted(lexer *L, size_t start, size_t q, prs_lit_kind kind, size_t *next)
{
    unsigned segments = 0;
    size_t end;
    for (;;) {
        end = scan_segment(L->s, L->n, q, kind);
        if (end == 0)
            return PRS_EUNTERM_STRING;
        segments++;
        q = continuation(L->s, L->n, end);
        if (q == 0)
            break;
    }
    if (kind == PRS_LIT_USTRING) {
        size_t esc_q;
        size_t u = uescape_clause(L->s, L->n, end, &esc_q);
        if (u)
            end = u;
    }
    *next = end;
    return push_lit(L, start, end, kind, segments);
}

static int lex_quoted_ident(lexer *L, size_t start, size_t q, size_t *next)
{
    const uint8_t *s = L->s;
    size_t i = q + 1;
    for (;;) {
        const uint8_t *e = i < L->n ? memchr(s + i, '"', L->n - i) : NULL;
        if (!e)
            return PRS_EUNTERM_IDENT;
        i = (size_t)(e - s) + 1;
        if (i < L->n && s[i] == '"') {
            i++;
            continue;
        }
        break;
    }
    token_start(L);
    emit(L, s + start, i - start);
    *next = i;
    return 0;
}

static size_t skip_digits(const uint8_t *s, size_t n, size_t i)
{
    while (i < n && is_digit(s[i]))
        i++;
    return i;
}

/* Numbers follow scan.l: 12, 12., 1.5, .5, 1e5, 1.5E-3. PostgreSQL 15 rejects a number
 * followed directly by an identifier character ("trailing junk", e.g. 0x1F or 12abc); such
 * a run is copied as it is rather than made a placeholder, so it never shares a cache key
 * with valid text. "1..5" is 1 followed by "..5", as in scan.l. */
static int lex_number(lexer *L, size_t i, size_t *next)
{
    const uint8_t *s = L->s;
    size_t n = L->n, start = i;
    i = skip_digits(s, n, i);
    if (i < n && s[i] == '.' && !(i + 1 < n && s[i + 1] == '.'))
        i = skip_digits(s, n, i + 1);
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        size_t k = i + 1;
        if (k < n && (s[k] == '+' || s[k] == '-'))
            k++;
        if (k < n && is_digit(s[k]))
            i = skip_digits(s, n, k);
    }
    if (i < n && is_ident_start(s[i])) {
        while (i < n && is_ident_cont(s[i]))
            i++;
        token_start(L);
        emit(L, s + start, i - start);
        *next = i;
        return 0;
    }
    *next = i;
    return push_lit(L, start, i, PRS_LIT_NUMBER, 1);
}

/* $n parameters are kept as they are; $tag$...$tag$ is a literal; a lone $ is itself. */
static int lex_dollar(lexer *L, size_t i, size_t *next)
{
    const uint8_t *s = L->s;
    size_t n = L->n, k = i + 1;
    if (k < n && is_digit(s[k])) {
        uint64_t num = 0;
        for (; k < n && is_digit(s[k]); k++)
            num = num > UINT32_MAX ? num : num * 10 + (uint64_t)(s[k] - '0');
        /* Only a character that starts an identifier makes the rest junk (scan.l's param_junk):
         * in $1$$x$$ a dollar-quoted string follows the parameter. */
        bool junk = k < n && is_ident_start(s[k]);
        while (junk && k < n && is_ident_cont(s[k]))
            k++;
        if (!junk && num > L->lx->max_param)
            L->lx->max_param = num > UINT32_MAX ? UINT32_MAX : (uint32_t)num;
        token_start(L);
        emit(L, s + i, k - i);
        *next = k;
        return 0;
    }
    if (k < n && is_ident_start(s[k]))
        while (k < n && is_dolq_cont(s[k]))
            k++;
    if (k >= n || s[k] != '$') {
        token_start(L);
        emit(L, s + i, 1);
        *next = i + 1;
        return 0;
    }
    size_t tag_len = k - i + 1;
    const uint8_t *tag = s + i;
    for (size_t j = k + 1; j + tag_len <= n; j++) {
        const uint8_t *d = memchr(s + j, '$', n - j);
        if (!d || (size_t)(d - s) + tag_len > n)
            break;
        j = (size_t)(d - s);
        if (memcmp(d, tag, tag_len) == 0) {
            *next = j + tag_len;
            return push_lit(L, i, j + tag_len, PRS_LIT_DOLLAR, 1);
        }
    }
    return PRS_EUNTERM_DOLLAR;
}

/* Words of a hint comment, e.g. "pgshard: target=replica, max_lag_ms=200 tenant='acme'". */
static bool word_is(const uint8_t *p, size_t n, const char *w)
{
    size_t wn = strlen(w);
    if (n != wn)
        return false;
    for (size_t k = 0; k < n; k++)
        if (lower(p[k]) != (uint8_t)w[k])
            return false;
    return true;
}

static bool hint_value(prs_hints *h, const uint8_t *key, size_t kn, const uint8_t *v, size_t vn,
                       uint32_t v_off)
{
    if (word_is(key, kn, "target")) {
        static const char *const names[] = {"primary", "replica", "any"};
        for (size_t t = 0; t < 3; t++)
            if (word_is(v, vn, names[t])) {
                h->target = (uint8_t)(PRS_TARGET_PRIMARY + t);
                return true;
            }
        return false;
    }
    if (word_is(key, kn, "max_lag_ms")) {
        uint64_t ms = 0;
        if (vn == 0 || vn > 10)
            return false;
        for (size_t k = 0; k < vn; k++) {
            if (!is_digit(v[k]))
                return false;
            ms = ms * 10 + (uint64_t)(v[k] - '0');
        }
        if (ms > UINT32_MAX)
            return false;
        h->max_lag_ms = (uint32_t)ms;
        h->has_max_lag = true;
        return true;
    }
    if (word_is(key, kn, "tenant") && vn > 0) {
        h->tenant_start = v_off;
        h->tenant_len = (uint32_t)vn;
        return true;
    }
    return false;
}

static inline bool hint_sep(uint8_t c)
{
    return is_space(c) || c == ',';
}

/* body[0..n) is the inside of a block comment at offset off of the text. */
static void parse_hint(prs_hints *h, const uint8_t *body, size_t n, uint32_t off)
{
    static const char tag[] = "pgshard:";
    size_t i = 0;
    while (i < n && is_space(body[i]))
        i++;
    if (n - i < sizeof tag - 1 || !word_is(body + i, sizeof tag - 1, tag))
        return;
    h->present = true;
    i += sizeof tag - 1;
    for (;;) {
        while (i < n && hint_sep(body[i]))
            i++;
        if (i >= n)
            return;
        size_t k0 = i;
        while (i < n && !hint_sep(body[i]) && body[i] != '=')
            i++;
        size_t kn = i - k0;
        if (i >= n || body[i] != '=') {
            h->malformed = true;
            continue;
        }
        i++;
        size_t v0 = i, vn;
        if (i < n && body[i] == '\'') {
            const uint8_t *q = memchr(body + i + 1, '\'', n - i - 1);
            if (!q) {
                h->malformed = true;
                return;
            }
            v0 = i + 1;
            vn = (size_t)(q - body) - v0;
            i = (size_t)(q - body) + 1;
        } else {
            while (i < n && !hint_sep(body[i]))
                i++;
            vn = i - v0;
        }
        if (!hint_value(h, body + k0, kn, body + v0, vn, off + (uint32_t)v0))
            h->malformed = true;
    }
}

/* A block comment at s[i] = '/', s[i+1] = '*'. Nests, as in PostgreSQL. */
static int lex_block_comment(lexer *L, size_t i, size_t *next)
{
    const uint8_t *s = L->s;
    size_t n = L->n, body = i + 2;
    unsigned long nest = 1;
    for (i += 2; i + 1 < n; i++) {
        if (s[i] == '/' && s[i + 1] == '*') {
            nest++;
            i++;
        } else if (s[i] == '*' && s[i + 1] == '/') {
            i++;
            if (--nest == 0) {
                parse_hint(&L->lx->hints, s + body, i - 1 - body, (uint32_t)body);
                *next = i + 1;
                L->space = true;
                return 0;
            }
        }
    }
    return PRS_EUNTERM_COMMENT;
}

/* Words starting at s[i]: the prefixes of special literals first, then plain identifiers
 * (kept byte for byte: `SELECT` and `select` are two cache keys, which is harmless). */
static int lex_word(lexer *L, size_t i, size_t *next)
{
    const uint8_t *s = L->s;
    size_t n = L->n;
    uint8_t c = lower(s[i]);
    if (i + 1 < n && s[i + 1] == '\'') {
        if (c == 'e')
            return lex_quoted(L, i, i + 1, PRS_LIT_ESTRING, next);
        if (c == 'b')
            return lex_quoted(L, i, i + 1, PRS_LIT_BITSTRING, next);
        if (c == 'x')
            return lex_quoted(L, i, i + 1, PRS_LIT_HEXSTRING, next);
    }
    if (c == 'u' && i + 2 < n && s[i + 1] == '&') {
        if (s[i + 2] == '\'')
            return lex_quoted(L, i, i + 2, PRS_LIT_USTRING, next);
        if (s[i + 2] == '"')
            return lex_quoted_ident(L, i, i + 2, next);
    }
    size_t k = i + 1;
    while (k < n && is_ident_cont(s[k]))
        k++;
    nest_word(&L->nest, s + i, k - i);
    token_start(L);
    emit(L, s + i, k - i);
    *next = k;
    return 0;
}

static int lex_other(lexer *L, size_t i, size_t *next)
{
    uint8_t c = L->s[i];
    *next = i + 1;
    if (c == ';') {
        L->out[L->o++] = ';';
        L->space = false;
        L->prev_op = false;
        nest_statement_end(&L->nest);
        if (L->depth == 0 && L->seg_tokens) {
            L->lx->n_statements++;
            L->seg_tokens = false;
        }
        return 0;
    }
    /* An operator is a run of operator characters: count the run once. */
    bool op = is_op_char(c);
    if (op && !(L->prev_op && !L->space))
        nest_chain(&L->nest);
    token_start(L);
    L->prev_op = op;
    if (c == '(' || c == '[')
        nest_open(&L->nest, false);
    else if (c == ')' || c == ']')
        nest_close(&L->nest, false);
    else if (c == ',')
        nest_separator(&L->nest, 0);
    if (c == '(')
        L->depth++;
    else if (c == ')' && L->depth > 0)
        L->depth--;
    /* `?` is the placeholder, so the jsonb operators' `?` and a stray backslash are escaped
     * to keep distinct texts distinct. */
    if (c == '?' || c == '\\')
        L->out[L->o++] = '\\';
    /* ".." is one token (scan.l's dot_dot), so "..5" is ".." and 5, not "." and .5. */
    if (c == '.' && i + 1 < L->n && L->s[i + 1] == '.') {
        L->out[L->o++] = '.';
        *next = i + 2;
    }
    L->out[L->o++] = c;
    return 0;
}

static int lex_one(lexer *L, size_t i, size_t *next)
{
    const uint8_t *s = L->s;
    size_t n = L->n;
    uint8_t c = s[i];
    if (is_space(c)) {
        while (i < n && is_space(s[i]))
            i++;
        L->space = true;
        *next = i;
        return 0;
    }
    if (c == '-' && i + 1 < n && s[i + 1] == '-') {
        while (i < n && s[i] != '\n' && s[i] != '\r')
            i++;
        L->space = true;
        *next = i;
        return 0;
    }
    if (c == '/' && i + 1 < n && s[i + 1] == '*')
        return lex_block_comment(L, i, next);
    if (c == '\'')
        return lex_quoted(L, i, i, PRS_LIT_STRING, next);
    if (c == '"')
        return lex_quoted_ident(L, i, i, next);
    if (is_ident_start(c))
        return lex_word(L, i, next);
    if (is_digit(c) || (c == '.' && i + 1 < n && is_digit(s[i + 1])))
        return lex_number(L, i, next);
    if (c == '$')
        return lex_dollar(L, i, next);
    return lex_other(L, i, next);
}

static void lexed_reset(prs_lexed *lx)
{
    pgs_buf_clear(&lx->norm);
    pgs_buf_clear(&lx->lit_store);
    lx->lits = NULL;
    lx->n_lits = 0;
    lx->max_param = 0;
    lx->n_statements = 0;
    lx->max_nesting = 0;
    lx->hash = 0;
    memset(&lx->hints, 0, sizeof lx->hints);
}

int prs_lex(const char *sql, size_t len, prs_lexed *out)
{
    if (!out || (!sql && len))
        return PRS_EINVAL;
    lexed_reset(out);
    if (len > UINT32_MAX / 2)
        return PRS_ETOOLONG;
    /* The text never grows by more than the escaped `?` and `\`, so one reservation of
     * twice the input covers every write below. */
    if (len && memchr(sql, 0, len))
        return PRS_ENUL;
    if (pgs_buf_reserve(&out->norm, 2 * len + 1) < 0)
        return PRS_ENOMEM;
    lexer L;
    L.s = (const uint8_t *)sql;
    L.n = len;
    L.out = out->norm.data;
    L.o = 0;
    L.space = L.seg_tokens = false;
    L.depth = 0;
    L.prev_op = false;
    L.lx = out;
    L.nest.sum = L.nest.max = L.nest.top = 0;
    L.nest.overflow = false;
    L.nest.count[0] = 0;
    L.nest.is_case[0] = false;
    size_t i = 0;
    while (i < len) {
        int rc = lex_one(&L, i, &i);
        if (rc < 0) {
            lexed_reset(out);
            return rc;
        }
    }
    if (L.seg_tokens)
        out->n_statements++;
    out->norm.len = L.o;
    out->max_nesting = L.nest.max;
    out->lits = (const prs_literal *)out->lit_store.data;
    out->hash = prs_hash64(out->norm.data, out->norm.len, 0);
    return 0;
}

void prs_lexed_free(prs_lexed *lx)
{
    pgs_buf_free(&lx->norm);
    pgs_buf_free(&lx->lit_store);
    lexed_reset(lx);
}

int prs_lexed_find(const prs_lexed *lx, uint32_t at)
{
    size_t lo = 0, hi = lx->n_lits;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (lx->lits[mid].start < at)
            lo = mid + 1;
        else
            hi = mid;
    }
    return (lo < lx->n_lits && lx->lits[lo].start == at) ? (int)lo : -1;
}

/* ---- literal values ---- */

static int hexval(uint8_t c)
{
    if (is_digit(c))
        return c - '0';
    c = lower(c);
    return (c >= 'a' && c <= 'f') ? c - 'a' + 10 : -1;
}

static int put_utf8(pgs_buf *out, uint32_t cp)
{
    uint8_t b[4];
    size_t n;
    if (cp == 0 || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return PRS_EINVAL;
    if (cp < 0x80) {
        b[0] = (uint8_t)cp;
        n = 1;
    } else if (cp < 0x800) {
        b[0] = (uint8_t)(0xC0 | (cp >> 6));
        b[1] = (uint8_t)(0x80 | (cp & 0x3F));
        n = 2;
    } else if (cp < 0x10000) {
        b[0] = (uint8_t)(0xE0 | (cp >> 12));
        b[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
        b[2] = (uint8_t)(0x80 | (cp & 0x3F));
        n = 3;
    } else {
        b[0] = (uint8_t)(0xF0 | (cp >> 18));
        b[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3F));
        b[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
        b[3] = (uint8_t)(0x80 | (cp & 0x3F));
        n = 4;
    }
    return pgs_buf_append(out, b, n) < 0 ? PRS_ENOMEM : 0;
}

/* Reads up to max hex digits (exactly max when exact) at p[*i]. */
static int read_hex(const uint8_t *p, size_t n, size_t *i, unsigned max, bool exact, uint32_t *cp)
{
    uint32_t v = 0;
    unsigned k = 0;
    for (; k < max && *i < n && hexval(p[*i]) >= 0; k++, (*i)++)
        v = v * 16 + (uint32_t)hexval(p[*i]);
    if (k == 0 || (exact && k < max))
        return PRS_EINVAL;
    *cp = v;
    return 0;
}

/* A code point from \u or \U escapes; a high surrogate must be followed by a low one. */
static int put_code_point(pgs_buf *out, uint32_t cp, uint32_t *pending_high)
{
    if (cp >= 0xD800 && cp <= 0xDBFF) {
        if (*pending_high)
            return PRS_EINVAL;
        *pending_high = cp;
        return 0;
    }
    if (cp >= 0xDC00 && cp <= 0xDFFF) {
        if (!*pending_high)
            return PRS_EINVAL;
        cp = 0x10000 + ((*pending_high - 0xD800) << 10) + (cp - 0xDC00);
        *pending_high = 0;
    } else if (*pending_high) {
        return PRS_EINVAL;
    }
    return put_utf8(out, cp);
}

/* The inside of one E'' segment. */
static int decode_e(const uint8_t *p, size_t n, pgs_buf *out, uint32_t *high)
{
    for (size_t i = 0; i < n;) {
        uint8_t c = p[i++];
        if (c == '\'' && i < n && p[i] == '\'') {
            i++;
        } else if (c == '\\' && i < n) {
            uint8_t e = p[i++];
            uint32_t cp;
            int rc;
            switch (e) {
            case 'b':
                c = '\b';
                break;
            case 'f':
                c = '\f';
                break;
            case 'n':
                c = '\n';
                break;
            case 'r':
                c = '\r';
                break;
            case 't':
                c = '\t';
                break;
            case 'x':
                if (read_hex(p, n, &i, 2, false, &cp) < 0) {
                    c = 'x';
                    break;
                }
                c = (uint8_t)cp;
                break;
            case 'u':
            case 'U':
                rc = read_hex(p, n, &i, e == 'u' ? 4 : 8, true, &cp);
                if (rc == 0)
                    rc = put_code_point(out, cp, high);
                if (rc < 0)
                    return rc;
                continue;
            default:
                c = e;
                if (e >= '0' && e <= '7') {
                    unsigned v = (unsigned)(e - '0');
                    for (int k = 0; k < 2 && i < n && p[i] >= '0' && p[i] <= '7'; k++)
                        v = v * 8 + (unsigned)(p[i++] - '0');
                    c = (uint8_t)v;
                }
            }
        }
        if (*high)
            return PRS_EINVAL;
        if (c == 0)
            return PRS_EINVAL;
        if (pgs_buf_append_u8(out, c) < 0)
            return PRS_ENOMEM;
    }
    return 0;
}

/* The inside of one U&'' segment with escape character esc. */
static int decode_u(const uint8_t *p, size_t n, uint8_t esc, pgs_buf *out, uint32_t *high)
{
    for (size_t i = 0; i < n;) {
        uint8_t c = p[i++];
        if (c == '\'' && i < n && p[i] == '\'') {
            i++;
        } else if (c == esc) {
            if (i < n && p[i] == esc) {
                i++;
            } else {
                uint32_t cp;
                bool plus = i < n && p[i] == '+';
                i += plus;
                int rc = read_hex(p, n, &i, plus ? 6 : 4, true, &cp);
                if (rc == 0)
                    rc = put_code_point(out, cp, high);
                if (rc < 0)
                    return rc;
                continue;
            }
        }
        if (*high)
            return PRS_EINVAL;
        if (pgs_buf_append_u8(out, c) < 0)
            return PRS_ENOMEM;
    }
    return 0;
}

static int decode_plain(const uint8_t *p, size_t n, bool doubled, pgs_buf *out)
{
    for (size_t i = 0; i < n; i++) {
        if (pgs_buf_append_u8(out, p[i]) < 0)
            return PRS_ENOMEM;
        if (doubled && p[i] == '\'' && i + 1 < n && p[i + 1] == '\'')
            i++;
    }
    return 0;
}

static int decode_segments(const uint8_t *s, size_t end, size_t q, prs_lit_kind kind, uint8_t esc,
                           pgs_buf *out)
{
    uint32_t high = 0;
    for (;;) {
        size_t close = scan_segment(s, end, q, kind);
        if (close == 0)
            return PRS_EINVAL;
        const uint8_t *in = s + q + 1;
        size_t in_n = close - 1 - (q + 1);
        int rc;
        if (kind == PRS_LIT_ESTRING)
            rc = decode_e(in, in_n, out, &high);
        else if (kind == PRS_LIT_USTRING)
            rc = decode_u(in, in_n, esc, out, &high);
        else
            rc = decode_plain(in, in_n, kind == PRS_LIT_STRING, out);
        if (rc < 0)
            return rc;
        q = continuation(s, end, close);
        if (q == 0)
            return high ? PRS_EINVAL : 0;
    }
}

/* The escape character of a U& literal: the UESCAPE clause's, if the literal has one. */
static int uescape_char(const uint8_t *s, size_t end, size_t q, uint8_t *esc)
{
    size_t close;
    for (;;) {
        close = scan_segment(s, end, q, PRS_LIT_USTRING);
        if (close == 0)
            return PRS_EINVAL;
        q = continuation(s, end, close);
        if (q == 0)
            break;
    }
    *esc = '\\';
    if (close == end)
        return 0;
    size_t esc_q;
    size_t u = uescape_clause(s, end, close, &esc_q);
    if (u == 0 || u != end)
        return PRS_EINVAL;
    /* The escape character is the value of that string, which is one byte. */
    pgs_buf v = PGS_BUF_INIT;
    int rc = decode_segments(s, end, esc_q, PRS_LIT_STRING, 0, &v);
    uint8_t c = v.len == 1 ? v.data[0] : 0;
    pgs_buf_free(&v);
    if (rc < 0)
        return rc;
    if (c == 0 || is_space(c) || is_digit(c) || hexval(c) >= 0 || c == '+' || c == '\'' || c == '"')
        return PRS_EINVAL;
    *esc = c;
    return 0;
}

int prs_literal_value(const char *sql, size_t len, const prs_literal *lit, pgs_buf *out)
{
    if (!sql || !lit || !out || lit->len == 0 || (size_t)lit->start + lit->len > len)
        return PRS_EINVAL;
    const uint8_t *s = (const uint8_t *)sql;
    size_t start = lit->start, end = start + lit->len;
    uint8_t esc;
    int rc;
    switch ((prs_lit_kind)lit->kind) {
    case PRS_LIT_NUMBER:
        return pgs_buf_append(out, s + start, lit->len) < 0 ? PRS_ENOMEM : 0;
    case PRS_LIT_STRING:
        return decode_segments(s, end, start, PRS_LIT_STRING, 0, out);
    case PRS_LIT_ESTRING:
    case PRS_LIT_BITSTRING:
    case PRS_LIT_HEXSTRING:
        return decode_segments(s, end, start + 1, (prs_lit_kind)lit->kind, 0, out);
    case PRS_LIT_USTRING:
        rc = uescape_char(s, end, start + 2, &esc);
        if (rc < 0)
            return rc;
        return decode_segments(s, end, start + 2, PRS_LIT_USTRING, esc, out);
    case PRS_LIT_DOLLAR: {
        const uint8_t *t = memchr(s + start + 1, '$', lit->len - 1);
        size_t tag = t ? (size_t)(t - (s + start)) + 1 : 0;
        if (tag == 0 || 2 * tag > lit->len)
            return PRS_EINVAL;
        return pgs_buf_append(out, s + start + tag, lit->len - 2 * tag) < 0 ? PRS_ENOMEM : 0;
    }
    }
    return PRS_EINVAL;
}

/* ---- hash ---- */

#define H_P1 11400714785074694791ULL
#define H_P2 14029467366897019727ULL
#define H_P3 1609587929392839161ULL
#define H_P4 9650029242287828579ULL
#define H_P5 2870177450012600261ULL

static inline uint64_t rotl64(uint64_t x, int r)
{
    return (x << r) | (x >> (64 - r));
}

/* xxHash64's tail loop applied to the whole input: one multiply-rotate round per 8 bytes and
 * its avalanche at the end. Query texts are short, so the four-lane bulk loop would not pay;
 * the values are only ever compared within one process. */
uint64_t prs_hash64(const void *p, size_t n, uint64_t seed)
{
    const uint8_t *b = p;
    uint64_t h = seed + H_P5 + (uint64_t)n;
    for (; n >= 8; b += 8, n -= 8) {
        uint64_t k;
        memcpy(&k, b, 8);
        k *= H_P2;
        k = rotl64(k, 31);
        k *= H_P1;
        h ^= k;
        h = rotl64(h, 27) * H_P1 + H_P4;
    }
    if (n >= 4) {
        uint32_t k;
        memcpy(&k, b, 4);
        h ^= (uint64_t)k * H_P1;
        h = rotl64(h, 23) * H_P2 + H_P3;
        b += 4;
        n -= 4;
    }
    for (; n > 0; b++, n--) {
        h ^= (uint64_t)*b * H_P5;
        h = rotl64(h, 11) * H_P1;
    }
    h ^= h >> 33;
    h *= H_P2;
    h ^= h >> 29;
    h *= H_P3;
    h ^= h >> 32;
    return h;
}

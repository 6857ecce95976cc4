/* px_copy_split: COPY FROM STDIN data cut into rows and each row's key field read, by the
 * rules of PostgreSQL 15's copyfromparse.c (CopyReadLineText, CopyReadAttributesText/CSV,
 * the binary tuple reader), so rows are cut where the servers will cut them and the same
 * data errors are raised before anything reaches a shard. It neither routes nor sends.
 *
 * Rows are scanned in the caller's chunk and handed over from it without a copy; only a
 * row cut by a chunk's end is gathered in one buffer, kept between rows. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/sqlstate.h"
#include "proxy/copysplit.h"

/* A pending buffer this large is given back after its row rather than kept. */
#define KEEP_BUF_MAX ((size_t)1 << 20)

typedef enum eol_type { EOL_UNKNOWN, EOL_NL, EOL_CR, EOL_CRNL } eol_type;

/* Where the text/CSV line reader is between two bytes. Each state but LS_NORMAL waits for
 * the one byte that decides what the previous ones were. */
typedef enum line_state {
    LS_NORMAL,
    LS_CR,        /* an unquoted \r, when \r\n is possible: is a \n next? */
    LS_BACKSLASH, /* a backslash (text), or one starting a CSV line: is a '.' next? */
    LS_DOT_CRNL,  /* \. in \r\n mode: a \r must follow */
    LS_DOT,       /* \. (and \r in \r\n mode): the newline must follow */
} line_state;

/* Where the binary reader is: each state reads one item of the format. */
typedef enum bin_state {
    BS_SIGNATURE, /* 11 bytes */
    BS_FLAGS,     /* int32 */
    BS_EXTLEN,    /* int32 */
    BS_EXT,       /* the header extension's bytes */
    BS_COUNT,     /* int16: a tuple's field count, or -1 */
    BS_FLEN,      /* int32: a field's length, or -1 */
    BS_FDATA,     /* a field's bytes */
    BS_DONE,      /* after the trailer */
} bin_state;

typedef enum scan_rc {
    SCAN_CONT,
    SCAN_MORE,
    SCAN_ROW,
    SCAN_END,
    SCAN_HEADER,
    SCAN_TRAILER,
    SCAN_ERR
} scan_rc;

/* Slots of the per-chunk cache of the next occurrence of each special byte. */
enum { NX_NL, NX_CR, NX_BACKSLASH, NX_QUOTE, NX_ESCAPE, NX_COUNT };

static const uint8_t binary_signature[11] = {'P', 'G', 'C', 'O', 'P', 'Y', '\n', 0377, '\r', '\n', '\0'};

/* Members are grouped by size (pointers and sizes, then ints, then bytes and flags) so the
 * struct carries no padding; each group says which part of the work it serves. */
struct px_copy_split {
    /* Set up once. */
    char *null_str; /* owned */
    size_t null_len;
    char *key_name;   /* owned; NULL when unknown */
    size_t n_columns; /* 0 when unknown */
    size_t max_row;
    px_copy_part_fn part_fn;
    void *part_arg;
    size_t line; /* the line or tuple being read, 1-based */

    /* The row being read: the bytes of it seen in earlier chunks, and how many bytes of it
     * precede the segment being scanned now. */
    pgs_buf pend; /* owned */
    size_t rlen;
    pgs_buf key; /* owned: a de-escaped key, reused row after row */

    /* The chunk being fed and the next occurrence in it of each special byte (NULL: not
     * looked for yet; chunk_end: none left). */
    const uint8_t *chunk_end;
    const uint8_t *next[NX_COUNT];

    /* Text/CSV line reader: row offsets of the line terminator and of the backslash that
     * may start \., and how many bytes after that backslash were read (see not_marker). */
    size_t term_at;
    size_t mark_at;
    size_t dot_n;

    /* Binary reader. */
    size_t ib_n;   /* bytes of ib gathered */
    size_t brem;   /* bytes left in BS_EXT or BS_FDATA */
    size_t key_at; /* row offset of the key field's bytes */

    prs_copy_format format;
    int quote;        /* csv */
    int escape;       /* csv; -1 when it is the quote, as the line reader ignores it then */
    int field_escape; /* csv: the escape as the field reader sees it (even when = quote) */
    int key_index;
    eol_type eol;
    line_state ls;
    bin_state bs;
    int n_fields, field; /* of the binary tuple being read */
    int32_t key_len;     /* binary; -1: NULL */

    uint8_t delim;
    bool force_not_null, force_null;
    bool header_pending; /* text/csv HEADER: the next line is the header */
    bool header_match;   /* HEADER MATCH: the servers parse the header's fields too */
    bool ended;
    bool failed;
    bool in_quote, last_was_esc, first_char;
    uint8_t dot[3];                      /* the bytes read after a line's first backslash */
    uint8_t ib[sizeof binary_signature]; /* the binary item being gathered */
    char sqlstate[6];
    char message[256];
};

/* ---- errors ---- */

static int split_fail(px_copy_split *s, const char *sqlstate, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int split_fail(px_copy_split *s, const char *sqlstate, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(s->message, sizeof s->message, fmt, ap);
    va_end(ap);
    if (n < 0)
        s->message[0] = '\0';
    memcpy(s->sqlstate, sqlstate, 6);
    s->failed = true;
    return PX_COPY_EDATA;
}

static int bad_format(px_copy_split *s, const char *msg)
{
    return split_fail(s, PGS_SQLSTATE_BAD_COPY_FILE_FORMAT, "%s", msg);
}

static int out_of_memory(px_copy_split *s)
{
    return split_fail(s, PGS_SQLSTATE_OUT_OF_MEMORY, "out of memory");
}

static int too_long(px_copy_split *s)
{
    return split_fail(s, PGS_SQLSTATE_PROGRAM_LIMIT_EXCEEDED, "COPY row is larger than %zu bytes",
                      s->max_row);
}

static int stopped(px_copy_split *s)
{
    split_fail(s, PGS_SQLSTATE_INTERNAL_ERROR, "COPY splitting was stopped by its consumer");
    return PX_COPY_ESTOP;
}

static int missing_data(px_copy_split *s)
{
    if (s->key_name)
        return split_fail(s, PGS_SQLSTATE_BAD_COPY_FILE_FORMAT, "missing data for column \"%s\"",
                          s->key_name);
    return split_fail(s, PGS_SQLSTATE_BAD_COPY_FILE_FORMAT, "missing data for column %d", s->key_index + 1);
}

/* ---- creation ---- */

static int split_set_key(px_copy_split *s, const prs_copy_opts *o, const char *name)
{
    free(s->key_name);
    s->key_name = NULL;
    if (!name)
        return 0;
    s->key_name = strdup(name);
    if (!s->key_name)
        return -1;
    s->force_not_null = prs_copy_names_has(&o->force_not_null, name);
    s->force_null = prs_copy_names_has(&o->force_null, name);
    return 0;
}

static void split_set_csv(px_copy_split *s, const prs_copy_opts *o)
{
    s->quote = (unsigned char)o->quote;
    s->field_escape = (unsigned char)o->escape;
    /* CopyReadLineText ignores the escape when it is the quote: "" then toggles twice. */
    s->escape = o->escape == o->quote ? -1 : (unsigned char)o->escape;
}

px_copy_split *px_copy_split_new(const prs_copy_opts *o, int key_index)
{
    if (!o || o->dir != PRS_COPY_FROM_STDIN || key_index < 0 || key_index >= PRS_COPY_MAX_COLUMNS)
        return NULL;
    if (o->columns.n && (size_t)key_index >= o->columns.n)
        return NULL;
    px_copy_split *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->format = o->format;
    s->delim = (uint8_t)o->delimiter;
    s->quote = s->escape = s->field_escape = -1;
    if (o->format == PRS_COPY_CSV)
        split_set_csv(s, o);
    s->key_index = key_index;
    s->max_row = PX_COPY_DEFAULT_MAX_ROW;
    s->header_pending = o->format != PRS_COPY_BINARY && o->header != PRS_COPY_HEADER_FALSE;
    s->header_match = o->header == PRS_COPY_HEADER_MATCH;
    s->first_char = true;
    s->line = 1;
    s->n_columns = o->columns.n;
    s->null_str = strdup(o->null_str ? o->null_str : "");
    s->null_len = o->null_str ? o->null_len : 0;
    if (!s->null_str || (o->columns.n && split_set_key(s, o, o->columns.names[key_index]) != 0)) {
        px_copy_split_free(s);
        return NULL;
    }
    return s;
}

int px_copy_split_set_columns(px_copy_split *s, const prs_copy_opts *o, size_t n_columns,
                              const char *key_name)
{
    if (!s || !o)
        return -1;
    s->n_columns = n_columns;
    return split_set_key(s, o, key_name);
}

void px_copy_split_set_part_fn(px_copy_split *s, px_copy_part_fn fn, void *arg)
{
    s->part_fn = fn;
    s->part_arg = arg;
}

void px_copy_split_set_max_row(px_copy_split *s, size_t max_row)
{
    s->max_row = max_row;
}

void px_copy_split_free(px_copy_split *s)
{
    if (!s)
        return;
    pgs_buf_free(&s->pend);
    pgs_buf_free(&s->key);
    free(s->null_str);
    free(s->key_name);
    free(s);
}

bool px_copy_split_ended(const px_copy_split *s)
{
    return s->ended;
}

const char *px_copy_split_error(const px_copy_split *s, const char **sqlstate)
{
    if (!s->failed)
        return NULL;
    if (sqlstate)
        *sqlstate = s->sqlstate;
    return s->message;
}

size_t px_copy_split_line(const px_copy_split *s)
{
    return s->line;
}

/* ---- the text/CSV line reader ---- */

/* The next c at or after from in the current chunk, or chunk_end; each byte of a chunk is
 * searched at most once per special byte, however many rows and escapes it holds. */
static const uint8_t *next_of(px_copy_split *s, int slot, int c, const uint8_t *from)
{
    const uint8_t *n = s->next[slot];
    if (n && n >= from)
        return n;
    if (c < 0)
        n = s->chunk_end;
    else {
        n = memchr(from, c, (size_t)(s->chunk_end - from));
        if (!n)
            n = s->chunk_end;
    }
    s->next[slot] = n;
    return n;
}

static const uint8_t *min_ptr(const uint8_t *a, const uint8_t *b)
{
    return a < b ? a : b;
}

/* The first byte at or after i that the line reader must look at. */
static size_t skip_plain(px_copy_split *s, const uint8_t *b, size_t i)
{
    const uint8_t *from = b + i, *n;
    if (s->format == PRS_COPY_TEXT) {
        n = min_ptr(next_of(s, NX_NL, '\n', from), next_of(s, NX_BACKSLASH, '\\', from));
        n = min_ptr(n, next_of(s, NX_CR, '\r', from));
    } else if (s->in_quote) {
        n = min_ptr(next_of(s, NX_QUOTE, s->quote, from), next_of(s, NX_ESCAPE, s->escape, from));
        /* The bytes skipped are not the escape: each would have cleared last_was_esc. */
        if (n > from)
            s->last_was_esc = false;
    } else {
        n = min_ptr(next_of(s, NX_NL, '\n', from), next_of(s, NX_CR, '\r', from));
        n = min_ptr(n, next_of(s, NX_QUOTE, s->quote, from));
    }
    return (size_t)(n - b);
}

static scan_rc line_error(px_copy_split *s, const char *text_msg, const char *csv_msg)
{
    bad_format(s, s->format == PRS_COPY_CSV ? csv_msg : text_msg);
    return SCAN_ERR;
}

static scan_rc on_cr(px_copy_split *s, size_t at)
{
    s->term_at = at;
    if (s->eol == EOL_NL)
        return line_error(s, "literal carriage return found in data",
                          "unquoted carriage return found in data");
    if (s->eol == EOL_CR)
        return SCAN_ROW;
    s->ls = LS_CR;
    return SCAN_CONT;
}

static scan_rc on_nl(px_copy_split *s, size_t at)
{
    if (s->eol == EOL_CR || s->eol == EOL_CRNL)
        return line_error(s, "literal newline found in data", "unquoted newline found in data");
    s->eol = EOL_NL;
    s->term_at = at;
    return SCAN_ROW;
}

static void csv_quote_state(px_copy_split *s, int c)
{
    if (s->in_quote && c == s->escape)
        s->last_was_esc = !s->last_was_esc;
    if (c == s->quote && !s->last_was_esc)
        s->in_quote = !s->in_quote;
    if (c != s->escape)
        s->last_was_esc = false;
}

/* One byte the fast scan stopped at (at: its row offset), in LS_NORMAL. */
static scan_rc normal_byte(px_copy_split *s, uint8_t c, size_t at)
{
    bool csv = s->format == PRS_COPY_CSV;
    bool first = s->first_char;
    s->first_char = false;
    if (csv)
        csv_quote_state(s, c);
    if (c == '\r' && !(csv && s->in_quote))
        return on_cr(s, at);
    if (c == '\n' && !(csv && s->in_quote))
        return on_nl(s, at);
    /* In CSV, \. is data except alone at the start of a line. */
    if (c == '\\' && (!csv || first)) {
        s->mark_at = at;
        s->ls = LS_BACKSLASH;
    }
    return SCAN_CONT;
}

/* The byte after an unquoted \r: \r\n, or a lone \r ending the line (not consumed). */
static scan_rc after_cr(px_copy_split *s, uint8_t c, size_t *i)
{
    s->ls = LS_NORMAL;
    if (c == '\n') {
        (*i)++;
        s->eol = EOL_CRNL;
        return SCAN_ROW;
    }
    if (s->eol == EOL_CRNL)
        return line_error(s, "literal carriage return found in data",
                          "unquoted carriage return found in data");
    s->eol = EOL_CR;
    return SCAN_ROW;
}

static scan_rc after_backslash(px_copy_split *s, uint8_t c, size_t *i)
{
    s->ls = LS_NORMAL;
    if (c == '.') {
        (*i)++;
        s->dot[0] = '.';
        s->dot_n = 1;
        s->ls = s->eol == EOL_CRNL ? LS_DOT_CRNL : LS_DOT;
    } else if (s->format == PRS_COPY_TEXT) {
        (*i)++; /* the escaped byte, whatever it is, even a newline */
    }
    return SCAN_CONT;
}

/* A \. that turns out not to be the end marker. Text format has no such thing. In CSV it
 * was data: PostgreSQL goes back to the byte after the backslash and reads on from there
 * (NO_END_OF_COPY_GOTO), so the bytes taken since are read again here, as data — a quote
 * among them opens a quoted field, a newline among them is checked as any newline. They
 * cannot end the line: the ones that would have were the marker's. */
static scan_rc not_marker(px_copy_split *s, const char *text_msg)
{
    if (s->format == PRS_COPY_TEXT)
        return line_error(s, text_msg, text_msg);
    s->ls = LS_NORMAL;
    for (size_t k = 0; k < s->dot_n; k++) {
        size_t at = s->mark_at + 1 + k, none = 0;
        scan_rc rc = s->ls == LS_CR ? after_cr(s, s->dot[k], &none) : normal_byte(s, s->dot[k], at);
        if (rc == SCAN_ROW)
            return line_error(s, "end-of-copy marker corrupt", "end-of-copy marker corrupt");
        if (rc != SCAN_CONT)
            return rc;
    }
    return SCAN_CONT;
}

static scan_rc after_dot(px_copy_split *s, uint8_t c, size_t *i)
{
    (*i)++;
    if (s->dot_n < sizeof s->dot)
        s->dot[s->dot_n++] = c;
    if (s->ls == LS_DOT_CRNL) {
        if (c == '\n')
            return not_marker(s, "end-of-copy marker does not match previous newline style");
        if (c != '\r')
            return not_marker(s, "end-of-copy marker corrupt");
        s->ls = LS_DOT;
        return SCAN_CONT;
    }
    if (c != '\r' && c != '\n')
        return not_marker(s, "end-of-copy marker corrupt");
    if ((s->eol == EOL_NL && c != '\n') || (s->eol == EOL_CRNL && c != '\n') ||
        (s->eol == EOL_CR && c != '\r'))
        return line_error(s, "end-of-copy marker does not match previous newline style",
                          "end-of-copy marker does not match previous newline style");
    s->ls = LS_NORMAL;
    return SCAN_END;
}

static scan_rc line_byte(px_copy_split *s, uint8_t c, size_t *i)
{
    switch (s->ls) {
    case LS_NORMAL:
        (*i)++;
        return normal_byte(s, c, s->rlen + *i - 1);
    case LS_CR:
        return after_cr(s, c, i);
    case LS_BACKSLASH:
        return after_backslash(s, c, i);
    default:
        return after_dot(s, c, i);
    }
}

/* Reads the current line on through b[0..len). Returns SCAN_ROW or SCAN_END with *used the
 * bytes of b that belong to it, SCAN_MORE when b ends first, or SCAN_ERR. */
static scan_rc scan_line(px_copy_split *s, const uint8_t *b, size_t len, size_t *used)
{
    size_t i = 0;
    scan_rc rc = SCAN_CONT;
    while (rc == SCAN_CONT) {
        if (s->ls == LS_NORMAL && !s->first_char)
            i = skip_plain(s, b, i);
        if (i >= len) {
            *used = len;
            return SCAN_MORE;
        }
        rc = line_byte(s, b[i], &i);
    }
    *used = i;
    return rc;
}

static void line_reset(px_copy_split *s)
{
    s->ls = LS_NORMAL;
    s->in_quote = false;
    s->last_was_esc = false;
    s->first_char = true;
}

/* ---- key fields ---- */

/* Text format: the end of the field starting at pos (a delimiter escaped by a backslash
 * does not end it). Returns whether a delimiter ended it; *end is where its raw text ends
 * (a backslash ending the line is dropped, as CopyReadAttributesText does). */
static bool text_field_end(const px_copy_split *s, const uint8_t *c, size_t clen, size_t pos, size_t *end,
                           bool *escaped)
{
    const uint8_t *d = memchr(c + pos, s->delim, clen - pos);
    size_t dpos = d ? (size_t)(d - c) : clen;
    for (;;) {
        const uint8_t *bs = memchr(c + pos, '\\', dpos - pos);
        if (!bs) {
            *end = dpos;
            return d != NULL;
        }
        size_t at = (size_t)(bs - c);
        *escaped = true;
        if (at + 1 >= clen) {
            *end = at;
            return false;
        }
        pos = at + 2;
        if (at + 1 == dpos) {
            d = memchr(c + pos, s->delim, clen - pos);
            dpos = d ? (size_t)(d - c) : clen;
        }
    }
}

static bool is_octal(uint8_t c)
{
    return c >= '0' && c <= '7';
}

/* One backslash sequence at raw[*i] (just after the backslash), as CopyReadAttributesText
 * reads it. */
static uint8_t text_unescape(const uint8_t *raw, size_t len, size_t *i)
{
    uint8_t c = raw[(*i)++];
    static const char from[] = "bfnrtv", to[] = "\b\f\n\r\t\v";
    if (is_octal(c)) {
        unsigned v = c - '0';
        for (int k = 0; k < 2 && *i < len && is_octal(raw[*i]); k++)
            v = (v << 3) + (raw[(*i)++] - '0');
        return (uint8_t)(v & 0377);
    }
    if (c == 'x' && *i < len && pgs_hex_value((char)raw[*i]) >= 0) {
        unsigned v = (unsigned)pgs_hex_value((char)raw[(*i)++]);
        if (*i < len && pgs_hex_value((char)raw[*i]) >= 0)
            v = (v << 4) + (unsigned)pgs_hex_value((char)raw[(*i)++]);
        return (uint8_t)v;
    }
    const char *m = c ? strchr(from, c) : NULL;
    return m ? (uint8_t)to[m - from] : c;
}

static int text_decode(px_copy_split *s, const uint8_t *raw, size_t len)
{
    pgs_buf_clear(&s->key);
    if (pgs_buf_reserve(&s->key, len + 1) != 0)
        return -1;
    uint8_t *out = s->key.data;
    size_t o = 0;
    for (size_t i = 0; i < len;) {
        uint8_t c = raw[i++];
        if (c == '\\' && i < len)
            c = text_unescape(raw, len, &i);
        else if (c == '\\')
            break;
        out[o++] = c;
    }
    s->key.len = o;
    return 0;
}

typedef struct key_value {
    const uint8_t *p;
    size_t len;
    bool null;
} key_value;

static int text_key(px_copy_split *s, const uint8_t *c, size_t clen, key_value *kv)
{
    size_t pos = 0, end;
    bool escaped = false;
    for (int f = 0; f < s->key_index; f++) {
        if (!text_field_end(s, c, clen, pos, &end, &escaped))
            return missing_data(s);
        pos = end + 1;
    }
    escaped = false;
    text_field_end(s, c, clen, pos, &end, &escaped);
    size_t rawlen = end - pos;
    if (rawlen == s->null_len && memcmp(c + pos, s->null_str, rawlen) == 0) {
        kv->null = true;
        return 0;
    }
    if (!escaped) {
        kv->p = c + pos;
        kv->len = rawlen;
        return 0;
    }
    if (text_decode(s, c + pos, rawlen) != 0)
        return out_of_memory(s);
    kv->p = s->key.data;
    kv->len = s->key.len;
    return 0;
}

/* The first of the bytes a and b in c[from..to), or to. */
static size_t find_either(const uint8_t *c, size_t from, size_t to, int a, int b)
{
    const uint8_t *pa = memchr(c + from, a, to - from);
    size_t lim = pa ? (size_t)(pa - c) : to;
    const uint8_t *pb = a == b ? NULL : memchr(c + from, b, lim - from);
    return pb ? (size_t)(pb - c) : lim;
}

/* The quoted part of a CSV field, from just after its opening quote: appends its value to
 * out (when not NULL) and returns the offset after its closing quote, or clen + 1 when the
 * line ends first. An escape counts only before a quote or another escape. */
static size_t csv_quoted(const px_copy_split *s, const uint8_t *c, size_t clen, size_t i, pgs_buf *out)
{
    for (;;) {
        size_t j = find_either(c, i, clen, s->quote, s->field_escape);
        if (j >= clen)
            return clen + 1;
        if (out)
            pgs_buf_append(out, c + i, j - i);
        bool escaped =
            c[j] == s->field_escape && j + 1 < clen && (c[j + 1] == s->field_escape || c[j + 1] == s->quote);
        if (!escaped && c[j] == s->quote)
            return j + 1;
        if (out)
            pgs_buf_append_u8(out, escaped ? c[j + 1] : c[j]);
        i = j + (escaped ? 2 : 1);
    }
}

/* CSV: reads the field at *pos as CopyReadAttributesCSV does, appending its value to out
 * when out is not NULL. Returns 1 when a delimiter ended it, 0 at the line's end, -1 on an
 * unterminated quote. */
static int csv_field(const px_copy_split *s, const uint8_t *c, size_t clen, size_t *pos, pgs_buf *out,
                     bool *saw_quote)
{
    size_t i = *pos;
    for (;;) {
        size_t j = find_either(c, i, clen, s->delim, s->quote);
        if (out)
            pgs_buf_append(out, c + i, j - i);
        if (j >= clen || c[j] == s->delim) {
            *pos = j;
            return j < clen;
        }
        *saw_quote = true;
        i = csv_quoted(s, c, clen, j + 1, out);
        if (i > clen)
            return -1;
    }
}

/* FORCE_NOT_NULL and FORCE_NULL on the key, as NextCopyFrom applies them. */
static void csv_force(const px_copy_split *s, key_value *kv)
{
    if (kv->null && s->force_not_null) {
        kv->null = false;
        kv->p = (const uint8_t *)s->null_str;
        kv->len = s->null_len;
    } else if (!kv->null && s->force_null && kv->len == s->null_len &&
               memcmp(kv->p, s->null_str, kv->len) == 0) {
        kv->null = true;
    }
}

static int csv_key(px_copy_split *s, const uint8_t *c, size_t clen, key_value *kv)
{
    size_t pos = 0;
    bool saw_quote = false;
    for (int f = 0; f < s->key_index; f++) {
        int r = csv_field(s, c, clen, &pos, NULL, &saw_quote);
        if (r < 0)
            return bad_format(s, "unterminated CSV quoted field");
        if (r == 0)
            return missing_data(s);
        pos++;
    }
    size_t start = pos;
    saw_quote = false;
    pgs_buf_clear(&s->key);
    if (csv_field(s, c, clen, &pos, &s->key, &saw_quote) < 0)
        return bad_format(s, "unterminated CSV quoted field");
    if (pgs_buf_failed(&s->key))
        return out_of_memory(s);
    size_t rawlen = pos - start;
    kv->null = !saw_quote && rawlen == s->null_len && memcmp(c + start, s->null_str, rawlen) == 0;
    kv->p = saw_quote ? s->key.data : c + start;
    kv->len = saw_quote ? s->key.len : rawlen;
    if (!kv->p)
        kv->p = (const uint8_t *)"";
    csv_force(s, kv);
    return 0;
}

/* ---- emitting ---- */

static int call_part(px_copy_split *s, px_copy_part part, const uint8_t *p, size_t n)
{
    if (s->part_fn && s->part_fn(s->part_arg, part, p, n) != 0)
        return stopped(s);
    return 0;
}

/* A text/CSV line: content is the line without its terminator. */
static int emit_line(px_copy_split *s, const uint8_t *row, size_t row_len, size_t content, px_copy_row_fn fn,
                     void *arg)
{
    if (s->header_pending) {
        s->header_pending = false;
        return call_part(s, PX_COPY_PART_HEADER, row, row_len);
    }
    key_value kv = {NULL, 0, false};
    int rc = s->format == PRS_COPY_CSV ? csv_key(s, row, content, &kv) : text_key(s, row, content, &kv);
    if (rc)
        return rc;
    if (kv.null) {
        kv.p = NULL;
        kv.len = 0;
    }
    if (fn(arg, row, row_len, kv.p, kv.len, kv.null) != 0)
        return stopped(s);
    return 0;
}

static int emit_tuple(px_copy_split *s, const uint8_t *row, size_t row_len, px_copy_row_fn fn, void *arg)
{
    bool null = s->key_len < 0;
    const uint8_t *key = null ? NULL : row + s->key_at;
    if (fn(arg, row, row_len, key, null ? 0 : (size_t)s->key_len, null) != 0)
        return stopped(s);
    return 0;
}

/* The \. marker ends the data; what came before it on its line is a last row. */
static int emit_end(px_copy_split *s, const uint8_t *row, size_t row_len, px_copy_row_fn fn, void *arg)
{
    s->ended = true;
    if (s->mark_at > 0) {
        int rc = emit_line(s, row, s->mark_at, s->mark_at, fn, arg);
        if (rc)
            return rc;
    }
    return call_part(s, PX_COPY_PART_END, row + s->mark_at, row_len - s->mark_at);
}

static int emit(px_copy_split *s, scan_rc what, const uint8_t *row, size_t row_len, px_copy_row_fn fn,
                void *arg)
{
    if (row_len > s->max_row)
        return too_long(s);
    switch (what) {
    case SCAN_ROW:
        if (s->format == PRS_COPY_BINARY)
            return emit_tuple(s, row, row_len, fn, arg);
        return emit_line(s, row, row_len, s->term_at, fn, arg);
    case SCAN_END:
        return emit_end(s, row, row_len, fn, arg);
    case SCAN_HEADER:
        return call_part(s, PX_COPY_PART_HEADER, row, row_len);
    default:
        s->ended = true;
        return call_part(s, PX_COPY_PART_TRAILER, row, row_len);
    }
}

/* ---- the binary reader ---- */

static size_t bin_item_size(bin_state st)
{
    switch (st) {
    case BS_SIGNATURE:
        return sizeof binary_signature;
    case BS_COUNT:
        return 2;
    default:
        return 4;
    }
}

static scan_rc bin_error(px_copy_split *s, const char *msg)
{
    bad_format(s, msg);
    return SCAN_ERR;
}

static scan_rc bin_header_item(px_copy_split *s, int32_t v)
{
    switch (s->bs) {
    case BS_SIGNATURE:
        if (memcmp(s->ib, binary_signature, sizeof binary_signature) != 0)
            return bin_error(s, "COPY file signature not recognized");
        s->bs = BS_FLAGS;
        return SCAN_CONT;
    case BS_FLAGS:
        if (v & (1 << 16))
            return bin_error(s, "invalid COPY file header (WITH OIDS)");
        if (((uint32_t)v & ~(1u << 16)) >> 16)
            return bin_error(s, "unrecognized critical flags in COPY file header");
        s->bs = BS_EXTLEN;
        return SCAN_CONT;
    default:
        if (v < 0)
            return bin_error(s, "invalid COPY file header (missing length)");
        s->brem = (size_t)v;
        s->bs = v ? BS_EXT : BS_COUNT;
        return v ? SCAN_CONT : SCAN_HEADER;
    }
}

static scan_rc bin_count(px_copy_split *s, int16_t v)
{
    if (v == -1) {
        s->bs = BS_DONE;
        return SCAN_TRAILER;
    }
    if ((s->n_columns && (size_t)v != s->n_columns) || v <= s->key_index) {
        split_fail(s, PGS_SQLSTATE_BAD_COPY_FILE_FORMAT, "row field count is %d, expected %zu", (int)v,
                   s->n_columns ? s->n_columns : (size_t)s->key_index + 1);
        return SCAN_ERR;
    }
    s->n_fields = v;
    s->field = 0;
    s->key_len = -1;
    s->bs = BS_FLEN;
    return SCAN_CONT;
}

static scan_rc bin_field_done(px_copy_split *s)
{
    if (++s->field < s->n_fields) {
        s->bs = BS_FLEN;
        return SCAN_CONT;
    }
    s->bs = BS_COUNT;
    return SCAN_ROW;
}

/* at: the row offset just after the length. */
static scan_rc bin_flen(px_copy_split *s, int32_t v, size_t at)
{
    if (v < -1)
        return bin_error(s, "invalid field size");
    if (s->field == s->key_index) {
        s->key_at = at;
        s->key_len = v;
    }
    if (v <= 0)
        return bin_field_done(s);
    s->brem = (size_t)v;
    s->bs = BS_FDATA;
    return SCAN_CONT;
}

static scan_rc bin_item(px_copy_split *s, size_t at)
{
    int32_t v = (int32_t)pgs_be32(s->ib);
    switch (s->bs) {
    case BS_COUNT:
        return bin_count(s, (int16_t)pgs_be16(s->ib));
    case BS_FLEN:
        return bin_flen(s, v, at);
    default:
        return bin_header_item(s, v);
    }
}

/* The binary counterpart of scan_line: a tuple, the header or the trailer. */
static scan_rc scan_binary(px_copy_split *s, const uint8_t *b, size_t len, size_t *used)
{
    size_t i = 0;
    scan_rc rc = SCAN_CONT;
    while (rc == SCAN_CONT && i < len) {
        if (s->bs == BS_EXT || s->bs == BS_FDATA) {
            size_t take = s->brem < len - i ? s->brem : len - i;
            i += take;
            s->brem -= take;
            if (s->brem == 0 && s->bs == BS_EXT) {
                s->bs = BS_COUNT;
                rc = SCAN_HEADER;
            } else if (s->brem == 0) {
                rc = bin_field_done(s);
            }
            continue;
        }
        size_t need = bin_item_size(s->bs), take = need - s->ib_n < len - i ? need - s->ib_n : len - i;
        memcpy(s->ib + s->ib_n, b + i, take);
        s->ib_n += take;
        i += take;
        if (s->ib_n < need)
            break;
        s->ib_n = 0;
        rc = bin_item(s, s->rlen + i);
    }
    *used = i;
    return rc == SCAN_CONT ? SCAN_MORE : rc;
}

/* ---- feeding ---- */

static int keep_partial(px_copy_split *s, const uint8_t *p, size_t n)
{
    if (s->pend.len + n > s->max_row)
        return too_long(s);
    if (pgs_buf_append(&s->pend, p, n) != 0)
        return out_of_memory(s);
    return 0;
}

static void row_done(px_copy_split *s)
{
    if (s->pend.cap > KEEP_BUF_MAX)
        pgs_buf_free(&s->pend);
    else
        pgs_buf_clear(&s->pend);
    if (s->key.cap > KEEP_BUF_MAX)
        pgs_buf_free(&s->key);
    line_reset(s);
}

/* Scans for the end of the current row in p[0..n); hands it over if found. *used: the
 * bytes of p taken. */
static int split_one(px_copy_split *s, const uint8_t *p, size_t n, size_t *used, px_copy_row_fn fn, void *arg)
{
    s->rlen = s->pend.len;
    scan_rc rc = s->format == PRS_COPY_BINARY ? scan_binary(s, p, n, used) : scan_line(s, p, n, used);
    if (rc == SCAN_ERR)
        return PX_COPY_EDATA;
    if (rc == SCAN_MORE)
        return keep_partial(s, p, n);
    const uint8_t *row = p;
    size_t row_len = *used;
    if (s->pend.len) {
        if (s->pend.len + *used > s->max_row)
            return too_long(s);
        if (pgs_buf_append(&s->pend, p, *used) != 0)
            return out_of_memory(s);
        row = s->pend.data;
        row_len = s->pend.len;
    }
    int r = emit(s, rc, row, row_len, fn, arg);
    if (rc == SCAN_ROW && r == 0)
        s->line++;
    row_done(s);
    return r;
}

int px_copy_split_feed(px_copy_split *s, const uint8_t *p, size_t n, px_copy_row_fn fn, void *arg)
{
    if (!s || s->failed)
        return PX_COPY_EDATA;
    if (n == 0)
        return PX_COPY_OK;
    if (!p || !fn)
        return split_fail(s, PGS_SQLSTATE_INTERNAL_ERROR, "COPY data fed without bytes or a row callback");
    s->chunk_end = p + n;
    memset(s->next, 0, sizeof s->next);
    size_t off = 0;
    while (off < n) {
        if (s->ended && s->format == PRS_COPY_BINARY)
            return bad_format(s, "received copy data after EOF marker");
        if (s->ended)
            return PX_COPY_OK; /* after \. everything is ignored, as PostgreSQL does */
        size_t used = 0;
        int rc = split_one(s, p + off, n - off, &used, fn, arg);
        if (rc)
            return rc;
        off += used;
    }
    return PX_COPY_OK;
}

/* ---- the end of the data ---- */

static int finish_binary(px_copy_split *s)
{
    switch (s->bs) {
    case BS_SIGNATURE:
        return bad_format(s, "COPY file signature not recognized");
    case BS_FLAGS:
        return bad_format(s, "invalid COPY file header (missing flags)");
    case BS_EXTLEN:
        return bad_format(s, "invalid COPY file header (missing length)");
    case BS_EXT:
        return bad_format(s, "invalid COPY file header (wrong length)");
    case BS_FLEN:
    case BS_FDATA:
        return bad_format(s, "unexpected EOF in COPY data");
    default:
        /* At a tuple boundary, with or without the trailer; a lone byte of a field count
         * is taken for the end too, as CopyGetInt16 does. */
        return PX_COPY_OK;
    }
}

/* The last line, cut by the end of the data rather than by a newline. */
static int finish_line(px_copy_split *s, px_copy_row_fn fn, void *arg)
{
    if (s->ls == LS_CR && s->eol == EOL_CRNL) {
        line_error(s, "literal carriage return found in data", "unquoted carriage return found in data");
        return PX_COPY_EDATA;
    }
    if (s->ls == LS_CR)
        s->eol = EOL_CR; /* term_at is the \r */
    else
        s->term_at = s->pend.len;
    if ((s->ls == LS_DOT_CRNL || s->ls == LS_DOT) && s->format == PRS_COPY_TEXT)
        return bad_format(s, "end-of-copy marker corrupt");
    if (s->pend.len == 0)
        return PX_COPY_OK;
    /* A header line is skipped unread, unless it is to be matched. */
    if (s->format == PRS_COPY_CSV && s->in_quote && (!s->header_pending || s->header_match))
        return bad_format(s, "unterminated CSV quoted field");
    int r = emit(s, SCAN_ROW, s->pend.data, s->pend.len, fn, arg);
    row_done(s);
    return r;
}

int px_copy_split_finish(px_copy_split *s, px_copy_row_fn fn, void *arg)
{
    if (!s || s->failed)
        return PX_COPY_EDATA;
    if (s->ended)
        return PX_COPY_OK;
    if (!fn)
        return split_fail(s, PGS_SQLSTATE_INTERNAL_ERROR, "COPY data finished without a row callback");
    if (s->format == PRS_COPY_BINARY)
        return finish_binary(s);
    return finish_line(s, fn, arg);
}

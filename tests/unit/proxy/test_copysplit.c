/* Tests for proxy/copysplit.c: text, CSV and binary COPY data cut into rows with their key
 * values. Every input is fed whole, cut in two at every offset, and in chunks of every
 * size from 1 byte up, and must give the same rows, keys, headers and trailers each time;
 * malformed inputs must give the same error each time. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/buf.h"
#include "parser/copyopts.h"
#include "proxy/copysplit.h"

/* What the callbacks saw, as one readable string. */
typedef struct seen {
    pgs_buf log;
    int stop_after; /* rows; 0: never stop */
    int rows;
} seen;

static void log_bytes(pgs_buf *b, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (p[i] >= 0x20 && p[i] < 0x7f && p[i] != '|')
            pgs_buf_append_u8(b, p[i]);
        else
            pgs_buf_appendf(b, "<%02x>", p[i]);
    }
}

static int on_row(void *arg, const uint8_t *row, size_t row_len, const uint8_t *key, size_t key_len,
                  bool key_null)
{
    seen *s = arg;
    pgs_buf_append(&s->log, "R:", 2);
    log_bytes(&s->log, row, row_len);
    pgs_buf_appendf(&s->log, "|K:");
    if (key_null) {
        assert_null(key);
        assert_int_equal(key_len, 0);
        pgs_buf_appendf(&s->log, "NULL");
    } else {
        assert_non_null(key);
        log_bytes(&s->log, key, key_len);
    }
    pgs_buf_appendf(&s->log, "\n");
    s->rows++;
    return s->stop_after && s->rows >= s->stop_after;
}

static int on_part(void *arg, px_copy_part part, const uint8_t *p, size_t n)
{
    seen *s = arg;
    static const char *const names[] = {"HEADER", "TRAILER", "END"};
    pgs_buf_appendf(&s->log, "%s:", names[part]);
    log_bytes(&s->log, p, n);
    pgs_buf_appendf(&s->log, "\n");
    return 0;
}

static void load_opts(const char *sql, prs_copy_opts *o)
{
    int rc = prs_copy_options(sql, strlen(sql), o);
    if (rc != 0)
        fail_msg("%s: %s", sql, o->message);
}

/* Feeds in at most `chunk` bytes at a time, or cut once at `cut` when chunk is 0, and
 * appends the result ("OK" or the error) to the log. */
static void run(const prs_copy_opts *o, int key, const uint8_t *in, size_t len, size_t chunk, size_t cut,
                seen *out)
{
    px_copy_split *s = px_copy_split_new(o, key);
    assert_non_null(s);
    px_copy_split_set_part_fn(s, on_part, out);
    int rc = 0;
    for (size_t off = 0; off < len && rc == 0;) {
        size_t n = chunk ? (len - off < chunk ? len - off : chunk) : (off < cut ? cut - off : len - off);
        rc = px_copy_split_feed(s, in + off, n, on_row, out);
        off += n;
    }
    if (rc == 0)
        rc = px_copy_split_finish(s, on_row, out);
    const char *state = NULL;
    const char *msg = px_copy_split_error(s, &state);
    if (rc == 0)
        pgs_buf_appendf(&out->log, "OK\n");
    else
        pgs_buf_appendf(&out->log, "ERROR %d %s %s\n", rc, state ? state : "-", msg ? msg : "-");
    px_copy_split_free(s);
    assert_false(pgs_buf_failed(&out->log));
}

static char *log_text(seen *s)
{
    pgs_buf_append_u8(&s->log, 0);
    return (char *)s->log.data;
}

/* Every way of cutting the input gives `expect`. */
static void check_split(const char *sql, int key, const void *input, size_t len, const char *expect)
{
    prs_copy_opts o;
    load_opts(sql, &o);
    const uint8_t *in = input;
    for (size_t chunk = 0; chunk <= len + 1; chunk++) {
        for (size_t cut = 0; cut <= (chunk ? 0 : len); cut++) {
            seen s = {PGS_BUF_INIT, 0, 0};
            run(&o, key, in, len, chunk ? chunk : 0, cut, &s);
            const char *got = log_text(&s);
            if (strcmp(got, expect) != 0)
                fail_msg("%s, chunk %zu cut %zu:\n--- got\n%s--- expected\n%s", sql, chunk, cut, got, expect);
            pgs_buf_free(&s.log);
        }
    }
    prs_copy_opts_free(&o);
}

static void check_text(const char *sql, int key, const char *input, const char *expect)
{
    check_split(sql, key, input, strlen(input), expect);
}

/* ---- text ---- */

static void test_text_basic(void **state)
{
    check_text("COPY t FROM STDIN", 1, "a\t1\tx\nb\t22\ty\n",
               "R:a<09>1<09>x<0a>|K:1\nR:b<09>22<09>y<0a>|K:22\nOK\n");
    check_text("COPY t FROM STDIN", 0, "7\n\n8", "R:7<0a>|K:7\nR:<0a>|K:\nR:8|K:8\nOK\n");
    check_text("COPY t FROM STDIN", 2, "a\tb\t\n", "R:a<09>b<09><0a>|K:\nOK\n");
    check_text("COPY t FROM STDIN", 0, "", "OK\n");
    check_text("COPY t (a, b) FROM STDIN (DELIMITER ',')", 1, "x,y\nz,w,v\n",
               "R:x,y<0a>|K:y\nR:z,w,v<0a>|K:w\nOK\n");
}

static void test_text_escapes(void **state)
{
    check_text("COPY t FROM STDIN", 1, "a\tx\\ty\\\\z\\n\n",
               "R:a<09>x\\ty\\\\z\\n<0a>|K:x<09>y\\z<0a>\nOK\n");
    /* Octal, hex, the named escapes, and any other byte taken literally. */
    check_text("COPY t FROM STDIN", 0, "\\101\\1010\\7\\x41\\x4a1\\xg\\b\\f\\r\\v\\q\n",
               "R:\\101\\1010\\7\\x41\\x4a1\\xg\\b\\f\\r\\v\\q<0a>|K:AA0<07>AJ1xg<08><0c><0d><0b>q\nOK\n");
    /* An escaped delimiter is data; an escaped newline is data too, on the same line. */
    check_text("COPY t FROM STDIN", 1, "a\\\tb\tc\\\nd\te\n",
               "R:a\\<09>b<09>c\\<0a>d<09>e<0a>|K:c<0a>d\nOK\n");
    /* \N is NULL; \\N is a backslash and an N; a custom NULL string is compared raw. */
    check_text("COPY t FROM STDIN", 0, "\\N\n\\\\N\n", "R:\\N<0a>|K:NULL\nR:\\\\N<0a>|K:\\N\nOK\n");
    check_text("COPY t FROM STDIN (NULL 'nil')", 1, "1\tnil\n2\t\\N\n3\tni\\l\n",
               "R:1<09>nil<0a>|K:NULL\nR:2<09>\\N<0a>|K:N\nR:3<09>ni\\l<0a>|K:nil\nOK\n");
    check_text("COPY t FROM STDIN (NULL '')", 1, "1\t\n", "R:1<09><0a>|K:NULL\nOK\n");
    /* A backslash ending the data is dropped. */
    check_text("COPY t FROM STDIN", 0, "ab\\", "R:ab\\|K:ab\nOK\n");
}

static void test_text_newlines(void **state)
{
    check_text("COPY t FROM STDIN", 0, "a\r\nb\r\n", "R:a<0d><0a>|K:a\nR:b<0d><0a>|K:b\nOK\n");
    check_text("COPY t FROM STDIN", 0, "a\rb\r", "R:a<0d>|K:a\nR:b<0d>|K:b\nOK\n");
    check_text("COPY t FROM STDIN", 0, "a\r\nb", "R:a<0d><0a>|K:a\nR:b|K:b\nOK\n");
    check_text("COPY t FROM STDIN", 0, "a\nb\r\n",
               "R:a<0a>|K:a\nERROR -1 22P04 literal carriage return found in data\n");
    check_text("COPY t FROM STDIN", 0, "a\r\nb\n",
               "R:a<0d><0a>|K:a\nERROR -1 22P04 literal newline found in data\n");
    check_text("COPY t FROM STDIN", 0, "a\rb\n",
               "R:a<0d>|K:a\nERROR -1 22P04 literal newline found in data\n");
    check_text("COPY t FROM STDIN", 0, "a\r\nb\rc\r\n",
               "R:a<0d><0a>|K:a\nERROR -1 22P04 literal carriage return found in data\n");
    check_text("COPY t FROM STDIN", 0, "a\r\nb\r",
               "R:a<0d><0a>|K:a\nERROR -1 22P04 literal carriage return found in data\n");
}

static void test_text_end_marker(void **state)
{
    check_text("COPY t FROM STDIN", 0, "a\n\\.\nb\n", "R:a<0a>|K:a\nEND:\\.<0a>\nOK\n");
    check_text("COPY t FROM STDIN", 0, "a\r\n\\.\r\nignored", "R:a<0d><0a>|K:a\nEND:\\.<0d><0a>\nOK\n");
    check_text("COPY t FROM STDIN", 0, "a\r\\.\r", "R:a<0d>|K:a\nEND:\\.<0d>\nOK\n");
    /* In text format \. ends the data anywhere: what precedes it is a last row. */
    check_text("COPY t FROM STDIN", 1, "a\tb\\.\n", "R:a<09>b|K:b\nEND:\\.<0a>\nOK\n");
    check_text("COPY t FROM STDIN", 0, "\\.\n", "END:\\.<0a>\nOK\n");
    check_text("COPY t FROM STDIN", 0, "a\n\\.x\n",
               "R:a<0a>|K:a\nERROR -1 22P04 end-of-copy marker corrupt\n");
    check_text("COPY t FROM STDIN", 0, "a\n\\.", "R:a<0a>|K:a\nERROR -1 22P04 end-of-copy marker corrupt\n");
    check_text("COPY t FROM STDIN", 0, "a\r\n\\.\n",
               "R:a<0d><0a>|K:a\nERROR -1 22P04 end-of-copy marker does not match previous newline style\n");
    check_text("COPY t FROM STDIN", 0, "a\n\\.\r\n",
               "R:a<0a>|K:a\nERROR -1 22P04 end-of-copy marker does not match previous newline style\n");
    /* \\. is a backslash and a dot. */
    check_text("COPY t FROM STDIN", 0, "\\\\.\n", "R:\\\\.<0a>|K:\\.\nOK\n");
}

static void test_text_header(void **state)
{
    check_text("COPY t FROM STDIN (HEADER)", 0, "id\tname\n1\tx\n",
               "HEADER:id<09>name<0a>\nR:1<09>x<0a>|K:1\nOK\n");
    check_text("COPY t FROM STDIN (HEADER)", 0, "id", "HEADER:id\nOK\n");
    check_text("COPY t FROM STDIN (HEADER)", 0, "", "OK\n");
}

static void test_text_errors(void **state)
{
    check_text("COPY t FROM STDIN", 2, "a\tb\n", "ERROR -1 22P04 missing data for column 3\n");
    check_text("COPY t (a, b, c) FROM STDIN", 2, "1\t2\t3\na\tb\n",
               "R:1<09>2<09>3<0a>|K:3\nERROR -1 22P04 missing data for column \"c\"\n");
    check_text("COPY t FROM STDIN", 1, "a\\\tb\n", "ERROR -1 22P04 missing data for column 2\n");

    /* The line number of the error counts the header and the rows before. */
    prs_copy_opts o;
    load_opts("COPY t FROM STDIN (HEADER)", &o);
    px_copy_split *s = px_copy_split_new(&o, 1);
    seen out = {PGS_BUF_INIT, 0, 0};
    assert_int_equal(px_copy_split_feed(s, (const uint8_t *)"h\n1\t2\n3\n4\t5\n", 12, on_row, &out),
                     PX_COPY_EDATA);
    assert_int_equal(px_copy_split_line(s), 3);
    px_copy_split_free(s);
    pgs_buf_free(&out.log);
    prs_copy_opts_free(&o);
}

/* ---- CSV ---- */

static void test_csv_quotes(void **state)
{
    const char *sql = "COPY t FROM STDIN (FORMAT csv)";
    check_text(sql, 1, "1,\"a,b\",c\n", "R:1,\"a,b\",c<0a>|K:a,b\nOK\n");
    check_text(sql, 1, "1,\"a\"\"b\",c\n", "R:1,\"a\"\"b\",c<0a>|K:a\"b\nOK\n");
    check_text(sql, 1, "1,\"line1\nline2\r\n\",c\n2,x\n",
               "R:1,\"line1<0a>line2<0d><0a>\",c<0a>|K:line1<0a>line2<0d><0a>\nR:2,x<0a>|K:x\nOK\n");
    check_text(sql, 1, "1,ab\"c,d\"e,f\n", "R:1,ab\"c,d\"e,f<0a>|K:abc,de\nOK\n");
    check_text(sql, 0, "\"x\",\"\"\"\"\n", "R:\"x\",\"\"\"\"<0a>|K:x\nOK\n");
    check_text(sql, 1, "\"\"\"\",y\n", "R:\"\"\"\",y<0a>|K:y\nOK\n");
    /* NULL is the unquoted null string; quoted it is a value. */
    check_text(sql, 1, "1,\n2,\"\"\n3",
               "R:1,<0a>|K:NULL\nR:2,\"\"<0a>|K:\nERROR -1 22P04 missing data for column 2\n");
    check_text(sql, 0, "a\r\n\"b\r\nc\"\r\n", "R:a<0d><0a>|K:a\nR:\"b<0d><0a>c\"<0d><0a>|K:b<0d><0a>c\nOK\n");
    check_text(sql, 0, "\"abc\nd", "ERROR -1 22P04 unterminated CSV quoted field\n");
    check_text(sql, 0, "a\r\nb\r",
               "R:a<0d><0a>|K:a\nERROR -1 22P04 unquoted carriage return found in data\n");
    check_text(sql, 0, "a\nb\rc\n", "R:a<0a>|K:a\nERROR -1 22P04 unquoted carriage return found in data\n");
}

static void test_csv_options(void **state)
{
    check_text("COPY t FROM STDIN (FORMAT csv, QUOTE '''', ESCAPE '\\', DELIMITER ';', NULL 'N')", 1,
               "1;'a\\'b;c\\\\';N\n2;N;x\n3;'N'\n",
               "R:1;'a\\'b;c\\\\';N<0a>|K:a'b;c\\\nR:2;N;x<0a>|K:NULL\nR:3;'N'<0a>|K:N\nOK\n");
    /* An escape not before a quote or an escape is data. */
    check_text("COPY t FROM STDIN (FORMAT csv, ESCAPE '\\')", 0, "\"a\\b\\\"\n\"\n",
               "R:\"a\\b\\\"<0a>\"<0a>|K:a\\b\"<0a>\nOK\n");
    /* FORCE_NOT_NULL: the null string is a value; FORCE_NULL: a quoted one is NULL too. */
    check_text("COPY t (a, b) FROM STDIN (FORMAT csv, FORCE_NOT_NULL (b))", 1, "1,\n", "R:1,<0a>|K:\nOK\n");
    check_text("COPY t (a, b) FROM STDIN (FORMAT csv, FORCE_NULL (b))", 1, "1,\"\"\n2,\"x\"\n",
               "R:1,\"\"<0a>|K:NULL\nR:2,\"x\"<0a>|K:x\nOK\n");
    check_text("COPY t FROM STDIN (FORMAT csv, HEADER)", 0, "\"a\nb\",c\n1,2\n",
               "HEADER:\"a<0a>b\",c<0a>\nR:1,2<0a>|K:1\nOK\n");
    /* A header line is not parsed unless it is matched: an open quote runs to the end. */
    check_text("COPY t FROM STDIN (FORMAT csv, HEADER)", 0, "a\"b\nc\n", "HEADER:a\"b<0a>c<0a>\nOK\n");
    check_text("COPY t FROM STDIN (FORMAT csv, HEADER match)", 0, "a\"b\nc\n",
               "ERROR -1 22P04 unterminated CSV quoted field\n");
}

static void test_csv_end_marker(void **state)
{
    const char *sql = "COPY t FROM STDIN (FORMAT csv)";
    check_text(sql, 0, "a\n\\.\nb\n", "R:a<0a>|K:a\nEND:\\.<0a>\nOK\n");
    /* In CSV \. is data unless alone on its line. */
    check_text(sql, 0, "\\.x\na\\.\n", "R:\\.x<0a>|K:\\.x\nR:a\\.<0a>|K:a\\.\nOK\n");
    check_text(sql, 0, "a\n\\.", "R:a<0a>|K:a\nR:\\.|K:\\.\nOK\n");
    check_text(sql, 0, "\"a\n\\.\n\"\n", "R:\"a<0a>\\.<0a>\"<0a>|K:a<0a>\\.<0a>\nOK\n");
    check_text(sql, 0, "\\\n", "R:\\<0a>|K:\\\nOK\n");
    /* \. followed by data: PostgreSQL reads on from the byte after the backslash, so a
     * quote after it opens a quoted field and a newline after it is checked. */
    check_text(sql, 0, "x\n\\.\"a\nb\"\n", "R:x<0a>|K:x\nR:\\.\"a<0a>b\"<0a>|K:\\.a<0a>b\nOK\n");
    check_text(sql, 0, "x\r\n\\.z\r\n", "R:x<0d><0a>|K:x\nR:\\.z<0d><0a>|K:\\.z\nOK\n");
    check_text(sql, 0, "x\r\n\\.\n", "R:x<0d><0a>|K:x\nERROR -1 22P04 unquoted newline found in data\n");
    check_text(sql, 0, "x\r\n\\.\rz\r\n",
               "R:x<0d><0a>|K:x\nERROR -1 22P04 unquoted carriage return found in data\n");
    check_text("COPY t FROM STDIN (FORMAT csv, QUOTE '.')", 0, "\\.a\nb.\n",
               "R:\\.a<0a>b.<0a>|K:\\a<0a>b\nOK\n");
}

/* ---- binary ---- */

typedef struct bin {
    uint8_t b[512];
    size_t n;
} bin;

static void put(bin *x, const void *p, size_t n)
{
    assert_true(x->n + n <= sizeof x->b);
    memcpy(x->b + x->n, p, n);
    x->n += n;
}
static void put16(bin *x, int v)
{
    uint8_t b[2] = {(uint8_t)(v >> 8), (uint8_t)v};
    put(x, b, 2);
}
static void put32(bin *x, int32_t v)
{
    uint32_t u = (uint32_t)v;
    uint8_t b[4] = {(uint8_t)(u >> 24), (uint8_t)(u >> 16), (uint8_t)(u >> 8), (uint8_t)u};
    put(x, b, 4);
}
static void put_header(bin *x, int ext)
{
    put(x, "PGCOPY\n\377\r\n", 11);
    put32(x, 0);
    put32(x, ext);
    for (int i = 0; i < ext; i++)
        put(x, "e", 1);
}
static void put_field(bin *x, const char *v, int len)
{
    put32(x, len);
    if (len > 0)
        put(x, v, (size_t)len);
}

static const char bin_header_log[] = "HEADER:PGCOPY<0a><ff><0d><0a><00><00><00><00><00><00><00><00><00>\n";

static void test_binary(void **state)
{
    bin x = {{0}, 0};
    put_header(&x, 0);
    put16(&x, 3); /* int4 key, text, int8 */
    put_field(&x, "\0\0\0\x07", 4);
    put_field(&x, "hi", 2);
    put_field(&x, "\0\0\0\0\0\0\0\x09", 8);
    put16(&x, 3); /* NULL key */
    put_field(&x, NULL, -1);
    put_field(&x, "", 0);
    put_field(&x, NULL, -1);
    put16(&x, -1);
    char expect[2048];
    snprintf(
        expect, sizeof expect,
        "%sR:<00><03><00><00><00><04><00><00><00><07><00><00><00><02>hi<00><00><00><08><00><00><00><00><00>"
        "<00><00><09>|K:<00><00><00><07>\n"
        "R:<00><03><ff><ff><ff><ff><00><00><00><00><ff><ff><ff><ff>|K:NULL\nTRAILER:<ff><ff>\nOK\n",
        bin_header_log);
    check_split("COPY t FROM STDIN (FORMAT binary)", 0, x.b, x.n, expect);

    /* A text key in the third column; an empty value is not NULL. */
    snprintf(
        expect, sizeof expect,
        "%sR:<00><03><00><00><00><04><00><00><00><07><00><00><00><02>hi<00><00><00><08><00><00><00><00><00>"
        "<00><00><09>|K:<00><00><00><00><00><00><00><09>\n"
        "R:<00><03><ff><ff><ff><ff><00><00><00><00><ff><ff><ff><ff>|K:NULL\nTRAILER:<ff><ff>\nOK\n",
        bin_header_log);
    check_split("COPY t FROM STDIN (FORMAT binary)", 2, x.b, x.n, expect);

    /* A missing trailer is accepted; data after the trailer is not. */
    check_split(
        "COPY t FROM STDIN (FORMAT binary)", 1, x.b, x.n - 2,
        "HEADER:PGCOPY<0a><ff><0d><0a><00><00><00><00><00><00><00><00><00>\n"
        "R:<00><03><00><00><00><04><00><00><00><07><00><00><00><02>hi<00><00><00><08><00><00><00><00><00>"
        "<00><00><09>|K:hi\n"
        "R:<00><03><ff><ff><ff><ff><00><00><00><00><ff><ff><ff><ff>|K:\nOK\n");
    put(&x, "x", 1);
    snprintf(
        expect, sizeof expect,
        "%sR:<00><03><00><00><00><04><00><00><00><07><00><00><00><02>hi<00><00><00><08><00><00><00><00><00>"
        "<00><00><09>|K:<00><00><00><07>\n"
        "R:<00><03><ff><ff><ff><ff><00><00><00><00><ff><ff><ff><ff>|K:NULL\nTRAILER:<ff><ff>\n"
        "ERROR -1 22P04 received copy data after EOF marker\n",
        bin_header_log);
    check_split("COPY t FROM STDIN (FORMAT binary)", 0, x.b, x.n, expect);
}

static void test_binary_header_ext(void **state)
{
    bin x = {{0}, 0};
    put_header(&x, 3);
    put16(&x, 1);
    put_field(&x, "k", 1);
    check_split("COPY t FROM STDIN BINARY", 0, x.b, x.n,
                "HEADER:PGCOPY<0a><ff><0d><0a><00><00><00><00><00><00><00><00><03>eee\nR:<00><01><00><00><00>"
                "<01>k|K:k\n"
                "OK\n");
}

static void test_binary_errors(void **state)
{
    const char *sql = "COPY t (a, b) FROM STDIN (FORMAT binary)";
    bin x = {{0}, 0};
    put_header(&x, 0);
    put16(&x, 2);
    put_field(&x, "abc", 3);
    put_field(&x, "de", 2);
    size_t full = x.n;
    char expect[1024];
    /* Truncated anywhere inside the tuple. */
    for (size_t cut = 19 + 2; cut < full; cut++) {
        snprintf(expect, sizeof expect, "%sERROR -1 22P04 unexpected EOF in COPY data\n", bin_header_log);
        check_split(sql, 1, x.b, cut, expect);
    }
    /* Truncated inside the header. */
    check_split(sql, 0, x.b, 0, "ERROR -1 22P04 COPY file signature not recognized\n");
    check_split(sql, 0, x.b, 5, "ERROR -1 22P04 COPY file signature not recognized\n");
    check_split(sql, 0, x.b, 13, "ERROR -1 22P04 invalid COPY file header (missing flags)\n");
    check_split(sql, 0, x.b, 17, "ERROR -1 22P04 invalid COPY file header (missing length)\n");
    check_split(sql, 0, "PGCOPY\nxx", 9, "ERROR -1 22P04 COPY file signature not recognized\n");

    bin y = {{0}, 0};
    put_header(&y, 0);
    put16(&y, 3);
    snprintf(expect, sizeof expect, "%sERROR -1 22P04 row field count is 3, expected 2\n", bin_header_log);
    check_split(sql, 1, y.b, y.n, expect);
    bin z = {{0}, 0};
    put_header(&z, 0);
    put16(&z, 1);
    snprintf(expect, sizeof expect, "%sERROR -1 22P04 row field count is 1, expected 2\n", bin_header_log);
    check_split("COPY t FROM STDIN (FORMAT binary)", 1, z.b, z.n, expect);
    bin w = {{0}, 0};
    put_header(&w, 0);
    put16(&w, 2);
    put32(&w, -2);
    snprintf(expect, sizeof expect, "%sERROR -1 22P04 invalid field size\n", bin_header_log);
    check_split(sql, 1, w.b, w.n, expect);
    bin v = {{0}, 0};
    put(&v, "PGCOPY\n\377\r\n", 11);
    put32(&v, 1 << 16);
    check_split(sql, 0, v.b, v.n, "ERROR -1 22P04 invalid COPY file header (WITH OIDS)\n");
    bin u = {{0}, 0};
    put(&u, "PGCOPY\n\377\r\n", 11);
    put32(&u, 1 << 17);
    check_split(sql, 0, u.b, u.n, "ERROR -1 22P04 unrecognized critical flags in COPY file header\n");
    bin t = {{0}, 0};
    put(&t, "PGCOPY\n\377\r\n", 11);
    put32(&t, 0);
    put32(&t, -1);
    check_split(sql, 0, t.b, t.n, "ERROR -1 22P04 invalid COPY file header (missing length)\n");
    bin r = {{0}, 0};
    put(&r, "PGCOPY\n\377\r\n", 11);
    put32(&r, 0);
    put32(&r, 4);
    put(&r, "ab", 2);
    check_split(sql, 0, r.b, r.n, "ERROR -1 22P04 invalid COPY file header (wrong length)\n");
}

/* ---- limits, stops, and garbage ---- */

static void test_row_limit(void **state)
{
    prs_copy_opts o;
    load_opts("COPY t FROM STDIN", &o);
    px_copy_split *s = px_copy_split_new(&o, 0);
    px_copy_split_set_max_row(s, 8);
    seen out = {PGS_BUF_INIT, 0, 0};
    assert_int_equal(px_copy_split_feed(s, (const uint8_t *)"1234567\n", 8, on_row, &out), 0);
    assert_int_equal(px_copy_split_feed(s, (const uint8_t *)"12345", 5, on_row, &out), 0);
    assert_int_equal(px_copy_split_feed(s, (const uint8_t *)"6789", 4, on_row, &out), PX_COPY_EDATA);
    const char *st;
    assert_non_null(px_copy_split_error(s, &st));
    assert_string_equal(st, "54000");
    assert_int_equal(px_copy_split_feed(s, (const uint8_t *)"\n", 1, on_row, &out), PX_COPY_EDATA);
    assert_int_equal(px_copy_split_finish(s, on_row, &out), PX_COPY_EDATA);
    px_copy_split_free(s);
    /* One chunk holding a row too long is refused too. */
    s = px_copy_split_new(&o, 0);
    px_copy_split_set_max_row(s, 4);
    assert_int_equal(px_copy_split_feed(s, (const uint8_t *)"123456\n", 7, on_row, &out), PX_COPY_EDATA);
    px_copy_split_free(s);
    pgs_buf_free(&out.log);
    prs_copy_opts_free(&o);
}

static void test_stop(void **state)
{
    prs_copy_opts o;
    load_opts("COPY t FROM STDIN", &o);
    px_copy_split *s = px_copy_split_new(&o, 0);
    seen out = {PGS_BUF_INIT, 1, 0};
    assert_int_equal(px_copy_split_feed(s, (const uint8_t *)"a\nb\n", 4, on_row, &out), PX_COPY_ESTOP);
    assert_int_equal(out.rows, 1);
    assert_int_equal(px_copy_split_feed(s, (const uint8_t *)"c\n", 2, on_row, &out), PX_COPY_EDATA);
    px_copy_split_free(s);
    pgs_buf_free(&out.log);
    assert_null(px_copy_split_new(&o, -1));
    prs_copy_opts_free(&o);
    load_opts("COPY t (a) FROM STDIN", &o);
    assert_null(px_copy_split_new(&o, 1));
    prs_copy_opts_free(&o);
    load_opts("COPY t TO STDOUT", &o);
    assert_null(px_copy_split_new(&o, 0));
    prs_copy_opts_free(&o);
}

static void test_set_columns(void **state)
{
    prs_copy_opts o;
    load_opts("COPY t FROM STDIN (FORMAT csv, FORCE_NULL (k))", &o);
    px_copy_split *s = px_copy_split_new(&o, 1);
    assert_int_equal(px_copy_split_set_columns(s, &o, 2, "k"), 0);
    seen out = {PGS_BUF_INIT, 0, 0};
    assert_int_equal(px_copy_split_feed(s, (const uint8_t *)"1,\"\"\n2", 7, on_row, &out), 0);
    assert_int_equal(px_copy_split_finish(s, on_row, &out), PX_COPY_EDATA);
    const char *st;
    assert_string_equal(px_copy_split_error(s, &st), "missing data for column \"k\"");
    assert_int_equal(px_copy_split_line(s), 2);
    assert_string_equal(log_text(&out), "R:1,\"\"<0a>|K:NULL\n");
    px_copy_split_free(s);
    pgs_buf_free(&out.log);
    prs_copy_opts_free(&o);
}

/* Random bytes in every format, in random chunks: errors or rows, never a crash (the
 * ASan build checks the reads). */
static void test_garbage(void **state)
{
    static const char *const sqls[] = {"COPY t FROM STDIN", "COPY t FROM STDIN (FORMAT csv, HEADER)",
                                       "COPY t FROM STDIN (FORMAT csv, ESCAPE '\\')",
                                       "COPY t FROM STDIN (FORMAT binary)"};
    static const uint8_t alphabet[] = {'a', '\t', ',', '"', '\\', '\n', '\r', '.', 0xff, 0, 1, 'N'};
    uint32_t seed = 12345;
    uint8_t in[256];
    for (size_t q = 0; q < sizeof sqls / sizeof sqls[0]; q++) {
        prs_copy_opts o;
        load_opts(sqls[q], &o);
        for (int round = 0; round < 300; round++) {
            size_t n = 0;
            if (o.format == PRS_COPY_BINARY && round % 2) {
                static const uint8_t header[19] = {'P', 'G', 'C', 'O', 'P', 'Y', '\n', 0377, '\r', '\n'};
                memcpy(in, header, sizeof header);
                n = sizeof header;
            }
            for (; n < sizeof in; n++) {
                seed = seed * 1103515245u + 12345u;
                in[n] = o.format == PRS_COPY_BINARY ? (uint8_t)(seed >> 16) % 4
                                                    : alphabet[(seed >> 16) % sizeof alphabet];
            }
            px_copy_split *s = px_copy_split_new(&o, (int)(round % 3));
            seen out = {PGS_BUF_INIT, 0, 0};
            px_copy_split_set_part_fn(s, on_part, &out);
            int rc = 0;
            for (size_t off = 0; off < n && rc == 0;) {
                seed = seed * 1103515245u + 12345u;
                size_t k = 1 + (seed >> 16) % 17;
                if (k > n - off)
                    k = n - off;
                rc = px_copy_split_feed(s, in + off, k, on_row, &out);
                off += k;
            }
            if (rc == 0)
                rc = px_copy_split_finish(s, on_row, &out);
            assert_true(rc == 0 || rc == PX_COPY_EDATA);
            px_copy_split_free(s);
            pgs_buf_free(&out.log);
        }
        prs_copy_opts_free(&o);
    }
}

/* ---- PostgreSQL's own output ---- */

/* data/copy_ref.* were written by PostgreSQL 15's COPY TO (table ref(id int, k text, v
 * text), the key k holding tabs, newlines, backslashes, quotes, \N, \., NULL, UTF-8;
 * copy_ref_crlf.txt is copy_ref.txt with \r\n line ends), and PostgreSQL reads each back;
 * copy_ref.keys holds each row's k in hex, or NULL. */
static uint8_t *read_data(const char *name, size_t *len)
{
    const char *dir = getenv("PGS_TEST_DATA");
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir ? dir : "data", name);
    FILE *f = fopen(path, "rb");
    if (!f)
        fail_msg("cannot open %s", path);
    pgs_buf b = PGS_BUF_INIT;
    uint8_t tmp[4096];
    size_t got;
    while ((got = fread(tmp, 1, sizeof tmp, f)) > 0)
        pgs_buf_append(&b, tmp, got);
    fclose(f);
    pgs_buf_append_u8(&b, 0);
    assert_false(pgs_buf_failed(&b));
    *len = b.len - 1;
    return b.data;
}

static int on_ref_row(void *arg, const uint8_t *row, size_t row_len, const uint8_t *key, size_t key_len,
                      bool key_null)
{
    pgs_buf *log = arg;
    if (key_null)
        pgs_buf_appendf(log, "NULL\n");
    for (size_t i = 0; !key_null && i < key_len; i++)
        pgs_buf_appendf(log, "%02x", key[i]);
    if (!key_null)
        pgs_buf_appendf(log, "\n");
    return 0;
}

static void check_reference(const char *file, const char *sql)
{
    size_t len, keys_len;
    uint8_t *in = read_data(file, &len);
    char *keys = (char *)read_data("copy_ref.keys", &keys_len);
    prs_copy_opts o;
    load_opts(sql, &o);
    static const size_t chunks[] = {1, 2, 3, 7, 64, 1 << 20};
    for (size_t c = 0; c < sizeof chunks / sizeof chunks[0]; c++) {
        px_copy_split *s = px_copy_split_new(&o, 1);
        pgs_buf log = PGS_BUF_INIT;
        for (size_t off = 0; off < len; off += chunks[c])
            assert_int_equal(px_copy_split_feed(s, in + off, len - off < chunks[c] ? len - off : chunks[c],
                                                on_ref_row, &log),
                             0);
        assert_int_equal(px_copy_split_finish(s, on_ref_row, &log), 0);
        pgs_buf_append_u8(&log, 0);
        if (strcmp((char *)log.data, keys) != 0)
            fail_msg("%s in chunks of %zu:\n%s--- expected\n%s", file, chunks[c], (char *)log.data, keys);
        pgs_buf_free(&log);
        px_copy_split_free(s);
    }
    prs_copy_opts_free(&o);
    free(in);
    free(keys);
}

static void test_postgres_output(void **state)
{
    check_reference("copy_ref.txt", "COPY ref FROM STDIN");
    check_reference("copy_ref_crlf.txt", "COPY ref FROM STDIN");
    check_reference("copy_ref.csv", "COPY ref FROM STDIN (FORMAT csv, HEADER)");
    check_reference("copy_ref_q.csv",
                    "COPY ref FROM STDIN (FORMAT csv, DELIMITER ';', QUOTE '''', ESCAPE '\\', NULL 'NULL')");
    check_reference("copy_ref.bin", "COPY ref FROM STDIN (FORMAT binary)");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_text_basic),        cmocka_unit_test(test_text_escapes),
        cmocka_unit_test(test_text_newlines),     cmocka_unit_test(test_text_end_marker),
        cmocka_unit_test(test_text_header),       cmocka_unit_test(test_text_errors),
        cmocka_unit_test(test_csv_quotes),        cmocka_unit_test(test_csv_options),
        cmocka_unit_test(test_csv_end_marker),    cmocka_unit_test(test_binary),
        cmocka_unit_test(test_binary_header_ext), cmocka_unit_test(test_binary_errors),
        cmocka_unit_test(test_row_limit),         cmocka_unit_test(test_stop),
        cmocka_unit_test(test_set_columns),       cmocka_unit_test(test_garbage),
        cmocka_unit_test(test_postgres_output),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

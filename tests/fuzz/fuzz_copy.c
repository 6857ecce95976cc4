/* libFuzzer target for the COPY splitter (proxy/copysplit.c): arbitrary COPY data under one
 * of a few COPY statements, fed whole and fed in small chunks. The two runs must report the
 * same rows, keys, parts and error, and what was reported must be the input itself, cut
 * (rows and parts laid end to end give back the bytes received, up to where the data
 * ended). A broken promise traps like a crash. Not a unit test.
 * Input: byte 0 picks the statement, byte 1 the key's column, byte 2 the chunk size. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "parser/copyopts.h"
#include "proxy/copysplit.h"

#define CHECK(cond)                                                                                          \
    do {                                                                                                     \
        if (!(cond))                                                                                         \
            __builtin_trap();                                                                                \
    } while (0)

static const char *const statements[] = {
    "COPY t FROM STDIN",
    "COPY t FROM STDIN (HEADER)",
    "COPY t FROM STDIN (NULL 'N', DELIMITER ',')",
    "COPY t FROM STDIN (FORMAT csv)",
    "COPY t FROM STDIN (FORMAT csv, HEADER)",
    "COPY t FROM STDIN (FORMAT csv, ESCAPE '\\', QUOTE '''', NULL 'N')",
    "COPY t (a, b, c) FROM STDIN (FORMAT csv, FORCE_NULL (b), FORCE_NOT_NULL (c))",
    "COPY t FROM STDIN (FORMAT binary)",
    "COPY t (a, b) FROM STDIN (FORMAT binary)",
};

/* What one run reported: a log of rows, keys and parts, and the bytes they cover. */
typedef struct run_log {
    pgs_buf log;
    pgs_buf bytes;
} run_log;

static void log_piece(pgs_buf *b, char tag, const uint8_t *p, size_t n)
{
    uint32_t len = (uint32_t)n;
    pgs_buf_append_u8(b, (uint8_t)tag);
    pgs_buf_append(b, &len, sizeof len);
    if (n)
        pgs_buf_append(b, p, n);
}

static int on_row(void *arg, const uint8_t *row, size_t row_len, const uint8_t *key, size_t key_len,
                  bool key_null)
{
    run_log *r = arg;
    CHECK(row_len > 0);
    CHECK(key_null ? key == NULL && key_len == 0 : key != NULL);
    log_piece(&r->log, 'R', row, row_len);
    log_piece(&r->log, key_null ? 'N' : 'K', key, key_len);
    pgs_buf_append(&r->bytes, row, row_len);
    return 0;
}

static int on_part(void *arg, px_copy_part part, const uint8_t *p, size_t n)
{
    run_log *r = arg;
    log_piece(&r->log, (char)('0' + part), p, n);
    pgs_buf_append(&r->bytes, p, n);
    return 0;
}

static int split(const prs_copy_opts *o, int key, const uint8_t *in, size_t n, size_t chunk, run_log *r)
{
    px_copy_split *s = px_copy_split_new(o, key);
    CHECK(s != NULL);
    px_copy_split_set_part_fn(s, on_part, r);
    int rc = 0;
    for (size_t off = 0; off < n && rc == 0; off += chunk)
        rc = px_copy_split_feed(s, in + off, n - off < chunk ? n - off : chunk, on_row, r);
    if (rc == 0)
        rc = px_copy_split_finish(s, on_row, r);
    CHECK(rc == 0 || rc == PX_COPY_EDATA);
    const char *state = NULL, *msg = px_copy_split_error(s, &state);
    CHECK((rc == 0) == (msg == NULL));
    if (msg)
        pgs_buf_appendf(&r->log, "E%s %s", state, msg);
    if (rc == 0 && o->format != PRS_COPY_BINARY && !px_copy_split_ended(s))
        CHECK(r->bytes.len == n); /* every byte is in a row or a part */
    if (rc == 0 && o->format == PRS_COPY_BINARY)
        CHECK(r->bytes.len + 1 >= n); /* a lone byte after the last tuple is dropped */
    px_copy_split_free(s);
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 3)
        return 0;
    const char *sql = statements[data[0] % (sizeof statements / sizeof statements[0])];
    prs_copy_opts o;
    CHECK(prs_copy_options(sql, strlen(sql), &o) == 0);
    int key = data[1] % (o.columns.n ? (int)o.columns.n : 3);
    size_t chunk = 1 + data[2] % 7;
    const uint8_t *in = data + 3;
    size_t n = size - 3;

    run_log whole = {PGS_BUF_INIT, PGS_BUF_INIT}, cut = {PGS_BUF_INIT, PGS_BUF_INIT};
    split(&o, key, in, n, n ? n : 1, &whole);
    split(&o, key, in, n, chunk, &cut);
    CHECK(whole.log.len == cut.log.len);
    CHECK(whole.log.len == 0 || memcmp(whole.log.data, cut.log.data, whole.log.len) == 0);
    /* What was reported is the input, in order. */
    CHECK(whole.bytes.len <= n &&
          (whole.bytes.len == 0 || memcmp(whole.bytes.data, in, whole.bytes.len) == 0));
    pgs_buf_free(&whole.log);
    pgs_buf_free(&whole.bytes);
    pgs_buf_free(&cut.log);
    pgs_buf_free(&cut.bytes);
    prs_copy_opts_free(&o);
    return 0;
}

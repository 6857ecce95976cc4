/* Framing and building of PostgreSQL v3 protocol messages (see proto.h). */
#include "common/proto.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int pgs_frame_read(const uint8_t *p, size_t n, uint32_t max_len, pgs_frame *f)
{
    if (n < PGS_HDR_LEN)
        return 0;
    uint32_t len = pgs_be32(p + 1);
    if (len < 4 || len > max_len)
        return -1;
    f->type = (char)p[0];
    f->len = len;
    f->total = (size_t)len + 1;
    return 1;
}

bool pgs_frontend_type_valid(char type)
{
    switch (type) {
    case PGS_FE_BIND:
    case PGS_FE_CLOSE:
    case PGS_FE_COPY_DATA:
    case PGS_FE_COPY_DONE:
    case PGS_FE_COPY_FAIL:
    case PGS_FE_DESCRIBE:
    case PGS_FE_EXECUTE:
    case PGS_FE_FLUSH:
    case PGS_FE_FUNCTION_CALL:
    case PGS_FE_PARSE:
    case PGS_FE_PASSWORD:
    case PGS_FE_QUERY:
    case PGS_FE_SYNC:
    case PGS_FE_TERMINATE:
        return true;
    default:
        return false;
    }
}

/* The string's own NUL ends the fields. */
const uint8_t pgs_msg_fatal_oom[] = "E\0\0\0\x29SFATAL\0VFATAL\0C53200\0Mout of memory\0";
const size_t pgs_msg_fatal_oom_len = sizeof pgs_msg_fatal_oom;

size_t pgs_msg_begin(pgs_buf *b, char type)
{
    if (type)
        pgs_buf_append_u8(b, (uint8_t)type);
    size_t start = b->len;
    pgs_buf_append_be32(b, 0);
    return start;
}

void pgs_msg_end(pgs_buf *b, size_t start)
{
    if (!pgs_buf_failed(b))
        pgs_buf_put_be32(b, start, (uint32_t)(b->len - start));
}

void pgs_msg_notice_typed(pgs_buf *b, char type, const char *severity, const char *sqlstate, const char *msg)
{
    size_t st = pgs_msg_begin(b, type);
    pgs_buf_append_u8(b, 'S');
    pgs_buf_append_cstr(b, severity);
    pgs_buf_append_u8(b, 'V');
    pgs_buf_append_cstr(b, severity);
    pgs_buf_append_u8(b, 'C');
    pgs_buf_append_cstr(b, sqlstate);
    pgs_buf_append_u8(b, 'M');
    pgs_buf_append_cstr(b, msg);
    pgs_buf_append_u8(b, 0);
    pgs_msg_end(b, st);
}

void pgs_msg_error(pgs_buf *b, const char *severity, const char *sqlstate, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (n < 0)
        msg[0] = 0;
    pgs_msg_notice_typed(b, PGS_BE_ERROR, severity, sqlstate, msg);
}

void pgs_msg_auth(pgs_buf *b, uint32_t code, const void *extra, size_t extra_len)
{
    size_t st = pgs_msg_begin(b, PGS_BE_AUTH);
    pgs_buf_append_be32(b, code);
    pgs_buf_append(b, extra, extra_len);
    pgs_msg_end(b, st);
}

void pgs_msg_param_status(pgs_buf *b, const char *name, const char *value)
{
    size_t st = pgs_msg_begin(b, PGS_BE_PARAM_STATUS);
    pgs_buf_append_cstr(b, name);
    pgs_buf_append_cstr(b, value);
    pgs_msg_end(b, st);
}

void pgs_msg_backend_key(pgs_buf *b, uint32_t pid, uint32_t secret)
{
    size_t st = pgs_msg_begin(b, PGS_BE_KEY_DATA);
    pgs_buf_append_be32(b, pid);
    pgs_buf_append_be32(b, secret);
    pgs_msg_end(b, st);
}

void pgs_msg_ready(pgs_buf *b, char status)
{
    size_t st = pgs_msg_begin(b, PGS_BE_READY);
    pgs_buf_append_u8(b, (uint8_t)status);
    pgs_msg_end(b, st);
}

/* A RowDescription of n columns of type text, as SHOW and the admin console answer. */
void pgs_msg_row_desc_text(pgs_buf *b, const char *const *cols, int n)
{
    size_t st = pgs_msg_begin(b, PGS_BE_ROW_DESC);
    pgs_buf_append_be16(b, (uint16_t)n);
    for (int i = 0; i < n; i++) {
        pgs_buf_append_cstr(b, cols[i]);
        pgs_buf_append_be32(b, 0);          /* no table */
        pgs_buf_append_be16(b, 0);          /* no column */
        pgs_buf_append_be32(b, 25);         /* text */
        pgs_buf_append_be16(b, 0xffff);     /* variable length */
        pgs_buf_append_be32(b, 0xffffffff); /* no type modifier */
        pgs_buf_append_be16(b, 0);          /* text format */
    }
    pgs_msg_end(b, st);
}

void pgs_msg_complete(pgs_buf *b, const char *tag)
{
    size_t st = pgs_msg_begin(b, PGS_BE_COMMAND_COMPLETE);
    pgs_buf_append_cstr(b, tag);
    pgs_msg_end(b, st);
}

void pgs_msg_query(pgs_buf *b, const char *sql)
{
    size_t st = pgs_msg_begin(b, PGS_FE_QUERY);
    pgs_buf_append_cstr(b, sql);
    pgs_msg_end(b, st);
}

int pgs_error_parse(const uint8_t *body, size_t n, pgs_error_fields *out)
{
    pgs_reader r = pgs_reader_make(body, n);
    out->severity = out->sqlstate = out->message = "";
    for (;;) {
        uint8_t code;
        const char *val;
        if (pgs_rd_u8(&r, &code) < 0)
            return -1;
        if (code == 0)
            return 0;
        if (pgs_rd_cstr(&r, &val) < 0)
            return -1;
        if (code == 'S')
            out->severity = val;
        else if (code == 'C')
            out->sqlstate = val;
        else if (code == 'M')
            out->message = val;
    }
}

/* Growable byte buffer and bounds-checked reader (see buf.h). */
#include "common/buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int pgs_buf_reserve(pgs_buf *b, size_t extra)
{
    if (b->oom)
        return -1;
    if (extra <= b->cap - b->len)
        return 0;
    if (extra > SIZE_MAX / 2 - b->len) {
        b->oom = true;
        return -1;
    }
    size_t want = b->len + extra;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < want)
        cap *= 2;
    uint8_t *p = realloc(b->data, cap);
    if (!p) {
        b->oom = true;
        return -1;
    }
    b->data = p;
    b->cap = cap;
    return 0;
}

int pgs_buf_append(pgs_buf *b, const void *p, size_t n)
{
    if (n == 0)
        return b->oom ? -1 : 0;
    if (pgs_buf_reserve(b, n) < 0)
        return -1;
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

int pgs_buf_append_u8(pgs_buf *b, uint8_t v)
{
    return pgs_buf_append(b, &v, 1);
}

int pgs_buf_append_be16(pgs_buf *b, uint16_t v)
{
    uint8_t p[2] = {(uint8_t)(v >> 8), (uint8_t)v};
    return pgs_buf_append(b, p, 2);
}

int pgs_buf_append_be32(pgs_buf *b, uint32_t v)
{
    uint8_t p[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
    return pgs_buf_append(b, p, 4);
}

int pgs_buf_append_cstr(pgs_buf *b, const char *s)
{
    return pgs_buf_append(b, s, strlen(s) + 1);
}

int pgs_buf_appendf(pgs_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || pgs_buf_reserve(b, (size_t)n + 1) < 0)
        return -1;
    va_start(ap, fmt);
    vsnprintf((char *)b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return n;
}

void pgs_buf_put_be32(pgs_buf *b, size_t at, uint32_t v)
{
    if (b->oom || at + 4 > b->len)
        return;
    b->data[at] = (uint8_t)(v >> 24);
    b->data[at + 1] = (uint8_t)(v >> 16);
    b->data[at + 2] = (uint8_t)(v >> 8);
    b->data[at + 3] = (uint8_t)v;
}

void pgs_buf_consume(pgs_buf *b, size_t n)
{
    if (n >= b->len) {
        b->len = 0;
        return;
    }
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
}

void pgs_buf_free(pgs_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
    b->oom = false;
}

int pgs_rd_u8(pgs_reader *r, uint8_t *out)
{
    if (r->left < 1)
        return -1;
    *out = r->p[0];
    r->p++;
    r->left--;
    return 0;
}

int pgs_rd_be16(pgs_reader *r, uint16_t *out)
{
    if (r->left < 2)
        return -1;
    *out = pgs_be16(r->p);
    r->p += 2;
    r->left -= 2;
    return 0;
}

int pgs_rd_be32(pgs_reader *r, uint32_t *out)
{
    if (r->left < 4)
        return -1;
    *out = pgs_be32(r->p);
    r->p += 4;
    r->left -= 4;
    return 0;
}

int pgs_rd_cstr(pgs_reader *r, const char **out)
{
    const uint8_t *nul = r->left ? memchr(r->p, 0, r->left) : NULL;
    if (!nul)
        return -1;
    size_t n = (size_t)(nul - r->p) + 1;
    *out = (const char *)r->p;
    r->p += n;
    r->left -= n;
    return 0;
}

int pgs_rd_bytes(pgs_reader *r, size_t n, const uint8_t **out)
{
    if (r->left < n)
        return -1;
    *out = r->p;
    r->p += n;
    r->left -= n;
    return 0;
}

/* The growable byte buffer every module uses, and the bounds-checked reader over a byte
 * range. Appends after an allocation failure become no-ops and set a sticky error, so a
 * caller builds a whole message and checks once. Nothing here knows the wire protocol. */
#ifndef PGS_BUF_H
#define PGS_BUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef struct pgs_buf {
    uint8_t *data; /* owned; NULL until the first append */
    size_t len;
    size_t cap;
    bool oom; /* sticky: an append failed */
} pgs_buf;

#define PGS_BUF_INIT                                                                                         \
    {                                                                                                        \
        NULL, 0, 0, false                                                                                    \
    }

int pgs_buf_reserve(pgs_buf *b, size_t extra);
int pgs_buf_append(pgs_buf *b, const void *p, size_t n);
int pgs_buf_append_u8(pgs_buf *b, uint8_t v);
int pgs_buf_append_be16(pgs_buf *b, uint16_t v);
int pgs_buf_append_be32(pgs_buf *b, uint32_t v);
int pgs_buf_append_cstr(pgs_buf *b, const char *s); /* with its NUL */
/* Appends printf-style text (no NUL); returns the number of bytes appended, or -1. */
int pgs_buf_appendf(pgs_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void pgs_buf_put_be32(pgs_buf *b, size_t at, uint32_t v);
/* Drops the first n bytes. */
void pgs_buf_consume(pgs_buf *b, size_t n);
static inline void pgs_buf_clear(pgs_buf *b)
{
    b->len = 0;
    b->oom = false;
}
/* Frees the storage; the buffer is empty and reusable afterwards. */
void pgs_buf_free(pgs_buf *b);
static inline bool pgs_buf_failed(const pgs_buf *b)
{
    return b->oom;
}

/* strnlen by memchr. libpg_query exports a strnlen of its own (a byte loop), and being
 * loaded with the process it replaces libc's for every caller: ten times slower on the
 * query path. Use this one instead. */
static inline size_t pgs_strnlen(const char *s, size_t n)
{
    const char *z = memchr(s, 0, n);
    return z ? (size_t)(z - s) : n;
}

/* The value of one hexadecimal digit, or -1. */
static inline int pgs_hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static inline uint32_t pgs_be32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}
static inline uint16_t pgs_be16(const uint8_t *p)
{
    return (uint16_t)((p[0] << 8) | p[1]);
}

/* A read cursor over bytes it does not own. Every getter returns 0, or -1 when the
 * remaining bytes are too few (the cursor is then left where it was). */
typedef struct pgs_reader {
    const uint8_t *p;
    size_t left;
} pgs_reader;

static inline pgs_reader pgs_reader_make(const void *p, size_t n)
{
    pgs_reader r = {(const uint8_t *)p, n};
    return r;
}
int pgs_rd_u8(pgs_reader *r, uint8_t *out);
int pgs_rd_be16(pgs_reader *r, uint16_t *out);
int pgs_rd_be32(pgs_reader *r, uint32_t *out);
/* A NUL-terminated string inside the range; *out points into the reader's bytes. */
int pgs_rd_cstr(pgs_reader *r, const char **out);
int pgs_rd_bytes(pgs_reader *r, size_t n, const uint8_t **out);

#endif

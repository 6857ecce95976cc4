/* libFuzzer target for the protocol readers of common/: an input is what a server sends, a
 * stream of typed messages cut by pgs_frame_read; each body is read field by field with the
 * pgs_reader getters as its type says, ErrorResponse and NoticeResponse also by
 * pgs_error_parse, and the messages the proxy can build itself are rebuilt by the builders of
 * common/proto.c and compared. Every getter is checked to move exactly as far as it says, or
 * not at all. Not a unit test. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/proto.h"

#define CHECK(cond)                                                                                          \
    do {                                                                                                     \
        if (!(cond))                                                                                         \
            __builtin_trap();                                                                                \
    } while (0)

/* The login path's limit (PX_MAX_LOGIN_MSG in the proxy), checked alongside the general one. */
#define FUZZ_LOGIN_MAX 65536u

/* A reader over one message body and the bounds it must stay in. */
typedef struct body {
    pgs_reader r;
    const uint8_t *end;
} body;

/* Either the getter took exactly n bytes, or it failed and left the cursor where it was. */
static int moved(body *b, pgs_reader before, int rc, size_t n)
{
    CHECK(b->r.p + b->r.left == b->end);
    if (rc < 0) {
        CHECK(b->r.p == before.p && b->r.left == before.left);
        return -1;
    }
    CHECK(rc == 0 && b->r.p == before.p + n && b->r.left == before.left - n);
    return 0;
}

static int get_u8(body *b, uint8_t *v)
{
    pgs_reader before = b->r;
    return moved(b, before, pgs_rd_u8(&b->r, v), 1);
}

static int get_be16(body *b, uint16_t *v)
{
    pgs_reader before = b->r;
    return moved(b, before, pgs_rd_be16(&b->r, v), 2);
}

static int get_be32(body *b, uint32_t *v)
{
    pgs_reader before = b->r;
    int rc = moved(b, before, pgs_rd_be32(&b->r, v), 4);
    CHECK(rc < 0 || *v == pgs_be32(before.p));
    return rc;
}

/* A string ends at a NUL inside the body; without one the getter fails. */
static int get_cstr(body *b, const char **s)
{
    pgs_reader before = b->r;
    int rc = pgs_rd_cstr(&b->r, s);
    if (rc < 0) {
        CHECK(before.left == 0 || !memchr(before.p, 0, before.left));
        return moved(b, before, rc, 0);
    }
    CHECK(*s == (const char *)before.p);
    return moved(b, before, rc, strlen(*s) + 1);
}

static int get_bytes(body *b, size_t n, const uint8_t **p)
{
    pgs_reader before = b->r;
    int rc = moved(b, before, pgs_rd_bytes(&b->r, n, p), n);
    CHECK(rc < 0 || *p == before.p);
    return rc;
}

/* Each reader returns 0 when the body is well formed, -1 otherwise. */
typedef int (*body_fn)(body *b);

static int read_none(body *b)
{
    return b->r.left == 0 ? 0 : -1;
}

static int read_rest(body *b)
{
    const uint8_t *p;
    return get_bytes(b, b->r.left, &p);
}

static int read_cstr(body *b)
{
    const char *s;
    return get_cstr(b, &s);
}

static int read_auth(body *b)
{
    uint32_t code;
    const char *mech;
    if (get_be32(b, &code) < 0)
        return -1;
    if (code == 10) { /* SASL: mechanism names, then an empty one */
        while (get_cstr(b, &mech) == 0 && mech[0])
            ;
        return 0;
    }
    return read_rest(b);
}

static int read_param_status(body *b)
{
    const char *name, *value;
    return get_cstr(b, &name) < 0 || get_cstr(b, &value) < 0 ? -1 : 0;
}

static int read_key(body *b)
{
    uint32_t pid, secret;
    return get_be32(b, &pid) < 0 || get_be32(b, &secret) < 0 ? -1 : 0;
}

static int read_ready(body *b)
{
    uint8_t status;
    return get_u8(b, &status);
}

static int read_row_desc(body *b)
{
    uint16_t n, col, fmt, typlen;
    uint32_t table, type, typmod;
    const char *name;
    if (get_be16(b, &n) < 0)
        return -1;
    for (uint16_t i = 0; i < n; i++) {
        if (get_cstr(b, &name) < 0 || get_be32(b, &table) < 0 || get_be16(b, &col) < 0 ||
            get_be32(b, &type) < 0 || get_be16(b, &typlen) < 0 || get_be32(b, &typmod) < 0 ||
            get_be16(b, &fmt) < 0)
            return -1;
    }
    return 0;
}

static int read_data_row(body *b)
{
    uint16_t n;
    uint32_t len;
    const uint8_t *val;
    if (get_be16(b, &n) < 0)
        return -1;
    for (uint16_t i = 0; i < n; i++) {
        if (get_be32(b, &len) < 0)
            return -1;
        if (len != UINT32_MAX && get_bytes(b, len, &val) < 0)
            return -1;
    }
    return 0;
}

static int read_param_desc(body *b)
{
    uint16_t n;
    uint32_t oid;
    if (get_be16(b, &n) < 0)
        return -1;
    for (uint16_t i = 0; i < n; i++)
        if (get_be32(b, &oid) < 0)
            return -1;
    return 0;
}

static int read_notify(body *b)
{
    uint32_t pid;
    const char *channel, *payload;
    return get_be32(b, &pid) < 0 || get_cstr(b, &channel) < 0 || get_cstr(b, &payload) < 0 ? -1 : 0;
}

static int read_copy_response(body *b)
{
    uint8_t format;
    uint16_t n, col;
    if (get_u8(b, &format) < 0 || get_be16(b, &n) < 0)
        return -1;
    for (uint16_t i = 0; i < n; i++)
        if (get_be16(b, &col) < 0)
            return -1;
    return 0;
}

static int read_negotiate(body *b)
{
    uint32_t minor, n;
    const char *option;
    if (get_be32(b, &minor) < 0 || get_be32(b, &n) < 0)
        return -1;
    for (uint32_t i = 0; i < n; i++)
        if (get_cstr(b, &option) < 0)
            return -1;
    return 0;
}

static int read_function_result(body *b)
{
    uint32_t len;
    const uint8_t *val;
    if (get_be32(b, &len) < 0)
        return -1;
    return len == UINT32_MAX ? 0 : get_bytes(b, len, &val);
}

/* Fields of ErrorResponse and NoticeResponse: a code byte and a string each, then a 0. */
static int read_fields(body *b)
{
    for (;;) {
        uint8_t code;
        const char *val;
        if (get_u8(b, &code) < 0)
            return -1;
        if (code == 0)
            return 0;
        if (get_cstr(b, &val) < 0)
            return -1;
    }
}

/* The backend message types and the layout of their bodies. */
static const struct backend_msg {
    char type;
    body_fn read;
} backend_msgs[] = {
    {'R', read_auth},
    {'S', read_param_status},
    {'K', read_key},
    {'Z', read_ready},
    {'T', read_row_desc},
    {'D', read_data_row},
    {'C', read_cstr},
    {'E', read_fields},
    {'N', read_fields},
    {'t', read_param_desc},
    {'A', read_notify},
    {'G', read_copy_response},
    {'H', read_copy_response},
    {'W', read_copy_response},
    {'d', read_rest},
    {'v', read_negotiate},
    {'V', read_function_result},
    {'1', read_none},
    {'2', read_none},
    {'3', read_none},
    {'n', read_none},
    {'s', read_none},
    {'I', read_none},
    {'c', read_none},
};

static body_fn backend_reader(char type)
{
    for (size_t i = 0; i < sizeof backend_msgs / sizeof backend_msgs[0]; i++)
        if (backend_msgs[i].type == type)
            return backend_msgs[i].read;
    return read_rest;
}

/* A field pgs_error_parse returns is "" or a string inside the body. */
static void check_field(const char *f, const uint8_t *p, size_t n)
{
    if (f[0] == '\0' && ((const uint8_t *)f < p || (const uint8_t *)f >= p + n))
        return;
    CHECK((const uint8_t *)f > p && (const uint8_t *)f < p + n);
    CHECK(memchr(f, 0, (size_t)(p + n - (const uint8_t *)f)) != NULL);
}

/* pgs_error_parse agrees with the field reader, and what it found survives a rebuild. */
static void check_error(const uint8_t *frame, size_t n, bool well_formed)
{
    const uint8_t *p = frame + PGS_HDR_LEN;
    pgs_error_fields ef;
    int rc = pgs_error_parse(p, n, &ef);
    CHECK(rc == (well_formed ? 0 : -1));
    if (rc < 0)
        return;
    check_field(ef.severity, p, n);
    check_field(ef.sqlstate, p, n);
    check_field(ef.message, p, n);

    pgs_buf out = PGS_BUF_INIT;
    pgs_msg_notice_typed(&out, (char)frame[0], ef.severity, ef.sqlstate, ef.message);
    CHECK(!pgs_buf_failed(&out));
    pgs_frame f;
    CHECK(pgs_frame_read(out.data, out.len, PGS_MAX_MSG_LEN, &f) == 1 && f.total == out.len);
    CHECK(f.type == (char)frame[0]);
    pgs_error_fields again;
    CHECK(pgs_error_parse(out.data + PGS_HDR_LEN, f.len - 4, &again) == 0);
    CHECK(strcmp(again.severity, ef.severity) == 0 && strcmp(again.sqlstate, ef.sqlstate) == 0 &&
          strcmp(again.message, ef.message) == 0);
    pgs_buf_free(&out);
}

/* A message the proxy also builds, read whole, comes out of the builder byte for byte. */
static void check_rebuild(const uint8_t *frame, size_t total)
{
    const uint8_t *p = frame + PGS_HDR_LEN;
    size_t n = total - PGS_HDR_LEN;
    pgs_buf out = PGS_BUF_INIT;
    switch ((char)frame[0]) {
    case 'S':
        pgs_msg_param_status(&out, (const char *)p, (const char *)p + strlen((const char *)p) + 1);
        break;
    case 'K':
        pgs_msg_backend_key(&out, pgs_be32(p), pgs_be32(p + 4));
        break;
    case 'Z':
        pgs_msg_ready(&out, (char)p[0]);
        break;
    case 'C':
        pgs_msg_complete(&out, (const char *)p);
        break;
    case 'R':
        pgs_msg_auth(&out, pgs_be32(p), p + 4, n - 4);
        break;
    default:
        return;
    }
    CHECK(!pgs_buf_failed(&out) && out.len == total && memcmp(out.data, frame, total) == 0);
    pgs_buf_free(&out);
}

static void read_message(const uint8_t *frame, const pgs_frame *f)
{
    size_t n = f->len - 4;
    body b = {pgs_reader_make(frame + PGS_HDR_LEN, n), frame + PGS_HDR_LEN + n};
    int rc = backend_reader(f->type)(&b);
    /* pgs_error_parse stops at the terminating 0 and ignores what follows it. */
    if (f->type == 'E' || f->type == 'N')
        check_error(frame, n, rc == 0);
    else if (rc == 0 && b.r.left == 0)
        check_rebuild(frame, f->total);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t off = 0;
    while (off < size) {
        const uint8_t *p = data + off;
        size_t avail = size - off;
        pgs_frame f, g;
        int r = pgs_frame_read(p, avail, PGS_MAX_MSG_LEN, &f);
        int login = pgs_frame_read(p, avail, FUZZ_LOGIN_MAX, &g);
        if (r == 0) {
            CHECK(avail < PGS_HDR_LEN && login == 0);
            break;
        }
        uint32_t len = pgs_be32(p + 1);
        if (r < 0) {
            CHECK(len < 4 || len > PGS_MAX_MSG_LEN);
            CHECK(login == -1);
            break;
        }
        CHECK(r == 1 && f.type == (char)p[0] && f.len == len && f.total == (size_t)len + 1);
        CHECK(login == (len > FUZZ_LOGIN_MAX ? -1 : 1));
        /* The proxy waits for the rest of a message it has only the start of. */
        if (f.total > avail)
            break;
        read_message(p, &f);
        off += f.total;
    }
    return 0;
}

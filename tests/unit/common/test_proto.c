/* Tests for common/buf.c and common/proto.c: the bounds-checked reader, framing limits, the
 * exact bytes of the messages the proxy builds, ErrorResponse parsing and the sticky
 * out-of-memory flag of pgs_buf. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "common/proto.h"

static void assert_bytes(const pgs_buf *b, const void *want, size_t n)
{
    assert_false(pgs_buf_failed(b));
    assert_int_equal(b->len, n);
    assert_memory_equal(b->data, want, n);
}

/* A reader must be exactly where it was after a refused read. */
static void assert_unmoved(const pgs_reader *r, const uint8_t *p, size_t left)
{
    assert_ptr_equal(r->p, p);
    assert_int_equal(r->left, left);
}

static void test_reader_short(void **state)
{
    static const uint8_t data[4] = {0x12, 0x34, 0x56, 0x78};
    uint8_t u8 = 0xee;
    uint16_t u16 = 0xeeee;
    uint32_t u32 = 0xeeeeeeee;
    const uint8_t *bytes = NULL;

    pgs_reader r = pgs_reader_make(data, 0);
    assert_int_equal(pgs_rd_u8(&r, &u8), -1);
    assert_unmoved(&r, data, 0);
    r = pgs_reader_make(data, 1);
    assert_int_equal(pgs_rd_be16(&r, &u16), -1);
    assert_unmoved(&r, data, 1);
    r = pgs_reader_make(data, 3);
    assert_int_equal(pgs_rd_be32(&r, &u32), -1);
    assert_unmoved(&r, data, 3);
    assert_int_equal(pgs_rd_bytes(&r, 4, &bytes), -1);
    assert_unmoved(&r, data, 3);
    /* Outputs are untouched on failure. */
    assert_int_equal(u8, 0xee);
    assert_int_equal(u16, 0xeeee);
    assert_int_equal(u32, 0xeeeeeeee);
    assert_null(bytes);
}

static void test_reader_reads(void **state)
{
    static const uint8_t data[] = {0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0xa8, 0xb9, 0xca};
    uint8_t u8;
    uint16_t u16;
    uint32_t u32;
    const uint8_t *bytes;
    pgs_reader r = pgs_reader_make(data, sizeof data);
    assert_int_equal(pgs_rd_u8(&r, &u8), 0);
    assert_int_equal(u8, 0x01);
    assert_int_equal(pgs_rd_be16(&r, &u16), 0);
    assert_int_equal(u16, 0x0203);
    assert_int_equal(pgs_rd_be32(&r, &u32), 0);
    assert_int_equal(u32, 0x04050607);
    assert_int_equal(pgs_rd_bytes(&r, 0, &bytes), 0);
    assert_int_equal(r.left, 3);
    /* Too many for what is left, then exactly what is left. */
    assert_int_equal(pgs_rd_be32(&r, &u32), -1);
    assert_unmoved(&r, data + 7, 3);
    assert_int_equal(pgs_rd_bytes(&r, 3, &bytes), 0);
    assert_ptr_equal(bytes, data + 7);
    assert_int_equal(r.left, 0);
    assert_int_equal(pgs_rd_u8(&r, &u8), -1);
    assert_int_equal(pgs_be32(data + 6), 0x07a8b9ca);
    assert_int_equal(pgs_be16(data + 7), 0xa8b9);
}

static void test_reader_cstr(void **state)
{
    static const uint8_t data[] = {'a', 'b', 0, 0, 'c', 'd'};
    const char *s = NULL;
    pgs_reader r = pgs_reader_make(data, sizeof data);
    assert_int_equal(pgs_rd_cstr(&r, &s), 0);
    assert_string_equal(s, "ab");
    assert_int_equal(r.left, 3);
    assert_int_equal(pgs_rd_cstr(&r, &s), 0);
    assert_string_equal(s, "");
    assert_int_equal(r.left, 2);
    /* "cd" has no NUL within the range. */
    s = NULL;
    assert_int_equal(pgs_rd_cstr(&r, &s), -1);
    assert_unmoved(&r, data + 4, 2);
    assert_null(s);
    /* The NUL just past the range does not count. */
    r = pgs_reader_make(data, 2);
    assert_int_equal(pgs_rd_cstr(&r, &s), -1);
    assert_unmoved(&r, data, 2);
    r = pgs_reader_make(data, 0);
    assert_int_equal(pgs_rd_cstr(&r, &s), -1);
}

static void test_frame_read(void **state)
{
    uint8_t hdr[PGS_HDR_LEN] = {'Q', 0, 0, 0, 0};
    pgs_frame f;
    /* Fewer than five bytes: need more, whatever they say. */
    for (size_t n = 0; n < PGS_HDR_LEN; n++)
        assert_int_equal(pgs_frame_read(hdr, n, PGS_MAX_MSG_LEN, &f), 0);
    /* The length counts itself, so 0..3 is impossible. */
    for (uint8_t len = 0; len < 4; len++) {
        hdr[4] = len;
        assert_int_equal(pgs_frame_read(hdr, sizeof hdr, PGS_MAX_MSG_LEN, &f), -1);
    }
    hdr[4] = 4;
    assert_int_equal(pgs_frame_read(hdr, sizeof hdr, PGS_MAX_MSG_LEN, &f), 1);
    assert_int_equal(f.type, 'Q');
    assert_int_equal(f.len, 4);
    assert_int_equal(f.total, 5);
    /* At the limit, and one past it. */
    hdr[3] = 0x01;
    hdr[4] = 0x00;
    assert_int_equal(pgs_frame_read(hdr, sizeof hdr, 256, &f), 1);
    assert_int_equal(f.len, 256);
    assert_int_equal(f.total, 257);
    hdr[4] = 0x01;
    assert_int_equal(pgs_frame_read(hdr, sizeof hdr, 256, &f), -1);
    /* The largest wire length: no overflow in total. */
    uint8_t big[] = {'d', 0xff, 0xff, 0xff, 0xff, 'x'};
    assert_int_equal(pgs_frame_read(big, sizeof big, PGS_MAX_MSG_LEN, &f), -1);
    assert_int_equal(pgs_frame_read(big, sizeof big, UINT32_MAX, &f), 1);
    assert_true(f.total == (size_t)UINT32_MAX + 1);
}

static void test_frontend_type_valid(void **state)
{
    static const char valid[] = "BCdcfDEHFPpQSX";
    for (int c = 0; c < 256; c++) {
        bool want = c != 0 && memchr(valid, c, sizeof valid - 1) != NULL;
        assert_int_equal(pgs_frontend_type_valid((char)c), want);
    }
}

static void test_msg_ready(void **state)
{
    pgs_buf b = PGS_BUF_INIT;
    pgs_msg_ready(&b, 'I');
    assert_bytes(&b, "Z\0\0\0\5I", 6);
    pgs_msg_ready(&b, 'T');
    assert_bytes(&b, "Z\0\0\0\5IZ\0\0\0\5T", 12);
    pgs_buf_free(&b);
}

static void test_msg_builders(void **state)
{
    pgs_buf b = PGS_BUF_INIT;
    pgs_msg_param_status(&b, "a", "bc");
    assert_bytes(&b, "S\0\0\0\11a\0bc\0", 10);
    pgs_buf_clear(&b);
    pgs_msg_backend_key(&b, 0x01020304, 0xa0b0c0d0);
    assert_bytes(&b, "K\0\0\0\14\1\2\3\4\xa0\xb0\xc0\xd0", 13);
    pgs_buf_clear(&b);
    pgs_msg_query(&b, "select 1");
    assert_bytes(&b, "Q\0\0\0\15select 1\0", 14);
    pgs_buf_clear(&b);
    /* Untyped (startup): the length still counts itself and comes first. */
    size_t st = pgs_msg_begin(&b, 0);
    assert_int_equal(st, 0);
    pgs_buf_append_be32(&b, PGS_PROTO_V3);
    pgs_buf_append_cstr(&b, "user");
    pgs_buf_append_cstr(&b, "u");
    pgs_buf_append_u8(&b, 0);
    pgs_msg_end(&b, st);
    assert_bytes(&b, "\0\0\0\20\0\3\0\0user\0u\0\0", 16);
    pgs_buf_free(&b);
}

static void test_msg_auth(void **state)
{
    pgs_buf b = PGS_BUF_INIT;
    pgs_msg_auth(&b, 0, NULL, 0);
    assert_bytes(&b, "R\0\0\0\10\0\0\0\0", 9);
    pgs_buf_clear(&b);
    static const uint8_t salt[4] = {0xde, 0xad, 0xbe, 0xef};
    pgs_msg_auth(&b, 5, salt, sizeof salt);
    assert_bytes(&b, "R\0\0\0\14\0\0\0\5\xde\xad\xbe\xef", 13);
    pgs_buf_clear(&b);
    pgs_msg_auth(&b, 10, "SCRAM-SHA-256\0", 15);
    assert_bytes(&b, "R\0\0\0\27\0\0\0\12SCRAM-SHA-256\0\0", 24);
    pgs_buf_free(&b);
}

/* Frames one message from b and parses its body as an ErrorResponse/NoticeResponse. */
static void parse_back(const pgs_buf *b, char type, pgs_error_fields *ef)
{
    pgs_frame f;
    assert_false(pgs_buf_failed(b));
    assert_int_equal(pgs_frame_read(b->data, b->len, PGS_MAX_MSG_LEN, &f), 1);
    assert_int_equal(f.type, type);
    assert_int_equal(f.total, b->len);
    assert_int_equal(pgs_error_parse(b->data + PGS_HDR_LEN, f.len - 4, ef), 0);
}

static void test_msg_error_roundtrip(void **state)
{
    pgs_buf b = PGS_BUF_INIT;
    pgs_error_fields ef;
    pgs_msg_error(&b, "FATAL", "28P01", "password authentication failed for user \"%s\"", "bob");
    parse_back(&b, 'E', &ef);
    assert_string_equal(ef.severity, "FATAL");
    assert_string_equal(ef.sqlstate, "28P01");
    assert_string_equal(ef.message, "password authentication failed for user \"bob\"");
    pgs_buf_clear(&b);

    pgs_msg_notice_typed(&b, 'N', "NOTICE", "00000", "hello");
    parse_back(&b, 'N', &ef);
    assert_string_equal(ef.severity, "NOTICE");
    assert_string_equal(ef.sqlstate, "00000");
    assert_string_equal(ef.message, "hello");
    pgs_buf_clear(&b);

    /* Messages longer than the formatting buffer are cut, not overrun. */
    char longmsg[700];
    memset(longmsg, 'x', sizeof longmsg - 1);
    longmsg[sizeof longmsg - 1] = 0;
    pgs_msg_error(&b, "ERROR", "XX000", "%s", longmsg);
    parse_back(&b, 'E', &ef);
    assert_int_equal(strlen(ef.message), 511);
    pgs_buf_free(&b);
}

/* The static ErrorResponse sent when no buffer can be built (px_client_fatal_oom, the
 * worker's refusal of a client it cannot allocate) is one well-framed message. */
static void test_msg_fatal_oom(void **state)
{
    pgs_buf b = PGS_BUF_INIT;
    pgs_error_fields ef;
    assert_int_equal(pgs_buf_append(&b, pgs_msg_fatal_oom, pgs_msg_fatal_oom_len), 0);
    parse_back(&b, 'E', &ef);
    assert_string_equal(ef.severity, "FATAL");
    assert_string_equal(ef.sqlstate, "53200");
    assert_string_equal(ef.message, "out of memory");
    pgs_buf_free(&b);
}

static void test_error_parse(void **state)
{
    pgs_error_fields ef;
    /* Only the terminator: every field defaults to "". */
    assert_int_equal(pgs_error_parse((const uint8_t *)"\0", 1, &ef), 0);
    assert_string_equal(ef.severity, "");
    assert_string_equal(ef.sqlstate, "");
    assert_string_equal(ef.message, "");
    /* Unknown fields are skipped. */
    static const char body[] = "SERROR\0VERROR\0C42601\0Mbad\0Hhint\0P7\0";
    assert_int_equal(pgs_error_parse((const uint8_t *)body, sizeof body, &ef), 0);
    assert_string_equal(ef.severity, "ERROR");
    assert_string_equal(ef.sqlstate, "42601");
    assert_string_equal(ef.message, "bad");
}

static void test_error_parse_malformed(void **state)
{
    static const struct {
        const char *body;
        size_t n;
    } bad[] = {
        {"", 0},                /* empty */
        {"S", 1},               /* a code and nothing else */
        {"SERROR", 6},          /* value without its NUL */
        {"SERROR\0", 7},        /* no terminating zero byte */
        {"SERROR\0C42601", 13}, /* last value cut */
        {"SERROR\0Mx\0", 10},   /* no terminating zero byte */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        pgs_error_fields ef;
        if (pgs_error_parse((const uint8_t *)bad[i].body, bad[i].n, &ef) == -1)
            continue;
        fail_msg("accepted case %zu", i);
    }
}

static void test_buf_oom_sticky(void **state)
{
    pgs_buf b = PGS_BUF_INIT;
    assert_int_equal(pgs_buf_append(&b, "abc", 3), 0);
    b.oom = true;
    assert_int_equal(pgs_buf_append(&b, "d", 1), -1);
    assert_int_equal(pgs_buf_append(&b, "", 0), -1);
    assert_int_equal(pgs_buf_append_u8(&b, 1), -1);
    assert_int_equal(pgs_buf_append_be16(&b, 1), -1);
    assert_int_equal(pgs_buf_append_be32(&b, 1), -1);
    assert_int_equal(pgs_buf_append_cstr(&b, "x"), -1);
    assert_int_equal(pgs_buf_reserve(&b, 1), -1);
    assert_int_equal(b.len, 3);
    /* Builders add nothing and leave earlier bytes alone. */
    pgs_msg_ready(&b, 'I');
    pgs_msg_error(&b, "ERROR", "XX000", "x");
    pgs_buf_put_be32(&b, 0, 0x41414141);
    assert_int_equal(b.len, 3);
    assert_memory_equal(b.data, "abc", 3);
    assert_true(pgs_buf_failed(&b));
    /* clear is the way out. */
    pgs_buf_clear(&b);
    assert_false(pgs_buf_failed(&b));
    pgs_msg_ready(&b, 'E');
    assert_bytes(&b, "Z\0\0\0\5E", 6);
    pgs_buf_free(&b);
}

static void test_buf_reserve_overflow(void **state)
{
    pgs_buf b = PGS_BUF_INIT;
    assert_int_equal(pgs_buf_append(&b, "x", 1), 0);
    assert_int_equal(pgs_buf_reserve(&b, SIZE_MAX), -1);
    assert_true(pgs_buf_failed(&b));
    assert_int_equal(pgs_buf_append(&b, "y", 1), -1);
    assert_int_equal(b.len, 1);
    pgs_buf_free(&b);
    assert_false(pgs_buf_failed(&b));
    assert_null(b.data);
}

static void test_buf_grow_consume(void **state)
{
    pgs_buf b = PGS_BUF_INIT;
    for (uint32_t i = 0; i < 1000; i++)
        assert_int_equal(pgs_buf_append_be32(&b, i), 0);
    assert_int_equal(b.len, 4000);
    assert_true(b.cap >= b.len);
    for (uint32_t i = 0; i < 1000; i++)
        assert_int_equal(pgs_be32(b.data + 4 * (size_t)i), i);
    pgs_buf_consume(&b, 3996);
    assert_int_equal(b.len, 4);
    assert_int_equal(pgs_be32(b.data), 999);
    pgs_buf_consume(&b, 100);
    assert_int_equal(b.len, 0);
    /* put_be32 never writes past len. */
    pgs_buf_append(&b, "ab", 2);
    pgs_buf_put_be32(&b, 0, 0x41424344);
    assert_bytes(&b, "ab", 2);
    pgs_buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reader_short),        cmocka_unit_test(test_reader_reads),
        cmocka_unit_test(test_reader_cstr),         cmocka_unit_test(test_frame_read),
        cmocka_unit_test(test_frontend_type_valid), cmocka_unit_test(test_msg_ready),
        cmocka_unit_test(test_msg_builders),        cmocka_unit_test(test_msg_auth),
        cmocka_unit_test(test_msg_error_roundtrip), cmocka_unit_test(test_msg_fatal_oom),
        cmocka_unit_test(test_error_parse),         cmocka_unit_test(test_error_parse_malformed),
        cmocka_unit_test(test_buf_oom_sticky),      cmocka_unit_test(test_buf_reserve_overflow),
        cmocka_unit_test(test_buf_grow_consume),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Tests for shardmap/key.c: shard-key values read from text as int2in/int4in/int8in and
 * uuid_in accept them (the accept/refuse cases were checked against PostgreSQL 15), from
 * binary Bind parameters, their canonical text and their hash. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "shardmap/hash.h"
#include "shardmap/key.h"

static int from_text(sm_key *k, uint32_t oid, const char *s)
{
    return sm_key_from_text(k, oid, s, strlen(s));
}

typedef struct int_ok {
    const char *text;
    int64_t v;
} int_ok;

static void test_int8_accepted(void **state)
{
    static const int_ok ok[] = {
        {"0", 0},
        {"42", 42},
        {" 42 ", 42},
        {"+42", 42},
        {"-0", 0},
        {"\t\n 7\r\v\f", 7},
        {"00000000000000000000009", 9},
        {"9223372036854775807", INT64_MAX},
        {"-9223372036854775808", INT64_MIN},
        {"-000000000000000000009223372036854775808", INT64_MIN},
    };
    sm_key k;

    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        assert_int_equal(from_text(&k, SM_OID_INT8, ok[i].text), 0);
        assert_int_equal(k.type, SM_KEY_INT);
        assert_int_equal(k.v.i, ok[i].v);
    }
}

static void test_int8_refused(void **state)
{
    static const char *const syntax[] = {
        "",      " ",   "+",  "-",   "- 1", "1 2", "0x10",
        "1_000", "1e3", "1.", "++1", "abc", "1a",  "\xc2\xa0\x31" /* a no-break space, then 1 */};
    static const char *const range[] = {"9223372036854775808", "-9223372036854775809", "99999999999999999999",
                                        "99999999999999999999x"};
    sm_key k;

    for (size_t i = 0; i < sizeof(syntax) / sizeof(syntax[0]); i++)
        assert_int_equal(from_text(&k, SM_OID_INT8, syntax[i]), SM_ESYNTAX);
    for (size_t i = 0; i < sizeof(range) / sizeof(range[0]); i++)
        assert_int_equal(from_text(&k, SM_OID_INT8, range[i]), SM_ERANGE);
    /* A NUL ends nothing: the length given is what is read. */
    assert_int_equal(sm_key_from_text(&k, SM_OID_INT8,
                                      "1\0"
                                      "2",
                                      3),
                     SM_ESYNTAX);
    assert_int_equal(sm_key_from_text(&k, SM_OID_INT8, "12345", 2), 0);
    assert_int_equal(k.v.i, 12);
}

static void test_int2_int4_ranges(void **state)
{
    sm_key k;

    assert_int_equal(from_text(&k, SM_OID_INT2, "32767"), 0);
    assert_int_equal(k.v.i, 32767);
    assert_int_equal(from_text(&k, SM_OID_INT2, " -32768 "), 0);
    assert_int_equal(k.v.i, -32768);
    assert_int_equal(from_text(&k, SM_OID_INT2, "32768"), SM_ERANGE);
    assert_int_equal(from_text(&k, SM_OID_INT2, "-32769"), SM_ERANGE);
    /* The server stops at the overflow, before it sees the x. */
    assert_int_equal(from_text(&k, SM_OID_INT2, "99999x"), SM_ERANGE);
    assert_int_equal(from_text(&k, SM_OID_INT2, "9999x"), SM_ESYNTAX);

    assert_int_equal(from_text(&k, SM_OID_INT4, "2147483647"), 0);
    assert_int_equal(k.v.i, INT32_MAX);
    assert_int_equal(from_text(&k, SM_OID_INT4, "-2147483648"), 0);
    assert_int_equal(k.v.i, INT32_MIN);
    assert_int_equal(from_text(&k, SM_OID_INT4, "2147483648"), SM_ERANGE);
    assert_int_equal(from_text(&k, SM_OID_INT4, "-2147483649"), SM_ERANGE);
}

static const uint8_t sample_uuid[16] = {0xa0, 0xee, 0xbc, 0x99, 0x9c, 0x0b, 0x4e, 0xf8,
                                        0xbb, 0x6d, 0x6b, 0xb9, 0xbd, 0x38, 0x0a, 0x11};

static void test_uuid_accepted(void **state)
{
    static const char *const ok[] = {
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",    "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}",
        "a0eebc999c0b4ef8bb6d6bb9bd380a11",        "A0EEBC999C0B4EF8BB6D6BB9BD380A11",
        "a0ee-bc99-9c0b-4ef8-bb6d-6bb9-bd38-0a11", "a0eebc999c0b4ef8bb6d6bb9bd38-0a11",
        "{a0eebc999c0b4ef8bb6d6bb9bd380a11}",
    };
    sm_key k;

    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        assert_int_equal(from_text(&k, SM_OID_UUID, ok[i]), 0);
        assert_int_equal(k.type, SM_KEY_UUID);
        assert_memory_equal(k.v.uuid, sample_uuid, 16);
    }
}

static void test_uuid_refused(void **state)
{
    static const char *const bad[] = {
        "",
        "{a0eebc999c0b4ef8bb6d6bb9bd380a11",
        "a0eebc999c0b4ef8bb6d6bb9bd380a11}",
        " a0eebc999c0b4ef8bb6d6bb9bd380a11",
        "a0eebc999c0b4ef8bb6d6bb9bd380a11 ",
        "a0eebc999c0b4ef8bb6d6bb9bd380a11-",
        "-a0eebc999c0b4ef8bb6d6bb9bd380a11",
        "a0e-ebc999c0b4ef8bb6d6bb9bd380a11",
        "a0eebc999c0b4ef8bb6d6bb9bd380a1-1",
        "a0eebc99--9c0b4ef8bb6d6bb9bd380a11",
        "a0eebc999c0b4ef8bb6d6bb9bd380a1",
        "a0eebc999c0b4ef8bb6d6bb9bd380a111",
        "g0eebc999c0b4ef8bb6d6bb9bd380a11",
        "{}",
        "{",
    };
    sm_key k;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(from_text(&k, SM_OID_UUID, bad[i]), SM_ESYNTAX);
}

/* Every prefix of a valid uuid is refused without reading past its end (ASan checks the
 * reads: each prefix is copied into a buffer of exactly its length). */
static void test_uuid_prefixes(void **state)
{
    const char *full = "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}";
    size_t n = strlen(full);
    sm_key k;

    for (size_t len = 0; len < n; len++) {
        char *p = malloc(len ? len : 1);
        assert_non_null(p);
        memcpy(p, full, len);
        assert_int_equal(sm_key_from_text(&k, SM_OID_UUID, p, len), SM_ESYNTAX);
        free(p);
    }
}

static void test_text_keys(void **state)
{
    const char s[] = "tenant-1";
    sm_key k;

    assert_int_equal(from_text(&k, SM_OID_TEXT, s), 0);
    assert_int_equal(k.type, SM_KEY_TEXT);
    assert_ptr_equal(k.v.text.p, s); /* borrowed, not copied */
    assert_int_equal(k.v.text.len, 8);
    assert_int_equal(from_text(&k, SM_OID_VARCHAR, " 42 "), 0);
    assert_int_equal(k.v.text.len, 4);
    assert_int_equal(sm_key_from_text(&k, SM_OID_TEXT, NULL, 0), 0);
    assert_int_equal(k.v.text.len, 0);
    assert_int_equal(sm_key_from_text(&k, SM_OID_TEXT, "a\0b", 3), SM_ENUL);
}

static void test_types(void **state)
{
    sm_key k;

    assert_int_equal(sm_key_type_of(SM_OID_INT2), SM_KEY_INT);
    assert_int_equal(sm_key_type_of(SM_OID_INT4), SM_KEY_INT);
    assert_int_equal(sm_key_type_of(SM_OID_INT8), SM_KEY_INT);
    assert_int_equal(sm_key_type_of(SM_OID_TEXT), SM_KEY_TEXT);
    assert_int_equal(sm_key_type_of(SM_OID_VARCHAR), SM_KEY_TEXT);
    assert_int_equal(sm_key_type_of(SM_OID_UUID), SM_KEY_UUID);
    assert_int_equal(sm_key_type_of(1042), SM_ETYPE); /* bpchar */
    assert_int_equal(sm_key_type_of(1700), SM_ETYPE); /* numeric */
    assert_int_equal(from_text(&k, 1700, "1"), SM_ETYPE);
    assert_int_equal(sm_key_from_binary(&k, 0, (const uint8_t *)"", 0), SM_ETYPE);
    assert_int_equal(sm_key_from_text(NULL, SM_OID_INT8, "1", 1), SM_EINVAL);
    assert_int_equal(sm_key_from_text(&k, SM_OID_INT8, NULL, 1), SM_EINVAL);
    assert_int_equal(sm_key_from_binary(&k, SM_OID_INT8, NULL, 8), SM_EINVAL);
}

static void test_binary(void **state)
{
    static const uint8_t be2[] = {0x80, 0x00};
    static const uint8_t be4[] = {0xff, 0xff, 0xff, 0xfe};
    static const uint8_t be8[] = {0x80, 0, 0, 0, 0, 0, 0, 0x01};
    static const uint8_t big[] = {0, 0, 0, 0, 0, 0, 0, 0x2a, 0};
    sm_key k;

    assert_int_equal(sm_key_from_binary(&k, SM_OID_INT2, be2, 2), 0);
    assert_int_equal(k.v.i, -32768);
    assert_int_equal(sm_key_from_binary(&k, SM_OID_INT4, be4, 4), 0);
    assert_int_equal(k.v.i, -2);
    assert_int_equal(sm_key_from_binary(&k, SM_OID_INT8, be8, 8), 0);
    assert_int_equal(k.v.i, INT64_MIN + 1);
    assert_int_equal(sm_key_from_binary(&k, SM_OID_INT8, big, 8), 0);
    assert_int_equal(k.v.i, 42);

    /* Each width exactly: a short or long parameter is refused as the server refuses it. */
    assert_int_equal(sm_key_from_binary(&k, SM_OID_INT2, be4, 4), SM_EBINARY);
    assert_int_equal(sm_key_from_binary(&k, SM_OID_INT4, be2, 2), SM_EBINARY);
    assert_int_equal(sm_key_from_binary(&k, SM_OID_INT8, be4, 4), SM_EBINARY);
    assert_int_equal(sm_key_from_binary(&k, SM_OID_INT8, big, 9), SM_EBINARY);
    assert_int_equal(sm_key_from_binary(&k, SM_OID_INT8, NULL, 0), SM_EBINARY);

    assert_int_equal(sm_key_from_binary(&k, SM_OID_UUID, sample_uuid, 16), 0);
    assert_int_equal(k.type, SM_KEY_UUID);
    assert_memory_equal(k.v.uuid, sample_uuid, 16);
    assert_int_equal(sm_key_from_binary(&k, SM_OID_UUID, sample_uuid, 15), SM_EBINARY);

    assert_int_equal(sm_key_from_binary(&k, SM_OID_TEXT, (const uint8_t *)"xyz", 3), 0);
    assert_int_equal(k.type, SM_KEY_TEXT);
    assert_int_equal(k.v.text.len, 3);
    assert_int_equal(sm_key_from_binary(&k, SM_OID_TEXT, (const uint8_t *)"x\0z", 3), SM_ENUL);
}

static void assert_canonical(const sm_key *k, const char *want)
{
    sm_key_buf buf;
    size_t len;
    const char *s = sm_key_canonical(k, &buf, &len);

    assert_int_equal(len, strlen(want));
    assert_memory_equal(s, want, len);
}

static void test_canonical(void **state)
{
    sm_key k;

    assert_canonical(&(sm_key){.type = SM_KEY_INT, .v.i = 0}, "0");
    k = sm_key_int(-1);
    assert_canonical(&k, "-1");
    k = sm_key_int(INT64_MIN);
    assert_canonical(&k, "-9223372036854775808");
    k = sm_key_int(INT64_MAX);
    assert_canonical(&k, "9223372036854775807");
    assert_int_equal(from_text(&k, SM_OID_INT4, "  +0042 "), 0);
    assert_canonical(&k, "42");
    assert_int_equal(from_text(&k, SM_OID_UUID, "{A0EEBC999C0B4EF8BB6D6BB9BD380A11}"), 0);
    assert_canonical(&k, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11");
    k = sm_key_text("Mixed Case ", 11);
    assert_canonical(&k, "Mixed Case ");
    k = sm_key_text("", 0);
    assert_canonical(&k, "");
}

static void test_key_hash(void **state)
{
    sm_key k;

    assert_int_equal(from_text(&k, SM_OID_INT2, "-32768"), 0);
    assert_int_equal((int64_t)sm_key_hash(&k), 8455483389771436374);
    assert_int_equal(from_text(&k, SM_OID_TEXT, "tenant-1"), 0);
    assert_int_equal((int64_t)sm_key_hash(&k), -5960342201233910903);
    assert_int_equal(from_text(&k, SM_OID_UUID, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"), 0);
    assert_int_equal((int64_t)sm_key_hash(&k), 7543054272012930821);
}

static void test_errors(void **state)
{
    assert_string_equal(sm_sqlstate(SM_ESYNTAX), "22P02");
    assert_string_equal(sm_sqlstate(SM_ERANGE), "22003");
    assert_string_equal(sm_sqlstate(SM_EBINARY), "22P03");
    assert_string_equal(sm_sqlstate(SM_ENUL), "22021");
    assert_string_equal(sm_sqlstate(-1000), "XX000");
    for (int e = SM_EEXIST; e <= SM_EINVAL; e++)
        assert_string_not_equal(sm_strerror(e), "unknown shardmap error");
    assert_string_equal(sm_strerror(-1000), "unknown shardmap error");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_int8_accepted),    cmocka_unit_test(test_int8_refused),
        cmocka_unit_test(test_int2_int4_ranges), cmocka_unit_test(test_uuid_accepted),
        cmocka_unit_test(test_uuid_refused),     cmocka_unit_test(test_uuid_prefixes),
        cmocka_unit_test(test_text_keys),        cmocka_unit_test(test_types),
        cmocka_unit_test(test_binary),           cmocka_unit_test(test_canonical),
        cmocka_unit_test(test_key_hash),         cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

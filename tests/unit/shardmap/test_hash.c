/* Tests for shardmap/hash.c: hashes pinned to what PostgreSQL 15.18 (x86-64) returned for
 * hashint8extended(v, 0), hashint2/4extended, hashtextextended(v, 0) in a UTF-8 database and
 * uuid_hash_extended(v, 0), with their buckets of 1024. The wide comparison against the
 * server is tests/integration/t_hash.sh. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "shardmap/hash.h"

typedef struct int_case {
    int64_t v;
    int64_t hash; /* as the server prints the bigint */
    uint32_t bucket;
} int_case;

static const int_case ints[] = {
    {0, 4154612158245552303, 175},
    {-1, -1888257769727981238, 330},
    {1, -3670598878359251130, 838},
    {42, 8010225493015854792, 712},
    {-42, 8809670066178192187, 827},
    {32767, 1790040721271588170, 330},
    {-32768, 8455483389771436374, 342},
    {2147483647, -9109110466470504941, 531},
    {-2147483648LL, 1977219185673256887, 951},
    /* The halves are folded together: 2^32 hashes as 1, INT64_MIN as INT32_MAX. */
    {4294967296LL, -3670598878359251130, 838},
    {INT64_MIN, -9109110466470504941, 531},
    {INT64_MAX, 1977219185673256887, 951},
};

static void test_int8(void **state)
{
    for (size_t i = 0; i < sizeof(ints) / sizeof(ints[0]); i++) {
        uint64_t h = sm_hash_int8(ints[i].v);
        assert_int_equal((int64_t)h, ints[i].hash);
        assert_int_equal(sm_bucket_of(h, 1024), ints[i].bucket);
    }
}

/* hashint2extended(-32768::int2), hashint4extended(-2147483648), hashint4extended(-1): the
 * narrower types hash as the same int8, which is why one sm_hash_int8 serves all three. */
static void test_narrow_ints_hash_as_int8(void **state)
{
    assert_int_equal((int64_t)sm_hash_int8(INT16_MIN), 8455483389771436374);
    assert_int_equal((int64_t)sm_hash_int8(INT32_MIN), 1977219185673256887);
    assert_int_equal((int64_t)sm_hash_int8(-1), -1888257769727981238);
}

typedef struct text_case {
    const char *v; /* UTF-8 */
    int64_t hash;
    uint32_t bucket;
} text_case;

static const text_case texts[] = {
    {"", -6939563903564495251, 621},
    {"a", 3591986179850072241, 177},
    {"abc", -6747756470228489321, 919},
    {"abcd", -1038429303365892052, 44},
    {"hello world!", -2866487628948787489, 735}, /* exactly one 12-byte block */
    {"hello world!x", -6683131005855957752, 264},
    {"tenant-1", -5960342201233910903, 905},
    {"Gr\xc3\xbc\xc3\x9f\x65", 8534170718931255642, 346},               /* Grüße */
    {"\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e", 2870829529307104068, 836}, /* 日本語 */
    {"\xf0\x9f\x90\x98 PostgreSQL", 2042826065370556834, 418},
    {"The quick brown fox jumps over the lazy dog", 2182139051089226439, 711},
};

static void test_text(void **state)
{
    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
        uint64_t h = sm_hash_text(texts[i].v, strlen(texts[i].v));
        assert_int_equal((int64_t)h, texts[i].hash);
        assert_int_equal(sm_bucket_of(h, 1024), texts[i].bucket);
    }
    assert_int_equal((int64_t)sm_hash_text(NULL, 0), -6939563903564495251);
}

/* The server reads aligned input a word at a time and unaligned input a byte at a time;
 * both must give the same hash, so the same bytes at every offset must too. */
static void test_text_any_alignment(void **state)
{
    const char *s = texts[10].v;
    size_t len = strlen(s);
    char *buf = malloc(len + 8);

    assert_non_null(buf);
    for (size_t off = 0; off < 8; off++) {
        memcpy(buf + off, s, len);
        assert_int_equal((int64_t)sm_hash_text(buf + off, len), texts[10].hash);
    }
    free(buf);
}

typedef struct uuid_case {
    uint8_t u[16];
    int64_t hash;
    uint32_t bucket;
} uuid_case;

static const uuid_case uuids[] = {
    {{0}, -6859010066814654381, 83},
    {{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
     293445543803463785,
     105},
    {{0xa0, 0xee, 0xbc, 0x99, 0x9c, 0x0b, 0x4e, 0xf8, 0xbb, 0x6d, 0x6b, 0xb9, 0xbd, 0x38, 0x0a, 0x11},
     7543054272012930821,
     773},
    {{0x12, 0x3e, 0x45, 0x67, 0xe8, 0x9b, 0x12, 0xd3, 0xa4, 0x56, 0x42, 0x66, 0x14, 0x17, 0x40, 0x00},
     -1647950126005018481,
     143},
};

static void test_uuid(void **state)
{
    for (size_t i = 0; i < sizeof(uuids) / sizeof(uuids[0]); i++) {
        uint64_t h = sm_hash_uuid(uuids[i].u);
        assert_int_equal((int64_t)h, uuids[i].hash);
        assert_int_equal(sm_bucket_of(h, 1024), uuids[i].bucket);
    }
}

static void test_bucket_of(void **state)
{
    assert_int_equal(sm_bucket_of(UINT64_MAX, 1), 0);
    assert_int_equal(sm_bucket_of(UINT64_MAX, 2), 1);
    assert_int_equal(sm_bucket_of(UINT64_MAX, 65536), 65535);
    assert_int_equal(sm_bucket_of(0x12345, 1024), 0x345);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_int8), cmocka_unit_test(test_narrow_ints_hash_as_int8),
        cmocka_unit_test(test_text), cmocka_unit_test(test_text_any_alignment),
        cmocka_unit_test(test_uuid), cmocka_unit_test(test_bucket_of),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

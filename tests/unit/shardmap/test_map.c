/* Tests for shardmap/map.c: the default bucket ranges of 2, 3 and 32 shards over 1024
 * buckets, reassigned buckets, tenant overrides (also past the table's growth), versions,
 * routing explained through sm_route_why, the arguments a map refuses, and the moves layer:
 * which keys a freezing bucket or tenant move holds back, and which open transactions a
 * freeze waits for. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "shardmap/hash.h"
#include "shardmap/map.h"

static sm_map *new_map(uint32_t nshards, uint32_t buckets)
{
    sm_map *m = NULL;
    assert_int_equal(sm_map_new_default(&m, nshards, buckets), 0);
    assert_non_null(m);
    return m;
}

/* The first bucket of each shard in the default map: shard s starts at ceil(s * 1024 / S). */
static void assert_starts(sm_map *m, const uint32_t *starts, uint32_t nshards)
{
    uint32_t s = 0;

    for (uint32_t b = 0; b < 1024; b++) {
        if (s + 1 < nshards && b == starts[s + 1])
            s++;
        assert_int_equal(sm_map_bucket_shard(m, b), s);
    }
    assert_int_equal(s, nshards - 1);
}

static void test_default_two_shards(void **state)
{
    static const uint32_t starts[] = {0, 512};
    sm_map *m = new_map(2, 1024);

    assert_int_equal(sm_map_buckets(m), 1024);
    assert_int_equal(sm_map_nshards(m), 2);
    assert_int_equal(sm_map_version(m), 0);
    assert_int_equal(sm_map_override_count(m), 0);
    assert_int_equal(sm_map_bucket_shard(m, 511), 0);
    assert_int_equal(sm_map_bucket_shard(m, 512), 1);
    assert_starts(m, starts, 2);
    sm_map_free(m);
}

static void test_default_three_shards(void **state)
{
    /* b * 3 / 1024 == s: 0..341, 342..682, 683..1023. */
    static const uint32_t starts[] = {0, 342, 683};
    sm_map *m = new_map(3, 1024);

    assert_int_equal(sm_map_bucket_shard(m, 341), 0);
    assert_int_equal(sm_map_bucket_shard(m, 342), 1);
    assert_int_equal(sm_map_bucket_shard(m, 682), 1);
    assert_int_equal(sm_map_bucket_shard(m, 683), 2);
    assert_int_equal(sm_map_bucket_shard(m, 1023), 2);
    assert_starts(m, starts, 3);
    sm_map_free(m);
}

static void test_default_32_shards(void **state)
{
    uint32_t starts[32];
    sm_map *m = new_map(32, 0); /* 0: the default bucket count */

    assert_int_equal(sm_map_buckets(m), SM_DEFAULT_BUCKETS);
    for (uint32_t s = 0; s < 32; s++)
        starts[s] = s * 32;
    assert_starts(m, starts, 32);
    assert_int_equal(sm_map_bucket_shard(m, 31), 0);
    assert_int_equal(sm_map_bucket_shard(m, 32), 1);
    assert_int_equal(sm_map_bucket_shard(m, 1023), 31);
    sm_map_free(m);
}

static void test_bucket_counts(void **state)
{
    sm_map *m = NULL;

    assert_int_equal(sm_map_new_default(&m, 1, 1), 0);
    assert_int_equal(sm_map_bucket_shard(m, 0), 0);
    assert_int_equal(sm_map_bucket_shard(m, 1), SM_EBUCKET);
    sm_map_free(m);
    assert_int_equal(sm_map_new_default(&m, 7, 65536), 0);
    assert_int_equal(sm_map_bucket_shard(m, 65535), 6);
    sm_map_free(m);
    /* More shards than buckets: the last shards own none until buckets are given to them. */
    assert_int_equal(sm_map_new_default(&m, 4, 2), 0);
    assert_int_equal(sm_map_bucket_shard(m, 0), 0);
    assert_int_equal(sm_map_bucket_shard(m, 1), 2);
    sm_map_free(m);
}

static void test_bad_arguments(void **state)
{
    static const uint32_t bad_buckets[] = {3, 1000, 1025, 131072, 0x80000000u, UINT32_MAX};
    sm_map *m = NULL;

    for (size_t i = 0; i < sizeof(bad_buckets) / sizeof(bad_buckets[0]); i++)
        assert_int_equal(sm_map_new_default(&m, 2, bad_buckets[i]), SM_EBUCKETS);
    assert_int_equal(sm_map_new_default(&m, 0, 1024), SM_ESHARD);
    assert_int_equal(sm_map_new_default(&m, SM_MAX_SHARDS + 1, 1024), SM_ESHARD);
    assert_int_equal(sm_map_new_default(NULL, 2, 1024), SM_EINVAL);
    assert_null(m);

    m = new_map(4, 1024);
    assert_int_equal(sm_map_set_bucket(m, 1024, 0), SM_EBUCKET);
    assert_int_equal(sm_map_set_bucket(m, 0, 4), SM_ESHARD);
    assert_int_equal(sm_map_set_bucket(NULL, 0, 0), SM_EINVAL);
    assert_int_equal(sm_map_add_override(m, "t", 1, 4), SM_ESHARD);
    assert_int_equal(sm_map_add_override(m, NULL, 1, 0), SM_EINVAL);
    assert_int_equal(sm_map_add_override(m, "a\0b", 3, 0), SM_ENUL);
    assert_int_equal(sm_map_add_override(NULL, "t", 1, 0), SM_EINVAL);
    assert_int_equal(sm_map_override_count(m), 0);
    assert_int_equal(sm_map_route(NULL, &(sm_key){.type = SM_KEY_INT}, NULL), SM_EINVAL);
    assert_int_equal(sm_map_route(m, NULL, NULL), SM_EINVAL);
    sm_map_free(m);
    sm_map_free(NULL);
}

static void test_set_bucket_and_version(void **state)
{
    sm_map *m = new_map(2, 1024);
    sm_key k = sm_key_int(0); /* bucket 175, shard 0 by default */
    sm_route_why why;

    assert_int_equal(sm_map_route(m, &k, &why), 0);
    assert_int_equal(why.bucket, 175);
    assert_int_equal(sm_map_set_bucket(m, 175, 1), 0);
    assert_int_equal(sm_map_route(m, &k, &why), 1);
    assert_int_equal(why.bucket_shard, 1);
    assert_false(why.override);
    sm_map_set_version(m, 42);
    assert_int_equal(sm_map_version(m), 42);
    sm_map_set_version(m, UINT64_MAX);
    assert_true(sm_map_version(m) == UINT64_MAX);
    sm_map_free(m);
}

static void test_route_why(void **state)
{
    sm_map *m = new_map(32, 1024);
    sm_key k = sm_key_text("tenant-1", 8); /* bucket 905: shard 905 * 32 / 1024 = 28 */
    sm_route_why why;

    assert_int_equal(sm_map_route(m, &k, &why), 28);
    assert_int_equal((int64_t)why.hash, -5960342201233910903);
    assert_int_equal(why.bucket, 905);
    assert_int_equal(why.bucket_shard, 28);
    assert_int_equal(why.shard, 28);
    assert_false(why.override);
    assert_int_equal(sm_map_route(m, &k, NULL), 28);
    sm_map_free(m);
}

/* An override is found by the key's canonical text, whatever form the key came in. */
static void test_overrides(void **state)
{
    sm_map *m = new_map(3, 1024);
    sm_key k;
    sm_route_why why;
    int shard;

    assert_int_equal(sm_map_add_override(m, "42", 2, 0), 0);
    assert_int_equal(sm_map_add_override(m, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", 36, 1), 0);
    assert_int_equal(sm_map_add_override(m, "acme", 4, 2), 0);
    assert_int_equal(sm_map_add_override(m, "", 0, 1), 0);
    assert_int_equal(sm_map_add_override(m, "acme", 4, 0), SM_EEXIST);
    assert_int_equal(sm_map_override_count(m), 4);

    /* 42 is in bucket 712, shard 712 * 3 / 1024 = 2 by default. */
    assert_int_equal(sm_key_from_text(&k, SM_OID_INT4, " +042", 5), 0);
    assert_int_equal(sm_map_route(m, &k, &why), 0);
    assert_true(why.override);
    assert_int_equal(why.bucket, 712);
    assert_int_equal(why.bucket_shard, 2);
    assert_int_equal(why.shard, 0);

    assert_int_equal(sm_key_from_text(&k, SM_OID_UUID, "{A0EEBC999C0B4EF8BB6D6BB9BD380A11}", 34), 0);
    assert_int_equal(sm_map_route(m, &k, &why), 1);
    assert_true(why.override);

    k = sm_key_text("acme", 4);
    assert_int_equal(sm_map_route(m, &k, &why), 2);
    assert_true(why.override);
    k = sm_key_text("", 0);
    assert_int_equal(sm_map_route(m, &k, &why), 1);
    assert_true(why.override);

    /* Near misses route by bucket. */
    k = sm_key_text("acm", 3);
    shard = sm_map_route(m, &k, &why);
    assert_int_equal(shard, why.bucket_shard);
    assert_false(why.override);
    k = sm_key_int(43);
    sm_map_route(m, &k, &why);
    assert_false(why.override);
    assert_int_equal(sm_map_override_shard(m, "acme", 4), 2);
    assert_int_equal(sm_map_override_shard(m, "ACME", 4), -1);
    sm_map_free(m);
}

/* Enough overrides to grow the table several times; every one is still found, and keys
 * without one still route by bucket. */
static void test_many_overrides(void **state)
{
    enum { N = 5000 };
    sm_map *m = new_map(32, 1024);
    char buf[32];
    sm_key k;
    sm_route_why why;
    int shard;

    for (int i = 0; i < N; i++) {
        int n = snprintf(buf, sizeof(buf), "%d", i * 7);
        assert_int_equal(sm_map_add_override(m, buf, (size_t)n, (uint32_t)(i % 32)), 0);
    }
    assert_int_equal(sm_map_override_count(m), N);
    for (int i = 0; i < N; i++) {
        k = sm_key_int(i * 7);
        assert_int_equal(sm_map_route(m, &k, &why), i % 32);
        assert_true(why.override);
        k = sm_key_int(i * 7 + 1);
        shard = sm_map_route(m, &k, &why);
        assert_int_equal(shard, why.bucket_shard);
        assert_false(why.override);
    }
    sm_map_free(m);
}

/* Sums what sm_map_each_override shows, and stops early when asked to. */
typedef struct override_tally {
    uint32_t per_shard[3];
    int seen;
    int stop_after; /* 0: never */
    bool saw_acme;
} override_tally;

static int tally_override(void *arg, const char *tenant, size_t len, uint32_t shard)
{
    override_tally *t = arg;

    t->per_shard[shard]++;
    t->saw_acme = t->saw_acme || (len == 4 && memcmp(tenant, "acme", 4) == 0 && shard == 2);
    return ++t->seen == t->stop_after ? 7 : 0;
}

/* The per-shard counts SHOW SHARDS and pgshard-migrate status print. */
static void test_each_override_and_shard_buckets(void **state)
{
    sm_map *m = new_map(3, 1024);
    override_tally t = {{0}, 0, 0, false};

    assert_int_equal(sm_map_each_override(m, tally_override, &t), 0);
    assert_int_equal(t.seen, 0);
    assert_int_equal(sm_map_add_override(m, "acme", 4, 2), 0);
    assert_int_equal(sm_map_add_override(m, "42", 2, 0), 0);
    assert_int_equal(sm_map_add_override(m, "43", 2, 0), 0);
    assert_int_equal(sm_map_each_override(m, tally_override, &t), 0);
    assert_int_equal(t.seen, 3);
    assert_int_equal(t.per_shard[0], 2);
    assert_int_equal(t.per_shard[1], 0);
    assert_int_equal(t.per_shard[2], 1);
    assert_true(t.saw_acme);

    t = (override_tally){{0}, 0, 2, false};
    assert_int_equal(sm_map_each_override(m, tally_override, &t), 7);
    assert_int_equal(t.seen, 2);

    /* ceil(1024 / 3) = 342 buckets for shards 0 and 2's starts: 0..341, 342..682, 683..1023. */
    assert_int_equal(sm_map_shard_buckets(m, 0), 342);
    assert_int_equal(sm_map_shard_buckets(m, 1), 341);
    assert_int_equal(sm_map_shard_buckets(m, 2), 341);
    assert_int_equal(sm_map_set_bucket(m, 0, 2), 0);
    assert_int_equal(sm_map_shard_buckets(m, 0), 341);
    assert_int_equal(sm_map_shard_buckets(m, 2), 342);
    assert_int_equal(sm_map_shard_buckets(m, 3), 0);
    sm_map_free(m);
}

/* The bucket of a key in a map of 1024 buckets. */
static uint32_t bucket_of(const sm_map *m, sm_key k)
{
    sm_route_why why;
    assert_true(sm_map_route(m, &k, &why) >= 0);
    return why.bucket;
}

static void test_moves_bucket(void **state)
{
    sm_map *m = new_map(2, 1024);
    uint32_t b = bucket_of(m, sm_key_int(42)), other = bucket_of(m, sm_key_int(7));
    uint32_t buckets[] = {b, 1000};
    sm_move mv = {.id = 7,
                  .source = 0,
                  .target = 1,
                  .state = SM_MOVE_RUNNING,
                  .freeze_seq = 0,
                  .tenant_bucket = -1,
                  .buckets = buckets,
                  .nbuckets = 2};
    sm_route_why why;
    sm_key k = sm_key_int(42);

    assert_int_not_equal(b, other);
    assert_int_equal(sm_map_move_count(m), 0);
    assert_false(sm_map_freezing(m));
    assert_int_equal(sm_map_add_move(m, &mv), 0);
    buckets[0] = 3; /* the map keeps its own copy */
    assert_int_equal(sm_map_move_count(m), 1);
    assert_int_equal(sm_map_move(m, 0)->buckets[0], b);
    assert_null(sm_map_move(m, 1));
    assert_false(sm_map_freezing(m));
    assert_int_equal(sm_map_route(m, &k, &why), sm_map_bucket_shard(m, b));
    assert_int_equal(why.frozen, -1); /* running: nothing held */
    assert_int_equal(sm_map_frozen_on(m, 0, b), -1);

    buckets[0] = b;
    mv.id = 8;
    mv.state = SM_MOVE_FREEZING;
    mv.freeze_seq = 3;
    assert_int_equal(sm_map_add_move(m, &mv), 0);
    assert_true(sm_map_freezing(m));
    assert_int_equal(sm_map_route(m, &k, &why), sm_map_bucket_shard(m, b));
    assert_int_equal(why.frozen, 1);
    assert_int_equal(sm_map_move(m, (size_t)why.frozen)->freeze_seq, 3);
    k = sm_key_int(7);
    sm_map_route(m, &k, &why);
    assert_int_equal(why.frozen, -1);
    /* Open transactions: a key of a frozen bucket on the source, or keys not known. */
    assert_int_equal(sm_map_frozen_on(m, 0, b), 1);
    assert_int_equal(sm_map_frozen_on(m, 0, 1000), 1);
    assert_int_equal(sm_map_frozen_on(m, 0, other), -1);
    assert_int_equal(sm_map_frozen_on(m, 0, -1), 1);
    assert_int_equal(sm_map_frozen_on(m, 1, b), -1);
    assert_int_equal(sm_map_frozen_on(m, 1, -1), -1);
    sm_map_free(m);
}

static void test_moves_tenant(void **state)
{
    sm_map *m = new_map(2, 1024);
    uint32_t b = bucket_of(m, sm_key_int(42));
    sm_move mv = {.id = 9,
                  .source = 0,
                  .target = 1,
                  .state = SM_MOVE_FREEZING,
                  .freeze_seq = 1,
                  .tenant = "42",
                  .tenant_len = 2,
                  .tenant_bucket = (int32_t)b};
    sm_route_why why;
    sm_key k = sm_key_int(42), t = sm_key_text("42", 2), other = sm_key_int(420);

    assert_int_equal(sm_map_add_move(m, &mv), 0);
    assert_int_equal(sm_map_move(m, 0)->tenant_len, 2);
    assert_string_equal(sm_map_move(m, 0)->tenant, "42");
    sm_map_route(m, &k, &why);
    assert_int_equal(why.frozen, 0);
    sm_map_route(m, &t, &why); /* a text key whose canonical text is the same */
    assert_int_equal(why.frozen, 0);
    sm_map_route(m, &other, &why); /* another tenant is never held */
    assert_int_equal(why.frozen, -1);
    assert_int_equal(sm_map_frozen_on(m, 0, b), 0);
    assert_int_equal(sm_map_frozen_on(m, 0, (b + 1) % 1024), -1);
    assert_int_equal(sm_map_frozen_on(m, 0, -1), 0);

    /* Without tenant_bucket every open transaction on the source counts. */
    sm_map_free(m);
    m = new_map(2, 1024);
    mv.tenant_bucket = -1;
    assert_int_equal(sm_map_add_move(m, &mv), 0);
    assert_int_equal(sm_map_frozen_on(m, 0, (b + 1) % 1024), 0);
    sm_map_set_serial(m, 5);
    sm_map_set_moves_sig(m, 77);
    assert_int_equal(sm_map_serial(m), 5);
    assert_int_equal(sm_map_moves_sig(m), 77);
    sm_map_free(m);
}

static void test_moves_refused(void **state)
{
    sm_map *m = new_map(2, 64);
    uint32_t buckets[] = {64};
    sm_move mv = {.id = 1, .source = 0, .target = 0, .tenant = "a", .tenant_len = 1, .tenant_bucket = -1};

    assert_int_equal(sm_map_add_move(m, &mv), SM_ESHARD);
    mv.target = 2;
    assert_int_equal(sm_map_add_move(m, &mv), SM_ESHARD);
    mv.target = 1;
    mv.tenant_bucket = 64;
    assert_int_equal(sm_map_add_move(m, &mv), SM_EBUCKET);
    mv.tenant_bucket = -1;
    mv.tenant = "a\0b";
    mv.tenant_len = 3;
    assert_int_equal(sm_map_add_move(m, &mv), SM_ENUL);
    mv.buckets = buckets;
    mv.nbuckets = 1;
    assert_int_equal(sm_map_add_move(m, &mv), SM_EINVAL); /* both a tenant and buckets */
    mv.tenant = NULL;
    assert_int_equal(sm_map_add_move(m, &mv), SM_EBUCKET);
    mv.buckets = NULL;
    assert_int_equal(sm_map_add_move(m, &mv), SM_EINVAL); /* neither */
    assert_int_equal(sm_map_add_move(NULL, &mv), SM_EINVAL);
    assert_int_equal(sm_map_move_count(m), 0);
    sm_map_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_default_two_shards), cmocka_unit_test(test_default_three_shards),
        cmocka_unit_test(test_default_32_shards),  cmocka_unit_test(test_bucket_counts),
        cmocka_unit_test(test_bad_arguments),      cmocka_unit_test(test_set_bucket_and_version),
        cmocka_unit_test(test_route_why),          cmocka_unit_test(test_overrides),
        cmocka_unit_test(test_many_overrides),     cmocka_unit_test(test_each_override_and_shard_buckets),
        cmocka_unit_test(test_moves_bucket),       cmocka_unit_test(test_moves_tenant),
        cmocka_unit_test(test_moves_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

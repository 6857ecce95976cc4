/* Tests for parser/cache.c: the LRU eviction order, the capacity bound, hit and miss
 * counters, statement names in the key, hash collisions, replacement and clearing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "parser/parser.h"

static prs_cache_key key_of(const char *text, uint64_t hash)
{
    prs_cache_key k = {hash, text, strlen(text), NULL, 0};
    return k;
}

static prs_cache_key key_str(const char *text)
{
    return key_of(text, prs_hash64(text, strlen(text), 0));
}

static prs_query_info info_with(uint8_t kind, uint32_t flags)
{
    prs_query_info qi;
    memset(&qi, 0, sizeof qi);
    qi.kind = kind;
    qi.flags = flags;
    qi.set_name = qi.set_value = qi.object_name = PRS_NO_STR;
    qi.set_value_lit = -1;
    return qi;
}

static void insert(prs_cache *c, const char *text, uint32_t tag)
{
    prs_cache_key k = key_str(text);
    prs_query_info qi = info_with(PRS_KIND_SELECT, tag);
    assert_int_equal(prs_cache_insert(c, &k, &qi), 0);
}

/* Looks text up; returns its tag (the flags it was inserted with) or -1. */
static long lookup(prs_cache *c, const char *text)
{
    prs_cache_key k = key_str(text);
    const prs_query_info *qi = prs_cache_lookup(c, &k);
    return qi ? (long)qi->flags : -1;
}

static void test_create_bounds(void **state)
{
    assert_null(prs_cache_create(0));
    prs_cache *c = prs_cache_create(1);
    assert_non_null(c);
    prs_cache_stats s = prs_cache_get_stats(c);
    assert_int_equal(s.capacity, 1);
    assert_int_equal(s.size, 0);
    prs_cache_destroy(c);
    prs_cache_destroy(NULL);
}

static void test_hit_miss_counters(void **state)
{
    prs_cache *c = prs_cache_create(8);
    assert_int_equal(lookup(c, "select ?"), -1);
    insert(c, "select ?", 7);
    assert_int_equal(lookup(c, "select ?"), 7);
    assert_int_equal(lookup(c, "select ?"), 7);
    assert_int_equal(lookup(c, "select ? from t"), -1);
    prs_cache_stats s = prs_cache_get_stats(c);
    assert_int_equal(s.hits, 2);
    assert_int_equal(s.misses, 2);
    assert_int_equal(s.inserts, 1);
    assert_int_equal(s.evictions, 0);
    assert_int_equal(s.size, 1);
    prs_cache_destroy(c);
}

static void test_lru_order(void **state)
{
    prs_cache *c = prs_cache_create(3);
    insert(c, "a", 1);
    insert(c, "b", 2);
    insert(c, "c", 3);
    /* a becomes the most recently used, so b is the oldest. */
    assert_int_equal(lookup(c, "a"), 1);
    insert(c, "d", 4);
    assert_int_equal(lookup(c, "b"), -1);
    assert_int_equal(lookup(c, "a"), 1);
    assert_int_equal(lookup(c, "c"), 3);
    assert_int_equal(lookup(c, "d"), 4);
    /* Order now, oldest first: a, c, d. Two inserts evict a then c. */
    insert(c, "e", 5);
    assert_int_equal(lookup(c, "a"), -1);
    insert(c, "f", 6);
    assert_int_equal(lookup(c, "c"), -1);
    assert_int_equal(lookup(c, "d"), 4);
    assert_int_equal(lookup(c, "e"), 5);
    assert_int_equal(lookup(c, "f"), 6);
    prs_cache_stats s = prs_cache_get_stats(c);
    assert_int_equal(s.evictions, 3);
    assert_int_equal(s.size, 3);
    prs_cache_destroy(c);
}

static void test_capacity_bound(void **state)
{
    enum { CAP = 100, N = 1000 };
    prs_cache *c = prs_cache_create(CAP);
    char text[32];
    for (int i = 0; i < N; i++) {
        snprintf(text, sizeof text, "select %d", i);
        insert(c, text, (uint32_t)i);
        assert_true(prs_cache_get_stats(c).size <= CAP);
    }
    prs_cache_stats s = prs_cache_get_stats(c);
    assert_int_equal(s.size, CAP);
    assert_int_equal(s.evictions, N - CAP);
    /* Exactly the last CAP survive. */
    for (int i = 0; i < N; i++) {
        snprintf(text, sizeof text, "select %d", i);
        assert_int_equal(lookup(c, text), i >= N - CAP ? i : -1);
    }
    prs_cache_destroy(c);
}

static void test_capacity_one(void **state)
{
    prs_cache *c = prs_cache_create(1);
    insert(c, "a", 1);
    insert(c, "b", 2);
    assert_int_equal(lookup(c, "a"), -1);
    assert_int_equal(lookup(c, "b"), 2);
    insert(c, "b", 3);
    assert_int_equal(lookup(c, "b"), 3);
    assert_int_equal(prs_cache_get_stats(c).size, 1);
    prs_cache_destroy(c);
}

static void test_replace_keeps_one_entry(void **state)
{
    prs_cache *c = prs_cache_create(2);
    insert(c, "a", 1);
    insert(c, "b", 2);
    insert(c, "a", 10); /* replaces, and makes a the most recent */
    assert_int_equal(prs_cache_get_stats(c).size, 2);
    insert(c, "c", 3); /* evicts b */
    assert_int_equal(lookup(c, "b"), -1);
    assert_int_equal(lookup(c, "a"), 10);
    prs_cache_destroy(c);
}

/* Two texts forced onto one hash stay apart: the text itself is compared. */
static void test_hash_collision(void **state)
{
    prs_cache *c = prs_cache_create(4);
    prs_cache_key k1 = key_of("select ? from a", 42), k2 = key_of("select ? from b", 42);
    prs_query_info q1 = info_with(PRS_KIND_SELECT, 1), q2 = info_with(PRS_KIND_DELETE, 2);
    assert_int_equal(prs_cache_insert(c, &k1, &q1), 0);
    assert_null(prs_cache_lookup(c, &k2));
    assert_int_equal(prs_cache_insert(c, &k2, &q2), 0);
    assert_int_equal(prs_cache_lookup(c, &k1)->kind, PRS_KIND_SELECT);
    assert_int_equal(prs_cache_lookup(c, &k2)->kind, PRS_KIND_DELETE);
    /* Evicting one of a chain leaves the other reachable. */
    insert(c, "x", 0);
    insert(c, "y", 0);
    prs_cache_lookup(c, &k2);
    insert(c, "z", 0); /* evicts k1, the oldest */
    assert_null(prs_cache_lookup(c, &k1));
    assert_non_null(prs_cache_lookup(c, &k2));
    prs_cache_destroy(c);
}

static void test_statement_names(void **state)
{
    prs_cache *c = prs_cache_create(4);
    prs_cache_key plain = key_str("select $1");
    prs_cache_key named = plain, other = plain;
    named.name = "S_1";
    named.name_len = 3;
    other.name = "S_2";
    other.name_len = 3;
    prs_query_info q = info_with(PRS_KIND_SELECT, 5);
    assert_int_equal(prs_cache_insert(c, &named, &q), 0);
    assert_null(prs_cache_lookup(c, &plain));
    assert_null(prs_cache_lookup(c, &other));
    assert_non_null(prs_cache_lookup(c, &named));
    prs_cache_destroy(c);
}

static void test_copy_is_owned(void **state)
{
    prs_cache *c = prs_cache_create(2);
    char text[] = "select ? from t";
    prs_cache_key k = key_str(text);
    prs_query_info q = info_with(PRS_KIND_SELECT, 0);
    memcpy(q.pool, "t", 2);
    q.pool_len = 2;
    q.tables[0].schema = PRS_NO_STR;
    q.tables[0].name = 0;
    q.n_tables = 1;
    assert_int_equal(prs_cache_insert(c, &k, &q), 0);
    memset(&q, 0xAA, sizeof q); /* the caller's copy goes away */
    const prs_query_info *got = prs_cache_lookup(c, &k);
    assert_non_null(got);
    assert_int_equal(got->n_tables, 1);
    assert_string_equal(prs_info_str(got, got->tables[0].name), "t");
    text[0] = 'S'; /* so does the caller's text */
    prs_cache_key again = key_of("select ? from t", k.hash);
    assert_non_null(prs_cache_lookup(c, &again));
    prs_cache_destroy(c);
}

static void test_clear(void **state)
{
    prs_cache *c = prs_cache_create(4);
    insert(c, "a", 1);
    insert(c, "b", 2);
    prs_cache_clear(c);
    assert_int_equal(prs_cache_get_stats(c).size, 0);
    assert_int_equal(lookup(c, "a"), -1);
    for (int i = 0; i < 10; i++) {
        char t[8];
        snprintf(t, sizeof t, "q%d", i);
        insert(c, t, (uint32_t)i);
    }
    assert_int_equal(prs_cache_get_stats(c).size, 4);
    assert_int_equal(lookup(c, "q9"), 9);
    prs_cache_destroy(c);
}

/* The hot path the proxy runs: lex, look up, on a miss classify and insert. */
static void test_with_lexer(void **state)
{
    prs_cache *c = prs_cache_create(16);
    prs_lexed lx = PRS_LEXED_INIT;
    static const char *const texts[] = {"SELECT abalance FROM pgbench_accounts WHERE aid = 1",
                                        "SELECT abalance FROM pgbench_accounts WHERE aid = 2",
                                        "SELECT abalance FROM pgbench_accounts WHERE aid = 3 -- x"};
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(prs_lex(texts[i], strlen(texts[i]), &lx), 0);
        prs_cache_key k = prs_cache_key_of(&lx, NULL, 0);
        const prs_query_info *hit = prs_cache_lookup(c, &k);
        if (i == 0) {
            prs_query_info qi;
            assert_null(hit);
            assert_int_equal(prs_classify_ex(texts[i], strlen(texts[i]), &lx, NULL, &qi), 0);
            assert_int_equal(prs_cache_insert(c, &k, &qi), 0);
        } else {
            assert_non_null(hit);
            assert_int_equal(hit->kind, PRS_KIND_SELECT);
            assert_true(hit->read_only);
        }
    }
    prs_cache_stats s = prs_cache_get_stats(c);
    assert_int_equal(s.hits, 2);
    assert_int_equal(s.misses, 1);
    prs_lexed_free(&lx);
    prs_cache_destroy(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_create_bounds),  cmocka_unit_test(test_hit_miss_counters),
        cmocka_unit_test(test_lru_order),      cmocka_unit_test(test_capacity_bound),
        cmocka_unit_test(test_capacity_one),   cmocka_unit_test(test_replace_keeps_one_entry),
        cmocka_unit_test(test_hash_collision), cmocka_unit_test(test_statement_names),
        cmocka_unit_test(test_copy_is_owned),  cmocka_unit_test(test_clear),
        cmocka_unit_test(test_with_lexer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

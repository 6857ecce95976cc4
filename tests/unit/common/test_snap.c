/* Tests for common/snap.c: a reader keeps the snapshot it announced while newer ones are
 * published, retired snapshots are freed once no slot holds them, and readers on other
 * threads never see a freed snapshot while the writer publishes thousands (the sanitizer
 * build turns a use after free into a failure). */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include <uv.h>

#include "common/snap.h"

#define MAGIC 0x5a5a5a5a5a5a5a5aull

typedef struct snap_item {
    uint64_t magic;
    uint64_t gen;
    int *freed; /* counter of frees, shared by the test */
} snap_item;

static snap_item *item_new(uint64_t gen, int *freed)
{
    snap_item *it = malloc(sizeof(*it));
    assert_non_null(it);
    *it = (snap_item){MAGIC, gen, freed};
    return it;
}

static void item_free(void *p)
{
    snap_item *it = p;
    (*it->freed)++;
    it->magic = 0;
    free(it);
}

static void test_single_thread(void **state)
{
    int freed = 0;
    pgs_snap s;
    assert_int_equal(pgs_snap_init(&s, 2, item_new(1, &freed), item_free), 0);

    const snap_item *r0 = pgs_snap_get(&s, 0);
    assert_int_equal(r0->gen, 1);
    pgs_snap_publish(&s, item_new(2, &freed));
    /* Reader 0 still holds generation 1: it is kept. */
    assert_int_equal(freed, 0);
    assert_int_equal(r0->magic, MAGIC);
    assert_int_equal(((const snap_item *)pgs_snap_current(&s))->gen, 2);

    const snap_item *r1 = pgs_snap_get(&s, 1);
    assert_int_equal(r1->gen, 2);
    r0 = pgs_snap_get(&s, 0); /* moves on: generation 1 may go at the next publish */
    assert_int_equal(r0->gen, 2);
    pgs_snap_publish(&s, item_new(3, &freed));
    assert_int_equal(freed, 1);
    assert_int_equal(pgs_snap_get(&s, 1), pgs_snap_get(&s, 1));
    pgs_snap_destroy(&s);
    assert_int_equal(freed, 3);
    pgs_snap_destroy(&s); /* twice is harmless */
}

typedef struct stress {
    pgs_snap s;
    atomic_bool stop;
} stress;

typedef struct stress_reader {
    stress *st;
    int slot;
    uint64_t reads;
    bool bad;
} stress_reader;

static void reader_main(void *arg)
{
    stress_reader *r = arg;
    uint64_t last = 0;
    /* At least one read, however late the thread is scheduled on a loaded machine. */
    do {
        const snap_item *it = pgs_snap_get(&r->st->s, r->slot);
        /* Generations only grow, and the snapshot is whole while the slot holds it. */
        if (it->magic != MAGIC || it->gen < last)
            r->bad = true;
        last = it->gen;
        r->reads++;
    } while (!atomic_load(&r->st->stop));
}

static void test_threads(void **state)
{
    enum { READERS = 3, PUBLISHES = 20000 };
    int freed = 0;
    stress st;
    stress_reader readers[READERS];
    uv_thread_t threads[READERS];
    atomic_init(&st.stop, false);
    assert_int_equal(pgs_snap_init(&st.s, READERS, item_new(0, &freed), item_free), 0);
    for (int i = 0; i < READERS; i++) {
        readers[i] = (stress_reader){&st, i, 0, false};
        assert_int_equal(uv_thread_create(&threads[i], reader_main, &readers[i]), 0);
    }
    for (uint64_t g = 1; g <= PUBLISHES; g++)
        pgs_snap_publish(&st.s, item_new(g, &freed));
    atomic_store(&st.stop, true);
    for (int i = 0; i < READERS; i++) {
        uv_thread_join(&threads[i]);
        assert_false(readers[i].bad);
        assert_true(readers[i].reads > 0);
    }
    /* At most one retired snapshot per reader slot, plus the newest, are still alive. */
    assert_true(freed >= PUBLISHES - READERS);
    pgs_snap_destroy(&st.s);
    assert_int_equal(freed, PUBLISHES + 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_single_thread),
        cmocka_unit_test(test_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

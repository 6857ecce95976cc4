/* Allocation failures in proxy/merge.c, as SQLite's test_malloc makes them: this file
 * compiles merge.c and common/buf.c in with malloc, calloc, realloc and free redirected,
 * and each allocation a merge makes fails in turn. Every run must end in an error 53200
 * (or px_merge_new's NULL) or in the whole result, with nothing leaked either way. */
#include <locale.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

/* The allocator the code under test sees: call number fail_at fails (-1: none), and live
 * counts blocks not yet freed. Test-only state; the code under test has none. */
static long alloc_calls;
static long fail_at = -1;
static long live;

static bool alloc_should_fail(void)
{
    return alloc_calls++ == fail_at;
}

static void *test_malloc_(size_t n)
{
    void *p = alloc_should_fail() ? NULL : malloc(n);
    live += p != NULL;
    return p;
}

static void *test_calloc_(size_t n, size_t size)
{
    void *p = alloc_should_fail() ? NULL : calloc(n, size);
    live += p != NULL;
    return p;
}

static void *test_realloc_(void *old, size_t n)
{
    void *p = alloc_should_fail() ? NULL : realloc(old, n);
    live += p != NULL && old == NULL;
    return p;
}

static void test_free_(void *p)
{
    live -= p != NULL;
    free(p);
}

#define malloc test_malloc_
#define calloc test_calloc_
#define realloc test_realloc_
#define free test_free_
#include "common/buf.c"  /* NOLINT(bugprone-suspicious-include): see the comment at the top */
#include "proxy/merge.c" /* NOLINT(bugprone-suspicious-include) */
#undef malloc
#undef calloc
#undef realloc
#undef free

#define NROWS 300
#define MAXBODY 64

/* The shards' messages, built before any allocation may fail. */
typedef struct script {
    prs_scatter plan;
    int nshards;
    uint8_t desc[256];
    size_t desc_len;
    uint8_t rows[NROWS][MAXBODY];
    size_t row_len[NROWS];
    int row_shard[NROWS];
} script;

static void put16(uint8_t *p, size_t *at, uint16_t v)
{
    p[(*at)++] = (uint8_t)(v >> 8);
    p[(*at)++] = (uint8_t)v;
}

static void put32(uint8_t *p, size_t *at, uint32_t v)
{
    put16(p, at, (uint16_t)(v >> 16));
    put16(p, at, (uint16_t)v);
}

/* Columns: text key, int8 count, numeric sum, numeric avg (count in column 4). */
static void script_build(script *sc, int mode)
{
    static const uint32_t types[] = {25, 20, 1700, 1700, 20};
    memset(sc, 0, sizeof *sc);
    prs_scatter *p = &sc->plan;
    p->ncols = 5;
    p->nvisible = 4;
    p->limit = -1;
    p->grouped = mode == 2;
    p->shards_sorted = mode == 1;
    if (mode) {
        p->nsort = 2;
        p->sort[0] = (prs_sc_sort){0, true, true};
        p->sort[1] = (prs_sc_sort){2, false, false};
    }
    if (p->grouped) {
        static const uint8_t kinds[] = {PRS_SC_GROUP, PRS_SC_COUNT, PRS_SC_SUM, PRS_SC_AVG, PRS_SC_COUNT};
        for (int c = 0; c < 5; c++)
            p->cols[c].kind = kinds[c];
        p->cols[3].arg = 4;
    }
    p->cols[4].hidden = true;
    sc->nshards = 3;
    size_t at = 0;
    put16(sc->desc, &at, 5);
    for (int c = 0; c < 5; c++) {
        sc->desc[at++] = (uint8_t)('a' + c);
        sc->desc[at++] = 0;
        put32(sc->desc, &at, 0);
        put16(sc->desc, &at, 0);
        put32(sc->desc, &at, types[c]);
        put16(sc->desc, &at, 0xFFFF);
        put32(sc->desc, &at, 0xFFFFFFFFu);
        put16(sc->desc, &at, 0);
    }
    sc->desc_len = at;
    for (int i = 0; i < NROWS; i++) {
        char v[5][24];
        /* keys descending per shard, so a k-way merge of shard streams works */
        snprintf(v[0], sizeof v[0], "k%04d", (mode == 2 ? i % 97 : 9999 - i));
        snprintf(v[1], sizeof v[1], "%d", i % 5);
        snprintf(v[2], sizeof v[2], "%d.%02d", i, i % 100);
        snprintf(v[3], sizeof v[3], "-%d.5", i);
        snprintf(v[4], sizeof v[4], "%d", i % 3 + 1);
        at = 0;
        put16(sc->rows[i], &at, 5);
        for (int c = 0; c < 5; c++) {
            size_t n = strlen(v[c]);
            put32(sc->rows[i], &at, (uint32_t)n);
            memcpy(sc->rows[i] + at, v[c], n);
            at += n;
        }
        sc->row_len[i] = at;
        sc->row_shard[i] = i % 3;
    }
}

/* Runs the script once; true when it went through without a failure. */
static bool script_run(const script *sc)
{
    px_merge *m = px_merge_new(&sc->plan, sc->nshards, (locale_t)0);
    if (!m)
        return false;
    pgs_buf out = PGS_BUF_INIT;
    int rc = 0;
    for (int s = 0; s < sc->nshards && rc == 0; s++)
        rc = px_merge_row_desc(m, s, sc->desc, sc->desc_len);
    for (int i = 0; i < NROWS && rc == 0; i++) {
        rc = px_merge_data_row(m, sc->row_shard[i], sc->rows[i], sc->row_len[i]);
        if (rc == 0 && i % 50 == 49)
            rc = px_merge_output(m, &out, 1 << 20);
    }
    for (int s = 0; s < sc->nshards && rc == 0; s++)
        rc = px_merge_complete(m, s);
    if (rc == 0)
        rc = px_merge_output(m, &out, 1 << 20);
    if (rc != 0) {
        const char *st;
        px_merge_error(m, &st);
        assert_string_equal(st, "53200");
    } else {
        assert_true(px_merge_done(m));
    }
    px_merge_free(m);
    pgs_buf_free(&out);
    return rc == 0;
}

static void test_merge_oom(void **state)
{
    static script sc;
    for (int mode = 0; mode < 3; mode++) {
        script_build(&sc, mode);
        long n;
        for (n = 0;; n++) {
            alloc_calls = 0;
            live = 0;
            fail_at = n;
            bool whole = script_run(&sc);
            assert_int_equal(live, 0);
            if (whole && alloc_calls <= n)
                break; /* no allocation was left to fail */
        }
        fail_at = -1;
        print_message("mode %d: %ld allocations failed in turn\n", mode, n);
        assert_true(n > 5);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_merge_oom),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

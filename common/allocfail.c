/* The counter behind allocfail.h, built only with -DPGS_ALLOC_FAIL=ON. Read once from the
 * environment before main():
 *   PGS_ALLOC_FAIL_AFTER=EVENT  count from the first pgs_af_mark(EVENT), not from the start
 *   PGS_ALLOC_FAIL_AT=N         the Nth counted allocation fails (1 is the first)
 *   PGS_ALLOC_FAIL_PERSIST=1    ... and so does every one after it
 *   PGS_ALLOC_FAIL_STACK=1      print the stack of each failed call (slow: symbolizes)
 *   PGS_ALLOC_COUNT=1           print "pgshard: allocs: K failed: F" to stderr at exit
 * The counters are the process's only mutable globals outside main(), atomics shared by
 * every thread: a test build may break the rule that a production build keeps. */
/* This file is the counter itself: it builds as such also where the option is off (lint). */
#ifndef PGS_ALLOC_FAIL
#define PGS_ALLOC_FAIL
#endif
#include "common/allocfail.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>

/* This file calls the real allocators. */
#undef malloc
#undef calloc
#undef realloc
#undef strdup
#undef strndup

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
void __sanitizer_print_stack_trace(void);
#define AF_STACK() __sanitizer_print_stack_trace()
#endif
#endif
#ifndef AF_STACK
#define AF_STACK() ((void)0)
#endif

/* Set by af_init before main() and only read afterwards. */
static const char *af_after;
static unsigned long af_at;
static bool af_persist, af_stack, af_report;
/* Shared by all threads. */
static atomic_bool af_counting;
static atomic_ulong af_count, af_failed;

static unsigned long af_env_num(const char *name)
{
    const char *v = getenv(name);
    return v ? strtoul(v, NULL, 10) : 0;
}

static void af_exit_report(void)
{
    fprintf(stderr, "pgshard: allocs: %lu failed: %lu\n", atomic_load(&af_count), atomic_load(&af_failed));
}

__attribute__((constructor)) static void af_init(void)
{
    af_after = getenv("PGS_ALLOC_FAIL_AFTER");
    if (af_after && !af_after[0])
        af_after = NULL;
    af_at = af_env_num("PGS_ALLOC_FAIL_AT");
    af_persist = af_env_num("PGS_ALLOC_FAIL_PERSIST") != 0;
    af_stack = af_env_num("PGS_ALLOC_FAIL_STACK") != 0;
    af_report = af_env_num("PGS_ALLOC_COUNT") != 0 || af_at != 0;
    atomic_store(&af_counting, af_after == NULL);
    if (af_report)
        atexit(af_exit_report);
}

void pgs_af_mark(const char *event)
{
    if (af_after && strcmp(af_after, event) == 0)
        atomic_store(&af_counting, true);
}

/* True when this call is to fail. */
static bool af_fail(const char *what, size_t n)
{
    if (!atomic_load(&af_counting))
        return false;
    unsigned long k = atomic_fetch_add(&af_count, 1) + 1;
    if (!af_at || k < af_at || (k > af_at && !af_persist))
        return false;
    atomic_fetch_add(&af_failed, 1);
    fprintf(stderr, "pgshard: allocfail: failing allocation %lu (%s of %zu bytes)\n", k, what, n);
    if (af_stack)
        AF_STACK();
    return true;
}

void *pgs_af_malloc(size_t n)
{
    return af_fail("malloc", n) ? NULL : malloc(n);
}

void *pgs_af_calloc(size_t n, size_t size)
{
    return af_fail("calloc", n * size) ? NULL : calloc(n, size);
}

void *pgs_af_realloc(void *p, size_t n)
{
    return af_fail("realloc", n) ? NULL : realloc(p, n);
}

char *pgs_af_strdup(const char *s)
{
    return af_fail("strdup", strlen(s) + 1) ? NULL : strdup(s);
}

char *pgs_af_strndup(const char *s, size_t n)
{
    return af_fail("strndup", n + 1) ? NULL : strndup(s, n);
}

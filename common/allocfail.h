/* Allocation-failure injection, in the manner of SQLite's test_malloc, for the build made
 * with -DPGS_ALLOC_FAIL=ON only: there every pgshard source is compiled with -include of
 * this file, which sends malloc, calloc, realloc, strdup and strndup through a counter that
 * can make the Nth call fail. Libraries (libuv, libpq, OpenSSL, libpg_query) keep their own
 * allocator. In any other build this file only defines pgs_af_mark() as nothing. */
#ifndef PGS_ALLOCFAIL_H
#define PGS_ALLOCFAIL_H

#ifdef PGS_ALLOC_FAIL
#include <stdlib.h>
#include <string.h>

void *pgs_af_malloc(size_t n);
void *pgs_af_calloc(size_t n, size_t size);
void *pgs_af_realloc(void *p, size_t n);
char *pgs_af_strdup(const char *s);
char *pgs_af_strndup(const char *s, size_t n);

/* Names a point in the program's life ("listening", "sighup"); when PGS_ALLOC_FAIL_AFTER
 * names it, allocations are counted from its first passage on (see allocfail.c). */
void pgs_af_mark(const char *event);

#define malloc(n) pgs_af_malloc(n)
#define calloc(n, size) pgs_af_calloc(n, size)
#define realloc(p, n) pgs_af_realloc(p, n)
#define strdup(s) pgs_af_strdup(s)
#define strndup(s, n) pgs_af_strndup(s, n)

#else
#define pgs_af_mark(event) ((void)0)
#endif

#endif

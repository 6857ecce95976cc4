/* Crash points for the crash tests of two-phase commit: PGSHARD_TEST_CRASH, read once at
 * start, names one point; the code that reaches it exits at once, as kill -9 would stop it.
 * Nothing here runs unless that variable is set. */
#ifndef PX_TESTHOOK_H
#define PX_TESTHOOK_H

#include <stdbool.h>

/* Reads PGSHARD_TEST_CRASH (after_prepare, after_decision, after_first_commit_prepared);
 * main() calls it before any thread starts. Later calls change nothing. */
void px_test_crash_init(void);

/* When PGSHARD_TEST_CRASH named this point: logs it and _exit(137), without flushing or
 * closing anything. Otherwise returns false, so that a caller may write
 * `if (px_test_crash_point("after_prepare")) ...` or just call it. */
bool px_test_crash_point(const char *name);

#endif

/* PGSHARD_TEST_CRASH's crash points (see testhook.h). The variable is read once, before the
 * threads start, into the only state here, which nothing writes afterwards. */
#include "proxy/testhook.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"

#define TESTHOOK_ENV "PGSHARD_TEST_CRASH"
#define TESTHOOK_NAME_MAX 64

static const char *const testhook_points[] = {"after_prepare", "after_decision",
                                              "after_first_commit_prepared"};

/* Written once under pthread_once, read-only after. */
static char testhook_point[TESTHOOK_NAME_MAX];
static pthread_once_t testhook_once = PTHREAD_ONCE_INIT;

static void testhook_read(void)
{
    const char *v = getenv(TESTHOOK_ENV);
    if (v == NULL || v[0] == '\0')
        return;
    for (size_t i = 0; i < sizeof testhook_points / sizeof testhook_points[0]; i++) {
        if (strcmp(v, testhook_points[i]) == 0) {
            snprintf(testhook_point, sizeof testhook_point, "%s", v);
            pgs_warn("test_crash_armed", "%s=%s: pgshard will exit there", TESTHOOK_ENV, v);
            return;
        }
    }
    pgs_warn("test_crash_unknown", "%s=%s names no crash point; ignored", TESTHOOK_ENV, v);
}

void px_test_crash_init(void)
{
    pthread_once(&testhook_once, testhook_read);
}

bool px_test_crash_point(const char *name)
{
    px_test_crash_init();
    if (testhook_point[0] == '\0' || name == NULL || strcmp(name, testhook_point) != 0)
        return false;
    pgs_error("test_crash", "%s=%s: exiting with status 137", TESTHOOK_ENV, name);
    _exit(137);
}

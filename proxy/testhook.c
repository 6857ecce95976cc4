/* Crash points for tests of two-phase commit: PGSHARD_TEST_CRASH=<name> makes the process
 * end at once (as kill -9 would) when it reaches that point. Unset, a point costs one
 * pointer compare. Nothing else here. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "proxy/px.h"

void px_test_crash_point(const char *name)
{
    static const char *crash = NULL;
    static int read_env = 0;
    if (!read_env) {
        crash = getenv("PGSHARD_TEST_CRASH");
        read_env = 1;
    }
    if (!crash || strcmp(crash, name) != 0)
        return;
    pgs_warn("test_crash", "PGSHARD_TEST_CRASH=%s: ending now, as after kill -9", name);
    _exit(137);
}

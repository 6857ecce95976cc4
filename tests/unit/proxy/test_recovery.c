/* Tests for proxy/recovery.c without PostgreSQL: the gids pgshard writes and the only ones
 * it resolves, and a recovery thread whose shards refuse connections (it warns, retries and
 * stops at once); and for proxy/testhook.c, in child processes: PGSHARD_TEST_CRASH exits with
 * 137 at the named point only. The resolution itself is t_twopc_recovery.py's. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "proxy/recovery.h"
#include "proxy/testhook.h"

static void test_gid_format(void **state)
{
    char gid[PX_GID_LEN + 1];
    assert_int_equal(px_gid_format(gid, sizeof gid, 0x0123456789abcdefull, 42), 0);
    assert_string_equal(gid, "pgshard_0123456789abcdef_000000000000002a");
    assert_int_equal(strlen(gid), PX_GID_LEN);
    assert_int_equal(px_gid_format(gid, sizeof gid, UINT64_MAX, UINT64_MAX), 0);
    assert_string_equal(gid, "pgshard_ffffffffffffffff_ffffffffffffffff");
    assert_int_equal(px_gid_format(gid, sizeof gid - 1, 1, 1), -1); /* no room for the NUL */
}

static void test_gid_parse(void **state)
{
    uint64_t id = 0, seq = 0;
    assert_true(px_gid_parse("pgshard_0123456789abcdef_000000000000002a", &id, &seq));
    assert_true(id == 0x0123456789abcdefull);
    assert_true(seq == 42);
    assert_true(px_gid_parse("pgshard_ffffffffffffffff_0000000000000000", NULL, NULL));

    char gid[PX_GID_LEN + 1];
    for (uint64_t i = 0; i < 1000; i++) {
        uint64_t a = i * 0x9E3779B97F4A7C15ull, b = ~i;
        assert_int_equal(px_gid_format(gid, sizeof gid, a, b), 0);
        assert_true(px_gid_parse(gid, &id, &seq));
        assert_true(id == a && seq == b);
    }

    static const char *const bad[] = {
        NULL,
        "",
        "pgshard_",
        "pgshard_0123456789abcdef_000000000000002",   /* short */
        "pgshard_0123456789abcdef_000000000000002a0", /* long */
        "pgshard_0123456789ABCDEF_000000000000002a",  /* upper case */
        "pgshard_0123456789abcdef-000000000000002a",  /* separator */
        "pgshard_0123456789abcdeg_000000000000002a",  /* not hex */
        "pgshard_0123456789abcdef_00000000000000'a",  /* a quote */
        "PGSHARD_0123456789abcdef_000000000000002a",
        "xgshard_0123456789abcdef_000000000000002a",
        "pgshard__0123456789abcde_000000000000002a",
        "pgshard_foreign",
        "other_gid",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_false(px_gid_parse(bad[i], &id, &seq));
}

/* A TCP port on 127.0.0.1 that refuses connections: bound, then closed. */
static int refused_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof sa;
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    close(fd);
    return ntohs(sa.sin_port);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Shards that are down: rounds fail, are retried every interval, nothing is counted, and
 * stopping does not wait for the next round. */
static void test_recovery_nodes_down(void **state)
{
    char text[512], err[256];
    int port = refused_port();
    snprintf(text, sizeof text,
             "[pgshard]\ntwo_phase_commit = on\ntwo_phase_recovery_interval_ms = 100\n"
             "[shard.0]\nprimary = 127.0.0.1:%d\n[shard.1]\nprimary = 127.0.0.1:%d\n"
             "[user.app]\npassword = pencil\n",
             port, port);
    cfg_config *cfg = NULL;
    assert_int_equal(cfg_load_string(text, "t.ini", &cfg, err, sizeof err), 0);
    px_global_stats gs;
    memset(&gs, 0, sizeof gs);
    px_recovery *r = px_recovery_start(cfg, &gs, err, sizeof err);
    assert_non_null(r);
    usleep(350 * 1000);
    double t0 = now_s();
    px_recovery_stop(r);
    assert_true(now_s() - t0 < 2.0);
    assert_int_equal(atomic_load(&gs.twopc_recovered[0]), 0);
    assert_int_equal(atomic_load(&gs.twopc_recovered[1]), 0);
    px_recovery_stop(NULL);
    cfg_free(cfg);
}

/* Without a user it can log in as, the recovery does not start. */
static void test_recovery_needs_user(void **state)
{
    char err[256];
    cfg_config *cfg = NULL;
    assert_int_equal(cfg_load_string("[shard.0]\nprimary = 127.0.0.1:1\n", "t.ini", &cfg, err, sizeof err),
                     0);
    px_global_stats gs;
    memset(&gs, 0, sizeof gs);
    assert_null(px_recovery_start(cfg, &gs, err, sizeof err));
    assert_non_null(strstr(err, "monitor_user"));
    cfg_free(cfg);
}

/* Runs px_test_crash_point(point) in a child with PGSHARD_TEST_CRASH=env; its exit status. */
static int crash_child(const char *env, const char *point)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (env)
            setenv("PGSHARD_TEST_CRASH", env, 1);
        else
            unsetenv("PGSHARD_TEST_CRASH");
        px_test_crash_init();
        _exit(px_test_crash_point(point) ? 1 : 0);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    return WEXITSTATUS(status);
}

static void test_crash_points(void **state)
{
    assert_int_equal(crash_child(NULL, "after_prepare"), 0);
    assert_int_equal(crash_child("after_prepare", "after_prepare"), 137);
    assert_int_equal(crash_child("after_prepare", "after_decision"), 0);
    assert_int_equal(crash_child("after_decision", "after_decision"), 137);
    assert_int_equal(crash_child("after_first_commit_prepared", "after_first_commit_prepared"), 137);
    assert_int_equal(crash_child("nowhere", "nowhere"), 0); /* not a crash point: ignored */
    assert_int_equal(crash_child("after_prepare", NULL), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gid_format),          cmocka_unit_test(test_gid_parse),
        cmocka_unit_test(test_crash_points),        cmocka_unit_test(test_recovery_nodes_down),
        cmocka_unit_test(test_recovery_needs_user),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

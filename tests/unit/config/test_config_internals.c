/* Tests that need the inside of config/config.c, so this file compiles it in with malloc,
 * calloc, realloc and free redirected: each allocation a load makes fails in turn (as
 * SQLite's test_malloc does) and must give "out of memory" with nothing leaked; and the
 * example config must set every key of cfg_keys, the table that declares them. */
#include <arpa/inet.h>
#include <errno.h>
#include <ini.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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
#include "config/config.c" /* NOLINT(bugprone-suspicious-include): see the comment at the top */
#undef malloc
#undef calloc
#undef realloc
#undef free

#define EXAMPLE "../../config/examples/pgshard.ini"
#define README "../../README.md"

/* Enough of everything to make each kind of allocation happen, including the growth of
 * the user array past its first capacity. */
static const char oom_text[] = "[pgshard]\nlisten_addr = ::\npool_size = 5\nmonitor_user = u2\n"
                               "catalog_dsn = host=h\n"
                               "[shard.1]\nprimary = h1:5432\nreplicas = h1r:5432@2, [::2]:5432\n"
                               "[shard.0]\nprimary = [::1]:5432\n"
                               "[shard.2]\nprimary = h2:5432\n"
                               "[user.u1]\npassword = p1\n[user.u2]\npassword = p2\n"
                               "[user.u3]\npassword = p3\n[user.u4]\n[user.u5]\n"
                               "[user.u6]\n[user.u7]\n[user.u8]\npassword = p8\n"
                               "[user.u9]\npassword = p9\n[user.u10]\n"
                               "[table.t1]\nshard_key = k\n[table.s.t2]\nomnisharded = on\n"
                               "[table.t3]\nomnisharded = on\n[table.t4]\nomnisharded = on\n"
                               "[table.t5]\nomnisharded = on\n[table.t6]\nomnisharded = on\n"
                               "[table.t7]\nomnisharded = on\n[table.t8]\nomnisharded = on\n"
                               "[table.t9]\nomnisharded = on\n";

typedef int (*load_fn)(const void *arg, cfg_config **out, char *err, size_t errlen);

static int load_text(const void *arg, cfg_config **out, char *err, size_t errlen)
{
    return cfg_load_string(arg, "t.ini", out, err, errlen);
}

static int load_path(const void *arg, cfg_config **out, char *err, size_t errlen)
{
    return cfg_load(arg, out, err, errlen);
}

/* Fails allocation 0, then 1, ... until a load makes no more allocations than that. */
static void fail_each_allocation(load_fn load, const void *arg)
{
    long total = -1;
    for (long k = 0; total < 0 || k < total; k++) {
        cfg_config *cfg = NULL;
        char err[256] = "";
        alloc_calls = 0;
        live = 0;
        fail_at = k;
        int rc = load(arg, &cfg, err, sizeof err);
        fail_at = -1;
        if (alloc_calls <= k) { /* nothing failed: that was every allocation */
            assert_int_equal(rc, 0);
            total = alloc_calls;
        } else {
            if (rc != -1 || strcmp(err, "out of memory") != 0)
                print_error("allocation %ld failed: rc %d, %s\n", k, rc, err);
            assert_int_equal(rc, -1);
            assert_null(cfg);
            assert_string_equal(err, "out of memory");
        }
        cfg_free(cfg);
        if (live != 0)
            print_error("allocation %ld failed: %ld blocks leaked\n", k, live);
        assert_int_equal(live, 0);
    }
    assert_true(total > 10);
}

static void test_oom_string(void **state)
{
    fail_each_allocation(load_text, oom_text);
}

static void test_oom_file(void **state)
{
    fail_each_allocation(load_path, EXAMPLE);
}

/* The example is the user's documentation of the keys, so it must show every one. */
static void test_example_sets_every_key(void **state)
{
    char *text = NULL;
    char err[256];
    assert_int_equal(cfg_read_file(EXAMPLE, &text, err, sizeof err), 0);
    if (!text) /* already failed above; for the static analyzer, which cannot tell */
        return;
    for (size_t i = 0; i < CFG_COUNT(cfg_keys); i++) {
        char line[128];
        snprintf(line, sizeof line, "\n%s = ", cfg_keys[i].name);
        if (!strstr(text, line))
            print_error("%s does not set %s\n", EXAMPLE, cfg_keys[i].name);
        assert_non_null(strstr(text, line));
    }
    test_free_(text);
}

/* README's configuration table is the reference of the keys: it must name every one, in a
 * row's key cell, alone ("| `key` |") or among others ("| `a`, `b` |"). */
static void test_readme_names_every_key(void **state)
{
    static const char *const cells[] = {"| `%s` |", "| `%s`, `", ", `%s` |", ", `%s`, `"};
    char *text = NULL;
    char err[256];
    assert_int_equal(cfg_read_file(README, &text, err, sizeof err), 0);
    if (!text)
        return;
    const char *table = strstr(text, "\n## Configuration\n");
    assert_non_null(table);
    for (size_t i = 0; table && i < CFG_COUNT(cfg_keys); i++) {
        bool named = false;
        for (size_t j = 0; j < CFG_COUNT(cells) && !named; j++) {
            char cell[128];
            snprintf(cell, sizeof cell, cells[j], cfg_keys[i].name);
            named = strstr(table, cell) != NULL;
        }
        if (!named)
            print_error("%s's configuration table does not name %s\n", README, cfg_keys[i].name);
        assert_true(named);
    }
    test_free_(text);
}

/* Every default in the table parses into the field it belongs to. */
static void test_defaults_parse(void **state)
{
    for (size_t i = 0; i < CFG_COUNT(cfg_keys); i++) {
        const cfg_key *k = &cfg_keys[i];
        if (!k->def)
            continue;
        union {
            cfg_config cfg;
            cfg_shard shard;
            cfg_user user;
            cfg_table table;
        } u;
        memset(&u, 0, sizeof u);
        char msg[CFG_MSG_MAX] = "";
        assert_int_equal(k->parse(k, k->def, (char *)&u + k->offset, msg, sizeof msg), CFG_OK);
    }
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

/* The cgroup v2 CPU quota, in whole CPUs rounded up, from a process's cgroup file and its
 * cgroup's cpu.max; none without a v2 line, a cpu.max or with "max". */
static void test_cgroup_cpus(void **state)
{
    (void)state;
    char root[] = "/tmp/pgs_cgroupXXXXXX", cg[64], dir[64], max[96];
    assert_non_null(mkdtemp(root));
    snprintf(cg, sizeof cg, "%s/cgroup", root);
    snprintf(dir, sizeof dir, "%s/system.slice", root);
    snprintf(max, sizeof max, "%s/cpu.max", dir);
    assert_int_equal(mkdir(dir, 0700), 0);
    write_file(cg, "12:cpu,cpuacct:/x\n0::/system.slice\n");
    assert_int_equal(cfg_cgroup_cpus(cg, root), 0); /* no cpu.max yet */
    write_file(max, "150000 100000\n");
    assert_int_equal(cfg_cgroup_cpus(cg, root), 2);
    write_file(max, "50000 100000\n");
    assert_int_equal(cfg_cgroup_cpus(cg, root), 1);
    write_file(max, "max 100000\n");
    assert_int_equal(cfg_cgroup_cpus(cg, root), 0);
    write_file(cg, "4:memory:/y\n");
    assert_int_equal(cfg_cgroup_cpus(cg, root), 0); /* cgroup v1 only */
    snprintf(max, sizeof max, "%s/cpu.max", root);
    write_file(max, "400000 100000\n");
    write_file(cg, "0::/\n"); /* in a cgroup namespace: the container's own */
    assert_int_equal(cfg_cgroup_cpus(cg, root), 4);
    unlink(max);
    snprintf(max, sizeof max, "%s/cpu.max", dir);
    unlink(max);
    unlink(cg);
    rmdir(dir);
    rmdir(root);
    assert_true(cfg_available_cpus() >= 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_oom_string),
        cmocka_unit_test(test_oom_file),
        cmocka_unit_test(test_example_sets_every_key),
        cmocka_unit_test(test_readme_names_every_key),
        cmocka_unit_test(test_defaults_parse),
        cmocka_unit_test(test_cgroup_cpus),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

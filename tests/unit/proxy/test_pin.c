/* Tests for px_pin_may (proxy/pin.c), the one-pass filter that decides which statement
 * texts of transaction pooling are parsed for session state at all: it may say yes too
 * often (the parse decides), never no to a statement that pins or unpins. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "proxy/px.h"

static bool may(const char *s)
{
    return px_pin_may(s, strlen(s));
}

static void test_pinning_texts(void **state)
{
    (void)state;
    static const char *const yes[] = {
        "CREATE TEMP TABLE t (a int)",
        "create temporary table t (a int)",
        "CREATE TABLE pg_temp.t (a int)",
        "DECLARE c CURSOR WITH HOLD FOR SELECT 1",
        "SELECT pg_advisory_lock(1)",
        "select PG_TRY_ADVISORY_LOCK(1)",
        "LISTEN chan",
        "UNLISTEN *",
        "unlisten chan",
        "SELECT pg_catalog.pg_advisory_unlock_all()",
        "SELECT \"pg_advisory_lock\"(1)",
        "DO $$BEGIN PERFORM pg_advisory_lock(1); END$$",
        "SELECT set_config('a.b', 'c', false)",
        "DISCARD ALL",
        "CLOSE c",
        "TeMp",
        "x close", /* a word that ends the text */
    };
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++)
        assert_true(may(yes[i]));
}

static void test_plain_texts(void **state)
{
    (void)state;
    static const char *const no[] = {
        "SELECT abalance FROM pgbench_accounts WHERE aid = 1;",
        "UPDATE pgbench_branches SET bbalance = bbalance + 1 WHERE bid = 2",
        "BEGIN",
        "COMMIT",
        "",
        "tem", /* cut short at the end of the text */
        "set_conf",
        "adviso",
    };
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++)
        assert_false(may(no[i]));
    /* Only the length given is read. */
    assert_false(px_pin_may("SELECT 1; LISTEN x", 9));
    assert_true(px_pin_may("SELECT 1; LISTEN x", 18));
}

/* A filter, not a parser: a word that starts with a pin word, or one in a string or a
 * comment, lets the parse decide; one inside another word is not looked at. */
static void test_over_approximation(void **state)
{
    (void)state;
    assert_true(may("SELECT holding FROM t"));
    assert_true(may("SELECT 'temp' AS x"));
    assert_true(may("SELECT 1 /*close*/"));
    assert_false(may("SELECT threshold FROM attempts"));
    assert_false(may("SELECT x1close, \u00e9close FROM t"));
    assert_true(may("SELECT $$temp$$"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pinning_texts),
        cmocka_unit_test(test_plain_texts),
        cmocka_unit_test(test_over_approximation),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

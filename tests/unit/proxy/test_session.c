/* proxy/session.c: the first-words reader of session statements and the startup values
 * RESET returns to. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "proxy/session.h"

static void classify(const char *sql, px_sess_stmt *st)
{
    px_sess_classify(sql, strlen(sql), st);
}

/* A quoted name that never closes ends at the text's end, not one past it (the fuzzer's
 * heap overflow: PREPARE's text after the name was hashed with a length of -1). */
static void test_unclosed_quote(void **state)
{
    (void)state;
    const char *texts[] = {"PREPARE \"abc", "PREPARE \"", "EXECUTE \"x\"\"", "DEALLOCATE \"p"};
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        px_sess_stmt st;
        classify(texts[i], &st);
        assert_true(st.name_end <= strlen(texts[i]));
        assert_true(st.name_at <= st.name_end);
    }
}

static void test_kinds(void **state)
{
    (void)state;
    px_sess_stmt st, other;
    classify("SET datestyle TO DEFAULT", &st);
    assert_int_equal(st.kind, SESS_RESET);
    classify("reset DateStyle", &other);
    assert_int_equal(other.kind, SESS_RESET);
    assert_true(st.key == other.key);
    classify("set datestyle = default;", &st);
    assert_int_equal(st.kind, SESS_RESET);
    classify("SET datestyle = 'default'", &st);
    assert_int_equal(st.kind, SESS_SET);
    classify("SET datestyle TO DEFAULT, ISO", &st);
    assert_int_equal(st.kind, SESS_SET);
    classify("RESET ALL", &st);
    assert_int_equal(st.kind, SESS_RESET_ALL);
    classify("DISCARD ALL", &st);
    assert_int_equal(st.kind, SESS_DISCARD_ALL);
}

static const char *item(const px_session *s, size_t i)
{
    return i < s->n ? s->items[i]->text : "";
}

/* RESET of a startup parameter returns to it, in the committed state and in the restore. */
static void test_reset_to_startup(void **state)
{
    (void)state;
    px_session s = {0};
    assert_int_equal(px_session_add_param(&s, "DateStyle", "SQL, DMY"), 0);
    assert_int_equal(px_session_add_param(&s, "TimeZone", "UTC"), 0);
    uint64_t startup = s.sig;
    const char *set = "SET datestyle = 'ISO'";
    px_sess_stmt st;
    classify(set, &st);
    assert_int_equal(px_session_stage(&s, &st, set, strlen(set)), 0);
    px_session_end(&s, true);
    assert_true(s.sig != startup);
    classify("RESET datestyle", &st);
    assert_int_equal(px_session_restore_sql(&s, &st, NULL), 1);
    pgs_buf b = PGS_BUF_INIT;
    px_session_restore_sql(&s, &st, &b);
    assert_non_null(memmem(b.data, b.len, "SQL, DMY", 8));
    assert_null(memmem(b.data, b.len, "UTC", 3));
    pgs_buf_free(&b);
    assert_int_equal(px_session_stage(&s, &st, "RESET datestyle", 15), 0);
    px_session_end(&s, true);
    assert_int_equal(s.n, 2);
    assert_non_null(strstr(item(&s, 1), "SQL, DMY"));
    classify("RESET ALL", &st);
    assert_int_equal(px_session_restore_sql(&s, &st, NULL), 2);
    classify("RESET work_mem", &st);
    assert_int_equal(px_session_restore_sql(&s, &st, NULL), 0);
    classify("RESET ALL", &st);
    assert_int_equal(px_session_stage(&s, &st, "RESET ALL", 9), 0);
    px_session_end(&s, true);
    assert_int_equal(s.n, 2);
    px_session_free(&s);
}

/* The client encodings COPY FROM cannot split byte by byte, as set at startup or by SET. */
static void test_unsafe_encoding(void **state)
{
    (void)state;
    px_session s = {0};
    assert_null(px_session_unsafe_encoding(NULL));
    assert_int_equal(px_session_add_param(&s, "client_encoding", "UTF8"), 0);
    assert_null(px_session_unsafe_encoding(&s));
    static const struct {
        const char *sql, *want;
    } cases[] = {
        {"SET client_encoding TO 'SJIS'", "sjis"},
        {"SET client_encoding = 'Shift_JIS_2004'", "shiftjis2004"},
        {"set CLIENT_ENCODING to \"gb18030\"", "gb18030"},
        {"SET client_encoding = 'WIN-949'", "win949"},
        {"SET client_encoding TO 'LATIN1'", NULL},
        {"SET client_encoding TO 'EUC_JP'", NULL}, /* its bytes are all above 0x7f */
        {"SET client_encoding TO DEFAULT", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        px_sess_stmt st;
        classify(cases[i].sql, &st);
        assert_int_equal(px_session_stage(&s, &st, cases[i].sql, strlen(cases[i].sql)), 0);
        px_session_end(&s, true);
        const char *got = px_session_unsafe_encoding(&s);
        if (cases[i].want)
            assert_string_equal(got, cases[i].want);
        else
            assert_null(got);
    }
    px_session_free(&s);
}

static void stage_commit(px_session *s, const char *sql)
{
    px_sess_stmt st;
    classify(sql, &st);
    assert_int_equal(px_session_stage(s, &st, sql, strlen(sql)), 0);
    px_session_end(s, true);
}

/* SET SESSION CHARACTERISTICS is kept as the SETs it stands for, so that RESET of one of
 * them, or a later SET, replaces it as on the server; and the session knows when its
 * default isolation level is serializable (its reads then stay off hot standbys). */
static void test_characteristics(void **state)
{
    (void)state;
    px_session s = {0};
    stage_commit(&s, "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE");
    assert_int_equal(s.n, 1);
    assert_string_equal(item(&s, 0), "SET default_transaction_isolation = 'serializable'");
    assert_true(s.serializable);
    stage_commit(&s, "set session characteristics as transaction read only, isolation level repeatable read");
    assert_int_equal(s.n, 2);
    assert_string_equal(item(&s, 0), "SET default_transaction_read_only = on");
    assert_string_equal(item(&s, 1), "SET default_transaction_isolation = 'repeatable read'");
    assert_false(s.serializable);
    stage_commit(&s, "SET default_transaction_isolation TO serializable");
    assert_true(s.serializable);
    stage_commit(&s, "SET SESSION CHARACTERISTICS AS TRANSACTION NOT DEFERRABLE READ WRITE");
    assert_int_equal(s.n, 3);
    assert_string_equal(item(&s, 1), "SET default_transaction_deferrable = off");
    assert_string_equal(item(&s, 2), "SET default_transaction_read_only = off");
    assert_true(s.serializable);
    stage_commit(&s, "RESET default_transaction_isolation");
    assert_false(s.serializable);
    assert_int_equal(s.n, 2);
    /* Not understood: kept as written. */
    stage_commit(&s, "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL BOGUS");
    assert_int_equal(s.n, 3);
    assert_string_equal(item(&s, 2), "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL BOGUS");
    px_session_free(&s);
    /* From the startup packet, and RESET back to it. */
    assert_int_equal(px_session_add_param(&s, "default_transaction_isolation", "serializable"), 0);
    assert_true(s.serializable);
    stage_commit(&s, "SET default_transaction_isolation = 'read committed'");
    assert_false(s.serializable);
    stage_commit(&s, "RESET default_transaction_isolation");
    assert_true(s.serializable);
    px_session_free(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unclosed_quote),   cmocka_unit_test(test_kinds),
        cmocka_unit_test(test_reset_to_startup), cmocka_unit_test(test_unsafe_encoding),
        cmocka_unit_test(test_characteristics),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

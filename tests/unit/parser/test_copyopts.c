/* Tests for parser/copyopts.c: direction, table, columns and query of COPY statements;
 * options in the new syntax and the old one, with PostgreSQL's defaults; and the errors
 * PostgreSQL gives for invalid combinations, with their SQLSTATEs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "parser/copyopts.h"

static int parse(const char *sql, prs_copy_opts *o)
{
    return prs_copy_options(sql, strlen(sql), o);
}

static void test_defaults_text(void **state)
{
    prs_copy_opts o;
    assert_int_equal(parse("COPY t FROM STDIN", &o), 0);
    assert_int_equal(o.dir, PRS_COPY_FROM_STDIN);
    assert_true(o.is_from);
    assert_null(o.schema);
    assert_string_equal(o.relname, "t");
    assert_int_equal(o.columns.n, 0);
    assert_int_equal(o.format, PRS_COPY_TEXT);
    assert_int_equal(o.delimiter, '\t');
    assert_string_equal(o.null_str, "\\N");
    assert_int_equal(o.null_len, 2);
    assert_int_equal(o.quote, 0);
    assert_int_equal(o.header, PRS_COPY_HEADER_FALSE);
    assert_false(o.freeze);
    assert_null(o.encoding);
    prs_copy_opts_free(&o);
}

static void test_defaults_csv(void **state)
{
    prs_copy_opts o;
    assert_int_equal(parse("copy s.t (a, \"B\", c) from stdin with (format csv)", &o), 0);
    assert_string_equal(o.schema, "s");
    assert_string_equal(o.relname, "t");
    assert_int_equal(o.columns.n, 3);
    assert_string_equal(o.columns.names[0], "a");
    assert_string_equal(o.columns.names[1], "B");
    assert_string_equal(o.columns.names[2], "c");
    assert_int_equal(o.format, PRS_COPY_CSV);
    assert_int_equal(o.delimiter, ',');
    assert_int_equal(o.quote, '"');
    assert_int_equal(o.escape, '"');
    assert_string_equal(o.null_str, "");
    prs_copy_opts_free(&o);
}

static void test_new_syntax(void **state)
{
    prs_copy_opts o;
    assert_int_equal(parse("COPY t (a,b) FROM STDIN (FORMAT csv, DELIMITER ';', NULL 'NULL', QUOTE '''', "
                           "ESCAPE '\\', HEADER match, FREEZE, ENCODING 'UTF8', FORCE_NOT_NULL (b), "
                           "FORCE_NULL (a, b))",
                           &o),
                     0);
    assert_int_equal(o.format, PRS_COPY_CSV);
    assert_int_equal(o.delimiter, ';');
    assert_string_equal(o.null_str, "NULL");
    assert_int_equal(o.quote, '\'');
    assert_int_equal(o.escape, '\\');
    assert_int_equal(o.header, PRS_COPY_HEADER_MATCH);
    assert_true(o.freeze);
    assert_string_equal(o.encoding, "UTF8");
    assert_int_equal(o.force_not_null.n, 1);
    assert_true(prs_copy_names_has(&o.force_not_null, "b"));
    assert_false(prs_copy_names_has(&o.force_not_null, "a"));
    assert_int_equal(o.force_null.n, 2);
    prs_copy_opts_free(&o);

    assert_int_equal(parse("COPY t FROM STDIN (FORMAT binary, FREEZE false, HEADER false)", &o), 0);
    assert_int_equal(o.format, PRS_COPY_BINARY);
    assert_false(o.freeze);
    assert_null(o.null_str);
    prs_copy_opts_free(&o);

    assert_int_equal(parse("COPY t FROM STDIN (HEADER 1, FREEZE 0, FORMAT text)", &o), 0);
    assert_int_equal(o.header, PRS_COPY_HEADER_TRUE);
    assert_false(o.freeze);
    prs_copy_opts_free(&o);

    assert_int_equal(parse("COPY t TO STDOUT (FORMAT csv, FORCE_QUOTE *)", &o), 0);
    assert_int_equal(o.dir, PRS_COPY_TO_STDOUT);
    assert_true(o.force_quote_all);
    prs_copy_opts_free(&o);

    assert_int_equal(parse("COPY t TO STDOUT (FORMAT csv, FORCE_QUOTE (a, b), HEADER on)", &o), 0);
    assert_int_equal(o.force_quote.n, 2);
    assert_int_equal(o.header, PRS_COPY_HEADER_TRUE);
    prs_copy_opts_free(&o);
}

static void test_old_syntax(void **state)
{
    prs_copy_opts o;
    assert_int_equal(parse("COPY t FROM STDIN WITH CSV HEADER DELIMITER AS '|' NULL AS 'x' QUOTE AS '$' "
                           "ESCAPE AS '!' FORCE NOT NULL a, b",
                           &o),
                     0);
    assert_int_equal(o.format, PRS_COPY_CSV);
    assert_int_equal(o.header, PRS_COPY_HEADER_TRUE);
    assert_int_equal(o.delimiter, '|');
    assert_string_equal(o.null_str, "x");
    assert_int_equal(o.quote, '$');
    assert_int_equal(o.escape, '!');
    assert_int_equal(o.force_not_null.n, 2);
    prs_copy_opts_free(&o);

    assert_int_equal(parse("COPY BINARY t FROM STDIN", &o), 0);
    assert_int_equal(o.format, PRS_COPY_BINARY);
    prs_copy_opts_free(&o);

    assert_int_equal(parse("COPY t FROM STDIN BINARY", &o), 0);
    assert_int_equal(o.format, PRS_COPY_BINARY);
    prs_copy_opts_free(&o);

    assert_int_equal(parse("COPY t FROM STDIN USING DELIMITERS ','", &o), 0);
    assert_int_equal(o.format, PRS_COPY_TEXT);
    assert_int_equal(o.delimiter, ',');
    prs_copy_opts_free(&o);

    assert_int_equal(parse("COPY t TO STDOUT WITH CSV FORCE QUOTE *", &o), 0);
    assert_true(o.force_quote_all);
    prs_copy_opts_free(&o);

    assert_int_equal(parse("COPY t FROM STDIN WITH FREEZE ENCODING 'latin1'", &o), 0);
    assert_true(o.freeze);
    assert_string_equal(o.encoding, "latin1");
    prs_copy_opts_free(&o);
}

static void test_targets(void **state)
{
    prs_copy_opts o;
    assert_int_equal(
        parse("COPY (SELECT a, (b + 1) FROM t WHERE c IN (1, 2)) TO STDOUT WITH (FORMAT csv)", &o), 0);
    assert_int_equal(o.dir, PRS_COPY_TO_STDOUT);
    assert_null(o.relname);
    assert_string_equal(o.query, "SELECT a, (b + 1) FROM t WHERE c IN (1, 2)");
    prs_copy_opts_free(&o);

    assert_int_equal(parse("/* hi */ COPY /* x */ ( select ')' ) TO STDOUT", &o), 0);
    assert_string_equal(o.query, " select ')' ");
    prs_copy_opts_free(&o);

    assert_int_equal(parse("COPY t FROM '/tmp/x'", &o), 0);
    assert_int_equal(o.dir, PRS_COPY_OTHER);
    assert_true(o.is_from);
    assert_false(o.is_program);
    prs_copy_opts_free(&o);

    assert_int_equal(parse("COPY t TO PROGRAM 'gzip > /tmp/x'", &o), 0);
    assert_int_equal(o.dir, PRS_COPY_OTHER);
    assert_false(o.is_from);
    assert_true(o.is_program);
    prs_copy_opts_free(&o);

    assert_int_equal(parse("COPY t FROM STDIN WHERE a > 1;", &o), 0);
    assert_true(o.has_where);
    prs_copy_opts_free(&o);
}

/* Each invalid statement, with the SQLSTATE and the message PostgreSQL 15 gives (checked
 * against a 15.18 server; the last two are pgshard's own). */
static const struct bad_case {
    const char *sql;
    const char *sqlstate;
    const char *message;
} bad_cases[] = {
    {"COPY t FROM STDIN (FORMAT xml)", "22023", "COPY format \"xml\" not recognized"},
    {"COPY t FROM STDIN (FORMAT csv, FORMAT text)", "42601", "conflicting or redundant options"},
    {"COPY t FROM STDIN (DELIMITER ',', DELIMITER ';')", "42601", "conflicting or redundant options"},
    {"COPY t FROM STDIN (DELIMITER ',,')", "0A000", "COPY delimiter must be a single one-byte character"},
    {"COPY t FROM STDIN (DELIMITER '')", "0A000", "COPY delimiter must be a single one-byte character"},
    {"COPY t FROM STDIN (DELIMITER E'\\n')", "22023", "COPY delimiter cannot be newline or carriage return"},
    {"COPY t FROM STDIN (DELIMITER 'a')", "22023", "COPY delimiter cannot be \"a\""},
    {"COPY t FROM STDIN (DELIMITER '\\')", "22023", "COPY delimiter cannot be \"\\\""},
    {"COPY t FROM STDIN (DELIMITER '.')", "22023", "COPY delimiter cannot be \".\""},
    {"COPY t FROM STDIN (NULL E'a\\rb')", "22023",
     "COPY null representation cannot use newline or carriage return"},
    {"COPY t FROM STDIN (FORMAT binary, DELIMITER ',')", "42601", "cannot specify DELIMITER in BINARY mode"},
    {"COPY t FROM STDIN (FORMAT binary, NULL 'x')", "42601", "cannot specify NULL in BINARY mode"},
    {"COPY t FROM STDIN (FORMAT binary, HEADER)", "0A000", "cannot specify HEADER in BINARY mode"},
    {"COPY t FROM STDIN (QUOTE '\"')", "0A000", "COPY quote available only in CSV mode"},
    {"COPY t FROM STDIN (ESCAPE '\\')", "0A000", "COPY escape available only in CSV mode"},
    {"COPY t FROM STDIN (FORMAT csv, QUOTE 'ab')", "0A000", "COPY quote must be a single one-byte character"},
    {"COPY t FROM STDIN (FORMAT csv, ESCAPE '')", "0A000", "COPY escape must be a single one-byte character"},
    {"COPY t FROM STDIN (FORMAT csv, DELIMITER '\"')", "22023", "COPY delimiter and quote must be different"},
    {"COPY t FROM STDIN (FORMAT csv, NULL 'a,b')", "0A000",
     "COPY delimiter must not appear in the NULL specification"},
    {"COPY t FROM STDIN (FORMAT csv, NULL 'a\"')", "0A000",
     "CSV quote character must not appear in the NULL specification"},
    {"COPY t FROM STDIN (HEADER maybe)", "42601", "header requires a Boolean value or \"match\""},
    {"COPY t TO STDOUT (HEADER match)", "0A000", "cannot use \"match\" with HEADER in COPY TO"},
    {"COPY t FROM STDIN (FREEZE 2)", "42601", "freeze requires a Boolean value"},
    {"COPY t FROM STDIN (FORMAT csv, FORCE_QUOTE (a))", "0A000",
     "COPY force quote only available using COPY TO"},
    {"COPY t TO STDOUT (FORCE_QUOTE (a))", "0A000", "COPY force quote available only in CSV mode"},
    {"COPY t FROM STDIN (FORCE_NOT_NULL (a))", "0A000", "COPY force not null available only in CSV mode"},
    {"COPY t TO STDOUT (FORMAT csv, FORCE_NULL (a))", "0A000",
     "COPY force null only available using COPY FROM"},
    {"COPY t FROM STDIN (FORMAT csv, FORCE_NULL a)", "22023",
     "argument to option \"force_null\" must be a list of column names"},
    {"COPY t FROM STDIN (BOGUS 1)", "42601", "option \"bogus\" not recognized"},
    {"COPY t FROM STDIN (DELIMITER)", "42601", "delimiter requires a parameter"},
    {"COPY t (a, b, a) FROM STDIN", "42701", "column \"a\" specified more than once"},
    {"SELECT 1", "42601", "not a COPY statement"},
    {"COPY t FROM STDIN; COPY u FROM STDIN", "42601", "expected one COPY statement, got 2 statements"},
};

static void test_errors(void **state)
{
    for (size_t i = 0; i < sizeof bad_cases / sizeof bad_cases[0]; i++) {
        prs_copy_opts o;
        int rc = parse(bad_cases[i].sql, &o);
        if (rc != 1 || strcmp(o.sqlstate, bad_cases[i].sqlstate) != 0 ||
            strcmp(o.message, bad_cases[i].message) != 0)
            fail_msg("%s: rc %d, %s %s", bad_cases[i].sql, rc, o.sqlstate, o.message);
        assert_null(o.relname);
        prs_copy_opts_free(&o);
    }
}

static void test_syntax_error(void **state)
{
    prs_copy_opts o;
    assert_int_equal(parse("COPY t FROM STDIN WITH (", &o), 1);
    assert_string_equal(o.sqlstate, "42601");
    assert_true(strlen(o.message) > 0);
    prs_copy_opts_free(&o);

    assert_int_equal(parse("COPY (SELECT 1) FROM STDIN", &o), 1);
    prs_copy_opts_free(&o);

    assert_int_equal(prs_copy_options(NULL, 0, &o), 1);
    prs_copy_opts_free(&o);
    assert_int_equal(prs_copy_options("COPY t FROM STDIN xyz", 17, &o), 0); /* length, not the NUL, ends it */
    prs_copy_opts_free(&o);
}

static void test_many_columns(void **state)
{
    /* 1600 columns are allowed; each one named once. */
    static char sql[1600 * 8 + 64];
    size_t o = 0;
    o += (size_t)snprintf(sql + o, sizeof sql - o, "COPY t (");
    for (int i = 0; i < 1600; i++)
        o += (size_t)snprintf(sql + o, sizeof sql - o, "%sc%d", i ? "," : "", i);
    snprintf(sql + o, sizeof sql - o, ") FROM STDIN");
    prs_copy_opts opts;
    assert_int_equal(parse(sql, &opts), 0);
    assert_int_equal(opts.columns.n, 1600);
    assert_string_equal(opts.columns.names[1599], "c1599");
    prs_copy_opts_free(&opts);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults_text), cmocka_unit_test(test_defaults_csv),
        cmocka_unit_test(test_new_syntax),    cmocka_unit_test(test_old_syntax),
        cmocka_unit_test(test_targets),       cmocka_unit_test(test_errors),
        cmocka_unit_test(test_syntax_error),  cmocka_unit_test(test_many_columns),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

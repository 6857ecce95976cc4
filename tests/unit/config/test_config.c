/* Tests for config/config.c through its public API: defaults, every key, the exact
 * "file:line: key" message of each kind of bad config, cfg_load on real files and on the
 * example config. Allocation failures are in test_config_internals.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "config/config.h"

#define EXAMPLE "../../config/examples/pgshard.ini"
#define SHARD0 "[shard.0]\nprimary = 10.0.0.1:5432\n"

static cfg_config *load_ok(const char *text)
{
    cfg_config *cfg = NULL;
    char err[512] = "";
    int rc = cfg_load_string(text, "t.ini", &cfg, err, sizeof err);
    if (rc != 0)
        print_error("unexpected error: %s\nfor config:\n%s\n", err, text);
    assert_int_equal(rc, 0);
    assert_non_null(cfg);
    return cfg;
}

static void expect_error(const char *text, const char *want)
{
    cfg_config *cfg = (cfg_config *)&cfg; /* must be reset to NULL */
    char err[512] = "";
    int rc = cfg_load_string(text, "t.ini", &cfg, err, sizeof err);
    if (rc != -1 || strcmp(err, want) != 0)
        print_error("config:\n%s\nwant: %s\ngot:  %s (rc %d)\n", text, want, err, rc);
    assert_int_equal(rc, -1);
    assert_null(cfg);
    assert_string_equal(err, want);
}

static int online_cores(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > 256 ? 256 : (int)n;
}

static void test_defaults(void **state)
{
    cfg_config *cfg = load_ok(SHARD0);
    assert_string_equal(cfg->path, "t.ini");
    assert_string_equal(cfg->listen_addr, "127.0.0.1");
    assert_int_equal(cfg->listen_port, 6432);
    assert_int_equal(cfg->workers, online_cores());
    assert_int_equal(cfg->pool_mode, CFG_POOL_TRANSACTION);
    assert_int_equal(cfg->pool_size, 20);
    assert_int_equal(cfg->max_client_conn, 10000);
    assert_int_equal(cfg->auth_type, CFG_AUTH_SCRAM);
    assert_int_equal(cfg->query_wait_timeout_ms, 120000);
    assert_int_equal(cfg->server_idle_timeout_ms, 600000);
    assert_int_equal(cfg->server_connect_timeout_ms, 15000);
    assert_int_equal(cfg->log_format, CFG_LOG_TEXT);
    assert_int_equal(cfg->log_level, CFG_LOG_INFO);
    assert_int_equal(cfg->nshards, 1);
    assert_string_equal(cfg->shards[0].primary.host, "10.0.0.1");
    assert_int_equal(cfg->shards[0].primary.port, 5432);
    assert_int_equal(cfg->nusers, 0);
    assert_null(cfg_find_user(cfg, "app"));
    cfg_free(cfg);
}

static void test_every_key(void **state)
{
    cfg_config *cfg = load_ok("; every key, none at its default\n"
                              "[pgshard]\n"
                              "listen_addr = 0.0.0.0\n"
                              "listen_port = 7000\n"
                              "workers = 3\n"
                              "pool_mode = session\n"
                              "pool_size = 10000\n"
                              "max_client_conn = 1\n"
                              "auth_type = md5\n"
                              "query_wait_timeout = 0\n"
                              "server_idle_timeout = 0.25\n"
                              "server_connect_timeout = 0.001\n"
                              "log_format = json\n"
                              "log_level = debug\n"
                              "[shard.1]\n"
                              "primary = db-1.internal:6543\n"
                              "[shard.0]\n"
                              "primary = [::1]:5433\n"
                              "[user.app]\n"
                              "password = s3cret=with=equals\n"
                              "[user.first.last]\n"
                              "password = md5c0bba8ccf2bd2a3fa2a0dcc9fc0bb4b2\n"
                              "[user.nopass]\n");
    assert_string_equal(cfg->listen_addr, "0.0.0.0");
    assert_int_equal(cfg->listen_port, 7000);
    assert_int_equal(cfg->workers, 3);
    assert_int_equal(cfg->pool_mode, CFG_POOL_SESSION);
    assert_int_equal(cfg->pool_size, 10000);
    assert_int_equal(cfg->max_client_conn, 1);
    assert_int_equal(cfg->auth_type, CFG_AUTH_MD5);
    assert_int_equal(cfg->query_wait_timeout_ms, 0);
    assert_int_equal(cfg->server_idle_timeout_ms, 250);
    assert_int_equal(cfg->server_connect_timeout_ms, 1);
    assert_int_equal(cfg->log_format, CFG_LOG_JSON);
    assert_int_equal(cfg->log_level, CFG_LOG_DEBUG);

    assert_int_equal(cfg->nshards, 2);
    assert_string_equal(cfg->shards[0].primary.host, "::1");
    assert_int_equal(cfg->shards[0].primary.port, 5433);
    assert_string_equal(cfg->shards[1].primary.host, "db-1.internal");
    assert_int_equal(cfg->shards[1].primary.port, 6543);

    assert_int_equal(cfg->nusers, 3);
    const cfg_user *u = cfg_find_user(cfg, "app");
    assert_non_null(u);
    assert_string_equal(u->name, "app");
    assert_string_equal(u->password, "s3cret=with=equals");
    u = cfg_find_user(cfg, "first.last");
    assert_non_null(u);
    assert_string_equal(u->password, "md5c0bba8ccf2bd2a3fa2a0dcc9fc0bb4b2");
    u = cfg_find_user(cfg, "nopass"); /* a section with no keys is still a user */
    assert_non_null(u);
    assert_null(u->password);
    assert_null(cfg_find_user(cfg, "App"));
    assert_null(cfg_find_user(cfg, "first"));
    cfg_free(cfg);
}

static void test_fractional_timeouts(void **state)
{
    cfg_config *cfg = load_ok("[pgshard]\nquery_wait_timeout = 0.5\n"
                              "server_idle_timeout = 2592000\n"
                              "server_connect_timeout = 1.05\n" SHARD0);
    assert_int_equal(cfg->query_wait_timeout_ms, 500);
    assert_int_equal(cfg->server_idle_timeout_ms, 2592000000u);
    assert_int_equal(cfg->server_connect_timeout_ms, 1050);
    cfg_free(cfg);
}

static void test_ipv6_and_host_names(void **state)
{
    cfg_config *cfg = load_ok("[pgshard]\nlisten_addr = ::\n"
                              "[shard.0]\nprimary = [fd00::12]:5432\n"
                              "[shard.1]\nprimary = localhost:1\n"
                              "[shard.2]\nprimary = pg_shard2:65535\n"
                              "[shard.3]\nprimary = [::ffff:10.0.0.1]:5432\n");
    assert_string_equal(cfg->listen_addr, "::");
    assert_int_equal(cfg->nshards, 4);
    assert_string_equal(cfg->shards[0].primary.host, "fd00::12");
    assert_string_equal(cfg->shards[1].primary.host, "localhost");
    assert_int_equal(cfg->shards[1].primary.port, 1);
    assert_string_equal(cfg->shards[2].primary.host, "pg_shard2");
    assert_int_equal(cfg->shards[2].primary.port, 65535);
    assert_string_equal(cfg->shards[3].primary.host, "::ffff:10.0.0.1");
    cfg_free(cfg);

    cfg = load_ok("[pgshard]\nlisten_addr = [::1]\n" SHARD0);
    assert_string_equal(cfg->listen_addr, "::1");
    cfg_free(cfg);
}

/* Comments, blank lines, CRLF line ends and a byte order mark are all ordinary INI. */
static void test_syntax_accepted(void **state)
{
    cfg_config *cfg = load_ok("\xEF\xBB\xBF; comment\r\n"
                              "# another comment\r\n"
                              "\r\n"
                              "   ; an indented comment\r\n"
                              "[pgshard] ; trailing comment\r\n"
                              "pool_size = 7 ; seven\r\n"
                              "pool_mode: session\r\n"
                              "[shard.0]\r\n"
                              "primary=h:5432\r\n"
                              "[user.x]\r\n"
                              "password = a;b\r\n");
    assert_int_equal(cfg->pool_size, 7);
    assert_int_equal(cfg->pool_mode, CFG_POOL_SESSION);
    assert_string_equal(cfg->shards[0].primary.host, "h");
    /* Only " ;" starts an inline comment. */
    assert_string_equal(cfg_find_user(cfg, "x")->password, "a;b");
    cfg_free(cfg);
}

typedef struct bad_config {
    const char *text;
    const char *want;
} bad_config;

static const bad_config bad_configs[] = {
    /* unknown keys and sections; names are case-sensitive */
    {"[pgshard]\nlisten_prot = 1\n" SHARD0, "t.ini:2: key 'listen_prot': unknown key in [pgshard]"},
    {"[pgshard]\nPool_Size = 1\n", "t.ini:2: key 'Pool_Size': unknown key in [pgshard]"},
    {SHARD0 "replica = h:5432\n", "t.ini:3: key 'replica': unknown key in [shard.0]"},
    {SHARD0 "[user.a]\npool_size = 5\n", "t.ini:4: key 'pool_size': unknown key in [user.a]"},
    {SHARD0 "\n[pgbouncer]\n", "t.ini:4: unknown section [pgbouncer]"},
    {"[Pgshard]\n" SHARD0, "t.ini:1: unknown section [Pgshard]"},
    {"[shards.0]\n", "t.ini:1: unknown section [shards.0]"},
    {"pool_size = 5\n[pgshard]\n", "t.ini:1: key 'pool_size': outside any section"},

    /* integers */
    {"[pgshard]\npool_size = 20x\n" SHARD0, "t.ini:2: key 'pool_size': must be an integer from 1 to 10000"},
    {"[pgshard]\npool_size = 0\n", "t.ini:2: key 'pool_size': must be an integer from 1 to 10000"},
    {"[pgshard]\npool_size = 10001\n", "t.ini:2: key 'pool_size': must be an integer from 1 to 10000"},
    {"[pgshard]\npool_size = +5\n", "t.ini:2: key 'pool_size': must be an integer from 1 to 10000"},
    {"[pgshard]\npool_size = 5 5\n", "t.ini:2: key 'pool_size': must be an integer from 1 to 10000"},
    {"[pgshard]\npool_size =\n", "t.ini:2: key 'pool_size': must be an integer from 1 to 10000"},
    {"[pgshard]\npool_size = 99999999999999999999999\n",
     "t.ini:2: key 'pool_size': must be an integer from 1 to 10000"},
    {"[pgshard]\nworkers = -1\n", "t.ini:2: key 'workers': must be an integer from 0 to 256"},
    {"[pgshard]\nworkers = 257\n", "t.ini:2: key 'workers': must be an integer from 0 to 256"},
    {"[pgshard]\nmax_client_conn = 1000001\n",
     "t.ini:2: key 'max_client_conn': must be an integer from 1 to 1000000"},
    {"[pgshard]\nlisten_port = 0\n", "t.ini:2: key 'listen_port': must be an integer from 1 to 65535"},
    {"[pgshard]\nlisten_port = 65536\n", "t.ini:2: key 'listen_port': must be an integer from 1 to 65535"},

    /* enums */
    {"[pgshard]\npool_mode = statement\n", "t.ini:2: key 'pool_mode': must be one of: transaction, session"},
    {"[pgshard]\npool_mode = Session\n", "t.ini:2: key 'pool_mode': must be one of: transaction, session"},
    {"[pgshard]\nauth_type = password\n",
     "t.ini:2: key 'auth_type': must be one of: scram-sha-256, md5, trust"},
    {"[pgshard]\nlog_format = xml\n", "t.ini:2: key 'log_format': must be one of: text, json"},
    {"[pgshard]\nlog_level = trace\n", "t.ini:2: key 'log_level': must be one of: debug, info, warn, error"},

    /* timeouts */
    {"[pgshard]\nquery_wait_timeout = 1.2345\n",
     "t.ini:2: key 'query_wait_timeout': must be a number of seconds from 0 to 2592000, at most 3 "
     "decimals"},
    {"[pgshard]\nquery_wait_timeout = 1e3\n",
     "t.ini:2: key 'query_wait_timeout': must be a number of seconds from 0 to 2592000, at most 3 "
     "decimals"},
    {"[pgshard]\nserver_idle_timeout = -1\n",
     "t.ini:2: key 'server_idle_timeout': must be a number of seconds from 0 to 2592000, at most "
     "3 decimals"},
    {"[pgshard]\nserver_idle_timeout = 2592000.5\n",
     "t.ini:2: key 'server_idle_timeout': must be a number of seconds from 0 to 2592000, at most "
     "3 decimals"},
    {"[pgshard]\nserver_idle_timeout = .5\n",
     "t.ini:2: key 'server_idle_timeout': must be a number of seconds from 0 to 2592000, at most "
     "3 decimals"},
    {"[pgshard]\nserver_connect_timeout = 0\n",
     "t.ini:2: key 'server_connect_timeout': must be a number of seconds from 0.001 to 2592000, "
     "at most 3 decimals"},

    /* addresses */
    {"[pgshard]\nlisten_addr = 999.1.1.1\n",
     "t.ini:2: key 'listen_addr': '999.1.1.1' is not an IP address or host name"},
    {"[pgshard]\nlisten_addr = -bad\n",
     "t.ini:2: key 'listen_addr': '-bad' is not an IP address or host name"},
    {"[shard.0]\nprimary = 10.0.0.1\n", "t.ini:2: key 'primary': must be host:port or [IPv6-address]:port"},
    {"[shard.0]\nprimary = :5432\n", "t.ini:2: key 'primary': must be host:port or [IPv6-address]:port"},
    {"[shard.0]\nprimary = [::1]\n", "t.ini:2: key 'primary': must be host:port or [IPv6-address]:port"},
    {"[shard.0]\nprimary = [::1]5432\n", "t.ini:2: key 'primary': must be host:port or [IPv6-address]:port"},
    {"[shard.0]\nprimary = 10.0.0.1:0\n", "t.ini:2: key 'primary': port must be an integer from 1 to 65535"},
    {"[shard.0]\nprimary = 10.0.0.1:5432x\n",
     "t.ini:2: key 'primary': port must be an integer from 1 to 65535"},
    {"[shard.0]\nprimary = h:\n", "t.ini:2: key 'primary': port must be an integer from 1 to 65535"},
    {"[shard.0]\nprimary = fd00::1:5432\n",
     "t.ini:2: key 'primary': an IPv6 address must be in brackets, as in [::1]:5432"},
    {"[shard.0]\nprimary = [10.0.0.1]:5432\n", "t.ini:2: key 'primary': '10.0.0.1' is not an IPv6 address"},
    {"[shard.0]\nprimary = [fd00::g]:5432\n", "t.ini:2: key 'primary': 'fd00::g' is not an IPv6 address"},
    {"[shard.0]\nprimary = bad host:5432\n",
     "t.ini:2: key 'primary': 'bad host' is not an IP address or host name"},
    {"[shard.0]\nprimary = host-.example:5432\n",
     "t.ini:2: key 'primary': 'host-.example' is not an IP address or host name"},

    /* shards */
    {"[pgshard]\n", "t.ini: section [shard.0] is required"},
    {"", "t.ini: section [shard.0] is required"},
    {"[shard.1]\nprimary = h:1\n", "t.ini: section [shard.0] is required"},
    {SHARD0 "[shard.2]\nprimary = h2:5432\n", "t.ini: [shard.2] present but [shard.1] missing"},
    {SHARD0 "[shard.3]\nprimary = h:1\n[shard.5]\nprimary = h:1\n",
     "t.ini: [shard.3] present but [shard.1] missing"},
    {SHARD0 "[shard.1]\n", "t.ini: [shard.1] has no primary"},
    {SHARD0 "[shard.1]\n[user.a]\n", "t.ini: [shard.1] has no primary"},
    {"[shard.0]\n[pgshard]\npool_size = 0\n", "t.ini: [shard.0] has no primary"},
    {"[shard.256]\n", "t.ini:1: section [shard.256]: shard number must be an integer from 0 to 255 without "
                      "leading zeros"},
    {"[shard.01]\n", "t.ini:1: section [shard.01]: shard number must be an integer from 0 to 255 without "
                     "leading zeros"},
    {"[shard.]\n", "t.ini:1: section [shard.]: shard number must be an integer from 0 to 255 without "
                   "leading zeros"},
    {"[shard.-1]\n", "t.ini:1: section [shard.-1]: shard number must be an integer from 0 to 255 without "
                     "leading zeros"},

    /* users */
    {"[user.]\n", "t.ini:1: section [user.]: user name must be 1 to 63 bytes"},
    {"[user.a234567890123456789012345678901234567890123456789012345678901234]\n",
     "t.ini:1: section [user.a234567890123456789012345678901234567890123456789012345678901234]: "
     "user name must be 1 to 63 bytes"},
    {SHARD0 "[user.a]\npassword =\n",
     "t.ini:4: key 'password': must not be empty (leave the key out for no password)"},

    /* repeats */
    {"[pgshard]\npool_size = 5\npool_size = 6\n", "t.ini:3: key 'pool_size': duplicate key in [pgshard]"},
    {SHARD0 "primary = h:1\n", "t.ini:3: key 'primary': duplicate key in [shard.0]"},
    {SHARD0 "[user.a]\npassword = x\npassword = y\n", "t.ini:5: key 'password': duplicate key in [user.a]"},
    {"[pgshard]\n" SHARD0 "[pgshard]\n", "t.ini:4: duplicate section [pgshard]"},
    {SHARD0 "[shard.0]\n", "t.ini:3: duplicate section [shard.0]"},
    {"[user.a]\n[user.a]\n", "t.ini:2: duplicate section [user.a]"},

    /* syntax, and which error comes first */
    {"[pgshard]\npool_size\n", "t.ini:2: syntax error"},
    {"[pgshard\n", "t.ini:1: syntax error"},
    {"[pgshard]\nnot a key\npool_size = 0\n", "t.ini:2: syntax error"},
    {"[pgshard]\npool_size = 0\nnot a key\n", "t.ini:2: key 'pool_size': must be an integer from 1 to 10000"},
    {"[shard.0]\noops\n[pgshard]\n", "t.ini:2: syntax error"},
    {"[pgshard]\npool_size = 5\n  workers = 2\n",
     "t.ini:3: indented line (it would continue the value above it)"},
    {"[pgshard]\n\tpool_size = 5\n", "t.ini:2: indented line (it would continue the value above it)"},
};

static void test_bad_configs(void **state)
{
    for (size_t i = 0; i < sizeof bad_configs / sizeof bad_configs[0]; i++)
        expect_error(bad_configs[i].text, bad_configs[i].want);
}

/* inih cuts longer lines in two; the loader reports them instead. */
static void test_long_line(void **state)
{
    char text[400];
    int n = snprintf(text, sizeof text, "[pgshard]\nlisten_addr = %0250d\n", 0);
    assert_true(n > 0 && (size_t)n < sizeof text);
    expect_error(text, "t.ini:2: line longer than 197 bytes");

    /* The longest line that fits is fine and the lines after it keep their numbers. */
    n = snprintf(text, sizeof text, SHARD0 "[user.a]\npassword = %0187d\nbad\n", 0);
    assert_true(n > 0 && (size_t)n < sizeof text);
    expect_error(text, "t.ini:5: syntax error");
}

/* A buffer too small for the message gets a truncated, terminated message. */
static void test_small_error_buffer(void **state)
{
    cfg_config *cfg;
    char err[12];
    memset(err, 'x', sizeof err);
    assert_int_equal(cfg_load_string("[pgshard]\npool_size = 0\n", "t.ini", &cfg, err, sizeof err), -1);
    assert_string_equal(err, "t.ini:2: ke");
    assert_int_equal(cfg_load_string("[pgshard]\n", "t.ini", &cfg, NULL, 0), -1);
    assert_null(cfg);
}

static void test_load_missing_file(void **state)
{
    cfg_config *cfg = (cfg_config *)&cfg;
    char err[256];
    assert_int_equal(cfg_load("/nonexistent/pgshard.ini", &cfg, err, sizeof err), -1);
    assert_null(cfg);
    assert_string_equal(err, "/nonexistent/pgshard.ini: cannot open: No such file or directory");

    assert_int_equal(cfg_load(".", &cfg, err, sizeof err), -1);
    assert_string_equal(err, ".: cannot read: Is a directory");
}

static void write_file(const char *path, const char *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

static void test_load_file(void **state)
{
    char path[] = "/tmp/pgshard-test-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    cfg_config *cfg;
    char err[256], want[300];

    static const char text[] = "[pgshard]\npool_size = 3\n" SHARD0;
    write_file(path, text, sizeof text - 1);
    assert_int_equal(cfg_load(path, &cfg, err, sizeof err), 0);
    assert_string_equal(cfg->path, path);
    assert_int_equal(cfg->pool_size, 3);
    cfg_free(cfg);

    write_file(path, "[pgshard]\npool_size = 0\n", 24);
    assert_int_equal(cfg_load(path, &cfg, err, sizeof err), -1);
    snprintf(want, sizeof want, "%s:2: key 'pool_size': must be an integer from 1 to 10000", path);
    assert_string_equal(err, want);

    /* A NUL would end the text early and hide everything after it. */
    static const char nul[] = SHARD0 "\0[pgbouncer]\n";
    write_file(path, nul, sizeof nul - 1);
    assert_int_equal(cfg_load(path, &cfg, err, sizeof err), -1);
    snprintf(want, sizeof want, "%s: contains a NUL byte", path);
    assert_string_equal(err, want);

    unlink(path);
}

/* Larger than the first read buffer, and more users than the first user array holds. */
static void test_load_large_file(void **state)
{
    char path[] = "/tmp/pgshard-test-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    FILE *f = fdopen(fd, "w");
    assert_non_null(f);
    fputs(SHARD0, f);
    for (int i = 0; i < 1000; i++)
        fprintf(f, "; user number %d\n[user.u%d]\npassword = secret-%d\n", i, i, i);
    assert_int_equal(fclose(f), 0);

    cfg_config *cfg;
    char err[256];
    assert_int_equal(cfg_load(path, &cfg, err, sizeof err), 0);
    assert_int_equal(cfg->nusers, 1000);
    assert_string_equal(cfg_find_user(cfg, "u999")->password, "secret-999");
    cfg_free(cfg);
    unlink(path);

    /* An endless file stops at the size cap. */
    assert_int_equal(cfg_load("/dev/zero", &cfg, err, sizeof err), -1);
    assert_string_equal(err, "/dev/zero: larger than 16777216 bytes");
}

static void test_load_example(void **state)
{
    cfg_config *cfg = NULL;
    char err[256] = "";
    int rc = cfg_load(EXAMPLE, &cfg, err, sizeof err);
    if (rc != 0)
        print_error("%s\n", err);
    assert_int_equal(rc, 0);
    assert_int_equal(cfg->workers, 4);
    assert_int_equal(cfg->query_wait_timeout_ms, 30500);
    assert_int_equal(cfg->nshards, 3);
    assert_string_equal(cfg->shards[2].primary.host, "fd00::12");
    assert_int_equal(cfg->nusers, 3);
    assert_non_null(cfg_find_user(cfg, "app")->password);
    assert_null(cfg_find_user(cfg, "monitor")->password);
    cfg_free(cfg);
}

static void test_names(void **state)
{
    assert_string_equal(cfg_pool_mode_name(CFG_POOL_TRANSACTION), "transaction");
    assert_string_equal(cfg_pool_mode_name(CFG_POOL_SESSION), "session");
    assert_string_equal(cfg_auth_type_name(CFG_AUTH_SCRAM), "scram-sha-256");
    assert_string_equal(cfg_auth_type_name(CFG_AUTH_MD5), "md5");
    assert_string_equal(cfg_auth_type_name(CFG_AUTH_TRUST), "trust");
    assert_string_equal(cfg_auth_type_name((cfg_auth_type)42), "unknown");
    cfg_free(NULL);
    assert_null(cfg_find_user(NULL, "app"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_every_key),
        cmocka_unit_test(test_fractional_timeouts),
        cmocka_unit_test(test_ipv6_and_host_names),
        cmocka_unit_test(test_syntax_accepted),
        cmocka_unit_test(test_bad_configs),
        cmocka_unit_test(test_long_line),
        cmocka_unit_test(test_small_error_buffer),
        cmocka_unit_test(test_load_missing_file),
        cmocka_unit_test(test_load_file),
        cmocka_unit_test(test_load_large_file),
        cmocka_unit_test(test_load_example),
        cmocka_unit_test(test_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Tests for config/config.c through its public API: defaults, every key, the exact
 * "file:line: key" message of each kind of bad config, cfg_load on real files and on the
 * example config. Allocation failures are in test_config_internals.c. */
#include <sched.h>
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
/* Replicas need a user with a plain password for the monitor. */
#define PLAIN_USER "[user.app]\npassword = pencil\n"
#define MD5_SECRET "md5c0bba8ccf2bd2a3fa2a0dcc9fc0bb4b2"
#define SCRAM_SECRET                                                                                         \
    "SCRAM-SHA-256$4096:4GmX+E96n8s7nNndIrSrTQ==$gzzVQW95v+WUleOPCPWQXeWZ8nLg/78AGTwzSh3aTIQ=:"              \
    "PZLYuTyssde8Q4IlMQd3kap+Tb/38TbDOcs4g1HLZng="

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

/* Half the CPUs this process may use (its affinity mask, as nproc counts them), rounded
 * up, unless a cgroup quota allows fewer. */
static int default_workers(void)
{
    cpu_set_t set;
    assert_int_equal(sched_getaffinity(0, sizeof set, &set), 0);
    int n = cfg_available_cpus();
    assert_true(n >= 1 && n <= CPU_COUNT(&set));
    return (n + 1) / 2;
}

static void test_defaults(void **state)
{
    cfg_config *cfg = load_ok(SHARD0);
    assert_string_equal(cfg->path, "t.ini");
    assert_string_equal(cfg->listen_addr, "127.0.0.1");
    assert_int_equal(cfg->listen_port, 6432);
    assert_int_equal(cfg->workers, default_workers());
    assert_int_equal(cfg->pool_mode, CFG_POOL_TRANSACTION);
    assert_int_equal(cfg->pool_size, 20);
    assert_int_equal(cfg->max_client_conn, 10000);
    assert_int_equal(cfg->auth_type, CFG_AUTH_SCRAM);
    assert_int_equal(cfg->query_wait_timeout_ms, 120000);
    assert_int_equal(cfg->server_idle_timeout_ms, 600000);
    assert_int_equal(cfg->server_connect_timeout_ms, 15000);
    assert_int_equal(cfg->server_keepalive_idle, 60);
    assert_int_equal(cfg->server_keepalive_interval, 10);
    assert_int_equal(cfg->server_keepalive_count, 6);
    assert_int_equal(cfg->server_tcp_user_timeout_ms, 0);
    assert_int_equal(cfg->log_format, CFG_LOG_TEXT);
    assert_int_equal(cfg->log_level, CFG_LOG_INFO);
    assert_int_equal(cfg->read_your_writes, CFG_RYW_SESSION);
    assert_true(cfg->max_lag_bytes == 1048576);
    assert_int_equal(cfg->max_lag_ms, 1000);
    assert_int_equal(cfg->lag_poll_ms, 100);
    assert_int_equal(cfg->replica_fallback, CFG_FALLBACK_PRIMARY);
    assert_int_equal(cfg->primary_wait_ms, 5000);
    assert_int_equal(cfg->unknown_functions, CFG_UNKNOWN_FUNC_PRIMARY);
    assert_null(cfg->monitor_user);
    assert_string_equal(cfg->monitor_dbname, "postgres");
    assert_int_equal(cfg->server_tls, CFG_STLS_DISABLE);
    assert_string_equal(cfg->server_tls_ca_file, "");
    assert_int_equal(cfg->nshards, 1);
    assert_string_equal(cfg->shards[0].primary.host, "10.0.0.1");
    assert_int_equal(cfg->shards[0].primary.port, 5432);
    assert_int_equal(cfg->shards[0].nreplicas, 0);
    assert_int_equal(cfg->shards[0].balance, CFG_BALANCE_ROUND_ROBIN);
    assert_int_equal(cfg->nusers, 0);
    assert_null(cfg_find_user(cfg, "app"));
    assert_null(cfg_monitor_user(cfg));
    assert_int_equal(cfg->buckets, 1024);
    assert_null(cfg->catalog_dsn);
    assert_int_equal(cfg->default_shard, 0);
    assert_false(cfg->allow_cross_shard_writes);
    assert_false(cfg->two_phase_commit);
    assert_int_equal(cfg->two_phase_recovery_interval_ms, 5000);
    assert_int_equal(cfg->two_phase_recovery_grace_ms, 5000);
    assert_int_equal(cfg->ntables, 0);
    assert_null(cfg->tables);
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
                              "read_your_writes = off\n"
                              "max_lag_bytes = 9007199254740992\n"
                              "max_lag_ms = 0\n"
                              "lag_poll_ms = 60000\n"
                              "replica_fallback = error\n"
                              "primary_wait_ms = 600000\n"
                              "unknown_functions = replica\n"
                              "monitor_user = app\n"
                              "monitor_dbname = template1\n"
                              "buckets = 65536\n"
                              "catalog_dsn = host=10.0.0.1 dbname=app\n"
                              "default_shard = 1\n"
                              "[shard.1]\n"
                              "primary = db-1.internal:6543\n"
                              "replicas = db-1r.internal:6543@7\n"
                              "balance = least_outstanding\n"
                              "[shard.0]\n"
                              "primary = [::1]:5433\n"
                              "balance = weighted\n"
                              "[user.app]\n"
                              "password = s3cret=with=equals\n"
                              "[user.first.last]\n"
                              "password = md5c0bba8ccf2bd2a3fa2a0dcc9fc0bb4b2\n"
                              "[user.nopass]\n"
                              "[table.orders]\n"
                              "shard_key = tenant_id\n"
                              "key_type = uuid\n"
                              "[table.countries]\n"
                              "omnisharded = true\n");
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
    assert_int_equal(cfg->read_your_writes, CFG_RYW_OFF);
    assert_true(cfg->max_lag_bytes == 9007199254740992ULL);
    assert_int_equal(cfg->max_lag_ms, 0);
    assert_int_equal(cfg->lag_poll_ms, 60000);
    assert_int_equal(cfg->replica_fallback, CFG_FALLBACK_ERROR);
    assert_int_equal(cfg->primary_wait_ms, 600000);
    assert_int_equal(cfg->unknown_functions, CFG_UNKNOWN_FUNC_REPLICA);
    assert_string_equal(cfg->monitor_user, "app");
    assert_string_equal(cfg->monitor_dbname, "template1");
    assert_int_equal(cfg->buckets, 65536);
    assert_string_equal(cfg->catalog_dsn, "host=10.0.0.1 dbname=app");
    assert_int_equal(cfg->default_shard, 1);
    assert_int_equal(cfg->ntables, 2);
    assert_string_equal(cfg->tables[0].name, "orders");
    assert_string_equal(cfg->tables[0].shard_key, "tenant_id");
    assert_int_equal(cfg->tables[0].key_type, CFG_KEY_UUID);
    assert_true(cfg->tables[1].omnisharded);

    assert_int_equal(cfg->nshards, 2);
    assert_string_equal(cfg->shards[0].primary.host, "::1");
    assert_int_equal(cfg->shards[0].primary.port, 5433);
    assert_int_equal(cfg->shards[0].nreplicas, 0);
    assert_int_equal(cfg->shards[0].balance, CFG_BALANCE_WEIGHTED);
    assert_string_equal(cfg->shards[1].primary.host, "db-1.internal");
    assert_int_equal(cfg->shards[1].primary.port, 6543);
    assert_int_equal(cfg->shards[1].nreplicas, 1);
    assert_string_equal(cfg->shards[1].replicas[0].node.host, "db-1r.internal");
    assert_int_equal(cfg->shards[1].replicas[0].node.port, 6543);
    assert_int_equal(cfg->shards[1].replicas[0].weight, 7);
    assert_int_equal(cfg->shards[1].balance, CFG_BALANCE_LEAST_OUTSTANDING);
    assert_ptr_equal(cfg_monitor_user(cfg), cfg_find_user(cfg, "app"));

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

/* Every form of item, the blanks around them, and the shard's primary after its replicas. */
/* server_tls takes libpq's sslmode words; the two that verify the server's certificate
 * need the CA file to verify it against, wherever in [pgshard] it is set. */
static void test_server_tls(void **state)
{
    static const struct {
        const char *word;
        cfg_server_tls mode;
    } modes[] = {{"disable", CFG_STLS_DISABLE},
                 {"prefer", CFG_STLS_PREFER},
                 {"require", CFG_STLS_REQUIRE},
                 {"verify-ca", CFG_STLS_VERIFY_CA},
                 {"verify-full", CFG_STLS_VERIFY_FULL}};
    for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++) {
        char text[256];
        snprintf(text, sizeof text,
                 "[pgshard]\nserver_tls = %s\nserver_tls_ca_file = /etc/pgshard/ca.pem\n" SHARD0,
                 modes[i].word);
        cfg_config *cfg = load_ok(text);
        assert_int_equal(cfg->server_tls, modes[i].mode);
        assert_string_equal(cfg->server_tls_ca_file, "/etc/pgshard/ca.pem");
        assert_string_equal(cfg_server_tls_name(cfg->server_tls), modes[i].word);
        cfg_free(cfg);
    }
    /* The CA file may come first, and the modes that do not verify do not need one. */
    cfg_config *cfg = load_ok("[pgshard]\nserver_tls_ca_file = ca.pem\nserver_tls = verify-full\n" SHARD0);
    assert_int_equal(cfg->server_tls, CFG_STLS_VERIFY_FULL);
    assert_string_equal(cfg->server_tls_ca_file, "ca.pem");
    cfg_free(cfg);
    cfg = load_ok("[pgshard]\nserver_tls = require\n" SHARD0);
    assert_int_equal(cfg->server_tls, CFG_STLS_REQUIRE);
    assert_string_equal(cfg->server_tls_ca_file, "");
    cfg_free(cfg);

    expect_error(
        "[pgshard]\nserver_tls = verify-full\n" SHARD0,
        "t.ini:2: key 'server_tls': verify-full needs server_tls_ca_file (a PEM file of CA certificates)");
    expect_error(
        "[pgshard]\npool_size = 5\nserver_tls = verify-ca\nworkers = 1\n",
        "t.ini:3: key 'server_tls': verify-ca needs server_tls_ca_file (a PEM file of CA certificates)");
    /* [pgshard] last: found when the file ends, still reported on its line. */
    expect_error(
        SHARD0 "[pgshard]\nserver_tls = verify-ca\n",
        "t.ini:4: key 'server_tls': verify-ca needs server_tls_ca_file (a PEM file of CA certificates)");
    expect_error("[pgshard]\nserver_tls = verify-full\nserver_tls_ca_file =\n" SHARD0,
                 "t.ini:3: key 'server_tls_ca_file': must be a file path of 1 to 1023 bytes");
    expect_error(
        "[pgshard]\nserver_tls = verify\n" SHARD0,
        "t.ini:2: key 'server_tls': must be one of: disable, prefer, require, verify-ca, verify-full");
    expect_error(
        "[pgshard]\nserver_tls = Verify-Full\nserver_tls_ca_file = ca.pem\n" SHARD0,
        "t.ini:2: key 'server_tls': must be one of: disable, prefer, require, verify-ca, verify-full");
}

static void test_replicas(void **state)
{
    cfg_config *cfg = load_ok("[shard.0]\n"
                              "replicas =  10.0.0.2:5432 ,[fd00::13]:5433@1000,\tdb-r.internal:6000@3\n"
                              "primary = 10.0.0.1:5432\n"
                              "[shard.1]\n"
                              "primary = [::1]:5432\n"
                              "replicas = [::1]:5433@2, [::ffff:10.0.0.1]:5432, 10.0.0.1:5432\n"
                              "[shard.2]\n"
                              "primary = h:1\n"
                              "replicas =\n"
                              "[shard.3]\n"
                              "primary = h:1\n"
                              "replicas = h:2 ; a comment\n" PLAIN_USER);
    const cfg_shard *s = &cfg->shards[0];
    assert_int_equal(s->nreplicas, 3);
    assert_string_equal(s->replicas[0].node.host, "10.0.0.2");
    assert_int_equal(s->replicas[0].node.port, 5432);
    assert_int_equal(s->replicas[0].weight, 1);
    assert_string_equal(s->replicas[1].node.host, "fd00::13");
    assert_int_equal(s->replicas[1].node.port, 5433);
    assert_int_equal(s->replicas[1].weight, 1000);
    assert_string_equal(s->replicas[2].node.host, "db-r.internal");
    assert_int_equal(s->replicas[2].node.port, 6000);
    assert_int_equal(s->replicas[2].weight, 3);
    assert_string_equal(s->primary.host, "10.0.0.1");

    /* The same host on another port, and addresses that only look alike, are other nodes. */
    s = &cfg->shards[1];
    assert_int_equal(s->nreplicas, 3);
    assert_string_equal(s->replicas[0].node.host, "::1");
    assert_int_equal(s->replicas[0].node.port, 5433);
    assert_int_equal(s->replicas[0].weight, 2);
    assert_string_equal(s->replicas[1].node.host, "::ffff:10.0.0.1");
    assert_string_equal(s->replicas[2].node.host, "10.0.0.1");

    assert_int_equal(cfg->shards[2].nreplicas, 0);
    assert_int_equal(cfg->shards[3].nreplicas, 1);
    assert_string_equal(cfg->shards[3].replicas[0].node.host, "h");
    assert_int_equal(cfg->shards[3].replicas[0].node.port, 2);
    cfg_free(cfg);

    /* As many as fit, which still fits on one line. */
    cfg =
        load_ok(SHARD0 "replicas = a:1,b:1,c:1,d:1,e:1,f:1,g:1,h:1,i:1,j:1,k:1,l:1,m:1,n:1,o:1\n" PLAIN_USER);
    assert_int_equal(cfg->shards[0].nreplicas, CFG_MAX_REPLICAS);
    assert_string_equal(cfg->shards[0].replicas[14].node.host, "o");
    cfg_free(cfg);

    /* An empty replicas needs no monitor user. */
    cfg = load_ok(SHARD0 "replicas =\n");
    assert_int_equal(cfg->shards[0].nreplicas, 0);
    cfg_free(cfg);
}

/* The monitor logs in as monitor_user, else as the first user, in file order, with a plain
 * password; md5 and SCRAM secrets and users without a password are skipped. */
/* buckets, catalog_dsn, default_shard and [table.NAME]: the values each accepts. */
static void test_sharding(void **state)
{
    static const char *const good_buckets[] = {"1", "2", "1024", "65536"};
    for (size_t i = 0; i < sizeof good_buckets / sizeof good_buckets[0]; i++) {
        char text[128];
        snprintf(text, sizeof text, "[pgshard]\nbuckets = %s\n" SHARD0, good_buckets[i]);
        cfg_config *cfg = load_ok(text);
        assert_int_equal(cfg->buckets, strtoul(good_buckets[i], NULL, 10));
        cfg_free(cfg);
    }

    cfg_config *cfg =
        load_ok("[pgshard]\ncatalog_dsn = postgresql://u:p@[::1]:5433/cat?sslmode=require\n"
                "default_shard = 2\n" SHARD0 "[shard.1]\nprimary = h1:5432\n[shard.2]\nprimary = h2:5432\n");
    assert_string_equal(cfg->catalog_dsn, "postgresql://u:p@[::1]:5433/cat?sslmode=require");
    assert_int_equal(cfg->default_shard, 2);
    cfg_free(cfg);

    cfg = load_ok(SHARD0 "[table.public.orders]\nkey_type = int\nshard_key = Tenant Id\n"
                         "[table.orders]\nshard_key = tenant_id\n"
                         "[table.a]\nomnisharded = on\n"
                         "[table.b]\nomnisharded = yes\n"
                         "[table.c]\nomnisharded = 1\n"
                         "[table.d]\nomnisharded = false\nshard_key = k\nkey_type = text\n"
                         "[table.s.a]\nomnisharded = true\n");
    assert_int_equal(cfg->ntables, 7);
    const cfg_table *t = &cfg->tables[0];
    assert_string_equal(t->schema, "public");
    assert_string_equal(t->name, "orders");
    assert_string_equal(t->shard_key, "Tenant Id");
    assert_false(t->omnisharded);
    assert_int_equal(t->key_type, CFG_KEY_INT);
    t = &cfg->tables[1];
    assert_string_equal(t->schema, "");
    assert_string_equal(t->name, "orders");
    assert_int_equal(t->key_type, CFG_KEY_AUTO);
    for (int i = 2; i < 5; i++) {
        assert_true(cfg->tables[i].omnisharded);
        assert_string_equal(cfg->tables[i].shard_key, "");
    }
    assert_false(cfg->tables[5].omnisharded);
    assert_int_equal(cfg->tables[5].key_type, CFG_KEY_TEXT);
    assert_string_equal(cfg->tables[6].schema, "s");
    assert_string_equal(cfg->tables[6].name, "a");
    cfg_free(cfg);

    /* The longest names that fit, and as many tables as allowed. */
    char big[256 * 40 + 256];
    size_t used =
        (size_t)snprintf(big, sizeof big, SHARD0 "[table.%063d.%063d]\nshard_key = %063d\n", 1, 2, 3);
    for (int i = 1; i < 256; i++)
        used += (size_t)snprintf(big + used, sizeof big - used, "[table.t%d]\nomnisharded = true\n", i);
    cfg = load_ok(big);
    assert_int_equal(cfg->ntables, 256);
    assert_int_equal(strlen(cfg->tables[0].schema), 63);
    assert_int_equal(strlen(cfg->tables[0].shard_key), 63);
    cfg_free(cfg);
    snprintf(big + used, sizeof big - used, "[table.one_too_many]\nomnisharded = true\n");
    expect_error(big, "t.ini:515: section [table.one_too_many]: at most 256 [table.NAME] sections");

    assert_string_equal(cfg_key_type_name(CFG_KEY_AUTO), "auto");
    assert_string_equal(cfg_key_type_name(CFG_KEY_INT), "int");
    assert_string_equal(cfg_key_type_name(CFG_KEY_UUID), "uuid");
}

static void test_monitor_user(void **state)
{
    cfg_config *cfg = load_ok(SHARD0 "replicas = 10.0.0.2:5432\n"
                                     "[user.nopass]\n"
                                     "[user.md5]\npassword = " MD5_SECRET "\n"
                                     "[user.scram]\npassword = " SCRAM_SECRET "\n"
                                     "[user.second]\npassword = two\n"
                                     "[user.first]\npassword = one\n");
    assert_null(cfg->monitor_user);
    assert_ptr_equal(cfg_monitor_user(cfg), cfg_find_user(cfg, "second"));
    cfg_free(cfg);

    cfg = load_ok(
        "[pgshard]\nmonitor_user = first\nmonitor_dbname = a23456789012345678901234567890123456789012345"
        "678901234567890123\n" SHARD0 "replicas = 10.0.0.2:5432\n"
        "[user.second]\npassword = two\n"
        "[user.first]\npassword = one\n");
    assert_string_equal(cfg->monitor_user, "first");
    assert_int_equal(strlen(cfg->monitor_dbname), 63);
    assert_ptr_equal(cfg_monitor_user(cfg), cfg_find_user(cfg, "first"));
    cfg_free(cfg);

    /* Without replicas nothing needs the monitor's user, but monitor_user is still checked. */
    cfg = load_ok(SHARD0 "[user.md5]\npassword = " MD5_SECRET "\n");
    assert_null(cfg_monitor_user(cfg));
    cfg_free(cfg);
    assert_null(cfg_monitor_user(NULL));
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
    {"[pgshard]\nserver_keepalive_count = 0\n",
     "t.ini:2: key 'server_keepalive_count': must be an integer from 1 to 127"},
    {"[pgshard]\nserver_keepalive_idle = -1\n",
     "t.ini:2: key 'server_keepalive_idle': must be an integer from 0 to 32767"},
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

    /* [pgshard] keys for replicas */
    {"[pgshard]\nread_your_writes = on\n", "t.ini:2: key 'read_your_writes': must be one of: off, session"},
    {"[pgshard]\nreplica_fallback = replica\n",
     "t.ini:2: key 'replica_fallback': must be one of: primary, error"},
    {"[pgshard]\nunknown_functions = any\n",
     "t.ini:2: key 'unknown_functions': must be one of: primary, replica"},
    {"[pgshard]\nmax_lag_bytes = 9007199254740993\n",
     "t.ini:2: key 'max_lag_bytes': must be an integer from 0 to 9007199254740992"},
    {"[pgshard]\nmax_lag_bytes = -1\n",
     "t.ini:2: key 'max_lag_bytes': must be an integer from 0 to 9007199254740992"},
    {"[pgshard]\nmax_lag_bytes = 1MB\n",
     "t.ini:2: key 'max_lag_bytes': must be an integer from 0 to 9007199254740992"},
    {"[pgshard]\nmax_lag_ms = 86400001\n",
     "t.ini:2: key 'max_lag_ms': must be an integer from 0 to 86400000"},
    {"[pgshard]\nlag_poll_ms = 9\n", "t.ini:2: key 'lag_poll_ms': must be an integer from 10 to 60000"},
    {"[pgshard]\nlag_poll_ms = 60001\n", "t.ini:2: key 'lag_poll_ms': must be an integer from 10 to 60000"},
    {"[pgshard]\nprimary_wait_ms = 600001\n",
     "t.ini:2: key 'primary_wait_ms': must be an integer from 0 to 600000"},
    {"[pgshard]\nmonitor_user =\n", "t.ini:2: key 'monitor_user': must be a name of 1 to 63 bytes"},
    {"[pgshard]\nmonitor_user = a234567890123456789012345678901234567890123456789012345678901234\n",
     "t.ini:2: key 'monitor_user': must be a name of 1 to 63 bytes"},
    {"[pgshard]\nmonitor_dbname =\n", "t.ini:2: key 'monitor_dbname': must be a name of 1 to 63 bytes"},
    {"[pgshard]\nmonitor_dbname = a234567890123456789012345678901234567890123456789012345678901234\n",
     "t.ini:2: key 'monitor_dbname': must be a name of 1 to 63 bytes"},
    {"[pgshard]\nmonitor_user = a\nmonitor_user = b\n",
     "t.ini:3: key 'monitor_user': duplicate key in [pgshard]"},

    /* the monitor's user, checked once the whole file is read */
    {"[pgshard]\nmonitor_user = mon\n" SHARD0 PLAIN_USER,
     "t.ini: monitor_user 'mon': there is no [user.mon]"},
    {"[pgshard]\nmonitor_user = App\n" SHARD0 PLAIN_USER,
     "t.ini: monitor_user 'App': there is no [user.App]"},
    {"[pgshard]\nmonitor_user = mon\n" SHARD0 "[user.mon]\npassword = " MD5_SECRET "\n",
     "t.ini: monitor_user 'mon': [user.mon] needs a plain password, not an md5 or SCRAM secret"},
    {"[pgshard]\nmonitor_user = mon\n" SHARD0 "[user.mon]\npassword = " SCRAM_SECRET "\n",
     "t.ini: monitor_user 'mon': [user.mon] needs a plain password, not an md5 or SCRAM secret"},
    {"[pgshard]\nmonitor_user = mon\n" SHARD0 "[user.mon]\n",
     "t.ini: monitor_user 'mon': [user.mon] has no password; the monitor needs a plain one"},
    {SHARD0 "replicas = 10.0.0.2:5432\n",
     "t.ini: replicas need a user with a plain password for the monitor: set monitor_user or give a "
     "[user.NAME] a plain password"},
    {SHARD0 "[shard.1]\nprimary = h:1\nreplicas = h:2\n[user.a]\n[user.b]\npassword = " MD5_SECRET
            "\n[user.c]\npassword = " SCRAM_SECRET "\n",
     "t.ini: replicas need a user with a plain password for the monitor: set monitor_user or give a "
     "[user.NAME] a plain password"},

    /* replicas and balance */
    {"[pgshard]\nreplicas = h:1\n", "t.ini:2: key 'replicas': unknown key in [pgshard]"},
    {"[pgshard]\nbalance = weighted\n", "t.ini:2: key 'balance': unknown key in [pgshard]"},
    {SHARD0 "balance = random\n",
     "t.ini:3: key 'balance': must be one of: round_robin, least_outstanding, weighted"},
    {SHARD0 "balance = weighted\nbalance = weighted\n", "t.ini:4: key 'balance': duplicate key in [shard.0]"},
    {SHARD0 "replicas = h:1\nreplicas = h:2\n", "t.ini:4: key 'replicas': duplicate key in [shard.0]"},
    {SHARD0 "replicas = h:1@0\n",
     "t.ini:3: key 'replicas': replica 'h:1@0': weight must be an integer from 1 to 1000"},
    {SHARD0 "replicas = h:1@1001\n",
     "t.ini:3: key 'replicas': replica 'h:1@1001': weight must be an integer from 1 to 1000"},
    {SHARD0 "replicas = h:1@\n",
     "t.ini:3: key 'replicas': replica 'h:1@': weight must be an integer from 1 to 1000"},
    {SHARD0 "replicas = h:1@-2\n",
     "t.ini:3: key 'replicas': replica 'h:1@-2': weight must be an integer from 1 to 1000"},
    {SHARD0 "replicas = h:1@two\n",
     "t.ini:3: key 'replicas': replica 'h:1@two': weight must be an integer from 1 to 1000"},
    {SHARD0 "replicas = h:1 @2\n",
     "t.ini:3: key 'replicas': replica 'h:1 @2' contains a blank: separate replicas with commas"},
    {SHARD0 "replicas = [::1]:5432@0\n",
     "t.ini:3: key 'replicas': replica '[::1]:5432@0': weight must be an integer from 1 to 1000"},
    {SHARD0 "replicas = h\n",
     "t.ini:3: key 'replicas': replica 'h': must be host:port or [IPv6-address]:port"},
    {SHARD0 "replicas = @2\n",
     "t.ini:3: key 'replicas': replica '@2': must be host:port or [IPv6-address]:port"},
    {SHARD0 "replicas = h:0\n",
     "t.ini:3: key 'replicas': replica 'h:0': port must be an integer from 1 to 65535"},
    {SHARD0 "replicas = h:1 h:2\n",
     "t.ini:3: key 'replicas': replica 'h:1 h:2' contains a blank: separate replicas with commas"},
    {SHARD0 "replicas = fd00::2:5432\n", "t.ini:3: key 'replicas': replica 'fd00::2:5432': an IPv6 address "
                                         "must be in brackets, as in [::1]:5432"},
    {SHARD0 "replicas = [fd00::g]:5432@2\n",
     "t.ini:3: key 'replicas': replica '[fd00::g]:5432@2': 'fd00::g' is not an IPv6 address"},
    {SHARD0 "replicas = bad host:5432\n",
     "t.ini:3: key 'replicas': replica 'bad host:5432' contains a blank: separate replicas with commas"},
    {SHARD0 "replicas = h:1, -bad:5432\n",
     "t.ini:3: key 'replicas': replica '-bad:5432': '-bad' is not an IP address or host name"},
    {SHARD0 "replicas = h:1,,h:2\n", "t.ini:3: key 'replicas': an item of the list is empty"},
    {SHARD0 "replicas = h:1,\n", "t.ini:3: key 'replicas': an item of the list is empty"},
    {SHARD0 "replicas = , h:1\n", "t.ini:3: key 'replicas': an item of the list is empty"},
    {SHARD0 "replicas = a:1,b:1,c:1,d:1,e:1,f:1,g:1,h:1,i:1,j:1,k:1,l:1,m:1,n:1,o:1,p:1\n",
     "t.ini:3: key 'replicas': at most 15 replicas"},
    {SHARD0 "replicas = h:1, h:2, h:1@2\n", "t.ini:3: key 'replicas': replica 'h:1@2' is listed twice"},
    {SHARD0 "replicas = DB:1, db:1\n", "t.ini:3: key 'replicas': replica 'db:1' is listed twice"},
    {SHARD0 "replicas = [::1]:1, [0:0::1]:1\n",
     "t.ini:3: key 'replicas': replica '[0:0::1]:1' is listed twice"},
    {SHARD0 "replicas = h:1, 10.0.0.1:5432@3\n" PLAIN_USER,
     "t.ini:3: key 'replicas': replica '10.0.0.1:5432' is the shard's primary"},
    {"[shard.0]\nreplicas = h:1, H:2\nprimary = h:2\n" PLAIN_USER,
     "t.ini:2: key 'replicas': replica 'h:2' is the shard's primary"},
    {"[shard.0]\nprimary = [::1]:5\nbalance = weighted\nreplicas = [0::1]:5@9\n[pgshard]\n",
     "t.ini:4: key 'replicas': replica '[::1]:5' is the shard's primary"},
    {"[shard.0]\nreplicas = h:1\n", "t.ini: [shard.0] has no primary"},

    /* sharding */
    {"[pgshard]\nbuckets = 0\n" SHARD0, "t.ini:2: key 'buckets': must be a power of two from 1 to 65536"},
    {"[pgshard]\nbuckets = 1000\n" SHARD0, "t.ini:2: key 'buckets': must be a power of two from 1 to 65536"},
    {"[pgshard]\nbuckets = 131072\n" SHARD0,
     "t.ini:2: key 'buckets': must be a power of two from 1 to 65536"},
    {"[pgshard]\nbuckets = 1k\n" SHARD0, "t.ini:2: key 'buckets': must be a power of two from 1 to 65536"},
    {"[pgshard]\ncatalog_dsn =\n" SHARD0,
     "t.ini:2: key 'catalog_dsn': must not be empty (leave the key out for no catalog)"},
    {"[pgshard]\ncatalog_dsn = catalog\n" SHARD0, "t.ini:2: key 'catalog_dsn': not a libpq connection "
                                                  "string: missing \"=\" after \"catalog\" in connection "
                                                  "info string"},
    {"[pgshard]\ncatalog_dsn = host=h bogus=1\n" SHARD0,
     "t.ini:2: key 'catalog_dsn': not a libpq connection string: invalid connection option \"bogus\""},
    {"[pgshard]\ncatalog_dsn = host='h\n" SHARD0, "t.ini:2: key 'catalog_dsn': not a libpq connection "
                                                  "string: unterminated quoted string in connection info "
                                                  "string"},
    {"[pgshard]\ndefault_shard = 1\n" SHARD0, "t.ini:2: key 'default_shard': there is no [shard.1] (the "
                                              "shards are 0 to 0)"},
    {SHARD0 "[pgshard]\ndefault_shard = 256\n",
     "t.ini:4: key 'default_shard': must be an integer from 0 to 255"},
    {SHARD0 "[table.]\nomnisharded = true\n",
     "t.ini:3: section [table.]: must be [table.NAME] or [table.SCHEMA.NAME], each name 1 to 63 bytes"},
    {SHARD0 "[table.a.b.c]\nomnisharded = true\n",
     "t.ini:3: section [table.a.b.c]: must be [table.NAME] or [table.SCHEMA.NAME], each name 1 to 63 bytes"},
    {SHARD0 "[table..b]\nomnisharded = true\n",
     "t.ini:3: section [table..b]: must be [table.NAME] or [table.SCHEMA.NAME], each name 1 to 63 bytes"},
    {SHARD0 "[table.a.]\nomnisharded = true\n",
     "t.ini:3: section [table.a.]: must be [table.NAME] or [table.SCHEMA.NAME], each name 1 to 63 bytes"},
    {SHARD0 "[table.a]\nomnisharded = true\n[table.a]\n", "t.ini:5: duplicate section [table.a]"},
    {SHARD0 "[table.s.a]\nomnisharded = true\n[table.s.a]\n", "t.ini:5: duplicate section [table.s.a]"},
    {SHARD0 "[table.a]\n[pgshard]\n",
     "t.ini:3: section [table.a]: needs shard_key = COLUMN (a sharded table) or omnisharded = true"},
    {SHARD0 "[table.a]\nomnisharded = false\n",
     "t.ini:3: section [table.a]: needs shard_key = COLUMN (a sharded table) or omnisharded = true"},
    {SHARD0 "[table.a]\nkey_type = int\n",
     "t.ini:3: section [table.a]: needs shard_key = COLUMN (a sharded table) or omnisharded = true"},
    {SHARD0 "[table.a]\nshard_key = k\nomnisharded = true\n",
     "t.ini:5: key 'omnisharded': [table.a] cannot have both shard_key and omnisharded = true"},
    {SHARD0 "[table.a]\nomnisharded = true\nshard_key = k\n",
     "t.ini:5: key 'shard_key': [table.a] cannot have both shard_key and omnisharded = true"},
    {SHARD0 "[table.a]\nkey_type = int\nomnisharded = true\n",
     "t.ini:4: key 'key_type': only a sharded table (shard_key) has a key type"},
    {SHARD0 "[table.a]\nshard_key = k\nkey_type = bigint\n",
     "t.ini:5: key 'key_type': must be one of: int, text, uuid"},
    {SHARD0 "[table.a]\nomnisharded = maybe\n",
     "t.ini:4: key 'omnisharded': must be true or false (or on/off, yes/no, 1/0)"},
    {SHARD0 "[table.a]\nshard_key =\n", "t.ini:4: key 'shard_key': must be a column name of 1 to 63 bytes"},
    {SHARD0 "[table.a]\nshard_key = k\nshard_key = j\n",
     "t.ini:5: key 'shard_key': duplicate key in [table.a]"},
    {SHARD0 "[table.a]\nshard_key = k\npassword = x\n", "t.ini:5: key 'password': unknown key in [table.a]"},
    {SHARD0 "[table.a]\nshard_key = k\n[table.b]\nkey_type = int\n",
     "t.ini:5: section [table.b]: needs shard_key = COLUMN (a sharded table) or omnisharded = true"},

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
    assert_int_equal(cfg->nusers, 4);
    assert_non_null(cfg_find_user(cfg, "app")->password);
    assert_ptr_equal(cfg_migrate_user(cfg), cfg_find_user(cfg, "postgres"));
    assert_string_equal(cfg_find_user(cfg, "monitor")->password, "pencil");
    assert_string_equal(cfg->monitor_user, "monitor");
    assert_ptr_equal(cfg_monitor_user(cfg), cfg_find_user(cfg, "monitor"));
    assert_int_equal(cfg->shards[0].nreplicas, 2);
    assert_int_equal(cfg->shards[0].replicas[1].weight, 2);
    assert_int_equal(cfg->shards[0].balance, CFG_BALANCE_WEIGHTED);
    assert_int_equal(cfg->shards[1].nreplicas, 0);
    assert_string_equal(cfg->shards[2].replicas[0].node.host, "fd00::13");
    assert_int_equal(cfg->buckets, 1024);
    assert_non_null(cfg->catalog_dsn);
    assert_int_equal(cfg->default_shard, 0);
    assert_int_equal(cfg->ntables, 2);
    assert_string_equal(cfg->tables[0].schema, "public");
    assert_string_equal(cfg->tables[0].shard_key, "tenant_id");
    assert_true(cfg->tables[1].omnisharded);
    cfg_free(cfg);
}

/* The same test as PostgreSQL's get_password_type: only "md5" and exactly 32 lower-case
 * hex digits is an md5 secret. */
static void test_password_plain(void **state)
{
    assert_true(cfg_password_plain("pencil"));
    assert_true(cfg_password_plain("md5"));
    assert_true(cfg_password_plain("md5C0BBA8CCF2BD2A3FA2A0DCC9FC0BB4B2"));
    assert_true(cfg_password_plain(MD5_SECRET "0"));
    assert_true(cfg_password_plain("scram-sha-256$x"));
    assert_false(cfg_password_plain(MD5_SECRET));
    assert_false(cfg_password_plain(SCRAM_SECRET));
    assert_false(cfg_password_plain("SCRAM-SHA-256$"));
    assert_false(cfg_password_plain(NULL));
}

/* Two-phase commit's keys, and its recovery's need of a user it can log in as. */
static void test_two_phase(void **state)
{
    cfg_config *cfg = load_ok("[pgshard]\ntwo_phase_commit = on\nallow_cross_shard_writes = on\n"
                              "two_phase_recovery_interval_ms = 100\ntwo_phase_recovery_grace_ms = 0\n" SHARD0
                              "[user.app]\npassword = pencil\n");
    assert_true(cfg->two_phase_commit);
    assert_true(cfg->allow_cross_shard_writes);
    assert_int_equal(cfg->two_phase_recovery_interval_ms, 100);
    assert_int_equal(cfg->two_phase_recovery_grace_ms, 0);
    cfg_free(cfg);

    cfg = load_ok("[pgshard]\ntwo_phase_commit = off\ntwo_phase_recovery_interval_ms = 3600000\n"
                  "two_phase_recovery_grace_ms = 86400000\n" SHARD0);
    assert_false(cfg->two_phase_commit);
    assert_int_equal(cfg->two_phase_recovery_interval_ms, 3600000);
    assert_int_equal(cfg->two_phase_recovery_grace_ms, 86400000);
    cfg_free(cfg);

    static const char *const bad[][2] = {
        {"[pgshard]\ntwo_phase_commit = maybe\n" SHARD0,
         "t.ini:2: key 'two_phase_commit': must be true or false"},
        {"[pgshard]\nallow_cross_shard_writes = 2\n" SHARD0,
         "t.ini:2: key 'allow_cross_shard_writes': must be true or false"},
        {"[pgshard]\ntwo_phase_recovery_interval_ms = 99\n" SHARD0,
         "t.ini:2: key 'two_phase_recovery_interval_ms': must be an integer from 100 to 3600000"},
        {"[pgshard]\ntwo_phase_recovery_grace_ms = -1\n" SHARD0,
         "t.ini:2: key 'two_phase_recovery_grace_ms': must be an integer from 0 to 86400000"},
        {"[pgshard]\ntwo_phase_commit = on\n" SHARD0 "[user.app]\npassword = " MD5_SECRET "\n",
         "t.ini: two_phase_commit = on needs a user with a plain password for its recovery"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char err[256];
        cfg_config *none = NULL;
        assert_int_equal(cfg_load_string(bad[i][0], "t.ini", &none, err, sizeof err), -1);
        assert_null(none);
        if (strncmp(err, bad[i][1], strlen(bad[i][1])) != 0)
            print_error("got: %s\nwant: %s...\n", err, bad[i][1]);
        assert_int_equal(strncmp(err, bad[i][1], strlen(bad[i][1])), 0);
    }
}

static void test_names(void **state)
{
    assert_string_equal(cfg_pool_mode_name(CFG_POOL_TRANSACTION), "transaction");
    assert_string_equal(cfg_pool_mode_name(CFG_POOL_SESSION), "session");
    assert_string_equal(cfg_auth_type_name(CFG_AUTH_SCRAM), "scram-sha-256");
    assert_string_equal(cfg_auth_type_name(CFG_AUTH_MD5), "md5");
    assert_string_equal(cfg_auth_type_name(CFG_AUTH_TRUST), "trust");
    assert_string_equal(cfg_auth_type_name((cfg_auth_type)42), "unknown");
    assert_string_equal(cfg_balance_name(CFG_BALANCE_ROUND_ROBIN), "round_robin");
    assert_string_equal(cfg_balance_name(CFG_BALANCE_LEAST_OUTSTANDING), "least_outstanding");
    assert_string_equal(cfg_balance_name(CFG_BALANCE_WEIGHTED), "weighted");
    assert_string_equal(cfg_balance_name((cfg_balance)42), "unknown");
    assert_string_equal(cfg_ryw_name(CFG_RYW_OFF), "off");
    assert_string_equal(cfg_ryw_name(CFG_RYW_SESSION), "session");
    assert_string_equal(cfg_fallback_name(CFG_FALLBACK_PRIMARY), "primary");
    assert_string_equal(cfg_fallback_name(CFG_FALLBACK_ERROR), "error");
    assert_string_equal(cfg_unknown_functions_name(CFG_UNKNOWN_FUNC_PRIMARY), "primary");
    assert_string_equal(cfg_unknown_functions_name(CFG_UNKNOWN_FUNC_REPLICA), "replica");
    assert_string_equal(cfg_server_tls_name(CFG_STLS_VERIFY_FULL), "verify-full");
    assert_string_equal(cfg_server_tls_name((cfg_server_tls)42), "unknown");
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
        cmocka_unit_test(test_server_tls),
        cmocka_unit_test(test_replicas),
        cmocka_unit_test(test_sharding),
        cmocka_unit_test(test_monitor_user),
        cmocka_unit_test(test_two_phase),
        cmocka_unit_test(test_password_plain),
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

/* libFuzzer target for the config loader: arbitrary text through cfg_load_string, with what
 * a loaded config promises the rest of pgshard checked on success, and the error contract
 * (message set, nothing handed out, a short buffer gets a prefix) on failure. Not a unit
 * test. */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"

#define CHECK(cond)                                                                                          \
    do {                                                                                                     \
        if (!(cond))                                                                                         \
            __builtin_trap();                                                                                \
    } while (0)

/* Longer texts only make each run slower: the loader reads them line by line like short ones. */
#define FUZZ_CONFIG_MAX ((size_t)64 * 1024)

/* An enum field holds one of its words. */
static bool named(const char *word)
{
    return strcmp(word, "unknown") != 0;
}

static void check_node(const cfg_node *n)
{
    size_t len = strnlen(n->host, sizeof n->host);
    CHECK(len > 0 && len < sizeof n->host);
    CHECK(n->port > 0);
}

static void check_shards(const cfg_config *cfg)
{
    CHECK(cfg->nshards >= 1 && cfg->nshards <= CFG_MAX_SHARDS && cfg->shards);
    for (int i = 0; i < cfg->nshards; i++) {
        const cfg_shard *s = &cfg->shards[i];
        check_node(&s->primary);
        CHECK(s->nreplicas >= 0 && s->nreplicas <= CFG_MAX_REPLICAS);
        CHECK(named(cfg_balance_name(s->balance)));
        for (int r = 0; r < s->nreplicas; r++) {
            check_node(&s->replicas[r].node);
            CHECK(s->replicas[r].weight >= 1 && s->replicas[r].weight <= CFG_WEIGHT_MAX);
        }
    }
}

/* Users have distinct names, each found by cfg_find_user, and a password is never empty. */
static void check_users(const cfg_config *cfg)
{
    CHECK(cfg->nusers >= 0 && (cfg->nusers == 0 || cfg->users));
    for (int i = 0; i < cfg->nusers; i++) {
        const cfg_user *u = &cfg->users[i];
        CHECK(u->name && u->name[0]);
        CHECK(cfg_find_user(cfg, u->name) == u);
        CHECK(!u->password || u->password[0]);
        CHECK(u->max_connections >= 0 && u->max_qps >= 0);
    }
    const cfg_user *m = cfg_monitor_user(cfg);
    CHECK(!m || cfg_password_plain(m->password));
    CHECK(!cfg->monitor_user || m == cfg_find_user(cfg, cfg->monitor_user));
}

static void check_config(const cfg_config *cfg)
{
    CHECK(cfg->path && strcmp(cfg->path, "fuzz.ini") == 0);
    CHECK(strnlen(cfg->listen_addr, sizeof cfg->listen_addr) < sizeof cfg->listen_addr);
    CHECK(strnlen(cfg->monitor_dbname, sizeof cfg->monitor_dbname) < sizeof cfg->monitor_dbname);
    CHECK(strnlen(cfg->tls_cert_file, sizeof cfg->tls_cert_file) < sizeof cfg->tls_cert_file);
    CHECK(strnlen(cfg->tls_key_file, sizeof cfg->tls_key_file) < sizeof cfg->tls_key_file);
    CHECK(cfg->listen_port > 0);
    CHECK(cfg->workers >= 1 && cfg->workers <= 256);
    CHECK(cfg->pool_size >= 1 && cfg->max_client_conn >= 1);
    CHECK(cfg->server_connect_timeout_ms >= 1 && cfg->lag_poll_ms >= 10);
    CHECK(named(cfg_pool_mode_name(cfg->pool_mode)) && named(cfg_auth_type_name(cfg->auth_type)));
    CHECK(named(cfg_ryw_name(cfg->read_your_writes)) && named(cfg_fallback_name(cfg->replica_fallback)));
    CHECK(named(cfg_unknown_functions_name(cfg->unknown_functions)));
    CHECK(cfg->client_tls == CFG_CTLS_DISABLE || (cfg->tls_cert_file[0] && cfg->tls_key_file[0]));
    check_shards(cfg);
    check_users(cfg);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > FUZZ_CONFIG_MAX)
        return 0;
    char *text = malloc(size + 1);
    CHECK(text != NULL);
    memcpy(text, data, size);
    text[size] = '\0';

    char err[512];
    cfg_config *cfg = (cfg_config *)&cfg;
    int rc = cfg_load_string(text, "fuzz.ini", &cfg, err, sizeof err);
    CHECK(rc == 0 || rc == -1);
    if (rc == 0) {
        CHECK(cfg != NULL && err[0] == '\0');
        check_config(cfg);
        cfg_free(cfg);
        free(text);
        return 0;
    }
    CHECK(cfg == NULL);
    size_t elen = strnlen(err, sizeof err);
    CHECK(elen > 0 && elen < sizeof err);

    /* The same text with a buffer too small for the message gets its start; without one, it
     * still fails. */
    char small[20];
    CHECK(cfg_load_string(text, "fuzz.ini", &cfg, small, sizeof small) == -1 && cfg == NULL);
    CHECK(strnlen(small, sizeof small) < sizeof small && strncmp(small, err, strlen(small)) == 0);
    CHECK(cfg_load_string(text, "fuzz.ini", &cfg, NULL, 0) == -1 && cfg == NULL);
    free(text);
    return 0;
}

/* pgshard's configuration: one INI file (inih) loaded into an immutable cfg_config.
 * Every key is declared once in the key table in config.c; unknown keys, bad values and
 * missing required sections are errors that name the file, the line and the key.
 * This module does no networking and keeps no global state. */
#ifndef PGS_CONFIG_H
#define PGS_CONFIG_H

#include <stddef.h>
#include <stdint.h>

typedef enum cfg_pool_mode { CFG_POOL_TRANSACTION, CFG_POOL_SESSION } cfg_pool_mode;
typedef enum cfg_auth_type { CFG_AUTH_SCRAM, CFG_AUTH_MD5, CFG_AUTH_TRUST } cfg_auth_type;
typedef enum cfg_log_format { CFG_LOG_TEXT, CFG_LOG_JSON } cfg_log_format;
typedef enum cfg_log_level { CFG_LOG_DEBUG, CFG_LOG_INFO, CFG_LOG_WARN, CFG_LOG_ERROR } cfg_log_level;
typedef enum cfg_client_tls { CFG_CTLS_DISABLE, CFG_CTLS_ALLOW, CFG_CTLS_REQUIRE } cfg_client_tls;
typedef enum cfg_server_tls { CFG_STLS_DISABLE, CFG_STLS_PREFER, CFG_STLS_REQUIRE } cfg_server_tls;

#define CFG_MAX_SHARDS 256
#define CFG_HOST_MAX 256
#define CFG_PATH_MAX 1024

typedef struct cfg_node {
    char host[CFG_HOST_MAX]; /* numeric IPv4/IPv6 address or host name */
    uint16_t port;
} cfg_node;

typedef struct cfg_shard {
    cfg_node primary;
} cfg_shard;

typedef struct cfg_user {
    char *name;     /* owned */
    char *password; /* owned; plain, "md5<32 hex>" or "SCRAM-SHA-256$..."; NULL if unset */
    int max_connections; /* clients of this user across workers; 0 = no limit */
    int max_qps;         /* transactions started per second; 0 = no limit */
} cfg_user;

typedef struct cfg_config {
    char *path; /* owned: the file it was loaded from */

    /* [pgshard] */
    char listen_addr[CFG_HOST_MAX]; /* default 127.0.0.1 */
    uint16_t listen_port;           /* default 6432 */
    int workers;                    /* resolved: 0 in the file means number of cores */
    cfg_pool_mode pool_mode;        /* default transaction */
    int pool_size;                  /* default 20: per node, user, database and worker */
    int max_client_conn;            /* default 10000, across all workers */
    cfg_auth_type auth_type;        /* default scram-sha-256 */
    uint32_t query_wait_timeout_ms; /* default 120 s; 0 = wait forever */
    uint32_t server_idle_timeout_ms;    /* default 600 s; 0 = never close idle servers */
    uint32_t server_connect_timeout_ms; /* default 15 s */
    uint32_t client_login_timeout_ms;   /* default 60 s; 0 = none: startup and auth must end by then */
    uint32_t shutdown_timeout_ms;       /* default 30 s: SIGTERM lets transactions finish this long */
    uint32_t log_slow_ms;               /* default 0 = off: log transactions slower than this */
    cfg_client_tls client_tls;      /* default disable; allow/require need the cert and key */
    cfg_server_tls server_tls;      /* default disable */
    char tls_cert_file[CFG_PATH_MAX]; /* PEM certificate (chain) shown to clients; "" = none */
    char tls_key_file[CFG_PATH_MAX];  /* its PEM private key */
    char *admin_users;              /* owned: users allowed on the admin console, comma-separated */
    uint16_t metrics_port;          /* default 0 = off: Prometheus /metrics and /healthz */
    cfg_log_format log_format;      /* default text */
    cfg_log_level log_level;        /* default info */

    /* [shard.N], N = 0 .. nshards-1, all present */
    int nshards;
    cfg_shard *shards; /* owned, nshards entries */

    /* [user.NAME] */
    int nusers;
    cfg_user *users; /* owned, nusers entries */
} cfg_config;

/* Loads and validates a file. On success returns 0 and *out (free with cfg_free). On
 * failure returns -1 and writes "FILE:LINE: key 'K': what is wrong" (or a message naming
 * the file when the problem is not on one line) into err. */
int cfg_load(const char *path, cfg_config **out, char *err, size_t errlen);

/* Same, from a string; `name` stands for the file name in messages. */
int cfg_load_string(const char *text, const char *name, cfg_config **out, char *err, size_t errlen);

void cfg_free(cfg_config *cfg);

/* The user section for name, or NULL. */
const cfg_user *cfg_find_user(const cfg_config *cfg, const char *name);

const char *cfg_pool_mode_name(cfg_pool_mode m);
const char *cfg_auth_type_name(cfg_auth_type a);

#endif

/* pgshard's configuration: one INI file (inih) loaded into an immutable cfg_config.
 * Every key is declared once in the key table in config.c; unknown keys, bad values and
 * missing required sections are errors that name the file, the line and the key.
 * This module does no networking and keeps no global state. */
#ifndef PGS_CONFIG_H
#define PGS_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum cfg_pool_mode { CFG_POOL_TRANSACTION, CFG_POOL_SESSION } cfg_pool_mode;
typedef enum cfg_auth_type { CFG_AUTH_SCRAM, CFG_AUTH_MD5, CFG_AUTH_TRUST } cfg_auth_type;
typedef enum cfg_log_format { CFG_LOG_TEXT, CFG_LOG_JSON } cfg_log_format;
typedef enum cfg_log_level { CFG_LOG_DEBUG, CFG_LOG_INFO, CFG_LOG_WARN, CFG_LOG_ERROR } cfg_log_level;
typedef enum cfg_client_tls { CFG_CTLS_DISABLE, CFG_CTLS_ALLOW, CFG_CTLS_REQUIRE } cfg_client_tls;
/* libpq's sslmode, in its order: from REQUIRE on the connection fails without TLS, from
 * VERIFY_CA on the server's certificate must chain to server_tls_ca_file, and VERIFY_FULL
 * also checks that it names the node's host. */
typedef enum cfg_server_tls {
    CFG_STLS_DISABLE,
    CFG_STLS_PREFER,
    CFG_STLS_REQUIRE,
    CFG_STLS_VERIFY_CA,
    CFG_STLS_VERIFY_FULL
} cfg_server_tls;
typedef enum cfg_balance {
    CFG_BALANCE_ROUND_ROBIN,
    CFG_BALANCE_LEAST_OUTSTANDING,
    CFG_BALANCE_WEIGHTED
} cfg_balance;
typedef enum cfg_ryw { CFG_RYW_OFF, CFG_RYW_SESSION } cfg_ryw;
typedef enum cfg_fallback { CFG_FALLBACK_PRIMARY, CFG_FALLBACK_ERROR } cfg_fallback;
typedef enum cfg_unknown_functions {
    CFG_UNKNOWN_FUNC_PRIMARY,
    CFG_UNKNOWN_FUNC_REPLICA
} cfg_unknown_functions;

#define CFG_MAX_SHARDS 256
#define CFG_MAX_TABLES 256
#define CFG_NAME_MAX 63 /* an identifier: PostgreSQL keeps NAMEDATALEN - 1 bytes of one */
#define CFG_HOST_MAX 256
#define CFG_PATH_MAX 1024
#define CFG_MAX_REPLICAS 15 /* per shard: with the primary, 16 nodes */
#define CFG_WEIGHT_MAX 1000

typedef struct cfg_node {
    char host[CFG_HOST_MAX]; /* numeric IPv4/IPv6 address or host name */
    uint16_t port;
} cfg_node;

typedef struct cfg_replica {
    cfg_node node;
    int weight; /* 1..CFG_WEIGHT_MAX, default 1: "host:port@weight" */
} cfg_replica;

typedef struct cfg_shard {
    cfg_node primary;
    int nreplicas; /* replicas = host:port[@w], ... (may be empty) */
    cfg_replica replicas[CFG_MAX_REPLICAS];
    cfg_balance balance; /* default round_robin */
} cfg_shard;

/* The type of a sharded table's key column: AUTO asks shard 0 at start (see proxy/tables.h);
 * the others are set with key_type and hash as the server hashes int8, text and uuid. */
typedef enum cfg_key_type { CFG_KEY_AUTO, CFG_KEY_INT, CFG_KEY_TEXT, CFG_KEY_UUID } cfg_key_type;

/* [table.NAME] or [table.SCHEMA.NAME]: a sharded (shard_key) or omnisharded table. Names
 * are kept as written and compared exactly, as PostgreSQL compares identifiers after
 * folding: write them as the catalog stores them (lower case unless created quoted). */
typedef struct cfg_table {
    char schema[CFG_NAME_MAX + 1];    /* "" = unqualified: the schema the search path finds */
    char name[CFG_NAME_MAX + 1];      /* the table */
    char shard_key[CFG_NAME_MAX + 1]; /* the shard-key column; "" when omnisharded */
    bool omnisharded;                 /* a copy on every shard */
    cfg_key_type key_type;            /* default AUTO; only with shard_key */
} cfg_table;

typedef struct cfg_user {
    char *name;          /* owned */
    char *password;      /* owned; plain, "md5<32 hex>" or "SCRAM-SHA-256$..."; NULL if unset */
    int max_connections; /* clients of this user across workers; 0 = no limit */
    int max_qps;         /* transactions started per second; 0 = no limit */
} cfg_user;

typedef struct cfg_config {
    char *path; /* owned: the file it was loaded from */

    /* [pgshard] */
    char listen_addr[CFG_HOST_MAX];        /* default 127.0.0.1 */
    uint16_t listen_port;                  /* default 6432 */
    int workers;                           /* resolved: 0 in the file means number of cores */
    cfg_pool_mode pool_mode;               /* default transaction */
    int pool_size;                         /* default 20: per node, user, database and worker */
    int max_client_conn;                   /* default 10000, across all workers */
    uint32_t max_message_size;             /* default 16 MiB: largest message read whole */
    bool pin_session_state;                /* default on: a server with unreplayable session
                                              state stays with its client (transaction pooling) */
    cfg_auth_type auth_type;               /* default scram-sha-256 */
    uint32_t query_wait_timeout_ms;        /* default 120 s; 0 = wait forever */
    uint32_t server_idle_timeout_ms;       /* default 600 s; 0 = never close idle servers */
    uint32_t server_connect_timeout_ms;    /* default 15 s */
    int server_keepalive_idle;             /* default 60 s of silence before TCP keepalive probes; 0 = off */
    int server_keepalive_interval;         /* default 10 s between probes */
    int server_keepalive_count;            /* default 6 unanswered probes close the connection */
    uint32_t server_tcp_user_timeout_ms;   /* default 0 = the kernel's: sent data unacknowledged
                                              this long closes the connection (TCP_USER_TIMEOUT) */
    uint32_t client_login_timeout_ms;      /* default 60 s; 0 = none: startup and auth must end by then */
    uint32_t shutdown_timeout_ms;          /* default 30 s: SIGTERM lets transactions finish this long */
    uint32_t log_slow_ms;                  /* default 0 = off: log transactions slower than this */
    cfg_client_tls client_tls;             /* default disable; allow/require need the cert and key */
    cfg_server_tls server_tls;             /* default disable */
    char server_tls_ca_file[CFG_PATH_MAX]; /* PEM CA bundle for verify-ca/verify-full; "" = none */
    char tls_cert_file[CFG_PATH_MAX];      /* PEM certificate (chain) shown to clients; "" = none */
    char tls_key_file[CFG_PATH_MAX];       /* its PEM private key */
    char *admin_users;                     /* owned: users allowed on the admin console, comma-separated */
    uint16_t metrics_port;                 /* default 0 = off: Prometheus /metrics and /healthz */
    cfg_log_format log_format;             /* default text */
    cfg_log_level log_level;               /* default info */
    cfg_ryw read_your_writes;              /* default session */
    uint64_t max_lag_bytes;                /* default 1048576; 0 = no limit in bytes */
    uint32_t max_lag_ms;                   /* default 1000; 0 = no limit in time */
    uint32_t lag_poll_ms;                  /* default 100, from 10 */
    cfg_fallback replica_fallback;         /* default primary: no eligible replica -> primary */
    uint32_t primary_wait_ms;              /* default 5000: writes wait this long for a primary */
    cfg_unknown_functions unknown_functions; /* default primary: where reads calling
                                                functions not known read-only go */
    char *monitor_user;                      /* owned, NULL = the first [user.NAME] with a plain password */
    char *migrate_user; /* owned, NULL = the monitor's: pgshard-migrate logs in to the shards as it */
    char monitor_dbname[CFG_HOST_MAX];       /* default "postgres": the database the monitor polls */
    uint32_t buckets;                        /* default 1024: a power of two, 1..65536 */
    char *catalog_dsn;                       /* owned libpq conninfo of the catalog; NULL = none */
    int default_shard;                       /* default 0: where tables not listed live; < nshards */
    bool allow_cross_shard_writes;           /* default off: a write without a key runs on every shard */
    bool two_phase_commit;                   /* default off: writes across shards commit with 2PC */
    uint32_t two_phase_recovery_interval_ms; /* default 5000, from 100: how often in-doubt 2PC is resolved */
    uint32_t two_phase_recovery_grace_ms;    /* default 5000: a younger prepared transaction is left alone */
    uint32_t catalog_lease_ms;  /* default 10000, 0 = off: a proxy whose catalog view is older refuses
                                   writes to sharded tables (a move may have taken their keys) */
    uint32_t freeze_hold_ms;    /* default 10000: a transaction held for a moving key waits at most this */
    uint32_t freeze_timeout_ms; /* default 5000: pgshard-migrate waits this long for every live proxy's
                                   freeze ack and the target's catch-up, else unfreezes */

    /* [shard.N], N = 0 .. nshards-1, all present */
    int nshards;
    cfg_shard *shards; /* owned, nshards entries */

    /* [user.NAME] */
    int nusers;
    cfg_user *users; /* owned, nusers entries */

    /* [table.NAME], in file order, at most CFG_MAX_TABLES */
    int ntables;
    cfg_table *tables; /* owned, ntables entries */
} cfg_config;

/* Loads and validates a file. On success returns 0 and *out (free with cfg_free). On
 * failure returns -1 and writes "FILE:LINE: key 'K': what is wrong" (or a message naming
 * the file when the problem is not on one line) into err. */
int cfg_load(const char *path, cfg_config **out, char *err, size_t errlen);

/* Same, from a string; `name` stands for the file name in messages. */
int cfg_load_string(const char *text, const char *name, cfg_config **out, char *err, size_t errlen);

void cfg_free(cfg_config *cfg);

/* The CPUs this process may use: its affinity mask, bounded by its cgroup's CPU quota
 * (cgroup v2 cpu.max, as containers and systemd's CPUQuota set it), at least 1. The
 * default of workers is half of them, rounded up. */
int cfg_available_cpus(void);

/* The user section for name, or NULL. */
const cfg_user *cfg_find_user(const cfg_config *cfg, const char *name);

/* The user the monitor logs in to every node as: monitor_user if set, otherwise the first
 * [user.NAME], in file order, whose password is plain. NULL if there is none (a loaded
 * config with replicas always has one). */
const cfg_user *cfg_monitor_user(const cfg_config *cfg);
/* The user pgshard-migrate logs in to the shards as (and its subscriptions with):
 * migrate_user when set and it has a plain password, NULL when set without one, else the
 * monitor's. */
const cfg_user *cfg_migrate_user(const cfg_config *cfg);

/* Whether password is a plain password, as opposed to NULL, an "md5" + 32 lower-case hex
 * secret or a "SCRAM-SHA-256$" secret (PostgreSQL's get_password_type). Only a plain
 * password can log in to a server that asks for SCRAM. */
bool cfg_password_plain(const char *password);

/* The word the file uses for each value, or "unknown". */
const char *cfg_pool_mode_name(cfg_pool_mode m);
const char *cfg_auth_type_name(cfg_auth_type a);
const char *cfg_server_tls_name(cfg_server_tls t);

/* The libpq keywords every connection pgshard makes to a node logs in with (the monitor,
 * two-phase recovery, reading key types, pgshard-migrate): host, port, user, password,
 * dbname, application_name, connect_timeout and options (each only when not NULL), sslmode
 * and sslrootcert as server_tls says (libpq's words and meanings; the CA file only for the
 * modes that verify: libpq's require would verify against it too), and gssencmode=disable
 * (GSSAPI negotiation may look up Kerberos credentials synchronously). The strings are
 * borrowed: they must outlive the connection's start. */
/* The database the tables live in (pgshard reads key types there, pgshard-migrate checks
 * them): catalog_dsn's dbname when it names one, otherwise monitor_dbname. */
void cfg_tables_dbname(const cfg_config *cfg, char *out, size_t len);

struct pgs_buf;
/* Appends to b the statement (a DO block, no terminator) that starts the sequences behind
 * serial and identity columns of the sharded tables on shard s > 0 at s * 2^48 + 1 when they
 * are still below it, so that ids stay unique across shards (bigint ones; an integer
 * sequence cannot reach that far). A sequence it cannot set is a WARNING, not an error.
 * Returns false, appending nothing, when there is nothing to do (shard 0, no sharded table). */
bool cfg_seq_range_sql(const cfg_config *cfg, int s, struct pgs_buf *b);

#define CFG_CONNINFO_MAX 16
typedef struct cfg_conninfo {
    const char *keys[CFG_CONNINFO_MAX];
    const char *vals[CFG_CONNINFO_MAX];
} cfg_conninfo;
void cfg_conninfo_make(cfg_conninfo *ci, const cfg_config *cfg, const char *host, const char *port,
                       const cfg_user *user, const char *db, const char *app, const char *timeout,
                       const char *options);
const char *cfg_balance_name(cfg_balance b);
const char *cfg_ryw_name(cfg_ryw r);
const char *cfg_fallback_name(cfg_fallback f);
const char *cfg_unknown_functions_name(cfg_unknown_functions u);
const char *cfg_key_type_name(cfg_key_type t); /* "auto" for CFG_KEY_AUTO */

#endif

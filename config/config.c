/* Loads pgshard's INI file into a cfg_config (see config.h). Every key is declared once, in
 * cfg_keys, with its section, parser, field and default; sections are declared in
 * cfg_sections. It checks values but resolves no host names and opens no sockets: libpq is
 * used only to parse catalog_dsn. */
#include "config/config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ini.h>
#include <libpq-fe.h>
#include <sched.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define CFG_OK 0
#define CFG_BAD (-1)   /* the value is wrong and the parser said why */
#define CFG_NOMEM (-2) /* an allocation failed */

#define CFG_COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* PostgreSQL truncates role names to NAMEDATALEN - 1 bytes, so a longer [user.NAME] could
 * never match a login. */
#define CFG_USER_NAME_MAX 63
/* monitor_dbname, for the same reason. */
#define CFG_DB_NAME_MAX 63
#define CFG_WORKERS_MAX 256
/* Thirty days: long enough for any timeout, and the milliseconds still fit a uint32_t. */
#define CFG_SECONDS_MAX 2592000LL
/* A config is a few kilobytes; the cap turns `-c /dev/zero` into an error, not a hang. */
#define CFG_FILE_MAX ((size_t)16 << 20)
#define CFG_MSG_MAX 320
/* cfg_ctx.seen has one bit per key. */
#define CFG_KEYS_MAX 64

typedef enum cfg_section_kind {
    CFG_SEC_NONE, /* before the first section header */
    CFG_SEC_PGSHARD,
    CFG_SEC_SHARD,
    CFG_SEC_USER,
    CFG_SEC_TABLE,
} cfg_section_kind;

/* A word an enum key accepts and the value it stands for. */
typedef struct cfg_word {
    const char *word;
    int value;
} cfg_word;

typedef struct cfg_key cfg_key;
typedef struct cfg_ctx cfg_ctx;

/* Checks that need the whole section, run when it ends. Returns 0, or -1 after recording
 * the error. */
typedef int (*cfg_end_fn)(cfg_ctx *c);

/* Parses value into field, the key's member of its section's struct. Returns CFG_OK,
 * CFG_BAD after writing what is wrong into msg, or CFG_NOMEM. */
typedef int (*cfg_parse_fn)(const cfg_key *key, const char *value, void *field, char *msg, size_t msglen);

struct cfg_key {
    const char *name;
    cfg_parse_fn parse;
    size_t offset;         /* of the field in cfg_config, cfg_shard or cfg_user */
    const char *def;       /* the default, written as in the file; NULL: none */
    const cfg_word *words; /* enums: the accepted words, ending with a NULL word */
    long long min, max;    /* integers: the range; durations: the range in milliseconds */
    cfg_section_kind section;
    bool required; /* the section is incomplete without it */
};

/* The parse state inih carries to the handler and the line reader. */
struct cfg_ctx {
    cfg_config *cfg;  /* being built; cfg_load_string frees it unless it hands it out */
    const char *name; /* the file name for messages; not owned */
    const char *next; /* the unread text; not owned */
    size_t left;
    int lineno; /* of the line last handed to inih */

    cfg_section_kind kind;                                        /* of the current section */
    char section[sizeof "table." + 2 * (size_t)CFG_NAME_MAX + 1]; /* its name, for messages */
    int section_line;                                             /* of its header */
    void *target;                                                 /* the struct its keys fill; not owned */
    cfg_end_fn end;                                               /* its end-of-section checks, or NULL */
    uint64_t seen;                                                /* bit i: cfg_keys[i] was set in it */
    int key_line[CFG_KEYS_MAX];                                   /* [i]: where, when bit i of seen is set */
    bool have_pgshard;
    bool shard_seen[CFG_MAX_SHARDS];
    int users_cap;
    int tables_cap;

    bool failed;  /* err holds the first error */
    bool oom;     /* that error was an allocation failure */
    int err_line; /* the line it was found on, to order it against inih's syntax errors */
    char *err;    /* the caller's buffer */
    size_t errlen;
};

static int cfg_parse_int(const cfg_key *k, const char *v, void *field, char *msg, size_t len);
static int cfg_parse_port(const cfg_key *k, const char *v, void *field, char *msg, size_t len);
static int cfg_parse_enum(const cfg_key *k, const char *v, void *field, char *msg, size_t len);
static int cfg_parse_seconds(const cfg_key *k, const char *v, void *field, char *msg, size_t len);
static int cfg_parse_host(const cfg_key *k, const char *v, void *field, char *msg, size_t len);
static int cfg_parse_node(const cfg_key *k, const char *v, void *field, char *msg, size_t len);
static int cfg_parse_secret(const cfg_key *k, const char *v, void *field, char *msg, size_t len);
static int cfg_parse_path(const cfg_key *k, const char *v, void *field, char *msg, size_t len);
static int cfg_parse_u32(const cfg_key *k, const char *v, void *field, char *msg, size_t len);
static int cfg_parse_u64(const cfg_key *k, const char *v, void *field, char *msg, size_t len);
static int cfg_parse_name(const cfg_key *k, const char *v, void *field, char *msg, size_t len);
static int cfg_parse_name_copy(const cfg_key *k, const char *v, void *field, char *msg, size_t len);
static int cfg_parse_replicas(const cfg_key *k, const char *v, void *field, char *msg, size_t len);
static int cfg_parse_buckets(const cfg_key *k, const char *v, void *field, char *msg, size_t len);
static int cfg_parse_dsn(const cfg_key *k, const char *v, void *field, char *msg, size_t len);
static int cfg_parse_ident(const cfg_key *k, const char *v, void *field, char *msg, size_t len);
static int cfg_parse_bool(const cfg_key *k, const char *v, void *field, char *msg, size_t len);

static const cfg_word cfg_pool_modes[] = {
    {"transaction", CFG_POOL_TRANSACTION}, {"session", CFG_POOL_SESSION}, {NULL, 0}};
static const cfg_word cfg_auth_types[] = {
    {"scram-sha-256", CFG_AUTH_SCRAM}, {"md5", CFG_AUTH_MD5}, {"trust", CFG_AUTH_TRUST}, {NULL, 0}};
static const cfg_word cfg_client_tls_words[] = {
    {"disable", CFG_CTLS_DISABLE}, {"allow", CFG_CTLS_ALLOW}, {"require", CFG_CTLS_REQUIRE}, {NULL, 0}};
static const cfg_word cfg_server_tls_words[] = {
    {"disable", CFG_STLS_DISABLE},     {"prefer", CFG_STLS_PREFER},           {"require", CFG_STLS_REQUIRE},
    {"verify-ca", CFG_STLS_VERIFY_CA}, {"verify-full", CFG_STLS_VERIFY_FULL}, {NULL, 0}};
static const cfg_word cfg_log_formats[] = {{"text", CFG_LOG_TEXT}, {"json", CFG_LOG_JSON}, {NULL, 0}};
static const cfg_word cfg_log_levels[] = {{"debug", CFG_LOG_DEBUG},
                                          {"info", CFG_LOG_INFO},
                                          {"warn", CFG_LOG_WARN},
                                          {"error", CFG_LOG_ERROR},
                                          {NULL, 0}};
static const cfg_word cfg_ryw_words[] = {{"off", CFG_RYW_OFF}, {"session", CFG_RYW_SESSION}, {NULL, 0}};
static const cfg_word cfg_fallback_words[] = {
    {"primary", CFG_FALLBACK_PRIMARY}, {"error", CFG_FALLBACK_ERROR}, {NULL, 0}};
static const cfg_word cfg_unknown_functions_words[] = {
    {"primary", CFG_UNKNOWN_FUNC_PRIMARY}, {"replica", CFG_UNKNOWN_FUNC_REPLICA}, {NULL, 0}};
static const cfg_word cfg_key_type_words[] = {
    {"int", CFG_KEY_INT}, {"text", CFG_KEY_TEXT}, {"uuid", CFG_KEY_UUID}, {NULL, 0}};
static const cfg_word cfg_bool_words[] = {{"true", 1}, {"false", 0}, {"on", 1}, {"off", 0}, {"yes", 1},
                                          {"no", 0},   {"1", 1},     {"0", 0},  {NULL, 0}};
static const cfg_word cfg_balance_words[] = {{"round_robin", CFG_BALANCE_ROUND_ROBIN},
                                             {"least_outstanding", CFG_BALANCE_LEAST_OUTSTANDING},
                                             {"weighted", CFG_BALANCE_WEIGHTED},
                                             {NULL, 0}};

/* listen_addr, monitor_dbname and cfg_node.host, named so that CFG_KEY can check their
 * type. */
typedef char cfg_host[CFG_HOST_MAX];
_Static_assert(CFG_DB_NAME_MAX < CFG_HOST_MAX, "monitor_dbname and its NUL fit a cfg_host");

/* cfg_parse_enum stores through an int. */
_Static_assert(sizeof(cfg_pool_mode) == sizeof(int), "enum is not int-sized");
_Static_assert(sizeof(cfg_auth_type) == sizeof(int), "enum is not int-sized");
_Static_assert(sizeof(cfg_log_format) == sizeof(int), "enum is not int-sized");
_Static_assert(sizeof(cfg_log_level) == sizeof(int), "enum is not int-sized");
_Static_assert(sizeof(cfg_client_tls) == sizeof(int), "enum is not int-sized");
_Static_assert(sizeof(cfg_server_tls) == sizeof(int), "enum is not int-sized");
_Static_assert(sizeof(cfg_ryw) == sizeof(int), "enum is not int-sized");
_Static_assert(sizeof(cfg_fallback) == sizeof(int), "enum is not int-sized");
_Static_assert(sizeof(cfg_unknown_functions) == sizeof(int), "enum is not int-sized");
_Static_assert(sizeof(cfg_balance) == sizeof(int), "enum is not int-sized");
_Static_assert(sizeof(cfg_key_type) == sizeof(int), "enum is not int-sized");

/* The names of [table.NAME] and its shard_key column. */
typedef char cfg_ident[CFG_NAME_MAX + 1];

/* tls_cert_file, tls_key_file and server_tls_ca_file. */
typedef char cfg_path[CFG_PATH_MAX];

/* One row of cfg_keys: field m of struct st, which must have the C type t that parser fn
 * writes; the _Generic does not compile otherwise, so a row cannot pair a parser with a
 * field of another type. */
/* NOLINTBEGIN(bugprone-macro-parentheses): t is a type name, which cannot be parenthesized. */
#define CFG_KEY(sec, key, st, m, t, fn, ...)                                                                 \
    {                                                                                                        \
        .section = (sec), .name = (key), .parse = (fn),                                                      \
        .offset = offsetof(st, m) + _Generic(&((st *)0)->m, t * : 0), __VA_ARGS__                            \
    }
/* NOLINTEND(bugprone-macro-parentheses) */
#define CFG_INT(key, d, lo, hi)                                                                              \
    CFG_KEY(CFG_SEC_PGSHARD, #key, cfg_config, key, int, cfg_parse_int, .def = (d), .min = (lo), .max = (hi))
#define CFG_PORT(key, d)                                                                                     \
    CFG_KEY(CFG_SEC_PGSHARD, #key, cfg_config, key, uint16_t, cfg_parse_port, .def = (d), .min = 1,          \
            .max = 65535)
#define CFG_ENUM(key, type, d, w)                                                                            \
    CFG_KEY(CFG_SEC_PGSHARD, #key, cfg_config, key, type, cfg_parse_enum, .def = (d), .words = (w))
/* Seconds in the file, milliseconds in the struct (member key_ms). */
#define CFG_SECONDS(key, d, min_ms)                                                                          \
    CFG_KEY(CFG_SEC_PGSHARD, #key, cfg_config, key##_ms, uint32_t, cfg_parse_seconds, .def = (d),            \
            .min = (min_ms), .max = CFG_SECONDS_MAX * 1000)
/* Milliseconds in the file and in the struct. */
#define CFG_U32(key, d, lo, hi)                                                                              \
    CFG_KEY(CFG_SEC_PGSHARD, #key, cfg_config, key, uint32_t, cfg_parse_u32, .def = (d), .min = (lo),        \
            .max = (hi))

/* Every key pgshard reads. The example config and the tests are checked against this. */
static const cfg_key cfg_keys[] = {
    CFG_KEY(CFG_SEC_PGSHARD, "listen_addr", cfg_config, listen_addr, cfg_host, cfg_parse_host,
            .def = "127.0.0.1"),
    CFG_PORT(listen_port, "6432"),
    CFG_INT(workers, "0", 0, CFG_WORKERS_MAX),
    CFG_ENUM(pool_mode, cfg_pool_mode, "transaction", cfg_pool_modes),
    CFG_INT(pool_size, "20", 1, 10000),
    CFG_INT(max_client_conn, "10000", 1, 1000000),
    CFG_U32(max_message_size, "16777216", 8192, 1073741824),
    CFG_KEY(CFG_SEC_PGSHARD, "pin_session_state", cfg_config, pin_session_state, bool, cfg_parse_bool,
            .def = "on", .words = cfg_bool_words),
    CFG_ENUM(auth_type, cfg_auth_type, "scram-sha-256", cfg_auth_types),
    CFG_SECONDS(query_wait_timeout, "120", 0),
    CFG_SECONDS(server_idle_timeout, "600", 0),
    CFG_SECONDS(server_connect_timeout, "15", 1),
    CFG_INT(server_keepalive_idle, "60", 0, 32767),
    CFG_INT(server_keepalive_interval, "10", 1, 32767),
    CFG_INT(server_keepalive_count, "6", 1, 127),
    CFG_U32(server_tcp_user_timeout_ms, "0", 0, 86400000),
    CFG_SECONDS(client_login_timeout, "60", 0),
    CFG_SECONDS(shutdown_timeout, "30", 0),
    CFG_U32(log_slow_ms, "0", 0, 86400000),
    CFG_ENUM(client_tls, cfg_client_tls, "disable", cfg_client_tls_words),
    CFG_ENUM(server_tls, cfg_server_tls, "disable", cfg_server_tls_words),
    CFG_KEY(CFG_SEC_PGSHARD, "server_tls_ca_file", cfg_config, server_tls_ca_file, cfg_path, cfg_parse_path),
    CFG_KEY(CFG_SEC_PGSHARD, "tls_cert_file", cfg_config, tls_cert_file, cfg_path, cfg_parse_path),
    CFG_KEY(CFG_SEC_PGSHARD, "tls_key_file", cfg_config, tls_key_file, cfg_path, cfg_parse_path),
    CFG_KEY(CFG_SEC_PGSHARD, "admin_users", cfg_config, admin_users, char *, cfg_parse_secret, .def = NULL),
    CFG_KEY(CFG_SEC_PGSHARD, "metrics_port", cfg_config, metrics_port, uint16_t, cfg_parse_port, .def = "0",
            .min = 0, .max = 65535),
    CFG_ENUM(log_format, cfg_log_format, "text", cfg_log_formats),
    CFG_ENUM(log_level, cfg_log_level, "info", cfg_log_levels),
    CFG_ENUM(read_your_writes, cfg_ryw, "session", cfg_ryw_words),
    /* 2^53: a byte count any JSON or Prometheus reader still holds exactly. */
    CFG_KEY(CFG_SEC_PGSHARD, "max_lag_bytes", cfg_config, max_lag_bytes, uint64_t, cfg_parse_u64,
            .def = "1048576", .min = 0, .max = 9007199254740992LL),
    CFG_U32(max_lag_ms, "1000", 0, 86400000),
    CFG_U32(lag_poll_ms, "100", 10, 60000),
    CFG_ENUM(replica_fallback, cfg_fallback, "primary", cfg_fallback_words),
    CFG_U32(primary_wait_ms, "5000", 0, 600000),
    CFG_ENUM(unknown_functions, cfg_unknown_functions, "primary", cfg_unknown_functions_words),
    CFG_KEY(CFG_SEC_PGSHARD, "monitor_user", cfg_config, monitor_user, char *, cfg_parse_name_copy,
            .def = NULL, .min = 1, .max = CFG_USER_NAME_MAX),
    CFG_KEY(CFG_SEC_PGSHARD, "migrate_user", cfg_config, migrate_user, char *, cfg_parse_name_copy,
            .def = NULL, .min = 1, .max = CFG_USER_NAME_MAX),
    CFG_KEY(CFG_SEC_PGSHARD, "monitor_dbname", cfg_config, monitor_dbname, cfg_host, cfg_parse_name,
            .def = "postgres", .min = 1, .max = CFG_DB_NAME_MAX),
    CFG_KEY(CFG_SEC_PGSHARD, "buckets", cfg_config, buckets, uint32_t, cfg_parse_buckets, .def = "1024",
            .min = 1, .max = 65536),
    CFG_KEY(CFG_SEC_PGSHARD, "catalog_dsn", cfg_config, catalog_dsn, char *, cfg_parse_dsn, .def = NULL),
    /* Checked against the number of [shard.N] once the whole file is read. */
    CFG_INT(default_shard, "0", 0, CFG_MAX_SHARDS - 1),
    CFG_KEY(CFG_SEC_PGSHARD, "allow_cross_shard_writes", cfg_config, allow_cross_shard_writes, bool,
            cfg_parse_bool, .def = "off", .words = cfg_bool_words),
    CFG_KEY(CFG_SEC_PGSHARD, "two_phase_commit", cfg_config, two_phase_commit, bool, cfg_parse_bool,
            .def = "off", .words = cfg_bool_words),
    CFG_U32(two_phase_recovery_interval_ms, "5000", 100, 3600000),
    /* A prepared transaction younger than this may still be committing on a live proxy. */
    CFG_U32(two_phase_recovery_grace_ms, "5000", 0, 86400000),
    CFG_U32(catalog_lease_ms, "10000", 0, 3600000),
    CFG_U32(freeze_hold_ms, "10000", 100, 3600000),
    CFG_U32(freeze_timeout_ms, "5000", 100, 3600000),

    CFG_KEY(CFG_SEC_SHARD, "primary", cfg_shard, primary, cfg_node, cfg_parse_node, .required = true),
    /* replicas sets both nreplicas and replicas[], so its parser gets the whole cfg_shard. */
    {.section = CFG_SEC_SHARD, .name = "replicas", .parse = cfg_parse_replicas, .offset = 0, .def = ""},
    CFG_KEY(CFG_SEC_SHARD, "balance", cfg_shard, balance, cfg_balance, cfg_parse_enum, .def = "round_robin",
            .words = cfg_balance_words),

    CFG_KEY(CFG_SEC_USER, "password", cfg_user, password, char *, cfg_parse_secret, .def = NULL),
    CFG_KEY(CFG_SEC_USER, "max_connections", cfg_user, max_connections, int, cfg_parse_int, .def = "0",
            .min = 0, .max = 1000000),
    CFG_KEY(CFG_SEC_USER, "max_qps", cfg_user, max_qps, int, cfg_parse_int, .def = "0", .min = 0,
            .max = 10000000),

    /* Exactly one of shard_key and omnisharded = true: checked when the section ends. */
    CFG_KEY(CFG_SEC_TABLE, "shard_key", cfg_table, shard_key, cfg_ident, cfg_parse_ident),
    CFG_KEY(CFG_SEC_TABLE, "omnisharded", cfg_table, omnisharded, bool, cfg_parse_bool,
            .words = cfg_bool_words),
    CFG_KEY(CFG_SEC_TABLE, "key_type", cfg_table, key_type, cfg_key_type, cfg_parse_enum,
            .words = cfg_key_type_words),
};
_Static_assert(CFG_COUNT(cfg_keys) <= CFG_KEYS_MAX, "cfg_ctx.seen has one bit per key");
_Static_assert(CFG_KEYS_MAX <= 64, "cfg_ctx.seen is a uint64_t");

typedef int (*cfg_begin_fn)(cfg_ctx *c, const char *name, int len, const char *arg, size_t arglen);
static int cfg_begin_pgshard(cfg_ctx *c, const char *name, int len, const char *arg, size_t arglen);
static int cfg_begin_shard(cfg_ctx *c, const char *name, int len, const char *arg, size_t arglen);
static int cfg_begin_user(cfg_ctx *c, const char *name, int len, const char *arg, size_t arglen);
static int cfg_begin_table(cfg_ctx *c, const char *name, int len, const char *arg, size_t arglen);
static int cfg_end_pgshard(cfg_ctx *c);
static int cfg_end_shard(cfg_ctx *c);
static int cfg_end_table(cfg_ctx *c);
static int cfg_key_index(cfg_section_kind kind, const char *name);

/* NOLINTNEXTLINE(clang-analyzer-optin.performance.Padding): four static entries */
typedef struct cfg_section_def {
    cfg_section_kind kind;
    const char *prefix; /* the whole name, or the part before the argument */
    bool has_arg;       /* [shard.N], [user.NAME] and [table.NAME] */
    cfg_begin_fn begin; /* checks the argument and points c->target at the new struct */
    cfg_end_fn end;     /* checks the complete section; NULL: nothing beyond required keys */
} cfg_section_def;

static const cfg_section_def cfg_sections[] = {
    {CFG_SEC_PGSHARD, "pgshard", false, cfg_begin_pgshard, cfg_end_pgshard},
    {CFG_SEC_SHARD, "shard.", true, cfg_begin_shard, cfg_end_shard},
    {CFG_SEC_USER, "user.", true, cfg_begin_user, NULL},
    {CFG_SEC_TABLE, "table.", true, cfg_begin_table, cfg_end_table},
};

/* ---- messages ---------------------------------------------------------------------- */

#define CFG_PRINTF(f, a) __attribute__((format(printf, f, a)))
static int cfg_fail_at(cfg_ctx *c, int line, const char *fmt, ...) CFG_PRINTF(3, 4);
static int cfg_fail_file(cfg_ctx *c, const char *fmt, ...) CFG_PRINTF(2, 3);
static int cfg_msg(char *msg, size_t len, const char *fmt, ...) CFG_PRINTF(3, 4);
static int cfg_file_error(char *err, size_t errlen, const char *fmt, ...) CFG_PRINTF(3, 4);

/* Records the first error only: everything after it may be a consequence. line orders it
 * against inih's syntax errors even when it is not shown. A message cut short by a small
 * buffer is still the start of the right message, so truncation is not an error. */
static void cfg_vfail(cfg_ctx *c, int line, bool show_line, const char *fmt, va_list ap)
{
    if (c->failed)
        return;
    c->failed = true;
    c->err_line = line;
    if (!c->err || c->errlen == 0)
        return;
    int n = show_line ? snprintf(c->err, c->errlen, "%s:%d: ", c->name, line)
                      : snprintf(c->err, c->errlen, "%s: ", c->name);
    if (n < 0 || (size_t)n >= c->errlen)
        return;
    if (vsnprintf(c->err + n, c->errlen - (size_t)n, fmt, ap) < 0)
        c->err[n] = '\0';
}

/* An error on one line: "FILE:LINE: ...". Returns -1. */
static int cfg_fail_at(cfg_ctx *c, int line, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    cfg_vfail(c, line, true, fmt, ap);
    va_end(ap);
    return -1;
}

/* An error about the file as a whole (a missing or incomplete section): "FILE: ...". It is
 * ordered by the line where it was noticed, so an earlier syntax error wins over it. */
static int cfg_fail_file(cfg_ctx *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    cfg_vfail(c, c->lineno, false, fmt, ap);
    va_end(ap);
    return -1;
}

static int cfg_nomem(cfg_ctx *c)
{
    c->failed = true;
    c->oom = true;
    return -1;
}

/* A parser's complaint. A message cut short by a small buffer still says enough. */
static int cfg_msg(char *msg, size_t len, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, len, fmt, ap);
    va_end(ap);
    if (n < 0 && len > 0)
        msg[0] = '\0';
    return CFG_BAD;
}

/* ---- value parsers ------------------------------------------------------------------ */

/* Our own strndup: every allocation goes through malloc, calloc, realloc and free so the
 * allocation-failure tests can fail each of them. */
static char *cfg_strndup(const char *s, size_t len)
{
    char *p = malloc(len + 1);
    if (p) {
        memcpy(p, s, len);
        p[len] = '\0';
    }
    return p;
}

/* Digits only: strtol would also take spaces, a sign and trailing junk. */
static bool cfg_integer(const char *s, size_t len, long long min, long long max, long long *out)
{
    long long n = 0;
    if (len == 0 || len > 18)
        return false;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        n = n * 10 + (s[i] - '0');
    }
    if (n < min || n > max)
        return false;
    *out = n;
    return true;
}

static int cfg_parse_int(const cfg_key *k, const char *v, void *field, char *msg, size_t len)
{
    long long n;
    if (!cfg_integer(v, strlen(v), k->min, k->max, &n))
        return cfg_msg(msg, len, "must be an integer from %lld to %lld", k->min, k->max);
    *(int *)field = (int)n;
    return CFG_OK;
}

static int cfg_parse_port(const cfg_key *k, const char *v, void *field, char *msg, size_t len)
{
    long long n;
    if (!cfg_integer(v, strlen(v), k->min, k->max, &n))
        return cfg_msg(msg, len, "must be an integer from %lld to %lld", k->min, k->max);
    *(uint16_t *)field = (uint16_t)n;
    return CFG_OK;
}

static int cfg_parse_u32(const cfg_key *k, const char *v, void *field, char *msg, size_t len)
{
    long long n;
    if (!cfg_integer(v, strlen(v), k->min, k->max, &n))
        return cfg_msg(msg, len, "must be an integer from %lld to %lld", k->min, k->max);
    *(uint32_t *)field = (uint32_t)n;
    return CFG_OK;
}

static int cfg_parse_u64(const cfg_key *k, const char *v, void *field, char *msg, size_t len)
{
    long long n;
    if (!cfg_integer(v, strlen(v), k->min, k->max, &n))
        return cfg_msg(msg, len, "must be an integer from %lld to %lld", k->min, k->max);
    *(uint64_t *)field = (uint64_t)n;
    return CFG_OK;
}

static const char *cfg_word_name(const cfg_word *words, int value)
{
    for (const cfg_word *w = words; w->word; w++)
        if (w->value == value)
            return w->word;
    return "unknown";
}

static int cfg_parse_enum(const cfg_key *k, const char *v, void *field, char *msg, size_t len)
{
    for (const cfg_word *w = k->words; w->word; w++) {
        if (strcmp(v, w->word) == 0) {
            *(int *)field = w->value;
            return CFG_OK;
        }
    }
    size_t used = 0;
    for (const cfg_word *w = k->words; w->word && used < len; w++) {
        int n = snprintf(msg + used, len - used, "%s%s", w == k->words ? "must be one of: " : ", ", w->word);
        if (n < 0)
            break;
        used += (size_t)n;
    }
    return CFG_BAD;
}

/* Seconds, with up to three decimals so that "0.5" works; stored as milliseconds. Parsed by
 * hand because strtod would accept "inf", "1e3" and hexadecimal, and round. */
static bool cfg_seconds(const char *s, long long *ms)
{
    const char *dot = strchr(s, '.');
    size_t ilen = dot ? (size_t)(dot - s) : strlen(s);
    size_t flen = dot ? strlen(dot + 1) : 0;
    long long whole;
    if (!cfg_integer(s, ilen, 0, CFG_SECONDS_MAX, &whole) || (dot && (flen < 1 || flen > 3)))
        return false;
    long long frac = 0;
    if (dot && !cfg_integer(dot + 1, flen, 0, 999, &frac))
        return false;
    for (size_t i = flen; i < 3; i++)
        frac *= 10;
    *ms = whole * 1000 + frac;
    return true;
}

static void cfg_format_seconds(char *buf, size_t len, long long ms)
{
    int n = ms % 1000 ? snprintf(buf, len, "%lld.%03lld", ms / 1000, ms % 1000)
                      : snprintf(buf, len, "%lld", ms / 1000);
    if (n < 0 || (size_t)n >= len) {
        buf[0] = '\0';
        return;
    }
    while (n > 0 && strchr(buf, '.') && buf[n - 1] == '0')
        buf[--n] = '\0';
}

static int cfg_parse_seconds(const cfg_key *k, const char *v, void *field, char *msg, size_t len)
{
    long long ms;
    if (cfg_seconds(v, &ms) && ms >= k->min && ms <= k->max) {
        *(uint32_t *)field = (uint32_t)ms;
        return CFG_OK;
    }
    char lo[32], hi[32];
    cfg_format_seconds(lo, sizeof lo, k->min);
    cfg_format_seconds(hi, sizeof hi, k->max);
    return cfg_msg(msg, len, "must be a number of seconds from %s to %s, at most 3 decimals", lo, hi);
}

/* RFC 1123 host names, plus '_' which container names use. A name of only digits and dots
 * is a mistyped IPv4 address (999.0.0.1), not a host name. */
static bool cfg_hostname_valid(const char *s, size_t len)
{
    bool numeric = true;
    size_t label = 0;
    if (len > 253)
        return false;
    for (size_t i = 0; i <= len; i++) {
        char ch = i < len ? s[i] : '.';
        if (ch == '.') {
            if (label == 0 || s[i - 1] == '-' || s[i - label] == '-')
                return false;
            label = 0;
            continue;
        }
        bool digit = ch >= '0' && ch <= '9';
        bool alpha = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z');
        if (!digit && !alpha && ch != '-' && ch != '_')
            return false;
        numeric = numeric && digit;
        if (++label > 63)
            return false;
    }
    return !numeric;
}

/* Copies s[0..len) into dst if it is a numeric IPv4 or IPv6 address or a host name. A
 * bracketed host, or one with a colon, can only be IPv6. */
static bool cfg_host_copy(char dst[CFG_HOST_MAX], const char *s, size_t len, bool bracketed)
{
    char buf[CFG_HOST_MAX];
    unsigned char addr[16];
    if (len == 0 || len >= sizeof buf)
        return false;
    memcpy(buf, s, len);
    buf[len] = '\0';
    bool ok;
    if (bracketed || memchr(buf, ':', len))
        ok = inet_pton(AF_INET6, buf, addr) == 1;
    else
        ok = inet_pton(AF_INET, buf, addr) == 1 || cfg_hostname_valid(buf, len);
    if (ok)
        memcpy(dst, buf, len + 1);
    return ok;
}

static int cfg_bad_host(char *msg, size_t len, const char *host, size_t hlen, bool bracketed)
{
    return cfg_msg(msg, len, "'%.*s' is not %s", (int)hlen, host,
                   bracketed ? "an IPv6 address" : "an IP address or host name");
}

/* listen_addr: a bare address or host name; "[::]" is taken as well as "::". */
static int cfg_parse_host(const cfg_key *k, const char *v, void *field, char *msg, size_t len)
{
    size_t vlen = strlen(v);
    bool bracketed = vlen >= 2 && v[0] == '[' && v[vlen - 1] == ']';
    const char *host = bracketed ? v + 1 : v;
    size_t hlen = bracketed ? vlen - 2 : vlen;
    if (!cfg_host_copy(field, host, hlen, bracketed))
        return cfg_bad_host(msg, len, host, hlen, bracketed);
    return CFG_OK;
}

/* host:port or [IPv6]:port; the port is required because a shard on the wrong default
 * port is a worse surprise than an error. */
static int cfg_parse_node(const cfg_key *k, const char *v, void *field, char *msg, size_t len)
{
    cfg_node *node = field;
    bool bracketed = v[0] == '[';
    const char *host = bracketed ? v + 1 : v;
    const char *end = strchr(v, bracketed ? ']' : ':');
    if (!bracketed && end && strchr(end + 1, ':'))
        return cfg_msg(msg, len, "an IPv6 address must be in brackets, as in [::1]:5432");
    if (!end || end == host || (bracketed && end[1] != ':'))
        return cfg_msg(msg, len, "must be host:port or [IPv6-address]:port");
    const char *port = bracketed ? end + 2 : end + 1;
    long long n;
    if (!cfg_integer(port, strlen(port), 1, 65535, &n))
        return cfg_msg(msg, len, "port must be an integer from 1 to 65535");
    size_t hlen = (size_t)(end - host);
    if (!cfg_host_copy(node->host, host, hlen, bracketed))
        return cfg_bad_host(msg, len, host, hlen, bracketed);
    node->port = (uint16_t)n;
    return CFG_OK;
}

/* Writes node as the file would: host:port, or [address]:port for IPv6. */
static void cfg_node_format(char *buf, size_t len, const cfg_node *node)
{
    bool v6 = strchr(node->host, ':') != NULL;
    int n = snprintf(buf, len, "%s%s%s:%u", v6 ? "[" : "", node->host, v6 ? "]" : "", (unsigned)node->port);
    if (n < 0 && len > 0)
        buf[0] = '\0';
}

/* Whether a and b name the same server: the same port and the same address, however it is
 * written ("::1" and "0::1"), or the same host name in any case. Names are not resolved,
 * so two names for one machine are not caught. */
static bool cfg_node_same(const cfg_node *a, const cfg_node *b)
{
    unsigned char x[16], y[16];
    if (a->port != b->port)
        return false;
    int af = strchr(a->host, ':') ? AF_INET6 : AF_INET;
    if (inet_pton(af, a->host, x) == 1 && inet_pton(af, b->host, y) == 1)
        return memcmp(x, y, af == AF_INET6 ? 16 : 4) == 0;
    return strcasecmp(a->host, b->host) == 0;
}

/* The next item of a comma-separated list without the blanks around it: returns its start,
 * sets *len, and moves *p past the item's comma, or to NULL after the last item. */
static const char *cfg_list_next(const char **p, size_t *len)
{
    const char *item = *p;
    const char *comma = strchr(item, ',');
    size_t n = comma ? (size_t)(comma - item) : strlen(item);
    *p = comma ? comma + 1 : NULL;
    while (n > 0 && (*item == ' ' || *item == '\t')) {
        item++;
        n--;
    }
    while (n > 0 && (item[n - 1] == ' ' || item[n - 1] == '\t'))
        n--;
    *len = n;
    return item;
}

/* One item of replicas: host:port or [IPv6-address]:port as for primary, then optionally
 * @weight. The weight is split off at the last '@', which no host or port contains. */
static int cfg_parse_replica(const char *item, size_t ilen, cfg_replica *r, char *msg, size_t len)
{
    char node[CFG_HOST_MAX + sizeof "[]:65535@1000"];
    char why[CFG_MSG_MAX];
    if (ilen >= sizeof node)
        return cfg_msg(msg, len, "replica '%.*s': must be host:port[@weight]", (int)ilen, item);
    /* No host, port or weight has a blank, so a forgotten comma is the likely mistake. */
    if (memchr(item, ' ', ilen) || memchr(item, '\t', ilen))
        return cfg_msg(msg, len, "replica '%.*s' contains a blank: separate replicas with commas", (int)ilen,
                       item);
    memcpy(node, item, ilen);
    node[ilen] = '\0';
    char *at = strrchr(node, '@');
    long long weight = 1;
    if (at && !cfg_integer(at + 1, strlen(at + 1), 1, CFG_WEIGHT_MAX, &weight))
        return cfg_msg(msg, len, "replica '%s': weight must be an integer from 1 to %d", node,
                       CFG_WEIGHT_MAX);
    if (at)
        *at = '\0';
    if (cfg_parse_node(NULL, node, &r->node, why, sizeof why) != CFG_OK)
        return cfg_msg(msg, len, "replica '%.*s': %s", (int)ilen, item, why);
    r->weight = (int)weight;
    return CFG_OK;
}

/* replicas = host:port[@weight], ...: an empty value means none. A replica that is the
 * primary is caught when the section ends (cfg_end_shard), since primary may come later. */
static int cfg_parse_replicas(const cfg_key *k, const char *v, void *field, char *msg, size_t len)
{
    cfg_shard *shard = field;
    int n = 0;
    for (const char *p = v[0] ? v : NULL; p;) {
        size_t ilen;
        const char *item = cfg_list_next(&p, &ilen);
        if (ilen == 0)
            return cfg_msg(msg, len, "an item of the list is empty");
        if (n == CFG_MAX_REPLICAS)
            return cfg_msg(msg, len, "at most %d replicas", CFG_MAX_REPLICAS);
        cfg_replica *r = &shard->replicas[n];
        if (cfg_parse_replica(item, ilen, r, msg, len) != CFG_OK)
            return CFG_BAD;
        for (int i = 0; i < n; i++)
            if (cfg_node_same(&shard->replicas[i].node, &r->node))
                return cfg_msg(msg, len, "replica '%.*s' is listed twice", (int)ilen, item);
        n++;
    }
    shard->nreplicas = n;
    return CFG_OK;
}

/* A password or a stored secret, kept verbatim. An empty one is almost certainly a
 * mistake; leaving the key out means "no password". */
static int cfg_parse_secret(const cfg_key *k, const char *v, void *field, char *msg, size_t len)
{
    char **dst = field;
    if (v[0] == '\0')
        return cfg_msg(msg, len, "must not be empty (leave the key out for no password)");
    char *copy = cfg_strndup(v, strlen(v));
    if (!copy)
        return CFG_NOMEM;
    free(*dst);
    *dst = copy;
    return CFG_OK;
}

/* A file path, kept verbatim; whether the file is usable is checked when pgshard starts. */
static int cfg_parse_path(const cfg_key *k, const char *v, void *field, char *msg, size_t len)
{
    size_t n = strlen(v);
    if (n == 0 || n >= CFG_PATH_MAX)
        return cfg_msg(msg, len, "must be a file path of 1 to %d bytes", CFG_PATH_MAX - 1);
    memcpy(field, v, n + 1);
    return CFG_OK;
}

/* A database name into a cfg_host, k->min to k->max bytes, kept verbatim. */
static int cfg_parse_name(const cfg_key *k, const char *v, void *field, char *msg, size_t len)
{
    size_t n = strlen(v);
    if (n < (size_t)k->min || n > (size_t)k->max)
        return cfg_msg(msg, len, "must be a name of %lld to %lld bytes", k->min, k->max);
    memcpy(field, v, n + 1);
    return CFG_OK;
}

/* A user name into an allocated string, k->min to k->max bytes, kept verbatim. */
static int cfg_parse_name_copy(const cfg_key *k, const char *v, void *field, char *msg, size_t len)
{
    char **dst = field;
    size_t n = strlen(v);
    if (n < (size_t)k->min || n > (size_t)k->max)
        return cfg_msg(msg, len, "must be a name of %lld to %lld bytes", k->min, k->max);
    char *copy = cfg_strndup(v, n);
    if (!copy)
        return CFG_NOMEM;
    free(*dst);
    *dst = copy;
    return CFG_OK;
}

/* A power of two, because a key's bucket is its hash & (buckets - 1), as in SQL. */
static int cfg_parse_buckets(const cfg_key *k, const char *v, void *field, char *msg, size_t len)
{
    long long n;
    if (!cfg_integer(v, strlen(v), k->min, k->max, &n) || (n & (n - 1)) != 0)
        return cfg_msg(msg, len, "must be a power of two from %lld to %lld", k->min, k->max);
    *(uint32_t *)field = (uint32_t)n;
    return CFG_OK;
}

/* libpq's own parser says whether the string is a conninfo ("key=value ...") or a
 * postgresql:// URI, so the mistake shows at load, with its line, rather than when the
 * catalog is first dialed. libpq's message ends with a newline, which is dropped. */
static int cfg_parse_dsn(const cfg_key *k, const char *v, void *field, char *msg, size_t len)
{
    char **dst = field;
    char *why = NULL;
    if (v[0] == '\0')
        return cfg_msg(msg, len, "must not be empty (leave the key out for no catalog)");
    PQconninfoOption *opts = PQconninfoParse(v, &why);
    if (!opts && !why)
        return CFG_NOMEM;
    if (!opts) {
        size_t n = strlen(why);
        while (n > 0 && (why[n - 1] == '\n' || why[n - 1] == ' '))
            n--;
        cfg_msg(msg, len, "not a libpq connection string: %.*s", (int)n, why);
        PQfreemem(why);
        return CFG_BAD;
    }
    PQconninfoFree(opts);
    char *copy = cfg_strndup(v, strlen(v));
    if (!copy)
        return CFG_NOMEM;
    free(*dst);
    *dst = copy;
    return CFG_OK;
}

/* An identifier as PostgreSQL keeps it: 1 to 63 bytes. */
static int cfg_parse_ident(const cfg_key *k, const char *v, void *field, char *msg, size_t len)
{
    size_t n = strlen(v);
    if (n < 1 || n > CFG_NAME_MAX)
        return cfg_msg(msg, len, "must be a column name of 1 to %d bytes", CFG_NAME_MAX);
    memcpy(field, v, n + 1);
    return CFG_OK;
}

/* The words PostgreSQL's boolean settings take, in lower case. */
static int cfg_parse_bool(const cfg_key *k, const char *v, void *field, char *msg, size_t len)
{
    for (const cfg_word *w = k->words; w->word; w++) {
        if (strcmp(v, w->word) == 0) {
            *(bool *)field = w->value != 0;
            return CFG_OK;
        }
    }
    return cfg_msg(msg, len, "must be true or false (or on/off, yes/no, 1/0)");
}

/* ---- sections ----------------------------------------------------------------------- */

static int cfg_apply_defaults(cfg_ctx *c, cfg_section_kind kind, void *base)
{
    char msg[CFG_MSG_MAX];
    for (size_t i = 0; i < CFG_COUNT(cfg_keys); i++) {
        const cfg_key *k = &cfg_keys[i];
        if (k->section != kind || !k->def)
            continue;
        int rc = k->parse(k, k->def, (char *)base + k->offset, msg, sizeof msg);
        if (rc == CFG_NOMEM)
            return cfg_nomem(c);
        if (rc != CFG_OK)
            return cfg_fail_file(c, "key '%s': bad built-in default: %s", k->name, msg);
    }
    return 0;
}

/* Called when a section ends (at the next header and at the end of the file). */
static int cfg_section_end(cfg_ctx *c)
{
    for (size_t i = 0; i < CFG_COUNT(cfg_keys); i++) {
        const cfg_key *k = &cfg_keys[i];
        if (k->section == c->kind && k->required && !(c->seen & ((uint64_t)1 << i)))
            return cfg_fail_file(c, "[%s] has no %s", c->section, k->name);
    }
    return c->end ? c->end(c) : 0;
}

static int cfg_fail_duplicate(cfg_ctx *c, const char *name, int len)
{
    return cfg_fail_at(c, c->lineno, "duplicate section [%.*s]", len, name);
}

static int cfg_begin_pgshard(cfg_ctx *c, const char *name, int len, const char *arg, size_t arglen)
{
    if (c->have_pgshard)
        return cfg_fail_duplicate(c, name, len);
    c->have_pgshard = true;
    c->target = c->cfg;
    return 0;
}

/* Verifying the servers' certificates needs the CAs to verify them against. There is no
 * default bundle to fall back on, as libpq's ~/.postgresql/root.crt, because a proxy's home
 * directory is not where anyone would look for it. The file itself is read at start. */
static int cfg_end_pgshard(cfg_ctx *c)
{
    const cfg_config *cfg = c->cfg;
    if (cfg->server_tls < CFG_STLS_VERIFY_CA || cfg->server_tls_ca_file[0])
        return 0;
    int line = c->key_line[cfg_key_index(CFG_SEC_PGSHARD, "server_tls")];
    return cfg_fail_at(c, line,
                       "key 'server_tls': %s needs server_tls_ca_file (a PEM file of CA certificates)",
                       cfg_server_tls_name(cfg->server_tls));
}

/* While parsing, cfg->nshards is one more than the highest shard number seen, so the array
 * grows to exactly the size it ends with; gaps are found at the end. */
static int cfg_begin_shard(cfg_ctx *c, const char *name, int len, const char *arg, size_t arglen)
{
    cfg_config *cfg = c->cfg;
    long long n;
    if (!cfg_integer(arg, arglen, 0, CFG_MAX_SHARDS - 1, &n) || (arglen > 1 && arg[0] == '0'))
        return cfg_fail_at(c, c->lineno,
                           "section [%.*s]: shard number must be an integer from 0 to %d "
                           "without leading zeros",
                           len, name, CFG_MAX_SHARDS - 1);
    if (c->shard_seen[n])
        return cfg_fail_duplicate(c, name, len);
    if (n >= cfg->nshards) {
        cfg_shard *s = realloc(cfg->shards, (size_t)(n + 1) * sizeof *s);
        if (!s)
            return cfg_nomem(c);
        memset(s + cfg->nshards, 0, (size_t)(n + 1 - cfg->nshards) * sizeof *s);
        cfg->shards = s;
        cfg->nshards = (int)n + 1;
    }
    c->shard_seen[n] = true;
    c->target = &cfg->shards[n];
    return 0;
}

/* A replica that is also the shard's primary would be counted twice, sending "replica"
 * reads to the primary and confusing the monitor's lag. It is always a typo, so it is an
 * error on the replicas line; it waits for the section's end because primary may follow. */
static int cfg_end_shard(cfg_ctx *c)
{
    const cfg_shard *s = c->target;
    for (int i = 0; i < s->nreplicas; i++) {
        if (!cfg_node_same(&s->replicas[i].node, &s->primary))
            continue;
        char node[CFG_HOST_MAX + sizeof "[]:65535"];
        cfg_node_format(node, sizeof node, &s->primary);
        int line = c->key_line[cfg_key_index(CFG_SEC_SHARD, "replicas")];
        return cfg_fail_at(c, line, "key 'replicas': replica '%s' is the shard's primary", node);
    }
    return 0;
}

static const cfg_user *cfg_user_lookup(const cfg_config *cfg, const char *name, size_t len)
{
    for (int i = 0; i < cfg->nusers; i++) {
        const cfg_user *u = &cfg->users[i];
        if (strlen(u->name) == len && memcmp(u->name, name, len) == 0)
            return u;
    }
    return NULL;
}

static int cfg_begin_user(cfg_ctx *c, const char *name, int len, const char *arg, size_t arglen)
{
    cfg_config *cfg = c->cfg;
    if (arglen == 0 || arglen > CFG_USER_NAME_MAX)
        return cfg_fail_at(c, c->lineno, "section [%.*s]: user name must be 1 to %d bytes", len, name,
                           CFG_USER_NAME_MAX);
    if (cfg_user_lookup(cfg, arg, arglen))
        return cfg_fail_duplicate(c, name, len);
    if (cfg->nusers == c->users_cap) {
        int cap = c->users_cap ? c->users_cap * 2 : 8;
        cfg_user *u = realloc(cfg->users, (size_t)cap * sizeof *u);
        if (!u)
            return cfg_nomem(c);
        cfg->users = u;
        c->users_cap = cap;
    }
    char *copy = cfg_strndup(arg, arglen);
    if (!copy)
        return cfg_nomem(c);
    cfg->users[cfg->nusers] = (cfg_user){.name = copy, .password = NULL};
    c->target = &cfg->users[cfg->nusers++];
    return 0;
}

static const cfg_table *cfg_table_lookup(const cfg_config *cfg, const char *schema, const char *name)
{
    for (int i = 0; i < cfg->ntables; i++)
        if (strcmp(cfg->tables[i].schema, schema) == 0 && strcmp(cfg->tables[i].name, name) == 0)
            return &cfg->tables[i];
    return NULL;
}

/* [table.NAME] or [table.SCHEMA.NAME]: one dot at most, since a section name cannot quote
 * one; each part 1 to 63 bytes. */
static int cfg_begin_table(cfg_ctx *c, const char *name, int len, const char *arg, size_t arglen)
{
    cfg_config *cfg = c->cfg;
    const char *dot = memchr(arg, '.', arglen);
    size_t slen = dot ? (size_t)(dot - arg) : 0;
    const char *tname = dot ? dot + 1 : arg;
    size_t tlen = dot ? arglen - slen - 1 : arglen;
    if ((dot && (slen == 0 || slen > CFG_NAME_MAX)) || tlen == 0 || tlen > CFG_NAME_MAX ||
        memchr(tname, '.', tlen))
        return cfg_fail_at(c, c->lineno,
                           "section [%.*s]: must be [table.NAME] or [table.SCHEMA.NAME], each name "
                           "1 to %d bytes",
                           len, name, CFG_NAME_MAX);
    cfg_table t;
    memset(&t, 0, sizeof t);
    memcpy(t.schema, arg, slen);
    memcpy(t.name, tname, tlen);
    if (cfg_table_lookup(cfg, t.schema, t.name))
        return cfg_fail_duplicate(c, name, len);
    if (cfg->ntables == CFG_MAX_TABLES)
        return cfg_fail_at(c, c->lineno, "section [%.*s]: at most %d [table.NAME] sections", len, name,
                           CFG_MAX_TABLES);
    if (cfg->ntables == c->tables_cap) {
        int cap = c->tables_cap ? c->tables_cap * 2 : 8;
        cfg_table *tables = realloc(cfg->tables, (size_t)cap * sizeof *tables);
        if (!tables)
            return cfg_nomem(c);
        cfg->tables = tables;
        c->tables_cap = cap;
    }
    cfg->tables[cfg->ntables] = t;
    c->target = &cfg->tables[cfg->ntables++];
    return 0;
}

/* A table is sharded or omnisharded, never both or neither; the error goes on the line
 * that made it so (the later of the two keys, or the header when both are missing). */
static int cfg_end_table(cfg_ctx *c)
{
    const cfg_table *t = c->target;
    int key_line = c->key_line[cfg_key_index(CFG_SEC_TABLE, "shard_key")];
    int omni_line = c->key_line[cfg_key_index(CFG_SEC_TABLE, "omnisharded")];
    int type_line = c->key_line[cfg_key_index(CFG_SEC_TABLE, "key_type")];
    bool sharded = t->shard_key[0] != '\0';
    if (sharded && t->omnisharded)
        return cfg_fail_at(c, key_line > omni_line ? key_line : omni_line,
                           "key '%s': [%s] cannot have both shard_key and omnisharded = true",
                           key_line > omni_line ? "shard_key" : "omnisharded", c->section);
    if (!sharded && !t->omnisharded)
        return cfg_fail_at(c, c->section_line,
                           "section [%s]: needs shard_key = COLUMN (a sharded table) or omnisharded = "
                           "true",
                           c->section);
    if (!sharded && (c->seen & ((uint64_t)1 << cfg_key_index(CFG_SEC_TABLE, "key_type"))))
        return cfg_fail_at(c, type_line, "key 'key_type': only a sharded table (shard_key) has a key type");
    return 0;
}

static int cfg_section_begin(cfg_ctx *c, const char *name, size_t len)
{
    if (cfg_section_end(c) < 0)
        return -1;
    for (size_t i = 0; i < CFG_COUNT(cfg_sections); i++) {
        const cfg_section_def *d = &cfg_sections[i];
        size_t plen = strlen(d->prefix);
        if (d->has_arg ? len < plen : len != plen)
            continue;
        if (memcmp(name, d->prefix, plen) != 0)
            continue;
        if (d->begin(c, name, (int)len, name + plen, len - plen) < 0)
            return -1;
        if (len >= sizeof c->section) /* the begin functions bound every name they accept */
            return cfg_fail_at(c, c->lineno, "section name too long");
        memcpy(c->section, name, len);
        c->section[len] = '\0';
        c->kind = d->kind;
        c->end = d->end;
        c->seen = 0;
        c->section_line = c->lineno;
        /* [pgshard] got its defaults when the config was created, so that a file without
         * that section has them too. */
        return d->has_arg ? cfg_apply_defaults(c, d->kind, c->target) : 0;
    }
    return cfg_fail_at(c, c->lineno, "unknown section [%.*s]", (int)len, name);
}

/* ---- inih callbacks ---------------------------------------------------------------- */

/* Looks at a raw line before inih does. Two things are only visible here: section headers
 * (the installed inih does not call the handler for them, so an empty [user.x] or an
 * unknown section with no keys would go unseen), and indented lines, which inih takes as
 * the continuation of the previous value, so that "  pool_size = 5" would silently become
 * part of the key above it. */
static int cfg_check_line(cfg_ctx *c, const char *line)
{
    const char *p = line;
    if (c->lineno == 1 && strncmp(p, "\xEF\xBB\xBF", 3) == 0)
        p += 3; /* inih skips a UTF-8 byte order mark */
    if (*p == ' ' || *p == '\t') {
        while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n' || *p == '\v' || *p == '\f')
            p++;
        if (*p && !strchr(INI_START_COMMENT_PREFIXES, *p))
            return cfg_fail_at(c, c->lineno, "indented line (it would continue the value above it)");
        return 0;
    }
    if (*p != '[')
        return 0;
    const char *close = strchr(p, ']');
    if (!close)
        return 0; /* inih reports the syntax error */
    return cfg_section_begin(c, p + 1, (size_t)(close - p - 1));
}

/* inih's fgets-style reader over the text. Reading the lines here, rather than through
 * ini_parse_string, gives the handler the line number (the installed inih is built without
 * INI_HANDLER_LINENO) and lets cfg_check_line see every line first. It stops the parse
 * after the first error. */
static char *cfg_read_line(char *str, int num, void *stream)
{
    cfg_ctx *c = stream;
    if (c->failed || c->left == 0 || num < 2)
        return NULL;
    size_t max = (size_t)num - 1;
    size_t n = c->left < max ? c->left : max;
    const char *nl = memchr(c->next, '\n', n);
    if (nl)
        n = (size_t)(nl - c->next) + 1;
    memcpy(str, c->next, n);
    str[n] = '\0';
    c->next += n;
    c->left -= n;
    c->lineno++;
    if (!nl && c->left > 0) {
        /* inih would cut the line in two and misnumber the rest of the file. */
        cfg_fail_at(c, c->lineno, "line longer than %d bytes", num - 3);
        return NULL;
    }
    return cfg_check_line(c, str) < 0 ? NULL : str;
}

static int cfg_key_index(cfg_section_kind kind, const char *name)
{
    for (size_t i = 0; i < CFG_COUNT(cfg_keys); i++)
        if (cfg_keys[i].section == kind && strcmp(cfg_keys[i].name, name) == 0)
            return (int)i;
    return -1;
}

static int cfg_key_set(cfg_ctx *c, const char *name, const char *value)
{
    if (c->kind == CFG_SEC_NONE)
        return cfg_fail_at(c, c->lineno, "key '%s': outside any section", name);
    int i = cfg_key_index(c->kind, name);
    if (i < 0)
        return cfg_fail_at(c, c->lineno, "key '%s': unknown key in [%s]", name, c->section);
    if (c->seen & ((uint64_t)1 << i))
        return cfg_fail_at(c, c->lineno, "key '%s': duplicate key in [%s]", name, c->section);
    c->seen |= (uint64_t)1 << i;
    c->key_line[i] = c->lineno;

    const cfg_key *k = &cfg_keys[i];
    char msg[CFG_MSG_MAX];
    int rc = k->parse(k, value, (char *)c->target + k->offset, msg, sizeof msg);
    if (rc == CFG_NOMEM)
        return cfg_nomem(c);
    if (rc != CFG_OK)
        return cfg_fail_at(c, c->lineno, "key '%s': %s", name, msg);
    return 0;
}

/* inih's handler: 1 when the key is good, 0 after recording why not. The section argument
 * is not used: c->kind and c->target, set by cfg_check_line, stand for the same section,
 * and inih truncates long section names. */
static int cfg_on_key(void *user, const char *section, const char *name, const char *value)
{
    return cfg_key_set(user, name, value) == 0;
}

/* ---- loading ------------------------------------------------------------------------ */

/* The monitor logs in to every node to follow lag and promotions. A node that asks for
 * SCRAM can only be answered with the plain password, so the monitor's user needs one. */
static int cfg_check_monitor(cfg_ctx *c)
{
    const cfg_config *cfg = c->cfg;
    const char *name = cfg->monitor_user;
    const cfg_user *u = name ? cfg_find_user(cfg, name) : NULL;
    if (name && !u)
        return cfg_fail_file(c, "monitor_user '%s': there is no [user.%s]", name, name);
    if (u && !u->password)
        return cfg_fail_file(c, "monitor_user '%s': [user.%s] has no password; the monitor needs a plain one",
                             name, name);
    if (u && !cfg_password_plain(u->password))
        return cfg_fail_file(
            c, "monitor_user '%s': [user.%s] needs a plain password, not an md5 or SCRAM secret", name, name);
    bool replicas = false;
    for (int i = 0; i < cfg->nshards; i++)
        replicas = replicas || cfg->shards[i].nreplicas > 0;
    if (replicas && !cfg_monitor_user(cfg))
        return cfg_fail_file(
            c, "replicas need a user with a plain password for the monitor: set monitor_user or "
               "give a [user.NAME] a plain password");
    /* The recovery of in-doubt transactions logs in to every primary on its own. */
    if (cfg->two_phase_commit && !cfg_monitor_user(cfg))
        return cfg_fail_file(c, "two_phase_commit = on needs a user with a plain password for its recovery: "
                                "set monitor_user or give a [user.NAME] a plain password");
    return 0;
}

/* Checks that need the whole file: shards numbered 0..K-1, the monitor's user, then fills
 * in derived values. */
static int cfg_finish(cfg_ctx *c)
{
    cfg_config *cfg = c->cfg;
    if (cfg_section_end(c) < 0)
        return -1;
    if (!c->shard_seen[0])
        return cfg_fail_file(c, "section [shard.0] is required");
    for (int i = 1; i < cfg->nshards; i++) {
        if (c->shard_seen[i])
            continue;
        int next = i + 1;
        while (!c->shard_seen[next]) /* shard nshards - 1 was seen, so this stops */
            next++;
        return cfg_fail_file(c, "[shard.%d] present but [shard.%d] missing", next, i);
    }
    if (cfg->client_tls != CFG_CTLS_DISABLE && (!cfg->tls_cert_file[0] || !cfg->tls_key_file[0]))
        return cfg_fail_file(c, "client_tls = %s needs tls_cert_file and tls_key_file",
                             cfg->client_tls == CFG_CTLS_ALLOW ? "allow" : "require");
    if (cfg->default_shard >= cfg->nshards)
        return cfg_fail_at(c, c->key_line[cfg_key_index(CFG_SEC_PGSHARD, "default_shard")],
                           "key 'default_shard': there is no [shard.%d] (the shards are 0 to %d)",
                           cfg->default_shard, cfg->nshards - 1);
    if (cfg_check_monitor(c) < 0)
        return -1;
    if (cfg->workers == 0) {
        int half = (cfg_available_cpus() + 1) / 2;
        cfg->workers = half > CFG_WORKERS_MAX ? CFG_WORKERS_MAX : half;
    }
    cfg->path = cfg_strndup(c->name, strlen(c->name));
    return cfg->path ? 0 : cfg_nomem(c);
}

/* The CPU quota of the cgroup a process is in, cgroup v2 only: the "0::PATH" line of its
 * cgroup file (/proc/self/cgroup), and root PATH/cpu.max (root: /sys/fs/cgroup) holding
 * "QUOTA PERIOD" or "max PERIOD". In whole CPUs rounded up; 0 when there is none or it
 * cannot be read. */
static int cfg_cgroup_cpus(const char *cgroup_file, const char *root)
{
    char line[512], path[1024];
    FILE *f = fopen(cgroup_file, "r");
    if (!f)
        return 0;
    bool found = false;
    while (!found && fgets(line, sizeof line, f))
        found = strncmp(line, "0::", 3) == 0;
    fclose(f);
    if (!found)
        return 0;
    line[strcspn(line, "\n")] = 0;
    snprintf(path, sizeof path, "%s%s/cpu.max", root, strcmp(line + 3, "/") == 0 ? "" : line + 3);
    if (!(f = fopen(path, "r")))
        return 0;
    char text[64] = "", *end;
    bool got = fgets(text, sizeof text, f) != NULL;
    fclose(f);
    long q = got ? strtol(text, &end, 10) : 0; /* "max" reads as 0: no quota */
    long period = got && end != text ? strtol(end, NULL, 10) : 0;
    return q > 0 && period > 0 ? (int)((q + period - 1) / period) : 0;
}

int cfg_available_cpus(void)
{
    cpu_set_t set;
    long n = 0;
    if (sched_getaffinity(0, sizeof set, &set) == 0)
        n = CPU_COUNT(&set);
    if (n < 1)
        n = sysconf(_SC_NPROCESSORS_ONLN);
    int quota = cfg_cgroup_cpus("/proc/self/cgroup", "/sys/fs/cgroup");
    if (quota > 0 && quota < n)
        n = quota;
    return n < 1 ? 1 : n > 4096 ? 4096 : (int)n;
}

static int cfg_parse(cfg_ctx *c)
{
    if (cfg_apply_defaults(c, CFG_SEC_PGSHARD, c->cfg) < 0)
        return -1;
    int line = ini_parse_stream(cfg_read_line, c, cfg_on_key, c);
    if (line == -2) /* inih's own line buffer, when it is built to use the heap */
        return cfg_nomem(c);
    if (c->oom)
        return -1;
    /* inih returns the line of its first error, which is ours or, if earlier, a syntax
     * error it found without calling the handler. */
    if (line > 0 && (!c->failed || line < c->err_line)) {
        c->failed = false;
        return cfg_fail_at(c, line, "syntax error");
    }
    if (c->failed)
        return -1;
    if (line != 0)
        return cfg_fail_file(c, "cannot be parsed");
    return cfg_finish(c);
}

int cfg_load_string(const char *text, const char *name, cfg_config **out, char *err, size_t errlen)
{
    cfg_ctx c = {.name = name ? name : "<string>",
                 .next = text,
                 .left = text ? strlen(text) : 0,
                 .err = err,
                 .errlen = errlen};
    *out = NULL;
    if (err && errlen)
        err[0] = '\0';
    c.cfg = calloc(1, sizeof *c.cfg);
    if (!c.cfg || cfg_parse(&c) < 0) {
        if ((!c.cfg || c.oom) && err && errlen)
            snprintf(err, errlen, "out of memory");
        cfg_free(c.cfg);
        return -1;
    }
    *out = c.cfg;
    return 0;
}

static int cfg_file_error(char *err, size_t errlen, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        if (vsnprintf(err, errlen, fmt, ap) < 0)
            err[0] = '\0';
        va_end(ap);
    }
    return -1;
}

/* Doubles *buf, keeping it on failure. */
static int cfg_grow(char **buf, size_t *cap)
{
    char *p = realloc(*buf, *cap * 2);
    if (!p)
        return -1;
    *buf = p;
    *cap *= 2;
    return 0;
}

/* Reads the whole file into a NUL-terminated buffer (*text, which the caller frees). A NUL
 * byte inside would silently end the config early, so it is an error. */
static int cfg_read_file(const char *path, char **text, char *err, size_t errlen)
{
    char ebuf[128];
    FILE *f = fopen(path, "rb");
    if (!f)
        return cfg_file_error(err, errlen, "%s: cannot open: %s", path, strerror_r(errno, ebuf, sizeof ebuf));
    size_t len = 0, cap = 4096;
    char *buf = malloc(cap);
    int rc = buf ? 0 : cfg_file_error(err, errlen, "out of memory");
    while (rc == 0) {
        size_t n = fread(buf + len, 1, cap - len - 1, f);
        len += n;
        if (n == 0 && ferror(f))
            rc = cfg_file_error(err, errlen, "%s: cannot read: %s", path,
                                strerror_r(errno, ebuf, sizeof ebuf));
        else if (n == 0)
            break;
        else if (len > CFG_FILE_MAX)
            rc = cfg_file_error(err, errlen, "%s: larger than %zu bytes", path, CFG_FILE_MAX);
        else if (len + 1 == cap)
            rc = cfg_grow(&buf, &cap) < 0 ? cfg_file_error(err, errlen, "out of memory") : 0;
    }
    fclose(f);
    if (rc == 0) {
        buf[len] = '\0';
        if (memchr(buf, '\0', len))
            rc = cfg_file_error(err, errlen, "%s: contains a NUL byte", path);
    }
    if (rc < 0) {
        free(buf);
        return rc;
    }
    *text = buf;
    return 0;
}

int cfg_load(const char *path, cfg_config **out, char *err, size_t errlen)
{
    char *text = NULL;
    *out = NULL;
    if (cfg_read_file(path, &text, err, errlen) < 0)
        return -1;
    int rc = cfg_load_string(text, path, out, err, errlen);
    free(text);
    return rc;
}

void cfg_free(cfg_config *cfg)
{
    if (!cfg)
        return;
    for (int i = 0; i < cfg->nusers; i++) {
        free(cfg->users[i].name);
        free(cfg->users[i].password);
    }
    free(cfg->users);
    free(cfg->shards);
    free(cfg->path);
    free(cfg->admin_users);
    free(cfg->monitor_user);
    free(cfg->catalog_dsn);
    free(cfg->migrate_user);
    free(cfg->tables);
    free(cfg);
}

const cfg_user *cfg_find_user(const cfg_config *cfg, const char *name)
{
    if (!cfg || !name)
        return NULL;
    return cfg_user_lookup(cfg, name, strlen(name));
}

const char *cfg_pool_mode_name(cfg_pool_mode m)
{
    return cfg_word_name(cfg_pool_modes, (int)m);
}

const char *cfg_auth_type_name(cfg_auth_type a)
{
    return cfg_word_name(cfg_auth_types, (int)a);
}

const char *cfg_server_tls_name(cfg_server_tls t)
{
    return cfg_word_name(cfg_server_tls_words, (int)t);
}

void cfg_tables_dbname(const cfg_config *cfg, char *out, size_t len)
{
    snprintf(out, len, "%s", cfg->monitor_dbname);
    PQconninfoOption *opts = cfg->catalog_dsn ? PQconninfoParse(cfg->catalog_dsn, NULL) : NULL;
    for (PQconninfoOption *o = opts; o != NULL && o->keyword != NULL; o++)
        if (strcmp(o->keyword, "dbname") == 0 && o->val != NULL && o->val[0] != '\0')
            snprintf(out, len, "%s", o->val);
    PQconninfoFree(opts);
}

void cfg_conninfo_make(cfg_conninfo *ci, const cfg_config *cfg, const char *host, const char *port,
                       const cfg_user *user, const char *db, const char *app, const char *timeout,
                       const char *options)
{
    int k = 0;
    const char *pairs[][2] = {
        {"host", host},
        {"port", port},
        {"user", user->name},
        {"password", user->password},
        {"dbname", db},
        {"application_name", app},
        {"connect_timeout", timeout},
        {"options", options},
        {"sslmode", cfg_server_tls_name(cfg->server_tls)},
        {"sslrootcert", cfg->server_tls >= CFG_STLS_VERIFY_CA ? cfg->server_tls_ca_file : NULL},
        {"gssencmode", "disable"},
    };
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
        if (!pairs[i][1])
            continue;
        ci->keys[k] = pairs[i][0];
        ci->vals[k++] = pairs[i][1];
    }
    ci->keys[k] = NULL;
    ci->vals[k] = NULL;
}

bool cfg_password_plain(const char *password)
{
    if (!password || strncmp(password, "SCRAM-SHA-256$", 14) == 0)
        return false;
    bool md5 = strncmp(password, "md5", 3) == 0 && strlen(password) == 35 &&
               strspn(password + 3, "0123456789abcdef") == 32;
    return !md5;
}

const cfg_user *cfg_migrate_user(const cfg_config *cfg)
{
    if (cfg && cfg->migrate_user) {
        const cfg_user *u = cfg_find_user(cfg, cfg->migrate_user);
        return u && cfg_password_plain(u->password) ? u : NULL;
    }
    return cfg_monitor_user(cfg);
}

const cfg_user *cfg_monitor_user(const cfg_config *cfg)
{
    if (!cfg)
        return NULL;
    if (cfg->monitor_user) {
        const cfg_user *u = cfg_find_user(cfg, cfg->monitor_user);
        return u && cfg_password_plain(u->password) ? u : NULL;
    }
    for (int i = 0; i < cfg->nusers; i++)
        if (cfg_password_plain(cfg->users[i].password))
            return &cfg->users[i];
    return NULL;
}

const char *cfg_balance_name(cfg_balance b)
{
    return cfg_word_name(cfg_balance_words, (int)b);
}

const char *cfg_ryw_name(cfg_ryw r)
{
    return cfg_word_name(cfg_ryw_words, (int)r);
}

const char *cfg_fallback_name(cfg_fallback f)
{
    return cfg_word_name(cfg_fallback_words, (int)f);
}

const char *cfg_unknown_functions_name(cfg_unknown_functions u)
{
    return cfg_word_name(cfg_unknown_functions_words, (int)u);
}

const char *cfg_key_type_name(cfg_key_type t)
{
    return t == CFG_KEY_AUTO ? "auto" : cfg_word_name(cfg_key_type_words, (int)t);
}

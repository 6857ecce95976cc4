/* The admin console (database "pgshard", for admin_users): SHOW commands answered as
 * result sets psql prints as tables, PAUSE, RESUME, RELOAD and SHUTDOWN. Also the snapshot that gathers pool
 * counters and client/server lists from every worker, used here and by /metrics. */
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "common/log.h"
#include "proxy/monitor.h"
#include "proxy/px.h"

const uint64_t px_hist_bounds_us[PX_HIST_BUCKETS - 1] = {
    500, 1000, 2000, 5000, 10000, 25000, 50000, 100000, 250000, 500000, 1000000, 5000000,
};

void px_hist_observe(uint64_t *hist, uint64_t us)
{
    int i = 0;
    while (i < PX_HIST_BUCKETS - 1 && us > px_hist_bounds_us[i])
        i++;
    hist[i]++;
}

/* ---- snapshots ---------------------------------------------------------------------- */

void px_snapshot_free(px_snapshot *s)
{
    for (int i = 0; i < s->nparts; i++)
        pgs_buf_free(&s->parts[i]);
    free(s);
}

static void snap_row_begin(pgs_buf *b, int ncols)
{
    pgs_buf_append_u8(b, PGS_BE_DATA_ROW);
    pgs_buf_append_be32(b, 0);
    pgs_buf_append_be16(b, (uint16_t)ncols);
}

/* One text column of a DataRow: its length, then the formatted value. */
#define snap_col(b, ...)                                                                                     \
    do {                                                                                                     \
        size_t at_ = (b)->len;                                                                               \
        pgs_buf_append_be32((b), 0);                                                                         \
        int n_ = pgs_buf_appendf((b), __VA_ARGS__);                                                          \
        pgs_buf_put_be32((b), at_, n_ < 0 ? 0 : (uint32_t)n_);                                               \
    } while (0)

static void snap_row_end(pgs_buf *b, size_t start)
{
    pgs_buf_put_be32(b, start + 1, (uint32_t)(b->len - start - 1));
}

static const char *const cl_state_names[] = {"startup", "auth",  "login",  "idle",  "waiting",
                                             "active",  "admin", "fanout", "closed"};
static const char *const sv_state_names[] = {"connecting", "tls",   "login", "idle",
                                             "active",     "reset", "closed"};

static void collect_pools(px_worker *w, pgs_buf *out)
{
    uint64_t now = uv_now(&w->loop);
    pgs_node *it, *tmp;
    pgs_list_each (&w->pools, it, tmp) {
        px_pool *p = pgs_container_of(it, px_pool, node);
        px_pool_row row;
        memset(&row, 0, sizeof row);
        snprintf(row.user, sizeof row.user, "%s", p->user->cfg->name);
        snprintf(row.db, sizeof row.db, "%s", p->db_name);
        row.shard = p->shard;
        row.cl_waiting = (int)(p->waiting.n + p->welcome_waiting.n);
        pgs_node *n;
        if ((n = pgs_list_first(&p->waiting)))
            row.maxwait_us = (now - pgs_container_of(n, px_client, wait_node)->wait_since) * 1000;
        pgs_node *si, *st;
        pgs_list_each (&p->servers, si, st) {
            px_server *sv = pgs_container_of(si, px_server, node);
            if (sv->state == SV_ACTIVE)
                row.sv_active++;
            else if (sv->state == SV_IDLE || sv->state == SV_RESET)
                row.sv_idle++;
            else
                row.sv_login++;
        }
        row.cl_active = row.sv_active;
        row.cl_idle = p->nclients - row.cl_active - (int)p->waiting.n;
        if (row.cl_idle < 0)
            row.cl_idle = 0;
        row.st = p->st;
        pgs_buf_append(out, &row, sizeof row);
    }
}

static void collect_clients(px_worker *w, pgs_buf *out)
{
    uint64_t now = uv_now(&w->loop);
    pgs_node *it, *tmp;
    pgs_list_each (&w->clients, it, tmp) {
        px_client *cl = pgs_container_of(it, px_client, node);
        struct sockaddr_storage ss;
        int len = sizeof ss;
        char addr[64] = "?";
        int port = 0;
        if (uv_tcp_getpeername(&cl->conn.tcp, (struct sockaddr *)&ss, &len) == 0) {
            if (ss.ss_family == AF_INET) {
                uv_ip4_name((struct sockaddr_in *)&ss, addr, sizeof addr);
                port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
            } else {
                uv_ip6_name((struct sockaddr_in6 *)&ss, addr, sizeof addr);
                port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
            }
        }
        size_t st = out->len;
        px_server *sv = px_client_server(cl);
        char why[96];
        snap_row_begin(out, 10);
        snap_col(out, "%d", w->id);
        snap_col(out, "%s", cl->user_name);
        snap_col(out, "%s", cl->db_name);
        snap_col(out, "%s", cl_state_names[cl->state]);
        snap_col(out, "%s", addr);
        snap_col(out, "%d", port);
        snap_col(out, "%llu", (unsigned long long)((now - cl->accepted_at) / 1000));
        snap_col(out, "%s", px_conn_is_tls(&cl->conn) ? "yes" : "no");
        snap_col(out, "%u", sv ? sv->be_pid : 0);
        snap_col(out, "%s", sv && px_pin_holds(sv) ? px_pin_reasons(sv->pins, why, sizeof why) : "");
        snap_row_end(out, st);
    }
}

static void collect_servers(px_worker *w, pgs_buf *out)
{
    uint64_t now = uv_now(&w->loop);
    pgs_node *it, *tmp;
    pgs_list_each (&w->pools, it, tmp) {
        px_pool *p = pgs_container_of(it, px_pool, node);
        pgs_node *si, *st2;
        pgs_list_each (&p->servers, si, st2) {
            px_server *sv = pgs_container_of(si, px_server, node);
            size_t st = out->len;
            char why[96];
            snap_row_begin(out, 10);
            snap_col(out, "%d", w->id);
            snap_col(out, "%s", p->user->cfg->name);
            snap_col(out, "%s", p->db_name);
            snap_col(out, "%s", sv_state_names[sv->state]);
            snap_col(out, "%u", sv->be_pid);
            snap_col(out, "%llu", (unsigned long long)((now - sv->since) / 1000));
            snap_col(out, "%c", sv->tx_status ? sv->tx_status : '?');
            snap_col(out, "%s", px_conn_is_tls(&sv->conn) ? "yes" : "no");
            snap_col(out, "%zu", sv->stmts.n);
            snap_col(out, "%s", px_pin_reasons(sv->pins, why, sizeof why));
            snap_row_end(out, st);
        }
    }
}

static void snap_finish_job(px_worker *w, const px_job *job)
{
    px_snapshot *s = job->arg;
    s->done(w, s);
}

/* One worker's part, copied on that worker's own thread. */
static void snap_collect_job(px_worker *w, const px_job *job)
{
    px_snapshot *s = job->arg;
    pgs_buf *out = &s->parts[w->id];
    if (s->kind == PX_SNAP_POOLS)
        collect_pools(w, out);
    else if (s->kind == PX_SNAP_CLIENTS)
        collect_clients(w, out);
    else
        collect_servers(w, out);
    if (atomic_fetch_sub(&s->pending, 1) != 1)
        return;
    px_job fin = {snap_finish_job, s, 0, 0};
    if (s->origin == w)
        snap_finish_job(w, &fin);
    else if (px_worker_post(s->origin, &fin) < 0)
        px_snapshot_free(s); /* the origin is stopping: nobody waits any more */
}

int px_snapshot_start(px_worker *origin, int kind, px_snap_done done, void *ctx, uint32_t ctx_id)
{
    px_proxy *px = origin->px;
    px_snapshot *s = calloc(1, sizeof *s + (size_t)px->nworkers * sizeof(pgs_buf));
    if (!s)
        return -1;
    s->kind = kind;
    s->origin = origin;
    s->done = done;
    s->ctx = ctx;
    s->ctx_id = ctx_id;
    s->nparts = px->nworkers;
    atomic_store(&s->pending, px->nworkers);
    for (int i = 0; i < px->nworkers; i++) {
        px_job job = {snap_collect_job, s, 0, 0};
        if (&px->workers[i] == origin)
            continue;
        if (px_worker_post(&px->workers[i], &job) < 0 && atomic_fetch_sub(&s->pending, 1) == 1) {
            snap_finish_job(origin, &job); /* cannot happen before origin's own part */
            return 0;
        }
    }
    /* The origin's own part last, synchronously: the others may already be done. */
    px_job self = {snap_collect_job, s, 0, 0};
    snap_collect_job(origin, &self);
    return 0;
}

/* Sums the pool rows of all workers by (user, database). */
void px_pool_rows_merge(px_snapshot *s, pgs_buf *out, size_t *n)
{
    *n = 0;
    for (int i = 0; i < s->nparts; i++) {
        const px_pool_row *rows = (const px_pool_row *)s->parts[i].data;
        size_t m = s->parts[i].len / sizeof(px_pool_row);
        for (size_t j = 0; j < m; j++) {
            px_pool_row *acc = NULL;
            for (size_t k = 0; k < *n; k++) {
                px_pool_row *r = (px_pool_row *)out->data + k;
                if (strcmp(r->user, rows[j].user) == 0 && strcmp(r->db, rows[j].db) == 0 &&
                    r->shard == rows[j].shard)
                    acc = r;
            }
            if (!acc) {
                if (pgs_buf_append(out, &rows[j], sizeof rows[j]) < 0)
                    return;
                (*n)++;
                continue;
            }
            const px_pool_row *r = &rows[j];
            acc->cl_active += r->cl_active;
            acc->cl_waiting += r->cl_waiting;
            acc->cl_idle += r->cl_idle;
            acc->sv_active += r->sv_active;
            acc->sv_idle += r->sv_idle;
            acc->sv_login += r->sv_login;
            if (r->maxwait_us > acc->maxwait_us)
                acc->maxwait_us = r->maxwait_us;
            uint64_t *a = (uint64_t *)&acc->st;
            const uint64_t *b = (const uint64_t *)&r->st;
            for (size_t k = 0; k < sizeof acc->st / sizeof(uint64_t); k++)
                a[k] += b[k];
        }
    }
}

/* ---- the console -------------------------------------------------------------------- */

static void admin_complete(px_client *cl, pgs_buf *b, const char *tag)
{
    pgs_msg_complete(b, tag);
    pgs_msg_ready(b, PGS_TX_IDLE);
    px_conn_send_buf(&cl->conn, b);
}

static unsigned count_rows(const pgs_buf *b)
{
    unsigned n = 0;
    pgs_frame f;
    if (!b->data)
        return 0;
    for (size_t off = 0; pgs_frame_read(b->data + off, b->len - off, PGS_MAX_MSG_LEN, &f) == 1;
         off += f.total)
        n++;
    return n;
}

/* The admin client a finished snapshot or poll was for, if it is still there: identified
 * by address and cancel key, since the address may have been reused by then. */
static px_client *admin_find(px_worker *w, const px_client *who, uint32_t pid)
{
    pgs_node *it, *tmp;
    pgs_list_each (&w->clients, it, tmp) {
        px_client *cl = pgs_container_of(it, px_client, node);
        if (cl == who && cl->key_pid == pid && cl->state == CL_ADMIN)
            return cl;
    }
    return NULL;
}

static void admin_resume(px_client *cl)
{
    cl->admin_busy = false;
    px_client_process(cl);
}

static void admin_list_done(px_worker *w, px_snapshot *s)
{
    static const char *const ccols[] = {"worker", "user",  "database", "state",      "addr",
                                        "port",   "age_s", "tls",      "server_pid", "pinned"};
    static const char *const scols[] = {"worker",      "user", "database", "state",    "pid",
                                        "state_age_s", "tx",   "tls",      "prepared", "pinned"};
    px_client *cl = admin_find(w, s->ctx, s->ctx_id);
    if (cl) {
        pgs_buf b = PGS_BUF_INIT;
        pgs_msg_row_desc_text(&b, s->kind == PX_SNAP_CLIENTS ? ccols : scols, 10);
        unsigned n = 0;
        for (int i = 0; i < s->nparts; i++) {
            pgs_buf_append(&b, s->parts[i].data, s->parts[i].len);
            n += count_rows(&s->parts[i]);
        }
        char tag[32];
        snprintf(tag, sizeof tag, "SHOW %u", n);
        admin_complete(cl, &b, tag);
        pgs_buf_free(&b);
        admin_resume(cl);
    }
    px_snapshot_free(s);
}

static void admin_pools_done(px_worker *w, px_snapshot *s)
{
    static const char *const pcols[] = {"user",       "database",  "cl_active", "cl_waiting",
                                        "cl_idle",    "sv_active", "sv_idle",   "sv_login",
                                        "maxwait_ms", "pool_size", "shard"};
    static const char *const tcols[] = {"user",        "database",       "xacts",        "queries",
                                        "errors",      "bytes_received", "bytes_sent",   "xact_time_ms",
                                        "avg_xact_us", "waits",          "wait_time_ms", "shard"};
    px_client *cl = admin_find(w, s->ctx, s->ctx_id);
    if (cl) {
        pgs_buf rows = PGS_BUF_INIT, b = PGS_BUF_INIT;
        size_t n;
        px_pool_rows_merge(s, &rows, &n);
        bool is_stats = cl->admin_show_stats;
        pgs_msg_row_desc_text(&b, is_stats ? tcols : pcols, is_stats ? 12 : 11);
        for (size_t i = 0; i < n; i++) {
            const px_pool_row *r = (const px_pool_row *)rows.data + i;
            size_t st = b.len;
            if (is_stats) {
                snap_row_begin(&b, 12);
                snap_col(&b, "%s", r->user);
                snap_col(&b, "%s", r->db);
                snap_col(&b, "%llu", (unsigned long long)r->st.xacts);
                snap_col(&b, "%llu", (unsigned long long)r->st.queries);
                snap_col(&b, "%llu", (unsigned long long)r->st.errors);
                snap_col(&b, "%llu", (unsigned long long)r->st.bytes_in);
                snap_col(&b, "%llu", (unsigned long long)r->st.bytes_out);
                snap_col(&b, "%llu", (unsigned long long)(r->st.xact_us / 1000));
                snap_col(&b, "%llu", (unsigned long long)(r->st.xacts ? r->st.xact_us / r->st.xacts : 0));
                snap_col(&b, "%llu", (unsigned long long)r->st.waits);
                snap_col(&b, "%llu", (unsigned long long)(r->st.wait_us / 1000));
                snap_col(&b, "%d", r->shard);
            } else {
                snap_row_begin(&b, 11);
                snap_col(&b, "%s", r->user);
                snap_col(&b, "%s", r->db);
                snap_col(&b, "%d", r->cl_active);
                snap_col(&b, "%d", r->cl_waiting);
                snap_col(&b, "%d", r->cl_idle);
                snap_col(&b, "%d", r->sv_active);
                snap_col(&b, "%d", r->sv_idle);
                snap_col(&b, "%d", r->sv_login);
                snap_col(&b, "%llu", (unsigned long long)(r->maxwait_us / 1000));
                snap_col(&b, "%d", w->conf->cfg->pool_size * w->px->nworkers);
                snap_col(&b, "%d", r->shard);
            }
            snap_row_end(&b, st);
        }
        char tag[32];
        snprintf(tag, sizeof tag, "SHOW %zu", n);
        admin_complete(cl, &b, tag);
        pgs_buf_free(&b);
        pgs_buf_free(&rows);
        admin_resume(cl);
    }
    px_snapshot_free(s);
}

static int admin_snapshot(px_client *cl, int kind, px_snap_done done)
{
    cl->admin_busy = true;
    if (px_snapshot_start(cl->conn.w, kind, done, cl, cl->key_pid) < 0) {
        cl->admin_busy = false;
        px_client_fatal(cl, PGS_SQLSTATE_OUT_OF_MEMORY, "out of memory");
        return -1;
    }
    return 0;
}

static int admin_show_pools(px_client *cl)
{
    cl->admin_show_stats = false;
    return admin_snapshot(cl, PX_SNAP_POOLS, admin_pools_done);
}

static int admin_show_stats(px_client *cl)
{
    cl->admin_show_stats = true;
    return admin_snapshot(cl, PX_SNAP_POOLS, admin_pools_done);
}

static int admin_show_clients(px_client *cl)
{
    return admin_snapshot(cl, PX_SNAP_CLIENTS, admin_list_done);
}
static int admin_show_servers(px_client *cl)
{
    return admin_snapshot(cl, PX_SNAP_SERVERS, admin_list_done);
}

static void admin_kv(pgs_buf *b, const char *k, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void admin_kv(pgs_buf *b, const char *k, const char *fmt, ...)
{
    char v[CFG_PATH_MAX + 32];
    va_list ap;
    va_start(ap, fmt);
    if (vsnprintf(v, sizeof v, fmt, ap) < 0)
        v[0] = 0;
    va_end(ap);
    size_t st = b->len;
    snap_row_begin(b, 2);
    snap_col(b, "%s", k);
    snap_col(b, "%s", v);
    snap_row_end(b, st);
}

/* catalog_dsn as SHOW CONFIG shows it: the conninfo keywords it sets, but the password. */
static void admin_dsn_shown(const char *dsn, char *out, size_t cap)
{
    PQconninfoOption *opts = dsn ? PQconninfoParse(dsn, NULL) : NULL;
    size_t used = 0;
    out[0] = '\0';
    for (PQconninfoOption *o = opts; o && o->keyword && used < cap; o++) {
        if (!o->val || strcmp(o->keyword, "password") == 0)
            continue;
        int n = snprintf(out + used, cap - used, "%s%s=%s", used ? " " : "", o->keyword, o->val);
        if (n < 0)
            break;
        used += (size_t)n;
    }
    PQconninfoFree(opts);
}

/* [table.NAME] rows: how the table is sharded, with the key type in force. */
static void admin_config_tables(pgs_buf *b, const px_tables *t)
{
    for (int i = 0; i < px_tables_count(t); i++) {
        const px_table *pt = px_tables_at(t, i);
        static const char *const kinds[] = {"int", "text", "uuid"};
        char key[2 * CFG_NAME_MAX + 16];
        snprintf(key, sizeof key, "table.%s%s%s", pt->schema, pt->schema[0] ? "." : "", pt->name);
        if (pt->omnisharded)
            admin_kv(b, key, "omnisharded");
        else
            admin_kv(b, key, "shard_key %s (%s)", pt->shard_key, kinds[pt->key_type % 3]);
    }
}

static int admin_show_config(px_client *cl)
{
    static const char *const cols[] = {"key", "value"};
    static const char *const ctls[] = {"disable", "allow", "require"};
    const cfg_config *c = cl->conn.w->conf->cfg;
    pgs_buf b = PGS_BUF_INIT;
    pgs_msg_row_desc_text(&b, cols, 2);
    admin_kv(&b, "config_file", "%s", c->path);
    admin_kv(&b, "listen_addr", "%s", c->listen_addr);
    admin_kv(&b, "listen_port", "%u", c->listen_port);
    admin_kv(&b, "workers", "%d", c->workers);
    admin_kv(&b, "pool_mode", "%s", cfg_pool_mode_name(c->pool_mode));
    admin_kv(&b, "pool_size", "%d", c->pool_size);
    admin_kv(&b, "max_client_conn", "%d", c->max_client_conn);
    admin_kv(&b, "auth_type", "%s", cfg_auth_type_name(c->auth_type));
    admin_kv(&b, "query_wait_timeout", "%.3f", c->query_wait_timeout_ms / 1000.0);
    admin_kv(&b, "server_idle_timeout", "%.3f", c->server_idle_timeout_ms / 1000.0);
    admin_kv(&b, "server_connect_timeout", "%.3f", c->server_connect_timeout_ms / 1000.0);
    admin_kv(&b, "server_keepalive_idle", "%d", c->server_keepalive_idle);
    admin_kv(&b, "server_keepalive_interval", "%d", c->server_keepalive_interval);
    admin_kv(&b, "server_keepalive_count", "%d", c->server_keepalive_count);
    admin_kv(&b, "server_tcp_user_timeout_ms", "%u", c->server_tcp_user_timeout_ms);
    admin_kv(&b, "client_login_timeout", "%.3f", c->client_login_timeout_ms / 1000.0);
    admin_kv(&b, "client_tls", "%s", ctls[c->client_tls]);
    admin_kv(&b, "server_tls", "%s", cfg_server_tls_name(c->server_tls));
    admin_kv(&b, "server_tls_ca_file", "%s", c->server_tls_ca_file);
    admin_kv(&b, "admin_users", "%s", c->admin_users ? c->admin_users : "");
    admin_kv(&b, "metrics_port", "%u", c->metrics_port);
    for (int i = 0; i < c->nshards; i++) {
        char key[64];
        snprintf(key, sizeof key, "shard.%d.primary", i);
        admin_kv(&b, key, "%s:%u", c->shards[i].primary.host, c->shards[i].primary.port);
        for (int r = 0; r < c->shards[i].nreplicas; r++) {
            const cfg_replica *rp = &c->shards[i].replicas[r];
            snprintf(key, sizeof key, "shard.%d.replica.%d", i, r + 1);
            admin_kv(&b, key, "%s:%u@%d", rp->node.host, rp->node.port, rp->weight);
        }
        snprintf(key, sizeof key, "shard.%d.balance", i);
        admin_kv(&b, key, "%s", cfg_balance_name(c->shards[i].balance));
    }
    admin_kv(&b, "read_your_writes", "%s", c->read_your_writes == CFG_RYW_OFF ? "off" : "session");
    admin_kv(&b, "max_lag_bytes", "%llu", (unsigned long long)c->max_lag_bytes);
    admin_kv(&b, "max_lag_ms", "%u", c->max_lag_ms);
    admin_kv(&b, "lag_poll_ms", "%u", c->lag_poll_ms);
    admin_kv(&b, "replica_fallback", "%s", c->replica_fallback == CFG_FALLBACK_ERROR ? "error" : "primary");
    admin_kv(&b, "primary_wait_ms", "%u", c->primary_wait_ms);
    admin_kv(&b, "unknown_functions", "%s",
             c->unknown_functions == CFG_UNKNOWN_FUNC_REPLICA ? "replica" : "primary");
    /* The sharding keys are fixed at start: shown from the startup config. */
    const cfg_config *sc = cl->conn.w->px->cfg;
    char dsn[CFG_PATH_MAX];
    admin_dsn_shown(sc->catalog_dsn, dsn, sizeof dsn);
    admin_kv(&b, "buckets", "%u", sc->buckets);
    admin_kv(&b, "catalog_dsn", "%s", dsn);
    admin_kv(&b, "default_shard", "%d", sc->default_shard);
    admin_kv(&b, "allow_cross_shard_writes", "%s", c->allow_cross_shard_writes ? "on" : "off");
    admin_kv(&b, "two_phase_commit", "%s", sc->two_phase_commit ? "on" : "off");
    admin_kv(&b, "two_phase_recovery_interval_ms", "%u", sc->two_phase_recovery_interval_ms);
    admin_kv(&b, "two_phase_recovery_grace_ms", "%u", sc->two_phase_recovery_grace_ms);
    admin_config_tables(&b, px_catalog_tables(cl->conn.w->px->cat));
    admin_complete(cl, &b, "SHOW");
    pgs_buf_free(&b);
    return 0;
}

static const char *const health_names[] = {"unknown", "up", "down"};
static const char *const circuit_names[] = {"closed", "open", "half_open"};

/* One row per node of every shard, from the monitor's newest snapshot. */
static int admin_show_replicas(px_client *cl)
{
    static const char *const cols[] = {"shard",       "node",      "role",   "host",    "port",   "health",
                                       "in_recovery", "lag_bytes", "lag_ms", "circuit", "weight", "reads"};
    px_worker *w = cl->conn.w;
    const cfg_config *c = w->px->cfg;
    const px_status *st = w->px->mon ? px_route_status(w) : NULL;
    pgs_buf b = PGS_BUF_INIT;
    pgs_msg_row_desc_text(&b, cols, 12);
    for (int s = 0; s < c->nshards; s++) {
        const cfg_shard *cs = &c->shards[s];
        for (int i = 0; i <= cs->nreplicas; i++) {
            const cfg_node *node = i == 0 ? &cs->primary : &cs->replicas[i - 1].node;
            const px_node_status *ns = st ? &st->shards[s].nodes[i] : &(px_node_status){0};
            bool primary = st ? st->shards[s].primary == i : i == 0;
            size_t at = b.len;
            snap_row_begin(&b, 12);
            snap_col(&b, "%d", s);
            snap_col(&b, "%d", i);
            snap_col(&b, "%s", primary ? "primary" : "replica");
            snap_col(&b, "%s", node->host);
            snap_col(&b, "%u", node->port);
            snap_col(&b, "%s", health_names[ns->health % 3]);
            snap_col(&b, "%s", ns->in_recovery ? "t" : "f");
            snap_col(&b, "%llu", (unsigned long long)ns->lag_bytes);
            snap_col(&b, "%u", ns->lag_ms);
            snap_col(&b, "%s", circuit_names[ns->circuit % 3]);
            snap_col(&b, "%d", i == 0 ? 1 : cs->replicas[i - 1].weight);
            snap_col(&b, "%llu",
                     w->px->mon ? (unsigned long long)atomic_load(px_monitor_reads(w->px->mon, s, i)) : 0ull);
            snap_row_end(&b, at);
        }
    }
    admin_complete(cl, &b, "SHOW");
    pgs_buf_free(&b);
    return 0;
}

/* host:port, or [address]:port for IPv6, appended to b. */
static void admin_append_node(pgs_buf *b, const cfg_node *node)
{
    bool v6 = strchr(node->host, ':') != NULL;
    pgs_buf_appendf(b, "%s%s%s:%u", v6 ? "[" : "", node->host, v6 ? "]" : "", node->port);
}

static const cfg_node *admin_node(const cfg_shard *cs, int i)
{
    return i == 0 ? &cs->primary : &cs->replicas[i - 1].node;
}

static int admin_count_override(void *arg, const char *tenant, size_t len, uint32_t shard)
{
    uint32_t *per_shard = arg;
    per_shard[shard]++;
    return 0;
}

/* One row per shard from the newest map snapshot: the buckets it owns, its tenant
 * overrides, its nodes (the primary as the monitor sees it after a failover) and the map's
 * version. */
static int admin_show_shards(px_client *cl)
{
    static const char *const cols[] = {"shard", "buckets", "overrides", "primary", "replicas", "map_version"};
    px_worker *w = cl->conn.w;
    const cfg_config *c = w->px->cfg;
    const sm_map *m = px_catalog_map(w->px->cat, w->id);
    const px_status *st = w->px->mon ? px_route_status(w) : NULL;
    uint32_t nshards = sm_map_nshards(m);
    uint32_t *counts = calloc((size_t)nshards * 2, sizeof *counts); /* buckets, then overrides */
    if (!counts) {
        px_client_fatal(cl, PGS_SQLSTATE_OUT_OF_MEMORY, "out of memory");
        return -1;
    }
    for (uint32_t bk = 0; bk < sm_map_buckets(m); bk++)
        counts[sm_map_bucket_shard(m, bk)]++;
    sm_map_each_override(m, admin_count_override, counts + nshards);
    pgs_buf b = PGS_BUF_INIT, nodes = PGS_BUF_INIT;
    pgs_msg_row_desc_text(&b, cols, 6);
    for (int s = 0; s < c->nshards && (uint32_t)s < nshards; s++) {
        const cfg_shard *cs = &c->shards[s];
        int primary = st ? st->shards[s].primary : 0;
        size_t at = b.len;
        snap_row_begin(&b, 6);
        snap_col(&b, "%d", s);
        snap_col(&b, "%u", counts[s]);
        snap_col(&b, "%u", counts[nshards + (uint32_t)s]);
        pgs_buf_clear(&nodes);
        admin_append_node(&nodes, admin_node(cs, primary));
        snap_col(&b, "%.*s", (int)nodes.len, (const char *)nodes.data);
        pgs_buf_clear(&nodes);
        for (int i = 0; i <= cs->nreplicas; i++) {
            if (i == primary)
                continue;
            if (nodes.len)
                pgs_buf_append(&nodes, ", ", 2);
            admin_append_node(&nodes, admin_node(cs, i));
        }
        snap_col(&b, "%.*s", (int)nodes.len, nodes.len ? (const char *)nodes.data : "");
        snap_col(&b, "%llu", (unsigned long long)sm_map_version(m));
        snap_row_end(&b, at);
    }
    admin_complete(cl, &b, "SHOW");
    pgs_buf_free(&b);
    pgs_buf_free(&nodes);
    free(counts);
    return 0;
}

static const char *const move_state_names[] = {"running", "freezing", "flipped", "failed"};

/* A move's keys as SHOW MIGRATIONS writes them: "tenant 42", or "buckets 17,18" (the
 * first few of a long list, then how many). */
static void admin_move_keys(pgs_buf *b, const sm_move *mv)
{
    if (mv->tenant) {
        pgs_buf_appendf(b, "tenant %.*s", (int)(mv->tenant_len < 200 ? mv->tenant_len : 200), mv->tenant);
        return;
    }
    pgs_buf_appendf(b, "buckets ");
    for (size_t i = 0; i < mv->nbuckets && i < 16; i++)
        pgs_buf_appendf(b, "%s%u", i ? "," : "", mv->buckets[i]);
    if (mv->nbuckets > 16)
        pgs_buf_appendf(b, ",... (%zu buckets)", mv->nbuckets);
}

/* The active moves of the newest map, with the clients this proxy holds for each now. */
static int admin_show_migrations(px_client *cl)
{
    static const char *const cols[] = {"id", "source", "target", "keys", "state", "freeze_seq", "held"};
    px_worker *w = cl->conn.w;
    const sm_map *m = px_catalog_map(w->px->cat, w->id);
    pgs_buf b = PGS_BUF_INIT, keys = PGS_BUF_INIT;
    pgs_msg_row_desc_text(&b, cols, 7);
    for (size_t i = 0; i < sm_map_move_count(m); i++) {
        const sm_move *mv = sm_map_move(m, i);
        size_t at = b.len;
        pgs_buf_clear(&keys);
        admin_move_keys(&keys, mv);
        snap_row_begin(&b, 7);
        snap_col(&b, "%lld", (long long)mv->id);
        snap_col(&b, "%u", mv->source);
        snap_col(&b, "%u", mv->target);
        snap_col(&b, "%.*s", (int)keys.len, keys.len ? (const char *)keys.data : "");
        snap_col(&b, "%s", move_state_names[mv->state < 4 ? mv->state : 0]);
        snap_col(&b, "%d", (int)mv->freeze_seq);
        snap_col(&b, "%u", px_move_held(w->px, mv->id));
        snap_row_end(&b, at);
    }
    admin_complete(cl, &b, "SHOW");
    pgs_buf_free(&b);
    pgs_buf_free(&keys);
    return 0;
}

static int admin_show_version(px_client *cl)
{
    static const char *const cols[] = {"version"};
    pgs_buf b = PGS_BUF_INIT;
    pgs_msg_row_desc_text(&b, cols, 1);
    size_t st = b.len;
    snap_row_begin(&b, 1);
    snap_col(&b, "pgshard %s", PGS_VERSION);
    snap_row_end(&b, st);
    admin_complete(cl, &b, "SHOW");
    pgs_buf_free(&b);
    return 0;
}

/* SHUTDOWN and RELOAD do what the signal does, so there is one path for each. */
static int admin_signal(px_client *cl, const char *tag, int signum)
{
    pgs_info("admin_command", "%s from the admin console by %s", tag, cl->user_name);
    pgs_buf b = PGS_BUF_INIT;
    admin_complete(cl, &b, tag);
    pgs_buf_free(&b);
    kill(getpid(), signum);
    return 0;
}

static int admin_shutdown(px_client *cl)
{
    return admin_signal(cl, "SHUTDOWN", SIGTERM);
}
static int admin_reload(px_client *cl)
{
    return admin_signal(cl, "RELOAD", SIGHUP);
}

/* PAUSE answers once no server connection is running a client's transaction any more:
 * it polls with snapshots. The poll owns a timer, freed in its close callback. */
typedef struct admin_pause_poll {
    uv_timer_t timer;
    px_client *cl;
    uint32_t pid;
} admin_pause_poll;

static void admin_pause_free(uv_handle_t *h)
{
    free(h->data);
}

static void admin_pause_check(uv_timer_t *t);

static void admin_pause_done(px_worker *w, px_snapshot *s)
{
    admin_pause_poll *ap = s->ctx;
    px_client *cl = admin_find(w, ap->cl, ap->pid);
    pgs_buf rows = PGS_BUF_INIT;
    size_t n;
    int active = 0;
    px_pool_rows_merge(s, &rows, &n);
    for (size_t i = 0; i < n; i++)
        active += ((const px_pool_row *)rows.data)[i].sv_active;
    pgs_buf_free(&rows);
    px_snapshot_free(s);
    if (cl && active > 0 && atomic_load(&w->px->paused) && !atomic_load(&w->px->stopping)) {
        uv_timer_start(&ap->timer, admin_pause_check, 50, 0);
        return;
    }
    if (cl) {
        pgs_buf b = PGS_BUF_INIT;
        admin_complete(cl, &b, "PAUSE");
        pgs_buf_free(&b);
        admin_resume(cl);
    }
    uv_close((uv_handle_t *)&ap->timer, admin_pause_free);
}

/* The client may have left since the last poll: the worker comes from the timer's loop and
 * the client, when still there, from admin_find. A snapshot that cannot be made (out of
 * memory) ends the PAUSE as a timer that cannot be started does: undone, with 53200. */
static void admin_pause_check(uv_timer_t *t)
{
    admin_pause_poll *ap = t->data;
    px_worker *w = pgs_container_of(t->loop, px_worker, loop);
    if (px_snapshot_start(w, PX_SNAP_POOLS, admin_pause_done, ap, 0) == 0)
        return;
    atomic_store(&w->px->paused, false);
    px_client *cl = admin_find(w, ap->cl, ap->pid);
    if (cl)
        px_client_fatal(cl, PGS_SQLSTATE_OUT_OF_MEMORY, "out of memory");
    uv_close((uv_handle_t *)&ap->timer, admin_pause_free);
}

static int admin_pause(px_client *cl)
{
    admin_pause_poll *ap = calloc(1, sizeof *ap);
    if (!ap) {
        px_client_fatal(cl, PGS_SQLSTATE_OUT_OF_MEMORY, "out of memory");
        return -1;
    }
    atomic_store(&cl->conn.w->px->paused, true);
    pgs_info("pause", "PAUSE from the admin console by %s: new transactions wait", cl->user_name);
    ap->cl = cl;
    ap->pid = cl->key_pid;
    if (uv_timer_init(&cl->conn.w->loop, &ap->timer) < 0) {
        atomic_store(&cl->conn.w->px->paused, false);
        free(ap);
        px_client_fatal(cl, PGS_SQLSTATE_OUT_OF_MEMORY, "pgshard: cannot start a timer for PAUSE");
        return -1;
    }
    ap->timer.data = ap;
    cl->admin_busy = true;
    uv_timer_start(&ap->timer, admin_pause_check, 0, 0);
    return 0;
}

static void admin_resume_job(px_worker *w, const px_job *job)
{
    (void)job;
    pgs_node *it, *tmp;
    pgs_list_each (&w->pools, it, tmp)
        px_pool_resume(pgs_container_of(it, px_pool, node));
}

static int admin_resume_cmd(px_client *cl)
{
    px_proxy *px = cl->conn.w->px;
    atomic_store(&px->paused, false);
    pgs_info("resume", "RESUME from the admin console by %s", cl->user_name);
    for (int i = 0; i < px->nworkers; i++) {
        px_job job = {admin_resume_job, NULL, 0, 0};
        if (&px->workers[i] == cl->conn.w)
            admin_resume_job(cl->conn.w, &job);
        else
            px_worker_post(&px->workers[i], &job);
    }
    pgs_buf b = PGS_BUF_INIT;
    admin_complete(cl, &b, "RESUME");
    pgs_buf_free(&b);
    return 0;
}

/* SHOW ROUTE <query>: the shard and role the query would get, and why (the key, its bucket,
 * an override; or the refusal). The query is analysed, not run. */
static int admin_show_route(px_client *cl, const char *sql, size_t len)
{
    static const char *const cols[] = {"shard", "role", "source", "key", "bucket", "override", "detail"};
    px_route_why why;
    px_route_explain(cl, sql, len, &why);
    px_sk_result *sk = &why.sk;
    prs_scatter plan;
    bool all = sk->verdict == PX_SK_ALL;
    if (all) {
        int r = px_route_plan(cl, sql, len, &plan);
        if (r != 0) {
            sk->verdict = PX_SK_REFUSE;
            snprintf(sk->sqlstate, sizeof sk->sqlstate, "%s",
                     r < 0 ? PGS_SQLSTATE_OUT_OF_MEMORY : plan.sqlstate);
            snprintf(sk->msg, sizeof sk->msg, "%s", r < 0 ? "out of memory" : plan.msg);
            prs_scatter_free(&plan);
            all = false;
        }
    }
    bool refused = sk->verdict == PX_SK_REFUSE;
    static const struct {
        uint8_t verdict;
        const char *detail;
    } wide[] = {
        {PX_SK_EVERY, "DDL on every shard, one after the other"},
        {PX_SK_WRITE_ALL, "write on every shard, one distributed transaction, rows and counts of all"},
        {PX_SK_WRITE_OMNI, "write of omnisharded tables on every shard, one distributed transaction"},
    };
    const char *wide_detail = NULL;
    for (size_t i = 0; i < sizeof wide / sizeof wide[0]; i++)
        if (sk->verdict == wide[i].verdict)
            wide_detail = wide[i].detail;
    pgs_buf b = PGS_BUF_INIT;
    pgs_msg_row_desc_text(&b, cols, 7);
    size_t at = b.len;
    snap_row_begin(&b, 7);
    if (refused)
        snap_col(&b, "%s", "");
    else if (all || wide_detail)
        snap_col(&b, "%s", "all");
    else
        snap_col(&b, "%d", why.shard);
    snap_col(&b, "%s", refused ? "" : why.replica ? "replica" : "primary");
    snap_col(&b, "%s", refused ? "refused" : sk->source);
    char key[PX_SK_NAME_MAX + 1];
    snap_col(&b, "%s", px_sk_key_text(sk, key, sizeof key));
    if (sk->has_key)
        snap_col(&b, "%u", sk->why.bucket);
    else
        snap_col(&b, "%s", "");
    snap_col(&b, "%s", sk->has_key ? (sk->why.override ? "yes" : "no") : "");
    if (refused) {
        snap_col(&b, "%s: %s", sk->sqlstate, sk->msg);
    } else if (wide_detail) {
        snap_col(&b, "%s", wide_detail);
    } else if (all) {
        char steps[512] = "";
        prs_scatter_describe(&plan, steps, sizeof steps);
        snap_col(&b, "read on every shard: %s; %s", plan.sql, steps);
        prs_scatter_free(&plan);
    } else {
        snap_col(&b, "%s", why.read ? "read" : "write");
    }
    snap_row_end(&b, at);
    admin_complete(cl, &b, "SHOW");
    pgs_buf_free(&b);
    return 0;
}

static const struct {
    const char *cmd;
    int (*fn)(px_client *cl);
} admin_commands[] = {
    {"show pools", admin_show_pools},
    {"show clients", admin_show_clients},
    {"show servers", admin_show_servers},
    {"show stats", admin_show_stats},
    {"show config", admin_show_config},
    {"show version", admin_show_version},
    {"shutdown", admin_shutdown},
    {"reload", admin_reload},
    {"pause", admin_pause},
    {"resume", admin_resume_cmd},
    {"show replicas", admin_show_replicas},
    {"show shards", admin_show_shards},
    {"show migrations", admin_show_migrations},
};

/* "  SHOW   pools ; " -> "show pools" */
static void admin_normalize(const char *in, size_t n, char *out, size_t cap)
{
    size_t o = 0;
    bool space = false;
    for (size_t i = 0; i < n && in[i]; i++) {
        unsigned char ch = (unsigned char)in[i];
        if (ch == ';')
            break;
        if (ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r') {
            space = o > 0;
            continue;
        }
        if (space && o + 1 < cap)
            out[o++] = ' ';
        space = false;
        if (o + 1 < cap)
            out[o++] = (char)(ch >= 'A' && ch <= 'Z' ? ch + 32 : ch);
    }
    out[o] = 0;
}

static void admin_error(px_client *cl, const char *sqlstate, const char *msg, bool ready)
{
    pgs_buf b = PGS_BUF_INIT;
    pgs_msg_error(&b, "ERROR", sqlstate, "%s", msg);
    if (ready)
        pgs_msg_ready(&b, PGS_TX_IDLE);
    px_conn_send_buf(&cl->conn, &b);
    pgs_buf_free(&b);
}

/* One message of an admin client. Same return convention as the other steps. */
px_step px_admin_step(px_client *cl)
{
    px_conn *c = &cl->conn;
    if (cl->admin_busy)
        return PX_STEP_WAIT;
    size_t avail = c->in.len - c->in_pos;
    pgs_frame f;
    int r = pgs_frame_read(px_conn_at(c), avail, 65536, &f);
    if (r == 0 || (r > 0 && avail < f.total))
        return PX_STEP_WAIT;
    if (r < 0) {
        px_client_fatal(cl, PGS_SQLSTATE_PROTOCOL_VIOLATION, "invalid message length");
        return PX_STEP_CLOSED;
    }
    c->in_pos += f.total;
    c->fwd_mark = c->in_pos;
    if (f.type == PGS_FE_TERMINATE) {
        px_client_close(cl);
        return PX_STEP_CLOSED;
    }
    if (f.type == PGS_FE_SYNC) {
        admin_error(cl, PGS_SQLSTATE_FEATURE_NOT_SUPPORTED, "the admin console takes simple queries only",
                    true);
        return PX_STEP_AGAIN;
    }
    if (f.type != PGS_FE_QUERY)
        return PX_STEP_AGAIN; /* extended-protocol messages: answered at their Sync */
    char cmd[128];
    const char *text = (const char *)c->in.data + c->in_pos - f.total + PGS_HDR_LEN;
    size_t tlen = pgs_strnlen(text, f.len - 4);
    admin_normalize(text, tlen, cmd, sizeof cmd);
    if (memcmp(cmd, "show route ", 11) == 0) {
        const char *q = text;
        while (q < text + tlen && (*q == ' ' || *q == '\t' || *q == '\n' || *q == '\r'))
            q++;
        q += 4; /* SHOW */
        while (q < text + tlen && (*q == ' ' || *q == '\t' || *q == '\n' || *q == '\r'))
            q++;
        q += 5; /* ROUTE */
        return admin_show_route(cl, q, (size_t)(text + tlen - q)) < 0 ? PX_STEP_CLOSED : PX_STEP_AGAIN;
    }
    for (size_t i = 0; i < sizeof admin_commands / sizeof admin_commands[0]; i++)
        if (strcmp(cmd, admin_commands[i].cmd) == 0)
            return admin_commands[i].fn(cl) < 0 ? PX_STEP_CLOSED : PX_STEP_AGAIN;
    if (cmd[0] == 0) {
        pgs_buf b = PGS_BUF_INIT;
        size_t st = pgs_msg_begin(&b, PGS_BE_EMPTY_QUERY);
        pgs_msg_end(&b, st);
        pgs_msg_ready(&b, PGS_TX_IDLE);
        px_conn_send_buf(&cl->conn, &b);
        pgs_buf_free(&b);
        return PX_STEP_AGAIN;
    }
    char msg[300];
    snprintf(msg, sizeof msg,
             "unknown admin command \"%s\": try SHOW POOLS | CLIENTS | SERVERS | STATS | REPLICAS | SHARDS | "
             "MIGRATIONS | CONFIG | VERSION, PAUSE, RESUME, RELOAD, SHUTDOWN",
             cmd);
    admin_error(cl, PGS_SQLSTATE_SYNTAX_ERROR, msg, true);
    return PX_STEP_AGAIN;
}

static bool admin_allowed(const cfg_config *c, const char *user)
{
    if (!c->admin_users)
        return false;
    size_t n = strlen(user);
    for (const char *p = c->admin_users; *p;) {
        while (*p == ' ' || *p == ',')
            p++;
        const char *e = p;
        while (*e && *e != ',' && *e != ' ')
            e++;
        if ((size_t)(e - p) == n && strncmp(p, user, n) == 0)
            return true;
        p = e;
    }
    return false;
}

/* A client authenticated for database "pgshard". */
void px_admin_login(px_client *cl)
{
    if (!admin_allowed(cl->conn.w->conf->cfg, cl->user_name)) {
        px_client_fatal(cl, PGS_SQLSTATE_INVALID_AUTHORIZATION,
                        "user \"%s\" may not use the admin console (admin_users)", cl->user_name);
        return;
    }
    pgs_buf b = PGS_BUF_INIT;
    pgs_msg_param_status(&b, "server_version", "15.0 (pgshard " PGS_VERSION ")");
    pgs_msg_param_status(&b, "server_encoding", "UTF8");
    pgs_msg_param_status(&b, "client_encoding", "UTF8");
    pgs_msg_param_status(&b, "DateStyle", "ISO, MDY");
    pgs_msg_param_status(&b, "integer_datetimes", "on");
    pgs_msg_param_status(&b, "standard_conforming_strings", "on");
    pgs_msg_backend_key(&b, cl->key_pid, cl->key_secret);
    pgs_msg_ready(&b, PGS_TX_IDLE);
    px_client_set_state(cl, CL_ADMIN, NULL);
    pgs_info("admin_login", "user %s on the admin console", cl->user_name);
    px_conn_send_buf(&cl->conn, &b);
    pgs_buf_free(&b);
}

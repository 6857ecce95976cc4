/* Prometheus metrics over HTTP on metrics_port, served by worker 0's own loop: /metrics
 * (text exposition format) and /healthz. Metric names are declared once, in the table
 * below. The numbers come from a snapshot of every worker (admin.c). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "proxy/monitor.h"
#include "proxy/px.h"

#define HTTP_REQ_MAX 4096

typedef struct px_http {
    uv_tcp_t tcp;  /* data is NULL: not a px_conn */
    pgs_node node; /* in w->https */
    px_worker *w;
    uint32_t id;
    size_t len;
    bool answered;
    uv_write_t wreq;
    pgs_buf out;
    char req[HTTP_REQ_MAX];
} px_http;

/* Every metric: name, type, help. */
static const struct {
    const char *name, *type, *help;
} metric_defs[] = {
    {"pgshard_up", "gauge", "1 while pgshard serves"},
    {"pgshard_client_connections_total", "counter", "Client connections accepted"},
    {"pgshard_auth_failures_total", "counter", "Client authentications that failed"},
    {"pgshard_protocol_errors_total", "counter", "Clients dropped for protocol violations"},
    {"pgshard_tls_handshakes_total", "counter", "TLS handshakes completed, by side"},
    {"pgshard_clients", "gauge", "Logged-in clients by pool and state"},
    {"pgshard_servers", "gauge", "Server connections by pool and state"},
    {"pgshard_pool_size", "gauge", "Server connections a pool may open (all workers)"},
    {"pgshard_pool_saturation", "gauge", "Active server connections over pool size"},
    {"pgshard_pool_wait_queue", "gauge", "Clients waiting for a server connection"},
    {"pgshard_transactions_total", "counter", "Transactions (ReadyForQuery idle after work)"},
    {"pgshard_queries_total", "counter", "ReadyForQuery messages relayed"},
    {"pgshard_errors_total", "counter", "ErrorResponse messages relayed from servers"},
    {"pgshard_received_bytes_total", "counter", "Bytes from clients to servers"},
    {"pgshard_sent_bytes_total", "counter", "Bytes from servers to clients"},
    {"pgshard_transaction_seconds", "histogram", "Transaction time, first message to ReadyForQuery"},
    {"pgshard_wait_seconds", "histogram", "Time clients waited for a server connection"},
};

/* Per node, from the monitor's snapshot. */
static const struct {
    const char *name, *type, *help;
} node_metric_defs[] = {
    {"pgshard_node_up", "gauge", "1 when the node's last health poll answered"},
    {"pgshard_replica_lag_bytes", "gauge", "WAL bytes the node is behind the primary's newest sample"},
    {"pgshard_replica_lag_ms", "gauge", "Milliseconds since the primary was where the node has replayed to"},
    {"pgshard_node_circuit_open", "gauge", "1 while the node's circuit is open or half-open"},
    {"pgshard_node_reads_total", "counter", "Reads routed to the node as a replica"},
};

/* From the shard map this worker reads (catalog.c). */
static const struct {
    const char *name, *type, *help;
} map_metric_defs[] = {
    {"pgshard_map_version", "gauge",
     "map_version of the shard map in force (0: the default map, no catalog)"},
    {"pgshard_catalog_connected", "gauge",
     "1 while the catalog listener's connection is up (with catalog_dsn)"},
};

/* Moves (move.c) and the catalog lease. */
enum { MM_ACTIVE, MM_HELD, MM_HELD_TOTAL, MM_TIMEOUTS, MM_ACKS, MM_LEASE };
static const struct {
    const char *name, *type, *help;
} move_metric_defs[] = {
    [MM_ACTIVE] = {"pgshard_move_active", "gauge", "Moves the catalog holds as active (not done or aborted)"},
    [MM_HELD] = {"pgshard_move_held_clients", "gauge", "Clients held right now for keys a move freezes"},
    [MM_HELD_TOTAL] = {"pgshard_move_held_total", "counter", "Transactions held for keys a move froze"},
    [MM_TIMEOUTS] = {"pgshard_move_hold_timeouts_total", "counter",
                     "Held transactions refused after freeze_hold_ms (SQLSTATE 55000)"},
    [MM_ACKS] = {"pgshard_move_acks_total", "counter", "Freezes this pgshard acknowledged in the catalog"},
    [MM_LEASE] = {"pgshard_lease_refusals_total", "counter",
                  "Writes refused because the catalog was not read within catalog_lease_ms (SQLSTATE 57P03)"},
};

static void metrics_moves(px_worker *w, pgs_buf *b)
{
    px_global_stats *g = &w->px->gs;
    unsigned long long v[] = {
        [MM_ACTIVE] = sm_map_move_count(px_catalog_map(w->px->cat, w->id)),
        [MM_HELD] = px_move_held(w->px, 0),
        [MM_HELD_TOTAL] = atomic_load(&g->move_held),
        [MM_TIMEOUTS] = atomic_load(&g->move_hold_timeouts),
        [MM_ACKS] = px_catalog_acks(w->px->cat),
        [MM_LEASE] = atomic_load(&g->lease_refusals),
    };
    for (int m = 0; m < (int)(sizeof move_metric_defs / sizeof move_metric_defs[0]); m++)
        pgs_buf_appendf(b, "# HELP %s %s\n# TYPE %s %s\n%s %llu\n", move_metric_defs[m].name,
                        move_metric_defs[m].help, move_metric_defs[m].name, move_metric_defs[m].type,
                        move_metric_defs[m].name, v[m]);
}

static void metrics_map(px_worker *w, pgs_buf *b)
{
    px_catalog *cat = w->px->cat;
    for (int m = 0; m < (int)(sizeof map_metric_defs / sizeof map_metric_defs[0]); m++) {
        if (m == 1 && !px_catalog_enabled(cat))
            continue;
        pgs_buf_appendf(b, "# HELP %s %s\n# TYPE %s %s\n", map_metric_defs[m].name, map_metric_defs[m].help,
                        map_metric_defs[m].name, map_metric_defs[m].type);
        unsigned long long v = m == 0 ? (unsigned long long)sm_map_version(px_catalog_map(cat, w->id))
                                      : (unsigned long long)px_catalog_connected(cat);
        pgs_buf_appendf(b, "%s %llu\n", map_metric_defs[m].name, v);
    }
}

static void metrics_pins(px_worker *w, pgs_buf *b)
{
    px_global_stats *g = &w->px->gs;
    pgs_buf_appendf(b, "# HELP pgshard_pins_total Servers pinned to their client by session state it left "
                       "(transaction pooling), by reason\n# TYPE pgshard_pins_total counter\n");
    for (int i = 0; i < PX_PIN_REASONS; i++)
        pgs_buf_appendf(b, "pgshard_pins_total{reason=\"%s\"} %llu\n", px_pin_reason_name(i),
                        (unsigned long long)atomic_load(&g->pins[i]));
}

static void metrics_fanouts(px_worker *w, pgs_buf *b)
{
    static const char *const kinds[] = {"read", "ddl", "copy"}, *const results[] = {"ok", "error"};
    px_global_stats *g = &w->px->gs;
    pgs_buf_appendf(
        b, "# HELP pgshard_fanouts_total Statements run on every shard: merged reads, DDL and COPY, by "
           "result\n# TYPE pgshard_fanouts_total counter\n");
    for (int k = 0; k < 3; k++)
        for (int r = 0; r < 2; r++)
            pgs_buf_appendf(b, "pgshard_fanouts_total{kind=\"%s\",result=\"%s\"} %llu\n", kinds[k],
                            results[r], (unsigned long long)atomic_load(&g->fanouts[k][r]));
}

static void metrics_twopc(px_worker *w, pgs_buf *b)
{
    px_global_stats *g = &w->px->gs;
    pgs_buf_appendf(
        b, "# HELP pgshard_twopc_recovered_total In-doubt two-phase commits the recovery finished, by "
           "outcome\n# TYPE pgshard_twopc_recovered_total counter\n");
    pgs_buf_appendf(b, "pgshard_twopc_recovered_total{outcome=\"commit\"} %llu\n",
                    (unsigned long long)atomic_load(&g->twopc_recovered[0]));
    pgs_buf_appendf(b, "pgshard_twopc_recovered_total{outcome=\"rollback\"} %llu\n",
                    (unsigned long long)atomic_load(&g->twopc_recovered[1]));
}

static void metrics_nodes(px_worker *w, pgs_buf *b)
{
    if (!w->px->mon)
        return;
    const px_status *st = px_route_status(w);
    for (int m = 0; m < (int)(sizeof node_metric_defs / sizeof node_metric_defs[0]); m++) {
        pgs_buf_appendf(b, "# HELP %s %s\n# TYPE %s %s\n", node_metric_defs[m].name, node_metric_defs[m].help,
                        node_metric_defs[m].name, node_metric_defs[m].type);
        for (int s = 0; s < st->nshards; s++) {
            const px_shard_status *sh = &st->shards[s];
            for (int i = 0; i < sh->nnodes; i++) {
                const px_node_status *ns = &sh->nodes[i];
                unsigned long long v = 0;
                switch (m) {
                case 0:
                    v = ns->health == PX_NODE_UP;
                    break;
                case 1:
                    v = ns->lag_bytes;
                    break;
                case 2:
                    v = ns->lag_ms;
                    break;
                case 3:
                    v = ns->circuit != PX_CIRCUIT_CLOSED;
                    break;
                default:
                    v = atomic_load(px_monitor_reads(w->px->mon, s, i));
                    break;
                }
                pgs_buf_appendf(b, "%s{shard=\"%d\",node=\"%d\",role=\"%s\"} %llu\n",
                                node_metric_defs[m].name, s, i, sh->primary == i ? "primary" : "replica", v);
            }
        }
    }
}

/* A label value as Prometheus text wants it: backslash, double quote and newline escaped.
 * Database and user names are the client's choice, so they may hold any of them. */
static const char *label_escape(const char *v, char *out, size_t cap)
{
    size_t k = 0;
    for (; *v && k + 2 < cap; v++) {
        char ch = *v == '\n' ? 'n' : *v;
        if (*v == '\\' || *v == '"' || *v == '\n')
            out[k++] = '\\';
        out[k++] = ch;
    }
    out[k] = 0;
    return out;
}

static void out_header(pgs_buf *b, int i)
{
    pgs_buf_appendf(b, "# HELP %s %s\n# TYPE %s %s\n", metric_defs[i].name, metric_defs[i].help,
                    metric_defs[i].name, metric_defs[i].type);
}

static void out_hist(pgs_buf *b, const char *name, const char *labels, const uint64_t *hist, uint64_t sum_us,
                     uint64_t count)
{
    uint64_t cum = 0;
    for (int i = 0; i < PX_HIST_BUCKETS; i++) {
        cum += hist[i];
        if (i < PX_HIST_BUCKETS - 1)
            pgs_buf_appendf(b, "%s_bucket{%s,le=\"%g\"} %llu\n", name, labels, px_hist_bounds_us[i] / 1e6,
                            (unsigned long long)cum);
        else
            pgs_buf_appendf(b, "%s_bucket{%s,le=\"+Inf\"} %llu\n", name, labels, (unsigned long long)cum);
    }
    pgs_buf_appendf(b, "%s_sum{%s} %.6f\n%s_count{%s} %llu\n", name, labels, sum_us / 1e6, name, labels,
                    (unsigned long long)count);
}

static void metrics_render(px_worker *w, const px_pool_row *rows, size_t n, pgs_buf *b)
{
    metrics_nodes(w, b);
    metrics_map(w, b);
    metrics_moves(w, b);
    metrics_pins(w, b);
    metrics_fanouts(w, b);
    metrics_twopc(w, b);
    px_global_stats *g = &w->px->gs;
    int pool_size = w->conf->cfg->pool_size * w->px->nworkers;
    out_header(b, 0);
    pgs_buf_appendf(b, "pgshard_up 1\n");
    out_header(b, 1);
    pgs_buf_appendf(b, "pgshard_client_connections_total %llu\n",
                    (unsigned long long)atomic_load(&g->accepted));
    out_header(b, 2);
    pgs_buf_appendf(b, "pgshard_auth_failures_total %llu\n",
                    (unsigned long long)atomic_load(&g->auth_failures));
    out_header(b, 3);
    pgs_buf_appendf(b, "pgshard_protocol_errors_total %llu\n",
                    (unsigned long long)atomic_load(&g->protocol_errors));
    out_header(b, 4);
    pgs_buf_appendf(b, "pgshard_tls_handshakes_total{side=\"client\"} %llu\n",
                    (unsigned long long)atomic_load(&g->tls_client_handshakes));
    pgs_buf_appendf(b, "pgshard_tls_handshakes_total{side=\"server\"} %llu\n",
                    (unsigned long long)atomic_load(&g->tls_server_handshakes));
    for (int m = 5; m < (int)(sizeof metric_defs / sizeof metric_defs[0]); m++) {
        out_header(b, m);
        for (size_t i = 0; i < n; i++) {
            const px_pool_row *r = &rows[i];
            char lb[4 * PX_NAME_MAX + 48], ue[2 * PX_NAME_MAX], de[2 * PX_NAME_MAX];
            snprintf(lb, sizeof lb, "user=\"%s\",database=\"%s\",shard=\"%d\"",
                     label_escape(r->user, ue, sizeof ue), label_escape(r->db, de, sizeof de), r->shard);
            const char *name = metric_defs[m].name;
            switch (m) {
            case 5:
                pgs_buf_appendf(b, "%s{%s,state=\"active\"} %d\n", name, lb, r->cl_active);
                pgs_buf_appendf(b, "%s{%s,state=\"waiting\"} %d\n", name, lb, r->cl_waiting);
                pgs_buf_appendf(b, "%s{%s,state=\"idle\"} %d\n", name, lb, r->cl_idle);
                break;
            case 6:
                pgs_buf_appendf(b, "%s{%s,state=\"active\"} %d\n", name, lb, r->sv_active);
                pgs_buf_appendf(b, "%s{%s,state=\"idle\"} %d\n", name, lb, r->sv_idle);
                pgs_buf_appendf(b, "%s{%s,state=\"login\"} %d\n", name, lb, r->sv_login);
                break;
            case 7:
                pgs_buf_appendf(b, "%s{%s} %d\n", name, lb, pool_size);
                break;
            case 8:
                pgs_buf_appendf(b, "%s{%s} %.4f\n", name, lb, (double)r->sv_active / pool_size);
                break;
            case 9:
                pgs_buf_appendf(b, "%s{%s} %d\n", name, lb, r->cl_waiting);
                break;
            case 10:
                pgs_buf_appendf(b, "%s{%s} %llu\n", name, lb, (unsigned long long)r->st.xacts);
                break;
            case 11:
                pgs_buf_appendf(b, "%s{%s} %llu\n", name, lb, (unsigned long long)r->st.queries);
                break;
            case 12:
                pgs_buf_appendf(b, "%s{%s} %llu\n", name, lb, (unsigned long long)r->st.errors);
                break;
            case 13:
                pgs_buf_appendf(b, "%s{%s} %llu\n", name, lb, (unsigned long long)r->st.bytes_in);
                break;
            case 14:
                pgs_buf_appendf(b, "%s{%s} %llu\n", name, lb, (unsigned long long)r->st.bytes_out);
                break;
            case 15:
                out_hist(b, name, lb, r->st.xact_hist, r->st.xact_us, r->st.xacts);
                break;
            default:
                out_hist(b, name, lb, r->st.wait_hist, r->st.wait_us, r->st.waits);
                break;
            }
        }
    }
}

static void http_on_close(uv_handle_t *h)
{
    px_http *hc = pgs_container_of((uv_tcp_t *)h, px_http, tcp);
    pgs_buf_free(&hc->out);
    free(hc);
}

static void http_close(px_http *hc)
{
    if (uv_is_closing((uv_handle_t *)&hc->tcp))
        return;
    pgs_list_remove(&hc->w->https, &hc->node);
    uv_close((uv_handle_t *)&hc->tcp, http_on_close);
}

static void http_on_write(uv_write_t *req, int status)
{
    (void)status;
    http_close(pgs_container_of(req, px_http, wreq));
}

static void http_respond(px_http *hc, const char *status, const char *ctype, const pgs_buf *body)
{
    char head[256];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n",
                     status, ctype, body->len);
    pgs_buf_append(&hc->out, head, (size_t)n);
    pgs_buf_append(&hc->out, body->data, body->len);
    if (pgs_buf_failed(&hc->out)) {
        http_close(hc);
        return;
    }
    uv_buf_t b = uv_buf_init((char *)hc->out.data, (unsigned)hc->out.len);
    if (uv_write(&hc->wreq, (uv_stream_t *)&hc->tcp, &b, 1, http_on_write) < 0)
        http_close(hc);
}

static void http_metrics_done(px_worker *w, px_snapshot *s)
{
    pgs_node *it, *tmp;
    pgs_list_each (&w->https, it, tmp) {
        px_http *hc = pgs_container_of(it, px_http, node);
        if (hc != s->ctx || hc->id != s->ctx_id)
            continue;
        pgs_buf rows = PGS_BUF_INIT, body = PGS_BUF_INIT;
        size_t n;
        px_pool_rows_merge(s, &rows, &n);
        metrics_render(w, (const px_pool_row *)rows.data, n, &body);
        http_respond(hc, "200 OK", "text/plain; version=0.0.4", &body);
        pgs_buf_free(&rows);
        pgs_buf_free(&body);
        break;
    }
    px_snapshot_free(s);
}

static void http_handle(px_http *hc)
{
    pgs_buf body = PGS_BUF_INIT;
    hc->answered = true;
    if (strncmp(hc->req, "GET /metrics ", 13) == 0 || strncmp(hc->req, "GET /metrics?", 13) == 0) {
        if (px_snapshot_start(hc->w, PX_SNAP_POOLS, http_metrics_done, hc, hc->id) < 0)
            http_close(hc);
        return;
    }
    if (strncmp(hc->req, "GET /healthz ", 13) == 0) {
        bool ok = !atomic_load(&hc->w->px->stopping);
        pgs_buf_append(&body, ok ? "ok\n" : "stopping\n", ok ? 3 : 9);
        http_respond(hc, ok ? "200 OK" : "503 Service Unavailable", "text/plain", &body);
    } else {
        pgs_buf_append(&body, "not found: try /metrics or /healthz\n", 36);
        http_respond(hc, "404 Not Found", "text/plain", &body);
    }
    pgs_buf_free(&body);
}

static void http_on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    px_http *hc = pgs_container_of((uv_tcp_t *)h, px_http, tcp);
    (void)suggested;
    *buf = uv_buf_init(hc->req + hc->len, (unsigned)(HTTP_REQ_MAX - 1 - hc->len));
}

static void http_on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    px_http *hc = pgs_container_of((uv_tcp_t *)s, px_http, tcp);
    (void)buf;
    if (nread < 0 || (nread == 0 && hc->len == HTTP_REQ_MAX - 1)) {
        http_close(hc);
        return;
    }
    hc->len += (size_t)nread;
    hc->req[hc->len] = 0;
    if (hc->answered || !strstr(hc->req, "\r\n\r\n"))
        return;
    uv_read_stop(s);
    http_handle(hc);
}

static void metrics_on_connection(uv_stream_t *server, int status)
{
    px_worker *w = pgs_container_of((uv_tcp_t *)server, px_worker, metrics);
    if (status < 0)
        return;
    px_http *hc = calloc(1, sizeof *hc);
    if (!hc)
        return;
    hc->w = w;
    hc->id = w->next_pid++;
    if (uv_tcp_init(&w->loop, &hc->tcp) < 0) {
        free(hc);
        return;
    }
    hc->tcp.data = NULL;
    pgs_list_push_back(&w->https, &hc->node);
    if (uv_accept(server, (uv_stream_t *)&hc->tcp) < 0 ||
        uv_read_start((uv_stream_t *)&hc->tcp, http_on_alloc, http_on_read) < 0)
        http_close(hc);
}

int px_metrics_start(px_worker *w)
{
    const cfg_config *cfg = w->conf->cfg;
    struct sockaddr_storage ss;
    pgs_list_init(&w->https);
    if (!cfg->metrics_port)
        return 0;
    if (uv_ip4_addr(cfg->listen_addr, cfg->metrics_port, (struct sockaddr_in *)&ss) != 0 &&
        uv_ip6_addr(cfg->listen_addr, cfg->metrics_port, (struct sockaddr_in6 *)&ss) != 0)
        return UV_EINVAL;
    int r = uv_tcp_init(&w->loop, &w->metrics);
    if (r < 0)
        return r;
    w->metrics.data = NULL;
    w->metrics_on = true;
    if ((r = uv_tcp_bind(&w->metrics, (const struct sockaddr *)&ss, 0)) < 0 ||
        (r = uv_listen((uv_stream_t *)&w->metrics, 64, metrics_on_connection)) < 0) {
        pgs_error("metrics_failed", "cannot listen on %s:%u for metrics: %s", cfg->listen_addr,
                  cfg->metrics_port, uv_strerror(r));
        return r;
    }
    return 0;
}

void px_metrics_stop(px_worker *w)
{
    if (w->metrics_on && !uv_is_closing((uv_handle_t *)&w->metrics))
        uv_close((uv_handle_t *)&w->metrics, NULL);
    pgs_node *it, *tmp;
    pgs_list_each (&w->https, it, tmp)
        http_close(pgs_container_of(it, px_http, node));
}

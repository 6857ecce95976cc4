/* Cancel requests. A client's CancelRequest reaches the worker that owns the client, which
 * forwards it to the server running the client's query, on a connection of its own.
 *
 * The query may end while the cancel is on its way, and in transaction pooling the server
 * would then run another client's query, which the late cancel would kill. So a server with
 * a cancel in flight is not given to anyone until PostgreSQL has closed the cancel's
 * connection (it closes it once the backend has been signalled; a signal that reaches an
 * idle backend is dropped), or CANCEL_HOLD_MS have passed. PgBouncer fixed the same race in
 * 1.21. */
#include <openssl/crypto.h>
#include <stdlib.h>

#include "common/log.h"
#include "proxy/px.h"

#define CANCEL_HOLD_MS 2000

typedef struct px_cancel_conn {
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_connect_t creq;
    uv_write_t wreq;
    px_server *sv; /* held back from reuse while this cancel runs; NULL once released */
    pgs_node node; /* in sv->cancels */
    int open;      /* handles not closed yet */
    bool done;
    uint8_t pkt[16];
    char rbuf[64];
} px_cancel_conn;

/* Marks the cancel's handles (their data), which the shutdown walk leaves to finish. */
const char px_cancel_tag = 0;

static void cancel_on_close(uv_handle_t *h)
{
    px_cancel_conn *cc = h->type == UV_TIMER ? pgs_container_of((uv_timer_t *)h, px_cancel_conn, timer)
                                             : pgs_container_of((uv_tcp_t *)h, px_cancel_conn, tcp);
    if (--cc->open == 0)
        free(cc);
}

/* Lets the server go: the pool may give it to its next client now. */
static void cancel_release(px_cancel_conn *cc)
{
    px_server *sv = cc->sv;
    if (!sv)
        return;
    cc->sv = NULL;
    pgs_list_remove(&sv->cancels, &cc->node);
    if (sv->cancels.n == 0 && sv->state == SV_IDLE && !pgs_node_linked(&sv->idle_node))
        px_pool_server_ready(sv->pool, sv);
}

static void cancel_done(px_cancel_conn *cc)
{
    if (cc->done)
        return;
    cc->done = true;
    cancel_release(cc);
    uv_timer_stop(&cc->timer);
    uv_close((uv_handle_t *)&cc->timer, cancel_on_close);
    uv_close((uv_handle_t *)&cc->tcp, cancel_on_close);
}

void px_cancel_stop(uv_handle_t *h)
{
    cancel_done(h->type == UV_TIMER ? pgs_container_of((uv_timer_t *)h, px_cancel_conn, timer)
                                    : pgs_container_of((uv_tcp_t *)h, px_cancel_conn, tcp));
}

static void cancel_on_timer(uv_timer_t *t)
{
    cancel_done(pgs_container_of(t, px_cancel_conn, timer));
}

static void cancel_on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    px_cancel_conn *cc = pgs_container_of((uv_tcp_t *)h, px_cancel_conn, tcp);
    *buf = uv_buf_init(cc->rbuf, sizeof cc->rbuf);
}

/* PostgreSQL answers a cancel with nothing but a close. */
static void cancel_on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    (void)buf;
    if (nread < 0)
        cancel_done(pgs_container_of((uv_tcp_t *)s, px_cancel_conn, tcp));
}

static void cancel_on_write(uv_write_t *req, int status)
{
    px_cancel_conn *cc = pgs_container_of(req, px_cancel_conn, wreq);
    if (status < 0 || cc->done || uv_read_start((uv_stream_t *)&cc->tcp, cancel_on_alloc, cancel_on_read) < 0)
        cancel_done(cc);
}

static void cancel_on_connect(uv_connect_t *req, int status)
{
    px_cancel_conn *cc = pgs_container_of(req, px_cancel_conn, creq);
    if (cc->done)
        return;
    if (status < 0) {
        pgs_warn("cancel_failed", "cannot connect to forward a cancel: %s", uv_strerror(status));
        cancel_done(cc);
        return;
    }
    uv_buf_t b = uv_buf_init((char *)cc->pkt, sizeof cc->pkt);
    if (uv_write(&cc->wreq, (uv_stream_t *)&cc->tcp, &b, 1, cancel_on_write) < 0)
        cancel_done(cc);
}

void px_server_forget_cancels(px_server *sv)
{
    if (!sv->cancels.n)
        return;
    pgs_node *it, *tmp;
    pgs_list_each (&sv->cancels, it, tmp) {
        px_cancel_conn *cc = pgs_container_of(it, px_cancel_conn, node);
        pgs_list_remove(&sv->cancels, &cc->node);
        cc->sv = NULL;
    }
}

void px_client_cancel(px_worker *w, uint32_t pid, uint32_t secret)
{
    pgs_node *it, *tmp;
    px_client *cl = NULL;
    /* A pid may be a server's own (session pooling), which two nodes may share: the secret,
     * pgshard's own, decides. */
    pgs_list_each (&w->clients, it, tmp) {
        px_client *c = pgs_container_of(it, px_client, node);
        if (c->key_pid == pid && CRYPTO_memcmp(&c->key_secret, &secret, sizeof secret) == 0) {
            cl = c;
            break;
        }
    }
    if (cl && cl->x.fan) {
        px_fanout_cancel(cl); /* every shard's query */
        return;
    }
    if (cl && px_move_cancel(cl))
        return; /* held for a move: its statement never ran */
    if (!cl || !px_client_server(cl)) {
        pgs_debug("cancel_ignored", "no running query for cancel key %08x", pid);
        return;
    }
    px_server_cancel(px_client_server(cl));
}

void px_server_cancel(px_server *sv)
{
    px_worker *w = sv->conn.w;
    px_cancel_conn *cc = calloc(1, sizeof *cc);
    if (!cc)
        return;
    pgs_buf b = {cc->pkt, 0, sizeof cc->pkt, false};
    pgs_buf_append_be32(&b, 16);
    pgs_buf_append_be32(&b, PGS_CODE_CANCEL);
    pgs_buf_append_be32(&b, sv->be_pid);
    pgs_buf_append_be32(&b, sv->be_secret);
    if (uv_tcp_init(&w->loop, &cc->tcp) < 0) {
        free(cc);
        return;
    }
    cc->tcp.data = (void *)&px_cancel_tag;
    if (uv_timer_init(&w->loop, &cc->timer) < 0) {
        cc->open = 1;
        uv_close((uv_handle_t *)&cc->tcp, cancel_on_close);
        return;
    }
    cc->timer.data = (void *)&px_cancel_tag;
    cc->open = 2;
    cc->sv = sv;
    pgs_list_push_back(&sv->cancels, &cc->node);
    uv_timer_start(&cc->timer, cancel_on_timer, CANCEL_HOLD_MS, 0);
    if (uv_tcp_connect(&cc->creq, &cc->tcp, px_conf_node(w->conf, sv->pool->shard, sv->pool->nodeix),
                       cancel_on_connect) < 0) {
        cancel_done(cc);
        return;
    }
    pgs_info("cancel_forwarded", "server pid %u", sv->be_pid);
}

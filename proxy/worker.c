/* A worker: one thread with its own libuv loop, its own SO_REUSEPORT listener, clients and
 * pools. Other threads reach it only through its mailbox (cancel requests, reloaded confs)
 * and wakeup handle (cancel, stop). Also holds the worker's cache of I/O buffers. */
#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "proxy/px.h"

#define PX_TICK_MS 100

void px_buf_take(px_worker *w, pgs_buf *b)
{
    if (b->data || w->nfree == 0)
        return;
    b->data = w->free_blocks[--w->nfree];
    b->cap = PX_BLOCK;
    b->len = 0;
    b->oom = false;
}

/* Returns a buffer's storage: pooled when it has the standard size, freed otherwise. */
void px_buf_give(px_worker *w, pgs_buf *b)
{
    if (!b->data)
        return;
    if (b->cap == PX_BLOCK && w->nfree < PX_FREE_BLOCKS) {
        w->free_blocks[w->nfree++] = b->data;
        b->data = NULL;
        b->len = b->cap = 0;
        b->oom = false;
        return;
    }
    pgs_buf_free(b);
}

static void worker_on_connection(uv_stream_t *server, int status)
{
    px_worker *w = server->data;
    if (status < 0) {
        pgs_warn("accept_failed", "worker %d: %s", w->id, uv_strerror(status));
        return;
    }
    px_client_accept(w);
}

/* Clients that have not logged in within client_login_timeout are dropped, as with
 * PostgreSQL's authentication_timeout. The list is in order of arrival, so the walk (once
 * a second) stops at the first client younger than the limit. */
static void worker_expire_logins(px_worker *w, uint64_t now)
{
    uint32_t limit = w->conf->cfg->client_login_timeout_ms;
    pgs_node *it, *tmp;
    if (!limit)
        return;
    pgs_list_each (&w->clients, it, tmp) {
        px_client *cl = pgs_container_of(it, px_client, node);
        if (now - cl->accepted_at < limit)
            break;
        if (cl->state == CL_STARTUP || cl->state == CL_AUTH)
            px_client_fatal(cl, PGS_SQLSTATE_CONNECTION_FAILURE,
                            "client_login_timeout: startup not completed within %u ms", limit);
    }
}

static void worker_on_tick(uv_timer_t *t)
{
    px_worker *w = t->data;
    uint64_t now = uv_now(&w->loop);
    pgs_node *it, *tmp;
    pgs_list_each (&w->pools, it, tmp)
        (void)px_pool_tick(pgs_container_of(it, px_pool, node), now);
    px_route_tick(w);
    px_move_tick(w);
    if (++w->ticks % 10 == 0)
        worker_expire_logins(w, now);
}

static void worker_on_refused(uv_handle_t *h)
{
    px_worker *w = pgs_container_of((uv_tcp_t *)h, px_worker, refuse);
    w->refusing = false;
    if (w->refuse_pending && !atomic_load(&w->px->stopping)) {
        w->refuse_pending = false;
        px_client_accept(w);
    }
}

/* A connection the accept callback leaves in the listener stops libuv from watching the
 * listener at all, so a client that cannot be allocated must still be accepted. The worker
 * keeps one handle for that, which takes no memory: the connection is told 53200 with a
 * write that needs no request and closed. A second refusal while that handle closes waits
 * for its close callback, which accepts again. */
void px_worker_refuse(px_worker *w)
{
    if (w->refusing) {
        w->refuse_pending = true;
        return;
    }
    if (uv_tcp_init(&w->loop, &w->refuse) < 0)
        return;
    w->refusing = true;
    w->refuse.data = NULL;
    if (uv_accept((uv_stream_t *)&w->listener, (uv_stream_t *)&w->refuse) == 0) {
        uv_buf_t b = uv_buf_init((char *)pgs_msg_fatal_oom, (unsigned)pgs_msg_fatal_oom_len);
        (void)uv_try_write((uv_stream_t *)&w->refuse, &b, 1);
    }
    uv_close((uv_handle_t *)&w->refuse, worker_on_refused);
}

void px_worker_close_walk(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (uv_is_closing(h))
        return;
    /* Client and server handles carry their px_conn; close them through their owners so
     * pools and counters stay consistent. Other handles are the worker's own. */
    px_worker *w = arg;
    if (h->data == &px_cancel_tag) {
        px_cancel_stop(h); /* a cancel being forwarded: its server is going away too */
        return;
    }
    if (h->type == UV_TCP && h != (uv_handle_t *)&w->listener) {
        px_conn *c = h->data;
        if (!c)
            return;
        if (c->is_server)
            px_server_close((px_server *)c, "shutdown");
        else
            px_client_close((px_client *)c);
        return;
    }
    uv_close(h, NULL);
}

void px_worker_drain_mbox(px_worker *w)
{
    uv_mutex_lock(&w->mbox_lock);
    pgs_buf box = w->mbox;
    w->mbox = (pgs_buf)PGS_BUF_INIT;
    uv_mutex_unlock(&w->mbox_lock);
    for (size_t off = 0; off + sizeof(px_job) <= box.len; off += sizeof(px_job)) {
        px_job job;
        memcpy(&job, box.data + off, sizeof job);
        job.fn(w, &job);
    }
    pgs_buf_free(&box);
}

static void worker_on_wakeup(uv_async_t *a)
{
    px_worker *w = a->data;
    px_worker_drain_mbox(w);
    if (!atomic_load(&w->px->stopping))
        return;
    /* From here on no thread may touch the wakeup handle (see worker_wake). */
    uv_mutex_lock(&w->mbox_lock);
    w->mbox_closed = true;
    uv_mutex_unlock(&w->mbox_lock);
    px_worker_drain_mbox(w);
    px_metrics_stop(w);
    uv_walk(&w->loop, px_worker_close_walk, w);
}

static void worker_main(void *arg)
{
    px_worker *w = arg;
    uv_run(&w->loop, UV_RUN_DEFAULT);
    /* Everything is closed; let close callbacks finish and free what is left. */
    uv_run(&w->loop, UV_RUN_DEFAULT);
    pgs_node *it, *tmp;
    pgs_list_each (&w->pools, it, tmp) {
        px_pool *pool = pgs_container_of(it, px_pool, node);
        pgs_list_remove(&w->pools, it);
        px_pool_free(pool);
    }
    while (w->nfree)
        free(w->free_blocks[--w->nfree]);
    pgs_buf_free(&w->mbox);
    px_htab_free(&w->stmts);
    px_route_teardown(w);
    free(w->tls_scratch);
    if (uv_loop_close(&w->loop) != 0)
        pgs_warn("loop_not_closed", "worker %d: handles still open at exit", w->id);
    /* mbox_lock outlives the thread: other threads may still look at mbox_closed. main()
     * destroys it after joining every worker (px_worker_destroy). */
}

uint32_t px_worker_rand(px_worker *w)
{
    uint64_t x = w->rng;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    w->rng = x;
    return (uint32_t)(x >> 32);
}

uint32_t px_worker_key_pid(px_worker *w)
{
    const uint32_t span = (1u << PX_PID_WORKER_SHIFT) - 1;
    uint32_t n = w->next_pid++ % span + 1;
    return ((uint32_t)w->id << PX_PID_WORKER_SHIFT) | n;
}

/* After the thread is joined: its clients and pools are gone, and their references with
 * them; the worker's own goes last. */
void px_worker_destroy(px_worker *w)
{
    uv_mutex_destroy(&w->mbox_lock);
    px_conf_release(w->conf);
    w->conf = NULL;
}

/* Sets up the loop and handles, then starts the thread. The listening socket was bound by
 * main() so that a port already in use is reported before any thread starts. */
int px_worker_start(px_worker *w)
{
    int r;
    pgs_list_init(&w->clients);
    pgs_list_init(&w->pools);
    w->next_pid = 0;
    if (RAND_bytes((unsigned char *)&w->rng, sizeof w->rng) != 1 || !w->rng)
        w->rng = uv_hrtime() | 1;
    if ((r = px_route_setup(w)) < 0)
        return r;
    if ((r = uv_loop_init(&w->loop)) < 0)
        goto fail_route;
    if ((r = uv_mutex_init(&w->mbox_lock)) < 0)
        goto fail_loop;
    if ((r = uv_tcp_init(&w->loop, &w->listener)) < 0)
        goto fail_mutex;
    w->listener.data = w;
    if ((r = uv_tcp_open(&w->listener, w->listen_fd)) < 0)
        goto fail_listener;
    if ((r = uv_listen((uv_stream_t *)&w->listener, 1024, worker_on_connection)) < 0)
        goto fail_listener;
    if ((r = uv_async_init(&w->loop, &w->wakeup, worker_on_wakeup)) < 0)
        goto fail_listener;
    w->wakeup.data = w;
    if ((r = uv_timer_init(&w->loop, &w->tick)) < 0)
        goto fail_async;
    w->tick.data = w;
    uv_timer_start(&w->tick, worker_on_tick, PX_TICK_MS, PX_TICK_MS);
    uv_unref((uv_handle_t *)&w->tick);
    pgs_list_init(&w->https);
    if ((r = px_move_setup(w)) < 0)
        goto fail_timer;
    if (w->id == 0 && (r = px_metrics_start(w)) < 0)
        goto fail_timer;
    if ((r = uv_thread_create(&w->thread, worker_main, w)) < 0)
        goto fail_timer;
    return 0;

fail_timer:
    px_metrics_stop(w);
    if (w->move.timer_on)
        uv_close((uv_handle_t *)&w->move.timer, NULL);
    uv_close((uv_handle_t *)&w->tick, NULL);
fail_async:
    uv_close((uv_handle_t *)&w->wakeup, NULL);
fail_listener:
    uv_close((uv_handle_t *)&w->listener, NULL);
    uv_run(&w->loop, UV_RUN_DEFAULT);
fail_mutex:
    uv_mutex_destroy(&w->mbox_lock);
fail_loop:
    uv_loop_close(&w->loop);
fail_route:
    px_route_teardown(w);
    return r;
}

/* Hands a job to a worker from any thread, unless the worker has begun closing its
 * handles: sending on a closed async handle is undefined, so the check and the send share
 * the lock. Returns 0, or -1 when the job was not taken. */
static int worker_wake(px_worker *w, const px_job *job)
{
    int r = -1;
    uv_mutex_lock(&w->mbox_lock);
    if (!w->mbox_closed && (!job || pgs_buf_append(&w->mbox, job, sizeof *job) == 0)) {
        uv_async_send(&w->wakeup);
        r = 0;
    }
    uv_mutex_unlock(&w->mbox_lock);
    return r;
}

void px_worker_request_stop(px_worker *w)
{
    worker_wake(w, NULL);
}

/* SIGTERM: stop accepting; clients with nothing running leave now, the others when their
 * transaction ends (px_client_detach), or when main() gives up after shutdown_timeout. */
static void worker_drain_job(px_worker *w, const px_job *job)
{
    (void)job;
    if (!uv_is_closing((uv_handle_t *)&w->listener))
        uv_close((uv_handle_t *)&w->listener, NULL);
    pgs_node *it, *tmp;
    pgs_list_each (&w->clients, it, tmp) {
        px_client *cl = pgs_container_of(it, px_client, node);
        if (cl->state != CL_ACTIVE && cl->state != CL_WAIT_SERVER && cl->state != CL_FANOUT)
            px_client_close(cl);
    }
}

/* The job carries a reference taken for it; the worker's old conf loses the worker's. The
 * old one stays alive while clients that logged in with it, or pools logging in with it,
 * hold theirs. */
static void worker_conf_job(px_worker *w, const px_job *job)
{
    const px_conf *old = w->conf;
    w->conf = job->arg;
    px_conf_release(old);
}

/* Main thread. A job the mailbox refuses (the worker is stopping) gives its reference back;
 * one it takes always runs, since the worker drains its mailbox after closing it. */
void px_worker_post_conf(px_worker *w, const px_conf *conf)
{
    px_job job = {worker_conf_job, (void *)px_conf_hold(conf), 0, 0};
    if (worker_wake(w, &job) < 0)
        px_conf_release(conf);
}

void px_worker_request_drain(px_worker *w)
{
    px_job job = {worker_drain_job, NULL, 0, 0};
    worker_wake(w, &job);
}

int px_worker_post(px_worker *w, const px_job *job)
{
    return worker_wake(w, job);
}

static void worker_cancel_job(px_worker *w, const px_job *job)
{
    px_client_cancel(w, job->a, job->b);
}

/* Called from any worker thread: queue a cancel for a client of w. */
void px_worker_post_cancel(px_worker *w, uint32_t pid, uint32_t secret)
{
    px_job job = {worker_cancel_job, NULL, pid, secret};
    worker_wake(w, &job);
}

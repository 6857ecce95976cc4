/* Byte transport of one TCP connection: reading into a pooled buffer, writing with send(2)
 * first and queueing only what the kernel did not take (uv_write), and backpressure.
 * What the bytes mean is decided in client.c and server.c.
 *
 * Corking: while one read is processed (an input pass), what it sends to any connection is
 * gathered in that connection's out and written once when the pass ends. A rewritten Bind
 * and the messages after it, or a relayed reply around a hidden one, then leave in one
 * write and one TCP segment, instead of several that each wake the receiver. Up to a block
 * is gathered; more leaves at once with what was gathered. Gathered bytes count as written
 * for backpressure (px_conn_idle_io): they leave before the pass returns to the loop, or
 * earlier when their connection closes. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "common/log.h"
#include "proxy/px.h"

static void conn_on_close(uv_handle_t *h);
static void conn_on_drained(px_conn *c);

void px_conn_init(px_conn *c, px_worker *w, bool is_server)
{
    memset(c, 0, sizeof *c);
    c->w = w;
    c->tr = &px_plain_transport;
    c->is_server = is_server;
    c->tcp.data = c;
    c->wreq.data = c;
}

/* why: what the transport knows about the failure, or NULL. */
static void conn_dispatch_close(px_conn *c, const char *why)
{
    if (c->is_server)
        px_server_close((px_server *)c, why ? why : "connection lost");
    else
        px_client_close((px_client *)c);
}

static void conn_on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    px_conn *c = h->data;
    (void)suggested;
    c->tr->alloc(c, buf); /* a zero-length buffer makes libuv report UV_ENOBUFS */
}

static void conn_on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    px_conn *c = s->data;
    (void)buf;
    if (nread == 0)
        return;
    if (nread == UV_ENOBUFS && !c->is_server) {
        px_client_fatal_oom((px_client *)c); /* the read buffer could not grow */
        return;
    }
    if (nread < 0) {
        if (nread != UV_EOF)
            pgs_debug("conn_read_error", "%s: %s", c->is_server ? "server" : "client",
                      uv_strerror((int)nread));
        conn_dispatch_close(c, NULL);
        return;
    }
    int r = c->tr->received(c, (size_t)nread);
    if (r < 0) {
        conn_dispatch_close(c, c->tr->failure(c));
        return;
    }
    if (r == 1) {
        atomic_fetch_add_explicit(c->is_server ? &c->w->px->gs.tls_server_handshakes
                                               : &c->w->px->gs.tls_client_handshakes,
                                  1, memory_order_relaxed);
        if (c->is_server)
            px_server_tls_ready((px_server *)c);
    }
    px_worker *w = c->w;
    w->corking = true;
    if (c->is_server)
        px_server_process((px_server *)c);
    else
        px_client_process((px_client *)c);
    w->corking = false;
    /* A connection the pass closed stays allocated until its close callback, after this
     * one; one drained here may send more, which now goes out at once. */
    for (int i = 0; i < w->ncorked; i++) {
        px_conn *d = w->corked[i];
        if (!d->corked)
            continue;
        px_conn_uncork(d);
        if (!d->closing)
            conn_on_drained(d);
    }
    w->ncorked = 0;
}

void px_conn_set_reading(px_conn *c, bool on)
{
    if (c->closing || c->reading == on)
        return;
    if (on) {
        if (uv_read_start((uv_stream_t *)&c->tcp, conn_on_alloc, conn_on_read) < 0) {
            conn_dispatch_close(c, NULL);
            return;
        }
    } else {
        uv_read_stop((uv_stream_t *)&c->tcp);
    }
    c->reading = on;
}

/* After an input pass: drop what was processed, return an emptied buffer to the pool. */
void px_conn_after_input(px_conn *c)
{
    if (c->in_pos == 0)
        return;
    if (c->in_pos >= c->in.len) {
        c->in.len = 0;
        px_buf_give(c->w, &c->in);
    } else {
        pgs_buf_consume(&c->in, c->in_pos);
    }
    c->in_pos = 0;
    c->fwd_mark = 0;
}

bool px_conn_idle_io(const px_conn *c)
{
    return !c->writing && (c->out.len == 0 || c->corked);
}

static void conn_on_write(uv_write_t *req, int status);
static int conn_start_write(px_conn *c);

/* uv_try_write's work, done with send(2)/sendmsg(2), which skip the file layer that
 * write(2)/writev(2) go through on a socket; only called with nothing queued in libuv
 * (c->writing false). Returns the bytes taken, UV_EAGAIN for none, or another UV_ error. */
static int conn_try_send(px_conn *c, const uv_buf_t *b, unsigned n)
{
    uv_os_fd_t fd;
    if (uv_fileno((const uv_handle_t *)&c->tcp, &fd) < 0)
        return UV_EBADF;
    ssize_t r;
    do {
        if (n == 1) {
            r = send(fd, b[0].base, b[0].len, MSG_DONTWAIT | MSG_NOSIGNAL);
        } else {
            struct msghdr m = {.msg_iov = (struct iovec *)b, .msg_iovlen = n};
            r = sendmsg(fd, &m, MSG_DONTWAIT | MSG_NOSIGNAL);
        }
    } while (r < 0 && errno == EINTR);
    if (r >= 0)
        return r == 0 ? UV_EAGAIN : (int)r;
    return errno == EAGAIN || errno == EWOULDBLOCK ? UV_EAGAIN : uv_translate_sys_error(errno);
}

/* Writes the bytes gathered for c and then n more at *bytes, in one write, and ends the
 * gathering; *bytes and *n are left at what the kernel did not take, gathered bytes it did
 * not take stay in out. Returns 0, or -1 when the connection failed and was handed to its
 * owner to close. */
static int conn_write_gathered(px_conn *c, const uint8_t **bytes, size_t *n)
{
    uv_buf_t b[2] = {uv_buf_init((char *)c->out.data, (unsigned)c->out.len),
                     uv_buf_init((char *)*bytes, (unsigned)*n)};
    c->corked = false;
    int r = conn_try_send(c, b, *n ? 2 : 1);
    if (r < 0 && r != UV_EAGAIN) {
        c->out.len = 0; /* nothing more can be written: a close must not wait for it */
        conn_dispatch_close(c, NULL);
        return -1;
    }
    size_t done = r > 0 ? (size_t)r : 0;
    if (done < c->out.len) {
        pgs_buf_consume(&c->out, done);
        return 0;
    }
    done -= c->out.len;
    c->out.len = 0;
    if (done) {
        *bytes += done;
        *n -= done;
    }
    return 0;
}

/* Writes what the input pass gathered for c: what the kernel does not take at once goes
 * the way of any queued output (conn_start_write). Returns 0, or -1 when the connection
 * failed and was handed to its owner to close. */
int px_conn_uncork(px_conn *c)
{
    const uint8_t *none = NULL;
    size_t zero = 0;
    if (!c->corked)
        return 0;
    if (c->closing || c->writing || c->out.len == 0) {
        c->corked = false;
        return 0;
    }
    if (conn_write_gathered(c, &none, &zero) < 0)
        return -1;
    if (c->out.len == 0) {
        px_buf_give(c->w, &c->out);
        return 0;
    }
    return conn_start_write(c);
}

/* The other side's reading and anything waiting for c's output are looked at again: after
 * a write completes, and after a pass's gathered bytes were written (or queued, which the
 * other side's reading must now wait for). */
static void conn_on_drained(px_conn *c)
{
    if (c->is_server)
        px_server_on_drained((px_server *)c);
    else
        px_client_on_drained((px_client *)c);
}

static int conn_start_write(px_conn *c)
{
    pgs_buf tmp = c->wq;
    c->wq = c->out;
    c->out = tmp;
    c->out.len = 0;
    uv_buf_t b = uv_buf_init((char *)c->wq.data, (unsigned)c->wq.len);
    if (uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, conn_on_write) < 0) {
        conn_dispatch_close(c, NULL);
        return -1;
    }
    c->writing = true;
    return 0;
}

static void conn_on_write(uv_write_t *req, int status)
{
    px_conn *c = req->data;
    c->writing = false;
    c->wq.len = 0;
    if (status < 0 || c->closing) {
        c->out.len = 0; /* nothing more can be written: a close must not wait for it */
        if (!c->closing)
            conn_dispatch_close(c, NULL);
        return;
    }
    if (c->out.len) {
        conn_start_write(c);
        return;
    }
    px_buf_give(c->w, &c->wq);
    px_buf_give(c->w, &c->out);
    if (c->close_after_flush) {
        px_conn_close(c);
        return;
    }
    conn_on_drained(c);
}

/* Sends plaintext through the connection's transport. Returns 0, or -1 when the
 * connection is closing or failed. */
int px_conn_send(px_conn *c, const void *p, size_t n)
{
    if (c->closing)
        return -1;
    if (n == 0)
        return 0;
    if (c->tr->send(c, p, n) < 0) {
        conn_dispatch_close(c, NULL);
        return -1;
    }
    return 0;
}

/* Sends bytes the caller keeps owning: what the kernel does not take at once is copied
 * into the queue. Returns 0, or -1 when the connection is closing or failed. */
int px_conn_raw_send(px_conn *c, const void *p, size_t n)
{
    if (c->closing)
        return -1;
    if (n == 0)
        return 0;
    const uint8_t *bytes = p;
    px_worker *w = c->w;
    if (!c->writing && !c->corked && c->out.len == 0 && n <= PX_BLOCK && w->corking &&
        w->ncorked < PX_CORK_MAX) {
        c->corked = true;
        w->corked[w->ncorked++] = c;
    }
    if (c->corked && c->out.len + n > PX_BLOCK) {
        /* More than a block: gathering would only copy. It all leaves now, in one write. */
        if (conn_write_gathered(c, &bytes, &n) < 0)
            return -1;
        if (n == 0 && c->out.len == 0) {
            px_buf_give(w, &c->out);
            return 0;
        }
    } else if (!c->writing && !c->corked && c->out.len == 0) {
        uv_buf_t b = uv_buf_init((char *)bytes, (unsigned)n);
        int r = conn_try_send(c, &b, 1);
        if (r == (int)n)
            return 0;
        if (r < 0 && r != UV_EAGAIN) {
            conn_dispatch_close(c, NULL);
            return -1;
        }
        if (r > 0) {
            bytes += r;
            n -= (size_t)r;
        }
    }
    if (!c->out.data)
        px_buf_take(c->w, &c->out);
    if (pgs_buf_append(&c->out, bytes, n) < 0) {
        pgs_error("out_of_memory", "cannot queue %zu bytes", n);
        conn_dispatch_close(c, NULL);
        return -1;
    }
    if (!c->writing && !c->corked)
        conn_start_write(c);
    return 0;
}

int px_conn_send_buf(px_conn *c, const pgs_buf *b)
{
    if (pgs_buf_failed(b)) {
        if (c->is_server)
            conn_dispatch_close(c, NULL);
        else
            px_client_fatal_oom((px_client *)c);
        return -1;
    }
    return px_conn_send(c, b->data, b->len);
}

/* Sends the processed-but-unforwarded input of `from` to `to`. */
void px_conn_flush_forward(px_conn *from, px_conn *to)
{
    if (from->in_pos > from->fwd_mark) {
        size_t n = from->in_pos - from->fwd_mark;
        const uint8_t *p = from->in.data + from->fwd_mark;
        from->fwd_mark = from->in_pos;
        px_pool *pool = from->is_server ? ((px_server *)from)->pool : ((px_client *)from)->pool;
        if (pool && from->is_server)
            pool->st.bytes_out += n;
        else if (pool)
            pool->st.bytes_in += n;
        if (to)
            px_conn_send(to, p, n);
    }
}

void px_conn_close(px_conn *c)
{
    if (c->closing)
        return;
    if (c->corked && !c->writing && c->out.len) {
        /* What the pass gave it leaves as far as the kernel takes it at once: a queued
         * write would be cancelled by uv_close all the same. */
        uv_buf_t b = uv_buf_init((char *)c->out.data, (unsigned)c->out.len);
        (void)conn_try_send(c, &b, 1);
    }
    c->corked = false;
    c->closing = true;
    c->reading = false;
    uv_close((uv_handle_t *)&c->tcp, conn_on_close);
}

static void conn_on_close(uv_handle_t *h)
{
    px_conn *c = h->data;
    px_worker *w = c->w;
    px_buf_give(w, &c->in);
    px_buf_give(w, &c->out);
    px_buf_give(w, &c->wq);
    c->tr->release(c);
    if (c->is_server) {
        px_server *sv = (px_server *)c;
        pgs_buf_free(&sv->login_params);
        free(sv->scram);
        px_server_replies_free(sv);
        px_htab_free(&sv->stmts);
    } else {
        px_client *cl = (px_client *)c;
        if (cl->auth == AUTH_SCRAM_FIRST || cl->auth == AUTH_SCRAM_FINAL)
            free(cl->a.scram);
        px_client_stmts_free(&cl->stmts, &w->stmts);
        px_xact_free(cl);
        free(cl->tenant);
        free(cl->refuse_msg);
        pgs_buf_free(&cl->startup);
        if (cl->sess) {
            px_session_free(cl->sess);
            free(cl->sess);
        }
        if (cl->user)
            px_conf_release(cl->user->conf);
    }
    free(c);
}

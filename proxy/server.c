/* The server side of the proxy: connecting and logging in to PostgreSQL as the client's
 * user (SCRAM-SHA-256, md5, cleartext), then relaying the server's replies to the linked
 * client as they arrive. ReadyForQuery decides when a server goes back to the pool.
 * A server's life is the px_server_state enum, changed only in server_set_state(). */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "common/log.h"
#include "proxy/px.h"

#define PX_MAX_LOGIN_MSG (1u << 20)

static px_step server_tls_step(px_server *sv);

static const char *const server_state_names[] = {
    "connecting", "tls", "login", "idle", "active", "reset", "closed",
};

static void server_set_state(px_server *sv, px_server_state st)
{
    if (sv->state == st)
        return;
    pgs_debug("server_state", "server %p pid %u: %s -> %s", (void *)sv, sv->be_pid,
              server_state_names[sv->state], server_state_names[st]);
    sv->state = st;
    sv->since = uv_now(&sv->conn.w->loop);
}

static bool server_logging_in(const px_server *sv)
{
    return sv->state == SV_CONNECTING || sv->state == SV_TLS || sv->state == SV_LOGIN;
}

/* Closes a server. A server that never finished logging in tells its pool why (err is the
 * server's own ErrorResponse when it sent one), so waiting clients learn the reason. A
 * linked client gets an error only at a message boundary; otherwise it is just closed. */
static void server_close_err(px_server *sv, const char *why, const uint8_t *err, size_t errlen)
{
    if (sv->state == SV_CLOSED)
        return;
    px_pool *pool = sv->pool;
    bool login = server_logging_in(sv);
    pgs_info("server_closed", "server pid %u user=%s db=%s: %s", sv->be_pid, pool->user->cfg->name,
             pool->db_name, why);
    server_set_state(sv, SV_CLOSED);
    px_server_forget_cancels(sv);
    pgs_list_remove(&pool->idle, &sv->idle_node);
    pgs_list_remove(&pool->servers, &sv->node);
    if (login)
        pool->nconnecting--;
    px_link *l = sv->link;
    if (l && l->fan) {
        px_fanout_server_lost(sv, why);
    } else if (l && l->parked) {
        px_xact_parked_lost(l); /* its client learns at COMMIT, which rolls back */
    } else if (l) {
        px_client *cl = l->cl;
        bool answered = l->sent_any;
        px_xact_detach(cl);
        if (px_retry_armed(cl) && !answered && px_route_retry(cl, sv))
            ; /* sent to another node */
        else if (sv->conn.pass_left == 0)
            px_client_fatal(cl, PGS_SQLSTATE_CONNECTION_FAILURE, "server connection lost: %s", why);
        else
            px_client_close(cl);
    }
    px_conn_close(&sv->conn);
    px_pool_server_gone(pool, login, err, errlen);
}

void px_server_close(px_server *sv, const char *why)
{
    server_close_err(sv, why, NULL, 0);
}

void px_server_activate(px_server *sv)
{
    server_set_state(sv, SV_ACTIVE);
}

/* The generation of the isolation defaults a server logs in under: the newest snapshot's.
 * Its login ends in a read callback, where no caller holds a snapshot that a fetch could
 * replace. */
static uint64_t server_login_iso_gen(const px_server *sv)
{
    px_worker *w = sv->conn.w;
    return w->px->mon ? px_route_status(w)->iso_gen : 0;
}

/* Against the snapshot the worker routes with, not a new fetch: a caller may hold a shard's
 * status from it, which the worker's one hazard slot protects only until the next fetch. */
bool px_server_stale(const px_server *sv)
{
    const px_status *st = sv->conn.w->status;
    return sv->iso_gen != (st ? st->iso_gen : 0);
}

bool px_server_clean(const px_server *sv)
{
    return sv->state == SV_ACTIVE && sv->replies.n == 0 && !sv->ext_open && sv->tx_status == PGS_TX_IDLE &&
           sv->conn.pass_left == 0;
}

/* Unlinks a server whose client is done with it and gives it back to the pool. Session
 * pooling first runs DISCARD ALL so the next client finds a fresh session; so does
 * transaction pooling for a server a client left session state on (pin.c). */
void px_server_release(px_server *sv)
{
    px_client *cl = px_server_client(sv);
    if (cl)
        px_client_detach(cl); /* unlinks both directions */
    if (sv->close_on_release) {
        px_server_close(sv, "a DISCARD ALL or DEALLOCATE ALL failed: its prepared statements are unknown");
        return;
    }
    if (px_server_stale(sv)) {
        px_server_close(sv, PX_STALE_ISO);
        return;
    }
    if (sv->conn.w->conf->cfg->pool_mode == CFG_POOL_SESSION || sv->dirty) {
        pgs_buf b = PGS_BUF_INIT;
        sv->state_sig = 0;
        sv->pins = 0;
        sv->dirty = false;
        px_htab_free(&sv->stmts);
        pgs_msg_query(&b, "DISCARD ALL");
        server_set_state(sv, SV_RESET);
        px_conn_send_buf(&sv->conn, &b);
        pgs_buf_free(&b);
        return;
    }
    server_set_state(sv, SV_IDLE);
    if (!sv->conn.processing)
        px_pool_server_ready(sv->pool, sv);
}

static void server_send_password(px_server *sv, const char *pw)
{
    pgs_buf b = PGS_BUF_INIT;
    size_t st = pgs_msg_begin(&b, PGS_FE_PASSWORD);
    pgs_buf_append_cstr(&b, pw);
    pgs_msg_end(&b, st);
    px_conn_send_buf(&sv->conn, &b);
    pgs_buf_free(&b);
}

/* Answers one authentication request of the server. Returns 0, or -1 after closing. */
static int server_auth(px_server *sv, const uint8_t *body, size_t n)
{
    const px_user *u = sv->pool->user;
    const char *pw = u->cfg->password;
    pgs_reader rd = pgs_reader_make(body, n);
    uint32_t code;
    if (pgs_rd_be32(&rd, &code) < 0)
        goto bad;
    if (code == 0)
        return 0;
    if (!pw) {
        server_close_err(sv, "the server asks for a password and the user has none in the config", NULL, 0);
        return -1;
    }
    if (code == 3) {
        if (!u->has_plain)
            goto need_plain;
        server_send_password(sv, pw);
        return 0;
    }
    if (code == 5) {
        const uint8_t *salt;
        char resp[36];
        if (pgs_rd_bytes(&rd, 4, &salt) < 0 || !(u->has_plain || u->has_md5))
            goto bad;
        px_md5_response(u->has_plain ? pw : u->md5, u->cfg->name, salt, resp);
        server_send_password(sv, resp);
        return 0;
    }
    pgs_buf b = PGS_BUF_INIT;
    size_t st = pgs_msg_begin(&b, PGS_FE_PASSWORD);
    if (code == 10) {
        if (!u->has_plain)
            goto need_plain_free;
        bool found = false;
        const char *mech;
        while (pgs_rd_cstr(&rd, &mech) == 0 && mech[0])
            found |= strcmp(mech, "SCRAM-SHA-256") == 0;
        if (!found)
            goto bad_free;
        sv->scram = calloc(1, sizeof *sv->scram);
        if (!sv->scram)
            goto bad_free;
        pgs_buf_append_cstr(&b, "SCRAM-SHA-256");
        size_t lenpos = b.len;
        pgs_buf_append_be32(&b, 0);
        if (px_scram_client_first(sv->scram, pw, NULL, &b) < 0)
            goto bad_free;
        pgs_buf_put_be32(&b, lenpos, (uint32_t)(b.len - lenpos - 4));
    } else if (code == 11) {
        if (!sv->scram || px_scram_client_final(sv->scram, rd.p, rd.left, &b) < 0)
            goto bad_free;
    } else if (code == 12) {
        int ok = sv->scram ? px_scram_client_verify(sv->scram, rd.p, rd.left) : -1;
        free(sv->scram);
        sv->scram = NULL;
        pgs_buf_free(&b);
        if (ok < 0) {
            server_close_err(sv, "the server's SCRAM signature does not verify", NULL, 0);
            return -1;
        }
        return 0;
    } else {
        pgs_buf_free(&b);
        server_close_err(sv, "the server asks for an authentication method pgshard does not support", NULL,
                         0);
        return -1;
    }
    pgs_msg_end(&b, st);
    px_conn_send_buf(&sv->conn, &b);
    pgs_buf_free(&b);
    return 0;

need_plain_free:
    pgs_buf_free(&b);
need_plain:
    server_close_err(sv, "logging in to the server needs the user's plain password in the config", NULL, 0);
    return -1;
bad_free:
    pgs_buf_free(&b);
bad:
    server_close_err(sv, "malformed authentication request from the server", NULL, 0);
    return -1;
}

/* One whole message while logging in. */
static px_step server_login_step(px_server *sv)
{
    px_conn *c = &sv->conn;
    size_t avail = c->in.len - c->in_pos;
    const uint8_t *p = px_conn_at(c);
    pgs_frame f;
    int r = pgs_frame_read(p, avail, PX_MAX_LOGIN_MSG, &f);
    if (r == 0 || (r > 0 && avail < f.total))
        return PX_STEP_WAIT;
    if (r < 0) {
        server_close_err(sv, "invalid message length from server", NULL, 0);
        return PX_STEP_CLOSED;
    }
    c->in_pos += f.total;
    const uint8_t *body = p + PGS_HDR_LEN;
    size_t n = f.len - 4;
    switch (f.type) {
    case PGS_BE_AUTH:
        return server_auth(sv, body, n) < 0 ? PX_STEP_CLOSED : PX_STEP_AGAIN;
    case PGS_BE_PARAM_STATUS:
        pgs_buf_append(&sv->login_params, p, f.total);
        return PX_STEP_AGAIN;
    case PGS_BE_KEY_DATA:
        if (n != 8) {
            server_close_err(sv, "malformed BackendKeyData", NULL, 0);
            return PX_STEP_CLOSED;
        }
        sv->be_pid = pgs_be32(body);
        sv->be_secret = pgs_be32(body + 4);
        return PX_STEP_AGAIN;
    case PGS_BE_ERROR: {
        pgs_error_fields ef;
        char why[300];
        if (pgs_error_parse(body, n, &ef) < 0)
            ef.message = "malformed error";
        snprintf(why, sizeof why, "login refused: %s (%s)", ef.message, ef.sqlstate);
        server_close_err(sv, why, p, f.total);
        return PX_STEP_CLOSED;
    }
    case PGS_BE_NOTICE:
    case PGS_BE_NEGOTIATE:
        return PX_STEP_AGAIN;
    case PGS_BE_READY:
        if (n != 1) {
            server_close_err(sv, "malformed ReadyForQuery", NULL, 0);
            return PX_STEP_CLOSED;
        }
        sv->tx_status = (char)body[0];
        sv->iso_gen = server_login_iso_gen(sv);
        sv->pool->nconnecting--;
        server_set_state(sv, SV_IDLE);
        pgs_debug("server_login", "server pid %u ready", sv->be_pid);
        px_pool_login_done(sv->pool, sv);
        pgs_buf_free(&sv->login_params);
        return PX_STEP_AGAIN;
    default:
        server_close_err(sv, "unexpected message while logging in", NULL, 0);
        return PX_STEP_CLOSED;
    }
}

/* Messages a server sends with no client linked: notices and parameter changes are
 * dropped; anything else (an error before a shutdown) means the server is going away. */
static px_step server_idle_step(px_server *sv)
{
    px_conn *c = &sv->conn;
    size_t avail = c->in.len - c->in_pos;
    pgs_frame f;
    int r = pgs_frame_read(px_conn_at(c), avail, PX_MAX_LOGIN_MSG, &f);
    if (r == 0 || (r > 0 && avail < f.total))
        return PX_STEP_WAIT;
    if (r < 0 || (f.type != PGS_BE_NOTICE && f.type != PGS_BE_PARAM_STATUS && f.type != PGS_BE_NOTIFY)) {
        px_server_close(sv, "unexpected message from an idle server");
        return PX_STEP_CLOSED;
    }
    c->in_pos += f.total;
    return PX_STEP_AGAIN;
}

/* Skips the reply to the reset query; the server is idle again at its ReadyForQuery. */
static px_step server_reset_step(px_server *sv)
{
    px_conn *c = &sv->conn;
    size_t avail = c->in.len - c->in_pos;
    if (c->pass_left) {
        size_t k = avail < c->pass_left ? avail : c->pass_left;
        c->in_pos += k;
        c->pass_left -= (uint32_t)k;
        return k ? PX_STEP_AGAIN : PX_STEP_WAIT;
    }
    pgs_frame f;
    int r = pgs_frame_read(px_conn_at(c), avail, PGS_MAX_MSG_LEN, &f);
    if (r == 0)
        return PX_STEP_WAIT;
    if (r < 0 || f.type == PGS_BE_ERROR) {
        px_server_close(sv, "reset query failed");
        return PX_STEP_CLOSED;
    }
    if (f.type != PGS_BE_READY) {
        size_t take = avail < f.total ? avail : f.total;
        c->in_pos += take;
        c->pass_left = (uint32_t)(f.total - take);
        return PX_STEP_AGAIN;
    }
    if (avail < f.total)
        return PX_STEP_WAIT;
    c->in_pos += f.total;
    server_set_state(sv, SV_IDLE);
    return PX_STEP_AGAIN;
}

/* A ReadyForQuery reached the client: one query, and a transaction when it went idle. */
static void server_count_ready(px_server *sv)
{
    px_pool_stats *st = &sv->pool->st;
    st->queries++;
    px_link *l = sv->link;
    if (sv->tx_status != PGS_TX_IDLE || !l || !l->start_ns)
        return;
    uint64_t us = (uv_hrtime() - l->start_ns) / 1000;
    uint32_t slow = sv->conn.w->conf->cfg->log_slow_ms;
    if (slow && us >= (uint64_t)slow * 1000)
        pgs_warn("slow_query", "transaction of client %08x user=%s db=%s took %.1f ms on server pid %u",
                 l->cl->key_pid, sv->pool->user->cfg->name, sv->pool->db_name, us / 1000.0, sv->be_pid);
    st->xacts++;
    st->xact_us += us;
    px_hist_observe(st->xact_hist, us);
    l->start_ns = 0;
}

/* Asks for the whole of a message that is read before it is relayed (an error, a notice, a
 * command tag, a reply of the extended protocol: all short by nature). One that says it is
 * longer than max_message_size is not waited for: a server that sends one is broken, and
 * its length must not make pgshard reserve up to a gigabyte. */
static px_step server_need(px_server *sv, const pgs_frame *f, size_t avail)
{
    if (f->total > sv->conn.w->conf->cfg->max_message_size) {
        px_server_close(sv, "message from server longer than max_message_size");
        return PX_STEP_CLOSED;
    }
    if (pgs_buf_reserve(&sv->conn.in, f->total - avail) < 0) {
        px_server_close(sv, "out of memory");
        return PX_STEP_CLOSED;
    }
    return PX_STEP_WAIT;
}

/* Follows the transaction that staged a client's SET statements: an error or a ROLLBACK
 * drops them, the end of a committed transaction keeps them, and then this server holds
 * exactly the client's session state. */
static void server_track_session(px_server *sv, px_client *cl, const pgs_frame *f, const uint8_t *p)
{
    px_session *ss = cl->sess;
    if (f->type == PGS_BE_ERROR ||
        (f->type == PGS_BE_COMMAND_COMPLETE && f->len >= 12 && memcmp(p + PGS_HDR_LEN, "ROLLBACK", 8) == 0)) {
        ss->pending_failed = true;
    } else if (f->type == PGS_BE_READY && p[5] == PGS_TX_IDLE) {
        bool committed = !ss->pending_failed;
        px_session_end(ss, committed);
        if (committed)
            sv->state_sig = ss->sig;
    }
}

/* The first byte of an answer is about to reach the client. A replica that answers a read
 * with FATAL (shutting down, crashed) is closed instead, so the read runs elsewhere; any
 * other answer ends the chance to retry. Returns 0, or -1 when the server was closed. */
static int server_first_reply(px_server *sv, px_client *cl, const pgs_frame *f, const uint8_t *p,
                              size_t avail)
{
    /* An immediate shutdown says so in a WARNING notice (class 57) before dropping us. */
    if (px_retry_armed(cl) && (f->type == PGS_BE_ERROR || f->type == PGS_BE_NOTICE) && avail >= f->total) {
        pgs_error_fields ef;
        if (pgs_error_parse(p + PGS_HDR_LEN, f->len - 4, &ef) == 0 &&
            (strcmp(ef.severity, "FATAL") == 0 || strcmp(ef.severity, "PANIC") == 0 ||
             (f->type == PGS_BE_NOTICE && strncmp(ef.sqlstate, "57", 2) == 0))) {
            px_route_node_failed(sv->conn.w, sv->pool->shard, sv->pool->nodeix);
            px_server_close(sv, "the replica failed before answering the read");
            return -1;
        }
    }
    sv->link->sent_any = true;
    px_route_disarm(cl);
    return 0;
}

/* Relays the server's bytes to the linked client. Each message's type is checked against
 * the replies owed; ReadyForQuery frees the server in transaction pooling when the client
 * has nothing else running and no transaction open. */
static px_step server_active_step(px_server *sv)
{
    px_conn *c = &sv->conn;
    px_link *l = sv->link;
    if (l->fan)
        return px_fanout_server_step(sv);
    if (l->parked)
        return PX_STEP_WAIT; /* read again once its client's statements come back to it */
    px_client *cl = l->cl;
    px_conn *dest = px_link_dest(l);
    size_t avail = c->in.len - c->in_pos;
    if (avail == 0)
        return PX_STEP_WAIT;
    if (c->pass_left) {
        size_t k = avail < c->pass_left ? avail : c->pass_left;
        c->in_pos += k;
        c->pass_left -= (uint32_t)k;
        px_reply_ent *h = px_replies_head(&sv->replies);
        if (c->pass_left == 0 && h && h->kind >= RP_FAKE_CLOSE) {
            px_conn_flush_forward(c, dest);
            px_server_emit_fakes(sv);
        }
        return PX_STEP_AGAIN;
    }
    pgs_frame f;
    const uint8_t *p = px_conn_at(c);
    int r = pgs_frame_read(p, avail, PGS_MAX_MSG_LEN, &f);
    if (r == 0)
        return PX_STEP_WAIT;
    if (r < 0) {
        px_server_close(sv, "invalid message length from server");
        return PX_STEP_CLOSED;
    }
    if (f.type == PGS_BE_READY && avail < f.total)
        return PX_STEP_WAIT;
    if (px_retry_armed(cl) && !l->sent_any && (f.type == PGS_BE_ERROR || f.type == PGS_BE_NOTICE) &&
        avail < f.total)
        return server_need(sv, &f, avail); /* whole, to see whether the replica is going away */
    if (f.type == PGS_BE_READY && f.len != 5) {
        px_server_close(sv, "malformed ReadyForQuery from server");
        return PX_STEP_CLOSED;
    }
    bool pending = cl->sess && px_session_has_pending(cl->sess);
    if (pending && f.type == PGS_BE_COMMAND_COMPLETE && avail < f.total)
        return server_need(sv, &f, avail);
    px_relay hide = px_ext_server_message(sv, &f, p, avail);
    if (hide == PX_RELAY_WHOLE)
        return server_need(sv, &f, avail);
    if (hide == PX_RELAY_DESYNC) {
        px_server_close(sv, "reply does not match what was sent (protocol desync)");
        return PX_STEP_CLOSED;
    }
    if (hide == PX_RELAY_CLOSED)
        return PX_STEP_CLOSED;
    if (pending)
        server_track_session(sv, cl, &f, p);
    if (hide == PX_RELAY && !l->sent_any && server_first_reply(sv, cl, &f, p, avail) < 0)
        return PX_STEP_CLOSED;
    if (hide == PX_RELAY_HIDE) {
        /* Hidden replies are whole in the buffer (small, checked above or bodiless). */
        px_conn_flush_forward(c, dest);
        c->in_pos += f.total;
        c->fwd_mark = c->in_pos;
    } else {
        size_t take = avail < f.total ? avail : f.total;
        c->in_pos += take;
        c->pass_left = (uint32_t)(f.total - take);
    }
    if (f.type == PGS_BE_ERROR && hide == PX_RELAY)
        sv->pool->st.errors++;
    if (f.type == PGS_BE_READY && hide == PX_RELAY) {
        sv->tx_status = (char)p[5];
        server_count_ready(sv);
        if (sv->tx_status == PGS_TX_IDLE && sv->replies.n == 0)
            px_move_xact_end(cl); /* its transaction is over, whether or not the server is released */
        if (sv->stmts_doubtful && sv->saw_error)
            sv->close_on_release = true;
        sv->stmts_doubtful = false;
        sv->saw_error = false;
    }
    px_reply_ent *h = px_replies_head(&sv->replies);
    if (h && h->kind >= RP_FAKE_CLOSE && c->pass_left == 0) {
        px_conn_flush_forward(c, dest);
        px_server_emit_fakes(sv);
    }
    if (f.type == PGS_BE_READY && sv->conn.w->conf->cfg->pool_mode == CFG_POOL_TRANSACTION &&
        px_server_clean(sv) && cl->conn.pass_left == 0 && !cl->x.paused && !px_pin_holds(sv)) {
        px_conn_flush_forward(c, dest);
        px_server_release(sv);
    }
    return PX_STEP_AGAIN;
}

void px_server_process(px_server *sv)
{
    px_conn *c = &sv->conn;
    if (c->processing || c->closing)
        return;
    c->processing = true;
    px_step r = PX_STEP_AGAIN;
    while (r == PX_STEP_AGAIN && sv->state != SV_CLOSED) {
        switch (sv->state) {
        case SV_TLS:
            r = server_tls_step(sv);
            break;
        case SV_LOGIN:
            r = server_login_step(sv);
            break;
        case SV_IDLE:
            r = server_idle_step(sv);
            break;
        case SV_RESET:
            r = server_reset_step(sv);
            break;
        case SV_ACTIVE:
            r = server_active_step(sv);
            break;
        default:
            r = 0;
            break;
        }
        if (sv->state != SV_ACTIVE)
            c->fwd_mark = c->in_pos;
    }
    c->processing = false;
    if (sv->state == SV_CLOSED)
        return;
    px_link *l = sv->state == SV_ACTIVE && sv->link && !sv->link->fan && !sv->link->parked ? sv->link : NULL;
    px_client *cl = l ? l->cl : NULL;
    if (l)
        px_conn_flush_forward(c, px_link_dest(l));
    px_conn_after_input(c);
    /* A client waiting on this server's answers tries again. */
    if (cl && cl->x.paused) {
        cl->x.paused = false;
        px_client_process(cl);
    }
    /* Replies were taken off its queue: a client stopped for owing too many is read again. */
    if (cl && !cl->conn.closing && px_client_server(cl) == sv)
        px_client_update_reading(cl);
    if (sv->state == SV_IDLE && !pgs_node_linked(&sv->idle_node))
        px_pool_server_ready(sv->pool, sv);
    if (sv->state != SV_CLOSED)
        px_server_update_reading(sv);
}

void px_server_update_reading(px_server *sv)
{
    bool on = true;
    /* A parked server owes nothing, and has no client stream to put anything in. */
    if (sv->state == SV_CONNECTING || sv->state == SV_CLOSED ||
        (sv->state == SV_ACTIVE && sv->link && sv->link->parked))
        on = false;
    else if (sv->state == SV_ACTIVE && sv->link && sv->link->fan)
        on = px_fanout_server_reading(sv);
    else if (sv->state == SV_ACTIVE && sv->link)
        on = px_conn_idle_io(px_link_dest(sv->link));
    px_conn_set_reading(&sv->conn, on);
}

void px_server_on_drained(px_server *sv)
{
    if (sv->link && sv->link->fan)
        px_fanout_server_drained(sv);
    else if (sv->link && !sv->link->parked)
        px_client_update_reading(sv->link->cl);
}

static void server_send_startup(px_server *sv)
{
    pgs_buf b = PGS_BUF_INIT;
    size_t st = pgs_msg_begin(&b, 0);
    pgs_buf_append_be32(&b, PGS_PROTO_V3);
    pgs_buf_append_cstr(&b, "user");
    pgs_buf_append_cstr(&b, sv->pool->user->cfg->name);
    pgs_buf_append_cstr(&b, "database");
    pgs_buf_append_cstr(&b, sv->pool->db_name);
    pgs_buf_append_u8(&b, 0);
    pgs_msg_end(&b, st);
    server_set_state(sv, SV_LOGIN);
    px_conn_send_buf(&sv->conn, &b);
    pgs_buf_free(&b);
}

/* The TLS handshake with the server is done: log in over it. */
void px_server_tls_ready(px_server *sv)
{
    if (sv->state == SV_TLS)
        server_send_startup(sv);
}

/* The server's one-byte answer to our SSLRequest. Only prefer goes on in plaintext when
 * the server has no TLS; require, verify-ca and verify-full give up, as libpq does. A
 * certificate that fails verify-ca or verify-full ends the handshake, and the transport's
 * reason closes the server (conn.c). */
static px_step server_tls_step(px_server *sv)
{
    px_conn *c = &sv->conn;
    if (px_conn_is_tls(c) || c->in.len - c->in_pos < 1)
        return PX_STEP_WAIT; /* handshake running: the transport calls px_server_tls_ready */
    uint8_t answer = c->in.data[c->in_pos++];
    cfg_server_tls mode = c->w->px->cfg->server_tls;
    if (answer == 'S') {
        if (c->in_pos != c->in.len) {
            px_server_close(sv, "server sent data after accepting TLS");
            return PX_STEP_CLOSED;
        }
        /* The node from the startup conf: the handshake borrows it for longer than this
         * worker may keep its conf, and a reload never changes the nodes. */
        if (px_tls_connect(c, px_conf_cfg_node(c->w->px->start, sv->pool->shard, sv->pool->nodeix)) < 0) {
            px_server_close(sv, "cannot start TLS towards the server");
            return PX_STEP_CLOSED;
        }
        return PX_STEP_WAIT;
    }
    if (answer == 'N' && mode < CFG_STLS_REQUIRE) {
        server_send_startup(sv);
        return PX_STEP_AGAIN;
    }
    char why[96];
    if (answer == 'N')
        snprintf(why, sizeof why, "server_tls = %s but the server does not support TLS",
                 cfg_server_tls_name(mode));
    else
        snprintf(why, sizeof why, "unexpected answer to SSLRequest");
    px_server_close(sv, why);
    return PX_STEP_CLOSED;
}

/* TCP keepalive and TCP_USER_TIMEOUT as configured, so that a server that went silent (host
 * down, network cut) is closed and its client told, not left waiting for the kernel's
 * 15-minute retransmission limit. Failures only cost that detection: logged, not fatal. */
static void server_tcp_options(px_server *sv)
{
    const cfg_config *cfg = sv->conn.w->conf->cfg;
    uv_os_fd_t fd;
    if (uv_fileno((uv_handle_t *)&sv->conn.tcp, &fd) < 0)
        return;
    int on = cfg->server_keepalive_idle > 0, ut = (int)cfg->server_tcp_user_timeout_ms;
    bool ok = setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on) == 0;
    if (on) {
        ok = ok && setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &cfg->server_keepalive_idle, sizeof(int)) == 0;
        ok = ok &&
             setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &cfg->server_keepalive_interval, sizeof(int)) == 0;
        ok = ok && setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cfg->server_keepalive_count, sizeof(int)) == 0;
    }
    if (ut)
        ok = ok && setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &ut, sizeof ut) == 0;
    if (!ok)
        pgs_warn("server_tcp_options", "server pid %u: setting keepalive or TCP_USER_TIMEOUT failed: %s",
                 sv->be_pid, strerror(errno));
}

static void server_on_connect(uv_connect_t *req, int status)
{
    px_server *sv = req->data;
    if (sv->state != SV_CONNECTING)
        return;
    if (status < 0) {
        char why[200];
        snprintf(why, sizeof why, "could not connect to server: %s", uv_strerror(status));
        px_server_close(sv, why);
        return;
    }
    uv_tcp_nodelay(&sv->conn.tcp, 1);
    server_tcp_options(sv);
    if (sv->conn.w->conf->cfg->server_tls != CFG_STLS_DISABLE) {
        static const uint8_t ssl_request[8] = {0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f};
        server_set_state(sv, SV_TLS);
        px_conn_send(&sv->conn, ssl_request, sizeof ssl_request);
    } else {
        server_send_startup(sv);
    }
    if (sv->state == SV_LOGIN || sv->state == SV_TLS)
        px_server_update_reading(sv);
}

/* Starts a new server connection for the pool. The pool counts it as connecting until it
 * is logged in or gone. */
px_server *px_server_connect(px_pool *pool)
{
    px_worker *w = pool->w;
    px_server *sv = calloc(1, sizeof *sv);
    if (!sv)
        return NULL;
    px_conn_init(&sv->conn, w, true);
    sv->pool = pool;
    sv->connect_req.data = sv;
    sv->tx_status = PGS_TX_IDLE;
    pgs_list_init(&sv->cancels);
    if (uv_tcp_init(&w->loop, &sv->conn.tcp) < 0) {
        free(sv);
        return NULL;
    }
    sv->state = SV_CONNECTING;
    sv->since = uv_now(&w->loop);
    pgs_list_push_back(&pool->servers, &sv->node);
    pool->nconnecting++;
    int r = uv_tcp_connect(&sv->connect_req, &sv->conn.tcp, px_conf_node(w->conf, pool->shard, pool->nodeix),
                           server_on_connect);
    if (r < 0) {
        pgs_list_remove(&pool->servers, &sv->node);
        pool->nconnecting--;
        sv->state = SV_CLOSED;
        px_conn_close(&sv->conn);
        return NULL;
    }
    return sv;
}

/* The client side of the proxy: startup negotiation, authentication against [user.NAME],
 * and the forwarding of a logged-in client's messages to the server it is linked to.
 * A client's life is the px_client_state enum; client_set_state() is the one place it
 * changes. What a server sends back is handled in server.c. */
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "proxy/px.h"

#define PX_MAX_AUTH_MSG 65536u

static const char *const client_state_names[] = {
    "startup", "auth", "wait_welcome", "idle", "wait_server", "active", "admin", "fanout", "closed",
};

/* A waiting client is in exactly one queue, and leaving the wait state leaves the queue,
 * so that the two can never disagree (PgBouncer's change_client_state). */
void px_client_set_state(px_client *cl, px_client_state st, pgs_list *queue)
{
    pgs_list *held = &cl->conn.w->move.held;
    if (cl->wait_list) {
        pgs_list_remove(cl->wait_list, &cl->wait_node);
        if (cl->wait_list == held)
            px_move_held_count(cl, -1);
        cl->wait_list = NULL;
    }
    if (queue) {
        pgs_list_push_back(queue, &cl->wait_node);
        cl->wait_list = queue;
        if (queue == held)
            px_move_held_count(cl, 1);
    }
    if (cl->state == st)
        return;
    pgs_debug("client_state", "client %08x: %s -> %s", cl->key_pid, client_state_names[cl->state],
              client_state_names[st]);
    cl->state = st;
}

static void client_set_state(px_client *cl, px_client_state st)
{
    px_client_set_state(cl, st, NULL);
}

/* The connection of the client's server, or NULL when it holds none. */
static px_conn *client_server_conn(px_client *cl)
{
    px_server *sv = px_client_server(cl);
    return sv ? &sv->conn : NULL;
}

void px_client_accept(px_worker *w)
{
    px_client *cl = calloc(1, sizeof *cl);
    if (!cl) {
        pgs_error("out_of_memory", "cannot accept a client");
        px_worker_refuse(w);
        return;
    }
    px_conn_init(&cl->conn, w, false);
    if (px_xact_init(cl, w->px->cfg->nshards) < 0) {
        free(cl);
        pgs_error("out_of_memory", "cannot accept a client");
        px_worker_refuse(w);
        return;
    }
    if (uv_tcp_init(&w->loop, &cl->conn.tcp) < 0) {
        px_xact_free(cl);
        free(cl);
        px_worker_refuse(w);
        return;
    }
    if (uv_accept((uv_stream_t *)&w->listener, (uv_stream_t *)&cl->conn.tcp) < 0) {
        cl->state = CL_CLOSED;
        px_conn_close(&cl->conn);
        return;
    }
    if (RAND_bytes((unsigned char *)&cl->key_secret, sizeof cl->key_secret) != 1) {
        pgs_error("random_failed", "no random bytes for a cancel key: connection closed");
        cl->state = CL_CLOSED;
        px_conn_close(&cl->conn);
        return;
    }
    uv_tcp_nodelay(&cl->conn.tcp, 1);
    cl->key_pid = px_worker_key_pid(w);
    cl->pinned_shard = -1;
    cl->accepted_at = uv_now(&w->loop);
    cl->max_lag_ms = UINT32_MAX;
    atomic_fetch_add_explicit(&w->px->gs.accepted, 1, memory_order_relaxed);
    pgs_list_push_back(&w->clients, &cl->node);
    cl->counted = true;
    int n = atomic_fetch_add(&w->px->nclients, 1) + 1;
    if (n > w->conf->cfg->max_client_conn)
        cl->over_limit = true;
    client_set_state(cl, CL_STARTUP);
    px_conn_set_reading(&cl->conn, true);
}

/* Sends a FATAL error and closes once it is written. */
void px_client_fatal_raw(px_client *cl, const uint8_t *msg, size_t n)
{
    px_conn *c = &cl->conn;
    if (c->closing || cl->state == CL_CLOSED)
        return;
    px_conn_send(c, msg, n);
    if (c->closing)
        return;
    px_client_close(cl);
}

void px_client_fatal_oom(px_client *cl)
{
    pgs_info("client_error", "client %08x user=%s db=%s: out of memory (%s)", cl->key_pid, cl->user_name,
             cl->db_name, PGS_SQLSTATE_OUT_OF_MEMORY);
    px_client_fatal_raw(cl, pgs_msg_fatal_oom, pgs_msg_fatal_oom_len);
}

void px_client_fatal(px_client *cl, const char *sqlstate, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    if (vsnprintf(msg, sizeof msg, fmt, ap) < 0)
        msg[0] = 0;
    va_end(ap);
    pgs_info("client_error", "client %08x user=%s db=%s: %s (%s)", cl->key_pid, cl->user_name, cl->db_name,
             msg, sqlstate);
    pgs_buf b = PGS_BUF_INIT;
    pgs_msg_notice_typed(&b, PGS_BE_ERROR, "FATAL", sqlstate, msg);
    if (!pgs_buf_failed(&b))
        px_client_fatal_raw(cl, b.data, b.len);
    else
        px_client_fatal_raw(cl, pgs_msg_fatal_oom, pgs_msg_fatal_oom_len);
    pgs_buf_free(&b);
}

/* Closes the client. Its server goes back to the pool only when nothing of the client's
 * is half done on it; otherwise the server is closed, which makes PostgreSQL roll back. */
void px_client_close(px_client *cl)
{
    if (cl->state == CL_CLOSED)
        return;
    px_worker *w = cl->conn.w;
    px_buf_give(w, &cl->x.retry);
    client_set_state(cl, CL_CLOSED);
    if (cl->pool)
        cl->pool->nclients--;
    pgs_list_remove(&w->clients, &cl->node);
    if (cl->counted) {
        atomic_fetch_sub(&w->px->nclients, 1);
        cl->counted = false;
    }
    if (cl->user_counted) {
        atomic_fetch_sub_explicit(cl->user->nconn, 1, memory_order_relaxed);
        cl->user_counted = false;
    }
    px_fanout_abort(cl);
    px_xact_drop_parked(cl);
    px_move_xact_end(cl); /* whatever it ran ends with it */
    bool clean = cl->x.nlinks && px_server_clean(px_client_server(cl)) && cl->conn.pass_left == 0;
    px_server *sv = px_xact_detach(cl);
    if (sv) {
        if (clean)
            px_server_release(sv);
        else
            px_server_close(sv, "client left in the middle of a transaction or message");
    }
    /* Let queued bytes (an error message) reach the client before the socket closes,
     * unless pgshard is stopping; what the input pass gathered is written first. */
    if (px_conn_uncork(&cl->conn) == 0 && !px_conn_idle_io(&cl->conn) && !atomic_load(&w->px->stopping)) {
        cl->conn.close_after_flush = true;
        px_conn_set_reading(&cl->conn, false);
        return;
    }
    px_conn_close(&cl->conn);
}

static void client_auth_ok(px_client *cl, pgs_buf *b)
{
    int limit = cl->user->cfg->max_connections;
    int n = atomic_fetch_add_explicit(cl->user->nconn, 1, memory_order_relaxed) + 1;
    cl->user_counted = true;
    if (limit && n > limit) {
        px_client_fatal(cl, PGS_SQLSTATE_TOO_MANY_CONNECTIONS,
                        "too many connections for role \"%s\" (max_connections %d)", cl->user_name, limit);
        return;
    }
    pgs_msg_auth(b, 0, NULL, 0);
    cl->auth = AUTH_NONE;
    if (px_conn_send_buf(&cl->conn, b) < 0)
        return;
    if (strcmp(cl->db_name, "pgshard") == 0) {
        px_admin_login(cl);
        return;
    }
    cl->pool = px_route_home_pool(cl);
    if (!cl->pool) {
        px_client_fatal(cl, PGS_SQLSTATE_OUT_OF_MEMORY, "out of memory");
        return;
    }
    cl->pool->nclients++;
    pgs_info("client_login", "client %08x user=%s db=%s tls=%s", cl->key_pid, cl->user_name, cl->db_name,
             px_conn_is_tls(&cl->conn) ? "yes" : "no");
    cl->wait_since = uv_now(&cl->conn.w->loop);
    /* In session pooling the client's server is its backend: it is taken now, and the
     * welcome waits for it so that pg_backend_pid(), BackendKeyData and the pid of a
     * NotificationResponse agree, as on PostgreSQL. Sharded, the server depends on the
     * first statement's shard, and the pid is pgshard's own. */
    if (cl->conn.w->conf->cfg->pool_mode == CFG_POOL_SESSION && !cl->conn.w->px->sharded) {
        cl->welcome_owed = true;
        int r = px_route_session_server(cl);
        if (r < 0) {
            px_client_fatal(cl, PGS_SQLSTATE_OUT_OF_MEMORY, "out of memory");
            return;
        }
        if (r == 0)
            return; /* linked (and welcomed) now, or when the pool has a server */
        cl->welcome_owed = false;
        cl->refuse = 0;
    }
    px_pool_want_welcome(cl->pool, cl);
}

/* The value the client asked for in its startup packet, or NULL. */
static const char *client_startup_value(const px_client *cl, const char *name)
{
    pgs_reader rd = pgs_reader_make(cl->startup.data, cl->startup.len);
    const char *k, *v;
    while (pgs_rd_cstr(&rd, &k) == 0 && pgs_rd_cstr(&rd, &v) == 0)
        if (strcasecmp(k, name) == 0)
            return v;
    return NULL;
}

/* The ParameterStatus messages of a server's login (wb), with the values the client set at
 * startup. */
static void client_welcome_params(const px_client *cl, const pgs_buf *wb, pgs_buf *b)
{
    /* A server that sent no ParameterStatus leaves the welcome without storage: nothing to
     * walk (and wb->data + 0 would be arithmetic on NULL). */
    if (!cl->startup.len || !wb->len) {
        pgs_buf_append(b, wb->data, wb->len);
        return;
    }
    size_t off = 0;
    pgs_frame f;
    while (pgs_frame_read(wb->data + off, wb->len - off, PGS_MAX_MSG_LEN, &f) == 1 &&
           off + f.total <= wb->len) {
        pgs_reader rd = pgs_reader_make(wb->data + off + PGS_HDR_LEN, f.len - 4);
        const char *name, *mine;
        if (pgs_rd_cstr(&rd, &name) == 0 && (mine = client_startup_value(cl, name)))
            pgs_msg_param_status(b, name, mine);
        else
            pgs_buf_append(b, wb->data + off, f.total);
        off += f.total;
    }
}

/* Tells a client its session parameters, cancel key and readiness. Called as soon as the
 * pool knows the server's parameters. */
/* The welcome's messages: parameters, cancel key, readiness. */
static int client_send_welcome(px_client *cl, const pgs_buf *params)
{
    pgs_buf b = PGS_BUF_INIT;
    client_welcome_params(cl, params, &b);
    pgs_buf_free(&cl->startup);
    pgs_msg_backend_key(&b, cl->key_pid, cl->key_secret);
    pgs_msg_ready(&b, PGS_TX_IDLE);
    int r = px_conn_send_buf(&cl->conn, &b);
    pgs_buf_free(&b);
    return r;
}

void px_client_welcome(px_client *cl)
{
    client_set_state(cl, CL_IDLE);
    if (client_send_welcome(cl, &cl->pool->welcome) == 0)
        px_client_process(cl);
}

static void client_begin_auth(px_client *cl)
{
    px_proxy *px = cl->conn.w->px;
    pgs_buf b = PGS_BUF_INIT;
    /* The user entry stays the client's for life (secrets, limits, its pools' key), so the
     * client holds the worker's conf of this moment until it is freed (conn.c). */
    const px_user *u = px_user_find(cl->conn.w->conf, cl->user_name);
    if (u)
        px_conf_hold(u->conf);
    if (cl->user) /* set once per client today; releasing first keeps the count right anyway */
        px_conf_release(cl->user->conf);
    cl->user = u;
    if (!cl->user) {
        atomic_fetch_add_explicit(&px->gs.auth_failures, 1, memory_order_relaxed);
        pgs_warn("auth_failed", "client %08x: no such user \"%s\"", cl->key_pid, cl->user_name);
        px_client_fatal(cl, PGS_SQLSTATE_INVALID_AUTHORIZATION, "no such user \"%s\"", cl->user_name);
        return;
    }
    cfg_auth_type at = cl->conn.w->conf->cfg->auth_type;
    if (at == CFG_AUTH_TRUST) {
        client_auth_ok(cl, &b);
    } else if (at == CFG_AUTH_MD5 && cl->user->has_md5) {
        if (RAND_bytes(cl->a.md5_salt, 4) != 1) {
            px_client_fatal(cl, PGS_SQLSTATE_INTERNAL_ERROR, "random generator failed");
            return;
        }
        pgs_msg_auth(&b, 5, cl->a.md5_salt, 4);
        cl->auth = AUTH_MD5;
        client_set_state(cl, CL_AUTH);
        px_conn_send_buf(&cl->conn, &b);
    } else if (cl->user->has_scram) {
        cl->a.scram = malloc(sizeof *cl->a.scram);
        if (!cl->a.scram) {
            px_client_fatal(cl, PGS_SQLSTATE_OUT_OF_MEMORY, "out of memory");
            return;
        }
        px_scram_server_init(cl->a.scram, &cl->user->scram);
        static const char mechs[] = "SCRAM-SHA-256\0";
        pgs_msg_auth(&b, 10, mechs, sizeof mechs);
        cl->auth = AUTH_SCRAM_FIRST;
        client_set_state(cl, CL_AUTH);
        px_conn_send_buf(&cl->conn, &b);
    } else {
        pgs_warn("auth_failed", "user \"%s\" has no password usable for %s", cl->user_name,
                 cfg_auth_type_name(at));
        px_client_fatal(cl, PGS_SQLSTATE_INVALID_PASSWORD, "password authentication failed for user \"%s\"",
                        cl->user_name);
    }
    pgs_buf_free(&b);
}

static void client_auth_failed(px_client *cl)
{
    atomic_fetch_add_explicit(&cl->conn.w->px->gs.auth_failures, 1, memory_order_relaxed);
    pgs_warn("auth_failed", "client %08x: password authentication failed for user \"%s\"", cl->key_pid,
             cl->user_name);
    px_client_fatal(cl, PGS_SQLSTATE_INVALID_PASSWORD, "password authentication failed for user \"%s\"",
                    cl->user_name);
}

static void client_auth_scram(px_client *cl, const uint8_t *body, size_t n)
{
    pgs_buf b = PGS_BUF_INIT;
    int r;
    if (cl->auth == AUTH_SCRAM_FIRST) {
        pgs_reader rd = pgs_reader_make(body, n);
        const char *mech;
        uint32_t dlen;
        const uint8_t *data;
        if (pgs_rd_cstr(&rd, &mech) < 0 || pgs_rd_be32(&rd, &dlen) < 0 || dlen != rd.left ||
            pgs_rd_bytes(&rd, dlen, &data) < 0) {
            px_client_fatal(cl, PGS_SQLSTATE_PROTOCOL_VIOLATION, "malformed SASLInitialResponse message");
            goto out;
        }
        if (strcmp(mech, "SCRAM-SHA-256") != 0) {
            px_client_fatal(cl, PGS_SQLSTATE_PROTOCOL_VIOLATION,
                            "client selected an invalid SASL authentication mechanism");
            goto out;
        }
        size_t st = pgs_msg_begin(&b, PGS_BE_AUTH);
        pgs_buf_append_be32(&b, 11);
        if (px_scram_server_first(cl->a.scram, data, dlen, NULL, &b) < 0) {
            if (pgs_buf_failed(&b))
                px_client_fatal_oom(cl);
            else
                px_client_fatal(cl, PGS_SQLSTATE_PROTOCOL_VIOLATION, "malformed SCRAM message");
            goto out;
        }
        pgs_msg_end(&b, st);
        cl->auth = AUTH_SCRAM_FINAL;
        px_conn_send_buf(&cl->conn, &b);
        goto out;
    }
    size_t st = pgs_msg_begin(&b, PGS_BE_AUTH);
    pgs_buf_append_be32(&b, 12);
    r = px_scram_server_final(cl->a.scram, body, n, &b);
    pgs_msg_end(&b, st);
    free(cl->a.scram);
    cl->a.scram = NULL;
    cl->auth = AUTH_NONE;
    if (r == -2) {
        client_auth_failed(cl);
        goto out;
    }
    if (r < 0 && pgs_buf_failed(&b)) {
        px_client_fatal_oom(cl);
        goto out;
    }
    if (r < 0) {
        px_client_fatal(cl, PGS_SQLSTATE_PROTOCOL_VIOLATION, "malformed SCRAM message");
        goto out;
    }
    client_auth_ok(cl, &b);
out:
    pgs_buf_free(&b);
}

/* One password message ('p') of the exchange begun in client_begin_auth(). */
static px_step client_auth_step(px_client *cl)
{
    px_conn *c = &cl->conn;
    pgs_frame f;
    const uint8_t *p = px_conn_at(c);
    int r = pgs_frame_read(p, c->in.len - c->in_pos, PX_MAX_AUTH_MSG, &f);
    if (r == 0)
        return PX_STEP_WAIT;
    if (r < 0) {
        px_client_fatal(cl, PGS_SQLSTATE_PROTOCOL_VIOLATION, "invalid message length");
        return PX_STEP_CLOSED;
    }
    if (f.type != PGS_FE_PASSWORD) {
        px_client_fatal(cl, PGS_SQLSTATE_PROTOCOL_VIOLATION,
                        "expected password response, got message type %d", f.type);
        return PX_STEP_CLOSED;
    }
    if (c->in.len - c->in_pos < f.total)
        return PX_STEP_WAIT;
    c->in_pos += f.total;
    c->fwd_mark = c->in_pos;
    const uint8_t *body = p + PGS_HDR_LEN;
    size_t n = f.len - 4;
    if (cl->auth == AUTH_MD5) {
        pgs_reader rd = pgs_reader_make(body, n);
        const char *resp;
        if (pgs_rd_cstr(&rd, &resp) < 0 || rd.left != 0) {
            px_client_fatal(cl, PGS_SQLSTATE_PROTOCOL_VIOLATION, "invalid password packet size");
            return PX_STEP_CLOSED;
        }
        cl->auth = AUTH_NONE;
        if (px_md5_verify(cl->user->md5, cl->user_name, cl->a.md5_salt, resp) < 0) {
            client_auth_failed(cl);
            return PX_STEP_CLOSED;
        }
        pgs_buf b = PGS_BUF_INIT;
        client_auth_ok(cl, &b);
        pgs_buf_free(&b);
    } else {
        client_auth_scram(cl, body, n);
    }
    return cl->state == CL_CLOSED ? PX_STEP_CLOSED : PX_STEP_AGAIN;
}

static bool c_requires_tls(const px_client *cl)
{
    return cl->conn.w->conf->cfg->client_tls == CFG_CTLS_REQUIRE && !px_conn_is_tls(&cl->conn);
}

static px_session *client_session(px_client *cl)
{
    if (!cl->sess)
        cl->sess = calloc(1, sizeof *cl->sess);
    return cl->sess;
}

/* The startup parameter "options" (PGOPTIONS): "-c name=value" and "--name=value" become
 * session settings like other startup parameters; any other switch is refused. Words are
 * split at whitespace, a backslash keeps the next character, as PostgreSQL does. */
static int client_startup_options(px_client *cl, const char *opts)
{
    char word[1024];
    bool want_c = false;
    for (const char *p = opts;;) {
        while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
            p++;
        if (!*p)
            break;
        size_t n = 0;
        while (*p && *p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
            if (*p == '\\' && p[1])
                p++;
            if (n + 1 < sizeof word)
                word[n++] = *p;
            p++;
        }
        word[n] = 0;
        const char *setting = NULL;
        if (want_c)
            setting = word;
        else if (strcmp(word, "-c") == 0)
            want_c = true;
        else if (strncmp(word, "-c", 2) == 0 || strncmp(word, "--", 2) == 0)
            setting = word + 2;
        else {
            px_client_fatal(cl, PGS_SQLSTATE_FEATURE_NOT_SUPPORTED,
                            "pgshard: unsupported startup option \"%s\" (only -c name=value)", word);
            return -1;
        }
        if (!setting)
            continue;
        want_c = false;
        char *eq = strchr(setting, '=');
        if (!eq || eq == setting) {
            px_client_fatal(cl, PGS_SQLSTATE_SYNTAX_ERROR,
                            "invalid startup option \"%s\": expected name=value", setting);
            return -1;
        }
        *eq = 0;
        /* setting is inside word's NUL-terminated text; the analyzer does not model strncmp
         * and thinks a lone "-" gets here. NOLINTNEXTLINE(clang-analyzer-core.uninitialized.Branch) */
        for (char *q = (char *)setting; *q; q++)
            if (*q == '-')
                *q = '_';
        px_session *ss = client_session(cl);
        if (!ss || px_session_add_param(ss, setting, eq + 1) < 0) {
            px_client_fatal(cl, PGS_SQLSTATE_OUT_OF_MEMORY, "out of memory");
            return -1;
        }
        pgs_buf_append_cstr(&cl->startup, setting);
        pgs_buf_append_cstr(&cl->startup, eq + 1);
    }
    return 0;
}

static void client_copy_name(char *dst, const char *src)
{
    size_t n = pgs_strnlen(src, PX_NAME_MAX - 1);
    memcpy(dst, src, n);
    dst[n] = 0;
}

static bool option_true(const char *v)
{
    return strcmp(v, "true") == 0 || strcmp(v, "on") == 0 || strcmp(v, "yes") == 0 || strcmp(v, "1") == 0 ||
           strcmp(v, "database") == 0;
}

/* Answers a StartupMessage of protocol 3.x. Newer minor versions and _pq_ options are
 * answered with NegotiateProtocolVersion, as PostgreSQL does. */
static void client_startup_message(px_client *cl, uint32_t version, const uint8_t *body, size_t n)
{
    pgs_reader rd = pgs_reader_make(body, n);
    pgs_buf unknown = PGS_BUF_INIT;
    uint32_t nunknown = 0;
    bool have_user = false, have_db = false;
    for (;;) {
        const char *key, *val;
        if (pgs_rd_cstr(&rd, &key) < 0) {
            px_client_fatal(cl, PGS_SQLSTATE_PROTOCOL_VIOLATION,
                            "invalid startup packet layout: expected terminator as last byte");
            goto out;
        }
        if (key[0] == 0)
            break;
        if (pgs_rd_cstr(&rd, &val) < 0) {
            px_client_fatal(cl, PGS_SQLSTATE_PROTOCOL_VIOLATION,
                            "invalid startup packet layout: expected terminator as last byte");
            goto out;
        }
        if (strcmp(key, "user") == 0) {
            client_copy_name(cl->user_name, val);
            have_user = true;
        } else if (strcmp(key, "database") == 0) {
            client_copy_name(cl->db_name, val);
            have_db = val[0] != 0;
        } else if (strcmp(key, "replication") == 0 && option_true(val)) {
            px_client_fatal(cl, PGS_SQLSTATE_FEATURE_NOT_SUPPORTED,
                            "pgshard does not support replication connections");
            goto out;
        } else if (strncmp(key, "_pq_.", 5) == 0) {
            pgs_buf_append_cstr(&unknown, key);
            nunknown++;
        } else if (strcmp(key, "options") == 0) {
            if (client_startup_options(cl, val) < 0)
                goto out;
        } else if (strcmp(key, "replication") != 0) {
            /* Other parameters become the client's session settings, replayed on every
             * server it gets, and are reported back in its welcome. */
            px_session *ss = client_session(cl);
            pgs_buf_append_cstr(&cl->startup, key);
            pgs_buf_append_cstr(&cl->startup, val);
            if (!ss || px_session_add_param(ss, key, val) < 0 || pgs_buf_failed(&cl->startup)) {
                px_client_fatal(cl, PGS_SQLSTATE_OUT_OF_MEMORY, "out of memory");
                goto out;
            }
        }
    }
    if (rd.left != 0) {
        px_client_fatal(cl, PGS_SQLSTATE_PROTOCOL_VIOLATION,
                        "invalid startup packet layout: expected terminator as last byte");
        goto out;
    }
    if (!have_user || cl->user_name[0] == 0) {
        px_client_fatal(cl, PGS_SQLSTATE_INVALID_AUTHORIZATION,
                        "no PostgreSQL user name specified in startup packet");
        goto out;
    }
    if (!have_db)
        memcpy(cl->db_name, cl->user_name, sizeof cl->db_name);
    if ((version & 0xffff) != 0 || nunknown) {
        pgs_buf b = PGS_BUF_INIT;
        size_t st = pgs_msg_begin(&b, PGS_BE_NEGOTIATE);
        pgs_buf_append_be32(&b, 0);
        pgs_buf_append_be32(&b, nunknown);
        pgs_buf_append(&b, unknown.data, unknown.len);
        pgs_msg_end(&b, st);
        px_conn_send_buf(&cl->conn, &b);
        pgs_buf_free(&b);
    }
    if (c_requires_tls(cl)) {
        px_client_fatal(cl, PGS_SQLSTATE_INVALID_AUTHORIZATION,
                        "pgshard: TLS is required (client_tls = require)");
        goto out;
    }
    if (cl->over_limit) {
        px_client_fatal(cl, PGS_SQLSTATE_TOO_MANY_CONNECTIONS,
                        "sorry, too many clients already (max_client_conn %d)",
                        cl->conn.w->conf->cfg->max_client_conn);
        goto out;
    }
    client_begin_auth(cl);
out:
    pgs_buf_free(&unknown);
}

static void client_cancel_request(px_client *cl, const uint8_t *body)
{
    uint32_t pid = pgs_be32(body), secret = pgs_be32(body + 4);
    px_proxy *px = cl->conn.w->px;
    /* pgshard's own pids name their worker, a server's pid (session pooling) does not, and
     * pool_mode may change on reload: every worker looks (cancels are rare). */
    for (int i = 0; i < px->nworkers; i++) {
        if (i == cl->conn.w->id)
            px_client_cancel(cl->conn.w, pid, secret);
        else
            px_worker_post_cancel(&px->workers[i], pid, secret);
    }
    /* As PostgreSQL: the cancelling connection gets no answer, only a close. */
    px_client_close(cl);
}

/* One untyped startup packet: SSLRequest, GSSENCRequest, CancelRequest or StartupMessage. */
static px_step client_startup_step(px_client *cl)
{
    px_conn *c = &cl->conn;
    size_t avail = c->in.len - c->in_pos;
    const uint8_t *p = px_conn_at(c);
    if (avail < 4)
        return PX_STEP_WAIT;
    uint32_t len = pgs_be32(p);
    if (len < 8 || len > PGS_MAX_STARTUP_LEN) {
        atomic_fetch_add_explicit(&c->w->px->gs.protocol_errors, 1, memory_order_relaxed);
        px_client_fatal(cl, PGS_SQLSTATE_PROTOCOL_VIOLATION, "invalid length of startup packet");
        return PX_STEP_CLOSED;
    }
    if (avail < len)
        return PX_STEP_WAIT;
    uint32_t code = pgs_be32(p + 4);
    c->in_pos += len;
    c->fwd_mark = c->in_pos;
    if (code == PGS_CODE_SSL || code == PGS_CODE_GSSENC) {
        bool *asked = code == PGS_CODE_SSL ? &cl->ssl_asked : &cl->gss_asked;
        if (*asked || len != 8) {
            px_client_fatal(cl, PGS_SQLSTATE_PROTOCOL_VIOLATION, "unsupported frontend protocol %u.%u",
                            code >> 16, code & 0xffff);
            return PX_STEP_CLOSED;
        }
        *asked = true;
        /* Bytes sent before our answer would be read as plaintext by a TLS client. */
        if (c->in_pos != c->in.len) {
            px_client_fatal(cl, PGS_SQLSTATE_PROTOCOL_VIOLATION,
                            "received unencrypted data after SSL request");
            return PX_STEP_CLOSED;
        }
        void *ctx = c->w->px->tls_accept_ctx;
        if (code == PGS_CODE_GSSENC || !ctx) {
            px_conn_send(c, "N", 1);
            return PX_STEP_AGAIN;
        }
        px_conn_send(c, "S", 1);
        if (px_tls_start(c, ctx, true) < 0) {
            px_client_close(cl);
            return PX_STEP_CLOSED;
        }
        return PX_STEP_AGAIN;
    }
    if (code == PGS_CODE_CANCEL) {
        if (len != 16) {
            px_client_close(cl);
            return PX_STEP_CLOSED;
        }
        client_cancel_request(cl, p + 8);
        return PX_STEP_CLOSED;
    }
    if ((code >> 16) != 3) {
        px_client_fatal(cl, PGS_SQLSTATE_FEATURE_NOT_SUPPORTED,
                        "unsupported frontend protocol %u.%u: server supports 3.0 to 3.0", code >> 16,
                        code & 0xffff);
        return PX_STEP_CLOSED;
    }
    client_startup_message(cl, code, p + 8, len - 8);
    return cl->state == CL_CLOSED ? PX_STEP_CLOSED : PX_STEP_AGAIN;
}

/* The reply a forwarded message is owed, for the messages that get one. */
static int client_reply_kind(char type)
{
    switch (type) {
    case PGS_FE_QUERY:
    case PGS_FE_FUNCTION_CALL:
        return RP_QUERY;
    case PGS_FE_SYNC:
        return RP_SYNC;
    case PGS_FE_PARSE:
        return RP_PARSE;
    case PGS_FE_BIND:
        return RP_BIND;
    case PGS_FE_DESCRIBE:
        return RP_DESCRIBE;
    case PGS_FE_EXECUTE:
        return RP_EXECUTE;
    case PGS_FE_CLOSE:
        return RP_CLOSE;
    default:
        return -1;
    }
}

/* Sends the client's session state to a server that does not have it (another client's
 * SETs, or none of the client's), ahead of the client's first message; the reply is
 * hidden. A server already in the same state gets nothing. */
bool px_client_replay_session(px_client *cl, px_server *sv)
{
    uint64_t sig = cl->sess ? cl->sess->sig : 0;
    if (sv->state_sig == sig)
        return false;
    pgs_buf b = PGS_BUF_INIT;
    size_t m = pgs_msg_begin(&b, PGS_FE_QUERY);
    px_session_replay_sql(cl->sess ? cl->sess : &(px_session){0}, &b);
    pgs_buf_append_u8(&b, 0);
    pgs_msg_end(&b, m);
    sv->state_sig = sig;
    px_conn_flush_forward(&cl->conn, &sv->conn);
    px_server_push_reply(sv, RP_REPLAY, 0);
    px_conn_send_buf(&sv->conn, &b);
    pgs_buf_free(&b);
    return true;
}

/* Notes a RESET, RESET ALL or DISCARD ALL of a startup parameter in a Query or an unnamed
 * Parse, in either pool mode: once the Query or the segment's Sync is forwarded, the startup
 * values are set again behind it (client_restore_startup). */
static void client_note_reset(px_client *cl, const pgs_frame *f, px_sess_stmt *ss, bool classified)
{
    pgs_reader rd = pgs_reader_make(cl->conn.in.data + cl->conn.in_pos + PGS_HDR_LEN, f->len - 4);
    const char *name = "";
    if (f->type == PGS_FE_PARSE && pgs_rd_cstr(&rd, &name) < 0)
        return;
    if (name[0]) /* a named statement runs at its Binds */
        return;
    const char *sql = (const char *)rd.p;
    if (!classified)
        px_sess_classify(sql, pgs_strnlen(sql, rd.left), ss);
    if (!px_session_restore_sql(cl->sess, ss, NULL))
        return;
    bool all = ss->kind != SESS_RESET || (cl->restore && cl->restore_key != ss->key);
    cl->restore = all ? SESS_RESET_ALL : SESS_RESET;
    cl->restore_key = ss->key;
}

/* Sends the hidden query that sets the noted startup values again, after the forwarded
 * message that ran the RESET; ParameterStatus from it reaches the client. */
static void client_restore_startup(px_client *cl, px_server *sv)
{
    px_sess_stmt ss = {.kind = (px_sess_kind)cl->restore, .key = cl->restore_key};
    cl->restore = SESS_NONE;
    pgs_buf b = PGS_BUF_INIT;
    size_t m = pgs_msg_begin(&b, PGS_FE_QUERY);
    px_session_restore_sql(cl->sess, &ss, &b);
    pgs_buf_append_u8(&b, 0);
    pgs_msg_end(&b, m);
    px_conn_flush_forward(&cl->conn, &sv->conn);
    px_reply_ent *ran = px_replies_tail(&sv->replies); /* the Query's or the Sync's */
    if (ran) {
        ran->hide_ready = true; /* before the push, which may move the entries */
        if (px_server_push_reply(sv, RP_RESTORE, 0) == 0)
            px_conn_send_buf(&sv->conn, &b);
    }
    pgs_buf_free(&b);
}

/* A BEGIN that pgshard answered goes to the shard the transaction turned out to need,
 * ahead of its first statement; the server's answer to it is hidden. It goes as an unnamed
 * Parse, Bind and Execute without a Sync (a Query would also drop the unnamed statement):
 * the server then answers it with no ReadyForQuery of its own, in the same segment as the
 * first statement's answer, so the transaction costs one read and one server wakeup less. */
static void client_replay_begin(px_client *cl, px_server *sv)
{
    /* Bind: portal and statement "", no formats, values or result formats (length 12);
     * Execute: portal "", every row (length 9). */
    static const char bind_execute[] = "B\0\0\0\x0c\0\0\0\0\0\0\0\0"
                                       "E\0\0\0\x09\0\0\0\0\0";
    px_xact *x = &cl->x;
    if (x->deferred == PX_DEFER_NONE)
        return;
    pgs_buf b = PGS_BUF_INIT;
    size_t m = pgs_msg_begin(&b, PGS_FE_PARSE);
    pgs_buf_append_u8(&b, 0);
    pgs_buf_append(&b, x->begin.data, x->begin.len);
    pgs_buf_append_u8(&b, 0);
    pgs_buf_append_be16(&b, 0); /* no parameter types */
    pgs_msg_end(&b, m);
    pgs_buf_append(&b, bind_execute, sizeof bind_execute - 1);
    x->deferred = PX_DEFER_NONE;
    /* Kept for the transaction's other shards (two-phase commit), freed at its end. */
    if (!cl->conn.w->conf->cfg->two_phase_commit)
        pgs_buf_free(&x->begin);
    px_conn_flush_forward(&cl->conn, &sv->conn);
    px_server_push_reply(sv, RP_BEGIN, 0);
    px_conn_send_buf(&sv->conn, &b);
    pgs_buf_free(&b);
}

/* Stages SET/RESET/DISCARD of a statement the client runs, kept if its transaction
 * commits. Returns 0, or -1 after closing the client. */
static int client_stage_session(px_client *cl, const char *sql, size_t len)
{
    px_sess_stmt ss;
    px_sess_classify(sql, len, &ss);
    if (ss.kind == SESS_NONE || ss.kind == SESS_DEALLOCATE || ss.kind == SESS_DEALLOCATE_ALL ||
        ss.kind == SESS_PREPARE || ss.kind == SESS_EXECUTE)
        return 0;
    px_session *s = client_session(cl);
    if (!s || px_session_stage(s, &ss, sql, len) < 0) {
        px_client_fatal(cl, PGS_SQLSTATE_PROGRAM_LIMIT_EXCEEDED,
                        "pgshard: too much session state (SET statements) for one client");
        return -1;
    }
    return 0;
}

static void client_forget_statements(px_client *cl, px_server *sv)
{
    px_client_stmts_free(&cl->stmts, &cl->conn.w->stmts);
    px_htab_free(&sv->stmts);
    sv->stmts_doubtful = true;
}

/* The session state a statement text leaves on sv, or removes (pin.c). */
static void client_pins(px_client *cl, px_server *sv, const char *sql, size_t len)
{
    uint8_t pin;
    uint16_t unpin;
    px_route_pins(cl->conn.w, sql, len, &pin, &unpin);
    px_pin_apply(cl, sv, pin, unpin);
}

/* A Parse whose text touches session state is handled like the same simple query: SET is
 * tracked, DEALLOCATE ALL/DISCARD ALL forget statements, and DEALLOCATE of a client's
 * statement (psycopg sends it this way) is rewritten to the server's name. Returns as
 * px_ext_client_message. */
static px_msg client_parse_session(px_client *cl, const pgs_frame *f, px_sess_stmt *ss, bool *classified)
{
    pgs_reader rd = pgs_reader_make(cl->conn.in.data + cl->conn.in_pos + PGS_HDR_LEN, f->len - 4);
    const char *name;
    if (pgs_rd_cstr(&rd, &name) < 0)
        return PX_MSG_PASS;
    const char *sql = (const char *)rd.p;
    size_t len = pgs_strnlen(sql, rd.left);
    if (len == rd.left)
        return PX_MSG_PASS; /* no NUL after the text: the server refuses the message itself */
    px_msg r = name[0] ? PX_MSG_PASS : px_route_pgshard_parse(cl, f, sql, len);
    if (r != PX_MSG_PASS)
        return r;
    if (!name[0])
        client_pins(cl, px_client_server(cl), sql, len); /* a named statement pins at its Binds */
    px_sess_classify(sql, len, ss);
    *classified = true;
    if (ss->kind == SESS_NONE)
        return PX_MSG_PASS;
    if (ss->kind == SESS_DEALLOCATE_ALL || ss->kind == SESS_DISCARD_ALL)
        client_forget_statements(cl, px_client_server(cl));
    if (ss->kind == SESS_DEALLOCATE)
        return name[0] ? PX_MSG_PASS : px_ext_deallocate(cl, f, ss->name);
    /* A named statement changes the session each time it runs: staged at its Binds. */
    if (name[0])
        return PX_MSG_PASS;
    return client_stage_session(cl, sql, len) < 0 ? PX_MSG_CLOSED : PX_MSG_PASS;
}

int px_client_stage_session(px_client *cl, const char *sql, size_t len)
{
    return client_stage_session(cl, sql, len);
}

/* A simple query in transaction pooling: session statements are tracked; DEALLOCATE of
 * a client's statement runs on the server's name for it; DEALLOCATE ALL and DISCARD ALL
 * forget the client's statements (and the server's, which they drop). */
static px_msg client_query(px_client *cl, const pgs_frame *f, px_sess_stmt *ss)
{
    const char *sql = (const char *)cl->conn.in.data + cl->conn.in_pos + PGS_HDR_LEN;
    size_t len = pgs_strnlen(sql, f->len - 4);
    px_server *sv = px_client_server(cl);
    client_pins(cl, sv, sql, len);
    px_sess_classify(sql, len, ss);
    if (ss->kind == SESS_NONE)
        return PX_MSG_PASS;
    if (ss->kind == SESS_DEALLOCATE_ALL || ss->kind == SESS_DISCARD_ALL) {
        client_forget_statements(cl, sv);
        return client_stage_session(cl, sql, len) < 0 ? PX_MSG_CLOSED : PX_MSG_PASS;
    }
    if (ss->kind == SESS_PREPARE)
        return px_ext_sql_prepare(cl, f, sql, len, ss->name, ss->name_at, ss->name_end);
    if (ss->kind == SESS_EXECUTE)
        return px_ext_sql_execute(cl, f, sql, len, ss->name, ss->name_at, ss->name_end);
    if (ss->kind != SESS_DEALLOCATE)
        return client_stage_session(cl, sql, len) < 0 ? PX_MSG_CLOSED : PX_MSG_PASS;
    return px_ext_deallocate(cl, f, ss->name);
}

/* max_qps: each worker refills its share of the user's rate into a token bucket per pool;
 * a transaction starts only with a token. */
static bool client_take_token(px_client *cl)
{
    int qps = cl->user->cfg->max_qps;
    if (!qps)
        return true;
    px_pool *p = cl->pool;
    double rate = (double)qps / cl->conn.w->px->nworkers;
    double burst = rate < 1 ? 1 : rate;
    uint64_t now = uv_hrtime();
    if (!p->tokens_at)
        p->tokens = burst;
    else
        p->tokens += (double)(now - p->tokens_at) / 1e9 * rate;
    if (p->tokens > burst)
        p->tokens = burst;
    p->tokens_at = now;
    if (p->tokens < 1)
        return false;
    p->tokens -= 1;
    return true;
}

static const struct {
    const char *sqlstate;
    const char *fmt; /* one %s: the user name */
} client_refusals[] = {
    [PX_REFUSE_RATE] = {PGS_SQLSTATE_CONFIGURATION_LIMIT_EXCEEDED,
                        "pgshard: user \"%s\" may start no more transactions per second (max_qps)"},
    [PX_REFUSE_NO_PRIMARY] = {PGS_SQLSTATE_CANNOT_CONNECT_NOW,
                              "pgshard: the primary of shard 0 is unavailable (no primary within "
                              "primary_wait_ms); user \"%s\""},
    [PX_REFUSE_NO_REPLICA] = {PGS_SQLSTATE_CANNOT_CONNECT_NOW,
                              "pgshard: no replica of shard 0 is eligible and replica_fallback = error; "
                              "user \"%s\""},
};

/* A request that will not run (rate limit, no primary, no replica): its messages are
 * dropped up to the Query or Sync that ends it, which is answered with the error and
 * ReadyForQuery. Returns as client_forward_step. */
static px_step client_refuse(px_client *cl, const pgs_frame *f)
{
    px_conn *c = &cl->conn;
    size_t avail = c->in.len - c->in_pos;
    if (avail < f->total) {
        /* Dropped as it arrives, never buffered whole: the client has no server, so what
         * the pass-through consumes goes nowhere. A Query is whole by now. */
        c->in_pos += avail;
        c->pass_left = (uint32_t)(f->total - avail);
        c->fwd_mark = c->in_pos;
        return PX_STEP_AGAIN;
    }
    c->in_pos += f->total;
    c->fwd_mark = c->in_pos;
    if (f->type != PGS_FE_QUERY && f->type != PGS_FE_SYNC)
        return PX_STEP_AGAIN;
    uint8_t why = cl->refuse;
    cl->refuse = PX_REFUSE_NONE;
    pgs_buf b = PGS_BUF_INIT;
    if (why == PX_REFUSE_SHARD && cl->refuse_msg) {
        char state[6];
        memcpy(state, cl->refuse_msg, 5);
        state[5] = 0;
        pgs_msg_error(&b, "ERROR", state, "%s", cl->refuse_msg + 5);
        free(cl->refuse_msg);
        cl->refuse_msg = NULL;
    } else {
        pgs_msg_error(&b, "ERROR", client_refusals[why].sqlstate, client_refusals[why].fmt, cl->user_name);
    }
    if (cl->x.deferred)
        cl->x.deferred = PX_DEFER_FAILED; /* an error in a transaction block aborts it */
    if (!px_xact_link(cl))
        px_move_xact_end(cl); /* refused while queued for a server: it will not run */
    pgs_msg_ready(&b, px_route_idle_status(cl));
    px_conn_send_buf(c, &b);
    pgs_buf_free(&b);
    return cl->state == CL_CLOSED ? PX_STEP_CLOSED : PX_STEP_AGAIN;
}

/* How many bytes from the client's input start form a read that can be sent again as it
 * is: one Query, or an extended-protocol segment up to its Sync made only of unnamed
 * Parses, Binds, Describes, Executes and Flushes (a named Parse or a Close changes the
 * client's statements, so it is not repeated). 0 when there is no such read (yet). */
static size_t client_retry_span(px_client *cl, const pgs_frame *first)
{
    px_conn *c = &cl->conn;
    const uint8_t *p = px_conn_at(c);
    size_t avail = c->in.len - c->in_pos, off = 0;
    if (first->type == PGS_FE_QUERY)
        return first->total <= avail ? first->total : 0;
    pgs_frame f;
    while (off < avail && pgs_frame_read(p + off, avail - off, PGS_MAX_MSG_LEN, &f) == 1 &&
           f.total <= avail - off) {
        bool unnamed_parse = f.type == PGS_FE_PARSE && f.len > 4 && p[off + PGS_HDR_LEN] == 0;
        if (!unnamed_parse && f.type != PGS_FE_BIND && f.type != PGS_FE_DESCRIBE &&
            f.type != PGS_FE_EXECUTE && f.type != PGS_FE_FLUSH && f.type != PGS_FE_SYNC)
            return 0;
        off += f.total;
        if (f.type == PGS_FE_SYNC)
            return off;
    }
    return 0;
}

/* Keeps a copy of a read sent to a replica until the replica answers, so that a replica
 * dying first costs the client nothing (px_route_retry). Only reads of one block. */
static void client_arm_retry(px_client *cl, const pgs_frame *f)
{
    px_conn *c = &cl->conn;
    size_t n = client_retry_span(cl, f);
    if (n == 0 || n > PX_BLOCK)
        return;
    pgs_buf *rb = &cl->x.retry;
    px_buf_take(c->w, rb);
    if (!rb->data && (rb->data = malloc(PX_BLOCK)))
        rb->cap = PX_BLOCK;
    if (!rb->data)
        return;
    rb->len = 0;
    pgs_buf_append(rb, px_conn_at(c), n); /* armed unless that failed */
    cl->x.retry_sealed = false;
}

/* One step of a logged-in client: validate the next message header, get a server when the
 * client has none, and pass the bytes through as they are (rewriting statement names in
 * transaction pooling). */
static px_step client_forward_step(px_client *cl)
{
    px_conn *c = &cl->conn;
    size_t avail = c->in.len - c->in_pos;
    if (avail == 0)
        return PX_STEP_WAIT;
    if (c->pass_left) {
        size_t n = avail < c->pass_left ? avail : c->pass_left;
        c->in_pos += n;
        c->pass_left -= (uint32_t)n;
        return PX_STEP_AGAIN;
    }
    pgs_frame f;
    int fr = pgs_frame_read(px_conn_at(c), avail, PGS_MAX_MSG_LEN, &f);
    if (fr == 0)
        return PX_STEP_WAIT;
    if (fr < 0 || !pgs_frontend_type_valid(f.type))
        atomic_fetch_add_explicit(&c->w->px->gs.protocol_errors, 1, memory_order_relaxed);
    if (fr < 0) {
        px_conn_flush_forward(c, client_server_conn(cl));
        px_client_fatal(cl, PGS_SQLSTATE_PROTOCOL_VIOLATION, "invalid message length");
        return PX_STEP_CLOSED;
    }
    if (!pgs_frontend_type_valid(f.type)) {
        px_conn_flush_forward(c, client_server_conn(cl));
        px_client_fatal(cl, PGS_SQLSTATE_PROTOCOL_VIOLATION, "invalid frontend message type %d",
                        (unsigned char)f.type);
        return PX_STEP_CLOSED;
    }
    if (f.type == PGS_FE_TERMINATE) {
        px_conn_flush_forward(c, client_server_conn(cl));
        px_client_close(cl);
        return PX_STEP_CLOSED;
    }
    bool rewrite = c->w->conf->cfg->pool_mode == CFG_POOL_TRANSACTION &&
                   (f.type == PGS_FE_PARSE || f.type == PGS_FE_BIND || f.type == PGS_FE_DESCRIBE ||
                    f.type == PGS_FE_CLOSE || f.type == PGS_FE_QUERY);
    /* A Query is read whole in every pool mode (pgshard.* settings, routing); in transaction
     * pooling so are the messages whose statement names are rewritten. Nothing else is. */
    bool whole = rewrite || f.type == PGS_FE_QUERY;
    if (whole && f.total > c->w->conf->cfg->max_message_size) {
        px_conn_flush_forward(c, client_server_conn(cl));
        atomic_fetch_add_explicit(&c->w->px->gs.protocol_errors, 1, memory_order_relaxed);
        px_client_fatal(cl, PGS_SQLSTATE_PROGRAM_LIMIT_EXCEEDED,
                        "pgshard: message of %zu bytes exceeds max_message_size (%u bytes)", f.total,
                        c->w->conf->cfg->max_message_size);
        return PX_STEP_CLOSED;
    }
    if (whole && avail < f.total) {
        if (pgs_buf_reserve(&c->in, f.total - avail) < 0) {
            px_client_fatal(cl, PGS_SQLSTATE_OUT_OF_MEMORY, "out of memory");
            return PX_STEP_CLOSED;
        }
        return PX_STEP_WAIT;
    }
    if (!px_xact_link(cl) &&
        (f.type == PGS_FE_COPY_DATA || f.type == PGS_FE_COPY_DONE || f.type == PGS_FE_COPY_FAIL)) {
        /* The rest of a COPY that failed: PostgreSQL ignores it, and so does pgshard. */
        size_t take = avail < f.total ? avail : f.total;
        c->in_pos += take;
        c->pass_left = (uint32_t)(f.total - take);
        c->fwd_mark = c->in_pos;
        return PX_STEP_AGAIN;
    }
    px_msg m;
    if (f.type == PGS_FE_QUERY && (m = px_route_pgshard_var(cl, &f)) != PX_MSG_PASS)
        return px_step_after(m);
    px_link *l = px_xact_link(cl);
    if (!l && !cl->refuse && !client_take_token(cl))
        cl->refuse = PX_REFUSE_RATE;
    if (!l && cl->refuse)
        return client_refuse(cl, &f);
    int lv = l && !l->fresh && (f.type == PGS_FE_QUERY || f.type == PGS_FE_PARSE || f.type == PGS_FE_BIND)
                 ? px_route_linked(cl, &f)
                 : PX_LINKED_STAY;
    if (lv == PX_LINKED_CLOSED)
        return PX_STEP_CLOSED;
    if (lv == PX_LINKED_DONE)
        return PX_STEP_AGAIN;
    if (lv == PX_LINKED_END && l->sv->ext_open) {
        px_client_fatal(cl, PGS_SQLSTATE_FEATURE_NOT_SUPPORTED,
                        "pgshard: the COMMIT or ROLLBACK of a transaction over several shards must start "
                        "a segment of its own (after a Sync)");
        return PX_STEP_CLOSED;
    }
    if ((lv == PX_LINKED_PARK || lv == PX_LINKED_END) &&
        (l->sv->replies.n || l->sv->conn.pass_left || c->pass_left)) {
        cl->x.paused = true; /* once it has answered what it was sent */
        return PX_STEP_WAIT;
    }
    if (lv == PX_LINKED_END && (m = px_route_multi_end(cl, &f)) != PX_MSG_PASS)
        return m == PX_MSG_WAIT ? PX_STEP_WAIT : px_step_after(m);
    if (lv == PX_LINKED_PARK) {
        px_conn_flush_forward(c, &l->sv->conn);
        if (px_xact_park(cl) < 0) {
            px_client_fatal(cl, PGS_SQLSTATE_OUT_OF_MEMORY, "out of memory");
            return PX_STEP_CLOSED;
        }
        cl->x.route_bucket = -1; /* keys of several buckets: a freeze waits for its end */
        if (!px_xact_unpark(cl, cl->x.park_to)) {
            cl->x.deferred = PX_DEFER_OPEN; /* its BEGIN goes first to the shard it now enters */
            client_set_state(cl, CL_IDLE);
        }
    }
    if (lv == PX_LINKED_LEAVE) {
        if (!px_server_clean(l->sv) || cl->conn.pass_left) {
            cl->x.paused = true; /* resumed when the server has answered what it was sent */
            return PX_STEP_WAIT;
        }
        px_conn_flush_forward(c, &l->sv->conn);
        px_server_release(l->sv);
        if (cl->state == CL_CLOSED)
            return PX_STEP_CLOSED;
    }
    if (!px_xact_link(cl) && (cl->x.nparked || cl->x.multi_lost) &&
        (m = px_route_multi_end(cl, &f)) != PX_MSG_PASS)
        return m == PX_MSG_WAIT ? PX_STEP_WAIT : px_step_after(m);
    /* A BEGIN is kept (and answered) until a statement needs a server: the server then gets
     * both in one write, which saves it a round trip, and a transaction that turns out empty
     * takes no server at all. */
    if (!px_xact_link(cl) && (c->w->px->sharded || c->w->conf->cfg->pool_mode == CFG_POOL_TRANSACTION) &&
        (f.type == PGS_FE_QUERY || f.type == PGS_FE_PARSE) && (m = px_route_defer(cl, &f)) != PX_MSG_PASS)
        return px_step_after(m);
    if (!px_xact_link(cl)) {
        cl->wait_since = uv_now(&c->w->loop);
        int r = px_route_acquire(cl, &f); /* links it, queues it, or refuses */
        if (r < 0) {
            px_client_fatal(cl, PGS_SQLSTATE_OUT_OF_MEMORY, "out of memory");
            return PX_STEP_CLOSED;
        }
        if (r == 1 && !cl->refuse) {
            /* A refusal must say why; without one the statement would be routed again and
             * again. Never reached by design: answered as an internal error if it is. */
            if (px_route_refuse(cl, PGS_SQLSTATE_INTERNAL_ERROR,
                                "pgshard: the statement was refused without a "
                                "reason (a bug): it did not run") < 0) {
                px_client_fatal(cl, PGS_SQLSTATE_OUT_OF_MEMORY, "out of memory");
                return PX_STEP_CLOSED;
            }
        }
        if (r == 1) {
            client_set_state(cl, CL_IDLE);
            return PX_STEP_AGAIN; /* refused: the next pass answers */
        }
        if (!px_xact_link(cl))
            return PX_STEP_WAIT; /* linked later by the pool, which calls px_client_process again */
    }
    l = px_xact_link(cl);
    px_server *sv = l->sv;
    /* A message after the read that was kept: sending only that read again would lose it. */
    if (px_retry_armed(cl) && cl->x.retry_sealed)
        px_route_disarm(cl);
    if (!l->start_ns)
        l->start_ns = uv_hrtime();
    if (l->fresh) {
        l->fresh = false;
        px_client_replay_session(cl, sv);
        bool began = cl->x.deferred != PX_DEFER_NONE;
        client_replay_begin(cl, sv);
        if (l->replica && !began)
            client_arm_retry(cl, &f);
    }
    if (px_retry_armed(cl) && (f.type == PGS_FE_QUERY || f.type == PGS_FE_SYNC))
        cl->x.retry_sealed = true;
    if (f.type == PGS_FE_QUERY || f.type == PGS_FE_SYNC)
        cl->x.segment_checked = false;
    if (f.type == PGS_FE_QUERY)
        cl->x.unnamed_known = false; /* PostgreSQL drops the unnamed statement at a Query */
    px_sess_stmt ss; /* what client_query or client_parse_session classified, for client_note_reset */
    bool classified = false;
    if (rewrite) {
        if (f.type == PGS_FE_QUERY) {
            m = client_query(cl, &f, &ss);
            classified = true;
        } else if (f.type != PGS_FE_PARSE ||
                   (m = client_parse_session(cl, &f, &ss, &classified)) == PX_MSG_PASS) {
            m = px_ext_client_message(cl, &f);
        }
        if (m == PX_MSG_WAIT) {
            cl->x.paused = true; /* resumed by the server when it has answered */
            return PX_STEP_WAIT;
        }
        if (m != PX_MSG_PASS) {
            if (m == PX_MSG_DONE)
                sv->ext_open = f.type != PGS_FE_QUERY;
            return px_step_after(m);
        }
    }
    if ((f.type == PGS_FE_QUERY || f.type == PGS_FE_PARSE) && cl->sess && cl->sess->nd)
        client_note_reset(cl, &f, &ss, classified);
    /* Extended-protocol messages open a segment that only Sync closes; Query and
     * FunctionCall stand alone, and COPY data belongs to the command that started it. */
    if (f.type == PGS_FE_QUERY || f.type == PGS_FE_SYNC || f.type == PGS_FE_FUNCTION_CALL)
        sv->ext_open = false;
    else if (f.type != PGS_FE_COPY_DATA && f.type != PGS_FE_COPY_DONE && f.type != PGS_FE_COPY_FAIL)
        sv->ext_open = true;
    int kind = client_reply_kind(f.type);
    if (kind >= 0 && px_server_push_reply(sv, (px_reply)kind, 0) < 0) {
        px_client_fatal(cl, PGS_SQLSTATE_OUT_OF_MEMORY, "out of memory");
        return PX_STEP_CLOSED;
    }
    size_t take = avail < f.total ? avail : f.total;
    c->in_pos += take;
    c->pass_left = (uint32_t)(f.total - take);
    if (cl->restore && (f.type == PGS_FE_QUERY || f.type == PGS_FE_SYNC) && take == f.total)
        client_restore_startup(cl, sv);
    return PX_STEP_AGAIN;
}

void px_client_process(px_client *cl)
{
    px_conn *c = &cl->conn;
    if (c->processing || c->closing)
        return;
    c->processing = true;
    px_step r = PX_STEP_AGAIN;
    while (r == PX_STEP_AGAIN && cl->state != CL_CLOSED) {
        switch (cl->state) {
        case CL_STARTUP:
            r = client_startup_step(cl);
            break;
        case CL_AUTH:
            r = client_auth_step(cl);
            break;
        case CL_IDLE:
        case CL_ACTIVE:
            r = client_forward_step(cl);
            break;
        case CL_ADMIN:
            r = px_admin_step(cl);
            break;
        case CL_FANOUT:
            r = px_fanout_client_step(cl);
            break;
        default:
            r = 0;
            break;
        }
    }
    c->processing = false;
    if (cl->state == CL_CLOSED)
        return;
    if (cl->state == CL_ACTIVE)
        px_conn_flush_forward(c, client_server_conn(cl));
    else
        c->fwd_mark = c->in_pos;
    if (cl->state == CL_CLOSED)
        return;
    px_conn_after_input(c);
    px_client_update_reading(cl);
}

/* True when the client's server owes it PX_REPLIES_MAX replies: it is read again as they
 * arrive (px_server_process). */
static bool client_replies_full(px_client *cl)
{
    px_server *sv = px_client_server(cl);
    return sv && sv->replies.n >= PX_REPLIES_MAX;
}

/* Reading stops while its server has not taken what was already forwarded, or owes it too
 * many replies (a pipeline that is not read on the other end). A waiting
 * client is still read, up to PX_WAIT_READ_MAX bytes buffered, so that when it goes away
 * its place in the queue is freed at once instead of when a server comes for it. */
void px_client_update_reading(px_client *cl)
{
    bool on;
    switch (cl->state) {
    case CL_STARTUP:
    case CL_AUTH:
    case CL_IDLE:
    case CL_ADMIN:
        on = true;
        break;
    case CL_ACTIVE:
        on = !cl->x.paused && px_conn_idle_io(client_server_conn(cl)) && !client_replies_full(cl);
        break;
    case CL_WAIT_WELCOME:
    case CL_WAIT_SERVER:
        on = cl->conn.in.len - cl->conn.in_pos < PX_WAIT_READ_MAX;
        break;
    case CL_FANOUT:
        on = px_fanout_client_reading(cl);
        break;
    default:
        on = false;
        break;
    }
    px_conn_set_reading(&cl->conn, on);
}

void px_client_on_drained(px_client *cl)
{
    if (cl->x.fan) {
        px_fanout_client_drained(cl);
        return;
    }
    px_server *sv = px_client_server(cl);
    if (sv)
        px_server_update_reading(sv);
}

/* Links a client to a server from the pool and forwards what the client has buffered.
 * Called inside the client's own input pass too, which then simply goes on. */
void px_client_link(px_client *cl, px_server *sv)
{
    if (!cl->x.fan)
        px_xact_attach(cl, sv);
    if (cl->wait_start_ns) {
        uint64_t us = (uv_hrtime() - cl->wait_start_ns) / 1000;
        px_pool_stats *st = &sv->pool->st;
        st->waits++;
        st->wait_us += us;
        px_hist_observe(st->wait_hist, us);
        cl->wait_start_ns = 0;
    }
    if (cl->x.fan) {
        px_fanout_linked(cl, sv);
        return;
    }
    px_server_activate(sv);
    client_set_state(cl, CL_ACTIVE);
    if (cl->welcome_owed) {
        cl->welcome_owed = false;
        cl->key_pid = sv->be_pid; /* the secret stays pgshard's: cancels come through it */
        if (client_send_welcome(cl, &sv->pool->welcome) < 0) /* ready: sv logged in */
            return;
    }
    px_client_process(cl);
    if (!cl->conn.closing && px_client_server(cl) == sv)
        px_server_update_reading(sv);
}

/* The server let go of the client (end of a transaction): the client is idle again. */
void px_client_detach(px_client *cl)
{
    px_xact_detach(cl);
    pgs_buf_free(&cl->x.begin); /* the transaction it opened is over */
    px_route_link_done(cl);
    px_move_xact_end(cl);
    cl->x.paused = false;
    if (cl->state == CL_ACTIVE)
        client_set_state(cl, CL_IDLE);
    if (atomic_load(&cl->conn.w->px->draining) && cl->conn.in.len == cl->conn.in_pos) {
        px_client_close(cl); /* its transaction is over and pgshard is shutting down */
        return;
    }
    px_client_update_reading(cl);
}

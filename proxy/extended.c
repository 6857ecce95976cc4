/* Extended-protocol bookkeeping between a client and the server it is linked to in
 * transaction pooling: rewriting the client's statement names to the server's
 * pgshard_<hash> names, preparing statements on a server the first time it needs them,
 * and the queue of replies the server owes, which decides what is relayed, what is hidden
 * (replies to what the proxy injected) and where the proxy's own replies go. PostgreSQL's
 * rule that an error skips everything up to Sync is followed: names defined by skipped
 * messages are forgotten, names closed by skipped messages come back. */
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "proxy/px.h"

_Static_assert(sizeof(void *) == 8, "statement sets pack 64-bit values into pointers");

#define PROBE_NAME "pgshard_probe"

static uint32_t ext_tick(px_worker *w)
{
    return (uint32_t)++w->stmt_tick;
}

static px_reply_ent *ext_push(px_server *sv, px_reply kind, uint64_t hash)
{
    px_reply_ent *e = px_replies_push(&sv->replies, kind, hash);
    if (!e)
        px_server_close(sv, "out of memory");
    return e;
}

int px_server_push_reply(px_server *sv, px_reply kind, uint64_t hash)
{
    if (kind == RP_SYNC || kind == RP_QUERY || kind == RP_REPLAY || kind == RP_RESTORE ||
        kind == RP_PREPARE_SQL)
        sv->segment++;
    return ext_push(sv, kind, hash) ? 0 : -1;
}

static void ext_release(px_worker *w, px_reply_ent *e)
{
    free(e->cname);
    e->cname = NULL;
    if (e->stmt)
        px_stmt_unref(&w->stmts, e->stmt);
    e->stmt = NULL;
}

void px_server_replies_free(px_server *sv)
{
    px_reply_ent *e;
    while ((e = px_replies_head(&sv->replies))) {
        ext_release(sv->conn.w, e);
        px_replies_pop(&sv->replies);
    }
    px_replies_free(&sv->replies);
}

static void build_parse(pgs_buf *b, const char *name, const px_stmt *st)
{
    size_t m = pgs_msg_begin(b, PGS_FE_PARSE);
    pgs_buf_append_cstr(b, name);
    pgs_buf_append(b, st->body, st->body_len);
    pgs_msg_end(b, m);
}

static void build_close_stmt(pgs_buf *b, const char *name)
{
    size_t m = pgs_msg_begin(b, PGS_FE_CLOSE);
    pgs_buf_append_u8(b, 'S');
    pgs_buf_append_cstr(b, name);
    pgs_msg_end(b, m);
}

/* Keeps the server's statements bounded: the least recently used ready one is closed.
 * Returns 0, or 1 when every statement is still being prepared: then a Flush makes the
 * server answer the Parses so far, and the client waits for that. */
static int ext_evict(px_server *sv, pgs_buf *b)
{
    if (sv->stmts.n < PX_SERVER_STMTS_MAX)
        return 0;
    uint64_t old = px_sset_lru(&sv->stmts);
    if (!old) {
        static const uint8_t flush[] = {'H', 0, 0, 0, 4};
        px_conn_send(&sv->conn, flush, sizeof flush);
        return 1;
    }
    char name[PX_STMT_NAME_LEN];
    px_stmt_name(old, name);
    px_htab_del(&sv->stmts, old);
    build_close_stmt(b, name);
    ext_push(sv, RP_CLOSE_HIDDEN, old);
    return 0;
}

/* Sends the hidden message(s) in b that prepare statement hash on the server (whatever
 * eviction put first included), owing reply kind for them; the statement is pending until
 * that reply. Frees b. Returns 0, or -1 after closing the server. */
static int ext_inject_prepare(px_server *sv, pgs_buf *b, px_reply kind, uint64_t hash)
{
    int r = px_server_push_reply(sv, kind, hash) < 0 ||
                    px_sset_pending(&sv->stmts, hash, ext_tick(sv->conn.w), sv->segment) < 0
                ? -1
                : 0;
    if (r == 0)
        px_conn_send_buf(&sv->conn, b);
    pgs_buf_free(b);
    return r;
}

/* Makes sure the server will have st when the next message runs. Returns 0 (prepared,
 * being prepared in this same segment, or a hidden Parse sent now), 1 when a Parse sent in
 * an earlier segment has not been answered yet (its fate decides: the client waits), or
 * -1 after closing the server. */
static int ext_ensure(px_server *sv, const px_stmt *st)
{
    uint32_t seg;
    px_sstate s = px_sset_get(&sv->stmts, st->hash, ext_tick(sv->conn.w), &seg);
    if (s == PX_STMT_READY)
        return 0;
    if (s == PX_STMT_PENDING)
        return seg == (sv->segment & 0x7fffffffu) ? 0 : 1;
    pgs_buf b = PGS_BUF_INIT;
    char name[PX_STMT_NAME_LEN];
    if (ext_evict(sv, &b) > 0)
        return 1;
    px_stmt_name(st->hash, name);
    build_parse(&b, name, st);
    return ext_inject_prepare(sv, &b, RP_PARSE_HIDDEN, st->hash);
}

/* The same for a statement from SQL PREPARE: the server gets a hidden
 * "PREPARE pgshard_<hash> <text after the name>" query. Each simple query stands alone, so
 * one still being prepared is fine: if that failed, the client's EXECUTE fails too. */
static int ext_ensure_sql(px_server *sv, const px_stmt *st)
{
    px_sstate s = px_sset_get(&sv->stmts, st->hash, ext_tick(sv->conn.w), NULL);
    if (s != PX_STMT_ABSENT)
        return 0;
    pgs_buf b = PGS_BUF_INIT;
    char name[PX_STMT_NAME_LEN];
    if (ext_evict(sv, &b) > 0)
        return 1;
    px_stmt_name(st->hash, name);
    size_t m = pgs_msg_begin(&b, PGS_FE_QUERY);
    pgs_buf_appendf(&b, "PREPARE %s ", name);
    pgs_buf_append(&b, st->body, st->body_len);
    pgs_buf_append_u8(&b, 0);
    pgs_msg_end(&b, m);
    return ext_inject_prepare(sv, &b, RP_PREPARE_SQL, st->hash);
}

static int ext_ensure_any(px_server *sv, const px_stmt *st)
{
    return st->sql ? ext_ensure_sql(sv, st) : ext_ensure(sv, st);
}

/* Consumes the whole client message at in_pos without forwarding it. */
static void ext_drop(px_client *cl, const pgs_frame *f)
{
    px_conn *c = &cl->conn;
    px_conn_flush_forward(c, &px_client_server(cl)->conn);
    c->in_pos += f->total;
    c->fwd_mark = c->in_pos;
}

/* The client's statement `name`, made ready on its server for a message that replaces f:
 * returns 1 with *out and sname set and f dropped, 0 for a name the client does not have
 * (f passes unchanged, so PostgreSQL reports it), 2 to wait for an earlier Parse, -1. */
static int ext_take_stmt(px_client *cl, const pgs_frame *f, const char *name, px_stmt **out,
                         char sname[PX_STMT_NAME_LEN])
{
    px_stmt *st = px_client_stmt_get(&cl->stmts, name);
    if (!st)
        return 0;
    px_conn_flush_forward(&cl->conn, &px_client_server(cl)->conn);
    int r = ext_ensure_any(px_client_server(cl), st);
    if (r != 0)
        return r < 0 ? PX_MSG_CLOSED : PX_MSG_WAIT;
    px_stmt_name(st->hash, sname);
    ext_drop(cl, f);
    *out = st;
    return 1;
}

static char *ext_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

/* Parse of a named statement. A name the client already has goes to the server as a
 * Parse of that statement's server name, so PostgreSQL itself reports 42P05 (after its
 * syntax check, aborting the transaction) and the proxy only puts the client's name in the
 * message. A new name is registered at once (a skipped Parse forgets it again); the server
 * prepares the statement unless it already has it, when the proxy may answer
 * ParseComplete itself or, if the server's state is not known to be clean, lets the server
 * parse it under a throwaway name so errors come out as PostgreSQL's. */
static px_msg ext_parse(px_client *cl, const pgs_frame *f, const char *name, const uint8_t *rest, size_t n)
{
    px_server *sv = px_client_server(cl);
    px_worker *w = cl->conn.w;
    pgs_buf b = PGS_BUF_INIT;
    char sname[PX_STMT_NAME_LEN];
    px_stmt *old = px_client_stmt_get(&cl->stmts, name);
    if (old) {
        int r = ext_ensure_any(sv, old);
        if (r != 0)
            return r < 0 ? PX_MSG_CLOSED : PX_MSG_WAIT;
        ext_drop(cl, f);
        px_stmt_name(old->hash, sname);
        size_t m = pgs_msg_begin(&b, PGS_FE_PARSE);
        pgs_buf_append_cstr(&b, sname);
        pgs_buf_append(&b, rest, n);
        pgs_msg_end(&b, m);
        px_reply_ent *e = ext_push(sv, RP_PARSE, 0);
        if (e)
            e->cname = ext_strdup(name);
        px_conn_send_buf(&sv->conn, &b);
        pgs_buf_free(&b);
        return e ? PX_MSG_DONE : PX_MSG_CLOSED;
    }
    /* The same text under another search_path may name other tables: another statement. */
    px_stmt *st = px_stmt_register(&w->stmts, rest, n, cl->sess ? px_session_search_path_sig(cl->sess) : 0);
    uint32_t seg;
    px_sstate s = st ? px_sset_get(&sv->stmts, st->hash, ext_tick(w), &seg) : PX_STMT_ABSENT;
    bool wait = s == PX_STMT_PENDING && seg != (sv->segment & 0x7fffffffu);
    if (st && (wait || (s == PX_STMT_ABSENT && ext_evict(sv, &b) > 0))) {
        px_stmt_unref(&w->stmts, st);
        pgs_buf_free(&b);
        return PX_MSG_WAIT; /* wait for an earlier Parse to be answered */
    }
    if (!st || px_client_stmt_put(&cl->stmts, &w->stmts, name, st) < 0) {
        if (st)
            px_stmt_unref(&w->stmts, st);
        px_client_fatal(cl, PGS_SQLSTATE_OUT_OF_MEMORY, "out of memory registering prepared statement \"%s\"",
                        name);
        return PX_MSG_CLOSED;
    }
    ext_drop(cl, f);
    px_reply_ent *e = NULL;
    bool clean = sv->replies.n == 0 && sv->tx_status != PGS_TX_FAILED;
    /* The entry remembers which name it defined, to forget it if the Parse is skipped. */
#define ATTACH(e) ((e)->cname = ext_strdup(name), (e)->stmt = st, st->refs++)
    if (s == PX_STMT_PENDING || (s == PX_STMT_READY && clean)) {
        if ((e = ext_push(sv, RP_FAKE_PARSE, 0)))
            ATTACH(e);
    } else if (s == PX_STMT_READY) {
        build_parse(&b, PROBE_NAME, st);
        build_close_stmt(&b, PROBE_NAME);
        if ((e = ext_push(sv, RP_PARSE, 0))) {
            ATTACH(e);
            e = ext_push(sv, RP_CLOSE_HIDDEN, 0);
        }
    } else {
        px_stmt_name(st->hash, sname);
        build_parse(&b, sname, st);
        if ((e = ext_push(sv, RP_PARSE, st->hash))) {
            ATTACH(e);
            if (px_sset_pending(&sv->stmts, st->hash, ext_tick(w), sv->segment) < 0) {
                px_server_close(sv, "out of memory");
                e = NULL;
            }
        }
    }
#undef ATTACH
    if (!e) {
        pgs_buf_free(&b);
        return PX_MSG_CLOSED;
    }
    px_conn_send_buf(&sv->conn, &b);
    pgs_buf_free(&b);
    px_server_emit_fakes(sv);
    return PX_MSG_DONE;
}

/* Close of a named statement is answered by the proxy (the server keeps the statement for
 * other clients); the name is dropped now and restored if the Close turns out skipped. */
static px_msg ext_close(px_client *cl, const pgs_frame *f, const char *name)
{
    px_server *sv = px_client_server(cl);
    px_stmt *st = px_client_stmt_get(&cl->stmts, name);
    ext_drop(cl, f);
    px_reply_ent *e = ext_push(sv, RP_FAKE_CLOSE, 0);
    if (!e)
        return PX_MSG_CLOSED;
    if (st) {
        e->cname = ext_strdup(name);
        e->stmt = st;
        st->refs++;
        px_client_stmt_del(&cl->stmts, &cl->conn.w->stmts, name);
    }
    px_server_emit_fakes(sv);
    return PX_MSG_DONE;
}

/* Bind or Describe of a statement: rewritten to the server's name. An unknown name passes
 * unchanged so that PostgreSQL reports it, except names that look like the proxy's own,
 * which must not reach other clients' statements: they are sent as a name that cannot
 * exist and the error is given the client's name. */
static px_msg ext_use(px_client *cl, const pgs_frame *f, const char *portal, const char *name,
                      const uint8_t *rest, size_t n)
{
    px_server *sv = px_client_server(cl);
    px_stmt *st = px_client_stmt_get(&cl->stmts, name);
    char sname[PX_STMT_NAME_LEN];
    bool foreign = !st && strncmp(name, "pgshard_", 8) == 0;
    if (!st && !foreign)
        return PX_MSG_PASS; /* PostgreSQL reports it */
    /* One namespace, as on PostgreSQL: a statement from SQL PREPARE is bound like any other.
     * The server prepares it with a hidden PREPARE query, which must not land in the middle
     * of a pipeline segment (a Query there would end the segment's implicit transaction, or
     * be skipped after an error): there, one this server does not have yet passes unchanged
     * and PostgreSQL reports it unknown. */
    if (st && st->sql && sv->ext_open &&
        px_sset_get(&sv->stmts, st->hash, ext_tick(cl->conn.w), NULL) == PX_STMT_ABSENT)
        return PX_MSG_PASS;
    if (st) {
        int r = ext_ensure_any(sv, st);
        if (r != 0)
            return r < 0 ? PX_MSG_CLOSED : PX_MSG_WAIT;
        px_stmt_name(st->hash, sname);
        if (f->type == PGS_FE_BIND && !st->sql) { /* EXECUTE does not look at it either */
            size_t tl = pgs_strnlen((const char *)st->body, st->body_len);
            if (!st->pin_known) {
                px_route_pins(cl->conn.w, (const char *)st->body, tl, &st->pin, &st->unpin);
                st->pin_known = true;
            }
            px_pin_apply(cl, sv, st->pin, st->unpin);
            if (px_client_stage_session(cl, (const char *)st->body, tl) < 0)
                return PX_MSG_CLOSED;
        }
    } else {
        snprintf(sname, sizeof sname, "pgshard_");
    }
    ext_drop(cl, f);
    pgs_buf b = PGS_BUF_INIT;
    size_t m = pgs_msg_begin(&b, f->type);
    if (f->type == PGS_FE_BIND)
        pgs_buf_append_cstr(&b, portal);
    else
        pgs_buf_append_u8(&b, 'S');
    pgs_buf_append_cstr(&b, sname);
    pgs_buf_append(&b, rest, n);
    pgs_msg_end(&b, m);
    px_reply_ent *e = ext_push(sv, f->type == PGS_FE_BIND ? RP_BIND : RP_DESCRIBE, 0);
    if (e && foreign)
        e->cname = ext_strdup(name);
    px_conn_send_buf(&sv->conn, &b);
    pgs_buf_free(&b);
    return e ? PX_MSG_DONE : PX_MSG_CLOSED;
}

/* Handles P, B, D and C of a linked client in transaction pooling: consumed (rewritten or
 * answered), passed unchanged, or the client waits for its server. */
px_msg px_ext_client_message(px_client *cl, const pgs_frame *f)
{
    px_conn *c = &cl->conn;
    const uint8_t *body = c->in.data + c->in_pos + PGS_HDR_LEN;
    pgs_reader rd = pgs_reader_make(body, f->len - 4);
    const char *portal = NULL, *name;
    uint8_t kind = 'S';
    if (f->type == PGS_FE_BIND && pgs_rd_cstr(&rd, &portal) < 0)
        return PX_MSG_PASS;
    if ((f->type == PGS_FE_DESCRIBE || f->type == PGS_FE_CLOSE) && pgs_rd_u8(&rd, &kind) < 0)
        return PX_MSG_PASS;
    if (pgs_rd_cstr(&rd, &name) < 0 || kind != 'S' || name[0] == 0)
        return PX_MSG_PASS;
    /* What was forwarded before goes first: the proxy may inject messages now. */
    px_conn_flush_forward(c, &px_client_server(cl)->conn);
    switch (f->type) {
    case PGS_FE_PARSE:
        return ext_parse(cl, f, name, rd.p, rd.left);
    case PGS_FE_CLOSE:
        return ext_close(cl, f, name);
    default:
        return ext_use(cl, f, portal, name, rd.p, rd.left);
    }
}

/* DEALLOCATE of a client's statement runs as DEALLOCATE of the server's name for it, so
 * the reply is PostgreSQL's own; f is a simple Query or an unnamed Parse of that text.
 * Returns as px_ext_client_message. */
px_msg px_ext_deallocate(px_client *cl, const pgs_frame *f, const char *name)
{
    px_server *sv = px_client_server(cl);
    px_stmt *st;
    char sname[PX_STMT_NAME_LEN];
    int r = ext_take_stmt(cl, f, name, &st, sname);
    if (r != 1)
        return r;
    px_htab_del(&sv->stmts, st->hash);
    px_client_stmt_del(&cl->stmts, &cl->conn.w->stmts, name);
    pgs_buf b = PGS_BUF_INIT;
    size_t m = pgs_msg_begin(&b, f->type);
    if (f->type == PGS_FE_PARSE)
        pgs_buf_append_u8(&b, 0); /* the unnamed statement */
    pgs_buf_append(&b, "DEALLOCATE ", 11);
    pgs_buf_append_cstr(&b, sname);
    if (f->type == PGS_FE_PARSE) {
        /* The parameter types that followed the original text. */
        const uint8_t *body = cl->conn.in.data + cl->conn.in_pos - f->total + PGS_HDR_LEN + 1;
        pgs_reader rd = pgs_reader_make(body, f->len - 5);
        const char *text;
        if (pgs_rd_cstr(&rd, &text) == 0)
            pgs_buf_append(&b, rd.p, rd.left);
    }
    pgs_msg_end(&b, m);
    int ok = f->type == PGS_FE_PARSE ? (ext_push(sv, RP_PARSE, 0) ? 0 : -1)
                                     : px_server_push_reply(sv, RP_QUERY, 0);
    px_conn_send_buf(&sv->conn, &b);
    pgs_buf_free(&b);
    return ok < 0 ? PX_MSG_CLOSED : PX_MSG_DONE;
}

/* ---- the server side ---------------------------------------------------------------- */

static void ext_succeeded(px_server *sv, px_reply_ent *e)
{
    if ((e->kind == RP_PARSE || e->kind == RP_PARSE_HIDDEN) && e->hash)
        px_sset_ready(&sv->stmts, e->hash);
    ext_release(sv->conn.w, e);
    px_replies_pop(&sv->replies);
}

/* Undoes what an entry's message did to the proxy's bookkeeping when the server failed
 * or skipped it, and releases the entry (the caller pops it). */
static void ext_undo(px_server *sv, px_reply_ent *e)
{
    px_client *cl = px_server_client(sv);
    px_worker *w = sv->conn.w;
    switch (e->kind) {
    case RP_PARSE:
    case RP_PARSE_HIDDEN:
    case RP_FAKE_PARSE:
        if (e->hash)
            px_htab_del(&sv->stmts, e->hash);
        if (cl && e->cname && e->stmt && px_client_stmt_get(&cl->stmts, e->cname) == e->stmt)
            px_client_stmt_del(&cl->stmts, &w->stmts, e->cname);
        break;
    case RP_FAKE_CLOSE:
        if (cl && e->cname && e->stmt && !px_client_stmt_get(&cl->stmts, e->cname) &&
            px_client_stmt_put(&cl->stmts, &w->stmts, e->cname, e->stmt) == 0)
            e->stmt = NULL; /* the name holds the reference now */
        break;
    case RP_CLOSE_HIDDEN:
        if (e->hash && px_sset_pending(&sv->stmts, e->hash, 0, 0) == 0)
            px_sset_ready(&sv->stmts, e->hash); /* not closed after all */
        break;
    default:
        break;
    }
    ext_release(w, e);
}

/* After an ErrorResponse to an extended-protocol message the server skips everything up
 * to Sync. The skipped messages are undone last first, as a rollback would, so a name
 * closed and then parsed again in the skipped part ends up as it was. When the queue runs
 * out before a Sync, what the client sends next until its Sync is skipped too. */
static void ext_skip_to_sync(px_server *sv)
{
    px_replies *q = &sv->replies;
    size_t k = 0;
    /* NOLINTNEXTLINE(clang-analyzer-core.NullDereference): ents is allocated whenever n > 0 */
    while (k < q->n && q->ents[(q->head + k) % q->cap].kind != RP_SYNC &&
           q->ents[(q->head + k) % q->cap].kind != RP_QUERY)
        k++;
    sv->skipping = k == q->n;
    for (size_t i = k; i-- > 0;)
        ext_undo(sv, &q->ents[(q->head + i) % q->cap]);
    while (k--)
        px_replies_pop(q);
}

/* Sends the replies the proxy owes the client itself once everything before them has
 * been relayed, so they land exactly where PostgreSQL would have put them. */
void px_server_emit_fakes(px_server *sv)
{
    static const uint8_t parse_complete[] = {'1', 0, 0, 0, 4};
    static const uint8_t close_complete[] = {'3', 0, 0, 0, 4};
    px_reply_ent *h;
    px_client *cl = px_server_client(sv);
    while (!sv->skipping && (h = px_replies_head(&sv->replies)) && h->kind >= RP_FAKE_CLOSE) {
        if (cl)
            px_conn_send(&cl->conn, h->kind == RP_FAKE_PARSE ? parse_complete : close_complete, 5);
        ext_succeeded(sv, h);
    }
}

/* Rebuilds an ErrorResponse naming the proxy's statement name with the client's. */
/* Sends a server's ErrorResponse to the client with its position ('P', in characters of the
 * text the server ran) moved back onto the client's own text, which named the statement
 * differently: LINE and caret then point where PostgreSQL would have pointed. */
static void ext_send_error(px_client *cl, const px_reply_ent *e, const uint8_t *msg, const pgs_frame *f)
{
    pgs_reader rd = pgs_reader_make(msg + PGS_HDR_LEN, f->len - 4);
    pgs_buf b = PGS_BUF_INIT;
    size_t m = pgs_msg_begin(&b, PGS_BE_ERROR);
    bool moved = false;
    uint8_t code;
    const char *val;
    while (e->pos_delta && pgs_rd_u8(&rd, &code) == 0 && code != 0 && pgs_rd_cstr(&rd, &val) == 0) {
        char *endp;
        long pos = code == 'P' ? strtol(val, &endp, 10) : 0;
        pgs_buf_append_u8(&b, code);
        if (code == 'P' && *endp == '\0' && pos > (long)e->pos_at && pos - e->pos_delta > (long)e->pos_at) {
            pgs_buf_appendf(&b, "%ld", pos - e->pos_delta);
            pgs_buf_append_u8(&b, 0);
            moved = true;
        } else {
            pgs_buf_append_cstr(&b, val);
        }
    }
    pgs_buf_append_u8(&b, 0);
    pgs_msg_end(&b, m);
    if (moved && !pgs_buf_failed(&b))
        px_conn_send_buf(&cl->conn, &b);
    else
        px_conn_send(&cl->conn, msg, f->total);
    pgs_buf_free(&b);
}

static void ext_rename_error(px_server *sv, const px_reply_ent *e, const uint8_t *msg, const pgs_frame *f)
{
    pgs_error_fields ef;
    px_client *cl = px_server_client(sv);
    pgs_buf b = PGS_BUF_INIT;
    if (pgs_error_parse(msg + PGS_HDR_LEN, f->len - 4, &ef) == 0 &&
        (strcmp(ef.sqlstate, PGS_SQLSTATE_DUPLICATE_PSTATEMENT) == 0 ||
         strcmp(ef.sqlstate, PGS_SQLSTATE_INVALID_SQL_STATEMENT_NAME) == 0)) {
        pgs_msg_error(&b, ef.severity, ef.sqlstate, "prepared statement \"%s\" %s", e->cname,
                      ef.sqlstate[1] == '2' ? "already exists" : "does not exist");
        px_conn_send_buf(&cl->conn, &b);
    } else {
        ext_send_error(cl, e, msg, f);
    }
    pgs_buf_free(&b);
}

/* Accounts for one server message (whole in the buffer when it is small enough to matter)
 * against the head of the reply queue: what becomes of it (px_relay). */
px_relay px_ext_server_message(px_server *sv, const pgs_frame *f, const uint8_t *p, size_t avail)
{
    px_reply_ent *h = px_replies_head(&sv->replies);
    if (h && h->kind == RP_PREPARE_SQL) {
        if (avail < f->total)
            return PX_RELAY_WHOLE;
        if (f->type == PGS_BE_ERROR && h->hash)
            px_htab_del(&sv->stmts, h->hash);
        if (f->type == PGS_BE_READY) {
            if (h->hash)
                px_sset_ready(&sv->stmts, h->hash);
            px_replies_pop(&sv->replies);
        }
        return PX_RELAY_HIDE;
    }
    if (h && h->kind == RP_BEGIN) {
        if (avail < f->total)
            return PX_RELAY_WHOLE;
        /* A BEGIN fails on an idle server only when asked for what the node cannot do
         * (ISOLATION LEVEL SERIALIZABLE or READ WRITE on a hot standby; routing keeps such
         * transactions on the primary, so this is not expected). The server would then skip
         * the client's statements up to a Sync that may never come: it is closed, and the
         * client told why. */
        if (f->type == PGS_BE_ERROR) {
            pgs_error_fields ef;
            char why[320];
            if (pgs_error_parse(p + PGS_HDR_LEN, f->len - 4, &ef) < 0)
                ef.message = ef.sqlstate = "?";
            snprintf(why, sizeof why, "the BEGIN of this transaction failed there: %s (SQLSTATE %s)",
                     ef.message, ef.sqlstate);
            pgs_warn("begin_failed", "server pid %u: %s; closing it", sv->be_pid, why);
            px_server_close(sv, why);
            return PX_RELAY_CLOSED;
        }
        if (f->type == PGS_BE_COMMAND_COMPLETE)
            px_replies_pop(&sv->replies);
        return PX_RELAY_HIDE;
    }
    if (h && (h->kind == RP_REPLAY || h->kind == RP_RESTORE)) {
        if (avail < f->total)
            return PX_RELAY_WHOLE;
        /* After a RESET the client hears the value it ends with, and then the ReadyForQuery
         * that the RESET's own reply left out, as from PostgreSQL. */
        px_relay r = h->kind == RP_RESTORE && (f->type == PGS_BE_PARAM_STATUS || f->type == PGS_BE_READY)
                         ? PX_RELAY
                         : PX_RELAY_HIDE;
        if (f->type == PGS_BE_ERROR)
            pgs_warn("session_replay_failed", "server pid %u: %s failed", sv->be_pid,
                     h->kind == RP_REPLAY ? "replaying a client's SET statements"
                                          : "setting a client's startup parameters again after RESET");
        if (f->type == PGS_BE_READY)
            px_replies_pop(&sv->replies);
        return r;
    }
    switch (f->type) {
    case PGS_BE_ERROR: {
        px_relay hide = PX_RELAY;
        sv->saw_error = true;
        if (h && h->kind == RP_QUERY && h->cname && h->stmt) {
            /* A PREPARE that failed: the client's name does not exist after all. */
            px_client *cl = px_server_client(sv);
            if (cl && px_client_stmt_get(&cl->stmts, h->cname) == h->stmt)
                px_client_stmt_del(&cl->stmts, &sv->conn.w->stmts, h->cname);
            ext_release(sv->conn.w, h);
        }
        if (h && h->cname &&
            (h->kind == RP_BIND || h->kind == RP_DESCRIBE ||
             ((h->kind == RP_PARSE || h->kind == RP_QUERY) && !h->stmt))) {
            if (avail < f->total)
                return PX_RELAY_WHOLE;
            px_conn_flush_forward(&sv->conn, px_link_dest(sv->link));
            ext_rename_error(sv, h, p, f);
            hide = PX_RELAY_HIDE;
        } else if (h && h->kind == RP_QUERY && h->pos_delta) {
            if (avail < f->total)
                return PX_RELAY_WHOLE;
            px_conn_flush_forward(&sv->conn, px_link_dest(sv->link));
            ext_send_error(px_server_client(sv), h, p, f);
            hide = PX_RELAY_HIDE;
        }
        if (h && h->kind != RP_QUERY)
            ext_skip_to_sync(sv);
        return hide;
    }
    case PGS_BE_READY:
        if (sv->skipping)
            ext_skip_to_sync(sv);
        h = px_replies_head(&sv->replies);
        if (!h || (h->kind != RP_SYNC && h->kind != RP_QUERY))
            return PX_RELAY_DESYNC;
        sv->skipping = false;
        {
            px_relay r = h->hide_ready ? PX_RELAY_HIDE : PX_RELAY;
            ext_release(sv->conn.w, h);
            px_replies_pop(&sv->replies);
            return r;
        }
    case PGS_BE_PARSE_COMPLETE:
        if (!h || (h->kind != RP_PARSE && h->kind != RP_PARSE_HIDDEN))
            return PX_RELAY_DESYNC;
        {
            px_relay hide = h->kind == RP_PARSE_HIDDEN ? PX_RELAY_HIDE : PX_RELAY;
            ext_succeeded(sv, h);
            return hide;
        }
    case PGS_BE_CLOSE_COMPLETE:
        if (!h || (h->kind != RP_CLOSE && h->kind != RP_CLOSE_HIDDEN))
            return PX_RELAY_DESYNC;
        {
            px_relay hide = h->kind == RP_CLOSE_HIDDEN ? PX_RELAY_HIDE : PX_RELAY;
            ext_succeeded(sv, h);
            return hide;
        }
    case PGS_BE_BIND_COMPLETE:
        if (!h || h->kind != RP_BIND)
            return PX_RELAY_DESYNC;
        ext_succeeded(sv, h);
        return PX_RELAY;
    case PGS_BE_ROW_DESC:
    case PGS_BE_NO_DATA:
        if (h && h->kind == RP_DESCRIBE)
            ext_succeeded(sv, h);
        return PX_RELAY;
    case PGS_BE_COMMAND_COMPLETE:
    case PGS_BE_EMPTY_QUERY:
    case PGS_BE_PORTAL_SUSPENDED:
        if (h && h->kind == RP_EXECUTE)
            ext_succeeded(sv, h);
        return PX_RELAY;
    default:
        return PX_RELAY;
    }
}

/* ---- SQL PREPARE / EXECUTE ---------------------------------------------------------- */

/* Sends text with the statement name at [at, end) replaced, as a simple query. */
/* Characters (UTF-8 code points) in s[0..n). */
static uint32_t ext_chars(const char *s, size_t n)
{
    uint32_t c = 0;
    for (size_t i = 0; i < n; i++)
        c += ((unsigned char)s[i] & 0xC0) != 0x80;
    return c;
}

/* Sends the client's text with the statement name at [at, end) replaced by name, as a simple
 * query, and records in e how far the server's error positions then are off. */
static void ext_send_renamed(px_server *sv, px_reply_ent *e, const char *sql, size_t len, size_t at,
                             size_t end, const char *name)
{
    e->pos_at = ext_chars(sql, end);
    e->pos_delta = (int32_t)strlen(name) - (int32_t)ext_chars(sql + at, end - at);
    pgs_buf b = PGS_BUF_INIT;
    size_t m = pgs_msg_begin(&b, PGS_FE_QUERY);
    pgs_buf_append(&b, sql, at);
    pgs_buf_appendf(&b, "%s", name);
    pgs_buf_append(&b, sql + end, len - end);
    pgs_buf_append_u8(&b, 0);
    pgs_msg_end(&b, m);
    px_conn_send_buf(&sv->conn, &b);
    pgs_buf_free(&b);
}

/* PREPARE name ...: the server checks it under a throwaway name (so its errors are
 * PostgreSQL's) and forgets it again; each server prepares it under its hash name when an
 * EXECUTE needs it. A name the client already has gets the server's own 42P05. */
px_msg px_ext_sql_prepare(px_client *cl, const pgs_frame *f, const char *sql, size_t len, const char *name,
                          size_t at, size_t end)
{
    px_server *sv = px_client_server(cl);
    px_worker *w = cl->conn.w;
    char sname[PX_STMT_NAME_LEN];
    px_conn_flush_forward(&cl->conn, &sv->conn);
    px_stmt *old = px_client_stmt_get(&cl->stmts, name);
    if (old) {
        int r = ext_ensure_any(sv, old);
        if (r != 0)
            return r < 0 ? PX_MSG_CLOSED : PX_MSG_WAIT;
        ext_drop(cl, f);
        px_stmt_name(old->hash, sname);
        px_reply_ent *e = ext_push(sv, RP_QUERY, 0);
        if (!e)
            return PX_MSG_CLOSED;
        sv->segment++;
        e->cname = ext_strdup(name);
        ext_send_renamed(sv, e, sql, len, at, end, sname);
        return PX_MSG_DONE;
    }
    uint64_t seed = (cl->sess ? px_session_search_path_sig(cl->sess) : 0) ^ 0x5e1ull;
    px_stmt *st = px_stmt_register(&w->stmts, (const uint8_t *)sql + end, len - end, seed);
    if (!st || px_client_stmt_put(&cl->stmts, &w->stmts, name, st) < 0) {
        if (st)
            px_stmt_unref(&w->stmts, st);
        px_client_fatal(cl, PGS_SQLSTATE_OUT_OF_MEMORY, "out of memory registering prepared statement \"%s\"",
                        name);
        return PX_MSG_CLOSED;
    }
    st->sql = true;
    ext_drop(cl, f);
    px_reply_ent *e = ext_push(sv, RP_QUERY, 0);
    if (!e)
        return PX_MSG_CLOSED;
    sv->segment++;
    e->cname = ext_strdup(name);
    e->stmt = st;
    st->refs++;
    ext_send_renamed(sv, e, sql, len, at, end, PROBE_NAME);
    pgs_buf b = PGS_BUF_INIT;
    pgs_msg_query(&b, "DEALLOCATE " PROBE_NAME);
    if (px_server_push_reply(sv, RP_PREPARE_SQL, 0) < 0) {
        pgs_buf_free(&b);
        return PX_MSG_CLOSED;
    }
    px_conn_send_buf(&sv->conn, &b);
    pgs_buf_free(&b);
    return PX_MSG_DONE;
}

/* EXECUTE name ...: runs on the server's name for the statement, prepared there first when
 * needed. An unknown name passes unchanged so PostgreSQL reports it. */
px_msg px_ext_sql_execute(px_client *cl, const pgs_frame *f, const char *sql, size_t len, const char *name,
                          size_t at, size_t end)
{
    px_server *sv = px_client_server(cl);
    px_stmt *st;
    char sname[PX_STMT_NAME_LEN];
    int r = ext_take_stmt(cl, f, name, &st, sname);
    if (r != 1)
        return r;
    px_reply_ent *e = ext_push(sv, RP_QUERY, 0);
    if (!e)
        return PX_MSG_CLOSED;
    sv->segment++;
    e->cname = ext_strdup(name);
    ext_send_renamed(sv, e, sql, len, at, end, sname);
    return PX_MSG_DONE;
}

/* A fan-out's writes on several shards in one distributed transaction (an omnisharded
 * write, a keyless UPDATE/DELETE, a split INSERT, DDL with two-phase commit), with its
 * two-phase commit, and the end (COMMIT or ROLLBACK) of a client's transaction over
 * several shards, which runs the same steps over the transaction's servers. */
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "parser/insertsplit.h"
#include "proxy/catalog.h"
#include "proxy/copysplit.h"
#include "proxy/fanout_int.h"
#include "proxy/merge.h"
#include "proxy/monitor.h"
#include "proxy/px.h"
#include "proxy/recovery.h"
#include "proxy/testhook.h"

/* A send that fails closes its server at once, and px_fanout_server_lost takes the shard
 * off (links[s].sv = NULL): no answer is then awaited from it. The fan-out does not end
 * under the send (fo->sending): the caller that runs the write (px_fanout_server_step,
 * px_fanout_linked) ends it once every shard is done. */
static void write_send(px_fanout *fo, int s, const char *sql)
{
    px_server *sv = fo->links[s].sv;
    if (!sv)
        return;
    bool sending = fo->sending;
    fo->sending = true;
    px_fo_send_sql(sv, sql);
    fo->sending = sending;
    if (fo->links[s].sv) {
        fo->pending++;
        fo->awaiting[s]++;
    }
}

static void write_abort(px_fanout *fo)
{
    char sql[96];
    fo->stage = WS_ABORT;
    for (int s = 0; s < fo->nshards; s++) {
        if (!fo->links[s].sv)
            continue;
        if (fo->committed[s]) { /* prepared */
            snprintf(sql, sizeof sql, "ROLLBACK PREPARED '%s'", fo->gid);
            write_send(fo, s, sql);
        } else if (fo->links[s].sv->tx_status != PGS_TX_IDLE) {
            write_send(fo, s, "ROLLBACK");
        }
    }
    if (!fo->pending)
        px_fo_write_next(fo);
}

/* Two-phase commit: every shard but 0 prepares; shard 0 then decides. */
static void write_prepare(px_fanout *fo)
{
    px_worker *w = fo->cl->conn.w;
    px_gid_format(fo->gid, sizeof fo->gid, w->px->instance_id,
                  atomic_fetch_add_explicit(&w->px->twopc_seq, 1, memory_order_relaxed));
    fo->prepare_ns = uv_hrtime();
    char sql[96];
    snprintf(sql, sizeof sql, "PREPARE TRANSACTION '%s'", fo->gid);
    fo->stage = WS_PREPARE;
    for (int s = 1; s < fo->nshards; s++)
        write_send(fo, s, sql);
    if (!fo->pending)
        px_fo_write_next(fo);
}

static const char write_decision_table[] =
    "DO $pgshard$BEGIN CREATE SCHEMA IF NOT EXISTS pgshard; CREATE TABLE IF NOT EXISTS pgshard.transactions "
    "(gid text PRIMARY KEY, decided_at timestamptz NOT NULL DEFAULT now()); EXCEPTION WHEN duplicate_object "
    "OR "
    "duplicate_table OR unique_violation THEN NULL; END$pgshard$";

/* Moves to the next step once every shard answered the current one. */
void px_fo_write_next(px_fanout *fo)
{
    char sql[512];
    switch (fo->stage) {
    case WS_RUN:
        if (fo->in_txn) { /* the client's transaction goes on: its COMMIT ends it */
            for (int s = 0; s < fo->nshards; s++)
                px_fo_link_done(fo, &fo->links[s]);
            return;
        }
        if (fo->failed)
            return write_abort(fo);
        if (!fo->cl->conn.w->conf->cfg->two_phase_commit || fo->nshards == 1) {
            fo->stage = WS_FINISH;
            for (int s = 0; s < fo->nshards; s++)
                write_send(fo, s, "COMMIT");
            break;
        }
        return write_prepare(fo);
    case WS_PREPARE:
        /* Recovery rolls back a prepared transaction older than its grace that has no
         * decision: deciding that late could commit shard 0 alone. */
        if (!fo->failed && uv_hrtime() - fo->prepare_ns >
                               (uint64_t)fo->cl->conn.w->conf->cfg->two_phase_recovery_grace_ms * 500000)
            px_fo_fail(fo, PGS_SQLSTATE_CONNECTION_FAILURE,
                       "pgshard: the shards took too long to prepare the transaction; it was rolled back");
        if (fo->failed)
            return write_abort(fo);
        px_test_crash_point("after_prepare");
        fo->stage = WS_DECIDE;
        snprintf(sql, sizeof sql, "%s; INSERT INTO pgshard.transactions (gid) VALUES ('%s'); COMMIT",
                 write_decision_table, fo->gid);
        write_send(fo, 0, sql);
        break;
    case WS_DECIDE:
        if (fo->failed)
            return write_abort(fo);
        px_test_crash_point("after_decision");
        fo->stage = WS_FINISH;
        snprintf(sql, sizeof sql, "COMMIT PREPARED '%s'", fo->gid);
        for (int s = 1; s < fo->nshards; s++)
            write_send(fo, s, sql);
        break;
    case WS_FINISH:
        if (fo->gid[0] && !fo->commit_failed) {
            fo->stage = WS_FORGET;
            snprintf(sql, sizeof sql, "DELETE FROM pgshard.transactions WHERE gid = '%s'", fo->gid);
            write_send(fo, 0, sql);
            break;
        }
        /* fall through */
    default:
        for (int s = 0; s < fo->nshards; s++)
            px_fo_link_done(fo, &fo->links[s]);
        return;
    }
    /* Every send of the step failed (each closed its server): no answer will come. */
    if (!fo->pending)
        px_fo_write_next(fo);
}

/* The statement's own answer on shard s during WS_RUN: RETURNING rows and the count. */
static void write_result(px_fanout *fo, int s, char type, const uint8_t *p, size_t total)
{
    const uint8_t *body = p + PGS_HDR_LEN;
    size_t n = total - PGS_HDR_LEN;
    bool mine = fo->all_rows || s == 0;
    /* Held until every shard has committed: the client sees nothing of a write that is
     * rolled back, and the extended protocol's answers come before the rows. */
    bool head = type == PGS_BE_PARSE_COMPLETE || type == PGS_BE_BIND_COMPLETE || type == PGS_BE_NO_DATA;
    bool row = type == PGS_BE_DATA_ROW || (type == PGS_BE_ROW_DESC && !fo->rd_sent) ||
               (fo->ddl && type == PGS_BE_COMMAND_COMPLETE); /* each statement's own tag */
    if ((head && s == 0) || (row && mine)) {
        fo->rd_sent = fo->rd_sent || type == PGS_BE_ROW_DESC;
        pgs_buf *to = head ? &fo->head : fo->ins && type == PGS_BE_DATA_ROW ? &fo->rowbufs[s] : &fo->out;
        if (pgs_buf_append(to, p, total) < 0 || to->len > FANOUT_WRITE_ROWS_MAX)
            px_fo_fail(fo, PGS_SQLSTATE_PROGRAM_LIMIT_EXCEEDED,
                       "pgshard: a write on several shards may return at most 64 MB of RETURNING rows");
    } else if (type == PGS_BE_COMMAND_COMPLETE && mine) {
        /* "UPDATE n", "DELETE n", "INSERT 0 n": the verb, and the count summed */
        const char *sp = memrchr(body, ' ', n);
        size_t vl = sp ? (size_t)(sp - (const char *)body) : 0;
        if (sp && vl < sizeof fo->verb) {
            memcpy(fo->verb, body, vl);
            fo->verb[vl] = 0;
            fo->copied += strtoull(sp + 1, NULL, 10);
        }
    }
}

/* A message of a write's shard. Each step's hidden answers are only looked at for errors
 * and for the ReadyForQuery that completes the step. */
void px_fo_write_message(px_fanout *fo, px_server *sv, char type, const uint8_t *p, size_t total)
{
    int s = sv->link->shard;
    if (type == PGS_BE_ERROR) {
        sv->pool->st.errors++;
        if (fo->stage == WS_FINISH && fo->gid[0]) {
            /* decided: recovery commits it there (recovery.c); the client's write stands, and
             * the decision stays for recovery to find */
            fo->commit_failed = true;
            pgs_warn("twopc_commit_failed",
                     "COMMIT PREPARED '%s' failed on shard %d: recovery will commit it", fo->gid, s);
        } else if (fo->stage != WS_ABORT && fo->stage != WS_FORGET) {
            px_fo_fail_from(fo, s, p, total);
        }
        return;
    }
    if (type == PGS_BE_READY) {
        sv->tx_status = (char)p[PGS_HDR_LEN];
        sv->pool->st.queries++;
        if (fo->replays[s]) { /* the session replay, then BEGIN */
            fo->replays[s]--;
            if (sv->replies.n)
                px_replies_pop(&sv->replies);
            return;
        }
        if (fo->stage == WS_PREPARE && sv->tx_status == PGS_TX_IDLE && !fo->failed)
            fo->committed[s] = 1; /* prepared: it must be finished or rolled back */
        if (fo->stage == WS_FINISH && s > 0 && fo->gid[0])
            px_test_crash_point("after_first_commit_prepared");
        if (fo->awaiting[s])
            fo->awaiting[s]--;
        if (--fo->pending == 0)
            px_fo_write_next(fo);
        return;
    }
    if (fo->stage == WS_RUN && !fo->replays[s])
        write_result(fo, s, type, p, total);
    else if (type == PGS_BE_NOTICE && fo->stage == WS_RUN && s == 0)
        px_conn_send(&fo->cl->conn, p, total);
}

/* Every shard has a server: each begins a transaction and runs the statement. */
void px_fo_write_start(px_fanout *fo)
{
    fo->stage = WS_RUN;
    for (int s = 0; s < fo->nshards; s++) {
        px_server *sv = fo->links[s].sv;
        if (!sv)
            continue;
        fo->replays[s] = px_client_replay_session(fo->cl, sv) ? 1 : 0;
        if (fo->in_txn) {
            fo->replays[s] += px_fo_join_txn(fo, s);
        } else {
            px_fo_send_sql(sv, "BEGIN");
            fo->replays[s] += fo->links[s].sv != NULL;
        }
        if (!fo->links[s].sv)
            continue; /* the send failed and closed it: the shard is lost (write_send) */
        fo->phase[s] = FL_QUERY;
        const pgs_buf *req = fo->ins ? &fo->reqs[s] : &fo->req;
        if (!req->len)
            continue; /* a split INSERT with no row here: it only takes part in the commit */
        px_conn_send_buf(&sv->conn, req);
        if (!fo->links[s].sv)
            continue; /* the send failed: the shard is lost */
        fo->pending++;
        fo->awaiting[s]++;
        pgs_buf b = PGS_BUF_INIT;
        if (fo->ddl && px_fo_seq_sql(fo, s, &b)) { /* in the same transaction */
            px_conn_send_buf(&sv->conn, &b);
            if (fo->links[s].sv) {
                fo->pending++;
                fo->awaiting[s]++;
            }
        }
        pgs_buf_free(&b);
    }
}

/* The DataRow messages in b from at, one at a time. */
static bool next_row(const pgs_buf *b, size_t *at, const uint8_t **p, size_t *n)
{
    if (b->len - *at < PGS_HDR_LEN)
        return false;
    *p = b->data + *at;
    *n = (size_t)pgs_be32(*p + 1) + 1;
    if (*n > b->len - *at)
        return false;
    *at += *n;
    return true;
}

/* A split INSERT's RETURNING rows in the client's row order: row i is the next row of its
 * shard. When a shard returned another number of rows than it was given (ON CONFLICT DO
 * NOTHING, a trigger), which rows are missing cannot be known: shard by shard then. */
void px_fo_split_rows_out(px_fanout *fo)
{
    px_conn *c = &fo->cl->conn;
    const prs_insert_split *sp = fo->ins;
    bool exact = true;
    uint32_t total = 0;
    for (int k = 0; k < sp->nparts; k++) {
        size_t at = 0, n;
        const uint8_t *p;
        uint32_t rows = 0;
        while (next_row(&fo->rowbufs[sp->parts[k].shard], &at, &p, &n))
            rows++;
        exact = exact && rows == sp->parts[k].nrows;
        total += sp->parts[k].nrows;
    }
    if (!exact) {
        for (int s = 0; s < fo->nshards; s++)
            px_conn_send_buf(c, &fo->rowbufs[s]);
        return;
    }
    size_t *at = calloc((size_t)fo->nshards, sizeof *at);
    uint32_t *next = calloc(sp->nparts > 0 ? (size_t)sp->nparts : 1, sizeof *next);
    for (uint32_t i = 0; at && next && i < total; i++) {
        /* the part holding original row i is the one whose next index is i */
        for (int k = 0; k < sp->nparts; k++) {
            const prs_insert_part *pt = &sp->parts[k];
            const uint8_t *p;
            size_t n;
            if (next[k] < pt->nrows && pt->rows[next[k]] == i &&
                next_row(&fo->rowbufs[pt->shard], &at[pt->shard], &p, &n)) {
                px_conn_send(c, p, n);
                next[k]++;
                break;
            }
        }
    }
    free(at);
    free(next);
}

/* The client's CommandComplete of a write on several shards. */
void px_fo_write_complete(px_fanout *fo)
{
    char tag[64];
    if (fo->txn)
        snprintf(tag, sizeof tag, "%s", fo->verb);
    else
        snprintf(tag, sizeof tag, "%s %llu", fo->verb[0] ? fo->verb : "UPDATE",
                 (unsigned long long)fo->copied);
    pgs_buf b = PGS_BUF_INIT;
    pgs_msg_complete(&b, tag);
    px_conn_send_buf(&fo->cl->conn, &b);
    pgs_buf_free(&b);
}

/* ---- the end of a transaction over several shards -------------------------------------- */

/* Shard s's server takes part in the end: it answers to the fan-out from now on. */
void px_fo_xact_join(px_fanout *fo, int s, px_server *sv)
{
    px_link *l = &fo->links[s];
    l->sv = sv;
    l->start_ns = uv_hrtime();
    sv->link = l;
    fo->phase[s] = FL_QUERY;
    fo->ndone--;
}

/* COMMIT runs the write's two-phase steps from its statement's end (px_fo_write_next), ROLLBACK
 * its abort; px_fo_finish answers the client once every shard is done. */
void px_fo_xact_go(px_fanout *fo, bool abort)
{
    fo->stage = WS_RUN;
    fo->sending = true;
    if (abort)
        write_abort(fo);
    else
        px_fo_write_next(fo);
    fo->sending = false;
    if (fo->ndone == fo->nshards) {
        px_fo_finish(fo);
        return;
    }
    /* Parked servers were not read: they are now, and what they sent meanwhile (a FATAL
     * error before their connection ended) is taken at once. */
    px_fo_resume(fo);
}

int px_fanout_xact_end(px_client *cl, bool commit, size_t consume, pgs_buf *head)
{
    px_worker *w = cl->conn.w;
    px_xact *x = &cl->x;
    int n = w->conf->nshards;
    px_fanout *fo = px_fo_alloc(cl, n);
    if (!fo)
        return -1;
    fo->mode = PX_FAN_WRITE;
    fo->txn = true;
    fo->head = *head;
    *head = (pgs_buf)PGS_BUF_INIT;
    fo->head_done = true;
    fo->ndone = n;
    for (int s = 0; s < n; s++) {
        fo->links[s] = (px_link){.cl = cl, .shard = s, .fan = fo};
        fo->routes[s] = (px_route){
            .verdict = PX_ROUTE_GO, .write = true, .shard = s, .node = px_route_primary_node(w, s)};
        fo->phase[s] = FL_DONE;
    }
    bool failed = x->deferred == PX_DEFER_FAILED;
    int cur = x->nlinks ? x->links[0].shard : -1;
    px_server *sv = px_xact_detach(cl);
    px_route_link_done(cl);
    if (sv) {
        failed |= sv->tx_status != PGS_TX_BLOCK;
        fo->member[cur] = 1;
        px_fo_xact_join(fo, cur, sv);
    }
    for (int s = 0; s < n; s++) {
        if (!(sv = px_xact_take_parked(cl, s)))
            continue;
        failed |= sv->tx_status != PGS_TX_BLOCK;
        fo->member[s] = 1;
        px_fo_xact_join(fo, s, sv);
    }
    bool lost = x->multi_lost;
    x->multi_lost = false;
    x->deferred = PX_DEFER_NONE;
    pgs_buf_free(&x->begin);
    snprintf(fo->verb, sizeof fo->verb, "%s", commit && !failed ? "COMMIT" : "ROLLBACK");
    if (lost && commit)
        px_fo_fail(fo, PGS_SQLSTATE_CONNECTION_FAILURE,
                   "pgshard: a server of this transaction over several shards was lost before its COMMIT; "
                   "the transaction was rolled back on every shard");
    x->fan = fo;
    px_conn *c = &cl->conn;
    c->in_pos += consume;
    c->fwd_mark = c->in_pos;
    px_client_set_state(cl, CL_FANOUT, NULL);
    pgs_debug("xact_end", "client %08x: %s over %d shards", cl->key_pid, fo->verb, n - fo->ndone);
    bool abort = failed || lost || !commit;
    if (!abort && w->conf->cfg->two_phase_commit && !fo->links[0].sv) {
        px_pool *pool = px_xact_pool(cl, 0, fo->routes[0].node); /* shard 0 records the decision */
        return pool ? px_pool_acquire(pool, cl) : -1;
    }
    px_fo_xact_go(fo, abort);
    return 0;
}

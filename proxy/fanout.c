/* A cross-shard read: one client Query that names no tenant runs on every shard at once,
 * and the shards' rows are merged into the one result a single database would return.
 * This file holds the connections' side of it: it takes a server of each shard (in shard
 * order, so two fan-outs never wait on each other), sends each the shard query, feeds their
 * replies to the merge (merge.c) and the merged messages to the client, pacing the shards so
 * memory stays bounded, and gives the servers back. What the query becomes and how rows are
 * combined is the planner's (parser/scatter.c) and the merge's business, not this file's.
 *
 * While a fan-out runs the client is in CL_FANOUT: its later messages wait in its input.
 * The first error from any shard becomes the client's error; the other shards are
 * cancelled and drained to their ReadyForQuery, so their servers go back to the pool clean. */
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

static void fanout_drop_servers(px_fanout *fo);
static void fanout_go(px_fanout *fo);

/* The ErrorResponse msg (whole) with "(note)" after its message, same severity class and
 * SQLSTATE, into out. Returns 0, or -1 when msg is malformed or memory ran out. */
int px_fo_error_noted(const uint8_t *msg, size_t n, const char *note, pgs_buf *out)
{
    pgs_error_fields ef;
    if (n < PGS_HDR_LEN || pgs_error_parse(msg + PGS_HDR_LEN, n - PGS_HDR_LEN, &ef) < 0)
        return -1;
    pgs_msg_error(out, "ERROR", ef.sqlstate[0] ? ef.sqlstate : PGS_SQLSTATE_INTERNAL_ERROR, "%s (%s)",
                  ef.message, note);
    return pgs_buf_failed(out) ? -1 : 0;
}

/* The first failure wins; later ones (the cancels' 57014) are dropped. The message is a
 * whole ErrorResponse; from is the shard that sent it (its query is over), or -1. */
void px_fo_fail_from(px_fanout *fo, int from, const uint8_t *msg, size_t n)
{
    if (fo->failed)
        return;
    fo->failed = true;
    pgs_buf_append(&fo->err, msg, n);
    if (fo->mode == PX_FAN_WRITE)
        return; /* the transaction is rolled back on every shard once all have answered */
    if (fo->mode == PX_FAN_COPY_IN) {
        px_fo_copy_end_shards(fo, "pgshard: the COPY failed on another shard");
        return;
    }
    for (int s = 0; s < fo->nshards && !fo->every; s++)
        if (fo->phase[s] == FL_QUERY && fo->links[s].sv && s != from)
            px_server_cancel(fo->links[s].sv);
}

void px_fo_fail(px_fanout *fo, const char *sqlstate, const char *msg)
{
    if (fo->failed)
        return;
    pgs_buf b = PGS_BUF_INIT;
    pgs_msg_error(&b, "ERROR", sqlstate, "%s", msg);
    px_fo_fail_from(fo, -1, b.data, b.len);
    pgs_buf_free(&b);
}

static void fanout_merge_failed(px_fanout *fo)
{
    const char *state = PGS_SQLSTATE_INTERNAL_ERROR;
    const char *msg = fo->merge ? px_merge_error(fo->merge, &state) : "pgshard: out of memory";
    px_fo_fail(fo, state, msg ? msg : "pgshard: the merge of the shards' rows failed");
}

/* The database's collation, and its deterministic libc collations as "name=locale,...", each
 * name quoted as pg_collation_for() quotes it (a name some other collation of the database's
 * encoding shares is left out: which one a query meant would depend on its search_path; so
 * is one a ',' or '=' would make ambiguous here). The merge asks it for the collations the
 * shards name; one it lacks is refused. */
#define COLLATION_SQL                                                                                        \
    "SELECT d.datcollate, d.datlocprovider, "                                                                \
    "(SELECT string_agg(pg_catalog.quote_ident(c.collname) || '=' || c.collcollate, ',') "                   \
    "FROM pg_catalog.pg_collation c WHERE c.collprovider = 'c' AND c.collisdeterministic "                   \
    "AND c.collencoding IN (-1, d.encoding) AND c.collname !~ '[,=]' AND c.collcollate !~ '[,=]' "           \
    "AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_collation o WHERE o.collname = c.collname "                 \
    "AND o.oid <> c.oid AND o.collencoding IN (-1, d.encoding))) "                                           \
    "FROM pg_catalog.pg_database d WHERE d.datname = current_database()"

/* The database's collation decides how text under "default" sorts; pgshard reproduces libc
 * collations ("C"/"POSIX" by bytes, others with strcoll_l), not ICU ones: under those the
 * merge refuses to order text (equality, for group keys, is bytes either way). */
static int fanout_make_merge(px_fanout *fo)
{
    px_pool *home = fo->cl->pool;
    fo->merge =
        px_merge_new(&fo->plan, fo->nshards, home->coll_state == PX_COLL_LIBC ? home->coll : (locale_t)0);
    if (!fo->merge)
        return -1;
    bool unordered = home->coll_state != PX_COLL_LIBC && home->coll_state != PX_COLL_BYTES;
    px_merge_set_collations(fo->merge, unordered, px_pool_collation_locale, home);
    return 0;
}

void px_fo_send_sql(px_server *sv, const char *sql)
{
    pgs_buf b = PGS_BUF_INIT;
    pgs_msg_query(&b, sql);
    px_conn_send_buf(&sv->conn, &b);
    pgs_buf_free(&b);
}

/* The Bind's rest (parameter formats, parameters, result formats) for the shard query: when
 * the client gave one format per column, the hidden columns are asked in text (under *,
 * after the client's, which are those * gives). */
static void fanout_bind_rest(pgs_buf *b, const uint8_t *p, size_t n, const prs_scatter *plan)
{
    pgs_reader rd = pgs_reader_make(p, n);
    uint16_t nf, np, nr;
    const uint8_t *skip;
    if (pgs_rd_be16(&rd, &nf) < 0 || pgs_rd_bytes(&rd, (size_t)nf * 2, &skip) < 0 ||
        pgs_rd_be16(&rd, &np) < 0)
        goto as_is;
    for (uint16_t i = 0; i < np; i++) {
        uint32_t len;
        if (pgs_rd_be32(&rd, &len) < 0 || (len != UINT32_MAX && pgs_rd_bytes(&rd, len, &skip) < 0))
            goto as_is;
    }
    size_t at = (size_t)(rd.p - p);
    if (pgs_rd_be16(&rd, &nr) < 0 || nr <= 1 || rd.left != (size_t)nr * 2)
        goto as_is;
    size_t ncols = plan->ncols ? plan->ncols : (size_t)nr + plan->star_hidden;
    if (ncols <= nr || ncols > UINT16_MAX)
        goto as_is;
    pgs_buf_append(b, p, at);
    pgs_buf_append_be16(b, (uint16_t)ncols);
    pgs_buf_append(b, rd.p, rd.left);
    for (size_t i = nr; i < ncols; i++)
        pgs_buf_append_be16(b, 0);
    return;
as_is:
    pgs_buf_append(b, p, n); /* the shards judge it as PostgreSQL would */
}

static void fanout_release(px_fanout *fo)
{
    px_merge_free(fo->merge);
    prs_scatter_free(&fo->plan);
    pgs_buf_free(&fo->err);
    pgs_buf_free(&fo->out);
    pgs_buf_free(&fo->req);
    pgs_buf_free(&fo->parse_body);
    pgs_buf_free(&fo->head);
    for (int s = 0; fo->reqs && s < fo->nshards; s++)
        pgs_buf_free(&fo->reqs[s]);
    for (int s = 0; fo->rowbufs && s < fo->nshards; s++)
        pgs_buf_free(&fo->rowbufs[s]);
    free(fo->reqs);
    free(fo->rowbufs);
    if (fo->ins)
        prs_insert_split_free(fo->ins);
    free(fo->ins);
    free(fo->parse_name);
    if (fo->copy)
        prs_copy_opts_free(fo->copy);
    free(fo->copy);
    px_copy_split_free(fo->split);
    for (int s = 0; fo->bufs && s < fo->nshards; s++)
        pgs_buf_free(&fo->bufs[s]);
    free(fo->bufs);
    free(fo->replays);
    free(fo->routes);
    free(fo);
}

/* A split INSERT's part keeps some of the client's parameters, renumbered: its Parse types
 * and its Bind formats and values are those of params[k] (1-based numbers). */
static void part_types(pgs_buf *b, const uint8_t *p, size_t n, const prs_insert_part *pt)
{
    pgs_reader rd = pgs_reader_make(p, n);
    uint16_t nt = 0;
    if (pgs_rd_be16(&rd, &nt) < 0 || rd.left < (size_t)nt * 4)
        nt = 0;
    pgs_buf_append_be16(b, pt->nparams);
    for (uint16_t k = 0; k < pt->nparams; k++)
        pgs_buf_append_be32(b, pt->params[k] <= nt ? pgs_be32(rd.p + (size_t)(pt->params[k] - 1) * 4) : 0);
}

static void part_bind(pgs_buf *b, const uint8_t *p, size_t n, const prs_insert_part *pt)
{
    pgs_reader rd = pgs_reader_make(p, n);
    uint16_t nf, np;
    const uint8_t *fmts;
    const uint8_t **vals = NULL;
    uint32_t *lens = NULL;
    if (pgs_rd_be16(&rd, &nf) < 0 || pgs_rd_bytes(&rd, (size_t)nf * 2, &fmts) < 0 ||
        pgs_rd_be16(&rd, &np) < 0)
        goto as_is;
    vals = malloc(((size_t)np + 1) * sizeof *vals);
    lens = malloc(((size_t)np + 1) * sizeof *lens);
    if (!vals || !lens)
        goto as_is;
    for (uint16_t i = 0; i < np; i++)
        if (pgs_rd_be32(&rd, &lens[i]) < 0 ||
            (lens[i] != UINT32_MAX && pgs_rd_bytes(&rd, lens[i], &vals[i]) < 0))
            goto as_is;
    uint16_t nf2 = nf > 1 ? pt->nparams : nf;
    pgs_buf_append_be16(b, nf2);
    for (uint16_t k = 0; k < nf2; k++)
        pgs_buf_append(b, fmts + (nf > 1 ? (size_t)(pt->params[k] - 1) * 2 : (size_t)k * 2), 2);
    pgs_buf_append_be16(b, pt->nparams);
    for (uint16_t k = 0; k < pt->nparams; k++) {
        uint16_t i = pt->params[k] - 1;
        if (i >= np)
            goto as_is;
        pgs_buf_append_be32(b, lens[i]);
        if (lens[i] != UINT32_MAX)
            pgs_buf_append(b, vals[i], lens[i]);
    }
    pgs_buf_append(b, rd.p, rd.left); /* the result formats */
    free(vals);
    free(lens);
    return;
as_is:
    free(vals);
    free(lens);
    pgs_buf_append(b, p, n); /* the shard answers as PostgreSQL would */
}

/* What a shard is sent: sql as a Query, or in the client's extended form (with part, the
 * parameters of a split INSERT's part). */
static void fanout_build_one(px_fanout *fo, pgs_buf *b, const char *sql, const px_fanout_ext *e,
                             bool describe, const prs_insert_part *part, const pgs_buf *bind)
{
    if (!e) {
        pgs_msg_query(b, sql);
        return;
    }
    size_t tl = pgs_strnlen((const char *)e->stmt, e->stmt_len);
    size_t m = pgs_msg_begin(b, PGS_FE_PARSE);
    pgs_buf_append_u8(b, 0);
    pgs_buf_append_cstr(b, sql);
    if (part && tl < e->stmt_len)
        part_types(b, e->stmt + tl + 1, e->stmt_len - tl - 1, part);
    else if (tl < e->stmt_len)
        pgs_buf_append(b, e->stmt + tl + 1, e->stmt_len - tl - 1); /* the parameter types */
    else
        pgs_buf_append_be16(b, 0);
    pgs_msg_end(b, m);
    m = pgs_msg_begin(b, PGS_FE_BIND);
    pgs_buf_append(b, "\0", 2);
    if (part)
        part_bind(b, e->bind, e->bind_len, part);
    else if (bind)
        fanout_bind_rest(b, bind->data, bind->len, &fo->plan);
    else
        fanout_bind_rest(b, e->bind, e->bind_len, &fo->plan);
    pgs_msg_end(b, m);
    if (describe) {
        m = pgs_msg_begin(b, PGS_FE_DESCRIBE);
        pgs_buf_append(b, "P", 2);
        pgs_msg_end(b, m);
    }
    m = pgs_msg_begin(b, PGS_FE_EXECUTE);
    pgs_buf_append_u8(b, 0);
    pgs_buf_append_be32(b, 0);
    pgs_msg_end(b, m);
    m = pgs_msg_begin(b, PGS_FE_SYNC);
    pgs_msg_end(b, m);
}

static void fanout_build_req(px_fanout *fo, const px_fanout_ext *e, bool describe, const pgs_buf *bind)
{
    fanout_build_one(fo, &fo->req, fo->plan.sql, e, describe, NULL, bind);
}

/* A split INSERT: each shard's statement (a shard without rows only begins and commits). */
static int fanout_build_split(px_fanout *fo, const px_fanout_ext *e)
{
    fo->reqs = calloc((size_t)fo->nshards, sizeof *fo->reqs);
    fo->rowbufs = calloc((size_t)fo->nshards, sizeof *fo->rowbufs);
    if (!fo->reqs || !fo->rowbufs)
        return -1;
    for (int k = 0; k < fo->ins->nparts; k++) {
        const prs_insert_part *pt = &fo->ins->parts[k];
        if (pt->shard < 0 || pt->shard >= fo->nshards)
            return -1;
        fanout_build_one(fo, &fo->reqs[pt->shard], pt->sql, e, fo->describe, pt, NULL);
        if (pgs_buf_failed(&fo->reqs[pt->shard]))
            return -1;
    }
    return 0;
}

/* A broadcast's next shard gets the client's session state and the statement. */
/* DDL on shard s > 0 is followed by cfg_seq_range_sql's statement (config/seqrange.c). */
bool px_fo_seq_sql(const px_fanout *fo, int s, pgs_buf *b)
{
    const cfg_config *cfg = fo->cl->conn.w->conf->cfg;
    if (s == 0)
        return false;
    size_t m = pgs_msg_begin(b, PGS_FE_QUERY);
    if (!cfg_seq_range_sql(cfg, s, b)) {
        b->len = m - 1;
        return false;
    }
    pgs_buf_append_u8(b, 0);
    pgs_msg_end(b, m);
    return true;
}

static void fanout_send_one(px_fanout *fo, int s)
{
    px_server *sv = fo->links[s].sv;
    fo->replays[s] = px_client_replay_session(fo->cl, sv) ? 1 : 0;
    px_conn_send_buf(&sv->conn, &fo->req);
    fo->phase[s] = FL_QUERY;
    pgs_buf b = PGS_BUF_INIT;
    if (fo->links[s].sv && px_fo_seq_sql(fo, s, &b)) { /* a failed send loses the shard */
        fo->post[s] = 1;
        px_conn_send_buf(&sv->conn, &b);
    }
    pgs_buf_free(&b);
}

/* A server that joins the client's transaction for the fan-out gets its BEGIN first; the
 * answer is hidden (replays). Returns whether it was sent. */
bool px_fo_join_txn(px_fanout *fo, int s)
{
    px_server *sv = fo->links[s].sv;
    const pgs_buf *begin = &fo->cl->x.begin;
    if (!fo->in_txn || fo->member[s] || !sv)
        return false;
    fo->member[s] = 1;
    pgs_buf b = PGS_BUF_INIT;
    size_t m = pgs_msg_begin(&b, PGS_FE_QUERY);
    pgs_buf_append(&b, begin->data, begin->len);
    pgs_buf_append_u8(&b, 0);
    pgs_msg_end(&b, m);
    bool ok = px_server_push_reply(sv, RP_REPLAY, 0) == 0;
    if (ok)
        px_conn_send_buf(&sv->conn, &b);
    pgs_buf_free(&b);
    return ok && fo->links[s].sv;
}

/* Every shard has a server: each gets the client's session state and the shard query. The
 * first fan-out of a pool asks shard 0 for the database's collation first. */
static void fanout_send(px_fanout *fo)
{
    px_client *cl = fo->cl;
    if (fo->every) {
        fanout_send_one(fo, 0);
        return;
    }
    if (fo->mode == PX_FAN_WRITE) {
        px_fo_write_start(fo);
        return;
    }
    bool ask =
        fo->mode == PX_FAN_READ && (cl->pool->coll_state == PX_COLL_UNKNOWN ||
                                    uv_now(&cl->conn.w->loop) - cl->pool->coll_at >= PX_COLL_REFRESH_MS);
    if (fo->mode == PX_FAN_READ && !ask && !fo->merge && fanout_make_merge(fo) < 0)
        px_fo_fail(fo, PGS_SQLSTATE_OUT_OF_MEMORY, "pgshard: out of memory");
    for (int s = 0; s < fo->nshards; s++) {
        px_server *sv = fo->links[s].sv;
        fo->replays[s] = px_client_replay_session(cl, sv) ? 1 : 0;
        fo->replays[s] += px_fo_join_txn(fo, s);
        if (!fo->links[s].sv)
            continue; /* the send failed and closed it: the shard is lost */
        if (ask && s == 0) {
            px_fo_send_sql(sv, COLLATION_SQL);
            fo->phase[s] = FL_COLLATION;
            continue;
        }
        px_conn_send_buf(&sv->conn, &fo->req);
        fo->phase[s] = FL_QUERY;
    }
    /* The shards wait for the collation: they answer only what they were sent. */
}

/* A fan-out over n shards with its per-shard arrays, or NULL (out of memory). */
px_fanout *px_fo_alloc(px_client *cl, int n)
{
    px_fanout *fo = calloc(1, sizeof *fo + (size_t)n * sizeof(px_link));
    uint8_t *flags = calloc((size_t)n, 7);
    px_route *rt = malloc((size_t)n * sizeof *rt);
    if (!fo || !flags || !rt) {
        free(fo);
        free(flags);
        free(rt);
        return NULL;
    }
    fo->cl = cl;
    fo->nshards = n;
    fo->replays = flags;
    fo->phase = flags + n;
    fo->copying = flags + (size_t)2 * n;
    fo->committed = flags + (size_t)3 * n;
    fo->post = flags + (size_t)4 * n;
    fo->member = flags + (size_t)5 * n;
    fo->awaiting = flags + (size_t)6 * n;
    fo->routes = rt;
    return fo;
}

int px_fanout_start(px_client *cl, px_fanout_req *rq)
{
    px_worker *w = cl->conn.w;
    int n = w->conf->nshards;
    const px_fanout_ext *ext = rq->ext;
    bool every = rq->mode == PX_FAN_DDL;
    px_fanout *fo = px_fo_alloc(cl, n);
    if (!fo)
        return -1;
    px_route *rt = fo->routes;
    fo->plan = *rq->plan; /* takes its allocations */
    memset(rq->plan, 0, sizeof *rq->plan);
    fo->copy = rq->copy;
    rq->copy = NULL;
    fo->ins = rq->split;
    rq->split = NULL;
    fo->key_oid = rq->key_oid;
    fo->mode = rq->mode;
    fo->all_rows = rq->all_rows;
    fo->ddl = rq->ddl;
    memcpy(rt, rq->routes, (size_t)n * sizeof *rt);
    fo->ext = ext != NULL;
    fo->every = every;
    fo->describe = ext && ext->describe;
    fo->head_done = !ext || every;
    /* A merge needs every shard's RowDescription; a broadcast relays what the client asked. */
    fanout_build_req(fo, ext, fo->mode == PX_FAN_READ || fo->describe, rq->bind);
    if (ext && ext->parse_name) {
        fo->parse_name = strdup(ext->parse_name);
        pgs_buf_append(&fo->parse_body, ext->stmt, ext->stmt_len);
    }
    if (pgs_buf_failed(&fo->req) || pgs_buf_failed(&fo->parse_body) ||
        (ext && ext->parse_name && !fo->parse_name) ||
        (fo->mode == PX_FAN_COPY_IN && px_fo_copy_init(fo, rq->key_index) < 0) ||
        (fo->ins && fanout_build_split(fo, ext) < 0)) {
        fo->cl = NULL;
        fanout_release(fo);
        return -1;
    }
    for (int s = 0; s < n; s++) {
        fo->links[s] = (px_link){.cl = cl, .shard = s, .replica = rt[s].replica, .fan = fo};
        if (rt[s].replica)
            atomic_fetch_add_explicit(px_monitor_reads(w->px->mon, s, rt[s].node), 1, memory_order_relaxed);
    }
    fo->in_txn = rq->in_txn;
    for (int s = 0; fo->in_txn && s < n; s++) { /* the transaction's own servers */
        px_server *sv = px_xact_take_parked(cl, s);
        if (!sv)
            continue;
        fo->links[s].sv = sv;
        fo->links[s].start_ns = uv_hrtime();
        fo->links[s].replica = false;
        fo->member[s] = 1;
        sv->link = &fo->links[s];
    }
    cl->x.fan = fo;
    px_conn *c = &cl->conn;
    c->in_pos += rq->consume;
    c->fwd_mark = c->in_pos;
    px_client_set_state(cl, CL_FANOUT, NULL);
    pgs_debug("fanout_start", "client %08x: %d shards: %s", cl->key_pid, n, fo->plan.sql);
    return px_fanout_acquire(cl);
}

/* Takes the next shard's server: at once from the pool's idle list, or by queueing the
 * client there until the pool calls px_fanout_linked. Returns 0 or -1 (out of memory). */
static void fanout_go(px_fanout *fo);

int px_fanout_acquire(px_client *cl)
{
    px_fanout *fo = px_fo_client(cl);
    while (fo->acquired < fo->nshards && fo->links[fo->acquired].sv)
        fo->acquired++; /* a server its transaction holds already */
    if (fo->acquired == fo->nshards) {
        fanout_go(fo);
        return 0;
    }
    int s = fo->acquired;
    px_pool *pool = px_xact_pool(cl, s, fo->routes[s].node);
    return pool ? px_pool_acquire(pool, cl) : -1;
}

void px_fanout_linked(px_client *cl, px_server *sv)
{
    px_fanout *fo = px_fo_client(cl);
    if (fo->txn) { /* shard 0's server, to record the decision */
        px_fo_xact_join(fo, 0, sv);
        px_server_activate(sv);
        px_client_set_state(cl, CL_FANOUT, NULL);
        px_fo_xact_go(fo, false);
        return;
    }
    px_link *l = &fo->links[fo->acquired++];
    l->sv = sv;
    l->fresh = false;
    l->start_ns = uv_hrtime();
    sv->link = l;
    px_server_activate(sv);
    px_client_set_state(cl, CL_FANOUT, NULL);
    if (px_fanout_acquire(cl) < 0)
        px_client_fatal(cl, PGS_SQLSTATE_OUT_OF_MEMORY, "out of memory");
}

/* Every shard has its server: the statement goes out. */
static void fanout_go(px_fanout *fo)
{
    /* A send that fails closes its server at once (out of memory, a broken socket), and the
     * last lost server ends the fan-out, which frees fo: not under fanout_send's loop, but
     * here, after it. */
    fo->sending = true;
    fanout_send(fo);
    fo->sending = false;
    if (fo->ndone == fo->nshards) {
        px_fo_finish(fo);
        return;
    }
    for (int s = 0; s < fo->nshards; s++)
        if (fo->links[s].sv)
            px_server_update_reading(fo->links[s].sv);
}

/* Whether the shards may be read on: the merge has room for shard s's rows and the client
 * is taking what was merged. */
static bool fanout_may_read(const px_fanout *fo, int s)
{
    const px_conn *c = &fo->cl->conn;
    if (fo->phase[s] != FL_QUERY || fo->failed || fo->every || fo->mode == PX_FAN_COPY_IN ||
        fo->mode == PX_FAN_WRITE)
        return true;
    if (fo->mode == PX_FAN_COPY_OUT)
        return c->out.len + c->wq.len < FANOUT_CLIENT_MAX;
    if (!fo->merge)
        return false; /* the collation is being asked: the merge is made when it is known */
    return px_merge_wants(fo->merge, s) && c->out.len + c->wq.len < FANOUT_CLIENT_MAX;
}

bool px_fanout_server_reading(const px_server *sv)
{
    return fanout_may_read(sv->link->fan, sv->link->shard);
}

/* A client that did not Describe its portal gets no RowDescription. */
static void fanout_drop_row_desc(pgs_buf *b)
{
    size_t at = 0;
    while (b->len - at >= PGS_HDR_LEN) {
        uint32_t len = (uint32_t)b->data[at + 1] << 24 | (uint32_t)b->data[at + 2] << 16 |
                       (uint32_t)b->data[at + 3] << 8 | b->data[at + 4];
        size_t total = (size_t)len + 1;
        if (total > b->len - at)
            return;
        if (b->data[at] != PGS_BE_ROW_DESC) {
            at += total;
            continue;
        }
        memmove(b->data + at, b->data + at + total, b->len - at - total);
        b->len -= total;
    }
}

/* Moves what the merge has ready to the client. */
static void fanout_pump(px_fanout *fo)
{
    if (fo->failed || !fo->merge || !fo->head_done)
        return;
    pgs_buf_clear(&fo->out);
    if (px_merge_output(fo->merge, &fo->out, FANOUT_CLIENT_MAX) < 0) {
        fanout_merge_failed(fo);
        return;
    }
    if (!fo->describe && fo->ext)
        fanout_drop_row_desc(&fo->out);
    if (pgs_buf_failed(&fo->out)) {
        px_fo_fail(fo, PGS_SQLSTATE_OUT_OF_MEMORY, "pgshard: out of memory");
        return;
    }
    if (fo->out.len)
        px_conn_send_buf(&fo->cl->conn, &fo->out);
}

/* Shards that stopped being read (their queue was full, or the client slow) and may go on
 * now are read again, and what they already buffered is processed. */
void px_fo_resume(px_fanout *fo)
{
    px_client *cl = fo->cl; /* fo may end (and be freed) in px_server_process */
    for (int s = 0; px_fo_client(cl) == fo && s < fo->nshards; s++) {
        px_server *sv = fo->links[s].sv;
        if (!sv || sv->conn.processing || fo->phase[s] == FL_DONE)
            continue;
        px_server_update_reading(sv);
        if (sv->conn.in.len > sv->conn.in_pos && fanout_may_read(fo, s))
            px_server_process(sv);
    }
}

void px_fanout_free(px_client *cl)
{
    px_fanout *fo = px_fo_client(cl);
    if (!fo)
        return;
    cl->x.fan = NULL;
    fanout_release(fo);
    px_move_xact_end(cl);
}

/* The end of a fan-out inside the client's transaction: its servers stay in it, parked, and
 * a server of any other shard would get its BEGIN first; after an error, the transaction
 * only waits for its ROLLBACK, as PostgreSQL's would. */
static void fanout_park(px_fanout *fo)
{
    px_xact *x = &fo->cl->x;
    for (int s = 0; s < fo->nshards; s++) {
        px_server *sv = fo->links[s].sv;
        if (!sv)
            continue;
        if (px_xact_park_server(fo->cl, s, sv, true) < 0) {
            px_fo_fail(fo, PGS_SQLSTATE_OUT_OF_MEMORY, "pgshard: out of memory");
            fanout_drop_servers(fo); /* which rolls their part of the transaction back */
            px_xact_drop_parked(fo->cl);
            x->deferred = PX_DEFER_FAILED;
            return;
        }
        fo->links[s].sv = NULL;
        px_server_update_reading(sv);
    }
    x->deferred = fo->failed ? PX_DEFER_FAILED : PX_DEFER_OPEN;
    x->route_bucket = -1; /* keys of any bucket: a freeze waits for its end */
}

/* Every shard answered: the client gets the merged result's end (or the error) and its
 * ReadyForQuery, and goes on with what it sent meanwhile. A send that fails (out of memory,
 * a broken socket) closes the client there and then, and that frees fo: each step that
 * sends is followed by a check of the client, which outlives this call. */
void px_fo_finish(px_fanout *fo)
{
    px_client *cl = fo->cl;
    if (fo->every && !fo->failed)
        px_conn_send_buf(&cl->conn, &fo->out);
    if (cl->state == CL_CLOSED)
        return;
    if (!fo->failed && fo->mode == PX_FAN_COPY_OUT)
        px_fo_copy_out_end(fo);
    /* The sends inside close the client when they fail, which cppcheck does not follow. */
    // cppcheck-suppress knownConditionTrueFalse
    if (cl->state == CL_CLOSED)
        return;
    if (!fo->failed && (fo->mode == PX_FAN_COPY_OUT || fo->mode == PX_FAN_COPY_IN))
        px_fo_copy_complete(fo);
    // cppcheck-suppress knownConditionTrueFalse
    if (cl->state == CL_CLOSED)
        return;
    if (!fo->failed && fo->mode == PX_FAN_WRITE) {
        px_conn_send_buf(&cl->conn, &fo->head);
        if (cl->state != CL_CLOSED)
            px_conn_send_buf(&cl->conn, &fo->out);
        if (cl->state != CL_CLOSED && fo->ins)
            px_fo_split_rows_out(fo);
        if (cl->state != CL_CLOSED && !fo->ddl)
            px_fo_write_complete(fo);
        if (cl->state == CL_CLOSED)
            return;
    }
    if (fo->failed && fo->txn) /* the extended protocol's replies come before the error */
        px_conn_send_buf(&cl->conn, &fo->head);
    if (cl->state == CL_CLOSED)
        return;
    for (int s = 0; fo->txn && cl->conn.w->px->has_replicas && s < fo->nshards; s++)
        if (fo->member[s]) /* read-your-writes: its reads there wait for this end */
            px_xact_memo(cl, s)->ryw_write_ns = uv_hrtime();
    if (fo->failed && fo->mode == PX_FAN_COPY_IN && !fo->in_txn) /* in one: nothing is kept */
        px_fo_copy_failed_note(fo);
    if (!fo->failed && fo->merge && !fo->head_done)
        px_fo_fail(fo, PGS_SQLSTATE_INTERNAL_ERROR,
                   "pgshard: a shard ended a cross-shard read without binding it");
    if (!fo->failed && fo->merge) {
        pgs_buf_clear(&fo->out);
        if (px_merge_output(fo->merge, &fo->out, SIZE_MAX) < 0)
            fanout_merge_failed(fo);
        else if (!px_merge_done(fo->merge))
            px_fo_fail(fo, PGS_SQLSTATE_INTERNAL_ERROR, "pgshard: the merge ended before every row was out");
        else {
            if (!fo->describe && fo->ext)
                fanout_drop_row_desc(&fo->out);
            px_conn_send_buf(&cl->conn, &fo->out);
        }
    }
    if (cl->state == CL_CLOSED)
        return;
    if (fo->in_txn)
        fanout_park(fo);
    pgs_buf b = PGS_BUF_INIT;
    if (fo->failed)
        pgs_buf_append(&b, fo->err.data, fo->err.len);
    pgs_msg_ready(&b, fo->in_txn ? px_route_idle_status(cl) : PGS_TX_IDLE);
    px_conn_send_buf(&cl->conn, &b);
    pgs_buf_free(&b);
    if (cl->state == CL_CLOSED)
        return;
    int kind = fo->every ? 1 : fo->mode == PX_FAN_READ ? 0 : 2;
    atomic_fetch_add_explicit(&cl->conn.w->px->gs.fanouts[kind][fo->failed], 1, memory_order_relaxed);
    px_fanout_free(cl);
    px_client_set_state(cl, CL_IDLE, NULL);
    if (atomic_load(&cl->conn.w->px->draining) && cl->conn.in.len == cl->conn.in_pos) {
        px_client_close(cl); /* its read is over and pgshard is shutting down */
        return;
    }
    px_client_update_reading(cl);
    px_client_process(cl);
}

/* A link's server is done with this fan-out: back to the pool when clean, else closed. */
void px_fo_link_done(px_fanout *fo, px_link *l)
{
    px_server *sv = l->sv;
    if (fo->phase[l->shard] == FL_DONE)
        return; /* counted already: a lost server (px_fanout_server_lost) */
    fo->phase[l->shard] = FL_DONE;
    fo->ndone++;
    if (fo->in_txn)
        return; /* it stays in the client's transaction: parked at the end (px_fo_finish) */
    l->sv = NULL;
    if (!sv)
        return;
    sv->link = NULL;
    if (px_server_clean(sv))
        px_server_release(sv);
    else
        px_server_close(sv, "a cross-shard read left it in a transaction");
}

/* The collation answer: one row (datcollate, datlocprovider, the libc collations). */
static void fanout_collation_row(px_fanout *fo, const uint8_t *body, size_t n)
{
    px_pool *home = fo->cl->pool;
    pgs_reader rd = pgs_reader_make(body, n);
    uint16_t ncol;
    int32_t l1, l2, l3;
    const uint8_t *v1, *v2, *v3 = NULL;
    if (pgs_rd_be16(&rd, &ncol) < 0 || ncol != 3 || pgs_rd_be32(&rd, (uint32_t *)&l1) < 0 || l1 < 0 ||
        pgs_rd_bytes(&rd, (size_t)l1, &v1) < 0 || pgs_rd_be32(&rd, (uint32_t *)&l2) < 0 || l2 != 1 ||
        pgs_rd_bytes(&rd, 1, &v2) < 0 || pgs_rd_be32(&rd, (uint32_t *)&l3) < 0 ||
        (l3 > 0 && pgs_rd_bytes(&rd, (size_t)l3, &v3) < 0))
        return;
    char name[128];
    if ((size_t)l1 >= sizeof name)
        return;
    memcpy(name, v1, (size_t)l1);
    name[l1] = '\0';
    px_pool_set_collation(home, name, (char)v2[0]);
    if (px_pool_set_collated(home, (const char *)v3, l3 > 0 ? (size_t)l3 : 0) < 0)
        px_fo_fail(fo, PGS_SQLSTATE_OUT_OF_MEMORY, "pgshard: out of memory");
}

/* The collation is known: the shard waiting for it runs the query now, and the merge is made. */
static void fanout_collation_done(px_fanout *fo, px_server *sv)
{
    px_pool *home = fo->cl->pool;
    if (home->coll_state == PX_COLL_UNKNOWN)
        home->coll_state = PX_COLL_ICU; /* no answer: never guess an order */
    if (!fo->merge && !fo->failed && fanout_make_merge(fo) < 0)
        px_fo_fail(fo, PGS_SQLSTATE_OUT_OF_MEMORY, "pgshard: out of memory");
    px_conn_send_buf(&sv->conn, &fo->req);
    fo->phase[sv->link->shard] = FL_QUERY;
}

/* Every shard parsed the statement: the client's Parse succeeded. A named one is
 * registered as the client's, as ext_parse does; the shard query itself is not kept. */
static void fanout_parsed(px_fanout *fo)
{
    px_client *cl = fo->cl;
    if (fo->failed || !fo->parse_name)
        return;
    static const uint8_t parse_complete[] = {PGS_BE_PARSE_COMPLETE, 0, 0, 0, 4};
    px_conn_send(&cl->conn, parse_complete, sizeof parse_complete);
    if (!fo->parse_name[0])
        return;
    px_worker *w = cl->conn.w;
    px_stmt *st = px_stmt_register(&w->stmts, fo->parse_body.data, fo->parse_body.len,
                                   cl->sess ? px_session_search_path_sig(cl->sess) : 0);
    if (!st || px_client_stmt_put(&cl->stmts, &w->stmts, fo->parse_name, st) < 0) {
        if (st)
            px_stmt_unref(&w->stmts, st);
        px_fo_fail(fo, PGS_SQLSTATE_OUT_OF_MEMORY, "pgshard: out of memory registering a prepared statement");
    }
}

/* A broadcast failed on shard s: the error says which shards applied the statement, as
 * they keep it (there is no atomicity without two-phase commit). */
static void fanout_every_failed(px_fanout *fo, int s, const uint8_t *p, size_t total)
{
    char note[96];
    if (s == 0)
        snprintf(note, sizeof note, "on shard 0; no shard applied it");
    else if (s == 1)
        snprintf(note, sizeof note, "on shard 1; shard 0 applied it and keeps it");
    else
        snprintf(note, sizeof note, "on shard %d; shards 0 to %d applied it and keep it", s, s - 1);
    pgs_buf b = PGS_BUF_INIT;
    if (px_fo_error_noted(p, total, note, &b) == 0)
        px_fo_fail_from(fo, s, b.data, b.len);
    else
        px_fo_fail_from(fo, s, p, total);
    pgs_buf_free(&b);
}

/* A broadcast's messages: the last shard's answer is the client's; an error stops the
 * statement from reaching the shards after it. */
static void fanout_every_message(px_fanout *fo, px_server *sv, char type, const uint8_t *p, size_t total)
{
    px_link *l = sv->link;
    int s = l->shard;
    if (fo->post[s] == 2 && type != PGS_BE_READY)
        return; /* the sequences' query: its answers are the proxy's */
    if (type == PGS_BE_ERROR) {
        sv->pool->st.errors++;
        fanout_every_failed(fo, s, p, total);
        return;
    }
    if (type != PGS_BE_READY) {
        if (s == fo->nshards - 1 && !fo->replays[s] && type != PGS_BE_PARAM_STATUS)
            pgs_buf_append(&fo->out, p, total);
        return;
    }
    sv->tx_status = (char)p[PGS_HDR_LEN];
    sv->pool->st.queries++;
    if (fo->replays[s]) {
        fo->replays[s]--;
        px_replies_pop(&sv->replies);
        return;
    }
    if (fo->post[s] == 1) {
        fo->post[s] = 2; /* the DDL is done; the sequences' query's answer follows */
        return;
    }
    px_fo_link_done(fo, l);
    if (!fo->failed && s + 1 < fo->nshards) {
        fanout_send_one(fo, s + 1);
        return;
    }
    for (int t = s + 1; t < fo->nshards; t++)
        px_fo_link_done(fo, &fo->links[t]); /* never sent anything: back to the pool */
}

/* One whole message of a shard query's answer. Returns -1 when the server was closed. */
static int fanout_message(px_fanout *fo, px_server *sv, char type, const uint8_t *p, size_t total)
{
    px_link *l = sv->link;
    int s = l->shard;
    const uint8_t *body = p + PGS_HDR_LEN;
    size_t n = total - PGS_HDR_LEN;
    bool merging = !fo->failed && fo->merge && fo->phase[s] == FL_QUERY && !fo->replays[s];
    int r = 0;
    if (fo->every && (type != PGS_BE_READY || n == 1)) {
        fanout_every_message(fo, sv, type, p, total);
        return 0;
    }
    if (fo->mode == PX_FAN_WRITE && (type != PGS_BE_READY || n == 1)) {
        px_fo_write_message(fo, sv, type, p, total);
        return 0;
    }
    if ((fo->mode == PX_FAN_COPY_IN || fo->mode == PX_FAN_COPY_OUT) && !fo->replays[s] &&
        px_fo_copy_message(fo, s, type, p, total))
        return 0;
    switch (type) {
    case PGS_BE_ROW_DESC:
        if (merging)
            r = px_merge_row_desc(fo->merge, s, body, n);
        break;
    case PGS_BE_DATA_ROW:
        if (fo->phase[s] == FL_COLLATION && !fo->replays[s])
            fanout_collation_row(fo, body, n);
        else if (merging)
            r = px_merge_data_row(fo->merge, s, body, n);
        break;
    case PGS_BE_COMMAND_COMPLETE:
        if (merging)
            r = px_merge_complete(fo->merge, s);
        break;
    case PGS_BE_ERROR:
        sv->pool->st.errors++;
        px_fo_fail_from(fo, s, p, total);
        break;
    case PGS_BE_NOTICE:
    case PGS_BE_NOTIFY:
        if (!fo->replays[s] && fo->phase[s] == FL_QUERY)
            px_conn_send(&fo->cl->conn, p, total);
        break;
    case PGS_BE_READY:
        if (n != 1) {
            px_server_close(sv, "malformed ReadyForQuery from server");
            return -1;
        }
        sv->tx_status = (char)body[0];
        sv->pool->st.queries++;
        if (fo->replays[s]) {
            fo->replays[s]--;
            px_replies_pop(&sv->replies);
        } else if (fo->phase[s] == FL_COLLATION) {
            fanout_collation_done(fo, sv);
        } else {
            px_fo_link_done(fo, l);
        }
        break;
    case PGS_BE_PARSE_COMPLETE:
        if (++fo->parsed == fo->nshards)
            fanout_parsed(fo);
        break;
    case PGS_BE_BIND_COMPLETE:
        if (++fo->bound == fo->nshards && !fo->failed) {
            static const uint8_t bind_complete[] = {PGS_BE_BIND_COMPLETE, 0, 0, 0, 4};
            px_conn_send(&fo->cl->conn, bind_complete, sizeof bind_complete);
            fo->head_done = true;
        }
        break;
    case PGS_BE_PARAM_STATUS:
    case PGS_BE_EMPTY_QUERY:
    case PGS_BE_NO_DATA:
        break;
    default:
        px_server_close(sv, "unexpected message from server during a cross-shard read");
        return -1;
    }
    if (r < 0)
        fanout_merge_failed(fo);
    return 0;
}

px_step px_fanout_server_step(px_server *sv)
{
    px_conn *c = &sv->conn;
    px_fanout *fo = sv->link->fan;
    int s = sv->link->shard;
    size_t avail = c->in.len - c->in_pos;
    if (avail == 0 || !fanout_may_read(fo, s))
        return PX_STEP_WAIT;
    pgs_frame f;
    const uint8_t *p = px_conn_at(c);
    int r = pgs_frame_read(p, avail, PGS_MAX_MSG_LEN, &f);
    if (r == 0)
        return PX_STEP_WAIT;
    if (r < 0) {
        px_server_close(sv, "invalid message length from server");
        return PX_STEP_CLOSED;
    }
    if (avail < f.total) {
        if (pgs_buf_reserve(&c->in, f.total - avail) < 0) {
            px_server_close(sv, "out of memory");
            return PX_STEP_CLOSED;
        }
        return PX_STEP_WAIT;
    }
    c->in_pos += f.total;
    c->fwd_mark = c->in_pos;
    px_client *cl = fo->cl;
    if (fanout_message(fo, sv, f.type, p, f.total) < 0)
        return PX_STEP_CLOSED;
    fanout_pump(fo);
    if (fo->ndone == fo->nshards) {
        px_fo_finish(fo);
        return PX_STEP_AGAIN; /* the server is idle now, or closed */
    }
    if (sv->state == SV_ACTIVE && cl->x.fan == fo)
        px_fo_resume(fo);
    return PX_STEP_AGAIN;
}

/* A server of the fan-out closed under it: the client gets the error once the others end. */
void px_fanout_server_lost(px_server *sv, const char *why)
{
    px_link *l = sv->link;
    px_fanout *fo = l->fan;
    int s = l->shard;
    bool write = fo->mode == PX_FAN_WRITE;
    if (write && fo->gid[0] && (fo->stage == WS_FINISH || fo->stage == WS_FORGET)) {
        /* decided: recovery finishes it there, and the client's write stands */
        fo->commit_failed = true;
        pgs_warn("twopc_commit_lost", "shard %d was lost committing '%s': recovery will commit it", s,
                 fo->gid);
    } else {
        char msg[256];
        snprintf(msg, sizeof msg, "server connection lost on shard %d: %s", s, why);
        px_fo_fail(fo, PGS_SQLSTATE_CONNECTION_FAILURE, msg);
    }
    l->sv = NULL;
    sv->link = NULL;
    fo->phase[s] = FL_DONE;
    fo->ndone++;
    if (write && fo->awaiting[s]) { /* its answer to the step will not come */
        fo->pending -= fo->awaiting[s];
        fo->awaiting[s] = 0;
        if (!fo->pending && !fo->sending) {
            fo->sending = true; /* the step's sends may lose servers too: this call ends it */
            px_fo_write_next(fo);
            fo->sending = false;
        }
    }
    if (fo->ndone == fo->nshards && !fo->sending)
        px_fo_finish(fo);
}

void px_fanout_client_drained(px_client *cl)
{
    px_fanout *fo = px_fo_client(cl);
    if (!fo)
        return;
    fanout_pump(fo);
    if (px_fo_client(cl) == fo)
        px_fo_resume(fo);
}

/* Lets go of every server the fan-out holds: those that were sent nothing go back to the
 * pool, those still answering are closed (their queries die with them). */
static void fanout_drop_servers(px_fanout *fo)
{
    for (int s = 0; s < fo->nshards; s++) {
        px_server *sv = fo->links[s].sv;
        if (!sv)
            continue;
        fo->links[s].sv = NULL;
        sv->link = NULL;
        if (fo->phase[s] == FL_ACQUIRE && px_server_clean(sv))
            px_server_release(sv);
        else
            px_server_close(sv, "its client left during a cross-shard read");
    }
}

void px_fanout_abort(px_client *cl)
{
    px_fanout *fo = px_fo_client(cl);
    if (!fo)
        return;
    fanout_drop_servers(fo);
    px_fanout_free(cl);
}

/* While it still takes servers (nothing sent yet), the fan-out ends with an error for the
 * client, who stays connected. */
void px_fanout_give_up(px_client *cl, const char *sqlstate, const char *msg)
{
    px_fanout *fo = px_fo_client(cl);
    if (!fo)
        return;
    bool in_txn = fo->in_txn;
    fanout_drop_servers(fo); /* in a transaction: which rolls its servers' parts back */
    px_fanout_free(cl);
    if (in_txn)
        cl->x.deferred = PX_DEFER_FAILED; /* it waits for the client's ROLLBACK */
    pgs_buf b = PGS_BUF_INIT;
    pgs_msg_error(&b, "ERROR", sqlstate, "%s", msg);
    pgs_msg_ready(&b, px_route_idle_status(cl));
    px_conn_send_buf(&cl->conn, &b);
    pgs_buf_free(&b);
    px_client_set_state(cl, CL_IDLE, NULL);
    px_client_process(cl);
}

void px_fanout_cancel(px_client *cl)
{
    px_fanout *fo = px_fo_client(cl);
    for (int s = 0; fo && s < fo->nshards; s++)
        if (fo->links[s].sv && fo->phase[s] != FL_DONE)
            px_server_cancel(fo->links[s].sv);
}

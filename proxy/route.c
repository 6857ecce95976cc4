/* Read/write routing: which node of a shard a client's next transaction runs on. The
 * message that starts it is classified (lexer + per-worker parse cache, libpg_query on a
 * miss), hints and SET pgshard.* are applied, and the monitor's snapshot says which
 * replicas are eligible (healthy, caught up enough, past the client's last write). Also the
 * clients that wait for a primary during a failover and the retry of a read whose replica
 * failed before answering. Pools and servers themselves are in pool.c and server.c. */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/log.h"
#include "parser/copyopts.h"
#include "parser/insertsplit.h"
#include "parser/scatter.h"
#include "proxy/catalog.h"
#include "proxy/limitbind.h"
#include "proxy/monitor.h"
#include "proxy/px.h"
#include "proxy/shardkey.h"

#define PX_ROUTE_CACHE 4096      /* parsed query shapes kept per worker */
#define PX_NODE_REST_MS 100      /* a node that failed here rests this long, doubling... */
#define PX_NODE_REST_MAX_MS 5000 /* ...up to this */

enum { ROUTE_READ = 1, ROUTE_WRITE = 2 };

int px_route_setup(px_worker *w)
{
    size_t ns = (size_t)w->px->cfg->nshards, nn = ns * PX_MAX_NODES;
    pgs_list_init(&w->primary_waiters);
    w->lex = (prs_lexed)PRS_LEXED_INIT;
    w->pcache = prs_cache_create(PX_ROUTE_CACHE);
    w->rr = calloc(ns, sizeof *w->rr);
    w->wrr = calloc(nn, sizeof *w->wrr);
    w->node_down_until = calloc(nn, sizeof *w->node_down_until);
    w->node_fails = calloc(nn, sizeof *w->node_fails);
    if (!w->pcache || !w->rr || !w->wrr || !w->node_down_until || !w->node_fails) {
        px_route_teardown(w);
        return UV_ENOMEM;
    }
    return 0;
}

void px_route_teardown(px_worker *w)
{
    prs_cache_destroy(w->pcache);
    prs_lexed_free(&w->lex);
    free(w->rr);
    free(w->wrr);
    free(w->node_down_until);
    free(w->node_fails);
    w->pcache = NULL;
    w->rr = NULL;
    w->wrr = NULL;
    w->node_down_until = NULL;
    w->node_fails = NULL;
}

const px_status *px_route_status(px_worker *w)
{
    w->status = px_monitor_get(w->px->mon, w->id);
    return w->status;
}

static size_t node_slot(int shard, int node)
{
    return (size_t)shard * PX_MAX_NODES + (size_t)node;
}

/* A connect or query failure seen by this worker: the node rests (exponential backoff with
 * jitter) before this worker sends it anything again; the first request after the rest is
 * the half-open probe. The monitor is told so it polls the node at once. */
void px_route_node_failed(px_worker *w, int shard, int node)
{
    size_t k = node_slot(shard, node);
    uint32_t f = w->node_fails[k] < 16 ? w->node_fails[k]++ : w->node_fails[k];
    uint64_t rest = (uint64_t)PX_NODE_REST_MS << (f < 6 ? f : 6);
    if (rest > PX_NODE_REST_MAX_MS)
        rest = PX_NODE_REST_MAX_MS;
    rest = rest * 3 / 4 + (uint64_t)px_worker_rand(w) % (rest / 2 + 1); /* +-25% */
    w->node_down_until[k] = uv_now(&w->loop) + rest;
    if (w->px->mon)
        px_monitor_report_failure(w->px->mon, shard, node);
}

void px_route_node_ok(px_worker *w, int shard, int node)
{
    size_t k = node_slot(shard, node);
    w->node_fails[k] = 0;
    w->node_down_until[k] = 0;
}

static bool node_resting(px_worker *w, int shard, int node)
{
    return uv_now(&w->loop) < w->node_down_until[node_slot(shard, node)];
}

/* ---- classification ---------------------------------------------------------------- */

typedef struct px_qclass {
    bool read;      /* may run on a replica */
    uint8_t target; /* prs_target of a hint comment */
    bool has_lag;
    uint32_t max_lag_ms; /* of a hint comment */
    uint8_t kind;        /* prs_kind of a Query's first statement (0 for the extended protocol) */
    uint32_t n_statements;
    uint32_t flags;    /* PRS_F_* of a Query's statements */
    bool serializable; /* BEGIN / SET TRANSACTION ... SERIALIZABLE: not on a hot standby */
    px_sk_result sk;   /* the shard (sharded configs only; verdict PX_SK_ANY otherwise) */
} px_qclass;

static bool info_readable(const px_worker *w, const prs_query_info *qi)
{
    if (qi->read_only)
        return true;
    /* unknown_functions = replica: a plain SELECT whose only doubt is a function. */
    return w->conf->cfg->unknown_functions == CFG_UNKNOWN_FUNC_REPLICA &&
           (qi->flags & PRS_F_WRITE_MASK) == PRS_F_UNSAFE_FUNC && qi->kind_mask == (1ull << PRS_KIND_SELECT);
}

/* The analysis of sql, from the cache when its normalized shape was seen before. The
 * pointer lives until the next classification on this worker. NULL: not understood. */
static const prs_query_info *route_analyze(px_worker *w, const char *sql, size_t len)
{
    static _Thread_local prs_query_info fresh;
    if (prs_lex(sql, len, &w->lex) < 0)
        return NULL;
    prs_cache_key key = prs_cache_key_of(&w->lex, NULL, 0);
    const prs_query_info *qi = prs_cache_lookup(w->pcache, &key);
    if (qi)
        return qi;
    int nkeys = 0;
    const px_tables *tables = w->px->cat ? px_catalog_tables(w->px->cat) : NULL;
    const char *const *cols = tables ? px_tables_key_columns(tables, &nkeys) : NULL;
    prs_classify_opts opts = {cols, (size_t)nkeys};
    int rc = prs_classify_ex(sql, len, &w->lex, &opts, &fresh);
    if (rc == 0 || rc == PRS_ESYNTAX)
        prs_cache_insert(w->pcache, &key, &fresh);
    return &fresh;
}

void px_route_pins(px_worker *w, const char *sql, size_t len, uint8_t *pin, uint16_t *unpin)
{
    *pin = 0;
    *unpin = 0;
    if (!px_pin_may(sql, len))
        return;
    const prs_query_info *qi = route_analyze(w, sql, len);
    if (qi) {
        *pin = qi->pin;
        *unpin = qi->unpin;
    }
}

/* The routing input every statement shares: tables, map, default shard, SET pgshard.shard. */
static void route_sk_input(px_client *cl, px_sk_input *in)
{
    px_worker *w = cl->conn.w;
    memset(in, 0, sizeof *in);
    in->tables = px_catalog_tables(w->px->cat);
    in->default_shard = w->conf->cfg->default_shard;
    in->map = px_catalog_map(w->px->cat, w->id);
    in->pinned_shard = cl->pinned_shard;
    in->nshards = w->conf->nshards;
    in->cross_writes = w->conf->cfg->allow_cross_shard_writes;
    in->split_inserts = w->conf->cfg->two_phase_commit;
}

/* The shard of an analysed statement: its key, the hint's or session's tenant, or
 * SET pgshard.shard. With plan, also how the statement's later Binds find their shard. */
static void route_shard(px_client *cl, const prs_query_info *qi, const char *sql, size_t len,
                        const px_sk_bind *bind, px_qclass *qc, px_sk_plan *plan)
{
    px_worker *w = cl->conn.w;
    const prs_hints *h = &w->lex.hints;
    px_sk_input in;
    route_sk_input(cl, &in);
    in.qi = qi;
    in.sql = sql;
    in.len = len;
    in.lex = qi ? &w->lex : NULL;
    in.bind = bind;
    if (h->tenant_len) {
        in.tenant = sql + h->tenant_start;
        in.tenant_len = h->tenant_len;
    } else if (cl->tenant) {
        in.tenant = cl->tenant;
        in.tenant_len = strlen(cl->tenant);
    }
    px_sk_route(&in, &qc->sk);
    if (plan)
        px_sk_plan_make(&in, h->tenant_len != 0, plan);
}

/* Classifies one statement text: its read/write class and hints, and, when pgshard shards,
 * its shard (with bind, the Bind that carries its parameters, or NULL) and, with plan, the
 * plan of its later Binds. */
static void route_classify(px_client *cl, const char *sql, size_t len, const px_sk_bind *bind, px_qclass *qc,
                           px_sk_plan *plan)
{
    px_worker *w = cl->conn.w;
    const prs_query_info *qi = route_analyze(w, sql, len);
    memset(qc, 0, sizeof *qc);
    if (w->px->sharded)
        route_shard(cl, qi, sql, len, bind, qc, plan);
    if (!qi)
        return;
    qc->read = info_readable(w, qi);
    qc->kind = qi->kind;
    qc->n_statements = qi->n_statements;
    qc->flags = qi->flags;
    qc->serializable = qi->isolation == PRS_ISO_SERIALIZABLE;
    const prs_hints *h = &w->lex.hints;
    qc->target = h->target;
    qc->has_lag = h->has_max_lag;
    qc->max_lag_ms = h->max_lag_ms;
}

/* A named statement's class, computed once from its text and kept with it. */
static uint8_t stmt_route(px_client *cl, px_stmt *st)
{
    if (!st)
        return ROUTE_WRITE;
    if (!st->route) {
        px_qclass qc;
        size_t len = pgs_strnlen((const char *)st->body, st->body_len);
        route_classify(cl, (const char *)st->body, len, NULL, &qc, NULL);
        st->route = qc.read ? ROUTE_READ : ROUTE_WRITE;
    }
    return st->route;
}

/* The class of one extended-protocol message: Parse by its text, Bind by its statement;
 * the other messages decide nothing (ROUTE_READ lets the others decide). */
static uint8_t ext_route(px_client *cl, const uint8_t *p, const pgs_frame *f, px_qclass *qc)
{
    pgs_reader rd = pgs_reader_make(p + PGS_HDR_LEN, f->len - 4);
    const char *a, *b;
    if (f->type == PGS_FE_PARSE) {
        if (pgs_rd_cstr(&rd, &a) < 0)
            return ROUTE_WRITE;
        route_classify(cl, (const char *)rd.p, pgs_strnlen((const char *)rd.p, rd.left), NULL, qc, NULL);
        return qc->read ? ROUTE_READ : ROUTE_WRITE;
    }
    if (f->type == PGS_FE_BIND) {
        if (pgs_rd_cstr(&rd, &a) < 0 || pgs_rd_cstr(&rd, &b) < 0)
            return ROUTE_WRITE;
        if (!b[0])
            return 0; /* the unnamed statement: as its Parse said */
        return stmt_route(cl, px_client_stmt_get(&cl->stmts, b));
    }
    if (f->type == PGS_FE_DESCRIBE || f->type == PGS_FE_EXECUTE || f->type == PGS_FE_FLUSH)
        return ROUTE_READ;
    return ROUTE_WRITE;
}

/* Classifies what starts at the client's input: one Query, or an extended-protocol segment
 * as far as it is buffered (up to its Sync): a read only when every Parse and Bind in it is.
 * *seen (when not NULL) tells whether the segment was seen to its end: its Sync, or a
 * Flush, after which the client waits for answers before it sends more. */
static void route_message(px_client *cl, const pgs_frame *first, px_qclass *qc, bool *seen)
{
    px_conn *c = &cl->conn;
    const uint8_t *p = px_conn_at(c);
    size_t avail = c->in.len - c->in_pos;
    memset(qc, 0, sizeof *qc);
    if (first->type == PGS_FE_QUERY) {
        if (avail >= first->total)
            route_classify(cl, (const char *)p + PGS_HDR_LEN,
                           pgs_strnlen((const char *)p + PGS_HDR_LEN, first->len - 4), NULL, qc, NULL);
        return;
    }
    if (first->type != PGS_FE_PARSE && first->type != PGS_FE_BIND)
        return;
    bool read = true, any = false;
    uint8_t unnamed = ROUTE_WRITE; /* the unnamed statement parsed in an earlier segment: unknown */
    size_t off = 0;
    pgs_frame f;
    while (read && off < avail && pgs_frame_read(p + off, avail - off, PGS_MAX_MSG_LEN, &f) == 1 &&
           f.total <= avail - off) {
        if (f.type == PGS_FE_SYNC || f.type == PGS_FE_QUERY || f.type == PGS_FE_FLUSH) {
            if (seen)
                *seen = true;
            if (f.type != PGS_FE_FLUSH)
                break;
        }
        px_qclass one;
        memset(&one, 0, sizeof one);
        uint8_t r = ext_route(cl, p + off, &f, &one);
        if (f.type == PGS_FE_PARSE && f.len > 4 && p[off + PGS_HDR_LEN] == 0)
            unnamed = r;
        read = (r ? r : unnamed) == ROUTE_READ;
        if (f.type == PGS_FE_PARSE || f.type == PGS_FE_BIND)
            any = true;
        qc->serializable = qc->serializable || one.serializable;
        if (one.target) {
            qc->target = one.target;
            qc->has_lag = one.has_lag;
            qc->max_lag_ms = one.max_lag_ms;
        }
        off += f.total;
    }
    qc->read = read && any;
}

/* Keeps the client's unnamed statement (Parse body: text\0, int16 n, n oids) for a Bind of
 * it in a later segment, as drivers send Parse/Describe/Sync then Bind/Execute/Sync (pgx).
 * A text longer than a block is not kept: its Binds then need the tenant said outright. */
static void route_keep_unnamed(px_client *cl, const uint8_t *body, size_t n)
{
    pgs_buf *u = &cl->x.unnamed;
    u->len = 0;
    cl->x.unnamed_known = n <= PX_BLOCK;
    if (cl->x.unnamed_known)
        pgs_buf_append(u, body, n);
    if (pgs_buf_failed(u)) {
        pgs_buf_free(u);
        cl->x.unnamed_known = false;
    }
}

/* The parameter types a statement's Parse declared, for reading its Binds' parameters. */
static void bind_types(const uint8_t *body, size_t n, size_t text_len, px_sk_bind *bind)
{
    pgs_reader tr = pgs_reader_make(body + text_len + 1, n - text_len - 1);
    uint16_t nt;
    if (pgs_rd_be16(&tr, &nt) == 0 && tr.left >= (size_t)4 * nt) {
        bind->types = tr.p;
        bind->ntypes = nt;
    }
}

/* Makes out a refusal with sqlstate; returns its message buffer for the caller to fill. */
static char *route_sk_refuse(px_sk_result *out, const char *sqlstate)
{
    out->verdict = PX_SK_REFUSE;
    snprintf(out->sqlstate, sizeof out->sqlstate, "%s", sqlstate);
    return out->msg;
}

static void route_refuse_bind(px_sk_result *out, const char *name)
{
    snprintf(route_sk_refuse(out, PGS_SQLSTATE_FEATURE_NOT_SUPPORTED), sizeof out->msg,
             "pgshard: a Bind of %s%s%s cannot be routed by key: send its Parse in the same segment, use a "
             "named statement in transaction pooling, or SET pgshard.tenant",
             name[0] ? "statement \"" : "an unnamed statement pgshard did not see parsed", name,
             name[0] ? "\"" : "");
}

/* The shard of one Bind: by its named statement's plan when one parameter decides, else by
 * its statement's text and its parameters. */
static void route_bind(px_client *cl, px_stmt *st, const uint8_t *sb, size_t sl, px_sk_bind *bind,
                       px_sk_result *out)
{
    size_t tl = pgs_strnlen((const char *)sb, sl);
    if (tl == sl) {
        memset(out, 0, sizeof *out);
        out->source = "any";
        return;
    }
    bind_types(sb, sl, tl, bind);
    if (st && st->plan.kind == PX_SKP_PARAM && !cl->tenant && cl->pinned_shard < 0) {
        px_sk_input in;
        route_sk_input(cl, &in);
        in.bind = bind;
        px_sk_route_planned(&st->plan, &in, out);
        return;
    }
    px_qclass one;
    route_classify(cl, (const char *)sb, tl, bind, &one, st && !st->plan.kind ? &st->plan : NULL);
    *out = one.sk;
}

/* The shard of an extended-protocol segment, as far as it is buffered (up to its Sync):
 * each Bind is routed by its statement's text and its own parameters (or a named
 * statement's plan); a Parse alone decides nothing. The segment goes to the one shard they
 * name; two shards, or a statement that is refused, refuse it. Returns whether the segment
 * was seen up to its Sync; *flushed (when not NULL) tells whether a Flush was seen before. */
/* A statement that runs on every shard: a merged read, or a broadcast. */
static bool route_wide(uint8_t verdict)
{
    return verdict == PX_SK_ALL || verdict == PX_SK_EVERY || verdict == PX_SK_WRITE_ALL ||
           verdict == PX_SK_WRITE_OMNI || verdict == PX_SK_WRITE_SPLIT;
}

/* What the Binds before one of a segment said of moves carries over to it: a key any of them
 * routed by that a move freezes, and whether they all name one bucket. */
static void route_sk_merge(const px_sk_result *before, px_sk_result *one)
{
    if (before->verdict != PX_SK_SHARD)
        return;
    if (!one->frozen_move) {
        one->frozen_move = before->frozen_move;
        one->frozen_target = before->frozen_target;
    }
    if (before->has_key && (!one->has_key || one->bucket != before->bucket))
        one->bucket = one->has_key ? -1 : before->bucket;
    one->has_key = one->has_key || before->has_key;
}

static bool route_segment_shard(px_client *cl, px_sk_result *out, bool *flushed)
{
    px_conn *c = &cl->conn;
    const uint8_t *p = px_conn_at(c);
    size_t avail = c->in.len - c->in_pos, off = 0;
    struct {
        const char *name;
        const uint8_t *body;
        size_t len;
    } named[8]; /* this segment's named Parses: a Bind may come before the name is registered */
    int nnamed = 0;
    pgs_frame f;
    memset(out, 0, sizeof *out);
    out->source = "any";
    while (off < avail && pgs_frame_read(p + off, avail - off, PGS_MAX_MSG_LEN, &f) == 1 &&
           f.total <= avail - off) {
        if (f.type == PGS_FE_SYNC || f.type == PGS_FE_QUERY)
            return true;
        if (f.type == PGS_FE_FLUSH && flushed)
            *flushed = true;
        pgs_reader rd = pgs_reader_make(p + off + PGS_HDR_LEN, f.len - 4);
        px_sk_bind bind = {rd.p, rd.left, NULL, 0};
        const char *a, *b;
        off += f.total;
        if (f.type == PGS_FE_PARSE && pgs_rd_cstr(&rd, &a) == 0) {
            if (!a[0]) {
                route_keep_unnamed(cl, rd.p, rd.left);
            } else if (nnamed < 8) {
                named[nnamed].name = a;
                named[nnamed].body = rd.p;
                named[nnamed++].len = rd.left;
            }
            continue;
        }
        if (f.type != PGS_FE_BIND || pgs_rd_cstr(&rd, &a) < 0 || pgs_rd_cstr(&rd, &b) < 0)
            continue;
        px_stmt *st = b[0] ? px_client_stmt_get(&cl->stmts, b) : NULL;
        const uint8_t *sb =
            b[0] ? (st && !st->sql ? st->body : NULL) : (cl->x.unnamed_known ? cl->x.unnamed.data : NULL);
        size_t sl = b[0] ? (st && !st->sql ? st->body_len : 0) : cl->x.unnamed.len;
        for (int i = nnamed - 1; b[0] && i >= 0; i--)
            if (strcmp(named[i].name, b) == 0) {
                st = NULL; /* parsed again in this segment: that text counts */
                sb = named[i].body;
                sl = named[i].len;
                break;
            }
        px_sk_result one;
        if (!sb) {
            /* Its text is not known here (a name in session pooling, an unnamed statement
             * too long to keep): never guess a shard. */
            route_refuse_bind(out, b);
            return false;
        }
        route_bind(cl, st && !st->sql ? st : NULL, sb, sl, &bind, &one);
        if (one.verdict == PX_SK_ANY)
            continue;
        if (route_wide(one.verdict) != route_wide(out->verdict) && out->verdict != PX_SK_ANY)
            snprintf(
                route_sk_refuse(&one, PGS_SQLSTATE_FEATURE_NOT_SUPPORTED), sizeof one.msg,
                "pgshard: a pipeline segment with a query across shards (no tenant key) holds statements "
                "for one shard too; send each between their own Syncs");
        else if (route_wide(one.verdict) && route_wide(out->verdict))
            snprintf(route_sk_refuse(&one, PGS_SQLSTATE_FEATURE_NOT_SUPPORTED), sizeof one.msg,
                     "pgshard: a pipeline segment holds two queries across shards (no tenant key); send each "
                     "between their own Syncs");
        if (one.verdict == PX_SK_REFUSE) {
            *out = one;
            return false;
        }
        if (out->verdict == PX_SK_SHARD && one.verdict == PX_SK_SHARD && out->shard != one.shard) {
            snprintf(route_sk_refuse(out, PGS_SQLSTATE_FEATURE_NOT_SUPPORTED), sizeof out->msg,
                     "pgshard: one pipeline segment names shards %d and %d; send each shard's statements "
                     "between their own Syncs (cross-shard transactions are not supported yet)",
                     out->shard, one.shard);
            return false;
        }
        route_sk_merge(out, &one);
        *out = one;
    }
    return false;
}

/* ---- choosing a node --------------------------------------------------------------- */

/* The LSN a replica must have replayed for this client to see its own writes: 0 = any,
 * UINT64_MAX = none yet (no primary sample after its last write: read on the primary). */
static uint64_t ryw_need(px_client *cl, const px_shard_status *sh, int shard)
{
    if (cl->conn.w->conf->cfg->read_your_writes == CFG_RYW_OFF)
        return 0;
    px_shard_memo *m = px_xact_memo(cl, shard);
    if (m->ryw_write_ns) {
        uint64_t b = px_status_ryw_lsn(sh, m->ryw_write_ns);
        if (!b)
            return UINT64_MAX;
        if (b > m->ryw_lsn)
            m->ryw_lsn = b;
        m->ryw_write_ns = 0;
    }
    return m->ryw_lsn;
}

static int node_weight(const cfg_shard *cs, int node)
{
    return node >= 1 && node <= cs->nreplicas ? cs->replicas[node - 1].weight : 1;
}

/* Servers of this worker busy on or queued for a node, over every pool. */
static int node_outstanding(px_worker *w, int shard, int node)
{
    int n = 0;
    pgs_node *it, *tmp;
    pgs_list_each (&w->pools, it, tmp) {
        px_pool *p = pgs_container_of(it, px_pool, node);
        if (p->shard == shard && p->nodeix == node)
            n += (int)(p->servers.n - p->idle.n) + (int)p->waiting.n;
    }
    return n;
}

static int pick_balanced(px_worker *w, int shard, const int *cand, int n)
{
    const cfg_shard *cs = &w->conf->cfg->shards[shard];
    if (cs->balance == CFG_BALANCE_WEIGHTED) {
        /* Smooth weighted round-robin (as nginx): spreads a 3:1 split as a,a,b,a. */
        int *cur = &w->wrr[node_slot(shard, 0)], total = 0, best = cand[0];
        for (int i = 0; i < n; i++) {
            cur[cand[i]] += node_weight(cs, cand[i]);
            total += node_weight(cs, cand[i]);
            if (cur[cand[i]] > cur[best])
                best = cand[i];
        }
        cur[best] -= total;
        return best;
    }
    uint32_t start = w->rr[shard]++;
    if (cs->balance == CFG_BALANCE_ROUND_ROBIN)
        return cand[start % (uint32_t)n];
    int best = -1, best_out = 0;
    for (int k = 0; k < n; k++) {
        int i = cand[(start + (uint32_t)k) % (uint32_t)n];
        int out = node_outstanding(w, shard, i);
        if (best < 0 || out < best_out) {
            best = i;
            best_out = out;
        }
    }
    return best;
}

/* An eligible replica for the client's read; -1 when there is none, -2 when the client's
 * own last write is not yet known to be on any replica (read-your-writes: the primary). */
static int pick_replica(px_client *cl, const px_shard_status *sh, int shard, const px_qclass *qc)
{
    px_worker *w = cl->conn.w;
    const cfg_config *cfg = w->conf->cfg;
    uint64_t need = ryw_need(cl, sh, shard);
    uint32_t avoid = px_xact_memo(cl, shard)->avoid;
    if (need == UINT64_MAX)
        return -2;
    uint32_t max_lag = qc->has_lag                    ? qc->max_lag_ms
                       : cl->max_lag_ms != UINT32_MAX ? cl->max_lag_ms
                                                      : cfg->max_lag_ms;
    int cand[PX_MAX_NODES], n = 0;
    bool behind_own_write = false;
    for (int i = 0; i < sh->nnodes; i++) {
        const px_node_status *ns = &sh->nodes[i];
        if (i == sh->primary || ns->health != PX_NODE_UP || !ns->in_recovery ||
            ns->circuit != PX_CIRCUIT_CLOSED || (avoid & (1u << i)) || node_resting(w, shard, i))
            continue;
        if ((cfg->max_lag_bytes && ns->lag_bytes > cfg->max_lag_bytes) || (max_lag && ns->lag_ms > max_lag))
            continue;
        if (ns->lsn < need) {
            behind_own_write = true;
            continue;
        }
        cand[n++] = i;
    }
    if (n == 0)
        return behind_own_write ? -2 : -1; /* -2: a replica will do soon; the primary has it now */
    return pick_balanced(w, shard, cand, n);
}

static bool primary_ready(px_worker *w, const px_shard_status *sh, int shard)
{
    return sh->primary_ok && !node_resting(w, shard, sh->primary);
}

/* Where the client's transaction goes: a node of a shard, the primary's waiters while the
 * shard has none, or a refusal. qc: the hints of the statement (a per-statement
 * max_lag_ms), or NULL when routing again. Chooses only; px_xact_begin acts on it. */
static void route_decide(px_client *cl, const px_qclass *qc, bool write, int shard, px_route *d)
{
    static const px_qclass none;
    px_worker *w = cl->conn.w;
    const cfg_config *cfg = w->conf->cfg;
    *d = (px_route){.verdict = PX_ROUTE_GO, .write = write, .shard = shard, .node = 0};
    if (!w->px->mon)
        return;
    const px_shard_status *sh = &px_route_status(w)->shards[d->shard];
    d->node = sh->primary;
    if (cl->x.want_read) {
        int r = pick_replica(cl, sh, d->shard, qc ? qc : &none);
        if (r >= 0) {
            d->node = r;
            d->replica = true;
            return;
        }
        if (r == -1 && cfg->replica_fallback == CFG_FALLBACK_ERROR) {
            d->verdict = PX_ROUTE_REFUSE;
            d->refuse = PX_REFUSE_NO_REPLICA;
            return;
        }
    }
    if (primary_ready(w, sh, d->shard))
        return;
    if (cfg->primary_wait_ms == 0 || uv_now(&w->loop) - cl->wait_since >= cfg->primary_wait_ms) {
        d->verdict = PX_ROUTE_REFUSE;
        d->refuse = PX_REFUSE_NO_PRIMARY;
        return;
    }
    d->verdict = PX_ROUTE_WAIT_PRIMARY;
}

/* Whether the client's transactions are serializable by default: its own settings first,
 * else what ALTER ROLE / ALTER DATABASE ... SET made the default of its role in its database
 * (the monitor reads pg_db_role_setting). */
static bool client_serializable(const px_client *cl)
{
    if (cl->sess && cl->sess->iso_set)
        return cl->sess->serializable;
    /* The snapshot the worker routes with (fetched before the first route): a new fetch
     * could free one a caller still reads. */
    px_worker *w = cl->conn.w;
    const px_status *st = w->status ? w->status : px_route_status(w);
    return st->any_iso &&
           px_status_serializable(st, px_status_name_key(cl->user_name), px_status_name_key(cl->db_name));
}

/* Whether a statement of this class goes to a replica: hint first, then the session's
 * SET pgshard.target, then the classification. A serializable transaction, or a client whose
 * default isolation level is serializable, reads on the primary: a hot standby refuses
 * serializable mode ("cannot use serializable mode in a hot standby"). An explicit
 * target=replica still gets the standby's answer. */
static bool route_wants_replica(const px_client *cl, const px_qclass *qc)
{
    uint8_t target = qc->target ? qc->target : cl->target;
    return target == PRS_TARGET_REPLICA ||
           (target != PRS_TARGET_PRIMARY && qc->read && !qc->serializable && !client_serializable(cl));
}

/* The planner's question: whether a column is the shard key of a sharded table. */
static int route_is_key(void *arg, const char *schema, const char *table, const char *column)
{
    const px_table *t = px_tables_find(arg, schema, table);
    return t && !t->omnisharded && strcmp(t->shard_key, column) == 0;
}

int px_route_plan(px_client *cl, const char *sql, size_t len, prs_scatter *plan)
{
    prs_scatter_ctx ctx = {route_is_key, (void *)px_catalog_tables(cl->conn.w->px->cat)};
    return prs_scatter_plan(sql, len, &ctx, plan);
}

/* COPY (query) TO STDOUT across shards: every shard runs it and the data is gathered, which
 * is the one database's answer only when its rows need no merging (no ORDER BY, LIMIT,
 * OFFSET, aggregate, GROUP BY or DISTINCT). Returns as route_copy. */
static int route_copy_query(px_client *cl, const prs_copy_opts *co, px_fanout_req *req)
{
    prs_scatter plan;
    memset(&plan, 0, sizeof plan);
    int r = px_route_plan(cl, co->query, strlen(co->query), &plan);
    if (r < 0)
        return -1;
    if (r == 0 && plan.sql && plan.nsort == 0 && !plan.grouped && plan.limit < 0 && plan.offset == 0 &&
        !plan.limit_param && !plan.offset_param) {
        prs_scatter_free(&plan);
        req->mode = PX_FAN_COPY_OUT;
        return 0;
    }
    char msg[sizeof plan.msg + 160];
    if (plan.sql) /* plannable, but merged */
        snprintf(msg, sizeof msg,
                 "pgshard: COPY (query) TO across shards gathers the shards' rows as they come: a query "
                 "whose rows need merging (ORDER BY, LIMIT, OFFSET, aggregates, GROUP BY, DISTINCT) runs "
                 "as a SELECT, or with the tenant key");
    else
        snprintf(msg, sizeof msg, "%s", plan.msg);
    const char *state = plan.sql ? PGS_SQLSTATE_FEATURE_NOT_SUPPORTED : plan.sqlstate;
    char st[6];
    snprintf(st, sizeof st, "%s", state);
    prs_scatter_free(&plan);
    return px_route_refuse(cl, st, msg);
}

/* COPY of a sharded table with the client: from it, split row by row by the key column;
 * to it, gathered from every shard. What the options allow is decided here. Returns 0 with
 * req's mode, copy, key_index and key_oid set, or as px_xact_begin (a refusal). */
static int route_copy(px_client *cl, const char *sql, size_t len, px_fanout_req *req)
{
    prs_copy_opts *co = calloc(1, sizeof *co);
    if (!co)
        return -1;
    req->copy = co;
    int r = prs_copy_options(sql, len, co);
    if (r != 0)
        return r < 0 ? -1 : px_route_refuse(cl, co->sqlstate, co->message);
    if (co->query && co->dir == PRS_COPY_TO_STDOUT)
        return route_copy_query(cl, co, req);
    const px_table *t =
        co->relname ? px_tables_find(px_catalog_tables(cl->conn.w->px->cat), co->schema, co->relname) : NULL;
    char msg[320];
    const char *why = NULL;
    if (co->dir == PRS_COPY_OTHER || !t || t->omnisharded)
        why = "pgshard: COPY of a sharded table with a server file or program runs on one shard: SET "
              "pgshard.shard = N";
    else if (co->encoding && strcasecmp(co->encoding, "UTF8") != 0 && strcasecmp(co->encoding, "UTF-8") != 0)
        why = "pgshard: COPY of a sharded table reads its data as UTF8: leave ENCODING out";
    if (why)
        return px_route_refuse(cl, PGS_SQLSTATE_FEATURE_NOT_SUPPORTED, why);
    req->key_oid = t->key_oid;
    if (co->dir == PRS_COPY_TO_STDOUT) {
        req->mode = PX_FAN_COPY_OUT;
        return 0;
    }
    const char *enc = px_session_unsafe_encoding(cl->sess);
    if (enc) {
        snprintf(msg, sizeof msg,
                 "pgshard: COPY into a sharded table is split row by row, which client_encoding %s (whose "
                 "characters may hold ASCII bytes) does not allow: SET client_encoding = 'UTF8' for the COPY",
                 enc);
        return px_route_refuse(cl, PGS_SQLSTATE_FEATURE_NOT_SUPPORTED, msg);
    }
    req->mode = PX_FAN_COPY_IN;
    req->key_index = -1;
    for (size_t i = 0; i < co->columns.n; i++)
        if (strcmp(co->columns.names[i], t->shard_key) == 0)
            req->key_index = (int)i;
    if (req->key_index >= 0)
        return 0;
    snprintf(msg, sizeof msg,
             "pgshard: COPY into sharded table \"%s\" is split by its shard key: name the columns, %s among "
             "them (COPY %s (..., %s) FROM STDIN)",
             t->name, t->shard_key, t->name, t->shard_key);
    return px_route_refuse(cl, PGS_SQLSTATE_FEATURE_NOT_SUPPORTED, msg);
}

/* An INSERT whose VALUES rows belong to several shards: one INSERT per shard with its
 * rows (parser/insertsplit.c), run in one two-phase transaction. Returns 0 with req->split
 * set, or as px_xact_begin. */
static int route_split(px_client *cl, const char *sql, size_t len, const px_fanout_ext *ext,
                       px_fanout_req *req)
{
    px_worker *w = cl->conn.w;
    const prs_query_info *qi = route_analyze(w, sql, len);
    if (!qi || !qi->insert_rows)
        return px_route_refuse(cl, PGS_SQLSTATE_INTERNAL_ERROR,
                               "pgshard: the INSERT to split was not understood");
    px_sk_input in;
    px_sk_bind bind = {NULL, 0, NULL, 0};
    route_sk_input(cl, &in);
    in.qi = qi;
    in.sql = sql;
    in.len = len;
    in.lex = &w->lex;
    if (ext) {
        bind.body = ext->bind_msg;
        bind.len = ext->bind_msg_len;
        bind_types(ext->stmt, ext->stmt_len, pgs_strnlen((const char *)ext->stmt, ext->stmt_len), &bind);
        in.bind = &bind;
    }
    int *shards = malloc(qi->insert_rows * sizeof *shards);
    prs_insert_split *sp = calloc(1, sizeof *sp);
    int r = shards && sp ? 0 : -1;
    req->split = sp;
    if (r == 0 && px_sk_insert_shards(&in, shards) < 0)
        r = px_route_refuse(cl, PGS_SQLSTATE_INTERNAL_ERROR,
                            "pgshard: the INSERT's rows could not be placed again");
    if (r == 0 && (r = prs_insert_split_make(sql, len, shards, qi->insert_rows, sp)) == 1)
        r = px_route_refuse(cl, sp->sqlstate, sp->msg);
    free(shards);
    return r;
}

/* A read with LIMIT $n or OFFSET $m: the client's values go into the plan and the shards
 * get a Bind of their own (proxy/limitbind.c). Returns as px_xact_begin. */
static int route_limit_bind(px_client *cl, const px_fanout_ext *ext, prs_scatter *plan, pgs_buf *bind)
{
    size_t tl = pgs_strnlen((const char *)ext->stmt, ext->stmt_len);
    const uint8_t *types = tl < ext->stmt_len ? ext->stmt + tl + 1 : NULL;
    size_t types_len = tl < ext->stmt_len ? ext->stmt_len - tl - 1 : 0;
    char state[6], msg[PRS_SC_MSG_MAX];
    int r = px_limit_bind(plan, types, types_len, ext->bind, ext->bind_len, bind, state, msg, sizeof msg);
    return r == 1 ? px_route_refuse(cl, state, msg) : r;
}

/* A statement on every shard: a read that no key restricts (planned, then merged), DDL
 * (sent as it is, shard after shard) or COPY of a sharded table (fanout.c), each shard on a
 * node chosen as for any statement of its kind. consume: the bytes of the client's input it
 * answers; ext: the extended-protocol segment, or NULL for a Query. Returns as
 * px_xact_begin. */
static int route_fanout_go(px_client *cl, const px_qclass *qc, const char *sql, size_t len, size_t consume,
                           const px_fanout_ext *ext)
{
    px_worker *w = cl->conn.w;
    bool every = qc->sk.verdict == PX_SK_EVERY, copy = qc->kind == PRS_KIND_COPY;
    bool split = qc->sk.verdict == PX_SK_WRITE_SPLIT;
    bool write = qc->sk.verdict == PX_SK_WRITE_ALL || qc->sk.verdict == PX_SK_WRITE_OMNI || split;
    /* With two-phase commit, DDL that may run in a transaction block is one distributed
     * transaction over every shard, like a write: applied everywhere or nowhere. */
    bool atomic_ddl = every && w->conf->cfg->two_phase_commit && !(qc->flags & PRS_F_NO_TXN_BLOCK);
    /* Inside a transaction (a BEGIN pgshard keeps), with two-phase commit: on the
     * transaction's servers, which stay in it (fanout.c). */
    bool in_txn = cl->x.deferred != PX_DEFER_NONE;
    if (in_txn && every && (qc->flags & PRS_F_NO_TXN_BLOCK))
        return px_route_refuse(cl, PGS_SQLSTATE_ACTIVE_SQL_TRANSACTION,
                               "pgshard: this statement cannot run inside a transaction block");
    if (in_txn && (!w->conf->cfg->two_phase_commit || w->conf->cfg->pool_mode != CFG_POOL_TRANSACTION))
        return px_route_refuse(
            cl, PGS_SQLSTATE_FEATURE_NOT_SUPPORTED,
            every
                ? "pgshard: DDL goes to every shard, which inside a transaction needs two_phase_commit = on "
                  "(and transaction pooling): run it on its own, outside BEGIN ... COMMIT"
                : "pgshard: a statement across shards (no tenant key, or COPY of a sharded table) inside a "
                  "transaction needs two_phase_commit = on (and transaction pooling): run it on its own, "
                  "outside BEGIN ... COMMIT");
    if (in_txn && sm_map_freezing(px_catalog_map(w->px->cat, w->id)))
        return px_route_refuse(cl, PGS_SQLSTATE_SERIALIZATION_FAILURE,
                               "pgshard: tenants are moving between shards, which a statement across shards "
                               "inside a transaction would wait for while holding its servers; roll the "
                               "transaction back and run it again");
    if (copy && ext)
        return px_route_refuse(cl, PGS_SQLSTATE_FEATURE_NOT_SUPPORTED,
                               "pgshard: COPY of a sharded table runs as a simple Query");
    prs_scatter plan;
    memset(&plan, 0, sizeof plan);
    px_fanout_req req = {.mode = atomic_ddl || write ? PX_FAN_WRITE
                                 : every             ? PX_FAN_DDL
                                                     : PX_FAN_READ,
                         .consume = consume,
                         .ext = ext,
                         .plan = &plan,
                         .all_rows = qc->sk.verdict == PX_SK_WRITE_ALL || split,
                         .ddl = atomic_ddl,
                         .in_txn = in_txn};
    int r = copy ? route_copy(cl, sql, len, &req) : split ? route_split(cl, sql, len, ext, &req) : 0;
    if (r == 0 && (every || copy || write)) /* sent as it is: the plan only carries the text */
        r = (plan.sql = strndup(sql, len)) ? 0 : -1;
    else if (r == 0)
        r = px_route_plan(cl, sql, len, &plan);
    if (r == 1 && !cl->refuse) /* the planner's refusal: answered at the statement's end */
        r = px_route_refuse(cl, plan.sqlstate, plan.msg);
    if (r == 0 && !(req.routes = malloc((size_t)w->conf->nshards * sizeof *req.routes)))
        r = -1;
    if (r == 0 && plan.sql == NULL)
        r = px_route_refuse(cl, plan.sqlstate, plan.msg);
    pgs_buf bind = PGS_BUF_INIT;
    if (r == 0 && ext && req.mode == PX_FAN_READ && (plan.limit_param || plan.offset_param)) {
        r = route_limit_bind(cl, ext, &plan, &bind);
        req.bind = &bind;
    }
    bool held = false;
    if (r == 0) {
        r = px_move_fanout_admit(cl, req.mode, &qc->sk);
        held = r == PX_FANOUT_HELD; /* waits unread in move.held: nothing more to do now */
        r = held ? 0 : r;
    }
    bool primary = in_txn || (req.mode != PX_FAN_READ && req.mode != PX_FAN_COPY_OUT);
    if (primary)
        cl->x.want_read = false;
    for (int s = 0; r == 0 && !held && s < w->conf->nshards; s++) {
        route_decide(cl, qc, primary, s, &req.routes[s]);
        if (req.routes[s].verdict != PX_ROUTE_GO) {
            cl->refuse =
                req.routes[s].verdict == PX_ROUTE_REFUSE ? req.routes[s].refuse : PX_REFUSE_NO_PRIMARY;
            r = 1;
        }
    }
    if (r == 0 && !held)
        r = px_fanout_start(cl, &req);
    free(req.routes);
    pgs_buf_free(&bind);
    prs_scatter_free(&plan);
    if (req.split)
        prs_insert_split_free(req.split);
    free(req.split);
    if (req.copy)
        prs_copy_opts_free(req.copy);
    free(req.copy);
    return r;
}

static int route_fanout(px_client *cl, const pgs_frame *f, const px_qclass *qc)
{
    const char *sql = (const char *)px_conn_at(&cl->conn) + PGS_HDR_LEN;
    return route_fanout_go(cl, qc, sql, pgs_strnlen(sql, f->len - 4), f->total, NULL);
}

static int route_ext_refuse(px_client *cl, const char *what)
{
    char msg[320];
    snprintf(
        msg, sizeof msg,
        "pgshard: a query across shards (no tenant key) in the extended protocol runs as Parse, Bind, "
        "Describe of the portal, Execute and Sync of one unnamed portal; %s is not supported with it yet",
        what);
    return px_route_refuse(cl, PGS_SQLSTATE_FEATURE_NOT_SUPPORTED, msg);
}

/* The statement a segment's Bind names: its Parse in the segment, the client's last unnamed
 * Parse, or a named statement it prepared earlier. */
static bool route_ext_stmt(px_client *cl, const char *name, px_fanout_ext *e)
{
    if (e->parse_name && strcmp(e->parse_name, name) == 0)
        return true; /* e->stmt is that Parse's */
    if (e->parse_name)
        return false; /* a Parse of another statement: not part of this read */
    if (!name[0]) {
        if (!cl->x.unnamed_known)
            return false;
        e->stmt = cl->x.unnamed.data;
        e->stmt_len = cl->x.unnamed.len;
        return true;
    }
    px_stmt *st = px_client_stmt_get(&cl->stmts, name);
    if (!st || st->sql)
        return false;
    e->stmt = st->body;
    e->stmt_len = st->body_len;
    return true;
}

/* A whole extended-protocol segment, up to its Sync, whose one statement runs on every
 * shard: read into a px_fanout_ext and run, or refused when it holds more than that. */
static int route_fanout_ext(px_client *cl, const px_qclass *qc)
{
    px_conn *c = &cl->conn;
    const uint8_t *p = px_conn_at(c);
    size_t avail = c->in.len - c->in_pos, off = 0;
    px_fanout_ext e;
    memset(&e, 0, sizeof e);
    bool bound = false, executed = false;
    pgs_frame f;
    while (off < avail && pgs_frame_read(p + off, avail - off, PGS_MAX_MSG_LEN, &f) == 1 &&
           f.total <= avail - off) {
        pgs_reader rd = pgs_reader_make(p + off + PGS_HDR_LEN, f.len - 4);
        const char *a = "", *b = "";
        uint32_t rows = 0;
        off += f.total;
        if (f.type == PGS_FE_SYNC) {
            if (!executed)
                return route_ext_refuse(cl, "a segment without Execute");
            e.seg_len = off;
            if (e.parse_name && e.parse_name[0] && px_client_stmt_get(&cl->stmts, e.parse_name)) {
                char msg[PX_NAME_MAX + 48];
                snprintf(msg, sizeof msg, "prepared statement \"%s\" already exists", e.parse_name);
                return px_route_refuse(cl, PGS_SQLSTATE_DUPLICATE_PSTATEMENT, msg);
            }
            const char *sql = (const char *)e.stmt;
            return route_fanout_go(cl, qc, sql, pgs_strnlen(sql, e.stmt_len), off, &e);
        }
        if (f.type == PGS_FE_FLUSH)
            continue;
        if (f.type == PGS_FE_PARSE && !e.parse_name && !bound && pgs_rd_cstr(&rd, &a) == 0) {
            e.parse_name = a;
            e.stmt = rd.p;
            e.stmt_len = rd.left;
        } else if (f.type == PGS_FE_BIND && !bound && pgs_rd_cstr(&rd, &a) == 0 &&
                   pgs_rd_cstr(&rd, &b) == 0) {
            if (a[0])
                return route_ext_refuse(cl, "a named portal");
            if (!route_ext_stmt(cl, b, &e))
                return route_ext_refuse(cl, "a statement whose text pgshard does not know");
            e.bind = rd.p;
            e.bind_len = rd.left;
            e.bind_msg = p + off - f.total + PGS_HDR_LEN;
            e.bind_msg_len = f.len - 4;
            bound = true;
        } else if (f.type == PGS_FE_DESCRIBE && bound && !executed && f.len == 6 && p[off - 2] == 'P' &&
                   p[off - 1] == 0) {
            e.describe = true;
        } else if (f.type == PGS_FE_EXECUTE && bound && !executed && pgs_rd_cstr(&rd, &a) == 0 && !a[0] &&
                   pgs_rd_be32(&rd, &rows) == 0) {
            if (rows != 0)
                return route_ext_refuse(cl, "Execute with a row limit (a portal fetched in parts)");
            executed = true;
        } else {
            return route_ext_refuse(cl,
                                    f.type == PGS_FE_DESCRIBE ? "Describe of a statement" : "this message");
        }
    }
    return route_ext_refuse(cl, "a segment longer than pgshard buffers");
}

/* Whether the catalog lease, when it has lapsed, bars a new transaction: one routed to a
 * shard by its key, the session's tenant or pgshard.shard whose statement may write, or that
 * a BEGIN opened (its later statements may write). One atomic load while the lease holds;
 * only then is an extended-protocol segment classified as a read or not, when routing did
 * not need to. */
static bool route_lease_bars(px_client *cl, const pgs_frame *f, const px_qclass *qc, bool classified)
{
    if (qc->sk.verdict != PX_SK_SHARD || (!qc->sk.has_key && cl->pinned_shard < 0) || !cl->x.lease_lapsed)
        return false;
    if (cl->x.deferred != PX_DEFER_NONE)
        return true;
    px_qclass rw;
    if (!classified && f->type != PGS_FE_QUERY) {
        route_message(cl, f, &rw, NULL);
        return !rw.read;
    }
    return !qc->read;
}

/* Called from the client's input pass with the first message of a transaction. Returns as
 * px_xact_begin. */
int px_route_acquire(px_client *cl, const pgs_frame *f)
{
    px_worker *w = cl->conn.w;
    px_qclass qc = {0};
    px_route d;
    bool write = true;
    bool split = w->px->has_replicas && w->conf->cfg->pool_mode == CFG_POOL_TRANSACTION;
    bool seen = f->type == PGS_FE_QUERY;
    cl->x.want_read = false;
    /* The lease before the map (routing reads it): the catalog thread publishes a new map
     * before it renews the lease, so a lease seen renewed here comes with that map. */
    cl->x.lease_lapsed = w->px->sharded && px_catalog_lease_lapsed(w->px->cat, uv_now(&w->loop));
    if (split || (w->px->sharded && f->type == PGS_FE_QUERY))
        route_message(cl, f, &qc, &seen);
    /* A segment buffered whole up to its Sync was routed by all its messages: they need no
     * second look once it runs (px_route_linked). */
    bool flushed = false;
    cl->x.segment_checked =
        w->px->sharded && f->type != PGS_FE_QUERY && route_segment_shard(cl, &qc.sk, &flushed);
    /* A segment whose buffered part names no shard yet (a Parse that arrived without its
     * Bind), or reads so far where a write may follow before its Sync, waits for the rest,
     * up to its Sync or a Flush, rather than going to the default shard, or to a replica
     * that would refuse the write (25006). Messages are whole in transaction pooling; the
     * wait is bounded by what one input buffer may hold. */
    bool shard_open = w->px->sharded && !cl->x.segment_checked && !flushed && qc.sk.verdict == PX_SK_ANY;
    bool read_open = split && qc.read && !seen;
    if (f->type != PGS_FE_QUERY && (shard_open || read_open) &&
        w->conf->cfg->pool_mode == CFG_POOL_TRANSACTION &&
        cl->conn.in.len - cl->conn.in_pos < PX_SEGMENT_WAIT_MAX)
        return 0;
    if (split) {
        /* The first statement of a BEGIN that pgshard kept opens the transaction: a replica
         * would refuse its later writes (25006), unless the BEGIN was READ ONLY. */
        bool block = cl->x.deferred != PX_DEFER_NONE && !cl->x.begin_read_only;
        cl->x.want_read = !block && route_wants_replica(cl, &qc);
        write = block || !qc.read;
    }
    if (route_wide(qc.sk.verdict) && f->type == PGS_FE_QUERY)
        return route_fanout(cl, f, &qc);
    if (route_wide(qc.sk.verdict)) {
        if (cl->x.segment_checked)
            return route_fanout_ext(cl, &qc);
        if (w->conf->cfg->pool_mode == CFG_POOL_TRANSACTION &&
            cl->conn.in.len - cl->conn.in_pos < PX_SEGMENT_WAIT_MAX)
            return 0; /* waits for its Sync */
        return px_route_refuse(
            cl, PGS_SQLSTATE_FEATURE_NOT_SUPPORTED,
            "pgshard: a query across shards (no tenant key) in the extended protocol must be "
            "sent whole up to its Sync (at most 1 MB)");
    }
    int shard = qc.sk.verdict == PX_SK_SHARD ? qc.sk.shard : w->conf->cfg->default_shard;
    if (qc.sk.verdict == PX_SK_ANY && qc.sk.omni_read && cl->x.deferred == PX_DEFER_NONE)
        shard =
            (int)(w->omni_next++ % (uint32_t)w->conf->nshards); /* reads of omnisharded tables take turns */
    if (qc.sk.verdict != PX_SK_REFUSE && shard >= w->px->cfg->nshards) {
        snprintf(route_sk_refuse(&qc.sk, PGS_SQLSTATE_INTERNAL_ERROR), sizeof qc.sk.msg,
                 "pgshard: the shard map names shard %d, which the config does not have", shard);
    }
    if (qc.sk.verdict == PX_SK_REFUSE)
        return px_route_refuse(cl, qc.sk.sqlstate, qc.sk.msg);
    int mv = px_move_admit(cl, &qc.sk, route_lease_bars(cl, f, &qc, split));
    if (mv != PX_MOVE_GO)
        return mv == PX_MOVE_HELD ? 0 : mv == PX_MOVE_REFUSED ? 1 : -1;
    route_decide(cl, &qc, write, shard, &d);
    return px_xact_begin(cl, &d);
}

/* A client linked to a replica sends the first message of a new segment: when that
 * segment must not run there (a write pipelined after a read), the client waits for the
 * replica to finish and then goes through routing again. */
bool px_route_must_leave(px_client *cl, const pgs_frame *f)
{
    px_link *l = px_xact_link(cl);
    if (!l || !l->replica || (f->type != PGS_FE_QUERY && f->type != PGS_FE_PARSE && f->type != PGS_FE_BIND))
        return false;
    px_server *sv = l->sv;
    if (sv->ext_open || sv->tx_status != PGS_TX_IDLE)
        return false;
    px_qclass qc;
    route_message(cl, f, &qc, NULL);
    return !route_wants_replica(cl, &qc);
}

/* The end of a link: a write starts the read-your-writes wait; a read that went well
 * forgets the nodes it avoided. */
void px_route_link_done(px_client *cl)
{
    px_link *l = &cl->x.one;
    px_shard_memo *m = px_xact_memo(cl, l->shard);
    if (l->write && cl->conn.w->px->has_replicas)
        m->ryw_write_ns = uv_hrtime();
    if (!l->write)
        m->avoid = 0;
    l->write = false;
    l->replica = false;
    px_route_disarm(cl);
}

/* A statement that will not run (its shard key says so): its messages are dropped up to the
 * Query or Sync that ends it, which is answered with this error. Returns 1, as a refusal
 * of px_xact_begin, or -1 when out of memory. */
int px_route_refuse(px_client *cl, const char *sqlstate, const char *msg)
{
    size_t n = strlen(msg);
    free(cl->refuse_msg);
    cl->refuse_msg = malloc(5 + n + 1);
    if (!cl->refuse_msg)
        return -1;
    memcpy(cl->refuse_msg, sqlstate, 5);
    memcpy(cl->refuse_msg + 5, msg, n + 1);
    cl->refuse = PX_REFUSE_SHARD;
    pgs_debug("route_refused", "client %08x: %s (%s)", cl->key_pid, msg, sqlstate);
    return 1;
}

char px_route_idle_status(const px_client *cl)
{
    return cl->x.deferred == PX_DEFER_OPEN     ? PGS_TX_BLOCK
           : cl->x.deferred == PX_DEFER_FAILED ? PGS_TX_FAILED
                                               : PGS_TX_IDLE;
}

/* The same for an extended-protocol segment that only runs one transaction-control
 * statement: an unnamed Parse, its Bind without parameters, Describe of the portal,
 * Execute, Sync (how psycopg and others send BEGIN). Its replies are made here: ParseComplete,
 * BindComplete, NoData, CommandComplete, ReadyForQuery. Returns the whole segment's length
 * and the statement text in *sql, or 0 when the segment is anything else. */
static size_t defer_ext_segment(px_client *cl, const char **sql, size_t *len, pgs_buf *replies, bool *more)
{
    px_conn *c = &cl->conn;
    const uint8_t *p = px_conn_at(c);
    size_t avail = c->in.len - c->in_pos, off = 0;
    pgs_frame f;
    static const uint8_t parse_complete[] = {'1', 0, 0, 0, 4}, bind_complete[] = {'2', 0, 0, 0, 4},
                         no_data[] = {'n', 0, 0, 0, 4};
    bool executed = false;
    while (off < avail && pgs_frame_read(p + off, avail - off, PGS_MAX_MSG_LEN, &f) == 1 &&
           f.total <= avail - off) {
        pgs_reader rd = pgs_reader_make(p + off + PGS_HDR_LEN, f.len - 4);
        const char *a, *b;
        uint16_t n1, n2;
        off += f.total;
        if (f.type == PGS_FE_PARSE && off == f.total && pgs_rd_cstr(&rd, &a) == 0 && !a[0] &&
            pgs_rd_cstr(&rd, &b) == 0) {
            *sql = b;
            *len = strlen(b);
            pgs_buf_append(replies, parse_complete, 5);
        } else if (f.type == PGS_FE_BIND && off > f.total && pgs_rd_cstr(&rd, &a) == 0 && !a[0] &&
                   pgs_rd_cstr(&rd, &b) == 0 && !b[0] && pgs_rd_be16(&rd, &n1) == 0 && n1 == 0 &&
                   pgs_rd_be16(&rd, &n2) == 0 && n2 == 0) {
            pgs_buf_append(replies, bind_complete, 5);
        } else if (f.type == PGS_FE_DESCRIBE && f.len == 6 && p[off - 2] == 'P' && p[off - 1] == 0) {
            pgs_buf_append(replies, no_data, 5);
        } else if (f.type == PGS_FE_EXECUTE && !executed) {
            executed = true; /* its CommandComplete is added by the caller, which knows the tag */
        } else if (f.type == PGS_FE_FLUSH) {
        } else if (f.type == PGS_FE_SYNC && executed) {
            return off;
        } else {
            return 0;
        }
    }
    if (more)
        *more = true; /* each message so far fits: the rest has not arrived */
    return 0;
}

typedef struct defer_answer {
    const char *tag;      /* CommandComplete tag, or NULL for the error */
    const char *sqlstate; /* the error */
    const char *msg;
    bool in_progress; /* with the tag: PostgreSQL's WARNING for a BEGIN inside a transaction */
} defer_answer;

static const char defer_in_progress[] = "there is already a transaction in progress";

/* A's answer (its WARNING, CommandComplete or error) onto b. */
static void defer_reply(pgs_buf *b, const defer_answer *a)
{
    if (a->in_progress)
        pgs_msg_notice_typed(b, PGS_BE_NOTICE, "WARNING", PGS_SQLSTATE_ACTIVE_SQL_TRANSACTION,
                             defer_in_progress);
    if (a->tag)
        pgs_msg_complete(b, a->tag);
    else
        pgs_msg_error(b, "ERROR", a->sqlstate, "%s", a->msg);
}

/* Answers a Query the client sent with a's reply, then ReadyForQuery, consuming the
 * message. */
static px_msg route_answer(px_client *cl, const pgs_frame *f, const defer_answer *a)
{
    px_conn *c = &cl->conn;
    pgs_buf b = PGS_BUF_INIT;
    c->in_pos += f->total;
    c->fwd_mark = c->in_pos;
    defer_reply(&b, a);
    pgs_msg_ready(&b, px_route_idle_status(cl));
    int r = px_conn_send_buf(c, &b); /* closes the client, with 53200, when b failed */
    pgs_buf_free(&b);
    return r < 0 || cl->state == CL_CLOSED ? PX_MSG_CLOSED : PX_MSG_DONE;
}

static const char defer_aborted[] =
    "current transaction is aborted, commands ignored until end of transaction block";

/* Whether a text may be a statement that starts a transaction (its first word is BEGIN or
 * START) or, with ends, one that ends it too (COMMIT, END, ROLLBACK, ABORT); or it opens
 * with a comment. Most statements are none of these, and then need no analysis here. */
static bool may_begin(const char *sql, size_t len, bool ends)
{
    static const struct {
        const char *w;
        size_t n;
        bool ends;
    } words[] = {{"begin", 5, false}, {"start", 5, false},   {"commit", 6, true},
                 {"end", 3, true},    {"rollback", 8, true}, {"abort", 5, true}};
    size_t i = 0;
    while (i < len && (sql[i] == ' ' || sql[i] == '\t' || sql[i] == '\n' || sql[i] == '\r'))
        i++;
    if (i == len)
        return false;
    if (sql[i] == '/' || sql[i] == '-')
        return true;
    char c = (char)(sql[i] | 0x20); /* the words' first letters differ: one is compared at most */
    for (size_t k = 0; k < sizeof words / sizeof words[0]; k++)
        if (words[k].w[0] == c)
            return (ends || !words[k].ends) && len - i >= words[k].n &&
                   strncasecmp(sql + i, words[k].w, words[k].n) == 0;
    return false;
}

/* What pgshard answers itself for a statement of a client that holds no server: BEGIN (kept
 * until a statement needs a server: names a shard when pgshard shards, any statement
 * otherwise), COMMIT/ROLLBACK of such a BEGIN, and anything but those after an error in it.
 * Returns 1 with *a, 0 to route the statement, -1 out of memory. */
static int defer_decide(px_client *cl, const char *sql, size_t len, defer_answer *a)
{
    px_worker *w = cl->conn.w;
    px_xact *x = &cl->x;
    if (x->deferred != PX_DEFER_FAILED && !may_begin(sql, len, x->deferred == PX_DEFER_OPEN))
        return 0;
    const prs_query_info *qi = route_analyze(w, sql, len);
    *a = (defer_answer){NULL, PGS_SQLSTATE_IN_FAILED_SQL_TRANSACTION, defer_aborted, false};
    if (!qi || qi->n_statements != 1)
        return x->deferred == PX_DEFER_FAILED;
    bool ends = qi->kind == PRS_KIND_COMMIT || qi->kind == PRS_KIND_ROLLBACK;
    if (x->deferred == PX_DEFER_NONE) {
        if (qi->kind != PRS_KIND_BEGIN)
            return 0;
        pgs_buf_clear(&x->begin);
        if (pgs_buf_append(&x->begin, sql, len) < 0)
            return -1;
        x->deferred = PX_DEFER_OPEN;
        x->begin_read_only = (qi->flags & PRS_F_READ_ONLY_TXN) != 0 && qi->isolation != PRS_ISO_SERIALIZABLE;
        /* The tag names the statement as written, as PostgreSQL's does. */
        a->tag = strncasecmp(prs_lexed_text(&w->lex), "start", 5) == 0 ? "START TRANSACTION" : "BEGIN";
        return 1;
    }
    if (ends && !(qi->flags & PRS_F_TXN_CHAIN)) {
        bool failed = x->deferred == PX_DEFER_FAILED;
        x->deferred = PX_DEFER_NONE;
        pgs_buf_free(&x->begin);
        a->tag = failed || qi->kind == PRS_KIND_ROLLBACK ? "ROLLBACK" : "COMMIT";
        return 1;
    }
    if (x->deferred == PX_DEFER_FAILED)
        return 1;
    if (qi->kind == PRS_KIND_BEGIN) { /* as PostgreSQL: a warning, nothing else */
        a->tag = "BEGIN";
        a->in_progress = true;
        return 1;
    }
    return 0;
}

/* The statement text of a Query or a Parse (whole in transaction pooling), or false. */
static bool route_text(px_client *cl, const pgs_frame *f, const char **sql, size_t *len)
{
    const uint8_t *at = px_conn_at(&cl->conn);
    size_t n = f->len - 4, skip = 0;
    if (!at || cl->conn.in.len - cl->conn.in_pos < f->total ||
        (f->type != PGS_FE_QUERY && f->type != PGS_FE_PARSE))
        return false;
    const char *body = (const char *)at + PGS_HDR_LEN;
    if (f->type == PGS_FE_PARSE && (skip = pgs_strnlen(body, n)) == n)
        return false; /* the statement name has no end */
    skip += f->type == PGS_FE_PARSE;
    *sql = body + skip;
    *len = pgs_strnlen(*sql, n - skip);
    return true;
}

/* The extended-protocol form (an unnamed Parse of the statement, Bind, Describe, Execute,
 * Sync, as psycopg sends BEGIN): the replies are made here, in order. */
static px_msg route_defer_ext(px_client *cl, const pgs_frame *f)
{
    const char *sql = NULL;
    size_t len = 0;
    /* Most segments are not a BEGIN's (nor, while one is kept, its end): their Parse says so
     * before the rest is read. */
    if (cl->x.deferred != PX_DEFER_FAILED && route_text(cl, f, &sql, &len) &&
        !may_begin(sql, len, cl->x.deferred == PX_DEFER_OPEN))
        return PX_MSG_PASS;
    pgs_buf b = PGS_BUF_INIT;
    defer_answer a;
    size_t seg = defer_ext_segment(cl, &sql, &len, &b, NULL);
    int r = seg ? defer_decide(cl, sql, len, &a) : 0;
    if (r < 0)
        px_client_fatal_oom(cl);
    if (r <= 0) {
        pgs_buf_free(&b);
        return r < 0 ? PX_MSG_CLOSED : PX_MSG_PASS;
    }
    if (!a.tag)
        pgs_buf_clear(&b); /* after an error the server would skip to the Sync */
    defer_reply(&b, &a);
    pgs_msg_ready(&b, px_route_idle_status(cl));
    px_conn *c = &cl->conn;
    c->in_pos += seg;
    c->fwd_mark = c->in_pos;
    r = px_conn_send_buf(c, &b); /* closes the client, with 53200, when b failed */
    pgs_buf_free(&b);
    return r < 0 || cl->state == CL_CLOSED ? PX_MSG_CLOSED : PX_MSG_DONE;
}

px_msg px_route_defer(px_client *cl, const pgs_frame *f)
{
    if (f->type == PGS_FE_PARSE)
        return route_defer_ext(cl, f);
    const char *sql = (const char *)px_conn_at(&cl->conn) + PGS_HDR_LEN;
    defer_answer a;
    int r = defer_decide(cl, sql, pgs_strnlen(sql, f->len - 4), &a);
    if (r < 0)
        px_client_fatal_oom(cl); /* the BEGIN could not be kept */
    if (r <= 0)
        return r < 0 ? PX_MSG_CLOSED : PX_MSG_PASS;
    return route_answer(cl, f, &a);
}

/* ---- transactions over several shards (two-phase commit) -------------------------------- */

int px_route_primary_node(px_worker *w, int shard)
{
    return w->px->mon ? px_route_status(w)->shards[shard].primary : 0;
}

/* Statements that end or split a transaction, which a transaction over several shards
 * cannot pass to one of its servers: they would act on that shard alone. */
#define ROUTE_TXN_KINDS                                                                                      \
    ((1ull << PRS_KIND_BEGIN) | (1ull << PRS_KIND_COMMIT) | (1ull << PRS_KIND_ROLLBACK) |                    \
     (1ull << PRS_KIND_SAVEPOINT) | (1ull << PRS_KIND_RELEASE) | (1ull << PRS_KIND_ROLLBACK_TO) |            \
     (1ull << PRS_KIND_PREPARE_TXN) | (1ull << PRS_KIND_COMMIT_PREPARED) |                                   \
     (1ull << PRS_KIND_ROLLBACK_PREPARED))

/* A statement of a transaction that has parked servers, or is about to: END for its COMMIT
 * or ROLLBACK, STAY when it may run on one shard, or a refusal in *sk (verdict PX_SK_REFUSE)
 * for what would act on one shard only or leave session state there. */
static int route_multi_check(px_client *cl, const pgs_frame *f, px_sk_result *sk)
{
    const char *sql;
    size_t len;
    if (!route_text(cl, f, &sql, &len))
        return PX_LINKED_STAY;
    const prs_query_info *qi = route_analyze(cl->conn.w, sql, len);
    if (!qi)
        return PX_LINKED_STAY; /* a syntax error: the server says so */
    bool one = qi->n_statements == 1;
    if (one && (qi->kind == PRS_KIND_COMMIT || qi->kind == PRS_KIND_ROLLBACK) &&
        !(qi->flags & PRS_F_TXN_CHAIN))
        return cl->x.nparked ? PX_LINKED_END : PX_LINKED_STAY;
    const char *what = NULL;
    if ((qi->kind_mask & ROUTE_TXN_KINDS) && !(one && qi->kind == PRS_KIND_BEGIN))
        what =
            "savepoints, PREPARE TRANSACTION, COMMIT/ROLLBACK AND CHAIN, or a transaction's end among other "
            "statements of one Query";
    else if (qi->pin)
        what = "a statement that leaves session state on its server (a temporary table, a cursor WITH HOLD, "
               "a session advisory lock, LISTEN, set_config)";
    if (!what)
        return PX_LINKED_STAY;
    memset(sk, 0, sizeof *sk);
    sk->verdict = PX_SK_REFUSE;
    memcpy(sk->sqlstate, PGS_SQLSTATE_FEATURE_NOT_SUPPORTED, 6);
    snprintf(sk->msg, sizeof sk->msg, "pgshard: a transaction over several shards cannot run %s", what);
    return PX_LINKED_DONE;
}

/* Whether the transaction on l may leave its server parked for a statement of another
 * shard: two-phase commit can end it on both, its BEGIN can be repeated there (pgshard
 * kept it), and nothing is half done on the server. */
static bool route_may_park(px_client *cl, const px_link *l)
{
    const px_server *sv = l->sv;
    const cfg_config *cfg = cl->conn.w->conf->cfg;
    return cfg->two_phase_commit && cfg->pool_mode == CFG_POOL_TRANSACTION && !l->replica &&
           sv->tx_status == PGS_TX_BLOCK && !sv->ext_open && !px_pin_holds(sv) && cl->x.begin.len > 0;
}

px_msg px_route_multi_end(px_client *cl, const pgs_frame *f)
{
    px_conn *c = &cl->conn;
    const char *sql = NULL;
    size_t len = 0, consume = f->total;
    pgs_buf head = PGS_BUF_INIT;
    if (!cl->x.nparked && !cl->x.multi_lost)
        return PX_MSG_PASS;
    if (f->type == PGS_FE_PARSE) {
        bool more = false;
        consume = defer_ext_segment(cl, &sql, &len, &head, &more);
        if (!consume && more && c->in.len - c->in_pos < PX_SEGMENT_WAIT_MAX) {
            pgs_buf_free(&head);
            return PX_MSG_WAIT; /* read on until its Sync */
        }
    } else if (!route_text(cl, f, &sql, &len)) {
        return PX_MSG_PASS;
    }
    const prs_query_info *qi = sql ? route_analyze(c->w, sql, len) : NULL;
    bool end = qi && qi->n_statements == 1 &&
               (qi->kind == PRS_KIND_COMMIT || qi->kind == PRS_KIND_ROLLBACK) &&
               !(qi->flags & PRS_F_TXN_CHAIN);
    if (!end && f->type == PGS_FE_PARSE && !consume && route_text(cl, f, &sql, &len) &&
        (qi = route_analyze(c->w, sql, len)) && (qi->kind_mask & ROUTE_TXN_KINDS)) {
        pgs_buf_free(&head);
        /* Passed on, it would end the transaction on one shard only. */
        px_client_fatal(cl, PGS_SQLSTATE_FEATURE_NOT_SUPPORTED,
                        "pgshard: the COMMIT or ROLLBACK of a transaction over several shards must be sent "
                        "on its own (Parse, Bind, Execute, Sync)");
        return PX_MSG_CLOSED;
    }
    if (!end) {
        pgs_buf_free(&head);
        return PX_MSG_PASS;
    }
    int r = px_fanout_xact_end(cl, qi->kind == PRS_KIND_COMMIT, consume, &head);
    pgs_buf_free(&head);
    if (r < 0) {
        px_client_fatal(cl, PGS_SQLSTATE_OUT_OF_MEMORY, "out of memory");
        return PX_MSG_CLOSED;
    }
    return cl->state == CL_CLOSED ? PX_MSG_CLOSED : PX_MSG_DONE;
}

/* SQL that raises sqlstate with msg on the server: the error then takes its place among the
 * replies and aborts a transaction, as the server's own would. */
static void route_raise_sql(pgs_buf *b, const char *sqlstate, const char *msg)
{
    pgs_buf_appendf(b, "DO $pgshard$BEGIN RAISE EXCEPTION USING ERRCODE = '%.5s', MESSAGE = '", sqlstate);
    for (const char *p = msg; *p; p++) {
        if (*p == '\'')
            pgs_buf_append_u8(b, '\'');
        if (*p != '$')
            pgs_buf_append_u8(b, (uint8_t)*p);
    }
    pgs_buf_append(b, "'; END$pgshard$", 15);
}

/* A statement for another shard where the client's server cannot be given up (in a
 * transaction, in a pipeline segment, or in session pooling). A Query is replaced by a
 * server-side error in its place; an extended-protocol message cannot be, since the
 * messages before it in its segment already went out, so the client is closed with the error
 * and the server with it, which rolls its transaction back. PX_MSG_DONE or PX_MSG_CLOSED. */
static px_msg linked_refuse(px_client *cl, const pgs_frame *f, const px_sk_result *sk)
{
    px_link *l = px_xact_link(cl);
    px_server *sv = l->sv;
    char buf[sizeof sk->msg];
    const char *state = sk->sqlstate, *msg = sk->msg;
    if (route_wide(sk->verdict)) {
        bool session = cl->conn.w->conf->cfg->pool_mode == CFG_POOL_SESSION;
        snprintf(
            buf, sizeof buf,
            "pgshard: %s cannot run %s: it runs on its own, outside BEGIN ... COMMIT, in transaction pooling",
            sk->verdict == PX_SK_EVERY ? "DDL, which goes to every shard,"
                                       : "a query across shards (no tenant key)",
            session            ? "in session pooling (pool_mode = session)"
            : px_pin_holds(sv) ? "while the session keeps its server for session state"
                               : "inside a transaction");
        state = PGS_SQLSTATE_FEATURE_NOT_SUPPORTED;
        msg = buf;
    } else if (sk->verdict == PX_SK_SHARD && px_pin_holds(sv) && sv->tx_status == PGS_TX_IDLE) {
        char why[96];
        snprintf(buf, sizeof buf,
                 "pgshard: this session keeps its server on shard %d for the session state it holds there "
                 "(%s); a statement for shard %d cannot run until that state is removed (DISCARD ALL)",
                 l->shard, px_pin_reasons(sv->pins, why, sizeof why), sk->shard);
        state = PGS_SQLSTATE_FEATURE_NOT_SUPPORTED;
        msg = buf;
    } else if (sk->verdict == PX_SK_SHARD) {
        snprintf(buf, sizeof buf,
                 "pgshard: this transaction runs on shard %d; a statement for shard %d cannot join it "
                 "(a transaction over several shards needs two_phase_commit = on%s): nothing of it ran on "
                 "shard %d",
                 l->shard, sk->shard,
                 !cl->conn.w->conf->cfg->two_phase_commit                   ? ""
                 : cl->conn.w->conf->cfg->pool_mode != CFG_POOL_TRANSACTION ? ", and transaction pooling"
                 : l->replica                                               ? ", and runs on primaries"
                 : cl->x.begin.len == 0                                     ? ", and a BEGIN sent on its own"
                 : sv->tx_status == PGS_TX_FAILED                           ? ", and no error in it"
                                                                            : ", and no statement half done",
                 sk->shard);
        state = PGS_SQLSTATE_FEATURE_NOT_SUPPORTED;
        msg = buf;
    }
    if (f->type != PGS_FE_QUERY) {
        px_client_fatal(cl, state, "%s", msg);
        return PX_MSG_CLOSED;
    }
    px_conn *c = &cl->conn;
    pgs_buf b = PGS_BUF_INIT;
    size_t m = pgs_msg_begin(&b, PGS_FE_QUERY);
    route_raise_sql(&b, state, msg);
    pgs_buf_append_u8(&b, 0);
    pgs_msg_end(&b, m);
    px_conn_flush_forward(c, &sv->conn);
    c->in_pos += f->total;
    c->fwd_mark = c->in_pos;
    px_msg r = pgs_buf_failed(&b) || px_server_push_reply(sv, RP_QUERY, 0) < 0 ? PX_MSG_CLOSED : PX_MSG_DONE;
    if (r == PX_MSG_DONE)
        px_conn_send_buf(&sv->conn, &b);
    pgs_buf_free(&b);
    return r;
}

int px_route_session_server(px_client *cl)
{
    px_route d;
    cl->x.want_read = false;
    route_decide(cl, NULL, true, 0, &d);
    return d.verdict == PX_ROUTE_GO ? px_xact_begin(cl, &d) : 1;
}

int px_route_linked(px_client *cl, const pgs_frame *f)
{
    px_worker *w = cl->conn.w;
    px_link *l = px_xact_link(cl);
    px_server *sv = l->sv;
    bool leave = l->replica && px_route_must_leave(cl, f);
    if (!w->px->sharded)
        return leave ? PX_LINKED_LEAVE : PX_LINKED_STAY;
    px_qclass qc;
    px_sk_result *sk = &qc.sk;
    if (cl->x.nparked && (f->type == PGS_FE_QUERY || f->type == PGS_FE_PARSE)) {
        int m = route_multi_check(cl, f, sk);
        if (m == PX_LINKED_DONE)
            return linked_refuse(cl, f, sk) == PX_MSG_CLOSED ? PX_LINKED_CLOSED : PX_LINKED_DONE;
        if (m != PX_LINKED_STAY)
            return m;
    }
    if (f->type != PGS_FE_QUERY && cl->x.segment_checked)
        return leave ? PX_LINKED_LEAVE : PX_LINKED_STAY;
    if (f->type == PGS_FE_QUERY)
        route_message(cl, f, &qc, NULL);
    else
        cl->x.segment_checked = route_segment_shard(cl, sk, NULL);
    bool other = sk->verdict == PX_SK_REFUSE || route_wide(sk->verdict) ||
                 (sk->verdict == PX_SK_SHARD && sk->shard != l->shard);
    if (!other) {
        px_move_note(cl, sk);
        return leave ? PX_LINKED_LEAVE : PX_LINKED_STAY;
    }
    /* Earlier statements still running decide whether this one starts a new transaction: wait
     * for them (the caller pauses while the server is not clean), then route it anew. */
    if (w->conf->cfg->pool_mode == CFG_POOL_TRANSACTION && !sv->ext_open && sv->tx_status == PGS_TX_IDLE &&
        !px_pin_holds(sv))
        return PX_LINKED_LEAVE;
    if ((sk->verdict == PX_SK_SHARD || route_wide(sk->verdict)) && route_may_park(cl, l)) {
        px_sk_result why;
        if (!cl->x.nparked && route_multi_check(cl, f, &why) == PX_LINKED_DONE)
            return linked_refuse(cl, f, &why) == PX_MSG_CLOSED ? PX_LINKED_CLOSED : PX_LINKED_DONE;
        cl->x.park_to = sk->verdict == PX_SK_SHARD ? sk->shard : -1; /* -1: every shard (fanout.c) */
        return PX_LINKED_PARK;
    }
    return linked_refuse(cl, f, sk) == PX_MSG_CLOSED ? PX_LINKED_CLOSED : PX_LINKED_DONE;
}

void px_route_explain(px_client *cl, const char *sql, size_t len, px_route_why *out)
{
    px_worker *w = cl->conn.w;
    px_qclass qc;
    route_classify(cl, sql, len, NULL, &qc, NULL);
    if (!w->px->sharded) /* SHOW ROUTE explains the key even in a one-shard config */
        route_shard(cl, route_analyze(w, sql, len), sql, len, NULL, &qc, NULL);
    memset(out, 0, sizeof *out);
    out->sk = qc.sk;
    out->read = qc.read;
    out->shard = qc.sk.verdict == PX_SK_SHARD ? qc.sk.shard : w->conf->cfg->default_shard;
    out->replica = w->px->has_replicas && route_wants_replica(cl, &qc);
}

/* The kept copy of a read is no longer needed (or no longer enough). */
void px_route_disarm(px_client *cl)
{
    px_buf_give(cl->conn.w, &cl->x.retry);
}

/* A new client is welcomed with the parameters of a pool that already knows them; else by
 * the shard's primary, or, while the primary is down, by a replica that is up, so that
 * logins keep working during a failover. */
px_pool *px_route_home_pool(px_client *cl)
{
    px_worker *w = cl->conn.w;
    if (!w->px->mon)
        return px_pool_get(w, cl->user, cl->db_name, 0, 0);
    const px_shard_status *sh = &px_route_status(w)->shards[0];
    px_pool *primary = px_pool_get(w, cl->user, cl->db_name, 0, sh->primary);
    if (!primary || primary->welcome_ready)
        return primary;
    pgs_node *it, *tmp;
    pgs_list_each (&w->pools, it, tmp) {
        px_pool *p = pgs_container_of(it, px_pool, node);
        if (p->welcome_ready && p->shard == 0 && strcmp(p->user->cfg->name, cl->user->cfg->name) == 0 &&
            strcmp(p->db_name, cl->db_name) == 0)
            return p;
    }
    if (primary_ready(w, sh, 0))
        return primary;
    for (int i = 0; i < sh->nnodes; i++)
        if (sh->nodes[i].health == PX_NODE_UP && !node_resting(w, 0, i))
            return px_pool_get(w, cl->user, cl->db_name, 0, i);
    return primary;
}

/* Routes again every client queued in `from` (a pool's queue or the primary's waiters):
 * each is linked, queued anew, or refused. avoid_node (-1: none) is a replica that failed
 * the readers among them. */
static void route_again(pgs_list *from, int avoid_node)
{
    pgs_node *n;
    pgs_list moved; /* so that a client queued again in `from` is not seen twice */
    pgs_list_init(&moved);
    while ((n = pgs_list_first(from)))
        px_client_set_state(pgs_container_of(n, px_client, wait_node), CL_WAIT_SERVER, &moved);
    while ((n = pgs_list_first(&moved))) {
        px_client *cl = pgs_container_of(n, px_client, wait_node);
        px_client_set_state(cl, CL_WAIT_SERVER, NULL); /* out of `moved`: placed anew below */
        if (cl->x.fan) {
            px_fanout_give_up(cl, PGS_SQLSTATE_CONNECTION_FAILURE,
                              "pgshard: a node a cross-shard read needs cannot be reached");
            continue;
        }
        if (avoid_node >= 0 && cl->x.one.replica)
            px_xact_memo(cl, cl->x.one.shard)->avoid |= 1u << avoid_node;
        px_route d;
        route_decide(cl, NULL, cl->x.one.write, cl->x.one.shard, &d);
        int r = px_xact_begin(cl, &d);
        if (r < 0)
            px_client_fatal(cl, PGS_SQLSTATE_OUT_OF_MEMORY, "out of memory");
        else if (r == 1 && !px_client_server(cl)) {
            px_client_set_state(cl, CL_IDLE, NULL); /* its input pass answers the refusal */
            px_client_process(cl);
        }
    }
}

/* Clients queued in a pool whose node cannot be reached: each goes through routing again
 * (the node now rests, so another replica, the primary, or the primary's waiters). */
void px_route_requeue(px_pool *pool)
{
    route_again(&pool->waiting, pool->nodeix);
}

/* Every tick: clients waiting for a primary get one when the monitor has found it, or the
 * refusal when primary_wait_ms is over. */
void px_route_tick(px_worker *w)
{
    if (w->primary_waiters.n)
        route_again(&w->primary_waiters, -1);
}

/* The replica failed before the client saw any byte of the read sent to it (a FATAL
 * error or a closed socket): the read's messages, as the client sent them, go back in
 * front of its input and are routed again, away from that node. Once per read, and only
 * for reads that can be repeated as they are (client_retry_span). */
int px_route_retry(px_client *cl, px_server *sv)
{
    px_conn *c = &cl->conn;
    px_shard_memo *m = px_xact_memo(cl, sv->pool->shard);
    if (!px_retry_armed(cl) || c->processing || c->closing || (m->avoid & (1u << sv->pool->nodeix)))
        return 0;
    size_t rest = c->in.len - c->in_pos;
    if (c->in_pos)
        pgs_buf_consume(&c->in, c->in_pos);
    c->in_pos = c->fwd_mark = 0;
    const pgs_buf *rb = &cl->x.retry;
    if (pgs_buf_reserve(&c->in, rb->len) < 0)
        return 0;
    memmove(c->in.data + rb->len, c->in.data, rest);
    memcpy(c->in.data, rb->data, rb->len);
    c->in.len = rb->len + rest;
    m->avoid |= 1u << sv->pool->nodeix;
    pgs_info("read_retried", "client %08x: node %d of shard %d failed before answering; trying another node",
             cl->key_pid, sv->pool->nodeix, sv->pool->shard);
    px_route_disarm(cl);
    cl->x.one.write = false;
    cl->x.one.replica = false;
    cl->x.paused = false;
    px_client_set_state(cl, CL_IDLE, NULL);
    px_client_process(cl);
    return 1;
}

/* ---- SET / RESET / SHOW pgshard.* --------------------------------------------------- */

static const char *const target_names[] = {"default", "primary", "replica", "any"};

/* Finds "pgshard." in any case: a dot preceded by the seven letters. Most queries have few
 * dots, so memchr does nearly all the work. */
static bool mentions_pgshard(const char *s, size_t n)
{
    const char *p = s, *end = s + n, *dot;
    while ((dot = memchr(p, '.', (size_t)(end - p)))) {
        if (dot - s >= 7 && strncasecmp(dot - 7, "pgshard", 7) == 0)
            return true;
        p = dot + 1;
    }
    return false;
}

static void var_reply(px_client *cl, pgs_buf *b)
{
    px_server *sv = px_client_server(cl);
    pgs_msg_ready(b, sv ? sv->tx_status : px_route_idle_status(cl));
    px_conn_send_buf(&cl->conn, b);
}

static void var_error(px_client *cl, const char *sqlstate, const char *msg, const char *name)
{
    pgs_buf b = PGS_BUF_INIT;
    pgs_msg_error(&b, "ERROR", sqlstate, msg, name);
    var_reply(cl, &b);
    pgs_buf_free(&b);
}

static void var_show(px_client *cl, const char *name, const char *value)
{
    pgs_buf b = PGS_BUF_INIT;
    pgs_msg_row_desc_text(&b, &name, 1);
    size_t st = pgs_msg_begin(&b, PGS_BE_DATA_ROW);
    pgs_buf_append_be16(&b, 1);
    pgs_buf_append_be32(&b, (uint32_t)strlen(value));
    pgs_buf_append(&b, value, strlen(value));
    pgs_msg_end(&b, st);
    pgs_msg_complete(&b, "SHOW");
    var_reply(cl, &b);
    pgs_buf_free(&b);
}

static void var_done(px_client *cl, const char *tag)
{
    pgs_buf b = PGS_BUF_INIT;
    pgs_msg_complete(&b, tag);
    var_reply(cl, &b);
    pgs_buf_free(&b);
}

/* The value of SET pgshard.x = v: a word, or one literal of the text. */
static int var_value(px_worker *w, const char *sql, size_t len, const prs_query_info *qi, char *out,
                     size_t cap)
{
    const char *word = prs_info_str(qi, qi->set_value);
    if (word) {
        snprintf(out, cap, "%s", word);
        return 0;
    }
    if (qi->set_value_lit < 0 || (uint32_t)qi->set_value_lit >= w->lex.n_lits)
        return -1;
    pgs_buf v = PGS_BUF_INIT;
    int rc = prs_literal_value(sql, len, &w->lex.lits[qi->set_value_lit], &v);
    if (rc == 0 && v.len < cap) {
        memcpy(out, v.data, v.len);
        out[v.len] = 0;
    } else {
        rc = -1;
    }
    pgs_buf_free(&v);
    return rc;
}

/* Applies SET/RESET pgshard.x; false when the name or value is not understood. */
static bool var_apply(px_client *cl, const char *name, const char *value, bool reset)
{
    if (strcmp(name, "pgshard.target") == 0) {
        for (int i = 0; i < 4; i++)
            if (reset || strcasecmp(value, target_names[i]) == 0) {
                cl->target = (uint8_t)(reset ? 0 : i);
                return true;
            }
        return false;
    }
    if (strcmp(name, "pgshard.max_lag_ms") == 0) {
        if (reset || strcasecmp(value, "default") == 0) {
            cl->max_lag_ms = UINT32_MAX;
            return true;
        }
        char *end = NULL;
        unsigned long v = strtoul(value, &end, 10);
        if (!value[0] || *end || v >= UINT32_MAX)
            return false;
        cl->max_lag_ms = (uint32_t)v;
        return true;
    }
    if (strcmp(name, "pgshard.tenant") == 0) {
        free(cl->tenant);
        cl->tenant = NULL;
        if (reset || strcasecmp(value, "default") == 0 || !value[0])
            return true;
        size_t n = strlen(value) + 1;
        if ((cl->tenant = malloc(n)))
            memcpy(cl->tenant, value, n);
        return cl->tenant != NULL;
    }
    if (strcmp(name, "pgshard.shard") == 0) {
        if (reset || strcasecmp(value, "default") == 0) {
            cl->pinned_shard = -1;
            return true;
        }
        char *end = NULL;
        long v = strtol(value, &end, 10);
        if (!value[0] || *end || v < 0 || v >= cl->conn.w->px->cfg->nshards)
            return false;
        cl->pinned_shard = (int)v;
        return true;
    }
    return false;
}

static void var_set(px_client *cl, const char *name, const char *value, bool reset)
{
    if (var_apply(cl, name, value, reset))
        var_done(cl, reset ? "RESET" : "SET");
    else if (strcmp(name, "pgshard.target") == 0)
        var_error(cl, PGS_SQLSTATE_INVALID_PARAMETER_VALUE,
                  "invalid value for parameter \"%s\": use primary, replica or any", name);
    else if (strcmp(name, "pgshard.max_lag_ms") == 0)
        var_error(cl, PGS_SQLSTATE_INVALID_PARAMETER_VALUE,
                  "invalid value for parameter \"%s\": expected milliseconds", name);
    else if (strcmp(name, "pgshard.shard") == 0)
        var_error(cl, PGS_SQLSTATE_INVALID_PARAMETER_VALUE,
                  "invalid value for parameter \"%s\": expected a shard number of the config", name);
    else if (strcmp(name, "pgshard.tenant") == 0)
        var_error(cl, PGS_SQLSTATE_OUT_OF_MEMORY, "out of memory for parameter \"%s\"", name);
    else
        var_error(cl, PGS_SQLSTATE_UNDEFINED_OBJECT, "unrecognized configuration parameter \"%s\"", name);
}

/* A text that is one SET, RESET or SHOW of a pgshard.* variable: its analysis and the
 * variable's name; NULL for any other text (most of them: memchr finds no such name). */
static const prs_query_info *var_statement(px_worker *w, const char *sql, size_t len, const char **name)
{
    if (!mentions_pgshard(sql, len))
        return NULL;
    const prs_query_info *qi = route_analyze(w, sql, len);
    if (!qi || !(qi->flags & PRS_F_PGSHARD_VAR) || qi->n_statements != 1 ||
        !(*name = prs_info_str(qi, qi->set_name)))
        return NULL;
    return qi;
}

/* A statement that fails as SET of a bad pgshard.* value should: the same SQLSTATE and
 * message. The variable's name is copied only as far as it is a plain identifier. */
static void var_refusal_sql(pgs_buf *b, const char *name)
{
    char safe[64];
    size_t n = 0;
    for (const char *p = name; *p && n + 1 < sizeof safe; p++)
        if ((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_' || *p == '.')
            safe[n++] = *p;
    safe[n] = 0;
    bool known = strcmp(safe, "pgshard.target") == 0 || strcmp(safe, "pgshard.max_lag_ms") == 0 ||
                 strcmp(safe, "pgshard.tenant") == 0 || strcmp(safe, "pgshard.shard") == 0;
    pgs_buf_appendf(b,
                    "DO $pgshard$BEGIN RAISE EXCEPTION USING ERRCODE = '%s', MESSAGE = '%s \"%s\"'; "
                    "END$pgshard$",
                    known ? PGS_SQLSTATE_INVALID_PARAMETER_VALUE : PGS_SQLSTATE_UNDEFINED_OBJECT,
                    known ? "invalid value for parameter" : "unrecognized configuration parameter", safe);
}

/* The same in an unnamed Parse (pgjdbc and other drivers send every statement this way):
 * the setting is applied now, and the server gets `SET pgshard.x TO 'value'`, which its
 * grammar accepts as a placeholder variable (`= primary` it would refuse), so the replies
 * stay the server's own: PX_MSG_DONE when the Parse was handled, PX_MSG_PASS to forward it. */
px_msg px_route_pgshard_parse(px_client *cl, const pgs_frame *f, const char *sql, size_t len)
{
    px_conn *c = &cl->conn;
    const char *name;
    const prs_query_info *qi = var_statement(c->w, sql, len, &name);
    if (!qi || (qi->kind != PRS_KIND_SET && qi->kind != PRS_KIND_RESET))
        return PX_MSG_PASS;
    char value[64] = "";
    if (qi->kind == PRS_KIND_SET && var_value(c->w, sql, len, qi, value, sizeof value) < 0)
        return PX_MSG_PASS;
    bool reset = qi->kind == PRS_KIND_RESET;
    bool ok = var_apply(cl, name, value, reset);
    const uint8_t *msg = px_conn_at(c);
    const uint8_t *types = (const uint8_t *)sql + len + 1; /* after the text's NUL */
    size_t ntypes = (size_t)(msg + f->total - types);
    pgs_buf b = PGS_BUF_INIT;
    size_t m = pgs_msg_begin(&b, PGS_FE_PARSE);
    pgs_buf_append_u8(&b, 0);
    if (!ok)
        var_refusal_sql(&b, name); /* the server raises the error, in its place among the replies */
    else if (reset)
        pgs_buf_appendf(&b, "RESET %s", name);
    else
        pgs_buf_appendf(&b, "SET %s TO '%s'", name, value); /* both checked by var_apply */
    pgs_buf_append_u8(&b, 0);
    pgs_buf_append(&b, types, ntypes);
    pgs_msg_end(&b, m);
    px_conn_flush_forward(c, &px_client_server(cl)->conn);
    c->in_pos += f->total;
    c->fwd_mark = c->in_pos;
    px_msg r = pgs_buf_failed(&b) || px_server_push_reply(px_client_server(cl), RP_PARSE, 0) < 0
                   ? PX_MSG_CLOSED
                   : PX_MSG_DONE;
    if (r == PX_MSG_DONE)
        px_conn_send_buf(&px_client_server(cl)->conn, &b);
    pgs_buf_free(&b);
    return r;
}

px_msg px_route_pgshard_var(px_client *cl, const pgs_frame *f)
{
    px_conn *c = &cl->conn;
    if (c->in.len - c->in_pos < f->total)
        return PX_MSG_PASS;
    const char *sql = (const char *)px_conn_at(c) + PGS_HDR_LEN;
    size_t len = pgs_strnlen(sql, f->len - 4);
    px_server *sv = px_client_server(cl);
    if (sv && (sv->replies.n || sv->ext_open))
        return PX_MSG_PASS; /* replies still owed: an answer from here would overtake them */
    const char *name;
    const prs_query_info *qi = var_statement(c->w, sql, len, &name);
    if (!qi)
        return PX_MSG_PASS;
    char value[64] = "";
    int vr = qi->kind == PRS_KIND_SET ? var_value(c->w, sql, len, qi, value, sizeof value) : 0;
    /* What came before goes to the server; this message goes nowhere. */
    px_conn_flush_forward(c, sv ? &sv->conn : NULL);
    c->in_pos += f->total;
    c->fwd_mark = c->in_pos;
    if (vr < 0) {
        var_error(cl, PGS_SQLSTATE_INVALID_PARAMETER_VALUE, "invalid value for parameter \"%s\"", name);
        return cl->state == CL_CLOSED ? PX_MSG_CLOSED : PX_MSG_DONE;
    }
    if (qi->kind == PRS_KIND_SHOW) {
        char v[32];
        if (strcmp(name, "pgshard.target") == 0)
            var_show(cl, name, target_names[cl->target]);
        else if (strcmp(name, "pgshard.max_lag_ms") == 0) {
            snprintf(v, sizeof v, "%u",
                     cl->max_lag_ms != UINT32_MAX ? cl->max_lag_ms : c->w->conf->cfg->max_lag_ms);
            var_show(cl, name, v);
        } else if (strcmp(name, "pgshard.tenant") == 0) {
            var_show(cl, name, cl->tenant ? cl->tenant : "");
        } else if (strcmp(name, "pgshard.shard") == 0) {
            snprintf(v, sizeof v, "%d", cl->pinned_shard);
            var_show(cl, name, cl->pinned_shard >= 0 ? v : "");
        } else
            var_error(cl, PGS_SQLSTATE_UNDEFINED_OBJECT, "unrecognized configuration parameter \"%s\"", name);
    } else {
        var_set(cl, name, value, qi->kind == PRS_KIND_RESET);
    }
    return cl->state == CL_CLOSED ? PX_MSG_CLOSED : PX_MSG_DONE;
}

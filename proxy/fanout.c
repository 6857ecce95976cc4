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
#include "proxy/merge.h"
#include "proxy/monitor.h"
#include "proxy/px.h"
#include "proxy/recovery.h"
#include "proxy/testhook.h"

/* Bytes of merged output queued for the client above which the shards are not read. */
#define FANOUT_CLIENT_MAX (256u << 10)
/* A write's RETURNING rows, held until it commits, at most this much. */
#define FANOUT_WRITE_ROWS_MAX (64u << 20)
/* COPY FROM: rows gathered for a shard before they go out as one CopyData. */
#define FANOUT_COPY_CHUNK (64u << 10)
/* COPY FROM: bytes queued towards a shard above which the client is not read. */
#define FANOUT_COPY_QUEUE_MAX (1u << 20)

/* What a fan-out link waits for from its server. */
enum {
    FL_ACQUIRE = 0, /* no server yet */
    FL_COLLATION,   /* the database's collation (the first fan-out of the pool) */
    FL_QUERY,       /* the shard query's answer, up to its ReadyForQuery */
    FL_DONE,        /* its ReadyForQuery came (or its server was lost): nothing more */
};

struct px_fanout {
    px_client *cl;
    prs_scatter plan; /* owned */
    px_merge *merge;  /* owned, made when the collation is known */
    int nshards;
    int acquired;          /* links given a server so far, in shard order */
    int ndone;             /* links in FL_DONE */
    bool sending;          /* in fanout_send: a lost server does not end the fan-out there */
    uint8_t *replays;      /* owned: per link, session replies still to hide (replay, collation) */
    uint8_t *phase;        /* owned: per link, FL_* */
    bool failed;           /* the client gets an error: rows are no longer merged */
    pgs_buf err;           /* the client's ErrorResponse (whole message) once failed */
    pgs_buf out;           /* scratch for merged output */
    px_route *routes;      /* owned: per shard, the node routing chose */
    pgs_buf req;           /* what every shard is sent: a Query, or Parse/Bind/Describe/Execute/Sync */
    bool ext;              /* the client sent an extended-protocol segment */
    bool every;            /* a broadcast: plan.sql runs on each shard in turn, unmerged */
    uint8_t mode;          /* PX_FAN_* */
    prs_copy_opts *copy;   /* owned: the COPY modes' options */
    uint32_t key_oid;      /* COPY_IN: the key column's type */
    px_copy_split *split;  /* owned: COPY_IN, the client's data cut into rows */
    pgs_buf *bufs;         /* owned: COPY_IN, per shard, rows not sent yet */
    uint8_t *copying;      /* owned: COPY_IN, per shard: in copy-in mode (CopyInResponse seen, not ended) */
    uint8_t *committed;    /* owned: COPY modes, per shard: its CommandComplete came */
    uint8_t *post;         /* DDL: per shard, 1 while its sequences' query follows the DDL, 2 in it */
    uint32_t copy_left;    /* COPY_IN: bytes of the client's current CopyData not split yet */
    int ncopying;          /* COPY_IN: shards that answered CopyInResponse */
    bool copy_open;        /* COPY_IN: the client has its CopyInResponse and sends data */
    bool copy_ended;       /* COPY_IN: the client's CopyDone or CopyFail (or an error) ended the data */
    bool header_out;       /* COPY_OUT: the client has had the data's header */
    uint64_t copied;       /* COPY modes: rows the shards' CommandCompletes count */
    uint8_t stage;         /* WRITE: WS_*, the step of the distributed transaction */
    int pending;           /* WRITE: shards whose answer to the current step is awaited */
    bool all_rows;         /* WRITE: every shard's RETURNING rows go to the client (not shard 0's only) */
    bool rd_sent;          /* WRITE: the client has its RowDescription */
    char verb[16];         /* WRITE: the CommandComplete verb ("UPDATE", "INSERT 0", ...) */
    bool ddl;              /* WRITE of DDL: shard 0's CommandCompletes are held with its rows */
    char gid[64];          /* WRITE with two-phase commit: the transaction's gid */
    uint64_t prepare_ns;   /* WRITE: uv_hrtime() when PREPARE TRANSACTION was sent */
    bool commit_failed;    /* WRITE: a COMMIT PREPARED failed: the decision must stay */
    pgs_buf head;          /* WRITE: shard 0's ParseComplete/BindComplete/NoData, for the client */
    prs_insert_split *ins; /* owned: WRITE of an INSERT split per shard, or NULL */
    pgs_buf *reqs;         /* owned with ins: per shard, its INSERT (empty: the shard has no row) */
    pgs_buf *rowbufs;      /* owned with ins: per shard, its RETURNING rows, to put back in order */
    bool describe;         /* ext: the client asked for the RowDescription */
    bool head_done;        /* the client has its ParseComplete/BindComplete: rows may follow */
    char *parse_name;      /* owned: ext, the name the client's Parse defines, or NULL without one */
    pgs_buf parse_body;    /* ext with a named Parse: its body, registered when every shard parsed */
    int parsed, bound;     /* ext: shards that answered ParseComplete, BindComplete */
    bool txn;              /* WRITE: the end of a client's transaction over several shards; verb
                              holds its tag */
    bool in_txn;           /* READ/WRITE inside the client's transaction: its servers stay in it
                              (parked) at the end, and new ones get its BEGIN first */
    uint8_t *member;       /* owned: txn, per shard: it ran statements of the transaction */
    uint8_t *awaiting;     /* owned: WRITE, per shard: answers (ReadyForQuery) of the current
                              step still to come, counted in pending */
    px_link links[];       /* one per shard; links[s].shard == s */
};

static px_fanout *client_fanout(const px_client *cl)
{
    return cl->x.fan;
}

static void copy_end_shards(px_fanout *fo, const char *why);

/* The ErrorResponse msg (whole) with "(note)" after its message, same severity class and
 * SQLSTATE, into out. Returns 0, or -1 when msg is malformed or memory ran out. */
static int error_noted(const uint8_t *msg, size_t n, const char *note, pgs_buf *out)
{
    pgs_error_fields ef;
    if (n < PGS_HDR_LEN || pgs_error_parse(msg + PGS_HDR_LEN, n - PGS_HDR_LEN, &ef) < 0)
        return -1;
    pgs_msg_error(out, "ERROR", ef.sqlstate[0] ? ef.sqlstate : PGS_SQLSTATE_INTERNAL_ERROR, "%s (%s)",
                  ef.message, note);
    return pgs_buf_failed(out) ? -1 : 0;
}
static void write_start(px_fanout *fo);
static void write_next(px_fanout *fo);
static void fanout_link_done(px_fanout *fo, px_link *l);
static void fanout_drop_servers(px_fanout *fo);
static void write_complete(px_fanout *fo);
static void split_rows_out(px_fanout *fo);
static void fanout_finish(px_fanout *fo);

/* The first failure wins; later ones (the cancels' 57014) are dropped. The message is a
 * whole ErrorResponse; from is the shard that sent it (its query is over), or -1. */
static void fanout_fail_from(px_fanout *fo, int from, const uint8_t *msg, size_t n)
{
    if (fo->failed)
        return;
    fo->failed = true;
    pgs_buf_append(&fo->err, msg, n);
    if (fo->mode == PX_FAN_WRITE)
        return; /* the transaction is rolled back on every shard once all have answered */
    if (fo->mode == PX_FAN_COPY_IN) {
        copy_end_shards(fo, "pgshard: the COPY failed on another shard");
        return;
    }
    for (int s = 0; s < fo->nshards && !fo->every; s++)
        if (fo->phase[s] == FL_QUERY && fo->links[s].sv && s != from)
            px_server_cancel(fo->links[s].sv);
}

static void fanout_fail(px_fanout *fo, const char *sqlstate, const char *msg)
{
    if (fo->failed)
        return;
    pgs_buf b = PGS_BUF_INIT;
    pgs_msg_error(&b, "ERROR", sqlstate, "%s", msg);
    fanout_fail_from(fo, -1, b.data, b.len);
    pgs_buf_free(&b);
}

static void fanout_merge_failed(px_fanout *fo)
{
    const char *state = PGS_SQLSTATE_INTERNAL_ERROR;
    const char *msg = fo->merge ? px_merge_error(fo->merge, &state) : "pgshard: out of memory";
    fanout_fail(fo, state, msg ? msg : "pgshard: the merge of the shards' rows failed");
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

static void fanout_send_sql(px_server *sv, const char *sql)
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
static bool fanout_seq_sql(const px_fanout *fo, int s, pgs_buf *b)
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
    if (fo->links[s].sv && fanout_seq_sql(fo, s, &b)) { /* a failed send loses the shard */
        fo->post[s] = 1;
        px_conn_send_buf(&sv->conn, &b);
    }
    pgs_buf_free(&b);
}

/* A server that joins the client's transaction for the fan-out gets its BEGIN first; the
 * answer is hidden (replays). Returns whether it was sent. */
static bool fanout_join_txn(px_fanout *fo, int s)
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
        write_start(fo);
        return;
    }
    bool ask =
        fo->mode == PX_FAN_READ && (cl->pool->coll_state == PX_COLL_UNKNOWN ||
                                    uv_now(&cl->conn.w->loop) - cl->pool->coll_at >= PX_COLL_REFRESH_MS);
    if (fo->mode == PX_FAN_READ && !ask && !fo->merge && fanout_make_merge(fo) < 0)
        fanout_fail(fo, PGS_SQLSTATE_OUT_OF_MEMORY, "pgshard: out of memory");
    for (int s = 0; s < fo->nshards; s++) {
        px_server *sv = fo->links[s].sv;
        fo->replays[s] = px_client_replay_session(cl, sv) ? 1 : 0;
        fo->replays[s] += fanout_join_txn(fo, s);
        if (!fo->links[s].sv)
            continue; /* the send failed and closed it: the shard is lost */
        if (ask && s == 0) {
            fanout_send_sql(sv, COLLATION_SQL);
            fo->phase[s] = FL_COLLATION;
            continue;
        }
        px_conn_send_buf(&sv->conn, &fo->req);
        fo->phase[s] = FL_QUERY;
    }
    /* The shards wait for the collation: they answer only what they were sent. */
}

/* ---- COPY ------------------------------------------------------------------------ */

/* One message of the given type and body to a connection. */
static void conn_send_msg(px_conn *c, char type, const uint8_t *p, size_t n)
{
    uint8_t hdr[PGS_HDR_LEN] = {(uint8_t)type, (uint8_t)((n + 4) >> 24), (uint8_t)((n + 4) >> 16),
                                (uint8_t)((n + 4) >> 8), (uint8_t)(n + 4)};
    px_conn_send(c, hdr, sizeof hdr);
    if (n)
        px_conn_send(c, p, n);
}

/* Shard s's gathered rows go out as one CopyData. */
static void copy_flush(px_fanout *fo, int s)
{
    pgs_buf *b = &fo->bufs[s];
    px_server *sv = fo->links[s].sv;
    if (b->len && sv && fo->copying[s])
        conn_send_msg(&sv->conn, PGS_FE_COPY_DATA, b->data, b->len);
    pgs_buf_clear(b);
}

/* Ends the copy on every shard still in it: CopyDone after the last rows, or CopyFail with
 * why (they answer with an error and roll their COPY back). */
static void copy_end_shards(px_fanout *fo, const char *why)
{
    fo->copy_ended = true;
    for (int s = 0; s < fo->nshards; s++) {
        px_server *sv = fo->links[s].sv;
        if (!fo->copying[s] || !sv)
            continue;
        if (why)
            conn_send_msg(&sv->conn, PGS_FE_COPY_FAIL, (const uint8_t *)why, strlen(why) + 1);
        else
            conn_send_msg(&sv->conn, PGS_FE_COPY_DONE, NULL, 0);
        fo->copying[s] = 0;
    }
}

/* Bad COPY data (the splitter's error, or a key no shard can take): the client's error,
 * with PostgreSQL's context line; every shard's COPY is failed. */
static void copy_refuse(px_fanout *fo, const char *sqlstate, const char *msg)
{
    char full[512];
    snprintf(full, sizeof full, "%s (COPY %s, line %zu)", msg, fo->copy->relname ? fo->copy->relname : "",
             fo->split ? px_copy_split_line(fo->split) : (size_t)0);
    fanout_fail(fo, sqlstate, full);
    copy_end_shards(fo, "pgshard: the COPY data was refused");
}

/* The shard of one row's key. An integer key in binary may come in any integer width (the
 * config's key_type says int8 for all of them). */
static int copy_shard(px_fanout *fo, const sm_map *map, const uint8_t *key, size_t len, int *err)
{
    sm_key k;
    uint32_t oid = fo->key_oid;
    bool integer = oid == SM_OID_INT2 || oid == SM_OID_INT4 || oid == SM_OID_INT8;
    int r;
    if (fo->copy->format == PRS_COPY_BINARY) {
        if (integer)
            oid = len == 2 ? SM_OID_INT2 : len == 4 ? SM_OID_INT4 : SM_OID_INT8;
        r = sm_key_from_binary(&k, oid, key, len);
    } else {
        r = sm_key_from_text(&k, oid, (const char *)key, len);
    }
    if (r >= 0)
        r = sm_map_route(map, &k, NULL);
    *err = r;
    return r;
}

typedef struct copy_ctx {
    px_fanout *fo;
    const sm_map *map;
} copy_ctx;

static int copy_row(void *arg, const uint8_t *row, size_t n, const uint8_t *key, size_t klen, bool null)
{
    copy_ctx *cc = arg;
    px_fanout *fo = cc->fo;
    char msg[256];
    int err;
    if (null) {
        snprintf(msg, sizeof msg, "pgshard: a COPY row has no value for the shard key of table \"%s\"",
                 fo->copy->relname);
        copy_refuse(fo, PGS_SQLSTATE_FEATURE_NOT_SUPPORTED, msg);
        return 1;
    }
    int s = copy_shard(fo, cc->map, key, klen, &err);
    if (s < 0 || s >= fo->nshards) {
        snprintf(msg, sizeof msg, "pgshard: invalid shard key in a COPY row: %s",
                 s < 0 ? sm_strerror(err) : "its shard is not in the config");
        copy_refuse(fo, s < 0 ? sm_sqlstate(err) : PGS_SQLSTATE_INTERNAL_ERROR, msg);
        return 1;
    }
    if (pgs_buf_append(&fo->bufs[s], row, n) < 0) {
        copy_refuse(fo, PGS_SQLSTATE_OUT_OF_MEMORY, "pgshard: out of memory");
        return 1;
    }
    if (fo->bufs[s].len >= FANOUT_COPY_CHUNK)
        copy_flush(fo, s);
    return 0;
}

/* A binary COPY's header and trailer, and a text or CSV header line, go to every shard. */
static int copy_part(void *arg, px_copy_part part, const uint8_t *bytes, size_t len)
{
    px_fanout *fo = arg;
    if (part == PX_COPY_PART_END)
        return 0; /* CopyDone ends each shard's data */
    for (int s = 0; s < fo->nshards; s++)
        pgs_buf_append(&fo->bufs[s], bytes, len);
    return 0;
}

static void copy_split_failed(px_fanout *fo, int r)
{
    if (r != PX_COPY_EDATA || fo->failed)
        return; /* a row callback refused it already */
    const char *state = PGS_SQLSTATE_INTERNAL_ERROR;
    const char *msg = px_copy_split_error(fo->split, &state);
    copy_refuse(fo, state, msg ? msg : "pgshard: bad COPY data");
}

/* The client's CopyDone: the last rows, and each shard's CopyDone. */
static void copy_done(px_fanout *fo)
{
    copy_ctx cc = {fo, px_catalog_map(fo->cl->conn.w->px->cat, fo->cl->conn.w->id)};
    int r = px_copy_split_finish(fo->split, copy_row, &cc);
    if (r != PX_COPY_OK) {
        copy_split_failed(fo, r);
        return;
    }
    for (int s = 0; s < fo->nshards; s++)
        copy_flush(fo, s);
    copy_end_shards(fo, NULL);
}

/* Whether a shard has so much of the client's data queued that the client waits. */
static bool copy_blocked(const px_fanout *fo)
{
    for (int s = 0; s < fo->nshards; s++) {
        const px_server *sv = fo->links[s].sv;
        if (sv && fo->copying[s] && sv->conn.out.len + sv->conn.wq.len > FANOUT_COPY_QUEUE_MAX)
            return true;
    }
    return false;
}

bool px_fanout_client_reading(const px_client *cl)
{
    const px_fanout *fo = client_fanout(cl);
    if (fo && fo->mode == PX_FAN_COPY_IN && fo->copy_open && !fo->copy_ended && !copy_blocked(fo))
        return true;
    return cl->conn.in.len - cl->conn.in_pos < PX_WAIT_READ_MAX;
}

/* One message (or part of a CopyData) of the client's COPY data. */
static px_step copy_client_message(px_client *cl, px_fanout *fo)
{
    px_conn *c = &cl->conn;
    size_t avail = c->in.len - c->in_pos;
    const uint8_t *p = px_conn_at(c);
    if (fo->copy_left) {
        size_t take = avail < fo->copy_left ? avail : fo->copy_left;
        if (!fo->copy_ended) {
            copy_ctx cc = {fo, px_catalog_map(c->w->px->cat, c->w->id)};
            int r = px_copy_split_feed(fo->split, p, take, copy_row, &cc);
            if (r != PX_COPY_OK)
                copy_split_failed(fo, r);
        }
        c->in_pos += take;
        c->fwd_mark = c->in_pos;
        fo->copy_left -= (uint32_t)take;
        return PX_STEP_AGAIN;
    }
    pgs_frame f;
    int fr = pgs_frame_read(p, avail, PGS_MAX_MSG_LEN, &f);
    if (fr == 0)
        return PX_STEP_WAIT;
    if (fr < 0) {
        px_client_fatal(cl, PGS_SQLSTATE_PROTOCOL_VIOLATION, "invalid message length");
        return PX_STEP_CLOSED;
    }
    if (f.type == PGS_FE_COPY_DATA) {
        c->in_pos += PGS_HDR_LEN;
        c->fwd_mark = c->in_pos;
        fo->copy_left = f.len - 4;
        return PX_STEP_AGAIN;
    }
    bool copy_msg = f.type == PGS_FE_COPY_DONE || f.type == PGS_FE_COPY_FAIL || f.type == PGS_FE_FLUSH ||
                    f.type == PGS_FE_SYNC;
    if (fo->copy_ended && !copy_msg)
        return PX_STEP_WAIT; /* the next statement: after the COPY's answer */
    if (avail < f.total) {
        if (f.total > c->w->conf->cfg->max_message_size || pgs_buf_reserve(&c->in, f.total - avail) < 0) {
            px_client_fatal(cl, PGS_SQLSTATE_PROGRAM_LIMIT_EXCEEDED,
                            "pgshard: message too large during COPY");
            return PX_STEP_CLOSED;
        }
        return PX_STEP_WAIT;
    }
    c->in_pos += f.total;
    c->fwd_mark = c->in_pos;
    if (fo->copy_ended || f.type == PGS_FE_FLUSH || f.type == PGS_FE_SYNC)
        return PX_STEP_AGAIN; /* PostgreSQL ignores them too */
    if (f.type == PGS_FE_COPY_DONE) {
        copy_done(fo);
    } else if (f.type == PGS_FE_COPY_FAIL) {
        char why[256];
        snprintf(why, sizeof why, "%.*s", (int)pgs_strnlen((const char *)p + PGS_HDR_LEN, f.len - 4),
                 (const char *)p + PGS_HDR_LEN);
        copy_end_shards(fo, why); /* each shard answers 57014 "COPY from stdin failed: why" */
    } else {
        char msg[96];
        snprintf(msg, sizeof msg, "unexpected message type 0x%02X during COPY from stdin",
                 (unsigned char)f.type);
        fanout_fail(fo, PGS_SQLSTATE_PROTOCOL_VIOLATION, msg);
        copy_end_shards(fo, msg);
    }
    return PX_STEP_AGAIN;
}

px_step px_fanout_client_step(px_client *cl)
{
    px_fanout *fo = client_fanout(cl);
    if (!fo || fo->mode != PX_FAN_COPY_IN || !fo->copy_open || cl->conn.in.len == cl->conn.in_pos)
        return PX_STEP_WAIT;
    if (!fo->copy_ended && copy_blocked(fo))
        return PX_STEP_WAIT; /* read again when the shards have taken it (px_fanout_server_drained) */
    return copy_client_message(cl, fo);
}

void px_fanout_server_drained(px_server *sv)
{
    px_fanout *fo = sv->link->fan;
    px_client *cl = fo->cl;
    if (fo->mode != PX_FAN_COPY_IN)
        return;
    px_client_update_reading(cl);
    px_client_process(cl);
}

/* A shard entered copy-in mode; once all have, the client gets one CopyInResponse. */
static void copy_in_response(px_fanout *fo, int s, const uint8_t *p, size_t total)
{
    fo->copying[s] = 1;
    if (fo->failed || fo->copy_ended) {
        copy_end_shards(fo, "pgshard: another shard failed");
        return;
    }
    if (++fo->ncopying < fo->nshards)
        return;
    px_conn_send(&fo->cl->conn, p, total);
    fo->copy_open = true;
}

/* "COPY n" of one shard. */
static void copy_counted(px_fanout *fo, int s, const uint8_t *body, size_t n)
{
    if (n > 5 && memcmp(body, "COPY ", 5) == 0)
        fo->copied += strtoull((const char *)body + 5, NULL, 10);
    fo->committed[s] = 1;
}

/* A binary COPY's header: the signature, no flags, no extension. */
static const uint8_t copy_signature[19] = {'P', 'G', 'C', 'O', 'P', 'Y', '\n', 0xff, '\r', '\n', 0};

/* Binary data for the client: the header goes in the same CopyData as the first row (or
 * the trailer), as PostgreSQL sends it; drivers read it so (psycopg). */
static void copy_out_binary(px_fanout *fo, const uint8_t *d, size_t n)
{
    px_conn *c = &fo->cl->conn;
    size_t h = fo->header_out ? 0 : sizeof copy_signature;
    uint8_t hdr[PGS_HDR_LEN] = {PGS_BE_COPY_DATA, (uint8_t)((n + h + 4) >> 24), (uint8_t)((n + h + 4) >> 16),
                                (uint8_t)((n + h + 4) >> 8), (uint8_t)(n + h + 4)};
    px_conn_send(c, hdr, sizeof hdr);
    if (h)
        px_conn_send(c, copy_signature, h);
    px_conn_send(c, d, n);
    fo->header_out = true;
}

/* COPY TO's end: the binary trailer, CopyDone and the rows counted by every shard. */
static void copy_out_end(px_fanout *fo)
{
    px_conn *c = &fo->cl->conn;
    if (fo->copy->format == PRS_COPY_BINARY) {
        static const uint8_t trailer[2] = {0xff, 0xff};
        copy_out_binary(fo, trailer, sizeof trailer);
    }
    conn_send_msg(c, PGS_BE_COPY_DONE, NULL, 0);
}

/* The client's CommandComplete of a COPY: the shards' rows together. */
static void copy_complete(px_fanout *fo)
{
    char tag[32];
    snprintf(tag, sizeof tag, "COPY %llu", (unsigned long long)fo->copied);
    pgs_buf b = PGS_BUF_INIT;
    pgs_msg_complete(&b, tag);
    px_conn_send_buf(&fo->cl->conn, &b);
    pgs_buf_free(&b);
}

/* COPY TO: one shard's CopyData. A binary stream's header is sent once, before the first
 * row, and its trailer once, at the end; a text or CSV header line once. */
static void copy_out_data(px_fanout *fo, int s, const uint8_t *p, size_t total)
{
    const uint8_t *d = p + PGS_HDR_LEN;
    size_t n = total - PGS_HDR_LEN;
    bool first = !fo->copying[s];
    fo->copying[s] = 1;
    px_conn *c = &fo->cl->conn;
    if (fo->copy->format == PRS_COPY_BINARY) {
        if (first) {
            uint32_t ext = n >= 19 ? pgs_be32(d + 15) : 0;
            if (n < 19 || memcmp(d, copy_signature, 11) != 0 || ext > n - 19) {
                fanout_fail(fo, PGS_SQLSTATE_PROTOCOL_VIOLATION,
                            "pgshard: a shard's binary COPY has no header");
                return;
            }
            d += 19 + ext;
            n -= 19 + ext;
        }
        if (n == 2 && d[0] == 0xff && d[1] == 0xff)
            return; /* its trailer: one for all at the end */
        if (!n)
            return;
        copy_out_binary(fo, d, n);
        return;
    }
    if (first && fo->copy->header != PRS_COPY_HEADER_FALSE) {
        if (fo->header_out)
            return; /* another shard's header line went out */
        fo->header_out = true;
    }
    px_conn_send(c, p, total);
}

/* The COPY messages of a shard's answer; false for those handled as in any answer. */
static bool fanout_copy_message(px_fanout *fo, int s, char type, const uint8_t *p, size_t total)
{
    switch (type) {
    case PGS_BE_COPY_IN:
        if (fo->mode != PX_FAN_COPY_IN)
            return false;
        copy_in_response(fo, s, p, total);
        return true;
    case PGS_BE_COPY_OUT:
        if (fo->mode != PX_FAN_COPY_OUT)
            return false;
        if (!fo->ncopying++ && !fo->failed)
            px_conn_send(&fo->cl->conn, p, total); /* the same from every shard */
        return true;
    case PGS_BE_COPY_DATA:
        if (fo->mode != PX_FAN_COPY_OUT)
            return false;
        if (!fo->failed)
            copy_out_data(fo, s, p, total);
        return true;
    case PGS_BE_COPY_DONE:
        return fo->mode == PX_FAN_COPY_OUT;
    case PGS_BE_COMMAND_COMPLETE:
        copy_counted(fo, s, p + PGS_HDR_LEN, total - PGS_HDR_LEN);
        return true;
    default:
        return false;
    }
}

/* COPY FROM: the splitter, and a buffer of rows per shard. */
static int fanout_copy_init(px_fanout *fo, int key_index)
{
    fo->bufs = calloc((size_t)fo->nshards, sizeof *fo->bufs);
    fo->split = px_copy_split_new(fo->copy, key_index);
    if (!fo->bufs || !fo->split)
        return -1;
    px_copy_split_set_part_fn(fo->split, copy_part, fo);
    return 0;
}

/* A fan-out over n shards with its per-shard arrays, or NULL (out of memory). */
static px_fanout *fanout_alloc(px_client *cl, int n)
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
    px_fanout *fo = fanout_alloc(cl, n);
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
        (fo->mode == PX_FAN_COPY_IN && fanout_copy_init(fo, rq->key_index) < 0) ||
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
    for (int s = 0; fo->in_txn && cl->x.nparked && s < n; s++) { /* the transaction's own servers */
        px_server *sv = cl->x.parked[s].sv;
        if (!sv)
            continue;
        memset(&cl->x.parked[s], 0, sizeof cl->x.parked[s]);
        cl->x.nparked--;
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
    px_fanout *fo = client_fanout(cl);
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

static void xact_join(px_fanout *fo, int s, px_server *sv);
static void xact_go(px_fanout *fo, bool abort);

void px_fanout_linked(px_client *cl, px_server *sv)
{
    px_fanout *fo = client_fanout(cl);
    if (fo->txn) { /* shard 0's server, to record the decision */
        xact_join(fo, 0, sv);
        px_server_activate(sv);
        px_client_set_state(cl, CL_FANOUT, NULL);
        xact_go(fo, false);
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
        fanout_finish(fo);
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
        fanout_fail(fo, PGS_SQLSTATE_OUT_OF_MEMORY, "pgshard: out of memory");
        return;
    }
    if (fo->out.len)
        px_conn_send_buf(&fo->cl->conn, &fo->out);
}

/* Shards that stopped being read (their queue was full, or the client slow) and may go on
 * now are read again, and what they already buffered is processed. */
static void fanout_resume(px_fanout *fo)
{
    for (int s = 0; s < fo->nshards && client_fanout(fo->cl) == fo; s++) {
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
    px_fanout *fo = client_fanout(cl);
    if (!fo)
        return;
    cl->x.fan = NULL;
    fanout_release(fo);
    px_move_xact_end(cl);
}

/* A COPY FROM that failed on some shards after others committed their rows: the error
 * says which keep them (each shard's COPY is its own transaction). */
static void copy_failed_note(px_fanout *fo)
{
    char kept[128] = "";
    size_t at = 0;
    for (int s = 0; s < fo->nshards && at < sizeof kept - 8; s++)
        if (fo->committed[s])
            at += (size_t)snprintf(kept + at, sizeof kept - at, "%s%d", at ? ", " : "", s);
    if (!at)
        return;
    char note[192];
    bool several = strchr(kept, ',') != NULL;
    snprintf(note, sizeof note, "%s %s loaded %s rows and %s them", several ? "shards" : "shard", kept,
             several ? "their" : "its", several ? "keep" : "keeps");
    pgs_buf b = PGS_BUF_INIT;
    if (error_noted(fo->err.data, fo->err.len, note, &b) == 0) {
        pgs_buf_free(&fo->err);
        fo->err = b;
    } else {
        pgs_buf_free(&b);
    }
}

/* The end of a fan-out inside the client's transaction: its servers stay in it, parked, and
 * a server of any other shard would get its BEGIN first; after an error, the transaction
 * only waits for its ROLLBACK, as PostgreSQL's would. */
static void fanout_park(px_fanout *fo)
{
    px_xact *x = &fo->cl->x;
    if (!x->parked && !(x->parked = calloc((size_t)fo->nshards, sizeof *x->parked))) {
        fanout_fail(fo, PGS_SQLSTATE_OUT_OF_MEMORY, "pgshard: out of memory");
        fanout_drop_servers(fo); /* which rolls their part of the transaction back */
    }
    for (int s = 0; s < fo->nshards; s++) {
        px_server *sv = fo->links[s].sv;
        if (!sv)
            continue;
        fo->links[s].sv = NULL;
        x->parked[s] = (px_link){.cl = fo->cl, .sv = sv, .shard = s, .write = true, .parked = true};
        sv->link = &x->parked[s];
        x->nparked++;
        px_server_update_reading(sv);
    }
    x->deferred = fo->failed ? PX_DEFER_FAILED : PX_DEFER_OPEN;
    x->route_bucket = -1; /* keys of any bucket: a freeze waits for its end */
}

/* Every shard answered: the client gets the merged result's end (or the error) and its
 * ReadyForQuery, and goes on with what it sent meanwhile. A send that fails (out of memory,
 * a broken socket) closes the client there and then, and that frees fo: each step that
 * sends is followed by a check of the client, which outlives this call. */
static void fanout_finish(px_fanout *fo)
{
    px_client *cl = fo->cl;
    if (fo->every && !fo->failed)
        px_conn_send_buf(&cl->conn, &fo->out);
    if (cl->state == CL_CLOSED)
        return;
    if (!fo->failed && fo->mode == PX_FAN_COPY_OUT)
        copy_out_end(fo);
    /* The sends inside close the client when they fail, which cppcheck does not follow. */
    // cppcheck-suppress knownConditionTrueFalse
    if (cl->state == CL_CLOSED)
        return;
    if (!fo->failed && (fo->mode == PX_FAN_COPY_OUT || fo->mode == PX_FAN_COPY_IN))
        copy_complete(fo);
    // cppcheck-suppress knownConditionTrueFalse
    if (cl->state == CL_CLOSED)
        return;
    if (!fo->failed && fo->mode == PX_FAN_WRITE) {
        px_conn_send_buf(&cl->conn, &fo->head);
        if (cl->state != CL_CLOSED)
            px_conn_send_buf(&cl->conn, &fo->out);
        if (cl->state != CL_CLOSED && fo->ins)
            split_rows_out(fo);
        if (cl->state != CL_CLOSED && !fo->ddl)
            write_complete(fo);
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
    if (fo->failed && fo->mode == PX_FAN_COPY_IN)
        copy_failed_note(fo);
    if (!fo->failed && fo->merge && !fo->head_done)
        fanout_fail(fo, PGS_SQLSTATE_INTERNAL_ERROR,
                    "pgshard: a shard ended a cross-shard read without binding it");
    if (!fo->failed && fo->merge) {
        pgs_buf_clear(&fo->out);
        if (px_merge_output(fo->merge, &fo->out, SIZE_MAX) < 0)
            fanout_merge_failed(fo);
        else if (!px_merge_done(fo->merge))
            fanout_fail(fo, PGS_SQLSTATE_INTERNAL_ERROR, "pgshard: the merge ended before every row was out");
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
static void fanout_link_done(px_fanout *fo, px_link *l)
{
    px_server *sv = l->sv;
    if (fo->phase[l->shard] == FL_DONE)
        return; /* counted already: a lost server (px_fanout_server_lost) */
    fo->phase[l->shard] = FL_DONE;
    fo->ndone++;
    if (fo->in_txn)
        return; /* it stays in the client's transaction: parked at the end (fanout_finish) */
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
        fanout_fail(fo, PGS_SQLSTATE_OUT_OF_MEMORY, "pgshard: out of memory");
}

/* The collation is known: the shard waiting for it runs the query now, and the merge is made. */
static void fanout_collation_done(px_fanout *fo, px_server *sv)
{
    px_pool *home = fo->cl->pool;
    if (home->coll_state == PX_COLL_UNKNOWN)
        home->coll_state = PX_COLL_ICU; /* no answer: never guess an order */
    if (!fo->merge && !fo->failed && fanout_make_merge(fo) < 0)
        fanout_fail(fo, PGS_SQLSTATE_OUT_OF_MEMORY, "pgshard: out of memory");
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
        fanout_fail(fo, PGS_SQLSTATE_OUT_OF_MEMORY,
                    "pgshard: out of memory registering a prepared statement");
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
    if (error_noted(p, total, note, &b) == 0)
        fanout_fail_from(fo, s, b.data, b.len);
    else
        fanout_fail_from(fo, s, p, total);
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
    fanout_link_done(fo, l);
    if (!fo->failed && s + 1 < fo->nshards) {
        fanout_send_one(fo, s + 1);
        return;
    }
    for (int t = s + 1; t < fo->nshards; t++)
        fanout_link_done(fo, &fo->links[t]); /* never sent anything: back to the pool */
}

/* ---- writes on several shards ------------------------------------------------------ */

/* The steps of a write on several shards, each sent to the shards concerned and complete
 * when all of them answered (ReadyForQuery):
 *   WS_RUN        BEGIN and the statement, on every shard;
 *   WS_PREPARE    two-phase commit: PREPARE TRANSACTION on every shard but 0;
 *   WS_DECIDE     shard 0 records the gid in pgshard.transactions and commits: the decision;
 *   WS_FINISH     COMMIT (one-phase), or COMMIT PREPARED after the decision;
 *   WS_FORGET     shard 0 deletes the decision, which no prepared transaction needs now;
 *   WS_ABORT      ROLLBACK, and ROLLBACK PREPARED where a shard had prepared.
 * A crash (of pgshard) before WS_DECIDE leaves prepared transactions that recovery rolls
 * back; after it, ones that recovery commits (recovery.c). */
enum { WS_RUN = 1, WS_PREPARE, WS_DECIDE, WS_FINISH, WS_FORGET, WS_ABORT };

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
    fanout_send_sql(sv, sql);
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
        write_next(fo);
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
        write_next(fo);
}

static const char write_decision_table[] =
    "DO $pgshard$BEGIN CREATE SCHEMA IF NOT EXISTS pgshard; CREATE TABLE IF NOT EXISTS pgshard.transactions "
    "(gid text PRIMARY KEY, decided_at timestamptz NOT NULL DEFAULT now()); EXCEPTION WHEN duplicate_object "
    "OR "
    "duplicate_table OR unique_violation THEN NULL; END$pgshard$";

/* Moves to the next step once every shard answered the current one. */
static void write_next(px_fanout *fo)
{
    char sql[512];
    switch (fo->stage) {
    case WS_RUN:
        if (fo->in_txn) { /* the client's transaction goes on: its COMMIT ends it */
            for (int s = 0; s < fo->nshards; s++)
                fanout_link_done(fo, &fo->links[s]);
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
            fanout_fail(fo, PGS_SQLSTATE_CONNECTION_FAILURE,
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
            fanout_link_done(fo, &fo->links[s]);
        return;
    }
    /* Every send of the step failed (each closed its server): no answer will come. */
    if (!fo->pending)
        write_next(fo);
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
            fanout_fail(fo, PGS_SQLSTATE_PROGRAM_LIMIT_EXCEEDED,
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
static void write_message(px_fanout *fo, px_server *sv, char type, const uint8_t *p, size_t total)
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
            fanout_fail_from(fo, s, p, total);
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
            write_next(fo);
        return;
    }
    if (fo->stage == WS_RUN && !fo->replays[s])
        write_result(fo, s, type, p, total);
    else if (type == PGS_BE_NOTICE && fo->stage == WS_RUN && s == 0)
        px_conn_send(&fo->cl->conn, p, total);
}

/* Every shard has a server: each begins a transaction and runs the statement. */
static void write_start(px_fanout *fo)
{
    fo->stage = WS_RUN;
    for (int s = 0; s < fo->nshards; s++) {
        px_server *sv = fo->links[s].sv;
        if (!sv)
            continue;
        fo->replays[s] = px_client_replay_session(fo->cl, sv) ? 1 : 0;
        if (fo->in_txn) {
            fo->replays[s] += fanout_join_txn(fo, s);
        } else {
            fanout_send_sql(sv, "BEGIN");
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
        if (fo->ddl && fanout_seq_sql(fo, s, &b)) { /* in the same transaction */
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
static void split_rows_out(px_fanout *fo)
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
static void write_complete(px_fanout *fo)
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
        write_message(fo, sv, type, p, total);
        return 0;
    }
    if ((fo->mode == PX_FAN_COPY_IN || fo->mode == PX_FAN_COPY_OUT) && !fo->replays[s] &&
        fanout_copy_message(fo, s, type, p, total))
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
        fanout_fail_from(fo, s, p, total);
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
            fanout_link_done(fo, l);
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
        fanout_finish(fo);
        return PX_STEP_AGAIN; /* the server is idle now, or closed */
    }
    if (sv->state == SV_ACTIVE && cl->x.fan == fo)
        fanout_resume(fo);
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
        fanout_fail(fo, PGS_SQLSTATE_CONNECTION_FAILURE, msg);
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
            write_next(fo);
            fo->sending = false;
        }
    }
    if (fo->ndone == fo->nshards && !fo->sending)
        fanout_finish(fo);
}

void px_fanout_client_drained(px_client *cl)
{
    px_fanout *fo = client_fanout(cl);
    if (!fo)
        return;
    fanout_pump(fo);
    if (client_fanout(cl) == fo)
        fanout_resume(fo);
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
    px_fanout *fo = client_fanout(cl);
    if (!fo)
        return;
    fanout_drop_servers(fo);
    px_fanout_free(cl);
}

/* While it still takes servers (nothing sent yet), the fan-out ends with an error for the
 * client, who stays connected. */
void px_fanout_give_up(px_client *cl, const char *sqlstate, const char *msg)
{
    px_fanout *fo = client_fanout(cl);
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

/* ---- the end of a transaction over several shards -------------------------------------- */

/* Shard s's server takes part in the end: it answers to the fan-out from now on. */
static void xact_join(px_fanout *fo, int s, px_server *sv)
{
    px_link *l = &fo->links[s];
    l->sv = sv;
    l->start_ns = uv_hrtime();
    sv->link = l;
    fo->phase[s] = FL_QUERY;
    fo->ndone--;
}

/* COMMIT runs the write's two-phase steps from its statement's end (write_next), ROLLBACK
 * its abort; fanout_finish answers the client once every shard is done. */
static void xact_go(px_fanout *fo, bool abort)
{
    fo->stage = WS_RUN;
    fo->sending = true;
    if (abort)
        write_abort(fo);
    else
        write_next(fo);
    fo->sending = false;
    if (fo->ndone == fo->nshards) {
        fanout_finish(fo);
        return;
    }
    /* Parked servers were not read: they are now, and what they sent meanwhile (a FATAL
     * error before their connection ended) is taken at once. */
    fanout_resume(fo);
}

int px_fanout_xact_end(px_client *cl, bool commit, size_t consume, pgs_buf *head)
{
    px_worker *w = cl->conn.w;
    px_xact *x = &cl->x;
    int n = w->conf->nshards;
    px_fanout *fo = fanout_alloc(cl, n);
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
        xact_join(fo, cur, sv);
    }
    for (int s = 0; x->nparked && s < n; s++) {
        if (!(sv = x->parked[s].sv))
            continue;
        memset(&x->parked[s], 0, sizeof x->parked[s]);
        x->nparked--;
        failed |= sv->tx_status != PGS_TX_BLOCK;
        fo->member[s] = 1;
        xact_join(fo, s, sv);
    }
    bool lost = x->multi_lost;
    x->multi_lost = false;
    x->deferred = PX_DEFER_NONE;
    pgs_buf_free(&x->begin);
    snprintf(fo->verb, sizeof fo->verb, "%s", commit && !failed ? "COMMIT" : "ROLLBACK");
    if (lost && commit)
        fanout_fail(fo, PGS_SQLSTATE_CONNECTION_FAILURE,
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
    xact_go(fo, abort);
    return 0;
}

void px_fanout_cancel(px_client *cl)
{
    px_fanout *fo = client_fanout(cl);
    for (int s = 0; fo && s < fo->nshards; s++)
        if (fo->links[s].sv && fo->phase[s] != FL_DONE)
            px_server_cancel(fo->links[s].sv);
}

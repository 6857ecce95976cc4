/* A fan-out's COPY: COPY FROM STDIN of a sharded table split row by row to the shards of
 * the rows' keys (copysplit.c cuts the client's data), and COPY TO STDOUT gathered from
 * every shard into one stream (one header, one binary trailer, the counts summed). The
 * fan-out's connections and its end are fanout.c's. */
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
void px_fo_copy_end_shards(px_fanout *fo, const char *why)
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
    px_fo_fail(fo, sqlstate, full);
    px_fo_copy_end_shards(fo, "pgshard: the COPY data was refused");
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
    px_fo_copy_end_shards(fo, NULL);
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
    const px_fanout *fo = px_fo_client(cl);
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
        px_fo_copy_end_shards(fo, why); /* each shard answers 57014 "COPY from stdin failed: why" */
    } else {
        char msg[96];
        snprintf(msg, sizeof msg, "unexpected message type 0x%02X during COPY from stdin",
                 (unsigned char)f.type);
        px_fo_fail(fo, PGS_SQLSTATE_PROTOCOL_VIOLATION, msg);
        px_fo_copy_end_shards(fo, msg);
    }
    return PX_STEP_AGAIN;
}

px_step px_fanout_client_step(px_client *cl)
{
    px_fanout *fo = px_fo_client(cl);
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
        px_fo_copy_end_shards(fo, "pgshard: another shard failed");
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
void px_fo_copy_out_end(px_fanout *fo)
{
    px_conn *c = &fo->cl->conn;
    if (fo->copy->format == PRS_COPY_BINARY) {
        static const uint8_t trailer[2] = {0xff, 0xff};
        copy_out_binary(fo, trailer, sizeof trailer);
    }
    conn_send_msg(c, PGS_BE_COPY_DONE, NULL, 0);
}

/* The client's CommandComplete of a COPY: the shards' rows together. */
void px_fo_copy_complete(px_fanout *fo)
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
                px_fo_fail(fo, PGS_SQLSTATE_PROTOCOL_VIOLATION,
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
bool px_fo_copy_message(px_fanout *fo, int s, char type, const uint8_t *p, size_t total)
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
int px_fo_copy_init(px_fanout *fo, int key_index)
{
    fo->bufs = calloc((size_t)fo->nshards, sizeof *fo->bufs);
    fo->split = px_copy_split_new(fo->copy, key_index);
    if (!fo->bufs || !fo->split)
        return -1;
    px_copy_split_set_part_fn(fo->split, copy_part, fo);
    return 0;
}

/* A COPY FROM that failed on some shards after others committed their rows: the error
 * says which keep them (each shard's COPY is its own transaction). */
void px_fo_copy_failed_note(px_fanout *fo)
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
    if (px_fo_error_noted(fo->err.data, fo->err.len, note, &b) == 0) {
        pgs_buf_free(&fo->err);
        fo->err = b;
    } else {
        pgs_buf_free(&b);
    }
}

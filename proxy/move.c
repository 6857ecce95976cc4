/* The proxy's side of online shard moves (pgshard-migrate move), per worker: new
 * transactions for keys a freezing move holds wait in the worker's move.held list until a
 * newer map flips or unfreezes the move (or freeze_hold_ms passes), the open transactions
 * that may touch those keys on the move's source are counted so that the catalog thread
 * acknowledges the freeze once none is left, and what an active move or a lapsed catalog
 * lease forbids is refused. The moves themselves come with the map (shardmap/map.h); the
 * acknowledgement and the lease are the catalog thread's (catalog.c). */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "common/log.h"
#include "proxy/px.h"

static void move_on_timer(uv_timer_t *t);

int px_move_setup(px_worker *w)
{
    pgs_list_init(&w->move.held);
    int r = uv_timer_init(&w->loop, &w->move.timer);
    if (r < 0)
        return r;
    w->move.timer.data = w;
    w->move.timer_on = true;
    uv_unref((uv_handle_t *)&w->move.timer);
    w->move.hits = px_catalog_hits(w->px->cat, w->id, &w->move.nhits);
    return 0;
}

/* A statement routed by keys of bucket b (-1: of several) counts toward its load. */
static void move_count(px_worker *w, int64_t b)
{
    if (b >= 0 && (uint64_t)b < w->move.nhits)
        atomic_fetch_add_explicit(&w->move.hits[b], 1, memory_order_relaxed);
}

/* ---- held clients --------------------------------------------------------------------- */

static uint64_t held_pack(int64_t id, uint32_t n)
{
    return n ? (uint64_t)id << PX_MOVE_HELD_BITS | n : 0;
}

void px_move_held_count(px_client *cl, int delta)
{
    px_move_worker *mw = &cl->conn.w->move;
    atomic_store_explicit(&mw->nheld, (unsigned)((int)atomic_load(&mw->nheld) + delta), memory_order_relaxed);
    int free_slot = -1;
    for (int i = 0; i < PX_MOVE_SLOTS; i++) {
        uint64_t v = atomic_load_explicit(&mw->held_by[i], memory_order_relaxed);
        if (v == 0 && free_slot < 0)
            free_slot = i;
        if (v == 0 || (int64_t)(v >> PX_MOVE_HELD_BITS) != cl->hold_move)
            continue;
        uint32_t n = (uint32_t)(v & ((1u << PX_MOVE_HELD_BITS) - 1));
        atomic_store_explicit(&mw->held_by[i], held_pack(cl->hold_move, (uint32_t)((int)n + delta)),
                              memory_order_relaxed);
        return;
    }
    if (delta > 0 && free_slot >= 0)
        atomic_store_explicit(&mw->held_by[free_slot], held_pack(cl->hold_move, 1), memory_order_relaxed);
}

unsigned px_move_held(const px_proxy *px, int64_t id)
{
    unsigned n = 0;
    for (int w = 0; w < px->nworkers; w++) {
        const px_move_worker *mw = &px->workers[w].move;
        if (id == 0) {
            n += atomic_load_explicit(&mw->nheld, memory_order_relaxed);
            continue;
        }
        for (int i = 0; i < PX_MOVE_SLOTS; i++) {
            uint64_t v = atomic_load_explicit(&mw->held_by[i], memory_order_relaxed);
            if (v && (int64_t)(v >> PX_MOVE_HELD_BITS) == id)
                n += (unsigned)(v & ((1u << PX_MOVE_HELD_BITS) - 1));
        }
    }
    return n;
}

/* The timer fires when the earliest held client's freeze_hold_ms is over. */
static void move_arm_timer(px_worker *w, uint64_t due)
{
    uint64_t now = uv_now(&w->loop), in = due > now ? due - now : 0;
    if (uv_is_active((uv_handle_t *)&w->move.timer) && uv_timer_get_due_in(&w->move.timer) <= in)
        return;
    uv_timer_start(&w->move.timer, move_on_timer, in, 0);
}

static int move_refuse_held(px_client *cl)
{
    char msg[200];
    snprintf(msg, sizeof msg,
             "pgshard: tenant key is being moved to shard %d (move %" PRId64
             ") and was held for freeze_hold_ms "
             "(%u ms); retry",
             cl->hold_target, cl->hold_move, cl->conn.w->conf->cfg->freeze_hold_ms);
    atomic_fetch_add_explicit(&cl->conn.w->px->gs.move_hold_timeouts, 1, memory_order_relaxed);
    pgs_info("move_hold_timeout", "client %08x: held %" PRIu64 " ms for move %" PRId64 ": refused",
             cl->key_pid, uv_now(&cl->conn.w->loop) - cl->hold_since, cl->hold_move);
    cl->hold_since = 0;
    return px_route_refuse(cl, PGS_SQLSTATE_OBJECT_NOT_IN_PREREQUISITE_STATE, msg);
}

/* Holds a new transaction whose key a freezing move holds back: the client waits, its
 * statement unread, until a newer map routes it again (px_move_on_map) or its time is up. */
static int move_hold(px_client *cl, int64_t move, int target)
{
    px_worker *w = cl->conn.w;
    uint64_t now = uv_now(&w->loop), limit = w->conf->cfg->freeze_hold_ms;
    if (!cl->hold_since) {
        cl->hold_since = now;
        atomic_fetch_add_explicit(&w->px->gs.move_held, 1, memory_order_relaxed);
        pgs_debug("move_held", "client %08x: held for move %" PRId64, cl->key_pid, move);
    }
    cl->hold_move = move;
    cl->hold_target = target;
    if (now - cl->hold_since >= limit)
        return move_refuse_held(cl) < 0 ? -1 : PX_MOVE_REFUSED;
    px_client_set_state(cl, CL_WAIT_SERVER, &w->move.held);
    move_arm_timer(w, cl->hold_since + limit);
    return PX_MOVE_HELD;
}

/* Moves the held clients (all, or those whose freeze_hold_ms is over) into `out`, still
 * CL_WAIT_SERVER, so that routing them again cannot meet a client twice. */
static void move_take_held(px_worker *w, pgs_list *out, bool expired_only)
{
    uint64_t now = uv_now(&w->loop), limit = w->conf->cfg->freeze_hold_ms;
    pgs_node *it, *tmp;
    pgs_list_init(out);
    pgs_list_each (&w->move.held, it, tmp) {
        px_client *cl = pgs_container_of(it, px_client, wait_node);
        if (!expired_only || now - cl->hold_since >= limit)
            px_client_set_state(cl, CL_WAIT_SERVER, out);
    }
}

/* Each client taken goes through its input pass again: routed anew with the newest map
 * (held again, sent to the source or the target), or answered with its refusal. */
static void move_run_taken(pgs_list *taken, bool refuse)
{
    pgs_node *n;
    while ((n = pgs_list_first(taken))) {
        px_client *cl = pgs_container_of(n, px_client, wait_node);
        px_client_set_state(cl, CL_IDLE, NULL);
        if (refuse && move_refuse_held(cl) < 0) {
            px_client_fatal(cl, PGS_SQLSTATE_OUT_OF_MEMORY, "out of memory");
            continue;
        }
        px_client_process(cl);
    }
}

static void move_on_timer(uv_timer_t *t)
{
    px_worker *w = t->data;
    pgs_list expired;
    move_take_held(w, &expired, true);
    move_run_taken(&expired, true);
    uint64_t first = UINT64_MAX;
    pgs_node *it, *tmp;
    pgs_list_each (&w->move.held, it, tmp) {
        px_client *cl = pgs_container_of(it, px_client, wait_node);
        first = cl->hold_since < first ? cl->hold_since : first;
    }
    if (first != UINT64_MAX)
        move_arm_timer(w, first + w->conf->cfg->freeze_hold_ms);
}

bool px_move_cancel(px_client *cl)
{
    if (cl->wait_list != &cl->conn.w->move.held)
        return false;
    px_client_set_state(cl, CL_IDLE, NULL);
    cl->hold_since = 0;
    if (px_route_refuse(cl, PGS_SQLSTATE_QUERY_CANCELED, "canceling statement due to user request") < 0)
        px_client_fatal(cl, PGS_SQLSTATE_OUT_OF_MEMORY, "out of memory");
    else
        px_client_process(cl);
    return true;
}

/* ---- admission ------------------------------------------------------------------------ */

static int move_lease_refuse(px_client *cl)
{
    char msg[240];
    snprintf(msg, sizeof msg,
             "pgshard has not been able to read its catalog for %u ms; writes to sharded tables are refused "
             "while a move may be running",
             cl->conn.w->conf->cfg->catalog_lease_ms);
    atomic_fetch_add_explicit(&cl->conn.w->px->gs.lease_refusals, 1, memory_order_relaxed);
    return px_route_refuse(cl, PGS_SQLSTATE_CANNOT_CONNECT_NOW, msg) < 0 ? -1 : PX_MOVE_REFUSED;
}

/* What a statement tells of the keys its transaction touches (px_xact.route_bucket). */
static int64_t move_bucket_of(const px_sk_result *sk)
{
    if (sk->verdict != PX_SK_SHARD)
        return PX_MOVE_NO_KEY;
    return sk->has_key ? sk->bucket : -1;
}

int px_move_admit(px_client *cl, const px_sk_result *sk, bool lease_barred)
{
    /* A transaction over several shards that enters one more: it goes on, and so does what
     * a freeze knows of it. */
    bool multi = cl->x.nparked != 0;
    if (cl->x.move_wait && !multi)
        px_move_xact_done(cl);    /* counted while queued, then refused: a new transaction now */
    if (sk->frozen_move && multi) /* held, it would hold the servers the freeze waits for */
        return px_route_refuse(cl, PGS_SQLSTATE_SERIALIZATION_FAILURE,
                               "pgshard: a tenant of this transaction is being moved to another shard; "
                               "roll the transaction back and run it again") < 0
                   ? -1
                   : PX_MOVE_REFUSED;
    if (sk->frozen_move)
        return move_hold(cl, sk->frozen_move, (int)sk->frozen_target);
    cl->hold_since = 0;
    if (lease_barred)
        return move_lease_refuse(cl);
    cl->x.route_bucket = multi ? -1 : move_bucket_of(sk);
    move_count(cl->conn.w, cl->x.route_bucket);
    return PX_MOVE_GO;
}

/* The first active move of the newest map, or NULL. */
static const sm_move *move_active(px_worker *w)
{
    const sm_map *m = px_catalog_map(w->px->cat, w->id);
    return sm_map_move_count(m) ? sm_map_move(m, 0) : NULL;
}

int px_move_fanout_admit(px_client *cl, uint8_t mode, const px_sk_result *sk)
{
    px_worker *w = cl->conn.w;
    bool keyless_read = mode == PX_FAN_READ || mode == PX_FAN_COPY_OUT;
    bool ddl = sk->verdict == PX_SK_EVERY && sk->sharded_ddl;
    const sm_move *mv = keyless_read || ddl ? move_active(w) : NULL;
    if (mv) {
        char msg[320];
        snprintf(
            msg, sizeof msg,
            "pgshard: tenants are moving between shards (move %" PRId64 ", shard %" PRIu32 " to %" PRIu32
            "): %s waits until it is done; retry then%s",
            mv->id, mv->source, mv->target,
            ddl ? "DDL on a sharded table would not reach the move's copy of its rows, so it"
                : "a read of a sharded table without its key would count the moving rows on both shards, "
                  "so it",
            ddl ? "" : ", or name the tenant");
        return px_route_refuse(cl, PGS_SQLSTATE_OBJECT_NOT_IN_PREREQUISITE_STATE, msg);
    }
    bool writes =
        ddl || mode == PX_FAN_COPY_IN || sk->verdict == PX_SK_WRITE_ALL || sk->verdict == PX_SK_WRITE_SPLIT;
    /* A write on several shards may write frozen keys: it waits for the freeze to end like a
     * keyed one, then is split again by the newest map (freezes last milliseconds). */
    const sm_map *m = writes ? px_catalog_map(w->px->cat, w->id) : NULL;
    for (size_t i = 0; m && sm_map_freezing(m) && i < sm_map_move_count(m); i++) {
        const sm_move *f = sm_map_move(m, i);
        if (f->state == SM_MOVE_FREEZING) {
            int r = move_hold(cl, f->id, (int)f->target);
            return r == PX_MOVE_HELD ? PX_FANOUT_HELD : r == PX_MOVE_REFUSED ? 1 : -1;
        }
    }
    cl->hold_since = 0;
    if (writes && cl->x.lease_lapsed) /* as it was when routing began (px_route_acquire) */
        return move_lease_refuse(cl) == PX_MOVE_REFUSED ? 1 : -1;
    return 0;
}

/* ---- open transactions a freeze waits for --------------------------------------------- */

/* Tells the catalog thread that no open transaction here may touch what the map of
 * move.serial freezes. */
static void move_report(px_worker *w)
{
    if (w->move.blockers == 0)
        px_catalog_cleared(w->px->cat, w->id, w->move.serial, w->move.freezing);
}

void px_move_xact_done(px_client *cl)
{
    px_worker *w = cl->conn.w;
    cl->x.move_wait = false;
    if (w->move.blockers && --w->move.blockers == 0)
        move_report(w);
}

/* Whether the client runs (or is queued to run) a transaction that may touch keys m
 * freezes: on a freezing move's source, by a key of its buckets or tenant, or by keys it
 * cannot tell. A fan-out is on every shard; a server kept between transactions (session
 * state) runs nothing. */
static bool move_blocks(const sm_map *m, px_client *cl)
{
    if (cl->x.fan)
        return true;
    px_server *sv = px_client_server(cl);
    bool queued = cl->state == CL_WAIT_SERVER && cl->wait_list != &cl->conn.w->move.held;
    if (!queued && !cl->x.nparked && (!sv || (px_server_clean(sv) && cl->conn.pass_left == 0)))
        return false;
    if (cl->x.route_bucket == PX_MOVE_NO_KEY)
        return false;
    if (sm_map_frozen_on(m, (uint32_t)cl->x.one.shard, cl->x.route_bucket) >= 0)
        return true;
    /* a transaction over several shards: any shard it holds a server of */
    for (int s = 0; cl->x.nparked && s < cl->conn.w->conf->nshards; s++)
        if (cl->x.parked[s].sv && sm_map_frozen_on(m, (uint32_t)s, cl->x.route_bucket) >= 0)
            return true;
    return false;
}

static void move_scan(px_worker *w, const sm_map *m)
{
    pgs_node *it, *tmp;
    w->move.serial = sm_map_serial(m);
    w->move.freezing = sm_map_freezing(m);
    w->move.blockers = 0;
    pgs_list_each (&w->clients, it, tmp) {
        px_client *cl = pgs_container_of(it, px_client, node);
        cl->x.move_wait = w->move.freezing && move_blocks(m, cl);
        w->move.blockers += cl->x.move_wait;
    }
    if (w->move.blockers)
        pgs_debug("move_waits", "worker %d: %u open transactions may touch keys being frozen", w->id,
                  w->move.blockers);
    move_report(w);
}

void px_move_note(px_client *cl, const px_sk_result *sk)
{
    int64_t b = move_bucket_of(sk), *rb = &cl->x.route_bucket;
    px_worker *w = cl->conn.w;
    move_count(w, b);
    if (b == PX_MOVE_NO_KEY || b == *rb)
        return;
    *rb = *rb == PX_MOVE_NO_KEY ? b : -1;
    /* A transaction that now names a frozen key delays an acknowledgement not yet given. */
    if (w->move.freezing && w->move.blockers && !cl->x.move_wait &&
        move_blocks(px_catalog_map(w->px->cat, w->id), cl)) {
        cl->x.move_wait = true;
        w->move.blockers++;
    }
}

void px_move_on_map(px_worker *w)
{
    const sm_map *m = px_catalog_map(w->px->cat, w->id);
    if (sm_map_serial(m) == w->move.serial)
        return;
    pgs_list held;
    move_take_held(w, &held, false);
    move_run_taken(&held, false); /* routing takes the newest map itself */
    move_scan(w, px_catalog_map(w->px->cat, w->id));
}

void px_move_tick(px_worker *w)
{
    px_move_on_map(w);
}

static void move_map_job(px_worker *w, const px_job *job)
{
    (void)job;
    px_move_on_map(w);
}

/* The catalog thread's call after each map it publishes: every worker looks at it. */
static void move_tell_workers(void *arg)
{
    px_proxy *px = arg;
    px_job job = {move_map_job, NULL, 0, 0};
    for (int i = 0; i < px->nworkers; i++)
        px_worker_post(&px->workers[i], &job);
}

void px_move_attach(px_proxy *px)
{
    px_catalog_watch(px->cat, move_tell_workers, px);
}

void px_move_detach(px_proxy *px)
{
    px_catalog_watch(px->cat, NULL, NULL);
}

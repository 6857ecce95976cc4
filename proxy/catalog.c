/* The catalog listener (see catalog.h): the first map at start, then a thread with one
 * libpq connection to the catalog that waits in poll() for NOTIFY pgshard_map, reloads and
 * publishes maps (with their active moves) through hazard pointers (common/snap.h),
 * heartbeats, keeps the lease, acknowledges freezes once the workers say nothing of theirs
 * is in flight on the frozen keys, and reconnects with backoff. The SQL of the catalog lives in
 * shardmap/catalog.c; this file decides when to run it. Blocking libpq calls are fine here: only this thread
 * waits on them, and the connection's statement_timeout and TCP keepalives bound them. */
#include "proxy/catalog.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libpq-fe.h>
#include <uv.h>

#include "common/buf.h"
#include "common/log.h"
#include "common/snap.h"
#include "shardmap/catalog.h"

#define NS_PER_MS 1000000ull
#define CAT_CONNECT_TIMEOUT_S 2
#define CAT_STATEMENT_TIMEOUT "SET statement_timeout = 5000"
#define CAT_BEAT_MS 1000  /* heartbeat of the proxies row */
#define CAT_LOAD_MS 5000  /* statements per bucket added to pgshard.bucket_load */
#define CAT_CHECK_MS 2000 /* map_version compared, in case a NOTIFY was lost */
#define CAT_CHECK_MIN_MS 50
#define CAT_ACKED_MAX 16 /* freezes remembered as acknowledged, so none is acknowledged twice */
#define CAT_BACKOFF_MIN_MS 250
#define CAT_BACKOFF_MAX_MS 5000
#define CAT_WAIT_MAX_MS 1000
#define CAT_ERR_MAX 512
#define CAT_ID_MAX 320

struct px_catalog {
    const cfg_config *cfg; /* not owned; outlives the catalog */
    px_tables *tables;     /* owned */
    pgs_snap maps;         /* of sm_map, published by the thread (or once at start) */
    uv_thread_t thread;
    _Atomic uint64_t lease_until_ms; /* uv_hrtime in ms past which writes are refused; UINT64_MAX: never */
    _Atomic uint64_t *cleared;       /* owned, nreaders: px_catalog_cleared's serials */
    atomic_ullong acks;              /* freezes acknowledged */
    _Atomic uint32_t *hits;          /* owned with a catalog, nreaders x nbuckets: statements each
                                        worker routed by a key of each bucket (px_catalog_hits) */
    uint32_t nbuckets;
    uv_mutex_t watch_lock; /* guards watch_fn and watch_arg, and each call of watch_fn */
    px_catalog_watch_fn watch_fn;
    void *watch_arg;
    int wake[2]; /* owned self-pipe: the thread reads [0], px_catalog_stop writes [1] */
    int nreaders;
    bool enabled; /* catalog_dsn is set: the thread runs */
    atomic_bool connected;
    atomic_bool stop;
    bool running;
    bool watch_lock_on;

    /* The thread's alone once it runs. */
    PGconn *conn; /* owned; NULL while the catalog is away */
    uint64_t next_connect_ns, next_beat_ns, next_check_ns, next_load_ns;
    uint64_t *load; /* owned, nbuckets: counts taken from hits, not in the catalog yet */
    uint64_t rng;
    uint64_t serial; /* of the newest map published */
    struct {
        int64_t id;
        int32_t seq;
    } acked[CAT_ACKED_MAX]; /* a ring of freezes acknowledged */
    char id[CAT_ID_MAX];
    char host[256];
    char last_err[CAT_ERR_MAX]; /* the last load or heartbeat failure logged, to log each once */
    char notice[CAT_ERR_MAX];   /* the server's last notice: a FATAL before it closes says why */
    int pid;
    uint32_t backoff_ms;
    uint32_t check_ms; /* CAT_CHECK_MS, or less so that a check renews the lease in time */
    int nacked;
    bool down;   /* lost, and said so once: quiet until it is back */
    bool lapsed; /* the lease has lapsed and lease_lapsed was logged */
};

static void cat_map_free(void *p)
{
    sm_map_free(p);
}

static uint64_t cat_version(px_catalog *c)
{
    return sm_map_version(pgs_snap_current(&c->maps));
}

/* xorshift64*, for jitter only. */
static uint64_t cat_random(px_catalog *c)
{
    uint64_t x = c->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    c->rng = x;
    return x * 0x2545F4914F6CDD1Dull;
}

/* A failure worth a warning the first time; the same one again is only debug. */
static void cat_warn_once(px_catalog *c, const char *event, const char *msg)
{
    if (strcmp(c->last_err, msg) == 0) {
        pgs_debug(event, "%s", msg);
        return;
    }
    snprintf(c->last_err, sizeof(c->last_err), "%s", msg);
    pgs_warn(event, "%s", msg);
}

/* libpq hands asynchronous messages here (a FATAL sent before the server closes the
 * connection, as pg_terminate_backend does) instead of printing them on stderr. */
static void cat_notice(void *arg, const char *message)
{
    px_catalog *c = arg;
    pgs_log_flatten(c->notice, sizeof(c->notice), message);
    pgs_debug("catalog_notice", "%s", c->notice);
}

/* Connects, bounds every statement and LISTENs: a change committed after the LISTEN is
 * notified, so a load that follows it misses nothing. */
static PGconn *cat_open(px_catalog *c, char *err, size_t errlen)
{
    PGconn *conn =
        sm_catalog_connect(c->cfg->catalog_dsn, "pgshard_catalog", CAT_CONNECT_TIMEOUT_S, err, errlen);
    if (conn == NULL)
        return NULL;
    c->notice[0] = '\0';
    PQsetNoticeProcessor(conn, cat_notice, c);
    PGresult *res = PQexec(conn, CAT_STATEMENT_TIMEOUT "; LISTEN " SM_CATALOG_CHANNEL);
    bool ok = PQresultStatus(res) == PGRES_COMMAND_OK;
    if (!ok) {
        char msg[CAT_ERR_MAX / 2];
        pgs_log_flatten(msg, sizeof(msg), PQresultErrorMessage(res));
        snprintf(err, errlen, "LISTEN %s: %s", SM_CATALOG_CHANNEL, msg);
    }
    PQclear(res);
    if (!ok) {
        PQfinish(conn);
        return NULL;
    }
    return conn;
}

static int cat_load(const cfg_config *cfg, PGconn *conn, sm_map **out, char *err, size_t errlen)
{
    return sm_catalog_load(conn, (uint32_t)cfg->nshards, cfg->buckets, out, err, errlen);
}

static void cat_log_map(const char *event, const sm_map *m)
{
    pgs_info(event,
             "map_version %" PRIu64 ": %" PRIu32 " buckets over %" PRIu32 " shards, %zu tenant overrides",
             sm_map_version(m), sm_map_buckets(m), sm_map_nshards(m), sm_map_override_count(m));
}

/* ---- the thread ---- */

/* The next connect after a backoff that doubles up to 5 s, spread by +-25% so that proxies
 * that lost the catalog together do not reconnect in lockstep. */
static void cat_retry_later(px_catalog *c)
{
    uint64_t permille = 750 + cat_random(c) % 501;
    c->next_connect_ns = uv_hrtime() + (uint64_t)c->backoff_ms * NS_PER_MS * permille / 1000;
    c->backoff_ms = c->backoff_ms * 2 > CAT_BACKOFF_MAX_MS ? CAT_BACKOFF_MAX_MS : c->backoff_ms * 2;
}

/* The connection is gone (or useless): keep the map, say so once, and retry later. */
static void cat_lost(px_catalog *c, const char *why)
{
    char msg[CAT_ERR_MAX];
    pgs_log_flatten(msg, sizeof(msg), why); /* why may live in the connection closed next */
    PQfinish(c->conn);
    c->conn = NULL;
    atomic_store(&c->connected, false);
    if (!c->down)
        pgs_warn("catalog_lost", "catalog connection lost: %s; keeping map_version %" PRIu64 ", reconnecting",
                 msg, cat_version(c));
    else
        pgs_debug("catalog_still_down", "%s", msg);
    c->down = true;
    cat_retry_later(c);
}

/* After a failed statement: a broken connection is lost; a catalog that answers with an
 * error (an invalid map, a missing table) is logged once and the connection kept. */
static void cat_failed(px_catalog *c, const char *event, const char *err)
{
    if (PQstatus(c->conn) != CONNECTION_OK)
        cat_lost(c, err);
    else
        cat_warn_once(c, event, err);
}

/* A read of the catalog that started at start_ns succeeded: writes may go on until the lease
 * runs out after that start. */
static void cat_renew(px_catalog *c, uint64_t start_ns)
{
    uint32_t lease = c->cfg->catalog_lease_ms;
    if (!c->enabled || lease == 0)
        return;
    uint64_t until = start_ns / NS_PER_MS + lease;
    atomic_store(&c->lease_until_ms, until);
    if (!c->lapsed || until <= uv_hrtime() / NS_PER_MS)
        return; /* a read that started long ago (it waited on a lock) does not renew it */
    pgs_info("lease_renewed", "catalog read again: writes to sharded tables go on (map_version %" PRIu64 ")",
             cat_version(c));
    c->lapsed = false;
}

/* Says once that the lease has lapsed; the workers see it themselves. */
static void cat_lease_watch(px_catalog *c, uint64_t now)
{
    uint32_t lease = c->cfg->catalog_lease_ms;
    if (c->lapsed || !c->enabled || lease == 0 || now / NS_PER_MS < atomic_load(&c->lease_until_ms))
        return;
    c->lapsed = true;
    pgs_info("lease_lapsed",
             "pgshard has not been able to read its catalog for %" PRIu32
             " ms: writes to sharded tables are refused until it does",
             lease);
}

/* The move of the same id in m, or NULL. */
static const sm_move *cat_find_move(const sm_map *m, int64_t id)
{
    for (size_t i = 0; i < sm_map_move_count(m); i++)
        if (sm_map_move(m, i)->id == id)
            return sm_map_move(m, i);
    return NULL;
}

/* Logs the freezes next starts and ends against prev. */
static void cat_log_moves(const sm_map *prev, const sm_map *next)
{
    for (size_t i = 0; i < sm_map_move_count(next); i++) {
        const sm_move *mv = sm_map_move(next, i), *was = cat_find_move(prev, mv->id);
        if (mv->state == SM_MOVE_FREEZING &&
            (!was || was->state != SM_MOVE_FREEZING || was->freeze_seq != mv->freeze_seq))
            pgs_info("move_freeze_seen",
                     "move %" PRId64 " freezes (freeze_seq %" PRId32 "): %s from shard %" PRIu32
                     " to %" PRIu32 " are held",
                     mv->id, mv->freeze_seq,
                     mv->tenant ? "its tenant's transactions" : "its buckets' transactions", mv->source,
                     mv->target);
    }
    for (size_t i = 0; i < sm_map_move_count(prev); i++) {
        const sm_move *was = sm_map_move(prev, i), *mv = cat_find_move(next, was->id);
        if (was->state == SM_MOVE_FREEZING && (!mv || mv->state != SM_MOVE_FREEZING))
            pgs_info("move_unfreeze",
                     "move %" PRId64 " no longer freezes (%s, map_version %" PRIu64
                     "): held transactions go on",
                     was->id,
                     !mv                            ? "done or aborted"
                     : mv->state == SM_MOVE_FLIPPED ? "flipped"
                                                    : "unfrozen",
                     sm_map_version(next));
    }
}

/* Tells the workers (through px_catalog_watch's function) that a map was published. */
static void cat_tell(px_catalog *c)
{
    uv_mutex_lock(&c->watch_lock);
    if (c->watch_fn)
        c->watch_fn(c->watch_arg);
    uv_mutex_unlock(&c->watch_lock);
}

static void cat_publish(px_catalog *c, sm_map *m)
{
    cat_log_moves(pgs_snap_current(&c->maps), m);
    sm_map_set_serial(m, ++c->serial);
    pgs_snap_publish(&c->maps, m);
    cat_tell(c);
}

static void cat_reload(px_catalog *c)
{
    char err[CAT_ERR_MAX];
    sm_map *m = NULL;
    uint64_t start = uv_hrtime();
    if (cat_load(c->cfg, c->conn, &m, err, sizeof(err)) < 0) {
        char msg[CAT_ERR_MAX + 64];
        snprintf(msg, sizeof(msg), "catalog map not loaded, keeping map_version %" PRIu64 ": %s",
                 cat_version(c), err);
        cat_failed(c, "catalog_invalid", msg);
        return;
    }
    c->last_err[0] = '\0';
    const sm_map *cur = pgs_snap_current(&c->maps);
    if (sm_map_version(m) == sm_map_version(cur) && sm_map_moves_sig(m) == sm_map_moves_sig(cur)) {
        sm_map_free(m);
        cat_renew(c, start);
        return;
    }
    if (sm_map_version(m) != sm_map_version(cur)) {
        cat_log_map("map_loaded", m);
        c->next_beat_ns = 0; /* tell the catalog at once which version runs here */
    }
    /* The map first, then the lease: a worker that sees the renewed lease (it reads the
     * lease before it routes) routes by this map, never by the one it replaces. Renewed
     * first, a proxy continued after SIGSTOP wrote a moved key to its old shard in the gap. */
    cat_publish(c, m);
    cat_renew(c, start);
}

static void cat_beat(px_catalog *c, uint64_t now)
{
    char err[CAT_ERR_MAX];
    c->next_beat_ns = now + CAT_BEAT_MS * NS_PER_MS;
    if (sm_catalog_heartbeat(c->conn, c->id, c->host, c->pid, cat_version(c), err, sizeof(err)) < 0)
        cat_failed(c, "catalog_heartbeat_failed", err);
}

/* The version and the moves compared with the map in force: a change whose NOTIFY was lost
 * is loaded, and a catalog seen unchanged renews the lease. */
static void cat_check(px_catalog *c, uint64_t now)
{
    char err[CAT_ERR_MAX];
    uint64_t v, sig;
    const sm_map *cur = pgs_snap_current(&c->maps);
    c->next_check_ns = now + c->check_ms * NS_PER_MS;
    if (sm_catalog_state(c->conn, &v, &sig, err, sizeof(err)) < 0)
        cat_failed(c, "catalog_check_failed", err);
    else if (v != sm_map_version(cur) || sig != sm_map_moves_sig(cur))
        cat_reload(c);
    else
        cat_renew(c, now);
}

/* Moves the workers' counts into load and adds them to pgshard.bucket_load; kept for the
 * next time when the catalog does not take them. */
static void cat_report_load(px_catalog *c, uint64_t now)
{
    char err[CAT_ERR_MAX];
    c->next_load_ns = now + CAT_LOAD_MS * NS_PER_MS;
    if (c->hits == NULL)
        return;
    pgs_buf b = {0}, q = {0};
    for (uint32_t k = 0; k < c->nbuckets; k++) {
        for (int r = 0; r < c->nreaders; r++)
            c->load[k] +=
                atomic_exchange_explicit(&c->hits[(size_t)r * c->nbuckets + k], 0, memory_order_relaxed);
        if (c->load[k]) {
            pgs_buf_appendf(&b, "%c%" PRIu32, b.len ? ',' : '{', k);
            pgs_buf_appendf(&q, "%c%" PRIu64, q.len ? ',' : '{', c->load[k]);
        }
    }
    pgs_buf_append(&b, "}", 2);
    pgs_buf_append(&q, "}", 2);
    if (b.len > 2 && !pgs_buf_failed(&b) && !pgs_buf_failed(&q)) {
        if (sm_catalog_bucket_load(c->conn, (const char *)b.data, (const char *)q.data, err, sizeof(err)) < 0)
            cat_warn_once(c, "bucket_load_failed", err); /* a catalog from before bucket_load: init adds it */
        else
            memset(c->load, 0, c->nbuckets * sizeof *c->load);
    }
    pgs_buf_free(&b);
    pgs_buf_free(&q);
}

static bool cat_was_acked(const px_catalog *c, const sm_move *mv)
{
    for (int i = 0; i < c->nacked && i < CAT_ACKED_MAX; i++)
        if (c->acked[i].id == mv->id && c->acked[i].seq == mv->freeze_seq)
            return true;
    return false;
}

/* Whether every worker has said that none of its open transactions may touch what the map
 * of serial freezes (px_catalog_cleared). */
static bool cat_all_cleared(px_catalog *c, uint64_t serial)
{
    for (int i = 0; i < c->nreaders; i++)
        if (atomic_load(&c->cleared[i]) < serial)
            return false;
    return true;
}

/* Acknowledges each freeze of the newest map not acknowledged yet, once every worker has
 * cleared it: the row in migration_acks and NOTIFY pgshard_ack wake pgshard-migrate. */
static void cat_acks(px_catalog *c)
{
    char err[CAT_ERR_MAX];
    const sm_map *m = pgs_snap_current(&c->maps);
    if (c->conn == NULL || !sm_map_freezing(m) || !cat_all_cleared(c, sm_map_serial(m)))
        return;
    for (size_t i = 0; i < sm_map_move_count(m); i++) {
        const sm_move *mv = sm_map_move(m, i);
        if (mv->state != SM_MOVE_FREEZING || cat_was_acked(c, mv))
            continue;
        if (sm_catalog_ack(c->conn, mv->id, mv->freeze_seq, c->id, err, sizeof(err)) < 0) {
            cat_failed(c, "move_ack_failed", err);
            return;
        }
        c->acked[c->nacked++ % CAT_ACKED_MAX].id = mv->id;
        c->acked[(c->nacked - 1) % CAT_ACKED_MAX].seq = mv->freeze_seq;
        atomic_fetch_add(&c->acks, 1);
        pgs_info("move_ack",
                 "move %" PRId64 " freeze_seq %" PRId32 ": no transaction here may touch its keys on "
                 "shard %" PRIu32 "; acknowledged as %s",
                 mv->id, mv->freeze_seq, mv->source, c->id);
    }
}

static void cat_reconnect(px_catalog *c)
{
    char err[CAT_ERR_MAX];
    c->conn = cat_open(c, err, sizeof(err));
    if (c->conn == NULL) {
        /* Still away: the warning was given when it went. */
        pgs_debug("catalog_connect_failed", "%s; next try in about %" PRIu32 " ms", err, c->backoff_ms);
        cat_retry_later(c);
        return;
    }
    atomic_store(&c->connected, true);
    if (c->down)
        pgs_info("catalog_reconnected", "catalog connection back; listening on %s", SM_CATALOG_CHANNEL);
    c->down = false;
    c->backoff_ms = CAT_BACKOFF_MIN_MS;
    c->next_beat_ns = 0;
    c->next_check_ns = uv_hrtime() + c->check_ms * NS_PER_MS;
    cat_reload(c); /* whatever changed while it was away */
}

/* Notifications already read by libpq: any on our channel means "reload". */
static bool cat_take_notifies(px_catalog *c)
{
    bool any = false;
    PGnotify *n;
    while ((n = PQnotifies(c->conn)) != NULL) {
        any = any || strcmp(n->relname, SM_CATALOG_CHANNEL) == 0;
        PQfreemem(n);
    }
    return any;
}

/* The socket is readable: a notification, or the server closing the connection
 * (shutdown, pg_terminate_backend). A notification read here is queued in libpq for
 * cat_notified, like one read with the answer to a statement of ours. */
static void cat_input(px_catalog *c)
{
    if (!PQconsumeInput(c->conn) || PQstatus(c->conn) != CONNECTION_OK) {
        char msg[CAT_ERR_MAX];
        pgs_log_flatten(msg, sizeof(msg), c->notice[0] ? c->notice : PQerrorMessage(c->conn));
        cat_lost(c, msg[0] ? msg : "connection closed");
    }
}

/* Reloads when a notification waits in libpq's queue. One that arrives while this thread
 * runs a statement (a heartbeat, a check, the load of the change before) is read with that
 * statement's answer and leaves nothing on the socket for poll() to wake up for, so the
 * queue is looked at before every wait, not only after the socket was readable; else such a
 * change waited for the next version check, up to 2 s. Returns whether it reloaded. */
static bool cat_notified(px_catalog *c)
{
    if (c->conn == NULL || !cat_take_notifies(c))
        return false;
    pgs_debug("catalog_notify", "NOTIFY %s: reloading the map", SM_CATALOG_CHANNEL);
    cat_reload(c);
    return true;
}

static int cat_wait_ms(px_catalog *c, uint64_t now)
{
    uint64_t wake = now + CAT_WAIT_MAX_MS * NS_PER_MS;
    uint64_t lapse = atomic_load(&c->lease_until_ms);
    if (!c->lapsed && lapse != UINT64_MAX && lapse * NS_PER_MS < wake)
        wake = lapse * NS_PER_MS; /* to say lease_lapsed on time */
    uint64_t next = c->conn != NULL
                        ? (c->next_beat_ns < c->next_check_ns ? c->next_beat_ns : c->next_check_ns)
                        : c->next_connect_ns;
    if (c->conn != NULL && c->next_load_ns < next)
        next = c->next_load_ns;
    if (next < wake)
        wake = next;
    return wake <= now ? 0 : (int)((wake - now + NS_PER_MS - 1) / NS_PER_MS);
}

static void cat_wait(px_catalog *c)
{
    struct pollfd pfd[2] = {{.fd = c->wake[0], .events = POLLIN}, {.fd = -1}};
    int n = 1;
    if (c->conn != NULL)
        pfd[n++] = (struct pollfd){.fd = PQsocket(c->conn), .events = POLLIN};
    int rc = poll(pfd, (nfds_t)n, cat_wait_ms(c, uv_hrtime()));
    if (rc < 0 && errno != EINTR) {
        pgs_error("catalog_poll_failed", "poll: %s", strerror(errno));
        uv_sleep(100);
        return;
    }
    if (rc > 0 && pfd[0].revents != 0) {
        char buf[64];
        while (read(c->wake[0], buf, sizeof(buf)) > 0)
            ;
    }
    if (rc > 0 && n > 1 && pfd[1].revents != 0)
        cat_input(c);
}

static void cat_main(void *arg)
{
    px_catalog *c = arg;
    while (!atomic_load(&c->stop)) {
        uint64_t now = uv_hrtime();
        cat_lease_watch(c, now); /* first: a process continued after SIGSTOP says it lapsed */
        if (c->conn == NULL && now >= c->next_connect_ns)
            cat_reconnect(c);
        if (c->conn != NULL && now >= c->next_beat_ns)
            cat_beat(c, now);
        if (c->conn != NULL && now >= c->next_check_ns)
            cat_check(c, now);
        if (c->conn != NULL && now >= c->next_load_ns)
            cat_report_load(c, now);
        if (cat_notified(c))
            continue; /* the reload's own statements may have queued another */
        cat_acks(c);
        cat_wait(c);
    }
    if (c->conn != NULL) {
        char err[CAT_ERR_MAX];
        cat_report_load(c, uv_hrtime()); /* the workers have stopped: their last counts */
        if (sm_catalog_forget(c->conn, c->id, err, sizeof(err)) < 0)
            pgs_debug("catalog_forget_failed", "%s", err);
        PQfinish(c->conn);
        c->conn = NULL;
    }
}

/* ---- life cycle ---- */

static void cat_free(px_catalog *c)
{
    PQfinish(c->conn);
    pgs_snap_destroy(&c->maps);
    free(c->cleared);
    free(c->hits);
    free(c->load);
    if (c->watch_lock_on)
        uv_mutex_destroy(&c->watch_lock);
    px_tables_free(c->tables);
    if (c->wake[0] >= 0)
        close(c->wake[0]);
    if (c->wake[1] >= 0)
        close(c->wake[1]);
    free(c);
}

/* host:pid:listen_port names this proxy in pgshard.proxies. */
static void cat_identify(px_catalog *c)
{
    if (gethostname(c->host, sizeof(c->host)) < 0)
        snprintf(c->host, sizeof(c->host), "unknown");
    c->host[sizeof(c->host) - 1] = '\0';
    c->pid = (int)getpid();
    snprintf(c->id, sizeof(c->id), "%s:%d:%u", c->host, c->pid, (unsigned)c->cfg->listen_port);
}

/* The first map: the catalog's (which must be there and valid), or the default one. */
static int cat_first_map(px_catalog *c, sm_map **out, char *err, size_t errlen)
{
    char why[CAT_ERR_MAX];
    if (!c->enabled) {
        int rc = sm_map_new_default(out, (uint32_t)c->cfg->nshards, c->cfg->buckets);
        if (rc < 0)
            snprintf(err, errlen, "shard map: %s", sm_strerror(rc));
        return rc < 0 ? -1 : 0;
    }
    if ((c->conn = cat_open(c, why, sizeof(why))) == NULL) {
        snprintf(err, errlen, "catalog (catalog_dsn): cannot connect: %s", why);
        return -1;
    }
    if (cat_load(c->cfg, c->conn, out, why, sizeof(why)) < 0) {
        snprintf(err, errlen, "catalog (catalog_dsn): %s", why);
        return -1;
    }
    return 0;
}

/* The thread starts with every signal blocked, so that signals reach the threads that
 * handle them and poll() here is not interrupted. */
static int cat_thread_start(px_catalog *c)
{
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int r = uv_thread_create(&c->thread, cat_main, c);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return r;
}

static int cat_start_thread(px_catalog *c, char *err, size_t errlen)
{
    if (pipe2(c->wake, O_NONBLOCK | O_CLOEXEC) < 0) {
        snprintf(err, errlen, "catalog: pipe: %s", strerror(errno));
        return -1;
    }
    atomic_store(&c->connected, true);
    c->backoff_ms = CAT_BACKOFF_MIN_MS;
    c->rng = (uv_hrtime() ^ (uint64_t)(uintptr_t)c) | 1;
    c->next_check_ns = uv_hrtime() + c->check_ms * NS_PER_MS;
    int r = cat_thread_start(c);
    if (r < 0) {
        snprintf(err, errlen, "catalog: thread: %s", uv_strerror(r));
        return -1;
    }
    c->running = true;
    return 0;
}

px_catalog *px_catalog_start(const cfg_config *cfg, int nreaders, char *err, size_t errlen)
{
    px_catalog *c = calloc(1, sizeof(*c));
    sm_map *first = NULL;
    if (c == NULL) {
        snprintf(err, errlen, "catalog: out of memory");
        return NULL;
    }
    c->wake[0] = c->wake[1] = -1;
    c->cfg = cfg;
    c->enabled = cfg->catalog_dsn != NULL;
    atomic_init(&c->stop, false);
    atomic_init(&c->connected, false);
    atomic_init(&c->lease_until_ms, UINT64_MAX);
    atomic_init(&c->acks, 0);
    /* A check every quarter of the lease keeps it renewed while the catalog answers. */
    uint32_t lease = cfg->catalog_lease_ms;
    c->check_ms = lease && lease / 4 < CAT_CHECK_MS ? lease / 4 : CAT_CHECK_MS;
    c->check_ms = c->check_ms < CAT_CHECK_MIN_MS ? CAT_CHECK_MIN_MS : c->check_ms;
    c->nreaders = nreaders;
    uint64_t first_read = uv_hrtime();
    cat_identify(c);
    c->watch_lock_on = uv_mutex_init(&c->watch_lock) == 0;
    if (!c->watch_lock_on || !(c->cleared = calloc((size_t)nreaders, sizeof *c->cleared))) {
        snprintf(err, errlen, "catalog: out of memory");
        goto fail;
    }
    if (px_tables_build(cfg, &c->tables, err, errlen) < 0 ||
        px_tables_resolve(c->tables, cfg, err, errlen) < 0 || cat_first_map(c, &first, err, errlen) < 0)
        goto fail;
    sm_map_set_serial(first, ++c->serial);
    if (pgs_snap_init(&c->maps, nreaders, first, cat_map_free) < 0) {
        snprintf(err, errlen, "catalog: out of memory");
        sm_map_free(first);
        goto fail;
    }
    cat_renew(c, first_read);
    cat_log_map(c->enabled ? "map_loaded" : "map_default", first);
    if (c->enabled) {
        c->nbuckets = sm_map_buckets(first);
        c->hits = calloc((size_t)nreaders * c->nbuckets, sizeof *c->hits);
        c->load = calloc(c->nbuckets, sizeof *c->load);
        if (!c->hits || !c->load) {
            snprintf(err, errlen, "catalog: out of memory");
            goto fail;
        }
        c->next_load_ns = uv_hrtime() + CAT_LOAD_MS * NS_PER_MS;
    }
    if (c->enabled && cat_start_thread(c, err, errlen) < 0)
        goto fail;
    return c;

fail:
    cat_free(c);
    return NULL;
}

void px_catalog_stop(px_catalog *c)
{
    if (c == NULL)
        return;
    if (c->running) {
        atomic_store(&c->stop, true);
        char one = 1;
        ssize_t r = write(c->wake[1], &one, 1);
        (void)r;
        uv_thread_join(&c->thread);
        c->running = false;
    }
    cat_free(c);
}

const sm_map *px_catalog_map(px_catalog *c, int reader)
{
    return pgs_snap_get(&c->maps, reader);
}

const px_tables *px_catalog_tables(const px_catalog *c)
{
    return c->tables;
}

bool px_catalog_enabled(const px_catalog *c)
{
    return c != NULL && c->enabled;
}

bool px_catalog_connected(const px_catalog *c)
{
    return c != NULL && atomic_load(&c->connected);
}

bool px_catalog_lease_lapsed(const px_catalog *c, uint64_t now_ms)
{
    return now_ms >= atomic_load_explicit(&c->lease_until_ms, memory_order_acquire);
}

void px_catalog_watch(px_catalog *c, px_catalog_watch_fn fn, void *arg)
{
    uv_mutex_lock(&c->watch_lock);
    c->watch_fn = fn;
    c->watch_arg = arg;
    if (fn)
        fn(arg); /* the map in force, which may already freeze keys */
    uv_mutex_unlock(&c->watch_lock);
}

void px_catalog_cleared(px_catalog *c, int reader, uint64_t serial, bool wake)
{
    atomic_store(&c->cleared[reader], serial);
    if (wake && c->running) {
        char one = 1;
        ssize_t r = write(c->wake[1], &one, 1); /* a full pipe wakes the thread anyway */
        (void)r;
    }
}

_Atomic uint32_t *px_catalog_hits(px_catalog *c, int reader, uint32_t *nbuckets)
{
    *nbuckets = c->hits ? c->nbuckets : 0;
    return c->hits ? c->hits + (size_t)reader * c->nbuckets : NULL;
}

unsigned long long px_catalog_acks(const px_catalog *c)
{
    return atomic_load(&c->acks);
}

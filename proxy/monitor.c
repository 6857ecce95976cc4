/* The monitor thread (see monitor.h): one non-blocking libpq connection per node, all driven
 * by one poll() loop so that a node that hangs costs only its own timeout; per-node circuits,
 * the primary's WAL samples, following a promotion, and publication of px_status snapshots
 * through hazard pointers. Which node serves a query is decided elsewhere, from snapshots. */
#include "proxy/monitor.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libpq-fe.h>
#include <uv.h>

#include "common/log.h"
#include "common/snap.h"

#define NS_PER_MS 1000000ull
#define MON_CONNECT_TIMEOUT_MS 2000
#define MON_QUERY_TIMEOUT_MIN_MS 1000
#define MON_QUERY_TIMEOUT_POLLS 5 /* a query may take this many poll intervals */
#define MON_BACKOFF_MAX_MS 10000
#define MON_DEFAULT_POLL_MS 100
#define MON_WAIT_MAX_MS 1000 /* poll() never sleeps longer, whatever the timers say */
#define MON_ERR_MAX 256
#define MON_PORT_MAX 8

/* pg_is_in_recovery() is read more than once; if a promotion lands between the reads the
 * answer is mixed, which the next poll corrects. A primary gives two positions: the flush
 * LSN, which a caught-up replica reaches exactly (lag is measured against it), and the
 * insert LSN, the read-your-writes bound: with synchronous_commit = off a commit returns
 * before its record is flushed, and on an idle primary the insert LSN may sit past a page
 * header no replica ever replays to. */
#define MON_POLL_SQL                                                                                         \
    "SELECT pg_is_in_recovery(), (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() "              \
    "ELSE pg_current_wal_flush_lsn() END)::text, "                                                           \
    "(CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_insert_lsn() END)::text"

/* Every MON_ISO_POLLS polls of a primary (and the first on each connection), the defaults of
 * default_transaction_isolation that ALTER ROLE / ALTER DATABASE ... SET left: a session
 * whose default they make serializable must not read on a hot standby. A row's role or
 * database is NULL for "every"; a role or database dropped meanwhile reads as "". One row
 * more than fits tells that some were left out. */
#define MON_ISO_SQL                                                                                          \
    "SELECT CASE WHEN s.setrole = 0 THEN NULL ELSE coalesce(r.rolname, '') END, "                            \
    "CASE WHEN s.setdatabase = 0 THEN NULL ELSE coalesce(d.datname, '') END, "                               \
    "lower(substr(c, strpos(c, '=') + 1)) FROM pg_db_role_setting s "                                        \
    "CROSS JOIN LATERAL unnest(s.setconfig) AS c LEFT JOIN pg_roles r ON r.oid = s.setrole "                 \
    "LEFT JOIN pg_database d ON d.oid = s.setdatabase "                                                      \
    "WHERE lower(split_part(c, '=', 1)) = 'default_transaction_isolation' LIMIT 33"
#define MON_ISO_POLLS 10

static const char mon_query[] = MON_POLL_SQL;
static const char mon_query_iso[] = MON_POLL_SQL "; " MON_ISO_SQL;

typedef enum mon_phase {
    MON_IDLE,       /* no connection */
    MON_CONNECTING, /* PQconnectPoll until it says OK or FAILED */
    MON_READY,      /* connected, no query running */
    MON_QUERYING,   /* the poll query is out; waiting for its results */
} mon_phase;

static const char *const mon_phase_names[] = {"idle", "connecting", "ready", "querying"};

typedef struct mon_node {
    int shard;
    int index;        /* 0 = the configured primary, i = replicas[i-1] */
    const char *host; /* not owned: the cfg's */
    char port[MON_PORT_MAX];
    PGconn *conn;         /* owned; NULL in MON_IDLE */
    mon_phase phase;      /* changed only by mon_set_phase */
    short events;         /* what poll() waits for while connecting or querying */
    uint64_t deadline_ns; /* end of the running connect or query */
    uint64_t next_poll_ns;
    uint64_t open_until_ns; /* while the circuit is open */
    uint64_t sent_ns;       /* uv_hrtime() just before the running query was sent */
    bool got_row;           /* the running query returned its row: */
    bool row_in_recovery;
    uint64_t row_lsn;
    uint64_t row_insert;   /* a primary's insert LSN, 0 for a node in recovery */
    char err[MON_ERR_MAX]; /* why the running query failed; "" while it has not */
    atomic_bool reported;  /* a worker saw this node fail: poll it now */
    uint32_t polls;        /* queries sent on this connection */
    int nresults;          /* results of the running query so far */
    bool iso_asked;        /* the running query reads pg_db_role_setting too */
    bool iso_warned;       /* reading it failed once: said so */
    int niso;              /* entries of iso[] it returned; -1 while it has not */
    px_iso_default iso[PX_ISO_DEFAULTS_MAX];
} mon_node;

struct px_monitor {
    const cfg_config *cfg; /* not owned; outlives the monitor */
    const cfg_user *user;  /* not owned: cfg's; NULL = nothing is polled */
    int nreaders;
    uint32_t poll_ms;
    uint64_t interval_ns;
    uint64_t query_timeout_ns;

    /* Shared with readers. */
    pgs_snap snap;               /* the px_status snapshots: newest, retired, hazard slots */
    atomic_ullong *reads;        /* owned: nshards * PX_MAX_NODES counters */
    atomic_bool reports_pending; /* some node's `reported` is set */
    atomic_bool stop;
    int wake[2]; /* owned self-pipe: the thread reads [0], anyone writes [1] */

    /* The monitor thread's alone once it runs. */
    uint64_t gen;
    uint64_t iso_gen;      /* changes of any shard's iso defaults */
    px_shard_status *work; /* owned: nshards; the state the next snapshot copies */
    mon_node *nodes;       /* owned: nnodes, shard after shard */
    int *first;            /* owned: nshards; index in nodes[] of each shard's node 0 */
    int nnodes;
    struct pollfd *pfds; /* owned: nnodes + 1, [0] the wake pipe */
    mon_node **pfd_node; /* owned: nnodes + 1; the node of each pfds entry */
    uint64_t rng;
    uint64_t published_ns;
    bool dirty;  /* results arrived since the last snapshot */
    bool urgent; /* health, circuit, recovery or primary changed: publish now */

    bool running;
    uv_thread_t thread;
};

static px_node_status *mon_status(px_monitor *m, const mon_node *n)
{
    return &m->work[n->shard].nodes[n->index];
}

static void mon_set_phase(mon_node *n, mon_phase to)
{
    if (n->phase == to)
        return;
    pgs_debug("monitor_node_phase", "shard %d node %d (%s:%s): %s -> %s", n->shard, n->index, n->host,
              n->port, mon_phase_names[n->phase], mon_phase_names[to]);
    n->phase = to;
}

/* xorshift64*: jitter needs no quality, only independence from other processes' clocks. */
static uint64_t mon_random(px_monitor *m)
{
    uint64_t x = m->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    m->rng = x;
    return x * 0x2545F4914F6CDD1Dull;
}

/* lag_poll_ms doubled per consecutive failure up to 10 s, then spread by +-25% so that nodes
 * that failed together (a partition, a restarted host) are not probed in lockstep. */
static uint64_t mon_backoff_ns(px_monitor *m, uint32_t failures)
{
    uint64_t ms = MON_BACKOFF_MAX_MS;
    uint32_t shift = failures > 0 ? failures - 1 : 0;
    if (shift < 32 && ((uint64_t)m->poll_ms << shift) < ms)
        ms = (uint64_t)m->poll_ms << shift;
    uint64_t permille = 750 + mon_random(m) % 501;
    return ms * NS_PER_MS * permille / 1000;
}

/* libpq's messages end in a newline and may hold more lines; a log line holds one. */
static void mon_copy_message(char *dst, size_t len, const char *msg)
{
    size_t j = 0;
    bool space = false;
    for (size_t i = 0; msg != NULL && msg[i] != '\0' && j + 1 < len; i++) {
        bool ws = msg[i] == '\n' || msg[i] == '\t' || msg[i] == '\r' || msg[i] == ' ';
        if (ws) {
            space = j > 0;
            continue;
        }
        if (space && j + 2 < len)
            dst[j++] = ' ';
        space = false;
        dst[j++] = msg[i];
    }
    dst[j] = '\0';
}

static void mon_wake(px_monitor *m)
{
    char c = 1;
    ssize_t r = write(m->wake[1], &c, 1); /* EAGAIN: a wake-up is pending anyway */
    (void)r;
}

static void mon_drain(px_monitor *m)
{
    char buf[64];
    while (read(m->wake[0], buf, sizeof buf) > 0)
        ;
}

/* ---- snapshots ---- */

static void mon_fill_lag(px_shard_status *sh, uint64_t now)
{
    uint64_t newest = sh->nsamples > 0 ? sh->samples[sh->nsamples - 1].lsn : 0;
    for (int i = 0; i < sh->nnodes; i++) {
        px_node_status *st = &sh->nodes[i];
        if (i == sh->primary) {
            st->lag_bytes = 0;
            st->lag_ms = 0;
            continue;
        }
        st->lag_bytes = newest > st->lsn ? newest - st->lsn : 0;
        st->lag_ms = px_status_lag_ms(sh->samples, sh->nsamples, st->lsn, now);
    }
    const px_node_status *p = &sh->nodes[sh->primary];
    sh->primary_ok = p->health != PX_NODE_DOWN && !p->in_recovery;
}

static px_status *mon_snapshot(px_monitor *m, uint64_t now)
{
    int n = m->cfg->nshards;
    px_status *st = malloc(sizeof *st + (size_t)n * sizeof st->shards[0]);
    if (st == NULL)
        return NULL;
    st->gen = ++m->gen;
    st->made_ns = now;
    st->nshards = n;
    st->any_iso = false;
    st->iso_gen = m->iso_gen;
    for (int s = 0; s < n; s++) {
        st->shards[s] = m->work[s];
        mon_fill_lag(&st->shards[s], now);
        st->any_iso = st->any_iso || st->shards[s].niso > 0;
    }
    return st;
}

static void mon_publish(px_monitor *m, uint64_t now)
{
    px_status *st = mon_snapshot(m, now);
    if (st == NULL) {
        pgs_error("out_of_memory", "monitor: no memory for a status snapshot; readers keep the old one");
        return; /* dirty and urgent stay set: the next turn tries again */
    }
    pgs_snap_publish(&m->snap, st); /* the old one is freed once no worker holds it */
    m->published_ns = now;
    m->dirty = false;
    m->urgent = false;
}

/* ---- one node's poll ---- */

static void mon_close(mon_node *n)
{
    if (n->conn != NULL)
        PQfinish(n->conn);
    n->conn = NULL;
    n->polls = 0;
    mon_set_phase(n, MON_IDLE);
}

static void mon_fail(px_monitor *m, mon_node *n, uint64_t now, const char *why)
{
    char msg[MON_ERR_MAX];
    mon_copy_message(msg, sizeof msg, why); /* why may live in the PGconn closed next */
    mon_close(n);

    px_node_status *st = mon_status(m, n);
    bool was_down = st->health == PX_NODE_DOWN;
    st->health = PX_NODE_DOWN;
    if (st->failures < UINT32_MAX)
        st->failures++;
    uint64_t backoff = mon_backoff_ns(m, st->failures);
    st->circuit = PX_CIRCUIT_OPEN;
    n->open_until_ns = now + backoff;
    m->urgent = true;
    if (!was_down)
        pgs_warn("node_down", "shard %d node %d (%s:%s): %s; next try in %llu ms", n->shard, n->index,
                 n->host, n->port, msg, (unsigned long long)(backoff / NS_PER_MS));
    else
        pgs_debug("node_still_down", "shard %d node %d (%s:%s): failure %u: %s; next try in %llu ms",
                  n->shard, n->index, n->host, n->port, st->failures, msg,
                  (unsigned long long)(backoff / NS_PER_MS));
}

/* Samples are kept oldest first with LSNs that never decrease, which status.c's binary
 * searches rely on. A smaller LSN means another server (or a restore) answers as primary:
 * the old samples say nothing about its WAL, so they go. */
static void mon_sample_add(px_shard_status *sh, uint64_t t_ns, uint64_t lsn, uint64_t insert)
{
    if (sh->nsamples > 0 && lsn < sh->samples[sh->nsamples - 1].lsn)
        sh->nsamples = 0;
    if (sh->nsamples == PX_LSN_SAMPLES) {
        memmove(&sh->samples[0], &sh->samples[1], (PX_LSN_SAMPLES - 1) * sizeof sh->samples[0]);
        sh->nsamples--;
    }
    sh->samples[sh->nsamples++] = (px_lsn_sample){.t_ns = t_ns, .lsn = lsn, .insert = insert};
}

static bool mon_iso_same(const px_iso_default *a, const px_iso_default *b, int n)
{
    for (int i = 0; i < n; i++)
        if (a[i].role != b[i].role || a[i].db != b[i].db || a[i].serializable != b[i].serializable)
            return false;
    return true;
}

static void mon_iso_update(px_monitor *m, px_shard_status *sh, const mon_node *n)
{
    if (sh->niso == n->niso && mon_iso_same(sh->iso, n->iso, n->niso))
        return;
    int ser = 0;
    for (int i = 0; i < n->niso; i++)
        ser += n->iso[i].serializable;
    pgs_info("iso_defaults",
             "shard %d: %d default%s of default_transaction_isolation set by ALTER ROLE/DATABASE, "
             "%d serializable (their sessions read on the primary)",
             n->shard, n->niso, n->niso == 1 ? "" : "s", ser);
    memcpy(sh->iso, n->iso, (size_t)n->niso * sizeof sh->iso[0]);
    sh->niso = n->niso;
    m->iso_gen++;
    m->urgent = true;
}

static void mon_succeed(px_monitor *m, mon_node *n, uint64_t now)
{
    px_node_status *st = mon_status(m, n);
    px_shard_status *sh = &m->work[n->shard];
    bool rec = n->row_in_recovery;
    if (st->health != PX_NODE_UP || st->circuit != PX_CIRCUIT_CLOSED || st->in_recovery != rec)
        m->urgent = true;
    if (st->health != PX_NODE_UP)
        pgs_info("node_up", "shard %d node %d (%s:%s): up, %s at %X/%X", n->shard, n->index, n->host, n->port,
                 rec ? "in recovery" : "not in recovery", (unsigned)(n->row_lsn >> 32), (unsigned)n->row_lsn);
    st->health = PX_NODE_UP;
    st->circuit = PX_CIRCUIT_CLOSED;
    st->failures = 0;
    st->in_recovery = rec;
    st->lsn = n->row_lsn;
    st->polled_ns = now;
    /* A node in recovery reports its replay position, which bounds nobody's commit. */
    if (n->index == sh->primary && !rec)
        mon_sample_add(sh, n->sent_ns, n->row_lsn, n->row_insert);
    if (n->index == sh->primary && n->niso >= 0)
        mon_iso_update(m, sh, n);
    m->dirty = true;
}

static void mon_query_send(px_monitor *m, mon_node *n, uint64_t now)
{
    /* The sample's time is taken before the query leaves. A commit that completed before
     * sent_ns is then covered by the LSN this query returns, because the server reads its
     * WAL position only after the query has reached it. A time taken after the send (or when
     * the answer arrives) could postdate commits the returned LSN does not cover, and
     * read-your-writes would send a client to a replica that has not got its write. */
    n->iso_asked = n->index == m->work[n->shard].primary && n->polls++ % MON_ISO_POLLS == 0;
    n->nresults = 0;
    n->niso = -1;
    n->sent_ns = uv_hrtime();
    if (!PQsendQuery(n->conn, n->iso_asked ? mon_query_iso : mon_query)) {
        mon_fail(m, n, now, PQerrorMessage(n->conn));
        return;
    }
    int f = PQflush(n->conn);
    if (f < 0) {
        mon_fail(m, n, now, PQerrorMessage(n->conn));
        return;
    }
    n->events = f > 0 ? (POLLIN | POLLOUT) : POLLIN;
    n->deadline_ns = n->sent_ns + m->query_timeout_ns;
    n->got_row = false;
    n->err[0] = '\0';
    mon_set_phase(n, MON_QUERYING);
}

static void mon_notice(void *arg, const char *message)
{
    const mon_node *n = arg;
    pgs_debug("monitor_notice", "shard %d node %d (%s:%s): %s", n->shard, n->index, n->host, n->port,
              message);
}

static void mon_connect_start(px_monitor *m, mon_node *n, uint64_t now)
{
    cfg_conninfo ci;
    cfg_conninfo_make(&ci, m->cfg, n->host, n->port, m->user, m->cfg->monitor_dbname, "pgshard_monitor", NULL,
                      NULL);
    n->conn = PQconnectStartParams(ci.keys, ci.vals, 0);
    if (n->conn == NULL) {
        mon_fail(m, n, now, "out of memory");
        return;
    }
    if (PQstatus(n->conn) == CONNECTION_BAD) {
        mon_fail(m, n, now, PQerrorMessage(n->conn));
        return;
    }
    PQsetNoticeProcessor(n->conn, mon_notice, n);
    n->events = POLLOUT; /* as libpq documents for a connection not yet polled */
    n->deadline_ns = now + MON_CONNECT_TIMEOUT_MS * NS_PER_MS;
    mon_set_phase(n, MON_CONNECTING);
}

static void mon_connect_io(px_monitor *m, mon_node *n, uint64_t now)
{
    switch (PQconnectPoll(n->conn)) {
    case PGRES_POLLING_READING:
        n->events = POLLIN;
        return;
    case PGRES_POLLING_WRITING:
        n->events = POLLOUT;
        return;
    case PGRES_POLLING_OK:
        if (PQsetnonblocking(n->conn, 1) != 0) {
            mon_fail(m, n, now, PQerrorMessage(n->conn));
            return;
        }
        mon_set_phase(n, MON_READY);
        mon_query_send(m, n, now);
        return;
    default:
        mon_fail(m, n, now, PQerrorMessage(n->conn));
        return;
    }
}

static uint64_t mon_iso_key(const PGresult *res, int row, int col)
{
    return PQgetisnull(res, row, col) ? 0 : px_status_name_key(PQgetvalue(res, row, col));
}

/* The second result of a query that asked for the isolation defaults. Its failure (a
 * monitor user that may not read the catalog) leaves the last answer and the node's health
 * alone. */
static void mon_take_iso(mon_node *n, const PGresult *res)
{
    int rows = PQntuples(res);
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQnfields(res) != 3 || rows > PX_ISO_DEFAULTS_MAX) {
        char why[MON_ERR_MAX] = "more rows than pgshard keeps";
        if (PQresultStatus(res) != PGRES_TUPLES_OK)
            mon_copy_message(why, sizeof why, PQresultErrorMessage(res));
        if (!n->iso_warned)
            pgs_warn("iso_defaults_unread",
                     "shard %d node %d (%s:%s): the defaults of default_transaction_isolation in "
                     "pg_db_role_setting are not known (%s): a role or database made serializable "
                     "by ALTER ROLE/DATABASE ... SET gets errors 0A000 from hot standbys",
                     n->shard, n->index, n->host, n->port, why);
        n->iso_warned = true;
        return;
    }
    for (int i = 0; i < rows; i++) {
        n->iso[i].role = mon_iso_key(res, i, 0);
        n->iso[i].db = mon_iso_key(res, i, 1);
        n->iso[i].serializable = strstr(PQgetvalue(res, i, 2), "serializable") != NULL;
    }
    n->niso = rows;
}

static void mon_take_result(mon_node *n, const PGresult *res)
{
    if (n->nresults++ == 1 && n->iso_asked) {
        mon_take_iso(n, res);
        return;
    }
    if (n->err[0] != '\0')
        return;
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        mon_copy_message(n->err, sizeof n->err, PQresultErrorMessage(res));
        if (n->err[0] == '\0')
            snprintf(n->err, sizeof n->err, "poll query: %s", PQresStatus(PQresultStatus(res)));
        return;
    }
    if (PQntuples(res) != 1 || PQnfields(res) != 3 || PQgetisnull(res, 0, 0)) {
        snprintf(n->err, sizeof n->err, "poll query: unexpected answer");
        return;
    }
    uint64_t lsn = 0; /* a replica that has replayed nothing yet answers NULL */
    if (!PQgetisnull(res, 0, 1) && px_lsn_parse(PQgetvalue(res, 0, 1), &lsn) < 0) {
        snprintf(n->err, sizeof n->err, "poll query: not an LSN: \"%.64s\"", PQgetvalue(res, 0, 1));
        return;
    }
    uint64_t insert = 0;
    if (!PQgetisnull(res, 0, 2) && px_lsn_parse(PQgetvalue(res, 0, 2), &insert) < 0) {
        snprintf(n->err, sizeof n->err, "poll query: not an LSN: \"%.64s\"", PQgetvalue(res, 0, 2));
        return;
    }
    n->row_in_recovery = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    n->row_lsn = lsn;
    n->row_insert = insert;
    n->got_row = true;
}

static void mon_query_io(px_monitor *m, mon_node *n, short revents, uint64_t now)
{
    if ((n->events & POLLOUT) && (revents & (POLLOUT | POLLERR | POLLHUP))) {
        int f = PQflush(n->conn);
        if (f < 0) {
            mon_fail(m, n, now, PQerrorMessage(n->conn));
            return;
        }
        n->events = f > 0 ? (POLLIN | POLLOUT) : POLLIN;
    }
    if (!(revents & (POLLIN | POLLERR | POLLHUP)))
        return;
    if (!PQconsumeInput(n->conn)) {
        mon_fail(m, n, now, PQerrorMessage(n->conn));
        return;
    }
    while (!PQisBusy(n->conn)) {
        PGresult *res = PQgetResult(n->conn);
        if (res == NULL) {
            mon_set_phase(n, MON_READY);
            if (n->got_row && n->err[0] == '\0')
                mon_succeed(m, n, now);
            else
                mon_fail(m, n, now, n->err[0] != '\0' ? n->err : "poll query: no answer");
            return;
        }
        mon_take_result(n, res);
        PQclear(res);
    }
}

/* An idle connection that becomes readable was most likely closed by the server (shutdown,
 * pg_terminate_backend). That alone does not make the node down: reconnect at once and let
 * the connect decide. */
static void mon_idle_io(px_monitor *m, mon_node *n, uint64_t now)
{
    if (PQconsumeInput(n->conn) && PQstatus(n->conn) == CONNECTION_OK)
        return;
    char msg[MON_ERR_MAX];
    mon_copy_message(msg, sizeof msg, PQerrorMessage(n->conn));
    pgs_debug("monitor_conn_lost", "shard %d node %d (%s:%s): %s", n->shard, n->index, n->host, n->port, msg);
    mon_close(n);
    n->next_poll_ns = now;
}

static void mon_io(px_monitor *m, mon_node *n, short revents, uint64_t now)
{
    switch (n->phase) {
    case MON_CONNECTING:
        mon_connect_io(m, n, now);
        return;
    case MON_QUERYING:
        mon_query_io(m, n, revents, now);
        return;
    case MON_READY:
        mon_idle_io(m, n, now);
        return;
    case MON_IDLE:
        return;
    }
}

static void mon_poll_start(px_monitor *m, mon_node *n, uint64_t now)
{
    n->next_poll_ns = now + m->interval_ns;
    if (n->conn == NULL)
        mon_connect_start(m, n, now);
    else
        mon_query_send(m, n, now);
}

/* Timers of one node: a connect or query past its deadline fails; an open circuit whose
 * time is up goes half-open and its probe starts; a closed one polls when due. */
static void mon_step(px_monitor *m, mon_node *n, uint64_t now)
{
    px_node_status *st = mon_status(m, n);
    switch (n->phase) {
    case MON_CONNECTING:
        if (now >= n->deadline_ns)
            mon_fail(m, n, now, "connect timed out");
        return;
    case MON_QUERYING:
        if (now >= n->deadline_ns)
            mon_fail(m, n, now, "poll query timed out");
        return;
    case MON_IDLE:
    case MON_READY:
        break;
    }
    if (st->circuit == PX_CIRCUIT_OPEN) {
        if (now < n->open_until_ns)
            return;
        st->circuit = PX_CIRCUIT_HALF_OPEN;
        m->urgent = true;
        pgs_debug("monitor_probe", "shard %d node %d (%s:%s): circuit half-open, probing", n->shard, n->index,
                  n->host, n->port);
    } else if (now < n->next_poll_ns) {
        return;
    }
    mon_poll_start(m, n, now);
}

/* A worker's report moves a healthy node's next poll to now; a node already being polled or
 * with an open circuit is left alone. */
static void mon_take_reports(px_monitor *m, uint64_t now)
{
    if (!atomic_exchange(&m->reports_pending, false))
        return;
    for (int i = 0; i < m->nnodes; i++) {
        mon_node *n = &m->nodes[i];
        if (!atomic_exchange(&n->reported, false))
            continue;
        bool idle = n->phase == MON_IDLE || n->phase == MON_READY;
        if (idle && mon_status(m, n)->circuit == PX_CIRCUIT_CLOSED)
            n->next_poll_ns = now;
    }
}

/* ---- the shard: failover ---- */

/* Promotion is done by outside tooling; the monitor only follows it. The node holding the
 * primary role is replaced when it is down or in recovery and exactly one other node is up
 * and not in recovery. With two such nodes (split brain) nothing is guessed. */
static void mon_follow_promotion(px_monitor *m, int s)
{
    px_shard_status *sh = &m->work[s];
    const px_node_status *p = &sh->nodes[sh->primary];
    bool lost = p->health == PX_NODE_DOWN || (p->health == PX_NODE_UP && p->in_recovery);
    if (!lost)
        return;
    int cand = -1, ncand = 0;
    for (int i = 0; i < sh->nnodes; i++) {
        if (i != sh->primary && sh->nodes[i].health == PX_NODE_UP && !sh->nodes[i].in_recovery) {
            cand = i;
            ncand++;
        }
    }
    if (ncand != 1)
        return;
    const mon_node *from = &m->nodes[m->first[s] + sh->primary];
    const mon_node *to = &m->nodes[m->first[s] + cand];
    pgs_warn("primary_changed", "shard %d: primary is now node %d (%s:%s), was node %d (%s:%s), %s", s, cand,
             to->host, to->port, sh->primary, from->host, from->port,
             p->health == PX_NODE_DOWN ? "down" : "in recovery");
    sh->primary = cand;
    sh->nsamples = 0; /* the old primary's WAL positions say nothing about the new one's */
    m->urgent = true;
}

/* End of one turn of the loop: follow promotions, then publish when something changed
 * enough (at most every half interval for plain results, at once for health, circuit,
 * recovery or primary changes, and at least every interval since lag in time grows). */
static void mon_turn_end(px_monitor *m, uint64_t now)
{
    if (m->dirty || m->urgent)
        for (int s = 0; s < m->cfg->nshards; s++)
            mon_follow_promotion(m, s);
    uint64_t since = now - m->published_ns;
    if (m->urgent || (m->dirty && since >= m->interval_ns / 2) || since >= m->interval_ns)
        mon_publish(m, now);
}

static uint64_t mon_node_wake_ns(px_monitor *m, const mon_node *n)
{
    if (n->phase == MON_CONNECTING || n->phase == MON_QUERYING)
        return n->deadline_ns;
    if (mon_status(m, n)->circuit == PX_CIRCUIT_OPEN)
        return n->open_until_ns;
    return n->next_poll_ns;
}

static int mon_wait_ms(px_monitor *m, uint64_t now)
{
    uint64_t wake = now + MON_WAIT_MAX_MS * NS_PER_MS;
    uint64_t publish = m->published_ns + (m->dirty ? m->interval_ns / 2 : m->interval_ns);
    if (publish < wake)
        wake = publish;
    for (int i = 0; i < m->nnodes; i++) {
        uint64_t t = mon_node_wake_ns(m, &m->nodes[i]);
        if (t < wake)
            wake = t;
    }
    return wake <= now ? 0 : (int)((wake - now + NS_PER_MS - 1) / NS_PER_MS);
}

static int mon_fill_pollfds(px_monitor *m)
{
    int k = 0;
    m->pfds[k] = (struct pollfd){.fd = m->wake[0], .events = POLLIN};
    m->pfd_node[k++] = NULL;
    for (int i = 0; i < m->nnodes; i++) {
        mon_node *n = &m->nodes[i];
        if (n->phase == MON_IDLE)
            continue;
        short ev = n->phase == MON_READY ? POLLIN : n->events;
        m->pfds[k] = (struct pollfd){.fd = PQsocket(n->conn), .events = ev};
        m->pfd_node[k++] = n;
    }
    return k;
}

static void mon_main(void *arg)
{
    px_monitor *m = arg;
    while (!atomic_load(&m->stop)) {
        uint64_t now = uv_hrtime();
        mon_take_reports(m, now);
        for (int i = 0; i < m->nnodes; i++)
            mon_step(m, &m->nodes[i], now);
        mon_turn_end(m, now);

        int nfds = mon_fill_pollfds(m);
        int rc = poll(m->pfds, (nfds_t)nfds, mon_wait_ms(m, uv_hrtime()));
        if (rc < 0) {
            if (errno != EINTR) {
                pgs_error("monitor_poll_failed", "poll: %s", strerror(errno));
                uv_sleep(MON_DEFAULT_POLL_MS);
            }
            continue;
        }
        if (m->pfds[0].revents != 0)
            mon_drain(m);
        now = uv_hrtime();
        for (int i = 1; i < nfds; i++)
            if (m->pfds[i].revents != 0)
                mon_io(m, m->pfd_node[i], m->pfds[i].revents, now);
    }
}

/* ---- life cycle ---- */

static void mon_free(px_monitor *m)
{
    for (int i = 0; m->nodes != NULL && i < m->nnodes; i++)
        if (m->nodes[i].conn != NULL)
            PQfinish(m->nodes[i].conn);
    pgs_snap_destroy(&m->snap);
    if (m->wake[0] >= 0)
        close(m->wake[0]);
    if (m->wake[1] >= 0)
        close(m->wake[1]);
    free(m->pfd_node);
    free(m->pfds);
    free(m->first);
    free(m->nodes);
    free(m->work);
    free(m->reads);
    free(m);
}

static bool mon_has_replicas(const cfg_config *cfg)
{
    for (int s = 0; s < cfg->nshards; s++)
        if (cfg->shards[s].nreplicas > 0)
            return true;
    return false;
}

static const cfg_node *mon_cfg_node(const cfg_shard *sh, int i)
{
    return i == 0 ? &sh->primary : &sh->replicas[i - 1].node;
}

static int mon_alloc(px_monitor *m, size_t nshards)
{
    size_t ns = nshards > 0 ? nshards : 1;
    size_t nn = (size_t)m->nnodes;
    m->reads = calloc(ns * PX_MAX_NODES, sizeof *m->reads);
    m->work = calloc(ns, sizeof *m->work);
    m->first = calloc(ns, sizeof *m->first);
    m->nodes = calloc(nn > 0 ? nn : 1, sizeof *m->nodes);
    m->pfds = calloc(nn + 1, sizeof *m->pfds);
    m->pfd_node = calloc(nn + 1, sizeof(mon_node *));
    if (m->reads == NULL || m->work == NULL || m->first == NULL || m->nodes == NULL || m->pfds == NULL ||
        m->pfd_node == NULL)
        return -1;
    for (size_t i = 0; i < ns * PX_MAX_NODES; i++)
        atomic_init(&m->reads[i], 0);
    return 0;
}

static void mon_init_nodes(px_monitor *m, uint64_t now)
{
    int k = 0;
    for (int s = 0; s < m->cfg->nshards; s++) {
        const cfg_shard *cs = &m->cfg->shards[s];
        m->first[s] = k;
        m->work[s].nnodes = 1 + cs->nreplicas;
        m->work[s].primary = 0;
        m->work[s].primary_ok = true;
        for (int i = 0; i < 1 + cs->nreplicas; i++, k++) {
            mon_node *n = &m->nodes[k];
            const cfg_node *cn = mon_cfg_node(cs, i);
            n->shard = s;
            n->index = i;
            n->host = cn->host;
            snprintf(n->port, sizeof n->port, "%u", (unsigned)cn->port);
            n->phase = MON_IDLE;
            n->next_poll_ns = now;
            atomic_init(&n->reported, false);
        }
    }
}

/* The thread starts with every signal blocked so that the process's signals go to the
 * threads that handle them and poll() here is never interrupted. */
static int mon_thread_start(px_monitor *m)
{
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int r = uv_thread_create(&m->thread, mon_main, m);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return r;
}

static int mon_check_cfg(const cfg_config *cfg, const cfg_user *user, int nreaders, char *err, size_t errlen)
{
    if (nreaders < 0) {
        snprintf(err, errlen, "monitor: %d readers", nreaders);
        return -1;
    }
    for (int s = 0; s < cfg->nshards; s++) {
        if (cfg->shards[s].nreplicas < 0 || cfg->shards[s].nreplicas > CFG_MAX_REPLICAS) {
            snprintf(err, errlen, "monitor: shard %d has %d replicas", s, cfg->shards[s].nreplicas);
            return -1;
        }
    }
    if (user == NULL && mon_has_replicas(cfg)) {
        snprintf(err, errlen,
                 "monitor: replicas need a monitor user (monitor_user, or a [user.NAME] with a plain "
                 "password) to poll their lag");
        return -1;
    }
    return 0;
}

px_monitor *px_monitor_start(const cfg_config *cfg, int nreaders, char *err, size_t errlen)
{
    const cfg_user *user = cfg_monitor_user(cfg);
    if (mon_check_cfg(cfg, user, nreaders, err, errlen) < 0)
        return NULL;

    px_monitor *m = calloc(1, sizeof *m);
    if (m == NULL)
        goto oom;
    m->wake[0] = m->wake[1] = -1;
    m->cfg = cfg;
    m->user = user;
    m->nreaders = nreaders;
    m->poll_ms = cfg->lag_poll_ms > 0 ? cfg->lag_poll_ms : MON_DEFAULT_POLL_MS;
    m->interval_ns = m->poll_ms * NS_PER_MS;
    uint64_t qms = (uint64_t)m->poll_ms * MON_QUERY_TIMEOUT_POLLS;
    m->query_timeout_ns = (qms > MON_QUERY_TIMEOUT_MIN_MS ? qms : MON_QUERY_TIMEOUT_MIN_MS) * NS_PER_MS;
    atomic_init(&m->reports_pending, false);
    atomic_init(&m->stop, false);
    for (int s = 0; s < cfg->nshards; s++)
        m->nnodes += 1 + cfg->shards[s].nreplicas;
    if (mon_alloc(m, (size_t)cfg->nshards) < 0)
        goto oom_free;

    uint64_t now = uv_hrtime();
    m->rng = (now ^ (uint64_t)(uintptr_t)m) | 1;
    mon_init_nodes(m, now);
    px_status *first = mon_snapshot(m, now);
    if (first == NULL)
        goto oom_free;
    if (pgs_snap_init(&m->snap, m->nreaders > 0 ? m->nreaders : 1, first, free) < 0) {
        free(first);
        goto oom_free;
    }
    m->published_ns = now;

    if (user == NULL) {
        pgs_info("monitor_off", "no monitor user: the %d nodes are not polled and stay unknown", m->nnodes);
        return m;
    }
    if (pipe2(m->wake, O_NONBLOCK | O_CLOEXEC) < 0) {
        snprintf(err, errlen, "monitor: pipe: %s", strerror(errno));
        goto fail;
    }
    int r = mon_thread_start(m);
    if (r < 0) {
        snprintf(err, errlen, "monitor: thread: %s", uv_strerror(r));
        goto fail;
    }
    m->running = true;
    pgs_info("monitor_started", "polling %d nodes every %u ms as user %s, database %s", m->nnodes, m->poll_ms,
             user->name, cfg->monitor_dbname);
    return m;

oom_free:
    mon_free(m);
oom:
    snprintf(err, errlen, "monitor: out of memory");
    return NULL;
fail:
    mon_free(m);
    return NULL;
}

void px_monitor_stop(px_monitor *m)
{
    if (m == NULL)
        return;
    if (m->running) {
        atomic_store(&m->stop, true);
        mon_wake(m);
        uv_thread_join(&m->thread);
        m->running = false;
    }
    mon_free(m);
}

const px_status *px_monitor_get(px_monitor *m, int reader)
{
    assert(reader >= 0 && reader < m->nreaders);
    return pgs_snap_get(&m->snap, reader);
}

atomic_ullong *px_monitor_reads(px_monitor *m, int shard, int node)
{
    assert(shard >= 0 && shard < m->cfg->nshards && node >= 0 && node < PX_MAX_NODES);
    return &m->reads[(size_t)shard * PX_MAX_NODES + (size_t)node];
}

void px_monitor_report_failure(px_monitor *m, int shard, int node)
{
    if (m == NULL || !m->running || shard < 0 || shard >= m->cfg->nshards || node < 0 ||
        node > m->cfg->shards[shard].nreplicas)
        return;
    atomic_store(&m->nodes[m->first[shard] + node].reported, true);
    atomic_store(&m->reports_pending, true);
    mon_wake(m);
}

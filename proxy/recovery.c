/* The recovery of in-doubt two-phase commits (see recovery.h) and pgshard's gids. One thread
 * with blocking libpq calls, each bounded by connect_timeout or statement_timeout: only this
 * thread waits on them, never a worker. How a transaction is prepared and decided is in
 * fanout.c; this file only finishes what a pgshard that died left prepared. */
#include "proxy/recovery.h"

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

#include "common/log.h"
#include "common/sqlstate.h"

#define REC_CONNECT_TIMEOUT "2"
/* Every statement and lock wait is bounded, so that a stuck node delays a round, not stop. */
#define REC_OPTIONS "-c statement_timeout=5000 -c lock_timeout=2000"
#define REC_CONNS_MAX 16           /* (node, database, user) connections kept within one round */
#define REC_GIDS_MAX 4096          /* prepared gids remembered per round for the cleanup */
#define REC_DECISION_KEEP "1 hour" /* a decision row older than this, prepared nowhere, goes */
#define REC_MSG_MAX 256
#define REC_ERR_MAX 1024 /* a message naming the node, the database and the user */
/* SQLSTATEs the recovery reads in the servers' answers (common/sqlstate.h holds those pgshard
 * sends; 42704, undefined_object, comes from there). */
#define REC_SQLSTATE_UNDEFINED_TABLE "42P01"
#define REC_SQLSTATE_UNDEFINED_SCHEMA "3F000"
#define REC_SQLSTATE_UNIQUE_VIOLATION "23505"
#define REC_SQLSTATE_LOCK_NOT_AVAILABLE "55P03"
#define REC_SQLSTATE_INSUFFICIENT_PRIVILEGE "42501"

/* pg_prepared_xacts lists every database's prepared transactions; `young` ones are within
 * the grace period and only count for the cleanup. The LIKE escape keeps '_' literal. */
static const char rec_list_sql[] = "SELECT gid, database, owner, prepared >= now() - make_interval(secs => "
                                   "$1::float8 / 1000) AS young FROM pg_prepared_xacts "
                                   "WHERE gid LIKE 'pgshard\\_%' ORDER BY prepared";

/* One connection of a round, to a shard's primary as a user in a database. */
typedef struct rec_conn {
    int shard;
    char db[CFG_HOST_MAX];
    char user[CFG_NAME_MAX + 1];
    PGconn *conn; /* owned */
} rec_conn;

/* What one round saw: every pgshard gid prepared on a shard that answered, and the
 * databases it resolved something in (where the cleanup runs). */
typedef struct rec_round {
    char (*gids)[PX_GID_LEN + 1]; /* owned: ngids */
    int ngids;
    bool complete; /* every shard answered, and gids holds all they listed */
    char dbs[REC_CONNS_MAX][CFG_HOST_MAX];
    int ndbs;
} rec_round;

struct px_recovery {
    const cfg_config *cfg; /* not owned; outlives the thread */
    const cfg_user *user;  /* not owned: cfg's monitor user */
    px_global_stats *gs;   /* not owned */
    atomic_bool stop;
    int wake[2]; /* owned self-pipe: px_recovery_stop writes [1] */
    bool running;
    uv_thread_t thread;

    /* The thread's alone. */
    PGconn **list;   /* owned: nshards connections (or NULL) to monitor_dbname, kept between rounds */
    bool *down;      /* owned: nshards; the last attempt to connect list[s] failed */
    rec_conn *conns; /* owned: REC_CONNS_MAX, closed at the end of each round */
    int nconns;
    rec_round round;
};

/* ---- gids ---- */

int px_gid_format(char *out, size_t len, uint64_t proxy_id, uint64_t seq)
{
    if (len <= PX_GID_LEN)
        return -1;
    int n = snprintf(out, len, PX_GID_PREFIX "%016" PRIx64 "_%016" PRIx64, proxy_id, seq);
    return n == (int)PX_GID_LEN ? 0 : -1;
}

/* 16 lower-case hex digits into *v. */
static bool gid_hex16(const char *p, uint64_t *v)
{
    uint64_t x = 0;
    for (int i = 0; i < 16; i++) {
        char c = p[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (d < 0)
            return false;
        x = x << 4 | (uint64_t)d;
    }
    *v = x;
    return true;
}

bool px_gid_parse(const char *gid, uint64_t *proxy_id, uint64_t *seq)
{
    size_t plen = sizeof PX_GID_PREFIX - 1;
    uint64_t a, b;
    if (gid == NULL || strlen(gid) != PX_GID_LEN || strncmp(gid, PX_GID_PREFIX, plen) != 0)
        return false;
    if (!gid_hex16(gid + plen, &a) || gid[plen + 16] != '_' || !gid_hex16(gid + plen + 17, &b))
        return false;
    if (proxy_id)
        *proxy_id = a;
    if (seq)
        *seq = b;
    return true;
}

/* ---- connections ---- */

static void rec_notice(void *arg, const char *message)
{
    char msg[REC_MSG_MAX];
    (void)arg;
    pgs_log_flatten(msg, sizeof msg, message);
    pgs_debug("twopc_notice", "%s", msg);
}

/* Connects to shard's primary, as the monitor does, or returns NULL with err filled. */
static PGconn *rec_connect(const px_recovery *r, int shard, const char *db, const cfg_user *user, char *err,
                           size_t errlen)
{
    const cfg_config *cfg = r->cfg;
    const cfg_node *node = &cfg->shards[shard].primary;
    char port[8];
    snprintf(port, sizeof port, "%u", (unsigned)node->port);
    cfg_conninfo ci;
    cfg_conninfo_make(&ci, cfg, node->host, port, user, db, "pgshard_twopc_recovery", REC_CONNECT_TIMEOUT,
                      REC_OPTIONS);
    PGconn *conn = PQconnectdbParams(ci.keys, ci.vals, 0);
    if (conn != NULL && PQstatus(conn) == CONNECTION_OK) {
        PQsetNoticeProcessor(conn, rec_notice, NULL);
        return conn;
    }
    char msg[REC_MSG_MAX];
    pgs_log_flatten(msg, sizeof msg, conn != NULL ? PQerrorMessage(conn) : "out of memory");
    snprintf(err, errlen, "shard %d (%s:%u), database %s, user %s: %s", shard, node->host,
             (unsigned)node->port, db, user->name, msg);
    PQfinish(conn);
    return NULL;
}

/* The user that can finish a transaction: its owner when pgshard knows the owner's plain
 * password (only the owner or a superuser may COMMIT PREPARED, and the owner can read the
 * decisions it wrote), otherwise the monitor's user. */
static const cfg_user *rec_user_for(const px_recovery *r, const char *owner)
{
    const cfg_user *u = cfg_find_user(r->cfg, owner);
    return u != NULL && cfg_password_plain(u->password) ? u : r->user;
}

/* A connection of this round to shard in db as user, opened on first use. When the round
 * has used REC_CONNS_MAX, the oldest is closed to make room. */
static PGconn *rec_conn_get(px_recovery *r, int shard, const char *db, const cfg_user *user)
{
    for (int i = 0; i < r->nconns; i++) {
        rec_conn *c = &r->conns[i];
        if (c->shard == shard && strcmp(c->db, db) == 0 && strcmp(c->user, user->name) == 0)
            return c->conn;
    }
    char err[REC_ERR_MAX];
    PGconn *conn = rec_connect(r, shard, db, user, err, sizeof err);
    if (conn == NULL) {
        pgs_warn("twopc_recovery_failed", "%s; retried next round", err);
        return NULL;
    }
    if (r->nconns == REC_CONNS_MAX) {
        PQfinish(r->conns[0].conn);
        memmove(&r->conns[0], &r->conns[1], (REC_CONNS_MAX - 1) * sizeof r->conns[0]);
        r->nconns--;
    }
    rec_conn *c = &r->conns[r->nconns++];
    c->shard = shard;
    snprintf(c->db, sizeof c->db, "%s", db);
    snprintf(c->user, sizeof c->user, "%s", user->name);
    c->conn = conn;
    return conn;
}

/* A connection of this round to shard 0 in db, as whichever user it was opened with: the
 * cleanup runs as a user that could read the decisions there. */
static PGconn *rec_conn_in(px_recovery *r, const char *db)
{
    for (int i = 0; i < r->nconns; i++)
        if (r->conns[i].shard == 0 && strcmp(r->conns[i].db, db) == 0)
            return r->conns[i].conn;
    return rec_conn_get(r, 0, db, r->user);
}

static void rec_conns_close(px_recovery *r)
{
    for (int i = 0; i < r->nconns; i++)
        PQfinish(r->conns[i].conn);
    r->nconns = 0;
}

/* A failed statement's SQLSTATE and flattened message. */
static const char *rec_error(const PGresult *res, PGconn *conn, char *msg, size_t len)
{
    const char *state = res != NULL ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    pgs_log_flatten(msg, len, res != NULL ? PQresultErrorMessage(res) : PQerrorMessage(conn));
    return state != NULL ? state : "";
}

/* ---- one gid ---- */

typedef enum rec_decision { REC_UNKNOWN = -1, REC_ROLLBACK = 0, REC_COMMIT = 1 } rec_decision;

/* What a failed look for gid's decision means: a missing table or schema, that nothing was
 * ever decided in this database; anything else, that the gid waits for the next round. */
static rec_decision rec_decision_failed(const char *state, const char *gid, const char *db, const char *msg)
{
    if (strcmp(state, REC_SQLSTATE_UNDEFINED_TABLE) == 0 || strcmp(state, REC_SQLSTATE_UNDEFINED_SCHEMA) == 0)
        return REC_ROLLBACK;
    if (strcmp(state, REC_SQLSTATE_LOCK_NOT_AVAILABLE) == 0)
        pgs_info("twopc_decision_pending", "gid %s: its decision is being committed on shard 0, database %s",
                 gid, db);
    else
        pgs_warn("twopc_recovery_failed", "gid %s: reading its decision on shard 0, database %s: %s", gid, db,
                 msg);
    return REC_UNKNOWN;
}

/* Looks for gid with a SELECT: for a user that may not insert decisions. */
static rec_decision rec_decision_select(PGconn *conn, const char *gid, const char *db)
{
    const char *params[1] = {gid};
    PGresult *res = PQexecParams(conn, "SELECT 1 FROM pgshard.transactions WHERE gid = $1", 1, NULL, params,
                                 NULL, NULL, 0);
    rec_decision d;
    if (PQresultStatus(res) == PGRES_TUPLES_OK) {
        d = PQntuples(res) > 0 ? REC_COMMIT : REC_ROLLBACK;
    } else {
        char msg[REC_MSG_MAX];
        d = rec_decision_failed(rec_error(res, conn, msg, sizeof msg), gid, db, msg);
    }
    PQclear(res);
    return d;
}

/* Whether shard 0 recorded gid as committed in db. A SELECT cannot see a decision whose
 * transaction is still committing (shard 0's COMMIT waiting for a synchronous standby, say),
 * and rolling back then would split the transaction. So the gid is inserted, in a
 * transaction always rolled back: the insert waits for such a transaction (up to
 * lock_timeout) and fails with unique_violation when a decision is, or gets, committed. */
static rec_decision rec_decision_of(px_recovery *r, const char *gid, const char *db, const cfg_user *user)
{
    PGconn *conn = rec_conn_get(r, 0, db, user);
    if (conn == NULL)
        return REC_UNKNOWN;
    PQclear(PQexec(conn, "BEGIN"));
    const char *params[1] = {gid};
    PGresult *res = PQexecParams(conn, "INSERT INTO pgshard.transactions (gid) VALUES ($1)", 1, NULL, params,
                                 NULL, NULL, 0);
    char msg[REC_MSG_MAX];
    const char *state = PQresultStatus(res) == PGRES_COMMAND_OK ? "" : rec_error(res, conn, msg, sizeof msg);
    bool denied = strcmp(state, REC_SQLSTATE_INSUFFICIENT_PRIVILEGE) == 0;
    rec_decision d = PQresultStatus(res) == PGRES_COMMAND_OK             ? REC_ROLLBACK
                     : strcmp(state, REC_SQLSTATE_UNIQUE_VIOLATION) == 0 ? REC_COMMIT
                     : denied                                            ? REC_UNKNOWN
                              : rec_decision_failed(state, gid, db, msg);
    PQclear(res);
    PQclear(PQexec(conn, "ROLLBACK"));
    return denied ? rec_decision_select(conn, gid, db) : d;
}

/* Runs COMMIT PREPARED or ROLLBACK PREPARED of gid on shard, and counts and logs it. A gid
 * already gone was finished by someone else (its pgshard, another proxy's recovery). */
static void rec_finish(px_recovery *r, int shard, const char *gid, const char *db, const cfg_user *user,
                       rec_decision d)
{
    PGconn *conn = rec_conn_get(r, shard, db, user);
    if (conn == NULL)
        return;
    char sql[64 + PX_GID_LEN];
    snprintf(sql, sizeof sql, "%s PREPARED '%s'", d == REC_COMMIT ? "COMMIT" : "ROLLBACK", gid);
    PGresult *res = PQexec(conn, sql);
    if (PQresultStatus(res) == PGRES_COMMAND_OK) {
        atomic_fetch_add_explicit(&r->gs->twopc_recovered[d == REC_COMMIT ? 0 : 1], 1, memory_order_relaxed);
        pgs_info("twopc_resolved", "gid %s, shard %d, database %s: %s", gid, shard, db,
                 d == REC_COMMIT ? "committed" : "rolled back");
    } else {
        char msg[REC_MSG_MAX];
        const char *state = rec_error(res, conn, msg, sizeof msg);
        if (strcmp(state, PGS_SQLSTATE_UNDEFINED_OBJECT) == 0)
            pgs_debug("twopc_gone", "gid %s, shard %d: finished meanwhile", gid, shard);
        else
            pgs_warn("twopc_recovery_failed", "gid %s, shard %d, database %s: %s PREPARED: %s", gid, shard,
                     db, d == REC_COMMIT ? "COMMIT" : "ROLLBACK", msg);
    }
    PQclear(res);
}

static void rec_note_db(rec_round *rd, const char *db)
{
    for (int i = 0; i < rd->ndbs; i++)
        if (strcmp(rd->dbs[i], db) == 0)
            return;
    if (rd->ndbs < REC_CONNS_MAX)
        snprintf(rd->dbs[rd->ndbs++], sizeof rd->dbs[0], "%s", db);
}

static void rec_resolve(px_recovery *r, int shard, const char *gid, const char *db, const char *owner)
{
    const cfg_user *user = rec_user_for(r, owner);
    rec_note_db(&r->round, db);
    rec_decision d = rec_decision_of(r, gid, db, user);
    if (d != REC_UNKNOWN && !atomic_load(&r->stop))
        rec_finish(r, shard, gid, db, user, d);
}

/* ---- a round ---- */

static void rec_note_gid(rec_round *rd, const char *gid)
{
    if (rd->ngids == REC_GIDS_MAX) {
        rd->complete = false; /* the cleanup could delete a decision still needed */
        return;
    }
    snprintf(rd->gids[rd->ngids++], PX_GID_LEN + 1, "%s", gid);
}

/* The listing connection of shard, kept across rounds and replaced when it broke. A shard
 * that stays down is warned about once, then quietly retried every round. */
static PGconn *rec_list_conn(px_recovery *r, int shard)
{
    if (r->list[shard] != NULL && PQstatus(r->list[shard]) == CONNECTION_OK)
        return r->list[shard];
    PQfinish(r->list[shard]);
    char err[REC_ERR_MAX];
    r->list[shard] = rec_connect(r, shard, r->cfg->monitor_dbname, r->user, err, sizeof err);
    if (r->list[shard] == NULL && !r->down[shard])
        pgs_warn("twopc_recovery_failed", "%s; retried every round", err);
    else if (r->list[shard] == NULL)
        pgs_debug("twopc_recovery_failed", "%s", err);
    else if (r->down[shard])
        pgs_info("twopc_recovery_reconnected", "shard %d: reachable again", shard);
    r->down[shard] = r->list[shard] == NULL;
    return r->list[shard];
}

/* Lists shard's prepared pgshard transactions and resolves those past the grace period.
 * Returns -1 when the shard could not be asked. */
static int rec_shard(px_recovery *r, int shard)
{
    PGconn *conn = rec_list_conn(r, shard);
    if (conn == NULL)
        return -1;
    char grace[16];
    snprintf(grace, sizeof grace, "%u", r->cfg->two_phase_recovery_grace_ms);
    const char *params[1] = {grace};
    PGresult *res = PQexecParams(conn, rec_list_sql, 1, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        char msg[REC_MSG_MAX];
        rec_error(res, conn, msg, sizeof msg);
        pgs_warn("twopc_recovery_failed", "shard %d: listing prepared transactions: %s", shard, msg);
        PQclear(res);
        return -1;
    }
    for (int i = 0; i < PQntuples(res) && !atomic_load(&r->stop); i++) {
        const char *gid = PQgetvalue(res, i, 0);
        if (!px_gid_parse(gid, NULL, NULL))
            continue; /* pgshard_ but not ours in form: left alone */
        rec_note_gid(&r->round, gid);
        if (strcmp(PQgetvalue(res, i, 3), "t") != 0)
            rec_resolve(r, shard, gid, PQgetvalue(res, i, 1), PQgetvalue(res, i, 2));
    }
    PQclear(res);
    return 0;
}

/* '{gid,gid,...}': the gids are hex and underscores, so no element needs quoting. */
static char *rec_gid_array(const rec_round *rd)
{
    size_t len = 3 + (size_t)rd->ngids * (PX_GID_LEN + 1);
    char *a = malloc(len);
    if (a == NULL)
        return NULL;
    size_t at = 0;
    a[at++] = '{';
    for (int i = 0; i < rd->ngids; i++) {
        if (i > 0)
            a[at++] = ',';
        memcpy(a + at, rd->gids[i], PX_GID_LEN);
        at += PX_GID_LEN;
    }
    a[at++] = '}';
    a[at] = '\0';
    return a;
}

/* Deletes, in each database this round resolved something in, the decisions older than an
 * hour whose gid no shard still has prepared: nothing can ask for them any more. Only after
 * a round in which every shard answered. */
static void rec_cleanup(px_recovery *r)
{
    rec_round *rd = &r->round;
    if (!rd->complete || rd->ndbs == 0)
        return;
    char *gids = rec_gid_array(rd);
    if (gids == NULL)
        return;
    const char *params[1] = {gids};
    for (int i = 0; i < rd->ndbs && !atomic_load(&r->stop); i++) {
        PGconn *conn = rec_conn_in(r, rd->dbs[i]);
        if (conn == NULL)
            continue;
        PGresult *res = PQexecParams(
            conn,
            "DELETE FROM pgshard.transactions WHERE decided_at < now() - interval '" REC_DECISION_KEEP
            "' AND gid <> ALL ($1::text[])",
            1, NULL, params, NULL, NULL, 0);
        if (PQresultStatus(res) != PGRES_COMMAND_OK) {
            char msg[REC_MSG_MAX];
            rec_error(res, conn, msg, sizeof msg);
            pgs_debug("twopc_cleanup_failed", "database %s: %s", rd->dbs[i], msg);
        } else if (strcmp(PQcmdTuples(res), "0") != 0) {
            pgs_info("twopc_cleanup", "database %s: %s old decisions deleted", rd->dbs[i], PQcmdTuples(res));
        }
        PQclear(res);
    }
    free(gids);
}

static void rec_round_run(px_recovery *r)
{
    r->round.ngids = 0;
    r->round.ndbs = 0;
    r->round.complete = true;
    for (int s = 0; s < r->cfg->nshards && !atomic_load(&r->stop); s++)
        if (rec_shard(r, s) < 0)
            r->round.complete = false;
    rec_cleanup(r);
    rec_conns_close(r);
}

/* Sleeps for one interval, or until px_recovery_stop writes to the pipe. */
static void rec_wait(px_recovery *r)
{
    struct pollfd p = {.fd = r->wake[0], .events = POLLIN};
    int ms = (int)r->cfg->two_phase_recovery_interval_ms;
    while (poll(&p, 1, ms) < 0 && errno == EINTR)
        ;
}

static void rec_main(void *arg)
{
    px_recovery *r = arg;
    while (!atomic_load(&r->stop)) {
        rec_round_run(r);
        if (!atomic_load(&r->stop))
            rec_wait(r);
    }
}

/* ---- start and stop ---- */

static void rec_free(px_recovery *r)
{
    if (r->list != NULL)
        for (int s = 0; s < r->cfg->nshards; s++)
            PQfinish(r->list[s]);
    if (r->conns != NULL)
        rec_conns_close(r);
    free(r->list);
    free(r->down);
    free(r->conns);
    free(r->round.gids);
    if (r->wake[0] >= 0)
        close(r->wake[0]);
    if (r->wake[1] >= 0)
        close(r->wake[1]);
    free(r);
}

/* As the monitor's: every signal blocked, so that they go to the threads that handle them. */
static int rec_thread_start(px_recovery *r)
{
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = uv_thread_create(&r->thread, rec_main, r);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return rc;
}

px_recovery *px_recovery_start(const cfg_config *cfg, px_global_stats *gs, char *err, size_t errlen)
{
    const cfg_user *user = cfg_monitor_user(cfg);
    if (user == NULL) {
        snprintf(err, errlen, "two-phase commit recovery: needs a user with a plain password (monitor_user)");
        return NULL;
    }
    px_recovery *r = calloc(1, sizeof *r);
    if (r == NULL) {
        snprintf(err, errlen, "two-phase commit recovery: out of memory");
        return NULL;
    }
    r->wake[0] = r->wake[1] = -1;
    r->cfg = cfg;
    r->user = user;
    r->gs = gs;
    atomic_init(&r->stop, false);
    r->list = calloc((size_t)cfg->nshards, sizeof(PGconn *));
    r->down = calloc((size_t)cfg->nshards, sizeof *r->down);
    r->conns = calloc(REC_CONNS_MAX, sizeof *r->conns);
    r->round.gids = calloc(REC_GIDS_MAX, sizeof *r->round.gids);
    if (r->list == NULL || r->down == NULL || r->conns == NULL || r->round.gids == NULL) {
        snprintf(err, errlen, "two-phase commit recovery: out of memory");
        goto fail;
    }
    if (pipe2(r->wake, O_NONBLOCK | O_CLOEXEC) < 0) {
        snprintf(err, errlen, "two-phase commit recovery: pipe: %s", strerror(errno));
        goto fail;
    }
    int rc = rec_thread_start(r);
    if (rc < 0) {
        snprintf(err, errlen, "two-phase commit recovery: thread: %s", uv_strerror(rc));
        goto fail;
    }
    r->running = true;
    pgs_info("twopc_recovery_started", "every %u ms on %d shards as user %s, grace %u ms",
             cfg->two_phase_recovery_interval_ms, cfg->nshards, user->name, cfg->two_phase_recovery_grace_ms);
    return r;
fail:
    rec_free(r);
    return NULL;
}

void px_recovery_stop(px_recovery *r)
{
    if (r == NULL)
        return;
    if (r->running) {
        atomic_store(&r->stop, true);
        char c = 1;
        ssize_t n = write(r->wake[1], &c, 1); /* EAGAIN: a wake-up is pending anyway */
        (void)n;
        uv_thread_join(&r->thread);
        r->running = false;
    }
    rec_free(r);
}

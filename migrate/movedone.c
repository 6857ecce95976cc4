/* The end of a move (see move.c): verify (row counts and checksums of the moved keys,
 * source against target, with the keys that differ), cleanup (subscription, publication,
 * slot, the source's copy of the moved rows, the fence) and abort (everything undone
 * before the flip, the source as it was). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "migrate/move.h"

#define MV_DIFF_MAX 20           /* differing keys listed per table */
#define MV_PROXY_WAIT_MS 600000u /* cleanup waits this long for proxies to take the new map */
#define MV_LOCK_TRIES 50

/* ---- verify ---- */

typedef struct mv_sum {
    char rows[24];
    char sum[64];
} mv_sum;

/* Sends sql to both connections and collects both answers: the two servers work at the same
 * time. Returns 0 with res[0] (a) and res[1] (b), or -1. */
static int mv_both(mv_move *m, PGconn *a, PGconn *b, const char *what, const char *sql, PGresult *res[2])
{
    PGconn *c[2] = {a, b};
    res[0] = res[1] = NULL;
    for (int i = 0; i < 2; i++)
        if (!PQsendQuery(c[i], sql)) {
            /* The other one, if sent, is drained below. */
            mv_fail(m, "%s: %s", what, PQerrorMessage(c[i]));
            c[i] = NULL;
        }
    int rc = 0;
    for (int i = 0; i < 2; i++) {
        PGresult *r;
        while (c[i] && (r = PQgetResult(c[i])) != NULL) {
            if (PQresultStatus(r) != PGRES_TUPLES_OK && rc == 0)
                rc = mv_fail(m, "%s on shard %d: %s", what, i == 0 ? m->source : m->target,
                             PQresultErrorMessage(r));
            if (!res[i] && PQresultStatus(r) == PGRES_TUPLES_OK)
                res[i] = r;
            else
                PQclear(r);
        }
        if (!c[i])
            rc = -1;
    }
    if (rc < 0 || !res[0] || !res[1]) {
        PQclear(res[0]);
        PQclear(res[1]);
        res[0] = res[1] = NULL;
        return -1;
    }
    return 0;
}

/* One side of the key listing, read a row at a time (libpq's single-row mode): the row in
 * hand, or NULL at the end. */
typedef struct mv_rows {
    PGconn *c;
    PGresult *row;
    int shard;
    bool failed;
} mv_rows;

static void mv_rows_next(mv_move *m, mv_rows *r)
{
    PQclear(r->row);
    r->row = NULL;
    PGresult *x;
    while (!r->row && (x = PQgetResult(r->c)) != NULL) {
        ExecStatusType st = PQresultStatus(x);
        if (st == PGRES_SINGLE_TUPLE) {
            r->row = x;
            continue;
        }
        if (st != PGRES_TUPLES_OK && !r->failed) {
            r->failed = true;
            mv_fail(m, "listing the differing keys on shard %d: %s", r->shard, PQresultErrorMessage(x));
        }
        PQclear(x);
    }
}

/* The key (primary key, or the whole row without one) and a digest of each moved row on
 * both sides, sorted by bytes, compared in one pass as both servers send them, a row of each
 * in memory at a time: up to MV_DIFF_MAX keys that are only on one side or differ. Printed
 * as text, or as a JSON array. */
static int mv_diff(mv_move *m, const mv_table *t, PGconn *target, bool json)
{
    char fmt[512];
    snprintf(fmt, sizeof fmt,
             "SELECT (%s)::text COLLATE \"C\" AS k, md5(t::text) FROM %%1$s AS t WHERE %%2$s ORDER BY 1",
             t->pk ? t->pk : "t");
    char *sql = mv_table_sql(t, fmt);
    if (!sql)
        return mv_fail(m, "out of memory");
    mv_rows r[2] = {{.c = m->src, .shard = m->source}, {.c = target, .shard = m->target}};
    int sent = 0;
    for (int i = 0; i < 2; i++) {
        if (!PQsendQuery(r[i].c, sql) || !PQsetSingleRowMode(r[i].c)) {
            mv_fail(m, "listing the differing keys on shard %d: %s", r[i].shard, PQerrorMessage(r[i].c));
            break;
        }
        sent++;
    }
    free(sql);
    for (int i = 0; i < sent; i++)
        mv_rows_next(m, &r[i]);
    int shown = 0;
    FILE *f = m->o->out;
    while (sent == 2 && (r[0].row || r[1].row) && !r[0].failed && !r[1].failed && shown < MV_DIFF_MAX) {
        int c = !r[0].row   ? 1
                : !r[1].row ? -1
                            : strcmp(PQgetvalue(r[0].row, 0, 0), PQgetvalue(r[1].row, 0, 0));
        const char *what = NULL, *key = PQgetvalue(c <= 0 ? r[0].row : r[1].row, 0, 0);
        if (c < 0)
            what = "only on the source";
        else if (c > 0)
            what = "only on the target";
        else if (strcmp(PQgetvalue(r[0].row, 0, 1), PQgetvalue(r[1].row, 0, 1)) != 0)
            what = "differs";
        if (what) {
            if (json) {
                fputs(shown ? ",{\"key\":" : "{\"key\":", f);
                mig_json_cstr(f, key);
                fputs(",\"what\":", f);
                mig_json_cstr(f, what);
                fputc('}', f);
            } else {
                fprintf(f, "  key %s: %s\n", key, what);
            }
            shown++;
        }
        if (c <= 0)
            mv_rows_next(m, &r[0]);
        if (c >= 0)
            mv_rows_next(m, &r[1]);
    }
    if (!json && shown == MV_DIFF_MAX)
        fprintf(f, "  (the first %d differences)\n", MV_DIFF_MAX);
    /* The rest is read and dropped: the connections go on with other statements. */
    for (int i = 0; i < sent; i++)
        while (r[i].row)
            mv_rows_next(m, &r[i]);
    return sent == 2 && !r[0].failed && !r[1].failed ? 0 : -1;
}

static void mv_sum_of(const PGresult *res, mv_sum *s)
{
    snprintf(s->rows, sizeof s->rows, "%s", PQgetvalue(res, 0, 0));
    snprintf(s->sum, sizeof s->sum, "%s", PQgetvalue(res, 0, 1));
}

int mv_verify(mv_move *m, bool json, bool *same)
{
    /* The target as it was at the flip when this run flipped it; else as it is now, which
     * also has the writes made since the flip if any were. */
    PGconn *target = m->snap ? m->snap : m->dst;
    FILE *f = m->o->out;
    *same = true;
    if (json)
        fprintf(f, "{\"id\":%lld,\"source\":%d,\"target\":%d,\"at_flip\":%s,\"tables\":[", m->id, m->source,
                m->target, m->snap ? "true" : "false");
    for (int k = 0; k < m->ntables; k++) {
        const mv_table *t = &m->tables[k];
        char *sql = mv_table_sql(t, "SELECT count(*), coalesce(sum(hashtextextended(t::text, 0)::numeric), 0)"
                                    " FROM %1$s AS t WHERE %2$s");
        if (!sql)
            return mv_fail(m, "out of memory");
        PGresult *r[2];
        int rc = mv_both(m, m->src, target, "verify", sql, r);
        free(sql);
        if (rc < 0)
            return -1;
        mv_sum a, b;
        mv_sum_of(r[0], &a);
        mv_sum_of(r[1], &b);
        PQclear(r[0]);
        PQclear(r[1]);
        bool eq = strcmp(a.rows, b.rows) == 0 && strcmp(a.sum, b.sum) == 0;
        *same = *same && eq;
        if (json) {
            fputs(k ? ",{\"table\":" : "{\"table\":", f);
            mig_json_cstr(f, t->qname);
            fprintf(f,
                    ",\"source_rows\":%s,\"target_rows\":%s,\"source_checksum\":\"%s\",\"target_checksum\":"
                    "\"%s\","
                    "\"same\":%s,\"differences\":[",
                    a.rows, b.rows, a.sum, b.sum, eq ? "true" : "false");
        } else if (eq) {
            fprintf(f, "verify: table %s: %s rows on both, checksums equal\n", t->qname, a.rows);
        } else {
            fprintf(
                f,
                "verify: table %s: DIFFERENT: source %s rows (checksum %s), target %s rows (checksum %s)\n",
                t->qname, a.rows, a.sum, b.rows, b.sum);
        }
        if (!eq && mv_diff(m, t, target, json) < 0)
            return -1;
        if (json)
            fputs("]}", f);
    }
    if (json)
        fprintf(f, "],\"same\":%s}\n", *same ? "true" : "false");
    fflush(f);
    if (m->snap) {
        PQclear(PQexec(m->snap, "ROLLBACK"));
        PQfinish(m->snap);
        m->snap = NULL;
    }
    return 0;
}

/* ---- cleanup and abort ---- */

/* The subscription (which drops its slot on the source), the publication, and the slot if
 * the subscription could not drop it. */
static int mv_unsubscribe(mv_move *m)
{
    char sql[256];
    const char *p[] = {m->name};
    snprintf(sql, sizeof sql, "DROP SUBSCRIPTION IF EXISTS %s", m->name);
    if (mv_run(m, m->dst, "dropping the subscription", sql, 0, NULL) < 0)
        return -1;
    snprintf(sql, sizeof sql, "DROP PUBLICATION IF EXISTS %s", m->name);
    if (mv_run(m, m->src, "dropping the publication", sql, 0, NULL) < 0)
        return -1;
    return mv_run(m, m->src, "dropping the slot",
                  "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1",
                  1, p);
}

/* Drops the fence triggers once no move's fence is left on the source: a dropped trigger
 * takes a lock, so it waits at most a moment each time and tries again rather than queue
 * every writer behind a long transaction. */
static int mv_drop_triggers(mv_move *m)
{
    PGresult *res = mv_exec(m, m->src, "reading the fences", "SELECT count(*) FROM pgshard.fence", 0, NULL);
    if (!res)
        return -1;
    long long left = mv_ll(res, 0, 0);
    PQclear(res);
    if (left > 0)
        return 0;
    for (int i = 0; i < m->ntables; i++) {
        char sql[512];
        snprintf(sql, sizeof sql, "SET lock_timeout = '200ms'; DROP TRIGGER IF EXISTS pgshard_fence ON %s",
                 m->tables[i].qname);
        for (int tries = 0;; tries++) {
            res = PQexec(m->src, sql);
            bool ok = PQresultStatus(res) == PGRES_COMMAND_OK;
            const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
            bool busy = state && strcmp(state, "55P03") == 0;
            if (!ok && (!busy || tries == MV_LOCK_TRIES))
                mv_fail(m, "dropping the fence trigger of %s: %s", m->tables[i].qname,
                        PQresultErrorMessage(res));
            PQclear(res);
            if (ok || !busy || tries == MV_LOCK_TRIES) {
                PQclear(PQexec(m->src, "RESET lock_timeout"));
                if (!ok)
                    return -1;
                break;
            }
            mv_sleep_ms(100);
        }
    }
    return 0;
}

/* The fence row and the markers of this move, then the triggers if no fence is left. */
static int mv_unfence(mv_move *m)
{
    const char *p[] = {m->ids};
    if (mv_has(m->src, "pgshard.fence") &&
        (mv_run(m, m->src, "removing the fence", "DELETE FROM pgshard.fence WHERE migration_id = $1", 1, p) <
             0 ||
         mv_drop_triggers(m) < 0))
        return -1;
    if (mv_has(m->src, "pgshard.move_marker") &&
        mv_run(m, m->src, "removing the marker", "DELETE FROM pgshard.move_marker WHERE migration_id = $1", 1,
               p) < 0)
        return -1;
    if (mv_has(m->dst, "pgshard.move_marker") &&
        mv_run(m, m->dst, "removing the marker", "DELETE FROM pgshard.move_marker WHERE migration_id = $1", 1,
               p) < 0)
        return -1;
    return 0;
}

/* Deletes the moving keys' rows on conn in batches, each its own transaction, so that no
 * other tenant waits on a long delete. The fence is bypassed: these writes are the move's. */
static long long mv_delete_rows(mv_move *m, PGconn *conn, const char *what)
{
    if (mv_run(m, conn, what, "SET pgshard.fence_bypass = on", 0, NULL) < 0)
        return -1;
    long long n = mv_batches(m, conn, what,
                             "DELETE FROM %1$s WHERE ctid = ANY (ARRAY(SELECT ctid FROM %1$s WHERE %2$s"
                             " LIMIT " MV_DELETE_BATCH "))");
    PQclear(PQexec(conn, "RESET pgshard.fence_bypass"));
    return n;
}

/* Every live proxy on the flipped map, and catalog_lease_ms past the flip, so that a proxy
 * that is not live has stopped writing by its lease: then nothing can write to the source
 * for the moved keys any more, and the fence can go. */
static int mv_wait_proxies(mv_move *m)
{
    char lease[16];
    snprintf(lease, sizeof lease, "%u", m->o->cfg->catalog_lease_ms);
    const char *p[] = {m->ids, lease};
    unsigned waited = 0, said = 0;
    for (;;) {
        PGresult *res = mv_exec(
            m, m->cat, "reading the proxies",
            "SELECT (SELECT string_agg(p.id || ' (map version ' || coalesce(p.map_version::text, 'none') || "
            "')', ', ')"
            " FROM pgshard.proxies AS p WHERE p.last_seen > clock_timestamp() - interval '5 s'"
            " AND coalesce(p.map_version, 0) < g.flip_version),"
            " greatest(0, $2::int8 - extract(epoch FROM clock_timestamp() - g.flipped_at) * 1000)::int8"
            " FROM pgshard.migrations AS g WHERE g.id = $1",
            2, p);
        if (!res)
            return -1;
        if (PQntuples(res) != 1) {
            PQclear(res);
            return mv_fail(m, "the move's row is gone from pgshard.migrations");
        }
        bool behind = !PQgetisnull(res, 0, 0);
        long long lease_left = mv_ll(res, 0, 1);
        char who[MV_ERR_MAX];
        snprintf(who, sizeof who, "%s", behind ? PQgetvalue(res, 0, 0) : "");
        PQclear(res);
        if (!behind && lease_left == 0)
            return 0;
        if (waited >= MV_PROXY_WAIT_MS)
            return mv_fail(
                m, "cleanup: live proxies still on an older map after %u s: %s (resume to wait again)",
                waited / 1000, who);
        if (waited >= said) {
            if (behind)
                mv_say(m, "cleanup: waiting for %s to take the new map", who);
            else
                mv_say(m, "cleanup: waiting %lld ms more for the lease of proxies that are not live",
                       lease_left);
            said = waited + 5000;
        }
        unsigned nap = lease_left > 0 && !behind && lease_left < 200 ? (unsigned)lease_left : 200;
        mv_sleep_ms(nap);
        waited += nap;
    }
}

int mv_cleanup(mv_move *m)
{
    if (m->snap) {
        PQclear(PQexec(m->snap, "ROLLBACK"));
        PQfinish(m->snap);
        m->snap = NULL;
    }
    /* The subscription first: deleting the source's rows with it in place would delete them
     * on the target too. */
    if (mv_unsubscribe(m) < 0)
        return -1;
    long long n = mv_delete_rows(m, m->src, "deleting the moved rows from the source");
    if (n < 0)
        return -1;
    mv_say(m, "cleanup: %lld moved rows deleted from shard %d", n, m->source);
    if (mv_wait_proxies(m) < 0)
        return -1;
    return mv_unfence(m);
}

int mv_abort(mv_move *m)
{
    int step = -1;
    static const char *const before_flip[] = {"check", "prepare", "publish", "subscribe", "sync", "freeze"};
    for (int i = 0; i < 6; i++)
        if (strcmp(m->step, before_flip[i]) == 0)
            step = i;
    if (strcmp(m->state, "aborted") == 0 || strcmp(m->state, "done") == 0)
        return mv_fail(m, "is %s already", m->state);
    if (step < 0 || strcmp(m->state, "flipped") == 0)
        return mv_fail(
            m,
            "has flipped (step %s): shard %d serves its keys now; finish it (resume) and move them "
            "back if you want them on shard %d",
            m->step, m->target, m->source);
    mv_log(m, m->step, "abort", NULL);
    if (strcmp(m->state, "freezing") == 0 && mv_unfreeze(m, "aborted") < 0)
        return -1;
    if (mv_unsubscribe(m) < 0)
        return -1;
    /* What the copy brought to the target; before the flip nothing else there has these keys
     * (check made sure). */
    long long n = mv_delete_rows(m, m->dst, "deleting the copied rows from the target");
    if (n < 0 || mv_unfence(m) < 0)
        return -1;
    if (mv_set_state(m, "aborted", NULL) < 0 || mv_notify(m) < 0)
        return -1;
    mv_log(m, m->step, "aborted", NULL);
    mv_say(m, "aborted: %lld copied rows deleted from shard %d; shard %d as it was", n, m->target, m->source);
    return 0;
}

/* pgshard-migrate plan [--add-shard N] [--max-moves K] [--apply] [--json]: proposes bucket
 * moves that even out the shards' sizes and then their load. Size is measured on the shards
 * themselves: per bucket, the rows of every sharded table and their bytes (pg_column_size of
 * the row), on the shard the map gives the bucket to. Load is what the proxies report to
 * pgshard.bucket_load: statements routed by a key of the bucket, decayed with a half-life of
 * an hour. Greedy, size first: while the largest shard is more than 10 % over the mean, its
 * bucket that best closes the gap goes to the smallest shard; then, while the busiest shard
 * is more than 10 % over the mean load, its bucket that best closes that gap goes to the
 * least busy shard, as long as the receiving shard's size stays within half the size bound
 * (or the largest size the first pass left); one that does not fit is swapped with a cool
 * bucket of the receiving shard big enough to make room.
 * Buckets with a tenant that an override places are left alone (a bucket move would take its
 * rows, or meet them on its target). The moves are grouped per (source, target) and printed; --apply runs
 * them one after another. Rows of a bucket found on a shard that does not own it (tenant
 * overrides) weigh on that shard but are not moved. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "migrate/move.h"
#include "shardmap/catalog.h"
#include "shardmap/key.h"

#define PLAN_SLACK 0.10 /* the largest shard may be this much over the mean */

enum { PLAN_SIZE, PLAN_LOAD };

typedef struct plan_bucket {
    int64_t rows, bytes;
    double load; /* statements routed by its keys, recently (bucket_load) */
    int shard;   /* its owner by the map */
    int to;      /* the planned owner */
    bool pinned; /* holds a tenant an override places */
} plan_bucket;

typedef struct planner {
    const mig_opts *o;
    sm_map *map;
    plan_bucket *b; /* owned, one per bucket */
    uint32_t nb;
    int64_t *bytes, *rows; /* owned, per shard: now */
    double *load;          /* owned, per shard: now */
    double *after[2];      /* owned, per shard: bytes and load after the plan */
    int max_moves;
    int add_shard;
    bool apply;
    int moved;
} planner;

static int plan_fail(planner *p, const char *fmt, const char *a, const char *b)
{
    fprintf(p->o->err, "pgshard-migrate: plan: ");
    fprintf(p->o->err, fmt, a, b);
    fputc('\n', p->o->err);
    return -1;
}

static PGconn *plan_connect(planner *p, int shard)
{
    mv_move probe = {.o = p->o};
    PGconn *c = mv_connect(&probe, shard);
    if (!c)
        plan_fail(p, "%s%s", probe.err, "");
    return c;
}

/* Adds one table's per-bucket rows and bytes on shard s (rows of buckets s does not own by
 * the map are strays, not counted). */
static int plan_measure_table(planner *p, PGconn *c, int s, const cfg_table *t)
{
    char name[2 * CFG_NAME_MAX + 8], sql[2048];
    char *sc = t->schema[0] ? PQescapeIdentifier(c, t->schema, strlen(t->schema)) : NULL;
    char *tn = PQescapeIdentifier(c, t->name, strlen(t->name));
    char *k = PQescapeIdentifier(c, t->shard_key, strlen(t->shard_key));
    snprintf(name, sizeof name, "%s%s%s", sc ? sc : "", sc ? "." : "", tn ? tn : "");
    /* The key's hash as the proxy computes it, by the column's type. */
    const char *key = k ? k : "";
    char hash[640];
    snprintf(hash, sizeof hash,
             "CASE WHEN pg_typeof(t.%s)::text IN ('smallint', 'integer', 'bigint')"
             " THEN hashint8extended(t.%s::text::int8, 0)"
             " WHEN pg_typeof(t.%s)::text = 'uuid' THEN uuid_hash_extended(t.%s::text::uuid, 0)"
             " ELSE hashtextextended(t.%s::text, 0) END",
             key, key, key, key, key);
    snprintf(sql, sizeof sql,
             "SELECT ((%s) & %u)::int, count(*), sum(pg_column_size(t.*))::int8 FROM %s AS t"
             " WHERE t.%s IS NOT NULL GROUP BY 1",
             hash, p->nb - 1, name, key);
    PQfreemem(sc);
    PQfreemem(tn);
    PQfreemem(k);
    PGresult *res = PQexec(c, sql);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        plan_fail(p, "measuring %s: %s", name, PQresultErrorMessage(res));
        PQclear(res);
        return -1;
    }
    for (int r = 0; r < PQntuples(res); r++) {
        uint32_t b = (uint32_t)strtoul(PQgetvalue(res, r, 0), NULL, 10);
        int64_t rows = strtoll(PQgetvalue(res, r, 1), NULL, 10),
                bytes = strtoll(PQgetvalue(res, r, 2), NULL, 10);
        if (b < p->nb && p->b[b].shard == s) {
            p->b[b].rows += rows;
            p->b[b].bytes += bytes;
        } else {
            /* Tenants an override keeps here (or rows a move has not cleaned up yet): they
             * weigh on this shard, but no bucket move takes them. */
            p->rows[s] += rows;
            p->bytes[s] += bytes;
        }
    }
    PQclear(res);
    return 0;
}

static int plan_measure(planner *p)
{
    const cfg_config *cfg = p->o->cfg;
    for (int s = 0; s < cfg->nshards; s++) {
        PGconn *c = plan_connect(p, s);
        if (!c)
            return -1;
        for (int i = 0; i < cfg->ntables; i++)
            if (!cfg->tables[i].omnisharded && plan_measure_table(p, c, s, &cfg->tables[i]) < 0) {
                PQfinish(c);
                return -1;
            }
        PQfinish(c);
    }
    for (uint32_t b = 0; b < p->nb; b++) {
        p->bytes[p->b[b].shard] += p->b[b].bytes;
        p->rows[p->b[b].shard] += p->b[b].rows;
        p->load[p->b[b].shard] += p->b[b].load;
    }
    for (int s = 0; s < cfg->nshards; s++) {
        p->after[PLAN_SIZE][s] = (double)p->bytes[s];
        p->after[PLAN_LOAD][s] = p->load[s];
    }
    return 0;
}

/* The load the proxies reported per bucket, decayed to now. A catalog made before
 * bucket_load existed has none: then only size counts. */
static int plan_load(planner *p, PGconn *cat)
{
    if (!mv_has(cat, "pgshard.bucket_load"))
        return 0;
    PGresult *res =
        PQexec(cat, "SELECT bucket, recent * power(0.5, greatest(extract(epoch FROM now() - updated_at),"
                    " 0) / " SM_LOAD_HALF_LIFE_S ") FROM pgshard.bucket_load");
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        plan_fail(p, "reading pgshard.bucket_load: %s%s", PQresultErrorMessage(res), "");
        PQclear(res);
        return -1;
    }
    for (int r = 0; r < PQntuples(res); r++) {
        uint32_t b = (uint32_t)strtoul(PQgetvalue(res, r, 0), NULL, 10);
        if (b < p->nb)
            p->b[b].load = strtod(PQgetvalue(res, r, 1), NULL);
    }
    PQclear(res);
    return 0;
}

typedef struct plan_pin_ctx {
    planner *p;
    uint32_t oid;
} plan_pin_ctx;

static int plan_pin_one(void *arg, const char *tenant, size_t len, uint32_t shard)
{
    plan_pin_ctx *c = arg;
    int b = mv_tenant_bucket(c->oid, tenant, len, c->p->nb);
    (void)shard;
    if (b >= 0)
        c->p->b[b].pinned = true;
    return 0;
}

/* Marks the buckets with a tenant that an override places: a move of the bucket would take
 * that tenant's rows from its shard, or meet them on the shard it moves to, and move refuses
 * both. */
static int plan_pins(planner *p)
{
    mv_move probe = {.o = p->o};
    plan_pin_ctx c = {p, 0};
    if (sm_map_override_count(p->map) == 0)
        return 0;
    if (mv_key_oid(&probe, &c.oid) < 0)
        return plan_fail(p, "%s%s", probe.err, "");
    sm_map_each_override(p->map, plan_pin_one, &c);
    return 0;
}

static double plan_weight(const plan_bucket *x, int dim)
{
    return dim == PLAN_SIZE ? (double)x->bytes : x->load;
}

static double plan_mean(const planner *p, int dim)
{
    int n = p->o->cfg->nshards;
    double total = 0;
    for (int s = 0; s < n; s++)
        total += p->after[dim][s];
    return total / n;
}

static void plan_assign(planner *p, plan_bucket *x, int from, int to)
{
    x->to = to;
    for (int d = PLAN_SIZE; d <= PLAN_LOAD; d++) {
        p->after[d][from] -= plan_weight(x, d);
        p->after[d][to] += plan_weight(x, d);
    }
    p->moved++;
}

/* For a bucket x of hi that would take lo past the size cap: lo's coolest bucket whose
 * bytes make room for x going the other way without taking hi past the cap, or NULL. */
static plan_bucket *plan_partner(planner *p, const plan_bucket *x, int hi, int lo, double cap)
{
    double need = p->after[PLAN_SIZE][lo] + (double)x->bytes - cap;
    plan_bucket *best = NULL;
    for (uint32_t b = 0; b < p->nb; b++) {
        plan_bucket *y = &p->b[b];
        if (y->to != lo || y->pinned || (double)y->bytes < need || y->load >= x->load / 2 ||
            p->after[PLAN_SIZE][hi] - (double)x->bytes + (double)y->bytes > cap)
            continue;
        if (!best || y->load < best->load || (y->load == best->load && y->bytes < best->bytes))
            best = y;
    }
    return best;
}

/* One pass of the greedy loop described at the top, on size or on load. cap: the size no
 * shard may grow past in the load pass (0 in the size pass); there a busy bucket that does
 * not fit goes with a cool one of the receiving shard coming back (a swap: two moves). */
static void plan_balance(planner *p, int dim, double cap)
{
    int n = p->o->cfg->nshards;
    double mean = plan_mean(p, dim), *after = p->after[dim];
    while (p->max_moves < 0 || p->moved < p->max_moves) {
        int hi = 0, lo = 0;
        for (int s = 1; s < n; s++) {
            if (after[s] > after[hi])
                hi = s;
            if (after[s] < after[lo])
                lo = s;
        }
        if (after[hi] <= mean * (1 + PLAN_SLACK) || hi == lo)
            break;
        /* The bucket (or swap) closest to the gap that does not make the target the largest. */
        double want = after[hi] - mean, room = after[hi] - after[lo];
        plan_bucket *best = NULL, *best_partner = NULL;
        double best_d = 0;
        for (uint32_t b = 0; b < p->nb; b++) {
            plan_bucket *x = &p->b[b], *y = NULL;
            double w = plan_weight(x, dim);
            if (x->to != hi || x->pinned || w <= 0)
                continue;
            if (cap > 0 && p->after[PLAN_SIZE][lo] + (double)x->bytes > cap) {
                bool swap = p->max_moves < 0 || p->moved + 2 <= p->max_moves;
                if (!swap || !(y = plan_partner(p, x, hi, lo, cap)))
                    continue;
                w -= y->load;
            }
            if (w >= room)
                continue;
            double d = w > want ? w - want : want - w;
            if (!best || d < best_d) {
                best = x;
                best_partner = y;
                best_d = d;
            }
        }
        if (!best)
            break;
        plan_assign(p, best, hi, lo);
        if (best_partner)
            plan_assign(p, best_partner, lo, hi);
    }
}

/* Size first, then load without growing any shard past half the size bound or the largest
 * size the first pass left, whichever is more: the size bound keeps a margin for the rows
 * written between the plan and its moves. */
static void plan_balance_all(planner *p)
{
    plan_balance(p, PLAN_SIZE, 0);
    double cap = plan_mean(p, PLAN_SIZE) * (1 + PLAN_SLACK / 2);
    for (int s = 0; s < p->o->cfg->nshards; s++)
        if (p->after[PLAN_SIZE][s] > cap)
            cap = p->after[PLAN_SIZE][s];
    if (plan_mean(p, PLAN_LOAD) > 0)
        plan_balance(p, PLAN_LOAD, cap);
}

/* "17,18,40" of the buckets going from source to target, or "" for none. */
static char *plan_list(const planner *p, int source, int target, int64_t *rows, int64_t *bytes, double *load)
{
    size_t cap = 16, at = 0;
    char *out = malloc(cap);
    *rows = *bytes = 0;
    *load = 0;
    if (!out)
        return NULL;
    out[0] = '\0';
    for (uint32_t b = 0; b < p->nb; b++) {
        const plan_bucket *x = &p->b[b];
        if (x->shard != source || x->to != target || x->to == x->shard)
            continue;
        if (at + 16 > cap) {
            char *more = realloc(out, cap *= 2);
            if (!more) {
                free(out);
                return NULL;
            }
            out = more;
        }
        at += (size_t)snprintf(out + at, cap - at, "%s%u", at ? "," : "", b);
        *rows += x->rows;
        *bytes += x->bytes;
        *load += x->load;
    }
    return out;
}

static void plan_print(const planner *p)
{
    FILE *f = p->o->out;
    int n = p->o->cfg->nshards;
    double mean = plan_mean(p, PLAN_SIZE), lmean = plan_mean(p, PLAN_LOAD);
    if (p->o->json)
        fprintf(f, "{\"mean_bytes\":%.0f,\"mean_load\":%.1f,\"shards\":[", mean, lmean);
    else
        fprintf(f, "%-6s %-12s %-14s %-14s %-10s %-12s %-12s %s\n", "shard", "rows", "bytes", "bytes after",
                "of mean", "load", "load after", "of mean");
    for (int s = 0; s < n; s++) {
        double size = p->after[PLAN_SIZE][s], load = p->after[PLAN_LOAD][s];
        if (p->o->json)
            fprintf(f,
                    "%s{\"shard\":%d,\"rows\":%" PRId64 ",\"bytes\":%" PRId64
                    ",\"bytes_after\":%.0f,\"load\":%.1f,\"load_after\":%.1f}",
                    s ? "," : "", s, p->rows[s], p->bytes[s], size, p->load[s], load);
        else
            fprintf(f, "%-6d %-12" PRId64 " %-14" PRId64 " %-14.0f %3.0f %%      %-12.0f %-12.0f %.0f %%\n",
                    s, p->rows[s], p->bytes[s], size, mean > 0 ? 100.0 * size / mean : 100.0, p->load[s],
                    load, lmean > 0 ? 100.0 * load / lmean : 100.0);
    }
    if (p->o->json)
        fputs("],\"moves\":[", f);
    int k = 0;
    for (int s = 0; s < n; s++)
        for (int t = 0; t < n; t++) {
            int64_t rows, bytes;
            double load;
            char *list = s == t ? NULL : plan_list(p, s, t, &rows, &bytes, &load);
            if (list && list[0] && p->o->json)
                fprintf(f,
                        "%s{\"source\":%d,\"target\":%d,\"buckets\":[%s],\"rows\":%" PRId64
                        ",\"bytes\":%" PRId64 ",\"load\":%.1f}",
                        k++ ? "," : "", s, t, list, rows, bytes, load);
            else if (list && list[0])
                fprintf(f,
                        "%smove --buckets %s --to %d   # from shard %d: %" PRId64 " rows, %" PRId64
                        " bytes, load %.0f\n",
                        k++ ? "" : "\n", list, t, s, rows, bytes, load);
            free(list);
        }
    if (p->o->json)
        fprintf(f, "]}\n");
    else if (k == 0)
        fprintf(f, "\nnothing to move: the largest and the busiest shard are within %.0f %% of the mean\n",
                PLAN_SLACK * 100);
    fflush(f);
}

/* Runs the planned moves, one per (source, target), in order; stops at the first failure. */
static int plan_apply(planner *p)
{
    int n = p->o->cfg->nshards;
    for (int s = 0; s < n; s++)
        for (int t = 0; t < n; t++) {
            int64_t rows, bytes;
            double load;
            char *list = s == t ? NULL : plan_list(p, s, t, &rows, &bytes, &load);
            int rc = list && list[0] ? mv_move_buckets(p->o, list, t) : MIG_EXIT_OK;
            free(list);
            if (rc != MIG_EXIT_OK)
                return rc;
        }
    return MIG_EXIT_OK;
}

static int plan_args(planner *p)
{
    const mig_opts *o = p->o;
    p->max_moves = -1;
    p->add_shard = -1;
    for (int i = 0; i < o->nargs;) {
        const char *a = o->args[i++];
        if (strcmp(a, "--apply") == 0) {
            p->apply = true;
            continue;
        }
        const char *v = i < o->nargs ? o->args[i++] : NULL;
        char *end = NULL;
        long x = v ? strtol(v, &end, 10) : -1;
        bool num = v && end != v && *end == '\0' && x >= 0;
        if (strcmp(a, "--max-moves") == 0 && num)
            p->max_moves = (int)x;
        else if (strcmp(a, "--add-shard") == 0 && num && x < o->cfg->nshards)
            p->add_shard = (int)x;
        else
            return plan_fail(
                p, "%s%s: expected --add-shard SHARD (a shard of the config), --max-moves K, --apply", a,
                v ? " with that value" : "");
    }
    if (p->apply && o->json)
        return plan_fail(p, "%s%s", "--apply prints the moves' progress, not JSON: use one or the other", "");
    return 0;
}

int mig_plan(const mig_opts *o)
{
    planner p = {.o = o};
    char err[512];
    int rc = -1;
    if (plan_args(&p) < 0)
        return MIG_EXIT_USAGE;
    PGconn *cat = mig_connect(o);
    if (!cat)
        return MIG_EXIT_ERROR;
    if (sm_catalog_load(cat, (uint32_t)o->cfg->nshards, o->cfg->buckets, &p.map, err, sizeof err) < 0) {
        fprintf(o->err, "pgshard-migrate: plan: %s\n", err);
        PQfinish(cat);
        return MIG_EXIT_ERROR;
    }
    int n = o->cfg->nshards;
    p.nb = sm_map_buckets(p.map);
    p.b = calloc(p.nb, sizeof *p.b);
    p.bytes = calloc((size_t)n, sizeof *p.bytes);
    p.rows = calloc((size_t)n, sizeof *p.rows);
    p.load = calloc((size_t)n, sizeof *p.load);
    p.after[PLAN_SIZE] = calloc((size_t)n, sizeof *p.after[PLAN_SIZE]);
    p.after[PLAN_LOAD] = calloc((size_t)n, sizeof *p.after[PLAN_LOAD]);
    if (!p.b || !p.bytes || !p.rows || !p.load || !p.after[PLAN_SIZE] || !p.after[PLAN_LOAD]) {
        fprintf(o->err, "pgshard-migrate: plan: out of memory\n");
    } else {
        for (uint32_t b = 0; b < p.nb; b++)
            p.b[b].shard = p.b[b].to = sm_map_bucket_shard(p.map, b);
        int loaded = plan_load(&p, cat);
        PQfinish(cat);
        cat = NULL;
        if (loaded == 0 && plan_pins(&p) == 0 && plan_measure(&p) == 0) {
            plan_balance_all(&p);
            plan_print(&p);
            rc = p.apply ? plan_apply(&p) : MIG_EXIT_OK;
        }
    }
    PQfinish(cat);
    free(p.b);
    free(p.bytes);
    free(p.rows);
    free(p.load);
    free(p.after[PLAN_SIZE]);
    free(p.after[PLAN_LOAD]);
    sm_map_free(p.map);
    return rc < 0 ? MIG_EXIT_ERROR : rc;
}

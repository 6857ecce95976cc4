/* pgshard-migrate status: the catalog's map (buckets and tenant overrides per shard, the
 * version), the proxies that heartbeat into it and the active moves, as aligned text for people or as one
 * JSON document for tools. It only reads; a catalog that does not validate is an error. */
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "migrate/mig.h"
#include "shardmap/catalog.h"

/* What status prints, gathered before anything is printed so that an error leaves no
 * half-written JSON document behind. */
typedef struct mig_status_data {
    sm_map *map;               /* owned */
    uint32_t *buckets;         /* owned: per shard */
    uint32_t *overrides;       /* owned: per shard */
    sm_catalog_proxy *proxies; /* owned */
    size_t nproxies;
    size_t live;
} mig_status_data;

static int mig_count_override(void *arg, const char *tenant, size_t len, uint32_t shard)
{
    ((uint32_t *)arg)[shard]++;
    return 0;
}

static void mig_moves_text(FILE *f, const sm_map *map);

static void mig_status_free(mig_status_data *d)
{
    sm_map_free(d->map);
    free(d->buckets);
    free(d->overrides);
    free(d->proxies);
}

static int mig_status_gather(const mig_opts *o, PGconn *conn, mig_status_data *d)
{
    const cfg_config *cfg = o->cfg;
    char err[512];
    if (sm_catalog_load(conn, (uint32_t)cfg->nshards, cfg->buckets, &d->map, err, sizeof err) < 0 ||
        sm_catalog_proxies(conn, &d->proxies, &d->nproxies, err, sizeof err) < 0) {
        fprintf(o->err, "pgshard-migrate: status: %s\n", err);
        return -1;
    }
    uint32_t n = sm_map_nshards(d->map);
    d->buckets = calloc(n, sizeof *d->buckets);
    d->overrides = calloc(n, sizeof *d->overrides);
    if (!d->buckets || !d->overrides) {
        fprintf(o->err, "pgshard-migrate: status: out of memory\n");
        return -1;
    }
    for (uint32_t b = 0; b < sm_map_buckets(d->map); b++)
        d->buckets[sm_map_bucket_shard(d->map, b)]++;
    sm_map_each_override(d->map, mig_count_override, d->overrides);
    for (size_t i = 0; i < d->nproxies; i++)
        d->live += d->proxies[i].age_s >= 0 && d->proxies[i].age_s <= MIG_LIVE_S;
    return 0;
}

static bool mig_live(const sm_catalog_proxy *p)
{
    return p->age_s >= 0 && p->age_s <= MIG_LIVE_S;
}

static void mig_print_node(FILE *f, const cfg_node *n)
{
    bool v6 = strchr(n->host, ':') != NULL;
    fprintf(f, "%s%s%s:%u", v6 ? "[" : "", n->host, v6 ? "]" : "", (unsigned)n->port);
}

/* ---- text ---- */

static void mig_status_text(const mig_opts *o, const mig_status_data *d)
{
    FILE *f = o->out;
    size_t nover = sm_map_override_count(d->map);
    fprintf(f, "map_version %llu: %u buckets over %u shards, %zu tenant override%s\n\n",
            (unsigned long long)sm_map_version(d->map), sm_map_buckets(d->map), sm_map_nshards(d->map), nover,
            nover == 1 ? "" : "s");
    fprintf(f, "%-6s %-8s %-10s %s\n", "shard", "buckets", "overrides", "primary");
    for (uint32_t s = 0; s < sm_map_nshards(d->map); s++) {
        fprintf(f, "%-6u %-8u %-10u ", s, d->buckets[s], d->overrides[s]);
        mig_print_node(f, &o->cfg->shards[s].primary);
        fputc('\n', f);
    }
    fprintf(f, "\nproxies: %zu live (heartbeat within %.0f s), %zu not\n", d->live, MIG_LIVE_S,
            d->nproxies - d->live);
    if (d->nproxies > 0)
        fprintf(f, "%-40s %-8s %-12s %-10s %s\n", "id", "pid", "map_version", "age_s", "live");
    for (size_t i = 0; i < d->nproxies; i++) {
        const sm_catalog_proxy *p = &d->proxies[i];
        fprintf(f, "%-40s %-8d %-12lld %-10.1f %s\n", p->id, p->pid, (long long)p->map_version, p->age_s,
                mig_live(p) ? "yes" : "no");
    }
    mig_moves_text(f, d->map);
}

/* ---- JSON ---- */

void mig_json_str(FILE *f, const char *s, size_t len)
{
    fputc('"', f);
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '"' || ch == '\\')
            fprintf(f, "\\%c", ch);
        else if (ch < 0x20)
            fprintf(f, "\\u%04x", ch);
        else
            fputc(ch, f);
    }
    fputc('"', f);
}

void mig_json_cstr(FILE *f, const char *s)
{
    mig_json_str(f, s, strlen(s));
}

static void mig_json_node(FILE *f, const cfg_node *n)
{
    char buf[CFG_HOST_MAX + 16];
    bool v6 = strchr(n->host, ':') != NULL;
    snprintf(buf, sizeof buf, "%s%s%s:%u", v6 ? "[" : "", n->host, v6 ? "]" : "", (unsigned)n->port);
    mig_json_cstr(f, buf);
}

static void mig_json_shards(const mig_opts *o, const mig_status_data *d)
{
    FILE *f = o->out;
    fputs("\"shards\":[", f);
    for (uint32_t s = 0; s < sm_map_nshards(d->map); s++) {
        const cfg_shard *cs = &o->cfg->shards[s];
        fprintf(f, "%s{\"shard\":%u,\"buckets\":%u,\"overrides\":%u,\"primary\":", s ? "," : "", s,
                d->buckets[s], d->overrides[s]);
        mig_json_node(f, &cs->primary);
        fputs(",\"replicas\":[", f);
        for (int r = 0; r < cs->nreplicas; r++) {
            if (r)
                fputc(',', f);
            mig_json_node(f, &cs->replicas[r].node);
        }
        fputs("]}", f);
    }
    fputc(']', f);
}

typedef struct mig_json_ctx {
    FILE *f;
    bool first;
} mig_json_ctx;

static int mig_json_override(void *arg, const char *tenant, size_t len, uint32_t shard)
{
    mig_json_ctx *c = arg;
    fputs(c->first ? "{\"tenant\":" : ",{\"tenant\":", c->f);
    mig_json_str(c->f, tenant, len);
    fprintf(c->f, ",\"shard\":%u}", shard);
    c->first = false;
    return 0;
}

static void mig_json_proxies(FILE *f, const mig_status_data *d)
{
    fputs("\"proxies\":[", f);
    for (size_t i = 0; i < d->nproxies; i++) {
        const sm_catalog_proxy *p = &d->proxies[i];
        fputs(i ? ",{\"id\":" : "{\"id\":", f);
        mig_json_cstr(f, p->id);
        fputs(",\"host\":", f);
        mig_json_cstr(f, p->host);
        fprintf(f, ",\"pid\":%d,\"map_version\":", p->pid);
        if (p->map_version < 0)
            fputs("null", f);
        else
            fprintf(f, "%lld", (long long)p->map_version);
        if (p->age_s < 0)
            fputs(",\"age_s\":null", f);
        else
            fprintf(f, ",\"age_s\":%.3f", p->age_s);
        fprintf(f, ",\"live\":%s}", mig_live(p) ? "true" : "false");
    }
    fputc(']', f);
}

static const char *const mig_move_states[] = {"running", "freezing", "flipped", "failed"};

/* The map's active moves (those the proxies act on), as SHOW MIGRATIONS shows them. */
static void mig_moves_text(FILE *f, const sm_map *map)
{
    size_t n = sm_map_move_count(map);
    fprintf(f, "\nmoves: %zu active%s\n", n, n ? " (pgshard-migrate list shows every move)" : "");
    for (size_t i = 0; i < n; i++) {
        const sm_move *mv = sm_map_move(map, i);
        fprintf(f, "move %lld: shard %u to %u, %s, ", (long long)mv->id, mv->source, mv->target,
                mig_move_states[mv->state < 4 ? mv->state : 0]);
        if (mv->tenant)
            fprintf(f, "tenant %.*s\n", (int)mv->tenant_len, mv->tenant);
        else
            fprintf(f, "%zu buckets\n", mv->nbuckets);
    }
}

static void mig_moves_json(FILE *f, const sm_map *map)
{
    fputs(",\"moves\":[", f);
    for (size_t i = 0; i < sm_map_move_count(map); i++) {
        const sm_move *mv = sm_map_move(map, i);
        fprintf(f, "%s{\"id\":%lld,\"source\":%u,\"target\":%u,\"state\":\"%s\",\"tenant\":", i ? "," : "",
                (long long)mv->id, mv->source, mv->target, mig_move_states[mv->state < 4 ? mv->state : 0]);
        if (mv->tenant)
            mig_json_str(f, mv->tenant, mv->tenant_len);
        else
            fputs("null", f);
        fputs(",\"buckets\":[", f);
        for (size_t b = 0; b < mv->nbuckets; b++)
            fprintf(f, "%s%u", b ? "," : "", mv->buckets[b]);
        fputs("]}", f);
    }
    fputc(']', f);
}

static void mig_status_json(const mig_opts *o, const mig_status_data *d)
{
    FILE *f = o->out;
    mig_json_ctx ctx = {f, true};
    fprintf(f, "{\"map_version\":%llu,\"buckets\":%u,\"nshards\":%u,",
            (unsigned long long)sm_map_version(d->map), sm_map_buckets(d->map), sm_map_nshards(d->map));
    mig_json_shards(o, d);
    fputs(",\"overrides\":[", f);
    sm_map_each_override(d->map, mig_json_override, &ctx);
    fputs("],", f);
    mig_json_proxies(f, d);
    mig_moves_json(f, d->map);
    fprintf(f, ",\"live_proxies\":%zu,\"live_within_s\":%.0f}\n", d->live, MIG_LIVE_S);
}

int mig_status(const mig_opts *o)
{
    mig_status_data d;
    memset(&d, 0, sizeof d);
    PGconn *conn = mig_connect(o);
    if (!conn)
        return MIG_EXIT_ERROR;
    int rc = mig_status_gather(o, conn, &d) < 0 ? MIG_EXIT_ERROR : MIG_EXIT_OK;
    PQfinish(conn);
    if (rc == MIG_EXIT_OK && o->json)
        mig_status_json(o, &d);
    else if (rc == MIG_EXIT_OK)
        mig_status_text(o, &d);
    mig_status_free(&d);
    if (rc == MIG_EXIT_OK && (fflush(o->out) != 0 || ferror(o->out))) {
        fprintf(o->err, "pgshard-migrate: status: cannot write the output\n");
        rc = MIG_EXIT_ERROR;
    }
    return rc;
}

/* Micro-benchmark of routing one tenant-keyed statement on a parse-cache hit: lex, hash,
 * cache lookup, read the key literal, hash it as the server does, map it to a shard
 * (px_sk_route), with maps of 2 and of 32 shards and 1024 or 65536 buckets. The cost must
 * not grow with the number of shards or buckets. Then the same for a join of two sharded
 * tables keyed through its ON clause. Prints ns per statement. Not a test:
 * numbers depend on the machine; `valgrind --tool=callgrind ./tests/bench_route 20000`
 * gives instructions. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config/config.h"
#include "parser/parser.h"
#include "proxy/shardkey.h"
#include "proxy/tables.h"

#define VARIANTS 1024

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static char texts[VARIANTS][192];
static size_t lens[VARIANTS];
static volatile int sink;

static double run(const px_tables *tables, uint32_t nshards, uint32_t buckets, long iters)
{
    sm_map *map;
    if (sm_map_new_default(&map, nshards, buckets) < 0)
        exit(1);
    int nk;
    const char *const *cols = px_tables_key_columns(tables, &nk);
    prs_classify_opts opts = {cols, (size_t)nk};
    prs_cache *cache = prs_cache_create(4096);
    prs_lexed lex = PRS_LEXED_INIT;
    prs_query_info fresh;
    double t0 = 0;
    for (long i = -VARIANTS; i < iters; i++) {
        if (i == 0)
            t0 = now_ns();
        int v = (int)((i + VARIANTS) % VARIANTS);
        if (prs_lex(texts[v], lens[v], &lex) < 0)
            exit(1);
        prs_cache_key key = prs_cache_key_of(&lex, NULL, 0);
        const prs_query_info *qi = prs_cache_lookup(cache, &key);
        if (!qi) {
            if (prs_classify_ex(texts[v], lens[v], &lex, &opts, &fresh) < 0)
                exit(1);
            prs_cache_insert(cache, &key, &fresh);
            qi = &fresh;
        }
        px_sk_input in = {.tables = tables,
                          .map = map,
                          .qi = qi,
                          .sql = texts[v],
                          .len = lens[v],
                          .lex = &lex,
                          .pinned_shard = -1};
        px_sk_result r;
        px_sk_route(&in, &r);
        if (r.verdict != PX_SK_SHARD)
            exit(2);
        sink += r.shard;
    }
    double ns = (now_ns() - t0) / (double)iters;
    prs_lexed_free(&lex);
    prs_cache_destroy(cache);
    sm_map_free(map);
    return ns;
}

int main(int argc, char **argv)
{
    long iters = argc > 1 ? atol(argv[1]) : 2000000;
    static const char ini[] = "[shard.0]\nprimary = 127.0.0.1:5432\n[table.orders]\nshard_key = tenant_id\n"
                              "key_type = int\n[user.app]\npassword = app\n";
    static const char ini_join[] =
        "[shard.0]\nprimary = 127.0.0.1:5432\n[table.orders]\nshard_key = tenant_id\n"
        "key_type = int\n[table.order_items]\nshard_key = tenant_id\nkey_type = int\n"
        "[user.app]\npassword = app\n";
    cfg_config *cfg, *cfg_join;
    px_tables *tables, *tables_join;
    char err[256];
    if (cfg_load_string(ini, "bench.ini", &cfg, err, sizeof err) < 0 ||
        px_tables_build(cfg, &tables, err, sizeof err) < 0 ||
        cfg_load_string(ini_join, "bench.ini", &cfg_join, err, sizeof err) < 0 ||
        px_tables_build(cfg_join, &tables_join, err, sizeof err) < 0) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    for (int i = 0; i < VARIANTS; i++)
        lens[i] = (size_t)snprintf(texts[i], sizeof texts[i],
                                   "SELECT id, amount FROM orders WHERE tenant_id = %d AND id = %d",
                                   (i * 7919) % 100000 + 1, i % 50 + 1);
    printf(
        "route of a keyed SELECT, cache hit: 2 shards/1024 buckets %.0f ns, 32 shards/1024 buckets %.0f ns, "
        "32 shards/65536 buckets %.0f ns\n",
        run(tables, 2, 1024, iters), run(tables, 32, 1024, iters), run(tables, 32, 65536, iters));
    for (int i = 0; i < VARIANTS; i++)
        lens[i] = (size_t)snprintf(
            texts[i], sizeof texts[i],
            "SELECT o.id, i.sku FROM orders o JOIN order_items i ON i.tenant_id = o.tenant_id "
            "AND i.order_id = o.id WHERE o.tenant_id = %d AND o.id = %d",
            (i * 7919) % 100000 + 1, i % 50 + 1);
    printf("route of a keyed two-table join, cache hit: 2 shards/1024 buckets %.0f ns\n",
           run(tables_join, 2, 1024, iters));
    px_tables_free(tables);
    px_tables_free(tables_join);
    cfg_free(cfg);
    cfg_free(cfg_join);
    return 0;
}

/* The shard map's storage and routing: a bucket -> shard array, an open-addressing hash
 * table of tenant overrides keyed by canonical key text, and the active moves with a bitmap
 * of the buckets freezing ones hold back. Parsing and hashing of keys live in key.c and
 * hash.c; where a map comes from (the catalog) is not this file's business. */
#include "shardmap/map.h"

#include <stdlib.h>
#include <string.h>

#include "shardmap/hash.h"

/* One slot of the override table. */
typedef struct sm_override {
    char *tenant; /* owned; NULL marks an empty slot */
    size_t len;
    uint64_t hash; /* sm_hash_text of the tenant, kept so growing never rehashes text */
    uint32_t shard;
} sm_override;

struct sm_map {
    uint32_t buckets;
    uint32_t nshards;
    uint64_t version;
    uint16_t *bucket_shard; /* owned: buckets entries (a shard number fits, SM_MAX_SHARDS) */
    sm_override *slots;     /* owned, with the tenants in it; cap slots, NULL while cap is 0 */
    size_t cap;             /* 0 or a power of two, at least twice n_overrides */
    size_t n_overrides;
    sm_move *moves; /* owned, nmoves, with their tenants and buckets */
    size_t nmoves;
    size_t nfrozen;        /* moves in SM_MOVE_FREEZING: routing looks for held keys only when not 0 */
    uint64_t *frozen_bits; /* owned: one bit per bucket a freezing bucket move holds; NULL when none */
    uint64_t serial;
    uint64_t moves_sig;
};

static bool buckets_valid(uint32_t buckets)
{
    return buckets >= 1 && buckets <= SM_MAX_BUCKETS && (buckets & (buckets - 1)) == 0;
}

int sm_map_new_default(sm_map **out, uint32_t nshards, uint32_t buckets)
{
    sm_map *m;

    if (out == NULL)
        return SM_EINVAL;
    if (buckets == 0)
        buckets = SM_DEFAULT_BUCKETS;
    if (!buckets_valid(buckets))
        return SM_EBUCKETS;
    if (nshards < 1 || nshards > SM_MAX_SHARDS)
        return SM_ESHARD;
    if ((m = calloc(1, sizeof(*m))) == NULL)
        return SM_ENOMEM;
    if ((m->bucket_shard = malloc(buckets * sizeof(*m->bucket_shard))) == NULL) {
        free(m);
        return SM_ENOMEM;
    }
    m->buckets = buckets;
    m->nshards = nshards;
    for (uint32_t b = 0; b < buckets; b++)
        m->bucket_shard[b] = (uint16_t)((uint64_t)b * nshards / buckets);
    *out = m;
    return 0;
}

int sm_map_set_bucket(sm_map *m, uint32_t bucket, uint32_t shard)
{
    if (m == NULL)
        return SM_EINVAL;
    if (bucket >= m->buckets)
        return SM_EBUCKET;
    if (shard >= m->nshards)
        return SM_ESHARD;
    m->bucket_shard[bucket] = (uint16_t)shard;
    return 0;
}

/* The slot holding tenant, or the empty slot where it would go. The table is never more
 * than half full, so the probe ends. cap must not be 0. */
static sm_override *find_slot(sm_override *slots, size_t cap, const char *tenant, size_t len, uint64_t hash)
{
    size_t mask = cap - 1;

    for (size_t i = (size_t)hash & mask;; i = (i + 1) & mask) {
        sm_override *s = &slots[i];
        if (s->tenant == NULL)
            return s;
        if (s->hash == hash && s->len == len && memcmp(s->tenant, tenant, len) == 0)
            return s;
    }
}

/* Makes room for one more override, doubling the table (and moving the entries, whose
 * tenants stay where they are) when it would pass half full. */
static int reserve_override(sm_map *m)
{
    size_t cap = m->cap ? m->cap * 2 : 16;
    sm_override *slots;

    if ((m->n_overrides + 1) * 2 <= m->cap)
        return 0;
    if ((slots = calloc(cap, sizeof(*slots))) == NULL)
        return SM_ENOMEM;
    for (size_t i = 0; i < m->cap; i++) {
        sm_override *s = &m->slots[i];
        if (s->tenant != NULL)
            *find_slot(slots, cap, s->tenant, s->len, s->hash) = *s;
    }
    free(m->slots);
    m->slots = slots;
    m->cap = cap;
    return 0;
}

int sm_map_add_override(sm_map *m, const char *tenant, size_t len, uint32_t shard)
{
    uint64_t hash;
    sm_override *s;
    char *copy;

    if (m == NULL || (tenant == NULL && len > 0))
        return SM_EINVAL;
    if (shard >= m->nshards)
        return SM_ESHARD;
    if (len > 0 && memchr(tenant, '\0', len) != NULL)
        return SM_ENUL;
    if (sm_map_override_shard(m, tenant, len) >= 0)
        return SM_EEXIST;
    if (reserve_override(m) < 0 || (copy = malloc(len + 1)) == NULL)
        return SM_ENOMEM;
    if (len > 0)
        memcpy(copy, tenant, len);
    copy[len] = '\0';
    hash = sm_hash_text(copy, len);
    s = find_slot(m->slots, m->cap, copy, len, hash);
    *s = (sm_override){.tenant = copy, .len = len, .hash = hash, .shard = shard};
    m->n_overrides++;
    return 0;
}

void sm_map_set_version(sm_map *m, uint64_t version)
{
    if (m != NULL)
        m->version = version;
}

/* A move's checks, before anything is copied. */
static int move_valid(const sm_map *m, const sm_move *mv)
{
    if ((mv->buckets == NULL) == (mv->tenant == NULL) || (mv->buckets == NULL && mv->nbuckets > 0))
        return SM_EINVAL;
    if (mv->source >= m->nshards || mv->target >= m->nshards || mv->source == mv->target)
        return SM_ESHARD;
    if (mv->tenant != NULL && memchr(mv->tenant, '\0', mv->tenant_len) != NULL)
        return SM_ENUL;
    if (mv->tenant != NULL && mv->tenant_bucket >= 0 && (uint32_t)mv->tenant_bucket >= m->buckets)
        return SM_EBUCKET;
    for (size_t i = 0; i < mv->nbuckets; i++)
        if (mv->buckets[i] >= m->buckets)
            return SM_EBUCKET;
    return 0;
}

/* Marks a freezing bucket move's buckets in the bitmap, made on first use. */
static int move_freeze_buckets(sm_map *m, const sm_move *mv)
{
    if (m->frozen_bits == NULL && (m->frozen_bits = calloc((m->buckets + 63) / 64, sizeof(uint64_t))) == NULL)
        return SM_ENOMEM;
    for (size_t i = 0; i < mv->nbuckets; i++)
        m->frozen_bits[mv->buckets[i] / 64] |= 1ull << (mv->buckets[i] % 64);
    return 0;
}

int sm_map_add_move(sm_map *m, const sm_move *move)
{
    sm_move mv, *grown;
    char *tenant = NULL;
    uint32_t *buckets = NULL;
    int rc;

    if (m == NULL || move == NULL)
        return SM_EINVAL;
    if ((rc = move_valid(m, move)) < 0)
        return rc;
    mv = *move;
    if (mv.tenant != NULL && (tenant = malloc(mv.tenant_len + 1)) != NULL) {
        memcpy(tenant, mv.tenant, mv.tenant_len);
        tenant[mv.tenant_len] = '\0';
    }
    if (mv.buckets != NULL && (buckets = malloc((mv.nbuckets ? mv.nbuckets : 1) * sizeof(*buckets))) != NULL)
        memcpy(buckets, mv.buckets, mv.nbuckets * sizeof(*buckets));
    grown = (tenant != NULL || buckets != NULL) ? realloc(m->moves, (m->nmoves + 1) * sizeof(*grown)) : NULL;
    if (grown != NULL)
        m->moves = grown;
    if (grown == NULL ||
        (mv.state == SM_MOVE_FREEZING && buckets != NULL && move_freeze_buckets(m, &mv) < 0)) {
        free(tenant);
        free(buckets);
        return SM_ENOMEM;
    }
    mv.tenant = tenant;
    mv.buckets = buckets;
    m->moves[m->nmoves++] = mv;
    m->nfrozen += mv.state == SM_MOVE_FREEZING;
    return 0;
}

void sm_map_set_serial(sm_map *m, uint64_t serial)
{
    if (m != NULL)
        m->serial = serial;
}

void sm_map_set_moves_sig(sm_map *m, uint64_t sig)
{
    if (m != NULL)
        m->moves_sig = sig;
}

void sm_map_free(sm_map *m)
{
    if (m == NULL)
        return;
    for (size_t i = 0; i < m->nmoves; i++) {
        free((char *)m->moves[i].tenant);
        free((uint32_t *)m->moves[i].buckets);
    }
    free(m->moves);
    free(m->frozen_bits);
    for (size_t i = 0; i < m->cap; i++)
        free(m->slots[i].tenant);
    free(m->slots);
    free(m->bucket_shard);
    free(m);
}

uint32_t sm_map_buckets(const sm_map *m)
{
    return m->buckets;
}
uint32_t sm_map_nshards(const sm_map *m)
{
    return m->nshards;
}
uint64_t sm_map_version(const sm_map *m)
{
    return m->version;
}
size_t sm_map_override_count(const sm_map *m)
{
    return m->n_overrides;
}

uint64_t sm_map_serial(const sm_map *m)
{
    return m->serial;
}
uint64_t sm_map_moves_sig(const sm_map *m)
{
    return m->moves_sig;
}
size_t sm_map_move_count(const sm_map *m)
{
    return m->nmoves;
}
const sm_move *sm_map_move(const sm_map *m, size_t i)
{
    return i < m->nmoves ? &m->moves[i] : NULL;
}
bool sm_map_freezing(const sm_map *m)
{
    return m->nfrozen > 0;
}

static bool move_has_bucket(const sm_move *mv, uint32_t bucket)
{
    for (size_t i = 0; i < mv->nbuckets; i++)
        if (mv->buckets[i] == bucket)
            return true;
    return false;
}

int sm_map_frozen_on(const sm_map *m, uint32_t shard, int64_t bucket)
{
    for (size_t i = 0; i < m->nmoves && m->nfrozen > 0; i++) {
        const sm_move *mv = &m->moves[i];
        if (mv->state != SM_MOVE_FREEZING || mv->source != shard)
            continue;
        if (bucket < 0 || (mv->tenant != NULL && (mv->tenant_bucket < 0 || mv->tenant_bucket == bucket)) ||
            (mv->buckets != NULL && move_has_bucket(mv, (uint32_t)bucket)))
            return (int)i;
    }
    return -1;
}

/* The freezing move that holds key back, or -1: its bucket is in a freezing bucket move, or
 * its canonical text is a freezing tenant move's tenant. Only called while some move freezes,
 * so the canonical text is made here rather than on every route. */
static int route_frozen(const sm_map *m, const sm_key *key, uint32_t bucket)
{
    sm_key_buf buf;
    const char *text = NULL;
    size_t len = 0;

    for (size_t i = 0; i < m->nmoves; i++) {
        const sm_move *mv = &m->moves[i];
        if (mv->state != SM_MOVE_FREEZING)
            continue;
        if (mv->buckets != NULL && (m->frozen_bits[bucket / 64] >> (bucket % 64) & 1) &&
            move_has_bucket(mv, bucket))
            return (int)i;
        if (mv->tenant != NULL && text == NULL)
            text = sm_key_canonical(key, &buf, &len);
        if (mv->tenant != NULL && len == mv->tenant_len && (len == 0 || memcmp(text, mv->tenant, len) == 0))
            return (int)i;
    }
    return -1;
}

int sm_map_bucket_shard(const sm_map *m, uint32_t bucket)
{
    return bucket < m->buckets ? m->bucket_shard[bucket] : SM_EBUCKET;
}

int sm_map_each_override(const sm_map *m, sm_override_fn fn, void *arg)
{
    for (size_t i = 0; i < m->cap; i++) {
        const sm_override *s = &m->slots[i];
        int rc = s->tenant != NULL ? fn(arg, s->tenant, s->len, s->shard) : 0;
        if (rc != 0)
            return rc;
    }
    return 0;
}

uint32_t sm_map_shard_buckets(const sm_map *m, uint32_t shard)
{
    uint32_t n = 0;

    for (uint32_t b = 0; b < m->buckets; b++)
        n += m->bucket_shard[b] == shard;
    return n;
}

/* hash is sm_hash_text(tenant, len), which a text key's route already has. */
static int override_lookup(const sm_map *m, const char *tenant, size_t len, uint64_t hash)
{
    const sm_override *s;

    if (m->n_overrides == 0)
        return -1;
    s = find_slot(m->slots, m->cap, tenant, len, hash);
    return s->tenant != NULL ? (int)s->shard : -1;
}

int sm_map_override_shard(const sm_map *m, const char *tenant, size_t len)
{
    if (m->n_overrides == 0 || (tenant == NULL && len > 0))
        return -1;
    return override_lookup(m, tenant, len, sm_hash_text(tenant, len));
}

/* The override of key, or -1. A text key's canonical text is its bytes, so its hash is
 * already the table's; an int or uuid key is formatted and hashed as text first. Nothing
 * is done when the map has no overrides, the common case. */
static int key_override(const sm_map *m, const sm_key *key, uint64_t key_hash)
{
    sm_key_buf buf;
    const char *text;
    size_t len;

    if (m->n_overrides == 0)
        return -1;
    text = sm_key_canonical(key, &buf, &len);
    return override_lookup(m, text, len, key->type == SM_KEY_TEXT ? key_hash : sm_hash_text(text, len));
}

int sm_map_route(const sm_map *m, const sm_key *key, sm_route_why *why)
{
    sm_route_why w;
    int over;

    if (m == NULL || key == NULL)
        return SM_EINVAL;
    w.hash = sm_key_hash(key);
    w.bucket = sm_bucket_of(w.hash, m->buckets);
    w.bucket_shard = m->bucket_shard[w.bucket];
    over = key_override(m, key, w.hash);
    w.override = over >= 0;
    w.shard = w.override ? (uint32_t)over : w.bucket_shard;
    w.frozen = m->nfrozen == 0 ? -1 : route_frozen(m, key, w.bucket);
    if (why != NULL)
        *why = w;
    return (int)w.shard;
}

/* The shard map: which shard holds a key. Two layers, as the catalog has them: bucket ->
 * shard for every bucket, and tenant -> shard overrides that win over the bucket (a big
 * tenant isolated on a shard of its own), plus the map_version they were read at. A map is
 * built once with the builder calls below and never changed after it is published, so
 * threads may route through it without locks. No I/O: loading it from the catalog is not
 * here. */
#ifndef SM_MAP_H
#define SM_MAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "shardmap/key.h"

#define SM_DEFAULT_BUCKETS 1024u
#define SM_MAX_BUCKETS 65536u
#define SM_MAX_SHARDS 65536u

typedef struct sm_map sm_map;

/* How a key was routed, for SHOW ROUTE and debug logs. */
typedef struct sm_route_why {
    uint64_t hash;         /* sm_key_hash of the key */
    uint32_t bucket;       /* hash & (buckets - 1) */
    uint32_t bucket_shard; /* the shard that owns the bucket */
    uint32_t shard;        /* where the key goes: the override's shard, or else bucket_shard */
    bool override;         /* a tenant override decided */
} sm_route_why;

/* Makes the map a new cluster starts with: nshards shards (1..SM_MAX_SHARDS), buckets
 * buckets (a power of two, 1..SM_MAX_BUCKETS; 0 means SM_DEFAULT_BUCKETS), shard s owning
 * the contiguous buckets b with b * nshards / buckets == s, no overrides, version 0. *out
 * is the caller's, to free with sm_map_free. Returns 0, SM_ESHARD, SM_EBUCKETS or
 * SM_ENOMEM. */
int sm_map_new_default(sm_map **out, uint32_t nshards, uint32_t buckets);

/* Builder calls, only before the map is published. They leave the map unchanged when they
 * fail. */
/* Gives bucket to shard. Returns 0, SM_EBUCKET or SM_ESHARD. */
int sm_map_set_bucket(sm_map *m, uint32_t bucket, uint32_t shard);
/* Sends the tenant whose canonical key text (sm_key_canonical) is tenant[0..len) to shard.
 * The text is copied. Returns 0, SM_ESHARD, SM_EEXIST (an override for it exists), SM_ENUL
 * (it could match no key), SM_EINVAL or SM_ENOMEM. */
int sm_map_add_override(sm_map *m, const char *tenant, size_t len, uint32_t shard);
void sm_map_set_version(sm_map *m, uint64_t version);

/* Frees the map and everything it holds; NULL is fine. */
void sm_map_free(sm_map *m);

uint32_t sm_map_buckets(const sm_map *m);
uint32_t sm_map_nshards(const sm_map *m);
uint64_t sm_map_version(const sm_map *m);
size_t sm_map_override_count(const sm_map *m);
/* The shard that owns bucket, or SM_EBUCKET. */
int sm_map_bucket_shard(const sm_map *m, uint32_t bucket);
/* The shard of tenant[0..len)'s override, or -1 when it has none. */
int sm_map_override_shard(const sm_map *m, const char *tenant, size_t len);

/* Calls fn(arg, tenant, len, shard) once per tenant override, in no particular order; the
 * tenant text is the map's (not NUL-terminated for the callback's purposes: use len). Stops
 * at the first non-zero return of fn and returns it; 0 when every override was seen. */
typedef int (*sm_override_fn)(void *arg, const char *tenant, size_t len, uint32_t shard);
int sm_map_each_override(const sm_map *m, sm_override_fn fn, void *arg);

/* The number of buckets shard owns (0 for a shard the map does not have). */
uint32_t sm_map_shard_buckets(const sm_map *m, uint32_t shard);

/* The shard that holds key: its tenant override if the map has one, else its bucket's
 * owner. Fills *why when why is not NULL. Time does not depend on the number of shards,
 * buckets or overrides. Returns the shard number, or SM_EINVAL. */
int sm_map_route(const sm_map *m, const sm_key *key, sm_route_why *why);

#endif

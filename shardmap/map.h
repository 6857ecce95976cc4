/* The shard map: which shard holds a key. Two layers, as the catalog has them: bucket ->
 * shard for every bucket, and tenant -> shard overrides that win over the bucket (a big
 * tenant isolated on a shard of its own), plus the map_version they were read at. On top,
 * the moves the catalog holds as active (pgshard-migrate move), read in the same snapshot so
 * that a reader sees the map and its moves together: which keys a freezing move holds back.
 * A map is built once with the builder calls below and never changed after it is published,
 * so threads may route through it without locks. No I/O: loading it from the catalog is not
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
    int frozen;            /* the index (sm_map_move) of a freezing move that holds the key back, or -1 */
} sm_route_why;

/* A move's state as the catalog's migrations.state says; 'done' and 'aborted' moves are not
 * active and never reach a map. */
typedef enum sm_move_state {
    SM_MOVE_RUNNING,  /* copying and catching up: keys still go to the source */
    SM_MOVE_FREEZING, /* new transactions for its keys are held until it flips or unfreezes */
    SM_MOVE_FLIPPED,  /* the map sends its keys to the target; cleanup runs */
    SM_MOVE_FAILED,   /* stopped with an error, waiting for resume or abort */
} sm_move_state;

/* One active move (a row of pgshard.migrations). A bucket move has buckets, a tenant move a
 * tenant; the map owns both once added. */
typedef struct sm_move {
    int64_t id;
    uint32_t source, target;
    uint8_t state;      /* sm_move_state */
    int32_t freeze_seq; /* each freeze takes a new one: acknowledgements name it */
    const char *tenant; /* a tenant move's canonical key text (NUL-terminated), else NULL */
    size_t tenant_len;
    int32_t tenant_bucket;   /* a tenant move's bucket, -1 when the catalog does not say */
    const uint32_t *buckets; /* a bucket move's buckets, else NULL */
    size_t nbuckets;
} sm_move;

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

/* Adds an active move, copying its tenant text and buckets. Returns 0, SM_ESHARD (source or
 * target not below nshards, or the same), SM_EBUCKET (a bucket or tenant_bucket not below
 * buckets), SM_ENUL, SM_EINVAL (neither or both of buckets and tenant) or SM_ENOMEM. */
int sm_map_add_move(sm_map *m, const sm_move *move);
/* A number the publisher gives each map it publishes, larger for a newer one, so that a
 * reader can tell whether the map it acted on is still the newest. 0 until set. */
void sm_map_set_serial(sm_map *m, uint64_t serial);
/* What the catalog's moves looked like when read (sm_catalog_moves_sig), so that a cheap
 * check can tell whether they changed without a load. */
void sm_map_set_moves_sig(sm_map *m, uint64_t sig);

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

uint64_t sm_map_serial(const sm_map *m);
uint64_t sm_map_moves_sig(const sm_map *m);
/* The active moves, in the order they were added (the catalog's: by id). */
size_t sm_map_move_count(const sm_map *m);
const sm_move *sm_map_move(const sm_map *m, size_t i);
/* Whether some move is freezing its keys. */
bool sm_map_freezing(const sm_map *m);
/* The index of a freezing move whose source is shard and whose keys a transaction routed by
 * a key of bucket may touch, or -1. bucket < 0 means the bucket is not known (several keys,
 * or none said): then any freezing move out of shard counts. A tenant move counts for its
 * tenant_bucket, or for every bucket when that is not known. */
int sm_map_frozen_on(const sm_map *m, uint32_t shard, int64_t bucket);

/* The number of buckets shard owns (0 for a shard the map does not have). */
uint32_t sm_map_shard_buckets(const sm_map *m, uint32_t shard);

/* The shard that holds key: its tenant override if the map has one, else its bucket's
 * owner. Fills *why when why is not NULL, with the freezing move that holds the key back
 * (why->frozen); that costs one test while no move freezes. Time does not depend on the
 * number of shards, buckets or overrides. Returns the shard number, or SM_EINVAL. */
int sm_map_route(const sm_map *m, const sm_key *key, sm_route_why *why);

#endif

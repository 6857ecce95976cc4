/* The shard-key hash functions, bit-identical to PostgreSQL 15's hashint8extended(v, 0),
 * hashtextextended(v, 0) under a deterministic collation, and uuid_hash_extended(v, 0), and
 * the bucket of a hash. Pure arithmetic: no parsing (see key.h), no allocation, no state. */
#ifndef SM_HASH_H
#define SM_HASH_H

#include <stddef.h>
#include <stdint.h>

/* hashint8extended(v, 0). int2 and int4 values give the same hash when widened to int8, as
 * the server's hashint2extended and hashint4extended do. */
uint64_t sm_hash_int8(int64_t v);

/* hashtextextended(v, 0) of the len bytes at p (the text's bytes in the server's encoding,
 * without a terminating NUL). p may be NULL when len is 0. len is at most 1 GB, as any
 * varlena's. */
uint64_t sm_hash_text(const void *p, size_t len);

/* uuid_hash_extended(v, 0) of the 16 bytes of a uuid in network order. */
uint64_t sm_hash_uuid(const uint8_t uuid[16]);

/* hash & (buckets - 1); buckets must be a power of two. The same as `hash & (buckets - 1)`
 * in SQL on the server's (signed) bigint result. */
static inline uint32_t sm_bucket_of(uint64_t hash, uint32_t buckets)
{
    return (uint32_t)(hash & (uint64_t)(buckets - 1));
}

#endif

/* Bob Jenkins' lookup3 hash as PostgreSQL's src/common/hashfn.c implements it
 * (hash_bytes_extended, hash_bytes_uint32_extended), and the three shard-key hashes built on
 * it. It holds no key parsing and no bucket-to-shard mapping. */
#include "shardmap/hash.h"

#include <string.h>

/* The initial state of lookup3 as PostgreSQL sets it: the golden ratio, plus the key length,
 * plus the arbitrary 3923095. */
#define SM_L3_INIT 0x9e3779b9u
#define SM_L3_SALT 3923095u

typedef struct sm_l3 {
    uint32_t a, b, c;
} sm_l3;

static inline uint32_t rot(uint32_t x, unsigned k)
{
    return (x << k) | (x >> (32 - k));
}

/* lookup3's mix(): mixes three 32-bit values reversibly, once per 12-byte block. */
static inline void l3_mix(sm_l3 *s)
{
    s->a -= s->c;
    s->a ^= rot(s->c, 4);
    s->c += s->b;
    s->b -= s->a;
    s->b ^= rot(s->a, 6);
    s->a += s->c;
    s->c -= s->b;
    s->c ^= rot(s->b, 8);
    s->b += s->a;
    s->a -= s->c;
    s->a ^= rot(s->c, 16);
    s->c += s->b;
    s->b -= s->a;
    s->b ^= rot(s->a, 19);
    s->a += s->c;
    s->c -= s->b;
    s->c ^= rot(s->b, 4);
    s->b += s->a;
}

/* lookup3's final(): the last mixing, after which c (and b, less well) is the hash. */
static inline void l3_final(sm_l3 *s)
{
    s->c ^= s->b;
    s->c -= rot(s->b, 14);
    s->a ^= s->c;
    s->a -= rot(s->c, 11);
    s->b ^= s->a;
    s->b -= rot(s->a, 25);
    s->c ^= s->b;
    s->c -= rot(s->b, 16);
    s->a ^= s->c;
    s->a -= rot(s->c, 4);
    s->b ^= s->a;
    s->b -= rot(s->a, 14);
    s->c ^= s->b;
    s->c -= rot(s->b, 24);
}

/* PostgreSQL reads the key as native 32-bit words, so its hashes differ between little- and
 * big-endian servers. Every server we shard over is little-endian (x86-64, arm64), so the
 * words are assembled little-endian here whatever the host, from bytes at any alignment. */
static inline uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Both extended functions start alike; a zero seed (the only one the shard hashes use)
 * leaves the state untouched, as in PostgreSQL. */
static void l3_init(sm_l3 *s, uint32_t len, uint64_t seed)
{
    s->a = s->b = s->c = SM_L3_INIT + len + SM_L3_SALT;
    if (seed != 0) {
        s->a += (uint32_t)(seed >> 32);
        s->b += (uint32_t)seed;
        l3_mix(s);
    }
}

/* hash_bytes_extended(). The last 0..11 bytes are added as hashfn.c's little-endian switch
 * adds them: bytes 0-3 to a, 4-7 to b, 8-10 to c shifted up by one byte (c's lowest byte
 * "is reserved for the length"). Copying them into a zeroed 12-byte block and adding whole
 * words is the same sum, since the missing bytes add zero; with no bytes left nothing
 * changes, as in the switch's case 0. */
static uint64_t l3_hash_bytes(const uint8_t *k, uint32_t len, uint64_t seed)
{
    sm_l3 s;
    uint8_t tail[12] = {0};

    l3_init(&s, len, seed);
    while (len >= 12) {
        s.a += le32(k);
        s.b += le32(k + 4);
        s.c += le32(k + 8);
        l3_mix(&s);
        k += 12;
        len -= 12;
    }
    if (len > 0)
        memcpy(tail, k, len);
    s.a += le32(tail);
    s.b += le32(tail + 4);
    s.c += le32(tail + 8) << 8;
    l3_final(&s);
    return (uint64_t)s.b << 32 | s.c;
}

/* hash_bytes_uint32_extended(): the hash of the four bytes of k, without storing them. */
static uint64_t l3_hash_uint32(uint32_t k, uint64_t seed)
{
    sm_l3 s;

    l3_init(&s, (uint32_t)sizeof(uint32_t), seed);
    s.a += k;
    l3_final(&s);
    return (uint64_t)s.b << 32 | s.c;
}

/* hashint8extended folds the high half into the low one, complemented for negative values,
 * so that an int8 equal to an int4 or int2 hashes as that value does. */
uint64_t sm_hash_int8(int64_t v)
{
    uint32_t lo = (uint32_t)(uint64_t)v;
    uint32_t hi = (uint32_t)((uint64_t)v >> 32);

    lo ^= v >= 0 ? hi : ~hi;
    return l3_hash_uint32(lo, 0);
}

uint64_t sm_hash_text(const void *p, size_t len)
{
    return l3_hash_bytes(p, (uint32_t)len, 0);
}

uint64_t sm_hash_uuid(const uint8_t uuid[16])
{
    return l3_hash_bytes(uuid, 16, 0);
}

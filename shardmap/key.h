/* Shard-key values: the three kinds a shard-key column can hold, read from the text or
 * binary form a client sends as PostgreSQL's input and receive functions would read them,
 * their canonical text (what the catalog's tenant_map.tenant holds) and their hash. Also the
 * error codes of the shardmap library. No I/O, no allocation: a text key borrows its bytes. */
#ifndef SM_KEY_H
#define SM_KEY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Error codes of the shardmap library. The value errors say what the server itself would
 * say of the value (sm_sqlstate), so the proxy can refuse it before it reaches a shard. */
enum {
    SM_EINVAL = -1,    /* bad argument: NULL, or a type the function does not take */
    SM_ETYPE = -2,     /* the column's type cannot be a shard key */
    SM_ESYNTAX = -3,   /* the type's input function would refuse the text (22P02) */
    SM_ERANGE = -4,    /* out of range for the column's type (22003) */
    SM_EBINARY = -5,   /* a binary value of the wrong length for its type (22P03) */
    SM_ENUL = -6,      /* a NUL byte in a text value: no server encoding allows it (22021) */
    SM_ENOMEM = -7,    /* an allocation failed */
    SM_EBUCKETS = -8,  /* a bucket count that is not a power of two in 1..SM_MAX_BUCKETS */
    SM_EBUCKET = -9,   /* a bucket number not below the map's bucket count */
    SM_ESHARD = -10,   /* a shard number not below the map's shard count, or a count not in
                          1..SM_MAX_SHARDS */
    SM_EEXIST = -11,   /* the map already has an override for this tenant */
    SM_ECATALOG = -12, /* the catalog database failed, or holds no valid map (catalog.c) */
};

/* A short English message for an error code, for logs and ErrorResponses. */
const char *sm_strerror(int err);
/* The SQLSTATE PostgreSQL uses for the same fault of a value; "XX000" for the errors that
 * are not about a value (a bug or an exhausted machine). */
const char *sm_sqlstate(int err);

/* PostgreSQL type OIDs of the columns a shard key may live in. varchar hashes as text (it
 * has no hash operator class of its own); bpchar does not (it strips trailing blanks). */
enum {
    SM_OID_INT8 = 20,
    SM_OID_INT2 = 21,
    SM_OID_INT4 = 23,
    SM_OID_TEXT = 25,
    SM_OID_VARCHAR = 1043,
    SM_OID_UUID = 2950,
};

/* int2, int4 and int8 are one kind: the server hashes them all as int8. */
typedef enum sm_key_type { SM_KEY_INT, SM_KEY_TEXT, SM_KEY_UUID } sm_key_type;

typedef struct sm_key {
    sm_key_type type;
    union {
        int64_t i;        /* SM_KEY_INT */
        uint8_t uuid[16]; /* SM_KEY_UUID, in network order */
        struct {
            const char *p; /* not owned: the caller's bytes, which must outlive the key; no NUL */
            size_t len;
        } text; /* SM_KEY_TEXT */
    } v;
} sm_key;

static inline sm_key sm_key_int(int64_t v)
{
    sm_key k = {.type = SM_KEY_INT};
    k.v.i = v;
    return k;
}
/* p is borrowed, not copied. */
static inline sm_key sm_key_text(const char *p, size_t len)
{
    sm_key k = {.type = SM_KEY_TEXT};
    k.v.text.p = p;
    k.v.text.len = len;
    return k;
}
static inline sm_key sm_key_uuid(const uint8_t uuid[16])
{
    sm_key k = {.type = SM_KEY_UUID};
    memcpy(k.v.uuid, uuid, 16);
    return k;
}

/* The key kind of a column of PostgreSQL type type_oid (SM_OID_*), or SM_ETYPE. */
int sm_key_type_of(uint32_t type_oid);

/* Reads s[0..len) (no NUL needed) as the input function of type_oid would: int2in, int4in,
 * int8in (blanks around an optionally signed run of decimal digits, nothing else; a value
 * outside the column type's range is SM_ERANGE), uuid_in (32 hex digits of either case, a
 * hyphen allowed after any group of four but the last, optionally in braces) or textin (the
 * bytes as they are, which *key then borrows). */
int sm_key_from_text(sm_key *key, uint32_t type_oid, const char *s, size_t len);

/* Reads a binary Bind parameter p[0..len) as the receive function of type_oid would:
 * big-endian integers of exactly 2, 4 or 8 bytes, a uuid of exactly 16 bytes, or text's raw
 * bytes (borrowed by *key). */
int sm_key_from_binary(sm_key *key, uint32_t type_oid, const uint8_t *p, size_t len);

/* Room for the longest canonical int or uuid ("-9223372036854775808", 36-char uuid). */
#define SM_KEY_CANON_MAX 40
typedef struct sm_key_buf {
    char s[SM_KEY_CANON_MAX];
} sm_key_buf;

/* The canonical text of a key, as the server's output function writes it: decimal for
 * ints, lowercase hyphenated for a uuid, the bytes themselves for text. Returns a pointer to
 * buf->s (NUL-terminated) for an int or uuid, or to the key's own borrowed bytes (not
 * NUL-terminated) for text; *len gets the length either way. */
const char *sm_key_canonical(const sm_key *key, sm_key_buf *buf, size_t *len);

/* The server's hash of the key: sm_hash_int8, sm_hash_text or sm_hash_uuid. */
uint64_t sm_key_hash(const sm_key *key);

#endif

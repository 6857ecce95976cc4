/* Named prepared statements in transaction pooling. A client's statement is registered
 * in its worker under a hash of its text and parameter types and runs on any server as
 * "pgshard_<hash>"; each server remembers which it has (bounded, least recently used ones
 * closed). Also the queue of replies a server still owes, which places the replies the
 * proxy answers itself (ParseComplete, CloseComplete) exactly where PostgreSQL would. */
#ifndef PX_PREPARED_H
#define PX_PREPARED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "proxy/shardkey.h"

/* Open-addressing map from a non-zero 64-bit key to a pointer. */
typedef struct px_htab {
    uint64_t *keys; /* owned; 0 = empty slot */
    void **vals;    /* owned array; the values are the user's */
    size_t cap;     /* power of two, or 0 */
    size_t n;
} px_htab;

void *px_htab_get(const px_htab *t, uint64_t key);
int px_htab_put(px_htab *t, uint64_t key, void *val);
void *px_htab_del(px_htab *t, uint64_t key);
void px_htab_free(px_htab *t);

uint64_t px_hash64(const void *p, size_t n, uint64_t seed);

/* A statement's text and parameter types: the body of a Parse message after its name. */
typedef struct px_stmt {
    uint64_t hash;
    uint32_t refs;   /* client names pointing here */
    bool sql;        /* from SQL PREPARE: body is the text after the name */
    uint8_t route;   /* 0 = not yet classified, 1 = may run on a replica, 2 = primary */
    px_sk_plan plan; /* how its Binds find their shard (sharded configs) */
    bool pin_known;  /* pin and unpin are set */
    uint8_t pin;     /* PRS_PIN_* a run of it leaves on the server, and removes */
    uint16_t unpin;
    size_t body_len;
    uint8_t body[]; /* query\0 int16 n, n x int32 type oids */
} px_stmt;

#define PX_STMT_NAME_LEN 25 /* "pgshard_" + 16 hex + NUL */
void px_stmt_name(uint64_t hash, char out[PX_STMT_NAME_LEN]);

/* Per-worker registry of statements, shared by that worker's clients. */
/* seed separates statements whose meaning depends on session state (search_path). */
px_stmt *px_stmt_register(px_htab *reg, const uint8_t *body, size_t n, uint64_t seed);
void px_stmt_unref(px_htab *reg, px_stmt *st);

/* A client's names for its statements. */
typedef struct px_cname {
    px_stmt *stmt; /* holds one reference */
    char name[];
} px_cname;

px_stmt *px_client_stmt_get(const px_htab *names, const char *name);
int px_client_stmt_put(px_htab *names, px_htab *reg, const char *name, px_stmt *st);
bool px_client_stmt_del(px_htab *names, px_htab *reg, const char *name);
void px_client_stmts_free(px_htab *names, px_htab *reg);

/* What a server still owes for the messages forwarded to it, in order. */
typedef enum px_reply {
    RP_PARSE,        /* ParseComplete, forwarded */
    RP_PARSE_HIDDEN, /* ParseComplete of a Parse the proxy injected: not forwarded */
    RP_BIND,
    RP_DESCRIBE, /* ends at RowDescription or NoData */
    RP_EXECUTE,  /* ends at CommandComplete, EmptyQueryResponse or PortalSuspended */
    RP_CLOSE,
    RP_CLOSE_HIDDEN, /* CloseComplete of a Close the proxy sent: not forwarded */
    RP_SYNC,         /* ReadyForQuery */
    RP_QUERY,        /* simple query or function call: ends at ReadyForQuery */
    RP_REPLAY,       /* the proxy's session replay query: all of its reply hidden */
    RP_BEGIN,        /* a kept BEGIN as Parse/Bind/Execute, no Sync: hidden up to its CommandComplete */
    RP_RESTORE,      /* startup values set again after a RESET: hidden but ParameterStatus */
    RP_PREPARE_SQL,  /* the proxy's own SQL PREPARE (or DEALLOCATE of its probe): hidden */
    RP_FAKE_CLOSE,   /* the proxy answers CloseComplete itself */
    RP_FAKE_PARSE,   /* the proxy answers ParseComplete itself */
} px_reply;

typedef struct px_reply_ent {
    uint8_t kind;
    bool hide_ready;   /* RP_SYNC/RP_QUERY: its ReadyForQuery is hidden, an RP_RESTORE's follows */
    uint64_t hash;     /* RP_PARSE*: the statement the server prepares (0: a probe or a
                          duplicate name, which leaves no statement behind) */
    px_stmt *stmt;     /* RP_PARSE / RP_FAKE_*: the statement behind cname; one reference */
    char *cname;       /* owned: the client's name this message defines, closes or refers to */
    uint32_t pos_at;   /* RP_QUERY sent renamed: error positions (characters, 1-based) past this */
    int32_t pos_delta; /* are off by this from the client's text, and are given back corrected */
} px_reply_ent;

typedef struct px_replies {
    px_reply_ent *ents; /* owned ring */
    size_t cap, head, n;
} px_replies;

/* Appends an entry; takes over cname and the stmt reference. */
px_reply_ent *px_replies_push(px_replies *q, px_reply kind, uint64_t hash);
static inline px_reply_ent *px_replies_tail(px_replies *q)
{
    return q->n ? &q->ents[(q->head + q->n - 1) % q->cap] : NULL;
}
static inline px_reply_ent *px_replies_head(px_replies *q)
{
    return q->n ? &q->ents[q->head] : NULL;
}
/* Drops the head; the caller has dealt with its cname and stmt. */
void px_replies_pop(px_replies *q);
void px_replies_free(px_replies *q);

/* Per-server statement set: which statement hashes are prepared (or being prepared) on a
 * server connection, the segment (count of Syncs sent) their Parse went out in, and a
 * least-recently-used clock. */
#define PX_SERVER_STMTS_MAX 512
typedef enum px_sstate { PX_STMT_ABSENT, PX_STMT_PENDING, PX_STMT_READY } px_sstate;
px_sstate px_sset_get(px_htab *set, uint64_t hash, uint32_t tick, uint32_t *segment);
int px_sset_pending(px_htab *set, uint64_t hash, uint32_t tick, uint32_t segment);
void px_sset_ready(px_htab *set, uint64_t hash);
/* The least recently used statement that is ready (pending ones cannot be closed), or 0. */
uint64_t px_sset_lru(const px_htab *set);

#endif

/* The shard of one statement, from the tenant key values it carries (literals, Bind
 * parameters, a hint or the session's pgshard.tenant) and the tables it names. Pure over its
 * inputs: the parser's analysis, the statement's text and Bind message, the tables of the
 * config and the shard map; no I/O, no state. Routing (route.c) calls it; SHOW ROUTE too. */
#ifndef PX_SHARDKEY_H
#define PX_SHARDKEY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "parser/parser.h"
#include "proxy/tables.h"
#include "shardmap/map.h"

#define PX_SK_NAME_MAX 64

/* A Bind message's parameters, and the types its statement's Parse declared. */
typedef struct px_sk_bind {
    const uint8_t *body; /* the Bind message after its header; not owned */
    size_t len;
    const uint8_t *types; /* the Parse's parameter type OIDs (big-endian int32 each), or NULL */
    size_t ntypes;
} px_sk_bind;

typedef enum px_sk_verdict {
    PX_SK_ANY = 0,     /* names no sharded or unlisted table: any shard (the transaction's, or the default) */
    PX_SK_SHARD,       /* runs on `shard` */
    PX_SK_REFUSE,      /* refused: sqlstate and msg say why */
    PX_SK_ALL,         /* a read no key restricts: every shard runs it and the rows are merged */
    PX_SK_EVERY,       /* DDL: every shard runs it, one after the other (a broadcast) */
    PX_SK_WRITE_ALL,   /* a write no key restricts (allow_cross_shard_writes): every shard, one
                          distributed transaction, every shard's rows and counts */
    PX_SK_WRITE_SPLIT, /* an INSERT ... VALUES whose rows belong to several shards (with
                          two-phase commit): each shard's rows in one distributed transaction */
    PX_SK_WRITE_OMNI,  /* a write of omnisharded tables: every shard, one distributed
                          transaction; the copies agree, so shard 0 answers */
} px_sk_verdict;

typedef struct px_sk_input {
    const px_tables *tables;
    int default_shard; /* where tables the config does not list live */
    const sm_map *map;
    const prs_query_info *qi; /* NULL: not understood (syntax error): the default shard */
    const char *sql;          /* the statement's text (literal values are read from it) */
    size_t len;
    const prs_lexed *lex;   /* the lexer's output for sql */
    const px_sk_bind *bind; /* NULL when the statement has no parameters */
    const char *tenant;     /* a hint's or the session's tenant, or NULL */
    size_t tenant_len;
    int pinned_shard;   /* SET pgshard.shard, -1 when not set */
    int nshards;        /* shards in the config: DDL is broadcast when there are several */
    bool cross_writes;  /* allow_cross_shard_writes: keyless UPDATE/DELETE run on every shard */
    bool split_inserts; /* two_phase_commit: an INSERT's rows of several shards are split */
} px_sk_input;

typedef struct px_sk_result {
    uint8_t verdict; /* px_sk_verdict */
    int shard;
    const char *source; /* why: "key", "tenant", "shard", "default", "any" */
    char sqlstate[6];
    char msg[320];
    bool has_key;     /* key_value/why describe the key that decided */
    sm_key key_value; /* a text key points into key_bytes (its first PX_SK_NAME_MAX bytes) */
    char key_bytes[PX_SK_NAME_MAX];
    sm_route_why why;
    bool omni_read;      /* PX_SK_ANY for a read of omnisharded tables only: any shard may answer */
    int64_t bucket;      /* with has_key: the bucket of every key mapped, -1 when they differ */
    int64_t frozen_move; /* the id of a freezing move that holds a key it mapped, 0 when none */
    int frozen_target;   /* that move's target shard */
    bool sharded_ddl;    /* PX_SK_EVERY: the DDL names a sharded table */
} px_sk_result;

/* How a statement's shard is found again at each of its Binds. A named prepared statement
 * keeps one: when one Bind parameter alone decides its shard (the common `WHERE key = $1`
 * and one-row INSERT), a Bind is routed by reading that parameter, without lexing the text
 * or looking up its analysis. Anything else is routed by its text each time. */
typedef enum px_sk_plan_kind {
    PX_SKP_UNKNOWN = 0, /* not made yet */
    PX_SKP_TEXT,        /* route the text (px_sk_route) */
    PX_SKP_PARAM,       /* the key of `table` is Bind parameter `param` */
} px_sk_plan_kind;

typedef struct px_sk_plan {
    uint8_t kind; /* px_sk_plan_kind */
    uint16_t param;
    const px_table *table;
} px_sk_plan;

/* The plan of the statement `in` describes (its bind, tenant and pinned_shard are not
 * looked at: a plan holds for every client). hinted: its text carries a tenant hint. */
void px_sk_plan_make(const px_sk_input *in, bool hinted, px_sk_plan *plan);
/* Routes a Bind by a PX_SKP_PARAM plan: in gives the map, default_shard and bind (its qi,
 * sql and lex are not used). The caller routes by text when the client has a tenant or a
 * pinned shard. */
void px_sk_route_planned(const px_sk_plan *plan, const px_sk_input *in, px_sk_result *out);

/* For a PX_SK_WRITE_SPLIT INSERT: each VALUES row's shard into row_shards (qi->insert_rows
 * entries). Returns 0, or -1 when the statement is not such an INSERT. */
int px_sk_insert_shards(const px_sk_input *in, int *row_shards);

/* Decides where the statement described by `in` runs. */
void px_sk_route(const px_sk_input *in, px_sk_result *out);
/* The canonical text of the key that decided (while the statement's bytes are still there). */
const char *px_sk_key_text(const px_sk_result *r, char *buf, size_t cap);

#endif

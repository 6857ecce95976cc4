/* The catalog: the PostgreSQL database that holds the shard map every proxy and
 * pgshard-migrate share, and the only part of shardmap/ that does I/O (blocking libpq on a
 * connection the caller owns). The rest of the library never includes this header.
 *
 * The contract, which tools outside the code rely on (more columns and tables may come):
 *
 *   schema pgshard
 *   pgshard.bucket_map(bucket int primary key, shard int not null)  one row per bucket
 *   pgshard.tenant_map(tenant text primary key, shard int not null) overrides, by the key's
 *                                                                    canonical text (sm_key_canonical)
 *   pgshard.map_version(version bigint not null)                     exactly one row
 *   pgshard.proxies(id text primary key, host text, pid int, map_version bigint,
 *                   last_seen timestamptz)                           one heartbeat row per proxy
 *
 *   pgshard.migrations(id bigserial, source int, target int,       one row per move
 *                      buckets int[] | tenant text (one of the two), tenant_bucket int,
 *                      state text, step text, freeze_seq int, error text,
 *                      flip_version bigint, flipped_at timestamptz,
 *                      created_at, updated_at timestamptz)
 *   pgshard.migration_log(id, migration_id, at, step, event, detail)  every step's start
 *                                                                    and end, and failures
 *   pgshard.migration_acks(migration_id, freeze_seq, proxy_id, at)   a proxy holds the move's keys
 *   pgshard.shards(shard int primary key, added_at timestamptz)      shards pgshard-migrate add-shard
 *                                                                    prepared (they may own no bucket)
 *
 * A change of the map is made in one transaction that also bumps map_version and runs
 * NOTIFY pgshard_map (sm_catalog_bump does both); proxies LISTEN and reload.
 *
 * What proxies read of a move (the rest is pgshard-migrate's):
 *   - state 'running', 'freezing', 'flipped' or 'failed' (anything but 'done' and
 *     'aborted'): the move is active; its keys may be on both shards, so DDL on sharded
 *     tables and reads of them without a key are refused until it is done.
 *   - state 'freezing': new transactions for the move's keys (its buckets, or its tenant)
 *     are held; once none of this proxy's open transactions can touch them, the proxy
 *     inserts (id, freeze_seq, its proxies id) into migration_acks. pgshard-migrate then
 *     arms the fence on the source, waits for the target to catch up and flips: bucket_map
 *     or tenant_map, state 'flipped' and the version bump in one transaction with NOTIFY,
 *     after which held transactions go to the target. Or it unfreezes (state 'running'
 *     again, NOTIFY) and they go to the source as before. Each freeze takes a new
 *     freeze_seq, so an old ack never counts for a later freeze. */
#ifndef SM_CATALOG_H
#define SM_CATALOG_H

#include <libpq-fe.h>
#include <stddef.h>
#include <stdint.h>

#include "shardmap/map.h"

/* The channel proxies LISTEN on. */
#define SM_CATALOG_CHANNEL "pgshard_map"
/* The channel a proxy NOTIFYs (payload: the migration id) when it has acknowledged a freeze. */
#define SM_CATALOG_ACK_CHANNEL "pgshard_ack"

/* What sm_catalog_init did, as bits of its result. */
enum {
    SM_CATALOG_CREATED = 1,   /* created the schema or a table that was missing */
    SM_CATALOG_FILLED = 2,    /* filled the empty bucket_map with the default map */
    SM_CATALOG_VERSIONED = 4, /* wrote map_version's row, version 1 */
};

/* Connects to the catalog: dsn is a libpq conninfo string or URI (catalog_dsn), which wins
 * over the defaults set here (application_name, connect_timeout = connect_timeout_s, TCP
 * keepalives, so that a catalog that vanishes without a FIN is noticed). Returns the
 * connection, which the caller finishes with PQfinish, or NULL with err filled. */
PGconn *sm_catalog_connect(const char *dsn, const char *application_name, int connect_timeout_s, char *err,
                           size_t errlen);

/* Creates what is missing of the contract above, in one transaction serialized with any
 * other init by an advisory lock: the schema and tables (IF NOT EXISTS), bucket_map from
 * the default map of nshards and buckets (sm_map_new_default) when it is empty, and
 * map_version's row (1) when it has none. Then checks that the catalog's map fits the
 * config: every bucket below buckets present, every shard below nshards. Running it again
 * changes nothing. Returns SM_CATALOG_* bits (0: nothing to do), or SM_ECATALOG, SM_EINVAL
 * with err filled. */
int sm_catalog_init(PGconn *conn, uint32_t nshards, uint32_t buckets, char *err, size_t errlen);

/* Reads the map in one REPEATABLE READ READ ONLY transaction, so the buckets, overrides,
 * version and active moves (migrations not 'done' or 'aborted'; none when the table is
 * missing) come from one snapshot, and validates it: exactly one version row, every
 * bucket 0..buckets-1 present, every shard below nshards, moves that fit the map. conn must not be inside a
 * transaction. On success *out is a new map (the caller's, sm_map_free) and 0 is
 * returned; otherwise SM_ECATALOG, SM_ENOMEM or SM_EINVAL with err filled, *out NULL. */
int sm_catalog_load(PGconn *conn, uint32_t nshards, uint32_t buckets, sm_map **out, char *err, size_t errlen);

/* map_version alone: a cheap way to see whether a load would bring anything new. */
int sm_catalog_version(PGconn *conn, uint64_t *version, char *err, size_t errlen);

/* map_version and a signature of the active moves (0 when there are none or the migrations
 * table is missing), equal to the sm_map_moves_sig of a map loaded from the same catalog
 * state: the cheap check that also sees a freeze whose NOTIFY was lost. */
int sm_catalog_state(PGconn *conn, uint64_t *version, uint64_t *moves_sig, char *err, size_t errlen);

/* Acknowledges a freeze for proxy_id (its proxies row id): inserts (migration_id,
 * freeze_seq, proxy_id) into migration_acks unless it is there, and NOTIFYs
 * SM_CATALOG_ACK_CHANNEL with the migration id, in one statement. */
int sm_catalog_ack(PGconn *conn, int64_t migration_id, int32_t freeze_seq, const char *proxy_id, char *err,
                   size_t errlen);

/* Upserts the proxies row of id with last_seen = now() (the catalog's clock). */
int sm_catalog_heartbeat(PGconn *conn, const char *id, const char *host, int pid, uint64_t map_version,
                         char *err, size_t errlen);

/* Adds statement counts to pgshard.bucket_load: buckets and counts are int[] and bigint[]
 * literals of the same length ("{3,17}", "{120,4}"). */
#define SM_LOAD_HALF_LIFE_S "3600" /* bucket_load.recent halves in an hour */
int sm_catalog_bucket_load(PGconn *conn, const char *buckets, const char *counts, char *err, size_t errlen);

/* Deletes the proxies row of id: a proxy that stops cleanly is no longer waited for. */
int sm_catalog_forget(PGconn *conn, const char *id, char *err, size_t errlen);

/* Increments map_version and sends NOTIFY pgshard_map (payload: the new version), for
 * tools and tests that change the map. Call it inside the transaction that changes the
 * map: the notification is delivered, and the version seen, only when it commits. Outside
 * a transaction it commits on its own. *version (may be NULL) gets the new version. */
int sm_catalog_bump(PGconn *conn, uint64_t *version, char *err, size_t errlen);

/* One row of pgshard.proxies. */
#define SM_CATALOG_TEXT_MAX 256
typedef struct sm_catalog_proxy {
    char id[SM_CATALOG_TEXT_MAX];   /* truncated when longer */
    char host[SM_CATALOG_TEXT_MAX]; /* "" when NULL */
    int pid;                        /* 0 when NULL */
    int64_t map_version;            /* -1 when NULL */
    double age_s;                   /* clock_timestamp() - last_seen on the catalog's clock, at least
                                     * 0 (a heartbeat that commits while the read starts is
                                     * not in the future); -1 when NULL */
} sm_catalog_proxy;

/* Every proxies row, most recently seen first. *out (the caller's, free()) holds *n rows;
 * NULL when there are none. */
int sm_catalog_proxies(PGconn *conn, sm_catalog_proxy **out, size_t *n, char *err, size_t errlen);

#endif

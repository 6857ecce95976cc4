/* Counters the workers keep about their pools, and the snapshot that gathers them (and
 * lists of clients and servers) from every worker for the admin console and /metrics.
 * A worker only ever touches its own counters; a snapshot asks each worker, through its
 * mailbox, to copy what it has, and finishes on the worker that asked. */
#ifndef PX_STATS_H
#define PX_STATS_H

#include <stdatomic.h>
#include <stdint.h>

#include "common/buf.h"

#define PX_HIST_BUCKETS 13
/* Upper bounds in microseconds; the last bucket is +Inf. */
extern const uint64_t px_hist_bounds_us[PX_HIST_BUCKETS - 1];

typedef struct px_pool_stats {
    uint64_t xacts;     /* ReadyForQuery 'I' after work: transactions, explicit or implicit */
    uint64_t queries;   /* ReadyForQuery messages relayed */
    uint64_t errors;    /* ErrorResponse messages relayed */
    uint64_t bytes_in;  /* client to server */
    uint64_t bytes_out; /* server to client */
    uint64_t xact_us;
    uint64_t waits; /* clients that queued for a server */
    uint64_t wait_us;
    uint64_t xact_hist[PX_HIST_BUCKETS];
    uint64_t wait_hist[PX_HIST_BUCKETS];
} px_pool_stats;

void px_hist_observe(uint64_t *hist, uint64_t us);

/* One pool of one worker, as copied into a snapshot. */
typedef struct px_pool_row {
    char user[64];
    char db[64];
    int shard; /* the shard of its node: rows are summed per (user, database, shard) */
    int cl_active, cl_waiting, cl_idle;
    int sv_active, sv_idle, sv_login;
    uint64_t maxwait_us;
    px_pool_stats st;
} px_pool_row;

/* Process-wide counters (any thread, relaxed atomics). */
typedef struct px_global_stats {
    atomic_ullong accepted;
    atomic_ullong auth_failures;
    atomic_ullong protocol_errors;
    atomic_ullong tls_client_handshakes;
    atomic_ullong tls_server_handshakes;
    atomic_ullong pins[5];            /* servers pinned to their client, by reason (PX_PIN_REASONS) */
    atomic_ullong fanouts[3][2];      /* statements run on every shard: [read, ddl, copy][ok, error] */
    atomic_ullong twopc_recovered[2]; /* in-doubt 2PC resolved by recovery.c: [commit, rollback] */
    atomic_ullong move_held;          /* transactions a freezing move held (once each) */
    atomic_ullong move_hold_timeouts; /* of those, refused after freeze_hold_ms */
    atomic_ullong lease_refusals;     /* writes refused because the catalog lease had lapsed */
} px_global_stats;

#endif

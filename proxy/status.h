/* What the monitor thread knows about every node (health, recovery, WAL positions, lag,
 * circuit) as an immutable snapshot that workers read without locks, and the pure
 * functions that turn WAL samples into lag and read-your-writes bounds. The thread itself
 * is monitor.c; this header has no libpq in it. */
#ifndef PX_STATUS_H
#define PX_STATUS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "config/config.h"

/* Nodes of one shard: index 0 is the configured primary, 1..n the replicas in the order of
 * the `replicas` key. After a failover another index may hold the primary role. */
#define PX_MAX_NODES (1 + CFG_MAX_REPLICAS)
#define PX_LSN_SAMPLES 256 /* primary WAL samples kept per shard: 25 s at 100 ms */

typedef enum px_node_health {
    PX_NODE_UNKNOWN = 0, /* not polled yet */
    PX_NODE_UP,          /* the last poll answered */
    PX_NODE_DOWN,        /* the last connect or poll failed */
} px_node_health;

typedef enum px_circuit {
    PX_CIRCUIT_CLOSED = 0, /* serving */
    PX_CIRCUIT_OPEN,       /* failing: no traffic until open_until */
    PX_CIRCUIT_HALF_OPEN,  /* one probe running; its result closes or reopens */
} px_circuit;

typedef struct px_node_status {
    uint8_t health;     /* px_node_health */
    uint8_t circuit;    /* px_circuit */
    bool in_recovery;   /* pg_is_in_recovery() of the last poll */
    uint64_t lsn;       /* replay LSN of a node in recovery, current LSN otherwise */
    uint64_t lag_bytes; /* primary's newest sample minus lsn; 0 for the primary */
    uint32_t lag_ms;    /* how long ago the primary went past lsn; 0 when caught up */
    uint32_t failures;  /* consecutive failed polls */
    uint64_t polled_ns; /* uv_hrtime() of the last answered poll, 0 if none */
} px_node_status;

typedef struct px_lsn_sample {
    uint64_t t_ns;   /* uv_hrtime() just before the primary's query was sent */
    uint64_t lsn;    /* pg_current_wal_flush_lsn() it returned: where lag is measured from */
    uint64_t insert; /* pg_current_wal_insert_lsn(): >= every commit before t_ns */
} px_lsn_sample;

/* A default of default_transaction_isolation set with ALTER ROLE / ALTER DATABASE ... SET
 * (pg_db_role_setting), by px_status_name_key of the role and the database; 0 = every role
 * (ALTER DATABASE) or every database (ALTER ROLE without IN DATABASE). */
#define PX_ISO_DEFAULTS_MAX 32
typedef struct px_iso_default {
    uint64_t role, db;
    bool serializable;
} px_iso_default;

typedef struct px_shard_status {
    int nnodes;
    int primary;     /* index of the node writes go to */
    bool primary_ok; /* that node is up (or not yet polled) and not in recovery */
    int nsamples;    /* valid entries of samples[], oldest first */
    px_lsn_sample samples[PX_LSN_SAMPLES];
    px_node_status nodes[PX_MAX_NODES];
    int niso; /* entries of iso[], read from the primary's catalog */
    px_iso_default iso[PX_ISO_DEFAULTS_MAX];
} px_shard_status;

/* One published snapshot. Never changed after publication. */
typedef struct px_status {
    uint64_t gen;     /* 1, 2, ... in publication order */
    uint64_t made_ns; /* uv_hrtime() when it was built */
    int nshards;
    bool any_iso;             /* some shard has iso defaults */
    uint64_t iso_gen;         /* how many times they changed: servers logged in before are stale */
    px_shard_status shards[]; /* nshards entries */
} px_status;

/* Lag in time of a node at `lsn`: how long ago (from now_ns) the primary first went past
 * lsn, from the samples (oldest first). 0 when no sample is past lsn; when all are, the
 * age of the oldest sample (a lower bound). */
uint32_t px_status_lag_ms(const px_lsn_sample *s, int n, uint64_t lsn, uint64_t now_ns);

/* Read-your-writes: the LSN (the larger of insert and flush) of the first sample taken
 * after write_ns, which bounds the LSN of anything committed before write_ns; 0 when no
 * such sample exists yet. */
uint64_t px_status_ryw_lsn(const px_shard_status *sh, uint64_t write_ns);

/* The key of a role or database name in px_iso_default: never 0. */
uint64_t px_status_name_key(const char *name);

/* Whether a server login of role in db starts with serializable as its default isolation
 * level on some shard, as PostgreSQL applies pg_db_role_setting: the role in the database,
 * then the role, then the database, then every role in every database. */
bool px_status_serializable(const px_status *st, uint64_t role, uint64_t db);

/* "16/B374D848" -> 0x16B374D848. Returns 0, or -1 when s is not an LSN. */
int px_lsn_parse(const char *s, uint64_t *out);

#endif

/* pgshard-migrate, the DBA's tool for the shard map: shared declarations of its commands.
 * Each command reads the same INI file as pgshard and talks to the catalog through
 * shardmap/catalog.h; none of them prompts. */
#ifndef MIG_H
#define MIG_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stdio.h>

#include "config/config.h"

/* Exit codes, as `pgshard-migrate --help` documents them. */
enum { MIG_EXIT_OK = 0, MIG_EXIT_ERROR = 1, MIG_EXIT_USAGE = 2 };

/* A proxy whose heartbeat is older than this is not live. */
#define MIG_LIVE_S 5.0

typedef struct mig_opts {
    const cfg_config *cfg; /* not owned */
    bool json;             /* --json */
    char **args;           /* the command's arguments but --json */
    int nargs;
    FILE *out; /* results */
    FILE *err; /* errors */
} mig_opts;

/* The catalog of o->cfg's catalog_dsn, or NULL after saying why on o->err (no catalog_dsn,
 * unreachable). The caller finishes it with PQfinish. */
PGconn *mig_connect(const mig_opts *o);

/* A JSON string of s[0..len) on f: quotes, backslashes and control characters escaped;
 * other bytes as they are (the catalog's and the shards' text is UTF-8). */
void mig_json_str(FILE *f, const char *s, size_t len);
void mig_json_cstr(FILE *f, const char *s); /* the same for a C string */

/* init: creates the catalog (sm_catalog_init) and says what it did. Returns an exit code. */
int mig_init(const mig_opts *o);

/* status: the map (shards, buckets per shard, overrides, version) and the proxies, as text
 * or one JSON document. Returns an exit code. */
int mig_status(const mig_opts *o);

/* check: whether moves can run: the same schema on every shard, each sharded table's key
 * column and a replica identity that includes it, wal_level, free slots and workers on
 * every shard, no other move in the catalog. Every finding names its fix; text or one JSON
 * document. Returns MIG_EXIT_OK with no finding, MIG_EXIT_ERROR with any or on an error. */
int mig_check(const mig_opts *o);

/* list: every move in the catalog (pgshard.migrations), as text or JSON. */
int mig_list(const mig_opts *o);

/* The moves (move.c, movedone.c). move --buckets LIST | --tenant KEY --to SHARD creates a
 * move and runs it to the end; resume ID runs a stopped one from its recorded step; abort
 * ID undoes one that has not flipped; verify ID compares the moved keys on both shards;
 * cleanup ID finishes one that has flipped. Each returns an exit code: MIG_EXIT_OK, or
 * MIG_EXIT_ERROR with the move left as the catalog says (resume or abort it). */
int mig_move(const mig_opts *o);
int mig_resume(const mig_opts *o);
int mig_abort(const mig_opts *o);
int mig_verify(const mig_opts *o);
int mig_cleanup(const mig_opts *o);
/* plan: bucket moves that even out the shards' sizes (plan.c); --apply runs them. */
int mig_plan(const mig_opts *o);
/* add-shard N: schema, sequences and catalog row of a new, empty shard (addshard.c). */
int mig_add_shard(const mig_opts *o);

#endif

/* A move of buckets or of one tenant from one shard to another (move.c): what its steps
 * share. The steps themselves are in move.c (check to flip) and movedone.c (verify,
 * cleanup, abort); the commands that drive them are mig_move, mig_resume, mig_abort,
 * mig_verify and mig_cleanup in mig.h. */
#ifndef MIG_MOVE_H
#define MIG_MOVE_H

#include <libpq-fe.h>
#include <stdbool.h>

#include "migrate/mig.h"

#define MV_ERR_MAX 1024
#define MV_DELETE_BATCH "5000" /* rows a cleanup or abort deletes per transaction */

/* One sharded table as the move sees it. */
typedef struct mv_table {
    char *qname;          /* owned: quoted, schema-qualified name */
    char *key;            /* owned: the quoted key column */
    const char *key_name; /* the key column as the config names it */
    char *filter;         /* owned: the SQL condition on its rows that selects the moving keys */
    char *pk;             /* owned: "ROW(a, b)" of its primary key columns (verify's key), or NULL */
    int kind;             /* SM_KEY_INT, SM_KEY_TEXT or SM_KEY_UUID */
} mv_table;

typedef struct mv_move {
    const mig_opts *o;
    PGconn *cat;  /* owned: the catalog */
    PGconn *src;  /* owned: the source shard's primary */
    PGconn *dst;  /* owned: the target shard's primary */
    PGconn *snap; /* owned or NULL: a REPEATABLE READ transaction on the target that began once
                     it had caught up under the freeze, before the flip: verify reads the
                     target as the source was, without the writes made after the flip */
    long long id;
    char ids[24]; /* id as text, a statement parameter */
    int source, target;
    char *buckets; /* owned: "{17,18}" as the catalog holds them, or NULL for a tenant move */
    char *tenant;  /* owned: the tenant's canonical text, or NULL for a bucket move */
    uint32_t nbuckets;
    char state[16];
    char step[16];
    mv_table *tables; /* owned */
    int ntables;
    char **seqs; /* owned: the tables' own sequences (moveseq.c), once the freeze listed them */
    int nseqs;
    char name[48]; /* pgshard_move_ID: the publication, subscription and slot */
    char err[MV_ERR_MAX];
} mv_move;

/* Prints "TIME move ID: ..." on the move's output. */
void mv_say(mv_move *m, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Records why the move stopped in m->err (and says it on the error stream); returns -1. */
int mv_fail(mv_move *m, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Runs sql with text parameters on conn and returns its result when it succeeded; else
 * NULL, with "what: the server's message" in m->err. */
PGresult *mv_exec(mv_move *m, PGconn *conn, const char *what, const char *sql, int n,
                  const char *const *params);
/* A number the server computed, from a result's value. */
long long mv_ll(const PGresult *res, int row, int col);
/* The same for a statement whose result is not needed: 0 or -1. */
int mv_run(mv_move *m, PGconn *conn, const char *what, const char *sql, int n, const char *const *params);
/* An event of the move's log (pgshard.migration_log). Failures to log are not fatal. */
void mv_log(mv_move *m, const char *step, const char *event, const char *detail);
/* Sets the move's state (and error, NULL to clear it) in the catalog; 0 or -1. */
int mv_set_state(mv_move *m, const char *state, const char *error);
/* Sends NOTIFY pgshard_map, for the proxies to read the move again; 0 or -1. */
int mv_notify(mv_move *m);
/* Runs sql on every sharded table, "%1$s" standing for the table and "%2$s" for the
 * filter, until it affects no row: deletes in batches. Returns rows affected, or -1. */
long long mv_batches(mv_move *m, PGconn *conn, const char *what, const char *fmt);
/* The same SQL for each table, formatted as above; returns 0 or -1. */
int mv_each_table(mv_move *m, PGconn *conn, const char *what, const char *fmt);
/* Disarms the fence and takes the move out of 'freezing': the proxies send the held
 * transactions to the source again. 0 or -1. */
int mv_unfreeze(mv_move *m, const char *why);
void mv_sleep_ms(unsigned ms);
/* Whether relation name (schema-qualified) exists on conn. */
bool mv_has(PGconn *conn, const char *name);
/* fmt with the table as %1$s and the filter as %2$s, in a new string (NULL: no memory). */
char *mv_table_sql(const mv_table *t, const char *fmt);

/* The libpq conninfo string of shard's primary as migrate_user (without its password unless
 * password), in the database of the tables. Returns its length (>= cap: too long). */
size_t mv_conninfo(const cfg_config *cfg, int shard, bool password, char *out, size_t cap);
/* A connection to shard's primary as migrate_user, or NULL (m->err says why). */
PGconn *mv_connect(mv_move *m, int shard);
/* The type OID of the sharded tables' key (the first one's key_type, else its column's type
 * on shard 0), which tenants' texts are read as; 0 or -1. */
int mv_key_oid(mv_move *m, uint32_t *oid);
/* The bucket of a tenant's canonical text read as type oid, or -1 when it is not one. */
int mv_tenant_bucket(uint32_t oid, const char *tenant, size_t len, uint32_t nbuckets);

/* Moves buckets ("17,18,40-47") to shard to, as move --buckets does; an exit code. */
int mv_move_buckets(const mig_opts *o, const char *buckets, int to);

/* moveseq.c: lists the moved tables' own sequences on the source (before the freeze), and
 * under the freeze sets each target sequence that counts in the same range as the source's
 * past the source's value (*advanced: how many); 0 or -1. */
int mv_seq_prepare(mv_move *m);
int mv_seq_sync(mv_move *m, int *advanced);
void mv_seq_free(mv_move *m);

/* movedone.c: the steps after the flip, and abort. */
int mv_verify(mv_move *m, bool json, bool *same);
int mv_cleanup(mv_move *m);
int mv_abort(mv_move *m);

#endif

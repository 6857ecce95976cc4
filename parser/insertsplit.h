/* Splitting one multi-row INSERT ... VALUES into one INSERT per shard, each holding only
 * that shard's VALUES rows in their original order, with its $n parameters renumbered
 * densely. Pure code over libpg_query's parse tree and deparser: the caller decides each
 * row's shard; no I/O, no knowledge of shards, connections or transactions. */
#ifndef PRS_INSERTSPLIT_H
#define PRS_INSERTSPLIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PRS_IS_MSG_MAX 256

/* The statement one shard runs. */
typedef struct prs_insert_part {
    int shard;
    char *sql;      /* owned (malloc): the INSERT for this shard, deparsed */
    uint32_t *rows; /* owned (malloc): the original 0-based VALUES row indices it holds,
                       ascending; the shard's RETURNING rows come back in this order */
    uint32_t nrows;
    uint16_t *params; /* owned (malloc), NULL when nparams is 0: params[k] is the original
                         1-based number of this statement's parameter $k+1. Holds every
                         parameter of this part's rows and every parameter used outside
                         VALUES (ON CONFLICT, RETURNING), ascending by original number. The
                         Bind (values, formats) and the Parse's parameter types for this
                         statement are the client's, picked through this map. */
    uint16_t nparams;
} prs_insert_part;

typedef struct prs_insert_split {
    prs_insert_part *parts; /* owned (malloc): nparts, in ascending shard order; NULL when
                               refused */
    int nparts;
    bool returning; /* the statement has RETURNING */
    /* ON CONFLICT DO NOTHING, or DO UPDATE ... WHERE: a shard may write (and return) fewer
     * rows than it was given, and which ones it skipped cannot be told from its RETURNING
     * rows. Without it each row given is written and returned once, in the order of rows[]
     * (PostgreSQL returns a VALUES list's rows in their order, though it does not document
     * it); a BEFORE trigger returning NULL can still skip a row, so a caller restoring the
     * client's RETURNING order checks each shard's row count against nrows. */
    bool may_skip_rows;
    /* Refused: the SQLSTATE (42601 syntax error; 0A000 a statement this cannot split;
     * 42P02 a parameter number outside $1..$65535; 54001 nested too deeply; XX000 the
     * caller's row count differs from the statement's; 53200 out of memory) and the reason,
     * a full sentence starting with "pgshard: ". Empty when split. */
    char sqlstate[6];
    char msg[PRS_IS_MSG_MAX];
} prs_insert_split;

/* Splits the one statement in sql[0..len). shard_of_row[i] is the shard of VALUES row i
 * (nrows entries, as counted by the caller; borrowed). Returns 0 (split), 1 (refused: not a
 * single INSERT ... VALUES with exactly nrows rows; DEFAULT VALUES, INSERT ... SELECT, WITH,
 * VALUES with ORDER BY/LIMIT, a row count that differs, a bad parameter number), -1 out of
 * memory. out is always fully written; release it with prs_insert_split_free. */
int prs_insert_split_make(const char *sql, size_t len, const int *shard_of_row, uint32_t nrows,
                          prs_insert_split *out);
void prs_insert_split_free(prs_insert_split *s);

#endif

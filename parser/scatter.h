/* The plan of a cross-shard read: how one SELECT that names no single shard is rewritten
 * into the query every shard runs, and how the shards' rows are merged into the one result
 * a single database would have returned. Pure code over libpg_query's parse tree and
 * deparser: no I/O, no knowledge of shards or connections. What it cannot merge exactly it
 * refuses, with the reason. proxy/merge.c carries a plan out. */
#ifndef PRS_SCATTER_H
#define PRS_SCATTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PRS_SC_MAX_COLS 64  /* columns of the shard query (visible and hidden) */
#define PRS_SC_MAX_SORT 16  /* ORDER BY items */
#define PRS_SC_MAX_INSNS 64 /* HAVING program */
#define PRS_SC_MSG_MAX 256

/* What the merge does with one column of the shards' rows. */
typedef enum prs_sc_kind {
    PRS_SC_PLAIN = 0, /* passed through as the shard sent it (no grouping) */
    PRS_SC_GROUP,     /* part of the group key (GROUP BY, or DISTINCT's columns) */
    PRS_SC_COUNT,     /* count(*), count(x), count(DISTINCT shard key): int8 counts summed */
    PRS_SC_SUM,       /* sum(x): summed in the column's own type (int8, numeric, float4/8, ...) */
    PRS_SC_MIN,
    PRS_SC_MAX,
    PRS_SC_BOOL_AND, /* bool_and(x) and every(x) */
    PRS_SC_BOOL_OR,
    PRS_SC_AVG, /* avg(x): this column is sum(x) on each shard, column `arg` is count(x);
                   the client sees sum / count in avg's type (numeric, or float8 for
                   float4/float8 sums) */
} prs_sc_kind;

typedef struct prs_sc_col {
    uint8_t kind;  /* prs_sc_kind */
    bool hidden;   /* added by the rewrite (ORDER BY, HAVING, GROUP BY key not selected,
                      avg's count): never sent to the client. Hidden columns come after
                      every visible one; the shard query names them pgshard_<why>_<n>. */
    uint16_t arg;  /* PRS_SC_AVG: the column holding count(x) */
    uint16_t avgf; /* PRS_SC_AVG: 1 + the hidden column holding avg(x) itself: PostgreSQL sums
                      float4 in float8 for avg, where sum(float4) is float4, so for a float4 x
                      the merge takes avg(x) * count(x) as the shard's sum (exact for the other
                      types, it uses sum(x) there) */
    uint16_t coll; /* 1 + the hidden column holding pg_collation_for() of this column (as text),
                      which the merge reads from each shard's first row to compare text as the
                      server does; 0: none. Every column the merge orders or compares (sort
                      keys, group keys, min/max, HAVING operands) has one, except in a plan
                      with * (ncols 0), where the merge refuses to order text by position. */
} prs_sc_col;

/* A sort column of a plan with * that is hidden: the n-th (from 0) hidden column, counted
 * from the first column after those * expands to (prs_scatter's star_hidden). */
#define PRS_SC_SORT_HIDDEN 0x8000u

/* One ORDER BY item, on a column of the merged rows (which may be hidden). */
typedef struct prs_sc_sort {
    uint16_t col; /* 0-based; with PRS_SC_SORT_HIDDEN, see there */
    bool desc;
    bool nulls_first; /* as PostgreSQL defaults it: NULLS LAST for ASC, FIRST for DESC */
} prs_sc_sort;

/* HAVING as a postfix program over a merged (grouped) row, evaluated with SQL's
 * three-valued logic; only what can be computed exactly from merged columns and constants
 * is planned, anything else is refused. */
typedef enum prs_sc_op {
    PRS_SC_OP_COL = 1, /* push column `arg`'s value (NULL or its text/binary per its format) */
    PRS_SC_OP_CONST,   /* push the constant at str + arg (NUL-terminated text), typed as the
                          column it is compared with */
    PRS_SC_OP_NULL,    /* push NULL */
    PRS_SC_OP_EQ,      /* pop b, pop a, push a op b; one side must be a column */
    PRS_SC_OP_NE,
    PRS_SC_OP_LT,
    PRS_SC_OP_LE,
    PRS_SC_OP_GT,
    PRS_SC_OP_GE,
    PRS_SC_OP_AND, /* pop two truth values, push one */
    PRS_SC_OP_OR,
    PRS_SC_OP_NOT,
    PRS_SC_OP_IS_NULL, /* pop a value, push a truth value */
    PRS_SC_OP_IS_NOT_NULL,
} prs_sc_op;

typedef struct prs_sc_insn {
    uint8_t op; /* prs_sc_op */
    uint16_t arg;
} prs_sc_insn;

typedef struct prs_scatter {
    char *sql;            /* owned (malloc): the query each shard runs; NULL when refused */
    uint16_t ncols;       /* columns of the shard query's result, visible then hidden */
    uint16_t nvisible;    /* the first nvisible of them are the client's columns. Both are 0 for
                             a select list with * (or t.*), whose width is only known from the
                             shards' RowDescription: then every column is visible and PLAIN
                             (such a plan is never grouped and has no hidden column), and a
                             sort column may lie past ncols. */
    uint16_t star_hidden; /* a plan with * (ncols 0) whose ORDER BY names a column or
                             expression: the shards' last star_hidden columns are hidden, added
                             after the columns * expands to, which only the shards'
                             RowDescription counts. cols[0..star_hidden) describe them (coll: 1 +
                             the index among them), a sort item names one with
                             PRS_SC_SORT_HIDDEN. */
    prs_sc_col cols[PRS_SC_MAX_COLS];
    bool grouped;       /* rows are merged by their PRS_SC_GROUP columns (aggregates, GROUP BY,
                           DISTINCT). Aggregates without GROUP BY: every shard returns one row and
                           the merge returns exactly one (count 0, sum NULL when no row matched) */
    bool distinct;      /* SELECT DISTINCT over groups (with GROUP BY or aggregates): after HAVING,
                           a merged row whose visible columns equal an earlier one's is dropped.
                           The shard query has no DISTINCT then. (DISTINCT alone is a grouping by
                           every column, with distinct false.) */
    bool shards_sorted; /* each shard returns its rows in `sort` order (the shard query has
                           the ORDER BY): the merge is a k-way merge. When grouped, the shard
                           query has no ORDER BY and the merge sorts the groups itself. */
    uint8_t nsort;
    prs_sc_sort sort[PRS_SC_MAX_SORT];
    int64_t limit;  /* rows after OFFSET, -1 = no LIMIT */
    int64_t offset; /* 0 = none */
    /* LIMIT $n / OFFSET $m in the extended protocol: n and m (1-based), 0 for a constant or
     * none. Each is a parameter used nowhere else in the statement, and the two differ. The
     * shard query keeps them where they are (so the server types them as usual, bigint when
     * undeclared); the values are the client's Bind's, which the caller reads into limit and
     * offset before the merge and replaces in the shards' Bind: LIMIT by limit + offset and
     * OFFSET by NULL when the shards return sorted or plain rows (shards_sorted or not
     * grouped), both by NULL when grouped (the merge limits the merged groups). With a
     * constant LIMIT and OFFSET $m, the shard query has no LIMIT (the shards cannot be asked
     * for LIMIT + $m rows) and OFFSET $m bound to NULL. */
    uint16_t limit_param;
    uint16_t offset_param;
    uint8_t ninsns; /* HAVING program, 0 = no HAVING */
    prs_sc_insn having[PRS_SC_MAX_INSNS];
    char *str; /* owned (malloc) or NULL: the HAVING constants, NUL-terminated, at offsets */
    size_t str_len;
    /* Refused (sql == NULL): the SQLSTATE (0A000 for a shape it will not merge; the code
     * PostgreSQL itself would have raised where the shards would no longer see the mistake:
     * 42601 syntax, 42P10 ORDER/GROUP BY position, 42803 aggregate in GROUP BY, 2201W/2201X
     * negative LIMIT/OFFSET; 54001 nested too deeply; 53200 when out of memory) and the
     * reason, a full sentence starting with "pgshard: ". */
    char sqlstate[6];
    char msg[PRS_SC_MSG_MAX];
} prs_scatter;

/* What the planner needs to know about the tables a statement names. */
typedef struct prs_scatter_ctx {
    /* 1 when `column` is the shard key of `table` (schema NULL when unqualified) and the
     * table is sharded, 0 otherwise. Decides count(DISTINCT key). */
    int (*is_key)(void *arg, const char *schema, const char *table, const char *column);
    void *arg;
} prs_scatter_ctx;

/* Plans the one SELECT statement in sql[0..len). Returns 0 with out->sql set (planned),
 * 1 when refused (out->sqlstate, out->msg), -1 when out of memory. out is always fully
 * written; release it with prs_scatter_free. */
int prs_scatter_plan(const char *sql, size_t len, const prs_scatter_ctx *ctx, prs_scatter *out);
void prs_scatter_free(prs_scatter *p);
/* Appends a human-readable description of the merge steps (for SHOW ROUTE), e.g.
 * "merge: group by 1; sum 2; avg 3 (count 5); having; sort 2 desc nulls first; limit 10" to
 * buf (NUL-terminated, truncated to cap). */
void prs_scatter_describe(const prs_scatter *p, char *buf, size_t cap);

#endif

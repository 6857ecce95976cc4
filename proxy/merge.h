/* The merge of a cross-shard read: the shards' RowDescription, DataRow and CommandComplete
 * messages go in, the one result a single database would have returned comes out as
 * protocol messages for the client (RowDescription once, DataRows, CommandComplete
 * "SELECT n"). It carries out a prs_scatter plan: concatenation, k-way merge of sorted
 * streams, LIMIT/OFFSET, aggregates combined per group, HAVING, DISTINCT, sorting groups.
 * Pure code: no sockets, no libuv; the caller (fanout.c) feeds it and paces the shards. */
#ifndef PX_MERGE_H
#define PX_MERGE_H

#include <locale.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "parser/scatter.h"

typedef struct px_merge px_merge;

/* Rows a shard may have queued before px_merge_wants says to stop reading it. */
#define PX_MERGE_QUEUE_MAX 256

/* A merge of nshards streams under plan (borrowed: it must outlive the merge). coll is the
 * database's text collation (datcollate) for text comparisons, or (locale_t)0 for "C"/
 * "POSIX" (byte order). NULL when out of memory. */
px_merge *px_merge_new(const prs_scatter *plan, int nshards, locale_t coll);
void px_merge_free(px_merge *m);

/* Feed one message body (after the 5-byte header) from shard s. Each returns 0, or -1 when
 * the merge cannot go on: px_merge_error then says why (an SQLSTATE and a message for the
 * client: the shards' row descriptions differ, a type it cannot compare or combine, an
 * overflow such as 22003 "bigint out of range", out of memory 53200).
 *
 * Each shard sends its RowDescription before its rows; the first fixes the columns (a plan
 * with ncols 0, SELECT *, takes them all from it, visible and plain, or group keys when
 * grouped) and is checked against the plan: a type the plan cannot compare or combine
 * fails here, before any row. The others must agree with it (count, names, types,
 * formats). At most PRS_SC_MAX_COLS columns. */
int px_merge_row_desc(px_merge *m, int s, const uint8_t *body, size_t len);
/* Text is compared under the collation each shard names for the column (the plan's hidden
 * pg_collation_for() columns, read from each shard's first row, which must agree):
 * "default" is the database's (px_merge_new's coll, or none when default_unordered: an ICU
 * database, or a locale this machine lacks, which then only equality may use; a database's
 * default collation is always deterministic); "C", "POSIX" and "ucs_basic" are bytes; any
 * other name is asked of resolve, which writes the libc locale (collcollate) of a
 * deterministic libc collation of that exact name into locale (cap bytes, NUL-terminated)
 * and returns 1, or returns 0 when it knows none: text under such a collation is refused
 * (0A000) before any row is sent. Without this call only "default", "C", "POSIX" and
 * "ucs_basic" are known. */
typedef int (*px_merge_coll_fn)(void *arg, const char *name, char *locale, size_t cap);
void px_merge_set_collations(px_merge *m, bool default_unordered, px_merge_coll_fn resolve, void *arg);
int px_merge_data_row(px_merge *m, int s, const uint8_t *body, size_t len);
/* Shard s's CommandComplete: its stream has ended. */
int px_merge_complete(px_merge *m, int s);

/* Appends to out the messages that are ready for the client: the RowDescription (once,
 * rewritten for hidden columns and avg's type), the DataRows that can be emitted (in a
 * k-way merge: while every unfinished shard has a row queued), and, once every shard has
 * completed and every row is out, the CommandComplete "SELECT n". Stops early when out
 * holds more than about `room` bytes, so the caller can pace a slow client. Returns 0 or
 * -1 (px_merge_error). */
int px_merge_output(px_merge *m, pgs_buf *out, size_t room);

/* Whether shard s should be read on: false while it has PX_MERGE_QUEUE_MAX rows queued that
 * wait for the other shards (a k-way merge) or for the client (a concatenation), so memory
 * stays bounded. Always true in a grouped merge (rows are folded into their groups as they
 * come) and once LIMIT is satisfied (the rest are dropped as they come, so the shards can
 * be read to their CommandComplete), false after an error. */
bool px_merge_wants(const px_merge *m, int s);
/* Every shard completed and the CommandComplete was output. */
bool px_merge_done(const px_merge *m);
/* LIMIT is satisfied: the shards' remaining rows will be dropped (the caller may cancel).
 * Known early only when rows stream (concatenation, k-way merge); a grouped merge knows
 * nothing before every shard has completed. */
bool px_merge_satisfied(const px_merge *m);
/* After a -1: the error for the client. */
const char *px_merge_error(const px_merge *m, const char **sqlstate);

#endif

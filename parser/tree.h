/* libpg_query's parse tree as the parser modules use it: a statement text parsed into an
 * unpacked protobuf tree (walked and changed through protobuf-c), and a tree written back
 * as SQL by the deparser. One place for the copies, the error texts and the frees that each
 * module needed alike. Knows nothing of what the tree says. */
#ifndef PRS_TREE_H
#define PRS_TREE_H

#include <stddef.h>

#include <pg_query.h>
#include <pg_query/pg_query.pb-c.h>

/* Parses sql[0..len) (no NUL needed). Returns 0 with *tree (free it with
 * pg_query__parse_result__free_unpacked), 1 for text PostgreSQL would not parse (err gets
 * the parser's message), or -1 when out of memory. */
int prs_tree_parse(const char *sql, size_t len, PgQuery__ParseResult **tree, char *err, size_t errlen);

/* Writes tree back as SQL into *sql (malloc'd). Returns 0, 1 when the deparser cannot (err
 * says why), or -1 when out of memory. */
int prs_tree_deparse(const PgQuery__ParseResult *tree, char **sql, char *err, size_t errlen);

#endif

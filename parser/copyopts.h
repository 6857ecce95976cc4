/* prs_copy_options: what a COPY statement says about the data that follows it — direction,
 * table, columns, and the format options (new and old syntax), with PostgreSQL's defaults
 * and the checks PostgreSQL makes before it reads a byte. It does not read COPY data
 * (proxy/copysplit.c does) and does not look at the catalog. */
#ifndef PRS_COPYOPTS_H
#define PRS_COPYOPTS_H

#include <stdbool.h>
#include <stddef.h>

/* PostgreSQL's MaxHeapAttributeNumber: no COPY can name more columns. */
#define PRS_COPY_MAX_COLUMNS 1600

typedef enum prs_copy_dir {
    PRS_COPY_FROM_STDIN,
    PRS_COPY_TO_STDOUT,
    PRS_COPY_OTHER /* a server-side file or program, either direction (see is_from) */
} prs_copy_dir;

typedef enum prs_copy_format { PRS_COPY_TEXT, PRS_COPY_CSV, PRS_COPY_BINARY } prs_copy_format;

typedef enum prs_copy_header {
    PRS_COPY_HEADER_FALSE,
    PRS_COPY_HEADER_TRUE,
    PRS_COPY_HEADER_MATCH
} prs_copy_header;

/* A list of column names. */
typedef struct prs_copy_names {
    char **names; /* owned, with each name; NULL when n == 0 */
    size_t n;
} prs_copy_names;

typedef struct prs_copy_opts {
    prs_copy_dir dir;
    bool is_from;
    bool is_program;
    bool has_where;         /* COPY FROM ... WHERE: the servers filter; splitting is unchanged */
    char *schema;           /* owned; NULL when the table is unqualified or for COPY (query) */
    char *relname;          /* owned; NULL for COPY (query) TO */
    char *query;            /* owned: the text between the parentheses of COPY (query) TO; else NULL */
    prs_copy_names columns; /* as written (folded by the parser); n == 0: all, table order */

    prs_copy_format format;
    char delimiter; /* text '\t', csv ','; unused in binary */
    char quote;     /* csv only ('"' by default); 0 otherwise */
    char escape;    /* csv only (the quote by default); 0 otherwise */
    char *null_str; /* owned, NUL-terminated; text "\\N", csv "", binary NULL */
    size_t null_len;
    prs_copy_header header;
    bool freeze;
    char *encoding;                /* owned: ENCODING as written, NULL when absent; the caller compares it */
    bool force_quote_all;          /* FORCE_QUOTE * */
    prs_copy_names force_quote;    /* COPY TO only */
    prs_copy_names force_not_null; /* COPY FROM, csv only */
    prs_copy_names force_null;     /* COPY FROM, csv only */

    /* Filled when prs_copy_options returns 1. */
    char sqlstate[6];
    char message[256];
} prs_copy_opts;

/* Parses one COPY statement (sql need not be NUL-terminated). Returns 0 when out is filled,
 * 1 when the statement is not a valid single COPY (out->sqlstate and out->message say why,
 * as PostgreSQL would), -1 when memory ran out. out is always safe to pass to
 * prs_copy_opts_free afterwards, whatever the result. */
int prs_copy_options(const char *sql, size_t len, prs_copy_opts *out);

/* Frees what out owns and leaves it zeroed. */
void prs_copy_opts_free(prs_copy_opts *o);

/* Whether name is in the list (exact match: names are already folded by the parser). */
bool prs_copy_names_has(const prs_copy_names *l, const char *name);

#endif

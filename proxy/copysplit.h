/* px_copy_split: COPY FROM STDIN data, arriving in CopyData chunks cut anywhere, cut back
 * into rows, each handed over with its shard key's value, so a row can be forwarded
 * unchanged to the shard that owns it. Text, CSV and binary formats, read the way
 * PostgreSQL 15 reads them. It does not pick shards, send anything, or convert values.
 *
 * Text and CSV are read as bytes of the client encoding: right for every encoding in which
 * a byte below 0x80 is always that ASCII character (UTF8, LATIN*, EUC_*, ...), wrong for
 * SJIS, BIG5, GBK, UHC and GB18030, whose second bytes can be a backslash or a quote; the
 * caller refuses those. A key is handed over in the client encoding. */
#ifndef PX_COPYSPLIT_H
#define PX_COPYSPLIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "parser/copyopts.h"

/* PostgreSQL cannot hold a line or tuple larger than 1 GB either. */
#define PX_COPY_DEFAULT_MAX_ROW ((size_t)1 << 30)

/* Results of px_copy_split_feed and px_copy_split_finish. */
#define PX_COPY_OK 0
#define PX_COPY_EDATA (-1) /* bad data, a row too long, or no memory: see px_copy_split_error */
#define PX_COPY_ESTOP (-2) /* a callback returned non-zero; the splitter is spent */

typedef struct px_copy_split px_copy_split;

/* One complete row: its bytes exactly as received, terminator included (a last line
 * without one, or text before a \. on its line, has none), and its key field's value:
 * text format de-escaped, CSV de-quoted, binary the field's raw bytes. key is NULL and
 * key_len 0 when key_null. row and key are valid only during the call. Returns 0 to go on,
 * non-zero to stop. */
typedef int (*px_copy_row_fn)(void *arg, const uint8_t *row, size_t row_len, const uint8_t *key,
                              size_t key_len, bool key_null);

typedef enum px_copy_part {
    /* Text/CSV with HEADER: the first line. Binary: signature, flags and header
     * extension. Send it to every shard before any row. */
    PX_COPY_PART_HEADER,
    /* Binary: the int16 -1 trailer. Send it to every shard after the last row. */
    PX_COPY_PART_TRAILER,
    /* Text/CSV: the \. end-of-data marker (bytes: the marker and its newline). Nothing
     * after it is data; PostgreSQL ignores the rest up to CopyDone, and so does this. */
    PX_COPY_PART_END,
} px_copy_part;

/* The bytes are valid only during the call. Returns 0 to go on, non-zero to stop. */
typedef int (*px_copy_part_fn)(void *arg, px_copy_part part, const uint8_t *bytes, size_t len);

/* A splitter for the data of the COPY FROM STDIN that o describes (o is not kept).
 * key_index is the key's 0-based position among the COPY's columns. When o names its
 * columns, the key's name, the column count and the key's FORCE_NULL/FORCE_NOT_NULL come
 * from o; otherwise see px_copy_split_set_columns. NULL when out of memory, when o is not
 * a COPY FROM STDIN, or when key_index cannot be a column of this COPY. */
px_copy_split *px_copy_split_new(const prs_copy_opts *o, int key_index);

/* For a COPY that names no columns: the caller, who knows the table, gives its column
 * count (binary tuples are checked against it; 0 = unknown) and the key's name (for
 * messages and for FORCE_NULL / FORCE_NOT_NULL on the key). Returns 0 or -1 (memory). */
int px_copy_split_set_columns(px_copy_split *s, const prs_copy_opts *o, size_t n_columns,
                              const char *key_name);

/* Where headers, the binary trailer and the end marker go; without it they are dropped. */
void px_copy_split_set_part_fn(px_copy_split *s, px_copy_part_fn fn, void *arg);

/* The largest row (line or tuple) accepted; PX_COPY_DEFAULT_MAX_ROW unless set. */
void px_copy_split_set_max_row(px_copy_split *s, size_t max_row);

/* Splits the next chunk: calls fn for each row it completes, keeps a row cut at the
 * chunk's end for the next call. Returns PX_COPY_OK, PX_COPY_EDATA or PX_COPY_ESTOP;
 * after an error every later call fails the same way. */
int px_copy_split_feed(px_copy_split *s, const uint8_t *p, size_t n, px_copy_row_fn fn, void *arg);

/* The client sent CopyDone: a last text/CSV line without a newline is a row; binary data
 * must stop at a tuple boundary (a missing trailer is accepted, as PostgreSQL does). */
int px_copy_split_finish(px_copy_split *s, px_copy_row_fn fn, void *arg);

/* Whether the end marker (text/CSV \.) or the binary trailer has been seen. */
bool px_copy_split_ended(const px_copy_split *s);

/* The message of the last PX_COPY_EDATA, NULL if none; *sqlstate (when sqlstate is not
 * NULL) is set to its 5-character SQLSTATE. */
const char *px_copy_split_error(const px_copy_split *s, const char **sqlstate);

/* The 1-based number of the line (text/CSV, header included) or tuple (binary) being read,
 * for an error's context as PostgreSQL gives it ("COPY t, line 3"). */
size_t px_copy_split_line(const px_copy_split *s);

void px_copy_split_free(px_copy_split *s);

#endif

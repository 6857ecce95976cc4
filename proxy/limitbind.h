/* The Bind of a cross-shard read whose LIMIT or OFFSET is a parameter (LIMIT $n): the
 * client's bound values are read into the plan, for the merge, and replaced in the Bind the
 * shards get, so that they return LIMIT + OFFSET rows from their first. Pure code over
 * message bodies: no sockets, no knowledge of shards. */
#ifndef PX_LIMITBIND_H
#define PX_LIMITBIND_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "parser/scatter.h"

/* plan has limit_param or offset_param. types: the client's Parse body after its query
 * string (the parameter type count and types), bind: its Bind body after the portal and
 * statement names (formats, values, result formats).
 *
 * Returns 0 with out holding the shards' Bind rest and, when the values are usable, plan's
 * limit and offset set to them (PostgreSQL's meaning: a NULL LIMIT is none, a NULL OFFSET 0).
 * A Bind the server would reject by itself (too few values, a malformed message, a format
 * code other than 0 or 1, a binary value of the wrong length, a value out of range for its
 * type, a negative LIMIT or OFFSET, which PostgreSQL answers with 2201W or 2201X) goes to
 * the shards unchanged, and they give the client PostgreSQL's own error. Returns 1 with
 * sqlstate (6 bytes) and msg (cap bytes) set when the value cannot be read exactly (a
 * parameter type other than bigint, integer or smallint, text that is not a decimal
 * integer), -1 when out of memory. */
int px_limit_bind(prs_scatter *plan, const uint8_t *types, size_t types_len, const uint8_t *bind,
                  size_t bind_len, pgs_buf *out, char *sqlstate, char *msg, size_t cap);

#endif

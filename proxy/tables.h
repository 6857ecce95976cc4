/* The tables the config lists ([table.NAME]): which are sharded and by which column of
 * which type, and which are omnisharded, looked up by the names a query uses. Built once at
 * start and never changed, so any thread reads it without locks. Tables not listed live on
 * default_shard; this file does not route anything itself.
 *
 * Lookup rules (px_tables_find): a schema-qualified reference S.N finds [table.S.N], else
 * [table.N]; an unqualified N finds [table.N], else [table.public.N] (the schema of the
 * default search_path). Names compare exactly, as PostgreSQL compares identifiers after
 * folding unquoted ones to lower case. */
#ifndef PX_TABLES_H
#define PX_TABLES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"
#include "shardmap/key.h"

typedef struct px_table {
    const char *schema;    /* borrowed from the cfg; "" = [table.NAME] (unqualified) */
    const char *name;      /* borrowed from the cfg */
    const char *shard_key; /* borrowed from the cfg: the key column; NULL when omnisharded */
    bool omnisharded;      /* a copy on every shard */
    sm_key_type key_type;  /* sharded: the kind of key (int, text, uuid) */
    uint32_t key_oid;      /* sharded: the column's type, SM_OID_* (int2/int4/int8, text/varchar,
                              uuid), the type_oid sm_key_from_text and sm_key_from_binary take;
                              with key_type set in the config: SM_OID_INT8, SM_OID_TEXT or
                              SM_OID_UUID */
    int key_column;        /* sharded: index of shard_key in px_tables_key_columns(), the list the
                              parser's prs_classify_opts.key_columns takes; -1 when omnisharded */
} px_table;

typedef struct px_tables px_tables;

/* The most distinct shard-key column names the parser can look for at once. */
#define PX_MAX_KEY_COLUMNS 8

/* Builds the registry from cfg's [table.NAME] sections; cfg must outlive it (names are
 * borrowed). Key types come from key_type; the others are left for px_tables_resolve.
 * Returns 0 with *out (px_tables_free), or -1 with err filled (out of memory, more than
 * PX_MAX_KEY_COLUMNS distinct shard-key names). */
int px_tables_build(const cfg_config *cfg, px_tables **out, char *err, size_t errlen);

/* Asks shard 0's primary for the type of each shard key the config leaves to it
 * (format_type(atttypid) of the column), logging in as the monitor does (cfg_monitor_user)
 * to the database named by catalog_dsn's dbname, or monitor_dbname. Returns 0 (at once when
 * nothing needs asking), or -1 with err naming the table when it is missing, has no such
 * column, or the column's type cannot be a shard key, or the server cannot be reached. */
int px_tables_resolve(px_tables *t, const cfg_config *cfg, char *err, size_t errlen);

/* The table a query's reference names (schema NULL or "" when unqualified), by the rules
 * above, or NULL when the config does not list it. */
const px_table *px_tables_find(const px_tables *t, const char *schema, const char *name);

/* Every table, in no particular order: i from 0 to px_tables_count() - 1. */
int px_tables_count(const px_tables *t);
const px_table *px_tables_at(const px_tables *t, int i);

/* The distinct shard-key column names, for prs_classify_opts.key_columns; *n gets their
 * number (at most PX_MAX_KEY_COLUMNS). */
const char *const *px_tables_key_columns(const px_tables *t, int *n);

void px_tables_free(px_tables *t);

#endif

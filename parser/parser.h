/* Query classification for routing: what a statement is, whether a replica may run it,
 * which tables it touches and where its shard-key values sit; and the per-worker parse
 * cache that keeps libpg_query off the hot path. Pure code: no I/O, no global state. */
#ifndef PRS_PARSER_H
#define PRS_PARSER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "parser/lexer.h"

typedef enum prs_kind {
    PRS_KIND_UNKNOWN = 0, /* not classified (syntax error): route to the primary */
    PRS_KIND_EMPTY,       /* only comments or semicolons */
    PRS_KIND_SELECT,      /* also VALUES and TABLE */
    PRS_KIND_INSERT,
    PRS_KIND_UPDATE,
    PRS_KIND_DELETE,
    PRS_KIND_MERGE,
    PRS_KIND_COPY,
    PRS_KIND_DDL, /* CREATE, ALTER, DROP, GRANT, COMMENT, REFRESH MATERIALIZED VIEW, ... */
    PRS_KIND_TRUNCATE,
    PRS_KIND_BEGIN, /* BEGIN and START TRANSACTION */
    PRS_KIND_COMMIT,
    PRS_KIND_ROLLBACK,
    PRS_KIND_SAVEPOINT,
    PRS_KIND_RELEASE,
    PRS_KIND_ROLLBACK_TO,
    PRS_KIND_PREPARE_TXN, /* PREPARE TRANSACTION */
    PRS_KIND_COMMIT_PREPARED,
    PRS_KIND_ROLLBACK_PREPARED,
    PRS_KIND_SET, /* SET, SET LOCAL, SET TRANSACTION, SET SESSION CHARACTERISTICS */
    PRS_KIND_SHOW,
    PRS_KIND_RESET,
    PRS_KIND_DISCARD,
    PRS_KIND_LISTEN,
    PRS_KIND_NOTIFY,
    PRS_KIND_UNLISTEN,
    PRS_KIND_PREPARE, /* SQL-level PREPARE name AS ... */
    PRS_KIND_EXECUTE,
    PRS_KIND_DEALLOCATE,
    PRS_KIND_EXPLAIN,
    PRS_KIND_CALL,
    PRS_KIND_DO,
    PRS_KIND_VACUUM,
    PRS_KIND_ANALYZE,
    PRS_KIND_LOCK,
    PRS_KIND_DECLARE, /* DECLARE cursor */
    PRS_KIND_FETCH,   /* FETCH and MOVE */
    PRS_KIND_CLOSE,   /* CLOSE cursor */
    PRS_KIND_CHECKPOINT,
    PRS_KIND_UTILITY, /* anything else: LOAD, CLUSTER, REINDEX, ALTER SYSTEM, ... */
    PRS_KIND__COUNT
} prs_kind;

/* Flags. The first group makes a statement a write even when its kind reads. */
enum {
    PRS_F_FOR_UPDATE = 1u << 0,    /* FOR UPDATE / NO KEY UPDATE / SHARE / KEY SHARE anywhere */
    PRS_F_WRITABLE_CTE = 1u << 1,  /* WITH x AS (INSERT/UPDATE/DELETE/MERGE ...) */
    PRS_F_NEXTVAL = 1u << 2,       /* nextval, setval, currval, lastval */
    PRS_F_ADVISORY_LOCK = 1u << 3, /* pg_advisory_* and pg_try_advisory_* */
    PRS_F_UNSAFE_FUNC = 1u << 4,   /* a function not in the built-in read-only list */
    PRS_F_SELECT_INTO = 1u << 5,   /* SELECT ... INTO table */
    PRS_F_TEMP_TABLE = 1u << 6,    /* CREATE TEMP ..., or a relation in pg_temp */
    PRS_F_TOO_COMPLEX = 1u << 7,   /* nested deeper than the walker follows */
    PRS_F_EXPLAIN_ANALYZE = 1u << 8,
    PRS_F_READ_ONLY_TXN = 1u << 9, /* BEGIN/START/SET TRANSACTION/SET SESSION CHARACTERISTICS ... READ ONLY */
    PRS_F_READ_WRITE_TXN = 1u << 10,   /* ... READ WRITE, said explicitly */
    PRS_F_TXN_CHAIN = 1u << 11,        /* COMMIT/ROLLBACK AND CHAIN: a new transaction starts at once */
    PRS_F_SET_LOCAL = 1u << 12,        /* SET LOCAL */
    PRS_F_PGSHARD_VAR = 1u << 13,      /* SET/RESET/SHOW of a pgshard.* variable: the proxy's own */
    PRS_F_MULTI = 1u << 14,            /* more than one statement */
    PRS_F_KEY_UPDATE = 1u << 15,       /* UPDATE or ON CONFLICT DO UPDATE assigns a shard-key column */
    PRS_F_TABLES_TRUNCATED = 1u << 16, /* more tables than tables[] holds */
    PRS_F_KEYS_TRUNCATED = 1u << 17,   /* more key positions than keys[] holds */
    PRS_F_OCCS_TRUNCATED = 1u << 18,   /* occs[]/slots[] could not describe every relation named */
    PRS_F_NO_TXN_BLOCK = 1u << 19,     /* cannot run inside a transaction block (VACUUM, CREATE
                                          INDEX CONCURRENTLY, CREATE DATABASE, REINDEX, ...) */
};
#define PRS_F_WRITE_MASK                                                                                     \
    (PRS_F_FOR_UPDATE | PRS_F_WRITABLE_CTE | PRS_F_NEXTVAL | PRS_F_ADVISORY_LOCK | PRS_F_UNSAFE_FUNC |       \
     PRS_F_SELECT_INTO | PRS_F_TEMP_TABLE | PRS_F_TOO_COMPLEX)

/* Session state a statement leaves on its server that pgshard cannot replay on another
 * (prs_query_info.pin), and the statements that remove it (prs_query_info.unpin). A server
 * holding any of it stays with its client in transaction pooling (proxy/pin.c). */
enum {
    PRS_PIN_TEMP = 1u << 0,        /* CREATE TEMP (not ON COMMIT DROP), or a relation in pg_temp */
    PRS_PIN_HOLD_CURSOR = 1u << 1, /* DECLARE ... WITH HOLD */
    PRS_PIN_ADVISORY = 1u << 2,    /* pg_advisory_lock* and pg_try_advisory_lock* (session level) */
    PRS_PIN_LISTEN = 1u << 3,      /* LISTEN */
    PRS_PIN_SET_CONFIG = 1u << 4,  /* set_config(name, value, false): a SET pgshard does not see */
    PRS_PIN_ALL = (1u << 5) - 1,
};

typedef enum prs_isolation {
    PRS_ISO_DEFAULT = 0,
    PRS_ISO_READ_UNCOMMITTED,
    PRS_ISO_READ_COMMITTED,
    PRS_ISO_REPEATABLE_READ,
    PRS_ISO_SERIALIZABLE,
} prs_isolation;

typedef enum prs_key_src {
    PRS_KEY_LITERAL = 1,   /* index: a literal of the text's prs_lexed */
    PRS_KEY_PARAM,         /* index: n of $n */
    PRS_KEY_PARAM_ARRAY,   /* col = ANY($n): index n; the parameter is an array of keys */
    PRS_KEY_LITERAL_ARRAY, /* col = ANY('{1,2}'): index: the literal holding the array text */
    PRS_KEY_COPY_COLUMN,   /* COPY t (...) FROM: index: 0-based position of the key in a row */
} prs_key_src;

/* One place where a shard-key value is found. Keys are taken where they restrict rows: the
 * AND chain of a WHERE (in any query block: subqueries, CTEs, derived tables, set operation
 * branches) or of a JOIN's ON (col = v, col IN (...), col = ANY(...)), each INSERT ... VALUES
 * row, and COPY FROM's column list. Refs with the same cond are alternatives (an IN list) and
 * sit next to each other; different conds must all hold. A WHERE or ON ref restricts one
 * slot (a relation occurrence's column, see prs_slot), so only that occurrence's rows, and
 * through equalities the rows of others. */
typedef struct prs_key_ref {
    uint32_t index;
    uint8_t cond;    /* fewer than PRS_MAX_KEYS conds: each has a ref */
    uint8_t slot;    /* index into slots[], PRS_NO_SLOT for INSERT rows, COPY and statements > 0 */
    int16_t row;     /* INSERT VALUES row (0-based), -1 elsewhere */
    uint8_t src;     /* prs_key_src */
    uint8_t column;  /* index into the caller's key-column list */
    uint8_t stmt;    /* statement of a multi-statement text, saturates at 255 */
    uint8_t negated; /* written with a leading minus: the value is the literal's, negated */
} prs_key_ref;

#define PRS_MAX_TABLES 16
#define PRS_MAX_KEYS 64
#define PRS_MAX_KEY_COLUMNS 8
#define PRS_MAX_OCCS 32  /* at most 32: slots hold masks of occurrences */
#define PRS_MAX_SLOTS 32 /* at most 32: slots hold masks of slots */
#define PRS_NO_SLOT 0xFFu
#define PRS_NO_OCC 0xFFu
#define PRS_POOL_SIZE 512
#define PRS_NO_STR 0xFFFFu

typedef struct prs_table_ref {
    uint16_t schema; /* pool offset, PRS_NO_STR when unqualified */
    uint16_t name;   /* pool offset */
} prs_table_ref;

/* Occurrence flags. */
enum {
    PRS_OCC_WRITTEN = 1u << 0,  /* the target of an INSERT, UPDATE, DELETE or MERGE */
    PRS_OCC_VALUES = 1u << 1,   /* the target of the statement's INSERT ... VALUES: its rows' keys
                                   (key refs with row >= 0) say where it writes */
    PRS_OCC_UNPROVEN = 1u << 2, /* rows written with keys not known here (INSERT ... SELECT, an
                                   INSERT in a CTE, a MERGE target): no key restricts it */
};

/* One place a relation is named in a query (a FROM item, a JOIN input, an UPDATE/DELETE/
 * INSERT/MERGE target, in any subquery, CTE body or set operation branch). A CTE's name
 * used in FROM is not one: the CTE body's relations are. */
typedef struct prs_occ {
    uint16_t alias; /* pool offset of its alias, PRS_NO_STR when it has none (or no room) */
    uint8_t table;  /* index into tables[] */
    uint8_t flags;  /* PRS_OCC_* */
} prs_occ;

/* A key column of one occurrence that a key condition or an equality names. `from` says whose
 * restrictions hold for it once equalities are followed (a.k = b.k both ways in a WHERE or
 * an inner join's ON, only into the nullable side of an outer join's ON, only inward from an
 * outer query's column): bit j set means a key ref of slot j restricts this slot's rows too.
 * A slot with cands != 0 is an unqualified column in a FROM of several relations: it belongs
 * to the one candidate whose table is sharded by `column`, decided when the tables are known
 * (no other could have the column without PostgreSQL calling it ambiguous); such slots are
 * in no equality. */
typedef struct prs_slot {
    uint32_t from;  /* bit per slot, its own included */
    uint32_t cands; /* bit per occurrence; 0 for a slot of a known occurrence */
    uint8_t occ;    /* index into occs[], PRS_NO_OCC when cands decides */
    uint8_t column; /* index into the caller's key-column list */
    uint16_t reserved;
} prs_slot;

/* The classification of one query text. Self-contained (strings live in pool), so it can
 * be copied with memcpy. Everything in it depends on the normalized text only, never on a
 * literal's value, so one analysis serves every text with the same cache key: where a value
 * matters (a SET value, a shard key) it is given as a literal index or $n. */
typedef struct prs_query_info {
    uint8_t kind;       /* prs_kind of the first statement */
    bool read_only;     /* every statement may run on a replica */
    uint8_t isolation;  /* prs_isolation named by BEGIN / SET TRANSACTION */
    uint8_t pin;        /* PRS_PIN_* the statements leave on the server */
    uint32_t flags;     /* PRS_F_* of all statements together */
    uint64_t kind_mask; /* bit (1 << kind) for each statement's kind */
    uint32_t n_statements;
    uint16_t n_tables;     /* in tables[] */
    uint16_t n_keys;       /* in keys[] */
    uint16_t insert_rows;  /* VALUES rows of an INSERT: a row without a key ref has none */
    uint16_t set_name;     /* pool offset: SET/RESET/SHOW variable (lower case as parsed) */
    uint16_t set_value;    /* pool offset: a SET value written as a word (on, DEFAULT, UTC) */
    uint8_t n_occs;        /* in occs[] (statement 0 and later ones alike) */
    uint8_t n_slots;       /* in slots[] */
    int32_t set_value_lit; /* literal index of a SET value written as one literal, else -1 */
    uint16_t object_name;  /* pool offset: PREPARE/EXECUTE/DEALLOCATE statement, LISTEN/NOTIFY
                              channel, SAVEPOINT/RELEASE name, DECLARE/FETCH/CLOSE cursor */
    uint16_t pool_len;
    uint16_t unpin;                       /* PRS_PIN_* they remove (DISCARD ALL: all of them) */
    uint16_t reserved1;                   /* zero: no padding anywhere, so equal infos are equal bytes */
    uint32_t reserved2;                   /* zero */
    prs_table_ref tables[PRS_MAX_TABLES]; /* distinct relations, CTE names left out */
    prs_key_ref keys[PRS_MAX_KEYS];
    prs_occ occs[PRS_MAX_OCCS];
    prs_slot slots[PRS_MAX_SLOTS];
    char pool[PRS_POOL_SIZE]; /* NUL-terminated strings referenced by offset */
} prs_query_info;

_Static_assert(sizeof(prs_query_info) ==
                   48 + PRS_MAX_TABLES * sizeof(prs_table_ref) + PRS_MAX_KEYS * sizeof(prs_key_ref) +
                       PRS_MAX_OCCS * sizeof(prs_occ) + PRS_MAX_SLOTS * sizeof(prs_slot) + PRS_POOL_SIZE,
               "prs_query_info must have no padding");
_Static_assert(sizeof(prs_key_ref) == 12 && sizeof(prs_occ) == 4 && sizeof(prs_slot) == 12,
               "prs_key_ref, prs_occ and prs_slot must have no padding");

static inline const char *prs_info_str(const prs_query_info *qi, uint16_t off)
{
    return off == PRS_NO_STR || off >= qi->pool_len ? NULL : qi->pool + off;
}

typedef struct prs_classify_opts {
    const char *const *key_columns; /* not owned: shard-key column names as the parser
                                       reports them (unquoted names are lower case) */
    size_t n_key_columns;           /* at most PRS_MAX_KEY_COLUMNS are used */
} prs_classify_opts;

/* Classifies sql[0..len) with libpg_query. lex must be this text's prs_lex output (key and
 * SET literal indexes refer to it), or NULL to lex here. Returns 0, or a negative PRS_E*
 * code with *out describing an unknown statement that is not read-only. */
int prs_classify_ex(const char *sql, size_t len, const prs_lexed *lex, const prs_classify_opts *opts,
                    prs_query_info *out);
int prs_classify(const char *sql, size_t len, prs_query_info *out);

const char *prs_kind_name(prs_kind kind);
/* Returns the kind named, or -1. */
int prs_kind_from_name(const char *name, size_t len);
/* The name of one flag bit, or NULL. */
const char *prs_flag_name(uint32_t flag);
/* Returns the flag named, or 0. */
uint32_t prs_flag_from_name(const char *name, size_t len);

/* The sorted list of functions known to be read-only (for tests and SHOW). */
const char *const *prs_safe_functions(size_t *n);
bool prs_function_is_safe(const char *name);

/* ---- parse cache (cache.c) ---- */

typedef struct prs_cache prs_cache;

typedef struct prs_cache_key {
    uint64_t hash;    /* prs_lexed.hash */
    const char *text; /* normalized text, not owned */
    size_t text_len;
    const char *name; /* extended-protocol statement name, or NULL; not owned */
    size_t name_len;
} prs_cache_key;

typedef struct prs_cache_stats {
    uint64_t hits;
    uint64_t misses;
    uint64_t inserts;
    uint64_t evictions;
    size_t size;
    size_t capacity;
} prs_cache_stats;

static inline prs_cache_key prs_cache_key_of(const prs_lexed *lx, const char *name, size_t name_len)
{
    prs_cache_key k = {lx->hash, prs_lexed_text(lx), prs_lexed_len(lx), name, name_len};
    return k;
}

/* A cache of at most capacity entries (>= 1); NULL when out of memory. */
prs_cache *prs_cache_create(size_t capacity);
void prs_cache_destroy(prs_cache *c);
/* The cached analysis, made most recently used, or NULL (counted as a miss). The pointer
 * stays valid until the next insert, clear or destroy. */
const prs_query_info *prs_cache_lookup(prs_cache *c, const prs_cache_key *key);
/* Stores a copy of *info, replacing an entry with the same key or evicting the least
 * recently used one when full. Returns 0 or PRS_ENOMEM. */
int prs_cache_insert(prs_cache *c, const prs_cache_key *key, const prs_query_info *info);
/* Drops every entry (after a change of shard-key columns, for one); counters stay. */
void prs_cache_clear(prs_cache *c);
prs_cache_stats prs_cache_get_stats(const prs_cache *c);

#endif

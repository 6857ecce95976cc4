/* prs_classify: libpg_query's parse tree (protobuf, walked through protobuf-c's descriptors)
 * turned into a prs_query_info. This is the cache-miss path; the hot path never comes here.
 * It decides, for every statement kind, whether a replica may run it, and finds where the
 * shard key's values sit. It does not pick shards or replicas. */
#include <pg_query.h>
#include <pg_query/pg_query.pb-c.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "parser/parser.h"
#include "parser/tree.h"

/* Node wrappers count, so this is about half as many levels of real nesting. */
#define MAX_DEPTH 2000
#define MAX_SEEN_TABLES 64
#define MAX_CTES 32
#define CURSOR_OPT_HOLD 0x0020 /* PostgreSQL's parsenodes.h: DECLARE ... WITH HOLD */

typedef PgQuery__Node Node;

typedef struct seen_table {
    const char *schema; /* points into the unpacked tree; NULL when unqualified */
    const char *name;
} seen_table;

/* What the generic walk over one statement's tree collects. */
typedef struct walker {
    uint32_t flags;
    uint8_t pin, unpin; /* PRS_PIN_* */
    bool query_checks;  /* functions, row locks and CTEs matter (not for DDL) */
    unsigned n_tables;
    bool tables_overflow;
    seen_table tables[MAX_SEEN_TABLES];
    unsigned n_ctes;
    const char *ctes[MAX_CTES];
    unsigned stmt;        /* the statement being walked */
    unsigned n_rangevars; /* RangeVars in it, for the occurrence analysis to account for */
} walker;

typedef struct occ_work occ_work;

typedef struct classifier {
    const char *sql;
    size_t len;
    const prs_lexed *lex;
    const prs_classify_opts *opts;
    prs_query_info *out;
    walker w;
    occ_work *ow;  /* the occurrence analysis' workspace; owned by parse_and_classify */
    unsigned stmt; /* index of the statement being classified */
    uint16_t next_cond;
} classifier;

typedef struct stmt_result {
    uint8_t kind;
    bool read_only; /* before the write flags are applied */
    uint32_t flags;
    uint8_t pin, unpin; /* PRS_PIN_* */
} stmt_result;

/* ---- names ---- */

static const char *const kind_names[PRS_KIND__COUNT] = {
    [PRS_KIND_UNKNOWN] = "unknown",
    [PRS_KIND_EMPTY] = "empty",
    [PRS_KIND_SELECT] = "select",
    [PRS_KIND_INSERT] = "insert",
    [PRS_KIND_UPDATE] = "update",
    [PRS_KIND_DELETE] = "delete",
    [PRS_KIND_MERGE] = "merge",
    [PRS_KIND_COPY] = "copy",
    [PRS_KIND_DDL] = "ddl",
    [PRS_KIND_TRUNCATE] = "truncate",
    [PRS_KIND_BEGIN] = "begin",
    [PRS_KIND_COMMIT] = "commit",
    [PRS_KIND_ROLLBACK] = "rollback",
    [PRS_KIND_SAVEPOINT] = "savepoint",
    [PRS_KIND_RELEASE] = "release",
    [PRS_KIND_ROLLBACK_TO] = "rollback_to",
    [PRS_KIND_PREPARE_TXN] = "prepare_txn",
    [PRS_KIND_COMMIT_PREPARED] = "commit_prepared",
    [PRS_KIND_ROLLBACK_PREPARED] = "rollback_prepared",
    [PRS_KIND_SET] = "set",
    [PRS_KIND_SHOW] = "show",
    [PRS_KIND_RESET] = "reset",
    [PRS_KIND_DISCARD] = "discard",
    [PRS_KIND_LISTEN] = "listen",
    [PRS_KIND_NOTIFY] = "notify",
    [PRS_KIND_UNLISTEN] = "unlisten",
    [PRS_KIND_PREPARE] = "prepare",
    [PRS_KIND_EXECUTE] = "execute",
    [PRS_KIND_DEALLOCATE] = "deallocate",
    [PRS_KIND_EXPLAIN] = "explain",
    [PRS_KIND_CALL] = "call",
    [PRS_KIND_DO] = "do",
    [PRS_KIND_VACUUM] = "vacuum",
    [PRS_KIND_ANALYZE] = "analyze",
    [PRS_KIND_LOCK] = "lock",
    [PRS_KIND_DECLARE] = "declare",
    [PRS_KIND_FETCH] = "fetch",
    [PRS_KIND_CLOSE] = "close",
    [PRS_KIND_CHECKPOINT] = "checkpoint",
    [PRS_KIND_UTILITY] = "utility",
};

static const char *const flag_names[] = {
    "for_update",     "writable_cte",     "nextval",        "advisory_lock",   "unsafe_func",
    "select_into",    "temp_table",       "too_complex",    "explain_analyze", "read_only_txn",
    "read_write_txn", "txn_chain",        "set_local",      "pgshard_var",     "multi",
    "key_update",     "tables_truncated", "keys_truncated", "occs_truncated",  "no_txn_block",
};

const char *prs_kind_name(prs_kind kind)
{
    return (unsigned)kind < PRS_KIND__COUNT ? kind_names[kind] : NULL;
}

int prs_kind_from_name(const char *name, size_t len)
{
    for (int k = 0; k < PRS_KIND__COUNT; k++)
        if (strlen(kind_names[k]) == len && memcmp(kind_names[k], name, len) == 0)
            return k;
    return -1;
}

const char *prs_flag_name(uint32_t flag)
{
    for (size_t i = 0; i < sizeof flag_names / sizeof flag_names[0]; i++)
        if (flag == 1u << i)
            return flag_names[i];
    return NULL;
}

uint32_t prs_flag_from_name(const char *name, size_t len)
{
    for (size_t i = 0; i < sizeof flag_names / sizeof flag_names[0]; i++)
        if (strlen(flag_names[i]) == len && memcmp(flag_names[i], name, len) == 0)
            return 1u << i;
    return 0;
}

/* ---- small helpers ---- */

static inline bool str_set(const char *s)
{
    return s && *s;
}

static bool has_prefix(const char *s, const char *p)
{
    return s && strncmp(s, p, strlen(p)) == 0;
}

static uint16_t pool_add(prs_query_info *qi, const char *s)
{
    size_t n = strlen(s);
    if (qi->pool_len + n + 1 > PRS_POOL_SIZE)
        return PRS_NO_STR;
    uint16_t off = qi->pool_len;
    memcpy(qi->pool + off, s, n + 1);
    qi->pool_len = (uint16_t)(qi->pool_len + n + 1);
    return off;
}

static void info_init(prs_query_info *qi)
{
    memset(qi, 0, sizeof *qi);
    qi->set_name = qi->set_value = qi->object_name = PRS_NO_STR;
    qi->set_value_lit = -1;
}

static const char *node_string(const Node *n)
{
    return (n && n->node_case == PG_QUERY__NODE__NODE_STRING && n->string) ? n->string->sval : NULL;
}

/* ---- the generic walk ---- */

static bool is_modifying(const Node *n)
{
    if (!n)
        return false;
    switch (n->node_case) {
    case PG_QUERY__NODE__NODE_INSERT_STMT:
    case PG_QUERY__NODE__NODE_UPDATE_STMT:
    case PG_QUERY__NODE__NODE_DELETE_STMT:
    case PG_QUERY__NODE__NODE_MERGE_STMT:
        return true;
    default:
        return false;
    }
}

static bool walker_cte(const walker *w, const char *name)
{
    for (unsigned i = 0; i < w->n_ctes; i++)
        if (strcmp(w->ctes[i], name) == 0)
            return true;
    return false;
}

static void see_table(walker *w, const PgQuery__RangeVar *rv)
{
    if (!str_set(rv->relname))
        return;
    const char *schema = str_set(rv->schemaname) ? rv->schemaname : NULL;
    if ((rv->relpersistence && rv->relpersistence[0] == 't') || has_prefix(schema, "pg_temp")) {
        w->flags |= PRS_F_TEMP_TABLE;
        w->pin |= PRS_PIN_TEMP;
    }
    for (unsigned i = 0; i < w->n_tables; i++) {
        const seen_table *t = &w->tables[i];
        if (strcmp(t->name, rv->relname) == 0 &&
            (t->schema == schema || (t->schema && schema && strcmp(t->schema, schema) == 0)))
            return;
    }
    if (w->n_tables == MAX_SEEN_TABLES) {
        w->tables_overflow = true;
        return;
    }
    w->tables[w->n_tables].schema = schema;
    w->tables[w->n_tables].name = rv->relname;
    w->n_tables++;
}

static bool is_sequence_function(const char *name)
{
    return strcmp(name, "nextval") == 0 || strcmp(name, "setval") == 0 || strcmp(name, "currval") == 0 ||
           strcmp(name, "lastval") == 0;
}

/* set_config(name, value, is_local) with is_local a constant true: the setting ends with the
 * transaction. Anything else (false, or a value known only when it runs) may outlive it. */
static bool set_config_local(const PgQuery__FuncCall *fc)
{
    if (fc->n_args != 3)
        return false;
    const Node *a = fc->args[2];
    while (a && a->node_case == PG_QUERY__NODE__NODE_TYPE_CAST)
        a = a->type_cast->arg;
    if (!a || a->node_case != PG_QUERY__NODE__NODE_A_CONST)
        return false;
    const PgQuery__AConst *k = a->a_const;
    if (k->val_case == PG_QUERY__A__CONST__VAL_BOOLVAL)
        return k->boolval && k->boolval->boolval;
    if (k->val_case == PG_QUERY__A__CONST__VAL_SVAL && k->sval && k->sval->sval) {
        static const char *const yes[] = {"true", "t", "on", "yes", "y", "1"};
        for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++)
            if (strcasecmp(k->sval->sval, yes[i]) == 0)
                return true;
    }
    return false;
}

/* Functions decide whether a SELECT may go to a replica. Only built-ins, unqualified or in
 * pg_catalog, can be known; anything else might write. currval and lastval read session
 * state that exists only where nextval ran, so they go with nextval to the primary. */
static void see_function(walker *w, const PgQuery__FuncCall *fc)
{
    if (fc->n_funcname == 0)
        return;
    const char *name = node_string(fc->funcname[fc->n_funcname - 1]);
    const char *schema = fc->n_funcname >= 2 ? node_string(fc->funcname[fc->n_funcname - 2]) : NULL;
    bool builtin =
        fc->n_funcname == 1 || (fc->n_funcname == 2 && schema && strcmp(schema, "pg_catalog") == 0);
    if (!name || !builtin) {
        w->flags |= PRS_F_UNSAFE_FUNC;
        return;
    }
    if (is_sequence_function(name)) {
        w->flags |= PRS_F_NEXTVAL;
    } else if (has_prefix(name, "pg_advisory_") || has_prefix(name, "pg_try_advisory_")) {
        w->flags |= PRS_F_ADVISORY_LOCK;
        /* The session-level locks outlive the transaction; the _xact_ ones do not. */
        if (strcmp(name, "pg_advisory_unlock_all") == 0)
            w->unpin |= PRS_PIN_ADVISORY;
        else if (strstr(name, "_lock") && !strstr(name, "_xact_"))
            w->pin |= PRS_PIN_ADVISORY;
    } else if (!prs_function_is_safe(name)) {
        w->flags |= PRS_F_UNSAFE_FUNC;
    }
    if (strcmp(name, "set_config") == 0 && !set_config_local(fc))
        w->pin |= PRS_PIN_SET_CONFIG;
}

static void see_cte(walker *w, const PgQuery__CommonTableExpr *cte)
{
    if (str_set(cte->ctename) && w->n_ctes < MAX_CTES)
        w->ctes[w->n_ctes++] = cte->ctename;
    if (w->query_checks && is_modifying(cte->ctequery))
        w->flags |= PRS_F_WRITABLE_CTE;
}

static void visit(walker *w, const ProtobufCMessage *m)
{
    const ProtobufCMessageDescriptor *d = m->descriptor;
    if (d == &pg_query__range_var__descriptor) {
        w->n_rangevars++;
        see_table(w, (const PgQuery__RangeVar *)m);
    } else if (d == &pg_query__common_table_expr__descriptor)
        see_cte(w, (const PgQuery__CommonTableExpr *)m);
    else if (!w->query_checks)
        return;
    else if (d == &pg_query__func_call__descriptor)
        see_function(w, (const PgQuery__FuncCall *)m);
    else if (d == &pg_query__locking_clause__descriptor)
        w->flags |= PRS_F_FOR_UPDATE;
    else if (d == &pg_query__select_stmt__descriptor && ((const PgQuery__SelectStmt *)m)->into_clause)
        w->flags |= PRS_F_SELECT_INTO;
}

/* Visits every message of the tree through protobuf-c's reflection, so no node type can be
 * missed when libpg_query's tree grows. A Node is a oneof: only its set member is followed. */
static void walk(walker *w, const ProtobufCMessage *m, unsigned depth)
{
    if (!m)
        return;
    if (depth > MAX_DEPTH) {
        w->flags |= PRS_F_TOO_COMPLEX;
        return;
    }
    const ProtobufCMessageDescriptor *d = m->descriptor;
    const char *base = (const char *)m;
    if (d == &pg_query__node__descriptor) {
        const ProtobufCFieldDescriptor *f =
            protobuf_c_message_descriptor_get_field(d, (unsigned)((const Node *)m)->node_case);
        if (f)
            walk(w, *(const ProtobufCMessage *const *)(base + f->offset), depth + 1);
        return;
    }
    visit(w, m);
    if (d == &pg_query__locking_clause__descriptor)
        return; /* FOR UPDATE OF t names tables of the FROM again: not more relations */
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        if (f->type != PROTOBUF_C_TYPE_MESSAGE)
            continue;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t cnt = *(const size_t *)(base + f->quantifier_offset);
            const ProtobufCMessage *const *arr = *(const ProtobufCMessage *const *const *)(base + f->offset);
            for (size_t k = 0; k < cnt; k++)
                walk(w, arr[k], depth + 1);
        } else if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
            if (*(const uint32_t *)(base + f->quantifier_offset) == f->id)
                walk(w, *(const ProtobufCMessage *const *)(base + f->offset), depth + 1);
        } else {
            walk(w, *(const ProtobufCMessage *const *)(base + f->offset), depth + 1);
        }
    }
}

/* ---- shard keys ---- */

static int key_name_index(const classifier *c, const char *name)
{
    if (!c->opts || !name)
        return -1;
    size_t n = c->opts->n_key_columns < PRS_MAX_KEY_COLUMNS ? c->opts->n_key_columns : PRS_MAX_KEY_COLUMNS;
    /* cppcheck-suppress knownConditionTrueFalse ; its value flow wrongly takes n to be 0 */
    for (size_t i = 0; i < n; i++)
        if (c->opts->key_columns[i] && strcmp(c->opts->key_columns[i], name) == 0)
            return (int)i;
    return -1;
}

static const Node *strip_casts(const Node *v)
{
    while (v && v->node_case == PG_QUERY__NODE__NODE_TYPE_CAST && v->type_cast)
        v = v->type_cast->arg;
    return v;
}

/* The literal a constant at byte `loc` came from. PostgreSQL folds "- 5" into a constant
 * located at the minus sign; that is accepted when only whitespace separates the two. */
static int literal_at(const classifier *c, int32_t loc, bool *negated)
{
    *negated = false;
    if (loc < 0 || (size_t)loc >= c->len)
        return -1;
    int idx = prs_lexed_find(c->lex, (uint32_t)loc);
    if (idx >= 0 || c->sql[loc] != '-')
        return idx;
    size_t i = (size_t)loc + 1;
    while (i < c->len && (c->sql[i] == ' ' || c->sql[i] == '\t' || c->sql[i] == '\n' || c->sql[i] == '\r'))
        i++;
    idx = prs_lexed_find(c->lex, (uint32_t)i);
    *negated = idx >= 0 && c->lex->lits[idx].kind == PRS_LIT_NUMBER;
    return *negated ? idx : -1;
}

/* A value that can be read from the text or the Bind message: a literal or $n. */
static bool key_value(const classifier *c, const Node *v, prs_key_ref *ref)
{
    v = strip_casts(v);
    if (!v)
        return false;
    if (v->node_case == PG_QUERY__NODE__NODE_PARAM_REF) {
        if (v->param_ref->number <= 0)
            return false;
        ref->src = PRS_KEY_PARAM;
        ref->index = (uint32_t)v->param_ref->number;
        return true;
    }
    if (v->node_case != PG_QUERY__NODE__NODE_A_CONST)
        return false;
    const PgQuery__AConst *k = v->a_const;
    if (k->isnull || k->val_case == PG_QUERY__A__CONST__VAL_BOOLVAL)
        return false;
    bool neg;
    int idx = literal_at(c, k->location, &neg);
    if (idx < 0)
        return false;
    ref->src = PRS_KEY_LITERAL;
    ref->index = (uint32_t)idx;
    ref->negated = neg;
    return true;
}

static bool add_ref(classifier *c, prs_key_ref ref)
{
    prs_query_info *qi = c->out;
    if (qi->n_keys >= PRS_MAX_KEYS) {
        qi->flags |= PRS_F_KEYS_TRUNCATED;
        return false;
    }
    ref.stmt = (uint8_t)(c->stmt > 255 ? 255 : c->stmt);
    qi->keys[qi->n_keys++] = ref;
    return true;
}

static prs_key_ref new_ref(classifier *c, int col, int slot, int row)
{
    prs_key_ref r = {0};
    r.column = (uint8_t)col;
    r.slot = slot >= 0 ? (uint8_t)slot : (uint8_t)PRS_NO_SLOT;
    r.row = (int16_t)row;
    r.cond = (uint8_t)c->next_cond;
    return r;
}

/* A list of alternatives (IN (...), ANY(ARRAY[...])) counts only if every element is a
 * usable value and all of them fit: a partial list would name too few shards. */
static void key_list(classifier *c, int col, int slot, Node *const *items, size_t n)
{
    prs_key_ref r = new_ref(c, col, slot, -1);
    if (n == 0)
        return;
    for (size_t i = 0; i < n; i++)
        if (!key_value(c, items[i], &r))
            return;
    if (c->out->n_keys + n > PRS_MAX_KEYS) {
        c->out->flags |= PRS_F_KEYS_TRUNCATED;
        return;
    }
    for (size_t i = 0; i < n; i++) {
        r = new_ref(c, col, slot, -1);
        key_value(c, items[i], &r);
        add_ref(c, r);
    }
    c->next_cond++;
}

static void key_eq(classifier *c, int col, int slot, const Node *val)
{
    prs_key_ref r = new_ref(c, col, slot, -1);
    if (key_value(c, val, &r) && add_ref(c, r))
        c->next_cond++;
}

static void key_any(classifier *c, int col, int slot, const Node *val)
{
    const Node *v = strip_casts(val);
    if (!v)
        return;
    if (v->node_case == PG_QUERY__NODE__NODE_A_ARRAY_EXPR) {
        key_list(c, col, slot, v->a_array_expr->elements, v->a_array_expr->n_elements);
        return;
    }
    prs_key_ref r = new_ref(c, col, slot, -1);
    if (!key_value(c, v, &r))
        return;
    r.src = r.src == PRS_KEY_PARAM ? PRS_KEY_PARAM_ARRAY : PRS_KEY_LITERAL_ARRAY;
    if (r.negated)
        return;
    if (add_ref(c, r))
        c->next_cond++;
}

static bool op_is_eq(const PgQuery__AExpr *a)
{
    const char *op = a->n_name ? node_string(a->name[a->n_name - 1]) : NULL;
    return op && strcmp(op, "=") == 0;
}

/* ---- relation occurrences, and the key conditions that restrict them ----
 *
 * A statement may run on one shard only if every relation occurrence of a sharded table in it
 * reads (or writes) rows of that shard alone. So each key condition is tied to the occurrence
 * whose column it names, and equalities between key columns carry a restriction from one
 * occurrence to another where that is sound: a WHERE's AND chain and an inner join's ON hold
 * for every row the query uses, both ways; an outer join's ON only limits which rows of the
 * nullable side take part; a subquery's `inner.k = outer.k` limits the inner rows to those
 * of the outer rows used. OR and NOT restrict nothing. Names are resolved the way
 * PostgreSQL does (innermost level first, aliases hide table names, an ON sees only its
 * join's inputs, a non-LATERAL derived table does not see its siblings); where that is not
 * certain the reference restricts nothing, which can only make a statement refused. */

#define MAX_NAMES 96
#define MAX_EDGES 96
#define NO_HIDE (-1)

/* A name a FROM list makes visible: a relation occurrence, or a derived table, function, CTE
 * reference or join alias (occ -1). */
typedef struct occ_name {
    const char *refname; /* the alias, else the relation's name; NULL: it cannot be named */
    const char *relname; /* an unaliased relation's name (for schema.table.column), else NULL */
    const char *schema;  /* an unaliased relation's schema, NULL when unqualified */
    int occ;             /* index into occ_work.occs, -1 for no relation */
    int hidden_by;       /* the name of the innermost aliased join around it, or NO_HIDE */
} occ_name;

typedef struct occ_rel {
    const char *schema; /* these point into the unpacked tree */
    const char *name;
    const char *alias;
    uint8_t flags; /* PRS_OCC_* */
} occ_rel;

/* What the analysis of one text collects before it goes into the prs_query_info. */
struct occ_work {
    occ_name names[MAX_NAMES];
    unsigned n_names;
    occ_rel occs[PRS_MAX_OCCS];
    unsigned n_occs;
    prs_slot slots[PRS_MAX_SLOTS];
    unsigned n_slots;
    uint8_t edges[MAX_EDGES][2]; /* the restrictions of slot [0] hold for slot [1] */
    unsigned n_edges;
    unsigned n_rangevars; /* RangeVars placed in the statement being classified */
    bool ran;             /* that statement was analysed (a query, not DDL or a utility) */
    bool incomplete;      /* something did not fit or could not be placed */
};

/* One level of names a column reference may find: a query block's FROM (or the part of it an
 * ON clause or a LATERAL item sees), then the levels outside it. */
typedef struct scope {
    const struct scope *up;
    unsigned first, end;   /* visible: names[first, end) */
    unsigned bfirst, bend; /* the block's names: a match there that is not visible stops the search */
} scope;

/* The CTE names a FROM item may refer to. */
typedef struct cte_scope {
    const struct cte_scope *up;
    const PgQuery__WithClause *with;
    size_t visible; /* the first `visible` CTEs of with */
} cte_scope;

/* Which occurrences a clause's conditions restrict. */
enum { CL_WHERE, CL_INNER, CL_LEFT, CL_RIGHT, CL_NONE };

typedef struct clause {
    const scope *sc;
    int kind;     /* CL_* */
    unsigned mid; /* an ON: names[sc->first, mid) are its left input, [mid, sc->end) its right */
} clause;

/* A key column reference resolved. */
typedef struct ref_at {
    int slot;      /* -1: not a key column of a relation found for certain */
    int col;       /* index into the key-column list */
    bool outer;    /* found outside the clause's own level */
    bool amb;      /* an unqualified column of several candidates (slot has cands) */
    unsigned name; /* the name it was found by (own level) */
} ref_at;

static void occ_stmt(classifier *c, const Node *n, const scope *up, const cte_scope *ctes, unsigned depth,
                     bool top);
static void occ_select(classifier *c, const PgQuery__SelectStmt *s, const scope *up, const cte_scope *ctes,
                       unsigned depth);

static int add_name(classifier *c, const char *refname, const char *relname, const char *schema, int occ,
                    int hidden_by)
{
    occ_work *ow = c->ow;
    if (ow->n_names == MAX_NAMES) {
        ow->incomplete = true;
        return NO_HIDE;
    }
    ow->names[ow->n_names] = (occ_name){refname, relname, schema, occ, hidden_by};
    return (int)ow->n_names++;
}

static bool is_cte_ref(const PgQuery__RangeVar *rv, const cte_scope *cs)
{
    if (str_set(rv->schemaname) || str_set(rv->catalogname))
        return false;
    for (; cs; cs = cs->up)
        for (size_t i = 0; cs->with && i < cs->visible; i++) {
            const Node *n = cs->with->ctes[i];
            if (n->node_case == PG_QUERY__NODE__NODE_COMMON_TABLE_EXPR && n->common_table_expr->ctename &&
                strcmp(n->common_table_expr->ctename, rv->relname) == 0)
                return true;
        }
    return false;
}

/* A RangeVar of a FROM list or a statement's target: an occurrence, unless it names a CTE. */
static void add_rangevar(classifier *c, const PgQuery__RangeVar *rv, int hidden_by, const cte_scope *ctes,
                         uint8_t flags)
{
    occ_work *ow = c->ow;
    ow->n_rangevars++;
    const char *alias = rv->alias && str_set(rv->alias->aliasname) ? rv->alias->aliasname : NULL;
    if (!str_set(rv->relname) || is_cte_ref(rv, ctes)) {
        add_name(c, alias ? alias : rv->relname, NULL, NULL, -1, hidden_by);
        return;
    }
    const char *schema = str_set(rv->schemaname) ? rv->schemaname : NULL;
    int occ = -1;
    if (ow->n_occs == PRS_MAX_OCCS)
        ow->incomplete = true;
    else
        ow->occs[occ = (int)ow->n_occs++] = (occ_rel){schema, rv->relname, alias, flags};
    add_name(c, alias ? alias : rv->relname, alias ? NULL : rv->relname, alias ? NULL : schema, occ,
             hidden_by);
}

static int find_slot(classifier *c, int occ, uint32_t cands, int col)
{
    occ_work *ow = c->ow;
    for (unsigned i = 0; i < ow->n_slots; i++) {
        const prs_slot *s = &ow->slots[i];
        if (s->column == col && s->cands == cands && (cands || s->occ == occ))
            return (int)i;
    }
    if (ow->n_slots == PRS_MAX_SLOTS) {
        ow->incomplete = true;
        return -1;
    }
    prs_slot *s = &ow->slots[ow->n_slots];
    *s = (prs_slot){0};
    s->occ = (uint8_t)(cands ? PRS_NO_OCC : (unsigned)occ);
    s->cands = cands;
    s->column = (uint8_t)col;
    return (int)ow->n_slots++;
}

static bool name_visible(const occ_work *ow, unsigned i, const scope *s)
{
    int h = ow->names[i].hidden_by;
    return i >= s->first && i < s->end && (h == NO_HIDE || (unsigned)h < s->first || (unsigned)h >= s->end);
}

/* 1: the name is what a qualified reference (q.col or s.q.col) means; 0: it is not; -1: it
 * may be (s.t.col against an unqualified t: it depends on search_path). */
static int name_matches(const occ_name *n, const PgQuery__ColumnRef *cr)
{
    if (cr->n_fields == 2) {
        const char *q = node_string(cr->fields[0]);
        return q && n->refname && strcmp(q, n->refname) == 0;
    }
    const char *sch = node_string(cr->fields[0]), *rel = node_string(cr->fields[1]);
    if (!sch || !rel || !n->relname || strcmp(rel, n->relname) != 0)
        return 0;
    return !n->schema ? -1 : strcmp(sch, n->schema) == 0;
}

/* An unqualified column: the relation of a one-item FROM (were the column not its, it would
 * belong to an outer level; the slot then stands for a value of this level's rows, which is
 * no restriction of any other level), or any of several, decided at route time. */
static ref_at resolve_unqualified(classifier *c, const scope *s, ref_at r)
{
    occ_work *ow = c->ow;
    unsigned count = 0, only = 0;
    uint32_t cands = 0;
    for (unsigned i = s->first; i < s->end; i++) {
        if (!name_visible(ow, i, s))
            continue;
        count++;
        only = i;
        if (ow->names[i].occ >= 0)
            cands |= 1u << ow->names[i].occ;
    }
    if (count == 1 && ow->names[only].occ >= 0) {
        r.slot = find_slot(c, ow->names[only].occ, 0, r.col);
        r.name = only;
    } else if (cands) {
        r.slot = find_slot(c, -1, cands, r.col);
        r.amb = true;
    }
    return r;
}

static ref_at resolve(classifier *c, const Node *n, const clause *cl)
{
    ref_at r = {-1, -1, false, false, 0};
    if (!n || n->node_case != PG_QUERY__NODE__NODE_COLUMN_REF || n->column_ref->n_fields == 0)
        return r;
    const PgQuery__ColumnRef *cr = n->column_ref;
    r.col = key_name_index(c, node_string(cr->fields[cr->n_fields - 1]));
    if (r.col < 0 || cr->n_fields > 3)
        return r;
    if (cr->n_fields == 1)
        return resolve_unqualified(c, cl->sc, r);
    occ_work *ow = c->ow;
    for (const scope *s = cl->sc; s; s = s->up, r.outer = true) {
        unsigned hits = 0, found = 0;
        for (unsigned i = s->bfirst; i < s->bend; i++) {
            int m = name_matches(&ow->names[i], cr);
            if (m < 0 || (m > 0 && !name_visible(ow, i, s)))
                return r;
            hits += (unsigned)m;
            found = m ? i : found;
        }
        if (hits > 1 || (hits == 1 && ow->names[found].occ < 0))
            return r;
        if (hits == 1) {
            r.slot = find_slot(c, ow->names[found].occ, 0, r.col);
            r.name = found;
            return r;
        }
    }
    return r;
}

/* Whether the clause's conditions limit the rows of the occurrence a reference names. An
 * outer join's ON limits only its nullable side; a full join's nothing; no clause limits an
 * outer level's rows. A column whose relation is decided at route time only where every
 * candidate would be limited. */
static bool restricts(const clause *cl, const ref_at *r)
{
    if (r->slot < 0 || r->outer)
        return false;
    switch (cl->kind) {
    case CL_WHERE:
    case CL_INNER:
        return true;
    case CL_LEFT:
        return !r->amb && r->name >= cl->mid;
    case CL_RIGHT:
        return !r->amb && r->name < cl->mid;
    default:
        return false;
    }
}

static void add_edge(classifier *c, int from, int to)
{
    occ_work *ow = c->ow;
    for (unsigned i = 0; i < ow->n_edges; i++)
        if (ow->edges[i][0] == from && ow->edges[i][1] == to)
            return;
    if (ow->n_edges == MAX_EDGES) {
        ow->incomplete = true;
        return;
    }
    ow->edges[ow->n_edges][0] = (uint8_t)from;
    ow->edges[ow->n_edges][1] = (uint8_t)to;
    ow->n_edges++;
}

static void link_refs(classifier *c, const clause *cl, const ref_at *a, const ref_at *b)
{
    if (a->amb || b->amb || a->slot == b->slot)
        return;
    if (restricts(cl, b))
        add_edge(c, a->slot, b->slot);
    if (restricts(cl, a))
        add_edge(c, b->slot, a->slot);
}

static void clause_eq(classifier *c, const clause *cl, const Node *l, const Node *r)
{
    if (l && r && l->node_case == PG_QUERY__NODE__NODE_ROW_EXPR &&
        r->node_case == PG_QUERY__NODE__NODE_ROW_EXPR && l->row_expr->n_args == r->row_expr->n_args) {
        /* (a, b) = (c, d) is a = c AND b = d. */
        for (size_t i = 0; i < l->row_expr->n_args; i++)
            clause_eq(c, cl, l->row_expr->args[i], r->row_expr->args[i]);
        return;
    }
    ref_at a = resolve(c, l, cl), b = resolve(c, r, cl);
    if (a.slot >= 0 && b.slot >= 0)
        link_refs(c, cl, &a, &b);
    else if (restricts(cl, &a))
        key_eq(c, a.col, a.slot, r);
    else if (restricts(cl, &b))
        key_eq(c, b.col, b.slot, l);
}

/* Only the AND chain at the top of a WHERE or ON holds for every row; OR and NOT do not. */
static void clause_and(classifier *c, const clause *cl, const Node *e)
{
    if (!e || c->ow->incomplete)
        return;
    if (e->node_case == PG_QUERY__NODE__NODE_BOOL_EXPR &&
        e->bool_expr->boolop == PG_QUERY__BOOL_EXPR_TYPE__AND_EXPR) {
        for (size_t i = 0; i < e->bool_expr->n_args; i++)
            clause_and(c, cl, e->bool_expr->args[i]);
        return;
    }
    if (e->node_case != PG_QUERY__NODE__NODE_A_EXPR || !op_is_eq(e->a_expr))
        return;
    const PgQuery__AExpr *a = e->a_expr;
    ref_at r;
    switch (a->kind) {
    case PG_QUERY__A__EXPR__KIND__AEXPR_OP:
        clause_eq(c, cl, a->lexpr, a->rexpr);
        break;
    case PG_QUERY__A__EXPR__KIND__AEXPR_IN:
        r = resolve(c, a->lexpr, cl);
        if (restricts(cl, &r) && a->rexpr && a->rexpr->node_case == PG_QUERY__NODE__NODE_LIST)
            key_list(c, r.col, r.slot, a->rexpr->list->items, a->rexpr->list->n_items);
        break;
    case PG_QUERY__A__EXPR__KIND__AEXPR_OP_ANY:
        r = resolve(c, a->lexpr, cl);
        if (restricts(cl, &r))
            key_any(c, r.col, r.slot, a->rexpr);
        break;
    default:
        break;
    }
}

/* Subqueries inside expressions (EXISTS, IN, scalar, ARRAY(...)): blocks one level in. Any
 * node type is followed, as the generic walk does. */
static void occ_expr(classifier *c, const ProtobufCMessage *m, const scope *sc, const cte_scope *ctes,
                     unsigned depth)
{
    if (!m)
        return;
    if (depth > MAX_DEPTH) {
        c->ow->incomplete = true;
        return;
    }
    const ProtobufCMessageDescriptor *d = m->descriptor;
    const char *base = (const char *)m;
    if (d == &pg_query__node__descriptor) {
        const ProtobufCFieldDescriptor *f =
            protobuf_c_message_descriptor_get_field(d, (unsigned)((const Node *)m)->node_case);
        if (f)
            occ_expr(c, *(const ProtobufCMessage *const *)(base + f->offset), sc, ctes, depth + 1);
        return;
    }
    if (d == &pg_query__select_stmt__descriptor) {
        occ_select(c, (const PgQuery__SelectStmt *)m, sc, ctes, depth + 1);
        return;
    }
    if (d == &pg_query__locking_clause__descriptor)
        return;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        if (f->type != PROTOBUF_C_TYPE_MESSAGE)
            continue;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t cnt = *(const size_t *)(base + f->quantifier_offset);
            const ProtobufCMessage *const *arr = *(const ProtobufCMessage *const *const *)(base + f->offset);
            for (size_t k = 0; k < cnt; k++)
                occ_expr(c, arr[k], sc, ctes, depth + 1);
        } else if (!(f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) ||
                   *(const uint32_t *)(base + f->quantifier_offset) == f->id) {
            occ_expr(c, *(const ProtobufCMessage *const *)(base + f->offset), sc, ctes, depth + 1);
        }
    }
}

static void occ_exprs(classifier *c, Node *const *items, size_t n, const scope *sc, const cte_scope *ctes,
                      unsigned depth)
{
    for (size_t i = 0; i < n; i++)
        occ_expr(c, (const ProtobufCMessage *)items[i], sc, ctes, depth);
}

#define OCC_EXPR(c, node, sc, ctes, depth) occ_expr(c, (const ProtobufCMessage *)(node), sc, ctes, depth)

/* A CTE body sees the levels outside its query (not that query's FROM) and the CTEs before it
 * (all of them under WITH RECURSIVE). */
static void occ_with(classifier *c, const PgQuery__WithClause *w, const scope *up, const cte_scope *outer,
                     cte_scope *mine, unsigned depth)
{
    *mine = (cte_scope){outer, w, w ? w->n_ctes : 0};
    for (size_t i = 0; w && i < w->n_ctes; i++) {
        const Node *n = w->ctes[i];
        if (n->node_case != PG_QUERY__NODE__NODE_COMMON_TABLE_EXPR)
            continue;
        cte_scope body = {outer, w, w->recursive ? w->n_ctes : i};
        occ_stmt(c, n->common_table_expr->ctequery, up, &body, depth + 1, false);
    }
}

/* First pass over a FROM item: its names, in the order PostgreSQL adds them. */
static void from_names(classifier *c, const Node *n, int hidden_by, const cte_scope *ctes)
{
    switch (n->node_case) {
    case PG_QUERY__NODE__NODE_RANGE_VAR:
        add_rangevar(c, n->range_var, hidden_by, ctes, 0);
        break;
    case PG_QUERY__NODE__NODE_JOIN_EXPR: {
        const PgQuery__JoinExpr *j = n->join_expr;
        int h = hidden_by;
        if (j->alias)
            h = add_name(c, j->alias->aliasname, NULL, NULL, -1, hidden_by);
        if (j->larg)
            from_names(c, j->larg, h, ctes);
        if (j->rarg)
            from_names(c, j->rarg, h, ctes);
        break;
    }
    case PG_QUERY__NODE__NODE_RANGE_SUBSELECT: {
        const PgQuery__Alias *a = n->range_subselect->alias;
        add_name(c, a ? a->aliasname : NULL, NULL, NULL, -1, hidden_by);
        break;
    }
    case PG_QUERY__NODE__NODE_RANGE_FUNCTION: {
        const PgQuery__Alias *a = n->range_function->alias;
        add_name(c, a ? a->aliasname : NULL, NULL, NULL, -1, hidden_by);
        break;
    }
    case PG_QUERY__NODE__NODE_RANGE_TABLE_SAMPLE: {
        const Node *rel = n->range_table_sample->relation;
        if (rel && rel->node_case == PG_QUERY__NODE__NODE_RANGE_VAR)
            add_rangevar(c, rel->range_var, hidden_by, ctes, 0);
        else
            add_name(c, NULL, NULL, NULL, -1, hidden_by);
        break;
    }
    default:
        add_name(c, NULL, NULL, NULL, -1, hidden_by);
        break;
    }
}

static unsigned count_names(const Node *n)
{
    if (!n)
        return 0;
    if (n->node_case != PG_QUERY__NODE__NODE_JOIN_EXPR)
        return 1;
    const PgQuery__JoinExpr *j = n->join_expr;
    return (j->alias ? 1 : 0) + count_names(j->larg) + count_names(j->rarg);
}

static bool using_has(const PgQuery__JoinExpr *j, const char *col)
{
    for (size_t i = 0; i < j->n_using_clause; i++) {
        const char *u = node_string(j->using_clause[i]);
        if (u && strcmp(u, col) == 0)
            return true;
    }
    return false;
}

/* The slot a join input's column `name` of USING comes from: a relation's own, or through a
 * join that merges it (an inner or left join's merged column is its left input's). */
static int using_slot(classifier *c, const Node *n, unsigned at, const char *name, int col)
{
    if (!n || at >= c->ow->n_names)
        return -1;
    if (n->node_case == PG_QUERY__NODE__NODE_RANGE_VAR)
        return c->ow->names[at].occ >= 0 ? find_slot(c, c->ow->names[at].occ, 0, col) : -1;
    if (n->node_case != PG_QUERY__NODE__NODE_JOIN_EXPR)
        return -1;
    const PgQuery__JoinExpr *j = n->join_expr;
    if (j->alias || j->is_natural || !using_has(j, name))
        return -1;
    if (j->jointype == PG_QUERY__JOIN_TYPE__JOIN_INNER || j->jointype == PG_QUERY__JOIN_TYPE__JOIN_LEFT)
        return using_slot(c, j->larg, at, name, col);
    if (j->jointype == PG_QUERY__JOIN_TYPE__JOIN_RIGHT)
        return using_slot(c, j->rarg, at + count_names(j->larg), name, col);
    return -1;
}

static void join_using(classifier *c, const PgQuery__JoinExpr *j, const clause *on, unsigned left)
{
    for (size_t i = 0; i < j->n_using_clause && !j->is_natural; i++) {
        const char *name = node_string(j->using_clause[i]);
        int col = key_name_index(c, name);
        if (col < 0)
            continue;
        ref_at a = {using_slot(c, j->larg, left, name, col), col, false, false, left};
        ref_at b = {using_slot(c, j->rarg, on->mid, name, col), col, false, false, on->mid};
        if (a.slot >= 0 && b.slot >= 0)
            link_refs(c, on, &a, &b);
    }
}

static int join_clause_kind(PgQuery__JoinType t)
{
    switch (t) {
    case PG_QUERY__JOIN_TYPE__JOIN_INNER:
        return CL_INNER;
    case PG_QUERY__JOIN_TYPE__JOIN_LEFT:
        return CL_LEFT;
    case PG_QUERY__JOIN_TYPE__JOIN_RIGHT:
        return CL_RIGHT;
    default:
        return CL_NONE;
    }
}

/* Second pass over a FROM item, its names known: ON clauses, USING, derived tables and
 * function arguments. *pos is the index of the item's first name. */
static void from_links(classifier *c, const Node *n, const scope *b, unsigned *pos, const cte_scope *ctes,
                       unsigned depth)
{
    unsigned me = (*pos)++;
    scope lateral = {b->up, b->first, me, b->bfirst, b->bend};
    switch (n->node_case) {
    case PG_QUERY__NODE__NODE_JOIN_EXPR: {
        const PgQuery__JoinExpr *j = n->join_expr;
        if (!j->alias)
            (*pos)--;
        unsigned left = *pos;
        if (j->larg)
            from_links(c, j->larg, b, pos, ctes, depth + 1);
        unsigned mid = *pos;
        if (j->rarg)
            from_links(c, j->rarg, b, pos, ctes, depth + 1);
        scope js = {b->up, left, *pos, b->bfirst, b->bend};
        clause on = {&js, join_clause_kind(j->jointype), mid};
        clause_and(c, &on, j->quals);
        join_using(c, j, &on, left);
        OCC_EXPR(c, j->quals, &js, ctes, depth + 1);
        break;
    }
    case PG_QUERY__NODE__NODE_RANGE_SUBSELECT:
        occ_stmt(c, n->range_subselect->subquery, n->range_subselect->lateral ? &lateral : b->up, ctes,
                 depth + 1, false);
        break;
    case PG_QUERY__NODE__NODE_RANGE_FUNCTION: /* function arguments are LATERAL by nature */
        occ_exprs(c, n->range_function->functions, n->range_function->n_functions, &lateral, ctes, depth + 1);
        break;
    case PG_QUERY__NODE__NODE_RANGE_TABLE_SAMPLE:
        occ_exprs(c, n->range_table_sample->args, n->range_table_sample->n_args, &lateral, ctes, depth + 1);
        OCC_EXPR(c, n->range_table_sample->repeatable, &lateral, ctes, depth + 1);
        break;
    case PG_QUERY__NODE__NODE_RANGE_VAR:
        break;
    default: /* XMLTABLE and the like: a RangeVar inside is not placed, so the counts differ */
        OCC_EXPR(c, n, &lateral, ctes, depth + 1);
        break;
    }
}

/* A query block's names: targets (already added from b->first) and the FROM list. */
static void occ_from(classifier *c, Node *const *items, size_t n, scope *b, const cte_scope *ctes,
                     unsigned depth)
{
    unsigned pos = c->ow->n_names;
    for (size_t i = 0; i < n; i++)
        from_names(c, items[i], NO_HIDE, ctes);
    b->end = b->bend = c->ow->n_names;
    for (size_t i = 0; i < n && !c->ow->incomplete; i++)
        from_links(c, items[i], b, &pos, ctes, depth + 1);
}

static void block_begin(classifier *c, const scope *up, scope *b)
{
    unsigned at = c->ow->n_names;
    *b = (scope){up, at, at, at, at};
}

static void occ_where(classifier *c, const Node *where, const scope *b, const cte_scope *ctes, unsigned depth)
{
    clause w = {b, CL_WHERE, 0};
    clause_and(c, &w, where);
    OCC_EXPR(c, where, b, ctes, depth + 1);
}

static void occ_select(classifier *c, const PgQuery__SelectStmt *s, const scope *up, const cte_scope *ctes,
                       unsigned depth)
{
    if (!s || depth > MAX_DEPTH) {
        c->ow->incomplete = c->ow->incomplete || s;
        return;
    }
    cte_scope cs;
    occ_with(c, s->with_clause, up, ctes, &cs, depth);
    if (s->op > PG_QUERY__SET_OPERATION__SETOP_NONE) {
        occ_select(c, s->larg, up, &cs, depth + 1);
        occ_select(c, s->rarg, up, &cs, depth + 1);
        occ_exprs(c, s->sort_clause, s->n_sort_clause, up, &cs, depth + 1);
        OCC_EXPR(c, s->limit_offset, up, &cs, depth + 1);
        OCC_EXPR(c, s->limit_count, up, &cs, depth + 1);
        return;
    }
    scope b;
    block_begin(c, up, &b);
    occ_from(c, s->from_clause, s->n_from_clause, &b, &cs, depth);
    occ_where(c, s->where_clause, &b, &cs, depth);
    occ_exprs(c, s->distinct_clause, s->n_distinct_clause, &b, &cs, depth + 1);
    occ_exprs(c, s->target_list, s->n_target_list, &b, &cs, depth + 1);
    occ_exprs(c, s->group_clause, s->n_group_clause, &b, &cs, depth + 1);
    OCC_EXPR(c, s->having_clause, &b, &cs, depth + 1);
    occ_exprs(c, s->window_clause, s->n_window_clause, &b, &cs, depth + 1);
    occ_exprs(c, s->values_lists, s->n_values_lists, &b, &cs, depth + 1);
    occ_exprs(c, s->sort_clause, s->n_sort_clause, &b, &cs, depth + 1);
    OCC_EXPR(c, s->limit_offset, &b, &cs, depth + 1);
    OCC_EXPR(c, s->limit_count, &b, &cs, depth + 1);
    if (s->into_clause && s->into_clause->rel)
        c->ow->n_rangevars++; /* SELECT INTO's new table: created, not read */
}

/* INSERT's rows come from its VALUES or SELECT, which do not see the target. Only the
 * statement's own INSERT ... VALUES has its rows' keys read (keys_insert); any other
 * INSERT's rows cannot be placed. */
static void occ_insert(classifier *c, const PgQuery__InsertStmt *ins, const scope *up, const cte_scope *ctes,
                       unsigned depth, bool top)
{
    cte_scope cs;
    occ_with(c, ins->with_clause, up, ctes, &cs, depth);
    const Node *src = ins->select_stmt;
    bool values = top && src && src->node_case == PG_QUERY__NODE__NODE_SELECT_STMT &&
                  src->select_stmt->n_values_lists > 0;
    scope b;
    block_begin(c, up, &b);
    if (ins->relation)
        add_rangevar(c, ins->relation, NO_HIDE, NULL,
                     PRS_OCC_WRITTEN | (values ? PRS_OCC_VALUES : PRS_OCC_UNPROVEN));
    b.end = b.bend = c->ow->n_names;
    occ_stmt(c, src, up, &cs, depth + 1, false);
    OCC_EXPR(c, ins->on_conflict_clause, &b, &cs, depth + 1);
    occ_exprs(c, ins->returning_list, ins->n_returning_list, &b, &cs, depth + 1);
}

static void occ_update(classifier *c, const PgQuery__UpdateStmt *u, const scope *up, const cte_scope *ctes,
                       unsigned depth)
{
    cte_scope cs;
    occ_with(c, u->with_clause, up, ctes, &cs, depth);
    scope b;
    block_begin(c, up, &b);
    if (u->relation)
        add_rangevar(c, u->relation, NO_HIDE, NULL, PRS_OCC_WRITTEN);
    occ_from(c, u->from_clause, u->n_from_clause, &b, &cs, depth);
    occ_where(c, u->where_clause, &b, &cs, depth);
    occ_exprs(c, u->target_list, u->n_target_list, &b, &cs, depth + 1);
    occ_exprs(c, u->returning_list, u->n_returning_list, &b, &cs, depth + 1);
}

static void occ_delete(classifier *c, const PgQuery__DeleteStmt *d, const scope *up, const cte_scope *ctes,
                       unsigned depth)
{
    cte_scope cs;
    occ_with(c, d->with_clause, up, ctes, &cs, depth);
    scope b;
    block_begin(c, up, &b);
    if (d->relation)
        add_rangevar(c, d->relation, NO_HIDE, NULL, PRS_OCC_WRITTEN);
    occ_from(c, d->using_clause, d->n_using_clause, &b, &cs, depth);
    occ_where(c, d->where_clause, &b, &cs, depth);
    occ_exprs(c, d->returning_list, d->n_returning_list, &b, &cs, depth + 1);
}

/* MERGE may insert rows whose keys come from its source: its target is never proven. */
static void occ_merge(classifier *c, const PgQuery__MergeStmt *m, const scope *up, const cte_scope *ctes,
                      unsigned depth)
{
    cte_scope cs;
    occ_with(c, m->with_clause, up, ctes, &cs, depth);
    scope b;
    block_begin(c, up, &b);
    if (m->relation)
        add_rangevar(c, m->relation, NO_HIDE, NULL, PRS_OCC_WRITTEN | PRS_OCC_UNPROVEN);
    Node *src[1] = {m->source_relation};
    occ_from(c, src, m->source_relation ? 1 : 0, &b, &cs, depth);
    OCC_EXPR(c, m->join_condition, &b, &cs, depth + 1);
    occ_exprs(c, m->merge_when_clauses, m->n_merge_when_clauses, &b, &cs, depth + 1);
}

static void occ_stmt(classifier *c, const Node *n, const scope *up, const cte_scope *ctes, unsigned depth,
                     bool top)
{
    if (!n)
        return;
    if (depth > MAX_DEPTH) {
        c->ow->incomplete = true;
        return;
    }
    switch (n->node_case) {
    case PG_QUERY__NODE__NODE_SELECT_STMT:
        occ_select(c, n->select_stmt, up, ctes, depth);
        break;
    case PG_QUERY__NODE__NODE_INSERT_STMT:
        occ_insert(c, n->insert_stmt, up, ctes, depth, top);
        break;
    case PG_QUERY__NODE__NODE_UPDATE_STMT:
        occ_update(c, n->update_stmt, up, ctes, depth);
        break;
    case PG_QUERY__NODE__NODE_DELETE_STMT:
        occ_delete(c, n->delete_stmt, up, ctes, depth);
        break;
    case PG_QUERY__NODE__NODE_MERGE_STMT:
        occ_merge(c, n->merge_stmt, up, ctes, depth);
        break;
    default:
        OCC_EXPR(c, n, up, ctes, depth + 1);
        break;
    }
}

/* The analysis of one query statement (also the one EXPLAIN, PREPARE or DECLARE carries). */
static void occ_analyze(classifier *c, const Node *n)
{
    c->ow->ran = true;
    occ_stmt(c, n, NULL, NULL, 0, true);
}

static void flag_key_assignments(classifier *c, Node *const *targets, size_t n, uint32_t *flags)
{
    for (size_t i = 0; i < n; i++)
        if (targets[i]->node_case == PG_QUERY__NODE__NODE_RES_TARGET &&
            key_name_index(c, targets[i]->res_target->name) >= 0)
            *flags |= PRS_F_KEY_UPDATE;
}

static void keys_insert(classifier *c, const PgQuery__InsertStmt *ins, uint32_t *flags)
{
    if (ins->on_conflict_clause)
        flag_key_assignments(c, ins->on_conflict_clause->target_list, ins->on_conflict_clause->n_target_list,
                             flags);
    const Node *sel = ins->select_stmt;
    if (!sel || sel->node_case != PG_QUERY__NODE__NODE_SELECT_STMT)
        return;
    const PgQuery__SelectStmt *s = sel->select_stmt;
    if (c->stmt == 0)
        c->out->insert_rows = (uint16_t)(s->n_values_lists > 0xFFFF ? 0xFFFF : s->n_values_lists);
    for (size_t p = 0; p < ins->n_cols; p++) {
        const Node *t = ins->cols[p];
        int col =
            t->node_case == PG_QUERY__NODE__NODE_RES_TARGET ? key_name_index(c, t->res_target->name) : -1;
        if (col < 0)
            continue;
        for (size_t r = 0; r < s->n_values_lists && r < 0x7FFF; r++) {
            const Node *row = s->values_lists[r];
            if (row->node_case != PG_QUERY__NODE__NODE_LIST || p >= row->list->n_items)
                continue;
            prs_key_ref ref = new_ref(c, col, -1, (int)r);
            if (key_value(c, row->list->items[p], &ref) && add_ref(c, ref))
                c->next_cond++;
        }
    }
}

static void keys_copy(classifier *c, const PgQuery__CopyStmt *cp)
{
    if (!cp->is_from)
        return;
    for (size_t p = 0; p < cp->n_attlist; p++) {
        int col = key_name_index(c, node_string(cp->attlist[p]));
        prs_key_ref r = new_ref(c, col, -1, -1);
        r.src = PRS_KEY_COPY_COLUMN;
        r.index = (uint32_t)p;
        if (col >= 0 && add_ref(c, r))
            c->next_cond++;
    }
}

/* ---- statements ---- */

/* Statement kinds that need nothing but their kind. Everything absent is a utility. */
static const uint8_t simple_kind[] = {
    [PG_QUERY__NODE__NODE_ALTER_TABLE_STMT] = PRS_KIND_DDL,
    [PG_QUERY__NODE__NODE_ALTER_DOMAIN_STMT] = PRS_KIND_DDL,
    [PG_QUERY__NODE__NODE_GRANT_STMT] = PRS_KIND_DDL,
    [PG_QUERY__NODE__NODE_GRANT_ROLE_STMT] = PRS_KIND_DDL,
    [PG_QUERY__NODE__NODE_ALTER_DEFAULT_PRIVILEGES_STMT] = PRS_KIND_DDL,
    [PG_QUERY__NODE__NODE_CREATE_STMT] = PRS_KIND_DDL,
    [PG_QUERY__NODE__NODE_DEFINE_STMT] = PRS_KIND_DDL,
    [PG_QUERY__NODE__NODE_DROP_STMT] = PRS_KIND_DDL,
    [PG_QUERY__NODE__NODE_TRUNCATE_STMT] = PRS_KIND_TRUNCATE,
    [PG_QUERY__NODE__NODE_COMMENT_STMT] = PRS_KIND_DDL,
    [PG_QUERY__NODE__NODE_INDEX_STMT] = PRS_KIND_DDL,
    [PG_QUERY__NODE__NODE_CREATE_FUNCTION_STMT] = PRS_KIND_DDL,
    [PG_QUERY__NODE__NODE_ALTER_FUNCTION_STMT] = PRS_KIND_DDL,
    [PG_QUERY__NODE__NODE_DO_STMT] = PRS_KIND_DO,
    [PG_QUERY__NODE__NODE_RENAME_STMT] = PRS_KIND_DDL,
    [PG_QUERY__NODE__NODE_RULE_STMT] = PRS_KIND_DDL,
    [PG_QUERY__NODE__NODE_VIEW_STMT] = PRS_KIND_DDL,
    [PG_QUERY__NODE__NODE_CREATE_DOMAIN_STMT] = PRS_KIND_DDL,
    [PG_QUERY__NODE__NODE_CREATEDB_STMT] = PRS_KIND_DDL,
    [PG_QUERY__NODE__NODE_DROPDB_STMT] = PRS_KIND_DDL,
    [PG_QUERY__NODE__NODE_CREATE_TABLE_AS_STMT] = PRS_KIND_DDL,
    [PG_QUERY__NODE__NODE_CREATE_SEQ_STMT] = PRS_KIND_DDL,
    [PG_QUERY__NODE__NODE_ALTER_SEQ_STMT] = PRS_KIND_DDL,
    [PG_QUERY__NODE__NODE_CREATE_TRIG_STMT] = PRS_KIND_DDL,
    [PG_QUERY__NODE__NODE_CREATE_PLANG_STMT] = PRS_KIND_DDL,
    [PG_QUERY__NODE__NODE_CREATE_ROLE_STMT] = PRS_KIND_DDL,
    [PG_QUERY__NODE__NODE_ALTER_ROLE_STMT] = PRS_KIND_DDL,
    [PG_QUERY__NODE__NODE_DROP_ROLE_STMT] = PRS_KIND_DDL,
    [PG_QUERY__NODE__NODE_LOCK_STMT] = PRS_KIND_LOCK,
    [PG_QUERY__NODE__NODE_CHECK_POINT_STMT] = PRS_KIND_CHECKPOINT,
    [PG_QUERY__NODE__NODE_CREATE_SCHEMA_STMT] = PRS_KIND_DDL,
    [PG_QUERY__NODE__NODE_ALTER_DATABASE_STMT] = PRS_KIND_DDL,
    [PG_QUERY__NODE__NODE_ALTER_DATABASE_REFRESH_COLL_STMT] = PRS_KIND_DDL,
    [PG_QUERY__NODE__NODE_ALTER_DATABASE_SET_STMT] = PRS_KIND_DDL,
    [PG_QUERY__NODE__NODE_ALTER_ROLE_SET_STMT] = PRS_KIND_DDL,
    [PG_QUERY__NODE__NODE_CREATE_CONVERSION_STMT] = PRS_KIND_DDL,
    [PG_QUERY__NODE__NODE_CREATE_CAST_STMT] = PRS_KIND_DDL,
    [PG_QUERY__NODE__NODE_CREATE_OP_CLASS_STMT] = PRS_KIND_DDL,
    [PG_QUERY__NODE__NODE_CREATE_OP_FAMILY_STMT] = PRS_KIND_DDL,
    [PG_QUERY__NODE__NODE_ALTER_OP_FAMILY_STMT] = PRS_KIND_DDL,
    [PG_QUERY__NODE__NODE_EXECUTE_STMT] = PRS_KIND_EXECUTE,
    [PG_QUERY__NODE__NODE_CREATE_TABLE_SPACE_STMT] = PRS_KIND_DDL,
    [PG_QUERY__NODE__NODE_DROP_TABLE_SPACE_STMT] = PRS_KIND_DDL,
    [PG_QUERY__NODE__NODE_ALTER_OBJECT_DEPENDS_STMT] = PRS_KIND_DDL,
    [PG_QUERY__NODE__NODE_ALTER_OBJECT_SCHEMA_STMT] = PRS_KIND_DDL,
    [PG_QUERY__NODE__NODE_ALTER_OWNER_STMT] = PRS_KIND_DDL,
    [PG_QUERY__NODE__NODE_ALTER_OPERATOR_STMT] = PRS_KIND_DDL,
    [PG_QUERY__NODE__NODE_ALTER_TYPE_STMT] = PRS_KIND_DDL,
    [PG_QUERY__NODE__NODE_DROP_OWNED_STMT] = PRS_KIND_DDL,
    [PG_QUERY__NODE__NODE_REASSIGN_OWNED_STMT] = PRS_KIND_DDL,
    [PG_QUERY__NODE__NODE_COMPOSITE_TYPE_STMT] = PRS_KIND_DDL,
    [PG_QUERY__NODE__NODE_CREATE_ENUM_STMT] = PRS_KIND_DDL,
    [PG_QUERY__NODE__NODE_CREATE_RANGE_STMT] = PRS_KIND_DDL,
    [PG_QUERY__NODE__NODE_ALTER_ENUM_STMT] = PRS_KIND_DDL,
    [PG_QUERY__NODE__NODE_ALTER_TSDICTIONARY_STMT] = PRS_KIND_DDL,
    [PG_QUERY__NODE__NODE_ALTER_TSCONFIGURATION_STMT] = PRS_KIND_DDL,
    [PG_QUERY__NODE__NODE_CREATE_FDW_STMT] = PRS_KIND_DDL,
    [PG_QUERY__NODE__NODE_ALTER_FDW_STMT] = PRS_KIND_DDL,
    [PG_QUERY__NODE__NODE_CREATE_FOREIGN_SERVER_STMT] = PRS_KIND_DDL,
    [PG_QUERY__NODE__NODE_ALTER_FOREIGN_SERVER_STMT] = PRS_KIND_DDL,
    [PG_QUERY__NODE__NODE_CREATE_USER_MAPPING_STMT] = PRS_KIND_DDL,
    [PG_QUERY__NODE__NODE_ALTER_USER_MAPPING_STMT] = PRS_KIND_DDL,
    [PG_QUERY__NODE__NODE_DROP_USER_MAPPING_STMT] = PRS_KIND_DDL,
    [PG_QUERY__NODE__NODE_ALTER_TABLE_SPACE_OPTIONS_STMT] = PRS_KIND_DDL,
    [PG_QUERY__NODE__NODE_ALTER_TABLE_MOVE_ALL_STMT] = PRS_KIND_DDL,
    [PG_QUERY__NODE__NODE_SEC_LABEL_STMT] = PRS_KIND_DDL,
    [PG_QUERY__NODE__NODE_CREATE_FOREIGN_TABLE_STMT] = PRS_KIND_DDL,
    [PG_QUERY__NODE__NODE_IMPORT_FOREIGN_SCHEMA_STMT] = PRS_KIND_DDL,
    [PG_QUERY__NODE__NODE_CREATE_EXTENSION_STMT] = PRS_KIND_DDL,
    [PG_QUERY__NODE__NODE_ALTER_EXTENSION_STMT] = PRS_KIND_DDL,
    [PG_QUERY__NODE__NODE_ALTER_EXTENSION_CONTENTS_STMT] = PRS_KIND_DDL,
    [PG_QUERY__NODE__NODE_CREATE_EVENT_TRIG_STMT] = PRS_KIND_DDL,
    [PG_QUERY__NODE__NODE_ALTER_EVENT_TRIG_STMT] = PRS_KIND_DDL,
    [PG_QUERY__NODE__NODE_REFRESH_MAT_VIEW_STMT] = PRS_KIND_DDL,
    [PG_QUERY__NODE__NODE_REPLICA_IDENTITY_STMT] = PRS_KIND_DDL,
    [PG_QUERY__NODE__NODE_CREATE_POLICY_STMT] = PRS_KIND_DDL,
    [PG_QUERY__NODE__NODE_ALTER_POLICY_STMT] = PRS_KIND_DDL,
    [PG_QUERY__NODE__NODE_CREATE_TRANSFORM_STMT] = PRS_KIND_DDL,
    [PG_QUERY__NODE__NODE_CREATE_AM_STMT] = PRS_KIND_DDL,
    [PG_QUERY__NODE__NODE_CREATE_PUBLICATION_STMT] = PRS_KIND_DDL,
    [PG_QUERY__NODE__NODE_ALTER_PUBLICATION_STMT] = PRS_KIND_DDL,
    [PG_QUERY__NODE__NODE_CREATE_SUBSCRIPTION_STMT] = PRS_KIND_DDL,
    [PG_QUERY__NODE__NODE_ALTER_SUBSCRIPTION_STMT] = PRS_KIND_DDL,
    [PG_QUERY__NODE__NODE_DROP_SUBSCRIPTION_STMT] = PRS_KIND_DDL,
    [PG_QUERY__NODE__NODE_CREATE_STATS_STMT] = PRS_KIND_DDL,
    [PG_QUERY__NODE__NODE_ALTER_COLLATION_STMT] = PRS_KIND_DDL,
    [PG_QUERY__NODE__NODE_ALTER_STATS_STMT] = PRS_KIND_DDL,
    [PG_QUERY__NODE__NODE_CALL_STMT] = PRS_KIND_CALL,
    [PG_QUERY__NODE__NODE_INSERT_STMT] = PRS_KIND_INSERT,
    [PG_QUERY__NODE__NODE_UPDATE_STMT] = PRS_KIND_UPDATE,
    [PG_QUERY__NODE__NODE_DELETE_STMT] = PRS_KIND_DELETE,
    [PG_QUERY__NODE__NODE_MERGE_STMT] = PRS_KIND_MERGE,
    [PG_QUERY__NODE__NODE_DISCARD_STMT] = PRS_KIND_DISCARD,
    [PG_QUERY__NODE__NODE_VARIABLE_SHOW_STMT] = PRS_KIND_SHOW,
    [PG_QUERY__NODE__NODE_LISTEN_STMT] = PRS_KIND_LISTEN,
    [PG_QUERY__NODE__NODE_NOTIFY_STMT] = PRS_KIND_NOTIFY,
    [PG_QUERY__NODE__NODE_UNLISTEN_STMT] = PRS_KIND_UNLISTEN,
    [PG_QUERY__NODE__NODE_DEALLOCATE_STMT] = PRS_KIND_DEALLOCATE,
    [PG_QUERY__NODE__NODE_FETCH_STMT] = PRS_KIND_FETCH,
    [PG_QUERY__NODE__NODE_CLOSE_PORTAL_STMT] = PRS_KIND_CLOSE,
};

/* Whether a statement of a kind may run on a replica when nothing inside it says otherwise.
 * Kinds whose answer depends on the statement (select, begin, explain, copy, ...) are
 * decided where they are handled. Transaction control that follows a transaction (commit,
 * savepoint) goes wherever the transaction is; these say only that it writes nothing. */
static const bool kind_read_only[PRS_KIND__COUNT] = {
    [PRS_KIND_EMPTY] = true,       [PRS_KIND_SELECT] = true,    [PRS_KIND_COMMIT] = true,
    [PRS_KIND_ROLLBACK] = true,    [PRS_KIND_SAVEPOINT] = true, [PRS_KIND_RELEASE] = true,
    [PRS_KIND_ROLLBACK_TO] = true, [PRS_KIND_SET] = true,       [PRS_KIND_SHOW] = true,
    [PRS_KIND_RESET] = true,       [PRS_KIND_DISCARD] = true,   [PRS_KIND_UNLISTEN] = true,
    [PRS_KIND_DEALLOCATE] = true,  [PRS_KIND_FETCH] = true,     [PRS_KIND_CLOSE] = true,
};

static void set_object_name(classifier *c, const char *name)
{
    if (c->stmt == 0 && str_set(name) && c->out->object_name == PRS_NO_STR)
        c->out->object_name = pool_add(c->out, name);
}

static void set_var_name(classifier *c, const char *name, stmt_result *r)
{
    if (has_prefix(name, "pgshard."))
        r->flags |= PRS_F_PGSHARD_VAR;
    if (c->stmt == 0 && str_set(name))
        c->out->set_name = pool_add(c->out, name);
}

static void txn_options(classifier *c, Node *const *opts, size_t n, stmt_result *r)
{
    static const char *const levels[] = {"read uncommitted", "read committed", "repeatable read",
                                         "serializable"};
    for (size_t i = 0; i < n; i++) {
        if (opts[i]->node_case != PG_QUERY__NODE__NODE_DEF_ELEM)
            continue;
        const PgQuery__DefElem *d = opts[i]->def_elem;
        const Node *arg = d->arg;
        if (!arg || arg->node_case != PG_QUERY__NODE__NODE_A_CONST)
            continue;
        const PgQuery__AConst *k = arg->a_const;
        if (strcmp(d->defname, "transaction_read_only") == 0) {
            bool on = k->val_case == PG_QUERY__A__CONST__VAL_IVAL && k->ival && k->ival->ival != 0;
            r->flags |= on ? PRS_F_READ_ONLY_TXN : PRS_F_READ_WRITE_TXN;
        } else if (strcmp(d->defname, "transaction_isolation") == 0 &&
                   k->val_case == PG_QUERY__A__CONST__VAL_SVAL && k->sval) {
            for (size_t l = 0; l < 4; l++)
                if (strcmp(k->sval->sval, levels[l]) == 0)
                    c->out->isolation = (uint8_t)(PRS_ISO_READ_UNCOMMITTED + l);
        }
    }
}

static void classify_transaction(classifier *c, const PgQuery__TransactionStmt *t, stmt_result *r)
{
    switch (t->kind) {
    case PG_QUERY__TRANSACTION_STMT_KIND__TRANS_STMT_BEGIN:
    case PG_QUERY__TRANSACTION_STMT_KIND__TRANS_STMT_START:
        r->kind = PRS_KIND_BEGIN;
        break;
    case PG_QUERY__TRANSACTION_STMT_KIND__TRANS_STMT_COMMIT:
        r->kind = PRS_KIND_COMMIT;
        break;
    case PG_QUERY__TRANSACTION_STMT_KIND__TRANS_STMT_ROLLBACK:
        r->kind = PRS_KIND_ROLLBACK;
        break;
    case PG_QUERY__TRANSACTION_STMT_KIND__TRANS_STMT_SAVEPOINT:
        r->kind = PRS_KIND_SAVEPOINT;
        break;
    case PG_QUERY__TRANSACTION_STMT_KIND__TRANS_STMT_RELEASE:
        r->kind = PRS_KIND_RELEASE;
        break;
    case PG_QUERY__TRANSACTION_STMT_KIND__TRANS_STMT_ROLLBACK_TO:
        r->kind = PRS_KIND_ROLLBACK_TO;
        break;
    case PG_QUERY__TRANSACTION_STMT_KIND__TRANS_STMT_PREPARE:
        r->kind = PRS_KIND_PREPARE_TXN;
        break;
    case PG_QUERY__TRANSACTION_STMT_KIND__TRANS_STMT_COMMIT_PREPARED:
        r->kind = PRS_KIND_COMMIT_PREPARED;
        break;
    case PG_QUERY__TRANSACTION_STMT_KIND__TRANS_STMT_ROLLBACK_PREPARED:
        r->kind = PRS_KIND_ROLLBACK_PREPARED;
        break;
    default:
        r->kind = PRS_KIND_UTILITY;
        break;
    }
    txn_options(c, t->options, t->n_options, r);
    if (t->chain)
        r->flags |= PRS_F_TXN_CHAIN;
    /* The gid of two-phase commit is a literal, so it is not kept: it is not part of the key. */
    set_object_name(c, t->savepoint_name);
    r->read_only =
        r->kind == PRS_KIND_BEGIN ? (r->flags & PRS_F_READ_ONLY_TXN) != 0 : kind_read_only[r->kind];
}

/* SET values written as words (on, UTC, DEFAULT) are kept as text; a value written as one
 * literal is kept as its literal index, since the text's key does not include it. */
static void classify_set(classifier *c, const PgQuery__VariableSetStmt *s, stmt_result *r)
{
    bool reset = s->kind == PG_QUERY__VARIABLE_SET_KIND__VAR_RESET ||
                 s->kind == PG_QUERY__VARIABLE_SET_KIND__VAR_RESET_ALL;
    r->kind = reset ? PRS_KIND_RESET : PRS_KIND_SET;
    r->read_only = true;
    if (s->is_local)
        r->flags |= PRS_F_SET_LOCAL;
    set_var_name(c, s->name, r);
    if (s->kind == PG_QUERY__VARIABLE_SET_KIND__VAR_SET_MULTI) {
        uint8_t iso = c->out->isolation;
        txn_options(c, s->args, s->n_args, r);
        /* SET SESSION CHARACTERISTICS sets the session's default, not this transaction's. */
        if (!s->name || strcmp(s->name, "TRANSACTION") != 0)
            c->out->isolation = iso;
    }
    if (c->stmt != 0)
        return;
    if (s->kind == PG_QUERY__VARIABLE_SET_KIND__VAR_SET_DEFAULT) {
        c->out->set_value = pool_add(c->out, "DEFAULT");
        return;
    }
    if (s->kind != PG_QUERY__VARIABLE_SET_KIND__VAR_SET_VALUE || s->n_args != 1 ||
        s->args[0]->node_case != PG_QUERY__NODE__NODE_A_CONST)
        return;
    const PgQuery__AConst *k = s->args[0]->a_const;
    bool neg;
    int lit = literal_at(c, k->location, &neg);
    if (lit >= 0 && !neg)
        c->out->set_value_lit = lit;
    else if (lit < 0 && k->val_case == PG_QUERY__A__CONST__VAL_SVAL && k->sval)
        c->out->set_value = pool_add(c->out, k->sval->sval);
}

static bool explain_analyze(const PgQuery__ExplainStmt *e)
{
    static const char *const off[] = {"false", "off", "no", "0"};
    for (size_t i = 0; i < e->n_options; i++) {
        const Node *o = e->options[i];
        if (o->node_case != PG_QUERY__NODE__NODE_DEF_ELEM || strcmp(o->def_elem->defname, "analyze") != 0)
            continue;
        const char *v = node_string(o->def_elem->arg);
        bool is_off = false;
        for (size_t k = 0; v && k < 4; k++)
            is_off |= strcmp(v, off[k]) == 0;
        return !is_off;
    }
    return false;
}

static bool is_query_kind(uint8_t kind)
{
    switch (kind) {
    case PRS_KIND_SELECT:
    case PRS_KIND_INSERT:
    case PRS_KIND_UPDATE:
    case PRS_KIND_DELETE:
    case PRS_KIND_MERGE:
    case PRS_KIND_COPY:
    case PRS_KIND_EXPLAIN:
    case PRS_KIND_PREPARE:
    case PRS_KIND_DECLARE:
        return true;
    default:
        return false;
    }
}

static void classify_node(classifier *c, const Node *n, stmt_result *r);

/* EXPLAIN, PREPARE and DECLARE read only if the statement they carry does. EXPLAIN without
 * ANALYZE of a write would be harmless on a replica but is sent to the primary all the
 * same: plans of writes are wanted where the writes happen, and it is rare. */
static void classify_inner(classifier *c, const Node *inner, stmt_result *r)
{
    stmt_result in = {0};
    classify_node(c, inner, &in);
    r->read_only = in.read_only;
    r->flags |= in.flags;
}

static void classify_node(classifier *c, const Node *n, stmt_result *r)
{
    if (!n)
        return;
    unsigned nc = (unsigned)n->node_case;
    r->kind = nc < sizeof simple_kind && simple_kind[nc] ? simple_kind[nc] : PRS_KIND_UTILITY;
    r->read_only = kind_read_only[r->kind];
    switch (n->node_case) {
    case PG_QUERY__NODE__NODE_SELECT_STMT:
        r->kind = PRS_KIND_SELECT;
        r->read_only = true;
        occ_analyze(c, n);
        break;
    case PG_QUERY__NODE__NODE_INSERT_STMT:
        keys_insert(c, n->insert_stmt, &r->flags);
        occ_analyze(c, n);
        break;
    case PG_QUERY__NODE__NODE_UPDATE_STMT:
        flag_key_assignments(c, n->update_stmt->target_list, n->update_stmt->n_target_list, &r->flags);
        occ_analyze(c, n);
        break;
    case PG_QUERY__NODE__NODE_DELETE_STMT:
    case PG_QUERY__NODE__NODE_MERGE_STMT:
        occ_analyze(c, n);
        break;
    case PG_QUERY__NODE__NODE_COPY_STMT: {
        const PgQuery__CopyStmt *cp = n->copy_stmt;
        r->kind = PRS_KIND_COPY;
        r->read_only = true;
        if (cp->query)
            classify_inner(c, cp->query, r);
        /* COPY FROM writes; COPY TO a server file or program acts on the server. */
        r->read_only = r->read_only && !cp->is_from && !cp->is_program && !str_set(cp->filename);
        keys_copy(c, cp);
        break;
    }
    case PG_QUERY__NODE__NODE_TRANSACTION_STMT:
        classify_transaction(c, n->transaction_stmt, r);
        break;
    case PG_QUERY__NODE__NODE_VARIABLE_SET_STMT:
        classify_set(c, n->variable_set_stmt, r);
        break;
    case PG_QUERY__NODE__NODE_VARIABLE_SHOW_STMT:
        set_var_name(c, n->variable_show_stmt->name, r);
        break;
    case PG_QUERY__NODE__NODE_CONSTRAINTS_SET_STMT:
        r->read_only = true;
        break;
    case PG_QUERY__NODE__NODE_EXPLAIN_STMT:
        r->kind = PRS_KIND_EXPLAIN;
        if (explain_analyze(n->explain_stmt))
            r->flags |= PRS_F_EXPLAIN_ANALYZE;
        classify_inner(c, n->explain_stmt->query, r);
        break;
    case PG_QUERY__NODE__NODE_PREPARE_STMT:
        r->kind = PRS_KIND_PREPARE;
        set_object_name(c, n->prepare_stmt->name);
        classify_inner(c, n->prepare_stmt->query, r);
        break;
    case PG_QUERY__NODE__NODE_DECLARE_CURSOR_STMT:
        r->kind = PRS_KIND_DECLARE;
        set_object_name(c, n->declare_cursor_stmt->portalname);
        classify_inner(c, n->declare_cursor_stmt->query, r);
        if (n->declare_cursor_stmt->options & CURSOR_OPT_HOLD)
            r->pin |= PRS_PIN_HOLD_CURSOR;
        break;
    case PG_QUERY__NODE__NODE_EXECUTE_STMT:
        set_object_name(c, n->execute_stmt->name);
        break;
    case PG_QUERY__NODE__NODE_DEALLOCATE_STMT:
        set_object_name(c, n->deallocate_stmt->name);
        break;
    case PG_QUERY__NODE__NODE_LISTEN_STMT:
        set_object_name(c, n->listen_stmt->conditionname);
        r->pin |= PRS_PIN_LISTEN;
        break;
    case PG_QUERY__NODE__NODE_NOTIFY_STMT:
        set_object_name(c, n->notify_stmt->conditionname);
        break;
    case PG_QUERY__NODE__NODE_UNLISTEN_STMT:
        set_object_name(c, n->unlisten_stmt->conditionname);
        if (!str_set(n->unlisten_stmt->conditionname))
            r->unpin |= PRS_PIN_LISTEN; /* UNLISTEN * */
        break;
    case PG_QUERY__NODE__NODE_FETCH_STMT:
        set_object_name(c, n->fetch_stmt->portalname);
        break;
    case PG_QUERY__NODE__NODE_CLOSE_PORTAL_STMT:
        set_object_name(c, n->close_portal_stmt->portalname);
        if (!str_set(n->close_portal_stmt->portalname))
            r->unpin |= PRS_PIN_HOLD_CURSOR; /* CLOSE ALL */
        break;
    case PG_QUERY__NODE__NODE_DISCARD_STMT:
        if (n->discard_stmt->target == PG_QUERY__DISCARD_MODE__DISCARD_ALL)
            r->unpin |= PRS_PIN_ALL;
        else if (n->discard_stmt->target == PG_QUERY__DISCARD_MODE__DISCARD_TEMP)
            r->unpin |= PRS_PIN_TEMP;
        break;
    case PG_QUERY__NODE__NODE_VACUUM_STMT:
        r->kind = n->vacuum_stmt->is_vacuumcmd ? PRS_KIND_VACUUM : PRS_KIND_ANALYZE;
        r->read_only = false;
        break;
    default:
        break;
    }
}

/* Statements PostgreSQL refuses inside a transaction block (PreventInTransactionBlock);
 * REINDEX and CLUSTER only in some forms, taken here in all. */
static bool no_txn_block(const Node *n)
{
    switch (n->node_case) {
    case PG_QUERY__NODE__NODE_VACUUM_STMT:
        return n->vacuum_stmt->is_vacuumcmd;
    case PG_QUERY__NODE__NODE_INDEX_STMT:
        return n->index_stmt->concurrent;
    case PG_QUERY__NODE__NODE_DROP_STMT:
        return n->drop_stmt->concurrent;
    case PG_QUERY__NODE__NODE_REINDEX_STMT:
    case PG_QUERY__NODE__NODE_CLUSTER_STMT:
    case PG_QUERY__NODE__NODE_CREATEDB_STMT:
    case PG_QUERY__NODE__NODE_DROPDB_STMT:
    case PG_QUERY__NODE__NODE_ALTER_SYSTEM_STMT:
    case PG_QUERY__NODE__NODE_CREATE_TABLE_SPACE_STMT:
    case PG_QUERY__NODE__NODE_DROP_TABLE_SPACE_STMT:
    case PG_QUERY__NODE__NODE_CREATE_SUBSCRIPTION_STMT:
    case PG_QUERY__NODE__NODE_ALTER_SUBSCRIPTION_STMT:
    case PG_QUERY__NODE__NODE_DROP_SUBSCRIPTION_STMT:
        return true;
    default:
        return false;
    }
}

static void classify_statement(classifier *c, const Node *n, bool *all_read_only)
{
    stmt_result r = {0};
    c->ow->ran = false;
    c->ow->n_rangevars = 0;
    classify_node(c, n, &r);
    c->w.flags = 0;
    c->w.pin = c->w.unpin = 0;
    c->w.n_rangevars = 0;
    c->w.stmt = (unsigned)c->stmt;
    c->w.query_checks = is_query_kind(r.kind);
    walk(&c->w, (const ProtobufCMessage *)n, 0);
    r.flags |= c->w.flags | (no_txn_block(n) ? PRS_F_NO_TXN_BLOCK : 0);
    r.pin |= c->w.pin;
    r.unpin |= c->w.unpin;
    /* A temp table dropped at commit leaves nothing behind. */
    if (n->node_case == PG_QUERY__NODE__NODE_CREATE_STMT &&
        n->create_stmt->oncommit == PG_QUERY__ON_COMMIT_ACTION__ONCOMMIT_DROP)
        r.pin &= (uint8_t)~PRS_PIN_TEMP;
    /* A relation the occurrence analysis did not place might be read unrestricted. */
    if (c->ow->ran && c->ow->n_rangevars != c->w.n_rangevars)
        c->ow->incomplete = true;
    /* State that stays with the session is made where writes go, never on a replica. */
    if ((r.flags & PRS_F_WRITE_MASK) || r.pin)
        r.read_only = false;
    if (c->stmt == 0)
        c->out->kind = r.kind;
    c->out->kind_mask |= 1ull << r.kind;
    c->out->flags |= r.flags;
    c->out->pin |= r.pin;
    c->out->unpin |= r.unpin;
    *all_read_only = *all_read_only && r.read_only;
}

static void copy_tables(classifier *c)
{
    prs_query_info *qi = c->out;
    const walker *w = &c->w;
    if (w->tables_overflow)
        qi->flags |= PRS_F_TABLES_TRUNCATED;
    for (unsigned i = 0; i < w->n_tables; i++) {
        const seen_table *t = &w->tables[i];
        if (!t->schema && walker_cte(w, t->name))
            continue;
        if (qi->n_tables == PRS_MAX_TABLES) {
            qi->flags |= PRS_F_TABLES_TRUNCATED;
            return;
        }
        prs_table_ref ref = {PRS_NO_STR, PRS_NO_STR};
        if (t->schema && (ref.schema = pool_add(qi, t->schema)) == PRS_NO_STR)
            ref.name = PRS_NO_STR;
        else
            ref.name = pool_add(qi, t->name);
        if (ref.name == PRS_NO_STR) {
            qi->flags |= PRS_F_TABLES_TRUNCATED;
            return;
        }
        qi->tables[qi->n_tables++] = ref;
    }
}

/* The index of a relation in tables[], added when the walk left it out (a table named like a
 * CTE of another scope); -1 when tables[] is full. */
static int table_index(prs_query_info *qi, const char *schema, const char *name)
{
    for (unsigned i = 0; i < qi->n_tables; i++) {
        const char *ts = prs_info_str(qi, qi->tables[i].schema), *tn = prs_info_str(qi, qi->tables[i].name);
        if (tn && strcmp(tn, name) == 0 && (ts ? schema && strcmp(ts, schema) == 0 : !schema))
            return (int)i;
    }
    if (qi->n_tables == PRS_MAX_TABLES)
        return -1;
    prs_table_ref ref = {PRS_NO_STR, PRS_NO_STR};
    if (schema && (ref.schema = pool_add(qi, schema)) == PRS_NO_STR)
        return -1;
    if ((ref.name = pool_add(qi, name)) == PRS_NO_STR)
        return -1;
    qi->tables[qi->n_tables] = ref;
    return qi->n_tables++;
}

/* Follows the equalities to a fixed point: a slot's `from` gathers every slot whose
 * restrictions reach it. */
static void occ_propagate(occ_work *ow)
{
    for (unsigned i = 0; i < ow->n_slots; i++)
        ow->slots[i].from = 1u << i;
    bool changed = true;
    while (changed) {
        changed = false;
        for (unsigned e = 0; e < ow->n_edges; e++) {
            prs_slot *to = &ow->slots[ow->edges[e][1]];
            uint32_t from = to->from | ow->slots[ow->edges[e][0]].from;
            changed = changed || from != to->from;
            to->from = from;
        }
    }
}

static void occ_finish(classifier *c)
{
    prs_query_info *qi = c->out;
    occ_work *ow = c->ow;
    for (unsigned i = 0; i < ow->n_occs && !ow->incomplete; i++) {
        const occ_rel *o = &ow->occs[i];
        int t = table_index(qi, o->schema, o->name);
        if (t < 0) {
            qi->flags |= PRS_F_TABLES_TRUNCATED;
            ow->incomplete = true;
            break;
        }
        qi->occs[i].table = (uint8_t)t;
        qi->occs[i].flags = o->flags;
        qi->occs[i].alias = o->alias ? pool_add(qi, o->alias) : PRS_NO_STR;
    }
    if (ow->incomplete) {
        qi->flags |= PRS_F_OCCS_TRUNCATED;
        memset(qi->occs, 0, sizeof qi->occs);
        for (unsigned i = 0; i < qi->n_keys; i++)
            qi->keys[i].slot = PRS_NO_SLOT;
        return;
    }
    occ_propagate(ow);
    qi->n_occs = (uint8_t)ow->n_occs;
    qi->n_slots = (uint8_t)ow->n_slots;
    memcpy(qi->slots, ow->slots, ow->n_slots * sizeof ow->slots[0]);
}

static void classify_tree(classifier *c, const PgQuery__ParseResult *tree)
{
    prs_query_info *qi = c->out;
    bool read_only = true;
    for (size_t i = 0; i < tree->n_stmts; i++) {
        c->stmt = (unsigned)i;
        if (tree->stmts[i] && tree->stmts[i]->stmt)
            classify_statement(c, tree->stmts[i]->stmt, &read_only);
    }
    qi->n_statements = (uint32_t)tree->n_stmts;
    if (tree->n_stmts == 0) {
        qi->kind = PRS_KIND_EMPTY;
        qi->kind_mask = 1ull << PRS_KIND_EMPTY;
    }
    if (tree->n_stmts > 1)
        qi->flags |= PRS_F_MULTI;
    qi->read_only = read_only;
    copy_tables(c);
    occ_finish(c);
}

/* ---- SET pgshard.x = word, which PostgreSQL's grammar rejects for some words ---- */

typedef struct word {
    const char *p;
    size_t n;
} word;

static bool is_word_char(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '_' ||
           ch == '.';
}

static word next_word(const char *s, size_t n, size_t *i)
{
    while (*i < n && s[*i] == ' ')
        (*i)++;
    word w = {s + *i, 0};
    while (*i + w.n < n && is_word_char(s[*i + w.n]))
        w.n++;
    if (w.n == 0 && *i < n)
        w.n = 1;
    *i += w.n;
    return w;
}

static bool word_eq(word w, const char *lit)
{
    if (w.n != strlen(lit))
        return false;
    for (size_t k = 0; k < w.n; k++) {
        char ch = w.p[k];
        if ((ch >= 'A' && ch <= 'Z' ? ch + 32 : ch) != lit[k])
            return false;
    }
    return true;
}

static void pool_add_lower(prs_query_info *qi, uint16_t *off, word w)
{
    char tmp[128];
    if (w.n >= sizeof tmp)
        return;
    for (size_t k = 0; k < w.n; k++)
        tmp[k] = (char)(w.p[k] >= 'A' && w.p[k] <= 'Z' ? w.p[k] + 32 : w.p[k]);
    tmp[w.n] = 0;
    *off = pool_add(qi, tmp);
}

/* `SET pgshard.target = primary` and `= any` are what an operator types, but PRIMARY and
 * ANY are reserved words, so PostgreSQL's grammar refuses them. The proxy handles these
 * variables itself, so the normalized text is matched here when libpg_query says no. */
static bool classify_pgshard_set(const prs_lexed *lx, prs_query_info *qi)
{
    const char *s = prs_lexed_text(lx);
    size_t n = prs_lexed_len(lx), i = 0;
    uint32_t flags = PRS_F_PGSHARD_VAR;
    if (!word_eq(next_word(s, n, &i), "set"))
        return false;
    word name = next_word(s, n, &i);
    if (word_eq(name, "local") || word_eq(name, "session")) {
        flags |= word_eq(name, "local") ? PRS_F_SET_LOCAL : 0;
        name = next_word(s, n, &i);
    }
    if (name.n <= 8 || !word_eq((word){name.p, 8}, "pgshard."))
        return false;
    word op = next_word(s, n, &i);
    if (!word_eq(op, "=") && !word_eq(op, "to"))
        return false;
    word value = next_word(s, n, &i);
    word end = next_word(s, n, &i);
    if (value.n == 0 || (end.n && !word_eq(end, ";")) || i != n)
        return false;
    if (!word_eq(value, "?") && !is_word_char(value.p[0]))
        return false;
    info_init(qi);
    qi->kind = PRS_KIND_SET;
    qi->kind_mask = 1ull << PRS_KIND_SET;
    qi->read_only = true;
    qi->flags = flags;
    qi->n_statements = 1;
    pool_add_lower(qi, &qi->set_name, name);
    if (word_eq(value, "?"))
        qi->set_value_lit = 0;
    else
        pool_add_lower(qi, &qi->set_value, value);
    return true;
}

/* ---- entry points ---- */

static void info_unknown(prs_query_info *qi, const prs_lexed *lx)
{
    info_init(qi);
    qi->kind = PRS_KIND_UNKNOWN;
    qi->kind_mask = 1ull << PRS_KIND_UNKNOWN;
    qi->read_only = false;
    qi->n_statements = lx ? lx->n_statements : 0;
    if (qi->n_statements > 1)
        qi->flags |= PRS_F_MULTI;
}

static int parse_and_classify(classifier *c)
{
    PgQuery__ParseResult *tree;
    char err[8];
    int r = prs_tree_parse(c->sql, c->len, &tree, err, sizeof err);
    if (r != 0)
        return r > 0 ? PRS_ESYNTAX : PRS_ENOMEM;
    c->ow = calloc(1, sizeof *c->ow);
    if (!c->ow) {
        pg_query__parse_result__free_unpacked(tree, NULL);
        return PRS_ENOMEM;
    }
    classify_tree(c, tree);
    pg_query__parse_result__free_unpacked(tree, NULL);
    free(c->ow);
    return 0;
}

int prs_classify_ex(const char *sql, size_t len, const prs_lexed *lex, const prs_classify_opts *opts,
                    prs_query_info *out)
{
    if (!out)
        return PRS_EINVAL;
    info_unknown(out, NULL);
    if (!sql && len)
        return PRS_EINVAL;
    prs_lexed own = PRS_LEXED_INIT;
    int rc = 0;
    if (!lex) {
        rc = prs_lex(sql ? sql : "", len, &own);
        lex = &own;
    }
    if (rc == 0 && lex->max_nesting > PRS_MAX_NESTING)
        rc = PRS_ETOOCOMPLEX;
    if (rc == 0) {
        classifier c = {0};
        c.sql = sql ? sql : "";
        c.len = len;
        c.lex = lex;
        c.opts = opts;
        c.out = out;
        info_init(out);
        rc = parse_and_classify(&c);
        if (rc == PRS_ESYNTAX && classify_pgshard_set(lex, out))
            rc = 0;
    }
    if (rc < 0)
        info_unknown(out, lex);
    prs_lexed_free(&own);
    return rc;
}

int prs_classify(const char *sql, size_t len, prs_query_info *out)
{
    return prs_classify_ex(sql, len, NULL, NULL, out);
}

/* prs_classify: libpg_query's parse tree (protobuf, walked through protobuf-c's descriptors)
 * turned into a prs_query_info. This is the cache-miss path; the hot path never comes here.
 * It decides, for every statement kind, whether a replica may run it, and finds where the
 * shard key's values sit. It does not pick shards or replicas. */
#include <pg_query.h>
#include <pg_query/pg_query.pb-c.h>
#include <stdlib.h>
#include <string.h>

#include "parser/parser.h"

/* Node wrappers count, so this is about half as many levels of real nesting. */
#define MAX_DEPTH 2000
#define MAX_SEEN_TABLES 64
#define MAX_CTES 32

typedef PgQuery__Node Node;

typedef struct seen_table {
    const char *schema; /* points into the unpacked tree; NULL when unqualified */
    const char *name;
    unsigned stmt; /* the statement it was first seen in */
} seen_table;

/* What the generic walk over one statement's tree collects. */
typedef struct walker {
    uint32_t flags;
    bool query_checks; /* functions, row locks and CTEs matter (not for DDL) */
    unsigned n_tables;
    bool tables_overflow;
    seen_table tables[MAX_SEEN_TABLES];
    unsigned n_ctes;
    const char *ctes[MAX_CTES];
    unsigned stmt; /* the statement being walked */
} walker;

typedef struct classifier {
    const char *sql;
    size_t len;
    const prs_lexed *lex;
    const prs_classify_opts *opts;
    prs_query_info *out;
    walker w;
    unsigned stmt; /* index of the statement being classified */
    uint16_t next_cond;
} classifier;

typedef struct stmt_result {
    uint8_t kind;
    bool read_only; /* before the write flags are applied */
    uint32_t flags;
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
    "key_update",     "tables_truncated", "keys_truncated", "table_repeated",
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
    if ((rv->relpersistence && rv->relpersistence[0] == 't') || has_prefix(schema, "pg_temp"))
        w->flags |= PRS_F_TEMP_TABLE;
    for (unsigned i = 0; i < w->n_tables; i++) {
        const seen_table *t = &w->tables[i];
        if (strcmp(t->name, rv->relname) == 0 &&
            (t->schema == schema || (t->schema && schema && strcmp(t->schema, schema) == 0))) {
            /* A key found in the WHERE then restricts only one of its occurrences. A CTE
             * named again (a recursive one) is no table. */
            if (t->stmt == w->stmt && (schema || !walker_cte(w, rv->relname)))
                w->flags |= PRS_F_TABLE_REPEATED;
            return;
        }
    }
    if (w->n_tables == MAX_SEEN_TABLES) {
        w->tables_overflow = true;
        return;
    }
    w->tables[w->n_tables].schema = schema;
    w->tables[w->n_tables].name = rv->relname;
    w->tables[w->n_tables].stmt = w->stmt;
    w->n_tables++;
}

static bool is_sequence_function(const char *name)
{
    return strcmp(name, "nextval") == 0 || strcmp(name, "setval") == 0 || strcmp(name, "currval") == 0 ||
           strcmp(name, "lastval") == 0;
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
    if (is_sequence_function(name))
        w->flags |= PRS_F_NEXTVAL;
    else if (has_prefix(name, "pg_advisory_") || has_prefix(name, "pg_try_advisory_"))
        w->flags |= PRS_F_ADVISORY_LOCK;
    else if (!prs_function_is_safe(name))
        w->flags |= PRS_F_UNSAFE_FUNC;
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
    if (d == &pg_query__range_var__descriptor)
        see_table(w, (const PgQuery__RangeVar *)m);
    else if (d == &pg_query__common_table_expr__descriptor)
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

static int key_column(const classifier *c, const Node *n)
{
    if (!n || n->node_case != PG_QUERY__NODE__NODE_COLUMN_REF || n->column_ref->n_fields == 0)
        return -1;
    const PgQuery__ColumnRef *cr = n->column_ref;
    return key_name_index(c, node_string(cr->fields[cr->n_fields - 1]));
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

static prs_key_ref new_ref(classifier *c, int col, int row)
{
    prs_key_ref r = {0};
    r.column = (uint8_t)col;
    r.row = (int16_t)row;
    r.cond = c->next_cond;
    return r;
}

/* A list of alternatives (IN (...), ANY(ARRAY[...])) counts only if every element is a
 * usable value and all of them fit: a partial list would name too few shards. */
static void key_list(classifier *c, int col, Node *const *items, size_t n)
{
    prs_key_ref r = new_ref(c, col, -1);
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
        r = new_ref(c, col, -1);
        key_value(c, items[i], &r);
        add_ref(c, r);
    }
    c->next_cond++;
}

static void key_eq(classifier *c, const Node *col_node, const Node *val)
{
    int col = key_column(c, col_node);
    prs_key_ref r = new_ref(c, col, -1);
    if (col >= 0 && key_value(c, val, &r) && add_ref(c, r))
        c->next_cond++;
}

static void key_any(classifier *c, const Node *col_node, const Node *val)
{
    int col = key_column(c, col_node);
    const Node *v = strip_casts(val);
    if (col < 0 || !v)
        return;
    if (v->node_case == PG_QUERY__NODE__NODE_A_ARRAY_EXPR) {
        key_list(c, col, v->a_array_expr->elements, v->a_array_expr->n_elements);
        return;
    }
    prs_key_ref r = new_ref(c, col, -1);
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

/* Only the AND chain at the top of a WHERE restricts every row; OR and NOT do not. */
static void keys_where(classifier *c, const Node *e)
{
    if (!e)
        return;
    if (e->node_case == PG_QUERY__NODE__NODE_BOOL_EXPR &&
        e->bool_expr->boolop == PG_QUERY__BOOL_EXPR_TYPE__AND_EXPR) {
        for (size_t i = 0; i < e->bool_expr->n_args; i++)
            keys_where(c, e->bool_expr->args[i]);
        return;
    }
    if (e->node_case != PG_QUERY__NODE__NODE_A_EXPR || !op_is_eq(e->a_expr))
        return;
    const PgQuery__AExpr *a = e->a_expr;
    switch (a->kind) {
    case PG_QUERY__A__EXPR__KIND__AEXPR_OP:
        if (key_column(c, a->lexpr) >= 0)
            key_eq(c, a->lexpr, a->rexpr);
        else
            key_eq(c, a->rexpr, a->lexpr);
        break;
    case PG_QUERY__A__EXPR__KIND__AEXPR_IN:
        if (key_column(c, a->lexpr) >= 0 && a->rexpr && a->rexpr->node_case == PG_QUERY__NODE__NODE_LIST)
            key_list(c, key_column(c, a->lexpr), a->rexpr->list->items, a->rexpr->list->n_items);
        break;
    case PG_QUERY__A__EXPR__KIND__AEXPR_OP_ANY:
        key_any(c, a->lexpr, a->rexpr);
        break;
    default:
        break;
    }
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
            prs_key_ref ref = new_ref(c, col, (int)r);
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
        prs_key_ref r = new_ref(c, col, -1);
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
    if (s->kind == PG_QUERY__VARIABLE_SET_KIND__VAR_SET_MULTI)
        txn_options(c, s->args, s->n_args, r);
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
        if (n->select_stmt->op <= PG_QUERY__SET_OPERATION__SETOP_NONE)
            keys_where(c, n->select_stmt->where_clause);
        break;
    case PG_QUERY__NODE__NODE_INSERT_STMT:
        keys_insert(c, n->insert_stmt, &r->flags);
        break;
    case PG_QUERY__NODE__NODE_UPDATE_STMT:
        flag_key_assignments(c, n->update_stmt->target_list, n->update_stmt->n_target_list, &r->flags);
        keys_where(c, n->update_stmt->where_clause);
        break;
    case PG_QUERY__NODE__NODE_DELETE_STMT:
        keys_where(c, n->delete_stmt->where_clause);
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
        break;
    case PG_QUERY__NODE__NODE_EXECUTE_STMT:
        set_object_name(c, n->execute_stmt->name);
        break;
    case PG_QUERY__NODE__NODE_DEALLOCATE_STMT:
        set_object_name(c, n->deallocate_stmt->name);
        break;
    case PG_QUERY__NODE__NODE_LISTEN_STMT:
        set_object_name(c, n->listen_stmt->conditionname);
        break;
    case PG_QUERY__NODE__NODE_NOTIFY_STMT:
        set_object_name(c, n->notify_stmt->conditionname);
        break;
    case PG_QUERY__NODE__NODE_UNLISTEN_STMT:
        set_object_name(c, n->unlisten_stmt->conditionname);
        break;
    case PG_QUERY__NODE__NODE_FETCH_STMT:
        set_object_name(c, n->fetch_stmt->portalname);
        break;
    case PG_QUERY__NODE__NODE_CLOSE_PORTAL_STMT:
        set_object_name(c, n->close_portal_stmt->portalname);
        break;
    case PG_QUERY__NODE__NODE_VACUUM_STMT:
        r->kind = n->vacuum_stmt->is_vacuumcmd ? PRS_KIND_VACUUM : PRS_KIND_ANALYZE;
        r->read_only = false;
        break;
    default:
        break;
    }
}

static void classify_statement(classifier *c, const Node *n, bool *all_read_only)
{
    stmt_result r = {0};
    classify_node(c, n, &r);
    c->w.flags = 0;
    c->w.stmt = (unsigned)c->stmt;
    c->w.query_checks = is_query_kind(r.kind);
    walk(&c->w, (const ProtobufCMessage *)n, 0);
    r.flags |= c->w.flags;
    if (r.flags & PRS_F_WRITE_MASK)
        r.read_only = false;
    if (c->stmt == 0)
        c->out->kind = r.kind;
    c->out->kind_mask |= 1ull << r.kind;
    c->out->flags |= r.flags;
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
    char *text = malloc(c->len + 1);
    if (!text)
        return PRS_ENOMEM;
    memcpy(text, c->sql, c->len);
    text[c->len] = '\0';
    PgQueryProtobufParseResult res = pg_query_parse_protobuf(text);
    free(text);
    if (res.error) {
        pg_query_free_protobuf_parse_result(res);
        return PRS_ESYNTAX;
    }
    PgQuery__ParseResult *tree =
        pg_query__parse_result__unpack(NULL, res.parse_tree.len, (const uint8_t *)res.parse_tree.data);
    pg_query_free_protobuf_parse_result(res);
    if (!tree)
        return PRS_ENOMEM;
    classify_tree(c, tree);
    pg_query__parse_result__free_unpacked(tree, NULL);
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

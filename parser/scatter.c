/* prs_scatter_plan: one SELECT that runs on every shard, rewritten through libpg_query's
 * protobuf tree and deparser into the query each shard runs, with the plan by which
 * proxy/merge.c combines the shards' rows. Refuses, with the reason, whatever it cannot
 * merge into exactly what one database would return. No I/O, no knowledge of shards. */
#include <errno.h>
#include <pg_query.h>
#include <pg_query/pg_query.pb-c.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "parser/scatter.h"
#include "parser/tree.h"

typedef PgQuery__Node Node;

/* Deeper trees are refused before any recursive pass; every later pass then stays within it. */
#define SC_MAX_DEPTH 1000

#define SC_OK 0
#define SC_REFUSED 1
#define SC_ENOMEM (-1)
#define SC_FOUND 2 /* a search walk stops at what it looks for */

#define SC_NOT_SUPPORTED "0A000"
#define SC_SUBQUERY_MSG                                                                                      \
    "pgshard: a cross-shard query with a subquery (or CTE, or UNION...) is not supported: add the "          \
    "tenant key"

/* One column of the shard query, as the planner tracks it before rewriting the tree. */
typedef struct sc_col {
    const Node *expr; /* borrowed from the client's tree: the expression before any rewrite;
                         for an avg's count, the avg call itself */
    const char *role; /* hidden columns: the middle of their name, pgshard_<role>_<n> */
    uint8_t kind;     /* prs_sc_kind */
    bool hidden;
    bool aggregate;     /* kind is an aggregate's */
    bool avg_count;     /* the hidden count(x) of an avg(x): never matched by expression */
    bool avg_self;      /* the hidden avg(x) of an avg(x) (for float4): never matched either */
    uint16_t avgf;      /* PRS_SC_AVG: 1 + its avg_self column */
    bool group_checked; /* a non-aggregate target found to be a GROUP BY expression */
    bool is_coll;       /* the hidden pg_collation_for() of another column: never matched by
                           expression; expr is that column's */
    uint16_t coll;      /* 1 + the column holding this one's collation, 0 none */
} sc_col;

typedef struct planner {
    PgQuery__SelectStmt *s; /* borrowed: the statement inside the unpacked tree */
    const prs_scatter_ctx *ctx;
    prs_scatter *out;
    size_t str_cap;
    unsigned ncols;
    unsigned nvisible;
    bool star; /* the target list has * or t.*: the visible column count is unknown */
    /* GROUP BY items that name an output column (see group_resolve): item k of the GROUP BY
     * becomes position probe_pos[k] (0: unchanged), and each name in probe_names is checked on
     * the shards by the probe. */
    unsigned nprobes;
    const char *probe_names[8]; /* borrowed from the tree */
    uint16_t probe_pos[PRS_SC_MAX_COLS];
    const char *find_name;             /* borrowed: what visit_find_name looks for */
    bool sort_hidden[PRS_SC_MAX_SORT]; /* out->sort[k] is on a hidden column */
    unsigned find_param;               /* what visit_count_param counts, and how often it was found */
    unsigned param_uses;
    sc_col cols[PRS_SC_MAX_COLS];
} planner;

/* ---- results ---- */

static int refuse_state(planner *p, const char *sqlstate, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int refuse_state(planner *p, const char *sqlstate, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(p->out->msg, sizeof p->out->msg, fmt, ap);
    va_end(ap);
    if (n < 0)
        snprintf(p->out->msg, sizeof p->out->msg, "pgshard: this cross-shard query is not supported");
    memcpy(p->out->sqlstate, sqlstate, sizeof p->out->sqlstate);
    return SC_REFUSED;
}

#define refuse(p, ...) refuse_state((p), SC_NOT_SUPPORTED, __VA_ARGS__)

/* ---- generic walks over protobuf-c messages ---- */

static bool field_is_active(const ProtobufCFieldDescriptor *f, const ProtobufCMessage *m)
{
    if (!(f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF))
        return true;
    const uint32_t *oneof_case = (const uint32_t *)((const char *)m + f->quantifier_offset);
    return *oneof_case == f->id;
}

typedef int (*node_visitor)(planner *p, const Node *n);

/* Calls fn on every Node under m (m itself when it is one), stopping at the first non-zero
 * result. Only the active member of a oneof is followed: the others alias it. */
static int walk_msg(planner *p, const ProtobufCMessage *m, node_visitor fn, unsigned depth)
{
    if (!m)
        return SC_OK;
    if (depth > SC_MAX_DEPTH)
        return refuse_state(p, "54001", "pgshard: the query is too deeply nested to plan across shards");
    if (m->descriptor == &pg_query__node__descriptor) {
        int rc = fn(p, (const Node *)m);
        if (rc)
            return rc;
    }
    const ProtobufCMessageDescriptor *d = m->descriptor;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        if (f->type != PROTOBUF_C_TYPE_MESSAGE || !field_is_active(f, m))
            continue;
        const char *at = (const char *)m + f->offset;
        if (f->label != PROTOBUF_C_LABEL_REPEATED) {
            int rc = walk_msg(p, *(ProtobufCMessage *const *)at, fn, depth + 1);
            if (rc)
                return rc;
            continue;
        }
        size_t n = *(const size_t *)((const char *)m + f->quantifier_offset);
        ProtobufCMessage *const *v = *(ProtobufCMessage *const *const *)at;
        for (size_t k = 0; k < n; k++) {
            int rc = walk_msg(p, v[k], fn, depth + 1);
            if (rc)
                return rc;
        }
    }
    return SC_OK;
}

static int walk(planner *p, const Node *n, node_visitor fn)
{
    return walk_msg(p, (const ProtobufCMessage *)n, fn, 0);
}

static bool msg_equal(const ProtobufCMessage *a, const ProtobufCMessage *b);

static size_t scalar_size(ProtobufCType t)
{
    switch (t) {
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
    case PROTOBUF_C_TYPE_DOUBLE:
        return 8;
    default:
        return 4; /* int32 kinds, float, enum, protobuf_c_boolean */
    }
}

static bool value_equal(const ProtobufCFieldDescriptor *f, const void *a, const void *b)
{
    switch (f->type) {
    case PROTOBUF_C_TYPE_MESSAGE:
        return msg_equal(*(ProtobufCMessage *const *)a, *(ProtobufCMessage *const *)b);
    case PROTOBUF_C_TYPE_STRING: {
        const char *x = *(char *const *)a, *y = *(char *const *)b;
        return (x && y) ? strcmp(x, y) == 0 : x == y;
    }
    case PROTOBUF_C_TYPE_BYTES: {
        const ProtobufCBinaryData *x = a, *y = b;
        return x->len == y->len && (x->len == 0 || memcmp(x->data, y->data, x->len) == 0);
    }
    default:
        return memcmp(a, b, scalar_size(f->type)) == 0;
    }
}

static size_t value_size(const ProtobufCFieldDescriptor *f)
{
    switch (f->type) {
    case PROTOBUF_C_TYPE_MESSAGE:
    case PROTOBUF_C_TYPE_STRING:
        return sizeof(void *);
    case PROTOBUF_C_TYPE_BYTES:
        return sizeof(ProtobufCBinaryData);
    default:
        return scalar_size(f->type);
    }
}

static bool field_equal(const ProtobufCFieldDescriptor *f, const ProtobufCMessage *a,
                        const ProtobufCMessage *b)
{
    const char *pa = (const char *)a, *pb = (const char *)b;
    if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
        uint32_t ca = *(const uint32_t *)(pa + f->quantifier_offset);
        uint32_t cb = *(const uint32_t *)(pb + f->quantifier_offset);
        if (ca != cb)
            return false;
        return ca != f->id || value_equal(f, pa + f->offset, pb + f->offset);
    }
    if (f->label != PROTOBUF_C_LABEL_REPEATED)
        return value_equal(f, pa + f->offset, pb + f->offset);
    size_t na = *(const size_t *)(pa + f->quantifier_offset);
    size_t nb = *(const size_t *)(pb + f->quantifier_offset);
    if (na != nb)
        return false;
    const char *va = *(const char *const *)(pa + f->offset), *vb = *(const char *const *)(pb + f->offset);
    size_t sz = value_size(f);
    for (size_t k = 0; k < na; k++)
        if (!value_equal(f, va + k * sz, vb + k * sz))
            return false;
    return true;
}

/* Two parse trees are the same expression when they differ at most in where their tokens
 * stood in the text: `location` fields are skipped, everything else is compared. */
static bool msg_equal(const ProtobufCMessage *a, const ProtobufCMessage *b)
{
    if (!a || !b)
        return a == b;
    if (a->descriptor != b->descriptor)
        return false;
    const ProtobufCMessageDescriptor *d = a->descriptor;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        if (strcmp(f->name, "location") == 0)
            continue;
        if (!field_equal(f, a, b))
            return false;
    }
    return true;
}

static bool node_equal(const Node *a, const Node *b)
{
    return msg_equal((const ProtobufCMessage *)a, (const ProtobufCMessage *)b);
}

/* ---- building and changing nodes ----
 * Every node added to the tree is malloc'ed piece by piece, as protobuf-c's default allocator
 * does when it unpacks, so pg_query__parse_result__free_unpacked frees them with the rest. */

static Node *node_copy(const Node *n)
{
    size_t len = pg_query__node__get_packed_size(n);
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf)
        return NULL;
    pg_query__node__pack(n, buf);
    Node *copy = pg_query__node__unpack(NULL, len, buf);
    free(buf);
    return copy;
}

static void node_free(Node *n)
{
    if (n)
        pg_query__node__free_unpacked(n, NULL);
}

static void nodes_free(size_t *count, Node ***items)
{
    for (size_t i = 0; i < *count; i++)
        node_free((*items)[i]);
    free(*items);
    *items = NULL;
    *count = 0;
}

/* An integer constant, as the grammar would have produced it for the literal. */
static Node *const_int_new(int64_t v)
{
    Node *n = malloc(sizeof *n);
    PgQuery__AConst *c = malloc(sizeof *c);
    if (!n || !c)
        goto fail;
    pg_query__node__init(n);
    pg_query__a__const__init(c);
    n->node_case = PG_QUERY__NODE__NODE_A_CONST;
    n->a_const = c;
    c->location = -1;
    if (v <= INT32_MAX) {
        PgQuery__Integer *i = malloc(sizeof *i);
        if (!i)
            goto fail;
        pg_query__integer__init(i);
        i->ival = (int32_t)v;
        c->val_case = PG_QUERY__A__CONST__VAL_IVAL;
        c->ival = i;
        return n;
    }
    PgQuery__Float *f = malloc(sizeof *f);
    char *text = malloc(24);
    if (!f || !text) {
        free(f);
        free(text);
        goto fail;
    }
    pg_query__float__init(f);
    snprintf(text, 24, "%lld", (long long)v);
    f->fval = text;
    c->val_case = PG_QUERY__A__CONST__VAL_FVAL;
    c->fval = f;
    return n;
fail:
    free(n);
    free(c);
    return NULL;
}

static int target_append(PgQuery__SelectStmt *s, Node *val, const char *name)
{
    Node *n = malloc(sizeof *n);
    PgQuery__ResTarget *rt = malloc(sizeof *rt);
    char *nm = strdup(name);
    Node **grown = realloc(s->target_list, (s->n_target_list + 1) * sizeof(Node *));
    if (grown)
        s->target_list = grown;
    if (!n || !rt || !nm || !grown) {
        free(n);
        free(rt);
        free(nm);
        return SC_ENOMEM;
    }
    pg_query__node__init(n);
    pg_query__res_target__init(rt);
    rt->name = nm;
    rt->val = val;
    rt->location = -1;
    n->node_case = PG_QUERY__NODE__NODE_RES_TARGET;
    n->res_target = rt;
    s->target_list[s->n_target_list++] = n;
    return SC_OK;
}

/* ---- reading nodes ---- */

/* protobuf-c leaves an absent string as "" (its default), not NULL. */
static bool str_set(const char *s)
{
    return s && *s;
}

static const char *node_str(const Node *n)
{
    return (n && n->node_case == PG_QUERY__NODE__NODE_STRING && n->string) ? n->string->sval : NULL;
}

static const PgQuery__FuncCall *as_func(const Node *n)
{
    return (n && n->node_case == PG_QUERY__NODE__NODE_FUNC_CALL) ? n->func_call : NULL;
}

static const PgQuery__ResTarget *as_target(const Node *n)
{
    return (n && n->node_case == PG_QUERY__NODE__NODE_RES_TARGET) ? n->res_target : NULL;
}

static bool is_star_ref(const Node *n)
{
    if (!n || n->node_case != PG_QUERY__NODE__NODE_COLUMN_REF)
        return false;
    const PgQuery__ColumnRef *c = n->column_ref;
    return c->n_fields > 0 && c->fields[c->n_fields - 1]->node_case == PG_QUERY__NODE__NODE_A_STAR;
}

/* The function's own name, or NULL when it is qualified by a schema other than pg_catalog
 * (a user's function, whatever its name). */
static const char *builtin_func_name(const PgQuery__FuncCall *f)
{
    if (f->n_funcname == 1)
        return node_str(f->funcname[0]);
    if (f->n_funcname == 2 && node_str(f->funcname[0]) && strcmp(node_str(f->funcname[0]), "pg_catalog") == 0)
        return node_str(f->funcname[1]);
    return NULL;
}

static const char *last_name(size_t n, Node **names)
{
    return n ? node_str(names[n - 1]) : NULL;
}

/* The column name PostgreSQL gives an unnamed target (FigureColname), for the shapes that
 * matter here; strength 2 is a real name, 1 a fallback such as a type's name. */
static const char *figure_name(const Node *n, int *strength)
{
    *strength = 0;
    if (!n)
        return NULL;
    switch (n->node_case) {
    case PG_QUERY__NODE__NODE_COLUMN_REF:
        *strength = 2;
        return last_name(n->column_ref->n_fields, n->column_ref->fields);
    case PG_QUERY__NODE__NODE_A_INDIRECTION: {
        const char *s = last_name(n->a_indirection->n_indirection, n->a_indirection->indirection);
        if (s) {
            *strength = 2;
            return s;
        }
        return figure_name(n->a_indirection->arg, strength);
    }
    case PG_QUERY__NODE__NODE_FUNC_CALL:
        *strength = 2;
        return last_name(n->func_call->n_funcname, n->func_call->funcname);
    case PG_QUERY__NODE__NODE_TYPE_CAST: {
        const char *s = figure_name(n->type_cast->arg, strength);
        if (*strength <= 1 && n->type_cast->type_name) {
            *strength = 1;
            return last_name(n->type_cast->type_name->n_names, n->type_cast->type_name->names);
        }
        return s;
    }
    case PG_QUERY__NODE__NODE_COLLATE_CLAUSE:
        return figure_name(n->collate_clause->arg, strength);
    case PG_QUERY__NODE__NODE_COALESCE_EXPR:
        *strength = 2;
        return "coalesce";
    case PG_QUERY__NODE__NODE_CASE_EXPR:
        *strength = 1;
        return "case";
    default:
        return NULL;
    }
}

static const char *target_name(const PgQuery__ResTarget *rt)
{
    int strength;
    if (str_set(rt->name))
        return rt->name;
    const char *s = figure_name(rt->val, &strength);
    return s ? s : "?column?";
}

/* ---- aggregates ---- */

typedef struct agg_kind {
    const char *name;
    prs_sc_kind kind;
} agg_kind;

static const agg_kind combinable_aggs[] = {
    {"count", PRS_SC_COUNT},    {"sum", PRS_SC_SUM},         {"min", PRS_SC_MIN},
    {"max", PRS_SC_MAX},        {"avg", PRS_SC_AVG},         {"bool_and", PRS_SC_BOOL_AND},
    {"every", PRS_SC_BOOL_AND}, {"bool_or", PRS_SC_BOOL_OR},
};

/* PostgreSQL's built-in aggregates whose partial results cannot be combined exactly (or not
 * without a state the shards do not return). A user's aggregate is not recognised by name;
 * the classifier sends queries calling unknown functions to the primary as writes. */
static const char *const other_aggs[] = {
    "any_value",
    "array_agg",
    "bit_and",
    "bit_or",
    "bit_xor",
    "corr",
    "covar_pop",
    "covar_samp",
    "cume_dist",
    "dense_rank",
    "json_agg",
    "json_object_agg",
    "jsonb_agg",
    "jsonb_object_agg",
    "mode",
    "percent_rank",
    "percentile_cont",
    "percentile_disc",
    "range_agg",
    "range_intersect_agg",
    "rank",
    "regr_avgx",
    "regr_avgy",
    "regr_count",
    "regr_intercept",
    "regr_r2",
    "regr_slope",
    "regr_sxx",
    "regr_sxy",
    "regr_syy",
    "stddev",
    "stddev_pop",
    "stddev_samp",
    "string_agg",
    "var_pop",
    "var_samp",
    "variance",
    "xmlagg",
    /* PostgreSQL 16's, should a shard run it */
    "json_agg_strict",
    "json_object_agg_strict",
    "json_object_agg_unique",
    "json_object_agg_unique_strict",
    "jsonb_agg_strict",
    "jsonb_object_agg_strict",
    "jsonb_object_agg_unique",
    "jsonb_object_agg_unique_strict",
};

static const agg_kind *combinable_agg(const char *name)
{
    for (size_t i = 0; name && i < sizeof combinable_aggs / sizeof combinable_aggs[0]; i++)
        if (strcmp(combinable_aggs[i].name, name) == 0)
            return &combinable_aggs[i];
    return NULL;
}

static bool other_agg(const char *name)
{
    for (size_t i = 0; name && i < sizeof other_aggs / sizeof other_aggs[0]; i++)
        if (strcmp(other_aggs[i], name) == 0)
            return true;
    return false;
}

/* A call is an aggregate when it has an aggregate's syntax (*, DISTINCT, ORDER BY, FILTER,
 * WITHIN GROUP) or names one of PostgreSQL's aggregates. */
static bool is_agg_call(const PgQuery__FuncCall *f)
{
    if (f->over)
        return false;
    if (f->agg_star || f->agg_distinct || f->n_agg_order || f->agg_filter || f->agg_within_group)
        return true;
    const char *name = builtin_func_name(f);
    return combinable_agg(name) || other_agg(name);
}

/* The name a refusal shows: schema-qualified when the call was. */
static const char *func_display_name(const PgQuery__FuncCall *f, char *buf, size_t cap)
{
    const char *name = last_name(f->n_funcname, f->funcname);
    const char *schema = f->n_funcname == 2 ? node_str(f->funcname[0]) : NULL;
    int n = snprintf(buf, cap, "%s%s%s", schema ? schema : "", schema ? "." : "", name ? name : "?");
    return n >= 0 ? buf : "?";
}

static int refuse_agg(planner *p, const PgQuery__FuncCall *f)
{
    char name[128];
    return refuse(p, "pgshard: the aggregate %s cannot be combined across shards: add the tenant key",
                  func_display_name(f, name, sizeof name));
}

static int visit_find_agg(planner *p, const Node *n)
{
    (void)p;
    const PgQuery__FuncCall *f = as_func(n);
    return f && is_agg_call(f) ? SC_FOUND : SC_OK;
}

/* Whether an aggregate call is anywhere in n (the depth was checked by check_shape). */
static bool has_agg(planner *p, const Node *n)
{
    return walk(p, n, visit_find_agg) == SC_FOUND;
}

/* Refuses aggregates whose shard results cannot be combined, wherever they are. */
static int visit_check_agg(planner *p, const Node *n)
{
    const PgQuery__FuncCall *f = as_func(n);
    if (!f || !is_agg_call(f))
        return SC_OK;
    const char *name = builtin_func_name(f);
    if (!combinable_agg(name))
        return refuse_agg(p, f);
    if (f->n_agg_order || f->agg_within_group || f->func_variadic)
        return refuse(p,
                      "pgshard: the aggregate %s with ORDER BY or WITHIN GROUP cannot be combined across "
                      "shards: add the tenant key",
                      name);
    return SC_OK;
}

/* ---- the statement's shape ---- */

static int visit_check_shape(planner *p, const Node *n)
{
    switch (n->node_case) {
    case PG_QUERY__NODE__NODE_SUB_LINK:
    case PG_QUERY__NODE__NODE_RANGE_SUBSELECT:
    case PG_QUERY__NODE__NODE_COMMON_TABLE_EXPR:
    case PG_QUERY__NODE__NODE_WITH_CLAUSE:
    case PG_QUERY__NODE__NODE_SELECT_STMT:
        return refuse(p, SC_SUBQUERY_MSG);
    case PG_QUERY__NODE__NODE_WINDOW_DEF:
        return refuse(p, "pgshard: window functions cannot be computed across shards: add the tenant key");
    case PG_QUERY__NODE__NODE_FUNC_CALL:
        if (n->func_call->over)
            return refuse(p,
                          "pgshard: window functions cannot be computed across shards: add the tenant key");
        return SC_OK;
    case PG_QUERY__NODE__NODE_GROUPING_SET:
    case PG_QUERY__NODE__NODE_GROUPING_FUNC:
        return refuse(p, "pgshard: GROUPING SETS, ROLLUP and CUBE across shards are not supported: add the "
                         "tenant key");
    case PG_QUERY__NODE__NODE_RANGE_FUNCTION:
    case PG_QUERY__NODE__NODE_RANGE_TABLE_FUNC:
    case PG_QUERY__NODE__NODE_RANGE_TABLE_SAMPLE:
        return refuse(p, "pgshard: a cross-shard query can read only tables and joins of tables: add the "
                         "tenant key");
    default:
        return SC_OK;
    }
}

static bool distinct_on(const PgQuery__SelectStmt *s)
{
    for (size_t i = 0; i < s->n_distinct_clause; i++)
        if (s->distinct_clause[i] && s->distinct_clause[i]->node_case != PG_QUERY__NODE__NODE__NOT_SET)
            return true;
    return false;
}

static int check_shape(planner *p)
{
    const PgQuery__SelectStmt *s = p->s;
    if (s->op != PG_QUERY__SET_OPERATION__SETOP_NONE || s->with_clause || s->n_values_lists)
        return refuse(p, SC_SUBQUERY_MSG);
    if (s->into_clause)
        return refuse(p, "pgshard: SELECT INTO across shards is not supported");
    if (s->n_locking_clause)
        return refuse(p, "pgshard: SELECT ... FOR UPDATE/SHARE across shards is not supported: add the "
                         "tenant key");
    if (s->n_window_clause)
        return refuse(p, "pgshard: window functions cannot be computed across shards: add the tenant key");
    if (distinct_on(s))
        return refuse(p, "pgshard: DISTINCT ON across shards is not supported: add the tenant key");
    if (s->n_from_clause == 0)
        return refuse(p, "pgshard: a cross-shard query must read a table");
    if (s->limit_option == PG_QUERY__LIMIT_OPTION__LIMIT_OPTION_WITH_TIES)
        return refuse(p, "pgshard: FETCH FIRST ... WITH TIES across shards is not supported");
    return walk_msg(p, (const ProtobufCMessage *)s, visit_check_shape, 0);
}

/* ---- columns ---- */

static int col_add(planner *p, const Node *expr, prs_sc_kind kind, bool hidden, const char *role)
{
    if (p->ncols >= PRS_SC_MAX_COLS)
        return refuse(p, "pgshard: a cross-shard query may have at most %d columns after its rewrite",
                      PRS_SC_MAX_COLS);
    sc_col *c = &p->cols[p->ncols++];
    c->expr = expr;
    c->kind = (uint8_t)kind;
    c->hidden = hidden;
    c->role = role;
    c->aggregate = kind != PRS_SC_PLAIN && kind != PRS_SC_GROUP;
    return SC_OK;
}

static int col_add_avg_count(planner *p, unsigned avg)
{
    int rc = col_add(p, p->cols[avg].expr, PRS_SC_COUNT, true, "count");
    if (rc)
        return rc;
    p->cols[p->ncols - 1].avg_count = true;
    p->out->cols[avg].arg = (uint16_t)(p->ncols - 1);
    rc = col_add(p, p->cols[avg].expr, PRS_SC_PLAIN, true, "avg");
    if (rc)
        return rc;
    p->cols[p->ncols - 1].avg_self = true;
    p->cols[avg].avgf = (uint16_t)p->ncols;
    return SC_OK;
}

/* The column whose expression equals n, or -1. */
static int col_find_expr(const planner *p, const Node *n)
{
    for (unsigned i = 0; i < p->ncols; i++)
        if (!p->cols[i].avg_count && !p->cols[i].avg_self && !p->cols[i].is_coll && p->cols[i].expr &&
            node_equal(p->cols[i].expr, n))
            return (int)i;
    return -1;
}

/* A column's position is known only when no * comes before it. */
static bool col_position_known(const planner *p, unsigned i)
{
    for (unsigned k = 0; k <= i && k < p->nvisible; k++)
        if (is_star_ref(p->cols[k].expr))
            return false;
    return true;
}

/* ---- count(DISTINCT key) ---- */

typedef struct table_ref {
    const char *schema, *name, *alias;
} table_ref;

typedef struct table_list {
    unsigned n;
    table_ref t[16];
    bool overflow;
} table_list;

static void tables_collect(const Node *n, table_list *tl)
{
    if (!n)
        return;
    if (n->node_case == PG_QUERY__NODE__NODE_JOIN_EXPR) {
        tables_collect(n->join_expr->larg, tl);
        tables_collect(n->join_expr->rarg, tl);
        return;
    }
    if (n->node_case != PG_QUERY__NODE__NODE_RANGE_VAR)
        return;
    if (tl->n >= sizeof tl->t / sizeof tl->t[0]) {
        tl->overflow = true;
        return;
    }
    const PgQuery__RangeVar *rv = n->range_var;
    table_ref *t = &tl->t[tl->n++];
    t->schema = rv->schemaname && *rv->schemaname ? rv->schemaname : NULL;
    t->name = rv->relname;
    t->alias = rv->alias && str_set(rv->alias->aliasname) ? rv->alias->aliasname : NULL;
}

/* The table a column reference names: the only table when unqualified, else the one whose
 * alias (or, without one, whose name) is the qualifier. */
static const table_ref *table_of(const table_list *tl, const PgQuery__ColumnRef *c)
{
    if (c->n_fields == 1)
        return tl->n == 1 && !tl->overflow ? &tl->t[0] : NULL;
    const char *qual = node_str(c->fields[c->n_fields - 2]);
    const char *schema = c->n_fields == 3 ? node_str(c->fields[0]) : NULL;
    if (!qual || c->n_fields > 3)
        return NULL;
    for (unsigned i = 0; i < tl->n; i++) {
        const table_ref *t = &tl->t[i];
        bool named = t->alias ? !schema && strcmp(t->alias, qual) == 0 : strcmp(t->name, qual) == 0;
        if (named && (!schema || (t->schema && strcmp(t->schema, schema) == 0)))
            return t;
    }
    return NULL;
}

static bool is_shard_key(const planner *p, const Node *arg)
{
    if (!arg || arg->node_case != PG_QUERY__NODE__NODE_COLUMN_REF || !p->ctx || !p->ctx->is_key)
        return false;
    const PgQuery__ColumnRef *c = arg->column_ref;
    const char *column = last_name(c->n_fields, c->fields);
    table_list tl = {0};
    for (size_t i = 0; i < p->s->n_from_clause; i++)
        tables_collect(p->s->from_clause[i], &tl);
    const table_ref *t = table_of(&tl, c);
    return column && t && p->ctx->is_key(p->ctx->arg, t->schema, t->name, column) == 1;
}

/* The merge kind of an aggregate call, or a refusal. */
static int agg_classify(planner *p, const PgQuery__FuncCall *f, prs_sc_kind *kind)
{
    const agg_kind *ak = combinable_agg(builtin_func_name(f));
    *kind = PRS_SC_PLAIN;
    if (!ak)
        return refuse_agg(p, f);
    *kind = ak->kind;
    if (!f->agg_distinct)
        return SC_OK;
    /* Duplicates do not change a min, a max or a boolean aggregate. */
    if (ak->kind == PRS_SC_MIN || ak->kind == PRS_SC_MAX || ak->kind == PRS_SC_BOOL_AND ||
        ak->kind == PRS_SC_BOOL_OR)
        return SC_OK;
    if (ak->kind == PRS_SC_COUNT && f->n_args == 1 && is_shard_key(p, f->args[0]))
        return SC_OK;
    if (ak->kind == PRS_SC_COUNT)
        return refuse(p, "pgshard: count(DISTINCT ...) is exact across shards only on the shard key: add the "
                         "tenant key");
    return refuse(p, "pgshard: %s(DISTINCT ...) cannot be combined across shards: add the tenant key",
                  ak->name);
}

/* Adds n (an aggregate call) as a hidden column unless an equal one exists; its index. */
static int col_agg_hidden(planner *p, const Node *n, const char *role, int *idx)
{
    *idx = col_find_expr(p, n);
    if (*idx >= 0)
        return SC_OK;
    prs_sc_kind kind = PRS_SC_PLAIN;
    int rc = agg_classify(p, as_func(n), &kind);
    if (rc == SC_OK)
        rc = col_add(p, n, kind, true, role);
    if (rc)
        return rc;
    *idx = (int)p->ncols - 1;
    if (kind == PRS_SC_AVG)
        return col_add_avg_count(p, (unsigned)*idx);
    return SC_OK;
}

/* ---- LIMIT / OFFSET ---- */

/* A LIMIT or OFFSET value: -1 for none (absent, NULL, ALL), else the constant; *param the
 * number of a bare parameter ($n), whose value only the Bind gives, else 0. */
static int limit_value(planner *p, const Node *n, const char *what, int64_t *v, uint16_t *param)
{
    *v = -1;
    *param = 0;
    if (!n)
        return SC_OK;
    if (n->node_case == PG_QUERY__NODE__NODE_PARAM_REF && n->param_ref->number > 0 &&
        n->param_ref->number <= UINT16_MAX) {
        *param = (uint16_t)n->param_ref->number;
        return SC_OK;
    }
    if (n->node_case != PG_QUERY__NODE__NODE_A_CONST)
        return refuse(p,
                      "pgshard: a cross-shard %s must be a constant or a bare parameter ($n), not an "
                      "expression",
                      what);
    const PgQuery__AConst *c = n->a_const;
    if (c->isnull)
        return SC_OK;
    if (c->val_case == PG_QUERY__A__CONST__VAL_IVAL) {
        *v = c->ival->ival;
    } else if (c->val_case == PG_QUERY__A__CONST__VAL_FVAL && c->fval->fval) {
        char *end;
        errno = 0;
        long long x = strtoll(c->fval->fval, &end, 10);
        if (errno || *end || end == c->fval->fval)
            return refuse(p, "pgshard: a cross-shard %s must be an integer constant", what);
        *v = x;
    } else {
        return refuse(p, "pgshard: a cross-shard %s must be an integer constant", what);
    }
    if (*v < 0)
        return refuse_state(p, strcmp(what, "LIMIT") == 0 ? "2201W" : "2201X",
                            "pgshard: %s must not be negative", what);
    return SC_OK;
}

static int visit_count_param(planner *p, const Node *n)
{
    if (n->node_case == PG_QUERY__NODE__NODE_PARAM_REF && n->param_ref->number == (int32_t)p->find_param)
        p->param_uses++;
    return SC_OK;
}

/* The value bound to a LIMIT or OFFSET parameter is read from the Bind and replaced in the
 * shards' Bind: that is exact only when nothing else in the statement reads it. */
static int limit_param_alone(planner *p, uint16_t param, const char *what)
{
    if (!param)
        return SC_OK;
    p->find_param = param;
    p->param_uses = 0;
    int rc = walk_msg(p, (const ProtobufCMessage *)p->s, visit_count_param, 0);
    if (rc == SC_OK && p->param_uses != 1)
        rc = refuse(p,
                    "pgshard: the parameter $%u of a cross-shard %s is replaced in the shards' Bind, so it "
                    "may not be used elsewhere in the statement: bind its value twice",
                    (unsigned)param, what);
    return rc;
}

static int plan_limit(planner *p)
{
    int64_t lim = -1, off = -1;
    uint16_t lim_param = 0, off_param = 0;
    int rc = limit_value(p, p->s->limit_count, "LIMIT", &lim, &lim_param);
    if (rc == SC_OK)
        rc = limit_value(p, p->s->limit_offset, "OFFSET", &off, &off_param);
    if (rc == SC_OK)
        rc = limit_param_alone(p, lim_param, "LIMIT");
    if (rc == SC_OK)
        rc = limit_param_alone(p, off_param, "OFFSET");
    if (rc)
        return rc;
    p->out->limit = lim;
    p->out->offset = off < 0 ? 0 : off;
    p->out->limit_param = lim_param;
    p->out->offset_param = off_param;
    return SC_OK;
}

/* ---- ORDER BY ---- */

static const PgQuery__SortBy *as_sortby(const Node *n)
{
    return (n && n->node_case == PG_QUERY__NODE__NODE_SORT_BY) ? n->sort_by : NULL;
}

/* An integer constant, as ORDER BY 2 and GROUP BY 2 write positions: 1 with *pos set. */
static bool int_const(const Node *n, int64_t *pos)
{
    if (!n || n->node_case != PG_QUERY__NODE__NODE_A_CONST || n->a_const->isnull ||
        n->a_const->val_case != PG_QUERY__A__CONST__VAL_IVAL)
        return false;
    *pos = n->a_const->ival->ival;
    return true;
}

static const char *bare_name(const Node *n)
{
    if (!n || n->node_case != PG_QUERY__NODE__NODE_COLUMN_REF || n->column_ref->n_fields != 1)
        return NULL;
    return node_str(n->column_ref->fields[0]);
}

static const PgQuery__ResTarget *visible_target(const planner *p, unsigned i)
{
    return as_target(p->s->target_list[i]);
}

/* The visible column an ORDER BY item names, as PostgreSQL resolves it (SQL92 first: a
 * position, then an output column's name; then an equal expression): its index, -1 when
 * none, or -2 after a refusal. */
static int sort_resolve(planner *p, const Node *e)
{
    int64_t pos;
    if (int_const(e, &pos)) {
        if (pos >= 1 && (p->star || pos <= (int64_t)p->nvisible))
            return (int)pos - 1 < PRS_SC_MAX_COLS ? (int)pos - 1 : -1;
        refuse_state(p, "42P10", "pgshard: ORDER BY position %lld is not in select list", (long long)pos);
        return -2;
    }
    if (e && e->node_case == PG_QUERY__NODE__NODE_A_CONST) {
        refuse_state(p, "42601", "pgshard: non-integer constant in ORDER BY");
        return -2;
    }
    const char *name = bare_name(e);
    for (unsigned i = 0; name && i < p->nvisible; i++) {
        if (!is_star_ref(p->cols[i].expr) && strcmp(target_name(visible_target(p, i)), name) == 0)
            return col_position_known(p, i) ? (int)i : -1;
    }
    int i = col_find_expr(p, e);
    if (i >= 0 && (unsigned)i < p->nvisible && !col_position_known(p, (unsigned)i))
        return -1; /* a hidden column's place is known (after * under it) */
    return i;
}

static int sort_add(planner *p, int col, const PgQuery__SortBy *sb, bool hidden)
{
    if (p->out->nsort >= PRS_SC_MAX_SORT)
        return refuse(p, "pgshard: a cross-shard ORDER BY may have at most %d items", PRS_SC_MAX_SORT);
    p->sort_hidden[p->out->nsort] = hidden;
    prs_sc_sort *s = &p->out->sort[p->out->nsort++];
    s->col = (uint16_t)col;
    s->desc = sb->sortby_dir == PG_QUERY__SORT_BY_DIR__SORTBY_DESC;
    s->nulls_first = sb->sortby_nulls == PG_QUERY__SORT_BY_NULLS__SORTBY_NULLS_FIRST ||
                     (sb->sortby_nulls != PG_QUERY__SORT_BY_NULLS__SORTBY_NULLS_LAST && s->desc);
    return SC_OK;
}

/* The expression a hidden sort column computes for an ORDER BY item: the select list's
 * expression of the output column it names (one after a *, whose position is not known),
 * else the item itself. Under * a bare name may also be a column * expands to, which is the
 * input column of that name: the same value (when it is not, the name is ambiguous and the
 * shards fail as the server would, 42702, for they keep the ORDER BY). */
static const Node *sort_hidden_expr(const planner *p, const Node *e)
{
    const char *name = bare_name(e);
    for (unsigned i = 0; name && i < p->nvisible; i++)
        if (!is_star_ref(p->cols[i].expr) && strcmp(target_name(visible_target(p, i)), name) == 0)
            return p->cols[i].expr;
    return e;
}

/* Rows that are not grouped: an ORDER BY expression not selected is added as a hidden
 * column, which the shards sort by as well. Under * the hidden columns follow the ones *
 * expands to, which the merge counts from the end of the RowDescription. */
static int sort_plain(planner *p, const PgQuery__SortBy *sb)
{
    int64_t pos;
    bool positional = int_const(sb->node, &pos);
    int col = sort_resolve(p, sb->node);
    if (col == -2)
        return SC_REFUSED;
    if (col == -1) {
        int rc = col_add(p, sort_hidden_expr(p, sb->node), PRS_SC_PLAIN, true, "sort");
        if (rc)
            return rc;
        col = (int)p->ncols - 1;
    }
    return sort_add(p, col, sb, !positional && (unsigned)col >= p->nvisible);
}

static int sort_grouped(planner *p, const PgQuery__SortBy *sb, bool distinct)
{
    int col = sort_resolve(p, sb->node);
    if (col == -2)
        return SC_REFUSED;
    if (col == -1 && distinct)
        return refuse_state(p, "42P10",
                            "pgshard: for SELECT DISTINCT, ORDER BY expressions must appear in select list");
    if (col == -1) {
        const PgQuery__FuncCall *f = as_func(sb->node);
        if (!f || !is_agg_call(f))
            return refuse(p,
                          "pgshard: a cross-shard ORDER BY with GROUP BY or aggregates must name a selected "
                          "column, an aggregate or a GROUP BY expression");
        int rc = col_agg_hidden(p, sb->node, "sort", &col);
        if (rc)
            return rc;
    }
    return sort_add(p, col, sb, (unsigned)col >= p->nvisible);
}

static int plan_sort(planner *p, bool grouped, bool distinct)
{
    for (size_t i = 0; i < p->s->n_sort_clause; i++) {
        const PgQuery__SortBy *sb = as_sortby(p->s->sort_clause[i]);
        if (!sb)
            return refuse(p, "pgshard: this ORDER BY is not supported across shards");
        if (sb->sortby_dir == PG_QUERY__SORT_BY_DIR__SORTBY_USING || sb->n_use_op)
            return refuse(p, "pgshard: ORDER BY ... USING across shards is not supported");
        if (!grouped && has_agg(p, sb->node))
            return refuse(
                p, "pgshard: an aggregate in ORDER BY needs GROUP BY or aggregates in the select list");
        int rc = grouped ? sort_grouped(p, sb, distinct) : sort_plain(p, sb);
        if (rc)
            return rc;
    }
    return SC_OK;
}

/* ---- targets ---- */

static int targets_add(planner *p)
{
    for (size_t i = 0; i < p->s->n_target_list; i++) {
        const PgQuery__ResTarget *rt = as_target(p->s->target_list[i]);
        if (!rt || !rt->val || rt->n_indirection)
            return refuse(p, "pgshard: this select list is not supported across shards");
        if (is_star_ref(rt->val))
            p->star = true;
        int rc = col_add(p, rt->val, PRS_SC_PLAIN, false, NULL);
        if (rc)
            return rc;
    }
    p->nvisible = p->ncols;
    return SC_OK;
}

static bool is_constant(const Node *n)
{
    if (n && n->node_case == PG_QUERY__NODE__NODE_TYPE_CAST)
        n = n->type_cast->arg;
    return n && n->node_case == PG_QUERY__NODE__NODE_A_CONST;
}

/* Aggregate targets get their kind; the others wait for GROUP BY to vouch for them. */
static int targets_classify_grouped(planner *p)
{
    for (unsigned i = 0; i < p->nvisible; i++) {
        sc_col *c = &p->cols[i];
        if (is_star_ref(c->expr))
            return refuse(p, "pgshard: SELECT * with GROUP BY or aggregates across shards is not supported: "
                             "list the columns");
        const PgQuery__FuncCall *f = as_func(c->expr);
        if (f && is_agg_call(f)) {
            prs_sc_kind kind = PRS_SC_PLAIN;
            int rc = agg_classify(p, f, &kind);
            if (rc)
                return rc;
            c->kind = (uint8_t)kind;
            c->aggregate = true;
            continue;
        }
        if (has_agg(p, c->expr))
            return refuse(p,
                          "pgshard: an expression over an aggregate (such as sum(a)/count(a), count(*)+1 or "
                          "coalesce(sum(x),0)) across shards is not supported yet: select the aggregates");
        c->kind = PRS_SC_GROUP;
        /* A constant is the same in every group on every shard: grouping by it too changes
         * nothing, so `SELECT 'total', count(*)` needs no GROUP BY entry. */
        c->group_checked = is_constant(c->expr);
    }
    return SC_OK;
}

static int visit_find_name(planner *p, const Node *n)
{
    if (n->node_case != PG_QUERY__NODE__NODE_COLUMN_REF)
        return SC_OK;
    const char *name = last_name(n->column_ref->n_fields, n->column_ref->fields);
    return name && strcmp(name, p->find_name) == 0 ? SC_FOUND : SC_OK;
}

/* Whether a column reference named `name` appears in the statement anywhere but as a bare
 * GROUP BY item or in ORDER BY (which looks at output names first): then an input column of
 * that name exists, or the shards fail on the reference as the server would. */
static bool name_referenced(planner *p, const char *name)
{
    const PgQuery__SelectStmt *s = p->s;
    bool found = false;
    p->find_name = name;
    for (size_t i = 0; !found && i < s->n_target_list; i++)
        found = walk(p, s->target_list[i], visit_find_name) == SC_FOUND;
    for (size_t i = 0; !found && i < s->n_from_clause; i++)
        found = walk(p, s->from_clause[i], visit_find_name) == SC_FOUND;
    for (size_t i = 0; !found && i < s->n_group_clause; i++)
        found = !bare_name(s->group_clause[i]) && walk(p, s->group_clause[i], visit_find_name) == SC_FOUND;
    found = found || walk(p, s->where_clause, visit_find_name) == SC_FOUND ||
            walk(p, s->having_clause, visit_find_name) == SC_FOUND;
    return found;
}

/* The visible column a GROUP BY item names by position or output name, -1 when it names
 * none (it is an expression), -2 after a refusal. PostgreSQL takes a bare GROUP BY name for
 * an input column first and only then for an output column's name (an alias, or the name
 * the server gives an unnamed target), and two output columns of that name with different
 * expressions are ambiguous. The planner does not know the tables' columns, so an output
 * name is only taken when the shards confirm that no input column has it: *probe is set and
 * the shard query gets a probe (see probe_add), on which a shard fails when the name is an
 * input column too. A name referenced elsewhere in the statement is an input column. */
static int group_resolve(planner *p, const Node *g, bool *probe)
{
    int64_t pos;
    *probe = false;
    if (int_const(g, &pos)) {
        if (pos >= 1 && pos <= (int64_t)p->nvisible)
            return (int)pos - 1;
        refuse_state(p, "42P10", "pgshard: GROUP BY position %lld is not in select list", (long long)pos);
        return -2;
    }
    const char *name = bare_name(g);
    int found = -1;
    bool ambiguous = false;
    for (unsigned i = 0; name && i < p->nvisible; i++) {
        const PgQuery__ResTarget *rt = visible_target(p, i);
        if (is_star_ref(rt->val) || strcmp(target_name(rt), name) != 0)
            continue;
        if (node_equal(rt->val, g))
            return -1; /* the input column itself is selected */
        if (found >= 0 && !node_equal(p->cols[found].expr, rt->val))
            ambiguous = true;
        if (found < 0)
            found = (int)i;
    }
    if (found < 0 || name_referenced(p, name))
        return -1;
    if (ambiguous) {
        refuse_state(p, "42702", "pgshard: GROUP BY \"%s\" is ambiguous", name);
        return -2;
    }
    *probe = true;
    return found;
}

/* Remembers that GROUP BY item k names output column col (see group_resolve). */
static int probe_note(planner *p, size_t k, const char *name, int col)
{
    if (k >= PRS_SC_MAX_COLS)
        return refuse(p, "pgshard: too many GROUP BY items naming output columns");
    p->probe_pos[k] = (uint16_t)(col + 1);
    for (unsigned i = 0; i < p->nprobes; i++)
        if (strcmp(p->probe_names[i], name) == 0)
            return SC_OK;
    if (p->nprobes >= sizeof p->probe_names / sizeof p->probe_names[0])
        return refuse(p, "pgshard: too many GROUP BY items naming output columns");
    p->probe_names[p->nprobes++] = name;
    return SC_OK;
}

static int plan_group_by(planner *p)
{
    for (size_t i = 0; i < p->s->n_group_clause; i++) {
        const Node *g = p->s->group_clause[i];
        bool probe = false;
        int col = group_resolve(p, g, &probe);
        if (col == -2)
            return SC_REFUSED;
        if (probe) {
            int rc = probe_note(p, i, bare_name(g), col);
            if (rc)
                return rc;
        }
        if (col == -1 && has_agg(p, g))
            return refuse_state(p, "42803", "pgshard: aggregate functions are not allowed in GROUP BY");
        if (col == -1)
            col = col_find_expr(p, g);
        if (col == -1) {
            int rc = col_add(p, g, PRS_SC_GROUP, true, "group");
            if (rc)
                return rc;
            col = (int)p->ncols - 1;
        }
        if (p->cols[col].aggregate)
            return refuse_state(p, "42803", "pgshard: aggregate functions are not allowed in GROUP BY");
        p->cols[col].group_checked = true;
    }
    return SC_OK;
}

/* Every non-aggregate target must be one of the GROUP BY expressions: then its value is the
 * same for the whole group, on every shard. */
static int check_group_targets(planner *p)
{
    for (unsigned i = 0; i < p->nvisible; i++) {
        sc_col *c = &p->cols[i];
        if (c->aggregate || c->group_checked)
            continue;
        for (unsigned k = 0; k < p->ncols && !c->group_checked; k++)
            c->group_checked = p->cols[k].group_checked && node_equal(p->cols[k].expr, c->expr);
        if (!c->group_checked)
            return refuse(
                p, "pgshard: with GROUP BY or aggregates, each selected expression must be an aggregate "
                   "or a GROUP BY expression to be merged across shards");
    }
    for (unsigned i = 0; i < p->nvisible; i++)
        if (p->cols[i].kind == PRS_SC_AVG) {
            int rc = col_add_avg_count(p, i);
            if (rc)
                return rc;
        }
    return SC_OK;
}

/* ---- HAVING ---- */

static int emit(planner *p, prs_sc_op op, unsigned arg)
{
    if (p->out->ninsns >= PRS_SC_MAX_INSNS)
        return refuse(p, "pgshard: this HAVING is too long to evaluate across shards");
    p->out->having[p->out->ninsns].op = (uint8_t)op;
    p->out->having[p->out->ninsns].arg = (uint16_t)arg;
    p->out->ninsns++;
    return SC_OK;
}

static int str_add(planner *p, const char *s, unsigned *off)
{
    size_t n = strlen(s) + 1;
    prs_scatter *o = p->out;
    if (o->str_len + n > UINT16_MAX)
        return refuse(p, "pgshard: the constants of this HAVING are too long");
    if (o->str_len + n > p->str_cap) {
        size_t cap = (o->str_len + n) * 2;
        char *grown = realloc(o->str, cap);
        if (!grown)
            return SC_ENOMEM;
        o->str = grown;
        p->str_cap = cap;
    }
    memcpy(o->str + o->str_len, s, n);
    *off = (unsigned)o->str_len;
    o->str_len += n;
    return SC_OK;
}

#define HAVING_REFUSAL                                                                                       \
    "pgshard: this HAVING cannot be evaluated across shards: only AND, OR, NOT, comparisons of aggregates "  \
    "or GROUP BY expressions with constants, IS [NOT] NULL and boolean aggregates or GROUP BY expressions "  \
    "are"

/* A constant operand: its text as the server would parse it. */
static int having_const(planner *p, const PgQuery__AConst *c)
{
    if (c->isnull)
        return emit(p, PRS_SC_OP_NULL, 0);
    char num[16];
    const char *text = NULL;
    switch (c->val_case) {
    case PG_QUERY__A__CONST__VAL_IVAL:
        snprintf(num, sizeof num, "%d", (int)c->ival->ival);
        text = num;
        break;
    case PG_QUERY__A__CONST__VAL_FVAL:
        text = c->fval->fval;
        break;
    case PG_QUERY__A__CONST__VAL_SVAL:
        text = c->sval->sval;
        break;
    case PG_QUERY__A__CONST__VAL_BOOLVAL:
        text = c->boolval->boolval ? "true" : "false";
        break;
    default:
        break;
    }
    if (!text)
        return refuse(p, HAVING_REFUSAL);
    unsigned off = 0;
    int rc = str_add(p, text, &off);
    return rc ? rc : emit(p, PRS_SC_OP_CONST, off);
}

/* A column operand: a merged column holding the same expression (an aggregate missing from
 * the select list becomes a hidden column). */
static int having_col(planner *p, const Node *n)
{
    int col = col_find_expr(p, n);
    if (col < 0) {
        const PgQuery__FuncCall *f = as_func(n);
        if (!f || !is_agg_call(f)) {
            if (has_agg(p, n))
                return refuse(p, "pgshard: an expression over an aggregate in HAVING across shards is not "
                                 "supported yet");
            return refuse(p, HAVING_REFUSAL);
        }
        int rc = col_agg_hidden(p, n, "having", &col);
        if (rc)
            return rc;
    }
    if (!p->cols[col].aggregate && !p->cols[col].group_checked)
        return refuse(p, HAVING_REFUSAL);
    return emit(p, PRS_SC_OP_COL, (unsigned)col);
}

static bool is_const(const Node *n)
{
    return n && n->node_case == PG_QUERY__NODE__NODE_A_CONST;
}

static int having_operand(planner *p, const Node *n)
{
    return is_const(n) ? having_const(p, n->a_const) : having_col(p, n);
}

static const struct {
    const char *name;
    prs_sc_op op;
} having_ops[] = {
    {"=", PRS_SC_OP_EQ},  {"<>", PRS_SC_OP_NE}, {"!=", PRS_SC_OP_NE}, {"<", PRS_SC_OP_LT},
    {"<=", PRS_SC_OP_LE}, {">", PRS_SC_OP_GT},  {">=", PRS_SC_OP_GE},
};

static int having_compare(planner *p, const PgQuery__AExpr *e)
{
    const char *name = e->n_name == 1 ? node_str(e->name[0]) : NULL;
    if (e->kind != PG_QUERY__A__EXPR__KIND__AEXPR_OP || !name || !e->lexpr || !e->rexpr)
        return refuse(p, HAVING_REFUSAL);
    if (is_const(e->lexpr) && is_const(e->rexpr))
        return refuse(p, HAVING_REFUSAL);
    for (size_t i = 0; i < sizeof having_ops / sizeof having_ops[0]; i++) {
        if (strcmp(having_ops[i].name, name) != 0)
            continue;
        int rc = having_operand(p, e->lexpr);
        if (rc == SC_OK)
            rc = having_operand(p, e->rexpr);
        return rc ? rc : emit(p, having_ops[i].op, 0);
    }
    return refuse(p, HAVING_REFUSAL);
}

static int having_compile(planner *p, const Node *n);

static int having_bool(planner *p, const PgQuery__BoolExpr *b)
{
    if (b->boolop == PG_QUERY__BOOL_EXPR_TYPE__NOT_EXPR) {
        int rc = b->n_args == 1 ? having_compile(p, b->args[0]) : refuse(p, HAVING_REFUSAL);
        return rc ? rc : emit(p, PRS_SC_OP_NOT, 0);
    }
    prs_sc_op op = b->boolop == PG_QUERY__BOOL_EXPR_TYPE__AND_EXPR ? PRS_SC_OP_AND : PRS_SC_OP_OR;
    for (size_t i = 0; i < b->n_args; i++) {
        int rc = having_compile(p, b->args[i]);
        if (rc == SC_OK && i > 0)
            rc = emit(p, op, 0);
        if (rc)
            return rc;
    }
    return b->n_args ? SC_OK : refuse(p, HAVING_REFUSAL);
}

static int having_compile(planner *p, const Node *n)
{
    if (!n)
        return refuse(p, HAVING_REFUSAL);
    switch (n->node_case) {
    case PG_QUERY__NODE__NODE_BOOL_EXPR:
        return having_bool(p, n->bool_expr);
    case PG_QUERY__NODE__NODE_A_EXPR:
        return having_compare(p, n->a_expr);
    case PG_QUERY__NODE__NODE_NULL_TEST: {
        int rc = is_const(n->null_test->arg) ? refuse(p, HAVING_REFUSAL) : having_col(p, n->null_test->arg);
        if (rc)
            return rc;
        return emit(p,
                    n->null_test->nulltesttype == PG_QUERY__NULL_TEST_TYPE__IS_NULL ? PRS_SC_OP_IS_NULL
                                                                                    : PRS_SC_OP_IS_NOT_NULL,
                    0);
    }
    case PG_QUERY__NODE__NODE_A_CONST:
        return refuse(p, HAVING_REFUSAL);
    default:
        /* A bare operand is a condition of its own (HAVING bool_and(b), HAVING b with b
         * grouped): the merge checks that its type is boolean, as the server would. */
        return having_col(p, n);
    }
}

/* ---- planning ---- */

static bool stmt_has_agg(planner *p)
{
    const PgQuery__SelectStmt *s = p->s;
    for (size_t i = 0; i < s->n_target_list; i++)
        if (has_agg(p, s->target_list[i]))
            return true;
    for (size_t i = 0; i < s->n_sort_clause; i++)
        if (has_agg(p, s->sort_clause[i]))
            return true;
    return s->having_clause != NULL;
}

static int check_aggs(planner *p)
{
    const PgQuery__SelectStmt *s = p->s;
    int rc = SC_OK;
    for (size_t i = 0; rc == SC_OK && i < s->n_target_list; i++)
        rc = walk(p, s->target_list[i], visit_check_agg);
    for (size_t i = 0; rc == SC_OK && i < s->n_sort_clause; i++)
        rc = walk(p, s->sort_clause[i], visit_check_agg);
    if (rc == SC_OK)
        rc = walk(p, s->having_clause, visit_check_agg);
    return rc;
}

static int plan_grouped(planner *p)
{
    bool distinct = p->s->n_distinct_clause > 0;
    int rc = targets_classify_grouped(p);
    if (rc == SC_OK)
        rc = plan_group_by(p);
    if (rc == SC_OK)
        rc = check_group_targets(p);
    if (rc == SC_OK && p->s->having_clause)
        rc = having_compile(p, p->s->having_clause);
    if (rc == SC_OK)
        rc = plan_sort(p, true, distinct);
    p->out->grouped = true;
    p->out->distinct = distinct;
    return rc;
}

static int plan_distinct(planner *p)
{
    if (p->star)
        return refuse(p, "pgshard: SELECT DISTINCT * across shards is not supported: list the columns");
    for (unsigned i = 0; i < p->nvisible; i++) {
        p->cols[i].kind = PRS_SC_GROUP;
        p->cols[i].group_checked = true;
    }
    p->out->grouped = true;
    return plan_sort(p, true, true);
}

static int plan_plain(planner *p)
{
    int rc = plan_sort(p, false, false);
    p->out->shards_sorted = p->out->nsort > 0;
    return rc;
}

/* ---- rewriting the tree ---- */

static int func_rename(Node *n, const char *name)
{
    PgQuery__FuncCall *f = n->func_call;
    PgQuery__String *s = f->funcname[f->n_funcname - 1]->string;
    char *copy = strdup(name);
    if (!copy)
        return SC_ENOMEM;
    free(s->sval);
    s->sval = copy;
    return SC_OK;
}

#define COLL_TEMPLATE "SELECT pg_catalog.pg_collation_for(CASE WHEN false THEN NULL::pg_catalog.text END)"

/* pg_catalog.pg_collation_for(CASE WHEN false THEN (expr)::pg_catalog.text END): the name of
 * the collation the server derives for expr ("default" for the database's, NULL when
 * indeterminate). The cast keeps a text value's collation and gives any other type the
 * default, where pg_collation_for itself would fail; the CASE, folded away by the server's
 * planner, keeps expr from being evaluated a second time (a volatile one included). */
static Node *coll_node_new(const Node *expr)
{
    PgQuery__ParseResult *tree = NULL;
    char err[64];
    if (prs_tree_parse(COLL_TEMPLATE, sizeof COLL_TEMPLATE - 1, &tree, err, sizeof err) != 0)
        return NULL;
    PgQuery__ResTarget *rt = tree->stmts[0]->stmt->select_stmt->target_list[0]->res_target;
    Node *call = rt->val;
    PgQuery__TypeCast *cast = call->func_call->args[0]->case_expr->args[0]->case_when->result->type_cast;
    Node *copy = node_copy(expr);
    if (copy) {
        node_free(cast->arg);
        cast->arg = copy;
        rt->val = NULL;
    }
    pg_query__parse_result__free_unpacked(tree, NULL);
    return copy ? call : NULL;
}

static int hidden_append(planner *p, unsigned i)
{
    const sc_col *c = &p->cols[i];
    char name[48];
    int n = snprintf(name, sizeof name, "pgshard_%s_%u", c->role, i + 1);
    if (n < 0 || (size_t)n >= sizeof name)
        return refuse(p, "pgshard: internal error naming a hidden column");
    Node *val = c->is_coll ? coll_node_new(c->expr) : node_copy(c->expr);
    if (!val)
        return SC_ENOMEM;
    int rc = SC_OK;
    if (c->avg_count)
        rc = func_rename(val, "count");
    else if (c->kind == PRS_SC_AVG)
        rc = func_rename(val, "sum");
    if (rc == SC_OK)
        rc = target_append(p->s, val, name);
    if (rc)
        node_free(val);
    return rc;
}

/* avg(x) runs on the shards as sum(x), under the name PostgreSQL gives the avg. */
static int visible_avg_rewrite(planner *p, unsigned i)
{
    PgQuery__ResTarget *rt = p->s->target_list[i]->res_target;
    if (!str_set(rt->name)) {
        /* The old value is protobuf-c's shared default "", which is not freed. */
        char *name = strdup("avg");
        if (!name)
            return SC_ENOMEM;
        rt->name = name;
    }
    return func_rename(rt->val, "sum");
}

/* Keeps the LIMIT and OFFSET parameters where they are (the server types them from their
 * place; the caller rebinds them) and drops the constants. */
static void shard_limit_params(planner *p)
{
    PgQuery__SelectStmt *s = p->s;
    if (!p->out->offset_param) {
        node_free(s->limit_offset);
        s->limit_offset = NULL;
    }
    if (!p->out->limit_param) {
        node_free(s->limit_count);
        s->limit_count = NULL;
        s->limit_option = PG_QUERY__LIMIT_OPTION__LIMIT_OPTION_DEFAULT;
    }
}

/* The shards' LIMIT when they return plain or sorted rows: LIMIT + OFFSET rows and no
 * OFFSET, as the merge applies both. With parameters, see prs_scatter's limit_param: a
 * constant OFFSET under LIMIT $n is added to $n's value by the caller. */
static int set_shard_limit(planner *p)
{
    PgQuery__SelectStmt *s = p->s;
    if (p->out->limit_param || p->out->offset_param) {
        shard_limit_params(p);
        return SC_OK;
    }
    node_free(s->limit_offset);
    s->limit_offset = NULL;
    node_free(s->limit_count);
    s->limit_count = NULL;
    s->limit_option = PG_QUERY__LIMIT_OPTION__LIMIT_OPTION_DEFAULT;
    int64_t lim = p->out->limit, off = p->out->offset;
    /* Past INT64_MAX the shards can as well return everything. */
    if (lim < 0 || lim > INT64_MAX - off)
        return SC_OK;
    s->limit_count = const_int_new(lim + off);
    s->limit_option = PG_QUERY__LIMIT_OPTION__LIMIT_OPTION_COUNT;
    return s->limit_count ? SC_OK : SC_ENOMEM;
}

static void ident_quote(char *buf, size_t cap, size_t *len, const char *name)
{
    if (*len < cap)
        buf[(*len)++] = '"';
    for (const char *c = name; *c && *len + 2 < cap; c++) {
        if (*c == '"')
            buf[(*len)++] = '"';
        buf[(*len)++] = *c;
    }
    if (*len < cap)
        buf[(*len)++] = '"';
}

/* The probe behind a GROUP BY item that names an output column: on the shards that item
 * becomes the column's position, the FROM list gets `(VALUES (NULL)) pgshard_probe(name)`
 * and the GROUP BY the bare name once more. Without an input column of that name the name
 * is the probe's constant (grouping by it changes nothing), as PostgreSQL would have taken
 * the output column; with one, the shard fails (column reference is ambiguous) where
 * PostgreSQL would have grouped by the input column, which the merge cannot know. */
static int probe_add(planner *p)
{
    PgQuery__SelectStmt *s = p->s;
    char sql[1200];
    size_t len = 0;
    len += (size_t)snprintf(sql, sizeof sql, "SELECT 1 FROM (VALUES (NULL");
    for (unsigned i = 1; i < p->nprobes; i++)
        len += (size_t)snprintf(sql + len, sizeof sql - len, ", NULL");
    len += (size_t)snprintf(sql + len, sizeof sql - len, ")) pgshard_probe(");
    for (unsigned i = 0; i < p->nprobes; i++) {
        if (i)
            sql[len++] = ',';
        ident_quote(sql, sizeof sql - 256, &len, p->probe_names[i]);
    }
    len += (size_t)snprintf(sql + len, sizeof sql - len, ") GROUP BY ");
    for (unsigned i = 0; i < p->nprobes; i++) {
        if (i)
            sql[len++] = ',';
        ident_quote(sql, sizeof sql - 8, &len, p->probe_names[i]);
    }
    PgQuery__ParseResult *tree = NULL;
    char err[64];
    if (prs_tree_parse(sql, len, &tree, err, sizeof err) != 0)
        return refuse(p, "pgshard: internal error writing a GROUP BY probe");
    PgQuery__SelectStmt *t = tree->stmts[0]->stmt->select_stmt;
    Node **from = realloc(s->from_clause, (s->n_from_clause + 1) * sizeof(Node *));
    if (from)
        s->from_clause = from;
    Node **group = realloc(s->group_clause, (s->n_group_clause + t->n_group_clause) * sizeof(Node *));
    if (group)
        s->group_clause = group;
    if (!from || !group) {
        pg_query__parse_result__free_unpacked(tree, NULL);
        return SC_ENOMEM;
    }
    s->from_clause[s->n_from_clause++] = t->from_clause[0];
    t->from_clause[0] = NULL;
    for (size_t i = 0; i < t->n_group_clause; i++) {
        s->group_clause[s->n_group_clause++] = t->group_clause[i];
        t->group_clause[i] = NULL;
    }
    pg_query__parse_result__free_unpacked(tree, NULL);
    return SC_OK;
}

static int probe_rewrite(planner *p)
{
    PgQuery__SelectStmt *s = p->s;
    if (!p->nprobes)
        return SC_OK;
    size_t n = s->n_group_clause;
    int rc = probe_add(p); /* first: the names are the items' strings */
    if (rc)
        return rc;
    for (size_t k = 0; k < n && k < PRS_SC_MAX_COLS; k++) {
        if (!p->probe_pos[k])
            continue;
        Node *pos = const_int_new(p->probe_pos[k]);
        if (!pos)
            return SC_ENOMEM;
        node_free(s->group_clause[k]);
        s->group_clause[k] = pos;
    }
    return SC_OK;
}

/* The shard query: hidden columns appended, avg split, and whatever the merge does after
 * combining (HAVING, and for groups ORDER BY and LIMIT/OFFSET) taken out. */
static int rewrite(planner *p)
{
    PgQuery__SelectStmt *s = p->s;
    int rc0 = probe_rewrite(p);
    if (rc0)
        return rc0;
    for (unsigned i = p->nvisible; i < p->ncols; i++) {
        int rc = hidden_append(p, i);
        if (rc)
            return rc;
    }
    for (unsigned i = 0; i < p->nvisible; i++) {
        int rc = p->cols[i].kind == PRS_SC_AVG ? visible_avg_rewrite(p, i) : SC_OK;
        if (rc)
            return rc;
    }
    node_free(s->having_clause);
    s->having_clause = NULL;
    /* the shards' DISTINCT would compare partial aggregates: the merge does it on whole ones */
    if (p->out->distinct)
        nodes_free(&s->n_distinct_clause, &s->distinct_clause);
    if (!p->out->grouped)
        return set_shard_limit(p);
    nodes_free(&s->n_sort_clause, &s->sort_clause);
    /* Groups are limited after the merge: the shards return all of theirs (a parameter
     * stays, bound to NULL). */
    shard_limit_params(p);
    return SC_OK;
}

static int deparse(planner *p, PgQuery__ParseResult *tree)
{
    char err[PRS_SC_MSG_MAX - 64];
    int r = prs_tree_deparse(tree, &p->out->sql, err, sizeof err);
    return r > 0
               ? refuse_state(p, "XX000", "pgshard: the cross-shard query could not be written back: %s", err)
           : r < 0 ? SC_ENOMEM
                   : SC_OK;
}

/* SELECT * with hidden columns: they are described apart from the columns * expands to,
 * indexed from the first of them. */
static void plan_fill_star(planner *p)
{
    prs_scatter *o = p->out;
    unsigned v = p->nvisible;
    o->star_hidden = (uint16_t)(p->ncols - v);
    for (unsigned i = v; i < p->ncols; i++) {
        prs_sc_col *c = &o->cols[i - v];
        c->kind = p->cols[i].kind;
        c->hidden = true;
        c->coll = p->cols[i].coll ? (uint16_t)(p->cols[i].coll - v) : 0;
    }
    for (unsigned k = 0; k < o->nsort; k++)
        if (p->sort_hidden[k])
            o->sort[k].col = (uint16_t)(PRS_SC_SORT_HIDDEN | (o->sort[k].col - v));
}

static void plan_fill(planner *p)
{
    prs_scatter *o = p->out;
    /* SELECT *: ncols = nvisible = 0, all columns * gives plain and visible. */
    if (p->star) {
        o->ncols = o->nvisible = 0;
        if (p->ncols > p->nvisible)
            plan_fill_star(p);
        return;
    }
    o->ncols = (uint16_t)p->ncols;
    o->nvisible = (uint16_t)p->nvisible;
    for (unsigned i = 0; i < p->ncols; i++) {
        o->cols[i].kind = p->cols[i].kind;
        o->cols[i].hidden = p->cols[i].hidden;
        o->cols[i].coll = p->cols[i].coll;
        o->cols[i].avgf = p->cols[i].avgf;
    }
}

/* Whether the merge orders or compares column i's values: then, when they are text, it
 * must know their collation. */
static bool col_compared(const planner *p, unsigned i)
{
    const prs_scatter *o = p->out;
    for (unsigned k = 0; k < o->nsort; k++)
        if (o->sort[k].col == i && (!p->star || p->sort_hidden[k]))
            return true;
    if (!o->grouped)
        return false;
    uint8_t kind = p->cols[i].kind;
    if (kind == PRS_SC_GROUP || kind == PRS_SC_MIN || kind == PRS_SC_MAX)
        return true;
    for (unsigned k = 0; k < o->ninsns; k++)
        if (o->having[k].op == PRS_SC_OP_COL && o->having[k].arg == i)
            return true;
    return false;
}

/* The merge compares text as the server does only under the collation the server used for
 * that very expression, which is a column's own (`COLLATE "C"` in the table, a domain's),
 * an explicit COLLATE, or the database's. The planner cannot see it; each shard can say:
 * every compared column gets a hidden pg_collation_for() of its expression, read by the
 * merge from each shard's first row. Counts, sums and averages are never text. Under * only
 * the hidden columns are known: the merge refuses to order text by a position there. */
static int plan_collations(planner *p)
{
    unsigned n = p->ncols;
    for (unsigned i = p->star ? p->nvisible : 0; i < n; i++) {
        uint8_t kind = p->cols[i].kind;
        if (p->cols[i].avg_count || p->cols[i].avg_self || kind == PRS_SC_COUNT || kind == PRS_SC_SUM ||
            kind == PRS_SC_AVG || kind == PRS_SC_BOOL_AND || kind == PRS_SC_BOOL_OR || !col_compared(p, i))
            continue;
        int rc = col_add(p, p->cols[i].expr, PRS_SC_PLAIN, true, "coll");
        if (rc)
            return rc;
        p->cols[p->ncols - 1].is_coll = true;
        p->cols[i].coll = (uint16_t)p->ncols;
    }
    return SC_OK;
}

static int plan_stmt(planner *p, PgQuery__ParseResult *tree)
{
    int rc = check_shape(p);
    if (rc == SC_OK)
        rc = check_aggs(p);
    if (rc == SC_OK)
        rc = plan_limit(p);
    if (rc == SC_OK)
        rc = targets_add(p);
    if (rc)
        return rc;
    if (p->s->n_group_clause || stmt_has_agg(p))
        rc = plan_grouped(p);
    else if (p->s->n_distinct_clause)
        rc = plan_distinct(p);
    else
        rc = plan_plain(p);
    if (rc == SC_OK)
        rc = plan_collations(p);
    if (rc)
        return rc;
    plan_fill(p);
    rc = rewrite(p);
    return rc ? rc : deparse(p, tree);
}

static int parse(planner *p, const char *sql, size_t len, PgQuery__ParseResult **tree)
{
    char err[PRS_SC_MSG_MAX - 16];
    int r = prs_tree_parse(sql, len, tree, err, sizeof err);
    return r > 0 ? refuse_state(p, "42601", "pgshard: %s", err) : r < 0 ? SC_ENOMEM : SC_OK;
}

static void out_init(prs_scatter *out)
{
    memset(out, 0, sizeof *out);
    out->limit = -1;
}

int prs_scatter_plan(const char *sql, size_t len, const prs_scatter_ctx *ctx, prs_scatter *out)
{
    if (!out)
        return SC_ENOMEM;
    out_init(out);
    planner *p = calloc(1, sizeof *p);
    if (!p)
        return SC_ENOMEM;
    p->ctx = ctx;
    p->out = out;
    PgQuery__ParseResult *tree = NULL;
    const char *text = sql ? sql : "";
    int rc = !sql && len ? refuse(p, "pgshard: a cross-shard read must be exactly one SELECT statement")
                         : parse(p, text, len, &tree);
    if (rc == SC_OK && tree) {
        const Node *stmt = tree->n_stmts == 1 && tree->stmts[0] ? tree->stmts[0]->stmt : NULL;
        if (stmt && stmt->node_case == PG_QUERY__NODE__NODE_SELECT_STMT) {
            p->s = stmt->select_stmt;
            rc = plan_stmt(p, tree);
        } else {
            rc = refuse(p, "pgshard: a cross-shard read must be exactly one SELECT statement");
        }
    }
    if (tree)
        pg_query__parse_result__free_unpacked(tree, NULL);
    free(p);
    if (rc != SC_OK) {
        /* Keep the refusal's sqlstate and message; drop everything else. */
        char sqlstate[6], msg[PRS_SC_MSG_MAX];
        memcpy(sqlstate, out->sqlstate, sizeof sqlstate);
        memcpy(msg, out->msg, sizeof msg);
        prs_scatter_free(out);
        out_init(out);
        if (rc == SC_ENOMEM) {
            memcpy(out->sqlstate, "53200", sizeof out->sqlstate);
            snprintf(out->msg, sizeof out->msg, "pgshard: out of memory planning a cross-shard query");
        } else {
            memcpy(out->sqlstate, sqlstate, sizeof sqlstate);
            memcpy(out->msg, msg, sizeof msg);
        }
    }
    return rc;
}

void prs_scatter_free(prs_scatter *p)
{
    if (!p)
        return;
    free(p->sql);
    p->sql = NULL;
    free(p->str);
    p->str = NULL;
    p->str_len = 0;
}

/* ---- description ---- */

typedef struct desc_buf {
    char *buf;
    size_t cap, len;
} desc_buf;

static void desc_add(desc_buf *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void desc_add(desc_buf *d, const char *fmt, ...)
{
    if (d->len + 1 >= d->cap)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(d->buf + d->len, d->cap - d->len, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    d->len = (size_t)n >= d->cap - d->len ? d->cap - 1 : d->len + (size_t)n;
}

static const char *const kind_words[] = {
    [PRS_SC_PLAIN] = "plain",       [PRS_SC_GROUP] = "group",     [PRS_SC_COUNT] = "count",
    [PRS_SC_SUM] = "sum",           [PRS_SC_MIN] = "min",         [PRS_SC_MAX] = "max",
    [PRS_SC_BOOL_AND] = "bool_and", [PRS_SC_BOOL_OR] = "bool_or", [PRS_SC_AVG] = "avg",
};

static void describe_groups(const prs_scatter *p, desc_buf *d)
{
    bool first = true;
    for (unsigned i = 0; i < p->ncols; i++) {
        if (p->cols[i].kind != PRS_SC_GROUP)
            continue;
        desc_add(d, "%s%u", first ? "group by " : ", ", i + 1);
        first = false;
    }
    if (first)
        desc_add(d, "one group");
    for (unsigned i = 0; i < p->ncols; i++) {
        unsigned k = p->cols[i].kind;
        if (k == PRS_SC_GROUP || k == PRS_SC_PLAIN || k >= sizeof kind_words / sizeof kind_words[0])
            continue;
        bool avg_count = false;
        for (unsigned j = 0; j < p->ncols; j++)
            avg_count |= p->cols[j].kind == PRS_SC_AVG && p->cols[j].arg == i;
        if (avg_count)
            continue;
        desc_add(d, "; %s %u", kind_words[k], i + 1);
        if (k == PRS_SC_AVG)
            desc_add(d, " (count %u)", p->cols[i].arg + 1u);
    }
    if (p->ninsns)
        desc_add(d, "; having");
    if (p->distinct)
        desc_add(d, "; distinct");
}

static void describe_sort(const prs_scatter *p, desc_buf *d, const char *lead)
{
    for (unsigned i = 0; i < p->nsort; i++) {
        const prs_sc_sort *s = &p->sort[i];
        if (s->col & PRS_SC_SORT_HIDDEN)
            desc_add(d, "%slast %u", i ? ", " : lead, (s->col & ~PRS_SC_SORT_HIDDEN) + 1u);
        else
            desc_add(d, "%s%u", i ? ", " : lead, s->col + 1u);
        if (s->desc)
            desc_add(d, " desc");
        if (s->nulls_first != s->desc)
            desc_add(d, s->nulls_first ? " nulls first" : " nulls last");
    }
}

void prs_scatter_describe(const prs_scatter *p, char *buf, size_t cap)
{
    if (!buf || cap == 0)
        return;
    desc_buf d = {buf, cap, strlen(buf)};
    if (d.len >= cap)
        return;
    desc_add(&d, "merge: ");
    if (p->grouped) {
        describe_groups(p, &d);
        describe_sort(p, &d, "; sort ");
    } else if (p->shards_sorted) {
        describe_sort(p, &d, "sorted by ");
    } else {
        desc_add(&d, "concat");
    }
    if (p->offset_param)
        desc_add(&d, "; offset $%u", (unsigned)p->offset_param);
    else if (p->offset)
        desc_add(&d, "; offset %lld", (long long)p->offset);
    if (p->limit_param)
        desc_add(&d, "; limit $%u", (unsigned)p->limit_param);
    else if (p->limit >= 0)
        desc_add(&d, "; limit %lld", (long long)p->limit);
    if (p->ncols > p->nvisible)
        desc_add(&d, "; hide %u-%u", p->nvisible + 1u, (unsigned)p->ncols);
    if (p->star_hidden)
        desc_add(&d, "; hide the last %u", (unsigned)p->star_hidden);
}

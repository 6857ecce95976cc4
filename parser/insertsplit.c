/* prs_insert_split: one multi-row INSERT ... VALUES rewritten, through libpg_query's protobuf
 * tree and deparser, into one INSERT per shard holding only that shard's rows, with dense
 * parameter numbers and the map back to the client's. Refuses anything else. No I/O, no
 * knowledge of which row goes where: the caller says. */
#include <pg_query.h>
#include <pg_query/pg_query.pb-c.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "parser/insertsplit.h"
#include "parser/tree.h"

typedef PgQuery__Node Node;

#define IS_OK 0
#define IS_REFUSED 1
#define IS_ENOMEM (-1)

/* Deeper trees are refused rather than walked without bound. */
#define IS_MAX_DEPTH 1000
/* The protocol counts parameters in an int16: no statement can be bound with more. */
#define IS_MAX_PARAM 65535

#define IS_NOT_SUPPORTED "0A000"
#define IS_SHAPE_MSG "pgshard: a multi-shard INSERT must be one INSERT ... VALUES statement without WITH"

/* One $n of the statement: where it is and the number the client gave it. The tree's number
 * is overwritten for each part, so the original is kept here. */
typedef struct is_ref {
    PgQuery__ParamRef *ref; /* borrowed from the tree */
    int32_t orig;
} is_ref;

typedef struct splitter {
    prs_insert_split *out;
    PgQuery__SelectStmt *values; /* borrowed: the VALUES inside the unpacked tree */
    const int *shard_of_row;     /* borrowed: the caller's */
    uint32_t nrows;
    is_ref *refs; /* owned: every $n, those outside VALUES first, then row by row */
    size_t nrefs, refs_cap;
    size_t *row_refs; /* owned, nrows + 1 entries: row r's refs are
                         refs[row_refs[r] .. row_refs[r + 1]); those before row_refs[0]
                         are outside VALUES */
    int32_t max_param;
    uint16_t *newnum; /* owned: scratch, per part, original number -> new number (0: unused) */
} splitter;

/* ---- results ---- */

static int refuse_state(splitter *sp, const char *sqlstate, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int refuse_state(splitter *sp, const char *sqlstate, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(sp->out->msg, sizeof sp->out->msg, fmt, ap);
    va_end(ap);
    if (n < 0)
        snprintf(sp->out->msg, sizeof sp->out->msg, "%s", IS_SHAPE_MSG);
    memcpy(sp->out->sqlstate, sqlstate, sizeof sp->out->sqlstate);
    return IS_REFUSED;
}

#define refuse(sp, ...) refuse_state((sp), IS_NOT_SUPPORTED, __VA_ARGS__)

/* ---- parsing and checking the statement ---- */

static int parse(splitter *sp, const char *sql, size_t len, PgQuery__ParseResult **tree)
{
    *tree = NULL;
    /* The parser reads up to a NUL: text after an embedded one would be silently dropped. */
    if ((!sql && len) || (len && memchr(sql, '\0', len)))
        return refuse_state(sp, "42601", "pgshard: the statement text is not valid");
    char err[PRS_IS_MSG_MAX - 16];
    int r = prs_tree_parse(sql, len, tree, err, sizeof err);
    return r > 0 ? refuse_state(sp, "42601", "pgshard: %s", err) : r < 0 ? IS_ENOMEM : IS_OK;
}

/* A VALUES list with nothing else: ORDER BY, LIMIT or locking would apply to all the rows at
 * once, which per-shard statements cannot reproduce. The grammar gives VALUES none of the
 * other clauses, but a tree is checked, not trusted. */
static bool values_only(const PgQuery__SelectStmt *s)
{
    return s->n_values_lists > 0 && s->op <= PG_QUERY__SET_OPERATION__SETOP_NONE && !s->larg && !s->rarg &&
           !s->with_clause && !s->into_clause && !s->n_distinct_clause && !s->n_target_list &&
           !s->n_from_clause && !s->where_clause && !s->n_group_clause && !s->having_clause &&
           !s->n_window_clause && !s->n_sort_clause && !s->limit_offset && !s->limit_count &&
           !s->n_locking_clause;
}

static size_t row_width(const Node *row)
{
    return row && row->node_case == PG_QUERY__NODE__NODE_LIST && row->list ? row->list->n_items : 0;
}

/* PostgreSQL rejects the whole statement when its rows differ in length; split, the rows of
 * one length could land on one shard and those of another elsewhere, and every part would
 * succeed. */
static int check_widths(splitter *sp, const PgQuery__SelectStmt *s)
{
    size_t width = row_width(s->values_lists[0]);
    for (size_t i = 0; i < s->n_values_lists; i++) {
        if (!s->values_lists[i] || s->values_lists[i]->node_case != PG_QUERY__NODE__NODE_LIST)
            return refuse(sp, "%s", IS_SHAPE_MSG);
        if (row_width(s->values_lists[i]) != width)
            return refuse_state(sp, "42601", "pgshard: VALUES lists must all be the same length");
    }
    return IS_OK;
}

static int check_values(splitter *sp, const Node *sel)
{
    if (!sel)
        return refuse(sp, "pgshard: INSERT ... DEFAULT VALUES cannot be split across shards");
    if (sel->node_case != PG_QUERY__NODE__NODE_SELECT_STMT || !sel->select_stmt)
        return refuse(sp, "%s", IS_SHAPE_MSG);
    const PgQuery__SelectStmt *s = sel->select_stmt;
    if (s->n_values_lists == 0)
        return refuse(sp, "pgshard: INSERT ... SELECT cannot be split across shards");
    if (!values_only(s))
        return refuse(sp, "pgshard: a multi-shard INSERT ... VALUES cannot have WITH, ORDER BY, LIMIT or "
                          "locking clauses");
    return check_widths(sp, s);
}

/* The one INSERT ... VALUES in the tree, or a refusal. */
static int check_shape(splitter *sp, const PgQuery__ParseResult *tree, PgQuery__InsertStmt **ins)
{
    const Node *stmt = tree->n_stmts == 1 && tree->stmts[0] ? tree->stmts[0]->stmt : NULL;
    if (!stmt || stmt->node_case != PG_QUERY__NODE__NODE_INSERT_STMT || !stmt->insert_stmt)
        return refuse(sp, "%s", IS_SHAPE_MSG);
    *ins = stmt->insert_stmt;
    if ((*ins)->with_clause)
        return refuse(sp, "pgshard: WITH ... INSERT cannot be split across shards");
    int rc = check_values(sp, (*ins)->select_stmt);
    if (rc)
        return rc;
    sp->values = (*ins)->select_stmt->select_stmt;
    if (sp->values->n_values_lists != sp->nrows)
        return refuse_state(sp, "XX000",
                            "pgshard: the INSERT has %zu VALUES rows, not the %u the proxy counted",
                            sp->values->n_values_lists, (unsigned)sp->nrows);
    return IS_OK;
}

/* ---- parameters ---- */

static bool field_is_active(const ProtobufCFieldDescriptor *f, const ProtobufCMessage *m)
{
    if (!(f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF))
        return true;
    const uint32_t *oneof_case = (const uint32_t *)((const char *)m + f->quantifier_offset);
    return *oneof_case == f->id;
}

static int ref_add(splitter *sp, PgQuery__ParamRef *r)
{
    if (r->number < 1 || r->number > IS_MAX_PARAM)
        return refuse_state(sp, "42P02", "pgshard: there is no parameter $%d", (int)r->number);
    if (sp->nrefs == sp->refs_cap) {
        size_t cap = sp->refs_cap ? sp->refs_cap * 2 : 16;
        is_ref *grown = realloc(sp->refs, cap * sizeof *grown);
        if (!grown)
            return IS_ENOMEM;
        sp->refs = grown;
        sp->refs_cap = cap;
    }
    sp->refs[sp->nrefs++] = (is_ref){r, r->number};
    if (r->number > sp->max_param)
        sp->max_param = r->number;
    return IS_OK;
}

static int collect_msg(splitter *sp, ProtobufCMessage *m, unsigned depth);

static int collect_field(splitter *sp, ProtobufCMessage *m, const ProtobufCFieldDescriptor *f, unsigned depth)
{
    char *at = (char *)m + f->offset;
    if (f->label != PROTOBUF_C_LABEL_REPEATED)
        return collect_msg(sp, *(ProtobufCMessage **)at, depth + 1);
    size_t n = *(const size_t *)((const char *)m + f->quantifier_offset);
    ProtobufCMessage **v = *(ProtobufCMessage ***)at;
    for (size_t k = 0; k < n; k++) {
        int rc = collect_msg(sp, v[k], depth + 1);
        if (rc)
            return rc;
    }
    return IS_OK;
}

/* Records every ParamRef under m, in tree order. Only the active member of a oneof is
 * followed: the others alias it. */
static int collect_msg(splitter *sp, ProtobufCMessage *m, unsigned depth)
{
    if (!m)
        return IS_OK;
    if (depth > IS_MAX_DEPTH)
        return refuse_state(sp, "54001", "pgshard: the INSERT is too deeply nested to split across shards");
    if (m->descriptor == &pg_query__param_ref__descriptor)
        return ref_add(sp, (PgQuery__ParamRef *)m);
    const ProtobufCMessageDescriptor *d = m->descriptor;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        if (f->type != PROTOBUF_C_TYPE_MESSAGE || !field_is_active(f, m))
            continue;
        int rc = collect_field(sp, m, f, depth);
        if (rc)
            return rc;
    }
    return IS_OK;
}

/* Parameters outside VALUES (ON CONFLICT, RETURNING, ...) first, then each row's. The
 * VALUES are detached while the rest is walked so that they are only seen row by row. */
static int collect_params(splitter *sp, PgQuery__InsertStmt *ins)
{
    Node *sel = ins->select_stmt;
    ins->select_stmt = NULL;
    int rc = collect_msg(sp, (ProtobufCMessage *)ins, 0);
    ins->select_stmt = sel;
    if (rc)
        return rc;
    sp->row_refs = malloc(((size_t)sp->nrows + 1) * sizeof *sp->row_refs);
    if (!sp->row_refs)
        return IS_ENOMEM;
    for (uint32_t r = 0; r < sp->nrows; r++) {
        sp->row_refs[r] = sp->nrefs;
        /* Depth 3: the statement, its SelectStmt node and the SelectStmt lie above a row. */
        rc = collect_msg(sp, (ProtobufCMessage *)sp->values->values_lists[r], 3);
        if (rc)
            return rc;
    }
    sp->row_refs[sp->nrows] = sp->nrefs;
    if (sp->max_param == 0)
        return IS_OK;
    sp->newnum = malloc(((size_t)sp->max_param + 1) * sizeof *sp->newnum);
    return sp->newnum ? IS_OK : IS_ENOMEM;
}

static void mark_refs(splitter *sp, size_t from, size_t to)
{
    for (size_t i = from; i < to; i++)
        sp->newnum[sp->refs[i].orig] = 1;
}

static void renumber_refs(splitter *sp, size_t from, size_t to)
{
    for (size_t i = from; i < to; i++)
        sp->refs[i].ref->number = sp->newnum[sp->refs[i].orig];
}

/* Calls fn on the refs a part's statement holds: those outside VALUES and its rows'. */
static void part_refs(splitter *sp, const prs_insert_part *part, void (*fn)(splitter *, size_t, size_t))
{
    fn(sp, 0, sp->row_refs[0]);
    for (uint32_t i = 0; i < part->nrows; i++)
        fn(sp, sp->row_refs[part->rows[i]], sp->row_refs[part->rows[i] + 1]);
}

/* Gives the parameters the part uses the numbers 1..n in the order of their original
 * numbers, in the tree and in the part's map. */
static int number_params(splitter *sp, prs_insert_part *part)
{
    if (sp->max_param == 0)
        return IS_OK;
    memset(sp->newnum, 0, ((size_t)sp->max_param + 1) * sizeof *sp->newnum);
    part_refs(sp, part, mark_refs);
    uint16_t n = 0;
    for (int32_t p = 1; p <= sp->max_param; p++)
        if (sp->newnum[p])
            sp->newnum[p] = ++n;
    if (n == 0)
        return IS_OK;
    part->params = malloc(n * sizeof *part->params);
    if (!part->params)
        return IS_ENOMEM;
    part->nparams = n;
    for (int32_t p = 1; p <= sp->max_param; p++)
        if (sp->newnum[p])
            part->params[sp->newnum[p] - 1] = (uint16_t)p;
    part_refs(sp, part, renumber_refs);
    return IS_OK;
}

/* ---- grouping rows by shard ---- */

typedef struct is_row {
    int shard;
    uint32_t row;
} is_row;

static int row_cmp(const void *a, const void *b)
{
    const is_row *x = a, *y = b;
    if (x->shard != y->shard)
        return x->shard < y->shard ? -1 : 1;
    return x->row < y->row ? -1 : x->row > y->row;
}

static int parts_fill(prs_insert_split *out, const is_row *sorted, uint32_t nrows)
{
    uint32_t start = 0;
    for (int k = 0; k < out->nparts; k++) {
        uint32_t end = start;
        while (end < nrows && sorted[end].shard == sorted[start].shard)
            end++;
        prs_insert_part *part = &out->parts[k];
        part->shard = sorted[start].shard;
        part->rows = malloc((size_t)(end - start) * sizeof *part->rows);
        if (!part->rows)
            return IS_ENOMEM;
        part->nrows = end - start;
        for (uint32_t i = start; i < end; i++)
            part->rows[i - start] = sorted[i].row;
        start = end;
    }
    return IS_OK;
}

/* One part per shard that has a row, in ascending shard order, each with its rows in their
 * original order. */
static int group_rows(splitter *sp)
{
    is_row *sorted = malloc((size_t)sp->nrows * sizeof *sorted);
    if (!sorted)
        return IS_ENOMEM;
    for (uint32_t i = 0; i < sp->nrows; i++)
        sorted[i] = (is_row){sp->shard_of_row[i], i};
    qsort(sorted, sp->nrows, sizeof *sorted, row_cmp);
    int nparts = 1;
    for (uint32_t i = 1; i < sp->nrows; i++)
        nparts += sorted[i].shard != sorted[i - 1].shard;
    int rc = IS_ENOMEM;
    sp->out->parts = calloc((size_t)nparts, sizeof *sp->out->parts);
    if (sp->out->parts) {
        sp->out->nparts = nparts;
        rc = parts_fill(sp->out, sorted, sp->nrows);
    }
    free(sorted);
    return rc;
}

/* ---- writing each part ---- */

/* The tree, with whatever VALUES rows it holds now, written back as SQL. */
static int deparse(splitter *sp, const PgQuery__ParseResult *tree, char **sql)
{
    char err[PRS_IS_MSG_MAX - 64];
    int r = prs_tree_deparse(tree, sql, err, sizeof err);
    return r > 0
               ? refuse_state(sp, "XX000", "pgshard: the per-shard INSERT could not be written back: %s", err)
           : r < 0 ? IS_ENOMEM
                   : IS_OK;
}

/* The part's rows are put in place of all the rows for the time of the deparse: the tree
 * then borrows them, and gets its own list back before anything else reads it. */
static int write_part(splitter *sp, const PgQuery__ParseResult *tree, prs_insert_part *part)
{
    int rc = number_params(sp, part);
    if (rc)
        return rc;
    Node **rows = malloc((size_t)part->nrows * sizeof(Node *));
    if (!rows)
        return IS_ENOMEM;
    for (uint32_t i = 0; i < part->nrows; i++)
        rows[i] = sp->values->values_lists[part->rows[i]];
    Node **all = sp->values->values_lists;
    size_t nall = sp->values->n_values_lists;
    sp->values->values_lists = rows;
    sp->values->n_values_lists = part->nrows;
    rc = deparse(sp, tree, &part->sql);
    sp->values->values_lists = all;
    sp->values->n_values_lists = nall;
    free(rows);
    return rc;
}

static bool conflict_may_skip(const PgQuery__OnConflictClause *oc)
{
    if (!oc)
        return false;
    return oc->action == PG_QUERY__ON_CONFLICT_ACTION__ONCONFLICT_NOTHING ||
           (oc->action == PG_QUERY__ON_CONFLICT_ACTION__ONCONFLICT_UPDATE && oc->where_clause);
}

static int split(splitter *sp, PgQuery__ParseResult *tree)
{
    PgQuery__InsertStmt *ins = NULL;
    int rc = check_shape(sp, tree, &ins);
    if (rc || !ins) /* check_shape sets ins when it returns IS_OK */
        return rc ? rc : IS_REFUSED;
    sp->out->returning = ins->n_returning_list > 0;
    sp->out->may_skip_rows = conflict_may_skip(ins->on_conflict_clause);
    rc = collect_params(sp, ins);
    if (rc)
        return rc;
    rc = group_rows(sp);
    for (int k = 0; rc == IS_OK && k < sp->out->nparts; k++)
        rc = write_part(sp, tree, &sp->out->parts[k]);
    return rc;
}

/* ---- entry points ---- */

/* Keeps a refusal's reason, drops everything else; out of memory gets its own. */
static void out_fail(prs_insert_split *out, int rc)
{
    char sqlstate[6], msg[PRS_IS_MSG_MAX];
    memcpy(sqlstate, out->sqlstate, sizeof sqlstate);
    memcpy(msg, out->msg, sizeof msg);
    prs_insert_split_free(out);
    memset(out, 0, sizeof *out);
    if (rc == IS_ENOMEM) {
        memcpy(out->sqlstate, "53200", sizeof out->sqlstate);
        snprintf(out->msg, sizeof out->msg, "pgshard: out of memory splitting a multi-shard INSERT");
        return;
    }
    memcpy(out->sqlstate, sqlstate, sizeof sqlstate);
    memcpy(out->msg, msg, sizeof msg);
}

int prs_insert_split_make(const char *sql, size_t len, const int *shard_of_row, uint32_t nrows,
                          prs_insert_split *out)
{
    if (!out)
        return IS_ENOMEM;
    memset(out, 0, sizeof *out);
    splitter sp = {.out = out, .shard_of_row = shard_of_row, .nrows = nrows};
    PgQuery__ParseResult *tree = NULL;
    int rc = IS_REFUSED;
    if (nrows == 0 || !shard_of_row)
        refuse_state(&sp, "XX000", "pgshard: the proxy gave no shard for the INSERT's VALUES rows");
    else
        rc = parse(&sp, sql, len, &tree);
    if (rc == IS_OK && tree)
        rc = split(&sp, tree);
    if (tree)
        pg_query__parse_result__free_unpacked(tree, NULL);
    free(sp.refs);
    free(sp.row_refs);
    free(sp.newnum);
    if (rc != IS_OK)
        out_fail(out, rc);
    return rc;
}

void prs_insert_split_free(prs_insert_split *s)
{
    if (!s)
        return;
    for (int k = 0; s->parts && k < s->nparts; k++) {
        free(s->parts[k].sql);
        free(s->parts[k].rows);
        free(s->parts[k].params);
    }
    free(s->parts);
    s->parts = NULL;
    s->nparts = 0;
}

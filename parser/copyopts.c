/* prs_copy_options: a COPY statement's parse tree (libpg_query, protobuf) turned into a
 * prs_copy_opts, checked the way PostgreSQL 15's ProcessCopyOptions checks it, with the
 * same messages and SQLSTATEs. It does not know the table's columns or read COPY data. */
#include <pg_query.h>
#include <pg_query/pg_query.pb-c.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/sqlstate.h"
#include "parser/copyopts.h"
#include "parser/tree.h"

typedef PgQuery__Node Node;
typedef PgQuery__DefElem DefElem;

/* What the walk over the option list has seen; the strings point into the unpacked tree
 * and are copied into the prs_copy_opts only once everything is checked. */
typedef struct copy_parse {
    prs_copy_opts *o;
    bool format_seen, freeze_seen, header_seen, force_quote_seen;
    bool force_not_null_seen, force_null_seen;
    const char *delim; /* NULL until given */
    const char *null_str;
    const char *quote;
    const char *escape;
    const char *encoding;
    const PgQuery__List *force_quote, *force_not_null, *force_null;
    char numbuf[32]; /* an Integer argument printed, for option_string */
} copy_parse;

/* Fills the error fields and returns 1, the "invalid statement" result. */
static int copy_fail(prs_copy_opts *o, const char *sqlstate, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int copy_fail(prs_copy_opts *o, const char *sqlstate, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(o->message, sizeof o->message, fmt, ap);
    va_end(ap);
    if (n < 0)
        o->message[0] = '\0';
    memcpy(o->sqlstate, sqlstate, 6);
    return 1;
}

static void names_free(prs_copy_names *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->names[i]);
    free(l->names);
    l->names = NULL;
    l->n = 0;
}

void prs_copy_opts_free(prs_copy_opts *o)
{
    if (!o)
        return;
    free(o->schema);
    free(o->relname);
    free(o->query);
    free(o->null_str);
    free(o->encoding);
    names_free(&o->columns);
    names_free(&o->force_quote);
    names_free(&o->force_not_null);
    names_free(&o->force_null);
    memset(o, 0, sizeof *o);
}

bool prs_copy_names_has(const prs_copy_names *l, const char *name)
{
    for (size_t i = 0; l && name && i < l->n; i++)
        if (strcmp(l->names[i], name) == 0)
            return true;
    return false;
}

/* Copies a list of String nodes (column names). Returns 0, 1 (not a list of names; the
 * error is filled), or -1. */
static int names_copy(prs_copy_opts *o, Node **items, size_t n, prs_copy_names *out, const char *what)
{
    if (n == 0)
        return 0;
    out->names = calloc(n, sizeof *out->names);
    if (!out->names)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (!items[i] || items[i]->node_case != PG_QUERY__NODE__NODE_STRING)
            return copy_fail(o, PGS_SQLSTATE_INVALID_PARAMETER_VALUE,
                             "argument to option \"%s\" must be a list of column names", what);
        out->names[i] = strdup(items[i]->string->sval);
        if (!out->names[i])
            return -1;
        out->n = i + 1;
    }
    return 0;
}

/* PostgreSQL's defGetString: the option's argument as text, or NULL when it has none. */
static const char *option_string(copy_parse *p, const DefElem *d)
{
    const Node *a = d->arg;
    if (!a)
        return NULL;
    switch (a->node_case) {
    case PG_QUERY__NODE__NODE_STRING:
        return a->string->sval;
    case PG_QUERY__NODE__NODE_INTEGER:
        snprintf(p->numbuf, sizeof p->numbuf, "%d", (int)a->integer->ival);
        return p->numbuf;
    case PG_QUERY__NODE__NODE_FLOAT:
        return a->float_->fval;
    case PG_QUERY__NODE__NODE_BOOLEAN:
        return a->boolean->boolval ? "true" : "false";
    case PG_QUERY__NODE__NODE_A_STAR:
        return "*";
    default:
        return "";
    }
}

/* The option's argument as text, or the error PostgreSQL gives for a missing one. */
static int option_required(copy_parse *p, const DefElem *d, const char **out)
{
    *out = option_string(p, d);
    if (!*out)
        return copy_fail(p->o, PGS_SQLSTATE_SYNTAX_ERROR, "%s requires a parameter", d->defname);
    return 0;
}

static int conflicting(copy_parse *p)
{
    return copy_fail(p->o, PGS_SQLSTATE_SYNTAX_ERROR, "conflicting or redundant options");
}

/* PostgreSQL's defGetBoolean and defGetCopyHeaderChoice in one: 0/1 integers and
 * true/false/on/off; "match" only where allow_match says so. Returns the choice, or -1. */
static int option_bool(copy_parse *p, const DefElem *d, bool allow_match)
{
    if (!d->arg)
        return PRS_COPY_HEADER_TRUE;
    if (d->arg->node_case == PG_QUERY__NODE__NODE_INTEGER) {
        int v = d->arg->integer->ival;
        if (v == 0 || v == 1)
            return v;
    } else {
        const char *s = option_string(p, d);
        if (strcasecmp(s, "true") == 0 || strcasecmp(s, "on") == 0)
            return PRS_COPY_HEADER_TRUE;
        if (strcasecmp(s, "false") == 0 || strcasecmp(s, "off") == 0)
            return PRS_COPY_HEADER_FALSE;
        if (allow_match && strcasecmp(s, "match") == 0)
            return PRS_COPY_HEADER_MATCH;
    }
    return -1;
}

static int opt_format(copy_parse *p, const DefElem *d)
{
    const char *fmt;
    if (p->format_seen)
        return conflicting(p);
    p->format_seen = true;
    if (option_required(p, d, &fmt))
        return 1;
    if (strcmp(fmt, "text") == 0)
        p->o->format = PRS_COPY_TEXT;
    else if (strcmp(fmt, "csv") == 0)
        p->o->format = PRS_COPY_CSV;
    else if (strcmp(fmt, "binary") == 0)
        p->o->format = PRS_COPY_BINARY;
    else
        return copy_fail(p->o, PGS_SQLSTATE_INVALID_PARAMETER_VALUE, "COPY format \"%s\" not recognized",
                         fmt);
    return 0;
}

static int opt_freeze(copy_parse *p, const DefElem *d)
{
    if (p->freeze_seen)
        return conflicting(p);
    p->freeze_seen = true;
    int v = option_bool(p, d, false);
    if (v < 0)
        return copy_fail(p->o, PGS_SQLSTATE_SYNTAX_ERROR, "%s requires a Boolean value", d->defname);
    p->o->freeze = v == PRS_COPY_HEADER_TRUE;
    return 0;
}

static int opt_header(copy_parse *p, const DefElem *d)
{
    if (p->header_seen)
        return conflicting(p);
    p->header_seen = true;
    int v = option_bool(p, d, true);
    if (v < 0)
        return copy_fail(p->o, PGS_SQLSTATE_SYNTAX_ERROR, "%s requires a Boolean value or \"match\"",
                         d->defname);
    if (v == PRS_COPY_HEADER_MATCH && !p->o->is_from)
        return copy_fail(p->o, PGS_SQLSTATE_FEATURE_NOT_SUPPORTED, "cannot use \"%s\" with HEADER in COPY TO",
                         option_string(p, d));
    p->o->header = (prs_copy_header)v;
    return 0;
}

/* DELIMITER, NULL, QUOTE, ESCAPE and ENCODING: a string given at most once. */
static int opt_text(copy_parse *p, const DefElem *d, const char **slot)
{
    if (*slot)
        return conflicting(p);
    return option_required(p, d, slot);
}

static int opt_delimiter(copy_parse *p, const DefElem *d)
{
    return opt_text(p, d, &p->delim);
}
static int opt_null(copy_parse *p, const DefElem *d)
{
    return opt_text(p, d, &p->null_str);
}
static int opt_quote(copy_parse *p, const DefElem *d)
{
    return opt_text(p, d, &p->quote);
}
static int opt_escape(copy_parse *p, const DefElem *d)
{
    return opt_text(p, d, &p->escape);
}
static int opt_encoding(copy_parse *p, const DefElem *d)
{
    return opt_text(p, d, &p->encoding);
}

/* FORCE_QUOTE, FORCE_NOT_NULL, FORCE_NULL: a list of column names (or * for FORCE_QUOTE). */
static int opt_column_list(copy_parse *p, const DefElem *d, bool *seen, const PgQuery__List **slot, bool star)
{
    if (*seen)
        return conflicting(p);
    *seen = true;
    if (star && d->arg && d->arg->node_case == PG_QUERY__NODE__NODE_A_STAR) {
        p->o->force_quote_all = true;
        return 0;
    }
    if (!d->arg || d->arg->node_case != PG_QUERY__NODE__NODE_LIST)
        return copy_fail(p->o, PGS_SQLSTATE_INVALID_PARAMETER_VALUE,
                         "argument to option \"%s\" must be a list of column names", d->defname);
    *slot = d->arg->list;
    return 0;
}

static int opt_force_quote(copy_parse *p, const DefElem *d)
{
    return opt_column_list(p, d, &p->force_quote_seen, &p->force_quote, true);
}
static int opt_force_not_null(copy_parse *p, const DefElem *d)
{
    return opt_column_list(p, d, &p->force_not_null_seen, &p->force_not_null, false);
}
static int opt_force_null(copy_parse *p, const DefElem *d)
{
    return opt_column_list(p, d, &p->force_null_seen, &p->force_null, false);
}

/* The old syntax (WITH CSV HEADER, DELIMITER AS ',', BINARY, FORCE NOT NULL a) reaches here
 * already rewritten by the grammar into these same names. */
static const struct copy_option {
    const char *name;
    int (*fn)(copy_parse *p, const DefElem *d);
} copy_options[] = {
    {"format", opt_format},
    {"freeze", opt_freeze},
    {"delimiter", opt_delimiter},
    {"null", opt_null},
    {"header", opt_header},
    {"quote", opt_quote},
    {"escape", opt_escape},
    {"force_quote", opt_force_quote},
    {"force_not_null", opt_force_not_null},
    {"force_null", opt_force_null},
    {"encoding", opt_encoding},
};

static int apply_option(copy_parse *p, const Node *n)
{
    if (!n || n->node_case != PG_QUERY__NODE__NODE_DEF_ELEM)
        return copy_fail(p->o, PGS_SQLSTATE_SYNTAX_ERROR, "syntax error in COPY options");
    const DefElem *d = n->def_elem;
    for (size_t i = 0; i < sizeof copy_options / sizeof copy_options[0]; i++)
        if (strcmp(d->defname, copy_options[i].name) == 0)
            return copy_options[i].fn(p, d);
    return copy_fail(p->o, PGS_SQLSTATE_SYNTAX_ERROR, "option \"%s\" not recognized", d->defname);
}

/* The checks ProcessCopyOptions makes once every option is read, in its order, so the first
 * error reported is the one PostgreSQL would report. Defaults are filled in between, as
 * PostgreSQL does. */
static int check_binary_conflicts(copy_parse *p)
{
    if (p->o->format != PRS_COPY_BINARY)
        return 0;
    if (p->delim)
        return copy_fail(p->o, PGS_SQLSTATE_SYNTAX_ERROR, "cannot specify DELIMITER in BINARY mode");
    if (p->null_str)
        return copy_fail(p->o, PGS_SQLSTATE_SYNTAX_ERROR, "cannot specify NULL in BINARY mode");
    return 0;
}

static void fill_defaults(copy_parse *p)
{
    bool csv = p->o->format == PRS_COPY_CSV;
    if (!p->delim)
        p->delim = csv ? "," : "\t";
    if (!p->null_str)
        p->null_str = csv ? "" : "\\N";
    if (csv && !p->quote)
        p->quote = "\"";
    if (csv && !p->escape)
        p->escape = p->quote;
}

static int check_delimiter(copy_parse *p)
{
    prs_copy_opts *o = p->o;
    if (strlen(p->delim) != 1)
        return copy_fail(o, PGS_SQLSTATE_FEATURE_NOT_SUPPORTED,
                         "COPY delimiter must be a single one-byte character");
    if (p->delim[0] == '\r' || p->delim[0] == '\n')
        return copy_fail(o, PGS_SQLSTATE_INVALID_PARAMETER_VALUE,
                         "COPY delimiter cannot be newline or carriage return");
    if (strchr(p->null_str, '\r') || strchr(p->null_str, '\n'))
        return copy_fail(o, PGS_SQLSTATE_INVALID_PARAMETER_VALUE,
                         "COPY null representation cannot use newline or carriage return");
    /* Backslash sequences would make such a delimiter ambiguous in text format. */
    if (o->format != PRS_COPY_CSV && strchr("\\.abcdefghijklmnopqrstuvwxyz0123456789", p->delim[0]))
        return copy_fail(o, PGS_SQLSTATE_INVALID_PARAMETER_VALUE, "COPY delimiter cannot be \"%s\"",
                         p->delim);
    if (o->format == PRS_COPY_BINARY && o->header != PRS_COPY_HEADER_FALSE)
        return copy_fail(o, PGS_SQLSTATE_FEATURE_NOT_SUPPORTED, "cannot specify HEADER in BINARY mode");
    return 0;
}

static int check_quote_escape(copy_parse *p)
{
    prs_copy_opts *o = p->o;
    bool csv = o->format == PRS_COPY_CSV;
    if (!csv && p->quote)
        return copy_fail(o, PGS_SQLSTATE_FEATURE_NOT_SUPPORTED, "COPY quote available only in CSV mode");
    if (csv && (!p->quote || strlen(p->quote) != 1))
        return copy_fail(o, PGS_SQLSTATE_FEATURE_NOT_SUPPORTED,
                         "COPY quote must be a single one-byte character");
    if (csv && p->delim[0] == p->quote[0]) /* quote is set: checked above */
        return copy_fail(o, PGS_SQLSTATE_INVALID_PARAMETER_VALUE,
                         "COPY delimiter and quote must be different");
    if (!csv && p->escape)
        return copy_fail(o, PGS_SQLSTATE_FEATURE_NOT_SUPPORTED, "COPY escape available only in CSV mode");
    if (csv && (!p->escape || strlen(p->escape) != 1))
        return copy_fail(o, PGS_SQLSTATE_FEATURE_NOT_SUPPORTED,
                         "COPY escape must be a single one-byte character");
    return 0;
}

static int check_force(copy_parse *p)
{
    prs_copy_opts *o = p->o;
    bool csv = o->format == PRS_COPY_CSV;
    bool fq = p->force_quote || o->force_quote_all;
    if (!csv && fq)
        return copy_fail(o, PGS_SQLSTATE_FEATURE_NOT_SUPPORTED,
                         "COPY force quote available only in CSV mode");
    if (fq && o->is_from)
        return copy_fail(o, PGS_SQLSTATE_FEATURE_NOT_SUPPORTED,
                         "COPY force quote only available using COPY TO");
    if (!csv && p->force_not_null)
        return copy_fail(o, PGS_SQLSTATE_FEATURE_NOT_SUPPORTED,
                         "COPY force not null available only in CSV mode");
    if (p->force_not_null && !o->is_from)
        return copy_fail(o, PGS_SQLSTATE_FEATURE_NOT_SUPPORTED,
                         "COPY force not null only available using COPY FROM");
    if (!csv && p->force_null)
        return copy_fail(o, PGS_SQLSTATE_FEATURE_NOT_SUPPORTED, "COPY force null available only in CSV mode");
    if (p->force_null && !o->is_from)
        return copy_fail(o, PGS_SQLSTATE_FEATURE_NOT_SUPPORTED,
                         "COPY force null only available using COPY FROM");
    return 0;
}

static int check_null_string(copy_parse *p)
{
    if (strchr(p->null_str, p->delim[0]))
        return copy_fail(p->o, PGS_SQLSTATE_FEATURE_NOT_SUPPORTED,
                         "COPY delimiter must not appear in the NULL specification");
    if (p->o->format == PRS_COPY_CSV && p->quote && strchr(p->null_str, p->quote[0]))
        return copy_fail(p->o, PGS_SQLSTATE_FEATURE_NOT_SUPPORTED,
                         "CSV quote character must not appear in the NULL specification");
    return 0;
}

/* Copies the checked values into the prs_copy_opts. Returns 0, 1 or -1. */
static int store_options(copy_parse *p)
{
    prs_copy_opts *o = p->o;
    int rc;
    if (o->format != PRS_COPY_BINARY) {
        o->delimiter = p->delim[0];
        o->null_str = strdup(p->null_str);
        if (!o->null_str)
            return -1;
        o->null_len = strlen(o->null_str);
    }
    if (o->format == PRS_COPY_CSV && p->quote && p->escape) { /* always, after fill_defaults */
        o->quote = p->quote[0];
        o->escape = p->escape[0];
    }
    if (p->encoding && !(o->encoding = strdup(p->encoding)))
        return -1;
    if (p->force_quote && (rc = names_copy(o, p->force_quote->items, p->force_quote->n_items, &o->force_quote,
                                           "force_quote")) != 0)
        return rc;
    if (p->force_not_null && (rc = names_copy(o, p->force_not_null->items, p->force_not_null->n_items,
                                              &o->force_not_null, "force_not_null")) != 0)
        return rc;
    if (p->force_null &&
        (rc = names_copy(o, p->force_null->items, p->force_null->n_items, &o->force_null, "force_null")) != 0)
        return rc;
    return 0;
}

static int process_options(copy_parse *p, const PgQuery__CopyStmt *cs)
{
    int rc;
    for (size_t i = 0; i < cs->n_options; i++)
        if ((rc = apply_option(p, cs->options[i])) != 0)
            return rc;
    if ((rc = check_binary_conflicts(p)) != 0)
        return rc;
    fill_defaults(p);
    if ((rc = check_delimiter(p)) != 0 || (rc = check_quote_escape(p)) != 0 || (rc = check_force(p)) != 0 ||
        (rc = check_null_string(p)) != 0)
        return rc;
    return store_options(p);
}

/* PostgreSQL refuses a column named twice (42701) in COPY's column list. */
static int check_columns(prs_copy_opts *o)
{
    if (o->columns.n > PRS_COPY_MAX_COLUMNS)
        return copy_fail(o, PGS_SQLSTATE_PROGRAM_LIMIT_EXCEEDED, "COPY names more than %d columns",
                         PRS_COPY_MAX_COLUMNS);
    for (size_t i = 1; i < o->columns.n; i++)
        for (size_t j = 0; j < i; j++)
            if (strcmp(o->columns.names[i], o->columns.names[j]) == 0)
                return copy_fail(o, PGS_SQLSTATE_DUPLICATE_COLUMN, "column \"%s\" specified more than once",
                                 o->columns.names[i]);
    return 0;
}

/* The original text of the query in COPY (query) TO: the tokens between the parenthesis
 * that follows COPY and its match, so the caller gets the query exactly as the client
 * wrote it. Returns 0, 1 or -1. */
static int find_query_text(prs_copy_opts *o, const char *text, int32_t from)
{
    PgQueryScanResult sr = pg_query_scan(text + from);
    if (sr.error) {
        pg_query_free_scan_result(sr);
        return copy_fail(o, PGS_SQLSTATE_SYNTAX_ERROR, "cannot read the query of COPY");
    }
    PgQuery__ScanResult *scan =
        pg_query__scan_result__unpack(NULL, sr.pbuf.len, (const uint8_t *)sr.pbuf.data);
    pg_query_free_scan_result(sr);
    if (!scan)
        return -1;
    int depth = 0, seen = 0;
    int32_t start = -1, end = -1;
    for (size_t i = 0; i < scan->n_tokens && end < 0; i++) {
        const PgQuery__ScanToken *t = scan->tokens[i];
        if (t->token == PG_QUERY__TOKEN__SQL_COMMENT || t->token == PG_QUERY__TOKEN__C_COMMENT)
            continue;
        seen++;
        if (t->token == PG_QUERY__TOKEN__ASCII_40 && depth++ == 0 && seen == 2)
            start = t->end;
        else if (t->token == PG_QUERY__TOKEN__ASCII_41 && --depth == 0 && start >= 0)
            end = t->start;
    }
    pg_query__scan_result__free_unpacked(scan, NULL);
    if (start < 0 || end < start)
        return copy_fail(o, PGS_SQLSTATE_SYNTAX_ERROR, "cannot read the query of COPY");
    o->query = strndup(text + from + start, (size_t)(end - start));
    return o->query ? 0 : -1;
}

static int fill_target(prs_copy_opts *o, const PgQuery__CopyStmt *cs, const char *text, int32_t loc)
{
    o->is_from = cs->is_from;
    o->is_program = cs->is_program;
    o->has_where = cs->where_clause != NULL;
    if (cs->filename && cs->filename[0])
        o->dir = PRS_COPY_OTHER;
    else
        o->dir = cs->is_from ? PRS_COPY_FROM_STDIN : PRS_COPY_TO_STDOUT;
    if (cs->relation) {
        const PgQuery__RangeVar *rv = cs->relation;
        if (rv->schemaname && rv->schemaname[0] && !(o->schema = strdup(rv->schemaname)))
            return -1;
        if (!(o->relname = strdup(rv->relname)))
            return -1;
    } else if (cs->query) {
        int rc = find_query_text(o, text, loc);
        if (rc)
            return rc;
    }
    int rc = names_copy(o, cs->attlist, cs->n_attlist, &o->columns, "columns");
    return rc ? rc : check_columns(o);
}

static int from_tree(prs_copy_opts *o, const PgQuery__ParseResult *tree, const char *text)
{
    if (tree->n_stmts != 1)
        return copy_fail(o, PGS_SQLSTATE_SYNTAX_ERROR, "expected one COPY statement, got %zu statements",
                         tree->n_stmts);
    const PgQuery__RawStmt *raw = tree->stmts[0];
    if (!raw->stmt || raw->stmt->node_case != PG_QUERY__NODE__NODE_COPY_STMT)
        return copy_fail(o, PGS_SQLSTATE_SYNTAX_ERROR, "not a COPY statement");
    const PgQuery__CopyStmt *cs = raw->stmt->copy_stmt;
    int rc = fill_target(o, cs, text, raw->stmt_location);
    if (rc)
        return rc;
    copy_parse p = {.o = o};
    return process_options(&p, cs);
}

int prs_copy_options(const char *sql, size_t len, prs_copy_opts *out)
{
    if (!out)
        return -1;
    memset(out, 0, sizeof *out);
    if (!sql && len)
        return copy_fail(out, PGS_SQLSTATE_SYNTAX_ERROR, "not a COPY statement");
    char *text = malloc(len + 1);
    if (!text) {
        copy_fail(out, PGS_SQLSTATE_OUT_OF_MEMORY, "out of memory");
        return -1;
    }
    if (len)
        memcpy(text, sql, len);
    text[len] = '\0';
    char err[sizeof out->message];
    PgQuery__ParseResult *tree;
    int pr = prs_tree_parse(text, len, &tree, err, sizeof err);
    if (pr > 0) {
        copy_fail(out, PGS_SQLSTATE_SYNTAX_ERROR, "%s", err);
        free(text);
        return 1;
    }
    int rc = -1;
    if (pr == 0) {
        rc = from_tree(out, tree, text);
        pg_query__parse_result__free_unpacked(tree, NULL);
    }
    free(text);
    if (rc < 0)
        copy_fail(out, PGS_SQLSTATE_OUT_OF_MEMORY, "out of memory");
    if (rc != 0) {
        /* Keep the error, drop whatever was half filled. */
        char sqlstate[6], message[256];
        memcpy(sqlstate, out->sqlstate, sizeof sqlstate);
        memcpy(message, out->message, sizeof message);
        prs_copy_opts_free(out);
        memcpy(out->sqlstate, sqlstate, sizeof sqlstate);
        memcpy(out->message, message, sizeof message);
    }
    return rc;
}

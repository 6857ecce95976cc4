/* prs_tree_parse and prs_tree_deparse: libpg_query's protobuf round trip, once for every
 * module that reads or rewrites statements (classify.c, scatter.c, insertsplit.c,
 * copyopts.c). */
#include "parser/tree.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int prs_tree_parse(const char *sql, size_t len, PgQuery__ParseResult **tree, char *err, size_t errlen)
{
    *tree = NULL;
    char *text = malloc(len + 1);
    if (!text)
        return -1;
    if (len)
        memcpy(text, sql, len);
    text[len] = '\0';
    PgQueryProtobufParseResult res = pg_query_parse_protobuf(text);
    free(text);
    if (res.error) {
        snprintf(err, errlen, "%s", res.error->message ? res.error->message : "syntax error");
        pg_query_free_protobuf_parse_result(res);
        return 1;
    }
    *tree = pg_query__parse_result__unpack(NULL, res.parse_tree.len, (const uint8_t *)res.parse_tree.data);
    pg_query_free_protobuf_parse_result(res);
    return *tree ? 0 : -1;
}

int prs_tree_deparse(const PgQuery__ParseResult *tree, char **sql, char *err, size_t errlen)
{
    size_t len = pg_query__parse_result__get_packed_size(tree);
    char *buf = malloc(len ? len : 1);
    if (!buf)
        return -1;
    pg_query__parse_result__pack(tree, (uint8_t *)buf);
    PgQueryProtobuf pb = {len, buf};
    PgQueryDeparseResult r = pg_query_deparse_protobuf(pb);
    free(buf);
    int rc = 0;
    if (r.error) {
        snprintf(err, errlen, "%s", r.error->message ? r.error->message : "deparse error");
        rc = 1;
    } else if (!(*sql = strdup(r.query))) {
        rc = -1;
    }
    pg_query_free_deparse_result(r);
    return rc;
}

/* Sequences at the freeze. The moved rows keep the values the source's sequences gave them;
 * the target's sequence must not give them again to the moved tenants' new rows. Where a
 * shard's sequences count in a range of their own (bigint ones: shard s from s << 48 + 1,
 * config/seqrange.c) the two ranges never meet and nothing is done; where both count in the
 * same range (int4 serials, sequences made before the table was sharded) the target's
 * sequence is set past the source's value, under the freeze, once the target has caught up
 * and before the flip. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "migrate/move.h"

/* The moved tables' own sequences (serial and identity columns) on the source. */
static const char mv_seq_list_sql[] =
    "SELECT q.seqrelid::regclass::text FROM pg_catalog.pg_depend d"
    " JOIN pg_catalog.pg_sequence q ON q.seqrelid = d.objid"
    " WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.refclassid = 'pg_catalog.pg_class'::regclass"
    " AND d.deptype IN ('a', 'i') AND q.seqincrement > 0 AND d.refobjid = ANY ($1::regclass[]) ORDER BY 1";

/* A text[] literal of n strings. */
static void mv_text_array(pgs_buf *b, const char *const *s, int n)
{
    pgs_buf_append_u8(b, '{');
    for (int i = 0; i < n; i++) {
        pgs_buf_append(b, i ? ",\"" : "\"", i ? 2 : 1);
        for (const char *p = s[i]; *p; p++) {
            if (*p == '"' || *p == '\\')
                pgs_buf_append_u8(b, '\\');
            pgs_buf_append_u8(b, (uint8_t)*p);
        }
        pgs_buf_append_u8(b, '"');
    }
    pgs_buf_append(b, "}", 2); /* with its NUL */
}

int mv_seq_prepare(mv_move *m)
{
    if (m->seqs)
        return 0;
    const char **names = calloc((size_t)m->ntables + 1, sizeof *names);
    if (!names)
        return mv_fail(m, "sequences: out of memory");
    for (int i = 0; i < m->ntables; i++)
        names[i] = m->tables[i].qname;
    pgs_buf tabs = {0};
    mv_text_array(&tabs, names, m->ntables);
    free(names);
    if (pgs_buf_failed(&tabs)) {
        pgs_buf_free(&tabs);
        return mv_fail(m, "sequences: out of memory");
    }
    const char *p[] = {(const char *)tabs.data};
    PGresult *res = mv_exec(m, m->src, "listing the tables' sequences", mv_seq_list_sql, 1, p);
    pgs_buf_free(&tabs);
    if (!res)
        return -1;
    m->nseqs = PQntuples(res);
    m->seqs = calloc((size_t)m->nseqs + 1, sizeof *m->seqs);
    for (int i = 0; m->seqs && i < m->nseqs; i++)
        m->seqs[i] = strdup(PQgetvalue(res, i, 0));
    PQclear(res);
    for (int i = 0; m->seqs && i < m->nseqs; i++)
        if (!m->seqs[i])
            return mv_fail(m, "sequences: out of memory");
    return m->seqs ? 0 : mv_fail(m, "sequences: out of memory");
}

int mv_seq_sync(mv_move *m, int *advanced)
{
    *advanced = 0;
    if (m->nseqs == 0)
        return 0;
    pgs_buf list = {0};
    mv_text_array(&list, (const char *const *)m->seqs, m->nseqs);
    if (pgs_buf_failed(&list)) {
        pgs_buf_free(&list);
        return mv_fail(m, "sequences: out of memory");
    }
    const char *p[] = {(const char *)list.data};
    PGresult *res = mv_exec(m, m->src, "reading the source's sequences",
                            "SELECT pg_catalog.pg_sequence_last_value(s::regclass) FROM unnest($1::text[])"
                            " WITH ORDINALITY u(s, i) ORDER BY i",
                            1, p);
    pgs_buf_free(&list);
    if (!res)
        return -1;
    /* One statement on the target: each sequence set to the source's value where it is below
     * it in the same range. A sequence relation reads as its one row. */
    pgs_buf sql = {0};
    int n = 0;
    pgs_buf_appendf(&sql, "SELECT count(*) FROM (");
    for (int i = 0; i < m->nseqs && i < PQntuples(res); i++) {
        if (PQgetisnull(res, i, 0)) /* never used on the source: no moved row has its values */
            continue;
        long long v = mv_ll(res, i, 0);
        char *lit = PQescapeLiteral(m->dst, m->seqs[i], strlen(m->seqs[i]));
        if (!lit) {
            pgs_buf_free(&sql);
            PQclear(res);
            return mv_fail(m, "sequences: %s", PQerrorMessage(m->dst));
        }
        pgs_buf_appendf(&sql, "%sSELECT pg_catalog.setval(%s", n++ ? " UNION ALL " : "", lit);
        PQfreemem(lit);
        pgs_buf_appendf(
            &sql, "::regclass, %lld) FROM %s WHERE last_value <= %lld AND (last_value - 1) >> 48 = %lld", v,
            m->seqs[i], v, (v - 1) >> 48);
    }
    PQclear(res);
    pgs_buf_append(&sql, ") s", 4); /* with its NUL */
    if (pgs_buf_failed(&sql)) {
        pgs_buf_free(&sql);
        return mv_fail(m, "sequences: out of memory");
    }
    if (n == 0) {
        pgs_buf_free(&sql);
        return 0;
    }
    res = mv_exec(m, m->dst, "advancing the target's sequences", (const char *)sql.data, 0, NULL);
    pgs_buf_free(&sql);
    if (!res)
        return -1;
    *advanced = (int)mv_ll(res, 0, 0);
    PQclear(res);
    return 0;
}

void mv_seq_free(mv_move *m)
{
    for (int i = 0; m->seqs && i < m->nseqs; i++)
        free(m->seqs[i]);
    free(m->seqs);
    m->seqs = NULL;
    m->nseqs = 0;
}

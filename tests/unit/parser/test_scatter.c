/* Tests for parser/scatter.c: for each statement, the exact query the shards run and the
 * merge plan (columns, sort, LIMIT/OFFSET, HAVING program), the refusals with their
 * SQLSTATE and reason, the shard-key question asked for count(DISTINCT), and the plan's
 * description. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "parser/scatter.h"

#define N(a) (sizeof(a) / sizeof((a)[0]))

/* The last shard-key question the planner asked. */
typedef struct key_probe {
    char schema[64], table[64], column[64];
    int calls;
} key_probe;

/* tenant_id is the shard key of every table in these tests. */
static int is_key(void *arg, const char *schema, const char *table, const char *column)
{
    key_probe *kp = arg;
    if (kp) {
        snprintf(kp->schema, sizeof kp->schema, "%s", schema ? schema : "-");
        snprintf(kp->table, sizeof kp->table, "%s", table ? table : "-");
        snprintf(kp->column, sizeof kp->column, "%s", column ? column : "-");
        kp->calls++;
    }
    return strcmp(column, "tenant_id") == 0;
}

static const prs_scatter_ctx test_ctx = {is_key, NULL};

static const char *const kind_text[] = {"plain", "group", "count", "sum", "min", "max", "and", "or", "avg"};
static const char *const op_text[] = {"?",  "col", "const", "null", "eq",  "ne",     "lt",     "le",
                                      "gt", "ge",  "and",   "or",   "not", "isnull", "notnull"};

typedef struct text_buf {
    char s[1024];
    size_t len;
} text_buf;

static void add(text_buf *t, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(t->s + t->len, sizeof t->s - t->len, fmt, ap);
    va_end(ap);
    if (n > 0)
        t->len = (size_t)n < sizeof t->s - t->len ? t->len + (size_t)n : sizeof t->s - 1;
}

/* One line for a plan: "mode | columns | sort | limit offset | having", e.g.
 * "grouped | group avg>3 sum count* | 1 desc nf | limit 10 offset 5 | -". Hidden columns end
 * in '*', an avg names its count column, a sort item says nf/nl for its nulls. */
static void plan_text(const prs_scatter *p, text_buf *t)
{
    add(t, "%s%s |",
        p->grouped         ? "grouped"
        : p->shards_sorted ? "sorted"
                           : "plain",
        p->distinct ? " distinct" : "");
    if (p->ncols == 0)
        add(t, " all");
    for (unsigned i = 0; i < p->star_hidden; i++) /* "+plain~1*": hidden after * */
        add(t, " +%s~%u*", p->cols[i].kind < N(kind_text) ? kind_text[p->cols[i].kind] : "?",
            p->cols[i].coll ? p->cols[i].coll - 1u : 99u);
    if (p->ncols && p->nvisible == 0)
        add(t, " none-visible");
    for (unsigned i = 0; i < p->ncols; i++) {
        add(t, " %s", p->cols[i].kind < N(kind_text) ? kind_text[p->cols[i].kind] : "?");
        if (p->cols[i].kind == PRS_SC_AVG)
            add(t, ">%u", p->cols[i].arg);
        if (p->cols[i].coll)
            add(t, "~%u", p->cols[i].coll - 1u);
        if (p->cols[i].hidden)
            add(t, "*");
        if (p->cols[i].hidden != (i >= p->nvisible))
            add(t, "!order");
    }
    add(t, " |");
    if (p->nsort == 0)
        add(t, " -");
    for (unsigned i = 0; i < p->nsort; i++)
        add(t, "%s %s%u%s %s", i ? "," : "", p->sort[i].col & PRS_SC_SORT_HIDDEN ? "+" : "",
            p->sort[i].col & ~PRS_SC_SORT_HIDDEN, p->sort[i].desc ? " desc" : "",
            p->sort[i].nulls_first ? "nf" : "nl");
    if (p->limit_param)
        add(t, " | limit $%u", (unsigned)p->limit_param);
    else
        add(t, " | limit %lld", (long long)p->limit);
    if (p->offset_param)
        add(t, " offset $%u |", (unsigned)p->offset_param);
    else
        add(t, " offset %lld |", (long long)p->offset);
    if (p->ninsns == 0)
        add(t, " -");
    for (unsigned i = 0; i < p->ninsns; i++) {
        const prs_sc_insn *in = &p->having[i];
        add(t, " %s", in->op < N(op_text) ? op_text[in->op] : "?");
        if (in->op == PRS_SC_OP_COL)
            add(t, "%u", in->arg);
        if (in->op == PRS_SC_OP_CONST)
            add(t, "'%s'", in->arg < p->str_len ? p->str + in->arg : "?");
    }
}

typedef struct plan_case {
    const char *sql;
    const char *shard_sql;
    const char *plan; /* plan_text */
} plan_case;

static const plan_case plans[] = {
    /* rows as they are */
    {"select a, b from t", "SELECT a, b FROM t", "plain | plain plain | - | limit -1 offset 0 | -"},
    {"select * from t", "SELECT * FROM t", "plain | all | - | limit -1 offset 0 | -"},
    {"select * from t order by 2 desc", "SELECT * FROM t ORDER BY 2 DESC",
     "sorted | all | 1 desc nf | limit -1 offset 0 | -"},
    /* under *, hidden columns after the ones * gives; the sort names them +n (from 0 among them) */
    {"select * from t order by a",
     "SELECT *, a AS pgshard_sort_2, COLL(a) AS pgshard_coll_3 FROM t ORDER BY a",
     "sorted | all +plain~1* +plain~99* | +0 nl | limit -1 offset 0 | -"},
    {"select *, lower(a) as l from t order by l desc nulls first, 1 limit 3",
     "SELECT *, lower(a) AS l, lower(a) AS pgshard_sort_3, COLL(lower(a)) AS pgshard_coll_4 FROM t ORDER BY "
     "l DESC NULLS FIRST, 1 LIMIT 3",
     "sorted | all +plain~1* +plain~99* | +0 desc nf, 0 nl | limit 3 offset 0 | -"},
    {"select t.* from t order by b + 1, 2, b + 1",
     "SELECT t.*, b + 1 AS pgshard_sort_2, pg_catalog.pg_collation_for(CASE WHEN false THEN CAST(b + 1 AS "
     "pg_catalog.text) END) AS pgshard_coll_3 FROM t ORDER BY b + 1, 2, b + 1",
     "sorted | all +plain~1* +plain~99* | +0 nl, 1 nl, +0 nl | limit -1 offset 0 | -"},
    {"select t.*, 1 from t order by 1 limit 5", "SELECT t.*, 1 FROM t ORDER BY 1 LIMIT 5",
     "sorted | all | 0 nl | limit 5 offset 0 | -"},
    {"select a from t where tenant_id in (1, 2) and b > $1",
     "SELECT a FROM t WHERE tenant_id IN (1, 2) AND b > $1", "plain | plain | - | limit -1 offset 0 | -"},
    {"select a, b from t order by b", "SELECT a, b, COLL(b) AS pgshard_coll_3 FROM t ORDER BY b",
     "sorted | plain plain~2 plain* | 1 nl | limit -1 offset 0 | -"},
    {"select a, b from t order by 2 desc, 1",
     "SELECT a, b, COLL(a) AS pgshard_coll_3, COLL(b) AS pgshard_coll_4 FROM t ORDER BY 2 DESC, 1",
     "sorted | plain~2 plain~3 plain* plain* | 1 desc nf, 0 nl | limit -1 offset 0 | -"},
    {"select a from t order by a desc nulls last",
     "SELECT a, COLL(a) AS pgshard_coll_2 FROM t ORDER BY a DESC NULLS LAST",
     "sorted | plain~1 plain* | 0 desc nl | limit -1 offset 0 | -"},
    {"select a from t order by a nulls first",
     "SELECT a, COLL(a) AS pgshard_coll_2 FROM t ORDER BY a NULLS FIRST",
     "sorted | plain~1 plain* | 0 nf | limit -1 offset 0 | -"},
    {"select a from t order by a asc", "SELECT a, COLL(a) AS pgshard_coll_2 FROM t ORDER BY a ASC",
     "sorted | plain~1 plain* | 0 nl | limit -1 offset 0 | -"},
    {"select a as x, b from t order by x", "SELECT a AS x, b, COLL(a) AS pgshard_coll_3 FROM t ORDER BY x",
     "sorted | plain~2 plain plain* | 0 nl | limit -1 offset 0 | -"},
    /* an output name wins over an input column of the same name, as in PostgreSQL */
    {"select a as b, b as a from t order by a",
     "SELECT a AS b, b AS a, COLL(b) AS pgshard_coll_3 FROM t ORDER BY a",
     "sorted | plain plain~2 plain* | 1 nl | limit -1 offset 0 | -"},
    {"select a::text, b from t order by a",
     "SELECT a::text, b, COLL(a::text) AS pgshard_coll_3 FROM t ORDER BY a",
     "sorted | plain~2 plain plain* | 0 nl | limit -1 offset 0 | -"},
    {"select x.a from t x order by x.a", "SELECT x.a, COLL(x.a) AS pgshard_coll_2 FROM t x ORDER BY x.a",
     "sorted | plain~1 plain* | 0 nl | limit -1 offset 0 | -"},
    {"select lower(b), a from t order by lower(b)",
     "SELECT lower(b), a, COLL(lower(b)) AS pgshard_coll_3 FROM t ORDER BY lower(b)",
     "sorted | plain~2 plain plain* | 0 nl | limit -1 offset 0 | -"},
    {"select a from t order by lower(b) desc, a",
     "SELECT a, lower(b) AS pgshard_sort_2, COLL(a) AS pgshard_coll_3, COLL(lower(b)) AS pgshard_coll_4 FROM "
     "t ORDER BY lower(b) DESC, a",
     "sorted | plain~2 plain~3* plain* plain* | 1 desc nf, 0 nl | limit -1 offset 0 | -"},
    {"select a from t order by b + 1, b + 1",
     "SELECT a, b + 1 AS pgshard_sort_2, pg_catalog.pg_collation_for(CASE WHEN false THEN CAST(b + 1 AS "
     "pg_catalog.text) END) AS pgshard_coll_3 FROM t ORDER BY b + 1, b + 1",
     "sorted | plain plain~2* plain* | 1 nl, 1 nl | limit -1 offset 0 | -"},
    {"select a from t limit 10", "SELECT a FROM t LIMIT 10", "plain | plain | - | limit 10 offset 0 | -"},
    {"select a from t order by a limit 10 offset 5",
     "SELECT a, COLL(a) AS pgshard_coll_2 FROM t ORDER BY a LIMIT 15",
     "sorted | plain~1 plain* | 0 nl | limit 10 offset 5 | -"},
    {"select a from t offset 5", "SELECT a FROM t", "plain | plain | - | limit -1 offset 5 | -"},
    {"select a from t order by a limit all offset 4", "SELECT a, COLL(a) AS pgshard_coll_2 FROM t ORDER BY a",
     "sorted | plain~1 plain* | 0 nl | limit -1 offset 4 | -"},
    {"select a from t limit null", "SELECT a FROM t", "plain | plain | - | limit -1 offset 0 | -"},
    {"select a from t order by a offset 2 rows fetch first 3 rows only",
     "SELECT a, COLL(a) AS pgshard_coll_2 FROM t ORDER BY a LIMIT 5",
     "sorted | plain~1 plain* | 0 nl | limit 3 offset 2 | -"},
    {"select a from t limit 0", "SELECT a FROM t LIMIT 0", "plain | plain | - | limit 0 offset 0 | -"},
    {"select a from t limit 2147483647 offset 1", "SELECT a FROM t LIMIT 2147483648",
     "plain | plain | - | limit 2147483647 offset 1 | -"},
    {"select a from t limit 10000000000 offset 10", "SELECT a FROM t LIMIT 10000000010",
     "plain | plain | - | limit 10000000000 offset 10 | -"},
    /* limit + offset past int64: the shards return everything */
    {"select a from t limit 9223372036854775807 offset 10", "SELECT a FROM t",
     "plain | plain | - | limit 9223372036854775807 offset 10 | -"},
    {"table t", "SELECT * FROM t", "plain | all | - | limit -1 offset 0 | -"},
    {"select t.a, u.b from t join u using (tenant_id) order by t.a",
     "SELECT t.a, u.b, COLL(t.a) AS pgshard_coll_3 FROM t JOIN u USING (tenant_id) ORDER BY t.a",
     "sorted | plain~2 plain plain* | 0 nl | limit -1 offset 0 | -"},
    {"select t.a, u.b from t, u where t.tenant_id = u.tenant_id limit 3",
     "SELECT t.a, u.b FROM t, u WHERE t.tenant_id = u.tenant_id LIMIT 3",
     "plain | plain plain | - | limit 3 offset 0 | -"},

    /* aggregates */
    {"select count(*) from t", "SELECT count(*) FROM t", "grouped | count | - | limit -1 offset 0 | -"},
    {"select count(*), count(b), sum(c), min(d), max(e) from t where tenant_id > 5",
     "SELECT count(*), count(b), sum(c), min(d), max(e), COLL(min(d)) AS pgshard_coll_6, COLL(max(e)) AS "
     "pgshard_coll_7 FROM t WHERE tenant_id > 5",
     "grouped | count count sum min~5 max~6 plain* plain* | - | limit -1 offset 0 | -"},
    {"select bool_and(a), bool_or(b), every(c) from t", "SELECT bool_and(a), bool_or(b), every(c) FROM t",
     "grouped | and or and | - | limit -1 offset 0 | -"},
    {"select avg(x) from t",
     "SELECT sum(x) AS avg, count(x) AS pgshard_count_2, avg(x) AS pgshard_avg_3 FROM t",
     "grouped | avg>1 count* plain* | - | limit -1 offset 0 | -"},
    {"select avg(x) as m, pg_catalog.avg(y) from t",
     "SELECT sum(x) AS m, pg_catalog.sum(y) AS avg, count(x) AS pgshard_count_3, avg(x) AS pgshard_avg_4, "
     "pg_catalog.count(y) AS pgshard_count_5, pg_catalog.avg(y) AS pgshard_avg_6 FROM t",
     "grouped | avg>2 avg>4 count* plain* count* plain* | - | limit -1 offset 0 | -"},
    {"select avg(x) filter (where y > 0) from t",
     "SELECT sum(x) FILTER (WHERE y > 0) AS avg, count(x) FILTER (WHERE y > 0) AS pgshard_count_2, avg(x) "
     "FILTER (WHERE y > 0) AS pgshard_avg_3 FROM t",
     "grouped | avg>1 count* plain* | - | limit -1 offset 0 | -"},
    {"select count(*) filter (where b) from t", "SELECT count(*) FILTER (WHERE b) FROM t",
     "grouped | count | - | limit -1 offset 0 | -"},
    {"select min(distinct x), max(distinct y) from t",
     "SELECT min(DISTINCT x), max(DISTINCT y), COLL(min(DISTINCT x)) AS pgshard_coll_3, COLL(max(DISTINCT "
     "y)) AS pgshard_coll_4 FROM t",
     "grouped | min~2 max~3 plain* plain* | - | limit -1 offset 0 | -"},
    {"select count(distinct tenant_id) from t", "SELECT count(DISTINCT tenant_id) FROM t",
     "grouped | count | - | limit -1 offset 0 | -"},
    {"select count(distinct u.tenant_id) from t join users u on t.id = u.id",
     "SELECT count(DISTINCT u.tenant_id) FROM t JOIN users u ON t.id = u.id",
     "grouped | count | - | limit -1 offset 0 | -"},
    {"select 'total' as k, 1::int, count(*) from t",
     "SELECT 'total' AS k, 1::int, count(*), COLL('total') AS pgshard_coll_4, COLL(1::int) AS pgshard_coll_5 "
     "FROM t",
     "grouped | group~3 group~4 count plain* plain* | - | limit -1 offset 0 | -"},
    {"select count(*) as n from t order by n limit 1", "SELECT count(*) AS n FROM t",
     "grouped | count | 0 nl | limit 1 offset 0 | -"},

    /* GROUP BY */
    {"select a, count(*) from t group by a",
     "SELECT a, count(*), COLL(a) AS pgshard_coll_3 FROM t GROUP BY a",
     "grouped | group~2 count plain* | - | limit -1 offset 0 | -"},
    {"select a from t group by a order by a desc limit 2",
     "SELECT a, COLL(a) AS pgshard_coll_2 FROM t GROUP BY a",
     "grouped | group~1 plain* | 0 desc nf | limit 2 offset 0 | -"},
    {"select a, sum(x) from t group by 1", "SELECT a, sum(x), COLL(a) AS pgshard_coll_3 FROM t GROUP BY 1",
     "grouped | group~2 sum plain* | - | limit -1 offset 0 | -"},
    {"select b.a, sum(x) from t b group by b.a",
     "SELECT b.a, sum(x), COLL(b.a) AS pgshard_coll_3 FROM t b GROUP BY b.a",
     "grouped | group~2 sum plain* | - | limit -1 offset 0 | -"},
    {"select a, sum(x) from t group by a, b",
     "SELECT a, sum(x), b AS pgshard_group_3, COLL(a) AS pgshard_coll_4, COLL(b) AS pgshard_coll_5 FROM t "
     "GROUP BY a, b",
     "grouped | group~3 sum group~4* plain* plain* | - | limit -1 offset 0 | -"},
    {"select count(*) from t group by lower(b)",
     "SELECT count(*), lower(b) AS pgshard_group_2, COLL(lower(b)) AS pgshard_coll_3 FROM t GROUP BY "
     "lower(b)",
     "grouped | count group~2* plain* | - | limit -1 offset 0 | -"},
    {"select a, lower(b), max(x) from t group by lower(b), a",
     "SELECT a, lower(b), max(x), COLL(a) AS pgshard_coll_4, COLL(lower(b)) AS pgshard_coll_5, COLL(max(x)) "
     "AS pgshard_coll_6 FROM t GROUP BY lower(b), a",
     "grouped | group~3 group~4 max~5 plain* plain* plain* | - | limit -1 offset 0 | -"},
    {"select a, avg(x), sum(y) from t group by a order by 2 desc limit 10 offset 5",
     "SELECT a, sum(x) AS avg, sum(y), count(x) AS pgshard_count_4, avg(x) AS pgshard_avg_5, COLL(a) AS "
     "pgshard_coll_6 FROM t GROUP BY a",
     "grouped | group~5 avg>3 sum count* plain* plain* | 1 desc nf | limit 10 offset 5 | -"},
    {"select a, count(*) from t group by a order by count(*) desc, a",
     "SELECT a, count(*), COLL(a) AS pgshard_coll_3 FROM t GROUP BY a",
     "grouped | group~2 count plain* | 1 desc nf, 0 nl | limit -1 offset 0 | -"},
    {"select a, count(*) from t group by 1 order by sum(x), avg(y) desc",
     "SELECT a, count(*), sum(x) AS pgshard_sort_3, sum(y) AS pgshard_sort_4, count(y) AS pgshard_count_5, "
     "avg(y) AS pgshard_avg_6, COLL(a) AS pgshard_coll_7 FROM t GROUP BY 1",
     "grouped | group~6 count sum* avg>4* count* plain* plain* | 2 nl, 3 desc nf | limit -1 offset 0 | -"},
    {"select count(*) from t group by b order by b",
     "SELECT count(*), b AS pgshard_group_2, COLL(b) AS pgshard_coll_3 FROM t GROUP BY b",
     "grouped | count group~2* plain* | 1 nl | limit -1 offset 0 | -"},

    /* An explicit COLLATE: each shard names the collation it derives, in full here once */
    {"select a from t order by a collate \"C\"",
     "SELECT a, a COLLATE \"C\" AS pgshard_sort_2, COLL(a COLLATE \"C\") AS pgshard_coll_3 FROM t ORDER BY a "
     "COLLATE \"C\"",
     "sorted | plain plain~2* plain* | 1 nl | limit -1 offset 0 | -"},
    {"select a collate \"C\" from t order by 1",
     "SELECT a COLLATE \"C\", COLL(a COLLATE \"C\") AS pgshard_coll_2 FROM t ORDER BY 1",
     "sorted | plain~1 plain* | 0 nl | limit -1 offset 0 | -"},
    {"select max(a collate \"C\") from t",
     "SELECT max(a COLLATE \"C\"), COLL(max(a COLLATE \"C\")) AS pgshard_coll_2 FROM t",
     "grouped | max~1 plain* | - | limit -1 offset 0 | -"},
    {"select a from t order by b + 1",
     "SELECT a, b + 1 AS pgshard_sort_2, pg_catalog.pg_collation_for(CASE WHEN false THEN CAST(b + 1 AS "
     "pg_catalog.text) END) AS pgshard_coll_3 FROM t ORDER BY b + 1",
     "sorted | plain plain~2* plain* | 1 nl | limit -1 offset 0 | -"},

    /* HAVING */
    {"select a, count(*) from t group by a having count(*) > 5",
     "SELECT a, count(*), COLL(a) AS pgshard_coll_3 FROM t GROUP BY a",
     "grouped | group~2 count plain* | - | limit -1 offset 0 | col1 const'5' gt"},
    {"select a from t group by a having sum(x) >= -2.5 and max(y) <> 'abc' or not min(z) is null",
     "SELECT a, sum(x) AS pgshard_having_2, max(y) AS pgshard_having_3, min(z) AS pgshard_having_4, COLL(a) "
     "AS pgshard_coll_5, COLL(max(y)) AS pgshard_coll_6, COLL(min(z)) AS pgshard_coll_7 FROM t GROUP BY a",
     "grouped | group~4 sum* max~5* min~6* plain* plain* plain* | - | limit -1 offset 0 | col1 const'-2.5' "
     "ge col2 const'abc' ne and col3 isnull not or"},
    {"select a, sum(x) from t group by a having sum(x) < 10 and a = 'k' and count(*) is not null",
     "SELECT a, sum(x), count(*) AS pgshard_having_3, COLL(a) AS pgshard_coll_4 FROM t GROUP BY a",
     "grouped | group~3 sum count* plain* | - | limit -1 offset 0 | col1 const'10' lt col0 const'k' eq and "
     "col2 notnull and"},
    {"select a from t group by a having avg(x) > 1 order by avg(x) desc limit 3",
     "SELECT a, sum(x) AS pgshard_having_2, count(x) AS pgshard_count_3, avg(x) AS pgshard_avg_4, COLL(a) AS "
     "pgshard_coll_5 FROM t GROUP BY a",
     "grouped | group~4 avg>2* count* plain* plain* | 1 desc nf | limit 3 offset 0 | col1 const'1' gt"},
    {"select a from t group by a having bool_or(b) = true and -5 <= min(c) and max(d) = null",
     "SELECT a, bool_or(b) AS pgshard_having_2, min(c) AS pgshard_having_3, max(d) AS pgshard_having_4, "
     "COLL(a) AS pgshard_coll_5, COLL(min(c)) AS pgshard_coll_6, COLL(max(d)) AS pgshard_coll_7 FROM t GROUP "
     "BY a",
     "grouped | group~4 or* min~5* max~6* plain* plain* plain* | - | limit -1 offset 0 | col1 const'true' eq "
     "const'-5' col2 le and col3 null eq and"},
    {"select count(*) from t group by a, b having a = 1 and b is null order by a, count(*)",
     "SELECT count(*), a AS pgshard_group_2, b AS pgshard_group_3, COLL(a) AS pgshard_coll_4, COLL(b) AS "
     "pgshard_coll_5 FROM t GROUP BY a, b",
     "grouped | count group~3* group~4* plain* plain* | 1 nl, 0 nl | limit -1 offset 0 | col1 const'1' eq "
     "col2 isnull and"},
    {"select count(*) from t having sum(x) != min(y)",
     "SELECT count(*), sum(x) AS pgshard_having_2, min(y) AS pgshard_having_3, COLL(min(y)) AS "
     "pgshard_coll_4 FROM t",
     "grouped | count sum* min~3* plain* | - | limit -1 offset 0 | col1 col2 ne"},

    /* a bare boolean as a condition (the merge checks the type) */
    {"select a from t group by a having bool_and(b)",
     "SELECT a, bool_and(b) AS pgshard_having_2, COLL(a) AS pgshard_coll_3 FROM t GROUP BY a",
     "grouped | group~2 and* plain* | - | limit -1 offset 0 | col1"},
    {"select a, b, count(*) from t group by a, b having b and not bool_or(c)",
     "SELECT a, b, count(*), bool_or(c) AS pgshard_having_4, COLL(a) AS pgshard_coll_5, COLL(b) AS "
     "pgshard_coll_6 FROM t GROUP BY a, b",
     "grouped | group~4 group~5 count or* plain* plain* | - | limit -1 offset 0 | col1 col3 not and"},
    {"select count(*) from t group by b having b",
     "SELECT count(*), b AS pgshard_group_2, COLL(b) AS pgshard_coll_3 FROM t GROUP BY b",
     "grouped | count group~2* plain* | - | limit -1 offset 0 | col1"},

    /* DISTINCT over groups: the merge drops equal rows after HAVING, the shards do not */
    {"select distinct count(*) from t group by a",
     "SELECT count(*), a AS pgshard_group_2, COLL(a) AS pgshard_coll_3 FROM t GROUP BY a",
     "grouped distinct | count group~2* plain* | - | limit -1 offset 0 | -"},
    {"select distinct a, count(*) from t group by a order by 2 desc limit 3",
     "SELECT a, count(*), COLL(a) AS pgshard_coll_3 FROM t GROUP BY a",
     "grouped distinct | group~2 count plain* | 1 desc nf | limit 3 offset 0 | -"},
    {"select distinct max(x) from t", "SELECT max(x), COLL(max(x)) AS pgshard_coll_2 FROM t",
     "grouped distinct | max~1 plain* | - | limit -1 offset 0 | -"},

    /* GROUP BY an output name: its position on the shards, and a probe that fails there when
     * an input column has the name (PostgreSQL would group by that one) */
    {"select a as g, count(*) from t group by g",
     "SELECT a AS g, count(*), COLL(a) AS pgshard_coll_3 FROM t, (VALUES (NULL)) pgshard_probe(g) GROUP BY "
     "1, "
     "g",
     "grouped | group~2 count plain* | - | limit -1 offset 0 | -"},
    {"select lower(b), x + 1 as \"Y\", count(*) from t group by lower, \"Y\" order by \"Y\"",
     "SELECT lower(b), x + 1 AS \"Y\", count(*), COLL(lower(b)) AS pgshard_coll_4, "
     "pg_catalog.pg_collation_for(CASE WHEN false THEN CAST(x + 1 AS pg_catalog.text) END) AS "
     "pgshard_coll_5 FROM t, (VALUES (NULL, NULL)) pgshard_probe(lower, \"Y\") GROUP BY 1, 2, lower, \"Y\"",
     "grouped | group~3 group~4 count plain* plain* | 1 nl | limit -1 offset 0 | -"},
    /* LIMIT $n / OFFSET $m: kept in place for the server to type them; the caller rebinds
     * them (proxy/limitbind.c) */
    {"select a from t limit $1", "SELECT a FROM t LIMIT $1", "plain | plain | - | limit $1 offset 0 | -"},
    {"select a from t where b > $1 order by a limit $2 offset $3",
     "SELECT a, COLL(a) AS pgshard_coll_2 FROM t WHERE b > $1 ORDER BY a LIMIT $2 OFFSET $3",
     "sorted | plain~1 plain* | 0 nl | limit $2 offset $3 | -"},
    {"select a from t order by a limit $1 offset 5",
     "SELECT a, COLL(a) AS pgshard_coll_2 FROM t ORDER BY a LIMIT $1",
     "sorted | plain~1 plain* | 0 nl | limit $1 offset 5 | -"},
    /* a constant LIMIT cannot be raised by $1's value: the shards return every row */
    {"select a from t limit 5 offset $1", "SELECT a FROM t OFFSET $1",
     "plain | plain | - | limit 5 offset $1 | -"},
    {"select a from t order by a fetch first $1 rows only",
     "SELECT a, COLL(a) AS pgshard_coll_2 FROM t ORDER BY a LIMIT $1",
     "sorted | plain~1 plain* | 0 nl | limit $1 offset 0 | -"},
    /* groups: the parameters stay, bound to NULL, and the merge limits */
    {"select a, count(*) from t group by a order by 2 desc limit $1 offset $2",
     "SELECT a, count(*), COLL(a) AS pgshard_coll_3 FROM t GROUP BY a LIMIT $1 OFFSET $2",
     "grouped | group~2 count plain* | 1 desc nf | limit $1 offset $2 | -"},
    {"select distinct a from t limit $1", "SELECT DISTINCT a, COLL(a) AS pgshard_coll_2 FROM t LIMIT $1",
     "grouped | group~1 plain* | - | limit $1 offset 0 | -"},
    /* a name referenced elsewhere is an input column: grouped by it, as PostgreSQL does */
    {"select t.g as x, lower(b) as g, count(*) from t group by g, lower(b), t.g",
     "SELECT t.g AS x, lower(b) AS g, count(*), g AS pgshard_group_4, COLL(t.g) AS pgshard_coll_5, "
     "COLL(lower(b)) AS pgshard_coll_6, COLL(g) AS pgshard_coll_7 FROM t GROUP BY g, lower(b), t.g",
     "grouped | group~4 group~5 count group~6* plain* plain* plain* | - | limit -1 offset 0 | -"},

    /* DISTINCT */
    {"select distinct a, b from t",
     "SELECT DISTINCT a, b, COLL(a) AS pgshard_coll_3, COLL(b) AS pgshard_coll_4 FROM t",
     "grouped | group~2 group~3 plain* plain* | - | limit -1 offset 0 | -"},
    {"select distinct a, b from t order by b desc limit 5 offset 1",
     "SELECT DISTINCT a, b, COLL(a) AS pgshard_coll_3, COLL(b) AS pgshard_coll_4 FROM t",
     "grouped | group~2 group~3 plain* plain* | 1 desc nf | limit 5 offset 1 | -"},
    {"select distinct lower(a) as l from t order by l",
     "SELECT DISTINCT lower(a) AS l, COLL(lower(a)) AS pgshard_coll_2 FROM t",
     "grouped | group~1 plain* | 0 nl | limit -1 offset 0 | -"},
};

/* The shard query with each hidden collation column written COLL(expr) to keep the cases
 * readable (where the deparser writes the cast as expr::pg_catalog.text). */
static void abbreviate(const char *sql, text_buf *t)
{
    static const char head[] = "pg_catalog.pg_collation_for(CASE WHEN false THEN ";
    static const char tail[] = "::pg_catalog.text END)";
    while (*sql) {
        const char *h = strstr(sql, head);
        const char *e = h ? strstr(h, tail) : NULL;
        if (!h || !e) {
            add(t, "%s", sql);
            return;
        }
        add(t, "%.*sCOLL(%.*s)", (int)(h - sql), sql, (int)(e - h - (sizeof head - 1)), h + sizeof head - 1);
        sql = e + sizeof tail - 1;
    }
}

static void test_plans(void **state)
{
    (void)state;
    int failed = 0;
    for (size_t i = 0; i < N(plans); i++) {
        const plan_case *c = &plans[i];
        prs_scatter p;
        int rc = prs_scatter_plan(c->sql, strlen(c->sql), &test_ctx, &p);
        text_buf t = {.len = 0}, q = {.len = 0};
        plan_text(&p, &t);
        if (p.sql)
            abbreviate(p.sql, &q);
        if (rc != 0 || !p.sql || strcmp(q.s, c->shard_sql) != 0 || strcmp(t.s, c->plan) != 0) {
            print_error("%s\n  rc %d %s %s\n  want %s\n  got  %s\n  want %s\n  got  %s\n", c->sql, rc,
                        p.sqlstate, p.msg, c->shard_sql, p.sql ? q.s : "(null)", c->plan, t.s);
            failed++;
        }
        prs_scatter_free(&p);
    }
    assert_int_equal(failed, 0);
}

typedef struct refusal_case {
    const char *sql;
    const char *sqlstate;
    const char *fragment;
} refusal_case;

static const refusal_case refusals[] = {
    {"select a from t union select b from u", "0A000", "subquery (or CTE, or UNION...)"},
    {"select a from t intersect select b from u", "0A000", "subquery (or CTE, or UNION...)"},
    {"with c as (select 1 from t) select * from c", "0A000", "subquery (or CTE, or UNION...)"},
    {"select * from (select a from t) s", "0A000", "subquery (or CTE, or UNION...)"},
    {"select a from t where b in (select b from u)", "0A000", "subquery (or CTE, or UNION...)"},
    {"select a, (select 1) from t", "0A000", "subquery (or CTE, or UNION...)"},
    {"values (1), (2)", "0A000", "subquery (or CTE, or UNION...)"},
    {"select row_number() over () from t", "0A000", "window functions"},
    {"select a from t window w as (order by a)", "0A000", "window functions"},
    {"select distinct on (a) a, b from t", "0A000", "DISTINCT ON"},
    {"select a, count(*) from t group by rollup (a)", "0A000", "ROLLUP"},
    {"select a, count(*) from t group by grouping sets ((a), ())", "0A000", "GROUPING SETS"},
    {"select string_agg(a, ',') from t", "0A000", "the aggregate string_agg cannot be combined"},
    {"select a, array_agg(b) from t group by a", "0A000", "the aggregate array_agg cannot be combined"},
    {"select stddev(x) from t", "0A000", "the aggregate stddev cannot be combined"},
    {"select jsonb_object_agg_unique(a, b) from t", "0A000", "the aggregate jsonb_object_agg_unique"},
    {"select myschema.count(*) from t", "0A000", "the aggregate myschema.count cannot be combined"},
    {"select percentile_cont(0.5) within group (order by a) from t", "0A000", "percentile_cont"},
    {"select count(a order by a) from t", "0A000", "with ORDER BY or WITHIN GROUP"},
    {"select sum(a) / count(a) from t", "0A000", "an expression over an aggregate"},
    {"select count(*) + 1 from t", "0A000", "an expression over an aggregate"},
    {"select coalesce(sum(x), 0) from t group by a", "0A000", "an expression over an aggregate"},
    {"select count(distinct b) from t", "0A000",
     "count(DISTINCT ...) is exact across shards only on the shard key"},
    {"select count(distinct tenant_id) from t, u", "0A000", "only on the shard key"},
    {"select sum(distinct x) from t", "0A000", "sum(DISTINCT ...) cannot be combined"},
    {"select avg(distinct x) from t", "0A000", "avg(DISTINCT ...) cannot be combined"},
    {"select a from t limit $1 offset $1", "0A000", "the parameter $1 of a cross-shard LIMIT is replaced"},
    {"select a from t where b = $2 limit $1 offset $2", "0A000", "$2 of a cross-shard OFFSET"},
    {"select a, $1 from t limit $1", "0A000", "may not be used elsewhere"},
    {"select a from t order by a + $1 limit $1", "0A000", "may not be used elsewhere"},
    {"select a from t limit $1 + 1", "0A000", "LIMIT must be a constant or a bare parameter"},
    {"select a from t limit $1::int", "0A000", "LIMIT must be a constant or a bare parameter"},
    {"select a from t offset -$1", "0A000", "OFFSET must be a constant or a bare parameter"},
    {"select a from t limit 1 + 1", "0A000", "LIMIT must be a constant"},
    {"select a from t limit 1.5", "0A000", "LIMIT must be an integer constant"},
    {"select a from t limit -1", "2201W", "LIMIT must not be negative"},
    {"select a from t order by a fetch first 2 rows with ties", "0A000", "WITH TIES"},
    {"select a from t for update", "0A000", "FOR UPDATE/SHARE"},
    {"select a into x from t", "0A000", "SELECT INTO"},
    {"select a from t order by a using <", "0A000", "USING"},
    {"select * from t group by a", "0A000", "SELECT * with GROUP BY"},
    {"select distinct * from t", "0A000", "SELECT DISTINCT *"},
    {"select a, b, count(*) from t group by a", "0A000", "must be an aggregate or a GROUP BY expression"},
    {"select a, count(*) from t group by a order by b", "0A000", "ORDER BY with GROUP BY or aggregates"},
    {"select distinct a from t order by b", "42P10", "must appear in select list"},
    {"select distinct a, count(*) from t group by a order by sum(x)", "42P10", "must appear in select list"},
    {"select lower(g) as g, count(*) from t group by g", "0A000", "must be an aggregate or a GROUP BY"},
    {"select a as g, count(*) from t where g > 0 group by g", "0A000", "must be an aggregate or a GROUP BY"},
    {"select a as k, b as k, sum(x) from t group by k", "42702", "GROUP BY \"k\" is ambiguous"},
    {"select sum(x) as k from t group by k", "42803", "aggregate functions are not allowed in GROUP BY"},
    {"select a from t group by a having 1", "0A000", "this HAVING cannot be evaluated"},
    {"select a, count(*) from t group by 3", "42P10", "GROUP BY position 3 is not in select list"},
    {"select count(*) from t group by 1", "42803", "aggregate functions are not allowed in GROUP BY"},
    {"select a from t order by 2", "42P10", "ORDER BY position 2 is not in select list"},
    {"select a from t group by a having lower(a) = 'x'", "0A000", "this HAVING cannot be evaluated"},
    {"select a from t group by a having count(*) > $1", "0A000", "this HAVING cannot be evaluated"},
    {"select a from t group by a having count(*) between 1 and 5", "0A000",
     "this HAVING cannot be evaluated"},
    {"select a from t group by a having sum(x) / 2 > 1", "0A000",
     "an expression over an aggregate in HAVING"},
    {"select count(*) from t having 1 = 1", "0A000", "this HAVING cannot be evaluated"},
    {"select * from generate_series(1, 3)", "0A000", "only tables and joins"},
    {"select 1", "0A000", "must read a table"},
    {"select 1 from t; select 2 from t", "0A000", "exactly one SELECT"},
    {"insert into t values (1)", "0A000", "exactly one SELECT"},
    {"selec 1", "42601", "syntax error"},
};

static void test_refusals(void **state)
{
    (void)state;
    int failed = 0;
    for (size_t i = 0; i < N(refusals); i++) {
        const refusal_case *c = &refusals[i];
        prs_scatter p;
        int rc = prs_scatter_plan(c->sql, strlen(c->sql), &test_ctx, &p);
        bool ok = rc == 1 && !p.sql && strcmp(p.sqlstate, c->sqlstate) == 0 &&
                  strncmp(p.msg, "pgshard: ", 9) == 0 && strstr(p.msg, c->fragment) && p.ncols == 0 &&
                  p.ninsns == 0 && !p.str;
        if (!ok) {
            print_error("%s\n  rc %d %s %s\n  want %s ...%s...\n", c->sql, rc, p.sqlstate, p.msg, c->sqlstate,
                        c->fragment);
            failed++;
        }
        prs_scatter_free(&p);
    }
    assert_int_equal(failed, 0);
}

/* The shard-key question names the table the column belongs to, through aliases. */
static void test_key_question(void **state)
{
    (void)state;
    static const struct {
        const char *sql, *schema, *table;
    } cases[] = {
        {"select count(distinct tenant_id) from orders", "-", "orders"},
        {"select count(distinct o.tenant_id) from shop.orders o join items i on o.id = i.oid", "shop",
         "orders"},
        {"select count(distinct items.tenant_id) from orders o join items on o.id = items.oid", "-", "items"},
        {"select count(distinct shop.items.tenant_id) from orders, shop.items", "shop", "items"},
    };
    for (size_t i = 0; i < N(cases); i++) {
        key_probe kp = {.calls = 0};
        prs_scatter_ctx ctx = {is_key, &kp};
        prs_scatter p;
        assert_int_equal(prs_scatter_plan(cases[i].sql, strlen(cases[i].sql), &ctx, &p), 0);
        assert_int_equal(kp.calls, 1);
        assert_string_equal(kp.schema, cases[i].schema);
        assert_string_equal(kp.table, cases[i].table);
        assert_string_equal(kp.column, "tenant_id");
        prs_scatter_free(&p);
    }
    /* Without a way to ask, count(DISTINCT) is refused. */
    const char *sql = "select count(distinct tenant_id) from t";
    prs_scatter_ctx none = {NULL, NULL};
    prs_scatter p;
    assert_int_equal(prs_scatter_plan(sql, strlen(sql), &none, &p), 1);
    assert_int_equal(prs_scatter_plan(sql, strlen(sql), NULL, &p), 1);
    assert_string_equal(p.sqlstate, "0A000");
    prs_scatter_free(&p);
}

/* The text passed is sql[0..len), not up to a NUL. */
static void test_length(void **state)
{
    (void)state;
    const char *sql = "select a from t order by a; garbage";
    prs_scatter p;
    assert_int_equal(prs_scatter_plan(sql, 26, &test_ctx, &p), 0);
    assert_string_equal(p.sql, "SELECT a, pg_catalog.pg_collation_for(CASE WHEN false THEN "
                               "a::pg_catalog.text END) AS pgshard_coll_2 FROM t ORDER BY a");
    prs_scatter_free(&p);
    prs_scatter_free(&p); /* freeing twice is harmless */
    assert_null(p.sql);
}

static void test_describe(void **state)
{
    (void)state;
    static const struct {
        const char *sql, *text;
    } cases[] = {
        {"select a from t", "merge: concat"},
        {"select a from t limit 10 offset 5", "merge: concat; offset 5; limit 10"},
        {"select a, b from t order by b desc, a nulls first",
         "merge: sorted by 2 desc, 1 nulls first; hide 3-4"},
        {"select a from t order by lower(b) desc nulls last", "merge: sorted by 2 desc nulls last; hide 2-3"},
        {"select count(*) from t", "merge: one group; count 1"},
        {"select a, sum(x), avg(y) from t group by a having count(*) > 1 order by 2 desc limit 10 offset 5",
         "merge: group by 1; sum 2; avg 3 (count 4); count 6; having; sort 2 desc; offset 5; limit 10; hide "
         "4-7"},
        {"select distinct a, b from t order by a", "merge: group by 1, 2; sort 1; hide 3-4"},
    };
    for (size_t i = 0; i < N(cases); i++) {
        prs_scatter p;
        assert_int_equal(prs_scatter_plan(cases[i].sql, strlen(cases[i].sql), &test_ctx, &p), 0);
        char buf[256] = "";
        prs_scatter_describe(&p, buf, sizeof buf);
        assert_string_equal(buf, cases[i].text);
        /* Appends, and truncates to the buffer. */
        char small[12] = "x ";
        prs_scatter_describe(&p, small, sizeof small);
        assert_int_equal(strncmp(small, "x merge: ", 9), 0);
        assert_true(strlen(small) < sizeof small);
        prs_scatter_free(&p);
    }
}

/* Deep nesting is refused, not recursed into without bound. */
static void test_deep(void **state)
{
    (void)state;
    size_t terms = 2000, len = 0;
    char *sql = malloc(terms * 2 + 64);
    assert_non_null(sql);
    memcpy(sql, "select 1", 8);
    len = 8;
    for (size_t i = 1; i < terms; i++) {
        sql[len++] = '+';
        sql[len++] = '1';
    }
    memcpy(sql + len, " from t", 7);
    len += 7;
    prs_scatter p;
    assert_int_equal(prs_scatter_plan(sql, len, &test_ctx, &p), 1);
    assert_string_equal(p.sqlstate, "54001");
    assert_null(p.sql);
    prs_scatter_free(&p);
    free(sql);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plans),  cmocka_unit_test(test_key_question), cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_length), cmocka_unit_test(test_describe),     cmocka_unit_test(test_deep),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

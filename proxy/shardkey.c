/* The shard of one statement from its tenant key. The parser says which tables a statement
 * names and where key values sit (literal i, parameter $n, an IN list, each INSERT row);
 * this file reads those values, maps each to a shard and decides: one shard, any shard (no
 * sharded table), or a refusal that names the table and says how to add the key. It never
 * guesses a shard. No I/O; the caller owns every buffer. */
#include <stdio.h>
#include <string.h>

#include "common/buf.h"
#include "common/sqlstate.h"
#include "proxy/shardkey.h"
#include "shardmap/key.h"

static void sk_refuse(px_sk_result *out, const char *sqlstate, const char *fmt, const char *a, const char *b)
{
    out->verdict = PX_SK_REFUSE;
    snprintf(out->sqlstate, sizeof out->sqlstate, "%s", sqlstate);
    snprintf(out->msg, sizeof out->msg, fmt, a, b);
}

/* What the statement's tables say before any key is read. */
typedef struct sk_scan {
    const px_table *sharded; /* the first sharded table named, for messages and the key type */
    const px_table *other;   /* a second sharded table named, or NULL */
    uint32_t key_cols;       /* bit per key column of the sharded tables named */
    bool unlisted;           /* a table the config does not list: it lives on default_shard */
    bool omni;
} sk_scan;

static void sk_scan_tables(const px_sk_input *in, sk_scan *sc)
{
    const prs_query_info *qi = in->qi;
    memset(sc, 0, sizeof *sc);
    for (int i = 0; i < qi->n_tables; i++) {
        const char *schema = prs_info_str(qi, qi->tables[i].schema);
        const char *name = prs_info_str(qi, qi->tables[i].name);
        if (!name)
            continue;
        const px_table *t = px_tables_find(in->tables, schema, name);
        if (!t) {
            sc->unlisted = true;
        } else if (t->omnisharded) {
            sc->omni = true;
        } else {
            if (!sc->sharded)
                sc->sharded = t;
            else if (t != sc->sharded && !sc->other)
                sc->other = t;
            sc->key_cols |= 1u << t->key_column;
        }
    }
}

/* The key type of a key column: that of a sharded table named whose key it is. */
static uint32_t sk_column_oid(const px_sk_input *in, int col, const sk_scan *sc)
{
    const prs_query_info *qi = in->qi;
    for (int i = 0; i < qi->n_tables; i++) {
        const char *name = prs_info_str(qi, qi->tables[i].name);
        const px_table *t =
            name ? px_tables_find(in->tables, prs_info_str(qi, qi->tables[i].schema), name) : NULL;
        if (t && !t->omnisharded && t->key_column == col)
            return t->key_oid;
    }
    return sc->sharded->key_oid;
}

/* Maps a key to its shard; records the last key for SHOW ROUTE. */
static int sk_map(const px_sk_input *in, const sm_key *k, px_sk_result *out)
{
    sm_route_why why;
    int shard = sm_map_route(in->map, k, &why);
    if (shard < 0)
        return shard;
    out->has_key = true;
    out->why = why;
    out->key_value = *k; /* its text is made only when asked for (SHOW ROUTE) */
    if (k->type == SM_KEY_TEXT) {
        size_t n = k->v.text.len < sizeof out->key_bytes ? k->v.text.len : sizeof out->key_bytes;
        memcpy(out->key_bytes, k->v.text.p, n);
        out->key_value.v.text.p = out->key_bytes;
        out->key_value.v.text.len = n;
    }
    return shard;
}

const char *px_sk_key_text(const px_sk_result *r, char *buf, size_t cap)
{
    if (!r->has_key)
        return "";
    sm_key_buf kb;
    size_t n;
    const char *txt = sm_key_canonical(&r->key_value, &kb, &n);
    snprintf(buf, cap, "%.*s", (int)(n < cap ? n : cap - 1), txt);
    return buf;
}

/* One Bind parameter (1-based n): its bytes (NULL for SQL NULL), format and declared type. */
static int sk_bind_param(const px_sk_bind *b, uint32_t n, const uint8_t **val, int32_t *vlen, int *binary,
                         uint32_t *oid)
{
    pgs_reader rd = pgs_reader_make(b->body, b->len);
    const char *portal, *stmt;
    uint16_t nfmt, nparams, fmt = 0;
    if (pgs_rd_cstr(&rd, &portal) < 0 || pgs_rd_cstr(&rd, &stmt) < 0 || pgs_rd_be16(&rd, &nfmt) < 0)
        return -1;
    for (uint16_t i = 0; i < nfmt; i++) {
        uint16_t f;
        if (pgs_rd_be16(&rd, &f) < 0)
            return -1;
        if (i == 0 || i + 1u == n)
            fmt = (nfmt == 1 || i + 1u == n) ? f : fmt;
    }
    if (nfmt > 1 && n > nfmt)
        return -1;
    if (pgs_rd_be16(&rd, &nparams) < 0 || n == 0 || n > nparams)
        return -1;
    for (uint32_t i = 1; i <= n; i++) {
        uint32_t l;
        const uint8_t *p = NULL;
        if (pgs_rd_be32(&rd, &l) < 0)
            return -1;
        if (l != UINT32_MAX && pgs_rd_bytes(&rd, l, &p) < 0)
            return -1;
        if (i == n) {
            *val = l == UINT32_MAX ? NULL : p;
            *vlen = l == UINT32_MAX ? -1 : (int32_t)l;
        }
    }
    *binary = fmt == 1;
    *oid = n <= b->ntypes ? pgs_be32(b->types + (size_t)4 * (n - 1)) : 0;
    return 0;
}

/* Splits the text form of a one-dimensional array ('{1,2,"x"}') and maps every element.
 * *shard is set to the element's shard when all agree, -2 when they do not. */
static int sk_text_array(const px_sk_input *in, uint32_t oid, const char *s, size_t len, int *shard,
                         px_sk_result *out)
{
    size_t i = 0;
    while (i < len && (s[i] == ' ' || s[i] == '\t'))
        i++;
    if (i >= len || s[i++] != '{')
        return SM_ESYNTAX;
    char el[256];
    while (i < len) {
        size_t n = 0;
        bool quoted = s[i] == '"';
        if (quoted)
            i++;
        while (i < len && (quoted ? s[i] != '"' : (s[i] != ',' && s[i] != '}'))) {
            if (quoted && s[i] == '\\' && i + 1 < len)
                i++;
            if (n + 1 >= sizeof el)
                return SM_ESYNTAX;
            el[n++] = s[i++];
        }
        if (quoted && i < len)
            i++;
        if (!quoted && n == 4 && strncasecmp(el, "NULL", 4) == 0)
            return SM_ESYNTAX;
        if (n || quoted) {
            sm_key k;
            int r = sm_key_from_text(&k, oid, el, n);
            if (r < 0)
                return r;
            int sh = sk_map(in, &k, out);
            if (sh < 0)
                return sh;
            *shard = *shard == -1 || *shard == sh ? sh : -2;
        }
        if (i < len && s[i] == '}')
            return *shard == -1 ? SM_ESYNTAX : 0;
        i++;
    }
    return SM_ESYNTAX;
}

/* A binary one-dimensional array parameter: ndim, flags, element oid, then per dimension
 * (length, lower bound), then (length, bytes) per element. */
static int sk_binary_array(const px_sk_input *in, uint32_t oid, const uint8_t *p, size_t len, int *shard,
                           px_sk_result *out)
{
    pgs_reader rd = pgs_reader_make(p, len);
    uint32_t ndim, flags, elem, dim, lb;
    if (pgs_rd_be32(&rd, &ndim) < 0 || pgs_rd_be32(&rd, &flags) < 0 || pgs_rd_be32(&rd, &elem) < 0)
        return SM_EBINARY;
    if (ndim != 1 || pgs_rd_be32(&rd, &dim) < 0 || pgs_rd_be32(&rd, &lb) < 0 || dim == 0)
        return SM_EBINARY;
    for (uint32_t i = 0; i < dim; i++) {
        uint32_t l;
        const uint8_t *v;
        if (pgs_rd_be32(&rd, &l) < 0 || l == UINT32_MAX || pgs_rd_bytes(&rd, l, &v) < 0)
            return SM_EBINARY;
        sm_key k;
        int r = sm_key_from_binary(&k, elem ? elem : oid, v, l);
        if (r < 0)
            return r;
        int sh = sk_map(in, &k, out);
        if (sh < 0)
            return sh;
        *shard = *shard == -1 || *shard == sh ? sh : -2;
    }
    return 0;
}

/* The shard of one key reference: >= 0, -2 when an array spans shards, or a negative SM_E*
 * (-100 and below: PX_SK_NULL, the value is NULL). */
#define SK_NULL (-100)
#define SK_UNKNOWN (-101)  /* a parameter of a Parse whose Bind is not here yet */
#define SK_BAD_TYPE (-102) /* a parameter declared with a type a key is not hashed as */
static int sk_ref_shard(const px_sk_input *in, const prs_key_ref *ref, const sk_scan *sc, px_sk_result *out)
{
    uint32_t oid = sk_column_oid(in, ref->column, sc);
    sm_key k;
    int r, shard = -1;
    if (ref->src == PRS_KEY_LITERAL || ref->src == PRS_KEY_LITERAL_ARRAY) {
        if (!in->lex || ref->index >= in->lex->n_lits)
            return SM_EINVAL;
        const prs_literal *lit = &in->lex->lits[ref->index];
        if (ref->src == PRS_KEY_LITERAL && lit->kind == PRS_LIT_NUMBER && lit->len < 64 &&
            lit->start + lit->len <= in->len) {
            /* A number is its text, as written: no copy but for a leading minus. */
            char num[66];
            num[0] = '-';
            memcpy(num + 1, in->sql + lit->start, lit->len);
            const char *p = ref->negated ? num : num + 1;
            if ((r = sm_key_from_text(&k, oid, p, lit->len + (ref->negated ? 1 : 0))) < 0)
                return r;
            return sk_map(in, &k, out);
        }
        pgs_buf v = PGS_BUF_INIT;
        if (ref->negated)
            pgs_buf_append_u8(&v, '-');
        if (prs_literal_value(in->sql, in->len, &in->lex->lits[ref->index], &v) < 0 || pgs_buf_failed(&v)) {
            pgs_buf_free(&v);
            return SM_ESYNTAX;
        }
        if (ref->src == PRS_KEY_LITERAL_ARRAY)
            r = sk_text_array(in, oid, (const char *)v.data, v.len, &shard, out);
        else if ((r = sm_key_from_text(&k, oid, (const char *)v.data, v.len)) == 0)
            r = shard = sk_map(in, &k, out);
        pgs_buf_free(&v);
        return r < 0 ? r : shard;
    }
    if (ref->src != PRS_KEY_PARAM && ref->src != PRS_KEY_PARAM_ARRAY)
        return SM_EINVAL;
    if (!in->bind)
        return SK_UNKNOWN;
    const uint8_t *val = NULL;
    int32_t vlen = -1;
    int binary = 0;
    uint32_t decl = 0;
    if (sk_bind_param(in->bind, ref->index, &val, &vlen, &binary, &decl) < 0)
        return SM_EINVAL;
    if (!val)
        return SK_NULL;
    if (ref->src == PRS_KEY_PARAM_ARRAY) {
        r = binary ? sk_binary_array(in, oid, val, (size_t)vlen, &shard, out)
                   : sk_text_array(in, oid, (const char *)val, (size_t)vlen, &shard, out);
        return r < 0 ? r : shard;
    }
    bool key_type = decl == SM_OID_INT2 || decl == SM_OID_INT4 || decl == SM_OID_INT8 ||
                    decl == SM_OID_TEXT || decl == SM_OID_VARCHAR || decl == SM_OID_UUID;
    if (decl && !key_type)
        return SK_BAD_TYPE; /* a float or numeric parameter compares by value: not hashed here */
    uint32_t t = key_type ? decl : oid;
    r = binary ? sm_key_from_binary(&k, t, val, (size_t)vlen)
               : sm_key_from_text(&k, oid, (const char *)val, (size_t)vlen);
    return r < 0 ? r : sk_map(in, &k, out);
}

/* A value error reads as the server's would have. */
static void sk_value_error(px_sk_result *out, int err, const px_table *t)
{
    if (err == SK_NULL) {
        sk_refuse(out, PGS_SQLSTATE_FEATURE_NOT_SUPPORTED, "pgshard: the shard key of table \"%s\" is NULL%s",
                  t->name, ": a row or a filter needs a tenant");
        return;
    }
    if (err == SK_BAD_TYPE) {
        sk_refuse(out, PGS_SQLSTATE_FEATURE_NOT_SUPPORTED,
                  "pgshard: a shard key parameter for table \"%s\" is declared with a type other than the "
                  "key's%s: send it as an integer, text or uuid",
                  t->name, "");
        return;
    }
    if (err == SM_EINVAL) {
        sk_refuse(out, PGS_SQLSTATE_PROTOCOL_VIOLATION,
                  "pgshard: a shard key of table \"%s\" refers to a missing parameter%s", t->name, "");
        return;
    }
    sk_refuse(out, sm_sqlstate(err), "pgshard: invalid shard key for table \"%s\": %s", t->name,
              sm_strerror(err));
}

/* Every INSERT row must carry a key, and all of them one shard. */
static void sk_insert_rows(const px_sk_input *in, const sk_scan *sc, px_sk_result *out)
{
    const prs_query_info *qi = in->qi;
    int shard = -1;
    for (int row = 0; row < qi->insert_rows; row++) {
        int rs = -1;
        for (int i = 0; i < qi->n_keys && rs < 0; i++) {
            const prs_key_ref *ref = &qi->keys[i];
            if (ref->row != row || !(sc->key_cols & (1u << ref->column)))
                continue;
            rs = sk_ref_shard(in, ref, sc, out);
            if (rs == SK_UNKNOWN)
                return; /* decided at the Bind: any shard for now */
            if (rs < 0) {
                sk_value_error(out, rs, sc->sharded);
                return;
            }
        }
        if (rs < 0) {
            sk_refuse(out, PGS_SQLSTATE_FEATURE_NOT_SUPPORTED,
                      "pgshard: a row inserted into sharded table \"%s\" has no value for its shard key "
                      "(name the %s column in the column list and give it in every VALUES row)",
                      sc->sharded->name, sc->sharded->shard_key);
            return;
        }
        if (shard >= 0 && rs != shard) {
            sk_refuse(out, PGS_SQLSTATE_FEATURE_NOT_SUPPORTED,
                      "pgshard: the rows inserted into \"%s\" belong to different shards%s; insert each "
                      "tenant's rows in its own statement",
                      sc->sharded->name, "");
            return;
        }
        shard = rs;
    }
    out->verdict = PX_SK_SHARD;
    out->shard = shard;
    out->source = "key";
}

/* The key conditions of a WHERE: refs with one cond are alternatives (IN), different conds
 * all hold, so any cond whose values all sit on one shard decides. */
static void sk_where(const px_sk_input *in, const sk_scan *sc, px_sk_result *out)
{
    const prs_query_info *qi = in->qi;
    bool spans = false, unknown = false;
    for (int i = 0; i < qi->n_keys; i++) {
        const prs_key_ref *ref = &qi->keys[i];
        if (!(sc->key_cols & (1u << ref->column)) || ref->row >= 0)
            continue;
        bool first = true;
        for (int j = 0; j < i; j++)
            if (qi->keys[j].cond == ref->cond && (sc->key_cols & (1u << qi->keys[j].column)))
                first = false;
        if (!first)
            continue;
        int shard = -1;
        for (int j = i; j < qi->n_keys && shard != -2; j++) {
            const prs_key_ref *alt = &qi->keys[j];
            if (alt->cond != ref->cond || !(sc->key_cols & (1u << alt->column)))
                continue;
            int s = sk_ref_shard(in, alt, sc, out);
            if (s == SK_UNKNOWN) {
                unknown = true;
                shard = -3;
                break;
            }
            if (s < 0 && s != -2) {
                sk_value_error(out, s, sc->sharded);
                return;
            }
            shard = shard == -1 || shard == s ? s : -2;
        }
        if (shard >= 0) {
            out->verdict = PX_SK_SHARD;
            out->shard = shard;
            out->source = "key";
            return;
        }
        spans = spans || shard == -2;
    }
    if (unknown && !spans)
        return; /* decided at the Bind: any shard for now */
    const char *col = sc->sharded->shard_key;
    if (spans)
        sk_refuse(out, PGS_SQLSTATE_FEATURE_NOT_SUPPORTED,
                  "pgshard: the %s values given for table \"%s\" belong to different shards; query one "
                  "shard's tenants at a time (cross-shard queries are not supported yet)",
                  col, sc->sharded->name);
    else
        sk_refuse(out, PGS_SQLSTATE_FEATURE_NOT_SUPPORTED,
                  "pgshard: a query on sharded table \"%s\" must name its tenant: add WHERE %s = ... (or "
                  "SET pgshard.tenant, or a /* pgshard: tenant=... */ comment)",
                  sc->sharded->name, col);
}

static void sk_keyed(const px_sk_input *in, const sk_scan *sc, px_sk_result *out)
{
    const prs_query_info *qi = in->qi;
    const char *name = sc->sharded->name;
    if (in->tenant) {
        sm_key k;
        int r = sm_key_from_text(&k, sc->sharded->key_oid, in->tenant, in->tenant_len);
        if (r < 0 || (r = sk_map(in, &k, out)) < 0) {
            sk_value_error(out, r, sc->sharded);
            return;
        }
        out->verdict = PX_SK_SHARD;
        out->shard = r;
        out->source = "tenant";
        return;
    }
    /* The key conditions found are not tied to a table: with two sharded tables, or one named
     * twice, a key may restrict one of them and leave the other reading a whole shard (a
     * wrong answer, not an error). Until joins on the key are proven, such statements need
     * the tenant said outright. */
    if (sc->other)
        return sk_refuse(
            out, PGS_SQLSTATE_FEATURE_NOT_SUPPORTED,
            "pgshard: a query naming the sharded tables \"%s\" and \"%s\" together cannot be "
            "routed by its WHERE yet: use SET pgshard.tenant or a /* pgshard: tenant=... */ comment",
            name, sc->other->name);
    if (qi->flags & PRS_F_TABLE_REPEATED)
        return sk_refuse(out, PGS_SQLSTATE_FEATURE_NOT_SUPPORTED,
                         "pgshard: a query naming sharded table \"%s\" more than once (a self-join or a "
                         "subquery) cannot be routed by its WHERE yet%s: use SET pgshard.tenant or a "
                         "/* pgshard: tenant=... */ comment",
                         name, "");
    if (qi->flags & PRS_F_KEY_UPDATE)
        return sk_refuse(out, PGS_SQLSTATE_FEATURE_NOT_SUPPORTED,
                         "pgshard: an UPDATE may not change the shard key of table \"%s\"%s: delete the row "
                         "and insert it with the new key",
                         name, "");
    if (qi->flags & PRS_F_MULTI)
        return sk_refuse(out, PGS_SQLSTATE_FEATURE_NOT_SUPPORTED,
                         "pgshard: a query string of several statements on sharded table \"%s\" needs SET "
                         "pgshard.tenant or a /* pgshard: tenant=... */ comment%s",
                         name, "");
    if (qi->kind == PRS_KIND_COPY)
        return sk_refuse(out, PGS_SQLSTATE_FEATURE_NOT_SUPPORTED,
                         "pgshard: COPY on sharded table \"%s\" needs SET pgshard.tenant (or "
                         "pgshard.shard)%s",
                         name, "");
    if (qi->kind == PRS_KIND_INSERT && qi->insert_rows > 0)
        sk_insert_rows(in, sc, out);
    else
        sk_where(in, sc, out);
}

void px_sk_route(const px_sk_input *in, px_sk_result *out)
{
    memset(out, 0, sizeof *out);
    out->source = "any";
    int def = in->default_shard;
    if (in->pinned_shard >= 0) {
        out->verdict = PX_SK_SHARD;
        out->shard = in->pinned_shard;
        out->source = "shard";
        return;
    }
    if (!in->qi) {
        out->verdict = PX_SK_SHARD;
        out->shard = def;
        out->source = "default";
        return;
    }
    if (in->qi->kind == PRS_KIND_EXECUTE && !in->tenant && px_tables_count(in->tables) > 0) {
        /* EXECUTE's statement and its arguments' places are not analysed here yet. */
        sk_refuse(out, PGS_SQLSTATE_FEATURE_NOT_SUPPORTED,
                  "pgshard: EXECUTE of an SQL prepared statement cannot be routed by key yet%s%s: use the "
                  "extended protocol, or SET pgshard.tenant / pgshard.shard",
                  "", "");
        return;
    }
    sk_scan sc;
    sk_scan_tables(in, &sc);
    if (sc.sharded) {
        sk_keyed(in, &sc, out);
        if (out->verdict == PX_SK_SHARD && sc.unlisted && out->shard != def) {
            char a[16];
            snprintf(a, sizeof a, "%d", out->shard);
            sk_refuse(out, PGS_SQLSTATE_FEATURE_NOT_SUPPORTED,
                      "pgshard: the query joins sharded table \"%s\" (here on shard %s) with a table that is "
                      "not in the config and lives on default_shard",
                      sc.sharded->name, a);
        }
        return;
    }
    if (sc.unlisted) {
        out->verdict = PX_SK_SHARD;
        out->shard = def;
        out->source = "default";
        return;
    }
    if (sc.omni && !in->qi->read_only && in->qi->kind != PRS_KIND_SELECT)
        sk_refuse(out, PGS_SQLSTATE_FEATURE_NOT_SUPPORTED,
                  "pgshard: writing omnisharded tables needs SET pgshard.shard = N on each shard%s%s "
                  "(writes to every shard come with cross-shard support)",
                  "", "");
}

/* The shard of one statement from its tenant key. The parser says which tables a statement
 * names, where each is named (its occurrences), where key values sit (literal i, parameter
 * $n, an IN list, each INSERT row) and which occurrences each key condition restricts once
 * equalities are followed; this file reads those values, maps each to a shard and decides:
 * one shard when every occurrence of a sharded table is restricted to that shard, any shard
 * (no sharded table), or a refusal that names the table and says how to add the key. It
 * never guesses a shard. No I/O; the caller owns every buffer. */
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

/* A 0A000 refusal whose message the caller writes into out->msg (messages with more parts
 * than sk_refuse takes; a long one is cut). */
static char *sk_refuse_msg(px_sk_result *out)
{
    out->verdict = PX_SK_REFUSE;
    snprintf(out->sqlstate, sizeof out->sqlstate, "%s", PGS_SQLSTATE_FEATURE_NOT_SUPPORTED);
    return out->msg;
}

/* What the statement's tables say before any key is read. */
typedef struct sk_scan {
    const px_table *tab[PRS_MAX_TABLES]; /* the config's entry for tables[i], NULL when not listed */
    const px_table *sharded;             /* the first sharded table named, for messages */
    uint32_t sharded_tables;             /* bit i: tables[i] is sharded */
    bool unlisted;                       /* a table the config does not list: it lives on default_shard */
    bool omni;
} sk_scan;

static void sk_scan_tables(const px_sk_input *in, sk_scan *sc)
{
    const prs_query_info *qi = in->qi;
    sc->sharded = NULL;
    sc->sharded_tables = 0;
    sc->unlisted = sc->omni = false;
    for (int i = 0; i < qi->n_tables; i++) {
        const char *name = prs_info_str(qi, qi->tables[i].name);
        const px_table *t =
            name ? px_tables_find(in->tables, prs_info_str(qi, qi->tables[i].schema), name) : NULL;
        sc->tab[i] = t;
        if (!name)
            continue;
        if (!t) {
            sc->unlisted = true;
        } else if (t->omnisharded) {
            sc->omni = true;
        } else {
            sc->sharded = sc->sharded ? sc->sharded : t;
            sc->sharded_tables |= 1u << i;
        }
    }
}

/* Maps a key to its shard; records the last key for SHOW ROUTE. */
static int sk_map(const px_sk_input *in, const sm_key *k, px_sk_result *out)
{
    sm_route_why why;
    int shard = sm_map_route(in->map, k, &why);
    if (shard < 0)
        return shard;
    out->bucket = !out->has_key || out->bucket == (int64_t)why.bucket ? (int64_t)why.bucket : -1;
    if (why.frozen >= 0 && !out->frozen_move) {
        const sm_move *mv = sm_map_move(in->map, (size_t)why.frozen);
        out->frozen_move = mv->id;
        out->frozen_target = (int)mv->target;
    }
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
#define SK_REFUSED (-103)  /* out says why */
#define SK_SPLIT (-104)    /* INSERT rows of several shards, split per shard (two-phase commit) */
#define SK_SPANS (-2)      /* alternatives on several shards */
#define SK_NONE (-1)       /* no key restricts it */
static int sk_param_shard(const px_sk_input *in, uint32_t oid, uint32_t n, bool array, px_sk_result *out);
static int sk_ref_shard(const px_sk_input *in, const prs_key_ref *ref, uint32_t oid, px_sk_result *out)
{
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
    return sk_param_shard(in, oid, ref->index, ref->src == PRS_KEY_PARAM_ARRAY, out);
}

/* The shard of Bind parameter $n holding a key (or, with array, an array of keys) of type
 * oid: as sk_ref_shard. */
static int sk_param_shard(const px_sk_input *in, uint32_t oid, uint32_t n, bool array, px_sk_result *out)
{
    sm_key k;
    int r, shard = -1;
    if (!in->bind)
        return SK_UNKNOWN;
    const uint8_t *val = NULL;
    int32_t vlen = -1;
    int binary = 0;
    uint32_t decl = 0;
    if (sk_bind_param(in->bind, n, &val, &vlen, &binary, &decl) < 0)
        return SM_EINVAL;
    if (!val)
        return SK_NULL;
    if (array) {
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

/* Every INSERT row must carry a key of table t, and all of them one shard. */
static int sk_insert_rows(const px_sk_input *in, const px_table *t, px_sk_result *out, int *row_shards)
{
    const prs_query_info *qi = in->qi;
    int shard = SK_NONE;
    bool split = false;
    for (int row = 0; row < qi->insert_rows; row++) {
        int rs = SK_NONE;
        for (int i = 0; i < qi->n_keys && rs < 0; i++) {
            const prs_key_ref *ref = &qi->keys[i];
            if (ref->row != row || ref->column != t->key_column)
                continue;
            rs = sk_ref_shard(in, ref, t->key_oid, out);
            if (rs == SK_UNKNOWN)
                return SK_UNKNOWN; /* decided at the Bind: any shard for now */
            if (rs < 0) {
                sk_value_error(out, rs, t);
                return SK_REFUSED;
            }
        }
        if (rs < 0) {
            sk_refuse(out, PGS_SQLSTATE_FEATURE_NOT_SUPPORTED,
                      "pgshard: a row inserted into sharded table \"%s\" has no value for its shard key "
                      "(name the %s column in the column list and give it in every VALUES row)",
                      t->name, t->shard_key);
            return SK_REFUSED;
        }
        if (row_shards)
            row_shards[row] = rs;
        if (shard >= 0 && rs != shard && !in->split_inserts) {
            sk_refuse(out, PGS_SQLSTATE_FEATURE_NOT_SUPPORTED,
                      "pgshard: the rows inserted into \"%s\" belong to different shards%s; insert each "
                      "tenant's rows in its own statement (or set two_phase_commit = on)",
                      t->name, "");
            return SK_REFUSED;
        }
        split = split || (shard >= 0 && rs != shard);
        shard = rs;
    }
    return split ? SK_SPLIT : shard;
}

int px_sk_insert_shards(const px_sk_input *in, int *row_shards)
{
    const prs_query_info *qi = in->qi;
    sk_scan sc;
    sk_scan_tables(in, &sc);
    if (!qi || qi->n_occs != 1 || !(qi->occs[0].flags & PRS_OCC_VALUES) || !sc.tab[qi->occs[0].table])
        return -1;
    px_sk_result scratch;
    memset(&scratch, 0, sizeof scratch);
    return sk_insert_rows(in, sc.tab[qi->occs[0].table], &scratch, row_shards) == SK_SPLIT ? 0 : -1;
}

/* The occurrence among a slot's candidates whose table is sharded by the slot's column: the
 * only one that can own an unqualified column of that name; -1 when not exactly one. */
static int sk_slot_owner(const prs_query_info *qi, const sk_scan *sc, const prs_slot *s)
{
    int owner = -1;
    for (int o = 0; o < qi->n_occs; o++) {
        const px_table *t = (s->cands >> o) & 1 ? sc->tab[qi->occs[o].table] : NULL;
        if (t && !t->omnisharded && t->key_column == s->column) {
            if (owner >= 0)
                return -1;
            owner = o;
        }
    }
    return owner;
}

/* The slots whose key refs restrict occurrence x of table t (a bit per slot): those the
 * parser found reach x's key column, and unqualified columns whose owner is x or reaches it. */
static uint32_t sk_occ_slots(const prs_query_info *qi, const sk_scan *sc, int x, const px_table *t)
{
    uint32_t from = 0;
    for (int i = 0; i < qi->n_slots; i++) {
        const prs_slot *s = &qi->slots[i];
        if (!s->cands && s->occ == x && s->column == t->key_column)
            from |= s->from;
    }
    for (int i = 0; i < qi->n_slots; i++) {
        const prs_slot *s = &qi->slots[i];
        if (!s->cands || s->column != t->key_column)
            continue;
        int owner = sk_slot_owner(qi, sc, s);
        for (int j = 0; j < qi->n_slots && owner >= 0 && owner != x; j++) {
            const prs_slot *o = &qi->slots[j];
            if (!o->cands && o->occ == owner && o->column == s->column && ((from >> j) & 1))
                owner = x;
        }
        if (owner == x)
            from |= 1u << i;
    }
    return from;
}

/* The shards of conditions already read, for the next occurrence they restrict. */
typedef struct sk_memo {
    uint64_t done; /* bit per cond */
    int shard[PRS_MAX_KEYS];
    uint32_t oid[PRS_MAX_KEYS];
} sk_memo;

/* The shard of keys[i, end), one condition's alternatives, read as type oid: >= 0, SK_SPANS,
 * SK_UNKNOWN, or a value error. */
static int sk_cond_shard(const px_sk_input *in, int i, int end, uint32_t oid, sk_memo *m, px_sk_result *out)
{
    const prs_query_info *qi = in->qi;
    unsigned cond = qi->keys[i].cond;
    if (cond < PRS_MAX_KEYS && ((m->done >> cond) & 1) && m->oid[cond] == oid)
        return m->shard[cond];
    int shard = SK_NONE;
    for (; i < end && shard != SK_SPANS; i++) {
        int s = sk_ref_shard(in, &qi->keys[i], oid, out);
        if (s == SK_UNKNOWN || (s < 0 && s != SK_SPANS))
            return s;
        shard = shard == SK_NONE || shard == s ? s : SK_SPANS;
    }
    if (cond < PRS_MAX_KEYS) {
        m->done |= 1ull << cond;
        m->shard[cond] = shard;
        m->oid[cond] = oid;
    }
    return shard;
}

/* The shard of an occurrence's rows: the first condition restricting it whose values all sit
 * on one shard (conditions all hold, so any one decides); SK_SPANS when every one spans
 * shards, SK_UNKNOWN when one waits for its Bind, SK_NONE when none restricts it. */
static int sk_occ_shard(const px_sk_input *in, uint32_t from, const px_table *t, sk_memo *m,
                        px_sk_result *out)
{
    const prs_query_info *qi = in->qi;
    bool spans = false, unknown = false;
    for (int i = 0, end; i < qi->n_keys; i = end) {
        unsigned slot = qi->keys[i].slot;
        for (end = i + 1; end < qi->n_keys && qi->keys[end].cond == qi->keys[i].cond;)
            end++;
        if (slot >= PRS_MAX_SLOTS || !((from >> slot) & 1))
            continue;
        int s = sk_cond_shard(in, i, end, t->key_oid, m, out);
        if (s >= 0)
            return s;
        if (s == SK_UNKNOWN) {
            unknown = true;
        } else if (s == SK_SPANS) {
            spans = true;
        } else {
            sk_value_error(out, s, t);
            return SK_REFUSED;
        }
    }
    return spans ? SK_SPANS : unknown ? SK_UNKNOWN : SK_NONE;
}

/* How a message names occurrence x: the table, and its alias when it has one. */
static void sk_occ_names(const prs_query_info *qi, int x, const px_table *t, char *as, size_t cap,
                         const char **ref)
{
    const char *alias = prs_info_str(qi, qi->occs[x].alias);
    *ref = alias ? alias : t->name;
    if (alias)
        snprintf(as, cap, " (as \"%s\")", alias);
    else
        as[0] = '\0';
}

/* Why occurrence x's rows cannot be placed. */
static void sk_occ_refuse(const px_sk_input *in, int x, const px_table *t, int why, px_sk_result *out)
{
    char as[PX_SK_NAME_MAX + 8];
    const char *ref;
    sk_occ_names(in->qi, x, t, as, sizeof as, &ref);
    if (in->qi->occs[x].flags & PRS_OCC_UNPROVEN)
        snprintf(sk_refuse_msg(out), sizeof out->msg,
                 "pgshard: the rows INSERT ... SELECT, an INSERT in a WITH or MERGE writes into sharded "
                 "table \"%s\"%s cannot be placed by key: use SET pgshard.tenant or a /* pgshard: tenant=... "
                 "*/ comment",
                 t->name, as);
    else if (why == SK_SPANS)
        snprintf(sk_refuse_msg(out), sizeof out->msg,
                 "pgshard: the %s values given for table \"%s\"%s belong to different shards; query one "
                 "shard's tenants at a time (cross-shard queries are not supported yet)",
                 t->shard_key, t->name, as);
    else
        snprintf(sk_refuse_msg(out), sizeof out->msg,
                 "pgshard: a query on sharded table \"%s\"%s must name its tenant: add WHERE %s.%s = ... "
                 "(or join it on %s to a table that has one), or SET pgshard.tenant, or a /* pgshard: "
                 "tenant=... */ comment",
                 t->name, as, ref, t->shard_key, t->shard_key);
}

/* Two occurrences restricted to different shards. */
static void sk_occs_apart(const prs_query_info *qi, const sk_scan *sc, int a, int b, px_sk_result *out)
{
    char as1[PX_SK_NAME_MAX + 8], as2[PX_SK_NAME_MAX + 8];
    const char *r1, *r2;
    const px_table *t1 = sc->tab[qi->occs[a].table], *t2 = sc->tab[qi->occs[b].table];
    sk_occ_names(qi, a, t1, as1, sizeof as1, &r1);
    sk_occ_names(qi, b, t2, as2, sizeof as2, &r2);
    snprintf(sk_refuse_msg(out), sizeof out->msg,
             "pgshard: the tenants of \"%s\"%s and \"%s\"%s belong to different shards; a query reads one "
             "shard's tenants (cross-shard queries are not supported yet)",
             t1->name, as1, t2->name, as2);
}

/* A statement every shard may run on its own rows, the results merged (fanout.c): one
 * SELECT that writes nothing and names no table outside the config. */
static bool sk_scatterable(const prs_query_info *qi, const sk_scan *sc)
{
    /* COPY (query) TO reads as its query does; route_copy decides whether it can be gathered. */
    bool copy_out = qi->kind == PRS_KIND_COPY && qi->read_only;
    if ((qi->kind != PRS_KIND_SELECT && !copy_out) || qi->n_statements != 1 ||
        (qi->flags & PRS_F_WRITE_MASK) || sc->unlisted)
        return false;
    for (int x = 0; x < qi->n_occs; x++)
        if (qi->occs[x].flags & (PRS_OCC_WRITTEN | PRS_OCC_UNPROVEN))
            return false;
    return true;
}

/* An UPDATE or DELETE every shard may run on its own rows, when allow_cross_shard_writes
 * says so: one statement, no key change, no writes elsewhere (a writable CTE), no table
 * outside the config. Its target's rows then need no key. */
static bool sk_write_all(const px_sk_input *in, const sk_scan *sc)
{
    const prs_query_info *qi = in->qi;
    if (!in->cross_writes || (qi->kind != PRS_KIND_UPDATE && qi->kind != PRS_KIND_DELETE) ||
        qi->n_statements != 1 || sc->unlisted ||
        (qi->flags & (PRS_F_WRITABLE_CTE | PRS_F_KEY_UPDATE | PRS_F_SELECT_INTO | PRS_F_TOO_COMPLEX)))
        return false;
    for (int x = 0; x < qi->n_occs; x++)
        if (qi->occs[x].flags & (PRS_OCC_UNPROVEN | PRS_OCC_VALUES))
            return false;
    return true;
}

/* The slots of occurrence x's own key column (a bit per slot). */
static uint32_t sk_own_slots(const prs_query_info *qi, const sk_scan *sc, int x, const px_table *t)
{
    uint32_t own = 0;
    for (int i = 0; i < qi->n_slots; i++) {
        const prs_slot *s = &qi->slots[i];
        if (s->column == t->key_column && (s->cands ? sk_slot_owner(qi, sc, s) == x : s->occ == x))
            own |= 1u << i;
    }
    return own;
}

/* Whether the keyless occurrences of sharded tables (bit per occurrence in keyless) are all
 * joined to each other by key equality, so each shard joins its own rows and misses no pair:
 * the union of the shards' results is the whole result. On failure *a and *b name two
 * occurrences that are not. */
static bool sk_colocated(const prs_query_info *qi, const sk_scan *sc, uint32_t keyless, int *a, int *b)
{
    uint32_t reach[PRS_MAX_OCCS], own[PRS_MAX_OCCS];
    int first = -1;
    for (int x = 0; x < qi->n_occs; x++) {
        if (!((keyless >> x) & 1))
            continue;
        const px_table *t = sc->tab[qi->occs[x].table];
        reach[x] = sk_occ_slots(qi, sc, x, t);
        own[x] = sk_own_slots(qi, sc, x, t);
        first = first < 0 ? x : first;
    }
    /* Grow the group joined to the first occurrence until nothing more joins it. */
    uint32_t group = first >= 0 ? 1u << first : 0;
    for (bool grew = true; grew;) {
        grew = false;
        for (int x = 0; x < qi->n_occs; x++) {
            if (!((keyless >> x) & 1) || ((group >> x) & 1))
                continue;
            for (int y = 0; y < qi->n_occs; y++)
                if (((group >> y) & 1) && ((reach[x] & own[y]) || (reach[y] & own[x]))) {
                    group |= 1u << x;
                    grew = true;
                    break;
                }
        }
    }
    for (int x = 0; x < qi->n_occs; x++)
        if (((keyless >> x) & 1) && !((group >> x) & 1)) {
            *a = first;
            *b = x;
            return false;
        }
    return true;
}

/* A keyless read whose sharded tables are not joined on their key. */
static void sk_not_colocated(const prs_query_info *qi, const sk_scan *sc, int a, int b, px_sk_result *out)
{
    char as1[PX_SK_NAME_MAX + 8], as2[PX_SK_NAME_MAX + 8];
    const char *r1, *r2;
    const px_table *t1 = sc->tab[qi->occs[a].table], *t2 = sc->tab[qi->occs[b].table];
    sk_occ_names(qi, a, t1, as1, sizeof as1, &r1);
    sk_occ_names(qi, b, t2, as2, sizeof as2, &r2);
    snprintf(sk_refuse_msg(out), sizeof out->msg,
             "pgshard: a query across shards joins sharded tables \"%s\"%s and \"%s\"%s other than on their "
             "shard key (%s.%s = %s.%s): their rows may sit on different shards, so no shard could join them",
             t1->name, as1, t2->name, as2, r1, t1->shard_key, r2, t2->shard_key);
}

/* Every occurrence of a sharded table must be restricted to one shard, the same for all; or,
 * for a read, none is, and every shard runs it (PX_SK_ALL). */
static void sk_occurrences(const px_sk_input *in, const sk_scan *sc, px_sk_result *out)
{
    const prs_query_info *qi = in->qi;
    uint32_t seen = 0;
    for (int x = 0; x < qi->n_occs; x++)
        seen |= 1u << qi->occs[x].table;
    for (int i = 0; i < qi->n_tables; i++)
        if ((sc->sharded_tables & ~seen) >> i & 1) /* named where no occurrence is (DDL, LOCK, ...) */
            return sk_refuse(out, PGS_SQLSTATE_FEATURE_NOT_SUPPORTED,
                             "pgshard: a query on sharded table \"%s\" must name its tenant: add WHERE %s = "
                             "... (or SET pgshard.tenant, or a /* pgshard: tenant=... */ comment)",
                             sc->tab[i]->name, sc->tab[i]->shard_key);
    sk_memo memo;
    memo.done = 0;
    int shard = SK_NONE, decider = -1, first_keyless = -1, why = SK_NONE;
    bool write_all = sk_write_all(in, sc);
    bool unknown = false, scatter = sk_scatterable(qi, sc) || write_all;
    uint32_t keyless = 0;
    for (int x = 0; x < qi->n_occs; x++) {
        const px_table *t = sc->tab[qi->occs[x].table];
        uint8_t flags = qi->occs[x].flags;
        if (!t || t->omnisharded) {
            if (t && (flags & PRS_OCC_WRITTEN))
                return sk_refuse(
                    out, PGS_SQLSTATE_FEATURE_NOT_SUPPORTED,
                    "pgshard: writing omnisharded table \"%s\" needs SET pgshard.shard = N on each "
                    "shard%s (writes to every shard come with cross-shard support)",
                    t->name, "");
            continue;
        }
        int s = SK_NONE;
        if (flags & PRS_OCC_VALUES)
            s = sk_insert_rows(in, t, out, NULL);
        else if (!(flags & PRS_OCC_UNPROVEN))
            s = sk_occ_shard(in, sk_occ_slots(qi, sc, x, t), t, &memo, out);
        if (s == SK_REFUSED)
            return;
        if (s == SK_UNKNOWN) {
            unknown = true;
            continue;
        }
        if (s == SK_SPLIT) {
            if (qi->n_occs != 1)
                return sk_refuse(
                    out, PGS_SQLSTATE_FEATURE_NOT_SUPPORTED,
                    "pgshard: the rows inserted into \"%s\" belong to different shards and the "
                    "statement reads other tables%s: insert each tenant's rows in its own statement",
                    t->name, "");
            out->verdict = PX_SK_WRITE_SPLIT;
            out->source = "rows";
            return;
        }
        if (s < 0 && !scatter)
            return sk_occ_refuse(in, x, t, s, out);
        if (s < 0) {
            keyless |= 1u << x;
            first_keyless = first_keyless < 0 ? x : first_keyless;
            why = first_keyless == x ? s : why;
            continue;
        }
        if (shard >= 0 && s != shard)
            return sk_occs_apart(qi, sc, decider, x, out);
        shard = s;
        decider = x;
    }
    if (keyless && (shard >= 0 || unknown)) {
        /* Some tables keyed, others not: the keyless rows of other shards would be missed. */
        const px_table *t = sc->tab[qi->occs[first_keyless].table];
        return sk_occ_refuse(in, first_keyless, t, why, out);
    }
    if (unknown)
        return; /* decided at the Bind: any shard for now */
    if (keyless) {
        int a, b;
        if (!sk_colocated(qi, sc, keyless, &a, &b))
            return sk_not_colocated(qi, sc, a, b, out);
        out->verdict = write_all ? PX_SK_WRITE_ALL : PX_SK_ALL;
        out->source = "all";
        return;
    }
    out->verdict = PX_SK_SHARD;
    out->shard = shard;
    out->source = "key";
}

/* With a tenant said outright (hint or SET pgshard.tenant), a key written in the statement
 * that restricts a table to another shard would read or write nothing there: refused rather
 * than answered wrongly. Keys still waiting for their Bind are checked when it comes. */
static bool sk_tenant_conflict(const px_sk_input *in, const sk_scan *sc, int shard, px_sk_result *out)
{
    const prs_query_info *qi = in->qi;
    if (!qi->n_keys || (qi->flags & (PRS_F_MULTI | PRS_F_OCCS_TRUNCATED | PRS_F_KEYS_TRUNCATED)))
        return false;
    sk_memo memo;
    memo.done = 0;
    px_sk_result scratch;
    for (int x = 0; x < qi->n_occs; x++) {
        const px_table *t = sc->tab[qi->occs[x].table];
        uint8_t flags = qi->occs[x].flags;
        if (!t || t->omnisharded || (flags & PRS_OCC_UNPROVEN))
            continue;
        memset(&scratch, 0, sizeof scratch);
        int s = SK_NONE;
        if (flags & PRS_OCC_VALUES) {
            for (int i = 0; i < qi->n_keys && (s < 0 || s == shard); i++)
                if (qi->keys[i].row >= 0 && qi->keys[i].column == t->key_column)
                    s = sk_ref_shard(in, &qi->keys[i], t->key_oid, &scratch); /* each row's key */
        } else {
            s = sk_occ_shard(in, sk_occ_slots(qi, sc, x, t), t, &memo, &scratch);
        }
        if (s < 0 || s == shard)
            continue;
        char a[16], b[16];
        snprintf(a, sizeof a, "%d", s);
        snprintf(b, sizeof b, "%d", shard);
        snprintf(sk_refuse_msg(out), sizeof out->msg,
                 "pgshard: the statement's %s for table \"%s\" belongs to shard %s, but the tenant said with "
                 "SET pgshard.tenant or a /* pgshard: tenant=... */ comment is on shard %s",
                 t->shard_key, t->name, a, b);
        return true;
    }
    return false;
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
        px_sk_result tenant_key = *out; /* SHOW ROUTE shows the tenant's key, not the statement's */
        if (sk_tenant_conflict(in, sc, r, out))
            return;
        *out = tenant_key;
        out->verdict = PX_SK_SHARD;
        out->shard = r;
        out->source = "tenant";
        return;
    }
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
    if (qi->kind == PRS_KIND_COPY && qi->n_occs == 0) {
        /* COPY of a sharded table, from or to the client: split by key or gathered from every
         * shard (fanout.c); its options decide whether it can be. */
        out->verdict = PX_SK_ALL;
        out->source = "all";
        return;
    }
    if (qi->kind == PRS_KIND_COPY && !qi->read_only)
        return sk_refuse(out, PGS_SQLSTATE_FEATURE_NOT_SUPPORTED,
                         "pgshard: COPY on sharded table \"%s\" needs SET pgshard.tenant (or "
                         "pgshard.shard)%s",
                         name, "");
    if (qi->flags & (PRS_F_OCCS_TRUNCATED | PRS_F_TABLES_TRUNCATED))
        return sk_refuse(out, PGS_SQLSTATE_FEATURE_NOT_SUPPORTED,
                         "pgshard: a query naming sharded table \"%s\" has more tables, occurrences or key "
                         "conditions than pgshard follows%s: use SET pgshard.tenant or a /* pgshard: "
                         "tenant=... */ comment",
                         name, "");
    sk_occurrences(in, sc, out);
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
    if (in->nshards > 1 && !in->tenant && in->qi->n_statements >= 1 &&
        in->qi->kind_mask == 1ull << PRS_KIND_DDL && !in->qi->pin && !(in->qi->flags & PRS_F_TEMP_TABLE)) {
        /* A shard's schema is every shard's: DDL goes to each (fanout.c). */
        sk_scan sc;
        sk_scan_tables(in, &sc);
        out->verdict = PX_SK_EVERY;
        out->source = "every";
        out->sharded_ddl = sc.sharded != NULL;
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
    if (!sc.sharded && (in->qi->flags & PRS_F_TABLES_TRUNCATED) && !in->tenant) {
        /* A sharded table may be among those left out. */
        sk_refuse(out, PGS_SQLSTATE_FEATURE_NOT_SUPPORTED,
                  "pgshard: a query naming more than %s tables cannot be routed by key%s: use SET "
                  "pgshard.tenant or a /* pgshard: tenant=... */ comment",
                  "16", "");
        return;
    }
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
    bool dml =
        in->qi->kind == PRS_KIND_INSERT || in->qi->kind == PRS_KIND_UPDATE || in->qi->kind == PRS_KIND_DELETE;
    if (sc.omni && dml && in->qi->n_statements == 1 && in->nshards > 1 &&
        !(in->qi->flags & (PRS_F_WRITABLE_CTE | PRS_F_SELECT_INTO))) {
        out->verdict = PX_SK_WRITE_OMNI; /* the same rows change on every shard */
        out->source = "every";
        return;
    }
    if (sc.omni && !in->qi->read_only && in->qi->kind != PRS_KIND_SELECT) {
        sk_refuse(out, PGS_SQLSTATE_FEATURE_NOT_SUPPORTED,
                  "pgshard: writing omnisharded tables needs SET pgshard.shard = N on each shard%s%s "
                  "(writes to every shard come with cross-shard support)",
                  "", "");
        return;
    }
    out->omni_read = sc.omni && in->qi->read_only; /* any shard has the rows: spread the reads */
}

void px_sk_plan_make(const px_sk_input *in, bool hinted, px_sk_plan *plan)
{
    const prs_query_info *qi = in->qi;
    plan->kind = PX_SKP_TEXT;
    plan->param = 0;
    plan->table = NULL;
    const uint32_t complex =
        PRS_F_MULTI | PRS_F_KEY_UPDATE | PRS_F_TABLES_TRUNCATED | PRS_F_KEYS_TRUNCATED | PRS_F_OCCS_TRUNCATED;
    if (!qi || hinted || (qi->flags & complex) || qi->n_statements != 1 || qi->n_occs != 1 || qi->n_keys != 1)
        return;
    bool insert = qi->kind == PRS_KIND_INSERT;
    if (!insert && qi->kind != PRS_KIND_SELECT && qi->kind != PRS_KIND_UPDATE && qi->kind != PRS_KIND_DELETE)
        return;
    /* One relation named once, sharded, and one key condition: a parameter. */
    sk_scan sc;
    sk_scan_tables(in, &sc);
    const prs_occ *o = &qi->occs[0];
    const px_table *t = sc.tab[o->table];
    const prs_key_ref *key = &qi->keys[0];
    if (!t || t->omnisharded || sc.unlisted || sc.sharded_tables != 1u << o->table ||
        key->src != PRS_KEY_PARAM || key->column != t->key_column || key->index == 0 ||
        key->index > UINT16_MAX)
        return;
    if (insert) {
        if (!(o->flags & PRS_OCC_VALUES) || qi->insert_rows != 1 || key->row != 0)
            return;
    } else if ((o->flags & (PRS_OCC_VALUES | PRS_OCC_UNPROVEN)) || key->row >= 0 ||
               key->slot >= PRS_MAX_SLOTS || !((sk_occ_slots(qi, &sc, 0, t) >> key->slot) & 1)) {
        return;
    }
    plan->kind = PX_SKP_PARAM;
    plan->param = (uint16_t)key->index;
    plan->table = t;
}

void px_sk_route_planned(const px_sk_plan *plan, const px_sk_input *in, px_sk_result *out)
{
    memset(out, 0, sizeof *out);
    int r = sk_param_shard(in, plan->table->key_oid, plan->param, false, out);
    if (r < 0) {
        sk_value_error(out, r, plan->table);
        return;
    }
    out->verdict = PX_SK_SHARD;
    out->shard = r;
    out->source = "key";
}

/* The Bind of a cross-shard read with LIMIT $n or OFFSET $m: reads the two values as the
 * server would (text or binary, bigint/integer/smallint) and writes the shards' Bind with
 * them replaced. The shard query itself is the planner's (parser/scatter.c); sending it is
 * fanout.c's. */
#include "proxy/limitbind.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

enum {
    LB_OID_UNKNOWN = 0, /* undeclared: the server infers bigint from LIMIT's place */
    LB_OID_INT8 = 20,
    LB_OID_INT2 = 21,
    LB_OID_INT4 = 23,
};

/* What reading one bound value gave. */
typedef enum lb_read {
    LB_VALUE,  /* a value in its type's range */
    LB_NULL,   /* NULL */
    LB_SERVER, /* the server rejects the Bind, or the statement, by itself */
    LB_UNREAD, /* pgshard cannot read it exactly: refused */
} lb_read;

/* A Bind body after its names, cut into its parts. */
typedef struct lb_msg {
    uint16_t nf; /* parameter format codes */
    const uint8_t *fmts;
    uint16_t np; /* parameter values: np of (int32 length, bytes) */
    const uint8_t *vals;
    size_t vals_len;
    const uint8_t *rest; /* the result format codes */
    size_t rest_len;
} lb_msg;

static int lb_parse(const uint8_t *p, size_t n, lb_msg *m)
{
    pgs_reader rd = pgs_reader_make(p, n);
    const uint8_t *skip;
    if (pgs_rd_be16(&rd, &m->nf) < 0 || pgs_rd_bytes(&rd, (size_t)m->nf * 2, &m->fmts) < 0 ||
        pgs_rd_be16(&rd, &m->np) < 0)
        return -1;
    m->vals = rd.p;
    for (uint16_t i = 0; i < m->np; i++) {
        uint32_t len;
        if (pgs_rd_be32(&rd, &len) < 0 || (len != UINT32_MAX && pgs_rd_bytes(&rd, len, &skip) < 0))
            return -1;
    }
    m->vals_len = (size_t)(rd.p - m->vals);
    m->rest = rd.p;
    m->rest_len = rd.left;
    /* The server accepts no format codes (all text), one for all, or one per value. */
    if (m->nf > 1 && m->nf != m->np)
        return -1;
    for (uint16_t i = 0; i < m->nf; i++)
        if (pgs_be16(m->fmts + (size_t)i * 2) > 1)
            return -1;
    return 0;
}

static uint16_t lb_format(const lb_msg *m, uint16_t i)
{
    return m->nf == 0 ? 0 : pgs_be16(m->fmts + (size_t)(m->nf == 1 ? 0 : i) * 2);
}

/* Value i (0-based): its bytes, and its length or UINT32_MAX for NULL. lb_parse checked
 * the lengths. */
static const uint8_t *lb_value(const lb_msg *m, uint16_t i, uint32_t *len)
{
    const uint8_t *p = m->vals;
    for (uint16_t k = 0;; k++) {
        *len = pgs_be32(p);
        p += 4;
        if (k == i)
            return p;
        if (*len != UINT32_MAX)
            p += *len;
    }
}

/* The Parse's declared type of parameter i, 0 when undeclared. */
static uint32_t lb_type(const uint8_t *types, size_t types_len, uint16_t i)
{
    if (!types || types_len < 2)
        return LB_OID_UNKNOWN;
    uint16_t nt = pgs_be16(types);
    if (i >= nt || types_len < 2 + ((size_t)i + 1) * 4)
        return LB_OID_UNKNOWN;
    return pgs_be32(types + 2 + (size_t)i * 4);
}

static void lb_range(uint32_t type, int64_t *lo, int64_t *hi)
{
    *lo = type == LB_OID_INT2 ? INT16_MIN : type == LB_OID_INT4 ? INT32_MIN : INT64_MIN;
    *hi = type == LB_OID_INT2 ? INT16_MAX : type == LB_OID_INT4 ? INT32_MAX : INT64_MAX;
}

static bool lb_space(uint8_t c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

/* Text as the server's int2in/int4in/int8in read it: blanks, a sign, decimal digits,
 * blanks. A longer number than int8 holds is out of range (the server's 22003). */
static lb_read lb_text(const uint8_t *p, uint32_t len, int64_t *v)
{
    uint32_t i = 0;
    while (i < len && lb_space(p[i]))
        i++;
    bool neg = i < len && p[i] == '-';
    if (i < len && (p[i] == '-' || p[i] == '+'))
        i++;
    uint64_t mag = 0;
    bool digits = false, over = false;
    for (; i < len && p[i] >= '0' && p[i] <= '9'; i++) {
        digits = true;
        if (mag > (UINT64_C(1) << 63) / 10 || mag * 10 + (uint64_t)(p[i] - '0') > (UINT64_C(1) << 63))
            over = true;
        else
            mag = mag * 10 + (uint64_t)(p[i] - '0');
    }
    while (i < len && lb_space(p[i]))
        i++;
    if (!digits || i != len)
        return LB_UNREAD;
    if (over || (!neg && mag > (uint64_t)INT64_MAX))
        return LB_SERVER;
    *v = neg ? (mag == (UINT64_C(1) << 63) ? INT64_MIN : -(int64_t)mag) : (int64_t)mag;
    return LB_VALUE;
}

/* Binary as the server's int2recv/int4recv/int8recv read it: exactly the type's width. */
static lb_read lb_binary(const uint8_t *p, uint32_t len, uint32_t type, int64_t *v)
{
    uint32_t width = type == LB_OID_INT2 ? 2 : type == LB_OID_INT4 ? 4 : 8;
    if (len != width)
        return LB_SERVER;
    uint64_t u = 0;
    for (uint32_t i = 0; i < width; i++)
        u = (u << 8) | p[i];
    if (width == 2)
        *v = (int16_t)(uint16_t)u;
    else if (width == 4)
        *v = (int32_t)(uint32_t)u;
    else
        *v = (int64_t)u;
    return LB_VALUE;
}

/* Parameter param's (1-based) value: its type must be one whose value the server reads as
 * pgshard does. */
static lb_read lb_read_param(const lb_msg *m, const uint8_t *types, size_t types_len, uint16_t param,
                             int64_t *v)
{
    uint16_t i = (uint16_t)(param - 1);
    uint32_t type = lb_type(types, types_len, i);
    if (type != LB_OID_UNKNOWN && type != LB_OID_INT8 && type != LB_OID_INT4 && type != LB_OID_INT2)
        return LB_UNREAD;
    if (i >= m->np)
        return LB_SERVER;
    uint32_t len;
    const uint8_t *p = lb_value(m, i, &len);
    if (len == UINT32_MAX)
        return LB_NULL;
    lb_read r = lb_format(m, i) == 1 ? lb_binary(p, len, type, v) : lb_text(p, len, v);
    int64_t lo, hi;
    lb_range(type, &lo, &hi);
    if (r == LB_VALUE && (*v < lo || *v > hi))
        return LB_SERVER;
    return r == LB_VALUE && *v < 0 ? LB_SERVER : r;
}

/* The shards' Bind: LIMIT's value as text (NULL when shard_limit is NULL), OFFSET's NULL,
 * the other values as the client bound them. Every value gets its own format code, since
 * the replaced ones are text. */
static void lb_write(pgs_buf *out, const lb_msg *m, const prs_scatter *plan, const char *shard_limit)
{
    pgs_buf_append_be16(out, m->np);
    for (uint16_t i = 0; i < m->np; i++) {
        bool replaced = i + 1u == plan->limit_param || i + 1u == plan->offset_param;
        pgs_buf_append_be16(out, replaced ? 0 : lb_format(m, i));
    }
    pgs_buf_append_be16(out, m->np);
    for (uint16_t i = 0; i < m->np; i++) {
        uint32_t len;
        const uint8_t *p = lb_value(m, i, &len);
        if (i + 1u == plan->limit_param || i + 1u == plan->offset_param) {
            const char *s = i + 1u == plan->limit_param ? shard_limit : NULL;
            pgs_buf_append_be32(out, s ? (uint32_t)strlen(s) : UINT32_MAX);
            if (s)
                pgs_buf_append(out, s, strlen(s));
            continue;
        }
        pgs_buf_append_be32(out, len);
        if (len != UINT32_MAX)
            pgs_buf_append(out, p, len);
    }
    pgs_buf_append(out, m->rest, m->rest_len);
}

/* What the shards' LIMIT parameter is bound to: LIMIT + OFFSET rows of theirs, or NULL (all
 * of them) for groups, which are limited after the merge, without a LIMIT, or when the sum
 * passes what the parameter's type holds. */
static bool lb_shard_limit(const prs_scatter *plan, uint32_t type, char *buf, size_t cap)
{
    int64_t lo, hi;
    lb_range(type, &lo, &hi);
    if (plan->grouped || plan->limit < 0 || plan->limit > hi - plan->offset)
        return false;
    int64_t rows = plan->limit + plan->offset;
    int n = snprintf(buf, cap, "%" PRId64, rows);
    return n > 0 && (size_t)n < cap;
}

static int lb_refuse(char *sqlstate, char *msg, size_t cap, const char *what)
{
    memcpy(sqlstate, "0A000", 6);
    snprintf(msg, cap,
             "pgshard: the value bound to a cross-shard %s must be a bigint, integer or smallint parameter "
             "holding a decimal integer (text) or the type's binary form",
             what);
    return 1;
}

int px_limit_bind(prs_scatter *plan, const uint8_t *types, size_t types_len, const uint8_t *bind,
                  size_t bind_len, pgs_buf *out, char *sqlstate, char *msg, size_t cap)
{
    lb_msg m;
    memset(&m, 0, sizeof m);
    if (lb_parse(bind, bind_len, &m) < 0)
        goto as_is;
    int64_t lim = -1, off = 0;
    lb_read rl = plan->limit_param ? lb_read_param(&m, types, types_len, plan->limit_param, &lim) : LB_VALUE;
    lb_read ro =
        plan->offset_param ? lb_read_param(&m, types, types_len, plan->offset_param, &off) : LB_VALUE;
    if (rl == LB_UNREAD)
        return lb_refuse(sqlstate, msg, cap, "LIMIT");
    if (ro == LB_UNREAD)
        return lb_refuse(sqlstate, msg, cap, "OFFSET");
    if (rl == LB_SERVER || ro == LB_SERVER)
        goto as_is;
    if (plan->limit_param)
        plan->limit = rl == LB_NULL ? -1 : lim;
    if (plan->offset_param)
        plan->offset = ro == LB_NULL ? 0 : off;
    char text[24];
    uint32_t type = plan->limit_param ? lb_type(types, types_len, (uint16_t)(plan->limit_param - 1)) : 0;
    lb_write(out, &m, plan, lb_shard_limit(plan, type, text, sizeof text) ? text : NULL);
    return pgs_buf_failed(out) ? -1 : 0;
as_is:
    pgs_buf_append(out, bind, bind_len);
    return pgs_buf_failed(out) ? -1 : 0;
}

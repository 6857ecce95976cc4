/* The merge of a cross-shard read (see merge.h): per-shard row queues, the comparison of
 * values by type in text and binary format, exact decimal arithmetic for numeric sums and
 * averages, groups, HAVING and the messages sent to the client. It holds no sockets and
 * no plan-making: the fan-out feeds it, parser/scatter.c decides what it does. */
#include "proxy/merge.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/proto.h"
#include "common/sqlstate.h"

/* The type oids the merge knows, as pg_type.dat numbers them. */
enum {
    MG_OID_BOOL = 16,
    MG_OID_BYTEA = 17,
    MG_OID_NAME = 19,
    MG_OID_INT8 = 20,
    MG_OID_INT2 = 21,
    MG_OID_INT4 = 23,
    MG_OID_TEXT = 25,
    MG_OID_OID = 26,
    MG_OID_FLOAT4 = 700,
    MG_OID_FLOAT8 = 701,
    MG_OID_BPCHAR = 1042,
    MG_OID_VARCHAR = 1043,
    MG_OID_DATE = 1082,
    MG_OID_TIME = 1083,
    MG_OID_TIMESTAMP = 1114,
    MG_OID_TIMESTAMPTZ = 1184,
    MG_OID_INTERVAL = 1186,
    MG_OID_TIMETZ = 1266,
    MG_OID_NUMERIC = 1700,
    MG_OID_UUID = 2950,
};

/* How values of a type compare; one decoder per class and format. */
typedef enum mg_class {
    MG_NONE = 0,
    MG_INT,
    MG_FLOAT,
    MG_NUMERIC,
    MG_BOOL,
    MG_DATE,
    MG_TIME,
    MG_TIMETZ,
    MG_TIMESTAMP, /* timestamp and timestamptz: the text of the latter carries its offset */
    MG_INTERVAL,
    MG_UUID,
    MG_TEXT,
    MG_NAME, /* name's collation is "C" whatever the database's */
    MG_BPCHAR,
    MG_BYTEA,
} mg_class;

static const struct mg_type_info {
    uint32_t oid;
    uint8_t cls;    /* mg_class */
    uint8_t binlen; /* bytes of the binary form, 0 when it varies */
} mg_types[] = {
    {MG_OID_BOOL, MG_BOOL, 1},
    {MG_OID_BYTEA, MG_BYTEA, 0},
    {MG_OID_NAME, MG_NAME, 0},
    {MG_OID_INT8, MG_INT, 8},
    {MG_OID_INT2, MG_INT, 2},
    {MG_OID_INT4, MG_INT, 4},
    {MG_OID_TEXT, MG_TEXT, 0},
    {MG_OID_OID, MG_INT, 4},
    {MG_OID_FLOAT4, MG_FLOAT, 4},
    {MG_OID_FLOAT8, MG_FLOAT, 8},
    {MG_OID_BPCHAR, MG_BPCHAR, 0},
    {MG_OID_VARCHAR, MG_TEXT, 0},
    {MG_OID_DATE, MG_DATE, 4},
    {MG_OID_TIME, MG_TIME, 8},
    {MG_OID_TIMESTAMP, MG_TIMESTAMP, 8},
    {MG_OID_TIMESTAMPTZ, MG_TIMESTAMP, 8},
    {MG_OID_INTERVAL, MG_INTERVAL, 16},
    {MG_OID_TIMETZ, MG_TIMETZ, 12},
    {MG_OID_NUMERIC, MG_NUMERIC, 0},
    {MG_OID_UUID, MG_UUID, 16},
};

/* One column's type as the merge uses it. */
typedef struct mg_type {
    uint32_t oid;
    uint8_t cls;    /* mg_class */
    uint8_t fmt;    /* 0 text, 1 binary */
    uint8_t binlen; /* mg_types' binlen */
} mg_type;

/* One value of a row: len -1 is NULL. p points into a row someone else owns. */
typedef struct mg_val {
    const uint8_t *p;
    int32_t len;
} mg_val;

/* An exact decimal: value = (-1)^neg * dig * 10^-scale. Used for numeric sums, averages,
 * comparisons and group keys, whether the shards sent numeric as text or binary. */
enum { MG_NUM_FINITE = 0, MG_NUM_NAN, MG_NUM_PINF, MG_NUM_NINF };
typedef struct mg_dec {
    uint8_t *dig; /* owned: digits 0-9, most significant first, no leading zero */
    size_t n;
    size_t cap;
    int32_t scale; /* digits after the point: the display scale (dscale) */
    bool neg;
    uint8_t special; /* MG_NUM_* */
} mg_dec;

/* A value decoded for comparison, the same whichever format it came in, so a HAVING
 * constant (text) compares with a binary column. */
typedef struct mg_key {
    __int128 i;       /* integers, bool, dates, times, timestamps, interval spans */
    int64_t j;        /* timetz: the zone, as the tie-break */
    double d;         /* floats */
    const uint8_t *p; /* text, bytea, uuid bytes */
    size_t n;
    mg_dec *dec; /* numeric: one of the merge's scratch decimals */
    uint8_t u[16];
} mg_key;

#define MG_INFINITY ((__int128)1 << 100)
#define MG_USECS_PER_DAY INT64_C(86400000000)
#define MG_EPOCH_DAYS 10957 /* days from 1970-01-01 to PostgreSQL's epoch, 2000-01-01 */

/* A shard's queued row: its body at off in the shard's arena. */
typedef struct mg_ent {
    size_t off;
    size_t len;
} mg_ent;

typedef struct mg_shard {
    pgs_buf arena; /* owned: the queued rows' bodies, back to back */
    mg_ent *ent;   /* owned: the queue, ent[head..tail) */
    size_t head, tail, cap;
    bool has_desc;
    bool completed;
    bool head_parsed; /* hoff/hlen describe ent[head] */
    bool coll_seen;   /* its first row's collation names were checked */
    uint32_t hoff[PRS_SC_MAX_COLS];
    int32_t hlen[PRS_SC_MAX_COLS];
} mg_shard;

/* A group's state for one column. */
typedef struct mg_acc {
    uint8_t *val; /* owned: the kept value (group key, plain, min, max) */
    int32_t len;  /* -1: NULL */
    bool seen;    /* a non-NULL input was combined */
    bool flag;    /* BOOL_AND/BOOL_OR so far */
    int64_t n;    /* COUNT, or an integer SUM */
    int64_t cnt;  /* AVG: the count */
    double f;     /* float SUM/AVG */
    mg_dec dec;   /* numeric SUM, integer or numeric AVG */
    int32_t mon;  /* interval SUM/AVG: the months and days (n holds the microseconds) */
    int32_t day;
} mg_acc;

typedef struct mg_group {
    uint64_t hash;
    uint8_t *key; /* owned: the normalized group key */
    size_t klen;
    size_t seq;        /* first-seen order, the sort's tie-break */
    size_t foff, flen; /* the finalized row (all columns) in the merge's `final` */
    mg_acc acc[];      /* ncols */
} mg_group;

/* How a column's text compares: learnt from the collation each shard names for it. */
enum {
    MG_COLL_UNSET = 0, /* no shard has sent a row yet */
    MG_COLL_BYTES,     /* "C", "POSIX": memcmp */
    MG_COLL_LOCALE,    /* a libc locale: strcoll_l, bytes breaking ties */
    MG_COLL_EQUAL,     /* deterministic, order unknown here (an ICU default): equality only */
    MG_COLL_NONE,      /* unknown here: neither */
};
enum { MG_NEED_NONE = 0, MG_NEED_EQUAL, MG_NEED_ORDER };
#define MG_COLL_NAME_MAX 136 /* a quoted name of NAMEDATALEN bytes; longer ones are unknown */

typedef struct mg_coll {
    uint8_t how;                 /* MG_COLL_* */
    bool owned;                  /* loc was made for this merge: freed with it */
    locale_t loc;                /* MG_COLL_LOCALE */
    char name[MG_COLL_NAME_MAX]; /* as the first shard named it, to check the others' */
} mg_coll;

/* A column of the first RowDescription, pointing into px_merge.desc. */
typedef struct mg_field {
    size_t name_off; /* the name's offset in desc */
    uint32_t table;
    uint16_t attnum;
    uint32_t type;
    uint16_t typlen;
    uint32_t typmod;
    uint16_t format;
} mg_field;

struct px_merge {
    const prs_scatter *plan; /* borrowed */
    int nshards;
    locale_t coll;          /* borrowed: the database's collation; (locale_t)0 for byte order */
    bool default_unordered; /* the database's collation is not reproduced here */
    px_merge_coll_fn resolve;
    void *resolve_arg;
    uint8_t need[PRS_SC_MAX_COLS]; /* MG_NEED_*: what the merge does with a text column */
    mg_coll colls[PRS_SC_MAX_COLS];
    mg_shard *shards; /* owned, nshards */
    uint16_t ncols;   /* the plan's, or the RowDescription's for a plan without columns */
    uint16_t nvisible;
    prs_sc_col cols[PRS_SC_MAX_COLS];
    prs_sc_sort sort[PRS_SC_MAX_SORT]; /* the plan's, its columns resolved by the RowDescription
                                          (a plan with *: PRS_SC_SORT_HIDDEN) */
    mg_type in[PRS_SC_MAX_COLS];       /* the shards' column types */
    mg_type out[PRS_SC_MAX_COLS];      /* the merged rows' types (avg rewritten) */
    pgs_buf desc;                      /* owned: the first RowDescription body */
    mg_field fields[PRS_SC_MAX_COLS];
    bool have_desc, desc_sent, cc_sent, failed, finalized, satisfied;
    int ncompleted;
    int64_t skipped; /* rows dropped for OFFSET */
    int64_t emitted; /* rows sent: the n of "SELECT n" */
    size_t rr;       /* concatenation: the shard being drained */
    /* grouped */
    mg_group **groups; /* owned, ngroups, in first-seen order */
    size_t ngroups, gcap;
    uint32_t *htab; /* owned: open addressing, group index + 1, 0 empty */
    size_t hcap;
    pgs_buf key;   /* scratch: the group key of the row being combined */
    pgs_buf final; /* owned: the finalized rows of every group */
    size_t *order; /* owned: the groups that pass HAVING, in output order */
    size_t norder, opos;
    /* scratch for comparisons */
    mg_dec sdec[3];
    pgs_buf sbuf[2];
    pgs_buf tmp;
    char sqlstate[6];
    char msg[256];
};

/* ---- errors ---- */

static int __attribute__((format(printf, 3, 4)))
mg_fail(px_merge *m, const char *sqlstate, const char *fmt, ...)
{
    if (m->failed)
        return -1;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(m->msg, sizeof m->msg, fmt, ap);
    va_end(ap);
    if (n < 0)
        snprintf(m->msg, sizeof m->msg, "pgshard: the merge failed");
    snprintf(m->sqlstate, sizeof m->sqlstate, "%s", sqlstate);
    m->failed = true;
    return -1;
}

static int mg_oom(px_merge *m)
{
    return mg_fail(m, PGS_SQLSTATE_OUT_OF_MEMORY, "pgshard: out of memory merging the shards' rows");
}

static int mg_bad_value(px_merge *m, const mg_type *t)
{
    /* Dates, times and intervals are read in text as PostgreSQL writes them by default; a
     * session with another DateStyle or IntervalStyle gets them otherwise. */
    bool dated = t->oid == 1082 || t->oid == 1083 || t->oid == 1114 || t->oid == 1184 || t->oid == 1266;
    if (!t->fmt && (dated || t->oid == 1186))
        return mg_fail(m, PGS_SQLSTATE_FEATURE_NOT_SUPPORTED,
                       "pgshard: a query across shards compares %s values in text only with %s; this "
                       "session has another (SET %s, or ask for binary results)",
                       dated ? "date and time" : "interval",
                       dated ? "DateStyle = ISO" : "IntervalStyle = postgres",
                       dated ? "DateStyle = ISO" : "IntervalStyle = postgres");
    return mg_fail(m, PGS_SQLSTATE_INTERNAL_ERROR,
                   "pgshard: a shard sent a value of type %u that cannot be read", t->oid);
}

static int mg_malformed(px_merge *m, const char *what)
{
    return mg_fail(m, PGS_SQLSTATE_PROTOCOL_VIOLATION, "pgshard: a shard sent a malformed %s", what);
}

const char *px_merge_error(const px_merge *m, const char **sqlstate)
{
    if (sqlstate)
        *sqlstate = m->failed ? m->sqlstate : PGS_SQLSTATE_INTERNAL_ERROR;
    return m->failed ? m->msg : "pgshard: no error";
}

/* ---- types ---- */

static mg_type mg_type_of(uint32_t oid, uint16_t fmt)
{
    mg_type t = {oid, MG_NONE, (uint8_t)fmt, 0};
    for (size_t i = 0; i < sizeof mg_types / sizeof mg_types[0]; i++) {
        if (mg_types[i].oid == oid) {
            t.cls = mg_types[i].cls;
            t.binlen = mg_types[i].binlen;
        }
    }
    return t;
}

static inline uint64_t mg_be64(const uint8_t *p)
{
    return ((uint64_t)pgs_be32(p) << 32) | pgs_be32(p + 4);
}

static void mg_put_be64(pgs_buf *b, uint64_t v)
{
    pgs_buf_append_be32(b, (uint32_t)(v >> 32));
    pgs_buf_append_be32(b, (uint32_t)v);
}

/* ---- exact decimals ---- */

static int dec_reserve(mg_dec *d, size_t n)
{
    if (n <= d->cap)
        return 0;
    size_t cap = d->cap ? d->cap : 32;
    while (cap < n)
        cap *= 2;
    uint8_t *p = realloc(d->dig, cap);
    if (!p)
        return -1;
    d->dig = p;
    d->cap = cap;
    return 0;
}

static void dec_free(mg_dec *d)
{
    free(d->dig);
    memset(d, 0, sizeof *d);
}

static void dec_strip(mg_dec *d)
{
    size_t z = 0;
    while (z < d->n && d->dig[z] == 0)
        z++;
    if (z) {
        memmove(d->dig, d->dig + z, d->n - z);
        d->n -= z;
    }
    if (d->n == 0)
        d->neg = false;
}

static int dec_set_special(mg_dec *d, uint8_t special)
{
    d->n = 0;
    d->scale = 0;
    d->neg = false;
    d->special = special;
    return 0;
}

static int dec_set_int(mg_dec *d, int64_t v)
{
    char s[24];
    int len = snprintf(s, sizeof s, "%" PRId64, v);
    d->special = MG_NUM_FINITE;
    d->scale = 0;
    d->neg = v < 0;
    d->n = 0;
    if (dec_reserve(d, 24) < 0)
        return -1;
    for (int i = d->neg ? 1 : 0; i < len; i++)
        d->dig[d->n++] = (uint8_t)(s[i] - '0');
    dec_strip(d);
    return 0;
}

static int dec_copy(mg_dec *d, const mg_dec *s)
{
    if (dec_reserve(d, s->n) < 0)
        return -1;
    if (s->n)
        memcpy(d->dig, s->dig, s->n);
    d->n = s->n;
    d->scale = s->scale;
    d->neg = s->neg;
    d->special = s->special;
    return 0;
}

/* numeric's text output: [-]digits[.digits], or NaN, Infinity, -Infinity. Returns -1 on a
 * malformed value, -2 when out of memory. */
static int dec_parse_text(mg_dec *d, const uint8_t *p, size_t len)
{
    static const struct {
        const char *s;
        uint8_t special;
    } specials[] = {{"NaN", MG_NUM_NAN}, {"Infinity", MG_NUM_PINF}, {"-Infinity", MG_NUM_NINF}};
    for (size_t i = 0; i < 3; i++) {
        if (len == strlen(specials[i].s) && memcmp(p, specials[i].s, len) == 0)
            return dec_set_special(d, specials[i].special);
    }
    size_t i = 0;
    d->special = MG_NUM_FINITE;
    d->neg = false;
    if (i < len && (p[i] == '-' || p[i] == '+'))
        d->neg = p[i++] == '-';
    if (dec_reserve(d, len) < 0)
        return -2;
    d->n = 0;
    d->scale = 0;
    bool point = false;
    for (; i < len; i++) {
        if (p[i] == '.' && !point) {
            point = true;
        } else if (p[i] >= '0' && p[i] <= '9') {
            d->dig[d->n++] = (uint8_t)(p[i] - '0');
            d->scale += point;
        } else {
            return -1;
        }
    }
    if (d->n == 0)
        return -1;
    dec_strip(d);
    return 0;
}

/* numeric's binary form: int16 ndigits, weight, sign, dscale, then base-10000 digits. As
 * numeric_recv, digits the dscale hides are truncated away. */
static int dec_parse_bin(mg_dec *d, const uint8_t *p, size_t len)
{
    if (len < 8)
        return -1;
    uint16_t ndigits = pgs_be16(p), sign = pgs_be16(p + 4), dscale = pgs_be16(p + 6);
    int16_t weight = (int16_t)pgs_be16(p + 2);
    if (len != 8 + 2 * (size_t)ndigits || ndigits > 0x7fff || dscale > 0x3fff)
        return -1;
    if (sign == 0xC000)
        return dec_set_special(d, MG_NUM_NAN);
    if (sign == 0xD000)
        return dec_set_special(d, MG_NUM_PINF);
    if (sign == 0xF000)
        return dec_set_special(d, MG_NUM_NINF);
    if (sign != 0 && sign != 0x4000)
        return -1;
    /* value = D * 10^e with D the digits in decimal */
    int64_t e = 4 * ((int64_t)weight - ndigits + 1);
    int64_t raw_scale = e < 0 ? -e : 0;
    size_t zeros = e > 0 ? (size_t)e : 0;
    if (dec_reserve(d, 4 * (size_t)ndigits + zeros + dscale + 1) < 0)
        return -2;
    d->n = 0;
    for (size_t i = 0; i < ndigits; i++) {
        uint16_t v = pgs_be16(p + 8 + 2 * i);
        if (v >= 10000)
            return -1;
        d->dig[d->n++] = (uint8_t)(v / 1000);
        d->dig[d->n++] = (uint8_t)(v / 100 % 10);
        d->dig[d->n++] = (uint8_t)(v / 10 % 10);
        d->dig[d->n++] = (uint8_t)(v % 10);
    }
    memset(d->dig + d->n, 0, zeros);
    d->n += zeros;
    if (dscale > raw_scale) {
        memset(d->dig + d->n, 0, (size_t)(dscale - raw_scale));
        d->n += (size_t)(dscale - raw_scale);
    } else {
        size_t cut = (size_t)(raw_scale - dscale);
        d->n = cut < d->n ? d->n - cut : 0;
    }
    d->scale = dscale;
    d->neg = sign == 0x4000;
    d->special = MG_NUM_FINITE;
    dec_strip(d);
    return 0;
}

/* The digit of d at 10^(k - scale), k counted from the right at that scale. */
static inline uint8_t dec_digit(const mg_dec *d, size_t k, int32_t scale)
{
    size_t shift = (size_t)(scale - d->scale);
    if (k < shift)
        return 0;
    k -= shift;
    return k < d->n ? d->dig[d->n - 1 - k] : 0;
}

/* Compares |a| and |b|, finite. */
static int dec_cmp_abs(const mg_dec *a, const mg_dec *b)
{
    int64_t la = (int64_t)a->n - a->scale, lb = (int64_t)b->n - b->scale;
    if (a->n == 0 || b->n == 0)
        return (a->n != 0) - (b->n != 0);
    if (la != lb)
        return la < lb ? -1 : 1;
    size_t n = a->n > b->n ? a->n : b->n;
    for (size_t i = 0; i < n; i++) {
        uint8_t x = i < a->n ? a->dig[i] : 0, y = i < b->n ? b->dig[i] : 0;
        if (x != y)
            return x < y ? -1 : 1;
    }
    return 0;
}

/* PostgreSQL's order: -Infinity < finite < Infinity < NaN, NaN equal to NaN. */
static int dec_cmp(const mg_dec *a, const mg_dec *b)
{
    static const int rank[] = {[MG_NUM_NINF] = 0, [MG_NUM_FINITE] = 1, [MG_NUM_PINF] = 2, [MG_NUM_NAN] = 3};
    if (rank[a->special] != rank[b->special])
        return rank[a->special] < rank[b->special] ? -1 : 1;
    if (a->special != MG_NUM_FINITE)
        return 0;
    int sa = a->n == 0 ? 0 : (a->neg ? -1 : 1), sb = b->n == 0 ? 0 : (b->neg ? -1 : 1);
    if (sa != sb)
        return sa < sb ? -1 : 1;
    return sa * dec_cmp_abs(a, b);
}

static uint8_t dec_add_special(const mg_dec *a, const mg_dec *b)
{
    if (a->special == MG_NUM_NAN || b->special == MG_NUM_NAN)
        return MG_NUM_NAN;
    if (a->special == MG_NUM_FINITE)
        return b->special;
    if (b->special == MG_NUM_FINITE || b->special == a->special)
        return a->special;
    return MG_NUM_NAN; /* Infinity + -Infinity */
}

/* a += b exactly, at the larger of the two scales (as numeric_add). tmp is scratch. */
static int dec_add(mg_dec *a, const mg_dec *b, pgs_buf *tmp)
{
    if (a->special != MG_NUM_FINITE || b->special != MG_NUM_FINITE)
        return dec_set_special(a, dec_add_special(a, b));
    int32_t scale = a->scale > b->scale ? a->scale : b->scale;
    size_t na = a->n + (size_t)(scale - a->scale), nb = b->n + (size_t)(scale - b->scale);
    size_t n = (na > nb ? na : nb) + 1;
    pgs_buf_clear(tmp);
    if (pgs_buf_reserve(tmp, n) < 0)
        return -1;
    uint8_t *r = tmp->data;
    bool neg = a->neg;
    const mg_dec *big = a, *small = b;
    int sub = a->neg != b->neg;
    if (sub && dec_cmp_abs(a, b) < 0) {
        big = b;
        small = a;
        neg = b->neg;
    }
    int carry = 0;
    for (size_t k = 0; k < n; k++) {
        int v = dec_digit(big, k, scale) + (sub ? -dec_digit(small, k, scale) : dec_digit(small, k, scale)) +
                carry;
        carry = v < 0 ? -1 : v / 10;
        r[n - 1 - k] = (uint8_t)((v + 10) % 10);
    }
    if (dec_reserve(a, n) < 0)
        return -1;
    memcpy(a->dig, r, n);
    a->n = n;
    a->scale = scale;
    a->neg = neg;
    dec_strip(a);
    return 0;
}

/* The base-10000 weight and first digit of d, as numeric.c's NumericVar would hold them. */
static void dec_weight(const mg_dec *d, int64_t *weight, int *first)
{
    *weight = 0;
    *first = 0;
    if (d->n == 0)
        return;
    int64_t e = (int64_t)d->n - d->scale - 1; /* the top digit is at 10^e */
    int64_t w = e >= 0 ? e / 4 : -((-e + 3) / 4);
    int v = 0;
    for (int64_t i = 0; i <= e - 4 * w; i++)
        v = v * 10 + ((size_t)i < d->n ? d->dig[i] : 0);
    *weight = w;
    *first = v;
}

/* numeric_div's result scale (numeric.c, select_div_scale): at least 16 significant
 * digits, at least either input's display scale, between 0 and 1000. */
static int32_t dec_div_scale(const mg_dec *num, const mg_dec *den)
{
    int64_t w1, w2;
    int f1, f2;
    dec_weight(num, &w1, &f1);
    dec_weight(den, &w2, &f2);
    int64_t qweight = w1 - w2;
    if (f1 <= f2)
        qweight--;
    int64_t rscale = 16 - qweight * 4;
    if (rscale < num->scale)
        rscale = num->scale;
    if (rscale < den->scale)
        rscale = den->scale;
    if (rscale < 0)
        rscale = 0;
    if (rscale > 1000)
        rscale = 1000;
    return (int32_t)rscale;
}

/* out = sum / count rounded half away from zero at numeric_div's scale: long division
 * one digit past the scale, then rounding on that digit. count > 0. */
static int dec_div_count(mg_dec *out, const mg_dec *sum, int64_t count, mg_dec *den)
{
    if (sum->special != MG_NUM_FINITE)
        return dec_set_special(out, sum->special);
    if (dec_set_int(den, count) < 0)
        return -1;
    int32_t rscale = dec_div_scale(sum, den);
    int64_t t = (int64_t)rscale + 1;
    /* the dividend's digits at scale t */
    size_t nd = sum->n, extra = 0;
    if (t >= sum->scale) {
        extra = (size_t)(t - sum->scale);
    } else {
        size_t cut = (size_t)(sum->scale - t);
        nd = cut < sum->n ? sum->n - cut : 0;
    }
    if (dec_reserve(out, nd + extra + 1) < 0)
        return -1;
    unsigned __int128 rem = 0, c = (unsigned __int128)count;
    out->n = 0;
    out->dig[out->n++] = 0; /* room for the rounding's carry */
    for (size_t i = 0; i < nd + extra; i++) {
        rem = rem * 10 + (i < nd ? sum->dig[i] : 0);
        out->dig[out->n++] = (uint8_t)(rem / c);
        rem %= c;
    }
    bool up = out->n > 1 && out->dig[out->n - 1] >= 5;
    out->n--;
    for (size_t k = out->n; up && k-- > 0;) {
        up = ++out->dig[k] == 10;
        if (up)
            out->dig[k] = 0;
    }
    out->scale = rscale;
    out->neg = sum->neg;
    out->special = MG_NUM_FINITE;
    dec_strip(out);
    return 0;
}

static void dec_out_text(const mg_dec *d, pgs_buf *b)
{
    static const char *const names[] = {"", "NaN", "Infinity", "-Infinity"};
    if (d->special != MG_NUM_FINITE) {
        pgs_buf_append(b, names[d->special], strlen(names[d->special]));
        return;
    }
    size_t scale = (size_t)d->scale;
    if (d->neg && d->n)
        pgs_buf_append_u8(b, '-');
    if (d->n > scale) {
        for (size_t i = 0; i < d->n - scale; i++)
            pgs_buf_append_u8(b, (uint8_t)('0' + d->dig[i]));
    } else {
        pgs_buf_append_u8(b, '0');
    }
    if (scale == 0)
        return;
    pgs_buf_append_u8(b, '.');
    for (size_t k = scale; k-- > 0;)
        pgs_buf_append_u8(b, (uint8_t)('0' + (k < d->n ? d->dig[d->n - 1 - k] : 0)));
}

/* numeric's binary form, leading and trailing zero base-10000 digits stripped as
 * make_result does. */
static void dec_out_bin(const mg_dec *d, pgs_buf *b)
{
    static const uint16_t signs[] = {0, 0xC000, 0xD000, 0xF000};
    if (d->special != MG_NUM_FINITE || d->n == 0) {
        uint16_t h[4] = {0, 0, signs[d->special], (uint16_t)(d->special ? 0 : d->scale)};
        for (int i = 0; i < 4; i++)
            pgs_buf_append_be16(b, h[i]);
        return;
    }
    /* digit positions: top at 10^e, bottom at 10^-scale; groups of 4 aligned on the point */
    int64_t e = (int64_t)d->n - d->scale - 1;
    int64_t wtop = e >= 0 ? e / 4 : -((-e + 3) / 4);
    int64_t lo = -(int64_t)d->scale;
    int64_t wbot = lo >= 0 ? lo / 4 : -((-lo + 3) / 4);
    /* strip trailing zero groups and count the digits */
    int64_t count = wtop - wbot + 1;
    uint16_t *g = calloc((size_t)count, sizeof *g);
    if (!g) {
        b->oom = true;
        return;
    }
    for (int64_t w = wtop; w >= wbot; w--) {
        int v = 0;
        for (int64_t pos = 4 * w + 3; pos >= 4 * w; pos--) {
            int64_t k = pos + d->scale; /* from the right */
            v = v * 10 + (k >= 0 && k < (int64_t)d->n ? d->dig[d->n - 1 - (size_t)k] : 0);
        }
        g[wtop - w] = (uint16_t)v;
    }
    while (count > 0 && g[count - 1] == 0)
        count--;
    pgs_buf_append_be16(b, (uint16_t)count);
    pgs_buf_append_be16(b, (uint16_t)(int16_t)wtop);
    pgs_buf_append_be16(b, d->neg ? 0x4000 : 0);
    pgs_buf_append_be16(b, (uint16_t)d->scale);
    for (int64_t i = 0; i < count; i++)
        pgs_buf_append_be16(b, g[i]);
    free(g);
}

/* ---- reading text values ---- */

/* A cursor over a value's text. */
typedef struct mg_cur {
    const uint8_t *p, *end;
} mg_cur;

static bool cur_lit(mg_cur *c, const char *s)
{
    size_t n = strlen(s);
    if ((size_t)(c->end - c->p) < n || memcmp(c->p, s, n) != 0)
        return false;
    c->p += n;
    return true;
}

/* Between mind and maxd decimal digits. */
static int cur_num(mg_cur *c, int mind, int maxd, int64_t *v)
{
    int n = 0;
    *v = 0;
    while (c->p < c->end && *c->p >= '0' && *c->p <= '9' && n < maxd) {
        *v = *v * 10 + (*c->p++ - '0');
        n++;
    }
    return n >= mind ? 0 : -1;
}

/* Fractional seconds after a '.', as microseconds (PostgreSQL prints at most 6 digits). */
static int cur_frac(mg_cur *c, int64_t *us)
{
    *us = 0;
    if (!cur_lit(c, "."))
        return 0;
    int64_t scale = 100000;
    int n = 0;
    while (c->p < c->end && *c->p >= '0' && *c->p <= '9') {
        if (n++ < 6)
            *us += (*c->p - '0') * scale;
        scale /= 10;
        c->p++;
    }
    return n > 0 ? 0 : -1;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (year astronomical: 1 BC is 0). */
static int64_t mg_days_from_civil(int64_t y, int64_t mo, int64_t d)
{
    y -= mo <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (mo + (mo > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

/* 'YYYY-MM-DD' (the year may be longer); the caller applies ' BC'. */
static int cur_date(mg_cur *c, int64_t *y, int64_t *mo, int64_t *d)
{
    if (cur_num(c, 4, 9, y) < 0 || !cur_lit(c, "-") || cur_num(c, 2, 2, mo) < 0 || !cur_lit(c, "-") ||
        cur_num(c, 2, 2, d) < 0)
        return -1;
    return *mo >= 1 && *mo <= 12 && *d >= 1 && *d <= 31 ? 0 : -1;
}

/* 'HH:MM:SS[.ffffff]' as microseconds. */
static int cur_time(mg_cur *c, int64_t *us)
{
    int64_t h, mi, s, f;
    if (cur_num(c, 2, 10, &h) < 0 || !cur_lit(c, ":") || cur_num(c, 2, 2, &mi) < 0 || !cur_lit(c, ":") ||
        cur_num(c, 2, 2, &s) < 0 || cur_frac(c, &f) < 0)
        return -1;
    *us = ((h * 60 + mi) * 60 + s) * 1000000 + f;
    return 0;
}

/* A zone offset '+HH[:MM[:SS]]' as seconds east of UTC. */
static int cur_offset(mg_cur *c, int64_t *secs)
{
    int sign = cur_lit(c, "+") ? 1 : (cur_lit(c, "-") ? -1 : 0);
    int64_t h, mi = 0, s = 0;
    if (sign == 0 || cur_num(c, 2, 2, &h) < 0)
        return -1;
    if (cur_lit(c, ":") && cur_num(c, 2, 2, &mi) < 0)
        return -1;
    if (cur_lit(c, ":") && cur_num(c, 2, 2, &s) < 0)
        return -1;
    *secs = sign * (h * 3600 + mi * 60 + s);
    return 0;
}

static bool cur_infinity(mg_cur *c, __int128 *v)
{
    if (cur_lit(c, "infinity"))
        *v = MG_INFINITY;
    else if (cur_lit(c, "-infinity"))
        *v = -MG_INFINITY;
    else
        return false;
    return true;
}

/* date, timestamp and timestamptz in the ISO DateStyle: microseconds since 1970 UTC (days
 * for a date). The offset of timestamptz is applied, so texts printed in one session's
 * TimeZone compare across different offsets (summer and winter time). */
static int mg_text_datetime(const uint8_t *p, size_t len, bool with_time, bool with_zone, __int128 *v)
{
    mg_cur c = {p, p + len};
    if (cur_infinity(&c, v))
        return c.p == c.end ? 0 : -1;
    int64_t y, mo, d, us = 0, off = 0;
    if (cur_date(&c, &y, &mo, &d) < 0)
        return -1;
    /* A HAVING constant may be a date alone: midnight, as PostgreSQL reads it. */
    bool date_only = with_time && !with_zone && c.p == c.end;
    if (with_time && !date_only && (!cur_lit(&c, " ") || cur_time(&c, &us) < 0))
        return -1;
    if (with_zone && cur_offset(&c, &off) < 0)
        return -1;
    if (cur_lit(&c, " BC"))
        y = 1 - y;
    if (c.p != c.end)
        return -1;
    int64_t days = mg_days_from_civil(y, mo, d);
    *v = with_time ? (__int128)days * MG_USECS_PER_DAY + us - (__int128)off * 1000000 : days;
    return 0;
}

/* interval in the default 'postgres' IntervalStyle ('1 year 2 mons -3 days +04:05:06.5') as
 * its three fields: months, days and microseconds. */
static int mg_text_interval_fields(const uint8_t *p, size_t len, int64_t *mon, int64_t *day, int64_t *us)
{
    static const struct {
        const char *unit;
        int64_t months, days;
    } units[] = {{"years", 12, 0}, {"year", 12, 0}, {"mons", 1, 0},
                 {"mon", 1, 0},    {"days", 0, 1},  {"day", 0, 1}};
    mg_cur c = {p, p + len};
    bool any = false;
    *mon = *day = *us = 0;
    while (c.p < c.end) {
        if (any && !cur_lit(&c, " "))
            return -1;
        any = true;
        int sign = cur_lit(&c, "-") ? -1 : 1;
        if (sign > 0)
            cur_lit(&c, "+");
        int64_t n, f;
        if (cur_num(&c, 1, 18, &n) < 0)
            return -1;
        if (cur_lit(&c, ":")) {
            int64_t mi, s;
            if (cur_num(&c, 2, 2, &mi) < 0 || !cur_lit(&c, ":") || cur_num(&c, 2, 2, &s) < 0 ||
                cur_frac(&c, &f) < 0 || n >= INT64_MAX / 3600000000)
                return -1;
            *us += sign * (((n * 60 + mi) * 60 + s) * 1000000 + f);
            continue;
        }
        size_t i;
        if (!cur_lit(&c, " "))
            return -1;
        for (i = 0; i < sizeof units / sizeof units[0] && !cur_lit(&c, units[i].unit); i++)
            ;
        if (i == sizeof units / sizeof units[0] || n > INT32_MAX * INT64_C(12))
            return -1;
        *mon += sign * n * units[i].months;
        *day += sign * n * units[i].days;
    }
    return any ? 0 : -1;
}

/* An interval's span as interval_cmp_value computes it, a month 30 days and a day 24 hours. */
static int mg_text_interval(const uint8_t *p, size_t len, __int128 *span)
{
    mg_cur c = {p, p + len};
    if (cur_infinity(&c, span))
        return c.p == c.end ? 0 : -1;
    int64_t mon, day, us;
    if (mg_text_interval_fields(p, len, &mon, &day, &us) < 0)
        return -1;
    *span = ((__int128)mon * 30 + day) * MG_USECS_PER_DAY + us;
    return 0;
}

/* A signed decimal integer. */
static int mg_text_int(const uint8_t *p, size_t len, __int128 *v)
{
    size_t i = 0;
    bool neg = len > 0 && p[0] == '-';
    i += neg;
    if (i == len || len - i > 20)
        return -1;
    __int128 x = 0;
    for (; i < len; i++) {
        if (p[i] < '0' || p[i] > '9')
            return -1;
        x = x * 10 + (p[i] - '0');
    }
    *v = neg ? -x : x;
    return 0;
}

static int mg_text_float(const uint8_t *p, size_t len, bool f4, double *v)
{
    char s[64];
    if (len == 0 || len >= sizeof s)
        return -1;
    memcpy(s, p, len);
    s[len] = 0;
    char *end;
    errno = 0;
    *v = f4 ? (double)strtof(s, &end) : strtod(s, &end);
    /* ERANGE for denormals is fine: the shard printed them */
    return *end == 0 ? 0 : -1;
}

static int mg_text_uuid(const uint8_t *p, size_t len, uint8_t *u)
{
    size_t k = 0;
    for (size_t i = 0; i < len; i++) {
        if (p[i] == '-')
            continue;
        int h = pgs_hex_value((char)p[i]);
        if (h < 0 || k >= 32)
            return -1;
        u[k / 2] = (uint8_t)(k % 2 ? (u[k / 2] | h) : h << 4);
        k++;
    }
    return k == 32 ? 0 : -1;
}

/* bytea's hex output '\x0a1b'; the escape format is refused. */
static int mg_text_bytea(const uint8_t *p, size_t len, pgs_buf *b)
{
    if (len < 2 || p[0] != '\\' || p[1] != 'x' || len % 2)
        return -1;
    pgs_buf_clear(b);
    if (pgs_buf_reserve(b, len / 2) < 0)
        return -2;
    for (size_t i = 2; i < len; i += 2) {
        int hi = pgs_hex_value((char)p[i]), lo = pgs_hex_value((char)p[i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        b->data[b->len++] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}

/* ---- decoding a value for comparison ---- */

static int mg_decode_text(px_merge *m, int slot, const mg_type *t, const uint8_t *p, size_t len, mg_key *k)
{
    switch (t->cls) {
    case MG_INT:
        return mg_text_int(p, len, &k->i);
    case MG_FLOAT:
        return mg_text_float(p, len, t->oid == MG_OID_FLOAT4, &k->d);
    case MG_NUMERIC:
        k->dec = &m->sdec[slot];
        return dec_parse_text(k->dec, p, len);
    case MG_BOOL:
        /* boolout prints t and f; a HAVING constant may be spelled out */
        if (!(len == 1 || (len == 4 && memcmp(p, "true", 4) == 0) ||
              (len == 5 && memcmp(p, "false", 5) == 0)) ||
            (p[0] != 't' && p[0] != 'f'))
            return -1;
        k->i = p[0] == 't';
        return 0;
    case MG_DATE:
        return mg_text_datetime(p, len, false, false, &k->i);
    case MG_TIMESTAMP:
        return mg_text_datetime(p, len, true, t->oid == MG_OID_TIMESTAMPTZ, &k->i);
    case MG_TIME: {
        mg_cur c = {p, p + len};
        int64_t us;
        if (cur_time(&c, &us) < 0 || c.p != c.end)
            return -1;
        k->i = us;
        return 0;
    }
    case MG_TIMETZ: {
        /* timetz_cmp: by the UTC time, then by the zone (seconds west) */
        mg_cur c = {p, p + len};
        int64_t us, off;
        if (cur_time(&c, &us) < 0 || cur_offset(&c, &off) < 0 || c.p != c.end)
            return -1;
        k->i = (__int128)us - (__int128)off * 1000000;
        k->j = -off;
        return 0;
    }
    case MG_INTERVAL:
        return mg_text_interval(p, len, &k->i);
    case MG_UUID:
        k->p = k->u;
        k->n = 16;
        return mg_text_uuid(p, len, k->u);
    case MG_BYTEA: {
        int rc = mg_text_bytea(p, len, &m->sbuf[slot]);
        k->p = m->sbuf[slot].data;
        k->n = m->sbuf[slot].len;
        return rc;
    }
    case MG_BPCHAR:
        while (len > 0 && p[len - 1] == ' ')
            len--;
        /* fall through */
    case MG_TEXT:
    case MG_NAME:
        k->p = p;
        k->n = len;
        return 0;
    default:
        return -1;
    }
}

static int mg_decode_bin(px_merge *m, int slot, const mg_type *t, const uint8_t *p, size_t len, mg_key *k)
{
    if (t->binlen && len != t->binlen)
        return -1;
    switch (t->cls) {
    case MG_INT:
        if (t->oid == MG_OID_OID)
            k->i = pgs_be32(p);
        else
            k->i = len == 2 ? (int16_t)pgs_be16(p) : len == 4 ? (int32_t)pgs_be32(p) : (int64_t)mg_be64(p);
        return 0;
    case MG_FLOAT:
        if (len == 4) {
            uint32_t u = pgs_be32(p);
            float f;
            memcpy(&f, &u, 4);
            k->d = f;
        } else {
            uint64_t u = mg_be64(p);
            memcpy(&k->d, &u, 8);
        }
        return 0;
    case MG_NUMERIC:
        k->dec = &m->sdec[slot];
        return dec_parse_bin(k->dec, p, len);
    case MG_BOOL:
        k->i = p[0] != 0;
        return 0;
    case MG_DATE: {
        /* days since 2000-01-01, and INT32_MIN/MAX for -infinity/infinity, as the text
         * form's scale: days since 1970 and +-MG_INFINITY, so the two compare */
        int32_t d = (int32_t)pgs_be32(p);
        k->i = d == INT32_MAX ? MG_INFINITY : d == INT32_MIN ? -MG_INFINITY : (__int128)d + MG_EPOCH_DAYS;
        return 0;
    }
    case MG_TIME:
        k->i = (int64_t)mg_be64(p);
        return 0;
    case MG_TIMESTAMP: {
        int64_t us = (int64_t)mg_be64(p);
        k->i = us == INT64_MAX   ? MG_INFINITY
               : us == INT64_MIN ? -MG_INFINITY
                                 : (__int128)us + (__int128)MG_EPOCH_DAYS * MG_USECS_PER_DAY;
        return 0;
    }
    case MG_TIMETZ:
        k->j = (int32_t)pgs_be32(p + 8);
        k->i = (__int128)(int64_t)mg_be64(p) + (__int128)k->j * 1000000;
        return 0;
    case MG_INTERVAL:
        k->i = (__int128)(int64_t)mg_be64(p) +
               ((__int128)(int32_t)pgs_be32(p + 12) * 30 + (int32_t)pgs_be32(p + 8)) * MG_USECS_PER_DAY;
        return 0;
    case MG_BPCHAR:
        while (len > 0 && p[len - 1] == ' ')
            len--;
        /* fall through */
    case MG_UUID:
    case MG_TEXT:
    case MG_NAME:
    case MG_BYTEA:
        k->p = p;
        k->n = len;
        return 0;
    default:
        return -1;
    }
}

/* Decodes a non-NULL value of type t into k (slot picks the scratch storage: 0 or 1). */
static int mg_decode(px_merge *m, int slot, const mg_type *t, mg_val v, mg_key *k)
{
    memset(k, 0, sizeof *k);
    int rc = t->fmt ? mg_decode_bin(m, slot, t, v.p, (size_t)v.len, k)
                    : mg_decode_text(m, slot, t, v.p, (size_t)v.len, k);
    if (rc == -2)
        return mg_oom(m);
    return rc < 0 ? mg_bad_value(m, t) : 0;
}

static int mg_cmp_float(double a, double b)
{
    if (isnan(a) || isnan(b))
        return isnan(a) - isnan(b);
    return a < b ? -1 : (a > b ? 1 : 0);
}

/* As varstr_cmp: bytes in "C", else the collation with byte order breaking its ties. */
static int mg_cmp_text(px_merge *m, locale_t loc, const mg_key *a, const mg_key *b)
{
    size_t n = a->n < b->n ? a->n : b->n;
    int c = n ? memcmp(a->p, b->p, n) : 0;
    int bytes = c ? c : (a->n > b->n) - (a->n < b->n);
    if (loc == (locale_t)0 || bytes == 0)
        return bytes;
    pgs_buf *sa = &m->sbuf[0], *sb = &m->sbuf[1];
    pgs_buf_clear(sa);
    pgs_buf_clear(sb);
    pgs_buf_append(sa, a->p, a->n);
    pgs_buf_append_u8(sa, 0);
    pgs_buf_append(sb, b->p, b->n);
    pgs_buf_append_u8(sb, 0);
    if (pgs_buf_failed(sa) || pgs_buf_failed(sb))
        return mg_oom(m), 0;
    c = strcoll_l((const char *)sa->data, (const char *)sb->data, loc);
    return c ? c : bytes;
}

static int mg_cmp_keys(px_merge *m, uint8_t cls, locale_t loc, const mg_key *a, const mg_key *b)
{
    switch (cls) {
    case MG_FLOAT:
        return mg_cmp_float(a->d, b->d);
    case MG_NUMERIC:
        return dec_cmp(a->dec, b->dec);
    case MG_TEXT:
    case MG_BPCHAR:
    case MG_NAME:
        return mg_cmp_text(m, loc, a, b);
    case MG_UUID:
    case MG_BYTEA: {
        size_t n = a->n < b->n ? a->n : b->n;
        int c = n ? memcmp(a->p, b->p, n) : 0;
        return c ? c : (a->n > b->n) - (a->n < b->n);
    }
    default:
        if (a->i != b->i)
            return a->i < b->i ? -1 : 1;
        return (a->j > b->j) - (a->j < b->j);
    }
}

static bool mg_is_text(uint8_t cls)
{
    return cls == MG_TEXT || cls == MG_BPCHAR || cls == MG_NAME;
}

/* The locale column col's text is ordered by: (locale_t)0 for bytes. A column without a
 * collation column (a plan made by hand) is under the database's collation, name under "C". */
static int mg_col_locale(px_merge *m, int col, locale_t *loc)
{
    const mg_coll *k = &m->colls[col];
    *loc = (locale_t)0;
    if (!mg_is_text(m->in[col].cls))
        return 0;
    if (m->cols[col].coll == 0) {
        if (m->in[col].cls == MG_NAME)
            return 0;
        if (m->default_unordered)
            return mg_fail(m, PGS_SQLSTATE_FEATURE_NOT_SUPPORTED,
                           "pgshard: the database's collation is one pgshard cannot reproduce (ICU, or a "
                           "locale this machine lacks) to order text across shards: add the tenant key");
        *loc = m->coll;
        return 0;
    }
    if (k->how == MG_COLL_BYTES || k->how == MG_COLL_LOCALE) {
        *loc = k->loc;
        return 0;
    }
    return mg_fail(m, PGS_SQLSTATE_INTERNAL_ERROR,
                   "pgshard: the cross-shard merge compared text of an unknown collation");
}

/* Compares two non-NULL values of column col, of the types ta and tb (of one class), into
 * *res. */
static int mg_cmp2(px_merge *m, int col, const mg_type *ta, mg_val a, const mg_type *tb, mg_val b, int *res)
{
    mg_key ka, kb;
    locale_t loc;
    if (ta->cls == MG_NONE || ta->cls != tb->cls)
        return mg_fail(m, PGS_SQLSTATE_FEATURE_NOT_SUPPORTED,
                       "pgshard: cannot compare values of type %u across shards", ta->oid);
    if (mg_col_locale(m, col, &loc) < 0 || mg_decode(m, 0, ta, a, &ka) < 0 || mg_decode(m, 1, tb, b, &kb) < 0)
        return -1;
    *res = mg_cmp_keys(m, ta->cls, loc, &ka, &kb);
    return m->failed ? -1 : 0;
}

/* ORDER BY over rows of all columns: NULLs placed as asked, DESC reversing the rest. */
static int mg_cmp_rows(px_merge *m, const mg_type *types, const mg_val *a, const mg_val *b, int *res)
{
    const prs_scatter *pl = m->plan;
    *res = 0;
    for (int i = 0; i < pl->nsort && *res == 0; i++) {
        const prs_sc_sort *so = &m->sort[i];
        mg_val x = a[so->col], y = b[so->col];
        if (x.len < 0 || y.len < 0) {
            int nx = x.len < 0, ny = y.len < 0;
            *res = nx == ny ? 0 : ((nx ? -1 : 1) * (so->nulls_first ? 1 : -1));
            continue;
        }
        if (mg_cmp2(m, so->col, &types[so->col], x, &types[so->col], y, res) < 0)
            return -1;
        if (so->desc)
            *res = -*res;
    }
    return 0;
}

/* ---- rows ---- */

/* Splits a DataRow body into its ncols values, checking every length. */
static int mg_parse_row(px_merge *m, const uint8_t *body, size_t len, mg_val *vals)
{
    pgs_reader r = pgs_reader_make(body, len);
    uint16_t n;
    if (pgs_rd_be16(&r, &n) < 0 || n != m->ncols)
        return mg_malformed(m, "DataRow (its column count differs from the RowDescription's)");
    for (uint16_t i = 0; i < n; i++) {
        uint32_t l;
        if (pgs_rd_be32(&r, &l) < 0)
            return mg_malformed(m, "DataRow");
        vals[i].len = -1;
        vals[i].p = NULL;
        if (l == 0xFFFFFFFFu)
            continue;
        if (l > INT32_MAX || pgs_rd_bytes(&r, l, &vals[i].p) < 0)
            return mg_malformed(m, "DataRow");
        vals[i].len = (int32_t)l;
    }
    return r.left == 0 ? 0 : mg_malformed(m, "DataRow");
}

static void mg_put_val(pgs_buf *b, mg_val v)
{
    pgs_buf_append_be32(b, (uint32_t)v.len);
    if (v.len > 0)
        pgs_buf_append(b, v.p, (size_t)v.len);
}

/* A DataRow message of the first n values. */
static void mg_put_row(pgs_buf *out, const mg_val *vals, int n)
{
    size_t st = pgs_msg_begin(out, PGS_BE_DATA_ROW);
    pgs_buf_append_be16(out, (uint16_t)n);
    for (int i = 0; i < n; i++)
        mg_put_val(out, vals[i]);
    pgs_msg_end(out, st);
}

/* ---- per-shard queues ---- */

static int mg_queue_push(mg_shard *sh, const uint8_t *body, size_t len)
{
    if (sh->tail == sh->cap && sh->head > 0 && sh->head >= sh->cap / 2) {
        /* reuse the room of the rows already taken: move the queue and its bytes down, only
         * when they are half of it, so each row is moved a bounded number of times */
        size_t base = sh->ent[sh->head].off;
        pgs_buf_consume(&sh->arena, base);
        for (size_t i = sh->head; i < sh->tail; i++)
            sh->ent[i - sh->head] = (mg_ent){sh->ent[i].off - base, sh->ent[i].len};
        sh->tail -= sh->head;
        sh->head = 0;
    }
    if (sh->tail == sh->cap) {
        size_t cap = sh->cap ? sh->cap * 2 : 64;
        mg_ent *e = realloc(sh->ent, cap * sizeof *e);
        if (!e)
            return -1;
        sh->ent = e;
        sh->cap = cap;
    }
    size_t off = sh->arena.len;
    if (pgs_buf_append(&sh->arena, body, len) < 0)
        return -1;
    sh->ent[sh->tail++] = (mg_ent){off, len};
    return 0;
}

static size_t mg_queued(const mg_shard *sh)
{
    return sh->tail - sh->head;
}

static void mg_queue_pop(mg_shard *sh)
{
    sh->head++;
    sh->head_parsed = false;
    if (sh->head == sh->tail) {
        sh->head = sh->tail = 0;
        pgs_buf_clear(&sh->arena);
    }
}

/* The values of shard s's first queued row, split once and remembered. */
static int mg_head_vals(px_merge *m, int s, mg_val *vals)
{
    mg_shard *sh = &m->shards[s];
    const uint8_t *base = sh->arena.data + sh->ent[sh->head].off;
    if (!sh->head_parsed) {
        if (mg_parse_row(m, base, sh->ent[sh->head].len, vals) < 0)
            return -1;
        for (int i = 0; i < m->ncols; i++) {
            sh->hlen[i] = vals[i].len;
            sh->hoff[i] = vals[i].len < 0 ? 0 : (uint32_t)(vals[i].p - base);
        }
        sh->head_parsed = true;
        return 0;
    }
    for (int i = 0; i < m->ncols; i++)
        vals[i] = (mg_val){sh->hlen[i] < 0 ? NULL : base + sh->hoff[i], sh->hlen[i]};
    return 0;
}

/* ---- numbers out ---- */

/* The neighbours of a positive finite value: one step of its bits either way (libm's
 * nextafter without linking libm). */
static double mg_step(double v, int dir)
{
    uint64_t u;
    memcpy(&u, &v, 8);
    u += (uint64_t)(int64_t)dir;
    memcpy(&v, &u, 8);
    return v;
}

static float mg_stepf(float v, int dir)
{
    uint32_t u;
    memcpy(&u, &v, 4);
    u += (uint32_t)(int32_t)dir;
    memcpy(&v, &u, 4);
    return v;
}

/* The significant digits (no leading zero) and decimal exponent of a number printed by
 * "%e"; trailing zeros dropped. */
static void mg_sci_parse(const char *s, char *digits, size_t cap, size_t *nd, long *exp)
{
    *nd = 0;
    *exp = 0;
    s += *s == '-';
    for (; *s && *s != 'e'; s++) {
        if (*s != '.' && *nd < cap)
            digits[(*nd)++] = *s;
    }
    if (*s == 'e')
        *exp = strtol(s + 1, NULL, 10);
    while (*nd > 1 && digits[*nd - 1] == '0')
        (*nd)--;
}

/* Whether the decimal s ("%e" form, positive) is exactly x: x printed in full (a binary
 * fraction's expansion ends within 1100 digits for every double) has the same digits. */
static bool mg_decimal_is(const char *s, long double x)
{
    char full[1200], a[32], b[1200];
    size_t na, nb;
    long ea, eb;
    snprintf(full, sizeof full, "%.1100Le", x);
    mg_sci_parse(s, a, sizeof a, &na, &ea);
    mg_sci_parse(full, b, sizeof b, &nb, &eb);
    return ea == eb && na == nb && memcmp(a, b, na) == 0;
}

/* Whether the digits s stand for v as Ryu decides it: they read back to v and are not
 * exactly halfway to a neighbour (PostgreSQL builds Ryu without STRICTLY_SHORTEST, so an
 * interval's bounds are never accepted, where strtod would round a tie to even). The
 * midpoints of doubles and floats are exact in long double; a decimal that reads as one
 * is checked digit by digit, as most that come that close are not exactly it. */
static bool mg_float_reads_back(const char *s, double v, bool f4)
{
    if (f4 ? strtof(s, NULL) != (float)v : strtod(s, NULL) != v)
        return false;
    long double a = f4 ? (long double)fabsf((float)v) : (long double)fabs(v);
    long double lo = f4 ? ((long double)mg_stepf(fabsf((float)v), -1) + a) / 2
                        : ((long double)mg_step(fabs(v), -1) + a) / 2;
    long double hi =
        f4 ? ((long double)mg_stepf(fabsf((float)v), 1) + a) / 2 : ((long double)mg_step(fabs(v), 1) + a) / 2;
    long double x = fabsl(strtold(s, NULL));
    const char *mag = s + (*s == '-');
    if (x == lo && mg_decimal_is(mag, lo))
        return false;
    return !(x == hi && mg_decimal_is(mag, hi));
}

/* digits (n of them) times 10^exp moved one unit in the last place up or down, keeping n
 * digits: 9.99 up is 1.00e+1, 1.00 down is 9.99e-1. */
static void mg_digits_step(char *digits, int n, long *exp, int dir)
{
    int i = n - 1;
    for (; i >= 0; i--) {
        char edge = dir > 0 ? '9' : '0';
        if (digits[i] != edge) {
            digits[i] = (char)(digits[i] + dir);
            break;
        }
        digits[i] = dir > 0 ? '0' : '9';
    }
    if (i < 0 && dir > 0) {
        digits[0] = '1'; /* 9.99 + 0.01: the rest are zeros already */
        (*exp)++;
    } else if (digits[0] == '0') {
        memmove(digits, digits + 1, (size_t)n - 1);
        digits[n - 1] = '9';
        (*exp)--;
    }
}

/* digits times 10^exp in "%e" form, signed like v. */
static void mg_digits_text(const char *digits, int n, long exp, double v, char *out, size_t cap)
{
    snprintf(out, cap, "%s%c.%.*se%ld", v < 0 ? "-" : "", digits[0], n - 1, digits + 1, exp);
}

/* The fewest significant digits of |v| that read back to v (at most 17, 9 for float4),
 * closest to v among those, and the decimal exponent of the first: 1234.5 is "12345" and
 * 3. Next to a power of two the rounding interval is lopsided, so the correctly rounded
 * digits may fall out of it where their neighbour above is in. */
static void mg_float_digits(double v, bool f4, char *digits, int *nd, int *exp)
{
    char tmp[64], alt[64];
    size_t n = 0;
    long e = 0;
    for (int prec = 1; prec <= (f4 ? 9 : 17); prec++) {
        snprintf(tmp, sizeof tmp, "%.*e", prec - 1, v);
        mg_sci_parse(tmp, digits, 31, &n, &e);
        if (mg_float_reads_back(tmp, v, f4))
            break;
        for (int dir = 1; dir >= -1; dir -= 2) {
            char d[32];
            long de = e;
            int k;
            for (k = 0; k < prec; k++)
                d[k] = k < (int)n ? digits[k] : '0';
            mg_digits_step(d, prec, &de, dir);
            mg_digits_text(d, prec, de, v, alt, sizeof alt);
            if (mg_float_reads_back(alt, v, f4)) {
                mg_sci_parse(alt, digits, 31, &n, &e);
                *nd = (int)n;
                *exp = (int)e;
                return;
            }
        }
    }
    *nd = (int)n;
    *exp = (int)e;
}

/* A double as float8out/float4out print it with extra_float_digits = 1 (Ryu): the fewest
 * digits that read back to the same value, fixed notation for decimal exponents from -4 up
 * to 14 (5 for float4), else d.ddde+XX. */
static void mg_float_text(double v, bool f4, pgs_buf *b)
{
    if (isnan(v) || isinf(v) || v == 0) {
        const char *s = isnan(v)   ? "NaN"
                        : isinf(v) ? (v > 0 ? "Infinity" : "-Infinity")
                                   : (signbit(v) ? "-0" : "0");
        pgs_buf_append(b, s, strlen(s));
        return;
    }
    char digits[32] = {'0'};
    int nd, exp;
    mg_float_digits(v, f4, digits, &nd, &exp);
    if (v < 0)
        pgs_buf_append_u8(b, '-');
    if (exp < -4 || exp >= (f4 ? 6 : 15)) {
        pgs_buf_append_u8(b, (uint8_t)digits[0]);
        if (nd > 1) {
            pgs_buf_append_u8(b, '.');
            pgs_buf_append(b, digits + 1, (size_t)nd - 1);
        }
        pgs_buf_appendf(b, "e%c%02d", exp < 0 ? '-' : '+', exp < 0 ? -exp : exp);
    } else if (exp < 0) {
        pgs_buf_append(b, "0.", 2);
        for (int i = 0; i < -exp - 1; i++)
            pgs_buf_append_u8(b, '0');
        pgs_buf_append(b, digits, (size_t)nd);
    } else {
        for (int i = 0; i <= exp; i++)
            pgs_buf_append_u8(b, (uint8_t)(i < nd ? digits[i] : '0'));
        if (nd > exp + 1) {
            pgs_buf_append_u8(b, '.');
            pgs_buf_append(b, digits + exp + 1, (size_t)(nd - exp - 1));
        }
    }
}

static void mg_put_float(pgs_buf *b, const mg_type *t, double v)
{
    bool f4 = t->oid == MG_OID_FLOAT4;
    if (t->fmt == 0) {
        mg_float_text(v, f4, b);
        return;
    }
    if (f4) {
        float f = (float)v;
        uint32_t u;
        memcpy(&u, &f, 4);
        pgs_buf_append_be32(b, u);
        return;
    }
    uint64_t u;
    memcpy(&u, &v, 8);
    mg_put_be64(b, u);
}

/* An integer in the column's own type, with its range checked as PostgreSQL would. */
static int mg_put_int(px_merge *m, pgs_buf *b, const mg_type *t, int64_t v)
{
    static const struct {
        uint8_t width;
        int64_t lo, hi;
        const char *name;
    } ranges[] = {{2, INT16_MIN, INT16_MAX, "smallint"}, {4, INT32_MIN, INT32_MAX, "integer"}};
    for (size_t i = 0; i < 2; i++) {
        if (t->binlen == ranges[i].width && (v < ranges[i].lo || v > ranges[i].hi))
            return mg_fail(m, PGS_SQLSTATE_NUMERIC_VALUE_OUT_OF_RANGE, "pgshard: %s out of range",
                           ranges[i].name);
    }
    if (t->fmt == 0)
        pgs_buf_appendf(b, "%" PRId64, v);
    else if (t->binlen == 2)
        pgs_buf_append_be16(b, (uint16_t)v);
    else if (t->binlen == 4)
        pgs_buf_append_be32(b, (uint32_t)v);
    else
        mg_put_be64(b, (uint64_t)v);
    return 0;
}

static void mg_put_dec(pgs_buf *b, const mg_type *t, const mg_dec *d)
{
    if (t->fmt)
        dec_out_bin(d, b);
    else
        dec_out_text(d, b);
}

/* ---- the plan and the row descriptions ---- */

px_merge *px_merge_new(const prs_scatter *plan, int nshards, locale_t coll)
{
    if (nshards < 0)
        return NULL;
    px_merge *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    m->shards = calloc(nshards ? (size_t)nshards : 1, sizeof *m->shards);
    if (!m->shards) {
        free(m);
        return NULL;
    }
    m->plan = plan;
    m->nshards = nshards;
    m->coll = coll;
    m->satisfied = !plan->grouped && plan->limit == 0;
    return m;
}

void px_merge_set_collations(px_merge *m, bool default_unordered, px_merge_coll_fn resolve, void *arg)
{
    m->default_unordered = default_unordered;
    m->resolve = resolve;
    m->resolve_arg = arg;
}

static void mg_free_groups(px_merge *m)
{
    for (size_t g = 0; g < m->ngroups; g++) {
        for (int c = 0; c < m->ncols; c++) {
            free(m->groups[g]->acc[c].val);
            dec_free(&m->groups[g]->acc[c].dec);
        }
        free(m->groups[g]->key);
        free(m->groups[g]);
    }
    free(m->groups);
    free(m->htab);
    free(m->order);
}

void px_merge_free(px_merge *m)
{
    if (!m)
        return;
    for (int s = 0; s < m->nshards; s++) {
        pgs_buf_free(&m->shards[s].arena);
        free(m->shards[s].ent);
    }
    free(m->shards);
    for (int c = 0; c < PRS_SC_MAX_COLS; c++)
        if (m->colls[c].owned)
            freelocale(m->colls[c].loc);
    mg_free_groups(m);
    pgs_buf_free(&m->desc);
    pgs_buf_free(&m->key);
    pgs_buf_free(&m->final);
    for (int i = 0; i < 3; i++)
        dec_free(&m->sdec[i]);
    pgs_buf_free(&m->sbuf[0]);
    pgs_buf_free(&m->sbuf[1]);
    pgs_buf_free(&m->tmp);
    free(m);
}

static int mg_bad_plan(px_merge *m, const char *why)
{
    return mg_fail(m, PGS_SQLSTATE_INTERNAL_ERROR, "pgshard: the cross-shard merge plan is inconsistent (%s)",
                   why);
}

static int mg_cannot_compare(px_merge *m, const mg_type *t)
{
    return mg_fail(m, PGS_SQLSTATE_FEATURE_NOT_SUPPORTED,
                   "pgshard: cannot compare values of type %u across shards", t->oid);
}

/* What a column's kind needs of its type, checked once the types are known so a query the
 * merge cannot finish fails before any row is sent. */
static int mg_check_col(px_merge *m, int c)
{
    const mg_type *t = &m->in[c];
    bool int8ish = t->cls == MG_INT && t->oid != MG_OID_OID;
    bool summable = int8ish || t->cls == MG_FLOAT || t->cls == MG_NUMERIC || t->cls == MG_INTERVAL;
    switch (m->cols[c].kind) {
    case PRS_SC_PLAIN:
    case PRS_SC_GROUP:
        return 0;
    case PRS_SC_COUNT:
        return int8ish ? 0 : mg_bad_plan(m, "count() is not an integer");
    case PRS_SC_MIN:
    case PRS_SC_MAX:
        return t->cls != MG_NONE ? 0 : mg_cannot_compare(m, t);
    case PRS_SC_BOOL_AND:
    case PRS_SC_BOOL_OR:
        return t->cls == MG_BOOL ? 0 : mg_bad_plan(m, "bool_and()/bool_or() is not a boolean");
    case PRS_SC_SUM:
    case PRS_SC_AVG:
        if (!summable)
            return mg_fail(m, PGS_SQLSTATE_FEATURE_NOT_SUPPORTED,
                           "pgshard: cannot combine sum() or avg() of type %u across shards", t->oid);
        if (m->cols[c].kind == PRS_SC_AVG &&
            (m->cols[c].arg >= m->ncols || m->in[m->cols[c].arg].cls != MG_INT))
            return mg_bad_plan(m, "avg()'s count column");
        return 0;
    default:
        return mg_bad_plan(m, "unknown column kind");
    }
}

/* The merged rows' type of column c: avg becomes numeric, or float8 over a float sum, and
 * stays an interval over an interval sum. */
static mg_type mg_out_type(const px_merge *m, int c)
{
    if (m->cols[c].kind != PRS_SC_AVG || m->in[c].cls == MG_INTERVAL)
        return m->in[c];
    return mg_type_of(m->in[c].cls == MG_FLOAT ? MG_OID_FLOAT8 : MG_OID_NUMERIC, m->in[c].fmt);
}

/* What the merge does with each text column: orders it (ORDER BY, min/max, HAVING), or
 * only tells equal values apart (group keys). */
static void mg_find_needs(px_merge *m)
{
    const prs_scatter *pl = m->plan;
    for (int i = 0; i < pl->nsort; i++)
        m->need[m->sort[i].col] = MG_NEED_ORDER;
    for (int i = 0; i < pl->ninsns; i++)
        if (pl->having[i].op == PRS_SC_OP_COL)
            m->need[pl->having[i].arg] = MG_NEED_ORDER;
    for (int c = 0; c < m->ncols; c++) {
        uint8_t kind = m->cols[c].kind;
        if (kind == PRS_SC_MIN || kind == PRS_SC_MAX)
            m->need[c] = MG_NEED_ORDER;
        else if (kind == PRS_SC_GROUP && m->need[c] == MG_NEED_NONE)
            m->need[c] = MG_NEED_EQUAL;
        if (!mg_is_text(m->in[c].cls))
            m->need[c] = MG_NEED_NONE;
    }
}

/* A text column that is compared needs its collation column, a text column; under * there
 * is none, and the merge cannot know whether a column has a collation of its own. */
static int mg_check_needs(px_merge *m)
{
    mg_find_needs(m);
    for (int c = 0; c < m->ncols; c++) {
        uint16_t k = m->cols[c].coll;
        if (k > m->ncols || (k && m->in[k - 1].cls != MG_TEXT))
            return mg_bad_plan(m, "a collation column");
        if (m->need[c] == MG_NEED_ORDER && m->plan->ncols == 0 && c < m->nvisible)
            return mg_fail(m, PGS_SQLSTATE_FEATURE_NOT_SUPPORTED,
                           "pgshard: with SELECT * a cross-shard ORDER BY of the text column \"%s\" by "
                           "position is not supported (its collation is not known): name the column",
                           (const char *)m->desc.data + m->fields[c].name_off);
    }
    return 0;
}

/* A value the HAVING program takes as a condition (an operand of AND, OR, NOT, or the whole
 * HAVING: `HAVING bool_and(b)`) must be boolean, as the server requires: the program is
 * walked once with a stack of the columns it would push (-1 for anything else). */
static int mg_check_having_truth(px_merge *m)
{
    const prs_scatter *pl = m->plan;
    int st[PRS_SC_MAX_INSNS];
    int sp = 0;
    for (int i = 0; i < pl->ninsns; i++) {
        uint8_t op = pl->having[i].op;
        int pops = op <= PRS_SC_OP_NULL ? 0 : (op == PRS_SC_OP_NOT || op >= PRS_SC_OP_IS_NULL) ? 1 : 2;
        bool cond = op == PRS_SC_OP_AND || op == PRS_SC_OP_OR || op == PRS_SC_OP_NOT;
        if (sp < pops || op < PRS_SC_OP_COL || op > PRS_SC_OP_IS_NOT_NULL)
            return mg_bad_plan(m, "the HAVING program");
        for (int k = 0; k < pops; k++) {
            int c = st[--sp];
            if (cond && c >= 0 && m->out[c].cls != MG_BOOL)
                return mg_fail(m, PGS_SQLSTATE_DATATYPE_MISMATCH,
                               "pgshard: argument of HAVING must be type boolean, not type %u",
                               m->out[c].oid);
        }
        st[sp++] = op == PRS_SC_OP_COL ? (int)pl->having[i].arg : -1;
    }
    if (sp > 1 || (sp == 1 && st[0] >= 0 && m->out[st[0]].cls != MG_BOOL))
        return sp > 1 ? mg_bad_plan(m, "the HAVING program")
                      : mg_fail(m, PGS_SQLSTATE_DATATYPE_MISMATCH,
                                "pgshard: argument of HAVING must be type boolean, not type %u",
                                m->out[st[0]].oid);
    return 0;
}

static int mg_check_plan(px_merge *m)
{
    const prs_scatter *pl = m->plan;
    if (m->nvisible > m->ncols || pl->nsort > PRS_SC_MAX_SORT || pl->ninsns > PRS_SC_MAX_INSNS)
        return mg_bad_plan(m, "counts");
    /* rows that stream are sorted only by merging sorted shards, and HAVING needs groups:
     * a plan saying otherwise would lose its ORDER BY or HAVING without a word */
    if (!pl->grouped && pl->nsort && !pl->shards_sorted)
        return mg_bad_plan(m, "ORDER BY over unsorted shards");
    if (!pl->grouped && pl->ninsns)
        return mg_bad_plan(m, "HAVING without grouping");
    for (int c = 0; c < m->ncols; c++) {
        if (!pl->grouped && m->cols[c].kind != PRS_SC_PLAIN)
            return mg_bad_plan(m, "an aggregate without grouping");
        if (mg_check_col(m, c) < 0)
            return -1;
        m->out[c] = mg_out_type(m, c);
    }
    for (int i = 0; i < pl->nsort; i++) {
        if (m->sort[i].col >= m->ncols)
            return mg_bad_plan(m, "a sort column");
        if (m->out[m->sort[i].col].cls == MG_NONE)
            return mg_cannot_compare(m, &m->out[m->sort[i].col]);
    }
    for (int i = 0; i < pl->ninsns; i++) {
        const prs_sc_insn *in = &pl->having[i];
        if (in->op == PRS_SC_OP_COL && in->arg >= m->ncols)
            return mg_bad_plan(m, "a HAVING column");
        if (in->op == PRS_SC_OP_CONST &&
            (!pl->str || in->arg >= pl->str_len || !memchr(pl->str + in->arg, 0, pl->str_len - in->arg)))
            return mg_bad_plan(m, "a HAVING constant");
    }
    if (mg_check_having_truth(m) < 0)
        return -1;
    return mg_check_needs(m);
}

/* Splits a RowDescription body into fields; names are offsets into body. */
static int mg_parse_desc(px_merge *m, const uint8_t *body, size_t len, mg_field *f, int *nout)
{
    pgs_reader r = pgs_reader_make(body, len);
    uint16_t n;
    if (pgs_rd_be16(&r, &n) < 0)
        return mg_malformed(m, "RowDescription");
    if (n > PRS_SC_MAX_COLS)
        return mg_fail(m, PGS_SQLSTATE_FEATURE_NOT_SUPPORTED,
                       "pgshard: a cross-shard read returns at most %d columns", PRS_SC_MAX_COLS);
    for (int i = 0; i < n; i++) {
        const char *name;
        if (pgs_rd_cstr(&r, &name) < 0 || pgs_rd_be32(&r, &f[i].table) < 0 ||
            pgs_rd_be16(&r, &f[i].attnum) < 0 || pgs_rd_be32(&r, &f[i].type) < 0 ||
            pgs_rd_be16(&r, &f[i].typlen) < 0 || pgs_rd_be32(&r, &f[i].typmod) < 0 ||
            pgs_rd_be16(&r, &f[i].format) < 0 || f[i].format > 1)
            return mg_malformed(m, "RowDescription");
        f[i].name_off = (size_t)((const uint8_t *)name - body);
    }
    if (r.left)
        return mg_malformed(m, "RowDescription");
    *nout = n;
    return 0;
}

/* A plan with * and hidden columns: they are the RowDescription's last star_hidden, and a
 * sort position that is not before them names no column * gave (the server's 42P10, which
 * the shards did not raise as the hidden columns widened their select list). */
static int mg_star_sort(px_merge *m)
{
    const prs_scatter *pl = m->plan;
    int v = m->nvisible;
    for (int i = 0; i < pl->nsort && i < PRS_SC_MAX_SORT; i++) {
        m->sort[i] = pl->sort[i];
        unsigned col = pl->sort[i].col;
        if (col & PRS_SC_SORT_HIDDEN)
            m->sort[i].col = (uint16_t)(v + (int)(col & ~PRS_SC_SORT_HIDDEN));
        else if ((int)col >= v)
            return mg_fail(m, PGS_SQLSTATE_INVALID_COLUMN_REFERENCE,
                           "pgshard: ORDER BY position %u is not in select list", col + 1);
    }
    return 0;
}

/* A plan without columns (SELECT *) takes the RowDescription's all as visible, plain (or,
 * for SELECT DISTINCT *, group keys), but for the hidden ones it adds after them. */
static int mg_star_cols(px_merge *m, int n)
{
    const prs_scatter *pl = m->plan;
    int v = n - pl->star_hidden;
    if (v < 1)
        return mg_fail(m, PGS_SQLSTATE_INTERNAL_ERROR,
                       "pgshard: a shard returned %d columns where the cross-shard plan expects more than %d",
                       n, pl->star_hidden);
    m->ncols = (uint16_t)n;
    m->nvisible = (uint16_t)v;
    for (int c = 0; c < v; c++)
        m->cols[c] = (prs_sc_col){pl->grouped ? PRS_SC_GROUP : PRS_SC_PLAIN, false, 0, 0, 0};
    for (int c = v; c < n; c++) {
        m->cols[c] = pl->cols[c - v];
        m->cols[c].hidden = true;
        if (m->cols[c].coll)
            m->cols[c].coll = (uint16_t)(m->cols[c].coll + v);
    }
    return mg_star_sort(m);
}

/* The first RowDescription fixes the columns: the plan's, or for a plan with *, those it
 * gives (mg_star_cols). */
static int mg_first_desc(px_merge *m, const uint8_t *body, size_t len, const mg_field *f, int n)
{
    const prs_scatter *pl = m->plan;
    if (pgs_buf_append(&m->desc, body, len) < 0)
        return mg_oom(m);
    memcpy(m->fields, f, (size_t)n * sizeof *f);
    if (pl->ncols == 0) {
        if (mg_star_cols(m, n) < 0)
            return -1;
    } else {
        if (pl->ncols > PRS_SC_MAX_COLS || pl->ncols != n)
            return mg_fail(m, PGS_SQLSTATE_INTERNAL_ERROR,
                           "pgshard: a shard returned %d columns where the cross-shard plan expects %d", n,
                           pl->ncols);
        m->ncols = pl->ncols;
        m->nvisible = pl->nvisible;
        memcpy(m->cols, pl->cols, (size_t)n * sizeof *m->cols);
        memcpy(m->sort, pl->sort, sizeof m->sort);
    }
    for (int c = 0; c < n; c++)
        m->in[c] = mg_type_of(f[c].type, f[c].format);
    m->have_desc = true;
    return mg_check_plan(m);
}

static int mg_same_desc(px_merge *m, const uint8_t *body, const mg_field *f, int n)
{
    if (n != m->ncols)
        return mg_fail(m, PGS_SQLSTATE_INTERNAL_ERROR,
                       "pgshard: the shards returned different row descriptions (%d and %d columns)",
                       m->ncols, n);
    for (int c = 0; c < n; c++) {
        const char *a = (const char *)m->desc.data + m->fields[c].name_off,
                   *b = (const char *)body + f[c].name_off;
        if (f[c].type != m->fields[c].type || f[c].format != m->fields[c].format || strcmp(a, b) != 0)
            return mg_fail(
                m, PGS_SQLSTATE_INTERNAL_ERROR,
                "pgshard: the shards returned different row descriptions (column %d: \"%s\" of type "
                "%u and \"%s\" of type %u)",
                c + 1, a, m->fields[c].type, b, f[c].type);
    }
    return 0;
}

int px_merge_row_desc(px_merge *m, int s, const uint8_t *body, size_t len)
{
    mg_field f[PRS_SC_MAX_COLS];
    int n = 0;
    if (m->failed)
        return -1;
    if (s < 0 || s >= m->nshards)
        return mg_fail(m, PGS_SQLSTATE_INTERNAL_ERROR, "pgshard: no shard %d in this merge", s);
    if (m->shards[s].has_desc || m->shards[s].completed)
        return mg_malformed(m, "second RowDescription");
    if (mg_parse_desc(m, body, len, f, &n) < 0)
        return -1;
    if ((m->have_desc ? mg_same_desc(m, body, f, n) : mg_first_desc(m, body, len, f, n)) < 0)
        return -1;
    m->shards[s].has_desc = true;
    return 0;
}

/* The RowDescription for the client: the visible columns, avg's retyped. */
static void mg_put_desc(px_merge *m, pgs_buf *out)
{
    size_t st = pgs_msg_begin(out, PGS_BE_ROW_DESC);
    pgs_buf_append_be16(out, m->nvisible);
    for (int c = 0; c < m->nvisible; c++) {
        const mg_field *f = &m->fields[c];
        bool avg = m->cols[c].kind == PRS_SC_AVG;
        bool f8 = m->out[c].oid == MG_OID_FLOAT8;
        pgs_buf_append_cstr(out, (const char *)m->desc.data + f->name_off);
        pgs_buf_append_be32(out, avg ? 0 : f->table);
        pgs_buf_append_be16(out, avg ? 0 : f->attnum);
        pgs_buf_append_be32(out, m->out[c].oid);
        pgs_buf_append_be16(out, avg ? (f8 ? 8 : m->out[c].cls == MG_INTERVAL ? 16 : 0xFFFF) : f->typlen);
        pgs_buf_append_be32(out, avg ? 0xFFFFFFFFu : f->typmod);
        pgs_buf_append_be16(out, f->format);
    }
    pgs_msg_end(out, st);
}

/* ---- groups ---- */

/* A group key value as GROUP BY compares it: numeric without its display scale ('1.0' is
 * '1.00'), floats by value ('-0' is '0'), bpchar without trailing spaces, intervals by span
 * ('1 day' is '24:00:00'); other types by their bytes, which equal values share. */
static int mg_key_val(px_merge *m, const mg_type *t, mg_val v)
{
    pgs_buf *k = &m->key;
    mg_key dk;
    if (v.len < 0)
        return pgs_buf_append_u8(k, 0);
    pgs_buf_append_u8(k, 1);
    switch (t->cls) {
    case MG_NUMERIC:
        if (mg_decode(m, 0, t, v, &dk) < 0)
            return -1;
        while (dk.dec->n && dk.dec->scale > 0 && dk.dec->dig[dk.dec->n - 1] == 0) {
            dk.dec->n--;
            dk.dec->scale--;
        }
        if (dk.dec->n == 0)
            dk.dec->scale = 0; /* 0.00 is 0 */
        pgs_buf_append_u8(k, (uint8_t)(dk.dec->special * 2 + dk.dec->neg));
        pgs_buf_append_be32(k, (uint32_t)dk.dec->scale);
        pgs_buf_append_be32(k, (uint32_t)dk.dec->n);
        return pgs_buf_append(k, dk.dec->dig, dk.dec->n);
    case MG_FLOAT:
        if (mg_decode(m, 0, t, v, &dk) < 0)
            return -1;
        if (dk.d == 0 || isnan(dk.d))
            dk.d = isnan(dk.d) ? NAN : 0.0;
        return pgs_buf_append(k, &dk.d, sizeof dk.d);
    case MG_INTERVAL:
    case MG_BPCHAR:
        if (mg_decode(m, 0, t, v, &dk) < 0)
            return -1;
        if (t->cls == MG_INTERVAL)
            return pgs_buf_append(k, &dk.i, sizeof dk.i);
        pgs_buf_append_be32(k, (uint32_t)dk.n);
        return pgs_buf_append(k, dk.p, dk.n);
    default:
        pgs_buf_append_be32(k, (uint32_t)v.len);
        return pgs_buf_append(k, v.p, (size_t)v.len);
    }
}

static uint64_t mg_hash(const uint8_t *p, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

static int mg_htab_grow(px_merge *m)
{
    size_t cap = m->hcap ? m->hcap * 2 : 64;
    uint32_t *t = calloc(cap, sizeof *t);
    if (!t)
        return -1;
    for (size_t g = 0; g < m->ngroups; g++) {
        size_t i = m->groups[g]->hash & (cap - 1);
        while (t[i])
            i = (i + 1) & (cap - 1);
        t[i] = (uint32_t)g + 1;
    }
    free(m->htab);
    m->htab = t;
    m->hcap = cap;
    return 0;
}

static mg_group *mg_group_new(px_merge *m, uint64_t h, size_t slot)
{
    if ((m->ngroups + 1) * 2 > m->hcap || m->ngroups >= UINT32_MAX - 1) {
        if (m->ngroups >= UINT32_MAX - 1 || mg_htab_grow(m) < 0)
            return NULL;
        slot = h & (m->hcap - 1);
        while (m->htab[slot])
            slot = (slot + 1) & (m->hcap - 1);
    }
    if (m->ngroups == m->gcap) {
        size_t cap = m->gcap ? m->gcap * 2 : 64;
        mg_group **gs = realloc(m->groups, cap * sizeof(mg_group *));
        if (!gs)
            return NULL;
        m->groups = gs;
        m->gcap = cap;
    }
    mg_group *g = calloc(1, sizeof *g + (size_t)m->ncols * sizeof g->acc[0]);
    if (!g)
        return NULL;
    g->key = malloc(m->key.len ? m->key.len : 1);
    if (!g->key) {
        free(g);
        return NULL;
    }
    if (m->key.len)
        memcpy(g->key, m->key.data, m->key.len);
    g->klen = m->key.len;
    g->hash = h;
    g->seq = m->ngroups;
    for (int c = 0; c < m->ncols; c++) {
        g->acc[c].len = -1;
        g->acc[c].flag = m->cols[c].kind == PRS_SC_BOOL_AND;
    }
    m->groups[m->ngroups++] = g;
    m->htab[slot] = (uint32_t)m->ngroups;
    return g;
}

/* The group of a row, made when new. */
static mg_group *mg_group_of(px_merge *m, const mg_val *vals, bool *fresh)
{
    pgs_buf_clear(&m->key);
    for (int c = 0; c < m->ncols; c++) {
        if (m->cols[c].kind == PRS_SC_GROUP && mg_key_val(m, &m->in[c], vals[c]) < 0)
            return m->failed ? NULL : (mg_oom(m), NULL);
    }
    if (pgs_buf_failed(&m->key) || (!m->hcap && mg_htab_grow(m) < 0))
        return mg_oom(m), NULL;
    uint64_t h = mg_hash(m->key.data, m->key.len);
    size_t i = h & (m->hcap - 1);
    for (; m->htab[i]; i = (i + 1) & (m->hcap - 1)) {
        mg_group *g = m->groups[m->htab[i] - 1];
        if (g->hash == h && g->klen == m->key.len &&
            (g->klen == 0 || memcmp(g->key, m->key.data, g->klen) == 0)) {
            *fresh = false;
            return g;
        }
    }
    *fresh = true;
    mg_group *g = mg_group_new(m, h, i);
    return g ? g : (mg_oom(m), NULL);
}

static int mg_keep(px_merge *m, mg_acc *a, mg_val v)
{
    free(a->val);
    a->val = NULL;
    a->len = v.len;
    if (v.len <= 0)
        return 0;
    a->val = malloc((size_t)v.len);
    if (!a->val)
        return mg_oom(m);
    memcpy(a->val, v.p, (size_t)v.len);
    return 0;
}

static int mg_int_of(px_merge *m, const mg_type *t, mg_val v, int64_t *out)
{
    mg_key k;
    if (mg_decode(m, 0, t, v, &k) < 0)
        return -1;
    if (k.i < INT64_MIN || k.i > INT64_MAX)
        return mg_bad_value(m, t);
    *out = (int64_t)k.i;
    return 0;
}

static int mg_add_int(px_merge *m, int64_t *acc, int64_t x)
{
    if (__builtin_add_overflow(*acc, x, acc))
        return mg_fail(m, PGS_SQLSTATE_NUMERIC_VALUE_OUT_OF_RANGE, "pgshard: bigint out of range");
    return 0;
}

/* An interval's fields, from its text ('postgres' IntervalStyle) or binary form. */
static int mg_interval_of(px_merge *m, const mg_type *t, mg_val v, int64_t *mon, int64_t *day, int64_t *us)
{
    if (t->fmt == 0) {
        if (mg_text_interval_fields(v.p, (size_t)v.len, mon, day, us) < 0)
            return mg_bad_value(m, t);
        return 0;
    }
    if (v.len != 16)
        return mg_bad_value(m, t);
    *us = (int64_t)mg_be64(v.p);
    *day = (int32_t)pgs_be32(v.p + 8);
    *mon = (int32_t)pgs_be32(v.p + 12);
    return 0;
}

/* interval_pl, field by field, with its overflow checks. */
static int mg_add_interval(px_merge *m, int c, mg_acc *a, mg_val v)
{
    int64_t mon, day, us;
    if (mg_interval_of(m, &m->in[c], v, &mon, &day, &us) < 0)
        return -1;
    if (mon < INT32_MIN || mon > INT32_MAX || day < INT32_MIN || day > INT32_MAX)
        return mg_bad_value(m, &m->in[c]);
    a->seen = true;
    if (__builtin_add_overflow(a->mon, (int32_t)mon, &a->mon) ||
        __builtin_add_overflow(a->day, (int32_t)day, &a->day) || __builtin_add_overflow(a->n, us, &a->n))
        return mg_fail(m, PGS_SQLSTATE_DATETIME_FIELD_OVERFLOW, "pgshard: interval out of range");
    return 0;
}

/* Adds one shard's sum into a SUM or AVG accumulator, in the sum's own type: int8 with
 * overflow checked (AVG's integer sums exactly, as numeric), floats as float4pl/float8pl
 * would, numeric exactly. */
static int mg_add_sum(px_merge *m, int c, mg_acc *a, mg_val v)
{
    const mg_type *t = &m->in[c];
    bool avg = m->cols[c].kind == PRS_SC_AVG;
    mg_key k;
    if (t->cls == MG_INTERVAL)
        return mg_add_interval(m, c, a, v);
    if (mg_decode(m, 0, t, v, &k) < 0)
        return -1;
    bool first = !a->seen;
    a->seen = true;
    if (t->cls == MG_FLOAT) {
        double r = t->oid == MG_OID_FLOAT4 && !avg ? (double)((float)a->f + (float)k.d) : a->f + k.d;
        if (isinf(r) && !isinf(a->f) && !isinf(k.d))
            return mg_fail(m, PGS_SQLSTATE_NUMERIC_VALUE_OUT_OF_RANGE,
                           "pgshard: value out of range: overflow");
        a->f = r;
        return 0;
    }
    if (t->cls == MG_INT && !avg) {
        if (k.i < INT64_MIN || k.i > INT64_MAX)
            return mg_bad_value(m, t);
        return mg_add_int(m, &a->n, (int64_t)k.i);
    }
    mg_dec *x = k.dec;
    if (t->cls == MG_INT) {
        if (k.i < INT64_MIN || k.i > INT64_MAX || dec_set_int(&m->sdec[0], (int64_t)k.i) < 0)
            return k.i < INT64_MIN || k.i > INT64_MAX ? mg_bad_value(m, t) : mg_oom(m);
        x = &m->sdec[0];
    }
    if ((first ? dec_copy(&a->dec, x) : dec_add(&a->dec, x, &m->tmp)) < 0)
        return mg_oom(m);
    return 0;
}

/* avg(float4): the shard's sum as PostgreSQL accumulates it, in float8, is its avg(x) (float8)
 * times its count n; sum(x) itself was added up in float4. */
static int mg_add_avg_f4(px_merge *m, int c, mg_acc *a, mg_val avg, int64_t n)
{
    const mg_type *t = &m->in[m->cols[c].avgf - 1];
    mg_key k;
    if (avg.len < 0)
        return 0;
    if (t->cls != MG_FLOAT)
        return mg_bad_plan(m, "avg()'s own column");
    if (mg_decode(m, 0, t, avg, &k) < 0)
        return -1;
    a->seen = true;
    a->f += k.d * (double)n;
    return 0;
}

static int mg_combine_col(px_merge *m, mg_group *g, int c, const mg_val *vals, bool fresh)
{
    mg_acc *a = &g->acc[c];
    mg_val v = vals[c];
    int64_t x = 0;
    int cmp = 0;
    switch (m->cols[c].kind) {
    case PRS_SC_PLAIN:
    case PRS_SC_GROUP:
        return fresh ? mg_keep(m, a, v) : 0;
    case PRS_SC_COUNT:
        if (v.len < 0)
            return 0;
        return mg_int_of(m, &m->in[c], v, &x) < 0 ? -1 : mg_add_int(m, &a->n, x);
    case PRS_SC_AVG:
        if (vals[m->cols[c].arg].len >= 0) {
            if (mg_int_of(m, &m->in[m->cols[c].arg], vals[m->cols[c].arg], &x) < 0 ||
                mg_add_int(m, &a->cnt, x) < 0)
                return -1;
        }
        if (m->in[c].oid == MG_OID_FLOAT4 && m->cols[c].avgf)
            return v.len < 0 ? 0 : mg_add_avg_f4(m, c, a, vals[m->cols[c].avgf - 1], x);
        /* fall through */
    case PRS_SC_SUM:
        return v.len < 0 ? 0 : mg_add_sum(m, c, a, v);
    case PRS_SC_MIN:
    case PRS_SC_MAX:
        if (v.len < 0)
            return 0;
        if (a->seen) {
            if (mg_cmp2(m, c, &m->in[c], v, &m->in[c], (mg_val){a->val, a->len}, &cmp) < 0)
                return -1;
            if ((m->cols[c].kind == PRS_SC_MIN) ? cmp >= 0 : cmp <= 0)
                return 0;
        }
        a->seen = true;
        return mg_keep(m, a, v);
    case PRS_SC_BOOL_AND:
    case PRS_SC_BOOL_OR:
        if (v.len < 0)
            return 0;
        if (mg_int_of(m, &m->in[c], v, &x) < 0)
            return -1;
        a->flag = m->cols[c].kind == PRS_SC_BOOL_AND ? (a->flag && x) : (a->flag || x);
        a->seen = true;
        return 0;
    default:
        return mg_bad_plan(m, "unknown column kind");
    }
}

static int mg_combine(px_merge *m, const uint8_t *body, size_t len)
{
    mg_val vals[PRS_SC_MAX_COLS] = {{NULL, -1}};
    bool fresh;
    if (mg_parse_row(m, body, len, vals) < 0)
        return -1;
    mg_group *g = mg_group_of(m, vals, &fresh);
    if (!g)
        return -1;
    for (int c = 0; c < m->ncols; c++) {
        if (mg_combine_col(m, g, c, vals, fresh) < 0)
            return -1;
    }
    return 0;
}

/* An interval as interval_out writes it in the 'postgres' IntervalStyle (EncodeInterval):
 * years and months from the months, days, then the time, signed when negative or when a
 * negative field precedes it. */
static void mg_interval_text(pgs_buf *b, int32_t month, int32_t day, int64_t us)
{
    int64_t parts[3] = {month / 12, month % 12, day};
    static const char *const units[3] = {"year", "mon", "day"};
    bool is_zero = true, is_before = false;
    for (int i = 0; i < 3; i++) {
        if (parts[i] == 0)
            continue;
        pgs_buf_appendf(b, "%s%s%" PRId64 " %s%s", is_zero ? "" : " ", is_before && parts[i] > 0 ? "+" : "",
                        parts[i], units[i], parts[i] != 1 ? "s" : "");
        is_before = parts[i] < 0;
        is_zero = false;
    }
    int64_t hour = us / INT64_C(3600000000), rest = us - hour * INT64_C(3600000000);
    int64_t min = rest / 60000000, sec = (rest - min * 60000000) / 1000000, fsec = rest % 1000000;
    if (!is_zero && hour == 0 && min == 0 && sec == 0 && fsec == 0)
        return;
    bool minus = hour < 0 || min < 0 || sec < 0 || fsec < 0;
    pgs_buf_appendf(b, "%s%s%02" PRIu64 ":%02" PRIu64 ":%02" PRIu64, is_zero ? "" : " ",
                    minus       ? "-"
                    : is_before ? "+"
                                : "",
                    hour < 0 ? 0 - (uint64_t)hour : (uint64_t)hour, (uint64_t)llabs(min),
                    (uint64_t)llabs(sec));
    if (fsec == 0)
        return;
    char frac[8];
    snprintf(frac, sizeof frac, "%06" PRIu64, (uint64_t)llabs(fsec));
    int n = 6;
    while (n > 0 && frac[n - 1] == '0')
        n--;
    pgs_buf_appendf(b, ".%.*s", n, frac);
}

/* interval_div(sum, count) as PostgreSQL 15's interval_avg computes it: the count as a
 * float8, the fractions of months cascaded into days and of days into microseconds, each
 * rounded to the microsecond (TSROUND). */
static void mg_interval_div(int32_t *month, int32_t *day, int64_t *us, double factor)
{
    int32_t orig_month = *month, orig_day = *day;
    int32_t rmonth = (int32_t)(orig_month / factor), rday = (int32_t)(orig_day / factor);
    double month_remainder_days = (orig_month / factor - rmonth) * 30;
    month_remainder_days = rint(month_remainder_days * 1000000.0) / 1000000.0;
    double sec_remainder =
        (orig_day / factor - rday + month_remainder_days - (int)month_remainder_days) * 86400;
    sec_remainder = rint(sec_remainder * 1000000.0) / 1000000.0;
    if (fabs(sec_remainder) >= 86400) {
        rday += (int)(sec_remainder / 86400);
        sec_remainder -= (int)(sec_remainder / 86400) * 86400;
    }
    rday += (int32_t)month_remainder_days;
    *month = rmonth;
    *day = rday;
    *us = (int64_t)rint((double)*us / factor + sec_remainder * 1000000);
}

static void mg_put_interval(pgs_buf *b, const mg_type *t, int32_t month, int32_t day, int64_t us)
{
    if (t->fmt == 0) {
        mg_interval_text(b, month, day, us);
        return;
    }
    mg_put_be64(b, (uint64_t)us);
    pgs_buf_append_be32(b, (uint32_t)day);
    pgs_buf_append_be32(b, (uint32_t)month);
}

/* One column of a group's merged row into m->final. */
static int mg_final_col(px_merge *m, mg_group *g, int c)
{
    mg_acc *a = &g->acc[c];
    pgs_buf *b = &m->final;
    const mg_type *t = &m->out[c];
    uint8_t kind = m->cols[c].kind;
    if (kind == PRS_SC_PLAIN || kind == PRS_SC_GROUP || kind == PRS_SC_MIN || kind == PRS_SC_MAX) {
        mg_put_val(b, (mg_val){a->val, a->len});
        return 0;
    }
    /* count is never NULL; the others are when no non-NULL input (or, for avg, no row) */
    if (kind == PRS_SC_AVG ? (!a->seen || a->cnt == 0) : (kind != PRS_SC_COUNT && !a->seen)) {
        pgs_buf_append_be32(b, 0xFFFFFFFFu);
        return 0;
    }
    size_t at = b->len;
    pgs_buf_append_be32(b, 0);
    if (kind == PRS_SC_COUNT || (kind == PRS_SC_SUM && t->cls == MG_INT)) {
        if (mg_put_int(m, b, t, a->n) < 0)
            return -1;
    } else if (kind == PRS_SC_BOOL_AND || kind == PRS_SC_BOOL_OR) {
        pgs_buf_append_u8(b, t->fmt ? a->flag : (a->flag ? 't' : 'f'));
    } else if (t->cls == MG_INTERVAL) {
        int32_t month = a->mon, day = a->day;
        int64_t us = a->n;
        if (kind == PRS_SC_AVG)
            mg_interval_div(&month, &day, &us, (double)a->cnt);
        mg_put_interval(b, t, month, day, us);
    } else if (t->cls == MG_FLOAT) {
        mg_put_float(b, t, kind == PRS_SC_AVG ? a->f / (double)a->cnt : a->f);
    } else if (kind == PRS_SC_SUM) {
        mg_put_dec(b, t, &a->dec);
    } else {
        if (dec_div_count(&m->sdec[2], &a->dec, a->cnt, &m->sdec[1]) < 0)
            return mg_oom(m);
        mg_put_dec(b, t, &m->sdec[2]);
    }
    pgs_buf_put_be32(b, at, (uint32_t)(b->len - at - 4));
    return 0;
}

static int mg_finalize_group(px_merge *m, mg_group *g)
{
    g->foff = m->final.len;
    pgs_buf_append_be16(&m->final, m->ncols);
    for (int c = 0; c < m->ncols; c++) {
        if (mg_final_col(m, g, c) < 0)
            return -1;
    }
    g->flen = m->final.len - g->foff;
    return pgs_buf_failed(&m->final) ? mg_oom(m) : 0;
}

/* ---- HAVING ---- */

enum { MG_FALSE = 0, MG_TRUE = 1, MG_UNKNOWN = 2 };

typedef struct mg_item {
    bool truth; /* a truth value, else a value */
    uint8_t tv; /* MG_FALSE, MG_TRUE, MG_UNKNOWN */
    int col;    /* the value's column, -1 for a constant or NULL */
    mg_val v;
} mg_item;

static uint8_t mg_truth_of(const mg_item *it)
{
    if (it->truth)
        return it->tv;
    if (it->v.len < 0)
        return MG_UNKNOWN;
    /* a boolean column used as a condition */
    return it->v.len >= 1 && (it->v.p[0] == 't' || it->v.p[0] == 1) ? MG_TRUE : MG_FALSE;
}

static int mg_having_cmp(px_merge *m, uint8_t op, const mg_item *a, const mg_item *b, uint8_t *tv)
{
    if (a->truth || b->truth || (a->col < 0 && b->col < 0))
        return mg_bad_plan(m, "a HAVING comparison");
    if (a->v.len < 0 || b->v.len < 0) {
        *tv = MG_UNKNOWN;
        return 0;
    }
    const mg_type *tc = &m->out[a->col >= 0 ? a->col : b->col];
    mg_type text = *tc;
    text.fmt = 0;
    int c = 0;
    if (mg_cmp2(m, a->col >= 0 ? a->col : b->col, a->col >= 0 ? &m->out[a->col] : &text, a->v,
                b->col >= 0 ? &m->out[b->col] : &text, b->v, &c) < 0)
        return -1;
    static const struct {
        uint8_t op;
        int8_t lt, eq, gt;
    } ops[] = {{PRS_SC_OP_EQ, 0, 1, 0}, {PRS_SC_OP_NE, 1, 0, 1}, {PRS_SC_OP_LT, 1, 0, 0},
               {PRS_SC_OP_LE, 1, 1, 0}, {PRS_SC_OP_GT, 0, 0, 1}, {PRS_SC_OP_GE, 0, 1, 1}};
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
        if (ops[i].op == op) {
            *tv = (uint8_t)(c < 0 ? ops[i].lt : c == 0 ? ops[i].eq : ops[i].gt);
            return 0;
        }
    }
    return mg_bad_plan(m, "a HAVING operator");
}

static uint8_t mg_and_or(uint8_t op, uint8_t a, uint8_t b)
{
    uint8_t dominant = op == PRS_SC_OP_AND ? MG_FALSE : MG_TRUE;
    if (a == dominant || b == dominant)
        return dominant;
    if (a == MG_UNKNOWN || b == MG_UNKNOWN)
        return MG_UNKNOWN;
    return (uint8_t)!dominant;
}

/* One HAVING instruction over its popped operands a (and b), into r. */
static int mg_having_op(px_merge *m, const prs_sc_insn *in, const mg_val *vals, const mg_item *a, mg_item *r)
{
    const prs_scatter *pl = m->plan;
    switch (in->op) {
    case PRS_SC_OP_COL:
        *r = (mg_item){false, 0, in->arg, vals[in->arg]};
        return 0;
    case PRS_SC_OP_CONST:
        *r =
            (mg_item){false, 0, -1, {(const uint8_t *)pl->str + in->arg, (int32_t)strlen(pl->str + in->arg)}};
        return 0;
    case PRS_SC_OP_NULL:
        r->truth = false;
        return 0;
    case PRS_SC_OP_AND:
    case PRS_SC_OP_OR:
        r->tv = mg_and_or(in->op, mg_truth_of(&a[0]), mg_truth_of(&a[1]));
        return 0;
    case PRS_SC_OP_NOT:
        r->tv = mg_truth_of(&a[0]) == MG_UNKNOWN ? MG_UNKNOWN : (uint8_t)!mg_truth_of(&a[0]);
        return 0;
    case PRS_SC_OP_IS_NULL:
    case PRS_SC_OP_IS_NOT_NULL: {
        bool isnull = a[0].truth ? a[0].tv == MG_UNKNOWN : a[0].v.len < 0;
        r->tv = (uint8_t)(in->op == PRS_SC_OP_IS_NULL ? isnull : !isnull);
        return 0;
    }
    default:
        return mg_having_cmp(m, in->op, &a[0], &a[1], &r->tv);
    }
}

/* Runs the HAVING program over a merged row: *pass only when it is true. */
static int mg_having(px_merge *m, const mg_val *vals, bool *pass)
{
    const prs_scatter *pl = m->plan;
    mg_item st[PRS_SC_MAX_INSNS] = {{false, 0, -1, {NULL, -1}}};
    int sp = 0;
    for (int i = 0; i < pl->ninsns; i++) {
        const prs_sc_insn *in = &pl->having[i];
        uint8_t op = in->op;
        mg_item r = {true, MG_UNKNOWN, -1, {NULL, -1}};
        int pops = op <= PRS_SC_OP_NULL ? 0 : (op == PRS_SC_OP_NOT || op >= PRS_SC_OP_IS_NULL) ? 1 : 2;
        if (sp < pops || op < PRS_SC_OP_COL || op > PRS_SC_OP_IS_NOT_NULL)
            return mg_bad_plan(m, "the HAVING program");
        sp -= pops;
        if (mg_having_op(m, in, vals, &st[sp], &r) < 0)
            return -1;
        st[sp++] = r;
    }
    if (sp != 1)
        return mg_bad_plan(m, "the HAVING program");
    *pass = mg_truth_of(&st[0]) == MG_TRUE;
    return 0;
}

/* ---- DISTINCT over groups ---- */

/* SELECT DISTINCT with GROUP BY or aggregates: of the groups that passed HAVING, those whose
 * visible columns equal an earlier one's (as GROUP BY compares them) are dropped. */
static int mg_distinct(px_merge *m)
{
    size_t cap = 64, kept = 0;
    while (cap < m->norder * 2)
        cap *= 2;
    uint64_t *hash = calloc(cap, sizeof *hash);
    size_t *slot = calloc(cap, sizeof *slot); /* index into order + 1, 0 empty */
    size_t *koff = malloc((m->norder + 1) * sizeof *koff);
    pgs_buf keys = PGS_BUF_INIT;
    int rc = !hash || !slot || !koff ? mg_oom(m) : 0;
    for (size_t i = 0; rc == 0 && i < m->norder; i++) {
        const mg_group *g = m->groups[m->order[i]];
        mg_val vals[PRS_SC_MAX_COLS] = {{NULL, -1}};
        rc = mg_parse_row(m, m->final.data + g->foff, g->flen, vals);
        pgs_buf_clear(&m->key);
        for (int c = 0; rc == 0 && c < m->nvisible; c++)
            rc = mg_key_val(m, &m->out[c], vals[c]) < 0 ? (m->failed ? -1 : mg_oom(m)) : 0;
        if (rc == 0 && pgs_buf_failed(&m->key))
            rc = mg_oom(m);
        if (rc)
            break;
        uint64_t h = mg_hash(m->key.data, m->key.len);
        size_t at = h & (cap - 1);
        bool dup = false;
        for (; slot[at] && !dup; at = (at + 1) & (cap - 1)) {
            size_t k = slot[at] - 1, len = koff[k + 1] - koff[k];
            dup = hash[at] == h && len == m->key.len &&
                  (len == 0 || (keys.data && memcmp(keys.data + koff[k], m->key.data, len) == 0));
        }
        if (dup)
            continue;
        koff[kept] = keys.len;
        pgs_buf_append(&keys, m->key.data, m->key.len);
        koff[kept + 1] = keys.len;
        if (pgs_buf_failed(&keys)) {
            rc = mg_oom(m);
            break;
        }
        hash[at] = h;
        slot[at] = kept + 1;
        m->order[kept++] = m->order[i];
    }
    if (rc == 0)
        m->norder = kept;
    free(hash);
    free(slot);
    free(koff);
    pgs_buf_free(&keys);
    return rc;
}

/* ---- sorting groups ---- */

typedef struct mg_sort_ctx {
    px_merge *m;
} mg_sort_ctx;

static int mg_group_cmp(const void *x, const void *y, void *arg)
{
    px_merge *m = ((mg_sort_ctx *)arg)->m;
    const mg_group *a = m->groups[*(const size_t *)x], *b = m->groups[*(const size_t *)y];
    mg_val va[PRS_SC_MAX_COLS] = {{NULL, -1}}, vb[PRS_SC_MAX_COLS] = {{NULL, -1}};
    int c = 0;
    /* a failure is remembered in m and reported after the sort */
    if (!m->failed && mg_parse_row(m, m->final.data + a->foff, a->flen, va) == 0 &&
        mg_parse_row(m, m->final.data + b->foff, b->flen, vb) == 0)
        mg_cmp_rows(m, m->out, va, vb, &c);
    if (c == 0)
        c = (a->seq > b->seq) - (a->seq < b->seq);
    return c;
}

/* Once every shard is done: aggregates without GROUP BY get their one row even when no
 * shard sent one, each group's row is made, HAVING filters, ORDER BY sorts. */
static int mg_finalize(px_merge *m)
{
    bool keyed = false;
    for (int c = 0; c < m->ncols; c++)
        keyed |= m->cols[c].kind == PRS_SC_GROUP;
    if (!keyed && m->ngroups == 0 && m->have_desc) {
        mg_val none[PRS_SC_MAX_COLS] = {{NULL, -1}};
        bool fresh;
        if (!mg_group_of(m, none, &fresh))
            return -1;
    }
    m->order = calloc(m->ngroups ? m->ngroups : 1, sizeof *m->order);
    if (!m->order)
        return mg_oom(m);
    for (size_t g = 0; g < m->ngroups; g++) {
        mg_val vals[PRS_SC_MAX_COLS] = {{NULL, -1}};
        bool pass = true;
        if (mg_finalize_group(m, m->groups[g]) < 0 ||
            mg_parse_row(m, m->final.data + m->groups[g]->foff, m->groups[g]->flen, vals) < 0 ||
            (m->plan->ninsns && mg_having(m, vals, &pass) < 0))
            return -1;
        if (pass)
            m->order[m->norder++] = g;
    }
    if (m->plan->distinct && mg_distinct(m) < 0)
        return -1;
    if (m->plan->nsort) {
        mg_sort_ctx ctx = {m};
        qsort_r(m->order, m->norder, sizeof *m->order, mg_group_cmp, &ctx);
    }
    m->finalized = true;
    return m->failed ? -1 : 0;
}

/* ---- feeding ---- */

/* How text under the collation the shards named (quoted as pg_collation_for quotes) compares
 * here. */
static int mg_coll_learn(px_merge *m, mg_coll *k)
{
    static const char *const bytes[] = {"\"C\"", "\"POSIX\"", "ucs_basic"};
    char locale[128];
    k->how = MG_COLL_NONE;
    if (strcmp(k->name, "\"default\"") == 0) {
        k->how = m->default_unordered ? MG_COLL_EQUAL : m->coll ? MG_COLL_LOCALE : MG_COLL_BYTES;
        k->loc = m->coll;
        return 0;
    }
    for (size_t i = 0; i < sizeof bytes / sizeof bytes[0]; i++)
        if (strcmp(k->name, bytes[i]) == 0)
            k->how = MG_COLL_BYTES;
    if (k->how != MG_COLL_NONE || !m->resolve ||
        m->resolve(m->resolve_arg, k->name, locale, sizeof locale) != 1)
        return 0;
    if (strcmp(locale, "C") == 0 || strcmp(locale, "POSIX") == 0) {
        k->how = MG_COLL_BYTES;
        return 0;
    }
    k->loc = newlocale(LC_COLLATE_MASK, locale, (locale_t)0);
    if (k->loc == (locale_t)0)
        return 0; /* this machine lacks the locale */
    k->owned = true;
    k->how = MG_COLL_LOCALE;
    return 0;
}

/* Column c's collation as one shard's first row names it (v): the first fixes it, the
 * others must agree; a collation the merge cannot use the way the plan needs is refused
 * before any row is sent. */
static int mg_coll_check(px_merge *m, int c, mg_val v)
{
    mg_coll *k = &m->colls[c];
    const char *col = (const char *)m->desc.data + m->fields[c].name_off;
    if (v.len < 0)
        return mg_fail(m, PGS_SQLSTATE_FEATURE_NOT_SUPPORTED,
                       "pgshard: the collation of column \"%s\" is indeterminate (conflicting collations): "
                       "add COLLATE",
                       col);
    if (k->how == MG_COLL_UNSET) {
        if ((size_t)v.len >= sizeof k->name) {
            k->how = MG_COLL_NONE;
            snprintf(k->name, sizeof k->name, "%.*s...", 64, (const char *)v.p);
        } else {
            memcpy(k->name, v.p, (size_t)v.len);
            k->name[v.len] = '\0';
            mg_coll_learn(m, k);
        }
    } else if (strlen(k->name) != (size_t)v.len || memcmp(k->name, v.p, (size_t)v.len) != 0) {
        return mg_fail(m, PGS_SQLSTATE_FEATURE_NOT_SUPPORTED,
                       "pgshard: the shards name different collations for column \"%s\" (%s and %.*s)", col,
                       k->name, (int)v.len, (const char *)v.p);
    }
    bool order = m->need[c] == MG_NEED_ORDER;
    if (k->how == MG_COLL_BYTES || k->how == MG_COLL_LOCALE || (!order && k->how == MG_COLL_EQUAL))
        return 0;
    return mg_fail(m, PGS_SQLSTATE_FEATURE_NOT_SUPPORTED,
                   "pgshard: a query across shards cannot %s column \"%s\" under collation %s, which "
                   "pgshard does not reproduce (ICU, nondeterministic, or a locale this machine lacks): "
                   "add the tenant key",
                   order ? "order text by" : "group text by", col, k->name);
}

/* Shard s's first row: the collations of its compared text columns. */
static int mg_colls_seen(px_merge *m, int s, const uint8_t *body, size_t len)
{
    mg_val vals[PRS_SC_MAX_COLS] = {{NULL, -1}};
    m->shards[s].coll_seen = true;
    if (mg_parse_row(m, body, len, vals) < 0)
        return -1;
    for (int c = 0; c < m->ncols; c++)
        if (m->need[c] != MG_NEED_NONE && m->cols[c].coll &&
            mg_coll_check(m, c, vals[m->cols[c].coll - 1]) < 0)
            return -1;
    return 0;
}

int px_merge_data_row(px_merge *m, int s, const uint8_t *body, size_t len)
{
    if (m->failed)
        return -1;
    if (s < 0 || s >= m->nshards)
        return mg_fail(m, PGS_SQLSTATE_INTERNAL_ERROR, "pgshard: no shard %d in this merge", s);
    mg_shard *sh = &m->shards[s];
    if (!sh->has_desc || sh->completed)
        return mg_malformed(m, "DataRow (outside a result)");
    if (!sh->coll_seen && mg_colls_seen(m, s, body, len) < 0)
        return -1;
    if (m->plan->grouped)
        return mg_combine(m, body, len);
    if (m->satisfied)
        return 0; /* LIMIT reached: the rest are dropped */
    /* checked now so a bad row fails where it came in, not when it reaches the head */
    mg_val vals[PRS_SC_MAX_COLS] = {{NULL, -1}};
    if (mg_parse_row(m, body, len, vals) < 0)
        return -1;
    return mg_queue_push(sh, body, len) < 0 ? mg_oom(m) : 0;
}

int px_merge_complete(px_merge *m, int s)
{
    if (m->failed)
        return -1;
    if (s < 0 || s >= m->nshards)
        return mg_fail(m, PGS_SQLSTATE_INTERNAL_ERROR, "pgshard: no shard %d in this merge", s);
    if (!m->shards[s].completed) {
        m->shards[s].completed = true;
        m->ncompleted++;
    }
    return 0;
}

/* ---- output ---- */

/* Whether a row about to be sent is sent: OFFSET first, then LIMIT. */
static bool mg_take(px_merge *m)
{
    if (m->plan->limit >= 0 && m->emitted >= m->plan->limit)
        m->satisfied = true;
    if (m->satisfied)
        return false;
    if (m->skipped < m->plan->offset) {
        m->skipped++;
        return false;
    }
    m->emitted++;
    if (m->plan->limit >= 0 && m->emitted >= m->plan->limit)
        m->satisfied = true;
    return true;
}

/* Sends a shard's row without its hidden columns. */
static int mg_emit(px_merge *m, pgs_buf *out, const uint8_t *body, size_t len)
{
    if (!mg_take(m))
        return 0;
    if (m->nvisible == m->ncols) {
        size_t st = pgs_msg_begin(out, PGS_BE_DATA_ROW);
        pgs_buf_append(out, body, len);
        pgs_msg_end(out, st);
        return 0;
    }
    mg_val vals[PRS_SC_MAX_COLS] = {{NULL, -1}};
    if (mg_parse_row(m, body, len, vals) < 0)
        return -1;
    mg_put_row(out, vals, m->nvisible);
    return 0;
}

static void mg_drop_queues(px_merge *m)
{
    for (int s = 0; s < m->nshards; s++) {
        mg_shard *sh = &m->shards[s];
        sh->head = sh->tail = 0;
        sh->head_parsed = false;
        pgs_buf_clear(&sh->arena);
    }
}

static int mg_out_concat(px_merge *m, pgs_buf *out, size_t room)
{
    for (int i = 0; i < m->nshards && !m->satisfied; i++) {
        mg_shard *sh = &m->shards[(m->rr + (size_t)i) % (size_t)m->nshards];
        while (mg_queued(sh) && !m->satisfied) {
            if (out->len >= room) {
                m->rr = (m->rr + (size_t)i) % (size_t)m->nshards;
                return 0;
            }
            if (mg_emit(m, out, sh->arena.data + sh->ent[sh->head].off, sh->ent[sh->head].len) < 0)
                return -1;
            mg_queue_pop(sh);
        }
    }
    return 0;
}

/* The shard whose head row comes next, -1 when some unfinished shard has nothing queued
 * (its next row might come first) or every queue is empty. Ties go to the lower shard. */
static int mg_kway_pick(px_merge *m, int *best)
{
    mg_val vb[PRS_SC_MAX_COLS] = {{NULL, -1}}, vs[PRS_SC_MAX_COLS] = {{NULL, -1}};
    *best = -1;
    for (int s = 0; s < m->nshards; s++) {
        mg_shard *sh = &m->shards[s];
        if (!mg_queued(sh)) {
            if (!sh->completed) {
                *best = -1;
                return 0;
            }
            continue;
        }
        if (mg_head_vals(m, s, vs) < 0)
            return -1;
        int c = -1;
        if (*best >= 0 && mg_cmp_rows(m, m->in, vs, vb, &c) < 0)
            return -1;
        if (c < 0) {
            *best = s;
            memcpy(vb, vs, (size_t)m->ncols * sizeof *vb);
        }
    }
    return 0;
}

static int mg_out_kway(px_merge *m, pgs_buf *out, size_t room)
{
    while (!m->satisfied && out->len < room) {
        int s;
        if (mg_kway_pick(m, &s) < 0)
            return -1;
        if (s < 0)
            return 0;
        mg_shard *sh = &m->shards[s];
        if (mg_emit(m, out, sh->arena.data + sh->ent[sh->head].off, sh->ent[sh->head].len) < 0)
            return -1;
        mg_queue_pop(sh);
    }
    return 0;
}

static int mg_out_groups(px_merge *m, pgs_buf *out, size_t room)
{
    if (m->ncompleted < m->nshards)
        return 0;
    if (!m->finalized && mg_finalize(m) < 0)
        return -1;
    while (m->opos < m->norder && !m->satisfied && out->len < room) {
        const mg_group *g = m->groups[m->order[m->opos++]];
        mg_val vals[PRS_SC_MAX_COLS] = {{NULL, -1}};
        if (!mg_take(m))
            continue;
        if (mg_parse_row(m, m->final.data + g->foff, g->flen, vals) < 0)
            return -1;
        mg_put_row(out, vals, m->nvisible);
    }
    if (m->satisfied)
        m->opos = m->norder;
    return 0;
}

static bool mg_all_out(const px_merge *m)
{
    if (m->ncompleted < m->nshards)
        return false;
    if (m->plan->grouped)
        return !m->have_desc || (m->finalized && m->opos == m->norder);
    for (int s = 0; s < m->nshards; s++) {
        if (mg_queued(&m->shards[s]))
            return false;
    }
    return true;
}

int px_merge_output(px_merge *m, pgs_buf *out, size_t room)
{
    if (m->failed)
        return -1;
    if (m->have_desc && !m->desc_sent) {
        mg_put_desc(m, out);
        m->desc_sent = true;
    }
    int rc = 0;
    if (m->have_desc && m->plan->grouped)
        rc = mg_out_groups(m, out, room);
    else if (m->have_desc && m->plan->shards_sorted)
        rc = mg_out_kway(m, out, room);
    else if (m->have_desc)
        rc = mg_out_concat(m, out, room);
    if (rc < 0)
        return -1;
    if (m->satisfied)
        mg_drop_queues(m);
    if (!m->cc_sent && mg_all_out(m)) {
        char tag[32];
        snprintf(tag, sizeof tag, "SELECT %" PRId64, m->emitted);
        pgs_msg_complete(out, tag);
        m->cc_sent = true;
    }
    return pgs_buf_failed(out) ? mg_oom(m) : 0;
}

bool px_merge_wants(const px_merge *m, int s)
{
    if (m->failed || s < 0 || s >= m->nshards)
        return false;
    if (m->plan->grouped || m->satisfied)
        return true;
    return mg_queued(&m->shards[s]) < PX_MERGE_QUEUE_MAX;
}

bool px_merge_done(const px_merge *m)
{
    return m->cc_sent;
}

bool px_merge_satisfied(const px_merge *m)
{
    return m->satisfied;
}

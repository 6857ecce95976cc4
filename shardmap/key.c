/* Reading shard-key values from a client's text or binary parameters the way PostgreSQL
 * 15's int2in/int4in/int8in, uuid_in, textin and their receive functions do, writing their
 * canonical text, and the shardmap library's error table. Hashing is in hash.c. */
#include "shardmap/key.h"

#include "common/buf.h"
#include "shardmap/hash.h"

typedef struct sm_error_info {
    int code;
    const char *sqlstate;
    const char *message;
} sm_error_info;

static const sm_error_info sm_errors[] = {
    {SM_EINVAL, "XX000", "invalid argument"},
    {SM_ETYPE, "0A000", "type cannot be a shard key"},
    {SM_ESYNTAX, "22P02", "invalid input syntax for the shard key's type"},
    {SM_ERANGE, "22003", "value out of range for the shard key's type"},
    {SM_EBINARY, "22P03", "incorrect binary data format for the shard key's type"},
    {SM_ENUL, "22021", "NUL byte in a text shard key"},
    {SM_ENOMEM, "53200", "out of memory"},
    {SM_EBUCKETS, "XX000", "bucket count is not a power of two from 1 to 65536"},
    {SM_EBUCKET, "XX000", "bucket number out of range"},
    {SM_ESHARD, "XX000", "shard number out of range"},
    {SM_EEXIST, "XX000", "duplicate tenant override"},
    {SM_ECATALOG, "XX000", "shard map catalog unavailable or invalid"},
};

static const sm_error_info *error_info(int err)
{
    for (size_t i = 0; i < sizeof(sm_errors) / sizeof(sm_errors[0]); i++)
        if (sm_errors[i].code == err)
            return &sm_errors[i];
    return NULL;
}

const char *sm_strerror(int err)
{
    const sm_error_info *e = error_info(err);
    return err == 0 ? "no error" : e ? e->message : "unknown shardmap error";
}

const char *sm_sqlstate(int err)
{
    const sm_error_info *e = error_info(err);
    return e ? e->sqlstate : "XX000";
}

int sm_key_type_of(uint32_t type_oid)
{
    switch (type_oid) {
    case SM_OID_INT2:
    case SM_OID_INT4:
    case SM_OID_INT8:
        return SM_KEY_INT;
    case SM_OID_TEXT:
    case SM_OID_VARCHAR:
        return SM_KEY_TEXT;
    case SM_OID_UUID:
        return SM_KEY_UUID;
    default:
        return SM_ETYPE;
    }
}

/* The smallest value of an integer column type; the largest is its negation minus one. */
static int64_t int_type_min(uint32_t type_oid)
{
    return type_oid == SM_OID_INT2 ? INT16_MIN : type_oid == SM_OID_INT4 ? INT32_MIN : INT64_MIN;
}

/* The server's isspace() on a byte: its C-locale set, which glibc keeps in UTF-8 locales. */
static bool is_blank(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static size_t skip_blanks(const char *s, size_t len, size_t i)
{
    while (i < len && is_blank(s[i]))
        i++;
    return i;
}

/* PostgreSQL 15's pg_strtoint16/32/64: the value is accumulated as a negative number, so
 * the most negative one needs no special case, and an overflow is reported as soon as it
 * happens, before any trailing garbage is seen (the server does the same, so "99999x" is
 * out of range for int2, not a syntax error). */
static int parse_int(const char *s, size_t len, int64_t min, int64_t *out)
{
    size_t i = skip_blanks(s, len, 0);
    bool neg = false;
    int64_t v = 0;

    if (i < len && (s[i] == '-' || s[i] == '+'))
        neg = s[i++] == '-';
    if (i >= len || !is_digit(s[i]))
        return SM_ESYNTAX;
    for (; i < len && is_digit(s[i]); i++) {
        if (__builtin_mul_overflow(v, 10, &v) || __builtin_sub_overflow(v, s[i] - '0', &v) || v < min)
            return SM_ERANGE;
    }
    if (skip_blanks(s, len, i) != len)
        return SM_ESYNTAX;
    if (!neg) {
        if (v == min)
            return SM_ERANGE;
        v = -v;
    }
    *out = v;
    return 0;
}

/* uuid_in's string_to_uuid: 16 pairs of hex digits; after every second pair but the last
 * one hyphen may follow; a leading brace needs a closing one; no blanks anywhere. */
static int parse_uuid(const char *s, size_t len, uint8_t out[16])
{
    bool braces = len > 0 && s[0] == '{';
    size_t i = braces ? 1 : 0;

    for (int n = 0; n < 16; n++) {
        int hi = len - i >= 2 ? pgs_hex_value(s[i]) : -1;
        int lo = hi >= 0 ? pgs_hex_value(s[i + 1]) : -1;

        if (lo < 0)
            return SM_ESYNTAX;
        out[n] = (uint8_t)(hi << 4 | lo);
        i += 2;
        if (i < len && s[i] == '-' && n % 2 == 1 && n < 15)
            i++;
    }
    if (braces) {
        if (i >= len || s[i] != '}')
            return SM_ESYNTAX;
        i++;
    }
    return i == len ? 0 : SM_ESYNTAX;
}

/* textin takes any bytes the client encoding allows, and none allows a NUL. */
static int take_text(sm_key *key, const char *p, size_t len)
{
    if (len > 0 && memchr(p, '\0', len) != NULL)
        return SM_ENUL;
    *key = sm_key_text(len > 0 ? p : "", len);
    return 0;
}

int sm_key_from_text(sm_key *key, uint32_t type_oid, const char *s, size_t len)
{
    int type = sm_key_type_of(type_oid);
    int rc;

    if (key == NULL || (s == NULL && len > 0))
        return SM_EINVAL;
    if (s == NULL)
        s = "";
    switch (type) {
    case SM_KEY_INT: {
        int64_t v;
        if ((rc = parse_int(s, len, int_type_min(type_oid), &v)) < 0)
            return rc;
        *key = sm_key_int(v);
        return 0;
    }
    case SM_KEY_UUID: {
        uint8_t u[16];
        if ((rc = parse_uuid(s, len, u)) < 0)
            return rc;
        *key = sm_key_uuid(u);
        return 0;
    }
    case SM_KEY_TEXT:
        return take_text(key, s, len);
    default:
        return type;
    }
}

static uint64_t read_be(const uint8_t *p, size_t n)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

/* int2recv, int4recv and int8recv read exactly the type's width; the server refuses a
 * parameter with bytes missing or left over. */
static int binary_int(sm_key *key, uint32_t type_oid, const uint8_t *p, size_t len)
{
    size_t width = type_oid == SM_OID_INT2 ? 2 : type_oid == SM_OID_INT4 ? 4 : 8;
    uint64_t raw;

    if (len != width)
        return SM_EBINARY;
    raw = read_be(p, width);
    if (width == 2)
        *key = sm_key_int((int16_t)raw);
    else if (width == 4)
        *key = sm_key_int((int32_t)raw);
    else
        *key = sm_key_int((int64_t)raw);
    return 0;
}

int sm_key_from_binary(sm_key *key, uint32_t type_oid, const uint8_t *p, size_t len)
{
    int type = sm_key_type_of(type_oid);

    if (key == NULL || (p == NULL && len > 0))
        return SM_EINVAL;
    switch (type) {
    case SM_KEY_INT:
        return binary_int(key, type_oid, p, len);
    case SM_KEY_UUID:
        if (len != 16)
            return SM_EBINARY;
        *key = sm_key_uuid(p);
        return 0;
    case SM_KEY_TEXT:
        return take_text(key, (const char *)p, len);
    default:
        return type;
    }
}

/* Decimal digits of v into buf (at least 21 bytes), NUL-terminated; returns the length.
 * The magnitude is taken as unsigned so INT64_MIN needs no special case. */
static size_t format_int(int64_t v, char *buf)
{
    char rev[20];
    uint64_t m = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;
    size_t n = 0, len = 0;

    do {
        rev[n++] = (char)('0' + m % 10);
        m /= 10;
    } while (m > 0);
    if (v < 0)
        buf[len++] = '-';
    while (n > 0)
        buf[len++] = rev[--n];
    buf[len] = '\0';
    return len;
}

/* uuid_out's form: 8-4-4-4-12 lowercase hex digits. */
static size_t format_uuid(const uint8_t u[16], char *buf)
{
    static const char digits[] = "0123456789abcdef";
    size_t len = 0;

    for (int n = 0; n < 16; n++) {
        if (n == 4 || n == 6 || n == 8 || n == 10)
            buf[len++] = '-';
        buf[len++] = digits[u[n] >> 4];
        buf[len++] = digits[u[n] & 15];
    }
    buf[len] = '\0';
    return len;
}

const char *sm_key_canonical(const sm_key *key, sm_key_buf *buf, size_t *len)
{
    switch (key->type) {
    case SM_KEY_INT:
        *len = format_int(key->v.i, buf->s);
        return buf->s;
    case SM_KEY_UUID:
        *len = format_uuid(key->v.uuid, buf->s);
        return buf->s;
    case SM_KEY_TEXT:
    default:
        *len = key->v.text.len;
        return key->v.text.p;
    }
}

uint64_t sm_key_hash(const sm_key *key)
{
    switch (key->type) {
    case SM_KEY_INT:
        return sm_hash_int8(key->v.i);
    case SM_KEY_UUID:
        return sm_hash_uuid(key->v.uuid);
    case SM_KEY_TEXT:
    default:
        return sm_hash_text(key->v.text.p, key->v.text.len);
    }
}

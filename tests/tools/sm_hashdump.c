/* sm_hashdump: the shardmap library's hash and bucket of each input line, so that a test can
 * compare them with what PostgreSQL computes (tests/integration/t_hash.sh). A test tool, not
 * part of pgshard; it reads stdin and writes stdout, nothing else.
 *
 *   sm_hashdump [BUCKETS] < lines
 *
 * Each line is TYPE<TAB>VALUE. TYPE is int2, int4, int8 (or int) with VALUE as int2in ...
 * int8in read it; uuid with VALUE in any form uuid_in takes; text with VALUE the hex digits
 * of the text's bytes (empty for ''), so any byte survives the line format. Each line
 * gives one output line: "HASH BUCKET", HASH as the server prints the bigint (signed) and
 * BUCKET its low bits for BUCKETS buckets (default 1024), or "error MESSAGE"; the exit
 * status is 1 if any line was an error. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "shardmap/hash.h"
#include "shardmap/key.h"

typedef struct dump_type {
    const char *name;
    uint32_t oid;
} dump_type;

static const dump_type dump_types[] = {
    {"int", SM_OID_INT8},  {"int8", SM_OID_INT8}, {"int4", SM_OID_INT4},
    {"int2", SM_OID_INT2}, {"uuid", SM_OID_UUID}, {"text", SM_OID_TEXT},
};

static int type_oid(const char *name, size_t len, uint32_t *oid)
{
    for (size_t i = 0; i < sizeof(dump_types) / sizeof(dump_types[0]); i++) {
        if (strlen(dump_types[i].name) == len && memcmp(dump_types[i].name, name, len) == 0) {
            *oid = dump_types[i].oid;
            return 0;
        }
    }
    return -1;
}

/* Decodes hex[0..len) in place (the bytes are never longer than their digits); returns
 * the byte count or -1. */
static long unhex(char *hex, size_t len)
{
    if (len % 2 != 0)
        return -1;
    for (size_t i = 0; i < len; i += 2) {
        int hi = pgs_hex_value(hex[i]), lo = pgs_hex_value(hex[i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        hex[i / 2] = (char)(hi << 4 | lo);
    }
    return (long)(len / 2);
}

/* One input line (without its newline) to one output line. Returns 0 or -1. */
static int dump_line(char *line, size_t len, uint32_t buckets)
{
    char *tab = memchr(line, '\t', len);
    char *value;
    size_t vlen;
    uint32_t oid;
    sm_key key;
    uint64_t h;
    int rc;

    if (tab == NULL || type_oid(line, (size_t)(tab - line), &oid) < 0) {
        printf("error expected TYPE<TAB>VALUE with TYPE int, int2, int4, int8, uuid or text\n");
        return -1;
    }
    value = tab + 1;
    vlen = len - (size_t)(value - line);
    if (oid == SM_OID_TEXT) {
        long n = unhex(value, vlen);
        if (n < 0) {
            printf("error text values are given as hex digits\n");
            return -1;
        }
        vlen = (size_t)n;
    }
    if ((rc = sm_key_from_text(&key, oid, value, vlen)) < 0) {
        printf("error %s\n", sm_strerror(rc));
        return -1;
    }
    h = sm_key_hash(&key);
    printf("%lld %u\n", (long long)(int64_t)h, sm_bucket_of(h, buckets));
    return 0;
}

int main(int argc, char **argv)
{
    unsigned long buckets = argc > 1 ? strtoul(argv[1], NULL, 10) : 1024;
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    int failed = 0;

    if (argc > 2 || buckets == 0 || buckets > 65536 || (buckets & (buckets - 1)) != 0) {
        fprintf(stderr, "usage: sm_hashdump [BUCKETS] < TYPE<TAB>VALUE lines (BUCKETS a power of two)\n");
        return 2;
    }
    while ((n = getline(&line, &cap, stdin)) >= 0) {
        size_t len = (size_t)n;
        if (len > 0 && line[len - 1] == '\n')
            len--;
        if (dump_line(line, len, (uint32_t)buckets) < 0)
            failed = 1;
    }
    free(line);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        perror("sm_hashdump: stdout");
        return 2;
    }
    return failed;
}

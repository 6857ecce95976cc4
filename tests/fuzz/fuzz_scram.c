/* libFuzzer target for the SCRAM-SHA-256 exchanges of proxy/scram.c. An input is two
 * messages separated by a NUL byte (SCRAM messages never hold one). The server side reads them
 * as client-first and client-final, the client side as server-first and server-final, each
 * with the parameters of the RFC 7677 example (user "user", password "pencil", its salt,
 * 4096 iterations and nonces), so that the RFC's exchange, and seeds computed the same way,
 * reach the end of both. The first message is also read as a stored secret. Not a unit
 * test. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/scram.h"

#define CHECK(cond)                                                                                          \
    do {                                                                                                     \
        if (!(cond))                                                                                         \
            __builtin_trap();                                                                                \
    } while (0)

#define RFC_PASSWORD "pencil"
#define RFC_USER "user"
#define RFC_CLIENT_NONCE "rOprNGfwEbeRWgbNEkqO"
#define RFC_SERVER_NONCE "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
#define RFC_ITERATIONS 4096

/* The client side derives keys with the server's iteration count, up to 10^7: seconds per
 * input, which libFuzzer would report as a timeout that says nothing about the parser. */
#define FUZZ_MAX_ITERATIONS 4096

/* Derived once: PBKDF2 with 4096 iterations per input would halve the rate. */
static px_scram_secret rfc_secret;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    static const uint8_t salt[] = {0x5b, 0x6d, 0x99, 0x68, 0x9d, 0x12, 0x35, 0x8e,
                                   0xec, 0xa0, 0x4b, 0x14, 0x12, 0x36, 0xfa, 0x81};
    CHECK(px_scram_secret_from_password_salt(RFC_PASSWORD, RFC_ITERATIONS, salt, sizeof salt, &rfc_secret) ==
          0);
    return 0;
}

static bool all_zero(const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++)
        if (b[i])
            return false;
    return true;
}

static bool starts_with(const pgs_buf *b, const char *s)
{
    size_t n = strlen(s);
    return b->len >= n && memcmp(b->data, s, n) == 0;
}

static void fuzz_server(const uint8_t *first, size_t first_n, const uint8_t *final, size_t final_n)
{
    px_scram_server st;
    pgs_buf out = PGS_BUF_INIT;
    px_scram_server_init(&st, &rfc_secret);
    int rc = px_scram_server_first(&st, first, first_n, RFC_SERVER_NONCE, &out);
    if (rc < 0) {
        /* A refused exchange keeps no key material and answers nothing. */
        CHECK(rc == -1 && st.step == PX_SCRAM_STEP_FAILED && out.len == 0);
        CHECK(all_zero(&st.secret, sizeof st.secret));
        pgs_buf_free(&out);
        return;
    }
    CHECK(st.step == PX_SCRAM_STEP_FINAL && starts_with(&out, "r=") && out.len == st.server_first_len);
    CHECK(st.nonce_len > strlen(RFC_SERVER_NONCE) && st.client_first_bare_len < first_n);
    pgs_buf_clear(&out);
    rc = px_scram_server_final(&st, final, final_n, &out);
    CHECK(rc == 0 || rc == -1 || rc == -2 || rc == -3);
    if (rc == 0)
        CHECK(st.step == PX_SCRAM_STEP_DONE && out.len == 46 && starts_with(&out, "v="));
    else
        CHECK(st.step == PX_SCRAM_STEP_FAILED && out.len == 0);
    CHECK(all_zero(&st.secret, sizeof st.secret));
    /* Out of turn, whatever happened. */
    CHECK(px_scram_server_final(&st, final, final_n, &out) == -1);
    pgs_buf_free(&out);
}

/* The i= attribute of a server-first message, or 0 when there is none. */
static long iterations_of(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i + 2 < n; i++) {
        if (p[i] != ',' || p[i + 1] != 'i' || p[i + 2] != '=')
            continue;
        long v = 0;
        for (size_t k = i + 3; k < n && p[k] >= '0' && p[k] <= '9' && v <= FUZZ_MAX_ITERATIONS; k++)
            v = v * 10 + (p[k] - '0');
        return v;
    }
    return 0;
}

static void fuzz_client(const uint8_t *first, size_t first_n, const uint8_t *final, size_t final_n)
{
    px_scram_client st;
    pgs_buf out = PGS_BUF_INIT;
    if (iterations_of(first, first_n) > FUZZ_MAX_ITERATIONS)
        return;
    CHECK(px_scram_client_first_user(&st, RFC_PASSWORD, RFC_USER, RFC_CLIENT_NONCE, &out) == 0);
    CHECK(out.len == 3 + st.client_first_bare_len);
    pgs_buf_clear(&out);
    int rc = px_scram_client_final(&st, first, first_n, &out);
    /* The password is wiped once the proof is made, or when the exchange fails. */
    CHECK(st.password_len == 0 && all_zero(st.password, sizeof st.password));
    if (rc < 0) {
        CHECK(rc == -1 && st.step == PX_SCRAM_STEP_FAILED && out.len == 0);
        pgs_buf_free(&out);
        return;
    }
    CHECK(st.step == PX_SCRAM_STEP_VERIFY && starts_with(&out, "c=biws,r=" RFC_CLIENT_NONCE));
    rc = px_scram_client_verify(&st, final, final_n);
    CHECK(rc == 0 || rc == -1);
    CHECK(st.step == (rc == 0 ? PX_SCRAM_STEP_DONE : PX_SCRAM_STEP_FAILED));
    CHECK(all_zero(st.server_signature, sizeof st.server_signature));
    CHECK(px_scram_client_verify(&st, final, final_n) == -1);
    pgs_buf_free(&out);
}

static void fuzz_secret(const uint8_t *p, size_t n)
{
    char *s = malloc(n + 1);
    CHECK(s != NULL);
    memcpy(s, p, n);
    s[n] = '\0';
    px_scram_secret sec;
    if (px_scram_secret_parse(s, &sec) == 0)
        CHECK(sec.iterations >= 1 && sec.salt_len >= 1 && sec.salt_len <= PX_SCRAM_SALT_MAX);
    free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *sep = size ? memchr(data, 0, size) : NULL;
    size_t first_n = sep ? (size_t)(sep - data) : size;
    const uint8_t *final = sep ? sep + 1 : data + size;
    size_t final_n = size - first_n - (sep != NULL);
    fuzz_server(data, first_n, final, final_n);
    fuzz_client(data, first_n, final, final_n);
    fuzz_secret(data, first_n);
    return 0;
}

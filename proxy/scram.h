/* SCRAM-SHA-256 (RFC 5802/7677, as PostgreSQL speaks it) in both roles, and MD5 password
 * hashing, on OpenSSL libcrypto primitives only. Produces and checks SASL payloads; the
 * wire framing (AuthenticationSASL*, SASLResponse) and the choice of method live elsewhere. */
#ifndef PX_SCRAM_H
#define PX_SCRAM_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"

#define PX_SCRAM_KEY_LEN 32
#define PX_SCRAM_SALT_MAX 64
#define PX_SCRAM_NONCE_MAX 128 /* longest nonce accepted from either side */
#define PX_SCRAM_MSG_MAX 1024  /* longest SCRAM message accepted or kept */
#define PX_SCRAM_PASSWORD_MAX 1024
#define PX_SCRAM_MAX_ITERATIONS 10000000

typedef struct px_scram_secret {
    int iterations;
    uint8_t salt[PX_SCRAM_SALT_MAX];
    size_t salt_len;
    uint8_t stored_key[PX_SCRAM_KEY_LEN];
    uint8_t server_key[PX_SCRAM_KEY_LEN];
} px_scram_secret;

/* "SCRAM-SHA-256$<iter>:<b64 salt>$<b64 StoredKey>:<b64 ServerKey>" (PostgreSQL's pg_authid
 * format). 0 or -1. */
int px_scram_secret_parse(const char *s, px_scram_secret *out);
/* Derives a secret from a plain password with a fresh random 16-byte salt. The password is
 * used as given: PostgreSQL applies SASLprep first, which only changes non-ASCII passwords. */
int px_scram_secret_from_password(const char *password, int iterations, px_scram_secret *out);
int px_scram_secret_from_password_salt(const char *password, int iterations, const uint8_t *salt,
                                       size_t salt_len, px_scram_secret *out);

/* Where an exchange stands; a call out of turn fails with -1. */
typedef enum px_scram_step {
    PX_SCRAM_STEP_FIRST,  /* expecting the first message of the exchange */
    PX_SCRAM_STEP_FINAL,  /* expecting the peer's second message */
    PX_SCRAM_STEP_VERIFY, /* client only: expecting the server-final-message */
    PX_SCRAM_STEP_DONE,   /* finished successfully */
    PX_SCRAM_STEP_FAILED, /* finished with an error; key material is wiped */
} px_scram_step;

/* Proxy as SCRAM server (authenticating a client). Fixed-size state, no heap. */
typedef struct px_scram_server {
    px_scram_step step;
    char cbind_flag;        /* 'n' or 'y' from the client's gs2 header */
    px_scram_secret secret; /* a copy; wiped when the exchange ends */
    size_t client_first_bare_len;
    char client_first_bare[PX_SCRAM_MSG_MAX];
    size_t server_first_len;
    char server_first[PX_SCRAM_MSG_MAX];
    size_t nonce_len;
    char nonce[2 * PX_SCRAM_NONCE_MAX]; /* client nonce followed by ours */
} px_scram_server;

void px_scram_server_init(px_scram_server *st, const px_scram_secret *secret);
/* client_first = the SASLInitialResponse data. Appends server-first-message to out.
 * nonce_suffix NULL = random (18 random bytes base64); non-NULL for tests. Returns 0, or -1
 * malformed (or out of memory). */
int px_scram_server_first(px_scram_server *st, const uint8_t *client_first, size_t n,
                          const char *nonce_suffix, pgs_buf *out);
/* client_final = the SASLResponse data. On a correct proof appends server-final-message
 * ("v=...") to out and returns 0; returns -1 malformed, -2 wrong proof (wrong password), -3
 * nonce mismatch. */
int px_scram_server_final(px_scram_server *st, const uint8_t *client_final, size_t n, pgs_buf *out);

/* Proxy as SCRAM client (authenticating to PostgreSQL). Holds a copy of the password until
 * client-final-message is built, then only the expected server signature. */
typedef struct px_scram_client {
    px_scram_step step;
    size_t password_len;
    char password[PX_SCRAM_PASSWORD_MAX]; /* wiped once used */
    size_t client_first_bare_len;
    char client_first_bare[PX_SCRAM_MSG_MAX];
    size_t nonce_len;
    char nonce[PX_SCRAM_NONCE_MAX];
    uint8_t server_signature[PX_SCRAM_KEY_LEN]; /* what server-final must carry */
} px_scram_client;

/* Appends client-first-message ("n,,n=,r=<nonce>") to out; nonce NULL = random (18 bytes
 * base64). 0, or -1 when the password or nonce is too long or the nonce not printable. */
int px_scram_client_first(px_scram_client *st, const char *password, const char *nonce, pgs_buf *out);
/* The same with a user name in "n=" (escaped as RFC 5802 saslname). PostgreSQL ignores the
 * name, so the proxy sends none; this exists for the RFC 7677 test vector, whose proof covers
 * "n=user". */
int px_scram_client_first_user(px_scram_client *st, const char *password, const char *user, const char *nonce,
                               pgs_buf *out);
/* server_first = AuthenticationSASLContinue data; appends client-final-message to out. -1
 * malformed/nonce not extending ours/iterations out of 1..10000000. */
int px_scram_client_final(px_scram_client *st, const uint8_t *server_first, size_t n, pgs_buf *out);
/* server_final = AuthenticationSASLFinal data; 0 when the server signature verifies, -1
 * otherwise. */
int px_scram_client_verify(px_scram_client *st, const uint8_t *server_final, size_t n);

/* MD5: "md5" + 32 hex of md5(password || user); out holds 36 bytes incl. NUL. out is "" if
 * MD5 is unavailable (an OpenSSL FIPS provider). */
void px_md5_secret(const char *password, const char *user, char out[36]);
/* The md5 response PostgreSQL expects for salt: "md5" + hex(md5(hex_secret_part || salt)).
 * `password` may be a plain password or already an "md5"+32 hex secret; like PostgreSQL, only
 * lower-case hex counts as a secret. */
void px_md5_response(const char *password, const char *user, const uint8_t salt[4], char out[36]);
/* Constant-time check of a client's md5 response against the configured password/secret. 0
 * ok, -1 mismatch (always for a SCRAM secret, from which no md5 response can be made). */
int px_md5_verify(const char *password, const char *user, const uint8_t salt[4], const char *response);

#endif

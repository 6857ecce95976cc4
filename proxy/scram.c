/* SCRAM-SHA-256 server and client exchanges and MD5 password hashing (see scram.h). Parses
 * only the SCRAM attribute syntax; inputs are byte ranges that are never NUL-terminated and
 * never read past their length. Knows nothing of sockets or protocol framing. */
#include "proxy/scram.h"

#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#define SCRAM_PREFIX "SCRAM-SHA-256$"
#define SCRAM_RAW_NONCE_LEN 18 /* as PostgreSQL's SCRAM_RAW_NONCE_LEN */
#define SCRAM_DEFAULT_SALT_LEN 16
#define B64_LEN(n) (((n) + 2) / 3 * 4)

/* ---- base64 ---- */

/* EVP_EncodeBlock always pads and NUL-terminates; out must hold B64_LEN(n) + 1. */
static size_t b64_encode(const uint8_t *in, size_t n, char *out)
{
    return (size_t)EVP_EncodeBlock((unsigned char *)out, in, (int)n);
}

static bool b64_char(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' || c == '/';
}

/* EVP_DecodeBlock skips surrounding whitespace and counts padding as zero bytes, so the text
 * is checked strictly here first (whole quads, '=' only as the last one or two characters)
 * and the padding subtracted from its result. Returns the decoded length, or -1 when the text
 * is not padded base64 or decodes to more than outsz bytes. */
static int b64_decode(const char *in, size_t n, uint8_t *out, size_t outsz)
{
    uint8_t tmp[PX_SCRAM_MSG_MAX / 4 * 3];
    if (n == 0 || n % 4 != 0 || n > PX_SCRAM_MSG_MAX)
        return -1;
    size_t pad = (in[n - 1] == '=') + (in[n - 1] == '=' && in[n - 2] == '=');
    for (size_t i = 0; i < n - pad; i++) {
        if (!b64_char(in[i]))
            return -1;
    }
    int got = EVP_DecodeBlock(tmp, (const unsigned char *)in, (int)n);
    if (got < 0 || (size_t)got < pad || (size_t)got - pad > outsz) {
        OPENSSL_cleanse(tmp, sizeof tmp);
        return -1;
    }
    size_t len = (size_t)got - pad;
    memcpy(out, tmp, len);
    OPENSSL_cleanse(tmp, sizeof tmp);
    return (int)len;
}

/* ---- SCRAM key derivation (RFC 5802 section 3) ---- */

static int hmac_sha256(const uint8_t *key, size_t key_len, const void *msg, size_t n,
                       uint8_t out[PX_SCRAM_KEY_LEN])
{
    unsigned int len = 0;
    if (!HMAC(EVP_sha256(), key, (int)key_len, msg, n, out, &len) || len != PX_SCRAM_KEY_LEN)
        return -1;
    return 0;
}

static int sha256(const uint8_t *msg, size_t n, uint8_t out[PX_SCRAM_KEY_LEN])
{
    unsigned int len = 0;
    if (!EVP_Digest(msg, n, out, &len, EVP_sha256(), NULL) || len != PX_SCRAM_KEY_LEN)
        return -1;
    return 0;
}

/* ClientKey and ServerKey from a password. Either output may be NULL. */
static int derive_keys(const char *password, size_t password_len, const uint8_t *salt, size_t salt_len,
                       int iterations, uint8_t client_key[PX_SCRAM_KEY_LEN],
                       uint8_t server_key[PX_SCRAM_KEY_LEN])
{
    uint8_t salted[PX_SCRAM_KEY_LEN];
    int rc = -1;
    if (!PKCS5_PBKDF2_HMAC(password, (int)password_len, salt, (int)salt_len, iterations, EVP_sha256(),
                           PX_SCRAM_KEY_LEN, salted))
        goto out;
    if (client_key && hmac_sha256(salted, sizeof salted, "Client Key", 10, client_key) < 0)
        goto out;
    if (server_key && hmac_sha256(salted, sizeof salted, "Server Key", 10, server_key) < 0)
        goto out;
    rc = 0;
out:
    OPENSSL_cleanse(salted, sizeof salted);
    return rc;
}

/* AuthMessage = client-first-bare "," server-first "," client-final-without-proof; each part
 * is at most PX_SCRAM_MSG_MAX, so the concatenation fits in a fixed buffer and one-shot
 * HMAC() serves (the HMAC_CTX API is deprecated in OpenSSL 3). */
static int auth_signature(const uint8_t key[PX_SCRAM_KEY_LEN], const char *bare, size_t bare_len,
                          const char *sfirst, size_t sfirst_len, const char *cfinal, size_t cfinal_len,
                          uint8_t out[PX_SCRAM_KEY_LEN])
{
    char msg[3 * PX_SCRAM_MSG_MAX + 2];
    if (bare_len > PX_SCRAM_MSG_MAX || sfirst_len > PX_SCRAM_MSG_MAX || cfinal_len > PX_SCRAM_MSG_MAX)
        return -1;
    size_t n = 0;
    memcpy(msg + n, bare, bare_len);
    n += bare_len;
    msg[n++] = ',';
    memcpy(msg + n, sfirst, sfirst_len);
    n += sfirst_len;
    msg[n++] = ',';
    memcpy(msg + n, cfinal, cfinal_len);
    n += cfinal_len;
    return hmac_sha256(key, PX_SCRAM_KEY_LEN, msg, n, out);
}

int px_scram_secret_from_password_salt(const char *password, int iterations, const uint8_t *salt,
                                       size_t salt_len, px_scram_secret *out)
{
    uint8_t client_key[PX_SCRAM_KEY_LEN];
    if (!password || !salt || salt_len == 0 || salt_len > PX_SCRAM_SALT_MAX || iterations < 1)
        return -1;
    memset(out, 0, sizeof *out);
    out->iterations = iterations;
    memcpy(out->salt, salt, salt_len);
    out->salt_len = salt_len;
    int rc = derive_keys(password, strlen(password), salt, salt_len, iterations, client_key, out->server_key);
    if (rc == 0)
        rc = sha256(client_key, sizeof client_key, out->stored_key);
    OPENSSL_cleanse(client_key, sizeof client_key);
    if (rc < 0)
        OPENSSL_cleanse(out, sizeof *out);
    return rc;
}

int px_scram_secret_from_password(const char *password, int iterations, px_scram_secret *out)
{
    uint8_t salt[SCRAM_DEFAULT_SALT_LEN];
    if (RAND_bytes(salt, sizeof salt) != 1)
        return -1;
    return px_scram_secret_from_password_salt(password, iterations, salt, sizeof salt, out);
}

/* ---- attribute parsing ---- */

/* A cursor over a SCRAM message: comma-separated "<letter>=<value>" attributes. */
typedef struct scram_cursor {
    const char *p;
    const char *end;
} scram_cursor;

static bool cur_at(const scram_cursor *c, char ch)
{
    return c->p < c->end && *c->p == ch;
}

static int cur_expect(scram_cursor *c, char ch)
{
    if (!cur_at(c, ch))
        return -1;
    c->p++;
    return 0;
}

/* Reads "<attr>=<value>" up to the next ',' or the end; attr 0 accepts any letter and stores
 * it in *got. The value may be empty. */
static int cur_attr(scram_cursor *c, char attr, char *got, const char **val, size_t *len)
{
    if (c->end - c->p < 2 || c->p[1] != '=')
        return -1;
    char a = c->p[0];
    bool letter = (a >= 'a' && a <= 'z') || (a >= 'A' && a <= 'Z');
    if (!letter || (attr && a != attr))
        return -1;
    if (got)
        *got = a;
    const char *v = c->p + 2;
    const char *comma = memchr(v, ',', (size_t)(c->end - v));
    const char *stop = comma ? comma : c->end;
    *val = v;
    *len = (size_t)(stop - v);
    c->p = stop;
    return 0;
}

/* A message is usable when it is within the size limit and holds no NUL, which PostgreSQL
 * also rejects and which would cut the strings built from it. */
static int cur_init(scram_cursor *c, const uint8_t *p, size_t n)
{
    if (!p || n == 0 || n > PX_SCRAM_MSG_MAX || memchr(p, 0, n))
        return -1;
    c->p = (const char *)p;
    c->end = c->p + n;
    return 0;
}

/* RFC 5802: printable ASCII except ','. */
static bool nonce_valid(const char *s, size_t n)
{
    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < 0x21 || s[i] > 0x7e || s[i] == ',')
            return false;
    }
    return true;
}

static int parse_int(const char *s, size_t n, long long max, int *out)
{
    long long v = 0;
    if (n == 0 || n > 10)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    if (v < 1 || v > max)
        return -1;
    *out = (int)v;
    return 0;
}

/* ---- secrets ---- */

/* Splits at the first `sep` within [p, end); the part before must be non-empty. */
static const char *split(const char *p, const char *end, char sep)
{
    const char *at = memchr(p, sep, (size_t)(end - p));
    return at && at > p ? at : NULL;
}

int px_scram_secret_parse(const char *s, px_scram_secret *out)
{
    size_t plen = sizeof SCRAM_PREFIX - 1;
    if (!s || strncmp(s, SCRAM_PREFIX, plen) != 0)
        return -1;
    const char *p = s + plen;
    const char *end = p + strlen(p);
    const char *colon = split(p, end, ':');
    const char *dollar = colon ? split(colon + 1, end, '$') : NULL;
    const char *colon2 = dollar ? split(dollar + 1, end, ':') : NULL;
    if (!colon2 || colon2 + 1 == end)
        return -1;
    px_scram_secret sec;
    memset(&sec, 0, sizeof sec);
    int salt_len = b64_decode(colon + 1, (size_t)(dollar - colon - 1), sec.salt, sizeof sec.salt);
    int rc = -1;
    if (parse_int(p, (size_t)(colon - p), INT_MAX, &sec.iterations) < 0 || salt_len < 1)
        goto out;
    sec.salt_len = (size_t)salt_len;
    if (b64_decode(dollar + 1, (size_t)(colon2 - dollar - 1), sec.stored_key, PX_SCRAM_KEY_LEN) !=
        PX_SCRAM_KEY_LEN)
        goto out;
    if (b64_decode(colon2 + 1, (size_t)(end - colon2 - 1), sec.server_key, PX_SCRAM_KEY_LEN) !=
        PX_SCRAM_KEY_LEN)
        goto out;
    *out = sec;
    rc = 0;
out:
    OPENSSL_cleanse(&sec, sizeof sec);
    return rc;
}

/* ---- server ---- */

void px_scram_server_init(px_scram_server *st, const px_scram_secret *secret)
{
    memset(st, 0, sizeof *st);
    st->step = secret ? PX_SCRAM_STEP_FIRST : PX_SCRAM_STEP_FAILED;
    if (secret)
        st->secret = *secret;
}

static int server_fail(px_scram_server *st, int rc)
{
    OPENSSL_cleanse(&st->secret, sizeof st->secret);
    st->step = PX_SCRAM_STEP_FAILED;
    return rc;
}

/* The gs2 header: "n,," or "y,,". 'p' asks for channel binding, which the proxy never
 * advertises (it offers no SCRAM-SHA-256-PLUS); an authzid ("a=") is refused as PostgreSQL
 * refuses it. */
static int server_read_gs2(px_scram_server *st, scram_cursor *c)
{
    if (!cur_at(c, 'n') && !cur_at(c, 'y'))
        return -1;
    st->cbind_flag = *c->p++;
    if (c->end - c->p < 2 || memcmp(c->p, ",,", 2) != 0)
        return -1;
    c->p += 2;
    return 0;
}

/* client-first-bare: "n=<name>,r=<nonce>[,ext...]". The name is ignored, as PostgreSQL takes
 * the user from the startup packet; a mandatory extension ("m=") fails the 'n' check. */
static int server_read_first_bare(px_scram_server *st, scram_cursor *c)
{
    const char *val;
    size_t len;
    const char *bare = c->p;
    if (cur_attr(c, 'n', NULL, &val, &len) < 0 || cur_expect(c, ',') < 0)
        return -1;
    if (cur_attr(c, 'r', NULL, &val, &len) < 0 || !nonce_valid(val, len) || len > PX_SCRAM_NONCE_MAX)
        return -1;
    memcpy(st->nonce, val, len);
    st->nonce_len = len;
    while (c->p < c->end) {
        char a;
        if (cur_expect(c, ',') < 0 || cur_attr(c, 0, &a, &val, &len) < 0)
            return -1;
    }
    st->client_first_bare_len = (size_t)(c->end - bare);
    memcpy(st->client_first_bare, bare, st->client_first_bare_len);
    return 0;
}

static int server_nonce_suffix(const char *given, char out[PX_SCRAM_NONCE_MAX + 1])
{
    if (given) {
        size_t n = strlen(given);
        if (n > PX_SCRAM_NONCE_MAX || !nonce_valid(given, n))
            return -1;
        memcpy(out, given, n + 1);
        return 0;
    }
    uint8_t raw[SCRAM_RAW_NONCE_LEN];
    if (RAND_bytes(raw, sizeof raw) != 1)
        return -1;
    b64_encode(raw, sizeof raw, out);
    return 0;
}

int px_scram_server_first(px_scram_server *st, const uint8_t *client_first, size_t n,
                          const char *nonce_suffix, pgs_buf *out)
{
    scram_cursor c;
    char suffix[PX_SCRAM_NONCE_MAX + 1];
    char salt[B64_LEN(PX_SCRAM_SALT_MAX) + 1];
    if (st->step != PX_SCRAM_STEP_FIRST || cur_init(&c, client_first, n) < 0)
        return server_fail(st, -1);
    if (server_read_gs2(st, &c) < 0 || server_read_first_bare(st, &c) < 0)
        return server_fail(st, -1);
    if (server_nonce_suffix(nonce_suffix, suffix) < 0)
        return server_fail(st, -1);
    size_t slen = strlen(suffix);
    memcpy(st->nonce + st->nonce_len, suffix, slen);
    st->nonce_len += slen;
    b64_encode(st->secret.salt, st->secret.salt_len, salt);
    int len = snprintf(st->server_first, sizeof st->server_first, "r=%.*s,s=%s,i=%d", (int)st->nonce_len,
                       st->nonce, salt, st->secret.iterations);
    if (len < 0 || (size_t)len >= sizeof st->server_first)
        return server_fail(st, -1);
    st->server_first_len = (size_t)len;
    if (pgs_buf_append(out, st->server_first, st->server_first_len) < 0)
        return server_fail(st, -1);
    st->step = PX_SCRAM_STEP_FINAL;
    return 0;
}

/* The parsed client-final-message. */
typedef struct client_final {
    const char *nonce;
    size_t nonce_len;
    size_t without_proof_len; /* bytes before ",p=" */
    uint8_t proof[PX_SCRAM_KEY_LEN];
} client_final;

/* "c=<b64 gs2 header>,r=<nonce>[,ext...],p=<proof>", as PostgreSQL reads it. Without channel
 * binding c= is the base64 of the client's own gs2 header: "biws" for "n,,", "eSws" for "y,,". */
static int server_read_final(const px_scram_server *st, scram_cursor *c, client_final *f)
{
    const char *start = c->p;
    const char *val;
    size_t len;
    char a = 0;
    const char *want = st->cbind_flag == 'y' ? "eSws" : "biws";
    if (cur_attr(c, 'c', NULL, &val, &len) < 0 || len != 4 || memcmp(val, want, 4) != 0)
        return -1;
    if (cur_expect(c, ',') < 0 || cur_attr(c, 'r', NULL, &f->nonce, &f->nonce_len) < 0)
        return -1;
    while (a != 'p') {
        f->without_proof_len = (size_t)(c->p - start);
        if (cur_expect(c, ',') < 0 || cur_attr(c, 0, &a, &val, &len) < 0)
            return -1;
    }
    if (c->p != c->end)
        return -1;
    if (b64_decode(val, len, f->proof, sizeof f->proof) != PX_SCRAM_KEY_LEN)
        return -1;
    return 0;
}

/* RFC 5802: ClientKey = proof XOR HMAC(StoredKey, AuthMessage), and the proof is right when
 * H(ClientKey) is the StoredKey. */
static int server_check_proof(px_scram_server *st, const char *cfinal, client_final *f)
{
    uint8_t sig[PX_SCRAM_KEY_LEN];
    uint8_t client_key[PX_SCRAM_KEY_LEN];
    uint8_t stored[PX_SCRAM_KEY_LEN];
    int rc = -1;
    if (auth_signature(st->secret.stored_key, st->client_first_bare, st->client_first_bare_len,
                       st->server_first, st->server_first_len, cfinal, f->without_proof_len, sig) < 0)
        goto out;
    for (size_t i = 0; i < PX_SCRAM_KEY_LEN; i++)
        client_key[i] = f->proof[i] ^ sig[i];
    if (sha256(client_key, sizeof client_key, stored) < 0)
        goto out;
    rc = CRYPTO_memcmp(stored, st->secret.stored_key, PX_SCRAM_KEY_LEN) == 0 ? 0 : -2;
out:
    OPENSSL_cleanse(sig, sizeof sig);
    OPENSSL_cleanse(client_key, sizeof client_key);
    OPENSSL_cleanse(stored, sizeof stored);
    return rc;
}

int px_scram_server_final(px_scram_server *st, const uint8_t *client_final_msg, size_t n, pgs_buf *out)
{
    scram_cursor c;
    client_final f;
    uint8_t sig[PX_SCRAM_KEY_LEN];
    char msg[2 + B64_LEN(PX_SCRAM_KEY_LEN) + 1] = "v=";
    if (st->step != PX_SCRAM_STEP_FINAL || cur_init(&c, client_final_msg, n) < 0)
        return server_fail(st, -1);
    if (server_read_final(st, &c, &f) < 0)
        return server_fail(st, -1);
    if (f.nonce_len != st->nonce_len || CRYPTO_memcmp(f.nonce, st->nonce, st->nonce_len) != 0)
        return server_fail(st, -3);
    int rc = server_check_proof(st, (const char *)client_final_msg, &f);
    OPENSSL_cleanse(f.proof, sizeof f.proof);
    if (rc < 0)
        return server_fail(st, rc);
    if (auth_signature(st->secret.server_key, st->client_first_bare, st->client_first_bare_len,
                       st->server_first, st->server_first_len, (const char *)client_final_msg,
                       f.without_proof_len, sig) < 0)
        return server_fail(st, -1);
    size_t len = 2 + b64_encode(sig, sizeof sig, msg + 2);
    OPENSSL_cleanse(sig, sizeof sig);
    if (pgs_buf_append(out, msg, len) < 0)
        return server_fail(st, -1);
    OPENSSL_cleanse(&st->secret, sizeof st->secret);
    st->step = PX_SCRAM_STEP_DONE;
    return 0;
}

/* ---- client ---- */

static int client_fail(px_scram_client *st)
{
    OPENSSL_cleanse(st->password, sizeof st->password);
    OPENSSL_cleanse(st->server_signature, sizeof st->server_signature);
    st->password_len = 0;
    st->step = PX_SCRAM_STEP_FAILED;
    return -1;
}

/* RFC 5802 saslname: ',' and '=' are written as "=2C" and "=3D". */
static int append_saslname(char *dst, size_t cap, size_t *len, const char *user)
{
    for (const char *p = user; *p; p++) {
        const char *piece = *p == ',' ? "=2C" : *p == '=' ? "=3D" : NULL;
        size_t n = piece ? 3 : 1;
        if (cap - *len < n)
            return -1;
        memcpy(dst + *len, piece ? piece : p, n);
        *len += n;
    }
    return 0;
}

static int client_set_nonce(px_scram_client *st, const char *nonce)
{
    if (nonce) {
        size_t n = strlen(nonce);
        if (n > PX_SCRAM_NONCE_MAX || !nonce_valid(nonce, n))
            return -1;
        memcpy(st->nonce, nonce, n);
        st->nonce_len = n;
        return 0;
    }
    uint8_t raw[SCRAM_RAW_NONCE_LEN];
    char b64[B64_LEN(SCRAM_RAW_NONCE_LEN) + 1];
    if (RAND_bytes(raw, sizeof raw) != 1)
        return -1;
    st->nonce_len = b64_encode(raw, sizeof raw, b64);
    memcpy(st->nonce, b64, st->nonce_len);
    return 0;
}

/* client-first-bare = "n=<user>,r=<nonce>"; the message sent is it behind the gs2 header
 * "n,,": the proxy does not do channel binding, and says so. */
static int client_build_bare(px_scram_client *st, const char *user)
{
    size_t cap = sizeof st->client_first_bare;
    char *b = st->client_first_bare;
    size_t len = 2;
    memcpy(b, "n=", 2);
    if (append_saslname(b, cap, &len, user) < 0 || cap - len < 3 + st->nonce_len)
        return -1;
    memcpy(b + len, ",r=", 3);
    memcpy(b + len + 3, st->nonce, st->nonce_len);
    st->client_first_bare_len = len + 3 + st->nonce_len;
    return 0;
}

int px_scram_client_first_user(px_scram_client *st, const char *password, const char *user, const char *nonce,
                               pgs_buf *out)
{
    memset(st, 0, sizeof *st);
    size_t plen = password ? strlen(password) : 0;
    if (!password || !user || plen > sizeof st->password)
        return client_fail(st);
    memcpy(st->password, password, plen);
    st->password_len = plen;
    if (client_set_nonce(st, nonce) < 0 || client_build_bare(st, user) < 0)
        return client_fail(st);
    pgs_buf_append(out, "n,,", 3);
    if (pgs_buf_append(out, st->client_first_bare, st->client_first_bare_len) < 0)
        return client_fail(st);
    st->step = PX_SCRAM_STEP_FINAL;
    return 0;
}

int px_scram_client_first(px_scram_client *st, const char *password, const char *nonce, pgs_buf *out)
{
    return px_scram_client_first_user(st, password, "", nonce, out);
}

/* The parsed server-first-message. */
typedef struct server_first {
    const char *nonce;
    size_t nonce_len;
    uint8_t salt[PX_SCRAM_MSG_MAX / 4 * 3];
    size_t salt_len;
    int iterations;
} server_first;

/* "r=<nonce>,s=<salt>,i=<iterations>" with nothing after, as libpq reads it. The nonce must be
 * ours with the server's part appended, or the server answers some other exchange. */
static int client_read_first(const px_scram_client *st, scram_cursor *c, server_first *f)
{
    const char *val;
    size_t len;
    if (cur_attr(c, 'r', NULL, &f->nonce, &f->nonce_len) < 0 || !nonce_valid(f->nonce, f->nonce_len) ||
        f->nonce_len <= st->nonce_len || memcmp(f->nonce, st->nonce, st->nonce_len) != 0)
        return -1;
    if (cur_expect(c, ',') < 0 || cur_attr(c, 's', NULL, &val, &len) < 0)
        return -1;
    int salt_len = b64_decode(val, len, f->salt, sizeof f->salt);
    if (salt_len < 1)
        return -1;
    f->salt_len = (size_t)salt_len;
    if (cur_expect(c, ',') < 0 || cur_attr(c, 'i', NULL, &val, &len) < 0)
        return -1;
    if (parse_int(val, len, PX_SCRAM_MAX_ITERATIONS, &f->iterations) < 0 || c->p != c->end)
        return -1;
    return 0;
}

/* Computes the proof and, for later, the signature the server must answer with. */
static int client_proof(px_scram_client *st, const server_first *f, const char *sfirst, size_t sfirst_len,
                        const char *cfinal, size_t cfinal_len, uint8_t proof[PX_SCRAM_KEY_LEN])
{
    uint8_t client_key[PX_SCRAM_KEY_LEN];
    uint8_t server_key[PX_SCRAM_KEY_LEN];
    uint8_t stored[PX_SCRAM_KEY_LEN];
    uint8_t sig[PX_SCRAM_KEY_LEN];
    int rc = -1;
    if (derive_keys(st->password, st->password_len, f->salt, f->salt_len, f->iterations, client_key,
                    server_key) < 0 ||
        sha256(client_key, sizeof client_key, stored) < 0)
        goto out;
    if (auth_signature(stored, st->client_first_bare, st->client_first_bare_len, sfirst, sfirst_len, cfinal,
                       cfinal_len, sig) < 0)
        goto out;
    if (auth_signature(server_key, st->client_first_bare, st->client_first_bare_len, sfirst, sfirst_len,
                       cfinal, cfinal_len, st->server_signature) < 0)
        goto out;
    for (size_t i = 0; i < PX_SCRAM_KEY_LEN; i++)
        proof[i] = client_key[i] ^ sig[i];
    rc = 0;
out:
    OPENSSL_cleanse(client_key, sizeof client_key);
    OPENSSL_cleanse(server_key, sizeof server_key);
    OPENSSL_cleanse(stored, sizeof stored);
    OPENSSL_cleanse(sig, sizeof sig);
    return rc;
}

int px_scram_client_final(px_scram_client *st, const uint8_t *server_first_msg, size_t n, pgs_buf *out)
{
    scram_cursor c;
    server_first f;
    uint8_t proof[PX_SCRAM_KEY_LEN];
    char msg[9 + PX_SCRAM_MSG_MAX + 3 + B64_LEN(PX_SCRAM_KEY_LEN) + 1];
    if (st->step != PX_SCRAM_STEP_FINAL || cur_init(&c, server_first_msg, n) < 0)
        return client_fail(st);
    if (client_read_first(st, &c, &f) < 0)
        return client_fail(st);
    /* client-final-without-proof; the nonce came from an n-byte message, so it fits. */
    memcpy(msg, "c=biws,r=", 9);
    memcpy(msg + 9, f.nonce, f.nonce_len);
    size_t len = 9 + f.nonce_len;
    int rc = client_proof(st, &f, (const char *)server_first_msg, n, msg, len, proof);
    OPENSSL_cleanse(st->password, sizeof st->password);
    st->password_len = 0;
    if (rc < 0)
        return client_fail(st);
    memcpy(msg + len, ",p=", 3);
    len += 3;
    len += b64_encode(proof, sizeof proof, msg + len);
    OPENSSL_cleanse(proof, sizeof proof);
    if (pgs_buf_append(out, msg, len) < 0)
        return client_fail(st);
    st->step = PX_SCRAM_STEP_VERIFY;
    return 0;
}

/* server-final is "v=<signature>" or "e=<error>"; anything but the expected signature fails. */
int px_scram_client_verify(px_scram_client *st, const uint8_t *server_final, size_t n)
{
    scram_cursor c;
    const char *val;
    size_t len;
    uint8_t sig[PX_SCRAM_KEY_LEN];
    if (st->step != PX_SCRAM_STEP_VERIFY || cur_init(&c, server_final, n) < 0)
        return client_fail(st);
    if (cur_attr(&c, 'v', NULL, &val, &len) < 0 || c.p != c.end ||
        b64_decode(val, len, sig, sizeof sig) != PX_SCRAM_KEY_LEN)
        return client_fail(st);
    bool ok = CRYPTO_memcmp(sig, st->server_signature, PX_SCRAM_KEY_LEN) == 0;
    OPENSSL_cleanse(sig, sizeof sig);
    OPENSSL_cleanse(st->server_signature, sizeof st->server_signature);
    if (!ok)
        return client_fail(st);
    st->step = PX_SCRAM_STEP_DONE;
    return 0;
}

/* ---- MD5 ---- */

#define MD5_SECRET_LEN 35 /* "md5" + 32 hex */

static void hex_encode(const uint8_t *in, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
}

/* Writes "md5" + hex(md5(a || b)) and its NUL, or "" when MD5 is unavailable. An md5 secret
 * logs in to PostgreSQL as well as the password does, so the digest is wiped like a key. */
static void md5_pair(const void *a, size_t alen, const void *b, size_t blen, char out[36])
{
    uint8_t digest[EVP_MAX_MD_SIZE];
    unsigned int dlen = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    out[0] = 0;
    bool ok = ctx && EVP_DigestInit_ex(ctx, EVP_md5(), NULL) && EVP_DigestUpdate(ctx, a, alen) &&
              EVP_DigestUpdate(ctx, b, blen) && EVP_DigestFinal_ex(ctx, digest, &dlen) && dlen == 16;
    EVP_MD_CTX_free(ctx);
    if (ok) {
        memcpy(out, "md5", 3);
        hex_encode(digest, 16, out + 3);
        out[MD5_SECRET_LEN] = 0;
    }
    OPENSSL_cleanse(digest, sizeof digest);
}

/* PostgreSQL's get_password_type: exactly "md5" and 32 lower-case hex digits. */
static bool is_md5_secret(const char *s)
{
    return strncmp(s, "md5", 3) == 0 && strlen(s) == MD5_SECRET_LEN &&
           strspn(s + 3, "0123456789abcdef") == MD5_SECRET_LEN - 3;
}

void px_md5_secret(const char *password, const char *user, char out[36])
{
    password = password ? password : "";
    user = user ? user : "";
    md5_pair(password, strlen(password), user, strlen(user), out);
}

void px_md5_response(const char *password, const char *user, const uint8_t salt[4], char out[36])
{
    char secret[36];
    password = password ? password : "";
    if (is_md5_secret(password))
        memcpy(secret, password, sizeof secret);
    else
        px_md5_secret(password, user, secret);
    out[0] = 0;
    if (secret[0])
        md5_pair(secret + 3, 32, salt, 4, out);
    OPENSSL_cleanse(secret, sizeof secret);
}

int px_md5_verify(const char *password, const char *user, const uint8_t salt[4], const char *response)
{
    char want[36];
    if (!password || !response || strncmp(password, SCRAM_PREFIX, sizeof SCRAM_PREFIX - 1) == 0)
        return -1;
    px_md5_response(password, user, salt, want);
    int rc = -1;
    if (want[0] && strlen(response) == MD5_SECRET_LEN && CRYPTO_memcmp(want, response, MD5_SECRET_LEN) == 0)
        rc = 0;
    OPENSSL_cleanse(want, sizeof want);
    return rc;
}

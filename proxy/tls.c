/* The transport table: how a connection's bytes reach the socket. Plain connections read
 * straight into their input buffer and write what they are given; TLS connections (both
 * towards clients and towards servers) run OpenSSL over memory BIOs, so libuv still does
 * all socket I/O. Nothing outside this file and conn.c knows which one a connection uses,
 * and only this file includes OpenSSL's TLS headers. */
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "proxy/px.h"

#define PX_TLS_CHUNK 16384

typedef struct px_tls {
    SSL *ssl;
    BIO *rbio; /* owned by ssl: raw bytes from the peer */
    BIO *wbio; /* owned by ssl: raw bytes for the peer */
    bool established;
} px_tls;

/* ---- plain -------------------------------------------------------------------------- */

static void plain_alloc(px_conn *c, uv_buf_t *buf)
{
    if (!c->in.data)
        px_buf_take(c->w, &c->in);
    if (c->in.cap - c->in.len < 4096)
        pgs_buf_reserve(&c->in, PX_BLOCK);
    if (pgs_buf_failed(&c->in) || !c->in.data) {
        *buf = uv_buf_init(NULL, 0);
        return;
    }
    *buf = uv_buf_init((char *)c->in.data + c->in.len, (unsigned)(c->in.cap - c->in.len));
}

static int plain_received(px_conn *c, size_t n)
{
    c->in.len += n;
    return 0;
}

static int plain_send(px_conn *c, const void *p, size_t n)
{
    return px_conn_raw_send(c, p, n);
}

static void plain_free(px_conn *c)
{
    (void)c;
}

const px_transport px_plain_transport = {"plain", plain_alloc, plain_received, plain_send, plain_free};

/* ---- TLS ---------------------------------------------------------------------------- */

static void tls_log_errors(const char *what)
{
    unsigned long e = ERR_get_error();
    char buf[256] = "no detail";
    if (e)
        ERR_error_string_n(e, buf, sizeof buf);
    ERR_clear_error();
    pgs_warn("tls_error", "%s: %s", what, buf);
}

/* Sends whatever OpenSSL has produced for the peer. */
static int tls_flush(px_conn *c)
{
    px_tls *t = c->tls;
    uint8_t chunk[PX_TLS_CHUNK];
    int n;
    while ((n = BIO_read(t->wbio, chunk, sizeof chunk)) > 0)
        if (px_conn_raw_send(c, chunk, (size_t)n) < 0)
            return -1;
    return 0;
}

static void tls_alloc(px_conn *c, uv_buf_t *buf)
{
    px_worker *w = c->w;
    if (!w->tls_scratch)
        w->tls_scratch = malloc(PX_TLS_CHUNK * 4);
    *buf = uv_buf_init((char *)w->tls_scratch, w->tls_scratch ? PX_TLS_CHUNK * 4 : 0);
}

/* Feeds raw bytes to OpenSSL and moves the plaintext it yields into c->in. Returns 0,
 * 1 when the handshake has just completed, -1 on a TLS failure. */
static int tls_received(px_conn *c, size_t n)
{
    px_tls *t = c->tls;
    int done = 0;
    if (BIO_write(t->rbio, c->w->tls_scratch, (int)n) != (int)n)
        return -1;
    if (!t->established) {
        int r = SSL_do_handshake(t->ssl);
        if (tls_flush(c) < 0)
            return -1;
        if (r != 1) {
            int e = SSL_get_error(t->ssl, r);
            if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
                return 0;
            tls_log_errors(c->is_server ? "handshake with server" : "handshake with client");
            return -1;
        }
        t->established = true;
        done = 1;
        pgs_debug("tls_established", "%s %s", c->is_server ? "server" : "client", SSL_get_version(t->ssl));
    }
    for (;;) {
        if (pgs_buf_reserve(&c->in, PX_TLS_CHUNK) < 0)
            return -1;
        int r = SSL_read(t->ssl, c->in.data + c->in.len, (int)(c->in.cap - c->in.len));
        if (r > 0) {
            c->in.len += (size_t)r;
            continue;
        }
        int e = SSL_get_error(t->ssl, r);
        if (tls_flush(c) < 0)
            return -1;
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
            return done;
        if (e == SSL_ERROR_ZERO_RETURN)
            return -1; /* close_notify: the peer is done */
        tls_log_errors("read");
        return -1;
    }
}

static int tls_send(px_conn *c, const void *p, size_t n)
{
    px_tls *t = c->tls;
    if (!t->established || n > INT32_MAX)
        return -1;
    if (SSL_write(t->ssl, p, (int)n) != (int)n) {
        tls_log_errors("write");
        return -1;
    }
    return tls_flush(c);
}

static void tls_free(px_conn *c)
{
    px_tls *t = c->tls;
    if (!t)
        return;
    SSL_free(t->ssl);
    free(t);
    c->tls = NULL;
}

static const px_transport px_tls_transport = {"tls", tls_alloc, tls_received, tls_send, tls_free};

/* Switches a connection to TLS: as the server side (clients' SSLRequest answered 'S') or
 * as the client side (towards PostgreSQL, which answered our SSLRequest with 'S'). The
 * client side sends its ClientHello at once. Returns 0 or -1. */
int px_tls_start(px_conn *c, void *ctx, bool accept)
{
    px_tls *t = calloc(1, sizeof *t);
    if (!t)
        return -1;
    t->ssl = SSL_new(ctx);
    t->rbio = BIO_new(BIO_s_mem());
    t->wbio = BIO_new(BIO_s_mem());
    if (!t->ssl || !t->rbio || !t->wbio) {
        BIO_free(t->rbio);
        BIO_free(t->wbio);
        SSL_free(t->ssl);
        free(t);
        return -1;
    }
    SSL_set_bio(t->ssl, t->rbio, t->wbio);
    if (accept)
        SSL_set_accept_state(t->ssl);
    else
        SSL_set_connect_state(t->ssl);
    c->tls = t;
    c->tr = &px_tls_transport;
    if (!accept) {
        SSL_do_handshake(t->ssl);
        return tls_flush(c);
    }
    return 0;
}

bool px_conn_is_tls(const px_conn *c)
{
    return c->tr == &px_tls_transport;
}

/* Contexts shared by all workers (OpenSSL allows that once they are set up). */
int px_tls_setup(px_proxy *px, char *err, size_t errlen)
{
    const cfg_config *cfg = px->cfg;
    if (cfg->client_tls != CFG_CTLS_DISABLE) {
        SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
        if (!ctx || !SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) ||
            SSL_CTX_use_certificate_chain_file(ctx, cfg->tls_cert_file) != 1 ||
            SSL_CTX_use_PrivateKey_file(ctx, cfg->tls_key_file, SSL_FILETYPE_PEM) != 1 ||
            SSL_CTX_check_private_key(ctx) != 1) {
            unsigned long e = ERR_get_error();
            char detail[256] = "";
            ERR_error_string_n(e, detail, sizeof detail);
            snprintf(err, errlen, "%s: cannot use tls_cert_file %s / tls_key_file %s: %s", cfg->path,
                     cfg->tls_cert_file, cfg->tls_key_file, detail);
            SSL_CTX_free(ctx);
            return -1;
        }
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
        px->tls_accept_ctx = ctx;
    }
    if (cfg->server_tls != CFG_STLS_DISABLE) {
        SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
        if (!ctx || !SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION)) {
            snprintf(err, errlen, "cannot create a TLS context for servers");
            SSL_CTX_free(ctx);
            return -1;
        }
        /* Like libpq's sslmode=require: encrypted, server certificate not verified. */
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
        px->tls_connect_ctx = ctx;
    }
    return 0;
}

void px_tls_teardown(px_proxy *px)
{
    SSL_CTX_free(px->tls_accept_ctx);
    SSL_CTX_free(px->tls_connect_ctx);
}

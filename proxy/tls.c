/* The transport table: how a connection's bytes reach the socket. Plain connections read
 * straight into their input buffer and write what they are given; TLS connections (both
 * towards clients and towards servers) run OpenSSL over memory BIOs, so libuv still does
 * all socket I/O. Nothing outside this file and conn.c knows which one a connection uses,
 * and only this file includes OpenSSL's TLS headers. */
#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
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
    const cfg_node *node; /* towards a server: the node as configured (borrowed from the
                             startup conf, which lives until exit); NULL towards a client */
    char why[128];        /* why the handshake failed, when there is more to say than that */
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

static const char *plain_failure(const px_conn *c)
{
    (void)c;
    return NULL;
}

const px_transport px_plain_transport = {"plain",    plain_alloc, plain_received,
                                         plain_send, plain_free,  plain_failure};

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

/* The node as the config writes it, for messages. */
static void tls_node_name(char *buf, size_t len, const cfg_node *node)
{
    bool v6 = strchr(node->host, ':') != NULL;
    if (snprintf(buf, len, "%s%s%s:%u", v6 ? "[" : "", node->host, v6 ? "]" : "", (unsigned)node->port) < 0)
        buf[0] = '\0';
}

/* A handshake that failed. When it was the server's certificate that failed the check
 * (server_tls = verify-ca or verify-full, where any verify error ends the handshake),
 * OpenSSL's queue says only "certificate verify failed"; the verify result says what was
 * wrong with it, which is what an operator needs to tell an impostor from an expired or
 * misissued certificate. */
static void tls_handshake_failed(px_conn *c)
{
    px_tls *t = c->tls;
    long v = SSL_get_verify_result(t->ssl);
    if (!t->node || c->w->px->cfg->server_tls < CFG_STLS_VERIFY_CA || v == X509_V_OK) {
        tls_log_errors(c->is_server ? "handshake with server" : "handshake with client");
        return;
    }
    ERR_clear_error();
    char node[CFG_HOST_MAX + sizeof "[]:65535"];
    tls_node_name(node, sizeof node, t->node);
    snprintf(t->why, sizeof t->why, "certificate verify failed: %s", X509_verify_cert_error_string(v));
    pgs_warn("server_tls_verify_failed", "%s; node %s, server_tls = %s", t->why, node,
             cfg_server_tls_name(c->w->px->cfg->server_tls));
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
        w->tls_scratch = malloc((size_t)PX_TLS_CHUNK * 4);
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
            tls_handshake_failed(c);
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

static const char *tls_failure(const px_conn *c)
{
    const px_tls *t = c->tls;
    return t && t->why[0] ? t->why : NULL;
}

static const px_transport px_tls_transport = {"tls",    tls_alloc, tls_received,
                                              tls_send, tls_free,  tls_failure};

/* Switches a connection to TLS: as the server side (clients' SSLRequest answered 'S') or
 * as the client side (towards PostgreSQL, which answered our SSLRequest with 'S'; then
 * px_tls_connect sends the ClientHello). Returns 0 or -1. */
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
    return 0;
}

/* server_tls = verify-full: the certificate must name the node as the config addresses it,
 * as libpq checks the host it was given. A host name is matched against the certificate's
 * DNS names (its CN when it has none), with a wildcard only as a whole leftmost label, as
 * libpq allows; an IP address only against its IP address entries. */
static int tls_expect_name(SSL *ssl, const char *host)
{
    unsigned char addr[16];
    if (inet_pton(AF_INET, host, addr) == 1 || inet_pton(AF_INET6, host, addr) == 1)
        return X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host) == 1 ? 0 : -1;
    SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    return SSL_set1_host(ssl, host) == 1 ? 0 : -1;
}

/* Switches a server connection to TLS once PostgreSQL has accepted our SSLRequest. With
 * server_tls = verify-ca or verify-full the context verifies the certificate chain during
 * the handshake; verify-full also checks the name here. Returns 0 or -1. */
int px_tls_connect(px_conn *c, const cfg_node *node)
{
    const px_proxy *px = c->w->px;
    if (px_tls_start(c, px->tls_connect_ctx, false) < 0)
        return -1;
    px_tls *t = c->tls;
    t->node = node;
    if (px->cfg->server_tls == CFG_STLS_VERIFY_FULL && tls_expect_name(t->ssl, node->host) < 0)
        return -1;
    SSL_do_handshake(t->ssl);
    return tls_flush(c);
}

bool px_conn_is_tls(const px_conn *c)
{
    return c->tr == &px_tls_transport;
}

/* The context towards servers. verify-ca and verify-full load the CA file into it, so a
 * file that cannot be read or holds no certificate stops pgshard at start. */
static SSL_CTX *tls_connect_ctx_new(const cfg_config *cfg, char *err, size_t errlen)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx || !SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION)) {
        snprintf(err, errlen, "cannot create a TLS context for servers");
        SSL_CTX_free(ctx);
        return NULL;
    }
    if (cfg->server_tls < CFG_STLS_VERIFY_CA) {
        /* Like libpq's sslmode=require: encrypted, server certificate not verified. */
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
        return ctx;
    }
    ERR_clear_error();
    if (SSL_CTX_load_verify_locations(ctx, cfg->server_tls_ca_file, NULL) != 1) {
        char detail[256] = "no detail";
        unsigned long e = ERR_get_error();
        if (e)
            ERR_error_string_n(e, detail, sizeof detail);
        ERR_clear_error();
        snprintf(err, errlen, "%s: cannot use server_tls_ca_file %s: %s", cfg->path, cfg->server_tls_ca_file,
                 detail);
        SSL_CTX_free(ctx);
        return NULL;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    return ctx;
}

int px_tls_check_server_ca(const cfg_config *cfg, char *err, size_t errlen)
{
    if (cfg->server_tls < CFG_STLS_VERIFY_CA)
        return 0;
    SSL_CTX *ctx = tls_connect_ctx_new(cfg, err, errlen);
    SSL_CTX_free(ctx);
    return ctx ? 0 : -1;
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
    if (cfg->server_tls != CFG_STLS_DISABLE && !(px->tls_connect_ctx = tls_connect_ctx_new(cfg, err, errlen)))
        return -1;
    return 0;
}

void px_tls_teardown(px_proxy *px)
{
    SSL_CTX_free(px->tls_accept_ctx);
    SSL_CTX_free(px->tls_connect_ctx);
}

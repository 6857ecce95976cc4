/* The fuzzers' pgshard worker (see proxy_harness.h): prebuilt proxies, one per config, a
 * worker set up per input as px_worker_start() does but without its thread, tick timer or
 * metrics, and the harness's ends of the sockets pumped between runs of the loop. Holds no
 * protocol logic of its own beyond what a scripted peer needs; what to send is the
 * targets' business. */
#include "tests/fuzz/proxy_harness.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/log.h"
#include "proxy/catalog.h"
#include "proxy/tables.h"

#define PH_CHECK(cond)                                                                                       \
    do {                                                                                                     \
        if (!(cond)) {                                                                                       \
            fprintf(stderr, "proxy_harness: check failed: %s (%s:%d)\n", #cond, __FILE__, __LINE__);         \
            __builtin_trap();                                                                                \
        }                                                                                                    \
    } while (0)

#define PH_MAX_SPINS 20000 /* loop iterations one settle may take before giving up */
#define PH_QUIET 3         /* iterations with nothing moving that make the rig settled */
#define PH_IN_MAX (1u << 20)
#define PH_PARSE_CACHE 16 /* entries of each config's parse cache */

/* A user whose SCRAM secret has one iteration: a client proof costs three HMACs, not
 * PBKDF2's 4096, so the fuzzer's own SCRAM logins stay fast. Its password is "app". */
#define PH_SCRAM_SECRET                                                                                      \
    "SCRAM-SHA-256$1:cGdzaGFyZC1mdXp6LXNhbHQ=$3X388foIONKbDsePfyJ8MPdNbQShLq0+PV4UlkwPUp4=:"                 \
    "Q9FPuNp3lGS3whwgX1QAvfqeVhadDkoZmf5X46KbHmw="

/* The configs an input picks from with its first byte. %u is the harness's server port;
 * every shard's primary is that one listener. No replicas: without a monitor, routing
 * sends everything to primaries (the monitor would poll with libpq from a thread). */
static const char *const ph_config_text[] = {
    /* 0: the plain pooler: trust, transaction pooling, an admin user. */
    "[pgshard]\nworkers = 1\nauth_type = trust\npool_size = 2\nadmin_users = admin\n"
    "[shard.0]\nprimary = 127.0.0.1:%u\n[user.app]\npassword = app\n[user.admin]\npassword = app\n",
    /* 1: session pooling, md5 clients; the backend asks md5 too. */
    "[pgshard]\nworkers = 1\nauth_type = md5\npool_mode = session\n"
    "[shard.0]\nprimary = 127.0.0.1:%u\n[user.app]\npassword = app\n",
    /* 2: SCRAM clients (a cheap secret), transaction pooling. */
    "[pgshard]\nworkers = 1\nauth_type = scram-sha-256\n"
    "[shard.0]\nprimary = 127.0.0.1:%u\n[user.app]\npassword = " PH_SCRAM_SECRET "\n",
    /* 3: two shards, a sharded and an omnisharded table; the backend asks SCRAM. */
    "[pgshard]\nworkers = 1\nauth_type = trust\nadmin_users = app\n"
    "[shard.0]\nprimary = 127.0.0.1:%u\n[shard.1]\nprimary = 127.0.0.1:%u\n"
    "[table.orders]\nshard_key = tenant_id\nkey_type = int\n"
    "[table.accounts]\nshard_key = name\nkey_type = text\n"
    "[table.countries]\nomnisharded = true\n"
    "[user.app]\npassword = app\n",
    /* 4: tight limits: one server, one client, small messages, a rate limit. */
    "[pgshard]\nworkers = 1\nauth_type = trust\npool_size = 1\nmax_client_conn = 1\n"
    "max_message_size = 8192\nquery_wait_timeout = 1\n"
    "[shard.0]\nprimary = 127.0.0.1:%u\n[user.app]\npassword = app\nmax_qps = 5\n",
};
#define PH_NCONFIGS ((int)(sizeof ph_config_text / sizeof ph_config_text[0]))

/* How the scripted backend of each config logs the proxy in: 0 trust, 5 md5, 10 SCRAM. */
static const uint32_t ph_backend_auth[PH_NCONFIGS] = {0, 5, 0, 10, 0};

static struct {
    bool ready;
    int server_lfd; /* loopback TCP: every shard's primary */
    int client_lfd; /* abstract unix socket: the worker's listener is a dup of it */
    struct sockaddr_un client_addr;
    socklen_t client_addr_len;
    px_proxy px[PH_NCONFIGS];
    px_worker route[PH_NCONFIGS]; /* each config's routing state (px_route_setup), kept across
                                     inputs: a fresh parse cache costs more than the rest of an
                                     input, so it is cleared instead */
    px_scram_secret secret;       /* the backend's, for PH_PASSWORD with one iteration */
    ph_rig rig;
} ph;

int ph_nconfigs(void)
{
    return PH_NCONFIGS;
}

static void ph_build_proxy(int i, unsigned port)
{
    char text[2048], err[512];
    px_proxy *px = &ph.px[i];
    cfg_config *cfg;
    snprintf(text, sizeof text, ph_config_text[i], port, port);
    PH_CHECK(cfg_load_string(text, "fuzz.ini", &cfg, err, sizeof err) == 0 || !fprintf(stderr, "%s\n", err));
    px->cfg = cfg;
    px->conf = px_conf_build(px, cfg, err, sizeof err);
    PH_CHECK(px->conf || !fprintf(stderr, "%s\n", err));
    px->start = px_conf_hold(px->conf); /* kept for the whole run, as main() does */
    px->cat = px_catalog_start(cfg, 1, err, sizeof err);
    PH_CHECK(px->cat || !fprintf(stderr, "%s\n", err));
    px->nworkers = 1;
    ph.route[i].px = px;
    PH_CHECK(px_route_setup(&ph.route[i]) == 0);
    /* A small cache: clearing it per input stays cheap, and eviction gets exercised. */
    prs_cache_destroy(ph.route[i].pcache);
    ph.route[i].pcache = prs_cache_create(PH_PARSE_CACHE);
    PH_CHECK(ph.route[i].pcache);
    px->sharded = cfg->nshards > 1 || px_tables_count(px_catalog_tables(px->cat)) > 0;
}

static void ph_init(void)
{
    signal(SIGPIPE, SIG_IGN);
    /* Quiet unless asked: one line per event would cost more than the proxy's work. */
    if (getenv("PH_LOG"))
        pgs_log_setup(0, PGS_LOG_DEBUG);
    else
        pgs_log_setup(0, (pgs_log_level)(PGS_LOG_ERROR + 1));

    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t slen = sizeof sin;
    ph.server_lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    PH_CHECK(ph.server_lfd >= 0);
    PH_CHECK(bind(ph.server_lfd, (struct sockaddr *)&sin, sizeof sin) == 0);
    PH_CHECK(listen(ph.server_lfd, 128) == 0);
    PH_CHECK(getsockname(ph.server_lfd, (struct sockaddr *)&sin, &slen) == 0);

    ph.client_addr.sun_family = AF_UNIX;
    int n = snprintf(ph.client_addr.sun_path + 1, sizeof ph.client_addr.sun_path - 1, "pgshard-fuzz-%d",
                     (int)getpid());
    ph.client_addr_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)n);
    ph.client_lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    PH_CHECK(ph.client_lfd >= 0);
    PH_CHECK(bind(ph.client_lfd, (struct sockaddr *)&ph.client_addr, ph.client_addr_len) == 0);
    PH_CHECK(listen(ph.client_lfd, 128) == 0);

    for (int i = 0; i < PH_NCONFIGS; i++)
        ph_build_proxy(i, ntohs(sin.sin_port));
    PH_CHECK(px_scram_secret_parse(PH_SCRAM_SECRET, &ph.secret) == 0);
    ph.ready = true;
}

/* ---- the harness's sockets ---- */

static void ph_reset_fd(int fd)
{
    struct linger lg = {1, 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(fd);
}

/* Connections nobody accepted in an earlier input (the worker was gone by then). */
static void ph_drain_backlogs(void)
{
    int fd;
    while ((fd = accept4(ph.server_lfd, NULL, NULL, SOCK_CLOEXEC)) >= 0)
        ph_reset_fd(fd);
    while ((fd = accept4(ph.client_lfd, NULL, NULL, SOCK_CLOEXEC)) >= 0)
        close(fd);
}

static ph_peer *ph_add_peer(ph_rig *r, int fd, bool is_server)
{
    if (r->npeers == PH_MAX_PEERS) {
        if (is_server)
            ph_reset_fd(fd);
        else
            close(fd);
        return NULL;
    }
    ph_peer *p = &r->peers[r->npeers++];
    memset(p, 0, sizeof *p);
    p->fd = fd;
    p->is_server = is_server;
    p->tx = PGS_TX_IDLE;
    return p;
}

void ph_close(ph_peer *p)
{
    if (p->fd < 0)
        return;
    if (p->is_server)
        ph_reset_fd(p->fd);
    else
        close(p->fd);
    p->fd = -1;
    pgs_buf_clear(&p->out);
}

void ph_shutdown_write(ph_peer *p)
{
    if (p->fd >= 0)
        shutdown(p->fd, SHUT_WR);
}

void ph_send(ph_peer *p, const void *data, size_t n)
{
    if (p->fd >= 0 && n)
        pgs_buf_append(&p->out, data, n);
}

ph_peer *ph_connect_client(ph_rig *r)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    PH_CHECK(fd >= 0);
    if (connect(fd, (struct sockaddr *)&ph.client_addr, ph.client_addr_len) < 0) {
        close(fd);
        return NULL;
    }
    return ph_add_peer(r, fd, false);
}

ph_peer *ph_server(ph_rig *r)
{
    for (int i = r->npeers - 1; i >= 0; i--)
        if (r->peers[i].is_server && r->peers[i].fd >= 0 && r->peers[i].hello_done)
            return &r->peers[i];
    return NULL;
}

/* Writes what is queued; true when a byte went. */
static bool ph_flush(ph_peer *p)
{
    bool moved = false;
    while (p->fd >= 0 && p->out.len) {
        ssize_t n = send(p->fd, p->out.data, p->out.len, MSG_NOSIGNAL);
        if (n > 0) {
            pgs_buf_consume(&p->out, (size_t)n);
            moved = true;
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            break;
        ph_close(p); /* the proxy is gone: what it did not read is lost, as on a network */
        moved = true;
    }
    return moved;
}

/* Reads what the proxy sent; true when something happened. */
static bool ph_read(ph_rig *r, ph_peer *p)
{
    /* Static: ASan would poison and unpoison a stack array this big on every call. */
    static uint8_t buf[65536];
    bool moved = false;
    while (p->fd >= 0) {
        ssize_t n = recv(p->fd, buf, sizeof buf, 0);
        if (n > 0) {
            if (p->in.len + (size_t)n <= PH_IN_MAX)
                pgs_buf_append(&p->in, buf, (size_t)n);
            p->got += (uint64_t)n;
            if (p->is_server)
                r->last_server = p;
            moved = true;
            if ((size_t)n < sizeof buf)
                break; /* most likely drained; if not, the next poll says so */
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            break;
        /* EOF or an error: the proxy closed. A server end answers with a reset, so the
         * proxy's socket does not linger in TIME_WAIT and use up loopback ports. */
        p->eof = true;
        ph_close(p);
        moved = true;
    }
    return moved;
}

/* What the proxy told a client: authentication requests, its cancel key, ReadyForQuery.
 * A lone 'N' (or 'S') before the first message answers an SSLRequest or GSSENCRequest. */
static void ph_client_scan(ph_peer *p)
{
    while (p->scan < p->in.len) {
        const uint8_t *m = p->in.data + p->scan;
        size_t avail = p->in.len - p->scan;
        if (!p->auth_code && !p->logged_in && p->scan < 2 && (m[0] == 'N' || m[0] == 'S') &&
            (avail < 2 || m[1] != 0)) {
            p->scan++;
            continue;
        }
        if (avail < PGS_HDR_LEN)
            return;
        uint32_t len = pgs_be32(m + 1);
        if (len < 4 || len > PH_IN_MAX) {
            p->scan = p->in.len; /* not a stream the harness can follow: stop looking */
            return;
        }
        if (avail < (size_t)len + 1)
            return;
        const uint8_t *body = m + PGS_HDR_LEN;
        size_t n = len - 4;
        if (m[0] == PGS_BE_AUTH && n >= 4) {
            p->auth_code = pgs_be32(body);
            p->auth_len = n - 4 < sizeof p->auth_data ? n - 4 : sizeof p->auth_data;
            memcpy(p->auth_data, body + 4, p->auth_len);
        } else if (m[0] == PGS_BE_KEY_DATA && n == 8) {
            p->have_key = true;
            p->key_pid = pgs_be32(body);
            p->key_secret = pgs_be32(body + 4);
        } else if (m[0] == PGS_BE_READY) {
            p->logged_in = true;
        }
        p->scan += (size_t)len + 1;
    }
    /* Everything looked at: the bytes themselves are not needed any more. */
    pgs_buf_clear(&p->in);
    p->scan = 0;
}

/* One poll() says which sockets have something: a syscall per idle socket and pass would
 * cost more than the proxy's own work. */
static bool ph_pump(ph_rig *r)
{
    struct pollfd pfd[PH_MAX_PEERS + 1];
    int at[PH_MAX_PEERS + 1], n = 0;
    bool moved = false;
    pfd[n++] = (struct pollfd){.fd = ph.server_lfd, .events = POLLIN};
    for (int i = 0; i < r->npeers; i++) {
        if (r->peers[i].fd < 0)
            continue;
        at[n] = i;
        pfd[n++] = (struct pollfd){.fd = r->peers[i].fd, .events = POLLIN};
    }
    if (poll(pfd, (nfds_t)n, 0) < 0)
        return true;
    int fd;
    while (pfd[0].revents && (fd = accept4(ph.server_lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
        ph_add_peer(r, fd, true);
        moved = true;
    }
    for (int k = 1; k < n; k++) {
        ph_peer *p = &r->peers[at[k]];
        moved |= ph_flush(p);
        if (pfd[k].revents)
            moved |= ph_read(r, p);
        if (p->is_server && p->in.len && r->on_server)
            r->on_server(r, p);
        else if (!p->is_server)
            ph_client_scan(p);
        moved |= ph_flush(p);
    }
    /* New peers (accepted above, or a client the script opened) are read next pass. */
    for (int i = 0; i < r->npeers; i++)
        moved |= r->peers[i].fd >= 0 && r->peers[i].out.len && ph_flush(&r->peers[i]);
    return moved;
}

void ph_settle(ph_rig *r)
{
    int quiet = 0;
    for (int spins = 0; quiet < PH_QUIET && spins < PH_MAX_SPINS; spins++) {
        uv_run(&r->w.loop, UV_RUN_NOWAIT);
        quiet = ph_pump(r) ? 0 : quiet + 1;
    }
}

/* ---- messages ---- */

void ph_msg(pgs_buf *b, char type, const void *body, size_t n)
{
    pgs_buf_append_u8(b, (uint8_t)type);
    pgs_buf_append_be32(b, (uint32_t)(n + 4));
    pgs_buf_append(b, body, n);
}

void ph_msg_str(pgs_buf *b, char type, const char *s)
{
    ph_msg(b, type, s, strlen(s) + 1);
}

void ph_startup(pgs_buf *b, const char *user, const char *db, const char *app_name)
{
    size_t at = b->len;
    pgs_buf_append_be32(b, 0);
    pgs_buf_append_be32(b, PGS_PROTO_V3);
    pgs_buf_append_cstr(b, "user");
    pgs_buf_append_cstr(b, user);
    pgs_buf_append_cstr(b, "database");
    pgs_buf_append_cstr(b, db);
    if (app_name) {
        pgs_buf_append_cstr(b, "application_name");
        pgs_buf_append_cstr(b, app_name);
    }
    pgs_buf_append_u8(b, 0);
    pgs_buf_put_be32(b, at, (uint32_t)(b->len - at));
}

/* ---- authentication, both sides ---- */

void ph_client_auth(ph_rig *r, ph_peer *cl)
{
    pgs_buf b = PGS_BUF_INIT;
    size_t st;
    switch (cl->auth_code) {
    case 5: {
        char resp[36];
        if (cl->auth_len < 4)
            break;
        px_md5_response(PH_PASSWORD, r->user, cl->auth_data, resp);
        ph_msg_str(&b, PGS_FE_PASSWORD, resp);
        break;
    }
    case 10:
        memset(&cl->sc, 0, sizeof cl->sc);
        st = pgs_msg_begin(&b, PGS_FE_PASSWORD);
        pgs_buf_append_cstr(&b, "SCRAM-SHA-256");
        size_t lenpos = b.len;
        pgs_buf_append_be32(&b, 0);
        if (px_scram_client_first(&cl->sc, PH_PASSWORD, NULL, &b) == 0) {
            pgs_buf_put_be32(&b, lenpos, (uint32_t)(b.len - lenpos - 4));
            pgs_msg_end(&b, st);
        } else {
            pgs_buf_clear(&b);
        }
        break;
    case 11:
        st = pgs_msg_begin(&b, PGS_FE_PASSWORD);
        if (px_scram_client_final(&cl->sc, cl->auth_data, cl->auth_len, &b) == 0)
            pgs_msg_end(&b, st);
        else
            pgs_buf_clear(&b);
        break;
    default:
        break;
    }
    cl->auth_code = 0;
    ph_send(cl, b.data, b.len);
    pgs_buf_free(&b);
}

static void ph_auth_msg(ph_peer *sv, uint32_t code, const void *data, size_t n)
{
    pgs_buf b = PGS_BUF_INIT;
    pgs_msg_auth(&b, code, data, n);
    ph_send(sv, b.data, b.len);
    pgs_buf_free(&b);
}

/* One step of the backend's SCRAM: ask, then answer what the proxy sent last (kept in
 * sv->auth_data by the target's script: the body of its last password message). */
void ph_server_scram(ph_rig *r, ph_peer *sv)
{
    (void)r;
    pgs_buf b = PGS_BUF_INIT;
    pgs_reader rd = pgs_reader_make(sv->auth_data, sv->auth_len);
    const char *mech;
    uint32_t n;
    const uint8_t *data;
    switch (sv->scram_state) {
    case 0:
        ph_auth_msg(sv, 10, "SCRAM-SHA-256\0", 15);
        px_scram_server_init(&sv->scram, &ph.secret);
        sv->scram_state = 1;
        break;
    case 1:
        if (pgs_rd_cstr(&rd, &mech) < 0 || pgs_rd_be32(&rd, &n) < 0 || pgs_rd_bytes(&rd, n, &data) < 0 ||
            px_scram_server_first(&sv->scram, data, n, NULL, &b) < 0)
            break;
        ph_auth_msg(sv, 11, b.data, b.len);
        sv->scram_state = 2;
        break;
    case 2:
        if (px_scram_server_final(&sv->scram, sv->auth_data, sv->auth_len, &b) < 0)
            break;
        ph_auth_msg(sv, 12, b.data, b.len);
        sv->scram_state = 3;
        break;
    default:
        break;
    }
    sv->auth_len = 0;
    pgs_buf_free(&b);
}

uint32_t ph_backend_auth_of(const ph_rig *r)
{
    return ph_backend_auth[r->px - ph.px];
}

const uint8_t *ph_chunk(const uint8_t *data, size_t size, size_t *off, size_t *len)
{
    size_t o = *off;
    size_t n = o + 2 <= size ? ((size_t)data[o] << 8 | data[o + 1]) : 0;
    o = o + 2 <= size ? o + 2 : size;
    if (n > size - o)
        n = size - o;
    *off = o + n;
    *len = n;
    return data + o;
}

/* ---- the worker ---- */

static void ph_on_wakeup(uv_async_t *a)
{
    px_worker_drain_mbox(a->data);
}

static void ph_on_connection(uv_stream_t *s, int status)
{
    if (status == 0)
        px_client_accept(s->data);
}

/* The config's routing state, as px_route_setup() leaves it, into a fresh worker. */
static void ph_route_take(px_worker *w, const px_worker *from)
{
    size_t nn = (size_t)w->px->cfg->nshards * PX_MAX_NODES;
    w->pcache = from->pcache;
    w->lex = from->lex;
    w->rr = from->rr;
    w->wrr = from->wrr;
    w->node_down_until = from->node_down_until;
    w->node_fails = from->node_fails;
    prs_cache_clear(w->pcache);
    memset(w->rr, 0, (size_t)w->px->cfg->nshards * sizeof *w->rr);
    memset(w->wrr, 0, nn * sizeof *w->wrr);
    memset(w->node_down_until, 0, nn * sizeof *w->node_down_until);
    memset(w->node_fails, 0, nn * sizeof *w->node_fails);
    pgs_list_init(&w->primary_waiters);
}

ph_rig *ph_begin(unsigned config, ph_server_fn on_server)
{
    if (!ph.ready)
        ph_init();
    ph_drain_backlogs();
    ph_rig *r = &ph.rig;
    /* Not the whole rig: its peers are 200 KB, and ph_add_peer clears each one it hands out. */
    memset(&r->w, 0, sizeof r->w);
    r->npeers = 0;
    r->client = r->last_server = NULL;
    r->px = &ph.px[config % PH_NCONFIGS];
    r->on_server = on_server;
    snprintf(r->user, sizeof r->user, "app");
    px_worker *w = &r->w;
    r->px->workers = w;
    w->px = r->px;
    w->conf = r->px->conf;
    w->next_pid = 1;
    w->rng = 0x9e3779b97f4a7c15ull;
    pgs_list_init(&w->clients);
    pgs_list_init(&w->pools);
    pgs_list_init(&w->https);
    ph_route_take(w, &ph.route[r->px - ph.px]);
    PH_CHECK(uv_loop_init(&w->loop) == 0);
    PH_CHECK(uv_mutex_init(&w->mbox_lock) == 0);
    PH_CHECK(uv_async_init(&w->loop, &w->wakeup, ph_on_wakeup) == 0);
    w->wakeup.data = w;
    PH_CHECK(uv_tcp_init(&w->loop, &w->listener) == 0);
    w->listener.data = w;
    int lfd = fcntl(ph.client_lfd, F_DUPFD_CLOEXEC, 0);
    PH_CHECK(lfd >= 0);
    PH_CHECK(uv_tcp_open(&w->listener, lfd) == 0);
    PH_CHECK(uv_listen((uv_stream_t *)&w->listener, 128, ph_on_connection) == 0);
    r->client = ph_connect_client(r);
    PH_CHECK(r->client);
    ph_settle(r);
    return r;
}

void ph_tick(ph_rig *r)
{
    px_worker *w = &r->w;
    uint64_t later = uv_now(&w->loop) + 3600u * 1000u;
    pgs_node *it, *tmp;
    pgs_list_each (&w->pools, it, tmp)
        (void)px_pool_tick(pgs_container_of(it, px_pool, node), later);
    px_route_tick(w);
}

void ph_end(ph_rig *r)
{
    px_worker *w = &r->w;
    px_proxy *px = r->px;
    /* The clients leave first, as clients do; then the servers go away under the pools. */
    for (int i = 0; i < r->npeers; i++)
        if (!r->peers[i].is_server)
            ph_close(&r->peers[i]);
    ph_settle(r);
    for (int i = 0; i < r->npeers; i++)
        ph_close(&r->peers[i]);
    ph_settle(r);
    atomic_store(&px->stopping, true);
    uv_walk(&w->loop, px_worker_close_walk, w);
    int rc, spins = 0;
    while ((rc = uv_loop_close(&w->loop)) == UV_EBUSY && spins++ < PH_MAX_SPINS) {
        uv_run(&w->loop, UV_RUN_NOWAIT);
        ph_drain_backlogs(); /* a connect still under way must finish for its handle to close */
    }
    PH_CHECK(rc == 0);
    pgs_node *it, *tmp;
    pgs_list_each (&w->pools, it, tmp) {
        px_pool *pool = pgs_container_of(it, px_pool, node);
        PH_CHECK(pgs_list_empty(&pool->servers) && pgs_list_empty(&pool->waiting));
        pgs_list_remove(&w->pools, it);
        px_pool_free(pool);
    }
    PH_CHECK(pgs_list_empty(&w->clients));
    PH_CHECK(atomic_load(&px->nclients) == 0);
    for (int i = 0; i < px->nuser_counts; i++)
        PH_CHECK(atomic_load(&px->user_counts[i].n) == 0);
    while (w->nfree)
        free(w->free_blocks[--w->nfree]);
    pgs_buf_free(&w->mbox);
    px_htab_free(&w->stmts);
    ph.route[r->px - ph.px].lex = w->lex; /* its buffers may have grown */
    uv_mutex_destroy(&w->mbox_lock);
    for (int i = 0; i < r->npeers; i++) {
        pgs_buf_free(&r->peers[i].in);
        pgs_buf_free(&r->peers[i].out);
    }
    atomic_store(&px->stopping, false);
    ph_drain_backlogs();
}

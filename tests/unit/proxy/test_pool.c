/* Tests for proxy/pool.c: the idle list, the queue of clients waiting for a server, the
 * pool_size limit and the timeouts of px_pool_tick(), on one worker's real libuv loop. No
 * PostgreSQL: fake servers and clients are one end of a socketpair, the test holds the other. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/log.h"
#include "proxy/px.h"

/* Port 1 on loopback: nothing listens there, so every connection is refused. */
static const char test_config[] = "[pgshard]\n"
                                  "workers = 1\n"
                                  "pool_size = 2\n"
                                  "query_wait_timeout = 5\n"
                                  "server_idle_timeout = 60\n"
                                  "server_connect_timeout = 3\n"
                                  "[shard.0]\n"
                                  "primary = 127.0.0.1:1\n"
                                  "[user.app]\n"
                                  "password = app\n";

#define QUERY_WAIT_MS 5000u
#define IDLE_MS 60000u
#define CONNECT_MS 3000u
#define MAX_PEERS 32
#define MAX_SPINS 2000

/* One worker as px_worker_start() sets it up, without its thread, listener, wakeup or tick. */
typedef struct fixture {
    px_proxy px;
    px_worker w;
    px_pool *pool;        /* owned by w.pools */
    int peers[MAX_PEERS]; /* the test's ends of the socketpairs, closed at teardown */
    int npeers;
} fixture;

static int fixture_setup(void **state)
{
    char err[512];
    fixture *fx = calloc(1, sizeof *fx);
    assert_non_null(fx);
    assert_int_equal(cfg_load_string(test_config, "test_pool.ini", &fx->px.cfg, err, sizeof err), 0);
    fx->px.conf = px_conf_build(&fx->px, fx->px.cfg, err, sizeof err);
    assert_non_null(fx->px.conf);
    fx->w.conf = fx->px.conf; /* borrowed: px.conf's reference outlives the worker here */
    fx->px.nworkers = 1;
    fx->px.workers = &fx->w;
    fx->w.px = &fx->px;
    fx->w.id = 0;
    fx->w.next_pid = 1;
    pgs_list_init(&fx->w.clients);
    pgs_list_init(&fx->w.pools);
    assert_int_equal(px_route_setup(&fx->w), 0);
    assert_int_equal(uv_loop_init(&fx->w.loop), 0);
    fx->pool = px_pool_get(&fx->w, px_user_find(fx->px.conf, "app"), "app", 0, 0);
    assert_non_null(fx->pool);
    *state = fx;
    return 0;
}

/* Closes what is left the way a stopping worker does (stopping first, so closing a server
 * does not open a replacement), then requires the loop to close with nothing leaked. */
static int fixture_teardown(void **state)
{
    fixture *fx = *state;
    px_worker *w = &fx->w;
    pgs_node *n, *it, *tmp;
    atomic_store(&fx->px.stopping, true);
    while ((n = pgs_list_first(&w->clients)))
        px_client_close(pgs_container_of(n, px_client, node));
    pgs_list_each (&w->pools, it, tmp) {
        px_pool *pool = pgs_container_of(it, px_pool, node);
        while ((n = pgs_list_first(&pool->servers)))
            px_server_close(pgs_container_of(n, px_server, node), "test teardown");
    }
    int r, spins = 0;
    while ((r = uv_loop_close(&w->loop)) == UV_EBUSY && spins++ < MAX_SPINS)
        uv_run(&w->loop, UV_RUN_NOWAIT);
    assert_int_equal(r, 0);
    pgs_list_each (&w->pools, it, tmp) {
        pgs_list_remove(&w->pools, it);
        px_pool_free(pgs_container_of(it, px_pool, node));
    }
    while (w->nfree)
        free(w->free_blocks[--w->nfree]);
    pgs_buf_free(&w->mbox);
    px_route_teardown(w);
    for (int i = 0; i < fx->npeers; i++)
        close(fx->peers[i]);
    px_conf_release(fx->px.conf); /* the last reference: the pools have dropped theirs */
    free(fx->px.user_counts);
    free(fx);
    return 0;
}

/* Gives c an open TCP handle on one end of a socketpair; returns the other end. */
static int fake_socket(fixture *fx, px_conn *c)
{
    int sv[2];
    assert_true(fx->npeers < MAX_PEERS);
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    assert_int_equal(fcntl(sv[1], F_SETFL, O_NONBLOCK), 0);
    assert_int_equal(uv_tcp_init(&fx->w.loop, &c->tcp), 0);
    assert_int_equal(uv_tcp_open(&c->tcp, sv[0]), 0);
    fx->peers[fx->npeers++] = sv[1];
    return sv[1];
}

/* A server of the pool as login leaves it (SV_IDLE, in pool->servers, not yet in the idle
 * list) or in another state; SV_CONNECTING and SV_LOGIN count in nconnecting. */
static px_server *fake_server(fixture *fx, px_server_state st, int *peer)
{
    px_server *sv = calloc(1, sizeof *sv);
    assert_non_null(sv);
    px_conn_init(&sv->conn, &fx->w, true);
    int fd = fake_socket(fx, &sv->conn);
    if (peer)
        *peer = fd;
    sv->pool = fx->pool;
    sv->state = st;
    sv->since = uv_now(&fx->w.loop);
    sv->tx_status = 'I';
    pgs_list_push_back(&fx->pool->servers, &sv->node);
    if (st == SV_CONNECTING || st == SV_LOGIN)
        fx->pool->nconnecting++;
    return sv;
}

/* A logged-in client of the pool with no server (CL_IDLE), in worker->clients. */
static px_client *fake_client(fixture *fx, int *peer)
{
    px_client *cl = calloc(1, sizeof *cl);
    assert_non_null(cl);
    px_conn_init(&cl->conn, &fx->w, false);
    assert_int_equal(px_xact_init(cl, 1), 0);
    int fd = fake_socket(fx, &cl->conn);
    if (peer)
        *peer = fd;
    cl->pool = fx->pool;
    cl->user = fx->pool->user;
    px_conf_hold(cl->user->conf); /* as client_begin_auth: the client's, dropped when it is freed */
    cl->key_pid = fx->w.next_pid++;
    snprintf(cl->user_name, sizeof cl->user_name, "app");
    snprintf(cl->db_name, sizeof cl->db_name, "app");
    cl->state = CL_IDLE;
    pgs_list_push_back(&fx->w.clients, &cl->node);
    return cl;
}

/* What client.c does when an idle client has a message to send. */
static void client_wants_server(fixture *fx, px_client *cl)
{
    cl->wait_since = uv_now(&fx->w.loop);
    assert_int_equal(px_pool_acquire(fx->pool, cl), 0);
}

static px_client *waiter_at(const px_pool *pool, size_t i)
{
    const pgs_node *n = pool->waiting.head.next;
    assert_true(i < pool->waiting.n);
    while (i--)
        n = n->next;
    return pgs_container_of(n, px_client, wait_node);
}

static px_server *idle_at(const px_pool *pool, size_t i)
{
    const pgs_node *n = pool->idle.head.next;
    assert_true(i < pool->idle.n);
    while (i--)
        n = n->next;
    return pgs_container_of(n, px_server, idle_node);
}

static void assert_linked(const px_client *cl, const px_server *sv)
{
    assert_ptr_equal(px_client_server(cl), sv);
    assert_ptr_equal(px_server_client(sv), cl);
    assert_int_equal(cl->state, CL_ACTIVE);
    assert_int_equal(sv->state, SV_ACTIVE);
    assert_false(pgs_node_linked(&cl->wait_node));
    assert_false(pgs_node_linked(&sv->idle_node));
}

/* Reads what the proxy wrote to a peer until the socket is empty; *eof tells whether the
 * proxy closed its end. */
static size_t peer_read(int fd, uint8_t *buf, size_t cap, bool *eof)
{
    size_t got = 0;
    *eof = false;
    while (got < cap) {
        ssize_t r = read(fd, buf + got, cap - got);
        if (r > 0) {
            got += (size_t)r;
            continue;
        }
        if (r == 0)
            *eof = true;
        else
            assert_true(errno == EAGAIN || errno == EWOULDBLOCK);
        break;
    }
    return got;
}

/* The peer got one FATAL ErrorResponse with the SQLSTATE, then the connection closed. */
static void assert_peer_fatal(int fd, const char *sqlstate)
{
    uint8_t buf[1024];
    bool eof;
    size_t n = peer_read(fd, buf, sizeof buf, &eof);
    assert_true(n > 5);
    assert_int_equal(buf[0], 'E');
    assert_int_equal(n, 1 + pgs_be32(buf + 1));
    pgs_error_fields ef;
    assert_int_equal(pgs_error_parse(buf + 5, n - 5, &ef), 0);
    assert_string_equal(ef.severity, "FATAL");
    assert_string_equal(ef.sqlstate, sqlstate);
    char field[8];
    snprintf(field, sizeof field, "C%s", sqlstate);
    assert_non_null(memmem(buf, n, field, strlen(field)));
    assert_true(eof);
}

/* The proxy closed the peer's connection without writing anything. */
static void assert_peer_closed_silently(int fd)
{
    uint8_t buf[64];
    bool eof;
    assert_int_equal(peer_read(fd, buf, sizeof buf, &eof), 0);
    assert_true(eof);
}

/* Runs loop iterations, sleeping a little between them, until the pool has no server left
 * or MAX_SPINS iterations passed. */
static void run_until_no_server(fixture *fx)
{
    for (int i = 0; i < MAX_SPINS && fx->pool->servers.n > 0; i++) {
        uv_run(&fx->w.loop, UV_RUN_NOWAIT);
        if (fx->pool->servers.n > 0)
            uv_sleep(1);
    }
    uv_run(&fx->w.loop, UV_RUN_NOWAIT); /* close callbacks of what just closed */
}

/* A released server joins the idle list, and the next acquire takes the one released last:
 * its connection is the most recently used, so the least recently used ones can age out. */
static void test_release_then_acquire_is_lifo(void **state)
{
    fixture *fx = *state;
    px_pool *pool = fx->pool;
    px_server *a = fake_server(fx, SV_IDLE, NULL);
    px_server *b = fake_server(fx, SV_IDLE, NULL);
    px_pool_server_ready(pool, a);
    px_pool_server_ready(pool, b);
    assert_int_equal(pool->idle.n, 2);
    assert_ptr_equal(idle_at(pool, 0), b);

    px_client *c1 = fake_client(fx, NULL);
    px_client *c2 = fake_client(fx, NULL);
    client_wants_server(fx, c1);
    assert_linked(c1, b);
    client_wants_server(fx, c2);
    assert_linked(c2, a);
    assert_int_equal(pool->idle.n, 0);
    assert_int_equal(pool->waiting.n, 0);
    assert_int_equal(pool->nconnecting, 0);

    /* Released in the order b, a: a is now the most recently used. */
    px_server_release(b);
    assert_int_equal(b->state, SV_IDLE);
    assert_null(px_server_client(b));
    assert_null(px_client_server(c1));
    assert_int_equal(c1->state, CL_IDLE);
    px_server_release(a);
    assert_int_equal(a->state, SV_IDLE);
    assert_int_equal(c2->state, CL_IDLE);
    assert_int_equal(pool->idle.n, 2);
    assert_ptr_equal(idle_at(pool, 0), a);
    assert_ptr_equal(idle_at(pool, 1), b);

    client_wants_server(fx, c1);
    assert_linked(c1, a);
    assert_int_equal(pool->idle.n, 1);
    assert_ptr_equal(idle_at(pool, 0), b);
    assert_int_equal(pool->servers.n, 2);
    uv_run(&fx->w.loop, UV_RUN_NOWAIT);
}

/* With every server busy, clients queue in arrival order; a server that becomes free goes
 * to the first of them and a client that leaves the queue is skipped. */
static void test_waiters_are_served_in_order(void **state)
{
    fixture *fx = *state;
    px_pool *pool = fx->pool;
    px_server *a = fake_server(fx, SV_ACTIVE, NULL);
    px_server *b = fake_server(fx, SV_ACTIVE, NULL);
    px_client *c1 = fake_client(fx, NULL);
    px_client *c2 = fake_client(fx, NULL);
    px_client *c3 = fake_client(fx, NULL);
    client_wants_server(fx, c1);
    client_wants_server(fx, c2);
    client_wants_server(fx, c3);
    assert_int_equal(pool->waiting.n, 3);
    assert_ptr_equal(waiter_at(pool, 0), c1);
    assert_ptr_equal(waiter_at(pool, 1), c2);
    assert_ptr_equal(waiter_at(pool, 2), c3);
    assert_null(px_client_server(c1));
    assert_int_equal(c1->state, CL_WAIT_SERVER);

    /* A server freed by its client goes to the first waiter, not to the idle list. */
    px_server_release(a);
    assert_linked(c1, a);
    assert_int_equal(pool->idle.n, 0);
    assert_int_equal(pool->waiting.n, 2);
    assert_ptr_equal(waiter_at(pool, 0), c2);

    px_client_set_state(c2, CL_IDLE, NULL); /* leaving the wait state leaves the queue */
    assert_int_equal(pool->waiting.n, 1);
    assert_ptr_equal(waiter_at(pool, 0), c3);
    assert_false(pgs_node_linked(&c2->wait_node));

    px_server_release(b);
    assert_linked(c3, b);
    assert_null(px_client_server(c2));
    assert_int_equal(pool->waiting.n, 0);

    /* With nobody waiting, a released server goes idle. */
    px_server_release(a);
    assert_int_equal(c1->state, CL_IDLE);
    assert_int_equal(pool->idle.n, 1);
    assert_ptr_equal(idle_at(pool, 0), a);
    assert_int_equal(pool->nconnecting, 0);
    uv_run(&fx->w.loop, UV_RUN_NOWAIT);
}

/* A client that closes while queued leaves the queue, the pool's and the worker's lists. */
static void test_closing_waiter_leaves_queue(void **state)
{
    fixture *fx = *state;
    px_pool *pool = fx->pool;
    fake_server(fx, SV_ACTIVE, NULL);
    fake_server(fx, SV_ACTIVE, NULL);
    int p1;
    px_client *c1 = fake_client(fx, &p1);
    px_client *c2 = fake_client(fx, NULL);
    client_wants_server(fx, c1);
    client_wants_server(fx, c2);
    px_client_close(c1);
    assert_int_equal(pool->waiting.n, 1);
    assert_ptr_equal(waiter_at(pool, 0), c2);
    assert_int_equal(fx->w.clients.n, 1);
    uv_run(&fx->w.loop, UV_RUN_NOWAIT);
    assert_peer_closed_silently(p1);
}

/* Clients waiting for the pool's first login are kept apart from those waiting for a
 * server, and can leave that queue too. */
static void test_forget_welcome_waiter(void **state)
{
    fixture *fx = *state;
    px_pool *pool = fx->pool;
    fake_server(fx, SV_LOGIN, NULL);
    fake_server(fx, SV_LOGIN, NULL);
    px_client *c1 = fake_client(fx, NULL);
    px_client *c2 = fake_client(fx, NULL);
    c1->state = c2->state = CL_WAIT_WELCOME;
    c1->wait_since = c2->wait_since = uv_now(&fx->w.loop);
    px_pool_want_welcome(pool, c1);
    px_pool_want_welcome(pool, c2);
    assert_int_equal(pool->welcome_waiting.n, 2);
    assert_int_equal(pool->waiting.n, 0);
    assert_int_equal(pool->nconnecting, 2); /* already connecting: no third */
    assert_int_equal(pool->servers.n, 2);

    px_client_set_state(c1, CL_IDLE, NULL);
    assert_int_equal(pool->welcome_waiting.n, 1);
    assert_ptr_equal(pgs_container_of(pgs_list_first(&pool->welcome_waiting), px_client, wait_node), c2);
    assert_int_equal(pool->waiting.n, 0);
}

/* A pool with pool_size servers opens no more, however many clients wait. */
static void test_full_pool_opens_nothing(void **state)
{
    fixture *fx = *state;
    px_pool *pool = fx->pool;
    fake_server(fx, SV_ACTIVE, NULL);
    fake_server(fx, SV_ACTIVE, NULL);
    assert_int_equal((int)pool->servers.n, fx->px.cfg->pool_size);
    px_client *c1 = fake_client(fx, NULL);
    px_client *c2 = fake_client(fx, NULL);
    client_wants_server(fx, c1);
    client_wants_server(fx, c2);
    assert_int_equal(pool->nconnecting, 0);
    assert_int_equal(pool->servers.n, 2);
    assert_int_equal(pool->waiting.n, 2);
    uv_run(&fx->w.loop, UV_RUN_NOWAIT);
    assert_int_equal(pool->servers.n, 2);
    assert_int_equal(pool->waiting.n, 2);
}

/* With room in the pool, a waiting client makes it open a connection. The server cannot be
 * reached: when the only connection fails, the waiting client is told so and closed. */
static void test_acquire_with_room_connects(void **state)
{
    fixture *fx = *state;
    px_pool *pool = fx->pool;
    int p1;
    px_client *c1 = fake_client(fx, &p1);
    client_wants_server(fx, c1);
    assert_int_equal(pool->nconnecting, 1);
    assert_int_equal(pool->servers.n, 1);
    assert_int_equal(pool->waiting.n, 1);
    px_server *sv = pgs_container_of(pgs_list_first(&pool->servers), px_server, node);
    assert_int_equal(sv->state, SV_CONNECTING);

    run_until_no_server(fx);
    assert_int_equal(pool->servers.n, 0);
    assert_int_equal(pool->nconnecting, 0);
    assert_int_equal(pool->waiting.n, 0);
    assert_int_equal(fx->w.clients.n, 0);
    assert_peer_fatal(p1, "08006");
}

/* As above with two clients waiting, so the pool opens two connections and each one's
 * failure happens while the other is still connecting. Neither failure may open a
 * replacement in a loop: once nothing is left to wait for, both clients get the error. */
static void test_refused_connections_fail_all_waiters(void **state)
{
    fixture *fx = *state;
    px_pool *pool = fx->pool;
    int p1, p2;
    px_client *c1 = fake_client(fx, &p1);
    px_client *c2 = fake_client(fx, &p2);
    client_wants_server(fx, c1);
    client_wants_server(fx, c2);
    assert_int_equal(pool->nconnecting, 2);
    assert_int_equal(pool->servers.n, 2);

    run_until_no_server(fx);
    assert_int_equal(pool->servers.n, 0);
    assert_int_equal(pool->nconnecting, 0);
    assert_int_equal(pool->waiting.n, 0);
    assert_int_equal(fx->w.clients.n, 0);
    assert_peer_fatal(p1, "08006");
    assert_peer_fatal(p2, "08006");
}

/* A client that waited query_wait_timeout for a server gets 53400 and is closed; one that
 * has not waited that long stays queued. */
static void test_tick_expires_waiters(void **state)
{
    fixture *fx = *state;
    px_pool *pool = fx->pool;
    fake_server(fx, SV_ACTIVE, NULL);
    fake_server(fx, SV_ACTIVE, NULL);
    int p1, p2;
    px_client *c1 = fake_client(fx, &p1);
    px_client *c2 = fake_client(fx, &p2);
    client_wants_server(fx, c1);
    client_wants_server(fx, c2);
    c2->wait_since = c1->wait_since + 1000;

    px_pool_tick(pool, c1->wait_since + QUERY_WAIT_MS - 1);
    assert_int_equal(pool->waiting.n, 2);

    px_pool_tick(pool, c1->wait_since + QUERY_WAIT_MS);
    assert_int_equal(pool->waiting.n, 1);
    assert_ptr_equal(waiter_at(pool, 0), c2);
    assert_int_equal(fx->w.clients.n, 1);
    assert_int_equal(pool->servers.n, 2);
    uv_run(&fx->w.loop, UV_RUN_NOWAIT);
    assert_peer_fatal(p1, "53400");

    uint8_t buf[16];
    bool eof;
    assert_int_equal(peer_read(p2, buf, sizeof buf, &eof), 0);
    assert_false(eof);
}

/* Idle servers unused for server_idle_timeout close, least recently used first; younger
 * ones stay in the pool. */
static void test_tick_closes_old_idle_servers(void **state)
{
    fixture *fx = *state;
    px_pool *pool = fx->pool;
    uv_loop_t *loop = &fx->w.loop;
    int pa, pb, pc;
    px_server *a = fake_server(fx, SV_ACTIVE, &pa);
    px_server *b = fake_server(fx, SV_ACTIVE, &pb);
    px_server *c = fake_server(fx, SV_ACTIVE, &pc);
    px_server_release(a);
    uv_sleep(5);
    uv_update_time(loop);
    px_server_release(b);
    uv_sleep(5);
    uv_update_time(loop);
    px_server_release(c);
    assert_true(a->since < b->since && b->since < c->since);
    assert_int_equal(pool->idle.n, 3);

    px_pool_tick(pool, a->since + IDLE_MS - 1);
    assert_int_equal(pool->idle.n, 3);

    px_pool_tick(pool, a->since + IDLE_MS);
    assert_int_equal(a->state, SV_CLOSED);
    assert_int_equal(pool->idle.n, 2);
    assert_int_equal(pool->servers.n, 2);
    assert_ptr_equal(idle_at(pool, 1), b);

    px_pool_tick(pool, b->since + IDLE_MS);
    assert_int_equal(b->state, SV_CLOSED);
    assert_int_equal(c->state, SV_IDLE);
    assert_int_equal(pool->idle.n, 1);
    assert_ptr_equal(idle_at(pool, 0), c);
    assert_int_equal(pool->servers.n, 1);
    assert_int_equal(pool->nconnecting, 0);

    uv_run(loop, UV_RUN_NOWAIT);
    assert_peer_closed_silently(pa);
    assert_peer_closed_silently(pb);
    uint8_t buf[16];
    bool eof;
    assert_int_equal(peer_read(pc, buf, sizeof buf, &eof), 0);
    assert_false(eof);
}

/* A server still logging in after server_connect_timeout is closed; being the pool's last,
 * its waiting client learns the server cannot be reached. */
static void test_tick_closes_slow_logins(void **state)
{
    fixture *fx = *state;
    px_pool *pool = fx->pool;
    int ps, p1;
    px_server *sv = fake_server(fx, SV_LOGIN, &ps);
    px_client *c1 = fake_client(fx, &p1);
    client_wants_server(fx, c1);
    assert_int_equal(pool->nconnecting, 1);
    assert_int_equal(pool->servers.n, 1);

    px_pool_tick(pool, sv->since + CONNECT_MS - 1);
    assert_int_equal(sv->state, SV_LOGIN);

    px_pool_tick(pool, sv->since + CONNECT_MS);
    assert_int_equal(sv->state, SV_CLOSED);
    assert_int_equal(pool->nconnecting, 0);
    assert_int_equal(pool->servers.n, 0);
    assert_int_equal(pool->waiting.n, 0);
    uv_run(&fx->w.loop, UV_RUN_NOWAIT);
    assert_peer_closed_silently(ps);
    assert_peer_fatal(p1, "08006");
}

/* A server that sent no ParameterStatus while logging in leaves the pool's welcome empty; a
 * client with startup parameters is still welcomed, with its key and ReadyForQuery only
 * (this walked a NULL buffer: UBSan's "zero offset to null pointer"; found by fuzz_backend). */
static void test_welcome_without_parameters(void **state)
{
    fixture *fx = *state;
    int p1;
    px_client *c1 = fake_client(fx, &p1);
    c1->state = CL_WAIT_WELCOME;
    assert_int_equal(fx->pool->welcome.len, 0);
    static const char params[] = "application_name\0psql\0";
    assert_int_equal(pgs_buf_append(&c1->startup, params, sizeof params - 1), 0);
    px_client_welcome(c1);
    assert_int_equal(c1->state, CL_IDLE);
    uint8_t buf[64];
    bool eof;
    size_t n = peer_read(p1, buf, sizeof buf, &eof);
    assert_int_equal(n, 13 + 6);
    assert_int_equal(buf[0], 'K');
    assert_int_equal(buf[13], 'Z');
    assert_int_equal(buf[18], 'I');
    assert_false(eof);
}

#define POOL_TEST(f) cmocka_unit_test_setup_teardown(f, fixture_setup, fixture_teardown)

int main(void)
{
    pgs_log_setup(0, PGS_LOG_ERROR);
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        POOL_TEST(test_release_then_acquire_is_lifo),
        POOL_TEST(test_waiters_are_served_in_order),
        POOL_TEST(test_closing_waiter_leaves_queue),
        POOL_TEST(test_forget_welcome_waiter),
        POOL_TEST(test_full_pool_opens_nothing),
        POOL_TEST(test_acquire_with_room_connects),
        POOL_TEST(test_refused_connections_fail_all_waiters),
        POOL_TEST(test_tick_expires_waiters),
        POOL_TEST(test_tick_closes_old_idle_servers),
        POOL_TEST(test_tick_closes_slow_logins),
        POOL_TEST(test_welcome_without_parameters),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

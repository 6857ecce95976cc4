/* The floor of a proxy's CPU (make bench-floor): a TCP forwarder that does nothing but
 * move bytes, one server connection per client, in two I/O styles:
 *   epoll  the style of PgBouncer and of pgshard (libuv): epoll_wait, then read(2) and
 *          send(2) for each ready socket;
 *   uring  io_uring: a recv kept armed on every socket, each received chunk sent on with
 *          IOSQE_CQE_SKIP_SUCCESS, everything submitted and reaped in one io_uring_enter per
 *          turn of the loop.
 * No parsing, no pooling, no routing: what either costs per transaction is the least a proxy
 * of that style can cost. Not part of pgshard; built by scripts/bench.sh with
 * `cc -O2 floor_fwd.c -luring` (liburing-dev). Request-response traffic only: a send that
 * would block is finished with a blocking send (epoll) or MSG_WAITALL (uring).
 * Usage: floor_fwd epoll|uring LISTEN_PORT UPSTREAM_PORT (both on 127.0.0.1). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAXFD 65536
#define BUFSZ 65536

static int peer[MAXFD];
static char *buf[MAXFD];
static unsigned char eof[MAXFD]; /* uring: this side's recv has ended */
static int upstream_port;

static void die(const char *what)
{
    perror(what);
    exit(1);
}

static void nodelay(int fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

static struct sockaddr_in loopback(int port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
}

/* A client accepted: its server connection, and a buffer for each direction. */
static void pair(int c)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = loopback(upstream_port);
    if (s < 0 || c >= MAXFD || s >= MAXFD || connect(s, (struct sockaddr *)&a, sizeof a) < 0)
        die("upstream");
    nodelay(c);
    nodelay(s);
    peer[c] = s;
    peer[s] = c;
    eof[c] = eof[s] = 0;
    if (!(buf[c] = malloc(BUFSZ)) || !(buf[s] = malloc(BUFSZ)))
        die("malloc");
}

static void unpair(int fd)
{
    int p = peer[fd];
    free(buf[fd]);
    free(buf[p]);
    buf[fd] = buf[p] = NULL;
    close(p);
    close(fd);
}

static void send_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EAGAIN) {
            struct pollfd pf = {.fd = fd, .events = POLLOUT};
            poll(&pf, 1, -1);
            continue;
        }
        if (w < 0)
            return; /* the peer is gone: its read sees it */
        p += w;
        n -= (size_t)w;
    }
}

static void run_epoll(int l)
{
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = l}, evs[256];
    if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, l, &ev) < 0)
        die("epoll");
    for (;;) {
        int n = epoll_wait(ep, evs, 256, -1);
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == l) {
                int c = accept4(l, NULL, NULL, SOCK_NONBLOCK);
                if (c < 0)
                    continue;
                pair(c);
                fcntl(peer[c], F_SETFL, O_NONBLOCK);
                struct epoll_event e1 = {.events = EPOLLIN, .data.fd = c};
                struct epoll_event e2 = {.events = EPOLLIN, .data.fd = peer[c]};
                epoll_ctl(ep, EPOLL_CTL_ADD, c, &e1);
                epoll_ctl(ep, EPOLL_CTL_ADD, peer[c], &e2);
                continue;
            }
            if (!buf[fd])
                continue; /* closed earlier in this batch with its peer */
            ssize_t r = read(fd, buf[fd], BUFSZ);
            if (r < 0 && errno == EAGAIN)
                continue;
            if (r <= 0) {
                unpair(fd);
                continue;
            }
            send_all(peer[fd], buf[fd], (size_t)r);
        }
    }
}

enum { OP_ACCEPT = 1, OP_RECV, OP_SEND };

static uint64_t ud(int op, int fd)
{
    return ((uint64_t)op << 32) | (uint32_t)fd;
}

static void arm_recv(struct io_uring *ring, int fd)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
    io_uring_prep_recv(sqe, fd, buf[fd], BUFSZ, 0);
    io_uring_sqe_set_data64(sqe, ud(OP_RECV, fd));
}

/* A recv that ended (EOF or error): the other side is shut down, so that its recv ends too;
 * the second one to end closes both, when no request of the ring refers to either. */
static void recv_ended(int fd)
{
    eof[fd] = 1;
    if (!eof[peer[fd]])
        shutdown(peer[fd], SHUT_RDWR);
    else
        unpair(fd);
}

static void run_uring(int l)
{
    struct io_uring ring;
    struct io_uring_params p = {.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_COOP_TASKRUN};
    if (io_uring_queue_init_params(4096, &ring, &p) < 0) {
        memset(&p, 0, sizeof p); /* kernels before 6.0 */
        if (io_uring_queue_init_params(4096, &ring, &p) < 0)
            die("io_uring_queue_init");
    }
    struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
    io_uring_prep_multishot_accept(sqe, l, NULL, NULL, 0);
    io_uring_sqe_set_data64(sqe, ud(OP_ACCEPT, l));
    for (;;) {
        io_uring_submit_and_wait(&ring, 1);
        struct io_uring_cqe *cqe;
        unsigned head, seen = 0;
        io_uring_for_each_cqe(&ring, head, cqe)
        {
            seen++;
            uint64_t d = io_uring_cqe_get_data64(cqe);
            int op = (int)(d >> 32), fd = (int)(uint32_t)d, res = cqe->res;
            if (op == OP_ACCEPT && res >= 0) {
                pair(res);
                arm_recv(&ring, res);
                arm_recv(&ring, peer[res]);
            } else if (op == OP_RECV && res <= 0) {
                recv_ended(fd);
            } else if (op == OP_RECV) {
                /* In order within the submission: the send runs before the recv that reuses
                 * the buffer is armed, and request-response traffic has the peer's answer
                 * (the next recv) only after the send arrived. */
                struct io_uring_sqe *s = io_uring_get_sqe(&ring);
                io_uring_prep_send(s, peer[fd], buf[fd], (size_t)res, MSG_NOSIGNAL | MSG_WAITALL);
                io_uring_sqe_set_data64(s, ud(OP_SEND, fd));
                s->flags |= IOSQE_CQE_SKIP_SUCCESS | IOSQE_IO_LINK;
                arm_recv(&ring, fd);
            }
        }
        io_uring_cq_advance(&ring, seen);
    }
}

int main(int argc, char **argv)
{
    if (argc != 4 || (strcmp(argv[1], "epoll") != 0 && strcmp(argv[1], "uring") != 0)) {
        fprintf(stderr, "usage: floor_fwd epoll|uring LISTEN_PORT UPSTREAM_PORT\n");
        return 2;
    }
    upstream_port = atoi(argv[3]);
    int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    struct sockaddr_in a = loopback(atoi(argv[2]));
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof a) < 0 || listen(l, 4096) < 0)
        die("listen");
    if (argv[1][0] == 'e')
        run_epoll(l);
    else
        run_uring(l);
    return 0;
}

/* A whole pgshard worker in the fuzzer's process, driven through its real sockets: the real
 * accept path (client.c), the real server connect path (server.c) and everything between,
 * on one libuv loop run by the harness thread. The harness holds the other end of every
 * socket: the client's (a unix stream socket accepted by the worker's listener) and each
 * server's (loopback TCP accepted from a listener the configs point every shard at). No
 * PostgreSQL, no network beyond loopback. Shared by fuzz_frontend.c and fuzz_backend.c. */
#ifndef PGS_FUZZ_PROXY_HARNESS_H
#define PGS_FUZZ_PROXY_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "proxy/px.h"
#include "proxy/scram.h"

#define PH_MAX_PEERS 32
#define PH_PASSWORD "app" /* every user's password in the harness configs */

/* The harness's end of one connection. */
typedef struct ph_peer {
    int fd;          /* -1 once closed */
    bool is_server;  /* accepted from the server listener (else the client) */
    bool hello_done; /* server: the startup packet was read (or it was a cancel) */
    bool eof;        /* the proxy closed its end */
    pgs_buf in;      /* bytes read from the proxy, not yet consumed by the script */
    pgs_buf out;     /* bytes to write to the proxy that the socket did not take yet */
    uint64_t got;    /* bytes ever read from the proxy */
    /* The scripted backend's session (fuzz_frontend). */
    char tx;               /* 'I', 'T' or 'E' */
    bool copy_in;          /* a COPY FROM STDIN runs */
    bool skipping;         /* an extended-protocol error: ignore up to Sync */
    px_scram_server scram; /* the backend's SCRAM exchange (fuzz_backend's auth op) */
    int scram_state;       /* 0 none, 1 asked, 2 server-first sent, 3 done */
    /* The client's view (both targets): the last authentication request and key data. */
    uint32_t auth_code;
    uint8_t auth_data[256];
    size_t auth_len;
    bool have_key;
    uint32_t key_pid, key_secret;
    bool logged_in; /* a ReadyForQuery was seen */
    size_t scan;    /* client: offset in `in` of the next message to look at */
    px_scram_client sc;
} ph_peer;

typedef struct ph_rig ph_rig;
/* Called after each harness pump for every server peer with unconsumed input. */
typedef void (*ph_server_fn)(ph_rig *r, ph_peer *p);

struct ph_rig {
    px_proxy *px; /* one of the harness's prebuilt proxies (a config each) */
    px_worker w;
    ph_peer peers[PH_MAX_PEERS];
    int npeers;
    ph_peer *client;      /* the first client peer */
    ph_peer *last_server; /* the server peer that last received bytes, or NULL */
    ph_server_fn on_server;
    char user[PX_NAME_MAX]; /* the user name of the client's startup packet, for md5 */
};

/* The number of prebuilt configurations; ph_begin's `config` is taken modulo it. */
int ph_nconfigs(void);
/* A fresh worker with the config's proxy and a connected client. Never NULL. */
ph_rig *ph_begin(unsigned config, ph_server_fn on_server);
/* Runs the loop and the harness's sockets until nothing moves any more. */
void ph_settle(ph_rig *r);
/* Queues bytes to a peer (written by the next settle). */
void ph_send(ph_peer *p, const void *data, size_t n);
/* The next chunk of a fuzz input: a big-endian 16-bit length, then that many bytes (fewer at
 * the end). Advances *off past it and returns its start, with its length in *len. */
const uint8_t *ph_chunk(const uint8_t *data, size_t size, size_t *off, size_t *len);
/* Closes a peer: a server with a reset (no TIME_WAIT), a client with a FIN. */
void ph_close(ph_peer *p);
void ph_shutdown_write(ph_peer *p);
/* A second client connection (a CancelRequest, a second session); NULL when full. */
ph_peer *ph_connect_client(ph_rig *r);
/* The newest open server peer that completed its startup, or NULL. */
ph_peer *ph_server(ph_rig *r);
/* Answers the client's last authentication request (md5 or SCRAM) with the right password. */
void ph_client_auth(ph_rig *r, ph_peer *cl);
/* The backend side of SCRAM for a server peer, one step per call (fuzz_backend). */
void ph_server_scram(ph_rig *r, ph_peer *sv);
/* The authentication the config's scripted backend asks of the proxy: 0 trust, 5 md5, 10 SCRAM. */
uint32_t ph_backend_auth_of(const ph_rig *r);
/* Runs the worker's timers' work with the clock far ahead: waits, logins and idle servers
 * time out. */
void ph_tick(ph_rig *r);
/* Closes the client (as a client leaving), then every server (reset), then what is left,
 * and checks that the worker let go of everything. */
void ph_end(ph_rig *r);

/* Message builders for the harness's own bytes. */
void ph_msg(pgs_buf *b, char type, const void *body, size_t n);
void ph_msg_str(pgs_buf *b, char type, const char *s);
/* A StartupMessage; app_name NULL sends none (then no session state is replayed). */
void ph_startup(pgs_buf *b, const char *user, const char *db, const char *app_name);

#endif

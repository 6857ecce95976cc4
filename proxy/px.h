/* The proxy daemon's shared types: the process-wide px_proxy (immutable after start but for
 * atomic counters), workers (one libuv loop each), and the client and server connections
 * with their pools. Everything a worker owns is touched only by its own thread. */
#ifndef PX_H
#define PX_H

#include <locale.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <uv.h>

#include "common/buf.h"
#include "common/list.h"
#include "common/proto.h"
#include "common/sqlstate.h"
#include "config/config.h"
#include "parser/copyopts.h"
#include "parser/parser.h"
#include "parser/scatter.h"
#include "proxy/catalog.h"
#include "proxy/prepared.h"
#include "proxy/recovery.h"
#include "proxy/scram.h"
#include "proxy/session.h"
#include "proxy/shardkey.h"
#include "proxy/stats.h"
#include "proxy/status.h"

typedef struct px_proxy px_proxy;
typedef struct px_worker px_worker;
typedef struct px_conn px_conn;
typedef struct px_client px_client;
typedef struct px_server px_server;
typedef struct px_pool px_pool;
typedef struct px_monitor px_monitor;

#define PX_NAME_MAX 64 /* NAMEDATALEN: longer names are truncated, as PostgreSQL does */
#define PX_BLOCK 16384 /* the size of pooled I/O buffers */
#define PX_SEGMENT_WAIT_MAX                                                                                  \
    (1u << 20)             /* sharded: an undecided segment buffered up to this waits for its Sync */
#define PX_FREE_BLOCKS 128 /* pooled I/O buffers kept per worker */
#define PX_CORK_MAX 64     /* connections one input pass gathers output for (conn.c) */
#define PX_WAIT_READ_MAX (64u << 10) /* input a queued client may buffer while it waits */
/* Replies a server may owe one client before that client is no longer read: each is a
 * 40-byte entry for a message that may be 5 bytes long, so without a cap a pipelining client
 * that does not read grows pgshard by about 3.5 times what the kernel buffers hold. */
#define PX_REPLIES_MAX 16384u

/* What one step of a connection's state machine did (the client, server and admin steps):
 * the input pass runs steps while they return PX_STEP_AGAIN. */
typedef enum px_step {
    PX_STEP_CLOSED = -1, /* the connection was closed: stop, touch nothing of it */
    PX_STEP_WAIT = 0,    /* more input is needed, or it waits for another connection */
    PX_STEP_AGAIN = 1,   /* it made progress: run the next step */
} px_step;

/* What a handler did with one client message it was offered (extended.c, route.c). */
typedef enum px_msg {
    PX_MSG_CLOSED = -1, /* the client (or its server) was closed */
    PX_MSG_PASS = 0,    /* not handled: it goes on as it is */
    PX_MSG_DONE = 1,    /* handled: consumed, answered, rewritten or dropped */
    PX_MSG_WAIT = 2,    /* the client must wait for its server to answer something first */
} px_msg;

/* The step that follows a handled (or closing) message. */
static inline px_step px_step_after(px_msg m)
{
    return m == PX_MSG_CLOSED ? PX_STEP_CLOSED : PX_STEP_AGAIN;
}

/* What becomes of one server message (px_ext_server_message). */
typedef enum px_relay {
    PX_RELAY = 0,         /* relay it to the client */
    PX_RELAY_HIDE = 1,    /* it must not reach the client (hidden, or already sent in another form) */
    PX_RELAY_WHOLE = 2,   /* the whole message is needed first */
    PX_RELAY_DESYNC = -1, /* it answers nothing the server was sent: close the server */
    PX_RELAY_CLOSED = -2, /* the server was closed (and the reason said) */
} px_relay;

/* A user from the config with the secrets derived from its password when the conf was
 * built. Whoever keeps a px_user beyond the current event holds a reference on its conf
 * (px_conf_hold(user->conf)): a client for its whole life, a pool while it logs in with it. */
typedef struct px_user {
    const struct px_conf *conf; /* the conf whose users array holds this entry */
    const cfg_user *cfg;        /* borrowed from conf->cfg */
    bool has_scram;             /* scram holds a usable secret */
    px_scram_secret scram;
    bool has_md5; /* md5 holds "md5"+32 hex */
    char md5[36];
    bool has_plain;    /* cfg->password is a plain password (usable to log in to servers) */
    atomic_int *nconn; /* clients of this user across workers: px_proxy.user_counts */
} px_user;

/* Per-user client counts that outlive reloads: one slot per user name ever configured. */
#define PX_MAX_USER_NAMES 4096
typedef struct px_user_count {
    char name[64];
    atomic_int n;
} px_user_count;

/* What a reload can change: the config and what is derived from it. Immutable once built,
 * and shared by threads through counted references (px_conf_hold, px_conf_release); the
 * last release frees it, on whichever thread lets go last. The holders:
 *   - the main thread: px_proxy.conf (the newest) and px_proxy.start (the startup conf,
 *     whose cfg the monitor, the catalog, the table registry and TLS borrow until exit);
 *   - each worker: px_worker.conf, swapped by a job on its own thread (the job carries the
 *     reference the main thread took for it);
 *   - each client that found its user: cl->user points into the conf it logged in with;
 *   - each pool: pool->user, which moves to a newer conf's entry when one is seen.
 * Nothing else keeps a pointer into a conf past the event that read it: the admin and
 * metrics snapshots copy names, connect() copies the address. So a reload costs memory
 * only while some client that logged in before it, or a pool it logs in for, is alive. */
typedef struct px_conf {
    cfg_config *cfg; /* owned */
    px_user *users;  /* owned, cfg->nusers entries */
    int nshards;
    struct sockaddr_storage *nodes; /* owned: nshards x PX_MAX_NODES addresses, resolved when
                                       loaded: [s * PX_MAX_NODES + 0] the primary, then replicas */
    uint64_t gen;                   /* 1 for the startup conf, one more at each reload */
    atomic_int refs;                /* references held; the conf is freed when it drops to 0 */
} px_conf;

struct px_proxy {
    cfg_config *cfg;            /* the startup config: listeners, workers, TLS */
    px_conf *conf;              /* a reference: the newest conf (main thread) */
    const px_conf *start;       /* a reference: the startup conf, cfg's owner */
    px_user_count *user_counts; /* owned, PX_MAX_USER_NAMES; names set by the main thread */
    int nuser_counts;
    int nworkers;
    px_worker *workers;    /* owned, nworkers entries */
    atomic_int nclients;   /* across workers, for max_client_conn */
    void *tls_accept_ctx;  /* owned SSL_CTX for clients, or NULL */
    void *tls_connect_ctx; /* owned SSL_CTX towards servers, or NULL */
    atomic_bool stopping;
    atomic_bool draining; /* SIGTERM: no new clients, finish transactions */
    atomic_bool paused;   /* admin PAUSE: no server is given to a client */
    px_global_stats gs;
    px_monitor *mon;         /* owned: node health and lag (monitor.c) */
    px_recovery *rec;        /* owned: in-doubt 2PC recovery (recovery.c); NULL without two_phase_commit */
    px_catalog *cat;         /* owned: shard map and tables (catalog.c); never NULL while workers run */
    bool has_replicas;       /* some shard has replicas: reads are routed */
    bool sharded;            /* several shards or listed tables: statements are routed by key */
    uint64_t instance_id;    /* random, at start: names this process's two-phase transactions */
    atomic_ullong twopc_seq; /* the next two-phase transaction's number */
};

/* How a connection's bytes meet the socket: plain or TLS (tls.c). */
typedef struct px_transport {
    const char *name;
    void (*alloc)(px_conn *c, uv_buf_t *buf);         /* where the next socket read goes */
    int (*received)(px_conn *c, size_t n);            /* n bytes read: plaintext into c->in;
                                                         1 = handshake just done, -1 = fail */
    int (*send)(px_conn *c, const void *p, size_t n); /* plaintext out */
    void (*release)(px_conn *c);
    const char *(*failure)(const px_conn *c); /* after received() failed: why, when there is
                                                 more to say than "connection lost"; or NULL */
} px_transport;
extern const px_transport px_plain_transport;

/* One direction-neutral TCP connection: what was read and not yet processed, and what
 * waits to be written. Clients and servers embed one as their first member. */
struct px_conn {
    uv_tcp_t tcp; /* first: the handle's address is the conn's */
    px_worker *w;
    const px_transport *tr;
    void *tls; /* owned by the transport */
    bool is_server;
    bool reading;
    bool writing; /* wreq in flight over wq */
    bool closing; /* uv_close called or about to be */
    bool close_after_flush;
    bool processing; /* guards against re-entering the input loop */
    bool corked;     /* out holds this input pass's bytes, written when it ends (conn.c) */
    pgs_buf in;      /* received bytes; in_pos of them processed */
    size_t in_pos;
    size_t fwd_mark;    /* start of the processed bytes not yet forwarded to the peer */
    uint32_t pass_left; /* bytes of a message being passed through without inspection */
    pgs_buf out;        /* queued, not yet handed to libuv */
    pgs_buf wq;         /* handed to libuv, in flight */
    uv_write_t wreq;
};

typedef enum px_client_state {
    CL_STARTUP,      /* reading SSLRequest / StartupMessage / CancelRequest */
    CL_AUTH,         /* exchanging password messages */
    CL_WAIT_WELCOME, /* authenticated; waiting for the pool to learn server parameters */
    CL_IDLE,         /* logged in, no server */
    CL_WAIT_SERVER,  /* has a message to send, queued for a server connection */
    CL_ACTIVE,       /* linked to a server */
    CL_ADMIN,        /* logged in to the admin console (database "pgshard") */
    CL_FANOUT,       /* a cross-shard read runs (fanout.c); its later messages wait */
    CL_CLOSED,
} px_client_state;

/* Why a client's request is answered with an error instead of being run. */
enum { PX_REFUSE_NONE, PX_REFUSE_RATE, PX_REFUSE_NO_PRIMARY, PX_REFUSE_NO_REPLICA, PX_REFUSE_SHARD };

typedef enum px_auth_step { AUTH_NONE, AUTH_MD5, AUTH_SCRAM_FIRST, AUTH_SCRAM_FINAL } px_auth_step;

/* One server that a client's transaction holds on one shard (xact.c). The server points
 * back at it (px_server.link); what the server relays goes to the link's destination. */
typedef struct px_link {
    px_client *cl;         /* the client whose transaction holds it */
    px_server *sv;         /* the server, or NULL when nothing is linked */
    int shard;             /* the shard routing chose */
    bool fresh;            /* linked and nothing sent yet: the session state is replayed first */
    bool write;            /* the transaction may write: read-your-writes starts at its end */
    bool replica;          /* routed to a replica (a read) */
    bool sent_any;         /* a reply byte went to the client since the server was linked */
    uint64_t start_ns;     /* uv_hrtime() of the running transaction's first message; 0 = none */
    struct px_fanout *fan; /* the cross-shard read this link serves, or NULL */
    bool parked;           /* a server of a transaction over several shards, idle in it while
                              the client's statements run on another shard (xact.c) */
} px_link;

/* What a client remembers about one shard between transactions. */
typedef struct px_shard_memo {
    uint64_t ryw_write_ns; /* end of its last write transaction there not yet bounded by a sample */
    uint64_t ryw_lsn;      /* its reads there need a replica replayed at least this far */
    uint32_t avoid;        /* nodes (bit per index) that failed its read there: try others */
} px_shard_memo;

/* A client's transaction: the server links it holds, one per shard it touches. A
 * one-shard transaction, the common case, uses `one` and allocates nothing; links point
 * at `one` until a fan-out (Sharding II) gives it an array. */
typedef struct px_xact {
    px_link one;
    px_link *links;        /* &one, or an owned array */
    pgs_buf retry;         /* while armed (px_retry_armed): a pooled block holding the read to send
                              again if the replica fails before answering */
    px_shard_memo *memo;   /* owned: one per shard of the conf it logged in with; NULL before login */
    pgs_buf begin;         /* PX_DEFER_OPEN: the client's BEGIN text, sent ahead of its first statement
                              (kept to the transaction's end with two-phase commit, for its other shards) */
    pgs_buf unnamed;       /* sharded: the body of the client's last unnamed Parse, for its Binds in
                              later segments; a simple Query drops it, as it drops the statement */
    struct px_fanout *fan; /* owned: the cross-shard read running (CL_FANOUT), or NULL */
    int64_t route_bucket;  /* the bucket of the keys its statements were routed by: PX_MOVE_NO_KEY
                              while none named a sharded table, -1 when not one known bucket */
    /* A transaction over several shards (two_phase_commit = on): the servers of the shards
     * it ran on before the current one stay linked, idle in it, until its COMMIT or
     * ROLLBACK ends it on all of them at once (fanout.c). */
    px_link *parked;      /* owned: one per shard of the conf, sv == NULL where none; or NULL */
    int park_to;          /* PX_LINKED_PARK: the shard the statement goes to */
    uint16_t nlinks;      /* links in use (0 when the client holds no server) */
    uint16_t nparked;     /* links in parked[] holding a server */
    bool multi_lost;      /* a parked server was lost: the transaction can only roll back */
    bool paused;          /* waits for its server to answer an earlier segment's Parse */
    bool want_read;       /* the message being routed may run on a replica */
    bool retry_sealed;    /* the kept read's last message (Query or Sync) has gone out */
    uint8_t deferred;     /* PX_DEFER_*: a BEGIN answered by pgshard, waiting for a shard */
    bool segment_checked; /* the extended-protocol segment being sent was routed whole */
    bool begin_read_only; /* that BEGIN said READ ONLY: its statements may run on a replica */
    bool unnamed_known;   /* unnamed holds that Parse (it was not too long to keep) */
    bool move_wait;       /* counted in its worker's move.blockers: a freeze waits for its end */
    bool lease_lapsed;    /* the catalog lease had lapsed when routing of the statement began */
} px_xact;

/* A BEGIN with no shard yet: pgshard answers it and sends it to the shard that the first
 * statement names; until then the client is in a transaction that pgshard keeps. */
enum { PX_DEFER_NONE, PX_DEFER_OPEN, PX_DEFER_FAILED };

struct px_client {
    px_conn conn; /* first */
    px_client_state state;
    pgs_node node;                /* in worker->clients */
    pgs_node wait_node;           /* in wait_list */
    pgs_list *wait_list;          /* CL_WAIT_*: the queue it is in (a pool's waiting or welcome_waiting,
                                     or the worker's primary_waiters); NULL otherwise. Only
                                     px_client_set_state changes it */
    px_pool *pool;                /* the pool it logged in through (welcome, rate limit, stats) */
    px_xact x;                    /* its transaction: the servers it holds and routing memory */
    const px_user *user;          /* holds a reference on user->conf once set (at login) */
    uint32_t key_pid, key_secret; /* the BackendKeyData this client got from us */
    uint64_t accepted_at;         /* loop time of accept() */
    uint64_t wait_since;          /* loop time it started waiting (welcome or server) */
    uint64_t wait_start_ns;       /* uv_hrtime() when it queued for a server; 0 if not */
    px_auth_step auth;
    bool counted;      /* holds a slot of px_proxy.nclients */
    bool user_counted; /* holds a slot of user->nconn */
    bool over_limit;   /* refused by max_client_conn: answer the startup with 53300 */
    bool ssl_asked;
    bool gss_asked;
    bool welcome_owed;     /* session pooling: welcomed once its server is linked, with its pid */
    bool admin_busy;       /* an admin command waits for a snapshot */
    bool rate_skip;        /* refused by max_qps: drop messages up to Sync, then answer */
    bool admin_show_stats; /* that command is SHOW STATS (else SHOW POOLS) */
    uint8_t refuse;        /* PX_REFUSE_*: why its messages are dropped up to Sync, then answered */
    char *refuse_msg;      /* owned: PX_REFUSE_SHARD's message, "SQLSTATE message" */
    uint64_t hold_since;   /* loop time a freezing move first held its statement; 0 when not held */
    int64_t hold_move;     /* the move that holds it (its id), while in the worker's move.held */
    int hold_target;       /* that move's target shard */
    char *tenant;          /* owned: SET pgshard.tenant, or NULL */
    int pinned_shard;      /* SET pgshard.shard, or -1 */
    uint8_t target;        /* SET pgshard.target: prs_target */
    uint32_t max_lag_ms;   /* SET pgshard.max_lag_ms; UINT32_MAX = the config's */
    px_htab stmts;         /* the client's statement names (transaction pooling) */
    px_session *sess;      /* owned, NULL until the client has session state */
    uint8_t restore;       /* a RESET the server ran (px_sess_kind), whose startup values */
    uint64_t restore_key;  /* the proxy sets again after it; SESS_NONE when none */
    pgs_buf startup;       /* startup parameters (name\0value\0...), until the welcome is sent */
    char user_name[PX_NAME_MAX];
    char db_name[PX_NAME_MAX];
    union {
        uint8_t md5_salt[4];
        px_scram_server *scram; /* owned while the SCRAM exchange runs */
    } a;
};

typedef enum px_server_state {
    SV_CONNECTING, /* TCP connect in progress */
    SV_TLS,        /* SSLRequest sent: waiting for 'S'/'N', then for the TLS handshake */
    SV_LOGIN,      /* startup sent, authenticating and reading parameters */
    SV_IDLE,       /* in the pool's idle list */
    SV_ACTIVE,     /* linked to a client */
    SV_RESET,      /* running the reset query before going idle */
    SV_CLOSED,
} px_server_state;

struct px_server {
    px_conn conn; /* first */
    px_server_state state;
    pgs_node node;      /* in pool->servers */
    pgs_node idle_node; /* in pool->idle */
    px_pool *pool;
    px_link *link; /* the client transaction's link that holds it, or NULL */
    uv_connect_t connect_req;
    uint64_t since;        /* loop time of the last state change */
    px_replies replies;    /* what the server owes for what was sent to it, in order */
    uint32_t segment;      /* Syncs and Queries sent: numbers the pipeline segments */
    bool skipping;         /* after an error, the server ignores messages until Sync */
    bool ext_open;         /* extended-protocol messages sent since the last Sync */
    px_htab stmts;         /* statement hashes prepared on this server, with LRU ticks */
    uint64_t state_sig;    /* signature of the session settings it has; 0 = none */
    bool stmts_doubtful;   /* a DISCARD/DEALLOCATE ALL is running: if it fails... */
    bool close_on_release; /* ...its prepared statements are unknown: close, do not reuse */
    uint64_t iso_gen;      /* px_status.iso_gen when it logged in */
    bool saw_error;        /* an ErrorResponse since the last ReadyForQuery */
    uint8_t pins;          /* PRS_PIN_*: session state its client left on it (pin.c) */
    pgs_list cancels;      /* cancels in flight for it: it is not reused before they end */
    bool dirty;            /* it held such state since its last DISCARD ALL: cleaned on release */
    char tx_status;        /* of the last ReadyForQuery: 'I', 'T' or 'E' */
    uint32_t be_pid, be_secret;
    px_scram_client *scram; /* owned while logging in */
    pgs_buf login_params;   /* ParameterStatus messages seen while logging in */
};

/* Where routing sends a transaction (route.c decides, px_xact_begin acts). */
typedef enum px_route_verdict {
    PX_ROUTE_GO,           /* to `node` of `shard` */
    PX_ROUTE_WAIT_PRIMARY, /* the shard has no usable primary yet: wait for one */
    PX_ROUTE_REFUSE,       /* answer with an error instead: `refuse` says why */
} px_route_verdict;

typedef struct px_route {
    uint8_t verdict; /* px_route_verdict */
    uint8_t refuse;  /* PX_REFUSE_* */
    bool write;      /* the transaction may write (read-your-writes starts at its end) */
    bool replica;    /* node is a replica: the role */
    int shard;
    int node; /* index among the shard's nodes: px_conf_node() */
} px_route;

/* xact.c: a client's transaction and its links. */
/* Acts on a routing decision: links a server from the node's pool or queues the client
 * for one, queues it among the primary's waiters, or records the refusal. Returns 0
 * (linked or queued), 1 (refused: cl->refuse says why) or -1 (out of memory). */
int px_xact_begin(px_client *cl, const px_route *d);
/* Session pooling without sharding: takes the primary's server at login, so that the
 * client's BackendKeyData can carry the server's own pid. Returns as px_xact_begin; 1 also
 * when the primary is not ready now (the client is then welcomed without a server). */
int px_route_session_server(px_client *cl);
int px_xact_init(px_client *cl, int nshards);
void px_xact_free(px_client *cl);
/* Records where routing sends the transaction, before a server is there to link. */
void px_xact_plan(px_client *cl, int shard, bool write, bool replica);
/* Links a server from the pool to the planned link. */
px_link *px_xact_attach(px_client *cl, px_server *sv);
/* Unlinks the client's server (both directions); returns it, or NULL when none. */
px_server *px_xact_detach(px_client *cl);
/* Parks the transaction's server (its link's shard) among the transaction's other servers;
 * the client then holds no current link. Returns 0 or -1 (out of memory). */
int px_xact_park(px_client *cl);
/* Parks sv, a server of the transaction's shard s that no link holds now. Returns 0, or -1
 * (out of memory; or s has a parked server already, which never happens). */
int px_xact_park_server(px_client *cl, int s, px_server *sv, bool write);
/* Takes the server parked on shard s off the parked slots, for the caller to link; NULL
 * when none is parked there. */
px_server *px_xact_take_parked(px_client *cl, int s);
/* Makes the server parked on shard the current link again (its session state is replayed
 * if it lacks it). Returns it, or NULL when none is parked there. */
px_server *px_xact_unpark(px_client *cl, int shard);
/* A parked server closed: the transaction can no longer commit. */
void px_xact_parked_lost(px_link *l);
/* Closes every parked server, which rolls their transactions back (client gone). */
void px_xact_drop_parked(px_client *cl);
/* The client's memory of a shard (read-your-writes, nodes to avoid). */
static inline px_shard_memo *px_xact_memo(px_client *cl, int shard)
{
    return &cl->x.memo[shard];
}
/* The link of a one-shard transaction, or NULL while the client holds no server. */
static inline px_link *px_xact_link(px_client *cl)
{
    return cl->x.nlinks ? &cl->x.links[0] : NULL;
}
static inline px_server *px_client_server(const px_client *cl)
{
    return cl->x.nlinks ? cl->x.links[0].sv : NULL;
}
static inline px_client *px_server_client(const px_server *sv)
{
    return sv->link ? sv->link->cl : NULL;
}
/* Sends the client's session state (its SETs) to a server that does not have it, ahead of
 * the client's first message there; the reply is hidden. Returns whether it sent any. */
bool px_client_replay_session(px_client *cl, px_server *sv);
/* fanout.c: a cross-shard read over every shard, merged (merge.c). */
typedef struct px_fanout px_fanout;
/* An extended-protocol segment that runs on every shard, as found in the client's input
 * (pointers into it). */
typedef struct px_fanout_ext {
    size_t seg_len;         /* its bytes, up to and with its Sync */
    const char *parse_name; /* the name its Parse defines ("" = unnamed), or NULL without a Parse */
    const uint8_t *stmt;    /* the Parse body (after the name) of the statement it binds */
    size_t stmt_len;
    const uint8_t *bind; /* the Bind body after its portal and statement names */
    size_t bind_len;
    const uint8_t *bind_msg; /* the whole Bind body (names included) */
    size_t bind_msg_len;
    bool describe; /* the client asked for the portal's RowDescription */
} px_fanout_ext;
/* What a statement on every shard does. */
enum {
    PX_FAN_READ,     /* a read planned by prs_scatter_plan; the rows are merged (merge.c) */
    PX_FAN_DDL,      /* sent as it is to each shard in turn, stopping at the first error */
    PX_FAN_COPY_OUT, /* COPY table TO STDOUT: every shard's data, one stream */
    PX_FAN_COPY_IN,  /* COPY table (...) FROM STDIN: each row to its key's shard */
    PX_FAN_WRITE,    /* a write on every shard in one distributed transaction (two-phase
                        commit when two_phase_commit = on) */
};

typedef struct px_fanout_req {
    uint8_t mode;                   /* PX_FAN_* */
    size_t consume;                 /* bytes of the client's input it answers */
    const px_fanout_ext *ext;       /* the extended-protocol segment, or NULL for a Query */
    px_route *routes;               /* each shard's node */
    prs_scatter *plan;              /* taken (*plan is emptied): the plan, or plan->sql the statement */
    const pgs_buf *bind;            /* borrowed, or NULL: READ with LIMIT $n/OFFSET $m, the shards'
                                       Bind after its names (proxy/limitbind.c), else the client's */
    prs_copy_opts *copy;            /* taken (set to NULL) in the COPY modes: the statement's options */
    int key_index;                  /* COPY_IN: the key's position among the COPY's columns */
    uint32_t key_oid;               /* COPY modes: the key column's type */
    struct prs_insert_split *split; /* taken (set to NULL): WRITE of an INSERT split per shard */
    bool all_rows;                  /* WRITE: every shard's RETURNING rows and counts (sharded
                                       table); else shard 0's (an omnisharded table, the same everywhere) */
    bool ddl;                       /* WRITE: DDL in one distributed transaction; shard 0's
                                       answers (CommandComplete, NOTICE) are the client's */
    bool in_txn;                    /* READ or WRITE inside the client's transaction (two-phase
                                       commit): on its servers, which stay in it afterwards */
} px_fanout_req;

/* Starts what req describes, which begins the client's input. Returns 0 (running or queued
 * for servers) or -1 (out of memory). */
int px_fanout_start(px_client *cl, px_fanout_req *req);
/* A client in CL_FANOUT: its COPY data, split to the shards (other input waits). */
px_step px_fanout_client_step(px_client *cl);
/* A fan-out's server sent what it was given: a COPY's client may be read again. */
void px_fanout_server_drained(px_server *sv);
bool px_fanout_client_reading(const px_client *cl);
int px_fanout_acquire(px_client *cl);
/* The pool gives the fan-out its next server (instead of px_client_link's usual work). */
void px_fanout_linked(px_client *cl, px_server *sv);
px_step px_fanout_server_step(px_server *sv);
bool px_fanout_server_reading(const px_server *sv);
void px_fanout_server_lost(px_server *sv, const char *why);
void px_fanout_client_drained(px_client *cl);
void px_fanout_abort(px_client *cl);
void px_fanout_give_up(px_client *cl, const char *sqlstate, const char *msg);
/* Ends a transaction over several shards on all of them: with COMMIT (two-phase) when
 * commit is set and nothing in it failed, else with ROLLBACK. consume: the bytes of the
 * client's input it answers; head (taken): the extended protocol's replies that come before
 * the CommandComplete, or empty. The client's current and parked servers go to the fan-out.
 * Returns 0 or -1 (out of memory). */
int px_fanout_xact_end(px_client *cl, bool commit, size_t consume, pgs_buf *head);
void px_fanout_cancel(px_client *cl);
void px_fanout_free(px_client *cl);
/* The pool of the client's user and database on a node of a shard (xact.c). */
px_pool *px_xact_pool(px_client *cl, int shard, int node);

/* Where a server's replies go: its client, as they are. A fan-out merges instead. */
static inline px_conn *px_link_dest(const px_link *l)
{
    return &l->cl->conn;
}

/* What a pool knows of its database's collation, for merging text across shards. */
enum { PX_COLL_UNKNOWN = 0, PX_COLL_BYTES, PX_COLL_LIBC, PX_COLL_ICU };
#define PX_COLL_REFRESH_MS 30000 /* collations come and go with DDL: read them again */

/* Server connections for one (user, database) in one worker. */
struct px_pool {
    pgs_node node; /* in worker->pools */
    px_worker *w;
    const px_user *user; /* holds a reference on user->conf: set by px_pool_set_user */
    char db_name[PX_NAME_MAX];
    int shard, nodeix;        /* the node its servers connect to: index into px_conf.nodes */
    px_pool **sibling;        /* owned, nshards x PX_MAX_NODES: this user and database on
                                 each node of every shard, found once; cleared when that
                                 pool is freed */
    pgs_list servers;         /* every server of this pool */
    pgs_list idle;            /* SV_IDLE servers, most recently used first */
    pgs_list waiting;         /* CL_WAIT_SERVER clients, first come first served */
    pgs_list welcome_waiting; /* CL_WAIT_WELCOME clients */
    int nconnecting;          /* servers in SV_CONNECTING, SV_TLS or SV_LOGIN */
    uint64_t retry_at;        /* loop time before which no new server login is tried */
    uint64_t unused_since;    /* loop time it was first seen unused; 0 = in use */
    bool welcome_ready;
    pgs_buf welcome;    /* ParameterStatus messages every new client receives */
    uint8_t coll_state; /* PX_COLL_*: the database's collation, learnt by the first fan-out */
    locale_t coll;      /* owned: PX_COLL_LIBC's locale */
    char *coll_map;     /* owned: the database's libc collations, "name=locale,..." (NULL: none) */
    uint64_t coll_at;   /* loop time the collations were read; read again after PX_COLL_REFRESH_MS */
    int nclients;       /* logged-in clients of this pool */
    double tokens;      /* max_qps token bucket of this worker's share */
    uint64_t tokens_at; /* uv_hrtime() of the last refill */
    px_pool_stats st;
};

/* Work one thread hands to a worker through its mailbox; runs on that worker's loop. */
typedef struct px_job {
    void (*fn)(px_worker *w, const struct px_job *job);
    void *arg; /* the job's, freed by fn when it owns memory */
    uint32_t a, b;
} px_job;

/* How many moves a worker counts its held clients for, each in one word: the move's id
 * above PX_MOVE_HELD_BITS, the count below. More moves than that freezing at once are
 * counted in the total only. */
#define PX_MOVE_SLOTS 8
#define PX_MOVE_HELD_BITS 24
#define PX_MOVE_NO_KEY (-2) /* px_xact.route_bucket: no statement named a sharded table */

/* A worker's part in moves (move.c): the clients a freeze holds, and the open transactions
 * it waits for before this worker lets the catalog thread acknowledge. */
typedef struct px_move_worker {
    pgs_list held;     /* CL_WAIT_SERVER clients held for a frozen key, by wait_node */
    uv_timer_t timer;  /* fires at the first held client's freeze_hold_ms */
    bool timer_on;     /* timer was initialised (closed with the loop's other handles) */
    uint64_t serial;   /* sm_map_serial of the map it last looked at */
    bool freezing;     /* that map freezes keys */
    uint32_t blockers; /* clients with x.move_wait */
    atomic_uint nheld; /* held.n, for other threads (metrics, SHOW MIGRATIONS) */
    _Atomic uint64_t held_by[PX_MOVE_SLOTS]; /* id << PX_MOVE_HELD_BITS | count; 0 = unused */
    _Atomic uint32_t *hits; /* px_catalog_hits: statements routed by a key, per bucket; or NULL */
    uint32_t nhits;
} px_move_worker;

struct px_worker {
    px_proxy *px;
    const px_conf *conf; /* a reference: the conf this worker runs with; only its own
                            thread reads or swaps it while the worker runs */
    int id;
    uint32_t omni_next; /* the shard the next read of omnisharded tables goes to, in turn */
    uv_thread_t thread;
    uv_loop_t loop;
    int listen_fd; /* bound by main(), adopted by the worker's loop */
    uv_tcp_t listener;
    uv_tcp_t refuse;     /* a connection refused for want of memory, while it closes */
    bool refusing;       /* refuse is in use */
    bool refuse_pending; /* another connection waits in the listener until it is free */
    uv_async_t wakeup;   /* stop request or cancel requests from other workers */
    uv_timer_t tick;
    uv_mutex_t mbox_lock; /* guards mbox: the only lock, off the query path */
    pgs_buf mbox;         /* px_job entries posted by other threads */
    bool mbox_closed;     /* under mbox_lock: the wakeup handle is closing */
    uint32_t ticks;
    uv_tcp_t metrics; /* worker 0 only: the /metrics listener */
    bool metrics_on;
    pgs_list https; /* open /metrics connections */
    pgs_list clients;
    pgs_list pools;
    px_htab stmts;      /* registry of px_stmt by hash, shared by this worker's clients */
    uint64_t stmt_tick; /* LRU clock of server statement sets */
    uint32_t next_pid;  /* counter behind the cancel keys' pids (px_worker_key_pid) */
    uint64_t rng;       /* xorshift state for jitter: rand() is not for threads */
    int nfree;
    void *free_blocks[PX_FREE_BLOCKS];
    uint8_t *tls_scratch;      /* owned: raw TLS bytes of one read */
    const px_status *status;   /* the monitor's snapshot this worker reads (hazard slot id) */
    prs_cache *pcache;         /* owned: parse cache of this worker's queries */
    prs_lexed lex;             /* owned buffers: the lexer's output for the query being routed */
    pgs_list primary_waiters;  /* clients waiting for a primary (failover), by wait_node */
    uint32_t *rr;              /* owned, per shard: round-robin position */
    int *wrr;                  /* owned, per shard and node: smooth weighted round-robin state */
    uint64_t *node_down_until; /* owned, per shard and node: loop time a failed node rests */
    uint32_t *node_fails;      /* owned, per shard and node: consecutive failures seen here */
    px_move_worker move;

    bool corking; /* an input pass runs: its sends are gathered per connection (conn.c) */
    int ncorked;
    px_conn *corked[PX_CORK_MAX]; /* connections with gathered bytes, in order of first send */
};

/* worker.c */
int px_worker_start(px_worker *w);
void px_worker_request_stop(px_worker *w);
void px_worker_request_drain(px_worker *w);
void px_worker_post_conf(px_worker *w, const px_conf *conf);
void px_worker_destroy(px_worker *w);
/* uv_walk callback (arg: the worker) closing every handle of a stopping worker's loop:
 * clients and servers through their owners, cancels left to finish, the rest directly. */
void px_worker_close_walk(uv_handle_t *h, void *arg);
/* Takes the listener's pending connection when no client can be made for it (out of
 * memory): tells it 53200 and closes it, so that the listener keeps accepting. */
void px_worker_refuse(px_worker *w);
/* Runs every job posted to the worker's mailbox so far, on the worker's thread. */
void px_worker_drain_mbox(px_worker *w);
void px_worker_post_cancel(px_worker *w, uint32_t pid, uint32_t secret);
int px_worker_post(px_worker *w, const px_job *job);
void px_buf_take(px_worker *w, pgs_buf *b);
void px_buf_give(px_worker *w, pgs_buf *b);
/* Cheap per-worker randomness for jitter (not for secrets: those use RAND_bytes). */
uint32_t px_worker_rand(px_worker *w);
/* The pid of a cancel key: the worker in bits 23-30 (up to 256 workers), a counter below,
 * never 0 and never negative as a signed int32, which is how drivers hold it; distinct
 * across workers. (Session pooling gives a client its server's pid instead.) */
#define PX_PID_WORKER_SHIFT 23
uint32_t px_worker_key_pid(px_worker *w);

/* tls.c */
int px_tls_setup(px_proxy *px, char *err, size_t errlen);
void px_tls_teardown(px_proxy *px);
int px_tls_start(px_conn *c, void *ctx, bool accept);
int px_tls_connect(px_conn *c, const cfg_node *node);
/* Whether the CA file of server_tls = verify-ca/verify-full can be used: 0, or -1 with
 * "FILE: cannot use server_tls_ca_file PATH: why" in err. */
int px_tls_check_server_ca(const cfg_config *cfg, char *err, size_t errlen);
bool px_conn_is_tls(const px_conn *c);

/* The unprocessed input (NULL when the connection holds no buffer: never NULL + 0). */
static inline const uint8_t *px_conn_at(const px_conn *c)
{
    return c->in.data ? c->in.data + c->in_pos : NULL;
}

/* conn.c */
int px_conn_raw_send(px_conn *c, const void *p, size_t n);
void px_conn_init(px_conn *c, px_worker *w, bool is_server);
int px_conn_send(px_conn *c, const void *p, size_t n);
int px_conn_send_buf(px_conn *c, const pgs_buf *b);
void px_conn_flush_forward(px_conn *from, px_conn *to);
void px_conn_set_reading(px_conn *c, bool on);
void px_conn_after_input(px_conn *c);
void px_conn_close(px_conn *c);
bool px_conn_idle_io(const px_conn *c);
int px_conn_uncork(px_conn *c);

/* client.c */
void px_client_accept(px_worker *w);
/* The one place a client's state changes. queue: the wait queue it joins (CL_WAIT_WELCOME,
 * CL_WAIT_SERVER), NULL for other states; it leaves the one it was in first. */
void px_client_set_state(px_client *cl, px_client_state st, pgs_list *queue);
void px_client_process(px_client *cl);
void px_client_update_reading(px_client *cl);
void px_client_on_drained(px_client *cl);
void px_client_close(px_client *cl);
void px_client_fatal(px_client *cl, const char *sqlstate, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void px_client_fatal_raw(px_client *cl, const uint8_t *msg, size_t n);
/* FATAL 53200 from a message that needs no memory; for when a reply could not be built. */
void px_client_fatal_oom(px_client *cl);
void px_client_welcome(px_client *cl);
void px_client_link(px_client *cl, px_server *sv);
void px_client_detach(px_client *cl);
int px_client_stage_session(px_client *cl, const char *sql, size_t len);
/* cancel.c */
/* Forwards a CancelRequest to the server running the client's query (in the client's
 * worker); the server is not reused until the cancel is done. */
void px_client_cancel(px_worker *w, uint32_t pid, uint32_t secret);
/* Sends a CancelRequest for the query the server runs; the server is held back from reuse
 * until the cancel has ended. */
void px_server_cancel(px_server *sv);
/* The server is going away: its cancels in flight no longer hold it. */
void px_server_forget_cancels(px_server *sv);
extern const char px_cancel_tag;
/* Ends the cancel one of whose handles is h (data == &px_cancel_tag) now: worker shutdown. */
void px_cancel_stop(uv_handle_t *h);

/* server.c */
px_server *px_server_connect(px_pool *pool);
void px_server_process(px_server *sv);
void px_server_update_reading(px_server *sv);
void px_server_on_drained(px_server *sv);
void px_server_tls_ready(px_server *sv);
void px_server_close(px_server *sv, const char *why);
void px_server_release(px_server *sv);
void px_server_activate(px_server *sv);

/* extended.c */
void px_server_emit_fakes(px_server *sv);
int px_server_push_reply(px_server *sv, px_reply kind, uint64_t hash);
void px_server_replies_free(px_server *sv);
px_msg px_ext_client_message(px_client *cl, const pgs_frame *f);
px_msg px_ext_deallocate(px_client *cl, const pgs_frame *f, const char *name);
px_msg px_ext_sql_prepare(px_client *cl, const pgs_frame *f, const char *sql, size_t len, const char *name,
                          size_t at, size_t end);
px_msg px_ext_sql_execute(px_client *cl, const pgs_frame *f, const char *sql, size_t len, const char *name,
                          size_t at, size_t end);
px_relay px_ext_server_message(px_server *sv, const pgs_frame *f, const uint8_t *p, size_t avail);
bool px_server_clean(const px_server *sv);
/* Logged in before the role or database defaults of the isolation level last changed
 * (ALTER ROLE/DATABASE ... SET, seen by the monitor): its session began with defaults that
 * no longer hold, and a replica one may refuse every read. Closed rather than reused. */
bool px_server_stale(const px_server *sv);
#define PX_STALE_ISO                                                                                         \
    "the role or database defaults of default_transaction_isolation changed since it logged in"

/* pin.c */
#define PX_PIN_REASONS 5 /* the PRS_PIN_* bits */
/* Whether a statement text may pin or unpin its server (checked before parsing it). */
bool px_pin_may(const char *sql, size_t len);
/* Records that cl's statement on sv leaves (pin) and removes (unpin) PRS_PIN_* state. */
void px_pin_apply(px_client *cl, px_server *sv, uint8_t pin, uint16_t unpin);
/* Whether sv stays with its client at the end of a transaction. */
bool px_pin_holds(const px_server *sv);
/* "temp,listen": the reasons of pins, in buf. */
const char *px_pin_reasons(uint8_t pins, char *buf, size_t cap);
const char *px_pin_reason_name(int i);

/* route.c */
int px_route_setup(px_worker *w);
void px_route_teardown(px_worker *w);
const px_status *px_route_status(px_worker *w);
/* Routes a client that has a message to send and no server: links it, queues it in the
 * chosen node's pool or among the primary's waiters, or (sharded) leaves it unlinked to
 * read the rest of an extended-protocol segment that names no shard yet. Returns 0, 1 when
 * the statement is refused (answered by the next pass), or -1 when out of memory. */
int px_route_acquire(px_client *cl, const pgs_frame *f);
/* The session state a statement text leaves and removes (PRS_PIN_*): parsed only when
 * px_pin_may says it can. */
void px_route_pins(px_worker *w, const char *sql, size_t len, uint8_t *pin, uint16_t *unpin);
/* A client linked to a replica starts a new segment: 1 if that segment must go elsewhere. */
bool px_route_must_leave(px_client *cl, const pgs_frame *f);
/* SET/RESET/SHOW pgshard.*: answered here (PX_MSG_DONE), or not ours (PX_MSG_PASS). */
px_msg px_route_pgshard_var(px_client *cl, const pgs_frame *f);
px_msg px_route_pgshard_parse(px_client *cl, const pgs_frame *f, const char *sql, size_t len);
void px_route_node_failed(px_worker *w, int shard, int node);
void px_route_node_ok(px_worker *w, int shard, int node);
/* Clients queued for a node that failed: route them again, avoiding it. */
void px_route_requeue(px_pool *pool);
void px_route_tick(px_worker *w);
void px_route_disarm(px_client *cl);
int px_route_refuse(px_client *cl, const char *sqlstate, const char *msg);
/* SHOW ROUTE: where sql would run for this client, and why (no server is involved). */
typedef struct px_route_why {
    int shard;
    bool read;    /* a replica may run it */
    bool replica; /* and routing would send it to one */
    px_sk_result sk;
} px_route_why;
void px_route_explain(px_client *cl, const char *sql, size_t len, px_route_why *out);
/* Plans a read that runs on every shard (PX_SK_ALL): returns as prs_scatter_plan. */
int px_route_plan(px_client *cl, const char *sql, size_t len, prs_scatter *plan);
/* A Query from a client that holds no server, in a sharded config: BEGIN, and COMMIT or
 * ROLLBACK of a BEGIN not yet sent anywhere, are answered here (PX_MSG_DONE); PX_MSG_PASS
 * routes it. */
px_msg px_route_defer(px_client *cl, const pgs_frame *f);
/* The COMMIT or ROLLBACK (a Query, or an extended-protocol segment of one statement) of a
 * transaction with parked servers: ends it on every shard (fanout.c). PX_MSG_DONE once the
 * end runs, PX_MSG_WAIT while the segment is not whole yet, PX_MSG_PASS when f is no such
 * statement, PX_MSG_CLOSED. */
px_msg px_route_multi_end(px_client *cl, const pgs_frame *f);
/* The node index of the shard's primary as the monitor last saw it (0 without a monitor). */
int px_route_primary_node(px_worker *w, int shard);
/* The first message of a statement (Query, Parse, Bind) from a client that holds a server:
 * stay on it, leave it (a read pipelined after a replica read turned out to write; a
 * statement for another shard once the transaction is over: the caller waits until the
 * server is clean, releases it and routes again), or DONE/CLOSED: a statement for another
 * shard inside a transaction was answered with an error (see linked_refuse in route.c). */
/* PARK: a statement for another shard in a transaction that may span shards (two-phase
 * commit): the caller parks the server once it has answered everything and links (or
 * unparks) one of x.park_to. END: a COMMIT or ROLLBACK of such a transaction: the caller
 * ends it on every shard (px_route_multi_end). */
enum {
    PX_LINKED_CLOSED = -1,
    PX_LINKED_STAY,
    PX_LINKED_LEAVE,
    PX_LINKED_DONE,
    PX_LINKED_PARK,
    PX_LINKED_END
};
int px_route_linked(px_client *cl, const pgs_frame *f);
/* The ReadyForQuery status of a client that holds no server: 'I', or 'T'/'E' in a BEGIN
 * that pgshard keeps. */
char px_route_idle_status(const px_client *cl);
/* retry holds a read sent to a replica that has not answered a byte of it yet. */
static inline bool px_retry_armed(const px_client *cl)
{
    return cl->x.retry.len != 0;
}
/* The server failed before the client saw a byte of the read it was sent: 1 if the client
 * was sent elsewhere (then the caller must not tell it), 0 otherwise. */
int px_route_retry(px_client *cl, px_server *sv);
void px_route_link_done(px_client *cl);
/* The pool a client logs in through (its welcome, rate limit and stats). */
px_pool *px_route_home_pool(px_client *cl);
const struct sockaddr *px_conf_node(const px_conf *conf, int shard, int node);
/* The same node as the config writes it (host as given, port). */
const cfg_node *px_conf_cfg_node(const px_conf *conf, int shard, int node);

/* move.c: the proxy's side of online shard moves. */
enum { PX_MOVE_GO, PX_MOVE_HELD, PX_MOVE_REFUSED };
int px_move_setup(px_worker *w);
/* A new transaction routed as sk says: held while a freezing move holds its key
 * (PX_MOVE_HELD: queued in move.held), refused when the lapsed catalog lease bars it
 * (lease_barred: it may write a sharded table) or the hold lasted freeze_hold_ms
 * (PX_MOVE_REFUSED: the refusal is recorded as px_route_refuse does), else PX_MOVE_GO with
 * the transaction's keys noted. -1 when out of memory. */
int px_move_admit(px_client *cl, const px_sk_result *sk, bool lease_barred);
/* A statement on every shard (fanout mode PX_FAN_*): refused while a move is active when it
 * is a read of a sharded table without a key or DDL on one, held like a keyed transaction
 * (PX_FANOUT_HELD) while a move freezes when it writes sharded tables, and refused when the
 * lease has lapsed when it writes them. Returns 0, PX_FANOUT_HELD or as px_route_refuse. */
#define PX_FANOUT_HELD 2
int px_move_fanout_admit(px_client *cl, uint8_t mode, const px_sk_result *sk);
/* A statement inside the client's transaction on its shard, routed as sk says. */
void px_move_note(px_client *cl, const px_sk_result *sk);
/* The client's transaction is over (or the client is gone): a freeze no longer waits for it. */
void px_move_xact_done(px_client *cl);
static inline void px_move_xact_end(px_client *cl)
{
    if (cl->x.nparked)
        return; /* a transaction over several shards goes on: its end ends it (fanout.c) */
    cl->x.route_bucket = PX_MOVE_NO_KEY;
    if (cl->x.move_wait)
        px_move_xact_done(cl);
}
/* A client joins (+1) or leaves (-1) move.held: px_client_set_state's bookkeeping. */
void px_move_held_count(px_client *cl, int delta);
/* The worker looks at the newest map: held clients are routed again, and the open
 * transactions that may touch what it freezes are counted. The catalog thread asks for it at
 * every map it publishes; the tick, when the map changed unseen. */
void px_move_on_map(px_worker *w);
void px_move_tick(px_worker *w);
/* Main thread, once the workers run, and before they stop. */
void px_move_attach(px_proxy *px);
void px_move_detach(px_proxy *px);
/* A cancel request for a client a freeze holds: its statement is answered with 57014, as
 * PostgreSQL answers a cancelled one, and it is not held any more. Returns whether it was
 * held. */
bool px_move_cancel(px_client *cl);
/* Clients held right now for move id (0: for any move), over every worker. */
unsigned px_move_held(const px_proxy *px, int64_t id);

/* pool.c */
px_pool *px_pool_get(px_worker *w, const px_user *user, const char *db, int shard, int node);
/* The user a pool logs its new servers in as: user, when it comes from a conf newer than
 * the pool's (the same name with a reloaded password); the reference on its conf moves. */
void px_pool_set_user(px_pool *pool, const px_user *user);
/* Records the database's collation (pg_database.datcollate and datlocprovider). */
void px_pool_set_collation(px_pool *pool, const char *datcollate, char provider);
/* Records the database's deterministic libc collations: "name=locale,..." as the collation
 * query returns them (each name quoted as pg_collation_for quotes it), len 0 for none.
 * Returns 0, or -1 when out of memory (the previous list stays). */
int px_pool_set_collated(px_pool *pool, const char *list, size_t len);
/* px_merge_coll_fn over a pool's list (arg): the locale of the collation called name. */
int px_pool_collation_locale(void *arg, const char *name, char *locale, size_t cap);
int px_pool_acquire(px_pool *pool, px_client *cl);
void px_pool_want_welcome(px_pool *pool, px_client *cl);
void px_pool_server_ready(px_pool *pool, px_server *sv);
void px_pool_login_done(px_pool *pool, px_server *sv);
void px_pool_server_gone(px_pool *pool, bool login_failed, const uint8_t *err, size_t errlen);
/* Timeouts and replacements; true when the pool was unused long enough and is now freed. */
bool px_pool_tick(px_pool *pool, uint64_t now);
void px_pool_free(px_pool *pool);
void px_pool_resume(px_pool *pool);

/* admin.c */
void px_admin_login(px_client *cl);
px_step px_admin_step(px_client *cl);
/* Gathers from every worker, then calls done on the origin worker. kind: PX_SNAP_*. */
enum { PX_SNAP_POOLS, PX_SNAP_CLIENTS, PX_SNAP_SERVERS };
typedef struct px_snapshot px_snapshot;
typedef void (*px_snap_done)(px_worker *origin, px_snapshot *s);
struct px_snapshot {
    int kind;
    px_worker *origin;
    px_snap_done done;
    void *ctx; /* the requester's, identified so it can be gone by then */
    uint32_t ctx_id;
    atomic_int pending;
    int nparts;
    pgs_buf parts[]; /* one per worker: px_pool_row array or DataRow messages */
};
int px_snapshot_start(px_worker *origin, int kind, px_snap_done done, void *ctx, uint32_t ctx_id);
void px_snapshot_free(px_snapshot *s);
void px_pool_rows_merge(px_snapshot *s, pgs_buf *out, size_t *n);

/* metrics.c */
int px_metrics_start(px_worker *w);
void px_metrics_stop(px_worker *w);

/* conf.c */
const px_user *px_user_find(const px_conf *conf, const char *name);
/* Loads a conf from cfg (taking it over): user secrets and the primary's address. The
 * caller gets the one reference it holds. */
px_conf *px_conf_build(px_proxy *px, cfg_config *cfg, char *err, size_t errlen);
/* Takes one more reference on conf, from any thread, for a holder that already has one
 * (or is the main thread, whose px_proxy.conf does). Returns conf. */
const px_conf *px_conf_hold(const px_conf *conf);
/* Drops one reference; the last one frees the conf. NULL is fine. */
void px_conf_release(const px_conf *conf);
int px_resolve(const char *host, uint16_t port, struct sockaddr_storage *out, char *err, size_t errlen);

#endif

/* The parts of a fan-out (fanout.c) that its COPY (fanout_copy.c) and write
 * (fanout_write.c) files share: the fan-out itself, and the steps each file offers the
 * others. Not for use outside these three files. */
#ifndef PX_FANOUT_INT_H
#define PX_FANOUT_INT_H

#include "parser/insertsplit.h"
#include "proxy/copysplit.h"
#include "proxy/merge.h"
#include "proxy/px.h"

/* Bytes of merged output queued for the client above which the shards are not read. */
#define FANOUT_CLIENT_MAX (256u << 10)
/* A write's RETURNING rows, held until it commits, at most this much. */
#define FANOUT_WRITE_ROWS_MAX (64u << 20)
/* COPY FROM: rows gathered for a shard before they go out as one CopyData. */
#define FANOUT_COPY_CHUNK (64u << 10)
/* COPY FROM: bytes queued towards a shard above which the client is not read. */
#define FANOUT_COPY_QUEUE_MAX (1u << 20)

/* What a fan-out link waits for from its server. */
enum {
    FL_ACQUIRE = 0, /* no server yet */
    FL_COLLATION,   /* the database's collation (the first fan-out of the pool) */
    FL_QUERY,       /* the shard query's answer, up to its ReadyForQuery */
    FL_DONE,        /* its ReadyForQuery came (or its server was lost): nothing more */
};

struct px_fanout {
    px_client *cl;
    prs_scatter plan; /* owned */
    px_merge *merge;  /* owned, made when the collation is known */
    int nshards;
    int acquired;          /* links given a server so far, in shard order */
    int ndone;             /* links in FL_DONE */
    bool sending;          /* in fanout_send: a lost server does not end the fan-out there */
    uint8_t *replays;      /* owned: per link, session replies still to hide (replay, collation) */
    uint8_t *phase;        /* owned: per link, FL_* */
    bool failed;           /* the client gets an error: rows are no longer merged */
    pgs_buf err;           /* the client's ErrorResponse (whole message) once failed */
    pgs_buf out;           /* scratch for merged output */
    px_route *routes;      /* owned: per shard, the node routing chose */
    pgs_buf req;           /* what every shard is sent: a Query, or Parse/Bind/Describe/Execute/Sync */
    bool ext;              /* the client sent an extended-protocol segment */
    bool every;            /* a broadcast: plan.sql runs on each shard in turn, unmerged */
    uint8_t mode;          /* PX_FAN_* */
    prs_copy_opts *copy;   /* owned: the COPY modes' options */
    uint32_t key_oid;      /* COPY_IN: the key column's type */
    px_copy_split *split;  /* owned: COPY_IN, the client's data cut into rows */
    pgs_buf *bufs;         /* owned: COPY_IN, per shard, rows not sent yet */
    uint8_t *copying;      /* owned: COPY_IN, per shard: in copy-in mode (CopyInResponse seen, not ended) */
    uint8_t *committed;    /* owned: COPY modes, per shard: its CommandComplete came */
    uint8_t *post;         /* DDL: per shard, 1 while its sequences' query follows the DDL, 2 in it */
    uint32_t copy_left;    /* COPY_IN: bytes of the client's current CopyData not split yet */
    int ncopying;          /* COPY_IN: shards that answered CopyInResponse */
    bool copy_open;        /* COPY_IN: the client has its CopyInResponse and sends data */
    bool copy_ended;       /* COPY_IN: the client's CopyDone or CopyFail (or an error) ended the data */
    bool header_out;       /* COPY_OUT: the client has had the data's header */
    uint64_t copied;       /* COPY modes: rows the shards' CommandCompletes count */
    uint8_t stage;         /* WRITE: WS_*, the step of the distributed transaction */
    int pending;           /* WRITE: shards whose answer to the current step is awaited */
    bool all_rows;         /* WRITE: every shard's RETURNING rows go to the client (not shard 0's only) */
    bool rd_sent;          /* WRITE: the client has its RowDescription */
    char verb[16];         /* WRITE: the CommandComplete verb ("UPDATE", "INSERT 0", ...) */
    bool ddl;              /* WRITE of DDL: shard 0's CommandCompletes are held with its rows */
    char gid[64];          /* WRITE with two-phase commit: the transaction's gid */
    uint64_t prepare_ns;   /* WRITE: uv_hrtime() when PREPARE TRANSACTION was sent */
    bool commit_failed;    /* WRITE: a COMMIT PREPARED failed: the decision must stay */
    pgs_buf head;          /* WRITE: shard 0's ParseComplete/BindComplete/NoData, for the client */
    prs_insert_split *ins; /* owned: WRITE of an INSERT split per shard, or NULL */
    pgs_buf *reqs;         /* owned with ins: per shard, its INSERT (empty: the shard has no row) */
    pgs_buf *rowbufs;      /* owned with ins: per shard, its RETURNING rows, to put back in order */
    bool describe;         /* ext: the client asked for the RowDescription */
    bool head_done;        /* the client has its ParseComplete/BindComplete: rows may follow */
    char *parse_name;      /* owned: ext, the name the client's Parse defines, or NULL without one */
    pgs_buf parse_body;    /* ext with a named Parse: its body, registered when every shard parsed */
    int parsed, bound;     /* ext: shards that answered ParseComplete, BindComplete */
    bool txn;              /* WRITE: the end of a client's transaction over several shards; verb
                              holds its tag */
    bool in_txn;           /* READ/WRITE inside the client's transaction: its servers stay in it
                              (parked) at the end, and new ones get its BEGIN first */
    uint8_t *member;       /* owned: txn, per shard: it ran statements of the transaction */
    uint8_t *awaiting;     /* owned: WRITE, per shard: answers (ReadyForQuery) of the current
                              step still to come, counted in pending */
    px_link links[];       /* one per shard; links[s].shard == s */
};

/* The steps of a write on several shards, each sent to the shards concerned and complete
 * when all of them answered (ReadyForQuery):
 *   WS_RUN        BEGIN and the statement, on every shard;
 *   WS_PREPARE    two-phase commit: PREPARE TRANSACTION on every shard but 0;
 *   WS_DECIDE     shard 0 records the gid in pgshard.transactions and commits: the decision;
 *   WS_FINISH     COMMIT (one-phase), or COMMIT PREPARED after the decision;
 *   WS_FORGET     shard 0 deletes the decision, which no prepared transaction needs now;
 *   WS_ABORT      ROLLBACK, and ROLLBACK PREPARED where a shard had prepared.
 * A crash (of pgshard) before WS_DECIDE leaves prepared transactions that recovery rolls
 * back; after it, ones that recovery commits (recovery.c). */
enum { WS_RUN = 1, WS_PREPARE, WS_DECIDE, WS_FINISH, WS_FORGET, WS_ABORT };

static inline px_fanout *px_fo_client(const px_client *cl)
{
    return cl->x.fan;
}

/* fanout.c */
int px_fo_error_noted(const uint8_t *msg, size_t n, const char *note, pgs_buf *out);
void px_fo_fail_from(px_fanout *fo, int from, const uint8_t *msg, size_t n);
void px_fo_fail(px_fanout *fo, const char *sqlstate, const char *msg);
void px_fo_send_sql(px_server *sv, const char *sql);
bool px_fo_seq_sql(const px_fanout *fo, int s, pgs_buf *b);
bool px_fo_join_txn(px_fanout *fo, int s);
px_fanout *px_fo_alloc(px_client *cl, int n);
void px_fo_resume(px_fanout *fo);
void px_fo_finish(px_fanout *fo);
void px_fo_link_done(px_fanout *fo, px_link *l);

/* fanout_copy.c */
void px_fo_copy_end_shards(px_fanout *fo, const char *why);
void px_fo_copy_out_end(px_fanout *fo);
void px_fo_copy_complete(px_fanout *fo);
bool px_fo_copy_message(px_fanout *fo, int s, char type, const uint8_t *p, size_t total);
int px_fo_copy_init(px_fanout *fo, int key_index);
void px_fo_copy_failed_note(px_fanout *fo);

/* fanout_write.c */
void px_fo_write_next(px_fanout *fo);
void px_fo_write_message(px_fanout *fo, px_server *sv, char type, const uint8_t *p, size_t total);
void px_fo_write_start(px_fanout *fo);
void px_fo_split_rows_out(px_fanout *fo);
void px_fo_write_complete(px_fanout *fo);
void px_fo_xact_join(px_fanout *fo, int s, px_server *sv);
void px_fo_xact_go(px_fanout *fo, bool abort);

#endif

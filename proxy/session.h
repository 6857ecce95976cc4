/* Session state of a client in transaction pooling: the SET statements (and startup
 * parameters) that must hold on whichever server runs its next transaction. SETs are
 * staged while their transaction runs and kept only when it commits, as PostgreSQL does.
 * Also recognizes the statements that touch session state (SET, RESET, DISCARD,
 * DEALLOCATE) by their first words, without a full parse. No I/O here. */
#ifndef PX_SESSION_H
#define PX_SESSION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"

#define PX_SESSION_MAX_BYTES 65536 /* all replayed text of one client */

typedef enum px_sess_kind {
    SESS_NONE,        /* not about session state (or transaction-scoped: SET LOCAL ...) */
    SESS_SET,         /* SET [SESSION] name ...: key names the parameter */
    SESS_RESET,       /* RESET name, SET name TO DEFAULT */
    SESS_RESET_ALL,   /* RESET ALL */
    SESS_DISCARD_ALL, /* DISCARD ALL: also drops prepared statements */
    SESS_DEALLOCATE,  /* DEALLOCATE [PREPARE] name: name in out->name */
    SESS_DEALLOCATE_ALL,
    SESS_MULTI,   /* several statements of which one starts with SET/RESET/DISCARD */
    SESS_PREPARE, /* PREPARE name ...: name and its place in the text */
    SESS_EXECUTE, /* EXECUTE name ...: name and its place in the text */
} px_sess_kind;

typedef struct px_sess_stmt {
    px_sess_kind kind;
    uint64_t key;             /* SESS_SET/RESET: hash of the lowercased parameter name */
    char name[64];            /* SESS_DEALLOCATE/PREPARE/EXECUTE: the statement name */
    size_t name_at, name_end; /* SESS_PREPARE/EXECUTE: where the name stands in the text */
} px_sess_stmt;

/* Looks at the first words of sql[0..len). */
void px_sess_classify(const char *sql, size_t len, px_sess_stmt *out);

typedef struct px_setting {
    uint64_t key;
    uint32_t len;
    char text[]; /* a statement that sets it, replayed as is */
} px_setting;

typedef struct px_session {
    px_setting **items; /* owned, committed, in order */
    size_t n, cap;
    size_t bytes;
    uint64_t sig;         /* hash of the committed settings; 0 when there are none */
    bool iso_set;         /* they set the default isolation level (over the role's) */
    bool serializable;    /* to serializable */
    px_setting **pending; /* owned, staged by the running transaction */
    size_t npending, pcap;
    bool pending_reset_all;
    bool pending_failed;   /* an error happened in the transaction that staged them */
    px_setting **defaults; /* owned: the startup parameters, which RESET returns to */
    size_t nd, dcap;
} px_session;

/* Stages a statement of the running transaction. Returns -1 when out of memory or over
 * PX_SESSION_MAX_BYTES. */
int px_session_stage(px_session *s, const px_sess_stmt *st, const char *sql, size_t len);
/* Ends the transaction that staged changes: commit keeps them, otherwise they are dropped. */
void px_session_end(px_session *s, bool committed);
static inline bool px_session_has_pending(const px_session *s)
{
    return s->npending || s->pending_reset_all;
}
/* Adds a startup parameter as "SELECT set_config(name, value, false)": a setting now, and
 * the value RESET name, RESET ALL and DISCARD ALL return to. */
int px_session_add_param(px_session *s, const char *name, const char *value);
/* Appends to out the startup parameters a RESET, RESET ALL or DISCARD ALL (st) sets back,
 * each a statement on its own line, ';'-separated; returns how many. PostgreSQL takes a
 * startup parameter as the session's default; on a pooled server RESET goes to the
 * server's own, so the proxy sets these again after it. out may be NULL: only counted. */
int px_session_restore_sql(const px_session *s, const px_sess_stmt *st, pgs_buf *out);
/* Appends "RESET ALL;" and every setting, ';'-separated, to out. */
void px_session_replay_sql(const px_session *s, pgs_buf *out);
void px_session_free(px_session *s);
/* The client_encoding set (or given at startup) when it is one whose characters may hold
 * ASCII bytes (SJIS, BIG5, GBK, UHC, GB18030, JOHAB and their aliases), else NULL. */
const char *px_session_unsafe_encoding(const px_session *s);
/* A hash of the client's search_path setting, 0 when it has none. */
uint64_t px_session_search_path_sig(const px_session *s);

#endif

/* Publication of immutable snapshots (a shard map, a status) from one writer thread to a
 * fixed set of reader threads, with hazard pointers: a reader's read is one atomic load when
 * nothing changed, and never takes a lock or touches a reference count. What a snapshot
 * holds is the caller's business; this file only decides when one may be freed. */
#ifndef PGS_SNAP_H
#define PGS_SNAP_H

#include <stdatomic.h>

/* Frees a snapshot that no reader can see any more. */
typedef void (*pgs_snap_free_fn)(void *snapshot);

typedef struct pgs_snap {
    _Atomic(void *) current; /* owned: the newest snapshot */
    _Atomic(void *) *hazard; /* owned array of nreaders; the snapshots in it are not */
    void **retired;          /* owned array of nreaders + 1 owned snapshots not yet freed */
    int nretired;            /* writer's */
    int nreaders;
    pgs_snap_free_fn free_fn; /* frees current and retired ones */
} pgs_snap;

/* Makes room for nreaders reader slots and publishes first (not NULL). Returns 0, taking
 * first over, or -1 when out of memory (first stays the caller's). */
int pgs_snap_init(pgs_snap *s, int nreaders, void *first, pgs_snap_free_fn free_fn);

/* The newest snapshot, for reader slot reader (0 .. nreaders-1), which only one thread may
 * use. It stays valid until the same slot calls pgs_snap_get again, or the snap is
 * destroyed. Never NULL. */
const void *pgs_snap_get(pgs_snap *s, int reader);

/* The newest snapshot, for the writer thread (which alone replaces it). */
static inline const void *pgs_snap_current(pgs_snap *s)
{
    return atomic_load(&s->current);
}

/* Writer: makes next (not NULL, the snap's from now on) the newest snapshot and frees the
 * older ones no reader holds. */
void pgs_snap_publish(pgs_snap *s, void *next);

/* Frees every snapshot. No reader may use the snap any more. A zeroed or failed-init snap
 * is fine. */
void pgs_snap_destroy(pgs_snap *s);

#endif

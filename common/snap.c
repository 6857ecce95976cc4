/* Hazard-pointer publication of snapshots (see snap.h). The protocol is the one
 * proxy/monitor.c uses for its status snapshots: a reader announces the pointer it is about
 * to use in its own slot and checks that it is still the newest; the writer frees a retired
 * snapshot only once no slot holds it. Every access is sequentially consistent. */
#include "common/snap.h"

#include <stdbool.h>
#include <stdlib.h>

int pgs_snap_init(pgs_snap *s, int nreaders, void *first, pgs_snap_free_fn free_fn)
{
    size_t nr = nreaders > 0 ? (size_t)nreaders : 1;

    s->nreaders = nreaders > 0 ? nreaders : 0;
    s->nretired = 0;
    s->free_fn = free_fn;
    s->hazard = calloc(nr, sizeof(*s->hazard));
    s->retired = calloc(nr + 1, sizeof(*s->retired));
    if (s->hazard == NULL || s->retired == NULL) {
        free((void *)s->hazard);
        free(s->retired);
        s->hazard = NULL;
        s->retired = NULL;
        atomic_init(&s->current, NULL);
        return -1;
    }
    for (size_t r = 0; r < nr; r++)
        atomic_init(&s->hazard[r], NULL);
    atomic_init(&s->current, first);
    return 0;
}

const void *pgs_snap_get(pgs_snap *s, int reader)
{
    void *p = atomic_load(&s->current);

    /* Already announced (and checked) by this slot: still protected, no store needed. */
    if (atomic_load_explicit(&s->hazard[reader], memory_order_relaxed) == p)
        return p;
    do {
        p = atomic_load(&s->current);
        atomic_store(&s->hazard[reader], p);
    } while (atomic_load(&s->current) != p);
    return p;
}

static bool snap_hazarded(const pgs_snap *s, const void *p)
{
    for (int r = 0; r < s->nreaders; r++)
        if (atomic_load(&s->hazard[r]) == p)
            return true;
    return false;
}

/* A reader that announced a retired snapshot before this scan is seen by it; one that
 * announces it after the scan then reloads `current`, finds the newer one and retries, so
 * it never keeps a freed pointer. Each slot pins at most one snapshot, so nreaders + 1
 * retired entries are always enough. */
static void snap_reclaim(pgs_snap *s)
{
    int keep = 0;

    for (int i = 0; i < s->nretired; i++) {
        if (snap_hazarded(s, s->retired[i]))
            s->retired[keep++] = s->retired[i];
        else
            s->free_fn(s->retired[i]);
    }
    s->nretired = keep;
}

void pgs_snap_publish(pgs_snap *s, void *next)
{
    void *old = atomic_exchange(&s->current, next);

    s->retired[s->nretired++] = old;
    snap_reclaim(s);
}

void pgs_snap_destroy(pgs_snap *s)
{
    void *cur = atomic_load(&s->current);

    for (int i = 0; s->retired != NULL && i < s->nretired; i++)
        s->free_fn(s->retired[i]);
    if (cur != NULL && s->free_fn != NULL)
        s->free_fn(cur);
    free((void *)s->hazard);
    free(s->retired);
    s->hazard = NULL;
    s->retired = NULL;
    s->nretired = 0;
    atomic_store(&s->current, NULL);
}

/* The pure part of the node status (see status.h): lag in time from the primary's WAL
 * samples, the read-your-writes bound and LSN parsing. No threads, no libpq, no clock: the
 * caller passes the time in. */
#include "proxy/status.h"

#include <stddef.h>
#include <string.h>

#include "common/buf.h"
#include "proxy/prepared.h"

#define LSN_HALF_DIGITS 8 /* each side of "X/Y" is a 32-bit number: at most 8 hex digits */
#define NS_PER_MS 1000000u

/* The samples of one shard come from one primary and are kept oldest first, so both their
 * times and their LSNs never decrease (monitor.c empties the ring when the primary changes
 * or its LSN goes backwards). That makes both searches below binary searches. */

/* Index of the first sample whose LSN is past lsn, or n when none is. */
static int first_past_lsn(const px_lsn_sample *s, int n, uint64_t lsn)
{
    int lo = 0, hi = n;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        if (s[mid].lsn > lsn)
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

/* Index of the first sample taken strictly after t_ns, or n when none was. */
static int first_after_time(const px_lsn_sample *s, int n, uint64_t t_ns)
{
    int lo = 0, hi = n;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        if (s[mid].t_ns > t_ns)
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

/* The primary went past lsn somewhere between the last sample at or before lsn and the
 * first sample past it; the time of the latter is the one the samples prove, so the result
 * is a lower bound that is at most one poll interval short. A node whose lsn is older than
 * every sample gets the age of the oldest sample, also a lower bound. */
uint32_t px_status_lag_ms(const px_lsn_sample *s, int n, uint64_t lsn, uint64_t now_ns)
{
    if (s == NULL || n <= 0)
        return 0;
    int i = first_past_lsn(s, n, lsn);
    if (i == n || now_ns <= s[i].t_ns)
        return 0;
    uint64_t ms = (now_ns - s[i].t_ns) / NS_PER_MS;
    return ms > UINT32_MAX ? UINT32_MAX : (uint32_t)ms;
}

/* A sample's time is taken before its query is sent, so a sample taken strictly after
 * write_ns asked for the LSN after the write had committed. A sample taken at the same
 * nanosecond proves nothing about the order and is skipped. */
uint64_t px_status_ryw_lsn(const px_shard_status *sh, uint64_t write_ns)
{
    if (sh == NULL || sh->nsamples <= 0)
        return 0;
    int i = first_after_time(sh->samples, sh->nsamples, write_ns);
    if (i == sh->nsamples)
        return 0;
    const px_lsn_sample *s = &sh->samples[i];
    return s->insert > s->lsn ? s->insert : s->lsn;
}

/* Reads 1 to 8 hex digits from *p into *out and advances *p past them. */
static int lsn_half(const char **p, uint32_t *out)
{
    uint32_t v = 0;
    int n = 0, d;
    while ((d = pgs_hex_value((*p)[n])) >= 0) {
        if (n == LSN_HALF_DIGITS)
            return -1;
        v = (v << 4) | (uint32_t)d;
        n++;
    }
    if (n == 0)
        return -1;
    *p += n;
    *out = v;
    return 0;
}

/* The syntax PostgreSQL's pg_lsn_in accepts: two groups of 1 to 8 hex digits around one
 * '/', nothing before or after. *out is left alone on failure. */
int px_lsn_parse(const char *s, uint64_t *out)
{
    uint32_t hi, lo;
    if (s == NULL || out == NULL)
        return -1;
    if (lsn_half(&s, &hi) < 0 || *s++ != '/')
        return -1;
    if (lsn_half(&s, &lo) < 0 || *s != '\0')
        return -1;
    *out = ((uint64_t)hi << 32) | lo;
    return 0;
}

uint64_t px_status_name_key(const char *name)
{
    uint64_t h = px_hash64(name, strlen(name), 0);
    return h ? h : 1;
}

/* Rank of an entry for (role, db) in PostgreSQL's order of precedence; -1 if it does not
 * apply. */
static int iso_rank(const px_iso_default *e, uint64_t role, uint64_t db)
{
    if (e->role != 0 && e->role != role)
        return -1;
    if (e->db != 0 && e->db != db)
        return -1;
    return (e->role != 0) * 2 + (e->db != 0);
}

bool px_status_serializable(const px_status *st, uint64_t role, uint64_t db)
{
    for (int s = 0; st->any_iso && s < st->nshards; s++) {
        const px_shard_status *sh = &st->shards[s];
        int best = -1;
        bool ser = false;
        for (int i = 0; i < sh->niso; i++) {
            int r = iso_rank(&sh->iso[i], role, db);
            if (r > best) {
                best = r;
                ser = sh->iso[i].serializable;
            }
        }
        if (ser)
            return true;
    }
    return false;
}

/* Statement registry, client statement names, server statement sets and reply queues for
 * prepared statements in transaction pooling (see prepared.h). No I/O here. */
#include "proxy/prepared.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

uint64_t px_hash64(const void *p, size_t n, uint64_t seed)
{
    /* FNV-1a, then a final avalanche so the low bits used for slots are well mixed. */
    const uint8_t *b = p;
    uint64_t h = 14695981039346656037ull ^ seed;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 1099511628211ull;
    }
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    return h ? h : 1;
}

static size_t htab_slot(const px_htab *t, uint64_t key)
{
    size_t i = (size_t)key & (t->cap - 1);
    while (t->keys[i] && t->keys[i] != key)
        i = (i + 1) & (t->cap - 1);
    return i;
}

void *px_htab_get(const px_htab *t, uint64_t key)
{
    if (!t->cap)
        return NULL;
    size_t i = htab_slot(t, key);
    return t->keys[i] ? t->vals[i] : NULL;
}

static int htab_grow(px_htab *t)
{
    size_t cap = t->cap ? t->cap * 2 : 16;
    px_htab nt = {calloc(cap, sizeof(uint64_t)), calloc(cap, sizeof(void *)), cap, 0};
    if (!nt.keys || !nt.vals) {
        free(nt.keys);
        free(nt.vals);
        return -1;
    }
    for (size_t i = 0; i < t->cap; i++) {
        if (!t->keys[i])
            continue;
        size_t j = htab_slot(&nt, t->keys[i]);
        nt.keys[j] = t->keys[i];
        nt.vals[j] = t->vals[i];
        nt.n++;
    }
    free(t->keys);
    free(t->vals);
    t->keys = nt.keys;
    t->vals = nt.vals;
    t->cap = nt.cap;
    t->n = nt.n;
    return 0;
}

int px_htab_put(px_htab *t, uint64_t key, void *val)
{
    if ((t->n + 1) * 4 > t->cap * 3 && htab_grow(t) < 0)
        return -1;
    size_t i = htab_slot(t, key);
    if (!t->keys[i])
        t->n++;
    t->keys[i] = key;
    t->vals[i] = val;
    return 0;
}

/* Deletes with backward shift, so lookups never need tombstones. */
void *px_htab_del(px_htab *t, uint64_t key)
{
    if (!t->cap)
        return NULL;
    size_t i = htab_slot(t, key);
    if (!t->keys[i])
        return NULL;
    void *val = t->vals[i];
    size_t mask = t->cap - 1, j = i;
    for (;;) {
        j = (j + 1) & mask;
        if (!t->keys[j])
            break;
        size_t home = (size_t)t->keys[j] & mask;
        /* Move j back to i when its home slot is not in the cyclic range (i, j]. */
        if ((j > i && (home <= i || home > j)) || (j < i && home <= i && home > j)) {
            t->keys[i] = t->keys[j];
            t->vals[i] = t->vals[j];
            i = j;
        }
    }
    t->keys[i] = 0;
    t->vals[i] = NULL;
    t->n--;
    return val;
}

void px_htab_free(px_htab *t)
{
    free(t->keys);
    free(t->vals);
    memset(t, 0, sizeof *t);
}

void px_stmt_name(uint64_t hash, char out[PX_STMT_NAME_LEN])
{
    snprintf(out, PX_STMT_NAME_LEN, "pgshard_%016llx", (unsigned long long)hash);
}

px_stmt *px_stmt_register(px_htab *reg, const uint8_t *body, size_t n, uint64_t seed)
{
    uint64_t h = px_hash64(body, n, seed);
    px_stmt *st = px_htab_get(reg, h);
    if (st) {
        /* Two different statements with one 64-bit hash: refuse rather than mix them up. */
        if (st->body_len != n || memcmp(st->body, body, n) != 0)
            return NULL;
        st->refs++;
        return st;
    }
    st = malloc(sizeof *st + n);
    if (!st)
        return NULL;
    st->hash = h;
    st->refs = 1;
    st->sql = false;
    st->route = 0;
    memset(&st->plan, 0, sizeof st->plan);
    st->pin_known = false;
    st->pin = 0;
    st->unpin = 0;
    st->body_len = n;
    memcpy(st->body, body, n);
    if (px_htab_put(reg, h, st) < 0) {
        free(st);
        return NULL;
    }
    return st;
}

void px_stmt_unref(px_htab *reg, px_stmt *st)
{
    if (--st->refs)
        return;
    px_htab_del(reg, st->hash);
    free(st);
}

static uint64_t name_key(const char *name)
{
    return px_hash64(name, strlen(name), 0x9e3779b97f4a7c15ull);
}

/* A 64-bit collision between two names of one client is treated as "not found". */
px_stmt *px_client_stmt_get(const px_htab *names, const char *name)
{
    px_cname *cn = px_htab_get(names, name_key(name));
    return cn && strcmp(cn->name, name) == 0 ? cn->stmt : NULL;
}

int px_client_stmt_put(px_htab *names, px_htab *reg, const char *name, px_stmt *st)
{
    size_t len = strlen(name);
    px_cname *cn = malloc(sizeof *cn + len + 1);
    if (!cn)
        return -1;
    cn->stmt = st;
    memcpy(cn->name, name, len + 1);
    uint64_t k = name_key(name);
    px_cname *old = px_htab_get(names, k);
    if (px_htab_put(names, k, cn) < 0) {
        free(cn);
        return -1;
    }
    if (old) {
        px_stmt_unref(reg, old->stmt);
        free(old);
    }
    return 0;
}

bool px_client_stmt_del(px_htab *names, px_htab *reg, const char *name)
{
    uint64_t k = name_key(name);
    px_cname *cn = px_htab_get(names, k);
    if (!cn || strcmp(cn->name, name) != 0)
        return false;
    px_htab_del(names, k);
    px_stmt_unref(reg, cn->stmt);
    free(cn);
    return true;
}

void px_client_stmts_free(px_htab *names, px_htab *reg)
{
    for (size_t i = 0; i < names->cap; i++) {
        px_cname *cn = names->vals[i];
        if (!names->keys[i])
            continue;
        px_stmt_unref(reg, cn->stmt);
        free(cn);
    }
    px_htab_free(names);
}

px_reply_ent *px_replies_push(px_replies *q, px_reply kind, uint64_t hash)
{
    if (q->n == q->cap) {
        size_t cap = q->cap ? q->cap * 2 : 16;
        px_reply_ent *e = malloc(cap * sizeof *e);
        if (!e)
            return NULL;
        for (size_t i = 0; i < q->n; i++)
            e[i] = q->ents[(q->head + i) % q->cap];
        free(q->ents);
        q->ents = e;
        q->cap = cap;
        q->head = 0;
    }
    px_reply_ent *slot = &q->ents[(q->head + q->n) % q->cap];
    slot->kind = (uint8_t)kind;
    slot->hide_ready = false;
    slot->hash = hash;
    slot->stmt = NULL;
    slot->cname = NULL;
    slot->pos_at = 0;
    slot->pos_delta = 0;
    q->n++;
    return slot;
}

void px_replies_pop(px_replies *q)
{
    if (!q->n)
        return;
    q->head = (q->head + 1) % q->cap;
    q->n--;
}

void px_replies_free(px_replies *q)
{
    free(q->ents);
    memset(q, 0, sizeof *q);
}

/* A set value packs the tick (high 32 bits), the segment (31 bits) and a ready bit. */
static uintptr_t sset_pack(uint32_t tick, uint32_t segment, bool ready)
{
    return (uintptr_t)(((uint64_t)tick << 32) | ((uint64_t)(segment & 0x7fffffffu) << 1) | ready);
}

/* The table's value slots are pointers; a statement set stores packed integers in them. */
static void *sset_slot(uintptr_t v)
{
    return (void *)v; /* NOLINT(performance-no-int-to-ptr): never dereferenced, only unpacked */
}

px_sstate px_sset_get(px_htab *set, uint64_t hash, uint32_t tick, uint32_t *segment)
{
    if (!set->cap)
        return PX_STMT_ABSENT;
    size_t i = htab_slot(set, hash);
    if (!set->keys[i])
        return PX_STMT_ABSENT;
    uint64_t v = (uintptr_t)set->vals[i];
    if (segment)
        *segment = (uint32_t)(v >> 1) & 0x7fffffffu;
    set->vals[i] = sset_slot(sset_pack(tick, (uint32_t)(v >> 1), v & 1));
    return (v & 1) ? PX_STMT_READY : PX_STMT_PENDING;
}

int px_sset_pending(px_htab *set, uint64_t hash, uint32_t tick, uint32_t segment)
{
    return px_htab_put(set, hash, sset_slot(sset_pack(tick, segment, false)));
}

void px_sset_ready(px_htab *set, uint64_t hash)
{
    if (!set->cap)
        return;
    size_t i = htab_slot(set, hash);
    if (set->keys[i])
        set->vals[i] = sset_slot((uintptr_t)set->vals[i] | 1);
}

uint64_t px_sset_lru(const px_htab *set)
{
    uint64_t best = 0, best_tick = UINT64_MAX;
    for (size_t i = 0; i < set->cap; i++) {
        uint64_t v = (uintptr_t)set->vals[i];
        if (set->keys[i] && (v & 1) && (v >> 32) < best_tick) {
            best_tick = v >> 32;
            best = set->keys[i];
        }
    }
    return best;
}

/* The per-worker parse cache: a bounded LRU of prs_query_info keyed by normalized text (and
 * statement name). A chained hash table over a fixed array of entries plus an LRU list
 * threaded through the same entries; every operation is O(1). One per worker, no locks. */
#include <stdlib.h>
#include <string.h>

#include "parser/parser.h"

#define NIL UINT32_MAX

typedef struct entry {
    uint64_t hash;       /* of text and name together */
    uint32_t chain;      /* next entry in the same bucket */
    uint32_t prev, next; /* LRU list: prev is more recent */
    char *key;           /* owned: text_len bytes of text, then name_len bytes of name */
    size_t text_len;
    size_t name_len;
    prs_query_info info;
} entry;

struct prs_cache {
    size_t capacity;
    size_t size;
    uint32_t *buckets; /* owned; heads of chains */
    size_t mask;
    entry *entries;      /* owned; capacity of them, allocated once */
    uint32_t head, tail; /* most and least recently used */
    uint32_t free_head;  /* unused entries, linked through next (none today: nothing deletes) */
    uint32_t fresh;      /* entries from here on were never used: their pages stay untouched,
                            so a cache of few shapes costs little memory */
    prs_cache_stats stats;
};

prs_cache *prs_cache_create(size_t capacity)
{
    if (capacity == 0 || capacity >= NIL / 2)
        return NULL;
    size_t nb = 1;
    while (nb < 2 * capacity)
        nb *= 2;
    prs_cache *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->buckets = malloc(nb * sizeof *c->buckets);
    if (!c->buckets)
        goto fail_buckets;
    c->entries = calloc(capacity, sizeof *c->entries);
    if (!c->entries)
        goto fail_entries;
    c->capacity = capacity;
    c->mask = nb - 1;
    c->head = NIL;
    prs_cache_clear(c);
    return c;

fail_entries:
    free(c->buckets);
fail_buckets:
    free(c);
    return NULL;
}

void prs_cache_clear(prs_cache *c)
{
    for (uint32_t i = c->head; i != NIL; i = c->entries[i].next) {
        free(c->entries[i].key);
        c->entries[i].key = NULL;
    }
    for (size_t b = 0; b <= c->mask; b++)
        c->buckets[b] = NIL;
    c->free_head = NIL;
    c->fresh = 0;
    c->head = c->tail = NIL;
    c->size = 0;
}

void prs_cache_destroy(prs_cache *c)
{
    if (!c)
        return;
    prs_cache_clear(c);
    free(c->entries);
    free(c->buckets);
    free(c);
}

static uint64_t key_hash(const prs_cache_key *k)
{
    return k->name_len ? k->hash ^ prs_hash64(k->name, k->name_len, 0x9e3779b97f4a7c15ULL) : k->hash;
}

static bool key_equal(const entry *e, uint64_t h, const prs_cache_key *k)
{
    return e->hash == h && e->text_len == k->text_len && e->name_len == k->name_len &&
           memcmp(e->key, k->text, k->text_len) == 0 &&
           (k->name_len == 0 || memcmp(e->key + k->text_len, k->name, k->name_len) == 0);
}

static void lru_unlink(prs_cache *c, uint32_t i)
{
    entry *e = &c->entries[i];
    if (e->prev != NIL)
        c->entries[e->prev].next = e->next;
    else
        c->head = e->next;
    if (e->next != NIL)
        c->entries[e->next].prev = e->prev;
    else
        c->tail = e->prev;
}

static void lru_push_front(prs_cache *c, uint32_t i)
{
    entry *e = &c->entries[i];
    e->prev = NIL;
    e->next = c->head;
    if (c->head != NIL)
        c->entries[c->head].prev = i;
    c->head = i;
    if (c->tail == NIL)
        c->tail = i;
}

static uint32_t find(const prs_cache *c, uint64_t h, const prs_cache_key *k)
{
    for (uint32_t i = c->buckets[h & c->mask]; i != NIL; i = c->entries[i].chain)
        if (key_equal(&c->entries[i], h, k))
            return i;
    return NIL;
}

const prs_query_info *prs_cache_lookup(prs_cache *c, const prs_cache_key *key)
{
    uint64_t h = key_hash(key);
    uint32_t i = find(c, h, key);
    if (i == NIL) {
        c->stats.misses++;
        return NULL;
    }
    c->stats.hits++;
    if (c->head != i) {
        lru_unlink(c, i);
        lru_push_front(c, i);
    }
    return &c->entries[i].info;
}

static void chain_remove(prs_cache *c, uint32_t i)
{
    uint32_t *link = &c->buckets[c->entries[i].hash & c->mask];
    while (*link != i)
        link = &c->entries[*link].chain;
    *link = c->entries[i].chain;
}

/* Takes the least recently used entry out of the table and the list. */
static uint32_t evict(prs_cache *c)
{
    uint32_t i = c->tail;
    chain_remove(c, i);
    lru_unlink(c, i);
    free(c->entries[i].key);
    c->entries[i].key = NULL;
    c->size--;
    c->stats.evictions++;
    return i;
}

int prs_cache_insert(prs_cache *c, const prs_cache_key *key, const prs_query_info *info)
{
    uint64_t h = key_hash(key);
    uint32_t i = find(c, h, key);
    if (i != NIL) {
        c->entries[i].info = *info;
        if (c->head != i) {
            lru_unlink(c, i);
            lru_push_front(c, i);
        }
        return 0;
    }
    if (key->text_len > SIZE_MAX - key->name_len - 1)
        return PRS_ENOMEM;
    char *copy = malloc(key->text_len + key->name_len + 1);
    if (!copy)
        return PRS_ENOMEM;
    if (key->text_len)
        memcpy(copy, key->text, key->text_len);
    if (key->name_len)
        memcpy(copy + key->text_len, key->name, key->name_len);
    if (c->free_head != NIL) {
        i = c->free_head;
        c->free_head = c->entries[i].next;
    } else if (c->fresh < c->capacity) {
        i = c->fresh++;
    } else {
        i = evict(c);
    }
    entry *e = &c->entries[i];
    e->hash = h;
    e->key = copy;
    e->text_len = key->text_len;
    e->name_len = key->name_len;
    e->info = *info;
    e->chain = c->buckets[h & c->mask];
    c->buckets[h & c->mask] = i;
    lru_push_front(c, i);
    c->size++;
    c->stats.inserts++;
    return 0;
}

prs_cache_stats prs_cache_get_stats(const prs_cache *c)
{
    prs_cache_stats s = c->stats;
    s.size = c->size;
    s.capacity = c->capacity;
    return s;
}

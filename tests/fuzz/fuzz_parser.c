/* libFuzzer target for the parser library: arbitrary bytes through the lexer, the literal
 * decoder, prs_classify and the parse cache, with the invariants the proxy relies on
 * checked on every input (a violated one aborts like a crash). Not a unit test. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "parser/parser.h"

#define CHECK(cond)                                                                                          \
    do {                                                                                                     \
        if (!(cond))                                                                                         \
            abort();                                                                                         \
    } while (0)

static void check_lexed(const char *sql, size_t size, const prs_lexed *lx)
{
    CHECK(prs_lexed_len(lx) <= 2 * size);
    CHECK(lx->n_statements <= size);
    uint32_t prev_end = 0;
    for (uint32_t i = 0; i < lx->n_lits; i++) {
        const prs_literal *l = &lx->lits[i];
        CHECK(l->len > 0 && (size_t)l->start + l->len <= size);
        CHECK(l->start >= prev_end);
        prev_end = l->start + l->len;
        CHECK(prs_lexed_find(lx, l->start) == (int)i);
        pgs_buf v = PGS_BUF_INIT;
        int rc = prs_literal_value(sql, size, l, &v);
        CHECK(rc == 0 || rc == PRS_EINVAL);
        pgs_buf_free(&v);
    }
    const prs_hints *h = &lx->hints;
    CHECK(h->target <= PRS_TARGET_ANY);
    CHECK(h->tenant_len == 0 || (size_t)h->tenant_start + h->tenant_len <= size);
}

static void check_info(const prs_query_info *qi, const prs_lexed *lx, int rc)
{
    CHECK(qi->kind < PRS_KIND__COUNT);
    CHECK(qi->pool_len <= PRS_POOL_SIZE);
    CHECK(qi->n_tables <= PRS_MAX_TABLES && qi->n_keys <= PRS_MAX_KEYS);
    if (rc != 0) {
        CHECK(!qi->read_only && qi->kind == PRS_KIND_UNKNOWN);
        return;
    }
    for (uint16_t i = 0; i < qi->n_tables; i++) {
        CHECK(prs_info_str(qi, qi->tables[i].name) != NULL);
        CHECK(qi->tables[i].schema == PRS_NO_STR || prs_info_str(qi, qi->tables[i].schema) != NULL);
    }
    for (uint16_t i = 0; i < qi->n_keys; i++) {
        const prs_key_ref *k = &qi->keys[i];
        CHECK(k->src >= PRS_KEY_LITERAL && k->src <= PRS_KEY_COPY_COLUMN);
        if (k->src == PRS_KEY_LITERAL || k->src == PRS_KEY_LITERAL_ARRAY)
            CHECK(k->index < lx->n_lits);
        /* shardkey.c reads a condition's alternatives as one run of refs */
        CHECK(k->slot == PRS_NO_SLOT || k->slot < qi->n_slots);
        for (uint16_t j = i + 1; j < qi->n_keys; j++)
            CHECK(qi->keys[j].cond != k->cond || qi->keys[j - 1].cond == k->cond);
    }
    CHECK(qi->n_occs <= PRS_MAX_OCCS && qi->n_slots <= PRS_MAX_SLOTS);
    for (uint8_t i = 0; i < qi->n_occs; i++)
        CHECK(qi->occs[i].table < qi->n_tables);
    for (uint8_t i = 0; i < qi->n_slots; i++) {
        const prs_slot *s = &qi->slots[i];
        CHECK((s->from >> i) & 1);
        CHECK(qi->n_slots == 32 || s->from >> qi->n_slots == 0);
        if (s->cands)
            CHECK(s->occ == PRS_NO_OCC && (qi->n_occs == 32 || s->cands >> qi->n_occs == 0));
        else
            CHECK(s->occ < qi->n_occs);
    }
    CHECK(qi->set_value_lit < 0 || (uint32_t)qi->set_value_lit < lx->n_lits);
    /* Anything that can write is never read-only. */
    if (qi->flags & PRS_F_WRITE_MASK)
        CHECK(!qi->read_only);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const keys[] = {"tenant_id", "aid", "id"};
    const prs_classify_opts opts = {keys, 3};
    const char *sql = (const char *)data;
    prs_lexed lx = PRS_LEXED_INIT;
    prs_query_info qi;

    int lrc = prs_lex(sql, size, &lx);
    if (lrc == 0)
        check_lexed(sql, size, &lx);
    else
        CHECK(lx.n_lits == 0 && prs_lexed_len(&lx) == 0);
    int rc = prs_classify_ex(sql, size, lrc == 0 ? &lx : NULL, &opts, &qi);
    CHECK(lrc == 0 || rc == lrc);
    check_info(&qi, &lx, rc);

    if (lrc == 0 && rc == 0) {
        prs_cache *c = prs_cache_create(2);
        CHECK(c != NULL);
        prs_cache_key k = prs_cache_key_of(&lx, "s", 1);
        CHECK(prs_cache_insert(c, &k, &qi) == 0);
        const prs_query_info *hit = prs_cache_lookup(c, &k);
        CHECK(hit && memcmp(hit, &qi, sizeof qi) == 0);
        prs_cache_destroy(c);
    }
    prs_lexed_free(&lx);
    return 0;
}

/* Session state that transaction pooling cannot replay. A statement that leaves such state
 * on its server (a temp table, a WITH HOLD cursor, a session advisory lock, LISTEN,
 * set_config(..., false)) pins that server to its client: the client keeps it across
 * transactions, with session semantics, until it removes the state or leaves. A server that
 * ever held such state is cleaned with DISCARD ALL (or closed) before anyone else gets it,
 * pinned or not (pin_session_state = off). The parser says which statements pin and unpin
 * (prs_query_info.pin/unpin); most texts are ruled out here without being parsed. */
#include <string.h>

#include "common/log.h"
#include "proxy/px.h"

static const char *const pin_names[PX_PIN_REASONS] = {"temp", "hold_cursor", "advisory_lock", "listen",
                                                      "set_config"};

const char *px_pin_reason_name(int i)
{
    return i >= 0 && i < PX_PIN_REASONS ? pin_names[i] : NULL;
}

const char *px_pin_reasons(uint8_t pins, char *buf, size_t cap)
{
    size_t n = 0;
    buf[0] = 0;
    for (int i = 0; i < PX_PIN_REASONS && n < cap; i++)
        if (pins & (1u << i)) {
            int k = snprintf(buf + n, cap - n, "%s%s", n ? "," : "", pin_names[i]);
            n += k > 0 ? (size_t)k : 0;
        }
    return buf;
}

static bool word_at(const char *s, size_t len, size_t i, const char *w, size_t wn)
{
    if (i + wn > len)
        return false;
    for (size_t k = 0; k < wn; k++) {
        char c = s[i + k];
        if (c >= 'A' && c <= 'Z')
            c = (char)(c | 0x20); /* not '_' | 0x20, which set_config's underscore is not */
        if (c != w[k])
            return false;
    }
    return true;
}

/* The words without which a statement can neither pin nor unpin (TEMP/TEMPORARY/pg_temp,
 * HOLD, pg_*advisory*, LISTEN, UNLISTEN, set_config, DISCARD, CLOSE), looked for where a
 * word starts: no two share a first letter, so a letter names the one word to look for. */
static const struct {
    const char *w;
    size_t n;
} pin_words[] = {{"temp", 4},     {"hold", 4},        {"advisory", 8}, {"listen", 6},
                 {"unlisten", 8}, {"set_config", 10}, {"discard", 7},  {"close", 5}};
/* Per byte: PIN_INWORD when it continues a word (letters, digits, bytes of multibyte
 * characters; after one no pin word starts, while '_' and '$' let one start: pg_temp, the
 * end of a dollar quote's tag), and in the low bits the index + 1 of the pin word that
 * starts with that letter, either case. */
#define PIN_INWORD 0x80
#define PIN_WORD 0x0f
static const uint8_t pin_class[256] = {
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x83, 0x80, 0x88, 0x87, 0x80, 0x80, 0x80, 0x82, 0x80, 0x80, 0x80, 0x84, 0x80, 0x80, 0x80,
    0x80, 0x80, 0x80, 0x86, 0x81, 0x85, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x83, 0x80, 0x88, 0x87, 0x80, 0x80, 0x80, 0x82, 0x80, 0x80, 0x80, 0x84, 0x80, 0x80, 0x80,
    0x80, 0x80, 0x80, 0x86, 0x81, 0x85, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80,
    0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80,
    0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80,
    0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80,
    0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80,
    0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80,
    0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80,
    0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80,
};

/* Whether the text may pin or unpin at all: one pass, no parse, on every statement of
 * transaction pooling; only texts with one of pin_words are parsed. */
bool px_pin_may(const char *s, size_t len)
{
    uint8_t prev = 0;
    for (size_t i = 0; i < len; i++) {
        uint8_t k = pin_class[(unsigned char)s[i]];
        if (!(prev & PIN_INWORD) && (k & PIN_WORD) &&
            word_at(s, len, i, pin_words[(k & PIN_WORD) - 1].w, pin_words[(k & PIN_WORD) - 1].n))
            return true;
        prev = k;
    }
    return false;
}

void px_pin_apply(px_client *cl, px_server *sv, uint8_t pin, uint16_t unpin)
{
    if (!sv || (!pin && !unpin))
        return;
    uint8_t before = sv->pins;
    sv->pins = (uint8_t)((sv->pins & ~unpin) | pin);
    if (pin)
        sv->dirty = true;
    uint8_t added = (uint8_t)(sv->pins & ~before);
    if (!added && !(before && !sv->pins))
        return;
    px_global_stats *g = &sv->conn.w->px->gs;
    for (int i = 0; i < PX_PIN_REASONS; i++)
        if (added & (1u << i))
            atomic_fetch_add_explicit(&g->pins[i], 1, memory_order_relaxed);
    char why[96];
    bool on = sv->conn.w->conf->cfg->pin_session_state;
    if (sv->pins)
        pgs_info("server_pinned", "client %08x user=%s db=%s: server pid %u %s (%s)", cl->key_pid,
                 cl->user_name, cl->db_name, sv->be_pid,
                 on ? "stays with it across transactions" : "will be cleaned when released",
                 px_pin_reasons(sv->pins, why, sizeof why));
    else
        pgs_info("server_unpinned", "client %08x user=%s db=%s: server pid %u holds no session state now",
                 cl->key_pid, cl->user_name, cl->db_name, sv->be_pid);
}

bool px_pin_holds(const px_server *sv)
{
    return sv->pins && sv->conn.w->conf->cfg->pin_session_state;
}

/* Client session state for transaction pooling (see session.h). */
#include "proxy/session.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/prepared.h"

/* Skips whitespace and comments. */
static size_t skip_space(const char *s, size_t n, size_t i)
{
    while (i < n) {
        if (isspace((unsigned char)s[i])) {
            i++;
        } else if (s[i] == '-' && i + 1 < n && s[i + 1] == '-') {
            while (i < n && s[i] != '\n')
                i++;
        } else if (s[i] == '/' && i + 1 < n && s[i + 1] == '*') {
            int depth = 0;
            do {
                if (i + 1 < n && s[i] == '/' && s[i + 1] == '*') {
                    depth++;
                    i += 2;
                } else if (i + 1 < n && s[i] == '*' && s[i + 1] == '/') {
                    depth--;
                    i += 2;
                } else {
                    i++;
                }
            } while (i < n && depth > 0);
        } else {
            break;
        }
    }
    return i;
}

/* Reads one word (identifier, possibly "quoted" or dotted) lowercased into out. */
static size_t read_word(const char *s, size_t n, size_t i, char *out, size_t cap)
{
    size_t o = 0;
    while (i < n) {
        char c = s[i];
        if (c == '"') {
            for (i++; i < n; i++) {
                if (s[i] == '"') {
                    if (i + 1 < n && s[i + 1] == '"') {
                        i++;
                    } else {
                        break;
                    }
                }
                if (o + 1 < cap)
                    out[o++] = s[i];
            }
            if (i < n) /* past the closing quote; an unclosed one ends at the text's end */
                i++;
        } else if (isalnum((unsigned char)c) || c == '_' || c == '.' || c == '$' ||
                   (unsigned char)c >= 0x80) {
            if (o + 1 < cap)
                out[o++] = (char)tolower((unsigned char)c);
            i++;
        } else {
            break;
        }
    }
    out[o] = 0;
    return i;
}

/* True when a ';' outside quotes is followed by more than space and comments. */
static bool has_more_statements(const char *s, size_t n)
{
    char q = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (q) {
            if (c == q)
                q = 0;
        } else if (c == '\'' || c == '"') {
            q = c;
        } else if (c == '$' && !(i + 1 < n && s[i + 1] >= '0' && s[i + 1] <= '9')) {
            return true; /* a dollar quote ($1 is a parameter): do not try, treat as several */
        } else if (c == ';') {
            size_t j = skip_space(s, n, i + 1);
            while (j < n && s[j] == ';')
                j = skip_space(s, n, j + 1);
            if (j < n)
                return true;
        }
    }
    return false;
}

static uint64_t name_key(const char *name)
{
    return px_hash64(name, strlen(name), 0x5e55);
}

/* True when what follows a SET's name at i is "TO DEFAULT" or "= DEFAULT", and the end. */
static bool set_to_default(const char *s, size_t n, size_t i)
{
    char w[16];
    i = skip_space(s, n, i);
    if (i < n && s[i] == '=') {
        i++;
    } else {
        i = read_word(s, n, i, w, sizeof w);
        if (strcmp(w, "to") != 0)
            return false;
    }
    i = read_word(s, n, skip_space(s, n, i), w, sizeof w);
    if (strcmp(w, "default") != 0)
        return false;
    i = skip_space(s, n, i);
    if (i < n && s[i] == ';')
        i = skip_space(s, n, i + 1);
    return i == n;
}

/* Whether the word at s may be one px_sess_classify looks at: its first three letters are
 * those of SET, RESET, DISCARD, DEALLOCATE, PREPARE or EXECUTE. Most statements are ruled
 * out here, before the word is read. */
static bool sess_may(const char *s, size_t n)
{
    static const char heads[][4] = {"set", "res", "dis", "dea", "pre", "exe"};
    if (n < 3)
        return false;
    char h[3] = {(char)(s[0] | 0x20), (char)(s[1] | 0x20), (char)(s[2] | 0x20)};
    for (size_t k = 0; k < sizeof heads / sizeof heads[0]; k++)
        if (memcmp(h, heads[k], 3) == 0)
            return true;
    return false;
}

void px_sess_classify(const char *sql, size_t len, px_sess_stmt *out)
{
    char w1[64], w2[64], w3[64];
    memset(out, 0, sizeof *out);
    size_t i = skip_space(sql, len, 0);
    if (!sess_may(sql + i, len - i))
        return;
    i = read_word(sql, len, i, w1, sizeof w1);
    bool set = strcmp(w1, "set") == 0, reset = strcmp(w1, "reset") == 0;
    bool discard = strcmp(w1, "discard") == 0, dealloc = strcmp(w1, "deallocate") == 0;
    bool prepare = strcmp(w1, "prepare") == 0, execute = strcmp(w1, "execute") == 0;
    if (!set && !reset && !discard && !dealloc && !prepare && !execute)
        return;
    if (has_more_statements(sql, len)) {
        out->kind = prepare || execute ? SESS_NONE : SESS_MULTI;
        return;
    }
    if (prepare || execute) {
        size_t at = skip_space(sql, len, i);
        size_t end = read_word(sql, len, at, out->name, sizeof out->name);
        /* PREPARE TRANSACTION is two-phase commit, not a statement. */
        if (!out->name[0] || strcmp(out->name, "transaction") == 0 || strchr(out->name, '.'))
            return;
        out->kind = prepare ? SESS_PREPARE : SESS_EXECUTE;
        out->name_at = at;
        out->name_end = end;
        return;
    }
    i = read_word(sql, len, skip_space(sql, len, i), w2, sizeof w2);
    if (set && strcmp(w2, "session") == 0) {
        size_t j = read_word(sql, len, skip_space(sql, len, i), w3, sizeof w3);
        if (strcmp(w3, "characteristics") == 0 || strcmp(w3, "authorization") == 0) {
            out->kind = SESS_SET;
            out->key = name_key(w3);
            return;
        }
        i = j;
        memcpy(w2, w3, sizeof w2);
    }
    if (set) {
        /* Transaction-scoped forms need no tracking. */
        if (strcmp(w2, "local") == 0 || strcmp(w2, "transaction") == 0 || strcmp(w2, "constraints") == 0)
            return;
        out->kind = set_to_default(sql, len, i) ? SESS_RESET : SESS_SET;
        out->key = name_key(w2);
    } else if (reset) {
        out->kind = strcmp(w2, "all") == 0 ? SESS_RESET_ALL : SESS_RESET;
        out->key = name_key(w2);
    } else if (discard) {
        if (strcmp(w2, "all") == 0)
            out->kind = SESS_DISCARD_ALL;
    } else {
        if (strcmp(w2, "prepare") == 0) {
            size_t k = skip_space(sql, len, i);
            read_word(sql, len, k, w2, sizeof w2);
        }
        if (strcmp(w2, "all") == 0) {
            out->kind = SESS_DEALLOCATE_ALL;
            return;
        }
        /* The name as written (case kept for quoted names): reread without lowercasing
         * is not needed for unquoted names, which PostgreSQL lowercases too. */
        out->kind = w2[0] ? SESS_DEALLOCATE : SESS_NONE;
        memcpy(out->name, w2, sizeof out->name);
    }
}

static px_setting *setting_new(uint64_t key, const char *text, size_t len)
{
    px_setting *st = malloc(sizeof *st + len + 1);
    if (!st)
        return NULL;
    st->key = key;
    st->len = (uint32_t)len;
    memcpy(st->text, text, len);
    st->text[len] = 0;
    return st;
}

static int list_push(px_setting ***items, size_t *n, size_t *cap, px_setting *st)
{
    if (*n == *cap) {
        size_t nc = *cap ? *cap * 2 : 4;
        /* NOLINTNEXTLINE(bugprone-sizeof-expression): an array of pointers */
        px_setting **p = realloc(*items, nc * sizeof *p);
        if (!p)
            return -1;
        *items = p;
        *cap = nc;
    }
    (*items)[(*n)++] = st;
    return 0;
}

static int stage_one(px_session *s, uint64_t key, const char *sql, size_t len)
{
    if (s->bytes + len > PX_SESSION_MAX_BYTES)
        return -1;
    px_setting *e = setting_new(key, sql, len);
    if (!e || list_push(&s->pending, &s->npending, &s->pcap, e) < 0) {
        free(e);
        return -1;
    }
    return 0;
}

/* SET SESSION CHARACTERISTICS AS TRANSACTION modes is PostgreSQL's other spelling of SET
 * default_transaction_isolation, _read_only and _deferrable: staged as those SETs, so that
 * a later SET or RESET of one of them replaces it, as on the server. Returns 1 when the
 * modes were understood and staged, 0 when not (the text is kept as written), -1 as
 * px_session_stage. */
static int stage_characteristics(px_session *s, const char *sql, size_t len)
{
    static const char *const levels[][2] = {
        {"serializable", ""}, {"repeatable", "read"}, {"read", "committed"}, {"read", "uncommitted"}};
    char w[8][24], set[3][80];
    const char *name[3];   /* the parameter each of set[] sets */
    int nset = 0, nw = -1; /* -1: before TRANSACTION */
    size_t i = 0;
    /* The words after TRANSACTION, commas dropped. */
    while (i < len) {
        char t[24];
        size_t j = read_word(sql, len, skip_space(sql, len, i), t, sizeof t);
        if (j == skip_space(sql, len, i)) {
            if (j < len && (sql[j] == ',' || sql[j] == ';')) {
                i = j + 1;
                continue;
            }
            if (j < len)
                return 0;
            break;
        }
        i = j;
        if (nw < 0) {
            if (strcmp(t, "transaction") == 0)
                nw = 0;
            continue;
        }
        if (nw == (int)(sizeof w / sizeof *w))
            return 0;
        memcpy(w[nw++], t, sizeof t);
    }
    for (int k = 0; k < nw;) {
        if (nset == 3)
            return 0;
        if (strcmp(w[k], "isolation") == 0 && k + 2 < nw && strcmp(w[k + 1], "level") == 0) {
            size_t l = 0;
            while (l < 4 && !(strcmp(w[k + 2], levels[l][0]) == 0 &&
                              (!levels[l][1][0] || (k + 3 < nw && strcmp(w[k + 3], levels[l][1]) == 0))))
                l++;
            if (l == 4)
                return 0;
            name[nset] = "default_transaction_isolation";
            snprintf(set[nset++], sizeof set[0], "SET default_transaction_isolation = '%s%s%s'", levels[l][0],
                     levels[l][1][0] ? " " : "", levels[l][1]);
            k += levels[l][1][0] ? 4 : 3;
        } else if (strcmp(w[k], "read") == 0 && k + 1 < nw &&
                   (strcmp(w[k + 1], "only") == 0 || strcmp(w[k + 1], "write") == 0)) {
            name[nset] = "default_transaction_read_only";
            snprintf(set[nset++], sizeof set[0], "SET default_transaction_read_only = %s",
                     w[k + 1][0] == 'o' ? "on" : "off");
            k += 2;
        } else if (strcmp(w[k], "deferrable") == 0 ||
                   (strcmp(w[k], "not") == 0 && k + 1 < nw && strcmp(w[k + 1], "deferrable") == 0)) {
            name[nset] = "default_transaction_deferrable";
            snprintf(set[nset++], sizeof set[0], "SET default_transaction_deferrable = %s",
                     w[k][0] == 'd' ? "on" : "off");
            k += w[k][0] == 'd' ? 1 : 2;
        } else {
            return 0;
        }
    }
    if (nset == 0)
        return 0;
    for (int k = 0; k < nset; k++) {
        if (stage_one(s, name_key(name[k]), set[k], strlen(set[k])) < 0)
            return -1;
    }
    return 1;
}

int px_session_stage(px_session *s, const px_sess_stmt *st, const char *sql, size_t len)
{
    if (st->kind == SESS_RESET_ALL || st->kind == SESS_DISCARD_ALL) {
        for (size_t i = 0; i < s->npending; i++)
            free(s->pending[i]);
        s->npending = 0;
        s->pending_reset_all = true;
        return 0;
    }
    if (st->kind == SESS_SET && st->key == name_key("characteristics")) {
        int r = stage_characteristics(s, sql, len);
        if (r != 0)
            return r < 0 ? -1 : 0;
    }
    /* A RESET is staged as an entry with no text: committing it removes the key. */
    uint64_t key = st->kind == SESS_MULTI ? px_hash64(sql, len, 1) : st->key;
    return stage_one(s, key, sql, st->kind == SESS_RESET ? 0 : len);
}

static void session_remove_key(px_session *s, uint64_t key)
{
    size_t o = 0;
    for (size_t i = 0; i < s->n; i++) {
        if (s->items[i]->key == key) {
            s->bytes -= s->items[i]->len;
            free(s->items[i]);
        } else {
            s->items[o++] = s->items[i];
        }
    }
    s->n = o;
}

static void session_clear(px_session *s)
{
    for (size_t i = 0; i < s->n; i++)
        free(s->items[i]);
    s->n = 0;
    s->bytes = 0;
}

/* Whether a setting of default_transaction_isolation (SET, the startup packet's
 * set_config, SET SESSION CHARACTERISTICS as staged) makes it serializable. */
static bool setting_serializable(const px_setting *st)
{
    for (size_t i = 0; i < st->len;) {
        char w[16];
        size_t j = read_word(st->text, st->len, i, w, sizeof w);
        if (j == i) {
            i++;
            continue;
        }
        i = j;
        if (strcmp(w, "serializable") == 0)
            return true;
    }
    return false;
}

/* Sessions with the same settings in the same order share a signature, so a server left
 * in that state by one client needs no replay for another (all of pgbench's clients).
 * Notes the default isolation level on the way: the last setting of it holds. */
static void session_sign(px_session *s)
{
    uint64_t h = 0, iso = name_key("default_transaction_isolation");
    s->iso_set = s->serializable = false;
    for (size_t i = 0; i < s->n; i++) {
        h = px_hash64(s->items[i]->text, s->items[i]->len, h);
        if (s->items[i]->key == iso) { /* one at most: a newer one replaces it */
            s->iso_set = true;
            s->serializable = setting_serializable(s->items[i]);
        }
    }
    s->sig = s->n ? h : 0;
}

/* Puts back the startup value of key (every one when all), as the newest settings. */
static void session_restore(px_session *s, uint64_t key, bool all)
{
    for (size_t i = 0; i < s->nd; i++) {
        const px_setting *d = s->defaults[i];
        if (!all && d->key != key)
            continue;
        px_setting *e = setting_new(d->key, d->text, d->len);
        if (!e || list_push(&s->items, &s->n, &s->cap, e) < 0) {
            free(e);
            continue;
        }
        s->bytes += e->len;
    }
}

void px_session_end(px_session *s, bool committed)
{
    if (committed && !s->pending_failed) {
        if (s->pending_reset_all) {
            session_clear(s);
            session_restore(s, 0, true);
        }
        for (size_t i = 0; i < s->npending; i++) {
            px_setting *e = s->pending[i];
            session_remove_key(s, e->key);
            if (e->len == 0) {
                session_restore(s, e->key, false); /* a RESET */
                free(e);
                continue;
            }
            if (list_push(&s->items, &s->n, &s->cap, e) < 0) {
                free(e);
                continue;
            }
            s->bytes += e->len;
        }
        session_sign(s);
    } else {
        for (size_t i = 0; i < s->npending; i++)
            free(s->pending[i]);
    }
    s->npending = 0;
    s->pending_reset_all = false;
    s->pending_failed = false;
}

int px_session_add_param(px_session *s, const char *name, const char *value)
{
    pgs_buf b = PGS_BUF_INIT;
    char lname[64];
    size_t n = pgs_strnlen(name, sizeof lname - 1);
    for (size_t i = 0; i < n; i++)
        lname[i] = (char)tolower((unsigned char)name[i]);
    lname[n] = 0;
    /* set_config takes the value as the startup packet gives it: SET name TO 'a,b' would
     * make "a,b" one element of a list setting such as search_path. */
    pgs_buf_append(&b, "SELECT pg_catalog.set_config('", 30);
    for (const char *p = name; *p; p++) {
        if (*p == '\'')
            pgs_buf_append_u8(&b, '\'');
        pgs_buf_append_u8(&b, (uint8_t)*p);
    }
    pgs_buf_append(&b, "', '", 4);
    for (const char *p = value; *p; p++) {
        if (*p == '\'')
            pgs_buf_append_u8(&b, '\'');
        pgs_buf_append_u8(&b, (uint8_t)*p);
    }
    pgs_buf_append(&b, "', false)", 9);
    int r = -1;
    if (!pgs_buf_failed(&b) && s->bytes + b.len <= PX_SESSION_MAX_BYTES) {
        uint64_t key = name_key(lname);
        px_setting *e = setting_new(key, (const char *)b.data, b.len);
        px_setting *d = setting_new(key, (const char *)b.data, b.len);
        if (e && d && list_push(&s->items, &s->n, &s->cap, e) == 0) {
            s->bytes += e->len;
            session_sign(s);
            e = NULL;
            /* A parameter given twice (options and a packet field) counts once, the last. */
            size_t o = 0;
            for (size_t i = 0; i < s->nd; i++) {
                if (s->defaults[i]->key == key)
                    free(s->defaults[i]);
                else
                    s->defaults[o++] = s->defaults[i];
            }
            s->nd = o;
            if (list_push(&s->defaults, &s->nd, &s->dcap, d) == 0) { /* bounded by the packet */
                d = NULL;
                r = 0;
            }
        }
        free(e);
        free(d);
    }
    pgs_buf_free(&b);
    return r;
}

int px_session_restore_sql(const px_session *s, const px_sess_stmt *st, pgs_buf *out)
{
    bool all = st->kind == SESS_RESET_ALL || st->kind == SESS_DISCARD_ALL;
    if (!all && st->kind != SESS_RESET)
        return 0;
    int n = 0;
    for (size_t i = 0; i < s->nd; i++) {
        if (!all && s->defaults[i]->key != st->key)
            continue;
        if (n++ && out)
            pgs_buf_append(out, ";\n", 2);
        if (out)
            pgs_buf_append(out, s->defaults[i]->text, s->defaults[i]->len);
    }
    return n;
}

void px_session_replay_sql(const px_session *s, pgs_buf *out)
{
    /* Each text on its own lines, so a trailing -- comment cannot swallow the next one.
     * RESET ALL leaves the role and the session authorization as they are (PostgreSQL
     * marks them GUC_NO_RESET_ALL): another client's SET ROLE would stay in force. The
     * replay runs in one transaction, begun under the server's old defaults: read committed
     * first, or a hot standby left serializable by default by another client's SET refuses
     * the first statement that takes a snapshot ("cannot use serializable mode"). */
    static const char reset[] =
        "SET TRANSACTION ISOLATION LEVEL READ COMMITTED;\nRESET SESSION AUTHORIZATION;\n"
        "RESET ROLE;\nRESET ALL";
    pgs_buf_append(out, reset, sizeof reset - 1);
    for (size_t i = 0; i < s->n; i++) {
        pgs_buf_append(out, ";\n", 2);
        pgs_buf_append(out, s->items[i]->text, s->items[i]->len);
        pgs_buf_append(out, "\n", 1);
    }
}

uint64_t px_session_search_path_sig(const px_session *s)
{
    uint64_t key = name_key("search_path");
    for (size_t i = 0; i < s->n; i++)
        if (s->items[i]->key == key)
            return px_hash64(s->items[i]->text, s->items[i]->len, 7);
    return 0;
}

void px_session_free(px_session *s)
{
    session_clear(s);
    for (size_t i = 0; i < s->npending; i++)
        free(s->pending[i]);
    for (size_t i = 0; i < s->nd; i++)
        free(s->defaults[i]);
    free(s->items);
    free(s->pending);
    free(s->defaults);
    memset(s, 0, sizeof *s);
}

/* Client encodings whose multibyte characters may hold bytes of ASCII characters (a
 * backslash, a delimiter, a quote, a newline): text cut byte by byte would be cut wrongly.
 * PostgreSQL's names and aliases, as clean_encoding_name leaves them (lower case, letters
 * and digits only). */
static const char *const unsafe_encodings[] = {
    "sjis", "shiftjis", "mskanji",    "win932",  "windows932", "shiftjis2004",
    "big5", "win950",   "windows950", "gbk",     "win936",     "windows936",
    "uhc",  "win949",   "windows949", "gb18030", "johab"};

const char *px_session_unsafe_encoding(const px_session *s)
{
    uint64_t key = name_key("client_encoding");
    const px_setting *set = NULL;
    for (size_t i = 0; s && i < s->n; i++)
        if (s->items[i]->key == key)
            set = s->items[i];
    if (!set)
        return NULL;
    /* Each word of the setting's statement (letters, digits, '_' and '-'), cleaned as
     * PostgreSQL cleans an encoding name: its value is one, and no other word of it (set,
     * client_encoding, to, select, set_config, false) is one of the names. */
    char w[32];
    size_t n = 0;
    for (uint32_t i = 0; i <= set->len; i++) {
        unsigned char c = i < set->len ? (unsigned char)set->text[i] : ' ';
        if (isalnum(c) && n < sizeof w - 1) {
            w[n++] = (char)tolower(c);
            continue;
        }
        if (c == '_' || c == '-' || isalnum(c))
            continue; /* dropped as PostgreSQL does, or past any name's length */
        w[n] = 0;
        for (size_t k = 0; n && k < sizeof unsafe_encodings / sizeof *unsafe_encodings; k++)
            if (strcmp(w, unsafe_encodings[k]) == 0)
                return unsafe_encodings[k];
        n = 0;
    }
    return NULL;
}

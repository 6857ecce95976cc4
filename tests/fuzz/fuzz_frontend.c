/* libFuzzer target for the client side of the proxy: the input is what clients send, fed
 * through a real socket into a real worker (proxy_harness.c) in chunks the input chooses,
 * so the startup packet, SSLRequest, CancelRequest, authentication and every message after
 * login reach client.c, route.c and extended.c as they would from the network, also cut in
 * the middle. The servers are a scripted backend that answers like PostgreSQL would (login,
 * simple and extended queries, COPY, errors), so routed messages get replies and the reply
 * path runs too. Not a unit test.
 *
 * Input: one byte choosing the config, then operations, each an opcode byte:
 *   op & 7 in 0..4  a chunk for the current client: a 2-byte big-endian length, that many bytes
 *   op & 7 == 5     the current client answers the proxy's md5 or SCRAM request correctly
 *   op & 7 == 6     a new client connection becomes the current one
 *   op & 7 == 7     an event, (op >> 3) & 3: the newest server resets; every server sends a
 *                   NoticeResponse and a ParameterStatus; timeouts run; the client half-closes
 * The loop runs until nothing moves after each operation. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "tests/fuzz/proxy_harness.h"

static void be_send(ph_peer *p, pgs_buf *b)
{
    ph_send(p, b->data, b->len);
    pgs_buf_free(b);
}

static void be_login_ok(ph_peer *p)
{
    pgs_buf b = PGS_BUF_INIT;
    pgs_msg_auth(&b, 0, NULL, 0);
    pgs_msg_param_status(&b, "server_version", "15.8");
    pgs_msg_param_status(&b, "client_encoding", "UTF8");
    pgs_msg_param_status(&b, "standard_conforming_strings", "on");
    pgs_msg_param_status(&b, "DateStyle", "ISO, MDY");
    pgs_msg_param_status(&b, "TimeZone", "UTC");
    pgs_msg_param_status(&b, "integer_datetimes", "on");
    pgs_msg_backend_key(&b, 4242, 0x5eed);
    pgs_msg_ready(&b, PGS_TX_IDLE);
    p->scram_state = 3;
    be_send(p, &b);
}

static void be_error(ph_peer *p, pgs_buf *b, const char *sqlstate, const char *msg)
{
    pgs_msg_notice_typed(b, PGS_BE_ERROR, "ERROR", sqlstate, msg);
    if (p->tx == PGS_TX_BLOCK)
        p->tx = PGS_TX_FAILED;
}

static bool starts_with(const char *s, size_t n, const char *word)
{
    size_t k = strlen(word);
    return n >= k && strncasecmp(s, word, k) == 0;
}

static bool contains(const char *s, size_t n, const char *needle)
{
    size_t k = strlen(needle);
    for (size_t i = 0; i + k <= n; i++)
        if (strncasecmp(s + i, needle, k) == 0)
            return true;
    return false;
}

/* The reply to a simple Query, from its first word. "err" anywhere fails it. */
static void be_query(ph_peer *p, const char *sql, size_t n)
{
    static const char *const col[] = {"?column?"};
    pgs_buf b = PGS_BUF_INIT;
    while (n && (*sql == ' ' || *sql == '\n' || *sql == '\t' || *sql == '('))
        sql++, n--;
    bool ends = starts_with(sql, n, "commit") || starts_with(sql, n, "end") ||
                starts_with(sql, n, "rollback") || starts_with(sql, n, "abort");
    if (contains(sql, n, "notice"))
        pgs_msg_notice_typed(&b, PGS_BE_NOTICE, "NOTICE", "00000", "a notice");
    if (n == 0) {
        ph_msg(&b, PGS_BE_EMPTY_QUERY, NULL, 0);
    } else if (contains(sql, n, "err") || (p->tx == PGS_TX_FAILED && !ends)) {
        be_error(p, &b, "42601", "syntax error at or near \"err\"");
    } else if (starts_with(sql, n, "copy") && contains(sql, n, "stdin")) {
        static const uint8_t copy_in[] = {0, 0, 1, 0, 0};
        ph_msg(&b, PGS_BE_COPY_IN, copy_in, sizeof copy_in);
        p->copy_in = true;
        be_send(p, &b);
        return;
    } else if (starts_with(sql, n, "copy")) {
        static const uint8_t copy_out[] = {0, 0, 1, 0, 0};
        ph_msg(&b, PGS_BE_COPY_OUT, copy_out, sizeof copy_out);
        ph_msg(&b, PGS_BE_COPY_DATA, "1\tone\n", 6);
        ph_msg(&b, PGS_BE_COPY_DONE, NULL, 0);
        pgs_msg_complete(&b, "COPY 1");
    } else if (starts_with(sql, n, "begin") || starts_with(sql, n, "start")) {
        pgs_msg_complete(&b, "BEGIN");
        if (p->tx == PGS_TX_IDLE)
            p->tx = PGS_TX_BLOCK;
    } else if (ends) {
        pgs_msg_complete(&b, p->tx == PGS_TX_BLOCK && !starts_with(sql, n, "r") && !starts_with(sql, n, "a")
                                 ? "COMMIT"
                                 : "ROLLBACK");
        p->tx = PGS_TX_IDLE;
    } else if (starts_with(sql, n, "set") || starts_with(sql, n, "reset") || starts_with(sql, n, "discard")) {
        if (contains(sql, n, "application_name"))
            pgs_msg_param_status(&b, "application_name", "fuzz");
        pgs_msg_complete(&b, starts_with(sql, n, "set")     ? "SET"
                             : starts_with(sql, n, "reset") ? "RESET"
                                                            : "DISCARD ALL");
    } else if (starts_with(sql, n, "listen") || contains(sql, n, "notify")) {
        pgs_msg_complete(&b, "LISTEN");
        static const uint8_t notify[] = {0, 0, 16, 146, 'c', 'h', 0, 'x', 0};
        ph_msg(&b, PGS_BE_NOTIFY, notify, sizeof notify);
    } else {
        pgs_msg_row_desc_text(&b, col, 1);
        static const uint8_t row[] = {0, 1, 0, 0, 0, 1, '1'};
        ph_msg(&b, PGS_BE_DATA_ROW, row, sizeof row);
        pgs_msg_complete(&b, "SELECT 1");
    }
    pgs_msg_ready(&b, p->tx);
    be_send(p, &b);
}

/* One extended-protocol message; after an error everything up to Sync is ignored. */
static void be_extended(ph_peer *p, char type, const uint8_t *body, size_t n)
{
    pgs_buf b = PGS_BUF_INIT;
    if (type == PGS_FE_SYNC) {
        p->skipping = false;
        pgs_msg_ready(&b, p->tx);
        be_send(p, &b);
        return;
    }
    if (p->skipping)
        return;
    switch (type) {
    case PGS_FE_PARSE: {
        const char *name = (const char *)body;
        size_t nl = strnlen(name, n);
        const char *sql = nl < n ? name + nl + 1 : "";
        if (contains(sql, strnlen(sql, n - (nl < n ? nl + 1 : n)), "err")) {
            be_error(p, &b, "42601", "syntax error at or near \"err\"");
            p->skipping = true;
        } else {
            ph_msg(&b, PGS_BE_PARSE_COMPLETE, NULL, 0);
        }
        break;
    }
    case PGS_FE_BIND:
        ph_msg(&b, PGS_BE_BIND_COMPLETE, NULL, 0);
        break;
    case PGS_FE_DESCRIBE:
        if (n && body[0] == 'S') {
            static const uint8_t none[] = {0, 0};
            ph_msg(&b, PGS_BE_PARAM_DESC, none, sizeof none);
        }
        ph_msg(&b, PGS_BE_NO_DATA, NULL, 0);
        break;
    case PGS_FE_EXECUTE:
        pgs_msg_complete(&b, "SELECT 0");
        break;
    case PGS_FE_CLOSE:
        ph_msg(&b, PGS_BE_CLOSE_COMPLETE, NULL, 0);
        break;
    default:
        break;
    }
    be_send(p, &b);
}

static void be_copy(ph_peer *p, char type)
{
    pgs_buf b = PGS_BUF_INIT;
    if (type == PGS_FE_COPY_DONE) {
        pgs_msg_complete(&b, "COPY 1");
    } else if (type == PGS_FE_COPY_FAIL) {
        be_error(p, &b, "57014", "COPY from stdin failed");
    } else {
        return;
    }
    p->copy_in = false;
    pgs_msg_ready(&b, p->tx);
    be_send(p, &b);
}

/* The proxy's login: trust, md5 (any answer is right) or SCRAM with the harness's secret. */
static void be_password(ph_rig *r, ph_peer *p, const uint8_t *body, size_t n)
{
    if (ph_backend_auth_of(r) == 5) {
        be_login_ok(p);
        return;
    }
    p->auth_len = n < sizeof p->auth_data ? n : sizeof p->auth_data;
    memcpy(p->auth_data, body, p->auth_len);
    ph_server_scram(r, p);
    if (p->scram_state == 3)
        be_login_ok(p);
}

static void be_hello(ph_rig *r, ph_peer *p)
{
    p->hello_done = true;
    p->tx = PGS_TX_IDLE;
    uint32_t auth = ph_backend_auth_of(r);
    if (auth == 5) {
        static const uint8_t salt[4] = {1, 2, 3, 4};
        pgs_buf b = PGS_BUF_INIT;
        pgs_msg_auth(&b, 5, salt, sizeof salt);
        be_send(p, &b);
    } else if (auth == 10) {
        ph_server_scram(r, p);
    } else {
        be_login_ok(p);
    }
}

/* Consumes whole messages from the proxy and answers them. */
static void backend_script(ph_rig *r, ph_peer *p)
{
    while (p->fd >= 0) {
        const uint8_t *m = p->in.data;
        size_t avail = p->in.len;
        if (!p->hello_done) {
            if (avail < 8)
                return;
            uint32_t len = pgs_be32(m), code = pgs_be32(m + 4);
            if (len < 8 || len > PGS_MAX_STARTUP_LEN) {
                ph_close(p);
                return;
            }
            if (avail < len)
                return;
            pgs_buf_consume(&p->in, len);
            if (code == PGS_CODE_SSL || code == PGS_CODE_GSSENC) {
                ph_send(p, "N", 1);
            } else if (code == PGS_CODE_CANCEL) {
                p->hello_done = true;
                ph_close(p);
            } else {
                be_hello(r, p);
            }
            continue;
        }
        if (avail < PGS_HDR_LEN)
            return;
        uint32_t len = pgs_be32(m + 1);
        if (len < 4) {
            ph_close(p);
            return;
        }
        if (avail < (size_t)len + 1)
            return;
        char type = (char)m[0];
        const uint8_t *body = m + PGS_HDR_LEN;
        size_t n = len - 4;
        if (p->scram_state < 3 && type == PGS_FE_PASSWORD)
            be_password(r, p, body, n);
        else if (type == PGS_FE_TERMINATE)
            ph_close(p);
        else if (p->copy_in &&
                 (type == PGS_FE_COPY_DATA || type == PGS_FE_COPY_DONE || type == PGS_FE_COPY_FAIL))
            be_copy(p, type);
        else if (type == PGS_FE_COPY_DATA || type == PGS_FE_COPY_DONE || type == PGS_FE_COPY_FAIL)
            ; /* outside COPY PostgreSQL ignores them */
        else if (type == PGS_FE_QUERY)
            be_query(p, (const char *)body, n ? strnlen((const char *)body, n) : 0);
        else if (type == PGS_FE_FUNCTION_CALL) {
            pgs_buf b = PGS_BUF_INIT;
            static const uint8_t null_result[] = {0xff, 0xff, 0xff, 0xff};
            ph_msg(&b, PGS_BE_FUNCTION_RESULT, null_result, sizeof null_result);
            pgs_msg_ready(&b, p->tx);
            be_send(p, &b);
        } else if (strchr("PBDECSH", type) && type)
            be_extended(p, type, body, n);
        else {
            pgs_buf b = PGS_BUF_INIT;
            pgs_msg_notice_typed(&b, PGS_BE_ERROR, "FATAL", "08P01", "invalid frontend message type");
            be_send(p, &b);
            ph_close(p);
            return;
        }
        if (p->fd >= 0)
            pgs_buf_consume(&p->in, (size_t)len + 1);
    }
}

static void event(ph_rig *r, ph_peer *cl, unsigned kind)
{
    switch (kind) {
    case 0: {
        ph_peer *sv = ph_server(r);
        if (sv)
            ph_close(sv);
        break;
    }
    case 1:
        for (int i = 0; i < r->npeers; i++) {
            ph_peer *p = &r->peers[i];
            if (!p->is_server || p->fd < 0 || p->scram_state != 3)
                continue;
            pgs_buf b = PGS_BUF_INIT;
            pgs_msg_notice_typed(&b, PGS_BE_NOTICE, "WARNING", "01000", "unsolicited");
            pgs_msg_param_status(&b, "TimeZone", "Europe/Paris");
            be_send(p, &b);
        }
        break;
    case 2:
        ph_tick(r);
        break;
    default:
        ph_shutdown_write(cl);
        break;
    }
}

/* The user name of a startup packet at the start of a client's first chunk, for md5. */
static void note_user(ph_rig *r, const uint8_t *p, size_t n)
{
    if (n < 8 || pgs_be32(p + 4) != PGS_PROTO_V3)
        return;
    size_t end = pgs_be32(p) < n ? pgs_be32(p) : n;
    for (size_t i = 8; i < end;) {
        const char *k = (const char *)p + i;
        size_t kl = strnlen(k, end - i);
        if (kl == 0 || i + kl + 1 >= end)
            return;
        const char *v = k + kl + 1;
        size_t vl = strnlen(v, end - i - kl - 1);
        if (strcmp(k, "user") == 0 && vl < sizeof r->user) {
            memcpy(r->user, v, vl);
            r->user[vl] = 0;
        }
        i += kl + vl + 2;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    ph_rig *r = ph_begin(data[0], backend_script);
    ph_peer *cl = r->client;
    bool first = true;
    size_t off = 1;
    while (off < size) {
        uint8_t op = data[off++];
        switch (op & 7) {
        case 5:
            ph_client_auth(r, cl);
            break;
        case 6: {
            ph_peer *p = ph_connect_client(r);
            if (p) {
                cl = p;
                first = true;
            }
            break;
        }
        case 7:
            event(r, cl, (op >> 3) & 3);
            break;
        default: {
            size_t len;
            const uint8_t *chunk = ph_chunk(data, size, &off, &len);
            if (first)
                note_user(r, chunk, len);
            first = false;
            ph_send(cl, chunk, len);
            break;
        }
        }
        ph_settle(r);
    }
    ph_end(r);
    return 0;
}

/* libFuzzer target for the server side of the proxy: a scripted, well-behaved client logs
 * in through a real worker (proxy_harness.c) and sends statements the input picks, while
 * the input's own bytes are what the servers answer: login (authentication requests,
 * ParameterStatus, BackendKeyData), then replies of any shape (errors, notices, rows, COPY,
 * ReadyForQuery with odd status bytes, bad, huge or truncated lengths). They reach
 * server.c's login and relay, extended.c's reply queue and the client's stream. Not a unit
 * test.
 *
 * Input: one byte choosing the config, then operations, each an opcode byte:
 *   op & 7 in 0..3  bytes from the server that last heard from the proxy: a 2-byte
 *                   big-endian length, that many bytes
 *   op & 7 in 4, 7  the client sends canned message(s) number (next byte)
 *   op & 7 == 5     that server takes one step of a correct SCRAM exchange
 *   op & 7 == 6     an event, (op >> 3) & 3: that server resets; timeouts run; the client
 *                   half-closes; a second client logs in and becomes the current one
 * The loop runs until nothing moves after each operation. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tests/fuzz/proxy_harness.h"

/* Keeps no server input but the body of the last password message (for SCRAM). */
static void backend_sink(ph_rig *r, ph_peer *p)
{
    (void)r;
    for (;;) {
        const uint8_t *m = p->in.data;
        size_t avail = p->in.len;
        if (!p->hello_done) {
            if (avail < 8)
                return;
            uint32_t len = pgs_be32(m);
            if (len < 8 || len > PGS_MAX_STARTUP_LEN) {
                pgs_buf_clear(&p->in);
                return;
            }
            if (avail < len)
                return;
            p->hello_done = pgs_be32(m + 4) != PGS_CODE_SSL;
            pgs_buf_consume(&p->in, len);
            continue;
        }
        if (avail < PGS_HDR_LEN)
            return;
        uint32_t len = pgs_be32(m + 1);
        if (len < 4) {
            pgs_buf_clear(&p->in);
            return;
        }
        if (avail < (size_t)len + 1)
            return;
        if (m[0] == PGS_FE_PASSWORD) {
            p->auth_len = len - 4 < sizeof p->auth_data ? len - 4 : sizeof p->auth_data;
            memcpy(p->auth_data, m + PGS_HDR_LEN, p->auth_len);
        }
        pgs_buf_consume(&p->in, (size_t)len + 1);
    }
}

static void query(pgs_buf *b, const char *sql)
{
    ph_msg_str(b, PGS_FE_QUERY, sql);
}

static void parse(pgs_buf *b, const char *name, const char *sql, uint16_t nparams)
{
    size_t st = pgs_msg_begin(b, PGS_FE_PARSE);
    pgs_buf_append_cstr(b, name);
    pgs_buf_append_cstr(b, sql);
    pgs_buf_append_be16(b, nparams);
    for (uint16_t i = 0; i < nparams; i++)
        pgs_buf_append_be32(b, 23);
    pgs_msg_end(b, st);
}

static void msg_bind(pgs_buf *b, const char *stmt, const char *param)
{
    size_t st = pgs_msg_begin(b, PGS_FE_BIND);
    pgs_buf_append_cstr(b, "");
    pgs_buf_append_cstr(b, stmt);
    pgs_buf_append_be16(b, 0);
    pgs_buf_append_be16(b, param ? 1 : 0);
    if (param) {
        pgs_buf_append_be32(b, (uint32_t)strlen(param));
        pgs_buf_append(b, param, strlen(param));
    }
    pgs_buf_append_be16(b, 0);
    pgs_msg_end(b, st);
}

static void describe(pgs_buf *b, char what, const char *name)
{
    size_t st = pgs_msg_begin(b, what == 'C' ? PGS_FE_CLOSE : PGS_FE_DESCRIBE);
    pgs_buf_append_u8(b, what == 'C' ? 'S' : (uint8_t)what);
    pgs_buf_append_cstr(b, name);
    pgs_msg_end(b, st);
}

static void execute(pgs_buf *b)
{
    size_t st = pgs_msg_begin(b, PGS_FE_EXECUTE);
    pgs_buf_append_cstr(b, "");
    pgs_buf_append_be32(b, 0);
    pgs_msg_end(b, st);
}

static void empty(pgs_buf *b, char type)
{
    ph_msg(b, type, NULL, 0);
}

static void cancel(ph_rig *r, ph_peer *cl)
{
    ph_peer *p = ph_connect_client(r);
    if (!p)
        return;
    pgs_buf b = PGS_BUF_INIT;
    pgs_buf_append_be32(&b, 16);
    pgs_buf_append_be32(&b, PGS_CODE_CANCEL);
    pgs_buf_append_be32(&b, cl->key_pid);
    pgs_buf_append_be32(&b, cl->key_secret);
    ph_send(p, b.data, b.len);
    pgs_buf_free(&b);
}

/* The client's repertoire: what psql, pgbench and the drivers send. */
static void client_step(ph_rig *r, ph_peer *cl, uint8_t which)
{
    pgs_buf b = PGS_BUF_INIT;
    switch (which % 24) {
    case 0:
        query(&b, "SELECT 1");
        break;
    case 1:
        query(&b, "BEGIN");
        break;
    case 2:
        query(&b, "COMMIT");
        break;
    case 3:
        parse(&b, "", "SELECT $1", 1);
        msg_bind(&b, "", "42");
        describe(&b, 'P', "");
        execute(&b);
        empty(&b, PGS_FE_SYNC);
        break;
    case 4:
        parse(&b, "s1", "SELECT aid FROM accounts WHERE aid = $1", 1);
        empty(&b, PGS_FE_SYNC);
        break;
    case 5:
        msg_bind(&b, "s1", "7");
        execute(&b);
        empty(&b, PGS_FE_SYNC);
        break;
    case 6:
        query(&b, "COPY t FROM STDIN");
        break;
    case 7:
        ph_msg(&b, PGS_FE_COPY_DATA, "1\tx\n", 4);
        empty(&b, PGS_FE_COPY_DONE);
        break;
    case 8:
        ph_msg_str(&b, PGS_FE_COPY_FAIL, "client gave up");
        break;
    case 9:
        query(&b, "SELECT 1; SELECT 2");
        break;
    case 10:
        parse(&b, "", "SELECT 2", 0);
        describe(&b, 'S', "");
        empty(&b, PGS_FE_FLUSH);
        break;
    case 11:
        empty(&b, PGS_FE_TERMINATE);
        break;
    case 12:
        cancel(r, cl);
        break;
    case 13:
        query(&b, "SET application_name = 'x'");
        break;
    case 14:
        query(&b, "COPY t TO STDOUT");
        break;
    case 15:
        query(&b, "LISTEN ch");
        break;
    case 16:
        query(&b, "SELECT * FROM orders WHERE tenant_id = 1");
        break;
    case 17:
        query(&b, "DISCARD ALL");
        break;
    case 18:
        empty(&b, PGS_FE_SYNC);
        break;
    case 19:
        query(&b, "");
        break;
    case 20: {
        static const uint8_t call[] = {0, 0, 4, 0xd2, 0, 0, 0, 0, 0, 0};
        ph_msg(&b, PGS_FE_FUNCTION_CALL, call, sizeof call);
        break;
    }
    case 21:
        describe(&b, 'C', "s1");
        empty(&b, PGS_FE_SYNC);
        break;
    case 22:
        query(&b, "SET pgshard.tenant = 7");
        break;
    default:
        query(&b, "INSERT INTO orders (tenant_id, v) VALUES (3, 'x') RETURNING *");
        break;
    }
    ph_send(cl, b.data, b.len);
    pgs_buf_free(&b);
}

/* A client logs in; with md5 or SCRAM configs it answers the proxy's request itself. */
static void login(ph_rig *r, ph_peer *cl)
{
    pgs_buf b = PGS_BUF_INIT;
    ph_startup(&b, "app", "app", NULL);
    ph_send(cl, b.data, b.len);
    pgs_buf_free(&b);
    ph_settle(r);
    for (int i = 0; i < 2 && cl->auth_code && cl->auth_code != 12; i++) {
        ph_client_auth(r, cl);
        ph_settle(r);
    }
}

/* The server the fuzzer's bytes go to: the one the proxy wrote to last, else the newest. */
static ph_peer *target(ph_rig *r)
{
    if (r->last_server && r->last_server->fd >= 0)
        return r->last_server;
    return ph_server(r);
}

static void event(ph_rig *r, ph_peer **cl, unsigned kind)
{
    ph_peer *sv = target(r);
    switch (kind) {
    case 0:
        if (sv)
            ph_close(sv);
        break;
    case 1:
        ph_tick(r);
        break;
    case 2:
        ph_shutdown_write(*cl);
        break;
    default: {
        ph_peer *p = ph_connect_client(r);
        if (p) {
            *cl = p;
            login(r, p);
        }
        break;
    }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    ph_rig *r = ph_begin(data[0], backend_sink);
    ph_peer *cl = r->client;
    login(r, cl);
    size_t off = 1;
    while (off < size) {
        uint8_t op = data[off++];
        switch (op & 7) {
        case 4:
        case 7:
            if (off < size)
                client_step(r, cl, data[off++]);
            break;
        case 5: {
            ph_peer *sv = target(r);
            if (sv)
                ph_server_scram(r, sv);
            break;
        }
        case 6:
            event(r, &cl, (op >> 3) & 3);
            break;
        default: {
            size_t len;
            const uint8_t *chunk = ph_chunk(data, size, &off, &len);
            ph_peer *sv = target(r);
            if (sv)
                ph_send(sv, chunk, len);
            break;
        }
        }
        ph_settle(r);
    }
    ph_end(r);
    return 0;
}

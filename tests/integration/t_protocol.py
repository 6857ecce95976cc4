#!/usr/bin/env python3
"""Raw v3 protocol robustness of pgshard against a real cluster (ARCHITECTURE.md section 4).

Speaks the PostgreSQL wire protocol itself (stdlib only: a tiny client with startup,
SCRAM-SHA-256 and md5 login, simple and extended query) so that it can send what no driver
would: garbage before startup, bad lengths, unknown versions and message types, half
messages, sockets dropped mid-transaction or mid-COPY. Every case asserts the exact outcome
(SQLSTATE, message, close, no hang), and after every case a client that logged in at the
start must still answer `select 1`: bad input must never touch other clients.

Environment (set by CTest): PGS_CLUSTER_DIR (a cluster from tests/cluster/cluster.sh),
PGSHARD_BIN, PGS_SRC, PGS_WORK. Prints one line per case and "N passed, M failed"; exits 1
when a case failed.
"""
import os
import sys

os.environ["PGWIRE_TEST"] = "t_protocol"
os.environ["PGWIRE_TIMEOUT"] = "5.0"
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pgwire import *  # noqa: E402,F401,F403 (the shared client and environment)


# --------------------------------------------------------------------------- the cases

MAIN = None     # the proxy every case uses unless it starts its own
HEALTHY = None  # logged in at the start; must answer select 1 after every case
STARTED = []    # every proxy started, to kill on the way out
TABLE = "t_protocol_rows"


def start_proxy(name, **keys):
    p = Proxy(name, **keys)
    STARTED.append(p)
    return p


def check_healthy():
    if not MAIN.alive():
        raise AssertionError(f"the main proxy died (status {MAIN.proc.returncode}):\n{MAIN.log_tail()}")
    try:
        v = HEALTHY.scalar("select 1")
    except Exception as e:
        raise AssertionError(f"the healthy client broke: {type(e).__name__} {e}")
    if v != "1":
        raise AssertionError(f"the healthy client got {v!r} for select 1")


def raw(port):
    return Conn(port)


def case_garbage_before_startup():
    for garbage in (b"GET / HTTP/1.1\r\n\r\n", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + os.urandom(64),
                    b"\xff" * 64):
        c = raw(MAIN.port)
        c.send(garbage)
        try:
            t, body = c.recv_msg()
        except Closed:
            c.close()
            continue
        except socket.timeout:
            raise AssertionError(f"{garbage[:16]!r}...: no answer and no close within {TIMEOUT} s (hang)")
        if t != b"E" or parse_error(body).get("C") != "08P01":
            raise AssertionError(f"{garbage[:16]!r}...: expected 08P01 or a close, got {t!r} {body[:80]!r}")
        if not c.is_closed():
            raise AssertionError(f"{garbage[:16]!r}...: still open after the 08P01 error")
        c.close()


def case_startup_bad_length():
    for n in (0, 4, 7):
        c = raw(MAIN.port)
        c.send(struct.pack("!II", n, PROTO_V3))
        c.expect_fatal("08P01", "invalid length of startup packet")
        c.close()
    for n in (10001, 1 << 20, 0x7FFFFFFF):
        c = raw(MAIN.port)
        c.send(struct.pack("!II", n, PROTO_V3) + cstr("user") + cstr(USER))
        c.expect_fatal("08P01", "invalid length of startup packet")
        c.close()


def case_protocol_versions():
    for major, minor in ((2, 0), (4, 0)):
        c = raw(MAIN.port)
        c.send(startup_packet({"user": USER, "database": DB}, (major << 16) | minor))
        c.expect_fatal("0A000", "unsupported frontend protocol")
        c.close()
    c = raw(MAIN.port)
    nego = c.login(version=(3 << 16) | 1, extra={"_pq_.foo": "bar"})
    if nego is None:
        raise AssertionError("3.1 with _pq_.foo: no NegotiateProtocolVersion")
    minor, count = struct.unpack("!II", nego[:8])
    names = [x.decode() for x in nego[8:].split(b"\0") if x]
    if minor != 0 or count != 1 or names != ["_pq_.foo"]:
        raise AssertionError(f"NegotiateProtocolVersion: minor {minor}, {count} option(s) {names}")
    if c.scalar("select 41 + 1") != "42":
        raise AssertionError("3.1 login: query failed")
    c.terminate()


def case_ssl_gssenc_requests():
    for name, code in (("SSLRequest", CODE_SSL), ("GSSENCRequest", CODE_GSSENC)):
        c = raw(MAIN.port)
        c.send(struct.pack("!II", 8, code))
        try:
            answer = c.recv_exact(1)
        except (Closed, socket.timeout) as e:
            raise AssertionError(f"{name}: no single-byte answer ({type(e).__name__})")
        if answer != b"N":
            raise AssertionError(f"{name}: answered {answer!r}, expected b'N'")
        c.login()
        if c.scalar("select 'after " + name + "'") != "after " + name:
            raise AssertionError(f"{name}: query after login failed")
        c.terminate()
    # Both requests in a row on one connection (libpq's gssencmode=prefer then sslmode=prefer).
    c = raw(MAIN.port)
    c.send(struct.pack("!II", 8, CODE_GSSENC))
    if c.recv_exact(1) != b"N":
        raise AssertionError("GSSENCRequest then SSLRequest: first answer not N")
    c.send(struct.pack("!II", 8, CODE_SSL))
    if c.recv_exact(1) != b"N":
        raise AssertionError("GSSENCRequest then SSLRequest: second answer not N")
    c.login()
    c.scalar("select 1")
    c.terminate()
    for name, code in (("SSLRequest", CODE_SSL), ("GSSENCRequest", CODE_GSSENC)):
        c = raw(MAIN.port)
        c.send(struct.pack("!II", 8, code) + startup_packet({"user": USER, "database": DB}))
        # An 'N' must not come first: the bytes after the request would be read as plaintext.
        try:
            first = c.recv_exact(1)
        except Closed:
            raise AssertionError(f"{name} + startup in one send: closed without an 08P01 error")
        except socket.timeout:
            raise AssertionError(f"{name} + startup in one send: hang")
        if first != b"E":
            raise AssertionError(f"{name} + startup in one send: got {first!r} first, expected an ErrorResponse")
        c.buf = first + c.buf
        c.expect_fatal("08P01")
        c.close()


def case_login_errors():
    c = raw(MAIN.port)
    c.send(startup_packet({"database": DB}))
    c.expect_fatal("28000")
    c.close()
    c = raw(MAIN.port)
    c.send(startup_packet({"user": "", "database": DB}))
    c.expect_fatal("28000")
    c.close()
    c = raw(MAIN.port)
    c.send(startup_packet({"user": "no_such_user", "database": DB}))
    c.expect_fatal("28000")
    c.close()
    c = raw(MAIN.port)
    try:
        c.login(password="wrong")
        raise AssertionError("SCRAM with a wrong password logged in")
    except PgError as e:
        if e.code != "28P01":
            raise AssertionError(f"SCRAM wrong password: expected 28P01, got {e}")
    if not c.is_closed():
        raise AssertionError("SCRAM wrong password: connection still open after 28P01")
    c.close()
    # md5user also logs in through the SCRAM proxy (the proxy knows its plain password).
    c = login(MAIN.port, user="md5user", password="md5pw")
    if c.scalar("select current_user") != "md5user":
        raise AssertionError("md5user via the SCRAM proxy: wrong current_user")
    c.terminate()


def case_md5_proxy():
    p = start_proxy("md5", auth_type="md5")
    try:
        for user, pw in ((USER, PASSWORD), ("md5user", "md5pw")):
            c = Conn(p.port)
            c.send(startup_packet({"user": user, "database": DB}))
            t, body = c.recv_msg()
            if t != b"R" or struct.unpack("!I", body[:4])[0] != 5:
                raise AssertionError(f"{user}: expected AuthenticationMD5Password, got {t!r} {body[:8]!r}")
            c.buf = t + struct.pack("!I", len(body) + 4) + body + c.buf
            c.finish_login(user, pw)
            if c.scalar("select current_user") != user:
                raise AssertionError(f"{user}: wrong current_user through the md5 proxy")
            c.terminate()
        for user in (USER, "md5user"):
            c = Conn(p.port)
            try:
                c.login(user=user, password="wrong")
                raise AssertionError(f"md5 with a wrong password logged in as {user}")
            except PgError as e:
                if e.code != "28P01":
                    raise AssertionError(f"{user}: md5 wrong password: expected 28P01, got {e}")
            if not c.is_closed():
                raise AssertionError(f"{user}: still open after 28P01")
            c.close()
        if not p.alive():
            raise AssertionError("the md5 proxy died")
    finally:
        p.stop()


def case_bad_messages_after_login():
    c = login(MAIN.port)
    c.send(b"Q" + struct.pack("!I", 3))
    c.expect_fatal("08P01")
    c.close()

    c = login(MAIN.port)
    c.send(b"Q" + struct.pack("!I", 0x7FFFFFFF) + b"select 1")
    c.expect_fatal("08P01")
    c.close()

    c = login(MAIN.port)
    c.send(msg(b"z", b""))
    c.expect_fatal("08P01", "invalid frontend message type")
    c.close()

    # The same in the middle of a transaction: the server's transaction must not survive it.
    c = login(MAIN.port)
    c.query("begin")
    c.send(msg(b"z", b"junk"))
    c.expect_fatal("08P01", "invalid frontend message type")
    c.close()
    wait_until(no_idle_in_tx, 3, "a transaction survives its client's protocol error")


def app_backends():
    return int(psql("select count(*) from pg_stat_activity where usename = 'app' and backend_type = 'client backend'"))


def case_truncated_message_then_close():
    sql = "select 'truncated-" + "x" * 200 + "'"
    full = query_msg(sql)
    for i in range(10):
        c = login(MAIN.port)
        c.send(full[:len(full) // 2])
        if i % 2:
            c.abort()
        else:
            c.close()
    # With one worker and one server, a server leaked by a half message would block the next client.
    p = start_proxy("trunc", workers=1, pool_size=1)
    try:
        for i in range(4):
            c = login(p.port)
            c.send(full[:len(full) // 2 + i])
            if i % 2:
                c.abort()
            else:
                c.close()
            d = login(p.port)
            if d.scalar("select 8") != "8":
                raise AssertionError("pool_size 1: query after a truncated message failed")
            d.terminate()
        if not p.alive():
            raise AssertionError("the trunc proxy died")
    finally:
        p.stop()
    # The servers that got half a message must have been closed, not pooled: after that every
    # worker's pool still hands out servers and there are no more of them than pool_size each.
    for _ in range(10):
        c = login(MAIN.port)
        c.query("begin")
        if c.scalar("select 7") != "7":
            raise AssertionError("query after truncated messages failed")
        c.query("commit")
        c.terminate()
    def bounded():
        n = app_backends()
        return n <= 8 or f"{n} server connections"
    wait_until(bounded, 3, "more server connections than 2 workers x pool_size 4")


def no_idle_in_tx():
    n = int(psql("select count(*) from pg_stat_activity where state like 'idle in transaction%'"))
    return n == 0 or f"{n} backend(s) idle in transaction"


def case_disconnect_mid_transaction():
    marker = f"tx-{os.getpid()}-{random.randint(0, 1 << 30)}"
    for how in ("close", "abort"):
        c = login(MAIN.port)
        c.query("begin")
        c.query(f"insert into {TABLE} values (1, '{marker}-{how}')")
        if c.status != b"T":
            raise AssertionError(f"not in a transaction after INSERT (status {c.status!r})")
        if how == "close":
            c.close()
        else:
            c.abort()
        wait_until(no_idle_in_tx, 3, f"{how}: a backend stays idle in transaction")
        n = psql(f"select count(*) from {TABLE} where marker = '{marker}-{how}'")
        if n != "0":
            raise AssertionError(f"{how}: the uncommitted row is there ({n})")
    # A lock held by a dropped client is released: B gets it through the proxy within 3 s.
    a = login(MAIN.port)
    a.query(f"begin; lock table {TABLE} in access exclusive mode")
    a.abort()
    b = login(MAIN.port)
    t0 = time.monotonic()
    try:
        b.query(f"begin; set local lock_timeout = '3s'; lock table {TABLE} in access exclusive mode; commit")
    except PgError as e:
        raise AssertionError(f"client B could not lock the table after A dropped: {e}")
    if time.monotonic() - t0 > 3.2:
        raise AssertionError("client B waited more than 3 s for the lock")
    b.terminate()


def case_disconnect_mid_copy():
    marker = f"copy-{os.getpid()}-{random.randint(0, 1 << 30)}"
    for how in ("close", "abort", "half"):
        c = login(MAIN.port)
        c.send(query_msg(f"copy {TABLE} from stdin"))
        t, body = c.recv_msg()
        if t != b"G":
            raise AssertionError(f"expected CopyInResponse, got {t!r} {body[:80]!r}")
        data = b"".join(msg(b"d", f"{i}\t{marker}-{how}\n".encode()) for i in range(20))
        if how == "half":
            data += msg(b"d", f"99\t{marker}-{how}\n".encode())[:6]
        c.send(data)
        if how == "abort":
            c.abort()
        else:
            c.close()

        def no_copy():
            n = int(psql("select count(*) from pg_stat_activity where query ilike 'copy t_protocol%' "
                         "and pid <> pg_backend_pid()"))
            return n == 0 or f"{n} backend(s) still in COPY"
        wait_until(no_copy, 3, f"{how}: a backend stays in COPY")
        n = psql(f"select count(*) from {TABLE} where marker = '{marker}-{how}'")
        if n != "0":
            raise AssertionError(f"{how}: {n} rows of the dropped COPY are there")


def case_server_dies_mid_query():
    marker = f"sleep-{os.getpid()}-{random.randint(0, 1 << 30)}"
    c = login(MAIN.port)
    c.send(query_msg(f"select pg_sleep(10) /* {marker} */"))
    pid = None
    deadline = time.monotonic() + 5
    while pid is None:
        out = psql(f"select pid from pg_stat_activity where query like '%{marker}%' and pid <> pg_backend_pid()")
        if out:
            pid = int(out.splitlines()[0])
        elif time.monotonic() > deadline:
            raise AssertionError("the pg_sleep query never showed up on the server")
        else:
            time.sleep(0.05)
    psql(f"select pg_terminate_backend({pid})")
    t0 = time.monotonic()
    c.sock.settimeout(3.5)
    codes, outcome = [], None
    try:
        while outcome is None:
            t, body = c.recv_msg()
            if t == b"E":
                codes.append(parse_error(body).get("C"))
            elif t == b"Z":
                outcome = "ReadyForQuery"
            elif t not in (b"N", b"S", b"T"):
                raise AssertionError(f"unexpected message {t!r} after the server died")
    except Closed:
        outcome = "closed"
    except socket.timeout:
        outcome = "timeout"
    took = time.monotonic() - t0
    c.close()
    if not codes and outcome != "closed":
        raise AssertionError(f"no error and no close within 3 s ({outcome})")
    if any(code not in ("57P01", "08006") for code in codes):
        raise AssertionError(f"unexpected SQLSTATE(s) {codes}")
    if outcome == "timeout":
        # An error with neither a close nor a ReadyForQuery leaves the client waiting forever.
        raise AssertionError(f"got {codes} but then neither a close nor a ReadyForQuery within 3 s")
    if took > 3.0:
        raise AssertionError(f"took {took:.1f} s")
    # Other clients keep working, on a fresh server.
    for _ in range(4):
        d = login(MAIN.port)
        if d.scalar("select 5") != "5":
            raise AssertionError("a new client failed after the server died")
        d.terminate()


def case_max_client_conn():
    p = start_proxy("maxconn", max_client_conn=5)
    clients = []
    try:
        for i in range(5):
            clients.append(login(p.port))
        for c in clients:
            c.scalar("select 1")
        c6 = Conn(p.port)
        try:
            c6.login()
            raise AssertionError("the 6th client got in")
        except PgError as e:
            if e.code != "53300":
                raise AssertionError(f"6th client: expected 53300, got {e}")
        if not c6.is_closed():
            raise AssertionError("6th client still open after 53300")
        c6.close()
        # One leaves; once the proxy has closed it, a new one gets in (and then a 7th does not).
        gone = clients.pop()
        gone.send(msg(b"X"))
        if not gone.is_closed():
            raise AssertionError("Terminate did not close the connection")
        gone.close()
        c7 = Conn(p.port)
        try:
            c7.login()
        except PgError as e:
            raise AssertionError(f"after one of 5 left, a new client was refused: {e}")
        if c7.scalar("select 2") != "2":
            raise AssertionError("the new client's query failed")
        clients.append(c7)
        c8 = Conn(p.port)
        try:
            c8.login()
            raise AssertionError("a 6th client got in after the swap")
        except PgError as e:
            if e.code != "53300":
                raise AssertionError(f"6th client after the swap: expected 53300, got {e}")
        c8.close()
        for c in clients:
            c.scalar("select 3")
        if not p.alive():
            raise AssertionError("the maxconn proxy died")
    finally:
        # Stopped with logged-in idle clients still connected: that must be clean too.
        try:
            p.stop()
        finally:
            for c in clients:
                c.close()


def case_query_wait_timeout():
    p = start_proxy("qwait", pool_size=1, workers=1, query_wait_timeout=1)
    try:
        a = login(p.port)
        a.query("begin")
        a.scalar("select 1")
        b = login(p.port)
        t0 = time.monotonic()
        b.send(query_msg("select 1"))
        b.expect_fatal("53400", "query_wait_timeout")
        took = time.monotonic() - t0
        if not 0.8 <= took <= 2.2:
            raise AssertionError(f"53400 after {took:.2f} s (query_wait_timeout = 1 s)")
        b.close()
        if a.scalar("select 'still mine'") != "still mine":
            raise AssertionError("A lost its transaction")
        a.query("commit")
        if a.status != b"I":
            raise AssertionError(f"A not idle after commit ({a.status!r})")
        c = login(p.port)
        if c.scalar("select 4") != "4":
            raise AssertionError("a new client failed after A committed")
        c.terminate()
        a.terminate()
        if not p.alive():
            raise AssertionError("the qwait proxy died")
    finally:
        p.stop()


def pipeline(c, values, check_tail=False):
    """Sends Parse/Bind/Execute (unnamed) for each value and one Sync in a single write;
    checks the replies are exactly those values, in order, then one ReadyForQuery (and,
    with check_tail, nothing after it)."""
    out = []
    for v in values:
        out.append(msg(b"P", cstr("") + cstr(f"select '{v}'::text") + struct.pack("!H", 0)))
        out.append(msg(b"B", cstr("") + cstr("") + struct.pack("!HHH", 0, 0, 0)))
        out.append(msg(b"E", cstr("") + struct.pack("!I", 0)))
    out.append(msg(b"S"))
    c.send(b"".join(out))
    got, ncc, counts = [], 0, {}
    while True:
        t, body = c.recv_msg()
        counts[t] = counts.get(t, 0) + 1
        if t == b"D":
            got.append(parse_datarow(body)[0])
        elif t == b"C":
            ncc += 1
        elif t == b"E":
            raise AssertionError(f"pipeline error {parse_error(body)}")
        elif t == b"Z":
            break
    if got != list(values):
        wrong = [g for g, v in zip(got, values) if g != v][:3]
        raise AssertionError(f"pipeline: {len(got)} rows, expected {len(values)}; first wrong: {wrong}")
    if ncc != len(values) or counts.get(b"1") != len(values) or counts.get(b"2") != len(values):
        raise AssertionError(f"pipeline reply counts {counts}")
    if not check_tail:
        return
    try:
        c.sock.settimeout(0.2)
        extra = c.sock.recv(1, socket.MSG_PEEK)
        if extra:
            raise AssertionError("bytes after the one ReadyForQuery")
    except socket.timeout:
        pass
    finally:
        c.sock.settimeout(TIMEOUT)


def case_pipelining():
    c = login(MAIN.port)
    pipeline(c, [str(i) for i in range(50)], check_tail=True)
    c.terminate()
    p = start_proxy("pipe", pool_size=1, workers=1)
    try:
        errors = []

        def worker(tag):
            try:
                cl = login(p.port)
                for r in range(20):
                    pipeline(cl, [f"{tag}-{r}-{i}" for i in range(50)], check_tail=(r == 19))
                cl.terminate()
            except Exception as e:  # reported by the main thread
                errors.append(f"client {tag}: {type(e).__name__} {e}")

        threads = [threading.Thread(target=worker, args=(tag,)) for tag in ("A", "B")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        if any(t.is_alive() for t in threads):
            raise AssertionError("pipelining clients hang")
        if errors:
            raise AssertionError("; ".join(errors))
        if not p.alive():
            raise AssertionError("the pipe proxy died")
    finally:
        p.stop()


def case_concurrent_invalid_messages():
    bad_inputs = [
        ("pre", b"GET / HTTP/1.1\r\n\r\n"),
        ("pre", struct.pack("!II", 5, PROTO_V3)),
        ("pre", struct.pack("!II", 1 << 24, PROTO_V3)),
        ("post", b"Q" + struct.pack("!I", 3)),
        ("post", b"Q" + struct.pack("!I", 0x7FFFFFFF)),
        ("post", msg(b"z", b"x")),
        ("post", msg(b"\x00", b"")),
        ("half", query_msg("select 'half a query'")[:9]),
    ]
    errors, barrier = [], threading.Barrier(31)

    def bad_client(i):
        kind, data = bad_inputs[i % len(bad_inputs)]
        try:
            c = Conn(MAIN.port)
            if kind != "pre":
                c.login()
            try:
                barrier.wait(10)
            except threading.BrokenBarrierError:
                pass
            c.send(data)
            if kind == "half":
                c.abort()
                return
            try:
                t, body = c.recv_msg()
            except Closed:
                t, body = None, b""
            if (kind == "post" or t is not None) and (t != b"E" or parse_error(body).get("C") != "08P01"):
                raise AssertionError(f"expected 08P01, got {t!r} {body[:60]!r}")
            if t is not None and not c.is_closed():
                raise AssertionError("still open after the error")
            c.close()
        except Exception as e:
            errors.append(f"bad client {i} ({data[:12]!r}): {type(e).__name__} {e}")

    threads = [threading.Thread(target=bad_client, args=(i,)) for i in range(30)]
    for t in threads:
        t.start()
    h = login(MAIN.port)
    try:
        barrier.wait(10)
    except threading.BrokenBarrierError:
        pass
    for i in range(200):
        v = h.scalar(f"select {i}")
        if v != str(i):
            raise AssertionError(f"healthy client: select {i} gave {v!r}")
    h.terminate()
    for t in threads:
        t.join(15)
    if any(t.is_alive() for t in threads):
        raise AssertionError("some bad clients hang")
    if errors:
        raise AssertionError(f"{len(errors)} bad client(s) misbehaved: " + "; ".join(errors[:3]))


def case_proxy_survives_and_stops_cleanly():
    if not MAIN.alive():
        raise AssertionError(f"the main proxy is dead (status {MAIN.proc.returncode})")
    check_healthy()
    HEALTHY.terminate()
    MAIN.stop()


def ext_statement(sql):
    """Parse, Bind and Execute of one unnamed statement without parameters."""
    return (msg(b"P", cstr("") + cstr(sql) + struct.pack("!H", 0)) +
            msg(b"B", cstr("") + cstr("") + struct.pack("!HHH", 0, 0, 0)) + msg(b"E", cstr("") + struct.pack("!I", 0)))


def case_pipeline_read_then_write():
    """A pipeline that starts with a read and writes later, before its Sync, in two TCP
    writes: it runs on the primary (a replica would refuse the write with 25006)."""
    replicas = ", ".join(f"{PG_HOST}:{CENV[f'PGS_SHARD0_REPLICA{r}_PORT']}" for r in (1, 2))
    p = start_proxy("split", shard_keys={"replicas": replicas}, workers=1, pool_size=2)
    try:
        c = login(p.port)
        wait_until(lambda: c.scalar("select pg_is_in_recovery()") == "t", 15,
                   "reads go to a replica")
        for attempt in range(3):
            c.send(ext_statement("select pg_is_in_recovery()"))
            time.sleep(0.3)
            c.send(ext_statement(f"insert into {TABLE} values ({attempt}, 'pipeline')") + msg(b"S"))
            rows, err = [], None
            while True:
                t, body = c.recv_msg()
                if t == b"D":
                    rows.append(parse_datarow(body)[0])
                elif t == b"E":
                    err = parse_error(body)
                elif t == b"Z":
                    break
            if err:
                raise AssertionError(f"the pipeline failed: {err.get('C')} {err.get('M')}")
            if rows != ["f"]:
                raise AssertionError(f"the pipeline's read ran where pg_is_in_recovery() = {rows}")
        n = psql(f"select count(*) from {TABLE} where marker = 'pipeline'")
        if n != "3":
            raise AssertionError(f"{n} pipelined rows written, want 3")
        c.terminate()
    finally:
        p.stop()


def send_cancel(port, key):
    s = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    s.sendall(struct.pack("!IIII", 16, 80877102, key[0], key[1]))
    s.close()


def case_late_cancel():
    """A cancel that arrives as its query ends must not cancel the next client's query on
    that server (pool_size 1: the next client is queued for it). Cancels are sent at many
    moments around the end of the first client's query; the second client's query must
    never be cancelled."""
    p = start_proxy("late_cancel", workers=1, pool_size=1)
    try:
        hit_b = hit_a = 0
        for i in range(40):
            a, b = login(p.port), login(p.port)
            a.send(query_msg("select pg_sleep(0.04)"))
            time.sleep(0.005)
            b.send(query_msg("select pg_sleep(0.15)"))  # queued behind a
            time.sleep(0.025 + (i % 20) * 0.0015)
            send_cancel(p.port, a.key)
            try:
                a.read_results()
            except PgError as e:
                if e.code != "57014":
                    raise
                hit_a += 1
            try:
                b.read_results()
            except PgError as e:
                if e.code == "57014":
                    hit_b += 1
                else:
                    raise
            a.terminate()
            b.terminate()
        if hit_b:
            raise AssertionError(f"{hit_b} of 40 cancels meant for one client cancelled the next client's query")
        print(f"     (the first client's query was cancelled {hit_a} times of 40; the next one's never)", flush=True)
    finally:
        p.stop()


CASES = [
    ("garbage before startup", case_garbage_before_startup),
    ("startup packet length < 8 and > 10000", case_startup_bad_length),
    ("protocol versions 2.0, 4.0, 3.1 + _pq_", case_protocol_versions),
    ("SSLRequest / GSSENCRequest", case_ssl_gssenc_requests),
    ("login errors (no user, unknown user, wrong SCRAM password)", case_login_errors),
    ("md5 auth_type proxy", case_md5_proxy),
    ("bad messages after login (length 3, 0x7fffffff, type z)", case_bad_messages_after_login),
    ("truncated message then close", case_truncated_message_then_close),
    ("disconnect mid-transaction (rollback, locks)", case_disconnect_mid_transaction),
    ("disconnect mid-COPY FROM STDIN", case_disconnect_mid_copy),
    ("server dies mid-query", case_server_dies_mid_query),
    ("max_client_conn", case_max_client_conn),
    ("query_wait_timeout", case_query_wait_timeout),
    ("pipelining (50 P/B/E + Sync; 2 clients on pool_size 1)", case_pipelining),
    ("30 concurrent invalid clients vs a healthy one", case_concurrent_invalid_messages),
    ("a pipeline that reads, then writes before its Sync, in two writes", case_pipeline_read_then_write),
    ("a cancel arriving as its query ends spares the next client's query", case_late_cancel),
]


def main():
    global MAIN, HEALTHY
    os.makedirs(WORK, exist_ok=True)
    t_start = time.monotonic()
    psql(f"set client_min_messages = warning; drop table if exists {TABLE}; "
         f"create table {TABLE} (id int, marker text); grant all on {TABLE} to app, md5user")
    MAIN = start_proxy("main")
    passed = failed = 0
    try:
        HEALTHY = login(MAIN.port)
        check_healthy()
        for name, fn in CASES:
            t0 = time.monotonic()
            try:
                fn()
                check_healthy()
                print(f"ok   {name} ({time.monotonic() - t0:.1f} s)", flush=True)
                passed += 1
            except Exception as e:
                print(f"FAIL {name}: {type(e).__name__}: {e}", flush=True)
                failed += 1
                if not MAIN.alive():
                    print(f"--- main proxy log tail ---\n{MAIN.log_tail()}", flush=True)
                    break
        for name, _ in CASES[passed + failed:]:
            print(f"FAIL {name}: not run, the main proxy died", flush=True)
            failed += 1
        name = "proxy alive at the end; SIGTERM -> exit 0, no sanitizer report"
        try:
            case_proxy_survives_and_stops_cleanly()
            print(f"ok   {name}", flush=True)
            passed += 1
        except Exception as e:
            print(f"FAIL {name}: {type(e).__name__}: {e}", flush=True)
            failed += 1
    finally:
        for p in STARTED:
            p.kill()
        try:
            psql(f"drop table if exists {TABLE}")
        except Exception:
            pass
    print(f"({time.monotonic() - t_start:.1f} s)")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

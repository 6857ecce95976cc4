#!/usr/bin/env python3
"""Hardening: inputs from the network that used to over-read, hang or grow pgshard without
bound, each case the test of one fix (issue "Hardening", first list).

- A Query that arrives in pieces in session pooling is read whole before pgshard looks at
  it (it used to scan past the received bytes: heap over-read under ASan).
- A message that must be read whole and is larger than max_message_size gets 54000 before
  its body is read, and nothing else is affected.
- An unnamed Parse of "DEALLOCATE name" without its terminating NUL is answered (the
  server refuses it), not turned into a huge append.
- A server connection stuck in the TLS handshake is covered by server_connect_timeout.
- Pools of databases that do not exist are freed; /metrics escapes label values.
- Cancel keys stay positive and distinct, and cancel works, with 256 workers.
- A server reply that pgshard reads whole (here a SET's CommandComplete) and that says it is
  longer than max_message_size closes that server at once: the client gets an error instead
  of waiting while pgshard reserves what the length says (found by fuzz_backend: an input
  that took 33 s).

Environment as the other raw-protocol tests (set by CTest). Prints one line per case and
"N passed, M failed".
"""
import os
import re
import sys
import urllib.request

os.environ["PGWIRE_TEST"] = "t_hardening"
os.environ["PGWIRE_TIMEOUT"] = "8.0"
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pgwire import *  # noqa: E402,F401,F403

STARTED = []


def start_proxy(name, **keys):
    p = Proxy(name, **keys)
    STARTED.append(p)
    return p


def finish(p):
    """Stops a proxy of one case: exit 0 and no sanitizer report."""
    p.stop()
    STARTED.remove(p)


def case_session_partial_query():
    p = start_proxy("session_partial", pool_mode="session")
    c = login(p.port)
    n = 100000
    sql = f"SELECT length('{'a' * n}')".encode() + b"\0"
    m = msg(b"Q", sql)
    # The header and a first piece with no NUL in it, larger than one read buffer so the
    # buffer is full to its end: pgshard must wait for the rest, not scan past it.
    c.send(m[:40000])
    time.sleep(0.3)
    if not p.alive():
        raise AssertionError(f"pgshard died on a partial Query:\n{p.log_tail()}")
    c.send(m[40000:])
    rows, _ = c.read_results()
    if rows != [[str(n)]]:
        raise AssertionError(f"expected length {n}, got {rows!r:.80}")
    # pgshard.* settings still work in session pooling after that.
    c.query("SET pgshard.target = primary")
    if c.scalar("SHOW pgshard.target") != "primary":
        raise AssertionError("SHOW pgshard.target after SET in session pooling")
    c.terminate()
    finish(p)


def case_max_message_size():
    for mode in ("transaction", "session"):
        p = start_proxy(f"maxmsg_{mode}", pool_mode=mode, max_message_size=100000)
        other = login(p.port)
        c = login(p.port)
        ok = f"SELECT length('{'b' * 90000}')"
        if c.scalar(ok) != "90000":
            raise AssertionError("a query under max_message_size failed")
        # Only the header of a 1 GB Query: refused at once, before any body byte.
        c.send(b"Q" + struct.pack("!I", 1 << 30))
        f = c.expect_fatal("54000", "max_message_size")
        if "1073741825 bytes" not in f["M"]:
            raise AssertionError(f"message does not give the size: {f['M']!r}")
        if mode == "transaction":
            # A Bind is read whole too in transaction pooling.
            c2 = login(p.port)
            c2.send(msg(b"P", cstr("s") + cstr("select $1::text") + b"\0\0"))
            c2.send(b"B" + struct.pack("!I", 200000) + b"\0s\0")
            c2.expect_fatal("54000", "max_message_size")
        if other.scalar("select 7") != "7":
            raise AssertionError("another client was affected")
        other.terminate()
        finish(p)


def case_unnamed_deallocate_without_nul():
    p = start_proxy("dealloc_nul")
    c = login(p.port)
    c.send(msg(b"P", cstr("s1") + cstr("select 1") + b"\0\0") + msg(b"S"))
    t, _ = c.recv_msg()
    if t != b"1":
        raise AssertionError(f"expected ParseComplete, got {t!r}")
    c.read_results()
    # An unnamed Parse whose text has no NUL and no parameter count after it.
    c.send(msg(b"P", b"\0DEALLOCATE s1") + msg(b"S"))
    err = None
    while True:
        t, body = c.recv_msg()
        if t == b"E":
            err = parse_error(body)
        elif t == b"Z":
            break
    if not err or err.get("C") != "08P01":
        raise AssertionError(f"expected the server's 08P01 for a malformed Parse, got {err!r}")
    if not p.alive():
        raise AssertionError("pgshard died")
    fresh = login(p.port)
    if fresh.scalar("select 2") != "2":
        raise AssertionError("a new client is not served")
    fresh.terminate()
    c.close()
    finish(p)


class FakeServer(threading.Thread):
    """A listener on a free loopback port whose connections handle() serves (each in the
    accepting thread: handle must not block for long). close() ends it and them."""

    def __init__(self):
        super().__init__(daemon=True)
        self.ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(16)
        self.port = self.ls.getsockname()[1]
        self.accepted = 0
        self.socks = []
        self.stop = False

    def run(self):
        self.ls.settimeout(0.2)
        while not self.stop:
            try:
                s, _ = self.ls.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.accepted += 1
            self.socks.append(s)
            try:
                self.handle(s)
            except OSError:
                pass

    def handle(self, s):
        raise NotImplementedError

    def close(self):
        self.stop = True
        for s in self.socks + [self.ls]:
            try:
                s.close()
            except OSError:
                pass


class StuckTLS(FakeServer):
    """A "server" that accepts SSLRequest with 'S' and then never speaks TLS."""

    def handle(self, s):
        s.settimeout(2)
        if len(s.recv(8)) == 8:
            s.sendall(b"S")


def case_server_tls_handshake_timeout():
    srv = StuckTLS()
    srv.start()
    try:
        p = start_proxy("stuck_tls", primary=f"127.0.0.1:{srv.port}", server_tls="require",
                        server_connect_timeout=1, query_wait_timeout=30, client_login_timeout=30)
        t0 = time.monotonic()
        c = Conn(p.port, timeout=10)
        try:
            c.login()
            raise AssertionError("login succeeded against a server stuck in TLS")
        except PgError as e:
            if e.code != "08006":
                raise AssertionError(f"expected 08006, got {e.code} {e.message!r}")
        took = time.monotonic() - t0
        if took > 6:
            raise AssertionError(f"the stuck handshake was given up after {took:.1f} s, not ~1 s")
        # The pool opens a replacement for the next client instead of counting the stuck
        # one as connecting for ever.
        first = srv.accepted
        time.sleep(1.2)  # past the pause after a failed login
        c2 = Conn(p.port, timeout=10)
        try:
            c2.login()
        except PgError:
            pass
        if srv.accepted <= first:
            raise AssertionError(f"no new server connection was opened ({srv.accepted} in all)")
        finish(p)
    finally:
        srv.close()


class LyingServer(FakeServer):
    """A "server" that logs anyone in (trust) and answers every Query with a CommandComplete
    whose length says 512 MB, of which it sends a few bytes."""

    @staticmethod
    def _recv(s, n):
        out = b""
        while len(out) < n:
            chunk = s.recv(n - len(out))
            if not chunk:
                raise OSError("closed")
            out += chunk
        return out

    def _serve(self, s):
        s.settimeout(30)
        (n,) = struct.unpack("!I", self._recv(s, 4))
        self._recv(s, n - 4)  # the startup packet
        hello = msg(b"R", struct.pack("!I", 0))
        for k, v in (("server_version", "15.8"), ("client_encoding", "UTF8"), ("DateStyle", "ISO, MDY"),
                     ("integer_datetimes", "on"), ("standard_conforming_strings", "on")):
            hello += msg(b"S", cstr(k) + cstr(v))
        s.sendall(hello + msg(b"K", struct.pack("!II", 4242, 7)) + msg(b"Z", b"I"))
        while not self.stop:
            t = self._recv(s, 1)
            (n,) = struct.unpack("!I", self._recv(s, 4))
            self._recv(s, n - 4)
            if t == b"Q":
                s.sendall(b"C" + struct.pack("!I", 512 << 20) + b"SET\0")
            elif t == b"X":
                return

    def _guard(self, s):
        try:
            self._serve(s)
        except (OSError, struct.error):
            pass

    def handle(self, s):
        threading.Thread(target=self._guard, args=(s,), daemon=True).start()


def case_server_message_too_long():
    srv = LyingServer()
    srv.start()
    try:
        p = start_proxy("lying_server", primary=f"127.0.0.1:{srv.port}", max_message_size=65536,
                        query_wait_timeout=30)
        c = login(p.port)
        t0 = time.monotonic()
        c.send(query_msg("SET work_mem = '64kB'"))
        c.expect_fatal("08006", contains="longer than max_message_size")
        took = time.monotonic() - t0
        if took > 3:
            raise AssertionError(f"the client waited {took:.1f} s for the error")
        log = p.log_tail(40)
        if "longer than max_message_size" not in log:
            raise AssertionError(f"pgshard's log does not say why the server was closed: {log}")
        finish(p)
    finally:
        srv.close()


def fetch_metrics(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return r.read().decode()


PROM_LINE = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\\n]|\\[\\"n])*",?)*\})? '
                       r'[-+0-9.eEInfa]+$')


def prom_bad_lines(text):
    return [ln for ln in text.splitlines() if ln and not ln.startswith("#") and not PROM_LINE.match(ln)]


def admin_pool_count(port):
    c = Conn(port)
    c.login(database="pgshard")
    rows, _ = c.query("SHOW POOLS")
    c.terminate()
    return len(rows)


def case_dead_pools_freed():
    mport = free_port()
    p = start_proxy("dead_pools", metrics_port=mport, admin_users=USER)
    live = login(p.port)
    live.scalar("select 1")
    before = admin_pool_count(p.port)
    names = [f"nosuchdb_{i}" for i in range(60)] + ['we"ird\\db']
    for name in names:
        c = Conn(p.port)
        try:
            c.login(database=name)
            raise AssertionError(f"login to database {name!r} succeeded")
        except PgError as e:
            if e.code != "3D000":
                raise AssertionError(f"{name}: expected 3D000, got {e.code} {e.message!r}")
        c.close()
    text = fetch_metrics(mport)
    bad = prom_bad_lines(text)
    if bad:
        raise AssertionError(f"{len(bad)} invalid Prometheus lines, first: {bad[0]!r}")
    if 'database="we\\"ird\\\\db"' not in text:
        raise AssertionError("the escaped database label is missing from /metrics")
    grown = admin_pool_count(p.port)
    if grown < before + len(names) // 2:
        raise AssertionError(f"expected the dead pools to show first ({before} -> {grown})")
    def freed():
        n = admin_pool_count(p.port)
        return True if n <= before else n
    wait_until(freed, 15, "dead pools freed")
    if "nosuchdb_" in fetch_metrics(mport):
        raise AssertionError("/metrics still lists freed pools")
    if live.scalar("select 3") != "3":
        raise AssertionError("the live client's pool was harmed")
    live.terminate()
    finish(p)


def case_cancel_keys_many_workers():
    p = start_proxy("workers256", workers=256, pool_size=1)
    conns = [login(p.port) for _ in range(120)]
    pids = [c.key[0] for c in conns]
    neg = [pid for pid in pids if pid >= 1 << 31 or pid == 0]
    if neg:
        raise AssertionError(f"{len(neg)} cancel-key pids are 0 or negative as int32: {neg[:5]}")
    if len(set(pids)) != len(pids):
        raise AssertionError("two clients got the same cancel-key pid")
    # Cancel a sleep on the clients with the largest pids (the highest workers).
    for c in sorted(conns, key=lambda c: c.key[0])[-4:]:
        c.send(query_msg("select pg_sleep(20)"))
        time.sleep(0.3)
        k = Conn(p.port)
        k.send(struct.pack("!III", 16, 80877102, c.key[0]) + struct.pack("!I", c.key[1]))
        k.close()
        t0 = time.monotonic()
        try:
            c.read_results()
            raise AssertionError("pg_sleep(20) was not cancelled")
        except PgError as e:
            if e.code != "57014":
                raise AssertionError(f"expected 57014, got {e.code}")
        if time.monotonic() - t0 > 8:
            raise AssertionError("cancel took too long")
    for c in conns:
        c.terminate()
    finish(p)


CASES = [
    ("session pooling: a Query in pieces is read whole", case_session_partial_query),
    ("max_message_size: 54000 before the body, others untouched", case_max_message_size),
    ("unnamed Parse DEALLOCATE without NUL is answered", case_unnamed_deallocate_without_nul),
    ("server_connect_timeout covers the TLS handshake", case_server_tls_handshake_timeout),
    ("dead pools freed, /metrics labels escaped", case_dead_pools_freed),
    ("cancel keys with 256 workers", case_cancel_keys_many_workers),
    ("a server message longer than max_message_size closes that server", case_server_message_too_long),
]


def main():
    passed = failed = 0
    try:
        for name, fn in CASES:
            t0 = time.monotonic()
            try:
                fn()
                print(f"ok   {name} ({time.monotonic() - t0:.1f} s)", flush=True)
                passed += 1
            except Exception as e:
                print(f"FAIL {name}: {type(e).__name__}: {e}", flush=True)
                for p in STARTED:
                    print(f"--- log of {p.name} ---\n{p.log_tail(20)}", flush=True)
                failed += 1
            for p in list(STARTED):
                p.kill()
                STARTED.remove(p)
    finally:
        for p in STARTED:
            p.kill()
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

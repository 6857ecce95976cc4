#!/usr/bin/env python3
"""Overload (issue "Hardening", item 5): pgshard under many clients, a flood of clients that
never log in, a client that never reads a large result and a client that pipelines without
reading. Each case runs its own pgshard (2 workers, trust auth, shard 0's primary) and reads
its memory from /proc/PID/status: VmRSS now, VmHWM the peak.

1. many: N clients (10,000 when the fd limit allows) connect at once, log in and run
   `select 1` through a pool of 4 servers per worker; all succeed. pgshard is started with a
   soft fd limit of 1024 and must raise it itself. Reported: peak RSS and RSS per idle client,
   logged in and after the queued queries.
2. unauthenticated flood: 2,000 sockets that send nothing or half a startup packet, with
   client_login_timeout = 2 s; a logged-in client keeps getting answers meanwhile (its
   latencies are reported, not asserted); every flood socket sees EOF within the timeout
   plus a margin, twice; RSS stays within a bound and SHOW CLIENTS lists none of them.
3. backpressure: a client asks for ~200 MB (1 GB with PGS_OVERLOAD_BIG=1) and does not read
   for a few seconds: pgshard's RSS stays bounded while the server is blocked writing; then
   the client reads every row.
4. pipelined flood: a client offers ~200 MB of Parse/Bind/Execute/Sync of `select 1`
   without reading: its writes must stall with pgshard's RSS bounded, and when it reads,
   every statement it sent is answered. With PGS_OVERLOAD_BIG=1 it offers 1 GB and, once
   reading, writes all of it (about 24 million statements, minutes).

Memory bounds are not asserted under ASan (its shadow memory and quarantine are most of the
RSS there); the numbers are still printed. Prints one line per check and "N passed, M failed".
"""
import os
import resource
import selectors
import sys

os.environ["PGWIRE_TEST"] = "t_overload"
os.environ.setdefault("PGWIRE_TIMEOUT", "10.0")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pgwire import *  # noqa: E402,F401,F403

BIG = os.environ.get("PGS_OVERLOAD_BIG") == "1"
MB = 1 << 20
report = Report()
STARTED = []


def is_asan_binary(path):
    """True when the binary carries the ASan runtime (clang links it statically)."""
    with open(path, "rb") as f:
        data = f.read()
    return b"__asan_init" in data


ASAN = is_asan_binary(PGSHARD_BIN)


def mem(p):
    """(VmRSS, VmHWM) of a proxy in bytes."""
    out = {}
    with open(f"/proc/{p.proc.pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                out[k] = int(v.split()[0]) * 1024
    return out["VmRSS"], out["VmHWM"]


def fmt_mb(n):
    return f"{n / MB:.1f} MB"


def check_mem(ok, name, detail):
    """A memory bound: asserted on the optimized build, only reported under ASan."""
    if ASAN:
        print(f"skip {name} (ASan build, bound not asserted): {detail}", flush=True)
    else:
        report(ok, name, detail)


def start_proxy(name, **keys):
    conf = {"auth_type": "trust", "pool_size": 4, "log_level": "warn"}
    conf.update(keys)
    p = Proxy(name, **conf)
    STARTED.append(p)
    return p


def finish(p, name):
    try:
        p.stop()
        report(True, f"{name}: SIGTERM -> exit 0, no sanitizer report", "clean")
    except AssertionError as e:
        report(False, f"{name}: SIGTERM -> exit 0, no sanitizer report", str(e))
    STARTED.remove(p)


def warm_baseline(p):
    """One client runs a query (so the pool and its buffers exist), then leaves; returns RSS."""
    c = login(p.port, password=None)
    c.query("select 1")
    c.terminate()
    time.sleep(0.3)
    return mem(p)[0]


def show_clients(p):
    """How many clients pgshard lists in SHOW CLIENTS (the console's own connection included)."""
    a = login(p.port, password=None, database="pgshard")
    rows, _ = a.query("SHOW CLIENTS")
    a.terminate()
    return len(rows)


def percentile(xs, q):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


# --------------------------------------------------------------------------- fast readers

class Counter:
    """Reads a socket's messages without keeping them: counts by type, remembers the last
    CommandComplete and the first ErrorResponse. Fast enough for a million rows."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = bytearray()
        self.counts = {}
        self.last_tag = None
        self.error = None
        self.bytes = 0

    def pump(self, timeout):
        """Reads what arrives within timeout; False when the peer closed."""
        self.sock.settimeout(timeout)
        try:
            chunk = self.sock.recv(1 << 20)
        except socket.timeout:
            return True
        except (ConnectionResetError, BrokenPipeError):
            chunk = b""
        if not chunk:
            return False
        self.bytes += len(chunk)
        self.buf += chunk
        buf, pos, end = self.buf, 0, len(self.buf)
        counts = self.counts
        while end - pos >= 5:
            n = int.from_bytes(buf[pos + 1:pos + 5], "big")
            if end - pos < 1 + n:
                break
            t = buf[pos]
            counts[t] = counts.get(t, 0) + 1
            if t == 0x43:  # C
                self.last_tag = bytes(buf[pos + 5:pos + n]).rstrip(b"\0").decode()
            elif t == 0x45 and self.error is None:  # E
                self.error = parse_error(bytes(buf[pos + 5:pos + 1 + n]))
            pos += 1 + n
        del buf[:pos]
        return True

    def count(self, letter):
        return self.counts.get(ord(letter), 0)


# --------------------------------------------------------------------------- 1. many clients

def raise_fd_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def fd_limit_of(pid):
    with open(f"/proc/{pid}/limits") as f:
        for line in f:
            if line.startswith("Max open files"):
                return int(line.split()[3])
    return -1


def run_many(port, n, deadline_s, on_logged_in):
    """n clients connect at once and log in; when all have, on_logged_in() runs, then each
    runs `select 1` and stays idle. Returns (socks, failures, seconds to all logged in,
    seconds to all answered)."""
    sel = selectors.DefaultSelector()
    startup = startup_packet({"user": USER, "database": DB})
    query = query_msg("select 1")
    t0 = time.monotonic()
    states = []
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        st = {"sock": s, "out": startup, "buf": b"", "phase": "login", "rows": 0}
        states.append(st)
        sel.register(s, selectors.EVENT_WRITE, st)
    failures, pending, logged_in = [], n, 0
    t_login = None
    while pending and time.monotonic() - t0 < deadline_s:
        for key, ev in sel.select(timeout=1.0):
            st = key.data
            s = st["sock"]
            try:
                if ev & selectors.EVENT_WRITE:
                    k = s.send(st["out"])
                    st["out"] = st["out"][k:]
                    if not st["out"]:
                        sel.modify(s, selectors.EVENT_READ, st)
                    continue
                chunk = s.recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError as e:
                chunk = None
                err = str(e)
            if not chunk:
                failures.append(f"closed in {st['phase']}" + (f" ({err})" if chunk is None else ""))
                sel.unregister(s)
                pending -= 1
                continue
            st["buf"] += chunk
            while len(st["buf"]) >= 5:
                ln = struct.unpack("!I", st["buf"][1:5])[0]
                if len(st["buf"]) < 1 + ln:
                    break
                t, body, st["buf"] = st["buf"][0:1], st["buf"][5:1 + ln], st["buf"][1 + ln:]
                if t == b"E":
                    failures.append(f"error in {st['phase']}: {parse_error(body).get('M')}")
                    st["phase"] = "failed"
                elif t == b"D":
                    st["rows"] += 1
                elif t == b"Z" and st["phase"] == "login":
                    st["phase"] = "query"
                    logged_in += 1
                    sel.modify(s, selectors.EVENT_READ, st)
                    if logged_in == n - len(failures):
                        t_login = time.monotonic() - t0
                        on_logged_in()
                        for o in states:
                            if o["phase"] == "query":
                                o["out"] = query
                                sel.modify(o["sock"], selectors.EVENT_WRITE, o)
                elif t == b"Z":
                    if st["phase"] == "query" and st["rows"] != 1:
                        failures.append(f"select 1 gave {st['rows']} rows")
                    st["phase"] = "done" if st["phase"] == "query" else st["phase"]
                    sel.unregister(s)
                    pending -= 1
                    break
    t_all = time.monotonic() - t0
    for st in states:
        if st["phase"] not in ("done", "failed") and pending:
            failures.append(f"no answer in {st['phase']} within {deadline_s} s")
    sel.close()
    return [st["sock"] for st in states], failures, t_login, t_all


def case_many():
    soft, hard = raise_fd_limit()
    n = min(10000, hard - 500)
    if n < 1000:
        report(False, "many: fd limit", f"hard limit {hard} leaves only {n} client sockets")
        return
    # pgshard starts with the usual soft limit of 1024 and must raise it itself.
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))
    try:
        p = start_proxy("many", max_client_conn=n + 100, admin_users=USER)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    lim = fd_limit_of(p.proc.pid)
    report(lim >= n + 100, "many: pgshard raised its open files limit from 1024",
           f"now {lim} (hard {hard}), max_client_conn {n + 100}")
    base = warm_baseline(p)
    at_login = {}

    def logged_in():
        time.sleep(0.5)
        at_login["rss"], at_login["hwm"] = mem(p)

    socks, failures, t_login, t_all = run_many(p.port, n, 60, logged_in)
    rss, hwm = mem(p)
    idle_rss = rss
    report(not failures, f"many: {n} clients connect at once, log in and run select 1",
           f"{n - len(failures)} ok, logged in after {t_login if t_login is None else round(t_login, 1)} s, "
           f"all answered after {t_all:.1f} s" + (f"; failures: {failures[:5]} ({len(failures)})" if failures else ""))
    # Let the idle state settle (buffers back in the pool), then measure again.
    time.sleep(0.5)
    idle_rss = min(idle_rss, mem(p)[0])
    per_login = (at_login.get("rss", 0) - base) / n
    per_client = (idle_rss - base) / n
    print(f"info many: baseline RSS {fmt_mb(base)}; {n} clients logged in and idle {fmt_mb(at_login.get('rss', 0))} "
          f"({per_login:.0f} bytes each, peak so far {fmt_mb(at_login.get('hwm', 0))}); after all ran select 1 "
          f"through 8 servers {fmt_mb(idle_rss)} ({per_client:.0f} bytes each), peak (VmHWM) {fmt_mb(hwm)}",
          flush=True)
    check_mem(per_login < 3 * 1024, "many: RSS per idle logged-in client < 3 KiB",
              f"{per_login:.0f} bytes; baseline {fmt_mb(base)}")
    # Queued clients each hold a read buffer while they wait for one of the 8 servers, and the
    # heap keeps those pages after they are freed: looser, but still bounded per client.
    check_mem(per_client < 8 * 1024, "many: RSS per idle client after the queued select 1 < 8 KiB",
              f"{per_client:.0f} bytes; peak {fmt_mb(hwm)}")
    c = login(p.port, password=None)
    ok = c.scalar("select 2") == "2"
    c.terminate()
    report(ok, "many: a new client is served with all of them connected", "select 2 answered")
    for s in socks:
        s.close()
    try:
        wait_until(lambda: (lambda k: k == 1 or k)(show_clients(p)), 10, "clients still listed")
        report(True, f"many: all {n} gone from SHOW CLIENTS after they close", "only the console is left")
    except AssertionError as e:
        report(False, f"many: all {n} gone from SHOW CLIENTS after they close", str(e))
    finish(p, "many")


# --------------------------------------------------------------------------- 2. login flood

def flood_round(p, n, timeout_s):
    """n sockets connect; every other one sends half a startup packet, none logs in. Waits
    until pgshard has closed them all (or timeout_s + 5 s). Returns (seconds to open them,
    RSS with them open, seconds after which each saw EOF, how many saw it before the
    timeout, how many are still open)."""
    sel = selectors.DefaultSelector()
    partial = startup_packet({"user": USER, "database": DB})[:6]
    opened = {}
    t0 = time.monotonic()
    for i in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(5)
        s.connect(("127.0.0.1", p.port))
        if i % 2:
            s.sendall(partial)
        s.setblocking(False)
        opened[s] = time.monotonic()
        sel.register(s, selectors.EVENT_READ)
    t_open = time.monotonic() - t0
    time.sleep(0.3)
    rss_flood = mem(p)[0]
    closed_after, early = [], 0
    deadline = time.monotonic() + timeout_s + 5
    left = n
    while left and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=0.5):
            s = key.fileobj
            try:
                data = s.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if data:
                continue  # the FATAL ErrorResponse before the close
            after = time.monotonic() - opened[s]
            closed_after.append(after)
            if after < timeout_s - 0.1:
                early += 1
            sel.unregister(s)
            s.close()
            left -= 1
    sel.close()
    for s in opened:
        s.close()
    return t_open, rss_flood, closed_after, early, left


def case_login_flood():
    timeout_s, n = 2, 2000
    p = start_proxy("flood", client_login_timeout=timeout_s, max_client_conn=n + 100, admin_users=USER)
    base = warm_baseline(p)
    c = login(p.port, password=None)
    before = []
    for _ in range(200):
        t = time.monotonic()
        c.query("select 1")
        before.append(time.monotonic() - t)

    during, errors, stop = [], [], threading.Event()

    def keep_querying():
        while not stop.is_set():
            t = time.monotonic()
            try:
                rows, _ = c.query("select 1")
                if rows != [["1"]]:
                    errors.append(f"wrong answer {rows!r}")
            except Exception as e:  # noqa: BLE001 - any failure is the finding
                errors.append(repr(e))
                return
            during.append(time.monotonic() - t)

    th = threading.Thread(target=keep_querying)
    th.start()
    rounds, after = [], []
    for _ in range(2):
        rounds.append(flood_round(p, n, timeout_s))
        time.sleep(0.5)
        after.append(mem(p)[0])
    time.sleep(0.5)
    stop.set()
    th.join(15)
    for i, (t_open, rss_flood, closed_after, early, left) in enumerate(rounds, 1):
        report(left == 0, f"flood {i}: {n} unauthenticated sockets closed by pgshard within {timeout_s} s + 5 s",
               f"opened in {t_open:.1f} s; closed after {min(closed_after, default=0):.1f}.."
               f"{max(closed_after, default=0):.1f} s; {left} still open; RSS with them open {fmt_mb(rss_flood)}")
        report(early == 0, f"flood {i}: none closed before client_login_timeout", f"{early} early")
    report(not errors and len(during) > 0, "flood: a logged-in client keeps getting answers during the flood",
           f"{len(during)} queries; errors: {errors[:3]}")
    print(f"info flood: select 1 latency before p50 {percentile(before, .5) * 1e3:.2f} ms "
          f"p99 {percentile(before, .99) * 1e3:.2f} ms; during p50 {percentile(during, .5) * 1e3:.2f} ms "
          f"p99 {percentile(during, .99) * 1e3:.2f} ms max {max(during, default=0) * 1e3:.1f} ms", flush=True)
    hwm = mem(p)[1]
    print(f"info flood: RSS baseline {fmt_mb(base)}, with flood 1 {fmt_mb(rounds[0][1])}, after it "
          f"{fmt_mb(after[0])}, with flood 2 {fmt_mb(rounds[1][1])}, after it {fmt_mb(after[1])}, "
          f"peak {fmt_mb(hwm)}", flush=True)
    check_mem(after[0] < base + 8 * MB, "flood: RSS after the flood < baseline + 8 MB (freed, but the heap keeps its pages)",
              f"{fmt_mb(after[0])} vs {fmt_mb(base)}")
    # A second flood grows RSS a little more (about half as much: freed 16 kB read buffers and
    # client records are reused at other places in the heap, whose pages become resident in
    # turn, converging on the heap's high-water mark); what shows that nothing is kept is
    # the admin console's client list, and LeakSanitizer in the ASan build.
    check_mem(after[1] < base + 16 * MB, "flood: RSS after a second flood < baseline + 16 MB",
              f"{fmt_mb(after[1])} vs {fmt_mb(base)}")
    left = show_clients(p)
    report(left == 2, "flood: SHOW CLIENTS lists only the querying client and the console",
           f"{left} clients listed")
    ok = c.scalar("select 3") == "3"
    c.terminate()
    report(ok, "flood: the client still works after the flood", "select 3 answered")
    finish(p, "flood")


# --------------------------------------------------------------------------- 3. backpressure

def case_unread_result():
    rows = 1000000 if BIG else 200000
    p = start_proxy("unread")
    base = warm_baseline(p)
    c = login(p.port, password=None)
    sql = f"select repeat('x', 1000) from generate_series(1, {rows})"
    c.send(query_msg(sql))
    peak = 0
    for _ in range(16):
        time.sleep(0.25)
        peak = max(peak, mem(p)[0])
    wait = psql("select coalesce(wait_event, 'none') from pg_stat_activity "
                f"where query = '{sql.replace(chr(39), chr(39) * 2)}'")
    report(wait == "ClientWrite", "unread: the server is blocked writing the result (backpressure reaches it)",
           f"wait_event {wait!r}")
    check_mem(peak < base + 16 * MB, f"unread: RSS bounded while a {rows * 1011 // MB} MB result is not read",
              f"peak sampled {fmt_mb(peak)}, baseline {fmt_mb(base)}")
    r = Counter(c.sock)
    t = time.monotonic()
    while r.count("Z") == 0:
        if not r.pump(TIMEOUT):
            break
    secs = time.monotonic() - t
    hwm = mem(p)[1]
    report(r.count("D") == rows and r.last_tag == f"SELECT {rows}" and r.error is None,
           "unread: the client then reads every row",
           f"{r.count('D')} rows, tag {r.last_tag!r}, {fmt_mb(r.bytes)} in {secs:.1f} s; error {r.error}")
    check_mem(hwm < base + 16 * MB, "unread: peak RSS (VmHWM) over the whole result < baseline + 16 MB",
              f"{fmt_mb(hwm)}, baseline {fmt_mb(base)}")
    c.buf = bytes(r.buf)
    ok = c.scalar("select 4") == "4"
    c.terminate()
    report(ok, "unread: the connection is usable afterwards", "select 4 answered")
    finish(p, "unread")


# --------------------------------------------------------------------------- 4. pipelined flood

def extended_select1():
    return (msg(b"P", cstr("") + cstr("select 1") + struct.pack("!H", 0))
            + msg(b"B", cstr("") + cstr("") + struct.pack("!HHH", 0, 0, 0))
            + msg(b"E", cstr("") + struct.pack("!I", 0))
            + msg(b"S"))


def case_pipeline_flood():
    total = (1 << 30) if BIG else 200 * MB
    p = start_proxy("pipeline")
    base = warm_baseline(p)
    c = login(p.port, password=None)
    per = 2000
    one = extended_select1()
    chunk = one * per
    state = {"sent": 0, "groups": 0, "error": None, "done": False}
    stop = threading.Event()

    def writer():
        c.sock.settimeout(120)
        try:
            while state["sent"] < total and not stop.is_set():
                c.sock.sendall(chunk)
                state["sent"] += len(chunk)
                state["groups"] += per
        except OSError as e:
            state["error"] = repr(e)
        state["done"] = True

    th = threading.Thread(target=writer)
    th.start()
    # Sampled until a whole second passes with nothing written (the buffers on the way are
    # full), at least 4 s and at most 30 s (a slow build takes longer to fill them).
    samples, peak, t = [], 0, time.monotonic()
    while True:
        time.sleep(0.25)
        peak = max(peak, mem(p)[0])
        samples.append(state["sent"])
        stalled = len(samples) >= 5 and samples[-1] == samples[-5] and samples[-1] < total
        if (stalled and len(samples) >= 16) or state["done"] or time.monotonic() - t > 30:
            break
    report(stalled, f"pipeline: the client's writes stall (of {total // MB} MB offered, nothing read)",
           f"{fmt_mb(samples[-1])} ({state['groups']} statements) written in {time.monotonic() - t:.1f} s, last second "
           f"{fmt_mb(samples[-1] - samples[-5])}; writer error {state['error']}")
    check_mem(peak < base + 16 * MB, "pipeline: RSS bounded while the client writes without reading",
              f"peak sampled {fmt_mb(peak)}, baseline {fmt_mb(base)}")
    # make test stops writing once the client reads; the big variant goes on writing all of
    # it while reading, so 1 GB of statements passes through pgshard.
    if not BIG:
        stop.set()
    r = Counter(c.sock)
    t = time.monotonic()
    limit = 1800 if BIG else 120
    while not (state["done"] and r.count("Z") >= state["groups"]):
        if not r.pump(TIMEOUT):
            break
        if time.monotonic() - t > limit:
            break
    th.join(10)
    secs = time.monotonic() - t
    hwm = mem(p)[1]
    report(state["done"] and state["error"] is None and r.count("Z") == state["groups"]
           and r.count("D") == state["groups"] and r.error is None,
           "pipeline: once the client reads, every statement it sent is answered",
           f"{state['groups']} sent, {r.count('Z')} ReadyForQuery, {r.count('D')} rows, "
           f"{fmt_mb(r.bytes)} read in {secs:.1f} s; error {r.error}; writer error {state['error']}")
    check_mem(hwm < base + 16 * MB, "pipeline: peak RSS (VmHWM) < baseline + 16 MB",
              f"{fmt_mb(hwm)}, baseline {fmt_mb(base)}")
    c.buf = bytes(r.buf)
    c.sock.settimeout(TIMEOUT)
    ok = c.scalar("select 5") == "5"
    c.terminate()
    report(ok, "pipeline: the connection is usable afterwards", "select 5 answered")
    finish(p, "pipeline")


def main():
    t0 = time.monotonic()
    print(f"info: {'ASan build: memory bounds reported, not asserted; ' if ASAN else ''}"
          f"{'big variant (PGS_OVERLOAD_BIG=1)' if BIG else 'make-test sizes'}", flush=True)
    for case in (case_many, case_login_flood, case_unread_result, case_pipeline_flood):
        t = time.monotonic()
        try:
            case()
        except Exception as e:  # noqa: BLE001 - report and go on with the next case
            report(False, case.__name__, f"{type(e).__name__}: {e}")
            for p in list(STARTED):
                print(f"--- log of {p.name}:\n{p.log_tail()}", flush=True)
                p.kill()
                STARTED.remove(p)
        print(f"info {case.__name__}: {time.monotonic() - t:.1f} s", flush=True)
    print(f"info: total {time.monotonic() - t0:.1f} s", flush=True)
    sys.exit(report.summary())


if __name__ == "__main__":
    main()

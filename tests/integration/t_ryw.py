#!/usr/bin/env python3
"""Read-your-writes (shared cluster, two replicas), with psycopg 3 through pgshard.

Both replicas are made stale on purpose: replica1's replay is paused, replica2 applies
commits 200 ms late (ALTER SYSTEM SET recovery_min_apply_delay = '200ms'). The proxy runs
with max_lag_ms = 0 and max_lag_bytes = 0, so stale replicas stay eligible and only
read-your-writes keeps a client from reading a replica that has not seen its own write.

  - a connection that never writes gets its reads from the replicas (so the setup does route
    reads to them), over the simple and over the extended query protocol;
  - read_your_writes at its default (session): 10,000 iterations of
    INSERT ... RETURNING id, then a read of that id (with inet_server_port(), so the node
    that served each read is known), on one autocommit connection with psycopg's
    ClientCursor (simple query protocol): zero stale reads, in under 60 s. Then 10,000 more
    with the default cursor (extended protocol, unnamed statements): the same;
  - once replica2 has replayed a client's write (200 ms + a poll later), that client's reads
    go back to replica2, and never to the paused replica1;
  - read_your_writes = off: 300 iterations must see stale reads (the row is missing), so the
    first part can fail.

At exit (also on failure, SIGTERM or the watchdog) replay is resumed on replica1 and
recovery_min_apply_delay is reset on replica2. Environment (set by CTest): PGS_CLUSTER_DIR,
PGSHARD_BIN, PGS_SRC, PGS_WORK. Prints one line per check and "N passed, M failed".
"""
import os
import sys

import need_psycopg  # noqa: E402,F401 (runs this test again under /usr/bin/python3 if need be)
import psycopg  # noqa: E402

import collections
import signal
import time

os.environ["PGWIRE_TEST"] = "t_ryw"
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pgwire  # noqa: E402
from pgwire import CENV, DB, PASSWORD, PG_HOST, PG_PORT, USER, WORK  # noqa: E402

N_RYW = 10000
N_RYW_EXT = 10000
N_OFF = 300
RYW_LIMIT_S = 60.0
WATCHDOG = 110  # CTest allows 300 s; the brief: well under 2 minutes
SOCKDIR = CENV["PGS_SOCKDIR"]
SUPERUSER = CENV.get("PGS_SUPERUSER", "postgres")
if int(CENV.get("PGS_REPLICAS", "0")) < 2:
    pgwire.die(f"needs a cluster with 2 replicas per shard (cluster.sh start DIR --replicas 2); "
               f"this one has {CENV.get('PGS_REPLICAS')}")
R1 = int(CENV["PGS_SHARD0_REPLICA1_PORT"])
R2 = int(CENV["PGS_SHARD0_REPLICA2_PORT"])
NODE = {PG_PORT: "primary", R1: "replica1", R2: "replica2"}


class Watchdog(Exception):
    pass


def Proxy(name, shard_keys, **keys):  # noqa: N802 - stands for the class it builds
    """A pgshard with [shard.0] keys (replicas = ...) and this test's admin user."""
    return pgwire.Proxy(name, shard_keys=shard_keys, **{"admin_users": USER, **keys})


def superuser(port):
    return psycopg.connect(host=SOCKDIR, port=port, user=SUPERUSER, dbname=DB, autocommit=True, connect_timeout=10)


def app_direct(port=PG_PORT):
    return psycopg.connect(host=PG_HOST, port=port, user=USER, password=PASSWORD, dbname=DB, autocommit=True,
                           connect_timeout=10)


def through(proxy):
    return psycopg.connect(host="127.0.0.1", port=proxy.port, user=USER, password=PASSWORD, dbname=DB,
                           autocommit=True, prepare_threshold=None, connect_timeout=10)


def show_replicas(proxy):
    """SHOW REPLICAS over the simple protocol, as {port: row} (columns as the spec orders them:
    shard|node|role|host|port|health|in_recovery|lag_bytes|lag_ms|circuit|weight|reads)."""
    c = pgwire.login(proxy.port, database="pgshard")
    try:
        rows, _ = c.query("SHOW REPLICAS")
    finally:
        c.terminate()
    return {int(r[4]): r for r in rows}


def wait_replicas_up(proxy, timeout=15):
    last = {}

    def ok():
        nonlocal last
        try:
            last = show_replicas(proxy)
        except Exception as e:  # noqa: BLE001 - not answering yet is "not up yet"
            last = repr(e)
            return False
        return all(p in last and last[p][5] == "up" and last[p][6] == "t" and last[p][9] == "closed"
                   for p in (R1, R2)) or last
    pgwire.wait_until(ok, timeout, f"SHOW REPLICAS of {proxy.name} does not show both replicas up")


# --------------------------------------------------------------------------- cluster state

def cleanup_cluster():
    """Resume replica1, reset replica2's apply delay, drop the table. Never raises."""
    msgs = []
    try:
        with superuser(R1) as c:
            c.execute("SELECT pg_wal_replay_resume()")
    except Exception as e:  # noqa: BLE001
        msgs.append(f"resume replay on replica1: {e}")
    try:
        with superuser(R2) as c:
            c.execute("ALTER SYSTEM RESET recovery_min_apply_delay")
            c.execute("SELECT pg_reload_conf()")
    except Exception as e:  # noqa: BLE001
        msgs.append(f"reset recovery_min_apply_delay on replica2: {e}")
    try:
        with app_direct() as c:
            c.execute("DROP TABLE IF EXISTS ryw_t")
    except Exception as e:  # noqa: BLE001
        msgs.append(f"drop ryw_t: {e}")
    return msgs


def make_replicas_stale():
    with superuser(R1) as c:
        c.execute("SELECT pg_wal_replay_pause()")
        pgwire.wait_until(lambda: c.execute("SELECT pg_get_wal_replay_pause_state()").fetchone()[0] == "paused"
                          or c.execute("SELECT pg_get_wal_replay_pause_state()").fetchone()[0], 10,
                          "replica1's replay does not pause")
    with superuser(R2) as c:
        c.execute("ALTER SYSTEM SET recovery_min_apply_delay = '200ms'")
        c.execute("SELECT pg_reload_conf()")
        pgwire.wait_until(lambda: c.execute("SHOW recovery_min_apply_delay").fetchone()[0] == "200ms"
                          or c.execute("SHOW recovery_min_apply_delay").fetchone()[0], 10,
                          "replica2 does not take recovery_min_apply_delay = 200ms")


# --------------------------------------------------------------------------- the checks

def ryw_loop(conn, n, client_side=False):
    """n x (INSERT ... RETURNING id; read that id). Returns (stale, wrong, ports of the reads, seconds)."""
    cur = psycopg.ClientCursor(conn) if client_side else conn.cursor()  # simple / extended protocol
    stale = wrong = 0
    ports = collections.Counter()
    stale_ports = collections.Counter()
    first_stale = None
    t0 = time.monotonic()
    for i in range(n):
        cur.execute("INSERT INTO ryw_t (v) VALUES (%s) RETURNING id", (i,))
        rid = cur.fetchone()[0]
        cur.execute("SELECT (SELECT v FROM ryw_t WHERE id = %s), inet_server_port()", (rid,))
        v, port = cur.fetchone()
        ports[port] += 1
        if v is None:
            stale += 1
            stale_ports[port] += 1
            if first_stale is None:
                first_stale = (i, rid, port)
        elif v != i:
            wrong += 1
    return stale, wrong, ports, stale_ports, first_stale, time.monotonic() - t0


def fmt_ports(ports):
    return ", ".join(f"{NODE.get(p, p)} {n}" for p, n in sorted(ports.items())) or "none"


def main():
    os.makedirs(WORK, exist_ok=True)

    def on_alarm(*_):
        raise Watchdog(f"still running after {WATCHDOG} s")
    signal.signal(signal.SIGALRM, on_alarm)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.alarm(WATCHDOG)
    t_start = time.monotonic()
    report = pgwire.Report()
    proxies = []

    print(f"psycopg {psycopg.__version__}; primary :{PG_PORT}, replica1 :{R1}, replica2 :{R2}", flush=True)
    try:
        # The table must be on both replicas before they go stale (a read of a table a
        # replica does not have is an error, not a stale read).
        for m in cleanup_cluster():
            print(f"(before start: {m})")
        with app_direct() as c:
            c.execute("CREATE TABLE ryw_t (id bigserial PRIMARY KEY, v int NOT NULL)")
        for port in (R1, R2):
            with superuser(port) as c:
                pgwire.wait_until(lambda: c.execute("SELECT to_regclass('ryw_t') IS NOT NULL").fetchone()[0], 15,
                                  f"ryw_t does not reach {NODE[port]}")
        make_replicas_stale()

        # Harness check: straight to the nodes, a row just written is missing on both
        # replicas (connections opened first: replica2 shows it 200 ms later).
        with app_direct() as c, app_direct(R1) as c1, app_direct(R2) as c2:
            rid = c.execute("INSERT INTO ryw_t (v) VALUES (-1) RETURNING id").fetchone()[0]
            seen = {NODE[cx.info.port]: cx.execute("SELECT count(*) FROM ryw_t WHERE id = %s", (rid,)).fetchone()[0]
                    for cx in (c1, c2)}
        report(seen == {"replica1": 0, "replica2": 0}, "both replicas are stale (direct check)",
               f"a row just written on the primary is seen by {seen}")

        ryw = Proxy("ryw", {"replicas": f"{PG_HOST}:{R1}, {PG_HOST}:{R2}"},
                    max_lag_ms=0, max_lag_bytes=0, lag_poll_ms=20)
        proxies.append(ryw)
        wait_replicas_up(ryw)
        rows = show_replicas(ryw)
        print("SHOW REPLICAS: " + "; ".join("|".join(r) for r in rows.values()), flush=True)

        # A connection that never writes reads from the replicas, whatever the protocol.
        with through(ryw) as r:
            ports = collections.Counter(r.execute("SELECT inet_server_port()").fetchone()[0] for _ in range(20))
        report(ports and set(ports) <= {R1, R2}, "a connection that never writes reads from replicas (simple protocol)",
               f"20 reads: {fmt_ports(ports)}")
        with through(ryw) as r:
            ports = collections.Counter(r.execute("SELECT inet_server_port(), %s::int", (i,)).fetchone()[0]
                                        for i in range(20))
        report(ports and set(ports) <= {R1, R2},
               "a connection that never writes reads from replicas (extended protocol, unnamed statement)",
               f"20 reads: {fmt_ports(ports)}")

        # Read-your-writes, simple query protocol.
        with through(ryw) as w:
            stale, wrong, ports, stale_ports, first, secs = ryw_loop(w, N_RYW, client_side=True)
        report(stale == 0 and wrong == 0,
               f"read_your_writes = session: {N_RYW} write-then-read iterations (simple protocol)",
               f"{stale} stale (by node: {fmt_ports(stale_ports)}; first: {first}), {wrong} wrong; "
               f"the reads were served by {fmt_ports(ports)} ({ports[R1] + ports[R2]} by replicas)")
        report(secs < RYW_LIMIT_S, f"{N_RYW} iterations in under {RYW_LIMIT_S:.0f} s",
               f"MEASURED {secs:.1f} s ({secs / N_RYW * 1e6:.0f} us per INSERT + read)")

        # The same over the extended protocol (psycopg's default cursor, unnamed statements).
        with through(ryw) as w:
            stale, wrong, ports, stale_ports, first, secs = ryw_loop(w, N_RYW_EXT)
        report(stale == 0 and wrong == 0,
               f"read_your_writes = session: {N_RYW_EXT} iterations (extended protocol)",
               f"{stale} stale (first: {first}), {wrong} wrong; reads served by {fmt_ports(ports)}")
        report(secs < RYW_LIMIT_S, f"{N_RYW_EXT} extended-protocol iterations in under {RYW_LIMIT_S:.0f} s",
               f"MEASURED {secs:.1f} s ({secs / N_RYW_EXT * 1e6:.0f} us per INSERT + read)")

        # After replica2 has replayed the write, the writer reads from it again (not from the
        # paused replica1, which never will).
        with through(ryw) as w:
            cur = psycopg.ClientCursor(w)
            cur.execute("INSERT INTO ryw_t (v) VALUES (-2) RETURNING id")
            rid = cur.fetchone()[0]
            t0 = time.monotonic()
            seen = collections.Counter()
            missing = 0
            back = None
            while time.monotonic() - t0 < 5:
                cur.execute("SELECT (SELECT v FROM ryw_t WHERE id = %s), inet_server_port()", (rid,))
                v, port = cur.fetchone()
                seen[port] += 1
                missing += v is None
                if port == R2 and back is None:
                    back = time.monotonic() - t0
                if back is not None and seen[R2] >= 5:
                    break
                time.sleep(0.01)
        report(missing == 0 and seen[R1] == 0 and back is not None,
               "after replica2 replayed the write, the writer reads from replica2 (never the paused replica1)",
               f"MEASURED first read on replica2 {back * 1000 if back is not None else float('nan'):.0f} ms "
               f"after the write; reads: {fmt_ports(seen)}, {missing} stale")
        try:
            ryw.stop()
            report(True, "proxy ryw: SIGTERM -> exit 0, no sanitizer report", "clean")
        except AssertionError as e:
            report(False, "proxy ryw: SIGTERM -> exit 0, no sanitizer report", str(e))

        # replica_fallback = error refuses reads when no replica is eligible, but a read that
        # waits for the client's own write is the primary's to serve, not an error.
        strict = Proxy("ryw_strict", {"replicas": f"{PG_HOST}:{R1}, {PG_HOST}:{R2}"},
                       max_lag_ms=0, max_lag_bytes=0, lag_poll_ms=20, replica_fallback="error")
        proxies.append(strict)
        wait_replicas_up(strict)
        with through(strict) as w:
            stale, wrong, ports, _, _, secs = ryw_loop(w, 300, client_side=True)
        report(stale == 0 and wrong == 0, "replica_fallback = error: 300 write-then-read iterations",
               f"{stale} stale, {wrong} wrong, no error; reads served by {fmt_ports(ports)}; {secs:.1f} s")
        strict.stop()

        # Without read-your-writes the stale replicas do serve the reads.
        off = Proxy("ryw_off", {"replicas": f"{PG_HOST}:{R1}, {PG_HOST}:{R2}"},
                    max_lag_ms=0, max_lag_bytes=0, lag_poll_ms=20, read_your_writes="off")
        proxies.append(off)
        wait_replicas_up(off)
        with through(off) as w:
            stale, wrong, ports, stale_ports, first, secs = ryw_loop(w, N_OFF, client_side=True)
        report(stale > 0 and wrong == 0, f"read_your_writes = off: {N_OFF} iterations see stale reads",
               f"{stale} stale (by node: {fmt_ports(stale_ports)}), {wrong} wrong; reads served by "
               f"{fmt_ports(ports)}; {secs:.1f} s")
        try:
            off.stop()
            report(True, "proxy ryw_off: SIGTERM -> exit 0, no sanitizer report", "clean")
        except AssertionError as e:
            report(False, "proxy ryw_off: SIGTERM -> exit 0, no sanitizer report", str(e))
    except (Exception, Watchdog) as e:  # noqa: BLE001 - any error is a failed check
        report(False, "test", f"{type(e).__name__}: {e}")
        for p in proxies:
            if p.alive():
                print(f"--- log of proxy {p.name} ---\n{p.log_tail()}", flush=True)
    finally:
        signal.alarm(0)
        for p in proxies:
            p.kill()
        for m in cleanup_cluster():
            report(False, "cleanup", m)
        try:
            with superuser(R2) as c:
                delay = c.execute("SHOW recovery_min_apply_delay").fetchone()[0]
            with superuser(R1) as c:
                state = c.execute("SELECT pg_get_wal_replay_pause_state()").fetchone()[0]
            print(f"(after cleanup: replica2 recovery_min_apply_delay {delay}, replica1 replay {state})")
        except Exception as e:  # noqa: BLE001
            print(f"(after cleanup: could not check: {e})")
    print(f"({time.monotonic() - t_start:.1f} s)")
    return report.summary()


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Allocation-failure sweep (issue 14 item 4), in the manner of SQLite's test_malloc: for
N = 1, 2, ... one pgshard process (a -DPGS_ALLOC_FAIL=ON -DPGS_SANITIZE=ON build) whose Nth
allocation fails, counted from a point of interest, runs one scenario; pgshard must not
crash, the client must get its answer or an ErrorResponse (never a hang), a fresh client
must then be served, and SIGTERM must end pgshard with status 0 and no LeakSanitizer report.

  sweep.py --bin BUILD/pgshard --cluster DIR [--scenario S ...] [--first F] [--every K] [-j J]

Scenarios (count from):
  startup   config load, workers, listen (process start): a failure there must end pgshard
            with a non-zero status and a message, without a crash or a leak
  query     login + simple query ('listening')
  extended  login + Parse/Bind/Describe/Execute/Sync of a named statement ('listening')
  copy      login + COPY FROM STDIN of a few rows into a sharded table ('listening')
  sharded   login + BEGIN, a two-row INSERT, a keyed SELECT, ROLLBACK, a keyless count and
            a keyless ORDER BY ... LIMIT on the sharded table ('listening')
  twopc     with two_phase_commit and allow_cross_shard_writes: a multi-row INSERT split
            over the shards, a keyless UPDATE and DELETE on every shard ('listening')
  admin     the admin console: every SHOW, SHOW ROUTE, PAUSE, RESUME ('listening')
  reload    SIGHUP, then login + query ('sighup')
Each scenario is first run with no failure to count its allocations K; then N = 1..K is
swept (all of them up to --first, every --every-th after that). Exits 1 when a run failed.
"""
import argparse
import collections
import concurrent.futures
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("--bin", required=True, help="pgshard built with PGS_ALLOC_FAIL and PGS_SANITIZE")
ap.add_argument("--cluster", required=True, help="DIR of tests/cluster/cluster.sh start DIR")
ap.add_argument("--scenario", action="append", choices=["startup", "query", "extended", "copy", "sharded", "twopc", "admin", "reload"])
ap.add_argument("--first", type=int, default=200, help="sweep every N up to this one")
ap.add_argument("--every", type=int, default=1, help="beyond --first, every K-th N")
ap.add_argument("--max", type=int, default=0, help="stop at this N (0: at the count)")
ap.add_argument("--n", type=int, action="append", help="run only these N (logs kept)")
ap.add_argument("--persist", action="store_true",
                help="every allocation from the Nth on fails (a fresh client then only must not hang)")
ap.add_argument("--stack", action="store_true", help="log the stack of the failed allocation")
ap.add_argument("-j", "--jobs", type=int, default=1)
ap.add_argument("--work", default=os.path.join(os.environ.get("TMPDIR", "/tmp"), "pgshard-alloc"))
ap.add_argument("--keep", action="store_true", help="keep the logs of runs that passed")
args = ap.parse_args()

os.environ["PGS_CLUSTER_DIR"] = args.cluster
os.environ["PGSHARD_BIN"] = os.path.abspath(args.bin)
os.environ.setdefault("PGWIRE_TEST", "alloc")
os.environ["PGS_WORK"] = args.work
os.makedirs(args.work, exist_ok=True)
os.environ.setdefault("PGWIRE_TIMEOUT", "5.0")
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
from pgwire import (CENV, CLUSTER_DIR, CLUSTER_SH, PG_HOST, USER, PASSWORD, Closed, Conn, PgError, cstr, free_port,  # noqa: E402
                    msg, parse_error, query_msg)

TABLE = "af_items"
TL = threading.local()  # .conns: the connections of the action this thread runs
SANITIZER = ("AddressSanitizer", "LeakSanitizer", "runtime error", "ThreadSanitizer")


NSHARDS = int(CENV.get("PGS_SHARDS", "1"))


def psql_all(sql):
    """Runs sql on every shard's primary as the superuser."""
    for shard in range(NSHARDS):
        subprocess.run([CLUSTER_SH, "psql", CLUSTER_DIR, str(shard), "--", "-q", "-v", "ON_ERROR_STOP=1", "-c", sql],
                       check=True, capture_output=True, timeout=30)


# Keys a scenario adds to [pgshard].
# twopc: a failure after PREPARE leaves prepared transactions, by design, for the recovery
# to finish; they hold row locks that the next run's UPDATE would wait for until the default
# 5 s grace is over, so the recovery runs often and its grace is short (but above the 1 s
# that a PREPARE round may take under ASan: pgshard gives up after half the grace).
EXTRA = {"twopc": "two_phase_commit = on\nallow_cross_shard_writes = on\n"
                  "two_phase_recovery_interval_ms = 500\ntwo_phase_recovery_grace_ms = 2000\n"}


def write_config(path, port, extra=""):
    shards = "".join(f"[shard.{i}]\nprimary = {PG_HOST}:{CENV[f'PGS_SHARD{i}_PRIMARY_PORT']}\n\n"
                     for i in range(NSHARDS))
    with open(path, "w") as f:
        f.write(f"""; written by tests/alloc/sweep.py
[pgshard]
listen_addr = 127.0.0.1
listen_port = {port}
workers = 1
pool_mode = transaction
pool_size = 2
auth_type = scram-sha-256
log_level = info
shutdown_timeout = 2
query_wait_timeout = 3
admin_users = {USER}
{extra}
{shards}[table.{TABLE}]
shard_key = id
key_type = int

[user.{USER}]
password = {PASSWORD}
""")


class Run:
    """One pgshard process; fail_at 0 counts only."""

    def __init__(self, scenario, fail_at):
        self.scenario, self.fail_at = scenario, fail_at
        self.dir = os.path.join(args.work, scenario)
        os.makedirs(self.dir, exist_ok=True)
        self.port = free_port()
        self.ini = os.path.join(self.dir, f"n{fail_at}.ini")
        self.log = os.path.join(self.dir, f"n{fail_at}.log")
        write_config(self.ini, self.port, EXTRA.get(scenario, ""))
        env = dict(os.environ)
        env.update({"PGS_ALLOC_COUNT": "1", "PGS_ALLOC_FAIL_AT": str(fail_at),
                    "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0:symbolize=1",
                    "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1"})
        if args.stack:
            env["PGS_ALLOC_FAIL_STACK"] = "1"
        if args.persist:
            env["PGS_ALLOC_FAIL_PERSIST"] = "1"
        after = {"startup": None, "reload": "sighup"}.get(scenario, "listening")
        if after:
            env["PGS_ALLOC_FAIL_AFTER"] = after
        else:
            env.pop("PGS_ALLOC_FAIL_AFTER", None)
        self.logf = open(self.log, "wb")
        self.proc = subprocess.Popen([args.bin, "-c", self.ini], stdout=self.logf, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=env)

    def text(self):
        with open(self.log, errors="replace") as f:
            return f.read()

    def wait_listening(self, timeout=10):
        """True once the log says 'listening' (the mark is set just after), False if pgshard
        exited first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            if "listening" in self.text():
                return True
            time.sleep(0.02)
        raise AssertionError("pgshard neither listens nor exits within 10 s")

    def wait_log(self, pattern, timeout=5):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if re.search(pattern, self.text()):
                return True
            if self.proc.poll() is not None:
                return False
            time.sleep(0.02)
        return False

    def stop(self):
        """SIGTERM; returns the exit status (None: hung and was killed)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                self.logf.close()
                return None
        self.logf.close()
        return self.proc.returncode


# --------------------------------------------------------------------------- client actions
# Each returns "ok" or "error SQLSTATE"; raises Closed (a close without an ErrorResponse)
# or socket.timeout (a hang).

class AfConn(Conn):
    """Remembers the last ErrorResponse, so that a close after one is told from a silent
    close (read_results raises an error only at ReadyForQuery)."""

    last_error = None

    def recv_msg(self):
        t, body = super().recv_msg()
        if t == b"E":
            self.last_error = PgError(parse_error(body))
        return t, body


def login(port):
    c = AfConn(port)
    TL.conns.append(c)
    c.login()
    return c


def act_query(port):
    c = login(port)
    try:
        rows, _ = c.query("SELECT 41 + 1")
        assert rows == [["42"]], rows
        return "ok"
    finally:
        c.terminate()


def act_extended(port):
    c = login(port)
    try:
        c.send(msg(b"P", cstr("af_s1") + cstr("SELECT $1::int + 1") + struct.pack("!h", 0)) +
               msg(b"B", cstr("") + cstr("af_s1") + struct.pack("!hhi", 0, 1, 2) + b"41" + struct.pack("!h", 0)) +
               msg(b"D", b"P" + cstr("")) + msg(b"E", cstr("") + struct.pack("!i", 0)) + msg(b"S"))
        rows, _ = c.read_results()
        assert rows == [["42"]], rows
        return "ok"
    finally:
        c.terminate()


def act_copy(port):
    c = login(port)
    try:
        c.send(query_msg(f"COPY {TABLE} (id, v) FROM STDIN"))
        t, body = c.recv_msg()
        while t in (b"N", b"S"):
            t, body = c.recv_msg()
        if t != b"G":
            c.buf = bytes([t[0]]) + struct.pack("!I", len(body) + 4) + body + c.buf
            c.read_results()  # raises the ErrorResponse
            raise AssertionError(f"COPY: no CopyInResponse but {t!r}")
        for i in range(1, 6):
            c.send(msg(b"d", f"{i}\trow {i}\n".encode()))
        c.send(msg(b"c"))
        _, tags = c.read_results()
        assert tags == ["COPY 5"], tags
        return "ok"
    finally:
        c.terminate()


def act_sharded(port):
    c = login(port)
    try:
        c.query("BEGIN")
        c.query(f"INSERT INTO {TABLE} (id, v) VALUES (7, 'seven'), (8, 'eight')")
        rows, _ = c.query(f"SELECT v FROM {TABLE} WHERE id = 7 LIMIT 1")
        assert rows == [["seven"]], rows
        c.query("ROLLBACK")
        rows, _ = c.query(f"SELECT count(*) FROM {TABLE}")
        assert len(rows) == 1, rows
        c.query(f"SELECT id, v FROM {TABLE} ORDER BY id DESC LIMIT 3")
        return "ok"
    finally:
        c.terminate()


def act_twopc(run):
    """Rows of this run's own (ids from 10 N): runs side by side (-j) and the prepared
    transactions a failed run leaves for the recovery lock no row of another run."""
    c = login(run.port)
    b = 10 * run.fail_at
    try:
        _, tags = c.query(f"INSERT INTO {TABLE} (id, v) VALUES ({b + 1}, 'a'), ({b + 2}, 'b'), ({b + 3}, 'c'), "
                          f"({b + 4}, 'd')")
        assert tags == ["INSERT 0 4"], tags
        c.query(f"UPDATE {TABLE} SET v = v || '.' WHERE id BETWEEN {b + 1} AND {b + 4}")
        c.query(f"DELETE FROM {TABLE} WHERE id BETWEEN {b + 1} AND {b + 4}")
        return "ok"
    finally:
        c.terminate()


ADMIN = ["SHOW POOLS", "SHOW CLIENTS", "SHOW SERVERS", "SHOW STATS", "SHOW CONFIG", "SHOW SHARDS",
         "SHOW VERSION", f"SHOW ROUTE SELECT v FROM {TABLE} WHERE id = 3", "PAUSE", "RESUME"]


def act_admin(port):
    c = AfConn(port)
    TL.conns.append(c)
    c.login(database="pgshard")
    try:
        for cmd in ADMIN:
            c.query(cmd)
        return "ok"
    finally:
        c.terminate()


def act_reload(run):
    run.proc.send_signal(signal.SIGHUP)
    if not run.wait_log(r"reload(ed|_failed)"):
        raise AssertionError("no reload or reload_failed in the log within 5 s of SIGHUP")
    return act_query(run.port)


def scenario_action(run):
    s = run.scenario
    if s == "reload":
        return act_reload(run)
    if s == "twopc":
        return act_twopc(run)
    return {"startup": act_query, "query": act_query, "extended": act_extended, "copy": act_copy,
            "sharded": act_sharded, "admin": act_admin}[s](run.port)


def client_outcome(run, action=None):
    TL.conns = []
    try:
        return (action or scenario_action)(run)
    except PgError as e:
        return f"error {e.code}"
    except Closed:
        errs = [c.last_error.code for c in TL.conns if c.last_error]
        return f"error {errs[-1]} then closed" if errs else "closed without an error"
    except socket.timeout:
        return "HANG (no answer)"
    except OSError as e:
        return f"connection failed ({e.__class__.__name__})"


def one(scenario, n):
    """Runs scenario with allocation n failing; returns (n, outcome, problems, injected, count)."""
    run = Run(scenario, n)
    problems = []
    outcome = "-"
    try:
        up = run.wait_listening()
        if not up:
            outcome = f"exit {run.proc.returncode} at start"
            if scenario != "startup" or run.proc.returncode == 0:
                problems.append(f"pgshard exited during start with status {run.proc.returncode}")
            elif run.proc.returncode < 0:
                problems.append(f"killed by signal {-run.proc.returncode} at start")
        else:
            outcome = client_outcome(run)
            if outcome.startswith("HANG"):
                problems.append(outcome)
            if run.proc.poll() is not None:
                problems.append(f"pgshard died during the scenario (status {run.proc.returncode})")
            elif args.persist:
                fresh = client_outcome_fresh(run)
                outcome = f"{outcome}; then a fresh client: {fresh}"
                if fresh.startswith("HANG"):
                    problems.append(f"a fresh client afterwards got: {fresh}")
            else:
                # The failure may land in the first fresh client (when the scenario made
                # fewer than N allocations): only the second must be served.
                fresh = client_outcome_fresh(run)
                if fresh != "ok":
                    outcome = f"{outcome}; then a fresh client: {fresh}"
                    fresh = client_outcome_fresh(run)
                    if fresh != "ok":
                        problems.append(f"a second fresh client afterwards got: {fresh}")
    except AssertionError as e:
        problems.append(str(e))
    rc = run.stop()
    if rc is None:
        problems.append("did not exit within 15 s of SIGTERM")
    elif up_exit_bad(run, rc, outcome):
        problems.append(f"exit status {rc} after SIGTERM")
    log = run.text()
    for s in SANITIZER:
        if s in log:
            problems.append(f"{s} report")
    m = re.search(r"pgshard: allocs: (\d+) failed: (\d+)", log)
    count = int(m.group(1)) if m else None
    injected = "pgshard: allocfail: failing allocation" in log
    if not problems and not args.keep:
        os.unlink(run.log)
        os.unlink(run.ini)
    return n, outcome, problems, injected, count


def act_fresh(run):
    """A new client's query; after the admin scenario, RESUME first, as an operator would
    after a PAUSE whose answer was lost (PAUSE outlives its session, as in PgBouncer)."""
    if run.scenario == "admin":
        c = AfConn(run.port)
        TL.conns.append(c)
        c.login(database="pgshard")
        c.query("RESUME")
        c.terminate()
    return act_query(run.port)


def client_outcome_fresh(run):
    return client_outcome(run, act_fresh)


def up_exit_bad(run, rc, outcome):
    if outcome.startswith("exit "):  # exited at start: judged above
        return rc < 0
    return rc != 0


def spans(ns):
    """[1, 2, 3, 7] -> '1-3 7'"""
    out, ns = [], sorted(ns)
    i = 0
    while i < len(ns):
        j = i
        while j + 1 < len(ns) and ns[j + 1] == ns[j] + 1:
            j += 1
        out.append(f"{ns[i]}-{ns[j]}" if j > i else f"{ns[i]}")
        i = j + 1
    return " ".join(out)


def sweep(scenario):
    t0 = time.monotonic()
    persist, args.persist = args.persist, False
    _, outcome, problems, _, total = one(scenario, 0)
    args.persist = persist
    if problems or total is None or outcome != "ok":
        print(f"{scenario}: the counting run failed: {outcome}; {problems}", flush=True)
        return 1, 0
    last = min(total, args.max) if args.max else total
    ns = [n for n in range(1, last + 1) if n <= args.first or (n - args.first) % args.every == 0]
    if args.n:
        ns, args.keep = args.n, True
    print(f"{scenario}: {total} allocations without a failure ({outcome}); sweeping {len(ns)} N", flush=True)
    outcomes, failed = collections.defaultdict(list), []
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as ex:
        for n, outcome, problems, injected, count in ex.map(lambda n: one(scenario, n), ns):
            outcomes[outcome if injected else "(nothing failed: beyond the count)"].append(n)
            if problems:
                failed.append(n)
                print(f"  FAIL {scenario} N={n}: {outcome}; " + "; ".join(problems) +
                      f" (log {args.work}/{scenario}/n{n}.log)", flush=True)
    for o, k in sorted(outcomes.items(), key=lambda x: -len(x[1])):
        print(f"  {len(k):5d}  {o}  (N = {spans(k)})")
    print(f"{scenario}: {len(ns)} N in {time.monotonic() - t0:.0f} s, {len(failed)} failed"
          + (f": N = {failed}" if failed else ""), flush=True)
    return (1 if failed else 0), len(ns)


def main():
    psql_all(f"CREATE TABLE IF NOT EXISTS {TABLE} (id int, v text); GRANT ALL ON {TABLE} TO {USER}")
    rc = 0
    t0 = time.monotonic()
    for s in args.scenario or ["startup", "query", "extended", "copy", "sharded", "twopc", "admin", "reload"]:
        r, _ = sweep(s)
        rc |= r
    psql_all(f"DROP TABLE IF EXISTS {TABLE}")
    print(f"alloc sweep: {time.monotonic() - t0:.0f} s, {'FAILED' if rc else 'passed'}")
    return rc


if __name__ == "__main__":
    sys.exit(main())

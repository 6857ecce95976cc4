#!/usr/bin/env python3
"""The recovery of in-doubt two-phase commits (proxy/recovery.c), on a cluster of its own
(2 shards, no replicas, stopped at exit). Before pgshard starts, the test prepares by hand,
as a crashed pgshard would have left them:
  on shard 1, database app: a pgshard gid whose decision shard 0 recorded in app's
    pgshard.transactions (-> committed), one without a decision (-> rolled back), a gid that
    is not pgshard's (left alone), one that starts with pgshard_ but is not of its form (left
    alone);
  on shard 1, database other: a gid recorded in other's pgshard.transactions (-> committed),
    one recorded only in app's (-> rolled back: the decision lives in the same database);
  on shard 0, database app: a recorded gid (-> committed on shard 0 itself);
  after the grace period of the others has passed, a young one without a decision: still
    prepared right after the start, rolled back once its grace has passed;
  on shard 1, a gid whose decision shard 0 has inserted but not yet committed: left alone
    (twopc_decision_pending) until that commit, then committed.
pgshard starts with two_phase_commit = on, interval 200 ms, grace 3000 ms. Then: each gid
ends as said (rows visible or absent), pgshard_twopc_recovered_total counts 4 commits and 3
rollbacks, an old decision row whose gid is prepared nowhere is deleted and a fresh one is
kept, twopc_resolved is logged for each, and SIGTERM stops pgshard cleanly.
Prints one line per check and "N passed, M failed"; exits 1 when a check failed.
"""
import os
import re
import sys
import time
import urllib.request

import need_psycopg  # noqa: E402,F401
import psycopg  # noqa: E402

import atexit

os.environ["PGWIRE_TEST"] = "t_twopc_recovery"
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pgwire  # noqa: E402
import diffcluster  # noqa: E402

CLUSTER = diffcluster.Cluster("twopc-recovery-cluster", shards=2)
GRACE_MS = 3000
PID = "00000000deadbeef"


def gid(seq):
    return f"pgshard_{PID}_{seq:016x}"


GID_COMMIT = gid(1)      # shard 1, app, recorded
GID_ROLLBACK = gid(2)    # shard 1, app, not recorded
GID_OTHER_DB = gid(3)    # shard 1, other, recorded in other
GID_WRONG_DB = gid(4)    # shard 1, other, recorded only in app
GID_SHARD0 = gid(5)      # shard 0, app, recorded
GID_YOUNG = gid(6)       # shard 1, app, not recorded, prepared just before the start
GID_STALE = gid(7)       # recorded two hours ago, prepared nowhere: cleaned up
GID_PENDING = gid(8)     # shard 1, app, its decision still committing on shard 0
FOREIGN = "someone_else_42"
NOT_OURS = "pgshard_manual"

DECISIONS = """DO $$ BEGIN
  CREATE SCHEMA IF NOT EXISTS pgshard;
  CREATE TABLE IF NOT EXISTS pgshard.transactions (gid text PRIMARY KEY,
    decided_at timestamptz NOT NULL DEFAULT now());
EXCEPTION WHEN duplicate_object OR duplicate_table OR unique_violation THEN NULL;
END $$"""


def prepare(conn, name, tag):
    conn.execute("BEGIN")
    conn.execute("INSERT INTO t2pc (tag) VALUES (%s)", (tag,))
    conn.execute(f"PREPARE TRANSACTION '{name}'")


def prepared(conn):
    return {r[0] for r in conn.execute("SELECT gid FROM pg_prepared_xacts")}


def tags(conn):
    return {r[0] for r in conn.execute("SELECT tag FROM t2pc")}


def wait_for(fn, timeout):
    deadline = time.monotonic() + timeout
    while not fn() and time.monotonic() < deadline:
        time.sleep(0.1)
    return fn()


def metrics(port):
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return dict(re.findall(r'^pgshard_twopc_recovered_total\{outcome="(\w+)"\} (\d+)$', text, re.M))


def setup():
    """The tables, the decisions and every prepared transaction but the young one."""
    for k in range(2):
        CLUSTER.superuser_psql(f"CREATE DATABASE other OWNER {CLUSTER.user}", shard=k)
    app = CLUSTER.shard_conns()
    other = [CLUSTER.connect(p, "other") for p in CLUSTER.ports]
    for c in app + other:
        c.execute("CREATE TABLE t2pc (id serial, tag text NOT NULL)")
    for c in (app[0], other[0]):
        c.execute(DECISIONS)
    for g in (GID_COMMIT, GID_WRONG_DB, GID_SHARD0):
        app[0].execute("INSERT INTO pgshard.transactions (gid) VALUES (%s)", (g,))
    app[0].execute("INSERT INTO pgshard.transactions (gid, decided_at) VALUES (%s, now() - interval '2 hours')",
                   (GID_STALE,))
    other[0].execute("INSERT INTO pgshard.transactions (gid) VALUES (%s)", (GID_OTHER_DB,))
    prepare(app[1], GID_COMMIT, "commit")
    prepare(app[1], GID_ROLLBACK, "rollback")
    prepare(app[1], FOREIGN, "foreign")
    prepare(app[1], NOT_OURS, "not_ours")
    prepare(other[1], GID_OTHER_DB, "other_commit")
    prepare(other[1], GID_WRONG_DB, "wrong_db")
    prepare(app[0], GID_SHARD0, "shard0")
    prepare(app[1], GID_PENDING, "pending")
    # The decision of GID_PENDING, inserted and not yet committed: shard 0's COMMIT is slow.
    deciding = CLUSTER.connect(CLUSTER.ports[0])
    deciding.execute("BEGIN")
    deciding.execute("INSERT INTO pgshard.transactions (gid) VALUES (%s)", (GID_PENDING,))
    return app, other, deciding


def main():
    diffcluster.install_watchdog(240)
    atexit.register(CLUSTER.stop)
    check = diffcluster.Checks()
    started = time.monotonic()
    CLUSTER.start()
    app, other, deciding = setup()
    proxy = None
    try:
        time.sleep(GRACE_MS / 1000 + 0.5)  # the transactions above are past their grace
        prepare(app[1], GID_YOUNG, "young")
        mport = pgwire.free_port()
        proxy = CLUSTER.proxy(two_phase_commit="on", two_phase_recovery_interval_ms=200,
                              two_phase_recovery_grace_ms=GRACE_MS, metrics_port=mport)
        run(check, proxy, mport, app, other, deciding)
    finally:
        if proxy is not None:
            proxy.stop()
        for c in app + other:
            for g in prepared(c) & {FOREIGN, NOT_OURS, GID_YOUNG}:
                c.execute(f"ROLLBACK PREPARED '{g}'")
        CLUSTER.stop()
    print(f"{check.passed} passed, {check.failed} failed ({time.monotonic() - started:.1f} s)")
    return 1 if check.failed else 0


def run(check, proxy, mport, app, other, deciding):
    resolved = {GID_COMMIT, GID_ROLLBACK}
    ok = wait_for(lambda: not (prepared(app[1]) & resolved) and GID_SHARD0 not in prepared(app[0])
                  and not (prepared(other[1]) & {GID_OTHER_DB, GID_WRONG_DB}), 5)
    check(ok, "the old pgshard gids are resolved within seconds",
          f"left: {prepared(app[0])} {prepared(app[1])} {prepared(other[1])}")
    left = prepared(app[1])
    check(GID_YOUNG in left, "a gid within its grace is left alone", f"{left}")
    check({FOREIGN, NOT_OURS} <= left, "gids that are not pgshard's are left alone", f"{left}")

    t1, t0, o1 = tags(app[1]), tags(app[0]), tags(other[1])
    check("commit" in t1, "recorded decision: committed on shard 1", f"{t1}")
    check("rollback" not in t1, "no decision: rolled back", f"{t1}")
    check("shard0" in t0, "recorded decision: committed on shard 0", f"{t0}")
    check("other_commit" in o1, "decision in the gid's own database: committed", f"{o1}")
    check("wrong_db" not in o1, "a decision in another database does not count: rolled back", f"{o1}")

    ok = wait_for(lambda: GID_YOUNG not in prepared(app[1]), GRACE_MS / 1000 + 5)
    check(ok and "young" not in tags(app[1]), "past its grace, the young gid is rolled back",
          f"{prepared(app[1])}")
    check(wait_for(lambda: {FOREIGN, NOT_OURS} <= prepared(app[1]), 0.5), "foreign gids still untouched",
          f"{prepared(app[1])}")

    left = prepared(app[1])
    check(GID_PENDING in left and "pending" not in tags(app[1]),
          "a gid whose decision is still committing is left alone", f"{left}")
    check(wait_for(lambda: "twopc_decision_pending" in open(proxy.log, errors="replace").read(), 5),
          "twopc_decision_pending logged", proxy.log_tail())
    deciding.execute("COMMIT")
    ok = wait_for(lambda: GID_PENDING not in prepared(app[1]), 5)
    check(ok and "pending" in tags(app[1]), "once its decision is committed, it is committed",
          f"{prepared(app[1])} {tags(app[1])}")

    counts = metrics(mport)
    check(counts.get("commit") == "4" and counts.get("rollback") == "3",
          "pgshard_twopc_recovered_total: 4 commits, 3 rollbacks", f"{counts}")
    rows = {r[0] for r in app[0].execute("SELECT gid FROM pgshard.transactions")}
    check(GID_STALE not in rows and GID_COMMIT in rows,
          "an old decision prepared nowhere is deleted, a fresh one kept", f"{rows}")
    with open(proxy.log, errors="replace") as f:
        log = f.read()
    n = len(re.findall(r"twopc_resolved", log))
    check(n == 7, "twopc_resolved logged once per gid", f"{n} in:\n{proxy.log_tail()}")
    check(proxy.alive(), "pgshard still runs", proxy.log_tail())


if __name__ == "__main__":
    sys.exit(main())

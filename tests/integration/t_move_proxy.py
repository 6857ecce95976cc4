#!/usr/bin/env python3
"""The proxy's side of an online move (pgshard-migrate move), with the catalog driven by hand
as pgshard-migrate drives it, on a cluster of its own (2 shards, primaries only, stopped at
exit): a catalog on shard 0 (pgshard-migrate init, 64 buckets), a table mv_items sharded by
tenant_id, two pgshard processes (p1 with freeze_hold_ms = 1000, p2 with 10000; both with
catalog_lease_ms = 1500), and tenants A, B, C on shard 0 in three different buckets.
  - a move inserted as 'running' (tenant A to shard 1) reaches SHOW MIGRATIONS; while it is
    active a keyless read, COPY TO and DDL of mv_items are refused with 55000 naming the
    move, keyed statements run;
  - 'freezing' (freeze_seq + 1, NOTIFY pgshard_map): p2 acknowledges in migration_acks within
    1 s; p1, which has a transaction of A open since before the freeze, does not until that
    commits, then within 1 s; a new transaction of A blocks on p2 (SHOW MIGRATIONS: held 1,
    pgshard_move_held_clients 1) while B's and C's statements run on both proxies;
  - the flip (tenant_map, state 'flipped', map_version bump and NOTIFY in one transaction):
    the held statement completes on shard 1 (a row only shard 1 has), and so do new ones;
  - a bucket move of B's bucket: unfreezing (state 'running' again, NOTIFY) sends the held
    statement to the source (a row only shard 0 has); a held statement is cancelled with
    57014; a freeze never flipped: p1 answers the held statement with 55000 after about
    freeze_hold_ms and the connection still works;
    pgshard_move_hold_timeouts_total counts it; once the move is 'aborted' keyless reads run;
  - the lease: with the catalog's map_version locked, after catalog_lease_ms a keyed INSERT
    gets 57P03 while a keyed SELECT runs (pgshard_lease_refusals_total counts it, lease_lapsed
    is logged); once the lock goes, writes run again within 1 s (lease_renewed);
  - SIGSTOP of p2 past its lease, then SIGCONT: it writes again within 1 s of continuing,
    after logging lease_lapsed.
Prints one line per check and "N passed, M failed"; exits 1 when a check failed. The ack
latencies measured (acknowledgement row's time minus the freeze's commit) are printed.
"""
import atexit
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import need_psycopg  # noqa: E402,F401
import psycopg  # noqa: E402

os.environ["PGWIRE_TEST"] = "t_move_proxy"
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pgwire  # noqa: E402
import diffcluster  # noqa: E402

CLUSTER = diffcluster.Cluster("move-proxy-cluster", shards=2)
CATDB = "pgs_move_cat"
BUCKETS = 64
LEASE_MS = 1500
HOLD_P1_MS = 1000


def wait_for(fn, timeout, step=0.01):
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v or time.monotonic() >= deadline:
            return v
        time.sleep(step)


class Held:
    """A statement run on its own connection in a thread: did it return, with what, when.
    fetch=False: a statement without rows (result: its row count); copy: rows for the
    statement, a COPY ... FROM STDIN."""

    def __init__(self, port, sql, conn_kw, autocommit=True, fetch=True, copy=None):
        self.conn = psycopg.connect(port=port, **conn_kw)
        self.conn.autocommit = autocommit  # False: psycopg sends BEGIN first, which pgshard defers
        self.sql, self.result, self.error, self.done_at = sql, None, None, None
        self.fetch, self.copy = fetch, copy
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.started = time.monotonic()
        self.thread.start()

    def _run(self):
        try:
            if self.copy is not None:
                with self.conn.cursor() as cur:
                    with cur.copy(self.sql) as cp:
                        for row in self.copy:
                            cp.write_row(row)
                    self.result = cur.rowcount
            elif self.fetch:
                self.result = self.conn.execute(self.sql).fetchall()
            else:
                self.result = self.conn.execute(self.sql).rowcount
        except psycopg.Error as e:
            self.error = e
        self.done_at = time.monotonic()

    def done(self):
        return self.done_at is not None


def show_migrations(admin):
    """SHOW MIGRATIONS' rows, or [] when the command fails (an older pgshard)."""
    try:
        return admin.execute("SHOW MIGRATIONS").fetchall()
    except psycopg.Error as e:
        print(f"# SHOW MIGRATIONS: {e}")
        return []


def metric(port, name):
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    m = re.search(rf"^{name} (\d+)$", text, re.M)
    return int(m.group(1)) if m else None


def main():
    diffcluster.install_watchdog(280)
    atexit.register(CLUSTER.stop)
    check = diffcluster.Checks()
    started = time.monotonic()
    CLUSTER.start()
    proxies = []
    try:
        run(check, proxies)
    finally:
        for p in proxies:
            try:
                os.kill(p.proc.pid, signal.SIGCONT)
            except OSError:
                pass
            p.stop()
        CLUSTER.stop()
    print(f"{check.passed} passed, {check.failed} failed ({time.monotonic() - started:.1f} s)")
    return 1 if check.failed else 0


def setup():
    """The catalog (pgshard-migrate init), the table on both shards, and three tenants on shard
    0 in different buckets. Returns the catalog connection, the shard connections and
    {tenant: bucket}."""
    CLUSTER.superuser_psql(f"CREATE DATABASE {CATDB} OWNER {CLUSTER.user}")
    shards = CLUSTER.shard_conns()
    for c in shards:
        c.execute("CREATE TABLE mv_items (tenant_id bigint NOT NULL, id bigint NOT NULL, note text)")
    dsn = f"host={CLUSTER.host} port={CLUSTER.ports[0]} dbname={CATDB} user={CLUSTER.user} password={CLUSTER.password}"
    ini = os.path.join(pgwire.WORK, "migrate.ini")
    os.makedirs(pgwire.WORK, exist_ok=True)
    with open(ini, "w") as f:
        f.write(f"[pgshard]\nbuckets = {BUCKETS}\ncatalog_dsn = {dsn}\n")
        f.write(f"[shard.0]\nprimary = {CLUSTER.host}:{CLUSTER.ports[0]}\n")
        f.write(f"[shard.1]\nprimary = {CLUSTER.host}:{CLUSTER.ports[1]}\n")
        f.write(f"[user.{CLUSTER.user}]\npassword = {CLUSTER.password}\n")
    mig = os.environ.get("PGSHARD_MIGRATE_BIN")
    r = subprocess.run([mig, "-c", ini, "init"], capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise RuntimeError(f"pgshard-migrate init: {r.stdout}{r.stderr}")
    cat = CLUSTER.connect(CLUSTER.ports[0], CATDB)
    rows = shards[0].execute("SELECT k, (hashint8extended(k, 0) & %s)::int FROM generate_series(1, 300) k",
                             (BUCKETS - 1,)).fetchall()
    tenants = {}
    for k, b in rows:
        if b * 2 // BUCKETS == 0 and b not in tenants.values():
            tenants[k] = b
        if len(tenants) == 3:
            break
    return dsn, cat, shards, tenants


def start_proxies(dsn, proxies):
    common = dict(catalog_dsn=dsn, buckets=BUCKETS, admin_users=CLUSTER.user, workers=2, pool_size=4,
                  catalog_lease_ms=LEASE_MS, monitor_dbname=CLUSTER.db)
    sections = {"shard.1": {"primary": f"{CLUSTER.host}:{CLUSTER.ports[1]}"},
                "table.mv_items": {"shard_key": "tenant_id", "key_type": "int"}}
    # p2 writes on several shards at once (two-phase commit): a split INSERT is one of those.
    for name, hold, twopc in (("p1", HOLD_P1_MS, "off"), ("p2", 10000, "on")):
        mport = pgwire.free_port()
        p = pgwire.Proxy(name, primary=f"{CLUSTER.host}:{CLUSTER.ports[0]}", sections=sections,
                         freeze_hold_ms=hold, metrics_port=mport, two_phase_commit=twopc, **common)
        p.mport = mport
        proxies.append(p)
    return proxies


def run(check, proxies):
    dsn, cat, shards, tenants = setup()
    A, B, C = list(tenants)
    p1, p2 = start_proxies(dsn, proxies)
    kw = dict(host=CLUSTER.host, user=CLUSTER.user, password=CLUSTER.password, dbname=CLUSTER.db,
              autocommit=True, connect_timeout=10)
    c1 = psycopg.connect(port=p1.port, **kw)
    c2 = psycopg.connect(port=p2.port, **kw)
    admin2 = psycopg.connect(host=CLUSTER.host, port=p2.port, user=CLUSTER.user, password=CLUSTER.password,
                             dbname="pgshard", autocommit=True, cursor_factory=psycopg.ClientCursor)
    for t in (A, B, C):
        c1.execute("INSERT INTO mv_items (tenant_id, id, note) VALUES (%s, 1, 'source')", (t,))
    # The rows only the target has: where a statement ran is seen in what it reads.
    shards[1].execute("INSERT INTO mv_items (tenant_id, id, note) VALUES (%s, 2, 'target'), (%s, 2, 'target')", (A, B))
    shards[0].execute("INSERT INTO mv_items (tenant_id, id, note) VALUES (%s, 3, 'source only')", (B,))
    proxy_ids = [r[0] for r in cat.execute("SELECT id FROM pgshard.proxies ORDER BY id")]
    check(len(proxy_ids) == 2, "both proxies heartbeat", f"{proxy_ids}")

    tenant_move(check, cat, c1, c2, admin2, p1, p2, A, B, C, tenants, kw, proxy_ids)
    bucket_move(check, cat, c1, c2, p1, p2, A, B, C, tenants, kw)
    lease(check, cat, c1, c2, p1, p2, A, C)
    sigstop(check, p2, kw, C)
    for p in (p1, p2):
        check(p.alive(), f"{p.name} still runs", p.log_tail())


def acks(cat, mid, seq):
    return {r[0] for r in cat.execute("SELECT proxy_id FROM pgshard.migration_acks WHERE migration_id = %s "
                                      "AND freeze_seq = %s", (mid, seq))}


def freeze(cat, mid):
    """Sets the move freezing as pgshard-migrate does; returns its new freeze_seq and the
    commit's time on the catalog's clock."""
    with cat.transaction():
        seq = cat.execute("UPDATE pgshard.migrations SET state = 'freezing', freeze_seq = freeze_seq + 1, "
                          "updated_at = clock_timestamp() WHERE id = %s RETURNING freeze_seq", (mid,)).fetchone()[0]
        cat.execute("NOTIFY pgshard_map")
    return seq


def ack_latency_ms(cat, mid, seq, proxy_id):
    r = cat.execute("SELECT extract(epoch FROM a.at - m.updated_at) * 1000 FROM pgshard.migration_acks a, "
                    "pgshard.migrations m WHERE m.id = a.migration_id AND a.migration_id = %s AND a.freeze_seq = %s "
                    "AND a.proxy_id = %s", (mid, seq, proxy_id)).fetchone()
    return float(r[0]) if r else None


def tenant_move(check, cat, c1, c2, admin2, p1, p2, A, B, C, tenants, kw, proxy_ids):
    mid = cat.execute("INSERT INTO pgshard.migrations (source, target, tenant, tenant_bucket, state, step) "
                      "VALUES (0, 1, %s, %s, 'running', 'copy') RETURNING id", (str(A), tenants[A])).fetchone()[0]
    cat.execute("NOTIFY pgshard_map")
    rows = wait_for(lambda: show_migrations(admin2), 1)
    check(rows and rows[0][:6] == (str(mid), "0", "1", f"tenant {A}", "running", "0"),
          "SHOW MIGRATIONS lists the running move", f"{rows}")

    # p1 follows the NOTIFY within a second, like p2 whose SHOW MIGRATIONS lists it.
    wait_for(lambda: diffcluster.sqlstate_of(lambda: c1.execute("SELECT count(*) FROM mv_items").fetchall())[0], 1)
    st, msg = diffcluster.sqlstate_of(lambda: c1.execute("SELECT count(*) FROM mv_items").fetchall())
    check(st == "55000" and f"move {mid}" in msg, "during a move a keyless read is refused (55000, names the move)",
          f"{st} {msg}")
    st, msg = diffcluster.sqlstate_of(lambda: c2.execute("ALTER TABLE mv_items ADD COLUMN extra int"))
    check(st == "55000" and f"move {mid}" in msg, "during a move DDL on a sharded table is refused", f"{st} {msg}")
    st, msg = diffcluster.sqlstate_of(lambda: c2.execute("SELECT * FROM mv_items").fetchall())
    check(st == "55000", "... on the other proxy too", f"{st} {msg}")

    def copy_out():
        with c1.cursor().copy("COPY mv_items TO STDOUT") as cp:
            for _ in cp:
                pass
    st, msg = diffcluster.sqlstate_of(copy_out)
    check(st == "55000", "during a move COPY of a sharded table TO STDOUT is refused", f"{st} {msg}")
    got = c1.execute("SELECT note FROM mv_items WHERE tenant_id = %s AND id = 1", (A,)).fetchall()
    check(got == [("source",)], "keyed statements run during the move", f"{got}")
    c1.execute("CREATE TABLE mv_other_t (x int)")  # DDL of a table that is not sharded runs
    check(True, "DDL of a table not sharded runs during the move")

    # A transaction of A open on p1 since before the freeze.
    open_tx = psycopg.connect(port=p1.port, **kw)
    open_tx.autocommit = False
    open_tx.execute("INSERT INTO mv_items (tenant_id, id, note) VALUES (%s, 10, 'in flight')", (A,))

    seq = freeze(cat, mid)
    id1 = next(i for i in proxy_ids if i.endswith(f":{p1.port}"))
    id2 = next(i for i in proxy_ids if i.endswith(f":{p2.port}"))
    got = wait_for(lambda: id2 in acks(cat, mid, seq), 1)
    check(got, "p2 (nothing in flight) acknowledges the freeze within 1 s", f"{acks(cat, mid, seq)}")
    lat2 = ack_latency_ms(cat, mid, seq, id2)
    print(f"# ack latency, nothing in flight: {lat2} ms")
    held = Held(p2.port, f"SELECT note FROM mv_items WHERE tenant_id = {A} ORDER BY id", kw)
    time.sleep(0.4)
    check(not held.done(), "a new transaction of the moving tenant is held (does not return)",
          f"{held.result} {held.error}")
    check(id1 not in acks(cat, mid, seq), "p1 does not acknowledge while a transaction of the tenant is open",
          f"{acks(cat, mid, seq)}")
    t0 = time.monotonic()
    for c in (c1, c2):
        for t in (B, C):
            c.execute("INSERT INTO mv_items (tenant_id, id, note) VALUES (%s, 20, 'during freeze')", (t,))
            c.execute("SELECT * FROM mv_items WHERE tenant_id = %s", (t,)).fetchall()
    check(time.monotonic() - t0 < 1, "other tenants' statements run during the freeze on both proxies",
          f"{time.monotonic() - t0:.2f} s")
    rows = show_migrations(admin2)
    check(rows and rows[0][4] == "freezing" and rows[0][5] == str(seq) and rows[0][6] == "1",
          "SHOW MIGRATIONS: freezing, its freeze_seq, one client held", f"{rows}")
    check(metric(p2.mport, "pgshard_move_held_clients") == 1 and metric(p2.mport, "pgshard_move_active") == 1,
          "pgshard_move_held_clients 1, pgshard_move_active 1", "")
    t0 = time.monotonic()
    open_tx.execute("SELECT count(*) FROM mv_items WHERE tenant_id = %s", (A,)).fetchall()
    check(time.monotonic() - t0 < 0.3, "a statement inside the transaction open since before the freeze is not held",
          f"{time.monotonic() - t0:.2f} s")
    open_tx.commit()
    t_commit = time.monotonic()
    got = wait_for(lambda: id1 in acks(cat, mid, seq), 1)
    check(got, "p1 acknowledges within 1 s of the open transaction's commit", f"{acks(cat, mid, seq)}")
    print(f"# ack latency after the in-flight commit: {(time.monotonic() - t_commit) * 1000:.1f} ms (upper bound)")
    check(not held.done(), "the held statement still waits after both acks", f"{held.result}")

    # The flip, as pgshard-migrate makes it.
    with cat.transaction():
        cat.execute("INSERT INTO pgshard.tenant_map VALUES (%s, 1)", (str(A),))
        cat.execute("UPDATE pgshard.migrations SET state = 'flipped', updated_at = now() WHERE id = %s", (mid,))
        cat.execute("UPDATE pgshard.map_version SET version = version + 1")
        cat.execute("NOTIFY pgshard_map")
    t_flip = time.monotonic()
    wait_for(held.done, 2)
    check(held.done() and held.error is None and held.result == [("target",)],
          "after the flip the held statement completes on the target shard",
          f"{held.result} {held.error}")
    if held.done() and held.done_at >= t_flip:
        print(f"# held statement released {(held.done_at - t_flip) * 1000:.1f} ms after the flip's commit")
    got = c1.execute("SELECT note FROM mv_items WHERE tenant_id = %s ORDER BY id", (A,)).fetchall()
    check(got == [("target",)], "new statements of the tenant go to the target", f"{got}")
    check(metric(p2.mport, "pgshard_move_acks_total") == 1 and metric(p2.mport, "pgshard_move_held_total") == 1,
          "pgshard_move_acks_total and pgshard_move_held_total count", "")
    cat.execute("UPDATE pgshard.migrations SET state = 'done' WHERE id = %s", (mid,))
    cat.execute("NOTIFY pgshard_map")
    got = wait_for(lambda: diffcluster.sqlstate_of(lambda: c2.execute("SELECT count(*) FROM mv_items").fetchall())[0]
                   is None, 1)
    check(got, "once the move is done keyless reads run again", "")
    for p in (p1, p2):
        with open(p.log, errors="replace") as f:
            log = f.read()
        check("move_freeze_seen" in log and "move_ack" in log and "move_unfreeze" in log,
              f"{p.name} logs move_freeze_seen, move_ack, move_unfreeze", p.log_tail())
    held.conn.close()
    open_tx.close()


def bucket_move(check, cat, c1, c2, p1, p2, A, B, C, tenants, kw):
    mid = cat.execute("INSERT INTO pgshard.migrations (source, target, buckets, state) VALUES (0, 1, %s, 'running') "
                      "RETURNING id", ([tenants[B]],)).fetchone()[0]
    cat.execute("NOTIFY pgshard_map")
    seq = freeze(cat, mid)
    wait_for(lambda: len(acks(cat, mid, seq)) == 2, 1)
    held = Held(p2.port, f"SELECT note FROM mv_items WHERE tenant_id = {B} AND id = 3", kw)
    in_tx = Held(p2.port, f"SELECT note FROM mv_items WHERE tenant_id = {B} AND id = 1", kw, autocommit=False)
    # Writes on both shards (A is on shard 1 since the tenant move): an INSERT split by key
    # and a COPY FROM, each with a row of the frozen bucket's B.
    split = Held(p2.port, f"INSERT INTO mv_items (tenant_id, id, note) VALUES ({B}, 40, 'split'), ({A}, 40, 'split')",
                 kw, fetch=False)
    copy = Held(p2.port, "COPY mv_items (tenant_id, id, note) FROM STDIN", kw,
                copy=[(B, 41, "copy"), (A, 41, "copy")])
    time.sleep(0.3)
    check(not held.done(), "bucket move: a statement of a key in a frozen bucket is held", f"{held.result}")
    check(not split.done() and not copy.done(), "bucket move: an INSERT split over the shards and a COPY FROM "
          "with a frozen key are held too, not refused", f"{split.result} {split.error}; {copy.result} {copy.error}")
    check(not in_tx.done(), "bucket move: the first statement after BEGIN is held too", f"{in_tx.result}")
    got = c2.execute("SELECT count(*) FROM mv_items WHERE tenant_id = %s", (C,)).fetchall()
    check(got and got[0][0] >= 1, "bucket move: a key of another bucket runs", f"{got}")
    with cat.transaction():
        cat.execute("UPDATE pgshard.migrations SET state = 'running' WHERE id = %s", (mid,))
        cat.execute("NOTIFY pgshard_map")
    wait_for(held.done, 2)
    check(held.done() and held.result == [("source only",)],
          "unfreezing releases the held statement to the source shard", f"{held.result} {held.error}")
    wait_for(in_tx.done, 1)
    check(in_tx.done() and in_tx.result == [("source",)], "... and the one after BEGIN, which then commits",
          f"{in_tx.result} {in_tx.error}")
    in_tx.conn.commit()
    wait_for(lambda: split.done() and copy.done(), 2)
    got = [c1.execute("SELECT note FROM mv_items WHERE tenant_id = %s AND id IN (40, 41) ORDER BY id", (t,)).fetchall()
           for t in (B, A)]
    check(split.result == 2 and copy.result == 2 and got == [[("split",), ("copy",)]] * 2,
          "... and the split INSERT and the COPY FROM then write every row", f"{split.result} {split.error}; "
          f"{copy.result} {copy.error}; rows of B and A: {got}")
    split.conn.close()
    copy.conn.close()
    held.conn.close()
    in_tx.conn.close()

    # A freeze that never flips: p1 gives up after freeze_hold_ms; the connection goes on.
    seq = freeze(cat, mid)
    wait_for(lambda: len(acks(cat, mid, seq)) == 2, 1)
    cancelled = Held(p2.port, f"SELECT note FROM mv_items WHERE tenant_id = {B}", kw)
    time.sleep(0.2)
    cancelled.conn.cancel()
    wait_for(cancelled.done, 1)
    st = getattr(cancelled.error, "sqlstate", None)
    check(st == "57014", "a held statement is cancelled with 57014", f"{cancelled.result} {cancelled.error}")
    got = cancelled.conn.execute("SELECT count(*) FROM mv_items WHERE tenant_id = %s", (C,)).fetchall()
    check(got and got[0][0] >= 1, "... and its connection goes on", f"{got}")
    cancelled.conn.close()
    c = psycopg.connect(port=p1.port, **kw)
    t0 = time.monotonic()
    st, msg = diffcluster.sqlstate_of(lambda: c.execute("SELECT * FROM mv_items WHERE tenant_id = %s", (B,)).fetchall())
    took = time.monotonic() - t0
    check(st == "55000" and "being moved to shard 1" in msg and HOLD_P1_MS / 1000 - 0.05 <= took < HOLD_P1_MS / 1000 + 0.8,
          "a held statement is refused with 55000 after freeze_hold_ms", f"{st} {msg} after {took:.2f} s")
    got = c.execute("SELECT count(*) FROM mv_items WHERE tenant_id = %s", (C,)).fetchall()
    check(got and got[0][0] >= 1, "the refused client's connection still works", f"{got}")
    check(metric(p1.mport, "pgshard_move_hold_timeouts_total") == 1, "pgshard_move_hold_timeouts_total counts it",
          "")
    c.close()
    cat.execute("UPDATE pgshard.migrations SET state = 'aborted' WHERE id = %s", (mid,))
    cat.execute("NOTIFY pgshard_map")
    got = wait_for(lambda: diffcluster.sqlstate_of(lambda: c1.execute("SELECT count(*) FROM mv_items").fetchall())[0]
                   is None, 1)
    check(got, "once the move is aborted keyless reads run again", "")
    got = c1.execute("SELECT note FROM mv_items WHERE tenant_id = %s AND id = 3", (B,)).fetchall()
    check(got == [("source only",)], "after the abort the bucket's keys stay on the source", f"{got}")


def lease(check, cat, c1, c2, p1, p2, A, C):
    locker = CLUSTER.connect(CLUSTER.ports[0], CATDB)
    locker.autocommit = False
    locker.execute("LOCK TABLE pgshard.map_version IN ACCESS EXCLUSIVE MODE")
    time.sleep(LEASE_MS / 1000 + 0.6)
    st, msg = diffcluster.sqlstate_of(lambda: c1.execute("INSERT INTO mv_items (tenant_id, id, note) VALUES (%s, 30, 'x')", (C,)))
    check(st == "57P03" and "has not been able to read its catalog" in msg,
          "with the catalog unreadable past the lease a keyed INSERT gets 57P03", f"{st} {msg}")
    got = c1.execute("SELECT count(*) FROM mv_items WHERE tenant_id = %s", (C,)).fetchall()
    check(got and got[0][0] >= 1, "... while a keyed SELECT runs", f"{got}")
    st, _ = diffcluster.sqlstate_of(lambda: c2.execute("INSERT INTO mv_items (tenant_id, id, note) VALUES (%s, 31, 'x')", (A,)))
    check(st == "57P03", "... on the other proxy too", f"{st}")
    check(metric(p1.mport, "pgshard_lease_refusals_total") == 1, "pgshard_lease_refusals_total counts it", "")
    locker.rollback()
    t0 = time.monotonic()
    got = wait_for(lambda: diffcluster.sqlstate_of(
        lambda: c1.execute("INSERT INTO mv_items (tenant_id, id, note) VALUES (%s, 32, 'x')", (C,)))[0] is None, 1, 0.05)
    check(got, "once the catalog is read again writes run (within 1 s)", f"{time.monotonic() - t0:.2f} s")
    locker.close()
    with open(p1.log, errors="replace") as f:
        log = f.read()
    check("lease_lapsed" in log and "lease_renewed" in log, "lease_lapsed and lease_renewed are logged",
          p1.log_tail())


def sigstop(check, p2, kw, C):
    c = psycopg.connect(port=p2.port, **kw)
    os.kill(p2.proc.pid, signal.SIGSTOP)
    time.sleep(LEASE_MS / 1000 + 0.5)
    os.kill(p2.proc.pid, signal.SIGCONT)
    t0 = time.monotonic()
    got = wait_for(lambda: diffcluster.sqlstate_of(
        lambda: c.execute("INSERT INTO mv_items (tenant_id, id, note) VALUES (%s, 40, 'x')", (C,)))[0] is None, 1, 0.02)
    check(got, "after SIGSTOP past the lease and SIGCONT, writes run again within 1 s",
          f"{time.monotonic() - t0:.2f} s")
    log = wait_for(lambda: open(p2.log, errors="replace").read().count("lease_lapsed") >= 2, 1)
    check(log, "the continued process logs lease_lapsed", p2.log_tail())
    c.close()


if __name__ == "__main__":
    sys.exit(main())

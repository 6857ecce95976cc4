#!/usr/bin/env python3
"""Cross-shard reads: the connections' side (proxy/fanout.c). What a merge returns is checked
by t_scatter.py against a reference database; this test checks what happens around it, on a
cluster of its own (2 shards, no replicas, stopped at exit):
  1. a keyless read runs on both shards: count(*) and ORDER BY ... LIMIT equal what the rows
     loaded say; SHOW ROUTE shows shard "all", the shard query and the merge steps;
  2. an error on one shard reaches the client once (22012) and the connection goes on; no
     server is left running or in a transaction on either shard;
  3. a CancelRequest during a fan-out cancels every shard's query (57014 within seconds);
  4. a client that leaves during a fan-out: its servers are closed, pgshard goes on serving;
  5. a keyless read in the extended protocol, with text and binary results, works; inside
     BEGIN, or joining sharded tables off their key, it is refused with 0A000 and a message
     that says why;
  6. DDL goes to every shard in shard order; an error says which shards applied it; not
     inside BEGIN;
  7. 16 clients run fan-outs at once through pool_size = 2: servers are taken in shard
     order, so none waits for ever (no deadlock), and every answer is right.
Prints one line per check and "N passed, M failed"; exits 1 when a check failed.
"""
import os
import sys

import need_psycopg  # noqa: E402,F401
import psycopg  # noqa: E402

import atexit
import datetime
import re
import socket
import urllib.request
import threading
import time

os.environ["PGWIRE_TEST"] = "t_fanout"
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pgwire  # noqa: E402
import diffcluster  # noqa: E402

CLUSTER = diffcluster.Cluster("fanout-cluster", shards=2)
ROWS_PER_TENANT = 20
TENANTS = list(range(1, 41))


def simple(conn):
    return psycopg.ClientCursor(conn)


def busy_backends(conn):
    """Backends of the app user that run something or hold a transaction open."""
    return conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE usename = current_user AND pid <> pg_backend_pid() "
        "AND (state <> 'idle' OR xact_start IS NOT NULL)").fetchone()[0]


def wait_idle(shards, timeout=10):
    deadline = time.monotonic() + timeout
    while True:
        n = [busy_backends(c) for c in shards]
        if sum(n) == 0 or time.monotonic() > deadline:
            return n
        time.sleep(0.1)


def main():
    diffcluster.install_watchdog(240)
    atexit.register(CLUSTER.stop)
    check = diffcluster.Checks()
    started = time.monotonic()
    CLUSTER.start()
    shards = CLUSTER.shard_conns()
    for c in shards:
        c.execute("CREATE TABLE items (tenant_id int NOT NULL, v int NOT NULL, s text)")
        # Columns with collations of their own (the database's is "C"): pgshard must not
        # merge text in an order it does not reproduce.
        c.execute("CREATE COLLATION ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false)")
        c.execute('CREATE TABLE labels (tenant_id int NOT NULL, name text, code text COLLATE "C.utf8", '
                  'tag text COLLATE ci)')
        c.execute("INSERT INTO labels SELECT t, 'n' || t, 'c' || t, 'T' || (t % 3) FROM generate_series(1, 40) t")
    mport = pgwire.free_port()
    proxy = CLUSTER.proxy(sharded=("items", "labels"), workers=2, pool_size=2, query_wait_timeout=20000,
                          admin_users=CLUSTER.user, metrics_port=mport)
    proxy.metrics_port = mport
    try:
        run(check, proxy, shards)
    finally:
        proxy.stop()
        CLUSTER.stop()
    print(f"{check.passed} passed, {check.failed} failed ({time.monotonic() - started:.1f} s)")
    return 1 if check.failed else 0


def run(check, proxy, shards):
    conn = CLUSTER.connect(proxy.port)
    rows = [(t, t * 100 + i, f"s{i}") for t in TENANTS for i in range(ROWS_PER_TENANT)]
    for t in TENANTS:
        diffcluster.insert_rows(conn, "items", "tenant_id, v, s", [r for r in rows if r[0] == t])
    placed = diffcluster.shard_of(shards[0], TENANTS, shards=2)
    on = [sum(1 for t in TENANTS if placed[t] == k) for k in range(2)]
    check(min(on) > 0, "tenants on both shards", f"{on}")
    cur = simple(conn)

    # 1. the read itself
    n = cur.execute("SELECT count(*) FROM items").fetchone()[0]
    check(n == len(rows), "count(*) over both shards", f"{n} != {len(rows)}")
    got = cur.execute("SELECT tenant_id, v FROM items ORDER BY v DESC LIMIT 7").fetchall()
    want = sorted(((t, v) for t, v, _ in rows), key=lambda r: -r[1])[:7]
    check(got == want, "ORDER BY v DESC LIMIT 7", f"{got} != {want}")
    admin = psycopg.connect(host="127.0.0.1", port=proxy.port, user=CLUSTER.user, password=CLUSTER.password,
                            dbname="pgshard", autocommit=True, cursor_factory=psycopg.ClientCursor)
    route = admin.execute("SHOW ROUTE SELECT v FROM items ORDER BY v LIMIT 3").fetchall()
    detail = route[0][-1] if route else ""
    check(route and route[0][0] == "all" and "LIMIT 3" in detail and "sort" in detail,
          "SHOW ROUTE: every shard, the shard query and the merge", f"{route}")
    admin.close()

    # 2. an error on one shard only
    bad = next(t for t in TENANTS if placed[t] == 1)
    st, msg = diffcluster.sqlstate_of(lambda: cur.execute(f"SELECT v / (tenant_id - {bad}) FROM items").fetchall())
    check(st == "22012", "an error on one shard reaches the client", f"{st} {msg}")
    n = cur.execute("SELECT count(*) FROM items").fetchone()[0]
    check(n == len(rows), "the connection goes on after the error", f"{n}")
    left = wait_idle(shards)
    check(sum(left) == 0, "no server left busy after the error", f"{left}")

    # 3. cancel during a fan-out: each shard sleeps 0.05 s per row, far longer than the wait
    q = "SELECT count(*) FROM items WHERE pg_sleep(0.05) IS NOT NULL"
    timer = threading.Timer(1.0, conn.cancel)
    timer.start()
    t0 = time.monotonic()
    st, msg = diffcluster.sqlstate_of(lambda: cur.execute(q).fetchall())
    took = time.monotonic() - t0
    timer.join()
    check(st == "57014" and took < 10, "cancel ends every shard's query", f"{st} after {took:.1f} s: {msg}")
    left = wait_idle(shards)
    check(sum(left) == 0, "no server left busy after the cancel", f"{left}")
    n = cur.execute("SELECT count(*) FROM items").fetchone()[0]
    check(n == len(rows), "the connection goes on after the cancel", f"{n}")

    # 4. a client that leaves during a fan-out
    raw = pgwire.Conn(proxy.port)
    raw.login()
    raw.send(pgwire.query_msg("SELECT count(*) FROM items WHERE pg_sleep(0.01) IS NOT NULL"))
    time.sleep(0.3)
    raw.abort()
    other = CLUSTER.connect(proxy.port)
    n = simple(other).execute("SELECT count(*) FROM items").fetchone()[0]
    check(n == len(rows) and proxy.alive(), "pgshard serves on after a client left mid fan-out", f"{n}")
    other.close()

    # 5. refusals
    def refused(name, fn, words):
        st, msg = diffcluster.sqlstate_of(fn)
        check(st == "0A000" and all(w in msg for w in words), name, f"{st} {msg}")

    def in_txn():
        with conn.transaction():
            cur.execute("SELECT count(*) FROM items").fetchall()

    refused("keyless read inside BEGIN", in_txn, ["transaction"])
    n = conn.execute("SELECT count(*) FROM items WHERE v > %s", (0,)).fetchone()[0]
    check(n == len(rows), "keyless read in the extended protocol", f"{n}")
    got = conn.cursor(binary=True).execute("SELECT v FROM items WHERE v < %s ORDER BY v", (150,)).fetchall()
    want = sorted((r[1],) for r in rows if r[1] < 150)
    check(got == want, "keyless read with binary results", f"{got[:5]} != {want[:5]}")
    refused("join off the shard key", lambda: cur.execute(
        "SELECT count(*) FROM items a JOIN items b ON a.v = b.v").fetchall(), ["shard key"])
    # Text is merged under the collation each shard names for the expression: the database's,
    # a libc one of a column's own (C.utf8), an explicit COLLATE; an ICU one is refused, to
    # order and (nondeterministic) to group by.
    got = [r[0] for r in cur.execute("SELECT name FROM labels ORDER BY name LIMIT 3").fetchall()]
    want = sorted([f"n{t}" for t in range(1, 41)] * len(shards), key=str.encode)[:3]  # each shard has all 40
    check(got == want, "text ordered by a column of the database's collation", f"{got} != {want}")
    got = [r[0] for r in cur.execute("SELECT code FROM labels ORDER BY code LIMIT 3").fetchall()]
    want = sorted([f"c{t}" for t in range(1, 41)] * len(shards), key=str.encode)[:3]
    check(got == want, "text ordered by a column with a libc collation of its own", f"{got} != {want}")
    got = cur.execute("SELECT max(name), min(code) FROM labels").fetchone()
    check(got == ("n9", "c1"), "max()/min() of text under collations of their own", f"{got}")
    refused("ORDER BY an ICU collation", lambda: cur.execute(
        "SELECT tag FROM labels ORDER BY tag LIMIT 3").fetchall(), ["order text by", "tag", "ci"])
    refused("ORDER BY an explicit ICU COLLATE", lambda: cur.execute(
        'SELECT name FROM labels ORDER BY name COLLATE "und-x-icu" LIMIT 3').fetchall(), ["und-x-icu"])
    refused("GROUP BY a nondeterministic collation", lambda: cur.execute(
        "SELECT tag, count(*) FROM labels GROUP BY tag").fetchall(), ["group text by", "tag"])
    n = len(cur.execute("SELECT code, count(*) FROM labels GROUP BY code").fetchall())
    check(n == 40, "GROUP BY a deterministic collation of its own (equality is bytes)", f"{n} groups")
    # Dates in text are compared as PostgreSQL writes them by default (ISO): another DateStyle
    # is refused with a reason, not answered with a wrong order or an internal error.
    other = CLUSTER.connect(proxy.port)
    oc = simple(other)
    oc.execute("SET DateStyle = 'SQL, DMY'")
    refused("dates merged in text under DateStyle SQL", lambda: oc.execute(
        "SELECT date '2020-01-01' + v AS d FROM items ORDER BY d LIMIT 3").fetchall(), ["DateStyle = ISO"])
    oc.execute("SET DateStyle = ISO")
    got = [r[0].isoformat() for r in oc.execute(
        "SELECT date '2020-01-01' + v AS d FROM items ORDER BY d LIMIT 2").fetchall()]
    want = [(datetime.date(2020, 1, 1) + datetime.timedelta(days=v)).isoformat()
            for v in sorted(r[1] for r in rows)[:2]]
    check(got == want, "dates merged in text under DateStyle ISO", f"{got} != {want}")
    other.close()
    n = cur.execute("SELECT count(*) FROM items").fetchone()[0]
    check(n == len(rows), "the connection goes on after the refusals", f"{n}")

    # 6. DDL goes to every shard, in shard order, stopping at the first error
    cur.execute("CREATE TABLE ddl_a (id int)")
    on = [c.execute("SELECT count(*) FROM pg_class WHERE relname = 'ddl_a'").fetchone()[0] for c in shards]
    check(on == [1, 1], "CREATE TABLE reaches every shard", f"{on}")
    conn.execute("CREATE INDEX ddl_a_id ON ddl_a (id)")  # the extended protocol too
    on = [c.execute("SELECT count(*) FROM pg_class WHERE relname = 'ddl_a_id'").fetchone()[0] for c in shards]
    check(on == [1, 1], "CREATE INDEX (extended protocol) reaches every shard", f"{on}")
    shards[1].execute("CREATE TABLE ddl_b (id int)")
    st, msg = diffcluster.sqlstate_of(lambda: cur.execute("CREATE TABLE ddl_b (id int)"))
    on = [c.execute("SELECT count(*) FROM pg_class WHERE relname = 'ddl_b'").fetchone()[0] for c in shards]
    check(st == "42P07" and "shard 0 applied it" in msg and on == [1, 1],
          "DDL failing on shard 1 says shard 0 applied it", f"{st} {msg} {on}")
    st, msg = diffcluster.sqlstate_of(lambda: cur.execute("CREATE TABLE ddl_a (id int)"))
    check(st == "42P07" and "no shard applied it" in msg, "DDL failing on shard 0 says so", f"{st} {msg}")
    cur.execute("DROP TABLE ddl_a, ddl_b")
    on = [c.execute("SELECT count(*) FROM pg_class WHERE relname IN ('ddl_a', 'ddl_b')").fetchone()[0]
          for c in shards]
    check(on == [0, 0], "DROP TABLE reaches every shard", f"{on}")

    diffcluster.check_sequence_ranges(check, conn, shards[0], "labels", 2, "DDL shard after shard")

    def ddl_in_txn():
        with conn.transaction():
            cur.execute("CREATE TABLE ddl_c (id int)")

    refused("DDL inside BEGIN", ddl_in_txn, ["transaction"])

    metrics = urllib.request.urlopen(f"http://127.0.0.1:{proxy.metrics_port}/metrics", timeout=10).read().decode()
    counts = dict(re.findall(r'^pgshard_fanouts_total\{(kind="\w+",result="\w+")\} (\d+)$', metrics, re.M))
    check(int(counts.get('kind="read",result="ok"', 0)) >= 5 and int(counts.get('kind="read",result="error"', 0)) >= 2
          and int(counts.get('kind="ddl",result="ok"', 0)) >= 3 and int(counts.get('kind="ddl",result="error"', 0)) >= 2,
          "pgshard_fanouts_total counts reads and DDL by result", f"{counts}")

    # 7. many clients, few servers
    errors, results = [], []

    def worker(k):
        try:
            c = CLUSTER.connect(proxy.port)
            for _ in range(5):
                results.append(simple(c).execute("SELECT count(*), max(v) FROM items WHERE v %% 3 = %s",
                                                 (k % 3,)).fetchone())
            c.close()
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    want = {m: (sum(1 for r in rows if r[1] % 3 == m), max(r[1] for r in rows if r[1] % 3 == m)) for m in range(3)}
    wrong = [r for r in results if tuple(r) not in want.values()]
    check(not errors and len(results) == 80 and not wrong, "16 clients, pool_size 2: all answered",
          f"{len(results)} results, errors {errors[:3]}, wrong {wrong[:3]}")
    conn.close()


if __name__ == "__main__":
    sys.exit(main())

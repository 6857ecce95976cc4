#!/usr/bin/env python3
"""Writes on several shards in one distributed transaction (proxy/fanout.c), with and without
two-phase commit, on a cluster of its own (3 shards, no replicas, max_prepared_transactions
set by cluster.sh, stopped at exit):
  1. writes of an omnisharded table (INSERT ... RETURNING, UPDATE) reach every shard and
     answer once, and its reads take turns over the shards; a write one shard refuses (a unique key that exists there only) changes
     no shard; keyless UPDATE/DELETE of a sharded table run on every shard with
     allow_cross_shard_writes = on (counts summed, RETURNING rows of all), and are refused
     without it;
  2. with two_phase_commit = on, pgshard is killed (PGSHARD_TEST_CRASH, an _exit as by kill
     -9) after PREPARE on the shards, after the decision, and after the first COMMIT
     PREPARED; after a restart, recovery leaves no prepared transaction in pg_prepared_xacts
     and each write is wholly committed (decided) or wholly absent (not decided) on every
     shard;
  3. a multi-row INSERT whose rows belong to several shards is split per shard in one
     two-phase transaction (rows on their shards, RETURNING in the client's row order, a
     refusal on one shard keeps nothing), and refused without two-phase commit;
  4. with two-phase commit, DDL is one distributed transaction: on every shard or on none
     (statements that cannot run in a transaction block still go to each shard in turn);
  5. the time a two-phase write adds over a one-phase one is printed (not asserted).
Prints one line per check and "N passed, M failed"; exits 1 when a check failed.
"""
import os
import sys

import need_psycopg  # noqa: E402,F401
import psycopg  # noqa: E402

import atexit
import time

os.environ["PGWIRE_TEST"] = "t_twopc"
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pgwire  # noqa: E402,F401
import diffcluster  # noqa: E402
from diffcluster import on_shards, prepared, wait_for  # noqa: E402

CLUSTER = diffcluster.Cluster("twopc-cluster", shards=3)


def proxy(**keys):
    return CLUSTER.proxy(sharded=("items",), omnisharded=("countries",), workers=2, pool_size=3,
                         admin_users=CLUSTER.user, **keys)


def main():
    diffcluster.install_watchdog(280)
    atexit.register(CLUSTER.stop)
    check = diffcluster.Checks()
    started = time.monotonic()
    CLUSTER.start()
    shards = CLUSTER.shard_conns()
    for c in shards:
        c.execute("CREATE TABLE items (tenant_id int NOT NULL, v int NOT NULL)")
        c.execute("CREATE TABLE countries (code text PRIMARY KEY, name text NOT NULL)")
    try:
        one_phase(check, shards)
        split_inserts(check, shards)
        crashes(check, shards)
    finally:
        CLUSTER.stop()
    print(f"{check.passed} passed, {check.failed} failed ({time.monotonic() - started:.1f} s)")
    return 1 if check.failed else 0


def one_phase(check, shards):
    px = proxy()
    try:
        conn = CLUSTER.connect(px.port)
        got = conn.execute("INSERT INTO countries VALUES ('fr', 'France'), ('de', 'Germany') RETURNING code").fetchall()
        on = on_shards(shards, "SELECT count(*) FROM countries")
        check(sorted(got) == [("de",), ("fr",)] and on == [2, 2, 2], "an omnisharded INSERT reaches every shard",
              f"{got} {on}")
        cur = conn.execute("UPDATE countries SET name = upper(name)")
        on = on_shards(shards, "SELECT count(*) FROM countries WHERE name = upper(name)")
        check(cur.statusmessage == "UPDATE 2" and on == [2, 2, 2], "an omnisharded UPDATE, answered once",
              f"{cur.statusmessage} {on}")
        ports = {conn.execute("SELECT inet_server_port(), count(*) FROM countries").fetchone()[0] for _ in range(6)}
        check(len(ports) == 3, "reads of an omnisharded table take turns over the shards", f"{ports}")
        shards[2].execute("INSERT INTO countries VALUES ('it', 'only on shard 2')")
        st, msg = diffcluster.sqlstate_of(lambda: conn.execute("INSERT INTO countries VALUES ('it', 'Italy')"))
        on = on_shards(shards, "SELECT count(*) FROM countries WHERE code = 'it'")
        check(st == "23505" and on == [0, 0, 1], "a write one shard refuses changes no shard", f"{st} {on}")
        shards[2].execute("DELETE FROM countries WHERE code = 'it'")
        st, msg = diffcluster.sqlstate_of(lambda: conn.execute("UPDATE items SET v = v + 1"))
        check(st == "0A000", "a keyless UPDATE is refused without allow_cross_shard_writes", f"{st} {msg}")
        conn.close()
    finally:
        px.stop()
    px = proxy(allow_cross_shard_writes="on")
    try:
        conn = CLUSTER.connect(px.port)
        for t in range(1, 31):
            conn.execute("INSERT INTO items (tenant_id, v) VALUES (%s, %s), (%s, %s)", (t, t, t, 100 + t))
        per = on_shards(shards, "SELECT count(*) FROM items")
        cur = conn.execute("UPDATE items SET v = v + 1000 WHERE v > 100 RETURNING tenant_id")
        rows = cur.fetchall()
        check(cur.statusmessage == "UPDATE 30" and len(rows) == 30 and min(per) > 0,
              "a keyless UPDATE runs on every shard: counts summed, every RETURNING row",
              f"{cur.statusmessage} {len(rows)} {per}")
        cur = conn.execute("DELETE FROM items WHERE v > 1000")
        left = sum(on_shards(shards, "SELECT count(*) FROM items"))
        check(cur.statusmessage == "DELETE 30" and left == 30, "a keyless DELETE runs on every shard",
              f"{cur.statusmessage} {left}")
        conn.close()
    finally:
        px.stop()


def split_inserts(check, shards):
    px = proxy(two_phase_commit="on", two_phase_recovery_interval_ms=200)
    try:
        conn = CLUSTER.connect(px.port)
        placed = diffcluster.shard_of(shards[0], list(range(1, 31)), shards=3)
        rows = [(t, 5000 + t) for t in range(1, 31)]
        q = "INSERT INTO items (tenant_id, v) VALUES " + ", ".join(["(%s, %s)"] * len(rows)) + " RETURNING v"
        cur = conn.execute(q, [x for r in rows for x in r])
        got = [r[0] for r in cur.fetchall()]
        per = [c.execute("SELECT count(*) FROM items WHERE v > 5000").fetchone()[0] for c in shards]
        want = [sum(1 for t in range(1, 31) if placed[t] == k) for k in range(3)]
        check(cur.statusmessage == "INSERT 0 30" and got == [5000 + t for t in range(1, 31)] and per == want,
              "a multi-row INSERT over 3 shards (parameters): each row on its shard, RETURNING in row order",
              f"{cur.statusmessage} {got[:5]} {per} != {want}")
        misplaced = sum(c.execute("SELECT count(*) FROM items WHERE v > 5000 AND (hashint8extended(tenant_id, 0) "
                                  "& 1023) * 3 / 1024 <> %s", (k,)).fetchone()[0] for k, c in enumerate(shards))
        check(misplaced == 0, "no split row on another shard", f"{misplaced}")
        cur = psycopg.ClientCursor(conn).execute("INSERT INTO items (tenant_id, v) VALUES (1, 6001), (2, 6002), "
                                                 "(3, 6003) RETURNING tenant_id")
        check(cur.statusmessage == "INSERT 0 3" and [r[0] for r in cur.fetchall()] == [1, 2, 3],
              "a multi-row INSERT over shards (simple protocol)", f"{cur.statusmessage}")
        before = sum(c.execute("SELECT count(*) FROM items").fetchone()[0] for c in shards)
        st, msg = diffcluster.sqlstate_of(lambda: conn.execute(
            "INSERT INTO items (tenant_id, v) VALUES (1, 7001), (2, 7002), (3, NULL)"))
        after = sum(c.execute("SELECT count(*) FROM items").fetchone()[0] for c in shards)
        check(st == "23502" and after == before and prepared(shards) == 0,
              "a split INSERT one shard refuses keeps no row anywhere", f"{st} {before} -> {after}")
        ddl_atomic(check, shards, conn)
        conn.close()
    finally:
        px.stop()
    px = proxy()
    try:
        conn = CLUSTER.connect(px.port)
        st, msg = diffcluster.sqlstate_of(lambda: conn.execute("INSERT INTO items (tenant_id, v) VALUES (1, 1), (2, 2), (3, 3)"))
        check(st == "0A000" and "two_phase_commit" in msg, "without two-phase commit, a multi-row INSERT over shards "
              "is refused", f"{st} {msg}")
        conn.close()
    finally:
        px.stop()


def ddl_atomic(check, shards, conn):
    """DDL with two_phase_commit = on: one distributed transaction, applied on every shard
    or on none."""
    def tables(name):
        return on_shards(shards, "SELECT count(*) FROM pg_class WHERE relname = %s", (name,))

    simple = psycopg.ClientCursor(conn)
    cur = simple.execute("CREATE TABLE ddl_a (id int, v text)")
    check(cur.statusmessage == "CREATE TABLE" and tables("ddl_a") == [1, 1, 1] and prepared(shards) == 0,
          "DDL (simple protocol) on every shard in one transaction", f"{cur.statusmessage} {tables('ddl_a')}")
    cur = conn.execute("ALTER TABLE ddl_a ADD COLUMN w int")
    cols = on_shards(shards, "SELECT count(*) FROM pg_attribute WHERE attrelid = 'ddl_a'::regclass AND attnum > 0")
    check(cur.statusmessage == "ALTER TABLE" and cols == [3, 3, 3], "DDL in the extended protocol on every shard",
          f"{cur.statusmessage} {cols}")
    simple.execute("CREATE TABLE ddl_b (id int); CREATE INDEX ddl_b_id ON ddl_b (id)")
    idx = on_shards(shards, "SELECT count(*) FROM pg_class WHERE relname = 'ddl_b_id'")
    check(idx == [1, 1, 1], "two DDL statements in one Query", f"{idx}")
    # Shard 2 alone has ddl_c: CREATE TABLE fails there, and no shard keeps it.
    shards[2].execute("CREATE TABLE ddl_c (id int)")
    st, msg = diffcluster.sqlstate_of(lambda: simple.execute("CREATE TABLE ddl_c (id int); CREATE TABLE ddl_d (id int)"))
    check(st == "42P07" and tables("ddl_c") == [0, 0, 1] and tables("ddl_d") == [0, 0, 0] and prepared(shards) == 0,
          "DDL that fails on one shard is applied on none", f"{st} {tables('ddl_c')} {tables('ddl_d')}")
    shards[2].execute("DROP TABLE ddl_c")
    # What cannot run in a transaction block goes to each shard in turn, as without 2PC.
    simple.execute("CREATE INDEX CONCURRENTLY ddl_a_id ON ddl_a (id)")
    idx = on_shards(shards, "SELECT count(*) FROM pg_class WHERE relname = 'ddl_a_id'")
    check(idx == [1, 1, 1], "CREATE INDEX CONCURRENTLY on every shard (not in a transaction)", f"{idx}")
    simple.execute("DROP TABLE ddl_a, ddl_b")
    check(tables("ddl_a") == [0, 0, 0], "DROP TABLE on every shard", f"{tables('ddl_a')}")
    diffcluster.check_sequence_ranges(check, conn, shards[0], "items", 3, "atomic DDL", "v")


def crashes(check, shards):
    keys = dict(two_phase_commit="on", two_phase_recovery_interval_ms=200, two_phase_recovery_grace_ms=500)
    # the two-phase cost, measured while nothing crashes
    px = proxy(**keys)
    try:
        conn = CLUSTER.connect(px.port)
        t0 = time.monotonic()
        for i in range(50):
            conn.execute("INSERT INTO countries VALUES (%s, 'x')", (f"t{i}",))
        two = (time.monotonic() - t0) / 50
        conn.execute("DELETE FROM countries WHERE name = 'x'")
        check(prepared(shards) == 0, "two-phase writes leave no prepared transaction", f"{prepared(shards)}")
        conn.close()
    finally:
        px.stop()
    px = proxy()
    try:
        conn = CLUSTER.connect(px.port)
        t0 = time.monotonic()
        for i in range(50):
            conn.execute("INSERT INTO countries VALUES (%s, 'x')", (f"t{i}",))
        one = (time.monotonic() - t0) / 50
        conn.execute("DELETE FROM countries WHERE name = 'x'")
        conn.close()
    finally:
        px.stop()
    print(f"[t_twopc] a write on 3 shards: {one * 1000:.2f} ms one-phase, {two * 1000:.2f} ms two-phase "
          f"(+{(two - one) * 1000:.2f} ms)")

    for point, committed in (("after_prepare", False), ("after_decision", True),
                             ("after_first_commit_prepared", True)):
        code = f"c_{point}"
        diffcluster.crash_and_recover(
            check, CLUSTER, shards, lambda: proxy(**keys), point, committed,
            lambda conn: conn.execute("INSERT INTO countries VALUES (%s, 'crash')", (code,)),
            lambda: on_shards(shards, "SELECT count(*) FROM countries WHERE code = %s", (code,)), "write")


if __name__ == "__main__":
    sys.exit(main())

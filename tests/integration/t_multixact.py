#!/usr/bin/env python3
"""Transactions over several shards (BEGIN ... COMMIT whose statements name tenants of
different shards), on a cluster of its own (3 shards, no replicas, max_prepared_transactions
set by cluster.sh, stopped at exit). With two_phase_commit = on the servers of the shards a
transaction ran on stay in it (parked) while it runs on another, and its COMMIT commits on
all of them with two-phase commit (the decision on shard 0, which takes part only for it when
the transaction did not run there):
  1. statements for tenants of three shards, and back to the first, in the simple protocol:
     each sees the transaction's own rows; other sessions see none of them before COMMIT;
     after it every row is on its shard, no prepared transaction and no decision row is left;
  2. ROLLBACK, an error on one shard (later statements anywhere get 25P02 and COMMIT answers
     ROLLBACK), a client that leaves mid-transaction, and a parked server terminated before
     COMMIT (which then fails): nothing of it stays on any shard;
  3. psycopg in its default transaction mode (BEGIN, statements with parameters in the
     extended protocol, COMMIT) over shards 1 and 2 only: shard 0 records the decision;
  4. refusals inside such a transaction (0A000, the transaction then rolls back on every
     shard): savepoints, a temporary table, COMMIT AND CHAIN;
  5. without two_phase_commit the statement for a second shard is refused (0A000, naming the
     setting) and the transaction's first shard keeps working;
  6. statements across shards inside such transactions, on its servers: a keyless read sees
     the transaction's own rows on every shard (others see none), as the transaction's first
     statement too and in the extended protocol; an omnisharded INSERT and DDL (CREATE TABLE)
     run in it and are committed or rolled back with it; an error in one makes later
     statements get 25P02; COPY FROM (split by key) and COPY TO run in it and see its rows;
     without two-phase commit they are refused;
  7. pgshard killed after PREPARE and after the decision of such a transaction: after a
     restart, recovery leaves no prepared transaction and the transaction is wholly absent,
     or wholly committed, on every shard.
Prints one line per check and "N passed, M failed"; exits 1 when a check failed.
"""
import os
import sys

import need_psycopg  # noqa: E402,F401
import psycopg  # noqa: E402

import atexit
import time

os.environ["PGWIRE_TEST"] = "t_multixact"
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pgwire  # noqa: E402,F401
import diffcluster  # noqa: E402
from diffcluster import on_shards, prepared, wait_for  # noqa: E402

CLUSTER = diffcluster.Cluster("multixact-cluster", shards=3)
TWOPC = dict(two_phase_commit="on", two_phase_recovery_interval_ms=200, two_phase_recovery_grace_ms=500)


def decisions(shards):
    return shards[0].execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'pgshard' "
                             "AND tablename = 'transactions'").fetchone()[0] and \
        shards[0].execute("SELECT count(*) FROM pgshard.transactions").fetchone()[0]


def proxy(**keys):
    return CLUSTER.proxy(sharded=("items",), omnisharded=("countries",), workers=2, pool_size=4,
                         admin_users=CLUSTER.user, **keys)


def rows_of(shards, tag):
    return on_shards(shards, "SELECT count(*) FROM items WHERE tag = %s", (tag,))


def main():
    diffcluster.install_watchdog(280)
    atexit.register(CLUSTER.stop)
    check = diffcluster.Checks()
    started = time.monotonic()
    CLUSTER.start()
    shards = CLUSTER.shard_conns()
    for c in shards:
        c.execute("CREATE TABLE items (tenant_id int NOT NULL, v int NOT NULL, tag text NOT NULL, "
                  "PRIMARY KEY (tenant_id, v))")
        c.execute("CREATE TABLE countries (code text PRIMARY KEY, name text NOT NULL)")
    where = diffcluster.shard_of(shards[0], range(1, 40))
    t = {s: [k for k in sorted(where) if where[k] == s][:2] for s in range(3)}  # two tenants per shard
    try:
        simple(check, shards, t)
        failures(check, shards, t)
        extended(check, shards, t)
        refusals(check, shards, t)
        without_twopc(check, shards, t)
        fanouts(check, shards, t)
        crashes(check, shards, t)
    finally:
        CLUSTER.stop()
    print(f"{check.passed} passed, {check.failed} failed ({time.monotonic() - started:.1f} s)")
    return 1 if check.failed else 0


def simple(check, shards, t):
    with proxy(**TWOPC) as px:
        conn = CLUSTER.connect(px.port)
        other = CLUSTER.connect(px.port)
        conn.execute("BEGIN")
        for s in (0, 1, 2):
            conn.execute(f"INSERT INTO items (tenant_id, v, tag) VALUES ({t[s][0]}, 1, 'simple')")
        seen = [conn.execute(f"SELECT count(*) FROM items WHERE tenant_id = {t[s][0]}").fetchone()[0]
                for s in (0, 2, 1, 0)]
        check(seen == [1, 1, 1, 1], "each shard's statement sees the transaction's own rows", f"{seen}")
        conn.execute(f"UPDATE items SET v = 2 WHERE tenant_id = {t[0][0]}")  # back to the first shard
        before = [other.execute(f"SELECT count(*) FROM items WHERE tenant_id = {t[s][0]}").fetchone()[0]
                  for s in (0, 1, 2)]
        check(before == [0, 0, 0], "other sessions see nothing of it before COMMIT", f"{before}")
        status = conn.pgconn.transaction_status
        cur = conn.execute("COMMIT")
        check(cur.statusmessage == "COMMIT" and status == psycopg.pq.TransactionStatus.INTRANS and
              conn.pgconn.transaction_status == psycopg.pq.TransactionStatus.IDLE,
              "COMMIT answers COMMIT, idle after it", f"{cur.statusmessage} {status}")
        check(rows_of(shards, "simple") == [1, 1, 1], "after COMMIT each row is on its shard",
              f"{rows_of(shards, 'simple')}")
        check(shards[0].execute(f"SELECT v FROM items WHERE tenant_id = {t[0][0]}").fetchone()[0] == 2,
              "the statement after the return to the first shard is committed too")
        check(prepared(shards) == 0 and decisions(shards) == 0, "no prepared transaction or decision row is left",
              f"prepared={prepared(shards)} decisions={decisions(shards)}")
        # the connection goes on as usual: an autocommit statement, and a second such transaction
        conn.execute(f"INSERT INTO items (tenant_id, v, tag) VALUES ({t[1][1]}, 1, 'after')")
        conn.execute("BEGIN")
        conn.execute(f"DELETE FROM items WHERE tenant_id = {t[1][1]}")
        conn.execute(f"DELETE FROM items WHERE tenant_id = {t[2][0]}")
        conn.execute("COMMIT")
        check(rows_of(shards, "after") == [0, 0, 0] and rows_of(shards, "simple") == [1, 1, 0],
              "a second transaction over several shards on the same connection",
              f"{rows_of(shards, 'after')} {rows_of(shards, 'simple')}")
        conn.close()
        other.close()


def failures(check, shards, t):
    with proxy(**TWOPC) as px:
        conn = CLUSTER.connect(px.port)
        conn.execute("BEGIN")
        conn.execute(f"INSERT INTO items (tenant_id, v, tag) VALUES ({t[0][1]}, 1, 'rolled')")
        conn.execute(f"INSERT INTO items (tenant_id, v, tag) VALUES ({t[2][1]}, 1, 'rolled')")
        conn.execute("ROLLBACK")
        check(rows_of(shards, "rolled") == [0, 0, 0] and prepared(shards) == 0,
              "ROLLBACK leaves nothing on any shard", f"{rows_of(shards, 'rolled')}")

        shards[1].execute(f"INSERT INTO items (tenant_id, v, tag) VALUES ({t[1][1]}, 7, 'taken')")
        conn.execute("BEGIN")
        conn.execute(f"INSERT INTO items (tenant_id, v, tag) VALUES ({t[0][1]}, 1, 'failed')")
        st, _ = diffcluster.sqlstate_of(lambda: conn.execute(f"INSERT INTO items (tenant_id, v, tag) VALUES ({t[1][1]}, 7, 'failed')"))
        st2, _ = diffcluster.sqlstate_of(lambda: conn.execute(f"SELECT * FROM items WHERE tenant_id = {t[2][1]}"))
        st3, _ = diffcluster.sqlstate_of(lambda: conn.execute(f"SELECT * FROM items WHERE tenant_id = {t[0][1]}"))
        cur = conn.execute("COMMIT")
        check(st == "23505" and st2 == "25P02" and st3 == "25P02" and cur.statusmessage == "ROLLBACK",
              "after an error on one shard every statement gets 25P02 and COMMIT answers ROLLBACK",
              f"{st} {st2} {st3} {cur.statusmessage}")
        check(rows_of(shards, "failed") == [0, 0, 0] and prepared(shards) == 0,
              "nothing of the failed transaction stays on any shard", f"{rows_of(shards, 'failed')}")
        shards[1].execute("DELETE FROM items WHERE tag = 'taken'")

        gone = CLUSTER.connect(px.port)
        gone.execute("BEGIN")
        gone.execute(f"INSERT INTO items (tenant_id, v, tag) VALUES ({t[0][1]}, 1, 'left')")
        gone.execute(f"INSERT INTO items (tenant_id, v, tag) VALUES ({t[1][1]}, 1, 'left')")
        gone.execute(f"INSERT INTO items (tenant_id, v, tag) VALUES ({t[2][1]}, 1, 'left')")
        gone.close()
        check(wait_for(lambda: rows_of(shards, "left") == [0, 0, 0] and
                       on_shards(shards, "SELECT count(*) FROM pg_stat_activity WHERE state LIKE 'idle in%%' "
                                 "AND datname = current_database()") == [0, 0, 0], 10),
              "a client that leaves mid-transaction: every shard rolls back", f"{rows_of(shards, 'left')}")
        conn.execute("BEGIN")
        conn.execute(f"INSERT INTO items (tenant_id, v, tag) VALUES ({t[1][1]}, 1, 'lost')")
        conn.execute(f"INSERT INTO items (tenant_id, v, tag) VALUES ({t[2][1]}, 1, 'lost')")
        conn.execute(f"INSERT INTO items (tenant_id, v, tag) VALUES ({t[0][1]}, 1, 'lost')")
        killed = shards[1].execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE "
                                   "state = 'idle in transaction' AND datname = current_database()").fetchone()[0]
        st, msg = diffcluster.sqlstate_of(lambda: conn.execute("COMMIT"))
        check(killed == 1 and st in ("57P01", "08006") and rows_of(shards, "lost") == [0, 0, 0] and
              wait_for(lambda: prepared(shards) == 0, 10),
              "a parked server lost before COMMIT: COMMIT fails and no shard keeps anything",
              f"killed={killed} {st} {msg} {rows_of(shards, 'lost')} prepared={prepared(shards)}")
        if conn.pgconn.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            conn.execute("ROLLBACK")
        cur = conn.execute(f"SELECT count(*) FROM items WHERE tenant_id IN ({t[0][1]}, {t[1][1]})")
        check(cur.fetchone()[0] == 0, "the pool serves other clients after that")
        conn.close()


def extended(check, shards, t):
    with proxy(**TWOPC) as px:
        conn = psycopg.connect(host=CLUSTER.host, port=px.port, user=CLUSTER.user, password=CLUSTER.password,
                               dbname=CLUSTER.db, autocommit=False, prepare_threshold=None, connect_timeout=10)
        for k in (t[1][0], t[2][0], t[1][0]):
            conn.execute("INSERT INTO items (tenant_id, v, tag) VALUES (%s, %s, 'ext')", (k, 10 + len(conn.execute(
                "SELECT 1 FROM items WHERE tenant_id = %s AND tag = 'ext'", (k,)).fetchall())))
        conn.commit()
        check(rows_of(shards, "ext") == [0, 2, 1] and prepared(shards) == 0 and decisions(shards) == 0,
              "psycopg's transaction over shards 1 and 2 (extended protocol) commits; shard 0 decides",
              f"{rows_of(shards, 'ext')} prepared={prepared(shards)}")
        conn.execute("DELETE FROM items WHERE tenant_id = %s AND tag = 'ext'", (t[1][0],))
        conn.execute("DELETE FROM items WHERE tenant_id = %s AND tag = 'ext'", (t[2][0],))
        conn.rollback()
        check(rows_of(shards, "ext") == [0, 2, 1], "psycopg's rollback of such a transaction",
              f"{rows_of(shards, 'ext')}")
        conn.close()


def refusals(check, shards, t):
    with proxy(**TWOPC) as px:
        conn = CLUSTER.connect(px.port)
        for what, sql in (("SAVEPOINT", "SAVEPOINT a"),
                          ("a temporary table", "CREATE TEMP TABLE scratch (x int)"),
                          ("COMMIT AND CHAIN", "COMMIT AND CHAIN")):
            conn.execute("BEGIN")
            conn.execute(f"INSERT INTO items (tenant_id, v, tag) VALUES ({t[0][0]}, 50, 'refused')")
            conn.execute(f"INSERT INTO items (tenant_id, v, tag) VALUES ({t[1][0]}, 50, 'refused')")
            st, msg = diffcluster.sqlstate_of(lambda: conn.execute(sql))
            cur = conn.execute("COMMIT")
            check(st == "0A000" and "several shards" in msg and cur.statusmessage == "ROLLBACK" and
                  rows_of(shards, "refused") == [0, 0, 0],
                  f"{what} in a transaction over several shards is refused and it rolls back",
                  f"{st} {msg} {cur.statusmessage} {rows_of(shards, 'refused')}")
        conn.close()


def without_twopc(check, shards, t):
    with proxy() as px:
        conn = CLUSTER.connect(px.port)
        conn.execute("BEGIN")
        conn.execute(f"INSERT INTO items (tenant_id, v, tag) VALUES ({t[0][0]}, 60, 'one')")
        second = f"INSERT INTO items (tenant_id, v, tag) VALUES ({t[1][0]}, 60, 'one')"
        st, msg = diffcluster.sqlstate_of(lambda: conn.execute(second))
        conn.execute("ROLLBACK")
        check(st == "0A000" and "two_phase_commit = on" in msg, "without two-phase commit a second shard is refused",
              f"{st} {msg}")
        conn.close()


def fanouts(check, shards, t):
    with proxy(**TWOPC) as px:
        conn = CLUSTER.connect(px.port)
        other = CLUSTER.connect(px.port)
        base = conn.execute("SELECT count(*) FROM items").fetchone()[0]
        conn.execute("BEGIN")
        conn.execute(f"INSERT INTO items (tenant_id, v, tag) VALUES ({t[0][0]}, 80, 'fan')")
        n1 = conn.execute("SELECT count(*) FROM items WHERE tag = 'fan'").fetchone()[0]
        conn.execute(f"INSERT INTO items (tenant_id, v, tag) VALUES ({t[2][0]}, 80, 'fan')")
        n2 = conn.execute("SELECT count(*) FROM items WHERE tag = 'fan'").fetchone()[0]
        seen = other.execute("SELECT count(*) FROM items WHERE tag = 'fan'").fetchone()[0]
        conn.execute("INSERT INTO countries VALUES ('fr', 'France')")
        conn.execute("CREATE TABLE fan_ddl (x int)")
        conn.execute(f"INSERT INTO items (tenant_id, v, tag) VALUES ({t[1][0]}, 80, 'fan')")
        rows = conn.execute("SELECT tenant_id FROM items WHERE tag = 'fan' ORDER BY tenant_id").fetchall()
        cur = conn.execute("COMMIT")
        check(n1 == 1 and n2 == 2 and seen == 0 and len(rows) == 3 and cur.statusmessage == "COMMIT",
              "keyless reads inside the transaction see its own rows on every shard, others see none",
              f"{n1} {n2} {seen} {rows} {cur.statusmessage}")
        tables = on_shards(shards, "SELECT count(*) FROM pg_tables WHERE tablename = 'fan_ddl'")
        omni = on_shards(shards, "SELECT count(*) FROM countries WHERE code = 'fr'")
        check(rows_of(shards, "fan") == [1, 1, 1] and tables == [1, 1, 1] and omni == [1, 1, 1] and
              prepared(shards) == 0,
              "its keyed rows, omnisharded INSERT and CREATE TABLE are committed on every shard",
              f"{rows_of(shards, 'fan')} {tables} {omni}")

        conn.execute("BEGIN")
        first = conn.execute("SELECT count(*) FROM items").fetchone()[0]
        conn.execute("DROP TABLE fan_ddl")
        conn.execute("DELETE FROM countries")
        conn.execute(f"DELETE FROM items WHERE tenant_id = {t[0][0]} AND tag = 'fan'")
        after = conn.execute("SELECT count(*) FROM items").fetchone()[0]
        conn.execute("ROLLBACK")
        tables = on_shards(shards, "SELECT count(*) FROM pg_tables WHERE tablename = 'fan_ddl'")
        omni = on_shards(shards, "SELECT count(*) FROM countries")
        check(first == base + 3 and after == base + 2 and tables == [1, 1, 1] and omni == [1, 1, 1] and
              rows_of(shards, "fan") == [1, 1, 1],
              "a keyless read as the first statement; DROP TABLE, an omnisharded DELETE and a keyed one "
              "are rolled back with the transaction", f"{first} {after} {base} {tables} {omni}")

        conn.execute("BEGIN")
        conn.execute(f"INSERT INTO items (tenant_id, v, tag) VALUES ({t[1][0]}, 81, 'fanerr')")
        st, _ = diffcluster.sqlstate_of(lambda: conn.execute("SELECT 1 / (v - 80) FROM items WHERE tag = 'fan'"))
        st2, _ = diffcluster.sqlstate_of(lambda: conn.execute(f"SELECT * FROM items WHERE tenant_id = {t[2][0]}"))
        st3, _ = diffcluster.sqlstate_of(lambda: conn.execute("SELECT count(*) FROM items"))
        cur = conn.execute("COMMIT")
        check(st == "22012" and st2 == "25P02" and st3 == "25P02" and cur.statusmessage == "ROLLBACK" and
              rows_of(shards, "fanerr") == [0, 0, 0],
              "an error in a keyless read inside the transaction: 25P02 after it, COMMIT rolls back",
              f"{st} {st2} {st3} {cur.statusmessage}")
        other.close()

        data = "".join(f"{t[s][0]}\t{90 + i}\tcopied\n" for s in (0, 1, 2) for i in range(5)).encode()
        for end in ("ROLLBACK", "COMMIT"):
            conn.execute("BEGIN")
            conn.execute(f"INSERT INTO items (tenant_id, v, tag) VALUES ({t[1][0]}, 89, 'copied')")
            with conn.cursor().copy("COPY items (tenant_id, v, tag) FROM STDIN") as cp:
                cp.write(data)
            inside = conn.execute("SELECT count(*) FROM items WHERE tag = 'copied'").fetchone()[0]
            out = bytearray()
            with conn.cursor().copy("COPY items (tenant_id, v, tag) TO STDOUT") as cp:
                for chunk in cp:
                    out += chunk
            copied_out = out.count(b"\tcopied\n")
            conn.execute(end)
            want = [0, 0, 0] if end == "ROLLBACK" else [5, 6, 5]
            check(inside == 16 and copied_out == 16 and rows_of(shards, "copied") == want,
                  f"COPY FROM and COPY TO inside the transaction see its rows; {end} applies to them",
                  f"{inside} {copied_out} {rows_of(shards, 'copied')}")
        conn.close()

        ext = psycopg.connect(host=CLUSTER.host, port=px.port, user=CLUSTER.user, password=CLUSTER.password,
                              dbname=CLUSTER.db, autocommit=False, prepare_threshold=None, connect_timeout=10)
        ext.execute("INSERT INTO items (tenant_id, v, tag) VALUES (%s, 82, 'fanext')", (t[2][1],))
        got = ext.execute("SELECT count(*) FROM items WHERE tag = %s", ("fanext",)).fetchone()[0]
        ext.execute("UPDATE countries SET name = %s", ("République",))
        ext.commit()
        names = on_shards(shards, "SELECT name FROM countries WHERE code = 'fr'")
        check(got == 1 and rows_of(shards, "fanext") == [0, 0, 1] and names == ["République"] * 3,
              "psycopg (extended protocol): a keyless read and an omnisharded UPDATE in its transaction",
              f"{got} {rows_of(shards, 'fanext')} {names}")
        ext.close()
    with proxy() as px:
        conn = CLUSTER.connect(px.port)
        conn.execute("BEGIN")
        st, msg = diffcluster.sqlstate_of(lambda: conn.execute("SELECT count(*) FROM items"))
        conn.execute("ROLLBACK")
        check(st == "0A000" and "two_phase_commit = on" in msg,
              "without two-phase commit a keyless read inside a transaction is refused", f"{st} {msg}")
        conn.close()


def crashes(check, shards, t):
    for point, committed in (("after_prepare", False), ("after_decision", True)):
        tag = f"crash_{point}"

        def write(conn):
            conn.execute("BEGIN")
            for s in (1, 2, 0):
                conn.execute(f"INSERT INTO items (tenant_id, v, tag) VALUES ({t[s][0]}, 70, '{tag}')")
            conn.execute("COMMIT")

        diffcluster.crash_and_recover(check, CLUSTER, shards, lambda: proxy(**TWOPC), point, committed, write,
                                      lambda: rows_of(shards, tag), "transaction")


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""COPY of a sharded table through pgshard (proxy/fanout.c, proxy/copysplit.c), on a cluster
of its own (2 shards, no replicas, stopped at exit):
  1. COPY FROM STDIN of 100,000 rows in text, CSV (with HEADER and quoted fields) and binary:
     each shard holds exactly the rows whose key the default map gives it (checked on the
     shards with the server's own hash), no row is lost or doubled, and the command tag
     counts them all;
  2. COPY TO STDOUT in text, CSV with HEADER and binary returns every row once (one header,
     one binary trailer), also COPY (SELECT ...) TO whose rows need no merging (one whose
     rows do is refused);
  3. bad data: a key that is not an integer, a NULL key, and a row a shard refuses (each
     shard's COPY is its own transaction: the error says which shards kept their rows, and
     they hold exactly those); a client's CopyFail keeps nothing; the connection goes on;
  4. refused with 0A000: COPY without the key among its columns, to or from a server file,
     and inside a transaction.
Prints one line per check and "N passed, M failed"; exits 1 when a check failed.
"""
import os
import sys

import need_psycopg  # noqa: E402,F401
import psycopg  # noqa: E402

import atexit
import io
import time

os.environ["PGWIRE_TEST"] = "t_copy"
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pgwire  # noqa: E402,F401
import diffcluster  # noqa: E402

CLUSTER = diffcluster.Cluster("copy-cluster", shards=2)
N = 100_000


def misplaced(shards):
    """Rows on a shard the default map (2 shards, 1024 buckets) does not give their key."""
    return [c.execute("SELECT count(*) FROM items WHERE (hashint8extended(tenant_id, 0) & 1023) * 2 / 1024 <> %s",
                      (k,)).fetchone()[0] for k, c in enumerate(shards)]


def totals(shards):
    rows = [c.execute("SELECT count(*), coalesce(sum(v), 0) FROM items").fetchone() for c in shards]
    return sum(r[0] for r in rows), sum(r[1] for r in rows), [r[0] for r in rows]


def truncate(shards):
    for c in shards:
        c.execute("TRUNCATE items")


def rows():
    # Quotes, tabs, commas, newlines and multi-byte text in s, NULLs in note.
    for i in range(N):
        s = f'r{i} "q",\tx\n€' if i % 1000 == 0 else f"r{i}"
        yield (i % 997 - 100, i, s, None if i % 7 == 0 else "n")


def main():
    diffcluster.install_watchdog(280)
    atexit.register(CLUSTER.stop)
    check = diffcluster.Checks()
    started = time.monotonic()
    CLUSTER.start()
    shards = CLUSTER.shard_conns()
    for c in shards:
        c.execute("CREATE TABLE items (tenant_id int NOT NULL, v int NOT NULL CHECK (v >= 0), s text, note text)")
    proxy = CLUSTER.proxy(sharded=("items",), workers=2, pool_size=3)
    try:
        run(check, proxy, shards)
    finally:
        proxy.stop()
        CLUSTER.stop()
    print(f"{check.passed} passed, {check.failed} failed ({time.monotonic() - started:.1f} s)")
    return 1 if check.failed else 0


def copy_in(conn, sql, data=None, rowsource=None, types=None):
    with conn.cursor() as cur:
        with cur.copy(sql) as cp:
            if types:
                cp.set_types(types)
            if data is not None:
                for k in range(0, len(data), 65536):
                    cp.write(data[k:k + 65536])
            else:
                for r in rowsource:
                    cp.write_row(r)
        return cur.statusmessage


def copy_out(conn, sql):
    buf = io.BytesIO()
    with conn.cursor() as cur:
        with cur.copy(sql) as cp:
            for chunk in cp:
                buf.write(chunk)
    return buf.getvalue()


def run(check, proxy, shards):
    conn = CLUSTER.connect(proxy.port)
    want_sum = sum(r[1] for r in rows())

    # 1. COPY FROM in three formats
    csv = io.StringIO()
    csv.write("tenant_id,v,s,note\n")
    for r in rows():
        s = '"' + r[2].replace('"', '""') + '"'
        csv.write(f"{r[0]},{r[1]},{s},{'' if r[3] is None else r[3]}\n")
    forms = [
        ("text", "COPY items (tenant_id, v, s, note) FROM STDIN", dict(rowsource=rows())),
        ("csv", "COPY items (tenant_id, v, s, note) FROM STDIN WITH (FORMAT csv, HEADER true)",
         dict(data=csv.getvalue().encode())),
        ("binary", "COPY items (tenant_id, v, s, note) FROM STDIN WITH (FORMAT binary)",
         dict(rowsource=rows(), types=["int4", "int4", "text", "text"])),
    ]
    for name, sql, kw in forms:
        truncate(shards)
        t0 = time.monotonic()
        tag = copy_in(conn, sql, **kw)
        took = time.monotonic() - t0
        n, total, per = totals(shards)
        check(tag == f"COPY {N}" and n == N and total == want_sum and min(per) > 0,
              f"COPY FROM {name}: {N} rows in {took:.1f} s, split {per}", f"tag {tag!r}, {n} rows, sum {total}")
        check(misplaced(shards) == [0, 0], f"COPY FROM {name}: every row on its key's shard", f"{misplaced(shards)}")
        nulls = sum(c.execute("SELECT count(*) FROM items WHERE note IS NULL").fetchone()[0] for c in shards)
        odd = sum(c.execute("SELECT count(*) FROM items WHERE s LIKE %s", ('%"q",\tx\n€',)).fetchone()[0]
                  for c in shards)
        check(nulls == (N + 6) // 7 and odd == N // 1000, f"COPY FROM {name}: NULLs and quoted text intact",
              f"{nulls} NULLs, {odd} quoted")

    # 2. COPY TO in three formats
    text = copy_out(conn, "COPY items TO STDOUT")
    lines = text.decode().split("\n")
    check(len(lines) == N + 1 and lines[-1] == "", "COPY TO text: every row once", f"{len(lines)} lines")
    got = copy_out(conn, "COPY items (tenant_id, v) TO STDOUT WITH (FORMAT csv, HEADER)").decode().split("\n")
    vs = sorted(int(x.split(",")[1]) for x in got[1:] if x)
    check(got[0] == "tenant_id,v" and vs == list(range(N)), "COPY TO csv: one header line, every row once",
          f"{got[:2]} {len(vs)}")
    with conn.cursor() as cur:
        with cur.copy("COPY items (v, s) TO STDOUT WITH (FORMAT binary)") as cp:
            cp.set_types(["int4", "text"])
            bvs = sorted(r[0] for r in cp.rows())
    check(bvs == list(range(N)), "COPY TO binary: one header and trailer, every row once", f"{len(bvs)} rows")
    got = copy_out(conn, "COPY (SELECT v, v * 2 FROM items WHERE v % 10 = 3) TO STDOUT WITH (FORMAT csv, HEADER)")
    got = got.decode().split("\n")
    pairs = sorted(tuple(int(y) for y in x.split(",")) for x in got[1:] if x)
    check(got[0] == "v,?column?" and pairs == [(v, 2 * v) for v in range(N) if v % 10 == 3],
          "COPY (SELECT ...) TO csv across shards: one header, every row once", f"{got[:2]} {len(pairs)}")

    # 3. bad data
    truncate(shards)
    st, msg = diffcluster.sqlstate_of(lambda: copy_in(conn, "COPY items (tenant_id, v) FROM STDIN", data=b"1\t1\nabc\t2\n"))
    check(st == "22P02" and "line 2" in msg and totals(shards)[0] == 0, "a key that is not an integer",
          f"{st} {msg} {totals(shards)}")
    st, msg = diffcluster.sqlstate_of(lambda: copy_in(conn, "COPY items (tenant_id, v) FROM STDIN", data=b"1\t1\n\\N\t2\n"))
    check(st == "0A000" and totals(shards)[0] == 0, "a NULL key", f"{st} {msg}")
    placed = diffcluster.shard_of(shards[0], [1, 2, 3, 4, 5, 6, 7, 8], shards=2)
    a = next(t for t in placed if placed[t] == 0)
    b = next(t for t in placed if placed[t] == 1)
    data = f"{a}\t1\n{b}\t-5\n".encode()  # the CHECK fails on b's shard only
    st, msg = diffcluster.sqlstate_of(lambda: copy_in(conn, "COPY items (tenant_id, v) FROM STDIN", data=data))
    n, _, per = totals(shards)
    check(st == "23514" and "shard 0 loaded its rows and keeps them" in msg and per == [1, 0],
          "a row one shard refuses: the error says which shard kept its rows", f"{st} {msg} {per}")
    truncate(shards)

    def fail_midway():
        with conn.cursor() as cur:
            with cur.copy("COPY items (tenant_id, v) FROM STDIN") as cp:
                cp.write(b"1\t1\n2\t2\n")
                raise RuntimeError("client gave up")

    try:
        fail_midway()
    except RuntimeError:
        pass
    except psycopg.Error:
        pass
    check(totals(shards)[0] == 0, "a client's CopyFail keeps nothing", f"{totals(shards)}")
    n = conn.execute("SELECT 1").fetchone()[0]
    check(n == 1, "the connection goes on after failed COPYs", f"{n}")

    # 4. refusals
    def refused(name, fn, words):
        st, msg = diffcluster.sqlstate_of(fn)
        check(st == "0A000" and all(w in msg for w in words), name, f"{st} {msg}")

    refused("COPY without the key column", lambda: copy_in(conn, "COPY items (v) FROM STDIN", data=b"1\n"),
            ["shard key", "tenant_id"])
    refused("COPY to a server file", lambda: conn.execute("COPY items TO '/dev/null'"), ["server file"])
    refused("COPY (SELECT ... ORDER BY) TO across shards",
            lambda: copy_out(conn, "COPY (SELECT v FROM items ORDER BY v) TO STDOUT"), ["ORDER BY", "SELECT"])
    refused("COPY (SELECT count(*)) TO across shards",
            lambda: copy_out(conn, "COPY (SELECT count(*) FROM items) TO STDOUT"), ["aggregates"])

    def in_txn():
        with conn.transaction():
            copy_in(conn, "COPY items (tenant_id, v) FROM STDIN", data=b"1\t1\n")

    refused("COPY inside a transaction", in_txn, ["transaction"])

    # SJIS's two-byte characters may end in 0x5C (a backslash): split byte by byte, the text
    # format would read an escape there.
    conn.execute("SET client_encoding TO 'SJIS'")
    refused("COPY FROM in client_encoding SJIS", lambda: copy_in(conn, "COPY items (tenant_id, v) FROM STDIN",
                                                                  data=b"1\t1\n"), ["client_encoding", "sjis"])
    conn.execute("SET client_encoding TO 'UTF8'")
    copy_in(conn, "COPY items (tenant_id, v) FROM STDIN", data=b"1\t1\n")
    check(totals(shards)[0] == 1, "COPY FROM again in UTF8", f"{totals(shards)}")
    truncate(shards)
    check(totals(shards)[0] == 0, "nothing of the refused COPYs reached a shard", f"{totals(shards)}")
    conn.close()


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/python3
"""psycopg 3 through pgshard over two shards, the tenant key as a Bind parameter in text
and binary format, unnamed and server-prepared (named) statements, and a transaction. Run
by tests/integration/t_sharding.sh with: PORT USER PASSWORD DB TENANT... Prints one line per
tenant, "sum TENANT FORMAT VALUE", which the script compares with each shard's own answer,
and "RESULT ok" at the end."""
import sys

import psycopg

port, user, password, db = sys.argv[1:5]
tenants = [int(t) for t in sys.argv[5:]]
with psycopg.connect(host="127.0.0.1", port=port, user=user, password=password, dbname=db,
                     autocommit=True) as conn:
    for t in tenants:
        for fmt, mark in (("text", "%t"), ("binary", "%b")):
            for prepare in (False, True):
                cur = conn.cursor(binary=fmt == "binary")
                cur.execute(f"/* pgshard: target=primary */ SELECT coalesce(sum(amount), 0)::int FROM orders WHERE tenant_id = {mark}", (t,),
                            prepare=prepare)
                print(f"sum {t} {fmt}{'-prepared' if prepare else ''} {cur.fetchone()[0]}")
        conn.execute("INSERT INTO orders (tenant_id, id, amount) VALUES (%b, 50, 1)", (t,))
        with conn.transaction():
            conn.execute("INSERT INTO orders (tenant_id, id, amount) VALUES (%s, 51, 1)", (t,))
            conn.execute("UPDATE orders SET amount = 2 WHERE tenant_id = %b AND id = 51", (t,))
    # Autocommit statements for two shards pipelined, each segment ended by its own Sync
    # (psycopg's pipeline mode with sync()): the second waits for the first to finish, then
    # goes to its own shard. (Without the Syncs they would be one implicit transaction over
    # two shards, which is refused.)
    curs = []
    with conn.pipeline() as p:
        for t in tenants:
            curs.append(conn.execute(
                "/* pgshard: target=primary */ SELECT coalesce(sum(amount), 0)::int FROM orders WHERE tenant_id = %s",
                (t,)))
            p.sync()
    for t, cur in zip(tenants, curs):
        print(f"sum {t} pipelined {cur.fetchone()[0]}")
# A transaction that turns to another shard over the extended protocol: the statements
# before it already went to the first shard, so pgshard closes the connection with 0A000
# (the first shard rolls back) and nothing reaches the second.
try:
    with psycopg.connect(host="127.0.0.1", port=port, user=user, password=password, dbname=db) as c2:
        with c2.transaction():
            c2.execute("INSERT INTO orders (tenant_id, id, amount) VALUES (%s, 52, 1)", (tenants[0],))
            c2.execute("INSERT INTO orders (tenant_id, id, amount) VALUES (%s, 52, 1)", (tenants[1],))
    print("cross-shard transaction went through")
except psycopg.Error as e:
    print(f"cross {e.sqlstate} {e}".splitlines()[0])
print("RESULT ok")

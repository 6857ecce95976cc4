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
                cur.execute(f"SELECT coalesce(sum(amount), 0)::int FROM orders WHERE tenant_id = {mark}", (t,),
                            prepare=prepare)
                print(f"sum {t} {fmt}{'-prepared' if prepare else ''} {cur.fetchone()[0]}")
        conn.execute("INSERT INTO orders (tenant_id, id, amount) VALUES (%b, 50, 1)", (t,))
        with conn.transaction():
            conn.execute("INSERT INTO orders (tenant_id, id, amount) VALUES (%s, 51, 1)", (t,))
            conn.execute("UPDATE orders SET amount = 2 WHERE tenant_id = %b AND id = 51", (t,))
print("RESULT ok")

#!/usr/bin/env python3
"""The extended-protocol shapes drivers send, written byte by byte (pgwire.Conn), through a
sharded pgshard in transaction pooling. Run by t_sharding.sh with PGS_CLUSTER_DIR and
PGSHARD_BIN set (pgwire reads them):

    wire.py PORT TENANT_ON_SHARD0 TENANT_ON_SHARD1

Prints "sum TENANT HOW VALUE" per read for t_sharding.sh to compare with the tenant's shard,
and fails (exit 1) on any answer that is not the one expected:
  - a named statement parsed once, then bound in later segments with the key as a text and
    as a binary int8 parameter, for tenants of both shards (its Binds are routed by its
    plan, without its text);
  - a NULL key and a malformed binary key are refused, and the statement still works;
  - an unnamed Parse that arrives before its Bind (two TCP writes of one segment) waits for
    the Bind and goes to the Bind's shard;
  - Parse/Describe/Sync then Bind/Execute/Sync (pgx's describe-exec) in a transaction: the
    second segment is routed by the unnamed statement's text kept from the first; a Bind of
    it for another shard's tenant ends the connection with 0A000 (FATAL);
  - on a new connection, two pipelined segments of one named statement for tenants of
    both shards (the second waits for the first's shard to finish).
"""
import os
import struct
import sys
import time

os.environ.setdefault("PGWIRE_TEST", "t_sharding_wire")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "integration"))
from pgwire import Conn, cstr, msg, parse_datarow, parse_error  # noqa: E402

SUM = "SELECT coalesce(sum(amount), 0) FROM orders WHERE tenant_id = $1"
INT8 = 20


def parse(name, sql, types=()):
    return msg(b"P", cstr(name) + cstr(sql) + struct.pack("!H", len(types)) +
               b"".join(struct.pack("!I", t) for t in types))


def bind(stmt, value, binary=False):
    """Bind of one parameter (None: NULL; bytes: sent as they are), text results."""
    if value is None:
        param = struct.pack("!i", -1)
    else:
        v = value if isinstance(value, bytes) else (struct.pack("!q", value) if binary else str(value).encode())
        param = struct.pack("!i", len(v)) + v
    return msg(b"B", cstr("") + cstr(stmt) + struct.pack("!HH", 1, 1 if binary else 0) +
               struct.pack("!H", 1) + param + struct.pack("!H", 0))


EXECUTE = msg(b"E", cstr("") + struct.pack("!I", 0))
SYNC = msg(b"S")
DESCRIBE_UNNAMED = msg(b"D", b"S" + cstr(""))


def results(c):
    """Reads to ReadyForQuery: (rows, error fields or None)."""
    rows, err = [], None
    while True:
        t, body = c.recv_msg()
        if t == b"D":
            rows.append(parse_datarow(body))
        elif t == b"E":
            err = parse_error(body)
        elif t == b"Z":
            c.status = body
            return rows, err


def one_sum(c, data, tenant, how):
    c.send(data)
    rows, err = results(c)
    if err:
        raise AssertionError(f"{how} for tenant {tenant}: error {err.get('C')} {err.get('M')}")
    if len(rows) != 1:
        raise AssertionError(f"{how} for tenant {tenant}: {rows!r}")
    print(f"sum {tenant} {how} {rows[0][0]}", flush=True)


def refused(c, data, code, what, contains):
    c.send(data)
    rows, err = results(c)
    if not err or err.get("C") != code or (contains and contains not in err.get("M", "")):
        raise AssertionError(f"{what}: wanted {code}, got {err!r} and rows {rows!r}")
    print(f"refused {what}: {err.get('M')}", flush=True)


def main():
    port, t0, t1 = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    c = Conn(port)
    c.login()

    # A named statement, parsed alone, bound later for tenants of both shards.
    c.send(parse("sum_by_tenant", SUM, (INT8,)) + SYNC)
    _, err = results(c)
    assert err is None, err
    for t in (t1, t0, t1):
        one_sum(c, bind("sum_by_tenant", t) + EXECUTE + SYNC, t, "named-text")
        one_sum(c, bind("sum_by_tenant", t, binary=True) + EXECUTE + SYNC, t, "named-binary")
    refused(c, bind("sum_by_tenant", None) + EXECUTE + SYNC, "0A000", "a NULL key", "is NULL")
    c.send(bind("sum_by_tenant", b"\0\0\0\1", binary=True) + EXECUTE + SYNC)
    _, err = results(c)
    if not err:
        raise AssertionError("a 4-byte binary int8 key was accepted")
    print(f"refused a malformed binary key: {err.get('C')} {err.get('M')}", flush=True)
    one_sum(c, bind("sum_by_tenant", t1) + EXECUTE + SYNC, t1, "named-after-errors")

    # One segment in two writes: the Parse alone names no shard, the Bind does.
    for t in (t1, t0):
        c.send(parse("", SUM))
        time.sleep(0.2)
        one_sum(c, bind("", t) + EXECUTE + SYNC, t, "unnamed-split")

    # pgx's describe-exec in a transaction: the unnamed statement's text from the first
    # segment routes the Bind of the second.
    c.query("BEGIN")
    c.query(f"SELECT count(*) FROM orders WHERE tenant_id = {t1}")
    c.send(parse("", SUM) + DESCRIBE_UNNAMED + SYNC)
    _, err = results(c)
    assert err is None, err
    one_sum(c, bind("", t1) + EXECUTE + SYNC, t1, "unnamed-later")
    # In the extended protocol the transaction cannot be answered with an error and go on
    # (the messages after the Bind are already in flight): the connection ends, and the
    # server's transaction with it.
    c.send(bind("", t0) + EXECUTE + SYNC)
    c.expect_fatal("0A000", "cannot join it")
    print("refused a Bind for another shard's tenant in the transaction", flush=True)
    c = Conn(port)
    c.login()
    c.send(parse("sum_by_tenant", SUM) + bind("sum_by_tenant", t0) + EXECUTE + SYNC)
    c.send(bind("sum_by_tenant", t1) + EXECUTE + SYNC)
    for t in (t0, t1):
        rows, err = results(c)
        if err or len(rows) != 1:
            raise AssertionError(f"named statement on a new connection, tenant {t}: {err!r} {rows!r}")
        print(f"sum {t} named-pipelined {rows[0][0]}", flush=True)
    c.terminate()
    print("RESULT ok", flush=True)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""pgshard-migrate move on a cluster of its own (2 shards in the config, a third server that
joins at the end; primaries only, wal_level = logical), a catalog on shard 0 and two pgshard
processes in front of it:
  1. under a write load through both proxies over 120 tenants (each transaction inserts an
     order and bumps its tenant's counter), a move of a set of buckets and then of one
     tenant from shard 0 to shard 1: no failed transaction, moving tenants' included; every
     tenant's orders and counter equal to the control copy the load kept; no row of the moved
     keys left on the source; the longest write stall of moving tenants and its p99 printed;
  2. crash injection: PGSHARD_MIGRATE_CRASH_AFTER makes the tool exit hard after each step
     in turn, and resume finishes the move correctly; in a second pass abort undoes it: the
     source as it was, nothing copied left on the target, no publication, subscription, slot,
     fence or fence trigger anywhere; abort of a flipped move is refused;
  3. verify on a target corrupted on purpose names the keys that differ, and exits 1;
  4. a proxy that never acknowledges (SIGSTOPped) makes the freeze unfreeze and say which
     proxy it waited for; continued after the flip, it cannot write the moved keys to the
     source (its lease refuses until it has read the new map, the fence catches the rest);
  5. list and list --json show the moves;
  6. plan on skewed data proposes moves that bring the largest shard within 10 % of the
     mean, and plan --apply runs them;
  7. add-shard 2 (a third server, empty, added to the config) gets the schema, its sequence
     range and its catalog row, and plan --add-shard 2 --apply gives it its share.
Prints one line per check and "N passed, M failed"; exits 1 when a check failed.
"""
import os
import sys

import need_psycopg  # noqa: E402,F401
import psycopg  # noqa: E402

import atexit
import json
import random
import signal
import subprocess
import threading
import time

os.environ["PGWIRE_TEST"] = "t_move"
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pgwire  # noqa: E402
import diffcluster  # noqa: E402

CLUSTER = diffcluster.Cluster("move-cluster", shards=3)  # shard 2 joins at the end (add-shard)
MIG = os.environ.get("PGSHARD_MIGRATE_BIN", "")
TENANTS = list(range(1, 121))
SUPER_PW = "movepw"
LEASE_MS = 1500
STEPS = ["check", "prepare", "publish", "subscribe", "sync", "freeze", "verify", "cleanup"]


class Env:
    def __init__(self):
        self.shards = None
        self.proxies = []
        self.ini = None
        self.shard_of = {}
        self.bucket_of = {}
        self.heavy = []


E = Env()


def proxy(name, nshards=2):
    c = CLUSTER
    sections = {f"shard.{k}": {"primary": f"{c.host}:{c.ports[k]}"} for k in range(1, nshards)}
    sections.update({"table.orders": {"shard_key": "tenant_id", "key_type": "int"},
                     "table.counters": {"shard_key": "tenant_id", "key_type": "int"},
                     "table.notes": {"shard_key": "tenant_id", "key_type": "int"}})
    return pgwire.Proxy(name, primary=f"{c.host}:{c.ports[0]}", sections=sections, monitor_dbname=c.db,
                        catalog_dsn=catalog_dsn(), catalog_lease_ms=LEASE_MS, freeze_hold_ms=20000,
                        workers=2, pool_size=8)


def catalog_dsn():
    return f"host={CLUSTER.host} port={CLUSTER.ports[0]} dbname={CLUSTER.db} user=postgres password={SUPER_PW}"


def write_ini(path, nshards=2):
    c = CLUSTER
    shards = "".join(f"[shard.{k}]\nprimary = {c.host}:{c.ports[k]}\n" for k in range(nshards))
    with open(path, "w") as f:
        f.write(f"[pgshard]\nmonitor_dbname = {c.db}\nmigrate_user = postgres\ncatalog_dsn = {catalog_dsn()}\n"
                f"catalog_lease_ms = {LEASE_MS}\nfreeze_timeout_ms = 1500\n{shards}"
                f"[user.{c.user}]\npassword = {c.password}\n[user.postgres]\npassword = {SUPER_PW}\n"
                "[table.orders]\nshard_key = tenant_id\nkey_type = int\n"
                "[table.counters]\nshard_key = tenant_id\nkey_type = int\n"
                "[table.notes]\nshard_key = tenant_id\nkey_type = int\n")


def mig(*args, env=None, timeout=120):
    e = dict(os.environ)
    e.update(env or {})
    r = subprocess.run([MIG, "-c", E.ini] + list(args), capture_output=True, text=True, timeout=timeout, env=e,
                       stdin=subprocess.DEVNULL)
    return r.returncode, r.stdout + r.stderr


def on(shard, sql, params=None):
    return E.shards[shard].execute(sql, params).fetchall()


def one(shard, sql, params=None):
    return on(shard, sql, params)[0][0]


def bucket_sql(tenants):
    return on(0, "SELECT k, (hashint8extended(k, 0) & 1023)::int FROM unnest(%s::int[]) k", (tenants,))


def refresh_placement():
    """Where each tenant is now, by the catalog's map (buckets and overrides)."""
    buckets = dict(on(0, "SELECT bucket, shard FROM pgshard.bucket_map"))
    overrides = {int(t): s for t, s in on(0, "SELECT tenant, shard FROM pgshard.tenant_map")}
    for t, b in bucket_sql(TENANTS):
        E.bucket_of[t] = b
        E.shard_of[t] = overrides.get(t, buckets[b])


def rows_of(shard, tenants):
    return one(shard, "SELECT count(*) FROM orders WHERE tenant_id = ANY (%s)", (list(tenants),)) + \
        one(shard, "SELECT count(*) FROM counters WHERE tenant_id = ANY (%s)", (list(tenants),))


def leftovers():
    """Publications, subscriptions, slots, fences and fence triggers of moves, anywhere."""
    found = []
    for s in range(len(E.shards)):
        found += [f"shard {s} publication {r[0]}" for r in on(s, "SELECT pubname FROM pg_publication")]
        found += [f"shard {s} subscription {r[0]}" for r in on(s, "SELECT subname FROM pg_subscription")]
        found += [f"shard {s} slot {r[0]}" for r in on(s, "SELECT slot_name FROM pg_replication_slots")]
        found += [f"shard {s} trigger on {r[0]}" for r in
                  on(s, "SELECT tgrelid::regclass::text FROM pg_trigger WHERE tgname = 'pgshard_fence'")]
        if one(s, "SELECT to_regclass('pgshard.fence') IS NOT NULL"):
            found += [f"shard {s} fence {r[0]}" for r in on(s, "SELECT migration_id FROM pgshard.fence")]
    return found


# ----------------------------------------------------------------------------- the load

class Load:
    """Threads writing through both proxies: each transaction inserts an order with a unique
    value and bumps the tenant's counter; the control copy records what committed."""

    def __init__(self, threads=6):
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.orders = {t: set() for t in TENANTS}
        self.counts = {t: 0 for t in TENANTS}
        self.errors = []
        self.lat = []  # (tenant, start, seconds)
        self.threads = [threading.Thread(target=self.run, args=(i,), daemon=True) for i in range(threads)]

    def start(self):
        for th in self.threads:
            th.start()

    def finish(self):
        self.stop.set()
        for th in self.threads:
            th.join(60)

    def run(self, i):
        conns = [CLUSTER.connect(p.port) for p in E.proxies]
        rnd = random.Random(i)
        n = 0
        while not self.stop.is_set():
            t = rnd.choice(TENANTS)
            v = f"{i}-{n}"
            n += 1
            conn = conns[n % len(conns)]
            t0 = time.monotonic()
            try:
                with conn.transaction():
                    conn.execute("INSERT INTO orders (tenant_id, v) VALUES (%s, %s)", (t, v))
                    conn.execute("UPDATE counters SET n = n + 1 WHERE tenant_id = %s", (t,))
            except psycopg.Error as e:
                with self.lock:
                    self.errors.append((t, e.sqlstate, str(e).strip().splitlines()[0]))
                continue
            dt = time.monotonic() - t0
            with self.lock:
                self.orders[t].add(v)
                self.counts[t] += 1
                self.lat.append((t, t0, dt))
        for c in conns:
            c.close()


def compare_with_control(check, load, label):
    refresh_placement()
    conn = CLUSTER.connect(E.proxies[0].port)
    bad = []
    for t in TENANTS:
        got = {r[0] for r in conn.execute("SELECT v FROM orders WHERE tenant_id = %s", (t,)).fetchall()}
        n = conn.execute("SELECT n FROM counters WHERE tenant_id = %s", (t,)).fetchone()[0]
        if got != load.orders[t] or n != load.counts[t]:
            bad.append((t, len(got), len(load.orders[t]), n, load.counts[t]))
    conn.close()
    total = one(0, "SELECT count(*) FROM orders") + one(1, "SELECT count(*) FROM orders")
    want = sum(len(s) for s in load.orders.values())
    misplaced = sum(one(s, "SELECT count(*) FROM orders WHERE tenant_id = ANY (%s)",
                        ([t for t in TENANTS if E.shard_of[t] != s],)) for s in range(2))
    check(not bad and total == want and misplaced == 0,
          f"{label}: every tenant's orders and counter equal the control copy, each row once, on its shard",
          f"{want} orders; differing tenants (tenant, rows, want, counter, want): {bad[:5]}; "
          f"total {total}; on the wrong shard {misplaced}")


# ----------------------------------------------------------------------------- the parts

def setup():
    for s in range(CLUSTER.shards):
        CLUSTER.superuser_psql(f"ALTER ROLE postgres PASSWORD '{SUPER_PW}'", shard=s)
    # As the superuser: the catalog and the fence are pgshard-migrate's (migrate_user's).
    E.shards = [psycopg.connect(host=CLUSTER.host, port=p, user="postgres", password=SUPER_PW, dbname=CLUSTER.db,
                                autocommit=True, connect_timeout=10) for p in CLUSTER.ports]
    E.ini = os.path.join(pgwire.WORK, "migrate.ini")
    os.makedirs(pgwire.WORK, exist_ok=True)
    write_ini(E.ini)
    rc, out = mig("init")
    if rc != 0:
        raise RuntimeError(f"pgshard-migrate init: {out}")
    E.proxies = [proxy("proxy1"), proxy("proxy2")]
    conn = CLUSTER.connect(E.proxies[0].port)
    conn.execute("CREATE TABLE orders (tenant_id int NOT NULL, id bigserial, v text NOT NULL, "
                 "PRIMARY KEY (tenant_id, id))")
    conn.execute("CREATE TABLE counters (tenant_id int PRIMARY KEY, n int NOT NULL)")
    # An int4 serial: no per-shard range fits in it, so every shard counts from 1.
    conn.execute("CREATE TABLE notes (tenant_id int NOT NULL, id serial, PRIMARY KEY (tenant_id, id))")
    for t in TENANTS:
        conn.execute("INSERT INTO counters (tenant_id, n) VALUES (%s, 0)", (t,))
    conn.close()
    refresh_placement()


def wait_live(n, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if one(0, "SELECT count(*) FROM pgshard.proxies WHERE last_seen > clock_timestamp() - interval '5 s'") >= n:
            return True
        time.sleep(0.1)
    return False


def pick(n):
    """The buckets of n tenants on shard 0 that no override holds elsewhere, and every tenant
    in those buckets: the moving ones."""
    refresh_placement()
    overridden = {int(r[0]) for r in on(0, "SELECT tenant FROM pgshard.tenant_map")}
    pinned = {E.bucket_of[t] for t in overridden}  # a bucket move refuses these
    some = [t for t in TENANTS if E.shard_of[t] == 0 and E.bucket_of[t] not in pinned][:n]
    buckets = {E.bucket_of[t] for t in some}
    moving = [t for t in TENANTS if E.bucket_of[t] in buckets and t not in overridden]
    return ",".join(str(b) for b in sorted(buckets)), moving


def stall(load, moving, since):
    lat = sorted(dt for t, t0, dt in load.lat if t in moving and t0 >= since)
    if not lat:
        return 0.0, 0.0, 0
    return lat[-1] * 1000, lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000, len(lat)


def under_load(check):
    check(wait_live(2), "both proxies heartbeat into the catalog", "")
    load = Load()
    load.start()
    time.sleep(2)
    buckets, moving = pick(8)
    since = time.monotonic()
    rc, out = mig("move", "--buckets", buckets, "--to", "1", timeout=240)
    until = time.monotonic()
    check(rc == 0 and "done: shard 0 to shard 1" in out, "a bucket move under load finishes", out[-1500:])
    others = [t for t in TENANTS if t not in moving]
    before = sorted(dt for t, t0, dt in list(load.lat) if t in others and since - 2 <= t0 < since)
    during = sorted(dt for t, t0, dt in list(load.lat) if t in others and since <= t0 < until)
    if before and during:
        print(f"     other tenants' transactions: p50 {before[len(before) // 2] * 1000:.1f} ms, "
              f"p99 {before[int(len(before) * 0.99)] * 1000:.1f} ms in the 2 s before the move; "
              f"p50 {during[len(during) // 2] * 1000:.1f} ms, p99 {during[int(len(during) * 0.99)] * 1000:.1f} ms "
              f"during it ({len(during)} transactions)", flush=True)
    mx, p99, n = stall(load, set(moving), since)
    print(f"     bucket move: moving tenants' transactions {n}, longest {mx:.1f} ms, p99 {p99:.1f} ms; "
          + " ".join(line.split(": ", 1)[1] for line in out.splitlines() if "flipped:" in line), flush=True)
    tenant = pick(1)[1][0]
    since = time.monotonic()
    rc, out = mig("move", "--tenant", str(tenant), "--to", "1", timeout=240)
    check(rc == 0 and "done" in out, "a tenant move under load finishes", out[-1500:])
    mx, p99, n = stall(load, {tenant}, since)
    print(f"     tenant move: tenant {tenant}'s transactions {n}, longest {mx:.1f} ms, p99 {p99:.1f} ms",
          flush=True)
    time.sleep(1)
    load.finish()
    moved = set(moving) | {tenant}
    other_errors = [e for e in load.errors if e[0] not in moved]
    moving_errors = [e for e in load.errors if e[0] in moved]
    total = len(load.lat)
    check(total > 200 and not other_errors, "no failed transaction for tenants not moving",
          f"{total} transactions, errors {other_errors[:5]}")
    check(not moving_errors, "the moving tenants' transactions all succeeded (after waiting)", f"{moving_errors[:5]}")
    compare_with_control(check, load, "after the moves")
    check(rows_of(0, moved) == 0, "no row of the moved keys is left on the source", f"{rows_of(0, moved)}")
    ov = on(0, "SELECT tenant, shard FROM pgshard.tenant_map")
    check(ov == [(str(tenant), 1)], "the tenant move is a tenant override to shard 1", f"{ov}")
    check(leftovers() == [], "no publication, subscription, slot or fence is left", f"{leftovers()}")
    return load


def sequences(check):
    """A moved tenant's new rows on the target do not collide with the rows it brought: the
    target's int4 serial (the same range on every shard) is set past the source's under the
    freeze, while the bigint serial of orders keeps its shard's own range."""
    tenant = pick(1)[1][0]
    other = next(t for t in TENANTS if E.shard_of[t] == 1)
    conn = CLUSTER.connect(E.proxies[0].port)
    for _ in range(5):
        conn.execute("INSERT INTO notes (tenant_id) VALUES (%s)", (other,))
    for _ in range(30):
        conn.execute("INSERT INTO notes (tenant_id) VALUES (%s)", (tenant,))
    orders_seq = one(1, "SELECT last_value FROM orders_id_seq")
    rc, out = mig("move", "--tenant", str(tenant), "--to", "1", timeout=240)
    flipped = " ".join(line.split(": ", 1)[1] for line in out.splitlines() if "flipped:" in line)
    errors = []
    for _ in range(40):
        try:
            conn.execute("INSERT INTO notes (tenant_id) VALUES (%s)", (tenant,))
        except psycopg.Error as e:
            errors.append(f"{e.sqlstate} {str(e).strip().splitlines()[0]}")
    ids = [r[0] for r in conn.execute("SELECT id FROM notes WHERE tenant_id = %s", (tenant,)).fetchall()]
    conn.close()
    check(rc == 0 and not errors and len(ids) == 70 and len(set(ids)) == 70,
          "a moved tenant's new rows take serial values past the ones it brought (no duplicate key)",
          f"exit {rc}; {flipped}; {len(ids)} rows, {len(set(ids))} distinct, errors {errors[:3]}; "
          f"{out[-400:] if rc else ''}")
    now = one(1, "SELECT last_value FROM orders_id_seq")
    check(now >= orders_seq and now > 1 << 48, "the target's bigint serial keeps its own range",
          f"orders_id_seq on shard 1 {orders_seq} -> {now}")
    refresh_placement()
    # Its bucket stays on shard 0: moving the bucket to where the override put the tenant
    # would meet the tenant's rows there, and is refused, naming it (plan leaves it out).
    rc, out = mig("move", "--buckets", str(E.bucket_of[tenant]), "--to", "1")
    check(rc != 0 and f"tenant {tenant} of bucket {E.bucket_of[tenant]} is on shard 1 already" in out
          and one(0, "SELECT count(*) FROM pgshard.migrations WHERE state = 'running'") == 0,
          "a bucket move to where an override put one of its tenants is refused before it starts",
          f"exit {rc}: {out[-400:]}")


def bucket_load():
    return dict(on(0, "SELECT bucket, queries FROM pgshard.bucket_load"))


def load_reported(check, load):
    """The proxies report the statements they route by key, per bucket, to the catalog: at
    least the two keyed statements of every committed transaction of the load."""
    want = {}
    for t in TENANTS:
        want[E.bucket_of[t]] = want.get(E.bucket_of[t], 0) + 2 * load.counts[t]
    deadline = time.monotonic() + 12
    while True:
        got = bucket_load()
        short = [(b, got.get(b, 0), n) for b, n in want.items() if got.get(b, 0) < n]
        stray = [b for b in got if b not in want]
        if (not short and not stray) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    check(not short and not stray and sum(want.values()) > 0,
          "the proxies report each bucket's keyed statements to pgshard.bucket_load",
          f"{sum(got.values())} reported for {sum(want.values())} wanted; short (bucket, got, want): {short[:5]}; "
          f"buckets of no tenant: {stray[:5]}")


def load_planning(check):
    """Sizes even, load skewed (four tenants of the larger shard made busy, nothing else
    counted): plan moves busy buckets to the other shard until the busiest is within 10 % of
    the mean load, without taking any shard's size past its bound; --apply runs it."""
    refresh_placement()
    overridden = {int(r[0]) for r in on(0, "SELECT tenant FROM pgshard.tenant_map")}
    big = 0 if shard_bytes()[0] >= shard_bytes()[1] else 1
    pinned = {E.bucket_of[t] for t in overridden}  # plan leaves buckets with an override alone
    hot = [t for t in TENANTS if E.shard_of[t] == big and E.bucket_of[t] not in pinned][:4]
    E.shards[0].execute("DELETE FROM pgshard.bucket_load")
    before = 0
    conn = CLUSTER.connect(E.proxies[0].port)
    for t in hot:
        for _ in range(1000):
            conn.execute("SELECT count(*) FROM counters WHERE tenant_id = %s", (t,))
    conn.close()
    deadline = time.monotonic() + 12
    while sum(bucket_load().values()) < before + 4000 and time.monotonic() < deadline:
        time.sleep(0.5)
    rc, js = mig("plan", "--json")
    try:
        doc = json.loads(js)
        load_after = [x["load_after"] for x in doc["shards"]]
        bytes_after = [x["bytes_after"] for x in doc["shards"]]
        moved = {b for m in doc["moves"] for b in m["buckets"]}
        out = [m for m in doc["moves"] if m["source"] == big]
        back = [m for m in doc["moves"] if m["source"] != big]  # cool buckets swapped in to make room
        ok = rc == 0 and out and all(m["load"] <= 0.1 * sum(o["load"] for o in out) for m in back) \
            and moved & {E.bucket_of[t] for t in hot} \
            and max(load_after) <= 1.10 * sum(load_after) / len(load_after) \
            and max(bytes_after) <= 1.10 * sum(bytes_after) / len(bytes_after)
    except (ValueError, KeyError, TypeError, ZeroDivisionError) as e:
        ok, load_after = False, str(e)
    check(ok, "plan --json on skewed load moves busy buckets off the busy shard (swapped for cool ones where "
          "size needs it), sizes kept within 10 %",
          f"hot tenants {hot}; {js[:600]}")
    rc, out = mig("plan", "--apply", timeout=240)
    rc2, js = mig("plan", "--json")
    try:
        left = json.loads(js)["moves"]
    except (ValueError, KeyError) as e:
        left = str(e)
    check(rc == 0 and rc2 == 0 and left == [], "plan --apply runs them; plan then proposes nothing",
          f"exit {rc}, {rc2}; left {left}; {out[-500:] if rc else ''}")


def crashes(check, load):
    """Each step's crash then resume, with the load's data as the control."""
    for step in STEPS:
        buckets, moving = pick(2)
        before = rows_of(0, moving)
        rc, out = mig("move", "--buckets", buckets, "--to", "1",
                      env={"PGSHARD_MIGRATE_CRASH_AFTER": step})
        if rc != 70:
            check(False, f"crash after {step}: the tool exits hard", f"exit {rc}: {out[-800:]}")
            continue
        mid = one(0, "SELECT max(id) FROM pgshard.migrations")
        rc, out = mig("resume", str(mid), timeout=180)
        after_src, after_dst = rows_of(0, moving), rows_of(1, moving)
        state = one(0, "SELECT state FROM pgshard.migrations WHERE id = %s", (mid,))
        check(rc == 0 and state == "done" and after_src == 0 and after_dst == before and leftovers() == [],
              f"crash after {step}, then resume: done, every row on the target, nothing left over",
              f"exit {rc}, {state}, source {after_src}, target {after_dst} of {before}, {leftovers()}; "
              f"{out[-600:] if rc else ''}")
    compare_with_control(check, load, "after the crashes and resumes")


def aborts(check, load):
    for step in STEPS[:6]:
        buckets, moving = pick(2)
        before = rows_of(0, moving)
        rc, out = mig("move", "--buckets", buckets, "--to", "1",
                      env={"PGSHARD_MIGRATE_CRASH_AFTER": step})
        mid = one(0, "SELECT max(id) FROM pgshard.migrations")
        if step == "sync":
            rc, out = mig("status")
            rc2, js = mig("status", "--json")
            try:
                moves = json.loads(js)["moves"]
            except (ValueError, KeyError):
                moves = None
            check(rc == 0 and f"move {mid}: shard 0 to 1, running, " in out and rc2 == 0
                  and moves and moves[0]["id"] == mid and moves[0]["state"] == "running",
                  "status and status --json show the active move", f"{out[-300:]} {moves}")
        rc, out = mig("abort", str(mid))
        state = one(0, "SELECT state FROM pgshard.migrations WHERE id = %s", (mid,))
        if step == "freeze":
            check(rc == 1 and "has flipped" in out and state == "flipped",
                  "abort of a flipped move is refused, saying why", f"exit {rc}: {out[-400:]}")
            rc, out = mig("resume", str(mid), timeout=180)
            check(rc == 0, "that move then finishes with resume", out[-400:])
            continue
        src, dst = rows_of(0, moving), rows_of(1, moving)
        check(rc == 0 and state == "aborted" and src == before and dst == 0 and leftovers() == [],
              f"crash after {step}, then abort: source as it was, nothing on the target, nothing left over",
              f"exit {rc}, {state}, source {src} of {before}, target {dst}, {leftovers()}; {out[-600:] if rc else ''}")
    compare_with_control(check, load, "after the aborts")


def corrupted(check):
    buckets, moving = pick(2)
    rc, out = mig("move", "--buckets", buckets, "--to", "1", env={"PGSHARD_MIGRATE_CRASH_AFTER": "freeze"})
    mid = one(0, "SELECT max(id) FROM pgshard.migrations")
    rows = on(1, "SELECT tenant_id, id, v FROM orders WHERE tenant_id = ANY (%s) ORDER BY tenant_id, id",
              (moving,))
    changed, deleted = rows[0], rows[-1]
    E.shards[1].execute("UPDATE orders SET v = 'corrupted' WHERE tenant_id = %s AND id = %s", changed[:2])
    E.shards[1].execute("DELETE FROM orders WHERE tenant_id = %s AND id = %s", deleted[:2])
    rc, out = mig("verify", str(mid))
    k1, k2 = f"({changed[0]},{changed[1]})", f"({deleted[0]},{deleted[1]})"
    check(rc == 1 and f"key {k1}: differs" in out and f"key {k2}: only on the source" in out,
          "verify on a corrupted target names the differing keys and exits 1", out[-800:])
    rc, js = mig("verify", str(mid), "--json")
    try:
        doc = json.loads(js)
        diffs = {d["key"]: d["what"] for t in doc["tables"] for d in t["differences"]}
        ok = rc == 1 and doc["same"] is False and diffs == {k1: "differs", k2: "only on the source"}
    except (ValueError, KeyError, TypeError) as e:
        ok, diffs = False, str(e)
    check(ok, "verify --json lists the same keys", f"exit {rc}: {diffs}")
    E.shards[1].execute("UPDATE orders SET v = %s WHERE tenant_id = %s AND id = %s", (changed[2],) + changed[:2])
    E.shards[1].execute("INSERT INTO orders (tenant_id, id, v) VALUES (%s, %s, %s)", deleted)
    rc, out = mig("resume", str(mid), timeout=180)
    check(rc == 0 and "checksums equal" in out, "once repaired, resume verifies and finishes", out[-600:])


def stopped_proxy(check):
    buckets, moving = pick(2)
    px2 = E.proxies[1]
    c2 = CLUSTER.connect(px2.port)
    c2.execute("SELECT n FROM counters WHERE tenant_id = %s", (moving[0],))
    # Stopped right before the freeze, while its heartbeat still says it is live.
    rc, out = mig("move", "--buckets", buckets, "--to", "1", env={"PGSHARD_MIGRATE_CRASH_AFTER": "sync"})
    mid = one(0, "SELECT max(id) FROM pgshard.migrations")
    os.kill(px2.proc.pid, signal.SIGSTOP)
    try:
        rc, out = mig("resume", str(mid), timeout=180)
        check(rc == 0 and "unfrozen: attempt 1: no acknowledgement within 1500 ms from" in out
              and f":{px2.proc.pid}:" in out,
              "a proxy that does not acknowledge makes the freeze unfreeze, naming it; the move goes on "
              "once it is no longer live", out[-1200:])
    finally:
        os.kill(px2.proc.pid, signal.SIGCONT)
    # Continued after the flip and the cleanup: its first writes of a moved key are refused
    # (lease) until it has read the new map; none reaches the source.
    states, deadline = [], time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            c2.execute("UPDATE counters SET n = n + 1000 WHERE tenant_id = %s", (moving[0],))
            states.append("ok")
            break
        except psycopg.Error as e:
            states.append(e.sqlstate)
            time.sleep(0.05)
    src = one(0, "SELECT count(*) FROM counters WHERE tenant_id = %s", (moving[0],))
    dst = one(1, "SELECT n >= 1000 FROM counters WHERE tenant_id = %s", (moving[0],))
    check(states[-1:] == ["ok"] and set(states[:-1]) <= {"57P03", "55000"} and src == 0 and dst,
          "a proxy continued after the flip writes the moved key to the target only (refused until it has the map)",
          f"{states[:6]}..., source rows {src}, target updated {dst}")
    E.shards[1].execute("UPDATE counters SET n = n - 1000 WHERE tenant_id = %s", (moving[0],))
    c2.close()


def listing(check):
    rc, out = mig("list")
    n = one(0, "SELECT count(*) FROM pgshard.migrations")
    check(rc == 0 and out.count(" done ") + out.count(" aborted ") >= n - 1, "list shows every move",
          out[-400:])
    rc, js = mig("list", "--json")
    try:
        moves = json.loads(js)["moves"]
        ok = rc == 0 and len(moves) == n and moves[0]["kind"] == "buckets" and moves[0]["state"] == "done"
    except (ValueError, KeyError, TypeError, IndexError):
        ok = False
    check(ok, "list --json is one document with every move", js[:300])


def shard_bytes():
    return [one(s, "SELECT coalesce(sum(pg_column_size(o.*)), 0) FROM orders o") +
            one(s, "SELECT coalesce(sum(pg_column_size(c.*)), 0) FROM counters c") for s in range(2)]


def size_only():
    """Empties pgshard.bucket_load, so that plan balances size alone: the load so far
    follows the test's own traffic and moves. Each proxy adds its counts to it every 5 s
    (proxy/catalog.c CAT_LOAD_MS), so it is emptied once every count taken before now has
    been added."""
    time.sleep(6)
    E.shards[0].execute("DELETE FROM pgshard.bucket_load")


def planning(check):
    """Skewed data: plan proposes moves that bring the largest shard within 10 % of the
    mean, and --apply makes it so."""
    refresh_placement()
    conn = CLUSTER.connect(E.proxies[0].port)
    heavy = E.heavy = [t for t in TENANTS if E.shard_of[t] == 0]
    pad = "x" * 400
    for t in heavy:
        conn.execute(f"/* pgshard: tenant={t} */ INSERT INTO orders (tenant_id, v) "
                     "SELECT %s, %s || g FROM generate_series(1, 250) g", (t, pad))
    conn.close()
    size_only()
    before = shard_bytes()
    rows_before = one(0, "SELECT count(*) FROM orders") + one(1, "SELECT count(*) FROM orders")
    rc, js = mig("plan", "--json")
    try:
        doc = json.loads(js)
        after = [x["bytes_after"] for x in doc["shards"]]
        mean = sum(after) / len(after)
        ok = rc == 0 and doc["moves"] and all(m["source"] == 0 and m["target"] == 1 for m in doc["moves"]) \
            and max(after) <= 1.10 * mean
    except (ValueError, KeyError, TypeError, ZeroDivisionError) as e:
        ok, after = False, str(e)
    check(ok, "plan --json on skewed data proposes moves from the large shard that bring it within 10 % of the mean",
          f"bytes now {before}, planned after {after}; {js[:300]}")
    rc, out = mig("plan", "--apply", timeout=240)
    now = shard_bytes()
    mean = sum(now) / 2
    rows_after = one(0, "SELECT count(*) FROM orders") + one(1, "SELECT count(*) FROM orders")
    refresh_placement()
    misplaced = sum(one(s, "SELECT count(*) FROM orders WHERE tenant_id = ANY (%s)",
                        ([t for t in TENANTS if E.shard_of[t] != s],)) for s in range(2))
    check(rc == 0 and max(now) <= 1.10 * mean and rows_after == rows_before and misplaced == 0,
          "plan --apply moves them: the largest shard is then within 10 % of the mean, no row lost",
          f"exit {rc}, bytes {before} -> {now}, rows {rows_before} -> {rows_after}, misplaced {misplaced}; "
          f"{out[-500:] if rc else ''}")


def adding_a_shard(check):
    """add-shard 2 prepares the third server (schema, sequence range, catalog row); the
    proxies restarted with it in their config; plan --add-shard 2 --apply gives it its
    share."""
    write_ini(E.ini, nshards=3)
    rc, out = mig("add-shard", "2")
    tables = one(2, "SELECT count(*) FROM pg_tables WHERE tablename IN ('orders', 'counters')")
    seq = one(2, "SELECT last_value FROM orders_id_seq")
    recorded = one(0, "SELECT count(*) FROM pgshard.shards WHERE shard = 2")
    check(rc == 0 and tables == 2 and seq == (2 << 48) + 1 and recorded == 1,
          "add-shard 2 copies the schema, starts its sequences at 2 * 2^48 + 1 and records the shard",
          f"exit {rc}, tables {tables}, sequence {seq}, recorded {recorded}: {out[-500:]}")
    rc, out = mig("add-shard", "2")
    check(rc == 1 and "already has 3 tables" in out, "add-shard of a shard that has tables is refused", out[-300:])
    for p in E.proxies:
        p.stop()
    E.proxies = [proxy("proxy1-3", nshards=3), proxy("proxy2-3", nshards=3)]
    rows_before = sum(one(s, "SELECT count(*) FROM orders") for s in range(3))
    size_only()
    rc, out = mig("plan", "--add-shard", "2", "--apply", timeout=240)
    now = [one(s, "SELECT coalesce(sum(pg_column_size(o.*)), 0) FROM orders o") +
           one(s, "SELECT coalesce(sum(pg_column_size(c.*)), 0) FROM counters c") for s in range(3)]
    rows_after = sum(one(s, "SELECT count(*) FROM orders") for s in range(3))
    refresh_placement()
    on2 = [t for t in TENANTS if E.shard_of[t] == 2]
    conn = CLUSTER.connect(E.proxies[1].port)
    port = conn.execute("SELECT inet_server_port() FROM counters WHERE tenant_id = %s", (on2[0],)).fetchone() \
        if on2 else None
    conn.close()
    check(rc == 0 and on2 and max(now) <= 1.10 * sum(now) / 3 and rows_after == rows_before
          and port and port[0] == CLUSTER.ports[2],
          "plan --add-shard 2 --apply fills the new shard to within 10 % of the mean; its tenants are served there",
          f"exit {rc}, bytes {now}, rows {rows_before} -> {rows_after}, {len(on2)} tenants on shard 2, port {port}; "
          f"{out[-400:] if rc else ''}")


def main():
    diffcluster.install_watchdog(560)
    atexit.register(CLUSTER.stop)
    check = diffcluster.Checks()
    started = time.monotonic()
    if not (MIG and os.access(MIG, os.X_OK)):
        print(f"FAIL PGSHARD_MIGRATE_BIN '{MIG}' is not an executable\n0 passed, 1 failed")
        return 1
    CLUSTER.start()
    try:
        setup()
        load = under_load(check)
        sequences(check)
        load_reported(check, load)
        crashes(check, load)
        aborts(check, load)
        corrupted(check)
        stopped_proxy(check)
        listing(check)
        planning(check)
        load_planning(check)
        adding_a_shard(check)
    finally:
        for p in E.proxies:
            try:
                p.stop()
            except AssertionError as e:
                check(False, f"{p.name} stops cleanly", str(e))
        CLUSTER.stop()
    print(f"{check.passed} passed, {check.failed} failed ({time.monotonic() - started:.1f} s)")
    return 1 if check.failed else 0


if __name__ == "__main__":
    sys.exit(main())

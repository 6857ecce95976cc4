#!/usr/bin/env python3
"""Differential test: the same keyed workload through pgshard over 3 shards and against one
plain PostgreSQL database must give the same answers.

On a cluster of its own (3 shards, no replicas, stopped at exit) it
  1. creates data/differential/schema.sql on every shard and in a reference database `ref`
     (made on shard 0's primary, owned by app);
  2. loads 60 tenants generated from random.Random(SEED): the omnisharded `tenants` rows
     straight into every shard, users/orders/order_items/audit_log rows THROUGH pgshard
     (one multi-row INSERT per tenant and table, the key a bind parameter) and the same rows
     into `ref`;
  3. runs every statement of data/differential/workload.sql (its header says how it is
     written) through pgshard and against `ref`, each side on one connection in autocommit
     (explicit BEGIN/COMMIT in the file), and compares: the same rows (as sorted lists unless
     the statement ends in a top-level ORDER BY), the same command status, or the same
     SQLSTATE when both fail. Statements marked `@refused` run only through pgshard and must
     fail with the SQLSTATE given; an IN list in a compared statement must name tenants of
     one shard and one in a refused statement tenants of several (checked against the map);
  4. checks each shard directly: every row of a sharded table sits on the shard the default
     map names ((hashint8extended(tenant_id, 0) & 1023) * 3 / 1024), and the union of the
     shards' rows equals ref's rows, per table; tenants is the same everywhere, audit_log
     only on shard 0.

Statements marked `-- KNOWN:` in the workload (pgshard bugs, reported) are skipped; with
PGS_DIFF_KNOWN=1 they run too, to check a fix. PGS_DIFF_WORKLOAD=FILE runs another workload
file of the same format (for a probe) in place of workload.sql.

The cluster, the reference database, the proxy's config and the loading helpers are shared
with t_scatter.py in diffcluster.py.

Runs under /usr/bin/python3 when the `python3` it was started with has no psycopg (CTest
starts it with the first python3 on PATH). Environment (set by CTest): PGS_CLUSTER_DIR (the
fixture cluster, read by pgwire; not used for the data), PGSHARD_BIN, PGS_SRC, PGS_WORK.
Prints one line per check and "N passed, M failed"; exits 1 when a check failed.
"""
import os
import sys

import need_psycopg  # noqa: E402,F401 (runs this test again under /usr/bin/python3 if need be)
import psycopg  # noqa: E402

import atexit
import collections
import datetime
import random
import re
import signal
import time
import traceback
from decimal import Decimal

os.environ["PGWIRE_TEST"] = "t_differential"
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pgwire  # noqa: E402
import diffcluster  # noqa: E402
from diffcluster import BUCKETS, SHARDS, TENANT_IDS, shard_of  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "data", "differential")
SEED = 20240611
# TENANT_IDS (diffcluster): workload.sql names them as literals.
SHARDED = ("users", "orders", "order_items")
PKEYS = {"tenants": "id", "users": "tenant_id, id", "orders": "tenant_id, id",
         "order_items": "tenant_id, order_id, line", "audit_log": "id"}
WORKLOAD = os.environ.get("PGS_DIFF_WORKLOAD") or os.path.join(DATA, "workload.sql")  # another for a probe
RUN_KNOWN = os.environ.get("PGS_DIFF_KNOWN") == "1"  # run the `-- KNOWN:` statements too (to check a fix)
WATCHDOG = 240  # the whole test; CTest's own limit is 300 s
CLUSTER = diffcluster.Cluster("differential-cluster")

report = pgwire.Report()


def log(msg):
    print(f"[t_differential] {msg}", flush=True)


# --------------------------------------------------------------------------- the data

def generate():
    """Every table's rows, from random.Random(SEED): {table: [tuple, ...]} in insertion order,
    the sharded tables' rows grouped per tenant."""
    rng = random.Random(SEED)
    first = ["Ada", "Alan", "Barbara", "Claude", "Dennis", "Edsger", "Frances", "Grace", "Guido", "Ken",
             "Linus", "Margaret", "Niklaus", "Radia", "Tony", "Whitfield"]
    plans = ["free", "pro", "enterprise"]
    regions = ["eu-west", "us-east", "ap-south"]
    statuses = ["new", "paid", "shipped", "cancelled"]
    t0 = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)
    data = {"tenants": [], "users": {}, "orders": {}, "order_items": {}, "audit_log": []}
    for t in TENANT_IDS:
        data["tenants"].append((t, f"Tenant {t}", rng.choice(plans), rng.choice(regions)))
        users, orders, items = [], [], []
        for i in range(1, rng.randint(3, 8) + 1):
            name = f"{rng.choice(first)} {chr(65 + rng.randrange(26))}."
            users.append((t, i, name, f"{name.split()[0].lower()}.{i}@t{t}.example",
                          datetime.date(2023, 1, 1) + datetime.timedelta(days=rng.randrange(500))))
        for j in range(1, rng.randint(4, 12) + 1):
            orders.append((t, j, rng.randint(1, len(users)), Decimal(rng.randint(100, 500000)).scaleb(-2),
                           rng.choice(statuses), t0 + datetime.timedelta(seconds=rng.randrange(180 * 86400))))
            for line in range(1, rng.randint(1, 4) + 1):
                items.append((t, j, line, f"SKU-{rng.randint(1, 30):03d}", rng.randint(1, 5),
                              Decimal(rng.randint(50, 20000)).scaleb(-2)))
        data["users"][t], data["orders"][t], data["order_items"][t] = users, orders, items
        for _ in range(rng.randint(1, 2)):
            data["audit_log"].append((t, rng.choice(["login", "export", "invite", "billing"]),
                                      t0 + datetime.timedelta(seconds=rng.randrange(180 * 86400))))
    return data


COLUMNS = {"tenants": "id, name, plan, region", "users": "tenant_id, id, name, email, created",
           "orders": "tenant_id, id, user_id, amount, status, created",
           "order_items": "tenant_id, order_id, line, sku, qty, price", "audit_log": "tenant_id, action, at"}


def insert_rows(conn, table, rows):
    diffcluster.insert_rows(conn, table, COLUMNS[table], rows)


# --------------------------------------------------------------------------- the workload

DIRECTIVE_NAMES = {"params", "unprepared", "binary", "refused", "proxy-only"}
EVAL_NAMES = {"Decimal": Decimal, "date": datetime.date, "datetime": datetime.datetime,
              "timedelta": datetime.timedelta, "timezone": datetime.timezone, "utc": datetime.timezone.utc}


class Stmt:
    def __init__(self, line, sql, directives, known):
        self.line = line
        self.sql = sql
        self.known = known
        self.params = None
        self.prepare = True
        self.binary = False
        self.refused = None
        self.proxy_only = False
        for name, arg in directives:
            if name == "params":
                self.params = eval(arg, {"__builtins__": {}}, dict(EVAL_NAMES))  # noqa: S307 - our own file
                if not isinstance(self.params, (tuple, list, dict)):
                    raise ValueError(f"workload line {line}: @params must be a tuple, list or dict")
            elif name == "unprepared":
                self.prepare = False
            elif name == "binary":
                self.binary = True
            elif name == "refused":
                self.refused = arg.strip()
            elif name == "proxy-only":
                self.proxy_only = True

    @property
    def verb(self):
        return self.sql.split(None, 1)[0].upper()

    def kind(self):
        v = self.verb
        if v in ("SELECT", "WITH", "TABLE", "VALUES"):
            return "read"
        if v in ("INSERT", "UPDATE", "DELETE"):
            return v.lower()
        if v in ("BEGIN", "START", "COMMIT", "END", "ROLLBACK", "SAVEPOINT", "RELEASE"):
            return "transaction control"
        return "other"

    def keyed(self):
        return re.search(r"\b(users|orders|order_items)\b", self.sql) is not None

    def short(self):
        s = " ".join(self.sql.split())
        return s if len(s) <= 110 else s[:107] + "..."


def parse_workload(path):
    """Statements end with ';' at the end of a line; `-- @name [arg]` lines before a statement
    are its directives, `-- KNOWN: why` marks it as skipped; other `--` lines are comments."""
    stmts, buf, directives, known, start = [], [], [], None, None
    with open(path) as f:
        for n, raw in enumerate(f, 1):
            line = raw.rstrip("\n")
            stripped = line.strip()
            if not buf and (not stripped or stripped.startswith("--")):
                if stripped.startswith("-- @"):
                    name, _, arg = stripped[4:].partition(" ")
                    if name not in DIRECTIVE_NAMES:
                        raise ValueError(f"{path}:{n}: unknown directive @{name}")
                    directives.append((name, arg))
                elif stripped.startswith("-- KNOWN:"):
                    known = stripped[len("-- KNOWN:"):].strip()
                continue
            if not buf:
                start = n
            buf.append(line)
            if stripped.endswith(";"):
                sql = "\n".join(buf).strip()[:-1].rstrip()
                stmts.append(Stmt(start, sql, directives, known))
                buf, directives, known = [], [], None
    if buf:
        raise ValueError(f"{path}: the statement at line {start} does not end with ';'")
    return stmts


def strip_parens(sql):
    prev = None
    while prev != sql:
        prev, sql = sql, re.sub(r"\([^()]*\)", "()", sql)
    return sql


def ordered(sql):
    """True when the statement's top level ends in ORDER BY (possibly with LIMIT/OFFSET)."""
    return re.search(r"\border\s+by\b", strip_parens(re.sub(r"'[^']*'", "''", sql)), re.I) is not None


def in_list_keys(sql):
    """The tenant ids of every `tenant_id IN (...)` of a statement, one list per IN."""
    out = []
    for m in re.finditer(r"tenant_id\s+IN\s*\(([^)]*)\)", sql, re.I):
        out.append([int(v) for v in re.findall(r"-?\d+", m.group(1))])
    return out


def run(conn, st):
    """('ok', status, rows or None) or ('error', sqlstate, message) or ('broken', message)."""
    try:
        cur = conn.cursor(binary=st.binary)
        if st.params is not None:
            cur.execute(st.sql, st.params, prepare=st.prepare)
        else:
            cur.execute(st.sql)
        rows = cur.fetchall() if cur.description is not None else None
        return ("ok", cur.statusmessage, rows)
    except psycopg.Error as e:
        if conn.closed or conn.broken:
            return ("broken", str(e).strip())
        return ("error", e.sqlstate, str(e).strip().splitlines()[0] if str(e).strip() else "")


def show(res, limit=1500):
    s = repr(res)
    return s if len(s) <= limit else s[:limit] + "..."


def normalized(res, keep_order):
    if res[0] == "ok" and res[2] is not None and not keep_order:
        return (res[0], res[1], sorted(res[2], key=repr))
    if res[0] == "error":
        return (res[0], res[1])  # the SQLSTATE, not the wording
    return res


# --------------------------------------------------------------------------- the test

def main():
    diffcluster.install_watchdog(WATCHDOG)
    atexit.register(CLUSTER.stop)
    began = time.monotonic()

    log(f"starting a cluster of its own: {SHARDS} shards, no replicas")
    CLUSTER.start()
    CLUSTER.create_ref()
    report(True, "cluster", f"{SHARDS} shards up in {time.monotonic() - began:.1f} s, database ref on shard 0")

    connect = CLUSTER.connect

    with open(os.path.join(DATA, "schema.sql")) as f:
        schema = f.read()
    shards = CLUSTER.shard_conns()
    ref = CLUSTER.ref_conn()
    for c in shards + [ref]:
        c.execute(schema)

    data = generate()
    for c in shards + [ref]:
        insert_rows(c, "tenants", data["tenants"])

    proxy = None
    pconn = None
    try:
        proxy = CLUSTER.proxy(sharded=SHARDED, omnisharded=("tenants",), workers=2, pool_size=4,
                              query_wait_timeout=30)
        pconn = connect(proxy.port)

        tmap = shard_of(ref, TENANT_IDS)
        per_shard = collections.Counter(tmap.values())
        report(all(per_shard[k] > 0 for k in range(SHARDS)), "tenants",
               f"{len(TENANT_IDS)} tenants, per shard {[per_shard[k] for k in range(SHARDS)]}")

        # The data: the sharded tables through pgshard, one statement per tenant and table.
        t_load = time.monotonic()
        nrows = collections.Counter()
        load_err = None
        for t in TENANT_IDS:
            for table in SHARDED:
                rows = data[table][t]
                for c in (pconn, ref):
                    try:
                        insert_rows(c, table, rows)
                    except psycopg.Error as e:
                        load_err = load_err or f"{table} of tenant {t} via {'pgshard' if c is pconn else 'ref'}: {e}"
                nrows[table] += len(rows)
        for c in (pconn, ref):
            try:
                insert_rows(c, "audit_log", data["audit_log"])
            except psycopg.Error as e:
                load_err = load_err or f"audit_log via {'pgshard' if c is pconn else 'ref'}: {e}"
        nrows["audit_log"] = len(data["audit_log"])
        report(load_err is None, "load",
               load_err or f"{dict(nrows)} rows through pgshard and into ref in {time.monotonic() - t_load:.1f} s")

        # The workload.
        stmts = parse_workload(WORKLOAD)
        kinds = collections.Counter()
        t_work = time.monotonic()
        for st in stmts:
            where = f"{os.path.basename(WORKLOAD)}:{st.line}"
            if st.known and not RUN_KNOWN:
                print(f"skip {where}: KNOWN: {st.known}: {st.short()}", flush=True)
                continue
            kinds[st.kind()] += 1
            if st.keyed():
                kinds["keyed"] += 1
            if st.params is not None:
                kinds["with parameters" + (" (prepared)" if st.prepare else " (unnamed)")] += 1
            if st.binary:
                kinds["binary results"] += 1
            ins = in_list_keys(st.sql)
            if st.refused or st.proxy_only:
                kinds["refused" if st.refused else "proxy only"] += 1
                if st.refused and ins and all(len({tmap.get(k) for k in keys}) == 1 for keys in ins):
                    report(False, where, f"the test is wrong: the IN list of a refused statement is on one shard: "
                                         f"{st.short()}")
                    continue
                got = run(pconn, st)
                if st.refused:
                    ok = got[0] == "error" and got[1] == st.refused
                    detail = f"expected SQLSTATE {st.refused} through pgshard: {st.short()}\n  pgshard: {show(got)}"
                    if not ok and got[0] == "ok" and st.kind() != "transaction control" and \
                            ref.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
                        ref.execute("BEGIN")  # what PostgreSQL answers, for the report; nothing kept
                        detail += f"\n  ref:     {show(run(ref, st))} (rolled back)"
                        ref.execute("ROLLBACK")
                    report(ok, where, f"refused with {st.refused}: {st.short()}" if ok else detail)
                else:
                    report(got[0] == "ok", where, f"pgshard only: {st.short()}" +
                           ("" if got[0] == "ok" else f"\n  pgshard: {show(got)}"))
            else:
                if ins:
                    kinds["IN list"] += 1
                # A read may span shards (it runs on every shard and is merged); a write may not.
                bad = [keys for keys in ins if len({tmap.get(k) for k in keys}) != 1 and st.kind() != "read"]
                if bad:
                    report(False, where, f"the test is wrong: an IN list spans shards {bad}: {st.short()}")
                    continue
                keep = ordered(st.sql)
                got, want = run(pconn, st), run(ref, st)
                ok = normalized(got, keep) == normalized(want, keep)
                if ok:
                    what = want[1] if want[0] == "ok" else f"both fail with {want[1]}"
                    nr = f", {len(want[2])} rows" if want[0] == "ok" and want[2] is not None else ""
                    report(True, where, f"{what}{nr}: {st.short()}")
                else:
                    report(False, where, f"pgshard and ref differ{' (ordered)' if keep else ''}:\n"
                                         f"  statement: {' '.join(st.sql.split())}\n"
                                         f"  params:    {st.params!r}\n"
                                         f"  pgshard:   {show(got)}\n  ref:       {show(want)}")
            if got[0] == "broken":
                pconn = connect(proxy.port)
                ref.execute("ROLLBACK")
            elif pconn.info.transaction_status != ref.info.transaction_status and not st.proxy_only \
                    and not st.refused:
                # Keep one difference from spilling into the statements after it.
                print(f"note {where}: transaction states differ (pgshard {pconn.info.transaction_status.name}, "
                      f"ref {ref.info.transaction_status.name}): both rolled back", flush=True)
                pconn.execute("ROLLBACK")
                ref.execute("ROLLBACK")
        log(f"workload: {len(stmts)} statements in {time.monotonic() - t_work:.1f} s; by kind: "
            + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())))
        pconn.close()
        pconn = None

        # Where the rows are, straight on each shard.
        for table in SHARDED:
            for k, c in enumerate(shards):
                wrong = c.execute(f"SELECT count(*) FROM {table} WHERE (hashint8extended(tenant_id, 0) & %s) * %s "
                                  f"/ %s <> %s", (BUCKETS - 1, SHARDS, BUCKETS, k)).fetchone()[0]
                n = c.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                report(wrong == 0 and n > 0, f"placement {table} shard {k}",
                       f"{n} rows, {wrong} on a shard the map does not name")
            union = []
            for c in shards:
                union += c.execute(f"SELECT * FROM {table}").fetchall()
            want = ref.execute(f"SELECT * FROM {table}").fetchall()
            same = sorted(union, key=repr) == sorted(want, key=repr)
            detail = f"{len(union)} rows over the shards, {len(want)} in ref"
            if not same:
                a, b = set(map(repr, union)), set(map(repr, want))
                detail += f"; only on the shards: {sorted(a - b)[:5]}; only in ref: {sorted(b - a)[:5]}"
            report(same and len(union) == len(want), f"contents {table}", detail)
        want = ref.execute("SELECT * FROM tenants ORDER BY id").fetchall()
        for k, c in enumerate(shards):
            got = c.execute("SELECT * FROM tenants ORDER BY id").fetchall()
            report(got == want, f"contents tenants shard {k}", f"{len(got)} rows, the same as ref's: {got == want}")
        want = ref.execute("SELECT * FROM audit_log ORDER BY id").fetchall()
        for k, c in enumerate(shards):
            got = c.execute("SELECT * FROM audit_log ORDER BY id").fetchall()
            exp = want if k == 0 else []
            report(got == exp, f"contents audit_log shard {k}",
                   f"{len(got)} rows, {'the same as ref' if k == 0 else 'none expected'}: {got == exp}")
    finally:
        signal.alarm(0)
        for c in [pconn, ref] + shards:
            if c is not None:
                c.close()
        if proxy is not None:
            try:
                proxy.stop()
                report(True, "proxy stop", "pgshard exited 0 on SIGTERM")
            except AssertionError as e:
                report(False, "proxy stop", str(e))
        CLUSTER.stop()
    log(f"done in {time.monotonic() - began:.1f} s")
    return report.summary()


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (Exception, SystemExit) as e:  # noqa: B902 - the cluster must stop whatever happened
        if isinstance(e, SystemExit) and isinstance(e.code, int):
            raise
        traceback.print_exc()
        CLUSTER.stop()
        report(False, "t_differential", f"{type(e).__name__}: {e}")
        sys.exit(report.summary() or 1)

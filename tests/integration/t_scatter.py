#!/usr/bin/env python3
"""Scatter-gather differential test: keyless reads of sharded tables, through pgshard over 3
shards, must give what one plain PostgreSQL database gives for the same rows; the shapes
pgshard cannot merge exactly must be refused with SQLSTATE 0A000 and change nothing. The
sibling of t_differential.py (which covers keyed statements), sharing its cluster code
(diffcluster.py).

On a cluster of its own (3 shards, no replicas, stopped at exit) it
  1. creates data/scatter/schema.sql on every shard and in a reference database `ref`;
  2. loads 60 tenants generated from random.Random(SEED): the omnisharded `tenants` rows
     straight into every shard, items and events THROUGH pgshard (multi-row INSERTs of one
     tenant's rows, every value a bind parameter) and the same rows into `ref`;
  3. runs every statement of data/scatter/queries.sql (its header says how it is written) in
     each protocol mode of MODES, through pgshard and against `ref`, and compares the column
     names and types, the command status and the rows: as multisets without a top-level
     ORDER BY; with one, the sequence of the sort keys and the multiset of the rows; with
     LIMIT/OFFSET where ties may cut differently, the sort keys and that every row returned
     is one of ref's rows without the LIMIT. Floats compare with a relative tolerance of
     1e-12 (sums add in another order), numerics exactly, scale included. `@refused`
     statements must fail with their SQLSTATE through pgshard; after each, every shard's
     tables must be what they were (count and a hash of the rows, per shard);
  4. streams `SELECT ... FROM big ORDER BY v` (1,000,000 rows generated on the shards'
     primaries) through pgshard on a raw socket, row by row, checking the order and the
     count, and samples pgshard's VmRSS/VmHWM: the peak must stay below 64 MB above what it
     was before the query.

PGS_SCATTER_SELFTEST=1 points the "pgshard side" at `ref` itself (a second connection), to
prove the corpus and the comparisons: every compared statement must pass; the refused ones
then run in a transaction that is rolled back and are reported apart, not counted. The
selftest runs every mode of ALL_MODES. PGS_SCATTER_MODES=simple,extended,binary picks the
modes; PGS_SCATTER_QUERIES=FILE runs another corpus of the same format; PGS_SCATTER_KNOWN=1
runs the statements marked `-- KNOWN:` too.

Runs under /usr/bin/python3 when the `python3` it was started with has no psycopg. Environment
(set by CTest): PGS_CLUSTER_DIR (the fixture cluster, read by pgwire; not used for the data),
PGSHARD_BIN, PGS_SRC, PGS_WORK. Prints one line per failed check (PGS_SCATTER_VERBOSE=1: per
check), "N passed, M failed" and the time it took; exits 1 when a check failed.

Run it alone: make build BUILD=build-st && cd build-st &&
  ctest -R "cluster_start|t_scatter|cluster_stop" --output-on-failure
(the output is in build-st/Testing/Temporary/LastTest.log; PGS_SCATTER_SELFTEST=1 in front of
ctest for the selftest).
"""
import os
import sys

import need_psycopg  # noqa: E402,F401 (runs this test again under /usr/bin/python3 if need be)
import psycopg  # noqa: E402

import atexit
import collections
import datetime
import math
import random
import re
import signal
import struct
import threading
import time
import traceback
import uuid
from decimal import Decimal

os.environ["PGWIRE_TEST"] = "t_scatter"
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pgwire  # noqa: E402
import diffcluster  # noqa: E402
from diffcluster import SHARDS, TENANT_IDS, shard_of  # noqa: E402

# The protocol modes the corpus runs in, in this order:
#   simple    the simple query protocol, text results (psycopg ClientCursor): must pass first
#   extended  the extended protocol (unnamed statement: Parse, Bind, Describe, Execute, Sync),
#             text results (libpq's PQexecParams, psycopg's loaders; with @params a psycopg
#             Cursor)
#   binary    the same with binary results
ALL_MODES = ["simple", "extended", "binary"]
MODES = [
    "simple",
    "extended",
    "binary",
]

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "data", "scatter")
SEED = 20261206
QUERIES = os.environ.get("PGS_SCATTER_QUERIES") or os.path.join(DATA, "queries.sql")
SELFTEST = os.environ.get("PGS_SCATTER_SELFTEST") == "1"
RUN_KNOWN = os.environ.get("PGS_SCATTER_KNOWN") == "1"
VERBOSE = os.environ.get("PGS_SCATTER_VERBOSE") == "1"
if os.environ.get("PGS_SCATTER_MODES"):
    MODES = [m.strip() for m in os.environ["PGS_SCATTER_MODES"].split(",") if m.strip()]
elif SELFTEST:
    MODES = list(ALL_MODES)
for _m in MODES:
    if _m not in ALL_MODES:
        sys.exit(f"t_scatter: unknown mode {_m!r} (one of {ALL_MODES})")
SHARDED = ("items", "events", "big")
FLOAT_RTOL = 1e-12
BIG_ROWS = 1_000_000
BIG_RSS_LIMIT = 64 << 20  # bytes above pgshard's RSS before the query
WATCHDOG = 280  # the whole test; CTest's own limit is 300 s
CLUSTER = diffcluster.Cluster("scatter-cluster")


class Report(pgwire.Report):
    """Counts checks; prints the failures (and with PGS_SCATTER_VERBOSE=1 the passes)."""

    def __call__(self, ok, name, detail, always=False):
        if ok:
            self.passed += 1
            if VERBOSE or always:
                print(f"ok   {name}: {detail}", flush=True)
        else:
            self.failed += 1
            print(f"FAIL {name}: {detail}", flush=True)

    def info(self, name, detail):
        print(f"ok   {name}: {detail}", flush=True)
        self.passed += 1


report = Report()


def log(msg):
    print(f"[t_scatter] {msg}", flush=True)


# --------------------------------------------------------------------------- the data

GROUPS = ["alpha", "beta", "gamma", "delta", "epsilon"]
# items.cc (COLLATE "C"): words whose byte order differs from a linguistic one (case, accents,
# punctuation, spaces).
C_WORDS = ["apple", "Apple", "APPLE", "éclair", "Eclair", "eclair", "_under", "-dash", "zebra", "Zebra",
           "ähnlich", "b", "B", "a b", "a-b", "ab", "Ab", "", "Ω", "1a", "10", "9"]
WORDS = ["é", "e", "E", "ß", "ss", "日本", "日本語", "😀", "😀x", "z", "Z", "", "apple", "Apple", "naïve",
         "Ωmega", "a b", "ａ", "Ärger", "zebra", "Zürich", "ñ", "n", "ﬁ", "fi"]
INTERVALS = ["1 mon", "30 days", "1 day", "24:00:00", "23:59:59", "-1 day", "1 year 2 mons", "00:00:00.000001",
             "720:00:00", "-00:00:01", "3 days 04:05:06", "0"]
FX_SPECIAL = ["NaN", "Infinity", "-Infinity", "1e300", "-1e300", "1e-300", "-1e-300", "0"]
NX_SPECIAL = ["NaN", "Infinity", "-Infinity", "1e30", "-1e30", "0.000000000000000000001", "-0.5", "0", "0.00"]
TZ_OFFSETS = ["+00", "-08", "+05:30", "+14", "-12", "+01"]


def maybe(rng, v, p=0.08):
    """v, or None (SQL NULL) with probability p."""
    return None if rng.random() < p else v


def generate():
    """Every table's rows, from random.Random(SEED): {table: rows} with the sharded tables'
    rows grouped per tenant. Values other than keys and ids are strings (or None) that the
    server parses as the column's type."""
    rng = random.Random(SEED)
    crng = random.Random(SEED + 1)  # cc's own, so that the other columns keep their values
    plans = ["free", "pro", "enterprise"]
    regions = ["eu-west", "us-east", "ap-south", None]
    data = {"tenants": [], "items": {}, "events": {}}
    for t in TENANT_IDS:
        data["tenants"].append((t, f"Tenant {t}", rng.choice(plans), rng.choice(regions),
                                rng.choice(["true", "false", None])))
        items, events = [], []
        nitems = rng.randint(20, 70)
        for i in range(1, nitems + 1):
            r = rng.random()
            i2 = str(rng.choice([-32768, 32767])) if r < 0.01 else str(rng.randint(-5, 5))
            i4 = str(rng.choice([-2147483648, 2147483647])) if r < 0.02 else str(rng.randint(-1000, 1000))
            i8 = str(rng.choice([-9223372036854775808, 9223372036854775807])) if r < 0.02 else \
                str(rng.randint(-10 ** 12, 10 ** 12))
            n = str(Decimal(rng.randint(-10 ** 6, 10 ** 6)).scaleb(-rng.choice([0, 1, 2, 3, 5])))
            if rng.random() < 0.05:
                n = rng.choice(["1.5", "1.50", "1.500", "-2", "-2.0"])
            n2 = str(Decimal(rng.randint(0, 10 ** 7)).scaleb(-2))
            nx = rng.choice(NX_SPECIAL) if rng.random() < 0.15 else str(Decimal(rng.randint(-999, 999)).scaleb(-1))
            f8 = repr(round(rng.uniform(-1000, 100000), rng.choice([0, 2, 6, 12])))
            fx = rng.choice(FX_SPECIAL) if rng.random() < 0.2 else repr(rng.uniform(-1, 1) * 10 ** rng.randint(-5, 5))
            b = rng.choice(["true", "false"])
            d = (datetime.date(2020, 1, 1) + datetime.timedelta(days=rng.randrange(1500))).isoformat()
            if rng.random() < 0.02:
                d = rng.choice(["0001-01-01", "9999-12-31"])
            sec = rng.randrange(86400)
            tm = f"{sec // 3600:02d}:{sec // 60 % 60:02d}:{sec % 60:02d}" + \
                (f".{rng.randrange(10 ** 6):06d}" if rng.random() < 0.3 else "")
            ts = (datetime.datetime(2024, 1, 1) + datetime.timedelta(seconds=rng.randrange(400 * 86400),
                                                                     microseconds=rng.choice([0, 0, 1, 500000])))
            tz = (datetime.datetime(2024, 1, 1) + datetime.timedelta(seconds=rng.randrange(400 * 86400)))
            tz = tz.isoformat(" ") + rng.choice(TZ_OFFSETS)
            iv = rng.choice(INTERVALS) if rng.random() < 0.5 else f"{rng.randint(-50, 50)} hours"
            u = str(uuid.UUID(int=rng.getrandbits(128)))
            if rng.random() < 0.05:
                u = rng.choice(["00000000-0000-0000-0000-000000000000", "ffffffff-ffff-ffff-ffff-ffffffffffff"])
            w = rng.choice(WORDS)
            tx = w if rng.random() < 0.5 else f"{w}{rng.randint(0, 99)}"
            vc = rng.choice(WORDS)[:4] + str(rng.randint(0, 9))
            bn = "\\x" + bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 4))).hex()
            items.append((t, i, maybe(rng, rng.choice(GROUPS)), maybe(rng, i2), maybe(rng, i4), maybe(rng, i8),
                          maybe(rng, n), maybe(rng, n2), maybe(rng, nx), maybe(rng, f8), maybe(rng, fx),
                          maybe(rng, b), maybe(rng, d), maybe(rng, tm), maybe(rng, ts.isoformat(" ")),
                          maybe(rng, tz), maybe(rng, iv), maybe(rng, u), maybe(rng, tx), maybe(rng, vc),
                          maybe(rng, bn), maybe(crng, crng.choice(C_WORDS))))
        for j in range(1, rng.randint(5, 30) + 1):
            at = datetime.datetime(2024, 6, 1) + datetime.timedelta(seconds=rng.randrange(90 * 86400))
            events.append((t, j, rng.randint(1, nitems + 3), maybe(rng, rng.choice(["view", "buy", "refund"])),
                           maybe(rng, str(rng.randint(1, 10))), maybe(rng, str(Decimal(rng.randint(0, 99999)).scaleb(-2))),
                           maybe(rng, at.isoformat(" ") + "+00")))
        data["items"][t], data["events"][t] = items, events
    return data


COLUMNS = {"tenants": "id, name, plan, region, active",
           "items": "tenant_id, id, grp, i2, i4, i8, n, n2, nx, f8, fx, b, d, tm, ts, tz, iv, u, tx, vc, bin, cc",
           "events": "tenant_id, id, item_id, kind, qty, amount, at"}


def insert_rows(conn, table, rows):
    # At most 50 rows a statement: pgshard reads the keys of 64 VALUES rows at most
    # (PRS_MAX_KEYS) and refuses a longer INSERT, saying a row has no key.
    for i in range(0, len(rows), 50):
        diffcluster.insert_rows(conn, table, COLUMNS[table], rows[i:i + 50])


def fingerprint(conn):
    """(count, hash sum) of every table on one database: what a refused statement must not
    change."""
    out = []
    for t in ("tenants", "items", "events"):
        out.append(conn.execute(f"SELECT count(*), coalesce(sum(hashtext(x::text)::bigint), 0) FROM {t} x").fetchone())
    return tuple(out)


# --------------------------------------------------------------------------- the corpus

DIRECTIVE_NAMES = {"refused", "order", "params", "modes", "fails"}


class Stmt:
    def __init__(self, line, sql, directives, known):
        self.line = line
        self.sql = sql
        self.known = known
        self.refused = None
        self.fails = None
        self.order = None  # None: from the ORDER BY; "all": total order; [column index, ...]
        self.params = None
        self.modes = list(ALL_MODES)
        for name, arg in directives:
            arg = arg.strip()
            if name == "refused":
                self.refused = arg
            elif name == "fails":
                self.fails = arg
            elif name == "order":
                self.order = "all" if arg == "all" else [int(c) - 1 for c in arg.split(",")]
            elif name == "params":
                self.params = eval(arg, {"__builtins__": {}}, {"Decimal": Decimal})  # noqa: S307 - our own file
            elif name == "modes":
                self.modes = [m.strip() for m in arg.split(",")]
                for m in self.modes:
                    if m not in ALL_MODES:
                        raise ValueError(f"line {line}: unknown mode {m!r}")

    def short(self, n=140):
        s = " ".join(self.sql.split())
        return s if len(s) <= n else s[:n - 3] + "..."


def parse_corpus(path):
    """Statements end with ';' at the end of a line; `-- @name [arg]` lines before a statement
    are its directives, `-- KNOWN: why` skips it; other `--` lines are comments."""
    stmts, buf, directives, known, start = [], [], [], None, None
    with open(path, encoding="utf-8") as f:
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


def top_level(sql):
    """The statement with string literals emptied and parenthesized parts collapsed to ()."""
    s = re.sub(r"'(?:[^']|'')*'", "''", sql)
    prev = None
    while prev != s:
        prev, s = s, re.sub(r"\([^()]*\)", "()", s)
    return s


def order_items(sql):
    """The top-level ORDER BY items (text), or None without a top-level ORDER BY."""
    s = top_level(sql)
    m = list(re.finditer(r"\border\s+by\b", s, re.I))
    if not m:
        return None
    tail = s[m[-1].end():]
    tail = re.split(r"\b(?:limit|offset|fetch|for)\b", tail, flags=re.I)[0]
    return [i.strip() for i in tail.split(",") if i.strip()]


def has_limit(sql):
    return re.search(r"\b(limit|offset)\b", top_level(sql), re.I) is not None


def without_limit(sql):
    """The statement without its trailing LIMIT/OFFSET (which the corpus writes last)."""
    return re.sub(r"(\s+(limit\s+(\d+|all|%s)|offset\s+(\d+|%s)(\s+rows?)?))+\s*$", "", sql, flags=re.I)


def without_limit_params(params, sql, full_sql):
    """The bind parameters of full_sql (without_limit(sql)): those of its LIMIT and OFFSET
    placeholders, the last ones, dropped."""
    n = sql.count("%s") - full_sql.count("%s")
    return params[:len(params) - n] if params is not None and n else params


def sort_columns(st, desc):
    """The output columns holding the ORDER BY keys, "all", or None when the test cannot tell
    (then the statement needs an @order)."""
    if st.order is not None:
        return st.order
    items = order_items(st.sql)
    names = [d[0] for d in desc]
    cols = []
    for it in items:
        e = re.sub(r"\s+(asc|desc)\b|\s+nulls\s+(first|last)\b", "", it, flags=re.I).strip()
        if re.fullmatch(r"\d+", e):
            cols.append(int(e) - 1)
        elif re.fullmatch(r"[A-Za-z_][A-Za-z_0-9]*|\"[^\"]+\"", e):
            name = e[1:-1] if e.startswith('"') else e.lower()
            if names.count(name) != 1:
                return None
            cols.append(names.index(name))
        else:
            return None
    return cols


# --------------------------------------------------------------------------- comparing

def canon(v):
    """A sortable, hashable stand-in for a value: equal values (within the float tolerance,
    mostly) get the same one."""
    if v is None:
        return ("0", "")
    if isinstance(v, float):
        return ("f", "nan" if math.isnan(v) else format(v, ".8e"))
    if isinstance(v, Decimal):
        return ("n", str(v))
    if isinstance(v, datetime.datetime) and v.tzinfo is not None:
        return ("tz", v.astimezone(datetime.timezone.utc).isoformat())
    return (type(v).__name__, repr(v))


def row_canon(r):
    return tuple(canon(v) for v in r)


def veq(a, b):
    """Equal as a result value: floats within FLOAT_RTOL, numerics with their scale."""
    if a is None or b is None:
        return a is None and b is None
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        if math.isinf(a) or math.isinf(b):
            return a == b
        return abs(a - b) <= FLOAT_RTOL * max(abs(a), abs(b))
    if isinstance(a, Decimal):
        return str(a) == str(b)
    return a == b


def keq(a, b):
    """Equal as a sort key: numerics by value (1.5 ties with 1.50), NaN with NaN."""
    if isinstance(a, Decimal) and isinstance(b, Decimal):
        if a.is_nan() or b.is_nan():
            return a.is_nan() and b.is_nan()
        return a == b
    return veq(a, b)


def rows_eq(a, b):
    return len(a) == len(b) and all(veq(x, y) for x, y in zip(a, b))


def contained(got, want):
    """Every row of got matches a distinct row of want (None) or the first that does not."""
    pool = collections.defaultdict(list)
    for r in want:
        pool[row_canon(r)].append(r)
    rest = None
    for g in got:
        lst = pool.get(row_canon(g), [])
        for i, w in enumerate(lst):
            if rows_eq(g, w):
                del lst[i]
                break
        else:
            if rest is None:
                rest = [w for lst2 in pool.values() for w in lst2]
            for i, w in enumerate(rest):
                if rows_eq(g, w):
                    del rest[i]
                    break
            else:
                return g
    return None


def multiset_eq(a, b):
    if len(a) != len(b):
        return False
    sa, sb = sorted(a, key=row_canon), sorted(b, key=row_canon)
    if all(rows_eq(x, y) for x, y in zip(sa, sb)):
        return True
    return len(a) <= 5000 and contained(a, b) is None


def keys_eq(a, b, cols):
    return len(a) == len(b) and all(all(keq(x[c], y[c]) for c in cols) for x, y in zip(a, b))


def show(v, limit=600):
    s = repr(v)
    return s if len(s) <= limit else s[:limit] + f"... ({len(s)} chars)"


def first_diff(a, b):
    for i, (x, y) in enumerate(zip(a, b)):
        if not rows_eq(x, y):
            return f"row {i}: pgshard {show(x, 300)} ref {show(y, 300)}"
    return f"pgshard {len(a)} rows, ref {len(b)} rows"


# --------------------------------------------------------------------------- running

def run(conn, sql, mode, params=None):
    """('ok', status, [(name, type oid)], rows) or ('error', sqlstate, message) or
    ('broken', message)."""
    try:
        if mode == "simple":
            cur = psycopg.ClientCursor(conn)
            cur.execute(sql, params)
        elif params is not None:
            cur = conn.cursor(binary=(mode == "binary"))
            cur.execute(sql, params)
        else:
            return run_extended(conn, sql, mode == "binary")
        if cur.description is None:
            return ("ok", cur.statusmessage, None, None, None)
        rows = cur.fetchall()
        desc = [(d.name, d.type_code) for d in cur.description]
        return ("ok", cur.statusmessage, desc, rows, raw_rows(cur.pgresult, rows) if mode != "binary" else None)
    except psycopg.Error as e:
        if conn.closed or conn.broken:
            return ("broken", str(e).strip())
        return ("error", e.sqlstate, str(e).strip().splitlines()[0] if str(e).strip() else "")


def run_extended(conn, sql, binary):
    """A statement without parameters through the extended protocol (PQexecParams: Parse,
    Bind, Describe, Execute, Sync of the unnamed statement), which psycopg's cursors would
    send as a simple Query; the rows loaded by psycopg's own loaders."""
    pq = psycopg.pq
    res = conn.pgconn.exec_params(sql.encode(), [], result_format=pq.Format.BINARY if binary else pq.Format.TEXT)
    if res.status == pq.ExecStatus.FATAL_ERROR:
        if conn.pgconn.status != pq.ConnStatus.OK:
            return ("broken", (res.error_message or b"").decode(errors="replace").strip())
        code = (res.error_field(pq.DiagnosticField.SQLSTATE) or b"").decode()
        msg = (res.error_field(pq.DiagnosticField.MESSAGE_PRIMARY) or b"").decode(errors="replace")
        return ("error", code, msg)
    status = (res.command_status or b"").decode()
    if res.status != pq.ExecStatus.TUPLES_OK:
        return ("ok", status, None, None, None)
    tx = psycopg.adapt.Transformer(conn)
    tx.set_pgresult(res)
    rows = tx.load_rows(0, res.ntuples, tuple)
    desc = [(res.fname(i).decode(), res.ftype(i)) for i in range(res.nfields)]
    return ("ok", status, desc, rows, None if binary else raw_rows(res, rows))


FLOAT_OIDS = (700, 701)


def raw_rows(res, rows):
    """The rows as the server wrote them (text results): each value's text as bytes, but
    floats as loaded (they compare with a tolerance). So the display counts too: 1.50 is
    not 1.5, '1 mon' is not '30 days', an offset is not another."""
    floats = [res.ftype(j) in FLOAT_OIDS for j in range(res.nfields)]
    return [tuple(r[j] if floats[j] else res.get_value(i, j) for j in range(res.nfields))
            for i, r in enumerate(rows)]


def exact(res):
    """The rows to compare whole: as the server wrote them when known, else as loaded."""
    return res[4] if len(res) > 4 and res[4] is not None else res[3]


def compare(st, got, want, full_fn):
    """None when got (pgshard) is right given want (ref), else why not. full_fn(sql) runs a
    statement on ref (the statement without its LIMIT/OFFSET)."""
    if got[0] != "ok":
        return f"pgshard: {show(got)}"
    if got[2] != want[2]:
        return f"columns differ: pgshard {got[2]} ref {want[2]}"
    if got[1] != want[1]:
        return f"command status differs: pgshard {got[1]!r} ref {want[1]!r}"
    g, w = exact(got), exact(want)  # whole rows
    gv, wv = got[3], want[3]  # loaded values, for the sort keys
    if g is None or w is None:
        return None if g == w else f"rows: pgshard {show(g)} ref {show(w)}"
    limited = has_limit(st.sql)
    if order_items(st.sql) is None:
        if not limited:
            return None if multiset_eq(g, w) else f"different rows (as multisets): {first_diff(sorted(g, key=row_canon), sorted(w, key=row_canon))}"
    else:
        cols = sort_columns(st, got[2])
        if cols is None:
            return "the test is wrong: it cannot tell the sort key from the ORDER BY: add an @order"
        if cols == "all":
            if len(g) == len(w) and all(rows_eq(x, y) for x, y in zip(g, w)):
                return None
            return f"different rows (total order): {first_diff(g, w)}"
        if not keys_eq(gv, wv, cols):
            return f"different sort keys (columns {[c + 1 for c in cols]}): " + \
                first_diff([[r[c] for c in cols] for r in gv], [[r[c] for c in cols] for r in wv])
        if multiset_eq(g, w):
            return None
        if not limited:
            return f"same sort keys, different rows (as multisets): {first_diff(sorted(g, key=row_canon), sorted(w, key=row_canon))}"
    # LIMIT/OFFSET: ties at the boundary (or no ORDER BY) may pick other rows of ref's full result.
    full_sql = without_limit(st.sql)
    if full_sql == st.sql:
        return "the test is wrong: the LIMIT/OFFSET is not at the end of the statement"
    full = full_fn(full_sql)
    if full[0] != "ok":
        return f"ref without LIMIT failed: {show(full)}"
    if len(g) != len(w):
        return f"pgshard {len(g)} rows, ref {len(w)}"
    bad = contained(g, exact(full))
    return None if bad is None else f"a row that is not in ref's result without LIMIT: {show(bad)}"


def check_comparator():
    """The selftest compares ref with itself, which proves the corpus but not that compare()
    sees a difference: here it must see every one of these, and accept the allowed ones."""
    D, F = Decimal, float

    def st(sql, order=None):
        s = Stmt(0, sql, [("order", order)] if order else [], None)
        return s

    desc = [("k", 23), ("v", 1700)]
    base = [(1, D("1.50")), (2, D("2")), (2, D("3")), (3, None)]
    ok = lambda rows, d=desc, tag="SELECT 4": ("ok", tag, d, rows)  # noqa: E731
    no_full = lambda sql: ok(base)  # noqa: E731
    cases = [
        # (statement, pgshard rows, ref rows, full result for LIMIT, should pass, what)
        ("SELECT k, v FROM t", list(reversed(base)), base, None, True, "a multiset in another order"),
        ("SELECT k, v FROM t", base[:3] + [(3, D("0"))], base, None, False, "a NULL became 0"),
        ("SELECT k, v FROM t", [(1, D("1.5"))] + base[1:], base, None, False, "1.5 for 1.50"),
        ("SELECT k, v FROM t", base[:3] + [(2, D("3"))], base, None, False, "a duplicated row for another"),
        ("SELECT k, v FROM t ORDER BY k", [base[0], base[2], base[1], base[3]], base, None, True, "ties swapped"),
        ("SELECT k, v FROM t ORDER BY k", [base[1], base[0], base[2], base[3]], base, None, False, "keys out of order"),
        ("SELECT k, v FROM t ORDER BY k DESC", base[:3] + [(3, D("9"))], base, None, False,
         "same keys, another row"),
        ("SELECT k, v FROM t ORDER BY k", [base[0], base[2], base[1], base[3]], base, "all", False,
         "ties swapped under a total order"),
        ("SELECT k, v FROM t ORDER BY k LIMIT 2", [base[0], base[2]], [base[0], base[1]], base, True,
         "another row of the tie at the LIMIT"),
        ("SELECT k, v FROM t ORDER BY k LIMIT 2", [base[0], (2, D("7"))], [base[0], base[1]], base, False,
         "a row that is not ref's at the LIMIT"),
        ("SELECT k, v FROM t LIMIT 2", [base[3], base[2]], [base[0], base[1]], base, True, "any 2 rows without ORDER BY"),
        ("SELECT k, v FROM t LIMIT 2", [base[3]], [base[0], base[1]], base, False, "too few rows"),
    ]
    fails = 0
    for sql, g, w, full, should, what in cases:
        order = None
        if full == "all":
            order, full = "all", None
        s = st(sql, order)
        tag_g, tag_w = f"SELECT {len(g)}", f"SELECT {len(w)}"
        why = compare(s, ok(g, tag=tag_g), ok(w, tag=tag_w), (lambda sql, f=full: ok(f)) if full else no_full)
        if (why is None) != should:
            fails += 1
            print(f"FAIL comparator: {what}: {'rejected' if should else 'accepted'} ({why})", flush=True)
    fdesc = [("s", 701)]
    for g, w, should, what in [(1.0, 1.0 + 1e-13, True, "floats within 1e-12"), (1.0, 1.0 + 1e-9, False, "floats 1e-9 apart"),
                               (F("nan"), F("nan"), True, "NaN and NaN"), (F("inf"), 1e308, False, "Infinity and 1e308")]:
        why = compare(st("SELECT s"), ("ok", "SELECT 1", fdesc, [(g,)]), ("ok", "SELECT 1", fdesc, [(w,)]), no_full)
        if (why is None) != should:
            fails += 1
            print(f"FAIL comparator: {what}: {'rejected' if should else 'accepted'} ({why})", flush=True)
    for what, g in [("another column type", ("ok", "SELECT 4", [("k", 20), ("v", 1700)], base)),
                    ("another column name", ("ok", "SELECT 4", [("x", 23), ("v", 1700)], base)),
                    ("another command status", ("ok", "SELECT 3", desc, base)),
                    ("an error", ("error", "0A000", "refused"))]:
        if compare(st("SELECT k, v FROM t"), g, ok(base), no_full) is None:
            fails += 1
            print(f"FAIL comparator: {what} accepted", flush=True)
    td = datetime.timedelta(days=30)
    idesc = [("iv", 1186)]
    for sql, g, w, should, what in [
            ("SELECT iv", [b"1 mon"], [b"30 days"], False, "'1 mon' for '30 days' (equal once loaded)"),
            ("SELECT iv ORDER BY iv", [b"1 mon", b"30 days"], [b"30 days", b"1 mon"], True,
             "'1 mon' and '30 days' tie in an ORDER BY")]:
        why = compare(st(sql), ("ok", f"SELECT {len(g)}", idesc, [(td,)] * len(g), [(x,) for x in g]),
                      ("ok", f"SELECT {len(w)}", idesc, [(td,)] * len(w), [(x,) for x in w]), no_full)
        if (why is None) != should:
            fails += 1
            print(f"FAIL comparator: {what}: {'rejected' if should else 'accepted'} ({why})", flush=True)
    n = len(cases) + 10
    report(fails == 0, "comparator", f"{n - fails} of {n} synthetic differences judged right", always=True)


def refused_in_selftest(side, st, mode):
    """In the selftest the refused statements run on ref, in a transaction rolled back."""
    side.execute("BEGIN")
    try:
        return run(side, st.sql, mode, st.params)
    finally:
        side.rollback() if not side.autocommit else side.execute("ROLLBACK")


# --------------------------------------------------------------------------- the big stream

class RssSampler(threading.Thread):
    """Reads VmRSS and VmHWM (kB) of a pid every 20 ms until stopped."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid = pid
        self.peak_rss = 0
        self.samples = 0
        self.stop_ev = threading.Event()

    def run(self):
        while not self.stop_ev.is_set():
            s = proc_status(self.pid)
            if s:
                self.peak_rss = max(self.peak_rss, s["VmRSS"])
                self.samples += 1
            self.stop_ev.wait(0.02)


def proc_status(pid):
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("VmRSS", "VmHWM"):
                    out[k] = int(v.split()[0]) * 1024
    except OSError:
        return None
    return out


def stream_big(port, dbname, expect_n):
    """SELECT tenant_id, v, pad FROM big ORDER BY v over a raw socket (simple query), reading
    the rows one by one, with a pause of 1.5 s after the first 1000: (n rows, first order
    violation or None, command tag, error)."""
    c = pgwire.Conn(port, timeout=60)
    try:
        c.login(user=CLUSTER.user, password=CLUSTER.password, database=dbname)
        sock = c.sock
        sock.sendall(pgwire.query_msg("SELECT tenant_id, v, pad FROM big ORDER BY v"))
        buf = bytearray(c.buf)
        pos = 0
        n, bad, tag, err = 0, None, None, None
        expect = 0
        while True:
            while len(buf) - pos < 5:
                if pos:
                    del buf[:pos]
                    pos = 0
                chunk = sock.recv(262144)
                if not chunk:
                    raise pgwire.Closed()
                buf += chunk
            t = buf[pos:pos + 1]
            (ln,) = struct.unpack_from("!I", buf, pos + 1)
            while len(buf) - pos < 1 + ln:
                if pos:
                    del buf[:pos]
                    pos = 0
                chunk = sock.recv(262144)
                if not chunk:
                    raise pgwire.Closed()
                buf += chunk
            body = bytes(buf[pos + 5:pos + 1 + ln])
            pos += 1 + ln
            if t == b"D":
                row = pgwire.parse_datarow(body)
                v = int(row[1])
                if v != expect and bad is None:
                    bad = f"row {n}: v = {v}, expected {expect}"
                expect = v + 1
                n += 1
                if n == 1000:
                    # A pause with rows on the way: a pgshard that does not stop reading the
                    # shards while its client does not read would buffer the rest meanwhile.
                    time.sleep(1.5)
            elif t == b"C":
                tag = body.rstrip(b"\0").decode()
            elif t == b"E":
                f = pgwire.parse_error(body)
                err = f"{f.get('C')}: {f.get('M')}"
            elif t == b"Z":
                break
        c.terminate()
        return n, bad, tag, err
    finally:
        c.close()


def big_check(shards, side, side_port, side_db, proxy, tmap, ref=None):
    """1,000,000 rows over the shards, v = 0..999999 interleaved (shard k: v % 3 = k), each
    shard's rows under one of its tenants; streamed in order through pgshard."""
    t0 = time.monotonic()
    by_shard = {}
    for t, s in tmap.items():
        by_shard.setdefault(s, t)
    targets = list(zip(shards, range(SHARDS)))
    if ref is not None:  # the selftest reads ref: it gets the same rows
        targets.append((ref, None))
    def load(c, k):
        if k is None:
            c.execute("INSERT INTO big SELECT 1, v, repeat(md5(v::text), 3) FROM generate_series(0, %s) v",
                      (BIG_ROWS - 1,))
        else:
            c.execute("INSERT INTO big SELECT %s, v, repeat(md5(v::text), 3) FROM generate_series(%s, %s, %s) v",
                      (by_shard[k], k, BIG_ROWS - 1, SHARDS))
        c.execute("CREATE INDEX big_v ON big (v)")
        c.execute("ANALYZE big")

    errors = []

    def load_or_note(c, k):
        try:
            load(c, k)
        except psycopg.Error as e:
            errors.append(f"shard {k}: {e}")

    threads = [threading.Thread(target=load_or_note, args=t) for t in targets]  # the shards are separate servers
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    if errors:
        raise RuntimeError(f"loading big failed: {errors}")
    counts = [c.execute("SELECT count(*) FROM big").fetchone()[0] for c in shards]
    report(sum(counts) == BIG_ROWS, "big load", f"{counts} rows on the shards in {time.monotonic() - t0:.1f} s",
           always=True)
    got = run(side, "SELECT count(*) FROM big", "simple")
    report(got[0] == "ok" and got[3] == [(BIG_ROWS,)], "big count", f"count(*) over the shards: {show(got)}",
           always=True)

    pid = proxy.proc.pid
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS
    except OSError as e:
        log(f"cannot reset pgshard's VmHWM ({e}); the peak is sampled only")
    before = proc_status(pid)
    sampler = RssSampler(pid)
    sampler.start()
    t1 = time.monotonic()
    try:
        n, bad, tag, err = stream_big(side_port, side_db, BIG_ROWS)
    except (OSError, pgwire.Closed, AssertionError, pgwire.PgError) as e:
        n, bad, tag, err = 0, None, None, f"{type(e).__name__}: {e}"
    took = time.monotonic() - t1
    sampler.stop_ev.set()
    sampler.join()
    after = proc_status(pid)
    ok = err is None and bad is None and n == BIG_ROWS and tag == f"SELECT {BIG_ROWS}"
    report(ok, "big stream", f"{n} rows in {took:.1f} s, tag {tag!r}" + (f", error {err}" if err else "")
           + (f", out of order at {bad}" if bad else ""), always=True)
    if not ok:
        report(False, "big memory", "not measured: the stream did not deliver every row")
    elif before and after:
        peak = max(sampler.peak_rss, after["VmHWM"] if after["VmHWM"] >= before["VmHWM"] else 0)
        grew = peak - before["VmRSS"]
        what = (f"pgshard pid {pid}: VmRSS before {before['VmRSS'] >> 10} kB, peak {peak >> 10} kB "
                f"(sampled {sampler.peak_rss >> 10} kB in {sampler.samples} samples, VmHWM after "
                f"{after['VmHWM'] >> 10} kB), after {after['VmRSS'] >> 10} kB: grew {grew >> 10} kB "
                f"(limit {BIG_RSS_LIMIT >> 10} kB)")
        if SELFTEST:
            what += " [selftest: the rows came from ref, not through pgshard]"
        report(grew < BIG_RSS_LIMIT, "big memory", what, always=True)
    else:
        report(False, "big memory", f"cannot read /proc/{pid}/status")


# --------------------------------------------------------------------------- the test

def main():
    diffcluster.install_watchdog(WATCHDOG)
    atexit.register(CLUSTER.stop)
    began = time.monotonic()

    log(f"starting a cluster of its own: {SHARDS} shards, no replicas; modes {MODES}"
        + (" (SELFTEST: the pgshard side is ref)" if SELFTEST else ""))
    CLUSTER.start()
    CLUSTER.create_ref()
    report.info("cluster", f"{SHARDS} shards up in {time.monotonic() - began:.1f} s, database ref on shard 0")

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
    side = None
    try:
        proxy = CLUSTER.proxy(sharded=SHARDED, omnisharded=("tenants",), workers=2, pool_size=4,
                              query_wait_timeout=30)
        pconn = CLUSTER.connect(proxy.port)

        tmap = shard_of(ref, TENANT_IDS)
        per_shard = collections.Counter(tmap.values())
        report.info("tenants", f"{len(TENANT_IDS)} tenants, per shard {[per_shard[k] for k in range(SHARDS)]}")

        t_load = time.monotonic()
        nrows = collections.Counter()
        load_err = None
        for t in TENANT_IDS:
            for table in ("items", "events"):
                rows = data[table][t]
                for c in (pconn, ref):
                    try:
                        insert_rows(c, table, rows)
                    except psycopg.Error as e:
                        load_err = load_err or f"{table} of tenant {t} via {'pgshard' if c is pconn else 'ref'}: {e}"
                nrows[table] += len(rows)
        for table in ("items", "events"):
            union = sum(c.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for c in shards)
            if union != nrows[table]:
                load_err = load_err or f"{table}: {union} rows over the shards, {nrows[table]} generated"
        report(load_err is None, "load",
               load_err or f"{dict(nrows)} rows through pgshard and into ref in {time.monotonic() - t_load:.1f} s")
        for c in shards + [ref]:
            c.execute("ANALYZE")

        if SELFTEST:
            side, side_port, side_db = CLUSTER.ref_conn(), CLUSTER.ports[0], "ref"
        else:
            side, side_port, side_db = pconn, proxy.port, CLUSTER.db
        baseline = [fingerprint(c) for c in shards]

        if SELFTEST:
            check_comparator()
        stmts = parse_corpus(QUERIES)
        ncompared = sum(1 for s in stmts if not s.refused)
        log(f"corpus {os.path.basename(QUERIES)}: {len(stmts)} statements, {ncompared} compared, "
            f"{len(stmts) - ncompared} refused")
        selftest_refused = []
        for mode in MODES:
            t_mode = time.monotonic()
            npass0, nfail0 = report.passed, report.failed
            nrun = 0
            for st in stmts:
                where = f"{mode} {os.path.basename(QUERIES)}:{st.line}"
                if st.known and not RUN_KNOWN:
                    print(f"skip {where}: KNOWN: {st.known}: {st.short()}", flush=True)
                    continue
                if mode not in st.modes:
                    continue
                nrun += 1
                if st.refused:
                    if SELFTEST:
                        got = refused_in_selftest(side, st, mode)
                        selftest_refused.append((where, st, got))
                        continue
                    got = run(side, st.sql, mode, st.params)
                    ok = got[0] == "error" and got[1] == st.refused
                    report(ok, where, f"refused with {st.refused}: {st.short()}" if ok else
                           f"expected SQLSTATE {st.refused}: {' '.join(st.sql.split())}\n  pgshard: {show(got)}")
                    now = [fingerprint(c) for c in shards]
                    report(now == baseline, where + " unchanged",
                           "every shard's tables as they were" if now == baseline else
                           f"the shards' tables changed after {st.short()}: {baseline} -> {now}")
                    baseline = now
                else:
                    got = run(side, st.sql, mode, st.params)
                    want = run(ref, st.sql, mode, st.params)
                    if st.fails:
                        ok = want[0] == "error" and want[1] == st.fails and got[0] == "error" and got[1] == st.fails
                        report(ok, where, f"both fail with {st.fails}: {st.short()}" if ok else
                               f"expected both to fail with {st.fails}: {' '.join(st.sql.split())}\n"
                               f"  pgshard: {show(got)}\n  ref:     {show(want)}")
                    elif want[0] != "ok":
                        report(False, where, f"the test is wrong: ref fails: {' '.join(st.sql.split())}\n  ref: {show(want)}")
                    else:
                        why = compare(st, got, want, lambda sql: run(ref, sql, mode, without_limit_params(st.params, st.sql, sql)))
                        nr = len(want[3]) if want[3] is not None else 0
                        report(why is None, where, f"{want[1]}, {nr} rows: {st.short()}" if why is None else
                               f"{' '.join(st.sql.split())}\n  {why}")
                if got[0] == "broken":
                    print(f"note {where}: the connection broke; reconnecting", flush=True)
                    if SELFTEST:
                        side = CLUSTER.ref_conn()
                    else:
                        side = pconn = CLUSTER.connect(proxy.port)
                elif side.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                    report(False, where + " idle", f"the connection is left in a transaction "
                                                   f"({side.info.transaction_status.name}): rolled back")
                    side.execute("ROLLBACK")
            log(f"mode {mode}: {nrun} statements in {time.monotonic() - t_mode:.1f} s: "
                f"{report.passed - npass0} passed, {report.failed - nfail0} failed")
        if SELFTEST:
            for where, st, got in selftest_refused:
                print(f"selftest {where}: refused statement on ref: "
                      f"{'succeeds' if got[0] == 'ok' else f'fails with {got[1]}'}: {st.short(100)}", flush=True)
            log(f"selftest: {len(selftest_refused)} runs of refused statements reported apart, not counted")

        # Nothing the corpus ran changed ref either.
        for table in ("items", "events"):
            union = []
            for c in shards:
                union += c.execute(f"SELECT * FROM {table}").fetchall()
            want = ref.execute(f"SELECT * FROM {table}").fetchall()
            report(multiset_eq(union, want), f"contents {table}", f"{len(union)} rows over the shards, {len(want)} in ref")

        big_check(shards, side, side_port, side_db, proxy, tmap, ref if SELFTEST else None)
    finally:
        signal.alarm(0)
        for c in [pconn, side, ref] + shards:
            if c is not None and not c.closed:
                c.close()
        if proxy is not None:
            try:
                proxy.stop()
                report.info("proxy stop", "pgshard exited 0 on SIGTERM")
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
        report(False, "t_scatter", f"{type(e).__name__}: {e}")
        sys.exit(report.summary() or 1)

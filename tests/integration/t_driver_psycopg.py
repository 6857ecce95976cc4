#!/usr/bin/env python3
"""psycopg 3 (Debian's python3-psycopg, over libpq) through pgshard in transaction pooling.

One proxy with workers = 1 and pool_size = 2 serves 20 client connections at a time, so a
client's statements keep landing on server connections that have never seen them: pgshard has
to prepare them again there as "pgshard_<hash>". Every connection uses prepare_threshold = 0,
so every query psycopg runs goes through a named prepared statement (Parse "_pg3_N" once,
then Bind/Execute), SET and SHOW included. The cases:

  - prepared statements from 20 threads, each with its own connection, in autocommit and in
    committed transactions, and a server-side cursor, every result checked; some client's
    statement must have run on both backends;
  - the same statement is prepared under the same pgshard_% name on both server connections
    (seen by a driver connection through the proxy in pg_prepared_statements), and psycopg's
    own names never reach a server;
  - binary results and binary parameters (cursor(binary=True), execute(binary=True), %b);
  - pipeline mode: many inserts then a select, from 20 threads; executemany; a transaction
    inside a pipeline;
  - COPY FROM STDIN and TO STDOUT, text and binary, from 20 threads at once;
  - session state: SET (search_path, statement_timeout) is seen by SHOW and by queries in
    later transactions after the other clients ran, SET LOCAL and RESET behave as on
    PostgreSQL, application_name from the startup packet holds and is reported, and 20
    clients each keep settings of their own;
  - errors and recovery in autocommit: run-time errors in prepared statements, failed Parse,
    a bad parameter, a bad COPY, statement_timeout and a cancel from another thread, an error
    inside a pipeline (compared with the same pipeline straight on the primary).

While everything runs, a direct superuser connection samples pg_stat_activity: the proxy may
never hold more than pool_size = 2 backends of user app. Each proxy must stop on SIGTERM
with exit 0 and no sanitizer report.

Regression cases (KNOWN_BUGS below) each run on a proxy of their own: they once failed
because psycopg follows every rollback and DROP with DEALLOCATE ALL and evicts statements
past prepared_max with DEALLOCATE <name>, both through the extended protocol, and sends
PGOPTIONS as the startup parameter `options`.

Runs under /usr/bin/python3 when the `python3` it was started with has no psycopg (CTest
starts it with the first python3 on PATH). Environment (set by CTest): PGS_CLUSTER_DIR (a
cluster from tests/cluster/cluster.sh), PGSHARD_BIN, PGS_SRC, PGS_WORK. Prints one line per
check and "N passed, M failed"; exits 1 when a check failed.
"""
import os
import sys

import need_psycopg  # noqa: E402,F401 (runs this test again under /usr/bin/python3 if need be)
import psycopg  # noqa: E402

import datetime
import decimal
import hashlib
import signal
import threading
import time
import traceback
import uuid

from psycopg import errors as pgerr

N_CLIENTS = 20
POOL_SIZE = 2
JOIN_TIMEOUT = 60.0  # a thread still running after this has hung, and a hang is a failure
WATCHDOG = 240  # the whole test; CTest's own limit is 300 s


def die(msg):
    print(f"t_driver_psycopg: error: {msg}", file=sys.stderr, flush=True)
    print("0 passed, 1 failed")
    sys.exit(1)


CLUSTER_DIR = os.environ.get("PGS_CLUSTER_DIR") or die("PGS_CLUSTER_DIR is not set")
PGSHARD_BIN = os.environ.get("PGSHARD_BIN") or die("PGSHARD_BIN is not set")
PGS_WORK = os.environ.get("PGS_WORK") or os.path.join(os.environ.get("TMPDIR", "/tmp"), "pgshard-itest")
WORK = os.path.join(PGS_WORK, "t_driver_psycopg")
KNOWN_BUGS_ON = True  # the proxy bugs these cases found are fixed: they always run now


# The cluster's environment, read and checked once by the shared raw-protocol module.
os.environ["PGWIRE_TEST"] = "t_driver_psycopg"
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pgwire  # noqa: E402
from pgwire import CENV, DB, PASSWORD, PG_HOST, PG_PORT, USER  # noqa: E402

SOCKDIR = CENV["PGS_SOCKDIR"]
SUPERUSER = CENV.get("PGS_SUPERUSER", "postgres")


# --------------------------------------------------------------------------- the proxy

def Proxy(name, **keys):  # noqa: N802 - stands for the class it builds
    """pgwire's proxy with this test's pool: one worker, POOL_SIZE servers."""
    return pgwire.Proxy(name, **{"workers": 1, "pool_size": POOL_SIZE, "query_wait_timeout": 60, **keys})


def connect(autocommit=True, **kw):
    """A psycopg connection through the proxy; every query becomes a named prepared statement."""
    return psycopg.connect(host="127.0.0.1", port=PROXY.port, user=USER, password=PASSWORD, dbname=DB,
                           connect_timeout=10, autocommit=autocommit, prepare_threshold=0, **kw)


def superuser():
    """Straight to the primary as the superuser over the unix socket (not counted as 'app')."""
    return psycopg.connect(host=SOCKDIR, port=PG_PORT, user=SUPERUSER, dbname=DB, autocommit=True,
                           connect_timeout=10)


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def eq(expected, actual, what):
    if expected != actual:
        raise AssertionError(f"{what}: expected {expected!r}, got {actual!r}")


def run_threads(n, fn, what):
    """Runs fn(i) in n threads started together; raises with the first errors, or on a hang."""
    barrier = threading.Barrier(n)
    errors = []
    results = [None] * n

    def body(i):
        try:
            barrier.wait(30)
            results[i] = fn(i)
        except BaseException as e:  # noqa: B902 - everything a thread raises is a failure
            errors.append((i, e, traceback.format_exc(limit=3)))

    threads = [threading.Thread(target=body, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + JOIN_TIMEOUT
    for t in threads:
        t.join(max(0.1, deadline - time.monotonic()))
    hung = [i for i, t in enumerate(threads) if t.is_alive()]
    if hung:
        raise AssertionError(f"{what}: threads {hung} still running after {JOIN_TIMEOUT:.0f} s (hang)")
    if errors:
        i, e, tb = errors[0]
        raise AssertionError(f"{what}: {len(errors)} of {n} threads failed; thread {i}: "
                             f"{type(e).__name__}: {e}\n{tb}")
    return results


class Monitor(threading.Thread):
    """Samples how many backends of user app exist (all of them are the proxy's: every
    direct connection of this test is the superuser's)."""

    SQL = ("select count(*) from pg_stat_activity where usename = %s and backend_type = 'client backend'")

    def __init__(self):
        super().__init__(daemon=True)
        self.max = 0
        self.samples = 0
        self.error = None
        self.stopping = threading.Event()

    def run(self):
        try:
            with superuser() as c:
                while not self.stopping.is_set():
                    n = c.execute(self.SQL, (USER,)).fetchone()[0]
                    self.max = max(self.max, n)
                    self.samples += 1
                    self.stopping.wait(0.02)
        except Exception as e:
            self.error = e


# --------------------------------------------------------------------------- cases

T_MAIN, T_PIPE, T_COPY, T_ERR = "t_drv_py_main", "t_drv_py_pipe", "t_drv_py_copy", "t_drv_py_err"
SCHEMAS = ("drv_py_s1", "drv_py_s2")
Q_MAIN = "select %s::int * 2, %s::text || '!', pg_backend_pid()"
Q_MAIN_SERVER = "select $1::int * 2, $2::text || '!', pg_backend_pid()"
STATS = {}


def setup():
    with superuser() as s:
        s.execute("set client_min_messages = warning")
        s.execute(f"drop table if exists {T_MAIN}, {T_PIPE}, {T_COPY}, {T_ERR}")
        for sch in SCHEMAS:
            s.execute(f"drop schema if exists {sch} cascade")
    with connect() as c:
        c.execute(f"create table {T_MAIN} (thread int not null, i int not null, v text not null, "
                  f"primary key (thread, i))")
        c.execute(f"create table {T_PIPE} (thread int not null, i int not null, v text, primary key (thread, i))")
        c.execute(f"create table {T_COPY} (id int primary key, name text, amount numeric(12,2), "
                  f"data bytea, flag boolean)")
        c.execute(f"create table {T_ERR} (id int primary key, v text)")
        for n, sch in enumerate(SCHEMAS, 1):
            c.execute(f"create schema {sch}")
            c.execute(f"create table {sch}.marker (v text)")
            c.execute(f"insert into {sch}.marker values ('schema{n}')")


def teardown():
    with superuser() as s:
        s.execute("set client_min_messages = warning")
        s.execute(f"drop table if exists {T_MAIN}, {T_PIPE}, {T_COPY}, {T_ERR}")
        for sch in SCHEMAS:
            s.execute(f"drop schema if exists {sch} cascade")


def case_prepared_threads():
    """20 threads, one connection each: prepared queries in autocommit and in committed
    transactions, and a server-side cursor, every value checked; each client's prepared
    statement must have run on both backends for some clients. (Rollbacks are in
    case_rollback_deallocate_all: psycopg follows each one with DEALLOCATE ALL.)"""
    iters = 15

    def work(tid):
        pids = set()
        with connect() as c:
            for i in range(iters):
                d, s, pid = c.execute(Q_MAIN, (i, f"t{tid}"), prepare=True).fetchone()
                eq((2 * i, f"t{tid}!"), (d, s), "autocommit prepared result")
                pids.add(pid)
                with c.transaction():
                    cur = c.cursor()
                    cur.execute(f"insert into {T_MAIN} (thread, i, v) values (%s, %s, %s)", (tid, i, f"v{tid}.{i}"))
                    eq(1, cur.rowcount, "insert rowcount")
                    d, s, pid_in = cur.execute(Q_MAIN, (i + 1, "tx"), prepare=True).fetchone()
                    eq((2 * i + 2, "tx!"), (d, s), "prepared result inside a transaction")
                    cnt, total = cur.execute(f"select count(*), sum(i) from {T_MAIN} where thread = %s",
                                             (tid,)).fetchone()
                    eq((i + 1, i * (i + 1) // 2), (cnt, total), "rows of this thread inside its transaction")
                    eq(pid_in, cur.execute("select pg_backend_pid()").fetchone()[0],
                       "one backend for the whole transaction")
                    pids.add(pid_in)
            # A server-side cursor (DECLARE/FETCH) in a transaction, read in batches.
            with c.transaction():
                with c.cursor(name=f"drv_cur_{tid}") as sc:
                    sc.itersize = 7
                    sc.execute(f"select i, v from {T_MAIN} where thread = %s order by i", (tid,))
                    rows = list(sc)
            eq([(i, f"v{tid}.{i}") for i in range(iters)], rows, "server-side cursor rows")
        return pids

    results = run_threads(N_CLIENTS, work, "prepared statements from 20 threads")
    with superuser() as s:
        eq(N_CLIENTS * iters, s.execute(f"select count(*) from {T_MAIN}").fetchone()[0], "committed rows on the primary")
    allpids = set().union(*results)
    eq(POOL_SIZE, len(allpids), "distinct backends the 20 clients' prepared statements ran on")
    multi = sum(1 for p in results if len(p) > 1)
    check(multi > 0, "no client ran its prepared statement on more than one backend")
    STATS["multi"] = multi
    return f"{N_CLIENTS * iters * 2} prepared executions, {multi}/{N_CLIENTS} clients ran theirs on both backends"


def case_prepared_on_every_server():
    """Both server connections hold the statement of case 1 under one pgshard_% name, and no
    name of psycopg's own (_pg3_N) reached a server."""
    sql = ("select pg_backend_pid(), coalesce(array_agg(name order by name), '{}'), "
           "coalesce(array_agg(statement order by name), '{}') from pg_prepared_statements")
    seen = {}
    a, b = connect(autocommit=False), connect(autocommit=False)
    try:
        # a holds one server in its transaction, so b gets the other one.
        for c in (a, b):
            pid, names, stmts = c.execute(sql).fetchone()
            seen[pid] = dict(zip(names, stmts))
        # commit, not rollback: psycopg follows a rollback with DEALLOCATE ALL (a known bug).
        a.commit()
        b.commit()
    finally:
        a.close()
        b.close()
    eq(POOL_SIZE, len(seen), "two clients in open transactions are on two backends")
    names_per_backend = []
    for pid, stmts in seen.items():
        check(stmts, f"backend {pid} has no prepared statements")
        bad = [n for n in stmts if not n.startswith("pgshard_")]
        eq([], bad, f"statement names on backend {pid} that are not pgshard_%")
        mine = [n for n, s in stmts.items() if s == Q_MAIN_SERVER]
        eq(1, len(mine), f"backend {pid}: statements with the text of case 1")
        names_per_backend.append(mine[0])
    eq(1, len(set(names_per_backend)), "name of the case-1 statement on each backend")
    with connect() as c:
        rows = c.execute("select name from pg_prepared_statements where name like 'pgshard_%'").fetchall()
    check(rows, "select name from pg_prepared_statements where name like 'pgshard_%' returned no rows")
    return f"statement {names_per_backend[0]} prepared on both backends {sorted(seen)}; {len(rows)} pgshard_% rows"


BIN_VALUES = (
    ("int4", 2147483647), ("int8", -9223372036854775808), ("text", "héllo\twörld ✓"),
    ("bytea", bytes(range(256))), ("numeric", decimal.Decimal("-12345678901234567890.000123")),
    ("float8", 1.5e300), ("bool", True), ("date", datetime.date(1999, 12, 31)),
    ("timestamptz", datetime.datetime(2024, 2, 29, 23, 59, 58, 123456, tzinfo=datetime.timezone.utc)),
    ("int4[]", [1, None, -3]), ("jsonb", None), ("uuid", uuid.UUID("12345678-1234-5678-1234-567812345678")),
)


def case_binary():
    """Binary results (cursor(binary=True), execute(binary=True)) with text and binary
    parameters, from 20 threads; and a 20000-row binary result."""
    cols = ", ".join(f"%b::{t}" if n % 2 else f"%s::{t}" for n, (t, _) in enumerate(BIN_VALUES))
    sql = f"select {cols}, null::text, %s::int"
    params = [v for _, v in BIN_VALUES]

    def work(tid):
        with connect() as c:
            cur = c.cursor(binary=True)
            for i in range(5):
                row = cur.execute(sql, params + [tid * 100 + i], prepare=True).fetchone()
                eq(tuple(params) + (None, tid * 100 + i), row, "binary row (binary cursor)")
                eq(1, cur.pgresult.fformat(0), "result column format is binary")
                row = c.execute(sql, params + [i], binary=True).fetchone()
                eq(tuple(params) + (None, i), row, "binary row (execute(binary=True))")
            rows = c.execute("select g, md5(g::text)::bytea from generate_series(1, %s) g", (20000,),
                             binary=True).fetchall()
            eq(20000, len(rows), "rows of the big binary result")
            check(all(r[0] == n + 1 for n, r in enumerate(rows)), "big binary result: ids in order")
            check(rows[-1][1] == hashlib.md5(b"20000").hexdigest().encode(), "big binary result: last md5")
            return None

    run_threads(N_CLIENTS, work, "binary results from 20 threads")
    return f"{N_CLIENTS * 10} binary rows of {len(BIN_VALUES) + 2} types, {N_CLIENTS} x 20000-row binary results"


def case_pipeline():
    """Pipeline mode: 50 prepared inserts then a select per thread, 20 threads; executemany;
    and an explicit transaction inside a pipeline."""
    n = 50

    def work(tid):
        with connect() as c:
            cur = c.cursor()
            with c.pipeline():
                for i in range(n):
                    cur.execute(f"insert into {T_PIPE} (thread, i, v) values (%s, %s, %s)", (tid, i, f"p{i}"),
                                prepare=True)
                sel = c.execute(f"select count(*), sum(i), min(v), max(v) from {T_PIPE} where thread = %s", (tid,))
                eq((n, n * (n - 1) // 2, "p0", "p9"), sel.fetchone(), "select after 50 pipelined inserts")
            with c.pipeline():
                c1 = c.execute("select %s::int + 1", (tid,))
                c2 = c.execute(f"select count(*) from {T_PIPE} where thread = %s", (tid,))
                c3 = c.execute("select %s::text", (f"x{tid}",), binary=True)
            eq([(tid + 1,), (n,), (f"x{tid}",)], [c1.fetchone(), c2.fetchone(), c3.fetchone()],
               "three pipelined selects")
            cur.executemany(f"insert into {T_PIPE} (thread, i, v) values (%s, %s, %s)",
                            [(tid, n + i, f"m{i}") for i in range(30)])
            with c.pipeline():
                with c.transaction():
                    for i in range(10):
                        c.execute(f"insert into {T_PIPE} (thread, i, v) values (%s, %s, 'tx')", (tid, 1000 + i))
                    inner = c.execute(f"select count(*) from {T_PIPE} where thread = %s", (tid,))
                    eq((n + 40,), inner.fetchone(), "count inside the pipelined transaction")
            eq((n + 40,), c.execute(f"select count(*) from {T_PIPE} where thread = %s", (tid,)).fetchone(),
               "rows after executemany and a pipelined transaction")

    run_threads(N_CLIENTS, work, "pipelines from 20 threads")
    with superuser() as s:
        eq(N_CLIENTS * (n + 40), s.execute(f"select count(*) from {T_PIPE}").fetchone()[0], "pipelined rows on the primary")
    return f"{N_CLIENTS} x ({n} pipelined inserts + select, 3 pipelined selects, executemany 30, pipelined transaction)"


def copy_row(i):
    name = None if i % 17 == 0 else f"name {i}\twith tab\nand newline \\ ✓"
    amount = decimal.Decimal(i) / 4
    data = None if i % 13 == 0 else bytes([i % 256, 0, 255, 10, 9]) * (i % 5)
    return (i, name, amount.quantize(decimal.Decimal("0.01")), data, i % 2 == 0)


def case_copy():
    """COPY FROM STDIN (text and binary) from 20 threads, then COPY TO STDOUT (text and binary)
    read back and compared row by row."""
    per = 300

    def work(tid):
        base = tid * 10000
        with connect() as c:
            cur = c.cursor()
            fmt = "(format binary)" if tid % 2 else ""
            with cur.copy(f"copy {T_COPY} (id, name, amount, data, flag) from stdin {fmt}") as cp:
                if tid % 2:
                    cp.set_types(["int4", "text", "numeric", "bytea", "bool"])
                for i in range(per):
                    cp.write_row(copy_row(base + i))
            eq(per, cur.rowcount, "COPY FROM rowcount")
            eq(per, c.execute(f"select count(*) from {T_COPY} where id between %s and %s",
                              (base, base + 9999)).fetchone()[0], "rows after COPY FROM")
            # Binary COPY TO with the column types given, then text COPY TO (rows of strings).
            with cur.copy(f"copy (select id, name, amount, data, flag from {T_COPY} where id between {base} and "
                          f"{base + 9999} order by id) to stdout (format binary)") as cp:
                cp.set_types(["int4", "text", "numeric", "bytea", "bool"])
                got = list(cp.rows())
            eq([copy_row(base + i) for i in range(per)], got, "binary COPY TO rows")
            with cur.copy(f"copy (select id, name from {T_COPY} where id between {base} and {base + 9999} "
                          f"order by id) to stdout") as cp:
                text_rows = list(cp.rows())
            eq([(str(base + i), copy_row(base + i)[1]) for i in range(per)], text_rows, "text COPY TO rows")

    run_threads(N_CLIENTS, work, "COPY from 20 threads")
    with connect() as c:
        cur = c.cursor()
        with cur.copy(f"copy {T_COPY} to stdout") as cp:
            total = sum(len(bytes(chunk)) for chunk in cp)
        eq(N_CLIENTS * per, c.execute(f"select count(*) from {T_COPY}").fetchone()[0], "all copied rows")
    return f"{N_CLIENTS} x {per} rows COPY FROM (text/binary) + TO (binary, text); {total} bytes copied out"


def background_load(rounds=3):
    """Other clients' traffic, with session state of their own, so that the clients under
    test land on server connections that ran other sessions in between."""

    def work(tid):
        with connect() as c:
            c.execute("set search_path to public")
            c.execute(f"set application_name = 'load{tid}'")
            for i in range(rounds):
                eq(("public", f"load{tid}"), c.execute("select current_setting('search_path'), "
                                                       "current_setting('application_name')").fetchone(),
                   "a load client's own settings")
                with c.transaction():
                    c.execute(f"select count(*) from {T_MAIN}").fetchone()
                    c.execute("set local statement_timeout = '7s'")

    run_threads(N_CLIENTS - 2, work, "background load")


def case_session_state():
    """SET in one transaction, SHOW and queries in later ones after other clients ran; SET
    LOCAL, RESET; a startup parameter; 20 clients with settings of their own."""
    a = connect()
    b = connect(application_name="drv_py_b")
    try:
        with a.transaction():
            a.execute("set search_path to drv_py_s1, public")  # committed with its transaction
        a.execute("set statement_timeout = '12s'")  # autocommit
        checks = 0
        for rnd in range(3):
            background_load()
            with a.transaction():
                eq(("drv_py_s1, public",), a.execute("show search_path").fetchone(), "SHOW search_path of client a")
                eq(("schema1",), a.execute("select v from marker").fetchone(), "unqualified table via a's search_path")
                eq(("12s",), a.execute("show statement_timeout").fetchone(), "SHOW statement_timeout of client a")
            with b.transaction():
                eq(('"$user", public', "drv_py_b"),
                   b.execute("select current_setting('search_path'), current_setting('application_name')").fetchone(),
                   "client b: default search_path, its startup application_name")
            checks += 4
        eq("drv_py_b", b.info.parameter_status("application_name"), "application_name reported to b at login")
        # SET LOCAL ends with its transaction.
        with a.transaction():
            a.execute("set local search_path to drv_py_s2")
            eq(("schema2",), a.execute("select v from marker").fetchone(), "SET LOCAL inside its transaction")
        background_load(1)
        eq(("drv_py_s1, public",), a.execute("show search_path").fetchone(), "after SET LOCAL's transaction")
        a.execute("reset search_path")
        background_load(1)
        eq(('"$user", public',), a.execute("show search_path").fetchone(), "after RESET search_path")
        eq(("12s",), a.execute("show statement_timeout").fetchone(), "RESET of one setting leaves the other")
        # A search_path change is seen by the prepared statements of later transactions too.
        a.execute("set search_path = drv_py_s2, public")
        background_load(1)
        eq(("schema2",), a.execute("select v from marker").fetchone(), "prepared query after a new SET")
        checks += 6

        # Every one of 20 clients sets its own values and sees only them, over and over.
        def own(tid):
            with connect() as c:
                c.execute(f"set statement_timeout = '{1001 + tid}ms'")
                c.execute(f"set search_path to {SCHEMAS[tid % 2]}, public")
                for _ in range(8):
                    with c.transaction():
                        eq((f"{1001 + tid}ms", f"schema{tid % 2 + 1}"),
                           c.execute("select current_setting('statement_timeout'), (select v from marker)").fetchone(),
                           f"client {tid}'s own settings")
        run_threads(N_CLIENTS, own, "20 clients with their own settings")
        checks += N_CLIENTS * 8
    finally:
        a.close()
        b.close()
    return f"{checks} setting checks"


def case_errors():
    """Errors in autocommit, then the same connection goes on. (Errors inside transactions
    need a rollback: case_rollback_deallocate_all.)"""
    checks = 0
    with connect() as c:
        for i in range(3):
            try:
                c.execute("select 1 / %s::int", (0,), prepare=True)
                raise AssertionError("division by zero did not fail")
            except pgerr.DivisionByZero:
                pass
            eq((1,), c.execute("select 1 / %s::int", (1,), prepare=True).fetchone(), "same prepared statement after its error")
            try:
                c.execute("selec 1")
                raise AssertionError("a syntax error was accepted")
            except pgerr.SyntaxError:
                pass
            eq((i,), c.execute("select %s::int", (i,)).fetchone(), "query after a failed Parse")
            try:
                c.execute(f"insert into {T_ERR} values (%s, 'x'), (%s, 'y')", (i, i))
                raise AssertionError("duplicate key accepted")
            except pgerr.UniqueViolation:
                pass
            eq((0,), c.execute(f"select count(*) from {T_ERR} where id = %s", (i,)).fetchone(), "no row of a failed insert")
            checks += 6
        # A bad COPY, then the connection goes on.
        try:
            with c.cursor().copy(f"copy {T_ERR} (id, v) from stdin") as cp:
                cp.write(b"10\tok\nnot-a-number\tbad\n")
            raise AssertionError("a bad COPY was accepted")
        except pgerr.InvalidTextRepresentation:
            pass
        eq((0,), c.execute(f"select count(*) from {T_ERR}").fetchone(), "no row of the failed COPY")
        checks += 2
        # statement_timeout and a cancel from another thread.
        c.execute("set statement_timeout = '200ms'")
        try:
            c.execute("select pg_sleep(3)")
            raise AssertionError("statement_timeout did not cancel")
        except pgerr.QueryCanceled:
            pass
        c.execute("reset statement_timeout")
        timer = threading.Timer(0.5, c.cancel)
        timer.start()
        t0 = time.monotonic()
        try:
            c.execute("select pg_sleep(5)")
            raise AssertionError("cancel did not cancel")
        except pgerr.QueryCanceled:
            pass
        finally:
            timer.join()
        check(time.monotonic() - t0 < 4, "cancel took effect late")
        eq((42,), c.execute("select %s::int", (42,)).fetchone(), "query after a cancel")
        checks += 3

    # 20 threads alternate failing and good prepared statements.
    def work(tid):
        with connect() as c:
            for i in range(10):
                try:
                    c.execute("select 10 / %s::int", (0,))
                    raise AssertionError("division by zero did not fail")
                except pgerr.DivisionByZero:
                    pass
                eq((10 // (i + 1),), c.execute("select 10 / %s::int", (i + 1,)).fetchone(), "after the error")
                try:
                    c.execute("select %s::int", ("x",))
                    raise AssertionError("'x'::int accepted")
                except pgerr.InvalidTextRepresentation:
                    pass
                eq((tid,), c.execute("select %s::int", (tid,)).fetchone(), "after a bad parameter")
    run_threads(N_CLIENTS, work, "errors from 20 threads")
    checks += N_CLIENTS * 40
    return f"{checks} checks"


def pipeline_with_error(conn, table, base):
    """Three inserts with a duplicate in the middle, in one pipeline. Returns the first error,
    whether every later one was PipelineAborted, and the rows left. (Where psycopg raises the
    error, at a later execute() or at the end of the block, depends on when the results
    arrive, so only that much is compared.)"""
    errors = []
    try:
        with conn.pipeline():
            for k in (base, base, base + 1):
                try:
                    conn.execute(f"insert into {table} values (%s, 'p')", (k,))
                except psycopg.Error as e:
                    errors.append(type(e).__name__)
    except psycopg.Error as e:
        errors.append(type(e).__name__)
    rows = conn.execute(f"select count(*) from {table} where id between %s and %s", (base, base + 1)).fetchone()[0]
    return (errors[0] if errors else None, all(e == "PipelineAborted" for e in errors[1:]), rows)


def case_pipeline_error():
    """An error in the middle of a pipeline: the same first error and the same rows as on the
    primary directly; then the connection works."""
    with superuser() as s:
        direct = pipeline_with_error(s, T_ERR, 100)
    eq(("UniqueViolation", True, 0), direct, "failed pipeline straight on the primary")
    for i in range(5):
        with connect() as c:
            proxied = pipeline_with_error(c, T_ERR, 200 + 10 * i)
            eq((7,), c.execute("select %s::int", (7,)).fetchone(), "query after the failed pipeline")
        eq(direct, proxied, "failed pipeline through the proxy vs straight on the primary")
    return f"5 times (first error, later errors PipelineAborted, rows left) = {proxied}"


# --------------------------------------------------------------------------- known bugs

def case_rollback_deallocate_all():
    """Rollbacks with prepared statements. psycopg answers every rollback (Rollback in
    conn.transaction(), conn.rollback(), a savepoint rolled back) and every DROP with
    DEALLOCATE ALL, sent with the extended protocol (unnamed Parse/Bind/Execute). That drops
    the server's pgshard_* statements; later Binds to them must still work."""
    iters = 6

    def work(tid):
        thread = 1000 + tid
        with connect() as c:
            for i in range(iters):
                eq((2 * i, f"r{tid}!"), c.execute(Q_MAIN, (i, f"r{tid}")).fetchone()[:2], "prepared query")
                with c.transaction():
                    c.execute(f"insert into {T_MAIN} (thread, i, v) values (%s, %s, 'gone')", (thread, i))
                    eq((1,), c.execute(f"select count(*) from {T_MAIN} where thread = %s", (thread,)).fetchone(),
                       "uncommitted row visible to its transaction")
                    raise psycopg.Rollback()
                eq((0,), c.execute(f"select count(*) from {T_MAIN} where thread = %s", (thread,)).fetchone(),
                   "rolled-back row is gone")
                c.autocommit = False
                try:
                    c.execute(f"insert into {T_MAIN} (thread, i, v) values (%s, %s, 'dup'), (%s, %s, 'dup')",
                              (thread, i, thread, i))
                    raise AssertionError("duplicate key accepted")
                except pgerr.UniqueViolation:
                    pass
                try:
                    c.execute("select 1")
                    raise AssertionError("a failed transaction ran a query")
                except pgerr.InFailedSqlTransaction:
                    pass
                c.rollback()
                c.autocommit = True
                with c.transaction():
                    try:
                        with c.transaction():  # a savepoint
                            c.execute("select 'x'::int")
                    except pgerr.InvalidTextRepresentation:
                        pass
                    eq((tid,), c.execute("select %s::int", (tid,)).fetchone(), "after rollback to a savepoint")
                eq((2 * i + 2, "z!"), c.execute(Q_MAIN, (i + 1, "z")).fetchone()[:2], "prepared query after rollbacks")

    run_threads(N_CLIENTS, work, "rollbacks from 20 threads")
    with connect() as a:
        # A SET in a rolled-back transaction is undone; a DROP is followed by DEALLOCATE ALL too.
        a.execute("set search_path to drv_py_s1, public")
        with a.transaction():
            a.execute("set search_path to drv_py_s2, public")
            raise psycopg.Rollback()
        background_load(1)
        eq(("schema1",), a.execute("select v from marker").fetchone(), "search_path after a rolled-back SET")
        a.execute("create table drv_py_s1.dropme (x int)")
        a.execute("drop table drv_py_s1.dropme")
        background_load(1)
        eq(("schema1",), a.execute("select v from marker").fetchone(), "prepared query after a DROP")
    return f"{N_CLIENTS} x {iters} rounds of rollback, failed transaction, savepoint; SET rollback; DROP"


def case_deallocate_name():
    """psycopg closes statements past prepared_max with DEALLOCATE <its name>, sent with the
    extended protocol; PostgreSQL knows the statement by the client's name."""

    def work(tid):
        with connect() as c:
            c.prepared_max = 5
            for rnd in range(2):
                for q in range(20):
                    eq((q + tid,), c.execute(f"select {q}::int + %s::int", (tid,)).fetchone(), "query past prepared_max")

    run_threads(N_CLIENTS, work, "prepared_max = 5 with 20 statements")
    return f"{N_CLIENTS} clients x 40 queries over 20 statements with prepared_max = 5"


def case_startup_options():
    """options='-c name=value' in the startup packet (libpq's PGOPTIONS) sets those
    parameters for the session, as on PostgreSQL; pgshard must apply it (or refuse it), not
    drop it silently."""
    b = connect(options="-c search_path=drv_py_s2,public -c statement_timeout=4321")
    try:
        for _ in range(2):
            background_load(1)
            with b.transaction():
                eq(("drv_py_s2,public", "schema2", "4321ms"),
                   b.execute("select current_setting('search_path'), (select v from marker), "
                             "current_setting('statement_timeout')").fetchone(),
                   "settings from the startup options")
    finally:
        b.close()
    return "search_path and statement_timeout from options=-c ..."


def case_session_backend_pid():
    """Session pooling: psycopg's info.backend_pid (BackendKeyData) is the server's own pid,
    as pg_backend_pid() and the pid of a notification the client sends itself say, and a
    cancel with that key (connection.cancel()) stops the client's query."""
    conns = [connect() for _ in range(POOL_SIZE)]  # a server each, from login on
    try:
        pids = []
        for c in conns:
            pid = c.execute("select pg_backend_pid()").fetchone()[0]
            eq(pid, c.info.backend_pid, "info.backend_pid against pg_backend_pid()")
            pids.append(pid)
        eq(len(conns), len(set(pids)), "a backend per client")
        c = conns[0]
        got = []
        c.add_notify_handler(lambda n: got.append(n.pid))
        c.execute("listen drv_py_pid")
        c.execute("notify drv_py_pid, 'self'")
        c.execute("select 1")
        eq([c.info.backend_pid], got, "the pid of the client's own notification")
        slow = conns[1]
        threading.Timer(0.3, slow.cancel).start()
        t0 = time.monotonic()
        try:
            slow.execute("select pg_sleep(10)")
            raise AssertionError("pg_sleep(10) ran to its end: the cancel did not reach it")
        except psycopg.errors.QueryCanceled:
            check(time.monotonic() - t0 < 5, "the cancel took effect within 5 s")
    finally:
        for c in conns:
            c.close()
    return f"backend pids {pids}, notification and cancel agree"


# Cases that fail because of a known proxy bug: each runs on a proxy of its own (a server
# whose statements the bug left wrong would fail the cases after it), and only with
# PGS_KNOWN_BUGS=1.
KNOWN_BUGS = [
    ("rollback / DROP, then prepared statements (DEALLOCATE ALL via extended protocol)", case_rollback_deallocate_all,
     "DEALLOCATE ALL and DISCARD ALL sent with Parse/Bind/Execute drop the server's pgshard_* statements "
     "but pgshard still counts them as prepared: later Binds fail with 26000 prepared statement "
     "\"pgshard_...\" does not exist"),
    ("DEALLOCATE <name> via extended protocol (prepared_max)", case_deallocate_name,
     "DEALLOCATE of a client's statement name sent with Parse/Bind/Execute reaches the server unrewritten: "
     "26000 prepared statement \"_pg3_N\" does not exist"),
    ("startup parameter options=-c ...", case_startup_options,
     "pgshard drops the startup parameter 'options' without a word: the session runs with other settings"),
]

CASES = [
    ("prepared statements, 20 threads x own connection, autocommit + transactions", case_prepared_threads),
    ("same statement prepared as pgshard_% on every server connection", case_prepared_on_every_server),
    ("binary results and parameters", case_binary),
    ("pipeline mode", case_pipeline),
    ("COPY to/from, text and binary", case_copy),
    ("session state: SET/SHOW across transactions, startup parameter", case_session_state),
    ("errors then recovery", case_errors),
    ("error inside a pipeline (vs direct)", case_pipeline_error),
]


def main():
    global PROXY
    os.makedirs(WORK, exist_ok=True)
    signal.signal(signal.SIGALRM, lambda *_: (print(f"FAIL watchdog: still running after {WATCHDOG} s", flush=True),
                                              print("0 passed, 1 failed", flush=True), os._exit(1)))
    signal.alarm(WATCHDOG)
    t_start = time.monotonic()
    print(f"psycopg {psycopg.__version__} (libpq {psycopg.pq.version()}) under {sys.executable}; "
          f"pgshard workers=1 pool_size={POOL_SIZE}, transaction pooling, {N_CLIENTS} clients, "
          f"prepare_threshold=0", flush=True)
    monitor = Monitor()
    report = pgwire.Report()

    def run_case(name, fn):
        t0 = time.monotonic()
        try:
            detail = fn()
            report(True, name, f"{detail} ({time.monotonic() - t0:.1f} s)")
        except Exception as e:
            report(False, name, f"{type(e).__name__}: {e}")

    def stop_proxy(what):
        try:
            PROXY.stop()
            report(True, f"{what}: SIGTERM -> exit 0, no sanitizer report", "clean")
        except AssertionError as e:
            report(False, f"{what}: SIGTERM -> exit 0, no sanitizer report", str(e))

    PROXY = Proxy("main")
    try:
        setup()
        monitor.start()
        for name, fn in CASES:
            run_case(name, fn)
            if not PROXY.alive():
                report(False, "proxy alive", f"pgshard died:\n{PROXY.log_tail()}")
                break
        stop_proxy("main proxy")
        PROXY = Proxy("session", pool_mode="session")
        run_case("session pooling: backend pid of BackendKeyData, pg_backend_pid(), notifications, cancel",
                 case_session_backend_pid)
        stop_proxy("session-pooling proxy")
        for n, (name, fn, why) in enumerate(KNOWN_BUGS):
            if not KNOWN_BUGS_ON:
                print(f"known-bug (not run; PGS_KNOWN_BUGS=1 runs it) {name}: {why}", flush=True)
                continue
            PROXY = Proxy(f"bug{n}")
            run_case(f"[regression] {name}", fn)
            stop_proxy(f"proxy of [regression] {name}")
        monitor.stopping.set()
        monitor.join(10)
        if monitor.error:
            report(False, "server connections <= pool_size", f"sampling failed: {monitor.error}")
        else:
            report(monitor.samples > 0 and monitor.max <= POOL_SIZE, "server connections <= pool_size",
                   f"at most {monitor.max} backends of user {USER} in {monitor.samples} samples")
    finally:
        monitor.stopping.set()
        if PROXY.alive():
            PROXY.proc.kill()
        try:
            teardown()
        except Exception as e:
            print(f"(cleanup failed: {e})")
    print(f"({time.monotonic() - t_start:.1f} s)")
    return report.summary()


if __name__ == "__main__":
    sys.exit(main())

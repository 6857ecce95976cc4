"""Shared by the differential tests (t_differential.py, t_scatter.py): a PostgreSQL cluster of
their own (3 shards, no replicas) with a reference database `ref` on shard 0's primary, a
pgshard in front of it with sharded and omnisharded tables, the default shard map computed by
the server's own hash, loading rows with multi-row INSERTs, and the watchdog and signal
handling that makes sure the cluster is stopped whatever happens.

Not a test itself: CTest runs only t_*.py. A test sets os.environ["PGWIRE_TEST"] (its name)
before importing this module (which imports pgwire), and imports need_psycopg first.
"""
import os
import signal
import subprocess
import time

import psycopg

import pgwire

SHARDS = 3
BUCKETS = 1024
# 57 small ids and three that exercise the int8 hash: a negative one, one past 2^32 and one
# past 2^53. Both test data files name them as literals.
TENANT_IDS = list(range(1, 58)) + [-5, 4294967297, 9000000000000000001]


class Cluster:
    """cluster.sh start DIR --shards N --replicas 0, a `ref` database owned by the app user
    on shard 0's primary, and connections to all of them (autocommit, never prepared)."""

    def __init__(self, dirname, shards=SHARDS):
        self.dir = os.path.join(pgwire.PGS_WORK, dirname)
        self.shards = shards
        self.started = False
        self.env = None

    def start(self):
        self.started = True  # a half-started cluster is stopped too
        r = subprocess.run([pgwire.CLUSTER_SH, "start", self.dir, "--shards", str(self.shards), "--replicas", "0"],
                           capture_output=True, text=True, timeout=180)
        if r.returncode != 0:
            raise RuntimeError(f"cluster.sh start failed:\n{r.stdout}{r.stderr}")
        env = pgwire.read_env(os.path.join(self.dir, "cluster.env"))
        if env.get("PGS_READY") != "1":
            raise RuntimeError(f"the cluster in {self.dir} did not finish starting")
        self.env = env
        self.host = env["PGS_HOST"]
        self.user, self.password, self.db = env["PGS_USER"], env["PGS_PASSWORD"], env["PGS_DB"]
        self.ports = [int(env[f"PGS_SHARD{k}_PRIMARY_PORT"]) for k in range(self.shards)]
        return env

    def stop(self):
        if self.started:
            self.started = False
            subprocess.run([pgwire.CLUSTER_SH, "stop", self.dir], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=60)

    def superuser_psql(self, sql, shard=0, dbname="postgres"):
        r = subprocess.run([pgwire.CLUSTER_SH, "psql", self.dir, str(shard), "--", "-At", "-q", "-v", "ON_ERROR_STOP=1",
                            "-d", dbname, "-c", sql], capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError(f"superuser psql failed: {sql!r}: {r.stderr.strip()}")
        return r.stdout.strip()

    def create_ref(self):
        """The reference database `ref` on shard 0's primary, owned by the app user."""
        self.superuser_psql(f"CREATE DATABASE ref OWNER {self.user}")
        self.superuser_psql(f"GRANT ALL ON DATABASE ref TO {self.user}")

    def connect(self, port, dbname=None, **kw):
        return psycopg.connect(host=self.host, port=port, user=self.user, password=self.password,
                               dbname=dbname or self.db, autocommit=True, prepare_threshold=None,
                               connect_timeout=10, **kw)

    def shard_conns(self):
        return [self.connect(p) for p in self.ports]

    def ref_conn(self, **kw):
        return self.connect(self.ports[0], "ref", **kw)

    def proxy(self, sharded=(), omnisharded=(), key="tenant_id", **keys):
        """A pgshard over the shards: `sharded` tables by `key`, `omnisharded` ones on every
        shard; keys go to [pgshard] (workers, pool_size, ...)."""
        sections = {f"shard.{k}": {"primary": f"{self.host}:{self.ports[k]}"} for k in range(1, self.shards)}
        for t in sharded:
            sections[f"table.{t}"] = {"shard_key": key}
        for t in omnisharded:
            sections[f"table.{t}"] = {"omnisharded": "true"}
        return pgwire.Proxy("proxy", primary=f"{self.host}:{self.ports[0]}", sections=sections,
                            monitor_dbname=self.db, **keys)


def shard_of(conn, keys, shards=SHARDS, buckets=BUCKETS):
    """{key: shard} by the server's own hash, with the default map."""
    rows = conn.execute("SELECT k, ((hashint8extended(k, 0) & %s) * %s / %s)::int FROM unnest(%s::bigint[]) k",
                        (buckets - 1, shards, buckets, list(keys))).fetchall()
    return dict(rows)


def check_sequence_ranges(check, conn, shard_conn, table, nshards, label, more=""):
    """Adds a bigserial and a bigint identity column to `table` (sharded by tenant_id) through
    pgshard (conn), then inserts rows for 40 tenants through it: each row's ids must lie in
    its shard's range (shard s from s * 2^48 + 1) and be unique across shards. more: a NOT
    NULL integer column to set to 0."""
    conn.execute(f"ALTER TABLE {table} ADD COLUMN seq_id bigserial, "
                 f"ADD COLUMN ident_id bigint GENERATED BY DEFAULT AS IDENTITY")
    tenants = list(range(1000, 1040))
    placed = shard_of(shard_conn, tenants, shards=nshards)
    ids = {}
    for t in tenants:
        ids[t] = conn.execute(f"INSERT INTO {table} (tenant_id{more and ', ' + more}) VALUES "
                              f"(%s{', 0' if more else ''}) RETURNING seq_id, ident_id", (t,)).fetchone()
    bad = [(t, placed[t], i) for t, i in ids.items()
           if not all(placed[t] << 48 < v <= (placed[t] << 48) + 1000 for v in i)]
    flat = [v for i in ids.values() for v in i[:1]] + [v for i in ids.values() for v in i[1:]]
    check(not bad and len(set(flat[:40])) == 40 and len(set(flat[40:])) == 40
          and len(set(placed.values())) == nshards,
          f"{label}: serial and identity ids of a sharded table fall in their shard's range (s * 2^48 + 1), "
          f"unique across shards", f"{bad[:4]}")


def on_shards(shards, sql, params=None):
    """The first column of sql's first row on each shard's connection."""
    return [c.execute(sql, params).fetchone()[0] for c in shards]


def prepared(shards):
    """Prepared transactions left on all the shards together."""
    return sum(on_shards(shards, "SELECT count(*) FROM pg_prepared_xacts"))


def wait_for(pred, timeout=20):
    """Polls pred every 0.1 s until it holds (True) or timeout seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def crash_and_recover(check, cluster, shards, start_proxy, point, committed, write, rows, what):
    """Two-phase commit killed mid-way: a pgshard from start_proxy() with
    PGSHARD_TEST_CRASH=point runs write(conn), whose commit ends it (an _exit, as by kill -9);
    then a new one's recovery must leave no prepared transaction and rows() (a count per
    shard) wholly committed (1 on every shard) or wholly absent."""
    os.environ["PGSHARD_TEST_CRASH"] = point
    try:
        px = start_proxy()
    finally:
        del os.environ["PGSHARD_TEST_CRASH"]
    try:
        conn = cluster.connect(px.port)
        try:
            write(conn)
            st = None
        except psycopg.OperationalError as e:  # the connection was lost: no SQLSTATE
            st = str(e) or "connection lost"
        died = wait_for(lambda: not px.alive(), 10)
    finally:
        px.kill()  # it ended by itself (exit 137); this closes its log
    check(died and st is not None, f"{point}: pgshard ended mid-commit", f"alive={not died} {st}")
    with start_proxy():  # recovery runs at its start and every two_phase_recovery_interval_ms
        clean = wait_for(lambda: prepared(shards) == 0, 20)
        on = rows()
        want = [1 if committed else 0] * len(shards)
        check(clean and on == want,
              f"{point}: after restart no prepared transaction is left and the {what} is wholly "
              f"{'committed' if committed else 'absent'}", f"prepared={prepared(shards)} rows={on}")


def insert_rows(conn, table, columns, rows):
    """One multi-row INSERT with every value a bind parameter."""
    ncol = len(rows[0])
    values = ", ".join("(" + ", ".join(["%s"] * ncol) + ")" for _ in rows)
    conn.execute(f"INSERT INTO {table} ({columns}) VALUES {values}", [v for r in rows for v in r])


def _on_signal(signum, _frame):
    raise SystemExit(f"killed by signal {signum}")


def install_watchdog(seconds):
    """SIGALRM after `seconds` raises TimeoutError; SIGTERM, SIGINT and SIGHUP raise
    SystemExit, so that the test's finally/atexit stop the cluster."""
    def on_alarm(_signum, _frame):
        raise TimeoutError(f"the test did not finish within {seconds} s")

    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(s, _on_signal)


class Checks:
    """One line per check ("ok   name" or "FAIL name: detail") and the counts."""

    def __init__(self):
        self.passed = self.failed = 0

    def __call__(self, ok, name, detail=""):
        if ok:
            self.passed += 1
            print(f"ok   {name}")
        else:
            self.failed += 1
            print(f"FAIL {name}: {detail}")


def sqlstate_of(fn):
    """Runs fn: (None, "") when it succeeds, else the error's SQLSTATE and text."""
    try:
        fn()
    except psycopg.Error as e:
        return e.sqlstate, str(e)
    return None, ""

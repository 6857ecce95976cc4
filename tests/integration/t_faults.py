#!/usr/bin/env python3
"""Fault injection across a real network (issue 14, item 3), on a cluster of its own.

Each PostgreSQL node (a primary and two streaming replicas) runs in a network namespace of
the test's own, reached from the root namespace, where pgshard runs, through a veth pair with
private addresses chosen per pid (10.213.X.0/24); the replicas stream from the primary over
veth pairs of their own, so that cutting a node from pgshard leaves replication alone.
Partitions are nftables drop rules inside a node's namespace (both directions, or one for a
half-open connection); latency, stalls, resets and slow closes come from a small TCP relay of
the test's own (toxiproxy-style) between a second pgshard and the primary.

Under every fault a load runs through pgshard: pgbench (-n, tpcb-like or -S) and the test's
own ledger writers, which insert two unique ids per transaction (BEGIN; INSERT; pg_sleep;
INSERT; COMMIT, one round trip each) and write down what each transaction returned:
committed (COMMIT answered COMMIT), failed before COMMIT was sent (both rows must be absent)
or in doubt (COMMIT sent, no answer: either both rows or none). After each scenario the
ledger is compared with the primary's table: no committed row lost, no half transaction.

Scenarios and what is expected (asserted unless the comment says "reported"):
  a. proxy <-> primary partition (5.5 s) mid-transaction: new writes fail with an error within
     primary_wait_ms + slack (the monitor sees the primary down); reads go on from the
     replicas; transactions in flight at the cut end with an error before the link heals:
     their server connections are closed by TCP keepalive (a silent idle socket) or by
     TCP_USER_TIMEOUT (unacknowledged data), set low here (server_keepalive_* and
     server_tcp_user_timeout_ms: about 3 s at most); after healing, new transactions
     succeed; nothing committed is lost.
  b. replica1 partitioned from pgshard: every read that starts 3 s after the cut succeeds,
     served by the primary or replica2, never replica1; reads in flight at the cut end
     after healing (reported); pgbench -S goes on.
  c. slow server through the relay: 40 ms per chunk each way: every transaction commits,
     slower than before; then a 5 s stall (in-flight transactions finish after it); a reset
     (RST both sides: in-flight transactions get an error within 10 s, the pool reconnects)
     and a slow close (FIN after 3 s of silence: the same within 3 + 10 s). Nothing lost.
  d. half-open TCP: packets from the primary to pgshard dropped (pgshard -> primary still
     delivered) for 5.5 s: the monitor sees the primary down, new writes fail within
     primary_wait_ms + slack; pgshard's server sockets carry the configured TCP keepalive
     (shown by ss), and transactions in flight end with an error (or in doubt) before the
     link heals, their connections closed by TCP_USER_TIMEOUT or keepalive.
  e. pg_ctl restart -m fast of the primary under load: in-flight transactions get an error
     (not a hang) within 15 s of the restart; new transactions succeed after it; nothing lost.

Skips (exit 77, "SKIP: ...") only when the kernel refuses network namespaces. Prints one line
per check and "N passed, M failed"; exits 1 when a check failed.
"""
import os
import sys

import need_psycopg  # noqa: F401
import psycopg  # noqa: E402

import atexit
import collections
import re
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time

os.environ["PGWIRE_TEST"] = "t_faults"
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pgwire  # noqa: E402

PGBIN = os.environ.get("PGS_PGBIN", "/usr/lib/postgresql/15/bin")
PID = os.getpid()
NSP = f"pgsf{PID}"          # namespace names: NSP + "p", "r1", "r2"
IFP = f"f{PID}"             # interface names (at most 15 characters)
USER, PASSWORD, DB = "app", "app", "app"
PG_PORT = 5432               # every node has a namespace of its own, hence the same port
OP_TIMEOUT = 40.0            # a client call silent this long counts as hung
PRIMARY_WAIT_MS = 2000
# A silent server connection is closed by keepalive (1 s idle + 2 probes 1 s apart) or by
# TCP_USER_TIMEOUT (2 s of unacknowledged data): about 3 s at most, well inside a cut.
KEEPIDLE = 1
USER_TIMEOUT_MS = 2000
DEAD_PEER_S = KEEPIDLE + 2 * 1
# Longer than each of pgshard's timeouts set below (server_connect_timeout 3 s, primary_wait_ms
# 2 s, query_wait_timeout 4 s), so that a client blocked through a whole cut shows that none
# of them ends it. A blocked connection resumes at TCP's next retransmission after the heal
# (200 ms doubling: 3.0, 6.2, 12.6 s after the first send), so a cut of 5.5 s costs ~6 s and
# one of 7 s ~13 s. PGS_FAULTS_CUT_SECONDS makes it longer for a look by hand.
CUT_SECONDS = float(os.environ.get("PGS_FAULTS_CUT_SECONDS", "5.5"))
T0 = time.monotonic()

# ------------------------------------------------------------------------ small helpers


def now():
    return time.monotonic() - T0


def log(s):
    print(f"[t_faults {now():6.1f}s] {s}", flush=True)


def run(args, check=True, timeout=120, **kw):
    r = subprocess.run(args, capture_output=True, text=True, timeout=timeout, cwd="/", **kw)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({r.returncode}): {r.stderr.strip()} {r.stdout.strip()}")
    return r


class Checks:
    def __init__(self):
        self.passed = self.failed = 0
        self.notes = []

    def __call__(self, ok, name, detail=""):
        if ok:
            self.passed += 1
            short = detail and len(detail) < 200 and "\n" not in detail
            print(f"ok   {name}" + (f": {detail}" if short else ""), flush=True)
        else:
            self.failed += 1
            print(f"FAIL {name}: {detail}", flush=True)

    def report(self, what):
        """Something measured and written down, not asserted."""
        self.notes.append(what)
        print(f"note {what}", flush=True)


CHECK = Checks()

# ------------------------------------------------------------------------ network


class Net:
    """Namespaces p, r1, r2; veth root<->node k at 10.213.X.4k/30 (root .4k+1, node .4k+2);
    veth p<->r at 10.213.X.(16+4r)/30 (p .17+4r, r .18+4r) for replication."""

    def __init__(self):
        self.made_ns, self.made_links = [], []
        used = run(["ip", "-4", "-o", "addr"]).stdout + run(["ip", "-4", "route"]).stdout
        for i in range(250):
            x = (PID + i) % 250 + 1
            if f"10.213.{x}." not in used:
                break
        else:
            raise RuntimeError("no free 10.213.X.0/24")
        self.x = x
        self.nodes = ["p", "r1", "r2"]

    def ns(self, node):
        return NSP + node

    def addr(self, node):
        """The node's address as pgshard sees it."""
        return f"10.213.{self.x}.{4 * self.nodes.index(node) + 2}"

    def root_addr(self, node):
        return f"10.213.{self.x}.{4 * self.nodes.index(node) + 1}"

    def node_if(self, node):
        return f"{IFP}s{self.nodes.index(node)}"

    def repl_addr(self, r):
        """The primary's address on replica r's replication link."""
        return f"10.213.{self.x}.{17 + 4 * r}"

    def setup(self):
        x = self.x
        for node in self.nodes:
            ns = self.ns(node)
            run(["ip", "netns", "add", ns])
            self.made_ns.append(ns)
            run(["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"])
            k = self.nodes.index(node)
            a, b = f"{IFP}r{k}", f"{IFP}s{k}"
            run(["ip", "link", "add", a, "type", "veth", "peer", "name", b])
            self.made_links.append(a)
            run(["ip", "link", "set", b, "netns", ns])
            run(["ip", "addr", "add", f"{self.root_addr(node)}/30", "dev", a])
            run(["ip", "link", "set", a, "up"])
            run(["ip", "netns", "exec", ns, "ip", "addr", "add", f"{self.addr(node)}/30", "dev", b])
            run(["ip", "netns", "exec", ns, "ip", "link", "set", b, "up"])
        for r in (1, 2):
            a, b = f"{IFP}p{r}", f"{IFP}q{r}"
            run(["ip", "link", "add", a, "type", "veth", "peer", "name", b])
            run(["ip", "link", "set", a, "netns", self.ns("p")])
            run(["ip", "link", "set", b, "netns", self.ns(f"r{r}")])
            run(["ip", "netns", "exec", self.ns("p"), "ip", "addr", "add", f"10.213.{x}.{17 + 4 * r}/30", "dev", a])
            run(["ip", "netns", "exec", self.ns("p"), "ip", "link", "set", a, "up"])
            run(["ip", "netns", "exec", self.ns(f"r{r}"), "ip", "addr", "add", f"10.213.{x}.{18 + 4 * r}/30",
                 "dev", b])
            run(["ip", "netns", "exec", self.ns(f"r{r}"), "ip", "link", "set", b, "up"])
        # nftables: one table per namespace, rules added and flushed by cut()/heal()
        for node in self.nodes:
            ns = self.ns(node)
            run(["ip", "netns", "exec", ns, "nft", "add", "table", "inet", "faults"])
            run(["ip", "netns", "exec", ns, "nft", "add chain inet faults in "
                 "{ type filter hook input priority 0; policy accept; }"])
            run(["ip", "netns", "exec", ns, "nft", "add chain inet faults out "
                 "{ type filter hook output priority 0; policy accept; }"])

    def cut(self, node, direction="both"):
        """Drops the node's packets on its link to the root namespace (pgshard's side):
        'both', 'in' (to the node) or 'out' (from the node: half-open)."""
        ns, dev = self.ns(node), self.node_if(node)
        if direction in ("both", "in"):
            run(["ip", "netns", "exec", ns, "nft", "add", "rule", "inet", "faults", "in", "iifname", dev, "drop"])
        if direction in ("both", "out"):
            run(["ip", "netns", "exec", ns, "nft", "add", "rule", "inet", "faults", "out", "oifname", dev, "drop"])

    def heal(self, node):
        ns = self.ns(node)
        run(["ip", "netns", "exec", ns, "nft", "flush", "chain", "inet", "faults", "in"])
        run(["ip", "netns", "exec", ns, "nft", "flush", "chain", "inet", "faults", "out"])

    def teardown(self):
        for ns in self.made_ns:
            r = run(["ip", "netns", "pids", ns], check=False)
            for p in r.stdout.split():
                try:
                    os.kill(int(p), signal.SIGKILL)
                except (OSError, ValueError):
                    pass
        for a in self.made_links:
            run(["ip", "link", "del", a], check=False)
        for ns in self.made_ns:
            for _ in range(50):
                if run(["ip", "netns", "del", ns], check=False).returncode == 0:
                    break
                time.sleep(0.1)
        self.made_ns, self.made_links = [], []


# ------------------------------------------------------------------------ PostgreSQL


class Cluster:
    def __init__(self, net):
        self.net = net
        self.tmp = None

    def data(self, node):
        return os.path.join(self.tmp, node)

    def sock(self, node):
        return os.path.join(self.tmp, f"sock_{node}")

    def as_pg(self, node, args, check=True, timeout=120):
        return run(["ip", "netns", "exec", self.net.ns(node), "runuser", "-u", "postgres", "--"] + args,
                   check=check, timeout=timeout)

    def psql(self, node, sql, db="postgres"):
        r = run(["runuser", "-u", "postgres", "--", f"{PGBIN}/psql", "-X", "-At", "-q", "-v", "ON_ERROR_STOP=1",
                 "-h", self.sock(node), "-p", str(PG_PORT), "-U", "postgres", "-d", db, "-c", sql], timeout=60)
        return r.stdout.strip()

    def pg_ctl(self, node, *args, timeout=90):
        return self.as_pg(node, [f"{PGBIN}/pg_ctl", *args, "-D", self.data(node), "-l",
                                 os.path.join(self.data(node), "postgresql.log"), "-w", "-t", "60"], timeout=timeout)

    def start(self):
        self.tmp = tempfile.mkdtemp(prefix="pgshard-faults.")
        os.chmod(self.tmp, 0o755)
        shutil.chown(self.tmp, "postgres", "postgres")
        for node in self.net.nodes:
            os.mkdir(self.sock(node))
            shutil.chown(self.sock(node), "postgres", "postgres")
        run(["runuser", "-u", "postgres", "--", f"{PGBIN}/initdb", "-D", self.data("p"), "-U", "postgres", "-E", "UTF8",
             "--locale=C", "--no-sync", "--no-instructions", "--auth-local=trust", "--auth-host=scram-sha-256"])
        with open(os.path.join(self.data("p"), "postgresql.conf"), "a") as f:
            f.write(f"""
# t_faults
listen_addresses = '*'
port = {PG_PORT}
unix_socket_directories = '{self.sock("p")}'
password_encryption = 'scram-sha-256'
wal_level = replica
max_wal_senders = 10
max_replication_slots = 10
wal_keep_size = '128MB'
hot_standby = on
max_connections = 200
fsync = off
synchronous_commit = on
full_page_writes = off
shared_buffers = 32MB
logging_collector = off
log_line_prefix = '%m [%p] %q%u@%d '
""")
        with open(os.path.join(self.data("p"), "pg_hba.conf"), "w") as f:
            f.write("local all all trust\nlocal replication all trust\n"
                    "host replication replicator 10.213.0.0/16 trust\n"
                    "host all all 10.213.0.0/16 scram-sha-256\n")
        self.pg_ctl("p", "start")
        self.psql("p", "SET password_encryption = 'scram-sha-256'; CREATE ROLE app LOGIN PASSWORD 'app'; "
                       "CREATE ROLE replicator REPLICATION LOGIN")
        self.psql("p", "CREATE DATABASE app OWNER app")
        for r in (1, 2):
            node = f"r{r}"
            self.as_pg(node, [f"{PGBIN}/pg_basebackup", "-D", self.data(node), "-R", "-X", "stream", "-c", "fast",
                              "--no-sync", "-C", "-S", f"faults_{node}", "-d",
                              f"host={self.net.repl_addr(r)} port={PG_PORT} user=replicator application_name={node}"])
            with open(os.path.join(self.data(node), "postgresql.conf"), "a") as f:
                f.write(f"\n# replica\nunix_socket_directories = '{self.sock(node)}'\n")
            self.pg_ctl(node, "start")
        deadline = time.monotonic() + 60
        while self.psql("p", "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'") != "2":
            if time.monotonic() > deadline:
                raise RuntimeError("replicas not streaming after 60 s")
            time.sleep(0.2)

    def connect(self, node="p", **kw):
        return psycopg.connect(host=self.net.addr(node), port=PG_PORT, user=USER, password=PASSWORD, dbname=DB,
                               autocommit=True, connect_timeout=10, **kw)

    def wait_replayed(self, timeout=60):
        lsn = self.psql("p", "SELECT pg_current_wal_lsn()")
        deadline = time.monotonic() + timeout
        for node in ("r1", "r2"):
            while self.psql(node, f"SELECT pg_last_wal_replay_lsn() >= '{lsn}'") != "t":
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{node} did not replay up to {lsn}")
                time.sleep(0.1)

    def stop(self):
        if not self.tmp:
            return
        for node in self.net.nodes:
            if os.path.exists(os.path.join(self.data(node), "postmaster.pid")):
                self.as_pg(node, [f"{PGBIN}/pg_ctl", "stop", "-D", self.data(node), "-m", "immediate", "-w", "-t", "10"],
                           check=False, timeout=30)
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp = None


# ------------------------------------------------------------------------ the fault relay


class Relay:
    """A TCP relay on 127.0.0.1 towards target, one thread with a selector. Modes:
    pass; latency (each chunk held `delay` s, each direction); stall (nothing forwarded);
    reset() closes every connection with a RST on both sides (SO_LINGER 0);
    slow_close(delay) stops forwarding, then after delay closes both sides with a FIN."""

    def __init__(self, target):
        self.target = target
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(128)
        self.lsock.setblocking(False)
        self.port = self.lsock.getsockname()[1]
        self.mode, self.delay = "pass", 0.0
        self.lock = threading.Lock()
        self.pairs = []          # [client_sock, server_sock, {sock: deque of (release, bytes)}, close_at]
        self.ops = collections.deque()
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.lsock, selectors.EVENT_READ, None)
        self.running = True
        self.thread = threading.Thread(target=self.loop, daemon=True)
        self.thread.start()

    def set(self, mode, delay=0.0):
        with self.lock:
            self.mode, self.delay = mode, delay

    def reset(self):
        self.ops.append(("reset", 0))

    def slow_close(self, delay):
        self.ops.append(("slow_close", delay))

    def count(self):
        return len(self.pairs)

    def _drop(self, pair, rst):
        for s in pair[:2]:
            try:
                self.sel.unregister(s)
            except (KeyError, ValueError):
                pass
            if rst:
                try:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                except OSError:
                    pass
            try:
                s.close()
            except OSError:
                pass
        if pair in self.pairs:
            self.pairs.remove(pair)

    def loop(self):
        while self.running:
            t = time.monotonic()
            while self.ops:
                op, arg = self.ops.popleft()
                for pair in list(self.pairs):
                    if op == "reset":
                        self._drop(pair, rst=True)
                    else:
                        pair[3] = t + arg
            for pair in list(self.pairs):
                if pair[3] is not None and t >= pair[3]:
                    for s in pair[:2]:
                        try:
                            s.shutdown(socket.SHUT_RDWR)
                        except OSError:
                            pass
                    self._drop(pair, rst=False)
            with self.lock:
                mode, delay = self.mode, self.delay
            pending = False
            for pair in list(self.pairs):
                if pair[3] is not None:
                    continue  # slow close: nothing forwarded any more
                for dst in pair[:2]:
                    q = pair[2][dst]
                    while q and mode != "stall" and q[0][0] <= t:
                        rel, data = q[0]
                        try:
                            n = dst.send(data)
                        except BlockingIOError:
                            break
                        except OSError:
                            self._drop(pair, rst=True)
                            q.clear()
                            break
                        if n < len(data):
                            q[0] = (rel, data[n:])
                            break
                        q.popleft()
                    if q:
                        pending = True
            for key, _ in self.sel.select(0.01 if pending or mode != "pass" else 0.1):
                if key.fileobj is self.lsock:
                    try:
                        c, _ = self.lsock.accept()
                    except OSError:
                        continue
                    try:
                        s = socket.create_connection(self.target, timeout=3)
                    except OSError:
                        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                        c.close()
                        continue
                    for x in (c, s):
                        x.setblocking(False)
                        x.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    pair = [c, s, {c: collections.deque(), s: collections.deque()}, None]
                    self.pairs.append(pair)
                    self.sel.register(c, selectors.EVENT_READ, (pair, s))
                    self.sel.register(s, selectors.EVENT_READ, (pair, c))
                    continue
                pair, dst = key.data
                if pair not in self.pairs or pair[3] is not None:
                    continue
                try:
                    data = key.fileobj.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    self._drop(pair, rst=False)
                    continue
                with self.lock:
                    d = self.delay if self.mode == "latency" else 0.0
                pair[2][dst].append((time.monotonic() + d, data))

    def close(self):
        self.running = False
        self.thread.join(5)
        for pair in list(self.pairs):
            self._drop(pair, rst=False)
        self.lsock.close()


# ------------------------------------------------------------------------ load


class IdGen:
    def __init__(self):
        self.n = 0
        self.lock = threading.Lock()

    def pair(self):
        with self.lock:
            self.n += 2
            return self.n - 1, self.n


IDS = IdGen()


class Tx:
    __slots__ = ("ids", "start", "end", "outcome", "err", "node")

    def __init__(self, ids, start):
        self.ids, self.start, self.end, self.outcome, self.err, self.node = ids, start, None, None, "", None


def query(c, sql):
    """pgwire's simple query, except that an ErrorResponse followed by a closed connection
    raises the error (with its SQLSTATE), not Closed."""
    c.send(pgwire.query_msg(sql))
    rows, tags, err = [], [], None
    while True:
        try:
            t, body = c.recv_msg()
        except pgwire.Closed:
            if err:
                raise err from None
            raise
        if t == b"D":
            rows.append(pgwire.parse_datarow(body))
        elif t == b"C":
            tags.append(body.rstrip(b"\0").decode())
        elif t == b"E":
            err = pgwire.PgError(pgwire.parse_error(body))
        elif t == b"Z":
            if err:
                raise err
            return rows, tags


def sqlstate(e):
    if isinstance(e, pgwire.PgError):
        return f"{e.code} {e.fields.get('M', '')}"[:120]
    if isinstance(e, socket.timeout):
        return "hung (no answer within the client's timeout)"
    if isinstance(e, pgwire.Closed):
        return "connection closed"
    return f"{type(e).__name__}: {e}"[:120]


class Load:
    """Ledger writers and readers through pgshard (pgwire.Conn, a socket timeout per call),
    and optionally pgbench beside them."""

    def __init__(self, port, scen, writers=3, readers=0, pgbench=None, seconds=20):
        self.port, self.scen = port, scen
        self.stop_ev = threading.Event()
        self.txs, self.reads = [], []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.writer, daemon=True) for _ in range(writers)]
        self.threads += [threading.Thread(target=self.reader, daemon=True) for _ in range(readers)]

        self.bench = None
        if pgbench is not None:
            self.bench_out = os.path.join(pgwire.WORK, f"pgbench_{scen}.out")
            env = dict(os.environ, PGPASSWORD=PASSWORD, PGCONNECT_TIMEOUT="10")
            self.bench_f = open(self.bench_out, "w")
            self.bench = subprocess.Popen([f"{PGBIN}/pgbench", "-h", "127.0.0.1", "-p", str(port), "-U", USER, "-n",
                                           "-c", "3", "-j", "1", "-T", str(int(seconds))] + pgbench + [DB],
                                          stdout=self.bench_f, stderr=subprocess.STDOUT, env=env, cwd="/")
        for t in self.threads:
            t.start()

    def conn(self):
        c = pgwire.Conn(self.port, timeout=OP_TIMEOUT)
        c.login(user=USER, password=PASSWORD, database=DB)
        return c

    def writer(self):
        c = None
        while not self.stop_ev.is_set():
            tx = Tx(IDS.pair(), now())
            stage = "connect"
            try:
                if c is None:
                    c = self.conn()
                stage = "begin"
                query(c, "BEGIN")
                query(c, f"INSERT INTO ledger (id, scen) VALUES ({tx.ids[0]}, '{self.scen}')")
                query(c, "SELECT pg_sleep(0.05)")
                query(c, f"INSERT INTO ledger (id, scen) VALUES ({tx.ids[1]}, '{self.scen}')")
                stage = "commit"
                _, tags = query(c, "COMMIT")
                tx.outcome = "committed" if tags == ["COMMIT"] else "failed"
                tx.err = "" if tags == ["COMMIT"] else f"COMMIT answered {tags}"
            except (pgwire.PgError, pgwire.Closed, OSError) as e:
                tx.outcome = "in_doubt" if stage == "commit" else "failed"
                tx.err = sqlstate(e)
                if c is not None:
                    c.abort()
                    c = None
            tx.end = now()
            with self.lock:
                self.txs.append(tx)
            if tx.outcome != "committed":
                time.sleep(0.2)
        if c is not None:
            c.terminate()

    def reader(self):
        c = None
        while not self.stop_ev.is_set():
            tx = Tx((), now())
            try:
                if c is None:
                    c = self.conn()
                rows, _ = query(c, "SELECT inet_server_addr()::text, count(*) FROM ledger")
                tx.outcome, tx.node = "ok", rows[0][0].split("/")[0] if rows[0][0] else "?"
            except (pgwire.PgError, pgwire.Closed, OSError) as e:
                tx.outcome, tx.err = "failed", sqlstate(e)
                if c is not None:
                    c.abort()
                    c = None
            tx.end = now()
            with self.lock:
                self.reads.append(tx)
            time.sleep(0.05)
        if c is not None:
            c.terminate()

    def stop(self):
        """Stops the clients (each finishes its current call, at most OP_TIMEOUT) and waits
        for pgbench. Returns the pgbench summary or None."""
        self.stop_ev.set()
        for t in self.threads:
            t.join(OP_TIMEOUT + 5)
        if self.bench is None:
            return None
        hung = False
        try:
            self.bench.wait(OP_TIMEOUT)
        except subprocess.TimeoutExpired:
            hung = True
            self.bench.kill()
            self.bench.wait()
        self.bench_f.close()
        with open(self.bench_out, errors="replace") as f:
            out = f.read()
        m = re.search(r"number of transactions actually processed: (\d+)", out)
        fm = re.search(r"number of failed transactions: (\d+)", out)
        return {"rc": self.bench.returncode, "hung": hung, "processed": int(m.group(1)) if m else 0,
                "failed": int(fm.group(1)) if fm else 0, "aborted": len(re.findall(r"client \d+ (?:script \d+ )?aborted", out)),
                "errors": sorted(set(re.findall(r"(?:ERROR|FATAL): +(.{0,70})", out)))[:3]}


def verify_ledger(cluster, load, name):
    """No committed row lost; no transaction half there; failed-before-COMMIT ones absent."""
    with cluster.connect("p") as c:
        ids = {r[0] for r in c.execute("SELECT id FROM ledger WHERE scen = %s", (load.scen,)).fetchall()}
    counts = collections.Counter(tx.outcome for tx in load.txs)
    lost = [tx for tx in load.txs if tx.outcome == "committed" and not all(i in ids for i in tx.ids)]
    half = [tx for tx in load.txs if (tx.ids[0] in ids) != (tx.ids[1] in ids)]
    ghost = [tx for tx in load.txs if tx.outcome == "failed" and (tx.ids[0] in ids or tx.ids[1] in ids)]
    doubt_kept = sum(1 for tx in load.txs if tx.outcome == "in_doubt" and tx.ids[0] in ids)
    CHECK(not lost, f"{name}: no committed transaction lost", f"{len(lost)} lost, e.g. {[t.ids for t in lost[:5]]}")
    CHECK(not half, f"{name}: every transaction wholly there or wholly absent", f"{[t.ids for t in half[:5]]}")
    CHECK(not ghost, f"{name}: transactions that failed before COMMIT left no row", f"{[t.ids for t in ghost[:5]]}")
    return {"committed": counts["committed"], "failed": counts["failed"], "in_doubt": counts["in_doubt"],
            "in_doubt_kept": doubt_kept, "lost": len(lost)}


def has_sqlstate(err):
    return bool(re.match(r"[0-9A-Z]{5} ", err or ""))


def errors_of(txs, n=3):
    return sorted(collections.Counter(t.err for t in txs if t.err).items(), key=lambda kv: -kv[1])[:n]


def probe(port, sql, timeout=OP_TIMEOUT):
    """A fresh client runs sql: (ok, error, seconds, first row)."""
    t = time.monotonic()
    c = None
    try:
        c = pgwire.Conn(port, timeout=timeout)
        c.login(user=USER, password=PASSWORD, database=DB)
        rows, _ = query(c, sql)
        c.terminate()
        return True, "", time.monotonic() - t, rows[0] if rows else None
    except (pgwire.PgError, pgwire.Closed, OSError) as e:
        if c is not None:
            c.abort()
        return False, sqlstate(e), time.monotonic() - t, None


def probe_reads(port, until, every=0.25, timeout=10):
    """From now until `until` (now()), a read on a new connection every `every` s, each in a
    thread of its own so that one blocked read does not hold back the next. Returns their
    Tx records once all have ended (each within timeout)."""
    out, threads = [], []

    def one():
        tx = Tx((), now())
        ok, err, _, row = probe(port, "SELECT inet_server_addr()::text", timeout=timeout)
        tx.outcome, tx.err = ("ok" if ok else "failed"), err
        tx.node = row[0].split("/")[0] if ok and row and row[0] else None
        tx.end = now()
        out.append(tx)

    while now() < until:
        t = threading.Thread(target=one, daemon=True)
        t.start()
        threads.append(t)
        time.sleep(every)
    for t in threads:
        t.join(timeout + 5)
    return out


def wait_write_ok(port, timeout=30):
    """Seconds until a new write through pgshard succeeds, or None."""
    t = time.monotonic()
    while time.monotonic() - t < timeout:
        ok, err, _, _ = probe(port, f"INSERT INTO ledger (id, scen) VALUES ({IDS.pair()[0]}, 'probe')", timeout=10)
        if ok:
            return time.monotonic() - t
        time.sleep(0.2)
    return None


def show_replicas(port):
    c = pgwire.Conn(port, timeout=10)
    c.login(user=USER, password=PASSWORD, database="pgshard")
    rows, _ = query(c, "SHOW REPLICAS")
    c.terminate()
    return rows  # shard,node,role,host,port,health,in_recovery,lag_bytes,lag_ms,circuit,weight,reads


def wait_nodes_up(port, timeout=30):
    deadline = time.monotonic() + timeout
    rows = []
    while time.monotonic() < deadline:
        try:
            rows = show_replicas(port)
            if rows and all(r[5] == "up" and r[9] == "closed" for r in rows):
                return True
        except (pgwire.PgError, pgwire.Closed, OSError):
            pass
        time.sleep(0.2)
    log(f"nodes not all up: {rows}")
    return False


def wait_node_down(port, host, timeout=15):
    """Seconds until SHOW REPLICAS shows node `host` down, or None."""
    t = time.monotonic()
    while time.monotonic() - t < timeout:
        try:
            if any(r[3] == host and r[5] != "up" for r in show_replicas(port)):
                return time.monotonic() - t
        except (pgwire.PgError, pgwire.Closed, OSError):
            pass
        time.sleep(0.1)
    return None


def server_sockets(addr):
    """pgshard's TCP connections to addr:5432 with their timers (ss -tno)."""
    out = run(["ss", "-Htno", "state", "established", "dst", f"{addr}:{PG_PORT}"], check=False).stdout
    return [line for line in out.splitlines() if line.strip()]


# ------------------------------------------------------------------------ scenarios


def fmt(d):
    return ", ".join(f"{k} {v}" for k, v in d.items())


def scenario_partition(cluster, net, px, results):
    """a. pgshard <-> primary partitioned (both directions) for CUT_SECONDS mid-transaction."""
    name = "a. primary partition"
    log(f"{name}: load, then the primary's link dropped for {CUT_SECONDS} s")
    load = Load(px.port, "a", writers=3, readers=1, pgbench=[], seconds=16)
    time.sleep(3)
    t_cut = now()
    net.cut("p")
    # The monitor notices within its poll query timeout (1 s here).
    seen = wait_node_down(px.port, net.addr("p"))
    CHECK(seen is not None, f"{name}: the monitor shows the primary down", "not within 15 s")
    # Expectation: a new write fails (57P03 after primary_wait_ms), it does not hang.
    ok, err, secs, _ = probe(px.port, f"INSERT INTO ledger (id, scen) VALUES ({IDS.pair()[0]}, 'probe')")
    CHECK(not ok and secs < PRIMARY_WAIT_MS / 1000 + 10,
          f"{name}: a new write during the partition fails within primary_wait_ms + 10 s",
          f"ok={ok} after {secs:.1f} s: {err}")
    new_write = (ok, err, secs)
    # Expectation: reads go on, served by a replica.
    ok, err, secs, row = probe(px.port, "SELECT inet_server_addr()::text")
    served = row[0].split("/")[0] if row and row[0] else None
    CHECK(ok and served in (net.addr("r1"), net.addr("r2")) and secs < 10,
          f"{name}: a read during the partition is served by a replica", f"ok={ok} {served} {secs:.1f} s {err}")
    time.sleep(max(0.0, t_cut + CUT_SECONDS - now()))
    t_heal = now()
    net.heal("p")
    log(f"{name}: healed")
    # Expectation: after healing, writes succeed again (the pool recovers).
    rec = wait_write_ok(px.port)
    CHECK(rec is not None, f"{name}: after healing a new write succeeds (pool recovers)",
          f"none within 30 s; log: {px.log_tail(10)}")
    time.sleep(2)
    bench = load.stop()
    # Expectation: the transactions in flight during the cut end with an error before the
    # link heals: keepalive or TCP_USER_TIMEOUT closes their server connections (within
    # DEAD_PEER_S of the cut; the cut is longer), and pgshard tells their clients.
    # Those that started during the cut end (an error, or after the heal) by heal + 30 s.
    inflight = [t for t in load.txs if t.start < t_heal and t.end > t_cut]
    at_cut = [t for t in inflight if t.start < t_cut]
    late = [t for t in at_cut if t.end >= t_heal]
    CHECK(not late, f"{name}: the {len(at_cut)} transactions in flight at the cut ended before the link healed "
                    f"(dead server connections closed within {DEAD_PEER_S} s of the cut)",
          f"{[(round(t.start - t_cut, 1), round(t.end - t_cut, 1), t.outcome, t.err) for t in late]}")
    late = [t for t in inflight if t.end > t_heal + 30]
    CHECK(not late, f"{name}: transactions started during the cut ended by heal + 30 s",
          f"{[(t.start, t.end, t.err) for t in late]}")
    blocked = max((t.end - max(t.start, t_cut) for t in inflight), default=0)
    inflight_err = [t for t in inflight if t.outcome != "committed"]
    CHECK(bench is not None and not bench["hung"], f"{name}: pgbench ended (not hung)", f"{bench}")
    v = verify_ledger(cluster, load, name)
    results[name] = dict(v, inflight=len(inflight), inflight_failed=len(inflight_err),
                         inflight_blocked_s=round(blocked, 1), new_write=f"{new_write[1]} after {new_write[2]:.1f} s",
                         recovered_after_heal_s=round(rec, 1) if rec is not None else None,
                         errors=errors_of(load.txs), pgbench=bench)
    CHECK.report(f"{name}: the {len(inflight)} transactions in flight during the cut ended at most "
                 f"{blocked:.1f} s after the cut ({len(inflight_err)} with an error)")


def scenario_replica(cluster, net, px, results):
    """b. replica1 partitioned from pgshard (replication untouched).
    Expectation: once the monitor shows replica1 down (its poll query times out after 1 s),
    every new read is served by replica2 or the primary and succeeds; no read fails except
    those already routed to replica1 at the cut (they block until the heal, or wait for one of
    replica1's pool slots that the blocked ones hold and get query_wait_timeout's 53400);
    after healing replica1 comes back (up, circuit closed)."""
    name = "b. replica partition"
    log(f"{name}: read load, then replica1's link dropped for {CUT_SECONDS} s")
    load = Load(px.port, "b", writers=1, readers=3, pgbench=["-S"], seconds=14)
    time.sleep(3)
    t_cut = now()
    net.cut("r1")
    seen = wait_node_down(px.port, net.addr("r1"))
    CHECK(seen is not None, f"{name}: the monitor shows replica1 down", "not within 15 s")
    time.sleep(0.5)  # the workers take the monitor's snapshot
    grace = now() - t_cut
    fresh = probe_reads(px.port, max(now() + 2, t_cut + CUT_SECONDS))
    t_heal = now()
    net.heal("r1")
    time.sleep(3)
    bench = load.stop()
    # Reads on new connections, started once the monitor had time to see replica1 down.
    after = fresh
    bad = [r for r in after if r.outcome != "ok" or r.node == net.addr("r1")]
    CHECK(len(after) >= 3 and not bad, f"{name}: every read started after replica1 was seen down succeeds, "
          f"not on replica1", f"{len(after)} reads, bad: {[(r.start, r.node, r.err) for r in bad[:5]]}")
    names = {net.addr(n): n for n in net.nodes}
    served = collections.Counter(names.get(r.node, r.node) for r in after)
    allreads = load.reads + fresh
    inflight = [r for r in allreads if r.start < t_cut + grace and r.end > t_cut]
    failed = [r for r in allreads if r.outcome != "ok"]
    CHECK(all(r.start < t_cut + grace for r in failed), f"{name}: no read fails but those in flight at the cut",
          f"{[(r.start, r.err) for r in failed[:5]]}")
    late = [r for r in inflight if r.end > t_heal + 30]
    CHECK(not late, f"{name}: reads in flight at the cut ended by heal + 30 s", f"{len(late)}")
    CHECK(bench is not None and not bench["hung"], f"{name}: pgbench -S ended (not hung)", f"{bench}")
    ok = wait_nodes_up(px.port, 20)
    CHECK(ok, f"{name}: replica1 is up with a closed circuit again after healing")
    v = verify_ledger(cluster, load, name)
    blocked = max((r.end - t_cut for r in inflight), default=0)
    results[name] = dict(reads=len(allreads), reads_failed=len(failed), read_errors=errors_of(failed),
                         reads_after_cut=len(after), served_after_cut=dict(served),
                         inflight_reads=len(inflight), inflight_blocked_s=round(blocked, 1), pgbench=bench,
                         writes=v)


def scenario_relay(cluster, net, relay, px2, results):
    """c. slow server: latency, stall, reset and slow close from the relay.
    Expectation: under latency every transaction commits, only slower; a stall shorter than
    the monitor's patience only delays what is in flight; a reset or a slow close ends the
    transactions in flight with an error (08006) within a few seconds, the pool reconnects
    at once, and in every case nothing committed is lost."""
    name = "c. slow server"
    log(f"{name}: baseline, then 40 ms per chunk each way")
    load = Load(px2.port, "c", writers=3, pgbench=[], seconds=10)
    time.sleep(3)
    t_lat = now()
    relay.set("latency", 0.040)
    time.sleep(6)
    t_lat_end = now()
    relay.set("pass")
    time.sleep(1)
    bench = load.stop()
    before = [t for t in load.txs if t.end < t_lat and t.outcome == "committed"]
    during = [t for t in load.txs if t.start > t_lat + 0.5 and t.end < t_lat_end]
    dur_b = sum(t.end - t.start for t in before) / max(1, len(before))
    dur_d = sum(t.end - t.start for t in during) / max(1, len(during))
    CHECK(during and all(t.outcome == "committed" for t in during),
          f"{name}: every transaction under latency commits", f"{len(during)} {errors_of(during)}")
    # 4 statements and a COMMIT, each a round trip through 2 x 40 ms: at least 0.3 s.
    CHECK(dur_d > 0.3 and dur_d > dur_b, f"{name}: transactions are slower under latency",
          f"{dur_b * 1000:.0f} ms before, {dur_d * 1000:.0f} ms with latency")
    CHECK(bench is not None and not bench["hung"] and bench["aborted"] == 0,
          f"{name}: pgbench under latency: no client aborted", f"{bench}")
    v = verify_ledger(cluster, load, name)
    results[name] = dict(v, ms_per_tx_before=round(dur_b * 1000), ms_per_tx_latency=round(dur_d * 1000),
                         pgbench=bench)

    name = "c2. stall"
    log(f"{name}: the relay forwards nothing for 5 s")
    load = Load(px2.port, "c2", writers=3)
    time.sleep(2)
    t_st = now()
    relay.set("stall")
    time.sleep(5)
    t_end = now()
    relay.set("pass")
    rec = wait_write_ok(px2.port)
    time.sleep(1)
    load.stop()
    inflight = [t for t in load.txs if t.start < t_st and t.end > t_st]
    late = [t for t in load.txs if t.end > t_end + 30]
    CHECK(not late, f"{name}: transactions blocked by the stall ended by its end + 30 s", f"{len(late)}")
    CHECK(rec is not None, f"{name}: writes succeed after the stall", px2.log_tail(5))
    v = verify_ledger(cluster, load, name)
    results[name] = dict(v, inflight=len(inflight), inflight_failed=sum(t.outcome != "committed" for t in inflight),
                         errors=errors_of(load.txs))

    for name, scen, act, bound in (("c3. reset", "c3", lambda: relay.reset(), 10.0),
                                   ("c4. slow close", "c4", lambda: relay.slow_close(3.0), 13.0)):
        log(f"{name}: under load")
        load = Load(px2.port, scen, writers=3)
        time.sleep(2)
        t_f = now()
        act()
        time.sleep(0.5)
        rec = wait_write_ok(px2.port)
        time.sleep(2)
        load.stop()
        inflight = [t for t in load.txs if t.start < t_f and t.end > t_f]
        slow = [t for t in inflight if t.end > t_f + bound]
        # Expectation: each in-flight transaction ends (an error: its server connection is
        # gone) within the bound; none hangs.
        CHECK(inflight and not slow, f"{name}: transactions in flight end within {bound:.0f} s",
              f"{len(inflight)} in flight, {[(round(t.end - t_f, 1), t.err) for t in slow[:3]]}")
        failed = [t for t in inflight if t.outcome != "committed"]
        CHECK(all(has_sqlstate(t.err) for t in failed), f"{name}: the clients cut off get an ErrorResponse "
              f"with a SQLSTATE, not a bare close", f"{errors_of(failed)}")
        CHECK(rec is not None, f"{name}: a new write succeeds afterwards (the pool reconnects)", px2.log_tail(5))
        v = verify_ledger(cluster, load, name)
        results[name] = dict(v, inflight=len(inflight),
                             inflight_failed=sum(t.outcome != "committed" for t in inflight),
                             inflight_max_s=round(max((t.end - t_f for t in inflight), default=0), 1),
                             recovered_s=round(rec, 1) if rec is not None else None, errors=errors_of(load.txs))


def scenario_half_open(cluster, net, px, results):
    """d. half-open: the primary's packets to pgshard dropped, pgshard's still delivered.
    Expectation: the monitor shows the primary down and new writes fail with 57P03 within
    primary_wait_ms + slack; what was sent reaches the server (it may commit) but its
    acknowledgements and answers do not, so TCP_USER_TIMEOUT (or keepalive, on an idle
    connection) closes the server connections and the transactions in flight end with an
    error, or in doubt after a COMMIT, before the heal; nothing committed is lost. Keepalive:
    checked that pgshard's server sockets have it, with the configured idle time."""
    name = "d. half-open"
    # pgshard's pool sockets have SO_KEEPALIVE with server_keepalive_idle (ss -o shows the
    # keepalive timer counting down from it on an idle one); the monitor's libpq connection
    # keeps the kernel's idle time (7200 s). A socket with unacknowledged data shows a
    # retransmission timer instead.
    socks = server_sockets(net.addr("p"))
    timers = [re.search(r"timer:\((\w+),([\d.]+)(min|sec|ms)", x) for x in socks]
    unit = {"min": 60.0, "sec": 1.0, "ms": 0.001}
    keep = [m for m in timers if m and m.group(1) == "keepalive" and float(m.group(2)) * unit[m.group(3)] <= KEEPIDLE]
    CHECK(keep, f"{name}: pgshard's server sockets carry TCP keepalive ({KEEPIDLE} s idle, as configured)",
          f"{len(socks)} sockets: {[x.split()[-1] for x in socks]}")
    log(f"{name}: load, then the primary's packets to pgshard dropped for {CUT_SECONDS} s")
    load = Load(px.port, "d", writers=3, pgbench=[], seconds=14)
    time.sleep(3)
    t_cut = now()
    net.cut("p", "out")
    seen = wait_node_down(px.port, net.addr("p"))
    CHECK(seen is not None, f"{name}: the monitor shows the primary down", "not within 15 s")
    ok, err, secs, _ = probe(px.port, f"INSERT INTO ledger (id, scen) VALUES ({IDS.pair()[0]}, 'probe')")
    CHECK(not ok and secs < PRIMARY_WAIT_MS / 1000 + 10,
          f"{name}: a new write while half-open fails within primary_wait_ms + 10 s",
          f"ok={ok} after {secs:.1f} s: {err}")
    new_write = f"{err} after {secs:.1f} s"
    time.sleep(max(0.0, t_cut + CUT_SECONDS - now()))
    still = server_sockets(net.addr("p"))
    t_heal = now()
    net.heal("p")
    rec = wait_write_ok(px.port)
    CHECK(rec is not None, f"{name}: after healing a new write succeeds", px.log_tail(5))
    time.sleep(2)
    bench = load.stop()
    inflight = [t for t in load.txs if t.start < t_heal and t.end > t_cut]
    late = [t for t in inflight if t.start < t_cut and t.end >= t_heal]
    CHECK(not late, f"{name}: transactions in flight at the cut ended before the link healed (their server "
                    f"connections closed by TCP_USER_TIMEOUT or keepalive)",
          f"{[(round(t.start - t_cut, 1), round(t.end - t_cut, 1), t.outcome, t.err) for t in late]}")
    late = [t for t in inflight if t.end > t_heal + 30]
    CHECK(not late, f"{name}: transactions in flight ended by heal + 30 s", f"{len(late)}")
    CHECK(bench is not None and not bench["hung"], f"{name}: pgbench ended (not hung)", f"{bench}")
    v = verify_ledger(cluster, load, name)
    detect = DEAD_PEER_S
    results[name] = dict(v, inflight=len(inflight), inflight_failed=sum(t.outcome != "committed" for t in inflight),
                         inflight_blocked_s=round(max((t.end - t.start for t in inflight), default=0), 1),
                         new_write=new_write, server_sockets_still_open_at_heal=len(still),
                         keepalive_detection_s=detect, pgbench=bench, errors=errors_of(load.txs))
    CHECK.report(f"{name}: {len(still)} of pgshard's server sockets to the silent primary were still open at the "
                 f"heal (the monitor's, or ones opened late in the cut); with the defaults (60 s idle, 10 s x 6 "
                 f"probes) a dead idle peer is noticed after ~120 s")


def scenario_restart(cluster, net, px, results):
    """e. pg_ctl restart -m fast of the primary under load."""
    name = "e. primary restart"
    log(f"{name}: load, then pg_ctl restart -m fast of the primary")
    load = Load(px.port, "e", writers=3, pgbench=[], seconds=12)
    time.sleep(3)
    t_r = now()
    cluster.pg_ctl("p", "restart", "-m", "fast")
    t_up = now()
    rec = wait_write_ok(px.port)
    time.sleep(3)
    bench = load.stop()
    inflight = [t for t in load.txs if t.start < t_up and t.end > t_r]
    # Expectation: the restart ends the transactions in flight with an error (57P01 from the
    # server, or pgshard's 08006 when the connection is gone), not a hang; writes wait for the
    # primary (primary_wait_ms) and succeed once it is back; nothing committed is lost.
    hung = [t for t in inflight if t.outcome != "committed" and t.end > t_r + 15]
    cut = [t for t in inflight if t.outcome != "committed"]
    CHECK(all(has_sqlstate(t.err) for t in cut), f"{name}: the clients cut off get an ErrorResponse with a "
          f"SQLSTATE, not a bare close", f"{errors_of(cut)}")
    CHECK(not hung, f"{name}: transactions cut by the restart got their error within 15 s",
          f"{[(round(t.end - t_r, 1), t.err) for t in hung[:3]]}")
    after = [t for t in load.txs if t.start > t_up + (rec or 0) + 1]
    CHECK(rec is not None and after and all(t.outcome == "committed" for t in after),
          f"{name}: after the restart new transactions succeed",
          f"recovered {rec}, {len(after)} after, {errors_of(after)}")
    CHECK(bench is not None and not bench["hung"], f"{name}: pgbench ended (not hung)", f"{bench}")
    v = verify_ledger(cluster, load, name)
    results[name] = dict(v, restart_s=round(t_up - t_r, 1), inflight=len(inflight),
                         inflight_failed=sum(t.outcome != "committed" for t in inflight),
                         recovered_after_restart_s=round(rec, 1) if rec is not None else None,
                         errors=errors_of(load.txs), pgbench=bench)


# ------------------------------------------------------------------------ main


def can_netns():
    probe_ns = f"{NSP}probe"
    r = run(["ip", "netns", "add", probe_ns], check=False)
    if r.returncode != 0:
        return r.stderr.strip() or f"exit {r.returncode}"
    run(["ip", "netns", "del", probe_ns], check=False)
    return None


def main():
    why = None
    if os.geteuid() != 0:
        why = "not root: network namespaces need CAP_NET_ADMIN"
    elif not shutil.which("ip"):
        why = "no ip (iproute2)"
    else:
        why = can_netns()
    if why:
        print(f"SKIP: t_faults needs network namespaces, which this kernel or container refuses: {why}", flush=True)
        return 77
    if not shutil.which("nft"):
        print("FAIL nft not found: install nftables (scripts/deps.sh does)")
        print("0 passed, 1 failed")
        return 1

    def on_alarm(_s, _f):
        raise TimeoutError("t_faults did not finish within 280 s")

    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(280)
    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(s, lambda signum, _f: (_ for _ in ()).throw(SystemExit(f"killed by signal {signum}")))
    os.makedirs(pgwire.WORK, exist_ok=True)

    net = Net()
    cluster = Cluster(net)
    proxies, relay = [], None

    def cleanup():
        for p in proxies:
            p.kill()
        if relay is not None:
            relay.close()
        cluster.stop()
        net.teardown()

    atexit.register(cleanup)
    results = {}
    try:
        net.setup()
        log(f"namespaces {NSP}p/r1/r2 on 10.213.{net.x}.0/24")
        cluster.start()
        with cluster.connect("p") as c:
            c.execute("CREATE TABLE ledger (id bigint PRIMARY KEY, scen text NOT NULL)")
        r = run([f"{PGBIN}/pgbench", "-i", "-s", "1", "-q", "-h", net.addr("p"), "-p", str(PG_PORT), "-U", USER, DB],
                env=dict(os.environ, PGPASSWORD=PASSWORD))
        cluster.wait_replayed()
        log("cluster ready")
        common = dict(workers=2, pool_size=6, monitor_dbname=DB, lag_poll_ms=100, primary_wait_ms=PRIMARY_WAIT_MS,
                      query_wait_timeout=4, server_connect_timeout=3, shutdown_timeout=3, admin_users=USER,
                      max_lag_ms=5000, server_keepalive_idle=KEEPIDLE, server_keepalive_interval=1,
                      server_keepalive_count=2, server_tcp_user_timeout_ms=USER_TIMEOUT_MS)
        px = pgwire.Proxy("px", primary=f"{net.addr('p')}:{PG_PORT}",
                          shard_keys={"replicas": f"{net.addr('r1')}:{PG_PORT},{net.addr('r2')}:{PG_PORT}"}, **common)
        proxies.append(px)
        relay = Relay((net.addr("p"), PG_PORT))
        px2 = pgwire.Proxy("px_relay", primary=f"127.0.0.1:{relay.port}", **common)
        proxies.append(px2)
        CHECK(wait_nodes_up(px.port), "pgshard sees the primary and both replicas up")

        scenario_partition(cluster, net, px, results)
        scenario_replica(cluster, net, px, results)
        scenario_relay(cluster, net, relay, px2, results)
        scenario_half_open(cluster, net, px, results)
        scenario_restart(cluster, net, px, results)

        for p in proxies:
            CHECK(p.alive(), f"pgshard {p.name} is still running")
        for p in list(proxies):
            try:
                p.stop()
                CHECK(True, f"pgshard {p.name} stops cleanly on SIGTERM")
            except AssertionError as e:
                CHECK(False, f"pgshard {p.name} stops cleanly on SIGTERM", str(e)[:300])
            proxies.remove(p)
    except Exception as e:  # noqa: BLE001 - report and clean up whatever failed
        import traceback
        traceback.print_exc()
        CHECK(False, "the test ran to its end", f"{type(e).__name__}: {e}")
    finally:
        signal.alarm(0)
        print("\nresults per scenario:")
        for k, v in results.items():
            print(f"  {k}: {fmt(v)}")
        cleanup()
    print(f"{CHECK.passed} passed, {CHECK.failed} failed ({now():.1f} s)")
    return 1 if CHECK.failed else 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""The benchmark behind `make bench` (started by scripts/bench.sh, which documents the knobs):
a throw-away cluster, pgshard and PgBouncer in front of it, pgbench against PostgreSQL
directly, PgBouncer and pgshard, interleaved and repeated, and the measurements of each timed
window in RESULTS/runs.csv. tests/bench/report.py turns those into the tables and the chart.

A timed window starts after the warm-up, counted from pgbench's first progress line (so after
every client has logged in): the transactions are those whose completion time in pgbench's
per-transaction log falls inside it, and the proxy's CPU and context switches are read from
/proc at its two ends. Everything started here is stopped on exit, on error and on a signal.
"""
import math
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import report  # noqa: E402

PGBIN = "/usr/lib/postgresql/15/bin"
HZ = os.sysconf("SC_CLK_TCK")


def env_int(name, default):
    v = os.environ.get(name, "")
    return int(v) if v.strip() else default


def env_list(name, default):
    v = os.environ.get(name, "")
    return [int(x) for x in v.replace(",", " ").split()] if v.strip() else default


class Knobs:
    """The environment, read once. BENCH_QUICK changes the defaults, not explicit settings."""

    def __init__(self):
        q = os.environ.get("BENCH_QUICK", "0") == "1"
        self.quick = q
        self.seconds = env_int("BENCH_SECONDS", 3 if q else 10)
        self.warmup = env_int("BENCH_WARMUP", 1 if q else 3)
        self.scale = env_int("BENCH_SCALE", 2 if q else 10)
        self.repeat = env_int("BENCH_REPEAT", 1 if q else 3)
        self.workers = env_int("BENCH_WORKERS", 0)  # 0: pgshard's default (resolved by Bench)
        self.replicas = env_int("BENCH_REPLICAS", 0)
        self.pool = env_int("BENCH_POOL", 20)
        self.clients = env_list("BENCH_CLIENTS", [16] if q else [1, 16, 64, 256])
        self.idle = env_list("BENCH_IDLE", [1000] if q else [1000, 10000])
        self.scenarios = set(os.environ.get("BENCH_SCENARIOS", "select connect tpcb sharded idle").split())
        self.sharded = os.environ.get("BENCH_SHARDED", "1") != "0" and "sharded" in self.scenarios
        if "idle" not in self.scenarios:
            self.idle = []
        self.auth = os.environ.get("BENCH_AUTH", "scram-sha-256")
        self.modes = ["simple", "extended", "prepared"]


class Failure(Exception):
    pass


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_sample(pid):
    """(utime+stime seconds of every thread, voluntary, involuntary context switches summed
    over the threads). /proc/PID/stat already sums the threads' CPU; the switches in
    /proc/PID/status are the main thread's only, hence the walk over task/."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / HZ
    vol = invol = 0
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/status" % (pid, tid)) as f:
                for line in f:
                    if line.startswith("voluntary_ctxt_switches"):
                        vol += int(line.split()[1])
                    elif line.startswith("nonvoluntary_ctxt_switches"):
                        invol += int(line.split()[1])
        except FileNotFoundError:
            pass  # a thread that ended between listdir and open
    return cpu, vol, invol


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1])
    raise Failure("no VmRSS for pid %d" % pid)


def percentile(sorted_vals, p):
    """Nearest-rank percentile of an ascending list."""
    return sorted_vals[max(0, min(len(sorted_vals) - 1, math.ceil(p * len(sorted_vals)) - 1))]


class Target:
    """Where pgbench connects: a port, and the pid whose CPU is counted (None for PostgreSQL
    itself, whose per-backend CPU is not the point here)."""

    def __init__(self, name, port, pid=None):
        self.name, self.port, self.pid = name, port, pid


class Bench:
    def __init__(self, src, build, out, knobs):
        self.src, self.out, self.k = src, out, knobs
        self.bin = os.path.join(src, build, "pgshard")
        if not knobs.workers:
            knobs.workers = self.default_workers()
        self.cluster_sh = os.path.join(src, "tests", "cluster", "cluster.sh")
        self.work = tempfile.mkdtemp(prefix="pgshard-bench.")
        os.chmod(self.work, 0o755)
        self.clusters = []  # cluster directories to stop
        self.children = []  # Popen of pgshard instances and helpers, ours to end
        self.bouncer_pids = []  # daemonized PgBouncers, ended by pid
        self.runs = []  # rows for runs.csv
        self.env = dict(os.environ, PGPASSWORD="app", PGCONNECT_TIMEOUT="10")
        self.t_start = time.time()

    # ---- processes -------------------------------------------------------------------------

    def log(self, msg):
        t = int(time.time() - self.t_start)
        print("[%2d:%02d] %s" % (t // 60, t % 60, msg), flush=True)

    def sh(self, *cmd, **kw):
        return subprocess.run(list(cmd), check=True, env=self.env, **kw)

    def psql(self, port, sql, db="app"):
        out = subprocess.run([PGBIN + "/psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1",
                              "-h", "127.0.0.1", "-p", str(port), "-U", "app", "-d", db,
                              "-c", sql], env=self.env, capture_output=True, text=True)
        if out.returncode:
            raise Failure("psql :%s %r: %s" % (port, sql, out.stderr.strip()))
        return out.stdout.strip()

    def cluster_start(self, name, shards, replicas):
        """Starts a cluster in the background (both clusters come up at once); cluster_env
        waits for it."""
        d = os.path.join(self.work, name)
        self.clusters.append(d)
        return d, subprocess.Popen([self.cluster_sh, "start", d, "--shards", str(shards),
                                    "--replicas", str(replicas)], stdout=subprocess.DEVNULL)

    def cluster_env(self, started):
        d, p = started
        if p.wait():
            raise Failure("cluster.sh start %s failed" % d)
        env = {}
        with open(os.path.join(d, "cluster.env")) as f:
            for line in f:
                if "=" in line and not line.startswith("#"):
                    k, v = line.strip().split("=", 1)
                    env[k] = v
        return d, env

    def raise_max_connections(self, d, env, n):
        """The fixture's 300 connections do not hold 256 direct clients next to a session-
        pooling PgBouncer with one server per client. Replicas first: a standby stops when its
        primary's max_connections exceeds its own."""
        nodes = []
        for k in range(int(env["PGS_SHARDS"])):
            for r in range(1, int(env["PGS_REPLICAS"]) + 1):
                nodes.append((k, "replica%d" % r, env["PGS_SHARD%d_REPLICA%d_DATA" % (k, r)]))
            nodes.append((k, "primary", env["PGS_SHARD%d_PRIMARY_DATA" % k]))
        for k, role, data in nodes:
            with open(os.path.join(data, "postgresql.conf"), "a") as f:
                f.write("\n# make bench\nmax_connections = %d\n" % n)
            self.sh(self.cluster_sh, "pgctl", d, str(k), role, "restart", stdout=subprocess.DEVNULL)

    def default_workers(self):
        """pgshard's own default on this machine (half the CPUs it may use), as --check says."""
        with tempfile.NamedTemporaryFile("w", suffix=".ini") as f:
            f.write("[pgshard]\n[shard.0]\nprimary = 127.0.0.1:5432\n[user.app]\npassword = app\n")
            f.flush()
            out = subprocess.run([self.bin, "-c", f.name, "--check"], capture_output=True, text=True)
        m = re.search(r"\((\d+) workers?,", out.stdout)
        if out.returncode != 0 or not m:
            raise Failure("pgshard --check: %s%s" % (out.stdout, out.stderr))
        return int(m.group(1))

    def start_pgshard(self, name, ini_body):
        port = free_port()
        ini = os.path.join(self.work, name + ".ini")
        with open(ini, "w") as f:
            f.write(ini_body.replace("@PORT@", str(port)))
        log = open(os.path.join(self.work, name + ".log"), "w")
        # A session of its own, as PgBouncer's -d and PostgreSQL's pg_ctl give theirs: with
        # the kernel's autogroup scheduling a process shares its CPU with its session, so a
        # pgshard left in pgbench's session competes with pgbench and is preempted more.
        p = subprocess.Popen([self.bin, "-c", ini], stdout=log, stderr=log, start_new_session=True)
        self.children.append(p)
        self.wait_ready(port, p, name)
        return Target("pgshard", port, p.pid), p

    def stop_child(self, p):
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def start_bouncer(self, name, primary_port, mode, pool, auth, max_clients=2000):
        port = free_port()
        d = os.path.join(self.work, "bouncer")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "userlist.txt"), "w") as f:
            f.write('"app" "app"\n')
        ini = os.path.join(d, name + ".ini")
        with open(ini, "w") as f:
            f.write("[databases]\napp = host=127.0.0.1 port=%d dbname=app\n[pgbouncer]\n"
                    "listen_addr = 127.0.0.1\nlisten_port = %d\nauth_type = %s\n"
                    "auth_file = %s/userlist.txt\npool_mode = %s\ndefault_pool_size = %d\n"
                    "max_client_conn = %d\nlogfile = %s/%s.log\nunix_socket_dir =\n"
                    "pidfile = %s/%s.pid\n"
                    % (primary_port, port, auth, d, mode, pool, max_clients, d, name, d, name))
        pidfile = os.path.join(d, name + ".pid")
        if os.path.exists(pidfile):
            os.unlink(pidfile)  # left by an instance of the same name that was killed
        self.sh("chown", "-R", "postgres", d)
        # runuser's PAM session puts the open-file limit back to 1024; 10,000 clients need more.
        self.sh("runuser", "-u", "postgres", "--", "sh", "-c",
                'ulimit -n "$(ulimit -Hn)"; exec pgbouncer -d -q "$1"', "sh", ini)
        for _ in range(100):
            if os.path.exists(pidfile) and open(pidfile).read().strip():
                break
            time.sleep(0.1)
        else:
            raise Failure("PgBouncer %s wrote no pid file" % name)
        pid = int(open(pidfile).read())
        self.bouncer_pids.append(pid)
        self.wait_ready(port, None, name)
        return Target("pgbouncer", port, pid)

    def stop_bouncer(self, pid):
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        for _ in range(100):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def wait_ready(self, port, proc, name):
        for _ in range(200):
            if proc is not None and proc.poll() is not None:
                raise Failure("%s exited at start; see its log" % name)
            r = subprocess.run([PGBIN + "/pg_isready", "-q", "-h", "127.0.0.1", "-p", str(port)])
            if r.returncode == 0:
                return
            time.sleep(0.05)
        raise Failure("%s not ready on port %d" % (name, port))

    def cleanup(self):
        for p in self.children:
            try:
                self.stop_child(p)
            except Exception:  # noqa: BLE001 - keep cleaning up whatever happens
                pass
        for pid in self.bouncer_pids:
            self.stop_bouncer(pid)
        stops = [subprocess.Popen([self.cluster_sh, "stop", d], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL) for d in self.clusters]
        for p in stops:
            p.wait()
        shutil.rmtree(self.work, ignore_errors=True)

    # ---- one timed run ---------------------------------------------------------------------

    def pgbench(self, target, args, clients, tag):
        """Runs pgbench through its logins, the warm-up and the window; returns the window's
        numbers."""
        k = self.k
        logdir = os.path.join(self.work, "log")
        shutil.rmtree(logdir, ignore_errors=True)
        os.makedirs(logdir)
        prefix = os.path.join(logdir, "tx")
        # pgbench's -T counts the logins (256 SCRAM logins through PgBouncer take seconds), so
        # it is set long and pgbench is stopped by the SIGALRM its -T would have sent: it then
        # finishes its transactions and writes its logs and summary as at a normal end.
        duration = k.warmup + k.seconds + 600
        cmd = [PGBIN + "/pgbench", "-n", "-h", "127.0.0.1", "-p", str(target.port), "-U", "app",
               "-c", str(clients), "-j", "1" if clients < 2 else "2", "-T", str(duration),
               "-P", "1", "-l", "--log-prefix", prefix] + args + ["app"]
        stdout = open(os.path.join(self.work, "pgbench.out"), "w+")
        p = subprocess.Popen(cmd, stdout=stdout, stderr=subprocess.PIPE, text=True,
                             env=self.env, cwd=self.work)
        self.children.append(p)
        first = threading.Event()
        errors = []

        def read_stderr():
            for line in p.stderr:
                if line.startswith("progress:"):
                    first.set()
                else:
                    errors.append(line.rstrip())

        reader = threading.Thread(target=read_stderr, daemon=True)
        reader.start()
        if not first.wait(60 + clients / 4):
            p.kill()
            p.wait()
            raise Failure("pgbench %s: no progress: %s" % (tag, " | ".join(errors[-5:])))
        t0 = time.time() + k.warmup
        time.sleep(max(0, t0 - time.time()))
        s0 = (time.time(),) + (proc_sample(target.pid) if target.pid else (0, 0, 0))
        # Should pgbench end early (its -T may count the logins), the window ends with it.
        while p.poll() is None and time.time() < t0 + k.seconds:
            time.sleep(min(0.05, max(0, t0 + k.seconds - time.time())))
        s1 = (time.time(),) + (proc_sample(target.pid) if target.pid else (0, 0, 0))
        if s1[0] - s0[0] < k.seconds * 0.8:
            self.log("  (%s: pgbench ended %.1f s into a %d s window)" % (tag, s1[0] - s0[0], k.seconds))
        if p.poll() is None:
            p.send_signal(signal.SIGALRM)
        try:
            p.wait(60)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            raise Failure("pgbench %s did not stop on SIGALRM" % tag)
        reader.join(5)
        self.children.remove(p)
        stdout.seek(0)
        summary = stdout.read()
        stdout.close()
        failed = [ln for ln in summary.splitlines() if ln.startswith("number of failed")]
        if p.returncode or (failed and not failed[0].split(":")[1].strip().startswith("0")):
            raise Failure("pgbench %s failed (%s): %s %s" % (tag, p.returncode, " | ".join(errors[-5:]),
                                                             " ".join(failed)))
        lats = self.window_latencies(logdir, s0[0], s1[0])
        if not lats:
            raise Failure("pgbench %s: no transaction in the window" % tag)
        secs = s1[0] - s0[0]
        n = len(lats)
        lats.sort()
        row = {"seconds": "%.2f" % secs, "transactions": n, "tps": "%.1f" % (n / secs),
               "lat_mean_ms": "%.4f" % (sum(lats) / n / 1000),
               "lat_p99_ms": "%.4f" % (percentile(lats, 0.99) / 1000)}
        if target.pid:
            cpu, vol, invol = (s1[i] - s0[i] for i in (1, 2, 3))
            row.update({"cpu_s": "%.3f" % cpu, "cpu_s_per_1000tx": "%.5f" % (cpu / n * 1000),
                        "vcsw_per_tx": "%.4f" % (vol / n), "ivcsw_per_tx": "%.4f" % (invol / n)})
        shutil.rmtree(logdir, ignore_errors=True)
        return row

    @staticmethod
    def window_latencies(logdir, t0, t1):
        """Latencies (µs) of the transactions that completed inside [t0, t1): a line of the
        per-transaction log is client, transaction, latency, script, epoch s, µs."""
        lats = []
        for name in os.listdir(logdir):
            with open(os.path.join(logdir, name)) as f:
                for line in f:
                    fl = line.split()
                    if len(fl) < 6 or not fl[2].isdigit():
                        continue
                    t = int(fl[4]) + int(fl[5]) / 1e6
                    if t0 <= t < t1:
                        lats.append(int(fl[2]))
        return lats

    def record(self, scenario, mode, clients, target, repeat, note, row):
        row.update({"scenario": scenario, "mode": mode, "clients": clients, "target": target.name,
                    "repeat": repeat, "note": note})
        self.runs.append(row)
        report.write_runs(os.path.join(self.out, "runs.csv"), self.runs)
        extra = ""
        if row.get("cpu_s_per_1000tx"):
            extra = "  cpu/1000tx %s  vol cs/tx %s  invol cs/tx %s" % (
                row["cpu_s_per_1000tx"], row["vcsw_per_tx"], row["ivcsw_per_tx"])
        self.log("  %-9s %-8s c=%-4d #%d %-9s tps %9s  mean %7s ms  p99 %7s ms%s" % (
            scenario, mode, clients, repeat, target.name, row["tps"], row["lat_mean_ms"],
            row["lat_p99_ms"], extra))

    # ---- set-up ----------------------------------------------------------------------------

    def pgshard_ini(self, shards, replicas_of, auth, extra=""):
        k = self.k
        s = ("[pgshard]\nlisten_port = @PORT@\nworkers = %d\npool_mode = transaction\n"
             "pool_size = %d\nauth_type = %s\nlog_level = warn\nmax_client_conn = %d\n%s"
             % (k.workers, k.pool, auth, max(k.idle + [0]) + 1000, extra))
        for i, port in enumerate(shards):
            s += "[shard.%d]\nprimary = 127.0.0.1:%s\n" % (i, port)
            if replicas_of.get(i):
                s += "replicas = %s\n" % ", ".join("127.0.0.1:%s" % p for p in replicas_of[i])
        return s + "[user.app]\npassword = app\n"

    def setup_main(self):
        k = self.k
        self.log("cluster: 1 shard, %d replica(s); pgbench -i -s %d" % (k.replicas, k.scale))
        main = self.cluster_start("cluster", 1, k.replicas)
        if k.sharded:
            self.sharded_started = self.cluster_start("cluster-sharded", 2, 0)
        d, env = self.cluster_env(main)
        if max(k.clients) > 100:
            self.raise_max_connections(d, env, 2 * max(k.clients) + 4 * k.pool * k.workers + 100)
        self.pp = int(env["PGS_SHARD0_PRIMARY_PORT"])
        self.sh(PGBIN + "/pgbench", "-i", "-s", str(k.scale), "-q", "-h", "127.0.0.1", "-p",
                str(self.pp), "-U", "app", "app", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        reps = [int(env["PGS_SHARD0_REPLICA%d_PORT" % r]) for r in range(1, k.replicas + 1)]
        for port in reps:  # the replicas must have replayed the tables before reads go there
            for _ in range(300):
                try:
                    if self.psql(port, "SELECT count(*) FROM pgbench_branches") == str(k.scale):
                        break
                except Failure:
                    pass
                time.sleep(0.1)
            else:
                raise Failure("replica :%d did not replay pgbench's tables" % port)
        self.direct = Target("direct", self.pp)
        self.pgshard, _ = self.start_pgshard("pgshard", self.pgshard_ini([self.pp], {0: reps}, k.auth))
        pool = k.pool * k.workers  # pgshard's pool_size is per worker
        self.bouncer = self.start_bouncer("pgbouncer", self.pp, "transaction", pool, k.auth)
        # Session pooling holds a server per client: its pool is as large as the most clients.
        self.bouncer_session = self.start_bouncer("pgbouncer-session", self.pp, "session",
                                                  max(pool, max(k.clients)), k.auth)

    def setup_sharded(self):
        """pgbench_accounts split by aid over a two-shard cluster of its own, each shard holding
        only the rows of its buckets under pgshard's default map (bucket =
        hashint8extended(aid, 0) & 1023, shard = bucket * 2 / 1024)."""
        k = self.k
        self.log("sharded cluster: 2 shards; pgbench_accounts split by aid")
        d, env = self.cluster_env(self.sharded_started)
        ports = [int(env["PGS_SHARD0_PRIMARY_PORT"]), int(env["PGS_SHARD1_PRIMARY_PORT"])]
        nacc = k.scale * 100000
        for i, port in enumerate(ports):
            base = [PGBIN + "/pgbench", "-i", "-s", str(k.scale), "-q", "-h", "127.0.0.1", "-p",
                    str(port), "-U", "app"]
            self.sh(*base, "-I", "dt", "app", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.psql(port, "INSERT INTO pgbench_accounts (aid, bid, abalance, filler) SELECT aid, "
                      "(aid - 1) / 100000 + 1, 0, '' FROM generate_series(1, %d) aid WHERE "
                      "(hashint8extended(aid, 0) & 1023) * 2 / 1024 = %d" % (nacc, i))
            self.sh(*base, "-I", "vp", "app", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ini = self.pgshard_ini(ports, {}, k.auth) + "[table.pgbench_accounts]\nshard_key = aid\nkey_type = int\n"
        self.sharded, _ = self.start_pgshard("pgshard-sharded", ini)
        # A wrong split would make the point selects find nothing, which pgbench counts as a
        # success: check every row is there once and keyed reads find theirs.
        rows = sum(int(self.psql(p, "SELECT count(*) FROM pgbench_accounts")) for p in ports)
        if rows != nacc:
            raise Failure("sharded: the two shards hold %d accounts, not %d" % (rows, nacc))
        for aid in (1, 2, 3, nacc // 2, nacc):
            n = self.psql(self.sharded.port, "SELECT count(*) FROM pgbench_accounts WHERE aid = %d" % aid)
            if n != "1":
                raise Failure("sharded: aid %d through pgshard: %s rows, not 1" % (aid, n))
        self.point_sql = os.path.join(self.work, "point.sql")
        with open(self.point_sql, "w") as f:
            f.write("\\set aid random(1, %d)\nSELECT abalance FROM pgbench_accounts WHERE aid = :aid;\n" % nacc)

    # ---- scenarios -------------------------------------------------------------------------

    def scenarios(self):
        """(scenario, mode, clients, pgbench args, targets, note) in the order they run."""
        k = self.k
        out = []
        rep = " (pgshard reads to %d replicas)" % k.replicas if k.replicas else ""
        for c in (k.clients if "select" in k.scenarios else []):
            for mode in k.modes:
                b = self.bouncer_session if mode == "prepared" else self.bouncer
                note = ("select prepared: PgBouncer 1.18 in session pooling (it cannot do prepared "
                        "statements in transaction pooling); pgshard in transaction pooling"
                        if mode == "prepared" else "")
                out.append(("select", mode, c, ["-S", "-M", mode], [self.direct, b, self.pgshard],
                            note or ("select: pgbench -S" + rep)))
        if "connect" in k.scenarios:
            out.append(("connect", "simple", 8, ["-S", "-C", "-M", "simple"],
                        [self.direct, self.bouncer, self.pgshard],
                        "connect: pgbench -S -C, a new %s login per transaction" % k.auth))
        if "tpcb" in k.scenarios:
            out.append(("tpcb", "simple", 16, ["-M", "simple"], [self.direct, self.bouncer, self.pgshard],
                        "tpcb: pgbench's default TPC-B-like script"))
        if k.sharded:
            for mode in (["simple"] if k.quick else ["simple", "extended"]):
                out.append(("sharded", mode, 16, ["-f", self.point_sql, "-M", mode],
                            [self.direct, self.bouncer, self.sharded],
                            "sharded: point selects by aid; pgshard over 2 shards (each holds half) "
                            "vs PgBouncer and direct over 1 shard (holds all)"))
        return out

    def run_load(self):
        scen = self.scenarios()
        for rnd in range(1, self.k.repeat + 1):
            if scen:
                self.log("round %d of %d" % (rnd, self.k.repeat))
            for i, (name, mode, c, args, targets, note) in enumerate(scen):
                # Interleaved: each scenario's targets run back to back, in an order that turns
                # with the scenario and the round, so that no target always goes first.
                shift = (i + rnd) % len(targets)
                for t in targets[shift:] + targets[:shift]:
                    row = self.pgbench(t, args, c, "%s %s c=%d %s" % (name, mode, c, t.name))
                    self.record(name, mode, c, t, rnd, note, row)

    def run_idle(self):
        """Memory per idle client: each count on a fresh trust-auth instance of each proxy
        (logins cost nothing; a fresh one so that memory kept from an earlier count does not
        hide the next), RSS from /proc before and with the clients logged in."""
        k = self.k
        helper = os.path.join(self.src, "tests", "bench", "idle_clients.py")
        for n in k.idle:
            for rnd in range(1, (1 if n > 1000 else k.repeat) + 1):
                for name in ("pgbouncer", "pgshard"):
                    if name == "pgshard":
                        t, proc = self.start_pgshard("pgshard-idle", self.pgshard_ini([self.pp], {}, "trust"))
                    else:
                        t = self.start_bouncer("pgbouncer-idle", self.pp, "transaction",
                                               k.pool * k.workers, "trust", n + 1000)
                    try:
                        row = self.idle_count(t, n, helper)
                    finally:
                        if name == "pgshard":
                            self.stop_child(proc)
                            self.children.remove(proc)
                        else:
                            self.stop_bouncer(t.pid)
                            self.bouncer_pids.remove(t.pid)
                    self.runs.append(dict(row, scenario="idle", mode="-", clients=n, target=name,
                                          repeat=rnd, note="idle: RSS growth per logged-in idle "
                                          "client, trust auth, fresh instance per count"))
                    report.write_runs(os.path.join(self.out, "runs.csv"), self.runs)
                    self.log("  idle      c=%-5d #%d %-9s %s bytes/client, held %s" % (
                        n, rnd, name, row["idle_bytes_per_client"] or "–", row["idle_held"]))

    def idle_count(self, t, n, helper):
        self.psql(t.port, "SELECT 1")  # the first login makes the server connection
        r0 = rss_kib(t.pid)
        p = subprocess.Popen([sys.executable, helper, "127.0.0.1", str(t.port), str(n), "600"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.children.append(p)
        try:
            line = p.stdout.readline()
            held = line.startswith("connected %d" % n)
            time.sleep(1)
            r1 = rss_kib(t.pid)
            # Still serving with every idle client held: a fresh login gets an answer.
            held = held and self.psql(t.port, "SELECT 1") == "1"
        finally:
            self.stop_child(p)
            self.children.remove(p)
        if not held:
            err = p.stderr.read().strip().splitlines()[-1:] if p.stderr else []
            self.log("  idle %d through %s not all held: %s" % (n, t.name, " ".join(err)))
        # A count that was not all held has no meaningful size per client.
        return {"idle_bytes_per_client": "%.0f" % ((r1 - r0) * 1024 / n) if held else "",
                "idle_held": "yes" if held else "no"}

    def run(self):
        self.setup_main()
        if self.k.sharded:
            self.setup_sharded()
        self.run_load()
        if self.k.idle:
            self.run_idle()


def raise_fd_limit(want):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), max(hard, want)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def on_signal(signum, _frame):
    raise KeyboardInterrupt("signal %d" % signum)


def main():
    src, build, out = sys.argv[1], sys.argv[2], sys.argv[3]
    k = Knobs()
    os.makedirs(out, exist_ok=True)
    limit = raise_fd_limit(max(k.idle + [0]) * 2 + 4096)
    if k.idle and limit < max(k.idle) + 1024:
        print("idle: the open-file limit is %d; counts above %d left out" % (limit, limit - 1024))
        k.idle = [n for n in k.idle if n + 1024 <= limit]
    for s in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, on_signal)
    b = Bench(src, build, out, k)
    status = 0
    try:
        b.run()
    except KeyboardInterrupt as e:
        print("bench: interrupted (%s); cleaning up" % (e or "Ctrl-C"), file=sys.stderr)
        status = 130
    except (Failure, subprocess.CalledProcessError) as e:
        print("bench: %s" % e, file=sys.stderr)
        for name in ("pgshard.log", "pgshard-sharded.log"):
            path = os.path.join(b.work, name)
            if os.path.exists(path):
                shutil.copy(path, out)
        status = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not stop the clean-up
        b.log("stopping everything started")
        b.cleanup()
        b.log("stopped")
    if not b.runs:
        return status or 1
    report.main(["report", out])
    print("results: " + out)
    return status


if __name__ == "__main__":
    sys.exit(main())

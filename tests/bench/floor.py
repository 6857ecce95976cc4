#!/usr/bin/env python3
"""`make bench-floor` (scripts/bench.sh with BENCH_FLOOR=1): how low a proxy's CPU per
transaction can go in each I/O style, next to PgBouncer's and pgshard's. Two forwarders that
only move bytes (tests/bench/floor_fwd.c: epoll + read/send, the style of PgBouncer and of
pgshard's libuv loop; and io_uring) stand in front of the same server as PgBouncer and
pgshard, and pgbench -S runs through each of the four, interleaved, BENCH_REPEAT rounds at each
of BENCH_CLIENTS (1 16 64). CPU is read from /proc as in `make bench` (bench.py does the runs).

The forwarders hold one server connection per client (no pooling), so they show the cost of
the I/O alone: a proxy with an epoll loop spends at least the epoll forwarder's CPU, whatever
its user space does. Writes RESULTS/runs.csv and RESULTS/floor.md and prints the table.
Usage: floor.py SRC BUILD RESULTS FORWARDER_BINARY"""
import os
import signal
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402
import report  # noqa: E402

ORDER = ("pgbouncer", "pgshard", "fwd-epoll", "fwd-uring")


def table(runs, clients):
    lines = ["| clients | CPU s/1000 tx: PgBouncer / pgshard / epoll forwarder / io_uring forwarder | "
             "pgshard / PgBouncer | epoll forwarder / PgBouncer | io_uring forwarder / PgBouncer |",
             "| ---: | ---: | ---: | ---: | ---: |"]
    for c in clients:
        mine = [r for r in runs if int(r["clients"]) == c]
        cpu = [report.median_of(report.num(r["cpu_s_per_1000tx"]) for r in mine if r["target"] == t)
               for t in ORDER]
        cells = [report.fmt_ratio(report.spread(report.paired_ratios(mine, "cpu_s_per_1000tx", t)))
                 for t in ORDER[1:]]
        lines.append("| %d | %s | %s |" % (c, " / ".join(report.fmt(x, 4) for x in cpu), " | ".join(cells)))
    lines.append("")
    lines.append("pgbench -S, simple protocol; median of the rounds, ratios with the lowest and highest "
                 "round. The forwarders hold one server connection per client and parse nothing: "
                 "the least a proxy of their I/O style spends.")
    return "\n".join(lines) + "\n"


def main():
    src, build, out, fwd = sys.argv[1:5]
    k = bench.Knobs()
    k.clients = bench.env_list("BENCH_CLIENTS", [16] if k.quick else [1, 16, 64])
    k.idle, k.sharded, k.replicas = [], False, 0
    os.makedirs(out, exist_ok=True)
    for s in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, bench.on_signal)
    b = bench.Bench(src, build, out, k)
    status = 0
    try:
        b.log("cluster: 1 shard; pgbench -i -s %d" % k.scale)
        d, env = b.cluster_env(b.cluster_start("cluster", 1, 0))
        # The forwarders hold a server per client, PgBouncer and pgshard their pools.
        need = max(k.clients) + 2 * k.pool * k.workers + 20
        if need > 300:  # the cluster fixture's max_connections
            b.raise_max_connections(d, env, need)
        pp = int(env["PGS_SHARD0_PRIMARY_PORT"])
        b.sh(bench.PGBIN + "/pgbench", "-i", "-s", str(k.scale), "-q", "-h", "127.0.0.1", "-p", str(pp),
             "-U", "app", "app", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        targets = [b.start_bouncer("pgbouncer", pp, "transaction", k.pool * k.workers, k.auth),
                   b.start_pgshard("pgshard", b.pgshard_ini([pp], {}, k.auth))[0]]
        for style in ("epoll", "uring"):
            port = bench.free_port()
            log = open(os.path.join(b.work, "fwd-%s.log" % style), "w")
            p = subprocess.Popen([fwd, style, str(port), str(pp)], stdout=log, stderr=log,
                                 start_new_session=True)
            b.children.append(p)
            b.wait_ready(port, p, "fwd-" + style)
            targets.append(bench.Target("fwd-" + style, port, p.pid))
        for rnd in range(1, k.repeat + 1):
            b.log("round %d of %d" % (rnd, k.repeat))
            for i, c in enumerate(k.clients):
                shift = (i + rnd) % len(targets)
                for t in targets[shift:] + targets[:shift]:
                    row = b.pgbench(t, ["-S", "-M", "simple"], c, "floor c=%d %s" % (c, t.name))
                    b.record("floor", "simple", c, t, rnd, "", row)
    except KeyboardInterrupt as e:
        print("bench-floor: interrupted (%s); cleaning up" % (e or "Ctrl-C"), file=sys.stderr)
        status = 130
    except (bench.Failure, subprocess.CalledProcessError) as e:
        print("bench-floor: %s" % e, file=sys.stderr)
        status = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        b.log("stopping everything started")
        b.cleanup()
    if status or not b.runs:
        return status or 1
    report.write_runs(os.path.join(out, "runs.csv"), b.runs)
    md = table(b.runs, k.clients)
    with open(os.path.join(out, "floor.md"), "w") as f:
        f.write(md)
    print()
    print(md)
    print("results: " + out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env bash
# pgshard's benchmark (`make bench`): pgbench against PostgreSQL directly, PgBouncer 1.18 (from
# Debian, installed if missing, the same server pool size as pgshard) and pgshard, on a
# throw-away cluster of its own, each scenario's targets back to back and the whole set
# repeated; then a CSV, a markdown table and a PNG chart in the results folder, and the table
# printed. Not a test: numbers move with the machine; read the ratios pgshard/PgBouncer.
#
# Scenarios (tests/bench/bench.py runs them; tests/bench/report.py makes the tables):
#   select    pgbench -S, simple / extended / prepared, at each of BENCH_CLIENTS, in steady
#             state: logins are outside the window. Prepared runs against PgBouncer in
#             session pooling (1.18 cannot do prepared statements in transaction pooling).
#   connect   pgbench -S -C at 8 clients: a SCRAM login per transaction.
#   tpcb      pgbench's default TPC-B-like script at 16 clients.
#   sharded   point selects by aid at 16 clients, pgshard over two shards that each hold
#             their half of pgbench_accounts, against PgBouncer over one shard holding it all.
#   idle      memory per logged-in idle client (RSS from /proc) at each of BENCH_IDLE.
# Per run: TPS, mean and p99 latency (pgbench's per-transaction log), the proxy's CPU seconds
# per 1,000 transactions (utime+stime of all its threads from /proc/PID/stat) and its
# voluntary and involuntary context switches per transaction (/proc/PID/task/*/status), over
# a window of BENCH_SECONDS after BENCH_WARMUP seconds.
#
# Usage: scripts/bench.sh [BUILD_DIR]        (make bench; make bench-callgrind)
# Knobs (environment):
#   BENCH_QUICK=1      about two minutes: select at 16 clients, connect, tpcb, sharded simple,
#                      1,000 idle; 3 s windows, scale 2, one repeat (explicit knobs still win)
#   BENCH_SECONDS      timed window per run (10; quick 3)
#   BENCH_WARMUP       seconds of load before the window (3; quick 1)
#   BENCH_SCALE        pgbench scale (10; quick 2)
#   BENCH_REPEAT       rounds of every scenario (3; quick 1); ratios show min-max over them
#   BENCH_WORKERS      pgshard worker threads (pgshard's default: half the CPUs it may use,
#                      rounded up); pool_size is per worker, so PgBouncer's
#                      default_pool_size is BENCH_POOL x BENCH_WORKERS
#   BENCH_POOL         pgshard pool_size (20)
#   BENCH_REPLICAS     streaming replicas of the shard; pgshard routes the reads to them (0)
#   BENCH_CLIENTS      client counts of the select scenarios ("1 16 64 256"; quick "16")
#   BENCH_IDLE         idle client counts ("1000 10000"; quick "1000")
#   BENCH_SCENARIOS    which scenarios run ("select connect tpcb sharded idle")
#   BENCH_SHARDED=0    leaves out the sharded scenario and its cluster
#   BENCH_AUTH         client authentication of both proxies (scram-sha-256)
#   BENCH_OUT          results folder (bench-results/<timestamp> at the top of the repo)
#   BENCH_CALLGRIND=1  instead of timings: instructions per transaction under callgrind
#                      (scripts/bench-callgrind.sh, simple and extended), into the same folder
#   BENCH_FLOOR=1      instead: CPU per transaction of PgBouncer, pgshard and two forwarders
#                      that only move bytes (epoll and io_uring; tests/bench/floor.py), at
#                      BENCH_CLIENTS ("1 16 64"), the least a proxy of each I/O style costs
# Runs as root (the servers and PgBouncer as the postgres user) without a terminal; uses only
# 127.0.0.1 and free ports; stops everything it started on exit, error or signal.
set -euo pipefail
BUILD=${1:-build}
SRC=$(cd "$(dirname "$0")/.." && pwd)
OUT=${BENCH_OUT:-$SRC/bench-results/$(date -u +%Y%m%d-%H%M%S)}
export DEBIAN_FRONTEND=noninteractive
PY=/usr/bin/python3 # Debian's, where python3-matplotlib installs

[ -x "$SRC/$BUILD/pgshard" ] || { echo "bench: no $BUILD/pgshard; run make build first" >&2; exit 1; }

# apt_need PACKAGE: installs a Debian package when missing; false when it cannot.
apt_need() {
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'ok installed' && return 0
  echo "bench: installing $1"
  apt-get install -y -qq "$1" >/dev/null 2>&1 ||
    { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq "$1" >/dev/null 2>&1; }
}

mkdir -p "$OUT"
{
  echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "commit: $(git -C "$SRC" rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "cores: $(nproc)"
  echo "cpu: $(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -n1)"
  echo "kernel: $(uname -r)"
  env | grep '^BENCH_' | sort || true
} >"$OUT/machine.txt"

if [ "${BENCH_CALLGRIND:-0}" = 1 ]; then
  apt_need valgrind || { echo "bench: valgrind cannot be installed" >&2; exit 1; }
  apt_need pgbouncer || { echo "bench: pgbouncer cannot be installed" >&2; exit 1; }
  for mode in simple extended; do
    CALLGRIND_OUT=$OUT "$SRC/scripts/bench-callgrind.sh" "$BUILD" "$mode" | tee "$OUT/callgrind-$mode.txt"
  done
  $PY "$SRC/tests/bench/report.py" --callgrind "$OUT"
  echo "results: $OUT"
  exit 0
fi

if [ "${BENCH_FLOOR:-0}" = 1 ]; then
  apt_need pgbouncer || { echo "bench: pgbouncer cannot be installed" >&2; exit 1; }
  apt_need liburing-dev || { echo "bench: liburing-dev cannot be installed" >&2; exit 1; }
  FWD_DIR=$(mktemp -d)
  trap 'rm -rf "$FWD_DIR"' EXIT
  cc -O2 -o "$FWD_DIR/floor_fwd" "$SRC/tests/bench/floor_fwd.c" -luring
  $PY "$SRC/tests/bench/floor.py" "$SRC" "$BUILD" "$OUT" "$FWD_DIR/floor_fwd"
  exit $?
fi

apt_need pgbouncer || { echo "bench: pgbouncer cannot be installed" >&2; exit 1; }
apt_need python3-matplotlib || apt_need gnuplot-nox ||
  echo "bench: neither python3-matplotlib nor gnuplot installs; no chart"

# 10,000 idle clients need as many descriptors in pgshard, PgBouncer and the client.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# exec: a signal sent to this script reaches the driver, which stops what it started.
exec $PY "$SRC/tests/bench/bench.py" "$SRC" "$BUILD" "$OUT"

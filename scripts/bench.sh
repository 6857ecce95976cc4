#!/usr/bin/env bash
# Benchmarks pgshard against PgBouncer (Debian's 1.18) and a direct connection, in one run
# on one fresh cluster: pgbench -S at 1 and 16 clients, simple and extended protocol. Reports
# TPS and each proxy's CPU seconds per 1000 transactions (utime+stime from /proc), the
# ratio pgshard/PgBouncer, and pgshard's RSS with 1000 idle clients. Not a test: numbers
# vary with the machine; compare the ratios. BENCH_REPLICAS=N gives the shard N streaming
# replicas and lets pgshard route the reads to them (its monitor thread's CPU included).
# Then a sharded scenario: tenant-keyed point selects (the key a pgbench variable) through
# pgshard over two shards of a cluster of their own, against PgBouncer in front of the one
# shard above that holds every row; BENCH_REPEAT rounds (default 3), interleaved, medians
# and ratios. Knobs: BENCH_SECONDS per run (10), BENCH_SCALE (10), BENCH_WORKERS (2),
# BENCH_AUTH, BENCH_WARMUP (2 s), BENCH_SHARDED=0 skips the sharded scenario.
set -euo pipefail
BUILD=${1:-build}
SRC=$(cd "$(dirname "$0")/.." && pwd)
BIN=$SRC/$BUILD/pgshard
PGBIN=/usr/lib/postgresql/15/bin
DUR=${BENCH_SECONDS:-10}
SCALE=${BENCH_SCALE:-10}
command -v pgbouncer >/dev/null || { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgbouncer >/dev/null; }
WORK=$(mktemp -d /tmp/pgshard-bench.XXXXXX)
chmod 755 "$WORK"
CL=$WORK/cluster
cleanup() {
  [ -n "${PXPID:-}" ] && kill "$PXPID" 2>/dev/null || true
  [ -n "${SXPID:-}" ] && kill "$SXPID" 2>/dev/null || true
  [ -n "${BXPID:-}" ] && kill "$BXPID" 2>/dev/null || true
  "$SRC/tests/cluster/cluster.sh" stop "$CL" >/dev/null 2>&1 || true
  "$SRC/tests/cluster/cluster.sh" stop "$WORK/cluster-sharded" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
"$SRC/tests/cluster/cluster.sh" start "$CL" --shards 1 --replicas "${BENCH_REPLICAS:-0}" >/dev/null
. "$CL/cluster.env"
PP=$PGS_SHARD0_PRIMARY_PORT
export PGPASSWORD=app
$PGBIN/pgbench -i -s "$SCALE" -q -h 127.0.0.1 -p "$PP" -U app app >/dev/null 2>&1
((${BENCH_REPLICAS:-0} == 0)) || sleep 3 # let the replicas replay the tables

free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
PXPORT=$(free_port)
cat > "$WORK/pgshard.ini" <<INI
[pgshard]
listen_port = $PXPORT
workers = ${BENCH_WORKERS:-2}
pool_mode = transaction
pool_size = 20
auth_type = ${BENCH_AUTH:-scram-sha-256}
log_level = warn
[shard.0]
primary = 127.0.0.1:$PP
$(for ((r = 1; r <= ${BENCH_REPLICAS:-0}; r++)); do v=PGS_SHARD0_REPLICA${r}_PORT; printf '%s127.0.0.1:%s' "$( ((r == 1)) && echo 'replicas = ' || echo ', ')" "${!v}"; done)
[user.app]
password = app
INI
"$BIN" -c "$WORK/pgshard.ini" 2>"$WORK/pgshard.log" &
PXPID=$!

BXPORT=$(free_port)
cat > "$WORK/pgbouncer.ini" <<INI
[databases]
app = host=127.0.0.1 port=$PP dbname=app
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $BXPORT
auth_type = ${BENCH_AUTH:-scram-sha-256}
auth_file = $WORK/userlist.txt
pool_mode = ${BOUNCER_MODE:-transaction}
default_pool_size = 40
max_client_conn = 2000
logfile = $WORK/pgbouncer.log
unix_socket_dir =
pidfile = $WORK/pgbouncer.pid
INI
echo '"app" "app"' > "$WORK/userlist.txt"
chown -R postgres "$WORK"
runuser -u postgres -- pgbouncer -d -q "$WORK/pgbouncer.ini"
for _ in $(seq 40); do [ -s "$WORK/pgbouncer.pid" ] && break; sleep 0.1; done
BXPID=$(cat "$WORK/pgbouncer.pid")
sleep 0.5

cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)
run() { # label port pid clients mode
  local before after out tps tx cpu
  [ -n "$3" ] && before=$(cpu_ticks "$3")
  out=$($PGBIN/pgbench -n -S -M "$5" -c "$4" -j "$(( $4 < 2 ? 1 : 2 ))" -T "$DUR" -h 127.0.0.1 -p "$2" -U app app 2>&1)
  tps=$(echo "$out" | sed -n 's/^tps = \([0-9.]*\).*/\1/p')
  tx=$(echo "$out" | sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p')
  if [ -n "$3" ]; then
    after=$(cpu_ticks "$3")
    cpu=$(awk -v a="$after" -v b="$before" -v hz="$HZ" -v tx="$tx" 'BEGIN{printf "%.4f", (a-b)/hz/tx*1000}')
  else cpu="-"; fi
  printf "%-17s %-8s c=%-3s tps=%-10s cpu_s_per_1000tx=%s\n" "$1" "$5" "$4" "$tps" "$cpu"
  echo "$1 $5 $4 $tps $cpu" >> "$WORK/results"
}
echo "pgbench -S, $DUR s per run, scale $SCALE"
for mode in simple extended; do
  for c in 1 16; do
    run direct "$PP" "" "$c" "$mode"
    run pgbouncer "$BXPORT" "$BXPID" "$c" "$mode"
    run pgshard "$PXPORT" "$PXPID" "$c" "$mode"
  done
done
# Prepared statements: pgshard in transaction pooling against PgBouncer 1.18 in session
# pooling (1.18 cannot do prepared statements in transaction pooling).
BSPORT=$(free_port)
sed -e "s/^listen_port = .*/listen_port = $BSPORT/" -e "s/^pool_mode = .*/pool_mode = session/" \
    -e "s|^pidfile = .*|pidfile = $WORK/pgbouncer-session.pid|" -e "s|^logfile = .*|logfile = $WORK/pgbouncer-session.log|" \
    "$WORK/pgbouncer.ini" > "$WORK/pgbouncer-session.ini"
chown postgres "$WORK/pgbouncer-session.ini"
runuser -u postgres -- pgbouncer -d -q "$WORK/pgbouncer-session.ini"
for _ in $(seq 40); do [ -s "$WORK/pgbouncer-session.pid" ] && break; sleep 0.1; done
BSPID=$(cat "$WORK/pgbouncer-session.pid")
sleep 0.5
run pgbouncer-session "$BSPORT" "$BSPID" 16 prepared
run pgshard "$PXPORT" "$PXPID" 16 prepared
kill "$BSPID" 2>/dev/null || true
awk '$1=="pgbouncer-session"{bt=$4; bc=$5} $1=="pgshard" && $2=="prepared"{st=$4; sc=$5}
     END{printf "\nprepared c=16, pgshard (transaction pooling) / PgBouncer (session pooling): tps %.2f  cpu/1000tx %.2f\n", st/bt, sc/bc}' "$WORK/results"

echo
echo "ratios pgshard/pgbouncer (tps higher is better, cpu lower is better):"
awk '$1=="pgbouncer"{bt[$2" "$3]=$4; bc[$2" "$3]=$5} $1=="pgshard" && $2!="prepared"{st[$2" "$3]=$4; sc[$2" "$3]=$5}
     END{for (k in st) printf "  %-12s tps %.2f  cpu/1000tx %.2f\n", k, st[k]/bt[k], sc[k]/bc[k]}' "$WORK/results" | sort

# Memory per idle client, measured on a trust-auth instance so logins are cheap.
rss() { awk '/VmRSS/{print $2}' "/proc/$1/status"; }
kill "$PXPID"; wait "$PXPID" 2>/dev/null || true
sed -i 's/^auth_type = .*/auth_type = trust/' "$WORK/pgshard.ini"
"$BIN" -c "$WORK/pgshard.ini" 2>>"$WORK/pgshard.log" &
PXPID=$!
sleep 0.5
ulimit -n 8192 || true
PGPASSWORD=app psql -X -q -h 127.0.0.1 -p "$PXPORT" -U app app -c 'select 1' >/dev/null
r0=$(rss "$PXPID")
python3 "$SRC/tests/bench/idle_clients.py" 127.0.0.1 "$PXPORT" 1000 4 > "$WORK/idle.out" &
IDLE=$!
for _ in $(seq 40); do grep -q connected "$WORK/idle.out" 2>/dev/null && break; sleep 0.25; done
r1=$(rss "$PXPID")
wait "$IDLE" || true
echo
echo "pgshard RSS: ${r0} KiB before, ${r1} KiB with 1000 idle clients: $(( (r1 - r0) * 1024 / 1000 )) bytes per idle client"

# ---- Sharded: tenant-keyed point selects over two shards ----
# pgbench_accounts sharded by aid over a two-shard cluster of its own, each shard holding only
# the rows pgshard's default map gives it (bucket = hashint8extended(aid, 0) & 1023, shard =
# bucket * 2 / 1024), against PgBouncer in front of the one-shard cluster above, which holds
# every row. Same pool size per shard (pgshard: pool_size per worker, so 20 x 2 workers;
# PgBouncer: default_pool_size 40), same script: pgbench -S's select with aid a variable, sent
# as a literal (-M simple) or a bind parameter (-M extended), 16 clients. After a warm-up that
# is not counted, BENCH_REPEAT rounds alternate which proxy goes first.
[ "${BENCH_SHARDED:-1}" = 0 ] && exit 0
REPEAT=${BENCH_REPEAT:-3}
WARMUP=${BENCH_WARMUP:-2}
CLIENTS=16
NACC=$((SCALE * 100000))
CL2=$WORK/cluster-sharded
"$SRC/tests/cluster/cluster.sh" start "$CL2" --shards 2 --replicas 0 >/dev/null
read -r S0 S1 < <(. "$CL2/cluster.env" && echo "$PGS_SHARD0_PRIMARY_PORT $PGS_SHARD1_PRIMARY_PORT")
spsql() { $PGBIN/psql -X -q -At -v ON_ERROR_STOP=1 -h 127.0.0.1 -U app -d app "$@"; }
k=0
for port in "$S0" "$S1"; do
  $PGBIN/pgbench -i -s "$SCALE" -I dt -q -h 127.0.0.1 -p "$port" -U app app >/dev/null 2>&1
  spsql -p "$port" -c "INSERT INTO pgbench_accounts (aid, bid, abalance, filler)
    SELECT aid, (aid - 1) / 100000 + 1, 0, '' FROM generate_series(1, $NACC) aid
    WHERE (hashint8extended(aid, 0) & 1023) * 2 / 1024 = $k"
  $PGBIN/pgbench -i -s "$SCALE" -I vp -q -h 127.0.0.1 -p "$port" -U app app >/dev/null 2>&1
  k=$((k + 1))
done

SXPORT=$(free_port)
cat >"$WORK/pgshard-sharded.ini" <<INI
[pgshard]
listen_port = $SXPORT
workers = ${BENCH_WORKERS:-2}
pool_mode = transaction
pool_size = 20
auth_type = ${BENCH_AUTH:-scram-sha-256}
log_level = warn
[shard.0]
primary = 127.0.0.1:$S0
[shard.1]
primary = 127.0.0.1:$S1
[table.pgbench_accounts]
shard_key = aid
key_type = int
[user.app]
password = app
INI
"$BIN" -c "$WORK/pgshard-sharded.ini" 2>"$WORK/pgshard-sharded.log" &
SXPID=$!
for _ in $(seq 100); do $PGBIN/pg_isready -q -h 127.0.0.1 -p "$SXPORT" && break; sleep 0.1; done

# Every row once over the two shards, and keyed reads through pgshard find theirs: a wrong
# split would make the point selects return nothing, which pgbench does not count as failed.
rows=$(($(spsql -p "$S0" -c "SELECT count(*) FROM pgbench_accounts") + $(spsql -p "$S1" -c "SELECT count(*) FROM pgbench_accounts")))
[ "$rows" = "$NACC" ] || { echo "sharded: the two shards hold $rows accounts, not $NACC" >&2; exit 1; }
for aid in 1 2 3 $((NACC / 2)) $NACC; do
  n=$(spsql -p "$SXPORT" -c "SELECT count(*) FROM pgbench_accounts WHERE aid = $aid")
  [ "$n" = 1 ] || { echo "sharded: aid $aid through pgshard: $n rows, not 1" >&2; exit 1; }
done
printf '\\set aid random(1, %s)\nSELECT abalance FROM pgbench_accounts WHERE aid = :aid;\n' "$NACC" >"$WORK/point.sql"

# srun LABEL PORT PID MODE ROUND: one counted run; fails the bench on any pgbench error.
srun() {
  local before after out tps tx failed cpu
  before=$(cpu_ticks "$3")
  out=$($PGBIN/pgbench -n -f "$WORK/point.sql" -M "$4" -c $CLIENTS -j 2 -T "$DUR" -h 127.0.0.1 -p "$2" -U app app 2>&1) ||
    { echo "sharded: pgbench through $1 -M $4 failed:" >&2; echo "$out" | tail -n 20 >&2; exit 1; }
  after=$(cpu_ticks "$3")
  tps=$(echo "$out" | sed -n 's/^tps = \([0-9.]*\).*/\1/p')
  tx=$(echo "$out" | sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p')
  failed=$(echo "$out" | sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p')
  if [ "${failed:-0}" != 0 ] || [ "${tx:-0}" -le 0 ]; then
    echo "sharded: $1 -M $4: ${tx:-?} transactions, ${failed:-?} failed" >&2
    exit 1
  fi
  cpu=$(awk -v a="$after" -v b="$before" -v hz="$HZ" -v tx="$tx" 'BEGIN{printf "%.4f", (a-b)/hz/tx*1000}')
  printf "%-10s %-8s round %-2s tps=%-10s cpu_s_per_1000tx=%s\n" "$1" "$4" "$5" "$tps" "$cpu"
  echo "$1 $4 $5 $tps $cpu" >>"$WORK/sharded.results"
}

echo
echo "sharded: point selects by aid (custom -S script), c=$CLIENTS, $DUR s per run, $REPEAT rounds, scale $SCALE;"
echo "  pgshard over 2 shards (each holds its half) vs PgBouncer over 1 shard (holds all)"
for mode in simple extended; do
  for port in "$BXPORT" "$SXPORT"; do
    $PGBIN/pgbench -n -f "$WORK/point.sql" -M "$mode" -c $CLIENTS -j 2 -T "$WARMUP" -h 127.0.0.1 -p "$port" -U app app >/dev/null 2>&1
  done
done
for ((round = 1; round <= REPEAT; round++)); do
  for mode in simple extended; do
    if ((round % 2)); then
      srun pgbouncer "$BXPORT" "$BXPID" "$mode" "$round"
      srun pgshard "$SXPORT" "$SXPID" "$mode" "$round"
    else
      srun pgshard "$SXPORT" "$SXPID" "$mode" "$round"
      srun pgbouncer "$BXPORT" "$BXPID" "$mode" "$round"
    fi
  done
done
python3 - "$WORK/sharded.results" <<'PY'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    who, mode, rnd, tps, cpu = line.split()
    runs.setdefault((who, mode), {})[int(rnd)] = (float(tps), float(cpu))
print("\nsharded, medians over the rounds (pgshard over 2 shards / PgBouncer over 1):")
print("  %-9s %13s %13s %13s %13s %9s %9s   %s" % ("mode", "bouncer tps", "bouncer cpu", "pgshard tps", "pgshard cpu",
      "tps ratio", "cpu ratio", "cpu ratio per round"))
for mode in ("simple", "extended"):
    b, s = runs[("pgbouncer", mode)], runs[("pgshard", mode)]
    med = lambda r, i: statistics.median(v[i] for v in r.values())
    per = " ".join("%.2f" % (s[k][1] / b[k][1]) for k in sorted(s) if k in b and b[k][1] > 0)
    print("  %-9s %13.0f %13.4f %13.0f %13.4f %9.2f %9.2f   %s" % (mode, med(b, 0), med(b, 1), med(s, 0), med(s, 1),
          med(s, 0) / med(b, 0), med(s, 1) / med(b, 1), per))
print("  (cpu: CPU seconds of the proxy process per 1000 transactions, utime+stime)")
PY

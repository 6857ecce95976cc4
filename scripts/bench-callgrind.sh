#!/usr/bin/env bash
# Instructions per transaction (user space, callgrind) of pgshard and PgBouncer 1.18 for the
# same pgbench -S load, after a warm-up that is not counted. Repeatable on a noisy machine,
# unlike timings. A third run routes the reads to two replicas: its difference from the
# first is the cost of classifying and routing each query (parse-cache hit, monitor snapshot,
# replica choice). A fourth shards pgbench_accounts by aid over two shards (the select is a
# tenant-keyed point read, each routed by its key): its difference from the first is the
# cost of key routing. Usage: scripts/bench-callgrind.sh [BUILD_DIR] [simple|extended]
set -euo pipefail
BUILD=${1:-build}
MODE=${2:-simple}
SRC=$(cd "$(dirname "$0")/.." && pwd)
PGBIN=/usr/lib/postgresql/15/bin
TX=2500 CLIENTS=4
command -v valgrind >/dev/null || { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null; }
command -v pgbouncer >/dev/null || { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgbouncer >/dev/null; }
WORK=$(mktemp -d /tmp/pgshard-callgrind.XXXXXX)
chmod 755 "$WORK"
CL=$WORK/cluster
cleanup() {
  pkill -f "callgrind.*$WORK" 2>/dev/null || true
  "$SRC/tests/cluster/cluster.sh" stop "$CL" >/dev/null 2>&1 || true
  [ -n "${KEEP:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT
"$SRC/tests/cluster/cluster.sh" start "$CL" --shards 2 --replicas 2 >/dev/null
. "$CL/cluster.env"
export PGPASSWORD=app
for port in "$PGS_SHARD0_PRIMARY_PORT" "$PGS_SHARD1_PRIMARY_PORT"; do
  $PGBIN/pgbench -i -s 2 -q -h 127.0.0.1 -p "$port" -U app app >/dev/null 2>&1
done
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }

# count NAME PORT RUNAS CMD...: instructions per transaction of CMD under callgrind.
count() {
  local name=$1 port=$2 runas=$3; shift 3
  local out=$WORK/$name.cg
  $runas valgrind --tool=callgrind --callgrind-out-file="$out" "$@" >"$WORK/$name.valgrind.log" 2>&1 &
  for _ in $(seq 100); do $PGBIN/pg_isready -q -h 127.0.0.1 -p "$port" && break; sleep 0.1; done
  $PGBIN/pgbench -n -S -M "$MODE" -c $CLIENTS -j 1 -t 200 -h 127.0.0.1 -p "$port" -U app app >/dev/null 2>&1
  $runas callgrind_control -z >/dev/null 2>&1
  $PGBIN/pgbench -n -S -M "$MODE" -c $CLIENTS -j 1 -t $TX -h 127.0.0.1 -p "$port" -U app app >/dev/null 2>&1
  $runas callgrind_control -d >/dev/null 2>&1
  sleep 1
  pkill -TERM -f "callgrind.*$WORK/$name" 2>/dev/null || true
  sleep 2
  local ir
  ir=$(callgrind_annotate "$(ls -t "$out".* | head -1)" 2>/dev/null | sed -n 's/^ *\([0-9,]*\) .*PROGRAM TOTALS.*/\1/p' | tr -d ,)
  echo "$name $((ir / (CLIENTS * TX)))"
}

PX=$(free_port)
printf '[pgshard]\nlisten_port = %s\nworkers = 1\npool_size = 8\nauth_type = trust\nlog_level = warn\n[shard.0]\nprimary = 127.0.0.1:%s\n[user.app]\npassword = app\n' \
  "$PX" "$PGS_SHARD0_PRIMARY_PORT" >"$WORK/pgshard.ini"
RX=$(free_port)
# lag_poll_ms is long so that the monitor thread's own work stays out of the count.
printf '[pgshard]\nlisten_port = %s\nworkers = 1\npool_size = 8\nauth_type = trust\nlog_level = warn\nlag_poll_ms = 60000\n[shard.0]\nprimary = 127.0.0.1:%s\nreplicas = 127.0.0.1:%s, 127.0.0.1:%s\n[user.app]\npassword = app\n' \
  "$RX" "$PGS_SHARD0_PRIMARY_PORT" "$PGS_SHARD0_REPLICA1_PORT" "$PGS_SHARD0_REPLICA2_PORT" >"$WORK/pgshard-replicas.ini"
SX=$(free_port)
printf '[pgshard]\nlisten_port = %s\nworkers = 1\npool_size = 8\nauth_type = trust\nlog_level = warn\n[shard.0]\nprimary = 127.0.0.1:%s\n[shard.1]\nprimary = 127.0.0.1:%s\n[table.pgbench_accounts]\nshard_key = aid\nkey_type = int\n[user.app]\npassword = app\n' \
  "$SX" "$PGS_SHARD0_PRIMARY_PORT" "$PGS_SHARD1_PRIMARY_PORT" >"$WORK/pgshard-sharded.ini"
BX=$(free_port)
printf '[databases]\napp = host=127.0.0.1 port=%s dbname=app\n[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = %s\nauth_type = trust\nauth_file = %s/users.txt\npool_mode = transaction\ndefault_pool_size = 8\nlogfile = %s/pgbouncer.log\nunix_socket_dir =\n' \
  "$PGS_SHARD0_PRIMARY_PORT" "$BX" "$WORK" "$WORK" >"$WORK/pgbouncer.ini"
echo '"app" "app"' >"$WORK/users.txt"
chown -R postgres "$WORK"
a=$(count pgshard "$PX" "" "$SRC/$BUILD/pgshard" -c "$WORK/pgshard.ini")
c=$(count pgshard-replicas "$RX" "" "$SRC/$BUILD/pgshard" -c "$WORK/pgshard-replicas.ini")
d=$(count pgshard-sharded "$SX" "" "$SRC/$BUILD/pgshard" -c "$WORK/pgshard-sharded.ini")
b=$(count pgbouncer "$BX" "runuser -u postgres --" pgbouncer "$WORK/pgbouncer.ini")
echo "pgbench -S -M $MODE, $CLIENTS clients, instructions per transaction (callgrind):"
echo "  $a"
echo "  $c"
echo "  $d"
echo "  $b"
awk -v a="${a#* }" -v c="${c#* }" 'BEGIN{printf "  routing to replicas costs %d instructions per transaction\n", c-a}' 
awk -v a="${a#* }" -v b="${b#* }" 'BEGIN{printf "  ratio pgshard/pgbouncer %.2f\n", a/b}'
awk -v a="${a#* }" -v d="${d#* }" 'BEGIN{printf "  routing by key over 2 shards costs %d instructions per transaction\n", d-a}'
awk -v d="${d#* }" -v b="${b#* }" 'BEGIN{printf "  ratio pgshard over 2 shards/pgbouncer to one shard %.2f\n", d/b}'

#!/usr/bin/env bash
# `make demo` / `make demo-stop`: a local playground. Builds nothing (make does that first).
#
#   scripts/demo.sh start BUILD_DIR   start a 2-shard cluster (each a primary + 1 streaming
#                                     replica) in ./demo/cluster, a multi-tenant schema on
#                                     both, and BUILD_DIR/pgshard on 127.0.0.1:6432
#   scripts/demo.sh stop BUILD_DIR    stop pgshard and the cluster
#
# orders is sharded by tenant_id (the default map: shard s of 2 owns the buckets b with
# b * 2 / 1024 = s), tenants is omnisharded (the same rows on both shards), pgbench's tables
# are not listed and live on default_shard 0. Orders are inserted through pgshard, which
# spreads them by the map. Reads go to a shard's replica when it is fresh enough.
# Everything lives in ./demo at the top of the source tree (git ignores it): the cluster's
# cluster.env, pgshard.ini, pgshard.log and pgshard.pid. Starting again stops a running demo
# first.
set -euo pipefail

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEMO=$SRC/demo
CLUSTER_DIR=$DEMO/cluster
CLUSTER_SH=$SRC/tests/cluster/cluster.sh
PORT=6432
INI=$DEMO/pgshard.ini
LOG=$DEMO/pgshard.log
PIDFILE=$DEMO/pgshard.pid

say() { printf 'demo: %s\n' "$*"; }
die() { printf 'demo: error: %s\n' "$*" >&2; exit 1; }

usage() {
  sed -n '4,7p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

# BUILD_DIR as given (relative to the current directory), else relative to the source tree.
resolve_build() {
  local b=${1:-}
  [[ -n $b ]] || usage
  if [[ -d $b ]]; then
    (cd "$b" && pwd)
  elif [[ -d $SRC/$b ]]; then
    (cd "$SRC/$b" && pwd)
  else
    die "build directory '$b' not found: run \`make build\` first"
  fi
}

# The pid in $PIDFILE when that process is a pgshard we started, else nothing.
demo_pid() {
  local pid
  [[ -f $PIDFILE ]] || return 0
  pid=$(cat "$PIDFILE" 2>/dev/null) || return 0
  [[ $pid =~ ^[0-9]+$ ]] || return 0
  [[ $(cat "/proc/$pid/comm" 2>/dev/null) == pgshard ]] || return 0
  echo "$pid"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; }

stop_pgshard() {
  local pid i
  pid=$(demo_pid)
  if [[ -n $pid ]]; then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      say "pgshard (pid $pid) did not stop within 10 s of SIGTERM; killing it"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    say "pgshard (pid $pid) stopped"
  fi
  rm -f "$PIDFILE"
}

stop_cluster() {
  if [[ -f $CLUSTER_DIR/cluster.env || -L $CLUSTER_DIR/pg ]]; then
    "$CLUSTER_SH" stop "$CLUSTER_DIR" | sed 's/^/demo: /'
  fi
}

cmd_stop() {
  resolve_build "${1:-}" >/dev/null
  stop_pgshard
  stop_cluster
  say "stopped"
}

cmd_start() {
  local build bin pid i
  build=$(resolve_build "${1:-}")
  bin=$build/pgshard
  [[ -x $bin ]] || die "$bin not found: run \`make build\` first"

  if [[ -n $(demo_pid) || -f $CLUSTER_DIR/cluster.env ]]; then
    say "a demo is running; stopping it first"
    stop_pgshard
    stop_cluster
  fi
  port_open && die "port $PORT is already in use by another program"

  mkdir -p "$DEMO"
  say "starting PostgreSQL 15: 2 shards, each a primary and 1 streaming replica"
  "$CLUSTER_SH" start "$CLUSTER_DIR" --shards 2 --replicas 1 | sed 's/^/demo: /'
  # shellcheck disable=SC1091
  source "$CLUSTER_DIR/cluster.env"

  say "creating the multi-tenant schema on both shards, pgbench's tables on shard 0"
  for k in 0 1; do
    "$CLUSTER_SH" psql "$CLUSTER_DIR" "$k" -- -q -v ON_ERROR_STOP=1 <<'EOF'
SET ROLE app;
SET client_min_messages = warning;
DROP TABLE IF EXISTS tenants, orders;
CREATE TABLE tenants (id bigint PRIMARY KEY, name text NOT NULL);
INSERT INTO tenants VALUES (1, 'acme'), (2, 'globex'), (3, 'initech'), (4, 'umbrella'), (5, 'hooli'),
  (6, 'stark'), (7, 'wayne'), (8, 'wonka');
CREATE TABLE orders (tenant_id bigint NOT NULL REFERENCES tenants, id bigint NOT NULL, item text NOT NULL,
  amount numeric(10, 2) NOT NULL, PRIMARY KEY (tenant_id, id));
EOF
  done
  PGPASSWORD=$PGS_PASSWORD "$PGS_PGBIN/pgbench" -i -s 1 -q -h "$PGS_HOST" -p "$PGS_SHARD0_PRIMARY_PORT" \
    -U "$PGS_USER" "$PGS_DB" >"$DEMO/pgbench-init.log" 2>&1 ||
    { cat "$DEMO/pgbench-init.log" >&2; die "pgbench -i on shard 0 failed"; }

  cat >"$INI" <<EOF
; written by scripts/demo.sh
[pgshard]
listen_addr = 127.0.0.1
listen_port = $PORT
workers = 2
pool_mode = transaction
pool_size = 20
auth_type = scram-sha-256
log_level = info
admin_users = app
read_your_writes = session
max_lag_ms = 1000

; where the shard-key types are looked up at start (no catalog_dsn in the demo)
monitor_dbname = app

[shard.0]
primary = $PGS_HOST:$PGS_SHARD0_PRIMARY_PORT
replicas = $PGS_HOST:$PGS_SHARD0_REPLICA1_PORT

[shard.1]
primary = $PGS_HOST:$PGS_SHARD1_PRIMARY_PORT
replicas = $PGS_HOST:$PGS_SHARD1_REPLICA1_PORT

[table.orders]
shard_key = tenant_id

[table.tenants]
omnisharded = true

[user.app]
password = $PGS_PASSWORD
EOF
  "$bin" --check -c "$INI" >/dev/null || die "pgshard rejected $INI"

  : >"$LOG"
  nohup "$bin" -c "$INI" >>"$LOG" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$PIDFILE"
  for ((i = 0; i < 100; i++)); do
    port_open && break
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -n 20 "$LOG" >&2
      rm -f "$PIDFILE"
      die "pgshard exited before accepting connections (log: $LOG)"
    fi
    sleep 0.1
  done
  port_open || { tail -n 20 "$LOG" >&2; die "pgshard does not accept connections on $PORT (log: $LOG)"; }
  [[ $(PGPASSWORD=app PGCONNECT_TIMEOUT=5 "$PGS_PGBIN/psql" -X -At -h 127.0.0.1 -p "$PORT" -U app -d app \
    -c 'SELECT count(*) FROM tenants') == 8 ]] || die "a query through pgshard failed (log: $LOG)"
  say "inserting 3 orders per tenant through pgshard (each tenant's go to its shard)"
  local t sql=""
  for t in 1 2 3 4 5 6 7 8; do
    sql+="INSERT INTO orders (tenant_id, id, item, amount) VALUES ($t, 1, 'anvil', 10.5), ($t, 2, 'rocket', 99), ($t, 3, 'magnet', 7.25);"$'\n'
  done
  printf '%s' "$sql" | PGPASSWORD=app "$PGS_PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PORT" -U app -d app -f - ||
    die "inserting orders through pgshard failed (log: $LOG)"
  local n0 n1
  n0=$(PGPASSWORD=app "$PGS_PGBIN/psql" -X -At -h 127.0.0.1 -p "$PGS_SHARD0_PRIMARY_PORT" -U app -d app -c 'SELECT count(*) FROM orders')
  n1=$(PGPASSWORD=app "$PGS_PGBIN/psql" -X -At -h 127.0.0.1 -p "$PGS_SHARD1_PRIMARY_PORT" -U app -d app -c 'SELECT count(*) FROM orders')

  cat <<EOF

pgshard $("$bin" --version | awk '{ print $2 }') is up on 127.0.0.1:$PORT (pid $pid), sharding orders by tenant_id over
2 shards: shard 0 (primary 127.0.0.1:$PGS_SHARD0_PRIMARY_PORT, replica :$PGS_SHARD0_REPLICA1_PORT) holds $n0 orders,
shard 1 (primary 127.0.0.1:$PGS_SHARD1_PRIMARY_PORT, replica :$PGS_SHARD1_REPLICA1_PORT) holds $n1.

  Connect:      PGPASSWORD=app psql -h 127.0.0.1 -p $PORT -U app app
                app=> SELECT *, inet_server_port() FROM orders WHERE tenant_id = 3;  -- its shard's replica
                app=> INSERT INTO orders (tenant_id, id, item, amount) VALUES (7, 4, 'glue', 1);
                app=> SELECT count(*), sum(amount) FROM orders;   -- no tenant: every shard, merged
                app=> SELECT tenant_id, sum(amount) FROM orders GROUP BY 1 ORDER BY 2 DESC LIMIT 3;
                app=> SELECT * FROM orders o JOIN orders p ON p.id = o.id;  -- refused (0A000): not on the key
                app=> SET pgshard.tenant = 7;             -- now keyless queries go to tenant 7's shard
                app=> SELECT *, inet_server_port() FROM tenants;  -- omnisharded: the shards take turns
  Admin:        PGPASSWORD=app psql -h 127.0.0.1 -p $PORT -U app pgshard
                pgshard=> SHOW SHARDS;
                pgshard=> SHOW ROUTE SELECT * FROM orders WHERE tenant_id = 3;
                pgshard=> SHOW ROUTE SELECT item, avg(amount) FROM orders GROUP BY item;
                pgshard=> SHOW REPLICAS;
  Benchmark:    PGPASSWORD=app pgbench -h 127.0.0.1 -p $PORT -U app -S -c 16 -j 2 -T 10 app
  pgshard log:  $LOG   (config: $INI)
  Stop:         make demo-stop
EOF
}

case ${1:-} in
  start) shift; cmd_start "$@" ;;
  stop) shift; cmd_stop "$@" ;;
  *) usage ;;
esac

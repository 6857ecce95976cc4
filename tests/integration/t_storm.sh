#!/usr/bin/env bash
# A disconnect storm through pgshard while pgbench runs on the same proxy: 300 short
# connections (pgbench -C and psql, in parallel batches), 50 TCP connections dropped before
# any startup packet, 50 dropped during authentication, and 30 psql clients killed with
# SIGKILL (10 in a query, 10 in a query inside a transaction, 10 idle inside a transaction).
# pgbench must see no failure and lose no row; afterwards no backend stays idle in
# transaction, nothing of the killed transactions is committed, and the proxy is alive,
# answering, and not bloated.
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"

W=$PGS_WORK/t_storm
rm -rf "$W"
mkdir -p "$W"

PGOPTIONS='-c client_min_messages=warning' pgs_psql_direct -q <<'EOF'
DROP TABLE IF EXISTS t_storm_tx, t_storm_bench;
CREATE TABLE t_storm_tx (id int NOT NULL, kind text NOT NULL);
CREATE TABLE t_storm_bench (client int NOT NULL, a int NOT NULL);
CREATE INDEX ON t_storm_bench (client);
EOF
pgs_on_exit "pgs_psql_direct -q -c 'DROP TABLE IF EXISTS t_storm_tx, t_storm_bench' >/dev/null 2>&1"

app_activity() { # WHERE-clause: count of app backends matching it
  pgs_psql_direct -c "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app' AND pid <> pg_backend_pid() AND ($1)"
}

wait_activity() { # WHERE-clause COUNT SECONDS MSG
  local i n
  for ((i = 0; i < $3 * 20; i++)); do
    n=$(app_activity "$1")
    [[ $n == "$2" ]] && return 0
    sleep 0.05
  done
  pgs_fail "$4: $n backend(s) where $2 expected"
}

rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$PGS_PROXY_PID/status"; }

NVICTIMS=10
# Under AddressSanitizer, freed memory sits in a quarantine of up to 256 MB by default,
# which would swamp the RSS check below; 32 MB keeps that check about pgshard's own memory.
export ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}quarantine_size_mb=32
pgs_start_proxy storm pool_mode=transaction workers=2 pool_size=50
rss_start=$(rss_kb)

cat >"$W/bench.sql" <<'EOF'
\set a random(1, 1000000)
BEGIN;
INSERT INTO t_storm_bench (client, a) VALUES (:client_id, :a);
SELECT count(*) FROM t_storm_bench WHERE client = :client_id;
COMMIT;
EOF
pgs_pgbench_ok bench proxy -n -c 4 -j 2 -T 10 -f "$W/bench.sql" &
bench=$!
t_start=$SECONDS

# Clients to be killed: psql exec'd in a subshell, so $! is psql itself.
victims=()
victim() { # NAME PSQL-ARGS...
  local name=$1; shift
  (exec env PGPASSWORD="$PGS_PASSWORD" "$PGS_PGBIN/psql" -X -At -h "$PGS_HOST" -p "$PGS_PROXY_PORT" \
    -U "$PGS_USER" -d "$PGS_DB" "$@" >"$W/$name.out" 2>&1 </dev/null) &
  victims+=("$!")
}
# The sleeping ones set client_connection_check_interval, so their backend notices within
# 250 ms that the proxy closed the server connection (a sleeping backend does not read its
# socket otherwise). Sleeps are long, so that no victim commits by finishing early.
for ((i = 1; i <= NVICTIMS; i++)); do
  victim "query$i" -c 'SET client_connection_check_interval = 250; SELECT pg_sleep(60)'
  victim "txquery$i" -c 'BEGIN' -c 'SET LOCAL client_connection_check_interval = 250' \
    -c "INSERT INTO t_storm_tx VALUES ($i, 'in a query')" -c 'SELECT pg_sleep(60)' -c 'COMMIT'
  victim "txidle$i" -c 'BEGIN' -c "INSERT INTO t_storm_tx VALUES ($((100 + i)), 'idle')" -c '\! exec sleep 30' -c 'COMMIT'
done

# Short connections: pgbench -C opens a new connection for every transaction (no process
# start per connection, so hundreds fit in a few seconds), plus real psql processes.
cat >"$W/short.sql" <<'EOF'
SELECT :client_id;
EOF
short_pgbench() { # LABEL CLIENTS TX_PER_CLIENT
  pgs_pgbench_ok "$1" proxy -n -C -c "$2" -j 2 -t "$3" -f "$W/short.sql"
  pgs_assert_eq $(($2 * $3)) "$PGS_PGBENCH_TX" "$1: $(($2 * $3)) connections, one transaction each"
  short_total=$((short_total + PGS_PGBENCH_TX))
}
short_psql() { # BATCH N: N psql processes at once, each checks its own answer
  local j pids=()
  for ((j = 1; j <= $2; j++)); do
    pgs_psql -c "SELECT $1 * 1000 + $j" >"$W/short.$1.$j" 2>&1 &
    pids+=("$!")
  done
  for j in "${pids[@]}"; do wait "$j" || true; done
  for ((j = 1; j <= $2; j++)); do
    [[ $(cat "$W/short.$1.$j") == "$(($1 * 1000 + j))" ]] ||
      pgs_fail "short psql $1.$j: $(head -c 300 "$W/short.$1.$j")"
  done
  short_total=$((short_total + $2))
}
half_open() { # N: TCP connections closed before any startup packet
  local j
  for ((j = 0; j < $1; j++)); do
    (exec 3<>"/dev/tcp/$PGS_HOST/$PGS_PROXY_PORT") 2>/dev/null || true
  done
}
startup_drop() { # N: connections that send a StartupMessage and leave during authentication
  local j
  for ((j = 0; j < $1; j++)); do
    # shellcheck disable=SC2059
    (exec 3<>"/dev/tcp/$PGS_HOST/$PGS_PROXY_PORT" &&
      printf '\x00\x00\x00\x1f\x00\x03\x00\x00user\x00app\x00database\x00app\x00\x00' >&3) 2>/dev/null || true
  done
}
short_total=0

# Every victim reaches its state before the kill: 2N in pg_sleep, N idle in transaction.
wait_activity "state = 'active' AND query LIKE '%SELECT pg_sleep(60)'" $((2 * NVICTIMS)) 20 "victims sleeping in a query"
wait_activity "state = 'idle in transaction' AND query LIKE 'INSERT INTO t_storm_tx%'" "$NVICTIMS" 10 \
  "victims idle in transaction"
pgs_log "$((3 * NVICTIMS)) victims in place after $((SECONDS - t_start)) s"
short_pgbench short1 30 5
half_open 25
startup_drop 25
short_psql 1 15

pgs_log "kill -9 the victims after $((SECONDS - t_start)) s"
# (bash reports each killed job on stderr; those lines are noise here.)
exec 4>&2 2>/dev/null
for p in "${victims[@]}"; do
  kids=$(cat "/proc/$p/task/$p/children" 2>/dev/null || true)
  # shellcheck disable=SC2086
  kill -9 "$p" $kids 2>/dev/null || true
done
for p in "${victims[@]}"; do wait "$p" || true; done
exec 2>&4 4>&-

# Idle-in-transaction victims hold no open transaction for long: the proxy closes their
# servers, and PostgreSQL rolls back when it reads EOF.
wait_activity "state LIKE 'idle in transaction%' AND query LIKE 'INSERT INTO t_storm_tx%'" 0 2 \
  "backends of killed idle-in-transaction clients still open 2 s after the kill"
pgs_log "killed idle transactions gone"
wait_activity "query LIKE '%SELECT pg_sleep(60)'" 0 3 \
  "backends of clients killed in a query still running 3 s after the kill"
pgs_log "killed queries gone"

short_pgbench short2 30 4
half_open 25
startup_drop 25
short_psql 2 15
pgs_assert_eq 300 "$short_total" "300 short connections, each answered"

wait "$bench" || pgs_fail "pgbench failed during the storm"
bench_tx=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$PGS_WORK/t_storm.bench.pgbench")
pgs_log "storm done after $((SECONDS - t_start)) s"

# pgbench lost nothing: one row per transaction it reports.
pgs_assert_eq "$bench_tx" "$(pgs_psql_direct -c 'SELECT count(*) FROM t_storm_bench')" \
  "one t_storm_bench row per pgbench transaction"

# Nothing of any killed transaction is committed.
pgs_assert_eq 0 "$(pgs_psql_direct -c 'SELECT count(*) FROM t_storm_tx')" "no row of a killed transaction was committed"
pgs_assert_eq 0 "$(app_activity "state LIKE 'idle in transaction%' AND now() - state_change > interval '1 second'")" \
  "no backend idle in transaction for more than a second"

kill -0 "$PGS_PROXY_PID" 2>/dev/null || pgs_fail "pgshard died"
pgs_assert_eq "alive" "$(pgs_psql -c "SELECT 'alive'")" "the proxy still answers"
pgs_pgbench_ok after proxy -n -c 4 -j 2 -t 20 -f "$W/bench.sql"
rss_end=$(rss_kb)
pgs_log "pgshard VmRSS: ${rss_start} kB at start, ${rss_end} kB after the storm"
((rss_end < 200 * 1024)) || pgs_fail "pgshard RSS is ${rss_end} kB after the storm (limit 200 MB)"

pgs_stop_proxy storm
pgs_log "all storm checks passed"

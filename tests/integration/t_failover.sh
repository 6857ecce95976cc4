#!/usr/bin/env bash
# Node failures under read/write splitting, on a cluster of its own (1 shard, primary + 2
# replicas, stopped at exit) because it stops and promotes servers:
#   1. pgbench -S -c 4 -T 10 through the proxy; at ~4 s replica1 is stopped with
#      -m immediate. At most 4 clients may fail or abort (the goal is 0: a read that fails
#      before a byte reached the client is retried); replica1's circuit opens, and from then
#      on every read is served by replica2 (probe reads and SHOW REPLICAS' reads counters).
#      Then replica1 is started again and stopped again under pgbench -S -M prepared.
#   2. The primary is stopped (-m fast): reads through the proxy still work, served by
#      replica2; a write fails after about primary_wait_ms = 1000 (within 0.5-5 s) with
#      SQLSTATE 57P03 or 08006 and a message about the primary.
#   3. A second proxy with primary_wait_ms = 15000 holds a write while replica2 is promoted
#      by outside tooling (pg_ctl promote); the write then succeeds on replica2, and new
#      writes through both proxies keep working without restarting them.
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"

W=$PGS_WORK/$PGS_TEST_NAME
FDIR=$PGS_WORK/failover-cluster
rm -rf "$W"
mkdir -p "$W"

pgs_own_cluster "$FDIR" 1 2
pgs_two_replicas
pgs_log "failover cluster: primary :$P, replica1 :$R1, replica2 :$R2"


pgs_log "pgbench -i -s 2 on the primary"
pgs_pgbench_direct -i -s 2 -q >"$W/init.out" 2>&1 || { cat "$W/init.out" >&2; pgs_fail "pgbench -i failed"; }
pgs_psql_direct -q -c 'CREATE TABLE t_fo (id serial PRIMARY KEY, v text NOT NULL)'
lsn=$(pgs_psql_direct -c "SELECT pg_current_wal_lsn()")
caught_up() {
  [[ $(pgs_psql_node 0 replica1 -c "SELECT pg_last_wal_replay_lsn() >= '$lsn'" 2>/dev/null) == t &&
    $(pgs_psql_node 0 replica2 -c "SELECT pg_last_wal_replay_lsn() >= '$lsn'" 2>/dev/null) == t ]]
}
pgs_wait_for 30 "the replicas did not replay the pgbench tables" caught_up

pgs_start_proxy fo admin_users=app lag_poll_ms=100 primary_wait_ms=1000 \
  '[shard.0]' "replicas = $(pgs_replica_list 0)"
PXA=$PGS_PROXY_PORT
pgs_wait_replicas_up 15 "$R1" "$R2"

# ---------------------------------------------------------------- 1. a replica dies
pgs_log "pgbench -S -c 4 -T 10 through the proxy; replica1 stopped at ~4 s"
PGPASSWORD=$PGS_PASSWORD "$PGS_PGBIN/pgbench" -h "$PGS_HOST" -p "$PXA" -U "$PGS_USER" \
  -n -S -c 4 -j 2 -T 10 -P 1 "$PGS_DB" >"$W/bench.out" 2>&1 &
BENCH=$!
pgs_on_exit "kill $BENCH 2>/dev/null; wait $BENCH 2>/dev/null"
sleep 4
kill -0 "$BENCH" 2>/dev/null || pgs_fail "pgbench ended before replica1 was stopped: $(tail -n 20 "$W/bench.out")"
# Watches SHOW REPLICAS from the moment of the stop (in the background, so the probe reads
# below run meanwhile) and writes when replica1 was first shown down with an open circuit.
circuit_watch() {
  local rows c deadline=$((t_stop + 15000))
  while (($(pgs_now_ms) < deadline)); do
    if rows=$(pgs_admin -c "SHOW REPLICAS" 2>/dev/null); then
      c=$(pgs_replica_field "$rows" "$R1" circuit)
      if [[ $(pgs_replica_field "$rows" "$R1" health) == down && ($c == open || $c == half_open) ]]; then
        echo "$rows" >"$W/circuit_rows"
        echo $(($(pgs_now_ms) - t_stop)) >"$W/circuit_open_ms"
        return 0
      fi
      echo "${rows//$'\n'/; }" >"$W/circuit_last"
    fi
    sleep 0.05
  done
}
pgs_replicas_cols
t_stop=$(pgs_now_ms)
circuit_watch &
WATCH=$!
pgs_cluster pgctl 0 replica1 stop -m immediate >"$W/stop_replica1.out" 2>&1 ||
  pgs_fail "could not stop replica1: $(cat "$W/stop_replica1.out")"
pgs_log "replica1 stopped (pg_ctl took $(($(pgs_now_ms) - t_stop)) ms)"

pgs_log "probe reads right after the stop must all come from replica2"
# Only from replica2, the one replica left: never from replica1, and from the primary only
# while the monitor had replica2 down too (on a loaded machine its poll can time out, and
# then reads rightly fall back to the primary; the log says so with node_down of node 2).
LOG=$PGS_WORK/fo/pgshard.log
pgs_session_open probe "$PXA"
declare -A probe=()
slowest=0
for ((i = 0; i < 50; i++)); do
  t0=$(pgs_now_ms)
  pgs_session_query probe "SELECT inet_server_port();" 15 || pgs_fail "probe read $i got no answer within 15 s"
  dt=$(($(pgs_now_ms) - t0)); ((dt <= slowest)) || slowest=$dt
  port=${PGS_SESSION_OUT[*]}
  if [[ $port == "$P" ]] && grep -q "node_down: shard 0 node 2 " "$LOG"; then
    echo "note: probe read $i from the primary while the monitor had replica2 down: $(grep "node_down: shard 0 node 2 " "$LOG" | tail -1)"
  else
    [[ $port == "$R2" ]] || pgs_fail "probe read $i after replica1 stopped: '${PGS_SESSION_OUT[*]}' (expected replica2's port $R2)"
  fi
  probe[$port]=$((${probe[$port]:-0} + 1))
done
pgs_session_close probe
((${probe[$R2]:-0} >= 25)) || pgs_fail "only ${probe[$R2]:-0} of 50 probe reads from replica2"
echo "ok: 50 probe reads after the stop: ${probe[$R2]:-0} from replica2, ${probe[$P]:-0} from the primary while replica2 was down, none from replica1 (slowest $slowest ms)"

pgs_log "replica1's circuit opens"
wait "$WATCH" || true
[[ -s $W/circuit_open_ms ]] ||
  pgs_fail "replica1 was not shown down with an open circuit within 15 s of its stop; last SHOW REPLICAS: $(cat "$W/circuit_last" 2>/dev/null)"
open_ms=$(cat "$W/circuit_open_ms")
pgs_log "MEASURED: replica1 shown down with an open circuit $open_ms ms after the stop began (SHOW REPLICAS polled every ~50 ms)"
((open_ms <= 5000)) || pgs_fail "replica1's circuit opened $open_ms ms after it stopped (limit 5 s with lag_poll_ms = 100)"
# The reads counters as SHOW REPLICAS showed them when the circuit was seen open.
rows=$(cat "$W/circuit_rows")
r1_a=$(pgs_replica_field "$rows" "$R1" reads); r2_a=$(pgs_replica_field "$rows" "$R2" reads); p_a=$(pgs_replica_field "$rows" "$P" reads)

kill -0 "$BENCH" 2>/dev/null || pgs_log "(pgbench has already ended: the machine is slow)"
wait "$BENCH" && brc=0 || brc=$?
rows=$(pgs_admin -c "SHOW REPLICAS")
r1_b=$(pgs_replica_field "$rows" "$R1" reads); r2_b=$(pgs_replica_field "$rows" "$R2" reads); p_b=$(pgs_replica_field "$rows" "$P" reads)
tx=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$W/bench.out")
failed=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$W/bench.out")
aborted=$(grep -Ec 'client [0-9]+ (script [0-9]+ )?aborted' "$W/bench.out" || true)
pgs_log "pgbench: exit $brc, ${tx:-?} transactions, ${failed:-?} failed transactions, $aborted aborted clients"
grep '^progress:' "$W/bench.out" | sed 's/^/    /' || true
grep -i 'error\|abort' "$W/bench.out" | head -n 10 | sed 's/^/    /' || true
pgs_log "MEASURED: aborted clients $aborted, failed transactions ${failed:-?} (limit: 4 together; goal 0)"
[[ ${tx:-} =~ ^[0-9]+$ ]] && ((tx > 0)) || pgs_fail "pgbench processed no transactions: $(tail -n 20 "$W/bench.out")"
((aborted + ${failed:-0} <= 4)) || pgs_fail "killing replica1 cost $aborted aborted clients and ${failed:-?} failed transactions (limit 4)"
echo "ok: killing replica1 cost $aborted aborted clients, ${failed:-?} failed transactions"
last_tps=$(grep '^progress:' "$W/bench.out" | tail -n 1 | sed -n 's/.* \([0-9.]*\) tps.*/\1/p')
((aborted == 4)) || [[ ${last_tps%.*} -gt 0 ]] || pgs_fail "pgbench's last progress line shows ${last_tps:-no} tps after replica1 stopped"
pgs_log "SHOW REPLICAS reads from the circuit opening to the end of pgbench: replica1 +$((r1_b - r1_a)), replica2 +$((r2_b - r2_a)), primary +$((p_b - p_a))"
pgs_assert_eq 0 "$((r1_b - r1_a))" "reads served by replica1 after it stopped"
pgs_assert_eq 0 "$((p_b - p_a))" "reads served by the primary after replica1 stopped"
((r2_b - r2_a > 0)) || pgs_fail "replica2 served no reads after replica1 stopped"
echo "ok: after the stop, all reads came from replica2"

# ---------------------------------------------------------------- 1b. the same, extended protocol
# A prepared read is Bind/Execute/Sync of a named statement: retried too when replica1
# fails before answering it.
pgs_log "replica1 back, then stopped again under pgbench -S -M prepared"
pgs_cluster pgctl 0 replica1 start >"$W/start_replica1.out" 2>&1 ||
  pgs_fail "could not start replica1 again: $(cat "$W/start_replica1.out")"
pgs_wait_replicas_up 30 "$R1" "$R2"
PGPASSWORD=$PGS_PASSWORD "$PGS_PGBIN/pgbench" -h "$PGS_HOST" -p "$PXA" -U "$PGS_USER" \
  -n -S -M prepared -c 4 -j 2 -T 6 "$PGS_DB" >"$W/bench_prepared.out" 2>&1 &
BENCH=$!
sleep 2.5
kill -0 "$BENCH" 2>/dev/null || pgs_fail "pgbench -M prepared ended before replica1 was stopped: $(tail -n 20 "$W/bench_prepared.out")"
pgs_cluster pgctl 0 replica1 stop -m immediate >"$W/stop_replica1b.out" 2>&1 ||
  pgs_fail "could not stop replica1: $(cat "$W/stop_replica1b.out")"
wait "$BENCH" || true
tx=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$W/bench_prepared.out")
failed=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$W/bench_prepared.out")
aborted=$(grep -Ec 'client [0-9]+ (script [0-9]+ )?aborted' "$W/bench_prepared.out" || true)
pgs_log "MEASURED: -M prepared: ${tx:-?} transactions, aborted clients $aborted, failed transactions ${failed:-?} (limit 4 together; goal 0)"
[[ ${tx:-} =~ ^[0-9]+$ ]] && ((tx > 0)) || pgs_fail "pgbench -M prepared processed no transactions: $(tail -n 20 "$W/bench_prepared.out")"
((aborted + ${failed:-0} <= 4)) ||
  pgs_fail "killing replica1 under -M prepared cost $aborted aborted clients and ${failed:-?} failed transactions (limit 4)"
echo "ok: killing replica1 under -M prepared cost $aborted aborted clients, ${failed:-?} failed transactions"

# ---------------------------------------------------------------- 2. the primary dies
pgs_log "stop the primary (-m fast)"
pgs_cluster pgctl 0 primary stop -m fast >"$W/stop_primary.out" 2>&1 ||
  pgs_fail "could not stop the primary: $(cat "$W/stop_primary.out")"
out=$(pgs_psql -c "SELECT inet_server_port()" -c "SELECT inet_server_port()" -c "SELECT count(*) FROM pgbench_branches" \
  -c "SELECT inet_server_port()" 2>&1) || pgs_fail "reads through the proxy fail with the primary down: $out"
pgs_assert_eq "$R2 $R2 2 $R2" "${out//$'\n'/ }" "reads with the primary down are served by replica2"
pgs_log "a write with the primary down (primary_wait_ms = 1000)"
t0=$(pgs_now_ms)
rc=0
out=$(pgs_psql -v VERBOSITY=verbose -c "INSERT INTO t_fo (v) VALUES ('while-down')" 2>&1) || rc=$?
dt=$(($(pgs_now_ms) - t0))
pgs_log "MEASURED: the write failed after $dt ms (exit $rc): ${out//$'\n'/ }"
((rc != 0)) || pgs_fail "a write succeeded with the primary down and nothing promoted: $out"
grep -Eq '(57P03|08006)' <<<"$out" || pgs_fail "the failed write's SQLSTATE is not 57P03 or 08006: $out"
grep -qi 'primary' <<<"$out" || pgs_fail "the failed write's message does not mention the primary: $out"
((dt >= 500 && dt <= 5000)) || pgs_fail "the write failed after $dt ms; expected it to wait about primary_wait_ms = 1000 (0.5-5 s allowed)"
echo "ok: the write failed in $dt ms with $(grep -Eo '57P03|08006' <<<"$out" | head -n1)"
out=$(pgs_psql -c "SELECT inet_server_port()" 2>&1) || pgs_fail "a read after the failed write failed: $out"
pgs_assert_eq "$R2" "$out" "reads still work after the failed write"

# ---------------------------------------------------------------- 3. promotion
pgs_log "a second proxy (primary_wait_ms = 15000) holds a write while replica2 is promoted"
pgs_start_proxy fo_wait admin_users=app lag_poll_ms=100 primary_wait_ms=15000 \
  '[shard.0]' "replicas = $(pgs_replica_list 0)"
PXB=$PGS_PROXY_PORT
pgs_wait_replicas_up 15 "$R2"
t_w0=$(pgs_now_ms)
pgs_psql -q -v VERBOSITY=verbose -c "INSERT INTO t_fo (v) VALUES ('held') RETURNING inet_server_port()" \
  >"$W/held.out" 2>&1 &
HELD=$!
pgs_on_exit "kill $HELD 2>/dev/null; wait $HELD 2>/dev/null"
sleep 1.5
kill -0 "$HELD" 2>/dev/null || pgs_fail "the write through the proxy with primary_wait_ms = 15000 did not wait: $(cat "$W/held.out")"
t_promote=$(pgs_now_ms)
pgs_cluster pgctl 0 replica2 promote >"$W/promote.out" 2>&1 || pgs_fail "pg_ctl promote failed: $(cat "$W/promote.out")"
t_promoted=$(pgs_now_ms)
pgs_log "replica2 promoted (pg_ctl promote -w took $((t_promoted - t_promote)) ms)"
while kill -0 "$HELD" 2>/dev/null && (($(pgs_now_ms) < t_w0 + 20000)); do sleep 0.05; done
t_done=$(pgs_now_ms)
kill -0 "$HELD" 2>/dev/null && pgs_fail "the held write still waits $((t_done - t_w0)) ms after it was sent"
wait "$HELD" && hrc=0 || hrc=$?
pgs_log "MEASURED: the held write ended $((t_done - t_promoted)) ms after the promotion finished ($((t_done - t_w0)) ms after it was sent): exit $hrc, $(cat "$W/held.out")"
((hrc == 0)) || pgs_fail "the held write failed after replica2 was promoted: $(cat "$W/held.out")"
pgs_assert_eq "$R2" "$(cat "$W/held.out")" "the held write ran on the promoted replica2"
pgs_assert_eq 1 "$(pgs_psql_node 0 replica2 -c "SELECT count(*) FROM t_fo WHERE v = 'held'")" "the held row is on replica2"

pgs_log "new writes keep working through both proxies, without a restart"
for i in 1 2 3 4 5; do
  out=$(pgs_psql_port "$PXB" -q -c "INSERT INTO t_fo (v) VALUES ('b$i') RETURNING inet_server_port()" 2>&1) ||
    pgs_fail "write $i through the second proxy failed: $out"
  pgs_assert_eq "$R2" "$out" "write $i through the second proxy ran on replica2"
done
write_a() {
  local rc=0
  LAST_OUT=$(pgs_psql_port "$PXA" -q -c "INSERT INTO t_fo (v) VALUES ('a0') RETURNING inet_server_port()" 2>&1) || rc=$?
  PGS_WAIT_INFO=$LAST_OUT
  return $rc
}
t0=$(pgs_now_ms)
pgs_wait_for 10 "no write through the first proxy succeeded after the promotion" write_a
pgs_log "MEASURED: the first proxy took writes again $(($(pgs_now_ms) - t_promoted)) ms after the promotion"
pgs_assert_eq "$R2" "$LAST_OUT" "the first proxy's write ran on replica2"
for i in 1 2 3 4 5; do
  out=$(pgs_psql_port "$PXA" -q -c "INSERT INTO t_fo (v) VALUES ('a$i') RETURNING inet_server_port()" 2>&1) ||
    pgs_fail "write $i through the first proxy failed: $out"
  pgs_assert_eq "$R2" "$out" "write $i through the first proxy ran on replica2"
done
pgs_assert_eq 12 "$(pgs_psql_node 0 replica2 -c "SELECT count(*) FROM t_fo")" "all 12 writes are on replica2"
rows=$(PGS_ADMIN_PORT=$PXB pgs_admin -c "SHOW REPLICAS")
echo "$rows"
pgs_assert_eq "primary|f|up" \
  "$(pgs_replica_field "$rows" "$R2" role)|$(pgs_replica_field "$rows" "$R2" in_recovery)|$(pgs_replica_field "$rows" "$R2" health)" \
  "SHOW REPLICAS: promoted replica2 is the primary"

pgs_stop_proxy fo_wait
pgs_stop_proxy fo
"$PGS_CLUSTER_SH" stop "$FDIR" >/dev/null
pgs_log "all failover checks passed"

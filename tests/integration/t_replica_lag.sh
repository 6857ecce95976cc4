#!/usr/bin/env bash
# Lag-aware replica reads (shared cluster, two replicas): with max_lag_ms = 500,
# lag_poll_ms = 100 and max_lag_bytes = 0, replica1's replay is paused while rows are
# written to the primary every ~20 ms. The test polls SHOW REPLICAS every 50 ms and reads
# `SELECT inet_server_port()` through the proxy in between, and measures
#   - when replica1's lag_ms first shows > 500 (t_lag),
#   - when the first run of 50 consecutive reads without replica1 began (t_excl);
# t_excl - t_lag must be at most 2 poll intervals + 1 s, replica1 must still serve reads in
# the first 250 ms of the pause (its lag is under the limit then), must not serve a read
# again once excluded while paused, and replica2 keeps serving the reads. A session's
# SET pgshard.max_lag_ms and a /* pgshard: max_lag_ms=N */ hint with a large N make the
# lagging replica eligible again. After replay resumes, replica1 serves reads within 10 s.
# Replay is always resumed at exit.
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"

rm -rf "${PGS_WORK:?}/$PGS_TEST_NAME"
pgs_two_replicas
MAX_LAG_MS=500
POLL_MS=100
SLACK_MS=1000

now() { local t=${EPOCHREALTIME/[.,]/}; NOW=$((t / 1000)); }

resume_replay() {
  pgs_cluster psql 0 replica1 -- -Atq -c "SELECT pg_wal_replay_resume()" >/dev/null 2>&1 || true
}
pgs_on_exit resume_replay
pgs_on_exit "pgs_psql_direct -q -c 'DROP TABLE IF EXISTS t_lag' >/dev/null 2>&1"
resume_replay # a run killed before its exit hook may have left it paused

PGOPTIONS='-c client_min_messages=warning' pgs_psql_direct -q -c 'DROP TABLE IF EXISTS t_lag' \
  -c 'CREATE TABLE t_lag (id bigserial PRIMARY KEY, pad text NOT NULL)'
replicated() {
  [[ $(pgs_psql_node 0 replica1 -c "SELECT to_regclass('t_lag') IS NOT NULL" 2>/dev/null) == t &&
    $(pgs_psql_node 0 replica2 -c "SELECT to_regclass('t_lag') IS NOT NULL" 2>/dev/null) == t ]]
}
pgs_wait_for 15 "t_lag did not reach both replicas" replicated

pgs_start_proxy lag admin_users=app "max_lag_ms=$MAX_LAG_MS" "lag_poll_ms=$POLL_MS" max_lag_bytes=0 \
  '[shard.0]' "replicas = $(pgs_replica_list 0)" "balance = round_robin"
PX=$PGS_PROXY_PORT
pgs_wait_replicas_up 15 "$R1" "$R2"

pgs_session_open rd "$PX"
pgs_session_open adm "$PX" pgshard

read_port() { # one read through session $1; PORT = the node that served it
  pgs_session_query "$1" "SELECT inet_server_port();" || pgs_fail "a read through the proxy got no answer"
  PORT=${PGS_SESSION_OUT[0]:-}
  [[ ${#PGS_SESSION_OUT[@]} == 1 && ($PORT == "$P" || $PORT == "$R1" || $PORT == "$R2") ]] ||
    pgs_fail "a read through the proxy answered: ${PGS_SESSION_OUT[*]}"
}

pgs_log "before the pause both replicas serve reads"
declare -A seen=()
for ((i = 0; i < 20; i++)); do read_port rd; seen[$PORT]=$((${seen[$PORT]:-0} + 1)); done
pgs_log "20 reads: primary ${seen[$P]:-0}, replica1 ${seen[$R1]:-0}, replica2 ${seen[$R2]:-0}"
[[ ${seen[$R1]:-0} -gt 0 && ${seen[$R2]:-0} -gt 0 && ${seen[$P]:-0} == 0 ]] ||
  pgs_fail "before any lag, 20 reads did not go to both replicas"

pgs_log "write load on the primary, one row every ~20 ms"
touch "$W/writer.on"
writer() { while [[ -e $W/writer.on ]]; do echo "INSERT INTO t_lag (pad) VALUES (repeat('x', 100));"; sleep 0.02; done; }
writer | pgs_psql_direct -q >/dev/null 2>"$W/writer.err" &
WRITER=$!
stop_writer() {
  rm -f "$W/writer.on"
  [[ -n ${WRITER:-} ]] || return 0
  local i
  for ((i = 0; i < 30; i++)); do kill -0 "$WRITER" 2>/dev/null || break; sleep 0.1; done
  kill "$WRITER" 2>/dev/null || true
  wait "$WRITER" 2>/dev/null || true
  WRITER=
}
pgs_on_exit stop_writer
rows_now() { pgs_psql_direct -c "SELECT count(*) FROM t_lag"; }
c0=$(rows_now)
writer_inserts() {
  PGS_WAIT_INFO="$(rows_now) rows (from $c0); writer stderr: $(cat "$W/writer.err")"
  (($(rows_now) > c0 + 5))
}
pgs_wait_for 10 "the writer does not insert rows" writer_inserts

pgs_log "pause replay on replica1"
pgs_cluster psql 0 replica1 -- -Atq -c "SELECT pg_wal_replay_pause()" >/dev/null
now; t_pause=$NOW
pgs_replicas_cols
t_lag="" t_excl="" streak=0 streak_start=0 next_poll=0 lag="" last_r1=0
after_r1=0 after_r2=0 after_p=0 reads=0 early=0 early_r1=0
# Replay stopped at most a moment before t_pause, so in the first EARLY_MS after it replica1
# lags less than max_lag_ms even counting a poll interval of error: it must still serve.
EARLY_MS=250
deadline=$((t_pause + 30000))
while :; do
  now
  ((NOW < deadline)) || break
  if ((NOW >= next_poll)); then
    next_poll=$((NOW + 50))
    pgs_session_query adm "SHOW REPLICAS;" || pgs_fail "SHOW REPLICAS got no answer"
    rows=$(printf '%s\n' "${PGS_SESSION_OUT[@]}")
    lag=$(pgs_replica_field "$rows" "$R1" lag_ms) || pgs_fail "SHOW REPLICAS has no row for replica1: $rows"
    [[ $lag =~ ^[0-9]+$ ]] || pgs_fail "SHOW REPLICAS: replica1 lag_ms is '$lag': $rows"
    if [[ -z $t_lag ]] && ((lag > MAX_LAG_MS)); then
      t_lag=$NOW
      pgs_log "replica1 lag_ms $lag > $MAX_LAG_MS shown $((t_lag - t_pause)) ms after the pause"
    fi
  fi
  now; t_q=$NOW
  read_port rd
  reads=$((reads + 1))
  if ((t_q < t_pause + EARLY_MS)); then
    early=$((early + 1))
    [[ $PORT != "$R1" ]] || early_r1=$((early_r1 + 1))
  fi
  if [[ -z $t_excl ]]; then
    if [[ $PORT == "$R1" ]]; then
      streak=0
      last_r1=$t_q
    else
      ((streak > 0)) || streak_start=$t_q
      streak=$((streak + 1))
      if ((streak >= 50)); then
        t_excl=$streak_start
        pgs_log "50 reads in a row without replica1 from $((t_excl - t_pause)) ms after the pause (last replica1 read at $((last_r1 - t_pause)) ms)"
      fi
    fi
  else
    case $PORT in
      "$R1") after_r1=$((after_r1 + 1)) ;;
      "$R2") after_r2=$((after_r2 + 1)) ;;
      *) after_p=$((after_p + 1)) ;;
    esac
  fi
  # Once both are known, watch 1.5 s and at least 20 more reads, with replica1 still paused
  # (on a busy machine the 50-read streak ends long after it started, at t_excl).
  [[ -n $t_lag && -n $t_excl ]] && ((t_q >= t_excl + 1500 && t_q >= t_lag + 1500)) &&
    ((after_r1 + after_r2 + after_p >= 20)) && break
done
pgs_log "$reads reads in $((NOW - t_pause)) ms since the pause; replica1 lag_ms last seen $lag"
[[ -n $t_lag ]] || pgs_fail "replica1's lag_ms in SHOW REPLICAS never passed $MAX_LAG_MS in 30 s of paused replay (last: $lag)"
[[ -n $t_excl ]] || pgs_fail "replica1 kept serving reads for 30 s with replay paused and lag_ms at $lag (max_lag_ms = $MAX_LAG_MS)"
delta=$((t_excl - t_lag))
pgs_log "MEASURED: lag > ${MAX_LAG_MS} ms seen at +$((t_lag - t_pause)) ms, replica1 excluded from +$((t_excl - t_pause)) ms: $delta ms after the lag passed the threshold (limit $((2 * POLL_MS + SLACK_MS)) ms)"
((delta <= 2 * POLL_MS + SLACK_MS)) ||
  pgs_fail "replica1 was excluded $delta ms after its lag passed max_lag_ms (limit: 2 x lag_poll_ms + ${SLACK_MS} ms = $((2 * POLL_MS + SLACK_MS)) ms)"
echo "ok: replica1 excluded $delta ms after its lag passed $MAX_LAG_MS ms"
pgs_log "reads in the first $EARLY_MS ms after the pause (lag still under $MAX_LAG_MS ms): $early, $early_r1 on replica1"
if ((early >= 4)); then
  ((early_r1 > 0)) || pgs_fail "replica1 served none of the $early reads in the first $EARLY_MS ms after the pause, while its lag was still under max_lag_ms = $MAX_LAG_MS: excluded too early"
  echo "ok: replica1 not excluded before its lag reached the limit"
else
  pgs_log "(only $early reads in the first $EARLY_MS ms, the machine is busy: the too-early check is skipped)"
fi
pgs_log "reads after the exclusion: replica1 $after_r1, replica2 $after_r2, primary $after_p"
pgs_assert_eq 0 "$after_r1" "reads served by paused replica1 after its exclusion"
total=$((after_r1 + after_r2 + after_p))
((total > 0 && after_r2 * 10 >= total * 9)) ||
  pgs_fail "replica2 served only $after_r2 of $total reads while replica1 was excluded (want >= 90 %)"
echo "ok: replica2 still serves the reads ($after_r2 of $total)"

pgs_log "a session's max_lag_ms and a hint's max_lag_ms override the configured 500 ms"
pgs_session_query adm "SHOW REPLICAS;" || pgs_fail "SHOW REPLICAS got no answer"
lag=$(pgs_replica_field "$(printf '%s\n' "${PGS_SESSION_OUT[@]}")" "$R1" lag_ms)
((lag > MAX_LAG_MS)) || pgs_fail "replica1 lag_ms is $lag with replay still paused"
pgs_session_open ovr "$PX"
pgs_session_query ovr "SET pgshard.max_lag_ms = 3600000;" || pgs_fail "SET pgshard.max_lag_ms got no answer"
pgs_assert_eq SET "${PGS_SESSION_OUT[*]}" "SET pgshard.max_lag_ms = 3600000"
n1=0
for ((i = 0; i < 20; i++)); do read_port ovr; [[ $PORT != "$R1" ]] || n1=$((n1 + 1)); done
((n1 > 0)) || pgs_fail "with SET pgshard.max_lag_ms = 3600000, 20 reads never went to replica1 (lag_ms $lag)"
echo "ok: SET pgshard.max_lag_ms = 3600000: replica1 served $n1 of 20 reads (its lag_ms: $lag)"
n1=0
for ((i = 0; i < 20; i++)); do
  pgs_session_query rd "/* pgshard: max_lag_ms=3600000 */ SELECT inet_server_port();" || pgs_fail "hinted read got no answer"
  [[ ${PGS_SESSION_OUT[*]} != "$R1" ]] || n1=$((n1 + 1))
done
((n1 > 0)) || pgs_fail "with /* pgshard: max_lag_ms=3600000 */, 20 reads never went to replica1 (lag_ms $lag)"
echo "ok: /* pgshard: max_lag_ms=3600000 */: replica1 served $n1 of 20 reads"
for ((i = 0; i < 10; i++)); do
  read_port rd
  [[ $PORT != "$R1" ]] || pgs_fail "a read without the hint went to the lagging replica1 after hinted reads"
done
echo "ok: the hint applies to its query only"
pgs_session_close ovr

pgs_log "resume replay on replica1"
pgs_cluster psql 0 replica1 -- -Atq -c "SELECT pg_wal_replay_resume()" >/dev/null
now; t_resume=$NOW
back=""
while ((NOW < t_resume + 10000)); do
  read_port rd
  now
  if [[ $PORT == "$R1" ]]; then back=$NOW; break; fi
  sleep 0.01
done
[[ -n $back ]] || pgs_fail "replica1 served no read within 10 s of resuming replay"
pgs_log "MEASURED: replica1 serves reads again $((back - t_resume)) ms after replay resumed"
echo "ok: replica1 back within 10 s"

stop_writer
pgs_session_close rd
pgs_session_close adm
pgs_stop_proxy lag
pgs_log "all lag checks passed"

#!/usr/bin/env bash
# Session state that transaction pooling cannot replay, through pgshard with one worker and
# a pool small enough that clients share servers:
#   - another client's SET ROLE never reaches the next client of that server;
#   - a session advisory lock, a temp table, a WITH HOLD cursor, set_config(..., false) and
#     LISTEN keep their server with the client across transactions (pinning), show in
#     SHOW CLIENTS/SERVERS and in /metrics; removing the state (pg_advisory_unlock_all,
#     DISCARD TEMP, CLOSE ALL, UNLISTEN *) lets the server go at the next transaction end;
#   - when a pinned client leaves, its server is cleaned (DISCARD ALL) before anyone else gets
#     it: the lock is free, the temp table gone, and `pgbench -i` works after a held cursor;
#   - a pool exhausted by pinned clients makes others wait (query_wait_timeout applies) and
#     serves them when the pin goes;
#   - pin_session_state = off shares servers as before, but cleans them all the same;
#   - with replicas, every read of a pinned client (its temp table's too) stays on its
#     server, and reads go to the replicas again once the pin is gone.
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"

W=$PGS_WORK/t_pinning
rm -rf "$W"
mkdir -p "$W"

ROLE=pgs_pin_role
pgs_cluster psql 0 -- -q -c "DROP ROLE IF EXISTS $ROLE" -c "CREATE ROLE $ROLE" -c "GRANT $ROLE TO $PGS_USER" ||
  pgs_fail "creating role $ROLE"
pgs_on_exit "\"$PGS_CLUSTER_SH\" psql \"$PGS_CLUSTER_DIR\" 0 -- -q -c 'DROP OWNED BY $ROLE' -c 'DROP ROLE IF EXISTS $ROLE' >/dev/null 2>&1"
pgs_psql_direct -q -c 'DROP TABLE IF EXISTS t_pinning_rows' -c 'CREATE TABLE t_pinning_rows (id int)'
pgs_on_exit "pgs_psql_direct -q -c 'DROP TABLE IF EXISTS t_pinning_rows' >/dev/null 2>&1"

METRICS=$(pgs_free_port)
pgs_start_proxy pin workers=1 pool_size=1 query_wait_timeout=3 admin_users=app metrics_port="$METRICS"
PORT=$PGS_PROXY_PORT

# The pinned column of SHOW CLIENTS for the clients that have a server.
pinned_clients() { pgs_admin -c "SHOW CLIENTS" | awk -F'|' '$9 != 0 {print $10}' | sort | tr '\n' ' '; }
advisory_locks() { pgs_psql_direct -c "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 7"; }

pgs_log "SET ROLE of one client does not reach the next client of its server"
out=$(pgs_psql -c "SET ROLE $ROLE" -c "SELECT current_user")
pgs_assert_eq "SET"$'\n'"$ROLE" "$out" "the client's own role"
pgs_assert_eq "$PGS_USER|$PGS_USER" "$(pgs_psql -c "SELECT current_user, session_user")" \
  "the next client of the (only) server runs as itself"

pgs_log "a session advisory lock keeps its server across transactions; leaving frees it"
pgs_session_open a "$PORT"
pgs_session_query a "SELECT pg_advisory_lock(7), pg_backend_pid();" || pgs_fail "session a: lock"
pid_a=${PGS_SESSION_OUT[0]#*|}
pgs_session_query a "SELECT pg_backend_pid();" || pgs_fail "session a: pid"
pgs_assert_eq "$pid_a" "${PGS_SESSION_OUT[0]}" "the pinned client keeps its server in a later transaction"
pgs_assert_eq "advisory_lock " "$(pinned_clients)" "SHOW CLIENTS shows the pin and its reason"
servers=$(pgs_admin -c "SHOW SERVERS")
grep -q "|$pid_a|.*|advisory_lock$" <<<"$servers" || pgs_fail "SHOW SERVERS does not show the pin: $servers"
metrics=$(curl -fsS "http://127.0.0.1:$METRICS/metrics") || pgs_fail "GET /metrics failed"
grep -qx 'pgshard_pins_total{reason="advisory_lock"} [1-9][0-9]*' <<<"$metrics" ||
  pgs_fail "/metrics does not count the pin: $(grep pins_total <<<"$metrics")"
# The only server is pinned: another client waits, then gets query_wait_timeout's error.
t0=$(pgs_now_ms)
if err=$(pgs_psql -c "SELECT 1" 2>&1); then pgs_fail "a client got the pinned server: $err"; fi
ms=$(($(pgs_now_ms) - t0))
[[ $err == *"query_wait_timeout"* ]] || pgs_fail "the waiting client's error: $err"
((ms >= 2500)) || pgs_fail "the waiting client gave up after $ms ms, before query_wait_timeout (3 s)"
pgs_log "a client waited ${ms} ms for the pinned server, then: ${err##*ERROR:  }"
# A queued client that goes away leaves the queue at once, not when a server comes for it.
queued() {
  PGS_WAIT_INFO=$(pgs_admin -c "SHOW POOLS" | awk -F'|' -v u="$PGS_USER" -v d="$PGS_DB" \
    '$1 == u && $2 == d {n += $4} END {print n + 0}')
  [[ $PGS_WAIT_INFO == "$1" ]]
}
fa=${PGS_SESS_IN[a]}
(
  exec {fa}>&-
  pgs_psql -c "SELECT 1"
) >/dev/null 2>&1 &
q=$!
pgs_wait_for 2 "a second client queues for the pinned server" queued 1
pkill -P "$q" psql 2>/dev/null || true
wait "$q" 2>/dev/null || true
t0=$(pgs_now_ms)
pgs_wait_for 1 "the queue empties when its client goes away" queued 0
pgs_log "the queued client left the queue $(($(pgs_now_ms) - t0)) ms after it went away"
# Unpinning lets the server go at the next transaction end; the lock is gone with it.
pgs_session_query a "SELECT pg_advisory_unlock_all();" || pgs_fail "session a: unlock"
pgs_assert_eq "" "$(pinned_clients | tr -d ' ')" "no pin after pg_advisory_unlock_all"
pgs_assert_eq 1 "$(pgs_psql -c "SELECT 1")" "another client gets the server once it is unpinned"
pgs_session_query a "SELECT pg_advisory_lock(7);" || pgs_fail "session a: lock again"
pgs_assert_eq 1 "$(advisory_locks)" "lock 7 held by the pinned client"
# A second client queues for the pinned server and gets it when the first one leaves.
# (The background client must not hold session a's input open: a would never see its end.)
fa=${PGS_SESS_IN[a]}
(
  exec {fa}>&-
  pgs_psql -c "SELECT pg_try_advisory_lock(7)" -c "SELECT pg_advisory_unlock_all()"
) >"$W/b.out" 2>&1 &
b=$!
sleep 0.5
pgs_session_close a
wait "$b" || pgs_fail "the queued client failed: $(cat "$W/b.out")"
pgs_assert_eq "t" "$(head -n 1 "$W/b.out")" "lock 7 is free for the next client once the pinned one left"
pgs_assert_eq 0 "$(advisory_locks)" "no advisory lock left on the server"

pgs_log "a temp table: the client reads it in later transactions; the next client starts clean"
pgs_session_open t "$PORT"
pgs_session_query t "CREATE TEMP TABLE tmp_pin (x int); INSERT INTO tmp_pin VALUES (1), (2);" || pgs_fail "temp: create"
pgs_session_query t "SELECT count(*) FROM tmp_pin;" || pgs_fail "temp: read"
pgs_assert_eq 2 "${PGS_SESSION_OUT[0]}" "the temp table's rows in a later transaction"
pgs_assert_eq "temp " "$(pinned_clients)" "pinned by its temp table"
pgs_session_query t "DISCARD TEMP;" || pgs_fail "temp: discard"
pgs_assert_eq "" "$(pinned_clients | tr -d ' ')" "DISCARD TEMP unpins"
pgs_session_query t "CREATE TEMP TABLE tmp_pin (x int); INSERT INTO tmp_pin VALUES (3);" || pgs_fail "temp: again"
pgs_session_close t
out=$(pgs_psql -c "CREATE TEMP TABLE tmp_pin (x int)" -c "SELECT count(*) FROM tmp_pin" 2>&1) ||
  pgs_fail "the next client cannot create its own tmp_pin: $out"
pgs_assert_eq "CREATE TABLE"$'\n'"0" "$out" "the next client's tmp_pin is its own and empty"
out=$(pgs_psql -c "CREATE TEMP TABLE tmp_drop (x int) ON COMMIT DROP" 2>&1)
pgs_assert_eq "" "$(pinned_clients | tr -d ' ')" "ON COMMIT DROP pins nothing"

pgs_log "a WITH HOLD cursor survives its transaction; pgbench -i works after its client left"
pgs_session_open c "$PORT"
pgs_session_query c "DECLARE cur CURSOR WITH HOLD FOR SELECT g FROM generate_series(1, 3) g;" || pgs_fail "cursor: declare"
pgs_session_query c "FETCH 2 FROM cur;" || pgs_fail "cursor: fetch"
pgs_assert_eq "1 2" "${PGS_SESSION_OUT[*]}" "FETCH from the held cursor in a later transaction"
pgs_session_query c "FETCH 1 FROM cur;" || pgs_fail "cursor: fetch again"
pgs_assert_eq "3" "${PGS_SESSION_OUT[*]}" "the cursor kept its position"
pgs_session_close c
PGPASSWORD=$PGS_PASSWORD "$PGS_PGBIN/pgbench" -i -s 1 -q -h "$PGS_HOST" -p "$PORT" -U "$PGS_USER" "$PGS_DB" \
  >"$W/pgbench-i.log" 2>&1 || pgs_fail "pgbench -i after a held cursor: $(tail -3 "$W/pgbench-i.log")"
pgs_psql_direct -q -c 'DROP TABLE IF EXISTS pgbench_accounts, pgbench_branches, pgbench_tellers, pgbench_history'

pgs_log "set_config(..., false) keeps its server with its client; the next client starts clean"
pgs_session_open g "$PORT"
pgs_session_query g "SELECT set_config('pin.x', 'kept', false);" || pgs_fail "set_config"
pgs_session_query g "SELECT current_setting('pin.x');" || pgs_fail "set_config: later query"
pgs_assert_eq "kept" "${PGS_SESSION_OUT[0]}" "the setting in a later transaction"
pgs_assert_eq "set_config " "$(pinned_clients)" "pinned by set_config"
pgs_session_close g
out=$(pgs_psql -c "SELECT coalesce(current_setting('pin.x', true), 'none')" 2>&1)
[[ $out != kept ]] || pgs_fail "the next client of the server sees the last client's set_config"

pgs_log "LISTEN: notifications sent between the listener's transactions reach it"
pgs_session_open l "$PORT"
pgs_session_query l "LISTEN pin_ch;" || pgs_fail "listen"
pgs_psql_direct -c "NOTIFY pin_ch, 'one'"
sleep 0.2
pgs_session_query l "SELECT 1;" || pgs_fail "listen: later query"
printf '%s\n' "${PGS_SESSION_OUT[@]}" | grep -q 'notification "pin_ch" with payload "one"' ||
  pgs_fail "the listener did not get the notification: ${PGS_SESSION_OUT[*]}"
pgs_session_query l "UNLISTEN *;" || pgs_fail "unlisten"
pgs_assert_eq "" "$(pinned_clients | tr -d ' ')" "UNLISTEN * unpins"
pgs_session_close l
pgs_stop_proxy pin

pgs_log "pin_session_state = off: servers are shared, and cleaned after such state"
pgs_start_proxy nopin workers=1 pool_size=1 query_wait_timeout=3 pin_session_state=off admin_users=app
pgs_session_open n "$PGS_PROXY_PORT"
pgs_session_query n "SELECT pg_advisory_lock(7);" || pgs_fail "nopin: lock"
pgs_assert_eq "t" "$(pgs_psql -c "SELECT pg_try_advisory_lock(7)" -c "SELECT pg_advisory_unlock_all()" | head -n 1)" \
  "off: the next transaction's client got a cleaned server (the lock was released)"
pgs_session_close n
pgs_stop_proxy nopin
pgs_log "with replicas: reads of a pinned client stay on its server (its temp table is there)"
pgs_two_replicas
pgs_start_proxy pinrep workers=1 pool_size=2 admin_users=app lag_poll_ms=50 \
  '[shard.0]' "replicas = $(pgs_replica_list 0)"
pgs_wait_replicas_up 15 "$R1" "$R2"
pgs_session_open r "$PGS_PROXY_PORT"
pgs_session_query r "SELECT inet_server_port();" || pgs_fail "pinrep: first read"
[[ ${PGS_SESSION_OUT[0]} == "$R1" || ${PGS_SESSION_OUT[0]} == "$R2" ]] ||
  pgs_fail "an unpinned autocommit read went to $(pgs_node_name "${PGS_SESSION_OUT[0]}"), not a replica"
pgs_session_query r "CREATE TEMP TABLE tmp_rep (x int); INSERT INTO tmp_rep VALUES (1), (2), (3);" ||
  pgs_fail "pinrep: temp table"
for i in 1 2 3 4; do
  pgs_session_query r "SELECT count(*), inet_server_port() FROM tmp_rep;" || pgs_fail "pinrep: read $i of the temp table"
  pgs_assert_eq "3|$P" "${PGS_SESSION_OUT[0]}" "autocommit read $i of the temp table, on the pinned primary"
  pgs_session_query r "SELECT inet_server_port();" || pgs_fail "pinrep: plain read $i"
  pgs_assert_eq "$P" "${PGS_SESSION_OUT[0]}" "a plain read $i of the pinned client stays on its server"
done
pgs_session_query r "DISCARD TEMP;" || pgs_fail "pinrep: discard"
# Read-your-writes keeps reads on the primary until a replica has replayed the client's
# last write (the CREATE TEMP TABLE's catalog rows): a replica must take one within 5 s.
deadline=$(($(pgs_now_ms) + 5000))
while :; do
  pgs_session_query r "SELECT inet_server_port();" || pgs_fail "pinrep: read after unpinning"
  [[ ${PGS_SESSION_OUT[0]} == "$R1" || ${PGS_SESSION_OUT[0]} == "$R2" ]] && break
  (($(pgs_now_ms) < deadline)) ||
    pgs_fail "5 s after DISCARD TEMP reads still go to $(pgs_node_name "${PGS_SESSION_OUT[0]}"), not a replica"
  sleep 0.1
done
pgs_session_close r
pgs_stop_proxy pinrep
pgs_log "all pinning checks passed"

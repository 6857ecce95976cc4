#!/usr/bin/env bash
# Session pooling: a client keeps one backend for its whole session, so LISTEN/NOTIFY, SET,
# temp tables and prepared statements work across statements and transactions; and when
# the client leaves, the backend is reset before the next client gets it (nothing of
# client A is visible to client B on the same backend), or dropped if A left mid-transaction.
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"

W=$PGS_WORK/t_session
rm -rf "$W"
mkdir -p "$W"

PGOPTIONS='-c client_min_messages=warning' pgs_psql_direct -q \
  -c 'DROP TABLE IF EXISTS t_session_rows' -c 'CREATE TABLE t_session_rows (id int PRIMARY KEY, who text)'
pgs_on_exit "pgs_psql_direct -q -c 'DROP TABLE IF EXISTS t_session_rows' >/dev/null 2>&1"

pgs_start_proxy session pool_mode=session workers=2 pool_size=4

# --- 1. LISTEN/NOTIFY through the proxy. The listener sleeps inside a query while two
# notifications are sent (one through the proxy, one straight to the primary); psql prints
# them after the query.
pgs_log "LISTEN/NOTIFY"
pgs_psql >"$W/listen.out" 2>"$W/listen.err" <<'EOF' &
LISTEN pgs_ch;
SELECT 'listening', pg_backend_pid();
SELECT pg_sleep(3);
SELECT 'done';
EOF
listener=$!
# Wait until the listener's backend is in pg_sleep, so its LISTEN is committed.
for ((i = 0; i < 100; i++)); do
  n=$(pgs_psql_direct -c "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(3);' AND state = 'active'")
  [[ $n == 1 ]] && break
  sleep 0.05
done
pgs_assert_eq 1 "$n" "the listener is sleeping in its query"
pgs_assert_eq 1 "$(pgs_psql_direct -c "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(3);' AND state = 'active'")" \
  "exactly one listener backend"
notifier_pid=$(pgs_psql -c 'SELECT pg_backend_pid()' -c "NOTIFY pgs_ch, 'hello'")
notifier_pid=${notifier_pid%%$'\n'*}
[[ $notifier_pid =~ ^[0-9]+$ ]] || pgs_fail "notifier gave no backend pid: '$notifier_pid'"
direct_pid=$(pgs_psql_direct -c 'SELECT pg_backend_pid()' -c "SELECT pg_notify('pgs_ch', 'from the primary')")
direct_pid=${direct_pid%%$'\n'*}
wait "$listener" || pgs_fail "the listener failed: $(cat "$W/listen.err")"
listen_pid=$(sed -n 's/^listening|//p' "$W/listen.out")
grep -qx 'done' "$W/listen.out" || pgs_fail "the listener did not finish: $(cat "$W/listen.out")"
grep -qxF "Asynchronous notification \"pgs_ch\" with payload \"hello\" received from server process with PID $notifier_pid." \
  "$W/listen.out" || pgs_fail "the NOTIFY sent through the proxy did not reach the listener: $(cat "$W/listen.out")"
grep -qxF "Asynchronous notification \"pgs_ch\" with payload \"from the primary\" received from server process with PID $direct_pid." \
  "$W/listen.out" || pgs_fail "the NOTIFY sent on the primary did not reach the listener: $(cat "$W/listen.out")"
pgs_assert_eq 2 "$(grep -c '^Asynchronous notification' "$W/listen.out")" "the listener got exactly two notifications"
[[ $listen_pid != "$notifier_pid" ]] || pgs_fail "listener and notifier shared backend $listen_pid"

# --- 2. Session state persists across statements and transactions.
pgs_log "session state"
out=$(pgs_psql -q <<'EOF'
SELECT pg_backend_pid() AS pid \gset s_
SET statement_timeout = '1234ms';
SET application_name = 'pgs_session_test';
SET pgs.marker = 'kept';
CREATE TEMP TABLE tmp_session (v int);
INSERT INTO tmp_session VALUES (1), (2);
PREPARE pgs_plan (int) AS SELECT $1 * 10;
BEGIN;
INSERT INTO tmp_session VALUES (3);
COMMIT;
SELECT 'timeout', current_setting('statement_timeout');
SELECT 'appname', current_setting('application_name');
SELECT 'marker', current_setting('pgs.marker');
SELECT 'temp', sum(v) FROM tmp_session;
EXECUTE pgs_plan(7);
SELECT 'same_backend', pg_backend_pid() = :s_pid;
SELECT 'activity', application_name FROM pg_stat_activity WHERE pid = pg_backend_pid();
EOF
)
pgs_assert_eq $'timeout|1234ms\nappname|pgs_session_test\nmarker|kept\ntemp|6\n70\nsame_backend|t\nactivity|pgs_session_test' \
  "$out" "SET, temp table and PREPARE persist in one session, on one backend"

# Each psql -c is a separate query message: still one backend and the same settings.
out=$(pgs_psql -q -c 'SET work_mem = 7777' -c 'SELECT pg_backend_pid()' -c 'SHOW work_mem' -c 'SELECT pg_backend_pid()')
mapfile -t lines <<<"$out"
pgs_assert_eq "7777kB" "${lines[1]}" "SET persists to the next query"
pgs_assert_eq "${lines[0]}" "${lines[2]}" "consecutive queries of a session run on one backend"
pgs_stop_proxy session

# --- 3. One server, two clients in turn: client B gets A's backend, reset.
pgs_log "reset between sessions"
pgs_start_proxy session1 pool_mode=session workers=1 pool_size=1 query_wait_timeout=20

a_pid=$(pgs_psql -q <<'EOF'
SET statement_timeout = '4321ms';
SET pgs.marker = 'from A';
SET search_path = pg_catalog, public;
CREATE TEMP TABLE tmp_from_a (v int);
PREPARE plan_from_a AS SELECT 1;
LISTEN chan_from_a;
SELECT pg_advisory_lock(4242);
SELECT pg_backend_pid();
EOF
)
a_pid=$(tail -n1 <<<"$a_pid")
[[ $a_pid =~ ^[0-9]+$ ]] || pgs_fail "client A gave no backend pid: '$a_pid'"

out=$(pgs_psql <<'EOF'
SELECT 'pid', pg_backend_pid();
SELECT 'timeout', current_setting('statement_timeout');
SELECT 'marker', coalesce(current_setting('pgs.marker', true), '');
SELECT 'search_path', current_setting('search_path');
SELECT 'temp', to_regclass('pg_temp.tmp_from_a') IS NULL;
SELECT 'prepared', count(*) FROM pg_prepared_statements;
SELECT 'listening', count(*) FROM pg_listening_channels();
SELECT 'locks', count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid();
EOF
)
pgs_assert_eq "pid|$a_pid" "$(grep '^pid|' <<<"$out")" "client B got client A's backend (pool_size 1)"
pgs_assert_eq $'timeout|0\nmarker|\nsearch_path|"$user", public\ntemp|t\nprepared|0\nlistening|0\nlocks|0' \
  "$(grep -v '^pid|' <<<"$out")" "nothing of client A's session is left for client B"

# The server is really exclusive while a session lasts: B waits until A leaves.
pgs_psql -c 'SELECT pg_sleep(0.1)' -c "\\! sleep 2" -c 'SELECT 1' >/dev/null &
holder=$!
for ((i = 0; i < 200; i++)); do
  [[ $(pgs_psql_direct -c "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(0.1)' AND state = 'idle'") == 1 ]] && break
  sleep 0.05
done
t0=$(date +%s%N)
pgs_assert_eq 1 "$(pgs_psql -c 'SELECT 1')" "second client is served"
ms=$((($(date +%s%N) - t0) / 1000000))
wait "$holder" || pgs_fail "the session holding the server failed"
((ms >= 1000)) || pgs_fail "the second client got a server after ${ms} ms while the only one belonged to a session"
pgs_log "second client waited ${ms} ms for the session to end"

# A session that ends inside a transaction is rolled back; the next client finds a backend
# that is not in a transaction.
printf "BEGIN;\nINSERT INTO t_session_rows VALUES (1, 'uncommitted');\nSELECT 'in tx';\n" |
  pgs_psql -q >/dev/null
out=$(pgs_psql -c "SELECT 'rows', count(*) FROM t_session_rows" -c "SELECT 'xact', now() = statement_timestamp()")
pgs_assert_eq $'rows|0\nxact|t' "$out" "a session left in a transaction was rolled back"
pgs_assert_eq 0 "$(pgs_psql_direct -c 'SELECT count(*) FROM t_session_rows')" "nothing committed on the primary"
for ((i = 0; i < 40; i++)); do
  n=$(pgs_psql_direct -c "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app' AND state LIKE 'idle in transaction%'")
  [[ $n == 0 ]] && break
  sleep 0.05
done
pgs_assert_eq 0 "$n" "no backend is left idle in transaction"

pgs_stop_proxy session1
pgs_log "all session checks passed"

#!/usr/bin/env bash
# The admin console (database "pgshard" for admin_users) and the Prometheus endpoint:
# SHOW commands answer with tables whose numbers follow real traffic, a user outside
# admin_users is refused with 28000, unknown commands get 42601, PAUSE waits for running
# transactions and holds new ones until RESUME, /metrics and /healthz answer, and SHUTDOWN
# stops the proxy cleanly.
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"

MPORT=$(pgs_free_port)
pgs_start_proxy admin workers=2 pool_size=3 admin_users=app "metrics_port=$MPORT"
admin() { PGPASSWORD=${ADMIN_PW:-$PGS_PASSWORD} "$PGS_PGBIN/psql" -h "$PGS_HOST" -p "$PGS_PROXY_PORT" -U "$1" -d pgshard -X -At -F '|' "${@:2}"; }

pgs_log "traffic, then SHOW STATS counts it"
pgs_pgbench_ok traffic proxy -n -c 4 -j 2 -t 200 -f <(echo "SELECT 1;")
stats=$(admin app -c "SHOW STATS")
xacts=$(echo "$stats" | awk -F'|' '$1=="app" && $2=="app" {print $3}')
[[ ${xacts:-0} -ge 800 ]] || pgs_fail "SHOW STATS counts $xacts transactions for 800 sent: $stats"

pgs_log "SHOW POOLS while a client holds a server in a transaction"
PGPASSWORD=$PGS_PASSWORD "$PGS_PGBIN/psql" -h "$PGS_HOST" -p "$PGS_PROXY_PORT" -U app app -X -q \
  -c "BEGIN" -c "SELECT pg_sleep(2)" -c "COMMIT" &
holder=$!
sleep 0.7
pools=$(admin app -c "SHOW POOLS")
line=$(echo "$pools" | awk -F'|' '$1=="app" && $2=="app"')
[[ -n $line ]] || pgs_fail "no app/app row in SHOW POOLS: $pools"
IFS='|' read -r _ _ cl_active _ _ sv_active sv_idle _ _ pool_size _ <<<"$line"
pgs_assert_eq 1 "$cl_active" "cl_active"
pgs_assert_eq 1 "$sv_active" "sv_active"
pgs_assert_eq 6 "$pool_size" "pool_size (3 per worker, 2 workers)"
servers=$(admin app -c "SHOW SERVERS" | awk -F'|' '$4=="active"' | wc -l)
pgs_assert_eq 1 "$servers" "SHOW SERVERS lists one active server"
clients=$(admin app -c "SHOW CLIENTS" | awk -F'|' '$3=="app" && $4=="active"' | wc -l)
pgs_assert_eq 1 "$clients" "SHOW CLIENTS lists one active client"
wait "$holder"

pgs_log "SHOW CONFIG and SHOW VERSION"
grep -qx "pool_size|3" <<<"$(admin app -c "SHOW CONFIG")" || pgs_fail "SHOW CONFIG lacks pool_size|3"
grep -q "^pgshard " <<<"$(admin app -c "show   version;")" || pgs_fail "SHOW VERSION"

pgs_log "errors"
if ADMIN_PW=md5pw admin md5user -c "SHOW POOLS" >/dev/null 2>"$PGS_WORK/admin.err"; then
  pgs_fail "a user outside admin_users got in"
fi
grep -q "may not use the admin console" "$PGS_WORK/admin.err" || pgs_fail "$(cat "$PGS_WORK/admin.err")"
out=$(admin app -v VERBOSITY=verbose -c "SHOW NONSENSE" 2>&1 || true)
echo "$out" | grep -q "42601" || pgs_fail "unknown command did not give 42601: $out"
pgs_assert_eq 1 "$(admin app -c "SHOW VERSION" | wc -l)" "the console works after an error"

pgs_log "a wrong password and an unknown user are refused and logged"
if PGPASSWORD=wrong "$PGS_PGBIN/psql" -h "$PGS_HOST" -p "$PGS_PROXY_PORT" -U app app -X -c "SELECT 1" >/dev/null 2>"$PGS_WORK/wrongpw.err"; then
  pgs_fail "a wrong password was accepted"
fi
grep -q 'password authentication failed for user "app"' "$PGS_WORK/wrongpw.err" || pgs_fail "$(cat "$PGS_WORK/wrongpw.err")"
if PGPASSWORD=x "$PGS_PGBIN/psql" -h "$PGS_HOST" -p "$PGS_PROXY_PORT" -U nobody_here app -X -c "SELECT 1" >/dev/null 2>"$PGS_WORK/nouser.err"; then
  pgs_fail "an unknown user was accepted"
fi
grep -q 'no such user "nobody_here"' "$PGS_WORK/nouser.err" || pgs_fail "$(cat "$PGS_WORK/nouser.err")"
grep -q 'auth_failed.*password authentication failed for user "app"' "$PGS_WORK/admin/pgshard.log" || pgs_fail "wrong password not logged"
grep -q 'auth_failed.*no such user "nobody_here"' "$PGS_WORK/admin/pgshard.log" || pgs_fail "unknown user not logged"

pgs_log "/metrics and /healthz"
# grep reads a here-string, not a pipe: grep -q stops at its match, and under pipefail a
# writer of a page larger than the pipe then fails with SIGPIPE.
metrics=$(curl -sf "http://127.0.0.1:$MPORT/metrics") || pgs_fail "/metrics did not answer"
grep -q '^pgshard_up 1$' <<<"$metrics" || pgs_fail "pgshard_up missing"
n=$(echo "$metrics" | sed -n 's/^pgshard_transactions_total{user="app",database="app",shard="0"} \([0-9]*\)$/\1/p')
[[ ${n:-0} -ge 800 ]] || pgs_fail "pgshard_transactions_total is '$n'"
grep -q '^pgshard_wait_seconds_bucket{user="app",database="app",shard="0",le="+Inf"}' <<<"$metrics" ||
  pgs_fail "wait histogram missing"
grep -q '^pgshard_client_connections_total [1-9]' <<<"$metrics" || pgs_fail "connections not counted"
grep -q '^pgshard_auth_failures_total [2-9]' <<<"$metrics" || pgs_fail "auth failures not counted: $(grep auth_failures <<<"$metrics")"
pgs_assert_eq ok "$(curl -sf "http://127.0.0.1:$MPORT/healthz")" "/healthz"
code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$MPORT/nope")
pgs_assert_eq 404 "$code" "unknown path"

pgs_log "PAUSE waits for running transactions; clients wait until RESUME"
PGPASSWORD=$PGS_PASSWORD "$PGS_PGBIN/psql" -h "$PGS_HOST" -p "$PGS_PROXY_PORT" -U app app -X -q \
  -c "BEGIN" -c "SELECT pg_sleep(1.5)" -c "COMMIT" &
holder=$!
sleep 0.3
t0=$(date +%s%3N)
admin app -c "PAUSE" >/dev/null || pgs_fail "PAUSE failed"
waited=$(($(date +%s%3N) - t0))
((waited >= 900)) || pgs_fail "PAUSE answered after $waited ms, before the running transaction ended"
wait "$holder" || pgs_fail "the transaction running at PAUSE failed"
pgs_psql -c "SELECT 'after resume'" >"$PGS_WORK/paused.out" 2>&1 &
paused_client=$!
sleep 1
kill -0 "$paused_client" 2>/dev/null || pgs_fail "a query ran while paused: $(cat "$PGS_WORK/paused.out")"
admin app -c "SHOW POOLS" | awk -F'|' '$1=="app" && $2=="app" {print $4}' | grep -qx 1 || pgs_fail "the paused client is not counted as waiting"
admin app -c "RESUME" >/dev/null || pgs_fail "RESUME failed"
wait "$paused_client" || pgs_fail "the waiting client failed after RESUME: $(cat "$PGS_WORK/paused.out")"
pgs_assert_eq "after resume" "$(cat "$PGS_WORK/paused.out")" "the waiting client ran after RESUME"

pgs_log "SHUTDOWN"
admin app -c "SHUTDOWN" >/dev/null 2>&1 || true
for _ in $(seq 100); do kill -0 "$PGS_PROXY_PID" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$PGS_PROXY_PID" 2>/dev/null; then pgs_fail "SHUTDOWN did not stop the proxy"; fi
pgs_stop_proxy admin
pgs_log "all admin checks passed"

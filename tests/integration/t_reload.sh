#!/usr/bin/env bash
# Reload: SIGHUP and the admin RELOAD apply a changed config (a new user, a new pool_size)
# without dropping a client: pgbench runs through every reload with zero failed
# transactions. A broken file is refused with its reason in the log and the running config
# stays. Keys that need a restart (two_phase_commit) keep their running value, with a warning.
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"

pgs_start_proxy reload workers=2 pool_size=3 admin_users=app
INI=$PGS_WORK/reload/pgshard.ini
LOG=$PGS_WORK/reload/pgshard.log
admin() { PGPASSWORD=$PGS_PASSWORD "$PGS_PGBIN/psql" -h "$PGS_HOST" -p "$PGS_PROXY_PORT" -U app -d pgshard -X -At -F '|' "$@"; }
cfgval() { admin -c "SHOW CONFIG" | awk -F'|' -v k="$1" '$1==k {print $2}'; }

pgs_cluster psql 0 primary -- -q -c "DROP ROLE IF EXISTS t_reload_user" -c "CREATE ROLE t_reload_user LOGIN PASSWORD 'rl'"
pgs_on_exit "$PGS_CLUSTER_SH psql $PGS_CLUSTER_DIR 0 primary -- -q -c 'DROP ROLE IF EXISTS t_reload_user' >/dev/null 2>&1"

pgs_log "pgbench through five reloads"
PGPASSWORD=$PGS_PASSWORD "$PGS_PGBIN/pgbench" -n -c 8 -j 2 -T 6 -f <(echo "SELECT 1;") \
  -h "$PGS_HOST" -p "$PGS_PROXY_PORT" -U app "$PGS_DB" >"$PGS_WORK/reload.pgbench" 2>&1 &
bench=$!
sleep 1
sed -i 's/^pool_size = .*/pool_size = 5/' "$INI"
printf '\n[user.t_reload_user]\npassword = rl\n' >>"$INI"
for i in 1 2 3 4; do kill -HUP "$PGS_PROXY_PID"; sleep 0.5; done
admin -c "RELOAD" >/dev/null
wait "$bench" || pgs_fail "pgbench failed: $(cat "$PGS_WORK/reload.pgbench")"
grep -q "number of failed transactions: 0 " "$PGS_WORK/reload.pgbench" || pgs_fail "failures: $(cat "$PGS_WORK/reload.pgbench")"
n=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$PGS_WORK/reload.pgbench")
[[ ${n:-0} -gt 100 ]] || pgs_fail "too few transactions: $n"
[[ $(grep -c '"reload"\| reload: ' "$LOG") -ge 5 ]] || pgs_fail "not every reload was logged"

pgs_log "the new settings are in force"
pgs_assert_eq 5 "$(cfgval pool_size)" "pool_size after reload"
out=$(PGPASSWORD=rl "$PGS_PGBIN/psql" -h "$PGS_HOST" -p "$PGS_PROXY_PORT" -U t_reload_user "$PGS_DB" -X -At -c "SELECT current_user")
pgs_assert_eq t_reload_user "$out" "a user added by the reload logs in"

pgs_log "a broken file is refused and the running config stays"
cp "$INI" "$PGS_WORK/reload/good.ini"
printf 'bogus_key = 1\n' >>"$INI"
kill -HUP "$PGS_PROXY_PID"
for _ in $(seq 50); do grep -q reload_failed "$LOG" && break; sleep 0.1; done
grep -q "reload_failed.*bogus_key" "$LOG" || pgs_fail "the refused reload does not name the bad key: $(grep reload "$LOG" | tail -3)"
pgs_assert_eq 5 "$(cfgval pool_size)" "pool_size stays after a refused reload"
pgs_assert_eq 1 "$(pgs_psql -c "SELECT 1")" "clients still served"
cp "$PGS_WORK/reload/good.ini" "$INI"

pgs_log "allow_cross_shard_writes changes on reload, two_phase_commit only at restart"
sed -i 's/^\[pgshard\]$/[pgshard]\ntwo_phase_commit = on\nallow_cross_shard_writes = on/' "$INI"
kill -HUP "$PGS_PROXY_PID"
for _ in $(seq 50); do grep -q "reload_restart_needed.*two_phase_commit" "$LOG" && break; sleep 0.1; done
grep -q "reload_restart_needed.*two_phase_commit" "$LOG" || pgs_fail "no warning that two_phase_commit needs a restart"
# The warning comes from the load; the workers take the new config from their mailboxes a
# moment later, and SHOW CONFIG answers from one of them.
for _ in $(seq 50); do [[ $(cfgval allow_cross_shard_writes) == on ]] && break; sleep 0.1; done
pgs_assert_eq on "$(cfgval allow_cross_shard_writes)" "allow_cross_shard_writes after reload"
pgs_assert_eq off "$(cfgval two_phase_commit)" "two_phase_commit keeps its running value"
cp "$PGS_WORK/reload/good.ini" "$INI"

pgs_stop_proxy reload
pgs_log "all reload checks passed"

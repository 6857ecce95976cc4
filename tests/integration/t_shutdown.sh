#!/usr/bin/env bash
# SIGTERM drains: new clients are refused at once, idle clients are closed, a running
# transaction finishes and commits, then pgshard exits 0. With a transaction longer than
# shutdown_timeout, pgshard closes it at the timeout (PostgreSQL rolls it back). SIGINT
# stops at once.
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"

W=$PGS_WORK/t_shutdown
mkdir -p "$W"
pgs_psql_direct -q -c "DROP TABLE IF EXISTS t_shutdown" -c "CREATE TABLE t_shutdown (id int)"
pgs_on_exit "pgs_psql_direct -q -c 'DROP TABLE IF EXISTS t_shutdown' >/dev/null 2>&1"
now_ms() { date +%s%3N; }

pgs_log "SIGTERM with a transaction running"
pgs_start_proxy drain workers=2 shutdown_timeout=10
pgs_psql -c "SELECT 1" >/dev/null
pgs_psql -q -c "BEGIN" -c "SELECT pg_sleep(2)" -c "INSERT INTO t_shutdown VALUES (1)" -c "COMMIT" >"$W/tx.out" 2>&1 &
tx=$!
pgs_psql -c "SELECT pg_sleep(30)" >/dev/null 2>&1 &   # longer than shutdown_timeout
long=$!
sleep 0.5
PGPASSWORD=$PGS_PASSWORD "$PGS_PGBIN/psql" -h "$PGS_HOST" -p "$PGS_PROXY_PORT" -U app app -X -q -c "SELECT 1" &
sleep 0.3
t0=$(now_ms)
kill -TERM "$PGS_PROXY_PID"
sleep 0.3
if PGPASSWORD=$PGS_PASSWORD "$PGS_PGBIN/psql" -h "$PGS_HOST" -p "$PGS_PROXY_PORT" -U app app -X -qAt -c "SELECT 1" >/dev/null 2>&1; then
  pgs_fail "a new client was accepted after SIGTERM"
fi
wait "$tx" || pgs_fail "the running transaction failed: $(cat "$W/tx.out")"
pgs_assert_eq 1 "$(pgs_psql_direct -c "SELECT count(*) FROM t_shutdown")" "the transaction committed"
# The 30 s query is longer than shutdown_timeout (10 s): pgshard exits at the timeout.
for _ in $(seq 150); do kill -0 "$PGS_PROXY_PID" 2>/dev/null || break; sleep 0.1; done
kill -0 "$PGS_PROXY_PID" 2>/dev/null && pgs_fail "pgshard still running 15 s after SIGTERM"
elapsed=$(($(now_ms) - t0))
((elapsed >= 9000)) || pgs_fail "pgshard left after $elapsed ms, before shutdown_timeout with a query running"
wait "$long" 2>/dev/null || true
pgs_stop_proxy drain

pgs_log "SIGINT stops at once"
pgs_start_proxy quick workers=2 shutdown_timeout=30
pgs_psql -c "SELECT pg_sleep(20)" >/dev/null 2>&1 &
sleep 0.5
t0=$(now_ms)
kill -INT "$PGS_PROXY_PID"
for _ in $(seq 50); do kill -0 "$PGS_PROXY_PID" 2>/dev/null || break; sleep 0.1; done
kill -0 "$PGS_PROXY_PID" 2>/dev/null && pgs_fail "pgshard still running 5 s after SIGINT"
pgs_stop_proxy quick
wait
pgs_log "all shutdown checks passed"

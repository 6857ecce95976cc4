#!/usr/bin/env bash
# pgbench through pgshard: the TPC-B-like script in simple and extended protocol
# (transaction pooling) and prepared (session pooling) with no failed transaction and with
# the bank's books balancing on the primary; 200 clients over pool_size 10 x 2 workers never
# use more than 20 backends; and 50 clients over one worker with pool_size 2 share two
# backends.
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"

W=$PGS_WORK/t_pgbench
rm -rf "$W"
mkdir -p "$W"

# Straight on the primary, as app: the proxy is not under test here.
if ! pgs_pgbench_direct -i -s 2 -q >"$W/init.out" 2>&1; then
  cat "$W/init.out" >&2
  pgs_fail "pgbench -i on the primary failed"
fi
pgs_assert_eq 200000 "$(pgs_psql_direct -c 'SELECT count(*) FROM pgbench_accounts')" "pgbench -i -s 2 loaded 200000 accounts"
pgs_on_exit "pgs_psql_direct -q -c 'DROP TABLE IF EXISTS t_pgbench_pids' >/dev/null 2>&1"

# App backends on the primary other than the one asking.
app_backends() {
  pgs_psql_direct -c "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app'
                        AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
}

# Waits until no app backend is left (those of a stopped proxy exit asynchronously).
wait_no_backends() {
  local i n
  for ((i = 0; i < 100; i++)); do
    n=$(app_backends)
    [[ $n == 0 ]] && return 0
    sleep 0.1
  done
  pgs_fail "$n app backend(s) still on the primary"
}

# Samples app_backends into FILE every 0.25 s until killed.
sample_backends() {
  while :; do
    app_backends >>"$1" 2>/dev/null || true
    sleep 0.25
  done
}

# The TPC-B-like invariants: every committed transaction adds the same delta to one
# account, teller and branch and writes one history row.
check_books() { # EXPECTED_HISTORY_ROWS
  local out
  out=$(pgs_psql_direct -c "SELECT (SELECT count(*) FROM pgbench_history),
      (SELECT sum(abalance) FROM pgbench_accounts) = (SELECT coalesce(sum(delta), 0) FROM pgbench_history),
      (SELECT sum(tbalance) FROM pgbench_tellers) = (SELECT coalesce(sum(delta), 0) FROM pgbench_history),
      (SELECT sum(bbalance) FROM pgbench_branches) = (SELECT coalesce(sum(delta), 0) FROM pgbench_history)")
  pgs_assert_eq "$1|t|t|t" "$out" "history has one row per committed transaction and the balances add up"
}

total=0

# --- 1. Transaction pooling, simple and extended protocol.
pgs_start_proxy tx pool_mode=transaction workers=2 pool_size=10
pgs_pgbench_ok simple proxy -n -M simple -c 8 -j 2 -T 5
total=$((total + PGS_PGBENCH_TX))
check_books "$total"
pgs_pgbench_ok extended proxy -n -M extended -c 8 -j 2 -T 5
total=$((total + PGS_PGBENCH_TX))
check_books "$total"
# Named prepared statements in transaction pooling: each statement is prepared on whichever
# server runs it. (pgbench prepares synchronously, so its clients need as many servers as
# a thread has clients; 16 clients fit in 2 x 10.)
pgs_pgbench_ok prepared_tx proxy -n -M prepared -c 16 -j 4 -T 5
total=$((total + PGS_PGBENCH_TX))
check_books "$total"
pgs_stop_proxy tx

# --- 2. Session pooling, prepared statements (named statements live on one backend).
pgs_start_proxy session pool_mode=session workers=2 pool_size=10
pgs_pgbench_ok prepared proxy -n -M prepared -c 8 -j 2 -T 4
total=$((total + PGS_PGBENCH_TX))
check_books "$total"
pgs_stop_proxy session

# --- 3. 200 clients over pool_size 10 on each of 2 workers: at most 20 backends.
wait_no_backends
pgs_start_proxy many pool_mode=transaction workers=2 pool_size=10
sample_backends "$W/many.samples" &
sampler=$!
pgs_pgbench_ok many proxy -n -S -c 200 -j 2 -T 8
kill "$sampler" 2>/dev/null || true
wait "$sampler" 2>/dev/null || true
max=$(sort -n "$W/many.samples" | tail -n1)
pgs_log "app backends during the 200-client run: $(tr '\n' ' ' <"$W/many.samples")"
(($(wc -l <"$W/many.samples") >= 5)) || pgs_fail "too few samples of pg_stat_activity"
((max > 0)) || pgs_fail "no app backend seen during the run"
((max <= 20)) || pgs_fail "$max app backends on the primary, more than 2 workers x pool_size 10"
pgs_log "at most $max backends for 200 clients"
pgs_stop_proxy many

# --- 4. 50 clients, one worker, pool_size 2: every query runs on one of two backends.
wait_no_backends
PGOPTIONS='-c client_min_messages=warning' pgs_psql_direct -q -c 'DROP TABLE IF EXISTS t_pgbench_pids' \
  -c 'CREATE TABLE t_pgbench_pids (pid int NOT NULL, client int NOT NULL)'
pgs_start_proxy reuse pool_mode=transaction workers=1 pool_size=2
echo 'INSERT INTO t_pgbench_pids VALUES (pg_backend_pid(), :client_id);' >"$W/pids.sql"
pgs_pgbench_ok reuse_pids proxy -n -c 50 -j 2 -t 20 -f "$W/pids.sql"
pgs_assert_eq 1000 "$PGS_PGBENCH_TX" "50 clients x 20 transactions"
out=$(pgs_psql_direct -c 'SELECT count(*), count(DISTINCT client), count(DISTINCT pid) FROM t_pgbench_pids')
IFS='|' read -r rows clients pids <<<"$out"
pgs_assert_eq "1000|50" "$rows|$clients" "every client's transactions were recorded"
((pids >= 1 && pids <= 2)) || pgs_fail "50 clients ran on $pids distinct backends with pool_size 2"
pgs_log "50 clients x 20 transactions ran on $pids backend(s)"

sample_backends "$W/reuse.samples" &
sampler=$!
pgs_pgbench_ok reuse_select proxy -n -S -c 50 -j 2 -T 3
kill "$sampler" 2>/dev/null || true
wait "$sampler" 2>/dev/null || true
max=$(sort -n "$W/reuse.samples" | tail -n1)
pgs_log "app backends during the 50-client run: $(tr '\n' ' ' <"$W/reuse.samples")"
((max >= 1 && max <= 2)) || pgs_fail "$max app backends for pool_size 2 on one worker"
pgs_stop_proxy reuse

pgs_log "all pgbench checks passed"

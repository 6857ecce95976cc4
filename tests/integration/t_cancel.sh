#!/usr/bin/env bash
# Query cancellation through pgshard: a backend cancelled on the primary with
# pg_cancel_backend reports 57014 to the proxied client, whose session goes on; psql's own
# cancel (SIGINT -> CancelRequest to the proxy, which forwards it to the right backend)
# stops the query within seconds, also with 4 workers where the CancelRequest may reach a
# worker other than the client's; and forged cancel keys cancel nothing.
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"

W=$PGS_WORK/t_cancel
rm -rf "$W"
mkdir -p "$W"

now_ms() { echo $(($(date +%s%N) / 1000000)); }

# Active backends of app running exactly query $1.
running() {
  pgs_psql_direct -c "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app' AND state = 'active' AND query = '$1'"
}

wait_running() { # QUERY COUNT: waits up to 10 s until COUNT backends run QUERY
  local i n
  for ((i = 0; i < 200; i++)); do
    n=$(running "$1")
    [[ $n == "$2" ]] && return 0
    sleep 0.05
  done
  pgs_fail "expected $2 backend(s) running '$1', found $n"
}

pgs_start_proxy cancel workers=2 pool_size=4

# --- 1. pg_cancel_backend on the primary; the proxied session gets 57014 and goes on.
pgs_log "pg_cancel_backend"
pgs_psql -q -v ON_ERROR_STOP=0 >"$W/backend.out" 2>"$W/backend.err" <<'EOF' &
SELECT 'before', 1;
SELECT pg_sleep(30);
\echo state :SQLSTATE
SELECT 'after', 40 + 2;
EOF
client=$!
wait_running 'SELECT pg_sleep(30);' 1
pid=$(pgs_psql_direct -c "SELECT pid FROM pg_stat_activity WHERE usename = 'app' AND query = 'SELECT pg_sleep(30);' AND state = 'active'")
t0=$(now_ms)
pgs_assert_eq t "$(pgs_psql_direct -c "SELECT pg_cancel_backend($pid)")" "pg_cancel_backend($pid) on the primary"
wait "$client" || pgs_fail "the cancelled client's psql failed: $(cat "$W/backend.err")"
ms=$(($(now_ms) - t0))
pgs_assert_eq $'before|1\nstate 57014\nafter|42' "$(cat "$W/backend.out")" \
  "the client saw 57014 and its next query worked"
grep -q 'ERROR:  canceling statement due to user request' "$W/backend.err" ||
  pgs_fail "no cancel error reached the client: $(cat "$W/backend.err")"
((ms < 5000)) || pgs_fail "the cancelled client took ${ms} ms to finish"
pgs_log "client finished ${ms} ms after pg_cancel_backend"

# --- 2. psql's own cancel: SIGINT makes psql send a CancelRequest to the proxy.
# psql_cancel NAME: runs `SELECT pg_sleep(30)` through the proxy, interrupted after 2 s, and
# fails unless it ends within 10 s with the cancel error from the server.
psql_cancel() {
  local name=$1 t0 ms rc=0
  t0=$(now_ms)
  timeout -k 15 -s INT 2 env PGPASSWORD="$PGS_PASSWORD" "$PGS_PGBIN/psql" -X -At -h "$PGS_HOST" \
    -p "$PGS_PROXY_PORT" -U "$PGS_USER" -d "$PGS_DB" -c 'SELECT pg_sleep(30)' \
    >"$W/$name.out" 2>"$W/$name.err" || rc=$?
  ms=$(($(now_ms) - t0))
  grep -q 'canceling statement due to user request' "$W/$name.err" ||
    pgs_fail "$name: psql was not cancelled (exit $rc after ${ms} ms): $(cat "$W/$name.err")"
  ((ms < 10000)) || pgs_fail "$name: the cancel took ${ms} ms"
  echo "$ms" >"$W/$name.ms"
}

pgs_log "psql cancel (SIGINT), 2 workers"
psql_cancel sigint
pgs_log "cancelled in $(cat "$W/sigint.ms") ms"
wait_running 'SELECT pg_sleep(30)' 0
pgs_assert_eq 7 "$(pgs_psql -c 'SELECT 3 + 4')" "the proxy serves queries after the cancel"
pgs_stop_proxy cancel

# --- 3. Four workers: the CancelRequest is a new TCP connection that the kernel may hand
# to any worker; it must still reach the client's worker and backend. Eight times in a row,
# then eight at once next to two clients that must not be cancelled.
pgs_start_proxy cancel4 workers=4 pool_size=8
pgs_log "psql cancel (SIGINT), 4 workers, 8 times in a row"
for ((i = 1; i <= 8; i++)); do
  psql_cancel "seq$i"
done
pgs_log "cancel times (ms): $(cat "$W"/seq?.ms | tr '\n' ' ')"
wait_running 'SELECT pg_sleep(30)' 0

pgs_log "psql cancel (SIGINT), 4 workers, 8 at once next to 2 bystanders"
for ((i = 1; i <= 2; i++)); do
  pgs_psql -c 'SELECT pg_sleep(3.5)' -c "SELECT 'bystander $i done'" >"$W/bystander$i.out" 2>"$W/bystander$i.err" &
  eval "bystander$i=\$!"
done
pids=()
for ((i = 1; i <= 8; i++)); do
  (psql_cancel "par$i") &
  pids+=("$!")
done
for p in "${pids[@]}"; do wait "$p" || pgs_fail "a parallel cancel failed"; done
pgs_log "cancel times (ms): $(cat "$W"/par?.ms | tr '\n' ' ')"
for ((i = 1; i <= 2; i++)); do
  eval "p=\$bystander$i"
  wait "$p" || pgs_fail "bystander $i was hurt by the other clients' cancels: $(cat "$W/bystander$i.err")"
  pgs_assert_eq $'\n'"bystander $i done" "$(cat "$W/bystander$i.out")" "bystander $i was not cancelled"
done
wait_running 'SELECT pg_sleep(30)' 0

# --- 4. A CancelRequest with a wrong key cancels nothing: forge keys for every worker's
# first 50 clients with a random secret while a query runs.
pgs_log "forged cancel keys"
# be32 VAR N: VAR gets N as 4 big-endian bytes in printf escapes (no subshell: 200 of
# these must be quick).
be32() { printf -v "$1" '\\x%02x\\x%02x\\x%02x\\x%02x' $((($2 >> 24) & 255)) $((($2 >> 16) & 255)) $((($2 >> 8) & 255)) $(($2 & 255)); }
pgs_psql -c 'SELECT pg_sleep(3)' -c "SELECT 'victim done'" >"$W/victim.out" 2>"$W/victim.err" &
victim=$!
wait_running 'SELECT pg_sleep(3)' 1
be32 len 16
be32 code 80877102
for ((wk = 1; wk <= 4; wk++)); do
  for ((n = 1; n <= 50; n++)); do
    be32 key $(((wk << 24) | n))
    be32 secret $(((RANDOM << 16) ^ RANDOM))
    exec 5<>"/dev/tcp/$PGS_HOST/$PGS_PROXY_PORT" || pgs_fail "could not connect to send a CancelRequest"
    # shellcheck disable=SC2059
    printf "$len$code$key$secret" >&5
    exec 5>&-
  done
done
pgs_log "200 forged CancelRequests sent"
wait "$victim" || pgs_fail "a forged cancel key cancelled a query: $(cat "$W/victim.err")"
pgs_assert_eq $'\nvictim done' "$(cat "$W/victim.out")" "forged cancel keys cancelled nothing"
pgs_assert_eq 1 "$(pgs_psql -c 'SELECT 1')" "the proxy still answers"

pgs_stop_proxy cancel4
pgs_log "all cancel checks passed"

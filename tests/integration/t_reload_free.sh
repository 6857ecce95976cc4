#!/usr/bin/env bash
# Reload many times: 300 SIGHUPs while pgbench clients and two psql sessions (one from
# before the first reload, one from reload 100 on) stay connected and psql clients log in
# and out. Every query succeeds, the settings of the last reload are in force, and the
# configurations replaced by the reloads are freed: the resident size after 300 reloads is
# within 1 MiB of the size after 50 (each kept config would cost ~10 KB). The ASan build
# checks the rest: a config freed while a worker, client or pool still uses it is a
# use-after-free, one never freed a leak at exit. ASan keeps freed memory in quarantine,
# so the size bound is checked in the plain build only.
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"

NRELOADS=300
pgs_start_proxy reload_free workers=2 pool_size=4 admin_users=app '[shard.0]' "replicas = $(pgs_replica_list 0)"
INI=$PGS_WORK/reload_free/pgshard.ini
LOG=$PGS_WORK/reload_free/pgshard.log
W=$PGS_WORK/reload_free
admin() { PGPASSWORD=$PGS_PASSWORD "$PGS_PGBIN/psql" -h "$PGS_HOST" -p "$PGS_PROXY_PORT" -U app -d pgshard -X -At -F '|' "$@"; }
cfgval() { admin -c "SHOW CONFIG" | awk -F'|' -v k="$1" '$1==k {print $2}'; }
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$PGS_PROXY_PID/status"; }

pgs_cluster psql 0 primary -- -q -c "DROP ROLE IF EXISTS t_reload_free_user" \
  -c "CREATE ROLE t_reload_free_user LOGIN PASSWORD 'rf'"
pgs_on_exit "$PGS_CLUSTER_SH psql $PGS_CLUSTER_DIR 0 primary -- -q -c 'DROP ROLE IF EXISTS t_reload_free_user' >/dev/null 2>&1"

# Clients that stay connected through the reloads (pgbench keeps its connections, and a
# psql session is asked a question every ten reloads), and clients that log in under one
# config and leave under another (a psql per query).
PGPASSWORD=$PGS_PASSWORD "$PGS_PGBIN/pgbench" -n -c 4 -j 2 -T 12 -f <(echo "SELECT 1;") \
  -h "$PGS_HOST" -p "$PGS_PROXY_PORT" -U app "$PGS_DB" >"$W/bench.out" 2>&1 &
bench=$!
pgs_on_exit "kill $bench 2>/dev/null"
pgs_session_open keep "$PGS_PROXY_PORT"
: >"$W/psql.fail"
(
  n=0
  while [[ ! -e $W/stop ]] && kill -0 $$ 2>/dev/null; do # not past the test's end
    n=$((n + 1))
    out=$(PGPASSWORD=$PGS_PASSWORD "$PGS_PGBIN/psql" -h "$PGS_HOST" -p "$PGS_PROXY_PORT" -U app -d "$PGS_DB" \
      -X -At -c "SELECT $n" 2>&1) || true
    [[ $out == "$n" ]] || echo "query $n: $out" >>"$W/psql.fail"
    sleep 0.05
  done
  echo "$n" >"$W/psql.count"
) &
loop=$!
pgs_on_exit "touch $W/stop; kill $loop 2>/dev/null"
sleep 1

# One reload at a time: each is waited for in the log, so no two SIGHUPs merge into one.
# The log is followed through an open descriptor, without a process per look. A line can
# be read in two parts: the kernel makes a write that crosses a page boundary visible one
# page at a time, and read stops at the end of the file with what it got, so a part
# without its newline is kept until the rest comes.
exec {logfd}<"$LOG"
part=
reload_once() {
  local line deadline=$((SECONDS + 10))
  kill -HUP "$PGS_PROXY_PID"
  while :; do
    if IFS= read -r -u "$logfd" line; then
      line=$part$line part=
      [[ $line == *' reload: '* || $line == *'"reload"'* ]] && return 0
    else
      part+=$line
      ((SECONDS < deadline)) || pgs_fail "reload $i was not logged (line part '$part'; the log ends: $(tail -c 600 "$LOG"))"
      sleep 0.002
    fi
  done
}

pgs_log "$NRELOADS reloads, pool_size changing every tenth"
for ((i = 1; i <= NRELOADS; i++)); do
  ((i % 10)) || sed -i "s/^pool_size = .*/pool_size = $((3 + i / 10 % 4))/" "$INI"
  ((i == NRELOADS / 2)) && printf '\n[user.t_reload_free_user]\npassword = rf\n' >>"$INI"
  reload_once
  if ((i == 50)); then rss50=$(rss_kb); fi
  # A session that logs in under reload 100's config, which only it (and its pool) keeps
  # alive from then on.
  ((i == 100)) && pgs_session_open late "$PGS_PROXY_PORT"
  if ((i % 10 == 0)); then
    pgs_session_query keep "SELECT $i;" || pgs_fail "the connected session did not answer after reload $i"
    pgs_assert_eq "$i" "${PGS_SESSION_OUT[*]}" "the session connected since before reload 1 answers after reload $i" >/dev/null
    if ((i >= 100)); then
      pgs_session_query late "SELECT -$i;" || pgs_fail "the session of reload 100 did not answer after reload $i"
      pgs_assert_eq "-$i" "${PGS_SESSION_OUT[*]}" "the session of reload 100 answers after reload $i" >/dev/null
    fi
  fi
done
rss_end=$(rss_kb)
touch "$W/stop"
wait "$loop"
wait "$bench" || pgs_fail "pgbench failed: $(tail -20 "$W/bench.out")"
pgs_session_close keep
pgs_session_close late

pgs_log "VmRSS after 50 reloads: ${rss50} kB, after $NRELOADS: ${rss_end} kB"
[[ ! -s $W/psql.fail ]] || pgs_fail "psql queries failed: $(head -5 "$W/psql.fail")"
pgs_log "psql queries, each on a new connection: $(cat "$W/psql.count"), all answered"
grep -q "number of failed transactions: 0 " "$W/bench.out" || pgs_fail "pgbench failures: $(tail -20 "$W/bench.out")"
n=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$W/bench.out")
[[ ${n:-0} -gt 100 ]] || pgs_fail "too few pgbench transactions: ${n:-none}: $(tail -20 "$W/bench.out")"
pgs_log "pgbench through the reloads: $n transactions, 0 failed"

pgs_log "the last reload's settings are in force"
pgs_assert_eq $((3 + NRELOADS / 10 % 4)) "$(cfgval pool_size)" "pool_size after $NRELOADS reloads"
out=$(PGPASSWORD=rf "$PGS_PGBIN/psql" -h "$PGS_HOST" -p "$PGS_PROXY_PORT" -U t_reload_free_user "$PGS_DB" \
  -X -At -c "SELECT current_user")
pgs_assert_eq t_reload_free_user "$out" "a user added by a reload logs in"

if grep -qa __asan_init "$PGSHARD_BIN"; then
  pgs_log "ASan build: the size bound is not checked (freed memory stays in quarantine)"
else
  growth=$((rss_end - rss50))
  ((growth < 1024)) || pgs_fail "VmRSS grew by $growth kB from reload 50 to reload $NRELOADS"
  printf 'ok: VmRSS grew by %s kB from reload 50 to %s (bound 1024 kB)\n' "$growth" "$NRELOADS"
fi

pgs_stop_proxy reload_free
pgs_log "all reload-free checks passed"

# shellcheck shell=bash
# Sourced by the bash integration tests (tests/integration/t_*.sh). Reads the cluster that
# tests/cluster/cluster.sh started in $PGS_CLUSTER_DIR, starts and stops pgshard against it,
# and offers psql shortcuts and assertions. It does not start or stop PostgreSQL itself.
#
# Environment (set by CTest): PGS_CLUSTER_DIR, PGSHARD_BIN, PGS_WORK, PGS_SRC.
#
#   pgs_start_proxy NAME [ARG...]   ARG is KEY=VALUE (set a key), !KEY (drop a key) or
#                                   [SECTION] (later ARGs go to that section; starts in
#                                   [pgshard]; quote it), e.g.
#                                     pgs_start_proxy p pool_mode=session '[shard.0]' \
#                                       "replicas = $(pgs_replica_list 0)"
#                                   then exports PGS_PROXY_PORT, PGS_PROXY_PID
#   pgs_proxy_port [NAME]           port of a proxy started earlier
#   pgs_stop_proxy [NAME]           fails the test on a non-zero exit or a sanitizer report
#   pgs_psql ARGS / pgs_psql_direct ARGS / pgs_psql_node SHARD ROLE ARGS
#   pgs_pgbench ARGS / pgs_pgbench_direct ARGS
#   pgs_pgbench_ok LABEL proxy|direct ARGS   pgbench that must succeed with 0 failures
#   pgs_cluster ARGS                tests/cluster/cluster.sh with DIR filled in
#   pgs_fail MSG / pgs_assert_eq EXPECTED ACTUAL MSG / pgs_free_port / pgs_replica_list K
#   pgs_on_exit CMD                 run CMD at exit; do not `trap ... EXIT` in a test, the
#                                   trap here stops every proxy and checks how it exited
set -euo pipefail

PGS_LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PGS_SRC=${PGS_SRC:-$(cd "$PGS_LIB_DIR/../.." && pwd)}
PGS_CLUSTER_SH=$PGS_SRC/tests/cluster/cluster.sh
PGS_TEST_NAME=$(basename "$0" .sh)

pgs_fail() {
  printf 'FAIL [%s]: %s\n' "$PGS_TEST_NAME" "$*" >&2
  exit 1
}

pgs_log() { printf '[%s] %s\n' "$PGS_TEST_NAME" "$*"; }

pgs_assert_eq() {
  local expected=$1 actual=$2 msg=${3:-}
  if [[ $expected != "$actual" ]]; then
    pgs_fail "${msg:-values differ}: expected '$expected', got '$actual'"
  fi
  printf 'ok: %s\n' "${msg:-$expected}"
}

: "${PGS_CLUSTER_DIR:?PGS_CLUSTER_DIR must name a directory where cluster.sh started a cluster}"
[[ -f $PGS_CLUSTER_DIR/cluster.env ]] ||
  pgs_fail "$PGS_CLUSTER_DIR/cluster.env not found: start one with tests/cluster/cluster.sh start $PGS_CLUSTER_DIR"
# shellcheck disable=SC1091
source "$PGS_CLUSTER_DIR/cluster.env"
[[ ${PGS_READY:-} == 1 ]] || pgs_fail "the cluster in $PGS_CLUSTER_DIR did not finish starting"

PGS_WORK=${PGS_WORK:-${TMPDIR:-/tmp}/pgshard-itest}
mkdir -p "$PGS_WORK"
export PGCONNECT_TIMEOUT=${PGCONNECT_TIMEOUT:-10}

# A TCP port nobody uses in any state. Chosen at random below the kernel's ephemeral range
# and remembered in $PGS_WORK/.ports, so two calls made before either port is bound (say,
# listen_port and metrics_port) do not return the same one.
pgs_free_port() {
  local lo hi p used tries
  read -r lo _ </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || lo=32768
  hi=$((lo - 1))
  ((hi > 21000)) || hi=40000
  used=" $(ss -Htan 2>/dev/null | awk '{ n = split($4, a, ":"); print a[n] }' | tr '\n' ' ') "
  used+=" $(tail -n 200 "$PGS_WORK/.ports" 2>/dev/null | tr '\n' ' ') "
  for ((tries = 0; tries < 1000; tries++)); do
    p=$((20000 + (RANDOM * 32768 + RANDOM) % (hi - 20000)))
    if [[ $used != *" $p "* ]]; then
      echo "$p" >>"$PGS_WORK/.ports"
      echo "$p"
      return 0
    fi
  done
  pgs_fail "no free port found"
}

# Comma-separated replica addresses of shard $1, for a `replicas =` line.
pgs_replica_list() {
  local k=$1 r v out=""
  for ((r = 1; r <= PGS_REPLICAS; r++)); do
    v=PGS_SHARD${k}_REPLICA${r}_PORT
    out+="${out:+, }$PGS_HOST:${!v}"
  done
  echo "$out"
}

pgs_cluster() {
  local sub=$1; shift
  "$PGS_CLUSTER_SH" "$sub" "$PGS_CLUSTER_DIR" "$@"
}

# psql through the proxy started last, as app.
pgs_psql() {
  [[ -n ${PGS_PROXY_PORT:-} ]] || pgs_fail "pgs_psql: no proxy started"
  PGPASSWORD=$PGS_PASSWORD "$PGS_PGBIN/psql" -h "$PGS_HOST" -p "$PGS_PROXY_PORT" -U "$PGS_USER" \
    -d "$PGS_DB" -X -v ON_ERROR_STOP=1 -At "$@"
}

# psql straight to shard 0's primary, as app over TCP (SCRAM).
pgs_psql_direct() {
  PGPASSWORD=$PGS_PASSWORD "$PGS_PGBIN/psql" -h "$PGS_HOST" -p "$PGS_SHARD0_PRIMARY_PORT" \
    -U "$PGS_USER" -d "$PGS_DB" -X -v ON_ERROR_STOP=1 -At "$@"
}

# psql straight to any node, as app over TCP: pgs_psql_node SHARD primary|replicaN ARGS...
pgs_psql_node() {
  local k=$1 role=$2 v; shift 2
  case $role in
    primary) v=PGS_SHARD${k}_PRIMARY_PORT ;;
    replica*) v=PGS_SHARD${k}_REPLICA${role#replica}_PORT ;;
    *) pgs_fail "pgs_psql_node: bad role $role" ;;
  esac
  [[ -n ${!v:-} ]] || pgs_fail "pgs_psql_node: no node shard $k $role"
  PGPASSWORD=$PGS_PASSWORD "$PGS_PGBIN/psql" -h "$PGS_HOST" -p "${!v}" -U "$PGS_USER" \
    -d "$PGS_DB" -X -v ON_ERROR_STOP=1 -At "$@"
}

# pgbench as app through the proxy started last / straight to shard 0's primary. The
# database name goes last, so ARGS are options only.
pgs_pgbench() {
  [[ -n ${PGS_PROXY_PORT:-} ]] || pgs_fail "pgs_pgbench: no proxy started"
  PGPASSWORD=$PGS_PASSWORD "$PGS_PGBIN/pgbench" -h "$PGS_HOST" -p "$PGS_PROXY_PORT" -U "$PGS_USER" \
    "$@" "$PGS_DB"
}

pgs_pgbench_direct() {
  PGPASSWORD=$PGS_PASSWORD "$PGS_PGBIN/pgbench" -h "$PGS_HOST" -p "$PGS_SHARD0_PRIMARY_PORT" \
    -U "$PGS_USER" "$@" "$PGS_DB"
}

# pgs_pgbench_ok LABEL proxy|direct ARGS...: runs a pgbench benchmark and fails the test
# unless it exits 0, reports "number of failed transactions: 0" and processed more than 0
# transactions. Output is kept in $PGS_WORK/$PGS_TEST_NAME.LABEL.pgbench. Sets PGS_PGBENCH_TX
# (transactions processed) and PGS_PGBENCH_TPS.
pgs_pgbench_ok() {
  local label=$1 target=$2 out rc=0 failed; shift 2
  out=$PGS_WORK/$PGS_TEST_NAME.$label.pgbench
  case $target in
    proxy) pgs_pgbench "$@" >"$out" 2>&1 || rc=$? ;;
    direct) pgs_pgbench_direct "$@" >"$out" 2>&1 || rc=$? ;;
    *) pgs_fail "pgs_pgbench_ok: target must be proxy or direct, not '$target'" ;;
  esac
  PGS_PGBENCH_TX=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$out")
  failed=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$out")
  PGS_PGBENCH_TPS=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' "$out" | head -n1)
  if ((rc != 0)) || [[ $failed != 0 || ! ${PGS_PGBENCH_TX:-} =~ ^[1-9][0-9]*$ ]]; then
    printf -- '--- pgbench %s (%s) ---\n' "$label" "$*" >&2
    { grep -m 10 -i 'error' "$out" || true; echo ...; tail -n 25 "$out"; } >&2
    printf -- '--- end of pgbench output (%s) ---\n' "$out" >&2
    pgs_fail "pgbench $label: exit $rc, failed transactions '${failed:-?}', processed '${PGS_PGBENCH_TX:-?}'"
  fi
  pgs_log "pgbench $label: $PGS_PGBENCH_TX transactions, 0 failed, tps $PGS_PGBENCH_TPS"
}

# Writes $1 (an INI file) from the defaults below with the caller's ARGs applied. Keys are
# kept in one associative array so an override replaces a default instead of adding a
# duplicate key, which pgshard rejects.
_pgs_write_ini() {
  local file=$1; shift
  local -A val=()
  local -a order=() sections=()
  local sec=pgshard arg value s k id

  _pgs_ini_set() { # section key value
    local id="$1"$'\x1f'"$2"
    if [[ -z ${val[$id]+x} ]]; then
      order+=("$id")
      [[ " ${sections[*]} " == *" $1 "* ]] || sections+=("$1")
    fi
    val[$id]=$3
  }
  local defaults=(
    "pgshard listen_addr 127.0.0.1"
    "pgshard listen_port $PGS_PROXY_PORT"
    "pgshard workers 2"
    "pgshard pool_mode transaction"
    "pgshard pool_size 10"
    "pgshard auth_type scram-sha-256"
    "pgshard log_level info"
    "pgshard shutdown_timeout 5"
    "shard.0 primary $PGS_HOST:$PGS_SHARD0_PRIMARY_PORT"
    "user.app password $PGS_PASSWORD"
    "user.md5user password md5pw"
  )
  for arg in "${defaults[@]}"; do
    read -r s k value <<<"$arg"
    _pgs_ini_set "$s" "$k" "$value"
  done

  for arg in "$@"; do
    if [[ $arg =~ ^[[:space:]]*\[([^]]+)\][[:space:]]*$ ]]; then
      sec=${BASH_REMATCH[1]}
      [[ " ${sections[*]} " == *" $sec "* ]] || sections+=("$sec")
    elif [[ $arg =~ ^[[:space:]]*!([^=[:space:]]+)[[:space:]]*$ ]]; then
      unset "val[$sec"$'\x1f'"${BASH_REMATCH[1]}]"
    elif [[ $arg =~ ^[[:space:]]*([^=[:space:]]+)[[:space:]]*=[[:space:]]*(.*[^[:space:]])?[[:space:]]*$ ]]; then
      _pgs_ini_set "$sec" "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}"
    else
      pgs_fail "pgs_start_proxy: cannot read argument '$arg' (KEY=VALUE, !KEY or [SECTION])"
    fi
  done

  {
    echo "; written by tests/integration/lib.sh for $PGS_TEST_NAME"
    for s in "${sections[@]}"; do
      printf '\n[%s]\n' "$s"
      for id in "${order[@]}"; do
        [[ ${id%%$'\x1f'*} == "$s" && -n ${val[$id]+x} ]] || continue
        printf '%s = %s\n' "${id#*$'\x1f'}" "${val[$id]}"
      done
    done
  } >"$file"
}

declare -gA PGS_PROXY_PIDS=() PGS_PROXY_PORTS=()
PGS_PROXY_NAME=""

# Starts pgshard as NAME and waits until it accepts TCP connections. Must not be called in
# a subshell: it exports PGS_PROXY_PORT and PGS_PROXY_PID and remembers the child to wait on.
pgs_start_proxy() {
  local name=${1:?pgs_start_proxy NAME [ARG...]}; shift
  local dir=$PGS_WORK/$name
  [[ -n ${PGSHARD_BIN:-} && -x $PGSHARD_BIN ]] || pgs_fail "PGSHARD_BIN '${PGSHARD_BIN:-}' is not an executable"
  [[ -z ${PGS_PROXY_PIDS[$name]:-} ]] || pgs_fail "proxy $name is already running"
  rm -rf "$dir"
  mkdir -p "$dir"

  PGS_PROXY_PORT=$(pgs_free_port)
  _pgs_write_ini "$dir/pgshard.ini" "$@"
  # The file may override listen_port; connect to the one actually configured.
  PGS_PROXY_PORT=$(awk -F' *= *' '/^\[/{s=$0} s=="[pgshard]" && $1=="listen_port"{print $2}' \
    "$dir/pgshard.ini")

  "$PGSHARD_BIN" -c "$dir/pgshard.ini" >>"$dir/pgshard.log" 2>&1 </dev/null &
  PGS_PROXY_PID=$!
  PGS_PROXY_PIDS[$name]=$PGS_PROXY_PID
  PGS_PROXY_PORTS[$name]=$PGS_PROXY_PORT
  PGS_PROXY_NAME=$name
  export PGS_PROXY_PORT PGS_PROXY_PID

  local deadline=$((SECONDS + 10)) rc
  until (exec 3<>"/dev/tcp/127.0.0.1/$PGS_PROXY_PORT") 2>/dev/null; do
    if ! kill -0 "$PGS_PROXY_PID" 2>/dev/null; then
      rc=0; wait "$PGS_PROXY_PID" || rc=$?
      unset "PGS_PROXY_PIDS[$name]"
      _pgs_show_log "$dir/pgshard.log"
      pgs_fail "pgshard $name exited with status $rc before accepting connections"
    fi
    if ((SECONDS >= deadline)); then
      _pgs_show_log "$dir/pgshard.log"
      pgs_fail "pgshard $name did not accept connections on port $PGS_PROXY_PORT within 10 s"
    fi
    sleep 0.05
  done
  pgs_log "pgshard $name up on port $PGS_PROXY_PORT (pid $PGS_PROXY_PID)"
}

# Port of proxy NAME (the last one started by default).
pgs_proxy_port() { echo "${PGS_PROXY_PORTS[${1:-$PGS_PROXY_NAME}]:?no such proxy}"; }

_pgs_show_log() {
  printf -- '--- %s ---\n' "$1" >&2
  tail -n 100 "$1" >&2 2>/dev/null || true
  printf -- '--- end of log ---\n' >&2
}

# Stops proxy NAME; returns non-zero (after saying why) if it did not stop in time, exited
# non-zero (ASan leak reports do that) or logged a sanitizer error.
_pgs_stop_one() {
  local name=$1 pid=${PGS_PROXY_PIDS[$1]:-} log=$PGS_WORK/$1/pgshard.log rc=0 deadline
  [[ -n $pid ]] || return 0
  unset "PGS_PROXY_PIDS[$name]"
  kill -TERM "$pid" 2>/dev/null || true
  deadline=$((SECONDS + 10))
  while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.05; done
  if kill -0 "$pid" 2>/dev/null; then
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    _pgs_show_log "$log"
    echo "pgshard $name did not exit within 10 s of SIGTERM; killed" >&2
    return 1
  fi
  wait "$pid" 2>/dev/null || rc=$?
  if ((rc != 0)); then
    _pgs_show_log "$log"
    echo "pgshard $name exited with status $rc" >&2
    return 1
  fi
  if grep -qE 'ERROR: (Address|Leak)Sanitizer|runtime error:' "$log" 2>/dev/null; then
    _pgs_show_log "$log"
    echo "pgshard $name: sanitizer report in $log" >&2
    return 1
  fi
  return 0
}

# The last check of a test that counts its checks: stops proxy NAME and adds the outcome to
# the caller's passed/failed counters.
pgs_check_stopped() {
  if _pgs_stop_one "$1"; then
    echo "ok   proxy: SIGTERM -> exit 0, no sanitizer report"
    passed=$((passed + 1))
  else
    echo "FAIL proxy: did not stop cleanly (log: $PGS_WORK/$1/pgshard.log)"
    failed=$((failed + 1))
  fi
}

pgs_stop_proxy() {
  local name=${1:-$PGS_PROXY_NAME}
  [[ -n $name ]] || pgs_fail "pgs_stop_proxy: no proxy started"
  _pgs_stop_one "$name" || pgs_fail "pgshard $name did not stop cleanly"
  pgs_log "pgshard $name stopped"
}

# Commands to run at exit before the proxies stop (a test must not `trap ... EXIT` itself,
# that would replace the trap below).
PGS_EXIT_HOOKS=()
pgs_on_exit() { PGS_EXIT_HOOKS+=("$*"); }

_pgs_on_exit() {
  local rc=$? name hook failed=0
  set +e
  for hook in "${PGS_EXIT_HOOKS[@]}"; do eval "$hook"; done
  for name in "${!PGS_PROXY_PIDS[@]}"; do _pgs_stop_one "$name" || failed=1; done
  if ((rc == 0 && failed)); then
    printf 'FAIL [%s]: a proxy did not stop cleanly\n' "$PGS_TEST_NAME" >&2
    rc=1
  fi
  exit "$rc"
}
trap _pgs_on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ------------------------------------------------------------------------------------------
# Helpers for the read/write splitting tests (t_replica_*.sh, t_failover.sh).
#
#   pgs_own_cluster DIR SHARDS REPLICAS  a cluster of the test's own, stopped at exit; the
#                                   helpers work on it from then on
#   pgs_now_ms                      wall clock in ms, without a fork
#   pgs_wait_for SECS WHAT CMD...   runs CMD every 0.1 s until it succeeds; fails the test
#                                   with WHAT after SECS seconds (and with $PGS_WAIT_INFO,
#                                   which CMD may set to say what it saw last)
#   pgs_psql_port PORT ARGS         psql as app through the proxy on PORT (pgs_proxy_port NAME)
#   pgs_admin ARGS                  psql to the admin console (database pgshard) of the last
#                                   proxy, or of $PGS_ADMIN_PORT; -At -F '|'. The proxy needs
#                                   admin_users=app
#   pgs_replicas_cols               reads SHOW REPLICAS' header into PGS_RCOL[name]=field no.
#   pgs_replica_field ROWS PORT COL the column COL of the row for the node on PORT in ROWS
#                                   (SHOW REPLICAS output without header, as pgs_admin gives)
#   pgs_wait_replicas_up SECS PORT...  waits until SHOW REPLICAS shows every node on PORT up,
#                                   in recovery and with a closed circuit
#   pgs_xact_commit SHARD ROLE      xact_commit of database $PGS_DB on one node
#   pgs_count_lines FILE VALUE      how many lines of FILE are exactly VALUE
#   pgs_session_open NAME PORT [DB] a psql (as app, -At -F '|') that stays connected, fed
#                                   through FIFOs; closed at exit
#   pgs_session_query NAME SQL [TIMEOUT]  runs SQL (end it with ;) in the session; its
#                                   output lines (errors included) go to PGS_SESSION_OUT
#                                   (an array). Returns 1 if psql is gone or did not answer
#   pgs_session_close NAME
# ------------------------------------------------------------------------------------------

# A cluster of the test's own in DIR (SHARDS x primary + REPLICAS), stopped at exit; from then
# on every helper here (pgs_psql_node, pgs_cluster, pgs_start_proxy's primary,
# pgs_replica_list) works on it. Its output goes to $W/cluster.log.
pgs_own_cluster() { # DIR SHARDS REPLICAS
  local dir=$1 shards=$2 replicas=$3
  pgs_log "starting a cluster of its own in $dir: $shards shard(s) x (primary + $replicas replica(s))"
  pgs_on_exit "\"$PGS_CLUSTER_SH\" stop \"$dir\" >/dev/null 2>&1"
  "$PGS_CLUSTER_SH" start "$dir" --shards "$shards" --replicas "$replicas" >"$W/cluster.log" 2>&1 ||
    { cat "$W/cluster.log" >&2; pgs_fail "cluster.sh start $dir failed"; }
  PGS_CLUSTER_DIR=$dir
  # shellcheck disable=SC1091
  source "$dir/cluster.env"
  [[ ${PGS_READY:-} == 1 && $PGS_REPLICAS == "$replicas" ]] || pgs_fail "the cluster in $dir did not start"
}

pgs_now_ms() {
  local t=${EPOCHREALTIME/[.,]/}
  echo $((t / 1000))
}

pgs_wait_for() {
  local secs=$1 what=$2 deadline
  shift 2
  deadline=$(($(pgs_now_ms) + secs * 1000))
  PGS_WAIT_INFO=""
  until "$@"; do
    (($(pgs_now_ms) < deadline)) || pgs_fail "$what (not within $secs s)${PGS_WAIT_INFO:+; last: $PGS_WAIT_INFO}"
    sleep 0.1
  done
}

pgs_psql_port() {
  local port=$1; shift
  PGPASSWORD=$PGS_PASSWORD "$PGS_PGBIN/psql" -h "$PGS_HOST" -p "$port" -U "$PGS_USER" \
    -d "$PGS_DB" -X -v ON_ERROR_STOP=1 -At "$@"
}

pgs_admin() {
  local port=${PGS_ADMIN_PORT:-${PGS_PROXY_PORT:-}}
  [[ -n $port ]] || pgs_fail "pgs_admin: no proxy started"
  PGPASSWORD=$PGS_PASSWORD "$PGS_PGBIN/psql" -h "$PGS_HOST" -p "$port" -U "$PGS_USER" \
    -d pgshard -X -v ON_ERROR_STOP=1 -At -F '|' "$@"
}

declare -gA PGS_RCOL=()
pgs_replicas_cols() {
  local header i
  local -a names
  header=$(pgs_admin -P tuples_only=off -P footer=off -c "SHOW REPLICAS" | head -n 1) ||
    pgs_fail "SHOW REPLICAS failed"
  IFS='|' read -ra names <<<"$header"
  PGS_RCOL=()
  for ((i = 0; i < ${#names[@]}; i++)); do PGS_RCOL[${names[i]}]=$((i + 1)); done
  [[ -n ${PGS_RCOL[port]:-} ]] || pgs_fail "SHOW REPLICAS has no column 'port': '$header'"
  PGS_RCOL_HEADER=$header
}

pgs_replica_field() {
  local rows=$1 port=$2 col=$3 line
  local -a f
  [[ -n ${PGS_RCOL[port]:-} ]] || pgs_fail "pgs_replica_field: call pgs_replicas_cols first"
  [[ -n ${PGS_RCOL[$col]:-} ]] || pgs_fail "SHOW REPLICAS has no column '$col': '$PGS_RCOL_HEADER'"
  while IFS= read -r line; do
    IFS='|' read -ra f <<<"$line"
    if [[ ${f[PGS_RCOL[port] - 1]:-} == "$port" ]]; then
      echo "${f[PGS_RCOL[$col] - 1]:-}"
      return 0
    fi
  done <<<"$rows"
  return 1
}

_pgs_replicas_are_up() {
  local rows port
  rows=$(pgs_admin -c "SHOW REPLICAS" 2>&1) || { PGS_LAST_REPLICAS=$rows; return 1; }
  PGS_LAST_REPLICAS=$rows
  for port in "$@"; do
    [[ $(pgs_replica_field "$rows" "$port" health) == up &&
      $(pgs_replica_field "$rows" "$port" in_recovery) == t &&
      $(pgs_replica_field "$rows" "$port" circuit) == closed ]] || return 1
  done
}

pgs_wait_replicas_up() {
  local secs=$1 deadline; shift
  [[ -n ${PGS_RCOL[port]:-} ]] || pgs_replicas_cols
  deadline=$(($(pgs_now_ms) + secs * 1000))
  until _pgs_replicas_are_up "$@"; do
    (($(pgs_now_ms) < deadline)) ||
      pgs_fail "SHOW REPLICAS does not show nodes $* up, in recovery, circuit closed within $secs s: ${PGS_LAST_REPLICAS:-}"
    sleep 0.1
  done
}

pgs_xact_commit() {
  pgs_psql_node "$1" "$2" -c "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
}

pgs_count_lines() { grep -cx -- "$2" "$1" || true; }

declare -gA PGS_SESS_IN=() PGS_SESS_OUT=() PGS_SESS_PID=()
pgs_session_open() {
  local name=$1 port=$2 db=${3:-$PGS_DB} dir fin fout
  dir=$PGS_WORK/$PGS_TEST_NAME.session.$name
  rm -rf "$dir"
  mkdir -p "$dir"
  mkfifo "$dir/in" "$dir/out"
  PGPASSWORD=$PGS_PASSWORD "$PGS_PGBIN/psql" -h "$PGS_HOST" -p "$port" -U "$PGS_USER" -d "$db" \
    -X -At -F '|' <"$dir/in" >"$dir/out" 2>&1 &
  PGS_SESS_PID[$name]=$!
  exec {fin}>"$dir/in"
  exec {fout}<"$dir/out"
  PGS_SESS_IN[$name]=$fin
  PGS_SESS_OUT[$name]=$fout
  pgs_on_exit "pgs_session_close $name"
}

pgs_session_query() {
  local name=$1 sql=$2 timeout=${3:-10} line fin=${PGS_SESS_IN[$1]:-} fout=${PGS_SESS_OUT[$1]:-}
  [[ -n $fin ]] || pgs_fail "pgs_session_query: no session $name"
  PGS_SESSION_OUT=()
  # A write to a FIFO nobody reads would kill this shell with SIGPIPE: look first.
  kill -0 "${PGS_SESS_PID[$name]}" 2>/dev/null || return 1
  printf '%s\n\\echo @@pgs-session@@\n' "$sql" 1>&"$fin" || return 1
  while :; do
    IFS= read -r -t "$timeout" -u "$fout" line || return 1
    [[ $line == @@pgs-session@@ ]] && return 0
    PGS_SESSION_OUT+=("$line")
  done
}

pgs_session_close() {
  local name=$1 pid=${PGS_SESS_PID[$1]:-} i fin=${PGS_SESS_IN[$1]:-} fout=${PGS_SESS_OUT[$1]:-}
  [[ -n $pid ]] || return 0
  [[ -z $fin ]] || exec {fin}>&-
  [[ -z $fout ]] || exec {fout}<&-
  unset "PGS_SESS_PID[$name]" "PGS_SESS_IN[$name]" "PGS_SESS_OUT[$name]"
  for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

# pgs_two_replicas: fails unless the cluster has 2 replicas per shard; sets P, R1 and R2 to
# shard 0's ports and W to this test's emptied work directory. Call it again after pointing
# PGS_CLUSTER_DIR at another cluster and sourcing its cluster.env.
pgs_two_replicas() {
  ((PGS_REPLICAS >= 2)) ||
    pgs_fail "needs a cluster with 2 replicas per shard (cluster.sh start DIR --replicas 2); this one has $PGS_REPLICAS"
  P=$PGS_SHARD0_PRIMARY_PORT
  R1=$PGS_SHARD0_REPLICA1_PORT
  R2=$PGS_SHARD0_REPLICA2_PORT
  W=$PGS_WORK/$PGS_TEST_NAME
  mkdir -p "$W"
}

# pgs_node_name PORT: primary, replica1 or replica2 for shard 0's nodes (after pgs_two_replicas).
pgs_node_name() {
  case $1 in "$P") echo primary ;; "$R1") echo replica1 ;; "$R2") echo replica2 ;; *) echo "'$1'" ;; esac
}

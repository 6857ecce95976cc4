#!/usr/bin/env bash
# Starts and stops throw-away PostgreSQL 15 clusters on loopback for pgshard's integration
# tests and `make demo`: K shards, each a primary with R streaming replicas. Data lives in a
# fresh /tmp/pgshard-cluster.XXXXXX (so the postgres user can reach it even when DIR sits in
# a root-owned build tree); DIR only holds cluster.env, which says where everything is.
#
#   cluster.sh start DIR [--shards K] [--replicas R] [--base-port P]
#   cluster.sh stop DIR
#   cluster.sh psql DIR SHARD [ROLE] [-- psql-args...]      superuser over the unix socket
#   cluster.sh pgctl DIR SHARD ROLE stop|start|restart|promote|kill [pg_ctl-args...]
#   cluster.sh status DIR
#
# SHARD is the shard number from 0; ROLE is primary (default) or replica1, replica2, ...
# When run as root, every server command runs as the `postgres` system user.
set -euo pipefail

PGBIN=${PGS_PGBIN:-/usr/lib/postgresql/15/bin}
TMP_PREFIX=/tmp/pgshard-cluster.
START_TIMEOUT=60

if [[ $(id -u) -eq 0 ]]; then
  RUNAS=(runuser -u postgres --)
else
  RUNAS=()
fi

say() { printf 'cluster: %s\n' "$*"; }
die() { printf 'cluster: error: %s\n' "$*" >&2; exit 1; }

usage() {
  sed -n '7,13p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

# Runs a command as the server user, from a directory that user can always enter.
as_pg() { (cd / && "${RUNAS[@]}" "$@"); }

# Prints the last lines of a server log, for error messages.
log_tail() {
  local log=$1
  if [[ -f $log ]]; then
    printf -- '--- last lines of %s ---\n' "$log" >&2
    tail -n 30 "$log" >&2 || true
  fi
}

# Ports in use in any TCP state (listening or as the local end of a connection).
used_ports() {
  ss -Htan 2>/dev/null | awk '{ n = split($4, a, ":"); print a[n] }' | sort -un
}

# Finds N contiguous free ports at or after $1. Starts below the kernel's ephemeral range so
# that an outgoing connection is unlikely to take one of them before the server binds it.
find_port_block() {
  local start=$1 n=$2 used p ok i
  used=" $(used_ports | tr '\n' ' ') "
  for ((p = start; p + n - 1 <= 65535; p++)); do
    ok=1
    for ((i = 0; i < n; i++)); do
      if [[ $used == *" $((p + i)) "* ]]; then ok=0; p=$((p + i)); break; fi
    done
    if ((ok)); then echo "$p"; return 0; fi
  done
  return 1
}

random_base() {
  local lo hi
  read -r lo _ </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || lo=32768
  hi=$((lo - 200))
  ((hi > 20000 + 1000)) || hi=39000
  ((hi <= 40000)) || hi=39000
  echo $((20000 + (RANDOM * 32768 + RANDOM) % (hi - 20000)))
}

load_env() {
  local dir=$1
  [[ -f $dir/cluster.env ]] || die "$dir/cluster.env not found: is the cluster started?"
  # shellcheck disable=SC1091
  source "$dir/cluster.env"
}

# Resolves SHARD and ROLE of a started cluster into NODE_PORT and NODE_DATA.
resolve_node() {
  local shard=$1 role=${2:-primary} pv dv
  [[ $shard =~ ^[0-9]+$ ]] || die "bad shard '$shard'"
  case $role in
    primary) pv=PGS_SHARD${shard}_PRIMARY_PORT; dv=PGS_SHARD${shard}_PRIMARY_DATA ;;
    replica[0-9]*)
      pv=PGS_SHARD${shard}_REPLICA${role#replica}_PORT
      dv=PGS_SHARD${shard}_REPLICA${role#replica}_DATA ;;
    *) die "bad role '$role' (primary, replica1, ...)" ;;
  esac
  [[ -n ${!pv:-} ]] || die "no node shard $shard $role in this cluster"
  NODE_PORT=${!pv}
  NODE_DATA=${!dv}
}

# Waits until the command $2... succeeds, polling every 0.1 s, for at most $1 seconds.
wait_for() {
  local timeout=$1; shift
  local deadline=$((SECONDS + timeout))
  until "$@"; do
    ((SECONDS < deadline)) || return 1
    sleep 0.1
  done
}

write_primary_conf() {
  local data=$1 port=$2 sock=$3
  cat >>"$data/postgresql.conf" <<EOF

# pgshard test cluster
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$sock'
password_encryption = 'scram-sha-256'
wal_level = logical
max_wal_senders = 10
max_replication_slots = 10
wal_keep_size = '128MB'
hot_standby = on
hot_standby_feedback = on
max_connections = 300
max_prepared_transactions = 20
fsync = off
synchronous_commit = off
full_page_writes = off
shared_buffers = 32MB
logging_collector = off
log_line_prefix = '%m [%p] %q%u@%d '
EOF
  # md5user's line must come before the catch-all scram line: the first match wins.
  cat >"$data/pg_hba.conf" <<EOF
# pgshard test cluster
local   all          all                     trust
local   replication  all                     trust
host    all          md5user  127.0.0.1/32   md5
host    all          all      127.0.0.1/32   scram-sha-256
host    replication  all      127.0.0.1/32   scram-sha-256
EOF
}

# True when the primary on socket dir $1, port $2 streams to exactly $3 replicas.
streaming_is() {
  local n
  n=$(as_pg "$PGBIN/psql" -X -At -h "$1" -p "$2" -U postgres -d postgres \
    -c "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'" 2>/dev/null) || return 1
  [[ $n == "$3" ]]
}

pid_gone() { ! kill -0 "$1" 2>/dev/null; }

pg_start() {
  local data=$1
  if ! as_pg "$PGBIN/pg_ctl" start -D "$data" -l "$data/postgresql.log" -w -t "$START_TIMEOUT" \
    >/dev/null; then
    log_tail "$data/postgresql.log"
    die "server in $data did not start"
  fi
}

# Makes shard K: a primary, its roles and database, then R replicas streaming from it.
# Runs in a subshell per shard so that shards are set up in parallel.
setup_shard() {
  local k=$1 port=$2 sock=$3 tmp=$4 data r rport rdata
  data=$tmp/shard${k}_primary
  as_pg "$PGBIN/initdb" -D "$data" -U postgres -E UTF8 --locale=C --no-sync --no-instructions \
    --auth-local=trust --auth-host=scram-sha-256 >"$tmp/initdb_shard$k.log" 2>&1 ||
    { cat "$tmp/initdb_shard$k.log" >&2; die "initdb of shard $k failed"; }
  write_primary_conf "$data" "$port" "$sock"
  pg_start "$data"
  as_pg "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$sock" -p "$port" -U postgres -d postgres \
    -f - >/dev/null <<'EOF' || { log_tail "$data/postgresql.log"; die "creating roles on shard $k failed"; }
SET password_encryption = 'scram-sha-256';
CREATE ROLE app LOGIN CREATEDB PASSWORD 'app';
CREATE ROLE replicator REPLICATION LOGIN PASSWORD 'repl';
CREATE DATABASE app OWNER app;
SET password_encryption = 'md5';
CREATE ROLE md5user LOGIN PASSWORD 'md5pw';
EOF
  for ((r = 1; r <= REPLICAS; r++)); do
    rport=$((port + r))
    rdata=$tmp/shard${k}_replica$r
    if ! as_pg env PGPASSWORD=repl "$PGBIN/pg_basebackup" -D "$rdata" -R -X stream -c fast \
      --no-sync -C -S "shard${k}_replica$r" \
      -d "host=127.0.0.1 port=$port user=replicator application_name=shard${k}_replica$r" \
      >"$tmp/basebackup_shard${k}_replica$r.log" 2>&1; then
      cat "$tmp/basebackup_shard${k}_replica$r.log" >&2
      log_tail "$data/postgresql.log"
      die "pg_basebackup of shard $k replica $r failed"
    fi
    rm -f "$rdata/postgresql.log"
    printf '\n# replica\nport = %s\n' "$rport" >>"$rdata/postgresql.conf"
    pg_start "$rdata"
  done
  if ! wait_for "$START_TIMEOUT" streaming_is "$sock" "$port" "$REPLICAS"; then
    log_tail "$data/postgresql.log"
    for ((r = 1; r <= REPLICAS; r++)); do log_tail "$tmp/shard${k}_replica$r/postgresql.log"; done
    die "shard $k: replicas not streaming after ${START_TIMEOUT}s"
  fi
  say "shard $k: primary :$port, replicas ${REPLICAS} streaming"
}

cmd_start() {
  local dir=${1:-}; [[ -n $dir ]] || usage; shift
  local shards=1 base=""
  REPLICAS=1
  while (($#)); do
    case $1 in
      --shards) shards=${2:?}; shift 2 ;;
      --replicas) REPLICAS=${2:?}; shift 2 ;;
      --base-port) base=${2:?}; shift 2 ;;
      *) usage ;;
    esac
  done
  [[ $shards =~ ^[1-9][0-9]*$ ]] || die "--shards must be >= 1"
  [[ $REPLICAS =~ ^[0-8]$ ]] || die "--replicas must be 0..8 (max_wal_senders = 10)"
  [[ -x $PGBIN/postgres ]] || die "PostgreSQL binaries not found in $PGBIN"
  if ((${#RUNAS[@]})); then id postgres >/dev/null 2>&1 || die "running as root needs a 'postgres' user"; fi

  # A cluster left in DIR by an earlier run is stopped before DIR is made fresh.
  if [[ -f $dir/cluster.env ]]; then cmd_stop "$dir"; fi
  dir=$(realpath -m "$dir")
  [[ $dir != / ]] || die "refusing to use / as the cluster directory"
  rm -rf "$dir"
  mkdir -p "$dir"

  local per=$((1 + REPLICAS)) n=$((shards * (1 + REPLICAS))) start tmp
  start=${base:-$(random_base)}
  base=$(find_port_block "$start" "$n") || die "no block of $n free ports from $start"

  tmp=$(mktemp -d "${TMP_PREFIX}XXXXXX")
  chmod 0755 "$tmp"
  if ((${#RUNAS[@]})); then chown postgres: "$tmp"; fi
  ln -s "$tmp" "$dir/pg"

  local env=$dir/cluster.env k r
  {
    echo "# written by tests/cluster/cluster.sh; source it from bash"
    echo "PGS_CLUSTER_TMP=$tmp"
    echo "PGS_SHARDS=$shards"
    echo "PGS_REPLICAS=$REPLICAS"
    echo "PGS_PGBIN=$PGBIN"
    echo "PGS_HOST=127.0.0.1"
    echo "PGS_USER=app"
    echo "PGS_PASSWORD=app"
    echo "PGS_DB=app"
    echo "PGS_SUPERUSER=postgres"
    echo "PGS_SOCKDIR=$tmp"
    echo "PGS_RUNAS=\"${RUNAS[*]}\""
    for ((k = 0; k < shards; k++)); do
      echo "PGS_SHARD${k}_PRIMARY_PORT=$((base + k * per))"
      echo "PGS_SHARD${k}_PRIMARY_DATA=$tmp/shard${k}_primary"
      for ((r = 1; r <= REPLICAS; r++)); do
        echo "PGS_SHARD${k}_REPLICA${r}_PORT=$((base + k * per + r))"
        echo "PGS_SHARD${k}_REPLICA${r}_DATA=$tmp/shard${k}_replica$r"
      done
    done
  } >"$env"
  say "starting $shards shard(s) x (primary + $REPLICAS replica(s)) on ports $base-$((base + n - 1)), data in $tmp"

  # On any failure, leave nothing running (set PGS_KEEP_ON_FAILURE=1 to keep it for a look).
  local pids=() failed=0 pid
  for ((k = 0; k < shards; k++)); do
    setup_shard "$k" "$((base + k * per))" "$tmp" "$tmp" &
    pids+=("$!")
  done
  for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
  if ((failed)); then
    if [[ ${PGS_KEEP_ON_FAILURE:-} == 1 ]]; then
      die "start failed; cluster kept in $tmp (stop it with: $0 stop $dir)"
    fi
    cmd_stop "$dir" >/dev/null || true
    die "start failed; everything started was stopped"
  fi
  echo "PGS_READY=1" >>"$env"
  say "ready in ${SECONDS}s: $env"
}

# Processes whose working directory is inside $1: the postmasters and all their children
# chdir into their data directory, so this finds every server of the cluster and no other.
procs_in() {
  local tmp=$1 p cwd
  for p in /proc/[0-9]*; do
    cwd=$(readlink "$p/cwd" 2>/dev/null) || continue
    [[ $cwd == "$tmp"/* ]] && echo "${p#/proc/}"
  done
  return 0
}

cmd_stop() {
  local dir=${1:-}; [[ -n $dir ]] || usage
  local env=$dir/cluster.env tmp="" data
  if [[ -f $env ]]; then
    tmp=$(sed -n 's/^PGS_CLUSTER_TMP=//p' "$env" | head -n1)
  elif [[ -L $dir/pg ]]; then
    tmp=$(readlink "$dir/pg")
  fi
  if [[ -z $tmp ]]; then
    rm -f "$dir/pg"
    say "nothing to stop in $dir"
    return 0
  fi
  [[ $tmp == "$TMP_PREFIX"?* && $tmp != *..* ]] || die "refusing to remove '$tmp': not a cluster temp dir"
  if [[ -d $tmp ]]; then
    for data in "$tmp"/shard*; do
      [[ -f $data/postmaster.pid ]] || continue
      as_pg "$PGBIN/pg_ctl" stop -D "$data" -m immediate -w -t 10 >/dev/null 2>&1 || true
    done
    local pids deadline=$((SECONDS + 10))
    while pids=$(procs_in "$tmp") && [[ -n $pids ]]; do
      # shellcheck disable=SC2086
      kill -9 $pids 2>/dev/null || true
      ((SECONDS < deadline)) || die "processes still running in $tmp: $pids"
      sleep 0.1
    done
    rm -rf "$tmp"
  fi
  rm -f "$env" "$dir/pg"
  say "stopped, removed $tmp"
}

cmd_psql() {
  local dir=${1:-} shard=${2:-}; [[ -n $dir && -n $shard ]] || usage; shift 2
  local role=primary
  if (($#)) && [[ $1 != -- ]]; then role=$1; shift; fi
  if (($#)) && [[ $1 == -- ]]; then shift; fi
  load_env "$dir"
  resolve_node "$shard" "$role"
  "${RUNAS[@]}" env PGHOST="$PGS_SOCKDIR" PGPORT="$NODE_PORT" PGUSER=postgres PGDATABASE=app \
    "$PGBIN/psql" -X "$@"
}

cmd_pgctl() {
  local dir=${1:-} shard=${2:-} role=${3:-} action=${4:-}
  [[ -n $action ]] || usage; shift 4
  load_env "$dir"
  resolve_node "$shard" "$role"
  local log=$NODE_DATA/postgresql.log
  case $action in
    stop) as_pg "$PGBIN/pg_ctl" stop -D "$NODE_DATA" -w -t 60 "$@" ;;
    start) as_pg "$PGBIN/pg_ctl" start -D "$NODE_DATA" -l "$log" -w -t 60 "$@" ||
      { log_tail "$log"; die "start of shard $shard $role failed"; } ;;
    restart) as_pg "$PGBIN/pg_ctl" restart -D "$NODE_DATA" -l "$log" -w -t 60 "$@" ||
      { log_tail "$log"; die "restart of shard $shard $role failed"; } ;;
    promote) as_pg "$PGBIN/pg_ctl" promote -D "$NODE_DATA" -w -t 60 "$@" ;;
    kill)
      # A crash: SIGKILL the postmaster; its children notice and exit on their own.
      local pid
      pid=$(head -n1 "$NODE_DATA/postmaster.pid" 2>/dev/null) || die "shard $shard $role is not running"
      kill -9 "$pid"
      wait_for 10 pid_gone "$pid" || die "postmaster $pid did not die"
      ;;
    *) usage ;;
  esac
}

cmd_status() {
  local dir=${1:-}; [[ -n $dir ]] || usage
  load_env "$dir"
  local k r
  for ((k = 0; k < PGS_SHARDS; k++)); do
    for role in primary $(for ((r = 1; r <= PGS_REPLICAS; r++)); do echo "replica$r"; done); do
      resolve_node "$k" "$role"
      printf 'shard %s %-9s :%s  ' "$k" "$role" "$NODE_PORT"
      "$PGBIN/pg_isready" -h "$PGS_SOCKDIR" -p "$NODE_PORT" -t 1 || true
    done
  done
}

case ${1:-} in
  start) shift; cmd_start "$@" ;;
  stop) shift; cmd_stop "$@" ;;
  psql) shift; cmd_psql "$@" ;;
  pgctl) shift; cmd_pgctl "$@" ;;
  status) shift; cmd_status "$@" ;;
  *) usage ;;
esac

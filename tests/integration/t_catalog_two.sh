#!/usr/bin/env bash
# Two pgshard processes on one catalog follow a map change with real queries, on a cluster
# of its own with two shards (primaries only), a table sharded by tenant_id and a catalog
# that pgshard-migrate init fills (64 buckets over 2 shards):
#   - before the change, both proxies route a tenant to the shard its bucket names: SHOW
#     ROUTE says so, and a row inserted through each proxy lands on that shard's primary;
#   - a change made as the catalog's contract says (one transaction, map_version bumped,
#     NOTIFY pgshard_map) moving the tenant with a tenant_map override reaches both proxies
#     within 1 s of its commit: from then on every row inserted through either proxy lands
#     on the new shard's primary (and not on the old one);
#   - pgshard-migrate status and status --json list both proxies, live, at the new version;
#   - a bucket_map change without NOTIFY reaches both within 3 s (the 2 s version check);
#   - a change committed while the proxies are still loading the previous one (its
#     NOTIFY arrives in the middle of the load) reaches both within 1 s as well.
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"

MIG=${PGSHARD_MIGRATE_BIN:-}
[[ -n $MIG && -x $MIG ]] || pgs_fail "PGSHARD_MIGRATE_BIN '$MIG' is not an executable"
W=$PGS_WORK/$PGS_TEST_NAME
rm -rf "$W"
mkdir -p "$W"

pgs_own_cluster "$PGS_WORK/catalog-two-cluster" 2 0

P0=$PGS_SHARD0_PRIMARY_PORT
P1=$PGS_SHARD1_PRIMARY_PORT
CATDB=pgs_catalog_two
DSN="host=$PGS_HOST port=$P0 dbname=$CATDB user=$PGS_USER password=$PGS_PASSWORD"
BUCKETS=64
DEADLINE_NOTIFY_MS=1000 # the contract: a NOTIFYed change is followed within a second
DEADLINE_CHECK_MS=3000  # without NOTIFY: the 2 s version check, and some slack

catpsql() {
  PGPASSWORD=$PGS_PASSWORD "$PGS_PGBIN/psql" -h "$PGS_HOST" -p "$P0" -U "$PGS_USER" -d "$CATDB" \
    -X -v ON_ERROR_STOP=1 -At "$@"
}

pgs_psql_node 0 primary -q -c "CREATE DATABASE $CATDB"
for k in 0 1; do
  pgs_psql_node "$k" primary -q -c \
    "CREATE TABLE c2_orders (tenant_id bigint NOT NULL, id bigint PRIMARY KEY, via text NOT NULL)" ||
    pgs_fail "schema on shard $k"
done

{
  printf '[pgshard]\nbuckets = %s\ncatalog_dsn = %s\n' "$BUCKETS" "$DSN"
  printf '[shard.0]\nprimary = %s:%s\n[shard.1]\nprimary = %s:%s\n' "$PGS_HOST" "$P0" "$PGS_HOST" "$P1"
  printf '[user.app]\npassword = %s\n' "$PGS_PASSWORD"
} >"$W/migrate.ini"
"$MIG" -c "$W/migrate.ini" init >"$W/init.out" 2>&1 || pgs_fail "pgshard-migrate init: $(cat "$W/init.out")"
grep -q "^filled bucket_map: $BUCKETS buckets over 2 shards" "$W/init.out" ||
  pgs_fail "pgshard-migrate init: $(cat "$W/init.out")"

common=("catalog_dsn=$DSN" "buckets=$BUCKETS" admin_users=app workers=2 pool_size=4
  '[shard.1]' "primary = $PGS_HOST:$P1"
  '[table.c2_orders]' 'shard_key = tenant_id' 'key_type = int')
pgs_start_proxy two1 "${common[@]}"
PORT1=$PGS_PROXY_PORT
pgs_start_proxy two2 "${common[@]}"
PORT2=$PGS_PROXY_PORT
PORTS=("$PORT1" "$PORT2")
pgs_session_open "p$PORT1" "$PORT1"
pgs_session_open "p$PORT2" "$PORT2"

# The shard the default map gives a tenant and its bucket, computed by the server itself.
# Kept for the two tenants below: the checks ask for them often.
declare -A BUCKET_OF=()
bucket_of() {
  [[ -n ${BUCKET_OF[$1]:-} ]] && echo "${BUCKET_OF[$1]}" && return
  pgs_psql_node 0 primary -c "SELECT hashint8extended($1::bigint, 0) & $((BUCKETS - 1))"
}
shard_of() { echo $(($(bucket_of "$1") * 2 / BUCKETS)); }

# Two tenants on different shards: T starts on shard 0 and U on shard 1.
T=""
U=""
for t in $(seq 1 100); do
  s=$(shard_of "$t")
  if [[ $s == 0 && -z $T ]]; then T=$t; elif [[ $s == 1 && -z $U ]]; then U=$t; fi
  [[ -n $T && -n $U ]] && break
done
[[ -n $T && -n $U ]] || pgs_fail "no tenants on both shards among 1..100"
BUCKET_OF[$T]=$(bucket_of "$T")
BUCKET_OF[$U]=$(bucket_of "$U")
pgs_log "tenant $T is on shard 0 (bucket $(bucket_of "$T")), tenant $U on shard 1 (bucket $(bucket_of "$U"))"

# put PORT TENANT: inserts one row of TENANT through the proxy on PORT. Sets PUT_ID to the
# row's id and PUT_SHARD to the shard whose primary ran the INSERT (from
# inet_server_port(), so one round trip tells where the proxy sent it).
NEXT_ID=0
put() {
  local port=$1 tenant=$2 sport
  NEXT_ID=$((NEXT_ID + 1))
  PUT_ID=$NEXT_ID
  sport=$(pgs_psql_port "$port" -q -c \
    "INSERT INTO c2_orders (tenant_id, id, via) VALUES ($tenant, $PUT_ID, 'proxy $port') RETURNING inet_server_port()") ||
    pgs_fail "INSERT through the proxy on port $port failed"
  case $sport in
    "$P0") PUT_SHARD=0 ;;
    "$P1") PUT_SHARD=1 ;;
    *) pgs_fail "INSERT through the proxy on port $port ran on port '$sport', not a shard's primary" ;;
  esac
}

# sput PORT TENANT: put's INSERT through a session that stays connected to the proxy on
# PORT (opened below), so that polling costs one round trip, not a psql start and a SCRAM
# exchange; every statement is routed on its own (transaction pooling).
sput() {
  local port=$1 tenant=$2
  NEXT_ID=$((NEXT_ID + 1))
  PUT_ID=$NEXT_ID
  pgs_session_query "p$port" \
    "INSERT INTO c2_orders (tenant_id, id, via) VALUES ($tenant, $PUT_ID, 'session $port') RETURNING inet_server_port();" ||
    pgs_fail "INSERT through the session to the proxy on port $port did not answer"
  case "${PGS_SESSION_OUT[*]}" in
    "$P0 INSERT 0 1") PUT_SHARD=0 ;;
    "$P1 INSERT 0 1") PUT_SHARD=1 ;;
    *) pgs_fail "INSERT through the session to the proxy on port $port: ${PGS_SESSION_OUT[*]}" ;;
  esac
}

# The shards whose primary holds row ID, read on each primary directly: "0", "1", "01" or "".
where_is() {
  local k out=""
  for k in 0 1; do
    [[ $(pgs_psql_node "$k" primary -c "SELECT count(*) FROM c2_orders WHERE id = $1") == 1 ]] && out+=$k
  done
  echo "$out"
}

# The shard SHOW ROUTE gives a keyed write of TENANT on the proxy on PORT, with its bucket
# and whether an override decided it: SHARD|BUCKET|OVERRIDE.
route() {
  PGS_ADMIN_PORT=$1 pgs_admin -c "SHOW ROUTE INSERT INTO c2_orders (tenant_id, id, via) VALUES ($2, 0, 'x')" | cut -d'|' -f1,5,6
}

# expect_routes LABEL TENANT SHARD OVERRIDE: both proxies route TENANT to SHARD, by
# SHOW ROUTE and by a row that lands on SHARD's primary.
expect_routes() {
  local label=$1 tenant=$2 shard=$3 override=$4 port
  for port in "${PORTS[@]}"; do
    pgs_assert_eq "$shard|$(bucket_of "$tenant")|$override" "$(route "$port" "$tenant")" \
      "$label: SHOW ROUTE for tenant $tenant on the proxy on port $port"
    put "$port" "$tenant"
    pgs_assert_eq "$shard" "$PUT_SHARD" "$label: tenant $tenant's INSERT through port $port ran on shard $shard"
    pgs_assert_eq "$shard" "$(where_is "$PUT_ID")" "$label: the row is on shard $shard's primary only"
  done
}

# change SQL: runs SQL (statements of one transaction, BEGIN and COMMIT included) on the
# catalog and sets T0 to the time of the commit in ms (the server's clock, which is this
# machine's: the cluster runs here).
change() {
  T0=$(catpsql -q -c "$1" -c "SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint") ||
    pgs_fail "the catalog change failed: $1"
  [[ $T0 =~ ^[0-9]+$ ]] || pgs_fail "the catalog change printed '$T0', not a time"
}

# wait_routes LABEL TENANT SHARD LIMIT_MS: both proxies send TENANT's INSERTs to SHARD,
# polled every 20 ms with real INSERTs through the sessions, each started at most LIMIT_MS
# after T0; then the row is on SHARD's primary only, and four more INSERTs through each
# proxy (new connections, so either worker) all go there.
wait_routes() {
  local label=$1 tenant=$2 shard=$3 limit=$4 port elapsed i
  local -A switched=() row=()
  while ((${#switched[@]} < ${#PORTS[@]})); do
    for port in "${PORTS[@]}"; do
      [[ -z ${switched[$port]:-} ]] || continue
      elapsed=$(($(pgs_now_ms) - T0))
      ((elapsed <= limit)) ||
        pgs_fail "$label: the proxy on port $port still sends tenant $tenant to shard $PUT_SHARD $elapsed ms after the commit (limit $limit ms)"
      sput "$port" "$tenant"
      [[ $PUT_SHARD != "$shard" ]] || { switched[$port]=$elapsed; row[$port]=$PUT_ID; }
    done
    ((${#switched[@]} == ${#PORTS[@]})) || sleep 0.02
  done
  for port in "${PORTS[@]}"; do
    pgs_assert_eq "$shard" "$(where_is "${row[$port]}")" "$label: the proxy on port $port's row is on shard $shard's primary only"
    for ((i = 0; i < 4; i++)); do
      put "$port" "$tenant"
      [[ $PUT_SHARD == "$shard" ]] ||
        pgs_fail "$label: the proxy on port $port went back to shard $PUT_SHARD for tenant $tenant"
    done
  done
  pgs_log "$label: both proxies send tenant $tenant to shard $shard (after ${switched[$PORT1]} and ${switched[$PORT2]} ms; limit $limit ms)"
}

# status_json PYTHON-EXPR: EXPR over the parsed `pgshard-migrate status --json` (d).
status_json() {
  "$MIG" -c "$W/migrate.ini" status --json >"$W/status.json" 2>"$W/status.err" ||
    pgs_fail "status --json failed: $(cat "$W/status.err")"
  python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$W/status.json" "$1"
}

# expect_status VERSION: status --json says the map is at VERSION and lists exactly the two
# proxies (by their listen port), live, each having reported VERSION; so does the text form.
# The proxies heartbeat as soon as they publish a map, so this is waited for (3 s at most).
expect_status() {
  local v=$1 want
  want="$v $(python3 -c "print(sorted([($PORT1, True, $v), ($PORT2, True, $v)]))")"
  _status_is() {
    PGS_WAIT_INFO=$(status_json "f\"{d['map_version']} {sorted((int(p['id'].rsplit(':', 1)[1]), p['live'], p['map_version']) for p in d['proxies'])}\"")
    [[ $PGS_WAIT_INFO == "$want" ]]
  }
  pgs_wait_for 3 "status --json: map_version $v, both proxies live at it" _status_is
  "$MIG" -c "$W/migrate.ini" status >"$W/status.out" 2>&1 || pgs_fail "status failed: $(cat "$W/status.out")"
  grep -q "^map_version $v: $BUCKETS buckets over 2 shards" "$W/status.out" || pgs_fail "status: $(cat "$W/status.out")"
  grep -q "^proxies: 2 live" "$W/status.out" || pgs_fail "status: $(cat "$W/status.out")"
  pgs_assert_eq "$(printf '%s %s yes\n' "$PORT1" "$v" "$PORT2" "$v" | sort -n | paste -sd'|')" \
    "$(awk 'NR > 1 && $1 ~ /:[0-9]+$/ { n = split($1, a, ":"); print a[n], $3, $5 }' "$W/status.out" | sort -n |
      paste -sd'|')" "status lists both proxies, live, at map_version $v"
}

pgs_log "the map of pgshard-migrate init, version 1"
expect_status 1
expect_routes "version 1" "$T" 0 no
expect_routes "version 1" "$U" 1 no

pgs_log "a tenant_map override with NOTIFY moves tenant $T to shard 1"
change "BEGIN;
  INSERT INTO pgshard.tenant_map VALUES ('$T', 1);
  UPDATE pgshard.map_version SET version = version + 1;
  NOTIFY pgshard_map;
  COMMIT;"
wait_routes "version 2 (override, NOTIFY)" "$T" 1 "$DEADLINE_NOTIFY_MS"
expect_routes "version 2" "$T" 1 yes
expect_routes "version 2" "$U" 1 no
expect_status 2

pgs_log "a bucket_map change without NOTIFY moves tenant $U's bucket to shard 0"
change "BEGIN;
  UPDATE pgshard.bucket_map SET shard = 0 WHERE bucket = $(bucket_of "$U");
  UPDATE pgshard.map_version SET version = version + 1;
  COMMIT;"
wait_routes "version 3 (bucket, no NOTIFY)" "$U" 0 "$DEADLINE_CHECK_MS"
expect_routes "version 3" "$U" 0 no
expect_routes "version 3" "$T" 1 yes
expect_status 3

# A NOTIFY that reaches a proxy while its listener is inside a statement of its own (here the
# load of the change before, held up by a lock on tenant_map) is read by libpq with that
# statement's answer, not from the socket: the listener must still act on it at once, not
# at the next version check up to 2 s later. Three rounds, since how late that check is
# depends on where each proxy is in its 2 s cycle.
pgs_log "a change committed while the proxies are loading the one before it"
pgs_session_open locker "$P0" "$CATDB"
BU=$(bucket_of "$U")
ushard=0 # after version 3
tshard=1
_loads_blocked() {
  PGS_WAIT_INFO=$(catpsql -c "SELECT count(*) FROM pg_stat_activity WHERE datname = '$CATDB'
    AND application_name = 'pgshard_catalog' AND wait_event_type = 'Lock'")
  [[ $PGS_WAIT_INFO == 2 ]]
}
for round in 1 2 3; do
  pgs_session_query locker "BEGIN; LOCK TABLE pgshard.tenant_map IN ACCESS EXCLUSIVE MODE;" ||
    pgs_fail "round $round: LOCK TABLE pgshard.tenant_map: ${PGS_SESSION_OUT[*]}"
  ushard=$((1 - ushard))
  catpsql -q -c "BEGIN; UPDATE pgshard.bucket_map SET shard = $ushard WHERE bucket = $BU;
    UPDATE pgshard.map_version SET version = version + 1; NOTIFY pgshard_map; COMMIT;"
  pgs_wait_for 3 "round $round: both proxies' loads of the bucket change wait for the lock on tenant_map" _loads_blocked
  tshard=$((1 - tshard))
  if ((tshard == 1)); then
    sql="INSERT INTO pgshard.tenant_map VALUES ('$T', 1);" override=yes
  else
    sql="DELETE FROM pgshard.tenant_map WHERE tenant = '$T';" override=no
  fi
  pgs_session_query locker "$sql UPDATE pgshard.map_version SET version = version + 1; NOTIFY pgshard_map; COMMIT;
    SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint;" ||
    pgs_fail "round $round: the override change did not answer"
  T0=${PGS_SESSION_OUT[-1]}
  [[ $T0 =~ ^[0-9]+$ && " ${PGS_SESSION_OUT[*]} " != *ERROR* ]] ||
    pgs_fail "round $round: the override change: ${PGS_SESSION_OUT[*]}"
  wait_routes "round $round (override, NOTIFY during a load)" "$T" "$tshard" "$DEADLINE_NOTIFY_MS"
  expect_routes "round $round" "$T" "$tshard" "$override"
  expect_routes "round $round" "$U" "$ushard" no
done
expect_status 9

pgs_log "all checks passed"

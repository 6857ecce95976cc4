#!/usr/bin/env bash
# The shard map's catalog: pgshard-migrate init creates it (twice: the second run changes
# nothing), two pgshard processes load it and heartbeat into pgshard.proxies (status and
# status --json list both), a map change made in one transaction with a version bump and
# NOTIFY pgshard_map reaches both proxies' SHOW SHARDS within a second, a change without
# NOTIFY arrives through the periodic version check, an invalid map is refused while the
# last good one stays, and a proxy whose listener connection is killed keeps its map,
# reconnects and resumes its heartbeat. Starting fails clearly when the catalog cannot be
# reached or is invalid, and when a [table.NAME] names a table shard 0 does not have.
#
# The cluster has one shard; [shard.0] and [shard.1] both point at its primary, since the
# map only needs two shard numbers.
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"

MIG=${PGSHARD_MIGRATE_BIN:-}
[[ -n $MIG && -x $MIG ]] || pgs_fail "PGSHARD_MIGRATE_BIN '$MIG' is not an executable"
W=$PGS_WORK/$PGS_TEST_NAME
rm -rf "$W"
mkdir -p "$W"
P=$PGS_SHARD0_PRIMARY_PORT
NODE=$PGS_HOST:$P
CATDB=pgs_catalog
DSN="host=$PGS_HOST port=$P dbname=$CATDB user=$PGS_USER password=$PGS_PASSWORD"

catpsql() {
  PGPASSWORD=$PGS_PASSWORD "$PGS_PGBIN/psql" -h "$PGS_HOST" -p "$P" -U "$PGS_USER" -d "$CATDB" \
    -X -v ON_ERROR_STOP=1 -At "$@"
}

pgs_psql_direct -q -c "DROP DATABASE IF EXISTS $CATDB WITH (FORCE)" -c "CREATE DATABASE $CATDB"
pgs_on_exit "pgs_psql_direct -q -c 'DROP DATABASE IF EXISTS $CATDB WITH (FORCE)' >/dev/null 2>&1"
pgs_psql_direct -q -c "DROP TABLE IF EXISTS t_catalog_numeric" -c "CREATE TABLE t_catalog_numeric (k numeric)"
pgs_on_exit "pgs_psql_direct -q -c 'DROP TABLE IF EXISTS t_catalog_numeric' >/dev/null 2>&1"
# The key types are read from the catalog's database when there is a catalog.
catpsql -q -c "CREATE TABLE t_catalog_orders (tenant_id bigint, note text)"

# write_ini FILE [LINE...]: a config with two shards on the one primary; LINEs are added
# to [pgshard] (before the first line that opens a section) or after it.
write_ini() {
  local file=$1 line; shift
  {
    echo "[pgshard]"
    echo "listen_port = $(pgs_free_port)"
    echo "buckets = 64"
    for line in "$@"; do echo "$line"; done
    printf '[shard.0]\nprimary = %s\n[shard.1]\nprimary = %s\n' "$NODE" "$NODE"
    printf '[user.app]\npassword = %s\n' "$PGS_PASSWORD"
  } >"$file"
}

# migrate EXPECTED_RC OUTFILE ARGS...: runs pgshard-migrate, output (both streams) in OUTFILE.
migrate() {
  local want=$1 out=$2 rc=0; shift 2
  "$MIG" "$@" >"$out" 2>&1 || rc=$?
  ((rc == want)) || pgs_fail "pgshard-migrate $* exited $rc, not $want: $(cat "$out")"
}

pgs_log "pgshard-migrate: usage and errors"
write_ini "$W/migrate.ini" "catalog_dsn = $DSN"
write_ini "$W/nocatalog.ini"
migrate 0 "$W/help.out" --help
grep -q "Exit status: 0 done, 1 error" "$W/help.out" || pgs_fail "--help does not give the exit codes"
migrate 2 "$W/usage.out" -c "$W/migrate.ini"
migrate 2 "$W/usage.out" -c "$W/migrate.ini" frobnicate
migrate 2 "$W/usage.out" -c "$W/migrate.ini" init --json
migrate 1 "$W/nodsn.out" -c "$W/nocatalog.ini" init
grep -q "no catalog_dsn" "$W/nodsn.out" || pgs_fail "init without catalog_dsn: $(cat "$W/nodsn.out")"
migrate 1 "$W/badcfg.out" -c "$W/nonexistent.ini" status
grep -q "cannot open" "$W/badcfg.out" || pgs_fail "a missing config: $(cat "$W/badcfg.out")"

pgs_log "pgshard-migrate init, twice"
migrate 0 "$W/init1.out" -c "$W/migrate.ini" init
grep -q "^created: schema pgshard" "$W/init1.out" || pgs_fail "first init: $(cat "$W/init1.out")"
grep -q "^filled bucket_map: 64 buckets over 2 shards" "$W/init1.out" || pgs_fail "first init: $(cat "$W/init1.out")"
migrate 0 "$W/init2.out" -c "$W/migrate.ini" init
grep -q "^nothing to do" "$W/init2.out" || pgs_fail "second init: $(cat "$W/init2.out")"
pgs_assert_eq "64|31|31|1" "$(catpsql -F '|' -c "SELECT count(*), max(bucket) FILTER (WHERE shard = 0),
  min(bucket) FILTER (WHERE shard = 1) - 1, (SELECT version FROM pgshard.map_version) FROM pgshard.bucket_map")" \
  "bucket_map holds the default map, version 1"
write_ini "$W/other.ini" "catalog_dsn = $DSN"
sed -i 's/^buckets = 64$/buckets = 128/' "$W/other.ini"
migrate 1 "$W/init3.out" -c "$W/other.ini" init
grep -q "bucket_map holds 64 buckets .* buckets = 128" "$W/init3.out" || pgs_fail "init over another layout: $(cat "$W/init3.out")"

pgs_log "two proxies on the catalog"
MPORT=$(pgs_free_port)
common=("catalog_dsn=$DSN" buckets=64 admin_users=app '[shard.1]' "primary = $NODE"
  '[table.t_catalog_orders]' "shard_key = tenant_id"
  '[table.elsewhere.events]' "shard_key = id" "key_type = uuid"
  '[table.countries]' "omnisharded = true")
pgs_start_proxy cat1 "metrics_port=$MPORT" "${common[@]}"
PORT1=$PGS_PROXY_PORT
pgs_start_proxy cat2 "${common[@]}"
PORT2=$PGS_PROXY_PORT
grep -q "table_key.*t_catalog_orders: sharded by tenant_id (bigint, read from shard 0)" "$PGS_WORK/cat1/pgshard.log" ||
  pgs_fail "the shard key's type was not read from shard 0: $(grep table_key "$PGS_WORK/cat1/pgshard.log")"
config=$(PGS_ADMIN_PORT=$PORT1 pgs_admin -c "SHOW CONFIG")
for want in "buckets|64" "table.t_catalog_orders|shard_key tenant_id (int)" "table.elsewhere.events|shard_key id (uuid)" \
  "table.countries|omnisharded"; do
  grep -qxF "$want" <<<"$config" || pgs_fail "SHOW CONFIG lacks '$want': $config"
done
dsn_shown=$(grep '^catalog_dsn|' <<<"$config")
[[ $dsn_shown == *"dbname=$CATDB"* && $dsn_shown == *"port=$P"* && $dsn_shown != *password* ]] ||
  pgs_fail "SHOW CONFIG's catalog_dsn must name the catalog without its password: $dsn_shown"

shards() { PGS_ADMIN_PORT=$1 pgs_admin -c "SHOW SHARDS"; }
map_rows() { printf '0|%s|%s|%s||%s\n1|%s|%s|%s||%s' "$1" "$2" "$NODE" "$5" "$3" "$4" "$NODE" "$5"; }

# wait_map LABEL EXPECTED MS: both proxies' SHOW SHARDS equal EXPECTED within MS
# milliseconds, polled every 100 ms.
wait_map() {
  local label=$1 want=$2 limit_ms=$3 t0 port got
  t0=$(pgs_now_ms)
  for port in "$PORT1" "$PORT2"; do
    until got=$(shards "$port" 2>&1) && [[ $got == "$want" ]]; do
      (($(pgs_now_ms) - t0 < limit_ms)) ||
        pgs_fail "$label: the proxy on port $port shows '$got', expected '$want' (after $3 ms)"
      sleep 0.1
    done
  done
  pgs_log "$label: both proxies show it after $(($(pgs_now_ms) - t0)) ms"
}

pgs_assert_eq "$(map_rows 32 0 32 0 1)" "$(shards "$PORT1")" "SHOW SHARDS: the default map, version 1"

# status_json PYTHON-EXPR: evaluates EXPR over the parsed `status --json` document (d).
status_json() {
  "$MIG" -c "$W/migrate.ini" status --json >"$W/status.json" 2>"$W/status.err" ||
    pgs_fail "status --json failed: $(cat "$W/status.err")"
  python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$W/status.json" "$1"
}
live_ports() { status_json "sorted(int(p['id'].rsplit(':', 1)[1]) for p in d['proxies'] if p['live'])"; }
want_ports=$(python3 -c "print(sorted([$PORT1, $PORT2]))")
_both_live() { PGS_WAIT_INFO=$(live_ports); [[ $PGS_WAIT_INFO == "$want_ports" ]]; }
pgs_wait_for 5 "status --json lists both proxies as live" _both_live
pgs_assert_eq "1 64 [32, 32] [0, 0]" \
  "$(status_json "f\"{d['map_version']} {d['buckets']} {[s['buckets'] for s in d['shards']]} {[s['overrides'] for s in d['shards']]}\"")" \
  "status --json: version, buckets per shard, overrides per shard"
migrate 0 "$W/status.out" -c "$W/migrate.ini" status
grep -q "^proxies: 2 live" "$W/status.out" || pgs_fail "status: $(cat "$W/status.out")"
grep -q "^map_version 1: 64 buckets over 2 shards, 0 tenant overrides" "$W/status.out" || pgs_fail "status: $(cat "$W/status.out")"

pgs_log "a map change in one transaction with NOTIFY reaches both proxies within a second"
catpsql -q <<'SQL'
BEGIN;
UPDATE pgshard.bucket_map SET shard = 1 WHERE bucket < 4;
INSERT INTO pgshard.tenant_map VALUES ('42', 0), ('acme', 1), ('0ddba11e-0000-4000-8000-000000000000', 1);
UPDATE pgshard.map_version SET version = version + 1;
NOTIFY pgshard_map;
COMMIT;
SQL
wait_map "map_version 2" "$(map_rows 28 1 36 2 2)" 1500
# The page is read whole first: grep -q stops at its match, and under pipefail curl's
# failed write of the rest (once the page outgrew one read) would fail the check.
metrics=$(curl -sf "http://127.0.0.1:$MPORT/metrics") || pgs_fail "GET /metrics failed"
grep -qx 'pgshard_map_version 2' <<<"$metrics" || pgs_fail "pgshard_map_version is not 2"
grep -qx 'pgshard_catalog_connected 1' <<<"$metrics" || pgs_fail "pgshard_catalog_connected is not 1"
_both_report_2() {
  PGS_WAIT_INFO=$(status_json "sorted(p['map_version'] for p in d['proxies'] if p['live'])")
  [[ $PGS_WAIT_INFO == "[2, 2]" ]]
}
pgs_wait_for 3 "both proxies report map_version 2 in their heartbeat" _both_report_2
pgs_assert_eq "[('42', 0), ('0ddba11e-0000-4000-8000-000000000000', 1), ('acme', 1)]" \
  "$(status_json "sorted(((o['tenant'], o['shard']) for o in d['overrides']), key=lambda t: (t[1], t[0]))")" \
  "status --json lists the overrides"

pgs_log "a change without NOTIFY arrives through the version check"
catpsql -q -c "BEGIN" -c "UPDATE pgshard.bucket_map SET shard = 1 WHERE bucket = 4" \
  -c "UPDATE pgshard.map_version SET version = version + 1" -c "COMMIT"
wait_map "map_version 3 without NOTIFY" "$(map_rows 27 1 37 2 3)" 4000

pgs_log "an invalid map is refused; the last good one stays"
catpsql -q -c "BEGIN" -c "DELETE FROM pgshard.bucket_map WHERE bucket = 63" \
  -c "UPDATE pgshard.map_version SET version = version + 1" -c "NOTIFY pgshard_map" -c "COMMIT"
_invalid_logged() {
  [[ $(grep -l "catalog_invalid.*bucket 63 has no row" "$PGS_WORK/cat1/pgshard.log" "$PGS_WORK/cat2/pgshard.log" |
    wc -l) == 2 ]]
}
pgs_wait_for 3 "both proxies log the invalid map" _invalid_logged
pgs_assert_eq "$(map_rows 27 1 37 2 3)" "$(shards "$PORT1")" "proxy 1 keeps map_version 3"
pgs_assert_eq "$(map_rows 27 1 37 2 3)" "$(shards "$PORT2")" "proxy 2 keeps map_version 3"
pgs_assert_eq 1 "$(pgs_psql_port "$PORT1" -c "SELECT 1")" "clients are served meanwhile"
catpsql -q -c "BEGIN" -c "INSERT INTO pgshard.bucket_map VALUES (63, 1)" \
  -c "UPDATE pgshard.map_version SET version = version + 1" -c "NOTIFY pgshard_map" -c "COMMIT"
wait_map "map_version 5 after the repair" "$(map_rows 27 1 37 2 5)" 1500

pgs_log "the listener's connection is killed: the map stays, the proxies reconnect"
killed=$(catpsql -F '|' -c "SELECT count(pg_terminate_backend(pid)), now() FROM pg_stat_activity
  WHERE datname = '$CATDB' AND application_name = 'pgshard_catalog'")
T=${killed#*|}
pgs_assert_eq 2 "${killed%%|*}" "both listener connections terminated"
pgs_assert_eq "$(map_rows 27 1 37 2 5)" "$(shards "$PORT1")" "proxy 1 keeps its map without the catalog"
_lost_logged() { [[ $(grep -l "catalog_lost" "$PGS_WORK/cat1/pgshard.log" "$PGS_WORK/cat2/pgshard.log" | wc -l) == 2 ]]; }
pgs_wait_for 3 "both proxies log that the catalog connection was lost" _lost_logged
_beats_resumed() {
  PGS_WAIT_INFO=$(catpsql -c "SELECT count(*) FROM pgshard.proxies WHERE last_seen > '$T'")
  [[ $PGS_WAIT_INFO == 2 ]]
}
pgs_wait_for 6 "both proxies heartbeat again after the kill" _beats_resumed
grep -q "catalog_reconnected" "$PGS_WORK/cat1/pgshard.log" || pgs_fail "proxy 1 did not log its reconnection"
pgs_assert_eq 1 "$(grep -c "catalog_lost" "$PGS_WORK/cat1/pgshard.log")" "the loss is logged once"
catpsql -q -c "BEGIN" -c "UPDATE pgshard.bucket_map SET shard = 0 WHERE bucket = 0" \
  -c "WITH v AS (UPDATE pgshard.map_version SET version = version + 1 RETURNING version)
      SELECT pg_notify('pgshard_map', version::text) FROM v" -c "COMMIT" >/dev/null
wait_map "map_version 6 over the new connection" "$(map_rows 28 1 36 2 6)" 1500

pgs_log "SIGHUP does not change the sharding keys of a running proxy"
sed -i 's/^buckets = 64$/buckets = 128/' "$PGS_WORK/cat1/pgshard.ini"
kill -HUP "${PGS_PROXY_PIDS[cat1]}"
_restart_warned() { grep -q "reload_restart_needed.*buckets, catalog_dsn" "$PGS_WORK/cat1/pgshard.log"; }
pgs_wait_for 3 "the reload warns that buckets needs a restart" _restart_warned
grep -qx "buckets|64" <<<"$(PGS_ADMIN_PORT=$PORT1 pgs_admin -c "SHOW CONFIG")" || pgs_fail "buckets changed at reload"
pgs_assert_eq "$(map_rows 28 1 36 2 6)" "$(shards "$PORT1")" "the map is the same after the reload"

pgs_log "a stopped proxy removes its heartbeat row"
pgs_stop_proxy cat2
pgs_assert_eq "[$PORT1]" "$(status_json "[int(p['id'].rsplit(':', 1)[1]) for p in d['proxies']]")" "only proxy 1 is left"
pgs_stop_proxy cat1

pgs_log "start-up failures"
# expect_start_failure LABEL PATTERN INI: pgshard exits 1 and its log matches PATTERN.
expect_start_failure() {
  local label=$1 pattern=$2 ini=$3 rc=0
  timeout 30 "$PGSHARD_BIN" -c "$ini" >"$W/$label.log" 2>&1 </dev/null || rc=$?
  ((rc == 1)) || pgs_fail "$label: pgshard exited $rc, not 1: $(cat "$W/$label.log")"
  grep -q -- "$pattern" "$W/$label.log" || pgs_fail "$label: the log does not say '$pattern': $(cat "$W/$label.log")"
  ! grep -qE 'ERROR: (Address|Leak)Sanitizer|runtime error:' "$W/$label.log" || pgs_fail "$label: sanitizer report"
  pgs_log "$label: exit 1, $(grep -o -- "$pattern.*" "$W/$label.log" | head -n1 | cut -c1-150)"
}
write_ini "$W/closed.ini" "catalog_dsn = host=127.0.0.1 port=$(pgs_free_port) dbname=x user=$PGS_USER password=x"
expect_start_failure closed_port "startup_failed.*catalog (catalog_dsn): cannot connect:.*refused" "$W/closed.ini"
catpsql -q -c "DELETE FROM pgshard.bucket_map WHERE bucket = 7"
write_ini "$W/invalid.ini" "catalog_dsn = $DSN"
expect_start_failure invalid_catalog "catalog (catalog_dsn): bucket_map: bucket 7 has no row" "$W/invalid.ini"
catpsql -q -c "INSERT INTO pgshard.bucket_map VALUES (7, 0)"
write_ini "$W/notable.ini" "monitor_dbname = $PGS_DB" "[table.t_catalog_nosuch]" "shard_key = tenant_id"
expect_start_failure missing_table "\[table.t_catalog_nosuch\]: no table t_catalog_nosuch in database $PGS_DB.*create it, or set key_type" "$W/notable.ini"
write_ini "$W/nocolumn.ini" "monitor_dbname = $PGS_DB" "[table.public.t_catalog_numeric]" "shard_key = tenant_id"
expect_start_failure missing_column "table public.t_catalog_numeric has no column tenant_id" "$W/nocolumn.ini"
write_ini "$W/badtype.ini" "monitor_dbname = $PGS_DB" "[table.t_catalog_numeric]" "shard_key = k"
expect_start_failure bad_type "column k is of type numeric, which cannot be a shard key" "$W/badtype.ini"

pgs_psql_direct -q -c "DROP DATABASE IF EXISTS $CATDB WITH (FORCE)"
pgs_log "all catalog checks passed"

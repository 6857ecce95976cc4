#!/usr/bin/env bash
# Read/write splitting in transaction pooling, against the shared cluster with two replicas.
# `SELECT inet_server_port()` through the proxy names the node that served it, so every
# routing rule is checked by where a statement ran:
#   - autocommit reads go to the replicas (round_robin: each 35-65 % of 100 reads, none to
#     the primary); pgbench select-only traffic shows up in the replicas'
#     pg_stat_database.xact_commit, far less on the primary's;
#   - writes, DDL, every statement of a plain BEGIN ... COMMIT, FOR UPDATE / FOR SHARE,
#     nextval, advisory locks, writable CTEs, SELECT INTO, a user-defined function and a
#     multi-statement query with a write go to the primary;
#   - BEGIN READ ONLY / START TRANSACTION READ ONLY stay on one replica;
#   - /* pgshard: target=primary */ and SET pgshard.target (answered by the proxy, never
#     sent to a server) move reads to the primary, RESET pgshard.target moves them back;
#   - the extended protocol routes the same way: pgbench -M prepared (named statements) and
#     -M extended (unnamed statements) select-only traffic lands on the replicas;
#   - unknown_functions = replica sends the user-defined function to a replica;
#   - balance = weighted with weights 3 and 1 gives the heavy replica 60-90 % of 400 reads;
#   - balance = least_outstanding sends quick reads away from a replica busy with a slow one;
#   - SHOW REPLICAS and /metrics describe the nodes and count their reads.
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"

rm -rf "${PGS_WORK:?}/$PGS_TEST_NAME"
pgs_two_replicas

is_replica() { [[ $1 == "$R1" || $1 == "$R2" ]]; }
# Every line of $2 (ports) must be the primary's.
all_primary() {
  local what=$1 out=$2 line
  [[ -n $out ]] || pgs_fail "$what: no output"
  while IFS= read -r line; do
    [[ $line == "$P" ]] || pgs_fail "$what: served by $(pgs_node_name "$line") ($line), expected the primary ($P); all: ${out//$'\n'/ }"
  done <<<"$out"
  echo "ok: $what -> primary"
}
all_replica() {
  local what=$1 out=$2 line
  [[ -n $out ]] || pgs_fail "$what: no output"
  while IFS= read -r line; do
    is_replica "$line" || pgs_fail "$what: served by $(pgs_node_name "$line") ($line), expected a replica ($R1 or $R2); all: ${out//$'\n'/ }"
  done <<<"$out"
  echo "ok: $what -> replica(s) $(sort -u <<<"$out" | tr '\n' ' ')"
}
# N reads of inet_server_port() in one psql session through the proxy on $2; prints
# "primary replica1 replica2 other" counts and leaves the ports in $W/$1.out.
reads_tally() {
  local label=$1 port=$2 n=$3 i
  for ((i = 0; i < n; i++)); do echo "SELECT inet_server_port();"; done >"$W/$label.sql"
  pgs_psql_port "$port" -f "$W/$label.sql" >"$W/$label.out" || pgs_fail "$label: the reads failed"
  local np n1 n2 total
  np=$(pgs_count_lines "$W/$label.out" "$P")
  n1=$(pgs_count_lines "$W/$label.out" "$R1")
  n2=$(pgs_count_lines "$W/$label.out" "$R2")
  total=$(wc -l <"$W/$label.out")
  echo "$np $n1 $n2 $((total - np - n1 - n2))"
}

pgs_log "setup: tables, a sequence and a user-defined function on the primary"
pgs_on_exit "pgs_psql_direct -q -c 'DROP TABLE IF EXISTS t_rr, t_rr_bench, t_rr_ddl, t_rr_into' -c 'DROP SEQUENCE IF EXISTS t_rr_seq' -c 'DROP FUNCTION IF EXISTS t_rr_fn()' >/dev/null 2>&1"
PGOPTIONS='-c client_min_messages=warning' pgs_psql_direct -q \
  -c 'DROP TABLE IF EXISTS t_rr, t_rr_bench, t_rr_ddl, t_rr_into' \
  -c 'DROP SEQUENCE IF EXISTS t_rr_seq' -c 'DROP FUNCTION IF EXISTS t_rr_fn()' \
  -c 'CREATE TABLE t_rr (id bigserial PRIMARY KEY, v text NOT NULL)' \
  -c 'CREATE TABLE t_rr_bench (id int PRIMARY KEY, v int NOT NULL)' \
  -c 'INSERT INTO t_rr_bench SELECT g, g * 2 FROM generate_series(1, 1000) g' \
  -c 'CREATE SEQUENCE t_rr_seq' \
  -c "CREATE FUNCTION t_rr_fn() RETURNS int LANGUAGE sql AS 'SELECT inet_server_port()'"
replicated() {
  local r
  for r in 1 2; do
    [[ $(pgs_psql_node 0 "replica$r" -c "SELECT (SELECT count(*) FROM t_rr_bench) = 1000 AND to_regprocedure('t_rr_fn()') IS NOT NULL AND to_regclass('t_rr_seq') IS NOT NULL" 2>/dev/null) == t ]] || return 1
  done
}
pgs_wait_for 15 "the test tables did not reach both replicas" replicated

MPORT=$(pgs_free_port)
pgs_start_proxy rr admin_users=app lag_poll_ms=50 "metrics_port=$MPORT" \
  '[shard.0]' "replicas = $(pgs_replica_list 0)" "balance = round_robin"
RR=$PGS_PROXY_PORT
t0=$(pgs_now_ms)
pgs_wait_replicas_up 15 "$R1" "$R2"
pgs_log "SHOW REPLICAS shows both replicas up after $(($(pgs_now_ms) - t0)) ms"

pgs_log "SHOW REPLICAS columns"
pgs_assert_eq "shard|node|role|host|port|health|in_recovery|lag_bytes|lag_ms|circuit|weight|reads" \
  "$PGS_RCOL_HEADER" "SHOW REPLICAS columns"

pgs_log "100 autocommit reads in one session, round_robin"
read -r np n1 n2 nother <<<"$(reads_tally rr100 "$RR" 100)"
pgs_log "100 reads: primary $np, replica1 $n1, replica2 $n2, other $nother"
pgs_assert_eq 0 "$np" "autocommit reads served by the primary (count)"
pgs_assert_eq 0 "$nother" "reads with an unexpected answer (count)"
((n1 >= 35 && n1 <= 65 && n2 >= 35 && n2 <= 65)) ||
  pgs_fail "round_robin split 100 reads $n1/$n2 between the replicas, expected each 35-65"
echo "ok: round_robin split $n1/$n2"

pgs_log "pgbench select-only (simple protocol) through the proxy lands on the replicas"
printf '\\set id random(1, 1000)\nSELECT v FROM t_rr_bench WHERE id = :id;\n' >"$W/select.sql"
# Counts what the replicas and the primary committed in database app while $1 runs.
# pg_stat_database is flushed by idle backends within about a second (or later on lock
# contention): poll until both replicas show at least a fifth of the transactions.
xact_check() {
  local label=$1 b1 b2 bp d1 d2 dp want deadline; shift
  b1=$(pgs_xact_commit 0 replica1); b2=$(pgs_xact_commit 0 replica2); bp=$(pgs_xact_commit 0 primary)
  pgs_pgbench_ok "$label" proxy "$@"
  want=$((PGS_PGBENCH_TX / 5))
  ((want >= 100)) || want=100
  deadline=$(($(pgs_now_ms) + 15000))
  while :; do
    d1=$(($(pgs_xact_commit 0 replica1) - b1)); d2=$(($(pgs_xact_commit 0 replica2) - b2))
    ((d1 >= want && d2 >= want)) && break
    (($(pgs_now_ms) < deadline)) || break
    sleep 0.2
  done
  dp=$(($(pgs_xact_commit 0 primary) - bp))
  pgs_log "$label: $PGS_PGBENCH_TX transactions through the proxy; xact_commit grew by $d1 on replica1, $d2 on replica2, $dp on the primary"
  ((d1 >= want && d2 >= want)) ||
    pgs_fail "$label: the replicas committed $d1 and $d2 transactions for $PGS_PGBENCH_TX pgbench transactions (want >= $want each)"
  ((dp <= PGS_PGBENCH_TX / 10 + 50)) ||
    pgs_fail "$label: the primary committed $dp transactions during a select-only run of $PGS_PGBENCH_TX (want <= $((PGS_PGBENCH_TX / 10 + 50)))"
  echo "ok: $label served by the replicas"
}
xact_check select_simple -n -c 4 -j 2 -T 3 -f "$W/select.sql"

pgs_log "writes and DDL go to the primary"
out=$(pgs_psql -q -c "INSERT INTO t_rr(v) VALUES ('w1') RETURNING inet_server_port()")
all_primary "INSERT ... RETURNING inet_server_port()" "$out"
out=$(pgs_psql -q -c "UPDATE t_rr SET v = 'w1u' WHERE v = 'w1' RETURNING inet_server_port()")
all_primary "UPDATE ... RETURNING inet_server_port()" "$out"
pgs_assert_eq 1 "$(pgs_psql_direct -c "SELECT count(*) FROM t_rr WHERE v = 'w1u'")" "the written row is on the primary"
pgs_psql -q -c "CREATE TABLE t_rr_ddl (x int)" -c "ALTER TABLE t_rr_ddl ADD COLUMN y int" -c "CREATE INDEX ON t_rr_ddl (y)" ||
  pgs_fail "DDL through the proxy failed"
pgs_assert_eq 2 "$(pgs_psql_direct -c "SELECT count(*) FROM pg_attribute WHERE attrelid = 't_rr_ddl'::regclass AND attnum > 0")" \
  "CREATE TABLE + ALTER TABLE through the proxy ran on the primary"
pgs_psql -q -c "DROP TABLE t_rr_ddl" || pgs_fail "DROP TABLE through the proxy failed"
pgs_assert_eq "" "$(pgs_psql_direct -c "SELECT to_regclass('t_rr_ddl')")" "DROP TABLE through the proxy ran on the primary"

pgs_log "transactions"
out=$(pgs_psql -q -c "BEGIN" -c "SELECT inet_server_port()" -c "SELECT inet_server_port() FROM t_rr_bench WHERE id = 1" \
  -c "SELECT inet_server_port()" -c "COMMIT")
all_primary "every statement inside BEGIN ... COMMIT" "$out"
out=$(pgs_psql -q -c "BEGIN" -c "SELECT inet_server_port()" -c "INSERT INTO t_rr(v) VALUES ('tx') RETURNING inet_server_port()" \
  -c "SELECT inet_server_port()" -c "COMMIT")
all_primary "a read-write transaction" "$out"
for begin in "BEGIN READ ONLY" "START TRANSACTION READ ONLY"; do
  for round in 1 2; do
    out=$(pgs_psql -q -c "$begin" -c "SELECT inet_server_port()" -c "SELECT inet_server_port() FROM t_rr_bench WHERE id = 2" \
      -c "SELECT inet_server_port()" -c "SELECT inet_server_port()" -c "COMMIT")
    all_replica "$begin (round $round)" "$out"
    pgs_assert_eq 1 "$(sort -u <<<"$out" | wc -l)" "$begin: all statements on the same replica"
  done
done

pgs_log "serializable transactions and sessions go to the primary (a hot standby cannot run them)"
# Each as PostgreSQL on the primary would answer: the statements run, serializable. On a
# replica the BEGIN or the first read would fail ("cannot use serializable mode in a hot
# standby").
for begin in "BEGIN READ ONLY ISOLATION LEVEL SERIALIZABLE" \
  "START TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ ONLY, DEFERRABLE"; do
  out=$(pgs_psql -q -c "$begin" -c "SELECT inet_server_port()" -c "SHOW transaction_isolation" \
    -c "SELECT inet_server_port()" -c "COMMIT") || pgs_fail "$begin: failed: $out"
  mapfile -t L <<<"$out"
  pgs_assert_eq serializable "${L[1]:-}" "$begin: the transaction is serializable"
  all_primary "$begin" "$(printf '%s\n' "${L[0]}" "${L[2]:-}")"
done
out=$(pgs_psql -q -c "BEGIN READ ONLY" -c "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE" \
  -c "SELECT inet_server_port()" -c "SHOW transaction_isolation" -c "COMMIT") ||
  pgs_fail "BEGIN READ ONLY; SET TRANSACTION ISOLATION LEVEL SERIALIZABLE: failed: $out"
mapfile -t L <<<"$out"
pgs_assert_eq serializable "${L[1]:-}" "BEGIN READ ONLY + SET TRANSACTION ISOLATION LEVEL SERIALIZABLE"
all_primary "BEGIN READ ONLY + SET TRANSACTION ISOLATION LEVEL SERIALIZABLE" "${L[0]}"
for set in "SET default_transaction_isolation = serializable" \
  "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE"; do
  out=$(pgs_psql -q -c "$set" -c "SELECT inet_server_port()" -c "SELECT inet_server_port()" \
    -c "BEGIN READ ONLY" -c "SELECT inet_server_port()" -c "SHOW transaction_isolation" -c "COMMIT" \
    -c "RESET default_transaction_isolation" -c "SELECT inet_server_port()") || pgs_fail "$set: failed: $out"
  mapfile -t L <<<"$out"
  ((${#L[@]} == 5)) || pgs_fail "$set: expected 5 lines, got: ${out//$'\n'/ }"
  all_primary "$set: autocommit reads and BEGIN READ ONLY" "$(printf '%s\n' "${L[@]:0:3}")"
  pgs_assert_eq serializable "${L[3]}" "$set: BEGIN READ ONLY is serializable"
  all_replica "$set, then RESET default_transaction_isolation: reads" "${L[4]}"
done
out=$(PGOPTIONS='-c default_transaction_isolation=serializable' pgs_psql -q -c "SELECT inet_server_port()" \
  -c "SHOW transaction_isolation") || pgs_fail "default_transaction_isolation=serializable at startup: failed: $out"
mapfile -t L <<<"$out"
pgs_assert_eq serializable "${L[1]:-}" "default_transaction_isolation=serializable given at startup"
all_primary "default_transaction_isolation=serializable given at startup: reads" "${L[0]}"
out=$(pgs_psql -q -c "BEGIN READ ONLY ISOLATION LEVEL REPEATABLE READ" -c "SELECT inet_server_port()" -c "COMMIT")
all_replica "BEGIN READ ONLY ISOLATION LEVEL REPEATABLE READ" "$out"

pgs_log "a serializable default from ALTER DATABASE / ALTER ROLE ... SET reads on the primary"
# Set in a database of its own: the shared cluster's other tests use database app. The
# monitor reads pg_db_role_setting from the primary (every 10 polls) and logs what it found.
ISODB=t_rr_iso
pgs_psql_direct -q -c "DROP DATABASE IF EXISTS $ISODB WITH (FORCE)" -c "CREATE DATABASE $ISODB"
pgs_on_exit "pgs_psql_direct -q -c 'DROP DATABASE IF EXISTS $ISODB WITH (FORCE)' >/dev/null 2>&1"
iso_psql() {
  PGPASSWORD=$PGS_PASSWORD "$PGS_PGBIN/psql" -h "$PGS_HOST" -p "$RR" -U "$PGS_USER" -d "$ISODB" -X \
    -v ON_ERROR_STOP=1 -At "$@"
}
# iso_logged WHAT SERIALIZABLE [TIMES]: the monitor has logged that state TIMES times (1).
iso_logged() {
  local n
  n=$(grep -c "shard 0: $1 of default_transaction_isolation set by ALTER ROLE/DATABASE, $2 serializable" \
    "$PGS_WORK/rr/pgshard.log")
  ((n >= ${3:-1}))
}
pgs_psql_direct -q -c "ALTER DATABASE $ISODB SET default_transaction_isolation = 'serializable'"
pgs_wait_for 10 "the monitor saw ALTER DATABASE ... SET default_transaction_isolation" iso_logged "1 default" 1
out=$(iso_psql -q -c "SELECT inet_server_port()" -c "SELECT inet_server_port()" -c "SHOW transaction_isolation" \
  -c "BEGIN READ ONLY" -c "SELECT inet_server_port()" -c "COMMIT") || pgs_fail "ALTER DATABASE ... serializable: reads failed: $out"
mapfile -t L <<<"$out"
pgs_assert_eq serializable "${L[2]:-}" "ALTER DATABASE ... serializable: the session is serializable"
all_primary "ALTER DATABASE ... serializable: autocommit reads and BEGIN READ ONLY" "$(printf '%s\n' "${L[0]}" "${L[1]}" "${L[3]:-}")"
all_replica "the same role in database app meanwhile" "$(pgs_psql -c "SELECT inet_server_port()")"
out=$(iso_psql -q -c "SET default_transaction_isolation = 'repeatable read'" -c "SELECT inet_server_port()" \
  -c "RESET default_transaction_isolation" -c "SELECT inet_server_port()") || pgs_fail "SET over ALTER DATABASE: failed: $out"
mapfile -t L <<<"$out"
all_replica "SET default_transaction_isolation = 'repeatable read' over the database's serializable" "${L[0]}"
all_primary "RESET default_transaction_isolation: the database's serializable again" "${L[1]:-}"
# The role's setting in the database overrides the database's, as PostgreSQL applies them.
pgs_psql_direct -q -c "ALTER ROLE $PGS_USER IN DATABASE $ISODB SET default_transaction_isolation = 'repeatable read'"
pgs_wait_for 10 "the monitor saw ALTER ROLE ... IN DATABASE ... SET" iso_logged "2 defaults" 1
out=$(iso_psql -q -c "SELECT inet_server_port()" -c "SHOW transaction_isolation") || pgs_fail "ALTER ROLE IN DATABASE: failed: $out"
mapfile -t L <<<"$out"
pgs_assert_eq "repeatable read" "${L[1]:-}" "ALTER ROLE ... IN DATABASE ... repeatable read over the database's serializable"
all_replica "ALTER ROLE ... IN DATABASE ... repeatable read: reads" "${L[0]}"
pgs_psql_direct -q -c "ALTER ROLE $PGS_USER IN DATABASE $ISODB SET default_transaction_isolation = 'serializable'" \
  -c "ALTER DATABASE $ISODB RESET default_transaction_isolation"
pgs_wait_for 10 "the monitor saw ALTER ROLE ... IN DATABASE ... serializable and ALTER DATABASE ... RESET" \
  iso_logged "1 default" 1 2
out=$(iso_psql -q -c "SELECT inet_server_port()" -c "SHOW transaction_isolation") || pgs_fail "ALTER ROLE IN DATABASE serializable: failed: $out"
mapfile -t L <<<"$out"
pgs_assert_eq serializable "${L[1]:-}" "ALTER ROLE ... IN DATABASE ... serializable"
all_primary "ALTER ROLE ... IN DATABASE ... serializable: reads" "${L[0]}"
# The primary's servers of the first step logged in under the database's default: taken from
# the pool now, they are closed instead of reused.
grep -q "db=$ISODB: the role or database defaults of default_transaction_isolation changed" "$PGS_WORK/rr/pgshard.log" ||
  pgs_fail "no pooled server was closed for logging in before the defaults changed"
echo "ok: servers that logged in before the defaults changed were closed, not reused"
pgs_psql_direct -q -c "ALTER ROLE $PGS_USER IN DATABASE $ISODB RESET default_transaction_isolation"
pgs_wait_for 10 "the monitor saw ALTER ROLE ... RESET" iso_logged "0 defaults" 0
all_replica "after ALTER ROLE ... RESET: reads" "$(iso_psql -c "SELECT inet_server_port()")"

pgs_log "transactions in a sharded config (BEGIN is kept by pgshard until a statement names a shard)"
# Two shards on the same servers: pgshard keeps a BEGIN until its first statement, which must
# then open the transaction on the primary, not on a replica that refuses its later writes.
pgs_start_proxy rr_sh admin_users=app lag_poll_ms=50 '[shard.0]' "replicas = $(pgs_replica_list 0)" \
  '[shard.1]' "primary = $PGS_HOST:$P" "replicas = $(pgs_replica_list 0)"
pgs_wait_replicas_up 15 "$R1" "$R2"
out=$(pgs_psql -q -c "BEGIN" -c "SELECT inet_server_port()" -c "INSERT INTO t_rr(v) VALUES ('tx2') RETURNING inet_server_port()" \
  -c "SELECT inet_server_port()" -c "COMMIT")
all_primary "sharded config: a transaction that reads first, then writes" "$out"
out=$(pgs_psql -q -c "BEGIN READ ONLY" -c "SELECT inet_server_port()" -c "SELECT inet_server_port()" -c "COMMIT")
all_replica "sharded config: BEGIN READ ONLY" "$out"
pgs_stop_proxy rr_sh
export PGS_PROXY_PORT=$RR

pgs_log "hints and pgshard.target"
for i in 1 2 3 4; do
  out=$(pgs_psql -c "/* pgshard: target=primary */ SELECT inet_server_port()")
  all_primary "/* pgshard: target=primary */ SELECT (try $i)" "$out"
done
out=$(pgs_psql -c "SET pgshard.target = primary" -c "SELECT inet_server_port()" -c "SELECT inet_server_port()" \
  -c "SELECT inet_server_port()" -c "SELECT coalesce(current_setting('pgshard.target', true), '<unset>')" \
  -c "RESET pgshard.target" -c "SELECT inet_server_port()" -c "SELECT inet_server_port()" \
  -c "SELECT inet_server_port()" -c "SELECT inet_server_port()")
mapfile -t L <<<"$out"
((${#L[@]} == 10)) || pgs_fail "SET/RESET pgshard.target session: expected 10 lines, got: ${out//$'\n'/ }"
pgs_assert_eq SET "${L[0]}" "SET pgshard.target = primary is answered SET"
all_primary "reads after SET pgshard.target = primary" "$(printf '%s\n' "${L[@]:1:3}")"
[[ ${L[4]} != primary ]] || pgs_fail "SET pgshard.target reached a server: current_setting('pgshard.target') = '${L[4]}' there"
echo "ok: SET pgshard.target was not sent to a server (current_setting there: '${L[4]}')"
pgs_assert_eq RESET "${L[5]}" "RESET pgshard.target is answered RESET"
all_replica "reads after RESET pgshard.target" "$(printf '%s\n' "${L[@]:6:4}")"
out=$(pgs_psql -c "SET pgshard.target = replica" -c "SELECT inet_server_port()" -c "SELECT inet_server_port()" \
  -c "SET pgshard.target = any" -c "SELECT 1")
mapfile -t L <<<"$out"
pgs_assert_eq "SET|SET|1" "${L[0]}|${L[3]}|${L[4]}" "SET pgshard.target = replica / any answered SET"
all_replica "reads after SET pgshard.target = replica" "$(printf '%s\n' "${L[@]:1:2}")"

# Drivers such as pgjdbc send every statement as an unnamed Parse/Bind/Execute.
pgs_log "SET/RESET pgshard.target over the extended protocol"
out=$(/usr/bin/python3 - "$PGS_PROXY_PORT" "$PGS_PASSWORD" <<'EOF'
import sys
import psycopg
c = psycopg.connect(host="127.0.0.1", port=int(sys.argv[1]), user="app", password=sys.argv[2], dbname="app",
                    autocommit=True)
def ext(sql):  # PQexecParams: always Parse/Bind/Describe/Execute/Sync
    r = c.pgconn.exec_params(sql.encode(), [])
    return (r.command_status or b"").decode() + ("|" + r.get_value(0, 0).decode() if r.ntuples else "")
print(ext("SET pgshard.target = primary"))
for _ in range(3):
    print(ext("SELECT inet_server_port()").split("|")[1])
print(ext("RESET pgshard.target"))
for _ in range(4):
    print(ext("SELECT inet_server_port()").split("|")[1])
bad = c.pgconn.exec_params(b"SET pgshard.target = bogus", [])
print(bad.error_field(psycopg.pq.DiagnosticField.SQLSTATE).decode())
EOF
)
mapfile -t L <<<"$out"
((${#L[@]} == 10)) || pgs_fail "extended SET/RESET pgshard.target: expected 10 lines, got: ${out//$'\n'/ }"
pgs_assert_eq "SET|RESET" "${L[0]}|${L[4]}" "extended SET/RESET pgshard.target answered SET/RESET"
all_primary "extended reads after SET pgshard.target = primary" "$(printf '%s\n' "${L[@]:1:3}")"
all_replica "extended reads after RESET pgshard.target" "$(printf '%s\n' "${L[@]:5:4}")"
pgs_assert_eq 22023 "${L[9]}" "extended SET pgshard.target = bogus fails with 22023"

pgs_log "reads that must run on the primary"
for i in 1 2 3; do
  all_primary "SELECT ... FOR UPDATE (try $i)" "$(pgs_psql -c "SELECT inet_server_port() FROM t_rr_bench WHERE id = 3 FOR UPDATE")"
  all_primary "SELECT ... FOR SHARE (try $i)" "$(pgs_psql -c "SELECT inet_server_port() FROM t_rr_bench WHERE id = 3 FOR SHARE")"
  all_primary "nextval (try $i)" "$(pgs_psql -c "SELECT inet_server_port() FROM (SELECT nextval('t_rr_seq')) s")"
  all_primary "setval (try $i)" "$(pgs_psql -c "SELECT inet_server_port() FROM (SELECT setval('t_rr_seq', 100)) s")"
  all_primary "pg_advisory_xact_lock (try $i)" "$(pgs_psql -c "SELECT inet_server_port() FROM (SELECT pg_advisory_xact_lock(4242)) s")"
  all_primary "writable CTE (try $i)" "$(pgs_psql -c "WITH w AS (INSERT INTO t_rr(v) VALUES ('cte') RETURNING id) SELECT inet_server_port() FROM w")"
  all_primary "user-defined function t_rr_fn() (try $i)" "$(pgs_psql -c "SELECT t_rr_fn()")"
done
pgs_psql -q -c "SELECT 1 AS x INTO t_rr_into" || pgs_fail "SELECT INTO through the proxy failed"
pgs_assert_eq 1 "$(pgs_psql_direct -c "SELECT count(*) FROM t_rr_into")" "SELECT INTO ran on the primary"
pgs_psql -q -c "SELECT 1; INSERT INTO t_rr(v) VALUES ('multi-' || inet_server_port())" >/dev/null ||
  pgs_fail "SELECT 1; INSERT ... (one simple query) through the proxy failed"
pgs_assert_eq "multi-$P" "$(pgs_psql_direct -c "SELECT v FROM t_rr WHERE v LIKE 'multi-%'")" \
  "SELECT 1; INSERT ... ran on the primary"
pgs_assert_eq 1 "$(pgs_psql_direct -c "SELECT count(*) FROM t_rr WHERE v = 'multi-$P'")" "the multi-statement INSERT inserted once"

pgs_log "extended protocol: pgbench -M prepared select-only lands on the replicas"
xact_check select_prepared -n -M prepared -c 4 -j 2 -T 3 -f "$W/select.sql"

pgs_log "SHOW REPLICAS"
rows=$(pgs_admin -c "SHOW REPLICAS")
echo "$rows"
pgs_assert_eq 3 "$(wc -l <<<"$rows")" "SHOW REPLICAS: one row per node"
pgs_assert_eq "primary|up|f|closed" "$(for c in role health in_recovery circuit; do pgs_replica_field "$rows" "$P" $c; done | paste -sd'|')" \
  "SHOW REPLICAS: primary row"
for r in "$R1" "$R2"; do
  pgs_assert_eq "replica|up|t|closed|1|0|$PGS_HOST" \
    "$(for c in role health in_recovery circuit weight shard host; do pgs_replica_field "$rows" "$r" $c; done | paste -sd'|')" \
    "SHOW REPLICAS: replica on port $r"
  for c in lag_bytes lag_ms reads node; do
    v=$(pgs_replica_field "$rows" "$r" $c)
    [[ $v =~ ^[0-9]+$ ]] || pgs_fail "SHOW REPLICAS: $c of the replica on port $r is '$v'"
  done
  v=$(pgs_replica_field "$rows" "$r" reads)
  ((v >= 100)) || pgs_fail "SHOW REPLICAS: reads of the replica on port $r is $v after thousands of reads"
  echo "ok: replica on port $r: reads $v, lag $(pgs_replica_field "$rows" "$r" lag_bytes) bytes / $(pgs_replica_field "$rows" "$r" lag_ms) ms"
done
n1=$(pgs_replica_field "$rows" "$R1" node); n2=$(pgs_replica_field "$rows" "$R2" node)

pgs_log "/metrics"
metrics=$(curl -sf "http://127.0.0.1:$MPORT/metrics") || pgs_fail "/metrics did not answer"
metric() { # NAME NODE: the value of NAME{...shard="0"...node="NODE"...}
  awk -v name="$1" -v node="$2" 'index($0, name "{") == 1 && index($0, "shard=\"0\"") && index($0, "node=\"" node "\"") { print $NF; exit }' <<<"$metrics"
}
for n in "$n1" "$n2"; do
  v=$(metric pgshard_node_up "$n")
  pgs_assert_eq 1 "$v" "pgshard_node_up of node $n"
  grep -q "^pgshard_node_up{[^}]*node=\"$n\"[^}]*role=\"replica\"" <<<"$metrics" ||
    grep -q "^pgshard_node_up{[^}]*role=\"replica\"[^}]*node=\"$n\"" <<<"$metrics" ||
    pgs_fail "pgshard_node_up of node $n has no role=\"replica\" label: $(grep '^pgshard_node_up' <<<"$metrics")"
  for m in pgshard_replica_lag_bytes pgshard_replica_lag_ms pgshard_node_circuit_open; do
    v=$(metric $m "$n")
    [[ $v =~ ^[0-9.e+]+$ ]] || pgs_fail "$m for node $n missing or not a number ('$v'): $(grep "^$m" <<<"$metrics")"
  done
  pgs_assert_eq 0 "$(metric pgshard_node_circuit_open "$n")" "pgshard_node_circuit_open of node $n"
  v=$(metric pgshard_node_reads_total "$n")
  [[ $v =~ ^[0-9]+$ ]] && ((v >= 100)) || pgs_fail "pgshard_node_reads_total of node $n is '$v'"
  echo "ok: metrics of node $n: reads_total $v, lag_bytes $(metric pgshard_replica_lag_bytes "$n"), lag_ms $(metric pgshard_replica_lag_ms "$n")"
done
pgs_stop_proxy rr

pgs_log "unknown_functions = replica sends a user-defined function to a replica"
pgs_start_proxy rr_uf unknown_functions=replica admin_users=app lag_poll_ms=50 \
  '[shard.0]' "replicas = $(pgs_replica_list 0)"
pgs_wait_replicas_up 15 "$R1" "$R2"
for i in 1 2 3 4; do
  all_replica "t_rr_fn() with unknown_functions = replica (try $i)" "$(pgs_psql -c "SELECT t_rr_fn()")"
done
all_primary "FOR UPDATE with unknown_functions = replica" "$(pgs_psql -c "SELECT inet_server_port() FROM t_rr_bench WHERE id = 3 FOR UPDATE")"
pgs_stop_proxy rr_uf

pgs_log "balance = weighted, weights 3 and 1"
pgs_start_proxy rr_w admin_users=app lag_poll_ms=50 \
  '[shard.0]' "replicas = $PGS_HOST:$R1@3, $PGS_HOST:$R2@1" "balance = weighted"
pgs_wait_replicas_up 15 "$R1" "$R2"
rows=$(pgs_admin -c "SHOW REPLICAS")
pgs_assert_eq "3|1" "$(pgs_replica_field "$rows" "$R1" weight)|$(pgs_replica_field "$rows" "$R2" weight)" "SHOW REPLICAS weights"
read -r np n1 n2 nother <<<"$(reads_tally weighted "$PGS_PROXY_PORT" 400)"
pgs_log "400 reads, weighted 3:1: primary $np, replica1 $n1 ($((n1 * 100 / 400)) %), replica2 $n2, other $nother"
pgs_assert_eq 0 "$np" "weighted: reads served by the primary (count)"
((n1 >= 240 && n1 <= 360 && n1 + n2 == 400)) ||
  pgs_fail "weighted 3:1 gave replica1 $n1 and replica2 $n2 of 400 reads; expected replica1 60-90 %"
echo "ok: weighted split $n1/$n2"
pgs_stop_proxy rr_w

# One worker, so the slow read's server is counted where the quick reads are routed.
pgs_log "balance = least_outstanding: while one replica runs a slow read, quick reads go to the other"
pgs_start_proxy rr_lo admin_users=app lag_poll_ms=50 workers=1 '[shard.0]' "replicas = $(pgs_replica_list 0)" \
  "balance = least_outstanding"
pgs_wait_replicas_up 15 "$R1" "$R2"
pgs_psql -c "SELECT inet_server_port() FROM (SELECT pg_sleep(6)) s" >"$W/slow.out" 2>&1 &
SLOW=$!
pgs_on_exit "kill $SLOW 2>/dev/null; wait $SLOW 2>/dev/null"
sleeping_on() {
  [[ -n $(pgs_cluster psql 0 "$1" -- -At -c "SELECT 1 FROM pg_stat_activity WHERE query LIKE '%pg_sleep(6)%' AND pid <> pg_backend_pid()" 2>/dev/null) ]]
}
busy=""
for ((i = 0; i < 40; i++)); do
  sleep 0.05
  if sleeping_on replica1; then busy=$R1; break; fi
  if sleeping_on replica2; then busy=$R2; break; fi
done
[[ -n $busy ]] || pgs_fail "least_outstanding: the slow read was not seen running on a replica"
free=$R1; [[ $busy == "$R1" ]] && free=$R2
read -r np n1 n2 nother <<<"$(reads_tally least_outstanding "$PGS_PROXY_PORT" 20)"
pgs_log "20 quick reads while $(pgs_node_name "$busy") runs the slow one: replica1 $n1, replica2 $n2, primary $np"
nfree=$n1; [[ $free == "$R2" ]] && nfree=$n2
pgs_assert_eq 20 "$nfree" "least_outstanding: quick reads served by the idle replica $(pgs_node_name "$free")"
wait "$SLOW" || pgs_fail "the slow read failed: $(cat "$W/slow.out")"
pgs_assert_eq "$busy" "$(cat "$W/slow.out")" "the slow read ran on the busy replica"
pgs_stop_proxy rr_lo

pgs_log "extended protocol with unnamed statements: pgbench -M extended select-only lands on the replicas"
pgs_start_proxy rr_ext admin_users=app lag_poll_ms=50 '[shard.0]' "replicas = $(pgs_replica_list 0)"
pgs_wait_replicas_up 15 "$R1" "$R2"
printf 'SELECT inet_server_port();\n' >"$W/port.sql"
pgs_pgbench_ok extended_probe proxy -n -M extended -c 1 -t 20 -f "$W/port.sql"
rows=$(pgs_admin -c "SHOW REPLICAS")
pgs_assert_eq 20 "$(($(pgs_replica_field "$rows" "$R1" reads) + $(pgs_replica_field "$rows" "$R2" reads)))" \
  "reads served by the replicas (SHOW REPLICAS) for 20 pgbench -M extended reads"
xact_check select_extended -n -M extended -c 4 -j 2 -T 3 -f "$W/select.sql"
pgs_stop_proxy rr_ext

pgs_log "all replica read checks passed"

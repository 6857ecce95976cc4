#!/usr/bin/env bash
# Routing by tenant key over two shards, on a cluster of its own (2 shards, each a primary
# and a streaming replica), with the default map (no catalog): shard s owns the buckets b
# with b * 2 / 1024 = s, bucket = hashint8extended(tenant_id, 0) & 1023.
#   - rows inserted through pgshard land on the shard the map names (checked on each shard
#     with the SQL bucket expression), both shards get rows, none is lost;
#   - point reads, IN lists on one shard, UPDATE/DELETE ... RETURNING by key, multi-row
#     INSERTs on one shard; pgbench scripts with the key as a bind parameter (-M extended
#     and -M prepared) with no failed transaction;
#   - keyless queries, IN lists and INSERTs spanning shards, and key updates are refused
#     with 0A000 and a message naming the table;
#   - BEGIN waits for the first statement that names a shard; a statement for another shard
#     in the same transaction fails with 0A000 and nothing reaches either shard;
#   - named statements are bound by their plan, an unnamed Parse whose Bind comes in a later
#     write or segment goes with the Bind (tests/drivers/sharding/wire.py);
#   - SET pgshard.tenant, SET pgshard.shard and the tenant hint route keyless statements;
#     tables not listed live on default_shard; omnisharded tables are read from any shard.
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"

W=$PGS_WORK/$PGS_TEST_NAME
SDIR=$PGS_WORK/sharding-cluster
rm -rf "$W"
mkdir -p "$W"

pgs_own_cluster "$SDIR" 2 1

schema='CREATE TABLE orders (tenant_id bigint NOT NULL, id bigint NOT NULL, amount int NOT NULL,
          PRIMARY KEY (tenant_id, id));
        CREATE TABLE countries (code text PRIMARY KEY, name text NOT NULL);
        INSERT INTO countries VALUES ($$fr$$, $$France$$), ($$de$$, $$Germany$$);
        CREATE TABLE audit (id serial PRIMARY KEY, note text NOT NULL);'
for k in 0 1; do
  pgs_psql_node "$k" primary -q -c "$schema" || pgs_fail "schema on shard $k"
done

# Without replicas, so that every read here sees the writes of the clients before it (with
# replicas, a read may be up to max_lag_ms behind another client's writes); a second proxy
# below checks the read/write split per shard.
sharded=('[shard.1]' "primary = $PGS_HOST:$PGS_SHARD1_PRIMARY_PORT" '[table.orders]' 'shard_key = tenant_id'
  '[table.countries]' 'omnisharded = true')
pgs_start_proxy shard workers=2 pool_size=4 monitor_dbname=app admin_users=app "${sharded[@]}"
SHARD_PORT=$PGS_PROXY_PORT

# The shard the default map gives a tenant, computed by the server itself.
shard_of() { pgs_psql_node 0 primary -c "SELECT (hashint8extended($1::bigint, 0) & 1023) * 2 / 1024"; }

# A query through the proxy that must fail with SQLSTATE $1 and a message matching $2.
expect_error() {
  local state=$1 pattern=$2 sql=$3 out
  if out=$(PGPASSWORD=$PGS_PASSWORD "$PGS_PGBIN/psql" -h "$PGS_HOST" -p "$PGS_PROXY_PORT" -U "$PGS_USER" \
    -d "$PGS_DB" -X -At -v ON_ERROR_STOP=1 -v VERBOSITY=verbose -c "$sql" 2>&1); then
    pgs_fail "expected $state for: $sql (got: $out)"
  fi
  [[ $out == *"$state"* ]] || pgs_fail "expected SQLSTATE $state for: $sql (got: $out)"
  [[ $out =~ $pattern ]] || pgs_fail "expected a message matching '$pattern' for: $sql (got: $out)"
}

pgs_log "150 rows for 50 tenants inserted through pgshard, one statement per tenant"
sql=""
for t in $(seq 1 50); do
  sql+="INSERT INTO orders (tenant_id, id, amount) VALUES ($t, 1, $t), ($t, 2, $((t * 2))), ($t, 3, $((t * 3)));"$'\n'
done
printf '%s' "$sql" | pgs_psql -q -f - || pgs_fail "inserts through pgshard failed"

total=0
for k in 0 1; do
  n=$(pgs_psql_node "$k" primary -c "SELECT count(*) FROM orders")
  wrong=$(pgs_psql_node "$k" primary -c \
    "SELECT count(*) FROM orders WHERE (hashint8extended(tenant_id, 0) & 1023) * 2 / 1024 <> $k")
  pgs_assert_eq 0 "$wrong" "rows on shard $k that the map places elsewhere"
  ((n > 0)) || pgs_fail "shard $k got no row"
  total=$((total + n))
done
pgs_assert_eq 150 "$total" "rows over both shards"
echo "ok: 150 rows, each on the shard the map names"

# Two tenants on different shards.
t0=""
t1=""
for t in $(seq 1 50); do
  s=$(shard_of "$t")
  [[ $s == 0 && -z $t0 ]] && t0=$t
  [[ $s == 1 && -z $t1 ]] && t1=$t
done
[[ -n $t0 && -n $t1 ]] || pgs_fail "no tenant on each shard among 1..50"
pgs_log "tenant $t0 lives on shard 0, tenant $t1 on shard 1"

pgs_log "point reads, IN on one shard, UPDATE/DELETE RETURNING by key"
for t in 3 17 $t0 $t1 42; do
  pgs_assert_eq $((t * 6)) "$(pgs_psql -c "SELECT sum(amount) FROM orders WHERE tenant_id = $t")" "sum of tenant $t"
done
same=""
for t in $(seq 1 50); do [[ $t != "$t1" && $(shard_of "$t") == 1 ]] && { same=$t; break; }; done
pgs_assert_eq 6 "$(pgs_psql -c "SELECT count(*) FROM orders WHERE tenant_id IN ($t1, $same)")" "IN list on shard 1"
pgs_assert_eq "$((t1 * 2 + 1))" \
  "$(pgs_psql -c "UPDATE orders SET amount = amount + 1 WHERE tenant_id = $t1 AND id = 2 RETURNING amount" | head -1)" \
  "UPDATE ... RETURNING"
pgs_assert_eq "$((t1 * 2 + 1))" "$(pgs_psql_node 1 primary -c "SELECT amount FROM orders WHERE tenant_id = $t1 AND id = 2")" \
  "the update reached shard 1"
pgs_assert_eq 3 "$(pgs_psql -c "DELETE FROM orders WHERE tenant_id = '$t0' AND id = 3 RETURNING id" | head -1)" "DELETE ... RETURNING"
pgs_assert_eq 0 "$(pgs_psql_node 0 primary -c "SELECT count(*) FROM orders WHERE tenant_id = $t0 AND id = 3")" \
  "the delete reached shard 0"
pgs_psql -q -c "INSERT INTO orders (tenant_id, id, amount) VALUES ($t1, 10, 1), ($same, 10, 1)" || pgs_fail "multi-row INSERT on one shard"
pgs_assert_eq 2 "$(pgs_psql_node 1 primary -c "SELECT count(*) FROM orders WHERE id = 10")" "multi-row INSERT on shard 1"
echo "ok: keyed reads and writes"

pgs_log "refusals: keyless, spanning, key update"
# A read with no key, or keys of both shards, runs on both and is merged (on the primaries
# here, so that it counts what was just written).
direct_count() {
  echo $(( $(pgs_psql_node 0 primary -c "SELECT count(*) FROM orders $1") +
           $(pgs_psql_node 1 primary -c "SELECT count(*) FROM orders $1") ))
}
pgs_assert_eq "$(direct_count "")" "$(pgs_psql -c "/* pgshard: target=primary */ SELECT count(*) FROM orders")" \
  "a keyless count runs on both shards"
pgs_assert_eq "$(direct_count "WHERE tenant_id IN ($t0, $t1)")" \
  "$(pgs_psql -c "/* pgshard: target=primary */ SELECT count(*) FROM orders WHERE tenant_id IN ($t0, $t1)")" \
  "an IN list over both shards runs on both"
expect_error 0A000 'other than on their shard key' "SELECT count(*) FROM orders a JOIN orders b ON a.id = b.id"
expect_error 0A000 'different shards' "INSERT INTO orders (tenant_id, id, amount) VALUES ($t0, 20, 1), ($t1, 20, 1)"
expect_error 0A000 'may not change the shard key' "UPDATE orders SET tenant_id = 5 WHERE tenant_id = $t0"
expect_error 22P02 'invalid shard key' "SELECT * FROM orders WHERE tenant_id = 'x'"
pgs_assert_eq 0 "$(pgs_psql_node 0 primary -c "SELECT count(*) FROM orders WHERE id = 20")" "nothing of the refused INSERT on shard 0"
pgs_assert_eq 0 "$(pgs_psql_node 1 primary -c "SELECT count(*) FROM orders WHERE id = 20")" "nothing of the refused INSERT on shard 1"
echo "ok: refused with 0A000 naming the table"

pgs_log "transactions: BEGIN waits for a shard; a second shard is refused"
out=$(pgs_psql -c "BEGIN" -c "INSERT INTO orders (tenant_id, id, amount) VALUES ($t1, 30, 5)" -c "SELECT sum(amount) FROM orders WHERE tenant_id = $t1 AND id = 30" -c "COMMIT")
[[ $out == *5* ]] || pgs_fail "transaction on shard 1: $out"
pgs_assert_eq 1 "$(pgs_psql_node 1 primary -c "SELECT count(*) FROM orders WHERE id = 30")" "committed transaction on shard 1"
pgs_assert_eq 0 "$(pgs_psql_node 0 primary -c "SELECT count(*) FROM orders WHERE id = 30")" "nothing of it on shard 0"
if out=$(pgs_psql -c "BEGIN" -c "INSERT INTO orders (tenant_id, id, amount) VALUES ($t0, 31, 5)" \
  -c "INSERT INTO orders (tenant_id, id, amount) VALUES ($t1, 31, 5)" -c "COMMIT" 2>&1); then
  pgs_fail "a transaction over two shards went through: $out"
fi
[[ $out == *"cannot join it"* ]] || pgs_fail "cross-shard refusal: $out"
pgs_assert_eq 0 "$(pgs_psql_node 0 primary -c "SELECT count(*) FROM orders WHERE id = 31")" "the first shard rolled back"
pgs_assert_eq 0 "$(pgs_psql_node 1 primary -c "SELECT count(*) FROM orders WHERE id = 31")" "nothing reached the second shard"
out=$(pgs_psql -c "BEGIN" -c "COMMIT")
pgs_assert_eq "BEGIN COMMIT" "$(echo $out)" "an empty transaction, answered by pgshard"
echo "ok: one shard per transaction"

pgs_log "a session pinned by session state on one shard cannot run on another until it lets go"
out=$(PGPASSWORD=$PGS_PASSWORD "$PGS_PGBIN/psql" -h "$PGS_HOST" -p "$PGS_PROXY_PORT" -U "$PGS_USER" -d "$PGS_DB" \
  -X -At -c "SELECT pg_advisory_lock(5) IS NULL" -c "SELECT count(*) FROM orders WHERE tenant_id = $t1" \
  -c "SELECT pg_advisory_unlock_all() IS NULL" -c "SELECT count(*) > 0 FROM orders WHERE tenant_id = $t1" 2>&1)
[[ $out == *"keeps its server on shard 0"*"advisory_lock"* ]] || pgs_fail "pinned session on another shard: $out"
[[ $out == *$'\nt' ]] || pgs_fail "the session did not reach shard 1 once unpinned: $out"
echo "ok: a pinned session stays on its shard until it lets go"

pgs_log "SET pgshard.tenant / pgshard.shard and the tenant hint"
n1=$(pgs_psql_node 1 primary -c "SELECT count(*) FROM orders")
n0=$(pgs_psql_node 0 primary -c "SELECT count(*) FROM orders")
pgs_assert_eq "$n1" "$(pgs_psql -c "SET pgshard.tenant = $t1" -c "SELECT count(*) FROM orders" | tail -1)" "SET pgshard.tenant"
pgs_assert_eq "$n0" "$(pgs_psql -c "SET pgshard.shard = 0" -c "SELECT count(*) FROM orders" | tail -1)" "SET pgshard.shard = 0"
pgs_assert_eq "$n1" "$(pgs_psql -c "SET pgshard.shard = 1" -c "SELECT count(*) FROM orders" | tail -1)" "SET pgshard.shard = 1"
pgs_assert_eq "$n1" "$(pgs_psql -c "/* pgshard: tenant=$t1 */ SELECT count(*) FROM orders")" "tenant hint"
expect_error 22023 'pgshard.shard' "SET pgshard.shard = 7"
echo "ok: session tenant, pinned shard, hint"

pgs_log "unlisted tables on default_shard, omnisharded tables read anywhere"
pgs_psql -q -c "INSERT INTO audit (note) VALUES ('x')"
pgs_assert_eq 1 "$(pgs_psql_node 0 primary -c "SELECT count(*) FROM audit")" "unlisted table on shard 0"
pgs_assert_eq 0 "$(pgs_psql_node 1 primary -c "SELECT count(*) FROM audit")" "unlisted table not on shard 1"
pgs_assert_eq 2 "$(pgs_psql -c "SELECT count(*) FROM countries")" "omnisharded read"
pgs_assert_eq "INSERT 0 1" "$(pgs_psql -c "INSERT INTO countries VALUES ('it', 'Italy')")" "omnisharded write, answered once"
for k in 0 1; do
  pgs_assert_eq 1 "$(pgs_psql_node "$k" primary -c "SELECT count(*) FROM countries WHERE code = 'it'")" \
    "the omnisharded write reached shard $k"
done
echo "ok: default shard and omnisharded"

pgs_log "SHOW ROUTE and SHOW SHARDS on the admin console"
admin_q() { PGPASSWORD=$PGS_PASSWORD "$PGS_PGBIN/psql" -h "$PGS_HOST" -p "$PGS_PROXY_PORT" -U "$PGS_USER" -d pgshard -X -At -c "$1"; }
route=$(admin_q "SHOW ROUTE SELECT * FROM orders WHERE tenant_id = $t1")
bucket=$(pgs_psql_node 0 primary -c "SELECT hashint8extended($t1, 0) & 1023")
[[ $route == 1\|*\|key\|$t1\|$bucket\|no\|read ]] || pgs_fail "SHOW ROUTE keyed read: $route"
route=$(admin_q "SHOW ROUTE SELECT id, amount FROM orders ORDER BY amount DESC LIMIT 5")
# The hidden third column tells the merge the sort key's collation (parser/scatter.c).
[[ $route == 'all|'*'|all||||read on every shard: SELECT id, amount, pg_catalog.pg_collation_for('*') AS pgshard_coll_3 FROM orders ORDER BY amount DESC LIMIT 5; merge: '*'limit 5'*'hide 3-3'* ]] ||
  pgs_fail "SHOW ROUTE keyless: $route"
route=$(admin_q "SHOW ROUTE SELECT * FROM orders a JOIN orders b ON a.id = b.id")
[[ $route == '||refused||||0A000: pgshard: a query across shards joins sharded tables'* ]] ||
  pgs_fail "SHOW ROUTE keyless join off the key: $route"
shards=$(admin_q "SHOW SHARDS")
[[ $(echo "$shards" | cut -d'|' -f1,2 | tr '\n' ' ') == "0|512 1|512 " ]] || pgs_fail "SHOW SHARDS: $shards"
echo "ok: SHOW ROUTE and SHOW SHARDS"

pgs_log "read/write split per shard: a write on shard 1 leaves this client's reads on shard 0 to its replica"
pgs_start_proxy shardrep workers=2 pool_size=4 monitor_dbname=app admin_users=app "${sharded[@]}" \
  '[shard.0]' "replicas = $PGS_HOST:$PGS_SHARD0_REPLICA1_PORT" \
  '[shard.1]' "replicas = $PGS_HOST:$PGS_SHARD1_REPLICA1_PORT"
pgs_wait_replicas_up 15 "$PGS_SHARD0_REPLICA1_PORT" "$PGS_SHARD1_REPLICA1_PORT"
out=$(pgs_psql -c "INSERT INTO orders (tenant_id, id, amount) VALUES ($t1, 40, 7)" \
  -c "SELECT inet_server_port() FROM orders WHERE tenant_id = $t0 LIMIT 1" \
  -c "SELECT count(*) || ':' || inet_server_port() FROM orders WHERE tenant_id = $t1 AND id = 40" | tail -2)
read -r -d '' p0 own <<<"$out" || true
pgs_assert_eq "$PGS_SHARD0_REPLICA1_PORT" "$p0" "a read on shard 0 right after a write on shard 1: shard 0's replica"
[[ $own == "1:$PGS_SHARD1_PRIMARY_PORT" || $own == "1:$PGS_SHARD1_REPLICA1_PORT" ]] ||
  pgs_fail "read-your-writes on shard 1: '$own' (the row, from shard 1's primary or a caught-up replica)"
echo "ok: read-your-writes per shard"
pgs_stop_proxy shardrep
PGS_PROXY_PORT=$SHARD_PORT

pgs_log "pgbench with the key as a bind parameter (-M extended, -M prepared)"
cat >"$W/point.sql" <<'EOF'
\set t random(1, 50)
SELECT sum(amount) FROM orders WHERE tenant_id = :t;
UPDATE orders SET amount = amount + 1 WHERE tenant_id = :t AND id = 1;
EOF
# Each UPDATE that reached the tenant's shard adds one; one sent elsewhere would find no row.
id1_sum() {
  echo $(($(pgs_psql_node 0 primary -c "SELECT coalesce(sum(amount), 0) FROM orders WHERE id = 1") +
    $(pgs_psql_node 1 primary -c "SELECT coalesce(sum(amount), 0) FROM orders WHERE id = 1")))
}
for mode in simple extended prepared; do
  before=$(id1_sum)
  pgs_pgbench_ok "$mode" proxy -n -M "$mode" -c 4 -j 2 -t 200 -f "$W/point.sql"
  pgs_assert_eq "$((before + PGS_PGBENCH_TX))" "$(id1_sum)" "pgbench -M $mode: every keyed UPDATE found its row"
  echo "ok: pgbench -M $mode: $PGS_PGBENCH_TX transactions, none failed, each on its tenant's shard"
done

pgs_log "drivers with the key as a bind parameter: psycopg 3 (text, binary, prepared), node-postgres, pgjdbc"
# Each driver prints "sum TENANT HOW VALUE" (read on the primary: a replica may lag up to
# max_lag_ms behind the writes of the pgbench runs); every value must be that tenant's sum on its own
# shard, and the rows it wrote (id ID, amount 1, then 2 in a transaction) must be there.
check_sums() { # file label
  local n=0 t how v want
  while read -r _ t how v; do
    want=$(pgs_psql_node "$(shard_of "$t")" primary -c "SELECT coalesce(sum(amount), 0) FROM orders WHERE tenant_id = $t")
    # The driver wrote its own rows after reading (but before its pipelined reads): subtract
    # them from today's sum.
    [[ $how == pipelined ]] || want=$((want - $(pgs_psql_node "$(shard_of "$t")" primary -c \
      "SELECT coalesce(sum(amount), 0) FROM orders WHERE tenant_id = $t AND id = ANY('{$3}')")))
    pgs_assert_eq "$want" "$v" "$2: sum of tenant $t ($how)"
    n=$((n + 1))
  done < <(grep '^sum ' "$1")
  ((n > 0)) || pgs_fail "$2 printed no sum: $(cat "$1")"
  grep -qx 'RESULT ok' "$1" || pgs_fail "$2 did not finish: $(cat "$1")"
}
check_rows() { # label expected-sum ids
  local t k
  for t in "$t0" "$t1"; do
    k=$(shard_of "$t")
    pgs_assert_eq "$2" "$(pgs_psql_node "$k" primary -c \
      "SELECT coalesce(sum(amount), 0) FROM orders WHERE tenant_id = $t AND id = ANY('{$3}')")" \
      "$1: rows of tenant $t on its shard $k"
    pgs_assert_eq 0 "$(pgs_psql_node $((1 - k)) primary -c \
      "SELECT count(*) FROM orders WHERE tenant_id = $t AND id = ANY('{$3}')")" \
      "$1: no row of tenant $t on shard $((1 - k))"
  done
}
/usr/bin/python3 "$PGS_SRC/tests/drivers/sharding/keys.py" "$PGS_PROXY_PORT" "$PGS_USER" "$PGS_PASSWORD" "$PGS_DB" \
  "$t0" "$t1" >"$W/psycopg.out" 2>&1 || pgs_fail "psycopg: $(tail -5 "$W/psycopg.out")"
check_sums "$W/psycopg.out" psycopg "50,51"
check_rows psycopg 3 "50,51"
grep -q '^cross .*cannot join it' "$W/psycopg.out" || pgs_fail "psycopg: a cross-shard transaction: $(grep cross "$W/psycopg.out")"
for k in 0 1; do
  pgs_assert_eq 0 "$(pgs_psql_node "$k" primary -c "SELECT count(*) FROM orders WHERE id = 52")" \
    "psycopg: nothing of the cross-shard transaction on shard $k"
done
echo "ok: psycopg 3"

NODE_APP=$W/node
mkdir -p "$NODE_APP"
cp "$PGS_SRC/tests/drivers/node/package.json" "$PGS_SRC/tests/drivers/node/package-lock.json" \
  "$PGS_SRC/tests/drivers/sharding/keys.js" "$NODE_APP/"
(cd "$NODE_APP" && npm ci --no-audit --no-fund --loglevel=error >"$W/npm-ci.log" 2>&1) ||
  pgs_fail "npm ci failed: $(tail -5 "$W/npm-ci.log")"
# Tenant 1 first: the first use of a named query (Parse and Bind in one segment) goes to
# shard 1, not to the default shard.
node "$NODE_APP/keys.js" "$PGS_PROXY_PORT" "$PGS_USER" "$PGS_PASSWORD" "$PGS_DB" "$t1" "$t0" >"$W/node.out" 2>&1 ||
  pgs_fail "node-postgres: $(tail -5 "$W/node.out")"
check_sums "$W/node.out" node-postgres "60,61"
check_rows node-postgres 3 "60,61"
echo "ok: node-postgres"

JAR=${PGS_JDBC_JAR:-/usr/share/java/postgresql.jar}
mkdir -p "$W/classes"
javac -d "$W/classes" -cp "$JAR" "$PGS_SRC/tests/drivers/sharding/ShardKeys.java" || pgs_fail "javac failed"
timeout 120 java -cp "$W/classes:$JAR" ShardKeys "$PGS_PROXY_PORT" "$PGS_USER" "$PGS_PASSWORD" "$PGS_DB" "$t0" "$t1" \
  >"$W/jdbc.out" 2>&1 || pgs_fail "pgjdbc: $(tail -5 "$W/jdbc.out")"
check_sums "$W/jdbc.out" pgjdbc "70"
check_rows pgjdbc 2 "70"
echo "ok: pgjdbc"

# Written byte by byte: named statements bound by their plan (text and binary keys, NULL and
# malformed keys refused), an unnamed Parse whose Bind comes in a later write or segment.
PGS_CLUSTER_DIR=$SDIR /usr/bin/python3 "$PGS_SRC/tests/drivers/sharding/wire.py" "$SHARD_PORT" "$t0" "$t1" \
  >"$W/wire.out" 2>&1 || pgs_fail "wire: $(tail -5 "$W/wire.out")"
check_sums "$W/wire.out" wire "0"
echo "ok: extended-protocol shapes written byte by byte"

pgs_stop_proxy shard
echo "t_sharding: all checks passed"

#!/usr/bin/env bash
# pgshard-migrate check on a cluster of its own with two shards (primaries only):
#   - the same schema on both shards and a table sharded by tenant_id with the primary key
#     (tenant_id, id): exit 0, "no finding", and {"ok": true, "findings": []} with --json;
#   - each problem made on purpose is reported, naming the table (or shard), with exit 1,
#     as text and as JSON, then undone: a column missing on shard 1, a column of another
#     type on shard 1, an index only on shard 0, a sharded table whose primary key lacks
#     the key (a single uuid primary key passes), a sharded table without the key column,
#     a [table.X] missing on shard 1, no free replication slot on shard 1, a move running
#     in the catalog's pgshard.migrations, and wal_level = replica on shard 1;
#   - an unknown argument is a usage error (exit 2).
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"

MIG=${PGSHARD_MIGRATE_BIN:-}
[[ -n $MIG && -x $MIG ]] || pgs_fail "PGSHARD_MIGRATE_BIN '$MIG' is not an executable"
W=$PGS_WORK/$PGS_TEST_NAME
rm -rf "$W"
mkdir -p "$W"

pgs_own_cluster "$PGS_WORK/migrate-check-cluster" 2 0
P0=$PGS_SHARD0_PRIMARY_PORT
P1=$PGS_SHARD1_PRIMARY_PORT

on() { # SHARD SQL: on one shard's primary
  pgs_psql_node "$1" primary -q -c "$2" || pgs_fail "on shard $1: $2"
}
both() { on 0 "$1" && on 1 "$1"; }
super() { # SHARD SQL: as the superuser, for slots and ALTER SYSTEM
  pgs_cluster psql "$1" primary -- -q -v ON_ERROR_STOP=1 -c "$2" >/dev/null || pgs_fail "superuser on shard $1: $2"
}

# The config: both primaries, the catalog in app on shard 0, orders sharded, and any
# further [table.X] sections given as arguments (NAME KEY ...).
write_ini() {
  {
    printf '[pgshard]\nmonitor_dbname = %s\n' "$PGS_DB"
    printf 'catalog_dsn = host=%s port=%s dbname=%s user=%s password=%s\n' "$PGS_HOST" "$P0" "$PGS_DB" \
      "$PGS_USER" "$PGS_PASSWORD"
    printf '[shard.0]\nprimary = %s:%s\n[shard.1]\nprimary = %s:%s\n' "$PGS_HOST" "$P0" "$PGS_HOST" "$P1"
    printf '[user.%s]\npassword = %s\n' "$PGS_USER" "$PGS_PASSWORD"
    printf '[table.orders]\nshard_key = tenant_id\nkey_type = int\n'
    while (($# >= 2)); do
      printf '[table.%s]\nshard_key = %s\n' "$1" "$2"
      shift 2
    done
  } >"$W/check.ini"
}

# Runs check as text and as JSON; both must exit with WANT. Leaves the text in $W/check.out
# and the JSON in $W/check.json.
run_check() { # WANT LABEL
  local want=$1 label=$2 rc=0
  "$MIG" -c "$W/check.ini" check >"$W/check.out" 2>"$W/check.err" || rc=$?
  pgs_assert_eq "$want" "$rc" "$label: exit status ($(cat "$W/check.out" "$W/check.err"))"
  rc=0
  "$MIG" -c "$W/check.ini" check --json >"$W/check.json" 2>"$W/check.err" || rc=$?
  pgs_assert_eq "$want" "$rc" "$label: exit status with --json"
}

# The text names the table and the problem in one finding line, and the JSON has a
# finding with that table whose problem contains the same words.
expect_finding() { # LABEL TABLE WORDS
  local label=$1 table=$2 words=$3
  grep -F "table $table: " "$W/check.out" | grep -qF -- "$words" ||
    pgs_fail "$label: no finding 'table $table: ...$words...' in: $(cat "$W/check.out")"
  grep -q ' — fix: ' "$W/check.out" || pgs_fail "$label: a finding without its fix: $(cat "$W/check.out")"
  python3 -c '
import json, sys
doc = json.load(open(sys.argv[1]))
assert doc["ok"] is False, doc
hits = [f for f in doc["findings"] if f["table"] == sys.argv[2] and sys.argv[3] in f["problem"] and f["fix"]]
assert hits, doc
' "$W/check.json" "$table" "$words" || pgs_fail "$label: JSON without the finding: $(cat "$W/check.json")"
  printf 'ok: %s reported\n' "$label"
}

expect_clean() { # LABEL
  run_check 0 "$1"
  grep -q '^no finding' "$W/check.out" || pgs_fail "$1: $(cat "$W/check.out")"
  python3 -c '
import json, sys
doc = json.load(open(sys.argv[1]))
assert doc == {"ok": True, "findings": []}, doc
' "$W/check.json" || pgs_fail "$1: JSON: $(cat "$W/check.json")"
}

both "CREATE TABLE orders (tenant_id bigint NOT NULL, id bigint NOT NULL, note text,
      PRIMARY KEY (tenant_id, id))"
both "CREATE INDEX orders_note ON orders (tenant_id, note)"
write_ini

pgs_log "a clean setup"
expect_clean "clean"

pgs_log "a column missing on shard 1"
on 0 "ALTER TABLE orders ADD COLUMN extra integer"
run_check 1 "column missing"
expect_finding "column missing" public.orders "column extra: missing on shard 1"
on 0 "ALTER TABLE orders DROP COLUMN extra"

pgs_log "a column of another type on shard 1"
on 1 "ALTER TABLE orders ALTER COLUMN note TYPE varchar(20)"
run_check 1 "column type"
expect_finding "column type" public.orders "column note differs: text on shard 0, character varying(20) on shard 1"
on 1 "ALTER TABLE orders ALTER COLUMN note TYPE text"

pgs_log "an index only on shard 0"
on 0 "CREATE INDEX orders_id ON orders (id)"
run_check 1 "index on shard 0 only"
expect_finding "index on shard 0 only" public.orders "index USING btree (id): missing on shard 1"
on 0 "DROP INDEX orders_id"

pgs_log "a sharded table whose primary key lacks the key"
both "CREATE TABLE items (tenant_id bigint NOT NULL, id bigint PRIMARY KEY)"
write_ini items tenant_id
run_check 1 "primary key without the key"
expect_finding "primary key without the key" items "primary key (id) on shard 0 does not include the key"
expect_finding "primary key without the key" items "primary key (id) on shard 1 does not include the key"
# A single uuid primary key is unique across shards without the key (the issue's
# "or UUID keys").
both "DROP TABLE items; CREATE TABLE items (tenant_id bigint NOT NULL, id uuid PRIMARY KEY)"
expect_clean "uuid primary key"
both "DROP TABLE items"

pgs_log "a sharded table without its key column"
both "CREATE TABLE nokey (id bigint PRIMARY KEY)"
write_ini nokey tenant_id
run_check 1 "no key column"
expect_finding "no key column" nokey "no column tenant_id (shard_key) on shard 1"
both "DROP TABLE nokey"

pgs_log "a [table.X] that does not exist on shard 1"
on 0 "CREATE TABLE ghost (tenant_id bigint NOT NULL, id bigint, PRIMARY KEY (tenant_id, id))"
write_ini ghost tenant_id
run_check 1 "table missing on shard 1"
expect_finding "table missing on shard 1" ghost "[table.ghost] does not exist on shard 1"
expect_finding "table missing on shard 1" public.ghost "missing on shard 1"
on 0 "DROP TABLE ghost"
write_ini
expect_clean "clean again"

pgs_log "no free replication slot on shard 1"
free=$(pgs_psql_node 1 primary -c "SELECT current_setting('max_replication_slots')::int
                                    - (SELECT count(*) FROM pg_replication_slots)")
super 1 "SELECT pg_create_physical_replication_slot('t_check_' || i) FROM generate_series(1, $free) AS i"
run_check 1 "slots full"
grep -qF "shard 1 ($PGS_HOST:$P1): no free replication slot" "$W/check.out" ||
  pgs_fail "slots full: $(cat "$W/check.out")"
python3 -c '
import json, sys
doc = json.load(open(sys.argv[1]))
assert any(f["shard"] == 1 and f["table"] is None and "replication slot" in f["problem"] for f in doc["findings"]), doc
' "$W/check.json" || pgs_fail "slots full: JSON: $(cat "$W/check.json")"
super 1 "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name LIKE 't\_check\_%'"
expect_clean "slots free again"

pgs_log "another move running"
on 0 "CREATE SCHEMA IF NOT EXISTS pgshard; CREATE TABLE pgshard.migrations (id int, state text);
      INSERT INTO pgshard.migrations VALUES (1, 'done'), (2, 'aborted'), (3, 'copying')"
run_check 1 "move running"
grep -q "another move is running: (3,copying)" "$W/check.out" || pgs_fail "move running: $(cat "$W/check.out")"
on 0 "UPDATE pgshard.migrations SET state = 'done' WHERE id = 3"
expect_clean "moves done"

rc=0
"$MIG" -c "$W/check.ini" check --bogus >/dev/null 2>&1 || rc=$?
pgs_assert_eq 2 "$rc" "an unknown argument is a usage error"

pgs_log "wal_level = replica on shard 1"
super 1 "ALTER SYSTEM SET wal_level = replica"
pgs_cluster pgctl 1 primary restart >"$W/restart.out" 2>&1 || pgs_fail "restart: $(cat "$W/restart.out")"
run_check 1 "wal_level"
grep -qF "shard 1 ($PGS_HOST:$P1): wal_level is replica" "$W/check.out" ||
  pgs_fail "wal_level: $(cat "$W/check.out")"

pgs_log "all checks reported as expected"

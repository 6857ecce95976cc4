#!/usr/bin/env bash
# psql through pgshard in transaction pooling, checked against the real primary: explicit
# transactions commit and roll back (and stay on one backend while open), errors inside and
# outside a transaction leave the session usable, notices reach the client, COPY in and
# out carry a ~5 MB file byte for byte, a 2-million-row result streams through unchanged,
# and the extended protocol carries bind parameters (pgbench -M extended: psql 15 has no
# \bind).
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"

W=$PGS_WORK/t_psql
rm -rf "$W"
mkdir -p "$W"

pgs_start_proxy psql pool_mode=transaction workers=2 pool_size=4

PGOPTIONS='-c client_min_messages=warning' pgs_psql_direct -q <<'EOF'
DROP TABLE IF EXISTS t_psql_tx, t_psql_copy, t_psql_ext;
CREATE TABLE t_psql_tx (id int PRIMARY KEY, v text NOT NULL);
CREATE TABLE t_psql_copy (id int NOT NULL, name text NOT NULL, amount numeric(12,2) NOT NULL,
                          flag boolean NOT NULL, note text);
CREATE TABLE t_psql_ext (c int NOT NULL, r int NOT NULL, h text NOT NULL);
EOF
pgs_on_exit "pgs_psql_direct -q -c 'DROP TABLE IF EXISTS t_psql_tx, t_psql_copy, t_psql_ext' >/dev/null 2>&1"

direct_count() { pgs_psql_direct -c "SELECT count(*) FROM t_psql_tx WHERE $1"; }

# A shell command psql can run with \! from inside a transaction, to look at the table from
# a connection of its own straight to the primary.
peek="PGPASSWORD=$PGS_PASSWORD $PGS_PGBIN/psql -X -At -h $PGS_HOST -p $PGS_SHARD0_PRIMARY_PORT"
peek+=" -U $PGS_USER -d $PGS_DB -c 'SELECT count(*) FROM t_psql_tx WHERE id BETWEEN 1 AND 9'"

# --- 1. A multi-statement transaction commits; while open it is invisible to others and
# every statement of it runs on the same backend, in the same transaction.
pgs_log "commit"
out=$(pgs_psql <<EOF
BEGIN;
SELECT pg_backend_pid() AS pid \gset first_
INSERT INTO t_psql_tx VALUES (1, 'one');
INSERT INTO t_psql_tx VALUES (2, 'two');
UPDATE t_psql_tx SET v = v || '!' WHERE id = 2;
SELECT txid_current() AS xid1 \gset
\! $peek > $W/peek_commit
SELECT 'inside', count(*) FROM t_psql_tx WHERE id BETWEEN 1 AND 9;
SELECT 'same_backend', pg_backend_pid() = :first_pid;
SELECT 'same_xid', txid_current() = :xid1;
COMMIT;
EOF
)
pgs_assert_eq $'inside|2\nsame_backend|t\nsame_xid|t' "$(grep -E '^(inside|same_)' <<<"$out")" \
  "open transaction sees its rows, on one backend and one xid"
pgs_assert_eq 0 "$(cat "$W/peek_commit")" "uncommitted rows are invisible to another connection"
pgs_assert_eq "1|one,2|two!" "$(pgs_psql_direct -c "SELECT string_agg(id || '|' || v, ',' ORDER BY id) FROM t_psql_tx")" \
  "committed rows are on the primary"

# --- 2. A transaction that rolls back leaves nothing, including after a savepoint dance.
pgs_log "rollback"
pgs_psql -q <<'EOF'
BEGIN;
INSERT INTO t_psql_tx VALUES (3, 'three');
UPDATE t_psql_tx SET v = 'changed' WHERE id = 1;
DELETE FROM t_psql_tx WHERE id = 2;
ROLLBACK;
EOF
pgs_assert_eq "1|one,2|two!" "$(pgs_psql_direct -c "SELECT string_agg(id || '|' || v, ',' ORDER BY id) FROM t_psql_tx")" \
  "rolled-back insert, update and delete left no trace"

pgs_psql -q <<'EOF'
BEGIN;
INSERT INTO t_psql_tx VALUES (10, 'kept');
SAVEPOINT s1;
INSERT INTO t_psql_tx VALUES (11, 'undone');
ROLLBACK TO SAVEPOINT s1;
INSERT INTO t_psql_tx VALUES (12, 'kept too');
RELEASE SAVEPOINT s1;
COMMIT;
EOF
pgs_assert_eq "10,12" "$(pgs_psql_direct -c "SELECT string_agg(id::text, ',' ORDER BY id) FROM t_psql_tx WHERE id >= 10")" \
  "ROLLBACK TO SAVEPOINT undid only the inner insert"

# Several statements in one simple Query form one implicit transaction: a failure in the
# last one undoes the first.
if pgs_psql -c "INSERT INTO t_psql_tx VALUES (20, 'implicit'); SELECT 1/0;" >"$W/implicit.out" 2>"$W/implicit.err"; then
  pgs_fail "a multi-statement query with a division by zero succeeded"
fi
grep -q 'division by zero' "$W/implicit.err" || pgs_fail "no division-by-zero error: $(cat "$W/implicit.err")"
pgs_assert_eq 0 "$(direct_count 'id = 20')" "implicit transaction of a multi-statement query rolled back"

# --- 3. An error inside a transaction, then ROLLBACK, then work on the same connection.
pgs_log "error inside a transaction"
pgs_psql -q -v ON_ERROR_STOP=0 >"$W/txerr.out" 2>"$W/txerr.err" <<'EOF'
SELECT pg_backend_pid() AS pid \gset first_
BEGIN;
INSERT INTO t_psql_tx VALUES (30, 'doomed');
SELECT 1/0;
\echo state1 :SQLSTATE
SELECT 'still aborted';
\echo state2 :SQLSTATE
ROLLBACK;
SELECT 'after', count(*) FROM t_psql_tx WHERE id = 30;
INSERT INTO t_psql_tx VALUES (31, 'after rollback');
\echo state3 :SQLSTATE
EOF
pgs_assert_eq $'state1 22012\nstate2 25P02\nafter|0\nstate3 00000' "$(cat "$W/txerr.out")" \
  "division by zero, then 'transaction is aborted', then ROLLBACK and the session works"
grep -q 'current transaction is aborted, commands ignored until end of transaction block' "$W/txerr.err" ||
  pgs_fail "the statement after the error was not refused as in an aborted transaction: $(cat "$W/txerr.err")"
pgs_assert_eq "0|1" "$(pgs_psql_direct -c "SELECT count(*) FILTER (WHERE id = 30), count(*) FILTER (WHERE id = 31) FROM t_psql_tx")" \
  "the failed transaction's row is gone, the one after it committed"

# --- 4. An error outside a transaction, then recovery.
pgs_log "error outside a transaction"
pgs_psql -q -v ON_ERROR_STOP=0 >"$W/err.out" 2>"$W/err.err" <<'EOF'
SELECT * FROM t_psql_no_such_table;
\echo state1 :SQLSTATE
SELECT 'bad syntax' FROM;
\echo state2 :SQLSTATE
INSERT INTO t_psql_tx VALUES (1, 'duplicate key');
\echo state3 :SQLSTATE
SELECT 'works', 40 + 2;
EOF
pgs_assert_eq $'state1 42P01\nstate2 42601\nstate3 23505\nworks|42' "$(cat "$W/err.out")" \
  "errors outside a transaction carry their SQLSTATE and leave the session usable"
grep -q 'relation "t_psql_no_such_table" does not exist' "$W/err.err" ||
  pgs_fail "the missing-table error text did not reach psql: $(cat "$W/err.err")"

# --- 5. Notices reach the client, in and out of a transaction.
pgs_log "notices"
pgs_psql -q >"$W/notice.out" 2>"$W/notice.err" <<'EOF'
DO $$ BEGIN RAISE NOTICE 'pgshard notice % of %', 1, 2; END $$;
BEGIN;
DO $$ BEGIN RAISE WARNING 'pgshard warning inside a transaction'; END $$;
SELECT 'after notices';
COMMIT;
EOF
grep -q 'NOTICE:  pgshard notice 1 of 2' "$W/notice.err" || pgs_fail "RAISE NOTICE did not reach psql: $(cat "$W/notice.err")"
grep -q 'WARNING:  pgshard warning inside a transaction' "$W/notice.err" ||
  pgs_fail "RAISE WARNING did not reach psql: $(cat "$W/notice.err")"
grep -qx 'after notices' "$W/notice.out" || pgs_fail "query after the notices gave: $(cat "$W/notice.out")"
pgs_log "notices ok"

# --- 5b. A BEGIN inside a transaction is answered as PostgreSQL answers it: WARNING 25001
# and BEGIN, also while pgshard keeps the first BEGIN (no statement has needed a server yet),
# over the simple and the extended protocol.
pgs_log "BEGIN inside a transaction"
for target in proxy direct; do
  run=pgs_psql
  [[ $target == direct ]] && run=pgs_psql_direct
  $run -c "BEGIN" -c "BEGIN" -c "SELECT 1" -c "BEGIN" -c "COMMIT" >"$W/begin2.$target.out" 2>"$W/begin2.$target.err" ||
    pgs_fail "BEGIN twice ($target) failed: $(cat "$W/begin2.$target.err")"
done
pgs_assert_eq "$(cat "$W/begin2.direct.err")" "$(cat "$W/begin2.proxy.err")" "the warnings of BEGIN inside a transaction, as PostgreSQL's"
pgs_assert_eq 2 "$(grep -c 'WARNING:  there is already a transaction in progress' "$W/begin2.proxy.err")" \
  "two BEGINs inside a transaction, two warnings"
out=$(/usr/bin/python3 - "$PGS_PROXY_PORT" "$PGS_PASSWORD" <<'PY'
import sys
import psycopg
c = psycopg.connect(host="127.0.0.1", port=int(sys.argv[1]), user="app", password=sys.argv[2], dbname="app",
                    autocommit=True)
got = []
c.add_notice_handler(lambda d: got.append(f"{d.severity_nonlocalized} {d.sqlstate} {d.message_primary}"))
for sql in ("BEGIN", "BEGIN", "COMMIT"):
    r = c.pgconn.exec_params(sql.encode(), [])  # Parse/Bind/Describe/Execute/Sync
    got.append(r.command_status.decode())
print("|".join(got))
PY
)
pgs_assert_eq "BEGIN|WARNING 25001 there is already a transaction in progress|BEGIN|COMMIT" "$out" \
  "extended protocol: BEGIN inside a kept BEGIN"

# --- 6. COPY FROM STDIN of ~5 MB and COPY TO STDOUT back, byte for byte.
pgs_log "copy"
nrows=60000
awk -v n=$nrows 'BEGIN {
  for (i = 1; i <= n; i++) {
    note = (i % 7 == 0) ? "\\N" : sprintf("note %d: tab\\tnewline\\nbackslash\\\\ %s", i, substr("abcdefghijklmnopqrstuvwxyz", 1 + i % 26))
    printf "%d\tname-%06d-%s\t%d.%02d\t%s\t%s\n", i, i, substr("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", 1 + i % 36), i % 100000, i % 100, (i % 3 ? "t" : "f"), note
  }
}' >"$W/copy_in.tsv"
size=$(stat -c %s "$W/copy_in.tsv")
((size > 4000000)) || pgs_fail "generated COPY file is only $size bytes"
pgs_assert_eq "COPY $nrows" "$(pgs_psql -c 'COPY t_psql_copy FROM STDIN' <"$W/copy_in.tsv")" "COPY FROM STDIN of $size bytes"
pgs_assert_eq "$nrows|$nrows|$((nrows / 7))" \
  "$(pgs_psql_direct -c 'SELECT count(*), count(DISTINCT id), count(*) FILTER (WHERE note IS NULL) FROM t_psql_copy')" \
  "rows on the primary after COPY"
pgs_psql -c 'COPY (SELECT * FROM t_psql_copy ORDER BY id) TO STDOUT' >"$W/copy_out.tsv"
pgs_assert_eq "$(md5sum <"$W/copy_in.tsv")" "$(md5sum <"$W/copy_out.tsv")" "COPY TO STDOUT gives back the same bytes"

# A COPY that fails half way (bad row at the end) loads nothing, and the session goes on.
{ head -n 20000 "$W/copy_in.tsv"; printf 'not-a-number\tx\t1\tt\t\\N\n'; } >"$W/copy_bad.tsv"
pgs_psql -q -v ON_ERROR_STOP=0 -f - >"$W/copybad.out" 2>"$W/copybad.err" <<EOF
\\copy t_psql_copy FROM '$W/copy_bad.tsv'
SELECT 'after copy', count(*) FROM t_psql_copy;
EOF
pgs_assert_eq "after copy|$nrows" "$(cat "$W/copybad.out")" "a failed COPY loads nothing and the session still works"
grep -q 'invalid input syntax for type integer: "not-a-number"' "$W/copybad.err" ||
  pgs_fail "the failed COPY did not report the bad row: $(cat "$W/copybad.err")"
pgs_assert_eq "$nrows" "$(pgs_psql_direct -c 'SELECT count(*) FROM t_psql_copy')" "rows on the primary after the failed COPY"

# --- 7. A large result streams through unchanged.
pgs_log "large select"
q="SELECT g, md5(g::text), g % 7 = 0 FROM generate_series(1, 2000000) g"
t0=$SECONDS
via_proxy=$(pgs_psql -c "$q" | md5sum)
t_proxy=$((SECONDS - t0))
direct=$(pgs_psql_direct -c "$q" | tee >(wc -l >"$W/direct_lines") | md5sum)
pgs_assert_eq "$direct" "$via_proxy" "2,000,000-row SELECT through the proxy equals the direct one (${t_proxy}s)"
for ((i = 0; i < 50; i++)); do [[ -s $W/direct_lines ]] && break; sleep 0.1; done
pgs_assert_eq 2000000 "$(cat "$W/direct_lines")" "the direct SELECT compared against had 2,000,000 rows"

# --- 8. The extended protocol with bind parameters. psql 15 has no \bind, so pgbench
# -M extended sends Parse/Bind(:r as $1)/Execute; each row is checked on the primary and a
# wrong parameter round trip fails the transaction with a division by zero.
pgs_log "extended protocol"
cat >"$W/ext.sql" <<'EOF'
\set r random(1, 1000000)
INSERT INTO t_psql_ext (c, r, h) VALUES (:client_id, :r, md5(:r::text));
SELECT 1 / (CASE WHEN :r::int * 2 = (:r::bigint + :r::bigint) AND length(md5(:r::text)) = 32 THEN 1 ELSE 0 END);
EOF
pgs_pgbench_ok extended proxy -n -M extended -c 4 -j 2 -t 50 -f "$W/ext.sql"
pgs_assert_eq 200 "$PGS_PGBENCH_TX" "pgbench -M extended ran every transaction"
pgs_assert_eq "200|4|0|0" \
  "$(pgs_psql_direct -c 'SELECT count(*), count(DISTINCT c), count(*) FILTER (WHERE h <> md5(r::text)),
       count(*) FILTER (WHERE r NOT BETWEEN 1 AND 1000000) FROM t_psql_ext')" \
  "every bound row reached the primary with its parameters intact"

pgs_stop_proxy psql

# --- 9. Transaction pooling gives the server back after a COPY FROM STDIN: with one server
# in the pool, a client that loaded rows and then sits idle must not keep another client
# waiting.
pgs_log "server released after COPY FROM STDIN"
pgs_start_proxy psql_one pool_mode=transaction workers=1 pool_size=1 query_wait_timeout=10
printf 'COPY t_psql_copy (id, name, amount, flag) FROM STDIN;\n900001\ta\t1\tt\n900002\tb\t2\tf\n\\.\n\\! sleep 5\nSELECT 1;\n' |
  pgs_psql -q >"$W/copy_idle.out" 2>&1 &
copier=$!
for ((i = 0; i < 100; i++)); do
  [[ $(pgs_psql_direct -c 'SELECT count(*) FROM t_psql_copy WHERE id > 900000') == 2 ]] && break
  sleep 0.05
done
pgs_assert_eq 2 "$(pgs_psql_direct -c 'SELECT count(*) FROM t_psql_copy WHERE id > 900000')" "COPY of the idle client committed"
t0=$(date +%s%N)
got=$(pgs_psql -c 'SELECT 42')
ms=$((($(date +%s%N) - t0) / 1000000))
pgs_assert_eq 42 "$got" "a second client gets an answer while the COPY client idles"
((ms < 2000)) || pgs_fail "the second client waited ${ms} ms for the only server: the idle client kept it after its COPY"
pgs_log "second client answered in ${ms} ms"
wait "$copier" || pgs_fail "the COPY client failed: $(cat "$W/copy_idle.out")"
pgs_stop_proxy psql_one

pgs_log "all psql checks passed"

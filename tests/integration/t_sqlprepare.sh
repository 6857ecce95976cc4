#!/usr/bin/env bash
# SQL-level PREPARE / EXECUTE / DEALLOCATE in transaction pooling: a statement prepared by
# SQL is executed on another server connection (prepared there on demand), errors are
# PostgreSQL's with the client's own names (42P05, 26000, 42601), and DEALLOCATE forgets it.
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"

W=$PGS_WORK/t_sqlprepare
mkdir -p "$W"
pgs_start_proxy sqlprep workers=1 pool_size=2
q() { PGPASSWORD=$PGS_PASSWORD "$PGS_PGBIN/psql" -h "$PGS_HOST" -p "$PGS_PROXY_PORT" -U app app -X -At -q -v VERBOSITY=verbose "$@"; }

# One client session runs the script; another holds the server the first one used last,
# so the EXECUTEs land on the other server connection.
cat >"$W/a.sql" <<'SQL'
PREPARE p2(int) AS SELECT $1 * 2;
EXECUTE p2(21);
\! sleep 1.5
EXECUTE p2(50);
SELECT count(*) FROM pg_prepared_statements WHERE name LIKE 'pgshard_%';
PREPARE p2 AS SELECT 1;
PREPARE bad AS SELEC 1;
EXECUTE bad;
DEALLOCATE p2;
EXECUTE p2(1);
PREPARE p2(text) AS SELECT 'again ' || $1;
EXECUTE p2('x');
SQL
q -f "$W/a.sql" >"$W/a.out" 2>"$W/a.err" &
a=$!
sleep 0.7
q -c "BEGIN" -c "SELECT pg_sleep(2)" -c "COMMIT" >/dev/null 2>&1 &
b=$!
wait "$a" "$b"
pgs_log "$(tr '\n' ' ' <"$W/a.out")"
mapfile -t out <"$W/a.out"
pgs_assert_eq 42 "${out[0]}" "EXECUTE on the first server"
pgs_assert_eq 100 "${out[1]}" "EXECUTE on the other server (prepared there on demand)"
pgs_assert_eq 1 "${out[2]}" "the server holds it under its pgshard_ name"
pgs_assert_eq "again x" "${out[3]}" "prepared again after DEALLOCATE"
grep -q '42P05.*prepared statement "p2" already exists' "$W/a.err" || pgs_fail "duplicate: $(cat "$W/a.err")"
grep -q '42601' "$W/a.err" || pgs_fail "syntax error not reported: $(cat "$W/a.err")"
grep -q '26000.*prepared statement "bad" does not exist' "$W/a.err" || pgs_fail "failed PREPARE left a name: $(cat "$W/a.err")"
grep -q '26000.*prepared statement "p2" does not exist' "$W/a.err" || pgs_fail "DEALLOCATE: $(cat "$W/a.err")"
pgs_assert_eq 4 "$(grep -c ERROR "$W/a.err")" "exactly four errors"

# Errors point where PostgreSQL points (LINE and caret): the statement runs on the server
# under another name, and the position is moved back onto the client's text.
cat >"$W/pos.sql" <<'SQL'
PREPARE pq AS SELECT * FROM no_such_table_pos;
PREPARE pé(int) AS SELECT $1 + 1;
EXECUTE pé('not a number');
SQL
PGPASSWORD=$PGS_PASSWORD "$PGS_PGBIN/psql" -h "$PGS_HOST" -p "$PGS_PROXY_PORT" -U app app -X -q -f "$W/pos.sql" \
  >/dev/null 2>"$W/pos.proxy"
PGPASSWORD=$PGS_PASSWORD "$PGS_PGBIN/psql" -h "$PGS_HOST" -p "$PGS_SHARD0_PRIMARY_PORT" -U app app -X -q \
  -f "$W/pos.sql" >/dev/null 2>"$W/pos.direct"
grep -q '^LINE 1: PREPARE pq' "$W/pos.direct" || pgs_fail "direct run gave no LINE: $(cat "$W/pos.direct")"
diff -u "$W/pos.direct" "$W/pos.proxy" >"$W/pos.diff" ||
  pgs_fail "error positions through pgshard differ from PostgreSQL's: $(cat "$W/pos.diff")"
echo "ok: PREPARE and EXECUTE errors keep PostgreSQL's LINE and caret"

pgs_stop_proxy sqlprep
pgs_log "all SQL PREPARE checks passed"

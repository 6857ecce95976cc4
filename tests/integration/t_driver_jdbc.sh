#!/usr/bin/env bash
# pgjdbc (Debian's libpostgresql-jdbc-java) through pgshard in transaction pooling, workers = 1
# and pool_size = 2, 20 connections at a time (tests/drivers/jdbc/DriverTest.java has the
# cases): with the default prepareThreshold (5) each of 20 threads runs a PreparedStatement 20
# times, so pgjdbc switches to named server statements that pgshard must prepare again on
# every server connection; transactions that commit and roll back, addBatch/executeBatch,
# setSchema and SET search_path seen by later transactions, errors and recovery; zero errors.
# A superuser psql samples pg_stat_activity all along: never more than pool_size backends of
# user app.
#
# Installs default-jdk-headless when javac is missing and libpostgresql-jdbc-java when its
# jar is missing (as root; scripts/deps.sh installs both).
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"

W=$PGS_WORK/t_driver_jdbc
JAR=${PGS_JDBC_JAR:-/usr/share/java/postgresql.jar}
rm -rf "$W"
mkdir -p "$W/classes"

missing=()
command -v javac >/dev/null 2>&1 || missing+=(default-jdk-headless)
[[ -f $JAR ]] || missing+=(libpostgresql-jdbc-java)
if ((${#missing[@]})); then
  [[ $(id -u) -eq 0 ]] || pgs_fail "${missing[*]} missing and not root: install them (scripts/deps.sh does)"
  pgs_log "installing ${missing[*]} with apt"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
    pgs_fail "apt-get install ${missing[*]} failed"
fi
[[ -f $JAR ]] || pgs_fail "$JAR not found"
pgs_log "$(javac -version 2>&1), $(java -version 2>&1 | head -n1), jar $(readlink -f "$JAR")"

javac -Xlint:all -Werror -d "$W/classes" -cp "$JAR" "$PGS_SRC/tests/drivers/jdbc/DriverTest.java" ||
  pgs_fail "javac failed"

sql_super() { pgs_cluster psql 0 -- -X -q -At -v ON_ERROR_STOP=1 "$@"; }
sql_super <<EOF
SET client_min_messages = warning;
DROP TABLE IF EXISTS t_drv_jdbc;
DROP SCHEMA IF EXISTS drv_jdbc_s1 CASCADE;
DROP SCHEMA IF EXISTS drv_jdbc_s2 CASCADE;
DROP SCHEMA IF EXISTS drv_jdbc_t1 CASCADE;
DROP SCHEMA IF EXISTS drv_jdbc_t2 CASCADE;
CREATE TABLE t_drv_jdbc (thread int NOT NULL, i int NOT NULL, v text, PRIMARY KEY (thread, i));
ALTER TABLE t_drv_jdbc OWNER TO $PGS_USER;
CREATE SCHEMA drv_jdbc_s1 AUTHORIZATION $PGS_USER;
CREATE SCHEMA drv_jdbc_s2 AUTHORIZATION $PGS_USER;
CREATE TABLE drv_jdbc_s1.marker (v text);
CREATE TABLE drv_jdbc_s2.marker (v text);
INSERT INTO drv_jdbc_s1.marker VALUES ('schema1');
INSERT INTO drv_jdbc_s2.marker VALUES ('schema2');
CREATE SCHEMA drv_jdbc_t1 AUTHORIZATION $PGS_USER;
CREATE SCHEMA drv_jdbc_t2 AUTHORIZATION $PGS_USER;
CREATE TABLE drv_jdbc_t1.typed (v text);
CREATE TABLE drv_jdbc_t2.typed (v int);
INSERT INTO drv_jdbc_t1.typed VALUES ('one');
INSERT INTO drv_jdbc_t2.typed VALUES (1);
GRANT ALL ON ALL TABLES IN SCHEMA drv_jdbc_s1, drv_jdbc_s2, drv_jdbc_t1, drv_jdbc_t2 TO $PGS_USER;
EOF
pgs_on_exit "touch '$W/stop'; pgs_cluster psql 0 -- -X -q -c 'DROP TABLE IF EXISTS t_drv_jdbc; DROP SCHEMA IF EXISTS drv_jdbc_s1, drv_jdbc_s2, drv_jdbc_t1, drv_jdbc_t2 CASCADE' >/dev/null 2>&1"

pgs_start_proxy jdbc workers=1 pool_size=2 pool_mode=transaction query_wait_timeout=60

# One superuser connection answers a count every 50 ms until $W/stop exists.
(
  while [[ ! -e $W/stop ]]; do
    echo "SELECT count(*) FROM pg_stat_activity WHERE usename = '$PGS_USER' AND backend_type = 'client backend';"
    sleep 0.05
  done | sql_super >"$W/samples" 2>"$W/samples.err"
) &
sampler=$!

rc=0
timeout 180 java -cp "$W/classes:$JAR" -Dpgs.port="$PGS_PROXY_PORT" -Dpgs.user="$PGS_USER" \
  -Dpgs.password="$PGS_PASSWORD" -Dpgs.db="$PGS_DB" -Dpgs.knownBugs=1 \
  DriverTest | tee "$W/java.out" || rc=$?

touch "$W/stop"
wait "$sampler" || true

read -r _ passed failed < <(grep '^RESULT ' "$W/java.out" || echo "RESULT 0 1")
grep -q '^RESULT ' "$W/java.out" || echo "FAIL java DriverTest ended without a result (exit $rc)"
if ((rc != 0 && failed == 0)); then
  echo "FAIL java DriverTest exited $rc"
  failed=$((failed + 1))
fi

samples=$(grep -c '^[0-9][0-9]*$' "$W/samples" || true)
max=$(sort -n "$W/samples" | tail -n1)
if ((samples > 0)) && ((max <= 2)); then
  echo "ok   server connections <= pool_size: at most $max backends of user $PGS_USER in $samples samples"
  passed=$((passed + 1))
else
  echo "FAIL server connections <= pool_size: max '${max:-?}' in ${samples:-0} samples ($(head -c 300 "$W/samples.err"))"
  failed=$((failed + 1))
fi

committed=$(sql_super -c "SELECT count(*) FROM t_drv_jdbc")
expected=$((20 * 20 + 20 * 3 * 100)) # the prepared case's 20 x 20, the batches' 20 x 300
if [[ $committed == "$expected" ]]; then
  echo "ok   rows on the primary: $committed committed, as expected"
  passed=$((passed + 1))
else
  echo "FAIL rows on the primary: expected $expected, found $committed"
  failed=$((failed + 1))
fi

pgs_check_stopped jdbc

echo "$passed passed, $failed failed"
((failed == 0)) || exit 1

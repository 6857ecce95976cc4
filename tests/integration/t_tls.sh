#!/usr/bin/env bash
# TLS on both sides: clients with sslmode=require and verify-full against a test CA, a
# plaintext client refused under client_tls = require (28000), and pgshard talking TLS to a
# PostgreSQL with ssl = on (server_tls = require), checked in pg_stat_ssl; data of a few MB
# crosses both TLS layers intact. Then pgshard verifying the primary's certificate:
# verify-full and verify-ca with the right CA, the wrong CA, and certificates that name
# only the primary's IP address or only its host name (put on the primary for a while),
# addressed as 127.0.0.1 and as localhost; a failed verification is the 08006 of an
# unreachable server with the reason in the log. A CA file that cannot be read stops the
# start and is refused by a reload.
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"

W=$PGS_WORK/t_tls
rm -rf "$W"
mkdir -p "$W"
cd "$W"

# A CA and a server certificate for localhost / 127.0.0.1.
openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 -subj "/CN=pgshard test CA" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj "/CN=localhost" 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >ext.cnf
openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt -days 2 \
  -extfile ext.cnf 2>/dev/null
chmod 644 server.crt ca.crt

# The primary gets the same certificate and ssl = on.
cp server.crt server.key "$PGS_SHARD0_PRIMARY_DATA/"
if [[ -n ${PGS_RUNAS:-} ]]; then chown postgres "$PGS_SHARD0_PRIMARY_DATA"/server.*; fi
chmod 600 "$PGS_SHARD0_PRIMARY_DATA/server.key"
pgs_cluster psql 0 primary -- -q -c "ALTER SYSTEM SET ssl = on" -c "SELECT pg_reload_conf()" >/dev/null
pgs_on_exit "$PGS_CLUSTER_SH psql $PGS_CLUSTER_DIR 0 primary -- -q -c 'ALTER SYSTEM RESET ssl' -c 'SELECT pg_reload_conf()' >/dev/null 2>&1"
for _ in $(seq 50); do
  [[ $(pgs_cluster psql 0 primary -- -Atc "SHOW ssl") == on ]] && break
  sleep 0.1
done

pgs_start_proxy tls client_tls=require "tls_cert_file=$W/server.crt" "tls_key_file=$W/server.key" \
  server_tls=require workers=2 pool_size=4

conn() { echo "host=$1 port=$PGS_PROXY_PORT user=$PGS_USER dbname=$PGS_DB $2"; }
q() { PGPASSWORD=$PGS_PASSWORD "$PGS_PGBIN/psql" "$1" -X -At -v ON_ERROR_STOP=1 "${@:2}"; }

pgs_log "sslmode=require, and the server side is TLS too"
out=$(q "$(conn 127.0.0.1 sslmode=require)" -c "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
pgs_assert_eq t "$out" "server connection uses TLS (pg_stat_ssl)"

pgs_log "sslmode=verify-full with the test CA"
out=$(q "$(conn localhost "sslmode=verify-full sslrootcert=$W/ca.crt")" -c "SELECT 'verified'")
pgs_assert_eq verified "$out" "verify-full"

pgs_log "verify-full with a CA that did not sign the certificate fails"
openssl req -x509 -newkey rsa:2048 -nodes -keyout other.key -out other.crt -days 2 -subj "/CN=other" 2>/dev/null
if q "$(conn localhost "sslmode=verify-full sslrootcert=$W/other.crt")" -c "SELECT 1" >/dev/null 2>"$W/bad.err"; then
  pgs_fail "verify-full accepted a certificate from another CA"
fi
grep -q "certificate verify failed" "$W/bad.err" || pgs_fail "unexpected error: $(cat "$W/bad.err")"

pgs_log "plaintext refused (SQLSTATE 28000, checked by the raw client)"
if q "$(conn 127.0.0.1 sslmode=disable)" -c "SELECT 1" >/dev/null 2>"$W/plain.err"; then
  pgs_fail "plaintext client was accepted under client_tls = require"
fi
grep -q "TLS is required" "$W/plain.err" || pgs_fail "unexpected error: $(cat "$W/plain.err")"
state=$(python3 - "$PGS_PROXY_PORT" <<'PY'
import socket, struct, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)
body = struct.pack("!I", 196608) + b"user\0app\0database\0app\0\0"
s.sendall(struct.pack("!I", len(body) + 4) + body)
data = b""
while True:
    chunk = s.recv(4096)
    if not chunk:
        break
    data += chunk
fields = dict((f[:1], f[1:]) for f in data[5:].split(b"\0") if f)
print(data[:1].decode(), fields.get(b"C", b"").decode())
PY
)
pgs_assert_eq "E 28000" "$state" "plaintext startup answered with ErrorResponse 28000"

pgs_log "5 MB through both TLS layers, both ways"
head -c 3000000 /dev/urandom | base64 -w 100 >data.txt
q "$(conn 127.0.0.1 sslmode=require)" -q -c "DROP TABLE IF EXISTS t_tls_copy" -c "CREATE TABLE t_tls_copy (line text)"
q "$(conn 127.0.0.1 sslmode=require)" -q -c "\\copy t_tls_copy FROM data.txt"
q "$(conn 127.0.0.1 sslmode=require)" -c "\\copy (SELECT line FROM t_tls_copy) TO back.txt"
pgs_assert_eq "$(md5sum <data.txt | cut -d' ' -f1)" "$(md5sum <back.txt | cut -d' ' -f1)" "COPY round trip"
big=$(q "$(conn 127.0.0.1 sslmode=require)" -c "SELECT md5(string_agg(line, '')) FROM t_tls_copy")
pgs_assert_eq "$(pgs_psql_direct -c "SELECT md5(string_agg(line, '')) FROM t_tls_copy")" "$big" "aggregate through TLS"
q "$(conn 127.0.0.1 sslmode=require)" -q -c "DROP TABLE t_tls_copy"

pgs_log "pgbench over TLS"
out=$(PGPASSWORD=$PGS_PASSWORD "$PGS_PGBIN/pgbench" -n -c 8 -j 2 -T 3 \
  -f <(echo "SELECT 1;") "$(conn 127.0.0.1 sslmode=require)" 2>&1)
echo "$out" | grep -q "number of failed transactions: 0 " || pgs_fail "pgbench failures: $out"
n=$(echo "$out" | sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p')
[[ ${n:-0} -gt 100 ]] || pgs_fail "pgbench processed too few transactions: $out"

pgs_stop_proxy tls

# ---- pgshard verifying the servers' certificates (server_tls = verify-ca / verify-full) ----
P=$PGS_SHARD0_PRIMARY_PORT
SSL_Q="SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
UNREACHABLE="08006 pgshard: cannot connect to the server for database \"$PGS_DB\""

# "ok" after logging in through the proxy on port $1 and running a query, or the SQLSTATE
# and message of the error that stopped it.
login_result() {
  PYTHONPATH=$PGS_SRC/tests/integration PGWIRE_TEST=t_tls python3 - "$1" <<'PY'
import sys
from pgwire import Conn, PgError
c = Conn(int(sys.argv[1]))
try:
    c.login()
    c.scalar("SELECT 1")
    print("ok")
except PgError as e:
    print(e.code, e.message)
PY
}

# Whether the primary presents the certificate in file $1.
primary_serves() {
  local got
  got=$(openssl s_client -starttls postgres -connect "127.0.0.1:$P" </dev/null 2>/dev/null |
    openssl x509 -noout -fingerprint -sha256 2>/dev/null) || return 1
  [[ -n $got && $got == "$(openssl x509 -in "$1" -noout -fingerprint -sha256)" ]]
}

# Puts certificate $1 and key $2 in the primary's data directory, where it reads them when
# its configuration is reloaded.
primary_cert_files() {
  cp "$1" "$PGS_SHARD0_PRIMARY_DATA/server.crt"
  cp "$2" "$PGS_SHARD0_PRIMARY_DATA/server.key"
  if [[ -n ${PGS_RUNAS:-} ]]; then chown postgres "$PGS_SHARD0_PRIMARY_DATA"/server.*; fi
  chmod 600 "$PGS_SHARD0_PRIMARY_DATA/server.key"
}

# Gives the primary certificate $1 with key $2 and waits until it presents it.
primary_cert() {
  primary_cert_files "$1" "$2"
  pgs_cluster psql 0 primary -- -q -c "SELECT pg_reload_conf()" >/dev/null
  pgs_wait_for 10 "the primary presents $1" primary_serves "$1"
}

# A certificate from the test CA as $1.crt and $1.key, with subjectAltName $2 and CN $3.
issue_cert() {
  openssl req -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.csr" -subj "/CN=$3" 2>/dev/null
  printf 'subjectAltName=%s\n' "$2" >"$1.cnf"
  openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -out "$1.crt" -days 2 \
    -extfile "$1.cnf" 2>/dev/null
  chmod 644 "$1.crt"
}

# Through proxy $1 (the last one started), clients get the error of an unreachable server
# and the log says $2 (a fixed string), then why the server was closed.
expect_verify_failed() {
  local log=$PGS_WORK/$1/pgshard.log
  pgs_assert_eq "$UNREACHABLE" "$(login_result "$PGS_PROXY_PORT")" "$1: the client gets the unreachable-server error"
  pgs_assert_eq "$UNREACHABLE" "$(login_result "$PGS_PROXY_PORT")" "$1: and so does the next one"
  grep -qF "$2" "$log" || pgs_fail "$1: the log does not say '$2': $(grep -i 'tls\|server_closed' "$log" | tail -5)"
  grep -q "server_closed: .*: certificate verify failed: " "$log" ||
    pgs_fail "$1: the server's closing does not give the reason: $(grep server_closed "$log" | tail -3)"
  pgs_log "$1: logged: $2"
}

pgs_log "verify-full with the test CA, the primary addressed as 127.0.0.1 (its certificate has IP:127.0.0.1)"
pgs_start_proxy vfull server_tls=verify-full "server_tls_ca_file=$W/ca.crt" '[shard.0]' "primary = 127.0.0.1:$P"
pgs_assert_eq t "$(pgs_psql -c "$SSL_Q")" "verify-full: the server connection uses TLS (pg_stat_ssl)"

pgs_log "a reload naming a CA file that cannot be read is refused; the running config stays"
VINI=$PGS_WORK/vfull/pgshard.ini
VLOG=$PGS_WORK/vfull/pgshard.log
sed -i "s|^server_tls_ca_file = .*|server_tls_ca_file = $W/missing-ca.crt|" "$VINI"
kill -HUP "$PGS_PROXY_PID"
pgs_wait_for 5 "a reload_failed line" grep -q reload_failed "$VLOG"
grep -qF "reload_failed: $VINI: cannot use server_tls_ca_file $W/missing-ca.crt: " "$VLOG" ||
  pgs_fail "the refused reload does not name the CA file: $(grep reload "$VLOG" | tail -3)"
grep -q "the running configuration stays" "$VLOG" || pgs_fail "the refused reload does not say the config stays"
pgs_assert_eq t "$(pgs_psql -c "$SSL_Q")" "clients still served after the refused reload"
pgs_stop_proxy vfull

pgs_log "the monitor (libpq) verifies the primary as well: SHOW REPLICAS shows it up under verify-full"
# The replica has no TLS, so the monitor finds it down, as verify-full asks.
pgs_start_proxy vmon server_tls=verify-full "server_tls_ca_file=$W/ca.crt" admin_users=app '[shard.0]' \
  "primary = 127.0.0.1:$P" "replicas = 127.0.0.1:$PGS_SHARD0_REPLICA1_PORT"
primary_up() {
  local rows
  rows=$(pgs_admin -c "SHOW REPLICAS") || return 1
  PGS_WAIT_INFO=$rows
  [[ $(pgs_replica_field "$rows" "$P" health) == up ]]
}
pgs_replicas_cols
pgs_wait_for 10 "the monitor sees the primary up under verify-full" primary_up
pgs_assert_eq t "$(pgs_psql -c "$SSL_Q")" "verify-full with the monitor: TLS (pg_stat_ssl)"
pgs_stop_proxy vmon

pgs_log "verify-full with a CA that did not sign the primary's certificate"
pgs_start_proxy vbadca server_tls=verify-full "server_tls_ca_file=$W/other.crt" admin_users=app '[shard.0]' \
  "primary = 127.0.0.1:$P"
expect_verify_failed vbadca "server_tls_verify_failed: certificate verify failed: unable to get local issuer \
certificate; node 127.0.0.1:$P, server_tls = verify-full"
pgs_admin -c "SHOW VERSION" >/dev/null || pgs_fail "vbadca: the admin console does not answer"
pgs_stop_proxy vbadca

pgs_log "an unreadable server_tls_ca_file stops pgshard at start; verify-full without one is a config error"
printf '[pgshard]\nlisten_port = %s\nserver_tls = verify-full\nserver_tls_ca_file = %s\n[shard.0]\nprimary = 127.0.0.1:%s\n[user.app]\npassword = %s\n' \
  "$(pgs_free_port)" "$W/missing-ca.crt" "$P" "$PGS_PASSWORD" >"$W/badca.ini"
if timeout 10 "$PGSHARD_BIN" -c "$W/badca.ini" >"$W/badca.log" 2>&1; then
  pgs_fail "pgshard started with an unreadable server_tls_ca_file"
fi
grep -qF "startup_failed: $W/badca.ini: cannot use server_tls_ca_file $W/missing-ca.crt: " "$W/badca.log" ||
  pgs_fail "unexpected start failure: $(cat "$W/badca.log")"
sed -i '/^server_tls_ca_file/d' "$W/badca.ini"
if "$PGSHARD_BIN" -c "$W/badca.ini" --check >"$W/noca.log" 2>&1; then
  pgs_fail "--check accepted verify-full without server_tls_ca_file"
fi
pgs_assert_eq "pgshard: $W/badca.ini:3: key 'server_tls': verify-full needs server_tls_ca_file (a PEM file of CA certificates)" \
  "$(cat "$W/noca.log")" "verify-full without server_tls_ca_file"

pgs_log "verify-ca against a server without TLS fails, as require does"
if [[ $(pgs_psql_node 0 replica1 -c "SHOW ssl") == off ]]; then
  pgs_start_proxy vnossl server_tls=verify-ca "server_tls_ca_file=$W/ca.crt" '[shard.0]' \
    "primary = 127.0.0.1:$PGS_SHARD0_REPLICA1_PORT"
  pgs_assert_eq "$UNREACHABLE" "$(login_result "$PGS_PROXY_PORT")" "verify-ca, server without TLS"
  grep -q "server_tls = verify-ca but the server does not support TLS" "$PGS_WORK/vnossl/pgshard.log" ||
    pgs_fail "the log does not say the server has no TLS: $(grep server_closed "$PGS_WORK/vnossl/pgshard.log" | tail -3)"
  pgs_stop_proxy vnossl
else
  pgs_log "skipped: replica1 has ssl = on"
fi

# Certificates that name the primary one way only. The primary gets its first one back at
# the end; should a check fail on the way, the files are put back at exit (after the hook
# above has turned ssl off and reloaded, so the next ssl = on reads them).
issue_cert ip "IP:127.0.0.1" "pgshard test ip only"
issue_cert dns "DNS:localhost" "localhost"
pgs_on_exit "primary_cert_files $W/server.crt $W/server.key"

pgs_log "the primary's certificate names only IP:127.0.0.1"
primary_cert ip.crt ip.key
pgs_start_proxy vfull-localhost server_tls=verify-full "server_tls_ca_file=$W/ca.crt" '[shard.0]' \
  "primary = localhost:$P"
expect_verify_failed vfull-localhost "server_tls_verify_failed: certificate verify failed: hostname mismatch; \
node localhost:$P, server_tls = verify-full"
pgs_stop_proxy vfull-localhost
pgs_start_proxy vca-localhost server_tls=verify-ca "server_tls_ca_file=$W/ca.crt" '[shard.0]' "primary = localhost:$P"
pgs_assert_eq t "$(pgs_psql -c "$SSL_Q")" "verify-ca does not check the name: TLS (pg_stat_ssl)"
pgs_stop_proxy vca-localhost
pgs_start_proxy vfull-ip server_tls=verify-full "server_tls_ca_file=$W/ca.crt" '[shard.0]' "primary = 127.0.0.1:$P"
pgs_assert_eq t "$(pgs_psql -c "$SSL_Q")" "verify-full, 127.0.0.1 against IP:127.0.0.1"
pgs_stop_proxy vfull-ip

pgs_log "the primary's certificate names only DNS:localhost"
primary_cert dns.crt dns.key
pgs_start_proxy vfull-ipdns server_tls=verify-full "server_tls_ca_file=$W/ca.crt" '[shard.0]' \
  "primary = 127.0.0.1:$P"
expect_verify_failed vfull-ipdns "server_tls_verify_failed: certificate verify failed: IP address mismatch; \
node 127.0.0.1:$P, server_tls = verify-full"
pgs_stop_proxy vfull-ipdns
pgs_start_proxy vfull-dns server_tls=verify-full "server_tls_ca_file=$W/ca.crt" '[shard.0]' "primary = localhost:$P"
pgs_assert_eq t "$(pgs_psql -c "$SSL_Q")" "verify-full, localhost against DNS:localhost"
pgs_stop_proxy vfull-dns

primary_cert "$W/server.crt" "$W/server.key"
pgs_log "all TLS checks passed"

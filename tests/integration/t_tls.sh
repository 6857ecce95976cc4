#!/usr/bin/env bash
# TLS on both sides: clients with sslmode=require and verify-full against a test CA, a
# plaintext client refused under client_tls = require (28000), and pgshard talking TLS to a
# PostgreSQL with ssl = on (server_tls = require), checked in pg_stat_ssl; data of a few MB
# crosses both TLS layers intact.
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
pgs_log "all TLS checks passed"

#!/usr/bin/env bash
# Per-user limits answered at once instead of queuing: max_connections gives the client
# beyond it SQLSTATE 53300, max_qps refuses transactions past the rate with 53400 and
# serves again once the bucket refills; max_client_conn is covered by t_protocol.py.
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"

W=$PGS_WORK/t_limits
mkdir -p "$W"
pgs_start_proxy limits workers=2 pool_size=4 '[user.app]' max_connections=3 max_qps=40

pgs_log "max_connections = 3"
holders=()
# The holders stay long enough for both checks below on a loaded machine (with 3 s, a slow
# run saw a holder leave before the second check logged in).
for i in 1 2 3; do
  pgs_psql -c "SELECT pg_sleep(8)" >/dev/null 2>&1 &
  holders+=($!)
done
sleep 1
if pgs_psql -c "SELECT 1" >/dev/null 2>"$W/fourth.err"; then pgs_fail "a fourth client of app got in"; fi
grep -q 'too many connections for role "app"' "$W/fourth.err" || pgs_fail "$(cat "$W/fourth.err")"
code=$(python3 - "$PGS_PROXY_PORT" <<'PY'
import socket, struct, sys, hashlib, hmac, base64, os
# A SCRAM login as app; prints the SQLSTATE of the ErrorResponse that follows.
port = int(sys.argv[1])
s = socket.create_connection(("127.0.0.1", port), timeout=5)
body = struct.pack("!I", 196608) + b"user\0app\0database\0app\0\0"
s.sendall(struct.pack("!I", len(body) + 4) + body)
buf = b""
def msg():
    global buf
    while len(buf) < 5 or len(buf) < 1 + struct.unpack("!I", buf[1:5])[0]:
        d = s.recv(65536)
        if not d:
            raise SystemExit("closed")
        buf += d
    n = struct.unpack("!I", buf[1:5])[0]
    m, buf = buf[:1 + n], buf[1 + n:]
    return m[:1], m[5:]
nonce = base64.b64encode(os.urandom(18)).decode()
t, b = msg()
first = "n=,r=" + nonce
data = ("n,," + first).encode()
p = b"SCRAM-SHA-256\0" + struct.pack("!I", len(data)) + data
s.sendall(b"p" + struct.pack("!I", len(p) + 4) + p)
t, b = msg()
sf = b[4:].decode()
attrs = dict(x.split("=", 1) for x in sf.split(","))
salted = hashlib.pbkdf2_hmac("sha256", b"app", base64.b64decode(attrs["s"]), int(attrs["i"]))
ck = hmac.new(salted, b"Client Key", "sha256").digest()
final = "c=biws,r=" + attrs["r"]
auth = (first + "," + sf + "," + final).encode()
sig = hmac.new(hashlib.sha256(ck).digest(), auth, "sha256").digest()
proof = base64.b64encode(bytes(a ^ b for a, b in zip(ck, sig))).decode()
p = (final + ",p=" + proof).encode()
s.sendall(b"p" + struct.pack("!I", len(p) + 4) + p)
while True:
    t, b = msg()
    if t == b"E":
        print(dict((f[:1], f[1:]) for f in b.split(b"\0") if f).get(b"C", b"").decode())
        break
    if t == b"Z":
        print("in")
        break
PY
)
pgs_assert_eq 53300 "$code" "SQLSTATE of the client over max_connections"
wait "${holders[@]}"
pgs_assert_eq 1 "$(pgs_psql -c "SELECT 1")" "a client gets in once the others left"

pgs_log "max_qps = 40 (20 per worker): 300 queries as fast as possible"
sleep 1.2
for _ in $(seq 300); do echo "SELECT 1;"; done >"$W/many.sql"
PGPASSWORD=$PGS_PASSWORD "$PGS_PGBIN/psql" -h "$PGS_HOST" -p "$PGS_PROXY_PORT" -U app "$PGS_DB" -X -At \
  -f "$W/many.sql" >"$W/many.out" 2>"$W/many.err" || true
ok=$(grep -c '^1$' "$W/many.out" || true)
refused=$(grep -c 'max_qps' "$W/many.err" || true)
pgs_log "served $ok, refused $refused"
((ok >= 10 && ok <= 120)) || pgs_fail "served $ok of 300 at max_qps 40"
((refused + ok == 300)) || pgs_fail "served $ok + refused $refused != 300: $(head -3 "$W/many.err")"
sleep 1.5
pgs_assert_eq 1 "$(pgs_psql -c "SELECT 1")" "served again after the bucket refills"

pgs_stop_proxy limits
pgs_log "all limit checks passed"

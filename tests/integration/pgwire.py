#!/usr/bin/env python3
"""Shared by the raw-protocol integration tests (t_protocol.py, t_prepared.py): the
cluster environment, a pgshard process with its own config, and a tiny stdlib-only v3
protocol client (startup, SCRAM-SHA-256 and md5 login, simple and extended query).

Not a test itself: CTest runs only t_*.py. A test sets PGWIRE_TEST (its name) and optionally
PGWIRE_TIMEOUT in os.environ, then does `from pgwire import *`.
"""
import os as _os

NAME = _os.environ.get("PGWIRE_TEST", "pgwire")
import base64
import hashlib
import hmac
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

TIMEOUT = float(_os.environ.get("PGWIRE_TIMEOUT", "5.0"))  # no answer within this is a hang: a failure
PROTO_V3 = 196608
CODE_SSL = 80877103
CODE_GSSENC = 80877104


# --------------------------------------------------------------------------- environment

def die(msg):
    print(f"{NAME}: error: {msg}", file=sys.stderr)
    sys.exit(2)


CLUSTER_DIR = os.environ.get("PGS_CLUSTER_DIR") or die("PGS_CLUSTER_DIR is not set")
PGSHARD_BIN = os.environ.get("PGSHARD_BIN") or die("PGSHARD_BIN is not set")
PGS_SRC = os.environ.get("PGS_SRC") or os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PGS_WORK = os.environ.get("PGS_WORK") or os.path.join(os.environ.get("TMPDIR", "/tmp"), "pgshard-itest")
CLUSTER_SH = os.path.join(PGS_SRC, "tests", "cluster", "cluster.sh")
WORK = os.path.join(PGS_WORK, NAME)


def read_env(path):
    env = {}
    try:
        with open(path) as f:
            for line in f:
                line = line.strip()
                if not line or line.startswith("#") or "=" not in line:
                    continue
                k, v = line.split("=", 1)
                if len(v) >= 2 and v[0] == v[-1] and v[0] in "\"'":
                    v = v[1:-1]
                env[k] = v
    except OSError as e:
        die(f"cannot read {path}: {e} (start a cluster with {CLUSTER_SH} start DIR)")
    return env


CENV = read_env(os.path.join(CLUSTER_DIR, "cluster.env"))
if CENV.get("PGS_READY") != "1":
    die(f"the cluster in {CLUSTER_DIR} did not finish starting")
if not os.access(PGSHARD_BIN, os.X_OK):
    die(f"PGSHARD_BIN '{PGSHARD_BIN}' is not an executable")
PG_HOST = CENV["PGS_HOST"]
PG_PORT = int(CENV["PGS_SHARD0_PRIMARY_PORT"])
USER, PASSWORD, DB = CENV["PGS_USER"], CENV["PGS_PASSWORD"], CENV["PGS_DB"]


def psql(sql, timeout=10):
    """Runs SQL straight on shard 0's primary as the superuser (cluster.sh psql, unix socket);
    returns the unaligned output."""
    r = subprocess.run([CLUSTER_SH, "psql", CLUSTER_DIR, "0", "--", "-At", "-q", "-v", "ON_ERROR_STOP=1",
                        "-c", sql], capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise AssertionError(f"direct psql failed ({r.returncode}): {sql!r}: {r.stderr.strip()}")
    return r.stdout.strip()


def wait_until(pred, timeout, what):
    """Polls pred() until it is true; fails with `what` (and pred's last value) after timeout."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = pred()
        if last is True:
            return
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what} (not within {timeout} s; last: {last!r})")
        time.sleep(0.1)


# --------------------------------------------------------------------------- the proxy

def free_port():
    """A free TCP port below the ephemeral range, remembered in $PGS_WORK/.ports as lib.sh does
    so that two calls before either port is bound do not collide."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        lo = 32768
    hi = lo - 1 if lo - 1 > 21000 else 40000
    ports_file = os.path.join(PGS_WORK, ".ports")
    try:
        with open(ports_file) as f:
            taken = set(f.read().split()[-200:])
    except OSError:
        taken = set()
    for _ in range(1000):
        p = random.randint(20000, hi - 1)
        if str(p) in taken:
            continue
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind(("127.0.0.1", p))
        except OSError:
            continue
        finally:
            s.close()
        with open(ports_file, "a") as f:
            f.write(f"{p}\n")
        return p
    raise RuntimeError("no free port")


class Report:
    """Counts checks and prints one line each: "ok   NAME: DETAIL" or "FAIL NAME: DETAIL"."""

    def __init__(self):
        self.passed = self.failed = 0

    def __call__(self, ok, name, detail):
        if ok:
            self.passed += 1
            print(f"ok   {name}: {detail}", flush=True)
        else:
            self.failed += 1
            print(f"FAIL {name}: {detail}", flush=True)

    def summary(self):
        """Prints "N passed, M failed"; returns the exit status."""
        print(f"{self.passed} passed, {self.failed} failed")
        return 1 if self.failed else 0


class Proxy:
    """One pgshard process with its own config in $PGS_WORK/<test>/NAME."""

    def __init__(self, name, shard_keys=None, primary=None, sections=None, **keys):
        """keys go to [pgshard], shard_keys (replicas = ..., balance = ...) to [shard.0];
        primary (host:port) replaces shard 0's primary; sections ({"shard.1": {"primary":
        ...}, "table.orders": {"shard_key": "tenant_id"}}) are written after [shard.0]."""
        self.name = name
        self.dir = os.path.join(WORK, name)
        os.makedirs(self.dir, exist_ok=True)
        self.port = free_port()
        conf = {
            "listen_addr": "127.0.0.1", "listen_port": self.port, "workers": 2,
            "pool_mode": "transaction", "pool_size": 4, "auth_type": "scram-sha-256", "log_level": "info",
        }
        conf.update(keys)
        self.ini = os.path.join(self.dir, "pgshard.ini")
        self.log = os.path.join(self.dir, "pgshard.log")
        with open(self.ini, "w") as f:
            f.write(f"; written by tests/integration/{NAME}.py\n[pgshard]\n")
            for k, v in conf.items():
                f.write(f"{k} = {v}\n")
            f.write(f"\n[shard.0]\nprimary = {primary or f'{PG_HOST}:{PG_PORT}'}\n")
            for k, v in (shard_keys or {}).items():
                f.write(f"{k} = {v}\n")
            for section, skeys in (sections or {}).items():
                f.write(f"\n[{section}]\n")
                for k, v in skeys.items():
                    f.write(f"{k} = {v}\n")
            f.write(f"\n[user.{USER}]\npassword = {PASSWORD}\n")
            f.write("\n[user.md5user]\npassword = md5pw\n")
        self.logf = open(self.log, "wb")
        self.proc = subprocess.Popen([PGSHARD_BIN, "-c", self.ini], stdout=self.logf, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"pgshard {name} exited with {self.proc.returncode} before accepting "
                                   f"connections:\n{self.log_tail()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"pgshard {name} does not accept connections on {self.port}")
                time.sleep(0.05)

    def log_tail(self, n=40):
        try:
            with open(self.log, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    def alive(self):
        return self.proc.poll() is None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self):
        """SIGTERM; asserts exit 0 within 10 s and no sanitizer report in the log."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                self.logf.close()
                raise AssertionError(f"pgshard {self.name} did not exit within 10 s of SIGTERM")
        self.logf.close()
        rc = self.proc.returncode
        with open(self.log, errors="replace") as f:
            log = f.read()
        bad = [m for m in ("AddressSanitizer", "LeakSanitizer", "runtime error") if m in log]
        if rc != 0 or bad:
            how = f"killed by {signal.Signals(-rc).name}" if rc < 0 else f"exit status {rc}"
            raise AssertionError(f"pgshard {self.name} stopped badly after SIGTERM: {how}, sanitizer report: "
                                 f"{bad or 'none'}; log tail:\n{self.log_tail()}")

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if not self.logf.closed:
            self.logf.close()


# --------------------------------------------------------------------------- a tiny client

class Closed(Exception):
    """The peer closed the connection."""


class PgError(Exception):
    def __init__(self, fields):
        self.fields = fields
        super().__init__(f"{fields.get('C', '?')}: {fields.get('M', '')}")

    @property
    def code(self):
        return self.fields.get("C")

    @property
    def message(self):
        return self.fields.get("M", "")


def parse_error(body):
    fields = {}
    for part in body.split(b"\0"):
        if part:
            fields[chr(part[0])] = part[1:].decode("utf-8", "replace")
    return fields


def msg(t, body=b""):
    return t + struct.pack("!I", len(body) + 4) + body


def cstr(s):
    return (s if isinstance(s, bytes) else s.encode()) + b"\0"


def startup_packet(params, version=PROTO_V3):
    body = struct.pack("!I", version) + b"".join(cstr(k) + cstr(v) for k, v in params.items()) + b"\0"
    return struct.pack("!I", len(body) + 4) + body


def query_msg(sql):
    return msg(b"Q", cstr(sql))


class Conn:
    def __init__(self, port, timeout=TIMEOUT):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.settimeout(timeout)
        self.buf = b""
        self.params = {}
        self.key = None
        self.status = None

    # raw I/O
    def send(self, data):
        self.sock.sendall(data)

    def _fill(self, n):
        while len(self.buf) < n:
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                raise
            except (ConnectionResetError, BrokenPipeError):
                chunk = b""
            if not chunk:
                raise Closed()
            self.buf += chunk

    def recv_exact(self, n):
        self._fill(n)
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv_msg(self):
        self._fill(5)
        t = self.buf[0:1]
        (n,) = struct.unpack("!I", self.buf[1:5])
        if n < 4:
            raise AssertionError(f"bad length {n} in a message from the proxy")
        self._fill(1 + n)
        body = self.buf[5:1 + n]
        self.buf = self.buf[1 + n:]
        return t, body

    def is_closed(self, timeout=TIMEOUT):
        """True when the peer closes within timeout (pending messages are skipped)."""
        self.sock.settimeout(timeout)
        try:
            while True:
                self.recv_msg()
        except Closed:
            return True
        except socket.timeout:
            return False

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def abort(self):
        """Closes with a RST (SO_LINGER 0), as a crashed client's kernel would."""
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.close()

    def terminate(self):
        try:
            self.send(msg(b"X"))
        except OSError:
            pass
        self.close()

    # login
    def login(self, user=USER, password=PASSWORD, database=DB, version=PROTO_V3, extra=None):
        """Sends a StartupMessage and authenticates (SCRAM-SHA-256, md5, cleartext or none).
        Returns the NegotiateProtocolVersion body when one came; raises PgError on an error."""
        params = {}
        if user is not None:
            params["user"] = user
        if database is not None:
            params["database"] = database
        params.update(extra or {})
        self.send(startup_packet(params, version))
        return self.finish_login(user, password)

    def finish_login(self, user, password):
        negotiate = None
        scram = None
        while True:
            t, body = self.recv_msg()
            if t == b"E":
                raise PgError(parse_error(body))
            if t == b"v":
                negotiate = body
            elif t == b"R":
                (code,) = struct.unpack("!I", body[:4])
                if code == 0:
                    pass
                elif code == 3:
                    self.send(msg(b"p", cstr(password)))
                elif code == 5:
                    inner = hashlib.md5((password + user).encode()).hexdigest()
                    self.send(msg(b"p", cstr("md5" + hashlib.md5(inner.encode() + body[4:8]).hexdigest())))
                elif code == 10:
                    mechs = [m.decode() for m in body[4:].split(b"\0") if m]
                    if "SCRAM-SHA-256" not in mechs:
                        raise AssertionError(f"no SCRAM-SHA-256 in {mechs}")
                    scram = ScramClient(password)
                    first = scram.client_first()
                    self.send(msg(b"p", cstr("SCRAM-SHA-256") + struct.pack("!I", len(first)) + first))
                elif code == 11:
                    self.send(msg(b"p", scram.client_final(body[4:])))
                elif code == 12:
                    scram.verify_server_final(body[4:])
                else:
                    raise AssertionError(f"unsupported authentication request {code}")
            elif t == b"S":
                k, v = body.split(b"\0")[:2]
                self.params[k.decode()] = v.decode()
            elif t == b"K":
                self.key = struct.unpack("!II", body)
            elif t == b"Z":
                self.status = body
                return negotiate
            elif t == b"N":
                pass
            else:
                raise AssertionError(f"unexpected message {t!r} during login")

    # queries
    def query(self, sql):
        """Simple query; returns (rows, command tags). Raises PgError (after ReadyForQuery)."""
        self.send(query_msg(sql))
        return self.read_results()

    def read_results(self):
        rows, tags, err = [], [], None
        while True:
            t, body = self.recv_msg()
            if t == b"D":
                rows.append(parse_datarow(body))
            elif t == b"C":
                tags.append(body.rstrip(b"\0").decode())
            elif t == b"E":
                err = PgError(parse_error(body))
            elif t == b"Z":
                self.status = body
                if err:
                    raise err
                return rows, tags
            elif t in (b"T", b"I", b"N", b"S", b"1", b"2", b"n", b"A"):
                pass
            else:
                raise AssertionError(f"unexpected message {t!r} in a query result")

    def scalar(self, sql):
        rows, _ = self.query(sql)
        if len(rows) != 1 or len(rows[0]) != 1:
            raise AssertionError(f"{sql!r}: expected one value, got {rows!r}")
        return rows[0][0]

    def expect_fatal(self, code, contains=None, closed=True):
        """The next thing from the proxy is an ErrorResponse with SQLSTATE code (whose message
        contains `contains`), then the connection closes."""
        try:
            t, body = self.recv_msg()
            while t in (b"N", b"S"):
                t, body = self.recv_msg()
        except Closed:
            raise AssertionError(f"connection closed without an ErrorResponse (wanted {code})")
        except socket.timeout:
            raise AssertionError(f"no answer within {TIMEOUT} s (wanted {code}): hang")
        if t != b"E":
            raise AssertionError(f"expected ErrorResponse {code}, got message {t!r} {body[:80]!r}")
        f = parse_error(body)
        if f.get("C") != code:
            raise AssertionError(f"expected SQLSTATE {code}, got {f.get('C')} {f.get('M')!r}")
        if contains and contains not in f.get("M", ""):
            raise AssertionError(f"expected a message containing {contains!r}, got {f.get('M')!r}")
        if closed and not self.is_closed():
            raise AssertionError(f"connection still open {TIMEOUT} s after the {code} error")
        return f


def parse_datarow(body):
    (n,) = struct.unpack("!H", body[:2])
    pos, out = 2, []
    for _ in range(n):
        (ln,) = struct.unpack("!i", body[pos:pos + 4])
        pos += 4
        if ln < 0:
            out.append(None)
        else:
            out.append(body[pos:pos + ln].decode())
            pos += ln
    return out


class ScramClient:
    """RFC 5802 / RFC 7677 client side, without channel binding (gs2 header "n,,")."""

    def __init__(self, password):
        self.password = password.encode()
        self.nonce = base64.b64encode(os.urandom(18)).decode()
        self.first_bare = f"n=,r={self.nonce}"

    def client_first(self):
        return ("n,," + self.first_bare).encode()

    def client_final(self, server_first):
        sf = server_first.decode()
        attrs = dict(a.split("=", 1) for a in sf.split(","))
        if not attrs["r"].startswith(self.nonce) or len(attrs["r"]) <= len(self.nonce):
            raise AssertionError(f"server nonce {attrs['r']!r} does not extend ours")
        salt = base64.b64decode(attrs["s"])
        iters = int(attrs["i"])
        self.salted = hashlib.pbkdf2_hmac("sha256", self.password, salt, iters)
        client_key = hmac.new(self.salted, b"Client Key", hashlib.sha256).digest()
        stored_key = hashlib.sha256(client_key).digest()
        without_proof = f"c=biws,r={attrs['r']}"
        self.auth_message = f"{self.first_bare},{sf},{without_proof}".encode()
        sig = hmac.new(stored_key, self.auth_message, hashlib.sha256).digest()
        proof = bytes(a ^ b for a, b in zip(client_key, sig))
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()

    def verify_server_final(self, server_final):
        sf = server_final.decode()
        if not sf.startswith("v="):
            raise AssertionError(f"bad server-final-message {sf!r}")
        server_key = hmac.new(self.salted, b"Server Key", hashlib.sha256).digest()
        want = hmac.new(server_key, self.auth_message, hashlib.sha256).digest()
        if base64.b64decode(sf[2:]) != want:
            raise AssertionError("the proxy's SCRAM server signature does not verify")


def login(port, **kw):
    c = Conn(port)
    c.login(**kw)
    return c

#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets (tests/fuzz/seeds_NAME/).

  make_seeds.py lexer config scram      from the repository and RFC 5802/7677, deterministic
  make_seeds.py capture PORT            relays psql and pgbench sessions to a PostgreSQL on
                                        127.0.0.1:PORT (user postgres, password in PGPASSWORD,
                                        password_encryption = scram-sha-256, no TLS) and keeps
                                        the server's replies (seeds_proto) and the SCRAM
                                        messages of both sides (seeds_scram/psql*)
  make_seeds.py wire                    hand-written sessions for fuzz_frontend and
                                        fuzz_backend (seeds_*/hand*): SSL and cancel
                                        requests, the admin console, sharding, COPY, SCRAM,
                                        md5 and cleartext logins to servers, odd replies
  make_seeds.py capture-wire PORT       relays psql, pgbench -S -M extended (pgbench -i done
                                        beforehand) and a psycopg 3 session (/usr/bin/python3)
                                        to a PostgreSQL on 127.0.0.1:PORT (user postgres) and
                                        turns what the clients sent into seeds_frontend and
                                        what the server answered into seeds_backend, in the
                                        input formats of fuzz_frontend.c and fuzz_backend.c

Seeds are kept small: a few KB each, at most about 50 files a target.
"""
import base64
import hashlib
import hmac
import os
import re
import select
import socket
import struct
import subprocess
import sys
import tempfile
import threading

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
MAX_SEED = 4096


def write_seeds(name, seeds, prefix="seed"):
    """Writes seeds (bytes) as seeds_NAME/PREFIXnn, dropping duplicates and oversized ones;
    files of an earlier run with the same prefix are replaced."""
    out = os.path.join(HERE, "seeds_" + name)
    os.makedirs(out, exist_ok=True)
    for f in os.listdir(out):
        if f.startswith(prefix):
            os.remove(os.path.join(out, f))
    seen, n = set(), 0
    for s in seeds:
        if len(s) > MAX_SEED or s in seen:
            continue
        seen.add(s)
        with open(os.path.join(out, "%s%02d" % (prefix, n)), "wb") as fh:
            fh.write(s)
        n += 1
    print("seeds_%s: %d %s* files" % (name, n, prefix))


# ---- C string literals of the unit tests ----

def c_unescape(body):
    out, i = bytearray(), 0
    simple = {"n": 10, "t": 9, "r": 13, "0": 0, "\\": 92, "'": 39, '"': 34, "a": 7, "b": 8, "f": 12, "v": 11}
    while i < len(body):
        c = body[i]
        if c != "\\":
            out += c.encode("utf-8")
            i += 1
            continue
        e = body[i + 1]
        if e == "x":
            m = re.match(r"[0-9a-fA-F]+", body[i + 2:])
            out.append(int(m.group(0), 16) & 0xFF)
            i += 2 + len(m.group(0))
        elif e in "01234567":
            m = re.match(r"[0-7]{1,3}", body[i + 1:])
            out.append(int(m.group(0), 8) & 0xFF)
            i += 1 + len(m.group(0))
        else:
            out.append(simple[e])
            i += 2
    return bytes(out)


def c_strings(path):
    """The string constants of a C file (not of its headers) after preprocessing, adjacent
    literals joined."""
    pre = subprocess.run(["cc", "-E", "-I", ROOT, path], capture_output=True, text=True, check=True).stdout
    own, mine = [], False
    for line in pre.splitlines():
        m = re.match(r'# \d+ "([^"]*)"', line)
        if m:
            mine = os.path.abspath(m.group(1)) == os.path.abspath(path)
        elif mine:
            own.append(line)
    pre = "\n".join(own)
    runs, cur = [], None
    for m in re.finditer(r'"((?:[^"\\\n]|\\.)*)"|(\S)', pre):
        if m.group(1) is not None:
            cur = (cur or b"") + c_unescape(m.group(1))
        elif cur is not None:
            runs.append(cur)
            cur = None
    return runs


# ---- lexer: SQL of the parser seeds, the lexer's unit tests and the classify corpus ----

def lexer_seeds():
    """The longest texts of the lexer's unit tests (inputs and expected normalized texts
    alike), every third parser seed, and the classify corpus cut into scripts of a few KB."""
    tests = [s for s in set(c_strings(os.path.join(ROOT, "tests/unit/parser/test_lexer.c")))
             if len(s) >= 6 and b"%" not in s and b" == " not in s and ROOT.encode() not in s]
    seeds = sorted(tests, key=lambda s: (-len(s), s))[:25]
    par = os.path.join(HERE, "seeds_parser")
    seeds += [open(os.path.join(par, f), "rb").read() for f in sorted(os.listdir(par))][::5]
    chunk = b""
    with open(os.path.join(ROOT, "tests/unit/data/classify_corpus.tsv"), "rb") as fh:
        for line in fh:
            if not line.strip() or line.startswith(b"#"):
                continue
            if len(chunk) > 3000:
                seeds.append(chunk)
                chunk = b""
            chunk += line.rstrip(b"\n").split(b"\t", 3)[3] + b";\n"
    return seeds + [chunk]


# ---- config: the example config and the configs of tests/unit/config/test_config.c ----

def config_seeds():
    seeds = [open(os.path.join(ROOT, "config/examples/pgshard.ini"), "rb").read()]
    for s in c_strings(os.path.join(ROOT, "tests/unit/config/test_config.c")):
        if b"\n" in s and (b"[" in s or b"=" in s) and not s.startswith(b"config:"):
            seeds.append(s)
    # Keep the biggest (most keys) first when there are too many.
    head, rest = seeds[:1], sorted(set(seeds[1:]), key=lambda s: (-len(s), s))
    return head + rest[:49]


# ---- scram: RFC 5802 exchanges with the parameters of fuzz_scram.c ----

PASSWORD = b"pencil"
SALT = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
ITER = 4096
CNONCE = "rOprNGfwEbeRWgbNEkqO"
SNONCE = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"


def scram_keys(password, salt, iterations):
    salted = hashlib.pbkdf2_hmac("sha256", password, salt, iterations)
    ck = hmac.new(salted, b"Client Key", "sha256").digest()
    sk = hmac.new(salted, b"Server Key", "sha256").digest()
    return ck, hashlib.sha256(ck).digest(), sk


def scram_final(bare, sfirst, cfinal_wo, password=PASSWORD, salt=SALT, iterations=ITER):
    """client-final-message and server-final-message for one exchange."""
    ck, stored, sk = scram_keys(password, salt, iterations)
    auth = ("%s,%s,%s" % (bare, sfirst, cfinal_wo)).encode()
    proof = bytes(a ^ b for a, b in zip(ck, hmac.new(stored, auth, "sha256").digest()))
    sig = hmac.new(sk, auth, "sha256").digest()
    return cfinal_wo + ",p=" + base64.b64encode(proof).decode(), "v=" + base64.b64encode(sig).decode()


def server_side(gs2, bare, cnonce, cbind="biws", ext="", **kw):
    """client-first NUL client-final, as fuzz_scram's server side expects them."""
    sfirst = "r=%s%s,s=%s,i=%d" % (cnonce, SNONCE, base64.b64encode(SALT).decode(), ITER)
    cfinal, _ = scram_final(bare, sfirst, "c=%s,r=%s%s%s" % (cbind, cnonce, SNONCE, ext), **kw)
    return (gs2 + bare + "\0" + cfinal).encode()


def client_side(snonce, salt, iterations, good=True):
    """server-first NUL server-final, as fuzz_scram's client side expects them."""
    bare = "n=user,r=" + CNONCE
    sfirst = "r=%s%s,s=%s,i=%d" % (CNONCE, snonce, base64.b64encode(salt).decode(), iterations)
    _, sfinal = scram_final(bare, sfirst, "c=biws,r=" + CNONCE + snonce, salt=salt, iterations=iterations)
    return (sfirst + "\0" + (sfinal if good else "e=invalid-proof")).encode()


def scram_seeds():
    psql_nonce = "7GgOqKTFYRTz3fQLc/WsoP6W"
    long_nonce = "x" * 128
    seeds = [
        # RFC 7677 section 3, byte for byte.
        b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO\0"
        b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
        b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096\0"
        b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
        # As libpq sends them: no user name, 24-character nonce.
        server_side("n,,", "n=,r=" + psql_nonce, psql_nonce),
        server_side("y,,", "n=,r=" + psql_nonce, psql_nonce, cbind="eSws"),
        server_side("n,,", "n=a=2Cb=3Dc,r=" + CNONCE + ",x=ext", CNONCE, ext=",y=more"),
        server_side("n,,", "n=,r=" + long_nonce, long_nonce),
        server_side("n,,", "n=,r=" + psql_nonce, psql_nonce, password=b"wrong"),
        server_side("n,,", "n=,r=" + psql_nonce, "other" + psql_nonce),
        server_side("p=tls-server-end-point,,", "n=,r=" + psql_nonce, psql_nonce),
        server_side("n,a=user,", "n=,r=" + psql_nonce, psql_nonce),
        client_side(SNONCE, SALT, 1),
        client_side("3rfcNHYJY1ZVvWVs7j", b"\x01", 16),
        client_side("srv", bytes(range(64)), 2),
        client_side(SNONCE, SALT, 7, good=False),
        b"SCRAM-SHA-256$4096:4GmX+E96n8s7nNndIrSrTQ==$gzzVQW95v+WUleOPCPWQXeWZ8nLg/78AGTwzSh3aTIQ=:"
        b"PZLYuTyssde8Q4IlMQd3kap+Tb/38TbDOcs4g1HLZng=",
    ]
    return seeds


# ---- capture: a relay between psql/pgbench and a running server ----

def relay(cl, port, c2s, s2c):
    """Copies bytes both ways between a client and the server until either side closes."""
    sv = socket.create_connection(("127.0.0.1", port))
    peers = {cl: (sv, c2s), sv: (cl, s2c)}
    while True:
        r, _, _ = select.select(list(peers), [], [], 30)
        data = r and r[0].recv(65536)
        if not data:
            break
        other, log = peers[r[0]]
        log.extend(data)
        other.sendall(data)
    cl.close()
    sv.close()


def run_relayed(port, argv, stdin=None):
    """Runs one client program through a relay; returns (client bytes, server bytes) of each
    of its connections, in the order they were opened."""
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(8)
    lsock.settimeout(0.2)
    conns, threads, done = [], [], threading.Event()

    def accept():
        while not done.is_set():
            try:
                cl, _ = lsock.accept()
            except socket.timeout:
                continue
            conns.append((bytearray(), bytearray()))
            threads.append(threading.Thread(target=relay, args=(cl, port) + conns[-1]))
            threads[-1].start()

    acceptor = threading.Thread(target=accept)
    acceptor.start()
    env = dict(os.environ, PGSSLMODE="disable", PGGSSENCMODE="disable", PGUSER="postgres",
               PGHOST="127.0.0.1", PGPORT=str(lsock.getsockname()[1]), PGDATABASE="postgres")
    try:
        subprocess.run(argv, input=stdin, env=env, capture_output=True, check=False, timeout=60)
    finally:
        done.set()
        acceptor.join()
        for t in threads:
            t.join()
        lsock.close()
    return [(bytes(a), bytes(b)) for a, b in conns]


def frames(stream):
    """Splits a message stream into (type, whole message) pairs."""
    out, off = [], 0
    while off + 5 <= len(stream):
        n = struct.unpack("!I", stream[off + 1:off + 5])[0]
        out.append((stream[off:off + 1], stream[off:off + 1 + n]))
        off += 1 + n
    return out


def replies(stream):
    """The server's stream cut after each ReadyForQuery: one seed a query."""
    seeds, cur = [], b""
    for t, m in frames(stream):
        cur += m
        if t == b"Z":
            seeds.append(cur)
            cur = b""
    return seeds + ([cur] if cur else [])


SQL = r"""
SELECT 1;
SELECT 1 AS a, 'two' AS b, NULL::int AS c, now() IS NOT NULL AS d, 1.5::numeric, '\x00ff'::bytea, ARRAY[1,2];
SELECT g, repeat('x', g) FROM generate_series(1, 20) g;
SELECT 1/0;
SELEC 1;
SELECT * FROM no_such_table;
DO $$BEGIN RAISE NOTICE 'a notice'; END$$;
DO $$BEGIN RAISE WARNING 'w' USING DETAIL = 'detail', HINT = 'hint'; END$$;
DO $$BEGIN RAISE EXCEPTION 'custom' USING ERRCODE = '22023'; END$$;
SET application_name = 'fuzz seeds';
SET TimeZone = 'UTC';
BEGIN;
CREATE TEMP TABLE t (id int PRIMARY KEY, v text);
INSERT INTO t VALUES (1, 'a'), (2, NULL) RETURNING *;
INSERT INTO t VALUES (1, 'dup');
ROLLBACK;
BEGIN READ ONLY;
SELECT 2;
COMMIT;
CREATE TEMP TABLE c (a int, b text);
COPY c FROM STDIN;
1	one
2	\N
\.
COPY c TO STDOUT;
COPY (SELECT 1, 'x') TO STDOUT (FORMAT binary);
LISTEN ch;
NOTIFY ch, 'payload';
SELECT pg_notify('ch', 'second');
UNLISTEN *;
SELECT $1::int + 1 AS p \gdesc
SELECT 1; SELECT 2;
SHOW server_version;
EXPLAIN SELECT 1;
VACUUM c;
SELECT pg_sleep(0) ;
"""

PGBENCH = """\\set a random(1, 100)
SELECT :a::int AS a, 'row ' || :a AS b;
SELECT * FROM generate_series(1, :a % 5 + 1) g;
SELECT 1/(:a - :a);
"""


def scram_of(c2s, s2c):
    """The SCRAM messages of a captured login: (client-first, client-final), (server-first,
    server-final)."""
    cfirst = cfinal = sfirst = sfinal = None
    off = struct.unpack("!I", c2s[:4])[0]  # the startup packet has no type byte
    for t, m in frames(c2s[off:]):
        if t != b"p":
            continue
        if cfirst is None:
            body = m[5:]
            mech_end = body.index(b"\0")
            cfirst = body[mech_end + 5:]
        else:
            cfinal = m[5:]
    for t, m in frames(s2c):
        if t == b"R" and m[5:9] == struct.pack("!I", 11):
            sfirst = m[9:]
        elif t == b"R" and m[5:9] == struct.pack("!I", 12):
            sfinal = m[9:]
    return cfirst + b"\0" + cfinal, sfirst + b"\0" + sfinal


def capture(port):
    (c2s, s2c), = run_relayed(port, ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=0", "-f", "-"], SQL.encode())
    seeds = replies(s2c)
    seeds.append(s2c[:2048])  # the start of a whole session, many messages in one input
    with tempfile.NamedTemporaryFile("w", suffix=".sql") as fh:
        fh.write(PGBENCH)
        fh.flush()
        bench = run_relayed(port, ["pgbench", "-n", "-M", "prepared", "-t", "3", "-f", fh.name])
    for _, bs2c in bench:
        seeds += replies(bs2c)[1:]  # their logins are like psql's
    write_seeds("proto", seeds[:50])
    write_seeds("scram", scram_of(c2s, s2c), prefix="psql")


# ---- capture-wire: whole sessions for fuzz_frontend and fuzz_backend ----

PSYCOPG = r"""
import psycopg
with psycopg.connect(dbname="postgres", user="postgres") as conn:
    conn.execute("SELECT %s::int + 1, %s::text", (41, "x")).fetchall()
    with conn.transaction():
        conn.execute("CREATE TEMP TABLE p (a int, b text)")
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO p VALUES (%s, %s)", [(1, "a"), (2, None)])
            with cur.copy("COPY p FROM STDIN") as copy:
                copy.write_row((3, "c"))
            with cur.copy("COPY p TO STDOUT") as copy:
                for row in copy.rows():
                    pass
        conn.execute("SELECT * FROM p WHERE a = %s", (1,), prepare=True).fetchall()
        conn.execute("SELECT * FROM p WHERE a = %s", (2,), prepare=True).fetchall()
    try:
        conn.execute("SELECT 1/0")
    except psycopg.Error:
        pass
    with conn.pipeline():
        conn.execute("SELECT %s", (1,))
        conn.execute("SELECT %s", (2,))
"""

# fuzz_frontend.c's configs: 0 trust, 1 md5, 2 SCRAM, 3 two shards (trust), 4 tight limits.
WIRE_CONFIGS = {0: 0, 1: 1, 2: 2, 3: 0, 4: 0}
OP_CHUNK, OP_AUTH = 0, 5


def startup_as_app(packet):
    """The startup packet with user and database app (the harness configs' user)."""
    words = packet[8:].split(b"\0")
    pairs = dict(zip(words[0::2], words[1::2]))
    pairs.pop(b"", None)
    pairs[b"user"], pairs[b"database"] = b"app", b"app"
    body = packet[4:8] + b"".join(k + b"\0" + v + b"\0" for k, v in pairs.items()) + b"\0"
    return struct.pack("!I", len(body) + 4) + body


def chunk(data, op=OP_CHUNK):
    return bytes([op]) + struct.pack("!H", len(data)) + data


def frontend_seed(c2s, config, limit=MAX_SEED - 64):
    """A client's stream as fuzz_frontend input: the startup packet, the answers to the
    proxy's password requests left to the harness (auth op), then one chunk a message, the
    last ones cut to fit."""
    n = struct.unpack("!I", c2s[:4])[0]
    out = bytes([config]) + chunk(startup_as_app(c2s[:n]))
    auth_rounds = WIRE_CONFIGS[config]
    out += bytes([OP_AUTH]) * auth_rounds
    for t, m in frames(c2s[n:]):
        if t == b"p":
            continue
        if len(out) + len(m) + 3 > limit:
            break
        out += chunk(m)
    return out


def backend_seeds(s2c):
    """A server's stream as fuzz_backend inputs: the login (its authentication replaced by
    AuthenticationOk: the harness's client and server do not share the capture's password),
    then each reply up to a ReadyForQuery answering a canned client message of the same
    shape: 3 (Parse, Bind, Describe, Execute, Sync) for an extended-protocol reply, else 0
    (a simple Query)."""
    login, cur, replies_ = b"", b"", []
    for t, m in frames(s2c):
        if not login:
            if t == b"R" and m[5:9] != struct.pack("!I", 0):
                continue
            cur += m
            if t == b"Z":
                login, cur = cur, b""
            continue
        cur += m
        if t == b"Z":
            replies_.append(cur)
            cur = b""
    seeds = []
    for i in range(0, len(replies_), 4):
        seed = bytes([0]) + chunk(login)
        for r in replies_[i:i + 4]:
            seed += bytes([4, 3 if r[:1] == b"1" else 0]) + chunk(r)
        seeds.append(seed)
    return seeds


def msg(t, body=b""):
    return t + struct.pack("!I", len(body) + 4) + body


def startup(user=b"app", db=b"app", extra=b""):
    body = struct.pack("!I", 196608) + b"user\0" + user + b"\0database\0" + db + b"\0" + extra + b"\0"
    return struct.pack("!I", len(body) + 4) + body


def q(sql):
    return msg(b"Q", sql + b"\0")


def ext(sql, params=(), name=b""):
    """Parse, Bind, Describe portal, Execute, Sync of one statement with text parameters."""
    out = msg(b"P", name + b"\0" + sql + b"\0" + struct.pack("!H", 0))
    bind = b"\0" + name + b"\0" + struct.pack("!HH", 0, len(params))
    for v in params:
        bind += struct.pack("!I", len(v)) + v
    out += msg(b"B", bind + struct.pack("!H", 0))
    return out + msg(b"D", b"P\0") + msg(b"E", b"\0" + struct.pack("!I", 0)) + msg(b"S")


def frontend_hand_seeds():
    ssl = struct.pack("!II", 8, 80877103)
    gss = struct.pack("!II", 8, 80877104)
    cancel = struct.pack("!IIII", 16, 80877102, 2, 12345)
    seeds = [
        bytes([0]) + chunk(ssl) + chunk(gss) + chunk(startup()) + chunk(q(b"SELECT 1")) + chunk(msg(b"X")),
        bytes([0]) + chunk(startup()) + bytes([6]) + chunk(cancel),
        bytes([0]) + chunk(startup(b"admin", b"pgshard")) + chunk(q(b"SHOW POOLS")) + chunk(q(b"SHOW CLIENTS"))
        + chunk(q(b"SHOW SERVERS")) + chunk(q(b"SHOW STATS")) + chunk(q(b"SHOW CONFIG")) + chunk(q(b"SHOW VERSION")),
        bytes([3]) + chunk(startup()) + chunk(q(b"SELECT * FROM orders WHERE tenant_id = 42"))
        + chunk(q(b"BEGIN")) + chunk(q(b"INSERT INTO orders (tenant_id, v) VALUES (7, 'x')"))
        + chunk(q(b"UPDATE orders SET v = 'y' WHERE tenant_id = 8")) + chunk(q(b"COMMIT"))
        + chunk(q(b"SELECT count(*) FROM orders")) + chunk(q(b"SELECT * FROM accounts WHERE name = 'bob'"))
        + chunk(ext(b"SELECT * FROM orders WHERE tenant_id = $1", [b"5"]))
        + chunk(q(b"SET pgshard.tenant = 3")) + chunk(q(b"SHOW pgshard.tenant")) + chunk(q(b"SELECT 1"))
        + chunk(q(b"/* pgshard: tenant=9 */ SELECT * FROM orders")) + chunk(q(b"SHOW ROUTE SELECT * FROM orders WHERE tenant_id = 1")),
        bytes([0]) + chunk(startup()) + chunk(q(b"COPY t FROM STDIN")) + chunk(msg(b"d", b"1\tx\n"))
        + chunk(msg(b"d", b"2\ty\n")) + chunk(msg(b"c")) + chunk(q(b"COPY t TO STDOUT")) + chunk(q(b"COPY t FROM STDIN"))
        + chunk(msg(b"f", b"no\0")),
        bytes([0]) + chunk(startup()) + chunk(q(b"PREPARE s AS SELECT $1::int")) + chunk(q(b"EXECUTE s(1)"))
        + chunk(q(b"DEALLOCATE s")) + chunk(ext(b"SELECT $1", [b"1"], b"n1")) + chunk(ext(b"SELECT 2", [], b"n1"))
        + chunk(msg(b"C", b"Sn1\0") + msg(b"S")) + chunk(q(b"DISCARD ALL")),
        bytes([1]) + chunk(startup()) + bytes([OP_AUTH]) + chunk(q(b"BEGIN")) + chunk(q(b"SELECT err"))
        + chunk(q(b"SELECT 1")) + chunk(q(b"ROLLBACK")) + chunk(q(b"SET search_path = a")) + chunk(q(b"LISTEN ch")),
        bytes([2]) + chunk(startup()) + bytes([OP_AUTH, OP_AUTH]) + chunk(ext(b"SELECT err", [b"1"]))
        + chunk(ext(b"SELECT 1")) + bytes([7 | 8]) + bytes([7 | 16]),
        bytes([4]) + chunk(startup()) + chunk(q(b"SELECT 1")) + bytes([6]) + chunk(startup())
        + chunk(b"Q" + struct.pack("!I", 9000) + b"SELECT ") + bytes([7 | 24]),
        # a message cut into pieces, and a length the proxy must refuse
        bytes([0]) + chunk(startup()[:5]) + chunk(startup()[5:]) + chunk(q(b"SELECT 1")[:3])
        + chunk(q(b"SELECT 1")[3:]) + chunk(b"Q\xff\xff\xff\xff"),
        bytes([0]) + chunk(struct.pack("!II", 4, 196608)),
        bytes([0]) + chunk(startup(extra=b"options\0-c search_path=x -c pgshard.tenant=4\0")) + chunk(q(b"SHOW search_path")),
    ]
    return seeds


def backend_hand_seeds():
    def ps(k, v):
        return msg(b"S", k + b"\0" + v + b"\0")
    rest = ps(b"server_version", b"15.8") + ps(b"client_encoding", b"UTF8") + ps(b"DateStyle", b"ISO, MDY") \
        + msg(b"K", struct.pack("!II", 77, 88)) + msg(b"Z", b"I")
    ok = msg(b"R", struct.pack("!I", 0))
    login = ok + rest
    row = msg(b"T", struct.pack("!H", 1) + b"a\0" + struct.pack("!IHIhiH", 0, 0, 23, 4, -1, 0)) \
        + msg(b"D", struct.pack("!HI", 1, 1) + b"1") + msg(b"C", b"SELECT 1\0")
    err = msg(b"E", b"SERROR\0C42601\0Msyntax error\0\0")

    def client(i):
        return bytes([4, i])

    z = {c: msg(b"Z", c) for c in (b"I", b"T", b"E", b"X")}
    copy_resp = struct.pack("!BHH", 0, 1, 0)
    return [
        bytes([0, 5, 5, 5]) + chunk(ok + rest) + client(0) + chunk(row + z[b"I"]),
        bytes([0]) + chunk(msg(b"R", struct.pack("!I", 5) + b"salt")) + chunk(login) + client(0) + chunk(row + z[b"I"]),
        bytes([0]) + chunk(msg(b"R", struct.pack("!I", 3))) + chunk(login),
        bytes([0]) + chunk(msg(b"E", b"SFATAL\0C28P01\0Mpassword authentication failed\0\0")),
        bytes([0]) + chunk(login) + client(6) + chunk(msg(b"G", copy_resp)) + client(7)
        + chunk(msg(b"C", b"COPY 1\0") + z[b"I"]) + client(6) + chunk(msg(b"G", copy_resp)) + client(8)
        + chunk(err + z[b"I"]),
        bytes([0]) + chunk(login) + client(14) + chunk(msg(b"H", copy_resp) + msg(b"d", b"1\n") + msg(b"c")
                                                      + msg(b"C", b"COPY 1\0") + z[b"I"]),
        bytes([0]) + chunk(login) + client(15) + chunk(msg(b"C", b"LISTEN\0") + z[b"I"])
        + chunk(msg(b"A", struct.pack("!I", 7) + b"ch\0hi\0")) + chunk(msg(b"N", b"SWARNING\0C01000\0Mw\0\0"))
        + chunk(ps(b"TimeZone", b"UTC")) + client(0) + chunk(row + z[b"I"]),
        bytes([0]) + chunk(login) + client(1) + chunk(msg(b"C", b"BEGIN\0") + z[b"T"]) + client(0)
        + chunk(err + z[b"E"]) + client(2) + chunk(msg(b"C", b"ROLLBACK\0") + z[b"I"]),
        bytes([0]) + chunk(login) + client(3) + chunk(err + z[b"I"]) + client(4)
        + chunk(msg(b"1") + z[b"I"]) + client(5) + chunk(msg(b"2") + row + z[b"I"]) + client(21)
        + chunk(msg(b"3") + z[b"I"]),
        bytes([0]) + chunk(login) + client(10) + chunk(msg(b"1") + msg(b"t", struct.pack("!H", 0))
                                                      + msg(b"n")) + client(18) + chunk(z[b"I"]),
        bytes([0]) + chunk(login) + client(12) + client(0) + chunk(row + z[b"X"]),
        bytes([0]) + chunk(login) + client(20) + chunk(msg(b"V", struct.pack("!i", -1)) + z[b"I"]),
        bytes([0]) + chunk(login) + client(9) + chunk(row + row + z[b"I"]) + client(0)
        + chunk(msg(b"D", b"\x00")) + chunk(b"D\x7f\xff\xff\xff"),
        bytes([3]) + chunk(login) + client(16) + chunk(login) + chunk(row + z[b"I"]) + client(23)
        + chunk(login) + chunk(row + z[b"I"]),
        bytes([1]) + chunk(msg(b"R", struct.pack("!I", 5) + b"salt")) + chunk(login) + client(13)
        + chunk(msg(b"C", b"SET\0") + ps(b"application_name", b"x") + z[b"I"]) + client(17)
        + chunk(msg(b"C", b"DISCARD ALL\0") + z[b"I"]),
    ]


def capture_wire(port):
    sessions = [("psql", run_relayed(port, ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=0", "-f", "-"], SQL.encode()))]
    sessions.append(("pgbench", run_relayed(port, ["pgbench", "-n", "-S", "-M", "extended", "-t", "8"])))
    sessions.append(("psycopg", run_relayed(port, ["/usr/bin/python3", "-c", PSYCOPG])))
    front, back = [], []
    for name, conns in sessions:
        for c2s, s2c in conns:
            if len(c2s) < 8:
                continue
            for config in WIRE_CONFIGS:
                front.append(frontend_seed(c2s, config))
            back += backend_seeds(s2c)[:6]
    write_seeds("frontend", front, prefix="wire")
    write_seeds("backend", back, prefix="wire")


def main():
    if not sys.argv[1:]:
        sys.exit(__doc__)
    if sys.argv[1] == "capture":
        capture(int(sys.argv[2]))
        return
    if sys.argv[1] == "wire":
        write_seeds("frontend", frontend_hand_seeds(), prefix="hand")
        write_seeds("backend", backend_hand_seeds(), prefix="hand")
        return
    if sys.argv[1] == "capture-wire":
        capture_wire(int(sys.argv[2]))
        return
    for name in sys.argv[1:]:
        write_seeds(name, {"lexer": lexer_seeds, "config": config_seeds, "scram": scram_seeds}[name]())


if __name__ == "__main__":
    main()

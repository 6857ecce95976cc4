#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets (tests/fuzz/seeds_NAME/).

  make_seeds.py lexer config scram      from the repository and RFC 5802/7677, deterministic
  make_seeds.py capture PORT            relays psql and pgbench sessions to a PostgreSQL on
                                        127.0.0.1:PORT (user postgres, password in PGPASSWORD,
                                        password_encryption = scram-sha-256, no TLS) and keeps
                                        the server's replies (seeds_proto) and the SCRAM
                                        messages of both sides (seeds_scram/psql*)

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


def main():
    if not sys.argv[1:]:
        sys.exit(__doc__)
    if sys.argv[1] == "capture":
        capture(int(sys.argv[2]))
        return
    for name in sys.argv[1:]:
        write_seeds(name, {"lexer": lexer_seeds, "config": config_seeds, "scram": scram_seeds}[name]())


if __name__ == "__main__":
    main()

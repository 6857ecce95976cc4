#!/usr/bin/env python3
"""Named prepared statements in transaction pooling, checked against PostgreSQL itself.

pgshard registers a client's named statements (protocol-level Parse with a name) by a hash of
their text and parameter types, prepares them lazily on whichever server the client gets as
"pgshard_<hash>", rewrites Bind/Describe/Close names, answers Close itself and fakes 42P05 for
a name the client already has. None of that may be visible: this test is differential. Every
case is a script of exchanges (frontend messages sent in one write, then read until a number
of ReadyForQuery or a given message); each script runs
  - DIRECTLY against shard 0's primary (the reference),
  - through proxy A (transaction pooling, workers = 1, pool_size = 1: every client of the
    script shares one server, which keeps statements prepared by earlier cases),
  - through proxy B (pool_size = 2) as 4 concurrent copies, so that statements are prepared
    again on other server connections in the middle of a client's life,
and the backend messages each client receives must be the same: types in order, and the
contents of DataRow, CommandComplete, RowDescription, ParameterDescription, ReadyForQuery and
ErrorResponse (severity, SQLSTATE, message; a message may name a statement differently,
except 26000/42P05 whose message must name the client's own statement). While the proxies
run, pg_stat_activity must never show more server connections than pool_size.

Environment (set by CTest): PGS_CLUSTER_DIR (a cluster from tests/cluster/cluster.sh),
PGSHARD_BIN, PGS_SRC, PGS_WORK. Prints one line per case and "N passed, M failed"; exits 1
when a case failed. Stdlib only.
"""
import base64
import hashlib
import hmac
import os
import random
import re
import signal
import socket
import struct
import subprocess
import sys
import threading

os.environ["PGWIRE_TEST"] = "t_prepared"
os.environ["PGWIRE_TIMEOUT"] = "4.0"
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pgwire import *  # noqa: E402,F401,F403 (the shared client and environment)


# --------------------------------------------------------------------------- frontend messages

MASK64 = (1 << 64) - 1
INT4, TEXT = 23, 25


def fe_parse(name, sql, types=()):
    return msg(b"P", cstr(name) + cstr(sql) + struct.pack("!H", len(types))
               + b"".join(struct.pack("!I", t) for t in types))


def fe_bind(stmt, params=(), pfmts=(), rfmts=(), portal=""):
    body = cstr(portal) + cstr(stmt) + struct.pack("!H", len(pfmts)) + b"".join(struct.pack("!H", f) for f in pfmts)
    body += struct.pack("!H", len(params))
    for p in params:
        if p is None:
            body += struct.pack("!i", -1)
        else:
            p = p.encode() if isinstance(p, str) else p
            body += struct.pack("!i", len(p)) + p
    body += struct.pack("!H", len(rfmts)) + b"".join(struct.pack("!H", f) for f in rfmts)
    return msg(b"B", body)


def fe_exec(portal="", maxrows=0):
    return msg(b"E", cstr(portal) + struct.pack("!I", maxrows))


def fe_describe(kind, name):
    return msg(b"D", kind + cstr(name))


def fe_close(kind, name):
    return msg(b"C", kind + cstr(name))


SYNC = msg(b"S")
FLUSH = msg(b"H")


def pbe(name, sql, params=(), types=(), pfmts=(), rfmts=()):
    """Parse + Bind + Execute of one statement (no Sync)."""
    return [fe_parse(name, sql, types), fe_bind(name, params, pfmts, rfmts), fe_exec()]


def be(name, params=(), pfmts=(), rfmts=()):
    return [fe_bind(name, params, pfmts, rfmts), fe_exec()]


def internal_name(sql, types=()):
    """The name pgshard gives a statement on its servers (px_hash64 + px_stmt_name)."""
    body = cstr(sql) + struct.pack("!H", len(types)) + b"".join(struct.pack("!I", t) for t in types)
    h = 14695981039346656037
    for b in body:
        h ^= b
        h = (h * 1099511628211) & MASK64
    h ^= h >> 33
    h = (h * 0xff51afd7ed558ccd) & MASK64
    h ^= h >> 33
    return f"pgshard_{h or 1:016x}"


# --------------------------------------------------------------------------- scripts

class Step:
    def __init__(self, client, frames, until, expect, codes, note):
        self.client, self.frames, self.until, self.expect, self.codes, self.note = \
            client, frames, until, expect, codes, note


class Script:
    """Exchanges of one or more clients, in order. `until` is the number of ReadyForQuery
    to read, or (type, n): read until the n-th message of that type (for Flush). `expect`
    (message types, e.g. "12DCZ") and `codes` (SQLSTATEs of the errors) are checked on the
    direct run only: they make sure the script does what the case means to test."""

    def __init__(self, nclients=1):
        self.nclients = nclients
        self.steps = []

    def step(self, frames, until=1, expect=None, codes=None, client=0, note=""):
        if isinstance(frames, bytes):
            frames = [frames]
        flat = []
        for f in frames:
            flat.extend(f if isinstance(f, list) else [f])
        self.steps.append(Step(client, b"".join(flat), until, expect, codes, note))
        return self


def norm_message(t, body):
    """What of a backend message must be identical directly and through the proxy."""
    if t == b"E":
        f = parse_error(body)
        code, text = f.get("C"), f.get("M", "")
        if code not in ("26000", "42P05"):
            text = re.sub(r'prepared statement "[^"]*"', 'prepared statement "<stmt>"', text)
        return ("E", f.get("S"), code, text)
    if t in (b"D", b"T", b"t"):
        return (t.decode(), body)
    if t in (b"C", b"Z"):
        return (t.decode(), body.rstrip(b"\0").decode())
    return (t.decode("latin-1"),)


def show(items, limit=12):
    out = []
    for it in items[:limit]:
        if it[0] == "E":
            out.append(f"E({it[2]} {it[3]!r})")
        elif it[0] == "D":
            out.append(f"D{summarize_row(it[1])}")
        elif it[0] in ("C", "Z"):
            out.append(f"{it[0]}({it[1]})")
        else:
            out.append(it[0])
    if len(items) > limit:
        out.append(f"... ({len(items) - limit} more)")
    return " ".join(out)


def summarize_row(body):
    try:
        vals = parse_datarow(body)
    except Exception:
        return repr(body[:20])
    return "(" + ",".join("NULL" if v is None else v[:20] for v in vals) + ")"


class Failed(Exception):
    pass


def read_step(c, until, items):
    """Reads one step's replies into items (kept when the connection fails half way)."""
    want_type, want_n = (b"Z", until) if isinstance(until, int) else (until[0].encode(), until[1])
    seen = 0
    while seen < want_n:
        t, body = c.recv_msg()
        items.append(norm_message(t, body))
        if t == want_type:
            seen += 1


def run_script(script, port, appname=None):
    """Runs a script; returns (per-step transcripts, problem or None). A script ends with a
    `select` on each client so that a stray message after the last step shows up too."""
    conns, transcripts = [], []
    extra = {"application_name": appname} if appname else None
    try:
        for _ in range(script.nclients):
            c = Conn(port)
            conns.append(c)
            c.login(extra=extra)
    except Exception as e:
        for c in conns:
            c.close()
        return transcripts, f"login failed: {type(e).__name__} {e}"
    steps = list(script.steps) + [Step(i, query_msg(f"select 'end of script, client {i}'"), 1, "TDCZ", None,
                                       "final check") for i in range(script.nclients)]
    problem = None
    for i, st in enumerate(steps):
        c = conns[st.client]
        items = []
        transcripts.append(items)
        try:
            c.send(st.frames)
            read_step(c, st.until, items)
        except Closed:
            items.append(("<connection closed>",))
            problem = f"step {i + 1}: connection closed"
            break
        except (socket.timeout, TimeoutError):
            items.append((f"<no answer within {TIMEOUT:g} s>",))
            problem = f"step {i + 1}: hang"
            break
        except OSError as e:
            items.append((f"<{type(e).__name__}>",))
            problem = f"step {i + 1}: {e}"
            break
    for c in conns:
        c.terminate()
    return transcripts, problem


def check_direct(script, transcripts, problem):
    """The reference run must do what the script expects; otherwise the script is wrong."""
    if problem:
        raise Failed(f"direct run: {problem}")
    for i, (st, items) in enumerate(zip(script.steps, transcripts)):
        types = "".join(it[0] for it in items)
        if st.expect is not None and types != st.expect:
            raise Failed(f"direct run, step {i + 1} ({st.note}): expected {st.expect!r}, PostgreSQL sent "
                         f"{types!r}: {show(items)}")
        codes = [it[2] for it in items if it[0] == "E"]
        if st.codes is not None and codes != st.codes:
            raise Failed(f"direct run, step {i + 1} ({st.note}): expected errors {st.codes}, got {codes}")


def compare(script, ref, got, problem):
    steps = list(script.steps) + [None] * script.nclients
    for i, (r, g) in enumerate(zip(ref, got)):
        if r != g:
            k = next((j for j, (a, b) in enumerate(zip(r, g)) if a != b), min(len(r), len(g)))
            note = steps[i].note if steps[i] else "final check"
            lo = max(0, k - 3)
            leak = any(it[0] == "E" and it[2] in ("26000", "42P05") and "pgshard_" in it[3] and it not in r for it in g)
            raise Failed(f"step {i + 1} ({note}) differs at message {k + 1}: PostgreSQL: "
                         f"{'... ' if lo else ''}{show(r[lo:], 8)} | pgshard: {'... ' if lo else ''}{show(g[lo:], 8)}"
                         + (" (and the proxy's error names its own pgshard_ statement)" if leak else ""))
    if problem or len(got) < len(ref):
        raise Failed(problem or "fewer steps than PostgreSQL")


# --------------------------------------------------------------------------- the cases
#
# Each case_* builds its script for a tag (unique per run, for rows that runs must not share).
# Statement names repeat across cases on purpose: every run uses fresh client connections.

TABLE = "t_prepared_rows"


def case_named_reuse(tag):
    s = Script()
    sql = "select 'reuse'::text as v, 41 + 1 as n"
    s.step(pbe("s_reuse", sql) + [SYNC], expect="12DCZ", note="Parse named + Bind + Execute + Sync")
    for i in range(12):
        s.step(be("s_reuse") + [SYNC], expect="2DCZ", note=f"reuse {i + 1} in a later transaction")
    s.step(be("s_reuse") * 20 + [SYNC], expect="2DC" * 20 + "Z", note="20 Bind/Execute in one pipeline")
    s.step([fe_bind("s_reuse", portal="p1"), fe_exec("p1"), fe_bind("s_reuse"), fe_exec(), SYNC],
           expect="2DC2DCZ", note="named and unnamed portals")
    return s


def case_describe_statement(tag):
    s = Script()
    s.step([fe_parse("s_desc", "select $1::int + 1 as a, $2::text as b, now() as c"), fe_describe(b"S", "s_desc"),
            SYNC], expect="1tTZ", note="Parse + Describe S")
    s.step([fe_describe(b"S", "s_desc"), SYNC], expect="tTZ", note="Describe S in a later transaction")
    s.step([fe_parse("s_desc2", "select $1 || 'x'", [TEXT]), fe_describe(b"S", "s_desc2"),
            fe_bind("s_desc2", ["a"]), fe_describe(b"P", ""), fe_exec(), SYNC],
           expect="1tT2TDCZ", note="Describe S and Describe P")
    s.step([fe_parse("s_nodata", f"insert into {TABLE} (tag, n) select $1, $2 where false", [TEXT, INT4]),
            fe_describe(b"S", "s_nodata"), SYNC], expect="1tnZ", note="Describe S of a statement without rows: NoData")
    s.step([fe_describe(b"S", "s_nodata"), fe_describe(b"S", "s_desc"), SYNC], expect="tntTZ",
           note="two Describes in a later transaction")
    return s


def case_close_reparse(tag):
    s = Script()
    s.step(pbe("s_cl", "select 'first'") + [SYNC], expect="12DCZ", note="Parse s_cl")
    s.step([fe_close(b"S", "s_cl"), SYNC], expect="3Z", note="Close S")
    s.step(be("s_cl") + [SYNC], expect="EZ", codes=["26000"], note="Bind after Close: 26000")
    s.step(pbe("s_cl", "select 'second', 2") + [SYNC], expect="12DCZ", note="re-Parse with different text")
    s.step(be("s_cl") + [SYNC], expect="2DCZ", note="the new text is used")
    s.step([fe_close(b"S", "s_cl")] + pbe("s_cl", "select 'third'") + [SYNC], expect="312DCZ",
           note="Close and re-Parse in one pipeline")
    s.step([fe_close(b"S", "s_cl")] + pbe("s_cl", "select 'third'") + [SYNC], expect="312DCZ",
           note="Close and re-Parse of the same text")
    s.step([fe_close(b"S", "s_never"), fe_close(b"S", "s_never"), SYNC], expect="33Z",
           note="Close of an unknown name")
    s.step([fe_parse("s_cl2", "select 'c2'"), fe_close(b"S", "s_cl2")] + be("s_cl2") + [SYNC], expect="13EZ",
           codes=["26000"], note="Parse, Close, Bind in one pipeline")
    s.step([fe_bind("s_cl", portal="pc"), fe_close(b"P", "pc"), fe_exec("pc"), SYNC], expect="23EZ",
           codes=["34000"], note="Close of a portal")
    return s


def case_duplicate_parse(tag):
    s = Script()
    s.step(pbe("s_dup", "select 'dup'") + [SYNC], expect="12DCZ", note="Parse s_dup")
    s.step(pbe("s_dup", "select 'dup'") + [SYNC], expect="EZ", codes=["42P05"],
           note="Parse of the same name and text: 42P05, Bind/Execute skipped")
    s.step(pbe("s_dup", "select 'other text'") + [SYNC], expect="EZ", codes=["42P05"],
           note="Parse of the same name, other text: 42P05")
    s.step(be("s_dup") + [SYNC], expect="2DCZ", note="the next batch works, with the first text")
    s.step(pbe("s_dup2", "select 'dup2'") + pbe("s_dup", "select 1") + be("s_dup2") + [SYNC], expect="12DCEZ",
           codes=["42P05"], note="42P05 after a successful statement in the same segment")
    s.step(be("s_dup2") + [SYNC] + pbe("s_dup", "select 2") + [SYNC] + be("s_dup") + [SYNC], until=3,
           expect="2DCZEZ2DCZ", codes=["42P05"], note="42P05 in the middle segment of three")
    return s


def case_unknown_name(tag):
    s = Script()
    s.step(be("s_nope") + [SYNC], expect="EZ", codes=["26000"], note="Bind of an unknown name")
    s.step([fe_describe(b"S", "s_nope"), SYNC], expect="EZ", codes=["26000"], note="Describe of an unknown name")
    s.step(pbe("s_known", "select 'known'") + be("s_nope") + pbe("", "select 'skipped'") + [SYNC],
           expect="12DCEZ", codes=["26000"], note="26000 in the middle of a pipeline")
    s.step(be("s_known") + [SYNC], expect="2DCZ", note="the next batch works")
    return s


def case_syntax_error_pipeline(tag):
    s = Script()
    s.step([fe_parse("s_bad", "selec 1"), fe_bind("s_bad"), fe_exec()] + pbe("s_good", "select 'good'") + [SYNC],
           expect="EZ", codes=["42601"], note="P(bad) B E P(good) B E S")
    s.step([fe_parse("", "selec 2"), fe_bind(""), fe_exec()] + pbe("s_good_b", "select 'good b'") + [SYNC],
           expect="EZ", codes=["42601"], note="unnamed P(bad) B E P(good) B E S")
    s.step(pbe("s_after", "select 'after'") + [SYNC], expect="12DCZ", note="the next batch works")
    s.step(pbe("", "select 'unnamed after'") + [SYNC], expect="12DCZ", note="unnamed works too")
    return s


# Known bug: client_parse registers the client's name before the server has prepared the
# statement, and nothing undoes it when the Parse fails or is skipped: 42P05 afterwards.
def case_failed_segment_names(tag):
    s = Script()
    s.step([fe_parse("s_bad", "selec 1"), fe_bind("s_bad"), fe_exec()] + pbe("s_good", "select 'good'") + [SYNC],
           expect="EZ", codes=["42601"], note="P(bad) B E P(good) B E S")
    s.step(pbe("s_good", "select 'good'") + [SYNC], expect="12DCZ",
           note="the skipped Parse did not create s_good: Parse it now")
    s.step(be("s_bad") + [SYNC], expect="EZ", codes=["26000"], note="the failed Parse did not create s_bad")
    s.step(pbe("s_bad", "select 'now good'") + [SYNC], expect="12DCZ", note="s_bad can be parsed now")
    return s


def case_multi_sync(tag):
    s = Script()
    div = "select 100 / ($1 + floor(random() * 0)::int)"  # volatile: fails in Execute, not in Bind
    s.step(pbe("s_div", div, ["4"], [INT4]) + [SYNC] + be("s_div", ["0"]) + [SYNC] + be("s_div", ["5"]) + [SYNC],
           until=3, expect="12DCZ2EZ2DCZ", codes=["22012"], note="ok / division by zero / ok")
    s.step(be("s_nope") + [SYNC] + be("s_div", ["10"]) + [SYNC] + [fe_parse("", "selec")] + [SYNC]
           + be("s_div", ["20"]) + [SYNC], until=4, expect="EZ2DCZEZ2DCZ", codes=["26000", "42601"],
           note="26000 / ok / syntax error / ok")
    s.step(pbe("s_ms2", "select 'ms2'") + [SYNC] + pbe("s_div", div, ["1"], [INT4]) + [SYNC] + be("s_ms2") + [SYNC],
           until=3, expect="12DCZEZ2DCZ", codes=["42P05"], note="ok / 42P05 / ok")
    return s


# Known bug: px_server_ensure_stmt marks the statement prepared when it sends the Parse; a
# later segment's Parse of that text is answered with a fake ParseComplete, and its Bind hits
# 26000 naming pgshard_<hash>, when the first Parse was skipped after an error.
def case_skipped_parse_next_segment(tag):
    s = Script()
    s.step(be("s_nope") + pbe("s_a", "select 'shared text'") + [SYNC] + pbe("s_b", "select 'shared text'") + [SYNC],
           until=2, expect="EZ12DCZ", codes=["26000"],
           note="segment 1 fails before P(s_a); segment 2 parses the same text as s_b")
    s.step(pbe("s_a", "select 'shared text'") + [SYNC], expect="12DCZ", note="s_a was never created")
    return s


# Known bug: as above, with a Parse that fails itself: ParseComplete + 26000 pgshard_<hash>.
def case_same_bad_text_two_segments(tag):
    s = Script()
    s.step([fe_parse("s_x1", "selec 'x'"), SYNC] + pbe("s_x2", "selec 'x'") + [SYNC], until=2, expect="EZEZ",
           codes=["42601", "42601"], note="the same invalid statement in two segments: two syntax errors")
    return s


def case_params_formats(tag):
    s = Script()
    sql = "select $1 + 1 as i, $2 || '!' as t, $1 is null as n"
    s.step(pbe("s_par", sql, ["41", "text"], [INT4, TEXT]) + [SYNC], expect="12DCZ", note="text parameters")
    s.step(be("s_par", [struct.pack("!i", 41), b"binary"], [1, 1], [1, 1, 1]) + [SYNC], expect="2DCZ",
           note="binary parameters and results")
    s.step(be("s_par", [struct.pack("!i", -7), b"mixed"], [1, 0], [0, 1, 0]) + [SYNC], expect="2DCZ",
           note="mixed formats")
    s.step(be("s_par", [None, None], [1], [1]) + [SYNC], expect="2DCZ", note="NULLs, one format for all")
    s.step([fe_describe(b"S", "s_par"), SYNC], expect="tTZ", note="Describe S shows int4, text")
    s.step(be("s_par", ["1"]) + [SYNC], expect="EZ", codes=["08P01"], note="too few parameters")
    s.step(be("s_par", ["x", "y"]) + [SYNC], expect="EZ", codes=["22P02"], note="a bad int4")
    s.step(pbe("s_untyped", "select $1::int * 2, $2::text") + [SYNC], expect="1EZ", codes=["08P01"],
           note="no parameter values for an untyped statement")
    s.step(be("s_untyped", ["21", "z"]) + [SYNC], expect="2DCZ", note="untyped parameters, later batch")
    s.step([fe_parse("s_rows", "select g, repeat('r', g) from generate_series(1, $1) g", [INT4]),
            fe_bind("s_rows", ["5"], portal="pr"), fe_exec("pr", 2), fe_exec("pr", 2), fe_exec("pr", 2), SYNC],
           expect="12DDsDDsDCZ", note="a named portal fetched 2 rows at a time")
    return s


def case_flush(tag):
    s = Script()
    s.step(pbe("s_fl", "select 'flushed'") + [FLUSH], until=("C", 1), expect="12DC", note="P B E Flush")
    s.step(be("s_fl") + [FLUSH], until=("C", 1), expect="2DC", note="B E Flush, still unsynced")
    s.step([SYNC], expect="Z", note="Sync")
    s.step([fe_parse("s_fl2", "select 'flushed'"), FLUSH], until=("1", 1), expect="1",
           note="Parse of a text the server has, Flush")
    s.step(be("s_fl2") + [FLUSH], until=("C", 1), expect="2DC", note="B E Flush")
    s.step([fe_describe(b"S", "s_fl2"), FLUSH], until=("T", 1), expect="tT", note="Describe S Flush")
    s.step([fe_close(b"S", "s_fl2"), FLUSH], until=("3", 1), expect="3", note="Close S Flush")
    s.step(be("s_fl2") + [SYNC], expect="EZ", codes=["26000"], note="Bind after the Close, Sync")
    s.step([fe_parse("s_fl3", "select 'fl3'"), FLUSH], until=("1", 1), expect="1", note="new Parse, Flush")
    s.step(be("s_fl3") + [SYNC], expect="2DCZ", note="B E Sync")
    return s


# Known bug: after an error reported at a Flush, server_skip_to_sync empties the reply queue;
# the messages the client sends next (up to Sync) are queued as owed although the server
# skips them, and its ReadyForQuery is taken for a desync: 08006 and the connection closes.
def case_flush_after_error(tag):
    s = Script()
    s.step(pbe("", "select 1 / floor(random() * 0)::int") + [FLUSH], until=("E", 1), expect="12E", codes=["22012"],
           note="unnamed P B E Flush: the error comes at once")
    s.step(pbe("", "select 'skipped'") + [SYNC], expect="Z", note="the rest of the segment is skipped up to Sync")
    s.step(pbe("", "select 'after'") + [SYNC], expect="12DCZ", note="the next segment works")
    return s


# Known bug: as above; also a fake ParseComplete is sent for a Parse the server skips.
def case_flush_after_error_named(tag):
    s = Script()
    s.step(pbe("s_fe", "select 'fe'") + [SYNC], expect="12DCZ", note="s_fe exists")
    s.step(be("s_nope") + [FLUSH], until=("E", 1), expect="E", codes=["26000"], note="Bind unknown, Flush")
    s.step(pbe("s_fe2", "select 'fe'") + be("s_fe") + [fe_close(b"S", "s_fe"), fe_parse("s_fe", "select 1"), SYNC],
           expect="Z", note="named Parse/Bind/Close/42P05 after the error are skipped")
    s.step(be("s_fe") + [SYNC], expect="2DCZ", note="s_fe is still there")
    s.step(pbe("s_fe2", "select 'fe2'") + [SYNC], expect="12DCZ", note="s_fe2 was never created")
    return s


def case_unnamed_interleaved(tag):
    s = Script()
    s.step(pbe("", "select 'u1'") + pbe("s_n1", "select 'n1'") + pbe("", "select 'u2'") + be("s_n1")
           + [fe_bind(""), fe_exec()] + [SYNC], expect="12DC12DC12DC2DC2DCZ", note="unnamed/named interleaved")
    s.step([fe_parse("", "select $1::int * 3"), fe_parse("s_n2", "select $1::int * 5")] + be("", ["2"]) + be("s_n2", ["2"])
           + [fe_describe(b"S", ""), fe_describe(b"S", "s_n2"), SYNC], expect="112DC2DCtTtTZ",
           note="Parse unnamed and named, Bind both, Describe both")
    s.step(be("s_n2", ["7"]) + [fe_parse("", "select $1::int * 3")] + be("", ["7"]) + [SYNC], expect="2DC12DCZ",
           note="the named statement of the last batch, the unnamed one parsed again")
    return s


def case_transaction(tag):
    s = Script()
    set_sql = "select set_config('statement_timeout', $1, true)"
    get_sql = "select current_setting('statement_timeout')"
    s.step(query_msg("begin"), expect="CZ", note="BEGIN (simple query)")
    s.step(pbe("s_set", set_sql, ["1234ms"], [TEXT]) + [SYNC], expect="12DCZ", note="SET LOCAL via a named statement")
    s.step(pbe("s_get", get_sql) + [SYNC], expect="12DCZ", note="read it back in the same transaction")
    s.step(be("s_get") + [SYNC], expect="2DCZ", note="again")
    s.step([fe_parse("", "select 'unnamed in tx'"), SYNC], expect="1Z", note="unnamed Parse + Sync in the transaction")
    s.step(be("") + [SYNC], expect="2DCZ", note="the unnamed statement lives on in the transaction")
    s.step(query_msg("commit"), expect="CZ", note="COMMIT")
    s.step(be("s_get") + [SYNC], expect="2DCZ", note="after COMMIT: the default again")
    s.step(query_msg("begin"), expect="CZ", note="BEGIN")
    s.step(be("s_set", ["77ms"]) + be("s_get") + [SYNC], expect="2DC2DCZ", note="both statements in one pipeline")
    s.step(pbe("s_div0", "select 1 / floor(random() * 0)::int") + [SYNC], expect="12EZ", codes=["22012"],
           note="an error aborts the transaction")
    s.step(be("s_get") + [SYNC], expect="EZ", codes=["25P02"], note="25P02 in the aborted transaction")
    s.step(query_msg("rollback"), expect="CZ", note="ROLLBACK")
    s.step(be("s_get") + [SYNC], expect="2DCZ", note="works after ROLLBACK")
    s.step(be("s_div0") + [SYNC], expect="2EZ", codes=["22012"], note="s_div0 was created before its error")
    return s


# Known bug: the proxy's own 42P05 does not abort the server's transaction: ReadyForQuery T
# instead of E, and the transaction goes on.
def case_dup_parse_in_transaction(tag):
    s = Script()
    s.step(pbe("s_dt", "select 'dt'") + [SYNC], expect="12DCZ", note="s_dt exists")
    s.step(query_msg("begin"), expect="CZ", note="BEGIN")
    s.step([fe_parse("s_dt", "select 'dt'"), SYNC], expect="EZ", codes=["42P05"],
           note="42P05 inside a transaction block aborts it (ReadyForQuery E)")
    s.step(be("s_dt") + [SYNC], expect="EZ", codes=["25P02"], note="the transaction is aborted")
    s.step(query_msg("rollback"), expect="CZ", note="ROLLBACK")
    return s


# Known bug: the proxy's own 42P05 does not roll back the segment's implicit transaction:
# an INSERT before it in the same segment is committed.
def case_dup_parse_rolls_back_segment(tag):
    s = Script()
    s.step(pbe("s_dr", "select 'dr'") + [SYNC], expect="12DCZ", note="s_dr exists")
    s.step(pbe("s_ins", f"insert into {TABLE} (tag, n) values ($1, 1)", [tag], [TEXT]) + [fe_parse("s_dr", "select 'dr'"),
                                                                                     SYNC],
           expect="12CEZ", codes=["42P05"], note="INSERT then 42P05 in one segment")
    s.step(pbe("s_cnt", f"select count(*) from {TABLE} where tag = $1", [tag], [TEXT]) + [SYNC], expect="12DCZ",
           note="the error rolled the INSERT back")
    return s


# Known bug: one fake_err buffer per client: a second 42P05 queued before the first was sent
# overwrites it, and both errors name the second statement.
def case_two_dups_one_pipeline(tag):
    s = Script()
    s.step(pbe("s_d1", "select 'd1'") + pbe("s_d2", "select 'd2'") + [SYNC], expect="12DC12DCZ", note="s_d1, s_d2")
    s.step(pbe("s_d3", "select 'd3'") + [fe_parse("s_d1", "select 1"), SYNC, fe_parse("s_d2", "select 2"), SYNC], until=2,
           expect="12DCEZEZ", codes=["42P05", "42P05"], note="two 42P05 in one write: each names its statement")
    return s


# Known bug: 42P05 is decided before PostgreSQL would parse the text; PostgreSQL reports the
# syntax error first.
def case_dup_parse_bad_sql(tag):
    s = Script()
    s.step(pbe("s_db", "select 'db'") + [SYNC], expect="12DCZ", note="s_db exists")
    s.step([fe_parse("s_db", "selec 'db'"), SYNC], expect="EZ", codes=["42601"],
           note="Parse of an existing name with invalid SQL: PostgreSQL reports the syntax error")
    return s


# Known bug: Close 'S' drops the client's name at once, even when PostgreSQL would skip the
# Close because an earlier message of the segment failed.
def case_close_in_failed_segment(tag):
    s = Script()
    s.step(pbe("s_cf", "select 'cf'") + [SYNC], expect="12DCZ", note="s_cf exists")
    s.step(be("s_nope") + [fe_close(b"S", "s_cf"), SYNC], expect="EZ", codes=["26000"],
           note="Close after an error is skipped")
    s.step(be("s_cf") + [SYNC], expect="2DCZ", note="s_cf still exists")
    return s


# Known bug: a Parse of a text the server already has is answered with a fake ParseComplete
# even in an aborted transaction (PostgreSQL: 25P02), and the name is created.
def case_parse_in_aborted_transaction(tag):
    s = Script()
    s.step(pbe("s_pa", "select 'pa'") + [SYNC], expect="12DCZ", note="the text is prepared on the server")
    s.step(query_msg("begin; select 1 / 0"), expect="CEZ", codes=["22012"], note="an aborted transaction")
    s.step(pbe("s_pa2", "select 'pa'") + [SYNC], expect="EZ", codes=["25P02"],
           note="Parse of a known text under a new name: 25P02")
    s.step(query_msg("rollback"), expect="CZ", note="ROLLBACK")
    s.step(be("s_pa2") + [SYNC], expect="EZ", codes=["26000"], note="s_pa2 was not created")
    return s


def case_cross_client(tag):
    s = Script(nclients=2)
    sql = "select 'shared by name and text'"
    s.step(pbe("s_sh", sql) + [SYNC], client=0, expect="12DCZ", note="A: Parse s_sh")
    s.step(be("s_sh") + [SYNC], client=1, expect="EZ", codes=["26000"], note="B: s_sh is not B's")
    s.step(pbe("s_sh", sql) + [SYNC], client=1, expect="12DCZ", note="B: Parse s_sh, same text")
    s.step(be("s_sh") + [SYNC], client=0, expect="2DCZ", note="A: s_sh")
    s.step([fe_close(b"S", "s_sh"), SYNC], client=1, expect="3Z", note="B: Close s_sh")
    s.step(be("s_sh") + [SYNC], client=0, expect="2DCZ", note="A: s_sh still works")
    s.step(be("s_sh") + [SYNC], client=1, expect="EZ", codes=["26000"], note="B: s_sh is gone")
    s.step(pbe("s_sh", "select 'B has its own text'") + [SYNC], client=1, expect="12DCZ", note="B: other text")
    s.step(be("s_sh") + [SYNC], client=0, expect="2DCZ", note="A: still A's text")
    s.step(be("s_sh") + [SYNC], client=1, expect="2DCZ", note="B: B's text")
    s.step([fe_describe(b"S", "s_sh"), SYNC], client=0, expect="tTZ", note="A: Describe")
    return s


# Known bug: the server-side names pgshard_<hash> are visible to every client of the pool;
# a Bind/Describe of such a name that the client never prepared passes through and runs.
def case_internal_name(tag):
    s = Script(nclients=2)
    sql = "select 'only for A'"
    s.step(pbe("s_in", sql) + [SYNC], client=0, expect="12DCZ", note="A: Parse")
    s.step(be(internal_name(sql)) + [SYNC], client=1, expect="EZ", codes=["26000"],
           note="B: Bind of the proxy's server-side name pgshard_<hash>")
    return s


def case_many_statements(tag):
    n = 600
    s = Script()
    frames = []
    for i in range(n):
        frames += pbe(f"s_m{i}", f"select {i} as m{i}")
    s.step(frames + [SYNC], expect="12DC" * n + "Z", note=f"{n} named statements in one pipeline")
    frames = []
    for i in range(20):
        frames += be(f"s_m{i}")
    s.step(frames + [SYNC], expect="2DC" * 20 + "Z", note="the first 20 again")
    for i in (0, 1, 599, 300, 2):
        s.step(be(f"s_m{i}") + [SYNC], expect="2DCZ", note=f"s_m{i} alone")
    frames = []
    for i in range(n):
        frames += be(f"s_m{i}")
    s.step(frames + [SYNC], expect="2DC" * n + "Z", note=f"all {n} again")
    s.step([fe_describe(b"S", "s_m0"), fe_describe(b"S", "s_m599"), SYNC], expect="tTtTZ", note="Describe first, last")
    return s


def case_sql_and_protocol_one_namespace(tag):
    s = Script()
    s.step(query_msg("prepare s_sql(int) as select $1 * 3 as t"), expect="CZ", note="SQL PREPARE s_sql")
    s.step(be("s_sql", ["7"]) + [SYNC], expect="2DCZ", note="protocol Bind/Execute of the SQL statement")
    s.step([fe_describe(b"S", "s_sql"), SYNC], expect="tTZ", note="protocol Describe of the SQL statement")
    s.step(pbe("s_proto", "select $1::int + 100 as p", ["1"], [INT4]) + [SYNC], expect="12DCZ",
           note="protocol Parse s_proto")
    s.step(query_msg("execute s_proto(5)"), expect="TDCZ", note="SQL EXECUTE of the protocol statement")
    s.step(query_msg("prepare s_proto as select 1"), expect="EZ", codes=["42P05"],
           note="SQL PREPARE of a protocol name: 42P05")
    s.step(pbe("s_sql", "select 2") + [SYNC], expect="EZ", codes=["42P05"],
           note="protocol Parse of a SQL name: 42P05")
    s.step(query_msg("deallocate s_proto"), expect="CZ", note="SQL DEALLOCATE of the protocol statement")
    s.step(be("s_proto", ["1"]) + [SYNC], expect="EZ", codes=["26000"], note="then its Bind: 26000")
    s.step([fe_close(b"S", "s_sql"), SYNC], expect="3Z", note="protocol Close of the SQL statement")
    s.step(query_msg("execute s_sql(1)"), expect="EZ", codes=["26000"], note="then its EXECUTE: 26000")
    return s


CASES = [
    ("named Parse/Bind/Execute/Sync, reused in later transactions", case_named_reuse),
    ("Describe statement (ParameterDescription + RowDescription, NoData)", case_describe_statement),
    ("Close statement, re-Parse with other text; Close portal", case_close_reparse),
    ("Parse of an existing name: 42P05, skip to Sync, next batch works", case_duplicate_parse),
    ("Bind/Describe of an unknown name: 26000", case_unknown_name),
    ("syntax error in P(bad) B E P(good) B E S: one error, skip to Sync", case_syntax_error_pipeline),
    ("names from a failed segment do not exist afterwards", case_failed_segment_names),
    ("several Syncs in one pipeline, one segment errors", case_multi_sync),
    ("statement skipped in a failed segment, same text in the next segment", case_skipped_parse_next_segment),
    ("the same invalid statement in two Sync segments", case_same_bad_text_two_segments),
    ("parameters $1 int, $2 text in text and binary formats; named portal", case_params_formats),
    ("Flush instead of Sync in the middle", case_flush),
    ("error then Flush; rest of the segment sent after reading the error", case_flush_after_error),
    ("error then Flush; named Parse/Bind/Close after it are skipped", case_flush_after_error_named),
    ("unnamed statements interleaved with named ones", case_unnamed_interleaved),
    ("BEGIN (simple query), named statements inside, COMMIT / ROLLBACK", case_transaction),
    ("42P05 inside a transaction block aborts it", case_dup_parse_in_transaction),
    ("42P05 rolls back its segment's implicit transaction", case_dup_parse_rolls_back_segment),
    ("two 42P05 in one write name their own statements", case_two_dups_one_pipeline),
    ("Parse of an existing name with invalid SQL: 42601 first", case_dup_parse_bad_sql),
    ("Close after an error in the same segment is skipped", case_close_in_failed_segment),
    ("named Parse in an aborted transaction: 25P02", case_parse_in_aborted_transaction),
    ("client B uses A's statement text and name; B's Close leaves A's", case_cross_client),
    ("another client cannot Bind the proxy's pgshard_<hash> name", case_internal_name),
    ("600 named statements (server cap 512), the first ones again", case_many_statements),
    ("SQL PREPARE and protocol Parse share one namespace", case_sql_and_protocol_one_namespace),
]


# --------------------------------------------------------------------------- the runs

STARTED = []
SERVER_STMTS_MAX = 512  # PX_SERVER_STMTS_MAX in proxy/prepared.h
MONITOR_APP = "t_prepared_monitor"
DIRECT_APP = "t_prepared_direct"


def start_proxy(name, **keys):
    p = Proxy(name, **keys)
    STARTED.append(p)
    return p


class ServerCounter(threading.Thread):
    """Counts the proxy's server connections on the primary (application_name is empty for
    them) every 10 ms through a direct connection; remembers the maximum."""

    SQL = ("select count(*) from pg_stat_activity where usename = current_user "
           "and backend_type = 'client backend' and application_name = ''")

    def __init__(self):
        super().__init__(daemon=True)
        self.conn = Conn(PG_PORT)
        self.conn.login(extra={"application_name": MONITOR_APP})
        self.stop_ev = threading.Event()
        self.max = 0
        self.samples = 0
        self.error = None
        self.case = None
        self.max_case = None

    def count(self):
        return int(self.conn.scalar(self.SQL))

    def run(self):
        try:
            while not self.stop_ev.is_set():
                n = self.count()
                self.samples += 1
                if n > self.max:
                    self.max, self.max_case = n, self.case
                self.stop_ev.wait(0.01)
        except Exception as e:
            self.error = f"{type(e).__name__} {e}"

    def finish(self):
        self.stop_ev.set()
        self.join(5)
        self.conn.terminate()


def active_cases():
    return list(CASES)


def run_phase(label, proxy_keys, copies, reference, failures, extra_results):
    """Runs every active case through a fresh proxy; copies > 1 runs that many copies of each
    script at once, in threads. Adds failure texts to failures[case]."""
    name = f"proxy_{label}"
    proxy = start_proxy(name, **proxy_keys)
    pool_size = proxy_keys["pool_size"]
    wait_until(lambda: (lambda n: n == 0 or f"{n} server connections")(server_count()), 5,
               "server connections of an earlier proxy are still there")
    counter = ServerCounter()
    counter.start()
    stop_problems = []
    for cname, fn in active_cases():
        if cname not in reference:
            continue
        counter.case = cname
        if not proxy.alive():
            stop_problems.append(stop_problem(proxy))
            proxy = start_proxy(f"{name}_{len(STARTED)}", **proxy_keys)
        results = [None] * copies

        def one(k, port=proxy.port):
            tag = f"{label}{k}-{os.getpid()}"
            script = fn(tag)
            results[k] = (script,) + run_script(script, port)

        threads = [threading.Thread(target=one, args=(k,), daemon=True) for k in range(copies)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        for k, res in enumerate(results):
            who = f"[{label}" + (f" client set {k + 1}/{copies}" if copies > 1 else "") + "]"
            if res is None:
                failures[cname].append(f"{who} did not finish within 60 s")
                continue
            script, got, problem = res
            try:
                compare(script, reference[cname], got, problem)
            except Failed as e:
                failures[cname].append(f"{who} {e}")
        if not proxy.alive():
            failures[cname].append(f"[{label}] the proxy died (status {proxy.proc.returncode}):\n{proxy.log_tail(15)}")
    counter.finish()
    if label == "A" and proxy.alive():
        # Through the one server of proxy A: after 600 statements it holds at most 512 of them.
        what = f"{label}: the server holds at most {SERVER_STMTS_MAX} pgshard_ statements (and uses the cache)"
        try:
            c = login(proxy.port)
            n = int(c.scalar("select count(*) from pg_prepared_statements where name like 'pgshard\\_%'"))
            c.terminate()
            ok = 100 <= n <= SERVER_STMTS_MAX
            extra_results.append((f"{what}: {n}", None if ok else f"pg_prepared_statements has {n} pgshard_ statements"))
        except Exception as e:
            extra_results.append((what, f"{type(e).__name__} {e}"))
    what = f"{label}: server connections <= pool_size {pool_size} (pg_stat_activity, {counter.samples} samples)"
    if counter.error:
        extra_results.append((what, f"the counting connection failed: {counter.error}"))
    elif counter.max > pool_size:
        extra_results.append((what, f"saw {counter.max} server connections (during {counter.max_case!r})"))
    elif counter.max < pool_size:
        # B must have used both servers, or nothing was prepared again on another one.
        extra_results.append((what, f"never saw more than {counter.max} server connection(s): the count does "
                                    f"not work or the cases did not use the whole pool"))
    else:
        extra_results.append((what, None))
    stop_problems.append(stop_problem(proxy))
    problems = [p for p in stop_problems if p]
    extra_results.append((f"{label}: SIGTERM -> exit 0, no sanitizer report in the log", "; ".join(problems) or None))


def stop_problem(proxy):
    try:
        proxy.stop()
        return None
    except AssertionError as e:
        return str(e)


def server_count():
    c = Conn(PG_PORT)
    c.login(extra={"application_name": MONITOR_APP})
    try:
        return int(c.scalar(ServerCounter.SQL))
    finally:
        c.terminate()


def main():
    os.makedirs(WORK, exist_ok=True)
    t_start = time.monotonic()
    psql(f"set client_min_messages = warning; drop table if exists {TABLE}; "
         f"create table {TABLE} (tag text, n int); grant all on {TABLE} to {USER}")
    failures = {name: [] for name, _ in CASES}
    reference = {}
    extra_results = []
    try:
        for name, fn in active_cases():
            script = fn(f"d-{os.getpid()}")
            got, problem = run_script(script, PG_PORT, appname=DIRECT_APP)
            try:
                check_direct(script, got, problem)
                reference[name] = got
            except Failed as e:
                failures[name].append(f"[direct] {e}")
        run_phase("A", {"workers": 1, "pool_size": 1}, 1, reference, failures, extra_results)
        run_phase("B", {"workers": 1, "pool_size": 2}, 4, reference, failures, extra_results)
    finally:
        for p in STARTED:
            p.kill()
        try:
            psql(f"drop table if exists {TABLE}")
        except Exception:
            pass
    passed = failed = 0
    for name, fn in CASES:
        errs = failures[name]
        if errs:
            failed += 1
            print(f"FAIL {name}: " + "\n     ".join(errs[:5]) + (f"\n     ... {len(errs) - 5} more" if len(errs) > 5 else ""),
                  flush=True)
        else:
            passed += 1
            print(f"ok   {name}", flush=True)
    for name, err in extra_results:
        if err:
            failed += 1
            print(f"FAIL {name}: {err}", flush=True)
        else:
            passed += 1
            print(f"ok   {name}", flush=True)
    print(f"({time.monotonic() - t_start:.1f} s)")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Startup parameters are the session's defaults, through pgshard as on PostgreSQL.

A client that connects with DateStyle, TimeZone, extra_float_digits or search_path in its
startup packet (PGDATESTYLE, PGTZ, options=-c ...) and later runs RESET name, RESET ALL,
SET name TO DEFAULT or DISCARD ALL must get its startup value back, not the server's own;
and the ParameterStatus messages it receives (psycopg's info.parameter_status, read right
after the statement returns) must say so. Each script runs on a direct connection to shard
0's primary (the reference) and through pgshard in transaction pooling (pool_size 1, so
that a second client with other settings uses the same server between the steps) and in
session pooling; simple protocol (psql and psycopg's pgconn) and extended protocol
(psycopg's execute). The transcripts must be equal.

Environment (set by CTest): PGS_CLUSTER_DIR, PGSHARD_BIN, PGS_SRC, PGS_WORK. Prints one line
per check and "N passed, M failed".
"""
import os
import subprocess
import sys

import need_psycopg  # noqa: E402,F401 (runs this test again under /usr/bin/python3 if need be)
import psycopg  # noqa: E402

os.environ["PGWIRE_TEST"] = "t_reset"
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pgwire  # noqa: E402
from pgwire import CENV, DB, PASSWORD, PG_HOST, PG_PORT, USER  # noqa: E402

report = pgwire.Report()
OPTIONS = "-c extra_float_digits=1 -c search_path=pg_catalog,public"
ENV = {"PGDATESTYLE": "Postgres, DMY", "PGTZ": "Asia/Tokyo"}


def connect(port):
    old = {k: os.environ.get(k) for k in ENV}
    os.environ.update(ENV)
    try:
        return psycopg.connect(host=PG_HOST, port=port, user=USER, password=PASSWORD, dbname=DB,
                               autocommit=True, options=OPTIONS)
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def simple(c, sql):
    """A simple-protocol Query through libpq; the first row's values, or the error's SQLSTATE."""
    pg = c.pgconn
    pg.send_query(sql.encode())
    out = None
    while (r := pg.get_result()) is not None:
        if r.error_message:
            out = ("error", r.error_field(psycopg.pq.DiagnosticField.SQLSTATE))
        elif r.ntuples and out is None:
            out = tuple(r.get_value(0, i).decode() for i in range(r.nfields))
    return out


def reported(c):
    return tuple(c.info.parameter_status(n) for n in ("DateStyle", "TimeZone"))


SETTINGS = "SELECT current_setting('DateStyle'), current_setting('TimeZone'), " \
           "current_setting('extra_float_digits'), current_setting('search_path'), '2020-03-04'::date::text"


def script(port, other_port):
    """The transcript of one client; a second client of the same proxy runs its own SETs in
    between, so that in transaction pooling the first one's next server was another's."""
    c = connect(port)
    other = psycopg.connect(host=PG_HOST, port=other_port, user=USER, password=PASSWORD, dbname=DB,
                            autocommit=True)
    t = []

    def step(note, fn):
        t.append((note, fn()))
        other.execute("SET datestyle = 'German'; SET timezone = 'UTC'; SET extra_float_digits = 3")

    step("startup values", lambda: (reported(c), simple(c, SETTINGS)))
    step("SET", lambda: (simple(c, "SET datestyle = 'SQL, MDY'"), simple(c, "SET timezone = 'Europe/Paris'"),
                         simple(c, "SET extra_float_digits = 0"), reported(c), simple(c, SETTINGS)))
    step("RESET datestyle (simple)", lambda: (simple(c, "RESET datestyle"), reported(c), simple(c, SETTINGS)))
    step("RESET timezone (extended)",
         lambda: (c.execute("RESET timezone").statusmessage, reported(c), simple(c, SETTINGS)))
    step("RESET ALL (simple)", lambda: (simple(c, "SET datestyle = 'ISO'"), simple(c, "SET timezone = 'UTC'"),
                                        simple(c, "RESET ALL"), reported(c), simple(c, SETTINGS)))
    step("SET TO DEFAULT (extended)",
         lambda: (c.execute("SET datestyle = 'ISO, YMD'").statusmessage, reported(c),
                  c.execute("SET datestyle TO DEFAULT").statusmessage, reported(c), simple(c, SETTINGS)))
    step("RESET in a transaction, committed",
         lambda: (simple(c, "BEGIN"), simple(c, "SET timezone = 'UTC'"), simple(c, "COMMIT"),
                  simple(c, "BEGIN"), simple(c, "RESET timezone"), simple(c, SETTINGS), simple(c, "COMMIT"),
                  reported(c), simple(c, SETTINGS)))
    step("RESET in a transaction, rolled back",
         lambda: (simple(c, "SET timezone = 'UTC'"), simple(c, "BEGIN"), simple(c, "RESET timezone"),
                  simple(c, "ROLLBACK"), reported(c), simple(c, SETTINGS)))
    step("RESET in a failed transaction",
         lambda: (simple(c, "BEGIN"), simple(c, "SELECT 1/0"), simple(c, "RESET ALL"), simple(c, "ROLLBACK"),
                  reported(c), simple(c, SETTINGS)))
    step("DISCARD ALL", lambda: (simple(c, "SET datestyle = 'SQL'"), simple(c, "DISCARD ALL"), reported(c),
                                 simple(c, SETTINGS)))
    step("RESET of a parameter not given at startup",
         lambda: (simple(c, "SET statement_timeout = 1234"), simple(c, "RESET statement_timeout"),
                  simple(c, "SHOW statement_timeout"), reported(c), simple(c, SETTINGS)))
    c.close()
    other.close()
    return t


def psql_transcript(port):
    """psql with PGDATESTYLE and PGTZ, as a user would run it."""
    sql = ("SET datestyle = 'SQL, MDY'; SHOW datestyle;\nRESET datestyle;\nSHOW datestyle;\n"
           "SET timezone = 'UTC';\nRESET ALL;\nSHOW timezone;\nSELECT '2020-03-04'::date;\n")
    env = dict(os.environ, PGPASSWORD=PASSWORD, **ENV)
    r = subprocess.run([os.path.join(CENV["PGS_PGBIN"], "psql"), "-X", "-At", "-h", PG_HOST, "-p", str(port),
                        "-U", USER, DB], input=sql, capture_output=True, text=True, env=env, timeout=30)
    return r.stdout + r.stderr


def compare(name, ref, got):
    if ref == got:
        report(True, name, f"{len(ref)} steps equal")
        return
    for (note, a), (_, b) in zip(ref, got):
        if a != b:
            report(False, name, f"at {note!r}: direct {a!r}, through pgshard {b!r}")
            return
    report(False, name, "transcripts differ in length")


def main():
    ref = script(PG_PORT, PG_PORT)
    if ref[0][1][0] != ("Postgres, DMY", "Asia/Tokyo") or ref[2][1][1] != ("Postgres, DMY", "Europe/Paris"):
        pgwire.die(f"the direct run does not show what this test is about: {ref[:3]!r}")
    ref_psql = psql_transcript(PG_PORT)
    proxies = []
    try:
        for mode in ("transaction", "session"):
            px = pgwire.Proxy(f"reset_{mode}", pool_mode=mode, workers=1,
                              pool_size=1 if mode == "transaction" else 4)
            proxies.append(px)
            compare(f"{mode} pooling: RESET, RESET ALL, SET TO DEFAULT, DISCARD ALL return to the startup "
                    f"values, and ParameterStatus says so", ref, script(px.port, px.port))
            got = psql_transcript(px.port)
            report(got == ref_psql, f"{mode} pooling: psql with PGDATESTYLE and PGTZ",
                   "as direct" if got == ref_psql else f"direct {ref_psql!r}, through pgshard {got!r}")
        for px in proxies:
            px.stop()
            report(True, px.name, "SIGTERM -> exit 0, no sanitizer report")
    finally:
        for px in proxies:
            px.kill()
    sys.exit(report.summary())


if __name__ == "__main__":
    main()

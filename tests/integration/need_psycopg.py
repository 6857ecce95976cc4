"""Imported first by the tests that drive psycopg 3 (Debian's python3-psycopg, over libpq).
CTest starts them with the first python3 on PATH, which may be another Python without
psycopg: then the test runs again under /usr/bin/python3, or fails with one clear line.
Not a test itself: CTest runs only t_*.py."""
import os
import sys

try:
    import psycopg  # noqa: F401
except ImportError:
    if os.path.realpath(sys.executable) != os.path.realpath("/usr/bin/python3") and \
            os.access("/usr/bin/python3", os.X_OK) and not os.environ.get("PGS_DRIVER_REEXEC"):
        os.environ["PGS_DRIVER_REEXEC"] = "1"
        os.execv("/usr/bin/python3", ["/usr/bin/python3", os.path.abspath(sys.argv[0])] + sys.argv[1:])
    print("FAIL psycopg 3 is not importable by %s or /usr/bin/python3: install python3-psycopg "
          "(scripts/deps.sh does)" % sys.executable, flush=True)
    print("0 passed, 1 failed")
    sys.exit(1)

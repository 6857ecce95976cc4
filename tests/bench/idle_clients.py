#!/usr/bin/env python3
"""Opens N logged-in client connections to a proxy (auth trust) and holds them idle until
stdin closes or the given seconds pass. Used by scripts/bench.sh to measure the proxy's
memory per idle client. Stdlib only."""
import socket
import struct
import sys
import time

def login(host, port, user, db):
    s = socket.create_connection((host, port), timeout=10)
    body = struct.pack("!I", 196608) + b"user\0" + user.encode() + b"\0database\0" + db.encode() + b"\0\0"
    s.sendall(struct.pack("!I", len(body) + 4) + body)
    buf = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            raise RuntimeError("closed during login")
        buf += chunk
        while len(buf) >= 5:
            t = buf[0:1]
            n = struct.unpack("!I", buf[1:5])[0]
            if len(buf) < n + 1:
                break
            msg, buf = buf[:n + 1], buf[n + 1:]
            if t == b"E":
                raise RuntimeError("login error: %r" % msg)
            if t == b"Z":
                return s

def main():
    host, port, n, hold = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    socks = [login(host, port, "app", "app") for _ in range(n)]
    print("connected %d" % len(socks), flush=True)
    time.sleep(hold)
    for s in socks:
        s.close()

if __name__ == "__main__":
    main()

#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-3-Clause
"""IMAP FETCH load for bench/imap-fetch.sh: C connections log in as USER,
SELECT INBOX and FETCH message 1 (BODY.PEEK[]) over and over, each with
one command in flight; the literals are read into one scratch buffer and
dropped (recv_into: no Python object per byte).

Protocol on stdin/stdout, as bench/lib.sh's expect_line wants it: after
every connection has done one FETCH (the file in the page cache, lazily
started helpers up) it prints "ready" and waits for a line ("go"); then
it runs SECS seconds and prints
  result: bytes=<literal bytes> fetches=<n> secs=<elapsed> mib_s=<rate>
and waits for a line ("quit") before it logs out, so that the caller can
sample the server's CPU with the run's load and nothing else.

Usage: imap-fetch.py PORT USER PASS CONNS SECS
"""

import re
import selectors
import socket
import sys
import time

LIT = re.compile(rb"\{(\d+)\}\r\n")
SCRATCH = memoryview(bytearray(1 << 20))


class Conn:
    def __init__(self, port, user, pw):
        self.s = socket.create_connection(("127.0.0.1", port))
        self.s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        f = self.s.makefile("rb")
        if not f.readline().startswith(b"* OK"):
            sys.exit("no greeting")
        for tag, cmd in ((b"l", f"LOGIN {user} {pw}"),
                         (b"s", "SELECT INBOX")):
            self.s.sendall(tag + b" " + cmd.encode() + b"\r\n")
            while True:
                ln = f.readline()
                if not ln:
                    sys.exit(f"closed during {cmd.split()[0]}")
                if ln.startswith(tag + b" "):
                    if not ln.startswith(tag + b" OK"):
                        sys.exit(f"{cmd.split()[0]}: {ln!r}")
                    break
        f.detach()
        self.s.setblocking(False)
        self.n = 0
        self.bytes = 0

    def start(self):
        self.n += 1
        self.tag = b"f%d" % self.n
        self.head = b""  # before the literal, then after it
        self.left = -1   # literal bytes still to come; -1: not seen yet
        self.s.sendall(self.tag + b" FETCH 1 (BODY.PEEK[])\r\n")

    def readable(self):
        """Read what is there. True when the FETCH is complete."""
        if self.left > 0:
            try:
                k = self.s.recv_into(SCRATCH, min(self.left, len(SCRATCH)))
            except BlockingIOError:
                return False
            if k == 0:
                sys.exit("server closed")
            self.left -= k
            self.bytes += k
            return False
        try:
            data = self.s.recv(65536)
        except BlockingIOError:
            return False
        if not data:
            sys.exit("server closed")
        self.head += data
        if self.left < 0:
            m = LIT.search(self.head)
            if m is None:
                return False
            size = int(m.group(1))
            rest = self.head[m.end():]
            took = min(size, len(rest))
            self.bytes += took
            self.left = size - took
            self.head = rest[took:]
            if self.left > 0:
                return False
        end = b"\r\n" + self.tag + b" "
        i = self.head.find(end)
        if i < 0 or not self.head.endswith(b"\r\n"):
            return False
        if not self.head[i + len(end):].startswith(b"OK"):
            sys.exit(f"FETCH failed: {self.head[-200:]!r}")
        return True


def run(conns, secs):
    """FETCH on every connection until secs pass; returns (bytes, n, s)."""
    sel = selectors.DefaultSelector()
    for c in conns:
        c.bytes = 0
        c.start()
        sel.register(c.s, selectors.EVENT_READ, c)
    fetches = 0
    t0 = time.monotonic()
    stop = t0 + secs
    live = len(conns)
    while live > 0:
        for key, _ in sel.select(1.0):
            c = key.data
            while c.readable():
                fetches += 1
                if time.monotonic() < stop:
                    c.start()
                else:
                    sel.unregister(c.s)
                    live -= 1
                    break
    el = time.monotonic() - t0
    sel.close()
    return sum(c.bytes for c in conns), fetches, el


def main():
    port, user, pw = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    nconn, secs = int(sys.argv[4]), float(sys.argv[5])
    conns = [Conn(port, user, pw) for _ in range(nconn)]
    run(conns, 0)  # one FETCH each: warm
    print("ready", flush=True)
    sys.stdin.readline()
    b, n, el = run(conns, secs)
    print(f"result: bytes={b} fetches={n} secs={el:.3f} "
          f"mib_s={b / el / 1048576:.1f}", flush=True)
    sys.stdin.readline()
    for c in conns:
        c.s.setblocking(True)
        c.s.sendall(b"z LOGOUT\r\n")
        c.s.close()


if __name__ == "__main__":
    main()

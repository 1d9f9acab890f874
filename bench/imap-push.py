#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-3-Clause
"""IMAP IDLE push delay (bench/imap-idle.sh): from a delivery's final
LMTP 250 to each idler's "* N EXISTS".

bench/loadgen -m imap-idle holds IDLERS sessions (LOGIN, SELECT INBOX,
IDLE) and prints "exists: conn=I n=N t_ns=T" for every EXISTS, T being
CLOCK_MONOTONIC at its arrival. This driver delivers DELIVERIES messages
over one LMTP session, one at a time, to the idlers' user; it stamps the
arrival of the 250 after the dot with time.monotonic_ns() (the same
clock, CLOCK_MONOTONIC, on Linux) right after the recv that completed
it, then waits for one new EXISTS per idler (at most TIMEOUT seconds)
and a PAUSE before the next delivery. A delay may be negative: a server
may tell its idlers before it answers LMTP.

Usage: imap-push.py LOADGEN IMAP_PORT LMTP_PORT USER PASS IDLERS
                    DELIVERIES [PAUSE_S]
Prints one line per delay ("delay_us D") and a last line
"push: deliveries=.. delays=.. missing=.. p50_us=.. p99_us=.. max_us=..".
Exit status 1 if the idlers could not be opened or LMTP failed.
"""

import os
import queue
import socket
import subprocess
import sys
import threading
import time

HOST = "127.0.0.1"
TIMEOUT = 5.0


class Lmtp:
    def __init__(self, port):
        self.s = socket.create_connection((HOST, port), timeout=30)
        self.buf = b""
        self.expect(b"220")
        self.cmd(b"LHLO bench.localhost", b"250")

    def line(self):
        while b"\n" not in self.buf:
            d = self.s.recv(65536)
            if not d:
                raise OSError("LMTP server closed the connection")
            self.buf += d
        l, self.buf = self.buf.split(b"\n", 1)
        return l.rstrip(b"\r")

    def expect(self, code):
        """Read a (possibly multi-line) reply; it must start with code."""
        while True:
            l = self.line()
            if not l.startswith(code):
                raise OSError(f"LMTP: wanted {code!r}, got {l!r}")
            if l[3:4] != b"-":
                return l

    def cmd(self, c, code):
        self.s.sendall(c + b"\r\n")
        return self.expect(code)

    def deliver(self, rcpt, i):
        """One message to one recipient; the monotonic ns of its 250."""
        self.cmd(b"MAIL FROM:<bench@localhost>", b"250")
        self.cmd(b"RCPT TO:<" + rcpt + b">", b"250")
        self.cmd(b"DATA", b"354")
        msg = (b"From: bench@localhost\r\nTo: " + rcpt + b"\r\n"
               b"Subject: push " + str(i).encode() + b"\r\n"
               b"Message-ID: <push-" + str(i).encode() + b"-" +
               str(time.time_ns()).encode() + b"@localhost>\r\n\r\n"
               b"a message for the idlers\r\n.\r\n")
        self.s.sendall(msg)
        while b"\n" not in self.buf:
            d = self.s.recv(65536)
            t = time.monotonic_ns()
            if not d:
                raise OSError("LMTP server closed the connection")
            self.buf += d
        l = self.line()
        if not l.startswith(b"250"):
            raise OSError(f"LMTP after the dot: {l!r}")
        return t


def main():
    if len(sys.argv) not in (8, 9):
        sys.exit(__doc__)
    loadgen, iport, lport, user, pw = sys.argv[1:6]
    idlers, count = int(sys.argv[6]), int(sys.argv[7])
    pause = float(sys.argv[8]) if len(sys.argv) == 9 else 0.2
    lg = subprocess.Popen([loadgen, "-m", "imap-idle", "-U", user, "-P", pw,
                           "-c", str(idlers), "-g", "-d", "36000",
                           f"{HOST}:{iport}"],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          text=True, bufsize=1)
    lines = queue.Queue()

    def reader():
        for l in lg.stdout:
            lines.put(l)
        lines.put(None)

    threading.Thread(target=reader, daemon=True).start()
    try:
        deadline = time.monotonic() + 120
        while True:
            l = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            if l is None:
                print("push: loadgen ended before its idlers were ready")
                return 1
            if l.startswith("loadgen: ready"):
                break
            if l.startswith("loadgen:") and "fail" in l:
                print(l.rstrip())
        lg.stdin.write("go\n")
        lg.stdin.flush()
        lm = Lmtp(int(lport))
        last = {}
        delays, missing = [], 0
        for i in range(count):
            t250 = lm.deliver(user.encode(), i)
            seen = {}
            end = time.monotonic() + TIMEOUT
            while len(seen) < idlers and time.monotonic() < end:
                try:
                    l = lines.get(timeout=max(0.01, end - time.monotonic()))
                except queue.Empty:
                    break
                if l is None:
                    print("push: loadgen ended (an idler failed?)")
                    return 1
                if not l.startswith("exists: "):
                    continue
                kv = dict(f.split("=") for f in l.split()[1:])
                c, n, t = int(kv["conn"]), int(kv["n"]), int(kv["t_ns"])
                if n <= last.get(c, 0):
                    continue
                last[c] = n
                seen[c] = t
            missing += idlers - len(seen)
            for t in seen.values():
                d = (t - t250) / 1000.0
                delays.append(d)
                print(f"delay_us {d:.1f}")
            time.sleep(pause)
        lm.cmd(b"QUIT", b"221")
        delays.sort()

        def q(p):
            if not delays:
                return float("nan")
            return delays[min(len(delays) - 1, int(p * len(delays)))]

        print(f"push: deliveries={count} delays={len(delays)} "
              f"missing={missing} p50_us={q(0.5):.1f} "
              f"p99_us={q(0.99):.1f} min_us={delays[0] if delays else 0:.1f} "
              f"max_us={delays[-1] if delays else 0:.1f}")
        return 0
    except (OSError, queue.Empty) as e:
        print(f"push: failed: {e}")
        return 1
    finally:
        lg.terminate()
        try:
            lg.wait(timeout=5)
        except subprocess.TimeoutExpired:
            lg.kill()
            lg.wait()


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-3-Clause
"""Server CPU of a cold SELECT: one session at a time logs in, selects
INBOX and logs out, so no other session of the server has the folder
open (ringprot-imapd then lists new/ and cur/: no list to share). The
same loop without the SELECT is subtracted. CPU is utime+stime of PID
from /proc.

  bench/imap-cold-select.py PORT PID N [USER PASS]

Not a bench/run scenario (one server, no peers): the README quotes it
next to the shared-list SELECT of bench/imap-cmds.sh.
"""
import imaplib
import os
import sys


def ticks(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(f[11]) + int(f[12])


def run(port, pid, n, user, pw, select):
    t0 = ticks(pid)
    for _ in range(n):
        c = imaplib.IMAP4("127.0.0.1", port)
        c.login(user, pw)
        if select:
            typ, d = c.select("INBOX")
            if typ != "OK":
                sys.exit(f"SELECT: {d}")
        c.logout()
    return (ticks(pid) - t0) / os.sysconf("SC_CLK_TCK") / n * 1e3


def main():
    if len(sys.argv) not in (4, 6):
        sys.exit(__doc__)
    port, pid, n = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    user, pw = (sys.argv[4], sys.argv[5]) if len(sys.argv) == 6 \
        else ("user0", "pw")
    base = run(port, pid, n, user, pw, False)
    sel = run(port, pid, n, user, pw, True)
    print(f"login+logout {base:.2f} ms, with a cold SELECT {sel:.2f} ms: "
          f"SELECT {sel - base:.2f} ms of server CPU")


if __name__ == "__main__":
    main()

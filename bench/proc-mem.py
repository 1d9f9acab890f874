#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-3-Clause
"""Memory of a process tree (bench/imap-idle.sh): the process ROOT and
all its descendants, from /proc/PID/smaps_rollup.

Prints one line: "RSS_KB PSS_KB NPROCS BREAKDOWN", BREAKDOWN being
comm:count:pss_kb for each process name, comma-separated, largest PSS
first. A process that exits while being read is left out.
"""

import os
import sys


def tree(root):
    kids = {}
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/stat") as f:
                s = f.read()
        except OSError:
            continue
        ppid = int(s[s.rindex(")") + 2:].split()[1])
        kids.setdefault(ppid, []).append(int(p))
    out, q = [], [root]
    while q:
        p = q.pop()
        out.append(p)
        q.extend(kids.get(p, []))
    return out


def main():
    root = int(sys.argv[1])
    rss = pss = n = 0
    by = {}
    for p in tree(root):
        try:
            with open(f"/proc/{p}/comm") as f:
                comm = f.read().strip().replace(" ", "_") or "?"
            r = q = None
            with open(f"/proc/{p}/smaps_rollup") as f:
                for l in f:
                    if l.startswith("Rss:"):
                        r = int(l.split()[1])
                    elif l.startswith("Pss:"):
                        q = int(l.split()[1])
        except OSError:
            continue
        if r is None or q is None:
            continue
        rss += r
        pss += q
        n += 1
        c = by.setdefault(comm, [0, 0])
        c[0] += 1
        c[1] += q
    parts = sorted(by.items(), key=lambda kv: -kv[1][1])
    print(rss, pss, n,
          ",".join(f"{k}:{v[0]}:{v[1]}" for k, v in parts) or "-")
    return 0 if n else 1


if __name__ == "__main__":
    sys.exit(main())

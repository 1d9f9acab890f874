#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-3-Clause
"""IMAP NOOP round trips from Python (bench/imap-cmds.sh, scenario
noop-py): the client the issue 17 anchors were measured with (a Python
client at 16 connections: Dovecot about 20.7k NOOPs/s at 66 us of server
CPU each), so that those anchors and ours compare like for like.

One process, asyncio, CONNS connections: each logs in, selects MAILBOX
and then sends "c NOOP" as soon as the last tagged reply is in (closed
loop). It speaks bench/loadgen's gated protocol so that imap-cmds.sh
drives both alike: after WARMUP seconds it prints "loadgen: ready" and
waits for a line on stdin; then runs DURATION seconds and prints one
"result: key=value ..." line with loadgen's keys (mode, requests, secs,
rps, p50_us, p99_us, cpu_pct, errors, failed, data_bytes), then
"loadgen: done", and waits for another line before closing.
A NO or BAD reply counts as an error; a closed or broken connection
ends the run with failed > 0.

Usage: imap-noop.py HOST:PORT USER PASS CONNS DURATION WARMUP [MAILBOX]
"""

import asyncio
import resource
import sys
import time


class Counter:
    def __init__(self):
        self.record = False
        self.stop = False
        self.requests = 0
        self.errors = 0
        self.failed = 0
        self.lat = []


async def session(host, port, user, pw, mbox, c, opened):
    try:
        r, w = await asyncio.open_connection(host, port)
        line = await r.readline()
        if not line.startswith(b"* OK"):
            raise ConnectionError("greeting: %r" % line)
        for tag, cmd in ((b"a", b'LOGIN "%s" "%s"' % (user, pw)),
                         (b"b", b'SELECT "%s"' % mbox)):
            w.write(tag + b" " + cmd + b"\r\n")
            while True:
                line = await r.readline()
                if not line:
                    raise ConnectionError("closed")
                if line.startswith(tag + b" "):
                    break
            if not line.startswith(tag + b" OK"):
                raise ConnectionError(line.decode(errors="replace"))
        opened.set_result(None) if not opened.done() else None
        while not c.stop:
            t0 = time.monotonic_ns()
            w.write(b"c NOOP\r\n")
            while True:
                line = await r.readline()
                if not line:
                    raise ConnectionError("closed")
                if line.startswith(b"c "):
                    break
            if c.record:
                c.requests += 1
                c.lat.append(time.monotonic_ns() - t0)
                if not line.startswith(b"c OK"):
                    c.errors += 1
        w.close()
    except (OSError, ConnectionError) as e:
        c.failed += 1
        print("imap-noop.py: %s" % e, file=sys.stderr)
        if not opened.done():
            opened.set_exception(e)


async def main():
    target, user, pw, conns, dur, warm = sys.argv[1:7]
    mbox = sys.argv[7] if len(sys.argv) > 7 else "INBOX"
    host, port = target.rsplit(":", 1)
    conns, dur, warm = int(conns), float(dur), float(warm)
    c = Counter()
    loop = asyncio.get_running_loop()
    opened = [loop.create_future() for _ in range(conns)]
    tasks = [asyncio.create_task(session(host, int(port), user.encode(),
                                         pw.encode(), mbox.encode(), c, o))
             for o in opened]
    await asyncio.gather(*opened)
    await asyncio.sleep(warm)
    print("loadgen: ready", flush=True)
    await loop.run_in_executor(None, sys.stdin.readline)
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.monotonic()
    c.record = True
    await asyncio.sleep(dur)
    c.record = False
    secs = time.monotonic() - t0
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    lat = sorted(c.lat) or [0]
    q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] / 1e3
    print("result: mode=py-noop conns=%d secs=%.4f requests=%d rps=%.1f "
          "p50_us=%.2f p99_us=%.2f failed=%d cpu_pct=%.1f errors=%d "
          "data_bytes=0" % (conns, secs, c.requests, c.requests / secs,
                            q(.5), q(.99), c.failed, 100 * cpu / secs,
                            c.errors), flush=True)
    print("loadgen: done", flush=True)
    await loop.run_in_executor(None, sys.stdin.readline)
    c.stop = True
    await asyncio.wait(tasks, timeout=5)


if __name__ == "__main__":
    asyncio.run(main())

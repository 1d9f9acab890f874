#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-3-Clause
"""Durability tests of examples/lmtpd: kill -9, a full disk, tmp/ cleanup.

Usage: test_lmtpd_crash.py PATH-TO-ringprot-lmtpd

  - crash: 8 sessions deliver numbered messages (200 B to 300 KiB, one
    or two recipients, some into a folder) as fast as the server takes
    them, each recording every 250; the server is killed with SIGKILL at
    a random moment, 4 times. After each kill: every acknowledged
    (message, recipient) is in that recipient's new/, byte-exact; every
    file in any new/ or cur/ is a whole message that was sent (nothing
    partial is visible). The server is restarted on the same data dir and
    every unacknowledged message is delivered again, cleanly.
  - disk full (root: a 256 KiB tmpfs the test mounts, skipped with the
    reason when mount is refused): first as the whole data dir, then as
    one user's directory only. A message that does not fit gets
    452 4.3.1 for the recipients on the full filesystem, 250 for those on
    the other; nothing is visible in new/; a small message afterwards is
    delivered and the server keeps serving.
  - tmp/ cleanup: spool and tmp/ files older than 36 hours are removed
    at start-up (spool) and by the periodic sweep (every user's tmp/,
    lmtp_tmp_sweep=1s here); younger ones are left alone.
Exits 0 on success (77 when every part was skipped), 1 on failure.
"""

import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_lmtpd import (Client, Failure, Server, check,  # noqa: E402
                        read_file, stuff)

SENDER = "s@example.org"
SESSIONS = 8
ROUNDS = 4
OLD = 40 * 3600  # older than Maildir's 36 hours


class Skip(Exception):
    pass


def maildir_of(data, addr):
    """The Maildir an address delivers into (detail folders on)."""
    local = addr.split("@", 1)[0]
    user, _, folder = local.partition("+")
    base = os.path.join(data, "users", user)
    return os.path.join(base, "." + folder) if folder else base


def expected(mid_rcpts, body):
    """The stored file: our headers, then the body with LF line ends."""
    rcpts = mid_rcpts
    head = f"Return-Path: <{SENDER}>\n".encode()
    if len(rcpts) == 1:
        head += f"Delivered-To: {rcpts[0]}\n".encode()
    return head + body


PRINTABLE = bytes(33 + b % 94 for b in range(256))


def make_body(mid, rnd):
    size = rnd.choice((200, 3000, 70000, 300000))
    lines = [f"Subject: {mid}".encode(), f"Message-Id: <{mid}@t>".encode(),
             b""]
    n = 0
    while n < size:
        k = rnd.randrange(1, 200)
        ln = rnd.randbytes(k).translate(PRINTABLE)
        if rnd.random() < 0.05:
            ln = b"." + ln  # dot-stuffed on the wire
        lines.append(ln)
        n += k + 1
    return b"\n".join(lines) + b"\n"


def message_id(data):
    for ln in data.split(b"\n", 6)[:6]:
        if ln.startswith(b"Message-Id: <"):
            return ln[len(b"Message-Id: <"):].split(b"@", 1)[0].decode()
    return None


def visible_files(data):
    """(path, maildir) of every file in any new/ or cur/."""
    out = []
    for root, _, files in os.walk(os.path.join(data, "users")):
        if os.path.basename(root) in ("new", "cur"):
            out += [(os.path.join(root, f), os.path.dirname(root))
                    for f in files]
    return out


def check_visible(data, sent, variants):
    """Every visible file is a whole message that was sent, stored
    byte-exact in a maildir of one of its recipients (variants[mid]: the
    recipient lists it was sent to). Returns (mid, maildir) -> copies."""
    copies = {}
    for path, md in visible_files(data):
        got = read_file(path)
        mid = message_id(got)
        check(mid in sent, f"{path}: unknown or partial message "
              f"({len(got)} bytes, id {mid})")
        body = sent[mid][1]
        check(any(got == expected(list(v), body) and
                  md in [maildir_of(data, r) for r in v]
                  for v in variants[mid]),
              f"{path}: {mid} differs or misplaced ({len(got)} bytes "
              f"stored, {len(expected(sent[mid][0], body))} sent)")
        copies[(mid, md)] = copies.get((mid, md), 0) + 1
    return copies


class Sender(threading.Thread):
    """One session delivering numbered messages until it fails."""

    RCPTS = (["alice@example.org"], ["bob@example.org"],
             ["alice@example.org", "bob@example.org"],
             ["alice+Work@example.org"])

    def __init__(self, port, tag, seed):
        super().__init__(daemon=True)
        self.port, self.tag = port, tag
        self.rnd = random.Random(seed)
        self.sent = {}     # mid -> (rcpts, body)
        self.acked = set()  # (mid, rcpt)
        self.other = []    # replies that are neither 250 nor a cut
        self.cut = None    # the message in flight when the server died

    def run(self):
        try:
            c = Client(self.port)
            c.cmd("LHLO crash.example")
        except (OSError, Failure):
            return
        seq = 0
        while True:
            mid = f"{self.tag}-{seq}"
            seq += 1
            rcpts = self.rnd.choice(self.RCPTS)
            body = make_body(mid, self.rnd)
            self.sent[mid] = (rcpts, body)
            self.cut = mid
            try:
                # Pipelined: MAIL, RCPTs, DATA in one send.
                c.send((f"MAIL FROM:<{SENDER}>\r\n" + "".join(
                    f"RCPT TO:<{r}>\r\n" for r in rcpts) +
                    "DATA\r\n").encode())
                codes = c.codes(2 + len(rcpts))
                if codes != [250] * (1 + len(rcpts)) + [354]:
                    self.other.append((mid, codes))
                    return
                c.send(stuff(body))
                for r in rcpts:
                    code, text = c.reply()
                    if code == 250:
                        self.acked.add((mid, r))
                    else:
                        self.other.append((mid, text))
            except (OSError, Failure):
                return  # the server is gone: mid may be cut
            self.cut = None


def deliver(port, mid, rcpts, body):
    c = Client(port)
    c.cmd("LHLO again.example")
    c.send((f"MAIL FROM:<{SENDER}>\r\n" + "".join(
        f"RCPT TO:<{r}>\r\n" for r in rcpts) + "DATA\r\n").encode())
    codes = c.codes(2 + len(rcpts))
    check(codes == [250] * (1 + len(rcpts)) + [354],
          f"redelivery of {mid}: {codes}")
    c.send(stuff(body))
    got = c.codes(len(rcpts))
    check(got == [250] * len(rcpts), f"redelivery of {mid}: {got}")
    c.cmd("QUIT")
    c.close()


def part_crash(exe, tmp):
    rnd = random.Random(os.environ.get("LMTPD_CRASH_SEED") or None)
    srv = Server(exe, tmp)
    data = srv.data
    sent, acked, redone, variants = {}, set(), set(), {}
    cut_total = 0
    try:
        for rnd_i in range(ROUNDS):
            senders = [Sender(srv.port, f"r{rnd_i}s{i}", rnd.random())
                       for i in range(SESSIONS)]
            for s in senders:
                s.start()
            delay = rnd.uniform(0.3, 2.5)
            time.sleep(delay)
            os.kill(srv.proc.pid, signal.SIGKILL)
            srv.proc.wait()
            for s in senders:
                s.join(timeout=30)
                check(not s.is_alive(), "a session outlived the server")
                check(not s.other, f"refused before the kill: {s.other}")
                sent.update(s.sent)
                for mid, (rcpts, _) in s.sent.items():
                    variants[mid] = {tuple(rcpts)}
                acked |= s.acked
                cut_total += s.cut is not None
            # Dead server, data as the kill left it.
            copies = check_visible(data, sent, variants)
            for mid, r in acked:
                n = copies.get((mid, maildir_of(data, r)), 0)
                # Once, unless an earlier unacknowledged try landed too.
                check(n == 1 or (n > 1 and (mid, r) in redone),
                      f"acknowledged {mid} for {r}: {n} copies")
            # Restart on the same data dir; deliver the rest again.
            srv = Server(exe, tmp, data=data)
            again = 0
            for mid, (rcpts, body) in sorted(sent.items()):
                left = [r for r in rcpts if (mid, r) not in acked]
                if not left:
                    continue
                deliver(srv.port, mid, left, body)
                acked |= {(mid, r) for r in left}
                redone |= {(mid, r) for r in left}
                variants[mid].add(tuple(left))
                again += 1
            copies = check_visible(data, sent, variants)
            for mid, r in acked:
                check(copies.get((mid, maildir_of(data, r)), 0) >= 1,
                      f"{mid} for {r} missing after the restart")
            print(f"crash round {rnd_i}: killed after {delay:.2f}s, "
                  f"{len(acked)} acknowledged deliveries so far, "
                  f"{again} messages delivered again")
        check(cut_total > 0, "no kill ever cut a delivery in flight")
        srv.stop()
    finally:
        srv.kill()
    print(f"crash: {ROUNDS} kills, {cut_total} deliveries cut, every "
          "acknowledged message whole in new/, nothing partial visible")


def mount_tmpfs(path, size="256k"):
    os.makedirs(path, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}",
                        "tmpfs", path], capture_output=True, text=True)
    if r.returncode != 0:
        raise Skip(f"cannot mount a tmpfs ({r.stderr.strip() or r.returncode})"
                   " : needs root")


def umount(path):
    subprocess.run(["umount", path], capture_output=True)


def lmtp_batch(port, rcpts, body):
    """One transaction; the per-recipient codes after the dot."""
    c = Client(port)
    c.cmd("LHLO full.example")
    check(c.cmd(f"MAIL FROM:<{SENDER}>")[0] == 250, "MAIL")
    for r in rcpts:
        check(c.cmd(f"RCPT TO:<{r}>")[0] == 250, f"RCPT {r}")
    check(c.cmd("DATA")[0] == 354, "DATA")
    c.send(stuff(body))
    out = [c.reply() for _ in rcpts]
    check(c.cmd("NOOP")[0] == 250, "NOOP after the delivery")
    c.close()
    return out


def part_disk_full(exe, tmp):
    big = b"Subject: big\n\n" + (b"z" * 99 + b"\n") * 4000  # 400 KB
    small = b"Subject: small\n\nfits\n"

    # The whole data dir on a 256 KiB tmpfs.
    mnt = os.path.join(tmp, "full")
    mount_tmpfs(mnt)
    srv = None
    try:
        for u in ("alice", "bob"):
            for sub in ("tmp", "new", "cur"):
                os.makedirs(os.path.join(mnt, "users", u, sub))
        srv = Server(exe, tmp, data=mnt)
        got = lmtp_batch(srv.port, ["alice@example.org",
                                    "bob@example.org"], big)
        for code, text in got:
            check(code == 452 and "4.3.1" in text, f"disk full: {text}")
        check(not srv.new_files("alice") and not srv.new_files("bob"),
              "a message that did not fit is visible")
        srv.nothing_partial()
        got = lmtp_batch(srv.port, ["alice@example.org"], small)
        check(got[0][0] == 250, f"small message after a full disk: {got}")
        files = srv.new_files("alice")
        check(len(files) == 1 and read_file(files[0]) ==
              expected(["alice@example.org"], small), "small message")
        srv.stop()
    finally:
        if srv is not None:
            srv.kill()
        umount(mnt)

    # Only bob's directory is on the small tmpfs: the spool copy is on
    # the data dir's filesystem, bob's is copied across (EXDEV) and does
    # not fit; alice, on the spool's filesystem, is unaffected.
    srv = Server(exe, tmp)
    bob = os.path.join(srv.data, "users", "bob")
    mount_tmpfs(bob)
    try:
        for sub in ("tmp", "new", "cur"):
            os.makedirs(os.path.join(bob, sub))
        got = lmtp_batch(srv.port, ["alice@example.org",
                                    "bob@example.org"], big)
        check(got[0][0] == 250, f"alice on the roomy disk: {got[0]}")
        check(got[1][0] == 452 and "4.3.1" in got[1][1],
              f"bob on the full disk: {got[1]}")
        check(len(srv.new_files("alice")) == 1, "alice's copy missing")
        check(not srv.new_files("bob"), "bob's partial copy visible")
        srv.nothing_partial()
        got = lmtp_batch(srv.port, ["bob@example.org"], small)
        check(got[0][0] == 250, f"small message to bob: {got}")
        files = srv.new_files("bob")
        check(len(files) == 1 and read_file(files[0]) ==
              expected(["bob@example.org"], small), "bob's small message")
        srv.nothing_partial()
        srv.stop()
    finally:
        srv.kill()
        umount(bob)
    print("disk full: 452 4.3.1 for the full filesystem only, nothing "
          "visible, still serving")


def old_file(path):
    with open(path, "wb") as f:
        f.write(b"leftover\n")
    t = time.time() - OLD
    os.utime(path, (t, t))


def part_cleanup(exe, tmp):
    srv = Server(exe, tmp)
    data = srv.data
    srv.stop()
    spool = os.path.join(data, "spool")
    atmp = os.path.join(data, "users", "alice", "tmp")
    os.makedirs(os.path.join(data, "users", "bob", ".Work", "tmp"))
    ftmp = os.path.join(data, "users", "bob", ".Work", "tmp")
    old_file(os.path.join(spool, "old-spool"))
    old_file(os.path.join(atmp, "old-alice"))
    old_file(os.path.join(ftmp, "old-folder"))
    for d in (spool, atmp):
        with open(os.path.join(d, "young"), "wb") as f:
            f.write(b"in flight\n")
    # Start-up: the spool only (the sweep is an hour away).
    srv = Server(exe, tmp, data=data)
    try:
        check(sorted(os.listdir(spool)) == ["young"],
              f"spool after start-up: {os.listdir(spool)}")
        check("old-alice" in os.listdir(atmp), "tmp/ swept at start-up")
        srv.stop()
    finally:
        srv.kill()
    # The sweep: every user's tmp/ and folders' tmp/.
    srv = Server(exe, tmp, data=data, opts=["lmtp_tmp_sweep=1s"])
    try:
        deadline = time.time() + 10
        while time.time() < deadline and (os.listdir(ftmp) or
                                          "old-alice" in os.listdir(atmp)):
            time.sleep(0.1)
        check(sorted(os.listdir(atmp)) == ["young"],
              f"alice's tmp/ after the sweep: {os.listdir(atmp)}")
        check(not os.listdir(ftmp), f"folder tmp/: {os.listdir(ftmp)}")
        check(os.path.exists(os.path.join(spool, "young")),
              "a young spool file was removed")
        alive = Client(srv.port)
        check(alive.cmd("NOOP")[0] == 250, "NOOP during sweeps")
        alive.close()
        srv.stop()
    finally:
        srv.kill()
    print("tmp cleanup: old spool files at start-up, old tmp/ files by "
          "the sweep, young ones kept")


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    exe = sys.argv[1]
    tmp = tempfile.mkdtemp(prefix="lmtpd-crash-")
    ran = 0
    try:
        for part in (part_crash, part_cleanup, part_disk_full):
            try:
                part(exe, tmp)
                ran += 1
            except Skip as e:
                print(f"SKIP {part.__name__}: {e}")
    except Failure as e:
        print(f"FAIL: {e}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if ran == 0:
        return 77
    print("lmtpd durability: all parts passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-3-Clause
"""Fill a mailbox for the IMAP command benchmarks (bench/imap-cmds.sh).

The same messages for every server: COUNT small messages of about SIZE
bytes each (message i is the same text on every server and in every
run: headers as a mail client sees them, then a plain text body), and,
with --large BYTES, one more message of that size, last.

  imap-fill.py maildir DIR COUNT SIZE [--large BYTES] [--owner UID:GID]
      writes the messages straight into the Maildir DIR/new (LF line
      ends, names "<time>.M<i>P<pid>.bench,S=<bytes>,W=<bytes with
      CRLF>" as delivery agents name them), in order, then fsyncs new/.
  imap-fill.py lmtp PORT USER COUNT SIZE [--large BYTES] [--parallel P]
      delivers them over LMTP on 127.0.0.1:PORT to USER (CRLF line
      ends); with --parallel P over P sessions at once (then the order
      of the small ones in the mailbox is not theirs; the large one is
      still delivered last, on its own).
Exit status 1 if a delivery is refused.
"""

import argparse
import os
import smtplib
import sys
import threading
import time


def message(i, size):
    """Message i, about size bytes with LF line ends."""
    head = (
        "Return-Path: <sender%d@example.org>\n"
        "Received: from mx.example.org (mx.example.org [192.0.2.1])\n"
        "\tby mail.example.net with ESMTPS id %08x\n"
        "\tfor <user@example.net>; Mon, 7 Dec 2026 00:%02d:%02d +0000\n"
        "From: Sender %d <sender%d@example.org>\n"
        "To: User <user@example.net>\n"
        "Subject: benchmark message %d of the IMAP command runs\n"
        "Date: Mon, 7 Dec 2026 00:%02d:%02d +0000\n"
        "Message-ID: <%d.bench@example.org>\n"
        "MIME-Version: 1.0\n"
        "Content-Type: text/plain; charset=us-ascii\n"
        "Content-Transfer-Encoding: 7bit\n"
        "\n"
    ) % (i % 97, i * 2654435761 % (1 << 32), i // 60 % 60, i % 60, i % 97,
         i % 97, i, i // 60 % 60, i % 60, i)
    line = "Line %%06d of message %d: the quick brown fox jumps over the lazy dog.\n" % i
    body = []
    n = len(head)
    k = 0
    while n < size:
        s = line % k
        body.append(s)
        n += len(s)
        k += 1
    return (head + "".join(body)).encode()


def messages(count, size, large):
    for i in range(1, count + 1):
        yield message(i, size)
    if large:
        yield message(count + 1, large)


def fill_maildir(a):
    new = os.path.join(a.dir, "new")
    os.makedirs(new, exist_ok=True)
    for sub in ("cur", "tmp"):
        os.makedirs(os.path.join(a.dir, sub), exist_ok=True)
    uid = gid = None
    if a.owner:
        uid, gid = (int(x) for x in a.owner.split(":"))
    t = int(time.time())
    for i, m in enumerate(messages(a.count, a.size, a.large)):
        name = "%d.M%dP%d.bench,S=%d,W=%d" % (t, i, os.getpid(), len(m),
                                              len(m) + m.count(b"\n"))
        p = os.path.join(new, name)
        with open(p, "wb") as f:
            f.write(m)
        if uid is not None:
            os.chown(p, uid, gid)
    if uid is not None:
        for sub in ("", "new", "cur", "tmp"):
            os.chown(os.path.join(a.dir, sub), uid, gid)
    fd = os.open(new, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)


def deliver(port, user, msgs, errors):
    try:
        with smtplib.LMTP("127.0.0.1", port) as lmtp:
            for m in msgs:
                r = lmtp.sendmail("bench@example.org", [user],
                                  m.replace(b"\n", b"\r\n"))
                if r:
                    errors.append(str(r))
                    return
    except (OSError, smtplib.SMTPException) as e:
        errors.append(str(e))


def fill_lmtp(a):
    errors = []
    small = [message(i, a.size) for i in range(1, a.count + 1)]
    p = max(1, a.parallel)
    # The first alone: a server that makes the mailbox on its first
    # delivery (Cyrus, autocreate_post) must not race with itself.
    deliver(a.port, a.user, small[:1], errors)
    small = small[1:] if not errors else []
    threads = [threading.Thread(target=deliver,
                                args=(a.port, a.user, small[k::p], errors))
               for k in range(p)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if not errors and a.large:
        deliver(a.port, a.user, [message(a.count + 1, a.large)], errors)
    if errors:
        sys.exit("imap-fill.py: LMTP refused: %s" % errors[0])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="how", required=True)
    m = sub.add_parser("maildir")
    m.add_argument("dir")
    m.add_argument("--owner")
    l = sub.add_parser("lmtp")
    l.add_argument("port", type=int)
    l.add_argument("user")
    l.add_argument("--parallel", type=int, default=1)
    for s in (m, l):
        s.add_argument("count", type=int)
        s.add_argument("size", type=int)
        s.add_argument("--large", type=int, default=0)
    a = ap.parse_args()
    if a.how == "maildir":
        fill_maildir(a)
    else:
        fill_lmtp(a)


if __name__ == "__main__":
    main()

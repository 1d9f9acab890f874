# SPDX-License-Identifier: BSD-3-Clause
"""FETCH of large messages (issue 17): the zero-copy path of ringprot-imapd
(a message stored with CRLF line ends sent from its file) against the
parsed one, byte-exact, with real clients (imaplib, raw sockets).

Each run starts a fresh server with mail_save_crlf on or off and puts
three 5 MiB messages in alice's INBOX: an LMTP delivery, a file another
process drops into new/ with LF line ends (a store written before the
option: the store is mixed), and an APPEND. Then, for each: BODY.PEEK[],
partials (inside, across the end, past the end), RFC822 (sets \\Seen),
BINARY.PEEK[1], BODY.PEEK[TEXT], RFC822.SIZE, a FETCH of all three with
other items, a small message beside them, and BODY.PEEK[] under STARTTLS
and COMPRESS=DEFLATE, where the server reads the file through the layers
instead.

Usage: test_imapd_fetch.py PATH-TO-ringprot-imapd [on|off...]
IMAPD_FETCH_ARGS: more server arguments (-D: direct descriptors).
"""

import imaplib
import os
import re
import shutil
import socket
import ssl
import sys
import tempfile
import time
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from srvlib import HOST, Failure, check  # noqa: E402
from test_imapd_mail import PASSWORD, Env, ok  # noqa: E402

SIZE = 5 << 20


def big_message(tag):
    """About SIZE bytes of CRLF text with one bare LF in the body (stored
    LF, or given a CR by save_crlf: either way CRLF on the wire)."""
    head = (b"From: bob@example.com\r\nTo: alice@example.org\r\n"
            b"Subject: big " + tag + b"\r\nMessage-ID: <" + tag +
            b"@example.com>\r\n\r\n")
    lines = [b"%s line %07d: the quick brown fox jumps over the lazy dog"
             % (tag, i) for i in range(SIZE // 70)]
    body = b"\r\n".join(lines[:1000]) + b"\nbare LF above\r\n" + \
        b"\r\n".join(lines[1000:]) + b"\r\n"
    return head + body


def wire(msg):
    """What IMAP must send for msg: every line end CRLF."""
    return re.sub(rb"(?<!\r)\n", b"\r\n", msg)


def fetch_lit(m, seq, item):
    data = ok(m.fetch(str(seq), item), f"FETCH {seq} {item}")
    check(isinstance(data[0], tuple), f"FETCH {seq} {item}: {data[:1]!r}")
    return data[0][0], data[0][1]


def same(got, exp, what):
    if got == exp:
        return
    i = next((k for k in range(min(len(got), len(exp)))
              if got[k] != exp[k]), min(len(got), len(exp)))
    raise Failure(f"{what}: {len(got)} bytes, expected {len(exp)}; first "
                  f"difference at {i}: {got[i:i + 40]!r} vs "
                  f"{exp[i:i + 40]!r}")


def check_one(m, seq, exp):
    n = len(exp)
    same(fetch_lit(m, seq, "(BODY.PEEK[])")[1], exp, f"{seq} BODY.PEEK[]")
    for off, cnt in ((1000, 2000000), (n - 10, 100), (n + 5, 10), (0, 1)):
        hdr, got = fetch_lit(m, seq, f"(BODY.PEEK[]<{off}.{cnt}>)")
        same(got, exp[off:off + cnt], f"{seq} BODY.PEEK[]<{off}.{cnt}>")
        check(f"BODY[]<{off}>".encode() in hdr, f"partial named: {hdr!r}")
    text = exp[exp.index(b"\r\n\r\n") + 4:]
    same(fetch_lit(m, seq, "(BINARY.PEEK[1])")[1], text, f"{seq} BINARY[1]")
    same(fetch_lit(m, seq, "(BODY.PEEK[TEXT])")[1], text, f"{seq} TEXT")
    size = ok(m.fetch(str(seq), "(RFC822.SIZE)"), "RFC822.SIZE")[0]
    check(f"RFC822.SIZE {n})".encode() in size, f"{seq} size {n}: {size!r}")
    flags = ok(m.fetch(str(seq), "(FLAGS)"), "FLAGS")[0]
    check(b"\\Seen" not in flags, f"PEEK set \\Seen: {flags!r}")


def read_literal_reply(s, dec, tag):
    """Decompress (dec: None for plain) until the tagged reply."""
    got = b""
    end = b"\r\n" + tag + b" "
    deadline = time.monotonic() + 30
    while end not in got and time.monotonic() < deadline:
        chunk = s.recv(1 << 20)
        check(chunk, f"closed: {got[-200:]!r}")
        got += dec.decompress(chunk) if dec else chunk
    mm = re.search(rb"\{(\d+)\}\r\n", got)
    check(mm, f"a literal: {got[:200]!r}")
    start = mm.end()
    return got[start:start + int(mm.group(1))], got


def part_layers(env, exp):
    ctx = ssl.create_default_context(cafile=env.cert)
    m = imaplib.IMAP4("localhost", env.imap)
    m.starttls(ssl_context=ctx)
    m.login("alice", PASSWORD)
    ok(m.select("INBOX"), "SELECT after STARTTLS")
    same(fetch_lit(m, 1, "(BODY.PEEK[])")[1], exp, "BODY[] under TLS")
    same(fetch_lit(m, 1, "(BODY.PEEK[]<7.300001>)")[1], exp[7:300008],
         "partial under TLS")
    m.logout()

    s = socket.create_connection((HOST, env.imap), timeout=30)
    f = s.makefile("rb")
    check(f.readline().startswith(b"* OK"), "greeting")
    s.sendall(f"l LOGIN alice {PASSWORD}\r\nc COMPRESS DEFLATE\r\n".encode())
    for tag in (b"l ", b"c "):
        while True:
            ln = f.readline()
            check(ln, "closed before COMPRESS")
            if ln.startswith(tag):
                check(b" OK" in ln, f"{ln!r}")
                break
    comp = zlib.compressobj(wbits=-15)
    dec = zlib.decompressobj(wbits=-15)
    s.sendall(comp.compress(b"s SELECT INBOX\r\nf FETCH 1 (BODY.PEEK[])\r\n")
              + comp.flush(zlib.Z_SYNC_FLUSH))
    lit, got = read_literal_reply(s, dec, b"f")
    same(lit, exp, "BODY[] under COMPRESS")
    check(b"\r\nf OK" in got, f"FETCH OK under COMPRESS: {got[-100:]!r}")
    s.close()


def put_lf_file(env, msg):
    """A message another process (or a store without the option) left with
    LF line ends and no S=/W= in its name."""
    name = f"{int(time.time())}.M2P{os.getpid()}Q2.other"
    d = os.path.join(env.data, "users", "alice")
    with open(os.path.join(d, "tmp", name), "wb") as out:
        out.write(msg.replace(b"\r\n", b"\n"))
    os.rename(os.path.join(d, "tmp", name), os.path.join(d, "new", name))


def run(exe, crlf):
    tmp = tempfile.mkdtemp(prefix="imapd-fetch-")
    extra = os.environ.get("IMAPD_FETCH_ARGS", "").split()
    env = Env(exe, tmp,
              ["-o", f"mail_save_crlf={'yes' if crlf else 'no'}", *extra])
    try:
        msgs = [big_message(b"one"), big_message(b"two"),
                big_message(b"three")]
        env.deliver(["alice@example.org"], msgs[0])
        m = env.login()
        ok(m.select("INBOX"), "SELECT")  # the delivery gets UID 1
        m.logout()
        put_lf_file(env, msgs[1])
        m = env.login()
        ok(m.select("INBOX"), "SELECT")  # the LF file: UID 2
        ok(m.append("INBOX", None, None, msgs[2]), "APPEND")
        n = int(ok(m.select("INBOX"), "SELECT")[0])
        check(n == 3, f"3 messages, not {n}")
        exp = [b"Return-Path: <sender@example.com>\r\n"
               b"Delivered-To: alice@example.org\r\n" + wire(msgs[0]),
               wire(msgs[1]), wire(msgs[2])]
        # On disk: CRLF files hold the wire form and S == W.
        names = env.files("alice", "cur")
        kinds = sorted(bool(re.search(r",S=(\d+),W=\1(:|$)", x))
                       for x in names)
        want = [False, True, True] if crlf else [False, False, False]
        check(kinds == want, f"S == W per file, save_crlf={crlf}: {names}")
        for seq in (1, 2, 3):
            check_one(m, seq, exp[seq - 1])
        # All three with other items (each message decides on its own).
        data = ok(m.fetch("1:3", "(UID RFC822.SIZE BODY.PEEK[])"), "1:3")
        lits = [d[1] for d in data if isinstance(d, tuple)]
        check(len(lits) == 3, f"three literals: {len(lits)}")
        for i in range(3):
            same(lits[i], exp[i], f"1:3 message {i + 1}")
        # With an item that needs the parse: the normal path.
        hdr, lit = fetch_lit(m, 1, "(ENVELOPE BODY.PEEK[])")
        check(b'"big one"' in hdr, f"ENVELOPE: {hdr[:200]!r}")
        same(lit, exp[0], "BODY[] beside ENVELOPE")
        # RFC822 sets \Seen, and FLAGS say so in the same response.
        data = ok(m.fetch("3", "(RFC822)"), "RFC822")
        same(data[0][1], exp[2], "RFC822")
        flags = ok(m.fetch("3", "(FLAGS)"), "FLAGS")[0]
        check(b"\\Seen" in flags, f"RFC822 sets \\Seen: {flags!r}")
        same(fetch_lit(m, 3, "(BODY.PEEK[])")[1], exp[2],
             "BODY[] after the rename \\Seen made")
        # A small message (parsed and converted whichever way it is
        # stored): BODY[], a part, TEXT.
        small = (b"Subject: small\r\nContent-Type: multipart/mixed; "
                 b"boundary=b\r\n\r\n--b\r\n\r\none\r\n--b\r\n\r\n"
                 b"two\nbare\r\n--b--\r\n")
        env.deliver(["alice@example.org"], small)
        ok(m.noop(), "NOOP")
        exp_small = (b"Return-Path: <sender@example.com>\r\n"
                     b"Delivered-To: alice@example.org\r\n" + wire(small))
        same(fetch_lit(m, 4, "(BODY.PEEK[])")[1], exp_small, "small BODY[]")
        same(fetch_lit(m, 4, "(BODY.PEEK[2])")[1], b"two\r\nbare",
             "small BODY[2]")
        same(fetch_lit(m, 4, "(BODY.PEEK[TEXT])")[1],
             wire(small[small.index(b"\r\n\r\n") + 4:]), "small TEXT")
        m.logout()
        part_layers(env, exp[0])
        env.srv.signal(15)
        check(env.srv.wait_exit() == 0, "exit 0 after SIGTERM")
        env = None
    finally:
        if env is not None:
            env.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    exe = os.path.abspath(sys.argv[1])
    failed = 0
    for mode in sys.argv[2:] or ["on", "off"]:
        try:
            run(exe, mode == "on")
            print(f"ok: mail_save_crlf {mode}")
        except (Failure, imaplib.IMAP4.error, OSError) as e:
            failed += 1
            print(f"FAIL: mail_save_crlf {mode}: {e}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-3-Clause
"""Integration test of examples/lmtpd with real clients over loopback.

Usage: test_lmtpd.py PATH-TO-ringprot-lmtpd

Each part starts the server on an ephemeral port with a temporary data
directory (users alice and bob exist), talks to it and stops it by pid
(SIGTERM, exit 0 within 5 s):
  - swaks --protocol LMTP delivers; with TLS configured, STARTTLS is
    advertised and swaks delivers over it (a certificate made by
    openssl req); without, it is not advertised;
  - AUTH PLAIN and LOGIN (SMTP framing "334 b64") through SASL with a
    sasldb, offered only with lmtp_auth=yes; a wrong password gets 535;
  - Python's smtplib.LMTP, and a raw pipelined batch, to several
    recipients with one unknown: one reply per recipient after the dot;
  - CHUNKING: BDAT chunks pipelined, per-recipient replies after LAST;
  - hostile input: a 1 MiB line, binary garbage, NUL bytes, an
    oversized SIZE=, a SIZE lie, over-long text lines, a client gone
    mid-DATA, RCPT before MAIL, DATA without recipients, pipelined
    commands after a failed one, path traversal: the right replies,
    nothing partial visible, the server keeps serving;
  - bare LF: accepted by default (commands, DATA, ".\n" as the end
    line), refused with lmtp_bare_lf=refuse (550 5.5.2 and close, a
    smuggling attempt included); a bare CR is data in both;
  - LMTP over a Unix socket: smtplib.LMTP with the socket's path, and
    a raw AF_UNIX pipelined batch;
  - smtp-source -L (Postfix): 2000 messages over 16 sessions, each
    lands exactly once, byte-exact.
Exits 0 on success, 1 on failure with the reason.
"""

import os
import queue
import re
import shutil
import signal
import smtplib
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time

HOST = "127.0.0.1"
START_TIMEOUT = 10.0
IO_TIMEOUT = 30.0
EXIT_TIMEOUT = 5.0
USERS = ("alice", "bob")


class Failure(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Failure(msg)


class Server:
    """ringprot-lmtpd as a child, on port 0, with a fresh data dir."""

    def __init__(self, exe, tmp, opts=(), data=None, listen=None):
        """data: an existing data dir (a restart), else a fresh one;
        listen: "unix:/path" instead of the loopback port."""
        if data is None:
            data = tempfile.mkdtemp(dir=tmp, prefix="data-")
            for u in USERS:
                for sub in ("tmp", "new", "cur"):
                    os.makedirs(os.path.join(data, "users", u, sub),
                                exist_ok=True)
        self.data = data
        args = [exe, "-l", listen or f"{HOST}:0", "-w", "2",
                "-o", f"data_dir={self.data}"]
        for o in opts:
            args += ["-o", o]
        self.lines = queue.Queue()
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, text=True)
        threading.Thread(target=self._read, daemon=True).start()
        line = self._next(START_TIMEOUT)
        check(line is not None,
              f"no 'listening on' line (exit {self.proc.poll()})")
        if listen is not None and listen.startswith("unix:"):
            check(line.startswith(f"listening on {listen[5:]} "),
                  f"unexpected first line {line!r}")
            self.port = None
            return
        m = re.match(r"listening on 127\.0\.0\.1:(\d+) ", line)
        check(m is not None, f"unexpected first line {line!r}")
        self.port = int(m.group(1))

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def _next(self, timeout):
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            return None

    def maildir(self, user, folder=None):
        base = os.path.join(self.data, "users", user)
        return os.path.join(base, "." + folder) if folder else base

    def new_files(self, user, folder=None):
        d = os.path.join(self.maildir(user, folder), "new")
        if not os.path.isdir(d):
            return []
        return sorted(os.path.join(d, f) for f in os.listdir(d))

    def nothing_partial(self):
        """No file in any tmp/ and none left in the spool."""
        for root, _, files in os.walk(self.data):
            base = os.path.basename(root)
            if base in ("tmp", "spool"):
                check(not files, f"leftover in {root}: {files}")

    def stop(self):
        check(self.proc.poll() is None, "server exited early")
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise Failure(f"no exit within {EXIT_TIMEOUT}s of SIGTERM")
        check(code == 0, f"exit code {code} after SIGTERM")

    def kill(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


class Client:
    """A raw LMTP client: bytes out, whole replies in."""

    def __init__(self, port):
        self.sock = socket.create_connection((HOST, port),
                                             timeout=IO_TIMEOUT)
        self.buf = b""
        code, _ = self.reply()
        check(code == 220, f"greeting {code}")

    def send(self, data):
        self.sock.sendall(data)

    def _line(self):
        while b"\n" not in self.buf:
            b = self.sock.recv(65536)
            if not b:
                raise Failure(f"connection closed, pending {self.buf!r}")
            self.buf += b
        line, self.buf = self.buf.split(b"\n", 1)
        return line.rstrip(b"\r").decode("latin-1")

    def reply(self):
        """One reply (all its lines): (code, text of the last line)."""
        lines = []
        while True:
            line = self._line()
            lines.append(line)
            if len(line) < 4 or line[3] != "-":
                break
        last = lines[-1]
        return int(last[:3]), "\n".join(lines)

    def codes(self, n):
        return [self.reply()[0] for _ in range(n)]

    def cmd(self, line):
        self.send(line.encode("latin-1") + b"\r\n")
        return self.reply()

    def closed(self):
        """True if the server closed the connection."""
        try:
            return self.sock.recv(1) == b""
        except OSError:
            return True

    def close(self):
        self.sock.close()


def stuff(body):
    """LF text to the wire: CRLF, dot-stuffed, with the final dot."""
    lines = body.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    out = b"".join((b"." + ln if ln.startswith(b".") else ln) + b"\r\n"
                   for ln in lines)
    return out + b".\r\n"


def read_file(path):
    with open(path, "rb") as f:
        return f.read()


def stored_body(path):
    """A delivered file without our Return-Path/Delivered-To lines."""
    data = read_file(path)
    check(data.startswith(b"Return-Path: <"), f"{path}: no Return-Path")
    lines = data.split(b"\n")
    i = 1
    if lines[1].startswith(b"Delivered-To: "):
        i = 2
    return b"\n".join(lines[i:])


def lhlo_caps(c):
    code, text = c.cmd("LHLO client.example")
    check(code == 250, f"LHLO: {code}")
    return [ln[4:].split(" ")[0] for ln in text.split("\n")[1:]]


# ---------------------------------------------------------------------
# swaks, with and without STARTTLS.
# ---------------------------------------------------------------------

def swaks(port, to, body, *extra):
    cmd = ["swaks", "--protocol", "LMTP", "--server", HOST, "--port",
           str(port), "--from", "sender@example.org", "--to", to,
           "--body", body, "--suppress-data", *extra]
    r = subprocess.run(cmd, capture_output=True, text=True,
                       timeout=IO_TIMEOUT)
    return r.returncode, r.stdout + r.stderr


def part_swaks(exe, tmp):
    srv = Server(exe, tmp)
    try:
        c = Client(srv.port)
        caps = lhlo_caps(c)
        for cap in ("PIPELINING", "ENHANCEDSTATUSCODES", "8BITMIME",
                    "SIZE"):
            check(cap in caps, f"LHLO lacks {cap}: {caps}")
        check("STARTTLS" not in caps, "STARTTLS offered without TLS")
        check("AUTH" not in caps, "AUTH offered without lmtp_auth")
        check(c.cmd("STARTTLS")[0] == 502, "STARTTLS without TLS")
        c.close()
        rc, out = swaks(srv.port, "alice@example.org", "hello from swaks")
        check(rc == 0, f"swaks failed ({rc}):\n{out}")
        files = srv.new_files("alice")
        check(len(files) == 1, f"alice has {len(files)} messages")
        data = read_file(files[0])
        check(b"hello from swaks" in data, "swaks body not stored")
        check(data.startswith(b"Return-Path: <sender@example.org>\n"
                              b"Delivered-To: alice@example.org\n"),
              f"headers: {data[:100]!r}")
        check(b"\r" not in data, "CR left in the stored message")
        srv.nothing_partial()
        srv.stop()
    finally:
        srv.kill()

    cert = os.path.join(tmp, "cert.pem")
    key = os.path.join(tmp, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048",
                    "-nodes", "-keyout", key, "-out", cert, "-days", "2",
                    "-subj", "/CN=localhost"], check=True,
                   capture_output=True, timeout=60)
    srv = Server(exe, tmp, [f"tls_cert_file={cert}", f"tls_key_file={key}"])
    try:
        c = Client(srv.port)
        check("STARTTLS" in lhlo_caps(c), "STARTTLS not offered with TLS")
        # Plaintext pipelined after STARTTLS is refused, not carried over.
        c.send(b"STARTTLS\r\nNOOP\r\n")
        check(c.reply()[0] == 501, "STARTTLS injection not refused")
        c.close()
        rc, out = swaks(srv.port, "bob@example.org", "over tls", "--tls")
        check(rc == 0, f"swaks --tls failed ({rc}):\n{out}")
        check("TLS started" in out, f"swaks did not start TLS:\n{out}")
        files = srv.new_files("bob")
        check(len(files) == 1 and b"over tls" in read_file(files[0]),
              "message over STARTTLS not stored")
        srv.stop()
    finally:
        srv.kill()
    print("swaks: plain and STARTTLS deliveries ok")


# ---------------------------------------------------------------------
# AUTH through SASL (a sasldb made by saslpasswd2), off by default.
# ---------------------------------------------------------------------

def part_auth(exe, tmp):
    db = os.path.join(tmp, "sasldb")
    subprocess.run(["saslpasswd2", "-f", db, "-c", "-p", "-u", "localhost",
                    "alice"], input=b"s3cret", check=True, timeout=30)
    srv = Server(exe, tmp, ["lmtp_auth=yes", f"sasldb_path={db}",
                            "servername=localhost"])
    try:
        c = Client(srv.port)
        caps = lhlo_caps(c)
        check("AUTH" in caps, f"AUTH not offered: {caps}")
        check(c.cmd("MAIL FROM:<a@b>")[0] == 250, "MAIL")
        check(c.cmd("AUTH PLAIN")[0] == 503, "AUTH inside a transaction")
        c.close()
        for mech in ("PLAIN", "LOGIN"):
            rc, out = swaks(srv.port, "alice@example.org", f"auth {mech}",
                            "--auth", mech, "--auth-user", "alice",
                            "--auth-password", "s3cret")
            check(rc == 0 and "235 2.7.0" in out,
                  f"AUTH {mech} failed ({rc}):\n{out}")
        check("334 " in out, "AUTH LOGIN without 334 challenges")
        rc, out = swaks(srv.port, "alice@example.org", "bad", "--auth",
                        "PLAIN", "--auth-user", "alice",
                        "--auth-password", "wrong")
        check(rc != 0 and "535 5.7.8" in out,
              f"a wrong password was not refused:\n{out}")
        check(len(srv.new_files("alice")) == 2, "authenticated mail lost")
        srv.stop()
    finally:
        srv.kill()
    print("auth: PLAIN and LOGIN through SASL, a bad password refused")


# ---------------------------------------------------------------------
# Several recipients, one unknown: smtplib.LMTP and a pipelined batch.
# ---------------------------------------------------------------------

def part_recipients(exe, tmp):
    srv = Server(exe, tmp)
    try:
        body = b"Subject: multi\n\nline one\n.leading dot\n..two dots\n"
        s = smtplib.LMTP(HOST, srv.port, timeout=IO_TIMEOUT)
        s.ehlo_or_helo_if_needed()
        check(s.does_esmtp, "LHLO not answered as ESMTP")
        check(s.mail("sender@example.org")[0] == 250, "MAIL")
        rcpts = ["alice@example.org", "nobody@example.org",
                 "bob+work@example.org"]
        got = [s.rcpt(r)[0] for r in rcpts]
        check(got == [250, 550, 250], f"RCPT replies {got}")
        code, _ = s.docmd("DATA")
        check(code == 354, f"DATA {code}")
        s.send(stuff(body))
        per = [s.getreply()[0] for _ in range(2)]
        check(per == [250, 250], f"per-recipient replies {per}")
        s.quit()
        a = srv.new_files("alice")
        b = srv.new_files("bob", "work")
        check(len(a) == 1 and len(b) == 1,
              f"alice {len(a)}, bob/work {len(b)} messages")
        for f in (a[0], b[0]):
            check(stored_body(f) == body, f"{f}: body differs")
            check(b"Delivered-To" not in read_file(f),
                  "Delivered-To with two recipients")

        # The same as one pipelined batch: replies in order, one per
        # command, then one per accepted recipient.
        c = Client(srv.port)
        batch = (b"LHLO x\r\nMAIL FROM:<s@example.org>\r\n"
                 b"RCPT TO:<alice@example.org>\r\n"
                 b"RCPT TO:<ghost@example.org>\r\n"
                 b"RCPT TO:<bob@example.org>\r\n"
                 b"RCPT TO:<alice+Lists@example.org>\r\nDATA\r\n")
        c.send(batch)
        got = c.codes(7)
        check(got == [250, 250, 250, 550, 250, 250, 354],
              f"pipelined replies {got}")
        c.send(stuff(body) + b"NOOP\r\nQUIT\r\n")
        got = c.codes(5)
        check(got == [250, 250, 250, 250, 221], f"after the dot {got}")
        check(c.closed(), "no close after QUIT")
        check(len(srv.new_files("alice")) == 2, "alice: batch lost")
        check(len(srv.new_files("bob")) == 1, "bob: batch lost")
        check(len(srv.new_files("alice", "Lists")) == 1,
              "alice+Lists not in folder Lists")

        # CHUNKING: BDAT pieces (no dot-stuffing), pipelined, one reply
        # per chunk and one per recipient after LAST.
        c = Client(srv.port)
        check("CHUNKING" in lhlo_caps(c), "CHUNKING not offered")
        wire = body.replace(b"\n", b"\r\n")
        a, b2 = wire[:7], wire[7:]
        c.send(b"MAIL FROM:<s@example.org>\r\nRCPT TO:<bob@example.org>"
               b"\r\nRCPT TO:<ghost@example.org>\r\n"
               b"RCPT TO:<alice@example.org>\r\n" +
               f"BDAT {len(a)}\r\n".encode() + a +
               f"BDAT {len(b2)} LAST\r\n".encode() + b2 + b"DATA\r\n")
        got = c.codes(8)
        check(got == [250, 250, 550, 250, 250, 250, 250, 503],
              f"BDAT replies {got}")
        # BDAT with no transaction: the chunk is read and refused.
        c.send(b"BDAT 5 LAST\r\nabcdeNOOP\r\n")
        check(c.codes(2) == [503, 250], "BDAT without MAIL")
        c.close()
        bob = srv.new_files("bob")
        check(len(bob) == 2, f"bob has {len(bob)} messages, want 2")
        check(all(stored_body(f) == body for f in bob),
              "BDAT message differs")
        check(len(srv.new_files("alice")) == 3, "alice: BDAT lost")
        srv.nothing_partial()
        srv.stop()
    finally:
        srv.kill()
    print("recipients: smtplib.LMTP and pipelined per-recipient replies ok")


# ---------------------------------------------------------------------
# Hostile input.
# ---------------------------------------------------------------------

def begin(c, rcpts=("alice@example.org",), size=None):
    c.cmd("LHLO x")
    mail = "MAIL FROM:<s@example.org>" + (f" SIZE={size}" if size else "")
    check(c.cmd(mail)[0] == 250, "MAIL refused")
    for r in rcpts:
        check(c.cmd(f"RCPT TO:<{r}>")[0] == 250, f"RCPT {r} refused")
    check(c.cmd("DATA")[0] == 354, "DATA refused")


def alive(srv):
    c = Client(srv.port)
    check(c.cmd("NOOP")[0] == 250, "NOOP after hostile input")
    c.close()


def part_hostile(exe, tmp):
    srv = Server(exe, tmp, ["max_message_size=64k"])
    try:
        c = Client(srv.port)
        # A 1 MiB line: read to its end, refused, the session goes on.
        c.send(b"NOOP " + b"A" * (1 << 20) + b"\r\n")
        code, text = c.reply()
        check(code == 500 and "5.5.2" in text, f"1 MiB line: {text}")
        check(c.cmd("NOOP")[0] == 250, "NOOP after the 1 MiB line")
        # Binary garbage without LF, then a line end.
        junk = bytes(b for b in os.urandom(4000) if b != 10)[:300]
        c.send(junk + b"\r\n")
        check(c.reply()[0] == 500, "garbage not refused with 500")
        # NUL in a command.
        c.send(b"NO\0OP\r\n")
        code, text = c.reply()
        check(code == 500 and "NUL" in text, f"NUL command: {text}")
        # RCPT before MAIL, DATA without MAIL.
        check(c.cmd("RCPT TO:<alice@example.org>")[0] == 503,
              "RCPT before MAIL")
        check(c.cmd("LHLO x")[0] == 250, "LHLO")
        check(c.cmd("DATA")[0] == 503, "DATA before MAIL")
        # MAIL before LHLO on a fresh session.
        c2 = Client(srv.port)
        check(c2.cmd("MAIL FROM:<a@b>")[0] == 503, "MAIL before LHLO")
        check(c2.cmd("HELO x")[0] == 500, "HELO accepted in LMTP")
        c2.close()
        # DATA with no accepted recipient; pipelined after a failure.
        c.send(b"MAIL FROM:<s@example.org>\r\nRCPT TO:<ghost@example.org>"
               b"\r\nDATA\r\nRSET\r\n")
        got = c.codes(4)
        check(got == [250, 550, 503, 250], f"no valid recipients: {got}")
        # Path traversal and bad names: refused per recipient.
        c.cmd("MAIL FROM:<s@example.org>")
        for bad in ("../alice@example.org", "a/b@example.org",
                    ".alice@example.org", "alice+../x@example.org",
                    "alice@../x", "@route:alice@example.org",
                    "\"alice\"@example.org", "alice+.x@example.org"):
            code, text = c.cmd(f"RCPT TO:<{bad}>")
            check(code in (501, 550), f"RCPT {bad}: {text}")
        c.send(b"RCPT TO:<alice\x01@example.org>\r\n")
        check(c.reply()[0] == 501, "control byte in a path")
        check(c.cmd("RSET")[0] == 250, "RSET")
        # An announced SIZE over the limit: refused before any data.
        code, text = c.cmd("MAIL FROM:<s@example.org> SIZE=100000")
        check(code == 552 and "5.3.4" in text, f"SIZE=100000: {text}")
        check(c.cmd("MAIL FROM:<s@example.org> SIZE=x")[0] == 501,
              "SIZE=x")
        check(c.cmd("MAIL FROM:<s@example.org> FOO=1")[0] == 555,
              "unknown MAIL parameter")
        c.close()

        before = len(srv.new_files("alice"))
        # A SIZE lie: 10 announced, 100 KiB sent (the limit is 64 KiB).
        c = Client(srv.port)
        begin(c, ("alice@example.org", "bob@example.org"), size=10)
        c.send(stuff(b"Subject: big\n\n" + (b"x" * 70 + b"\n") * 1500))
        got = c.codes(2)
        check(got == [552, 552], f"SIZE lie: {got}")
        # NUL bytes in the data.
        begin(c)
        c.send(stuff(b"Subject: nul\n\nbad\0byte\n"))
        check(c.codes(1) == [554], "NUL in DATA not refused")
        # A text line over 1000 bytes.
        begin(c)
        c.send(stuff(b"Subject: long\n\n" + b"y" * 1200 + b"\n"))
        check(c.codes(1) == [554], "long text line not refused")
        # The session still delivers afterwards.
        begin(c)
        c.send(stuff(b"Subject: fine\n\nok\n"))
        check(c.codes(1) == [250], "delivery after refused messages")
        c.close()
        check(len(srv.new_files("alice")) == before + 1,
              "a refused message became visible")
        check(len(srv.new_files("bob")) == 0, "bob got a refused message")

        # A client gone mid-DATA: nothing visible, spool cleaned.
        c = Client(srv.port)
        begin(c, ("alice@example.org", "bob@example.org"))
        c.send(b"Subject: cut\r\n\r\n" + b"partial line\r\n" * 100)
        c.sock.shutdown(socket.SHUT_RDWR)
        c.close()
        time.sleep(0.5)
        check(len(srv.new_files("alice")) == before + 1,
              "a cut message became visible")
        srv.nothing_partial()
        # Too many errors end a session with 421.
        c = Client(srv.port)
        c.send(b"BOGUS\r\n" * 25)
        codes = c.codes(22)
        check(codes[-1] == 421, f"no 421 after 21 errors: {codes[-3:]}")
        check(c.closed(), "no close after 421")
        alive(srv)
        srv.nothing_partial()
        srv.stop()
    finally:
        srv.kill()
    print("hostile input: refusals right, nothing partial, still serving")


# ---------------------------------------------------------------------
# Bare LF and bare CR: lmtp_bare_lf=accept (default) and refuse.
# ---------------------------------------------------------------------

# Bare LFs in the header and the body, a bare CR, a dot-stuffed line
# ended by a bare LF, and ".\n" as the end line.
BARE_WIRE = (b"Subject: bare\n\r\nlf only\nbare\rcr\r\n..dot\nlast\r\n"
             b".\n")
BARE_STORED = b"Subject: bare\n\nlf only\nbare\rcr\n.dot\nlast\n"
# SMTP smuggling: a bare LF before ".\r\n", then commands of a second
# message in the same DATA.
SMUGGLE = (b"Subject: outer\r\n\r\nhello\n.\r\n"
           b"MAIL FROM:<evil@example.org>\r\nRCPT TO:<bob@example.org>\r\n"
           b"DATA\r\nSubject: smuggled\r\n\r\nx\r\n.\r\n")


def part_bare_lf(exe, tmp):
    srv = Server(exe, tmp)
    try:
        # accept: bare LF is a line end (commands too), ".\n" ends DATA,
        # a bare CR is data.
        c = Client(srv.port)
        c.send(b"LHLO x\nMAIL FROM:<s@example.org>\n"
               b"RCPT TO:<alice@example.org>\nDATA\n")
        check(c.codes(4) == [250, 250, 250, 354], "bare LF commands")
        c.send(BARE_WIRE)
        check(c.codes(1) == [250], "bare LF message refused")
        check(c.cmd("NOOP")[0] == 250, "NOOP after a bare LF message")
        c.close()
        files = srv.new_files("alice")
        check(len(files) == 1 and stored_body(files[0]) == BARE_STORED,
              f"bare LF message stored as {read_file(files[0])!r}")
        srv.stop()
    finally:
        srv.kill()

    srv = Server(exe, tmp, ["lmtp_bare_lf=refuse"])
    try:
        # A command ending in a bare LF: 550, closed, nothing after read.
        c = Client(srv.port)
        c.send(b"LHLO x\nNOOP\r\n")
        code, text = c.reply()
        check(code == 550 and "5.5.2" in text, f"bare LF LHLO: {text}")
        check(c.closed(), "no close after a bare LF command")
        # CR LF throughout: delivered.
        c = Client(srv.port)
        begin(c, ("alice@example.org",))
        c.send(stuff(b"Subject: clean\n\nok\n"))
        check(c.codes(1) == [250], "a clean message refused")
        # A bare LF in DATA: 550 for each recipient, closed, nothing
        # delivered; the bare CR alone is fine (next message).
        begin(c, ("alice@example.org", "bob@example.org"))
        c.send(BARE_WIRE)
        got = [c.reply() for _ in range(2)]
        check([g[0] for g in got] == [550, 550] and "5.5.2" in got[0][1],
              f"bare LF in DATA: {got}")
        check(c.closed(), "no close after a bare LF message")
        c = Client(srv.port)
        begin(c, ("alice@example.org",))
        c.send(b"Subject: cr\r\n\r\nbare\rcr\r\n.\r\n")
        check(c.codes(1) == [250], "a bare CR refused")
        # Smuggling: the outer message is refused, the inner never runs.
        begin(c, ("alice@example.org",))
        c.send(SMUGGLE)
        check(c.codes(1) == [550], "smuggling attempt not refused")
        check(c.closed(), "no close after the smuggling attempt")
        time.sleep(0.2)
        check(len(srv.new_files("alice")) == 2, "refused mail delivered")
        check(not srv.new_files("bob"), "a smuggled message delivered")
        alive(srv)
        srv.nothing_partial()
        srv.stop()
    finally:
        srv.kill()
    print("bare LF: accepted by default, refused with lmtp_bare_lf=refuse "
          "(no smuggling); bare CR kept as data")


# ---------------------------------------------------------------------
# LMTP over a Unix socket (Postfix's lmtp:unix:/path).
# ---------------------------------------------------------------------

def part_unix(exe, tmp):
    path = os.path.join(tmp, "lmtp.sock")
    srv = Server(exe, tmp, listen=f"unix:{path}")
    try:
        check(stat.S_ISSOCK(os.stat(path).st_mode), f"{path}: no socket")
        # smtplib.LMTP takes a path as host (a leading '/').
        s = smtplib.LMTP(path, timeout=IO_TIMEOUT)
        s.ehlo_or_helo_if_needed()
        body = b"Subject: unix\n\nover AF_UNIX\n"
        refused = s.sendmail("s@example.org", ["alice@example.org"],
                             body.replace(b"\n", b"\r\n"))
        check(refused == {}, f"smtplib over AF_UNIX refused {refused}")
        s.quit()
        # Raw AF_UNIX: a pipelined batch, per-recipient replies.
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(IO_TIMEOUT)
        sock.connect(path)
        f = sock.makefile("rb")
        check(f.readline().startswith(b"220 "), "no greeting over unix")
        sock.sendall(b"LHLO x\r\nMAIL FROM:<s@example.org>\r\n"
                     b"RCPT TO:<alice@example.org>\r\n"
                     b"RCPT TO:<ghost@example.org>\r\n"
                     b"RCPT TO:<bob@example.org>\r\nDATA\r\n")
        codes = []
        while len(codes) < 6:
            ln = f.readline()
            check(ln, "unix socket closed early")
            if ln[3:4] != b"-":
                codes.append(int(ln[:3]))
        check(codes == [250, 250, 250, 550, 250, 354],
              f"unix pipelined replies {codes}")
        sock.sendall(stuff(body) + b"QUIT\r\n")
        codes = [int(f.readline()[:3]) for _ in range(3)]
        check(codes == [250, 250, 221], f"unix after the dot {codes}")
        sock.close()
        a, b = srv.new_files("alice"), srv.new_files("bob")
        check(len(a) == 2 and len(b) == 1, f"unix: {len(a)}, {len(b)}")
        check(all(stored_body(x) == body for x in a + b),
              "unix: body differs")
        srv.stop()
        check(not os.path.exists(path), "socket file left after stop")
    finally:
        srv.kill()
    print("unix socket: smtplib.LMTP and a raw pipelined batch delivered")


# ---------------------------------------------------------------------
# smtp-source -L: 2000 messages over 16 sessions.
# ---------------------------------------------------------------------

def part_smtp_source(exe, tmp):
    tool = shutil.which("smtp-source") or "/usr/sbin/smtp-source"
    check(os.access(tool, os.X_OK), "smtp-source missing (scripts/deps.sh)")
    srv = Server(exe, tmp)
    total, sessions = 2000, 16
    try:
        r = subprocess.run([tool, "-L", "-s", str(sessions), "-m",
                            str(total), "-f", "load@example.org", "-t",
                            "alice@example.org", "-l", "4096",
                            f"{HOST}:{srv.port}"],
                           capture_output=True, text=True, timeout=120)
        check(r.returncode == 0, f"smtp-source failed: {r.stderr}")
        files = srv.new_files("alice")
        check(len(files) == total,
              f"{len(files)} messages stored of {total}")
        ids, bodies = set(), set()
        for f in files:
            data = read_file(f)
            head, _, body = data.partition(b"\n\n")
            hdrs = head.split(b"\n")
            check(hdrs[0] == b"Return-Path: <load@example.org>" and
                  hdrs[1] == b"Delivered-To: alice@example.org",
                  f"{f}: headers {hdrs[:2]}")
            mid = [h for h in hdrs if h.startswith(b"Message-Id: ")]
            check(len(mid) == 1, f"{f}: no Message-Id")
            ids.add(mid[0])
            bodies.add(body)
        check(len(ids) == total, f"{total - len(ids)} duplicates")
        # smtp-source sends the same body each time: "1XXX...", "2XXX..."
        # lines; every stored copy must be that body, LF for CRLF.
        check(len(bodies) == 1, f"{len(bodies)} different bodies")
        body = bodies.pop()
        lines = body.split(b"\n")
        check(lines[-1] == b"" and all(
            re.fullmatch(rb"\d*X+", ln) for ln in lines[:-1]),
            "body is not smtp-source's pattern")
        check(len(body) >= 4096 - 200, f"body of {len(body)} bytes")
        srv.nothing_partial()
        srv.stop()
    finally:
        srv.kill()
    print(f"smtp-source: {total} messages over {sessions} sessions, each "
          "once, byte-exact")


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    exe = sys.argv[1]
    tmp = tempfile.mkdtemp(prefix="lmtpd-test-")
    try:
        part_swaks(exe, tmp)
        part_auth(exe, tmp)
        part_recipients(exe, tmp)
        part_hostile(exe, tmp)
        part_bare_lf(exe, tmp)
        part_unix(exe, tmp)
        part_smtp_source(exe, tmp)
    except Failure as e:
        print(f"FAIL: {e}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("lmtpd: all parts passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())

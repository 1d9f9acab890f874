#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-3-Clause
"""ringprot-imapd against Python's imaplib and a raw socket client.

Usage: test_imapd.py PATH-TO-ringprot-imapd

Each part starts a fresh server on 127.0.0.1 port 0 with its own data
directory and a sasldb made by saslpasswd2, and stops it by pid:

  - capability: the greeting's list and CAPABILITY agree; LITERAL-,
    APPENDLIMIT, AUTH=PLAIN, ID, IDLE; no LOGINDISABLED on loopback;
  - login: LOGIN with the right password makes the user's store (INBOX,
    Sent, Drafts, Trash, Junk), a wrong one gets NO
    [AUTHENTICATIONFAILED]; AUTHENTICATE PLAIN through imaplib, with
    SASL-IR (RFC 4959) and cancelled with "*"; commands of a later state
    before login get BAD; ID, NAMESPACE, ENABLE; LOGOUT says BYE and
    closes;
  - tls: STARTTLS then LOGIN (imaplib), implicit TLS on the imaps
    listener (IMAP4_SSL), and plaintext pipelined after STARTTLS is
    never run as a command (CVE-2011-0411);
  - logindisabled: a client that is not loopback (PROXY protocol from a
    trusted proxy names 192.0.2.1) sees LOGINDISABLED, no AUTH=PLAIN,
    and LOGIN refused; with allowplaintext it may log in;
  - compress: COMPRESS DEFLATE, then commands through raw deflate;
  - hostile: a 1 MiB line (BAD, the session goes on), a 2 GiB literal
    announced (NO [TOOBIG] at once, nothing read, the server's memory
    does not grow), a 2 GiB {n+} (BAD and BYE), binary garbage (BAD
    replies then BYE after too many errors), and the server still
    serves a new client afterwards.
"""

import base64
import imaplib
import os
import queue
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import zlib

HOST = "127.0.0.1"
START_TIMEOUT = 10.0
EXIT_TIMEOUT = 10.0
USER, PASSWORD = "alice", "s3cret"


class Failure(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Failure(msg)


class Server:
    """ringprot-imapd as a child on port 0 (and an imaps port with TLS)."""

    def __init__(self, exe, tmp, opts=(), tls=None):
        self.data = tempfile.mkdtemp(dir=tmp, prefix="data-")
        args = [exe, "-l", f"{HOST}:0", "-w", "2",
                "-o", f"data_dir={self.data}",
                "-o", f"sasldb_path={os.path.join(tmp, 'sasldb')}",
                "-o", "servername=localhost"]
        if tls is not None:
            args += ["-o", f"tls_cert_file={tls[0]}",
                     "-o", f"tls_key_file={tls[1]}",
                     "-o", f"imaps.tls_listen={HOST}:0"]
        for o in opts:
            args += ["-o", o]
        self.lines = queue.Queue()
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True)
        threading.Thread(target=self._read, daemon=True).start()
        self.port = self._listening()
        self.tls_port = self._listening() if tls is not None else None

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def _listening(self):
        try:
            line = self.lines.get(timeout=START_TIMEOUT)
        except queue.Empty:
            line = None
        check(line is not None,
              f"no 'listening on' line (exit {self.proc.poll()})")
        m = re.match(r"listening on 127\.0\.0\.1:(\d+) ", line)
        check(m is not None, f"unexpected line {line!r}")
        return int(m.group(1))

    def rss_kib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

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


class Raw:
    """A line-oriented raw IMAP client (bytes out, lines in)."""

    def __init__(self, port, timeout=10.0, proxy=None):
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        if proxy is not None:
            self.sock.sendall(proxy)
        self.buf = b""
        self.inflate = None
        self.deflate = None

    def send(self, data):
        if self.deflate is not None:
            data = (self.deflate.compress(data) +
                    self.deflate.flush(zlib.Z_SYNC_FLUSH))
        self.sock.sendall(data)

    def _more(self):
        data = self.sock.recv(65536)
        if not data:
            return False
        if self.inflate is not None:
            data = self.inflate.decompress(data)
        self.buf += data
        return True

    def line(self):
        """The next line without CR LF, or None at the end."""
        while b"\n" not in self.buf:
            try:
                if not self._more():
                    return None
            except (ConnectionResetError, socket.timeout):
                return None
        line, self.buf = self.buf.split(b"\n", 1)
        return line.rstrip(b"\r").decode("latin-1")

    def until_tag(self, tag):
        """Lines up to and including the tagged one."""
        out = []
        while True:
            line = self.line()
            check(line is not None,
                  f"connection ended before {tag}'s reply: {out}")
            out.append(line)
            if line.startswith(tag + " "):
                return out

    def cmd(self, tag, text):
        self.send(f"{tag} {text}\r\n".encode())
        return self.until_tag(tag)

    def starttls(self):
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        self.sock = ctx.wrap_socket(self.sock, server_hostname="localhost")

    def closed(self):
        """Does the server close (after what is left)?"""
        while True:
            line = self.line()
            if line is None:
                return True

    def close(self):
        self.sock.close()


def no_verify():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def caps_of(line):
    m = re.search(r"\[CAPABILITY ([^]]*)\]", line)
    check(m is not None, f"no CAPABILITY code in {line!r}")
    return m.group(1).split()


# ---------------------------------------------------------------------

def part_capability(exe, tmp):
    srv = Server(exe, tmp)
    try:
        c = Raw(srv.port)
        greeting = c.line()
        check(greeting.startswith("* OK [CAPABILITY ") and
              greeting.endswith("ringprot IMAP ready"),
              f"greeting {greeting!r}")
        caps = caps_of(greeting)
        for want in ("IMAP4rev1", "LITERAL-", "SASL-IR", "ID", "ENABLE",
                     "IDLE", "NAMESPACE", "UIDPLUS", "UNSELECT", "MOVE",
                     "CHILDREN", "SPECIAL-USE", "LIST-EXTENDED", "ESEARCH",
                     "APPENDLIMIT=52428800", "AUTH=PLAIN"):
            check(want in caps, f"{want} not in {caps}")
        check("LOGINDISABLED" not in caps, "LOGINDISABLED on loopback")
        check("STARTTLS" not in caps, "STARTTLS offered without TLS")
        check("COMPRESS=DEFLATE" not in caps, "COMPRESS before login")
        out = c.cmd("a", "CAPABILITY")
        check(out[0] == "* CAPABILITY " + " ".join(caps) and
              out[1] == "a OK CAPABILITY completed", f"CAPABILITY: {out}")
        out = c.cmd("b", "capability extra")
        check(out == ["b BAD Unexpected arguments"], f"args: {out}")
        c.close()
        m = imaplib.IMAP4(HOST, srv.port)
        check("IMAP4REV1" in m.capabilities, f"imaplib: {m.capabilities}")
        m.logout()
        srv.stop()
    finally:
        srv.kill()
    print("capability: greeting and CAPABILITY agree")


def part_login(exe, tmp):
    srv = Server(exe, tmp)
    try:
        m = imaplib.IMAP4(HOST, srv.port)
        try:
            m.login(USER, "wrong")
            raise Failure("a wrong password was accepted")
        except imaplib.IMAP4.error as e:
            check("AUTHENTICATIONFAILED" in str(e), f"bad password: {e}")
        typ, data = m.login(USER, PASSWORD)
        check(typ == "OK" and b"Logged in" in data[0], f"login: {data}")
        check(b"COMPRESS=DEFLATE" in data[0], "no COMPRESS after login")
        home = os.path.join(srv.data, "users", USER)
        for d in ("", ".Sent", ".Drafts", ".Trash", ".Junk"):
            for sub in ("cur", "new", "tmp"):
                check(os.path.isdir(os.path.join(home, d, sub)),
                      f"{d or 'INBOX'}/{sub} not made at first login")
        typ, data = m._simple_command("NAMESPACE")
        check(typ == "OK" and m.untagged_responses["NAMESPACE"] ==
              [b'(("" ".")) NIL NIL'], f"NAMESPACE: {m.untagged_responses}")
        typ, data = m.logout()
        check(typ == "BYE", f"LOGOUT: {typ} {data}")

        m = imaplib.IMAP4(HOST, srv.port)
        typ, _ = m.authenticate(
            "PLAIN", lambda _: f"\0{USER}\0{PASSWORD}".encode())
        check(typ == "OK", "AUTHENTICATE PLAIN")
        m.logout()

        c = Raw(srv.port)
        c.line()
        out = c.cmd("a", "NAMESPACE")
        check(out == ["a BAD Log in first"], f"before login: {out}")
        out = c.cmd("b", "ID (\"name\" \"test\" \"version\" NIL)")
        check(out[0].startswith("* ID (") and out[1] == "b OK ID completed",
              f"ID: {out}")
        out = c.cmd("c", "UID NOOP")
        check(out == ["c BAD Unknown command"], f"UID NOOP: {out}")
        out = c.cmd("d", "LOGOUT")
        check(out[-1] == "d OK LOGOUT completed", f"LOGOUT: {out}")
        c.close()
        srv.stop()
    finally:
        srv.kill()
    print("login: LOGIN, wrong password, first-login store, states, ID")


def part_sasl_ir(exe, tmp):
    srv = Server(exe, tmp)
    try:
        c = Raw(srv.port)
        c.line()
        # A continuation, then "*" cancels (RFC 3501 6.2.2).
        c.send(b"a AUTHENTICATE PLAIN\r\n")
        line = c.line()
        check(line == "+ ", f"no empty challenge: {line!r}")
        c.send(b"*\r\n")
        out = c.until_tag("a")
        check(out[-1].startswith("a BAD"), f"cancel: {out}")
        # Garbage base64.
        out = c.cmd("b", "AUTHENTICATE PLAIN ###")
        check(out[-1].startswith("b BAD"), f"bad base64: {out}")
        # SASL-IR: the initial response on the command line.
        ir = base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()).decode()
        out = c.cmd("c", f"AUTHENTICATE PLAIN {ir}")
        check(out[-1].startswith("c OK [CAPABILITY "), f"SASL-IR: {out}")
        out = c.cmd("c2", f"LOGIN {USER} {PASSWORD}")
        check(out == ["c2 BAD Command not valid in this state"],
              f"LOGIN twice: {out}")
        out = c.cmd("d", "ENABLE UTF8=ACCEPT CONDSTORE")
        check(out == ["* ENABLED", "d OK ENABLE completed"], f"ENABLE: {out}")
        out = c.cmd("e", "LOGOUT")
        check(out[0].startswith("* BYE") and out[1].startswith("e OK"),
              f"LOGOUT: {out}")
        check(c.closed(), "not closed after LOGOUT")
        c.close()
        srv.stop()
    finally:
        srv.kill()
    print("sasl-ir: AUTHENTICATE with SASL-IR, cancel, bad base64")


def make_cert(tmp):
    cert = os.path.join(tmp, "cert.pem")
    key = os.path.join(tmp, "key.pem")
    if not os.path.exists(cert):
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048",
                        "-nodes", "-keyout", key, "-out", cert, "-days", "2",
                        "-subj", "/CN=localhost"], check=True,
                       capture_output=True, timeout=60)
    return cert, key


def part_tls(exe, tmp):
    srv = Server(exe, tmp, tls=make_cert(tmp))
    try:
        m = imaplib.IMAP4(HOST, srv.port)
        check("STARTTLS" in m.capabilities, f"no STARTTLS: {m.capabilities}")
        m.starttls(ssl_context=no_verify())
        check("STARTTLS" not in m.capabilities, "STARTTLS after TLS")
        typ, _ = m.login(USER, PASSWORD)
        check(typ == "OK", "LOGIN after STARTTLS")
        m.logout()

        m = imaplib.IMAP4_SSL(HOST, srv.tls_port, ssl_context=no_verify())
        check("STARTTLS" not in m.capabilities, "STARTTLS over imaps")
        typ, _ = m.login(USER, PASSWORD)
        check(typ == "OK", "LOGIN over implicit TLS")
        m.logout()

        # STARTTLS injection: "b" arrives with STARTTLS in one packet.
        c = Raw(srv.port)
        c.line()
        c.send(b"a STARTTLS\r\nb LOGIN alice s3cret\r\n")
        line = c.line()
        check(line == "a OK Begin TLS negotiation now", f"STARTTLS: {line}")
        check(c.buf == b"", f"bytes before the handshake: {c.buf!r}")
        c.starttls()
        out = c.cmd("c", "NOOP")
        check(out == ["c OK NOOP completed"], f"injected command ran: {out}")
        out = c.cmd("d", "NAMESPACE")
        check(out == ["d BAD Log in first"], f"injected LOGIN ran: {out}")
        out = c.cmd("e", "STARTTLS")
        check(out == ["e BAD TLS is already active"], f"STARTTLS twice: {out}")
        c.close()
        srv.stop()
    finally:
        srv.kill()
    print("tls: STARTTLS, implicit TLS, injected plaintext discarded")


def part_logindisabled(exe, tmp):
    proxy = b"PROXY TCP4 192.0.2.1 127.0.0.1 40000 143\r\n"
    for allow in (False, True):
        opts = ["imap.proxy_protocol=yes", "imap.proxy_trusted=127.0.0.1"]
        if allow:
            opts.append("allowplaintext=yes")
        srv = Server(exe, tmp, opts)
        try:
            c = Raw(srv.port, proxy=proxy)
            caps = caps_of(c.line())
            out = c.cmd("a", f"LOGIN {USER} {PASSWORD}")
            if allow:
                check("LOGINDISABLED" not in caps and "AUTH=PLAIN" in caps,
                      f"allowplaintext: {caps}")
                check(out[-1].startswith("a OK"), f"LOGIN: {out}")
            else:
                check("LOGINDISABLED" in caps, f"no LOGINDISABLED: {caps}")
                check("AUTH=PLAIN" not in caps, f"AUTH=PLAIN offered: {caps}")
                check(out == ["a NO [PRIVACYREQUIRED] LOGINDISABLED: use "
                              "STARTTLS first"], f"LOGIN: {out}")
            c.close()
            srv.stop()
        finally:
            srv.kill()
    print("logindisabled: a non-loopback client, with and without "
          "allowplaintext")


def part_compress(exe, tmp):
    srv = Server(exe, tmp)
    try:
        c = Raw(srv.port)
        c.line()
        out = c.cmd("a", "COMPRESS DEFLATE")
        check(out == ["a BAD Log in first"], f"COMPRESS before login: {out}")
        out = c.cmd("b", f"LOGIN {USER} {PASSWORD}")
        check(out[-1].startswith("b OK"), f"LOGIN: {out}")
        out = c.cmd("c", "COMPRESS DEFLATE")
        check(out == ["c OK DEFLATE active"], f"COMPRESS: {out}")
        c.inflate = zlib.decompressobj(-15)
        c.deflate = zlib.compressobj(6, zlib.DEFLATED, -15)
        if c.buf:
            c.buf = c.inflate.decompress(c.buf)
        out = c.cmd("d", "NOOP")
        check(out == ["d OK NOOP completed"], f"NOOP deflated: {out}")
        out = c.cmd("e", "CAPABILITY")
        check("COMPRESS=DEFLATE" not in out[0], f"offered twice: {out}")
        out = c.cmd("f", "COMPRESS DEFLATE")
        check(out == ["f NO [COMPRESSIONACTIVE] DEFLATE active"],
              f"COMPRESS twice: {out}")
        out = c.cmd("g", "LOGOUT")
        check(out[-1].startswith("g OK"), f"LOGOUT: {out}")
        c.close()
        srv.stop()
    finally:
        srv.kill()
    print("compress: DEFLATE both ways")


def part_hostile(exe, tmp):
    srv = Server(exe, tmp)
    try:
        c = Raw(srv.port, timeout=30)
        c.line()
        c.send(b"a LOGIN " + b"x" * (1 << 20) + b"\r\n")
        out = c.until_tag("a")
        check(out == ["a BAD Line too long"], f"1 MiB line: {out}")
        c.send(b"a2 NOOP " + b"x" * (1 << 20) + b"\r\n")
        out = c.until_tag("a2")
        check(out == ["a2 BAD Unexpected arguments"], f"1 MiB NOOP: {out}")
        out = c.cmd("b", "NOOP")
        check(out == ["b OK NOOP completed"], f"after the long line: {out}")

        rss = srv.rss_kib()
        c.send(b"c LOGIN {2147483648}\r\n")
        out = c.until_tag("c")
        check(out == ["c NO [TOOBIG] Literal too big"],
              f"2 GiB literal: {out}")
        out = c.cmd("d", "NOOP")
        check(out == ["d OK NOOP completed"], f"after the literal: {out}")
        check(srv.rss_kib() < rss + 16384,
              f"memory grew: {rss} -> {srv.rss_kib()} KiB")
        c.close()

        c = Raw(srv.port)
        c.line()
        c.send(b"e LOGIN {2147483648+}\r\n" + b"y" * 1000)
        out = c.until_tag("e")
        check(out[-1].startswith("e BAD") and "TOOBIG" in out[-1],
              f"2 GiB {{n+}}: {out}")
        check(c.line().startswith("* BYE"), "no BYE after a big {n+}")
        check(c.closed(), "not closed after a big {n+}")
        c.close()

        c = Raw(srv.port)
        c.line()
        rnd = os.urandom(1 << 16)
        c.send(rnd + b"\r\n")
        lines = []
        while (line := c.line()) is not None:
            lines.append(line)
        check(len(lines) > 0 and all(
            re.match(r"^\S+ (BAD|NO) ", x) or x.startswith("* ")
            for x in lines), f"garbage answered oddly: {lines[:5]}")
        check(lines[-1] == "* BYE Too many errors",
              f"garbage: last line {lines[-1]!r}")
        c.close()

        m = imaplib.IMAP4(HOST, srv.port)
        typ, _ = m.login(USER, PASSWORD)
        check(typ == "OK", "login after the hostile clients")
        m.logout()
        srv.stop()
    finally:
        srv.kill()
    print("hostile: 1 MiB line, 2 GiB literals, garbage; still serving")


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    exe = sys.argv[1]
    tmp = tempfile.mkdtemp(prefix="imapd-test-")
    try:
        subprocess.run(["saslpasswd2", "-f", os.path.join(tmp, "sasldb"),
                        "-c", "-p", "-u", "localhost", USER],
                       input=PASSWORD.encode(), check=True, timeout=30)
        part_capability(exe, tmp)
        part_login(exe, tmp)
        part_sasl_ir(exe, tmp)
        part_tls(exe, tmp)
        part_logindisabled(exe, tmp)
        part_compress(exe, tmp)
        part_hostile(exe, tmp)
    except Failure as e:
        print(f"FAIL: {e}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("imapd: all parts passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())

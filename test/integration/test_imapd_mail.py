# SPDX-License-Identifier: BSD-3-Clause
"""The demo mail server's path end to end: ringprot-imapd with LMTP in the
same process (lmtp.listen), real clients only (Python's smtplib.LMTP and
imaplib, raw sockets where imaplib has no command), on loopback.

  deliver    LMTP deliveries read back over IMAP byte-exact (BODY[],
             RFC822.SIZE, a part of a multipart, BODYSTRUCTURE, ENVELOPE)
  folders    SPECIAL-USE folders made at first login, CREATE, LIST,
             RENAME, DELETE, SUBSCRIBE/LSUB, STATUS, APPEND (APPENDUID),
             COPY (COPYUID), MOVE, EXPUNGE
  sessions   two sessions on one mailbox: flags and expunges by one reach
             the other as untagged FETCH/EXPUNGE, never during its FETCH
  search     SEARCH keys, UID SEARCH, ESEARCH RETURN (MIN MAX COUNT ALL)
  idle       IDLE sees EXISTS after an in-process LMTP delivery, and after
             a file another process drops into new/ (inotify); DONE
  idle-changes  flags, an expunge, an APPEND by another session reach a
             parked IDLE exactly once each; the view after DONE
  append-cut a client gone in the middle of an APPEND literal leaves
             nothing in the mailbox, tmp/ included
  tls        IMAPS (implicit TLS) and STARTTLS logins
  compress   COMPRESS=DEFLATE with Python's zlib as the peer
  rev2       ENABLE IMAP4rev2: UTF-8 mailbox names, no RECENT/\\Recent,
             ESEARCH for every SEARCH, SEARCHRES ("$"), LIST-STATUS,
             STATUS DELETED, CLOSED, literal8 APPEND (NUL refused)
  binary     FETCH BINARY (RFC 3516, RFC 9051 6.4.5): BINARY[] the whole
             message with its parts decoded, BINARY[n] and BINARY.SIZE of
             base64 and quoted-printable leaves of single-part and multipart
             messages, of a multipart part, literal8 for NULs, UNKNOWN-CTE
  select-storm  24 sessions of one user SELECT/EXAMINE/IDLE/UNSELECT/CLOSE
             one mailbox pipelined at once (handles sharing a folder's list,
             one closed while another copies it): right counts, no crash

Usage: test_imapd_mail.py PATH-TO-ringprot-imapd [part...]
"""

import imaplib
import os
import random
import re
import shutil
import smtplib
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from srvlib import HOST, Failure, Server, check  # noqa: E402

PASSWORD = "s3cret-pw"


class Env:
    """A fresh server with users alice and bob, a sasldb and a cert."""

    def __init__(self, exe, tmp, extra=()):
        self.tmp = tmp
        self.exe = exe
        self.data = os.path.join(tmp, "data")
        for u in ("alice", "bob"):
            for sub in ("tmp", "new", "cur"):
                os.makedirs(os.path.join(self.data, "users", u, sub))
        self.sasldb = os.path.join(tmp, "sasldb")
        for u in ("alice", "bob"):
            r = subprocess.run(["saslpasswd2", "-f", self.sasldb, "-c", "-p",
                                u], input=PASSWORD, text=True,
                               capture_output=True)
            check(r.returncode == 0, f"saslpasswd2: {r.stderr}")
        self.cert = os.path.join(tmp, "cert.pem")
        key = os.path.join(tmp, "key.pem")
        r = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048",
                            "-nodes", "-days", "2", "-subj", "/CN=localhost",
                            "-keyout", key, "-out", self.cert],
                           capture_output=True, text=True)
        check(r.returncode == 0, f"openssl req: {r.stderr}")
        self.srv = Server([exe, "-w", "2",
                           "-o", f"data_dir={self.data}",
                           "-o", f"sasldb_path={self.sasldb}",
                           "-o", f"tls_cert_file={self.cert}",
                           "-o", f"tls_key_file={key}",
                           "-o", "imap.listen=127.0.0.1:0",
                           "-o", "imaps.tls_listen=127.0.0.1:0",
                           "-o", "lmtp.listen=127.0.0.1:0",
                           "-o", "imap_idle_keepalive=0", *extra])
        (_, self.imap), (_, self.imaps), (_, self.lmtp) = \
            self.srv.listening(3)

    def stop(self):
        self.srv.stop()

    def deliver(self, rcpts, msg):
        """One LMTP transaction; every recipient must get its 250 (read
        one reply per recipient after the dot, which smtplib.LMTP does
        not: it reads one)."""
        with smtplib.LMTP(HOST, self.lmtp) as l:
            l.ehlo_or_helo_if_needed()
            code, _ = l.mail("sender@example.com")
            check(code == 250, f"MAIL: {code}")
            for r in rcpts:
                code, resp = l.rcpt(r)
                check(code == 250, f"RCPT {r}: {code} {resp}")
            code, resp = l.docmd("DATA")
            check(code == 354, f"DATA: {code} {resp}")
            body = msg.replace(b"\r\n.", b"\r\n..")
            l.send(body + b".\r\n")
            for r in rcpts:
                code, resp = l.getreply()
                check(code == 250, f"after the dot, {r}: {code} {resp}")

    def login(self, user="alice"):
        m = imaplib.IMAP4(HOST, self.imap)
        m.login(user, PASSWORD)
        return m

    def files(self, user, sub):
        d = os.path.join(self.data, "users", user, sub)
        return sorted(os.listdir(d))


def ok(res, what):
    typ, data = res
    check(typ == "OK", f"{what}: {typ} {data}")
    return data


MSG1 = (b"From: Bob Example <bob@example.com>\r\n"
        b"To: alice@example.org\r\n"
        b"Subject: first message\r\n"
        b"Date: Sun, 06 Dec 2026 10:00:00 +0100\r\n"
        b"Message-ID: <m1@example.com>\r\n"
        b"\r\n"
        b"Hello Alice,\r\n"
        b".. a line that was dot-stuffed\r\n"
        b"the quick brown fox\r\n")

MSG2 = (b"From: carol@example.net\r\n"
        b"To: alice@example.org\r\n"
        b"Subject: with attachment\r\n"
        b"MIME-Version: 1.0\r\n"
        b"Content-Type: multipart/mixed; boundary=\"XYZ\"\r\n"
        b"\r\n"
        b"preamble\r\n"
        b"--XYZ\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"\r\n"
        b"see the attachment\r\n"
        b"--XYZ\r\n"
        b"Content-Type: application/octet-stream; name=\"a.bin\"\r\n"
        b"Content-Transfer-Encoding: base64\r\n"
        b"\r\n"
        b"AAECAwQFBgcICQ==\r\n"
        b"--XYZ--\r\n")


def fetch_one(m, seq, item):
    data = ok(m.fetch(str(seq), item), f"FETCH {item}")
    check(isinstance(data[0], tuple), f"FETCH {item}: {data}")
    return data[0][1]


def part_deliver(env):
    env.deliver(["alice@example.org"], MSG1)
    env.deliver(["alice@example.org", "bob@example.org"], MSG2)
    m = env.login()
    n = int(ok(m.select("INBOX"), "SELECT")[0])
    check(n == 2, f"2 messages in INBOX, not {n}")
    body = fetch_one(m, 1, "(BODY.PEEK[])")
    check(body.startswith(b"Return-Path: <sender@example.com>\r\n"),
          f"Return-Path first: {body[:80]!r}")
    check(body.endswith(MSG1),
          f"BODY[] is the message as sent: {body!r}")
    size = ok(m.fetch("1", "(RFC822.SIZE)"), "RFC822.SIZE")[0]
    check(f"RFC822.SIZE {len(body)}".encode() in size,
          f"RFC822.SIZE is the CRLF size {len(body)}: {size!r}")
    # Still unseen (PEEK); a BODY[TEXT] sets \Seen.
    flags = ok(m.fetch("1", "(FLAGS)"), "FLAGS")[0]
    check(b"\\Seen" not in flags, f"PEEK set \\Seen: {flags!r}")
    text = fetch_one(m, 1, "(BODY[TEXT])")
    check(text == b"Hello Alice,\r\n.. a line that was dot-stuffed\r\n"
          b"the quick brown fox\r\n", f"BODY[TEXT]: {text!r}")
    flags = ok(m.fetch("1", "(FLAGS)"), "FLAGS")[0]
    check(b"\\Seen" in flags, f"BODY[] without PEEK sets \\Seen: {flags!r}")
    d = ok(m.store("1", "-FLAGS", "(\\Seen)"), "STORE -FLAGS")[0]
    check(b"\\Seen" not in d, f"-FLAGS answers without it: {d!r}")
    d = ok(m.store("1", "FLAGS.SILENT", "(\\Seen \\Answered)"), "STORE")
    check(d == [None], f".SILENT answers nothing: {d!r}")
    flags = ok(m.fetch("1", "(FLAGS)"), "FLAGS")[0]
    check(b"\\Seen" in flags and b"\\Answered" in flags,
          f"FLAGS replaced: {flags!r}")
    env_ = ok(m.fetch("1", "(ENVELOPE)"), "ENVELOPE")[0]
    check(b'"first message"' in env_ and
          b'("Bob Example" NIL "bob" "example.com")' in env_ and
          b'"<m1@example.com>"' in env_, f"ENVELOPE: {env_!r}")
    bs = ok(m.fetch("2", "(BODYSTRUCTURE)"), "BODYSTRUCTURE")[0]
    check(b'"mixed"' in bs and b'"octet-stream"' in bs and b'"base64"' in bs,
          f"BODYSTRUCTURE of a multipart: {bs!r}")
    part = fetch_one(m, 2, "(BODY.PEEK[2])")
    check(part == b"AAECAwQFBgcICQ==", f"BODY[2]: {part!r}")
    part = fetch_one(m, 2, "(BODY.PEEK[1]<4.6>)")
    check(part == b"the at", f"BODY[1]<4.6>: {part!r}")
    hdr = fetch_one(m, 2, "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    check(hdr == b"Subject: with attachment\r\n\r\n",
          f"HEADER.FIELDS: {hdr!r}")
    # bob got the same message (one spool copy, hard-linked).
    mb = env.login("bob")
    check(int(ok(mb.select("INBOX"), "SELECT bob")[0]) == 1, "bob has 1")
    check(fetch_one(mb, 1, "(BODY.PEEK[])").endswith(MSG2),
          "bob's copy is byte-exact")
    mb.logout()
    m.logout()


def part_folders(env):
    m = env.login()
    names = [x.decode() for x in ok(m.list('""', "*"), "LIST")]
    for special, name in (("\\Sent", "Sent"), ("\\Drafts", "Drafts"),
                          ("\\Trash", "Trash"), ("\\Junk", "Junk")):
        check(any(special in x and x.endswith(f'"." {name}') for x in names),
              f"{name} with {special} made at first login: {names}")
    lsub = [x.decode() for x in ok(m.lsub('""', "*"), "LSUB")]
    check(any(x.endswith(" Sent") for x in lsub), f"Sent subscribed: {lsub}")
    ok(m.create("Projects.ringprot"), "CREATE with a parent")
    names = [x.decode() for x in ok(m.list('""', "Projects*"), "LIST")]
    check(any("\\HasChildren" in x and x.endswith(" Projects") for x in names)
          and any(x.endswith(" Projects.ringprot") for x in names),
          f"parent made and has children: {names}")
    names = [x.decode() for x in ok(m.list('""', "%"), "LIST %")]
    check(not any("ringprot" in x for x in names),
          f"% does not cross the separator: {names}")
    typ, _ = m.create("INBOX")
    check(typ == "NO", "CREATE INBOX refused")
    for bad in ("../etc", "a..b", ".hidden", "x/y"):
        typ, _ = m.create(bad)
        check(typ != "OK", f"CREATE {bad!r} refused")
    ok(m.rename("Projects", "Work"), "RENAME with children")
    names = [x.decode() for x in ok(m.list('""', "*"), "LIST")]
    check(any(x.endswith(" Work.ringprot") for x in names) and
          not any("Projects" in x for x in names), f"renamed: {names}")
    ok(m.subscribe("Work.ringprot"), "SUBSCRIBE")
    check(any(b"Work.ringprot" in x for x in ok(m.lsub('""', "*"), "LSUB")),
          "LSUB lists it")
    ok(m.unsubscribe("Work.ringprot"), "UNSUBSCRIBE")
    # APPEND with flags and a date, APPENDUID.
    typ, data = m.append("Work.ringprot", "(\\Seen $Important)",
                         '"01-Jan-2026 12:00:00 +0000"',
                         b"Subject: appended\r\n\r\nbody\r\n")
    check(typ == "OK" and b"APPENDUID" in data[0], f"APPEND: {typ} {data}")
    st = ok(m.status("Work.ringprot", "(MESSAGES UNSEEN UIDNEXT SIZE)"),
            "STATUS")[0]
    check(b"MESSAGES 1" in st and b"UNSEEN 0" in st and b"UIDNEXT 2" in st
          and b"SIZE 27" in st, f"STATUS: {st!r}")
    ok(m.select("Work.ringprot"), "SELECT")
    d = ok(m.fetch("1", "(FLAGS INTERNALDATE)"), "FETCH")[0]
    check(b"$Important" in d and b"\" 1-Jan-2026 12:00:00 +0000\"" in d,
          f"APPEND kept flags and date: {d!r}")
    # COPY (COPYUID), MOVE, EXPUNGE.
    typ, data = m.copy("1", "INBOX")
    check(typ == "OK" and b"COPYUID" in data[0], f"COPY: {data}")
    typ, data = m.uid("MOVE", "1", "Trash")
    check(typ == "OK", f"MOVE: {typ} {data}")
    check(int(ok(m.select("Work.ringprot"), "SELECT")[0]) == 0,
          "MOVE left nothing behind")
    check(int(ok(m.select("Trash"), "SELECT Trash")[0]) == 1, "moved in")
    ok(m.store("1", "+FLAGS", "(\\Deleted)"), "STORE")
    gone = ok(m.expunge(), "EXPUNGE")
    check(gone == [b"1"], f"EXPUNGE answers * 1 EXPUNGE: {gone}")
    check(env.files("alice", ".Trash/cur") == [], "file removed")
    ok(m.close(), "CLOSE")
    typ, _ = m.delete("INBOX")
    check(typ == "NO", "DELETE INBOX refused")
    ok(m.delete("Work.ringprot"), "DELETE")
    typ, _ = m.select("Work.ringprot")
    check(typ == "NO", "deleted mailbox cannot be selected")
    m.logout()


def raw_connect(env, port=None):
    s = socket.create_connection((HOST, port or env.imap), timeout=10)
    f = s.makefile("rb")
    check(f.readline().startswith(b"* OK"), "greeting")
    return s, f


def raw(s, f, tag, line):
    """Send 'tag line', return the untagged lines and the tagged one."""
    s.sendall(f"{tag} {line}\r\n".encode())
    out = []
    while True:
        ln = f.readline()
        check(ln, f"connection closed during {line!r}: {out}")
        if ln.startswith(f"{tag} ".encode()):
            return out, ln
        out.append(ln)


def part_sessions(env):
    for i in range(3):
        env.deliver(["bob@example.org"], b"Subject: s%d\r\n\r\nx\r\n" % i)
    a, fa = raw_connect(env)
    b, fb = raw_connect(env)
    for s, f in ((a, fa), (b, fb)):
        raw(s, f, "l", f"LOGIN bob {PASSWORD}")
        _, t = raw(s, f, "s", "SELECT INBOX")
        check(b"OK" in t, f"SELECT: {t!r}")
    n = len(env.files("bob", "cur"))
    # a: \Seen on 1, expunge the last one.
    raw(a, fa, "a1", "STORE 1 +FLAGS.SILENT (\\Seen)")
    raw(a, fa, "a2", f"STORE {n} +FLAGS.SILENT (\\Deleted)")
    u, t = raw(a, fa, "a3", "EXPUNGE")
    check(u == [f"* {n} EXPUNGE\r\n".encode()] and b"OK" in t,
          f"a's EXPUNGE: {u} {t!r}")
    # b's FETCH must not carry the EXPUNGE (RFC 3501 7.4.1).
    u, t = raw(b, fb, "b1", "FETCH 1 (FLAGS)")
    check(not any(b"EXPUNGE" in x for x in u), f"no EXPUNGE in FETCH: {u}")
    check(any(b"\\Seen" in x for x in u), f"b sees a's \\Seen: {u}")
    u, t = raw(b, fb, "b2", "NOOP")
    check(f"* {n} EXPUNGE\r\n".encode() in u, f"NOOP tells it: {u}")
    u, t = raw(b, fb, "b3", "FETCH 1:* (UID)")
    check(len(u) == n - 1, f"b now sees {n - 1} messages: {u}")
    for s, f in ((a, fa), (b, fb)):
        raw(s, f, "z", "LOGOUT")
        s.close()


def part_search(env):
    m = env.login()
    n = int(ok(m.select("INBOX"), "SELECT")[0])
    check(ok(m.search(None, "FROM", "bob"), "SEARCH FROM")[0] == b"1",
          "SEARCH FROM")
    check(ok(m.search(None, "SUBJECT", "ATTACHMENT"), "SUBJECT")[0] == b"2",
          "SUBJECT, case-insensitive")
    check(ok(m.search(None, "BODY", '"quick brown"'), "BODY")[0] == b"1",
          "BODY")
    check(ok(m.search(None, "TEXT", "carol"), "TEXT")[0] == b"2", "TEXT")
    check(ok(m.search(None, "OR", "FROM", "carol", "FROM", "bob"),
             "OR")[0] == b"1 2", "OR")
    check(ok(m.search(None, "NOT", "SEEN"), "NOT SEEN")[0] == b"2",
          "NOT SEEN (1 was read in part deliver)")
    sizes = [int(re.search(rb"RFC822.SIZE (\d+)", x).group(1))
             for x in ok(m.fetch("1:2", "(RFC822.SIZE)"), "SIZE")]
    check(ok(m.search(None, "LARGER", str(sizes[0])), "LARGER")[0] == b"2",
          f"LARGER {sizes[0]} (sizes {sizes})")
    check(ok(m.search(None, "SENTON", "6-Dec-2026"), "SENTON")[0] == b"1",
          "SENTON in the Date's own zone")
    uids = ok(m.uid("SEARCH", "ALL"), "UID SEARCH")[0].split()
    check(len(uids) >= 2, f"UID SEARCH: {uids}")
    typ, data = m._simple_command("SEARCH", "RETURN", "(MIN MAX COUNT ALL)",
                                  "ALL")
    check(typ == "OK", f"ESEARCH: {typ}")
    es = m.untagged_responses.pop("ESEARCH", [b""])[0]
    check(b"MIN 1" in es and f"MAX {n}".encode() in es and
          f"COUNT {n}".encode() in es and f"ALL 1:{n}".encode() in es,
          f"ESEARCH of {n} messages: {es!r}")
    typ, _ = m.search("KOI8-R", "FROM", "x")
    check(typ == "NO", "unknown charset refused")
    m.logout()


LOG = lambda: ""


def read_line(f, what):
    """One line from f, saying what was awaited if none comes."""
    try:
        return f.readline()
    except socket.timeout:
        raise Failure(f"no line within 10 s: {what}; log: " + LOG())


def part_idle(env):
    s, f = raw_connect(env)
    raw(s, f, "l", f"LOGIN alice {PASSWORD}")
    u, _ = raw(s, f, "s", "SELECT INBOX")
    exists = int(next(x for x in u if x.endswith(b"EXISTS\r\n")).split()[1])
    s.sendall(b"i IDLE\r\n")
    check(read_line(f, "IDLE's +").startswith(b"+ "), "IDLE continuation")
    t0 = time.monotonic()
    env.deliver(["alice@example.org"], b"Subject: while idle\r\n\r\nx\r\n")
    line = read_line(f, "EXISTS after an in-process LMTP delivery")
    check(line == f"* {exists + 1} EXISTS\r\n".encode(),
          f"EXISTS after an LMTP delivery: {line!r}")
    check(time.monotonic() - t0 < 5, "pushed at once")
    # Another process drops a message into new/: inotify.
    name = f"{int(time.time())}.M1P{os.getpid()}Q1.other"
    path = os.path.join(env.data, "users", "alice", "tmp", name)
    with open(path, "wb") as out:
        out.write(b"Subject: from elsewhere\n\nx\n")
    os.rename(path, os.path.join(env.data, "users", "alice", "new", name))
    line = read_line(f, "EXISTS after a file another process put in new/")
    while line.endswith(b"RECENT\r\n"):
        line = read_line(f, "EXISTS after RECENT")
    check(line == f"* {exists + 2} EXISTS\r\n".encode(),
          f"EXISTS after a file in new/ from another process: {line!r}")
    s.sendall(b"DONE\r\n")
    while True:
        line = read_line(f, "IDLE's tagged OK")
        check(line, "closed before IDLE's tagged OK")
        if line.startswith(b"i "):
            break
    check(line.startswith(b"i OK"), f"IDLE ends with OK: {line!r}")
    u, t = raw(s, f, "n", "NOOP")
    check(b"OK" in t, f"commands after IDLE: {t!r}")
    raw(s, f, "z", "LOGOUT")
    s.close()


def part_idle_changes(env):
    """Flags, an expunge and a new message from another session reach a
    parked IDLE one at a time, exactly once each, with the numbers the
    client was told before (the parked session keeps no file names and
    may keep no view: both come back from the store)."""
    b, fb = raw_connect(env)
    raw(b, fb, "l", f"LOGIN bob {PASSWORD}")
    _, t = raw(b, fb, "c", "CREATE IdleBox")
    check(b"OK" in t, f"CREATE: {t!r}")
    for i in range(3):
        _, t = raw(b, fb, "a", "APPEND IdleBox {10+}\r\nSubject: " +
                   str(i))
        check(b"OK" in t, f"APPEND: {t!r}")
    a, fa = raw_connect(env)
    raw(a, fa, "l", f"LOGIN bob {PASSWORD}")
    u, t = raw(a, fa, "s", "SELECT IdleBox")
    check(b"* 3 EXISTS\r\n" in u, f"SELECT: {u!r}")
    _, t = raw(b, fb, "s", "SELECT IdleBox")
    a.sendall(b"i IDLE\r\n")
    check(read_line(fa, "IDLE's +").startswith(b"+ "), "IDLE continuation")

    def expect(what, want):
        line = read_line(fa, what)
        check(line == want, f"{what}: {line!r}, want {want!r}")

    raw(b, fb, "f", "STORE 2 +FLAGS.SILENT (\\Flagged)")
    expect("FETCH after a STORE elsewhere", b"* 2 FETCH (FLAGS (\\Flagged))\r\n")
    raw(b, fb, "d", "STORE 1 +FLAGS.SILENT (\\Deleted)")
    expect("FETCH after \\Deleted", b"* 1 FETCH (FLAGS (\\Deleted))\r\n")
    raw(b, fb, "e", "EXPUNGE")
    expect("EXPUNGE after one elsewhere", b"* 1 EXPUNGE\r\n")
    _, t = raw(b, fb, "a", "APPEND IdleBox {10+}\r\nSubject: 4")
    check(b"OK" in t, f"APPEND: {t!r}")
    expect("EXISTS after an APPEND elsewhere", b"* 3 EXISTS\r\n")
    expect("RECENT with EXISTS", b"* 0 RECENT\r\n")
    a.sendall(b"DONE\r\n")
    expect("IDLE's tagged OK", b"i OK IDLE terminated\r\n")
    u, t = raw(a, fa, "f", "FETCH 1:* (UID FLAGS)")
    check(u == [b"* 1 FETCH (UID 2 FLAGS (\\Flagged))\r\n",
                b"* 2 FETCH (UID 3 FLAGS ())\r\n",
                b"* 3 FETCH (UID 4 FLAGS ())\r\n"] and b"OK" in t,
          f"the view after IDLE: {u!r} {t!r}")
    u, t = raw(a, fa, "n", "NOOP")
    check(u == [] and b"OK" in t, f"nothing told twice: {u!r}")
    for s, f in ((a, fa), (b, fb)):
        raw(s, f, "z", "LOGOUT")
        s.close()


def part_idle_limits(env):
    """Keepalive and the IDLE time limit, on a server of their own."""
    tmp = tempfile.mkdtemp(prefix="imapd-idle-", dir=env.tmp)
    e2 = Env(env.exe, tmp, ["-o", "imap_idle_keepalive=1s",
                            "-o", "imap_idle_timeout=3s"])
    try:
        s, f = raw_connect(e2)
        raw(s, f, "l", f"LOGIN alice {PASSWORD}")
        raw(s, f, "s", "SELECT INBOX")
        t0 = time.monotonic()
        s.sendall(b"i IDLE\r\n")
        check(f.readline().startswith(b"+ "), "IDLE continuation")
        line = f.readline()
        check(line == b"* OK Still here\r\n" and
              time.monotonic() - t0 < 2.5, f"keepalive: {line!r}")
        while line.startswith(b"* OK Still here"):
            line = f.readline()
        took = time.monotonic() - t0
        check(line.startswith(b"* BYE") and 2.5 < took < 6,
              f"BYE at the IDLE limit (3 s), after {took:.1f} s: {line!r}")
        check(f.readline() == b"", "closed after BYE")
        s.close()
    finally:
        e2.stop()


def part_append_cut(env):
    before_cur = env.files("bob", "cur") + env.files("bob", "new")
    s, f = raw_connect(env)
    raw(s, f, "l", f"LOGIN bob {PASSWORD}")
    s.sendall(b"a APPEND INBOX {1000}\r\n")
    check(f.readline().startswith(b"+"), "literal continuation")
    s.sendall(b"Subject: cut\r\n\r\nonly part of it")
    # The makefile holds the socket open: close both, or no FIN goes.
    f.close()
    s.close()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and env.files("bob", "tmp"):
        time.sleep(0.05)
    check(env.files("bob", "tmp") == [],
          f"tmp/ is empty again: {env.files('bob', 'tmp')}")
    after = env.files("bob", "cur") + env.files("bob", "new")
    check(after == before_cur, f"nothing appended: {before_cur} {after}")
    # Over APPENDLIMIT: refused before any byte is sent.
    s, f = raw_connect(env)
    raw(s, f, "l", f"LOGIN bob {PASSWORD}")
    u, t = raw(s, f, "b", "APPEND INBOX {2147483648}")
    check(t.startswith(b"b NO [TOOBIG]"), f"2 GiB literal refused: {t!r}")
    u, t = raw(s, f, "c", "NOOP")
    check(b"OK" in t, "still serving")
    s.close()


def part_tls(env):
    ctx = ssl.create_default_context(cafile=env.cert)
    m = imaplib.IMAP4_SSL("localhost", env.imaps, ssl_context=ctx)
    m.login("alice", PASSWORD)
    check(int(ok(m.select("INBOX"), "SELECT over IMAPS")[0]) >= 2, "IMAPS")
    m.logout()
    m = imaplib.IMAP4("localhost", env.imap)
    m.starttls(ssl_context=ctx)
    m.login("alice", PASSWORD)
    ok(m.select("INBOX"), "SELECT after STARTTLS")
    m.logout()
    # A wrong password: NO, and the server keeps serving.
    m = imaplib.IMAP4(HOST, env.imap)
    try:
        m.login("alice", "wrong")
        raise Failure("a wrong password logged in")
    except imaplib.IMAP4.error:
        pass
    m.logout()


def part_compress(env):
    s, f = raw_connect(env)
    raw(s, f, "l", f"LOGIN alice {PASSWORD}")
    _, t = raw(s, f, "c", "COMPRESS DEFLATE")
    check(t.startswith(b"c OK"), f"COMPRESS: {t!r}")
    comp = zlib.compressobj(wbits=-15)
    dec = zlib.decompressobj(wbits=-15)
    s.sendall(comp.compress(b"s SELECT INBOX\r\nf FETCH 1 (BODY.PEEK[])\r\n")
              + comp.flush(zlib.Z_SYNC_FLUSH))
    got = b""
    deadline = time.monotonic() + 10
    while b"\r\nf OK" not in got and time.monotonic() < deadline:
        chunk = s.recv(65536)
        check(chunk, f"closed under COMPRESS: {got!r}")
        got += dec.decompress(chunk)
    check(b"s OK" in got and b"f OK" in got and b"Hello Alice" in got,
          f"commands under DEFLATE: {got[-300:]!r}")
    s.close()


def literal(s, f, tag, head, data, eight=False):
    """'tag head {n}' + data (waiting for the continuation), the reply."""
    s.sendall(f"{tag} {head} {'~' if eight else ''}{{{len(data)}}}\r\n"
              .encode())
    ln = f.readline()
    check(ln.startswith(b"+"), f"continuation for {head}: {ln!r}")
    s.sendall(data + b"\r\n")
    out = []
    while True:
        ln = f.readline()
        check(ln, f"closed during {head}")
        if ln.startswith(f"{tag} ".encode()):
            return out, ln
        out.append(ln)


def part_rev2(env):
    s, f = raw_connect(env)
    raw(s, f, "l", f"LOGIN bob {PASSWORD}")
    u, t = raw(s, f, "c", "CAPABILITY")
    caps = u[0].split()
    for c in (b"IMAP4rev1", b"IMAP4rev2", b"SEARCHRES", b"LIST-STATUS",
              b"BINARY", b"ESEARCH"):
        check(c in caps, f"{c} advertised: {u}")
    # a rev1 session's SELECT and SEARCH first, as before.
    u, t = raw(s, f, "s0", "SELECT INBOX")
    check(any(x.endswith(b" RECENT\r\n") for x in u), f"rev1 RECENT: {u}")
    u, t = raw(s, f, "s1", "SEARCH ALL")
    check(u and u[0].startswith(b"* SEARCH"), f"rev1 SEARCH: {u}")
    u, t = raw(s, f, "e0", "ENABLE IMAP4rev2")
    check(t.startswith(b"e0 BAD"), f"ENABLE while selected: {t!r}")
    raw(s, f, "s2", "UNSELECT")
    u, t = raw(s, f, "e1", "ENABLE IMAP4rev2 CONDSTORE")
    check(u == [b"* ENABLED IMAP4rev2\r\n"] and b"OK" in t,
          f"ENABLE IMAP4rev2: {u} {t!r}")
    u, t = raw(s, f, "e2", "ENABLE IMAP4rev2")
    check(u == [b"* ENABLED\r\n"], f"ENABLE again: {u}")

    # UTF-8 names both ways; '&' is itself; stored as mUTF-7.
    name = "\u00c4rger & Co"
    _, t = literal(s, f, "c1", "CREATE", name.encode())
    check(b"OK" in t, f"CREATE {name}: {t!r}")
    check(os.path.isdir(os.path.join(env.data, "users", "bob",
                                     ".&AMQ-rger &- Co")),
          f"stored mUTF-7: {env.files('bob', '..')}")
    u, t = raw(s, f, "l1", 'LIST "" "*"')
    joined = b"".join(u)
    check(name.encode() in joined and b"&AMQ-" not in joined,
          f"LIST in UTF-8: {u}")
    box = '"' + name + '"'
    msgs = [b"Subject: alpha\r\n\r\none\r\n",
            b"Subject: beta\r\n\r\ntwo\r\n",
            b"Subject: alpha again\r\n\r\nthree\r\n"]
    flags = ["(\\Seen)", "()", "(\\Deleted)"]
    for i, (fl, m) in enumerate(zip(flags, msgs)):
        _, t = literal(s, f, f"a{i}", f"APPEND {box} {fl}", m)
        check(b"OK [APPENDUID" in t, f"APPEND {i}: {t!r}")
    # literal8: accepted without NUL, refused with one, nothing stored.
    _, t = literal(s, f, "b1", f"APPEND {box}",
                   b"Subject: eight\r\n\r\n\xc3\xa4\r\n", eight=True)
    check(b"OK [APPENDUID" in t, f"literal8 APPEND: {t!r}")
    _, t = literal(s, f, "b2", f"APPEND {box}",
                   b"Subject: nul\r\n\r\na\x00b\r\n", eight=True)
    check(t.startswith(b"b2 NO [UNKNOWN-CTE]"), f"NUL refused: {t!r}")
    # LIST-STATUS: a STATUS after the folder's LIST line.
    u, t = raw(s, f, "l2", 'LIST "" "*" RETURN (STATUS (MESSAGES UNSEEN '
               'DELETED SIZE))')
    # (8-bit names go out as literals: "{11}" CRLF name)
    joined = b"".join(u)
    ub = name.encode()
    lit = b"{%d}\r\n" % len(ub) + ub
    check(re.search(re.escape(b"* STATUS " + lit) +
                    rb" \(MESSAGES 4 UNSEEN 3 SIZE \d+ DELETED 1\)",
                    joined) is not None, f"LIST-STATUS: {u}")
    check(joined.index(b'"." ' + lit) < joined.index(b"* STATUS " + lit),
          f"STATUS after LIST: {u}")

    # SELECT: LIST, no RECENT, no \Recent.
    u, t = raw(s, f, "s3", f"SELECT {box}")
    check(b"OK" in t, f"SELECT: {t!r}")
    check(not any(b"RECENT" in x for x in u), f"no RECENT: {u}")
    check(b'* LIST () "." ' + lit in b"".join(u), f"SELECT's LIST: {u}")
    u, t = raw(s, f, "f1", "FETCH 1:* (FLAGS)")
    check(len(u) == 4 and not any(b"Recent" in x for x in u),
          f"FLAGS without \\Recent: {u}")
    # SEARCH answers ESEARCH.
    u, t = raw(s, f, "q1", "SEARCH UNSEEN")
    check(u == [b'* ESEARCH (TAG "q1") ALL 2:4\r\n'], f"ESEARCH: {u}")
    u, t = raw(s, f, "q2", "SEARCH SUBJECT nothing-like-this")
    check(u == [b'* ESEARCH (TAG "q2")\r\n'], f"empty ESEARCH: {u}")
    # SEARCHRES: SAVE alone answers nothing; "$" in FETCH/STORE/SEARCH.
    u, t = raw(s, f, "r1", "SEARCH RETURN (SAVE) SUBJECT alpha")
    check(u == [] and b"OK" in t, f"SAVE: {u} {t!r}")
    u, t = raw(s, f, "r2", "FETCH $ (FLAGS)")
    check([x.split()[1] for x in u] == [b"1", b"3"], f"FETCH $: {u}")
    u, t = raw(s, f, "r3", "STORE $ +FLAGS.SILENT (\\Flagged)")
    check(b"OK" in t, f"STORE $: {t!r}")
    u, t = raw(s, f, "r4", "SEARCH FLAGGED")
    check(u == [b'* ESEARCH (TAG "r4") ALL 1,3\r\n'], f"flagged: {u}")
    u, t = raw(s, f, "r5", "UID SEARCH RETURN (COUNT) UID $")
    check(u == [b'* ESEARCH (TAG "r5") UID COUNT 2\r\n'],
          f"UID SEARCH UID $: {u}")
    u, t = raw(s, f, "r6", "SEARCH RETURN (SAVE MAX) ALL")
    check(u == [b'* ESEARCH (TAG "r6") MAX 4\r\n'], f"SAVE MAX: {u}")
    u, t = raw(s, f, "r7", "FETCH $ (UID)")
    check(len(u) == 1 and u[0].startswith(b"* 4 FETCH"), f"$ = max: {u}")
    # the saved message expunged: gone from "$".
    raw(s, f, "r8", "SEARCH RETURN (SAVE) DELETED")
    u, t = raw(s, f, "r9", "EXPUNGE")
    check(u == [b"* 3 EXPUNGE\r\n"], f"EXPUNGE: {u}")
    u, t = raw(s, f, "r10", "FETCH $ (UID)")
    check(u == [] and b"OK" in t, f"$ after expunge: {u} {t!r}")
    # a failed SEARCH with SAVE leaves "$" empty.
    raw(s, f, "r11", "SEARCH RETURN (SAVE) ALL")
    u, t = raw(s, f, "r12", "SEARCH RETURN (SAVE) CHARSET KOI8-R ALL")
    check(t.startswith(b"r12 NO [BADCHARSET"), f"BADCHARSET: {t!r}")
    u, t = raw(s, f, "r13", "FETCH $ (UID)")
    check(u == [], f"$ empty after a failed SEARCH: {u}")
    # STATUS DELETED; SELECT of another mailbox says CLOSED.
    u, t = raw(s, f, "t1", f"STATUS {box} (DELETED MESSAGES)")
    check(b"".join(u) == b"* STATUS " + lit + b" (MESSAGES 3 DELETED 0)\r\n",
          f"STATUS DELETED: {u}")
    u, t = raw(s, f, "s4", "SELECT INBOX")
    check(u[0].startswith(b"* OK [CLOSED]"), f"CLOSED first: {u}")
    raw(s, f, "z", "LOGOUT")
    s.close()


def raw_lit(s, f, tag, line):
    """Like raw(), but the untagged answer as one byte string with its
    literals ({n} and ~{n}) read whole."""
    s.sendall(f"{tag} {line}\r\n".encode())
    out = b""
    while True:
        ln = f.readline()
        check(ln, f"connection closed during {line!r}: {out!r}")
        if ln.startswith(f"{tag} ".encode()):
            return out, ln
        out += ln
        m = re.search(rb"~?\{(\d+)\}\r\n$", ln)
        if m:
            out += f.read(int(m.group(1)))


BIN_QP = (b"Subject: qp\r\n"
          b"Content-Type: text/plain; charset=utf-8\r\n"
          b"Content-Transfer-Encoding: quoted-printable\r\n"
          b"X-After: kept\r\n"
          b"\r\n"
          b"Caf=C3=A9 =\r\n"
          b"au lait\r\n")
BIN_QP_HDR = (b"Subject: qp\r\n"
              b"Content-Type: text/plain; charset=utf-8\r\n"
              b"X-After: kept\r\n"
              b"Content-Transfer-Encoding: binary\r\n"
              b"\r\n")
BIN_B64 = (b"Subject: b64\r\n"
           b"Content-Type: application/octet-stream\r\n"
           b"Content-Transfer-Encoding: BASE64\r\n"
           b"\r\n"
           b"AAECAwQFBgcICQ==\r\n")
BIN_MULTI_HEAD = (b"Subject: multi\r\n"
                  b"Content-Type: multipart/mixed; boundary=\"o\"\r\n"
                  b"\r\n"
                  b"--o\r\n")
BIN_MULTI = (BIN_MULTI_HEAD +
             b"Content-Type: text/plain\r\n"
             b"Content-Transfer-Encoding: quoted-printable\r\n"
             b"\r\n"
             b"one=3D1\r\n"
             b"--o\r\n"
             b"Content-Type: multipart/alternative; boundary=\"i\"\r\n"
             b"\r\n"
             b"--i\r\n"
             b"Content-Transfer-Encoding: base64\r\n"
             b"\r\n"
             b"dHdvLm9uZQ==\r\n"
             b"--i\r\n"
             b"\r\n"
             b"two.two\r\n"
             b"--i--\r\n"
             b"--o--\r\n")
# BINARY[] of BIN_MULTI: each decoded leaf's header says binary.
BIN_MULTI_DEC = (BIN_MULTI_HEAD +
                 b"Content-Type: text/plain\r\n"
                 b"Content-Transfer-Encoding: binary\r\n"
                 b"\r\n"
                 b"one=1\r\n"
                 b"--o\r\n"
                 b"Content-Type: multipart/alternative; boundary=\"i\"\r\n"
                 b"\r\n"
                 b"--i\r\n"
                 b"Content-Transfer-Encoding: binary\r\n"
                 b"\r\n"
                 b"two.one"
                 b"\r\n"
                 b"--i\r\n"
                 b"\r\n"
                 b"two.two\r\n"
                 b"--i--\r\n"
                 b"--o--\r\n")
BIN_UNKNOWN = (b"Subject: uu\r\n"
               b"Content-Transfer-Encoding: x-uuencode\r\n"
               b"\r\n"
               b"begin 644 a\r\n")


def part_binary(env):
    s, f = raw_connect(env)
    raw(s, f, "l", f"LOGIN bob {PASSWORD}")
    _, t = raw(s, f, "c", "CREATE Binary")
    check(b"OK" in t, f"CREATE: {t!r}")
    for i, m in enumerate((BIN_QP, BIN_B64, BIN_MULTI, BIN_UNKNOWN)):
        _, t = literal(s, f, f"a{i}", "APPEND Binary", m)
        check(b"OK" in t, f"APPEND {i}: {t!r}")
    raw(s, f, "s", "SELECT Binary")

    def fetch(seq, item, want, tagged=b"OK"):
        u, t = raw_lit(s, f, "f", f"FETCH {seq} ({item})")
        check(t.startswith(b"f " + tagged), f"{seq} {item}: {t!r} {u!r}")
        if want is not None:
            w = b"* %d FETCH (" % seq + want + b")\r\n"
            check(u == w, f"{seq} {item}:\n got {u!r}\nwant {w!r}")

    def lit(name, data, eight=False):
        return b"%s %s{%d}\r\n%s" % (name, b"~" if eight else b"",
                                     len(data), data)

    qp_body = "Café au lait\r\n".encode()
    qp_all = BIN_QP_HDR + qp_body
    # BINARY[] is the message, header and all (RFC 9051 6.4.5).
    fetch(1, "BINARY.PEEK[]", lit(b"BINARY[]", qp_all))
    fetch(1, "BINARY.SIZE[]", b"BINARY.SIZE[] %d" % len(qp_all))
    fetch(1, "BINARY.PEEK[]<5.20>", lit(b"BINARY[]<5>", qp_all[5:25]))
    # a single-part message's part 1 is its body.
    fetch(1, "BINARY.PEEK[1]", lit(b"BINARY[1]", qp_body))
    fetch(1, "BINARY.SIZE[1]", b"BINARY.SIZE[1] %d" % len(qp_body))
    fetch(1, "FLAGS", b"FLAGS ()")
    fetch(1, "BINARY[1]", b"FLAGS (\\Seen) " + lit(b"BINARY[1]", qp_body))
    # base64 with NULs: literal8.
    b64 = bytes(range(10))
    fetch(2, "BINARY.PEEK[1]", lit(b"BINARY[1]", b64, eight=True))
    fetch(2, "BINARY.PEEK[]", lit(b"BINARY[]", b"Subject: b64\r\n"
                                  b"Content-Type: application/octet-stream"
                                  b"\r\nContent-Transfer-Encoding: binary"
                                  b"\r\n\r\n" + b64, eight=True))
    fetch(2, "BINARY.SIZE[1]", b"BINARY.SIZE[1] 10")
    # multipart: leaves, a multipart part, the whole.
    fetch(3, "BINARY.PEEK[1]", lit(b"BINARY[1]", b"one=1"))
    fetch(3, "BINARY.PEEK[2.1]", lit(b"BINARY[2.1]", b"two.one"))
    fetch(3, "BINARY.SIZE[2.1]", b"BINARY.SIZE[2.1] 7")
    fetch(3, "BINARY.PEEK[2.2]", lit(b"BINARY[2.2]", b"two.two"))
    inner = BIN_MULTI_DEC[BIN_MULTI_DEC.index(b"--i\r\n"):
                          BIN_MULTI_DEC.index(b"--i--\r\n") + 5]
    fetch(3, "BINARY.PEEK[2]", lit(b"BINARY[2]", inner))
    fetch(3, "BINARY.PEEK[]", lit(b"BINARY[]", BIN_MULTI_DEC))
    fetch(3, "BINARY.SIZE[]", b"BINARY.SIZE[] %d" % len(BIN_MULTI_DEC))
    fetch(3, "BINARY.PEEK[3]", b"BINARY[3] NIL")
    fetch(3, "BODY.PEEK[]", lit(b"BODY[]", BIN_MULTI))
    # an encoding nobody knows: NO [UNKNOWN-CTE], BODY[] still works.
    for item in ("BINARY.PEEK[1]", "BINARY.PEEK[]", "BINARY.SIZE[]"):
        fetch(4, item, None, tagged=b"NO [UNKNOWN-CTE]")
    fetch(4, "BODY.PEEK[]", lit(b"BODY[]", BIN_UNKNOWN))
    raw(s, f, "z", "LOGOUT")
    s.close()


def part_select_storm(env):
    """Many sessions of one user select, examine, idle in and leave one
    mailbox at once, pipelined, so that a SELECT's open overlaps the
    others': a new handle takes or copies another's list (the store
    shares a folder's list between the handles of a thread), while that
    other is closed or released (IDLE) under it. Every answer must give the mailbox's count and
    the server must stay up."""
    for i in range(5):
        env.deliver(["alice@example.org"], b"Subject: st%d\r\n\r\nx\r\n" % i)
    n = len(env.files("alice", "cur")) + len(env.files("alice", "new"))
    conns = []
    for i in range(24):
        s, f = raw_connect(env)
        raw(s, f, "l", f"LOGIN alice {PASSWORD}")
        conns.append((s, f))
    rnd = random.Random(17)
    cmds = ["SELECT INBOX", "EXAMINE INBOX", "SELECT INBOX\r\nu UNSELECT",
            "SELECT INBOX\r\nu CLOSE", "SELECT INBOX\r\nn NOOP",
            "SELECT INBOX\r\ni IDLE", "SELECT INBOX\r\ni IDLE"]
    for rounds in range(40):
        sent = []
        for s, f in conns:
            c = rnd.choice(cmds)
            s.sendall(f"s {c}\r\n".encode())
            sent.append(c.count("\r\n") + 1)
        for (s, f), replies in zip(conns, sent):
            exists = None
            for _ in range(replies):
                while True:
                    ln = f.readline()
                    check(ln, f"connection closed in round {rounds}")
                    m = re.match(rb"\* (\d+) EXISTS", ln)
                    if m:
                        exists = int(m.group(1))
                    if ln.startswith(b"+ "):
                        s.sendall(b"DONE\r\n")  # IDLE released the list
                        continue
                    if ln[:2] in (b"s ", b"u ", b"n ", b"i "):
                        check(b" OK " in ln, f"round {rounds}: {ln!r}")
                        break
            check(exists == n, f"round {rounds}: EXISTS {exists}, want {n}")
    for s, f in conns:
        raw(s, f, "z", "LOGOUT")
        s.close()


PARTS = {
    "deliver": part_deliver,
    "folders": part_folders,
    "sessions": part_sessions,
    "search": part_search,
    "idle": part_idle,
    "idle-changes": part_idle_changes,
    "idle-limits": part_idle_limits,
    "append-cut": part_append_cut,
    "tls": part_tls,
    "compress": part_compress,
    "rev2": part_rev2,
    "binary": part_binary,
    "select-storm": part_select_storm,
}


def main():
    exe = os.path.abspath(sys.argv[1])
    names = sys.argv[2:] or list(PARTS)
    tmp = tempfile.mkdtemp(prefix="imapd-mail-")
    env = None
    failed = 0
    try:
        env = Env(exe, tmp)
        global LOG
        LOG = lambda: env.srv.log_text()[-3000:]
        for name in names:
            try:
                PARTS[name](env)
                print(f"ok: {name}")
            except (Failure, imaplib.IMAP4.error, OSError,
                    smtplib.SMTPException) as e:
                failed += 1
                print(f"FAIL: {name}: {e}")
        env.srv.signal(15)
        code = env.srv.wait_exit()
        check(code == 0, f"exit code {code} after SIGTERM; log:\n"
              f"{env.srv.log_text()[-2000:]}")
        env = None
    except Failure as e:
        failed += 1
        print(f"FAIL: {e}")
    finally:
        if env is not None:
            env.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()

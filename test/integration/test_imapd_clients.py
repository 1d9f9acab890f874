# SPDX-License-Identifier: BSD-3-Clause
"""ringprot-imapd against real IMAP clients (issue 16's proof list), each
part with a user of its own so that one can fail without the others:

  curl       imap:// (plain), imap:// --ssl-reqd (STARTTLS) and imaps://
             (--cacert): SEARCH, whole messages, sections (2, TEXT,
             HEADER.FIELDS) and PARTIAL read back byte-exact (CRLF),
             ;UIDVALIDITY=, LIST, CREATE, an upload (APPEND) read back
  fetchmail  the whole INBOX over STARTTLS (sslcertck with the test's
             cert) into an MDA of the test's, every message byte-exact,
             --nokeep: the INBOX is empty afterwards
  fetchmail-idle  fetchmail's idle: each of three deliveries during its
             IDLE wakes it at once, the message is fetched byte-exact
             and fetchmail goes back to IDLE
  mbsync     isync both ways with a local Maildir over STARTTLS: a flag,
             a new message (one of 300 KB) and a deletion on one side, a
             flag and a delivery on the other, folders made on each side,
             all reach the other; a third sync changes nothing
  imaptalk   Mail::IMAPTalk (Perl): ENVELOPE, BODYSTRUCTURE, STORE,
             SEARCH, BODY.PEEK[] parsed by a client library of its own
  s_client   openssl s_client -starttls imap: the handshake verifies
             against the test's cert, and commands work after it

Messages go in over LMTP (the same process, lmtp.listen), as in
test_imapd_mail.py, whose Env this test uses. What a client read is
compared with the store's own file (LF there, CRLF on the wire), never
with what the server answered another client.

Usage: test_imapd_clients.py PATH-TO-ringprot-imapd [part...]
"""

import getpass
import imaplib
import json
import os
import re
import shutil
import smtplib
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from srvlib import HOST, Failure, check  # noqa: E402
from test_imapd_mail import MSG1, MSG2, PASSWORD, Env  # noqa: E402

CLIENT_TIMEOUT = 60

MSG3 = (b"From: Dave <dave@example.net>\r\n"
        b"To: x@example.org, \"Y Person\" <y@example.org>\r\n"
        b"Cc: cc@example.org\r\n"
        b"Reply-To: replies@example.net\r\n"
        b"In-Reply-To: <m1@example.com>\r\n"
        b"Subject: re: first message\r\n"
        b"Date: Sun, 06 Dec 2026 12:30:00 +0000\r\n"
        b"Message-ID: <m3@example.net>\r\n"
        b"\r\n"
        b"a reply\r\n")


def big_message():
    """About 300 KB: literals larger than any one read or write buffer,
    lines that start with "From " and ".", a line of 990 octets."""
    lines = [b"From: big@example.net", b"To: x@example.org",
             b"Subject: a big one", b""]
    for i in range(6000):
        lines.append(b"line %05d of the big message, some filler text "
                     b"follows" % i)
        if i % 997 == 0:
            lines.append(b"From the middle of a line that mboxes escape")
            lines.append(b".a line with a leading dot")
            lines.append(b"x" * 990)
    return b"\r\n".join(lines) + b"\r\n"


def add_user(env, name):
    for sub in ("tmp", "new", "cur"):
        os.makedirs(os.path.join(env.data, "users", name, sub))
    r = subprocess.run(["saslpasswd2", "-f", env.sasldb, "-c", "-p", name],
                       input=PASSWORD, text=True, capture_output=True)
    check(r.returncode == 0, f"saslpasswd2: {r.stderr}")


def stored(env, user, folder=""):
    """{file name: the message as IMAP must send it} for one folder of the
    store: lmtpd writes LF line ends, IMAP sends CRLF."""
    out = {}
    top = os.path.join(env.data, "users", user, folder)
    for sub in ("new", "cur"):
        for name in os.listdir(os.path.join(top, sub)):
            with open(os.path.join(top, sub, name), "rb") as f:
                out[name] = f.read().replace(b"\n", b"\r\n")
    return out


def stored_by_end(env, user, msg):
    """The one stored message (CRLF) that ends with msg, as delivered."""
    found = [v for v in stored(env, user).values() if v.endswith(msg)]
    check(len(found) == 1, f"{len(found)} stored copies of {msg[:40]!r}")
    check(found[0].startswith(b"Return-Path: <sender@example.com>\r\n"),
          f"stored with its Return-Path: {found[0][:60]!r}")
    return found[0]


def run(argv, what, input=None, env=None, timeout=CLIENT_TIMEOUT):
    """Run a client; its stdout (bytes) and stderr (text). A client that
    hangs or fails is a failure with what it printed (fetchmail and
    mbsync print their protocol traces on stdout)."""
    def tail(b):
        return (b or b"").decode(errors="replace")[-3000:]

    try:
        r = subprocess.run(argv, input=input, capture_output=True,
                           env=env, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise Failure(f"{what}: no exit within {timeout}s; stdout:\n"
                      f"{tail(e.stdout)}\nstderr:\n{tail(e.stderr)}")
    check(r.returncode == 0, f"{what}: exit code {r.returncode}; stdout:\n"
          f"{tail(r.stdout)}\nstderr:\n{tail(r.stderr)}")
    return r.stdout, r.stderr.decode(errors="replace")


def login(env, user):
    m = imaplib.IMAP4(HOST, env.imap)
    m.login(user, PASSWORD)
    return m


def ok(res, what):
    typ, data = res
    check(typ == "OK", f"{what}: {typ} {data}")
    return data


# --- curl -------------------------------------------------------------

def part_curl(env):
    user = "curly"
    add_user(env, user)
    env.deliver([f"{user}@example.org"], MSG1)
    env.deliver([f"{user}@example.org"], MSG2)
    want1 = stored_by_end(env, user, MSG1)
    want2 = stored_by_end(env, user, MSG2)
    base = ["curl", "-sS", "--max-time", "30", "--user",
            f"{user}:{PASSWORD}"]
    plain = f"imap://{HOST}:{env.imap}"
    # curl checks the name in the cert (CN=localhost); --resolve keeps it
    # on 127.0.0.1 where localhost also names ::1.
    tls = base + ["--cacert", env.cert,
                  "--resolve", f"localhost:{env.imap}:{HOST}",
                  "--resolve", f"localhost:{env.imaps}:{HOST}"]

    out, _ = run(base + [f"{plain}/INBOX?SUBJECT%20attachment"],
                 "curl SEARCH")
    check(out == b"* SEARCH 2\r\n", f"SEARCH SUBJECT attachment: {out!r}")
    out, _ = run(base + [f"{plain}/INBOX;MAILINDEX=1"], "curl plain")
    check(out == want1, f"imap:// MAILINDEX=1 is the stored message:\n"
          f"{out!r}\n!=\n{want1!r}")

    out, err = run(tls + ["-v", "--ssl-reqd",
                          f"imap://localhost:{env.imap}/INBOX;MAILINDEX=2"],
                   "curl STARTTLS")
    check(re.search(r"^> \S+ STARTTLS", err, re.M) is not None,
          f"curl --ssl-reqd sent STARTTLS: {err[-2000:]}")
    check(out == want2, f"STARTTLS MAILINDEX=2 is the stored message:\n"
          f"{out!r}\n!=\n{want2!r}")

    imaps = f"imaps://localhost:{env.imaps}"
    out, _ = run(tls + [f"{imaps}/INBOX;UID=1"], "curl imaps UID=1")
    check(out == want1, f"imaps:// UID=1:\n{out!r}\n!=\n{want1!r}")
    out, _ = run(tls + [f"{imaps}/INBOX;UID=2;SECTION=2"],
                 "curl imaps SECTION=2")
    check(out == b"AAECAwQFBgcICQ==", f"SECTION=2 of the multipart: {out!r}")
    text = want1.split(b"\r\n\r\n", 1)[1]
    out, _ = run(tls + [f"{imaps}/INBOX;UID=1;SECTION=TEXT"],
                 "curl imaps SECTION=TEXT")
    check(out == text, f"SECTION=TEXT: {out!r} != {text!r}")

    out, _ = run(tls + [f"{imaps}/INBOX;UID=1;PARTIAL=7.20"],
                 "curl imaps PARTIAL")
    check(out == want1[7:27], f"PARTIAL=7.20: {out!r} != {want1[7:27]!r}")
    out, _ = run(base + [f"{plain}/INBOX;UID=2;"
                         f"SECTION=HEADER.FIELDS%20(SUBJECT%20FROM)"],
                 "curl HEADER.FIELDS")
    check(out == b"From: carol@example.net\r\nSubject: with attachment\r\n"
          b"\r\n", f"SECTION=HEADER.FIELDS (SUBJECT FROM): {out!r}")
    # ;UIDVALIDITY= is checked by curl against SELECT's: the one EXAMINE
    # gives is the one SELECT gives.
    out, _ = run(base + ["-X", "EXAMINE INBOX", f"{plain}/"],
                 "curl EXAMINE")
    m = re.search(rb"\[UIDVALIDITY (\d+)\]", out)
    check(m is not None, f"EXAMINE has a UIDVALIDITY: {out!r}")
    uidv = m.group(1).decode()
    out, _ = run(base + [f"{plain}/INBOX;UIDVALIDITY={uidv};UID=2"],
                 "curl with ;UIDVALIDITY=")
    check(out == want2, f"UIDVALIDITY={uidv};UID=2: {out!r}")

    # LIST, CREATE (a custom request), LIST again.
    out, _ = run(base + [f"{plain}/"], "curl LIST")
    lines = out.decode().splitlines()
    for name in ("INBOX", "Sent", "Drafts", "Trash", "Junk"):
        check(any(x.startswith("* LIST ") and x.endswith(f'"." {name}')
                  for x in lines), f"LIST has {name}: {lines}")
    run(base + ["-X", "CREATE Projects.curl", f"{plain}/"], "curl CREATE")
    out, _ = run(base + [f"{plain}/"], "curl LIST after CREATE")
    check(b'"." Projects.curl\r\n' in out, f"LIST shows it: {out!r}")

    # An upload (APPEND with a synchronizing literal), read back.
    up = os.path.join(env.tmp, "curl-upload.eml")
    body = (b"From: curl@example.org\r\nSubject: uploaded by curl\r\n\r\n"
            b"sent with -T\r\n.\r\n")
    with open(up, "wb") as f:
        f.write(body)
    run(tls + ["--ssl-reqd", "-T", up,
               f"imap://localhost:{env.imap}/Projects.curl"], "curl APPEND")
    out, _ = run(tls + [f"{imaps}/Projects.curl;MAILINDEX=1"],
                 "curl read the upload")
    check(out == body, f"the upload read back: {out!r} != {body!r}")
    files = stored(env, user, ".Projects.curl")
    check(list(files.values()) == [body], f"one file, the upload: {files}")


# --- fetchmail --------------------------------------------------------

MDA = """#!/bin/sh
# fetchmail's MDA: each message into a new file of its own.
set -e
n=$(ls "$1" | wc -l)
cat > "$1/tmp.$n"
mv "$1/tmp.$n" "$1/msg.$n"
"""


def fetchmail_setup(env, user, extra=""):
    """A fetchmailrc for user with the test's MDA: (argv, its
    environment, the directory the MDA writes into)."""
    home = os.path.join(env.tmp, f"fetchmail-{user}")
    out = os.path.join(home, "out")
    os.makedirs(out)
    mda = os.path.join(home, "mda.sh")
    with open(mda, "w") as f:
        f.write(MDA)
    os.chmod(mda, 0o755)
    rc = os.path.join(home, "fetchmailrc")
    # sslproto TLS1.2+ without ssl: STARTTLS or nothing. invisible: no
    # Received line of fetchmail's; no rewrite, no stripcr: the message
    # reaches the MDA as the server sent it. fetchall: \Seen ones too.
    me = getpass.getuser()
    with open(rc, "w") as f:
        f.write(f"""set no syslog
set invisible
poll localhost service {env.imap} protocol IMAP auth password
  user "{user}" there with password "{PASSWORD}" is "{me}" here
  sslproto "TLS1.2+" sslcertck sslcertfile "{env.cert}"
  fetchall nokeep no rewrite no stripcr {extra}
  mda "{mda} {out}"
""")
    os.chmod(rc, 0o600)
    cenv = dict(os.environ, HOME=home, FETCHMAILHOME=home)
    # A lock file of its own: as root fetchmail would use the system's
    # (/var/run/fetchmail.pid) and refuse to run beside another one.
    return (["fetchmail", "-f", rc, "-v", "--nodetach",
             "--pidfile", os.path.join(home, "fetchmail.pid")], cenv, out)


def mda_got(out):
    got = []
    for name in sorted(os.listdir(out)):
        if name.startswith("msg."):
            with open(os.path.join(out, name), "rb") as f:
                got.append(f.read())
    return got


def check_fetched(env, user, got, want, log):
    check(len(got) == len(want), f"{len(got)} of {len(want)} messages "
          f"reached the MDA; fetchmail said:\n{log[-3000:]}")
    for g, w in zip(sorted(got), sorted(want)):
        check(g == w, f"fetchmail's copy is not the stored message: "
              f"{len(g)} octets {g[:200]!r}... != {len(w)} octets "
              f"{w[:200]!r}...")
    m = login(env, user)
    st = ok(m.status("INBOX", "(MESSAGES)"), "STATUS")[0]
    check(b"MESSAGES 0" in st, f"INBOX empty after --nokeep: {st!r}")
    m.logout()
    check(stored(env, user) == {}, "no file left in new/ or cur/")


def part_fetchmail(env):
    user = "fetchy"
    add_user(env, user)
    msgs = [MSG1, MSG2, MSG3, big_message()]
    for m in msgs:
        env.deliver([f"{user}@example.org"], m)
    want = [stored_by_end(env, user, m) for m in msgs]
    argv, cenv, out = fetchmail_setup(env, user)
    so, se = run(argv, "fetchmail", env=cenv)
    log = so.decode(errors="replace") + se
    check(re.search(r"IMAP> A\d+ STARTTLS", log) is not None,
          f"fetchmail used STARTTLS: {log[-2000:]}")
    check_fetched(env, user, mda_got(out), want, log)


def wait_for(cond, timeout, what, log=lambda: ""):
    deadline = time.monotonic() + timeout
    while not cond():
        check(time.monotonic() < deadline,
              f"{what} within {timeout}s; log:\n{log()[-3000:]}")
        time.sleep(0.05)


def part_fetchmail_idle(env):
    """fetchmail's idle: it waits in IDLE, a delivery's EXISTS wakes it,
    it fetches and goes back to IDLE."""
    user, copy = "idler", "idlecopy"
    add_user(env, user)
    add_user(env, copy)
    env.deliver([f"{user}@example.org"], MSG1)
    want = [stored_by_end(env, user, MSG1)]
    argv, cenv, out = fetchmail_setup(env, user, "idle")
    logf = os.path.join(env.tmp, "fetchmail-idle.log")

    def log():
        with open(logf, errors="replace") as f:
            return f.read()

    with open(logf, "w") as lf:
        proc = subprocess.Popen(argv, env=cenv, stdin=subprocess.DEVNULL,
                                stdout=lf, stderr=subprocess.STDOUT)
    try:
        # The message there before is fetched, then fetchmail idles.
        wait_for(lambda: len(mda_got(out)) == 1 and
                 len(re.findall(r"IMAP< \+ ", log())) >= 1, 20,
                 "the first message fetched and IDLE begun", log)
        # Three rounds: each delivery must wake the IDLE at once, and
        # fetchmail must be back in IDLE (one more continuation) after
        # the fetch and the expunge.
        for i, msg in enumerate((MSG2, MSG3, big_message()), 2):
            # fetchmail may take it before the test could read the store:
            # a second recipient keeps the same file (one spool copy,
            # hard-linked) for the comparison.
            env.deliver([f"{user}@example.org", f"{copy}@example.org"],
                        msg)
            want.append(stored_by_end(env, copy, msg))
            wait_for(lambda: len(mda_got(out)) == i, 10,
                     f"message {i}, delivered during IDLE, fetched", log)
            wait_for(lambda: len(re.findall(r"IMAP< \+ ", log())) >= i,
                     10, f"IDLE again after fetching message {i}", log)
            check(proc.poll() is None, f"fetchmail exited: {log()[-3000:]}")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    check_fetched(env, user, mda_got(out), want, log())


# --- mbsync -----------------------------------------------------------

TUID = re.compile(rb"^X-TUID: [^\n]*\n", re.M)


def untuid(msg):
    """msg less the X-TUID header mbsync puts in a copy it must find
    again (it removes it from what it sends on)."""
    return TUID.sub(b"", msg.replace(b"\r\n", b"\n"), count=1)


def maildir_state(path):
    """{(message, flags)} of a local Maildir folder, LF line ends, no
    X-TUID."""
    out = set()
    for sub in ("new", "cur"):
        for name in os.listdir(os.path.join(path, sub)):
            with open(os.path.join(path, sub, name), "rb") as f:
                data = f.read()
            flags = name.split(":2,", 1)[1] if ":2," in name else ""
            out.add((untuid(data), flags))
    return out


IMAP_FLAG_LETTERS = {"\\Draft": "D", "\\Flagged": "F", "\\Answered": "R",
                     "\\Seen": "S", "\\Deleted": "T"}


def imap_state(env, user, mailbox):
    """{(message, flags as Maildir letters)} read over IMAP, with the
    UIDVALIDITY and UIDs (a third sync must not change them either)."""
    m = login(env, user)
    ok(m.select(mailbox, readonly=True), f"EXAMINE {mailbox}")
    uidv = m.untagged_responses.get("UIDVALIDITY", [b"?"])[0]
    state = set()
    uids = []
    typ, data = m.uid("FETCH", "1:*", "(UID FLAGS BODY.PEEK[])")
    check(typ == "OK", f"UID FETCH: {typ} {data}")
    for item in data:
        if not isinstance(item, tuple):
            continue
        meta = item[0].decode()
        flags = re.search(r"FLAGS \(([^)]*)\)", meta).group(1).split()
        uids.append(int(re.search(r"UID (\d+)", meta).group(1)))
        letters = "".join(sorted(IMAP_FLAG_LETTERS[f] for f in flags
                                 if f in IMAP_FLAG_LETTERS))
        state.add((untuid(item[1]), letters))
    m.logout()
    return uidv, sorted(uids), state


# A command that changes a mailbox, in mbsync -Dn's trace (">>> 7 CMD",
# "(2 in progress) >>> 8 CMD" when pipelined).
CHANGES = re.compile(r"^(?:\(\d+ in progress\) )?>>> \d+ "
                     r"((?:UID )?(?:STORE|APPEND|EXPUNGE|COPY|MOVE|"
                     r"CREATE|DELETE|RENAME)\b.*)$", re.M)


def mbsync(cfg, home, what, debug=False):
    argv = ["mbsync", "-c", cfg] + (["-Dn"] if debug else ["-V"]) + ["ch"]
    out, err = run(argv, what, env=dict(os.environ, HOME=home))
    return out.decode(errors="replace") + err


def find_local(path, ends):
    """The file name in a local Maildir folder whose message ends so."""
    for sub in ("new", "cur"):
        for name in os.listdir(os.path.join(path, sub)):
            with open(os.path.join(path, sub, name), "rb") as f:
                if untuid(f.read()).endswith(ends):
                    return sub, name
    raise Failure(f"no local message ends with {ends!r}")


def set_local_flags(path, sub, name, flags):
    base = name.split(":2,", 1)[0]
    os.rename(os.path.join(path, sub, name),
              os.path.join(path, "cur", f"{base}:2,{flags}"))


def part_mbsync(env):
    user = "syncer"
    add_user(env, user)
    for m in (MSG1, MSG2, MSG3):
        env.deliver([f"{user}@example.org"], m)
    home = os.path.join(env.tmp, "mbsync")
    local = os.path.join(home, "local")
    os.makedirs(local)
    # A folder only on the server: Create Both makes it here.
    m = login(env, user)
    ok(m.create("Work"), "CREATE Work")
    ok(m.append("Work", "(\\Seen)", None,
                b"From: w@example.org\r\nSubject: at work\r\n\r\nwork\r\n"),
       "APPEND Work")
    m.logout()
    cfg = os.path.join(home, "mbsyncrc")
    with open(cfg, "w") as f:
        f.write(f"""IMAPAccount acc
Host localhost
Port {env.imap}
User {user}
Pass {PASSWORD}
SSLType STARTTLS
CertificateFile {env.cert}

IMAPStore remote
Account acc

MaildirStore local
Path {local}/
Inbox {local}/INBOX
SubFolders Verbatim

Channel ch
Far :remote:
Near :local:
Patterns INBOX Work Lists*
Create Both
Expunge Both
SyncState *
Sync All
""")
    inbox = os.path.join(local, "INBOX")
    err = mbsync(cfg, home, "mbsync, first sync")
    check("Connection is now encrypted" in err,
          f"mbsync used STARTTLS: {err[-2000:]}")
    for mb in ("INBOX", "Work"):
        _, _, far = imap_state(env, user, mb)
        near = maildir_state(os.path.join(local, mb))
        check(near == far and len(far) == (3 if mb == "INBOX" else 1),
              f"{mb} after the first sync: near {near} far {far}")

    # Near side: \Flagged on MSG1, MSG3 deleted, a new message.
    sub, name = find_local(inbox, MSG1.replace(b"\r\n", b"\n"))
    set_local_flags(inbox, sub, name, "F")
    sub, name = find_local(inbox, MSG3.replace(b"\r\n", b"\n"))
    os.unlink(os.path.join(inbox, sub, name))
    # Big: mbsync's APPEND waits for the continuation (LITERAL-).
    near_new = big_message().replace(b"\r\n", b"\n")
    with open(os.path.join(inbox, "tmp", "100.near.host"), "wb") as f:
        f.write(near_new)
    os.rename(os.path.join(inbox, "tmp", "100.near.host"),
              os.path.join(inbox, "new", "100.near.host"))
    # A new folder with a parent (both Maildirs here: the server makes a
    # missing parent by itself, which mbsync would copy back on the next
    # sync), one message in the child.
    lists = os.path.join(local, "Lists")
    for sub in ("cur", "new", "tmp"):
        os.makedirs(os.path.join(lists, sub))
        os.makedirs(os.path.join(lists, "dev", sub))
    list_msg = b"From: list@example.org\nSubject: list mail\n\nhi\n"
    with open(os.path.join(lists, "dev", "new", "200.near.host"), "wb") as f:
        f.write(list_msg)
    # Far side: \Answered on MSG2, a new delivery.
    m = login(env, user)
    ok(m.select("INBOX"), "SELECT")
    n = ok(m.search(None, "SUBJECT", '"with attachment"'), "SEARCH")[0]
    ok(m.store(n.decode(), "+FLAGS", "(\\Answered)"), "STORE \\Answered")
    m.logout()
    far_new = b"From: far@example.org\r\nSubject: delivered\r\n\r\nfar\r\n"
    env.deliver([f"{user}@example.org"], far_new)

    err = mbsync(cfg, home, "mbsync, second sync", debug=True)
    # The changes seen in mbsync's trace, as the third sync's check reads
    # them: the uploads, the flag, the deletion (\Deleted, then CLOSE
    # expunges), the new folders.
    changes = CHANGES.findall(err)
    for want in ('APPEND "INBOX"', "(\\Flagged)", "(\\Deleted)",
                 'CREATE "Lists"', 'CREATE "Lists.dev"',
                 'APPEND "Lists.dev"'):
        check(any(want in x for x in changes),
              f"{want} in the second sync: {changes}")
    _, _, far = imap_state(env, user, "INBOX")
    near = maildir_state(inbox)
    lf = stored_by_end(env, user, MSG1).replace(b"\r\n", b"\n")
    msg2 = stored_by_end(env, user, MSG2).replace(b"\r\n", b"\n")
    fnew = stored_by_end(env, user, far_new).replace(b"\r\n", b"\n")
    want = {(lf, "F"), (msg2, "R"), (near_new, ""), (fnew, "")}
    check(far == near, f"both sides agree after the second sync:\n"
          f"near {sorted(near)}\nfar  {sorted(far)}")
    check(far == want, f"the changes crossed over:\n got {sorted(far)}\n"
          f"want {sorted(want)}")
    check(not any(MSG3.replace(b"\r\n", b"\n") in x for x, _ in far),
          "the near side's deletion expunged MSG3 on the server")
    _, _, far = imap_state(env, user, "Lists.dev")
    check(far == {(list_msg, "")}, f"Lists/dev is Lists.dev there: {far}")
    _, _, far = imap_state(env, user, "Lists")
    check(far == set(), f"Lists made there, empty: {far}")

    # A third sync: nothing to do, no command that changes anything.
    def state():
        folders = ("INBOX", "Work", "Lists", "Lists.dev")
        m = login(env, user)
        names = sorted(x.decode() for x in ok(m.list('""', "*"), "LIST"))
        m.logout()
        near_dirs = sorted(d for d, _, _ in os.walk(local))
        return ([imap_state(env, user, f) for f in folders], names,
                [maildir_state(os.path.join(local, f.replace(".", "/")))
                 for f in folders], near_dirs,
                sorted(os.listdir(os.path.join(inbox, "cur"))))
    before = state()
    err = mbsync(cfg, home, "mbsync, third sync", debug=True)
    changes = CHANGES.findall(err)
    check(re.search(r'^>>> \d+ SELECT "INBOX"\s*$', err, re.M) is not None,
          f"mbsync -Dn shows the protocol: {err[-2000:]}")
    check(changes == [], f"the third sync changed something: {changes}")
    after = state()
    check(after == before, f"the third sync changed the state:\n"
          f"before {before}\nafter  {after}")


# --- Mail::IMAPTalk ---------------------------------------------------

IMAPTALK = r"""use strict;
use warnings;
use Mail::IMAPTalk;
use JSON::PP;

my ($host, $port, $user, $pw) = @ARGV;
my $t = Mail::IMAPTalk->new(Server => $host, Port => $port,
    Username => $user, Password => $pw, Uid => 1, UseBlocking => 1)
    or die "connect or login: $@\n";
sub need { my ($v, $what) = @_;
    defined $v or die "$what: " . ($t->get_last_error() // '?') . "\n";
    return $v; }
my %out;
need(scalar $t->select('INBOX'), 'select');
$out{exists} = $t->get_response_code('exists');
$out{uidvalidity} = $t->get_response_code('uidvalidity');
$out{fetch} = need(scalar $t->fetch('1:*',
    '(envelope bodystructure flags rfc822.size)'), 'fetch');
my $uids = need(scalar $t->search('all'), 'search all');
$out{all} = $uids;
$out{from_carol} = need(scalar $t->search('from', 'carol'), 'search from');
$out{header} = need(scalar $t->search('header', 'in-reply-to',
    '<m1@example.com>'), 'search header');
$out{body} = need(scalar $t->fetch($uids->[0], 'body.peek[]'), 'fetch body');
need(scalar $t->store($uids->[0] . ',' . $uids->[2], '+flags',
    '(\\Flagged $Todo)'), 'store');
$out{flagged} = need(scalar $t->search('flagged'), 'search flagged');
$out{keyword} = need(scalar $t->search('keyword', '$Todo'), 'search keyword');
need(scalar $t->store($uids->[0], '-flags', '(\\Flagged)'), 'store -flags');
$out{flags_after} = need(scalar $t->fetch('1:*', 'flags'), 'fetch flags');
$out{unflagged} = need(scalar $t->search('unflagged'), 'search unflagged');
$t->logout;
print JSON::PP->new->canonical->encode(\%out), "\n";
"""


def part_imaptalk(env):
    user = "perly"
    add_user(env, user)
    for m in (MSG1, MSG2, MSG3):
        env.deliver([f"{user}@example.org"], m)
    want1 = stored_by_end(env, user, MSG1)
    script = os.path.join(env.tmp, "imaptalk.pl")
    with open(script, "w") as f:
        f.write(IMAPTALK)
    out, _ = run(["perl", script, HOST, str(env.imap), user, PASSWORD],
                 "Mail::IMAPTalk")
    try:
        r = json.loads(out)
    except ValueError as e:
        raise Failure(f"the perl script's output: {e}: {out!r}")
    check(int(r["exists"]) == 3, f"EXISTS 3: {r['exists']}")
    m = login(env, user)
    st = ok(m.status("INBOX", "(UIDVALIDITY)"), "STATUS")[0].decode()
    m.logout()
    check(f"UIDVALIDITY {r['uidvalidity']})" in st,
          f"SELECT's UIDVALIDITY {r['uidvalidity']} is STATUS's: {st}")
    uids = r["all"]
    check(len(uids) == 3 and uids == sorted(uids), f"SEARCH ALL: {uids}")
    u1, u2, u3 = (str(u) for u in uids)
    f = r["fetch"]
    check(sorted(f) == sorted([u1, u2, u3]), f"FETCH by UID: {sorted(f)}")
    e1, e3 = f[u1]["envelope"], f[u3]["envelope"]
    check(e1["Subject"] == "first message" and
          e1["From"] == '"Bob Example" <bob@example.com>' and
          e1["Message-ID"] == "<m1@example.com>" and
          e1["Date"] == "Sun, 06 Dec 2026 10:00:00 +0100" and
          e1["To"] == "alice@example.org", f"ENVELOPE of MSG1: {e1}")
    check(e3["Cc"] == "cc@example.org" and
          e3["Reply-To"] == "replies@example.net" and
          e3["Sender"] == '"Dave" <dave@example.net>' and
          e3["In-Reply-To"] == "<m1@example.com>" and
          e3["To"] == 'x@example.org, "Y Person" <y@example.org>',
          f"ENVELOPE of MSG3: {e3}")
    b1 = f[u1]["bodystructure"]
    body1 = want1.split(b"\r\n\r\n", 1)[1]
    nlines = body1.count(b"\r\n")
    check(b1["MIME-TxtType"] == "text/plain" and
          b1["Content-Type"] == {"charset": "us-ascii"} and
          int(b1["Size"]) == len(body1) and
          int(b1["Lines"]) == nlines,
          f"BODYSTRUCTURE of MSG1 (body of {len(body1)} octets, "
          f"{nlines} lines): {b1}")
    b2 = f[u2]["bodystructure"]
    subs = b2.get("MIME-Subparts", [])
    check(b2["MIME-TxtType"] == "multipart/mixed" and
          b2["Content-Type"] == {"boundary": "XYZ"} and len(subs) == 2 and
          subs[0]["MIME-TxtType"] == "text/plain" and
          subs[0]["Content-Type"] == {"charset": "utf-8"} and
          subs[0]["IMAP-Partnum"] == "1" and
          int(subs[0]["Size"]) == len(b"see the attachment") and
          subs[1]["MIME-TxtType"] == "application/octet-stream" and
          subs[1]["Content-Transfer-Encoding"] == "base64" and
          subs[1]["Content-Type"] == {"name": "a.bin"} and
          int(subs[1]["Size"]) == len(b"AAECAwQFBgcICQ=="),
          f"BODYSTRUCTURE of MSG2: {b2}")
    check(int(f[u1]["rfc822.size"]) == len(want1),
          f"RFC822.SIZE {f[u1]['rfc822.size']} != {len(want1)}")
    check(r["from_carol"] == [int(u2)], f"SEARCH FROM carol: {r}")
    check(r["header"] == [int(u3)], f"SEARCH HEADER In-Reply-To: {r}")
    got = r["body"][u1]["body"].encode("latin-1")
    check(got == want1, f"BODY.PEEK[] via IMAPTalk: {got!r} != {want1!r}")
    check(r["flagged"] == [int(u1), int(u3)], f"SEARCH FLAGGED: {r}")
    check(r["keyword"] == [int(u1), int(u3)], f"SEARCH KEYWORD: {r}")
    # \Recent: this is the first session to see them (RFC 3501 2.3.2).
    fl = {k: sorted(x for x in v["flags"] if x != "\\Recent")
          for k, v in r["flags_after"].items()}
    check(fl == {u1: ["$Todo"], u2: [], u3: ["$Todo", "\\Flagged"]},
          f"FLAGS after +FLAGS and -FLAGS (BODY.PEEK sets no \\Seen): {fl}")
    check(r["unflagged"] == [int(u1), int(u2)], f"SEARCH UNFLAGGED: {r}")


# --- openssl s_client -------------------------------------------------

def part_s_client(env):
    user = "tlsuser"
    add_user(env, user)
    env.deliver([f"{user}@example.org"], MSG1)
    cmds = (f"a LOGIN {user} {PASSWORD}\n"
            "b SELECT INBOX\n"
            "c FETCH 1 (RFC822.SIZE)\n"
            "d LOGOUT\n").encode()
    out, err = run(["openssl", "s_client", "-starttls", "imap",
                    "-connect", f"{HOST}:{env.imap}",
                    "-servername", "localhost",
                    "-verify_hostname", "localhost",
                    "-CAfile", env.cert, "-verify_return_error",
                    "-crlf", "-ign_eof"], "openssl s_client", input=cmds)
    text = out.decode(errors="replace")
    check("Verify return code: 0 (ok)" in text,
          f"the certificate verified: {text[-1500:]} {err[-1500:]}")
    size = len(stored_by_end(env, user, MSG1))
    for want in ("a OK", "* 1 EXISTS", "b OK [READ-WRITE]",
                 f"* 1 FETCH (RFC822.SIZE {size})", "c OK",
                 "* BYE", "d OK"):
        check(re.search(f"^{re.escape(want)}", text, re.M) is not None,
              f"{want!r} after the handshake: {text[-2000:]}")


PARTS = {
    "curl": part_curl,
    "fetchmail": part_fetchmail,
    "fetchmail-idle": part_fetchmail_idle,
    "mbsync": part_mbsync,
    "imaptalk": part_imaptalk,
    "s_client": part_s_client,
}


def main():
    exe = os.path.abspath(sys.argv[1])
    names = sys.argv[2:] or list(PARTS)
    tmp = tempfile.mkdtemp(prefix="imapd-clients-")
    env = None
    failed = 0
    try:
        env = Env(exe, tmp)
        for name in names:
            try:
                PARTS[name](env)
                print(f"ok: {name}", flush=True)
            except (Failure, imaplib.IMAP4.error, OSError,
                    smtplib.SMTPException, KeyError) as e:
                failed += 1
                print(f"FAIL: {name}: {e}", flush=True)
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

# SPDX-License-Identifier: BSD-3-Clause
"""Helpers for the server runtime's integration tests (test_server.py).

A Server is one ringprot-echo (or a wrapper exec'ing it) as a child
process: its stdout ("listening on", the closing summary) and stderr (one
logfmt line per event) are read by threads into queues and lists, so a
test can wait for a line without blocking on a pipe. Everything runs on
loopback addresses; processes are started and stopped by pid.
"""

import os
import queue
import re
import signal
import socket
import subprocess
import threading
import time

HOST = "127.0.0.1"
START_TIMEOUT = 10.0
EXIT_TIMEOUT = 10.0


class Failure(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Failure(msg)


def free_port(host=HOST):
    """A port that was free a moment ago (for programs that cannot report
    the port they bound: systemd-socket-activate, haproxy). A test running
    beside may bind it first: callers try a fresh one when the program's
    bind fails (test_server.py's activated() and Haproxy)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


LISTEN_RE = re.compile(r"listening on (?:\[([0-9a-f:]+)\]|([0-9.]+)):(\d+) "
                       r"\(((io_uring) [a-z-]+|(epoll))\)")


class Server:
    """A server process; argv[0] is the program to run."""

    def __init__(self, argv, env=None, pass_fds=()):
        self.argv = list(argv)
        self.lines = queue.Queue()
        self.log = []  # stderr lines, in order
        self.log_cond = threading.Condition()
        self.proc = subprocess.Popen(
            self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, errors="replace",
            env=env, pass_fds=pass_fds)
        self.out_reader = threading.Thread(target=self._read_out, daemon=True)
        self.err_reader = threading.Thread(target=self._read_err, daemon=True)
        self.out_reader.start()
        self.err_reader.start()

    def _read_out(self):
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def _read_err(self):
        for line in self.proc.stderr:
            with self.log_cond:
                self.log.append(line.rstrip("\n"))
                self.log_cond.notify_all()
        with self.log_cond:
            self.log.append(None)
            self.log_cond.notify_all()

    @property
    def pid(self):
        return self.proc.pid

    def next_line(self, timeout):
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            return None

    def listening(self, count=1, timeout=START_TIMEOUT):
        """The (host, port) of the first count "listening on" lines; checks
        the engine against ECHO_ENGINE when set."""
        out = []
        deadline = time.monotonic() + timeout
        while len(out) < count:
            line = self.next_line(max(0.0, deadline - time.monotonic()))
            check(line is not None,
                  f"{len(out)} of {count} 'listening on' lines within "
                  f"{timeout}s (exit code {self.proc.poll()}; log: "
                  f"{self.log_text()[-2000:]!r})")
            m = LISTEN_RE.fullmatch(line)
            check(m is not None, f"unexpected line on stdout: {line!r}")
            engine = m.group(5) or m.group(6)
            want = os.environ.get("ECHO_ENGINE")
            check(not want or engine == want,
                  f"server runs on {engine}, want {want}: {line!r}")
            out.append((m.group(1) or m.group(2), int(m.group(3))))
        return out

    def port(self):
        return self.listening(1)[0][1]

    def log_text(self):
        with self.log_cond:
            return "\n".join(x for x in self.log if x is not None)

    def wait_log(self, pattern, timeout=5.0, start=0):
        """The first stderr line at index >= start matching the regex
        pattern, waiting up to timeout; Failure if none comes."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self.log_cond:
            i = start
            while True:
                while i < len(self.log):
                    line = self.log[i]
                    if line is None:
                        raise Failure(f"server closed stderr before a line "
                                      f"matching {pattern!r}:\n"
                                      f"{self.log_text()}")
                    if rx.search(line):
                        return line
                    i += 1
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Failure(f"no log line matching {pattern!r} within "
                                  f"{timeout}s; log:\n{self.log_text()}")
                self.log_cond.wait(left)

    def log_mark(self):
        with self.log_cond:
            return len(self.log)

    def signal(self, sig):
        check(self.proc.poll() is None,
              f"server exited early ({self.proc.returncode}); log:\n"
              f"{self.log_text()}")
        os.kill(self.proc.pid, sig)

    def wait_exit(self, timeout=EXIT_TIMEOUT):
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise Failure(f"server still running {timeout}s after it was "
                          f"told to stop")
        self.out_reader.join(timeout=timeout)
        self.err_reader.join(timeout=timeout)
        return code

    def rest(self):
        """The stdout lines not read yet (after exit)."""
        out = []
        while (line := self.next_line(0)) is not None:
            out.append(line)
        return out

    def terminate(self, timeout=EXIT_TIMEOUT):
        """SIGTERM, exit 0 within timeout; the closing summary as
        (connections, bytes, errors)."""
        self.signal(signal.SIGTERM)
        code = self.wait_exit(timeout)
        check(code == 0, f"exit code {code} after SIGTERM, want 0; log:\n"
              f"{self.log_text()}")
        return self.summary()

    def summary(self):
        rest = self.rest()
        last = rest[-1] if rest else ""
        m = re.search(r"(\d+) connections, (\d+) bytes echoed, "
                      r"(\d+) errors", last)
        check(m is not None, f"no summary line at exit: {rest!r}")
        return tuple(int(g) for g in m.groups())

    def stop(self):
        """Kill by pid if still running (finally clauses)."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def connect(port, host=HOST, source=None, timeout=10.0):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    if source is not None:
        s.bind((source, 0))
    s.connect((host, port))
    return s


def connect_retry(port, timeout=10.0, **kw):
    """connect, retrying while the port is not listening yet."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return connect(port, **kw)
        except ConnectionRefusedError:
            check(time.monotonic() < deadline,
                  f"nothing listens on port {port} within {timeout}s")
            time.sleep(0.05)


def recv_exact(sock, n):
    got = bytearray()
    while len(got) < n:
        b = sock.recv(min(65536, n - len(got)))
        check(b, f"EOF after {len(got)} of {n} bytes")
        got += b
    return bytes(got)


def echo_ok(sock, payload):
    sock.sendall(payload)
    got = recv_exact(sock, len(payload))
    check(got == payload, "echo differs from what was sent")


def closed_within(sock, timeout):
    """Does the peer close (EOF) within timeout? A reset is a Failure;
    bytes are a Failure; nothing is False."""
    sock.settimeout(timeout)
    try:
        b = sock.recv(1)
    except socket.timeout:
        return False
    except ConnectionResetError:
        raise Failure("connection reset, want an orderly close")
    check(b == b"", f"got bytes {b!r}, want a close")
    return True


def refused_within(sock, timeout):
    """Does the server end the connection (EOF, or a reset: a refused
    client's unread bytes make the kernel send one) within timeout
    without sending anything?"""
    sock.settimeout(timeout)
    try:
        b = sock.recv(1)
    except socket.timeout:
        return False
    except ConnectionResetError:
        return True
    check(b == b"", f"got bytes {b!r}, want the connection refused")
    return True


def no_data_within(sock, timeout):
    """True if nothing (no bytes, no close) arrives within timeout."""
    sock.settimeout(timeout)
    try:
        b = sock.recv(1)
    except socket.timeout:
        return True
    except OSError:
        return False
    return False


def listen_ports(pid):
    """TCP ports the process pid listens on (from /proc: its socket
    inodes against /proc/net/tcp{,6} rows in state LISTEN)."""
    inodes = set()
    fd_dir = f"/proc/{pid}/fd"
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(os.path.join(fd_dir, fd))
        except OSError:
            continue
        m = re.fullmatch(r"socket:\[(\d+)\]", target)
        if m:
            inodes.add(m.group(1))
    ports = set()
    for table in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{table}") as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            if cols[3] == "0A" and cols[9] in inodes:
                ports.add(int(cols[1].rsplit(":", 1)[1], 16))
    return ports

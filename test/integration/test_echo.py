#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-3-Clause
"""Integration test of the echo example over real loopback sockets.

Usage: test_echo.py PATH-TO-ringprot-echo

Environment: ECHO_ENGINE=io_uring|epoll fails the test unless the server
says it runs on that engine; ECHO_WRAP=PROGRAM starts the server through
PROGRAM (test/t-no-uring: io_uring refused as in a container);
ECHO_ARGS adds server options (-D: connections as direct descriptors,
which take no fd on io_uring, so the fd-limit part is skipped then).

Starts the server on an ephemeral port, checks a round trip, 200
concurrent clients with random payloads of up to 256 KiB, a half-closing
client, a client that disconnects at once, then SIGTERM and a clean exit
within 5 s; then a server short of fds, whose accept must recover.
Exits 0 on success, 1 on failure with the reason.
"""

import asyncio
import os
import queue
import random
import re
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

HOST = "127.0.0.1"
CLIENTS = 200
MAX_PAYLOAD = 256 * 1024
START_TIMEOUT = 10.0
CLIENT_TIMEOUT = 60.0
EXIT_TIMEOUT = 5.0


class Failure(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Failure(msg)


class Server:
    """The echo binary as a child process; stdout read by a thread."""

    def __init__(self, exe, extra=(), nofile=None):
        def limit_fds():
            _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, hard))

        wrap = [os.environ["ECHO_WRAP"]] if os.environ.get("ECHO_WRAP") else []
        extra = [*extra, *os.environ.get("ECHO_ARGS", "").split()]
        self.lines = queue.Queue()
        self.proc = subprocess.Popen(
            [*wrap, exe, "-l", f"{HOST}:0", *extra],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True,
            preexec_fn=limit_fds if nofile else None)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def next_line(self, timeout):
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            return None

    def wait_port(self):
        line = self.next_line(START_TIMEOUT)
        check(line is not None,
              f"no 'listening on' line within {START_TIMEOUT}s "
              f"(exit code {self.proc.poll()})")
        m = re.fullmatch(r"listening on 127\.0\.0\.1:(\d+) "
                         r"\(((io_uring) [a-z-]+|(epoll))\)", line)
        check(m is not None, f"unexpected first line: {line!r}")
        engine = m.group(3) or m.group(4)
        want = os.environ.get("ECHO_ENGINE")
        check(not want or engine == want,
              f"server runs on {engine}, want {want}: {line!r}")
        port = int(m.group(1))
        check(0 < port < 65536, f"bad port in {line!r}")
        return port

    def terminate(self):
        """SIGTERM; check exit code 0 within EXIT_TIMEOUT. Returns the
        lines printed after "listening on"."""
        check(self.proc.poll() is None, "server exited early")
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise Failure(f"no exit within {EXIT_TIMEOUT}s of SIGTERM")
        check(code == 0, f"exit code {code} after SIGTERM, want 0")
        self.reader.join(timeout=EXIT_TIMEOUT)
        rest = []
        while (line := self.next_line(0)) is not None:
            rest.append(line)
        return rest

    def summary(self):
        """SIGTERM, then (connections, bytes, errors) from the last line."""
        rest = self.terminate()
        last = rest[-1] if rest else ""
        print(f"server said: {last}")
        m = re.search(r"(\d+) connections, (\d+) bytes echoed, "
                      r"(\d+) errors", last)
        check(m is not None, f"no summary line at exit: {rest!r}")
        return tuple(int(g) for g in m.groups())

    def stop(self):
        """Kill the process by pid if it still runs (finally clause)."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def recv_all(sock):
    chunks = []
    while True:
        b = sock.recv(65536)
        if not b:
            return b"".join(chunks)
        chunks.append(b)


def round_trip(port, payload):
    with socket.create_connection((HOST, port), timeout=CLIENT_TIMEOUT) as s:
        s.sendall(payload)
        got = b""
        while len(got) < len(payload):
            b = s.recv(65536)
            check(b, f"EOF after {len(got)} of {len(payload)} bytes")
            got += b
        check(got == payload, "echo differs from what was sent")


def half_close(port, payload):
    """Send, shut down the write side, read to EOF: all must come back."""
    with socket.create_connection((HOST, port), timeout=CLIENT_TIMEOUT) as s:
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        got = recv_all(s)
    check(len(got) == len(payload),
          f"half-close: got {len(got)} of {len(payload)} bytes")
    check(got == payload, "half-close: echo differs from what was sent")


def connect_and_leave(port):
    s = socket.create_connection((HOST, port), timeout=CLIENT_TIMEOUT)
    s.close()


async def one_client(port, payload, idx):
    reader, writer = await asyncio.open_connection(HOST, port)

    async def send():
        writer.write(payload)
        await writer.drain()
        writer.write_eof()

    async def receive():
        return await reader.read()  # to EOF

    try:
        _, got = await asyncio.gather(send(), receive())
    finally:
        writer.close()
    if got != payload:
        diff = next((i for i, (a, b) in enumerate(zip(got, payload))
                     if a != b), min(len(got), len(payload)))
        raise Failure(f"client {idx}: sent {len(payload)} bytes, got "
                      f"{len(got)}, first difference at byte {diff}")
    return len(payload)


async def many_clients(port, payloads):
    tasks = [asyncio.wait_for(one_client(port, p, i), CLIENT_TIMEOUT)
             for i, p in enumerate(payloads)]
    # Every client runs to its end; report the first failure and a count.
    results = await asyncio.gather(*tasks, return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        e = errors[0]
        what = str(e) or type(e).__name__
        raise Failure(f"{len(errors)} of {len(payloads)} clients failed; "
                      f"first: {what}")
    return sum(results)


def bad_listen_address(exe):
    """A malformed -l must fail at once with a message, not hang."""
    r = subprocess.run([exe, "-l", "no-port-here"], stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=10)
    check(r.returncode != 0, "-l without a port was accepted")
    check("no-port-here" in r.stderr,
          f"-l error does not name the address: {r.stderr!r}")


def open_fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def idle_fds_after_use(exe, extra):
    """Fds a server holds once it has served a connection (loops, the
    signalfd and what the first connection makes lazily)."""
    srv = Server(exe, extra)
    try:
        port = srv.wait_port()
        round_trip(port, b"warm up\n")
        time.sleep(0.2)
        return open_fds(srv.proc.pid)
    finally:
        srv.terminate()


def accept_survives_emfile(exe):
    """With few fds, accept fails (EMFILE): the server must pause, retry
    and serve every queued client once fds free. The limit must be set
    before start: the kernel reads RLIMIT_NOFILE when the accept is
    armed, not per connection. One worker: with several, the spare fds
    would be shared in ways the test cannot count."""
    extra = ["-w", "1"]
    spare, clients = 8, 48
    nofile = idle_fds_after_use(exe, extra) + spare
    srv = Server(exe, extra, nofile=nofile)
    try:
        port = srv.wait_port()
        socks = [socket.create_connection((HOST, port), timeout=CLIENT_TIMEOUT)
                 for _ in range(clients)]
        for i, s in enumerate(socks):
            msg = f"client {i}\n".encode()
            s.sendall(msg)
            got = b""
            while len(got) < len(msg):
                b = s.recv(64)
                check(b, f"EMFILE: client {i} got EOF")
                got += b
            check(got == msg, f"EMFILE: client {i} got {got!r}")
            s.close()
        got_conns, _, errors = srv.summary()
        check(got_conns == clients,
              f"EMFILE: server counted {got_conns} connections, "
              f"we made {clients}")
        check(errors > 0, "EMFILE: the fd limit was never hit; the test "
              "did not exercise the re-arm")
        print(f"ok: {clients} clients through RLIMIT_NOFILE={nofile} "
              f"({errors} accept errors, each re-armed)")
    finally:
        srv.stop()


def run(exe):
    seed = int(os.environ.get("ECHO_TEST_SEED", time.time_ns() % 2**32))
    print(f"random seed {seed} (set ECHO_TEST_SEED to repeat)")
    rng = random.Random(seed)

    bad_listen_address(exe)

    idle_fds = 0
    with tempfile.TemporaryDirectory() as tmp:
        pidfile = os.path.join(tmp, "echo.pid")
        srv = Server(exe, ["-p", pidfile])
        try:
            port = srv.wait_port()
            idle_fds = open_fds(srv.proc.pid)
            print(f"server pid {srv.proc.pid} on port {port}, "
                  f"{idle_fds} fds open")
            with open(pidfile) as f:
                check(f.read().strip() == str(srv.proc.pid),
                      "pidfile does not hold the server's pid")

            conns, nbytes = 0, 0

            round_trip(port, b"hello\n")
            conns, nbytes = conns + 1, nbytes + 6
            print("ok: one round trip")

            payloads = [rng.randbytes(rng.randint(1, MAX_PAYLOAD))
                        for _ in range(CLIENTS)]
            t0 = time.monotonic()
            total = asyncio.run(many_clients(port, payloads))
            conns, nbytes = conns + CLIENTS, nbytes + total
            print(f"ok: {CLIENTS} concurrent clients, {total} bytes each "
                  f"way, {time.monotonic() - t0:.2f}s")

            payload = rng.randbytes(MAX_PAYLOAD)
            half_close(port, payload)
            conns, nbytes = conns + 1, nbytes + len(payload)
            print("ok: send then half-close")

            connect_and_leave(port)
            conns += 1
            print("ok: connect and disconnect at once")

            round_trip(port, b"still there?\n")
            conns, nbytes = conns + 1, nbytes + 13
            print("ok: server still answers")

            got_conns, got_bytes, errors = srv.summary()
            check(got_conns == conns,
                  f"server counted {got_conns} connections, we made {conns}")
            check(got_bytes == nbytes,
                  f"server echoed {got_bytes} bytes, we sent {nbytes}")
            check(errors == 0, f"server saw {errors} errors")
            check(not os.path.exists(pidfile), "pidfile left behind")
            print("ok: SIGTERM, clean exit")
        finally:
            srv.stop()

    if "-D" in os.environ.get("ECHO_ARGS", "").split():
        print("skipped: the fd-limit part (direct descriptors take no fd)")
    else:
        accept_survives_emfile(exe)


def main():
    if len(sys.argv) != 2:
        print(f"usage: {sys.argv[0]} PATH-TO-ringprot-echo", file=sys.stderr)
        return 2
    try:
        run(sys.argv[1])
    except Failure as e:
        print(f"FAIL: {e}", file=sys.stderr)
        return 1
    except (OSError, asyncio.TimeoutError, subprocess.SubprocessError) as e:
        print(f"FAIL: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print("PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())

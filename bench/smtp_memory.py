#!/usr/bin/env python3
"""Server memory while many SMTP sessions sit in DATA, and after they close.

Starts MailRaven (``twistd -n mailraven``, the default configuration but for
``ratelimit.concurrent_per_ip``, raised so that one loopback client may hold
every session, and mail-auth off, which needs DNS and holds no message
memory), opens ``--sessions`` sessions (default 500) that each send
``--size`` bytes of body (default just under 1 MiB: the most one spool kept
in memory before this bench was written) without the final dot, waits until
the server has read every byte (the clients' send queues are empty), and
prints the server process's RSS: idle, with the sessions in DATA, its peak,
and after the sessions closed, for each of ``--rounds`` rounds (a second round
that does not grow shows the memory kept after the first is reused).
``--source DIR`` runs the server from another checkout (e.g.
``git archive <commit> | tar -x -C DIR``) for a before/after comparison.
A benchmark, not a test::

    python3 bench/smtp_memory.py [--sessions 500] [--size 1040384] [--rounds 2]
        [--source DIR]
"""

from __future__ import annotations

import argparse
import fcntl
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import termios
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import ROOT, freePort, waitForPort  # noqa: E402

LINE = b"x" * 98 + b"\r\n"


def status(pid: int, field: str) -> int:
    """A /proc/PID/status field in kB (VmRSS, VmHWM)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def startServer(work: str, source: str) -> tuple[subprocess.Popen, int]:
    smtp = freePort()
    config = os.path.join(work, "mailraven.toml")
    with open(config, "w") as f:
        f.write(
            '[server]\nhostname = "mx.bench.test"\ndomains = ["example.test"]\n'
            f'data_dir = "{os.path.join(work, "data")}"\n'
            f'[smtp]\nlisten = ["tcp:{smtp}:interface=127.0.0.1"]\n'
            f'[submission]\nlisten = ["tcp:{freePort()}:interface=127.0.0.1"]\n'
            f'[api]\nlisten = ["tcp:{freePort()}:interface=127.0.0.1"]\n'
            '[log]\nlevel = "warn"\n[mailauth]\nenabled = false\n'
            "[ratelimit]\nconcurrent_per_ip = 100000\n"
        )
    env = dict(os.environ, PYTHONPATH=source)
    subprocess.run(
        [sys.executable, "-m", "mailraven.cli", "--config", config, "user", "add"]
        + ["user@example.test", "--password-stdin"],
        input=b"a long enough password\n",
        check=True,
        env=env,
        cwd=source,
        capture_output=True,
    )
    log = open(os.path.join(work, "server.log"), "wb")
    proc = subprocess.Popen(
        [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
        + ["-n", "--pidfile=", "mailraven", "--config", config],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=source,
    )
    waitForPort(smtp)
    return proc, smtp


def reply(reader) -> bytes:
    """The last line of one (possibly multi-line) reply."""
    while True:
        line = reader.readline()
        if not line or line[3:4] != b"-":
            return line


def openInData(port: int, sessions: int, size: int) -> list[socket.socket]:
    body = b"Subject: memory\r\n\r\n" + LINE * (size // len(LINE))
    socks = []
    for _ in range(sessions):
        sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        reader = sock.makefile("rb")
        codes = [reply(reader)[:3]]
        for command in (
            b"EHLO bench.example",
            b"MAIL FROM:<s@sender.example>",
            b"RCPT TO:<user@example.test>",
            b"DATA",
        ):
            sock.sendall(command + b"\r\n")
            codes.append(reply(reader)[:3])
        if codes != [b"220", b"250", b"250", b"250", b"354"]:
            raise SystemExit(f"session {len(socks)}: replies {codes}")
        sock.sendall(body)
        socks.append(sock)
    return socks


def unsent(sock: socket.socket) -> int:
    """Bytes still in this socket's send queue (not yet taken by the peer)."""
    buf = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, struct.pack("i", 0))
    return struct.unpack("i", buf)[0]


def waitDrained(socks: list[socket.socket], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while any(unsent(s) for s in socks):
        if time.monotonic() > deadline:
            raise SystemExit("the server did not read every byte in time")
        time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=500)
    parser.add_argument("--size", type=int, default=(1 << 20) - 8192)
    parser.add_argument("--rounds", type=int, default=2, help="open/close cycles")
    parser.add_argument("--source", default=ROOT, help="checkout to run")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="mr-memory-") as work:
        proc, port = startServer(work, os.path.abspath(args.source))
        try:
            time.sleep(2)  # let the store workers settle
            idle = status(proc.pid, "VmRSS")
            for _ in range(args.rounds):
                started = time.monotonic()
                socks = openInData(port, args.sessions, args.size)
                waitDrained(socks)
                time.sleep(1)
                inData = status(proc.pid, "VmRSS")
                took = time.monotonic() - started
                for sock in socks:
                    sock.close()
                time.sleep(5)  # sessions end, spools are discarded
                after = status(proc.pid, "VmRSS")
                rows.append((inData, after, took))
            peak = status(proc.pid, "VmHWM")
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
    mb = 1024
    print(f"source: {os.path.abspath(args.source)}")
    print(f"{args.sessions} sessions x {args.size} bytes in DATA, server RSS:")
    print(f"idle {idle / mb:.0f} MB, peak (VmHWM) {peak / mb:.0f} MB")
    print("| round | in DATA | after close | sent and read in |")
    print("| --- | --- | --- | --- |")
    for n, (inData, after, took) in enumerate(rows, 1):
        print(f"| {n} | {inData / mb:.0f} MB | {after / mb:.0f} MB | {took:.1f} s |")


if __name__ == "__main__":
    main()

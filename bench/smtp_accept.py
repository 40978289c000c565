#!/usr/bin/env python3
"""SMTP acceptance throughput: MailRaven vs. Postfix vs. smtp-sink, side by side.

Drives Postfix's ``smtp-source`` (a new connection per message) against, in
the same run and interleaved round by round:

- MailRaven (``twistd -n mailraven``) in its default configuration, full
  durability (fsync + commit per 250) and SPF/DKIM/DMARC on, asking a
  loopback DNS server (bench/loopdns.py) for the sender's SPF and DMARC;
- an isolated Postfix instance that queues durably and delivers to a maildir
  (tests/postfix.py: its own main.cf and spool in a temp dir), the most
  trusted MTA doing the same job;
- ``smtp-sink`` (no storage), the protocol ceiling, for information.

Cells: 1 KB and 64 KB of smtp-source's filler (compresses ~250:1) and
realistic payloads (a text message of 1 KB, a 64 KB message carrying a base64
attachment of random bytes), each with 1 and 20 concurrent sessions. Prints
the median msg/s of the rounds, the MailRaven/Postfix ratios, and MailRaven's
peak RSS. Needs Debian's ``postfix`` package (``apt-get install postfix``)
and root (Postfix's own users). Usage::

    python3 bench/smtp_accept.py [--messages 2000] [--rounds 3] [--quick]
    python3 bench/smtp_accept.py --mailauth [--dns-delay 0.05] [--only "1KB filler"]

``--mailauth`` compares MailRaven with mail-auth off and on (rounds
interleaved: off, on, off, on, ...) and prints the on/off ratio; no Postfix
needed. ``--dns-delay`` makes every DNS answer that much later.
Never run it during tests; it is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import base64
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import MailRavenProcess, freePort, waitForPort  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tests.postfix import isolatedPostfix  # noqa: E402

DOMAIN = "example.test"
RCPT = f"user@{DOMAIN}"


@dataclass
class Payload:
    name: str
    args: list[str]


def payloads(work: str) -> list[Payload]:
    """smtp-source filler and realistic messages written to files."""
    text = (
        "Hello team,\r\n\r\nThe quarterly numbers are in the shared folder. Please"
        " review the budget lines before Thursday's meeting, especially travel and"
        " hardware. Let me know if anything looks off.\r\n\r\nThanks,\r\nDana\r\n"
    )
    realistic1k = (
        f"From: Dana <dana@sender.example>\r\nTo: {RCPT}\r\n"
        "Subject: Quarterly numbers\r\nMessage-ID: <q3@sender.example>\r\n"
        "Date: Wed, 25 Nov 2026 12:00:00 +0000\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\n"
    )
    realistic1k += text * max(1, (1024 - len(realistic1k)) // len(text))
    attachment = (
        base64.encodebytes(os.urandom(46 * 1024)).decode().replace("\n", "\r\n")
    )
    realistic64k = (
        f"From: Dana <dana@sender.example>\r\nTo: {RCPT}\r\n"
        "Subject: Report\r\nMessage-ID: <r@sender.example>\r\n"
        "Date: Wed, 25 Nov 2026 12:00:00 +0000\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n'
        "--b1\r\nContent-Type: text/plain\r\n\r\n" + text + "--b1\r\n"
        'Content-Type: application/octet-stream; name="report.bin"\r\n'
        "Content-Transfer-Encoding: base64\r\n"
        'Content-Disposition: attachment; filename="report.bin"\r\n\r\n'
        + attachment
        + "--b1--\r\n"
    )
    files = {}
    for name, body in (("real-1k", realistic1k), ("real-64k", realistic64k)):
        path = os.path.join(work, name + ".eml")
        with open(path, "w") as f:
            f.write(body.replace("\r\n", "\n"))  # smtp-source sends CRLF itself
        files[name] = path
    return [
        Payload("1KB filler", ["-l", "1024"]),
        Payload("1KB text", ["-F", files["real-1k"]]),
        Payload("64KB filler", ["-l", "65536"]),
        Payload("64KB attach", ["-F", files["real-64k"]]),
    ]


class LoopbackDNS:
    """bench/loopdns.py in a child process: the sender's SPF and DMARC."""

    def __init__(self, delay: float = 0.0) -> None:
        self.port = freePort()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                os.path.join(os.path.dirname(os.path.abspath(__file__)), "loopdns.py"),
                str(self.port),
                "--delay",
                str(delay),
            ],
            stdout=subprocess.PIPE,
        )
        if self.proc.stdout.readline().strip() != b"ready":
            raise RuntimeError("loopback DNS server did not start")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


class MailRaven:
    """The default configuration (mail-auth on) unless C{dns} is None."""

    def __init__(self, work: str, dns: LoopbackDNS | None, name: str) -> None:
        self.name = name
        self._server = MailRavenProcess(
            os.path.join(work, name.replace(" ", "-")),
            user=RCPT,
            nameserver=f"127.0.0.1:{dns.port}" if dns else None,
        )
        self.port = self._server.smtp

    def settle(self) -> None:
        pass

    def peakRSS(self) -> str:
        return self._server.peakRSS()

    def cpuSeconds(self) -> float:
        return self._server.cpuSeconds()

    def stop(self) -> None:
        self._server.stop()


class Postfix:
    name = "Postfix"

    def __init__(self, work: str) -> None:
        self.port = freePort()
        self.dir, queue, self.maildirs = isolatedPostfix(
            work, self.port, "postfix.bench.test", [DOMAIN], {}
        )
        subprocess.run(
            ["postfix", "-c", self.dir, "start"], check=True, capture_output=True
        )
        waitForPort(self.port)
        self.queue = queue

    def settle(self, timeout: float = 120) -> None:
        """Wait until delivery has caught up, so rounds do not overlap."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pending = sum(
                len(files)
                for name in ("incoming", "active", "deferred", "maildrop")
                for _, _, files in os.walk(os.path.join(self.queue, name))
            )
            if pending == 0:
                return
            time.sleep(0.2)

    def peakRSS(self) -> str:
        return "-"

    def stop(self) -> None:
        subprocess.run(["postfix", "-c", self.dir, "stop"], capture_output=True)


class Sink:
    name = "smtp-sink"

    def __init__(self, work: str) -> None:
        self.port = freePort()
        self.proc = subprocess.Popen(
            ["smtp-sink", "-u", "nobody", f"127.0.0.1:{self.port}", "1000"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        waitForPort(self.port)

    def settle(self) -> None:
        pass

    def peakRSS(self) -> str:
        return "-"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def drive(server, payload: Payload, sessions: int, messages: int) -> float:
    """msg/s for one smtp-source run."""
    started = time.monotonic()
    result = subprocess.run(
        [
            "smtp-source",
            "-s",
            str(sessions),
            "-m",
            str(messages),
            *payload.args,
            "-f",
            "sender@sender.example",
            "-t",
            RCPT,
            f"127.0.0.1:{server.port}",
        ],
        capture_output=True,
        timeout=900,
    )
    elapsed = time.monotonic() - started
    if result.returncode != 0:
        raise RuntimeError(
            f"smtp-source against {server.name} failed: {result.stderr.decode()[-500:]}"
        )
    return messages / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--quick", action="store_true", help="200 messages, 1 round: a smoke run"
    )
    parser.add_argument("--only", nargs="*", help="payload names to run")
    parser.add_argument(
        "--mailauth", action="store_true", help="mail-auth off vs on, no Postfix"
    )
    parser.add_argument(
        "--dns-delay", type=float, default=0.0, help="seconds added to DNS answers"
    )
    args = parser.parse_args()
    if args.quick:
        args.messages, args.rounds = 200, 1
    if args.mailauth:
        return compareMailAuth(args)
    for tool in ("smtp-source", "smtp-sink", "postfix"):
        if shutil.which(tool) is None:
            print(f"{tool} not found: apt-get install postfix", file=sys.stderr)
            return 2
    work = tempfile.mkdtemp(prefix="mailraven-bench-")
    servers = []
    dns = LoopbackDNS(args.dns_delay)
    try:
        servers = [MailRaven(work, dns, "MailRaven"), Postfix(work), Sink(work)]
        cells = [(p, s) for p in payloads(work) for s in (1, 20)]
        if args.only:
            cells = [(p, s) for p, s in cells if p.name in args.only]
        results: dict = {}
        for round_ in range(args.rounds):
            for payload, sessions in cells:
                for server in servers:
                    rate = drive(server, payload, sessions, args.messages)
                    server.settle()
                    results.setdefault(
                        (payload.name, sessions, server.name), []
                    ).append(rate)
                    print(
                        f"round {round_ + 1} {payload.name:12} x{sessions:<2}"
                        f" {server.name:10} {rate:8.0f} msg/s",
                        flush=True,
                    )
        report(results, cells, servers, args)
    finally:
        for server in servers:
            server.stop()
        dns.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


def compareMailAuth(args) -> int:
    """Mail-auth off vs on, rounds interleaved; medians and the on/off ratio."""
    work = tempfile.mkdtemp(prefix="mailraven-bench-")
    dns = LoopbackDNS(args.dns_delay)
    servers = []
    try:
        servers = [
            MailRaven(work, None, "mailauth off"),
            MailRaven(work, dns, "mailauth on"),
        ]
        cells = [(p, 20) for p in payloads(work) if p.name in (args.only or [])]
        cells = cells or [(payloads(work)[0], 20)]  # 1KB filler x 20
        results: dict = {}
        for round_ in range(args.rounds):
            for payload, sessions in cells:
                for server in servers:
                    cpu = server.cpuSeconds()
                    rate = drive(server, payload, sessions, args.messages)
                    cpu = (server.cpuSeconds() - cpu) / args.messages * 1e6
                    results.setdefault((payload.name, server.name), []).append(rate)
                    results.setdefault((payload.name, server.name, "cpu"), []).append(
                        cpu
                    )
                    print(
                        f"round {round_ + 1} {payload.name:12} x{sessions:<2}"
                        f" {server.name:13} {rate:8.0f} msg/s"
                        f" {cpu:6.0f} us CPU/msg (server process)",
                        flush=True,
                    )
        print(
            f"\nmedian msg/s over {args.rounds} round(s) of {args.messages} messages,"
            f" DNS answers +{args.dns_delay * 1000:.0f} ms"
        )
        print(
            "| cell | mail-auth off | mail-auth on | on/off"
            " | server CPU us/msg off, on |\n|---|---|---|---|---|"
        )
        for payload, sessions in cells:
            off, on = (
                statistics.median(results[(payload.name, s.name)]) for s in servers
            )
            cpuOff, cpuOn = (
                statistics.median(results[(payload.name, s.name, "cpu")])
                for s in servers
            )
            print(
                f"| {payload.name} x {sessions} | {off:.0f} | {on:.0f}"
                f" | {on / off:.0%} | {cpuOff:.0f}, {cpuOn:.0f} |"
            )
    finally:
        for server in servers:
            server.stop()
        dns.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


def report(results, cells, servers, args) -> None:
    print(
        f"\nmedian msg/s over {args.rounds} round(s) of {args.messages} messages,"
        " one connection per message, 127.0.0.1"
    )
    names = [s.name for s in servers]
    print(f"| cell | {' | '.join(names)} | MailRaven/Postfix |")
    print("|---" * (len(names) + 2) + "|")
    for payload, sessions in cells:
        medians = [
            statistics.median(results[(payload.name, sessions, n)]) for n in names
        ]
        ratio = medians[0] / medians[1]
        print(
            f"| {payload.name} x {sessions} | "
            + " | ".join(f"{m:.0f}" for m in medians)
            + f" | {ratio:.2f}x |"
        )
    print(f"\nMailRaven peak RSS: {servers[0].peakRSS()}")


if __name__ == "__main__":
    sys.exit(main())

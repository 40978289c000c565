#!/usr/bin/env python3
"""Where MailRaven's CPU goes per accepted message, and an A/B of two builds.

Starts a fresh MailRaven from each checkout given (default: this one), drives
smtp-source at it, and prints msg/s with the CPU per message of the server
process, of its store workers and of smtp-source (from /proc), and how busy
the machine was. Several checkouts run interleaved, round by round: on a
noisy machine msg/s moves 10-20 % between runs of one build, CPU per message
much less, so compare the two side by side. Usage::

    git worktree add /tmp/before HEAD~1
    python3 bench/cpu_split.py --payload "1KB filler" --rounds 3 /tmp/before .

Never run it during tests; it is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
from types import SimpleNamespace

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import smtp_accept  # noqa: E402

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLOCK = os.sysconf("SC_CLK_TCK")
MACHINE = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


def processCPU(pid: int) -> float:
    """User + system seconds of one process (all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK


def machineTicks() -> list[int]:
    with open("/proc/stat") as f:
        return [int(n) for n in f.readline().split()[1 : 1 + len(MACHINE)]]


def childrenCPU() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def storeWorkers(serverPid: int) -> list[int]:
    found = subprocess.run(
        ["pgrep", "-P", str(serverPid), "-f", "mailraven.store.worker"],
        capture_output=True,
        text=True,
    )
    return [int(pid) for pid in found.stdout.split()]


def measure(root: str, payload: smtp_accept.Payload, messages: int) -> str:
    """One fresh server from checkout C{root}: the figures of one run."""
    sys.modules.pop("harness", None)  # each checkout starts its own server
    sys.path.insert(0, os.path.join(root, "bench"))
    try:
        from harness import MailRavenProcess
    finally:
        sys.path.pop(0)
    work = tempfile.mkdtemp(prefix="mailraven-cpu-")
    server = MailRavenProcess(os.path.join(work, "server"), user=smtp_accept.RCPT)

    target = SimpleNamespace(name=root, port=server.smtp)  # as drive() wants

    def send(count: int) -> float:
        return smtp_accept.drive(target, payload, 20, count)

    try:
        send(300)  # warm up: workers ready, caches filled
        workers = storeWorkers(server.proc.pid)
        before = [processCPU(server.proc.pid), sum(map(processCPU, workers))]
        ticks, children = machineTicks(), childrenCPU()
        rate = send(messages)
        after = [processCPU(server.proc.pid), sum(map(processCPU, workers))]
        spent = [b - a for a, b in zip(ticks, machineTicks(), strict=True)]
        source = childrenCPU() - children
    finally:
        server.stop()
    perMessage = [(b - a) / messages * 1000 for a, b in zip(before, after, strict=True)]
    busy = ", ".join(
        f"{name} {n / sum(spent) * 100:.0f}%"
        for name, n in zip(MACHINE, spent, strict=True)
        if name in ("idle", "iowait", "steal")
    )
    return (
        f"{rate:5.0f} msg/s  CPU ms/msg: server {perMessage[0]:.2f}, workers"
        f" {perMessage[1]:.2f}, smtp-source {source / messages * 1000:.2f}"
        f"  ({busy})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkouts", nargs="*", default=[HERE])
    parser.add_argument("--payload", default="1KB filler")
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="mailraven-cpu-payloads-")
    payload = {p.name: p for p in smtp_accept.payloads(work)}[args.payload]
    for round in range(1, args.rounds + 1):
        for root in args.checkouts:
            figures = measure(os.path.abspath(root), payload, args.messages)
            print(f"round {round} {payload.name} x20 {root}: {figures}", flush=True)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Time-to-250 before and during a hot backup of a large store.

Seeds N messages (default 50,000) through the store's delivery path, starts
`twistd -n mailraven`, runs 4 SMTP clients in a loop, and after a warm-up runs
`mailraven backup --to` in another process. Prints p50/p99 of time-to-250
before and during the backup, the backup's duration and size.

Usage: python3 bench/backup.py [--messages 50000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import smtplib
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from api import USER, Server  # noqa: E402 (bench/api.py beside this file)
from harness import ROOT  # noqa: E402


def load(port: int, stop: threading.Event, samples: list) -> None:
    while not stop.is_set():
        started = time.monotonic()
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
                client.sendmail("load@example.org", [USER], b"Subject: l\r\n\r\nx\r\n")
        except (OSError, smtplib.SMTPException):
            continue
        samples.append((time.monotonic(), time.monotonic() - started))


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))] * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=50_000)
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="mailraven-backup-bench-")
    dataDir = os.path.join(work, "data")
    subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "bench", "api.py"),
            "--seed-only",
            dataDir,
            str(args.messages),
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    server = Server(work, dataDir)
    stop, samples = threading.Event(), []
    clients = [
        threading.Thread(target=load, args=(server.smtp, stop, samples))
        for _ in range(4)
    ]
    try:
        for client in clients:
            client.start()
        time.sleep(5)
        began = time.monotonic()
        target = os.path.join(work, "backups", "mailraven-bench")
        subprocess.run(
            [
                sys.executable,
                "-m",
                "mailraven.cli",
                "--config",
                server.config,
                "backup",
                "--to",
                target,
            ],
            check=True,
            cwd=ROOT,
            env=dict(os.environ, PYTHONPATH=ROOT),
            stdout=subprocess.DEVNULL,
        )
        ended = time.monotonic()
        time.sleep(1)
    finally:
        stop.set()
        for client in clients:
            client.join(60)
        server.stop()
    before = [lat for t, lat in samples if t < began]
    during = [lat for t, lat in samples if began <= t <= ended]
    size = sum(
        os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(target) for f in fs
    )
    print(
        f"store: {args.messages} messages; backup took {ended - began:.1f} s,"
        f" {size / 1e6:.0f} MB (message files hard-linked)"
    )
    print(
        f"time-to-250 before: p50 {pct(before, 0.5):.1f} ms,"
        f" p99 {pct(before, 0.99):.1f} ms ({len(before)} msgs);"
        f" during: p50 {pct(during, 0.5):.1f} ms,"
        f" p99 {pct(during, 0.99):.1f} ms ({len(during)} msgs)"
    )
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""IMAP SEARCH over a large folder: UID SEARCH answered by the search index.

Seeds N messages (default 100,000) for one user with bench/api.py's seed()
(the store's delivery path: files, rows, index; its synthetic corpus holds a
common word in a third of the messages and a rare one in N/10,000), starts
`twistd -n mailraven` on that data dir, logs in over IMAP (STARTTLS), SELECTs
INBOX and times each search, median and p95 of C{--rounds} runs:

- UID SEARCH TEXT <rare>, TEXT <common>, BODY <rare>: the index;
- UID SEARCH SUBJECT <word>, FROM <word>: the message rows;
- UID SEARCH UNSEEN TEXT <rare>: the index and the flags of the listing;
- with --scan, once: UID SEARCH TEXT "<rare> <rare>" (two words: every
  message read, what a server without an index does for any TEXT).

Usage: python3 bench/imap_search.py [--messages 100000] [--rounds 20]
       [--seeded DIR] [--scan]
       python3 bench/imap_search.py --seed-only DIR [--messages N]
"""

from __future__ import annotations

import argparse
import imaplib
import os
import shutil
import ssl
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from api import COMMON, PASSWORD, RARE, USER, seed  # noqa: E402
from harness import MailRavenProcess, freePort, waitForPort  # noqa: E402

SEARCHES = [
    ("TEXT rare", ["TEXT", RARE]),
    ("TEXT common", ["TEXT", COMMON]),
    ("BODY rare", ["BODY", RARE]),
    ("SUBJECT word", ["SUBJECT", "roadmap"]),
    ("FROM word", ["FROM", "sender42@"]),
    ("UNSEEN TEXT rare", ["UNSEEN", "TEXT", RARE]),
]


def server(work: str, dataDir: str) -> tuple[MailRavenProcess, int]:
    port = freePort()
    extra = (
        f'[imap]\nlisten = ["tcp:{port}:interface=127.0.0.1"]\n'
        f'[imaps]\nlisten = ["tls:tcp:{freePort()}:interface=127.0.0.1"]\n'
    )
    process = MailRavenProcess(os.path.join(work, "server"), extra, dataDir=dataDir)
    waitForPort(port)
    return process, port


def session(port: int) -> imaplib.IMAP4:
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    client = imaplib.IMAP4("127.0.0.1", port, timeout=600)
    client.starttls(ssl_context=context)
    client.login(USER, PASSWORD)
    return client


def timed(client: imaplib.IMAP4, criteria: list[str]) -> tuple[float, int]:
    """(milliseconds, matches) of one UID SEARCH."""
    started = time.perf_counter()
    status, data = client.uid("SEARCH", *criteria)
    elapsed = (time.perf_counter() - started) * 1000
    if status != "OK":
        raise RuntimeError(f"SEARCH {criteria}: {status} {data}")
    return elapsed, len(data[0].split())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--seeded", help="a data dir seeded with --seed-only")
    parser.add_argument("--seed-only", help="seed this data dir and stop")
    parser.add_argument("--scan", action="store_true")
    args = parser.parse_args()
    if args.seed_only:
        seed(args.seed_only, args.messages)
        return 0
    work = tempfile.mkdtemp(prefix="imap-search-")
    dataDir = os.path.join(work, "data")
    try:
        if args.seeded:
            shutil.copytree(args.seeded, dataDir)
        else:
            print(f"seeding {args.messages} messages", flush=True)
            seed(dataDir, args.messages)
        process, port = server(work, dataDir)
        try:
            client = session(port)
            started = time.perf_counter()
            status, data = client.select("INBOX")
            selected = (time.perf_counter() - started) * 1000
            print(f"SELECT INBOX ({data[0].decode()} messages): {selected:.0f} ms")
            for label, criteria in SEARCHES:
                runs = [timed(client, criteria) for _ in range(args.rounds)]
                times = sorted(ms for ms, _ in runs)
                p95 = times[int(len(times) * 0.95) - 1]
                print(
                    f"UID SEARCH {label:<18} {runs[0][1]:>6} found"
                    f"  median {statistics.median(times):7.1f} ms  p95 {p95:7.1f} ms"
                )
            if args.scan:
                ms, found = timed(client, ["TEXT", f'"{RARE} {RARE}"'])
                print(f"UID SEARCH TEXT (two words, every message read): {ms:.0f} ms")
            client.logout()
        finally:
            process.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

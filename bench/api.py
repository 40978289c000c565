#!/usr/bin/env python3
"""Mobile API latency with a large mailbox, and SMTP acceptance beside it.

1. Seeds N messages (default 100,000) for one user through the store's own
   delivery path (SQLiteMessageStore.deliver: files, metadata, FTS index).
2. Starts `twistd -n mailraven` on that data dir and drives the API with
   concurrent keep-alive HTTP clients (threads): list (first page, a deep
   cursor page, a deep offset page), get, search (common word, rare word,
   phrases), each search in the default order (newest first) and with
   sort=relevance. Prints p50/p95 latency and requests/s per endpoint.
3. Measures SMTP acceptance (smtp-source, 1 KB x 20 sessions) alone and while
   the API is under load, in interleaved rounds, and prints the slowdown of
   the medians.

Usage: python3 bench/api.py [--messages 100000] [--requests 400] [--clients 4]
       [--corpus synthetic|prose]
       [--seeded DIR]   (a copy of DIR, seeded before with
                         --seed-only DIR N [CORPUS])

Corpora: "synthetic" (the default, so figures compare across runs) draws 60
words from a 27-word vocabulary, every word in about 90 % of the messages;
"prose" takes each body as 60 consecutive words of real English (the
docstrings of this Python's standard library), so words and phrases have
the frequencies of real text. Both add the same common and rare word.
"""

from __future__ import annotations

import argparse
import ast
import http.client
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from urllib.parse import quote

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import ROOT, MailRavenProcess, smtpSourceRate  # noqa: E402

sys.path.insert(0, ROOT)

USER = "reader@example.test"
PASSWORD = "bench password"
COMMON, RARE = "meeting", "zanzibar"
API_RATE = 50  # requests/s of API load beside the SMTP measurement
SMTP_ROUNDS = 5
WORDS = (
    "budget report project deadline review lunch travel invoice contract team "
    "schedule update design launch customer support release planning agenda "
    "quarterly numbers hiring office holiday feedback roadmap security"
).split()


PHRASES = {
    "synthetic": ['"budget report"'],
    # a phrase of the two commonest words, and a common one of content words
    "prose": ['"of the"', '"return value"'],
}


def proseWords() -> list[str]:
    """Every word of the standard library's docstrings, in order."""
    words: list[str] = []
    root = sysconfig.get_paths()["stdlib"]
    for directory, subdirectories, files in os.walk(root):
        subdirectories[:] = [d for d in subdirectories if d not in SKIP_DIRS]
        for name in sorted(files):
            if not name.endswith(".py"):
                continue
            try:
                with open(os.path.join(directory, name), encoding="utf-8") as f:
                    tree = ast.parse(f.read())
            except (SyntaxError, UnicodeDecodeError, ValueError):
                continue
            for node in ast.walk(tree):
                if isinstance(node, DOCUMENTED):
                    words += re.findall(r"[A-Za-z]+", ast.get_docstring(node) or "")
    return words


SKIP_DIRS = {"test", "tests", "site-packages", "idlelib", "__pycache__"}
DOCUMENTED = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def message(i: int, rng: random.Random, prose: list[str] | None = None) -> bytes:
    if prose:
        start = rng.randrange(len(prose) - 60)
        words = prose[start : start + 60]
    else:
        words = rng.choices(WORDS, k=60)
    if i % 3 == 0:
        words.insert(rng.randrange(len(words)), COMMON)
    if i % 10_000 == 7:
        words.insert(5, RARE)
    if prose:
        start = rng.randrange(len(prose) - 4)
        subject = " ".join(prose[start : start + 4])
    else:
        subject = " ".join(rng.choices(WORDS, k=4))
    return (
        f"From: Sender {i % 500} <sender{i % 500}@example.org>\r\n"
        f"To: {USER}\r\nSubject: {subject}\r\nMessage-ID: <{i}@bench>\r\n"
        f"Date: Wed, 25 Nov 2026 12:00:00 +0000\r\n\r\n" + " ".join(words) + "\r\n"
    ).encode()


def seed(dataDir: str, count: int, corpus: str = "synthetic") -> None:
    """In-process, through SQLiteMessageStore.deliver (the SMTP path's store)."""
    from twisted.internet import defer, reactor
    from twisted.python.threadpool import ThreadPool

    from mailraven.envelope import Envelope, Recipient
    from mailraven.spool import memorySpool
    from mailraven.startup import databasePath, ensureLayout
    from mailraven.store.db import Database, openDatabase
    from mailraven.store.messages import SQLiteMessageStore
    from mailraven.store.users import addUser, hashPassword

    ensureLayout(dataDir)
    conn = openDatabase(databasePath(dataDir))
    with conn:
        conn.execute("BEGIN IMMEDIATE")
        userId = addUser(conn, USER, hashPassword(PASSWORD))
    conn.close()
    db = Database(databasePath(dataDir), reactor)
    pool = ThreadPool(1, 2)
    store = SQLiteMessageStore(db, dataDir, reactor, pool)
    rng = random.Random(1)
    prose = proseWords() if corpus == "prose" else None
    started = time.monotonic()

    @defer.inlineCallbacks
    def run():
        db.startService()
        pool.start()
        semaphore = defer.DeferredSemaphore(32)
        pending = []
        for i in range(count):
            envelope = Envelope(
                "bench@example.org", recipients=[Recipient(USER, userId)]
            )
            spool = memorySpool(message(i, rng, prose))
            pending.append(semaphore.run(store.deliver, envelope, spool))
            if len(pending) >= 1000:
                yield defer.gatherResults(pending)
                pending = []
                done = i + 1
                if done % 10_000 == 0:
                    rate = done / (time.monotonic() - started)
                    print(f"  seeded {done} ({rate:.0f} msg/s)", flush=True)
        yield defer.gatherResults(pending)
        pool.stop()
        yield db.stopService()
        reactor.stop()

    reactor.callWhenRunning(run)
    reactor.run()


def Server(work: str, dataDir: str) -> MailRavenProcess:
    return MailRavenProcess(os.path.join(work, "server"), dataDir=dataDir)


def call(
    conn: http.client.HTTPConnection,
    path: str,
    token: str | None,
    method: str = "GET",
    body: bytes | None = None,
) -> tuple[int, bytes]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    conn.request(method, path, body=body, headers=headers)
    response = conn.getresponse()
    return response.status, response.read()


def measure(
    port: int, token: str, paths: list[str], requests: int, clients: int
) -> tuple[list[float], float]:
    latencies: list[float] = []
    lock = threading.Lock()
    errors = []

    def worker(n: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        mine = []
        for k in range(n):
            path = paths[k % len(paths)]
            started = time.perf_counter()
            status, _ = call(conn, path, token)
            mine.append(time.perf_counter() - started)
            if status != 200:
                errors.append((path, status))
        conn.close()
        with lock:
            latencies.extend(mine)

    threads = [
        threading.Thread(target=worker, args=(requests // clients,))
        for _ in range(clients)
    ]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise RuntimeError(f"errors: {errors[:5]}")
    return latencies, len(latencies) / elapsed


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))] * 1000


def smtpRate(port: int, messages: int = 2000) -> float:
    return smtpSourceRate(port, messages, USER)


def smtpUnderApiLoad(server, token: str, entryId: str) -> tuple[float, float]:
    """SMTP msg/s while a steady API_RATE requests/s (list, get, search, like
    syncing apps) hits the API; and the API rate actually served."""
    load = threading.Event()
    served: list[float] = []

    def apiLoad() -> None:
        paths = [
            "/api/v1/messages?limit=50",
            f"/api/v1/messages/{entryId}",
            f"/api/v1/messages/search?q={RARE}",
            f"/api/v1/messages/search?q={COMMON}",
        ]
        conn = http.client.HTTPConnection("127.0.0.1", server.api, timeout=60)
        sent, started = 0, time.monotonic()
        while not load.is_set():
            call(conn, paths[sent % len(paths)], token)
            sent += 1
            delay = started + sent / API_RATE - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        conn.close()
        served.append(sent / (time.monotonic() - started))

    loader = threading.Thread(target=apiLoad)
    loader.start()
    try:
        rate = smtpRate(server.smtp)
    finally:
        load.set()
        loader.join()
    return rate, served[0]


def searchCells(phrases: list[str], sort: str) -> list[tuple[str, list[str]]]:
    """The search rows, in the default order (newest first) or C{sort}."""
    label = f", {sort.partition('=')[2]}" if sort else ""
    return [
        (f"search {kind} ({q}){label}", [f"/api/v1/messages/search?q={quote(q)}{sort}"])
        for kind, q in (
            ("common", COMMON),
            ("rare", RARE),
            *(("phrase", p) for p in phrases),
        )
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seeded", help="copy this seeded data dir instead")
    parser.add_argument(
        "--corpus", choices=sorted(PHRASES), default="synthetic", help="see above"
    )
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="mailraven-api-bench-")
    dataDir = os.path.join(work, "data")
    if args.seeded:
        shutil.copytree(args.seeded, dataDir)
    else:
        print(f"seeding {args.messages} messages ...", flush=True)
        started = time.monotonic()
        subprocess.run(
            [
                sys.executable,
                __file__,
                "--seed-only",
                dataDir,
                str(args.messages),
                args.corpus,
            ],
            check=True,
        )
        print(f"seeded in {time.monotonic() - started:.0f} s", flush=True)
    server = Server(work, dataDir)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.api, timeout=60)
        status, body = call(
            conn,
            "/api/v1/auth/login",
            None,
            "POST",
            json.dumps({"email": USER, "password": PASSWORD}).encode(),
        )
        token = json.loads(body)["token"]
        _, first = call(conn, "/api/v1/messages?limit=50", token)
        ids = [m["id"] for m in json.loads(first)["messages"]]
        cursor = None
        for _ in range(20):  # walk 20 pages deep by cursor
            query = "/api/v1/messages?limit=50" + (
                f"&cursor={cursor}" if cursor else ""
            )
            _, page = call(conn, query, token)
            cursor = json.loads(page)["next_cursor"]
        conn.close()
        cells = [
            ("list first page", ["/api/v1/messages?limit=50"]),
            (
                "list by cursor (page 21)",
                [f"/api/v1/messages?limit=50&cursor={cursor}"],
            ),
            ("list offset 50000", ["/api/v1/messages?limit=50&offset=50000"]),
            ("get", [f"/api/v1/messages/{i}" for i in ids]),
            *searchCells(PHRASES[args.corpus], ""),
            *searchCells(PHRASES[args.corpus], "&sort=relevance"),
        ]
        print(
            f"\n{args.messages} messages, {args.clients} concurrent clients,"
            f" {args.requests} requests per row"
        )
        print("| request | p50 ms | p95 ms | req/s |\n|---|---|---|---|")
        for name, paths in cells:
            measure(server.api, token, paths, args.clients * 5, args.clients)  # warm
            latencies, rate = measure(
                server.api, token, paths, args.requests, args.clients
            )
            print(
                f"| {name} | {percentile(latencies, 0.5):.1f} |"
                f" {percentile(latencies, 0.95):.1f} | {rate:.0f} |",
                flush=True,
            )
        # One pair (alone, loaded) moves by 10-20 % from run to run here:
        # interleave SMTP_ROUNDS pairs and compare the medians.
        alone, loaded, served = [], [], []
        for _ in range(SMTP_ROUNDS):
            alone.append(smtpRate(server.smtp))
            rate, apiRate = smtpUnderApiLoad(server, token, ids[0])
            loaded.append(rate)
            served.append(apiRate)
        print(
            f"\nSMTP 1KB x 20, medians of {SMTP_ROUNDS} interleaved rounds:"
            f" alone {statistics.median(alone):.0f} msg/s"
            f" ({', '.join(f'{r:.0f}' for r in alone)}); with the API serving"
            f" {statistics.median(served):.0f} req/s {statistics.median(loaded):.0f}"
            f" msg/s ({', '.join(f'{r:.0f}' for r in loaded)}):"
            f" {(1 - statistics.median(loaded) / statistics.median(alone)) * 100:.0f}%"
            " slower"
        )
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    if len(sys.argv) in (4, 5) and sys.argv[1] == "--seed-only":
        seed(sys.argv[2], int(sys.argv[3]), *sys.argv[4:])  # corpus: synthetic
        sys.exit(0)
    sys.exit(main())

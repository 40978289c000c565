#!/usr/bin/env python3
"""What the policy chain costs: SMTP acceptance with DNSBL + rate limits on vs off.

Starts a local authoritative DNS server (twisted.names) with two test zones,
and two MailRaven servers: one with both zones and every rate limit active for
the client, one with neither. Drives both with smtp-source (1 KB, 20 sessions,
a new connection per message), interleaved for N rounds; prints medians and
the slowdown. Lookups hit a warm cache after the first connection.

Usage: python3 bench/policy.py [--messages 2000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import ROOT, MailRavenProcess, freePort, smtpSourceRate  # noqa: E402

ZONES = ("bl1.test", "bl2.test")


def serveDNS(port: int) -> None:
    """The zones: 127.0.0.2 listed (RFC 5782 test entry), nothing else."""
    from twisted.internet import reactor
    from twisted.internet.defer import fail, succeed
    from twisted.names import common, dns, error, server

    class Zones(common.ResolverBase):
        def _lookup(self, name, cls, type, timeout):
            name = name.decode() if isinstance(name, bytes) else name
            if name.startswith("2.0.0.127.") and type == dns.A:
                payload = dns.Record_A("127.0.0.2", ttl=3600)
                return succeed(
                    ([dns.RRHeader(name, dns.A, ttl=3600, payload=payload)], [], [])
                )
            return fail(error.DomainError(name))

    factory = server.DNSServerFactory(authorities=[Zones()])
    reactor.listenUDP(
        port, dns.DNSDatagramProtocol(controller=factory), interface="127.0.0.1"
    )
    reactor.run()


def drive(port: int, messages: int) -> float:
    return smtpSourceRate(port, messages, "user@example.test")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if shutil.which("smtp-source") is None:
        print("smtp-source not found: apt-get install postfix", file=sys.stderr)
        return 2
    work = tempfile.mkdtemp(prefix="mailraven-policy-bench-")
    dnsPort = freePort()
    dnsServer = subprocess.Popen(
        [sys.executable, __file__, "--serve-dns", str(dnsPort)],
        env=dict(os.environ, PYTHONPATH=ROOT),
    )
    time.sleep(1)
    on = (
        f'[dns]\nnameservers = ["127.0.0.1:{dnsPort}"]\n'
        f'[dnsbl]\nzones = ["{ZONES[0]}", "{ZONES[1]}:score=2"]\n'
        "[ratelimit]\nallowlist = []\nconnections_per_ip = 1000000\n"
        "connections_per_subnet = 1000000\nmessages_per_ip = 1000000\n"
        "recipients_per_ip = 1000000\nconcurrent_per_ip = 1000\n"
    )
    servers = []
    try:
        names = ["policy-off", "policy-on"]
        servers = [
            MailRavenProcess(os.path.join(work, name), extra, user="user@example.test")
            for name, extra in zip(names, ["", on], strict=True)
        ]
        results: dict[str, list[float]] = {name: [] for name in names}
        for server in servers:
            drive(server.smtp, 200)  # warm up (and warm the DNSBL cache)
        for round_ in range(args.rounds):
            for name, server in zip(names, servers, strict=True):
                rate = drive(server.smtp, args.messages)
                results[name].append(rate)
                print(f"round {round_ + 1} {name:10} {rate:7.0f} msg/s", flush=True)
        off = statistics.median(results["policy-off"])
        onRate = statistics.median(results["policy-on"])
        print(
            f"\n1 KB x 20 sessions, median of {args.rounds}: policy off {off:.0f}"
            f" msg/s, DNSBL (2 zones) + rate limits on {onRate:.0f} msg/s"
            f" ({(1 - onRate / off) * 100:+.1f}% slower)"
        )
    finally:
        for server in servers:
            server.stop()
        dnsServer.send_signal(signal.SIGTERM)
        dnsServer.wait(10)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--serve-dns":
        serveDNS(int(sys.argv[2]))
        sys.exit(0)
    socket.setdefaulttimeout(30)
    sys.exit(main())

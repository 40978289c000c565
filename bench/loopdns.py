#!/usr/bin/env python3
"""A loopback DNS server for the benchmarks: the sender domain's SPF and DMARC
records (smtp-source's ``sender.example``), every answer optionally late.

Usage: ``python3 bench/loopdns.py PORT [--delay SECONDS]``; it prints
``ready`` once it listens and serves until killed.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from twisted.internet import reactor  # noqa: E402
from twisted.names import dns  # noqa: E402

from tests.dnszone import Zone, ZoneServer  # noqa: E402

RECORDS = {
    "sender.example": [(dns.TXT, "v=spf1 ip4:127.0.0.1 -all")],
    "_dmarc.sender.example": [(dns.TXT, "v=DMARC1; p=none")],
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("port", type=int)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds")
    args = parser.parse_args()
    zone = Zone(RECORDS, soa=(300, 300), delay=args.delay)
    factory = ZoneServer(authorities=[zone])
    protocol = dns.DNSDatagramProtocol(controller=factory)
    protocol.noisy = False
    reactor.listenUDP(args.port, protocol, interface="127.0.0.1")
    reactor.callWhenRunning(lambda: print("ready", flush=True))
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""ACME against a real CA (Debian's pebble): issuance, SNI, renewal, failure
with back-off, restart. The schedule's arithmetic is in test_certificates."""

from __future__ import annotations

import datetime
import os
import socket
import ssl
import stat
import time

from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import TestCase

from tests.helpers import RunningServer, sleep
from tests.pebble import Pebble
from tests.tlsclient import dnsNames, httpsCertificate, starttlsCertificate

MAIL = "mail.example.test"
MTA_STS = "mta-sts.example.test"
OTHER = "other.example.test"


def acmeOverrides(pebble: Pebble, **more):
    values = dict(
        acme__enabled=True,
        acme__directory=pebble.directoryURL,
        acme__ca_bundle=pebble.caBundle,
        acme__http01_listen=[f"tcp:{pebble.httpPort}:interface=127.0.0.1"],
        acme__domains=[f"{MAIL} {MTA_STS}"],
        acme__retry_initial=1,
        api__listen=["tcp:0:interface=127.0.0.1", "tls:tcp:0:interface=127.0.0.1"],
    )
    values.update(more)
    return values


def issuer(server: RunningServer):
    return server.root.getServiceNamed("acme").getServiceNamed("issuer")


@inlineCallbacks
def waitFor(predicate, timeout: float = 30, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        yield sleep(0.1)


def issued(server: RunningServer, count: int = 1):
    def check() -> bool:
        entries = issuer(server).status()
        return sum(1 for e in entries if e.get("not_after")) >= count

    return waitFor(check, what=f"{count} certificate(s) issued")


def httpsPort(server: RunningServer) -> int:
    listeners = list(server.root.getServiceNamed("api"))
    return listeners[1].address.port


def ordersCounted(server: RunningServer, result: str) -> float:
    value = server.root.metrics.registry.get_sample_value(
        "mailraven_acme_orders_total", {"result": result}
    )
    return value or 0.0


class IssuanceTests(TestCase):
    timeout = 120

    @inlineCallbacks
    def test_twoCertificatesServedBySNIOnSMTPAndHTTPS(self):
        pebble = Pebble(self)
        server = RunningServer(
            self,
            **acmeOverrides(pebble, acme__domains=[f"{MAIL} {MTA_STS}", OTHER]),
        )
        # Start-up does not wait for the CA: STARTTLS works at once.
        early = yield deferToThread(starttlsCertificate, server.smtpPort, MAIL)
        self.assertEqual(dnsNames(early), ["mx.mailraven.test", MTA_STS])
        yield issued(server, 2)
        root = os.path.join(pebble.directory, "root.pem")
        with open(root, "wb") as f:
            f.write(pebble.rootPEM())

        for name in (MAIL, MTA_STS):
            leaf = yield deferToThread(starttlsCertificate, server.smtpPort, name, root)
            self.assertEqual(sorted(dnsNames(leaf)), [MAIL, MTA_STS])
            leaf = yield deferToThread(httpsCertificate, httpsPort(server), name, root)
            self.assertEqual(sorted(dnsNames(leaf)), [MAIL, MTA_STS])
        other = yield deferToThread(starttlsCertificate, server.smtpPort, OTHER, root)
        self.assertEqual(dnsNames(other), [OTHER])
        other = yield deferToThread(httpsCertificate, httpsPort(server), OTHER, root)
        self.assertEqual(dnsNames(other), [OTHER])

        # Unknown name and no SNI at all: the default (first configured) one.
        for name in ("unknown.example.test", None):
            leaf = yield deferToThread(starttlsCertificate, server.smtpPort, name)
            self.assertEqual(sorted(dnsNames(leaf)), [MAIL, MTA_STS])

        acmeDir = os.path.join(server.dataDir, "certs", "acme")
        self.assertEqual(stat.S_IMODE(os.stat(acmeDir).st_mode), 0o700)
        for name in ("account.key", f"{MAIL}.pem", f"{OTHER}.pem", "state.json"):
            mode = os.stat(os.path.join(acmeDir, name)).st_mode
            self.assertEqual(stat.S_IMODE(mode), 0o600, name)
        self.assertEqual(ordersCounted(server, "issued"), 2)
        expiry = server.root.metrics.registry.get_sample_value(
            "mailraven_tls_cert_expiry_timestamp_seconds", {"name": OTHER}
        )
        self.assertGreater(expiry, time.time() + 20 * 86400)
        health = server.root.certificates.health()
        self.assertEqual(health["status"], "ok")
        self.assertEqual(
            [e["names"] for e in health["certificates"]],
            [[MAIL, MTA_STS], [OTHER]],
        )

    @inlineCallbacks
    def test_restartReusesAccountAndCertificate(self):
        pebble = Pebble(self)
        dataDir = os.path.abspath(self.mktemp())
        first = RunningServer(self, dataDir, **acmeOverrides(pebble))
        yield issued(first)
        served = yield deferToThread(starttlsCertificate, first.smtpPort, MAIL)
        accountKey = os.path.join(dataDir, "certs", "acme", "account.key")
        with open(accountKey, "rb") as f:
            key = f.read()
        yield first.stop()

        startedAt = time.time()
        second = RunningServer(self, dataDir, **acmeOverrides(pebble))
        # The start-up check is over once it has moved every certificate's
        # next check a check interval (12 h) ahead and its run has ended: an
        # order it placed would have been counted by then.
        yield waitFor(
            lambda: (
                all(o.due > startedAt + 3600 for o in issuer(second)._orders)
                and issuer(second)._inFlight is None
            ),
            what="the start-up check",
        )
        self.assertEqual(ordersCounted(second, "issued"), 0)
        self.assertEqual(ordersCounted(second, "renewed"), 0)
        again = yield deferToThread(starttlsCertificate, second.smtpPort, MAIL)
        self.assertEqual(again.serial_number, served.serial_number)
        with open(accountKey, "rb") as f:
            self.assertEqual(f.read(), key)


class RenewalTests(TestCase):
    timeout = 120

    @inlineCallbacks
    def test_shortCertificateIsRenewedWithoutRestart(self):
        # 29-day certificates with renew_before_days = 30: the next check renews.
        pebble = Pebble(self, validityDays=29)
        server = RunningServer(self, **acmeOverrides(pebble, acme__check_interval=1))
        yield issued(server)
        first = yield deferToThread(starttlsCertificate, server.smtpPort, MAIL)
        before = ordersCounted(server, "renewed")
        yield waitFor(
            lambda: ordersCounted(server, "renewed") > before, what="a renewal"
        )
        # no more renewals from here (each check would renew again): compare
        # SMTP and HTTPS on one certificate
        issuer(server)._renewBefore = datetime.timedelta(0)
        yield waitFor(lambda: not issuer(server)._busy, what="the order in flight")
        second = yield deferToThread(starttlsCertificate, server.smtpPort, MAIL)
        self.assertNotEqual(second.serial_number, first.serial_number)
        https = yield deferToThread(httpsCertificate, httpsPort(server), MAIL)
        self.assertEqual(https.serial_number, second.serial_number)

    @inlineCallbacks
    def test_failureBacksOffKeepsServingAndRecovers(self):
        pebble = Pebble(self, validityDays=29)
        failures: list[dict] = []

        def observe(event: dict) -> None:
            if event.get("event") == "acme_failed":
                failures.append(event)

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        server = RunningServer(
            self,
            **acmeOverrides(
                pebble,
                acme__check_interval=1,
                acme__retry_initial=0.5,
                acme__retry_max=2,
            ),
        )
        yield issued(server)

        # The CA now resolves the name elsewhere: validation fails. Orders run
        # one at a time, so after the first failure no renewal can land: the
        # certificate served then must stay until the fault is removed.
        pebble.pointAt(MAIL, "127.0.0.2")
        yield waitFor(lambda: len(failures) >= 1, timeout=60, what="a failure")
        good = yield deferToThread(starttlsCertificate, server.smtpPort, MAIL)
        renewedBefore = ordersCounted(server, "renewed")
        yield waitFor(lambda: len(failures) >= 4, timeout=60, what="4 failures")
        pebble.unpoint(MAIL)
        delays = [event["delay"] for event in failures[:4]]
        for delay, expected in zip(delays, [0.5, 1, 2, 2], strict=True):
            self.assertTrue(expected * 0.9 <= delay <= expected * 1.1, delays)
        self.assertIsNotNone(failures[0]["problem"])
        self.assertIn("validation of", failures[0]["error"])
        entry = server.root.certificates.health()
        self.assertEqual(entry["status"], "degraded")
        still = yield deferToThread(starttlsCertificate, server.smtpPort, MAIL)
        self.assertEqual(still.serial_number, good.serial_number)

        yield waitFor(
            lambda: ordersCounted(server, "renewed") > renewedBefore,
            timeout=30,
            what="success after the fault is removed",
        )
        renewed = yield deferToThread(starttlsCertificate, server.smtpPort, MAIL)
        self.assertNotEqual(renewed.serial_number, good.serial_number)
        self.assertEqual(server.root.certificates.health()["status"], "ok")


def fetchPolicy(port: int, host: str, cafile: str) -> bytes:
    """Blocking: GET the MTA-STS policy over HTTPS verified for C{host}."""
    context = ssl.create_default_context(cafile=cafile)
    raw = socket.create_connection(("127.0.0.1", port), timeout=20)
    with context.wrap_socket(raw, server_hostname=host) as sock:
        sock.sendall(
            b"GET /.well-known/mta-sts.txt HTTP/1.1\r\nHost: %s\r\n"
            b"Connection: close\r\n\r\n" % host.encode()
        )
        reply = b""
        while chunk := sock.recv(4096):
            reply += chunk
    return reply


class PolicyHostTests(TestCase):
    timeout = 120

    @inlineCallbacks
    def test_policyHostGetsItsOwnCertificateWithoutBeingConfigured(self):
        """acme.domains empty: the hostname's certificate, and one for
        mta-sts.<domain> from which a sender fetches the policy, verified."""
        pebble = Pebble(self)
        server = RunningServer(
            self, server__hostname=MAIL, **acmeOverrides(pebble, acme__domains=[])
        )
        yield issued(server, 2)
        root = os.path.join(pebble.directory, "root.pem")
        with open(root, "wb") as f:
            f.write(pebble.rootPEM())
        leaf = yield deferToThread(httpsCertificate, httpsPort(server), MAIL, root)
        self.assertEqual(dnsNames(leaf), [MAIL])
        leaf = yield deferToThread(httpsCertificate, httpsPort(server), MTA_STS, root)
        self.assertEqual(dnsNames(leaf), [MTA_STS])
        reply = yield deferToThread(fetchPolicy, httpsPort(server), MTA_STS, root)
        self.assertTrue(reply.startswith(b"HTTP/1.1 200 "), reply)
        self.assertIn(b"\r\n\r\nversion: STSv1\r\nmode: testing\r\n", reply)
        self.assertIn(f"mx: {MAIL}\r\n".encode(), reply)


class TLSALPNTests(TestCase):
    timeout = 120

    @inlineCallbacks
    def test_tlsAlpn01OnTheHTTPSListenerWhileItServes(self):
        pebble = Pebble(self)
        https = f"tls:tcp:{pebble.tlsPort}:interface=127.0.0.1"
        server = RunningServer(
            self,
            **acmeOverrides(
                pebble,
                acme__challenge="tls-alpn-01",
                acme__http01_listen=[],  # nothing on the HTTP-01 port
                api__listen=["tcp:0:interface=127.0.0.1", https],
            ),
        )
        yield issued(server)
        root = os.path.join(pebble.directory, "root.pem")
        with open(root, "wb") as f:
            f.write(pebble.rootPEM())
        leaf = yield deferToThread(httpsCertificate, pebble.tlsPort, MTA_STS, root)
        self.assertEqual(sorted(dnsNames(leaf)), [MAIL, MTA_STS])
        # no challenge pending now: acme-tls/1 clients get the normal certificate
        self.assertEqual(ordersCounted(server, "issued"), 1)

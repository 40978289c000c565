"""The certificate manager and the ACME schedule, on a Clock.

The protocol is tested against a real CA in test_acme; here the issuing call
is a scripted stand-in so every timing decision can be stepped through."""

from __future__ import annotations

import datetime
import os
import shutil

import treq
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet import defer, reactor
from twisted.internet.task import Clock
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import HTTPConnectionPool
from zope.interface.verify import verifyObject

from mailraven.config import ConfigError, load
from mailraven.interfaces import ICertificateManager
from mailraven.metrics import Metrics
from mailraven.tls.acmeclient import AcmeProblem
from mailraven.tls.certificates import CertificateError, loadCertificate, matches
from mailraven.tls.issuer import AcmeIssuer, AcmeStore, backoffDelay
from mailraven.tls.manager import CertificateManager
from mailraven.tls.selfsigned import ensureSelfSigned
from mailraven.tls.service import acmeCertificates
from tests.helpers import RunningServer, sleep
from tests.tlsclient import dnsNames, starttlsCertificate

DAY = 86400


def makePEM(names: list[str], notAfter: datetime.datetime) -> tuple[bytes, bytes]:
    """(key PEM, certificate PEM): what a CA would hand back."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(notAfter - datetime.timedelta(days=90))
        .not_valid_after(notAfter)
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False
        )
        .sign(key, hashes.SHA256())
    )
    keyPEM = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return keyPEM, cert.public_bytes(serialization.Encoding.PEM)


class ScriptedCA:
    """Answers issue() from a script: 'ok' (valid for C{days}) or 'fail'."""

    def __init__(self, clock: Clock, script: list[str], days: int = 90) -> None:
        self.clock = clock
        self.script = list(script)
        self.days = days
        self.calls: list[float] = []

    def issue(self, names: list[str]):
        self.calls.append(self.clock.seconds())
        outcome = self.script.pop(0) if self.script else "ok"
        if outcome == "fail":
            return defer.fail(AcmeProblem("validation failed", {"status": 403}))
        now = datetime.datetime.fromtimestamp(self.clock.seconds(), datetime.UTC)
        return defer.succeed(makePEM(names, now + datetime.timedelta(days=self.days)))


class BackoffTests(SynchronousTestCase):
    def test_doublesThenCaps(self):
        delays = [backoffDelay(n, 60, 600, lambda: 0.5) for n in range(1, 7)]
        self.assertEqual(delays, [60, 120, 240, 480, 600, 600])

    def test_jitterStaysWithinTenPercentAndUnderTheCap(self):
        self.assertAlmostEqual(backoffDelay(1, 60, 600, lambda: 0.0), 54)
        self.assertAlmostEqual(backoffDelay(1, 60, 600, lambda: 1.0), 66)
        self.assertEqual(backoffDelay(9, 60, 600, lambda: 1.0), 600)


class IssuerScheduleTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1_800_000_000)
        self.data = os.path.abspath(self.mktemp())
        self.selfSigned = os.path.join(self.data, "selfsigned")
        self.manager = CertificateManager("", "", self.selfSigned, "mx.example.test")
        self.store = AcmeStore(os.path.join(self.data, "acme"))
        self.metrics = Metrics()

    def makeIssuer(self, ca: ScriptedCA, names=(("mail.example.test",),), manager=None):
        issuer = AcmeIssuer(
            [tuple(n) for n in names],
            manager or self.manager,
            self.store,
            ca.issue,
            self.clock,
            renewBefore=datetime.timedelta(days=30),
            checkInterval=12 * 3600,
            retryInitial=60,
            retryMax=3600,
            spacing=5,
            metrics=self.metrics,
            rand=lambda: 0.5,
        )
        self.addCleanup(lambda: issuer.running and issuer.stopService())
        return issuer

    def test_issuesAtStartThenOnlyChecks(self):
        ca = ScriptedCA(self.clock, ["ok"])
        issuer = self.makeIssuer(ca)
        issuer.startService()
        self.assertEqual(ca.calls, [])  # start-up itself never talks to the CA
        self.clock.advance(0)
        self.assertEqual(len(ca.calls), 1)
        served = self.manager.certificateFor("mail.example.test")
        self.assertEqual(served.source, "acme")
        self.assertIs(self.manager.default(), served)
        self.clock.advance(10 * DAY)  # 20 checks, nothing to renew
        self.assertEqual(len(ca.calls), 1)

    def test_renewsWhenFewerThanRenewBeforeDaysRemain(self):
        ca = ScriptedCA(self.clock, ["ok", "ok"], days=40)
        issuer = self.makeIssuer(ca)
        issuer.startService()
        self.clock.advance(0)
        self.clock.advance(9 * DAY)
        self.assertEqual(len(ca.calls), 1)
        self.clock.advance(2 * DAY)  # 29 days left at the next check
        self.assertEqual(len(ca.calls), 2)
        self.assertEqual(
            self.metrics.registry.get_sample_value(
                "mailraven_acme_orders_total", {"result": "renewed"}
            ),
            1,
        )

    def test_failuresBackOffAndKeepTheCurrentCertificate(self):
        ca = ScriptedCA(self.clock, ["ok", "fail", "fail", "fail", "ok"], days=40)
        issuer = self.makeIssuer(ca)
        issuer.startService()
        self.clock.advance(0)
        current = self.manager.certificateFor("mail.example.test")
        self.clock.advance(11 * DAY)  # due for renewal: the order fails
        start = ca.calls[1]
        for _ in range(10):
            self.clock.advance(30)
        self.assertEqual(
            [round(t - start) for t in ca.calls[1:]], [0, 60, 180]
        )  # retries after 60 s, then 120 s
        self.assertIs(self.manager.certificateFor("mail.example.test"), current)
        [entry] = issuer.status()
        self.assertEqual(
            (entry["failures"], entry["last_error"]), (3, "validation failed")
        )
        self.clock.advance(240)
        self.assertEqual(len(ca.calls), 5)
        self.assertIsNot(self.manager.certificateFor("mail.example.test"), current)
        self.assertIsNone(issuer.status()[0]["last_error"])

    def test_restartDuringBackOffWaitsForTheSavedRetryTime(self):
        ca = ScriptedCA(self.clock, ["fail", "fail"])
        issuer = self.makeIssuer(ca)
        issuer.startService()
        self.clock.advance(0)
        self.clock.advance(60)
        self.assertEqual(len(ca.calls), 2)  # next retry due 120 s later
        issuer.stopService()

        again = ScriptedCA(self.clock, ["ok"])
        restarted = self.makeIssuer(again)
        restarted.startService()
        self.clock.advance(0)
        self.assertEqual(again.calls, [])  # a crash loop does not hammer the CA
        self.clock.advance(120)
        self.assertEqual(len(again.calls), 1)

    def test_restartWithAGoodCertificateDoesNotOrder(self):
        ca = ScriptedCA(self.clock, ["ok"])
        issuer = self.makeIssuer(ca)
        issuer.startService()
        self.clock.advance(0)
        issuer.stopService()

        fresh = CertificateManager("", "", self.selfSigned, "mx.example.test")
        again = ScriptedCA(self.clock, [])
        restarted = self.makeIssuer(again, manager=fresh)
        restarted.startService()
        self.assertEqual(fresh.certificateFor("mail.example.test").source, "acme")
        self.clock.advance(DAY)
        self.assertEqual(again.calls, [])

    def test_changedNamesAreOrdered(self):
        ca = ScriptedCA(self.clock, ["ok"])
        issuer = self.makeIssuer(ca)
        issuer.startService()
        self.clock.advance(0)
        issuer.stopService()
        again = ScriptedCA(self.clock, ["ok"])
        fresh = CertificateManager("", "", self.selfSigned, "mx.example.test")
        restarted = self.makeIssuer(
            again, names=[("mail.example.test", "mta-sts.example.test")], manager=fresh
        )
        restarted.startService()
        self.clock.advance(0)
        self.assertEqual(len(again.calls), 1)
        self.assertEqual(
            fresh.certificateFor("mta-sts.example.test").names,
            ("mail.example.test", "mta-sts.example.test"),
        )

    def test_severalCertificatesAreStaggered(self):
        ca = ScriptedCA(self.clock, [])
        names = [("a.example.test",), ("b.example.test",), ("c.example.test",)]
        issuer = self.makeIssuer(ca, names=names)
        issuer.startService()
        self.clock.advance(0)
        for _ in range(4):
            self.clock.advance(5)
        start = ca.calls[0]
        self.assertEqual([t - start for t in ca.calls], [0, 5, 10])


class ManagerTests(SynchronousTestCase):
    def test_providesTheInterface(self):
        manager = CertificateManager(
            "", "", os.path.abspath(self.mktemp()), "mx.example.test"
        )
        self.assertTrue(verifyObject(ICertificateManager, manager))

    def test_wildcardMatchesOneLabel(self):
        self.assertTrue(matches("*.example.test", "mail.example.test"))
        self.assertFalse(matches("*.example.test", "a.b.example.test"))
        self.assertFalse(matches("*.example.test", "example.test"))

    def test_operatorFileWinsOverACME(self):
        own = os.path.abspath(self.mktemp())
        cert, key = ensureSelfSigned(own, "mail.example.test")
        manager = CertificateManager(cert, key, own, "mx.example.test")
        keyPEM, chainPEM = makePEM(
            ["mail.example.test", "b.example.test"],
            datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=60),
        )
        manager.install("mail.example.test", loadCertificate(chainPEM, keyPEM, "acme"))
        self.assertEqual(manager.certificateFor("mail.example.test").source, "file")
        self.assertEqual(manager.certificateFor("b.example.test").source, "acme")
        self.assertEqual(manager.certificateFor("unknown.test").source, "file")

    def test_mismatchedKeyIsRefused(self):
        one = os.path.abspath(self.mktemp())
        two = os.path.abspath(self.mktemp())
        cert, _ = ensureSelfSigned(one, "a.example.test")
        _, key = ensureSelfSigned(two, "b.example.test")
        with self.assertRaises(CertificateError) as e:
            CertificateManager(cert, key, one, "mx.example.test")
        self.assertIn("does not match", str(e.exception))


class ConfigTests(SynchronousTestCase):
    def test_domainsAreCertificatesOfSpaceSeparatedNames(self):
        config = load(
            environ={
                "MAILRAVEN_ACME_DOMAINS": "Mail.example.test  mta-sts.example.test,"
                "b.test"
            }
        )
        self.assertEqual(
            config["acme.domains"], ["mail.example.test mta-sts.example.test", "b.test"]
        )

    def test_policyHostsAreOrderedApartFromTheHostname(self):
        """Each mail domain's mta-sts.<domain> gets a certificate of its own
        (a domain whose record is not published yet fails only its order),
        unless acme.domains names it already; single-label domains get none."""
        config = load(
            environ={
                "MAILRAVEN_SERVER_HOSTNAME": "mail.example.test",
                "MAILRAVEN_SERVER_DOMAINS": "example.test,b.test,localhost",
            }
        )
        self.assertEqual(
            acmeCertificates(config),
            [
                ("mail.example.test",),
                ("mta-sts.example.test",),
                ("mta-sts.b.test",),
            ],
        )
        named = config.with_(acme__domains=["mail.example.test mta-sts.example.test"])
        self.assertEqual(
            acmeCertificates(named),
            [("mail.example.test", "mta-sts.example.test"), ("mta-sts.b.test",)],
        )

    def test_wildcardAndBadNamesAreRefused(self):
        for value in ("*.example.test", "bad_name.test", "-a.test"):
            with self.assertRaises(ConfigError) as e:
                load(environ={"MAILRAVEN_ACME_DOMAINS": value})
            self.assertIn("acme.domains", str(e.exception))


class OperatorReloadTests(TestCase):
    timeout = 60

    def test_badOperatorFileStopsStartUpNamingTheKey(self):
        own = os.path.abspath(self.mktemp())
        os.makedirs(own)
        path = os.path.join(own, "cert.pem")
        with open(path, "w") as f:
            f.write("not a certificate")
        with self.assertRaises(ConfigError) as e:
            RunningServer(self, tls__cert_file=path, tls__key_file=path)
        self.assertIn("tls.cert_file", str(e.exception))

    @defer.inlineCallbacks
    def test_changedFilesAreServedWithoutRestart(self):
        own = os.path.abspath(self.mktemp())
        cert, key = ensureSelfSigned(os.path.join(own, "one"), "one.example.test")
        server = RunningServer(
            self, tls__cert_file=cert, tls__key_file=key, tls__reload_interval=0.1
        )
        leaf = yield deferToThread(starttlsCertificate, server.smtpPort, None)
        self.assertEqual(dnsNames(leaf), ["one.example.test"])

        # A broken replacement is logged and the previous certificate kept.
        with open(cert + ".new", "w") as f:
            f.write("garbage")
        os.replace(cert + ".new", cert)
        yield sleep(0.3)
        self.flushLoggedErrors()
        leaf = yield deferToThread(starttlsCertificate, server.smtpPort, None)
        self.assertEqual(dnsNames(leaf), ["one.example.test"])
        self.assertIn("PEM", server.root.certificates.status()[0]["last_error"])

        newCert, newKey = ensureSelfSigned(os.path.join(own, "two"), "two.example.test")
        shutil.copy(newKey, key)
        shutil.copy(newCert, cert)
        yield sleep(0.3)
        leaf = yield deferToThread(starttlsCertificate, server.smtpPort, None)
        self.assertEqual(dnsNames(leaf), ["two.example.test"])


class ChallengeOnAPITests(TestCase):
    timeout = 30

    @defer.inlineCallbacks
    def test_apiListenerAnswersPendingChallengesOnly(self):
        server = RunningServer(self)
        server.root.challenges.add("tok-123", "tok-123.thumbprint")
        base = f"http://127.0.0.1:{server.apiPort}/.well-known/acme-challenge/"
        pool = HTTPConnectionPool(reactor, persistent=False)
        response = yield treq.get(base + "tok-123", pool=pool)
        self.assertEqual(response.code, 200)
        self.assertEqual((yield response.content()), b"tok-123.thumbprint")
        server.root.challenges.remove("tok-123")
        response = yield treq.get(base + "tok-123", pool=pool)
        self.assertEqual(response.code, 404)
        yield response.content()


class StopDuringOrderTests(SynchronousTestCase):
    def test_stoppingMidOrderIsNotAFailureAndWaitsForTheOrder(self):
        clock = Clock()
        data = os.path.abspath(self.mktemp())
        manager = CertificateManager(
            "", "", os.path.join(data, "ss"), "mx.example.test"
        )
        pending = defer.Deferred()
        cancelled = []

        def cancel():
            cancelled.append(True)
            pending.errback(AcmeProblem("stopped while waiting for validation"))

        issuer = AcmeIssuer(
            [("mail.example.test",)],
            manager,
            AcmeStore(os.path.join(data, "acme")),
            lambda names: pending,
            clock,
            renewBefore=datetime.timedelta(days=30),
            checkInterval=3600,
            retryInitial=60,
            retryMax=3600,
            cancel=cancel,
        )
        issuer.startService()
        clock.advance(0)  # the order is waiting on the "CA"
        stopped = issuer.stopService()
        self.assertEqual(cancelled, [True])
        if stopped is not None:  # here the order ended inside stopService
            self.successResultOf(stopped)
        [entry] = issuer.status()
        self.assertEqual((entry["failures"], entry["last_error"]), (0, None))

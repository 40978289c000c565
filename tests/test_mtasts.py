"""MTA-STS (RFC 8461) for outbound mail, for real: the policy is fetched over
verified HTTPS, the remote MX is a second MailRaven with a certificate from a
test CA, and DNS is an in-process twisted.names server."""

from __future__ import annotations

import os

from twisted.internet import reactor, ssl
from twisted.internet.defer import inlineCallbacks
from twisted.names import dns
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.resource import Resource
from twisted.web.server import Site
from twisted.web.static import Data

from mailraven.outbound.mtasts import STSPolicy, parsePolicy, recordId
from tests.dnszone import Zone, serveZone
from tests.helpers import RunningServer
from tests.test_mobile_api import APIClient
from tests.test_outbound import waitForOutbound
from tests.testca import TestCA


def attempted(status: dict) -> bool:
    return status["status"] != "queued"


ENFORCE = "version: STSv1\nmode: enforce\nmx: mx.remote.example\nmax_age: 86400\n"


class PolicyTests(SynchronousTestCase):
    def test_parseAndMatch(self):
        policy = parsePolicy(
            "version: STSv1\r\nmode: enforce\r\nmx: mx1.example.com\r\n"
            "mx: *.backup.example.com\r\nmax_age: 604800\r\n",
            "id1",
            1000.0,
        )
        self.assertTrue(policy.enforced)
        self.assertTrue(policy.allows("MX1.example.com."))
        self.assertTrue(policy.allows("a.backup.example.com"))
        self.assertFalse(policy.allows("a.b.backup.example.com"))
        self.assertFalse(policy.allows("mx2.example.com"))
        self.assertFalse(policy.expired(1000.0 + 604800))
        self.assertTrue(policy.expired(1000.0 + 604801))

    def test_badPoliciesAndRecords(self):
        for text in ("mode: enforce\nmx: a\nmax_age: 1", "version: STSv1\nmode: x"):
            with self.assertRaises(ValueError):
                parsePolicy(text, "i", 0)
        self.assertEqual(recordId([b"v=STSv1; id=20261125"]), "20261125")
        self.assertIsNone(recordId([b"v=STSv1; id=a", b"v=STSv1; id=b"]))
        self.assertIsNone(recordId([b"v=spf1 -all"]))
        self.assertIsInstance(parsePolicy(ENFORCE, "i", 0), STSPolicy)


class EnforcedDeliveryTests(TestCase):
    timeout = 60

    def setUp(self):
        self.ca = TestCA(os.path.abspath(self.mktemp()))

    def servePolicy(self, text: str, ca: TestCA | None = None) -> int:
        cert, key = (ca or self.ca).issue(["mta-sts.remote.example"])
        with open(key, "rb") as k, open(cert, "rb") as c:
            identity = ssl.PrivateCertificate.loadPEM(k.read() + c.read())
        wellKnown = Resource()
        wellKnown.putChild(b"mta-sts.txt", Data(text.encode(), "text/plain"))
        root = Resource()
        root.putChild(b".well-known", wellKnown)
        port = reactor.listenSSL(
            0, Site(root), identity.options(), interface="127.0.0.1"
        )
        self.addCleanup(port.stopListening)
        self.policyPort = port
        return port.getHost().port

    @inlineCallbacks
    def send(self, policy: str, remoteHasCertificate: bool = True, policyCA=None):
        mxTLS = {}
        if remoteHasCertificate:
            cert, key = self.ca.issue(["mx.remote.example"])
            mxTLS = dict(tls__cert_file=cert, tls__key_file=key)
        self.remote = RunningServer(
            self,
            server__hostname="mx.remote.example",
            server__domains=["remote.example"],
            **mxTLS,
        )
        yield self.remote.addUser("bob@remote.example")
        zone = Zone(
            {
                "remote.example": [(dns.MX, (10, "mx.remote.example"))],
                "mx.remote.example": [(dns.A, "127.0.0.1")],
                "_mta-sts.remote.example": [(dns.TXT, "v=STSv1; id=20261125")],
                "mta-sts.remote.example": [(dns.A, "127.0.0.1")],
            }
        )
        sender = self.sender = RunningServer(
            self,
            dns__nameservers=[f"127.0.0.1:{serveZone(self, zone)}"],
            queue__port=self.remote.smtpPort,
            queue__ca_bundle=self.ca.caPath,
            queue__mta_sts_port=self.servePolicy(policy, policyCA),
        )
        yield sender.addUser("alice@example.test")
        self.api = APIClient(self, sender.apiPort)
        yield self.api.login()
        sent = yield self.api.json(
            "POST",
            "/messages/send",
            {"to": ["bob@remote.example"], "subject": "sts", "body": "hi"},
            expect=202,
        )
        return (yield waitForOutbound(self.api, sent["id"], attempted))

    @inlineCallbacks
    def received(self):
        bob = APIClient(self, self.remote.apiPort)
        yield bob.login("bob@remote.example")
        return (yield bob.json("GET", "/messages"))["messages"]

    @inlineCallbacks
    def test_enforcedPolicyDeliversOverVerifiedTLS(self):
        status = yield self.send(ENFORCE)
        self.assertEqual(status["status"], "delivered", status)
        [message] = yield self.received()
        self.assertEqual(message["subject"], "sts")

    @inlineCallbacks
    def test_mxNotInThePolicyIsNotUsed(self):
        status = yield self.send(
            ENFORCE.replace("mx.remote.example", "*.other.example")
        )
        self.assertEqual(status["status"], "deferred", status)
        self.assertIn("MTA-STS", status["recipients"][0]["last_reply"])
        self.assertEqual((yield self.received()), [])

    @inlineCallbacks
    def test_unverifiableCertificateDefersNeverClearText(self):
        status = yield self.send(ENFORCE, remoteHasCertificate=False)
        self.assertEqual(status["status"], "deferred", status)
        self.assertIn("verified TLS required", status["recipients"][0]["last_reply"])
        self.assertEqual((yield self.received()), [])

    @inlineCallbacks
    def test_policyServedWithAnUntrustedCertificateIsIgnored(self):
        # RFC 8461 3.3: the policy host's certificate must verify; otherwise
        # there is no policy, and delivery stays opportunistic.
        stranger = TestCA(os.path.abspath(self.mktemp()), "not trusted")
        status = yield self.send(ENFORCE, remoteHasCertificate=False, policyCA=stranger)
        self.assertEqual(status["status"], "delivered", status)

    @inlineCallbacks
    def test_policyOutlivesARestartWhenItCannotBeFetched(self):
        status = yield self.send(ENFORCE)  # learns and stores the policy
        self.assertEqual(status["status"], "delivered", status)
        dataDir = self.sender.dataDir
        yield self.sender.stop()
        policyPort = self.policyPort.getHost().port
        yield self.policyPort.stopListening()  # an attacker blocks the fetch

        impostor = RunningServer(  # and answers for the MX without TLS proof
            self,
            server__hostname="mx.remote.example",
            server__domains=["remote.example"],
        )
        yield impostor.addUser("bob@remote.example")
        again = RunningServer(
            self,
            dataDir,
            dns__nameservers=self.sender.config["dns.nameservers"],
            queue__port=impostor.smtpPort,
            queue__ca_bundle=self.ca.caPath,
            queue__mta_sts_port=policyPort,
        )
        api = APIClient(self, again.apiPort)
        yield api.login()
        sent = yield api.json(
            "POST",
            "/messages/send",
            {"to": ["bob@remote.example"], "subject": "later", "body": "hi"},
            expect=202,
        )
        status = yield waitForOutbound(api, sent["id"], attempted)
        self.assertEqual(status["status"], "deferred", status)
        self.assertIn("verified TLS required", status["recipients"][0]["last_reply"])

"""The MTA-STS policy MailRaven serves for its own domains: fetched over real,
verified HTTPS from a running server (treq, and our own RFC 8461 client)."""

from __future__ import annotations

import os
import re

import treq
from twisted.internet import reactor, ssl
from twisted.internet.defer import inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, wrapClientTLS
from twisted.logger import globalLogPublisher
from twisted.names import client, dns
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.iweb import IAgentEndpointFactory
from zope.interface import implementer

from mailraven.api.stspolicy import PublishedPolicy, policyFromConfig
from mailraven.outbound.mtasts import MTASTS, parsePolicy
from mailraven.tls.selfsigned import SELF_SIGNED_CERT
from tests.dnszone import Zone, serveZone
from tests.helpers import RunningServer

POLICY_PATH = "/.well-known/mta-sts.txt"


class PublishedPolicyTests(SynchronousTestCase):
    def test_textIsTheRFC8461Format(self):
        policy = PublishedPolicy("testing", ("mail.example.org",), 86400)
        self.assertEqual(
            policy.text(),
            "version: STSv1\r\nmode: testing\r\nmx: mail.example.org\r\n"
            "max_age: 86400\r\n",
        )
        parsed = parsePolicy(policy.text(), policy.id, 0)
        self.assertEqual(
            (parsed.mode, parsed.mx, parsed.maxAge),
            ("testing", ("mail.example.org",), 86400),
        )

    def test_idChangesWithThePolicy(self):
        """Senders refetch only when the id changes (RFC 8461 3.1)."""
        base = PublishedPolicy("testing", ("mail.example.org",), 86400)
        others = [
            PublishedPolicy("enforce", ("mail.example.org",), 86400),
            PublishedPolicy("testing", ("mx.example.org",), 86400),
            PublishedPolicy("testing", ("mail.example.org",), 604800),
        ]
        ids = {base.id, *(p.id for p in others)}
        self.assertEqual(len(ids), 4)
        same = PublishedPolicy("testing", ("mail.example.org",), 86400)
        self.assertEqual(base.id, same.id)
        for policyId in ids:
            self.assertRegex(policyId, r"^[A-Za-z0-9]{1,32}$")
        self.assertEqual(base.record(), f"v=STSv1; id={base.id}")


@implementer(IAgentEndpointFactory)
class _ToLoopback:
    """Every URL to 127.0.0.1:C{port}, TLS verified for the URL's host
    against C{trustRoot} (the server's self-signed certificate)."""

    def __init__(self, port: int, trustRoot: ssl.Certificate) -> None:
        self._port = port
        self._trustRoot = trustRoot

    def endpointForURI(self, uri):
        tls = ssl.optionsForClientTLS(
            uri.host.decode("ascii"), trustRoot=self._trustRoot
        )
        return wrapClientTLS(tls, TCP4ClientEndpoint(reactor, "127.0.0.1", self._port))


def selfSigned(server: RunningServer) -> ssl.Certificate:
    with open(os.path.join(server.dataDir, "certs", SELF_SIGNED_CERT)) as f:
        return ssl.Certificate.loadPEM(f.read())


def httpsPort(server: RunningServer) -> int:
    return list(server.root.getServiceNamed("api"))[1].address.port


class ServedPolicyTests(TestCase):
    timeout = 60

    def setUp(self):
        self.server = RunningServer(
            self,
            api__listen=["tcp:0:interface=127.0.0.1", "tls:tcp:0:interface=127.0.0.1"],
        )
        pool = HTTPConnectionPool(reactor, persistent=False)
        agent = Agent.usingEndpointFactory(
            reactor,
            _ToLoopback(httpsPort(self.server), selfSigned(self.server)),
            pool=pool,
        )
        self.http = treq.client.HTTPClient(agent)

    @inlineCallbacks
    def get(self, host: str, path: str = POLICY_PATH, hostHeader: str | None = None):
        headers = {"Host": hostHeader} if hostHeader else None
        response = yield self.http.get(f"https://{host}{path}", headers=headers)
        body = yield response.content()
        return response, body

    @inlineCallbacks
    def test_policyServedOverVerifiedHTTPSForThePolicyHost(self):
        response, body = yield self.get("mta-sts.example.test")
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers.getRawHeaders("content-type"), ["text/plain"])
        policy = parsePolicy(body.decode("ascii"), "x", 0)
        self.assertEqual(
            (policy.mode, policy.mx, policy.maxAge),
            ("testing", ("mx.mailraven.test",), 86400),
        )
        self.assertEqual(body.decode(), policyFromConfig(self.server.config).text())

    @inlineCallbacks
    def test_otherHostsAndPathsAreNotFound(self):
        for host, path, header in [
            ("mx.mailraven.test", POLICY_PATH, None),
            ("mta-sts.example.test", POLICY_PATH, "mta-sts.elsewhere.example"),
            ("mta-sts.example.test", POLICY_PATH, "example.test"),
            ("mta-sts.example.test", POLICY_PATH, "mta-sts.localhost"),
            ("mta-sts.example.test", POLICY_PATH + "/more", None),
            ("mta-sts.example.test", "/.well-known/mta-sts.json", None),
        ]:
            response, body = yield self.get(host, path, header)
            self.assertEqual(response.code, 404, (host, path, header, body))
            self.assertNotIn(b"STSv1", body)

    @inlineCallbacks
    def test_hostMatchIgnoresCaseAndPort(self):
        port = httpsPort(self.server)
        response, body = yield self.get(
            "mta-sts.example.test", hostHeader=f"MTA-STS.Example.Test:{port}"
        )
        self.assertEqual(response.code, 200)
        self.assertIn(b"version: STSv1", body)

    @inlineCallbacks
    def test_ourOwnMTASTSClientAcceptsThePublishedRecordAndPolicy(self):
        """The TXT record the quickstart prints, the A record, the served
        policy and the certificate's names work together for an RFC 8461
        sender (the outbound queue's own client, verifying the certificate)."""
        published = policyFromConfig(self.server.config)
        zone = Zone(
            {
                "_mta-sts.example.test": [(dns.TXT, published.record())],
                "mta-sts.example.test": [(dns.A, "127.0.0.1")],
            }
        )
        resolver = client.Resolver(servers=[("127.0.0.1", serveZone(self, zone))])
        sender = MTASTS(
            lambda: resolver,
            reactor,
            selfSigned(self.server),
            httpsPort(self.server),
        )
        policy = yield sender.policyFor("example.test")
        self.assertIsNotNone(policy)
        self.assertEqual(policy.id, published.id)
        self.assertEqual(policy.mode, "testing")
        self.assertTrue(policy.allows("mx.mailraven.test"))


class ModeTests(TestCase):
    timeout = 60

    @inlineCallbacks
    def test_enforceModeFromConfigIsServed(self):
        server = RunningServer(self, mtasts__mode="enforce")
        response = yield treq.get(
            f"http://127.0.0.1:{server.apiPort}{POLICY_PATH}",
            headers={"Host": "mta-sts.example.test"},
            persistent=False,
        )
        body = yield response.text()
        self.assertEqual(response.code, 200)
        self.assertRegex(body, re.compile(r"^mode: enforce\r$", re.M))


class AnnouncedRecordTests(TestCase):
    timeout = 60

    def test_startLogsTheRecordToPublishForEachPolicyDomain(self):
        """After a change of mtasts.mode the operator needs the new id: the
        server says it at start (not for single-label domains)."""
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        server = RunningServer(self, mtasts__mode="enforce")
        announced = [e for e in events if e.get("event") == "mtasts_policy"]
        self.assertEqual([e["domain"] for e in announced], ["example.test"])
        self.assertEqual(
            announced[0]["record"], policyFromConfig(server.config).record()
        )
        self.assertEqual(announced[0]["mode"], "enforce")

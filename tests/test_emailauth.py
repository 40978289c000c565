"""Inbound SPF, DKIM and DMARC with records served by an in-process DNS
server: pass, fail and none land in Authentication-Results and in the API."""

from __future__ import annotations

import base64
import smtplib

import authres
import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread, deferToThreadPool
from twisted.names import dns
from twisted.trial.unittest import SynchronousTestCase, TestCase

from mailraven.policy.emailauth import AuthResults, resultDomain
from tests.dnszone import Zone, serveZone
from tests.helpers import RunningServer, sleep
from tests.test_mobile_api import APIClient


def rsaKey() -> tuple[bytes, str]:
    """(private PEM, public key base64 for the DKIM TXT record)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, base64.b64encode(public).decode()


KEY, PUBLIC = rsaKey()


def zone() -> Zone:
    dkimRecord = [(dns.TXT, f"v=DKIM1; k=rsa; p={PUBLIC}")]
    return Zone(
        {
            "sender.example": [(dns.TXT, "v=spf1 ip4:127.0.0.1 -all")],
            "fail.example": [(dns.TXT, "v=spf1 ip4:192.0.2.1 -all")],
            "_dmarc.fail.example": [(dns.TXT, "v=DMARC1; p=reject")],
            "soft.example": [(dns.TXT, "v=spf1 ~all")],
            "_dmarc.soft.example": [(dns.TXT, "v=DMARC1; p=none")],
            "signed.example": [(dns.TXT, "v=spf1 ip4:192.0.2.1 -all")],
            "_dmarc.signed.example": [(dns.TXT, "v=DMARC1; p=reject")],
            "sel._domainkey.signed.example": dkimRecord,
            "loose.example": [(dns.TXT, "v=spf1 ?all")],
            "_dmarc.loose.example": [(dns.TXT, "v=DMARC1; p=none")],
            "sel._domainkey.loose.example": dkimRecord,
        }
    )


def message(sender: str, subject: str, body: str = "hello\r\n") -> bytes:
    return (
        f"From: {sender}\r\nTo: alice@example.test\r\nSubject: {subject}\r\n"
        f"Date: Wed, 25 Nov 2026 10:00:00 +0000\r\n"
        f"Message-ID: <{subject.replace(' ', '-')}@test>\r\n\r\n{body}"
    ).encode()


def signed(raw: bytes, domain: str) -> bytes:
    signature = dkim.sign(
        raw,
        b"sel",
        domain.encode(),
        KEY,
        canonicalize=(b"relaxed", b"relaxed"),
        include_headers=[b"from", b"to", b"subject", b"date", b"message-id"],
    )
    return signature + raw


def deliver(port: int, mailFrom: str, raw: bytes) -> tuple[int, bytes]:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo("mta.sender.example")
        client.mail(mailFrom)
        client.rcpt("alice@example.test")
        try:
            return client.data(raw)
        except smtplib.SMTPDataError as e:
            return e.smtp_code, e.smtp_error


class EmailAuthTests(TestCase):
    timeout = 60

    @inlineCallbacks
    def setUp(self):
        port = serveZone(self, zone())
        self.server = RunningServer(
            self,
            mailauth__enabled=True,
            dns__nameservers=[f"127.0.0.1:{port}"],
        )
        yield self.server.addUser("alice@example.test")
        self.api = APIClient(self, self.server.apiPort)
        yield self.api.login()

    @inlineCallbacks
    def results(self, subject: str):
        listed = yield self.api.json("GET", "/messages")
        [found] = [m for m in listed["messages"] if m["subject"] == subject]
        full = yield self.api.json("GET", f"/messages/{found['id']}")
        [header] = [
            h["value"] for h in full["headers"] if h["name"] == "Authentication-Results"
        ]
        fields = (found["spf_result"], found["dkim_result"], found["dmarc_result"])
        return fields, " ".join(header.split())

    def send(self, mailFrom: str, raw: bytes):
        return deferToThread(deliver, self.server.smtpPort, mailFrom, raw)

    @inlineCallbacks
    def test_spfPassWithoutDKIMOrDMARC(self):
        code, _ = yield self.send(
            "bob@sender.example", message("bob@sender.example", "spf pass")
        )
        self.assertEqual(code, 250)
        fields, header = yield self.results("spf pass")
        self.assertEqual(fields, ("pass", "none", "none"))
        self.assertEqual(
            header,
            "mx.mailraven.test; spf=pass smtp.mailfrom=sender.example; dkim=none;"
            " dmarc=none header.from=sender.example",
        )

    @inlineCallbacks
    def test_dmarcRejectRefusesSPFFailure(self):
        code, text = yield self.send(
            "x@fail.example", message("x@fail.example", "forged")
        )
        self.assertEqual(code, 550)
        self.assertIn(b"5.7.1 Rejected by the DMARC policy of fail.example", text)
        listed = yield self.api.json("GET", "/messages")
        self.assertEqual(listed["messages"], [])

    @inlineCallbacks
    def test_alignedDKIMPassesDMARCDespiteSPFFail(self):
        raw = signed(message("news@signed.example", "dkim signed"), "signed.example")
        code, _ = yield self.send("bounce@signed.example", raw)
        self.assertEqual(code, 250)
        fields, header = yield self.results("dkim signed")
        self.assertEqual(fields, ("fail", "pass", "pass"))
        self.assertIn("dkim=pass header.d=signed.example", header)

    @inlineCallbacks
    def test_largeSignedMessageIsReadOnAThread(self):
        body = "a line of a long report, signed and sent\r\n" * 1000  # 41 KB
        raw = signed(message("news@signed.example", "large", body), "signed.example")
        code, _ = yield self.send("news@signed.example", raw)
        self.assertEqual(code, 250)
        fields, _ = yield self.results("large")
        self.assertEqual(fields, ("fail", "pass", "pass"))

    @inlineCallbacks
    def test_brokenSignatureFailsAndIsKeptUnderPNone(self):
        raw = signed(message("news@loose.example", "tampered"), "loose.example")
        raw = raw.replace(b"hello", b"HELLO")
        code, _ = yield self.send("news@loose.example", raw)
        self.assertEqual(code, 250)
        fields, header = yield self.results("tampered")
        self.assertEqual(fields, ("neutral", "fail", "fail"))
        self.assertIn("dkim=fail", header)

    @inlineCallbacks
    def test_softfailAndUnknownDomains(self):
        code, _ = yield self.send("a@soft.example", message("a@soft.example", "soft"))
        self.assertEqual(code, 250)
        fields, _ = yield self.results("soft")
        self.assertEqual(fields, ("softfail", "none", "fail"))
        code, _ = yield self.send(
            "a@nowhere.example", message("a@nowhere.example", "nx")
        )
        self.assertEqual(code, 250)
        fields, _ = yield self.results("nx")
        self.assertEqual(fields, ("none", "none", "none"))

    @inlineCallbacks
    def test_fromDomainCannotForgeResultsInOurHeader(self):
        """
        From: domains that are no domain names (a literal holding C{;} and a
        result, blanks, a quote, a control character) were copied into
        C{header.from=} and added results under our authserv-id.
        """
        forged = [
            "bob@[x;dmarc=pass]",
            "bob@[x dkim=pass header.d=bank.example]",
            'bob@[x"y;dkim=pass]',
            "bob@sender.example\x0b;dkim=pass",
        ]
        for number, sender in enumerate(forged):
            raw = message(sender, f"forged from {number}")
            code, _ = yield self.send("bob@sender.example", raw)
            self.assertEqual(code, 250)
            header = yield self.parsedResults(f"forged from {number}")
            self.assertEqual(header.authserv_id, "mx.mailraven.test")
            self.assertEqual(
                [(r.method, r.result, _properties(r)) for r in header.results],
                [
                    ("spf", "pass", [("smtp.mailfrom", "sender.example")]),
                    ("dkim", "none", []),
                    ("dmarc", "none", []),
                ],
                sender,
            )

    @inlineCallbacks
    def parsedResults(self, subject: str):
        """Our Authentication-Results of the message, parsed by authres."""
        _, header = yield self.results(subject)
        return authres.AuthenticationResultsHeader.parse_value(header)


def _properties(result) -> list[tuple[str, str]]:
    return [(f"{p.type}.{p.name}", p.value) for p in result.properties]


class MailAuthDNSTests(TestCase):
    """How mail-auth uses DNS: cached, off the file threads, within budget."""

    timeout = 60

    @inlineCallbacks
    def startServer(self, zone: Zone, **overrides):
        port = serveZone(self, zone)
        self.zone = zone
        if zone.delay:  # last cleanup: late answers arrive, queries end
            self.addCleanup(sleep, zone.delay + 0.5)
        self.server = RunningServer(
            self,
            mailauth__enabled=True,
            dns__nameservers=[f"127.0.0.1:{port}"],
            **overrides,
        )
        yield self.server.addUser("alice@example.test")
        self.api = APIClient(self, self.server.apiPort)
        yield self.api.login()

    def send(self, mailFrom: str, raw: bytes):
        return deferToThread(deliver, self.server.smtpPort, mailFrom, raw)

    @inlineCallbacks
    def fields(self):
        listed = yield self.api.json("GET", "/messages")
        return sorted(
            (m["spf_result"], m["dkim_result"], m["dmarc_result"])
            for m in listed["messages"]
        )

    @inlineCallbacks
    def test_secondMessageFromTheSameDomainAsksNothing(self):
        yield self.startServer(zone())
        for subject in ("one", "two"):
            code, _ = yield self.send(
                "bob@soft.example", message("bob@soft.example", subject)
            )
            self.assertEqual(code, 250)
            if subject == "one":
                asked = list(self.zone.asked)
        self.assertEqual(self.zone.asked, asked)
        self.assertIn(("soft.example", dns.TXT), asked)
        self.assertIn(("_dmarc.soft.example", dns.TXT), asked)
        self.assertEqual((yield self.fields()), [("softfail", "none", "fail")] * 2)

    @inlineCallbacks
    def test_slowDNSHoldsNoFileThread(self):
        """
        With one file thread and DNS answering after 1.5 s, store work still
        runs while the mail-auth lookups wait.
        """
        yield self.startServer(
            Zone(zone().records, delay=1.5), store__threads=1, dns__timeout=2.0
        )
        sent = self.send("bob@sender.example", message("bob@sender.example", "slow"))
        yield sleep(0.3)  # the session is in mail-auth now, waiting on DNS
        files = self.server.root.getServiceNamed("files").pool
        started = reactor.seconds()
        yield deferToThreadPool(reactor, files, lambda: None)
        self.assertLess(reactor.seconds() - started, 1.0)
        code, _ = yield sent
        self.assertEqual(code, 250)
        self.assertEqual((yield self.fields()), [("pass", "none", "none")])

    @inlineCallbacks
    def test_budgetSpentGivesTemperrorAndTheMessageIsTaken(self):
        yield self.startServer(
            Zone(zone().records, delay=1.5), mailauth__budget=0.5, dns__timeout=2.0
        )
        code, _ = yield self.send(
            "bob@sender.example", message("bob@sender.example", "late")
        )
        self.assertEqual(code, 250)
        [(spf, _, _)] = yield self.fields()
        self.assertEqual(spf, "temperror")

    @inlineCallbacks
    def test_brokenHeadersAreStoredNotDeferred(self):
        """
        A header line without a colon, and a message with no header at all,
        made dkimpy raise and the server answer 451 on every try.
        """
        yield self.startServer(zone())
        noColon = (
            b"From: bob@sender.example\r\nSubject: no colon\r\n"
            b"this line has no colon\r\n\r\nbody\r\n"
        )
        noHeader = b"just a body line\r\nand another\r\n"
        signedBroken = (
            b"DKIM-Signature: v=1; a=rsa-sha256; d=signed.example; s=sel;"
            b" h=from; bh=x; b=y\r\n" + noColon
        )
        for raw in (noColon, noHeader, signedBroken):
            code, text = yield self.send("bob@sender.example", raw)
            self.assertEqual((code, raw[:20]), (250, raw[:20]), text)
        found = yield self.fields()
        self.assertEqual(
            found,
            [
                ("pass", "none", "none"),
                ("pass", "none", "none"),
                ("pass", "permerror", "none"),
            ],
        )


class AuthResultsHeaderTests(SynchronousTestCase):
    """Every domain in our header is a plain token, whatever its source."""

    def parsed(self, results: AuthResults):
        results.authservId = "mx.mailraven.test"
        raw = results.header().decode("ascii")
        name, _, value = raw.partition(":")
        self.assertEqual(name, "Authentication-Results")
        self.assertTrue(raw.endswith("\r\n"))
        self.assertNotIn("\r\n", raw[:-2].replace("\r\n\t", ""))  # folded only
        header = authres.AuthenticationResultsHeader.parse_value(
            " ".join(value.split())
        )
        return [(r.method, r.result, _properties(r)) for r in header.results]

    def test_dkimDomainsFromDNSAreCheckedToo(self):
        """DNS labels may hold any octet: a d= that verified is no safe token."""
        found = self.parsed(
            AuthResults(
                dkim="pass", dkimDomains=["Signed.Example", "x (a); dmarc=pass"]
            )
        )
        self.assertEqual(
            found,
            [
                ("spf", "none", []),
                ("dkim", "pass", [("header.d", "signed.example")]),
                ("dkim", "pass", []),
                ("dmarc", "none", []),
            ],
        )

    def test_heloIdentityAndLiteralAndIDN(self):
        found = self.parsed(
            AuthResults(
                spf="pass",
                spfDomain="mta.example",
                spfScope="helo",
                dmarc="pass",
                fromDomain="bücher.example",
            )
        )
        self.assertEqual(found[0], ("spf", "pass", [("smtp.helo", "mta.example")]))
        self.assertEqual(
            found[2], ("dmarc", "pass", [("header.from", "xn--bcher-kva.example")])
        )
        literal = self.parsed(AuthResults(spf="none", spfDomain="[192.0.2.1]"))
        self.assertEqual(literal[0], ("spf", "none", []))

    def test_resultDomain(self):
        for bad in ("", "a..b", "-a.example", "a b", "a\r\nb", "a;b", "[1.2.3.4]"):
            self.assertIsNone(resultDomain(bad), bad)
        self.assertEqual(resultDomain("_dmarc.Example.ORG"), "_dmarc.example.org")

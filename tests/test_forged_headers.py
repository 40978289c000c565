"""A From: field a peer hides from the DMARC check behind a bare CR must not
reach readers unjudged: DMARC judges the From that the API shows."""

from __future__ import annotations

from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.names import dns
from twisted.trial.unittest import TestCase

from tests.dnszone import Zone, serveZone
from tests.helpers import RunningServer, sendWithSmtplib
from tests.test_mobile_api import APIClient

# dkimpy ends header lines at CRLF only and reads this as one Subject line
# without a From; the email package (the API, the store's metadata, the
# removal of forged Authentication-Results) also ends a line at a bare CR and
# reads a From of a domain whose DMARC policy is reject.
HIDDEN_FROM = (
    b"Subject: quarterly report\rFrom: CEO <ceo@bank.example>\r\n"
    b"To: alice@example.test\r\n\r\nPlease pay the attached invoice.\r\n"
)
VISIBLE_FROM = HIDDEN_FROM.replace(b"report\rFrom", b"report\r\nFrom")


class BareCRFromTests(TestCase):
    timeout = 60

    @inlineCallbacks
    def setUp(self):
        port = serveZone(
            self,
            Zone(
                {
                    "bank.example": [(dns.TXT, "v=spf1 ip4:192.0.2.1 -all")],
                    "_dmarc.bank.example": [(dns.TXT, "v=DMARC1; p=reject")],
                }
            ),
        )
        self.server = RunningServer(
            self, mailauth__enabled=True, dns__nameservers=[f"127.0.0.1:{port}"]
        )
        yield self.server.addUser("alice@example.test")
        self.api = APIClient(self, self.server.apiPort)
        yield self.api.login()

    def send(self, raw: bytes):
        return deferToThread(
            sendWithSmtplib,
            self.server.smtpPort,
            "mallory@example.org",
            ["alice@example.test"],
            raw,
        )

    @inlineCallbacks
    def test_fromAfterABareCRIsJudgedByDMARCLikeAVisibleOne(self):
        for raw in (VISIBLE_FROM, HIDDEN_FROM):
            _, (code, reply) = yield self.send(raw)
            self.assertEqual(code, 550, raw)
            self.assertIn(b"DMARC policy of bank.example", reply)
        listed = yield self.api.json("GET", "/messages")
        self.assertEqual(listed["messages"], [])

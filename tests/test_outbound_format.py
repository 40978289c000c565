"""What leaves and what comes back, read by independent parsers: outgoing mail
as Debian's Postfix stored it (checked with dkimpy), and the DSNs the queue
writes (read with the email package and flufl.bounce, a bounce parser of
its own)."""

from __future__ import annotations

import email
import re
import time
from datetime import UTC, datetime
from email import policy

import dkim
from flufl.bounce._detectors.dsn import DSN
from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.names import dns
from twisted.trial.unittest import SynchronousTestCase

from mailraven.envelope import Envelope, Recipient
from mailraven.outbound.dsn import RecipientReport, buildDSN
from mailraven.outbound.state import DeliveryReply
from mailraven.spool import memorySpool
from tests.dnszone import SERVFAIL
from tests.helpers import PASSWORD, sleep
from tests.test_outbound import ClockedQueueCase, OutboundCase, waitForOutbound
from tests.test_submission import submit


def parse(raw: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(raw, policy=policy.default)


def statusBlocks(report: email.message.Message) -> list[email.message.Message]:
    """The message/delivery-status part's field blocks (the email package
    parses that type into one Message per block)."""
    [part] = [p for p in report.walk() if p.get_content_type().endswith("-status")]
    return part.get_payload()


def rfc3464Failures(report: email.message.Message) -> tuple[frozenset, frozenset]:
    """(delayed, failed) addresses as flufl.bounce's RFC 3464 detector reads
    them; its C{all_failures} would fall back to heuristics on the text."""
    return DSN().process(report)


def unfolded(value: str) -> str:
    return re.sub(r"\r?\n[ \t]+", " ", value)


class DSNChecks:
    """Checks every DSN must pass, whatever it reports."""

    @inlineCallbacks
    def dsns(self, count: int, timeout: float = 15):
        """The raw DSNs in the sender's inbox, once C{count} are there."""
        deadline = time.monotonic() + timeout
        while True:
            listed = yield self.api.json("GET", "/messages")
            found = [m for m in listed["messages"] if m["mailbox"] == "inbox"]
            if len(found) >= count or time.monotonic() > deadline:
                break
            yield sleep(0.1)
        self.assertEqual(len(found), count, found)
        raws = []
        for entry in sorted(found, key=lambda m: m["id"]):
            full = yield self.api.json("GET", f"/messages/{entry['id']}")
            raws.append(full["body"].encode("utf-8"))
        return raws

    def checkDSN(self, raw: bytes) -> email.message.EmailMessage:
        """RFC 3464/6522 structure, as stored; returns the parsed report."""
        self.assertTrue(raw.startswith(b"Return-Path: <>\r\n"), raw[:200])
        self.assertEqual(raw.lower().count(b"return-path:"), 1)
        for bad in (b"=3D", b"<Message", b"rCode", b"Traceback", b"0.0 days"):
            self.assertNotIn(bad, raw)
        self.assertTrue(raw.isascii())
        report = parse(raw)
        self.assertEqual(report.get_content_type(), "multipart/report")
        self.assertEqual(report.get_param("report-type"), "delivery-status")
        self.assertEqual(
            [p.get_content_type() for p in report.iter_parts()],
            ["text/plain", "message/delivery-status", "text/rfc822-headers"],
        )
        [status] = [p for p in report.iter_parts() if p.is_multipart()]
        self.assertIsNone(status["Content-Transfer-Encoding"])
        perMessage, *perRecipient = statusBlocks(report)
        self.assertEqual(perMessage["Reporting-MTA"], "dns; mx.mailraven.test")
        self.assertIsNotNone(
            email.utils.parsedate_to_datetime(perMessage["Arrival-Date"])
        )
        self.assertTrue(perRecipient)
        for block in perRecipient:
            self.assertRegex(block["Final-Recipient"], r"^rfc822; \S+@\S+$")
            self.assertIn(block["Action"], ("failed", "delayed"))
            self.assertRegex(block["Status"], r"^[245]\.\d{1,3}\.\d{1,3}$")
            diagnostic = block["Diagnostic-Code"]
            if block["Remote-MTA"] is None:
                # our own verdict, not words of an SMTP server
                self.assertTrue(
                    diagnostic is None or diagnostic.startswith("x-mailraven;")
                )
            else:
                self.assertRegex(unfolded(diagnostic), r"^smtp; [245]\d\d ")
        return report

    def recipientBlock(self, report, address: str) -> dict[str, str]:
        blocks = {
            b["Final-Recipient"]: {k: unfolded(v) for k, v in b.items()}
            for b in statusBlocks(report)[1:]
        }
        return blocks[f"rfc822; {address}"]


class DSNFormatTests(DSNChecks, OutboundCase):
    @inlineCallbacks
    def test_remoteRefusalIsReportedWithTheServersReply(self):
        yield self.startServer()
        self.postfix.start()
        sent = yield self.api.json(
            "POST",
            "/messages/send",
            {
                "to": ["reject@remote.example"],
                "subject": "bounces: a=b",
                "body": "x" * 100,
            },
            expect=202,
        )
        yield self.waitForStatus(sent["id"], "failed")
        [raw] = yield self.dsns(1)
        report = self.checkDSN(raw)
        self.assertEqual(
            rfc3464Failures(report),
            (frozenset(), frozenset({b"reject@remote.example"})),
        )
        block = self.recipientBlock(report, "reject@remote.example")
        self.assertEqual(block["Action"], "failed")
        self.assertEqual(block["Status"], "5.1.1")
        self.assertEqual(block["Remote-MTA"], "dns; mx.remote.example")
        self.assertRegex(
            block["Diagnostic-Code"],
            r"^smtp; 550 5\.1\.1 <reject@remote\.example>: .*No such user here$",
        )
        text = report.get_body(("plain",)).get_content()
        self.assertIn("<reject@remote.example>: host mx.remote.example said: 550", text)
        [headers] = [
            p
            for p in report.iter_parts()
            if p.get_content_type() == "text/rfc822-headers"
        ]
        self.assertIn("Subject: bounces: a=b", headers.get_content())

    @inlineCallbacks
    def test_ourOwnVerdictIsNoSMTPDiagnostic(self):
        yield self.startServer()
        sent = yield self.api.json(
            "POST",
            "/messages/send",
            {
                "to": ["x@nullmx.example", "y@nxdomain.example"],
                "subject": "s",
                "body": "b",
            },
            expect=202,
        )
        yield self.waitForStatus(sent["id"], "failed")
        blocks = {}
        for raw in (yield self.dsns(2)):  # one per recipient domain
            self.assertNotIn(b"smtp;", raw)
            report = self.checkDSN(raw)
            [address] = rfc3464Failures(report)[1]
            blocks[address] = self.recipientBlock(report, address.decode())
        self.assertEqual(set(blocks), {b"x@nullmx.example", b"y@nxdomain.example"})
        for block in blocks.values():
            self.assertNotIn("Remote-MTA", block)
            self.assertEqual(block["Status"][:2], "5.")
        self.assertEqual(
            blocks[b"x@nullmx.example"]["Diagnostic-Code"],
            "x-mailraven; nullmx.example: null MX, accepts no mail",
        )
        self.assertEqual(
            blocks[b"y@nxdomain.example"]["Diagnostic-Code"],
            "x-mailraven; nxdomain.example: no such domain (NXDOMAIN)",
        )

    @inlineCallbacks
    def test_mailThatCannotBeSignedFailsAtOnce(self):
        """Queued mail dkimpy cannot parse (a header line without a colon) is
        not retried for days: it fails with 554 5.6.0 and a DSN."""
        yield self.startServer()
        self.postfix.start()
        userId = yield self.server.root.store._db.read(
            lambda c: c.execute(
                "SELECT id FROM users WHERE email = 'alice@example.test'"
            ).fetchone()[0]
        )
        envelope = Envelope(
            mailFrom="alice@example.test",
            recipients=[Recipient("alice@example.test", userId)],
            mailbox="sent",
            seen=True,
            outbound=["bob@remote.example"],
        )
        raw = (
            b"From: alice@example.test\r\nSubject: broken\r\n"
            b"this line has no colon\r\nTo: bob@remote.example\r\n\r\nbody\r\n"
        )
        messageId = yield self.server.root.store.deliver(envelope, memorySpool(raw))
        status = yield waitForOutbound(
            self.api, messageId, lambda s: s["recipients"][0]["attempts"] > 0
        )
        [recipient] = status["recipients"]
        self.assertEqual((status["status"], recipient["attempts"]), ("failed", 1))
        self.assertTrue(recipient["last_reply"].startswith("554 5.6.0 "), recipient)
        [dsn] = yield self.dsns(1)
        block = self.recipientBlock(self.checkDSN(dsn), "bob@remote.example")
        self.assertEqual(block["Status"], "5.6.0")
        self.assertEqual(self.postfix.delivered(), [])


class DSNAgeTests(DSNChecks, ClockedQueueCase):
    @inlineCallbacks
    def test_delayNoticeThenGiveUpSayTheirAgeInWords(self):
        self.postfix.start()
        yield self.api.json(
            "POST",
            "/messages/send",
            {"to": ["defer@remote.example"], "subject": "stuck", "body": "b"},
            expect=202,
        )
        yield self.queue.runOnce()
        self.clock.advance(4 * 3600 + 1)
        yield self.queue.runOnce()
        [delayed] = yield self.dsns(1)
        report = self.checkDSN(delayed)
        self.assertEqual(
            rfc3464Failures(report), (frozenset({b"defer@remote.example"}), frozenset())
        )
        block = self.recipientBlock(report, "defer@remote.example")
        self.assertEqual((block["Action"], block["Status"]), ("delayed", "4.3.0"))
        self.assertIn("Will-Retry-Until", block)
        self.assertTrue(block["Diagnostic-Code"].startswith("smtp; 451 4.3.0 "))
        self.assertIn(
            "(delayed for 4 hours)", report.get_body(("plain",)).get_content()
        )

        self.clock.advance(5 * 86400)
        yield self.queue.runOnce()
        delayedAgain, failed = yield self.dsns(2)
        report = self.checkDSN(failed)
        self.assertEqual(
            rfc3464Failures(report), (frozenset(), frozenset({b"defer@remote.example"}))
        )
        text = report.get_body(("plain",)).get_content()
        self.assertIn("(gave up after 5 days)", text)

    @inlineCallbacks
    def test_dnsServerFailureIsRetriedAndSaidInWords(self):
        self.zone.add("servfail.example", dns.MX, SERVFAIL)
        sent = yield self.api.json(
            "POST",
            "/messages/send",
            {"to": ["x@servfail.example"], "subject": "s", "body": "b"},
            expect=202,
        )
        yield self.queue.runOnce()
        self.clock.advance(4 * 3600 + 1)
        yield self.queue.runOnce()
        self.assertEqual((yield self.attempts(sent["id"])), [("deferred", 2)])
        [delayed] = yield self.dsns(1)
        report = self.checkDSN(delayed)
        block = self.recipientBlock(report, "x@servfail.example")
        self.assertEqual(block["Action"], "delayed")
        self.assertEqual(
            block["Diagnostic-Code"],
            "x-mailraven; servfail.example: MX lookup failed:"
            " DNS server failure (SERVFAIL)",
        )


class AsReceivedTests(OutboundCase):
    """Submitted mail as the remote MX stored it."""

    timeout = 120

    @inlineCallbacks
    def test_submittedMailAsTheRemoteGotIt(self):
        yield self.startServer()
        self.postfix.start()
        # the client sends From, To and Subject only: no Date, no Message-ID
        code, refused, data = yield deferToThread(
            submit,
            self.server.submissionPort,
            "alice@example.test",
            PASSWORD,
            "alice@example.test",
            ["bob@remote.example"],
        )
        self.assertEqual((code, refused, data), (235, {}, 250))
        [raw] = yield deferToThread(self.postfix.waitFor, 1)
        # only the Return-Path the receiving MTA wrote, none of ours
        self.assertEqual(raw.lower().count(b"return-path:"), 1)
        self.assertTrue(raw.startswith(b"Return-Path: <alice@example.test>\n"))
        message = parse(raw)
        [ours] = [r for r in message.get_all("Received") if "by mx.mailraven.test" in r]
        self.assertIn("for <bob@remote.example>", ours)
        self.assertNotIn("alice", ours)
        self.assertIn("Date", message)  # added by submission
        self.assertIsNotNone(email.utils.parsedate_to_datetime(message["Date"]))
        self.assertRegex(str(message["Message-ID"]), r"^<\S+@mx\.mailraven\.test>$")
        signature = unfolded(str(message["DKIM-Signature"]))
        signed = re.search(r"\bh=([^;]+)", signature).group(1)
        names = {n.strip().lower() for n in signed.split(":")}
        self.assertLessEqual({"from", "to", "subject", "date", "message-id"}, names)
        self.assertTrue(dkim.verify(raw, dnsfunc=self.dnsTXT), raw[:800])

    @inlineCallbacks
    def test_lastReplyIsTheReplyToTheDataWithTheRemoteQueueId(self):
        yield self.startServer()
        self.postfix.start()
        sent = yield self.api.json(
            "POST",
            "/messages/send",
            {"to": ["bob@remote.example"], "subject": "s", "body": "b"},
            expect=202,
        )
        status = yield self.waitForStatus(sent["id"], "delivered")
        [recipient] = status["recipients"]
        found = re.fullmatch(
            r"250 2\.0\.0 Ok: queued as (\w+)", recipient["last_reply"]
        )
        self.assertIsNotNone(found, recipient)
        [raw] = yield deferToThread(self.postfix.waitFor, 1)
        [theirs] = [
            r for r in parse(raw).get_all("Received") if "by mx.remote.example" in r
        ]
        self.assertIn(f"id {found.group(1)}", unfolded(theirs))


class DSNTextTests(SynchronousTestCase):
    """Remote words that used to break the fields: long, with C{=}, 8-bit."""

    def test_longRemoteReplyIsFoldedAndReadsBackWhole(self):
        when = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
        detail = "see https://mx.example/why?id=42&x=y " + "blocked " * 20 + "café"
        raw = buildDSN(
            "mx.mailraven.test",
            "alice@example.test",
            b"Subject: a=b\r\n\r\nbody\r\n",
            [
                RecipientReport(
                    "bob@remote.example",
                    "failed",
                    DeliveryReply(550, f"5.7.1 {detail}", "mx.remote.example"),
                )
            ],
            arrivedAt=when,
            attemptedAt=when,
        )
        report = parse(raw)
        self.assertNotIn(b"=3D", raw.split(b"message/delivery-status")[1])
        self.assertEqual(
            rfc3464Failures(report), (frozenset(), frozenset({b"bob@remote.example"}))
        )
        [block] = statusBlocks(report)[1:]
        self.assertEqual(
            unfolded(block["Diagnostic-Code"]),
            f"smtp; 550 5.7.1 {detail[:-1]}?",  # printable ASCII only
        )
        statusLines = raw.split(b"message/delivery-status\r\n")[1].split(b"\r\n--")[0]
        self.assertLessEqual(max(map(len, statusLines.split(b"\r\n"))), 78)
        # the text for people keeps the é (quoted-printable, decoded back)
        self.assertIn(detail, report.get_body(("plain",)).get_content())

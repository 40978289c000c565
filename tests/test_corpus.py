"""Damaged real-world mail (tests/corpus) through SMTP, stored and readable.

The server runs its default configuration (mail-auth on, store workers),
with a loopback DNS server that knows no name: every SPF/DKIM/DMARC lookup
is NXDOMAIN, as for most senders of such mail. Each message must get 250 (or
a permanent 5xx of a documented policy: L{REFUSED}), never a 4xx for what it
is; be stored byte for byte after our headers; and be listed, shown and found
by the mobile API with 200 and JSON.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import orjson
from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.test.requesthelper import DummyRequest

from mailraven.api.http import writeJSON
from mailraven.api.mobile import _fullMessage
from mailraven.policy.emailauth import checkDKIM
from mailraven.store.metadata import extractMetadata
from tests.corpus.generate import HERE, Case, cases, checkWireable
from tests.dnszone import Zone, serveZone
from tests.helpers import RunningServer, sendWithSmtplib
from tests.test_mobile_api import APIClient
from tests.test_smtp_e2e import storedMessage

HOSTNAME = "mx.mailraven.test"
OURS = f"Authentication-Results: {HOSTNAME};".encode()

# name -> (code, why): messages a documented policy refuses. None today.
REFUSED: dict[str, tuple[int, str]] = {}


class CorpusFilesTests(SynchronousTestCase):
    def test_filesAreTheGeneratorsOutput(self):
        """The .eml files are what generate.py makes (regenerate after edits)."""
        for case in cases():
            checkWireable(case)
            with open(os.path.join(HERE, case.filename), "rb") as f:
                self.assertEqual(f.read(), case.raw, case.filename)

    def test_thereAreNoStrayFiles(self):
        names = {case.filename for case in cases()}
        onDisk = {n for n in os.listdir(HERE) if n.endswith(".eml")}
        self.assertEqual(onDisk, names)

    def test_readmeDescribesEveryFile(self):
        with open(os.path.join(HERE, "README.md")) as f:
            readme = f.read()
        for case in cases():
            self.assertIn(f"`{case.filename}`", readme)


TRACE = (
    b"Return-Path: <bob@example.org>\r\n"
    b"Received: from c ([127.0.0.1])\r\n\tby mx.mailraven.test; date\r\n"
)


class CorpusStagesTests(SynchronousTestCase):
    """Each stage a received message passes, on every case, without a server."""

    def test_dkimCheckNeverRaises(self):
        """dkimpy refuses some headers (MessageFormatError): no 451 for them."""
        outcomes = {case.name: checkDKIM(TRACE + case.raw, {})[0] for case in cases()}
        self.assertEqual(outcomes["01-header-line-without-colon"], "none")
        self.assertEqual(outcomes["02-no-header-body-only"], "none")
        self.assertEqual(
            checkDKIM(b"DKIM-Signature: v=1\r\nno colon\r\n\r\n", {}),
            ("permerror", []),
        )
        self.assertEqual(set(outcomes.values()) - {"none", "fail", "permerror"}, set())

    def test_whatTheAPIShowsIsJSON(self):
        """No lone surrogate (undecoded 8-bit octets) in metadata or the view."""
        for case in cases():
            meta = extractMetadata(TRACE + case.raw)
            fields = dataclasses.asdict(meta)
            fields.pop("headers")
            orjson.dumps(fields)
            orjson.dumps(_fullMessage(TRACE + case.raw))

    def test_eightBitHeadersAreShownDecoded(self):
        [case] = [c for c in cases() if c.name == "09-8bit-in-headers"]
        view = _fullMessage(case.raw)
        [sender] = [h["value"] for h in view["headers"] if h["name"] == "From"]
        self.assertEqual(sender, "J\u00f6rg M\u00fcller <joerg@example.org>")

    def test_eightBitAttachmentNameIsShownDecoded(self):
        [case] = [c for c in cases() if c.name == "48-attachment-names-broken"]
        names = [a["filename"] for a in _fullMessage(case.raw)["attachments"]]
        self.assertEqual(names[0], "Rechnung M\u00e4rz.pdf")

    def test_jsonOfALoneSurrogateIsStillJSON(self):
        request = DummyRequest([b""])
        data = writeJSON(request, 200, {"subject": "a\udcff b", 1: "c"})
        self.assertEqual(json.loads(data), {"subject": "a? b", "1": "c"})
        self.assertEqual(request.responseCode, 200)


class CorpusThroughSMTPTests(TestCase):
    timeout = 120
    maxDiff = None
    overrides: dict[str, Any] = {}

    @inlineCallbacks
    def setUp(self):
        port = serveZone(self, Zone({}))
        self.server = RunningServer(
            self,
            mailauth__enabled=True,  # the default, which testConfig turns off
            api__rate_limit=1_000_000,  # hundreds of reads; limits are not tested here
            dns__nameservers=[f"127.0.0.1:{port}"],
        )
        yield self.server.addUser("alice@example.test")
        self.api = APIClient(self, self.server.apiPort)
        yield self.api.login()
        self.since = "2000-01-01T00:00:00Z"

    @inlineCallbacks
    def test_everyMessageIsStoredAndReadable(self):
        problems: list[str] = []
        for case in cases():
            try:
                found = yield self.deliverAndRead(case)
            except Exception as e:  # noqa: BLE001 - reported with the case
                found = [f"{e.__class__.__name__}: {e}"]
            problems += [f"{case.name}: {problem}" for problem in found]
        entries = yield self.everyEntry()
        if not problems:
            self.assertEqual(len(entries), len(cases()) - len(REFUSED))
        self.assertEqual(problems, [])

    @inlineCallbacks
    def test_forgedAuthenticationResultsAreRemoved(self):
        """
        RFC 8601 5: a field of our authserv-id that came with the message is
        gone (folded lines and all), another server's stays, ours is there once.
        """
        raw = (
            b"Authentication-Results: MX.MAILRAVEN.TEST;\r\n\tdkim=pass"
            b" header.d=bank.example;\r\n\tdmarc=pass header.from=bank.example\r\n"
            b"Authentication-Results: mx.upstream.example; spf=pass\r\n"
            b"From: bank@bank.example\r\nSubject: forged results\r\n"
            b"X-A: 1\rAuthentication-Results: mx.mailraven.test 1; dkim=pass\r\n"
            b"\r\nAuthentication-Results: mx.mailraven.test; in the body\r\n"
        )
        _, (code, reply) = yield deferToThread(
            sendWithSmtplib,
            self.server.smtpPort,
            "bob@example.org",
            ["alice@example.test"],
            raw,
        )
        self.assertEqual(code, 250)
        stored = yield deferToThread(
            storedMessage, self.server.dataDir, reply.split()[-1].decode()
        )
        self.assertTrue(
            stored.endswith(
                b"Authentication-Results: mx.upstream.example; spf=pass\r\n"
                b"From: bank@bank.example\r\nSubject: forged results\r\n"
                # the bare CR before the removed field is made CRLF: no reader
                # takes the body's first line for a header field
                b"X-A: 1\r\n"
                b"\r\nAuthentication-Results: mx.mailraven.test; in the body\r\n"
            ),
            stored,
        )
        self.assertNotIn(b"bank.example;", stored)
        listed = yield self.api.json("GET", "/messages")
        [summary] = listed["messages"]
        full = yield self.api.json("GET", f"/messages/{summary['id']}")
        results = [
            " ".join(h["value"].split())
            for h in full["headers"]
            if h["name"].lower() == "authentication-results"
        ]
        self.assertEqual(
            results,
            [
                "mx.mailraven.test; spf=none smtp.mailfrom=example.org; dkim=none;"
                " dmarc=none header.from=bank.example",
                "mx.upstream.example; spf=pass",
            ],
        )

    @inlineCallbacks
    def deliverAndRead(self, case: Case):
        """The problems found with C{case}, from SMTP to the API."""
        refused, (code, reply) = yield deferToThread(
            sendWithSmtplib,
            self.server.smtpPort,
            "bob@example.org",
            ["alice@example.test"],
            case.raw,
        )
        if case.name in REFUSED:
            expected = REFUSED[case.name][0]
            return [] if code == expected else [f"{code} {reply!r}, not {expected}"]
        if refused or code != 250:
            return [f"SMTP {refused or code} {reply!r}"]
        problems = []
        stored = yield deferToThread(
            storedMessage, self.server.dataDir, reply.split()[-1].decode()
        )
        sent = case.raw if case.raw.endswith(b"\r\n") else case.raw + b"\r\n"
        if not stored.endswith(sent):
            problems.append("stored bytes do not end with the message sent")
        if stored.count(OURS) != 1:
            problems.append(f"{stored.count(OURS)} Authentication-Results of ours")
        problems += yield self.readThroughAPI(case, sent)
        return problems

    @inlineCallbacks
    def readThroughAPI(self, case: Case, sent: bytes):
        problems = []
        changed = yield self.api.json("GET", "/messages/since", since=self.since)
        self.since = changed["next_since"]
        if changed["count"] != 1:
            return [f"/messages/since gave {changed['count']} entries, not 1"]
        [summary] = changed["messages"]
        full = yield self.api.json("GET", f"/messages/{summary['id']}")
        if not full["body"].endswith(sent.decode("utf-8", "replace")):
            problems.append("the API's body is not the message sent")
        if summary["dkim_result"] not in ("none", "fail", "permerror"):
            problems.append(f"dkim_result {summary['dkim_result']}")
        listed = yield self.api.json(
            "GET", "/messages", mailbox=summary["mailbox"], limit="1000"
        )
        if summary["id"] not in [m["id"] for m in listed["messages"]]:
            problems.append(f"not listed in {summary['mailbox']}")
        found = yield self.api.json("GET", "/messages/search", q=case.word or "body")
        if case.word and summary["id"] not in [m["id"] for m in found["results"]]:
            problems.append(f"search for {case.word} does not find it")
        return problems

    @inlineCallbacks
    def everyEntry(self) -> Any:
        entries = []
        for mailbox in ("inbox", "junk"):
            listed = yield self.api.json(
                "GET", "/messages", mailbox=mailbox, limit="1000"
            )
            entries += listed["messages"]
        return entries


class CorpusOnFileThreadsTests(CorpusThroughSMTPTests):
    """The same with no store workers: messages are prepared on file threads."""

    overrides = {"store__workers": 0}

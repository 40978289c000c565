"""Two accounts on one server: every /api/v1 path that reads mail shows
alice her own mail and never bob's (docs/api.md, the OpenAPI document).

Each read path is asked with alice's token for everything it can give;
bob's entry ids, his words and his sent message must appear nowhere, while
alice's own mail must (so a path that returns nothing cannot pass)."""

from __future__ import annotations

import json

from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from mailraven.api.openapi import document
from tests.helpers import RunningServer
from tests.test_events import SSE
from tests.test_mobile_api import APIClient, deliver

BOBS_WORD = "zanzibarquux"
ALICES_WORD = "alicewordplain"
EPOCH = "2000-01-01T00:00:00Z"
# Every mail-reading path of the OpenAPI document, and the test below that
# covers it; a new path fails test_everyReadPathIsCovered until added here.
READ_PATHS = {
    ("get", "/v1/messages"),
    ("get", "/v1/messages/since"),
    ("get", "/v1/messages/search"),
    ("get", "/v1/messages/{entryId}"),
    ("patch", "/v1/messages/{entryId}"),
    ("delete", "/v1/messages/{entryId}"),
    ("get", "/v1/outbound/{messageId}"),
    ("get", "/v1/account"),
    ("get", "/v1/events"),
    ("get", "/v1/folders"),  # test_foldersAreTheAccountsOwn, and the three below
    ("post", "/v1/folders"),
    ("patch", "/v1/folders/{key}"),
    ("delete", "/v1/folders/{key}"),
}
NOT_MAIL = {
    ("post", "/v1/auth/login"),
    ("post", "/v1/auth/logout"),
    ("post", "/v1/messages/send"),
    ("get", "/v1/openapi.json"),
}


class TwoAccountIsolationTests(TestCase):
    timeout = 120

    @inlineCallbacks
    def setUp(self):
        self.server = RunningServer(self)
        yield self.server.addUser("alice@example.test")
        yield self.server.addUser("bob@example.test")
        port = self.server.smtpPort
        yield deferToThread(deliver, port, [(ALICES_WORD, f"for {ALICES_WORD}")])
        yield deferToThread(
            deliver,
            port,
            [(BOBS_WORD, f"private {BOBS_WORD}"), ("second", BOBS_WORD)],
            "bob@example.test",
        )
        self.bob = APIClient(self, self.server.apiPort)
        yield self.bob.login("bob@example.test")
        self.bobSent = yield self.bob.json(
            "POST",
            "/messages/send",
            {"to": ["x@elsewhere.example"], "subject": BOBS_WORD, "body": BOBS_WORD},
            expect=202,
        )
        bobs = yield self.bob.json("GET", "/messages/since", since=EPOCH)
        self.bobIds = [m["id"] for m in bobs["messages"]]
        self.assertEqual(len(self.bobIds), 3)  # two received, one sent
        self.alice = APIClient(self, self.server.apiPort)
        yield self.alice.login()

    def assertNothingOfBobs(self, body):
        text = json.dumps(body)
        self.assertNotIn(BOBS_WORD, text)
        self.assertNotIn("bob@example.test", text)
        for entryId in self.bobIds:
            self.assertNotIn(entryId, text)

    def test_everyReadPathIsCovered(self):
        served = {
            (method, path)
            for path, item in document()["paths"].items()
            for method in item
            if method != "parameters"
        }
        self.assertEqual(served, READ_PATHS | NOT_MAIL)

    @inlineCallbacks
    def test_foldersAreTheAccountsOwn(self):
        """Bob's folder (named with his word, holding his mail) is nowhere in
        alice's list, and its id is 404 for her on every folder path."""
        bobs = yield self.bob.json("POST", "/folders", {"name": BOBS_WORD}, expect=201)
        yield self.bob.json(
            "PATCH", f"/messages/{self.bobIds[0]}", {"mailbox": bobs["id"]}
        )
        mine = yield self.alice.json("GET", "/folders")
        self.assertNothingOfBobs(mine)
        self.assertNotIn(bobs["id"], json.dumps(mine))
        inbox = next(f for f in mine["folders"] if f["id"] == "inbox")
        self.assertEqual(inbox["total"], 1)  # alice's own message
        yield self.alice.json("GET", "/messages", mailbox=bobs["id"], expect=404)
        yield self.alice.json(
            "PATCH", f"/folders/{bobs['id']}", {"name": "mine now"}, expect=404
        )
        yield self.alice.json("DELETE", f"/folders/{bobs['id']}", expect=404)
        made = yield self.alice.json(
            "POST", "/folders", {"name": BOBS_WORD}, expect=201
        )  # the same name is alice's to make: names are per account
        self.assertNotEqual(made["id"], bobs["id"])
        still = yield self.bob.json("GET", "/messages", mailbox=bobs["id"])
        self.assertEqual([m["id"] for m in still["messages"]], [self.bobIds[0]])

    @inlineCallbacks
    def test_accountCountsOnlyTheCallersMail(self):
        """Usage is alice's own: bob's three copies are not in it."""
        mine = yield self.alice.json("GET", "/account")
        self.assertNothingOfBobs(mine)
        self.assertEqual(mine["email"], "alice@example.test")
        bobs = yield self.bob.json("GET", "/account")
        self.assertGreater(bobs["quota"]["used"], mine["quota"]["used"])

    @inlineCallbacks
    def test_listEveryMailbox(self):
        seen = []
        for mailbox in ("inbox", "archive", "junk", "trash", "sent"):
            for unread in ("false", "true"):
                page = yield self.alice.json(
                    "GET",
                    "/messages",
                    mailbox=mailbox,
                    unread_only=unread,
                    limit="1000",
                )
                self.assertNothingOfBobs(page)
                seen += [m["subject"] for m in page["messages"]]
        self.assertIn(ALICES_WORD, seen)

    @inlineCallbacks
    def test_deltaSync(self):
        delta = yield self.alice.json(
            "GET", "/messages/since", since=EPOCH, limit="1000"
        )
        self.assertNothingOfBobs(delta)
        self.assertEqual([m["subject"] for m in delta["messages"]], [ALICES_WORD])

    @inlineCallbacks
    def test_eventStream(self):
        """Alice's stream from the start carries her mail only, and bob's
        new mail does not wake it."""
        port, token = self.server.apiPort, self.alice.token

        def session():
            stream = SSE(port, token, lastEventId=EPOCH)
            first = stream.next()
            deliver(self.server.smtpPort, [(BOBS_WORD, "later")], "bob@example.test")
            deliver(self.server.smtpPort, [("for alice", "later")])
            second = stream.next()
            stream.close()
            return first, second

        first, second = yield deferToThread(session)
        self.assertNothingOfBobs(first)
        self.assertNothingOfBobs(second)
        self.assertEqual(
            [m["subject"] for m in first["data"]["messages"]], [ALICES_WORD]
        )
        self.assertEqual(
            [m["subject"] for m in second["data"]["messages"]], ["for alice"]
        )

    @inlineCallbacks
    def test_search(self):
        for query in (BOBS_WORD, f"{BOBS_WORD[:5]}*", "private", "to:bob", "second"):
            found = yield self.alice.json("GET", "/messages/search", q=query)
            self.assertEqual(found["results"], [], query)
            self.assertNothingOfBobs({k: v for k, v in found.items() if k != "query"})
        mine = yield self.alice.json("GET", "/messages/search", q=ALICES_WORD)
        self.assertEqual(len(mine["results"]), 1)

    @inlineCallbacks
    def test_getPatchDeleteAnotherAccountsMessage(self):
        """The full message (raw body, headers, attachments) is 404, as is
        every change to it, and bob's message is untouched afterwards."""
        for entryId in self.bobIds:
            for method, body in (
                ("GET", None),
                ("PATCH", {"read_state": True, "starred": True}),
                ("PATCH", {"mailbox": "junk"}),
                ("DELETE", None),
            ):
                refused = yield self.alice.json(
                    method, f"/messages/{entryId}", body, 404
                )
                self.assertNothingOfBobs(refused)
        after = yield self.bob.json("GET", "/messages/since", since=EPOCH)
        self.assertEqual(
            {(m["mailbox"], m["starred"]) for m in after["messages"]},
            {("inbox", False), ("sent", False)},
        )
        [mine] = (yield self.alice.json("GET", "/messages"))["messages"]
        full = yield self.alice.json("GET", f"/messages/{mine['id']}")
        self.assertIn(ALICES_WORD, full["body"])
        self.assertEqual(full["attachments"][0]["filename"], "plan.pdf")

    @inlineCallbacks
    def test_outboundStatus(self):
        refused = yield self.alice.json(
            "GET", f"/outbound/{self.bobSent['id']}", expect=404
        )
        self.assertNothingOfBobs(refused)
        own = yield self.bob.json("GET", f"/outbound/{self.bobSent['id']}")
        self.assertEqual(own["id"], self.bobSent["id"])

"""The mobile API with treq against a real server; mail arrives over SMTP."""

from __future__ import annotations

import gzip
import http.client
import json
import os
import re
import smtplib
import sqlite3

import treq
from twisted.internet import reactor
from twisted.internet.defer import gatherResults, inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import HTTPConnectionPool

from mailraven.api import queries
from mailraven.api.mobile import MobileAPI
from mailraven.api.openapi import document
from mailraven.api.search import BadQuery, parseQuery
from tests.helpers import PASSWORD, CountingPasswordChecks, RunningServer

ATTACHED = (
    "From: Bob Sender <bob@example.org>\r\nTo: alice@example.test\r\n"
    "Subject: {subject}\r\nMessage-ID: <{n}@example.org>\r\nMIME-Version: 1.0\r\n"
    'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
    "--b\r\nContent-Type: multipart/alternative; boundary=a\r\n\r\n"
    "--a\r\nContent-Type: text/plain\r\n\r\n{body}\r\n"
    "--a\r\nContent-Type: text/html\r\n\r\n<p>{body}</p>\r\n--a--\r\n"
    "--b\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n"
    'Content-Disposition: attachment; filename="plan.pdf"\r\n\r\nJVBERi0xLjQK\r\n'
    "--b--\r\n"
)


def deliver(port: int, messages: list[tuple[str, str]], rcpt="alice@example.test"):
    """Blocking: one SMTP session delivering each (subject, body)."""
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        for n, (subject, body) in enumerate(messages):
            raw = ATTACHED.format(subject=subject, body=body, n=n).encode()
            client.sendmail(
                "bob@example.org", rcpt if isinstance(rcpt, list) else [rcpt], raw
            )


class APIClient:
    def __init__(self, testCase: TestCase, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}/api/v1"
        self.pool = HTTPConnectionPool(reactor, persistent=False)
        testCase.addCleanup(self.pool.closeCachedConnections)
        self.token: str | None = None

    def request(
        self, method: str, path: str, body=None, raw=None, headers=None, **params
    ):
        headers = dict(headers or {})
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data = (
            raw
            if raw is not None
            else (json.dumps(body).encode() if body is not None else None)
        )
        return treq.request(
            method,
            self.base + path,
            data=data,
            headers=headers,
            params=params,
            pool=self.pool,
        )

    @inlineCallbacks
    def json(self, method: str, path: str, body=None, expect=200, **params):
        response = yield self.request(method, path, body, **params)
        content = yield response.content()
        assert response.code == expect, (response.code, content)
        return json.loads(content)

    @inlineCallbacks
    def login(self, email="alice@example.test", password=PASSWORD):
        self.token = None
        result = yield self.json(
            "POST", "/auth/login", {"email": email, "password": password}
        )
        self.token = result["token"]
        return result


class MobileAPITests(TestCase):
    timeout = 120

    @inlineCallbacks
    def setUp(self):
        self.server = RunningServer(self)
        yield self.server.addUser("alice@example.test")
        yield self.server.addUser("carol@example.test")
        self.api = APIClient(self, self.server.apiPort)

    def deliver(self, messages, rcpt="alice@example.test"):
        return deferToThread(deliver, self.server.smtpPort, messages, rcpt)

    @inlineCallbacks
    def test_loginLogoutAndTokens(self):
        response = yield self.api.request("GET", "/messages")
        self.assertEqual(response.code, 401)
        self.assertEqual((yield response.json())["error"], "unauthorized")
        yield self.api.json(
            "POST",
            "/auth/login",
            {"email": "alice@example.test", "password": "nope"},
            expect=401,
        )
        result = yield self.api.login()
        self.assertEqual(result["email"], "alice@example.test")
        self.assertIn("expires_at", result)
        yield self.api.json("GET", "/messages")
        yield self.api.json("POST", "/auth/logout")
        yield self.api.json("GET", "/messages", expect=401)
        # a password change revokes every token, at once (the API remembers
        # valid tokens for a few seconds: the user store clears that memory)
        yield self.api.login()
        yield self.api.json("GET", "/messages")
        yield self.server.root.users.setPassword("alice@example.test", "changed")
        yield self.api.json("GET", "/messages", expect=401)
        # and so does removing the account
        yield self.api.login(password="changed")
        yield self.api.json("GET", "/messages")
        yield self.server.root.users.remove("alice@example.test")
        yield self.api.json("GET", "/messages", expect=401)

    @inlineCallbacks
    def test_tokensAreStoredHashed(self):
        result = yield self.api.login()
        conn = sqlite3.connect(os.path.join(self.server.dataDir, "mailraven.db"))
        stored = [row[0] for row in conn.execute("SELECT hash FROM tokens")]
        self.assertEqual(len(stored), 1)
        self.assertNotIn(result["token"], stored[0])

    @inlineCallbacks
    def test_cursorPagingIsStableWhileMailArrives(self):
        yield self.deliver([(f"first {i}", "body") for i in range(7)])
        yield self.api.login()
        seen = []
        page = yield self.api.json("GET", "/messages", limit="3")
        self.assertEqual((page["total"], page["has_more"]), (7, True))
        seen += [m["id"] for m in page["messages"]]
        late = 0
        while page["has_more"]:
            yield self.deliver([("late arrival", "body")])
            late += 1
            page = yield self.api.json(
                "GET", "/messages", limit="3", cursor=page["next_cursor"]
            )
            seen += [m["id"] for m in page["messages"]]
        self.assertEqual(len(seen), len(set(seen)), "a message came twice")
        self.assertEqual(len(seen), 7, "a message was skipped or a new one crept in")
        everything = yield self.api.json("GET", "/messages", limit="100")
        self.assertEqual((late, everything["total"]), (2, 7 + 2))
        stamps = [m["received_at"] for m in everything["messages"]]
        self.assertEqual(stamps, sorted(stamps, reverse=True))

    @inlineCallbacks
    def test_parameterErrors(self):
        yield self.api.login()
        for params in (
            {"limit": "1001"},
            {"limit": "0"},
            {"limit": "x"},
            {"cursor": "garbage"},
            {"mailbox": "nowhere"},
            {"unread_only": "maybe"},
        ):
            body = yield self.api.json("GET", "/messages", expect=400, **params)
            self.assertEqual(set(body), {"error", "message"})
        yield self.api.json("GET", "/messages/since", expect=400)
        yield self.api.json("GET", "/messages/since", expect=400, since="yesterday")
        yield self.api.json("GET", "/messages/search", expect=400, q="")
        yield self.api.json("GET", "/messages/search", expect=400, q="x" * 1001)

    @inlineCallbacks
    def test_fullMessageFlagsDeleteAndOtherUsers(self):
        yield self.deliver([("Plans", "See the attached plan")])
        yield self.deliver([("For Carol", "private")], rcpt="carol@example.test")
        yield self.api.login()
        [summary] = (yield self.api.json("GET", "/messages"))["messages"]
        self.assertEqual(
            (
                summary["sender"],
                summary["subject"],
                summary["read_state"],
                summary["has_attachments"],
                summary["spf_result"],
            ),
            ("Bob Sender <bob@example.org>", "Plans", False, True, "none"),
        )
        full = yield self.api.json("GET", f"/messages/{summary['id']}")
        self.assertEqual(full["text"].strip(), "See the attached plan")
        self.assertIn("<p>See the attached plan</p>", full["html"])
        self.assertEqual(
            full["attachments"],
            [{"filename": "plan.pdf", "content_type": "application/pdf", "size": 9}],
        )
        self.assertEqual(full["message_id"], "<0@example.org>")
        self.assertIn({"name": "Subject", "value": "Plans"}, full["headers"])
        self.assertTrue(full["body"].startswith("Return-Path: <bob@example.org>"))
        self.assertEqual(full["body_size"], len(full["body"].encode()))

        for _ in range(2):  # idempotent
            patched = yield self.api.json(
                "PATCH",
                f"/messages/{summary['id']}",
                {"read_state": True, "starred": True},
            )
            self.assertEqual((patched["read_state"], patched["starred"]), (True, True))
        unread = yield self.api.json("GET", "/messages", unread_only="true")
        self.assertEqual(unread["messages"], [])
        wrongType = yield self.api.json(
            "PATCH", f"/messages/{summary['id']}", {"read_state": "yes"}, expect=400
        )
        self.assertEqual(wrongType["message"], "read_state must be true or false")
        unknown = yield self.api.json(
            "PATCH", f"/messages/{summary['id']}", {"colour": "red"}, expect=400
        )
        self.assertEqual(
            unknown["message"],
            "unknown field 'colour' (read_state, starred, mailbox)",
        )
        deleted = yield self.api.json("DELETE", f"/messages/{summary['id']}")
        self.assertEqual(deleted["mailbox"], "trash")
        trash = yield self.api.json("GET", "/messages", mailbox="trash")
        self.assertEqual([m["id"] for m in trash["messages"]], [summary["id"]])

        # Carol's message exists, but for Alice it does not: 404, never 403
        yield self.api.login("carol@example.test")
        [carols] = (yield self.api.json("GET", "/messages"))["messages"]
        yield self.api.login()
        for method in ("GET", "DELETE"):
            yield self.api.json(method, f"/messages/{carols['id']}", expect=404)
        yield self.api.json(
            "PATCH", f"/messages/{carols['id']}", {"read_state": True}, expect=404
        )
        yield self.api.json("GET", "/messages/no-such-id", expect=404)

    @inlineCallbacks
    def test_deltaSyncReportsArrivalsChangesAndDeletes(self):
        yield self.deliver([("one", "x"), ("two", "y")])
        yield self.api.login()
        first = yield self.api.json(
            "GET", "/messages/since", since="2000-01-01T00:00:00Z"
        )
        self.assertEqual([m["subject"] for m in first["messages"]], ["one", "two"])
        mark = first["next_since"]
        self.assertEqual(
            (yield self.api.json("GET", "/messages/since", since=mark))["count"], 0
        )
        one = first["messages"][0]["id"]
        yield self.api.json("PATCH", f"/messages/{one}", {"read_state": True})
        yield self.deliver([("three", "z")])
        two = first["messages"][1]["id"]
        yield self.api.json("DELETE", f"/messages/{two}")
        delta = yield self.api.json("GET", "/messages/since", since=mark)
        changes = {
            m["subject"]: (m["read_state"], m["mailbox"]) for m in delta["messages"]
        }
        self.assertEqual(
            changes,
            {
                "one": (True, "inbox"),
                "two": (False, "trash"),
                "three": (False, "inbox"),
            },
        )

    @inlineCallbacks
    def test_searchOperatorsAndHostileQueries(self):
        yield self.deliver(
            [
                ("Quarterly budget", "the budget meeting is at 3pm"),
                ("Lunch", "sandwiches and budgeting tips"),
                ("Holiday", "beach plans"),
            ]
        )
        yield self.deliver([("Budget secret", "budget")], rcpt="carol@example.test")
        yield self.api.login()

        def subjects(result):
            return sorted(r["subject"] for r in result["results"])

        found = yield self.api.json(
            "GET", "/messages/search", q="budget", sort="relevance"
        )
        self.assertEqual(subjects(found), ["Quarterly budget"])
        for r in found["results"]:
            self.assertTrue(0 < r["relevance"] <= 1)
        self.assertEqual(max(r["relevance"] for r in found["results"]), 1.0)
        found = yield self.api.json("GET", "/messages/search", q="budget*")
        self.assertEqual(subjects(found), ["Lunch", "Quarterly budget"])
        found = yield self.api.json("GET", "/messages/search", q='"meeting is at"')
        self.assertEqual(subjects(found), ["Quarterly budget"])
        found = yield self.api.json(
            "GET", "/messages/search", q="from:bob@example.org beach"
        )
        self.assertEqual(subjects(found), ["Holiday"])
        found = yield self.api.json(
            "GET", "/messages/search", q="from:nobody@example.org beach"
        )
        self.assertEqual(found["results"], [])
        found = yield self.api.json("GET", "/messages/search", q="before:2000-01-01")
        self.assertEqual(found["total_matches"], 0)
        found = yield self.api.json("GET", "/messages/search", q="after:2000-01-01")
        self.assertEqual(found["total_matches"], 3)
        found = yield self.api.json(
            "GET", "/messages/search", q="budget after:2000-01-01"
        )
        self.assertEqual(subjects(found), ["Quarterly budget"])
        found = yield self.api.json(
            "GET", "/messages/search", q="budget before:2000-01-01"
        )
        self.assertEqual((found["results"], found["total_matches"]), ([], 0))
        for hostile in (
            "meeting @ 3pm",
            '"',
            "NEAR(",
            "budget AND OR NOT",
            '"unterminated',
            "sender:x",
            "*",
            "a:b:c",
            "')--;",
        ):
            found = yield self.api.json("GET", "/messages/search", q=hostile)
            self.assertEqual(found["query"], hostile)
        found = yield self.api.json("GET", "/messages/search", q="meeting @ 3pm")
        self.assertEqual(subjects(found), ["Quarterly budget"])
        # one message to two accounts: each finds it, and only its own entry
        yield self.deliver(
            [("Shared plan", "zeppelin")],
            rcpt=["alice@example.test", "carol@example.test"],
        )
        found = yield self.api.json("GET", "/messages/search", q="zeppelin")
        self.assertEqual(subjects(found), ["Shared plan"])
        self.assertEqual(found["total_matches"], 1)
        aliceEntry = found["results"][0]["id"]
        yield self.api.login("carol@example.test")
        found = yield self.api.json("GET", "/messages/search", q="zeppelin")
        self.assertEqual(subjects(found), ["Shared plan"])
        self.assertNotEqual(found["results"][0]["id"], aliceEntry)
        found = yield self.api.json("GET", "/messages/search", q="budget")
        self.assertEqual(subjects(found), ["Budget secret"])

    @inlineCallbacks
    def test_rankingWindowCoversTheNewestMatchesAndCountsAll(self):
        yield self.deliver([(f"budget {i}", "budget") for i in range(4)])
        conn = sqlite3.connect(os.path.join(self.server.dataDir, "mailraven.db"))
        conn.row_factory = sqlite3.Row
        found = queries.search(
            conn, 1, parseQuery("budget"), 10, 0, window=2, order="relevance"
        )
        self.assertEqual(found["total_matches"], 4)
        self.assertEqual(
            sorted(r["subject"] for r in found["results"]), ["budget 2", "budget 3"]
        )

    @inlineCallbacks
    def test_searchListsNewestFirstByDefault(self):
        """Results come in arrival order, newest first, as a mail client
        shows them; relevance (and its BM25 field) only on request."""
        yield self.deliver(
            [
                ("budget budget budget", "budget budget budget budget"),
                ("second", "a budget"),
                ("third", "the budget again"),
            ]
        )
        yield self.api.login()
        found = yield self.api.json("GET", "/messages/search", q="budget", limit=2)
        self.assertEqual([r["subject"] for r in found["results"]], ["third", "second"])
        self.assertNotIn("relevance", found["results"][0])
        self.assertEqual(
            (found["total_matches"], found["total_matches_exact"]), (3, True)
        )
        page = yield self.api.json(
            "GET", "/messages/search", q="budget", limit=2, offset=2
        )
        self.assertEqual(
            [r["subject"] for r in page["results"]], ["budget budget budget"]
        )
        ranked = yield self.api.json(
            "GET", "/messages/search", q="budget", sort="relevance"
        )
        self.assertEqual(ranked["results"][0]["subject"], "budget budget budget")
        yield self.api.json(
            "GET", "/messages/search", expect=400, q="budget", sort="score"
        )

    @inlineCallbacks
    def test_totalMatchesIsALowerBoundPastTheCap(self):
        yield self.deliver([(f"budget {i}", "budget") for i in range(5)])
        conn = sqlite3.connect(os.path.join(self.server.dataDir, "mailraven.db"))
        conn.row_factory = sqlite3.Row
        for order in ("date", "relevance"):
            found = queries.search(
                conn, 1, parseQuery("budget"), 2, 0, order=order, cap=3
            )
            self.assertEqual(
                (found["total_matches"], found["total_matches_exact"]), (3, False)
            )
            found = queries.search(
                conn, 1, parseQuery("budget"), 2, 0, order=order, cap=5
            )
            self.assertEqual(
                (found["total_matches"], found["total_matches_exact"]), (5, True)
            )
        found = queries.search(conn, 1, parseQuery("after:2000-01-01"), 2, 0, cap=3)
        self.assertEqual(
            (found["total_matches"], found["total_matches_exact"]), (3, False)
        )
        self.assertEqual(len(found["results"]), 2)

    @inlineCallbacks
    def test_sendQueuesRemoteRecipientsDurablyAndKeepsACopy(self):
        yield self.api.login()
        result = yield self.api.json(
            "POST",
            "/messages/send",
            {
                "to": ["friend@elsewhere.example"],
                "cc": ["carol@example.test"],
                "bcc": ["hidden@elsewhere.example"],
                "subject": "Hi",
                "body": "Hello there",
                "html": "<b>Hello</b>",
            },
            expect=202,
        )
        self.assertEqual(result["status"], "queued")
        sent = yield self.api.json("GET", "/messages", mailbox="sent")
        [copy] = sent["messages"]
        self.assertEqual((copy["subject"], copy["read_state"]), ("Hi", True))
        full = yield self.api.json("GET", f"/messages/{copy['id']}")
        headers = {h["name"]: h["value"] for h in full["headers"]}
        self.assertEqual(headers["From"], "alice@example.test")
        self.assertIn("Message-ID", headers)
        self.assertIn("Date", headers)
        self.assertNotIn("Bcc", headers)
        self.assertEqual(
            (full["text"].strip(), full["html"].strip()),
            ("Hello there", "<b>Hello</b>"),
        )
        conn = sqlite3.connect(os.path.join(self.server.dataDir, "mailraven.db"))
        (rcpts, status, messageId) = conn.execute(
            "SELECT rcpt_to, status, message_id FROM outbound_queue"
        ).fetchone()
        # carol is an account here: her copy is stored, not queued
        self.assertEqual(
            json.loads(rcpts), ["friend@elsewhere.example", "hidden@elsewhere.example"]
        )
        self.assertEqual(messageId, result["id"])
        # the queue may already have tried (no DNS in tests): never delivered
        self.assertIn(status, ("queued", "deferred"))
        for bad in (
            {"to": [], "body": "x"},
            {"to": ["not an address"], "body": "x"},
            {"to": ["a@b.example"]},
            {"to": ["a@b.example"], "body": 5},
            [],
            # found by tests/fuzz/fuzz_json.py: line breaks in the subject
            # made the composer raise (a 500); NUL went into the header
            {"to": ["a@b.example"], "body": "x", "subject": "a\r\nFrom: ceo"},
            {"to": ["a@b.example"], "body": "x", "subject": "a\u2028b"},
            {"to": ["a@b.example"], "body": "x", "subject": "a\x00b"},
        ):
            yield self.api.json("POST", "/messages/send", bad, expect=400)
        response = yield self.api.request("POST", "/messages/send", raw=b"{nope")
        self.assertEqual(response.code, 400)
        self.assertEqual((yield response.json())["error"], "bad_json")

    @inlineCallbacks
    def test_hostileJSONBodiesAre400(self):
        """
        Found by tests/fuzz/fuzz_json.py: deep nesting raised RecursionError
        and a lone surrogate got through to SQLite (login) and to the message
        composer (send): 500s with tracebacks.
        """
        yield self.api.login()
        for method, path, body in (
            ("POST", "/auth/login", b"[" * 100000),
            ("POST", "/auth/login", b'{"email": "\\ud800@x.test", "password": "x"}'),
            ("POST", "/messages/send", b'{"to": ["a@b.example"], "body": "\\udc00"}'),
            ("POST", "/messages/send", b'{"to": ["a@b.example"], "body": NaN}'),
            ("PATCH", "/messages/x", b'{"starred": true, "\\udfff": 1}'),
        ):
            response = yield self.api.request(method, path, raw=body)
            self.assertEqual(response.code, 400, (path, body[:40]))
            self.assertEqual((yield response.json())["error"], "bad_json")

    @inlineCallbacks
    def test_gzipWhenAskedAndLarge(self):
        yield self.deliver([(f"subject {i}", "body") for i in range(10)])
        yield self.api.login()

        def fetch(query: str) -> tuple[str | None, bytes]:
            # http.client: treq would decode gzip and hide the header.
            connection = http.client.HTTPConnection("127.0.0.1", self.server.apiPort)
            connection.request(
                "GET",
                "/api/v1/messages" + query,
                headers={
                    "Authorization": f"Bearer {self.api.token}",
                    "Accept-Encoding": "gzip",
                },
            )
            response = connection.getresponse()
            result = response.getheader("content-encoding"), response.read()
            connection.close()
            return result

        encoding, body = yield deferToThread(fetch, "")
        self.assertEqual(encoding, "gzip")
        self.assertEqual(json.loads(gzip.decompress(body))["total"], 10)
        encoding, body = yield deferToThread(fetch, "?mailbox=trash")
        self.assertIsNone(encoding)
        self.assertEqual(json.loads(body)["total"], 0)

    @inlineCallbacks
    def test_unknownPathsAndMethodsAreJSON(self):
        response = yield self.api.request("GET", "/nothing/here")
        self.assertEqual(response.code, 404)
        self.assertEqual((yield response.json())["error"], "not_found")
        response = yield self.api.request("PUT", "/messages")
        self.assertEqual(response.code, 405)
        self.assertEqual((yield response.json())["error"], "method_not_allowed")

    @inlineCallbacks
    def test_openapiIsServed(self):
        served = yield self.api.json("GET", "/openapi.json")
        self.assertEqual(served, json.loads(json.dumps(document())))


class LimitTests(TestCase):
    timeout = 60

    @inlineCallbacks
    def test_bodyCapIs413(self):
        server = RunningServer(self, api__max_body=2000)
        yield server.addUser("alice@example.test")
        api = APIClient(self, server.apiPort)
        yield api.login()
        response = yield api.request(
            "POST", "/messages/send", {"to": ["a@b.example"], "body": "x" * 5000}
        )
        self.assertEqual(response.code, 413)
        self.assertEqual((yield response.json())["error"], "too_large")

    @inlineCallbacks
    def test_requestsPerMinutePerIP(self):
        server = RunningServer(self, api__rate_limit=5)
        api = APIClient(self, server.apiPort)
        for _ in range(5):
            response = yield api.request("GET", "/openapi.json")
            yield response.content()
            self.assertEqual(response.code, 200)
        response = yield api.request("GET", "/openapi.json")
        self.assertEqual(response.code, 429)
        body = yield response.json()
        self.assertGreaterEqual(body["retry_after"], 1)
        self.assertEqual(
            response.headers.getRawHeaders("retry-after"), [str(body["retry_after"])]
        )

    @inlineCallbacks
    def test_dailySendingLimitPerAccount(self):
        server = RunningServer(self, ratelimit__outbound_per_day=2)
        yield server.addUser("alice@example.test")
        api = APIClient(self, server.apiPort)
        yield api.login()
        message = {"to": ["friend@elsewhere.example"], "body": "hi"}
        for _ in range(2):
            yield api.json("POST", "/messages/send", message, expect=202)
        refused = yield api.json("POST", "/messages/send", message, expect=429)
        self.assertEqual(refused["retry_after"], 3600)

    @inlineCallbacks
    def test_failedLoginsPerIPAreLimited(self):
        server = RunningServer(self)
        yield server.addUser("alice@example.test")
        api = APIClient(self, server.apiPort)
        codes = []
        for _ in range(11):
            response = yield api.request(
                "POST",
                "/auth/login",
                {"email": "alice@example.test", "password": "guess"},
            )
            yield response.content()
            codes.append(response.code)
        self.assertEqual(codes, [401] * 10 + [429])


class ParallelLoginTests(TestCase):
    """The login limit holds against parallel requests (one IP, one account)."""

    timeout = 120

    @inlineCallbacks
    def test_parallelGuessesGetAtMostTheBudgetOfPasswordChecks(self):
        server = RunningServer(self)
        yield server.addUser("alice@example.test")
        checks = CountingPasswordChecks(server.root.users)
        budget = server.config["ratelimit.auth_failures"]
        api = APIClient(self, server.apiPort)

        @inlineCallbacks
        def guess(n):
            response = yield api.request(
                "POST",
                "/auth/login",
                {"email": "alice@example.test", "password": f"guess{n}"},
            )
            body = yield response.json()
            return response.code, body, response.headers.getRawHeaders("retry-after")

        results = yield gatherResults([guess(n) for n in range(60)])
        codes = [code for code, _, _ in results]
        self.assertEqual(
            (codes.count(401), codes.count(429)), (budget, 60 - budget), codes
        )
        self.assertEqual(checks.calls, budget)
        for code, body, retryAfter in results:
            if code == 429:
                self.assertEqual(body["error"], "rate_limited")
                self.assertGreaterEqual(int(retryAfter[0]), 1)


class OpenAPIContractTests(SynchronousTestCase):
    def test_documentNamesExactlyTheServedRoutes(self):
        served = set()
        for rule in MobileAPI.app.url_map.iter_rules():
            path = re.sub(r"<string:(\w+)>", r"{\1}", rule.rule)
            for method in rule.methods - {"HEAD", "OPTIONS"}:
                served.add((path, method.lower()))
        documented = {
            (path, method)
            for path, item in document()["paths"].items()
            for method in item
            if method != "parameters"
        }
        self.assertEqual(served, documented)

    def test_queryParserNeverEmitsUserSyntax(self):
        self.assertEqual(parseQuery('NEAR( "a"" b').match, '"NEAR(" AND "a" AND " b"')
        self.assertTrue(parseQuery('"').nothing)
        self.assertRaises(BadQuery, parseQuery, "   ")
        self.assertRaises(BadQuery, parseQuery, "before:yesterday")

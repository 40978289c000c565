"""Hostile input to the mobile API, with treq against a real server: each is a
400 with a JSON error body, never a 500 or a traceback."""

from __future__ import annotations

import json

from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from tests.helpers import RunningServer
from tests.test_mobile_api import APIClient

DEEP = b"[" * 100_000  # RecursionError in the stdlib's json
DEEP_OBJECT = b'{"a":' * 100_000 + b"1" + b"}" * 100_000


class HostileInputTests(TestCase):
    timeout = 120

    @inlineCallbacks
    def setUp(self):
        self.server = RunningServer(self)
        yield self.server.addUser("alice@example.test")
        self.api = APIClient(self, self.server.apiPort)
        yield self.api.login()

    @inlineCallbacks
    def assertRefused(self, method: str, path: str, error: str, **kwargs):
        """A 400 whose body is exactly {"error", "message"}, no traceback."""
        response = yield self.api.request(method, path, **kwargs)
        content = yield response.content()
        self.assertEqual(response.code, 400, content[:300])
        body = json.loads(content)
        self.assertEqual(set(body), {"error", "message"})
        self.assertEqual(body["error"], error, body)
        self.assertNotIn(b"Traceback", content)
        return body

    @inlineCallbacks
    def test_deeplyNestedJSONIsBadJSON(self):
        listed = yield self.api.json("GET", "/messages")
        self.assertEqual(listed["messages"], [])
        for raw in (DEEP, DEEP + b"]" * 100_000, DEEP_OBJECT):
            for path, method in (
                ("/messages/send", "POST"),
                ("/messages/x", "PATCH"),
                ("/auth/login", "POST"),
            ):
                yield self.assertRefused(method, path, "bad_json", raw=raw)

    @inlineCallbacks
    def test_sinceOutsideTheYearsUTCCanHold(self):
        for since in (
            "0001-01-01T00:00:00+23:59",
            "9999-12-31T23:59:59-23:59",
            "0001-01-01T00:00:00+01:00",
        ):
            body = yield self.assertRefused(
                "GET", "/messages/since", "bad_parameter", since=since
            )
            self.assertIn("since", body["message"])
        ok = yield self.api.json(
            "GET", "/messages/since", since="0001-01-01T00:00:00-23:59"
        )
        self.assertEqual(ok["count"], 0)

    @inlineCallbacks
    def test_lineBreaksAndControlsInHeaderFieldsAreRefused(self):
        base = {"to": ["friend@elsewhere.example"], "body": "hi"}
        for subject in (
            "Hi\r\nBcc: victim@elsewhere.example",
            "Hi\nBcc: victim@elsewhere.example",
            "Hi\rX-Injected: yes",
            "Hi\x00there",
            "Hi\u2028Bcc: victim@elsewhere.example",
            "Hi\x85Bcc: victim@elsewhere.example",
        ):
            yield self.assertRefused(
                "POST",
                "/messages/send",
                "bad_request",
                body={**base, "subject": subject},
            )
        for field in ("to", "cc", "bcc"):
            for address in (
                "Eve <eve@elsewhere.example>\r\nBcc: victim@elsewhere.example",
                "eve@elsewhere.example\r\nBcc: victim@elsewhere.example",
                "eve@elsewhere.example\nX-Injected: yes",
                "eve\x00@elsewhere.example",
            ):
                yield self.assertRefused(
                    "POST",
                    "/messages/send",
                    "bad_request",
                    body={**base, field: [address]},
                )
        # the queue looks up MX records only: a literal would bounce later
        for address in ("a@[127.0.0.1]", "a@[IPv6:::1]"):
            body = yield self.assertRefused(
                "POST", "/messages/send", "bad_request", body={**base, "to": [address]}
            )
            self.assertIn("not an IP address", body["message"])
        sent = yield self.api.json("GET", "/messages", mailbox="sent")
        self.assertEqual(sent["messages"], [], "a refused message was stored")
        tabbed = yield self.api.json(
            "POST", "/messages/send", {**base, "subject": "a\tb"}, expect=202
        )
        self.assertTrue(tabbed["id"])

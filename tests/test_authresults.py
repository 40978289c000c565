"""Authentication-Results that claim our authserv-id are removed (RFC 8601 5)."""

from __future__ import annotations

import time

from twisted.trial.unittest import SynchronousTestCase

from mailraven.store.authresults import authservId, headerEnd, withoutForgedResults

OURS = "mx.mailraven.test"
TOP = b"Return-Path: <bob@example.org>\r\nReceived: from c ([127.0.0.1])\r\n"
REST = b"From: bob@example.org\r\nSubject: s\r\n\r\nbody\r\n"


class WithoutForgedResultsTests(SynchronousTestCase):
    def assertRemoved(self, field: bytes) -> None:
        self.assertEqual(withoutForgedResults(TOP + field + REST, OURS), TOP + REST)

    def assertKept(self, field: bytes) -> None:
        raw = TOP + field + REST
        self.assertEqual(withoutForgedResults(raw, OURS), raw)

    def test_oursIsRemovedWithItsContinuationLines(self):
        self.assertRemoved(
            b"Authentication-Results: mx.mailraven.test;\r\n\tdkim=pass"
            b" header.d=bank.example;\r\n  dmarc=pass header.from=bank.example\r\n"
        )

    def test_authservIdAndFieldNameAreCaseInsensitive(self):
        self.assertRemoved(b"authentication-RESULTS: MX.MailRaven.TEST; dkim=pass\r\n")

    def test_versionCommentsAndQuotesAroundTheId(self):
        for field in (
            b"Authentication-Results: mx.mailraven.test 1; spf=pass\r\n",
            b"Authentication-Results: (a (nested) comment) mx.mailraven.test;"
            b" spf=pass\r\n",
            b"Authentication-Results:\r\n mx.mailraven.test\r\n ; spf=pass\r\n",
            b'Authentication-Results: "mx.mailraven.test"; spf=pass\r\n',
            b"Authentication-Results : mx.mailraven.test; spf=pass\r\n",
            b"Authentication-Results: mx.mailraven.test; none\r\n",
        ):
            self.assertRemoved(field)

    def test_otherAuthservIdsAreKept(self):
        for field in (
            b"Authentication-Results: mx.example.org; dkim=pass\r\n",
            b"Authentication-Results: mx.mailraven.test.evil.example; dkim=pass\r\n",
            b"Authentication-Results: mx.mailraven.testing; dkim=pass\r\n",
            b"Authentication-Results: (mx.mailraven.test) other.example; spf=pass\r\n",
            b"ARC-Authentication-Results: i=1; mx.mailraven.test; dkim=pass\r\n",
            b"X-Authentication-Results: mx.mailraven.test; dkim=pass\r\n",
        ):
            self.assertKept(field)

    def test_onlyTheForgedOfSeveralGo(self):
        foreign = b"Authentication-Results: mx.example.org;\r\n\tspf=fail\r\n"
        forged = b"Authentication-Results: mx.mailraven.test; dkim=pass\r\n"
        raw = TOP + forged + foreign + forged + REST
        self.assertEqual(withoutForgedResults(raw, OURS), TOP + foreign + REST)

    def test_fieldAfterABareCRIsAField(self):
        """
        Parsers take a bare CR for a line end: such a field is a field. The
        bare CR before it becomes CRLF, so that a reader that ends lines only
        at CRLF does not take the next field (or the body) into X-A.
        """
        raw = TOP + b"X-A: 1\rAuthentication-Results: mx.mailraven.test; dkim=pass\r\n"
        self.assertEqual(
            withoutForgedResults(raw + REST, OURS), TOP + b"X-A: 1\r\n" + REST
        )

    def test_bareLFMessage(self):
        raw = b"X-A: 1\nAuthentication-Results: mx.mailraven.test;\n dkim=pass\n\nb\n"
        self.assertEqual(withoutForgedResults(raw, OURS), b"X-A: 1\n\nb\n")

    def test_theBodyIsNotTouched(self):
        body = b"\r\nAuthentication-Results: mx.mailraven.test; dkim=pass\r\n"
        raw = TOP + REST + body
        self.assertIs(withoutForgedResults(raw, OURS), raw)

    def test_noAuthservIdRemovesNothing(self):
        raw = TOP + b"Authentication-Results: ; dkim=pass\r\n" + REST
        self.assertIs(withoutForgedResults(raw, ""), raw)
        self.assertEqual(withoutForgedResults(raw, OURS), raw)


class HeaderEndTests(SynchronousTestCase):
    def test_everyKindOfEmptyLine(self):
        """Just after the line end of the last field."""
        for raw, end in (
            (b"A: 1\r\n\r\nb", 6),
            (b"A: 1\n\nb", 5),
            (b"A: 1\r\rb", 5),
            (b"A: 1\n\r\nb", 5),
            (b"A: 1\r\n\nb", 6),
            (b"A: 1\r\r\nb", 5),
        ):
            self.assertEqual(headerEnd(raw), end, raw)

    def test_noEmptyLine(self):
        self.assertEqual(headerEnd(b"A: 1\r\nB: 2\r\n"), 12)


class AuthservIdTests(SynchronousTestCase):
    def test_forms(self):
        self.assertEqual(authservId(b" Example.COM; spf=pass"), "example.com")
        self.assertEqual(authservId(b" example.com 1 ; spf=pass"), "example.com")
        self.assertEqual(authservId(b"\r\n\t(c) example.com;"), "example.com")
        self.assertEqual(authservId(b' "quoted.example" ;'), "quoted.example")
        self.assertEqual(authservId(b""), "")


class BoundedWorkTests(SynchronousTestCase):
    def test_deeplyNestedCommentsCostLittle(self):
        """The id is looked for in the value's first ID_WINDOW octets only."""
        value = b"(" * 200_000 + b"x" + b")" * 200_000
        folded = b"\r\n ".join(value[i : i + 900] for i in range(0, len(value), 900))
        raw = TOP + b"Authentication-Results: " + folded + b"; dkim=pass\r\n" + REST
        started = time.perf_counter()
        self.assertEqual(withoutForgedResults(raw, OURS), raw)
        self.assertLess(time.perf_counter() - started, 1.0)

    def test_idAfterLongFoldingIsStillFound(self):
        raw = TOP + b"Authentication-Results:" + b"\r\n " * 100
        raw += b"(c) mx.mailraven.test; dkim=pass\r\n" + REST
        self.assertEqual(withoutForgedResults(raw, OURS), TOP + REST)

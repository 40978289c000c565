from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from mailraven.smtp.addresses import (
    AddressError,
    parseParams,
    parsePath,
    splitPathAndParams,
)


class PathTests(SynchronousTestCase):
    def test_plainAndNormalisedDomain(self):
        self.assertEqual(str(parsePath("Bob@Example.ORG.")), "Bob@example.org")

    def test_sourceRouteIgnored(self):
        address = parsePath("@relay.example,@b.example:user@far.example")
        self.assertEqual((address.local, address.domain), ("user", "far.example"))

    def test_quotedLocalPartKeepsItsAt(self):
        address = parsePath('"user@far.example"@here.example')
        self.assertEqual(address.domain, "here.example")

    def test_literal(self):
        self.assertTrue(parsePath("u@[192.0.2.1]").isLiteral)

    def test_invalid(self):
        for bad in (
            "user",
            "user@",
            "@x.example",
            "a..b@x.example",
            "a@b@c.example",
            "a@-x.example",
            "a b@x.example",
            "a@x_y.example",
            "\u00fc@x.example",
            "x" * 65 + "@x.example",
        ):
            self.assertRaises(AddressError, parsePath, bad)

    def test_utf8OnlyWithSmtputf8(self):
        self.assertEqual(
            str(parsePath("j\u00f6rg@b\u00fccher.example", utf8=True)),
            "j\u00f6rg@b\u00fccher.example",
        )

    def test_nullPath(self):
        self.assertEqual(str(parsePath("", allowNull=True)), "")
        self.assertRaises(AddressError, parsePath, "")

    def test_quotedLocalPartMustBeFollowedByAt(self):
        """
        Found by tests/fuzz/fuzz_addresses.py: any character after the closing
        quote was taken as the C{@}, so C{"x"'example.org} was x@example.org.
        """
        for bad in ('"x"\'example.org', '"x"xexample.org', '"x".y@example.org'):
            self.assertRaises(AddressError, parsePath, bad)
        self.assertEqual(str(parsePath('"x"@example.org')), '"x"@example.org')

    def test_noC1ControlsOrUnicodeLineBreaks(self):
        """
        Found by tests/fuzz/fuzz_smtp.py: under SMTPUTF8 a local part with
        U+0085 (NEL) or U+2028 was taken and written into Return-Path:.
        """
        for bad in ("a\u0085b@x.example", '"a\u2028"@x.example', "a@b\u009b.example"):
            self.assertRaises(AddressError, parsePath, bad, utf8=True)
        self.assertEqual(
            str(parsePath("\u00e9@x.example", utf8=True)), "\u00e9@x.example"
        )

    def test_oneTrailingDotAtMost(self):
        """Found by tests/fuzz/fuzz_addresses.py: C{user@domain..} was taken."""
        self.assertEqual(str(parsePath("user@example.org.")), "user@example.org")
        for bad in ("user@example.org..", "user@example.org...", "user@."):
            self.assertRaises(AddressError, parsePath, bad)

    def test_splitAndParams(self):
        path, params = splitPathAndParams('<"a>b"@x.example> SIZE=10 BODY=8BITMIME')
        self.assertEqual(path, '"a>b"@x.example')
        self.assertEqual(parseParams(params), {"SIZE": "10", "BODY": "8BITMIME"})
        self.assertRaises(AddressError, splitPathAndParams, "a@x.example")
        self.assertRaises(AddressError, parseParams, ["SIZE="])

from __future__ import annotations

import unicodedata

from twisted.trial.unittest import SynchronousTestCase

from mailraven.smtp.addresses import (
    AddressError,
    parseHeloName,
    parseNumber,
    parseParams,
    parsePath,
    splitPathAndParams,
)


class PathTests(SynchronousTestCase):
    def test_plainAndNormalisedDomain(self):
        self.assertEqual(str(parsePath("Bob@Example.ORG")), "Bob@example.org")

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
            # RFC 5321 4.1.2 Domain: no empty label, no final dot
            "user@domain..",
            "user@domain.",
            "user@a..example",
            "user@.example",
            "user@" + "a" * 64 + ".example",
            "user@" + ".".join(["a" * 63] * 4) + ".example",
            # address literals: real IPv4/IPv6 only, no scope, no other tag
            "user@[1.2.3]",
            "user@[300.1.1.1]",
            "user@[IPv6:1::2::3]",
            "user@[IPv6:fe80::1%x]",
            "user@[x-tag:whatever]",
        ):
            self.assertRaises(AddressError, parsePath, bad)

    def test_lengthLimitsOfRFC5321(self):
        """4.5.3.1: local part 64 octets, labels 63, domain 255."""
        label = "a" * 63
        domain = ".".join([label] * 3 + ["b" * 61])  # 253 octets
        self.assertEqual(len(parsePath("x" * 64 + "@x.example").local), 64)
        self.assertEqual(parsePath("x@" + domain).domain, domain)
        self.assertRaises(AddressError, parsePath, "x@" + domain + "cc.d")

    def test_utf8LengthsAreOctets(self):
        """SMTPUTF8 (RFC 6531) keeps RFC 5321's limits, in octets."""
        self.assertRaises(AddressError, parsePath, "\u00fc" * 33 + "@x.example", True)
        self.assertEqual(
            parsePath("\u00fc" * 32 + "@x.example", True).local[:1], "\u00fc"
        )

    def test_noControlsOrLineSeparatorsEvenWithSmtputf8(self):
        for bad in (
            "a\x85b@x.example",
            "a\u2028b@x.example",
            '"a\u2029b"@x.example',
            "a@b\u2028c.example",
            "a\u202eb@x.example",
        ):
            self.assertRaises(AddressError, parsePath, bad, True)

    def test_addressLiterals(self):
        for good in ("u@[192.0.2.1]", "u@[IPv6:2001:db8::1]", "u@[ipv6:::1]"):
            self.assertTrue(parsePath(good).isLiteral, good)

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

    def test_noInvisibleFormatCharacters(self):
        """
        Found by an attacker: bidi isolates, a BOM and a soft hyphen in a
        plus tag reached Received: and the API's tag, where they make one
        address read as another. Every Unicode format character (Cf) is
        refused but ZWNJ and ZWJ, which words of several scripts need.
        """
        for code in range(0x80, 0x110000):
            char = chr(code)
            if unicodedata.category(char) != "Cf" or char in "\u200c\u200d":
                continue
            self.assertRaises(
                AddressError, parsePath, f"alice+x{char}e@x.example", utf8=True
            )
        # found by the re-check: other invisible code points and spaces
        for char in "\u00a0\u034f\u115f\u1160\u17b4\u3164\ufe0f\uffa0\u2003\u3000":
            self.assertRaises(
                AddressError, parsePath, f"alice+x{char}e@x.example", utf8=True
            )
        persian = "\u0632\u0647\u0631\u0627\u200c\u0645\u062d@x.example"
        self.assertEqual(str(parsePath(persian, utf8=True)), persian)

    def test_noTrailingDot(self):
        """Found by tests/fuzz/fuzz_addresses.py: C{user@domain..} was taken.
        RFC 5321's Domain ends with a label, so one trailing dot is refused too."""
        for bad in (
            "user@example.org.",
            "user@example.org..",
            "user@example.org...",
            "user@.",
        ):
            self.assertRaises(AddressError, parsePath, bad)

    def test_splitAndParams(self):
        path, params = splitPathAndParams('<"a>b"@x.example> SIZE=10 BODY=8BITMIME')
        self.assertEqual(path, '"a>b"@x.example')
        self.assertEqual(parseParams(params), {"SIZE": "10", "BODY": "8BITMIME"})
        self.assertRaises(AddressError, splitPathAndParams, "a@x.example")
        self.assertRaises(AddressError, parseParams, ["SIZE="])


class HeloNameTests(SynchronousTestCase):
    def test_domainsAndLiterals(self):
        for good in (
            "mx.example.org",
            "localhost",
            "192.0.2.1",  # digits are labels too (RFC 5321 Let-dig)
            "[127.0.0.1]",
            "[IPv6:::1]",
            "DESKTOP_4F2A.corp.example",  # tolerated: "_" of Windows host names
        ):
            self.assertEqual(parseHeloName(good), good)

    def test_refused(self):
        for bad in (
            "",
            "x\rFrom:\tCEO\t<ceo@example.test>\rSubject:\tpwned",
            "x\x00y",
            "x\ty",
            "a b",
            "mx.example.org.",
            "a..b",
            "-a.example",
            "a(b)",
            "b\u00fccher.example",
            "[127.0.0.1",
            "[not-an-ip]",
            "[IPv6:::1%eth0\r]",
            "a" * 64,
        ):
            self.assertRaises(AddressError, parseHeloName, bad)


class NumberTests(SynchronousTestCase):
    def test_asciiDigitsOnly(self):
        self.assertEqual(parseNumber("1024"), 1024)
        self.assertEqual(parseNumber("0"), 0)
        for bad in (None, "", "\u00b2", "\u0661\u0662", "+1", " 1", "1.0", "9" * 21):
            self.assertRaises(AddressError, parseNumber, bad)

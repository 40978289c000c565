"""Metadata extraction: what the API will show for odd and ordinary mail."""

from __future__ import annotations

import base64

from twisted.trial.unittest import SynchronousTestCase

from mailraven.store.metadata import FIELD_LENGTH, SNIPPET_LENGTH, extractMetadata

NESTED = (
    b"From: =?utf-8?q?J=C3=B6rg?= <jorg@example.org>\r\n"
    b"To: alice@example.test\r\n"
    b"Subject: =?utf-8?b?R3LDvMOfZQ==?=\r\n"
    b"Message-ID: <n1@example.org>\r\n"
    b"Content-Type: multipart/mixed; boundary=outer\r\n\r\n"
    b"preamble\r\n"
    b"--outer\r\n"
    b"Content-Type: multipart/alternative; boundary=inner\r\n\r\n"
    b"--inner\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
    b"Gr=C3=BC=C3=9Fe aus   Berlin\r\n"
    b"--inner\r\n"
    b"Content-Type: text/html\r\n\r\n"
    b"<p>ignored when plain exists</p>\r\n"
    b"--inner--\r\n"
    b"--outer\r\n"
    b"Content-Type: application/pdf\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b'Content-Disposition: attachment; filename="=?utf-8?q?R=C3=A9sum=C3=A9.pdf?="\r\n'
    b"\r\n"
    + base64.encodebytes(b"%PDF" + b"\x00" * 996).replace(b"\n", b"\r\n")
    + b"--outer--\r\nepilogue\r\n"
)


class MetadataTests(SynchronousTestCase):
    def test_nestedMultipart(self):
        meta = extractMetadata(NESTED)
        self.assertEqual(meta.headerFrom, "J\u00f6rg <jorg@example.org>")
        self.assertEqual(meta.subject, "Gr\u00fc\u00dfe")
        self.assertEqual(meta.messageId, "<n1@example.org>")
        self.assertEqual(meta.snippet, "Gr\u00fc\u00dfe aus Berlin")
        self.assertEqual(
            meta.attachments,
            [
                {
                    "filename": "R\u00e9sum\u00e9.pdf",
                    "content_type": "application/pdf",
                    "size": 1000,
                }
            ],
        )

    def test_htmlOnlyAndBase64Text(self):
        html = base64.b64encode(b"<html><b>Hello</b>\n<i>world</i></html>")
        meta = extractMetadata(
            b"Subject: h\r\nContent-Type: text/html\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n" + html + b"\r\n"
        )
        self.assertEqual(meta.snippet, "Hello world")

    def test_snippetIsCapped(self):
        meta = extractMetadata(b"Subject: long\r\n\r\n" + b"word " * 1000)
        self.assertEqual(len(meta.snippet), SNIPPET_LENGTH)

    def test_bareLFMessage(self):
        meta = extractMetadata(b"Subject: lf\nFrom: a@b.example\n\nbody here\n")
        self.assertEqual((meta.subject, meta.snippet), ("lf", "body here"))

    def test_oddInputNeverRaises(self):
        for raw in (
            b"",
            b"\r\n\r\n",
            b"no headers at all",
            b"\xff\xfe\x00" * 100,
            b"Content-Type: multipart/mixed; boundary=\r\n\r\n--\r\n",
            b"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n",
            b"Subject: =?bogus?x?zz?=\r\n\r\n",
            b"X: " + b"a" * 400000,
        ):
            extractMetadata(raw)
        self.assertEqual(
            extractMetadata(b"Subject: =?bogus?x?zz?=\r\n\r\n").subject,
            "=?bogus?x?zz?=",
        )

    def test_rawUTF8HeadersAreText(self):
        """
        Found by tests/fuzz/fuzz_metadata.py: 8-bit header octets became
        U+FFFD each (RFC 6532 UTF-8 subjects lost), and next to an encoded
        word they were shown as literal C{\\ufffd} escapes.
        """
        meta = extractMetadata(
            "Subject: caf\u00e9 =?utf-8?q?na=C3=AFve?=\r\n"
            "From: J\u00f6rg <j@example.org>\r\n\r\nx\r\n".encode()
        )
        self.assertEqual(meta.subject, "caf\u00e9 na\u00efve")
        self.assertEqual(meta.headerFrom, "J\u00f6rg <j@example.org>")
        latin1 = extractMetadata(b"Subject: caf\xe9 =?utf-8?q?x?=\r\n\r\n")
        self.assertEqual(latin1.subject, "caf\u00e9 x")
        # 8-bit octets inside what looks like an encoded word: not one
        inside = extractMetadata(
            b"Subject: =?utf-8?q?a\xbe?= =?utf-8?q?caf=C3=A9?=\r\n\r\n"
        )
        self.assertEqual(inside.subject, "=?utf-8?q?a\u00be?= caf\u00e9")


class DamagedHeaderTests(SynchronousTestCase):
    """Where the header ends, and what its 8-bit octets say (tests/corpus)."""

    def test_messageWithoutHeaderIsAllBody(self):
        meta = extractMetadata(
            b"Received: from c\r\n\tby mx; date\r\nHello, no header here.\r\n"
            b"Second line.\r\n"
        )
        self.assertEqual(meta.snippet, "Hello, no header here. Second line.")

    def test_lineWithoutColonEndsTheHeader(self):
        """As in the email package (and so the API's view): the rest is body."""
        meta = extractMetadata(b"Subject: s\r\nno colon\r\nX-After: 1\r\n\r\nbody\r\n")
        self.assertEqual(
            (meta.subject, meta.snippet), ("s", "no colon X-After: 1 body")
        )
        self.assertIsNone(meta.headers.get("X-After"))

    def test_eightBitHeaderOctets(self):
        """UTF-8 where they are UTF-8 (RFC 6532), else Latin-1; never U+FFFD."""
        meta = extractMetadata(
            b"From: J\xc3\xb6rg <j@example.org>\r\nTo: M\xfcller <m@example.org>\r\n"
            b"Subject: \xff\xfe =?utf-8?q?caf=C3=A9?=\r\n\r\n"
        )
        self.assertEqual(meta.headerFrom, "J\u00f6rg <j@example.org>")
        self.assertEqual(meta.headerTo, "M\u00fcller <m@example.org>")
        self.assertEqual(meta.subject, "\u00ff\u00fe caf\u00e9")

    def test_boundaryThatPrefixesAnotherIsNoDelimiter(self):
        """RFC 2046 5.1.1: "--b" is a delimiter only as a whole line; the
        inner part's epilogue is no text of the message."""
        meta = extractMetadata(
            b"Content-Type: multipart/mixed; boundary=b\r\n\r\n"
            b"--b\r\nContent-Type: multipart/alternative; boundary=b1\r\n\r\n"
            b"--b1\r\nContent-Type: text/html\r\n\r\n<p>inner html</p>\r\n"
            b"--b1--\r\ninner epilogue\r\n"
            b"--b\r\nContent-Type: text/plain\r\n"
            b"Content-Disposition: attachment; filename=a.txt\r\n\r\nx\r\n--b--\r\n"
        )
        self.assertEqual(meta.snippet, "inner html")
        self.assertEqual([a["filename"] for a in meta.attachments], ["a.txt"])

    def test_base64SkipsWhatIsNotOfTheAlphabet(self):
        """RFC 2045 6.8: characters outside the alphabet are ignored."""
        meta = extractMetadata(
            b"Content-Transfer-Encoding: base64\r\n\r\naGVs!bG8g*d29y\r\nbGQ\r\n"
        )
        self.assertEqual(meta.snippet, "hello world")

    def test_listedFieldsAreCappedAndWithoutControls(self):
        folded = b"".join(b"\r\n word%04d" % i for i in range(2000))
        meta = extractMetadata(
            b"Subject: s" + folded + b"\r\nFrom: a\x00b\x1b[31m <a@example.org>\r\n"
            b"To: " + b", ".join(b"r%d@example.org" % i for i in range(200)) + b"\r\n"
            b"\r\nnul\x00 and\x07 bell\r\n"
        )
        self.assertEqual(len(meta.subject), FIELD_LENGTH)
        self.assertEqual(meta.headerFrom, "a b [31m <a@example.org>")
        self.assertTrue(meta.headerTo.endswith("r199@example.org"))
        self.assertEqual(meta.snippet, "nul and bell")

    def test_eightBitAttachmentName(self):
        meta = extractMetadata(
            b"Content-Type: multipart/mixed; boundary=a\r\n\r\n--a\r\n"
            b'Content-Disposition: attachment; filename="M\xe4rz \xc3\xa9.pdf"\r\n'
            b"\r\nx\r\n--a\r\n"
            b'Content-Type: application/pdf; name="\xc3\xa9t\xc3\xa9"\r\n'
            b"\r\nx\r\n--a--\r\n"
        )
        self.assertEqual(
            [a["filename"] for a in meta.attachments],
            ["M\u00e4rz \u00c3\u00a9.pdf", "\u00e9t\u00e9"],
        )

    def test_charsetsWhoseCodecRaises(self):
        """Python codecs that are no mail charsets: the text is read as UTF-8."""
        for charset in (b"idna", b"punycode", b"undefined", b"hex", b"x-unknown"):
            meta = extractMetadata(
                b"Content-Type: text/plain; charset=" + charset + b"\r\n\r\n"
                b"caf\xc3\xa9 \xff.\r\n"
            )
            self.assertEqual(meta.snippet, "caf\u00e9 \ufffd.", charset)

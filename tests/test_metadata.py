"""Metadata extraction: what the API will show for odd and ordinary mail."""

from __future__ import annotations

import base64

from twisted.trial.unittest import SynchronousTestCase

from mailraven.store.metadata import SNIPPET_LENGTH, extractMetadata

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
        self.assertEqual(latin1.subject, "caf\ufffd x")
        # 8-bit octets inside what looks like an encoded word: not one
        inside = extractMetadata(
            b"Subject: =?utf-8?q?a\xbe?= =?utf-8?q?caf=C3=A9?=\r\n\r\n"
        )
        self.assertEqual(inside.subject, "=?utf-8?q?a\ufffd?= caf\u00e9")

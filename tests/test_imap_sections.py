"""FETCH body sections are byte ranges of the stored message (RFC 3501 6.4.5).

The expected bytes are cut from a message assembled here piece by piece, so
the offsets are known independently of the code under test.
"""

from __future__ import annotations

from pathlib import Path

from twisted.mail.imap4 import _FetchParser
from twisted.trial.unittest import SynchronousTestCase

from mailraven.imap.sections import parseEntity, sectionBytes
from tests.corpus.generate import HERE

TOP_HEADER = (
    b"From: Bob <bob@example.org>\r\n"
    b"Subject: nested\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="outer"\r\n'
    b"\r\n"
)
PREAMBLE = b"This is a preamble.\r\n"
PART1_MIME = (
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n\r\n"
)
PART1_BODY = b"Caf\xc3\xa9 with   odd  spacing\r\nand a second line"
PART2_MIME = b'Content-Type: multipart/alternative;\r\n boundary="inner"\r\n\r\n'
PART21_MIME = b"Content-Type: text/plain\r\n\r\n"
PART21_BODY = b"plain text\r\n"
PART22_MIME = b"Content-Type: text/html\r\n\r\n"
PART22_BODY = b"<p>html</p>"
PART2_BODY = (
    b"--inner\r\n"
    + PART21_MIME
    + PART21_BODY
    + b"\r\n--inner\r\n"
    + PART22_MIME
    + PART22_BODY
    + b"\r\n--inner--\r\n"
)
PART3_MIME = b"Content-Type: message/rfc822\r\n\r\n"
INNER_HEADER = (
    b"From: Carol <carol@example.net>\r\nSubject: inner\r\n"
    b'Content-Type: multipart/mixed; boundary="deep"\r\n\r\n'
)
INNER_PART1 = b"Content-Type: text/plain\r\n\r\n"
INNER_PART1_BODY = b"deep text"
INNER_PART2 = (
    b"Content-Type: application/octet-stream\r\n"
    b"Content-Transfer-Encoding: base64\r\n\r\n"
)
INNER_PART2_BODY = b"AAEC\r\nAwQF"
INNER_BODY = (
    b"--deep\r\n"
    + INNER_PART1
    + INNER_PART1_BODY
    + b"\r\n--deep\r\n"
    + INNER_PART2
    + INNER_PART2_BODY
    + b"\r\n--deep--"
)
PART3_BODY = INNER_HEADER + INNER_BODY
MESSAGE = (
    TOP_HEADER
    + PREAMBLE
    + b"--outer\r\n"
    + PART1_MIME
    + PART1_BODY
    + b"\r\n--outer\r\n"
    + PART2_MIME
    + PART2_BODY
    + b"\r\n--outer\r\n"
    + PART3_MIME
    + PART3_BODY
    + b"\r\n--outer--\r\nepilogue\r\n"
)


def section(text: str):
    """twisted's parse of one FETCH item such as C{BODY[1.2.MIME]}."""
    parser = _FetchParser()
    parser.parseString(text.encode())
    [item] = parser.result
    return item


def fetch(raw: bytes, text: str) -> bytes | None:
    return sectionBytes(parseEntity(raw), section(text))


class NestedMultipartTests(SynchronousTestCase):
    def test_partsAreTheirBodiesExactly(self):
        self.assertEqual(fetch(MESSAGE, "BODY[1]"), PART1_BODY)
        self.assertEqual(fetch(MESSAGE, "BODY[2]"), PART2_BODY)
        self.assertEqual(fetch(MESSAGE, "BODY[2.1]"), PART21_BODY)
        self.assertEqual(fetch(MESSAGE, "BODY[2.2]"), PART22_BODY)

    def test_mimeHeadersOfParts(self):
        self.assertEqual(fetch(MESSAGE, "BODY[1.MIME]"), PART1_MIME)
        self.assertEqual(fetch(MESSAGE, "BODY[2.MIME]"), PART2_MIME)
        self.assertEqual(fetch(MESSAGE, "BODY[2.2.MIME]"), PART22_MIME)

    def test_encapsulatedMessage(self):
        self.assertEqual(fetch(MESSAGE, "BODY[3]"), PART3_BODY)
        self.assertEqual(fetch(MESSAGE, "BODY[3.MIME]"), PART3_MIME)
        self.assertEqual(fetch(MESSAGE, "BODY[3.HEADER]"), INNER_HEADER)
        self.assertEqual(fetch(MESSAGE, "BODY[3.TEXT]"), INNER_BODY)
        self.assertEqual(fetch(MESSAGE, "BODY[3.1]"), INNER_PART1_BODY)
        self.assertEqual(fetch(MESSAGE, "BODY[3.2]"), INNER_PART2_BODY)
        self.assertEqual(fetch(MESSAGE, "BODY[3.2.MIME]"), INNER_PART2)
        self.assertEqual(
            fetch(MESSAGE, "BODY[3.HEADER.FIELDS (SUBJECT)]"),
            b"Subject: inner\r\n\r\n",
        )

    def test_wholeMessageHeaderAndText(self):
        self.assertEqual(fetch(MESSAGE, "BODY[]"), MESSAGE)
        self.assertEqual(fetch(MESSAGE, "BODY[HEADER]"), TOP_HEADER)
        self.assertEqual(fetch(MESSAGE, "BODY[TEXT]"), MESSAGE[len(TOP_HEADER) :])
        self.assertEqual(
            fetch(MESSAGE, "BODY[HEADER.FIELDS.NOT (FROM MIME-VERSION CONTENT-TYPE)]"),
            b"Subject: nested\r\n\r\n",
        )

    def test_missingPartsAreNone(self):
        for text in ("BODY[4]", "BODY[2.3]", "BODY[1.2]", "BODY[3.3.MIME]"):
            self.assertIsNone(fetch(MESSAGE, text), text)


class SinglePartTests(SynchronousTestCase):
    HEADER = b"Subject: one\r\nContent-Type: text/plain\r\n\r\n"
    BODY = b"just\r\ntext\r\n"

    def test_partOneOfANonMultipartIsItsBody(self):
        raw = self.HEADER + self.BODY
        self.assertEqual(fetch(raw, "BODY[1]"), self.BODY)
        self.assertEqual(fetch(raw, "BODY[1.MIME]"), self.HEADER)
        self.assertIsNone(fetch(raw, "BODY[2]"))

    def test_bareLineFeeds(self):
        raw = (
            b"Content-Type: multipart/mixed; boundary=b\n\n"
            b"--b\n\nfirst\n--b\nX: y\n\nsecond\n--b--\n"
        )
        self.assertEqual(fetch(raw, "BODY[1]"), b"first")
        self.assertEqual(fetch(raw, "BODY[1.MIME]"), b"\n")
        self.assertEqual(fetch(raw, "BODY[2]"), b"second")
        self.assertEqual(fetch(raw, "BODY[2.MIME]"), b"X: y\n\n")

    def test_missingCloseDelimiterRunsToTheEnd(self):
        raw = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\nonly part"
        self.assertEqual(fetch(raw, "BODY[1]"), b"only part")

    def test_multipartWithoutBoundaryIsOnePart(self):
        raw = b"Content-Type: multipart/mixed\r\n\r\n--x\r\n\r\ntext\r\n--x--\r\n"
        self.assertEqual(fetch(raw, "BODY[1]"), raw[raw.index(b"--x") :])


class CorpusTests(SynchronousTestCase):
    """Damaged mail: every section has an answer and no traceback."""

    SECTIONS = (
        "BODY[]",
        "BODY[HEADER]",
        "BODY[TEXT]",
        "BODY[1]",
        "BODY[1.MIME]",
        "BODY[2]",
        "BODY[1.1]",
        "BODY[2.HEADER]",
    )

    def test_everyCorpusMessageAnswersEverySection(self):
        files = sorted(Path(HERE).glob("*.eml"))
        self.assertGreater(len(files), 20)
        for path in files:
            raw = path.read_bytes()
            root = parseEntity(raw)
            for text in self.SECTIONS:
                data = sectionBytes(root, section(text))
                if data is not None:
                    self.assertIn(data.rstrip(b"\r\n"), raw + b"\r\n", (path, text))
            self.assertEqual(sectionBytes(root, section("BODY[]")), raw)
            self.assertIsNotNone(sectionBytes(root, section("BODY[1.MIME]")), path)
            fields = sectionBytes(root, section("BODY[HEADER.FIELDS (SUBJECT)]"))
            self.assertTrue(fields.endswith(b"\r\n"), path)

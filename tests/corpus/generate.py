"""The damaged-mail corpus: each case's bytes, where its shape comes from, and
the word a search must find it by.

``python -m tests.corpus.generate`` writes the C{.eml} files beside this
module (tests.test_corpus checks they match). Every case is bytes that SMTP
can carry: CRLF-separated lines shorter than 998 octets (bare CR and bare LF
inside a line are part of the damage), and no LF directly followed by a dot
(smtplib dot-stuffs after a bare LF too, which no server undoes).
"""

from __future__ import annotations

import base64
import os
import re
from dataclasses import dataclass

HERE = os.path.dirname(os.path.abspath(__file__))
MAX_LINE = 998  # RFC 5322 2.1.1, CRLF not counted


@dataclass(frozen=True)
class Case:
    name: str
    raw: bytes
    word: str | None  # a word the search finds the message by, if any
    shape: str  # what is damaged, and where such mail comes from

    @property
    def filename(self) -> str:
        return f"{self.name}.eml"


def _crlf(text: str) -> bytes:
    """Lines of C{text} joined with CRLF, UTF-8 (use bytes for anything else)."""
    return text.replace("\n", "\r\n").encode()


FROM = "From: Bob Sender <bob@example.org>\r\n"
TO = "To: alice@example.test\r\n"
DATE = "Date: Mon, 02 Feb 2026 10:00:00 +0000\r\n"


def _head(subject: str, extra: str = "", n: int = 0) -> bytes:
    return (
        f"{FROM}{TO}Subject: {subject}\r\n{DATE}"
        f"Message-ID: <corpus{n:02d}@example.org>\r\n{extra}"
    ).encode()


def _nested(depth: int, word: str) -> bytes:
    opening = []
    for level in range(depth):
        opening.append(
            f'Content-Type: multipart/mixed; boundary="level{level}"\r\n\r\n'
            f"--level{level}\r\n"
        )
    inner = f"Content-Type: text/plain\r\n\r\ndeepest part {word}\r\n"
    closing = "".join(f"--level{level}--\r\n" for level in reversed(range(depth)))
    return ("".join(opening) + inner + closing).encode()


def cases() -> list[Case]:
    hugeSubject = "".join(
        f"\r\n folded piece {i:04d} of a long subject" for i in range(2000)
    )
    manyHeaders = "".join(f"X-Filler-{i:04d}: value {i}\r\n" for i in range(5000))
    signature = base64.b64encode(bytes(range(256)) * 200).decode()
    hugeB = "".join(
        f"\r\n\t{signature[i : i + 76]}" for i in range(0, len(signature), 76)
    )
    return [
        Case(
            "01-header-line-without-colon",
            _head("colon corpus01", n=1)
            + b"This line has no colon at all\r\nX-After: still a header?\r\n\r\n"
            + b"Body after a broken header.\r\n",
            "corpus01",
            "A header line without a colon (scripts that build headers by"
            " hand); dkimpy refuses to parse it (MessageFormatError).",
        ),
        Case(
            "02-no-header-body-only",
            b"Hello, this message has no header at all. corpus02\r\n"
            b"Second line of the body.\r\n",
            "corpus02",
            "A message with no header at all (scripts piping text into SMTP);"
            " dkimpy refuses it too.",
        ),
        Case(
            "03-empty",
            b"",
            None,
            "An empty DATA: nothing but the final dot (probing clients).",
        ),
        Case(
            "04-headers-only-no-blank-line",
            _head("only headers corpus04", n=4).rstrip(b"\r\n"),
            "corpus04",
            "Header block that ends the message, no empty line, no body"
            " (monitoring pings, notification scripts).",
        ),
        Case(
            "05-headers-blank-line-no-body",
            _head("empty body corpus05", n=5) + b"\r\n",
            "corpus05",
            "Headers and the empty line, then nothing.",
        ),
        Case(
            "06-bare-lf-everywhere",
            b"From: bob@example.org\nTo: alice@example.test\n"
            b"Subject: bare LF corpus06\n\nUnix line ends\nfrom a script.\n",
            "corpus06",
            "A whole message with bare LF line ends (Unix tools writing to a"
            " socket); on the wire it is one CRLF line.",
        ),
        Case(
            "07-bare-cr-in-headers",
            b"From: bob@example.org\rTo: alice@example.test\r\n"
            b"Subject: bare CR corpus07\rX-Old-Mac: yes\r\n\r\n"
            b"Classic Mac OS line ends\rinside the body.\r\n",
            "corpus07",
            "Bare CR as line end (classic Mac OS tools, some PHP mailers).",
        ),
        Case(
            "08-bare-cr-lf-mixed-body",
            _head("mixed line ends corpus08", n=8)
            + b"\r\nline one\nline two\rline three\r\r\nline four\n\r\n",
            "corpus08",
            "Mixed CR, LF, CRCRLF line ends in the body (Windows tools that"
            " convert twice).",
        ),
        Case(
            "09-8bit-in-headers",
            b"From: J\xf6rg M\xfcller <joerg@example.org>\r\n"
            + TO.encode()
            + b"Subject: Gr\xfc\xdfe corpus09 \xc3\xa9t\xc3\xa9\r\n"
            + DATE.encode()
            + b"\r\nLatin-1 and UTF-8 bytes in headers without SMTPUTF8.\r\n",
            "corpus09",
            "Raw 8-bit header bytes, Latin-1 and UTF-8 mixed (old clients"
            " that never learnt RFC 2047).",
        ),
        Case(
            "10-nul-bytes",
            _head("nul\x00byte corpus10", "X-Nul: a\x00b\r\n", n=10)
            + b"\r\nA NUL \x00 in the body too.\r\n",
            "corpus10",
            "NUL octets in a header and in the body (binary garbage from"
            " broken gateways).",
        ),
        Case(
            "11-invalid-utf8-headers",
            b"From: \xff\xfe <bob@example.org>\r\n"
            + TO.encode()
            + b"Subject: \xc3\x28 broken \xe2\x82 utf8 \xf0\x9f corpus11\r\n"
            + b"X-Garbage: \x80\x81\x82\r\n\r\nBody is fine.\r\n",
            "corpus11",
            "Invalid UTF-8 sequences in headers (truncated multi-byte"
            " characters from cut-off subjects).",
        ),
        Case(
            "12-unknown-charset",
            _head("unknown charset corpus12", n=12)
            + b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=x-unknown\r\n"
            + b"Content-Transfer-Encoding: 8bit\r\n\r\nbody in \xe4\xf6\xfc"
            + b" x-unknown\r\n",
            "corpus12",
            "charset=x-unknown (a charset name no codec knows).",
        ),
        Case(
            "13-charset-mismatch",
            _head("mismatch corpus13", n=13)
            + b'MIME-Version: 1.0\r\nContent-Type: text/plain; charset="utf-8"\r\n'
            + b"Content-Transfer-Encoding: 8bit\r\n\r\nsays UTF-8 but is Latin-1:"
            + b" caf\xe9 na\xefve\r\n",
            "corpus13",
            "charset=utf-8 declared, Latin-1 bytes sent (very common).",
        ),
        Case(
            "14-encoded-word-bad-base64",
            _head("=?utf-8?B?!!!?= corpus14 =?utf-8?B?YWJj?=", n=14) + b"\r\nBody.\r\n",
            "corpus14",
            "RFC 2047 encoded word whose B payload is not base64.",
        ),
        Case(
            "15-encoded-word-bogus-charset",
            _head("=?bogus?Q?x?= corpus15 =?utf-8?X?y?=", n=15) + b"\r\nBody.\r\n",
            "corpus15",
            "Encoded words with an unknown charset and an unknown encoding.",
        ),
        Case(
            "16-encoded-word-unterminated",
            b"From: =?utf-8?B?Qm9i <bob@example.org>\r\n"
            + TO.encode()
            + b"Subject: =?utf-8?Q?unterminated_word corpus16\r\n"
            + DATE.encode()
            + b"\r\nBody.\r\n",
            "corpus16",
            "Encoded words cut off before ?= (subjects truncated by a length limit).",
        ),
        Case(
            "17-multipart-without-boundary",
            _head("no boundary corpus17", n=17)
            + b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed\r\n\r\n"
            + b"--\r\nContent-Type: text/plain\r\n\r\ntext\r\n----\r\n",
            "corpus17",
            "multipart/mixed without a boundary parameter.",
        ),
        Case(
            "18-boundary-never-closed",
            _head("unclosed corpus18", n=18)
            + b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b1"\r\n'
            + b"\r\n--b1\r\nContent-Type: text/plain\r\n\r\nfirst part\r\n"
            + b"--b1\r\nContent-Type: application/octet-stream\r\n\r\ncut off here",
            "corpus18",
            "A multipart whose close delimiter never comes (truncated transfers).",
        ),
        Case(
            "19-nested-50-deep",
            _head("nested corpus19", "MIME-Version: 1.0\r\n", n=19)
            + _nested(50, "corpus19"),
            "corpus19",
            "multipart nested 50 levels deep (parser bombs).",
        ),
        Case(
            "20-content-type-garbage",
            _head("ctype corpus20", n=20)
            + b'Content-Type: ;;;=== "garbage/ ; charset=\r\n'
            + b"Content-Disposition: =;filename\r\n\r\nBody under garbage.\r\n",
            "corpus20",
            "Content-Type and Content-Disposition that parse as nothing.",
        ),
        Case(
            "21-base64-invalid",
            _head("base64 corpus21", n=21)
            + b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="x"\r\n'
            + b"\r\n--x\r\nContent-Type: text/plain\r\n"
            + b"Content-Transfer-Encoding: base64\r\n\r\n"
            + b"!!!@@@ not base64 ***\r\nYWJ\r\n"
            + b"--x\r\nContent-Type: application/pdf; name=a.pdf\r\n"
            + b"Content-Transfer-Encoding: base64\r\n"
            + b'Content-Disposition: attachment; filename="a.pdf"\r\n\r\n'
            + b"JVBERi0x===LjQK\r\n%%%\r\n--x--\r\n",
            "corpus21",
            "base64 bodies with invalid characters and bad padding.",
        ),
        Case(
            "22-quoted-printable-broken",
            _head("qp corpus22", n=22)
            + b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=iso-8859-1\r\n"
            + b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
            + b"bad escapes =ZZ =4 =\r\n=\r\nsoft break at end =",
            "corpus22",
            "quoted-printable with invalid escapes and a dangling soft break.",
        ),
        Case(
            "23-transfer-encoding-garbage",
            _head("cte corpus23", n=23)
            + b"MIME-Version: 1.0\r\nContent-Type: text/plain\r\n"
            + b"Content-Transfer-Encoding: x-garbage; base64 \x01\r\n\r\n"
            + b"plain text under a garbage encoding\r\n",
            "corpus23",
            "A Content-Transfer-Encoding no decoder knows.",
        ),
        Case(
            "24-huge-folded-subject",
            _head(f"huge corpus24{hugeSubject}", n=24) + b"\r\nBody.\r\n",
            "corpus24",
            "A Subject folded over 2000 continuation lines (about 80 KB;"
            " header-stuffing spam).",
        ),
        Case(
            "25-five-thousand-headers",
            _head("many corpus25", manyHeaders, n=25) + b"\r\nBody.\r\n",
            "corpus25",
            "5000 header fields (about 130 KB of header).",
        ),
        Case(
            "26-duplicate-headers",
            _head("first corpus26", n=26)
            + b"From: Mallory <mallory@example.net>\r\nSubject: second subject\r\n"
            + DATE.encode()
            + b"Message-ID: <other@example.net>\r\n\r\nTwo of everything.\r\n",
            "corpus26",
            "Two From, Subject, Date and Message-ID fields (RFC 5322 allows"
            " one; seen in spoofing attempts).",
        ),
        Case(
            "27-date-unparsable",
            _crlf(
                "From: bob@example.org\nTo: alice@example.test\n"
                "Subject: date corpus27\nDate: yesterday at noon\n"
                "Date: Mon, 99 Foo 99999 99:99:99 +9999\n\nBody.\n"
            ),
            "corpus27",
            "Date fields no date parser takes.",
        ),
        Case(
            "28-from-name-without-address",
            _crlf(
                "From: Just A Name\nTo: alice@example.test\n"
                "Subject: name only corpus28\n\nBody.\n"
            ),
            "corpus28",
            "From with a display name and no address.",
        ),
        Case(
            "29-from-group-syntax",
            _crlf(
                "From: undisclosed-recipients:;\nTo: friends: a@example.org, "
                "b@example.org;\nSubject: group corpus29\n\nBody.\n"
            ),
            "corpus29",
            "Group syntax (RFC 5322 3.4) in From and To.",
        ),
        Case(
            "30-from-garbage",
            _crlf(
                'From: <<<@@@>>> "unbalanced (comment <@>\nTo: ,,,;;;<>\n'
                "Subject: garbage from corpus30\n\nBody.\n"
            ),
            "corpus30",
            "Address fields that are no address at all.",
        ),
        Case(
            "31-dkim-truncated",
            b"DKIM-Signature: v=1; a=rsa-sha256; d=exa\r\n"
            + _head("dkim truncated corpus31", n=31)
            + b"\r\nBody.\r\n",
            "corpus31",
            "A DKIM-Signature cut off mid-tag.",
        ),
        Case(
            "32-dkim-b-not-base64",
            b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.org;"
            b" s=sel;\r\n\th=from:to:subject; bh=!!!notbase64!!!;\r\n"
            b"\tb=***not base64 either***\r\n"
            + _head("dkim b corpus32", n=32)
            + b"\r\nBody.\r\n",
            "corpus32",
            "A DKIM-Signature whose b= and bh= are not base64.",
        ),
        Case(
            "33-dkim-missing-tags",
            b"DKIM-Signature: v=1; b=abc\r\nDKIM-Signature: ;;;\r\n"
            b"DKIM-Signature:\r\n"
            + _head("dkim tags corpus33", n=33)
            + b"\r\nBody.\r\n",
            "corpus33",
            "DKIM-Signatures without d=, s=, h=, bh= (and empty ones).",
        ),
        Case(
            "34-dkim-huge",
            b"DKIM-Signature: v=1; a=rsa-sha256; d=example.org; s=sel;"
            b" h=from:subject;\r\n\tbh=YWJj; b="
            + hugeB.encode()
            + b"\r\n"
            + _head("dkim huge corpus34", n=34)
            + b"\r\nBody.\r\n",
            "corpus34",
            "A DKIM-Signature with a 68 KB b= folded over 900 lines.",
        ),
        Case(
            "35-dkim-binary",
            b"DKIM-Signature: \xff\x00\xfe v=1; d=\x80.example; s=\x01;"
            b" b=\xc3\x28\r\n" + _head("dkim binary corpus35", n=35) + b"\r\nBody.\r\n",
            "corpus35",
            "A DKIM-Signature of binary bytes.",
        ),
        Case(
            "36-first-line-starts-with-space",
            b" Subject: a continuation with nothing to continue\r\n"
            + _head("leading space corpus36", n=36)
            + b"\r\nBody.\r\n",
            "corpus36",
            "The first header line starts with whitespace (a folded line"
            " whose field was cut off).",
        ),
        Case(
            "37-mbox-from-line",
            b"From bob@example.org Mon Feb  2 10:00:00 2026\r\n"
            + _head("mbox corpus37", n=37)
            + b"\r\n>From the mbox quoting.\r\n",
            "corpus37",
            "An mbox 'From ' separator line left at the top (mail re-sent"
            " from an mbox file).",
        ),
        Case(
            "38-header-names-broken",
            _head("names corpus38", n=38)
            + b"X Bad Name: spaces in the name\r\nSubj\xe9ct: 8-bit name\r\n"
            + b"X-Empty:\r\n: no name\r\nX-Spaced-Colon   : value\r\n\r\nBody.\r\n",
            "corpus38",
            "Field names with spaces, 8-bit octets, none at all; an empty"
            " value; whitespace before the colon (RFC 5322 obsolete syntax).",
        ),
        Case(
            "39-dot-lines",
            _head("dots corpus39", n=39) + b"\r\n.\r\n..\r\n.hidden\r\n. \r\nend\r\n",
            "corpus39",
            "Body lines that start with dots, one that is a lone dot"
            " (dot-stuffing, RFC 5321 4.5.2).",
        ),
        Case(
            "40-real-outlook-tnef",
            _crlf(
                'From: "Smith, John" <john.smith@example.com>\n'
                'To: "alice@example.test" <alice@example.test>\n'
                "Subject: RE: Quarterly numbers corpus40\n"
                "Thread-Topic: Quarterly numbers\nThread-Index: AQHZ1234abcd==\n"
                "Date: Tue, 3 Feb 2026 09:12:44 +0000\n"
                "Message-ID: <AM0PR01MB1234@AM0PR01MB1234.eurprd01.prod.example.com>\n"
                "Content-Language: en-US\nX-MS-Has-Attach: yes\n"
                "X-MS-TNEF-Correlator: <AM0PR01MB1234@example.com>\n"
                "MIME-Version: 1.0\n"
                'Content-Type: multipart/mixed; boundary="_000_AM0PR01_"\n\n'
                "--_000_AM0PR01_\n"
                'Content-Type: text/plain; charset="windows-1252"\n'
                "Content-Transfer-Encoding: quoted-printable\n\n"
                "Hi Alice,=0D=0A=0D=0Athe numbers are attached =96 see the =\n"
                "sheet=85\n\n"
                "--_000_AM0PR01_\n"
                'Content-Type: application/ms-tnef; name="winmail.dat"\n'
                "Content-Transfer-Encoding: base64\n"
                'Content-Disposition: attachment; filename="winmail.dat"\n\n'
                "eJ8+IhAAAQaQCAAEAAAAAAABAAEAAQeQBgAIAAAA5AQAAAAAAADoAAEIgAcAGAAAAElQTS5N\n"
                "--_000_AM0PR01_--\n"
            ),
            "corpus40",
            "Real-world shape: an Exchange reply with windows-1252"
            " quoted-printable text and a winmail.dat (TNEF) attachment.",
        ),
        Case(
            "41-real-broken-bounce",
            _crlf(
                "From: MAILER-DAEMON@example.net (Mail Delivery System)\n"
                "To: alice@example.test\nSubject: Undelivered Mail corpus41\n"
                "Date: Tue, 3 Feb 2026 09:12:44 +0000\nMIME-Version: 1.0\n"
                "Content-Type: multipart/report; report-type=delivery-status;\n"
                '\tboundary="BOUNDARY.1"\n\n'
                "--BOUNDARY.1\nContent-Type: text/plain\n\nI'm sorry.\n\n"
                "--BOUNDARY.1\nContent-Type: message/delivery-status\n\n"
                "Reporting-MTA dns; broken\nFinal-Recipient:\nAction failed\n\n"
                "--BOUNDARY.1\nContent-Type: message/rfc822\n\n"
                "no header here, just the truncated original\n"
                "--BOUNDARY.1"
            ),
            "corpus41",
            "Real-world shape: a bounce whose delivery-status is garbage and"
            " whose returned message is truncated, the last boundary unclosed.",
        ),
        Case(
            "42-real-spam-html-base64",
            b"From: =?gb2312?B?zqK7+g==?= <promo@example.biz>\r\n"
            + b"To: undisclosed-recipients:;\r\n"
            + b"Subject: =?gb2312?B?1tDOxA?= =?utf-8?Q?=F0=9F=92=B0_Win?= corpus42\r\n"
            + b"X-Mailer: Foxmail 6, 13, 102, 15 [cn]\r\nMIME-Version: 1.0\r\n"
            + b"Content-Type: text/html; charset=gb2312\r\n"
            + b"Content-Transfer-Encoding: base64\r\n\r\n"
            + base64.b64encode(
                "<html><body><b>\u4e2d\u6587</b> winnings".encode("gb2312")
            )
            + b"\r\n",
            "corpus42",
            "Real-world shape: HTML-only spam, gb2312 encoded words (one with"
            " missing padding), base64 body, no Date, no Message-ID.",
        ),
        Case(
            "43-real-iso-2022-jp",
            b"From: =?ISO-2022-JP?B?GyRCJUYlOSVIGyhC?= <jp@example.jp>\r\n"
            + TO.encode()
            + b"Subject: =?ISO-2022-JP?B?GyRCN29MPhsoQg==?= corpus43\r\n"
            + DATE.encode()
            + b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=ISO-2022-JP\r\n"
            + b"Content-Transfer-Encoding: 7bit\r\n\r\n"
            + "\u65e5\u672c\u8a9e\u306e\u672c\u6587".encode("iso-2022-jp")
            + b"\r\n\x1b$B\x1b(B stray escapes\r\n",
            "corpus43",
            "Real-world shape: Japanese mail in ISO-2022-JP (escape"
            " sequences in the body) with a stray empty escape run.",
        ),
        Case(
            "44-real-list-preamble-epilogue",
            _head("list corpus44", n=44)
            + b"List-Id: <team.lists.example.org>\r\nMIME-Version: 1.0\r\n"
            + b'Content-Type: multipart/alternative; boundary="alt"\r\n\r\n'
            + b"This is a multi-part message in MIME format.\r\n--alt\r\n"
            + b"Content-Type: text/plain; charset=us-ascii\r\n\r\nhello list\r\n"
            + b"--alt\r\nContent-Type: text/html\r\n\r\n<p>hello list</p>\r\n"
            + b"--alt--\r\n"
            + b"_______________________________________________\r\n"
            + b"team mailing list footer after the close delimiter\r\n",
            "corpus44",
            "Real-world shape: a mailing list that appends its footer after"
            " the close delimiter (the epilogue).",
        ),
        Case(
            "45-rfc822-part-garbage",
            _head("forwarded corpus45", n=45)
            + b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="f"\r\n'
            + b"\r\n--f\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n"
            + b"--f\r\nContent-Type: message/rfc822\r\n\r\n\x00\xff\xfe garbage"
            + b" where a message should be\r\n: \r\n--f--\r\n",
            "corpus45",
            "A message/rfc822 part that holds no message.",
        ),
        Case(
            "46-header-of-nothing-but-folding",
            _head("folding corpus46", n=46)
            + b"X-Folded:\r\n \r\n\t\r\n \r\nX-Tabs:\t\t\t\r\n\r\nBody.\r\n",
            "corpus46",
            "Fields whose value is only folding whitespace.",
        ),
        Case(
            "47-mail-loop-received-over-256k",
            _head("loop corpus47", n=47)
            + "".join(
                f"Received: from relay{i % 2}.example.net by relay{(i + 1) % 2}"
                f".example.net; Mon, 2 Feb 2026 10:00:00 +0000\r\n"
                for i in range(3500)
            ).encode()
            + b"\r\nThe header is longer than the part metadata parses.\r\n",
            "corpus47",
            "A mail loop: 3500 Received fields, over 256 KiB of header (the"
            " metadata parses the first 256 KiB).",
        ),
        Case(
            "48-attachment-names-broken",
            _head("filenames corpus48", n=48)
            + b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="a"\r\n'
            + b"\r\n--a\r\nContent-Type: text/plain\r\n\r\nthree files\r\n"
            + b"--a\r\nContent-Type: application/pdf\r\n"
            + b'Content-Disposition: attachment; filename="Rechnung M\xe4rz.pdf"\r\n'
            + b"\r\nJVBERi0xLjQK\r\n"
            + b"--a\r\nContent-Type: application/pdf\r\n"
            + b"Content-Disposition: attachment; filename*=utf-8''%ZZ%E9%\r\n"
            + b"\r\nJVBERi0xLjQK\r\n"
            + b"--a\r\nContent-Type: application/octet-stream;"
            + b' name="=?utf-8?B?!!?="\r\n'
            + b"Content-Disposition: attachment; filename*0=a; filename*2=c\r\n"
            + b"\r\nAAAA\r\n--a--\r\n",
            "corpus48",
            "Attachment names in raw 8-bit, in RFC 2231 with bad percent"
            " escapes, with a missing continuation, as a broken encoded word.",
        ),
        Case(
            "49-starts-with-empty-line",
            b"\r\nFrom: not-a-header@example.org\r\nSubject: body corpus49\r\n",
            "corpus49",
            "An empty first line: the whole message is body, however much of"
            " it looks like header fields.",
        ),
        Case(
            "50-odd-charsets",
            _head("charsets corpus50", n=50)
            + b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="c"\r\n'
            + b"\r\n--c\r\nContent-Type: text/plain; charset=idna\r\n\r\n"
            + b"a codec that raises instead of replacing \xff\r\n"
            + b"--c\r\nContent-Type: text/plain; charset=utf-16\r\n"
            + b"Content-Transfer-Encoding: 8bit\r\n\r\n\xff\xfeh\x00i\x00!\r\n"
            + b"--c\r\nContent-Type: text/html; charset=utf-7\r\n\r\n"
            + b"<p>+AGEAYgBj- +ZZZ broken</p>\r\n"
            + b'--c\r\nContent-Type: text/plain; charset="unicode-escape"\r\n\r\n'
            + b"\\N{bad \\x\r\n--c--\r\n",
            "corpus50",
            "Charset names of Python codecs that are no mail charsets (idna"
            " raises whatever the error handler), UTF-16 with an odd number of"
            " octets, broken UTF-7.",
        ),
    ]


def checkWireable(case: Case) -> None:
    """Raise ValueError when SMTP could not carry C{case} unchanged."""
    for line in case.raw.split(b"\r\n"):
        if len(line) > MAX_LINE:
            raise ValueError(f"{case.name}: a line of {len(line)} octets")
    if re.search(rb"(?<!\r)\n\.", case.raw):
        raise ValueError(f"{case.name}: LF followed by a dot")


def main() -> None:
    for case in cases():
        checkWireable(case)
        with open(os.path.join(HERE, case.filename), "wb") as f:
            f.write(case.raw)


if __name__ == "__main__":
    main()

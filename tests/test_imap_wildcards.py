"""LIST patterns: what twisted's regular expressions matched, in linear time."""

from __future__ import annotations

import time

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.mail.imap4 import wildcardToRegexp
from twisted.trial.unittest import SynchronousTestCase

from mailraven.imap.wildcards import FolderPattern

names = st.text(alphabet="ab/%*.", max_size=12)
patterns = st.text(alphabet="ab/%*", max_size=8)


class FolderPatternTests(SynchronousTestCase):
    def test_examplesOfRFC3501(self):
        cases = [
            ("*", "INBOX", True),
            ("*", "Archive/2026", True),
            ("%", "Archive/2026", False),
            ("Archive/%", "Archive/2026", True),
            ("Archive/%", "Archive/2026/Q1", False),
            ("Archive/*", "Archive/2026/Q1", True),
            ("inbox", "INBOX", True),
            ("S%", "Sent", True),
            ("S%", "Junk", False),
            ("", "INBOX", False),
        ]
        for pattern, name, expected in cases:
            self.assertEqual(
                FolderPattern(pattern).fullmatch(name), expected, (pattern, name)
            )

    @settings(max_examples=2000, deadline=None)
    @given(patterns, names)
    def test_sameAnswersAsTwistedsExpressions(self, pattern, name):
        expected = bool(wildcardToRegexp(pattern, "/").fullmatch(name))
        self.assertEqual(FolderPattern(pattern).fullmatch(name), expected)

    def test_manyWildcardsAgainstALongNameAreQuick(self):
        """Found by an attacker: LIST "" "%%%%%%!" against a 190-character
        folder name held the reactor for minutes (twisted's regexp)."""
        name = "a" * 190
        started = time.monotonic()
        for pattern in ("%%%%%%!", "%a" * 200 + "!", "*a*a*a*a*a*a*a*a*b", "%" * 5000):
            FolderPattern(pattern).fullmatch(name)
        self.assertLess(time.monotonic() - started, 0.5)

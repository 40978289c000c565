"""LIST and LSUB patterns (RFC 3501 6.3.8) matched in time linear in the name.

twisted.mail.imap4 turns a pattern into a backtracking regular expression:
each further C{%} or C{*} multiplied the time one long name took (five took
22 s for a 190-character name, on the reactor thread, so the whole server
stopped). Here the pattern runs as a set of positions kept in the bits of an
integer: one pass over the name, whatever the pattern.
"""

from __future__ import annotations

STAR, PERCENT = "*", "%"
DELIMITER = "/"


class FolderPattern:
    """C{fullmatch(name)}: whether the pattern matches the whole name,
    without regard to case (as twisted matched)."""

    def __init__(self, pattern: str) -> None:
        tokens = _collapse(pattern.lower())
        self._accept = 1 << len(tokens)
        self._literal: dict[str, int] = {}
        self._star = self._percent = 0
        for position, token in enumerate(tokens):
            bit = 1 << position
            if token == STAR:
                self._star |= bit
            elif token == PERCENT:
                self._percent |= bit
            else:
                self._literal[token] = self._literal.get(token, 0) | bit
        self._wild = self._star | self._percent
        # more literal characters than a name can hold match nothing
        self._literals = sum(1 for t in tokens if t not in (STAR, PERCENT))

    def _closure(self, states: int) -> int:
        """A wildcard may match nothing: its position also stands for the
        next one (no two wildcards are neighbours after collapsing)."""
        return states | ((states & self._wild) << 1)

    def fullmatch(self, name: str) -> bool:
        name = name.lower()
        if self._literals > len(name):
            return False
        states = self._closure(1)
        for char in name:
            stay = states & self._star
            if char != DELIMITER:
                stay |= states & self._percent
            advance = (states & self._literal.get(char, 0)) << 1
            states = self._closure(stay | advance)
            if not states:
                return False
        return bool(states & self._accept)


def _collapse(pattern: str) -> list[str]:
    """Characters and wildcards, runs of wildcards as one (C{*} wins)."""
    tokens: list[str] = []
    for char in pattern:
        if char in (STAR, PERCENT) and tokens and tokens[-1] in (STAR, PERCENT):
            if char == STAR:
                tokens[-1] = STAR
            continue
        tokens.append(char)
    return tokens

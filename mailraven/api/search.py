"""Search syntax of the mobile API, compiled to an FTS5 MATCH expression.

Users type words, C{"phrases"}, C{prefix*}, C{from:addr}, C{to:addr},
C{before:2026-01-31}, C{after:2026-01-01}. Every term reaches FTS5 as a quoted
string (quotes doubled), so nothing a user types is FTS5 syntax: C{NEAR(},
C{"}, C{AND}, C{col:} or C{@} are searched for, never interpreted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime

MAX_QUERY = 1000
_TERM = re.compile(r'(?:(\w+):)?("([^"]*)"?|\S+)')
_WORDY = re.compile(r"\w")
COLUMNS = {"from": "sender", "to": "recipients", "subject": "subject"}
SEARCH_ORDERS = ("date", "relevance")  # newest first by default, as mail clients show


class BadQuery(ValueError):
    """The query cannot be searched; the message says why (400)."""


@dataclass(frozen=True)
class SearchQuery:
    match: str  # FTS5 expression, "" when only dates were given
    before: str | None = None
    after: str | None = None
    nothing: bool = False  # only punctuation: a valid search that finds nothing


def _quote(text: str) -> str:
    # FTS5 ends a string at NUL ("unterminated string"); NUL separates words
    # for its tokenizer anyway
    return '"' + text.replace('"', '""').replace("\x00", " ") + '"'


def _day(value: str, field: str) -> str:
    try:
        day = date.fromisoformat(value)
    except ValueError:
        raise BadQuery(f"{field}: expects a date like 2026-01-31") from None
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return start.isoformat(timespec="microseconds")


def parseQuery(text: str) -> SearchQuery:
    if len(text) > MAX_QUERY:
        raise BadQuery(f"the query is longer than {MAX_QUERY} characters")
    parts: list[str] = []
    before = after = None
    for match in _TERM.finditer(text):
        field, raw, quoted = match.group(1), match.group(2), match.group(3)
        key = (field or "").lower()
        value = quoted if quoted is not None else raw
        if key == "before":
            before = _day(value, "before")
            continue
        if key == "after":
            after = _day(value, "after")
            continue
        if key not in COLUMNS:
            # not one of ours: the whole thing, colon included, is a search term
            value = match.group(0) if quoted is None else value
            key = ""
        prefix = quoted is None and value.endswith("*")
        value = value.rstrip("*") if prefix else value
        if not _WORDY.search(value):
            continue  # punctuation alone matches nothing in the index
        term = _quote(value) + (" *" if prefix else "")
        parts.append(f"{COLUMNS[key]} : {term}" if key else term)
    if not parts and before is None and after is None:
        if not text.strip():
            raise BadQuery("the query is empty")
        return SearchQuery("", nothing=True)
    return SearchQuery(" AND ".join(parts), before, after)

"""
Fuzz target: the search syntax of the mobile API (mailraven/api/search.py).

The input, as UTF-8, is the C{q} argument. Invariants: C{parseQuery} gives a
L{SearchQuery} or raises L{BadQuery}, nothing else; dates are ISO timestamps;
and the FTS5 expression it builds runs against a real in-memory FTS5 table of
the index's own definition without any SQLite error (nothing the user typed
may be FTS5 syntax).

    python tests/fuzz/fuzz_search.py -max_total_time=60 tests/fuzz/corpus/search
"""

from __future__ import annotations

import sqlite3
from datetime import datetime

if __name__ == "__main__":
    from harness import instrumented
else:
    from tests.fuzz.harness import uninstrumented as instrumented

with instrumented():
    from mailraven.api.search import BadQuery, SearchQuery, parseQuery
    from mailraven.store.searchindex import (
        createSearchTable,
        indexDocument,
        searchTable,
    )

_conn = sqlite3.connect(":memory:")
createSearchTable(_conn, 1)
indexDocument(
    _conn,
    1,
    1,
    ("Bob <bob@example.org>", "alice@example.test", "Budget 2026", "Müller's plan"),
)
_SQL = f"SELECT rowid FROM {searchTable(1)} WHERE {searchTable(1)} MATCH ?"


def check(data: bytes) -> None:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return  # the API decodes the query string before this runs
    try:
        query = parseQuery(text)
    except BadQuery as e:
        assert str(e), "a BadQuery must say why"
        return
    assert isinstance(query, SearchQuery)
    for day in (query.before, query.after):
        if day is not None:
            datetime.fromisoformat(day)
    if query.match:
        try:
            _conn.execute(_SQL, (query.match,)).fetchall()
        except sqlite3.Error as e:
            raise AssertionError(f"{text!r} -> {query.match!r}: {e}") from None


if __name__ == "__main__":
    from harness import fuzz

    fuzz(check)

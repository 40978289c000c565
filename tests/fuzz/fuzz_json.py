"""
Fuzz target: the API's request bodies (mailraven/api/http.py, mobile.py).

The input is a request body. Invariants: C{readJSON} returns a value or
raises an L{APIError} of the 400 class, nothing else (deep nesting
included); every string in what it returns encodes to UTF-8 (a lone
surrogate would fail later, in SQLite or in the reply); and the send
endpoint's validation and composition of a message answer a 400 or build
the message, never raise anything else.

    python tests/fuzz/fuzz_json.py -max_total_time=60 tests/fuzz/corpus/json
"""

from __future__ import annotations

from io import BytesIO
from typing import Any

if __name__ == "__main__":
    from harness import instrumented
else:
    from tests.fuzz.harness import uninstrumented as instrumented

with instrumented("json", "email"):
    from mailraven.api.http import APIError, readJSON
    from mailraven.api.mobile import _compose, _sendFields


class BodyRequest:
    """The part of a request C{readJSON} reads."""

    bodyTooLarge = False

    def __init__(self, body: bytes) -> None:
        self.content = BytesIO(body)


def strings(value: Any) -> list[str]:
    """Every str in a decoded JSON value, keys included (no recursion)."""
    found, stack = [], [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            found.append(item)
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


def badRequest(error: APIError) -> None:
    assert 400 <= error.status < 500, f"{error.status} {error.message}"


def check(data: bytes) -> None:
    try:
        body = readJSON(BodyRequest(data))
    except APIError as e:
        badRequest(e)
        return
    for text in strings(body):
        text.encode("utf-8")
    try:
        fields = _sendFields(body)
    except APIError as e:
        badRequest(e)
        return
    message = _compose("alice@example.test", "mx.example.test", fields)
    assert isinstance(message, bytes)


if __name__ == "__main__":
    from harness import fuzz

    fuzz(check)

"""
Fuzz target: a stored message's metadata (mailraven/store/metadata.py).

The input is a whole message as it arrived. Invariants: C{extractMetadata}
never raises; every field is a C{str} (attachments: str names and types, a
size between 0 and the message's length); the snippet keeps to
L{SNIPPET_LENGTH}; no field is longer than the message could make it, and each encodes
to UTF-8 (no lone surrogates: SQLite and the JSON API refuse them).

    python tests/fuzz/fuzz_metadata.py -max_total_time=60 tests/fuzz/corpus/metadata
"""

from __future__ import annotations

if __name__ == "__main__":
    from harness import instrumented
else:
    from tests.fuzz.harness import uninstrumented as instrumented

with instrumented("email", "base64", "quopri"):
    from mailraven.store.metadata import SNIPPET_LENGTH, TEXT_SOURCE, extractMetadata

FIELDS = ("headerFrom", "headerTo", "subject", "date", "messageId", "snippet", "text")


def check(data: bytes) -> None:
    meta = extractMetadata(data)
    for name in FIELDS:
        value = getattr(meta, name)
        assert type(value) is str, f"{name} is {type(value).__name__}"
        value.encode("utf-8")  # SQLite and JSON take no lone surrogates
        # text is decoded, never printed as escapes the message did not hold
        assert "\\u" not in value or b"\\u" in data, f"{name}: {value[:200]!r}"
        # decoding never yields more characters than there were octets, and
        # the body text is read from at most TEXT_SOURCE octets per part
        assert len(value) <= len(data), f"{name}: {len(value)} > {len(data)}"
    assert len(meta.snippet) <= SNIPPET_LENGTH
    assert len(meta.text) <= TEXT_SOURCE
    for attachment in meta.attachments:
        assert set(attachment) == {"filename", "content_type", "size"}, attachment
        assert type(attachment["filename"]) is str, attachment
        attachment["filename"].encode("utf-8")
        assert type(attachment["content_type"]) is str, attachment
        assert type(attachment["size"]) is int, attachment
        assert 0 <= attachment["size"] <= len(data), attachment


if __name__ == "__main__":
    from harness import fuzz

    fuzz(check)

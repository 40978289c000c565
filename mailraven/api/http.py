"""HTTP plumbing of the JSON API: bounded request bodies, JSON errors, gzip."""

from __future__ import annotations

import json
from typing import Any

import orjson
from isal import isal_zlib
from twisted.web.server import Request

GZIP_FROM = 1024  # bytes; smaller bodies are sent as they are (api.md)


class APIError(Exception):
    """Answered as C{{"error": short, "message": text}} with C{status}."""

    def __init__(self, status: int, error: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.error, self.message, self.extra = (
            status,
            error,
            message,
            extra,
        )


class CappedRequest(Request):
    """
    A request whose body may not exceed C{maxBody} bytes. twisted.web would
    otherwise buffer any body (spilling to a temp file) before our code runs;
    here the excess is dropped as it arrives and the answer is 413.
    """

    maxBody = 1024 * 1024

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._received = 0
        self.bodyTooLarge = False

    def gotLength(self, length: int | None) -> None:
        super().gotLength(length)
        if length is not None and length > self.maxBody:
            self.bodyTooLarge = True

    def handleContentChunk(self, data: bytes) -> None:
        if self.bodyTooLarge:
            return
        self._received += len(data)
        if self._received > self.maxBody:
            self.bodyTooLarge = True
            self.content.seek(0)
            self.content.truncate()
            return
        super().handleContentChunk(data)


def cappedRequestFactory(maxBody: int) -> type[CappedRequest]:
    return type("CappedRequest", (CappedRequest,), {"maxBody": maxBody})


def readJSON(request: Any) -> Any:
    """The request's JSON body, or an APIError (413, 400)."""
    if getattr(request, "bodyTooLarge", False):
        raise APIError(413, "too_large", "The request body is too large")
    raw = request.content.read()
    try:
        # orjson (>= 3.9.15) refuses nesting deeper than 1024 with a
        # JSONDecodeError; the stdlib's json raises RecursionError instead.
        return orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise APIError(400, "bad_json", f"The body is not valid JSON: {e}") from None


def writeJSON(request: Any, status: int, body: Any) -> bytes:
    """Serialise C{body}; gzip it when the client asked and it is worth it."""
    # orjson: a 50-message page is 36 us instead of json's 375 us here, and
    # this runs on the reactor thread
    try:
        data = orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:  # a lone surrogate (undecoded octets): never a non-JSON 500
        data = json.dumps(body, ensure_ascii=False).encode("utf-8", "replace")
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json; charset=utf-8")
    request.setHeader(b"cache-control", b"no-store")
    request.setHeader(b"vary", b"Accept-Encoding")
    accepted = (request.getHeader(b"accept-encoding") or b"").lower()
    if len(data) > GZIP_FROM and b"gzip" in accepted:
        # ISA-L, as for message files: a 50-message page in 19 us instead of
        # zlib's 257 us, on the reactor thread, 5 % larger
        data = isal_zlib.compress(data, 2, 31)
        request.setHeader(b"content-encoding", b"gzip")
    return data


def errorBody(error: APIError) -> dict[str, Any]:
    return {"error": error.error, "message": error.message, **error.extra}


def bearer(request: Any) -> str:
    """The bearer token of the request, or "" (one parser for every caller)."""
    header = (request.getHeader(b"authorization") or b"").decode("latin-1")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""

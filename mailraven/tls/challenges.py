"""HTTP-01 responder: C{/.well-known/acme-challenge/<token>} (RFC 8555 8.3).

Mounted on the API site and on C{acme.http01_listen} (port 80 in production,
where CAs connect). Only tokens of orders in progress are answered.
"""

from __future__ import annotations

from typing import Any

from twisted.web.resource import Resource
from twisted.web.server import Site

CHALLENGE_PATH = (b".well-known", b"acme-challenge")


class HTTP01Responder(Resource):
    """Serves the key authorizations of pending HTTP-01 challenges."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self._validations: dict[bytes, bytes] = {}

    def add(self, token: str, validation: str) -> None:
        self._validations[token.encode("ascii")] = validation.encode("ascii")

    def remove(self, token: str) -> None:
        self._validations.pop(token.encode("ascii"), None)

    def render_GET(self, request: Any) -> bytes:
        token = request.postpath[0] if len(request.postpath) == 1 else b""
        validation = self._validations.get(token)
        request.setHeader(b"content-type", b"text/plain")
        if validation is None:
            request.setResponseCode(404)
            return b"no such challenge\n"
        return validation


def mountResponder(root: Resource, responder: HTTP01Responder) -> None:
    """Put C{responder} at C{/.well-known/acme-challenge/} under C{root}."""
    wellKnown = Resource()
    wellKnown.putChild(CHALLENGE_PATH[1], responder)
    root.putChild(CHALLENGE_PATH[0], wellKnown)


def challengeSite(responder: HTTP01Responder) -> Site:
    """The whole site of the C{acme.http01_listen} port: challenges only."""
    root = Resource()
    mountResponder(root, responder)
    site = Site(root)
    site.displayTracebacks = False
    return site

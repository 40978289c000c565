"""The HTTP listener's resource tree: /health, /metrics, /api (mobile API)."""

from __future__ import annotations

import json
from typing import Any

from prometheus_client.twisted import MetricsResource
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import Site

from mailraven.api.http import cappedRequestFactory


class JSONNotFound(Resource):
    isLeaf = True

    def render(self, request: Any) -> bytes:
        request.setResponseCode(404)
        request.setHeader(b"content-type", b"application/json")
        return json.dumps(
            {"error": "not_found", "message": "No such resource"}
        ).encode()


class Root(Resource):
    def getChild(self, path: bytes, request: Any) -> Resource:
        return JSONNotFound()


class APISite(Site):
    """
    Twisted's access log would write an unstructured line per request into
    the server log at info level, query string included: search words and
    cursors of the people whose mail this is. Ours is one C{api_request}
    event at debug level, path without the query. (Logins are logged on
    their own, at info, with IP and outcome.)
    """

    accessLog = Logger()

    def log(self, request: Any) -> None:
        self.accessLog.debug(
            "{method} {path} {code} from {ip}",
            method=request.method.decode("ascii", "replace"),
            path=request.path.decode("utf-8", "replace"),
            code=request.code,
            ip=request.getClientAddress().host,
            event="api_request",
        )


def makeSite(
    health: Resource, metrics: Any, api: Resource, admin: Resource, maxBody: int
) -> Site:
    root = Root()
    root.putChild(b"health", health)
    root.putChild(b"metrics", MetricsResource(registry=metrics.registry))
    root.putChild(b"api", api)
    root.putChild(b"admin", admin)
    site = APISite(root, requestFactory=cappedRequestFactory(maxBody))
    site.displayTracebacks = False
    return site

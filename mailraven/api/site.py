"""The HTTP listener's resource tree: /health, /metrics, /api (mobile API)."""

from __future__ import annotations

import json
from typing import Any

from prometheus_client.twisted import MetricsResource
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


def makeSite(
    health: Resource, metrics: Any, api: Resource, admin: Resource, maxBody: int
) -> Site:
    root = Root()
    root.putChild(b"health", health)
    root.putChild(b"metrics", MetricsResource(registry=metrics.registry))
    root.putChild(b"api", api)
    root.putChild(b"admin", admin)
    site = Site(root, requestFactory=cappedRequestFactory(maxBody))
    site.displayTracebacks = False
    return site

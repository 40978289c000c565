"""GET /health: is this server able to take mail right now?"""

from __future__ import annotations

import json
import os
import uuid
from typing import Any, Callable

from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThreadPool
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET


def probeWritable(directory: str) -> None:
    """Create, fsync and remove a small file: the store's own write path."""
    path = os.path.join(directory, f".health-{uuid.uuid4().hex}")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, b"ok")
        os.fsync(fd)
    finally:
        os.close(fd)
        os.unlink(path)


class HealthResource(Resource):
    """
    C{{status: ok|degraded|down, checks}}; 503 when down, so load balancers and
    Docker's HEALTHCHECK take the server out of rotation.
    """

    isLeaf = True

    def __init__(
        self,
        reactor: Any,
        pool: Any,
        tmpDir: str,
        diskGuard: Any,
        listeners: Callable[[], list],
        more: dict[str, Callable[[], dict]] | None = None,
    ) -> None:
        super().__init__()
        self._reactor = reactor
        self._pool = pool
        self._tmpDir = tmpDir
        self._diskGuard = diskGuard
        self._listeners = listeners
        self._more = more or {}

    def render_GET(self, request: Any) -> Any:
        d = self.report()
        d.addCallback(lambda report: self._write(request, report))
        return NOT_DONE_YET

    @inlineCallbacks
    def report(self):
        checks: dict[str, Any] = {}
        try:
            yield deferToThreadPool(
                self._reactor, self._pool, probeWritable, self._tmpDir
            )
            checks["store"] = {"status": "ok"}
        except Exception as e:
            checks["store"] = {"status": "down", "error": str(e)}
        disk = self._diskGuard.status()
        disk["status"] = {"ok": "ok", "warn": "degraded", "full": "down"}[disk["state"]]
        checks["disk"] = disk
        listeners = {
            listener.description: "up" if listener.up else (listener.error or "down")
            for listener in self._listeners()
        }
        allUp = all(v == "up" for v in listeners.values())
        checks["listeners"] = {"status": "ok" if allUp else "down", **listeners}
        for name, check in self._more.items():
            checks[name] = check()
        states = {check["status"] for check in checks.values()}
        status = (
            "down"
            if "down" in states
            else ("degraded" if "degraded" in states else "ok")
        )
        return {"status": status, "checks": checks}

    def _write(self, request: Any, report: dict) -> None:
        request.setResponseCode(503 if report["status"] == "down" else 200)
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        request.write(json.dumps(report).encode())
        request.finish()

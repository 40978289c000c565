"""Thread pools owned by the service tree (blocking I/O never runs on the
reactor thread; each pool is sized and named where it is made)."""

from __future__ import annotations

from twisted.application.service import Service
from twisted.python.threadpool import ThreadPool


class ThreadPoolService(Service):
    """A thread pool that lives and dies with the service tree."""

    def __init__(self, size: int, name: str) -> None:
        self.pool = ThreadPool(1, size, name=name)

    def startService(self) -> None:
        super().startService()
        self.pool.start()

    def stopService(self) -> None:
        super().stopService()
        self.pool.stop()

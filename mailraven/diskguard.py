"""How full is the data volume? Sampled by a timer in a thread, read for free.

Warn (log + health) above C{warnPercent}; refuse new mail with 452 4.3.1 above
C{rejectPercent}, so the store never fails halfway through a write for lack of
space and senders retry later instead.
"""

from __future__ import annotations

import os
from typing import Any, Callable

from twisted.application.internet import TimerService
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from zope.interface import implementer

from mailraven.interfaces import IDiskGuard

SAMPLE_SECONDS = 10


def statvfsUsage(path: str) -> tuple[float, int]:
    """(used percent, bytes free to unprivileged users) of C{path}'s volume."""
    st = os.statvfs(path)
    total = st.f_blocks * st.f_frsize
    free = st.f_bavail * st.f_frsize
    used = total - st.f_bfree * st.f_frsize
    usable = used + free
    return (100.0 * used / usable if usable else 100.0), free


@implementer(IDiskGuard)
class DiskGuard(TimerService):
    log = Logger()

    def __init__(
        self,
        path: str,
        warnPercent: float,
        rejectPercent: float,
        metrics: Any = None,
        usage: Callable[[str], tuple[float, int]] = statvfsUsage,
        clock: Any = None,
    ) -> None:
        super().__init__(SAMPLE_SECONDS, self.sample)
        if clock is not None:
            self.clock = clock
        self._path = path
        self._warn = warnPercent
        self._reject = rejectPercent
        self._metrics = metrics
        self._usage = usage
        self.usedPercent, self.freeBytes = usage(path)
        self._state = "ok"

    def sample(self):
        d = deferToThread(self._usage, self._path)
        d.addCallback(self._record)
        d.addErrback(lambda f: self.log.failure("disk usage sample failed", f))
        return d

    def _record(self, usage: tuple[float, int]) -> None:
        self.usedPercent, self.freeBytes = usage
        if self._metrics is not None:
            self._metrics.diskUsedRatio.set(self.usedPercent / 100)
        state = self.state
        if state != self._state:
            self.log.warn(
                "disk usage {used:.1f}% is now {state}",
                used=self.usedPercent,
                state=state,
                event="disk_state",
            )
            self._state = state

    @property
    def state(self) -> str:
        if self.usedPercent >= self._reject:
            return "full"
        if self.usedPercent >= self._warn:
            return "warn"
        return "ok"

    def acceptingMail(self) -> bool:
        return self.state != "full"

    def status(self) -> dict:
        return {
            "used_percent": round(self.usedPercent, 1),
            "free_bytes": self.freeBytes,
            "state": self.state,
        }

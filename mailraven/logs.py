"""Log observers: Twisted's text format, or one flat JSON object per line.

The flat shape (C{time}, C{level}, C{msg}, C{namespace} plus the event's own
fields such as C{event}, C{peer}, C{reason}) is what log shippers index without
knowing Twisted's C{log_*} keys.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import IO, Any

from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    PredicateResult,
    formatEvent,
    textFileLogObserver,
)
from zope.interface import implementer

from mailraven.dnsresolver import isQueryPortLine

_SKIP = {"log_logger", "log_source", "log_io", "log_trace", "log_failure"}


def flatten(event: dict[str, Any]) -> dict[str, Any]:
    """The JSON-ready form of one event."""
    out: dict[str, Any] = {
        "time": datetime.fromtimestamp(event.get("log_time", 0), UTC).isoformat(
            timespec="milliseconds"
        ),
        "level": getattr(event.get("log_level"), "name", "info"),
        "msg": formatEvent(event),
        "namespace": event.get("log_namespace", ""),
    }
    failure = event.get("log_failure")
    if failure is not None:
        out["error"] = failure.getErrorMessage()
        out["traceback"] = failure.getTraceback()
    for key, value in event.items():
        if key.startswith("log_") or key in _SKIP or key in out:
            continue
        if isinstance(value, (str, int, float, bool)) or value is None:
            out[key] = value
    return out


@implementer(ILogObserver)
class FlatJSONObserver:
    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream

    def __call__(self, event: dict[str, Any]) -> None:
        self._stream.write(json.dumps(flatten(event), default=str) + "\n")
        self._stream.flush()


def makeObserver(fmt: str, level: str, stream: IO[str] | None = None) -> Any:
    stream = sys.stdout if stream is None else stream
    inner = FlatJSONObserver(stream) if fmt == "json" else textFileLogObserver(stream)
    predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.levelWithName(level))
    return FilteringLogObserver(inner, [predicate, _quiet])


def _quiet(event: dict[str, Any]) -> PredicateResult:
    return PredicateResult.no if isQueryPortLine(event) else PredicateResult.maybe

"""Token buckets keyed by client (IP, account), bounded in memory.

Used by the API (requests per IP) and the SMTP policy (connections, messages,
recipients); failed logins have their own limiter (mailraven/policy/logins.py).
Time comes from an injected clock so tests drive it.
"""

from __future__ import annotations

from typing import Any, Hashable


class TokenBuckets:
    """
    C{rate} tokens per C{period} seconds, at most C{burst} saved up. Buckets
    that have refilled completely carry no information and are dropped when the
    table reaches C{maxKeys}, so memory stays bounded under address spraying.
    """

    def __init__(
        self,
        rate: float,
        period: float,
        clock: Any,
        burst: float | None = None,
        maxKeys: int = 100_000,
    ) -> None:
        self._perSecond = rate / period
        self._burst = float(burst if burst is not None else rate)
        self._clock = clock
        self._maxKeys = maxKeys
        self._buckets: dict[Hashable, tuple[float, float]] = {}

    def _level(self, key: Hashable, now: float) -> float:
        tokens, stamp = self._buckets.get(key, (self._burst, now))
        return min(self._burst, tokens + (now - stamp) * self._perSecond)

    def take(self, key: Hashable, cost: float = 1.0) -> float:
        """Take C{cost}; returns 0 when allowed, else seconds until it would be."""
        now = self._clock.seconds()
        tokens = self._level(key, now)
        if tokens < cost:
            self._buckets[key] = (tokens, now)
            return (cost - tokens) / self._perSecond
        if key not in self._buckets and len(self._buckets) >= self._maxKeys:
            self.prune()
        self._buckets[key] = (tokens - cost, now)
        return 0.0

    def peek(self, key: Hashable, cost: float = 1.0) -> float:
        """Like L{take} without taking: seconds until C{cost} is available."""
        tokens = self._level(key, self._clock.seconds())
        return 0.0 if tokens >= cost else (cost - tokens) / self._perSecond

    def prune(self) -> None:
        now = self._clock.seconds()
        full = [k for k in self._buckets if self._level(k, now) >= self._burst]
        for key in full:
            del self._buckets[key]
        if len(self._buckets) >= self._maxKeys:  # all busy: forget the oldest
            oldest = sorted(self._buckets, key=lambda k: self._buckets[k][1])
            for key in oldest[: len(oldest) // 2]:
                del self._buckets[key]

    def __len__(self) -> int:
        return len(self._buckets)

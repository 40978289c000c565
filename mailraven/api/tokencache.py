"""Bearer tokens the API has just found valid, remembered for a few seconds.

Checking every request's token in the database was a second trip to a read
thread per request: 19 % of the server's CPU for a page of the message list
(3.08 -> 2.49 ms per request on the benchmark machine, bench/api.py). What
this process does takes effect at once: logout drops the token, and a
password change or account removal through the user store clears the cache.
A password changed or an account removed by the CLI (another process) takes
effect within L{TTL} seconds. Unknown tokens are never remembered.
"""

from __future__ import annotations

from typing import Any

TTL = 5.0
MAX_ENTRIES = 10_000


class TokenCache:
    def __init__(
        self, clock: Any, ttl: float = TTL, maxEntries: int = MAX_ENTRIES
    ) -> None:
        self._clock = clock
        self._ttl = ttl
        self._max = maxEntries
        self._entries: dict[str, tuple[Any, float]] = {}

    def get(self, token: str) -> Any:
        """The user of C{token} if it was found valid less than TTL ago."""
        entry = self._entries.get(token)
        if entry is None:
            return None
        user, until = entry
        if self._clock.seconds() >= until:
            del self._entries[token]
            return None
        return user

    def put(self, token: str, user: Any, expiresAt: float) -> None:
        """Remember C{user} for C{token}, never past the token's own expiry."""
        if len(self._entries) >= self._max:
            self._entries.clear()  # a flood of distinct tokens: start over
        self._entries[token] = (user, min(self._clock.seconds() + self._ttl, expiresAt))

    def drop(self, token: str) -> None:
        self._entries.pop(token, None)

    def clear(self) -> None:
        self._entries.clear()

"""SASL for submission: PLAIN (RFC 4616) and LOGIN, and the per-IP throttle
that makes password guessing slow.

Mechanisms are decoded here; the password is checked by the user store
(argon2id, in a thread). Nothing is offered or accepted before TLS.
"""

from __future__ import annotations

import base64
import binascii
from collections import defaultdict, deque
from typing import Any


class SASLError(Exception):
    """A malformed exchange: 501 5.5.2."""


def b64decode(text: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise SASLError("Invalid base64 data") from None


def decodePlain(text: str) -> tuple[str, str]:
    """(authentication id, password) from an RFC 4616 PLAIN response."""
    parts = b64decode(text).split(b"\0")
    if len(parts) != 3:
        raise SASLError("Invalid PLAIN response")
    authzid, authcid, password = (p.decode("utf-8", "replace") for p in parts)
    if authzid and authzid.lower() != authcid.lower():
        raise SASLError("Authorization identity must be empty or the login")
    return authcid, password


class AuthThrottle:
    """
    Failed logins per client IP over C{window} seconds. Each failure's reply
    is delayed longer (0.5 s doubling, at most C{maxDelay}); after
    C{maxFailures} the IP is refused until its failures age out.
    """

    def __init__(
        self,
        clock: Any,
        maxFailures: int = 10,
        window: float = 900.0,
        maxDelay: float = 8.0,
    ) -> None:
        self._clock = clock
        self.maxFailures = maxFailures
        self._window = window
        self._maxDelay = maxDelay
        self._failures: dict[str, deque[float]] = defaultdict(deque)

    def _recent(self, ip: str) -> deque[float]:
        failures = self._failures[ip]
        horizon = self._clock.seconds() - self._window
        while failures and failures[0] < horizon:
            failures.popleft()
        if not failures:
            del self._failures[ip]
            return deque()
        return failures

    def blocked(self, ip: str) -> bool:
        return len(self._recent(ip)) >= self.maxFailures

    def failed(self, ip: str) -> float:
        """Record a failure; the delay before answering it."""
        failures = self._recent(ip)
        failures.append(self._clock.seconds())
        self._failures[ip] = failures
        return min(self._maxDelay, 0.5 * 2 ** (len(failures) - 1))

    def succeeded(self, ip: str) -> None:
        self._failures.pop(ip, None)

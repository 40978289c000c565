"""The ACME certificate service: issue at start when missing, check
periodically, renew before expiry, back off on failure.

txacme's design (an issuing Service with an injected clock, a certificate
store, challenge responders) on a current ACME client. Start-up never waits on
the CA: the first check is scheduled after the listeners are up, and until a
certificate arrives the best one available is served. The schedule survives
restarts (C{state.json}): a restart neither re-orders a certificate that is
still good nor skips a pending back-off, so a crash loop cannot hammer the CA.
"""

from __future__ import annotations

import datetime
import json
import os
import random
from dataclasses import dataclass
from typing import Any, Callable

from twisted.application.service import Service
from twisted.internet.defer import CancelledError, inlineCallbacks, maybeDeferred
from twisted.internet.task import deferLater
from twisted.logger import Logger

from mailraven.privatefiles import privateDirectory, writePrivate
from mailraven.tls.certificates import (
    SOURCE_ACME,
    CertificateError,
    ServedCertificate,
    loadCertificate,
    splitCombined,
)


def backoffDelay(
    failures: int, initial: float, cap: float, rand: Callable[[], float]
) -> float:
    """Doubling from C{initial}, capped at C{cap}, jittered by +-10 %."""
    delay = min(cap, initial * 2 ** (failures - 1))
    return min(cap, delay * (0.9 + 0.2 * rand()))


def certificateKey(names: tuple[str, ...]) -> str:
    """A file-safe id for one certificate: its first name."""
    return names[0].lower().replace("*", "_")


@dataclass
class Order:
    """One configured certificate and where its schedule stands."""

    names: tuple[str, ...]
    due: float = 0.0
    failures: int = 0
    lastError: str | None = None
    problem: dict | None = None

    @property
    def key(self) -> str:
        return certificateKey(self.names)


class AcmeStore:
    """C{data_dir/certs/acme}: account key, one PEM (key + chain) per
    certificate, and the schedule; all 0600 in a 0700 directory."""

    def __init__(self, directory: str) -> None:
        self.directory = privateDirectory(directory)
        self.accountKeyPath = os.path.join(directory, "account.key")
        self._statePath = os.path.join(directory, "state.json")

    def _pemPath(self, key: str) -> str:
        return os.path.join(self.directory, f"{key}.pem")

    def loadCertificate(self, key: str) -> ServedCertificate | None:
        try:
            with open(self._pemPath(key), "rb") as f:
                chain, privateKey = splitCombined(f.read())
        except (OSError, CertificateError):
            return None
        return loadCertificate(chain, privateKey, SOURCE_ACME)

    def saveCertificate(self, key: str, keyPEM: bytes, chainPEM: bytes) -> None:
        """Key and chain in one file, so the pair is replaced atomically."""
        writePrivate(self._pemPath(key), keyPEM + chainPEM)

    def loadState(self) -> dict[str, dict]:
        try:
            with open(self._statePath, encoding="utf-8") as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}

    def saveState(self, state: dict[str, dict]) -> None:
        writePrivate(self._statePath, json.dumps(state, indent=1).encode())


def _iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    moment = datetime.datetime.fromtimestamp(timestamp, datetime.UTC)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


class AcmeIssuer(Service):
    """Keeps every configured certificate issued and fresh, one order at a time."""

    log = Logger()

    def __init__(
        self,
        certificates: list[tuple[str, ...]],
        manager: Any,
        store: AcmeStore,
        issue: Callable[[list[str]], Any],
        clock: Any,
        renewBefore: datetime.timedelta,
        checkInterval: float,
        retryInitial: float,
        retryMax: float,
        spacing: float = 2.0,
        metrics: Any = None,
        rand: Callable[[], float] = random.random,
        blocking: Callable[..., Any] = maybeDeferred,
        cancel: Callable[[], None] = lambda: None,
    ) -> None:
        self._orders = [Order(tuple(names)) for names in certificates]
        self._manager = manager
        self._store = store
        self._issue = issue
        self._clock = clock
        self._renewBefore = renewBefore
        self._checkInterval = checkInterval
        self._retryInitial = retryInitial
        self._retryMax = retryMax
        self._spacing = spacing
        self._metrics = metrics
        self._rand = rand
        self._blocking = blocking  # runs file writes off the reactor thread
        self._cancel = cancel  # stops an issuance waiting on the CA
        self._inFlight: Any = None
        self._stagger: Any = None
        self._call: Any = None
        self._busy = False
        self.stopping = False
        manager.setAcmeStatus(self.status)

    def startService(self) -> None:
        super().startService()
        self.stopping = False
        state = self._store.loadState()
        now = self._clock.seconds()
        for order in self._orders:
            stored = self._store.loadCertificate(order.key)
            if stored is not None and set(stored.names) == set(order.names):
                self._manager.install(order.key, stored)
            saved = state.get(order.key, {})
            if saved.get("names") == list(order.names):
                order.failures = saved.get("failures", 0)
                order.lastError = saved.get("last_error")
                order.due = saved.get("next_attempt", now) if order.failures else now
            else:
                order.due = now
        self._schedule()

    def stopService(self) -> Any:
        super().stopService()
        self.stopping = True
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        self._cancel()
        if self._stagger is not None:
            self._stagger.cancel()
        return self._inFlight  # an order in progress records its outcome

    def _schedule(self) -> None:
        if self.stopping or self._busy or not self._orders:
            return
        if self._call is not None and self._call.active():
            self._call.cancel()
        delay = max(0.0, min(o.due for o in self._orders) - self._clock.seconds())
        self._call = self._clock.callLater(delay, self._start)

    def _start(self) -> None:
        self._inFlight = self._runDue()
        self._inFlight.addErrback(lambda f: self.log.failure("ACME run failed", f))
        self._inFlight.addBoth(lambda _: setattr(self, "_inFlight", None))

    @inlineCallbacks
    def _runDue(self):
        self._call = None
        self._busy = True
        try:
            ordered = False
            for order in sorted(self._orders, key=lambda o: o.due):
                if self.stopping or order.due > self._clock.seconds():
                    continue
                if self._needsOrder(order):
                    if ordered:  # stagger orders: CAs rate-limit bursts
                        self._stagger = deferLater(
                            self._clock, self._spacing, lambda: None
                        )
                        try:
                            yield self._stagger
                        except CancelledError:
                            break
                        finally:
                            self._stagger = None
                    ordered = True
                    yield self._order(order)
                else:
                    order.due = self._clock.seconds() + self._checkInterval
        finally:
            self._busy = False
            yield self._saveState()
            self._schedule()

    def _needsOrder(self, order: Order) -> bool:
        current = self._manager.acmeCertificate(order.key)
        if current is None or set(current.names) != set(order.names):
            return True
        now = datetime.datetime.fromtimestamp(self._clock.seconds(), datetime.UTC)
        return current.notAfter - now < self._renewBefore

    @inlineCallbacks
    def _order(self, order: Order):
        renewal = self._manager.acmeCertificate(order.key) is not None
        try:
            keyPEM, chainPEM = yield self._issue(list(order.names))
            certificate = loadCertificate(chainPEM, keyPEM, SOURCE_ACME)
            yield self._blocking(
                self._store.saveCertificate, order.key, keyPEM, chainPEM
            )
        except Exception as e:
            if self.stopping:  # interrupted by shutdown: not the CA's failure
                order.due = self._clock.seconds()
                return
            self._failed(order, e)
            return
        self._manager.install(order.key, certificate)
        order.failures, order.lastError, order.problem = 0, None, None
        order.due = self._clock.seconds() + self._checkInterval
        self._count("renewed" if renewal else "issued")
        self.log.info(
            "{action} certificate for {names}, valid until {notAfter}",
            action="renewed" if renewal else "issued",
            names=",".join(order.names),
            notAfter=certificate.notAfter.isoformat(),
            serial=format(certificate.serial, "x"),
            event="acme_renewed" if renewal else "acme_issued",
        )

    def _failed(self, order: Order, error: Exception) -> None:
        order.failures += 1
        order.lastError = str(error) or type(error).__name__
        order.problem = getattr(error, "problem", None)
        delay = backoffDelay(
            order.failures, self._retryInitial, self._retryMax, self._rand
        )
        order.due = self._clock.seconds() + delay
        self._count("failed")
        self.log.error(
            "ACME order for {names} failed ({failures} in a row): {error}; "
            "next attempt in {delay:.0f} s",
            names=",".join(order.names),
            failures=order.failures,
            error=order.lastError,
            problem=order.problem,
            delay=delay,
            next_attempt=_iso(order.due),
            event="acme_failed",
        )

    def _count(self, result: str) -> None:
        if self._metrics is not None:
            self._metrics.acmeOrders.labels(result).inc()

    @inlineCallbacks
    def _saveState(self):
        state = {
            order.key: {
                "names": list(order.names),
                "failures": order.failures,
                "last_error": order.lastError,
                "next_attempt": order.due,
            }
            for order in self._orders
        }
        try:
            yield self._blocking(self._store.saveState, state)
        except OSError as e:
            self.log.error("cannot save ACME state: {error}", error=str(e))

    def status(self) -> list[dict[str, Any]]:
        """One entry per configured certificate, issued or not."""
        entries = []
        for order in self._orders:
            current = self._manager.acmeCertificate(order.key)
            entry = (
                current.status()
                if current is not None
                else {"names": list(order.names), "source": SOURCE_ACME}
            )
            entry.update(
                last_error=order.lastError,
                failures=order.failures,
                next_check=_iso(order.due),
            )
            entries.append(entry)
        return entries

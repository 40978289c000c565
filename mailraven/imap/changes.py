"""Telling IMAP sessions that an account's mail changed, in this process.

A stand-in for issue 19's change feed: deliveries (SMTP, the API's send,
APPEND), the API's flag changes, moves and deletes, and IMAP's own changes
call L{ChangeSignal.changed}; a session in IDLE then asks the store what
changed. Whatever changes the database without telling (another process)
an idle session finds by polling its folder's HIGHESTMODSEQ and UIDNEXT
(one small query every L{IDLE_POLL} seconds).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Callable

from twisted.internet.defer import Deferred
from twisted.logger import Logger

IDLE_POLL = 15.0


class ChangeSignal:
    """Callbacks per account, called (on the reactor thread) on a change."""

    log = Logger()

    def __init__(self) -> None:
        self._listeners: dict[int, set[Callable[[], None]]] = defaultdict(set)

    def subscribe(self, userId: int, listener: Callable[[], None]) -> None:
        self._listeners[userId].add(listener)

    def unsubscribe(self, userId: int, listener: Callable[[], None]) -> None:
        listeners = self._listeners.get(userId)
        if listeners is not None:
            listeners.discard(listener)
            if not listeners:
                del self._listeners[userId]

    def changed(self, userId: int) -> None:
        for listener in list(self._listeners.get(userId, ())):
            try:
                listener()
            except Exception:
                self.log.failure("change listener failed")


class NotifyingStore:
    """An L{IMessageStore} whose deliveries signal their recipients' accounts."""

    def __init__(self, store: Any, signal: ChangeSignal) -> None:
        self._store = store
        self._signal = signal

    def deliver(self, envelope: Any, spool: Any) -> Deferred:
        def delivered(result: Any) -> Any:
            for recipient in envelope.recipients:
                self._signal.changed(recipient.userId)
            return result

        return self._store.deliver(envelope, spool).addCallback(delivered)

    def updateFlags(self, entryId: str, userId: int, flags: dict) -> Deferred:
        d = self._store.updateFlags(entryId, userId, flags)
        return d.addCallback(self._changed, userId)

    def delete(self, entryId: str, userId: int) -> Deferred:
        return self._store.delete(entryId, userId).addCallback(self._changed, userId)

    def _changed(self, result: Any, userId: int) -> Any:
        if result:
            self._signal.changed(userId)
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

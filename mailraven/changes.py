"""The change feed: one per-account stream of "this changed" in this process.

Every path that changes an account's mail publishes here: SMTP and local
delivery, the API's send (the Sent copy), PATCH (flags, mailbox) and
DELETE, and IMAP's APPEND, STORE, COPY, MOVE, EXPUNGE and folder changes.
Subscribers are IMAP sessions in IDLE (they ask their folder what changed
and send EXISTS, EXPUNGE and FETCH) and the API's event streams (they run
the delta sync query and push its batch). A change carries its kind only:
subscribers read the store for the details, so a missed or merged change
costs a query, never a wrong view.

L{ChangeFeed} lives in one process. Whatever changes the database without
publishing (another process) an idle IMAP session finds by polling its
folder's HIGHESTMODSEQ and UIDNEXT (one small query every L{IDLE_POLL}
seconds); a feed shared between processes (PostgreSQL LISTEN/NOTIFY)
provides the same L{IChangeFeed}.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Callable

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from zope.interface import implementer

from mailraven.interfaces import IChangeFeed

IDLE_POLL = 15.0

NEW = "new"
FLAGS = "flags"
MOVED = "moved"
EXPUNGED = "expunged"
FOLDERS = "folders"
KINDS = (NEW, FLAGS, MOVED, EXPUNGED, FOLDERS)

# IFolderStore methods that change an account, and the kind each publishes
FOLDER_CHANGES = {
    "setFlags": FLAGS,
    "copy": NEW,
    "move": MOVED,
    "expunge": EXPUNGED,
    "create": FOLDERS,
    "delete": FOLDERS,
    "rename": FOLDERS,
    "subscribe": FOLDERS,
}


@dataclass(frozen=True)
class Change:
    """One change of an account's mail: its C{kind} is one of L{KINDS}."""

    userId: int
    kind: str


Listener = Callable[[Change], None]


@implementer(IChangeFeed)
class ChangeFeed:
    """Listeners per account, called on the reactor thread on each change."""

    log = Logger()

    def __init__(self) -> None:
        self._listeners: dict[int, set[Listener]] = defaultdict(set)

    def subscribe(self, userId: int, listener: Listener) -> None:
        self._listeners[userId].add(listener)

    def unsubscribe(self, userId: int, listener: Listener) -> None:
        listeners = self._listeners.get(userId)
        if listeners is not None:
            listeners.discard(listener)
            if not listeners:
                del self._listeners[userId]

    def publish(self, userId: int, kind: str) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown change kind {kind!r}")
        change = Change(userId, kind)
        for listener in list(self._listeners.get(userId, ())):
            try:
                listener(change)
            except Exception:
                self.log.failure("change listener failed")

    def subscribers(self, userId: int) -> int:
        return len(self._listeners.get(userId, ()))


def flagsKind(flags: dict) -> str:
    """A PATCH that names a mailbox moves the entry; any other sets flags."""
    return MOVED if "mailbox" in flags else FLAGS


class PublishingStore:
    """An L{IMessageStore} whose changes are published on a L{IChangeFeed}."""

    def __init__(self, store: Any, feed: Any) -> None:
        self._store = store
        self._feed = feed

    def deliver(self, envelope: Any, spool: Any) -> Deferred:
        def delivered(result: Any) -> Any:
            for userId in {r.userId for r in envelope.recipients} - {None}:
                self._feed.publish(userId, NEW)
            return result

        return self._store.deliver(envelope, spool).addCallback(delivered)

    def updateFlags(self, entryId: str, userId: int, flags: dict) -> Deferred:
        d = self._store.updateFlags(entryId, userId, flags)
        return d.addCallback(self._changed, userId, flagsKind(flags))

    def delete(self, entryId: str, userId: int) -> Deferred:
        d = self._store.delete(entryId, userId)
        return d.addCallback(self._changed, userId, MOVED)

    def _changed(self, result: Any, userId: int, kind: str) -> Any:
        if result:
            self._feed.publish(userId, kind)
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

"""IDLE (RFC 2177): a session waiting for news of its selected folder.

twisted.mail.imap4's IDLE only answered: nothing told the session of new
mail, and any line ended it. Here a session in IDLE subscribes to the
account's L{mailraven.changes.ChangeFeed}, the one feed every change path
publishes to (deliveries, the API's changes, other IMAP sessions; the API's
event stream reads the same feed), polls its folder's HIGHESTMODSEQ and
UIDNEXT (for changes made by another process), and sends
EXISTS, EXPUNGE and FETCH as they happen; only C{DONE} ends it. A refresh
running when DONE comes finishes before the OK, so the next command sees
the view settled.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure


class IdleCommands:
    """For L{MailRavenIMAPServer}."""

    _idleTag: bytes | None = None
    _idlePoll: LoopingCall | None = None
    _idleDone: tuple[str, bytes, bytes] | None = None
    _polled: tuple[int, int] | None = None
    _refreshing = False
    _refreshAgain = False

    def do_IDLE(self, tag: bytes) -> None:
        self._idleTag = tag
        self.parseState = "idle"
        self.sendContinuationRequest(b"idling")
        self.factory.changes.subscribe(self.userId, self.folderChanged)
        poll = self._idlePoll = LoopingCall(self._pollFolder)
        poll.clock = self.factory.clock
        poll.start(self.settings.idlePoll, now=False).addErrback(self._pollFailed)
        self._polled = None
        self._pollFolder()  # the baseline the polls compare with
        self.folderChanged()  # what changed since the last command

    auth_IDLE = select_IDLE = (do_IDLE,)

    def parse_idle(self, line: bytes) -> None:
        self._stopIdling()
        self.parseState = "command"
        tag, self._idleTag = self._idleTag, None
        if line.strip().upper() == b"DONE":
            self._idleDone = ("OK", tag, b"IDLE terminated")
        else:
            self._idleDone = ("BAD", tag, b"Expected DONE")
        if not self._refreshing:
            self._answerIdle()

    def _answerIdle(self) -> None:
        done, self._idleDone = self._idleDone, None
        if done is None or self._closing:
            return
        state, tag, text = done
        if state == "OK":
            self.sendPositiveResponse(tag, text)
        else:
            self.sendBadResponse(tag, text)

    def _stopIdling(self) -> None:
        if self.userId is not None:
            self.factory.changes.unsubscribe(self.userId, self.folderChanged)
        poll, self._idlePoll = self._idlePoll, None
        if poll is not None and poll.running:
            poll.stop()

    def folderChanged(self, change: Any = None) -> None:
        """Something changed in the account (a L{mailraven.changes.Change},
        or None from a poll): report it if idling in a folder."""
        if self.mbox is None or self._idleTag is None:
            return
        if self._refreshing:
            self._refreshAgain = True
            return
        self._refreshing = True
        d = self.mbox.refresh()
        d.addCallback(self._pushChanges)
        d.addErrback(self._refreshFailed)
        d.addBoth(self._refreshed)

    def _pushChanges(self, changes: tuple) -> None:
        if not self._closing and self.mbox is not None:
            self.sendChanges(changes)

    def _refreshFailed(self, failure: Failure) -> None:
        self.log.failure(
            "imap idle refresh failed peer={peer}", failure, peer=self.peerIP
        )

    def _refreshed(self, _: Any) -> None:
        self._refreshing = False
        if self._refreshAgain and self._idleTag is not None:
            self._refreshAgain = False
            self.folderChanged()
            return
        self._refreshAgain = False
        if self._idleDone is not None:
            self._answerIdle()

    def _pollFolder(self) -> Any:
        if self.mbox is None:
            return None
        d = self.account.folderState(self.mbox.name)
        d.addCallback(self._polledFolder)
        d.addErrback(self._pollFailed)
        return d

    def _polledFolder(self, now: tuple[int, int] | None) -> None:
        if now is None:
            return
        if now != self._polled:
            changed = self._polled is not None
            self._polled = now
            if changed:
                self.folderChanged()

    def _pollFailed(self, failure: Failure) -> None:
        self.log.failure("imap idle poll failed peer={peer}", failure, peer=self.peerIP)

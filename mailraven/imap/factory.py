"""What every IMAP session shares: collaborators, settings, the live sessions."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any, Callable

from twisted.internet.protocol import ServerFactory

from mailraven.changes import ChangeFeed
from mailraven.imap.parsing import InlineParser
from mailraven.imap.server import IMAPSettings, MailRavenIMAPServer


class IMAPFactory(ServerFactory):
    """
    Builds L{MailRavenIMAPServer} sessions and counts them: all of them
    (C{maxSessions}), those of one client IP (C{maxPerIP}: one client cannot
    hold every slot) and the logged-in ones per account (C{maxPerAccount}:
    a client that leaks connections cannot take the server's). C{parser}
    parses messages for FETCH (L{mailraven.imap.parsing}); parsing inline
    when not given.
    """

    protocol = MailRavenIMAPServer
    noisy = False

    def __init__(
        self,
        settings: IMAPSettings,
        users: Any,
        logins: Any,
        accounts: Callable[[int, str], Any],
        spoolFactory: Callable[[], Any],
        discardSpool: Callable[[Any], None],
        clock: Any,
        tlsContext: Any = None,
        metrics: Any = None,
        changes: ChangeFeed | None = None,
        parser: Any = None,
    ) -> None:
        self.parser = parser if parser is not None else InlineParser()
        self.metrics = metrics
        self.changes = changes if changes is not None else ChangeFeed()
        self.settings = settings
        self.users = users
        self.logins = logins
        self.accounts = accounts
        self.spoolFactory = spoolFactory
        self.discardSpool = discardSpool
        self.clock = clock
        self.tlsContext = tlsContext
        self.sessions: set[MailRavenIMAPServer] = set()
        self.byIP: Counter[str] = Counter()
        self.byAccount: dict[int, set[MailRavenIMAPServer]] = defaultdict(set)

    def buildProtocol(self, addr: Any) -> MailRavenIMAPServer:
        proto = self.protocol(self)
        proto.callLater = self.clock.callLater
        return proto

    def sessionStarted(self, proto: MailRavenIMAPServer) -> bool:
        """False when the server has all the sessions it takes."""
        if len(self.sessions) >= self.settings.maxSessions:
            return False
        if self.byIP[proto.peerIP] >= self.settings.maxPerIP:
            return False
        self.byIP[proto.peerIP] += 1
        self.sessions.add(proto)
        if self.metrics is not None:
            self.metrics.imapActive.inc()
        return True

    def loggedIn(self, proto: MailRavenIMAPServer, userId: int) -> bool:
        """False when the account has all the sessions it may have."""
        sessions = self.byAccount[userId]
        if len(sessions) >= self.settings.maxPerAccount:
            if not sessions:
                del self.byAccount[userId]
            return False
        sessions.add(proto)
        proto.userId = userId
        return True

    def sessionEnded(self, proto: MailRavenIMAPServer) -> None:
        if proto in self.sessions:
            self.sessions.discard(proto)
            self.byIP[proto.peerIP] -= 1
            if self.byIP[proto.peerIP] <= 0:
                del self.byIP[proto.peerIP]
            if self.metrics is not None:
                self.metrics.imapActive.dec()
        sessions = self.byAccount.get(proto.userId)  # type: ignore[arg-type]
        if sessions is not None:
            sessions.discard(proto)
            if not sessions:
                del self.byAccount[proto.userId]

    def closeAll(self) -> None:
        """The server is stopping: every session is told and closed."""
        for proto in list(self.sessions):
            proto.shutdown()

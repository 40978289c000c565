"""The "imap" branch of the service tree: its listeners and their factory."""

from __future__ import annotations

from typing import Any, Callable

from twisted.application.service import MultiService
from twisted.internet.defer import inlineCallbacks
from twisted.python.threadpool import ThreadPool

from mailraven.config import Config
from mailraven.imap.factory import IMAPFactory
from mailraven.imap.parsing import POOL_SIZE, PooledParser
from mailraven.imap.server import IMAPSettings
from mailraven.listeners import Listener


class IMAPService(MultiService):
    """IMAP listeners and the pool that parses for FETCH; on stop, the open
    sessions are told and closed, then the pool stops."""

    def __init__(self, factory: IMAPFactory, parsePool: ThreadPool) -> None:
        super().__init__()
        self.factory = factory
        self.parsePool = parsePool

    def startService(self) -> None:
        self.parsePool.start()
        super().startService()

    @inlineCallbacks
    def stopService(self):
        yield super().stopService()
        self.factory.closeAll()
        self.parsePool.stop()


def makeIMAPService(
    config: Config,
    reactor: Any,
    users: Any,
    logins: Any,
    accounts: Callable[[int, str], Any],
    spoolFactory: Callable[[], Any],
    discardSpool: Callable[[Any], None],
    tlsCreator: Any,
    onListenFailure: Callable[[str], None] | None = None,
    metrics: Any = None,
    changes: Any = None,
) -> IMAPService:
    """
    One factory behind C{imap.listen} (STARTTLS) and C{imaps.listen}
    (implicit TLS: their descriptions start with C{tls:}), and the thread
    pool that parses messages for FETCH.
    """
    parsePool = ThreadPool(1, POOL_SIZE, name="imap-parse")
    factory = IMAPFactory(
        IMAPSettings(
            hostname=config["server.hostname"],
            maxMessageSize=config["smtp.max_message_size"],
            maxSessions=config["imap.max_sessions"],
            maxPerAccount=config["imap.max_connections_per_account"],
            maxPerIP=config["ratelimit.concurrent_per_ip"],
        ),
        users=users,
        logins=logins,
        accounts=accounts,
        spoolFactory=spoolFactory,
        discardSpool=discardSpool,
        clock=reactor,
        tlsContext=tlsCreator,
        metrics=metrics,
        changes=changes,
        parser=PooledParser(reactor, parsePool),
    )
    service = IMAPService(factory, parsePool)
    service.setName("imap")
    for key in ("imap.listen", "imaps.listen"):
        for description in config[key]:
            Listener(
                reactor, description, factory, onListenFailure, tlsCreator, key=key
            ).setServiceParent(service)
    return service

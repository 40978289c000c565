"""The "imap" branch of the service tree: its listeners and their factory."""

from __future__ import annotations

from typing import Any, Callable

from twisted.application.service import MultiService
from twisted.internet.defer import inlineCallbacks

from mailraven.config import Config
from mailraven.imap.factory import IMAPFactory
from mailraven.imap.server import IMAPSettings
from mailraven.listeners import Listener


class IMAPService(MultiService):
    """IMAP listeners; on stop, the open sessions are told and closed."""

    def __init__(self, factory: IMAPFactory) -> None:
        super().__init__()
        self.factory = factory

    @inlineCallbacks
    def stopService(self):
        yield super().stopService()
        self.factory.closeAll()


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
    (implicit TLS: their descriptions start with C{tls:}).
    """
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
    )
    service = IMAPService(factory)
    service.setName("imap")
    for key in ("imap.listen", "imaps.listen"):
        for description in config[key]:
            Listener(
                reactor, description, factory, onListenFailure, tlsCreator, key=key
            ).setServiceParent(service)
    return service

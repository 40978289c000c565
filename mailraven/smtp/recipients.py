"""Who may receive mail here: local domains and their users; nothing else.

There is no relaying in the MX path: an address whose domain is not local is
refused whatever its local part looks like (percent hack, quoted @, routes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from twisted.internet.defer import Deferred, inlineCallbacks

from mailraven.envelope import Recipient
from mailraven.interfaces import IUserStore
from mailraven.smtp.addresses import Address


@dataclass(frozen=True)
class Rejection(Exception):
    code: int
    enhanced: str
    text: str
    reason: str


UNKNOWN_USER = Rejection(
    550, "5.1.1", "Recipient address rejected: no such user", "unknown_user"
)
RELAY_DENIED = Rejection(554, "5.7.1", "Relay access denied", "relay_denied")


class RecipientResolver:
    """
    Maps an RCPT address to a local user. Local domains are the configured ones
    plus every domain that has an account, so C{mailraven user add} is enough
    to start receiving for a new domain.
    """

    def __init__(self, users: IUserStore, domains: Iterable[str]) -> None:
        self._users = users
        self._domains = frozenset(domains)

    @inlineCallbacks
    def resolve(self, address: Address) -> Deferred:
        """Deferred firing with a L{Recipient}, or failing with a L{Rejection}."""
        if address.isLiteral:
            raise RELAY_DENIED
        text = str(address)
        userId = yield self._users.lookup(text)
        if userId is not None:
            return Recipient(text, userId)
        if address.domain in self._domains:
            raise UNKNOWN_USER
        if address.domain in (yield self._users.domains()):
            raise UNKNOWN_USER
        raise RELAY_DENIED

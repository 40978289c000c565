"""Submission (587 STARTTLS, 465 implicit TLS): authenticated users send mail.

AUTH PLAIN/LOGIN is offered and accepted only under TLS. The envelope sender
must be the account's own address (553 5.7.1 otherwise). Every recipient is
accepted (relaying is the point of submission) except unknown users of our own
domains. The message is stored once, in one commit before the 250: a copy in
the sender's C{sent} mailbox, a copy in the inbox of each local recipient, and
a queue entry for the remote ones. A missing Date: or Message-ID: is added.
"""

from __future__ import annotations

from email.parser import BytesHeaderParser
from email.utils import getaddresses
from typing import Any, Callable

from scramp import ScramException
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.task import deferLater

from mailraven.envelope import Recipient
from mailraven.outbound.dkimsign import headerProblem
from mailraven.policy.logins import Throttled
from mailraven.smtp.addresses import AddressError, parsePath, splitPathAndParams
from mailraven.smtp.auth import (
    SASLError,
    ScramExchange,
    b64decode,
    b64encode,
    decodePlain,
    scramUsername,
)
from mailraven.smtp.missingheaders import MissingHeaders
from mailraven.smtp.recipients import Rejection
from mailraven.smtp.server import (
    MailRavenESMTP,
    MailRavenSMTPFactory,
    Refused,
    Reply,
)
from mailraven.store.users import normaliseAddress

USERNAME_PROMPT = "VXNlcm5hbWU6"  # base64 "Username:"
PASSWORD_PROMPT = "UGFzc3dvcmQ6"  # base64 "Password:"


class SubmissionESMTP(MailRavenESMTP):
    authenticatedAs: tuple[int, str] | None = None
    # The attempt reserved with the login limiter, from the moment the login
    # is known until the exchange ends; any end but success is a failure.
    _ticket: Any = None
    _missingHeaders: MissingHeaders | None = None

    # -- AUTH ---------------------------------------------------------------

    def _moreExtensions(self) -> list[str]:
        return ["AUTH SCRAM-SHA-256 PLAIN LOGIN"] if self.startedTLS else []

    def smtp_AUTH(self, argument: str) -> Deferred | None:
        if not self.startedTLS:
            raise Reply(530, "5.7.0", "Must issue a STARTTLS command first", "auth_tls")
        if self._heloName is None:
            raise Reply(503, "5.5.1", "Send EHLO first", "bad_sequence")
        if self.authenticatedAs is not None:
            raise Reply(503, "5.5.1", "Already authenticated", "bad_sequence")
        if self._transaction is not None:
            raise Reply(503, "5.5.1", "AUTH not allowed during a transaction")
        mechanism, _, initial = argument.partition(" ")
        mechanism = mechanism.upper()
        if mechanism == "PLAIN":
            if initial and initial != "=":
                return self._plain(initial)
            return self._ask("", self._plain)
        if mechanism == "LOGIN":
            if initial:
                return self._loginUser(initial)
            return self._ask(USERNAME_PROMPT, self._loginUser)
        if mechanism == "SCRAM-SHA-256":
            if initial and initial != "=":
                return self._scramFirst(initial)
            return self._ask("", self._scramFirst)
        raise Reply(504, "5.5.4", "Unrecognized authentication type", "bad_auth")

    def _reserve(self, login: str) -> None:
        """Reserve the attempt before any password or proof is checked."""
        attempt = self.factory.logins.reserve(self.peerIP, login, "smtp")
        if isinstance(attempt, Throttled):
            raise Reply(
                454, "4.7.0", "Too many failed logins, try later", "auth_throttled"
            )
        self._ticket = attempt

    def _run(self, handler: Callable[[str], Any], text: str) -> None:
        super()._run(handler, text)
        if self._continuation is None and not self._paused:
            self._settleAbandoned()

    def _settleAbandoned(self) -> None:
        """An exchange that ended without success (an error, a cancel, a
        dropped connection) used a guess: it counts as a failure."""
        ticket, self._ticket = self._ticket, None
        if ticket is not None:
            ticket.failed()

    def connectionLost(self, reason: Any = None) -> None:
        self._settleAbandoned()
        super().connectionLost(reason)

    def _ask(self, challenge: str, then: Callable[[str], Any]) -> None:
        def answered(line: str) -> Any:
            if line == "*":
                raise Reply(501, "5.0.0", "Authentication cancelled", "auth_cancel")
            return then(line)

        self._continuation = answered
        self.transport.write(f"334 {challenge}\r\n".encode())

    def _plain(self, response: str) -> Deferred:
        try:
            login, password = decodePlain(response)
        except SASLError as e:
            raise Reply(501, "5.5.2", str(e), "bad_auth") from None
        return self._check(login, password)

    def _loginUser(self, response: str) -> None:
        try:
            login = b64decode(response).decode("utf-8", "replace")
        except SASLError as e:
            raise Reply(501, "5.5.2", str(e), "bad_auth") from None
        self._ask(PASSWORD_PROMPT, lambda line: self._loginPassword(login, line))

    def _loginPassword(self, login: str, response: str) -> Deferred:
        try:
            password = b64decode(response).decode("utf-8", "replace")
        except SASLError as e:
            raise Reply(501, "5.5.2", str(e), "bad_auth") from None
        return self._check(login, password)

    def _scramFirst(self, response: str) -> Deferred:
        """SCRAM-SHA-256 (RFC 7677): the password never crosses the wire."""
        try:
            clientFirst = b64decode(response).decode("utf-8")
            login = scramUsername(clientFirst)
        except (SASLError, UnicodeDecodeError, ValueError):
            raise Reply(501, "5.5.2", "Invalid SCRAM message", "bad_auth") from None
        self._reserve(login)
        d = maybeDeferred(self.factory.users.scramCredentials, login)
        d.addCallback(self._scramChallenge, login, clientFirst)
        return d

    def _scramChallenge(self, credentials: Any, login: str, clientFirst: str) -> None:
        # An unknown account gets a decoy verifier: the same exchange, then 535.
        exchange = ScramExchange(credentials, login)
        try:
            serverFirst = exchange.first(clientFirst)
        except ScramException:
            raise Reply(501, "5.5.2", "Invalid SCRAM message", "bad_auth") from None
        self._ask(
            b64encode(serverFirst),
            lambda line: self._scramFinal(exchange, login, line),
        )

    def _scramFinal(self, exchange: Any, login: str, response: str) -> Deferred | None:
        try:
            serverFinal = exchange.final(b64decode(response).decode("utf-8"))
        except (SASLError, UnicodeDecodeError, ScramException):
            serverFinal = None
        if serverFinal is None or not exchange.known:
            d = maybeDeferred(lambda: None)
            d.addCallback(self._checked, login)
            return d
        # RFC 4954: the server's final message goes in a 334, answered empty
        self._ask(
            b64encode(serverFinal),
            lambda line: self._scramDone(login, line),
        )
        return None

    def _scramDone(self, login: str, line: str) -> Deferred:
        if line:
            raise Reply(501, "5.5.2", "Expected an empty response", "bad_auth")
        d = self.factory.users.lookup(login)
        d.addCallback(self._checked, login)
        return d

    def _check(self, login: str, password: str) -> Deferred:
        self._reserve(login)
        d = maybeDeferred(self.factory.users.authenticate, login, password)
        d.addCallback(self._checked, login)
        return d

    def _checked(self, userId: int | None, login: str) -> Deferred | None:
        outcome = "ok" if userId is not None else "failed"
        self.log.info(
            "smtp auth {outcome} login={login} peer={peer}",
            outcome=outcome,
            login=login,
            peer=self.peerIP,
            event="smtp_auth",
        )
        ticket, self._ticket = self._ticket, None
        if userId is None:
            delay = ticket.failed() if ticket is not None else 0.0
            return deferLater(self.factory.clock, delay, self._authFailed)
        if ticket is None:  # the session ended while the password was checked
            return None
        ticket.succeeded()
        self.authenticatedAs = (userId, normaliseAddress(login))
        self._reply(235, "2.7.0", "Authentication successful")
        return None

    def _authFailed(self) -> None:
        if self._closing:
            return
        self._reject("auth_failed", 535, "5.7.8", "Authentication credentials invalid")

    # -- the transaction ------------------------------------------------------

    def smtp_MAIL(self, argument: str) -> Deferred | None:
        if self.authenticatedAs is None:
            raise Reply(530, "5.7.0", "Authentication required", "auth_required")
        if self._transaction is not None:
            raise Reply(503, "5.5.1", "Nested MAIL command", "bad_sequence")
        if not argument.upper().startswith("FROM:"):
            raise Reply(501, "5.5.4", "Syntax: MAIL FROM:<address>")
        userId, email = self.authenticatedAs
        try:
            path, _ = splitPathAndParams(argument[5:])
            sender = str(parsePath(path, utf8=True, allowNull=True))
        except AddressError as e:
            raise Reply(501, "5.1.7", f"Bad sender address syntax: {e}") from None
        if not self.factory.maySendAs(email, sender):
            raise Reply(
                553, "5.7.1", f"Sender address not owned by {email}", "sender_denied"
            )
        d = maybeDeferred(self.factory.sentToday, userId)
        d.addCallback(self._underDailyLimit, argument, userId, email)
        return d

    def _underDailyLimit(
        self, sent: int, argument: str, userId: int, email: str
    ) -> None:
        if sent >= self.factory.outboundPerDay:
            self._reject(
                "outbound_per_day", 451, "4.7.1", "Daily sending limit reached"
            )
            return
        try:
            super().smtp_MAIL(argument)
        except Reply as reply:
            self._reject(
                reply.reason or "syntax", reply.code, reply.enhanced, reply.text
            )
            return
        envelope = self._transaction.envelope
        envelope.recipients = [Recipient(email, userId)]  # the copy in "sent"
        envelope.mailbox, envelope.seen = "sent", True
        envelope.outbound = []
        envelope.authenticatedAs = email

    def _acceptedCount(self, transaction: Any) -> int:
        return len(_accepted(transaction.envelope))

    def smtp_RCPT(self, argument: str) -> Deferred:
        transaction, address = self._recipientAddress(argument)
        d = maybeDeferred(self.factory.resolver.resolve, address)
        d.addErrback(self._remoteIsFine)
        d.addCallbacks(
            self._accepted,
            self._recipientRejected,
            callbackArgs=(transaction, str(address)),
        )
        return d

    def _remoteIsFine(self, failure: Any) -> None:
        failure.trap(Rejection)
        if failure.value.reason != "relay_denied":
            return failure  # an unknown user of our own domain: 550 5.1.1
        return None

    def _accepted(
        self, local: list[Recipient] | None, transaction: Any, address: str
    ) -> None:
        """A local recipient gets its copy in this commit; a remote one is queued."""
        if transaction is not self._transaction:
            return
        envelope = transaction.envelope
        if local is not None:
            for recipient in local:
                if recipient.userId not in {r.userId for r in envelope.recipients[1:]}:
                    envelope.recipients.append(localCopy(recipient))
        elif address.lower() not in (a.lower() for a in envelope.outbound):
            envelope.outbound.append(address)
        self._reply(250, "2.1.5", "Recipient OK")

    def _forRecipient(self, envelope: Any) -> str | None:
        accepted = _accepted(envelope)
        return accepted[0] if len(accepted) == 1 else None

    def _beforeStore(self, transaction: Any) -> Deferred:
        """The From: header too must be the account's (no spoofing inside)."""
        d = self.factory.headerSenders(transaction.spool)
        d.addCallback(self._checkHeaderFrom)
        return d

    def _checkHeaderFrom(self, senders: list[str]) -> None:
        _, email = self.authenticatedAs
        if not senders:
            raise Refused(554, "5.6.0", "A From: header is required", "no_from")
        foreign = [a for a in senders if not self.factory.maySendAs(email, a)]
        if foreign:
            raise Refused(
                553,
                "5.7.1",
                f"From: {', '.join(foreign)} is not owned by {email}",
                "sender_denied",
            )

    def smtp_DATA(self, argument: str) -> None:
        transaction = self._transaction
        if transaction is not None and not self._acceptedCount(transaction):
            raise Reply(503, "5.5.1", "Need RCPT command first", "bad_sequence")
        super().smtp_DATA(argument)
        self._missingHeaders = MissingHeaders(self.settings.hostname)

    def _body(self, chunk: bytes, final: bool = False) -> None:
        if self._missingHeaders is not None and self._transaction.failure is None:
            chunk = self._missingHeaders.feed(chunk)
        super()._body(chunk, final)

    def _endOfData(self) -> None:
        transaction, missing = self._transaction, self._missingHeaders
        self._missingHeaders = None
        if transaction.failure is None and missing is not None and not missing.done:
            transaction.spool.write(missing.fields())  # a message of header only
        super()._endOfData()


def localCopy(recipient: Recipient) -> Recipient:
    """A local recipient's copy of mail an account sends: unread, in the inbox."""
    return Recipient(
        recipient.address,
        recipient.userId,
        mailbox="inbox",
        seen=False,
        tag=recipient.tag,
    )


def _accepted(envelope: Any) -> list[str]:
    """Every recipient RCPT accepted: local copies (after the sender's own,
    first) and remote addresses."""
    return [r.address for r in envelope.recipients[1:]] + envelope.outbound


def submittedSenders(head: bytes) -> list[str]:
    """
    The From: addresses of a submitted header block. A header the queue could
    not DKIM-sign is refused now (554 5.6.0), while the author can still fix
    it, instead of bouncing later.
    """
    problem = headerProblem(head)
    if problem is not None:
        raise Refused(554, "5.6.0", f"Malformed header: {problem}", "bad_header")
    return fromAddresses(head)


def fromAddresses(message: bytes) -> list[str]:
    """The addresses in the From: header(s) of C{message}."""
    headers = BytesHeaderParser().parsebytes(message)
    return [a for _, a in getaddresses(headers.get_all("From", [])) if a]


def headerBlock(chunks: Any) -> bytes:
    """The message's header block: reading stops at the blank line."""
    data = b""
    for chunk in chunks:
        data += chunk
        end = data.find(b"\r\n\r\n")
        if end >= 0:
            return data[: end + 2]
    return data


def spoolSenders(spool: Any) -> Deferred:
    """Without a thread pool (tests): read the spool right here."""
    return maybeDeferred(lambda: submittedSenders(headerBlock(spool.chunks())))


class SubmissionSMTPFactory(MailRavenSMTPFactory):
    protocol = SubmissionESMTP

    def __init__(
        self,
        *args: Any,
        users: Any,
        sentToday: Callable[[int], Any],
        outboundPerDay: int,
        logins: Any,
        aliases: list[str] = (),
        headerSenders: Callable[[Any], Deferred] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        # spool -> Deferred list of the From: addresses (read on a thread),
        # failing with Refused for a header the queue could not sign
        self.headerSenders = headerSenders or spoolSenders
        self.users = users
        self.sentToday = sentToday
        self.outboundPerDay = outboundPerDay
        self.logins = logins  # an ILoginLimiter
        self._sendAs: dict[str, set[str]] = {}
        for entry in aliases:
            alias, _, account = entry.partition("=")
            self._sendAs.setdefault(account.strip(), set()).add(alias.strip())

    def maySendAs(self, account: str, sender: str) -> bool:
        """The account's own address, or one of its C{submission.aliases}."""
        sender, account = sender.lower(), account.lower()  # accounts: case-blind
        return sender == account or sender in self._sendAs.get(account, ())

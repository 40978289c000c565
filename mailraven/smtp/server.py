"""The inbound ESMTP server: twisted.mail's ESMTP, hardened.

What twisted.mail (26.10) gets wrong for a public MX (docs/architecture.md)
and what this subclass does instead:

- pipelined replies came out of order while a check was pending (twisted
  #8126): we read nothing more until the pending command has answered;
- bytes pipelined after STARTTLS were executed inside TLS (CVE-2011-0411
  class): they are discarded and the session starts over;
- an over-long DATA line dropped back to command mode, running the rest of the
  body as commands: the message fails at the final dot instead;
- an unterminated line grew without bound: past a cap the session is closed;
- DATA was handed over line by line: it is taken in bulk here (the per-line
  path was the throughput limit, docs/performance.md), streamed into a L{Spool};
- ESMTP parameters were ignored, SIZE/PIPELINING/8BITMIME/ENHANCEDSTATUSCODES
  not offered, NOOP/VRFY/HELP missing, and a storage failure became 550.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any, Callable

from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.interfaces import ISSLTransport, ITLSTransport
from twisted.logger import Logger
from twisted.mail import smtp
from twisted.python.failure import Failure

from mailraven.envelope import Envelope, Recipient
from mailraven.policy.scoring import SpamRejected
from mailraven.policy.session import SessionPolicy
from mailraven.smtp.addresses import (
    Address,
    AddressError,
    parseHeloName,
    parseNumber,
    parseParams,
    parsePath,
    splitPathAndParams,
)
from mailraven.smtp.direct import sendNow
from mailraven.smtp.recipients import Rejection
from mailraven.spool import Spool

MAX_COMMAND_LINE = 4096  # RFC 5321 4.5.3.1.4 says 512; extensions need more.
MAX_TEXT_LINE = 1000  # RFC 5321 4.5.3.1.6, CRLF included
MAX_ERRORS = 20
MAX_BUFFERED = 256 * 1024  # bytes read ahead while a reply is pending
COMMAND, DATA = "COMMAND", "DATA"


@dataclass
class SMTPSettings:
    hostname: str
    maxMessageSize: int = 26214400
    maxRecipients: int = 50
    maxSessions: int = 1000  # open sessions of one listener kind (MX, submission)
    timeout: int = 300  # RFC 5321 4.5.3.2.7: a server waits at least 5 minutes


@dataclass
class Transaction:
    """One MAIL ... final-dot transaction."""

    envelope: Envelope
    spool: Spool | None = None
    size: int = 0
    failure: tuple[int, str, str, str] | None = None
    seenUsers: set[int] = field(default_factory=set)


class Reply(Exception):
    """Raised by a command handler to answer with a rejection."""

    def __init__(self, code: int, enhanced: str, text: str, reason: str = "") -> None:
        super().__init__(code, enhanced, text)
        self.code, self.enhanced, self.text, self.reason = code, enhanced, text, reason


class Refused(Reply):
    """The whole message is refused before it is stored (DMARC, From:)."""


class MailRavenESMTP(smtp.ESMTP):
    """
    One inbound SMTP session. Collaborators come from the factory: C{resolver}
    (RCPT -> local user), C{store} (L{IMessageStore}), C{spoolFactory},
    C{diskGuard}, C{metrics}.
    """

    log = Logger()

    def __init__(self, factory: MailRavenSMTPFactory) -> None:
        super().__init__(contextFactory=factory.tlsContext)
        self.factory = factory
        self.settings = factory.settings
        self.host = self.settings.hostname
        self.timeout = self.settings.timeout
        self.mode = COMMAND
        self._buffer = b""
        self._paused = False
        self._transportPaused = False
        self._processing = False
        self._atLineStart = True
        self._errors = 0
        self._closing = False
        self._drain = False
        self._heloName: str | None = None
        self._transaction: Transaction | None = None
        # Set while a multi-line exchange (AUTH) waits for the client's next line.
        self._continuation: Callable[[str], Any] | None = None
        self.peerIP = ""
        self.client: Any = None

    # -- connection -----------------------------------------------------

    def connectionMade(self) -> None:
        self.peerIP = getattr(self.transport.getPeer(), "host", "")
        self.canStartTLS = (
            ITLSTransport.providedBy(self.transport) and self.ctx is not None
        )
        if ISSLTransport.providedBy(self.transport):
            self.startedTLS = True  # implicit TLS (a tls: listener, port 465)
        if len(self.factory.sessions) >= self.settings.maxSessions:
            # Each session may hold buffers: past the cap, none for anyone.
            self._reject("max_sessions", 421, "4.3.2", "Too busy, try again later")
            self._close()
            return
        self.factory.sessionStarted(self)
        self.client = self.factory.policy.open(self.peerIP)
        refused = self.client.connect()
        if refused is not None:
            self._reject(refused.reason, refused.code, refused.enhanced, refused.text)
            self._close()
            return
        self._reply(220, "", f"{self.settings.hostname} ESMTP MailRaven")
        self.setTimeout(self.timeout)

    def connectionLost(self, reason: Failure = None) -> None:
        self.setTimeout(None)
        self._closing = True
        self._abortTransaction()
        if self.client is not None:
            self.client.close()
        self.factory.sessionEnded(self)

    def timeoutConnection(self) -> None:
        if self._paused:  # we owe the peer a reply: our slowness is not its fault
            self.setTimeout(self.timeout)  # the expired call is gone: a new one
            return
        self.log.info(
            "smtp timeout peer={peer}", peer=self.peerIP, event="smtp_timeout"
        )
        self._reply(421, "4.4.2", f"{self.settings.hostname} Error: timeout exceeded")
        self._close()

    def shutdown(self) -> None:
        """Server stopping: close now if idle, else after the current reply."""
        self._drain = True
        if not self._paused and self.mode == COMMAND:
            self._reply(421, "4.3.2", "Service shutting down, try again later")
            self._close()

    def _close(self) -> None:
        self._closing = True
        self.transport.loseConnection()

    # -- framing ------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self._closing:
            return
        self.resetTimeout()
        self._buffer += data
        if self._paused:
            if len(self._buffer) > MAX_BUFFERED and not self._transportPaused:
                self._transportPaused = True
                self.transport.pauseProducing()
        elif not self._processing:
            self._process()

    def _process(self) -> None:
        self._processing = True
        try:
            while not (self._paused or self._closing) and self._buffer:
                if self.mode == DATA:
                    if not self._consumeData():
                        break
                elif not self._consumeCommand():
                    break
        finally:
            self._processing = False

    def _consumeCommand(self) -> bool:
        end = self._buffer.find(b"\n")
        if end < 0:
            if len(self._buffer) > MAX_COMMAND_LINE:
                self._reject("line_too_long", 500, "5.5.2", "Line too long")
                self._close()
            return False
        line, self._buffer = self._buffer[:end], self._buffer[end + 1 :]
        if len(line) > MAX_COMMAND_LINE:
            self._reject("line_too_long", 500, "5.5.2", "Line too long")
            return True
        self._dispatch(line.rstrip(b"\r"))
        return True

    def _dispatch(self, line: bytes) -> None:
        if self._continuation is not None:  # a SASL exchange owns this line
            continuation, self._continuation = self._continuation, None
            self._run(continuation, line.strip().decode("ascii", "replace"))
            return
        verb, _, argument = line.strip().partition(b" ")
        handler = self._handlerFor(verb)
        try:
            text = argument.decode("utf-8").strip()
        except UnicodeDecodeError:
            self._reject("syntax", 501, "5.5.2", "Invalid UTF-8 in command")
            return
        self._run(handler, text)

    def _run(self, handler: Callable[[str], Any], text: str) -> None:
        """Call a command handler; L{Reply} and errors become SMTP replies."""
        try:
            result = handler(text)
        except Reply as reply:
            self._reject(
                reply.reason or "syntax", reply.code, reply.enhanced, reply.text
            )
            return
        except Exception:
            self.log.failure("smtp command failed peer={peer}", peer=self.peerIP)
            self._reply(451, "4.3.0", "Internal error, try again later")
            return
        if isinstance(result, Deferred):
            self._waitFor(result)

    def _handlerFor(self, verb: bytes) -> Callable[[str], Any]:
        name = verb.decode("ascii", "replace").upper()
        if not name.isalpha():
            return self._unknown
        return getattr(self, "smtp_" + name, self._unknown)

    def _waitFor(self, d: Deferred) -> None:
        """
        Handle nothing more until C{d} has answered: replies keep command order
        under pipelining (twisted #8126). Bytes that arrive meanwhile are
        buffered; past L{MAX_BUFFERED} the transport is paused (backpressure).
        A Deferred that has already fired costs nothing here.
        """
        self._paused = True
        d.addErrback(self._internalError)
        d.addBoth(self._resume)

    def _resume(self, _: object) -> None:
        self._paused = False
        if self._closing:
            return
        self.resetTimeout()  # the peer's 5 minutes start at our reply
        if self._transportPaused:
            self._transportPaused = False
            self.transport.resumeProducing()
        if self._drain and self.mode == COMMAND:
            self.shutdown()
        elif not self._processing:
            self._process()

    def _internalError(self, failure: Failure) -> None:
        self.log.failure("smtp internal error peer={peer}", failure, peer=self.peerIP)
        if not self._closing:
            self._reply(451, "4.3.0", "Internal error, try again later")

    # -- replies ----------------------------------------------------------

    def _reply(self, code: int, enhanced: str, *lines: str) -> None:
        """Send a reply; C{enhanced} goes on every line (RFC 2034)."""
        prefix = f"{enhanced} " if enhanced else ""
        last = len(lines) - 1
        text = "".join(
            f"{code}{' ' if i == last else '-'}{prefix}{line}\r\n"
            for i, line in enumerate(lines)
        )
        sendNow(self.transport, text.encode())

    def _reject(self, reason: str, code: int, enhanced: str, text: str) -> None:
        self.factory.metrics.smtpRejections.labels(reason).inc()
        self.log.info(
            "smtp reject {code} {enhanced} reason={reason} peer={peer}",
            code=code,
            enhanced=enhanced,
            reason=reason,
            peer=self.peerIP,
            event="smtp_reject",
        )
        self._reply(code, enhanced, text)
        self._errors += 1
        if self._errors >= MAX_ERRORS and not self._closing:
            self._reply(421, "4.7.0", "Too many errors, closing connection")
            self._close()

    # -- commands --------------------------------------------------------------

    def _unknown(self, argument: str) -> None:
        raise Reply(500, "5.5.2", "Command not recognized", "unknown_command")

    def smtp_HELO(self, argument: str) -> None:
        self._greet(argument)
        self._reply(250, "", f"{self.settings.hostname} Hello {argument}")

    def smtp_EHLO(self, argument: str) -> None:
        self._greet(argument)
        lines = [
            f"{self.settings.hostname} Hello {argument}",
            "PIPELINING",
            f"SIZE {self.settings.maxMessageSize}",
            "8BITMIME",
            "ENHANCEDSTATUSCODES",
            "SMTPUTF8",
        ]
        if self.canStartTLS and not self.startedTLS:
            lines.append("STARTTLS")
        lines.extend(self._moreExtensions())
        lines.append("HELP")
        self._reply(250, "", *lines)

    def _moreExtensions(self) -> list[str]:
        """EHLO keywords a subclass adds (submission: AUTH once under TLS)."""
        return []

    def _greet(self, argument: str) -> None:
        """
        RFC 5321's Domain or address literal only: the name goes into
        C{Received:}, and a bare CR, NUL or TAB there forged headers.
        """
        try:
            name = parseHeloName(argument)
        except AddressError:
            raise Reply(
                501, "5.5.4", "Syntax: EHLO domain or address literal", "bad_helo"
            ) from None
        self._abortTransaction()
        self._heloName = name

    def smtp_STARTTLS(self, argument: str) -> None:
        if argument:
            raise Reply(501, "5.5.4", "Syntax: STARTTLS")
        if self.startedTLS:
            raise Reply(503, "5.5.1", "TLS already active", "bad_sequence")
        if not self.canStartTLS:
            raise Reply(454, "4.7.0", "TLS not available", "tls_unavailable")
        self._reply(220, "2.0.0", "Ready to start TLS")
        # RFC 3207 4.2: forget everything from before TLS, including bytes the
        # client pipelined after STARTTLS (they were never protected).
        self._buffer = b""
        self._abortTransaction()
        self._heloName = None
        self.transport.startTLS(self.ctx)
        self.startedTLS = True

    def smtp_MAIL(self, argument: str) -> Deferred | None:
        if self._heloName is None:
            raise Reply(503, "5.5.1", "Send EHLO/HELO first", "bad_sequence")
        if self._transaction is not None:
            raise Reply(503, "5.5.1", "Nested MAIL command", "bad_sequence")
        if not argument.upper().startswith("FROM:"):
            raise Reply(501, "5.5.4", "Syntax: MAIL FROM:<address>")
        if not self.factory.diskGuard.acceptingMail():
            raise Reply(452, "4.3.1", "Insufficient system storage", "disk_full")
        limited = self.client.message()
        if limited is not None:
            raise Reply(limited.code, limited.enhanced, limited.text, limited.reason)
        try:
            path, words = splitPathAndParams(argument[5:])
            params = parseParams(words)
            envelope = self._envelopeFor(params)
            sender = parsePath(path, utf8=envelope.smtputf8, allowNull=True)
        except AddressError as e:
            raise Reply(501, "5.1.7", f"Bad sender address syntax: {e}") from None
        envelope.mailFrom = str(sender)
        self._transaction = Transaction(envelope)
        self._reply(250, "2.1.0", "Sender OK")
        return None

    def _envelopeFor(self, params: dict[str, str | None]) -> Envelope:
        envelope = Envelope(
            mailFrom="",
            helo=self._heloName or "",
            peerIP=self.peerIP,
            tls=self.startedTLS,
            authservId=self.settings.hostname,
        )
        for key, value in params.items():
            if key == "SIZE":
                try:
                    size = parseNumber(value)
                except AddressError:
                    raise Reply(501, "5.5.4", "Bad SIZE parameter") from None
                if size > self.settings.maxMessageSize:
                    raise Reply(
                        552, "5.3.4", "Message size exceeds fixed limit", "size"
                    )
            elif key == "BODY":
                if value is None or value.upper() not in ("7BIT", "8BITMIME"):
                    raise Reply(501, "5.5.4", "Bad BODY parameter")
                envelope.body8bit = value.upper() == "8BITMIME"
            elif key == "SMTPUTF8" and value is None:
                envelope.smtputf8 = True
            else:
                raise Reply(
                    555, "5.5.4", f"Unsupported parameter {key}", "bad_parameter"
                )
        return envelope

    def _acceptedCount(self, transaction: Transaction) -> int:
        return len(transaction.envelope.recipients)

    def _recipientAddress(self, argument: str) -> tuple[Transaction, Address]:
        """RCPT's checks before any lookup: order, syntax, count, rate limit."""
        transaction = self._transaction
        if transaction is None:
            raise Reply(503, "5.5.1", "Need MAIL command first", "bad_sequence")
        if not argument.upper().startswith("TO:"):
            raise Reply(501, "5.5.4", "Syntax: RCPT TO:<address>")
        if self._acceptedCount(transaction) >= self.settings.maxRecipients:
            raise Reply(452, "4.5.3", "Too many recipients", "too_many_recipients")
        try:
            path, words = splitPathAndParams(argument[3:])
            if words:
                raise Reply(555, "5.5.4", "Unsupported RCPT parameter", "bad_parameter")
            address = parsePath(
                path, utf8=transaction.envelope.smtputf8, allowPostmaster=True
            )
        except AddressError as e:
            raise Reply(501, "5.1.3", f"Bad recipient address syntax: {e}") from None
        limited = self.client.recipient()
        if limited is not None:
            raise Reply(limited.code, limited.enhanced, limited.text, limited.reason)
        return transaction, address

    def smtp_RCPT(self, argument: str) -> Deferred:
        transaction, address = self._recipientAddress(argument)
        d = maybeDeferred(self.factory.resolver.resolve, address)
        d.addCallback(self._afterDNSBL, transaction)
        d.addCallbacks(
            self._recipientAccepted,
            self._recipientRejected,
            callbackArgs=(transaction,),
        )
        return d

    def _afterDNSBL(
        self, recipients: list[Recipient], transaction: Transaction
    ) -> Deferred:
        """A local recipient: now the DNSBL verdict (started at connect) counts."""

        def scored(score: float) -> list[Recipient]:
            transaction.envelope.dnsblScore = score
            return recipients

        return self.client.dnsblGate().addCallback(scored)

    def _recipientAccepted(
        self, recipients: list[Recipient], transaction: Transaction
    ) -> None:
        if transaction is not self._transaction:
            return  # RSET/QUIT raced the lookup; nothing to answer for.
        # one copy per account, however many of its addresses (or aliases
        # it is a member of) the message names
        for recipient in recipients:
            if recipient.userId not in transaction.seenUsers:
                transaction.seenUsers.add(recipient.userId)
                transaction.envelope.recipients.append(recipient)
        self._reply(250, "2.1.5", "Recipient OK")

    def _recipientRejected(self, failure: Failure) -> None:
        failure.trap(Rejection)
        rejection = failure.value
        self._reject(
            rejection.reason, rejection.code, rejection.enhanced, rejection.text
        )

    def smtp_DATA(self, argument: str) -> None:
        if argument:
            raise Reply(501, "5.5.4", "Syntax: DATA")
        transaction = self._transaction
        if transaction is None or not transaction.envelope.recipients:
            raise Reply(503, "5.5.1", "Need RCPT command first", "bad_sequence")
        transaction.spool = self.factory.spoolFactory()
        transaction.spool.write(self._traceHeaders(transaction.envelope))
        self.mode = DATA
        self._atLineStart = True
        self._reply(354, "", "End data with <CR><LF>.<CR><LF>")

    def _traceHeaders(self, envelope: Envelope) -> bytes:
        """
        Return-Path and Received (RFC 5321 4.4), prepended to the message. The
        peer's parts were checked on the way in (EHLO name, paths); they pass
        through L{headerSafe} all the same, so no peer byte can end a line.
        """
        protocol = "ESMTPS" if envelope.tls else "ESMTP"
        if envelope.smtputf8:
            protocol = "UTF8SMTPS" if envelope.tls else "UTF8SMTP"
        if envelope.authenticatedAs:
            protocol += "A"  # RFC 3848: ESMTPSA
        forClause = ""
        if (forAddress := self._forRecipient(envelope)) is not None:
            forClause = f"\r\n\tfor <{headerSafe(forAddress)}>"
        stamp = format_datetime(datetime.now(UTC))
        helo = headerSafe(envelope.helo).replace("(", "").replace(")", "")
        return (
            f"Return-Path: <{headerSafe(envelope.mailFrom)}>\r\n"
            f"Received: from {helo} ([{ipText(envelope.peerIP)}])\r\n"
            f"\tby {self.settings.hostname} (MailRaven) with {protocol}{forClause};"
            f"\r\n\t{stamp}\r\n"
        ).encode()

    def _forRecipient(self, envelope: Envelope) -> str | None:
        """Received's C{for}: the recipient when there is exactly one."""
        if len(envelope.recipients) == 1:
            return envelope.recipients[0].address
        return None

    def smtp_RSET(self, argument: str) -> None:
        self._abortTransaction()
        self._reply(250, "2.0.0", "Reset OK")

    def smtp_NOOP(self, argument: str) -> None:
        self._reply(250, "2.0.0", "OK")

    def smtp_VRFY(self, argument: str) -> None:
        self._reply(252, "2.5.2", "Cannot VRFY user, but will accept message")

    def smtp_HELP(self, argument: str) -> None:
        self._reply(
            214,
            "2.0.0",
            "Commands: EHLO HELO MAIL RCPT DATA RSET NOOP VRFY HELP QUIT STARTTLS",
            "See RFC 5321",
        )

    def smtp_QUIT(self, argument: str) -> None:
        self._reply(221, "2.0.0", "Bye")
        self._close()

    # -- DATA --------------------------------------------------------------------

    def _consumeData(self) -> bool:
        """
        Take DATA in bulk. Returns False when more bytes are needed. Lines are
        handed over whole (up to the last CRLF) so dot-unstuffing never spans
        two chunks; only CRLF.CRLF ends the data (no bare-LF smuggling).
        """
        buf = self._buffer
        if self._atLineStart and buf.startswith(b".\r\n"):
            self._buffer = buf[3:]
            self._endOfData()
            return True
        end = buf.find(b"\r\n.\r\n")
        if end >= 0:
            self._buffer = buf[end + 5 :]
            self._body(buf[: end + 2], final=True)
            self._endOfData()
            return True
        lastLine = buf.rfind(b"\r\n")
        if lastLine >= 0:
            self._buffer = buf[lastLine + 2 :]
            self._body(buf[: lastLine + 2])
            self._atLineStart = True
        if len(self._buffer) >= MAX_TEXT_LINE:
            # A partial line already too long: fail the message, keep memory
            # bounded, keep a trailing CR that may begin the terminator.
            self._failMessage(500, "5.5.2", "Line too long", "line_too_long")
            self._buffer = self._buffer[-1:] if self._buffer.endswith(b"\r") else b""
            self._atLineStart = False
        return False

    def _body(self, chunk: bytes, final: bool = False) -> None:
        transaction = self._transaction
        if self._atLineStart and chunk.startswith(b"."):
            chunk = chunk[1:]
        self._atLineStart = True
        if transaction.failure is not None:
            return
        if hasLongLine(chunk, MAX_TEXT_LINE):
            self._failMessage(
                500, "5.5.2", "Line too long (RFC 5321 4.5.3.1.6)", "line_too_long"
            )
            return
        if b"." in chunk:  # memchr; base64 has no dots, so nothing to unstuff
            chunk = chunk.replace(b"\r\n.", b"\r\n")  # 110 us per 64 KB
        if transaction.size == 0 and chunk[:1] in (b" ", b"\t"):
            # A first line that starts with a blank would continue our own
            # Received: (RFC 5322 2.2.3). As Postfix's cleanup does, it ends
            # the header: an empty line goes before it, the rest is body.
            chunk = b"\r\n" + chunk
        transaction.size += len(chunk)
        if transaction.size > self.settings.maxMessageSize:
            self._failMessage(552, "5.3.4", "Message size exceeds fixed limit", "size")
            return
        spilled = transaction.spool.write(chunk)
        if spilled is not None and not final:  # deliver() waits for the rest
            self._waitFor(spilled)

    def _failMessage(self, code: int, enhanced: str, text: str, reason: str) -> None:
        """Remember why the message fails; the reply comes at the final dot."""
        transaction = self._transaction
        if transaction.failure is None:
            transaction.failure = (code, enhanced, text, reason)
            self._discardSpool(transaction)

    def _endOfData(self) -> None:
        transaction, self._transaction = self._transaction, None
        self.mode = COMMAND
        self._atLineStart = True
        if transaction.failure is not None:
            code, enhanced, text, reason = transaction.failure
            self.factory.metrics.smtpMessages.labels("rejected").inc()
            self._reject(reason, code, enhanced, text)
            return
        if not self._roomFor(transaction):
            self._discardSpool(transaction)
            self.factory.metrics.smtpMessages.labels("rejected").inc()
            self._reject("over_quota", 452, "4.2.2", "Mailbox full")
            return
        d = self._beforeStore(transaction)
        d.addCallback(
            lambda _: self.factory.store.deliver(
                transaction.envelope, transaction.spool
            )
        )
        d.addCallbacks(self._stored, self._storeFailed, errbackArgs=(transaction,))
        self._waitFor(d)

    def _roomFor(self, transaction: Transaction) -> bool:
        """
        Whether every recipient address (but the sender's own copy in
        "sent") still reaches an account with room (docs/quotas.md);
        members of an alias that filled up since RCPT are left out. A
        refusal is temporary, and the sender's retry meets the 452 at RCPT.
        """
        envelope = transaction.envelope
        groups: dict[str, list[int]] = {}
        for r in envelope.recipients:
            if (r.mailbox or envelope.mailbox) != "sent":
                groups.setdefault(r.address.lower(), []).append(r.userId)
        kept = self.factory.resolver.reserveRoom(
            list(groups.values()), transaction.size
        )
        if kept is None:
            return False
        envelope.recipients = [
            r
            for r in envelope.recipients
            if r.userId in kept or (r.mailbox or envelope.mailbox) == "sent"
        ]
        return True

    def _beforeStore(self, transaction: Transaction) -> Deferred:
        """The DATA stage of the policy pipeline; a refusal refuses the message."""
        d = self.client.checkMessage(transaction)
        d.addCallback(self._judged)
        return d

    def _judged(self, verdict: Any) -> None:
        refusal = verdict.refusal
        if refusal is not None:
            raise Refused(refusal.code, refusal.enhanced, refusal.text, refusal.reason)

    def _stored(self, messageId: str) -> None:
        self.factory.metrics.smtpMessages.labels("accepted").inc()
        self.log.info(
            "smtp accepted id={id} peer={peer}",
            id=messageId,
            peer=self.peerIP,
            event="smtp_accepted",
        )
        if not self._closing:
            self._reply(250, "2.0.0", f"Ok {messageId}")

    def _storeFailed(self, failure: Failure, transaction: Transaction) -> None:
        self._discardSpool(transaction)
        if failure.check(Refused):
            refused = failure.value
            self.factory.metrics.smtpMessages.labels("rejected").inc()
            if not self._closing:
                self._reject(
                    refused.reason, refused.code, refused.enhanced, refused.text
                )
            return
        if failure.check(SpamRejected):
            self.factory.metrics.smtpMessages.labels("rejected").inc()
            if not self._closing:
                self._reject(
                    "spam",
                    550,
                    "5.7.1",
                    f"Message rejected as spam (score {failure.value.score:.1f})",
                )
            return
        self.factory.metrics.smtpMessages.labels("failed").inc()
        self.log.failure(
            "store failed peer={peer}", failure, peer=self.peerIP, event="store_failed"
        )
        self._discardSpool(transaction)
        if not self._closing:
            self._reply(451, "4.3.0", "Error storing message, try again later")

    def _abortTransaction(self) -> None:
        transaction, self._transaction = self._transaction, None
        if transaction is not None:
            self._discardSpool(transaction)
        self.mode = COMMAND

    def _discardSpool(self, transaction: Transaction) -> None:
        spool, transaction.spool = transaction.spool, None
        if spool is not None:
            self.factory.discardSpool(spool)


class MailRavenSMTPFactory(smtp.SMTPFactory):
    """Holds what every session shares, and knows the live sessions (drain)."""

    protocol = MailRavenESMTP
    noisy = False

    def __init__(
        self,
        settings: SMTPSettings,
        resolver: Any,
        store: Any,
        spoolFactory: Callable[[], Spool],
        discardSpool: Callable[[Spool], None],
        diskGuard: Any,
        metrics: Any,
        tlsContext: Any = None,
        clock: Any = None,
        policy: SessionPolicy | None = None,
    ) -> None:
        super().__init__()
        self.policy = policy or SessionPolicy()
        self.settings = settings
        self.resolver = resolver
        self.store = store
        self.spoolFactory = spoolFactory
        self.discardSpool = discardSpool
        self.diskGuard = diskGuard
        self.metrics = metrics
        self.tlsContext = tlsContext
        self.clock = clock
        self.sessions: set[MailRavenESMTP] = set()
        self._drained: list[Deferred] = []

    def buildProtocol(self, addr: Any) -> MailRavenESMTP:
        proto = self.protocol(self)
        if self.clock is not None:
            proto.callLater = self.clock.callLater
        return proto

    def sessionStarted(self, proto: MailRavenESMTP) -> None:
        self.sessions.add(proto)
        self.metrics.smtpSessions.inc()
        self.metrics.smtpActive.inc()

    def sessionEnded(self, proto: MailRavenESMTP) -> None:
        if proto in self.sessions:
            self.sessions.discard(proto)
            self.metrics.smtpActive.dec()
        if not self.sessions:
            drained, self._drained = self._drained, []
            for d in drained:
                d.callback(None)

    def drain(self, grace: float) -> Deferred:
        """
        Ask every session to finish (idle ones close at once, DATA in flight may
        complete); after C{grace} seconds the rest are cut off.
        """
        if not self.sessions:
            return succeed(None)
        d: Deferred = Deferred()
        self._drained.append(d)
        for proto in list(self.sessions):
            proto.shutdown()
        timer = self.clock.callLater(grace, self._abortAll)
        d.addBoth(lambda r: (timer.active() and timer.cancel(), r)[1])
        return d

    def _abortAll(self) -> None:
        for proto in list(self.sessions):
            proto.transport.abortConnection()


_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def headerSafe(text: str) -> str:
    """C{text} with every control character (CR, LF, TAB, NUL...) as C{?}."""
    return _UNSAFE.sub("?", text)


def ipText(ip: str) -> str:
    """The peer's address for a header: a valid IP address, else C{unknown}."""
    try:
        return str(ipaddress.ip_address(ip))
    except ValueError:
        return "unknown"


def hasLongLine(chunk: bytes, limit: int) -> bool:
    """
    Whether a line of C{chunk} (CR included, LF not) is C{limit} octets or
    longer. Splitting 64 KB of base64 into its ~900 lines was an eighth of the
    reactor's time for such mail; this looks only at every (limit/2)-octet
    block: a line that long must contain one whole block without an LF.
    """
    step = max(1, limit // 2)
    find = chunk.find
    if len(chunk) < limit:
        return False
    for start in range(0, len(chunk) - step + 1, step):
        if find(b"\n", start, start + step) < 0:
            lineStart = chunk.rfind(b"\n", 0, start) + 1
            lineEnd = find(b"\n", start)
            if (len(chunk) if lineEnd < 0 else lineEnd) - lineStart >= limit:
                return True
    return False

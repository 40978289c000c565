"""The IMAP server: twisted.mail.imap4's IMAP4Server, hardened.

What twisted.mail (26.10) gets wrong (../shared/notes/twisted.md section 2)
and what this subclass does instead:

- commands pipelined after STARTTLS in the same read ran inside TLS
  (CVE-2011-0411 class): they are discarded;
- LOGIN was refused before TLS but AUTHENTICATE was not, and the capability
  list said nothing: before TLS there is C{LOGINDISABLED} and no C{AUTH=};
  both commands answer C{NO [PRIVACYREQUIRED]};
- every login goes through the server's one L{LoginLimiter}, reserved
  before the password is checked (parallel guesses count while in flight);
- command lines and literals had no bound (an APPEND literal spilled to a
  temp file of any size): lines stop at C{maxLine}, APPEND literals at the
  configured maximum message size (C{NO [TOOBIG]}, no continuation), other
  literals at 4096 octets; APPEND bytes go to a L{Spool};
- a command's reply could overtake an earlier one's: nothing more is read
  until the command in flight has answered (as the SMTP server does);
- non-ASCII commands, bad mailbox names and flags raised out of the parser
  (a traceback in the log and C{* BAD Server error}): they get C{BAD};
- NAMESPACE reported the shared namespace twice; ID (RFC 2971) was missing;
  APPEND without a flag list or to a missing folder failed with C{BAD};
- IDLE told the session nothing and ended on any line (L{idle});
- FETCH, STORE, SEARCH and the folder commands: see L{selected},
  L{commands}, L{condstore}.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import ISSLTransport, ITLSTransport
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.mail import imap4
from twisted.mail.imap4 import IllegalClientResponse, IllegalMailboxEncoding
from twisted.python.failure import Failure

from mailraven.changes import IDLE_POLL
from mailraven.imap.commands import FolderCommands, decodeName, safe
from mailraven.imap.condstore import CondstoreCommands
from mailraven.imap.idle import IdleCommands
from mailraven.imap.literals import (
    AppendLiteral,
    DiscardLiteral,
    nonSynchronizing,
    parseAppendArguments,
)
from mailraven.imap.quota import QuotaCommands
from mailraven.imap.selected import MessageCommands
from mailraven.policy.logins import Throttled
from mailraven.smtp.auth import SASLError, decodePlain
from mailraven.store.users import normaliseAddress

MAX_LINE = 65536  # RFC 7162 4: at least 8192; long UID sets need more
MAX_BUFFERED = 256 * 1024  # bytes read ahead while a command is in flight
_TAG = re.compile(rb'[^\x00-\x20\x7f-\xff(){%*"\\\]+]+')
_DONE = (b"OK", b"NO", b"BAD")


@dataclass
class IMAPSettings:
    hostname: str
    maxMessageSize: int = 26214400
    maxLine: int = MAX_LINE
    # RFC 3501 5.4: at least 30 minutes once logged in; shorter before.
    loginTimeout: int = 60
    idleTimeout: int = 30 * 60
    maxSessions: int = 1000  # open sessions of all IMAP listeners
    maxPerAccount: int = 20  # logged-in sessions of one account
    maxPerIP: int = 50  # open sessions of one client IP (logged in or not)
    idlePoll: float = IDLE_POLL  # seconds between an idle session's checks


class MailRavenIMAPServer(
    QuotaCommands,
    IdleCommands,
    CondstoreCommands,
    MessageCommands,
    FolderCommands,
    imap4.IMAP4Server,
):
    """
    One IMAP session. Collaborators come from the factory: C{users}
    (L{IUserStore}), C{logins} (L{ILoginLimiter}), C{accounts} (user id,
    address -> Deferred account), C{spoolFactory}, C{discardSpool}.
    """

    log = Logger()
    IDENT = b"MailRaven IMAP4rev1 ready"

    def __init__(self, factory: Any) -> None:
        super().__init__(chal={}, contextFactory=factory.tlsContext)
        self.factory = factory
        self.settings: IMAPSettings = factory.settings
        self.timeOut = self.settings.loginTimeout
        self.POSTAUTH_TIMEOUT = self.settings.idleTimeout
        self.MAX_LENGTH = self.settings.maxLine
        self.peerIP = ""
        self.userId: int | None = None
        self.email: str | None = None
        self._buffer = b""
        self._inFlight: bytes | None = None
        self._processing = False
        self._transportPaused = False
        self._closing = False
        self._resumeCall: Any = None
        self._ticket: Any = None
        self._appendLiteral: AppendLiteral | None = None
        self._nonSync = False

    # -- connection ---------------------------------------------------------

    def connectionMade(self) -> None:
        self.peerIP = getattr(self.transport.getPeer(), "host", "")
        if ISSLTransport.providedBy(self.transport):
            self.startedTLS = True  # implicit TLS (imaps.listen)
        if not self.factory.sessionStarted(self):
            self.sendLine(b"* BYE Too many connections, try again later")
            self._close()
            return
        super().connectionMade()
        self.canStartTLS = (
            ITLSTransport.providedBy(self.transport) and self.ctx is not None
        )

    def connectionLost(self, reason: Failure = None) -> None:
        self._closing = True
        self._stopIdling()
        self._settleAbandoned()
        if self._resumeCall is not None and self._resumeCall.active():
            self._resumeCall.cancel()
        self._dropAppend()
        self.mbox = None
        self.factory.sessionEnded(self)
        super().connectionLost(reason)

    def _stringLiteral(self, size: int) -> Any:
        """A literal of a negative size never ends: refused."""
        if size < 0:
            raise imap4.IllegalClientResponse("A literal size is 0 or more")
        return super()._stringLiteral(size)

    def timeoutConnection(self) -> None:
        if self._waiting() and self._idleTag is None:
            # we owe the client an answer (IDLE is the client's to end; a
            # literal announced and never sent is the client's too)
            self.setTimeout(self.timeOut)
            return
        self.log.info("imap autologout peer={peer}", peer=self.peerIP)
        self.sendLine(b"* BYE Autologout; connection idle too long")
        self.mbox = None
        self._close()

    def shutdown(self) -> None:
        """The server is stopping: say so and close."""
        if not self._closing:
            self.sendLine(b"* BYE Server shutting down")
            self._close()

    def _close(self) -> None:
        self._closing = True
        self.transport.loseConnection()

    @property
    def secure(self) -> bool:
        """Whether the session is under TLS (STARTTLS done, or imaps)."""
        return bool(self.startedTLS)

    # -- framing: one command at a time, bounded buffers -------------------

    def dataReceived(self, data: bytes) -> None:
        if self._closing:
            return
        self.resetTimeout()
        self._buffer += data
        if self._waiting():
            if len(self._buffer) > MAX_BUFFERED and not self._transportPaused:
                self._transportPaused = True
                self.transport.pauseProducing()
        elif not self._processing:
            self._process()

    def _waiting(self) -> bool:
        """A command is being carried out (not waiting for its literal)."""
        return self._inFlight is not None and self.parseState == "command"

    def _process(self) -> None:
        self._processing = True
        try:
            while self._buffer and not (self._closing or self._waiting()):
                if not self.line_mode:
                    data, self._buffer = self._buffer, b""
                    self.rawDataReceived(data)
                    continue
                end = self._buffer.find(b"\n")
                if end < 0 or end > self.MAX_LENGTH:
                    if end >= 0 or len(self._buffer) > self.MAX_LENGTH:
                        self.lineLengthExceeded(self._buffer)
                    break
                line, self._buffer = self._buffer[:end], self._buffer[end + 1 :]
                self.lineReceived(line.removesuffix(b"\r"))
        finally:
            self._processing = False

    def setLineMode(self, extra: bytes = b"") -> None:
        # called by a finished literal with the bytes after it
        self.line_mode = 1
        self._buffer = extra + self._buffer

    def lineLengthExceeded(self, line: bytes) -> None:
        self._buffer = b""
        self.sendLine(b"* BAD Command line too long")
        self.sendLine(b"* BYE Closing the connection")
        self._close()

    def _resume(self) -> None:
        self._resumeCall = None
        if self._transportPaused and not self._closing:
            self._transportPaused = False
            self.transport.resumeProducing()
        if not self._processing:
            self._process()

    def _respond(self, state: bytes, tag: Any, message: Any) -> None:
        super()._respond(state, tag, message)
        if tag and tag != b"*" and state in _DONE and tag == self._inFlight:
            self._inFlight = None
            if not self._processing and self._resumeCall is None:
                self._resumeCall = self.callLater(0, self._resume)

    def lineReceived(self, line: bytes) -> None:
        if self.blocked is not None:  # twisted's FETCH sets this
            self.blocked.append(line)
            return
        parse = getattr(self, "parse_" + self.parseState)
        try:
            parse(line)
        except Exception:
            self.log.failure("imap command failed peer={peer}", peer=self.peerIP)
            self._internalError()

    def _internalError(self) -> None:
        if self._inFlight is not None:
            self.sendBadResponse(self._inFlight, b"Internal server error")
        else:
            self.sendUntaggedResponse(b"BAD Internal server error")

    # -- LITERAL+: {n+} is read as {n}, without a continuation -------------

    def parse_command(self, line: bytes) -> None:
        line, size = nonSynchronizing(line)
        self._nonSync = size is not None
        try:
            self._parseCommand(line)
        finally:
            self._nonSync = False
        if size is not None:
            self._dropUnreadLiteral(size)

    def parse_pending(self, line: bytes) -> None:
        line, size = nonSynchronizing(line)
        self._nonSync = size is not None
        try:
            super().parse_pending(line)
        finally:
            self._nonSync = False
        if size is not None:
            self._dropUnreadLiteral(size)

    def sendContinuationRequest(
        self, msg: bytes = b"Ready for additional command text"
    ) -> None:
        """Not for a non-synchronizing literal: its octets are on the way."""
        if not self._nonSync:
            super().sendContinuationRequest(msg)

    def _dropUnreadLiteral(self, size: int) -> None:
        """
        A command refused before its non-synchronizing literal was read: the
        octets (and the rest of the line) are read and dropped, never taken
        for commands. Past the size this session could have sent (APPEND's
        limit once logged in, a string literal's before), the connection
        closes instead.
        """
        if self.parseState != "command" or self._closing:
            return  # the command took the literal
        limit = (
            self.settings.maxMessageSize
            if self.state in ("auth", "select")
            else self._literalStringLimit
        )
        if size > limit:
            self.sendLine(b"* BYE Literal too large, closing the connection")
            self._close()
            return
        self._pendingLiteral = DiscardLiteral(size)
        self.parseState = "pending"
        self.setRawMode()

    def _parseCommand(self, line: bytes) -> None:
        args = line.split(None, 2)
        if not args:
            self.sendUntaggedResponse(b"BAD Empty command line")
            return
        tag = args[0]
        if not _TAG.fullmatch(tag):
            self.sendUntaggedResponse(b"BAD Invalid tag")
            return
        if len(args) == 1:
            self.sendBadResponse(tag, b"Missing command")
            return
        command = args[1].upper()
        if not command.isalpha():
            self.sendBadResponse(tag, b"Unknown command")
            return
        self._inFlight = tag
        try:
            self.dispatchCommand(tag, command, args[2] if len(args) == 3 else None)
        except IllegalClientResponse as e:
            self.sendBadResponse(tag, b"Illegal syntax: " + _text(e))
        except (UnicodeError, IllegalMailboxEncoding):
            self.sendBadResponse(tag, b"Argument is not valid UTF-8 or modified UTF-7")
        except imap4.IllegalOperation as e:
            self.sendNegativeResponse(tag, b"Illegal operation: " + _text(e))

    def _IMAP4Server__ebDispatch(self, failure: Failure, tag: bytes) -> None:
        """A parser or handler failed after an argument came in a literal."""
        if failure.check(IllegalClientResponse, ValueError, TypeError):
            self.sendBadResponse(tag, b"Illegal syntax: " + _text(failure.value))
        elif failure.check(UnicodeError, IllegalMailboxEncoding):
            self.sendBadResponse(tag, b"Argument is not valid UTF-8 or modified UTF-7")
        elif failure.check(imap4.IllegalOperation, imap4.MailboxException):
            self.sendNegativeResponse(tag, _text(failure.value))
        else:
            self.log.failure(
                "imap command failed peer={peer}", failure, peer=self.peerIP
            )
            self.sendBadResponse(tag, b"Internal server error")

    # -- capabilities, STARTTLS, ID, NAMESPACE -----------------------------

    def capabilities(self) -> dict[bytes, Any]:
        caps: dict[bytes, Any] = {}
        if self.secure:
            caps[b"AUTH"] = [b"PLAIN"]
            caps[b"SASL-IR"] = None
        else:
            if self.ctx is not None and self.canStartTLS:
                caps[b"STARTTLS"] = None
            caps[b"LOGINDISABLED"] = None
        caps[b"ID"] = None
        caps[b"NAMESPACE"] = None
        caps[b"LITERAL+"] = None
        caps.update(self.moreCapabilities())
        return caps

    def moreCapabilities(self) -> dict[bytes, Any]:
        """What the mailbox layer adds (a subclass's hook)."""
        return {
            b"APPENDLIMIT": [b"%d" % self.settings.maxMessageSize],
            b"CONDSTORE": None,
            b"ENABLE": None,
            b"IDLE": None,
            b"MOVE": None,
            b"QUOTA": None,
            b"QUOTA=RES-STORAGE": None,
            b"SPECIAL-USE": None,
            b"UIDPLUS": None,
            b"UNSELECT": None,
        }

    def do_STARTTLS(self, tag: bytes) -> None:
        if self.secure:
            self.sendNegativeResponse(tag, b"TLS is already active")
            return
        if self.ctx is None or not self.canStartTLS:
            self.sendNegativeResponse(tag, b"TLS not available")
            return
        # RFC 3501 6.2.1 / CVE-2011-0411: what came after STARTTLS in the
        # clear must not run as if it came under TLS.
        self._buffer = b""
        self.sendPositiveResponse(tag, b"Begin TLS negotiation now")
        self.transport.startTLS(self.ctx)
        self.startedTLS = True

    unauth_STARTTLS = (do_STARTTLS,)

    def do_ID(self, tag: bytes, line: bytes) -> None:
        """RFC 2971: the client's list is checked for form, not used."""
        line = line.strip()
        if line.upper() != b"NIL":
            try:
                fields = imap4.parseNestedParens(line)
            except Exception:
                fields = None
            if not (
                fields
                and len(fields) == 1
                and isinstance(fields[0], list)
                and len(fields[0]) % 2 == 0
                and len(fields[0]) <= 60
            ):
                self.sendBadResponse(tag, b"Expected ID NIL or ID (field value ...)")
                return
        self.sendUntaggedResponse(b'ID ("name" "MailRaven")')
        self.sendPositiveResponse(tag, b"ID completed")

    unauth_ID = (do_ID, safe(imap4.IMAP4Server.arg_line))
    auth_ID = unauth_ID
    select_ID = unauth_ID

    def do_NAMESPACE(self, tag: bytes) -> None:
        # RFC 2342: personal, other users', shared; only the first is ours
        self.sendUntaggedResponse(b'NAMESPACE (("" "/")) NIL NIL')
        self.sendPositiveResponse(tag, b"NAMESPACE completed")

    auth_NAMESPACE = (do_NAMESPACE,)
    select_NAMESPACE = auth_NAMESPACE

    # -- LOGIN and AUTHENTICATE PLAIN ---------------------------------------

    def do_LOGIN(self, tag: bytes, user: bytes, password: bytes) -> None:
        if not self.secure:
            self.sendNegativeResponse(
                tag, b"[PRIVACYREQUIRED] LOGIN is disabled before STARTTLS"
            )
            return
        try:
            login, secret = user.decode("utf-8"), password.decode("utf-8")
        except UnicodeDecodeError:
            self.sendBadResponse(tag, b"Login and password must be UTF-8")
            return
        self._checkPassword(tag, login, secret)

    unauth_LOGIN = (
        do_LOGIN,
        safe(imap4.IMAP4Server.arg_astring),
        safe(imap4.IMAP4Server.arg_finalastring),
    )

    def do_AUTHENTICATE(self, tag: bytes, line: bytes) -> None:
        if not self.secure:
            self.sendNegativeResponse(
                tag, b"[PRIVACYREQUIRED] AUTHENTICATE is disabled before STARTTLS"
            )
            return
        mechanism, _, initial = line.strip().partition(b" ")
        if mechanism.upper() != b"PLAIN":
            self.sendNegativeResponse(tag, b"Unsupported authentication mechanism")
            return
        if initial:  # RFC 4959 SASL-IR; "=" is an empty response
            self._plainResponse(b"" if initial == b"=" else initial, tag)
            return
        self.parseState = "pending"
        self._pendingLiteral = Deferred()
        self._pendingLiteral.addCallback(self._plainResponse, tag)
        self.sendLine(b"+ ")

    unauth_AUTHENTICATE = (do_AUTHENTICATE, safe(imap4.IMAP4Server.arg_line))

    def _plainResponse(self, response: bytes, tag: bytes) -> None:
        if response.strip() == b"*":
            self.sendBadResponse(tag, b"AUTHENTICATE cancelled")
            return
        try:
            login, password = decodePlain(response.strip().decode("ascii"))
        except (SASLError, UnicodeDecodeError):
            self.sendBadResponse(tag, b"Invalid PLAIN response")
            return
        self._checkPassword(tag, login, password)

    def _checkPassword(self, tag: bytes, login: str, password: str) -> None:
        """Reserve the attempt with the limiter, then ask the user store."""
        attempt = self.factory.logins.reserve(self.peerIP, login, "imap")
        if isinstance(attempt, Throttled):
            self.log.info(
                "imap login throttled login={login} peer={peer}",
                login=login,
                peer=self.peerIP,
                event="imap_auth_throttled",
            )
            self.sendNegativeResponse(
                tag, b"[UNAVAILABLE] Too many failed logins, try later"
            )
            return
        self._ticket = attempt
        d = maybeDeferred(self.factory.users.authenticate, login, password)
        d.addCallback(self._checked, tag, login)
        d.addErrback(self._loginError, tag)

    def _checked(self, userId: int | None, tag: bytes, login: str) -> Any:
        self.log.info(
            "imap login {outcome} login={login} peer={peer}",
            outcome="ok" if userId is not None else "failed",
            login=login,
            peer=self.peerIP,
            event="imap_auth",
        )
        ticket, self._ticket = self._ticket, None
        if userId is None:
            delay = ticket.failed() if ticket is not None else 0.0
            return deferLater(self.factory.clock, delay, self._loginFailed, tag)
        if ticket is None:  # the session ended while the password was checked
            return None
        ticket.succeeded()
        if not self.factory.loggedIn(self, userId):
            self.sendNegativeResponse(
                tag, b"[LIMIT] Too many connections for this account"
            )
            return None
        email = normaliseAddress(login)
        d = maybeDeferred(self.factory.accounts, userId, email)
        d.addCallback(self._haveAccount, tag, userId, email)
        return d

    def _haveAccount(self, account: Any, tag: bytes, userId: int, email: str) -> None:
        if self._closing:
            return
        self.account, self.userId, self.email = account, userId, email
        self.state = "auth"
        self.setTimeout(self.POSTAUTH_TIMEOUT)
        caps = b" ".join(self.listCapabilities())
        self.sendPositiveResponse(tag, b"[CAPABILITY " + caps + b"] Logged in")

    def _loginFailed(self, tag: bytes) -> None:
        if not self._closing:
            self.sendNegativeResponse(
                tag, b"[AUTHENTICATIONFAILED] Authentication failed"
            )

    def _loginError(self, failure: Failure, tag: bytes) -> None:
        self._settleAbandoned()
        self.log.failure("imap login error peer={peer}", failure, peer=self.peerIP)
        if not self._closing:
            self.sendNegativeResponse(tag, b"[UNAVAILABLE] Try again later")

    def _settleAbandoned(self) -> None:
        """A login that ended without an answer used a guess all the same."""
        ticket, self._ticket = self._ticket, None
        if ticket is not None:
            ticket.failed()

    # -- APPEND: the literal goes to a spool, capped -------------------------

    def do_APPEND(self, tag: bytes, mailbox: bytes, rest: bytes) -> None:
        name = decodeName(mailbox)
        flags, date, size = parseAppendArguments(rest)
        if size > self.settings.maxMessageSize:
            self.sendNegativeResponse(tag, b"[TOOBIG] Message is too large")
            return
        received: Deferred = Deferred()
        literal = AppendLiteral(size, self.factory.spoolFactory(), received)
        self._appendLiteral = literal
        self._pendingLiteral = literal
        self.parseState = "pending"
        self.sendContinuationRequest(b"Ready for literal data")
        self.setRawMode()
        received.addCallback(self._appendReceived, tag, name, flags, date)
        received.addErrback(self._appendFailed, tag)

    auth_APPEND = (
        do_APPEND,
        safe(imap4.IMAP4Server.arg_astring),
        safe(imap4.IMAP4Server.arg_line),
    )
    select_APPEND = auth_APPEND

    def _appendReceived(
        self, result: tuple[Any, bytes], tag: bytes, name: str, flags: Any, date: Any
    ) -> Deferred | None:
        spool, rest = result
        self._appendLiteral = None
        if rest.strip():
            self.factory.discardSpool(spool)
            self.sendBadResponse(tag, b"Unexpected text after the message literal")
            return None
        d = maybeDeferred(self.account.append, name, spool, flags, date)
        d.addCallback(self._appended, tag, name)
        return d

    def _appended(self, result: Any, tag: bytes, name: str) -> Deferred | None:
        if self._closing:
            return None
        done = (b"" if result is None else result + b" ") + b"APPEND completed"
        return self.reportChangesIn(name, tag, done)

    def _appendFailed(self, failure: Failure, tag: bytes) -> None:
        if self._closing:
            return
        if failure.check(imap4.NoSuchMailbox):
            self.sendNegativeResponse(tag, b"[TRYCREATE] No such mailbox")
        elif failure.check(imap4.MailboxException):
            self.sendNegativeResponse(tag, _text(failure.value))
        else:
            self.log.failure(
                "imap append failed peer={peer}", failure, peer=self.peerIP
            )
            self.sendNegativeResponse(tag, b"[SERVERBUG] APPEND failed, try again")

    def _dropAppend(self) -> None:
        """A session that ends mid-APPEND leaves nothing stored."""
        literal, self._appendLiteral = self._appendLiteral, None
        if literal is not None:
            self.factory.discardSpool(literal.spool)


def _text(error: Any) -> bytes:
    """An exception's words for a response line: ASCII, one line."""
    words = str(error).encode("ascii", "replace")
    return words.replace(b"\r", b" ").replace(b"\n", b" ")[:200]

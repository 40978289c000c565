"""The mobile JSON API (docs/api.md), on klein.

Every handler goes through L{endpoint}: rate limit per IP, body cap, bearer
authentication, JSON errors (never a traceback), gzip. Store and search work
runs on the database's read pool; parsing a full message runs on the file
pool. The reactor only routes and serialises.
"""

from __future__ import annotations

import math
import re
import secrets
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import format_datetime, make_msgid
from functools import wraps
from typing import Any, Callable

from klein import Klein
from twisted.internet.defer import DeferredLock, inlineCallbacks, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from werkzeug.exceptions import MethodNotAllowed, NotFound

from mailraven.api import queries
from mailraven.api.events import EventStreams
from mailraven.api.folders import FolderRequests, isFolderKey
from mailraven.api.http import APIError, bearer, errorBody, readJSON, writeJSON
from mailraven.api.openapi import document
from mailraven.api.search import SEARCH_ORDERS, BadQuery, parseQuery
from mailraven.api.tokencache import TokenCache
from mailraven.changes import ChangeFeed
from mailraven.dnsrecords import dmarcAdvice
from mailraven.domainkeys import (
    MissingKey,
    NoServerKey,
    checkKeyDirectory,
    configuredRecords,
    domainZone,
    ensureDomainKey,
    existingDomainKey,
    selectorFor,
)
from mailraven.envelope import Envelope, Recipient
from mailraven.outbound import state as outboundState
from mailraven.policy.logins import LoginLimiter, Throttled
from mailraven.policy.scoring import senderOf, train
from mailraven.quickstart import dkimSelector
from mailraven.ratelimit import TokenBuckets
from mailraven.smtp.addresses import AddressError, parsePath
from mailraven.smtp.recipients import Rejection, relayDenied
from mailraven.smtp.submission import localCopy
from mailraven.spool import memorySpool
from mailraven.store.aliases import AliasIsAccount, UnknownMember, normaliseAlias
from mailraven.store.domains import (
    BadDomain,
    ConfiguredDomain,
    DomainExists,
    DomainInUse,
    asciiDomain,
    checkNotConfigured,
    normaliseDomain,
)
from mailraven.store.files import readMessageFile
from mailraven.store.folders import SQLiteFolderStore
from mailraven.store.messages import MAILBOXES
from mailraven.store.metadata import attachmentName, headerText
from mailraven.store.quotas import MAX_LIMIT as MAX_QUOTA
from mailraven.store.quotas import SQLiteQuotaStore, effectiveLimit
from mailraven.store.users import BadAddress, SQLiteUserStore, normaliseAddress

MAX_LIMIT = 1000
FLAG_TYPES = {"read_state": bool, "starred": bool, "mailbox": str}
# What may not reach a header from a client: CR and LF would start a header
# of their own, the other controls are not text (RFC 5322 3.2.5; TAB is), and
# Python's email package takes U+0085, U+2028 and U+2029 for line breaks too.
_HEADER_UNSAFE = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")


def endpoint(auth: bool = True) -> Callable:
    def decorate(handler: Callable) -> Callable:
        @wraps(handler)
        @inlineCallbacks
        def route(self: MobileAPI, request: Any, **params: Any):
            try:
                self.checkRate(request)
                if getattr(request, "bodyTooLarge", False):
                    raise APIError(413, "too_large", "The request body is too large")
                user = (yield self.authenticate(request)) if auth else None
                result = yield handler(self, request, user, **params)
                status, body = result if isinstance(result, tuple) else (200, result)
            except APIError as error:
                status, body = error.status, errorBody(error)
                if "retry_after" in error.extra:
                    request.setHeader(
                        b"retry-after", b"%d" % error.extra["retry_after"]
                    )
            except Exception:
                self.log.failure("api request failed: {path}", path=request.path)
                status = 500
                body = {"error": "internal", "message": "Internal server error"}
            return writeJSON(request, status, body)

        return route

    return decorate


def _intArg(request: Any, name: str, default: int, low: int, high: int) -> int:
    values = request.args.get(name.encode())
    if not values:
        return default
    try:
        value = int(values[0])
    except ValueError:
        raise APIError(400, "bad_parameter", f"{name} must be an integer") from None
    if not low <= value <= high:
        raise APIError(400, "bad_parameter", f"{name} must be in {low}..{high}")
    return value


def _strArg(request: Any, name: str) -> str | None:
    values = request.args.get(name.encode())
    if not values:
        return None
    try:
        return values[0].decode("utf-8")
    except UnicodeDecodeError:
        raise APIError(400, "bad_parameter", f"{name} is not UTF-8") from None


def _boolArg(request: Any, name: str) -> bool:
    value = (_strArg(request, name) or "false").lower()
    if value not in ("true", "false", "1", "0"):
        raise APIError(400, "bad_parameter", f"{name} must be true or false")
    return value in ("true", "1")


def _timestamp(text: str) -> str:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        # OverflowError: a time whose UTC is outside years 1..9999
        # (0001-01-01T00:00:00+23:59)
        return moment.astimezone(UTC).isoformat(timespec="microseconds")
    except (ValueError, OverflowError):
        raise APIError(400, "bad_parameter", "since must be an ISO 8601 time") from None


def _lastEventId(request: Any) -> str | None:
    return (request.getHeader(b"last-event-id") or b"").decode("latin-1") or None


class MobileAPI:
    app = Klein()
    log = Logger()

    def __init__(
        self,
        db: Any,
        store: Any,
        dataDir: str,
        hostname: str,
        reactor: Any,
        filePool: Any,
        requestsPerMinute: int,
        outboundPerDay: int = 1000,
        tokens: TokenCache | None = None,
        users: Any = None,
        logins: Any = None,
        recipients: Any = None,
        quotas: Any = None,
        defaultQuota: int = 0,
        folders: Any = None,
        changes: Any = None,
        events: dict[str, Any] | None = None,
    ) -> None:
        """C{folders} is the IFolderStore IMAP uses too. C{changes} (an
        IChangeFeed) hears of every change made here and drives GET
        /events, C{events} its settings (L{EventStreams}' keywords).
        C{quotas} (an IQuotaStore) and C{defaultQuota} report storage use.
        C{users} checks passwords (an IUserStore), C{logins} limits the
        guessing (the ILoginLimiter every login path shares), C{recipients}
        (a RecipientResolver) says which recipients are ours: their mail is
        stored, not queued."""
        self._users = SQLiteUserStore(db) if users is None else users
        self._folders = FolderRequests(
            SQLiteFolderStore(db) if folders is None else folders,
            None if changes is None else changes.publish,
        )
        self._logins = LoginLimiter(reactor) if logins is None else logins
        self._recipients = recipients
        self._quotas = SQLiteQuotaStore(db) if quotas is None else quotas
        self._defaultQuota = defaultQuota
        self._tokens = TokenCache(reactor) if tokens is None else tokens
        self._outboundPerDay = outboundPerDay
        self._db = db
        self._store = store
        self._dataDir = dataDir
        self._hostname = hostname
        self._reactor = reactor
        self._pool = filePool
        self._requests = TokenBuckets(requestsPerMinute, 60, reactor)
        feed = ChangeFeed() if changes is None else changes
        self.events = EventStreams(
            db, feed, reactor, self.authenticate, **(events or {})
        )

    def resource(self) -> Any:
        return self.app.resource()

    # -- cross-cutting -----------------------------------------------------------

    def checkRate(self, request: Any) -> None:
        wait = self._requests.take(request.getClientAddress().host)
        if wait:
            retry = max(1, math.ceil(wait))
            raise APIError(429, "rate_limited", "Too many requests", retry_after=retry)

    @inlineCallbacks
    def authenticate(self, request: Any):
        token = bearer(request)
        if not token:
            raise APIError(401, "unauthorized", "A bearer token is required")
        user = self._tokens.get(token)
        if user is None:
            found = yield self._db.read(lambda c: queries.tokenRecord(c, token))
            if found is None:
                raise APIError(401, "unauthorized", "The token is unknown or expired")
            user, expires = found
            self._tokens.put(token, user, expires)
        return user

    @app.handle_errors(NotFound)
    def notFound(self, request: Any, failure: Any) -> bytes:
        return writeJSON(
            request, 404, {"error": "not_found", "message": "No such path"}
        )

    @app.handle_errors(MethodNotAllowed)
    def notAllowed(self, request: Any, failure: Any) -> bytes:
        body = {"error": "method_not_allowed", "message": "Method not allowed"}
        return writeJSON(request, 405, body)

    # -- auth ------------------------------------------------------------------

    @app.route("/v1/auth/login", methods=["POST"])
    @endpoint(auth=False)
    @inlineCallbacks
    def login(self, request: Any, user: None):
        ip = request.getClientAddress().host
        body = readJSON(request)
        email, password = (
            (body.get("email"), body.get("password"))
            if isinstance(body, dict)
            else (None, None)
        )
        if not isinstance(email, str) or not isinstance(password, str):
            raise APIError(400, "bad_request", "email and password are required")
        ticket = self._logins.reserve(ip, email, "api")
        if isinstance(ticket, Throttled):
            self.log.warn(
                "login refused ip={ip} email={email}: too many failures",
                ip=ip,
                email=email,
                event="login",
                outcome="throttled",
            )
            raise APIError(
                429,
                "rate_limited",
                "Too many failed logins",
                retry_after=max(1, math.ceil(ticket.retryAfter)),
            )
        try:
            userId = yield self._users.authenticate(email, password)
        except Exception:
            ticket.failed()
            raise
        if userId is None:
            ticket.failed()
            self.log.info(
                "login failed ip={ip} email={email}",
                ip=ip,
                email=email,
                event="login",
                outcome="failure",
            )
            raise APIError(401, "invalid_credentials", "Wrong email or password")
        ticket.succeeded()
        token = secrets.token_urlsafe(32)
        expires = yield self._db.write(lambda c: queries.storeToken(c, userId, token))
        self.log.info(
            "login ip={ip} email={email}",
            ip=ip,
            email=email,
            event="login",
            outcome="success",
        )
        return {"token": token, "email": email, "expires_at": expires}

    @app.route("/v1/auth/logout", methods=["POST"])
    @endpoint()
    @inlineCallbacks
    def logout(self, request: Any, user: tuple[int, str]):
        token = bearer(request)
        self._tokens.drop(token)
        yield self._db.write(lambda c: queries.revokeToken(c, token))
        self._tokens.drop(token)  # a request checked it while we revoked
        self.events.revoked(token)
        return {"status": "logged_out"}

    # -- messages ----------------------------------------------------------------

    @app.route("/v1/messages", methods=["GET"])
    @endpoint()
    def listMessages(self, request: Any, user: tuple[int, str]):
        limit = _intArg(request, "limit", 20, 1, MAX_LIMIT)
        offset = _intArg(request, "offset", 0, 0, 10**9)
        mailbox = _strArg(request, "mailbox") or "inbox"
        if not isFolderKey(mailbox):
            raise APIError(
                400,
                "bad_parameter",
                f"mailbox must be one of {MAILBOXES} or a folder id",
            )
        cursorText = _strArg(request, "cursor")
        try:
            cursor = queries.decodeCursor(cursorText) if cursorText else None
        except ValueError:
            raise APIError(400, "bad_parameter", "cursor is not valid") from None
        unread = _boolArg(request, "unread_only")
        found = succeed(None)
        if mailbox not in MAILBOXES:  # a user folder: the account's, or 404
            found = self._folders.find(user[0], mailbox)
        return found.addCallback(
            lambda _: self._db.read(
                lambda c: queries.listMessages(
                    c, user[0], mailbox, limit, offset, cursor, unread
                )
            )
        )

    @app.route("/v1/messages/since", methods=["GET"])
    @endpoint()
    def since(self, request: Any, user: tuple[int, str]):
        text = _strArg(request, "since")
        if not text:
            raise APIError(400, "bad_parameter", "since is required")
        since = _timestamp(text)
        limit = _intArg(request, "limit", 100, 1, MAX_LIMIT)
        return self._db.read(
            lambda c: queries.deltaBatch(c, user[0], since, text, limit)
        )

    @app.route("/v1/events", methods=["GET"])
    def events(self, request: Any):
        """The delta sync as server-sent events (L{EventStreams})."""
        try:
            self.checkRate(request)
            text = _lastEventId(request) or _strArg(request, "since")
            since = _timestamp(text) if text else None
        except APIError as error:
            return writeJSON(request, error.status, errorBody(error))
        return self.events.serve(request, since, text)

    @app.route("/v1/messages/search", methods=["GET"])
    @endpoint()
    def search(self, request: Any, user: tuple[int, str]):
        try:
            query = parseQuery(_strArg(request, "q") or "")
        except BadQuery as e:
            raise APIError(400, "bad_query", str(e)) from None
        limit = _intArg(request, "limit", 20, 1, MAX_LIMIT)
        offset = _intArg(request, "offset", 0, 0, 10**9)
        order = _strArg(request, "sort") or "date"
        if order not in SEARCH_ORDERS:
            raise APIError(400, "bad_parameter", "sort must be date or relevance")
        d = self._db.read(
            lambda c: queries.search(c, user[0], query, limit, offset, order=order)
        )
        d.addCallback(lambda found: {**found, "query": _strArg(request, "q")})
        return d

    @app.route("/v1/messages/<string:entryId>", methods=["GET"])
    @endpoint()
    @inlineCallbacks
    def getMessage(self, request: Any, user: tuple[int, str], entryId: str):
        entry = yield self._entry(user, entryId)
        raw = yield deferToThreadPool(
            self._reactor, self._pool, readMessageFile, self._dataDir, entry.pop("path")
        )
        parts = yield deferToThreadPool(self._reactor, self._pool, _fullMessage, raw)
        return {**entry, **parts}

    @app.route("/v1/messages/<string:entryId>", methods=["PATCH"])
    @endpoint()
    @inlineCallbacks
    def patchMessage(self, request: Any, user: tuple[int, str], entryId: str):
        body = readJSON(request)
        if not isinstance(body, dict) or not body:
            raise APIError(400, "bad_request", "expected an object of flags")
        for name, value in body.items():
            if name not in FLAG_TYPES:
                fields = ", ".join(FLAG_TYPES)
                raise APIError(400, "bad_request", f"unknown field {name!r} ({fields})")
            if not isinstance(value, FLAG_TYPES[name]):
                expected = "true or false" if FLAG_TYPES[name] is bool else "a string"
                raise APIError(400, "bad_request", f"{name} must be {expected}")
        mailbox = body.pop("mailbox", None)
        if mailbox is not None and not isFolderKey(mailbox):
            raise APIError(
                400, "bad_request", f"mailbox must be one of {MAILBOXES} or a folder id"
            )
        before = yield self._entry(user, entryId)
        found = True
        if mailbox is not None:  # as IMAP MOVE: a new UID in that folder
            found = yield self._folders.moveEntry(user[0], entryId, mailbox)
        if found and body:
            found = yield self._store.updateFlags(entryId, user[0], body)
        if not found:
            raise APIError(404, "not_found", "No such message")
        yield self._train(user, before, mailbox)
        entry = yield self._entry(user, entryId)
        entry.pop("path")
        entry.pop("message_id")
        return entry

    def _train(self, user: tuple, before: dict, mailbox: str | None) -> Any:
        """Moving to junk blocks the sender for this account; out of junk allows."""
        if mailbox == "junk" and before["mailbox"] != "junk":
            kind = "block"
        elif before["mailbox"] == "junk" and mailbox in ("inbox", "archive"):
            kind = "allow"
        else:
            return None
        sender = senderOf(before["sender"], "")
        self.log.info(
            "{email} trained {kind} for {sender}",
            email=user[1],
            kind=kind,
            sender=sender,
            event="spam_training",
        )
        d = self._db.write(lambda c: train(c, user[0], sender, kind))
        lists = getattr(self._store, "senderLists", None)
        if lists is not None:
            d.addCallback(lambda _: lists.changed())
        return d

    @app.route("/v1/messages/<string:entryId>", methods=["DELETE"])
    @endpoint()
    @inlineCallbacks
    def deleteMessage(self, request: Any, user: tuple[int, str], entryId: str):
        if not (yield self._store.delete(entryId, user[0])):
            raise APIError(404, "not_found", "No such message")
        entry = yield self._entry(user, entryId)
        entry.pop("path")
        entry.pop("message_id")
        return entry

    @inlineCallbacks
    def _entry(self, user: tuple[int, str], entryId: str):
        entry = yield self._db.read(lambda c: queries.entryFor(c, user[0], entryId))
        if entry is None:  # another user's message is 404 too: no existence leak
            raise APIError(404, "not_found", "No such message")
        return entry

    # -- folders (mailraven/api/folders.py) -----------------------------------

    @app.route("/v1/folders", methods=["GET"])
    @endpoint()
    def listFolders(self, request: Any, user: tuple[int, str]):
        return self._folders.list(user[0])

    @app.route("/v1/folders", methods=["POST"])
    @endpoint()
    def createFolder(self, request: Any, user: tuple[int, str]):
        return self._folders.create(user[0], readJSON(request))

    @app.route("/v1/folders/<string:key>", methods=["PATCH"])
    @endpoint()
    def updateFolder(self, request: Any, user: tuple[int, str], key: str):
        return self._folders.update(user[0], key, readJSON(request))

    @app.route("/v1/folders/<string:key>", methods=["DELETE"])
    @endpoint()
    def deleteFolder(self, request: Any, user: tuple[int, str], key: str):
        return self._folders.delete(user[0], key)

    @app.route("/v1/messages/send", methods=["POST"])
    @endpoint()
    @inlineCallbacks
    def send(self, request: Any, user: tuple[int, str]):
        fields = _sendFields(readJSON(request))
        sent = yield self._db.read(lambda c: queries.sentToday(c, user[0]))
        if sent >= self._outboundPerDay:
            self.log.warn(
                "{email} reached the daily sending limit",
                email=user[1],
                event="ratelimit",
                limit="outbound_per_day",
            )
            raise APIError(
                429, "rate_limited", "Daily sending limit reached", retry_after=3600
            )
        local, remote = yield self._split(fields["to"] + fields["cc"] + fields["bcc"])
        raw = _compose(user[1], self._hostname, fields)
        envelope = Envelope(
            mailFrom=user[1],
            recipients=[Recipient(user[1], user[0]), *local],
            mailbox="sent",
            seen=True,
            outbound=remote,
        )
        messageId = yield self._store.deliver(envelope, memorySpool(raw))
        self.log.info(
            "stored {id} from {sender}: {local} local, {remote} queued",
            id=messageId,
            sender=user[1],
            local=len(local),
            remote=len(remote),
            event="send_queued",
        )
        return 202, {"id": messageId, "status": "queued" if remote else "delivered"}

    @inlineCallbacks
    def _split(self, addresses: list[str]):
        """(local copies, remote addresses); an unknown local user is a 400."""
        local: list[Recipient] = []
        remote: list[str] = []
        for text in addresses:
            try:
                if self._recipients is None:
                    raise relayDenied()
                found = yield self._recipients.resolve(parsePath(text, utf8=True))
            except Rejection as e:
                if e.reason == "over_quota":
                    raise APIError(
                        503, "mailbox_full", f"{text}: {e.text}; try again later"
                    ) from None
                if e.reason != "relay_denied":
                    raise APIError(
                        400, "unknown_recipient", f"{text}: {e.text}"
                    ) from None
                if text.lower() not in (a.lower() for a in remote):
                    remote.append(text)
                continue
            for recipient in found:
                if recipient.userId not in {r.userId for r in local}:
                    local.append(localCopy(recipient))
        return local, remote

    @app.route("/v1/outbound/<string:messageId>", methods=["GET"])
    @endpoint()
    @inlineCallbacks
    def outboundStatus(self, request: Any, user: tuple[int, str], messageId: str):
        found = yield self._db.read(
            lambda c: outboundState.entryStatus(c, messageId, user[0])
        )
        if found is None:
            raise APIError(404, "not_found", "No such queued message")
        return found

    @app.route("/v1/account", methods=["GET"])
    @endpoint()
    @inlineCallbacks
    def account(self, request: Any, user: tuple[int, str]):
        """The account's address and storage use (docs/quotas.md)."""
        found = yield self._quotas.quota(user[1])
        used, own = found if found is not None else (0, None)
        limit = effectiveLimit(own, self._defaultQuota)
        return {"email": user[1], "quota": {"used": used, "limit": limit}}

    @app.route("/v1/openapi.json", methods=["GET"])
    @endpoint(auth=False)
    def openapi(self, request: Any, user: None):
        return document()


def _addresses(body: dict, name: str, required: bool = False) -> list[str]:
    value = body.get(name, [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise APIError(400, "bad_request", f"{name} must be a list of addresses")
    if required and not value:
        raise APIError(400, "bad_request", f"{name} needs at least one address")
    try:
        parsed = [parsePath(v.strip(), utf8=True) for v in value]
    except AddressError as e:
        raise APIError(400, "bad_request", f"bad address in {name}: {e}") from None
    for address in parsed:
        # the queue finds hosts by MX only: an address literal would be
        # accepted and then bounce as "no such domain"
        if address.isLiteral:
            raise APIError(
                400, "bad_request", f"{address}: send to a domain, not an IP address"
            )
    return [str(address) for address in parsed]


def _sendFields(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise APIError(400, "bad_request", "expected an object")
    fields = {
        "to": _addresses(body, "to", required=True),
        "cc": _addresses(body, "cc"),
        "bcc": _addresses(body, "bcc"),
    }
    for name, required in (("subject", False), ("body", True), ("html", False)):
        value = body.get(name, "" if not required else None)
        if value is None and name == "html":
            value = ""
        if not isinstance(value, str):
            raise APIError(400, "bad_request", f"{name} must be a string")
        fields[name] = value
    if _HEADER_UNSAFE.search(fields["subject"]):
        raise APIError(400, "bad_request", "subject may not contain control characters")
    if len(fields["to"]) + len(fields["cc"]) + len(fields["bcc"]) > 100:
        raise APIError(400, "bad_request", "at most 100 recipients")
    return fields


def _compose(sender: str, hostname: str, fields: dict[str, Any]) -> bytes:
    """A proper MIME message: Date, Message-ID, From = the user (never the client)."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = ", ".join(fields["to"])
    if fields["cc"]:
        message["Cc"] = ", ".join(fields["cc"])
    message["Subject"] = fields["subject"]
    message["Date"] = format_datetime(datetime.now(UTC))
    message["Message-ID"] = make_msgid(domain=hostname)
    message.set_content(fields["body"])
    if fields["html"]:
        message.add_alternative(fields["html"], subtype="html")
    return message.as_bytes(policy=policy.SMTP)


def _fullMessage(raw: bytes) -> dict[str, Any]:
    """MessageFull's parsed parts (a file thread: parsing is CPU)."""
    message = BytesParser(policy=policy.default).parsebytes(raw)
    text = html = ""
    attachments = []
    for part in message.walk():
        if part.is_multipart():
            continue
        try:
            filename = attachmentName(part)
            if part.get_content_disposition() == "attachment" or filename:
                payload = part.get_payload(decode=True) or b""
                attachments.append(
                    {
                        "filename": headerText(filename or ""),
                        "content_type": part.get_content_type(),
                        "size": len(payload),
                    }
                )
            elif part.get_content_type() == "text/plain" and not text:
                text = part.get_content()
            elif part.get_content_type() == "text/html" and not html:
                html = part.get_content()
        except Exception:  # a broken part is left out, the rest is shown
            continue
    headers = []
    for name, value in message.raw_items():
        headers.append({"name": name, "value": headerText(str(value))})
    return {
        "body": raw.decode("utf-8", "replace"),
        "body_size": len(raw),
        "headers": headers,
        "text": text,
        "html": html,
        "attachments": attachments,
    }


class AdminAPI(MobileAPI):
    """/admin: backups on demand, quotas, domains and aliases (admin accounts
    only: 403 for others)."""

    app = Klein()

    def __init__(
        self,
        *args: Any,
        backups: Any,
        domains: Any = None,
        aliases: Any = None,
        config: Any = None,
        **kwargs: Any,
    ) -> None:
        """C{domains} is an IDomainStore, C{aliases} an IAliasStore;
        C{config} gives what the printed DNS records name (hostname, MTA-STS
        policy)."""
        super().__init__(*args, **kwargs)
        self._backups = backups
        self._domains = domains
        self._aliases = aliases
        self._config = config
        self._domainLock = DeferredLock()

    @app.handle_errors(NotFound)
    def notFound(self, request: Any, failure: Any) -> bytes:
        return MobileAPI.notFound(self, request, failure)

    @app.handle_errors(MethodNotAllowed)
    def notAllowed(self, request: Any, failure: Any) -> bytes:
        return MobileAPI.notAllowed(self, request, failure)

    @staticmethod
    def _requireAdmin(user: tuple[int, str, bool]) -> None:
        if not user[2]:
            raise APIError(403, "forbidden", "Admin accounts only")

    @app.route("/backup", methods=["POST"])
    @endpoint()
    def startBackup(self, request: Any, user: tuple[int, str, bool]):
        self._requireAdmin(user)
        job, started = self._backups.start()
        if started is None:
            raise APIError(409, "busy", "A backup is running", job_id=job["job_id"])
        self.log.info(
            "backup {id} requested by {email}",
            id=job["job_id"],
            email=user[1],
            event="backup_requested",
        )
        return 202, {"job_id": job["job_id"], "status": job["status"]}

    @app.route("/quota/<string:email>", methods=["GET"])
    @endpoint()
    def getQuota(self, request: Any, user: tuple[int, str, bool], email: str):
        self._requireAdmin(user)
        return self._quotaOf(email)

    @app.route("/quota/<string:email>", methods=["PUT"])
    @endpoint()
    @inlineCallbacks
    def setQuota(self, request: Any, user: tuple[int, str, bool], email: str):
        """Body C{{"limit": bytes}} (0: unlimited) or C{{"limit": null}}
        (quota.default again); seen by SMTP within 2 s, like the CLI."""
        self._requireAdmin(user)
        body = readJSON(request)
        limit = body.get("limit", ...) if isinstance(body, dict) else ...
        if limit is not None and (
            not isinstance(limit, int)
            or isinstance(limit, bool)
            or not 0 <= limit <= MAX_QUOTA
        ):
            raise APIError(
                400, "bad_request", 'expected {"limit": bytes (0 or more) or null}'
            )
        found = yield self._quotas.setLimit(self._accountAddress(email), limit)
        if not found:
            raise APIError(404, "not_found", "No such account")
        self.log.info(
            "quota of {account} set to {limit} by {email}",
            account=email,
            limit=limit,
            email=user[1],
            event="quota_set",
        )
        result = yield self._quotaOf(email)
        return result

    @staticmethod
    def _accountAddress(email: str) -> str:
        try:
            return normaliseAddress(email)
        except BadAddress:
            raise APIError(400, "bad_request", "not an email address") from None

    @inlineCallbacks
    def _quotaOf(self, email: str):
        found = yield self._quotas.quota(self._accountAddress(email))
        if found is None:
            raise APIError(404, "not_found", "No such account")
        used, own = found
        return {
            "email": email,
            "quota": {"used": used, "limit": effectiveLimit(own, self._defaultQuota)},
            "own_limit": own,
        }

    @app.route("/backup/<string:jobId>", methods=["GET"])
    @endpoint()
    def backupStatus(self, request: Any, user: tuple[int, str, bool], jobId: str):
        self._requireAdmin(user)
        job = self._backups.jobs.get(jobId)
        if job is None:
            raise APIError(404, "not_found", "No such backup job")
        return {k: v for k, v in job.items() if k != "path"}

    @app.route("/domains", methods=["GET"])
    @endpoint()
    @inlineCallbacks
    def listDomains(self, request: Any, user: tuple[int, str, bool]):
        self._requireAdmin(user)
        domains = yield self._domains.list()
        configured = _configured(self._config)
        return {
            # a row an earlier release let a configured domain have shows
            # configured: true (it signs with the server key, docs/addresses.md)
            "domains": [
                {**_domainJSON(d), "configured": d.name in configured} for d in domains
            ],
            "configured": list(self._config["server.domains"]),
        }

    @app.route("/domains", methods=["POST"])
    @endpoint()
    @inlineCallbacks
    def addDomain(self, request: Any, user: tuple[int, str, bool]):
        """Adds are serialised, the existence check first: a refused request
        makes no key, and two racing adds cannot print different keys. The
        key is made (or an earlier one reused) before the row, so the
        domain signs with its own key from its first message."""
        self._requireAdmin(user)
        body = readJSON(request)
        text = body.get("name") if isinstance(body, dict) else None
        if not isinstance(text, str):
            raise APIError(400, "bad_request", 'Give the domain as {"name": ...}')
        name = self._domainName(text)
        try:
            checkNotConfigured(name, self._config["server.domains"])
            checkKeyDirectory(self._dataDir, name)
        except ConfiguredDomain as e:
            raise APIError(409, "configured", str(e)) from None
        except BadDomain as e:
            raise APIError(400, "bad_domain", str(e)) from None
        yield self._domainLock.acquire()
        try:
            domain, publicKey = yield self._addDomain(name)
        finally:
            self._domainLock.release()
        self._recipients.forget()
        self.log.info(
            "domain {name} added by {email}",
            name=name,
            email=user[1],
            event="domain_added",
        )
        return 201, self._domainWithRecords(domain, domain.selector, publicKey)

    @inlineCallbacks
    def _addDomain(self, name: str):
        """(Domain, public key) of a new domain; 409 if it is there already."""
        domains = yield self._domains.list()
        if any(d.name == name for d in domains):
            raise APIError(409, "exists", f"{name} is a domain here already")
        selector = selectorFor(self._dataDir, name, dkimSelector())
        publicKey = yield deferToThreadPool(
            self._reactor, self._pool, ensureDomainKey, self._dataDir, name, selector
        )
        try:
            domain = yield self._domains.add(name, selector)
        except DomainExists as e:  # the CLI, in another process, was first
            raise APIError(409, "exists", str(e)) from None
        return domain, publicKey

    @staticmethod
    def _domainName(text: str) -> str:
        try:
            return normaliseDomain(text)
        except BadDomain as e:
            raise APIError(400, "bad_domain", str(e)) from None

    def _domainWithRecords(
        self, domain: Any, selector: str, publicKey: str
    ) -> dict[str, Any]:
        return {
            **_domainJSON(domain),
            "dns_records": domainZone(self._config, domain.name, selector, publicKey),
            "dmarc_advice": dmarcAdvice(domain.name),
        }

    @app.route("/domains/<string:name>", methods=["GET"])
    @endpoint()
    @inlineCallbacks
    def getDomain(self, request: Any, user: tuple[int, str, bool], name: str):
        """The domain with its DNS records again, for an operator who lost
        what C{POST} printed; a configured domain's are the server key's."""
        self._requireAdmin(user)
        name = self._domainName(name)
        if name in _configured(self._config):
            try:
                selector, zone = configuredRecords(self._config, self._dataDir, name)
            except NoServerKey as e:
                raise APIError(404, "no_key", str(e)) from None
            return {
                "name": name,
                "dkim_selector": selector,
                "added_at": None,
                "configured": True,
                "dns_records": zone,
                "dmarc_advice": dmarcAdvice(name),
            }
        domains = yield self._domains.list()
        domain = next((d for d in domains if d.name == name), None)
        if domain is None:
            raise APIError(404, "not_found", "No such added domain")
        try:
            publicKey = yield deferToThreadPool(
                self._reactor,
                self._pool,
                existingDomainKey,
                self._dataDir,
                domain.name,
                domain.selector,
            )
        except MissingKey as e:
            raise APIError(409, "key_missing", str(e)) from None
        return self._domainWithRecords(domain, domain.selector, publicKey)

    @app.route("/aliases", methods=["GET"])
    @endpoint()
    @inlineCallbacks
    def listAliases(self, request: Any, user: tuple[int, str, bool]):
        self._requireAdmin(user)
        aliases = yield self._aliases.list()
        return {
            "aliases": [
                {"address": address, "members": members}
                for address, members in aliases.items()
            ]
        }

    @app.route("/aliases", methods=["POST"])
    @endpoint()
    @inlineCallbacks
    def addAlias(self, request: Any, user: tuple[int, str, bool]):
        """C{{"address": "sales@example.org" or "@example.org", "members":
        [accounts]}}: adds the members (the alias is made if new), all or
        none, effective at the next RCPT, like C{mailraven alias add}."""
        self._requireAdmin(user)
        address, members = _aliasBody(readJSON(request))
        try:
            # under the domains' lock: a domain removed between the check and
            # the insert would leave the alias behind, to return with it
            address = yield self._domainLock.run(self._addLocalAlias, address, members)
        except (UnknownMember, AliasIsAccount) as e:
            raise APIError(400, "bad_member", str(e)) from None
        except BadAddress as e:
            raise APIError(400, "bad_address", str(e)) from None
        self._recipients.forget()
        self.log.info(
            "alias {address} given {members} by {email}",
            address=address,
            members=",".join(members),
            email=user[1],
            event="alias_added",
        )
        aliases = yield self._aliases.list()
        return 201, {"address": address, "members": aliases.get(address, [])}

    @inlineCallbacks
    def _addLocalAlias(self, address: str, members: list[str]):
        domain = address.rpartition("@")[2]
        local = yield self._recipients.isLocalDomain(domain)
        if not local:
            raise APIError(
                400,
                "not_local",
                f"{domain} is not a local domain: an alias there would relay",
            )
        added = yield self._aliases.add(address, members)
        return added

    @app.route("/aliases/<string:address>", methods=["DELETE"])
    @endpoint()
    def removeAlias(self, request: Any, user: tuple[int, str, bool], address: str):
        return self._removeFromAlias(user, address, None)

    @app.route("/aliases/<string:address>/members/<string:member>", methods=["DELETE"])
    @endpoint()
    def removeAliasMember(
        self, request: Any, user: tuple[int, str, bool], address: str, member: str
    ):
        """One member leaves; the alias is gone with its last member."""
        return self._removeFromAlias(user, address, member)

    @inlineCallbacks
    def _removeFromAlias(
        self, user: tuple[int, str, bool], address: str, member: str | None
    ):
        """The whole alias (C{member} None) or one member of it."""
        self._requireAdmin(user)
        try:
            address = normaliseAlias(address)
            members = [] if member is None else [normaliseAddress(member)]
        except BadAddress as e:
            raise APIError(400, "bad_address", str(e)) from None
        found = yield self._aliases.remove(address, members)
        if not found:
            what = "member of that alias" if members else "alias"
            raise APIError(404, "not_found", f"No such {what}")
        self._recipients.forget()
        self.log.info(
            "alias {address} lost {members} by {email}",
            address=address,
            members=",".join(members) or "every member",
            email=user[1],
            event="alias_removed",
        )
        if not members:
            return {"removed": address}
        aliases = yield self._aliases.list()
        left = {a.lower(): m for a, m in aliases.items()}.get(address.lower(), [])
        return {"address": address, "members": left}

    @app.route("/domains/<string:name>", methods=["DELETE"])
    @endpoint()
    @inlineCallbacks
    def removeDomain(self, request: Any, user: tuple[int, str, bool], name: str):
        self._requireAdmin(user)
        name = self._domainName(name)
        try:
            checkNotConfigured(name, self._config["server.domains"])
        except ConfiguredDomain as e:
            raise APIError(409, "configured", str(e)) from None
        try:
            found = yield self._domainLock.run(self._domains.remove, name)
        except DomainInUse as e:
            raise APIError(
                409, "in_use", str(e), accounts=e.accounts, aliases=e.aliases
            ) from None
        if not found:
            raise APIError(404, "not_found", "No such added domain")
        self._recipients.forget()
        self.log.info(
            "domain {name} removed by {email}",
            name=name,
            email=user[1],
            event="domain_removed",
        )
        return {"removed": name}


def _aliasBody(body: Any) -> tuple[str, list[str]]:
    """(normalised alias, members) of a POST /admin/aliases body, or 400."""
    usage = 'expected {"address": "alias@domain" or "@domain", "members": [accounts]}'
    if not isinstance(body, dict):
        raise APIError(400, "bad_request", usage)
    address, members = body.get("address"), body.get("members")
    if (
        not isinstance(address, str)
        or not isinstance(members, list)
        or not members
        or not all(isinstance(m, str) for m in members)
    ):
        raise APIError(400, "bad_request", usage)
    try:
        return normaliseAlias(address), members
    except BadAddress as e:
        raise APIError(400, "bad_address", str(e)) from None


def _domainJSON(domain: Any) -> dict[str, Any]:
    return {
        "name": domain.name,
        "dkim_selector": domain.selector,
        "added_at": domain.addedAt,
        "configured": False,
    }


def _configured(config: Any) -> frozenset[str]:
    """C{server.domains} in the form added domains are stored in."""
    return frozenset(asciiDomain(d.rstrip(".")) for d in config["server.domains"])

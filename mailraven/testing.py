"""In-memory fakes of MailRaven's interfaces, for tests of what sits on top.

The same contract tests run against these and the real adapters
(tests/test_store.py), so a fake cannot quietly drift from the real thing.
"""

from __future__ import annotations

import os
import sqlite3
import time
import uuid
from datetime import UTC, datetime
from typing import Any, Callable, Iterable

from scramp import ScramMechanism
from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from zope.interface import implementer

from mailraven.changes import ChangeFeed
from mailraven.envelope import Envelope
from mailraven.interfaces import (
    IAliasStore,
    IDiskGuard,
    IDomainStore,
    IFolderStore,
    IMessageStore,
    IMTASTSPolicyCache,
    IOutboundQueueStore,
    IPolicyCheck,
    IQuotaStore,
    ISenderListStore,
    IUserStore,
)
from mailraven.outbound.state import DueRecipient
from mailraven.spool import Spool
from mailraven.store.aliases import AliasIsAccount, UnknownMember, normaliseAlias
from mailraven.store.domains import (
    BadDomain,
    Domain,
    DomainExists,
    DomainInUse,
    normaliseDomain,
)
from mailraven.store.files import Syncer
from mailraven.store.folders import (
    DELIMITER,
    INBOX,
    BadFolderName,
    FlagChange,
    Folder,
    FolderExists,
    FolderMessage,
    FolderRefused,
    NoSuchFolder,
    UidSet,
    changedFlags,
    checkFolderRoom,
    checkKeywordRoom,
    checkRename,
    newFolderName,
    normaliseFolderName,
    parents,
    splitFlags,
    uidsIn,
)
from mailraven.store.foldersearch import (
    HEADER_FIELDS,
    INDEX_FIELDS,
    holdsWordPrefix,
    isIndexWord,
)
from mailraven.store.messages import MAILBOXES
from mailraven.store.metadata import extractMetadata
from mailraven.store.schema import STANDARD_FOLDERS
from mailraven.store.users import BadAddress, UserExists, normaliseAddress


@implementer(IMessageStore)
class MemoryMessageStore:
    """
    Keeps messages in a dict. C{failWith} makes C{deliver} fail; C{hold} makes it
    return Deferreds the test fires (see C{pending}).
    """

    def __init__(self) -> None:
        self.messages: dict[str, tuple[Envelope, bytes]] = {}
        self.entries: dict[str, dict[str, Any]] = {}
        self.failWith: Exception | None = None
        self.hold = False
        self.pending: list[tuple[Deferred, str]] = []
        self._order = 0
        # called with the user id after an entry of theirs was added or
        # changed (MemoryFolderStore follows, as the database's triggers do)
        self.observers: list[Callable[[int], None]] = []

    def deliver(self, envelope: Envelope, spool: Spool) -> Deferred:
        if self.failWith is not None:
            return fail(self.failWith)
        raw = b"".join(spool.chunks())
        messageId = str(uuid.uuid4())
        self.messages[messageId] = (envelope, raw)
        for recipient in envelope.recipients:
            self._order += 1
            self.entries[str(uuid.uuid4())] = {
                "file_id": messageId,
                "user_id": recipient.userId,
                "recipient": recipient.address,
                "mailbox": "inbox",
                "read_state": False,
                "starred": False,
                "order": self._order,
            }
            self._changed(recipient.userId)
        if self.hold:
            d: Deferred = Deferred()
            self.pending.append((d, messageId))
            return d
        return succeed(messageId)

    def release(self) -> None:
        pending, self.pending = self.pending, []
        for d, messageId in pending:
            d.callback(messageId)

    def _public(self, entryId: str, entry: dict[str, Any]) -> dict[str, Any]:
        public = {k: v for k, v in entry.items() if k not in ("user_id", "order")}
        public["id"] = entryId
        return public

    def get(self, entryId: str, userId: int) -> Deferred:
        entry = self.entries.get(entryId)
        if entry is None or entry["user_id"] != userId:
            return succeed(None)
        result = self._public(entryId, entry)
        result["raw"] = self.messages[entry["file_id"]][1]
        return succeed(result)

    def list(self, userId: int, mailbox: str, limit: int, offset: int) -> Deferred:
        mine = [
            (entryId, e)
            for entryId, e in self.entries.items()
            if e["user_id"] == userId and e["mailbox"] == mailbox
        ]
        mine.sort(key=lambda item: item[1]["order"], reverse=True)
        return succeed([self._public(i, e) for i, e in mine[offset : offset + limit]])

    def updateFlags(self, entryId: str, userId: int, flags: dict) -> Deferred:
        if (
            set(flags) - {"read_state", "starred", "mailbox"}
            or flags.get("mailbox", "inbox") not in MAILBOXES
        ):
            raise ValueError(f"bad flags: {flags!r}")
        entry = self.entries.get(entryId)
        if entry is None or entry["user_id"] != userId:
            return succeed(False)
        entry.update(flags)
        self._changed(userId)
        return succeed(True)

    def _changed(self, userId: int) -> None:
        for observer in self.observers:
            observer(userId)

    def delete(self, entryId: str, userId: int) -> Deferred:
        return self.updateFlags(entryId, userId, {"mailbox": "trash"})


_scram = ScramMechanism("SCRAM-SHA-256")


@implementer(IUserStore)
class MemoryUserStore:
    def __init__(self) -> None:
        self._users: dict[str, tuple[int, str]] = {}
        self._admins: set[int] = set()
        self._next = 1

    def add(self, email: str, password: str, admin: bool = False) -> Deferred:
        key = normaliseAddress(email).lower()
        if key in self._users:
            return fail(UserExists(email))
        self._users[key] = (self._next, password)
        if admin:
            self._admins.add(self._next)
        self._next += 1
        return succeed(self._users[key][0])

    def setPassword(self, email: str, password: str) -> Deferred:
        key = email.lower()
        if key not in self._users:
            return succeed(False)
        self._users[key] = (self._users[key][0], password)
        return succeed(True)

    def remove(self, email: str) -> Deferred:
        return succeed(self._users.pop(email.lower(), None) is not None)

    def lookup(self, email: str) -> Deferred:
        found = self._users.get(email.lower())
        return succeed(None if found is None else found[0])

    def scramCredentials(self, email: str) -> Deferred:
        found = self._users.get(email.lower())
        if found is None:
            return succeed(None)
        return succeed(_scram.make_auth_info(found[1], iteration_count=4096))

    def authenticate(self, email: str, password: str) -> Deferred:
        found = self._users.get(email.lower())
        return succeed(found[0] if found and found[1] == password else None)

    def listUsers(self) -> Deferred:
        return succeed(sorted(self._users))

    def domains(self) -> Deferred:
        return succeed({email.rpartition("@")[2] for email in self._users})

    def directory(self) -> Deferred:
        return succeed({email: found[0] for email, found in self._users.items()})

    def admins(self) -> Deferred:
        current = {found[0] for found in self._users.values()}
        return succeed(sorted(self._admins & current))


@implementer(IAliasStore)
class MemoryAliasStore:
    """Aliases over a L{MemoryUserStore}: members are its accounts, and an
    account removed there leaves every alias (as the database's cascade)."""

    def __init__(self, users: MemoryUserStore) -> None:
        self._users = users
        self._aliases: dict[str, tuple[str, set[int]]] = {}

    def _accounts(self) -> dict[int, str]:
        return {found[0]: email for email, found in self._users._users.items()}

    def add(self, address: str, members: list[str]) -> Deferred:
        try:
            address = normaliseAlias(address)
        except BadAddress as e:
            return fail(e)
        if address.lower() in self._users._users:
            return fail(AliasIsAccount(address))
        userIds = []
        for member in members:
            found = self._users._users.get(member.strip().lower())
            if found is None:
                return fail(UnknownMember(member))
            userIds.append(found[0])
        if not userIds:
            return fail(UnknownMember("no members"))
        key = address.lower()
        address, members = self._aliases.setdefault(key, (address, set()))
        members.update(userIds)
        return succeed(address)

    def remove(self, address: str, members: list[str] = ()) -> Deferred:
        key = normaliseAlias(address).lower()
        if not members:
            return succeed(self._aliases.pop(key, None) is not None)
        found = self._aliases.get(key)
        if found is None:
            return succeed(False)
        userIds = found[1]
        gone = {self._users._users.get(m.strip().lower(), (None,))[0] for m in members}
        removed = bool(userIds & gone)
        userIds -= gone
        if not userIds:
            del self._aliases[key]
        return succeed(removed)

    def _current(self) -> dict[str, tuple[str, list[int]]]:
        accounts = self._accounts()
        current = {}
        for key, (address, userIds) in sorted(self._aliases.items()):
            kept = sorted(u for u in userIds if u in accounts)
            if kept:
                current[key] = (address, kept)
        return current

    def list(self) -> Deferred:
        accounts = self._accounts()
        return succeed(
            {
                address: sorted(accounts[u] for u in userIds)
                for address, userIds in self._current().values()
            }
        )

    def directory(self) -> Deferred:
        return succeed({key: ids for key, (_, ids) in self._current().items()})


@implementer(IDomainStore)
class MemoryDomainStore:
    """Domains over a L{MemoryUserStore} and L{MemoryAliasStore}, whose
    addresses keep a domain from being removed."""

    def __init__(self, users: MemoryUserStore, aliases: MemoryAliasStore) -> None:
        self._users = users
        self._aliases = aliases
        self._domains: dict[str, Domain] = {}

    def add(self, name: str, selector: str) -> Deferred:
        try:
            name = normaliseDomain(name)
        except BadDomain as e:
            return fail(e)
        if name in self._domains:
            return fail(DomainExists(name))
        self._domains[name] = Domain(name, selector, "2026-01-01T00:00:00Z")
        return succeed(self._domains[name])

    def remove(self, name: str) -> Deferred:
        try:
            name = normaliseDomain(name)
        except BadDomain as e:
            return fail(e)
        suffix = "@" + name
        accounts = sum(1 for e in self._users._users if e.endswith(suffix))
        aliases = sum(1 for a in self._aliases._current() if a.endswith(suffix))
        if accounts or aliases:
            return fail(DomainInUse(name, accounts, aliases))
        return succeed(self._domains.pop(name, None) is not None)

    def list(self) -> Deferred:
        return succeed([self._domains[name] for name in sorted(self._domains)])

    def names(self) -> Deferred:
        return succeed(frozenset(self._domains))


@implementer(IDiskGuard)
class FakeDiskGuard:
    def __init__(self, usedPercent: float = 10.0) -> None:
        self.usedPercent = usedPercent

    def acceptingMail(self) -> bool:
        return self.usedPercent < 95

    def status(self) -> dict:
        state = (
            "full"
            if self.usedPercent >= 95
            else ("warn" if self.usedPercent >= 80 else "ok")
        )
        return {"used_percent": self.usedPercent, "free_bytes": 0, "state": state}


class RecordingSyncer(Syncer):
    """
    The real syncs, each written to C{logPath} once done as one line
    C{"<pid> file|directory|commit <path>"} (a file by the path of its
    descriptor; a directory followed by the names it held when its fsync
    began, the entries that fsync made durable). Lines are appended with
    O_APPEND, so the store's worker processes (which get a pickled copy) and
    its threads share one log in the order the steps finished.
    """

    def __init__(self, logPath: str) -> None:
        self.logPath = logPath

    def file(self, fd: int) -> None:
        super().file(fd)
        self._record("file", os.readlink(f"/proc/self/fd/{fd}"))

    def directory(self, path: str) -> None:
        names = os.listdir(path)
        super().directory(path)
        self._record("directory", " ".join([path, *names]))

    def commit(self, conn: sqlite3.Connection) -> None:
        super().commit(conn)
        self._record("commit", "")

    def _record(self, step: str, path: str) -> None:
        recordStep(self.logPath, f"{os.getpid()} {step} {path}")


def recordStep(logPath: str, line: str) -> None:
    """Append C{line} to a L{RecordingSyncer}'s log (a test marks the 250 so)."""
    fd = os.open(logPath, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line.encode() + b"\n")
    finally:
        os.close(fd)


@implementer(IPolicyCheck)
class FakePolicyCheck:
    """A pipeline check that records what it saw and answers C{verdict}."""

    name = "fake"

    def __init__(self, verdict: Any = None) -> None:
        from mailraven.policy.pipeline import ACCEPT

        self.verdict = verdict or ACCEPT
        self.seen: list[Any] = []

    def check(self, subject: Any) -> Deferred:
        self.seen.append(subject)
        return succeed(self.verdict)


@implementer(IQuotaStore)
class MemoryQuotaStore:
    """Quotas over a L{MemoryUserStore}; C{used} ({user id: bytes}) stands
    for what the database's triggers count."""

    def __init__(self, users: MemoryUserStore) -> None:
        self._users = users
        self.used: dict[int, int] = {}
        self._limits: dict[int, int] = {}
        self.warned: set[int] = set()

    def _id(self, email: str) -> int | None:
        found = self._users._users.get(email.lower())
        return None if found is None else found[0]

    def quota(self, email: str) -> Deferred:
        userId = self._id(email)
        if userId is None:
            return succeed(None)
        return succeed((self.used.get(userId, 0), self._limits.get(userId)))

    def setLimit(self, email: str, limit: int | None) -> Deferred:
        if limit is not None and limit < 0:
            return fail(ValueError("a quota is a number of bytes, 0 or more"))
        userId = self._id(email)
        if userId is None:
            return succeed(False)
        if limit is None:
            self._limits.pop(userId, None)
        else:
            self._limits[userId] = limit
        return succeed(True)

    def directory(self) -> Deferred:
        return succeed(
            {
                userId: (self.used.get(userId, 0), self._limits.get(userId))
                for userId, _ in self._users._users.values()
            }
        )

    def claimWarnings(self, default: int) -> Deferred:
        claimed = []
        for email, (userId, _) in sorted(self._users._users.items()):
            limit = self._limits.get(userId, default)
            used = self.used.get(userId, 0)
            full = limit > 0 and used * 10 >= limit * 9
            if not full:
                self.warned.discard(userId)
            elif userId not in self.warned:
                self.warned.add(userId)
                claimed.append((userId, email, used, limit))
        return succeed(claimed)


@implementer(IFolderStore)
class MemoryFolderStore:
    """
    Folders over a L{MemoryMessageStore}'s entries. The database's triggers
    give an entry its UID and MODSEQ the moment it is delivered, moved or
    flagged; here every call first catches up with what the message store
    did meanwhile (L{_catchUp}), which a caller cannot tell apart.
    """

    def __init__(self, messages: MemoryMessageStore) -> None:
        self._messages = messages
        messages.observers.append(self._account)
        self._folders: dict[int, dict[str, dict[str, Any]]] = {}
        # entry id -> its IMAP state: mailbox, uid, modseq, flags, keywords
        self._state: dict[str, dict[str, Any]] = {}
        self._validity = 0

    def _nextValidity(self) -> int:
        self._validity = max(self._validity + 1, int(time.time()))
        return self._validity

    def _account(self, userId: int) -> dict[str, dict[str, Any]]:
        if userId not in self._folders:
            validity = self._nextValidity()
            self._folders[userId] = {
                key: self._newFolder(key, name, use, validity, True)
                for key, name, use in STANDARD_FOLDERS
            }
        self._catchUp(userId)
        return self._folders[userId]

    @staticmethod
    def _newFolder(
        key: str, name: str, use: str | None, validity: int, subscribed: bool
    ) -> dict[str, Any]:
        return {
            "name": name,
            "mailbox": key,
            "specialUse": use,
            "uidvalidity": validity,
            "uidnext": 1,
            "highestModseq": 1,
            "subscribed": subscribed,
        }

    def _enter(self, userId: int, mailbox: str) -> tuple[int, int]:
        folder = self._folders[userId][mailbox]
        folder["uidnext"] += 1
        folder["highestModseq"] += 1
        return folder["uidnext"] - 1, folder["highestModseq"]

    def _bump(self, userId: int, mailbox: str) -> int:
        folder = self._folders[userId].get(mailbox)
        if folder is None:
            return 0
        folder["highestModseq"] += 1
        return folder["highestModseq"]

    def _catchUp(self, userId: int) -> None:
        entries = self._messages.entries
        mine = sorted(
            (e["order"], entryId)
            for entryId, e in entries.items()
            if e["user_id"] == userId
        )
        for _, entryId in mine:
            entry, state = entries[entryId], self._state.get(entryId)
            if state is None:
                uid, modseq = self._enter(userId, entry["mailbox"])
                self._state[entryId] = {
                    "user_id": userId,
                    "mailbox": entry["mailbox"],
                    "uid": uid,
                    "modseq": modseq,
                    "seen": (entry["read_state"], entry["starred"]),
                    "answered": False,
                    "deleted": False,
                    "draft": False,
                    "keywords": frozenset(),
                }
            elif state["mailbox"] != entry["mailbox"]:
                self._bump(userId, state["mailbox"])
                state["uid"], state["modseq"] = self._enter(userId, entry["mailbox"])
                state["mailbox"] = entry["mailbox"]
                state["seen"] = (entry["read_state"], entry["starred"])
            elif state["seen"] != (entry["read_state"], entry["starred"]):
                state["seen"] = (entry["read_state"], entry["starred"])
                state["modseq"] = self._bump(userId, entry["mailbox"])
        for entryId, state in list(self._state.items()):
            if state["user_id"] == userId and entryId not in entries:
                del self._state[entryId]
                self._bump(userId, state["mailbox"])

    def _byName(self, userId: int, name: str) -> dict[str, Any]:
        try:
            name = normaliseFolderName(name)
        except BadFolderName:
            raise NoSuchFolder(name) from None
        for folder in self._account(userId).values():
            if folder["name"] == name:
                return folder
        raise NoSuchFolder(name)

    def _public(self, userId: int, folder: dict[str, Any]) -> Folder:
        inside = [
            self._messages.entries[i]
            for i, s in self._state.items()
            if s["user_id"] == userId and s["mailbox"] == folder["mailbox"]
        ]
        unseen = sum(not e["read_state"] for e in inside)
        return Folder(**folder, total=len(inside), unseen=unseen)

    def folders(self, userId: int) -> Deferred:
        found = sorted(
            self._account(userId).values(),
            key=lambda f: (f["name"] != INBOX, f["name"]),
        )
        return succeed([self._public(userId, f) for f in found])

    def folder(self, userId: int, name: str) -> Deferred:
        try:
            return succeed(self._public(userId, self._byName(userId, name)))
        except NoSuchFolder:
            return succeed(None)

    def _exists(self, userId: int, name: str) -> bool:
        return any(f["name"] == name for f in self._account(userId).values())

    def _add(self, userId: int, name: str) -> None:
        validity = self._nextValidity()
        key = f"folder-{validity}"
        self._folders[userId][key] = self._newFolder(key, name, None, validity, False)

    def _create(self, userId: int, name: str) -> Folder:
        name = newFolderName(name)
        if self._exists(userId, name):
            raise FolderExists(name)
        wanted = [normaliseFolderName(parent) for parent in parents(name)] + [name]
        for missing in self._makeRoom(userId, wanted):
            self._add(userId, missing)
        return self._public(userId, self._byName(userId, name))

    def _makeRoom(self, userId: int, names: list[str]) -> list[str]:
        missing = [n for n in names if not self._exists(userId, n)]
        checkFolderRoom(len(self._folders[userId]), len(missing))
        return missing

    def create(self, userId: int, name: str) -> Deferred:
        return maybeDeferred(self._create, userId, name)

    def _rename(self, userId: int, old: str, new: str) -> None:
        old, new = normaliseFolderName(old), newFolderName(new)
        source = self._byName(userId, old)
        if self._exists(userId, new):
            raise FolderExists(new)
        if old == INBOX:
            self._create(userId, new)
            self._moveUids(userId, source, None, self._byName(userId, new))
            return
        if new.startswith(old + DELIMITER):
            raise BadFolderName(f"{new!r} is inside {old!r}")
        folders = self._account(userId).values()
        inferiors = [f for f in folders if f["name"].startswith(old + DELIMITER)]
        checkRename(
            source["specialUse"],
            old,
            [(old, new)]
            + [(f["name"], new + f["name"][len(old) :]) for f in inferiors],
        )
        for folder in inferiors:
            if self._exists(userId, new + folder["name"][len(old) :]):
                raise FolderExists(new + folder["name"][len(old) :])
        for parent in self._makeRoom(userId, parents(new)):
            self._add(userId, parent)
        for folder in inferiors:
            folder["name"] = new + folder["name"][len(old) :]
        source["name"] = new

    def rename(self, userId: int, old: str, new: str) -> Deferred:
        return maybeDeferred(self._rename, userId, old, new)

    def _delete(self, userId: int, name: str) -> int:
        folder = self._byName(userId, name)
        if folder["name"] == INBOX or folder["specialUse"] is not None:
            raise FolderRefused(f"{folder['name']} cannot be deleted")
        doomed = self._inside(userId, folder, None)
        for entryId, _ in doomed:
            del self._messages.entries[entryId]
            del self._state[entryId]
        del self._folders[userId][folder["mailbox"]]
        return len(doomed)

    def delete(self, userId: int, name: str) -> Deferred:
        return maybeDeferred(self._delete, userId, name)

    def _subscribe(self, userId: int, name: str, subscribed: bool) -> None:
        self._byName(userId, name)["subscribed"] = subscribed

    def subscribe(self, userId: int, name: str, subscribed: bool = True) -> Deferred:
        return maybeDeferred(self._subscribe, userId, name, subscribed)

    def _inside(
        self, userId: int, folder: dict[str, Any], uids: UidSet | None
    ) -> list[tuple[str, dict[str, Any]]]:
        """(entry id, state) of the folder's messages C{uids} names, by UID."""
        found = sorted(
            (
                (entryId, state)
                for entryId, state in self._state.items()
                if state["user_id"] == userId and state["mailbox"] == folder["mailbox"]
            ),
            key=lambda item: item[1]["uid"],
        )
        if uids is None:
            return found
        wanted = set(uidsIn(uids, [state["uid"] for _, state in found]))
        return [(i, s) for i, s in found if s["uid"] in wanted]

    def _flags(self, entryId: str, state: dict[str, Any]) -> frozenset[str]:
        entry = self._messages.entries[entryId]
        on = {
            "\\Seen": entry["read_state"],
            "\\Answered": state["answered"],
            "\\Flagged": entry["starred"],
            "\\Deleted": state["deleted"],
            "\\Draft": state["draft"],
        }
        return frozenset(flag for flag, value in on.items() if value)

    def _message(self, entryId: str, state: dict[str, Any]) -> FolderMessage:
        envelope, raw = self._messages.messages[
            self._messages.entries[entryId]["file_id"]
        ]
        return FolderMessage(
            state["uid"],
            entryId,
            self._flags(entryId, state),
            state["keywords"],
            state["modseq"],
            len(raw),
            envelope.receivedAt.isoformat(timespec="microseconds"),
        )

    def _list(self, userId: int, name: str, uids: UidSet | None) -> list:
        folder = self._byName(userId, name)
        return [self._message(i, s) for i, s in self._inside(userId, folder, uids)]

    def messages(self, userId: int, name: str, uids: UidSet | None = None) -> Deferred:
        return maybeDeferred(self._list, userId, name, uids)

    def _search(self, userId: int, name: str, field: str, text: str) -> set[int]:
        if field not in HEADER_FIELDS and (
            field not in INDEX_FIELDS or not isIndexWord(text)
        ):
            raise ValueError(f"the index cannot answer {field} {text!r}")
        folder = self._byName(userId, name)
        found = set()
        for entryId, state in self._inside(userId, folder, None):
            envelope, raw = self._messages.messages[
                self._messages.entries[entryId]["file_id"]
            ]
            if _holds(envelope, extractMetadata(raw), field, text):
                found.add(state["uid"])
        return found

    def search(self, userId: int, name: str, field: str, text: str) -> Deferred:
        return maybeDeferred(self._search, userId, name, field, text)

    def _setFlags(
        self,
        userId: int,
        name: str,
        uids: UidSet,
        flags: Iterable[str],
        mode: str,
        unchangedSince: int | None,
    ) -> FlagChange:
        given = splitFlags(flags)
        folder = self._byName(userId, name)
        if mode != "remove" and given[1]:
            known = (
                k
                for state in self._state.values()
                if state["user_id"] == userId
                for k in state["keywords"]
            )
            checkKeywordRoom(known, given[1])
        result = FlagChange()
        for entryId, state in self._inside(userId, folder, uids):
            if unchangedSince is not None and state["modseq"] > unchangedSince:
                result.modified.append(state["uid"])
                continue
            current = (self._flags(entryId, state), state["keywords"])
            system, keywords = changedFlags(current, given, mode)
            if (system, keywords) == current:
                continue
            entry = self._messages.entries[entryId]
            entry["read_state"] = "\\Seen" in system
            entry["starred"] = "\\Flagged" in system
            state["seen"] = (entry["read_state"], entry["starred"])
            state["answered"] = "\\Answered" in system
            state["deleted"] = "\\Deleted" in system
            state["draft"] = "\\Draft" in system
            state["keywords"] = keywords
            state["modseq"] = self._bump(userId, folder["mailbox"])
            result.changed[state["uid"]] = state["modseq"]
        return result

    def setFlags(
        self,
        userId: int,
        name: str,
        uids: UidSet,
        flags: Iterable[str],
        mode: str,
        unchangedSince: int | None = None,
    ) -> Deferred:
        if mode not in ("add", "remove", "replace"):
            return fail(ValueError(f"bad mode {mode!r}"))
        return maybeDeferred(
            self._setFlags, userId, name, uids, list(flags), mode, unchangedSince
        )

    def _moveUids(
        self,
        userId: int,
        source: dict[str, Any],
        uids: UidSet | None,
        target: dict[str, Any],
    ) -> list[tuple[int, int]]:
        pairs = []
        for entryId, state in self._inside(userId, source, uids):
            old = state["uid"]
            self._messages.entries[entryId]["mailbox"] = target["mailbox"]
            self._bump(userId, source["mailbox"])
            state["mailbox"] = target["mailbox"]
            state["uid"], state["modseq"] = self._enter(userId, target["mailbox"])
            pairs.append((old, state["uid"]))
        return pairs

    def _move(
        self, userId: int, name: str, uids: UidSet, destination: str
    ) -> list[tuple[int, int]]:
        source = self._byName(userId, name)
        target = self._byName(userId, destination)
        if source is target:
            raise FolderRefused("the messages are in that folder already")
        return self._moveUids(userId, source, uids, target)

    def move(self, userId: int, name: str, uids: UidSet, destination: str) -> Deferred:
        return maybeDeferred(self._move, userId, name, uids, destination)

    def _moveEntry(self, userId: int, entryId: str, mailbox: str) -> int | None:
        target = self._account(userId).get(mailbox)
        if target is None:
            raise NoSuchFolder(mailbox)
        state = self._state.get(entryId)
        if state is None or state["user_id"] != userId:
            return None
        if state["mailbox"] != mailbox:
            source = self._folders[userId][state["mailbox"]]
            self._moveUids(userId, source, [(state["uid"], state["uid"])], target)
        return state["uid"]

    def moveEntry(self, userId: int, entryId: str, mailbox: str) -> Deferred:
        return maybeDeferred(self._moveEntry, userId, entryId, mailbox)

    def _copy(
        self, userId: int, name: str, uids: UidSet, destination: str
    ) -> list[tuple[int, int]]:
        source = self._byName(userId, name)
        target = self._byName(userId, destination)
        pairs = []
        for entryId, state in self._inside(userId, source, uids):
            self._messages._order += 1
            copyId = str(uuid.uuid4())
            self._messages.entries[copyId] = {
                **self._messages.entries[entryId],
                "mailbox": target["mailbox"],
                "order": self._messages._order,
            }
            uid, modseq = self._enter(userId, target["mailbox"])
            self._state[copyId] = {
                **state,
                "mailbox": target["mailbox"],
                "uid": uid,
                "modseq": modseq,
            }
            pairs.append((state["uid"], uid))
        return pairs

    def copy(self, userId: int, name: str, uids: UidSet, destination: str) -> Deferred:
        return maybeDeferred(self._copy, userId, name, uids, destination)

    def _expunge(self, userId: int, name: str, uids: UidSet | None) -> list[int]:
        folder = self._byName(userId, name)
        gone = []
        for entryId, state in self._inside(userId, folder, uids):
            if state["deleted"]:
                del self._messages.entries[entryId]
                del self._state[entryId]
                self._bump(userId, folder["mailbox"])
                gone.append(state["uid"])
        return gone

    def expunge(self, userId: int, name: str, uids: UidSet | None = None) -> Deferred:
        return maybeDeferred(self._expunge, userId, name, uids)


class RecordingChangeFeed(ChangeFeed):
    """An IChangeFeed that also keeps every published C{(userId, kind)}, for
    tests that check a path publishes without subscribing to it."""

    def __init__(self) -> None:
        super().__init__()
        self.published: list[tuple[int, str]] = []

    def publish(self, userId: int, kind: str) -> None:
        super().publish(userId, kind)
        self.published.append((userId, kind))


def _holds(envelope: Envelope, meta: Any, field: str, text: str) -> bool:
    """What the SQLite store's search index and message rows answer."""
    if field in HEADER_FIELDS:
        value = {"subject": meta.subject, "from": meta.headerFrom, "to": meta.headerTo}
        return text.lower() in value[field].lower()
    if field == "body":
        return holdsWordPrefix(meta.text, text)
    indexed = [
        meta.headerFrom,
        envelope.mailFrom,
        meta.headerTo,
        *(r.address for r in envelope.recipients),
        meta.subject,
        meta.text,
    ]
    return any(holdsWordPrefix(value, text) for value in indexed)


@implementer(IMTASTSPolicyCache)
class MemoryMTASTSPolicyCache:
    """Policies in a dict: an L{IMTASTSPolicyCache} that forgets on restart."""

    def __init__(self) -> None:
        self.policies: dict[str, Any] = {}

    def load(self, domain: str) -> Deferred:
        return succeed(self.policies.get(domain))

    def save(self, domain: str, policy: Any) -> Deferred:
        self.policies[domain] = policy
        return succeed(None)


@implementer(ISenderListStore)
class MemorySenderListStore:
    """Sender lists in a dict, as L{ISenderListStore} promises them."""

    def __init__(self) -> None:
        self._lists: dict[int, dict[str, str]] = {}

    def lists(self) -> Deferred:
        return succeed({u: dict(m) for u, m in self._lists.items()})

    def train(self, userId: int, sender: str, kind: str) -> Deferred:
        self._lists.setdefault(userId, {})[sender.lower()] = kind
        return succeed(None)


@implementer(IOutboundQueueStore)
class MemoryOutboundQueueStore:
    """Outbound recipients in a dict; L{enqueue} stands in for sending."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[str, int, str, str]] = {}
        self._recipients: dict[tuple[str, str], dict[str, Any]] = {}

    def enqueue(
        self, queueId: str, messageId: str, userId: int, mailFrom: str, rcpts: list
    ) -> None:
        """Queue C{rcpts} as the message store does for sent mail."""
        self._entries[queueId] = (
            messageId,
            userId,
            mailFrom,
            datetime.now(UTC).isoformat(timespec="microseconds"),
        )
        for rcpt in rcpts:
            self._recipients.setdefault(
                (queueId, rcpt),
                {"status": "queued", "attempts": 0, "next": 0.0, "notified": False},
            )

    def _pending(self) -> list[tuple[tuple[str, str], dict[str, Any]]]:
        return sorted(
            (
                (key, r)
                for key, r in self._recipients.items()
                if r["status"] in ("queued", "deferred")
            ),
            key=lambda item: item[1]["next"],
        )

    def nextDue(self) -> Deferred:
        pending = self._pending()
        return succeed(pending[0][1]["next"] if pending else None)

    def due(self, now: float, limit: int) -> Deferred:
        found = []
        for (queueId, rcpt), r in self._pending():
            if r["next"] <= now and len(found) < limit:
                messageId, userId, mailFrom, createdAt = self._entries[queueId]
                found.append(
                    DueRecipient(
                        queueId,
                        messageId,
                        userId,
                        mailFrom,
                        rcpt,
                        r["attempts"],
                        createdAt,
                        r["notified"],
                    )
                )
        return succeed(found)

    def pendingCount(self) -> Deferred:
        return succeed(len(self._pending()))

    def record(self, outcomes: list) -> Deferred:
        for o in outcomes:
            r = self._recipients[(o.queueId, o.rcpt)]
            r["status"], r["next"] = o.status, o.nextAttempt
            r["attempts"] += 1
        return succeed(None)

    def markDelayNotified(self, queueId: str, rcpts: list) -> Deferred:
        for rcpt in rcpts:
            self._recipients[(queueId, rcpt)]["notified"] = True
        return succeed(None)

"""Folders in SQLite (L{IFolderStore}): what IMAP sees of an account's mail.

A folder is a row of C{folders} (schema 16): its IMAP name, the C{mailbox} key
its entries carry (the key the mobile API knows: inbox, sent, junk, trash,
archive; drafts; user folders get one of their own that a rename keeps),
UIDVALIDITY, UIDNEXT, HIGHESTMODSEQ and subscription. An entry's UID comes
from its folder's UIDNEXT when it enters the folder (delivered, copied or
moved there), so UIDs only grow and never come back; its MODSEQ from the
folder's HIGHESTMODSEQ at every change. The schema's triggers do this for
every writer (the API's own UPDATEs included), so both views stay one state.

The plain functions take a connection (the CLI and tests can call them);
L{SQLiteFolderStore} runs them off the reactor thread.
"""

from __future__ import annotations

import functools
import json
import re
import sqlite3
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from twisted.internet.defer import Deferred
from zope.interface import implementer

from mailraven.interfaces import IFolderStore
from mailraven.store.db import Database
from mailraven.store.files import newMessageId
from mailraven.store.foldersearch import folderSearch
from mailraven.store.purge import purgeUnreferenced
from mailraven.store.rows import enterFolder, utcNow
from mailraven.store.schema import NEXT_UIDVALIDITY

INBOX = "INBOX"
DELIMITER = "/"
MAX_NAME_LENGTH = 200
# Folders an account may have (the six standard ones included): every LIST
# and the API's folder list send them all.
MAX_FOLDERS = 1000
# IMAP system flag -> the entry's column (\Seen and \Flagged are the API's
# read_state and starred)
SYSTEM_FLAGS = {
    "\\Seen": "read_state",
    "\\Answered": "answered",
    "\\Flagged": "starred",
    "\\Deleted": "deleted",
    "\\Draft": "draft",
}
_BY_LOWER = {name.lower(): name for name in SYSTEM_FLAGS}
# RFC 3501 atom: no specials, no controls, no space (and no "\": not ours)
_KEYWORD = re.compile(r'^[^\x00-\x20\x7f(){%*"\\\]]+$')
# Keywords are client-made and kept in every entry row and every SELECT's
# FLAGS line: unbounded, one session could store megabytes of them.
MAX_KEYWORD_LENGTH = 64
MAX_KEYWORDS = 100  # distinct keywords in an account
_MODES = ("add", "remove", "replace")
# A UID set as the IMAP layer parses it: (low, high) pairs, None for "*".
UidSet = Sequence[tuple[int, "int | None"]]


class FolderError(ValueError):
    """A folder operation that cannot be done (the IMAP layer answers NO)."""


class NoSuchFolder(FolderError):
    pass


class FolderExists(FolderError):
    pass


class BadFolderName(FolderError):
    pass


class FolderLimit(FolderError):
    """One folder more than an account may have (RFC 5530 LIMIT)."""


class FolderRefused(FolderError):
    """Not allowed for this folder: removing INBOX or a special-use folder,
    moving mail into the folder it is in."""


class BadFlag(FolderError):
    """Not a flag a message can carry (\\Recent is the session's, not stored)."""


class KeywordLimit(BadFlag):
    """A keyword too long, or one more than an account may have (RFC 5530
    LIMIT)."""


class BadMessageSet(FolderError):
    """A sequence number past the last message, or 0."""


@dataclass(frozen=True)
class Folder:
    name: str
    mailbox: str
    specialUse: str | None
    uidvalidity: int
    uidnext: int
    highestModseq: int
    subscribed: bool
    total: int = 0
    unseen: int = 0


@dataclass(frozen=True)
class FolderMessage:
    """One message as a folder holds it; C{internalDate} is its arrival
    (ISO 8601, UTC), C{size} its bytes as stored (our headers included)."""

    uid: int
    entryId: str
    flags: frozenset[str]
    keywords: frozenset[str]
    modseq: int
    size: int
    internalDate: str


@dataclass(frozen=True)
class FlagChange:
    """What a flag store did: {uid: new modseq} of the messages it changed,
    and the uids it left alone because they changed after C{unchangedSince}
    (RFC 7162 3.1.3's MODIFIED)."""

    changed: dict[int, int] = field(default_factory=dict)
    modified: list[int] = field(default_factory=list)


# -- names, flags and message sets (no SQL: the fake uses them too) ----------


def normaliseFolderName(name: str) -> str:
    """
    The stored spelling: INBOX whatever its case (RFC 3501 5.1), others as
    given. Refuses empty names and components, control characters, the LIST
    wildcards, and names over L{MAX_NAME_LENGTH} characters. Names are
    Unicode: modified UTF-7 is the protocol's business.
    """
    if name.upper() == INBOX:
        return INBOX
    if not name or len(name) > MAX_NAME_LENGTH:
        raise BadFolderName(f"a folder name has 1 to {MAX_NAME_LENGTH} characters")
    if any(ord(c) < 0x20 or c in "\x7f*%" for c in name):
        raise BadFolderName(f"{name!r}: no control characters, '*' or '%'")
    if "" in name.split(DELIMITER):
        raise BadFolderName(f"{name!r}: an empty level between {DELIMITER!r}")
    return name


def newFolderName(name: str) -> str:
    """
    L{normaliseFolderName} for a name being made (CREATE, RENAME's target):
    no level may start or end with a space, nor be C{.} or C{..}, names
    clients and file-system minded tools show or resolve as something else.
    Looking up an existing folder does not check this.
    """
    name = normaliseFolderName(name)
    for part in name.split(DELIMITER):
        if part != part.strip():
            raise BadFolderName(f"{name!r}: a level starts or ends with a space")
        if part in (".", ".."):
            raise BadFolderName(f"{name!r}: '.' and '..' are not folder names")
    return name


def checkRename(specialUse: str | None, old: str, renames: list) -> None:
    """
    A rename refused as a whole, before anything changes: a special-use
    folder keeps its name (submission and the API store sent mail, drafts
    and junk by it), and no (source, target) pair in C{renames} (the folder
    and its inferiors) may end up past L{MAX_NAME_LENGTH}: an inferior
    renamed longer could no longer be selected, deleted or renamed back.
    """
    if specialUse is not None:
        raise FolderRefused(f"{old} is the {specialUse} folder and keeps its name")
    for _, target in renames:
        if len(target) > MAX_NAME_LENGTH:
            raise BadFolderName(
                f"{target[:40]!r}... would be over {MAX_NAME_LENGTH} characters"
            )


def checkFolderRoom(present: int, adding: int) -> None:
    """L{FolderLimit} when C{adding} folders would take an account that has
    C{present} past L{MAX_FOLDERS}."""
    if present + adding > MAX_FOLDERS:
        raise FolderLimit(f"[LIMIT] An account has at most {MAX_FOLDERS} folders")


def parents(name: str) -> list[str]:
    """The superior names of C{name}, outermost first (a/b/c: a, a/b)."""
    parts = name.split(DELIMITER)
    return [DELIMITER.join(parts[:n]) for n in range(1, len(parts))]


def splitFlags(flags: Iterable[str]) -> tuple[frozenset[str], frozenset[str]]:
    """(system flags in their canonical case, keywords); L{BadFlag} if any
    flag is neither."""
    system, keywords = set(), set()
    for flag in flags:
        if flag.startswith("\\"):
            canonical = _BY_LOWER.get(flag.lower())
            if canonical is None:
                raise BadFlag(f"{flag} cannot be stored")
            system.add(canonical)
        elif _KEYWORD.match(flag):
            if len(flag) > MAX_KEYWORD_LENGTH:
                raise KeywordLimit(
                    f"[LIMIT] A keyword is at most {MAX_KEYWORD_LENGTH} characters"
                )
            keywords.add(flag)
        else:
            raise BadFlag(f"{flag!r} is not a keyword (an IMAP atom)")
    return frozenset(system), frozenset(keywords)


def checkKeywordRoom(known: Iterable[str], given: frozenset[str]) -> None:
    """L{KeywordLimit} when C{given} would take the account (whose entries
    carry C{known}) past L{MAX_KEYWORDS} distinct keywords: checked for the
    account, not the folder, so a COPY or MOVE never meets it."""
    if not given:
        return
    known = set(known)
    if not given <= known and len(known | given) > MAX_KEYWORDS:
        raise KeywordLimit(f"[LIMIT] An account has at most {MAX_KEYWORDS} keywords")


def accountKeywords(conn: sqlite3.Connection, userId: int) -> set[str]:
    """The distinct keywords the account's entries carry."""
    rows = conn.execute(
        "SELECT DISTINCT keywords FROM mailbox_entries"
        " WHERE user_id = ? AND keywords != ''",
        (userId,),
    )
    return {word for (words,) in rows for word in words.split()}


def changedFlags(
    current: tuple[frozenset[str], frozenset[str]],
    given: tuple[frozenset[str], frozenset[str]],
    mode: str,
) -> tuple[frozenset[str], frozenset[str]]:
    """The (system flags, keywords) after a STORE of C{given} in C{mode}."""
    if mode == "add":
        return current[0] | given[0], current[1] | given[1]
    if mode == "remove":
        return current[0] - given[0], current[1] - given[1]
    if mode == "replace":
        return given
    raise ValueError(f"mode is one of {_MODES}")


def resolveUidSet(uids: UidSet, largest: int) -> list[tuple[int, int]]:
    """
    Closed, ordered, merged ranges. "*" is the largest UID in use, so "n:*"
    always holds the last message even when n is past it (RFC 3501 6.4.8);
    a range may be given high end first.
    """
    ranges = []
    for low, high in uids:
        high = largest if high is None else high
        ranges.append((min(low, high), max(low, high)))
    merged: list[tuple[int, int]] = []
    for low, high in sorted(ranges):
        if merged and low <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(high, merged[-1][1]))
        else:
            merged.append((low, high))
    return merged


def uidsIn(uids: UidSet, present: Sequence[int]) -> list[int]:
    """The UIDs of C{present} (ascending) that C{uids} names."""
    ranges = resolveUidSet(uids, present[-1] if present else 0)
    return [u for u in present if any(low <= u <= high for low, high in ranges)]


def sequenceUids(numbers: UidSet, present: Sequence[int]) -> list[int]:
    """
    The UIDs that message sequence numbers name, C{present} being the
    session's view (ascending UIDs); "*" is the last message. A number past
    the last message, or 0, is L{BadMessageSet} (RFC 3501 9, seq-number).
    """
    ranges = resolveUidSet(numbers, len(present))
    if any(low < 1 or high > len(present) for low, high in ranges):
        raise BadMessageSet(f"the folder has {len(present)} messages")
    return [present[n - 1] for low, high in ranges for n in range(low, high + 1)]


# -- SQL ----------------------------------------------------------------------

_FOLDER_COLUMNS = """
    f.name, f.mailbox, f.special_use, f.uidvalidity, f.uidnext, f.highestmodseq,
    f.subscribed, coalesce(c.total, 0), coalesce(c.unread, 0)
"""
_FOLDER_FROM = """
    FROM folders f LEFT JOIN mailbox_counts c
    ON c.user_id = f.user_id AND c.mailbox = f.mailbox
"""
_FLAG_COLUMNS = ", ".join(f"e.{column}" for column in SYSTEM_FLAGS.values())
_SET_FLAGS = ", ".join(f"{column} = ?" for column in SYSTEM_FLAGS.values())


def _folder(row: Any) -> Folder:
    (name, mailbox, use, validity, uidnext, modseq, subscribed, total, unseen) = row
    return Folder(
        name, mailbox, use, validity, uidnext, modseq, bool(subscribed), total, unseen
    )


def listFolders(conn: sqlite3.Connection, userId: int) -> list[Folder]:
    """INBOX first, then by name."""
    rows = conn.execute(
        f"SELECT {_FOLDER_COLUMNS} {_FOLDER_FROM} WHERE f.user_id = ?"
        " ORDER BY f.name != 'INBOX', f.name",
        (userId,),
    )
    return [_folder(tuple(row)) for row in rows]


def findFolder(conn: sqlite3.Connection, userId: int, name: str) -> Folder | None:
    try:
        name = normaliseFolderName(name)
    except BadFolderName:
        return None
    row = conn.execute(
        f"SELECT {_FOLDER_COLUMNS} {_FOLDER_FROM} WHERE f.user_id = ? AND f.name = ?",
        (userId, name),
    ).fetchone()
    return None if row is None else _folder(tuple(row))


def _mailboxOf(conn: sqlite3.Connection, userId: int, name: str) -> str:
    folder = findFolder(conn, userId, name)
    if folder is None:
        raise NoSuchFolder(name)
    return folder.mailbox


def _insertFolder(
    conn: sqlite3.Connection, userId: int, name: str, subscribed: bool
) -> None:
    (validity,) = conn.execute(f"{NEXT_UIDVALIDITY} RETURNING last").fetchone()
    # the key of a user folder: unique for ever, as UIDVALIDITY is
    conn.execute(
        "INSERT INTO folders (user_id, mailbox, name, uidvalidity, subscribed)"
        " VALUES (?, ?, ?, ?, ?)",
        (userId, f"folder-{validity}", name, validity, subscribed),
    )


def _exists(conn: sqlite3.Connection, userId: int, name: str) -> bool:
    row = conn.execute(
        "SELECT 1 FROM folders WHERE user_id = ? AND name = ?", (userId, name)
    ).fetchone()
    return row is not None


def _makeRoom(conn: sqlite3.Connection, userId: int, names: list[str]) -> list[str]:
    """Those of C{names} the account lacks; L{FolderLimit} if making them
    would take it past L{MAX_FOLDERS}."""
    missing = [n for n in names if not _exists(conn, userId, n)]
    (present,) = conn.execute(
        "SELECT count(*) FROM folders WHERE user_id = ?", (userId,)
    ).fetchone()
    checkFolderRoom(present, len(missing))
    return missing


def _withParents(conn: sqlite3.Connection, userId: int, name: str) -> None:
    """Create C{name} and any superior name missing (RFC 3501 6.3.3)."""
    wanted = [normaliseFolderName(parent) for parent in parents(name)] + [name]
    for missing in _makeRoom(conn, userId, wanted):
        _insertFolder(conn, userId, missing, False)


def createFolder(conn: sqlite3.Connection, userId: int, name: str) -> Folder:
    """A new, unsubscribed user folder (and its missing superiors)."""
    name = newFolderName(name)
    if _exists(conn, userId, name):
        raise FolderExists(name)
    _withParents(conn, userId, name)
    created = findFolder(conn, userId, name)
    assert created is not None
    return created


def renameFolder(conn: sqlite3.Connection, userId: int, old: str, new: str) -> None:
    """
    Rename C{old} and its inferior names (RFC 3501 6.3.5); special folders
    keep their special use, every folder its mail, UIDs and UIDVALIDITY.
    Renaming INBOX moves its mail to a new folder C{new} and leaves INBOX,
    empty, where it is.
    """
    old, new = normaliseFolderName(old), newFolderName(new)
    source = findFolder(conn, userId, old)
    if source is None:
        raise NoSuchFolder(old)
    mailbox = source.mailbox
    if _exists(conn, userId, new):
        raise FolderExists(new)
    if old == INBOX:
        createFolder(conn, userId, new)
        entries = _entriesIn(conn, userId, mailbox, None)
        _moveEntries(conn, entries, _mailboxOf(conn, userId, new))
        return
    if new.startswith(old + DELIMITER):
        raise BadFolderName(f"{new!r} is inside {old!r}")
    inferiors = conn.execute(
        "SELECT name FROM folders WHERE user_id = ? AND substr(name, 1, ?) = ?",
        (userId, len(old) + 1, old + DELIMITER),
    ).fetchall()
    renames = [(old, new)] + [(n, new + n[len(old) :]) for (n,) in inferiors]
    checkRename(source.specialUse, old, renames)
    for _, target in renames[1:]:
        if _exists(conn, userId, target):
            raise FolderExists(target)
    for parent in _makeRoom(conn, userId, parents(new)):
        _insertFolder(conn, userId, parent, False)
    conn.executemany(
        "UPDATE folders SET name = ? WHERE user_id = ? AND name = ?",
        [(target, userId, source) for source, target in renames],
    )


def deleteFolder(
    conn: sqlite3.Connection, userId: int, name: str, purged: list[str]
) -> int:
    """
    Remove a user folder and the mail in it (RFC 3501 6.3.4: clients that
    want to keep it move it to Trash first, as Thunderbird does); the
    number of messages removed. INBOX and the special folders stay.
    Inferior names stay too. Files of messages nobody has any more are
    added to C{purged}, to remove after the commit.
    """
    folder = findFolder(conn, userId, name)
    if folder is None:
        raise NoSuchFolder(name)
    if folder.name == INBOX or folder.specialUse is not None:
        raise FolderRefused(f"{folder.name} cannot be deleted")
    gone = conn.execute(
        "DELETE FROM mailbox_entries WHERE user_id = ? AND mailbox = ?"
        " RETURNING message_id",
        (userId, folder.mailbox),
    ).fetchall()
    removed = len(gone)
    purged.extend(purgeUnreferenced(conn, [(userId, m) for (m,) in gone]))
    for table in ("folders", "mailbox_counts"):
        conn.execute(
            f"DELETE FROM {table} WHERE user_id = ? AND mailbox = ?",
            (userId, folder.mailbox),
        )
    return removed


def subscribeFolder(
    conn: sqlite3.Connection, userId: int, name: str, subscribed: bool
) -> None:
    cursor = conn.execute(
        "UPDATE folders SET subscribed = ? WHERE user_id = ? AND name = ?",
        (subscribed, userId, normaliseFolderName(name)),
    )
    if cursor.rowcount != 1:
        raise NoSuchFolder(name)


def _largestUid(conn: sqlite3.Connection, userId: int, mailbox: str) -> int:
    """The "*" of a UID set: the largest UID in the folder, 0 when empty."""
    (largest,) = conn.execute(
        "SELECT coalesce(max(uid), 0) FROM mailbox_entries"
        " WHERE user_id = ? AND mailbox = ?",
        (userId, mailbox),
    ).fetchone()
    return largest


def _entriesIn(
    conn: sqlite3.Connection, userId: int, mailbox: str, uids: UidSet | None
) -> list[sqlite3.Row]:
    """The folder's entries (all, or those C{uids} names) in UID order."""
    columns = (
        f"e.id, e.uid, {_FLAG_COLUMNS}, e.keywords, e.modseq, e.size, e.received_at,"
        " e.message_id, e.recipient, e.tag"
    )
    source = (
        f"SELECT {columns} FROM mailbox_entries e WHERE e.user_id = ? AND e.mailbox = ?"
    )
    if uids is None:
        return conn.execute(f"{source} ORDER BY e.uid", (userId, mailbox)).fetchall()
    ranges = resolveUidSet(uids, _largestUid(conn, userId, mailbox))
    if len(ranges) == 1:  # 1:*, a resync's: in index order, nothing to sort
        return conn.execute(
            f"{source} AND e.uid BETWEEN ? AND ? ORDER BY e.uid",
            (userId, mailbox, *ranges[0]),
        ).fetchall()
    # one index range scan per range (CROSS JOIN: the ranges outside), however
    # many a client sends
    return conn.execute(
        f"SELECT {columns} FROM json_each(?) r CROSS JOIN mailbox_entries e"
        " WHERE e.user_id = ? AND e.mailbox = ?"
        " AND e.uid BETWEEN r.value ->> 0 AND r.value ->> 1 ORDER BY e.uid",
        (json.dumps(ranges), userId, mailbox),
    ).fetchall()


_COLUMNS = tuple(SYSTEM_FLAGS.values())
_NO_KEYWORDS: frozenset[str] = frozenset()


@functools.lru_cache(maxsize=64)
def _systemFlags(*on: int) -> frozenset[str]:
    """One frozenset per combination (a 100,000-message listing builds few)."""
    return frozenset(
        flag for flag, value in zip(SYSTEM_FLAGS, on, strict=True) if value
    )


def _flagsOf(row: Any) -> tuple[frozenset[str], frozenset[str]]:
    """(system flags, keywords) of an entry row."""
    system = _systemFlags(*(row[column] for column in _COLUMNS))
    keywords = row["keywords"]
    return system, frozenset(keywords.split()) if keywords else _NO_KEYWORDS


def _message(row: Any) -> FolderMessage:
    system, keywords = _flagsOf(row)
    return FolderMessage(
        row["uid"],
        row["id"],
        system,
        keywords,
        row["modseq"],
        row["size"],
        row["received_at"],
    )


def folderMessages(
    conn: sqlite3.Connection, userId: int, name: str, uids: UidSet | None = None
) -> list[FolderMessage]:
    mailbox = _mailboxOf(conn, userId, name)
    return [_message(row) for row in _entriesIn(conn, userId, mailbox, uids)]


def searchFolderText(
    conn: sqlite3.Connection, userId: int, name: str, field: str, text: str
) -> set[int]:
    return folderSearch(conn, userId, _mailboxOf(conn, userId, name), field, text)


def setFolderFlags(
    conn: sqlite3.Connection,
    userId: int,
    name: str,
    uids: UidSet,
    flags: Iterable[str],
    mode: str,
    unchangedSince: int | None = None,
) -> FlagChange:
    """Each changed entry gets its new MODSEQ from the folder (trigger)."""
    if mode not in _MODES:
        raise ValueError(f"mode is one of {_MODES}")
    given = splitFlags(flags)
    mailbox = _mailboxOf(conn, userId, name)
    if mode != "remove" and given[1]:
        checkKeywordRoom(accountKeywords(conn, userId), given[1])
    result = FlagChange()
    now = utcNow()
    for row in _entriesIn(conn, userId, mailbox, uids):
        if unchangedSince is not None and row["modseq"] > unchangedSince:
            result.modified.append(row["uid"])
            continue
        current = _flagsOf(row)
        system, keywords = changedFlags(current, given, mode)
        if (system, keywords) == current:
            continue
        conn.execute(
            f"UPDATE mailbox_entries SET {_SET_FLAGS}, keywords = ?, updated_at = ?"
            " WHERE id = ?",
            (
                *(flag in system for flag in SYSTEM_FLAGS),
                " ".join(sorted(keywords)),
                now,
                row["id"],
            ),
        )
        (modseq,) = conn.execute(
            "SELECT modseq FROM mailbox_entries WHERE id = ?", (row["id"],)
        ).fetchone()
        result.changed[row["uid"]] = modseq
    return result


def _moveEntries(
    conn: sqlite3.Connection, rows: list[Any], destination: str
) -> list[tuple[int, int]]:
    """Each entry takes a UID from the destination (trigger); (old, new) UIDs."""
    now, pairs = utcNow(), []
    for row in rows:
        conn.execute(
            "UPDATE mailbox_entries SET mailbox = ?, updated_at = ? WHERE id = ?",
            (destination, now, row["id"]),
        )
        (uid,) = conn.execute(
            "SELECT uid FROM mailbox_entries WHERE id = ?", (row["id"],)
        ).fetchone()
        pairs.append((row["uid"], uid))
    return pairs


def moveEntry(
    conn: sqlite3.Connection, userId: int, entryId: str, mailbox: str
) -> int | None:
    """
    Move one entry (the API's message id) into the folder whose key is
    C{mailbox}, as an IMAP MOVE would: a new UID from that folder. The
    entry's UID there (unchanged when it is there already), or None when the
    account has no such entry.
    """
    found = conn.execute(
        "SELECT 1 FROM folders WHERE user_id = ? AND mailbox = ?", (userId, mailbox)
    ).fetchone()
    if found is None:
        raise NoSuchFolder(mailbox)
    row = conn.execute(
        "SELECT id, uid, mailbox FROM mailbox_entries WHERE id = ? AND user_id = ?",
        (entryId, userId),
    ).fetchone()
    if row is None:
        return None
    if row["mailbox"] == mailbox:
        return row["uid"]
    [(_, uid)] = _moveEntries(conn, [row], mailbox)
    return uid


def _source(
    conn: sqlite3.Connection, userId: int, name: str, destination: str
) -> tuple[str, str]:
    """The mailbox keys of a move's or copy's two folders."""
    return _mailboxOf(conn, userId, name), _mailboxOf(conn, userId, destination)


def moveMessages(
    conn: sqlite3.Connection, userId: int, name: str, uids: UidSet, destination: str
) -> list[tuple[int, int]]:
    """(old UID, new UID) per message moved, in old UID order (COPYUID)."""
    source, target = _source(conn, userId, name, destination)
    if source == target:
        raise FolderRefused("the messages are in that folder already")
    return _moveEntries(conn, _entriesIn(conn, userId, source, uids), target)


def copyMessages(
    conn: sqlite3.Connection, userId: int, name: str, uids: UidSet, destination: str
) -> list[tuple[int, int]]:
    """
    A new entry per message (flags and internal date kept, RFC 3501 6.4.7),
    sharing the message file; (old UID, new UID) in old UID order.
    """
    source, target = _source(conn, userId, name, destination)
    now, pairs = utcNow(), []
    for row in _entriesIn(conn, userId, source, uids):
        uid, modseq = enterFolder(conn, userId, target)
        conn.execute(
            "INSERT INTO mailbox_entries (id, message_id, user_id, recipient,"
            " mailbox, read_state, answered, starred, deleted, draft, keywords,"
            " received_at, updated_at, tag, uid, modseq, size)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                newMessageId(),
                row["message_id"],
                userId,
                row["recipient"],
                target,
                row["read_state"],
                row["answered"],
                row["starred"],
                row["deleted"],
                row["draft"],
                row["keywords"],
                row["received_at"],
                now,
                row["tag"],
                uid,
                modseq,
                row["size"],
            ),
        )
        pairs.append((row["uid"], uid))
    return pairs


def expungeMessages(
    conn: sqlite3.Connection,
    userId: int,
    name: str,
    uids: UidSet | None = None,
    purged: list[str] | None = None,
) -> list[int]:
    """
    Remove the folder's entries flagged \\Deleted (only those C{uids} names,
    for UID EXPUNGE); their UIDs, ascending. UIDNEXT stays: never reused.
    Files of messages nobody has any more are added to C{purged}.
    """
    mailbox = _mailboxOf(conn, userId, name)
    delete = (
        "DELETE FROM mailbox_entries WHERE user_id = ? AND mailbox = ? AND deleted = 1"
    )
    if uids is None:
        ranges = [(1, 2**63 - 1)]
    else:
        ranges = resolveUidSet(uids, _largestUid(conn, userId, mailbox))
    gone = []
    for low, high in ranges:
        gone += conn.execute(
            f"{delete} AND uid BETWEEN ? AND ? RETURNING uid, message_id",
            (userId, mailbox, low, high),
        ).fetchall()
    paths = purgeUnreferenced(conn, [(userId, m) for _, m in gone])
    if purged is not None:
        purged.extend(paths)
    return sorted(uid for uid, _ in gone)


@implementer(IFolderStore)
class SQLiteFolderStore:
    """
    Folders in SQLite. C{removeFiles} (a list of message file paths ->
    Deferred, run off the reactor) removes the files of purged messages
    after their rows are committed; without it (tests of folders alone) the
    files stay for the start-up check to move to lost+found.
    """

    def __init__(self, db: Database, removeFiles: Any = None) -> None:
        self._db = db
        self._removeFiles = removeFiles

    def _writeThenRemove(self, work: Any) -> Deferred:
        """Run C{work(conn, purged)}; remove the C{purged} files after COMMIT."""
        purged: list[str] = []

        def committed(result: Any) -> Any:
            if not purged or self._removeFiles is None:
                return result
            return self._removeFiles(purged).addCallback(lambda _: result)

        return self._db.write(lambda conn: work(conn, purged)).addCallback(committed)

    def folders(self, userId: int) -> Deferred:
        return self._db.read(lambda conn: listFolders(conn, userId))

    def folder(self, userId: int, name: str) -> Deferred:
        return self._db.read(lambda conn: findFolder(conn, userId, name))

    def create(self, userId: int, name: str) -> Deferred:
        return self._db.write(lambda conn: createFolder(conn, userId, name))

    def rename(self, userId: int, old: str, new: str) -> Deferred:
        return self._db.write(lambda conn: renameFolder(conn, userId, old, new))

    def delete(self, userId: int, name: str) -> Deferred:
        return self._writeThenRemove(
            lambda conn, purged: deleteFolder(conn, userId, name, purged)
        )

    def subscribe(self, userId: int, name: str, subscribed: bool = True) -> Deferred:
        return self._db.write(
            lambda conn: subscribeFolder(conn, userId, name, subscribed)
        )

    def messages(self, userId: int, name: str, uids: UidSet | None = None) -> Deferred:
        return self._db.read(lambda conn: folderMessages(conn, userId, name, uids))

    def search(self, userId: int, name: str, field: str, text: str) -> Deferred:
        return self._db.read(
            lambda conn: searchFolderText(conn, userId, name, field, text)
        )

    def setFlags(
        self,
        userId: int,
        name: str,
        uids: UidSet,
        flags: Iterable[str],
        mode: str,
        unchangedSince: int | None = None,
    ) -> Deferred:
        flags = list(flags)
        return self._db.write(
            lambda conn: setFolderFlags(
                conn, userId, name, uids, flags, mode, unchangedSince
            )
        )

    def moveEntry(self, userId: int, entryId: str, mailbox: str) -> Deferred:
        return self._db.write(lambda conn: moveEntry(conn, userId, entryId, mailbox))

    def copy(self, userId: int, name: str, uids: UidSet, destination: str) -> Deferred:
        return self._db.write(
            lambda conn: copyMessages(conn, userId, name, uids, destination)
        )

    def move(self, userId: int, name: str, uids: UidSet, destination: str) -> Deferred:
        return self._db.write(
            lambda conn: moveMessages(conn, userId, name, uids, destination)
        )

    def expunge(self, userId: int, name: str, uids: UidSet | None = None) -> Deferred:
        return self._writeThenRemove(
            lambda conn, purged: expungeMessages(conn, userId, name, uids, purged)
        )

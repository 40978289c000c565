"""The mobile API's folders (docs/api.md, "Folders"), over L{IFolderStore}.

A folder is named in URLs and in a message's C{mailbox} by its key: the six
standard names (inbox, sent, drafts, junk, trash, archive) or C{folder-<n>}
for a user folder, a key a rename keeps. IMAP sees the same folders by name.
"""

from __future__ import annotations

import re
from typing import Any, Callable

from twisted.internet.defer import inlineCallbacks

from mailraven.api.http import APIError
from mailraven.changes import EXPUNGED, FOLDERS, MOVED
from mailraven.store.folders import (
    BadFolderName,
    Folder,
    FolderExists,
    FolderLimit,
    FolderRefused,
    NoSuchFolder,
)
from mailraven.store.messages import MAILBOXES
from mailraven.store.schema import STANDARD_FOLDERS

_USER_KEY = re.compile(r"^folder-[0-9]{1,19}$")
_SYSTEM_ORDER = [key for key, _, _ in STANDARD_FOLDERS]
_REFUSALS = (NoSuchFolder, FolderExists, FolderLimit, FolderRefused, BadFolderName)


def isFolderKey(text: str) -> bool:
    """Whether C{text} is spelled as a folder key (not whether it exists)."""
    return text in MAILBOXES or _USER_KEY.match(text) is not None


def folderJSON(folder: Folder) -> dict[str, Any]:
    return {
        "id": folder.mailbox,
        "name": folder.name,
        "special_use": folder.specialUse,
        "system": folder.mailbox in MAILBOXES,
        "total": folder.total,
        "unread": folder.unseen,
        "subscribed": folder.subscribed,
    }


def _order(folder: Folder) -> tuple[int, str]:
    """The six standard folders first (inbox, sent, drafts, junk, trash,
    archive), then the others by name."""
    if folder.mailbox in _SYSTEM_ORDER:
        return _SYSTEM_ORDER.index(folder.mailbox), ""
    return len(_SYSTEM_ORDER), folder.name


def _refusal(error: Exception) -> APIError:
    """The store's refusals as the API's errors."""
    if isinstance(error, NoSuchFolder):
        return APIError(404, "not_found", "No such folder")
    if isinstance(error, FolderExists):
        return APIError(409, "exists", f"A folder {error} exists already")
    if isinstance(error, FolderLimit):
        return APIError(409, "limit", str(error).removeprefix("[LIMIT] "))
    if isinstance(error, FolderRefused):
        return APIError(409, "refused", str(error))
    return APIError(400, "bad_name", str(error))


def _name(body: Any, required: bool) -> str | None:
    if not isinstance(body, dict) or set(body) - {"name", "subscribed"}:
        raise APIError(400, "bad_request", 'expected {"name": ..., "subscribed": ...}')
    name = body.get("name")
    if name is None and not required:
        return None
    if not isinstance(name, str):
        raise APIError(400, "bad_request", "name must be a string")
    return name


def _subscribed(body: dict) -> bool | None:
    value = body.get("subscribed")
    if value is not None and not isinstance(value, bool):
        raise APIError(400, "bad_request", "subscribed must be true or false")
    return value


class FolderRequests:
    """
    What the folder routes do, for one account at a time: C{folders} is the
    L{IFolderStore} IMAP uses too; C{publish(userId, kind)} puts the
    change on the account's change feed (IMAP IDLE, the event stream).
    """

    def __init__(
        self, folders: Any, publish: Callable[[int, str], None] | None = None
    ) -> None:
        self._folders = folders
        self._publish = publish or (lambda userId, kind: None)

    @inlineCallbacks
    def _call(self, method: str, userId: int, *args: Any):
        try:
            result = yield getattr(self._folders, method)(userId, *args)
        except _REFUSALS as e:
            raise _refusal(e) from None
        return result

    @inlineCallbacks
    def list(self, userId: int):
        folders = yield self._call("folders", userId)
        return {"folders": [folderJSON(f) for f in sorted(folders, key=_order)]}

    @inlineCallbacks
    def find(self, userId: int, key: str):
        """The account's folder with key C{key}; 404 when it has none
        (another account's key too: no existence leak)."""
        if isFolderKey(key):
            folders = yield self._call("folders", userId)
            for folder in folders:
                if folder.mailbox == key:
                    return folder
        raise APIError(404, "not_found", "No such folder")

    @inlineCallbacks
    def create(self, userId: int, body: Any):
        """Made subscribed (IMAP CREATE leaves that to the client), its
        missing superiors as IMAP makes them, unsubscribed."""
        name = _name(body, required=True)
        subscribed = _subscribed(body)
        folder = yield self._call("create", userId, name)
        if subscribed is not False:
            yield self._call("subscribe", userId, folder.name, True)
        self._publish(userId, FOLDERS)
        found = yield self._call("folder", userId, folder.name)
        return 201, folderJSON(found)

    @inlineCallbacks
    def update(self, userId: int, key: str, body: Any):
        """Rename (C{name}) and/or (un)subscribe (C{subscribed}). Renaming
        INBOX moves its mail to a new folder, as IMAP RENAME does: the
        answer is that folder, with its own key."""
        name = _name(body, required=False)
        subscribed = _subscribed(body)
        if name is None and subscribed is None:
            raise APIError(400, "bad_request", "give name, subscribed or both")
        folder = yield self.find(userId, key)
        current = folder.name
        if name is not None and name != current:
            yield self._call("rename", userId, current, name)
            current = name
        if subscribed is not None:
            yield self._call("subscribe", userId, current, subscribed)
        self._publish(userId, FOLDERS)
        found = yield self._call("folder", userId, current)
        if found is None:  # removed meanwhile
            raise APIError(404, "not_found", "No such folder")
        return folderJSON(found)

    @inlineCallbacks
    def delete(self, userId: int, key: str):
        """The folder and the mail in it go (IMAP DELETE); inferiors stay."""
        folder = yield self.find(userId, key)
        removed = yield self._call("delete", userId, folder.name)
        self._publish(userId, EXPUNGED if removed else FOLDERS)
        return {"deleted": key, "name": folder.name, "messages_removed": removed}

    @inlineCallbacks
    def moveEntry(self, userId: int, entryId: str, key: str):
        """True when the account has the entry; 404 when no folder C{key}."""
        uid = yield self._call("moveEntry", userId, entryId, key)
        if uid is not None:
            self._publish(userId, MOVED)
        return uid is not None

"""Hot backup, verify and restore of one data dir.

A backup is a directory: `mailraven.db` (an online-backup snapshot, taken in
steps so the writer is never starved), the message files that snapshot refers
to, `dkim/`, `certs/`, the config file if there is one, and `manifest.json`
with a sha256 for every file. It is built under a temporary name and renamed
into place only when complete, and never overwrites anything.

Message files are immutable, so they are hard-linked: from a previous backup
beside this one when it holds the same file (daily backups then cost only the
new mail), else from the data dir when on the same filesystem, else copied.
All functions here block: the CLI calls them directly, the server from a thread.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import sqlite3
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Callable

from mailraven import __version__
from mailraven.startup import databasePath
from mailraven.store.files import fsyncDirectory
from mailraven.store.schema import SCHEMA_VERSION

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
DATABASE = "mailraven.db"
SECRET_DIRS = ("dkim", "certs")
MESSAGES = "messages"
CONFIG = "mailraven.toml"
NAME_PREFIX = "mailraven-"


class BackupError(Exception):
    """The backup, verify or restore cannot go on; the message says why."""


@dataclass
class Progress:
    """Files and bytes done; printed on a terminal, read by the job runner."""

    files: int = 0
    bytes: int = 0
    started: float = field(default_factory=time.monotonic)
    report: Callable[[Progress], None] | None = None
    _last: float = 0.0

    def add(self, size: int) -> None:
        self.files += 1
        self.bytes += size
        now = time.monotonic()
        if self.report is not None and now - self._last >= 0.5:
            self._last = now
            self.report(self)


def terminalReport(progress: Progress) -> None:
    elapsed = max(time.monotonic() - progress.started, 1e-6)
    rate = progress.bytes / elapsed / 1e6
    sys.stderr.write(
        f"\r{progress.files} files, {progress.bytes / 1e6:.1f} MB, {rate:.1f} MB/s"
    )
    sys.stderr.flush()


def backupName(now: datetime | None = None) -> str:
    now = now or datetime.now(UTC)
    return NAME_PREFIX + now.strftime("%Y%m%dT%H%M%S%fZ")


def sha256File(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _snapshot(source: str, target: str) -> None:
    """
    SQLite's online backup in one read transaction. In WAL mode a reader does
    not block the writer (commits go on appending to the WAL), whereas a copy
    in steps restarts whenever another connection commits: under steady mail
    it might never finish.
    """
    src = sqlite3.connect(source)
    dst = sqlite3.connect(target)
    try:
        src.backup(dst, pages=-1)
    finally:
        dst.close()
        src.close()
    os.chmod(target, 0o600)


def _previousBackup(parent: str) -> tuple[str, dict[str, str]] | None:
    """The newest complete backup in C{parent} and its file checksums."""
    if not os.path.isdir(parent):
        return None
    for name in sorted(os.listdir(parent), reverse=True):
        manifest = os.path.join(parent, name, MANIFEST)
        if name.startswith(NAME_PREFIX) and os.path.exists(manifest):
            with open(manifest) as f:
                return os.path.join(parent, name), json.load(f)["files"]
    return None


def _place(source: str, target: str, linkFirst: bool) -> None:
    os.makedirs(os.path.dirname(target), mode=0o700, exist_ok=True)
    if linkFirst:
        try:
            os.link(source, target)
            return
        except OSError:
            pass  # another filesystem: copy
    shutil.copy2(source, target)


def createBackup(
    dataDir: str,
    dest: str,
    configFile: str | None = None,
    report: Callable[[Progress], None] | None = None,
) -> dict[str, Any]:
    """Write a complete backup at C{dest} (which must not exist); its manifest."""
    dest = os.path.abspath(dest)
    if os.path.exists(dest):
        raise BackupError(f"{dest} exists already; a backup never overwrites")
    if not os.path.exists(databasePath(dataDir)):
        raise BackupError(f"no MailRaven data in {dataDir}")
    parent = os.path.dirname(dest)
    os.makedirs(parent, mode=0o700, exist_ok=True)
    previous = _previousBackup(parent)
    tmp = os.path.join(parent, f".partial-{uuid.uuid4().hex}")
    os.mkdir(tmp, 0o700)
    progress = Progress(report=report)
    try:
        manifest = _fill(dataDir, tmp, previous, configFile, progress)
        _writeManifest(tmp, manifest)
        os.rename(tmp, dest)
        fsyncDirectory(parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def _fill(
    dataDir: str,
    tmp: str,
    previous: tuple[str, dict[str, str]] | None,
    configFile: str | None,
    progress: Progress,
) -> dict[str, Any]:
    files: dict[str, str] = {}
    _snapshot(databasePath(dataDir), os.path.join(tmp, DATABASE))
    conn = sqlite3.connect(os.path.join(tmp, DATABASE))
    try:
        rows = conn.execute("SELECT path, sha256 FROM messages").fetchall()
        users = conn.execute("SELECT count(*) FROM users").fetchone()[0]
        total = conn.execute("SELECT coalesce(sum(size), 0) FROM messages").fetchone()[
            0
        ]
    finally:
        conn.close()
    sameDevice = os.stat(dataDir).st_dev == os.stat(tmp).st_dev
    prevDir, prevFiles = previous if previous else (None, {})
    for relpath, _ in rows:
        target = os.path.join(tmp, relpath)
        if relpath in prevFiles:  # immutable: same name, same bytes
            _place(os.path.join(prevDir, relpath), target, True)
            files[relpath] = prevFiles[relpath]
        else:
            source = os.path.join(dataDir, relpath)
            if not os.path.exists(source):
                raise BackupError(
                    f"message file {relpath} is missing from the data dir"
                )
            _place(source, target, sameDevice)
            files[relpath] = sha256File(target)
        progress.add(os.path.getsize(target))
    for directory in SECRET_DIRS:
        for root, _, names in os.walk(os.path.join(dataDir, directory)):
            for name in names:
                if name.endswith(".tmp"):
                    continue
                relpath = os.path.relpath(os.path.join(root, name), dataDir)
                target = os.path.join(tmp, relpath)
                _place(os.path.join(dataDir, relpath), target, False)
                os.chmod(target, 0o600)
                files[relpath] = sha256File(target)
                progress.add(os.path.getsize(target))
    if configFile:
        shutil.copy2(configFile, os.path.join(tmp, CONFIG))
        os.chmod(os.path.join(tmp, CONFIG), 0o600)
        files[CONFIG] = sha256File(os.path.join(tmp, CONFIG))
    files[DATABASE] = sha256File(os.path.join(tmp, DATABASE))
    return {
        "format_version": FORMAT_VERSION,
        "mailraven_version": __version__,
        "schema_version": SCHEMA_VERSION,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": socket.getfqdn(),
        "counts": {"users": users, "messages": len(rows), "bytes": total},
        "files": files,
    }


def _writeManifest(directory: str, manifest: dict[str, Any]) -> None:
    path = os.path.join(directory, MANIFEST)
    with open(path, "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())


def verifyBackup(directory: str) -> list[str]:
    """Everything wrong with the backup at C{directory}; empty when it is good."""
    path = os.path.join(directory, MANIFEST)
    try:
        with open(path) as f:
            manifest = json.load(f)
        files: dict[str, str] = manifest["files"]
    except (OSError, ValueError, KeyError) as e:
        return [f"manifest: cannot be read ({e})"]
    problems = []
    if manifest.get("format_version") != FORMAT_VERSION:
        problems.append(f"manifest: unknown format {manifest.get('format_version')}")
    if not isinstance(files, dict):
        return problems + ["manifest: files is not an object"]
    for relpath, expected in sorted(files.items()):
        unsafe = unsafePath(directory, relpath)
        if unsafe:
            problems.append(f"{relpath!r}: {unsafe}")
            continue
        full = os.path.join(directory, relpath)
        if not os.path.exists(full):
            problems.append(f"{relpath}: missing")
        elif sha256File(full) != expected:
            problems.append(f"{relpath}: checksum mismatch")
    database = os.path.join(directory, DATABASE)
    if os.path.exists(database) and DATABASE in files:
        problems += _databaseProblems(database, files)
    elif DATABASE not in files:
        problems.append(f"{DATABASE}: not in the manifest")
    return problems


def _databaseProblems(database: str, files: dict[str, str]) -> list[str]:
    try:
        conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
        try:
            result = [r[0] for r in conn.execute("PRAGMA integrity_check")]
            paths = [r[0] for r in conn.execute("SELECT path FROM messages")]
        finally:
            conn.close()
    except sqlite3.DatabaseError as e:
        return [f"{DATABASE}: {e}"]
    problems = [f"{DATABASE}: {line}" for line in result if line != "ok"]
    problems += [
        f"{p}: referenced by the database, not in the backup"
        for p in paths
        if p not in files
    ]
    return problems


def restoreBackup(
    source: str,
    dataDir: str,
    force: bool = False,
    report: Callable[[Progress], None] | None = None,
) -> dict[str, Any]:
    """Verify, then copy the backup into C{dataDir} with private modes."""
    problems = verifyBackup(source)
    if problems:
        raise BackupError("the backup is damaged:\n  " + "\n  ".join(problems[:20]))
    if os.path.isdir(dataDir) and os.listdir(dataDir) and not force:
        raise BackupError(f"{dataDir} is not empty (use --force to restore over it)")
    with open(os.path.join(source, MANIFEST)) as f:
        manifest = json.load(f)
    progress = Progress(report=report)
    os.makedirs(dataDir, mode=0o700, exist_ok=True)
    for stale in ("mailraven.db-wal", "mailraven.db-shm"):
        if os.path.exists(os.path.join(dataDir, stale)):
            os.unlink(os.path.join(dataDir, stale))
    # The operator's data dir may itself be a symlink; nothing below it may.
    root = os.path.realpath(dataDir)
    relpaths = [p for p in manifest["files"] if p != CONFIG]  # the operator's
    for relpath in relpaths:
        linked = _symlinkBelow(root, relpath)
        if linked:
            raise BackupError(f"{linked} is a symlink; restore writes no file there")
    for relpath in relpaths:
        target = os.path.join(root, relpath)
        _privateDirectories(root, os.path.dirname(relpath))
        _copyPrivate(os.path.join(source, relpath), target)
        progress.add(os.path.getsize(target))
    return manifest


def unsafePath(root: str, relpath: Any) -> str | None:
    """
    Why the manifest entry C{relpath} may not be read from the backup at
    C{root} or written below a data dir, or None. Only the names a backup
    writes are taken, relative and normalised, and no part of the path in
    the backup may be a symlink: a crafted manifest (C{../escape.txt},
    C{/etc/passwd}, a C{certs} symlinked elsewhere) must reach nothing
    outside either directory.
    """
    if not isinstance(relpath, str) or not relpath or "\0" in relpath:
        return "not a file name"
    if os.path.isabs(relpath) or os.path.normpath(relpath) != relpath:
        return "not a plain relative path"
    parts = relpath.split(os.sep)
    if ".." in parts:
        return "leaves the backup"
    if relpath not in (DATABASE, CONFIG) and (
        parts[0] not in (MESSAGES, *SECRET_DIRS) or len(parts) < 2
    ):
        return "not a file a backup holds"
    linked = _symlinkBelow(root, relpath)
    return f"{linked} is a symlink" if linked else None


def _symlinkBelow(root: str, relpath: str) -> str | None:
    """The first part of C{root/relpath} (below C{root}) that is a symlink."""
    path = root
    for part in relpath.split(os.sep):
        path = os.path.join(path, part)
        if os.path.islink(path):
            return path
    return None


def _privateDirectories(root: str, relative: str) -> None:
    """Create each missing directory of C{root/relative} 0700 (makedirs gives
    only the last one its mode)."""
    path = root
    for part in relative.split(os.sep) if relative else ():
        path = os.path.join(path, part)
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            continue


def _copyPrivate(source: str, target: str) -> None:
    """Copy a file, mode 0600; neither end may be a symlink (O_NOFOLLOW)."""
    src = os.open(source, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        dst = os.open(
            target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600
        )
        try:
            os.fchmod(dst, 0o600)  # an existing file (--force) keeps its mode
            while chunk := os.read(src, 1 << 20):
                view = memoryview(chunk)
                while view:
                    view = view[os.write(dst, view) :]
        finally:
            os.close(dst)
    finally:
        os.close(src)


def pruneBackups(parent: str, keep: int) -> list[str]:
    """Remove all but the newest C{keep} complete backups; the removed names."""
    names = sorted(
        name
        for name in os.listdir(parent)
        if name.startswith(NAME_PREFIX)
        and os.path.exists(os.path.join(parent, name, MANIFEST))
    )
    doomed = names[: max(0, len(names) - keep)]
    for name in doomed:
        shutil.rmtree(os.path.join(parent, name))
    return doomed

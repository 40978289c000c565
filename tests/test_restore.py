"""Restore: a round trip keeps every kind of file, and a crafted backup
reaches nothing outside the backup or the target data dir."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import stat

from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase

from mailraven.backup import BackupError, createBackup, restoreBackup, verifyBackup
from mailraven.quickstart import createDKIMKey
from mailraven.store.files import readMessageFile
from tests.helpers import RunningServer, sendWithSmtplib
from tests.test_backup import storeWithTwoMessages

SECRET = b"outside the backup\n"
SKIP = ("in/backup", "out/restored")


def tree(root: str, skip: tuple[str, ...] = ()) -> dict[str, tuple[bytes, int]]:
    """Every file below C{root} (not under C{skip}): relpath -> (bytes, mode)."""
    found = {}
    for directory, dirs, names in os.walk(root):
        rel = os.path.relpath(directory, root)
        dirs[:] = [
            d for d in dirs if os.path.normpath(os.path.join(rel, d)) not in skip
        ]
        for name in names:
            path = os.path.join(directory, name)
            with open(path, "rb") as f:
                found[os.path.relpath(path, root)] = (
                    f.read(),
                    stat.S_IMODE(os.lstat(path).st_mode),
                )
    return found


def rows(database: str) -> list[str]:
    conn = sqlite3.connect(database)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


class RoundTripTests(TestCase):
    timeout = 120

    @inlineCallbacks
    def test_everyKindOfFileComesBackWithPrivateModes(self):
        server = RunningServer(self)
        yield server.addUser("alice@example.test")
        _, (code, _) = yield deferToThread(
            sendWithSmtplib,
            server.smtpPort,
            "bob@example.org",
            ["alice@example.test"],
            b"Subject: kept\r\n\r\nround trip\r\n",
            True,  # STARTTLS: the self-signed certificate and key are made
        )
        self.assertEqual(code, 250)
        yield server.stop()
        dataDir = server.dataDir
        createDKIMKey(os.path.join(dataDir, "dkim"), "mailraven202612")
        acme = os.path.join(dataDir, "certs", "acme")
        os.makedirs(acme, 0o700, exist_ok=True)
        with open(os.path.join(acme, "account.key"), "wb") as f:
            f.write(b"an ACME account key\n")
        os.chmod(os.path.join(acme, "account.key"), 0o600)
        config = os.path.join(os.path.abspath(self.mktemp()) + ".toml")
        with open(config, "w") as f:
            f.write(f'[server]\ndata_dir = "{dataDir}"\n')
        # an earlier backup inside the data dir: backups are not backed up
        createBackup(dataDir, os.path.join(dataDir, "backups", "mailraven-old"))

        backup = os.path.abspath(self.mktemp())
        createBackup(dataDir, backup, configFile=config)
        target = os.path.abspath(self.mktemp())
        restoreBackup(backup, target)

        excluded = ("backups", "tmp")
        before = tree(dataDir, excluded)
        after = tree(target)
        kinds = {p.split(os.sep)[0] for p in before}
        self.assertTrue({"messages", "certs", "dkim", "mailraven.db"} <= kinds, kinds)
        self.assertTrue(any(p.endswith(".key") for p in before if "certs" in p))
        # the snapshot of the database is compared by its rows; WAL, shared
        # memory, the writers' lock file and the server's data dir lock are
        # not data
        notData = (
            "lock",
            "mailraven.db",
            "mailraven.db-wal",
            "mailraven.db-shm",
            "mailraven.db-writelock",
        )
        self.assertEqual(
            sorted(p for p in before if p not in notData),
            sorted(p for p in after if p not in notData),
        )
        for relpath, (data, mode) in after.items():
            self.assertEqual(mode, 0o600, relpath)
            if relpath not in notData:
                self.assertEqual(data, before[relpath][0], relpath)
        for relpath, (_, mode) in before.items():
            if relpath.endswith(".key") or relpath.startswith("messages"):
                self.assertEqual(mode, 0o600, f"{relpath} in the data dir")
        for directory, dirs, _ in os.walk(target):
            for name in dirs:
                mode = stat.S_IMODE(os.stat(os.path.join(directory, name)).st_mode)
                self.assertEqual(mode, 0o700, name)
        self.assertEqual(
            rows(os.path.join(target, "mailraven.db")),
            rows(os.path.join(dataDir, "mailraven.db")),
        )
        [relpath] = [p for p in after if p.startswith("messages")]
        self.assertIn(b"round trip", readMessageFile(target, relpath))
        # the configuration is in the backup (0600), not put in the data dir
        with open(config, "rb") as f:
            self.assertEqual(tree(backup)["mailraven.toml"], (f.read(), 0o600))
        self.assertNotIn("mailraven.toml", after)


class CraftedManifestTests(SynchronousTestCase):
    """A manifest is input: its paths may try to leave the backup or target."""

    def setUp(self):
        _, dataDir = storeWithTwoMessages(self.mktemp)
        # Everything lives in one sandbox, so "outside" is checked to be unchanged.
        self.sandbox = os.path.abspath(self.mktemp())
        self.backup = os.path.join(self.sandbox, "in", "backup")
        os.makedirs(os.path.dirname(self.backup))
        createBackup(dataDir, self.backup)
        with open(os.path.join(self.backup, "manifest.json")) as f:
            self.manifest = json.load(f)
        for directory in ("dkim", "certs"):
            os.makedirs(os.path.join(self.backup, directory), exist_ok=True)
        self.outside = os.path.join(self.sandbox, "outside")
        os.makedirs(self.outside)
        with open(os.path.join(self.outside, "secret.key"), "wb") as f:
            f.write(SECRET)
        self.target = os.path.join(self.sandbox, "out", "restored")
        os.makedirs(os.path.dirname(self.target))

    def addEntry(self, relpath: str, sha256: str | None = None) -> None:
        """Name C{relpath} in the manifest, with the checksum it would verify."""
        manifest = json.loads(json.dumps(self.manifest))
        manifest["files"][relpath] = sha256 or hashlib.sha256(SECRET).hexdigest()
        with open(os.path.join(self.backup, "manifest.json"), "w") as f:
            json.dump(manifest, f)

    def assertRefused(self, expected: str, force: bool = False) -> None:
        before = tree(self.sandbox, SKIP)
        targetBefore = tree(self.target) if os.path.exists(self.target) else None
        e = self.assertRaises(
            BackupError, restoreBackup, self.backup, self.target, force
        )
        self.assertIn(expected, str(e))
        self.assertEqual(tree(self.sandbox, SKIP), before)
        after = tree(self.target) if os.path.exists(self.target) else None
        self.assertEqual(after, targetBefore, "restore wrote into the target")

    def test_dotDotLeavesTheTarget(self):
        # the file exists beside the backup with the right checksum, so
        # only the path itself can stop it from landing beside the target
        with open(os.path.join(self.sandbox, "in", "escape.txt"), "wb") as f:
            f.write(SECRET)
        self.addEntry("../escape.txt")
        self.assertRefused("leaves the backup")
        self.assertFalse(
            os.path.exists(os.path.join(self.sandbox, "out", "escape.txt"))
        )
        self.assertIn("'../escape.txt': leaves the backup", verifyBackup(self.backup))

    def test_dotDotInsideAPath(self):
        self.addEntry("messages/../../../outside/secret.key")
        self.assertRefused("not a plain relative path")

    def test_absolutePath(self):
        self.addEntry(os.path.join(self.outside, "secret.key"))
        self.assertRefused("not a plain relative path")

    def test_namesABackupNeverHolds(self):
        for relpath in ("backups/x", "messages", "mailraven.db-wal", ""):
            self.addEntry(relpath)
            self.assertRefused("the backup is damaged")

    def test_symlinkedFileInTheBackup(self):
        os.symlink(
            os.path.join(self.outside, "secret.key"),
            os.path.join(self.backup, "dkim", "stolen.key"),
        )
        self.addEntry("dkim/stolen.key")
        self.assertRefused("is a symlink")

    def test_symlinkedDirectoryInTheBackup(self):
        os.rename(
            os.path.join(self.backup, "certs"), os.path.join(self.sandbox, "certs")
        )
        os.symlink(self.outside, os.path.join(self.backup, "certs"))
        self.addEntry("certs/secret.key")
        self.assertRefused("is a symlink")

    def test_symlinkedDirectoryInTheTarget(self):
        """restore --force onto a data dir whose dkim/ points elsewhere."""
        with open(os.path.join(self.backup, "dkim", "sel.key"), "wb") as f:
            f.write(SECRET)
        self.addEntry("dkim/sel.key")
        os.makedirs(self.target)
        os.symlink(self.outside, os.path.join(self.target, "dkim"))
        self.assertRefused("is a symlink; restore writes no file there", force=True)

    def test_symlinkedFileInTheTarget(self):
        os.makedirs(os.path.join(self.target, "messages"))
        relpath = next(p for p in self.manifest["files"] if p.startswith("messages/"))
        os.makedirs(os.path.dirname(os.path.join(self.target, relpath)), exist_ok=True)
        os.symlink(
            os.path.join(self.outside, "secret.key"), os.path.join(self.target, relpath)
        )
        self.assertRefused("is a symlink", force=True)

    def test_targetItselfMayBeASymlink(self):
        """The operator's data dir path may be a symlink (a volume elsewhere)."""
        real = os.path.join(self.sandbox, "out", "volume")
        os.makedirs(real)
        os.symlink(real, self.target)
        manifest = restoreBackup(self.backup, self.target)
        self.assertEqual(manifest["counts"]["messages"], 2)
        self.assertTrue(os.path.exists(os.path.join(real, "mailraven.db")))

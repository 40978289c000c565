"""Store worker processes: real child processes preparing real messages.

The store contract runs again with every message prepared in a worker (a
file pool that records any use proves none fell back to threads); then the
cases a worker adds: spilled spools handed over, spam verdicts coming back,
a worker dying with a message in flight, workers that cannot start.
"""

from __future__ import annotations

import errno
import fcntl
import os
import sqlite3
import time

from twisted.internet import reactor
from twisted.internet.defer import DeferredList, gatherResults, inlineCallbacks
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from mailraven.envelope import Recipient
from mailraven.policy.scoring import SenderLists, SpamRejected, SpamScorer
from mailraven.spool import Spool, memorySpool
from mailraven.startup import prepareDataDir
from mailraven.store.db import openDatabase
from mailraven.store.files import (
    SpareFiles,
    Syncer,
    newMessageId,
    readMessageFile,
    syncFiles,
    writeMessageFile,
)
from mailraven.store.integrity import LOST_AND_FOUND, checkIntegrity
from mailraven.store.messages import SQLiteMessageStore
from mailraven.store.senderlists import train
from mailraven.store.worker import Preparer, WorkerSettings
from mailraven.store.workers import (
    FILL_BYTES,
    FILL_MESSAGES,
    PIPE_SIZE,
    StoreWorkers,
    WorkerError,
    WorkerLost,
)
from mailraven.testing import RecordingSyncer
from tests.test_store import MESSAGE, MessageStoreContract, SQLiteFixture, envelope


class RecordingPool:
    """A file pool that must not be used: the workers prepare everything."""

    def __init__(self, real):
        self.real, self.used = real, 0

    def callInThread(self, f, *args, **kwargs):
        self.used += 1
        self.real.callInThread(f, *args, **kwargs)


def until(predicate, timeout=30.0, step=0.05):
    """Fires once C{predicate()} is true (fails the test after C{timeout})."""
    deadline = time.monotonic() + timeout

    def check():
        if predicate():
            return None
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        return deferLater(reactor, step, check)

    return deferLater(reactor, 0, check)


class WorkerFixture(SQLiteFixture):
    workerCount = 2
    scorer = None

    def startWorkers(self, count=None, executable=None):
        self.setUpStore()
        settings = WorkerSettings(self.dataDir, self.db.path, 6, self.scorer)
        kwargs = {"executable": executable} if executable else {}
        self.workers = StoreWorkers(
            count or self.workerCount,
            settings,
            reactor,
            onCommit=self.db.reportCommit,
            **kwargs,
        )
        self.workers.startService()
        self.addCleanup(self.workers.stopService)
        self.files = RecordingPool(self.pool)
        self.store = SQLiteMessageStore(
            self.db, self.dataDir, reactor, self.files, 6, self.scorer, self.workers
        )

    def ready(self):
        return until(
            lambda: sum(w.ready for w in self.workers._workers) == self.workers.count
        )


class WorkerStoreContractTests(WorkerFixture, MessageStoreContract, TestCase):
    """Every store promise holds with preparation in worker processes."""

    def setUp(self):
        self.startWorkers()
        self.addCleanup(lambda: self.assertEqual(self.files.used, 0))
        return self.ready()

    def makeStore(self):
        return self.store


class WorkerTests(WorkerFixture, TestCase):
    @inlineCallbacks
    def test_workersAreSeparateProcessesAndStopWithTheService(self):
        self.startWorkers()
        yield self.ready()
        pids = {w.transport.pid for w in self.workers._workers}
        self.assertEqual(len(pids), 2)
        self.assertNotIn(os.getpid(), pids)
        yield self.workers.stopService()
        self.assertEqual(self.workers._workers, [])
        for pid in pids:
            self.assertRaises(ProcessLookupError, os.kill, pid, 0)

    @inlineCallbacks
    def test_theWorkerCommitsTheRowsOfConcurrentMessagesTogether(self):
        self.startWorkers(count=1)
        yield self.ready()
        del self.commits[:]  # the fixture's own writes
        ids = yield gatherResults(
            [
                self.store.deliver(
                    envelope(Recipient("alice@example.test", 1)), memorySpool(MESSAGE)
                )
                for _ in range(40)
            ]
        )
        self.assertEqual(len(set(ids)), 40)
        self.assertEqual(sum(self.commits), 40)
        self.assertLess(len(self.commits), 40, "no two messages shared a commit")
        conn = sqlite3.connect(self.db.path)
        self.assertEqual(
            conn.execute("SELECT count(*) FROM messages").fetchone(), (40,)
        )
        self.assertEqual(
            conn.execute("SELECT count(*) FROM search_docs").fetchone(), (40,)
        )
        self.assertEqual(self.files.used, 0)

    @inlineCallbacks
    def test_aWorkersInputPipeTakesWholeLargeMessages(self):
        self.startWorkers(count=1)
        yield self.ready()
        [worker] = self.workers._workers
        stdin = worker.transport.pipes[0].fileno()
        self.assertEqual(fcntl.fcntl(stdin, fcntl.F_GETPIPE_SZ), PIPE_SIZE)
        big = MESSAGE + b"".join(b"line %d of a long body\r\n" % i for i in range(9000))
        self.assertGreater(len(big), 128 * 1024)
        messageId = yield self.store.deliver(
            envelope(Recipient("alice@example.test", 1)), memorySpool(big)
        )
        self.assertTrue(messageId)

    @inlineCallbacks
    def test_aRowThatFailsInTheWorkerFailsOnlyItsMessageAndLeavesNoFile(self):
        self.startWorkers(count=1)
        yield self.ready()
        good, ghost = yield DeferredList(
            [
                self.store.deliver(
                    envelope(Recipient("alice@example.test", 1)), memorySpool(MESSAGE)
                ),
                # user 99 does not exist: its row fails after its file was written
                self.store.deliver(
                    envelope(Recipient("ghost@example.test", 99)), memorySpool(MESSAGE)
                ),
            ],
            consumeErrors=True,
        )
        self.assertTrue(good[0])
        self.assertFalse(ghost[0])
        ghost[1].trap(WorkerError)
        self.assertIn("IntegrityError", ghost[1].getErrorMessage())
        report = checkIntegrity(openDatabase(self.db.path), self.dataDir)
        self.assertEqual((report.messages, report.orphans, report.damage), (1, [], []))

    @inlineCallbacks
    def test_spilledSpoolIsHandedOverAndRemovedByTheWorker(self):
        self.startWorkers()
        yield self.ready()
        tmp = os.path.join(self.dataDir, "tmp")
        spool = Spool(tmp, reactor, self.pool, memoryLimit=4096)
        big = MESSAGE + b"".join(b"line %d of a long body\r\n" % i for i in range(2000))
        for start in range(0, len(big), 1000):
            spilled = spool.write(big[start : start + 1000])
            if spilled is not None:
                yield spilled
        self.assertIsNotNone(spool.path)
        messageId = yield self.store.deliver(
            envelope(Recipient("alice@example.test", 1)), spool
        )
        self.assertEqual(os.listdir(tmp), [])  # the worker removed the temp file
        path = (
            sqlite3.connect(self.db.path)
            .execute("SELECT path FROM messages WHERE id = ?", (messageId,))
            .fetchone()[0]
        )
        self.assertEqual(readMessageFile(self.dataDir, path), big)
        self.assertEqual(self.files.used, 0)

    @inlineCallbacks
    def test_spamVerdictsComeBackFromTheWorker(self):
        self.scorer = SpamScorer(5.0, 10.0, blocklist=["spam.example"])
        self.startWorkers()
        yield self.ready()
        spam = envelope(Recipient("alice@example.test", 1))
        spam.mailFrom = "x@spam.example"
        failure = yield self.assertFailure(
            self.store.deliver(
                spam, memorySpool(b"From: x@spam.example\r\n\r\nhi\r\n")
            ),
            SpamRejected,
        )
        self.assertGreaterEqual(failure.score, 10.0)
        self.assertIn("SENDER_BLOCKLISTED", failure.rules)
        self.assertEqual(
            sqlite3.connect(self.db.path)
            .execute("SELECT count(*) FROM messages")
            .fetchone()[0],
            0,
        )

    @inlineCallbacks
    def test_trainedListsReachTheWorkersAtOnce(self):
        """The API's training bumps a generation that every request carries."""
        self.scorer = SpamScorer(5.0, 10.0)
        self.startWorkers(count=1)
        self.store.senderLists = SenderLists(lambda: {}, maxAge=3600)
        yield self.ready()
        first = yield self.store.deliver(
            envelope(Recipient("alice@example.test", 1)), memorySpool(MESSAGE)
        )
        yield self.db.write(lambda c: train(c, 1, "bob@example.org", "block"))
        self.store.senderLists.changed()
        second = yield self.store.deliver(
            envelope(Recipient("alice@example.test", 1)), memorySpool(MESSAGE)
        )
        rows = dict(
            sqlite3.connect(self.db.path).execute(
                "SELECT message_id, mailbox FROM mailbox_entries"
            )
        )
        self.assertEqual((rows[first], rows[second]), ("inbox", "junk"))

    @inlineCallbacks
    def test_aWorkerThatDiesFailsOnlyItsMessagesAndIsReplaced(self):
        self.startWorkers(count=1)
        self.workers.restartDelay = 0.1
        yield self.ready()
        [worker] = self.workers._workers
        oldPid = worker.transport.pid
        # A request whose unpickling ends the worker process mid-message.
        lost = self.workers.prepare(("prepare", _Exit()))
        yield self.assertFailure(lost, WorkerLost)
        # Meanwhile nothing waits: mail goes to the file threads...
        messageId = yield self.store.deliver(
            envelope(Recipient("alice@example.test", 1)), memorySpool(MESSAGE)
        )
        self.assertTrue(messageId)
        # ...and a new worker takes over.
        yield self.ready()
        [replacement] = self.workers._workers
        self.assertNotEqual(replacement.transport.pid, oldPid)
        self.assertEqual(
            self.workers.health(),
            {"status": "ok", "configured": 1, "ready": 1, "ended_unexpectedly": 1},
        )
        used = self.files.used
        yield self.store.deliver(
            envelope(Recipient("alice@example.test", 1)), memorySpool(MESSAGE)
        )
        self.assertEqual(self.files.used, used)

    @inlineCallbacks
    def test_workersThatCannotStartLeaveMailToTheThreads(self):
        self.startWorkers(count=1, executable="/bin/false")
        self.workers.restartDelay = 0.05
        yield until(lambda: self.workers.gaveUp)
        self.assertFalse(self.workers.available())
        self.assertEqual(
            self.workers.health(),
            {
                "status": "degraded",
                "configured": 1,
                "ready": 0,
                "ended_unexpectedly": 3,
            },
        )
        messageId = yield self.store.deliver(
            envelope(Recipient("alice@example.test", 1)), memorySpool(MESSAGE)
        )
        self.assertTrue(messageId)
        self.assertEqual(self.files.used, 1)
        # No more tries: no worker is left to end, and no restart is pending
        # (a retry can only come from one of the two).
        self.assertEqual(self.workers._workers, [])
        self.assertEqual([c for c in self.workers._restarts if c.active()], [])

    @inlineCallbacks
    def test_stopWaitsForMessagesInFlight(self):
        self.startWorkers(count=1)
        yield self.ready()
        delivered = self.store.deliver(
            envelope(Recipient("alice@example.test", 1)), memorySpool(MESSAGE)
        )
        stopped = self.workers.stopService()
        messageId = yield delivered
        yield stopped
        self.assertTrue(messageId)
        self.assertEqual(self.files.used, 0)


class BatchChoiceTests(WorkerFixture, TestCase):
    """Which worker a message goes to (the group commits' size)."""

    workerCount = 2

    def deliverAll(self, body, count):
        return gatherResults(
            [
                self.store.deliver(
                    envelope(Recipient("alice@example.test", 1)), memorySpool(body)
                )
                for _ in range(count)
            ]
        )

    def pending(self):
        return [len(w.pending) for w in self.workers._workers]

    @inlineCallbacks
    def test_smallMessagesFillOneWorkersBatchBeforeTheNext(self):
        self.startWorkers()
        yield self.ready()
        delivered = self.deliverAll(MESSAGE, FILL_MESSAGES + 2)
        self.assertEqual(self.pending(), [FILL_MESSAGES, 2])
        self.assertEqual(len(set((yield delivered))), FILL_MESSAGES + 2)
        self.assertEqual(self.pending(), [0, 0])
        self.assertEqual(self.workers._workers[0].sizes, {})

    @inlineCallbacks
    def test_largeMessagesSpreadAtOnce(self):
        self.startWorkers()
        yield self.ready()
        large = MESSAGE + (b"x" * 70 + b"\r\n") * (FILL_BYTES // 144)  # > half
        delivered = self.deliverAll(large, 3)
        self.assertEqual(self.pending(), [2, 1])  # the third: the least busy
        self.assertEqual(len(set((yield delivered))), 3)


class FailingFile(Syncer):
    """The C{failing}th message file's sync fails (EIO); the others sync."""

    def __init__(self, failing: int) -> None:
        self.failing = failing
        self.files = 0

    def file(self, fd: int) -> None:
        self.files += 1
        if self.files == self.failing:
            raise OSError(errno.EIO, "disk gone")
        super().file(fd)


class LockWatch(Syncer):
    """Notes, at each message file's sync, whether the writers' lock is held."""

    def __init__(self, dbPath: str) -> None:
        self.dbPath = dbPath
        self.locked: list[bool] = []

    def file(self, fd: int) -> None:
        probe = os.open(self.dbPath + "-writelock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self.locked.append(False)
        except BlockingIOError:
            self.locked.append(True)
        finally:
            os.close(probe)
        super().file(fd)


class BatchDurabilityTests(SQLiteFixture, TestCase):
    """A worker's batch is fdatasynced together; a failure fails the batch."""

    def preparer(self):
        self.setUpStore()
        return Preparer(WorkerSettings(self.dataDir, self.db.path, 6, None))

    def request(self, rid, alone=True):
        return (
            "prepare",
            rid,
            0,
            envelope(Recipient("alice@example.test", 1)),
            None,
            MESSAGE,
            alone,
        )

    def test_aBatchIsCommittedAfterItsFilesAreSynced(self):
        preparer = self.preparer()
        answers = preparer.handle([self.request(1), self.request(2)])
        self.assertEqual(answers[0][0], "commit")
        self.assertEqual([a[0] for a in answers[1:]], ["ok", "ok"])
        report = checkIntegrity(openDatabase(self.db.path), self.dataDir)
        self.assertEqual((report.messages, report.orphans, report.damage), (2, [], []))

    def test_aFileThatCannotBeSyncedFailsItsWholeBatchAndLeavesNoFile(self):
        self.setUpStore()
        preparer = Preparer(
            WorkerSettings(self.dataDir, self.db.path, 6, None, FailingFile(2))
        )
        answers = preparer.handle([self.request(1), self.request(2)])
        self.assertEqual([a[0] for a in answers], ["error", "error"])  # no commit
        self.assertIn("disk gone", answers[0][2])
        report = checkIntegrity(openDatabase(self.db.path), self.dataDir)
        self.assertEqual((report.messages, report.orphans, report.damage), (0, [], []))

    def test_aLoneFileThatCannotBeSyncedRollsItsRowsBack(self):
        """A lone message syncs on the sync thread while its rows go in."""
        self.setUpStore()
        preparer = Preparer(
            WorkerSettings(self.dataDir, self.db.path, 6, None, FailingFile(1))
        )
        answers = preparer.handle([self.request(1)])
        self.assertEqual((answers[0][0], answers[1][0]), ("commit", "error"))
        self.assertIn("disk gone", answers[1][2])
        report = checkIntegrity(openDatabase(self.db.path), self.dataDir)
        self.assertEqual((report.messages, report.orphans, report.damage), (0, [], []))

    @inlineCallbacks
    def lockHeldAtFileSync(self, alone: bool):
        self.setUpStore()
        # the fixture's writes run on the database's writer thread, one after
        # the other: once this one is done, none of them holds the lock
        yield self.db.write(lambda c: None)
        watch = LockWatch(self.db.path)
        preparer = Preparer(WorkerSettings(self.dataDir, self.db.path, 6, None, watch))
        answers = preparer.handle([self.request(1, alone)])
        self.assertEqual(answers[1][0], "ok")
        return watch.locked

    @inlineCallbacks
    def test_aMessageAloneSyncsItsFileAfterItsRowsUnderTheLock(self):
        locked = yield self.lockHeldAtFileSync(alone=True)
        self.assertEqual(locked, [True])

    @inlineCallbacks
    def test_aMessageNotAloneSyncsItsFileBeforeTakingTheLock(self):
        """Other workers' commits do not wait for this file's sync."""
        locked = yield self.lockHeldAtFileSync(alone=False)
        self.assertEqual(locked, [False])

    def test_syncFilesSyncsEveryFileOrRaises(self):
        root = os.path.abspath(self.mktemp())
        os.makedirs(root)
        paths = []
        for _ in range(3):
            stored = writeMessageFile(root, newMessageId(), MESSAGE, 6, sync=False)
            paths.append(stored.relpath)
        syncFiles(root, paths)
        self.assertEqual([readMessageFile(root, p) for p in paths], [MESSAGE] * 3)
        self.assertRaises(FileNotFoundError, syncFiles, root, paths + ["missing"])


class SpareFileTests(SQLiteFixture, TestCase):
    """
    A worker writes mail into spare files, empty files whose directory
    entries were synced when they were made: the commit waits for the file's
    data only. Spares hold no mail: removed at close and after a crash.
    """

    def handleOne(self, count: int) -> tuple[str, list[list[str]]]:
        """One message through a worker with C{count} spares: its id and
        the sync log, each line split in words."""
        log = os.path.abspath(self.mktemp())
        self.setUpStore()
        settings = WorkerSettings(
            self.dataDir, self.db.path, 6, None, RecordingSyncer(log)
        )
        preparer = Preparer(settings)
        preparer.spares = SpareFiles(self.dataDir, settings.syncer, count)
        preparer.spares.make()
        answers = preparer.handle([BatchDurabilityTests.request(self, 1)])
        self.assertEqual(answers[1][0], "ok")
        preparer.spares.close()
        with open(log) as f:
            return answers[1][2], [line.split() for line in f.read().splitlines()]

    def steps(self, lines: list[list[str]], messageId: str) -> list[str]:
        name = f"{messageId}.eml.gz"
        return [
            words[1]
            for words in lines
            if words[1] == "commit"
            or (words[1] == "file" and words[2].endswith(name))
            or (words[1] == "directory" and name in words[3:])
        ]

    def test_aMessageGoesIntoASpareWhoseEntryWasSyncedBeforeIt(self):
        messageId, lines = self.handleOne(4)
        self.assertEqual(self.steps(lines, messageId), ["directory", "file", "commit"])
        fileAt = [w[1] for w in lines].index("file")
        self.assertEqual([w[1] for w in lines[fileAt:]], ["file", "commit"])

    def test_withoutASpareTheDirectoryIsSyncedAfterTheFile(self):
        messageId, lines = self.handleOne(0)
        self.assertEqual(self.steps(lines, messageId), ["file", "directory", "commit"])

    def test_sparesAreEmptyAndRemovedAtCloseOrAtStartAfterACrash(self):
        self.setUpStore()
        spares = SpareFiles(self.dataDir, count=4)
        spares.make()
        report = checkIntegrity(openDatabase(self.db.path), self.dataDir)
        self.assertEqual((len(report.spares), report.orphans), (4, []))
        paths = [os.path.join(self.dataDir, p) for p in report.spares]
        self.assertEqual({os.path.getsize(p) for p in paths}, {0})
        spares.close()
        self.assertEqual([p for p in paths if os.path.exists(p)], [])

        crashed = SpareFiles(self.dataDir, count=2)
        crashed.make()  # and never closed: the worker was killed
        orphan = writeMessageFile(self.dataDir, newMessageId(), MESSAGE, 6)
        prepareDataDir(self.dataDir)
        report = checkIntegrity(openDatabase(self.db.path), self.dataDir)
        self.assertEqual((report.spares, report.orphans), ([], []))
        lostAndFound = os.listdir(os.path.join(self.dataDir, LOST_AND_FOUND))
        self.assertEqual(lostAndFound, [os.path.basename(orphan.relpath)])


class _Exit:
    """Unpickles as a call that ends the process at once."""

    def __reduce__(self):
        return (os._exit, (3,))

"""The store contract, run against the SQLite adapter and the in-memory fake."""

from __future__ import annotations

import base64
import gzip
import hashlib
import os
import sqlite3
import uuid
import zlib

from scramp import ScramClient, ScramException, ScramMechanism
from twisted.internet import reactor
from twisted.internet.defer import gatherResults, inlineCallbacks
from twisted.python.threadpool import ThreadPool
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from mailraven.envelope import Envelope, Recipient
from mailraven.interfaces import IAliasStore, IDomainStore, IMessageStore, IUserStore
from mailraven.spool import Spool, memorySpool
from mailraven.startup import ensureLayout
from mailraven.store.aliases import AliasIsAccount, SQLiteAliasStore, UnknownMember
from mailraven.store.db import Database, openDatabase
from mailraven.store.domains import (
    BadDomain,
    DomainExists,
    DomainInUse,
    SQLiteDomainStore,
)
from mailraven.store.files import (
    isalLevel,
    newMessageId,
    readMessageFile,
    relativePath,
    writeMessageFile,
)
from mailraven.store.integrity import checkIntegrity
from mailraven.store.messages import SQLiteMessageStore
from mailraven.store.users import BadAddress, SQLiteUserStore, UserExists
from mailraven.testing import (
    MemoryAliasStore,
    MemoryDomainStore,
    MemoryMessageStore,
    MemoryUserStore,
)

MESSAGE = (
    b"From: Bob <bob@example.org>\r\n"
    b"To: alice@example.test\r\n"
    b"Subject: Lunch\r\n"
    b"Message-ID: <lunch-1@example.org>\r\n"
    b"Date: Wed, 25 Nov 2026 12:00:00 +0000\r\n"
    b"\r\n"
    b"Shall we meet at noon?\r\n"
)


def envelope(*recipients: Recipient) -> Envelope:
    return Envelope(
        mailFrom="bob@example.org",
        helo="client",
        peerIP="127.0.0.1",
        recipients=list(recipients),
    )


class MessageStoreContract:
    """What every IMessageStore must do. Subclasses define makeStore()."""

    def test_providesInterface(self):
        self.assertTrue(verifyObject(IMessageStore, self.makeStore()))

    @inlineCallbacks
    def test_deliverThenEachRecipientSeesTheMessage(self):
        store = self.makeStore()
        yield store.deliver(
            envelope(
                Recipient("alice@example.test", 1), Recipient("carol@example.test", 2)
            ),
            memorySpool(MESSAGE),
        )
        for userId, address in ((1, "alice@example.test"), (2, "carol@example.test")):
            [entry] = yield store.list(userId, "inbox", 10, 0)
            self.assertEqual(entry["recipient"], address)
            self.assertFalse(entry["read_state"])
            full = yield store.get(entry["id"], userId)
            self.assertEqual(full["raw"], MESSAGE)

    @inlineCallbacks
    def test_anotherUsersEntryIsInvisible(self):
        store = self.makeStore()
        yield store.deliver(
            envelope(Recipient("alice@example.test", 1)), memorySpool(MESSAGE)
        )
        [entry] = yield store.list(1, "inbox", 10, 0)
        self.assertIsNone((yield store.get(entry["id"], 2)))
        self.assertFalse(
            (yield store.updateFlags(entry["id"], 2, {"read_state": True}))
        )

    @inlineCallbacks
    def test_listIsNewestFirstAndPages(self):
        store = self.makeStore()
        ids = []
        for _ in range(3):
            yield store.deliver(
                envelope(Recipient("alice@example.test", 1)), memorySpool(MESSAGE)
            )
            [newest] = yield store.list(1, "inbox", 1, 0)
            ids.append(newest["id"])
        listed = yield store.list(1, "inbox", 10, 0)
        self.assertEqual([e["id"] for e in listed], ids[::-1])
        second = yield store.list(1, "inbox", 1, 1)
        self.assertEqual([e["id"] for e in second], [ids[1]])

    @inlineCallbacks
    def test_flagsAndDelete(self):
        store = self.makeStore()
        yield store.deliver(
            envelope(Recipient("alice@example.test", 1)), memorySpool(MESSAGE)
        )
        [entry] = yield store.list(1, "inbox", 10, 0)
        self.assertTrue((yield store.updateFlags(entry["id"], 1, {"read_state": True})))
        self.assertTrue((yield store.get(entry["id"], 1))["read_state"])
        self.assertTrue((yield store.delete(entry["id"], 1)))
        self.assertEqual((yield store.list(1, "inbox", 10, 0)), [])
        [trashed] = yield store.list(1, "trash", 10, 0)
        self.assertEqual(trashed["id"], entry["id"])

    def test_unknownFlagIsRefused(self):
        store = self.makeStore()
        self.assertRaises(ValueError, store.updateFlags, "x", 1, {"mailbox": "nowhere"})
        self.assertRaises(ValueError, store.updateFlags, "x", 1, {"evil = 1; --": 1})


class UserStoreContract:
    def test_providesInterface(self):
        self.assertTrue(verifyObject(IUserStore, self.makeUsers()))

    @inlineCallbacks
    def test_addLookupCaseInsensitive(self):
        users = self.makeUsers()
        userId = yield users.add("Alice@Example.TEST", "pw")
        self.assertEqual((yield users.lookup("alice@example.test")), userId)
        self.assertEqual((yield users.lookup("ALICE@EXAMPLE.TEST")), userId)
        self.assertIsNone((yield users.lookup("bob@example.test")))
        self.assertIn("example.test", (yield users.domains()))
        self.assertEqual((yield users.directory()), {"alice@example.test": userId})

    @inlineCallbacks
    def test_adminsOldestFirst(self):
        users = self.makeUsers()
        self.assertEqual((yield users.admins()), [])
        yield users.add("alice@example.test", "pw")
        carol = yield users.add("carol@example.test", "pw", admin=True)
        bob = yield users.add("bob@example.test", "pw", admin=True)
        self.assertEqual((yield users.admins()), [carol, bob])
        yield users.remove("carol@example.test")
        self.assertEqual((yield users.admins()), [bob])

    @inlineCallbacks
    def test_duplicateRefused(self):
        users = self.makeUsers()
        yield users.add("alice@example.test", "pw")
        yield self.assertFailure(users.add("ALICE@example.test", "pw2"), UserExists)

    @inlineCallbacks
    def test_authenticateAndChangePassword(self):
        users = self.makeUsers()
        userId = yield users.add("alice@example.test", "old")
        self.assertEqual(
            (yield users.authenticate("alice@example.test", "old")), userId
        )
        self.assertIsNone((yield users.authenticate("alice@example.test", "wrong")))
        self.assertTrue((yield users.setPassword("alice@example.test", "new")))
        self.assertIsNone((yield users.authenticate("alice@example.test", "old")))
        self.assertEqual(
            (yield users.authenticate("alice@example.test", "new")), userId
        )

    @inlineCallbacks
    def test_scramVerifierFollowsThePassword(self):
        users = self.makeUsers()
        yield users.add("alice@example.test", "old")
        self.assertIsNone((yield users.scramCredentials("bob@example.test")))

        def proves(credentials, password: str) -> bool:
            mechanism = ScramMechanism("SCRAM-SHA-256")
            server = mechanism.make_server(lambda username: credentials)
            client = ScramClient(["SCRAM-SHA-256"], "alice@example.test", password)
            server.set_client_first(client.get_client_first())
            client.set_server_first(server.get_server_first())
            try:
                server.set_client_final(client.get_client_final())
            except ScramException:
                return False
            return True

        old = yield users.scramCredentials("Alice@example.test")
        self.assertTrue(proves(old, "old"))
        self.assertFalse(proves(old, "wrong"))
        yield users.setPassword("alice@example.test", "new")
        new = yield users.scramCredentials("alice@example.test")
        self.assertTrue(proves(new, "new"))
        self.assertFalse(proves(new, "old"))

    @inlineCallbacks
    def test_remove(self):
        users = self.makeUsers()
        yield users.add("alice@example.test", "pw")
        self.assertTrue((yield users.remove("alice@example.test")))
        self.assertFalse((yield users.remove("alice@example.test")))
        self.assertEqual((yield users.listUsers()), [])


class AliasStoreContract:
    """C{makeStores()} -> (IUserStore, IAliasStore over those accounts)."""

    @inlineCallbacks
    def setUpAccounts(self):
        self.users, self.aliases = self.makeStores()
        self.alice = yield self.users.add("alice@example.test", "pw")
        self.bob = yield self.users.add("bob@example.test", "pw")

    def test_providesInterface(self):
        self.assertTrue(verifyObject(IAliasStore, self.makeStores()[1]))

    @inlineCallbacks
    def test_aliasToTwoAccounts(self):
        yield self.setUpAccounts()
        address = yield self.aliases.add(
            "Sales@Example.TEST", ["alice@example.test", "BOB@example.test"]
        )
        self.assertEqual(address, "Sales@example.test")
        again = yield self.aliases.add("sales@example.test", ["bob@example.test"])
        self.assertEqual(again, "Sales@example.test")
        self.assertEqual(
            (yield self.aliases.directory()),
            {"sales@example.test": [self.alice, self.bob]},
        )
        listed = yield self.aliases.list()
        self.assertEqual(list(listed), ["Sales@example.test"])
        self.assertEqual(
            [m.lower() for m in listed["Sales@example.test"]],
            ["alice@example.test", "bob@example.test"],
        )

    @inlineCallbacks
    def test_catchAllIsTheDomainAlone(self):
        yield self.setUpAccounts()
        address = yield self.aliases.add("@Example.TEST", ["alice@example.test"])
        self.assertEqual(address, "@example.test")
        self.assertEqual(
            (yield self.aliases.directory()), {"@example.test": [self.alice]}
        )

    @inlineCallbacks
    def test_externalOrUnknownMemberAddsNothing(self):
        yield self.setUpAccounts()
        for members in (
            ["alice@example.test", "someone@elsewhere.org"],
            ["nobody@example.test"],
            [],
        ):
            yield self.assertFailure(
                self.aliases.add("sales@example.test", members), UnknownMember
            )
        self.assertEqual((yield self.aliases.directory()), {})

    @inlineCallbacks
    def test_accountAddressOrBadAddressIsNoAlias(self):
        yield self.setUpAccounts()
        yield self.assertFailure(
            self.aliases.add("Alice@example.test", ["bob@example.test"]),
            AliasIsAccount,
        )
        yield self.assertFailure(
            self.aliases.add("not an address", ["bob@example.test"]), BadAddress
        )

    @inlineCallbacks
    def test_removeAliasAndRemovedAccounts(self):
        yield self.setUpAccounts()
        yield self.aliases.add("sales@example.test", ["alice@example.test"])
        yield self.aliases.add(
            "team@example.test", ["alice@example.test", "bob@example.test"]
        )
        yield self.users.remove("alice@example.test")
        self.assertEqual(
            (yield self.aliases.directory()), {"team@example.test": [self.bob]}
        )
        self.assertTrue((yield self.aliases.remove("TEAM@example.test")))
        self.assertFalse((yield self.aliases.remove("team@example.test")))
        self.assertEqual((yield self.aliases.list()), {})

    @inlineCallbacks
    def test_removeOneMember(self):
        """Found by a new operator: only the whole alias could go."""
        yield self.setUpAccounts()
        yield self.aliases.add(
            "team@example.test", ["alice@example.test", "bob@example.test"]
        )
        self.assertTrue(
            (yield self.aliases.remove("team@example.test", ["Bob@example.test"]))
        )
        self.assertFalse(
            (yield self.aliases.remove("team@example.test", ["bob@example.test"]))
        )
        self.assertEqual(
            (yield self.aliases.directory()), {"team@example.test": [self.alice]}
        )
        self.assertTrue(
            (yield self.aliases.remove("team@example.test", ["alice@example.test"]))
        )
        self.assertEqual((yield self.aliases.directory()), {})


class MemoryAliasStoreTests(AliasStoreContract, TestCase):
    def makeStores(self):
        users = MemoryUserStore()
        return users, MemoryAliasStore(users)


class MemoryStoreTests(MessageStoreContract, TestCase):
    def makeStore(self):
        return MemoryMessageStore()


class MemoryUserStoreTests(UserStoreContract, TestCase):
    def makeUsers(self):
        return MemoryUserStore()


class SQLiteFixture:
    """A real Database + file pool in a temp data dir, stopped after the test."""

    def setUpStore(self):
        self.dataDir = os.path.abspath(self.mktemp())
        ensureLayout(self.dataDir)
        self.commits = []
        self.db = Database(
            os.path.join(self.dataDir, "mailraven.db"),
            reactor,
            onCommit=lambda s, n: self.commits.append(n),
        )
        self.db.startService()
        self.addCleanup(self.db.stopService)
        self.pool = ThreadPool(1, 4, name="test-files")
        self.pool.start()
        self.addCleanup(self.pool.stop)
        # users 1 and 2 exist: mailbox entries reference them
        for email in ("alice@example.test", "carol@example.test"):
            self.db.write(
                lambda c, e=email: c.execute(
                    "INSERT INTO users (email, password_hash, created_at)"
                    " VALUES (?, 'x', 'now')",
                    (e,),
                )
            )

    def sqliteStore(self):
        if not hasattr(self, "db"):
            self.setUpStore()
        return SQLiteMessageStore(self.db, self.dataDir, reactor, self.pool)


class SQLiteStoreTests(SQLiteFixture, MessageStoreContract, TestCase):
    def makeStore(self):
        return self.sqliteStore()

    @inlineCallbacks
    def test_fileIsGzipWithPrivateModeAndRowMatches(self):
        store = self.makeStore()
        messageId = yield store.deliver(
            envelope(Recipient("alice@example.test", 1)), memorySpool(MESSAGE)
        )
        conn = sqlite3.connect(os.path.join(self.dataDir, "mailraven.db"))
        path, size, subject, header_from, message_id, snippet = conn.execute(
            "SELECT path, size, subject, header_from, message_id, snippet"
            " FROM messages WHERE id = ?",
            (messageId,),
        ).fetchone()
        full = os.path.join(self.dataDir, path)
        self.assertEqual(
            path, f"messages/{messageId[6:8]}/{messageId[9:11]}/{messageId}.eml.gz"
        )
        self.assertEqual(uuid.UUID(messageId).version, 7)
        self.assertEqual(os.stat(full).st_mode & 0o777, 0o600)
        with gzip.open(full) as f:
            self.assertEqual(f.read(), MESSAGE)
        self.assertEqual(
            (size, subject, header_from, message_id, snippet),
            (
                len(MESSAGE),
                "Lunch",
                "Bob <bob@example.org>",
                "<lunch-1@example.org>",
                "Shall we meet at noon?",
            ),
        )

    @inlineCallbacks
    def test_concurrentDeliveriesShareCommits(self):
        store = self.makeStore()
        yield store.deliver(
            envelope(Recipient("alice@example.test", 1)), memorySpool(MESSAGE)
        )
        del self.commits[:]
        ids = yield gatherResults(
            [
                store.deliver(
                    envelope(Recipient("alice@example.test", 1)), memorySpool(MESSAGE)
                )
                for _ in range(40)
            ]
        )
        self.assertEqual(len(set(ids)), 40)
        self.assertEqual(sum(self.commits), 40)
        self.assertLess(len(self.commits), 40, "no two messages shared a commit")

    @inlineCallbacks
    def test_malformedMimeIsStoredWithBestEffortMetadata(self):
        store = self.makeStore()
        broken = (
            b"Subject: =?utf-8?B?broken\r\nContent-Type: multipart/mixed;"
            b" boundary=\r\nFrom: \xff\xfe<<>>\r\n\r\n--\r\n\x00\x01 body\r\n"
        )
        messageId = yield store.deliver(
            envelope(Recipient("alice@example.test", 1)), memorySpool(broken)
        )
        [entry] = yield store.list(1, "inbox", 10, 0)
        full = yield store.get(entry["id"], 1)
        self.assertEqual(full["raw"], broken)
        self.assertEqual(full["file_id"], messageId)

    @inlineCallbacks
    def test_failedCommitLeavesNoFile(self):
        store = self.makeStore()
        # user 99 does not exist: the foreign key fails the row, after the file
        # was written; the file must go again.
        yield self.assertFailure(
            store.deliver(
                envelope(Recipient("ghost@example.test", 99)), memorySpool(MESSAGE)
            ),
            sqlite3.IntegrityError,
        )
        conn = openDatabase(os.path.join(self.dataDir, "mailraven.db"))
        report = checkIntegrity(conn, self.dataDir)
        self.assertEqual((report.messages, report.orphans, report.damage), (0, [], []))

    @inlineCallbacks
    def test_largeMessageSpillsToDiskAndIsStoredWhole(self):
        store = self.makeStore()
        spool = Spool(
            os.path.join(self.dataDir, "tmp"), reactor, self.pool, memoryLimit=64 * 1024
        )
        body = b"".join(b"line %06d of a long message\r\n" % i for i in range(20000))
        spilled = [spool.write(body[i : i + 8192]) for i in range(0, len(body), 8192)]
        self.assertTrue(any(d is not None for d in spilled))
        yield store.deliver(envelope(Recipient("alice@example.test", 1)), spool)
        [entry] = yield store.list(1, "inbox", 10, 0)
        self.assertEqual((yield store.get(entry["id"], 1))["raw"], body)
        self.assertEqual(os.listdir(os.path.join(self.dataDir, "tmp")), [])


class CompressionTests(SynchronousTestCase):
    def test_filesAreGzipThatZlibReadsBack(self):
        attachment = base64.encodebytes(os.urandom(60000))
        text = b"Dear team, the minutes of today's meeting follow.\r\n" * 1500
        root = os.path.abspath(self.mktemp())
        os.makedirs(root)
        sizes = {}
        for raw, level in ((MESSAGE + attachment, 6), (text, 1), (text, 9)):
            messageId = newMessageId()
            stored = writeMessageFile(root, messageId, raw, level)
            with open(os.path.join(root, stored.relpath), "rb") as f:
                data = f.read()
            self.assertEqual(data[:2], b"\x1f\x8b")  # a gzip member
            self.assertEqual(zlib.decompress(data, 31), raw)
            self.assertEqual(readMessageFile(root, stored.relpath), raw)
            self.assertEqual(stored.sha256, hashlib.sha256(raw).hexdigest())
            self.assertEqual(stored.storedSize, len(data))
            sizes[raw[:4], level] = stored.storedSize / len(raw)
        # base64 of random bytes still gains what Huffman coding gives (3/4)
        self.assertLess(sizes[MESSAGE[:4], 6], 0.8)
        self.assertLess(sizes[text[:4], 1], 0.1)
        self.assertLessEqual(sizes[text[:4], 9], sizes[text[:4], 1])

    def test_configuredLevelsMapOntoIsal(self):
        self.assertEqual(
            [isalLevel(n) for n in range(1, 10)], [1] * 3 + [2] * 3 + [3] * 3
        )


class MailboxCountTests(SQLiteFixture, TestCase):
    @inlineCallbacks
    def test_countsFollowArrivalsReadsAndMoves(self):
        store = self.sqliteStore()
        for _ in range(3):
            yield store.deliver(
                envelope(Recipient("alice@example.test", 1)), memorySpool(MESSAGE)
            )
        entries = yield store.list(1, "inbox", 10, 0)
        yield store.updateFlags(entries[0]["id"], 1, {"read_state": True})
        yield store.updateFlags(entries[0]["id"], 1, {"read_state": True})
        yield store.delete(entries[1]["id"], 1)

        def counts(conn):
            return dict(
                (
                    (m, (t, u))
                    for m, t, u in conn.execute(
                        "SELECT mailbox, total, unread FROM mailbox_counts"
                        " WHERE user_id = 1"
                    )
                )
            )

        self.assertEqual(
            (yield self.db.read(counts)), {"inbox": (2, 1), "trash": (1, 1)}
        )


class MessageIdTests(SynchronousTestCase):
    def test_idsSortByTimeAndShareDirectoriesWithinAWindow(self):
        ids = [newMessageId() for _ in range(50)]
        self.assertEqual(len(set(ids)), 50)
        self.assertEqual(sorted(ids, key=lambda i: i[:13]), ids)
        self.assertLessEqual(len({os.path.dirname(relativePath(i)) for i in ids}), 2)


class SQLiteAliasStoreTests(AliasStoreContract, TestCase):
    def makeStores(self):
        if not hasattr(self, "db"):
            dataDir = os.path.abspath(self.mktemp())
            ensureLayout(dataDir)
            self.db = Database(os.path.join(dataDir, "mailraven.db"), reactor)
            self.db.startService()
            self.addCleanup(self.db.stopService)
        return SQLiteUserStore(self.db), SQLiteAliasStore(self.db)


class SQLiteUserStoreTests(SQLiteFixture, UserStoreContract, TestCase):
    def makeUsers(self):
        self.dataDir = os.path.abspath(self.mktemp())
        ensureLayout(self.dataDir)
        self.db = Database(os.path.join(self.dataDir, "mailraven.db"), reactor)
        self.db.startService()
        self.addCleanup(self.db.stopService)
        return SQLiteUserStore(self.db)


class DomainStoreContract:
    """C{makeStores()} -> (IUserStore, IAliasStore, IDomainStore over them)."""

    def setUpStores(self):
        self.users, self.aliases, self.domains = self.makeStores()

    def test_providesInterface(self):
        self.assertTrue(verifyObject(IDomainStore, self.makeStores()[2]))

    @inlineCallbacks
    def test_addListRemove(self):
        self.setUpStores()
        added = yield self.domains.add("Shop.Example.", "mailraven202612")
        self.assertEqual(
            (added.name, added.selector), ("shop.example", "mailraven202612")
        )
        yield self.domains.add("b.example", "sel2")
        listed = yield self.domains.list()
        self.assertEqual([d.name for d in listed], ["b.example", "shop.example"])
        self.assertEqual(
            (yield self.domains.names()), frozenset({"b.example", "shop.example"})
        )
        self.assertTrue((yield self.domains.remove("SHOP.example")))
        self.assertFalse((yield self.domains.remove("shop.example")))
        self.assertEqual((yield self.domains.names()), frozenset({"b.example"}))

    @inlineCallbacks
    def test_duplicateOrBadNameAddsNothing(self):
        self.setUpStores()
        yield self.domains.add("shop.example", "s1")
        yield self.assertFailure(self.domains.add("SHOP.example", "s2"), DomainExists)
        for bad in ("no spaces.example", "-lead.example", "x@y.example", "single"):
            yield self.assertFailure(self.domains.add(bad, "s"), BadDomain)
        listed = yield self.domains.list()
        self.assertEqual(
            [(d.name, d.selector) for d in listed], [("shop.example", "s1")]
        )

    @inlineCallbacks
    def test_removeRefusedWhileAccountsOrAliasesExist(self):
        self.setUpStores()
        yield self.domains.add("shop.example", "s1")
        yield self.users.add("alice@Shop.example", "pw")
        yield self.users.add("bob@shop.example", "pw")
        yield self.users.add("carol@other.example", "pw")
        yield self.aliases.add("@shop.example", ["alice@shop.example"])
        refused = yield self.assertFailure(
            self.domains.remove("shop.example"), DomainInUse
        )
        self.assertEqual((refused.accounts, refused.aliases), (2, 1))
        self.assertIn("2 account(s) and 1 alias(es)", str(refused))
        yield self.users.remove("alice@shop.example")
        yield self.users.remove("bob@shop.example")
        self.assertTrue((yield self.domains.remove("shop.example")))


class MemoryDomainStoreTests(DomainStoreContract, TestCase):
    def makeStores(self):
        users = MemoryUserStore()
        aliases = MemoryAliasStore(users)
        return users, aliases, MemoryDomainStore(users, aliases)


class SQLiteDomainStoreTests(DomainStoreContract, TestCase):
    def makeStores(self):
        dataDir = os.path.abspath(self.mktemp())
        ensureLayout(dataDir)
        db = Database(os.path.join(dataDir, "mailraven.db"), reactor)
        db.startService()
        self.addCleanup(db.stopService)
        return SQLiteUserStore(db), SQLiteAliasStore(db), SQLiteDomainStore(db)

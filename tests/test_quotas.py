"""Per-account storage quotas (docs/quotas.md): the store's counter, the
RCPT-time 452 4.2.2, the CLI, migration 14 and the backup."""

from __future__ import annotations

import io
import os
import smtplib
import sqlite3

from twisted.internet.defer import inlineCallbacks, maybeDeferred
from twisted.internet.task import Clock
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from mailraven.backup import createBackup, restoreBackup
from mailraven.interfaces import IQuotaStore
from mailraven.quotawarning import warningMessage
from mailraven.smtp.addresses import parsePath
from mailraven.smtp.recipients import RecipientResolver, Rejection
from mailraven.store.db import connect
from mailraven.store.quotas import SQLiteQuotaStore
from mailraven.store.schema import migrate
from mailraven.store.users import SQLiteUserStore
from mailraven.testing import MemoryAliasStore, MemoryQuotaStore, MemoryUserStore
from tests.helpers import RunningServer
from tests.test_mobile_api import APIClient
from tests.test_recipient_addresses import MESSAGE, mailraven, seenByTheServer, send
from tests.test_store import SQLiteFixture


class QuotaStoreContract:
    """What every IQuotaStore does; usage counting is the SQLite triggers'
    (SQLiteQuotaUsageTests)."""

    @inlineCallbacks
    def setUp(self):
        self.users, self.quotas = self.makeStores()
        yield self.users.add("dana@example.test", "password-1")

    def test_provides(self):
        verifyObject(IQuotaStore, self.quotas)

    @inlineCallbacks
    def test_newAccountUsesTheDefault(self):
        self.assertEqual((yield self.quotas.quota("dana@example.test")), (0, None))
        self.assertIsNone((yield self.quotas.quota("nobody@example.test")))

    @inlineCallbacks
    def test_ownLimitIsSetAndDropped(self):
        self.assertTrue((yield self.quotas.setLimit("dana@example.test", 5000)))
        self.assertEqual((yield self.quotas.quota("dana@example.test")), (0, 5000))
        directory = yield self.quotas.directory()
        self.assertIn((0, 5000), directory.values())
        self.assertTrue((yield self.quotas.setLimit("dana@example.test", None)))
        self.assertEqual((yield self.quotas.quota("dana@example.test")), (0, None))

    @inlineCallbacks
    def test_noWarningUnderNinetyPercent(self):
        yield self.quotas.setLimit("dana@example.test", 1000)
        self.assertEqual((yield self.quotas.claimWarnings(0)), [])
        self.assertEqual((yield self.quotas.claimWarnings(1000)), [])

    @inlineCallbacks
    def test_unknownAccountAndNegativeLimit(self):
        self.assertFalse((yield self.quotas.setLimit("nobody@example.test", 1)))
        yield self.assertFailure(
            maybeDeferred(self.quotas.setLimit, "dana@example.test", -1), ValueError
        )


class MemoryQuotaStoreTests(QuotaStoreContract, TestCase):
    def makeStores(self):
        users = MemoryUserStore()
        return users, MemoryQuotaStore(users)


class SQLiteQuotaStoreTests(SQLiteFixture, QuotaStoreContract, TestCase):
    def makeStores(self):
        self.setUpStore()
        return SQLiteUserStore(self.db), SQLiteQuotaStore(self.db)


class ResolverQuotaTests(SynchronousTestCase):
    """'Past it' is usage >= limit as of the resolver's last reload."""

    def setUp(self):
        self.users = MemoryUserStore()
        self.quotas = MemoryQuotaStore(self.users)
        self.alice = self.successResultOf(self.users.add("alice@example.test", "p"))
        self.bob = self.successResultOf(self.users.add("bob@example.test", "p"))
        aliases = MemoryAliasStore(self.users)
        self.successResultOf(
            aliases.add("team@example.test", ["alice@example.test", "bob@example.test"])
        )
        self.resolver = RecipientResolver(
            self.users,
            ["example.test"],
            Clock(),
            aliases=aliases,
            quotas=self.quotas,
            defaultQuota=1000,
        )

    def resolve(self, text: str):
        return maybeDeferred(self.resolver.resolve, parsePath(text))

    def test_underTheLimitIsAccepted(self):
        self.quotas.used[self.alice] = 999
        [found] = self.successResultOf(self.resolve("alice@example.test"))
        self.assertEqual(found.userId, self.alice)

    def test_atTheLimitIs452(self):
        self.quotas.used[self.alice] = 1000
        refusal = self.failureResultOf(self.resolve("alice@example.test"), Rejection)
        self.assertEqual((refusal.value.code, refusal.value.enhanced), (452, "4.2.2"))

    def test_ownLimitWinsAndZeroIsUnlimited(self):
        self.quotas.used[self.alice] = 5000
        self.successResultOf(self.quotas.setLimit("alice@example.test", 0))
        self.successResultOf(self.resolve("alice@example.test"))

    def test_aliasReachesMembersWithRoom(self):
        self.quotas.used[self.alice] = 1000
        found = self.successResultOf(self.resolve("team@example.test"))
        self.assertEqual([r.userId for r in found], [self.bob])

    def test_finalDotCountsWhatThisProcessAccepted(self):
        """Messages that passed RCPT together are counted at their final
        dots: the one that crosses the limit is taken, the next is not, for
        any account it names; RCPT sees the count too until a reload."""
        self.quotas.used[self.alice] = 900
        self.successResultOf(self.resolve("alice@example.test"))
        reserve = self.resolver.reserveRoom
        self.assertEqual(reserve([[self.alice]], 200), {self.alice})
        self.assertIsNone(reserve([[self.alice]], 1))
        self.assertIsNone(reserve([[self.bob], [self.alice]], 1))
        # an alias (one address, two accounts) keeps its member with room
        self.assertEqual(reserve([[self.alice, self.bob]], 1), {self.bob})
        self.failureResultOf(self.resolve("alice@example.test"), Rejection)
        self.quotas.used[self.alice] = 0  # mail deleted; the next load shows it
        self.resolver.forget()
        self.successResultOf(self.resolve("alice@example.test"))
        self.assertEqual(reserve([[self.alice]], 1), {self.alice})


class SQLiteQuotaUsageTests(SQLiteFixture, TestCase):
    """The counter moves in the transaction of each insert, move and delete."""

    @inlineCallbacks
    def test_counterFollowsEntries(self):
        self.setUpStore()
        quotas = SQLiteQuotaStore(self.db)

        def rows(conn):
            conn.execute(
                "INSERT INTO messages (id, path, size, stored_size, sha256,"
                " received_at, mail_from, rcpt_to) VALUES"
                " ('m1', 'p', 700, 1, 's', 'now', 'a@x', '[]')"
            )
            for entryId, userId in (("e1", 1), ("e2", 1), ("e3", 2)):
                conn.execute(
                    "INSERT INTO mailbox_entries (id, message_id, user_id,"
                    " recipient, received_at) VALUES (?, 'm1', ?, 'r', 'now')",
                    (entryId, userId),
                )

        yield self.db.write(rows)
        self.assertEqual((yield quotas.directory()), {1: (1400, None), 2: (700, None)})
        yield self.db.write(
            lambda c: c.execute(
                "UPDATE mailbox_entries SET mailbox = 'trash' WHERE id = 'e1'"
            )
        )
        self.assertEqual((yield quotas.quota("alice@example.test")), (700, None))
        yield self.db.write(
            lambda c: c.execute(
                "UPDATE mailbox_entries SET mailbox = 'inbox' WHERE id = 'e1'"
            )
        )
        yield self.db.write(
            lambda c: c.execute("DELETE FROM mailbox_entries WHERE id = 'e2'")
        )
        self.assertEqual((yield quotas.quota("alice@example.test")), (700, None))


class QuotaMigrationTests(TestCase):
    def test_schema13AccountsGetTheirUsage(self):
        """Migration 14 counts what a schema-13 database already holds
        (trash excluded) and leaves every account on quota.default."""
        conn = connect(os.path.join(self.mktemp() + ".sqlite"))
        self.addCleanup(conn.close)
        migrate(conn, 13)
        conn.execute(
            "INSERT INTO users (id, email, password_hash, created_at)"
            " VALUES (1, 'a@example.test', 'x', 'now'),"
            " (2, 'b@example.test', 'x', 'now')"
        )
        conn.execute(
            "INSERT INTO messages (id, path, size, stored_size, sha256, received_at,"
            " mail_from, rcpt_to) VALUES ('m1', 'p', 300, 1, 's', 'now', 'x@y', '[]')"
        )
        for entryId, mailbox in (("e1", "inbox"), ("e2", "archive"), ("e3", "trash")):
            conn.execute(
                "INSERT INTO mailbox_entries (id, message_id, user_id, recipient,"
                " mailbox, received_at) VALUES (?, 'm1', 1, 'r', ?, 'now')",
                (entryId, mailbox),
            )
        self.assertEqual(migrate(conn, 14), 14)
        rows = conn.execute(
            "SELECT id, quota_used, quota_limit, quota_warned FROM users ORDER BY id"
        ).fetchall()
        self.assertEqual([tuple(r) for r in rows], [(1, 600, None, 0), (2, 0, None, 0)])


def sessionsPastRCPT(case: TestCase, count: int, rcpt: str) -> list[int]:
    """Blocking: C{count} sessions that all pass RCPT TO C{rcpt}, then send
    their DATA one after another; the replies to their final dots."""
    clients = []
    for _ in range(count):
        client = smtplib.SMTP("127.0.0.1", case.server.smtpPort, timeout=10)
        client.ehlo("client.example")
        client.mail("bob@example.org")
        case.assertEqual(client.rcpt(rcpt)[0], 250)
        clients.append(client)
    codes = []
    for client in clients:
        codes.append(client.data(MESSAGE)[0])
        client.quit()
    return codes


def notWarnings(entries: list[dict]) -> list[dict]:
    """The entries but the 90 % warning, which the quota service may have
    delivered beside them at any time."""
    return [e for e in entries if not (e["subject"] or "").startswith("Your mailbox")]


class OverQuotaEndToEndTests(TestCase):
    timeout = 60

    @inlineCallbacks
    def setUp(self):
        self.server = RunningServer(self, quota__default=1)
        yield self.server.addUser("alice@example.test")

    @inlineCallbacks
    def test_overQuotaIs452UntilMailIsDeleted(self):
        """One message may cross the limit; the next gets 452 4.2.2 (kept by
        the sender); deleting mail through the API lets mail in again."""
        refused, (code, _) = yield send(self.server, ["alice@example.test"])
        self.assertEqual((refused, code), ({}, 250))
        yield seenByTheServer()
        refused, _ = yield send(self.server, ["alice@example.test"])
        code, text = refused["alice@example.test"]
        self.assertEqual(code, 452)
        self.assertTrue(text.startswith(b"4.2.2"), text)
        api = APIClient(self, self.server.apiPort)
        yield api.login()
        account = yield api.json("GET", "/account")
        self.assertEqual(account["email"], "alice@example.test")
        self.assertEqual(account["quota"]["limit"], 1)
        self.assertGreater(account["quota"]["used"], len(MESSAGE))
        page = yield api.json("GET", "/messages")
        [entry] = page["messages"]
        yield api.json("DELETE", f"/messages/{entry['id']}")
        account = yield api.json("GET", "/account")
        self.assertEqual(account["quota"], {"used": 0, "limit": 1})
        yield seenByTheServer()
        refused, (code, _) = yield send(self.server, ["alice@example.test"])
        self.assertEqual((refused, code), ({}, 250))

    @inlineCallbacks
    def test_sessionsThatPassedRCPTTogetherStopAtTheLimit(self):
        """Found by an attacker: 40 sessions past RCPT that sent their DATA
        later all got 250, 19 times the limit. Now the first to cross it is
        taken and the rest get 452 4.2.2 at the final dot."""

        codes = yield deferToThread(sessionsPastRCPT, self, 5, "alice@example.test")
        self.assertEqual(codes, [250, 452, 452, 452, 452])
        entries = yield self.server.root.store.list(1, "inbox", 10, 0)
        self.assertEqual(len(notWarnings(entries)), 1)

    @inlineCallbacks
    def test_anAliasKeepsItsMembersWithRoomAtTheDot(self):
        """Found by the re-check: one member filling up refused the alias's
        whole message at the dot (17 of 20) though the others had room."""
        bob = yield self.server.addUser("bob@example.test")
        yield self.server.root.quotas.setLimit("bob@example.test", 0)
        yield self.server.root.aliases.add(
            "team@example.test", ["alice@example.test", "bob@example.test"]
        )
        yield seenByTheServer()
        codes = yield deferToThread(sessionsPastRCPT, self, 4, "team@example.test")
        self.assertEqual(codes, [250] * 4)
        alices = yield self.server.root.store.list(1, "inbox", 10, 0)
        bobs = yield self.server.root.store.list(bob, "inbox", 10, 0)
        self.assertEqual((len(notWarnings(alices)), len(bobs)), (1, 4))

    @inlineCallbacks
    def test_sendingThroughTheAPIToAFullAccountIs503(self):
        """A local copy for a full account is refused as temporary, not as an
        unknown recipient; nothing is stored."""
        yield self.server.addUser("bob@example.test")
        yield send(self.server, ["alice@example.test"])
        yield seenByTheServer()
        api = APIClient(self, self.server.apiPort)
        yield api.login("bob@example.test")
        found = yield api.json(
            "POST",
            "/messages/send",
            {"to": ["alice@example.test"], "subject": "s", "body": "b"},
            expect=503,
        )
        self.assertEqual(found["error"], "mailbox_full")
        entries = yield self.server.root.store.list(1, "inbox", 9, 0)
        self.assertEqual(len(notWarnings(entries)), 1)


class QuotaCommandTests(TestCase):
    timeout = 60

    @inlineCallbacks
    def setUp(self):
        self.server = RunningServer(self)
        yield self.server.addUser("alice@example.test")

    def quota(self, *args: str):
        out = io.StringIO()
        d = deferToThread(
            mailraven, self.server.dataDir, "user", "quota", *args, out=out
        )
        return d.addCallback(lambda result: (*result, out.getvalue()))

    @inlineCallbacks
    def test_setShowAndBackToDefault(self):
        status, _, out = yield self.quota("alice@example.test")
        self.assertEqual(status, 0)
        self.assertIn("0 bytes used of unlimited (quota.default)", out)
        status, _, out = yield self.quota("alice@example.test", "2K")
        self.assertIn("of 2048 bytes (own)", out)
        self.assertEqual(
            (yield self.server.root.quotas.quota("alice@example.test")), (0, 2048)
        )
        status, _, out = yield self.quota("alice@example.test", "--default")
        self.assertIn("unlimited (quota.default)", out)
        status, err, _ = yield self.quota("nobody@example.test", "1")
        self.assertEqual(status, 1)
        self.assertIn("no such user", err)
        status, err, _ = yield self.quota("alice@example.test", "lots")
        self.assertEqual(status, 1)
        self.assertIn("not a size", err)
        # found by a new operator: a traceback (SQLite's INTEGER overflowed)
        status, err, _ = yield self.quota("alice@example.test", "99999999T")
        self.assertEqual(status, 1)
        self.assertIn("too large", err)

    @inlineCallbacks
    def test_overrideIsInTheBackup(self):
        yield self.quota("alice@example.test", "1M")
        backup = os.path.abspath(self.mktemp())
        yield deferToThread(createBackup, self.server.dataDir, backup)
        newDir = os.path.abspath(self.mktemp())
        yield deferToThread(restoreBackup, backup, newDir)
        yield self.server.stop()
        restored = RunningServer(self, server__data_dir=newDir)
        found = yield restored.root.quotas.quota("alice@example.test")
        self.assertEqual(found, (0, 1024**2))


class QuotaWarningTests(TestCase):
    """The 90 % warning: delivered once, again only after dropping below."""

    timeout = 60

    @inlineCallbacks
    def setUp(self):
        self.server = RunningServer(self)
        self.alice = yield self.server.addUser("alice@example.test")
        self.quotas = self.server.root.quotas

    def inbox(self):
        return self.server.root.store.list(self.alice, "inbox", 50, 0)

    @inlineCallbacks
    def warnings(self):
        entries = yield self.inbox()
        return [e for e in entries if e["subject"] == "Your mailbox is almost full"]

    @inlineCallbacks
    def test_warnedOnceAtNinetyPercentAndRearmedBelow(self):
        refused, (code, _) = yield send(self.server, ["alice@example.test"])
        self.assertEqual(code, 250)
        [mail] = yield self.inbox()
        used, _ = yield self.quotas.quota("alice@example.test")
        yield self.quotas.setLimit("alice@example.test", used * 100 // 95)
        yield self.server.root.quotaWarnings.check()
        yield self.server.root.quotaWarnings.check()
        [warning] = yield self.warnings()
        full = yield self.server.root.store.get(warning["id"], self.alice)
        self.assertIn(b"From: postmaster@example.test", full["raw"])
        self.assertIn(b"Subject: Your mailbox is almost full", full["raw"])
        # below 90 % (mail moved to trash) re-arms it; back above warns again
        for entry in (mail, warning):
            yield self.server.root.store.delete(entry["id"], self.alice)
        yield self.server.root.quotaWarnings.check()
        yield self.server.root.store.updateFlags(
            mail["id"], self.alice, {"mailbox": "inbox"}
        )
        yield self.server.root.quotaWarnings.check()
        self.assertEqual(len((yield self.warnings())), 1)
        yield self.server.root.quotaWarnings.check()
        self.assertEqual(len((yield self.warnings())), 1)

    @inlineCallbacks
    def test_noWarningWithoutALimit(self):
        yield send(self.server, ["alice@example.test"])
        yield self.server.root.quotaWarnings.check()
        self.assertEqual((yield self.warnings()), [])


class AdminQuotaTests(TestCase):
    timeout = 60

    @inlineCallbacks
    def test_adminSetsAndReadsQuotas(self):
        server = RunningServer(self, quota__default=5000)
        yield server.addUser("alice@example.test")
        yield server.root.users.add("root@example.test", "admin password")
        conn = sqlite3.connect(os.path.join(server.dataDir, "mailraven.db"))
        self.addCleanup(conn.close)
        conn.execute("UPDATE users SET is_admin = 1 WHERE email = 'root@example.test'")
        conn.commit()
        api = APIClient(self, server.apiPort)
        yield api.login()
        admin = f"http://127.0.0.1:{server.apiPort}/admin"
        api.base = admin
        yield api.json("GET", "/quota/alice@example.test", expect=403)
        api.base = f"http://127.0.0.1:{server.apiPort}/api/v1"
        yield api.login("root@example.test", "admin password")
        api.base = admin
        found = yield api.json("GET", "/quota/alice@example.test")
        self.assertEqual(
            found,
            {
                "email": "alice@example.test",
                "quota": {"used": 0, "limit": 5000},
                "own_limit": None,
            },
        )
        found = yield api.json("PUT", "/quota/alice@example.test", {"limit": 0})
        self.assertEqual((found["quota"]["limit"], found["own_limit"]), (None, 0))
        self.assertEqual((yield server.root.quotas.quota("alice@example.test")), (0, 0))
        found = yield api.json("PUT", "/quota/alice@example.test", {"limit": None})
        self.assertEqual(found["quota"]["limit"], 5000)
        yield api.json("PUT", "/quota/alice@example.test", {"limit": -1}, expect=400)
        yield api.json("PUT", "/quota/alice@example.test", {"limit": "1G"}, expect=400)
        # found by an attacker: a 500 (OverflowError) at 2**63
        yield api.json("PUT", "/quota/alice@example.test", {"limit": 2**63}, expect=400)
        yield api.json("PUT", "/quota/nobody@example.test", {"limit": 1}, expect=404)
        yield api.json("GET", "/quota/nobody@example.test", expect=404)


class WarningTextTests(SynchronousTestCase):
    def test_pastTheLimitSaysFull(self):
        """Found by a new operator: 122 % was "almost full"."""
        past = warningMessage("mx.example.test", "a@example.test", 10001, 8192)
        self.assertIn(b"Subject: Your mailbox is full\r\n", past)
        self.assertIn(b"(122 %)", past)
        near = warningMessage("mx.example.test", "a@example.test", 7400, 8192)
        self.assertIn(b"Subject: Your mailbox is almost full\r\n", near)

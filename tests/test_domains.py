"""Domains added at runtime (mailraven domain add|list|remove): mail to them
is accepted without a restart, mail from them is signed with their own DKIM
key, and removing them closes them to mail again (docs/addresses.md)."""

from __future__ import annotations

import email
import io
import json
import os
import re
import smtplib
import sqlite3
import time

import dkim
from twisted.internet.defer import gatherResults, inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from mailraven.api import mobile
from mailraven.backup import createBackup, restoreBackup
from mailraven.privatefiles import createPrivate
from mailraven.quickstart import createDKIMKey, publicKeyOf
from mailraven.store.users import UserExists
from tests.helpers import PASSWORD, RunningServer, sleep
from tests.test_mobile_api import APIClient
from tests.test_outbound import SELECTOR, OutboundCase
from tests.test_recipient_addresses import (
    RELAY_ATTEMPTS,
    mailraven,
    seenByTheServer,
    send,
)
from tests.test_smtp_e2e import finals, rawSession
from tests.test_submission import submit


def domainCommand(server: RunningServer, *args: str, config: str | None = None):
    """Deferred (status, stdout, stderr) of C{mailraven domain ...}, with
    the configuration file C{config} if given."""
    out = io.StringIO()
    options = ["--config", config] if config else []

    def run():
        status, err = mailraven(server.dataDir, "domain", *args, *options, out=out)
        return status, out.getvalue(), err

    return deferToThread(run)


def publishedTXT(printed: str, name: str) -> bytes:
    """The TXT value printed for C{name}, its strings joined as a verifier
    joins them (RFC 6376 3.6.2.2)."""
    for line in printed.splitlines():
        if line.startswith(name + ". "):
            return "".join(re.findall(r'"((?:[^"\\]|\\.)*)"', line)).encode()
    raise AssertionError(f"no record for {name} in:\n{printed}")


class DomainCommandTests(TestCase):
    timeout = 60

    @inlineCallbacks
    def setUp(self):
        self.server = RunningServer(self)
        yield self.server.addUser("alice@example.test")

    @inlineCallbacks
    def test_addedDomainReceivesMailWithoutARestart(self):
        """postmaster@ of a domain with no account yet is relay-denied, then
        accepted once the domain is added; the time it took is measured."""
        refused, _ = yield send(self.server, ["postmaster@shop.example"])
        self.assertEqual(refused["postmaster@shop.example"][0], 554)
        status, out, _ = yield domainCommand(self.server, "add", "Shop.Example")
        self.assertEqual(status, 0)
        self.assertIn("added shop.example", out)
        added = time.monotonic()
        while True:
            refused, (code, _) = yield send(self.server, ["postmaster@shop.example"])
            if not refused:
                break
            self.assertEqual(refused["postmaster@shop.example"][0], 554)
            yield sleep(0.05)
        took = time.monotonic() - added
        self.assertEqual(code, 250)
        self.assertLess(took, 1.5, "the resolver reloads at least every second")
        carol = yield self.server.addUser("carol@shop.example")
        yield seenByTheServer()
        refused, (code, _) = yield send(self.server, ["carol@shop.example"])
        self.assertEqual((refused, code), ({}, 250))
        entries = yield self.server.root.store.list(carol, "inbox", 10, 0)
        self.assertEqual([e["recipient"] for e in entries], ["carol@shop.example"])

    @inlineCallbacks
    def test_removeIsRefusedWithAccountsThenClosesTheDomain(self):
        yield domainCommand(self.server, "add", "shop.example")
        yield self.server.addUser("carol@shop.example")
        yield deferToThread(
            mailraven,
            self.server.dataDir,
            "alias",
            "add",
            "@shop.example",
            "carol@shop.example",
        )
        status, _, err = yield domainCommand(self.server, "remove", "shop.example")
        self.assertEqual(status, 1)
        self.assertIn(
            "shop.example still has 1 account(s) and 1 alias(es); remove them first",
            err,
        )
        yield self.server.root.users.remove("carol@shop.example")
        status, out, _ = yield domainCommand(self.server, "remove", "shop.example")
        self.assertEqual(status, 0)
        self.assertIn("its DKIM key stays in", out)
        self.assertTrue(
            os.path.isdir(os.path.join(self.server.dataDir, "dkim", "shop.example"))
        )
        yield seenByTheServer()
        refused, _ = yield send(self.server, ["postmaster@shop.example"])
        self.assertEqual(refused["postmaster@shop.example"][0], 554)
        self.assertEqual((yield self.server.root.domains.list()), [])

    @inlineCallbacks
    def test_listAndClearRefusals(self):
        yield domainCommand(self.server, "add", "b.example")
        yield domainCommand(self.server, "add", "a.example")
        status, out, err = yield domainCommand(self.server, "list")
        self.assertEqual(status, 0)
        self.assertEqual(
            [line.split()[0] for line in out.splitlines()], ["a.example", "b.example"]
        )
        self.assertIn("2 added domains", err)
        status, _, err = yield domainCommand(self.server, "add", "A.example.")
        self.assertEqual(status, 1)
        self.assertIn("a.example is a domain here already", err)
        status, _, err = yield domainCommand(self.server, "add", "not a domain")
        self.assertEqual(status, 1)
        self.assertIn("not a domain name", err)
        status, _, err = yield domainCommand(self.server, "remove", "c.example")
        self.assertEqual(status, 1)
        self.assertIn("no such domain: c.example", err)
        key = os.path.join(self.server.dataDir, "dkim", "a.example")
        self.assertEqual(os.stat(key).st_mode & 0o777, 0o700)
        [name] = os.listdir(key)
        self.assertEqual(os.stat(os.path.join(key, name)).st_mode & 0o777, 0o600)

    @inlineCallbacks
    def test_recordsArePrintedAgain(self):
        """C{domain records} prints what C{domain add} printed, from the same
        key; an unknown domain is named."""
        _, added, _ = yield domainCommand(self.server, "add", "shop.example")
        status, again, _ = yield domainCommand(self.server, "records", "Shop.Example")
        self.assertEqual(status, 0)
        self.assertIn(again.strip(), added)
        [domain] = yield self.server.root.domains.list()
        name = f"{domain.selector}._domainkey.shop.example"
        self.assertEqual(publishedTXT(again, name), publishedTXT(added, name))
        status, _, err = yield domainCommand(self.server, "records", "c.example")
        self.assertEqual(status, 1)
        self.assertIn("no such added domain: c.example", err)

    @inlineCallbacks
    def test_relayBatteryIsRefusedWithAddedDomains(self):
        yield domainCommand(self.server, "add", "shop.example")
        yield seenByTheServer()
        commands = b"".join(b"RCPT TO:" + a + b"\r\n" for a in RELAY_ATTEMPTS)
        lines = yield deferToThread(
            rawSession,
            self.server.smtpPort,
            [b"EHLO c\r\nMAIL FROM:<bob@example.org>\r\n" + commands + b"DATA\r\n"],
            3 + len(RELAY_ATTEMPTS),
        )
        replies = finals(lines)
        rcptReplies = replies[2 : 2 + len(RELAY_ATTEMPTS)]
        self.assertEqual(len(rcptReplies), len(RELAY_ATTEMPTS))
        for attempt, reply in zip(RELAY_ATTEMPTS, rcptReplies, strict=True):
            self.assertIn(reply[:3], ("550", "554", "501"), (attempt, reply))
        self.assertEqual(replies[-1][:3], "503", "DATA with no recipient accepted")

    @inlineCallbacks
    def test_domainsAreInTheBackup(self):
        yield domainCommand(self.server, "add", "shop.example")
        backup = os.path.abspath(self.mktemp())
        yield deferToThread(createBackup, self.server.dataDir, backup)
        newDir = os.path.abspath(self.mktemp())
        yield deferToThread(restoreBackup, backup, newDir)
        yield self.server.stop()
        restored = RunningServer(self, server__data_dir=newDir)
        listed = yield restored.root.domains.list()
        self.assertEqual([d.name for d in listed], ["shop.example"])
        keyDir = os.path.join(newDir, "dkim", "shop.example")
        self.assertEqual(os.listdir(keyDir), [f"{listed[0].selector}.key"])
        refused, (code, _) = yield send(restored, ["postmaster@shop.example"])
        self.assertEqual((refused, code), ({}, 250))


class AddedDomainSigningTests(OutboundCase):
    @inlineCallbacks
    def test_mailFromAnAddedDomainIsSignedWithItsOwnKey(self):
        """The record printed by `domain add` verifies mail sent from the
        domain (d= that domain); the server's own domain keeps its key."""
        yield self.startServer()
        self.postfix.start()
        status, printed, _ = yield domainCommand(self.server, "add", "shop.example")
        self.assertEqual(status, 0)
        [selector] = os.listdir(
            os.path.join(self.server.dataDir, "dkim", "shop.example")
        )
        selector = selector.removesuffix(".key")
        name = f"{selector}._domainkey.shop.example"
        published = publishedTXT(printed, name)
        yield self.server.addUser("carol@shop.example")
        for sender in ("carol@shop.example", "alice@example.test"):
            code, refused, data = yield deferToThread(
                submit,
                self.server.submissionPort,
                sender,
                PASSWORD,
                sender,
                ["bob@remote.example"],
            )
            self.assertEqual((code, refused, data), (235, {}, 250))
        arrived = yield deferToThread(self.postfix.waitFor, 2)

        def answer(query: bytes, timeout: float = 5) -> bytes | None:
            if query.decode().rstrip(".") == name:
                return published
            return self.dnsTXT(query)

        signers = set()
        for raw in arrived:
            signature = email.message_from_bytes(raw)["DKIM-Signature"]
            signers.add(re.search(r"d=([^;\s]+)", signature).group(1))
            self.assertTrue(dkim.verify(raw, dnsfunc=answer), raw[:600])
            if "d=shop.example" in signature:
                self.assertIn(f"s={selector}", signature)
        self.assertEqual(signers, {"shop.example", "example.test"})

    @inlineCallbacks
    def test_signingFollowsTheTableNotTheNewestFile(self):
        """Issue 21: a newer key file left in an added domain's directory (a
        later month's) is not used, and a configured domain that an earlier
        release let be added (its own key under the server key's selector,
        never published) still signs with the server key."""
        yield self.startServer()
        self.postfix.start()
        status, printed, _ = yield domainCommand(self.server, "add", "shop.example")
        self.assertEqual(status, 0)
        [domain] = yield self.server.root.domains.list()
        shopDir = os.path.join(self.server.dataDir, "dkim", "shop.example")
        createDKIMKey(shopDir, "mailraven209912")
        createDKIMKey(
            os.path.join(self.server.dataDir, "dkim", "example.test"), SELECTOR
        )
        conn = sqlite3.connect(os.path.join(self.server.dataDir, "mailraven.db"))
        with conn:
            conn.execute(
                "INSERT INTO domains (name, dkim_selector, added_at)"
                " VALUES ('example.test', ?, '2026-12-01T00:00:00Z')",
                (SELECTOR,),
            )
        conn.close()
        name = f"{domain.selector}._domainkey.shop.example"
        published = publishedTXT(printed, name)
        yield self.server.addUser("carol@shop.example")
        for sender in ("carol@shop.example", "alice@example.test"):
            code, refused, data = yield deferToThread(
                submit,
                self.server.submissionPort,
                sender,
                PASSWORD,
                sender,
                ["bob@remote.example"],
            )
            self.assertEqual((code, refused, data), (235, {}, 250))
        arrived = yield deferToThread(self.postfix.waitFor, 2)

        def answer(query: bytes, timeout: float = 5) -> bytes | None:
            if query.decode().rstrip(".") == name:
                return published
            return self.dnsTXT(query)

        for raw in arrived:
            self.assertTrue(dkim.verify(raw, dnsfunc=answer), raw[:600])


class AdminCase(TestCase):
    """A running server with an admin account, root@example.test."""

    timeout = 60

    @inlineCallbacks
    def setUp(self):
        self.server = RunningServer(self)
        yield self.server.addUser("alice@example.test")
        yield self.server.root.users.add("root@example.test", "admin pw")
        conn = sqlite3.connect(os.path.join(self.server.dataDir, "mailraven.db"))
        conn.execute("UPDATE users SET is_admin = 1 WHERE email = 'root@example.test'")
        conn.commit()
        conn.close()
        self.api = APIClient(self, self.server.apiPort)

    @inlineCallbacks
    def loginAs(self, email: str, password: str):
        self.api.base = f"http://127.0.0.1:{self.server.apiPort}/api/v1"
        yield self.api.login(email, password)
        self.api.base = f"http://127.0.0.1:{self.server.apiPort}/admin"


class AdminDomainTests(AdminCase):
    @inlineCallbacks
    def test_adminOnly(self):
        yield self.loginAs("alice@example.test", PASSWORD)
        yield self.api.json("GET", "/domains", expect=403)
        yield self.api.json("POST", "/domains", {"name": "shop.example"}, expect=403)
        yield self.api.json("DELETE", "/domains/example.test", expect=403)
        yield self.api.json("GET", "/domains/example.test", expect=403)
        self.assertEqual((yield self.server.root.domains.list()), [])

    @inlineCallbacks
    def test_addListRemoveTakeEffectAtOnce(self):
        """An added domain receives mail at the next RCPT (no reload wait);
        a removed one is relay-denied at the next RCPT."""
        yield self.loginAs("root@example.test", "admin pw")
        refused, _ = yield send(self.server, ["postmaster@shop.example"])
        self.assertEqual(refused["postmaster@shop.example"][0], 554)
        added = yield self.api.json(
            "POST", "/domains", {"name": "Shop.Example"}, expect=201
        )
        self.assertEqual(added["name"], "shop.example")
        name = f"{added['dkim_selector']}._domainkey.shop.example"
        self.assertTrue(publishedTXT(added["dns_records"], name).startswith(b"v=DKIM1"))
        refused, (code, _) = yield send(self.server, ["postmaster@shop.example"])
        self.assertEqual((refused, code), ({}, 250))
        listed = yield self.api.json("GET", "/domains")
        self.assertEqual([d["name"] for d in listed["domains"]], ["shop.example"])
        again = yield self.api.json("GET", "/domains/Shop.Example")
        self.assertEqual(again["dns_records"], added["dns_records"])
        yield self.api.json("GET", "/domains/other.example", expect=404)
        yield self.api.json("GET", "/domains/not..a..domain", expect=400)
        self.assertEqual(listed["configured"], self.server.config["server.domains"])
        yield self.api.json("POST", "/domains", {"name": "shop.example"}, expect=409)
        for bad in ({"name": "not a domain"}, {"name": 3}, ["shop.example"]):
            yield self.api.json("POST", "/domains", bad, expect=400)
        yield self.server.addUser("carol@shop.example")
        refusal = yield self.api.json("DELETE", "/domains/shop.example", expect=409)
        self.assertEqual((refusal["error"], refusal["accounts"]), ("in_use", 1))
        self.assertIn("1 account(s)", refusal["message"])
        yield self.server.root.users.remove("carol@shop.example")
        yield self.api.json("DELETE", "/domains/shop.example")
        yield self.api.json("DELETE", "/domains/shop.example", expect=404)
        refused, _ = yield send(self.server, ["postmaster@shop.example"])
        self.assertEqual(refused["postmaster@shop.example"][0], 554)


class AdminAliasTests(AdminCase):
    """/admin/aliases: what C{mailraven alias add|list|remove} does, for
    admin tokens, effective at the next RCPT."""

    @inlineCallbacks
    def test_adminOnly(self):
        yield self.loginAs("alice@example.test", PASSWORD)
        body = {"address": "sales@example.test", "members": ["alice@example.test"]}
        yield self.api.json("GET", "/aliases", expect=403)
        yield self.api.json("POST", "/aliases", body, expect=403)
        yield self.api.json("DELETE", "/aliases/sales@example.test", expect=403)
        self.assertEqual((yield self.server.root.aliases.list()), {})

    @inlineCallbacks
    def test_addListRemoveTakeEffectAtOnce(self):
        yield self.loginAs("root@example.test", "admin pw")
        yield self.server.addUser("bob@example.test")
        refused, _ = yield send(self.server, ["sales@example.test"])
        self.assertEqual(refused["sales@example.test"][0], 550)
        added = yield self.api.json(
            "POST",
            "/aliases",
            {
                "address": "Sales@Example.test",
                "members": ["alice@example.test", "Bob@example.test"],
            },
            expect=201,
        )
        self.assertEqual(added["address"], "Sales@example.test")
        self.assertEqual(added["members"], ["alice@example.test", "bob@example.test"])
        refused, (code, _) = yield send(self.server, ["sales@example.test"])
        self.assertEqual((refused, code), ({}, 250))
        listed = yield self.api.json("GET", "/aliases")
        self.assertEqual(listed["aliases"], [added])
        removed = yield self.api.json("DELETE", "/aliases/sales@example.test")
        self.assertEqual(removed, {"removed": "sales@example.test"})
        yield self.api.json("DELETE", "/aliases/sales@example.test", expect=404)
        refused, _ = yield send(self.server, ["sales@example.test"])
        self.assertEqual(refused["sales@example.test"][0], 550)

    @inlineCallbacks
    def test_refusalsAddNothing(self):
        """A foreign domain (it would relay), a member that is not an
        account (aliases never forward), an account's own address and
        malformed bodies are 400s; none adds anything."""
        yield self.loginAs("root@example.test", "admin pw")
        for body, error in [
            (
                {"address": "x@elsewhere.example", "members": ["alice@example.test"]},
                "not_local",
            ),
            (
                {"address": "x@example.test", "members": ["someone@elsewhere.example"]},
                "bad_member",
            ),
            (
                {
                    "address": "x@example.test",
                    "members": ["alice@example.test", "nobody@example.test"],
                },
                "bad_member",
            ),
            (
                {"address": "alice@example.test", "members": ["root@example.test"]},
                "bad_member",
            ),
            (
                {"address": "not an address", "members": ["alice@example.test"]},
                "bad_address",
            ),
            ({"address": "x@example.test", "members": []}, "bad_request"),
            (
                {"address": "x@example.test", "members": "alice@example.test"},
                "bad_request",
            ),
            (["x@example.test"], "bad_request"),
        ]:
            refusal = yield self.api.json("POST", "/aliases", body, expect=400)
            self.assertEqual(refusal["error"], error, body)
        self.assertEqual((yield self.server.root.aliases.list()), {})
        refused, _ = yield send(self.server, ["x@elsewhere.example"])
        self.assertEqual(refused["x@elsewhere.example"][0], 554)

    @inlineCallbacks
    def test_catchAllOfAnAddedDomain(self):
        yield self.loginAs("root@example.test", "admin pw")
        yield self.api.json("POST", "/domains", {"name": "shop.example"}, expect=201)
        yield self.api.json(
            "POST",
            "/aliases",
            {"address": "@shop.example", "members": ["alice@example.test"]},
            expect=201,
        )
        refused, (code, _) = yield send(self.server, ["anything@shop.example"])
        self.assertEqual((refused, code), ({}, 250))
        refusal = yield self.api.json("DELETE", "/domains/shop.example", expect=409)
        self.assertEqual(refusal["aliases"], 1)
        yield self.api.json("DELETE", "/aliases/@shop.example")
        yield self.api.json("DELETE", "/domains/shop.example")

    @inlineCallbacks
    def test_oneMemberLeaves(self):
        yield self.loginAs("root@example.test", "admin pw")
        yield self.server.addUser("bob@example.test")
        yield self.api.json(
            "POST",
            "/aliases",
            {
                "address": "team@example.test",
                "members": ["alice@example.test", "bob@example.test"],
            },
            expect=201,
        )
        left = yield self.api.json(
            "DELETE", "/aliases/team@example.test/members/Bob@example.test"
        )
        self.assertEqual(
            left, {"address": "team@example.test", "members": ["alice@example.test"]}
        )
        yield self.api.json(
            "DELETE", "/aliases/team@example.test/members/bob@example.test", expect=404
        )
        yield self.api.json(
            "DELETE", "/aliases/team@example.test/members/not-an-address", expect=400
        )
        bob = yield self.server.root.users.lookup("bob@example.test")
        yield send(self.server, ["team@example.test"])
        self.assertEqual((yield self.server.root.store.list(bob, "inbox", 9, 0)), [])
        gone = yield self.api.json(
            "DELETE", "/aliases/team@example.test/members/alice@example.test"
        )
        self.assertEqual(gone["members"], [])
        self.assertEqual((yield self.server.root.aliases.list()), {})


def utf8Rcpt(port: int, recipients: list[str]) -> dict[str, int]:
    """Blocking: {recipient: RCPT reply code} of one SMTPUTF8 session."""
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo("client.example.org")
        code, _ = client.mail("bob@example.org", ["SMTPUTF8"])
        assert code == 250, code
        return {r: client.rcpt(r)[0] for r in recipients}


def keyFiles(server: RunningServer, domain: str) -> list[str]:
    try:
        return sorted(os.listdir(os.path.join(server.dataDir, "dkim", domain)))
    except FileNotFoundError:
        return []


def serverKey(dataDir: str) -> tuple[str, bytes]:
    """(selector, TXT value) of a new server key in C{dataDir}."""
    publicKey = createDKIMKey(os.path.join(dataDir, "dkim"), "mailraven202612")
    return "mailraven202612", f"v=DKIM1; k=rsa; p={publicKey}".encode()


class ConfiguredDomainTests(AdminCase):
    """Issue 21: a domain of server.domains signs with the server key, so it
    cannot be added, removed or given a key at runtime; its records are the
    server key's."""

    def configured(self, *args: str):
        """C{mailraven domain ...} with the server's server.domains."""
        path = os.path.abspath(self.mktemp())
        with open(path, "w") as f:
            f.write('[server]\ndomains = ["Example.Test", "localhost"]\n')
        return domainCommand(self.server, *args, config=path)

    @inlineCallbacks
    def test_addingAConfiguredDomainIsRefused(self):
        status, _, err = yield self.configured("add", "Example.Test.")
        self.assertEqual(status, 1)
        self.assertIn(
            "example.test is configured in server.domains; it signs with the"
            " server key",
            err,
        )
        yield self.loginAs("root@example.test", "admin pw")
        refusal = yield self.api.json(
            "POST", "/domains", {"name": "example.test"}, expect=409
        )
        self.assertEqual(refusal["error"], "configured")
        self.assertIn("it signs with the server key", refusal["message"])
        self.assertEqual(keyFiles(self.server, "example.test"), [])
        self.assertEqual((yield self.server.root.domains.list()), [])

    @inlineCallbacks
    def test_removingAConfiguredDomainSaysWhy(self):
        status, _, err = yield self.configured("remove", "example.test")
        self.assertEqual(status, 1)
        self.assertIn("example.test is configured in server.domains", err)
        self.assertIn("cannot be added or removed at runtime", err)
        self.assertNotIn("no such domain", err)
        yield self.loginAs("root@example.test", "admin pw")
        refusal = yield self.api.json("DELETE", "/domains/example.test", expect=409)
        self.assertEqual(refusal["error"], "configured")

    @inlineCallbacks
    def test_aRowAnEarlierReleaseAddedIsListedAsConfigured(self):
        conn = sqlite3.connect(os.path.join(self.server.dataDir, "mailraven.db"))
        with conn:
            conn.execute(
                "INSERT INTO domains (name, dkim_selector, added_at)"
                " VALUES ('example.test', 'mailraven202612', '2026-12-01T00:00:00Z')"
            )
        conn.close()
        yield self.loginAs("root@example.test", "admin pw")
        listed = yield self.api.json("GET", "/domains")
        self.assertEqual(
            [(d["name"], d["configured"]) for d in listed["domains"]],
            [("example.test", True)],
        )

    @inlineCallbacks
    def test_recordsOfAConfiguredDomainAreTheServerKeys(self):
        selector, published = serverKey(self.server.dataDir)
        name = f"{selector}._domainkey.example.test"
        status, out, err = yield self.configured("records", "example.test")
        self.assertEqual(status, 0, err)
        self.assertEqual(publishedTXT(out, name), published)
        self.assertIn("example.test is in server.domains", err)
        yield self.loginAs("root@example.test", "admin pw")
        found = yield self.api.json("GET", "/domains/example.test")
        self.assertEqual(
            (found["dkim_selector"], found["configured"]), (selector, True)
        )
        self.assertEqual(publishedTXT(found["dns_records"], name), published)


class DomainNameTests(AdminCase):
    """Issue 21: names that are no domain, or that a key file has, are
    refused clearly; an IDN is stored as its A-label."""

    @inlineCallbacks
    def test_ipAddressesAndServerKeyNamesAreRefused(self):
        yield self.loginAs("root@example.test", "admin pw")
        for name, error in [
            ("1.2.3.4", "not a domain name"),
            ("shop.123", "not a domain name"),
            ("xn--zz.example", "not a domain name"),  # no A-label
            ("mailraven202612.key", "named like a server DKIM key file"),
        ]:
            status, _, err = yield domainCommand(self.server, "add", name)
            self.assertEqual(status, 1, name)
            self.assertIn(error, err)
            refusal = yield self.api.json("POST", "/domains", {"name": name}, 400)
            self.assertEqual(refusal["error"], "bad_domain")
            self.assertIn(error, refusal["message"])
        self.assertEqual((yield self.server.root.domains.list()), [])
        refused, _ = yield send(self.server, ["x@[1.2.3.4]"])
        self.assertEqual(refused["x@[1.2.3.4]"][0], 554)

    @inlineCallbacks
    def test_aDomainCannotShadowAServerKeyFile(self):
        """A server key file of any name (older selectors) blocks the domain
        of its name; no traceback."""
        os.makedirs(os.path.join(self.server.dataDir, "dkim"), exist_ok=True)
        createDKIMKey(os.path.join(self.server.dataDir, "dkim"), "old")
        status, _, err = yield domainCommand(self.server, "add", "old.key")
        self.assertEqual((status, "Traceback" in err), (1, False))
        self.assertIn("named like a server DKIM key file", err)

    @inlineCallbacks
    def test_aRefusedNameIsEchoedShort(self):
        yield self.loginAs("root@example.test", "admin pw")
        refusal = yield self.api.json(
            "POST", "/domains", {"name": "a" * 100_000 + ".example!"}, expect=400
        )
        self.assertLess(len(refusal["message"]), 300)
        self.assertIn("(100009 characters)", refusal["message"])
        yield self.api.json("GET", "/domains/" + "b" * 5000, expect=400)

    @inlineCallbacks
    def test_idnIsStoredAsALabelAndReceivesInEitherForm(self):
        status, out, err = yield domainCommand(self.server, "add", "Bücher.example")
        self.assertEqual(status, 0, err)
        self.assertIn("added xn--bcher-kva.example", out)
        yield self.server.addUser("x@xn--bcher-kva.example")
        yield seenByTheServer()
        codes = yield deferToThread(
            utf8Rcpt,
            self.server.smtpPort,
            [
                "x@bücher.example",
                "postmaster@BU\u0308CHER.example",
                "x@xn--bcher-kva.example",
                "nobody@bücher.example",
                "x@bücher.elsewhere.example",
                "postmaster@bücher.elsewhere.example",
                "x@xn--bcher-kva.elsewhere.example",
            ],
        )
        self.assertEqual(
            list(codes.values()), [250, 250, 250, 550, 554, 554, 554], codes
        )
        yield self.loginAs("root@example.test", "admin pw")
        refusal = yield self.api.json(
            "POST", "/domains", {"name": "xn--BCHER-kva.example"}, expect=409
        )
        self.assertEqual(refusal["error"], "exists")
        yield self.api.json("POST", "/domains", {"name": "bü_cher.example"}, 400)

    @inlineCallbacks
    def test_idnAccountsAndAliasesHaveOneSpelling(self):
        """Found by the re-check: u@zürich.example and u@xn--zrich-kva.example
        were two accounts (the second never got mail), and an alias given in
        U-labels outlived its domain's removal."""
        yield domainCommand(self.server, "add", "zürich.example")
        user = yield self.server.addUser("u@zürich.example")
        yield self.assertFailure(
            self.server.addUser("u@XN--ZRICH-KVA.example"), UserExists
        )
        self.assertEqual(
            (yield self.server.root.users.lookup("u@zürich.example")), user
        )
        yield self.loginAs("root@example.test", "admin pw")
        added = yield self.api.json(
            "POST",
            "/aliases",
            {"address": "@Zürich.example", "members": ["u@zürich.example"]},
            expect=201,
        )
        self.assertEqual(added["address"], "@xn--zrich-kva.example")
        yield self.server.root.users.remove("u@xn--zrich-kva.example")
        yield self.server.addUser("v@example.test")
        yield self.api.json(
            "POST",
            "/aliases",
            {"address": "info@zürich.example", "members": ["v@example.test"]},
            expect=201,
        )
        refusal = yield self.api.json(
            "DELETE", "/domains/xn--zrich-kva.example", expect=409
        )
        self.assertEqual(refusal["aliases"], 1)


class DomainKeyTests(AdminCase):
    """Issue 21: a domain keeps the key its record names; a refused add makes
    none and racing adds cannot replace the key one of them printed."""

    @inlineCallbacks
    def test_aRepeatedAddInALaterMonthMakesNoKey(self):
        yield self.loginAs("root@example.test", "admin pw")
        added = yield self.api.json("POST", "/domains", {"name": "shop.example"}, 201)
        before = keyFiles(self.server, "shop.example")
        self.patch(mobile, "dkimSelector", lambda now=None: "mailraven209912")
        yield self.api.json("POST", "/domains", {"name": "shop.example"}, 409)
        self.assertEqual(keyFiles(self.server, "shop.example"), before)
        again = yield self.api.json("GET", "/domains/shop.example")
        self.assertEqual(again["dns_records"], added["dns_records"])

    @inlineCallbacks
    def test_recordsOfAMissingKeyAreRefusedNotRemade(self):
        """Found by the re-check: GET /admin/domains/{name} made and printed
        a new key when the file was gone, silently unlike the record."""
        yield self.loginAs("root@example.test", "admin pw")
        yield self.api.json("POST", "/domains", {"name": "shop.example"}, 201)
        [name] = keyFiles(self.server, "shop.example")
        os.remove(os.path.join(self.server.dataDir, "dkim", "shop.example", name))
        refusal = yield self.api.json("GET", "/domains/shop.example", expect=409)
        self.assertEqual(refusal["error"], "key_missing")
        self.assertIn("restore it from a backup", refusal["message"])
        status, _, err = yield domainCommand(self.server, "records", "shop.example")
        self.assertEqual(status, 1)
        self.assertIn("is missing", err)
        self.assertEqual(keyFiles(self.server, "shop.example"), [])

    @inlineCallbacks
    def test_readdingReusesTheKeyLeftBehind(self):
        yield self.loginAs("root@example.test", "admin pw")
        added = yield self.api.json("POST", "/domains", {"name": "shop.example"}, 201)
        yield self.api.json("DELETE", "/domains/shop.example")
        self.patch(mobile, "dkimSelector", lambda now=None: "mailraven209912")
        again = yield self.api.json("POST", "/domains", {"name": "shop.example"}, 201)
        self.assertEqual(again["dkim_selector"], added["dkim_selector"])
        self.assertEqual(again["dns_records"], added["dns_records"])

    @inlineCallbacks
    def test_parallelAddsPrintTheKeyThatSigns(self):
        yield self.loginAs("root@example.test", "admin pw")
        responses = yield gatherResults(
            [
                self.api.request("POST", "/domains", {"name": "race.example"})
                for _ in range(8)
            ]
        )
        bodies = yield gatherResults([r.content() for r in responses])
        codes = sorted(r.code for r in responses)
        self.assertEqual(codes, [201] + [409] * 7)
        [created] = [
            json.loads(b)
            for r, b in zip(responses, bodies, strict=True)
            if r.code == 201
        ]
        selector = created["dkim_selector"]
        self.assertEqual(keyFiles(self.server, "race.example"), [f"{selector}.key"])
        onDisk = publicKeyOf(
            os.path.join(self.server.dataDir, "dkim", "race.example", f"{selector}.key")
        )
        name = f"{selector}._domainkey.race.example"
        self.assertEqual(
            publishedTXT(created["dns_records"], name),
            f"v=DKIM1; k=rsa; p={onDisk}".encode(),
        )

    def test_keyCreationNeverReplacesAKey(self):
        directory = os.path.abspath(self.mktemp())
        first = createDKIMKey(directory, "s1")
        path = os.path.join(directory, "s1.key")
        with open(path, "rb") as f:
            pem = f.read()
        self.assertEqual(createDKIMKey(directory, "s1"), first)
        with open(path, "rb") as f:
            self.assertEqual(f.read(), pem)
        self.assertFalse(createPrivate(path, b"other"))
        with open(path, "rb") as f:
            self.assertEqual(f.read(), pem)
        self.assertEqual(os.listdir(directory), ["s1.key"])


class AdminAliasDomainRaceTests(AdminCase):
    @inlineCallbacks
    def test_anAliasNeverOutlivesItsDomain(self):
        """Found by an attacker: an alias added while its domain was being
        removed outlived it (16 of 30 rounds) and came back with the domain."""
        yield self.loginAs("root@example.test", "admin pw")
        for round in range(8):
            name = f"race{round}.example"
            yield self.api.json("POST", "/domains", {"name": name}, expect=201)
            responses = yield gatherResults(
                [
                    self.api.request(
                        "POST",
                        "/aliases",
                        {"address": f"@{name}", "members": ["alice@example.test"]},
                    ),
                    self.api.request("DELETE", f"/domains/{name}"),
                ]
            )
            codes = tuple(r.code for r in responses)
            for response in responses:
                yield response.content()
            # the alias first (the removal is refused) or the removal first
            # (the alias is refused): never both
            self.assertIn(codes, [(201, 409), (400, 200)], round)
        domains = {d.name for d in (yield self.server.root.domains.list())}
        aliases = yield self.server.root.aliases.list()
        orphans = [a for a in aliases if a.rpartition("@")[2] not in domains]
        self.assertEqual(orphans, [])

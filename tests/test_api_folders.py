"""Folders over the mobile API (treq) and IMAP (imaplib) against one running
server: both views show one state."""

from __future__ import annotations

import time

from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase

from mailraven.api.folders import FolderRequests
from mailraven.api.http import APIError
from mailraven.store.folders import MAX_FOLDERS
from mailraven.testing import MemoryFolderStore, MemoryMessageStore
from tests.helpers import PASSWORD, RunningServer
from tests.test_imap_e2e import ORIGINAL, apiCall, ok, sendBySMTP, starttls
from tests.test_mobile_api import APIClient


def imapSession(port: int, work):
    """Blocking: log alice in, run C{work(client)}, log out."""
    client = starttls(port)
    try:
        ok(client.login("alice@example.test", PASSWORD))
        return work(client)
    finally:
        client.logout()


def listed(client) -> list[str]:
    return [
        line.decode().rsplit(' "/" ', 1)[1].strip('"') for line in ok(client.list())
    ]


class FolderAPITests(TestCase):
    timeout = 120

    @inlineCallbacks
    def setUp(self):
        self.server = RunningServer(self)
        yield self.server.addUser("alice@example.test")
        yield self.server.addUser("carol@example.test")
        self.api = APIClient(self, self.server.apiPort)
        yield self.api.login()

    def imap(self, work):
        return deferToThread(imapSession, self.server.imapPort, work)

    @inlineCallbacks
    def folders(self):
        return {
            f["name"]: f for f in (yield self.api.json("GET", "/folders"))["folders"]
        }

    @inlineCallbacks
    def test_listShowsTheSystemFoldersFirstWithCounts(self):
        yield deferToThread(sendBySMTP, self.server.smtpPort, ORIGINAL)
        yield self.api.json("POST", "/folders", {"name": "Aardvark"}, expect=201)
        body = yield self.api.json("GET", "/folders")
        names = [f["name"] for f in body["folders"]]
        self.assertEqual(
            names, ["INBOX", "Sent", "Drafts", "Junk", "Trash", "Archive", "Aardvark"]
        )
        inbox = body["folders"][0]
        self.assertEqual(
            inbox,
            {
                "id": "inbox",
                "name": "INBOX",
                "special_use": None,
                "system": True,
                "total": 1,
                "unread": 1,
                "subscribed": True,
            },
        )
        self.assertEqual(body["folders"][1]["special_use"], "\\Sent")
        self.assertFalse(body["folders"][6]["system"])

    @inlineCallbacks
    def test_aFolderMadeOverTheApiIsListedByImapAndTheReverse(self):
        made = yield self.api.json(
            "POST", "/folders", {"name": "Work/Projects"}, expect=201
        )
        self.assertTrue(made["id"].startswith("folder-"))
        self.assertEqual((made["name"], made["subscribed"]), ("Work/Projects", True))

        def createOverImap(client):
            names = listed(client)
            ok(client.create("Receipts"))
            return names

        names = yield self.imap(createOverImap)
        self.assertIn("Work/Projects", names)
        self.assertIn("Work", names)  # the superior, as IMAP CREATE makes it
        folders = yield self.folders()
        self.assertIn("Receipts", folders)
        self.assertEqual(folders["Receipts"]["subscribed"], False)

    @inlineCallbacks
    def test_aMessageMovedIntoAUserFolderIsThereOverImap(self):
        yield deferToThread(sendBySMTP, self.server.smtpPort, ORIGINAL)
        yield deferToThread(sendBySMTP, self.server.smtpPort, ORIGINAL)
        made = yield self.api.json("POST", "/folders", {"name": "Plans"}, expect=201)
        [newest, oldest] = (yield self.api.json("GET", "/messages"))["messages"]
        moved = yield self.api.json(
            "PATCH",
            f"/messages/{newest['id']}",
            {"mailbox": made["id"], "read_state": True},
        )
        self.assertEqual((moved["mailbox"], moved["read_state"]), (made["id"], True))
        inPlans = yield self.api.json("GET", "/messages", mailbox=made["id"])
        self.assertEqual([m["id"] for m in inPlans["messages"]], [newest["id"]])
        self.assertEqual(inPlans["total"], 1)

        def look(client):
            status = ok(client.status("Plans", "(MESSAGES UIDNEXT)"))
            ok(client.select("Plans"))
            fetched = ok(client.uid("FETCH", "1:*", "(UID FLAGS)"))
            ok(client.select("INBOX"))
            inbox = ok(client.uid("SEARCH", "ALL"))
            return status, fetched, inbox

        status, fetched, inbox = yield self.imap(look)
        self.assertIn(b"MESSAGES 1 UIDNEXT 2", status[0])
        self.assertIn(b"UID 1 FLAGS (\\Seen)", fetched[0])
        self.assertEqual(inbox, [b"1"])  # the newest (UID 2) left INBOX
        folders = yield self.folders()
        self.assertEqual((folders["Plans"]["total"], folders["INBOX"]["total"]), (1, 1))

        # a rename keeps the key, the mail and its UIDs
        renamed = yield self.api.json(
            "PATCH", f"/folders/{made['id']}", {"name": "Trips/2026"}
        )
        self.assertEqual((renamed["id"], renamed["total"]), (made["id"], 1))

        def afterRename(client):
            ok(client.select("Trips/2026"))
            return listed(client), ok(client.uid("SEARCH", "ALL"))

        names, uids = yield self.imap(afterRename)
        self.assertIn("Trips/2026", names)
        self.assertEqual(uids, [b"1"])
        self.assertNotIn("Plans", (yield self.folders()))

        # deleting removes the folder and its mail, as IMAP DELETE does
        gone = yield self.api.json("DELETE", f"/folders/{made['id']}")
        self.assertEqual(
            gone,
            {"deleted": made["id"], "name": "Trips/2026", "messages_removed": 1},
        )
        names = yield self.imap(listed)
        self.assertNotIn("Trips/2026", names)
        yield self.api.json("GET", f"/messages/{newest['id']}", expect=404)
        yield self.api.json("GET", "/messages", mailbox=made["id"], expect=404)

    @inlineCallbacks
    def test_aFolderRenamedOrDeletedOverImapIsSoOverTheApi(self):
        made = yield self.api.json("POST", "/folders", {"name": "Old"}, expect=201)
        yield self.imap(lambda client: ok(client.rename("Old", "New")))
        folders = yield self.folders()
        self.assertEqual(folders["New"]["id"], made["id"])
        yield self.imap(lambda client: ok(client.delete("New")))
        yield self.api.json(
            "PATCH", f"/folders/{made['id']}", {"name": "X"}, expect=404
        )

    @inlineCallbacks
    def test_anotherAccountsFolderIsNotFound(self):
        made = yield self.api.json("POST", "/folders", {"name": "Mine"}, expect=201)
        yield deferToThread(sendBySMTP, self.server.smtpPort, ORIGINAL)
        [message] = (yield self.api.json("GET", "/messages"))["messages"]
        carol = APIClient(self, self.server.apiPort)
        yield carol.login("carol@example.test")
        for method, body in (("PATCH", {"name": "Stolen"}), ("DELETE", None)):
            error = yield carol.json(method, f"/folders/{made['id']}", body, expect=404)
            self.assertEqual(error["error"], "not_found")
        yield carol.json("GET", "/messages", mailbox=made["id"], expect=404)
        # alice's message into carol's folder: neither is hers
        carols = yield carol.json("POST", "/folders", {"name": "C"}, expect=201)
        yield self.api.json(
            "PATCH", f"/messages/{message['id']}", {"mailbox": carols["id"]}, expect=404
        )
        self.assertIn("Mine", (yield self.folders()))
        self.assertNotIn(
            "Mine",
            {f["name"] for f in (yield carol.json("GET", "/folders"))["folders"]},
        )

    @inlineCallbacks
    def test_damagedInputIsAClearError(self):
        yield self.api.json("POST", "/folders", {"name": "Taken"}, expect=201)
        response = yield self.api.request("POST", "/folders", raw=b"{not json")
        self.assertEqual(
            (response.code, (yield response.json())["error"]), (400, "bad_json")
        )
        for body, status, error in [
            ({"name": "bell\x07"}, 400, "bad_name"),
            ({"name": "line\nbreak"}, 400, "bad_name"),
            ({"name": "x" * 201}, 400, "bad_name"),
            ({"name": "a/../b"}, 400, "bad_name"),
            ({"name": ".."}, 400, "bad_name"),
            ({"name": ""}, 400, "bad_name"),
            ({"name": 7}, 400, "bad_request"),
            ({"colour": "red"}, 400, "bad_request"),
            (["Taken"], 400, "bad_request"),
            ({"name": "Taken"}, 409, "exists"),
            ({"name": "inbox"}, 409, "exists"),
        ]:
            answer = yield self.api.json("POST", "/folders", body, expect=status)
            self.assertEqual(answer["error"], error, body)
            self.assertEqual(set(answer), {"error", "message"})
        for key in ("sent", "trash", "archive"):
            refused = yield self.api.json(
                "PATCH", f"/folders/{key}", {"name": "Elsewhere"}, expect=409
            )
            self.assertEqual(refused["error"], "refused")
            yield self.api.json("DELETE", f"/folders/{key}", expect=409)
        yield self.api.json("DELETE", "/folders/inbox", expect=409)
        yield self.api.json("PATCH", "/folders/nowhere", {"name": "x"}, expect=404)
        yield self.api.json("DELETE", "/folders/folder-1", expect=404)
        yield self.api.json("PATCH", "/folders/inbox", {}, expect=400)
        self.assertNotIn("Elsewhere", (yield self.folders()))

    @inlineCallbacks
    def test_anIdleSessionSeesAMoveIntoItsFolderWithinASecond(self):
        yield deferToThread(sendBySMTP, self.server.smtpPort, ORIGINAL)
        made = yield self.api.json("POST", "/folders", {"name": "Watched"}, expect=201)
        [message] = (yield self.api.json("GET", "/messages"))["messages"]
        port, token = self.server.apiPort, self.api.token

        def session():
            client = starttls(self.server.imapPort)
            ok(client.login("alice@example.test", PASSWORD))
            ok(client.select("Watched"))
            client.send(b"i1 IDLE\r\n")
            assert client.readline().startswith(b"+ "), "no continuation"
            time.sleep(0.5)  # past IDLE's first look at the folder: only a
            # signal (not its next poll, 15 s on) reports the move in time
            path = f"/messages/{message['id']}"
            apiCall(port, "PATCH", path, {"mailbox": made["id"]}, token)
            moved = time.monotonic()
            exists = client.readline()
            delay = time.monotonic() - moved
            client.send(b"DONE\r\n")
            client.readline()
            client.logout()
            return exists, delay

        exists, delay = yield deferToThread(session)
        self.assertEqual(exists, b"* 1 EXISTS\r\n")
        self.assertLess(delay, 1.0)


class FolderRequestsTests(SynchronousTestCase):
    def test_theFolderLimitIsA409(self):
        store = MemoryFolderStore(MemoryMessageStore())
        requests = FolderRequests(store)
        for n in range(MAX_FOLDERS - 6):
            self.successResultOf(requests.create(1, {"name": f"f{n}"}))
        failure = self.failureResultOf(requests.create(1, {"name": "one more"}))
        error = failure.check(APIError) and failure.value
        self.assertEqual((error.status, error.error), (409, "limit"))
        self.assertIn("at most 1000 folders", error.message)

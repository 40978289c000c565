"""schemathesis drives the running API from its own OpenAPI document."""

from __future__ import annotations

import os
import subprocess
import sys

from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tests.helpers import RunningServer, sendWithSmtplib
from tests.test_mobile_api import APIClient
from tests.tools import requireTool


def schemathesisCommand() -> list[str]:
    local = os.path.join(os.path.dirname(sys.executable), "schemathesis")
    if os.path.exists(local):
        return [local]
    return [requireTool("schemathesis", "tox installs it with the test extras")]


class SchemathesisTests(TestCase):
    timeout = 600

    @inlineCallbacks
    def test_noServerErrorOnAnyGeneratedRequest(self):
        command = schemathesisCommand()
        server = RunningServer(self, api__rate_limit=1_000_000)
        yield server.addUser("alice@example.test")
        yield deferToThread(
            sendWithSmtplib,
            server.smtpPort,
            "bob@example.org",
            ["alice@example.test"],
            b"Subject: s\r\n\r\nbody\r\n",
        )
        api = APIClient(self, server.apiPort)
        yield api.login()
        [entry] = (yield api.json("GET", "/messages"))["messages"]
        config = os.path.abspath(self.mktemp())
        with open(config, "w") as f:
            # a real message id, so the {entryId} operations reach the store
            f.write(f'[parameters]\n"path.entryId" = "{entry["id"]}"\n')
        base = f"http://127.0.0.1:{server.apiPort}/api"
        result = yield deferToThread(
            subprocess.run,
            command
            + [
                "--config-file",
                config,
                "run",
                base + "/v1/openapi.json",
                "--url",
                base,
                "--checks",
                "not_a_server_error",
                "--header",
                f"Authorization: Bearer {api.token}",
                "--max-examples",
                "30",
                "--seed",
                "1",
                "--workers",
                "1",
                "--phases",
                "examples,coverage,fuzzing",
                "--exclude-path",
                "/v1/auth/logout",
                "--exclude-path",  # a stream: its answer never ends
                "/v1/events",
                "--request-timeout",
                "10",
            ],
            capture_output=True,
            timeout=500,
        )
        out = result.stdout.decode(errors="replace")
        self.assertEqual(result.returncode, 0, out[-6000:])
        self.assertNotIn("Server error", out)

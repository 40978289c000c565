"""Debian's Postfix in a temp dir as the "remote domain's MX": a real MTA on a
loopback port that accepts mail for its domains into one maildir, refuses
C{reject@} with 550 and defers C{defer@} with 451. Needs root (Postfix drops
to its own users) and C{apt-get install postfix}."""

from __future__ import annotations

import email
import os
import shutil
import subprocess
import tempfile
import time

from twisted.trial.unittest import SkipTest

from tests.process import freePort
from tests.tools import inCI, requireTool


def requirePostfix() -> None:
    requireTool("postfix")
    if os.getuid() == 0:
        return
    if inCI():
        raise AssertionError("postfix needs root")
    raise SkipTest("Debian's postfix needs root")


def isolatedPostfix(
    work: str, port: int, hostname: str, domains: list[str], extra: dict
) -> tuple[str, str, str]:
    """
    An isolated Postfix under C{work}/postfix (its own main.cf/master.cf, the
    system's untouched): smtpd on 127.0.0.1:C{port}, every recipient of
    C{domains} into one maildir. Returns (config dir, queue, maildirs).
    Shared by these tests and bench/smtp_accept.py.
    """
    directory = os.path.join(work, "postfix")
    queue, data = os.path.join(directory, "queue"), os.path.join(directory, "data")
    maildirs = os.path.join(directory, "maildirs")
    for path in (queue, data, maildirs):
        os.makedirs(path)
    for path in (work, directory):
        os.chmod(path, 0o755)  # postfix's own users must reach their dirs
    shutil.chown(data, "postfix")
    shutil.chown(maildirs, 65534, 65534)
    main = {
        "queue_directory": queue,
        "data_directory": data,
        "maillog_file": os.path.join(directory, "maillog"),
        "maillog_file_prefixes": directory,
        "command_directory": "/usr/sbin",
        "daemon_directory": "/usr/lib/postfix/sbin",
        "shlib_directory": "/usr/lib/postfix",
        "meta_directory": "/etc/postfix",
        "mail_owner": "postfix",
        "setgid_group": "postdrop",
        "inet_interfaces": "127.0.0.1",
        "inet_protocols": "ipv4",
        "mydestination": "",
        "myhostname": hostname,
        "mynetworks": "127.0.0.0/8",
        "virtual_mailbox_domains": " ".join(domains),
        "virtual_mailbox_base": maildirs,
        "virtual_mailbox_maps": "static:user/",
        "virtual_uid_maps": "static:65534",
        "virtual_gid_maps": "static:65534",
        "alias_maps": "",
        "alias_database": "",
        "local_recipient_maps": "",
        "smtputf8_enable": "no",
        "compatibility_level": "3.6",
        **extra,
    }
    with open(os.path.join(directory, "main.cf"), "w") as f:
        f.writelines(f"{k} = {v}\n" for k, v in main.items())
    with open("/etc/postfix/master.cf") as f:
        lines = f.readlines()
    out = []
    for line in lines:
        fields = line.split()
        if line[:1].isspace() or line.startswith("#") or len(fields) < 8:
            out.append(line)
            continue
        if fields[0] == "smtp" and fields[1] == "inet":
            fields[0] = f"127.0.0.1:{port}"
        if fields[4] == "y":
            fields[4] = "n"  # no chroot
        rest = " " + " ".join(fields[8:]) if fields[8:] else ""
        out.append("  ".join(fields[:8]) + rest + "\n")
    with open(os.path.join(directory, "master.cf"), "w") as f:
        f.writelines(out)
    subprocess.run(["postfix", "-c", directory, "set-permissions"], capture_output=True)
    return directory, queue, maildirs


class Postfix:
    def __init__(self, testCase, domains: list[str]) -> None:
        requirePostfix()
        self.port = freePort()
        # Short: Postfix's unix sockets live under it (sun_path is 108 bytes).
        work = tempfile.mkdtemp(prefix="mr-postfix-", dir="/tmp")
        testCase.addCleanup(shutil.rmtree, work, True)
        restrictions = (
            "check_recipient_access inline:{"
            " {reject@" + domains[0] + "=550 5.1.1 No such user here},"
            " {defer@" + domains[0] + "=451 4.3.0 Try again later} }"
        )
        self.dir, _, self.maildirs = isolatedPostfix(
            work,
            self.port,
            "mx.remote.example",
            domains,
            {
                "smtpd_recipient_restrictions": restrictions,
                # Keep the message as it arrived, so tests see what was sent:
                # Postfix drops Return-Path: and adds a missing Date: and
                # Message-ID: for clients on its own interfaces by default.
                "message_drop_headers": "bcc, content-length, resent-bcc",
                "local_header_rewrite_clients": "",
            },
        )
        self.running = False
        testCase.addCleanup(self.stop)

    def start(self) -> None:
        subprocess.run(
            ["postfix", "-c", self.dir, "start"], check=True, capture_output=True
        )
        self.running = True

    def stop(self) -> None:
        if self.running:
            subprocess.run(["postfix", "-c", self.dir, "stop"], capture_output=True)
            self.running = False

    def delivered(self) -> list[bytes]:
        """Raw messages in the maildir, oldest first."""
        new = os.path.join(self.maildirs, "user", "new")
        if not os.path.isdir(new):
            return []
        paths = sorted(
            (os.path.join(new, n) for n in os.listdir(new)), key=os.path.getmtime
        )
        found = []
        for path in paths:
            with open(path, "rb") as f:
                found.append(f.read())
        return found

    def waitFor(self, count: int, timeout: float = 30) -> list[bytes]:
        """Blocking: wait until C{count} messages arrived."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.delivered()
            if len(found) >= count:
                return found
            time.sleep(0.1)
        with open(os.path.join(self.dir, "maillog")) as f:
            log = f.read()[-3000:]
        raise AssertionError(f"{count} messages did not arrive; maillog:\n{log}")


def subjects(messages: list[bytes]) -> list[str]:
    return [str(email.message_from_bytes(m)["Subject"]) for m in messages]

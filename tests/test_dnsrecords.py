"""The DNS records the quickstart prints, parsed back as a zone file would be."""

from __future__ import annotations

import os
import re

import dkim
from twisted.trial.unittest import SynchronousTestCase

from mailraven.api.stspolicy import PublishedPolicy
from mailraven.config import load
from mailraven.dnsrecords import txtRecord, txtStrings
from mailraven.quickstart import quickstart

RECORD = re.compile(r"^(\S+)\.\s+(MX|A|AAAA|CNAME|TXT)\s+(.*)$", re.M)
QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')


def parseRecords(text: str) -> dict[tuple[str, str], list[str]]:
    """(name, type) -> value; a TXT value is its list of quoted strings."""
    records = {}
    for name, kind, value in RECORD.findall(text):
        if kind == "TXT":
            strings = QUOTED.findall(value)
            assert QUOTED.sub("", value).strip() == "", value
            records[name, kind] = [re.sub(r"\\(.)", r"\1", s) for s in strings]
        else:
            records[name, kind] = value
    return records


def tags(value: str) -> dict[str, str]:
    return {
        k.strip(): v.strip()
        for k, _, v in (part.partition("=") for part in value.split(";"))
    }


class TXTStringTests(SynchronousTestCase):
    def test_splitAt255OctetsAndJoinedBack(self):
        for length in (0, 1, 254, 255, 256, 510, 511, 1000):
            value = "".join(chr(ord("a") + i % 26) for i in range(length))
            strings = txtStrings(value)
            self.assertEqual("".join(strings), value)
            self.assertTrue(all(len(s.encode()) <= 255 for s in strings))
            self.assertEqual(len(strings), -(-length // 255))

    def test_quotesAndBackslashesAreEscaped(self):
        self.assertEqual(txtRecord('a"b\\c'), '"a\\"b\\\\c"')
        parsed = parseRecords("x.example. TXT " + txtRecord('a"b'))
        self.assertEqual(parsed["x.example", "TXT"], ['a"b'])


class QuickstartRecordsTests(SynchronousTestCase):
    def quickstart(self, **overrides) -> tuple[str, str]:
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        config = load(environ={}).with_(
            server__data_dir=os.path.join(directory, "data"), **overrides
        )
        out = quickstart(
            config, "me@example.org", os.path.join(directory, "m.toml"), None, None
        )
        return out, config.dataDir

    def test_dkimRecordIsSplitAndVerifiesASignature(self):
        """A 2048-bit key does not fit one TXT string: the printed strings
        are at most 255 octets and, joined, give the exact key record that
        dkimpy verifies a signature made with the written private key with."""
        out, dataDir = self.quickstart()
        records = parseRecords(out)
        [(name, _)] = [k for k in records if "._domainkey." in k[0]]
        strings = records[name, "TXT"]
        self.assertGreater(len(strings), 1)
        self.assertTrue(all(len(s.encode()) <= 255 for s in strings))
        value = "".join(strings)
        self.assertRegex(value, r"^v=DKIM1; k=rsa; p=[A-Za-z0-9+/]+=*$")
        selector = name.partition(".")[0]
        with open(os.path.join(dataDir, "dkim", selector + ".key"), "rb") as f:
            privateKey = f.read()
        message = (
            b"From: me@example.org\r\nTo: you@example.net\r\n"
            b"Subject: hello\r\n\r\nHello.\r\n"
        )
        signature = dkim.sign(message, selector.encode(), b"example.org", privateKey)
        asked = []

        def dnsfunc(qname, timeout=5):
            asked.append(qname)
            return value.encode() if qname == name.encode() + b"." else b""

        self.assertTrue(dkim.verify(signature + message, dnsfunc=dnsfunc))
        self.assertEqual(asked, [name.encode() + b"."])

    def test_dmarcStartsAtNoneWithAdviceOnTightening(self):
        out, _ = self.quickstart()
        [value] = parseRecords(out)["_dmarc.example.org", "TXT"]
        dmarc = tags(value)
        self.assertEqual(dmarc["v"], "DMARC1")
        self.assertEqual(dmarc["p"], "none")
        self.assertEqual(dmarc["rua"], "mailto:postmaster@example.org")
        self.assertRegex(out, r"DMARC starts at p=none.*p=quarantine, then to p=reject")

    def test_policyHostReachesTheMXAndTheIdFollowsTheMode(self):
        out, _ = self.quickstart()
        records = parseRecords(out)
        self.assertEqual(records["mta-sts.example.org", "CNAME"], "mail.example.org.")
        [testing] = records["_mta-sts.example.org", "TXT"]
        self.assertEqual(
            testing,
            PublishedPolicy("testing", ("mail.example.org",), 86400).record(),
        )
        self.assertIn("mode: testing", out)
        self.assertIn("over HTTPS on port 443", out)
        enforced, _ = self.quickstart(mtasts__mode="enforce")
        [enforcing] = parseRecords(enforced)["_mta-sts.example.org", "TXT"]
        self.assertEqual(tags(enforcing)["v"], "STSv1")
        self.assertNotEqual(tags(enforcing)["id"], tags(testing)["id"])
        self.assertIn("mode: enforce", enforced)

    def test_whatThePolicyStillNeedsIsSaid(self):
        """The defaults have no HTTPS listener and a self-signed certificate:
        both are named with the keys that fix them; neither when set."""
        out, _ = self.quickstart()
        self.assertIn("No HTTPS listener yet", out)
        self.assertIn('api.listen = ["tcp:8080", "tls:tcp:443"]', out)
        self.assertIn("set acme.enabled = true", out)
        ready, _ = self.quickstart(
            api__listen=["tcp:8080", "tls:tcp:443"], acme__enabled=True
        )
        self.assertNotIn("No HTTPS listener", ready)
        self.assertNotIn("self-signed", ready)

    def test_writtenConfigKeepsThePolicyThePrintedIdIsFor(self):
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        configPath = os.path.join(directory, "m.toml")
        config = load(environ={}).with_(
            server__data_dir=os.path.join(directory, "data"),
            mtasts__mode="enforce",
            mtasts__max_age=604800,
        )
        out = quickstart(config, "me@example.org", configPath, None, None)
        [record] = parseRecords(out)["_mta-sts.example.org", "TXT"]
        written = load(configPath, environ={})
        self.assertEqual(written["mtasts.mode"], "enforce")
        self.assertEqual(
            record,
            PublishedPolicy(
                "enforce", ("mail.example.org",), written["mtasts.max_age"]
            ).record(),
        )

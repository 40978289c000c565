"""The policy pipeline's checks keep the IPolicyCheck contract, the real one
(mail-auth) and the fake alike; the first refusal wins."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from mailraven.interfaces import IPolicyCheck
from mailraven.policy.mailauth import MailAuthCheck
from mailraven.policy.pipeline import ACCEPT, Verdict, runChecks
from mailraven.testing import FakePolicyCheck


class PolicyCheckContractTests(SynchronousTestCase):
    def test_mailAuthCheckProvidesIPolicyCheck(self):
        check = MailAuthCheck(None, Clock(), None, 5.0, "mx.example.test")
        self.assertTrue(verifyObject(IPolicyCheck, check))
        self.assertEqual(check.name, "mailauth")

    def test_fakeProvidesIPolicyCheck(self):
        self.assertTrue(verifyObject(IPolicyCheck, FakePolicyCheck()))


class RunChecksTests(SynchronousTestCase):
    def test_noChecksAccept(self):
        self.assertIs(self.successResultOf(runChecks([], object())), ACCEPT)

    def test_firstRefusalWinsAndStopsTheStage(self):
        refusal = Verdict.refuse(550, "5.7.1", "no", "test")
        checks = [FakePolicyCheck(), FakePolicyCheck(refusal), FakePolicyCheck()]
        subject = object()
        self.assertIs(self.successResultOf(runChecks(checks, subject)), refusal)
        self.assertEqual([c.seen for c in checks], [[subject], [subject], []])

"""The operators' documentation names every configuration key."""

from __future__ import annotations

import os

from twisted.trial.unittest import SynchronousTestCase

from mailraven.config import SCHEMA
from tests.process import ROOT


class DocsTests(SynchronousTestCase):
    def test_everyKeyIsDocumented(self):
        with open(os.path.join(ROOT, "docs", "configuration.md")) as f:
            text = f.read()
        for section, keys in SCHEMA.items():
            for key in keys:
                self.assertIn(f"`{section}.{key}`", text)
                self.assertIn(f"`MAILRAVEN_{section.upper()}_{key.upper()}`", text)

    def test_readmeStartsWithTheTwoCommands(self):
        with open(os.path.join(ROOT, "README.md")) as f:
            head = f.read(1500)
        self.assertIn("twistd -n mailraven", head)
        self.assertIn("bin/tox", head)

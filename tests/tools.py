"""External programs the tests drive (swaks, strace, pebble, postfix, ...)."""

from __future__ import annotations

import os
import shutil

from twisted.trial.unittest import SkipTest


def inCI() -> bool:
    """CI sets C{CI}; there every tool .ci/run installs must be present."""
    return bool(os.environ.get("CI"))


def requireTool(name: str, why: str = "") -> str:
    """
    The path of program C{name}. Without it the test is skipped on a
    developer's machine but fails in CI: a test that needs a tool CI forgot
    to install must not pass there by not running.
    """
    found = shutil.which(name)
    if found:
        return found
    message = f"{name} is not installed (.ci/run installs it){why and ': ' + why}"
    if inCI():
        raise AssertionError(message)
    raise SkipTest(message)

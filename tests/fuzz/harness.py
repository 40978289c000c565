"""What every fuzz target shares: running under atheris, and corpus paths.

A target module defines C{check(data: bytes) -> None}, which raises (an
AssertionError for a broken invariant) on a defect. Run as a script it hands
C{check} to atheris (libFuzzer); tests/test_fuzz.py calls it directly on the
seed corpus and on generated inputs, so CI needs no coverage guidance.
"""

from __future__ import annotations

import sys
from contextlib import nullcontext
from pathlib import Path
from typing import Callable, ContextManager

ROOT = Path(__file__).resolve().parents[2]
CORPORA = Path(__file__).resolve().parent / "corpus"


def seeds(name: str) -> list[bytes]:
    """The committed seed inputs of target C{name}, in a stable order."""
    return [p.read_bytes() for p in sorted((CORPORA / name).iterdir()) if p.is_file()]


def fuzz(check: Callable[[bytes], None]) -> None:
    """Run C{check} under atheris with this process's libFuzzer arguments."""
    import atheris
    from twisted.logger import globalLogBeginner

    # Until logging begins, Twisted keeps the last 64k events, and with them
    # every session they name: memory that looks like a leak of ours.
    globalLogBeginner.beginLoggingTo([], discardBuffer=True, redirectStandardIO=False)
    atheris.Setup(sys.argv, check)
    atheris.Fuzz()


def instrumented(*stdlib: str) -> ContextManager[object]:
    """
    For a target run as a script: put this checkout first on the path and
    instrument what is imported inside the block for coverage: C{mailraven}
    and the named stdlib packages it leans on (all of Twisted would take
    minutes).
    """
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import atheris

    return atheris.instrument_imports(include=["mailraven", *stdlib])


def uninstrumented(*stdlib: str) -> ContextManager[object]:
    """L{instrumented} for a target imported by the tests: nothing to do."""
    return nullcontext()

"""DKIM signing of outgoing mail (dkimpy): rsa-sha256, relaxed/relaxed.

A domain added with C{mailraven domain add} (or the admin API) signs with
its own key, C{data_dir/dkim/<domain>/<selector>.key} under the selector
recorded for it in the C{domains} table (the one its printed record names;
never merely the newest file, which a later month may have left), looked up
at each signature so a domain added while the server runs signs at once.
Every other domain signs with the newest C{data_dir/dkim/<selector>.key}
(what C{mailraven quickstart} and the container's first start make; each
publishes the same public key under C{<selector>._domainkey}). A domain in
C{server.domains} always signs with the server key, even if a data dir of an
earlier release holds a table row and key of its own for it: that key's
selector may be the server key's, and its record was never published. The
selector is the key's file name. Blocking: run it on a file thread.
"""

from __future__ import annotations

import os
from typing import Callable, Iterable

import dkim

from mailraven.store.domains import asciiDomain

SIGNED_HEADERS = [
    b"from",
    b"to",
    b"cc",
    b"subject",
    b"date",
    b"message-id",
    b"reply-to",
    b"in-reply-to",
    b"references",
    b"mime-version",
    b"content-type",
    b"content-transfer-encoding",
]


_NOT_A_FIELD = "a header line is neither a field (Name: value) nor a continuation"


class UnsignableMessage(Exception):
    """dkimpy cannot parse the message's header section, so it cannot be
    signed as it is; sending it again will not change that."""


def headerProblem(head: bytes) -> str | None:
    """
    Why dkimpy would refuse this header section (a line that is neither a
    field nor a continuation), in words for the author; None if it parses.
    Submission asks before accepting, so the queue never holds mail it
    cannot sign.
    """
    try:
        dkim.rfc822_parse(head)
    except dkim.MessageFormatError:
        return _NOT_A_FIELD
    return None


class DKIMSigner:
    def __init__(
        self,
        dkimDir: str,
        configured: Iterable[str] = (),
        selectorOf: Callable[[str], str | None] | None = None,
    ) -> None:
        """C{configured} is C{server.domains}; C{selectorOf(domain)} gives an
        added domain's recorded selector (None if not added), blocking."""
        self._dkimDir = dkimDir
        self._configured = frozenset(asciiDomain(d.rstrip(".")) for d in configured)
        self._selectorOf = selectorOf or (lambda domain: None)
        self.selector, self._key = _newestKey(dkimDir)

    def sign(self, message: bytes, domain: str) -> bytes:
        """C{message} with a DKIM-Signature for C{domain} prepended (or as is,
        without a key). Raises L{UnsignableMessage} for a broken header."""
        selector, key = self._keyFor(domain)
        if key is None or selector is None:
            return message
        present = {
            line.split(b":", 1)[0].strip().lower()
            for line in message.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
            if b":" in line and not line[:1].isspace()
        }
        headers = [h for h in SIGNED_HEADERS if h in present]
        try:
            signature = dkim.sign(
                message,
                selector.encode(),
                domain.encode(),
                key,
                canonicalize=(b"relaxed", b"relaxed"),
                include_headers=headers,
            )
        except dkim.MessageFormatError:
            raise UnsignableMessage(_NOT_A_FIELD) from None
        return signature + message

    def _keyFor(self, domain: str) -> tuple[str | None, bytes | None]:
        """An added domain's own key under its recorded selector, else the
        server's (configured domains always)."""
        name = asciiDomain(domain.rstrip("."))
        if name in self._configured:
            return self.selector, self._key
        selector = self._selectorOf(name)
        if selector:
            key = _readKey(os.path.join(self._dkimDir, name), selector)
            if key is not None:
                return selector, key
        return self.selector, self._key


def _newestKey(directory: str) -> tuple[str | None, bytes | None]:
    """(selector, PEM) of the last C{<selector>.key} file by name, or Nones."""
    keys = sorted(
        name
        for name in _listdir(directory)
        if name.endswith(".key") and os.path.isfile(os.path.join(directory, name))
    )
    if not keys:
        return None, None
    with open(os.path.join(directory, keys[-1]), "rb") as f:
        return keys[-1][: -len(".key")], f.read()


def _readKey(directory: str, selector: str) -> bytes | None:
    """The PEM of C{directory/<selector>.key}, or None without one."""
    if "/" in selector or selector.startswith("."):
        return None
    try:
        with open(os.path.join(directory, f"{selector}.key"), "rb") as f:
            return f.read()
    except (OSError, ValueError):  # ValueError: a NUL in the name
        return None


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except (OSError, ValueError):  # ValueError: a NUL in the name
        return []

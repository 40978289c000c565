"""DKIM signing of outgoing mail (dkimpy): rsa-sha256, relaxed/relaxed.

The key is the newest C{data_dir/dkim/<selector>.key} (what C{mailraven
quickstart} and the container's first start make); the selector is its file
name. Every local domain signs with it (each publishes the same public key
under C{<selector>._domainkey}). Blocking: run it on a file thread.
"""

from __future__ import annotations

import os

import dkim

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
    def __init__(self, dkimDir: str) -> None:
        self.selector: str | None = None
        self._key: bytes | None = None
        keys = sorted(name for name in _listdir(dkimDir) if name.endswith(".key"))
        if keys:
            newest = keys[-1]
            with open(os.path.join(dkimDir, newest), "rb") as f:
                self._key = f.read()
            self.selector = newest[: -len(".key")]

    def sign(self, message: bytes, domain: str) -> bytes:
        """C{message} with a DKIM-Signature for C{domain} prepended (or as is,
        without a key). Raises L{UnsignableMessage} for a broken header."""
        if self._key is None or self.selector is None:
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
                self.selector.encode(),
                domain.encode(),
                self._key,
                canonicalize=(b"relaxed", b"relaxed"),
                include_headers=headers,
            )
        except dkim.MessageFormatError:
            raise UnsignableMessage(_NOT_A_FIELD) from None
        return signature + message


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []

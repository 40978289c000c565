"""SASL for submission: SCRAM-SHA-256 (RFC 7677, via scramp), PLAIN (RFC
4616) and LOGIN. Guessing is limited by
L{mailraven.policy.logins.LoginLimiter}, shared with the API.

Mechanisms are decoded here; the password is checked by the user store
(argon2id, in a thread). Nothing is offered or accepted before TLS.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from typing import Any

from scramp import ScramMechanism


class SASLError(Exception):
    """A malformed exchange: 501 5.5.2."""


def b64decode(text: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise SASLError("Invalid base64 data") from None


def decodePlain(text: str) -> tuple[str, str]:
    """(authentication id, password) from an RFC 4616 PLAIN response."""
    parts = b64decode(text).split(b"\0")
    if len(parts) != 3:
        raise SASLError("Invalid PLAIN response")
    authzid, authcid, password = (p.decode("utf-8", "replace") for p in parts)
    if authzid and authzid.lower() != authcid.lower():
        raise SASLError("Authorization identity must be empty or the login")
    return authcid, password


def b64encode(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def scramUsername(clientFirst: str) -> str:
    """The n= of a SCRAM client-first message (RFC 5802 5.1, =2C and =3D)."""
    gs2, _, bare = clientFirst.partition(",")  # "n" or "y"; "p=" is refused
    _, _, bare = bare.partition(",")
    if gs2 not in ("n", "y") or not bare.startswith("n="):
        raise ValueError("not a SCRAM client-first message")
    name = bare.split(",", 1)[0][2:]
    return name.replace("=2C", ",").replace("=3D", "=")


_DECOY = ScramMechanism("SCRAM-SHA-256").make_auth_info(
    secrets.token_hex(16), iteration_count=4096
)
_DECOY_SALT_KEY = secrets.token_bytes(32)


def decoyVerifier(login: str) -> tuple[bytes, bytes, bytes, int]:
    """
    The verifier an unknown login is challenged with. Its salt is the same
    for every attempt at one name and differs between names, as real
    accounts' salts do, so the server-first message cannot tell which names
    exist (one salt shared by all unknown names would); no password matches.
    """
    salt = hmac.new(_DECOY_SALT_KEY, login.lower().encode(), hashlib.sha256).digest()
    return (salt, *_DECOY[1:])


class ScramExchange:
    """
    The server side of one SCRAM-SHA-256 exchange (scramp does the maths).
    C{credentials} None (no such account) runs the exchange on a decoy, so
    an unknown login fails exactly like a wrong password.
    """

    def __init__(self, credentials: Any, login: str) -> None:
        self.known = credentials is not None
        verifier = decoyVerifier(login) if credentials is None else credentials
        self._server = ScramMechanism("SCRAM-SHA-256").make_server(
            lambda username: verifier
        )

    def first(self, clientFirst: str) -> str:
        self._server.set_client_first(clientFirst)
        return self._server.get_server_first()

    def final(self, clientFinal: str) -> str:
        """The server-final message; raises ScramException on a bad proof."""
        self._server.set_client_final(clientFinal)
        return self._server.get_server_final()

"""One ACME (RFC 8555) issuance, driven from the reactor.

certbot's maintained C{acme} library does the protocol; each of its blocking
calls runs on a one-thread pool owned by the issuer (the library's client is
not safe for concurrent use), with short network timeouts so a shutdown never
waits long on a CA. Polling waits on the reactor's clock, not in a thread.
"""

from __future__ import annotations

import datetime
import os
from typing import Any, Callable

import josepy
from acme import challenges, client, crypto_util, errors, messages
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from twisted.internet.defer import CancelledError, inlineCallbacks
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from mailraven.privatefiles import writePrivate
from mailraven.tls.alpn import TLSALPN01Responder
from mailraven.tls.challenges import HTTP01Responder

DIRECTORIES = {
    "letsencrypt": "https://acme-v02.api.letsencrypt.org/directory",
    "letsencrypt-staging": "https://acme-staging-v02.api.letsencrypt.org/directory",
}
NETWORK_TIMEOUT = 10  # seconds per HTTP request to the CA
VALIDATION_DEADLINE = 90  # seconds for the CA to validate all names
FINALIZE_DEADLINE = 30
USER_AGENT = "MailRaven (acme-python)"


class AcmeProblem(Exception):
    """The CA refused or validation failed; C{problem} is its RFC 7807 document."""

    def __init__(self, message: str, problem: dict | None = None) -> None:
        super().__init__(message)
        self.problem = problem


def directoryURL(setting: str) -> str:
    """C{letsencrypt}, C{letsencrypt-staging}, or a URL as given."""
    return DIRECTORIES.get(setting, setting)


def newPrivateKeyPEM(bits: int = 2048) -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def loadAccountKey(path: str) -> josepy.JWKRSA:
    """The account key, created (0600) on first use and kept for good."""
    if not os.path.exists(path):
        writePrivate(path, newPrivateKeyPEM())
    with open(path, "rb") as f:
        key = serialization.load_pem_private_key(f.read(), password=None)
    return josepy.JWKRSA(key=key)


def _problemOf(error: Exception) -> dict | None:
    if isinstance(error, messages.Error):
        return error.to_partial_json()
    if isinstance(error, errors.IssuanceError):
        return error.error.to_partial_json()
    return None


class BlockingAcme:
    """The CA conversation as plain blocking calls (run them in a thread)."""

    def __init__(
        self, directory: str, accountKeyPath: str, email: str, caBundle: str
    ) -> None:
        self._directory = directoryURL(directory)
        self._accountKeyPath = accountKeyPath
        self._email = email
        self._verify: Any = caBundle or True
        self._client: client.ClientV2 | None = None
        self.accountKey: josepy.JWKRSA | None = None

    def connect(self) -> client.ClientV2:
        """Directory + account (an existing account is found, not duplicated)."""
        if self._client is not None:
            return self._client
        self.accountKey = loadAccountKey(self._accountKeyPath)
        net = client.ClientNetwork(
            self.accountKey,
            user_agent=USER_AGENT,
            verify_ssl=self._verify,
            timeout=NETWORK_TIMEOUT,
        )
        directory = client.ClientV2.get_directory(self._directory, net)
        acme = client.ClientV2(directory, net)
        registration = messages.NewRegistration.from_data(
            email=self._email or None, terms_of_service_agreed=True
        )
        try:
            acme.new_account(registration)
        except errors.ConflictError as e:
            net.account = messages.RegistrationResource(
                uri=e.location, body=messages.Registration()
            )
        self._client = acme
        return acme

    def newOrder(self, keyPEM: bytes, names: list[str]) -> messages.OrderResource:
        return self.connect().new_order(crypto_util.make_csr(keyPEM, names))

    def answer(self, challb: messages.ChallengeBody, response: Any) -> None:
        try:
            self.connect().answer_challenge(challb, response)
        except errors.ClientError as e:
            # Some CAs (pebble for tls-alpn-01) omit the "up" link the library
            # wants; the answer was accepted all the same: we poll the authz.
            if '"up" Link header missing' not in str(e):
                raise

    def poll(self, authzr: messages.AuthorizationResource) -> Any:
        return self.connect().poll(authzr)[0]

    def finalize(self, orderr: messages.OrderResource) -> str:
        deadline = datetime.datetime.now() + datetime.timedelta(
            seconds=FINALIZE_DEADLINE
        )
        return self.connect().finalize_order(orderr, deadline).fullchain_pem

    def forget(self) -> None:
        """Drop the session (after an error: the next attempt starts clean)."""
        self._client = None


class TLSALPN01Response(challenges.ChallengeResponse):
    """The (empty) answer to a tls-alpn-01 challenge: the acme library
    dropped its own; RFC 8555 7.5.1 responses are C{{}}."""

    typ = "tls-alpn-01"

    def __bool__(self) -> bool:
        # acme sends an empty (POST-as-GET) body for a falsy object, and a
        # field-less josepy object is falsy: then the CA never validates.
        return True


def challengeType(challb: messages.ChallengeBody) -> str:
    chall = challb.chall
    typ = getattr(chall, "typ", None)  # NotImplemented on unrecognized ones
    if isinstance(typ, str):
        return typ
    return getattr(chall, "jobj", {}).get("type", "")


class AcmeIssuance:
    """
    C{issue(names)} -> Deferred (key PEM, full chain PEM): order, answer the
    HTTP-01 challenges through C{responder}, wait for validation, finalize.
    """

    log = Logger()

    def __init__(
        self,
        blocking: BlockingAcme,
        responder: HTTP01Responder,
        reactor: Any,
        pool: Any,
        stopping: Callable[[], bool] = lambda: False,
        challenge: str = "http-01",
        alpn: TLSALPN01Responder | None = None,
    ) -> None:
        self._acme = blocking
        self._responder = responder
        self._challenge = challenge
        self._alpn = alpn
        self._sleeping: Any = None
        self._reactor = reactor
        self._pool = pool
        self._stopping = stopping

    def cancel(self) -> None:
        """Service stopping: stop waiting for the CA now."""
        if self._sleeping is not None:
            self._sleeping.cancel()

    def _call(self, f: Callable, *args: Any):
        return deferToThreadPool(self._reactor, self._pool, f, *args)

    @inlineCallbacks
    def issue(self, names: list[str]):
        try:
            result = yield self._issue(names)
        except Exception as e:
            self._acme.forget()
            if isinstance(e, AcmeProblem):
                raise
            raise AcmeProblem(str(e) or type(e).__name__, _problemOf(e)) from e
        return result

    @inlineCallbacks
    def _issue(self, names: list[str]):
        keyPEM = yield self._call(newPrivateKeyPEM)
        order = yield self._call(self._acme.newOrder, keyPEM, names)
        published: list[Callable[[], None]] = []
        try:
            pending = []
            for authzr in order.authorizations:
                if authzr.body.status == messages.STATUS_VALID:
                    continue
                challb, response, unpublish = self._publish(authzr)
                published.append(unpublish)
                yield self._call(self._acme.answer, challb, response)
                pending.append(authzr)
            yield self._waitValid(pending)
        finally:
            for unpublish in published:
                unpublish()
        chain = yield self._call(self._acme.finalize, order)
        return keyPEM, chain.encode("ascii")

    def _publish(self, authzr: messages.AuthorizationResource) -> tuple:
        """(challenge, response, undo): the answer put where the CA looks."""
        name = authzr.body.identifier.value
        for challb in authzr.body.challenges:
            if challengeType(challb) != self._challenge:
                continue
            if self._challenge == "tls-alpn-01" and self._alpn is not None:
                token = challb.chall.jobj["token"]
                thumbprint = josepy.b64encode(self._acme.accountKey.thumbprint())
                self._alpn.add(name, f"{token}.{thumbprint.decode()}")
                return challb, TLSALPN01Response(), lambda: self._alpn.remove(name)
            response, validation = challb.response_and_validation(self._acme.accountKey)
            token = challb.chall.encode("token")
            self._responder.add(token, validation)
            return challb, response, lambda t=token: self._responder.remove(t)
        raise AcmeProblem(f"the CA offers no {self._challenge} challenge for {name}")

    @inlineCallbacks
    def _waitValid(self, pending: list):
        deadline = self._reactor.seconds() + VALIDATION_DEADLINE
        while pending:
            if self._stopping():
                raise AcmeProblem("stopped while waiting for validation")
            if self._reactor.seconds() > deadline:
                raise AcmeProblem("the CA did not validate in time")
            self._sleeping = deferLater(self._reactor, 1, lambda: None)
            try:
                yield self._sleeping
            except CancelledError:
                raise AcmeProblem("stopped while waiting for validation") from None
            finally:
                self._sleeping = None
            still = []
            for authzr in pending:
                updated = yield self._call(self._acme.poll, authzr)
                if updated.body.status == messages.STATUS_INVALID:
                    raise self._invalid(updated)
                if updated.body.status != messages.STATUS_VALID:
                    still.append(updated)
            pending = still

    def _invalid(self, authzr: messages.AuthorizationResource) -> AcmeProblem:
        name = authzr.body.identifier.value
        for challb in authzr.body.challenges:
            if challb.error is not None:
                return AcmeProblem(
                    f"validation of {name} failed: {challb.error}",
                    challb.error.to_partial_json(),
                )
        return AcmeProblem(f"validation of {name} failed")

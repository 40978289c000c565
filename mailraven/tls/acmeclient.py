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
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from mailraven.privatefiles import writePrivate
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
        self.connect().answer_challenge(challb, response)

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
    ) -> None:
        self._acme = blocking
        self._responder = responder
        self._reactor = reactor
        self._pool = pool
        self._stopping = stopping

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
        tokens = []
        try:
            pending = []
            for authzr in order.authorizations:
                if authzr.body.status == messages.STATUS_VALID:
                    continue
                challb = self._http01(authzr)
                response, validation = challb.response_and_validation(
                    self._acme.accountKey
                )
                token = challb.chall.encode("token")
                self._responder.add(token, validation)
                tokens.append(token)
                yield self._call(self._acme.answer, challb, response)
                pending.append(authzr)
            yield self._waitValid(pending)
        finally:
            for token in tokens:
                self._responder.remove(token)
        chain = yield self._call(self._acme.finalize, order)
        return keyPEM, chain.encode("ascii")

    def _http01(self, authzr: messages.AuthorizationResource) -> Any:
        for challb in authzr.body.challenges:
            if isinstance(challb.chall, challenges.HTTP01):
                return challb
        raise AcmeProblem(
            f"the CA offers no http-01 challenge for {authzr.body.identifier.value}"
        )

    @inlineCallbacks
    def _waitValid(self, pending: list):
        deadline = self._reactor.seconds() + VALIDATION_DEADLINE
        while pending:
            if self._stopping():
                raise AcmeProblem("stopped while waiting for validation")
            if self._reactor.seconds() > deadline:
                raise AcmeProblem("the CA did not validate in time")
            yield deferLater(self._reactor, 1, lambda: None)
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

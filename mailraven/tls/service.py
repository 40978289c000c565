"""Building the TLS part of the service tree from the configuration."""

from __future__ import annotations

import datetime
import os
from typing import Any, Callable

from twisted.application.service import MultiService
from twisted.internet.threads import deferToThreadPool

from mailraven.api.stspolicy import policyHosts
from mailraven.config import Config, ConfigError
from mailraven.listeners import Listener
from mailraven.threads import ThreadPoolService
from mailraven.tls.acmeclient import AcmeIssuance, BlockingAcme
from mailraven.tls.certificates import CertificateError
from mailraven.tls.challenges import HTTP01Responder, challengeSite
from mailraven.tls.issuer import AcmeIssuer, AcmeStore
from mailraven.tls.manager import CertificateManager


def makeCertificateManager(
    config: Config, reactor: Any, metrics: Any, pool: Any = None
) -> CertificateManager:
    """Operator files (checked now: a bad file stops start-up) or self-signed."""
    certDir = os.path.join(config.dataDir, "certs")
    try:
        manager = CertificateManager(
            config["tls.cert_file"],
            config["tls.key_file"],
            certDir,
            config["server.hostname"],
            config["tls.reload_interval"],
            metrics,
            reactor,
            **(
                {"blocking": lambda f: deferToThreadPool(reactor, pool, f)}
                if pool is not None
                else {}
            ),
            otherNames=policyHosts(config["server.domains"]),
        )
    except CertificateError as e:
        raise ConfigError(f"tls.cert_file/tls.key_file: {e}") from None
    manager.setName("tls")
    return manager


def acmeCertificates(config: Config) -> list[tuple[str, ...]]:
    """
    Each certificate's names: C{acme.domains}, else the server's hostname;
    then one certificate per MTA-STS policy host not named there. Those are
    apart so that a domain whose C{mta-sts} record is not published yet fails
    its own order only, never the hostname's certificate.
    """
    entries = config["acme.domains"] or [config["server.hostname"]]
    certificates = [tuple(entry.split()) for entry in entries]
    named = {name for names in certificates for name in names}
    certificates.extend(
        (host,) for host in policyHosts(config["server.domains"]) if host not in named
    )
    return certificates


def makeAcmeService(
    config: Config,
    manager: CertificateManager,
    responder: HTTP01Responder,
    reactor: Any,
    metrics: Any,
    onListenFailure: Callable[[str], None] | None,
) -> MultiService:
    """The issuer, its one-thread pool and the HTTP-01 listeners."""
    acme = MultiService()
    acme.setName("acme")
    threads = ThreadPoolService(1, "mailraven-acme")
    threads.setServiceParent(acme)
    store = AcmeStore(os.path.join(config.dataDir, "certs", "acme"))
    blocking = BlockingAcme(
        config["acme.directory"],
        store.accountKeyPath,
        config["acme.email"],
        config["acme.ca_bundle"],
    )
    issuer: AcmeIssuer | None = None
    issuance = AcmeIssuance(
        blocking,
        responder,
        reactor,
        threads.pool,
        lambda: issuer.stopping,
        challenge=config["acme.challenge"],
        alpn=manager.alpnChallenges,
    )
    issuer = AcmeIssuer(
        acmeCertificates(config),
        manager,
        store,
        issuance.issue,
        reactor,
        renewBefore=datetime.timedelta(days=config["acme.renew_before_days"]),
        checkInterval=config["acme.check_interval"],
        retryInitial=config["acme.retry_initial"],
        retryMax=config["acme.retry_max"],
        metrics=metrics,
        blocking=lambda f, *a: deferToThreadPool(reactor, threads.pool, f, *a),
        cancel=issuance.cancel,
    )
    issuer.setName("issuer")
    issuer.setServiceParent(acme)
    site = challengeSite(responder)
    for description in config["acme.http01_listen"]:
        Listener(
            reactor, description, site, onListenFailure, key="acme.http01_listen"
        ).setServiceParent(acme)
    return acme

"""C{mailraven quickstart EMAIL}: a configuration, a DKIM key, the DNS to publish."""

from __future__ import annotations

import base64
import os
from datetime import UTC, datetime

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from mailraven.api.stspolicy import PublishedPolicy, policyFromConfig
from mailraven.config import Config
from mailraven.dnsrecords import dmarcAdvice, dnsRecords, policyAdvice
from mailraven.privatefiles import createPrivate


def dkimSelector(now: datetime | None = None) -> str:
    now = now or datetime.now(UTC)
    return f"mailraven{now:%Y%m}"


def createDKIMKey(dkimDir: str, selector: str) -> str:
    """A 2048-bit RSA key, 0600, unless C{<selector>.key} exists already
    (never replaced: its record may be published, or printed to a racing
    caller); returns the public key of the file there for the TXT record."""
    os.makedirs(dkimDir, mode=0o700, exist_ok=True)
    path = os.path.join(dkimDir, f"{selector}.key")
    if not os.path.exists(path):
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        createPrivate(
            path,
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )
    return publicKeyOf(path)


def publicKeyOf(path: str) -> str:
    """The base64 DER public key of the PEM private key at C{path}."""
    with open(path, "rb") as f:
        key = serialization.load_pem_private_key(f.read(), password=None)
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode()


def configText(
    hostname: str, domain: str, dataDir: str, policy: PublishedPolicy
) -> str:
    """The settings the printed records depend on, so later starts keep them."""
    return (
        "# Written by `mailraven quickstart`; every key is in docs/configuration.md\n"
        "[server]\n"
        f'hostname = "{hostname}"\n'
        f'domains = ["{domain}"]\n'
        f'data_dir = "{dataDir}"\n'
        "\n"
        "# The MTA-STS policy served at https://mta-sts.DOMAIN/ (docs/tls.md);\n"
        "# enforce once TLS reports are clean, then publish the new id.\n"
        "[mtasts]\n"
        f'mode = "{policy.mode}"\n'
        f"max_age = {policy.maxAge}\n"
    )


def quickstart(
    config: Config,
    email: str,
    configPath: str,
    hostname: str | None,
    password: str | None,
) -> str:
    """Write config and DKIM key; return what the operator must read."""
    domain = email.rpartition("@")[2]
    hostname = hostname or f"mail.{domain}"
    policy = policyFromConfig(config.with_(server__hostname=hostname))
    selector = dkimSelector()
    publicKey = createDKIMKey(os.path.join(config.dataDir, "dkim"), selector)
    fd = os.open(configPath, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(configText(hostname, domain, config.dataDir, policy))
    lines = [
        f"Configuration written to {configPath}",
        f"Account {email} created in data dir {config.dataDir}"
        + (f" with password: {password}" if password else ""),
        f"DKIM key: {os.path.join(config.dataDir, 'dkim', selector + '.key')}",
        "",
        "Publish these DNS records:",
        dnsRecords(hostname, domain, selector, publicKey, policy),
        "",
        dmarcAdvice(domain),
        "",
        policyAdvice(config, domain, policy),
        "",
        f"Then start the server: twistd -n mailraven --config {configPath}",
    ]
    return "\n".join(lines)

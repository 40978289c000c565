"""Each added domain's own DKIM key and the DNS records it publishes.

The key is C{data_dir/dkim/<domain>/<selector>.key} (0600, directory 0700),
where L{mailraven.outbound.dkimsign.DKIMSigner} looks for it. Removing the
domain keeps the key, so adding the domain again reuses it and the record
already published stays valid.
"""

from __future__ import annotations

import base64
import os
from typing import Any

from cryptography.hazmat.primitives import serialization

from mailraven.api.stspolicy import policyFromConfig
from mailraven.dnsrecords import dmarcAdvice, dnsRecords
from mailraven.quickstart import createDKIMKey


def domainKeyPath(dataDir: str, domain: str, selector: str) -> str:
    return os.path.join(dataDir, "dkim", domain, f"{selector}.key")


def ensureDomainKey(dataDir: str, domain: str, selector: str) -> str:
    """The public key (base64 DER) of the domain's key, made if missing.
    Blocking (RSA generation, fsync): call it off the reactor thread."""
    path = domainKeyPath(dataDir, domain, selector)
    if os.path.exists(path):
        with open(path, "rb") as f:
            key = serialization.load_pem_private_key(f.read(), password=None)
        der = key.public_key().public_bytes(
            serialization.Encoding.DER,
            serialization.PublicFormat.SubjectPublicKeyInfo,
        )
        return base64.b64encode(der).decode()
    return createDKIMKey(os.path.dirname(path), selector)


def domainRecords(config: Any, domain: str, selector: str, publicKey: str) -> str:
    """The zone lines to publish for C{domain}, then the DMARC advice."""
    policy = policyFromConfig(config)
    records = dnsRecords(config["server.hostname"], domain, selector, publicKey, policy)
    return f"{records}\n\n{dmarcAdvice(domain)}"

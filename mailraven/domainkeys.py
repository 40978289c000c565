"""Each added domain's own DKIM key and the DNS records it publishes.

The key is C{data_dir/dkim/<domain>/<selector>.key} (0600, directory 0700),
where L{mailraven.outbound.dkimsign.DKIMSigner} looks for it, under the
selector recorded for the domain in the C{domains} table. A key file is
never replaced: a second add (or a race of two) reuses the key already
there, so a record once printed stays valid. Removing the domain keeps the
key, and adding the domain again reuses its newest selector.
"""

from __future__ import annotations

import os
import re
from typing import Any

from mailraven.api.stspolicy import policyFromConfig
from mailraven.dnsrecords import dmarcAdvice, dnsRecords
from mailraven.quickstart import createDKIMKey, publicKeyOf
from mailraven.store.domains import BadDomain

# What a server key file is called (quickstart's selector, mailravenYYYYMM):
# a domain of that name would be a directory where such a file goes.
_SERVER_KEY_FILE = re.compile(r"mailraven[0-9]{6}\.key")


def domainKeyPath(dataDir: str, domain: str, selector: str) -> str:
    return os.path.join(dataDir, "dkim", domain, f"{selector}.key")


def checkKeyDirectory(dataDir: str, domain: str) -> None:
    """L{BadDomain} when the domain's key directory cannot be made because
    a server key file has (or may one day have) its name."""
    path = os.path.join(dataDir, "dkim", domain)
    if _SERVER_KEY_FILE.fullmatch(domain) or (
        os.path.lexists(path) and not os.path.isdir(path)
    ):
        raise BadDomain(
            f"{domain} is named like a server DKIM key file (data_dir/dkim/"
            f"{domain}); it cannot be a domain here"
        )


def selectorFor(dataDir: str, domain: str, default: str) -> str:
    """The newest selector already with a key for C{domain} (one left by an
    earlier add, whose record may be published), else C{default}."""
    directory = os.path.join(dataDir, "dkim", domain)
    try:
        names = os.listdir(directory)
    except OSError:
        return default
    keys = sorted(n for n in names if n.endswith(".key"))
    return keys[-1][: -len(".key")] if keys else default


def ensureDomainKey(dataDir: str, domain: str, selector: str) -> str:
    """The public key (base64 DER) of the domain's key, made if missing and
    never replaced. Blocking (RSA generation, fsync): off the reactor."""
    path = domainKeyPath(dataDir, domain, selector)
    if os.path.exists(path):
        return publicKeyOf(path)
    return createDKIMKey(os.path.dirname(path), selector)


class MissingKey(ValueError):
    """An added domain's key file is gone: a new one would not match the
    record already published, so none is made."""


def existingDomainKey(dataDir: str, domain: str, selector: str) -> str:
    """The public key of the domain's key, which must exist. Blocking."""
    path = domainKeyPath(dataDir, domain, selector)
    if not os.path.exists(path):
        raise MissingKey(
            f"the DKIM key of {domain} ({path}) is missing: restore it from a"
            " backup; a new key would not match the published record"
        )
    return publicKeyOf(path)


def serverKey(dataDir: str) -> tuple[str, str] | None:
    """(selector, public key) of the server's key, the newest
    C{data_dir/dkim/<selector>.key} (what the signer uses), or None."""
    directory = os.path.join(dataDir, "dkim")
    try:
        names = os.listdir(directory)
    except OSError:
        return None
    keys = sorted(
        n
        for n in names
        if n.endswith(".key") and os.path.isfile(os.path.join(directory, n))
    )
    if not keys:
        return None
    return keys[-1][: -len(".key")], publicKeyOf(os.path.join(directory, keys[-1]))


def domainZone(config: Any, domain: str, selector: str, publicKey: str) -> str:
    """The zone-file lines to publish for C{domain}, one record a line; the
    A and AAAA values are placeholders (the server cannot know the public
    addresses it is reached at)."""
    policy = policyFromConfig(config)
    return dnsRecords(config["server.hostname"], domain, selector, publicKey, policy)


def domainRecords(config: Any, domain: str, selector: str, publicKey: str) -> str:
    """What the CLI prints: the zone lines, then the DMARC advice."""
    zone = domainZone(config, domain, selector, publicKey)
    return f"{zone}\n\n{dmarcAdvice(domain)}"


class NoServerKey(LookupError):
    """data_dir/dkim holds no server key, so a configured domain has no
    record to print."""


def configuredRecords(config: Any, dataDir: str, domain: str) -> tuple[str, str]:
    """(selector, zone lines) of a C{server.domains} domain: the server key's
    record, as quickstart printed it (the signer uses that key for it)."""
    found = serverKey(dataDir)
    if found is None:
        raise NoServerKey(
            f"no server DKIM key in {os.path.join(dataDir, 'dkim')} (quickstart"
            " makes it)"
        )
    selector, publicKey = found
    return selector, domainZone(config, domain, selector, publicKey)

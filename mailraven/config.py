"""Configuration: embedded defaults, a TOML file, then C{MAILRAVEN_<SECTION>_<KEY>}.

The key names are the operators' interface (see docs/configuration.md). An unknown
key or a bad value stops start-up with a L{ConfigError} naming the key.
"""

from __future__ import annotations

import difflib
import os
import re
import socket
import tomllib
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from mailraven.store.domains import asciiDomain
from mailraven.store.quotas import MAX_LIMIT

ENV_PREFIX = "MAILRAVEN_"
CONFIG_FILE_VARIABLE = "MAILRAVEN_CONFIG"  # a path, not a key


class ConfigError(Exception):
    """The configuration cannot be used; the message names the key."""


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("expected a string")
    return value


def _int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("expected an integer")
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise ValueError(f"expected an integer, got {value!r}") from None
    if not isinstance(value, int):
        raise ValueError("expected an integer")
    return value


def _positiveInt(value: Any) -> int:
    value = _int(value)
    if value <= 0:
        raise ValueError("expected an integer greater than 0")
    return value


def _nonNegativeInt(value: Any) -> int:
    value = _int(value)
    if value < 0:
        raise ValueError("expected an integer, 0 or more")
    return value


def _quotaBytes(value: Any) -> int:
    value = _nonNegativeInt(value)
    if value > MAX_LIMIT:
        raise ValueError(f"expected at most {MAX_LIMIT} bytes (0 = unlimited)")
    return value


def _percent(value: Any) -> float:
    value = _float(value)
    if not 0 < value <= 100:
        raise ValueError("expected a percentage between 0 and 100")
    return value


def _float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("expected a number")
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise ValueError(f"expected a number, got {value!r}") from None
    if not isinstance(value, (int, float)):
        raise ValueError("expected a number")
    return float(value)


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "on"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


def _strList(value: Any) -> list[str]:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError("expected a list of strings")
    return list(value)


def _listeners(value: Any) -> list[str]:
    """Endpoint strings, each parsed now; C{"none"} (alone) for no listener."""
    from mailraven.listeners import checkDescription

    items = _strList(value)
    if items == ["none"]:
        return []
    for item in items:
        checkDescription(item)
    return items


def _requiredListeners(value: Any) -> list[str]:
    """L{_listeners}, but an empty value is a mistake: say "none" to mean it."""
    items = _strList(value)
    if not items:
        raise ValueError(
            'expected at least one endpoint (e.g. "tcp:25"); "none" runs'
            " without this listener"
        )
    return _listeners(items)


def _domainList(value: Any) -> list[str]:
    """Lower-case, U-labels as A-labels (certificates and DNS take those)."""
    return [asciiDomain(d.rstrip(".")) for d in _strList(value)]


def _choice(*choices: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        value = _str(value).lower()
        if value not in choices:
            raise ValueError("expected one of " + ", ".join(choices))
        return value

    return parse


def _positiveFloat(value: Any) -> float:
    value = _float(value)
    if value <= 0:
        raise ValueError("expected a number greater than 0")
    return value


def _hostPorts(value: Any) -> list[str]:
    items = _strList(value)
    for item in items:
        host, _, port = item.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f'expected "host:port", got {item!r}')
    return items


def _zones(value: Any) -> list[str]:
    from mailraven.policy.dnsbl import parseZone

    items = _strList(value)
    for item in items:
        parseZone(item)
    return items


def _networks(value: Any) -> list[str]:
    import ipaddress

    items = _strList(value)
    for item in items:
        ipaddress.ip_network(item, strict=False)
    return items


def _delimiter(value: Any) -> str:
    value = _str(value)
    if value not in ("", "+", "-", "_", ".", "="):
        raise ValueError('expected one of "+", "-", "_", ".", "=" or "" (off)')
    return value


def _aliases(value: Any) -> list[str]:
    items = _strList(value)
    for item in items:
        alias, sep, account = item.partition("=")
        if not sep or "@" not in alias or "@" not in account:
            raise ValueError(f'expected "alias@domain=account@domain", got {item!r}')
    return [item.strip().lower() for item in items]


_DNS_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


def _certificates(value: Any) -> list[str]:
    """ACME certificates: each entry "name [name...]" (SANs of one certificate)."""
    items = _strList(value)
    for item in items:
        for name in item.lower().split():
            if name.startswith("*."):
                raise ValueError(
                    f"{name}: wildcard names need DNS-01, which is not supported"
                )
            if len(name) > 253 or not all(
                _DNS_LABEL.match(label) for label in name.split(".")
            ):
                raise ValueError(f"{name!r} is not a DNS name")
    return [" ".join(item.lower().split()) for item in items]


def _maxAge(value: Any) -> int:
    value = _positiveInt(value)
    if value > 31557600:
        raise ValueError("expected at most 31557600 seconds (RFC 8461 3.2)")
    return value


def _schedule(value: Any) -> str:
    value = _str(value).strip()
    if value:
        hours, sep, minutes = value.partition(":")
        if not (
            sep
            and hours.isdigit()
            and minutes.isdigit()
            and int(hours) < 24
            and int(minutes) < 60
        ):
            raise ValueError('expected "HH:MM" (UTC) or ""')
    return value


@dataclass(frozen=True)
class Key:
    parse: Callable[[Any], Any]
    default: Any
    help: str


def _fqdn() -> str:
    return socket.getfqdn() or "localhost"


# section -> key -> Key. A default that is callable is computed at load time.
SCHEMA: dict[str, dict[str, Key]] = {
    "server": {
        "hostname": Key(_str, _fqdn, "name in the SMTP greeting and Received headers"),
        "domains": Key(_domainList, ["localhost"], "local mail domains"),
        "data_dir": Key(_str, "./mailraven-data", "db, messages, certs, keys"),
        "postmaster": Key(
            _str, "", "account for postmaster@ mail; '' = the admin accounts"
        ),
        "recipient_delimiter": Key(
            _delimiter, "+", "local+tag@ subaddressing; '' = off"
        ),
    },
    "smtp": {
        "listen": Key(
            _requiredListeners, ["tcp:2525"], 'MX listeners (endpoints); "none"'
        ),
        "max_message_size": Key(_positiveInt, 26214400, "bytes; advertised in SIZE"),
        "max_recipients": Key(_positiveInt, 50, "recipients per message"),
        "timeout": Key(_positiveInt, 300, "seconds idle before 421 (RFC 5321)"),
        "max_sessions": Key(_positiveInt, 1000, "open sessions per listener kind"),
        "spool_memory": Key(
            _positiveInt, 33554432, "bytes DATA keeps in memory, all sessions"
        ),
        "shutdown_grace": Key(_positiveInt, 30, "seconds in-flight DATA may finish"),
    },
    "quota": {
        "default": Key(_quotaBytes, 0, "bytes each account may store; 0 = unlimited"),
    },
    "submission": {
        "listen": Key(_listeners, ["tcp:2587"], "submission listeners"),
        "aliases": Key(_aliases, [], '"alias@domain=account@domain" send-as rights'),
    },
    "imap": {
        "listen": Key(_listeners, ["tcp:2143"], "IMAP listeners (STARTTLS)"),
        "max_connections_per_account": Key(
            _positiveInt, 20, "logged-in IMAP sessions per account"
        ),
        "max_sessions": Key(_positiveInt, 1000, "open IMAP sessions, all listeners"),
    },
    "imaps": {
        "listen": Key(_listeners, ["tls:tcp:2993"], "IMAP listeners (implicit TLS)"),
    },
    "api": {
        "listen": Key(_listeners, ["tcp:8080"], "HTTP API, /health, /metrics"),
        "rate_limit": Key(_positiveInt, 100, "API requests per minute per IP"),
        "max_body": Key(_positiveInt, 10485760, "largest API request body, bytes"),
        "events_heartbeat": Key(
            _positiveFloat, 25.0, "seconds between event stream heartbeats"
        ),
        "events_per_account": Key(_positiveInt, 10, "open event streams per account"),
        "events_max": Key(_positiveInt, 1000, "open event streams, all accounts"),
    },
    "tls": {
        "cert_file": Key(_str, "", "operator certificate chain (PEM)"),
        "key_file": Key(_str, "", "operator private key (PEM)"),
        "reload_interval": Key(
            _positiveFloat, 60.0, "seconds between checks of the files"
        ),
    },
    "acme": {
        "enabled": Key(_bool, False, "obtain certificates from an ACME CA"),
        "directory": Key(
            _str, "letsencrypt", "letsencrypt, letsencrypt-staging or a URL"
        ),
        "email": Key(_str, "", "account contact (optional)"),
        "domains": Key(
            _certificates,
            [],
            "one entry per certificate, names space-separated; [] = hostname",
        ),
        "ca_bundle": Key(_str, "", "PEM bundle trusted for the CA; '' = system"),
        "challenge": Key(
            _choice("http-01", "tls-alpn-01"), "http-01", "how the CA validates"
        ),
        "http01_listen": Key(_listeners, ["tcp:80"], "HTTP-01 challenge listeners"),
        "renew_before_days": Key(_positiveInt, 30, "renew with fewer days left"),
        "check_interval": Key(_positiveFloat, 43200.0, "seconds between checks"),
        "retry_initial": Key(_positiveFloat, 60.0, "first retry after a failure, s"),
        "retry_max": Key(_positiveFloat, 86400.0, "longest retry delay, s"),
    },
    "queue": {
        "port": Key(_positiveInt, 25, "port of remote MX hosts"),
        "retry_initial": Key(_positiveFloat, 450.0, "first retry after a 4xx, s"),
        "retry_max": Key(_positiveFloat, 28800.0, "longest wait between tries, s"),
        "give_up_after": Key(_positiveFloat, 432000.0, "bounce after this long, s"),
        "delay_notice_after": Key(
            _positiveFloat, 14400.0, "tell the sender after this long, s"
        ),
        "concurrency": Key(_positiveInt, 10, "parallel SMTP deliveries"),
        "timeout": Key(_positiveFloat, 300.0, "seconds to wait for a reply"),
        "mta_sts": Key(_bool, True, "honour MTA-STS policies (RFC 8461)"),
        "mta_sts_port": Key(_positiveInt, 443, "port of mta-sts.<domain> (tests)"),
        "ca_bundle": Key(_str, "", "PEM CAs for verified outbound TLS; '' = system"),
    },
    "mtasts": {
        "mode": Key(
            _choice("testing", "enforce", "none"),
            "testing",
            "MTA-STS policy served for our domains",
        ),
        "max_age": Key(_maxAge, 86400, "seconds senders may cache our policy"),
    },
    "store": {
        "threads": Key(_positiveInt, 2, "threads compressing and fsyncing messages"),
        "workers": Key(_int, 4, "processes preparing messages; 0 = on the threads"),
        "compression_level": Key(_int, 6, "gzip level 1..9 for message files"),
        "disk_warn_percent": Key(_percent, 80.0, "log a warning above this"),
        "disk_reject_percent": Key(_percent, 95.0, "452 4.3.1 for new mail above"),
        "backend": Key(
            _choice("sqlite", "postgresql"), "sqlite", "sqlite | postgresql"
        ),
        "dsn": Key(_str, "", "libpq connection string for backend postgresql"),
    },
    "dns": {
        "nameservers": Key(_hostPorts, [], '"host:port" resolvers; [] = resolv.conf'),
        "timeout": Key(_positiveFloat, 0.5, "seconds per DNS query"),
    },
    "dnsbl": {
        "zones": Key(_zones, [], "ZONE[:reject|:score=N][:FIRST-LAST]; [] = off"),
        "fail_open": Key(_bool, True, "accept when lookups fail (else 451 4.7.1)"),
        "budget": Key(_positiveFloat, 0.5, "seconds the whole check may take"),
        "health_interval": Key(_positiveInt, 10800, "seconds between zone checks"),
    },
    "ratelimit": {
        "connections_per_ip": Key(_positiveInt, 60, "new connections per minute"),
        "connections_per_subnet": Key(_positiveInt, 200, "per /24 or /64 per minute"),
        "concurrent_per_ip": Key(_positiveInt, 50, "open connections per IP"),
        "messages_per_ip": Key(_positiveInt, 120, "messages per minute per IP"),
        "recipients_per_ip": Key(_positiveInt, 600, "recipients per minute per IP"),
        "outbound_per_day": Key(_positiveInt, 1000, "messages an account may send"),
        "auth_failures": Key(
            _positiveInt, 10, "failed logins per IP per 15 minutes, then 454"
        ),
        "auth_failures_per_account": Key(
            _positiveInt, 30, "failed logins per account per 15 minutes, any IP"
        ),
        "allowlist": Key(
            _networks,
            ["127.0.0.1/32", "::1/128"],
            "IPs/CIDRs that skip limits and DNSBL",
        ),
    },
    "spam": {
        "junk_score": Key(_float, 5.0, "score from which mail goes to junk"),
        "reject_score": Key(_float, 10.0, "score from which mail is refused (550)"),
        "allowlist": Key(_strList, [], "senders (address, domain) never spam"),
        "blocklist": Key(_strList, [], "senders (address, domain) always spam"),
    },
    "mailauth": {
        "enabled": Key(_bool, True, "check SPF, DKIM and DMARC of inbound mail"),
        "dmarc_reject": Key(_bool, True, "550 when DMARC fails under p=reject"),
        "budget": Key(_positiveFloat, 5.0, "seconds the three checks may take"),
    },
    "backup": {
        "dir": Key(_str, "", "where backups go (default data_dir/backups)"),
        "schedule": Key(_schedule, "", 'daily backup time "HH:MM" UTC; "" = off'),
        "keep": Key(_positiveInt, 7, "newest backups kept"),
    },
    "log": {
        "format": Key(_choice("text", "json"), "text", "text or json"),
        "level": Key(
            _choice("debug", "info", "warn", "error", "critical"), "info", "level"
        ),
    },
}


class Config:
    """
    A validated configuration. Read values with C{config["section.key"]}.
    """

    def __init__(self, values: Mapping[str, Any]) -> None:
        self._values = dict(values)

    def __getitem__(self, name: str) -> Any:
        return self._values[name]

    def asDict(self) -> dict[str, Any]:
        return dict(self._values)

    @property
    def dataDir(self) -> str:
        return os.path.abspath(self["server.data_dir"])

    def with_(self, **overrides: Any) -> Config:
        """A copy with C{section__key=value} overrides, validated like a file."""
        raw = {name.replace("__", "."): value for name, value in overrides.items()}
        values = self.asDict()
        for name, value in raw.items():
            values[name] = _parseKey(name, value, "override")
        return Config(values)


def _parseKey(name: str, value: Any, origin: str) -> Any:
    section, _, key = name.partition(".")
    spec = SCHEMA.get(section, {}).get(key)
    if spec is None:
        raise ConfigError(
            f"unknown configuration key {name!r} ({origin}){_nearest(name)}"
        )
    try:
        return spec.parse(value)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"bad value for {name} ({origin}): {e}") from None


def _nearest(name: str) -> str:
    """A hint naming the known key a misspelt one most resembles, if any does."""
    known = [f"{section}.{key}" for section, keys in SCHEMA.items() for key in keys]
    match = difflib.get_close_matches(name, known, n=1, cutoff=0.8)
    return f"; did you mean {match[0]}?" if match else ""


def _fromFile(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"cannot read configuration file {path}: {e.strerror}") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"configuration file {path} is not valid TOML: {e}") from e
    values = {}
    for section, table in data.items():
        if not isinstance(table, dict):
            raise ConfigError(f"unknown configuration key {section!r} ({path})")
        for key, value in table.items():
            name = f"{section}.{key}"
            values[name] = _parseKey(name, value, path)
    return values


def _fromEnvironment(environ: Mapping[str, str]) -> dict[str, Any]:
    values = {}
    for var, value in environ.items():
        if not var.startswith(ENV_PREFIX) or var == CONFIG_FILE_VARIABLE:
            continue
        section, _, key = var[len(ENV_PREFIX) :].lower().partition("_")
        values[f"{section}.{key}"] = _parseKey(f"{section}.{key}", value, var)
    return values


def load(path: str | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """
    Embedded defaults, overridden by the file at C{path}, then by the environment.
    """
    values = {}
    for section, keys in SCHEMA.items():
        for key, spec in keys.items():
            default = spec.default() if callable(spec.default) else spec.default
            values[f"{section}.{key}"] = default
    if path:
        fromFile = _fromFile(path)
        _checkSecretDsn(path, fromFile.get("store.dsn", ""))
        values.update(fromFile)
    values.update(_fromEnvironment(os.environ if environ is None else environ))
    _crossCheck(values)
    return Config(values)


def _dsnHasPassword(dsn: str) -> bool:
    """Whether a libpq DSN (key=value or URI form) carries a password."""
    if "://" in dsn:
        userinfo = dsn.split("://", 1)[1].split("@", 1)
        return len(userinfo) == 2 and ":" in userinfo[0]
    return re.search(r"(^|\s)password\s*=", dsn) is not None


def _checkSecretDsn(path: str, dsn: str) -> None:
    """
    A password in the file's store.dsn is a secret: the file must then be
    readable by its owner only, as other secrets are (a passfile is better).
    """
    if dsn and _dsnHasPassword(dsn) and os.stat(path).st_mode & 0o077:
        raise ConfigError(
            f"store.dsn in {path} holds a password: make the file mode 0600,"
            " or use a passfile (passfile=... in the dsn, or PGPASSFILE)"
        )


def _crossCheck(values: dict[str, Any]) -> None:
    if values["store.backend"] == "postgresql" and not values["store.dsn"]:
        raise ConfigError("store.backend = postgresql needs store.dsn")
    if bool(values["tls.cert_file"]) != bool(values["tls.key_file"]):
        raise ConfigError("tls.cert_file and tls.key_file must be set together")
    if not 0 <= values["store.workers"] <= 64:
        raise ConfigError("bad value for store.workers: expected 0..64")
    if not 1 <= values["store.compression_level"] <= 9:
        raise ConfigError("bad value for store.compression_level: expected 1..9")
    if values["store.disk_warn_percent"] > values["store.disk_reject_percent"]:
        raise ConfigError(
            "store.disk_warn_percent must not be above store.disk_reject_percent"
        )

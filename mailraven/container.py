"""The container's entrypoint and healthcheck (the image has no shell).

C{python -m mailraven.container run}: checks that C{/data} is writable, on the
first start writes C{/data/mailraven.toml} from the C{MAILRAVEN_*} environment,
creates the data layout and a DKIM key and prints the DNS records once; then
runs C{twistd -n --pidfile= mailraven} in this process (PID 1, so SIGTERM
reaches twistd directly). C{python -m mailraven.container health}: exit 0 when
C{/health} answers 200 (the image's HEALTHCHECK).
"""

from __future__ import annotations

import json
import os
import sys
import urllib.request
from typing import Mapping

from mailraven import config as configuration
from mailraven.api.stspolicy import policyFromConfig
from mailraven.dnsrecords import dmarcAdvice, dnsRecords, policyAdvice
from mailraven.quickstart import createDKIMKey, dkimSelector

EX_CONFIG = 78  # sysexits: a configuration (here: the volume) is unusable
CONFIG_NAME = "mailraven.toml"


def fail(message: str) -> None:
    print(f"mailraven: {message}", file=sys.stderr, flush=True)
    raise SystemExit(EX_CONFIG)


def checkWritable(dataDir: str) -> None:
    """A clear message instead of a traceback when the volume is not ours."""
    probe = os.path.join(dataDir, ".write-test")
    try:
        os.makedirs(dataDir, exist_ok=True)
        with open(probe, "w") as f:
            f.write("ok")
        os.unlink(probe)
    except OSError as e:
        fail(
            f"{dataDir} is not writable by uid {os.getuid()} ({e.strerror}). "
            f"Use a named volume, or give the directory to uid {os.getuid()}: "
            f"chown {os.getuid()}:{os.getgid()} DIR (podman: -v DIR:{dataDir}:U)."
        )


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def configFromEnvironment(environ: Mapping[str, str], dataDir: str) -> str:
    """The first start's settings as TOML, so later starts keep them."""
    config = configuration.load(None, environ)
    chosen: dict[str, dict[str, object]] = {
        "server": {
            "hostname": config["server.hostname"],
            "domains": config["server.domains"],
            "data_dir": dataDir,
        }
    }
    for var in sorted(environ):
        if not var.startswith(configuration.ENV_PREFIX):
            continue
        if var == configuration.CONFIG_FILE_VARIABLE:
            continue
        section, _, key = var[len(configuration.ENV_PREFIX) :].lower().partition("_")
        chosen.setdefault(section, {})[key] = config[f"{section}.{key}"]
    lines = ["# Written at the first start from the MAILRAVEN_* environment;"]
    lines.append("# edit it freely. The environment still overrides it.")
    for section, keys in chosen.items():
        lines.append(f"\n[{section}]")
        lines.extend(f"{key} = {_toml(value)}" for key, value in keys.items())
    return "\n".join(lines) + "\n"


def firstStart(dataDir: str, configPath: str, environ: Mapping[str, str]) -> None:
    """Config, DKIM key and the DNS records to publish, printed once."""
    text = configFromEnvironment(environ, dataDir)
    fd = os.open(configPath, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    config = configuration.load(configPath, environ)
    domain = config["server.domains"][0]
    hostname = config["server.hostname"]
    selector = dkimSelector()
    publicKey = createDKIMKey(os.path.join(dataDir, "dkim"), selector)
    policy = policyFromConfig(config)
    print(
        "\n".join(
            [
                f"MailRaven first start: configuration written to {configPath}",
                "",
                "Publish these DNS records:",
                dnsRecords(hostname, domain, selector, publicKey, policy),
                "",
                dmarcAdvice(domain),
                "",
                policyAdvice(config, domain, policy),
                "",
                "Create a mailbox: mailraven user add you@" + domain,
                "",
            ]
        ),
        flush=True,
    )


def lowPortHint(config: configuration.Config) -> None:
    """Binding 25/80/... as non-root needs the sysctl (or NET_BIND_SERVICE)."""
    if os.getuid() == 0:
        return
    try:
        with open("/proc/sys/net/ipv4/ip_unprivileged_port_start") as f:
            start = int(f.read())
    except (OSError, ValueError):
        return
    listeners = [
        *config["smtp.listen"],
        *config["submission.listen"],
        *config["imap.listen"],
        *config["imaps.listen"],
        *config["api.listen"],
    ]
    if config["acme.enabled"]:
        listeners.extend(config["acme.http01_listen"])
    for description in listeners:
        port = listenerPort(description)
        if port is not None and 0 < port < start:
            print(
                f"mailraven: {description} needs a port below {start} as uid "
                f"{os.getuid()}: run the container with --sysctl "
                "net.ipv4.ip_unprivileged_port_start=0",
                file=sys.stderr,
                flush=True,
            )


def listenerPort(description: str) -> int | None:
    """The port of a C{[haproxy:][tls:]tcp:PORT...} listener, else None."""
    parts = description.split(":")
    while parts and parts[0] in ("haproxy", "tls"):
        parts.pop(0)
    if len(parts) < 2 or parts[0] not in ("tcp", "tcp6"):
        return None
    port = parts[1].removeprefix("port=")
    return int(port) if port.isdigit() else None


def run(environ: Mapping[str, str]) -> None:
    os.umask(0o077)  # mail, keys and the database: readable by the server only
    dataDir = environ.get("MAILRAVEN_SERVER_DATA_DIR", "/data")
    checkWritable(dataDir)
    configPath = os.path.join(dataDir, CONFIG_NAME)
    try:
        if not os.path.exists(configPath):
            firstStart(dataDir, configPath, environ)
        lowPortHint(configuration.load(configPath, environ))
    except configuration.ConfigError as e:
        fail(str(e))
    from twisted.scripts.twistd import run as twistd

    sys.argv = ["twistd", "-n", "--pidfile=", "mailraven", "--config", configPath]
    twistd()


def health(environ: Mapping[str, str]) -> int:
    dataDir = environ.get("MAILRAVEN_SERVER_DATA_DIR", "/data")
    configPath = os.path.join(dataDir, CONFIG_NAME)
    config = configuration.load(
        configPath if os.path.exists(configPath) else None, environ
    )
    for description in config["api.listen"]:
        port = listenerPort(description)
        if port is not None and not description.startswith(("tls:", "haproxy:")):
            url = f"http://127.0.0.1:{port}/health"
            try:
                with urllib.request.urlopen(url, timeout=4) as response:
                    return 0 if response.status == 200 else 1
            except OSError as e:
                print(f"{url}: {e}", file=sys.stderr)
                return 1
    print("no plain tcp: listener in api.listen to check", file=sys.stderr)
    return 1


def main(argv: list[str]) -> int:
    command = argv[1] if len(argv) > 1 else "run"
    if command == "run":
        run(os.environ)
        return 0
    if command == "health":
        return health(os.environ)
    print("usage: python -m mailraven.container [run|health]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))

"""twistd glue: C{twistd -n mailraven [--config FILE]}."""

from __future__ import annotations

import sys

from twisted.python import usage

from mailraven import config as configuration
from mailraven.startup import StartupError


class Options(usage.Options):
    optParameters = [
        ["config", "c", None, "TOML configuration file (default: embedded defaults)"],
    ]

    def postOptions(self) -> None:
        try:
            self.loaded = configuration.load(self["config"])
        except configuration.ConfigError as e:
            raise usage.UsageError(str(e)) from None


def _listenFailed(message: str) -> None:
    # An operator asked for this listener; running without it would look healthy
    # while mail bounces. Stop with the reason.
    from twisted.internet import reactor

    sys.stderr.write(f"mailraven: {message}\n")
    if reactor.running:
        reactor.stop()
    else:
        reactor.callWhenRunning(reactor.stop)


def makeService(options: Options):
    from mailraven.service import makeService as build

    try:
        return build(
            options.loaded, onListenFailure=_listenFailed, configFile=options["config"]
        )
    except StartupError as e:
        raise SystemExit(f"mailraven: {e}") from None

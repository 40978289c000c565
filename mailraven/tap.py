"""twistd glue: C{twistd -n mailraven [--config FILE]}.

Whatever stops the server from starting (a bad key, a port it cannot bind, a
data dir another server holds) ends twistd with one line on stderr naming the
cause and a non-zero exit status, so a supervisor (systemd, Docker, a test)
sees a failed start rather than a clean stop.
"""

from __future__ import annotations

import atexit
import os
import sys

from twisted.python import usage

from mailraven import config as configuration
from mailraven.startup import StartupError

EXIT_START_FAILED = 1


class Options(usage.Options):
    optParameters = [
        [
            "config",
            "c",
            None,
            "TOML configuration file (default: $MAILRAVEN_CONFIG, else none)",
        ],
    ]

    def postOptions(self) -> None:
        # the same file the `mailraven` commands and ops/ scripts read
        if self["config"] is None:
            self["config"] = os.environ.get(configuration.CONFIG_FILE_VARIABLE) or None
        try:
            self.loaded = configuration.load(self["config"])
        except configuration.ConfigError as e:
            # one line, not twistd's whole usage text above it
            raise SystemExit(f"mailraven: {e}") from None


def _exitFailed() -> None:
    # twistd returns normally once the reactor stopped (exit status 0);
    # this runs after its own clean-up (pid file, log flush)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(EXIT_START_FAILED)


def _listenFailed(message: str) -> None:
    # An operator asked for this listener; running without it would look healthy
    # while mail bounces. Stop with the reason and a failed exit status.
    from twisted.internet import reactor

    sys.stderr.write(f"mailraven: {message}\n")
    atexit.unregister(_exitFailed)
    atexit.register(_exitFailed)
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
    except (StartupError, configuration.ConfigError) as e:
        raise SystemExit(f"mailraven: {e}") from None

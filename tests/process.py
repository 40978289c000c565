"""Run MailRaven the way operators do: `twistd -n mailraven` in a subprocess."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

from mailraven.startup import prepareDataDir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def freePort() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILRAVEN_")}
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def writeConfig(directory: str, **sections: dict) -> tuple[str, dict[str, int]]:
    """A config with free loopback ports; returns (path, ports by listener)."""
    ports = {
        name: freePort() for name in ("smtp", "submission", "api", "imap", "imaps")
    }
    merged: dict[str, dict] = {
        "server": {
            "hostname": "mx.mailraven.test",
            "domains": ["example.test"],
            "data_dir": os.path.join(directory, "data"),
        }
    }
    for name, port in ports.items():
        tls = "tls:" if name == "imaps" else ""
        merged[name] = {"listen": [f"{tls}tcp:{port}:interface=127.0.0.1"]}
    merged["mailauth"] = {"enabled": False}  # no real DNS from tests
    for section, values in sections.items():
        merged.setdefault(section, {}).update(values)
    lines = []
    for section, values in merged.items():
        lines.append(f"[{section}]")
        for key, value in values.items():
            if isinstance(value, bool):
                value = "true" if value else "false"
                lines.append(f"{key} = {value}")
                continue
            lines.append(f"{key} = {value!r}".replace("'", '"'))
    path = os.path.join(directory, "mailraven.toml")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    # as the server's first start would: the CLI refuses a missing data dir
    prepareDataDir(merged["server"]["data_dir"])
    return path, ports


def cli(*args: str, stdin: str = "", check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "mailraven.cli", *args],
        input=stdin.encode(),
        capture_output=True,
        env=environment(),
        cwd=ROOT,
        timeout=120,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"mailraven {args} failed: {result.stderr.decode()}")
    return result


class ServerProcess:
    def __init__(self, configPath: str, logPath: str) -> None:
        self.log = open(logPath, "ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from twisted.scripts.twistd import run; run()",
                "-n",
                "--pidfile=",
                "mailraven",
                "--config",
                configPath,
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=environment(),
            cwd=ROOT,
        )

    def waitForPort(self, port: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
            except OSError:
                time.sleep(0.1)
                continue
            self._waitForSignalHandler(deadline)
            return
        raise AssertionError(f"server did not listen on {port}")

    def _waitForSignalHandler(self, deadline: float) -> None:
        """
        twistd binds its listeners before the reactor runs and installs its
        SIGTERM handler only then: a SIGTERM in between ends the process
        unclean. Ready means SIGTERM is caught (SigCgt of /proc/PID/status).
        """
        while time.monotonic() < deadline:
            with open(f"/proc/{self.proc.pid}/status") as f:
                caught = next(
                    int(line.split()[1], 16) for line in f if line.startswith("SigCgt:")
                )
            if caught & 1 << (signal.SIGTERM - 1):
                return
            time.sleep(0.05)
        raise AssertionError("server never installed its SIGTERM handler")

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)
        self.log.close()

    def terminate(self, timeout: float = 60) -> bool:
        """SIGTERM; True when the server shut down cleanly (it logs that last)."""
        self.proc.send_signal(signal.SIGTERM)
        return self.stoppedCleanly(timeout)

    def stoppedCleanly(self, timeout: float = 60) -> bool:
        code = self.proc.wait(timeout)
        self.log.close()
        with open(self.log.name, "rb") as f:
            stopped = b"mailraven stopped" in f.read()
        # twistd re-raises the signal it stopped on, so -SIGTERM is a clean exit.
        return stopped and code in (0, -signal.SIGTERM)

    def ensureStopped(self) -> None:
        if self.proc.poll() is None:
            self.kill()

"""What the benchmarks share: free ports, and MailRaven run as operators run it
(`twistd -n mailraven --config FILE`) in a subprocess."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def freePort() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def waitForPort(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


def smtpSourceRate(
    port: int, messages: int, rcpt: str, sessions: int = 20, size: int = 1024
) -> float:
    """msg/s of Postfix's smtp-source (a new connection per message)."""
    started = time.monotonic()
    subprocess.run(
        [
            "smtp-source",
            "-s",
            str(sessions),
            "-m",
            str(messages),
            "-l",
            str(size),
            "-f",
            "s@sender.example",
            "-t",
            rcpt,
            f"127.0.0.1:{port}",
        ],
        check=True,
        capture_output=True,
        timeout=900,
    )
    return messages / (time.monotonic() - started)


class MailRavenProcess:
    """
    A server in C{directory} (config, log; data in C{dataDir} or
    C{directory}/data), with C{extra} TOML appended and, if C{user} is given,
    that account created first. C{smtp} and C{api} are its ports. Mail-auth
    is on when a C{nameserver} ("host:port") is given, else off.
    """

    def __init__(
        self,
        directory: str,
        extra: str = "",
        dataDir: str | None = None,
        user: str | None = None,
        password: str = "bench password",
        nameserver: str | None = None,
    ) -> None:
        os.makedirs(directory, exist_ok=True)
        self.smtp, self.api = freePort(), freePort()
        self.config = os.path.join(directory, "mailraven.toml")
        data = dataDir or os.path.join(directory, "data")
        with open(self.config, "w") as f:
            f.write(
                '[server]\nhostname = "mx.bench.test"\ndomains = ["example.test"]\n'
                f'data_dir = "{data}"\n'
                f'[smtp]\nlisten = ["tcp:{self.smtp}:interface=127.0.0.1"]\n'
                f'[submission]\nlisten = ["tcp:{freePort()}:interface=127.0.0.1"]\n'
                '[log]\nlevel = "warn"\n'
                # A benchmark must not wait on the internet's DNS: with a
                # loopback nameserver (bench/loopdns.py) mail-auth stays on,
                # as it is by default; without one it is off.
                + (
                    f'[dns]\nnameservers = ["{nameserver}"]\n'
                    if nameserver
                    else "[mailauth]\nenabled = false\n"
                )
                + extra
                + f'\n[api]\nlisten = ["tcp:{self.api}:interface=127.0.0.1"]\n'
                "rate_limit = 100000000\n"
            )
        env = dict(os.environ, PYTHONPATH=ROOT)
        if user:
            # the CLI writes only into a data dir a server (or quickstart) made
            from mailraven.startup import prepareDataDir

            prepareDataDir(data)
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "mailraven.cli",
                    "--config",
                    self.config,
                    "user",
                    "add",
                    user,
                    "--password-stdin",
                ],
                input=f"{password}\n".encode(),
                check=True,
                env=env,
                cwd=ROOT,
                capture_output=True,
            )
        self.log = open(os.path.join(directory, "server.log"), "wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from twisted.scripts.twistd import run; run()",
                "-n",
                "--pidfile=",
                "mailraven",
                "--config",
                self.config,
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
        )
        waitForPort(self.smtp)
        waitForPort(self.api)

    def peakRSS(self) -> str:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return line.split(":", 1)[1].strip()
        return "?"

    def cpuSeconds(self) -> float:
        """CPU time (user + system) of the server process so far."""
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)
        self.log.close()

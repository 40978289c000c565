"""Debian's pebble (a real RFC 8555 CA) and pebble-challtestsrv (the DNS it
validates against), started per test on free loopback ports.

Every name resolves to 127.0.0.1 unless a test points it elsewhere
(L{Pebble.pointAt}); pebble fetches HTTP-01 answers from C{httpPort}, where the
server under test listens (C{acme.http01_listen}).
"""

from __future__ import annotations

import datetime
import json
import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.request

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.process import freePort
from tests.tools import requireTool


def requirePebble() -> None:
    """Skip without pebble, except in CI, where it must be there (.ci/run)."""
    requireTool("pebble")
    requireTool("pebble-challtestsrv")


def _httpsCA(directory: str) -> tuple[str, str, str]:
    """A throwaway CA and a localhost certificate for pebble's own HTTPS."""
    caKey = ec.generate_private_key(ec.SECP256R1())
    caName = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pebble test CA")])
    now = datetime.datetime.now(datetime.UTC)
    day = datetime.timedelta(days=1)
    ca = (
        x509.CertificateBuilder()
        .subject_name(caName)
        .issuer_name(caName)
        .public_key(caKey.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - day)
        .not_valid_after(now + day)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(caKey, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(caName)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - day)
        .not_valid_after(now + day)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), False)
        .sign(caKey, hashes.SHA256())
    )
    paths = [os.path.join(directory, n) for n in ("ca.pem", "cert.pem", "key.pem")]
    pem = serialization.Encoding.PEM
    blobs = [
        ca.public_bytes(pem),
        cert.public_bytes(pem),
        key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    ]
    for path, blob in zip(paths, blobs, strict=True):
        with open(path, "wb") as f:
            f.write(blob)
    return paths[0], paths[1], paths[2]


def _waitForPort(port: int, process: subprocess.Popen, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[0]} exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{process.args[0]} did not listen on {port}")


class Pebble:
    """A running pebble; stopped by the test case's cleanup."""

    def __init__(self, testCase, validityDays: int | None = None) -> None:
        requirePebble()
        self.directory = os.path.abspath(testCase.mktemp())
        os.makedirs(self.directory)
        self.caBundle, cert, key = _httpsCA(self.directory)
        self.port, self.managementPort = freePort(), freePort()
        self.dnsPort, self.challtestPort = freePort(), freePort()
        self.httpPort = freePort()
        self.tlsPort = freePort()  # where tls-alpn-01 is validated
        config = {
            "listenAddress": f"127.0.0.1:{self.port}",
            "managementListenAddress": f"127.0.0.1:{self.managementPort}",
            "certificate": cert,
            "privateKey": key,
            "httpPort": self.httpPort,
            "tlsPort": self.tlsPort,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": False,
        }
        if validityDays is not None:
            config["certificateValidityPeriod"] = validityDays * 86400
        configPath = os.path.join(self.directory, "pebble.json")
        with open(configPath, "w") as f:
            json.dump({"pebble": config}, f)
        log = open(os.path.join(self.directory, "pebble.log"), "wb")  # noqa: SIM115
        testCase.addCleanup(log.close)
        self._processes: list[subprocess.Popen] = []
        testCase.addCleanup(self.stop)
        challtest = self._start(
            [
                "pebble-challtestsrv",
                "-defaultIPv4",
                "127.0.0.1",
                "-defaultIPv6",
                "",
                "-dns01",
                f"127.0.0.1:{self.dnsPort}",
                "-http01",
                "",
                "-https01",
                "",
                "-tlsalpn01",
                "",
                "-management",
                f"127.0.0.1:{self.challtestPort}",
            ],
            log,
            {},
        )
        _waitForPort(self.challtestPort, challtest)
        pebble = self._start(
            [
                "pebble",
                "-config",
                configPath,
                "-dnsserver",
                f"127.0.0.1:{self.dnsPort}",
            ],
            log,
            {
                "PEBBLE_VA_NOSLEEP": "1",
                "PEBBLE_WFE_NONCEREJECT": "0",
                "PEBBLE_AUTHZREUSE": "0",
            },
        )
        _waitForPort(self.port, pebble)
        self.directoryURL = f"https://localhost:{self.port}/dir"

    def _start(self, args: list[str], log, env: dict) -> subprocess.Popen:
        process = subprocess.Popen(
            args,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env},
        )
        self._processes.append(process)
        return process

    def stop(self) -> None:
        for process in reversed(self._processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(5)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        self._processes = []

    def rootPEM(self) -> bytes:
        """The root that signs this run's certificates (new at every start)."""
        context = ssl.create_default_context(cafile=self.caBundle)
        url = f"https://localhost:{self.managementPort}/roots/0"
        with urllib.request.urlopen(url, context=context, timeout=5) as response:
            return response.read()

    def _challtest(self, path: str, body: dict) -> None:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.challtestPort}/{path}",
            data=json.dumps(body).encode(),
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            response.read()

    def pointAt(self, host: str, address: str) -> None:
        """Make C{host} resolve to C{address} for the CA (validation fails)."""
        self._challtest("add-a", {"host": host, "addresses": [address]})

    def unpoint(self, host: str) -> None:
        self._challtest("clear-a", {"host": host})

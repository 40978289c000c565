"""Client side of the container smoke test: real SMTP and HTTP clients against
the published ports. Each sub-command exits non-zero with a reason on failure.

  check.py banner SMTP_PORT          wait (30 s) for the 220 greeting
  check.py deliver SMTP_PORT         send a message to alice@example.test
  check.py read API_PORT             log in as alice, the message is listed
  check.py https HTTPS_PORT          /health over TLS 1.2+ (self-signed here)
"""

from __future__ import annotations

import json
import smtplib
import socket
import ssl
import sys
import time
import urllib.request

USER, PASSWORD = "alice@example.test", "container-smoke-password"
SUBJECT = "container smoke"


def banner(port: int) -> None:
    # slirp4netns accepts before the server listens: wait for the 220 itself.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), 2) as sock:
                sock.settimeout(2)
                greeting = sock.recv(512)
                if greeting.startswith(b"220 "):
                    print(greeting.decode().strip())
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"no 220 banner on port {port}")


def deliver(port: int) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=20) as client:
        refused = client.sendmail(
            "sender@remote.example",
            [USER],
            f"Subject: {SUBJECT}\r\nFrom: sender@remote.example\r\n\r\nhello\r\n",
        )
    if refused:
        raise SystemExit(f"refused: {refused}")


def _json(url: str, body: dict | None = None, token: str | None = None) -> dict:
    headers = {"content-type": "application/json"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers=headers)
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def read(port: int) -> None:
    base = f"http://127.0.0.1:{port}/api/v1"
    token = _json(f"{base}/auth/login", {"email": USER, "password": PASSWORD})["token"]
    listed = _json(f"{base}/messages", token=token)["messages"]
    subjects = [m["subject"] for m in listed]
    if SUBJECT not in subjects:
        raise SystemExit(f"message not found through the API: {subjects}")
    print(f"read back through the API: {subjects}")


def https(port: int) -> None:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    url = f"https://127.0.0.1:{port}/health"
    with urllib.request.urlopen(url, context=context, timeout=10) as response:
        body = json.load(response)
    print(f"HTTPS /health: {body['status']}")


def workers(port: int) -> None:
    """Every store worker process started and took mail (no thread fallback)."""
    deadline = time.monotonic() + 20
    while True:
        check = _json(f"http://127.0.0.1:{port}/health")["checks"]["workers"]
        if check["status"] == "ok" and check["ready"] == check["configured"]:
            break
        if time.monotonic() > deadline:
            raise SystemExit(f"store workers not ready: {check}")
        time.sleep(0.5)
    print(f"store workers ready: {check['ready']} of {check['configured']}")


if __name__ == "__main__":
    command, port = sys.argv[1], int(sys.argv[2])
    {
        "banner": banner,
        "deliver": deliver,
        "read": read,
        "https": https,
        "workers": workers,
    }[command](port)

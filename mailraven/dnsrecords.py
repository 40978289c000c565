"""The DNS records a new operator publishes, as printed by the quickstart and
the container's first start, with what each one still needs from them."""

from __future__ import annotations

from typing import Any

from mailraven.api.stspolicy import POLICY_HOST_PREFIX, PublishedPolicy
from mailraven.listeners import TLS_PREFIX

# RFC 1035 3.3.14: a TXT record is a list of strings of at most 255 octets
# each; longer values (a 2048-bit DKIM key) are split, and the verifier joins
# them without a separator (RFC 6376 3.6.2.2, RFC 7208 3.3).
TXT_STRING_MAX = 255


def txtStrings(value: str) -> list[str]:
    """C{value} cut into the strings of one TXT record."""
    data = value.encode("ascii")
    return [
        data[i : i + TXT_STRING_MAX].decode("ascii")
        for i in range(0, len(data), TXT_STRING_MAX)
    ]


def txtRecord(value: str) -> str:
    """The zone-file form: quoted strings, space-separated."""
    return " ".join(
        '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'
        for s in txtStrings(value)
    )


def servesHTTPS(config: Any) -> bool:
    """Whether an C{api.listen} listener speaks TLS (the policy needs HTTPS)."""
    return any(
        d.removeprefix("haproxy:").startswith(TLS_PREFIX) for d in config["api.listen"]
    )


def _line(name: str, kind: str, value: str) -> str:
    return f"{name + '.':<39} {kind:<5} {value}"


def dnsRecords(
    hostname: str,
    domain: str,
    selector: str,
    publicKey: str,
    policy: PublishedPolicy,
) -> str:
    """The zone lines for C{domain} whose mail C{hostname} receives."""
    postmaster = f"postmaster@{domain}"
    return "\n".join(
        [
            _line(domain, "MX", f"10 {hostname}."),
            _line(hostname, "A", "<this server's IPv4>"),
            _line(hostname, "AAAA", "<this server's IPv6, if it has one>"),
            _line(POLICY_HOST_PREFIX + domain, "CNAME", f"{hostname}."),
            _line(domain, "TXT", txtRecord("v=spf1 mx -all")),
            _line(
                f"{selector}._domainkey.{domain}",
                "TXT",
                txtRecord(f"v=DKIM1; k=rsa; p={publicKey}"),
            ),
            _line(
                f"_dmarc.{domain}",
                "TXT",
                txtRecord(f"v=DMARC1; p=none; rua=mailto:{postmaster}"),
            ),
            _line(f"_mta-sts.{domain}", "TXT", txtRecord(policy.record())),
            _line(
                f"_smtp._tls.{domain}",
                "TXT",
                txtRecord(f"v=TLSRPTv1; rua=mailto:{postmaster}"),
            ),
        ]
    )


def dmarcAdvice(domain: str) -> str:
    return (
        f"DMARC starts at p=none: receivers only report, to postmaster@{domain}."
        " Once a few weeks of reports show your mail passing SPF and DKIM,"
        " change it to p=quarantine, then to p=reject."
    )


def policyAdvice(config: Any, domain: str, policy: PublishedPolicy) -> str:
    """What makes the served MTA-STS policy reachable, given C{config}."""
    host = POLICY_HOST_PREFIX + domain
    lines = [
        f"MTA-STS: MailRaven serves this policy itself, over HTTPS on port 443, "
        f"at https://{host}/.well-known/mta-sts.txt",
        *(f"  {line}" for line in policy.text().splitlines()),
        f"  ({host} reaches this server through the CNAME above.)",
    ]
    if not servesHTTPS(config):
        lines.append(
            "  No HTTPS listener yet: add one and make port 443 reach it, e.g."
            ' api.listen = ["tcp:8080", "tls:tcp:443"] (or "tls:tcp:8443" with'
            " 443 forwarded to it)."
        )
    if not (config["acme.enabled"] or config["tls.cert_file"]):
        lines.append(
            "  The certificate is self-signed, which senders refuse for the"
            " policy: set acme.enabled = true (it orders a certificate for"
            f" {host} too) or give one in tls.cert_file."
        )
    if policy.mode == "testing":
        lines.append(
            "  Mode testing: senders deliver anyway and report TLS problems to"
            " the TLSRPT address. When the reports are clean, set mtasts.mode ="
            ' "enforce" and publish the new id (the server logs it at start).'
        )
    return "\n".join(lines)

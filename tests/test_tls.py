"""STARTTLS certificates: self-signed made once, or the operator's files."""

from __future__ import annotations

import os
import smtplib
import ssl
import stat

from cryptography import x509
from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase

from mailraven.tls.selfsigned import ensureSelfSigned
from tests.helpers import RunningServer
from tests.tlsclient import dnsNames


def peerCertificate(port: int) -> x509.Certificate:
    """Blocking: STARTTLS and return the server's leaf certificate."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with smtplib.SMTP("127.0.0.1", port, timeout=20) as client:
        client.ehlo("c.example.org")
        client.starttls(context=context)
        der = client.sock.getpeercert(binary_form=True)
        version = client.sock.version()
    assert version in ("TLSv1.2", "TLSv1.3"), version
    return x509.load_der_x509_certificate(der)


class SelfSignedTests(SynchronousTestCase):
    def test_createdOncePrivateAndReused(self):
        certs = os.path.join(os.path.abspath(self.mktemp()), "certs")
        cert, key = ensureSelfSigned(certs, "mx.example.test")
        self.assertEqual(stat.S_IMODE(os.stat(key).st_mode), 0o600)
        self.assertEqual(stat.S_IMODE(os.stat(certs).st_mode), 0o700)
        with open(cert, "rb") as f:
            first = f.read()
        self.assertEqual(ensureSelfSigned(certs, "mx.example.test"), (cert, key))
        with open(cert, "rb") as f:
            self.assertEqual(f.read(), first)

    def test_remadeWhenTheNamesChange(self):
        """A domain added later gets its MTA-STS policy host into the SAN."""
        certs = os.path.join(os.path.abspath(self.mktemp()), "certs")
        cert, _ = ensureSelfSigned(certs, "mx.example.test")
        ensureSelfSigned(certs, "mx.example.test", ["mta-sts.example.test"])
        with open(cert, "rb") as f:
            leaf = x509.load_pem_x509_certificate(f.read())
        self.assertEqual(dnsNames(leaf), ["mx.example.test", "mta-sts.example.test"])


class ServedCertificateTests(TestCase):
    timeout = 60

    @inlineCallbacks
    def test_selfSignedNamesTheHostAndThePolicyHosts(self):
        """server.hostname, and mta-sts.<domain> for each mail domain with a
        dot (the MTA-STS policy is served under that name)."""
        server = RunningServer(self)
        leaf = yield deferToThread(peerCertificate, server.smtpPort)
        self.assertEqual(dnsNames(leaf), ["mx.mailraven.test", "mta-sts.example.test"])

    @inlineCallbacks
    def test_operatorCertificateIsServed(self):
        own = os.path.abspath(self.mktemp())
        cert, key = ensureSelfSigned(own, "operator.example.test")
        server = RunningServer(self, tls__cert_file=cert, tls__key_file=key)
        leaf = yield deferToThread(peerCertificate, server.smtpPort)
        names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        self.assertEqual(
            names.value.get_values_for_type(x509.DNSName), ["operator.example.test"]
        )
        self.assertFalse(
            os.path.exists(os.path.join(server.dataDir, "certs", "selfsigned.key"))
        )


class ImplicitTLSTests(TestCase):
    timeout = 60

    @inlineCallbacks
    def test_tlsPrefixGivesImplicitTLSWithoutStartTLS(self):
        server = RunningServer(
            self, submission__listen=["tls:tcp:0:interface=127.0.0.1"]
        )

        def greet() -> tuple[str, bytes, bytes]:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            with smtplib.SMTP_SSL(
                "127.0.0.1", server.submissionPort, context=context, timeout=20
            ) as client:
                code, ehlo = client.ehlo("c.example.org")
                assert code == 250, ehlo
                return client.sock.version(), ehlo, client.docmd("STARTTLS")[1]

        version, ehlo, starttls = yield deferToThread(greet)
        self.assertIn(version, ("TLSv1.2", "TLSv1.3"))
        self.assertNotIn(b"STARTTLS", ehlo)
        self.assertIn(b"TLS already active", starttls)

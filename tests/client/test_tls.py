"""The client's TLS helpers: contexts, channel-binding data, the refusal message.

That our tls-exporter data equals the server's on the same connection is proven by logging in
with SCRAM-SHA-256-PLUS over tls-exporter (tests/client/test_client.py).
"""

from __future__ import annotations

import datetime
import ssl

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import NameOID

from schnack.client import tls
from schnack.server.app import Server


def test_end_point_of_the_servers_certificate_is_the_servers_own(server: Server) -> None:
    pem = (server.config.data_dir / "certs" / "server.crt").read_bytes()
    der = x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)
    assert tls.server_end_point(der) == server.tls.end_point


def test_no_end_point_for_a_signature_without_a_hash() -> None:
    """RFC 5929 §4.1 defines the binding by the signature's hash; Ed25519 has none."""
    key = ed25519.Ed25519PrivateKey.generate()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "example.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, None)
    )
    assert tls.server_end_point(cert.public_bytes(serialization.Encoding.DER)) is None


def test_contexts(server: Server) -> None:
    checking = tls.context(True, direct_tls=False)
    assert checking.verify_mode == ssl.CERT_REQUIRED and checking.check_hostname
    assert checking.minimum_version == ssl.TLSVersion.TLSv1_2
    trusting = tls.context(server.config.data_dir / "certs" / "server.crt", direct_tls=True)
    assert trusting.verify_mode == ssl.CERT_REQUIRED
    assert len(trusting.get_ca_certs()) == 1
    open_ = tls.context(False, direct_tls=False)
    assert open_.verify_mode == ssl.CERT_NONE and not open_.check_hostname


def test_refusal_names_the_domain_the_reason_and_the_way_out() -> None:
    err = ssl.SSLCertVerificationError(1, "certificate verify failed")
    err.verify_message = "certificate has expired"
    message = str(tls.verification_failure("example.test", err))
    assert message.startswith("the certificate of example.test is not trusted: certificate has expired; ")
    assert "verify=False" in message

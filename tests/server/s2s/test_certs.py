"""Certificates of incoming peers: asked for without failing those that do not verify, and
matched against a domain (RFC 6125 §6.4)."""

from __future__ import annotations

import contextlib
import ssl
from pathlib import Path

import pytest
from cryptography import x509

from schnack.server.s2s.certs import names_domain, request_peer_certificates, verified_peer
from schnack.server.tls import make_self_signed


def pair(tmp_path: Path, name: str, domains: list[str]) -> tuple[Path, Path]:
    cert, key = tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
    make_self_signed(domains, cert, key)
    return cert, key


def handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> ssl.SSLObject:
    """A TLS handshake in memory; the server's end."""
    s_in, s_out, c_in, c_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    client = client_ctx.wrap_bio(c_in, c_out)
    for _ in range(8):
        for end in (client, server):
            with contextlib.suppress(ssl.SSLWantReadError):
                end.do_handshake()
        s_in.write(c_out.read())
        c_in.write(s_out.read())
    # TLS 1.3 sends the client's certificate after the server's last flight: one more round.
    with contextlib.suppress(ssl.SSLWantReadError):
        server.read(1)
    return server


@pytest.fixture
def contexts(tmp_path: Path) -> tuple[ssl.SSLContext, Path]:
    cert, key = pair(tmp_path, "server", ["localhost"])
    trusted, _ = pair(tmp_path, "trusted", ["trusted.example"])
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    ctx.load_verify_locations(trusted)
    assert request_peer_certificates(ctx)
    return ctx, tmp_path


def client(tmp_path: Path, name: str | None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if name is not None:
        ctx.load_cert_chain(tmp_path / f"{name}.crt", tmp_path / f"{name}.key")
    return ctx


def test_a_trusted_peer_certificate_is_returned(contexts: tuple[ssl.SSLContext, Path]) -> None:
    ctx, tmp_path = contexts
    cert = verified_peer(handshake(ctx, client(tmp_path, "trusted")), ctx)
    assert cert is not None and names_domain(cert, "trusted.example")


def test_an_untrusted_certificate_does_not_fail_the_handshake(contexts: tuple[ssl.SSLContext, Path]) -> None:
    ctx, tmp_path = contexts
    pair(tmp_path, "stranger", ["stranger.example"])
    server = handshake(ctx, client(tmp_path, "stranger"))
    assert server.getpeercert(binary_form=True) is not None
    assert verified_peer(server, ctx) is None


def test_no_certificate_at_all(contexts: tuple[ssl.SSLContext, Path]) -> None:
    ctx, tmp_path = contexts
    assert verified_peer(handshake(ctx, client(tmp_path, None)), ctx) is None


@pytest.mark.parametrize(
    ("domain", "expected"),
    [
        ("example.org", True),
        ("EXAMPLE.org", True),
        ("chat.example.org", True),  # *.example.org
        ("a.chat.example.org", False),  # a wildcard covers one label only
        ("example.net", False),
        ("192.0.2.1", False),  # an IP literal needs an iPAddress entry
    ],
)
def test_names_domain(tmp_path: Path, domain: str, expected: bool) -> None:
    cert_path, _ = pair(tmp_path, "named", ["example.org"])
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    assert names_domain(cert, domain) is expected


def test_ip_literal_is_matched_by_address(tmp_path: Path) -> None:
    cert_path, _ = pair(tmp_path, "local", ["localhost"])  # localhost also gets 127.0.0.1 and ::1
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    assert names_domain(cert, "127.0.0.1")
    assert names_domain(cert, "[::1]")
    assert not names_domain(cert, "127.0.0.2")

"""TLS: the self-signed certificate, protocol versions over real handshakes, channel-binding data."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import socket
import ssl
import stat
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand
from cryptography.x509.oid import NameOID

from schnack.server.tls import TlsConfig, make_self_signed, server_end_point, tls_exporter

# Certificates signed with MD5 and SHA-1, which today's libraries refuse to produce (made with
# ``openssl req -x509 -md5`` and ``-sha1``); RFC 5929 §4.1 names both.
MD5_CERT = b"""-----BEGIN CERTIFICATE-----
MIICCDCCAXGgAwIBAgIUOhNSNdVUnaJEH9Q6qrtWMenX79AwDQYJKoZIhvcNAQEE
BQAwFjEUMBIGA1UEAwwLbWQ1LmV4YW1wbGUwHhcNMjYxMjAyMTU1MjUwWhcNMzYx
MTI5MTU1MjUwWjAWMRQwEgYDVQQDDAttZDUuZXhhbXBsZTCBnzANBgkqhkiG9w0B
AQEFAAOBjQAwgYkCgYEA7v8JV7gYgIFuUy/CDuLD5E7yZtyzXohlDbxgBpnU3vPL
wkuBtV8YXGLqjUMqmRtBbcxm3kfT8/l1ysNQqhXOtVC6CFjexeT/4veLL3ke/e63
I5vpBA08utGcBO1yOQK9HJoUFu8l8d3yFfDBnxIposy8R32VV/Y3wWYFHfdqmm8C
AwEAAaNTMFEwHQYDVR0OBBYEFDvALWEZlMrBZDV5BQYrTKy3qcbJMB8GA1UdIwQY
MBaAFDvALWEZlMrBZDV5BQYrTKy3qcbJMA8GA1UdEwEB/wQFMAMBAf8wDQYJKoZI
hvcNAQEEBQADgYEAWiQhs9uYzrUNU8e3nDclirqZci8c9J9kJWlDxnxRfE1A1fCb
F/WdqcAMUrlnxq4+CdFnilfAIRu2KyISar5AcQWXeuRUDFetcBZQ4fVJCY6By+r9
w6Qfa0DGPw3fP3qLV4nCuBxn3qjcVYYpI6s6YnBLm3LKeWnQB1hA2OahUss=
-----END CERTIFICATE-----
"""
SHA1_CERT = b"""-----BEGIN CERTIFICATE-----
MIIBgjCCASigAwIBAgIUK1NZzo10UszbZxYe6Ud6xzJvkr4wCQYHKoZIzj0EATAX
MRUwEwYDVQQDDAxzaGExLmV4YW1wbGUwHhcNMjYxMjAyMTU1MjQ3WhcNMzYxMTI5
MTU1MjQ3WjAXMRUwEwYDVQQDDAxzaGExLmV4YW1wbGUwWTATBgcqhkjOPQIBBggq
hkjOPQMBBwNCAAQHAGZIjaf64Xb3g1ZNTeJqUAftDuVo9M/YUuWbDrzIo5HqpPZH
r/6pvcFW0NMlxarlh1cIpgoUXqzTcnA+9M6to1MwUTAdBgNVHQ4EFgQUMekg1/fB
dxWRKPvHXn81RYohvS0wHwYDVR0jBBgwFoAUMekg1/fBdxWRKPvHXn81RYohvS0w
DwYDVR0TAQH/BAUwAwEB/zAJBgcqhkjOPQQBA0kAMEYCIQC245NhWCyNZLtkImMX
RwT1FF+y3Xil8B5cRiPA/pALCgIhALsIIttr/7KlS7iINYEwhGd/tTI1AdyQljMu
PPO96EDW
-----END CERTIFICATE-----
"""

CertKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
SignatureHash = hashes.SHA224 | hashes.SHA256 | hashes.SHA384 | hashes.SHA512


def certificate(key: CertKey, algorithm: SignatureHash | None, *, days: float = 30,
                name: str = "example.org") -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=60))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(key, algorithm)
    )


def write_pair(directory: Path, key: CertKey, cert: x509.Certificate) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "server.crt", directory / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def dns_names(cert_path: Path) -> list[str]:
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)


def client_context(*, version: ssl.TLSVersion | None = None, cafile: Path | None = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if cafile is not None:
        ctx.load_verify_locations(cafile)
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if version is not None:
        # Old protocol versions need the lowest security level, or the client would not even offer them.
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
        ctx.minimum_version = ctx.maximum_version = version
    return ctx


class Handshake:
    """One TLS handshake over a socketpair: the server side in a thread, the client here."""

    def __init__(self, server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, hostname: str = "localhost") -> None:
        self.server: ssl.SSLSocket | None = None
        self.server_error: ssl.SSLError | None = None
        self.client: ssl.SSLSocket | None = None
        self.client_error: ssl.SSLError | None = None
        server_sock, client_sock = socket.socketpair()
        for s in (server_sock, client_sock):
            s.settimeout(10)
        self._socks = [server_sock, client_sock]

        def serve() -> None:
            try:
                self.server = server_ctx.wrap_socket(server_sock, server_side=True)
            except ssl.SSLError as err:
                self.server_error = err
                server_sock.close()

        thread = threading.Thread(target=serve)
        thread.start()
        try:
            self.client = client_ctx.wrap_socket(client_sock, server_hostname=hostname)
        except ssl.SSLError as err:
            self.client_error = err
            client_sock.close()
        thread.join()

    def close(self) -> None:
        for s in (self.client, self.server, *self._socks):
            if s is not None:
                s.close()


@pytest.fixture
def tls(tmp_path: Path) -> TlsConfig:
    return TlsConfig.for_domains(["localhost"], tmp_path / "data", None, None)


# The self-signed certificate -----------------------------------------------------------------


def test_self_signed_pair_is_made_once_and_reused(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = TlsConfig.for_domains(["localhost"], data_dir, None, None)
    assert first.cert_path == data_dir / "certs" / "server.crt"
    assert first.key_path == data_dir / "certs" / "server.key"
    cert, key = first.cert_path.read_bytes(), first.key_path.read_bytes()
    # A restart loads the same pair instead of making a new one, so clients that pinned it keep working.
    second = TlsConfig.for_domains(["localhost"], data_dir, None, None)
    assert second.cert_path.read_bytes() == cert
    assert second.key_path.read_bytes() == key
    assert second.end_point == first.end_point


def test_private_key_is_readable_by_the_owner_only(tls: TlsConfig) -> None:
    assert stat.S_IMODE(tls.key_path.stat().st_mode) == 0o600


def test_subject_alternative_names_cover_the_domains(tmp_path: Path) -> None:
    tls = TlsConfig.for_domains(["example.org", "chat.example.net"], tmp_path, None, None)
    assert set(dns_names(tls.cert_path)) == {"example.org", "*.example.org", "chat.example.net", "*.chat.example.net"}
    cert = x509.load_pem_x509_certificate(tls.cert_path.read_bytes())
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "example.org"
    # A client that trusts the certificate verifies it for each domain and its subdomains.
    for hostname in ("example.org", "upload.example.org", "chat.example.net", "muc.chat.example.net"):
        hs = Handshake(tls.context, client_context(cafile=tls.cert_path), hostname)
        try:
            assert hs.client is not None, hs.client_error
        finally:
            hs.close()
    hs = Handshake(tls.context, client_context(cafile=tls.cert_path), "example.com")
    try:
        assert hs.client_error is not None and "match" in str(hs.client_error)
    finally:
        hs.close()


def test_localhost_certificate_names_the_loopback_addresses(tls: TlsConfig) -> None:
    cert = x509.load_pem_x509_certificate(tls.cert_path.read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "::1"}
    hs = Handshake(tls.context, client_context(cafile=tls.cert_path), "127.0.0.1")
    try:
        assert hs.client is not None, hs.client_error
    finally:
        hs.close()


def test_a_new_domain_gets_a_new_self_signed_certificate(tmp_path: Path) -> None:
    """A domain added to the configuration must be covered after the restart, not fail every client."""
    old = TlsConfig.for_domains(["example.org"], tmp_path, None, None)
    old_pem = old.cert_path.read_bytes()
    new = TlsConfig.for_domains(["example.org", "example.net"], tmp_path, None, None)
    assert new.cert_path.read_bytes() != old_pem
    assert {"example.org", "example.net"} <= set(dns_names(new.cert_path))
    # Dropping a domain again keeps the certificate: it still covers every domain served.
    assert TlsConfig.for_domains(["example.net"], tmp_path, None, None).cert_path.read_bytes() == new.cert_path.read_bytes()


def test_an_expired_self_signed_certificate_is_replaced(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    write_pair(tmp_path / "certs", key, certificate(key, hashes.SHA256(), days=-1))
    tls = TlsConfig.for_domains(["example.org"], tmp_path, None, None)
    cert = x509.load_pem_x509_certificate(tls.cert_path.read_bytes())
    assert cert.not_valid_after_utc > datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=365)
    assert stat.S_IMODE(tls.key_path.stat().st_mode) == 0o600


def test_a_configured_pair_is_used_as_it_is(tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = certificate(key, hashes.SHA384(), name="example.org")
    cert_path, key_path = write_pair(tmp_path / "pki", key, cert)
    tls = TlsConfig.for_domains(["example.org", "example.net"], tmp_path / "data", cert_path, key_path)
    assert tls.cert_path == cert_path
    assert cert_path.read_bytes() == cert.public_bytes(serialization.Encoding.PEM)
    assert not (tmp_path / "data" / "certs").exists()
    hs = Handshake(tls.context, client_context())
    try:
        assert hs.client is not None
        served = hs.client.getpeercert(binary_form=True)
        assert served == cert.public_bytes(serialization.Encoding.DER)
        # RFC 5929 §4.1: the signature hash of the certificate, here SHA-384.
        assert tls.end_point == hashlib.sha384(served).digest()
    finally:
        hs.close()


# Protocol versions ---------------------------------------------------------------------------


OLD_VERSIONS = pytest.mark.parametrize(
    ("version", "name"), [(ssl.TLSVersion.TLSv1, "TLSv1"), (ssl.TLSVersion.TLSv1_1, "TLSv1.1")], ids=["1.0", "1.1"]
)
# Naming the old versions is exactly what these tests are for.
ALLOW_OLD = pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")


@ALLOW_OLD
@OLD_VERSIONS
def test_the_old_client_used_below_can_speak_old_tls(tmp_path: Path, version: ssl.TLSVersion, name: str) -> None:
    """Without this, the refusal below could come from the client, not from our server."""
    key = ec.generate_private_key(ec.SECP256R1())
    old_server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    old_server.set_ciphers("DEFAULT:@SECLEVEL=0")
    old_server.minimum_version = ssl.TLSVersion.TLSv1
    cert = certificate(key, hashes.SHA256())
    old_server.load_cert_chain(*write_pair(tmp_path, key, cert))
    hs = Handshake(old_server, client_context(version=version))
    try:
        assert hs.client is not None, hs.client_error or hs.server_error
        assert hs.client.version() == name
    finally:
        hs.close()


@ALLOW_OLD
@OLD_VERSIONS
@pytest.mark.parametrize("which", ["context", "http_context"])
def test_tls_before_1_2_is_refused(tls: TlsConfig, which: str, version: ssl.TLSVersion, name: str) -> None:
    hs = Handshake(getattr(tls, which), client_context(version=version))
    try:
        assert hs.server is None and hs.client is None
        assert hs.server_error is not None
        assert hs.server_error.reason in ("UNSUPPORTED_PROTOCOL", "NO_PROTOCOLS_AVAILABLE")
    finally:
        hs.close()


@pytest.mark.parametrize("which", ["context", "http_context"])
@pytest.mark.parametrize(
    ("version", "name"), [(ssl.TLSVersion.TLSv1_2, "TLSv1.2"), (ssl.TLSVersion.TLSv1_3, "TLSv1.3")], ids=["1.2", "1.3"]
)
def test_tls_1_2_and_1_3_are_accepted(tls: TlsConfig, which: str, version: ssl.TLSVersion, name: str) -> None:
    client = client_context(cafile=tls.cert_path)
    client.minimum_version = client.maximum_version = version
    hs = Handshake(getattr(tls, which), client)
    try:
        assert hs.client is not None and hs.server is not None, hs.client_error or hs.server_error
        assert hs.client.version() == hs.server.version() == name
    finally:
        hs.close()


def test_client_port_negotiates_xmpp_client_alpn(tls: TlsConfig) -> None:
    """XEP-0368: direct TLS clients offer ALPN ``xmpp-client``."""
    client = client_context()
    client.set_alpn_protocols(["xmpp-client"])
    hs = Handshake(tls.context, client)
    try:
        assert hs.client is not None
        assert hs.client.selected_alpn_protocol() == "xmpp-client"
    finally:
        hs.close()


# tls-server-end-point (RFC 5929 §4.1) ---------------------------------------------------------


def test_end_point_of_the_self_signed_certificate(tls: TlsConfig) -> None:
    """What a client computes from the certificate it was served equals what the server offers."""
    hs = Handshake(tls.context, client_context())
    try:
        assert hs.client is not None
        served = hs.client.getpeercert(binary_form=True)
        assert served is not None
        assert tls.end_point == hashlib.sha256(served).digest()
    finally:
        hs.close()


@pytest.mark.parametrize(
    ("make_key", "algorithm", "digest"),
    [
        (lambda: ec.generate_private_key(ec.SECP256R1()), hashes.SHA256(), "sha256"),
        (lambda: ec.generate_private_key(ec.SECP384R1()), hashes.SHA384(), "sha384"),
        (lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048), hashes.SHA512(), "sha512"),
        (lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048), hashes.SHA224(), "sha224"),
    ],
)
def test_end_point_uses_the_signature_hash(
    make_key: Callable[[], CertKey], algorithm: SignatureHash, digest: str
) -> None:
    cert = certificate(make_key(), algorithm)
    der = cert.public_bytes(serialization.Encoding.DER)
    assert server_end_point(cert) == hashlib.new(digest, der).digest()


@pytest.mark.parametrize("pem", [MD5_CERT, SHA1_CERT], ids=["md5", "sha1"])
def test_end_point_upgrades_md5_and_sha1_to_sha256(pem: bytes) -> None:
    cert = x509.load_pem_x509_certificate(pem)
    der = cert.public_bytes(serialization.Encoding.DER)
    assert server_end_point(cert) == hashlib.sha256(der).digest()


def test_end_point_is_undefined_without_a_signature_hash() -> None:
    """RFC 5929 §4.1: for a signature with no hash (Ed25519) the binding is undefined: not offered."""
    cert = certificate(ed25519.Ed25519PrivateKey.generate(), None)
    assert server_end_point(cert) is None


# tls-exporter (RFC 9266) ----------------------------------------------------------------------


def hkdf_expand_label(secret: bytes, label: bytes, context: bytes, length: int, algorithm: hashes.HashAlgorithm) -> bytes:
    """RFC 8446 §7.1."""
    full = b"tls13 " + label
    info = length.to_bytes(2, "big") + bytes([len(full)]) + full + bytes([len(context)]) + context
    return HKDFExpand(algorithm, length, info).derive(secret)


def rfc8446_exporter(exporter_secret: bytes, label: bytes, length: int, algorithm: hashes.HashAlgorithm) -> bytes:
    """RFC 8446 §7.5 with an empty context, as RFC 9266 §2 prescribes."""
    empty_hash = hashlib.new(algorithm.name, b"").digest()
    derived = hkdf_expand_label(exporter_secret, label, empty_hash, algorithm.digest_size, algorithm)
    return hkdf_expand_label(derived, b"exporter", empty_hash, length, algorithm)


@dataclass
class Loopback:
    """The two ends of a TLS connection."""

    server: ssl.SSLObject
    client: ssl.SSLObject


@contextlib.asynccontextmanager
async def loopback(tls: TlsConfig, keylog: Path | None = None) -> AsyncIterator[Loopback]:
    """A TLS connection over 127.0.0.1 through asyncio, as the listeners serve it."""
    client_ctx = client_context()
    if keylog is not None:
        client_ctx.keylog_filename = str(keylog)
    accepted: asyncio.Future[asyncio.StreamWriter] = asyncio.get_running_loop().create_future()

    async def on_client(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.set_result(writer)

    srv = await asyncio.start_server(on_client, "127.0.0.1", 0, ssl=tls.context)
    port = srv.sockets[0].getsockname()[1]
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_ctx, server_hostname="localhost")
    server_writer = await asyncio.wait_for(accepted, 10)
    try:
        yield Loopback(server_writer.get_extra_info("ssl_object"), writer.get_extra_info("ssl_object"))
    finally:
        for w in (writer, server_writer):
            w.close()
        srv.close()
        await srv.wait_closed()


async def test_tls_exporter_agrees_between_client_and_server(tls: TlsConfig, tmp_path: Path) -> None:
    keylog = tmp_path / "keys.log"
    async with loopback(tls, keylog) as pair:
        assert pair.server.version() == pair.client.version() == "TLSv1.3"
        server_side = tls_exporter(pair.server, tls.context)
        client_side = tls_exporter(pair.client, tls.context)
        cipher = pair.client.cipher()
    assert server_side is not None and len(server_side) == 32
    assert client_side == server_side
    # Independently: RFC 8446 §7.5 over the exporter secret the client logged (SSLKEYLOGFILE format).
    (line,) = [ln for ln in keylog.read_text().splitlines() if ln.startswith("EXPORTER_SECRET ")]
    secret = bytes.fromhex(line.split()[2])
    assert cipher is not None
    algorithm: hashes.HashAlgorithm = hashes.SHA384() if cipher[0].endswith("SHA384") else hashes.SHA256()
    assert server_side == rfc8446_exporter(secret, b"EXPORTER-Channel-Binding", 32, algorithm)


async def test_tls_exporter_differs_per_connection(tls: TlsConfig) -> None:
    values = []
    for _ in range(2):
        async with loopback(tls) as pair:
            values.append(tls_exporter(pair.server, tls.context))
    assert None not in values
    assert values[0] != values[1]


def test_tls_exporter_is_not_offered_on_tls_1_2(tls: TlsConfig) -> None:
    """RFC 9266 §3: tls-exporter is defined here for TLS 1.3 only."""
    server_bio, client_bio = ssl.MemoryBIO(), ssl.MemoryBIO()
    server_out, client_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    client_ctx = client_context()
    client_ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    server = tls.context.wrap_bio(server_bio, server_out, server_side=True)
    client = client_ctx.wrap_bio(client_bio, client_out)
    for _ in range(6):
        for end in (client, server):
            with contextlib.suppress(ssl.SSLWantReadError):
                end.do_handshake()
        server_bio.write(client_out.read())
        client_bio.write(server_out.read())
    assert server.version() == "TLSv1.2"
    assert tls_exporter(server, tls.context) is None
    assert tls_exporter(None, tls.context) is None


def test_make_self_signed_writes_a_loadable_pair(tmp_path: Path) -> None:
    make_self_signed(["example.org"], tmp_path / "a" / "c.pem", tmp_path / "a" / "k.pem")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tmp_path / "a" / "c.pem", tmp_path / "a" / "k.pem")
    assert dns_names(tmp_path / "a" / "c.pem") == ["example.org", "*.example.org"]

"""TLS for every listener: certificates, contexts (TLS 1.2+) and channel-binding data.

Channel bindings (RFC 5929 §4 tls-server-end-point, RFC 9266 tls-exporter, and RFC 5929 §3
tls-unique on TLS 1.2) let SCRAM-*-PLUS prove that no one terminated TLS in between.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import hashlib
import ipaddress
import logging
import ssl
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

log = logging.getLogger(__name__)


def make_self_signed(domains: list[str], cert_path: Path, key_path: Path) -> None:
    """Write a self-signed ECDSA P-256 certificate valid for ``domains`` and their subdomains."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domains[0])])
    sans: list[x509.GeneralName] = []
    for domain in domains:
        sans += [x509.DNSName(domain), x509.DNSName(f"*.{domain}")]
    if "localhost" in domains:
        sans += [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.IPAddress(ipaddress.ip_address("::1"))]
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=825))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    key_path.touch(mode=0o600)
    # touch() keeps the mode of a file that is already there (a pair being replaced).
    key_path.chmod(0o600)
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


class TlsConfig:
    """The server's certificate, its TLS context and what channel binding needs from it."""

    def __init__(self, cert_path: Path, key_path: Path) -> None:
        self.cert_path = cert_path
        self.key_path = key_path
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(cert_path, key_path)
        ctx.set_alpn_protocols(["xmpp-client"])
        self.context = ctx
        http_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        http_ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        http_ctx.load_cert_chain(cert_path, key_path)
        self.http_context = http_ctx
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        self.end_point = server_end_point(cert)

    @classmethod
    def for_domains(cls, domains: list[str], data_dir: Path, cert: Path | None, key: Path | None) -> TlsConfig:
        """Load the configured pair, or create (once) and load a self-signed one in ``data_dir``."""
        if cert is None or key is None:
            cert = data_dir / "certs" / "server.crt"
            key = data_dir / "certs" / "server.key"
            if not _still_serves(cert, key, domains):
                log.info("generating a self-signed certificate for %s in %s", ", ".join(domains), cert)
                make_self_signed(domains, cert, key)
        return cls(cert, key)


def _still_serves(cert_path: Path, key_path: Path, domains: list[str]) -> bool:
    """Whether a self-signed pair made earlier can be kept: present, not expiring, naming every domain.

    A domain added to the configuration, or a certificate past its end, would otherwise fail
    every client's verification after the restart.
    """
    if not cert_path.exists() or not key_path.exists():
        return False
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return False
    soon = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=1)
    return set(domains) <= set(sans.get_values_for_type(x509.DNSName)) and cert.not_valid_after_utc > soon


def server_end_point(cert: x509.Certificate) -> bytes | None:
    """RFC 5929 §4.1: the certificate hashed with its signature hash, MD5 and SHA-1 becoming SHA-256.

    A signature without a hash (Ed25519) leaves the binding undefined, so it is not offered.
    """
    algorithm = cert.signature_hash_algorithm
    if algorithm is None:
        return None
    name = algorithm.name
    if name in ("md5", "sha1"):
        name = "sha256"
    return hashlib.new(name, cert.public_bytes(serialization.Encoding.DER)).digest()


# Python's ssl module has no RFC 5705 keying-material exporter, which tls-exporter needs. OpenSSL
# has it; we reach the SSL* of an ssl.SSLObject through ctypes. The struct layout is checked once
# by a self-test handshake in memory; if the two ends disagree, tls-exporter is simply not offered.
_EXPORTER_LABEL = b"EXPORTER-Channel-Binding"
_exporter_ok: bool | None = None


def _ssl_pointer(obj: ssl.SSLObject) -> int | None:
    import ctypes

    inner = getattr(obj, "_sslobj", None)
    if inner is None:
        return None
    # PySSLSocket: PyObject_HEAD (refcount, type), a weakref to the socket, then SSL *ssl.
    return ctypes.c_void_p.from_address(id(inner) + 3 * ctypes.sizeof(ctypes.c_void_p)).value


@functools.cache
def _exporter_function() -> Any:
    """OpenSSL's SSL_export_keying_material, looked up once (dlopen on every login would show)."""
    import _ssl
    import ctypes

    fn = ctypes.CDLL(_ssl.__file__).SSL_export_keying_material
    fn.argtypes = [
        ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_size_t,
        ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int,
    ]  # fmt: skip
    fn.restype = ctypes.c_int
    return fn


def _export(obj: ssl.SSLObject) -> bytes | None:
    import ctypes

    pointer = _ssl_pointer(obj)
    if not pointer:
        return None
    out = ctypes.create_string_buffer(32)
    if _exporter_function()(pointer, out, 32, _EXPORTER_LABEL, len(_EXPORTER_LABEL), None, 0, 1) != 1:
        return None
    return out.raw


def _self_test(server_ctx: ssl.SSLContext) -> bool:
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.check_hostname = False
    client_ctx.verify_mode = ssl.CERT_NONE
    s_in, s_out, c_in, c_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    client = client_ctx.wrap_bio(c_in, c_out)
    for _ in range(8):
        for end in (client, server):
            with contextlib.suppress(ssl.SSLWantReadError):
                end.do_handshake()
        s_in.write(c_out.read())
        c_in.write(s_out.read())
    a, b = _export(server), _export(client)
    return a is not None and a == b and a != bytes(32)


def tls_exporter(obj: ssl.SSLObject | None, server_ctx: ssl.SSLContext) -> bytes | None:
    """RFC 9266 tls-exporter data of a TLS 1.3 connection, or None where it can't be had."""
    global _exporter_ok
    if obj is None or obj.version() != "TLSv1.3":
        return None
    if _exporter_ok is None:
        try:
            _exporter_ok = _self_test(server_ctx)
        except (OSError, AttributeError, ssl.SSLError):
            _exporter_ok = False
        if not _exporter_ok:
            log.warning("TLS keying-material export is unavailable; not offering tls-exporter")
    return _export(obj) if _exporter_ok else None


def tls_unique(obj: ssl.SSLObject | None) -> bytes | None:
    """RFC 5929 §3 tls-unique data of a TLS 1.2 connection; RFC 9266 §3 forbids it on TLS 1.3.

    Clients that ignore XEP-0440 pick tls-unique on TLS 1.2 (slixmpp does), so refusing it would
    fail every -PLUS attempt of theirs and count each one as a failed login.
    """
    if obj is None or obj.version() == "TLSv1.3":
        return None
    return obj.get_channel_binding("tls-unique")

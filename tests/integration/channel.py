"""TLS from the client's side for channel-binding tests: exact TLS versions and binding data."""

from __future__ import annotations

import hashlib
import ssl

from cryptography import x509

from schnack.server.app import Server
from schnack.server.tls import tls_exporter

from .wire import insecure_context


def client_context(version: ssl.TLSVersion) -> ssl.SSLContext:
    """A client context that speaks exactly ``version`` and trusts the self-signed certificate."""
    ctx = insecure_context()
    ctx.minimum_version = ctx.maximum_version = version
    return ctx


def binding_data(obj: object, kind: str, server: Server) -> bytes:
    """The client's own channel-binding data of its TLS connection ``obj``."""
    assert isinstance(obj, ssl.SSLObject)
    if kind == "tls-server-end-point":
        # RFC 5929 §4.1: the server certificate hashed with its signature's hash, MD5/SHA-1 becoming SHA-256.
        der = obj.getpeercert(binary_form=True)
        assert der is not None
        algorithm = x509.load_der_x509_certificate(der).signature_hash_algorithm
        assert algorithm is not None
        name = "sha256" if algorithm.name in ("md5", "sha1") else algorithm.name
        return hashlib.new(name, der).digest()
    if kind == "tls-unique":
        data = obj.get_channel_binding("tls-unique")
    else:
        # RFC 9266: Python's ssl has no exporter; the server's reaches OpenSSL's, for either end.
        data = tls_exporter(obj, server.tls.context)
    assert data is not None
    return data

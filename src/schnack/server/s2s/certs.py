"""Certificates of incoming peers, for SASL EXTERNAL (RFC 6120 §13.7.2, RFC 6125 §6, XEP-0178).

An incoming stream may authenticate its domain with its TLS client certificate, but only if
the certificate verifies; many peers present one that does not (self-signed, or from a CA we
do not trust) and must still reach us with dialback. Python's ssl module can either not ask
for a certificate at all or fail the handshake when it does not verify. So the server
context asks for one (``CERT_OPTIONAL``) with an OpenSSL verification callback that lets the
handshake go on whatever the outcome, and :func:`verified_peer` reads OpenSSL's verdict
(``SSL_get_verify_result``) afterwards. The two OpenSSL structures are reached through ctypes
as in :mod:`..tls`; the context's is checked against the verify mode Python set, the
connection's against the context, so a layout that does not match turns the feature off
(peers then use dialback) instead of reading the wrong memory twice.
"""

from __future__ import annotations

import ctypes
import functools
import ipaddress
import logging
import ssl
from typing import Any

from cryptography import x509

log = logging.getLogger(__name__)

_SSL_VERIFY_PEER = 1
_SSL_VERIFY_FAIL_IF_NO_PEER_CERT = 2
_X509_V_OK = 0
_VERIFY_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_void_p)
# Kept here for as long as the process lives: OpenSSL holds on to the function pointer.
_ACCEPT = _VERIFY_CALLBACK(lambda _preverify_ok, _store: 1)


@functools.cache
def _openssl() -> Any:
    """libssl's functions, found through the ssl module's own extension."""
    import _ssl

    lib = ctypes.CDLL(_ssl.__file__)
    lib.SSL_CTX_set_verify.argtypes = [ctypes.c_void_p, ctypes.c_int, _VERIFY_CALLBACK]
    lib.SSL_CTX_set_verify.restype = None
    lib.SSL_CTX_get_verify_mode.argtypes = [ctypes.c_void_p]
    lib.SSL_CTX_get_verify_mode.restype = ctypes.c_int
    lib.SSL_get_SSL_CTX.argtypes = [ctypes.c_void_p]
    lib.SSL_get_SSL_CTX.restype = ctypes.c_void_p
    lib.SSL_get_verify_result.argtypes = [ctypes.c_void_p]
    lib.SSL_get_verify_result.restype = ctypes.c_long
    return lib


def _context_pointer(ctx: ssl.SSLContext) -> int | None:
    # PySSLContext: PyObject_HEAD (refcount, type), then SSL_CTX *ctx.
    return ctypes.c_void_p.from_address(id(ctx) + 2 * ctypes.sizeof(ctypes.c_void_p)).value


def _connection_pointer(obj: ssl.SSLObject) -> int | None:
    inner = getattr(obj, "_sslobj", None)
    if inner is None:
        return None
    # PySSLSocket: PyObject_HEAD (refcount, type), a weakref to the socket, then SSL *ssl.
    return ctypes.c_void_p.from_address(id(inner) + 3 * ctypes.sizeof(ctypes.c_void_p)).value


def request_peer_certificates(ctx: ssl.SSLContext) -> bool:
    """Make ``ctx`` ask peers for a certificate without failing those that do not verify.

    False (and ``ctx`` asks for none) where OpenSSL cannot be reached as expected.
    """
    try:
        lib = _openssl()
        pointer = _context_pointer(ctx)
        ctx.verify_mode = ssl.CERT_REQUIRED
        matches = pointer is not None and lib.SSL_CTX_get_verify_mode(pointer) == (
            _SSL_VERIFY_PEER | _SSL_VERIFY_FAIL_IF_NO_PEER_CERT
        )
        ctx.verify_mode = ssl.CERT_OPTIONAL
        matches = matches and lib.SSL_CTX_get_verify_mode(pointer) == _SSL_VERIFY_PEER
        if matches:
            lib.SSL_CTX_set_verify(pointer, _SSL_VERIFY_PEER, _ACCEPT)
            return True
    except (OSError, AttributeError) as err:
        log.debug("OpenSSL not reachable: %s", err)
    ctx.verify_mode = ssl.CERT_NONE
    log.warning("cannot check client certificates here; incoming s2s streams offer dialback only")
    return False


def verified_peer(obj: ssl.SSLObject | None, ctx: ssl.SSLContext) -> x509.Certificate | None:
    """The peer's certificate, if it sent one whose chain verified against the trusted CAs."""
    if obj is None:
        return None
    der = obj.getpeercert(binary_form=True)
    if not der:
        return None
    lib = _openssl()
    pointer = _connection_pointer(obj)
    if not pointer or lib.SSL_get_SSL_CTX(pointer) != _context_pointer(ctx):
        return None
    if lib.SSL_get_verify_result(pointer) != _X509_V_OK:
        return None
    return x509.load_der_x509_certificate(der)


def names_domain(cert: x509.Certificate, domain: str) -> bool:
    """RFC 6125 §6.4: whether the certificate's subjectAltName names ``domain`` (a DNS name,
    with a wildcard only as the whole leftmost label, or an IP address for an IP literal)."""
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    domain = domain.lower().rstrip(".")
    bare = domain[1:-1] if domain.startswith("[") else domain
    try:
        address = ipaddress.ip_address(bare)
    except ValueError:
        address = None
    if address is not None:
        return address in sans.get_values_for_type(x509.IPAddress)
    for san in sans.get_values_for_type(x509.DNSName):
        name = san.lower().rstrip(".")
        if name == domain:
            return True
        if name.startswith("*.") and "." in domain and domain.split(".", 1)[1] == name[2:]:
            return True
    return False

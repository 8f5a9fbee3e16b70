"""TLS for the client: verifying contexts and the channel-binding data of a connection.

Certificates are verified by default against the system's trust store, or against a CA file
the caller names; the reference identity is the account's domain (RFC 6125 §6.2, RFC 7590 §3.2),
also when DNS SRV pointed elsewhere. Only ``verify=False`` turns checking off.

Channel bindings (RFC 5929 §4.1 tls-server-end-point, RFC 9266 tls-exporter on TLS 1.3,
RFC 5929 §3 tls-unique before it) are handed to the sans-IO stream, which picks one the server
accepts for SCRAM-*-PLUS.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import ssl
from pathlib import Path
from typing import Any

from cryptography import x509

from .errors import CertificateError

log = logging.getLogger(__name__)

Verify = bool | str | Path
_TLS13 = 0x0304
_EXPORTER_LABEL = b"EXPORTER-Channel-Binding"


def context(verify: Verify, *, direct_tls: bool) -> ssl.SSLContext:
    """A client context: TLS 1.2 or later; ALPN "xmpp-client" on direct TLS (XEP-0368 §3)."""
    if verify is False:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    elif verify is True:
        ctx = ssl.create_default_context()
    else:
        try:
            ctx = ssl.create_default_context(cafile=str(verify))
        except (OSError, ssl.SSLError) as err:
            raise CertificateError(f"cannot use {verify} as CA file: {err}") from None
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if direct_tls:
        ctx.set_alpn_protocols(["xmpp-client"])
    return ctx


def verification_failure(domain: str, err: ssl.SSLCertVerificationError) -> CertificateError:
    """The one-line explanation of a refused certificate, with the way out for test servers."""
    reason = err.verify_message or str(err)
    return CertificateError(
        f"the certificate of {domain} is not trusted: {reason}; "
        "for a test server pass verify=False, or the server's certificate or CA file as verify=PATH"
    )


def channel_bindings(obj: ssl.SSLObject | None) -> dict[str, bytes]:
    """Every binding type this connection can give, by name."""
    if obj is None:
        return {}
    out: dict[str, bytes] = {}
    der = obj.getpeercert(binary_form=True)
    if der:
        end_point = server_end_point(der)
        if end_point is not None:
            out["tls-server-end-point"] = end_point
    if obj.version() == "TLSv1.3":
        exported = tls_exporter(obj)
        if exported is not None:
            out["tls-exporter"] = exported
    else:
        unique = obj.get_channel_binding("tls-unique")
        if unique:
            out["tls-unique"] = unique
    return out


def server_end_point(der: bytes) -> bytes | None:
    """RFC 5929 §4.1: the server certificate hashed with its signature's hash (MD5, SHA-1 → SHA-256).

    None for a signature without a hash (Ed25519), where the binding is undefined.
    """
    algorithm = x509.load_der_x509_certificate(der).signature_hash_algorithm
    if algorithm is None:
        return None
    name = "sha256" if algorithm.name in ("md5", "sha1") else algorithm.name
    return hashlib.new(name, der).digest()


@functools.cache
def _openssl() -> Any:
    """OpenSSL's SSL_export_keying_material and SSL_version from the library ssl is linked to."""
    import _ssl

    lib = ctypes.CDLL(_ssl.__file__)
    export = lib.SSL_export_keying_material
    export.argtypes = [
        ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_size_t,
        ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int,
    ]  # fmt: skip
    export.restype = ctypes.c_int
    version = lib.SSL_version
    version.argtypes = [ctypes.c_void_p]
    version.restype = ctypes.c_int
    return lib


def tls_exporter(obj: ssl.SSLObject) -> bytes | None:
    """RFC 9266: 32 bytes of keying material exported with the label EXPORTER-Channel-Binding.

    Python's ssl has no RFC 5705 exporter, so OpenSSL's is called through ctypes on the ``SSL*``
    inside the SSLObject. The pointer is trusted only if OpenSSL reports TLS 1.3 for it, as
    Python does; otherwise the binding is left out and SCRAM picks another one.
    """
    inner = getattr(obj, "_sslobj", None)
    if inner is None:
        return None
    try:
        lib = _openssl()
        # PySSLSocket: PyObject_HEAD (refcount, type), a weakref to the socket, then SSL *ssl.
        pointer = ctypes.c_void_p.from_address(id(inner) + 3 * ctypes.sizeof(ctypes.c_void_p)).value
        if not pointer or lib.SSL_version(pointer) != _TLS13:
            log.warning("TLS keying-material export is unavailable; not binding with tls-exporter")
            return None
        out = ctypes.create_string_buffer(32)
        if lib.SSL_export_keying_material(pointer, out, 32, _EXPORTER_LABEL, len(_EXPORTER_LABEL), None, 0, 1) != 1:
            return None
    except (OSError, AttributeError):
        return None
    return out.raw

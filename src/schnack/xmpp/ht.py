"""The HT-* SASL mechanisms of draft-schmaus-kitten-sasl-ht-09, both sides, without I/O.

A client proves it holds a token in one message: ``authcid NUL HMAC(token, "Initiator" || cb)``;
the server proves it in its additional data: ``HMAC(token, "Responder" || cb)``, where ``cb`` is
the channel-binding data the mechanism names (§3: -ENDP tls-server-end-point, -EXPR
tls-exporter, -UNIQ tls-unique, -NONE none). XEP-0484 uses them for its tokens.

The server never needs the token itself: HMAC hashes a key longer than the hash's block into
``H(key)`` first (RFC 2104 §2), so tokens longer than the block are checked with their stored
hash as the key, and only that hash is kept.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Collection

from .sasl import SaslFailure

# Mechanism suffix -> the channel binding it uses (None: no binding).
BINDINGS: dict[str, str | None] = {
    "EXPR": "tls-exporter",
    "ENDP": "tls-server-end-point",
    "UNIQ": "tls-unique",
    "NONE": None,
}
_HASHES = {"SHA-256": "sha256"}
# Best first: bound to the channel before not, tls-exporter first as RFC 9266 prefers.
MECHANISMS = tuple(f"HT-{h}-{suffix}" for h in _HASHES for suffix in BINDINGS)
# SHA-256's block size: a token longer than this is hashed before use as an HMAC key.
BLOCK = 64


def parse_mechanism(name: str) -> tuple[str, str | None]:
    """The hashlib name and the channel-binding type of an HT mechanism; SaslFailure if unknown."""
    for hash_name, algorithm in _HASHES.items():
        prefix = f"HT-{hash_name}-"
        if name.startswith(prefix) and name[len(prefix):] in BINDINGS:
            return algorithm, BINDINGS[name[len(prefix):]]
    raise SaslFailure("invalid-mechanism", f"{name or 'no mechanism'} is not a token mechanism")


def offered(bindings: Collection[str]) -> list[str]:
    """The HT mechanisms a connection with these channel bindings can check, best first."""
    return [m for m in MECHANISMS if parse_mechanism(m)[1] is None or parse_mechanism(m)[1] in bindings]


def key_of(token: str, algorithm: str = "sha256") -> bytes:
    """The HMAC key a token stands for: its hash when it is longer than the block (RFC 2104 §2)."""
    raw = token.encode()
    return hashlib.new(algorithm, raw).digest() if len(raw) > BLOCK else raw


def initiator(key: bytes, cb_data: bytes, algorithm: str = "sha256") -> bytes:
    """§3.1: the client's proof."""
    return hmac.new(key, b"Initiator" + cb_data, algorithm).digest()


def responder(key: bytes, cb_data: bytes, algorithm: str = "sha256") -> bytes:
    """§3.1: the server's proof."""
    return hmac.new(key, b"Responder" + cb_data, algorithm).digest()


def client_message(mechanism: str, username: str, token: str, binding: Callable[[str], bytes | None]) -> bytes:
    """The client's only message; SaslFailure if the connection lacks the binding it names."""
    algorithm, kind = parse_mechanism(mechanism)
    cb_data = b"" if kind is None else binding(kind)
    if cb_data is None:
        raise SaslFailure("invalid-mechanism", f"this connection has no {kind} channel binding")
    return username.encode() + b"\0" + initiator(key_of(token, algorithm), cb_data, algorithm)


def check_server(mechanism: str, token: str, binding: Callable[[str], bytes | None], data: bytes) -> None:
    """Check the server's additional data; SaslFailure if it does not prove the token."""
    algorithm, kind = parse_mechanism(mechanism)
    cb_data = b"" if kind is None else (binding(kind) or b"")
    if not hmac.compare_digest(responder(key_of(token, algorithm), cb_data, algorithm), data):
        raise SaslFailure("not-authorized", "the server could not prove it knows the token")


def split_message(data: bytes) -> tuple[str, bytes]:
    """The authcid and the proof of a client message."""
    name, sep, proof = data.partition(b"\0")
    if not sep or not name or not proof:
        raise SaslFailure("malformed-request", "a token mechanism's message is authcid NUL proof")
    try:
        return name.decode(), proof
    except UnicodeDecodeError:
        raise SaslFailure("malformed-request", "the authcid is not UTF-8") from None

"""SASL for XMPP, both sides, without I/O (RFC 6120 §6, RFC 5802, RFC 7677, RFC 4616, RFC 9266).

The SCRAM exchange itself is implemented here, because ``scramp`` refuses the tls-exporter
channel binding (RFC 9266) that TLS 1.3 clients such as Conversations use; ``scramp`` still
provides SASLprep and derives the stored credentials, an independent implementation that the
exchange is checked against. The server side pauses with :class:`NeedCredentials` once it knows
the username, because looking up the stored keys is the caller's (asynchronous) job.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import string
from collections.abc import Callable, Collection
from dataclasses import dataclass

import scramp
from scramp.utils import saslprep

from .jid import JID, JIDError

_HASHES = {"SHA-1": "sha1", "SHA-256": "sha256"}
# Channel-binding types the server side can check, best first (RFC 9266, RFC 5929).
CHANNEL_BINDINGS = ("tls-exporter", "tls-server-end-point", "tls-unique")
_SERVER_SECRET = secrets.token_bytes(32)


class SaslFailure(Exception):
    """An RFC 6120 §6.5 failure condition with an optional text."""

    def __init__(self, condition: str, text: str | None = None) -> None:
        super().__init__(f"{condition}: {text}" if text else condition)
        self.condition = condition
        self.text = text


@dataclass(frozen=True, slots=True)
class ScramCredential:
    """RFC 5802 §3 salted credential for one hash; the password itself is never kept."""

    salt: bytes
    iterations: int
    stored_key: bytes
    server_key: bytes


@dataclass(frozen=True, slots=True)
class Challenge:
    """Send this challenge and wait for the response."""

    data: bytes


@dataclass(frozen=True, slots=True)
class NeedCredentials:
    """Look up this user's credentials and call ``provide_credentials``."""

    username: str


@dataclass(frozen=True, slots=True)
class Success:
    """Authenticated as ``username``; ``data`` is the additional data with success."""

    data: bytes | None
    username: str


SaslStep = Challenge | NeedCredentials | Success


def decode_b64(text: str) -> bytes:
    """RFC 6120 §6.4.2: base64 payload, "=" meaning empty."""
    text = text.strip()
    if text == "=":
        return b""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise SaslFailure("incorrect-encoding", "the payload is not valid base64") from None


def encode_b64(data: bytes | None) -> str:
    """The base64 form of ``data`` ("=" for empty)."""
    return base64.b64encode(data).decode() if data else "="


def derive_credentials(password: str, iterations: int = 4096) -> dict[str, ScramCredential]:
    """SCRAM salted keys for each supported hash, each with its own random salt."""
    out = {}
    for name in _HASHES:
        salt, stored, server, count = scramp.ScramMechanism(f"SCRAM-{name}").make_auth_info(
            password, iteration_count=iterations, salt=secrets.token_bytes(16)
        )
        out[name] = ScramCredential(salt, count, stored, server)
    return out


def password_matches(password: str, credential: ScramCredential) -> bool:
    """Whether ``credential`` (SHA-256) was derived from ``password``: RFC 5802 §3, its
    StoredKey is H(HMAC(SaltedPassword, "Client Key")). As costly as deriving it."""
    sha256 = _Hash("SHA-256")
    try:
        salted = sha256.salted_password(password, credential.salt, credential.iterations)
    except Exception:
        return False
    return hmac.compare_digest(sha256.h(sha256.hmac(salted, b"Client Key")), credential.stored_key)


# Why usable_password refused a password, in words for the one who chose it.
UNUSABLE_PASSWORD = ("the password has characters a password may not hold (RFC 4013): control or private-use ones, "
                     "or right-to-left letters mixed with others")


def usable_password(password: str) -> bool:
    """Whether SCRAM can take ``password``: SASLprep (RFC 4013, RFC 5802 §2.2) refuses control,
    private-use and unassigned characters and mixed text directions, and a password it maps to
    nothing is none. A password it refuses could be stored but never used to log in."""
    try:
        prepared: str = saslprep(password)
    except scramp.ScramException:
        return False
    return prepared != ""


def server_mechanisms(tls: bool, channel_bindings: Collection[str]) -> list[str]:
    """Mechanisms to offer, best first; -PLUS only with a binding, PLAIN only over TLS."""
    mechanisms = []
    if tls and channel_bindings:
        mechanisms += ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-1-PLUS"]
    mechanisms += ["SCRAM-SHA-256", "SCRAM-SHA-1"]
    if tls:
        mechanisms.append("PLAIN")
    return mechanisms


def _fake(username: str, hash_name: str) -> ScramCredential:
    """Credentials for a user that doesn't exist: stable per name, so no reply reveals it."""
    salt = hmac.new(_SERVER_SECRET, f"{hash_name}:{username}".encode(), hashlib.sha256).digest()[:16]
    return ScramCredential(salt, 4096, secrets.token_bytes(32), secrets.token_bytes(32))


# RFC 5802 §5.1: a nonce is printable ASCII without ','.
_NONCE_CHARS = frozenset(string.printable[:94]) - {","}
# Iteration counts a client accepts: RFC 7677 §4 asks for at least 4096; the upper bound keeps a
# hostile server from making the client spin.
_MIN_ITERATIONS = 4096
_MAX_ITERATIONS = 10_000_000


def _attributes(message: str) -> list[tuple[str, str]]:
    """RFC 5802 §5.1: ``a=value`` pairs separated by commas, in order."""
    pairs = []
    for part in message.split(","):
        if len(part) < 2 or part[1] != "=":
            raise SaslFailure("malformed-request", "bad SCRAM attribute")
        pairs.append((part[0], part[2:]))
    return pairs


def _nonce(value: str) -> str:
    if not value or not set(value) <= _NONCE_CHARS:
        raise SaslFailure("malformed-request", "bad SCRAM nonce")
    return value


def _scram_b64(value: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise SaslFailure("malformed-request", "bad base64 in SCRAM message") from None


def _escape(name: str) -> str:
    return name.replace("=", "=3D").replace(",", "=2C")


def _unescape(name: str) -> str:
    if "=" in name.replace("=3D", "").replace("=2C", ""):
        raise SaslFailure("malformed-request", "bad escape in SCRAM username")
    return name.replace("=2C", ",").replace("=3D", "=")


class _Hash:
    """The functions RFC 5802 §2.2 defines, for one hash."""

    def __init__(self, name: str) -> None:
        self.algorithm = _HASHES[name]

    def h(self, data: bytes) -> bytes:
        return hashlib.new(self.algorithm, data).digest()

    def hmac(self, key: bytes, data: bytes) -> bytes:
        return hmac.new(key, data, self.algorithm).digest()

    def salted_password(self, password: str, salt: bytes, iterations: int) -> bytes:
        return hashlib.pbkdf2_hmac(self.algorithm, saslprep(password).encode(), salt, iterations)


def _account_jid(name: str, domain: str) -> JID | None:
    """The bare JID a localpart or bare JID names (None if it names none)."""
    try:
        jid = JID.parse(name if "@" in name else f"{name}@{domain}")
    except JIDError:
        return None
    return jid if jid.local is not None and jid.resource is None else None


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def _gs2(message: bytes) -> tuple[str, str | None, str | None, str, str]:
    """RFC 5802 §7: GS2 flag, binding type, authzid, the raw GS2 header and client-first-bare."""
    try:
        text = message.decode()
        flag, authzid, bare = text.split(",", 2)
    except (UnicodeDecodeError, ValueError):
        raise SaslFailure("malformed-request", "bad SCRAM client-first message") from None
    binding = None
    if flag.startswith("p="):
        binding = flag[2:]
    elif flag not in ("n", "y"):
        raise SaslFailure("malformed-request", "bad GS2 flag")
    if authzid and not authzid.startswith("a="):
        raise SaslFailure("malformed-request", "bad GS2 authzid")
    zid = _unescape(authzid[2:]) if authzid else None
    return flag[:1], binding, zid, f"{flag},{authzid},", bare


class SaslServer:
    """One authentication exchange, server side."""

    def __init__(self, mechanism: str, *, tls: bool, channel_binding: Callable[[str], bytes | None], domain: str,
                 nonce: str | None = None) -> None:
        bindings = [k for k in CHANNEL_BINDINGS if tls and channel_binding(k) is not None]
        if mechanism not in server_mechanisms(tls, bindings):
            if mechanism == "PLAIN":
                raise SaslFailure("encryption-required", "PLAIN needs TLS")
            raise SaslFailure("invalid-mechanism", f"{mechanism or 'no mechanism'} is not offered")
        self.mechanism = mechanism
        self.domain = domain
        self.username: str | None = None
        self.authzid: str | None = None
        self._binding = channel_binding
        self._offered_plus = bool(bindings)
        self._password: str | None = None
        self._hash = _Hash(mechanism.removeprefix("SCRAM-").removesuffix("-PLUS")) if mechanism != "PLAIN" else None
        self._server_nonce = nonce or secrets.token_urlsafe(18)
        # Filled in as the SCRAM exchange proceeds (RFC 5802 §3).
        self._gs2_header = ""
        self._binding_data = b""
        self._client_first_bare = ""
        self._nonce = ""
        self._server_first = ""
        self._credential: ScramCredential | None = None
        # The stored keys the exchange is checked against, once looked up (None: no such user).
        self.credentials: dict[str, ScramCredential] | None = None

    def _check_authzid(self, authzid: str | None, username: str) -> None:
        """RFC 6120 §6.3.8: an authzid must name the account itself, as its bare JID or its
        localpart; both are compared as JIDs (RFC 7622 §3.2, §3.3), so the case they were typed
        in does not matter."""
        named = _account_jid(authzid, self.domain) if authzid else None
        if authzid and (named is None or named != _account_jid(username, self.domain)):
            raise SaslFailure("invalid-authzid", "you may only act as yourself")
        self.authzid = authzid

    def start(self, initial: bytes | None) -> SaslStep:
        """The ``<auth/>`` element's initial response (None if there was none)."""
        if initial is None:
            return Challenge(b"")
        return self.respond(initial)

    def respond(self, data: bytes) -> SaslStep:
        """A ``<response/>`` from the client."""
        if self.mechanism == "PLAIN":
            return self._plain(data)
        if self._credential is None:
            return self._client_first(data)
        return self._client_final(data)

    def _client_first(self, data: bytes) -> SaslStep:
        """RFC 5802 §5.1 client-first-message, with the channel-binding checks of §6."""
        flag, binding, authzid, header, bare = _gs2(data)
        if self.mechanism.endswith("-PLUS"):
            cb_data = self._binding(binding or "") if flag == "p" else None
            if cb_data is None:
                raise SaslFailure("not-authorized", "channel binding type not supported")
            self._binding_data = cb_data
        elif flag == "y" and self._offered_plus:
            raise SaslFailure("not-authorized", "channel binding downgrade detected")
        elif flag == "p":
            raise SaslFailure("malformed-request", "channel binding requested without -PLUS")
        attributes = _attributes(bare)
        if len(attributes) < 2 or attributes[0][0] != "n" or attributes[1][0] != "r":
            raise SaslFailure("malformed-request", "client-first must start with n= and r=")
        if any(key == "m" for key, _ in attributes):
            raise SaslFailure("malformed-request", "mandatory SCRAM extensions are not supported")
        try:
            user = saslprep(_unescape(attributes[0][1]))
        except SaslFailure:
            raise
        except Exception:
            raise SaslFailure("malformed-request", "invalid username") from None
        if not user:
            raise SaslFailure("malformed-request", "empty username")
        self._check_authzid(authzid, user)
        self.username = user
        self._gs2_header = header
        self._client_first_bare = bare
        self._nonce = _nonce(attributes[1][1]) + self._server_nonce
        return NeedCredentials(user)

    def provide_credentials(self, creds: dict[str, ScramCredential] | None) -> SaslStep:
        """Continue with the stored credentials (None: no such user, fails like a wrong password)."""
        assert self.username is not None
        self.credentials = creds
        if self._hash is None:
            return self._check_plain(creds)
        hash_name = self.mechanism.removeprefix("SCRAM-").removesuffix("-PLUS")
        cred = (creds or {}).get(hash_name) or _fake(self.username, hash_name)
        self._credential = cred
        salt = base64.b64encode(cred.salt).decode()
        self._server_first = f"r={self._nonce},s={salt},i={cred.iterations}"
        return Challenge(self._server_first.encode())

    def _client_final(self, data: bytes) -> SaslStep:
        """RFC 5802 §3 and §5.1: check the channel binding, the nonce and the client proof."""
        assert self._hash is not None and self._credential is not None and self.username is not None
        try:
            text = data.decode()
        except UnicodeDecodeError:
            raise SaslFailure("malformed-request", "bad SCRAM client-final message") from None
        without_proof, sep, proof_b64 = text.rpartition(",p=")
        attributes = dict(_attributes(without_proof)) if sep else {}
        if not sep or "c" not in attributes or "r" not in attributes:
            raise SaslFailure("malformed-request", "client-final needs c=, r= and p=")
        expected_cb = base64.b64encode(self._gs2_header.encode() + self._binding_data).decode()
        if not hmac.compare_digest(attributes["c"].encode(), expected_cb.encode()):
            raise SaslFailure("not-authorized", "channel binding does not match")
        if not hmac.compare_digest(attributes["r"].encode(), self._nonce.encode()):
            raise SaslFailure("not-authorized", "nonce mismatch")
        proof = _scram_b64(proof_b64)
        auth_message = f"{self._client_first_bare},{self._server_first},{without_proof}".encode()
        signature = self._hash.hmac(self._credential.stored_key, auth_message)
        if len(proof) != len(signature):
            raise SaslFailure("not-authorized", "wrong username or password")
        client_key = _xor(proof, signature)
        if not hmac.compare_digest(self._hash.h(client_key), self._credential.stored_key):
            raise SaslFailure("not-authorized", "wrong username or password")
        verifier = base64.b64encode(self._hash.hmac(self._credential.server_key, auth_message)).decode()
        return Success(f"v={verifier}".encode(), self.username)

    def _plain(self, data: bytes) -> SaslStep:
        """RFC 4616 §2: authzid NUL authcid NUL passwd."""
        try:
            authzid, user, password = data.decode().split("\0")
            user = saslprep(user)
        except (UnicodeDecodeError, ValueError):
            raise SaslFailure("malformed-request", "bad PLAIN message") from None
        except Exception:
            raise SaslFailure("not-authorized", "wrong username or password") from None
        self._check_authzid(authzid, user)
        self.username = user
        self._password = password
        return NeedCredentials(user)

    def _check_plain(self, creds: dict[str, ScramCredential] | None) -> SaslStep:
        assert self.username is not None and self._password is not None
        cred = (creds or {}).get("SHA-256") or _fake(self.username, "SHA-256")
        if not password_matches(self._password, cred) or creds is None:
            raise SaslFailure("not-authorized", "wrong username or password")
        return Success(None, self.username)


class SaslClient:
    """The client side: picks the best offered mechanism and checks the server's proof.

    ``channel_binding`` is (type, data) of the TLS channel, if the client can bind to it;
    ``nonce`` fixes the client nonce, for reproducible exchanges such as the RFC test vectors.
    """

    def __init__(self, username: str, password: str, offered: Collection[str], *,
                 channel_binding: tuple[str, bytes] | None = None, allow_plain: bool = False,
                 nonce: str | None = None) -> None:
        order = ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-1-PLUS"] if channel_binding else []
        order += ["SCRAM-SHA-256", "SCRAM-SHA-1"] + (["PLAIN"] if allow_plain else [])
        choice = next((m for m in order if m in offered), None)
        if choice is None:
            raise SaslFailure("invalid-mechanism", f"no usable mechanism among {', '.join(offered)}")
        self.mechanism = choice
        self._username = username
        self._password = password
        self._hash = _Hash(choice.removeprefix("SCRAM-").removesuffix("-PLUS")) if choice != "PLAIN" else None
        # RFC 5802 §6: 'p' binds; 'y' says we could have bound, so a stripped -PLUS offer is detected.
        if choice.endswith("-PLUS") and channel_binding:
            self._gs2_header = f"p={channel_binding[0]},,"
            self._binding_data = channel_binding[1]
        else:
            self._gs2_header = "y,," if channel_binding else "n,,"
            self._binding_data = b""
        self._client_nonce = _nonce(nonce) if nonce else secrets.token_urlsafe(18)
        self._client_first_bare = f"n={_escape(saslprep(username))},r={self._client_nonce}"
        self._server_signature: bytes | None = None

    def initial(self) -> bytes:
        if self._hash is None:
            return f"\0{self._username}\0{self._password}".encode()
        return (self._gs2_header + self._client_first_bare).encode()

    def respond(self, challenge: bytes) -> bytes:
        """RFC 5802 §3: the client-final-message with the proof, for the server-first challenge."""
        assert self._hash is not None
        try:
            server_first = challenge.decode()
        except UnicodeDecodeError:
            raise SaslFailure("malformed-request", "bad SCRAM server-first message") from None
        attributes = dict(_attributes(server_first))
        if "e" in attributes:
            raise SaslFailure("not-authorized", f"the server refused: {attributes['e']}")
        if not {"r", "s", "i"} <= attributes.keys():
            raise SaslFailure("malformed-request", "server-first needs r=, s= and i=")
        nonce = _nonce(attributes["r"])
        if not nonce.startswith(self._client_nonce) or nonce == self._client_nonce:
            raise SaslFailure("malformed-request", "the server did not extend our nonce")
        try:
            iterations = int(attributes["i"])
        except ValueError:
            raise SaslFailure("malformed-request", "bad iteration count") from None
        if not _MIN_ITERATIONS <= iterations <= _MAX_ITERATIONS:
            raise SaslFailure("malformed-request", f"iteration count {iterations} is out of bounds")
        salted = self._hash.salted_password(self._password, _scram_b64(attributes["s"]), iterations)
        client_key = self._hash.hmac(salted, b"Client Key")
        binding = base64.b64encode(self._gs2_header.encode() + self._binding_data).decode()
        without_proof = f"c={binding},r={nonce}"
        auth_message = f"{self._client_first_bare},{server_first},{without_proof}".encode()
        proof = _xor(client_key, self._hash.hmac(self._hash.h(client_key), auth_message))
        self._server_signature = self._hash.hmac(self._hash.hmac(salted, b"Server Key"), auth_message)
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()

    def success(self, data: bytes) -> None:
        """Verify the server signature; a server that can't prove the key is rejected."""
        if self._hash is None:
            return
        try:
            attributes = dict(_attributes(data.decode()))
            verifier = base64.b64decode(attributes["v"], validate=True)
        except (UnicodeDecodeError, KeyError, ValueError, binascii.Error, SaslFailure):
            raise SaslFailure("not-authorized", "the server sent no valid proof") from None
        if self._server_signature is None or not hmac.compare_digest(verifier, self._server_signature):
            raise SaslFailure("not-authorized", "the server could not prove it knows the password")

"""SASL for XMPP, both sides, without I/O (RFC 6120 §6, RFC 5802, RFC 7677, RFC 4616, RFC 9266).

SCRAM runs on the ``scramp`` library. The server side pauses with :class:`NeedCredentials` once
it knows the username, because looking up the stored keys is the caller's (asynchronous) job.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Callable, Collection
from dataclasses import dataclass

import scramp
from scramp.utils import saslprep

_HASHES = {"SHA-1": "sha1", "SHA-256": "sha256"}
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


def _gs2(message: bytes) -> tuple[str, str | None, str | None, str]:
    """RFC 5802 §7: the GS2 header flag, binding type, authzid, and the username."""
    try:
        text = message.decode()
        flag, authzid, rest = text.split(",", 2)
    except (UnicodeDecodeError, ValueError):
        raise SaslFailure("malformed-request", "bad SCRAM client-first message") from None
    binding = None
    if flag.startswith("p="):
        binding = flag[2:]
    elif flag not in ("n", "y"):
        raise SaslFailure("malformed-request", "bad GS2 flag")
    zid = authzid[2:] if authzid.startswith("a=") else None
    user = next((p[2:] for p in rest.split(",") if p.startswith("n=")), None)
    if user is None:
        raise SaslFailure("malformed-request", "no username")
    return flag[:1], binding, zid, user.replace("=2C", ",").replace("=3D", "=")


class SaslServer:
    """One authentication exchange, server side."""

    def __init__(self, mechanism: str, *, tls: bool, channel_binding: Callable[[str], bytes | None], domain: str) -> None:
        bindings = [k for k in ("tls-exporter", "tls-server-end-point") if tls and channel_binding(k) is not None]
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
        self._first: bytes = b""
        self._password: str | None = None
        self._server: scramp.ScramServer | None = None

    def _check_authzid(self, authzid: str | None, username: str) -> None:
        if authzid and authzid not in (f"{username}@{self.domain}", username):
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
        if self._server is None:
            flag, binding, authzid, user = _gs2(data)
            if self.mechanism.endswith("-PLUS"):
                if flag != "p" or binding is None or self._binding(binding) is None:
                    raise SaslFailure("not-authorized", "channel binding type not supported")
            elif flag == "y" and self._offered_plus:
                raise SaslFailure("not-authorized", "channel binding downgrade detected")
            elif flag == "p":
                raise SaslFailure("malformed-request", "channel binding requested without -PLUS")
            try:
                user = saslprep(user)
            except Exception:
                raise SaslFailure("malformed-request", "invalid username") from None
            self._check_authzid(authzid, user)
            self.username = user
            self._first = data
            self._binding_name = binding
            return NeedCredentials(user)
        try:
            self._server.set_client_final(data.decode())
            final = self._server.get_server_final()
        except (scramp.ScramException, UnicodeDecodeError):
            raise SaslFailure("not-authorized", "wrong username or password") from None
        assert self.username is not None
        return Success(final.encode(), self.username)

    def provide_credentials(self, creds: dict[str, ScramCredential] | None) -> SaslStep:
        """Continue with the stored credentials (None: no such user, fails like a wrong password)."""
        assert self.username is not None
        if self.mechanism == "PLAIN":
            return self._check_plain(creds)
        hash_name = self.mechanism.removeprefix("SCRAM-").removesuffix("-PLUS")
        cred = (creds or {}).get(hash_name) or _fake(self.username, hash_name)
        binding = None
        if self.mechanism.endswith("-PLUS"):
            data = self._binding(self._binding_name or "")
            binding = (self._binding_name, data)
        mech = scramp.ScramMechanism(self.mechanism)
        self._server = mech.make_server(
            lambda _u: (cred.salt, cred.stored_key, cred.server_key, cred.iterations), channel_binding=binding
        )
        try:
            self._server.set_client_first(self._first.decode())
        except scramp.ScramException as err:
            raise SaslFailure("malformed-request", str(err)) from None
        return Challenge(self._server.get_server_first().encode())

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
        _, stored, _, _ = scramp.ScramMechanism("SCRAM-SHA-256").make_auth_info(
            self._password, iteration_count=cred.iterations, salt=cred.salt
        )
        if creds is None or not hmac.compare_digest(stored, cred.stored_key):
            raise SaslFailure("not-authorized", "wrong username or password")
        return Success(None, self.username)


class SaslClient:
    """The client side: picks the best offered mechanism and checks the server's proof."""

    def __init__(self, username: str, password: str, offered: Collection[str], *,
                 channel_binding: tuple[str, bytes] | None = None, allow_plain: bool = False) -> None:
        order = ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-1-PLUS"] if channel_binding else []
        order += ["SCRAM-SHA-256", "SCRAM-SHA-1"] + (["PLAIN"] if allow_plain else [])
        choice = next((m for m in order if m in offered), None)
        if choice is None:
            raise SaslFailure("invalid-mechanism", f"no usable mechanism among {', '.join(offered)}")
        self.mechanism = choice
        self._username = username
        self._password = password
        self._client: scramp.ScramClient | None = None
        if choice != "PLAIN":
            self._client = scramp.ScramClient(
                [choice], username, password, channel_binding=channel_binding if choice.endswith("-PLUS") else None
            )

    def initial(self) -> bytes:
        if self._client is None:
            return f"\0{self._username}\0{self._password}".encode()
        first: str = self._client.get_client_first()
        return first.encode()

    def respond(self, challenge: bytes) -> bytes:
        assert self._client is not None
        try:
            self._client.set_server_first(challenge.decode())
        except scramp.ScramException as err:
            raise SaslFailure("malformed-request", str(err)) from None
        final: str = self._client.get_client_final()
        return final.encode()

    def success(self, data: bytes) -> None:
        """Verify the server signature; a server that can't prove the key is rejected."""
        if self._client is None:
            return
        try:
            self._client.set_server_final(data.decode())
        except scramp.ScramException:
            raise SaslFailure("not-authorized", "the server could not prove it knows the password") from None

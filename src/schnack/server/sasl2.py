"""XEP-0388: Extensible SASL Profile (v1.0.4) on client streams, with XEP-0386 Bind 2 (v1.0.0) and
XEP-0509 Initial Authentication Pipelining (v0.1.0).

Offered next to RFC 6120 SASL on streams that are already encrypted. :class:`Sasl2` is the
part of a :class:`~.c2s.C2SStream` that runs the exchange: ``<authenticate/>`` with an initial
response, challenges and responses, then ``<success/>`` (with the SCRAM server-final message as
additional data) or ``<failure/>`` with the RFC 6120 §6.5 condition and a text (§2.6). No stream
restart follows: the success is followed at once by the stream features of the authenticated
stream (§2.6.1). Mechanisms are those of :mod:`schnack.xmpp.sasl`, and token mechanisms that a
module supplies through the events below (FAST, XEP-0484).

Inline negotiation, in the order XEP-0386 §2.2 sets: modules add what the success carries (a
FAST token); a XEP-0198 ``<resume/>`` is tried (a module answers it); when no session was
resumed, a ``<bind/>`` binds a resource, enables the session features asked for inside it and
answers with ``<bound/>``. The resource is ``{tag}/{suffix}`` (§2.2.1), where the suffix is an
HMAC of the user-agent id and the tag under a secret of the account, so the same device gets
the same resource each time without the id showing; without an id the suffix is random. The
session that held that resource before is replaced (RFC 6120 §7.7.2.2), which also ends the
earlier session of the same client, as §2.2 asks. The new session becomes reachable only once
the success is out, so no stanza for it can go ahead of the success; the features that follow
offer neither binding nor stream management again for a bound stream. Offline messages are
kept, although §2.2 asks to drop them at binding in favour of an archive sync: a client that
does not sync would lose them, and the offline store sends them only after initial presence.

XEP-0509: the features carry a ``<config-version/>``, a hash of everything else offered; an
``<authenticate/>`` naming another version gets ``<failure/>`` with aborted and
``<config-version-mismatch/>``, without counting as a failed login, and the client retries with
the features it has just received. Because nothing here waits for the features to have been
read, a client may send ``<authenticate/>`` right behind its stream header.

Events:

- ``sasl2/inline``(stream) → Element or None: an inline feature to offer (fire_all).
- ``bind2/inline``(stream) → str or None: a feature Bind 2 can enable (fire_all).
- ``sasl2/authenticate``(stream, request) → :class:`Authenticated` or None: a module's mechanism
  authenticates the request, or raises :class:`~schnack.xmpp.sasl.SaslFailure`.
- ``sasl2/success``(stream, request, results) after authentication: handlers append elements
  to ``results``, which the success carries (fire_all).
- ``sasl2/resume``(stream, request, results): resumption; a handler that resumed a session
  returns what to run once the success was sent (fire).
- ``bind2/enable``(session, stream, bind, results) after binding: handlers enable what
  ``bind`` asks of them and append their answers to ``results`` (fire_all).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from xml.etree.ElementTree import Element

from ..xmpp import ht, sasl
from ..xmpp.errors import StanzaError, StreamError
from ..xmpp.jid import JID, JIDError
from ..xmpp.payloads import bind2
from ..xmpp.payloads import sasl2 as payload
from ..xmpp.xml import element, serialize
from .deletion import DeletionUnderWay
from .storage.base import STORAGE_DOWN, StorageError

if TYPE_CHECKING:
    from .app import Server
    from .c2s import C2SStream
    from .sessions import Session

log = logging.getLogger(__name__)

INLINE = "sasl2/inline"
BIND2_INLINE = "bind2/inline"
AUTHENTICATE = "sasl2/authenticate"
SUCCESS = "sasl2/success"
RESUME = "sasl2/resume"
BIND2_ENABLE = "bind2/enable"
# A per-account secret that derives stable resources from user-agent ids.
_SECRET_STORE = "bind2"
_MAX_TAG = 64
# XEP-0388 §2.3 asks for a UUID; a little more room for clients that use another stable name.
_MAX_AGENT_ID = 128
# RFC 6120 §6.4.5: a few retries, then the stream ends.
_MAX_FAILURES = 5


@dataclass(frozen=True)
class Authenticated:
    """A module's mechanism accepted the request: the account and the additional data."""

    username: str
    additional_data: bytes | None = None
    # The fingerprint of the account's stored keys the token was found bound to (see LoginKeys).
    keys: str | None = None


@dataclass
class LoginKeys:
    """Per session: the :func:`fingerprint` of the account's stored keys its login was checked
    against (a password's, or those a token was bound to), to tell a session that logged in
    before they changed from one that logged in after, whenever it bound. Every session holds
    one: a fingerprint is a tenth of the keys' size."""

    keys: str | None = None


def fingerprint(credentials: dict[str, sasl.ScramCredential]) -> str:
    """A short digest of the stored credentials: it changes with the password."""
    digest = hashlib.sha256()
    for name in sorted(credentials):
        digest.update(name.encode() + credentials[name].salt + credentials[name].stored_key)
    return digest.hexdigest()[:32]


@dataclass
class ClientIdentity:
    """Per session: the XEP-0388 user agent the client authenticated with, if it named one."""

    user_agent: payload.UserAgent | None = None


def config_version(features: Element) -> payload.ConfigVersion:
    """XEP-0509 §2.3.1: an opaque version, here the hash of the rendered features without it."""
    digest = hashlib.sha256(serialize(features).encode()).digest()[:12]
    return payload.ConfigVersion(base64.urlsafe_b64encode(digest).decode().rstrip("="), "opaque")


def _tag(text: str | None) -> str | None:
    """The client's tag as a resource prefix: trimmed, without '/', and valid in a resource."""
    if not text:
        return None
    tag = text.replace("/", "-").strip()[:_MAX_TAG]
    try:
        JID.parse(f"x@example.org/{tag}")
    except JIDError:
        return None
    return tag or None


class Sasl2:
    """The SASL2 side of one client stream."""

    def __init__(self, stream: C2SStream) -> None:
        self.stream = stream
        self.user_agent: payload.UserAgent | None = None
        self._request: payload.Authenticate | None = None
        self._sasl: sasl.SaslServer | None = None
        self._account: str | None = None
        self._version: str | None = None
        self._failures = 0

    # Offering -------------------------------------------------------------------------------

    def _bindings(self) -> list[str]:
        conn = self.stream.conn
        return [kind for kind in sasl.CHANNEL_BINDINGS if conn.secure and conn.channel_binding(kind) is not None]

    async def offer(self, features: Element) -> None:
        """§2.1: add the feature (and XEP-0509's version) to the features of an unauthenticated stream."""
        if not self.stream.conn.secure:
            return
        hooks = self.stream.server.hooks
        vars_ = [var for var in await hooks.fire_all(BIND2_INLINE, self.stream) if var]
        inline = [bind2.BindFeature(tuple(vars_)).to_xml()]
        inline += [el for el in await hooks.fire_all(INLINE, self.stream) if el is not None]
        mechanisms = tuple(sasl.server_mechanisms(True, self._bindings()))
        features.append(payload.Authentication(mechanisms, tuple(inline)).to_xml())
        version = config_version(features)
        self._version = version.value
        features.append(version.to_xml())

    # The exchange ---------------------------------------------------------------------------

    async def element(self, el: Element) -> None:
        """An ``<authenticate/>``, ``<response/>`` or ``<abort/>`` from the client."""
        stream = self.stream
        throttle = stream.server.throttle
        ip = stream.conn.peer.rpartition(":")[0] or stream.conn.peer
        host = stream.host or stream.server.config.domains[0]
        try:
            if el.tag == payload.ABORT:
                self._reset()
                raise sasl.SaslFailure("aborted", "authentication aborted")
            if el.tag == payload.AUTHENTICATE:
                step = await self._authenticate(el, ip, host)
            else:
                if self._sasl is None:
                    raise sasl.SaslFailure("malformed-request", "no authentication in progress")
                try:
                    data = payload.Response.from_xml(el).data
                except payload.Sasl2Error as err:
                    raise sasl.SaslFailure("incorrect-encoding", str(err)) from None
                step = await self._credentials(self._sasl.respond(data), host)
            if isinstance(step, sasl.Challenge):
                stream.send(payload.Challenge(step.data).to_xml())
                return
            request, account = self._request, self._account
            assert isinstance(step, sasl.Success) and request is not None and account is not None
            if self._sasl is not None:
                await still_current(stream.server, host, account, self._sasl.credentials)
                # Only the password clears what guessing it counted (a token login leaves it).
                throttle.success(host, account)
                stream.login_keys = _fingerprint_of(self._sasl.credentials)
            self._reset()
            await self._succeed(request, account, step.data)
        except _Mismatch:
            self._reset()
            stream.send(payload.Failure(
                "aborted", "configuration version mismatch", (element(payload.CONFIG_VERSION_MISMATCH),)
            ).to_xml())
        except sasl.SaslFailure as failure:
            user = self._account
            self._reset()
            if failure.condition in ("not-authorized", "credentials-expired"):
                throttle.failure(host, user, ip)
            stream.send(payload.Failure(failure.condition, failure.text).to_xml())
            self._failures += 1
            if self._failures >= _MAX_FAILURES:
                raise StreamError("policy-violation", "too many failed authentication attempts") from None

    def _reset(self) -> None:
        self._sasl = None
        self._request = None
        self._account = None

    async def _authenticate(self, el: Element, ip: str, host: str) -> sasl.SaslStep:
        stream = self.stream
        if not stream.conn.secure:
            raise sasl.SaslFailure("encryption-required", "authenticate on an encrypted stream")
        if self._sasl is not None:
            raise sasl.SaslFailure("malformed-request", "an authentication is in progress")
        try:
            request = payload.Authenticate.from_xml(el)
        except payload.Sasl2Error as err:
            raise sasl.SaslFailure("malformed-request", str(err)) from None
        agent = request.user_agent.id if request.user_agent is not None else None
        if agent is not None and len(agent) > _MAX_AGENT_ID:
            raise sasl.SaslFailure("malformed-request", f"a user-agent id has at most {_MAX_AGENT_ID} characters")
        pinned = request.find(payload.CONFIG_VERSION)
        if pinned is not None and pinned.get("value") != self._version:
            raise _Mismatch
        if stream.server.throttle.blocked_ip(ip):
            raise sasl.SaslFailure("temporary-auth-failure", "too many failed logins; try later")
        self._request = request
        if request.mechanism in ht.MECHANISMS:
            try:
                found = await stream.server.hooks.fire(AUTHENTICATE, stream, request)
            except StorageError:
                raise sasl.SaslFailure("temporary-auth-failure", STORAGE_DOWN) from None
            if not isinstance(found, Authenticated):
                raise sasl.SaslFailure("invalid-mechanism", f"{request.mechanism} is not offered")
            self._account = found.username
            stream.login_keys = found.keys
            return sasl.Success(found.additional_data, found.username)
        self._sasl = sasl.SaslServer(request.mechanism, tls=True, channel_binding=stream.conn.channel_binding,
                                     domain=host)
        return await self._credentials(self._sasl.start(request.initial_response), host)

    async def _credentials(self, step: sasl.SaslStep, host: str) -> sasl.SaslStep:
        """Fetch the stored credentials when the mechanism asks for them."""
        stream = self.stream
        while isinstance(step, sasl.NeedCredentials):
            assert self._sasl is not None
            self._account = localpart(step.username, host)
            if self._account is not None and stream.server.throttle.blocked_account(host, self._account):
                raise sasl.SaslFailure("temporary-auth-failure", "too many failed logins; try later")
            step = self._sasl.provide_credentials(await stored_credentials(stream.server, host, self._account))
        return step

    # Success and the inline requests ----------------------------------------------------------

    async def _succeed(self, request: payload.Authenticate, username: str, data: bytes | None) -> None:
        """§2.6.1 with XEP-0386 §2.2: inline results, resumption or binding, success, features."""
        stream = self.stream
        hooks = stream.server.hooks
        stream.username = username
        self.user_agent = request.user_agent
        results: list[Element] = []
        await hooks.fire_all(SUCCESS, stream, request, results)
        bind_el = request.find(bind2.BIND)
        bind = None
        if bind_el is not None:
            try:
                bind = bind2.Bind.from_xml(bind_el)
            except bind2.Bind2Error:
                bind = bind2.Bind()
        # Worked out before a session is resumed: from then on nothing may wait until the success
        # is out, or a stanza for the session could go ahead of it.
        resource = await self._resource(bind, username) if bind is not None else None
        after: Callable[[], Awaitable[None]] | None = await hooks.fire(RESUME, stream, request, results)
        bound_session: Session | None = None
        if stream.session is None and bind is not None and resource is not None:
            try:
                bound_session = stream.new_session(resource)
            except StanzaError as err:
                # Authenticated but unbound: the client can still bind the RFC 6120 way.
                log.info("Bind 2 for %s@%s failed: %s", username, stream.host, err)
            else:
                # Not registered yet, so nothing is routed to it before the success.
                bound: list[Element] = []
                await hooks.fire_all(BIND2_ENABLE, bound_session, stream, bind, bound)
                results.append(bind2.Bound(tuple(bound)).to_xml())
        if stream.session is not None:
            stream.session.slot(ClientIdentity).user_agent = request.user_agent
        identifier = str(stream.session.jid) if stream.session is not None else f"{username}@{stream.host}"
        # The features of the stream as it now is (bound, stream management on): stream-features
        # handlers answer without waiting.
        features = await stream._features()
        stream.send(payload.Success(identifier, data, tuple(results)).to_xml())
        stream.send(features)
        log.info("%s authenticated from %s with %s (SASL2)", identifier, stream.conn.peer, request.mechanism)
        if bound_session is not None:
            await stream.register(bound_session)
        if after is not None:
            await after()

    async def _resource(self, bind: bind2.Bind, username: str) -> str:
        """XEP-0386 §2.2.1: ``{tag}/{suffix}``, the suffix stable for a user agent."""
        tag = _tag(bind.tag)
        agent = self.user_agent.id if self.user_agent is not None else None
        if agent:
            host = self.stream.host or ""
            kv = self.stream.server.storage.kv
            secret = await kv.get(host, username, _SECRET_STORE)
            if secret is None:
                secret = secrets.token_bytes(32)
                await kv.set(host, username, _SECRET_STORE, secret)
            digest = hmac.new(secret, f"{agent}\0{tag or ''}".encode(), hashlib.sha256).digest()
            suffix = base64.b32encode(digest[:10]).decode().lower()
        else:
            suffix = secrets.token_hex(6)
        return f"{tag}/{suffix}" if tag else suffix


class _Mismatch(Exception):
    """XEP-0509 §2.2: the client pipelined against another configuration."""


async def stored_credentials(server: Server, host: str, username: str | None) -> dict[str, sasl.ScramCredential] | None:
    """The account's SCRAM keys (None: no such account), once a deletion of the account left
    pending is finished (deletion.py), so that a login cannot keep an account its owner deleted;
    a storage failure, or the deletion under way on another node, is temporary-auth-failure
    (RFC 6120 §6.5.9)."""
    if username is None:
        return None
    try:
        await server.deletions.settle(host, username)
    except DeletionUnderWay:
        raise sasl.SaslFailure("temporary-auth-failure", "the account is being deleted") from None
    except StorageError:
        raise sasl.SaslFailure("temporary-auth-failure", STORAGE_DOWN) from None
    return await _current_credentials(server, host, username)


async def _current_credentials(server: Server, host: str, username: str) -> dict[str, sasl.ScramCredential] | None:
    try:
        account = await server.storage.accounts.get(host, username)
    except StorageError:
        raise sasl.SaslFailure("temporary-auth-failure", STORAGE_DOWN) from None
    return account.credentials if account is not None else None


def _fingerprint_of(credentials: dict[str, sasl.ScramCredential] | None) -> str | None:
    return fingerprint(credentials) if credentials is not None else None


async def still_current(server: Server, host: str, username: str, checked: dict[str, sasl.ScramCredential] | None) -> None:
    """Refuse a login whose password was checked against keys the account no longer has.

    SCRAM looks the keys up at the client-first message (RFC 5802 §3) and checks the proof one
    round trip later: a password changed, or an account deleted, in between must not let the
    old password finish the login (nor earn a XEP-0484 token bound to the new keys).
    """
    if await _current_credentials(server, host, username) != checked:
        raise sasl.SaslFailure("not-authorized", "the password or the account changed during the login; log in again")


def localpart(username: str, host: str) -> str | None:
    """The account a SASL name means: the JID localpart it becomes (RFC 7622 §3.3, case-mapped).

    None for a name that cannot be a localpart; the login then fails like a wrong password.
    """
    if not username or "@" in username or "/" in username:
        return None
    try:
        return JID.parse(f"{username}@{host}").local
    except JIDError:
        return None

"""XEP-0484: Fast Authentication Streamlining Tokens (v0.2.0), with the HT-SHA-256-* mechanisms of
draft-schmaus-kitten-sasl-ht: a device that logged in once with its password comes back in one
round trip with a token.

Offered as a SASL2 inline feature (§3.1) on encrypted streams, listing HT-SHA-256-NONE and the
channel-binding variants the connection has (-EXPR tls-exporter, -ENDP tls-server-end-point,
-UNIQ tls-unique). A client that authenticated (with its password or a token) and sent
``<request-token/>`` gets a token in the success (§3.3); tokens are bound to the client's
XEP-0388 user-agent id and to the mechanism it asked for (§3.4), so a token presented with
another mechanism (for instance without the channel binding it was issued for) fails.

Storage: one record per device in the account's map ``fast`` keyed by user-agent id, with two
slots as §5.1 suggests: 'new' (issued, not used yet) and 'current' (used). A token that is used
moves from 'new' to 'current', which ends the older one; issuing a token replaces an unused one.
Only the SHA-256 of a token is stored: tokens are 96 characters, longer than SHA-256's block,
so HMAC itself keys with their hash (see :mod:`schnack.xmpp.ht`). Each record also keeps a
fingerprint of the account's credentials when the token was issued: after a password change
(in-band or ``schnack user passwd``) every token fails with credentials-expired, and is deleted
when used or listed. A login whose keys changed before its token is made (the password changed
during it) gets none. Records go with the account (``user-deleted``); an account keeps at most
``max_devices`` of them, the one unused longest making room for a new device.

Rotation (§3.5): a token used after half its ``lifetime`` passed is answered with a new one in
the success, unasked; the old one stays valid until the new one is used. ``<fast
invalidate='true'/>`` ends the token used (§3.6) and with it every token of that user agent,
a rotated one not used yet included: a client logging out leaves its device no way back in.
No new token is sent unless asked for.
Replays (§3.4): a 'count' must be higher than every count seen for that token before.
The failed-login throttle that guards passwords (RFC 6120 §13.8) does not hold tokens back: no
one guesses a token, a wrong one counts against no account, and a device with a valid token
stays online while someone else's guesses pause password logins to the account; a token login
does not clear that count either.

Failures: an unknown, revoked or wrong token (or a wrong channel binding, which changes the
proof) is not-authorized; an expired token, or one from before a password change,
credentials-expired; a login without ``<fast/>``, a user-agent id or a well-formed message is
malformed-request. :meth:`Fast.devices` and :meth:`Fast.revoke` serve ``schnack admin tokens``;
revoking a device also closes its sessions.
"""

from __future__ import annotations

import hmac
import json
import logging
import secrets
import time
import weakref
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from xml.etree.ElementTree import Element

from ...xmpp import ht
from ...xmpp.errors import StreamError
from ...xmpp.jid import JID, JIDError
from ...xmpp.payloads.fast import FAST as FAST_TAG
from ...xmpp.payloads.fast import REQUEST_TOKEN, Fast, FastError, FastFeature, RequestToken, Token
from ...xmpp.payloads.sasl2 import Authenticate
from ...xmpp.sasl import SaslFailure
from .. import sasl2
from ..config import bounded
from ..locks import AccountLocks
from ..module import Module
from ..sasl2 import fingerprint

if TYPE_CHECKING:
    from ..c2s import C2SStream

log = logging.getLogger(__name__)

STORE = "fast"
_TOKEN_BYTES = 72
# Software and device names are kept for `schnack admin tokens list`, cut to this length.
_MAX_NAME = 100


@dataclass(frozen=True)
class FastOptions:
    """How long a token lives."""

    lifetime: int = bounded(21 * 86400, min=60, max=365 * 86400, help="seconds a FAST token is valid")
    max_devices: int = bounded(50, min=1, max=10_000, help="devices with tokens per account; the longest unused goes")


@dataclass
class _Slot:
    """One token: the hex SHA-256 that keys its HMAC, when it expires, was issued, and the last count."""

    key: str
    expiry: float
    issued: float
    count: int | None = None


@dataclass
class _Device:
    """The tokens of one user agent."""

    mechanism: str
    credentials: str
    software: str | None = None
    device: str | None = None
    current: _Slot | None = None
    new: _Slot | None = None
    used: float | None = None

    def dump(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def load(cls, raw: bytes) -> _Device:
        data = json.loads(raw)
        for name in ("current", "new"):
            if data.get(name) is not None:
                data[name] = _Slot(**data[name])
        return cls(**data)

    @property
    def empty(self) -> bool:
        return self.current is None and self.new is None


def _moment(stamp: float | None) -> str | None:
    return datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if stamp is not None else None


class FastTokens(Module[FastOptions]):
    """XEP-0484 tokens: issuing, checking, rotating, revoking."""

    name = "fast"
    Options = FastOptions

    def setup(self) -> None:
        self._locks = AccountLocks(self.server.cluster.bus, "fast")
        # Logins that authenticated with a token due for rotation (the request, not the stream:
        # streams are compiled classes, which take no weak references).
        self._rotate: weakref.WeakSet[Authenticate] = weakref.WeakSet()
        self.hook(sasl2.INLINE, self.feature)
        self.hook(sasl2.AUTHENTICATE, self.authenticate)
        self.hook(sasl2.SUCCESS, self.issue)
        self.hook("user-deleted", self.forget)
        self.hook("admin/tokens", self.admin)

    def _mechanisms(self, stream: C2SStream) -> list[str]:
        conn = stream.conn
        bindings = [kind for kind in ht.BINDINGS.values() if kind and conn.channel_binding(kind) is not None]
        return ht.offered(bindings)

    async def feature(self, stream: C2SStream) -> Element:
        """§3.1: the mechanisms this connection can use."""
        return FastFeature(tuple(self._mechanisms(stream))).to_xml()

    # Authenticating with a token ------------------------------------------------------------

    async def authenticate(self, stream: C2SStream, request: Authenticate) -> sasl2.Authenticated | None:
        """§3.4: check the token; the success's additional data proves the server knows it."""
        if request.mechanism not in ht.MECHANISMS:
            return None
        algorithm, kind = ht.parse_mechanism(request.mechanism)
        cb_data = b"" if kind is None else stream.conn.channel_binding(kind)
        if cb_data is None:
            raise SaslFailure("invalid-mechanism", f"{request.mechanism} needs {kind}, which this connection lacks")
        marker = request.find(FAST_TAG)
        if marker is None:
            raise SaslFailure("malformed-request", "a token login needs <fast xmlns='urn:xmpp:fast:0'/>")
        try:
            fast = Fast.from_xml(marker)
        except FastError as err:
            raise SaslFailure("malformed-request", str(err)) from None
        agent = request.user_agent.id if request.user_agent is not None else None
        if not agent:
            raise SaslFailure("malformed-request", "a token login needs <user-agent id='...'/>")
        if request.initial_response is None:
            raise SaslFailure("malformed-request", "a token login needs an initial response")
        name, proof = ht.split_message(request.initial_response)
        host = stream.host or ""
        username = sasl2.localpart(name, host)
        if username is None:
            raise SaslFailure("not-authorized", "unknown or revoked token")
        maps = self.server.storage.maps
        async with self._locks.hold(JID(username, host)):
            raw = await maps.get(host, username, STORE, agent)
            device = _Device.load(raw) if raw is not None else None
            if device is None:
                raise SaslFailure("not-authorized", "unknown or revoked token")
            # Only who proves the token learns more about it than that it failed.
            slot, which = self._match(device, proof, cb_data, algorithm)
            if device.mechanism != request.mechanism:
                raise SaslFailure("not-authorized", f"the token was issued for {device.mechanism}")
            account = await self.server.storage.accounts.get(host, username)
            if account is None or fingerprint(account.credentials) != device.credentials:
                await maps.set(host, username, STORE, agent, None)
                raise SaslFailure("credentials-expired", "the password changed since the token was issued")
            now = time.time()
            if slot.expiry <= now:
                setattr(device, which, None)
                await self._save(host, username, agent, device)
                raise SaslFailure("credentials-expired", "the token expired")
            if fast.count is not None:
                if slot.count is not None and fast.count <= slot.count:
                    raise SaslFailure("not-authorized", f"count {fast.count} was used already")
                slot.count = fast.count
            if which == "new":
                # §3.5: the new token is in use, so the one before it ends.
                device.current, device.new = slot, None
            if fast.invalidate:
                # §3.6 asks only for the token used; a rotated one the client may never have
                # received would still log in after the user logged out.
                device.current = device.new = None
            elif now - slot.issued >= self.options.lifetime / 2:
                self._rotate.add(request)
            device.used = now
            await self._save(host, username, agent, device)
        return sasl2.Authenticated(username, ht.responder(bytes.fromhex(slot.key), cb_data, algorithm),
                                   fingerprint(account.credentials))

    @staticmethod
    def _match(device: _Device, proof: bytes, cb_data: bytes, algorithm: str) -> tuple[_Slot, str]:
        for which in ("new", "current"):
            slot: _Slot | None = getattr(device, which)
            if slot is not None and hmac.compare_digest(ht.initiator(bytes.fromhex(slot.key), cb_data, algorithm), proof):
                return slot, which
        raise SaslFailure("not-authorized", "unknown or revoked token")

    async def _make_room(self, host: str, username: str) -> None:
        """Keep the devices below ``max_devices`` by dropping the ones unused longest."""
        maps = self.server.storage.maps
        devices = {agent: _Device.load(raw) for agent, raw in (await maps.items(host, username, STORE)).items()}
        excess = len(devices) - self.options.max_devices + 1
        if excess <= 0:
            return

        def last_seen(agent: str) -> float:
            device = devices[agent]
            issued = max(slot.issued for slot in (device.current, device.new) if slot is not None)
            return max(device.used or 0.0, issued)

        for agent in sorted(devices, key=last_seen)[:excess]:
            await maps.set(host, username, STORE, agent, None)

    async def _save(self, host: str, username: str, agent: str, device: _Device) -> None:
        await self.server.storage.maps.set(host, username, STORE, agent, None if device.empty else device.dump())

    # Issuing ----------------------------------------------------------------------------------

    async def issue(self, stream: C2SStream, request: Authenticate, results: list[Element]) -> None:
        """§3.3, §3.5: a token for a client that asked for one, or whose token is due for rotation."""
        rotate = request in self._rotate
        self._rotate.discard(request)
        asked = request.find(REQUEST_TOKEN)
        if asked is None and not rotate:
            return
        try:
            mechanism = RequestToken.from_xml(asked).mechanism if asked is not None else request.mechanism
        except FastError:
            return
        agent = request.user_agent.id if request.user_agent is not None else None
        if not agent or mechanism not in self._mechanisms(stream):
            log.info("not issuing a token for %s: no user-agent id or %s is not offered", stream.username, mechanism)
            return
        host, username = stream.host or "", stream.username or ""
        token = secrets.token_urlsafe(_TOKEN_BYTES)
        now = time.time()
        expiry = now + self.options.lifetime
        key = ht.key_of(token, ht.parse_mechanism(mechanism)[0])
        async with self._locks.hold(JID(username, host)):
            account = await self.server.storage.accounts.get(host, username)
            if account is None or fingerprint(account.credentials) != stream.login_keys:
                # The password changed since this login was checked, and the revocation that came
                # with the change may have run already: a token bound to the new keys would outlive it.
                log.info("not issuing a token for %s: the password changed during the login", username)
                return
            raw = await self.server.storage.maps.get(host, username, STORE, agent)
            device = _Device.load(raw) if raw is not None else None
            credentials = fingerprint(account.credentials)
            if device is None:
                await self._make_room(host, username)
            if device is None or device.mechanism != mechanism or device.credentials != credentials:
                device = _Device(mechanism, credentials)
            agent_info = request.user_agent
            assert agent_info is not None
            device.software = (agent_info.software or "")[:_MAX_NAME] or None
            device.device = (agent_info.device or "")[:_MAX_NAME] or None
            device.new = _Slot(key.hex(), expiry, now)
            await self._save(host, username, agent, device)
        results.append(Token(token, datetime.fromtimestamp(expiry, UTC)).to_xml())

    # Administration ---------------------------------------------------------------------------

    async def devices(self, host: str, username: str) -> list[dict[str, Any]]:
        """The devices holding tokens: id, software, device, mechanism, expiry, last use. Tokens
        from before a password change are deleted here rather than listed."""
        maps = self.server.storage.maps
        account = await self.server.storage.accounts.get(host, username)
        credentials = fingerprint(account.credentials) if account is not None else None
        found = []
        for agent, raw in sorted((await maps.items(host, username, STORE)).items()):
            device = _Device.load(raw)
            if device.credentials != credentials:
                await maps.set(host, username, STORE, agent, None)
                continue
            expiry = max(slot.expiry for slot in (device.current, device.new) if slot is not None)
            found.append({
                "id": agent, "software": device.software, "device": device.device, "mechanism": device.mechanism,
                "expiry": _moment(expiry), "used": _moment(device.used),
            })
        return found

    async def revoke(self, host: str, username: str, agent: str | None) -> int:
        """Revoke the tokens of one device (or of all with None) and close its sessions; how many."""
        maps = self.server.storage.maps
        async with self._locks.hold(JID(username, host)):
            agents = set((await maps.items(host, username, STORE)).keys())
            if agent is not None:
                agents &= {agent}
            for name in agents:
                await maps.set(host, username, STORE, name, None)
        for session in self.server.sessions.resources(JID(username, host)):
            identity = session.slot(sasl2.ClientIdentity).user_agent
            if identity is not None and identity.id in agents:
                session.close(StreamError("not-authorized", "the device's access was revoked"))
        log.info("revoked the FAST tokens of %d devices of %s@%s", len(agents), username, host)
        return len(agents)

    async def admin(self, request: dict[str, Any]) -> dict[str, Any]:
        """``schnack admin tokens``: 'list' or 'revoke' (one 'device', or all) the tokens of 'jid'."""
        try:
            account = JID.parse(str(request.get("jid", "")))
        except JIDError as err:
            return {"ok": False, "error": f"invalid JID: {err}"}
        if account.local is None or account.resource is not None or account.domain not in self.server.hosts:
            return {"ok": False, "error": f"{account} is not an account of this server"}
        if await self.server.storage.accounts.get(account.domain, account.local) is None:
            return {"ok": False, "error": f"no such account: {account}"}
        action = request.get("action")
        if action == "list":
            return {"ok": True, "devices": await self.devices(account.domain, account.local)}
        if action == "revoke":
            device = request.get("device")
            if device is not None and not isinstance(device, str):
                return {"ok": False, "error": "the device must be a user-agent id"}
            revoked = await self.revoke(account.domain, account.local, device)
            if device is not None and not revoked:
                return {"ok": False, "error": f"{account} has no token for device {device}"}
            return {"ok": True, "revoked": revoked}
        return {"ok": False, "error": f"unknown tokens action {action!r}"}

    async def forget(self, host: str, username: str) -> None:
        await self.server.storage.maps.delete_all(host, username, STORE)

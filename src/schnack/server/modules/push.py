"""XEP-0357: Push Notifications (v0.4), the user's server: registrations and the notifications it publishes.

Registrations (§5, §6): a client enables push for its device with ``<enable/>`` to its own
account (app server JID, node, optional publish-options form) and disables one node or every
node of an app server with ``<disable/>``. Registrations are kept per account in the map store
``push`` (key: app server JID and node), so they survive restarts; enabling the same JID and
node again replaces the registration. An account keeps at most ``max_registrations``; enabling
one more forgets the oldest. The account announces ``urn:xmpp:push:0`` (§4).

When (§7): a message that matters (one with a body, an end-to-end encrypted payload or a
XEP-0353 call proposal, also inside a received carbon; not chat states, receipts or markers
alone) is

- kept in offline storage for the account (event ``offline/kept``): every registration of the
  account is notified; not for a message the store refused (the mailbox is full: the sender is
  told, and nothing waits), nor for one another cluster node kept already (it notified);
- queued for a stream management session that hibernates, or left unacknowledged by it when
  its connection was lost (event ``sm/hibernating-stanza``): the registrations that session
  enabled, or that the same resource enabled before, are notified, and those that no session
  of the account holds now (on any node): a device back under another resource without
  enabling push again is still woken, unless a session of the account, on any node, is online
  and holds no registration (that may be the device, awake). Each node sees the others'
  sessions in the cluster directory, with the registrations they hold and whether they
  hibernate, so every node decides alike.

Once per message (§7): in a cluster, several nodes may choose one registration for one message
(two sessions of the account hibernate on two nodes, and the registration is held by neither).
Before it publishes, a node marks the registration and the message (its XEP-0359 stanza-id by
the account, else its sender and id) cluster-wide for ``_ONCE`` seconds (``ClusterBus.once``);
only the node that marks it first publishes, and the others count it as sent for coalescing.
While Redis is away every node publishes: a device woken twice rather than not at all.

What (§7): a XEP-0060 publish to the registration's node at its app server, sent from the
account's bare JID, whose item holds the ``urn:xmpp:push:summary`` form with only
``message-count`` and ``last-message-sender`` (the sender's bare JID): never any content; the
publish-options form the client gave is repeated as given, since it carries the app server's
secret. Coalescing: a registration gets at most one notification per ``coalesce_interval``
seconds; the count goes on growing meanwhile, and starts again when the device comes back
(its resource binds, or its hibernating session resumes; for a registration no session holds,
any resource that binds may be the device).

Remote disabling (§8): a message from the app server to the account's bare JID carrying a
XEP-0060 subscription notification with ``subscription='none'`` for a registered node removes
that registration (and is not delivered).

Errors (§8): an error reply from the app server disables the registration it answers (not one
that replaced it since: the device enabled push again, with a new secret say), except for the
conditions that say only that it cannot be reached now (type wait, remote-server-not-found,
remote-server-timeout, and service-unavailable, which this server itself answers for an app
server component that is not connected). After such an error the device was not woken: up to
``max_retries`` times in a row, the next message notifies at once and the notification is sent
again after ``retry_interval`` seconds (twice that after a second failure, and so on).
A reply that does not come within ``reply_timeout`` leaves the registration as it is. In a
cluster the reply comes in on the node the app server's component is linked to: the publish's
id carries a tag of the node that sent it (a hash of its name), and the reply goes on there.

Nothing here holds up delivery: handlers start the notification in a task and return at once.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from xml.etree.ElementTree import Element

from ...xmpp import ns
from ...xmpp.errors import StanzaError
from ...xmpp.jid import JID, JIDError
from ...xmpp.parser import parse_frame
from ...xmpp.payloads.forward import FORWARDED
from ...xmpp.payloads.pubsub import EVENT
from ...xmpp.payloads.push import DISABLE, ENABLE, NS, Disable, Enable, Notification, PushError, publish
from ...xmpp.payloads.sid import STANZA_ID
from ...xmpp.stanza import Stanza
from ...xmpp.xml import element, qname, serialize
from ..background import Background
from ..cluster.bus import announced
from ..config import bounded
from ..hooks import HANDLED, Handled
from ..locks import AccountLocks
from ..module import Module
from .e2e import ENCRYPTED
from .offline import KEPT
from .sm import HIBERNATING_STANZA, RESUMED, hibernating

if TYPE_CHECKING:
    from ..sessions import Session

log = logging.getLogger(__name__)

STORE = "push"
_MESSAGE = qname(ns.CLIENT, "message")
_BODY = qname(ns.CLIENT, "body")
_IQ = qname(ns.CLIENT, "iq")
_ERROR = qname(ns.CLIENT, "error")
# XEP-0353 §3.1: a call proposal rings the phone.
_PROPOSE = qname("urn:xmpp:jingle-message:0", "propose")
_RECEIVED_MESSAGE = f"{{urn:xmpp:carbons:2}}received/{FORWARDED}/{_MESSAGE}"
_SUBSCRIPTION = f"{{{EVENT}}}event/{{{EVENT}}}subscription"
# Error conditions that say the app server cannot be reached now, not that it refuses.
_TRANSIENT = frozenset({"remote-server-not-found", "remote-server-timeout", "service-unavailable"})
# A stored enable element is at most this large (the client's stanza was bounded already).
_MAX_STORED = 1024 * 1024
# Accounts whose registrations are kept in memory.
_CACHED_ACCOUNTS = 10_000
# Seconds one message wakes one device at most once, cluster-wide: far longer than the message
# takes to reach the account's sessions on every node, and their connections to be found dead.
_ONCE = 600.0
# A publish's id: the prefix, the tag of the node that sent it (_tag), a dash and a random token.
_ID_PREFIX = "push-"
_TAG_LENGTH = 12


@dataclass(frozen=True)
class PushOptions:
    """Coalescing, reply timeout, retries and how many devices an account may register."""

    coalesce_interval: float = bounded(
        60.0, min=0, max=3600, help="seconds between two notifications to one device that has not come back"
    )
    reply_timeout: float = bounded(30.0, min=1, max=600, help="seconds to wait for the app server's answer")
    max_registrations: int = bounded(20, min=1, max=1000, help="push registrations per account")
    retry_interval: float = bounded(
        30.0, min=0.1, max=3600, help="seconds before a notification the app server could not take is sent again"
    )
    max_retries: int = bounded(3, min=0, max=20, help="notifications sent again after transient errors in a row")


@dataclass(frozen=True)
class Registration:
    """One enabled device: the §5 request and the resource that sent it."""

    enable: Enable
    resource: str
    at: float

    @property
    def key(self) -> str:
        return registration_key(self.enable.jid, self.enable.node)

    def dump(self) -> bytes:
        return json.dumps(
            {"enable": serialize(self.enable.to_xml()), "resource": self.resource, "at": self.at}
        ).encode()

    @classmethod
    def load(cls, blob: bytes) -> Registration:
        data = json.loads(blob)
        enable = Enable.from_xml(parse_frame(data["enable"].encode(), _MAX_STORED))
        return cls(enable, str(data["resource"]), float(data["at"]))


def registration_key(jid: str, node: str) -> str:
    """The map key of a registration; a newline appears in neither a JID nor a sensible node."""
    return f"{jid}\n{node}"


@dataclass
class PushSession:
    """Per session: the registrations this session enabled."""

    keys: set[str] = field(default_factory=set)


@dataclass
class _Pending:
    """Per registration: messages since the device was last here, and when it was last notified."""

    count: int = 0
    sent_at: float | None = None
    sender: str | None = None
    failures: int = 0


@dataclass(frozen=True)
class _Waiting:
    """A publish waiting for the app server's answer: the account, and the registration it went to."""

    account: JID
    registration: Registration

    @property
    def key(self) -> str:
        return self.registration.key

    @property
    def app_server(self) -> str:
        return self.registration.enable.jid


def matters(el: Element) -> tuple[bool, Element]:
    """Whether a message is worth waking a phone for, and the message that is (the one inside a
    received carbon, XEP-0280 §7)."""
    if el.tag != _MESSAGE or el.get("type") == "error":
        return False, el
    for child in el:
        if child.tag == _BODY or child.tag in ENCRYPTED or child.tag == _PROPOSE:
            return True, el
    inner = el.find(_RECEIVED_MESSAGE)
    if inner is not None:
        return matters(inner)
    return False, el


def event_of(account: JID, el: Element, message: Element) -> str | None:
    """What names a message for ``account`` on every node: the stanza-id the account's archive
    gave it (XEP-0359), on the message or on the carbon ``el`` around it; else its sender and
    id. None for a message nothing names."""
    by = str(account)
    for candidate in (message, el):
        for child in candidate.iterfind(STANZA_ID):
            if child.get("by") == by and child.get("id"):
                return f"sid {child.get('id')}"
    if message.get("id") and message.get("from"):
        return f"id {message.get('from')} {message.get('id')}"
    return None


def _sender(el: Element) -> str | None:
    value = el.get("from")
    if value is None:
        return None
    try:
        return str(JID.parse(value).bare)
    except JIDError:
        return None


def _tag(node: str) -> str:
    """What a publish's id carries of its node: enough for the cluster to find the node again,
    while the app server learns no name of the cluster's machines."""
    return hashlib.sha256(node.encode()).hexdigest()[:_TAG_LENGTH]


class Push(Module[PushOptions]):
    """XEP-0357 registrations and notifications."""

    name = "push"
    account_features = (NS,)
    Options = PushOptions

    def setup(self) -> None:
        self._locks = AccountLocks(self.server.cluster.bus, "push")
        self._pending: dict[tuple[JID, str], _Pending] = {}
        self._waiting: dict[str, _Waiting] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        # A failed notification must never take anything else down with it.
        self._tasks = Background(log, "push notification failed")
        self._stopped = False
        # Registrations by account, most recently used last: an offline message needs no storage
        # read to learn that its recipient has none. Writes count up, so a read that overlapped
        # a write is not cached.
        self._cache: OrderedDict[JID, dict[str, Registration]] = OrderedDict()
        self._writes = 0
        # In a cluster, a node that changes an account's registrations tells the others.
        bus = self.server.cluster.bus
        bus.on_changed(self._changed_elsewhere)
        # Announcements may have been missed while the subscription was broken.
        bus.on_resubscribed(self._forget_all)
        self.iq("self", ENABLE, set=self.enable)
        self.iq("self", DISABLE, set=self.disable)
        # Replies of app servers come to the account's bare JID; only ours carry a waiting id.
        self.route("iq/bare", self.reply, priority=100)
        self.route("message/bare", self.remote_disable, priority=100)
        self.hook(KEPT, self.offline)
        self.hook(HIBERNATING_STANZA, self.hibernating)
        self.hook("session-bound", self.back)
        self.hook(RESUMED, self.back)
        self.hook("user-deleted", self.forget)

    async def stop(self) -> None:
        """Notifications in flight finish; none start any more (app servers are disconnected by now)."""
        self._stopped = True
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self._waiting.clear()
        await self.notifications_sent()

    async def notifications_sent(self) -> None:
        """Wait until every notification started so far was published (or given up)."""
        await self._tasks.wait()

    # Registrations --------------------------------------------------------------------------

    async def enable(self, stanza: Stanza, origin: Session | None) -> Element:
        """§5: store (or replace) the registration of this device."""
        assert origin is not None
        payload = stanza.payload
        assert payload is not None
        try:
            request = Enable.from_xml(payload)
        except PushError as err:
            raise StanzaError("bad-request", str(err)) from None
        registration = Registration(request, origin.jid.resource or "", time.time())
        key = registration.key
        account = origin.jid.bare
        async with self._locks.hold(account):
            stored = await self.registrations(account)
            if key not in stored and len(stored) >= self.options.max_registrations:
                oldest = min(stored.values(), key=lambda r: r.at)
                await self._write(account, oldest.key, None)
                self._pending.pop((account, oldest.key), None)
                log.info("%s: forgot the oldest push registration for %s", account, oldest.enable.jid)
            await self._write(account, key, registration.dump())
        origin.slot(PushSession).keys.add(key)
        self._pending.pop((account, key), None)
        # Other nodes see which session holds it (_of_session).
        await self.server.hooks.fire_all("session-changed", origin)
        return stanza.result()

    async def disable(self, stanza: Stanza, origin: Session | None) -> Element:
        """§6: forget one node of an app server, or all of its nodes."""
        assert origin is not None
        payload = stanza.payload
        assert payload is not None
        try:
            request = Disable.from_xml(payload)
        except PushError as err:
            raise StanzaError("bad-request", str(err)) from None
        account = origin.jid.bare
        async with self._locks.hold(account):
            stored = await self.registrations(account)
            gone = [
                key for key, r in stored.items()
                if r.enable.jid == request.jid and (request.node is None or r.enable.node == request.node)
            ]  # fmt: skip
            for key in gone:
                await self._drop(account, key)
        return stanza.result()

    async def registrations(self, account: JID) -> dict[str, Registration]:
        """The account's registrations, from the cache or from storage."""
        cache = self._cache
        cached = cache.get(account)
        if cached is not None:
            cache.move_to_end(account)
            return cached
        assert account.local is not None
        writes = self._writes
        blobs = await self.server.storage.maps.items(account.domain, account.local, STORE)
        out: dict[str, Registration] = {}
        for key, blob in blobs.items():
            try:
                out[key] = Registration.load(blob)
            except (ValueError, KeyError, TypeError, PushError) as err:
                log.warning("ignoring an unreadable push registration of %s: %s", account, err)
        # What was read while a registration changed may be out of date already: not kept then.
        if writes == self._writes:
            cache[account] = out
            if len(cache) > _CACHED_ACCOUNTS:
                cache.popitem(last=False)
        return out

    async def _write(self, account: JID, key: str, value: bytes | None) -> None:
        assert account.local is not None
        self._writes += 1
        self._cache.pop(account, None)
        try:
            await announced(self.server.cluster.bus, STORE, str(account),
                            self.server.storage.maps.set(account.domain, account.local, STORE, key, value))
        finally:
            self._cache.pop(account, None)

    def _forget_all(self) -> None:
        self._writes += 1
        self._cache.clear()

    def _changed_elsewhere(self, store: str, account: str) -> None:
        """Another node of the cluster changed ``account``'s registrations: what this node keeps goes."""
        if store == STORE:
            self._writes += 1
            self._cache.pop(JID.parse(account), None)

    async def _drop(self, account: JID, key: str) -> None:
        await self._write(account, key, None)
        self._pending.pop((account, key), None)
        for session in self.server.sessions.resources(account):
            keys = session.slot(PushSession).keys
            if key in keys:
                keys.discard(key)
                await self.server.hooks.fire_all("session-changed", session)

    # When to notify -------------------------------------------------------------------------

    async def offline(self, stanza: Stanza) -> None:
        """A message kept for an account without a resource that takes it: notify every device."""
        important, message = matters(stanza.el)
        if not important or stanza.to is None:
            return
        account = stanza.to.bare
        self._spawn(self._notify(account, _sender(message), None, event_of(account, stanza.el, message)))

    async def hibernating(self, session: Session, el: Element) -> None:
        """A message queued for a hibernating session (XEP-0198 §5): notify that device."""
        important, message = matters(el)
        if not important:
            return
        self._spawn(self._notify_device(session, _sender(message), event_of(session.jid.bare, el, message)))

    async def _notify_device(self, session: Session, sender: str | None, event: str | None) -> None:
        await self._notify(session.jid.bare, sender, await self._of_session(session), event)

    async def back(self, session: Session) -> None:
        """The device is here again: its count starts anew and the next message notifies at once."""
        account = session.jid.bare
        waiting = [key for (owner, key) in self._pending if owner == account]
        if not waiting:
            return
        of_session = await self._of_session(session)
        registrations = await self.registrations(account)
        for key in waiting:
            registration = registrations.get(key)
            if key in session.slot(PushSession).keys or (registration is not None and of_session(registration)):
                del self._pending[(account, key)]

    async def _of_session(self, session: Session) -> Callable[[Registration], bool]:
        """Which registrations may be the device of ``session``: those it enabled, or its resource
        did before, and those no session of the account holds now, on any node (neither enabled by
        one nor by its resource). A device that came back under another resource (one the server
        chose, say) without enabling push again has only such a registration, and §7 publishes to
        every service registered for the user: left out, it would sleep through what waits for
        it until that session ends and its queue goes to offline storage. But while a session of
        the account, on any node, is online and holds no registration, that one may be such a
        device, back and awake: waking its registration would be for nothing. Every node
        decides alike: the directory shows the sessions of the others, with the registrations
        they hold and whether they hibernate."""
        account = session.jid.bare
        mine = frozenset(session.slot(PushSession).keys)
        resource = session.jid.resource or ""
        here = self.server.sessions.resources(account)
        elsewhere = await self.server.cluster.remote(account)
        held = frozenset([key for other in here for key in other.slot(PushSession).keys]
                         + [key for info in elsewhere for key in info.push])
        resources = frozenset(
            [other.jid.resource or "" for other in here] + [JID.parse(info.jid).resource or "" for info in elsewhere]
        )
        awake = any(other is not session and not other.slot(PushSession).keys and not hibernating(other)
                    for other in here) or any(not info.push and not info.hibernating for info in elsewhere)
        return lambda r: (r.key in mine or r.resource == resource
                          or (not awake and r.key not in held and r.resource not in resources))

    async def forget(self, host: str, username: str) -> None:
        """The account is gone (its registrations went with its data): every node drops its copy,
        or a new account of that name would wake the old owner's devices through the others."""
        account = JID.parse(f"{username}@{host}")
        self._writes += 1
        self._cache.pop(account, None)
        for pair in [p for p in self._pending if p[0] == account]:
            del self._pending[pair]
        await self.server.cluster.bus.announce(STORE, str(account))

    # Notifications --------------------------------------------------------------------------

    async def _notify(
        self, account: JID, sender: str | None, which: Callable[[Registration], bool] | None, event: str | None
    ) -> None:
        """§7: publish a summary to each chosen registration not notified within the interval,
        nor for ``event`` (the message) by another node."""
        registrations = await self.registrations(account)
        now = time.monotonic()
        for key, registration in registrations.items():
            if which is not None and not which(registration):
                continue
            pending = self._pending.setdefault((account, key), _Pending())
            pending.count += 1
            pending.sender = sender
            if pending.sent_at is not None and now - pending.sent_at < self.options.coalesce_interval:
                continue
            pending.sent_at = now
            if event is not None and not await self._first(account, key, event):
                # Another node woke the device for this message just now: coalescing holds here too.
                continue
            await self._publish(account, registration, Notification(pending.count, sender))

    async def _first(self, account: JID, key: str, event: str) -> bool:
        """Whether this node is the first of the cluster to wake registration ``key`` for ``event``."""
        digest = hashlib.sha256(f"{account}\n{key}\n{event}".encode()).hexdigest()
        return await self.server.cluster.bus.once(f"push:{digest}", _ONCE)

    async def _publish(self, account: JID, registration: Registration, notification: Notification) -> None:
        enable = registration.enable
        id = f"{_ID_PREFIX}{_tag(self.server.cluster.name)}-{secrets.token_urlsafe(12)}"
        iq = element(
            _IQ,
            {"type": "set", "id": id, "from": str(account), "to": enable.jid},
            children=[publish(enable.node, notification, enable.options).to_xml()],
        )
        self._waiting[id] = _Waiting(account, registration)
        self._timers[id] = asyncio.get_running_loop().call_later(self.options.reply_timeout, self._expire, id)
        await self.server.router.send(iq)

    def _expire(self, id: str) -> None:
        self._timers.pop(id, None)
        waiting = self._waiting.pop(id, None)
        if waiting is not None:
            log.info("no answer from push app server %s for %s", waiting.app_server, waiting.account)

    async def reply(self, stanza: Stanza, _origin: Session | None) -> Handled | None:
        """§8: the app server's answer to a publish; an error that is not transient disables it."""
        if stanza.type not in ("result", "error") or stanza.id is None:
            return None
        waiting = self._waiting.get(stanza.id)
        if waiting is None:
            return await self._reply_elsewhere(stanza)
        if stanza.to is None or stanza.to.bare != waiting.account:
            return None
        if stanza.from_ is None or str(stanza.from_) != waiting.app_server:
            return None
        del self._waiting[stanza.id]
        timer = self._timers.pop(stanza.id, None)
        if timer is not None:
            timer.cancel()
        pending = self._pending.get((waiting.account, waiting.key))
        if stanza.type == "result":
            if pending is not None:
                pending.failures = 0
        else:
            error_el = stanza.el.find(_ERROR)
            err = StanzaError.from_xml(error_el) if error_el is not None else StanzaError("undefined-condition")
            if err.type == "wait" or err.condition in _TRANSIENT:
                log.info("push app server %s unreachable for %s: %s", waiting.app_server, waiting.account, err)
                if pending is not None:
                    self._retry_later(waiting, pending)
            else:
                async with self._locks.hold(waiting.account):
                    # The device may have enabled push again meanwhile (a new secret for the same
                    # node): the error is about the registration it answers, not the new one.
                    if (await self.registrations(waiting.account)).get(waiting.key) == waiting.registration:
                        log.info("disabling push to %s for %s: %s", waiting.app_server, waiting.account, err)
                        await self._drop(waiting.account, waiting.key)
        return HANDLED

    async def _reply_elsewhere(self, stanza: Stanza) -> Handled | None:
        """§8 in a cluster: an answer to another node's publish (the app server's link is on this
        node) goes on to the node its id names, which waits for it."""
        id, to = stanza.id, stanza.to
        if id is None or to is None or not id.startswith(_ID_PREFIX):
            return None
        tag = id[len(_ID_PREFIX):len(_ID_PREFIX) + _TAG_LENGTH]
        if tag == _tag(self.server.cluster.name):
            return None
        try:
            nodes = await self.server.cluster.bus.nodes()
        except Exception as err:
            # Redis is away: the publishing node's reply_timeout leaves the registration as it is.
            log.warning("cannot pass a push app server's answer to the node that published: %s", err)
            return HANDLED
        for node in nodes:
            if _tag(node) == tag and await self.server.cluster.forward(node, stanza, to):
                return HANDLED
        return None

    def _retry_later(self, waiting: _Waiting, pending: _Pending) -> None:
        """The device was not woken: neither coalescing nor silence may leave it asleep for good."""
        pending.failures += 1
        # Past the retries, coalescing holds again: an app server that stays away gets no flood.
        if pending.failures > self.options.max_retries or self._stopped:
            return
        pending.sent_at = None
        name = f"retry\n{waiting.account}\n{waiting.key}"
        old = self._timers.pop(name, None)
        if old is not None:
            old.cancel()

        def due() -> None:
            self._timers.pop(name, None)
            self._spawn(self._retry(waiting.account, waiting.key, pending))

        delay = self.options.retry_interval * pending.failures
        self._timers[name] = asyncio.get_running_loop().call_later(delay, due)

    async def _retry(self, account: JID, key: str, pending: _Pending) -> None:
        """§8: the notification again, unless the device came back or was notified since."""
        if self._pending.get((account, key)) is not pending or pending.sent_at is not None:
            return
        registration = (await self.registrations(account)).get(key)
        if registration is None:
            return
        pending.sent_at = time.monotonic()
        await self._publish(account, registration, Notification(pending.count, pending.sender))

    async def remote_disable(self, stanza: Stanza, _origin: Session | None) -> Handled | None:
        """§8: an app server ends a registration with a XEP-0060 subscription notification of
        state none for its node, sent to the account's bare JID; nobody else can end it so."""
        subscription = stanza.el.find(_SUBSCRIPTION)
        if subscription is None or subscription.get("subscription") != "none":
            return None
        if stanza.from_ is None or stanza.to is None or stanza.to.local is None:
            return None
        account, app_server, node = stanza.to.bare, str(stanza.from_), subscription.get("node")
        async with self._locks.hold(account):
            registrations = await self.registrations(account)
            gone = [
                key for key, r in registrations.items() if r.enable.jid == app_server and r.enable.node == node
            ]  # fmt: skip
            for key in gone:
                await self._drop(account, key)
        if not gone:
            return None
        log.info("push app server %s disabled a registration of %s", app_server, account)
        return HANDLED

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        if self._stopped:
            work.close()
            return
        self._tasks.spawn(work)

"""RFC 6121 §2: the roster each account keeps on the server, with XEP-0237 roster versioning.

A resource that asks for its roster becomes *interested* (§2.1.6, ``session.interested``) and
from then on gets a roster push for every change, whoever made it: its own roster sets
(§2.3-§2.5) and the subscription changes of the presence module (RFC 6121 §3).

Roster versions (XEP-0237): the storage counts the changes of each account's roster; the
version string puts the account's creation time before that count, so that a roster a client
cached for a deleted account never matches the roster of a new account at the same address.
A roster get whose 'ver' matches gets an empty result (XEP-0237 §4.1), any other the whole
roster.

Removing a contact (§2.5.2) also ends the subscriptions both ways: the contact gets
``unsubscribe`` when the user was subscribed to it or asked to be, ``unsubscribed`` when it was
subscribed to the user or asked to be, and unavailable presence from each available resource
of the user that it could see. Contacts at other servers get them only while ``[s2s] enabled``
(:func:`reachable`, the rule presence and blocking follow too).

Subscription requests waiting for the user's answer (RFC 6121 §3.1.3, "pending in") are kept
here for the presence module, in the map store ``roster-pending`` under the requester's bare
JID, as the request stanza itself. Changes to one account's roster state are serialized by
:attr:`Roster.locks`; whoever holds the lock reads, writes and pushes, and routes stanzas to
other accounts only after letting go of it.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING
from xml.etree.ElementTree import Element

from ...xmpp import ns
from ...xmpp.errors import StanzaError, StreamError
from ...xmpp.jid import JID
from ...xmpp.parser import parse_frame
from ...xmpp.payloads import roster as payload
from ...xmpp.stanza import Stanza
from ...xmpp.xml import element, qname, serialize
from ..config import bounded
from ..hooks import HANDLED, Handled
from ..locks import AccountLocks
from ..module import Module
from ..storage.base import Account, RosterItem

if TYPE_CHECKING:
    from ..app import Server
    from ..c2s import C2SStream
    from ..sessions import Session

log = logging.getLogger(__name__)

PENDING = "roster-pending"
# Fired after a roster push (owner, item, version), for interested resources elsewhere.
PUSHED = "roster/pushed"
# A stored request is at most the largest stanza the configuration allows.
_MAX_STORED = 16 * 1024 * 1024 + 4096
_IQ = qname(ns.CLIENT, "iq")
_PRESENCE = qname(ns.CLIENT, "presence")
_VER_FEATURE = qname(ns.ROSTER_VER, "ver")


def has_to(subscription: str) -> bool:
    """Whether the user receives the contact's presence (RFC 6121 §2.1.2.5)."""
    return subscription in ("to", "both")


def has_from(subscription: str) -> bool:
    """Whether the contact receives the user's presence (RFC 6121 §2.1.2.5)."""
    return subscription in ("from", "both")


def reachable(server: Server, contact: JID) -> bool:
    """Whether presence and subscription stanzas go to ``contact``: an address on a domain served
    here, or at another server while ``[s2s] enabled``; never a service of this server (a group
    chat room is no contact)."""
    domain = contact.domain
    if domain in server.hosts:
        return True
    return server.config.s2s.enabled and domain not in server.services


async def send_absence(server: Server, owner: JID, recipients: Collection[JID]) -> None:
    """Unavailable presence from each available resource of ``owner``, on this node or another
    one, to each of ``recipients`` (RFC 6121 §2.5.2, §3.2.2, §3.3.3; XEP-0191 §3.3)."""
    if not recipients:
        return
    local = [str(s.jid) for s in server.sessions.resources(owner) if s.available and not s.closed]
    for full in local + await server.cluster.presence.available(owner):
        for to in recipients:
            await server.router.send(element(_PRESENCE, {"type": "unavailable", "from": full, "to": str(to)}))


def subscription(to: bool, from_: bool) -> str:
    """The 'subscription' value for the two directions."""
    if to:
        return "both" if from_ else "to"
    return "from" if from_ else "none"


@dataclass(frozen=True)
class RosterOptions:
    """How large a roster may grow (RFC 6121 §2.3.3 leaves the limits to the server)."""

    max_items: int = bounded(
        5_000, min=1, max=1_000_000, help="contacts per account, and subscription requests waiting for an answer"
    )
    max_groups: int = bounded(100, min=1, max=10_000, help="groups per contact")
    max_text: int = bounded(1_023, min=64, max=65_535, help="characters in a contact's name or a group name")


@dataclass
class RosterView:
    """Per session: the version prefix of the account, learnt when the roster was asked for."""

    prefix: str = ""


def _prefix(account: Account | None) -> str:
    return f"{int(account.created * 1000):x}-" if account is not None else ""


def as_payload(item: RosterItem) -> payload.RosterItem:
    """A stored item as the protocol shows it."""
    return payload.RosterItem(
        JID.parse(item.jid), item.name, item.subscription, item.ask, item.approved, item.groups
    )


class Roster(Module[RosterOptions]):
    """Roster get, set and remove, roster pushes, and the subscription state store (RFC 6121 §2)."""

    name = "roster"
    Options = RosterOptions

    def setup(self) -> None:
        self.locks = AccountLocks(self.server.cluster.bus, "roster")
        self.iq("self", payload.QUERY, get=self.get, set=self.set)
        self.iq("bare", payload.QUERY, get=self.forbidden, set=self.forbidden)
        self.hook("stream-features", self.stream_feature)
        self.hook("user-deleting", self.account_deleting)

    async def stream_feature(self, stream: C2SStream) -> Element | None:
        """XEP-0237 §3: roster versioning is offered once the client authenticated."""
        return element(_VER_FEATURE) if stream.authenticated else None

    # The protocol ------------------------------------------------------------------------------

    async def get(self, stanza: Stanza, origin: Session | None) -> Handled:
        """§2.2 and XEP-0237 §4: the whole roster, or an empty result when the client's copy is current.

        The roster is read under the account's lock and the session marked interested first,
        so that each later change reaches it as a push after this result.
        """
        assert origin is not None and stanza.payload is not None
        owner = origin.jid.bare
        account = await self.server.storage.accounts.get(origin.host, origin.username)
        view = origin.slot(RosterView)
        view.prefix = _prefix(account)
        async with self.locks.hold(owner):
            was_interested, origin.interested = origin.interested, True
            version, items = await self.server.storage.roster.get(origin.host, origin.username)
            ver = f"{view.prefix}{version}"
            if stanza.payload.get("ver") == ver:
                origin.send(stanza.result())
            else:
                query = payload.RosterQuery(tuple(as_payload(items[jid]) for jid in sorted(items)), ver)
                origin.send(stanza.result(query.to_xml()))
        if not was_interested:
            # In a cluster, the directory tells the other nodes to push to this resource too.
            await self.server.hooks.fire_all("session-changed", origin)
        return HANDLED

    async def set(self, stanza: Stanza, origin: Session | None) -> Element:
        """§2.3-§2.5: add, update or remove one item; checked as §2.3.3 says."""
        assert origin is not None and stanza.payload is not None
        try:
            query = payload.RosterQuery.from_xml(stanza.payload)
        except payload.RosterError as err:
            raise StanzaError(err.condition, err.text) from None
        if len(query.items) != 1:
            raise StanzaError("bad-request", "a roster set carries exactly one item")
        (item,) = query.items
        owner = origin.jid.bare
        contact = item.jid
        if contact.resource is not None:
            raise StanzaError("bad-request", "a roster item is a bare JID")
        if contact == owner:
            raise StanzaError("not-allowed", "your own address cannot be a contact")
        if item.subscription == "remove":
            if not await self.remove(owner, contact):
                raise StanzaError("item-not-found", f"{contact} is not in your roster")
            return stanza.result()
        self._check_text(item)
        async with self.locks.hold(owner):
            old = await self.item(owner, contact)
            if old is None:
                await self.check_room(owner)
                old = RosterItem(str(contact))
            # §2.1.2: 'subscription', 'ask' and 'approved' are the server's to set, never the client's.
            await self.save(owner, RosterItem(
                old.jid, item.name or None, old.subscription, old.ask, old.approved, item.groups
            ))  # fmt: skip
        return stanza.result()

    def _check_text(self, item: payload.RosterItem) -> None:
        """§2.3.3: duplicate groups are a bad request; empty or overlong names are not acceptable."""
        limit = self.options.max_text
        if len(set(item.groups)) != len(item.groups):
            raise StanzaError("bad-request", "a group is listed twice")
        if len(item.groups) > self.options.max_groups:
            raise StanzaError(
                "not-acceptable", f"a contact can be in at most {self.options.max_groups} groups"
            )
        if any(not group for group in item.groups):
            raise StanzaError("not-acceptable", "a group name cannot be empty; leave the group out instead")
        if any(len(group) > limit for group in item.groups):
            raise StanzaError("not-acceptable", f"a group name can be at most {limit} characters")
        if item.name is not None and len(item.name) > limit:
            raise StanzaError("not-acceptable", f"a contact's name can be at most {limit} characters")

    async def forbidden(self, stanza: Stanza, _origin: Session | None) -> Element:
        """§2.1.5, §2.3.3: a roster belongs to its account; nobody else reads or changes it."""
        raise StanzaError("forbidden", "that is not your roster")

    async def remove(self, owner: JID, contact: JID) -> bool:
        """§2.5.2: delete the item, push the removal, and end the subscriptions both ways.

        A request waiting for an answer counts as part of the item: it is declined. False when
        there was neither an item nor a request.
        """
        assert owner.local is not None
        host, user, key = owner.domain, owner.local, str(contact)
        storage = self.server.storage
        async with self.locks.hold(owner):
            old = await storage.roster.get_item(host, user, key)
            pending = await storage.maps.get(host, user, PENDING, key)
            if old is None and pending is None:
                return False
            if old is not None:
                version = await storage.roster.remove_item(host, user, key)
                await self._push(owner, payload.RosterItem(contact, subscription="remove"), version)
            if pending is not None:
                await storage.maps.set(host, user, PENDING, key, None)
        if not reachable(self.server, contact):
            return True
        send = self.server.router.send
        if old is not None and (has_to(old.subscription) or old.ask):
            await send(element(_PRESENCE, {"type": "unsubscribe", "from": str(owner), "to": key}))
        if pending is not None or (old is not None and has_from(old.subscription)):
            await send(element(_PRESENCE, {"type": "unsubscribed", "from": str(owner), "to": key}))
        if old is not None and has_from(old.subscription):
            await self.absence_to(owner, contact)
        return True

    async def absence_to(self, owner: JID, to: JID) -> None:
        """Unavailable presence from each available resource of ``owner`` for ``to``
        (:func:`send_absence`)."""
        await send_absence(self.server, owner, (to,))

    async def account_deleting(self, host: str, username: str) -> None:
        """XEP-0077 §3.2: before an account goes, every contact hears that the subscriptions ended.

        Each item is removed as in §2.5.2, so contacts' rosters are updated, not left pointing
        at an address that a new account could take.
        """
        owner = JID.parse(f"{username}@{host}")
        pending = await self.server.storage.maps.items(host, username, PENDING)
        for contact in sorted({*await self.items(owner), *pending}):
            await self.remove(owner, JID.parse(contact))

    # State for the presence module; callers hold the owner's lock ------------------------------

    async def items(self, owner: JID) -> dict[str, RosterItem]:
        """The account's roster by contact bare JID."""
        assert owner.local is not None
        return (await self.server.storage.roster.get(owner.domain, owner.local))[1]

    async def item(self, owner: JID, contact: JID) -> RosterItem | None:
        """The item for ``contact`` (a bare JID), if any."""
        assert owner.local is not None
        return await self.server.storage.roster.get_item(owner.domain, owner.local, str(contact))

    async def check_room(self, owner: JID) -> None:
        """Refuse a new item when the roster is full."""
        if len(await self.items(owner)) >= self.options.max_items:
            raise StanzaError("not-allowed", f"your roster is full ({self.options.max_items} contacts)")

    async def save(self, owner: JID, item: RosterItem) -> None:
        """Store ``item`` and push it to the account's interested resources (§2.1.6)."""
        assert owner.local is not None
        version = await self.server.storage.roster.set_item(owner.domain, owner.local, item)
        await self._push(owner, as_payload(item), version)

    async def version_prefix(self, owner: JID) -> str:
        """What comes before the change count in the roster version of ``owner`` (XEP-0237)."""
        assert owner.local is not None
        return _prefix(await self.server.storage.accounts.get(owner.domain, owner.local))

    async def _push(self, owner: JID, item: payload.RosterItem, version: int) -> None:
        """§2.1.6: one push per interested resource, addressed to it, without 'from'; then
        ``roster/pushed`` (owner, item, version) for the interested resources on other cluster nodes."""
        for session in self.server.sessions.resources(owner):
            if not session.interested or session.closed:
                continue
            ver = f"{session.slot(RosterView).prefix}{version}"
            query = payload.RosterQuery((item,), ver).to_xml()
            push_id = f"push-{secrets.token_urlsafe(9)}"
            session.send(
                element(_IQ, {"type": "set", "id": push_id, "to": str(session.jid)}, children=(query,))
            )
        if self.server.hooks.has(PUSHED):
            await self.server.hooks.fire_all(PUSHED, owner, item, version)

    async def has_pending(self, owner: JID, contact: JID) -> bool:
        """Whether a subscription request of ``contact`` waits for the user's answer."""
        assert owner.local is not None
        return (
            await self.server.storage.maps.get(owner.domain, owner.local, PENDING, str(contact)) is not None
        )

    async def set_pending(self, owner: JID, contact: JID, request: Element | None) -> None:
        """Keep the request of ``contact`` (the latest replaces an earlier one), or forget it (None).

        A new request beyond as many as a roster holds is refused with resource-constraint, so
        that senders making up addresses cannot fill the store; the sender may ask again later.
        """
        assert owner.local is not None
        if request is not None and not await self.has_pending(owner, contact):
            waiting = await self.server.storage.maps.items(owner.domain, owner.local, PENDING)
            if len(waiting) >= self.options.max_items:
                raise StanzaError(
                    "resource-constraint", f"{owner} has too many subscription requests waiting for an answer"
                )
        value = serialize(request).encode() if request is not None else None
        await self.server.storage.maps.set(owner.domain, owner.local, PENDING, str(contact), value)

    async def pending_requests(self, owner: JID) -> list[Element]:
        """Every request that waits for the user's answer, as it arrived."""
        assert owner.local is not None
        requests = []
        stored = await self.server.storage.maps.items(owner.domain, owner.local, PENDING)
        for contact, data in sorted(stored.items()):
            try:
                requests.append(parse_frame(data, _MAX_STORED))
            except StreamError as err:
                log.warning(
                    "ignoring an unreadable subscription request of %s to %s: %s", contact, owner, err
                )
        return requests

"""XEP-0163 §4.3: who gets a node's notifications, and the last items a resource gets (XEP-0060 §6.1.7).

Notifications are headline messages from the owner's bare JID (§4.3.1), one per resource
(§4.3.2): the owner's available resources and those of the contacts subscribed to the owner's
presence whom the node's access model admits (§4), each only if it wants the node (+notify,
:mod:`.interests`); and, whatever their +notify, the available resources of the node's
explicit subscribers (XEP-0060 §6.1, :mod:`.subscriptions`): all resources of a bare JID that
subscribed, the one resource of a full JID. A subscriber the access model no longer admits
(the owner ended the presence subscription, took the contact out of the allowed roster groups
or changed the model) gets nothing, and its subscription ends then (XEP-0060 §4.5).
Notifications are routed like any message the server sends for the owner, so that blocking
(XEP-0191) keeps them from whom either side blocks (§4.3.3); headlines are neither archived
nor copied to other resources.

In a cluster, the resources on other nodes count too: ``pep/elsewhere`` (account) answers with
the account's available resources there and their last presence (the cluster directory), whose
caps decide +notify as for local ones; their notifications are routed to their full JIDs.

With federation on, contacts and subscribers at other servers are notified too: a contact at
its bare JID, whose server hands a headline to each available resource (RFC 6121 §8.5.2.1.1),
since this server knows neither its resources nor their caps; a subscriber at the JID it
subscribed. A contact's resource there gets the last items when its first available presence
reaches the account (XEP-0163 §4.3.4), as a local one does on initial presence, and so does a
resource there that an explicit subscription reaches, for the nodes subscribed to.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING
from xml.etree.ElementTree import Element

from ....xmpp import ns
from ....xmpp.jid import JID
from ....xmpp.payloads.pubsub import Event, EventItems, Item
from ....xmpp.xml import element, qname
from ...storage.base import RosterItem
from ..roster import has_from, has_to, reachable
from .access import Rosters, denial
from .interests import Interests, caps_of
from .store import Node, NodeStore
from .subscriptions import Subscriber, SubscriptionStore

if TYPE_CHECKING:
    from ...app import Server
    from ...sessions import Session

ON_PRESENCE = frozenset({"on_sub_and_presence"})
ON_SUBSCRIPTION = frozenset({"on_sub", "on_sub_and_presence"})
_MESSAGE = qname(ns.CLIENT, "message")
# Asked for an account's available resources on other cluster nodes: [(full JID, last presence)].
ELSEWHERE = "pep/elsewhere"
# How long a contact's resource at another server counts as having had the last items: its
# server may have crashed without a word, and a device back under the same resource then needs
# them again. A status change after this long gets them again, a few small stanzas.
SEEN_FOR = 3600.0


class Delivery:
    """Sends the events of the accounts' nodes to the resources that may and want to see them."""

    def __init__(self, server: Server, rosters: Rosters, store: NodeStore, interests: Interests,
                 subscriptions: SubscriptionStore) -> None:
        self._server = server
        self._rosters = rosters
        self._store = store
        self._interests = interests
        self._subscriptions = subscriptions
        # Per local account, the available resources of its contacts at other servers that had
        # its last items, and when (time.monotonic()): their later presence is a change of status,
        # which gets none, for ``seen_for`` seconds. A server that crashed sends no unavailable
        # presence for its users: past that, presence counts as initial again, so a device back
        # under the same resource is not left without a new device list, and what no presence
        # ends does not stay for ever.
        self._seen_abroad: dict[JID, dict[JID, float]] = {}
        self.seen_for = SEEN_FOR

    def available(self, account: JID) -> list[Session]:
        """The resources of ``account`` that sent available presence."""
        return [s for s in self._server.sessions.resources(account) if s.available and not s.closed]

    def _local(self, jid: JID) -> bool:
        return jid.local is not None and jid.domain in self._server.hosts

    def _abroad(self, jid: JID) -> bool:
        """Whether ``jid`` is at another server that notifications reach (federation is on)."""
        return jid.domain not in self._server.hosts and reachable(self._server, jid)

    def subscribed(self, subscriber: JID) -> list[Session]:
        """The available resources a subscription of ``subscriber`` (bare: all; full: that one) reaches."""
        sessions = self.available(subscriber.bare)
        return sessions if subscriber.is_bare else [s for s in sessions if s.jid == subscriber]

    async def reached(self, subscriber: JID) -> list[Session | JID]:
        """Where a subscription of ``subscriber`` is notified: its available resources here and on
        other cluster nodes (bare: all; full: that one), or, at another server, the address itself
        (XEP-0060 §7.1.2.1: notifications go to the subscribed JID)."""
        if subscriber.domain not in self._server.hosts:
            return [subscriber] if self._abroad(subscriber) else []
        found: list[Session | JID] = [*self.subscribed(subscriber)]
        found.extend(jid for jid, _ in await self.elsewhere(subscriber.bare) if subscriber.is_bare or jid == subscriber)
        return found

    async def elsewhere(self, account: JID) -> list[tuple[JID, Element | None]]:
        """The available resources of ``account`` on other cluster nodes, with their last presence."""
        found = await self._server.hooks.fire(ELSEWHERE, account)
        return list(found) if found else []

    async def recipients(self, owner: JID, node: Node) -> list[Session | JID]:
        """XEP-0163 §4, §4.3.2: the owner's and the admitted contacts' available resources that want
        ``node``, and those of its admitted explicit subscribers (XEP-0060 §7.1.2.1), here and on
        other cluster nodes."""
        sessions = self.available(owner)
        remote = await self.elsewhere(owner)
        roster: dict[str, RosterItem] = {}
        abroad: list[JID] = []
        if node.config.access_model != "whitelist":
            roster = await self._rosters.items(owner)
            for jid, item in roster.items():
                if has_from(item.subscription) and denial(node.config, item) is None:
                    contact = JID.parse(jid)
                    if self._local(contact):
                        sessions.extend(self.available(contact))
                        remote.extend(await self.elsewhere(contact))
                    elif self._abroad(contact):
                        abroad.append(contact)
        found: list[Session | JID] = [s for s in sessions if self._interests.wants(s, node.name)]
        found.extend(jid for jid, presence in remote if self._interests.wants_by(presence, node.name))
        # Neither the resources nor the caps of a contact at another server are known here: its
        # bare JID, which that server gives to each available resource (RFC 6121 §8.5.2.1.1).
        found.extend(abroad)
        subscribers = await self._subscriptions.of(owner, node.name)
        if subscribers:
            seen = {_address(r) for r in found}
            lost = set()
            for subscriber in subscribers:
                if not admits(owner, node, subscriber, roster.get(str(subscriber.jid.bare))):
                    lost.add(subscriber.jid)
                    continue
                for recipient in await self.reached(subscriber.jid):
                    if _address(recipient) not in seen:
                        seen.add(_address(recipient))
                        found.append(recipient)
            if lost:
                await self._subscriptions.remove(owner, node.name, lost)
        return found

    async def send(self, owner: JID, recipients: Iterable[Session | JID], event: Event) -> None:
        """One headline message per resource, from the owner's bare JID (XEP-0163 §4.3.1)."""
        payload = event.to_xml()
        for recipient in recipients:
            attrs = {"type": "headline", "from": str(owner), "to": _address(recipient), "id": secrets.token_urlsafe(9)}
            await self._server.router.send(element(_MESSAGE, attrs, children=[payload]))

    async def send_last(self, owner: JID, recipient: Session | JID, when: frozenset[str]) -> set[str]:
        """The last item of each node of ``owner`` whose ``send_last_published_item`` is in ``when``,
        that ``recipient`` may see and wants (XEP-0163 §4.3.4, XEP-0060 §6.1.7); the nodes sent.
        A resource at another server (a full JID) wants every node: its caps are not known here."""
        sent: set[str] = set()
        viewer = (recipient if isinstance(recipient, JID) else recipient.jid).bare
        relation: RosterItem | None = None
        looked_up = viewer == owner
        for name, node in sorted((await self._store.nodes(owner)).items()):
            config = node.config
            if config.send_last_published_item not in when or node.last is None:
                continue
            if not isinstance(recipient, JID) and not self._interests.wants(recipient, name):
                continue
            if viewer != owner and config.access_model != "open":
                if not looked_up:
                    relation, looked_up = await self._rosters.item(owner, viewer), True
                if denial(config, relation) is not None:
                    continue
            last = await self._store.last(owner, node)
            if last is not None and (isinstance(recipient, JID) or not recipient.closed):
                await self.send(owner, (recipient,), EventItems(name, (Item(last.id, last.payload),)))
                sent.add(name)
        return sent

    def seen(self, owner: JID, resource: JID) -> bool:
        """Whether ``resource``, a contact's at another server, is noted as available to ``owner``
        (within the last ``seen_for`` seconds)."""
        noted = self._seen_abroad.get(owner, {}).get(resource)
        return noted is not None and time.monotonic() - noted < self.seen_for

    def arrived(self, owner: JID, resource: JID) -> bool:
        """Note that ``resource``, a contact's at another server, is available to ``owner``;
        whether it was not before (its presence is initial presence, not a change of status).
        What was noted longer ago than ``seen_for`` is forgotten on the way."""
        now = time.monotonic()
        known = self._seen_abroad.setdefault(owner, {})
        for stale in [r for r, noted in known.items() if now - noted >= self.seen_for]:
            del known[stale]
        if resource in known:
            return False
        known[resource] = now
        return True

    def left(self, owner: JID, resource: JID) -> None:
        """``resource``, a contact's at another server, went unavailable to ``owner``."""
        known = self._seen_abroad.get(owner)
        if known is not None:
            known.pop(resource, None)
            if not known:
                del self._seen_abroad[owner]

    def forget(self, owner: JID) -> None:
        """The account ``owner`` is gone, with what was noted of its contacts' resources."""
        self._seen_abroad.pop(owner, None)

    async def send_last_to(self, owner: JID, node: Node, subscriber: JID) -> None:
        """XEP-0060 §6.1.7: the last item of ``node`` to the resources of a new subscription."""
        last = await self._store.last(owner, node)
        if last is not None:
            await self.send(owner, await self.reached(subscriber), EventItems(node.name, (Item(last.id, last.payload),)))

    async def welcome(self, session: Session) -> None:
        """After initial presence: the last items of the account's own nodes and of each local
        contact the account is subscribed to (XEP-0163 §4.3.3, §4.3.4), once the resource's
        +notify features are known; then those of the nodes it subscribed to explicitly that
        it did not get so (XEP-0060 §6.1.7 on_sub_and_presence)."""
        learning = self._interests.learn(session, caps_of(session.presence))
        if learning is not None:
            # Shielded: other resources with the same caps may be waiting for the same answer.
            await asyncio.shield(learning)
        if session.closed or not session.available:
            return
        user = session.jid.bare
        sent = {(user, name) for name in await self.send_last(user, session, ON_PRESENCE)}
        for jid, item in (await self._rosters.items(user)).items():
            contact = JID.parse(jid)
            if has_to(item.subscription) and self._local(contact):
                sent |= {(contact, name) for name in await self.send_last(contact, session, ON_PRESENCE)}
        for owner, name in await self._subscriptions.subscribed_to(user):
            if (owner, name) not in sent:
                await self._send_last_subscribed(owner, name, session)

    async def welcome_abroad(self, owner: JID, resource: JID, contact: bool, subscribed: list[str]) -> None:
        """After the first available presence of ``resource``, at another server, reached
        ``owner``: the last items of the owner's nodes it may see if it is a contact's (XEP-0163
        §4.3.4), then those of the nodes ``subscribed`` to that it did not get so (XEP-0060
        §6.1.7 on_sub_and_presence)."""
        sent = await self.send_last(owner, resource, ON_PRESENCE) if contact else set()
        for name in subscribed:
            if name not in sent:
                await self._send_last_subscribed(owner, name, resource)

    async def _send_last_subscribed(self, owner: JID, name: str, recipient: Session | JID) -> None:
        """The last item of a node to a resource (here, or a full JID at another server) that one
        of its subscriptions reaches, if the node sends it on presence and still admits the
        subscriber."""
        node = await self._store.node(owner, name)
        if node is None or node.last is None or node.config.send_last_published_item not in ON_PRESENCE:
            return
        resource = recipient if isinstance(recipient, JID) else recipient.jid
        mine = [s for s in await self._subscriptions.of(owner, name) if reaches(s.jid, resource)]
        if not mine:
            return
        relation = await self._rosters.item(owner, resource.bare) if resource.bare != owner else None
        if not admits(owner, node, mine[0], relation):
            return
        last = await self._store.last(owner, node)
        if last is not None and (isinstance(recipient, JID) or not recipient.closed):
            await self.send(owner, (recipient,), EventItems(name, (Item(last.id, last.payload),)))


def reaches(subscribed: JID, resource: JID) -> bool:
    """Whether a subscription of ``subscribed`` (bare: every resource; full: that one) reaches ``resource``."""
    return subscribed == resource or (subscribed.is_bare and subscribed == resource.bare)


def _address(recipient: Session | JID) -> str:
    """The full JID of a recipient."""
    return str(recipient if isinstance(recipient, JID) else recipient.jid)


def admits(owner: JID, node: Node, subscriber: Subscriber, relation: RosterItem | None) -> bool:
    """Whether the access model lets ``subscriber`` (with roster item ``relation`` at the owner) see ``node``."""
    return subscriber.jid.bare == owner or denial(node.config, relation) is None

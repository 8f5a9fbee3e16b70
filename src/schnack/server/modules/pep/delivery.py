"""XEP-0163 §4.3: who gets a node's notifications, and the last items a resource gets (XEP-0060 §6.1.7).

Notifications are headline messages from the owner's bare JID (§4.3.1), one per resource
(§4.3.2): the owner's available resources and those of the contacts subscribed to the owner's
presence whom the node's access model admits (§4), each only if it wants the node (+notify,
:mod:`.interests`). They are routed like any message the server sends for the owner, so that
blocking (XEP-0191) keeps them from whom either side blocks (§4.3.3); headlines are neither
archived nor copied to other resources.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterable
from typing import TYPE_CHECKING

from ....xmpp import ns
from ....xmpp.jid import JID
from ....xmpp.payloads.pubsub import Event, EventItems, Item
from ....xmpp.xml import element, qname
from ...storage.base import RosterItem
from ..roster import has_from, has_to
from .access import Rosters, denial
from .interests import Interests, caps_of
from .store import Node, NodeStore

if TYPE_CHECKING:
    from ...app import Server
    from ...sessions import Session

ON_PRESENCE = frozenset({"on_sub_and_presence"})
ON_SUBSCRIPTION = frozenset({"on_sub", "on_sub_and_presence"})
_MESSAGE = qname(ns.CLIENT, "message")


class Delivery:
    """Sends the events of the accounts' nodes to the resources that may and want to see them."""

    def __init__(self, server: Server, rosters: Rosters, store: NodeStore, interests: Interests) -> None:
        self._server = server
        self._rosters = rosters
        self._store = store
        self._interests = interests

    def available(self, account: JID) -> list[Session]:
        """The resources of ``account`` that sent available presence."""
        return [s for s in self._server.sessions.resources(account) if s.available and not s.closed]

    def _local(self, jid: JID) -> bool:
        return jid.local is not None and jid.domain in self._server.hosts

    async def recipients(self, owner: JID, node: Node) -> list[Session]:
        """XEP-0163 §4, §4.3.2: the owner's and the admitted contacts' available resources that want ``node``."""
        sessions = self.available(owner)
        if node.config.access_model != "whitelist":
            for jid, item in (await self._rosters.items(owner)).items():
                if has_from(item.subscription) and denial(node.config, item) is None:
                    contact = JID.parse(jid)
                    if self._local(contact):
                        sessions.extend(self.available(contact))
        return [s for s in sessions if self._interests.wants(s, node.name)]

    async def send(self, owner: JID, recipients: Iterable[Session], event: Event) -> None:
        """One headline message per resource, from the owner's bare JID (XEP-0163 §4.3.1)."""
        payload = event.to_xml()
        for session in recipients:
            attrs = {"type": "headline", "from": str(owner), "to": str(session.jid), "id": secrets.token_urlsafe(9)}
            await self._server.router.send(element(_MESSAGE, attrs, children=[payload]))

    async def send_last(self, owner: JID, session: Session, when: frozenset[str]) -> None:
        """The last item of each node of ``owner`` whose ``send_last_published_item`` is in ``when``,
        that ``session`` may see and wants (XEP-0163 §4.3.4, XEP-0060 §6.1.7)."""
        viewer = session.jid.bare
        relation: RosterItem | None = None
        looked_up = viewer == owner
        for name, node in sorted((await self._store.nodes(owner)).items()):
            config = node.config
            if config.send_last_published_item not in when or node.last is None or not self._interests.wants(session, name):
                continue
            if viewer != owner and config.access_model != "open":
                if not looked_up:
                    relation, looked_up = await self._rosters.item(owner, viewer), True
                if denial(config, relation) is not None:
                    continue
            last = await self._store.last(owner, node)
            if last is not None and not session.closed:
                await self.send(owner, (session,), EventItems(name, (Item(last.id, last.payload),)))

    async def welcome(self, session: Session) -> None:
        """After initial presence: the last items of the account's own nodes and of each local
        contact the account is subscribed to (XEP-0163 §4.3.3, §4.3.4), once the resource's
        +notify features are known."""
        learning = self._interests.learn(session, caps_of(session.presence))
        if learning is not None:
            # Shielded: other resources with the same caps may be waiting for the same answer.
            await asyncio.shield(learning)
        if session.closed or not session.available:
            return
        user = session.jid.bare
        await self.send_last(user, session, ON_PRESENCE)
        for jid, item in (await self._rosters.items(user)).items():
            contact = JID.parse(jid)
            if has_to(item.subscription) and self._local(contact):
                await self.send_last(contact, session, ON_PRESENCE)

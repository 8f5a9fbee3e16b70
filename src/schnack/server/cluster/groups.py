"""XEP-0045 group chat rooms across cluster nodes: each room lives on one node, its owner.

A room's state (its occupants, their roles, the order of what they see) is in the memory of one
node, so every stanza for a room is handled there. The owner is whichever live node claimed the
room first (``ClusterBus.claim`` on ``room:{room JID}``); ownership stays while that node
heartbeats, so nodes joining the cluster move no room. Any other node forwards what it gets for
the room (presence, messages, IQs to the room or to an occupant; from its clients or from itself,
such as a leaving session's unavailable presence) over the bus to the owner, which routes it as its
own. The room's fan-out reaches occupants on other nodes through ``ClusterNode.post``, in order.

When a node dies, its rooms lose their occupants, as when a single server restarts: the next
stanza for such a room makes a live node its owner, which loads it from storage, and clients find
out by self-ping (XEP-0410) and join again. The owner of a room drops the occupants whose node died
(their sessions left the directory) as if they had sent unavailable presence (§7.14).

Stanzas to the service itself (disco of ``groups.<domain>``) need no room and are answered on any
node.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ...xmpp import ns
from ...xmpp.jid import JID
from ...xmpp.stanza import Stanza
from ...xmpp.xml import element, qname
from ..hooks import HANDLED, Handled
from ..modules.muc import Muc

if TYPE_CHECKING:
    from ..sessions import Session
    from .node import ClusterNode

log = logging.getLogger(__name__)

# Before the group chat service's own handlers (priority 0) and before any other module's.
FIRST = 1000
_PRESENCE = qname(ns.CLIENT, "presence")


class ClusterGroups:
    """Sends every stanza for a room to the node that owns the room."""

    def __init__(self, node: ClusterNode) -> None:
        self.node = node
        self.server = node.server
        self.domains: frozenset[str] = frozenset()
        # Owners this node looked up, forgotten when the owner dies.
        self._owners: dict[JID, str] = {}

    def _muc(self) -> Muc | None:
        """The group chat module, when it is enabled (it is set up after the cluster)."""
        muc = self.server.modules.get("muc")
        return muc if isinstance(muc, Muc) else None

    def start(self) -> None:
        """Put the forwarding in front of the group chat service of each domain (once modules are set up)."""
        muc = self._muc()
        if muc is None or self.domains:
            return
        self.domains = frozenset(muc.domains)
        hooks = self.server.hooks
        for domain in self.domains:
            hooks.add(f"presence/service/{domain}", self.to_room, FIRST)
            hooks.add(f"message/service/{domain}", self.to_room, FIRST)
        # A client's IQ passes pre-iq/service before the payload routes of the room's handlers.
        hooks.add("pre-iq/service", self.to_room, -FIRST)

    def hosts(self, to: JID) -> bool:
        """Whether ``to`` is a room (or occupant) address of the group chat service."""
        return to.domain in self.domains

    async def owner(self, room: JID) -> str:
        """The node that owns ``room``."""
        owner = self._owners.get(room)
        if owner is None:
            owner = self._owners[room] = await self.node.bus.claim(f"room:{room}")
        return owner

    async def to_room(self, stanza: Stanza, _origin: Session | None) -> Handled | None:
        """Forward a stanza for a room that another node owns."""
        to = stanza.to
        if to is None or to.local is None or to.domain not in self.domains:
            return None
        owner = await self.owner(to.bare)
        if owner == self.node.name:
            return None
        if await self.node.forward(owner, stanza, to):
            return HANDLED
        # The owner is gone (not yet reaped): ask again next time; this stanza is served here.
        self._owners.pop(to.bare, None)
        log.info("node %s did not take a stanza for room %s; serving it here", owner, to.bare)
        return None

    async def node_down(self, node: str) -> None:
        """Forget ``node``'s rooms, and drop the occupants it held from the rooms owned here."""
        for lost in [r for r, owner in self._owners.items() if owner == node]:
            del self._owners[lost]
        muc = self._muc()
        if muc is None:
            return
        sessions = self.server.sessions
        gone: list[tuple[JID, JID]] = []
        for room in list(muc.rooms.live.values()):
            if self._owners.get(room.jid) != self.node.name:
                continue
            for full, occupant in list(room.by_session.items()):
                if sessions.get(full) is None and str(full) not in await self.node.bus.lookup(str(full.bare)):
                    gone.append((full, JID(room.jid.local, room.jid.domain, occupant.nick)))
        for full, occupant_jid in gone:
            leave = element(_PRESENCE, {"type": "unavailable", "from": str(full), "to": str(occupant_jid)})
            await self.server.router.send(leave)
        if gone:
            log.info("removed %d occupants of dead node %s from the rooms here", len(gone), node)

"""The server's side of the cluster bus: directory entries for its sessions, and messages across nodes.

Every bound session is registered in the directory under this node, and unregistered when it
closes. RFC 6121 §8.5 delivery then spans the cluster:

- a message to a full JID bound on another node crosses the bus to that node (§8.5.3.1), which
  hands it to the session;
- a message to a bare JID with no available resource here goes to one node that holds sessions of
  the account, which picks its most available resources (§8.5.2.1.1) or stores it offline.

These handlers run at priority -90, after archiving and the other modules that see a message
first (on the sending node, against the shared storage) and before local delivery (-100). When
the bus cannot carry a message (the node died, Redis is away) they pass, and local delivery
stores it offline: storage is the source of truth, the bus only a fast path.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ...xmpp.errors import StanzaError, StreamError
from ...xmpp.jid import JID, JIDError
from ...xmpp.parser import parse_frame
from ...xmpp.stanza import Stanza
from ...xmpp.xml import serialize
from ..hooks import HANDLED, Handled
from ..modules.message import DELIVERED, message_type
from .bus import ClusterBus
from .messages import Deliver

if TYPE_CHECKING:
    from ..app import Server
    from ..sessions import Session

log = logging.getLogger(__name__)

PRIORITY = -90


class ClusterNode:
    """Connects one server to the cluster through ``bus``."""

    def __init__(self, server: Server, bus: ClusterBus) -> None:
        self.server = server
        self.bus = bus
        hooks = server.hooks
        hooks.add("session-bound", self._bound)
        hooks.add("session-closed", self._closed)
        hooks.add("message/full", self.to_full, PRIORITY)
        hooks.add("message/bare", self.to_bare, PRIORITY)
        hooks.add("message/self", self.to_bare, PRIORITY)
        bus.subscribe(self.arrived)
        bus.on_node_down(self._node_down)

    @property
    def name(self) -> str:
        """This node's name."""
        return self.bus.node

    async def start(self) -> None:
        """Join the cluster."""
        await self.bus.start()

    async def stop(self) -> None:
        """Leave the cluster, taking this node's directory entries along."""
        await self.bus.stop()

    async def _bound(self, session: Session) -> None:
        await self.bus.register(str(session.jid), self.name)

    async def _closed(self, session: Session) -> None:
        await self.bus.unregister(str(session.jid))

    async def _node_down(self, node: str) -> None:
        log.warning("cluster node %s is gone; messages to its sessions go to offline storage", node)

    async def to_full(self, stanza: Stanza, _origin: Session | None) -> Handled | None:
        """RFC 6121 §8.5.3.1 across nodes: the resource is connected, just not here."""
        to = stanza.to
        assert to is not None
        if self.server.sessions.get(to) is not None:
            return None
        node = (await self.bus.lookup(str(to.bare))).get(str(to))
        if node is None or node == self.name:
            return None
        return await self._forward(node, stanza, to)

    async def to_bare(self, stanza: Stanza, origin: Session | None) -> Handled | None:
        """RFC 6121 §8.5.2.1 across nodes, for chat and normal messages no resource here can take."""
        bare = stanza.to.bare if stanza.to is not None else (origin.jid.bare if origin is not None else None)
        if bare is None or message_type(stanza) not in ("chat", "normal"):
            return None
        if any(s.available and s.priority >= 0 and not s.closed for s in self.server.sessions.resources(bare)):
            return None
        remote = sorted({n for n in (await self.bus.lookup(str(bare))).values() if n != self.name})
        if not remote:
            return None
        if stanza.to is None:
            stanza.set_to(bare)
        # One node only, so that two nodes without an available resource never both store it offline.
        return await self._forward(remote[0], stanza, bare)

    async def _forward(self, node: str, stanza: Stanza, to: JID) -> Handled | None:
        sender = str(stanza.from_) if stanza.from_ is not None else ""
        if await self.bus.publish(node, Deliver(str(to), sender, serialize(stanza.el, None))):
            return HANDLED
        log.info("node %s did not take a message for %s; delivering here", node, to)
        return None

    async def arrived(self, message: Deliver) -> None:
        """Deliver a message another node routed here (RFC 6121 §8.5.2.1.1, §8.5.3.1)."""
        try:
            el = parse_frame(message.xml.encode(), self.server.config.limits.max_stanza_size)
            stanza = Stanza.parse(el)
        except (StreamError, StanzaError, JIDError) as err:
            log.error("dropping a message from the bus that does not parse: %s", err)
            return
        to = stanza.to
        if to is None or to.local is None or stanza.kind != "message":
            log.error("dropping a bus delivery that is not a message to an account")
            return
        sessions = self.server.sessions
        if to.resource is not None:
            session = sessions.get(to)
            targets = [session] if session is not None and not session.closed else []
        else:
            available = [s for s in sessions.resources(to) if s.available and s.priority >= 0 and not s.closed]
            top = max((s.priority for s in available), default=0)
            targets = [s for s in available if s.priority == top]
        if not targets:
            # Gone between the lookup and now: offline storage, as for any account without a resource.
            if await self.server.hooks.fire("message/offline", stanza) is None:
                log.info("a message for %s crossed the bus but nobody could take it", to)
            return
        for session in targets:
            session.send(stanza.el)
        hooks = self.server.hooks
        if hooks.has(DELIVERED):
            await hooks.fire_all(DELIVERED, stanza, targets)

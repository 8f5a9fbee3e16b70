"""RFC 6121 §3 and §4 across cluster nodes: presence reaches an account's sessions wherever they are.

The presence module does the account's work (subscription states, probes, broadcast) on the node
where a presence arrives, against the shared storage, and asks this part for what lies on other
nodes:

- presence to a full JID on another node goes to that node (§8.5.3.1); presence to a bare JID
  (broadcast, §4.2.2, §4.4.2, §4.5.2) also goes to every other node where the account has an
  available resource, which hands it to them (§8.5.2.1.1 for presence);
- :meth:`ClusterPresence.to_account` hands a subscription stanza or a user's own presence to the
  account's sessions on other nodes (interested or available ones for a subscription state
  change, §3.1.6, §3.2.3, §3.3.3; available ones otherwise, a subscription request too, §3.1.3:
  the others get it with their initial presence);
- :meth:`ClusterPresence.presences` gives the last available presence of the account's resources
  on other nodes, from the directory, for probes (§4.3.2) and for a new resource's view of its
  siblings (§4.2.2);
- when a node dies, the one node that reaped it sends unavailable presence (§4.5.2) from each of
  its available sessions to the contacts subscribed to them and to their own accounts, and to
  whom each of its sessions sent directed presence (§4.6.3; the directory keeps that list);
- a node cut off from the cluster past ``node_ttl`` is declared dead while its sessions live on:
  once it is back (as another process, ClusterBus.started), its available sessions' last
  presence goes out again to the same (§4.4.2, §4.6.2), which took them for gone.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING
from xml.etree.ElementTree import Element

from ...xmpp import ns
from ...xmpp.errors import StreamError
from ...xmpp.jid import JID, JIDError
from ...xmpp.parser import parse_frame
from ...xmpp.stanza import Stanza
from ...xmpp.xml import element, qname
from ..hooks import HANDLED, Handled
from ..modules.directed import Directed
from ..modules.presence import SUBSCRIPTION_TYPES, addressed
from ..modules.roster import Roster, has_from, reachable
from .bus import Entry
from .directory import read

if TYPE_CHECKING:
    from ..sessions import Session
    from .node import ClusterNode

log = logging.getLogger(__name__)

PRIORITY = -90
_PRESENCE = qname(ns.CLIENT, "presence")


def _account_level(stanza: Stanza) -> bool:
    """Subscription stanzas and probes are for the account, handled where they arrive (§3, §4.3)."""
    return stanza.type in SUBSCRIPTION_TYPES or stanza.type == "probe"


class ClusterPresence:
    """Presence between the sessions of different nodes."""

    def __init__(self, node: ClusterNode) -> None:
        self.node = node
        self.server = node.server
        # The process this node was in the cluster's eyes when it last told its contacts so.
        self._started = node.bus.started
        self.server.hooks.add("presence/full", self.to_full, PRIORITY)
        self.server.hooks.add("presence/bare", self.to_bare, PRIORITY)

    async def to_full(self, stanza: Stanza, _origin: Session | None) -> Handled | None:
        """§8.5.3.1 for presence: the resource is connected on another node."""
        to = stanza.to
        assert to is not None
        if _account_level(stanza) or self.server.sessions.get(to) is not None:
            return None
        where = (await self.node.bus.lookup(str(to.bare))).get(str(to))
        if where is None or where == self.node.name:
            return None
        return HANDLED if await self.node.forward(where, stanza, to, copy=True) else None

    async def to_bare(self, stanza: Stanza, _origin: Session | None) -> None:
        """§8.5.2.1.1 for presence: the available resources on other nodes get it too; the local
        ones get it from the presence module."""
        assert stanza.to is not None
        if not _account_level(stanza):
            await self.to_account(stanza.to.bare, stanza.el)

    async def to_account(self, bare: JID, el: Element) -> None:
        """Hand presence ``el`` to the sessions of ``bare`` on other nodes (see the module docstring)."""
        remote = await self.node.remote(bare)
        subscription = el.get("type") in SUBSCRIPTION_TYPES
        for where in sorted({r.node for r in remote if subscription or r.available}):
            await self.node.forward(where, el, bare, copy=True)

    async def presences(self, bare: JID) -> list[Element]:
        """The last available presence of each resource of ``bare`` on other nodes (from its full JID)."""
        found = []
        limit = self.server.config.limits.max_stanza_size
        for info in await self.node.remote(bare):
            if not info.available or not info.presence:
                continue
            try:
                found.append(parse_frame(info.presence.encode(), limit))
            except StreamError as err:
                log.error("the directory holds an unreadable presence of %s: %s", info.jid, err)
        return found

    async def available(self, bare: JID) -> list[str]:
        """The full JIDs of the available resources of ``bare`` on other nodes."""
        return [info.jid for info in await self.node.remote(bare) if info.available]

    def arrived(self, stanza: Stanza, to: JID) -> None:
        """Presence another node routed to a session or to the account here."""
        sessions = self.server.sessions
        if to.resource is not None:
            targets = [s for s in [sessions.get(to)] if s is not None]
        elif stanza.type in SUBSCRIPTION_TYPES and stanza.type != "subscribe":
            targets = [s for s in sessions.resources(to) if s.interested or s.available]
        else:
            targets = [s for s in sessions.resources(to) if s.available]
        for session in targets:
            if not session.closed:
                session.send(stanza.el)

    async def reaped(self, node: str, dropped: dict[str, str]) -> None:
        """§4.5.2 and §4.6.3 for the sessions of a dead node, sent by the node that reaped it: its
        available sessions' contacts and own accounts, and whom any of them sent directed presence
        (group chat rooms excepted: a room's node drops the occupants of a dead node itself)."""
        for full, entry in dropped.items():
            info = read(full, Entry(node, entry))
            try:
                jid = JID.parse(full)
            except JIDError:
                continue
            unavailable = element(_PRESENCE, {"type": "unavailable", "from": full})
            await self._tell(jid, unavailable, info.available, info.directed)
        log.info("told the contacts of %d sessions of dead node %s that they are gone", len(dropped), node)

    async def rejoined(self) -> None:
        """The bus works again after an outage. If this node came back as another process, the
        others declared it dead meanwhile and told its sessions' contacts they were gone
        (:meth:`reaped`): each available session's last presence goes out again, as §4.4.2
        broadcasts it, and to whom it sent directed presence (§4.6.2)."""
        started = self.node.bus.started
        if started == self._started:
            return
        self._started = started
        sessions = [s for s in self.server.sessions if s.available and s.presence is not None and not s.closed]
        for session in sessions:
            assert session.presence is not None
            directed = tuple(map(str, session.slot(Directed).to))
            await self._tell(session.jid, session.presence, True, directed)
        log.info("told the contacts of %d sessions again that they are here, after the cluster took this node "
                 "for dead", len(sessions))

    async def _tell(self, jid: JID, el: Element, available: bool, directed: tuple[str, ...]) -> None:
        """Send ``el``, presence of the session ``jid``, to its account's contacts subscribed to
        its presence and the account itself (when the session is ``available``), and to those it
        sent ``directed`` presence (group chat rooms excepted)."""
        roster = self.server.modules.get("roster")
        owner = jid.bare
        reached: set[str] = set()
        if available:
            if isinstance(roster, Roster) and jid.domain in self.server.hosts:
                for contact, item in (await roster.items(owner)).items():
                    if has_from(item.subscription) and reachable(self.server, JID.parse(contact)):
                        await self.server.router.send(addressed(el, contact))
                        reached.add(contact)
            await self.server.router.send(addressed(el, owner))
            reached.add(str(owner))
        for target in directed:
            try:
                to = JID.parse(target)
            except JIDError:
                continue
            if str(to.bare) not in reached and not self.node.groups.hosts(to):
                await self.server.router.send(addressed(el, to))

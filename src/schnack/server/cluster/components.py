"""XEP-0114 components across the cluster: a component connected to one node is reached from every node.

A component (a push app server, a gateway, a bot) connects to one node's component listener;
the cluster is one server to it. Every node with a link for a domain has an entry for it in
the directory, under ``{domain}/{node}``, written before the component hears that its handshake
succeeded (so that from then on every node reaches it) and dropped when the link goes. A node
that dies without dropping them loses them with its sessions once its heartbeats stop for
``node_ttl`` (the directory's reaping): from then on the other nodes no longer route to it.

A stanza addressed to the domain, on a node without a link of its own, crosses the bus to a
live node that has one (route priority -90: after the node's own link, before the answer of
component.py for a domain connected nowhere). Among several such nodes, the sender's bare JID
chooses one, so that one sender's stanzas take one link and arrive in order; a node that does
not take the stanza (it just died) passes it to the next. On the node that takes it, the stanza
goes to its link; if that went meanwhile, the sender gets what a domain connected nowhere gives
(service-unavailable for a message or an IQ request, RFC 6120 §8.3.3.19; presence is dropped).

A component may connect to several nodes, one link per node (XEP-0114 §3 allows one per domain
and server: a second on the same node is refused with conflict). Each node then uses its own
link, and the component stays reachable while any of its nodes lives.
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from typing import TYPE_CHECKING

from ..background import Background
from ..hooks import HANDLED, Handled

if TYPE_CHECKING:
    from ...xmpp.stanza import Stanza
    from ..sessions import Session
    from .node import ClusterNode

log = logging.getLogger(__name__)

PRIORITY = -90
_KINDS = ("message", "presence", "iq")


class ClusterComponents:
    """The component domains of the cluster: where each has a link, and routing to it."""

    def __init__(self, node: ClusterNode) -> None:
        self.node = node
        # One directory write at a time per domain, each writing what holds when it runs: a link
        # that goes and a new one that comes at once leave the entry there.
        self._locks: dict[str, asyncio.Lock] = {}
        self._writing = Background(log, "writing a component's directory entry failed")
        for domain in node.server.config.components:
            for kind in _KINDS:
                node.server.hooks.add(f"{kind}/service/{domain}", self.route, PRIORITY)

    def _key(self, domain: str) -> str:
        return f"{domain}/{self.node.name}"

    async def attached(self, domain: str) -> None:
        """A link for ``domain`` came up here: return once every node can see it."""
        await self._write(domain)

    def detached(self, domain: str) -> None:
        """The link for ``domain`` here went: the other nodes stop routing to it here."""
        self._writing.spawn(self._write(domain))

    async def _write(self, domain: str) -> None:
        async with self._locks.setdefault(domain, asyncio.Lock()):
            if domain in self.node.server.components.connected:
                await self.node.bus.register(self._key(domain), self.node.name)
            else:
                await self.node.bus.unregister(self._key(domain))

    async def written(self) -> None:
        """Return once every directory write started so far is done."""
        await self._writing.wait()

    async def linked(self, domain: str) -> list[str]:
        """The other live nodes with a link for ``domain``."""
        if self.node.bus.alone():
            return []
        found = await self.node.bus.lookup(domain)
        return sorted({node for node in found.values() if node != self.node.name})

    async def route(self, stanza: Stanza, _origin: Session | None) -> Handled | None:
        """A stanza for a component domain without a link here: to a node that has one."""
        to = stanza.to
        assert to is not None
        nodes = await self.linked(to.domain)
        if not nodes:
            return None
        sender = str(stanza.from_.bare) if stanza.from_ is not None else ""
        first = zlib.crc32(sender.encode()) % len(nodes)
        for node in nodes[first:] + nodes[:first]:
            if await self.node.forward(node, stanza, to):
                return HANDLED
            log.info("node %s did not take a stanza for component %s", node, to.domain)
        return None

    async def arrived(self, stanza: Stanza) -> None:
        """A stanza another node routed here for a component linked here."""
        to = stanza.to
        assert to is not None
        components = self.node.server.components
        stream = components.connected.get(to.domain)
        if stream is not None:
            stream.send(stanza.el)
        else:
            # Not routed on from here: two nodes whose entries are stale would pass it to and fro.
            await components.unreachable(stanza)

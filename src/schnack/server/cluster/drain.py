"""Draining a node for a rolling restart: its clients move to the other nodes, nothing is lost.

``schnack admin drain`` asks the running node to drain; the node then

1. stops taking connections (client, WebSocket, HTTP and component listeners close; the admin
   channel stays up to answer), and hands its group chat rooms over: what still comes for a room
   is refused with a ``wait`` error until another node takes the room on, and once the messages
   its rooms are storing and sending out are through, the rooms leave its memory
   (``cluster/groups.py``),
2. closes every client stream with the ``see-other-host`` stream error (RFC 6120 §4.9.3.19),
   naming the ``cluster.public_address`` of another live node (the one with the fewest client sessions
   first, then round robin), or ``system-shutdown`` when no other node advertises one. A closed
   stream ends its session: what the client had not acknowledged goes to offline storage
   (XEP-0198 §4), and the messages themselves are in the archive already (unless the account's
   archive preference is 'never', XEP-0441);
3. ends the sessions that hibernate without a connection (XEP-0198 §5) the same way,
4. leaves the cluster directory, so that no node routes to it any more,

and then the process exits. A client that reconnects elsewhere cannot resume the old session
(it ended; its resumption record tells the new node how far the old one got, see
``modules/sm.py``), so it binds afresh and catches up from offline storage and the archive.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING
from xml.etree.ElementTree import Element

from ...xmpp import ns
from ...xmpp.errors import StreamError
from ...xmpp.xml import qname

if TYPE_CHECKING:
    from ..app import Server

log = logging.getLogger(__name__)


class SeeOtherHost(StreamError):
    """RFC 6120 §4.9.3.19: reconnect to ``address`` (host:port) instead."""

    def __init__(self, address: str) -> None:
        super().__init__("see-other-host", f"this node is going down; reconnect to {address}")
        self.address = address

    def to_xml(self) -> Element:
        el = super().to_xml()
        condition = el.find(qname(ns.STREAM_ERRORS, "see-other-host"))
        assert condition is not None
        # The condition element carries the address itself (§4.9.3.19).
        condition.text = self.address
        return el


@dataclass(frozen=True)
class Drained:
    """What a drain did: streams sent to another node, streams told the service shuts down."""

    redirected: int
    shut_down: int
    targets: list[str]


async def drain(server: Server) -> Drained:
    """Drain ``server`` (see the module docstring); the caller stops the process afterwards."""
    cluster = server.cluster
    await server.stop_listening()
    nodes = await cluster.bus.nodes()
    others = sorted((n for n in nodes.values() if n.name != cluster.name and n.address),
                    key=lambda n: (n.sessions, n.name))
    targets = [n.address for n in others]
    shutdown = StreamError("system-shutdown", "this node is going down and no other node was found")
    turns = itertools.cycle(targets)
    counts = {"redirected": 0, "shut_down": 0}

    def next_error() -> StreamError:
        if not targets:
            counts["shut_down"] += 1
            return shutdown
        counts["redirected"] += 1
        return SeeOtherHost(next(turns))

    log.info("draining node %s: sending its clients to %s", cluster.name, ", ".join(targets) or "no other node")
    await cluster.groups.hand_over()
    await server.end_connections(next_error)
    await server.end_sessions(shutdown)
    await cluster.stop()
    log.info("node %s drained: %d clients sent to other nodes, %d told it shuts down",
             cluster.name, counts["redirected"], counts["shut_down"])
    return Drained(counts["redirected"], counts["shut_down"], targets)

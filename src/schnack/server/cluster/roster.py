"""RFC 6121 §2.1.6 across cluster nodes: roster pushes reach the interested resources on every node.

The roster module pushes a change to the account's interested resources on its own node, then
fires ``roster/pushed`` (owner, item, version). This part sends the same push to each resource of
the account on another node that asked for the roster (the directory's ``interested`` flag,
:mod:`.directory`), addressed to it and without 'from', as one-session copies over the bus: a
resource that is gone by then needs none, it gets the whole roster when it asks again.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

from ...xmpp import ns
from ...xmpp.jid import JID
from ...xmpp.payloads import roster as payload
from ...xmpp.xml import element, qname
from ..modules.roster import PUSHED, Roster

if TYPE_CHECKING:
    from .node import ClusterNode

_IQ = qname(ns.CLIENT, "iq")


class ClusterRoster:
    """Sends roster pushes to the account's interested resources on other nodes."""

    def __init__(self, node: ClusterNode) -> None:
        self.node = node
        self.server = node.server
        self.server.hooks.add(PUSHED, self.pushed)

    async def pushed(self, owner: JID, item: payload.RosterItem, version: int) -> None:
        """§2.1.6 for the interested resources of ``owner`` elsewhere (XEP-0237 version included)."""
        interested = [info for info in await self.node.remote(owner) if info.interested]
        roster = self.server.modules.get("roster")
        if not interested or not isinstance(roster, Roster):
            return
        query = payload.RosterQuery((item,), f"{await roster.version_prefix(owner)}{version}").to_xml()
        for info in interested:
            push = element(_IQ, {"type": "set", "id": f"push-{secrets.token_urlsafe(9)}", "to": info.jid},
                           children=(query,))
            await self.node.forward(info.node, push, info.jid, copy=True)

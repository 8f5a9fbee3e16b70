"""XEP-0163 across cluster nodes: PEP notifications reach the interested resources on every node.

The PEP module works out who gets a notification on the node where an item is published, against
the shared storage; for resources on other nodes it asks ``pep/elsewhere`` (account), which this
part answers from the directory (:mod:`.directory`): each available resource of the account
elsewhere with its last presence. The PEP module checks that presence's caps for +notify (§4.2)
as for its own sessions and routes each notification to the resource's full JID, which crosses
the bus to its node like any message (:meth:`.node.ClusterNode.to_full`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING
from xml.etree.ElementTree import Element

from ...xmpp.errors import StreamError
from ...xmpp.jid import JID, JIDError
from ...xmpp.parser import parse_frame
from ..modules.pep.delivery import ELSEWHERE

if TYPE_CHECKING:
    from .node import ClusterNode

log = logging.getLogger(__name__)


class ClusterPep:
    """Names an account's available resources on other nodes to the PEP module."""

    def __init__(self, node: ClusterNode) -> None:
        self.node = node
        self.server = node.server
        self.server.hooks.add(ELSEWHERE, self.elsewhere)

    async def elsewhere(self, account: JID) -> list[tuple[JID, Element | None]]:
        """The available resources of ``account`` on other nodes and their last presence."""
        found: list[tuple[JID, Element | None]] = []
        limit = self.server.config.limits.max_stanza_size
        for info in await self.node.remote(account):
            if not info.available:
                continue
            try:
                jid = JID.parse(info.jid)
                presence = parse_frame(info.presence.encode(), limit) if info.presence else None
            except (JIDError, StreamError) as err:
                log.error("the directory holds an unreadable entry for %s: %s", info.jid, err)
                continue
            found.append((jid, presence))
        return found

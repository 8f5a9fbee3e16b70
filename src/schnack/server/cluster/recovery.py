"""After a bus outage: the messages stored offline meanwhile reach the sessions that are online.

While Redis is away, a node cannot see or reach the sessions of the others, so a message for an
account online on another node goes to offline storage (the bus is only a fast path; storage is
the truth). Offline storage is read at login (XEP-0160 §2), so an account that stayed online
would not see those messages until its next login. Once the bus works again, this node hands
the offline messages of every available session it holds to the session, as at login: once when
its own sessions are back in the directory, and once more after ``node_ttl``, by when every other
node has written its sessions back too (a message stored offline in between, on a node that
still saw the directory empty, is caught then).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from ..modules.offline import Offline

if TYPE_CHECKING:
    from ..app import Server

log = logging.getLogger(__name__)


class BusRecovery:
    """Delivers offline storage to this node's online sessions after the bus came back."""

    def __init__(self, server: Server) -> None:
        self.server = server
        server.cluster.bus.on_recovered(self.recovered)

    async def recovered(self) -> None:
        """The bus is back: deliver now, and again once the other nodes are back too."""
        await self.deliver_stored()
        await asyncio.sleep(self.server.config.cluster.node_ttl)
        await self.deliver_stored()

    async def deliver_stored(self) -> None:
        """Hand each available session here what offline storage holds for its account."""
        offline = self.server.modules.get("offline")
        if not isinstance(offline, Offline):
            return
        sessions = [s for s in self.server.sessions if s.available and s.priority >= 0 and not s.closed]
        for session in sessions:
            try:
                await offline.deliver(session)
            except Exception:
                # Storage may be away too: the next login delivers them.
                log.exception("could not deliver stored messages to %s after the bus came back", session.jid)
        log.info("delivered what offline storage held to %d sessions after the bus came back", len(sessions))

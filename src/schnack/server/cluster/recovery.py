"""After a bus outage: the messages stored offline meanwhile reach the sessions that are online.

While Redis is away, a node cannot see or reach the sessions of the others, so a message for an
account online on another node goes to offline storage (the bus is only a fast path; storage is
the truth). Offline storage is read at login (XEP-0160 §2), so an account that stayed online
would not see those messages until its next login. Once the bus works again, this node hands
the offline messages of every available session it holds to the session, as at login: once when
its own sessions are back in the directory, and once more after ``node_ttl``, by when every other
node has written its sessions back too (a message stored offline in between, on a node that
still saw the directory empty, is caught then).

Redis may also have been out of reach of this node alone (a command timed out under load): then
the other nodes noticed no outage and recover nothing. So this node remembers the accounts it
stored messages for while the bus was away or it was recovering, and announces each on the bus
(``ClusterBus.announce`` of the store ``offline``) once it is back and again after ``node_ttl``;
a node that hears it hands those messages to that account's available sessions it holds. Nodes
announce so at any time an account with sessions elsewhere gets a message stored
(``ClusterNode.stored``), and the same handler hands it over.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from ...xmpp.jid import JID
from ..background import Background
from ..modules.offline import STORE, Offline

if TYPE_CHECKING:
    from ...xmpp.stanza import Stanza
    from ..app import Server
    from ..sessions import Session

log = logging.getLogger(__name__)


class BusRecovery:
    """Delivers offline storage to online sessions after the bus came back: this node's, and those
    of the accounts another node stored messages for while the bus was away from it."""

    def __init__(self, server: Server) -> None:
        self.server = server
        # Accounts this node stored messages for while the bus was away or it was recovering.
        self._stored: set[str] = set()
        self._recovering = 0
        self._tasks = Background(log, "delivering stored messages after the bus came back failed")
        bus = server.cluster.bus
        bus.on_recovered(self.recovered)
        bus.on_changed(self.changed)
        # Before the store: only whether the bus was away when the message was routed matters.
        server.hooks.add("message/offline", self.storing, 500)

    async def storing(self, stanza: Stanza) -> None:
        """Remember the account of a message stored while other nodes' sessions may not have been
        visible (the directory looks empty while the bus is away)."""
        if stanza.to is not None and (self._recovering or self.server.cluster.bus.away()):
            self._stored.add(str(stanza.to.bare))

    async def recovered(self) -> None:
        """The bus is back: deliver now, and again once the other nodes are back too."""
        self._recovering += 1
        try:
            await self._hand_over()
            await asyncio.sleep(self.server.config.cluster.node_ttl)
        finally:
            self._recovering -= 1
        await self._hand_over()

    async def _hand_over(self) -> None:
        await self.deliver_stored()
        await self._announce()

    async def _announce(self) -> None:
        """Tell the other nodes which accounts got messages stored here meanwhile."""
        accounts, self._stored = self._stored, set()
        bus = self.server.cluster.bus
        for account in sorted(accounts):
            await bus.announce(STORE, account)

    def changed(self, store: str, account: str) -> None:
        """Another node stored messages for ``account`` while it could not see its sessions here,
        or while one of them may have been raising its priority."""
        if store != STORE:
            return
        for session in self.server.sessions.resources(JID.parse(account)):
            if self._reachable(session):
                self._tasks.spawn(self._deliver(session))

    async def deliver_stored(self) -> None:
        """Hand each available session here what offline storage holds for its account."""
        sessions = [s for s in self.server.sessions if self._reachable(s)]
        for session in sessions:
            await self._deliver(session)
        log.info("delivered what offline storage held to %d sessions after the bus came back", len(sessions))

    @staticmethod
    def _reachable(session: Session) -> bool:
        return session.available and session.priority >= 0 and not session.closed

    async def _deliver(self, session: Session) -> None:
        offline = self.server.modules.get("offline")
        if not isinstance(offline, Offline):
            return
        try:
            await offline.deliver(session)
        except Exception:
            # Storage may be away too: the next login delivers them.
            log.exception("could not deliver stored messages to %s after the bus came back", session.jid)

"""XEP-0060 §4.5 access models of PEP nodes, for everyone but the owner (who always has access).

Who may see what follows from the owner's roster as stored; the roster module need not be
loaded (without it, no one is a contact).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ....xmpp.errors import StanzaError
from ....xmpp.jid import JID
from ....xmpp.payloads.pubsub import NodeConfig, pubsub_error
from ...storage.base import RosterItem
from ..roster import has_from

if TYPE_CHECKING:
    from ...app import Server


class Rosters:
    """The stored rosters, read for access checks and notifications."""

    def __init__(self, server: Server) -> None:
        self._server = server

    async def item(self, owner: JID, contact: JID) -> RosterItem | None:
        """The roster item of ``owner`` for ``contact`` (a bare JID)."""
        assert owner.local is not None
        return await self._server.storage.roster.get_item(owner.domain, owner.local, str(contact))

    async def items(self, owner: JID) -> dict[str, RosterItem]:
        """The roster of ``owner`` by contact bare JID."""
        assert owner.local is not None
        return (await self._server.storage.roster.get(owner.domain, owner.local))[1]


def denial(config: NodeConfig, relation: RosterItem | None) -> StanzaError | None:
    """Why a contact with roster item ``relation`` (None: not in the owner's roster) may not see a
    node, as the error of §6.5.9; None when it may.

    open: anyone; presence: subscribed to the owner's presence; roster: in one of the allowed
    roster groups; whitelist: the owner alone (XEP-0163 §5 asks for all four).
    """
    model = config.access_model
    if model == "open":
        return None
    if model == "presence":
        if relation is not None and has_from(relation.subscription):
            return None
        return pubsub_error("not-authorized", "presence-subscription-required")
    if model == "roster":
        if relation is not None and set(relation.groups) & set(config.roster_groups_allowed):
            return None
        return pubsub_error("not-authorized", "not-in-roster-group")
    return pubsub_error("not-allowed", "closed-node")

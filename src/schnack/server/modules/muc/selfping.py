"""XEP-0410: MUC Self-Ping (Schrödinger's Chat), answered by the room itself.

A client pings its own occupant JID to learn whether it is still in the room: the room answers
for the occupant (§3.2, the ``muc#self-ping-optimization`` feature) with a result when that very
resource is joined under that nick, and not-acceptable when it is not (§3.3), so the client
rejoins. A ping to the room or the service is answered as XEP-0199 asks; a ping to another
occupant gets not-acceptable from a non-occupant too, and a result for an occupant only when the
target is present (the room does not pass IQs on to occupants).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ....xmpp.errors import StanzaError
from ....xmpp.stanza import Stanza

if TYPE_CHECKING:
    from xml.etree.ElementTree import Element

    from ...sessions import Session
    from . import Muc


class SelfPing:
    """Pings to the service, its rooms and their occupants."""

    def __init__(self, muc: Muc) -> None:
        self.muc = muc

    async def ping(self, stanza: Stanza, _origin: Session | None) -> Element:
        to, sender = stanza.to, stanza.from_
        assert to is not None
        if to.local is None or sender is None:
            return stanza.result()
        room = await self.muc.rooms.peek(to.bare)
        if room is None:
            raise StanzaError("item-not-found", "there is no such group")
        if to.resource is None:
            return stanza.result()
        occupant = room.by_session.get(sender)
        if occupant is None:
            raise StanzaError("not-acceptable", "you are not in this group")
        if to.resource not in room.occupants:
            raise StanzaError("item-not-found", "nobody by that nickname is in the group")
        return stanza.result()

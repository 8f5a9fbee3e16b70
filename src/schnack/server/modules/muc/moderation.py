"""XEP-0425: Moderated Message Retraction (0.3, ``urn:xmpp:message-moderate:1``).

A moderator asks the room (an IQ set to its bare JID) to retract the message with a given
stanza-id. The archived message is replaced by a tombstone that keeps its id, sender and
place in the archive but not its content (``<retracted/>`` with the moderator and the reason,
XEP-0424 §5.1); then every occupant gets the retraction notice (``<retract/>``), which is
archived as well, so that clients catching up by MAM learn of it. Anyone but a moderator gets
forbidden (§5); an id that is not in the archive item-not-found.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from ....xmpp import ns
from ....xmpp.errors import StanzaError
from ....xmpp.jid import JID
from ....xmpp.payloads.muc import OCCUPANT_ID, USER_X, Moderate, MucError, OccupantId, Retraction
from ....xmpp.payloads.sid import StanzaId
from ....xmpp.stanza import Stanza
from ....xmpp.xml import element, qname, serialize
from .room import Room
from .store import ARCHIVE

if TYPE_CHECKING:
    from xml.etree.ElementTree import Element

    from . import Muc

_MESSAGE = qname(ns.CLIENT, "message")
_STORE_HINT = qname("urn:xmpp:hints", "store")


class Moderation:
    """Retraction of messages by moderators."""

    def __init__(self, muc: Muc) -> None:
        self.muc = muc

    async def moderate(self, stanza: Stanza, room: Room, sender: JID) -> Element:
        assert stanza.payload is not None
        try:
            request = Moderate.from_xml(stanza.payload)
        except MucError as err:
            raise StanzaError(err.condition, err.text) from None
        moderator = room.by_session.get(sender)
        if moderator is None or moderator.role != "moderator":
            raise StanzaError("forbidden", "only moderators retract others' messages")
        archive = self.muc.server.storage.archive
        found = await archive.query(room.jid.domain, room.name, ARCHIVE, ids=[request.id], count=False)
        if not found.items:
            raise StanzaError("item-not-found", "no message with that id in the group's archive")
        original = self.muc.archive.readable(found.items[0].payload, request.id)
        by = JID.parse(room.occupant_jid(moderator.nick))
        tombstone = element(_MESSAGE, {
            "from": original.get("from") if original is not None else room.text, "type": "groupchat",
            "id": original.get("id") if original is not None else None,
        })  # fmt: skip
        tombstone.append(Retraction(None, by, moderator.occupant_id, request.reason, datetime.now(UTC)).to_xml())
        if original is not None:
            # Who sent it stays known; what was sent does not.
            tombstone.extend(child for child in original if child.tag in (OCCUPANT_ID, USER_X))
        await self.muc.server.storage.muc.replace_archived(
            room.jid.domain, room.name, ARCHIVE, request.id, serialize(tombstone).encode())
        notice = element(_MESSAGE, {"from": room.text, "type": "groupchat", "id": f"retract-{request.id}"})
        notice.append(Retraction(request.id, by, moderator.occupant_id, request.reason).to_xml())
        notice.append(element(_STORE_HINT))
        notice.append(OccupantId(moderator.occupant_id).to_xml())
        archive_id = await self.muc.archive.store(room, notice, moderator.jid)
        if archive_id is not None:
            notice.append(StanzaId(archive_id, room.text).to_xml())
        self.muc.broadcast(room, notice)
        return stanza.result()

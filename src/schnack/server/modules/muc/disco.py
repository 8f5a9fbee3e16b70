"""XEP-0030 for the group chat service (XEP-0045 §6) and room avatars (vCard, XEP-0054 / XEP-0486).

The service answers disco#info with the identity conference/text and the MUC feature (§6.1),
disco#items with its public rooms, stored or in memory (§6.3); each domain lists its service
(``disco-items/host``). A room answers disco#info with conference/text, the features that say what
kind of room it is and the ``muc#roominfo`` form (§6.4); its disco#items stay empty, so that a
private group's occupants are not shown to outsiders (§6.5 allows it). A room that does not exist
is item-not-found (§6.4). Queries to an occupant JID are the occupant's to answer (:mod:`.forwarding`).

A room's vCard (its avatar) is stored with the room: anyone reads it, owners replace it; the
SHA-1 of its photo goes into the room info as ``muc#roominfo_avatarhash``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import TYPE_CHECKING

from ....xmpp import ns
from ....xmpp.errors import StanzaError
from ....xmpp.jid import JID
from ....xmpp.parser import parse_frame
from ....xmpp.payloads.disco import DiscoInfo, DiscoItem, DiscoItems, Identity
from ....xmpp.payloads.muc import MUC
from ....xmpp.stanza import Stanza
from ....xmpp.xml import element, qname, serialize
from .room import Room, RoomState
from .roomconfig import STABLE_ID, room_features, room_info
from .store import VCARD

if TYPE_CHECKING:
    from xml.etree.ElementTree import Element

    from ...sessions import Session
    from . import Muc

_VCARD = qname("vcard-temp", "vCard")
_BINVAL = f"{qname('vcard-temp', 'PHOTO')}/{qname('vcard-temp', 'BINVAL')}"


class Disco:
    """Service discovery of the service and its rooms; room vCards."""

    def __init__(self, muc: Muc) -> None:
        self.muc = muc

    async def host_items(self, host: str) -> list[tuple[str, str]]:
        """The service of domain ``host`` among the domain's items."""
        return [(domain, self.muc.options.name) for domain, served in self.muc.domains.items() if served == host]

    async def info(self, stanza: Stanza, _origin: Session | None) -> Element | None:
        to = stanza.to
        assert to is not None and stanza.payload is not None
        if stanza.payload.get("node") is not None:
            raise StanzaError("item-not-found", "no such node")
        if to.local is None:
            return stanza.result(DiscoInfo(
                identities=(Identity("conference", "text", self.muc.options.name),),
                features=(MUC, STABLE_ID, ns.DISCO_INFO, ns.DISCO_ITEMS),
            ).to_xml())  # fmt: skip
        if to.resource is not None:
            return None  # for the occupant to answer (forwarding)
        room = await self._room(to)
        return stanza.result(DiscoInfo(
            identities=(Identity("conference", "text", room.config.name or room.name),),
            features=room_features(room), forms=(room_info(room),),
        ).to_xml())  # fmt: skip

    async def items(self, stanza: Stanza, _origin: Session | None) -> Element | None:
        to = stanza.to
        assert to is not None
        if to.resource is not None:
            return None
        if to.local is not None:
            await self._room(to)
            return stanza.result(DiscoItems().to_xml())
        listed: dict[str, str] = {}
        for stored in await self.muc.server.storage.muc.rooms(to.domain):
            try:
                state = RoomState.from_json(stored.config)
            except (ValueError, TypeError):
                continue
            if state.config.public:
                listed[stored.name] = state.config.name or stored.name
        for jid, room in self.muc.rooms.live.items():
            if jid.domain == to.domain and room.config.public and not room.locked:
                listed[room.name] = room.config.name or room.name
        items = tuple(DiscoItem(f"{name}@{to.domain}", title) for name, title in sorted(listed.items()))
        return stanza.result(DiscoItems(items).to_xml())

    async def _room(self, to: JID) -> Room:
        room = await self.muc.rooms.peek(to.bare)
        if room is None or room.destroyed or room.locked:
            raise StanzaError("item-not-found", "there is no such group")
        return room

    async def get_vcard(self, stanza: Stanza, room: Room, _sender: JID) -> Element:
        """XEP-0054 §3.3 for a room: its vCard, or an empty one."""
        data = await self.muc.server.storage.kv.get(room.jid.domain, room.name, VCARD)
        return stanza.result(parse_frame(data, len(data)) if data is not None else element(_VCARD))

    async def set_vcard(self, stanza: Stanza, room: Room, sender: JID) -> Element:
        """XEP-0486 §3: owners set the room's vCard (its avatar)."""
        if room.affiliation(sender.bare) != "owner":
            raise StanzaError("forbidden", "only owners change the group's picture")
        assert stanza.payload is not None
        data = serialize(stanza.payload).encode()
        if len(data) > self.muc.options.max_vcard_size:
            raise StanzaError("not-acceptable", f"a group's vCard may be at most {self.muc.options.max_vcard_size} bytes")
        photo = "".join((stanza.payload.findtext(_BINVAL) or "").split())
        try:
            avatar_hash = hashlib.sha1(base64.b64decode(photo, validate=True)).hexdigest() if photo else ""
        except (binascii.Error, ValueError):
            raise StanzaError("bad-request", "the photo is not base64") from None
        await self.muc.server.storage.kv.set(room.jid.domain, room.name, VCARD, data)
        room.state.avatar_hash = avatar_hash
        await self.muc.rooms.save(room)
        return stanza.result()


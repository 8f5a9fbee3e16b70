"""XEP-0045 §4.2 persistent and temporary rooms: those in memory, loaded from storage on first use.

Persistent rooms (configured once, §10.1) have a record in ``muc_rooms`` and their
affiliations in ``muc_affiliations``; every change to either is written through before it is
announced. A stored room with nobody in it leaves memory and is read again when asked for.
Temporary rooms live only in memory and go when the last occupant leaves (§4.2).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from ....xmpp.jid import JID
from ...storage.base import RoomAffiliation
from .room import Room, RoomState

if TYPE_CHECKING:
    from ...app import Server

ARCHIVE = "muc"
VCARD = "muc-vcard"


class Rooms:
    """Every room of the service's domains that is in memory, and the way to the stored ones."""

    def __init__(self, server: Server) -> None:
        self._server = server
        self.live: dict[JID, Room] = {}

    async def get(self, jid: JID) -> Room | None:
        """The room at bare JID ``jid``, from memory or storage; None if there is none."""
        room = self.live.get(jid)
        if room is not None:
            return room
        loaded = await self._load(jid)
        # Someone else may have loaded (or created) it while storage was read.
        room = self.live.get(jid)
        if room is None and loaded is not None:
            room = self.live[jid] = loaded
        return room

    async def peek(self, jid: JID) -> Room | None:
        """The room as :meth:`get` finds it, to look at only: a stored room that is not in memory
        is read but not kept there (a look at a room's info does not make it stay)."""
        room = self.live.get(jid)
        return room if room is not None else await self._load(jid)

    async def _load(self, jid: JID) -> Room | None:
        assert jid.local is not None
        muc = self._server.storage.muc
        stored = await muc.get_room(jid.domain, jid.local)
        if stored is None:
            return None
        affiliations = await muc.affiliations(jid.domain, jid.local)
        return Room(jid, RoomState.from_json(stored.config), {JID.parse(k): v for k, v in affiliations.items()},
                    stored=True)

    async def owned(self, owner: JID) -> int:
        """How many rooms ``owner`` owns: stored ones, and those in memory not (yet) stored."""
        stored = await self._server.storage.muc.rooms_of(str(owner))
        count = sum(1 for _, _, affiliation in stored if affiliation == "owner")
        return count + sum(1 for room in self.live.values() if not room.stored and room.affiliation(owner) == "owner")

    def create(self, jid: JID, owner: JID, state: RoomState) -> Room:
        """§10.1.1: a new, locked room with ``owner`` as its only owner (kept in memory only)."""
        room = Room(jid, state, {owner: RoomAffiliation(str(owner), "owner", since=time.time())}, locked=True)
        self.live[jid] = room
        return room

    async def save(self, room: Room) -> None:
        """Write the room's state through, or drop its record when it stopped being persistent."""
        assert room.jid.local is not None
        muc = self._server.storage.muc
        if room.config.persistent:
            await muc.save_room(room.jid.domain, room.jid.local, room.state.to_json())
            if not room.stored:
                for record in room.affiliations.values():
                    await muc.set_affiliation(room.jid.domain, room.jid.local, record)
                room.stored = True
        elif room.stored:
            await muc.delete_room(room.jid.domain, room.jid.local)
            room.stored = False

    async def set_affiliation(self, room: Room, jid: JID, record: RoomAffiliation) -> None:
        """Change one affiliation (``none`` removes it), in storage first if the room is stored."""
        assert room.jid.local is not None
        if room.stored:
            await self._server.storage.muc.set_affiliation(room.jid.domain, room.jid.local, record)
        if record.affiliation == "none":
            room.affiliations.pop(jid, None)
        else:
            room.affiliations[jid] = record

    async def destroy(self, room: Room) -> None:
        """§10.9: forget the room with its affiliations, archive and avatar."""
        assert room.jid.local is not None
        room.destroyed = True
        if self.live.get(room.jid) is room:
            del self.live[room.jid]
        storage = self._server.storage
        if room.stored:
            await storage.muc.delete_room(room.jid.domain, room.jid.local)
            room.stored = False
        await storage.archive.delete(room.jid.domain, room.jid.local, ARCHIVE)
        await storage.kv.delete(room.jid.domain, room.jid.local, VCARD)

    def release(self, room: Room) -> None:
        """Let an empty stored room leave memory; storage keeps it."""
        if not room.occupants and room.stored and self.live.get(room.jid) is room:
            del self.live[room.jid]

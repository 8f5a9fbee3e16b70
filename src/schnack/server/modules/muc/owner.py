"""XEP-0045 §10: owners configure and destroy rooms.

A room created by entering it is locked (§10.1.1) until its owner submits the configuration form
(§10.1.3; an empty submitted form accepts the defaults, the "instant room" of §10.1.2) or
cancels it, which destroys the room. The form (§10.2) is the one of :mod:`.roomconfig`; owners
and admins named in it change affiliations as §10.3 to §10.7 would, all checked before the form
changes anything: a form that would leave the room without an owner (no owner listed, or the last
owner listed among the admins) is refused with conflict (§10.6), one that lists a JID as both
owner and admin with bad-request. Occupants hear of a changed configuration by a message with
status 104, and of a room turned non-anonymous or semi-anonymous by 172 or 173, logging on or off
by 170 or 171 (§10.2.1); non-members are removed with status 322 when a room becomes members-only
(§9.4). Destruction (§10.9) sends every occupant unavailable presence with ``<destroy/>`` and
forgets the room with its archive.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ....xmpp import ns
from ....xmpp.errors import StanzaError
from ....xmpp.jid import JID
from ....xmpp.payloads.muc import Destroy, Item, MucError, OccupantId, OwnerQuery, UserX
from ....xmpp.stanza import Stanza
from ....xmpp.xml import element, qname
from .admin import keep_an_owner
from .room import AFFILIATION_RANK, MEMBERS_ONLY, Room, addressed
from .roomconfig import apply_form, config_form

if TYPE_CHECKING:
    from xml.etree.ElementTree import Element

    from . import Muc


class Owner:
    """The ``muc#owner`` requests."""

    def __init__(self, muc: Muc) -> None:
        self.muc = muc

    @staticmethod
    def _query(stanza: Stanza, room: Room, sender: JID) -> OwnerQuery:
        if room.affiliation(sender.bare) != "owner":
            raise StanzaError("forbidden", "only owners configure a group")
        assert stanza.payload is not None
        try:
            return OwnerQuery.from_xml(stanza.payload)
        except MucError as err:
            raise StanzaError(err.condition, err.text) from None

    async def get(self, stanza: Stanza, room: Room, sender: JID) -> Element:
        """§10.1.3, §10.2: the configuration form."""
        self._query(stanza, room, sender)
        return stanza.result(OwnerQuery(form=config_form(room, self.muc.options.max_occupants)).to_xml())

    async def set(self, stanza: Stanza, room: Room, sender: JID) -> Element:
        """§10.1.2, §10.1.3, §10.2: apply a submitted form; §10.9: destroy the room."""
        query = self._query(stanza, room, sender)
        if query.destroy is not None:
            await self.destroy(room, query.destroy)
            return stanza.result()
        form = query.form
        if form is None:
            raise StanzaError("bad-request", "expected a configuration form or <destroy/>")
        if form.type == "cancel":
            if room.locked:
                await self.destroy(room, Destroy(reason="the group was not set up"))
            return stanza.result()
        if form.type != "submit":
            raise StanzaError("bad-request", "submit the configuration form")
        limit = self.muc.options.max_occupants
        new, owners, admins = apply_form(room.config, form, limit)
        changes = self._affiliation_changes(room, owners, admins)
        keep_an_owner(room, changes.items())
        # The submitter stays owner when the owner list leaves them out: giving up one's own
        # ownership takes an explicit request (naming oneself among the admins, or §10.6's admin
        # request), not a field a client may send back incomplete.
        if changes.get(sender.bare) == "member":
            del changes[sender.bare]
        old = room.config
        room.state.config = new
        was_locked, room.locked = room.locked, False
        await self.muc.rooms.save(room)
        actor = room.by_session.get(sender)
        for jid, affiliation in changes.items():
            await self.muc.admin.apply_affiliation(room, jid, affiliation, None, actor=actor)
        if new.members_only and not old.members_only:
            for occupant in list(room.occupants.values()):
                if AFFILIATION_RANK[room.affiliation(occupant.jid)] < AFFILIATION_RANK["member"]:
                    await self.muc.presence.remove(room, occupant, MEMBERS_ONLY)
        if not was_locked and new != old:
            codes = [104]
            if new.whois != old.whois:
                codes.append(172 if new.non_anonymous else 173)
            if new.logging != old.logging:
                codes.append(170 if new.logging else 171)
            note = element(qname(ns.CLIENT, "message"), {"from": room.text, "type": "groupchat"})
            note.append(UserX(statuses=tuple(codes)).to_xml())
            self.muc.broadcast(room, note)
        return stanza.result()

    @staticmethod
    def _affiliation_changes(room: Room, owners: tuple[JID, ...] | None,
                             admins: tuple[JID, ...] | None) -> dict[JID, str]:
        """§10.2 with §10.3 to §10.7: the changes the ``roomowners`` and ``roomadmins`` lists ask
        for. Those the lists add get the list's affiliation; those they leave out become members,
        unless the other list names them."""
        if owners is not None and admins is not None and (both := set(owners) & set(admins)):
            # A user holds one affiliation (§5.2): a form giving one JID two contradicts itself.
            # That is a malformed request (bad-request), not a setting's value the service
            # declines (not-acceptable, what :mod:`.roomconfig` answers for those).
            raise StanzaError("bad-request", f"{', '.join(sorted(map(str, both)))}: listed as both owner and admin")
        changes: dict[JID, str] = {}
        for wanted, affiliation in ((owners, "owner"), (admins, "admin")):
            if wanted is None:
                continue
            current = {jid for jid, record in room.affiliations.items() if record.affiliation == affiliation}
            for jid in current - set(wanted):
                changes.setdefault(jid, "member")
            for jid in set(wanted) - current:
                changes[jid] = affiliation
        return changes

    async def destroy(self, room: Room, destroy: Destroy) -> None:
        """§10.9: everyone out with the reason and alternate venue, then the room is gone."""
        for occupant in list(room.occupants.values()):
            presence = element(qname(ns.CLIENT, "presence"),
                               {"from": room.occupant_jid(occupant.nick), "type": "unavailable"})
            presence.append(UserX(items=(Item(affiliation="none", role="none"),), destroy=destroy).to_xml())
            presence.append(OccupantId(occupant.occupant_id).to_xml())
            for full in occupant.sessions:
                self.muc.send_to(full, addressed(presence, str(full)))
        room.occupants.clear()
        room.by_session.clear()
        await self.muc.rooms.destroy(room)

"""XEP-0045 §7.1 to §7.6 and §7.14: entering a room, changing nick and status, leaving, and
removal of occupants (kicks, bans, affiliation changes); rate limits on presence and joins.

Entering (§7.2): the newcomer gets every occupant's presence, then everyone gets the
newcomer's, the newcomer's own carrying status 110 (and 100 in a non-anonymous room, 170 when
the room archives, 201 when the join created the room); then the history it asked for
(§7.2.14) and the subject (§7.2.15), which always comes, empty if there is none, with its
setter's occupant id (XEP-0421). A resource already in the room that sends its join again gets
all of that again, as a client that lost track of the room needs. A second resource of the same
user may enter under the same nick: it shares the occupant, and everyone is shown the presence
of the resource that entered last. Refusals (§7.2.5 to §7.2.11): outcasts get forbidden,
non-members of a members-only room registration-required, a wrong password not-authorized, a
full room service-unavailable, a nick someone else uses or has reserved (or one that compares
equal to it, RFC 8266 §2.4: "Bob" is bob's) conflict, and a locked room item-not-found except
for its owner (§7.2.10). A presence without a nick is jid-malformed (§7.2.1), as is one whose nick is
blank or starts or ends with a space, on entering and on changing nick (RFC 8266 §2.2 strips
those; "bob " would pass for "bob"). A user who owns ``max_owned_rooms`` rooms creates no more
(policy-violation, §14.6).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ....xmpp.errors import StanzaError
from ....xmpp.jid import JID
from ....xmpp.payloads.muc import JOIN, USER_X, Join, MucError, OccupantId
from ....xmpp.stanza import Stanza
from ....xmpp.xml import element, qname
from .room import (
    AFFILIATION_RANK,
    CREATED,
    ERROR_REMOVED,
    LOGGED,
    NICK_CHANGED,
    SELF,
    SHOWS_REAL_JIDS,
    Occupant,
    Room,
    RoomState,
    addressed,
    nick_key,
    occupant_presence,
    own_children,
)  # fmt: skip

if TYPE_CHECKING:
    from xml.etree.ElementTree import Element

    from . import Muc

_DROP = frozenset({JOIN, USER_X})


class Presences:
    """Presence to rooms."""

    def __init__(self, muc: Muc) -> None:
        self.muc = muc

    async def handle(self, stanza: Stanza, to: JID, sender: JID) -> None:
        kind = stanza.type
        room_jid = to.bare
        if kind in ("unavailable", "error"):
            room = self.muc.rooms.live.get(room_jid)
            if room is not None:
                await self.leave(room, sender, error=kind == "error")
            return
        if kind is not None:
            return  # probes and subscriptions mean nothing to a room
        if to.resource is None:
            raise StanzaError("jid-malformed", "add your nickname to the group's address: group@service/nickname")
        if to.resource.strip() != to.resource:
            # RFC 8266 §2.2 (the nickname profile §7.2.1 recommends) strips spaces at either end,
            # leaving none of a blank nick: kept, "bob " would pass for "bob" in every client.
            raise StanzaError("jid-malformed", "a nickname neither is blank nor starts or ends with a space")
        if not self.muc.limits.presence.allow((sender, room_jid)):
            raise StanzaError("policy-violation", "too many presence updates to this group; slow down")
        room = await self.muc.rooms.get(room_jid)
        occupant = room.by_session.get(sender) if room is not None else None
        children = own_children(stanza.el, _DROP)
        if room is None or occupant is None:
            await self.enter(room, stanza, to, sender, children)
        elif occupant.nick != to.resource:
            await self.change_nick(room, occupant, to.resource, sender, children)
        else:
            join = self.join_request(stanza) if stanza.el.find(JOIN) is not None else None
            occupant.sessions.pop(sender)
            occupant.sessions[sender] = children
            if join is None:
                # §7.7: a status change goes to everyone.
                self.muc.broadcast_presence(room, occupant)
            else:
                await self.enter_again(room, occupant, join, sender)

    async def enter(self, room: Room | None, stanza: Stanza, to: JID, sender: JID, children: list[Element]) -> None:
        """§7.2: enter (or create, §10.1.1) the room as ``to.resource``."""
        assert to.resource is not None
        nick, bare, room_jid = to.resource, sender.bare, to.bare
        join = self.join_request(stanza)
        created = room is None
        if room is None:
            if sender.domain not in self.muc.server.hosts:
                raise StanzaError("not-allowed", "only users of this server create groups here")
            if await self.muc.rooms.owned(bare) >= self.muc.options.max_owned_rooms:
                raise StanzaError("policy-violation", "you own as many groups as one person may; destroy one first")
            room = self.muc.rooms.create(room_jid, bare, RoomState())
        elif room.locked and room.affiliation(bare) != "owner":
            raise StanzaError("item-not-found", "this group is still being set up")
        affiliation = room.affiliation(bare)
        if affiliation == "outcast":
            raise StanzaError("forbidden", "you are banned from this group")
        existing = room.occupants.get(nick)
        holder = room.nick_holder(nick)
        if holder is not None and holder.jid != bare:
            raise StanzaError("conflict", "that nickname is taken in this group")
        self.check_reserved(room, nick, bare)
        if existing is None:
            rank = AFFILIATION_RANK[affiliation]
            if room.config.members_only and rank < AFFILIATION_RANK["member"]:
                raise StanzaError("registration-required", "this group is for its members only")
            if room.config.password and affiliation != "owner" and join.password != room.config.password:
                raise StanzaError("not-authorized", "this group needs a password")
            if len(room.occupants) >= room.max_users(self.muc.options.max_occupants) and rank < AFFILIATION_RANK["admin"]:
                raise StanzaError("service-unavailable", "this group is full")
        # Counted only for those who may enter, so that outsiders cannot use up a group's entries.
        if not self.muc.limits.joins.allow(room_jid):
            raise StanzaError("policy-violation", "too many people are entering this group right now; try again soon")
        codes = self.entry_codes(room, created=created)
        if existing is not None:
            occupant = existing
            occupant.sessions[sender] = children
            room.by_session[sender] = occupant
            self._show_occupants(room, occupant, sender)
            # The occupant's presence is now the newcomer's (its real JID, its show), as those
            # who enter later are shown: everyone gets it, as for a change of status (§7.7).
            self.muc.broadcast_presence(room, occupant, self_statuses=codes)
        else:
            occupant = Occupant(nick, bare, room.default_role(affiliation), room.occupant_id(bare), {sender: children})
            room.occupants[nick] = occupant
            room.by_session[sender] = occupant
            self._show_occupants(room, occupant, sender)
            self.muc.broadcast_presence(room, occupant, self_statuses=codes)
        await self.muc.archive.history(room, sender, join.history)
        self.send_subject(room, sender)

    async def enter_again(self, room: Room, occupant: Occupant, join: Join, sender: JID) -> None:
        """§7.2 for a resource already in the room under that nick: a client sends its join again
        when it lost track of the room (after a stream it could not resume, for one), and needs all
        that entering gives (occupants, its own presence, history, subject); the others see its
        presence, which may have changed."""
        self._show_occupants(room, occupant, sender)
        self.muc.broadcast_presence(room, occupant, self_statuses=self.entry_codes(room, created=False))
        await self.muc.archive.history(room, sender, join.history)
        self.send_subject(room, sender)

    @staticmethod
    def join_request(stanza: Stanza) -> Join:
        """§7.2.1: the join element of an entering presence (its history request and password)."""
        try:
            x = stanza.el.find(JOIN)
            return Join.from_xml(x) if x is not None else Join()
        except MucError as err:
            raise StanzaError(err.condition, err.text) from None

    @staticmethod
    def entry_codes(room: Room, *, created: bool) -> tuple[int, ...]:
        """§7.2.3, §7.2.12, §10.1.1: the statuses besides 110 of the self-presence on entering."""
        return (*((SHOWS_REAL_JIDS,) if room.config.non_anonymous else ()),
                *((LOGGED,) if room.config.logging else ()), *((CREATED,) if created else ()))

    def _show_occupants(self, room: Room, newcomer: Occupant, to: JID) -> None:
        shows = room.sees_real_jids(newcomer)
        target = str(to)
        for other in room.occupants.values():
            if other is not newcomer:
                self.muc.send_to(to, addressed(occupant_presence(room, other, real_jid=shows), target))

    def send_subject(self, room: Room, to: JID) -> None:
        """§7.2.15: the subject, from whoever set it (the room itself if nobody did), with the
        setter's occupant id (XEP-0421 §4: every message from an occupant carries one)."""
        state = room.state
        sender = room.occupant_jid(state.subject_by) if state.subject_by else room.text
        message = element(qname("jabber:client", "message"), {"from": sender, "to": str(to), "type": "groupchat"})
        message.append(element(qname("jabber:client", "subject"), text=state.subject or None))
        if state.subject_by_id:
            message.append(OccupantId(state.subject_by_id).to_xml())
        self.muc.send_to(to, message)

    def check_reserved(self, room: Room, nick: str, bare: JID) -> None:
        """§7.12: a nick another user registered with the room is theirs alone, and so is each nick
        that compares equal to it (:func:`.room.nick_key`)."""
        key = nick_key(nick)
        for jid, record in room.affiliations.items():
            if record.nick is not None and nick_key(record.nick) == key and jid != bare:
                raise StanzaError("conflict", "that nickname is reserved by a member of this group")

    async def change_nick(self, room: Room, occupant: Occupant, nick: str, sender: JID, children: list[Element]) -> None:
        """§7.6: unavailable under the old nick with status 303, then available under the new one."""
        other = room.nick_holder(nick)
        if other is not None and other is not occupant:
            raise StanzaError("conflict", "that nickname is taken in this group")
        self.check_reserved(room, nick, occupant.jid)
        self.muc.broadcast_presence(room, occupant, unavailable=True, statuses=(NICK_CHANGED,), nick=nick)
        del room.occupants[occupant.nick]
        occupant.nick = nick
        room.occupants[nick] = occupant
        occupant.sessions.pop(sender)
        occupant.sessions[sender] = children
        self.muc.broadcast_presence(room, occupant)

    async def leave(self, room: Room, sender: JID, *, error: bool = False) -> None:
        """§7.14: the resource leaves; the occupant goes when its last resource did. An error
        from an occupant's client answering the room's traffic removes it too (§18.1.2, status 333).
        When other resources stay, everyone gets the occupant's presence again (§7.7): the real
        JID and presence the others were shown may have been those of the resource that left.
        The leaving resource's unavailable presence carries its own real JID, not a remaining one's."""
        occupant = room.by_session.pop(sender, None)
        if occupant is None:
            return
        occupant.sessions.pop(sender, None)
        if occupant.sessions:
            own = occupant_presence(room, occupant, real_jid=True, unavailable=True, statuses=(SELF,),
                                    resource=sender)
            self.muc.send_to(sender, addressed(own, str(sender)))
            self.muc.broadcast_presence(room, occupant)
            return
        del room.occupants[occupant.nick]
        self.muc.broadcast_presence(room, occupant, unavailable=True, statuses=(ERROR_REMOVED,) if error else (),
                                    also=(sender,), resource=sender)
        await self.emptied(room)

    async def remove(self, room: Room, occupant: Occupant, status: int | None, *, reason: str | None = None,
                     actor: str | None = None, tell_self: bool = True) -> None:
        """§8.2, §9.1, §9.4: take the occupant out (kick, ban, membership revoked) and tell everyone,
        or, without ``tell_self``, everyone but the occupant's own resources (its account is deleted)."""
        gone = tuple(occupant.sessions)
        for full in gone:
            room.by_session.pop(full, None)
        room.occupants.pop(occupant.nick, None)
        occupant.sessions.clear()
        self.muc.broadcast_presence(room, occupant, unavailable=True, statuses=(status,) if status else (),
                                    reason=reason, actor=actor, also=gone if tell_self else ())
        await self.emptied(room)

    async def emptied(self, room: Room) -> None:
        """§4.2, §10.1: a temporary room (or one never configured) goes with its last occupant."""
        if room.occupants:
            return
        if room.locked or not room.config.persistent:
            await self.muc.rooms.destroy(room)
        else:
            self.muc.rooms.release(room)


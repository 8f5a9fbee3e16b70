"""XEP-0045 §7.8.2 mediated invitations and declines, and the OMEMO key check on adding members.

An occupant (or a member) invites through the room; in a members-only room that needs the
``allowinvites`` setting or an admin, and makes the invitee a member (§7.8.2 allows it; a private
group is joined by invitation). One invites people: an invitation to a server's address or to a
group of this service is bad-request, and one such invitee refuses the whole message. The room
passes the invitation on with the inviter's bare JID, a XEP-0249
``<x xmlns='jabber:x:conference'/>`` for clients that read only that, and a body, as a normal
message that offline storage keeps for an invitee who is away. Declines go back to the
inviter (§7.8.2); outcasts, and in a members-only room everyone but members (an invitation made
the invitee one), get forbidden instead, or a banned user could still reach the members. Nobody
invites an outcast: only an affiliation change lifts a ban (§9.2), so an admin's invitation of one
is not-allowed (anyone else's forbidden), and the whole message is refused before anyone is made
a member.

OMEMO in a group encrypts every message to every member's devices, so each member must be able
to fetch every other member's device list (PEP nodes ``eu.siacs.conversations.axolotl.devicelist``
and ``urn:xmpp:omemo:2:devices``). Whenever someone becomes a member (by invitation or
affiliation change, §9.3) the new member's list and the others' lists are looked up through the
PEP module; whoever has none, or one whose access model hides it from another member, is named in
a :class:`~schnack.xmpp.payloads.muc.KeyWarnings` for the inviter (in the IQ result of an
affiliation change, in a message from the room after an invitation).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from ....xmpp import ns
from ....xmpp.errors import StanzaError
from ....xmpp.jid import JID
from ....xmpp.payloads.muc import Decline, DirectInvite, Invite, KeyWarnings, MucError, UserX
from ....xmpp.stanza import Stanza
from ....xmpp.xml import element, qname
from ...storage.base import RoomAffiliation
from ..pep import Pep
from ..pep.access import denial
from .room import AFFILIATION_RANK, Occupant, Room

if TYPE_CHECKING:
    from xml.etree.ElementTree import Element

    from . import Muc

DEVICE_NODES = ("eu.siacs.conversations.axolotl.devicelist", "urn:xmpp:omemo:2:devices")
_MESSAGE = qname(ns.CLIENT, "message")
_BODY = qname(ns.CLIENT, "body")


class Invitations:
    """Invitations through a room, and who can read a private group's messages."""

    def __init__(self, muc: Muc) -> None:
        self.muc = muc

    async def handle(self, room: Room, occupant: Occupant | None, x: Element, stanza: Stanza, sender: JID) -> None:
        try:
            user = UserX.from_xml(x)
        except MucError as err:
            raise StanzaError(err.condition, err.text) from None
        rank = AFFILIATION_RANK[room.affiliation(sender.bare)]
        if user.declines:
            if rank < 0 or (room.config.members_only and rank < AFFILIATION_RANK["member"]):
                # Only one who was invited declines: a private group's invitees are its members.
                raise StanzaError("forbidden", "you have no invitation to this group to decline")
            for decline in user.declines:
                if decline.to is not None:
                    self._pass_decline(room, decline.to, sender, decline.reason)
            return
        if not user.invites:
            raise StanzaError("bad-request", "expected an invitation or a decline")
        if occupant is None and rank < AFFILIATION_RANK["member"]:
            raise StanzaError("not-acceptable", "join the group to invite others")
        if room.config.members_only and not room.config.allow_invites and rank < AFFILIATION_RANK["admin"]:
            raise StanzaError("forbidden", "only admins invite to this group")
        invitees: list[JID] = []
        for invite in user.invites:
            if invite.to is None:
                raise StanzaError("bad-request", "an invitation names the invitee in 'to'")
            if invite.to.local is None or invite.to.domain in self.muc.domains:
                # A server or a group made a member would be announced to everyone and counted
                # in the key check, and the group would pass an invitation to itself.
                raise StanzaError("bad-request", f"{invite.to} is not a person's address")
            if room.affiliation(invite.to.bare) == "outcast":
                # §9.2: only an affiliation change lifts a ban; in a private group the invitation
                # would make the banned user a member, and elsewhere it leads to a refused entry.
                if rank < AFFILIATION_RANK["admin"]:
                    raise StanzaError("forbidden", f"{invite.to.bare} is banned from this group")
                raise StanzaError("not-allowed", f"{invite.to.bare} is banned from this group; "
                                                 "lift the ban by changing the affiliation first")
            invitees.append(invite.to)
        problems: dict[JID, str] = {}
        for invite, to in zip(user.invites, invitees, strict=True):
            invitee = to.bare
            if room.config.members_only and AFFILIATION_RANK[room.affiliation(invitee)] < AFFILIATION_RANK["member"]:
                await self.muc.admin.apply_affiliation(room, invitee, "member", None, actor=occupant)
                problems.update(await self.key_problems(room, [invitee]))
            self._pass_invite(room, to, sender, invite.reason)
        if problems:
            note = element(_MESSAGE, {"from": room.text, "to": str(sender), "type": "normal"})
            names = ", ".join(str(jid) for jid in problems)
            note.append(element(_BODY, text=f"These members cannot read encrypted messages yet: {names}"))
            note.append(KeyWarnings(tuple(problems.items())).to_xml())
            self.muc.send_to(sender, note)

    def _pass_invite(self, room: Room, to: JID, inviter: JID, reason: str | None) -> None:
        message = element(_MESSAGE, {"from": room.text, "to": str(to), "type": "normal"})
        message.append(element(_BODY, text=f"{inviter.bare} invites you to the group {room.config.name or room.jid}"))
        message.append(UserX(invites=(Invite(from_=inviter.bare, reason=reason),),
                             password=room.config.password or None).to_xml())
        message.append(DirectInvite(room.jid, room.config.password or None, reason).to_xml())
        self.muc.route_later(message)

    def _pass_decline(self, room: Room, to: JID, invitee: JID, reason: str | None) -> None:
        message = element(_MESSAGE, {"from": room.text, "to": str(to.bare), "type": "normal"})
        message.append(UserX(declines=(Decline(from_=invitee.bare, reason=reason),)).to_xml())
        self.muc.route_later(message)

    async def key_problems(self, room: Room, newcomers: list[JID]) -> dict[JID, str]:
        """Members whose OMEMO device list another member cannot fetch, now that ``newcomers`` are
        members: each newcomer's list as every member sees it, and every member's list as each
        newcomer sees it. Storage is read once per member, whatever the number of newcomers."""
        pep = self.muc.optional(Pep)
        if pep is None or not newcomers:
            return {}
        members = [jid for jid, record in room.affiliations.items()
                   if AFFILIATION_RANK[record.affiliation] >= AFFILIATION_RANK["member"]]
        fresh = set(newcomers)
        problems: dict[JID, str] = {}
        for member in members:
            viewers = members if member in fresh else newcomers
            problem = await self._key_problem(pep, member, [v for v in viewers if v != member])
            if problem is not None:
                problems[member] = problem
        return problems

    async def _key_problem(self, pep: Pep, owner: JID, viewers: list[JID]) -> str | None:
        """``no-keys`` when ``owner`` published no device list, ``hidden-keys`` when each list it
        has is hidden from one of ``viewers`` (XEP-0060 §4.5 access models); None when every viewer
        can fetch one, or when it cannot be told (an account on another server)."""
        hosts = self.muc.server.hosts
        if owner.domain not in hosts:
            return None
        nodes = [node for name in DEVICE_NODES if (node := await pep.store.node(owner, name)) is not None and node.count]
        if not nodes:
            return "no-keys"
        if any(node.config.access_model == "open" for node in nodes):
            return None
        roster = await pep.rosters.items(owner)
        local = [viewer for viewer in viewers if viewer.domain in hosts]
        for node in nodes:
            if all(denial(node.config, roster.get(str(viewer))) is None for viewer in local):
                return None
        return "hidden-keys"


def affiliation_record(jid: JID, affiliation: str, reason: str | None, previous: RoomAffiliation | None) -> RoomAffiliation:
    """The record for a new affiliation, keeping a reserved nick and, while the user stays a member
    or above, when it became one (a promoted member is as long-standing as before, :func:`.admin.heirs`)."""
    if previous is None:
        return RoomAffiliation(str(jid), affiliation, None, reason, time.time())
    member = AFFILIATION_RANK["member"]
    stays = AFFILIATION_RANK[previous.affiliation] >= member and AFFILIATION_RANK[affiliation] >= member
    return RoomAffiliation(str(jid), affiliation, previous.nick, reason, previous.since if stays else time.time())

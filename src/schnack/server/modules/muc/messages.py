"""XEP-0045 §7.4, §7.5, §7.13 and §8.1: messages to a room and to its occupants.

A groupchat message from an occupant with voice goes to every joined resource, from
``room@service/nick``, with the occupant's XEP-0421 id; when it has a body or an end-to-end
encrypted payload it is archived first and carries the archive's stanza-id (unless a XEP-0334
hint keeps it out of the archive, see :mod:`.archive`). The template is
built once and each recipient gets a copy that differs only in 'to', with the children shared:
no per-recipient work beyond that. A message with only a subject changes the subject (§7.3, §8.1):
moderators may, and occupants with voice when the room allows it. Non-occupants get
not-acceptable, visitors in a moderated room forbidden (§7.4). When the server's end-to-end policy
is ``required`` (module e2e), a private group refuses plaintext bodies with policy-violation.

Private messages to ``room@service/nick`` (§7.5) go to every resource of that occupant, marked
with ``<x xmlns='…muc#user'/>``, as the room's ``allowpm`` setting permits; once the room passed
one on, it fires ``muc/private-sent`` (stanza, the full JIDs joined under the sender's nick), from
which message carbons copy it to the sender's other resources in the room (XEP-0280 §6.1); its
handlers return the full JIDs they copied it to. Voice requests (§7.13) go to the moderators, and
a moderator's approval gives the occupant voice.

An error message from an occupant's resource means it no longer takes what the room sends it, and
removes the occupant (status 333, §18.1.2), unless it answers a private message: then it is the
recipient's (or its server's) answer to the sender, a blocked sender (XEP-0191) for instance, and
goes back to the sender from the recipient's occupant JID. The room remembers the latest
``PRIVATE_REMEMBERED`` private messages it passed on, to tell the two apart, with the resources
that got a carbon copy of each; passing such an error back, it fires ``muc/private-bounced``
(the error, those resources), so that they learn that the message failed (XEP-0280 §6.1) wherever
its sender is connected: in a cluster the room's node may not be the sender's.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

from ....xmpp import ns
from ....xmpp.errors import StanzaError
from ....xmpp.jid import JID
from ....xmpp.payloads.dataforms import DataForm, DataFormError, Field
from ....xmpp.payloads.muc import JOIN, REQUEST, USER_X, OccupantId
from ....xmpp.payloads.sid import STANZA_ID, StanzaId
from ....xmpp.stanza import Stanza
from ....xmpp.xml import element, qname
from ..e2e import ENCRYPTED, EndToEndPolicy
from ..message import message_type
from .room import ROLE_RANK, Occupant, Room, addressed, own_children

if TYPE_CHECKING:
    from xml.etree.ElementTree import Element

    from . import Muc

# What the room speaks for itself and a client cannot bring: MUC elements and stanza-ids (the
# room assigns those; XEP-0359 §4 Business Rule 3).
_DROP = frozenset({JOIN, USER_X, STANZA_ID})
_MESSAGE = qname(ns.CLIENT, "message")
_BODY = qname(ns.CLIENT, "body")
_SUBJECT = qname(ns.CLIENT, "subject")
_FORM = qname(ns.DATA_FORMS, "x")
PRIVATE_REMEMBERED = 500
# Fired with (stanza, sharing) once a room passed on a private message (§7.5): ``sharing`` are the
# sender's resources joined under its nick, which message carbons copy it to (XEP-0280 §6.1).
PRIVATE_SENT = "muc/private-sent"
# Fired with (error, copied) once a room passed back to its sender an error answering a private
# message (§7.5): ``copied`` are the full JIDs that the handlers of PRIVATE_SENT copied it to.
PRIVATE_BOUNCED = "muc/private-bounced"
REFUSAL = (
    "This server requires end-to-end encryption in private groups: your message was not delivered. "
    "Enable OMEMO encryption for this group in your client, then send it again."
)


class Messages:
    """Messages to rooms and occupants."""

    def __init__(self, muc: Muc) -> None:
        self.muc = muc
        e2e = muc.optional(EndToEndPolicy)
        self._encryption_required = e2e is not None and e2e.options.policy == "required"
        self._ids = itertools.count()

    async def handle(self, stanza: Stanza, to: JID, sender: JID) -> None:
        kind = message_type(stanza)
        room = await self.muc.rooms.get(to.bare)
        if room is None or room.destroyed:
            if kind == "error":
                return
            raise StanzaError("item-not-found", "there is no such group")
        occupant = room.by_session.get(sender)
        if kind == "error":
            await self.bounced(room, occupant, stanza, sender)
            return
        if to.resource is not None:
            if kind == "groupchat":
                raise StanzaError("bad-request", "send groupchat messages to the group, private ones to a nickname")
            await self.private(room, occupant, to.resource, stanza, sender)
        elif kind == "groupchat":
            await self.groupchat(room, occupant, stanza)
        elif (x := stanza.el.find(USER_X)) is not None:
            await self.muc.invitations.handle(room, occupant, x, stanza, sender)
        elif (form := stanza.el.find(_FORM)) is not None:
            await self.voice_request(room, occupant, form)
        else:
            raise StanzaError("bad-request", "send groupchat messages to a group")

    async def bounced(self, room: Room, occupant: Occupant | None, stanza: Stanza, sender: JID) -> None:
        """§7.5: an error answering a private message goes back to its sender; §18.1.2: any other
        error from an occupant's resource removes it (status 333)."""
        passed_on = room.private_sent.pop((sender, stanza.id or ""), None)
        if passed_on is not None:
            asker, asker_id, recipient, copied = passed_on
            error = element(_MESSAGE, {"from": recipient, "to": str(asker), "type": "error", "id": asker_id},
                            children=list(stanza.el))
            self.muc.send_to(asker, error)
            if copied:
                await self.muc.server.hooks.fire_all(PRIVATE_BOUNCED, Stanza(error, asker, JID.parse(recipient)), copied)
        elif occupant is not None:
            await self.muc.presence.leave(room, sender, error=True)

    async def groupchat(self, room: Room, occupant: Occupant | None, stanza: Stanza) -> None:
        """§7.4: archive, stamp and fan out; §7.3, §8.1: a subject change."""
        if occupant is None:
            raise StanzaError("not-acceptable", "join the group to send it messages")
        if ROLE_RANK[occupant.role] < ROLE_RANK["participant"]:
            raise StanzaError("forbidden", "you have no voice in this group")
        children = own_children(stanza.el, _DROP)
        template = element(_MESSAGE, {"from": room.occupant_jid(occupant.nick), "type": "groupchat", "id": stanza.id},
                           children=children)
        template.append(OccupantId(occupant.occupant_id).to_xml())
        tags = {child.tag for child in children}
        self.check_encrypted(room, tags)
        content = _BODY in tags or not ENCRYPTED.isdisjoint(tags)
        if _SUBJECT in tags and not content:
            if occupant.role != "moderator" and not room.config.change_subject:
                raise StanzaError("forbidden", "only moderators change the subject of this group")
            subject = stanza.el.find(_SUBJECT)
            assert subject is not None
            room.state.subject = subject.text or ""
            room.state.subject_by = occupant.nick
            room.state.subject_by_id = occupant.occupant_id
            if room.stored:
                await self.muc.rooms.save(room)
        elif content:
            if await self.muc.archive.stored_before(room, template, occupant.jid):
                return  # a copy sent again (XEP-0359): stored and sent out the first time
            archive_id = await self.muc.archive.store(room, template, occupant.jid)
            if archive_id is not None:
                template.append(StanzaId(archive_id, room.text).to_xml())
        self.muc.broadcast(room, template)

    def check_encrypted(self, room: Room, tags: set[str]) -> None:
        """The server's end-to-end policy (module e2e) for groups: with ``required``, a private
        group (members-only and non-anonymous, where OMEMO works) refuses a body that comes
        without an encrypted payload; public channels, which OMEMO cannot serve, are exempt."""
        if not self._encryption_required or not (room.config.members_only and room.config.non_anonymous):
            return
        if _BODY in tags and ENCRYPTED.isdisjoint(tags):
            raise StanzaError("policy-violation", REFUSAL)

    async def private(self, room: Room, occupant: Occupant | None, nick: str, stanza: Stanza, sender: JID) -> None:
        """§7.5: a private message to one occupant, as the room's ``allowpm`` permits."""
        if occupant is None:
            raise StanzaError("not-acceptable", "join the group to send private messages in it")
        target = room.occupants.get(nick)
        if target is None:
            raise StanzaError("item-not-found", "nobody by that nickname is in the group")
        policy = room.config.allow_pm
        rank = ROLE_RANK[occupant.role]
        if (policy == "none" or (policy == "moderators" and occupant.role != "moderator")
                or (policy == "participants" and rank < ROLE_RANK["participant"])):
            raise StanzaError("forbidden", "private messages are not allowed in this group")
        children = own_children(stanza.el, _DROP)
        self.check_encrypted(room, {child.tag for child in children})
        # Without an id of its own, an error answering the message could not be told from one
        # answering the room's traffic (see bounced).
        message_id = stanza.id or f"muc-pm-{next(self._ids)}"
        template = element(_MESSAGE, {"from": room.occupant_jid(occupant.nick), "type": stanza.type, "id": message_id},
                           children=children)
        template.append(element(USER_X))
        template.append(OccupantId(occupant.occupant_id).to_xml())
        # Routed like any message to the occupant's real JID, not handed to its sessions: the
        # recipient's archive keeps it (XEP-0313 user archive) and, its session gone, offline storage.
        hooks = self.muc.server.hooks
        copied: frozenset[JID] = frozenset()
        if hooks.has(PRIVATE_SENT):
            copies = await hooks.fire_all(PRIVATE_SENT, stanza, frozenset(occupant.sessions))
            copied = copied.union(*(each for each in copies if each))
        for full in target.sessions:
            room.private_sent[(full, message_id)] = (sender, stanza.id, room.occupant_jid(target.nick), copied)
            room.private_sent.move_to_end((full, message_id))
            self.muc.route_later(addressed(template, str(full)))
        while len(room.private_sent) > PRIVATE_REMEMBERED:
            room.private_sent.popitem(last=False)

    async def voice_request(self, room: Room, occupant: Occupant | None, x: Element) -> None:
        """§7.13: a visitor asks for voice; §8.6: a moderator approves a request."""
        try:
            form = DataForm.from_xml(x)
        except DataFormError as err:
            raise StanzaError("bad-request", str(err)) from None
        if form.form_type != REQUEST:
            raise StanzaError("bad-request", f"expected a {REQUEST} form")
        if occupant is None:
            raise StanzaError("not-acceptable", "join the group first")
        approval = form.value("muc#request_allow")
        if approval is not None and occupant.role == "moderator":
            target = room.occupants.get(form.value("muc#roomnick") or "")
            if approval.strip().lower() in ("1", "true") and target is not None and target.role == "visitor":
                await self.muc.admin.change_role(room, target, "participant", actor=occupant, reason=None)
            return
        if occupant.role != "visitor":
            return
        request = DataForm("form", (
            Field("FORM_TYPE", "hidden", values=(REQUEST,)),
            Field("muc#role", "list-single", "Requested role", ("participant",)),
            Field("muc#jid", "jid-single", "User ID", (str(occupant.latest),)),
            Field("muc#roomnick", "text-single", "Room Nickname", (occupant.nick,)),
            Field("muc#request_allow", "boolean", "Grant voice to this person?", ("false",)),
        ), title="Voice request")  # fmt: skip
        template = element(_MESSAGE, {"from": room.text}, children=[request.to_xml()])
        for full, viewer in room.by_session.items():
            if viewer.role == "moderator":
                self.muc.send_to(full, addressed(template, str(full)))

"""XEP-0045 §8 and §9: moderators change roles, admins and owners change affiliations.

Roles (§8): a moderator kicks (role none, status 307), gives and takes voice; only admins and
owners make or unmake moderators. Nobody changes the role of an admin or owner (not-allowed).
A request may carry several items, each about a different user: one that names a user twice (by
nick or by JID, for a role or an affiliation) is bad-request and changes nothing.
Affiliations (§9, §10.3 to §10.7): admins ban, make members and remove them, for users below admin;
owners change any affiliation but never leave the room without an owner (conflict); when the last
owner's account is deleted, its admins (or else its longest-standing member) become owners
(:func:`heirs`), and the account's occupants leave with status 321, their own sessions told nothing
(they end with the account). A member (or anyone below admin) changing someone's affiliation gets
forbidden; giving up one's own affiliation (to none) is allowed to members, admins and owners (the
last owner excepted), so that leaving a private group ends the membership and the others stop
encrypting to the one who left. An outcast has no affiliation to give up: lifting one's own ban is
forbidden like any change to the outcast list by someone below admin (§9.1, §9.2). A change takes
effect at once: a banned occupant is removed with status 301, one who is no longer a member of a
members-only room with 321, the others get their new role; occupants of a non-anonymous room hear
of changes to users not in the room by a message from the room (§9.3, what OMEMO clients follow to
keep their member list). Making someone a member returns the OMEMO key check (:mod:`.invitations`).

Lists (§8.5, §9.5, §10.5): admins and owners read every affiliation list; in a non-anonymous room
members read the member, admin and owner lists too, since their clients encrypt to everyone on
them; moderators read the role lists.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from ....xmpp import ns
from ....xmpp.errors import StanzaError
from ....xmpp.jid import JID
from ....xmpp.payloads.muc import AdminQuery, Item, KeyWarnings, MucError, UserX
from ....xmpp.stanza import Stanza
from ....xmpp.xml import element, qname
from .invitations import affiliation_record
from .room import AFFILIATION_CHANGED, AFFILIATION_RANK, BANNED, KICKED, Occupant, Room

if TYPE_CHECKING:
    from xml.etree.ElementTree import Element

    from . import Muc

_ADMIN, _MEMBER = AFFILIATION_RANK["admin"], AFFILIATION_RANK["member"]


def keep_an_owner(room: Room, changes: Iterable[tuple[JID, str]]) -> None:
    """§10.6, §10.7: refuse (conflict) affiliation changes, applied in order, that would leave the
    room without an owner; nobody could configure or destroy it any more."""
    owners = set(room.owners())
    for jid, affiliation in changes:
        if affiliation == "owner":
            owners.add(jid)
        else:
            owners.discard(jid)
    if not owners:
        raise StanzaError("conflict", "a group needs at least one owner")


def heirs(room: Room, gone: JID) -> list[JID]:
    """Who becomes owner when ``gone``, the room's last owner, loses its affiliation without
    choosing a successor (its account was deleted): every admin (§10.6 lets admins do what they
    could not before), else the longest-standing member, as messengers hand a group on, else
    nobody. A member stored before storage kept when it became one counts as older than any
    other; between those, and between members of the same moment, the bare JID decides."""
    others = {jid: record for jid, record in room.affiliations.items() if jid != gone}
    if room.affiliation(gone) != "owner" or any(record.affiliation == "owner" for record in others.values()):
        return []
    admins = sorted((jid for jid, record in others.items() if record.affiliation == "admin"), key=str)
    if admins:
        return admins
    members = [(record.since is not None, record.since or 0.0, str(jid), jid)
               for jid, record in others.items() if record.affiliation == "member"]
    return [min(members)[3]] if members else []


class Admin:
    """The ``muc#admin`` requests."""

    def __init__(self, muc: Muc) -> None:
        self.muc = muc

    @staticmethod
    def _query(stanza: Stanza) -> AdminQuery:
        assert stanza.payload is not None
        try:
            return AdminQuery.from_xml(stanza.payload)
        except MucError as err:
            raise StanzaError(err.condition, err.text) from None

    async def get(self, stanza: Stanza, room: Room, sender: JID) -> Element:
        """§8.5, §9.5, §10.5: the occupants with a role, or the users with an affiliation."""
        item = self._query(stanza).items[0]
        rank = AFFILIATION_RANK[room.affiliation(sender.bare)]
        if item.affiliation is not None:
            readable = rank >= _ADMIN or (
                rank >= _MEMBER and room.config.non_anonymous and item.affiliation in ("member", "admin", "owner"))
            if not readable:
                raise StanzaError("forbidden", "you may not see that list")
            items = [Item(affiliation=record.affiliation, jid=jid, nick=record.nick, reason=record.reason)
                     for jid, record in sorted(room.affiliations.items(), key=lambda entry: str(entry[0]))
                     if record.affiliation == item.affiliation]
        elif item.role is not None:
            viewer = room.by_session.get(sender)
            if viewer is None or viewer.role != "moderator":
                raise StanzaError("forbidden", "only moderators see the role lists")
            items = [Item(affiliation=room.affiliation(o.jid), role=o.role, nick=o.nick, jid=o.latest)
                     for o in room.occupants.values() if o.role == item.role]
        else:
            raise StanzaError("bad-request", "ask for a role or an affiliation")
        return stanza.result(AdminQuery(tuple(items)).to_xml())

    async def set(self, stanza: Stanza, room: Room, sender: JID) -> Element:
        """§8.2 to §8.4, §8.6 role changes and §9.1 to §9.4, §10.3 to §10.7 affiliation changes, checked
        all before any is applied; one request changes each user once (bad-request otherwise)."""
        query = self._query(stanza)
        actor = room.by_session.get(sender)
        rank = AFFILIATION_RANK[room.affiliation(sender.bare)]
        plan: list[tuple[Occupant | JID, str, str | None]] = []
        for item in query.items:
            if item.affiliation is not None:
                target = self._affiliation_target(room, item)
                self._check_affiliation(room, rank, target, item.affiliation, sender.bare)
                plan.append((target, item.affiliation, item.reason))
            elif item.role is not None:
                occupant = self._role_target(room, item)
                self._check_role(room, actor, rank, occupant, item.role)
                plan.append((occupant, item.role, item.reason))
            else:
                raise StanzaError("bad-request", "each item names a role or an affiliation")
        users = [changed.jid if isinstance(changed, Occupant) else changed for changed, _, _ in plan]
        if len(set(users)) < len(users):
            # Each item is checked against the room as it is, but applied after the ones before
            # it: a second item about the same user would act on an occupant already kicked,
            # banned or promoted. Refusing the request tells the client plainly; carrying out
            # part of it would leave it guessing what happened.
            raise StanzaError("bad-request", "name each user once in a request")
        keep_an_owner(room, [(changed, value) for changed, value, _ in plan if isinstance(changed, JID)])
        newcomers: list[JID] = []
        for subject, value, reason in plan:
            if isinstance(subject, Occupant):
                if value == "none":
                    await self.muc.presence.remove(room, subject, KICKED, reason=reason,
                                                   actor=actor.nick if actor else None)
                else:
                    await self.change_role(room, subject, value, actor=actor, reason=reason)
            elif await self._affiliate(room, subject, value, reason, actor=actor):
                newcomers.append(subject)
        problems = await self.muc.invitations.key_problems(room, newcomers)
        return stanza.result(KeyWarnings(tuple(problems.items())).to_xml() if problems else None)

    async def by_operator(self, room: Room, jid: JID, affiliation: str, reason: str | None) -> dict[JID, str]:
        """The server's operator (``schnack admin room set-affiliation``) changes ``jid``'s
        affiliation as an owner's request would (§9.1 to §9.4, §10.3 to §10.7), §10.6's rule that
        the room keeps an owner included: the OMEMO key problems of a new member are returned."""
        keep_an_owner(room, [(jid, affiliation)])
        newcomer = await self._affiliate(room, jid, affiliation, reason, actor=None)
        return await self.muc.invitations.key_problems(room, [jid] if newcomer else [])

    async def _affiliate(self, room: Room, jid: JID, affiliation: str, reason: str | None, *,
                         actor: Occupant | None) -> bool:
        """Apply one affiliation change; whether it made ``jid`` a member who was none before."""
        before = AFFILIATION_RANK[room.affiliation(jid)]
        await self.apply_affiliation(room, jid, affiliation, reason, actor=actor)
        return before < _MEMBER <= AFFILIATION_RANK[affiliation]

    def _affiliation_target(self, room: Room, item: Item) -> JID:
        if item.jid is not None:
            return item.jid.bare
        if item.nick is not None:
            occupant = room.occupants.get(item.nick)
            if occupant is None:
                raise StanzaError("item-not-found", "nobody by that nickname is in the group")
            return occupant.jid
        raise StanzaError("bad-request", "an affiliation change names a jid or a nick")

    def _role_target(self, room: Room, item: Item) -> Occupant:
        if item.nick is None:
            raise StanzaError("bad-request", "a role change names the occupant's nick")
        occupant = room.occupants.get(item.nick)
        if occupant is None:
            raise StanzaError("item-not-found", "nobody by that nickname is in the group")
        return occupant

    @staticmethod
    def _check_affiliation(room: Room, rank: int, target: JID, affiliation: str, sender: JID) -> None:
        """§9 and §10: admins manage users below admin; owners everything; members, admins and
        owners give up their own. §9.1, §9.2: the outcast list is the admins' and owners' alone, so
        a banned user setting its own affiliation to none is refused like any other change."""
        if target == sender and affiliation == "none" and rank >= _MEMBER:
            return
        if rank < _ADMIN:
            raise StanzaError("forbidden", "only admins and owners change affiliations")
        if rank == _ADMIN and (AFFILIATION_RANK[room.affiliation(target)] >= _ADMIN or AFFILIATION_RANK[affiliation] >= _ADMIN):
            raise StanzaError("not-allowed", "only owners change the affiliation of admins and owners")

    @staticmethod
    def _check_role(room: Room, actor: Occupant | None, rank: int, target: Occupant, role: str) -> None:
        """§8: moderators manage participants and visitors; admins and owners grant moderator."""
        if actor is None or actor.role != "moderator":
            raise StanzaError("forbidden", "only moderators change roles")
        target_rank = AFFILIATION_RANK[room.affiliation(target.jid)]
        if target_rank >= _ADMIN and role != "moderator":
            raise StanzaError("not-allowed", "admins and owners cannot be kicked or silenced")
        if (role == "moderator" or target.role == "moderator") and rank < _ADMIN:
            raise StanzaError("not-allowed", "only admins and owners make or unmake moderators")

    async def change_role(self, room: Room, occupant: Occupant, role: str, *, actor: Occupant | None,
                          reason: str | None) -> None:
        """§8.3, §8.4, §8.6: the occupant's new role, announced to everyone."""
        occupant.role = role
        self.muc.broadcast_presence(room, occupant, reason=reason, actor=actor.nick if actor else None)

    async def account_gone(self, room: Room, jid: JID) -> None:
        """XEP-0077 §3.2: ``jid``'s account was deleted, and its affiliation goes with it. The last
        owner's room passes to its :func:`heirs`, stored first so that someone can always
        configure or destroy it (§10.6, §10.9). The account's occupants leave as members removed
        do (§9.4: status 321), in any room, and before the new owners are announced: their own
        sessions, which end with the account, are told nothing, neither of their removal nor of
        who took over. The others hear of both changes as of any other (§9, §10.6)."""
        successors = heirs(room, jid)
        for heir in successors:
            await self._store_affiliation(room, heir, "owner", "the owner's account was deleted")
        reason = "the account was deleted"
        await self._store_affiliation(room, jid, "none", reason)
        present = [o for o in room.occupants.values() if o.jid == jid]
        for occupant in present:
            await self.muc.presence.remove(room, occupant, AFFILIATION_CHANGED, reason=reason, tell_self=False)
        if not present:
            self._note(room, jid, "none", reason)
        for heir in successors:
            await self._announce_affiliation(room, heir, "owner", "the owner's account was deleted", actor=None)

    async def apply_affiliation(self, room: Room, jid: JID, affiliation: str, reason: str | None, *,
                                actor: Occupant | None) -> None:
        """Store the change and apply it to whoever of ``jid`` is in the room (§9.1 to §9.4)."""
        await self._store_affiliation(room, jid, affiliation, reason)
        await self._announce_affiliation(room, jid, affiliation, reason, actor=actor)

    async def _store_affiliation(self, room: Room, jid: JID, affiliation: str, reason: str | None) -> None:
        record = affiliation_record(jid, affiliation, reason, room.affiliations.get(jid))
        await self.muc.rooms.set_affiliation(room, jid, record)

    async def _announce_affiliation(self, room: Room, jid: JID, affiliation: str, reason: str | None, *,
                                    actor: Occupant | None) -> None:
        """§9.1 to §9.4: apply the stored change to whoever of ``jid`` is in the room."""
        present = [o for o in room.occupants.values() if o.jid == jid]
        actor_nick = actor.nick if actor else None
        for occupant in present:
            if affiliation == "outcast":
                await self.muc.presence.remove(room, occupant, BANNED, reason=reason, actor=actor_nick)
            elif room.config.members_only and AFFILIATION_RANK[affiliation] < _MEMBER:
                await self.muc.presence.remove(room, occupant, AFFILIATION_CHANGED, reason=reason, actor=actor_nick)
            else:
                occupant.role = room.default_role(affiliation)
                self.muc.broadcast_presence(room, occupant, reason=reason, actor=actor_nick)
        if not present:
            self._note(room, jid, affiliation, reason)

    def _note(self, room: Room, jid: JID, affiliation: str, reason: str | None) -> None:
        """§9.3: the occupants of a non-anonymous room hear of a change to a user not in it."""
        if room.config.non_anonymous:
            note = element(qname(ns.CLIENT, "message"), {"from": room.text})
            note.append(UserX(items=(Item(affiliation=affiliation, jid=jid, reason=reason),)).to_xml())
            self.muc.broadcast(room, note)


"""XEP-0045: Multi-User Chat (1.35), the group chat service, with private encrypted groups by default.

The service answers at ``groups.<domain>`` (option ``subdomain``) for each domain of the server
and lists itself in the domain's disco#items with the identity conference/text. Rooms are
created by joining them (§10.1) and stay locked until the owner submits or accepts the
configuration form; a new room starts as a *private group*: members-only, non-anonymous,
persistent, hidden, members may invite (what OMEMO in a group needs). An owner makes a public
channel through ``muc#roomconfig``. The parts, one file each:

- :mod:`.room`: room state, affiliations and roles; :mod:`.roomconfig`: the forms and features;
  :mod:`.store`: rooms in memory and in storage (tables ``muc_rooms``, ``muc_affiliations``).
- :mod:`.presence`: entering, nick changes, status changes, leaving (§7.1 to §7.6, §7.14), history
  on entering (§7.2.13, §7.2.14), rate limits (:mod:`.limits`).
- :mod:`.messages`: groupchat fan-out, subject (§7.3, §8.1), private messages (§7.5), voice
  requests (§7.13); :mod:`.invitations`: mediated invitations (§7.8) with the OMEMO check.
- :mod:`.admin`: roles and affiliations (§8, §9); :mod:`.owner`: configuration and destruction (§10).
- :mod:`.archive`: the room's archive (XEP-0313 for MUC) and its stanza-ids (XEP-0359).
- :mod:`.moderation`: retraction by moderators (XEP-0425); :mod:`.selfping`: XEP-0410;
  :mod:`.forwarding`: IQs between occupants (§17.4);
  :mod:`.disco`: disco#info and #items of the service and the rooms, and room avatars (vCard).
- :mod:`.operator`: the server's operators manage rooms (``schnack admin room``).

Every stanza for a room is handled under that room's lock, so a room's archive and what its
occupants see keep one order. Occupants are the resources of this server's users; a session
that ends leaves every room it was in (the presence module sends the unavailable presence).
In a cluster, each room lives on one node and the others forward its stanzas there; occupants
connected to other nodes get what the room sends over the bus (``server/cluster/groups.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar
from xml.etree.ElementTree import Element

from ....xmpp.errors import StanzaError
from ....xmpp.jid import JID, JIDError
from ....xmpp.payloads.disco import INFO, ITEMS
from ....xmpp.payloads.mam import QUERY
from ....xmpp.payloads.muc import ADMIN_QUERY, JOIN, MODERATE, OWNER_QUERY
from ....xmpp.stanza import Stanza
from ....xmpp.xml import element, qname
from ...background import Background
from ...cluster.bus import ACCOUNTS
from ...config import ConfigError, bounded
from ...hooks import HANDLED, Handled
from ...locks import AccountLocks
from ...module import IqHandler, Module
from .admin import Admin
from .archive import Archive
from .disco import Disco
from .forwarding import Forwarding
from .invitations import Invitations
from .limits import Limits
from .messages import Messages
from .moderation import Moderation
from .operator import Operator
from .owner import Owner
from .presence import Presences
from .room import SELF, Occupant, Room, addressed, occupant_presence
from .selfping import SelfPing
from .store import Rooms

if TYPE_CHECKING:
    from ...sessions import Session

log = logging.getLogger(__name__)

PING = qname("urn:xmpp:ping", "ping")
T = TypeVar("T")
RoomIqHandler = Callable[[Stanza, Room, JID], Awaitable[Element]]
VCARD = qname("vcard-temp", "vCard")


@dataclass(frozen=True)
class MucOptions:
    """The group chat service's address and limits."""

    subdomain: str = bounded("groups", help="the service answers at <subdomain>.<domain>")
    name: str = bounded("Groups", help="the service's name in disco")
    max_occupants: int = bounded(2048, min=2, max=100_000, help="most occupants of a room")
    history_default: int = bounded(20, min=0, max=1000, help="messages sent on entering when the client asks for none")
    history_max: int = bounded(200, min=0, max=10_000, help="most messages sent on entering")
    max_page_size: int = bounded(250, min=1, max=10_000, help="most messages one archive query returns")
    presence_per_second: float = bounded(1.0, min=0.01, help="sustained presence rate per resource per room")
    presence_burst: int = bounded(20, min=1, help="presence a resource may send at once to one room")
    joins_per_second: float = bounded(20.0, min=0.1, help="sustained rate of entering one room")
    joins_burst: int = bounded(1100, min=1, help="entries into one room at once")
    max_vcard_size: int = bounded(256 * 1024, min=1024, max=16 * 1024 * 1024, help="bytes of a room's vCard")
    max_owned_rooms: int = bounded(100, min=1, max=100_000, help="rooms one user may own; creating more is refused")


class Muc(Module[MucOptions]):
    """The group chat service (XEP-0045) on a subdomain of each of the server's domains."""

    name = "muc"
    Options = MucOptions

    def setup(self) -> None:
        self.domains: dict[str, str] = {}
        for host in self.server.config.domains:
            try:
                service = JID.parse(f"{self.options.subdomain}.{host}")
            except JIDError as err:
                raise ConfigError("modules.muc.subdomain", f"{self.options.subdomain!r} makes no domain: {err}") from None
            if service.local is not None or service.resource is not None:
                raise ConfigError("modules.muc.subdomain", f"{self.options.subdomain!r} is not a domain label")
            self.domains[service.domain] = host
        self.rooms = Rooms(self.server)
        self._outbox: list[Element] = []
        # This node's own: a room lives on one node (cluster/groups.py), which alone changes it.
        self.locks = AccountLocks()
        self.limits = Limits(self.options)
        self.presence = Presences(self)
        self.messages = Messages(self)
        self.invitations = Invitations(self)
        self.admin = Admin(self)
        self.owner = Owner(self)
        self.archive = Archive(self)
        self.moderation = Moderation(self)
        self.selfping = SelfPing(self)
        self.disco = Disco(self)
        self.forwarding = Forwarding(self)
        self.operator = Operator(self)
        iqs: tuple[tuple[str, IqHandler | None, IqHandler | None], ...] = (
            (INFO, self.disco.info, None),
            (ITEMS, self.disco.items, None),
            (ADMIN_QUERY, self._in_room(self.admin.get), self._in_room(self.admin.set)),
            (OWNER_QUERY, self._in_room(self.owner.get), self._in_room(self.owner.set)),
            (QUERY, self._in_room(self.archive.form), self._in_room(self.archive.query)),
            (MODERATE, None, self._in_room(self.moderation.moderate)),
            (VCARD, self._in_room(self.disco.get_vcard, occupants=True),
             self._in_room(self.disco.set_vcard, occupants=True)),
            (PING, self.selfping.ping, None),
        )
        for domain in self.domains:
            self.service(domain)
            self.route(f"presence/service/{domain}", self.on_presence)
            self.route(f"message/service/{domain}", self.on_message)
            for tag, get, set_ in iqs:
                self.iq(f"service/{domain}", tag, get=get, set=set_)
            self.route(f"iq/service/{domain}", self.forwarding.handle)
        self.hook("disco-items/host", self.disco.host_items)
        self.hook("user-deleted", self.forget)
        self.hook("admin/rooms", self.operator.handle)
        self._tasks = Background(log, "a deleted account's affiliations in the groups here were not dropped")
        self.server.cluster.bus.on_changed(self._deleted_elsewhere)
        self.server.cluster.bus.on_resubscribed(self._deletions_missed)

    # --- entry points ----------------------------------------------------------------------------

    async def on_presence(self, stanza: Stanza, _origin: Session | None) -> Handled:
        """Presence to a room (entering, changes, leaving); presence to the service is ignored."""
        to, sender = stanza.to, stanza.from_
        if to is None or sender is None or to.local is None:
            return HANDLED
        try:
            async with self.locks.hold(to.bare):
                await self.presence.handle(stanza, to, sender)
            await self.flush()
        except StanzaError as err:
            # §7.2.6 and on: the error presence carries the MUC element, which is how clients
            # tell a refused entry from other errors.
            reply = stanza.error(err)
            reply.append(element(JOIN))
            self.send_to(sender, reply)
        return HANDLED

    async def on_message(self, stanza: Stanza, _origin: Session | None) -> Handled:
        """Messages to a room or an occupant."""
        to, sender = stanza.to, stanza.from_
        if to is None or sender is None:
            return HANDLED
        if to.local is None:
            if stanza.type == "error":
                return HANDLED
            raise StanzaError("service-unavailable", "send messages to a group, not to the service")
        try:
            async with self.locks.hold(to.bare):
                try:
                    await self.messages.handle(stanza, to, sender)
                finally:
                    self._let_go(to.bare)
        finally:
            await self.flush()
        return HANDLED

    def _let_go(self, jid: JID) -> None:
        """A request to a stored room nobody is in loaded it: it leaves memory again, else every
        room ever asked about (a client's bookmarks, a look at a room's info) would stay there."""
        room = self.rooms.live.get(jid)
        if room is not None:
            self.rooms.release(room)

    def _in_room(self, handler: RoomIqHandler, *, occupants: bool = False) -> IqHandler:
        """An IQ handler for requests to an existing room's bare JID, run under the room's lock;
        with ``occupants``, requests to an occupant JID go on to be passed to the occupant."""

        async def run(stanza: Stanza, _origin: Session | None) -> Element | None:
            to, sender = stanza.to, stanza.from_
            assert to is not None
            if occupants and to.resource is not None:
                return None
            if sender is None or to.local is None or to.resource is not None:
                raise StanzaError("bad-request", "send this to the group's address")
            try:
                async with self.locks.hold(to.bare):
                    room = await self.rooms.get(to.bare)
                    if room is None or room.destroyed:
                        raise StanzaError("item-not-found", "there is no such group")
                    try:
                        return await handler(stanza, room, sender)
                    finally:
                        self._let_go(to.bare)
            finally:
                await self.flush()

        return run

    async def forget(self, host: str, username: str) -> None:
        """A deleted account loses its affiliations with every room, each changed as the room's
        own (:meth:`Admin.account_gone`): a room it was the last owner of passes on."""
        jid = JID(username, host)
        stored = await self.server.storage.muc.rooms_of(str(jid))
        rooms = {JID(name, service) for service, name, _ in stored}
        rooms.update(room.jid for room in self.rooms.live.values() if jid in room.affiliations)
        for room_jid in sorted(rooms, key=str):
            await self._account_gone(room_jid, jid)
        # A room destroyed meanwhile took its affiliations with it; nothing of the account stays.
        await self.server.storage.muc.forget_jid(str(jid))

    def _deleted_elsewhere(self, store: str, account: str) -> None:
        """Another node of the cluster deleted ``account`` and changed the stored rooms: those that
        live here (their occupants, their affiliations in memory) change as the room's own too."""
        if store != ACCOUNTS:
            return
        jid = JID.parse(account)
        rooms = [room.jid for room in self.rooms.live.values() if jid in room.affiliations]
        if rooms:
            self._tasks.spawn(self._gone_elsewhere(jid, rooms))

    async def _gone_elsewhere(self, jid: JID, rooms: list[JID]) -> None:
        assert jid.local is not None
        # News that comes late must not take the affiliations of a new account of that name.
        if await self.server.storage.accounts.get(jid.domain, jid.local) is not None:
            return
        for room_jid in rooms:
            await self._account_gone(room_jid, jid)

    def _deletions_missed(self) -> None:
        """The subscription to the bus broke, and the news of a deletion (:meth:`_deleted_elsewhere`)
        may have been lost with it: every room held here looks again for accounts deleted meanwhile."""
        rooms = list(self.rooms.live)
        if rooms:
            self._tasks.spawn(self._recheck(rooms))

    async def _recheck(self, rooms: list[JID]) -> None:
        exists: dict[JID, bool] = {}
        for room_jid in rooms:
            if room_jid in self.rooms.live:
                await self.with_room(room_jid, lambda room: self._drop_deleted(room, exists))

    async def _drop_deleted(self, room: Room, exists: dict[JID, bool]) -> None:
        """Change ``room`` as the room's own for each account deleted on another node: one it keeps
        affiliated that storage does not (that node dropped the affiliations there, :meth:`forget`),
        and one of this server's accounts that is in the room but no longer exists. ``exists``
        keeps the accounts looked up, for the next room."""
        assert room.jid.local is not None
        gone: set[JID] = set()
        if room.stored:
            stored = await self.server.storage.muc.affiliations(room.jid.domain, room.jid.local)
            gone.update(jid for jid in room.affiliations if str(jid) not in stored)
        for jid in {occupant.jid for occupant in room.occupants.values()} - gone:
            if jid.local is None or jid.domain not in self.server.hosts:
                continue
            if jid not in exists:
                exists[jid] = await self.server.storage.accounts.get(jid.domain, jid.local) is not None
            if not exists[jid]:
                gone.add(jid)
        for jid in sorted(gone, key=str):
            await self.admin.account_gone(room, jid)

    async def _account_gone(self, room_jid: JID, jid: JID) -> None:
        async def gone(room: Room) -> None:
            if jid in room.affiliations:
                await self.admin.account_gone(room, jid)

        await self.with_room(room_jid, gone)

    async def with_room(self, room_jid: JID, action: Callable[[Room], Awaitable[T]]) -> T | None:
        """Run ``action`` on the room ``room_jid`` under its lock, as a stanza to the room is
        handled; None, without running it, when there is no such room."""
        try:
            async with self.locks.hold(room_jid):
                room = await self.rooms.get(room_jid)
                try:
                    if room is None or room.destroyed:
                        return None
                    return await action(room)
                finally:
                    self._let_go(room_jid)
        finally:
            await self.flush()

    # --- sending ---------------------------------------------------------------------------------

    def route_later(self, el: Element) -> None:
        """Route ``el`` (to a user: an invitation, a decline) once the room's lock is released: an
        error it earns comes back to the room, which must not wait for itself."""
        self._outbox.append(el)

    async def flush(self) -> None:
        while self._outbox:
            await self.server.router.send(self._outbox.pop(0))

    def send_to(self, to: JID, el: Element) -> None:
        """Send ``el`` (addressed already) to the resource ``to`` if it is connected, here or, in
        a cluster, on another node."""
        session = self.server.sessions.get(to)
        if session is None:
            self.server.cluster.post(to, el)
        elif not session.closed:
            session.send(el)

    def broadcast(self, room: Room, template: Element) -> None:
        """Send ``template`` to every joined resource, one copy each with only 'to' set."""
        for full in room.by_session:
            self.send_to(full, addressed(template, str(full)))

    def broadcast_presence(self, room: Room, occupant: Occupant, *, unavailable: bool = False,
                           statuses: tuple[int, ...] = (), self_statuses: tuple[int, ...] = (),
                           nick: str | None = None, reason: str | None = None, actor: str | None = None,
                           also: tuple[JID, ...] = (), resource: JID | None = None) -> None:
        """§7.2.3 and on: the occupant's presence to everyone in the room, its own resources
        (and ``also``, resources that just left) getting status 110 and ``self_statuses``;
        ``resource`` is the real JID shown if not the latest resource's (:func:`occupant_presence`)."""
        def build(real_jid: bool, codes: tuple[int, ...]) -> Element:
            return occupant_presence(room, occupant, real_jid=real_jid, unavailable=unavailable, statuses=codes,
                                     nick=nick, reason=reason, actor=actor, resource=resource)

        variants: dict[bool, Element] = {}
        own = build(True, (*statuses, *self_statuses, SELF))
        for full, viewer in room.by_session.items():
            if viewer is occupant:
                continue
            shows = room.sees_real_jids(viewer)
            template = variants.get(shows)
            if template is None:
                template = variants[shows] = build(shows, statuses)
            self.send_to(full, addressed(template, str(full)))
        for full in (*occupant.sessions, *also):
            self.send_to(full, addressed(own, str(full)))


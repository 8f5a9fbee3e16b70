"""XEP-0045 group chat rooms across cluster nodes: each room lives on one node, its owner.

A room's state (its occupants, their roles, the order of what they see) is in the memory of one
node, so every stanza for a room is handled there. The owner is whichever live node claimed the
room first (``ClusterBus.claim`` on ``room:{room JID}``); ownership stays while that node
heartbeats, so nodes joining the cluster move no room. Any other node forwards what it gets for
the room (presence, messages, IQs to the room or to an occupant; from its clients or from itself,
such as a leaving session's unavailable presence) over the bus to the owner, which routes it as its
own. The room's fan-out reaches occupants on other nodes through ``ClusterNode.post``, in order.

No group message is lost once acknowledged (XEP-0198): a message a client here sends to a room
owned elsewhere (or to an occupant in it) is forwarded with an ``ask`` token, and the client's
stream goes on (and acknowledges it) only once the owner answers :class:`~.messages.Done`: by then
the room stored it in its archive (MUC MAM, in the shared storage) and sent it out, or refused it.
A refusal (the sender left the room while the bus was away, say) rides inside that ``Done``, not
as a stanza of its own before it: the two cannot be parted, so a client is never told "accepted"
for a message whose refusal was lost on the way. When the owner cannot be reached or does not
answer in time (it died, Redis is away), the client gets ``internal-server-error`` of type
``wait`` and sends the message again. Nor is a room split:
while Redis cannot name a room's owner, or the owner does not take a stanza, the stanza is refused
with that error rather than served by a second copy of the room here.

When a node dies, its rooms lose their occupants, as when a single server restarts: the next
stanza for such a room makes a live node its owner, which loads it (configuration, affiliations)
from storage, and clients find out by self-ping (XEP-0410: not-acceptable) or by a refused
message, join again and read what they missed from the room's archive. The owner of a room drops
the occupants whose node died (their sessions left the directory), and those its fan-out could not
reach (their node is gone or the bus is away), as if they had sent unavailable presence (§7.14,
§18.1.2): they too learn it by self-ping and catch up from the archive. The room's messages to
such an occupant that were still on their way stay behind until it has joined again, so that its
place in the archive never moves past a message it missed.

What the bus loses without telling (Redis went down with a copy on its way, say) is found by
the node that holds the occupant: the owner numbers its copies to each occupancy (a session's
stay in a room, from its joining) without a gap (:attr:`~.messages.Deliver.mark`). When the
node that holds the session sees a number skipped, or an occupancy it has not seen start with
a number past 1, it hands nothing more of that occupancy to the client and takes the session out
of the room (as above: it joins again and catches up from what it saw last). After its
subscription to the bus was interrupted, anything may have been lost at the end of a stream
where no later number shows it, so it takes its sessions out of every room it got copies from.

Stanzas to the service itself (disco of ``groups.<domain>``) need no room and are answered on any
node.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING
from xml.etree.ElementTree import Element

from ...xmpp import ns
from ...xmpp.errors import StanzaError
from ...xmpp.jid import JID
from ...xmpp.payloads.muc import JOIN
from ...xmpp.stanza import Stanza
from ...xmpp.xml import element, qname, serialize
from ..background import Background
from ..hooks import HANDLED, Handled, Unanswered
from ..modules.muc import Muc
from .bus import BusUnavailable
from .messages import Done, mark_number

if TYPE_CHECKING:
    from ..sessions import Session
    from .node import ClusterNode

log = logging.getLogger(__name__)

# Before the group chat service's own handlers (priority 0) and before any other module's.
FIRST = 1000
# How long a client's group message waits for the room's node to store and send it.
CONFIRM_TIMEOUT = 3.0
_PRESENCE = qname(ns.CLIENT, "presence")
_MESSAGE = qname(ns.CLIENT, "message")
UNREACHABLE = "the group's server is not reachable right now; send it again"


def _unreachable() -> StanzaError:
    return StanzaError("internal-server-error", UNREACHABLE, type="wait")


@dataclass
class _Asked:
    """A message another node waits for while a room here handles it: its sender, its id, and
    the error the room answered it with, kept for the :class:`Done` instead of sent on its own."""

    sender: JID | None
    id: str | None
    refusal: Element | None = None
    open: bool = True


@dataclass
class _Numbered:
    """The copies a room here sent to one occupancy on another node: its occupant (a new one is a
    new occupancy), the occupancy's name and how many copies were numbered."""

    occupant: object
    occupancy: str
    count: int = 0


@dataclass
class _Received:
    """The copies of one occupancy that reached a session here: the occupancy, the last number,
    and whether one went missing (nothing more of it is handed on)."""

    occupancy: str
    count: int
    cut: bool = False


# Set while a room here handles a message another node asked about (see :meth:`ClusterGroups.arrived`).
_handling: ContextVar[_Asked | None] = ContextVar("schnack_cluster_asked", default=None)


class ClusterGroups:
    """Sends every stanza for a room to the node that owns the room."""

    def __init__(self, node: ClusterNode) -> None:
        self.node = node
        self.server = node.server
        self.domains: frozenset[str] = frozenset()
        # Owners this node looked up, forgotten when the owner dies or Redis comes back.
        self._owners: dict[JID, str] = {}
        # ask token -> (the room's node, the future its Done resolves with the refusal, if any).
        self._asked: dict[str, tuple[str, asyncio.Future[Element | None]]] = {}
        # Set while the node drains: its rooms are gone, and it serves no room any more.
        self.leaving = False
        # (room, occupant's full JID) -> the occupancy whose fan-out stopped reaching it: nothing
        # more of that occupancy goes out, so that what the client sees has no gap (it reads the
        # archive after the last message it saw once it has joined again).
        self._cut: dict[tuple[JID, JID], object] = {}
        # (room, occupant's full JID) -> the numbering of the copies sent to it (see :meth:`mark`).
        self._numbered: dict[tuple[JID, JID], _Numbered] = {}
        # Session here -> room elsewhere -> the copies it got (see :meth:`in_order`).
        self._received: dict[JID, dict[JID, _Received]] = {}
        self._tasks = Background(log, "taking an occupant out of a room on another node failed")
        # Stanzas from other nodes being handled here; set when there are none (see :meth:`hand_over`).
        self._arriving = 0
        self._settled = asyncio.Event()
        self._settled.set()

    def _muc(self) -> Muc | None:
        """The group chat module, when it is enabled (it is set up after the cluster)."""
        muc = self.server.modules.get("muc")
        return muc if isinstance(muc, Muc) else None

    def start(self) -> None:
        """Put the forwarding in front of the group chat service of each domain (once modules are set up)."""
        muc = self._muc()
        if muc is None or self.domains:
            return
        self.domains = frozenset(muc.domains)
        hooks = self.server.hooks
        for domain in self.domains:
            hooks.add(f"presence/service/{domain}", self.to_room, FIRST)
            hooks.add(f"message/service/{domain}", self.to_room, FIRST)
        # A client's IQ passes pre-iq/service before the payload routes of the room's handlers.
        hooks.add("pre-iq/service", self.to_room, -FIRST)
        self.node.bus.on_recovered(self.recovered)
        self.node.bus.on_resubscribed(self.interrupted)

    def hosts(self, to: JID) -> bool:
        """Whether ``to`` is a room (or occupant) address of the group chat service."""
        return to.domain in self.domains

    async def owner(self, room: JID) -> str:
        """The node that owns ``room`` (:class:`BusUnavailable` while nobody can tell)."""
        owner = self._owners.get(room)
        if owner is None:
            owner = self._owners[room] = await self.node.bus.claim(f"room:{room}")
        return owner

    async def to_room(self, stanza: Stanza, origin: Session | None) -> Handled | None:
        """Forward a stanza for a room that another node owns."""
        to = stanza.to
        if to is None or to.local is None or to.domain not in self.domains:
            return None
        if self.leaving:
            return self._refuse(stanza, origin)
        try:
            owner = await self.owner(to.bare)
        except BusUnavailable:
            return self._refuse(stanza, origin)
        if owner == self.node.name:
            if stanza.kind == "presence" and stanza.type is None and stanza.from_ is not None \
                    and stanza.el.find(JOIN) is not None:
                # Entering (again, after a reconnect, maybe while the room still holds the session):
                # what the client saw before counts no more, so the copies start a new occupancy.
                self._numbered.pop((to.bare, stanza.from_), None)
            return None
        if origin is not None and stanza.kind == "message" and stanza.type != "error":
            return await self._confirmed(owner, stanza, to, origin)
        if await self.node.forward(owner, stanza, to):
            return HANDLED
        # The owner is gone (not yet reaped) or the bus is away: ask again next time.
        self._owners.pop(to.bare, None)
        log.info("node %s did not take a stanza for room %s", owner, to.bare)
        return self._refuse(stanza, origin)

    def _refuse(self, stanza: Stanza, origin: Session | None) -> Handled:
        """A stanza for a room whose node cannot be reached: a client's gets a ``wait`` error (it
        tries again); what the server sends for a session (its unavailable presence) is dropped,
        since the room's node drops the occupants it cannot reach anyway."""
        if origin is None:
            return HANDLED
        raise _unreachable()

    async def _confirmed(self, owner: str, stanza: Stanza, to: JID, origin: Session) -> Handled:
        """Forward a client's message for a room and wait until the room's node handled it; pass
        the room's refusal, if it sent one, to the client."""
        answered, refusal = await self._ask(owner, stanza, to)
        unreachable = not answered
        if unreachable:
            self._owners.pop(to.bare, None)
            log.warning("node %s did not confirm a message for room %s", owner, to.bare)
        if (unreachable or refusal is not None) and origin.closed:
            # Its sender left while it waited (a drain, say) and cannot be told: it must not count
            # as received either, or the client, resuming with the stream's count, takes it as sent.
            raise Unanswered(f"the message to {to.bare} was not taken and its sender has gone")
        if unreachable:
            raise _unreachable()
        if refusal is not None:
            origin.send(refusal)
        return HANDLED

    async def arrived(self, stanza: Stanza, ask: str) -> None:
        """A stanza another node forwarded to a room here; with ``ask``, :class:`Done` to the
        asker once handled: stored and sent out, or refused, the refusal inside the ``Done``."""
        self._arriving += 1
        self._settled.clear()
        try:
            await self._arrived(stanza, ask)
        finally:
            self._arriving -= 1
            if not self._arriving:
                self._settled.set()

    async def _arrived(self, stanza: Stanza, ask: str) -> None:
        asked = _Asked(stanza.from_, stanza.id) if ask else None
        if await self._serves(stanza):
            context = _handling.set(asked)
            try:
                await self.server.router.route(stanza, None)
            finally:
                _handling.reset(context)
                if asked is not None:
                    asked.open = False
        elif stanza.type not in ("error", "result", "unavailable"):
            # Not (or no longer) the room's node: refused rather than passed on, so that the
            # asker's Done never stands for a stanza that went further (or round in circles).
            refusal = stanza.error(_unreachable())
            if asked is not None:
                asked.refusal = refusal
            else:
                await self.server.router.send(refusal)
        if asked is not None:
            refused = serialize(asked.refusal, None) if asked.refusal is not None else ""
            await self.node.answer(ask.partition(":")[0], Done(ask, refused))

    def keep_refusal(self, stanza: Stanza) -> bool:
        """Whether ``stanza`` is the error a room here answers a message with that another node
        asked about: then it is kept for that node's :class:`Done` (see :meth:`arrived`) rather
        than routed, which could fail on its own while the ``Done`` gets through."""
        asked = _handling.get()
        if asked is None or not asked.open or stanza.kind != "message" or stanza.type != "error":
            return False
        if stanza.to != asked.sender or stanza.id != asked.id:
            return False
        asked.refusal = stanza.el
        return True

    async def _serves(self, stanza: Stanza) -> bool:
        """Whether the room ``stanza`` is for lives here (an occupant's address counts as its room)."""
        to = stanza.to
        if self.leaving or to is None:
            return False
        try:
            return await self.owner(to.bare) == self.node.name
        except BusUnavailable:
            return False

    def done(self, token: str, refusal: Element | None) -> None:
        """The room's node handled the message ``token`` names, refusing it with ``refusal``."""
        asked = self._asked.get(token)
        if asked is not None and not asked[1].done():
            asked[1].set_result(refusal)

    def cut_off(self, to: JID, el: Element) -> bool:
        """Whether ``el``, which a room here posted to ``to``, belongs to an occupancy whose
        fan-out already failed once (see :meth:`lost`): then it is dropped too.

        That holds after the room let the occupant go as well, until it joins again: the room's
        messages posted before it left are still on their way, and one of them reaching a client
        that does not know yet that it left would move its place in the archive past the message
        it missed. Its own unavailable presence goes on: that tells it to join again.
        """
        if not self._cut:
            return False
        sender = el.get("from")
        if not sender:
            return False
        room_jid = JID.parse(sender).bare
        occupancy = self._cut.get((room_jid, to))
        if occupancy is None:
            return False
        muc = self._muc()
        room = muc.rooms.live.get(room_jid) if muc is not None else None
        now = room.by_session.get(to) if room is not None else None
        if now is occupancy:
            return True
        if now is None:
            return el.tag == _MESSAGE and el.get("type") == "groupchat"
        del self._cut[(room_jid, to)]  # it joined again: a new occupancy
        return False

    def mark(self, to: JID, el: Element) -> str:
        """The mark of ``el``, which a room here sends to ``to`` on another node: its occupancy and
        its number there (see :attr:`~.messages.Deliver.mark`); empty when ``to`` is no occupant."""
        sender = el.get("from")
        muc = self._muc()
        if not sender or muc is None:
            return ""
        room_jid = JID.parse(sender).bare
        room = muc.rooms.live.get(room_jid) if room_jid.domain in self.domains else None
        occupant = room.by_session.get(to) if room is not None else None
        key = (room_jid, to)
        if occupant is None:
            self._numbered.pop(key, None)
            return ""
        numbered = self._numbered.get(key)
        if numbered is None or numbered.occupant is not occupant:
            numbered = self._numbered[key] = _Numbered(occupant, secrets.token_hex(6))
        numbered.count += 1
        return f"{numbered.occupancy}:{numbered.count}"

    async def in_order(self, to: JID, stanza: Stanza, mark: str) -> bool:
        """Whether the copy ``stanza`` marked ``mark`` from a room elsewhere may go to the session
        ``to`` here: not when a copy before it went missing. Then the session leaves the room."""
        occupancy, _, _ = mark.rpartition(":")
        number = mark_number(mark)
        if stanza.from_ is None or number is None:
            return False
        room_jid = stanza.from_.bare
        rooms = self._received.setdefault(to, {})
        received = rooms.get(room_jid)
        if received is None or received.occupancy != occupancy:
            received = rooms[room_jid] = _Received(occupancy, 0)
        if received.cut or number <= received.count:
            return False
        if number == received.count + 1:
            received.count = number
            return True
        log.info("a copy of room %s to %s went missing on the bus; it leaves the room", room_jid, to)
        received.cut = True
        self._leave_elsewhere(to, room_jid)
        return False

    def _leave_elsewhere(self, full: JID, room_jid: JID) -> None:
        """Take the session ``full`` here out of the room ``room_jid`` elsewhere, whose copies to it
        went missing, trying until the room's node takes the request (the bus may just be coming
        back), the session has gone or it joined again."""
        self._tasks.spawn(self._ask_to_leave(full, room_jid))

    async def _ask_to_leave(self, full: JID, room_jid: JID) -> None:
        leave = element(_PRESENCE, {"type": "unavailable", "from": str(full), "to": str(room_jid)})
        delay = 0.1
        while (received := self._received.get(full, {}).get(room_jid)) is not None and received.cut:
            try:
                owner: str | None = await self.owner(room_jid)
            except BusUnavailable:
                owner = None
            if owner == self.node.name:
                await self.server.router.send(leave)
                return
            if owner is not None and await self._handled(owner, leave, room_jid):
                return
            self._owners.pop(room_jid, None)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _handled(self, owner: str, stanza: Element, room_jid: JID) -> bool:
        """Forward ``stanza`` to the room's node and wait for its :class:`Done`: the bus may lose the
        stanza as it loses copies, and then the session would stay in the room, its copies held
        back here, without its client ever hearing that it should join again."""
        answered, _ = await self._ask(owner, stanza, room_jid)
        return answered

    async def _ask(self, owner: str, stanza: Stanza | Element, to: JID) -> tuple[bool, Element | None]:
        """Forward ``stanza`` to the room's node ``owner`` with an ask token: whether it answered
        :class:`Done` in time, and the refusal inside it; (False, None) when it could not be reached."""
        token = f"{self.node.name}:{secrets.token_hex(12)}"
        answered: asyncio.Future[Element | None] = asyncio.get_running_loop().create_future()
        self._asked[token] = (owner, answered)
        try:
            if not await self.node.forward(owner, stanza, to, ask=token):
                return False, None
            return True, await asyncio.wait_for(answered, CONFIRM_TIMEOUT)
        except (TimeoutError, ConnectionError):
            return False, None
        finally:
            self._asked.pop(token, None)

    def forget_session(self, full: JID) -> None:
        """The session ``full`` here ended: what it received is of no use any more."""
        self._received.pop(full, None)

    def interrupted(self) -> None:
        """This node's subscription to the bus was interrupted: a copy at the end of a stream may
        have been lost with no later one to show it, so its sessions leave the rooms elsewhere."""
        cut = [(full, room, received) for full, rooms in self._received.items()
               for room, received in rooms.items() if not received.cut]
        for full, room, received in cut:
            received.cut = True
            self._leave_elsewhere(full, room)
        if cut:
            log.info("the bus was interrupted: %d sessions here leave rooms elsewhere and join again", len(cut))

    async def lost(self, to: JID, el: Element) -> None:
        """The room's fan-out could not reach ``to``: it leaves the room (§18.1.2), so that its
        client learns it by self-ping and reads what it missed from the room's archive; until
        then nothing more of the room reaches it."""
        sender = el.get("from")
        muc = self._muc()
        if muc is None or sender is None or (el.tag == _PRESENCE and el.get("type") == "unavailable"):
            return
        room_jid = JID.parse(sender).bare
        room = muc.rooms.live.get(room_jid) if room_jid.domain in self.domains else None
        occupant = room.by_session.get(to) if room is not None else None
        if room is None or occupant is None or self._owners.get(room_jid) != self.node.name:
            return
        if (room_jid, to) in self._cut:
            return
        self._cut[(room_jid, to)] = occupant
        log.info("the fan-out of room %s did not reach %s; it leaves the room", room_jid, to)
        await self._leave(to, JID(room_jid.local, room_jid.domain, occupant.nick))

    async def _leave(self, full: JID, occupant_jid: JID) -> None:
        leave = element(_PRESENCE, {"type": "unavailable", "from": str(full), "to": str(occupant_jid)})
        await self.server.router.send(leave)

    async def hand_over(self, timeout: float = 10.0) -> None:
        """The node drains: refuse what still comes for any room (``wait``), let the stanzas its
        rooms are handling finish, then drop the rooms held here, so that no message goes to a room
        that is about to vanish while another node starts the room anew once this one left the
        directory; the occupants elsewhere find out by self-ping, join there and read the room's
        archive.

        The wait matters: a message still being stored when the room moves on could be committed
        after its members, joined at the new node, read the archive past it, and one whose room
        was dropped under it would reach nobody; both would be acknowledged to their sender. Its
        copies go out before the room is dropped, too (see :meth:`_settle`).
        """
        self.leaving = True
        muc = self._muc()
        try:
            await asyncio.wait_for(self._settle(muc), timeout)
        except TimeoutError:
            log.warning("group chat stanzas were still being handled after %.0f s; the rooms move on", timeout)
        if muc is not None:
            for jid in [room for room, owner in self._owners.items() if owner == self.node.name]:
                muc.rooms.live.pop(jid, None)
        self._owners.clear()
        self._numbered.clear()

    async def _settle(self, muc: Muc | None) -> None:
        """Wait until no stanza from another node is being handled, no room here is busy and the
        copies the rooms posted have gone out: each copy is numbered from its room's occupants
        as it leaves (see :meth:`mark`), which a room dropped from memory no longer has, and an
        unnumbered copy could reach its client after one before it was lost."""
        while True:
            await self._settled.wait()
            if muc is not None:
                await muc.locks.quiet()
            await self.node.sent()
            if self._settled.is_set():
                return

    async def recovered(self) -> None:
        """Redis is back (it may have lost the claims): claim the rooms owned here anew, so that no
        other node starts a second copy of them, and ask for the other owners again. A room that
        another node owns by now is dropped here; its occupants find out by self-ping."""
        mine = [room for room, owner in self._owners.items() if owner == self.node.name]
        # The rooms held here stay held until Redis names their owner: forgetting them first would
        # leave a window in which a fan-out that fails does not cut its occupant off (see
        # :meth:`lost`), who would then miss a message, and a reclaim that fails would drop them
        # for good. No other node takes them meanwhile: it only peeks while settling.
        self._owners = dict.fromkeys(mine, self.node.name)
        muc = self._muc()
        if muc is None:
            return
        for jid in mine:
            try:
                owner = await self.node.bus.reclaim(f"room:{jid}")
            except BusUnavailable:
                return  # Redis is away again: the next recovery claims the rest
            if self.leaving:
                return
            self._owners[jid] = owner
            room = muc.rooms.live.get(jid)
            if owner != self.node.name and room is not None:
                log.warning("room %s is owned by node %s now; its occupants here join again there", jid, owner)
                del muc.rooms.live[jid]
                for key in [key for key in self._numbered if key[0] == jid]:
                    del self._numbered[key]

    async def node_down(self, node: str) -> None:
        """Forget ``node``'s rooms and the answers it owes, and drop the occupants it held from the
        rooms owned here."""
        for lost in [r for r, owner in self._owners.items() if owner == node]:
            del self._owners[lost]
        for owner, answered in self._asked.values():
            if owner == node and not answered.done():
                answered.set_exception(ConnectionError(f"node {node} is gone"))
        muc = self._muc()
        if muc is None:
            return
        sessions = self.server.sessions
        gone: list[tuple[JID, JID]] = []
        for room in list(muc.rooms.live.values()):
            if self._owners.get(room.jid) != self.node.name:
                continue
            for full, occupant in list(room.by_session.items()):
                if sessions.get(full) is None and str(full) not in await self.node.bus.lookup(str(full.bare)):
                    gone.append((full, JID(room.jid.local, room.jid.domain, occupant.nick)))
        for full, occupant_jid in gone:
            await self._leave(full, occupant_jid)
        if gone:
            log.info("removed %d occupants of dead node %s from the rooms here", len(gone), node)

"""XEP-0198: Stream Management (v1.6): acks both ways and resumption, so a dying connection loses nothing.

Offered as a stream feature once the client authenticated; ``<enable/>`` is accepted after
resource binding (§3), anything else gets ``<failed/>`` with unexpected-request (§6).

Inbound (§4): the ``h`` the server reports counts a client's stanza only once its routing
finished (the stream counts them after the router returned), so whatever the router stores
for it (offline storage, the archive) is written before the client can see it acknowledged.

Outbound (§4): an output stage at priority 0, the closest to the transport, numbers and queues
every stanza written to the client (nonzas pass), and asks for an ack with ``<r/>`` once
``ack_after_stanzas`` are unacknowledged, or ``ack_after_seconds`` after the first one. An
``<a/>`` acknowledging more than was sent ends the stream with undefined-condition and
``<handled-count-too-high/>`` (§4). A client that leaves more than ``max_unacked`` stanzas
unacknowledged has its stream closed with resource-constraint.

Resumption (§5): a session whose connection ends without either side closing the stream, or whose
stream the server closed with connection-timeout because the client went silent (its network most
likely went away), hibernates for ``resume_timeout`` seconds, or the shorter ``max`` the client
asked for. It stays bound and available, so what is routed to it is queued (and archived by the
modules that archive; push notifications learn of it, and of what the client had not
acknowledged when its connection was lost). ``<resume/>`` on a new authenticated stream of the same account moves the
session there (an old stream still open is closed, once the stanzas it read are counted), answers
``<resumed/>`` and sends again, in order, the stanzas the client's ``h`` does not cover, with a
XEP-0203 delay stamp of when they were first queued. An unknown or expired SM-ID, or one of another
account, gets ``<failed/>`` with item-not-found, and with the ``h`` of the ended session when it was
this account's.

In a cluster a session stays on the node that holds it; ``<enabled/>`` names that node's
``cluster.public_address`` as the ``location`` to come back to (§5). Another node asked to resume it
answers item-not-found, with the ``h`` the session ended with when the shared records in Redis
know it (cluster/smstate.py: a drained node ended its sessions; a live owner is asked to end
the session first, its queue going to offline storage; a dead node's are lost, and what they
held is in the archive and offline storage, but for an account whose archive preference is
'never', XEP-0441, nowhere), so the client sends again only what was not handled, binds afresh
and catches up.

Inside SASL2 (XEP-0388, XEP-0386 §2.2): ``<sm/>`` is an inline feature; a ``<resume/>`` in the
``<authenticate/>`` is answered inside the ``<success/>`` (the stanzas to send again follow it),
and an ``<enable/>`` in a Bind 2 request inside the ``<bound/>``.

End: when a session with stream management ends (hibernation over, the stream closed or failed,
the resource bound anew), ``session-closed`` is fired as for any session (so unavailable
presence goes out then, not when hibernation starts), and the stanzas the client did not
acknowledge are handled as not delivered (§4), as RFC 6121 §8.5 handles stanzas for a resource
that is gone: a chat or normal message with a body, an end-to-end encrypted payload or a
XEP-0334 ``<store/>`` hint (call signalling, XEP-0353) goes to offline storage (event
``message/offline``, whose store stamps it with a delay), unless another resource of the
account on this node already has it, or holds it unacknowledged and so answers for it itself
(sessions on other nodes of a cluster are not known here: offline storage keeps one copy of a
message that nodes hand it twice, by its stanza-id); when storage refuses it, the sender gets
the error. An IQ get or set gets service-unavailable to its sender (RFC 6121 §8.5.3.2.3).
Presence, IQ results and other messages (errors, headlines, groupchat, carbon copies) are
dropped.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import secrets
import time
import weakref
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from xml.etree.ElementTree import Element

from ...xmpp import ns
from ...xmpp.errors import StanzaError, StreamError
from ...xmpp.jid import JID
from ...xmpp.payloads.bind2 import Bind
from ...xmpp.payloads.sasl2 import Authenticate
from ...xmpp.payloads.sm import (
    ACK,
    ENABLE,
    FEATURE,
    MODULUS,
    NS,
    REQUEST,
    RESUME,
    Ack,
    Enable,
    Enabled,
    Failed,
    HandledCountError,
    Request,
    Resume,
    Resumed,
    SmError,
    newly_acknowledged,
)
from ...xmpp.stanza import Stanza
from ...xmpp.xml import element, qname
from .. import sasl2
from ..background import Background
from ..cluster.smstate import ENDED_TTL, SmRecord, SmRecords, open_records
from ..config import bounded
from ..hooks import HANDLED, Handled
from ..locks import AccountLocks
from ..module import Module
from ..sessions import Forward
from .e2e import ENCRYPTED
from .offline import delay_stamp

if TYPE_CHECKING:
    from ..c2s import C2SStream
    from ..sessions import Session

log = logging.getLogger(__name__)

_MESSAGE = qname(ns.CLIENT, "message")
_IQ = qname(ns.CLIENT, "iq")
_PRESENCE = qname(ns.CLIENT, "presence")
_STANZAS = frozenset({_MESSAGE, _IQ, _PRESENCE})
_BODY = qname(ns.CLIENT, "body")
_STORE = qname("urn:xmpp:hints", "store")
_NOT_KEPT = frozenset({"error", "groupchat", "headline"})
_DELAY = qname(ns.DELAY, "delay")
# How many ended sessions' SM-IDs are remembered, to tell a late resumption how far it got.
_ENDED_KEPT = 10_000
# Seconds a live session's shared record outlasts its resumption time (cluster/smstate.py).
_RECORD_SLACK = 60
# Events fired for other modules (push notifications): a stanza was queued for a hibernating
# session, or was left unacknowledged when the session began to hibernate (session, element),
# fired in a task of its own and only when a handler listens; and a hibernating session was
# resumed (session).
HIBERNATING_STANZA = "sm/hibernating-stanza"
RESUMED = "sm/resumed"
# Set while a session's unacknowledged stanzas are being routed again (see StreamManagement._settle).
_SETTLING: ContextVar[bool] = ContextVar("sm_settling", default=False)


@dataclass(frozen=True)
class SmOptions:
    """Hibernation time, queue bound and how often acks are asked for."""

    resume_timeout: int = bounded(300, min=1, max=3600, help="seconds a session whose connection died can be resumed")
    max_unacked: int = bounded(5000, min=10, max=100_000, help="unacknowledged stanzas before a session is closed")
    ack_after_stanzas: int = bounded(5, min=1, max=1000, help="ask for an ack after this many unacknowledged stanzas")
    ack_after_seconds: float = bounded(1.0, min=0.01, max=300, help="or this long after the first unacknowledged one")
    location: str = bounded("", help="host:port where clients should reconnect to resume; empty: anywhere")


@dataclass(slots=True)
class SmState:
    """Per session: the stream management state of XEP-0198."""

    enabled: bool = False
    # The SM-ID when the session may be resumed, and the hibernation time granted.
    id: str | None = None
    timeout: int = 0
    # The stream the session runs on; None while it hibernates.
    stream: C2SStream | None = None
    # Inbound h is this plus the stream's count of handled stanzas; frozen in ``h_in`` while hibernating.
    in_offset: int = 0
    h_in: int = 0
    # Stanzas sent (mod 2^32), and those of them not yet acknowledged with the time each was queued.
    # A list, not a deque: acks take stanzas off its front in one slice, and an empty list costs
    # 56 bytes where an empty deque costs 760, on every idle session.
    sent: int = 0
    queue: list[tuple[Element, float]] = field(default_factory=list)
    requested: bool = False
    ack_timer: asyncio.TimerHandle | None = None
    expiry: asyncio.TimerHandle | None = None
    ended: bool = False
    # Its unacknowledged stanzas were handed back to routing (see StreamManagement._settle).
    settled: bool = False
    # When its latest hibernation began (time.time()); None while a connection holds it.
    hibernating_since: float | None = None

    def handled(self) -> int:
        """The inbound ``h``: the client's stanzas the server handled (§4)."""
        if self.stream is None:
            return self.h_in
        return (self.in_offset + self.stream.stanzas_handled) % MODULUS

    def cancel_timers(self) -> None:
        for timer in (self.ack_timer, self.expiry):
            if timer is not None:
                timer.cancel()
        self.ack_timer = self.expiry = None


@dataclass
class _Copies:
    """What became of one message element that was sent to one or more sessions of an account."""

    # Queues of sessions with stream management that hold it unacknowledged.
    pending: int = 0
    # A session took it for good: acknowledged it, or has no stream management.
    delivered: bool = False


class _Hibernation:
    """The transport of a session whose connection is gone while it waits to be resumed (§5)."""

    def __init__(self, module: StreamManagement, session: Session) -> None:
        self._module = module
        self._session = session

    def send(self, el: Element) -> None:
        """Nothing reaches a hibernating client: the output stage keeps it queued."""

    def close(self, error: StreamError | None = None) -> None:
        """Closing a hibernating session (replaced, kicked, its account deleted) ends it now."""
        self._module.end(self._session)


def hibernating(session: Session) -> bool:
    """Whether ``session`` waits to be resumed, its connection gone (§5)."""
    state = session.slot(SmState)
    return state.enabled and state.stream is None and not state.ended


def _precious(el: Element) -> bool:
    """Whether an undelivered message must reach the account another way: a chat or normal
    message with content (a body or an end-to-end encrypted payload), or one its sender asked
    to be stored (XEP-0334 §4 ``<store/>``, as call signalling does, XEP-0353 §3)."""
    if el.tag != _MESSAGE or el.get("type") in _NOT_KEPT:
        return False
    return any(child.tag in (_BODY, _STORE) or child.tag in ENCRYPTED for child in el)


def _stamped(el: Element, queued_at: float, host: str) -> Element:
    """A copy of ``el`` with a XEP-0203 delay saying when it was first queued; the original,
    which other sessions may share, is left alone. IQs and stanzas with a delay stay as they are."""
    if el.tag == _IQ or el.find(_DELAY) is not None:
        return el
    delay = element(_DELAY, {"from": host, "stamp": delay_stamp(datetime.fromtimestamp(queued_at, UTC))})
    return element(el.tag, el.attrib, el.text, [*el, delay])


class StreamManagement(Module[SmOptions]):
    """XEP-0198 acks, hibernation and resumption for client streams."""

    name = "sm"
    Options = SmOptions

    def setup(self) -> None:
        self._resumable: dict[str, Session] = {}
        # Sessions with stream management whose queues are not settled yet, by account.
        self._unsettled: dict[JID, set[Session]] = {}
        # This node's own: what they keep in order are the queues of this node's sessions.
        self._locks = AccountLocks()
        # SM-ID -> ((host, username), inbound h) of sessions that ended, oldest first.
        self._ended: dict[str, tuple[tuple[str, str], int]] = {}
        self._copies: weakref.WeakKeyDictionary[Element, _Copies] = weakref.WeakKeyDictionary()
        self._tasks = Background(log, "stream management work in the background failed")
        # In cluster mode, the records that let other nodes answer for this node's SM-IDs.
        self._records: SmRecords | None = None
        self.hook("stream-features", self.stream_feature)
        self.hook("session-bound", self.bound)
        self.hook("session-closed", self.closed)
        self.hook("c2s/connection-lost", self.connection_lost)
        # Before the offline store runs: older unacknowledged messages of the account go first.
        self.hook("message/offline", self.before_offline, priority=100)
        self.nonza(ENABLE, self.enable)
        self.nonza(RESUME, self.resume)
        self.nonza(REQUEST, self.request)
        self.nonza(ACK, self.ack)
        self.hook(sasl2.INLINE, self.sasl2_feature)
        self.hook(sasl2.BIND2_INLINE, self.bind2_feature)
        self.hook(sasl2.RESUME, self.sasl2_resume)
        self.hook(sasl2.BIND2_ENABLE, self.bind2_enable)

    async def start(self) -> None:
        self._records = open_records(self.server.config.cluster)
        if self._records is not None:
            self._records.listen(self._end_requested)

    async def _end_requested(self, sm_id: str) -> None:
        """Another node of the cluster was asked to resume this session: it ends here, so that
        its queue reaches offline storage and its final h the shared record (cluster/smstate.py)."""
        session = self._resumable.get(sm_id)
        if session is None:
            return
        state = session.slot(SmState)
        log.info("%s resumes elsewhere in the cluster; its session here ends", session.jid)
        if state.stream is not None:
            # The connection is dead (the client is on another node) but not noticed yet, or the
            # client left it open. The session ends now, with what that stream still routes
            # counted, not when the connection goes (up to the linger later): the other node
            # waits only briefly for the final h (cluster/smstate.py).
            await state.stream.let_go()
        self.end(session)

    async def stop(self) -> None:
        """Sessions still hibernating end now, and every queue not settled yet is settled, so that
        what clients did not acknowledge reaches offline storage before it closes."""
        for session in list(self._resumable.values()):
            if session.slot(SmState).stream is None:
                self.end(session)
        for sessions in list(self._unsettled.values()):
            for session in list(sessions):
                async with self._locks.hold(session.jid.bare):
                    await self._settle(session)
        await self._tasks.wait()
        if self._records is not None:
            await self._records.close()
            self._records = None

    async def stream_feature(self, stream: C2SStream) -> Element | None:
        """§2: the feature, once the client authenticated (to enable after binding, or to resume),
        unless the stream's session has it on already (enabled or resumed inside SASL2)."""
        if not stream.authenticated or (stream.session is not None and stream.session.slot(SmState).enabled):
            return None
        return element(FEATURE)

    async def sasl2_feature(self, stream: C2SStream) -> Element:
        """§5 inside XEP-0388: a session may be resumed within authentication."""
        return element(FEATURE)

    async def bind2_feature(self, stream: C2SStream) -> str:
        """XEP-0386 §2.1: stream management can be enabled within Bind 2."""
        return NS

    async def bound(self, session: Session) -> None:
        # A partial rather than a closure: every session holds it, and a partial (208 bytes with
        # its arguments and bound method) takes about half of a closure over four variables.
        stage = functools.partial(self._output, session, session.jid.bare, session.slot(SmState))
        session.add_output_stage(stage, priority=0)

    # Enabling and acks ----------------------------------------------------------------------

    async def enable(self, stream: C2SStream, el: Element) -> Handled:
        """§3: turn stream management on for the bound session, resumable if asked (§5)."""
        stream.send(self._enable(stream, el).to_xml())
        return HANDLED

    async def bind2_enable(self, session: Session, stream: C2SStream, bind: Bind, results: list[Element]) -> None:
        """XEP-0386 §2.2: an ``<enable/>`` inside Bind 2 is answered inside ``<bound/>``."""
        request = bind.find(ENABLE)
        if request is not None:
            results.append(self._enable(stream, request).to_xml())

    def _enable(self, stream: C2SStream, el: Element) -> Enabled | Failed:
        session = stream.session
        if session is None or session.slot(SmState).enabled:
            return Failed("unexpected-request")
        try:
            request = Enable.from_xml(el)
        except SmError:
            return Failed("bad-request")
        state = session.slot(SmState)
        state.enabled = True
        state.stream = stream
        state.in_offset = -stream.stanzas_handled
        self._unsettled.setdefault(session.jid.bare, set()).add(session)
        answer = Enabled()
        if request.resume:
            state.id = secrets.token_urlsafe(18)
            state.timeout = min(request.max or self.options.resume_timeout, self.options.resume_timeout)
            self._resumable[state.id] = session
            # §5 'location': where to come back to resume; in a cluster, this node.
            location = self.options.location or self.server.config.cluster.public_address or None
            answer = Enabled(id=state.id, resume=True, max=state.timeout, location=location)
            self._record(state.id, session, None, state.timeout + _RECORD_SLACK)
        return answer

    def _record(self, sm_id: str, session: Session, h: int | None, ttl: int) -> None:
        """Share the SM-ID's owner (and final h) with the other nodes of a cluster (cluster/smstate.py)."""
        if self._records is not None:
            record = SmRecord(str(session.jid.bare), self.server.cluster.name, h)
            self._tasks.spawn(self._records.put(sm_id, record, ttl))

    async def request(self, stream: C2SStream, el: Element) -> Handled | None:
        """§4: answer ``<r/>`` with the number of the client's stanzas handled."""
        state = self._state(stream)
        if state is None:
            return None
        stream.send(Ack(state.handled()).to_xml())
        return HANDLED

    async def ack(self, stream: C2SStream, el: Element) -> Handled | None:
        """§4: the client tells how many stanzas it handled; those leave the queue."""
        state = self._state(stream)
        if state is None:
            return None
        try:
            h = Ack.from_xml(el).h
        except SmError as err:
            raise StreamError("bad-format", str(err)) from None
        self._acknowledge(state, h)
        state.requested = False
        self._want_ack(state)
        return HANDLED

    def _state(self, stream: C2SStream) -> SmState | None:
        session = stream.session
        if session is None:
            return None
        state = session.slot(SmState)
        return state if state.enabled else None

    def _acknowledge(self, state: SmState, h: int) -> None:
        count = newly_acknowledged(h, state.sent, len(state.queue))
        if count is None:
            raise HandledCountError(h, state.sent)
        queue = state.queue
        for el, _queued_at in queue[:count]:
            if el.tag == _MESSAGE:
                copies = self._copies.get(el)
                if copies is not None:
                    copies.pending -= 1
                    copies.delivered = True
        del queue[:count]

    def _output(self, session: Session, account: JID, state: SmState, el: Element, forward: Forward) -> None:
        """The output stage: count and queue each stanza, then let it go to the client."""
        if el.tag not in _STANZAS:
            forward(el)
            return
        if not state.enabled:
            # Delivered here for good; that matters only to sessions of the account that may fail.
            if account in self._unsettled and not session.closed and _precious(el):
                self._copies.setdefault(el, _Copies()).delivered = True
            forward(el)
            return
        if _precious(el):
            self._copies.setdefault(el, _Copies()).pending += 1
        if state.settled:
            # The session's queue went back to routing already; so does what still comes for it.
            self._tasks.spawn(self._settle_late(session, el))
            return
        state.queue.append((el, time.time()))
        state.sent = (state.sent + 1) % MODULUS
        if len(state.queue) > self.options.max_unacked:
            log.warning("closing %s: %d stanzas unacknowledged", session.jid, len(state.queue))
            session.close(StreamError("resource-constraint", "too many stanzas unacknowledged"))
            return
        if state.stream is not None:
            forward(el)
            self._want_ack(state)
        elif self.server.hooks.has(HIBERNATING_STANZA):
            self._tasks.spawn(self._announce(HIBERNATING_STANZA, session, el))

    def _want_ack(self, state: SmState) -> None:
        if state.requested or state.stream is None or not state.queue:
            return
        if len(state.queue) >= self.options.ack_after_stanzas:
            self._ask(state)
        elif state.ack_timer is None:
            state.ack_timer = asyncio.get_running_loop().call_later(self.options.ack_after_seconds, self._ask, state)

    def _ask(self, state: SmState) -> None:
        if state.ack_timer is not None:
            state.ack_timer.cancel()
            state.ack_timer = None
        if state.stream is None or state.requested or not state.queue or state.ended:
            return
        state.requested = True
        state.stream.send(Request().to_xml())

    # Hibernation and resumption -------------------------------------------------------------

    async def connection_lost(self, stream: C2SStream) -> Handled | None:
        """§5: keep a resumable session whose connection ended without a closed stream."""
        session = stream.session
        assert session is not None
        state = session.slot(SmState)
        if state.id is None or state.ended or state.stream is not stream:
            return None
        state.h_in = state.handled()
        state.stream = None
        state.hibernating_since = time.time()
        state.requested = False
        state.cancel_timers()
        session.transport = _Hibernation(self, session)
        state.expiry = asyncio.get_running_loop().call_later(state.timeout, self._expire, session)
        # Other nodes learn that it sleeps, and since when (push wakes its device, not one awake
        # elsewhere; last activity tells when the user went).
        await self.server.hooks.fire_all("session-changed", session)
        if self.server.hooks.has(HIBERNATING_STANZA):
            # A connection that died unnoticed (a suspended phone app) took these unread: the
            # client waits for them as much as for what comes during hibernation.
            for el, _queued_at in state.queue:
                self._tasks.spawn(self._announce(HIBERNATING_STANZA, session, el))
        log.info("%s hibernates for %d s with %d stanzas unacknowledged", session.jid, state.timeout, len(state.queue))
        return HANDLED

    def _expire(self, session: Session) -> None:
        log.info("%s was not resumed in time", session.jid)
        self.end(session)

    def end(self, session: Session) -> None:
        """End a hibernating session: it is unregistered and ``session-closed`` goes out."""
        session.closed = True
        session.slot(SmState).cancel_timers()
        self._tasks.spawn(self._unregister(session))

    async def _unregister(self, session: Session) -> None:
        if self.server.sessions.remove(session):
            await self.server.hooks.fire_all("session-closed", session)

    async def resume(self, stream: C2SStream, el: Element) -> Handled:
        """§5: move a hibernating (or still connected) session of this account onto this stream."""
        answer, replay = await self._resume(stream, el)
        stream.send(answer.to_xml())
        if replay is not None:
            await replay()
        return HANDLED

    async def sasl2_resume(self, stream: C2SStream, request: Authenticate, results: list[Element]
                           ) -> Callable[[], Awaitable[None]] | None:
        """§5 inside XEP-0388: ``<resumed/>`` or ``<failed/>`` goes into the success; the
        stanzas to send again follow it."""
        el = request.find(RESUME)
        if el is None:
            return None
        answer, replay = await self._resume(stream, el)
        results.append(answer.to_xml())
        return replay

    async def _resume(self, stream: C2SStream, el: Element
                      ) -> tuple[Resumed | Failed, Callable[[], Awaitable[None]] | None]:
        if stream.session is not None:
            return Failed("unexpected-request"), None
        try:
            request = Resume.from_xml(el)
        except SmError:
            return Failed("bad-request"), None
        account = (stream.host or "", stream.username or "")
        session = self._resumable.get(request.previd)
        if session is None or session.closed or (session.host, session.username) != account:
            ended = self._ended.get(request.previd)
            h = ended[1] if ended is not None and ended[0] == account else None
            if session is None and ended is None:
                h = await self._elsewhere(request.previd, account)
            return Failed("item-not-found", h), None
        state = session.slot(SmState)
        # First, as it may refuse the resumption: the old stream must not be let go of for nothing.
        self._acknowledge(state, request.h)
        old = state.stream
        if old is not None and old is not stream:
            await old.let_go()
            if state.stream is not old or session.closed:
                # Meanwhile it was resumed on yet another stream, or it ended.
                return Failed("item-not-found"), None
        handled = state.handled()
        state.cancel_timers()
        state.requested = False
        stream.resume(session)
        state.stream = stream
        state.hibernating_since = None
        state.in_offset = handled - stream.stanzas_handled

        async def replay() -> None:
            for queued, queued_at in state.queue:
                stream.send(_stamped(queued, queued_at, session.host))
            log.info("%s resumed from %s, %d stanzas sent again", session.jid, stream.conn.peer, len(state.queue))
            self._want_ack(state)
            await self.server.hooks.fire_all("session-changed", session)
            await self.server.hooks.fire_all(RESUMED, session)

        return Resumed(handled, request.previd), replay

    async def _elsewhere(self, sm_id: str, account: tuple[str, str]) -> int | None:
        """An SM-ID this node does not know: the h of the session another node of the cluster
        ended, if the shared records know it. A session another live node holds is not moved
        here (its queue and state live there): that node is asked to end it, its queue goes to
        offline storage, and the client binds afresh and finds it there."""
        if self._records is None:
            return None
        record = await self._records.get(sm_id)
        if record is None or record.account != f"{account[1]}@{account[0]}":
            return None
        if record.h is None and record.node != self.server.cluster.name:
            log.info("%s asked to resume session %s of node %s here; it ends there", record.account, sm_id,
                     record.node)
            record = await self._records.take_over(sm_id, record.node)
        return record.h if record is not None else None

    # The end of a session -------------------------------------------------------------------

    async def closed(self, session: Session) -> None:
        """§4: what the client did not acknowledge is handled as not delivered."""
        state = session.slot(SmState)
        if not state.enabled or state.ended:
            return
        state.ended = True
        h = state.handled()
        state.stream = None
        session.closed = True
        state.cancel_timers()
        if state.id is not None:
            self._resumable.pop(state.id, None)
            self._ended[state.id] = ((session.host, session.username), h)
            if len(self._ended) > _ENDED_KEPT:
                del self._ended[next(iter(self._ended))]
        async with self._locks.hold(session.jid.bare):
            await self._settle(session)
        if state.id is not None:
            # Once the queue is in storage: a node waiting to take the session over reads it then.
            self._record(state.id, session, h, ENDED_TTL)

    async def before_offline(self, stanza: Stanza) -> None:
        """A message about to be stored for an account waits until the queues of its sessions
        that stopped taking stanzas are settled, so that stored messages keep their order."""
        assert stanza.to is not None
        bare = stanza.to.bare
        if _SETTLING.get() or bare not in self._unsettled:
            return
        async with self._locks.hold(bare):
            for session in list(self._unsettled.get(bare, ())):
                if session.closed:
                    await self._settle(session)

    async def _settle(self, session: Session) -> None:
        """Hand the queue of a session that stopped taking stanzas back to routing; the caller
        holds the account's lock, so settling and storing for one account never interleave."""
        state = session.slot(SmState)
        if state.settled:
            return
        state.settled = True
        undelivered = list(state.queue)
        state.queue.clear()
        if undelivered:
            log.info("%s ended with %d stanzas unacknowledged", session.jid, len(undelivered))
        try:
            await self._undelivered(session, undelivered)
        finally:
            # Only now may messages stored for the account pass without waiting for the lock.
            bare = session.jid.bare
            unsettled = self._unsettled.get(bare)
            if unsettled is not None:
                unsettled.discard(session)
                if not unsettled:
                    del self._unsettled[bare]

    async def _settle_late(self, session: Session, el: Element) -> None:
        async with self._locks.hold(session.jid.bare):
            await self._undelivered(session, [(el, time.time())])

    async def _undelivered(self, session: Session, elements: list[tuple[Element, float]]) -> None:
        """Route what ``session`` did not acknowledge (each with the time it was queued) as not
        delivered; the caller holds the account's lock."""
        token = _SETTLING.set(True)
        try:
            for el, queued_at in elements:
                try:
                    await self._not_delivered(session, el, queued_at)
                except Exception:
                    # One stanza that cannot be handled must not cost the others their way.
                    log.exception("failed to handle a stanza %s did not acknowledge", session.jid)
        finally:
            _SETTLING.reset(token)

    async def _not_delivered(self, session: Session, el: Element, queued_at: float) -> None:
        if el.tag == _MESSAGE:
            copies = self._copies.get(el)
            if copies is None:
                return
            copies.pending -= 1
            if copies.delivered or copies.pending > 0:
                return
            copies.delivered = True
            # Stored with the time it was first queued, as a resumption would have sent it again
            # (offline storage keeps that delay): the hibernation may have lasted minutes.
            await self._store(session, _stamped(el, queued_at, session.host))
        elif el.tag == _IQ and el.get("type") in ("get", "set"):
            await self._bounce(session, el, StanzaError("service-unavailable", "the resource went away"))

    async def _store(self, session: Session, el: Element) -> None:
        """RFC 6121 §8.5.2.2.1: to offline storage, as a message for an account with no resource."""
        stanza = Stanza.parse(el)
        if stanza.to is None or stanza.to.bare != session.jid.bare:
            stanza.to = session.jid
        refused: StanzaError | None = None
        try:
            kept = await self.server.hooks.fire("message/offline", stanza)
        except StanzaError as err:
            # Bounced after the try, not awaited in the except: see tests/test_compiled.py.
            refused, kept = err, None
        if refused is not None:
            await self._bounce(session, el, refused)
            return
        if kept is None:
            await self._bounce(session, el, StanzaError("service-unavailable", "the recipient is not online"))

    async def _bounce(self, session: Session, el: Element, err: StanzaError) -> None:
        """The error for a stanza that was not delivered goes to its sender, if that is a user."""
        stanza = Stanza.parse(el)
        sender = stanza.from_
        if sender is None or sender.local is None or sender.bare == session.jid.bare:
            return
        await self.server.router.send(stanza.error(err))

    async def _announce(self, event: str, *args: Any) -> None:
        await self.server.hooks.fire_all(event, *args)

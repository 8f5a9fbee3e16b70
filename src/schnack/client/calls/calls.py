"""Calls on the client: XEP-0353 (v0.8) initiation and a XEP-0166/0167 session driven over the
client's stanzas, with the media of media.py.

:class:`Calls` turns what the sans-IO :class:`~.session.CallSession` asks for into messages and
IQs, and what arrives into its input. Proposals go to the callee's bare JID, so every device
rings; the callee's other devices stop when one answers, since its ``<accept/>`` to its own bare
JID reaches them, and its answer as a carbon (XEP-0280); one that answered too (its link was
down) gets the caller's ``<finish/>`` once its own answer arrives second. Candidates trickle both ways (XEP-0176 §5.3): session-initiate and
session-accept carry our host candidates, and each server-reflexive or relayed one the media
finds later goes out in a transport-info; the peer's are given to the media once its description
has been, and held until then.

Calls are verified the way Conversations does it (:mod:`.verification`): the callee names its
OMEMO device in ``<proceed/>``, and both DTLS fingerprints travel OMEMO-encrypted for the other
side's device; :attr:`Call.verification` says who vouched for the peer's. Switching the data
saver mid-call changes our encoder and tells the peer our new receiving parameters in a
description-info (XEP-0166 §7.2), so that it can switch too. Media that closes by itself (the
network gone, RFC 7675 consent expired) ends the call with connectivity-error, unless the
peer's session-terminate comes first.

The link to the server may drop and come back during a call. The JMI messages go through the
outbox's volatile path (:meth:`~..outbox.Outbox.send_volatile`): written while the link is down,
a ``<propose/>``, ``<proceed/>`` (with its ``<accept/>``), ``<reject/>`` or ``<finish/>`` goes out
once it is back, so the peer does not ring on or talk into the void. Placing or answering a call therefore does not wait
for the link: the STUN and TURN of XEP-0215 are asked for alongside, and only the media waits
for them. A Jingle IQ cannot wait like that, since it needs its answer: it
waits for the link as every request does (:meth:`~..client.Client.iq`), and a session-initiate
or session-accept that got no answer ends the call with connectivity-error (and a finish the
peer gets once we are back); a lost transport-info or description-info leaves the call as it is.

A call that comes to this account and ends unanswered is a :class:`MissedCall`
(:meth:`~..client.Client.missed_calls`): the caller gave up or its ring time ran out before any
device of ours answered or declined it, the caller's device went away while it rang, this device
turned it away as busy, or it came too late to ring (a proposal older than the ring time, from
offline storage or from the archive catch-up of XEP-0313, with or without the caller's
``<retract/>``). A call that rang out here, or came too late to ring, is missed only once no
device of ours took it by the time the caller gave up or its device went away, or
:data:`OUTCOME_WAIT` after it was placed: a caller may ring longer than we do, and another
device of ours answer after this one fell silent. A caller whose link dies or whose app is
killed sends no ``<retract/>``: while a call rings here or waits for its outcome, this device
pings the full JID that placed it (XEP-0199) every :data:`PROBE_INTERVAL`, and at once when that
JID's unavailable presence arrives (RFC 6121 §4.5.2; a caller shows its presence to a callee
that does not see it, with the proposal, XEP-0353 §3.1, so that its server tells the callee when
it leaves, §4.6.3) or our ``<ringing/>`` to it comes back as an error (RFC 6120 §8.3); an error
for the ping and for disco#info (XEP-0030, which every Jingle client answers, also one without
XEP-0199) that says no such resource is there, again when asked once more :data:`GONE_GRACE`
later, means the device is gone (a device whose session could not be resumed binds its resource
again meanwhile). Each call, by its JMI id, is told once, however many ways its messages came. The calls
the first archive catch-up of a new device finds (it reads back 30 days) that were over before
its first login are told flagged :attr:`MissedCall.earlier`: the call history wants them, a
notification does not.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING
from xml.etree.ElementTree import Element

from ...xmpp import ns
from ...xmpp.errors import StanzaError
from ...xmpp.jid import JID
from ...xmpp.payloads import jmi
from ...xmpp.payloads.carbons import RECEIVED, SENT
from ...xmpp.payloads.extdisco import ExtdiscoError, Service, Services
from ...xmpp.payloads.forward import ForwardError, parse_stamp
from ...xmpp.payloads.jingle import JINGLE, Reason, jingle_error
from ...xmpp.payloads.jingle_ice import Candidate
from ...xmpp.stanza import Stanza
from ...xmpp.xml import element, qname, sub
from ..errors import ClientError, NotConnected, RequestTimeout, XmppError
from ..features.carbons import unwrap
from ..feed import Feed, Subscription
from .session import (
    ANSWERED_ELSEWHERE,
    RING_TIMEOUT,
    AnsweredElsewhere,
    CallSession,
    DescriptionInfo,
    Ended,
    Proceeded,
    RemoteCandidates,
    RemoteDescription,
    Reply,
    Ringing,
    SendIq,
    SendMessage,
    State,
    Step,
)
from .verification import Verification, VerificationFailed, is_sealed, open_sealed, seal

if TYPE_CHECKING:
    from ..client import Client
    from ..store import Store
    from .media import CallStats, LocalCandidate, MediaSession, WavSink
    from .sdp import RtpContents

log = logging.getLogger(__name__)

# How long the peer's session-terminate may take after the media closed by itself, before the
# call ends as lost (the peer's hang-up closes DTLS before its terminate crosses the servers).
MEDIA_LOST_GRACE = 5.0

# The pause before STUN and TURN are asked for again after the link failed the request.
SERVICES_RETRY = 1.0

# How a call ends locally when the client closes under it.
CLIENT_CLOSED = Reason("connectivity-error", "the client was closed")

_MESSAGE = qname(ns.CLIENT, "message")
_IQ = qname(ns.CLIENT, "iq")
_DELAY = qname(ns.DELAY, "delay")
_PING = qname(ns.PING, "ping")
_DISCO_INFO = qname(ns.DISCO_INFO, "query")
# The errors for disco#info that say the resource asked is not there (RFC 6121 §8.5.3.2.3 has its
# server answer an IQ for a resource that is no longer connected with service-unavailable; other
# servers say so with recipient-unavailable or item-not-found). Others (forbidden, a remote
# server not reached for now) tell nothing about the device.
_NOT_THERE = frozenset({"service-unavailable", "recipient-unavailable", "item-not-found"})


# The setting that keeps the ids of the missed calls told last, and how many it keeps: the first
# archive catch-up after a restart reads again what came since the last one ended, the calls
# told meanwhile too.
TOLD_SETTING = "missed_calls_told"
TOLD_KEPT = 1000

# The setting that keeps when this device first logged in (when a client first used its store):
# the first archive catch-up reads back 30 days, and the calls missed before then are the
# account's past, not news for this device.
FIRST_LOGIN_SETTING = "first_login"
# The first login of a store that caught up before that setting was kept: every call it reads is
# news, as it was.
LONG_AGO = datetime(1970, 1, 1, tzinfo=UTC)

# How long after a call was placed this device still listens for what became of it once it
# stopped ringing here (or came too late to ring), before it tells it as missed: the caller may
# ring longer than our RING_TIMEOUT (XEP-0353 sets no ring time) and another device of ours
# answer then. Five times our ring time, which callers hardly exceed; a caller whose device went
# away without its <retract/> is found sooner by the probes of PROBE_INTERVAL.
OUTCOME_WAIT = 300.0

# Why a call was missed (:attr:`MissedCall.reason`).
CANCELLED = "cancelled"  # the caller hung up before any of our devices answered
UNANSWERED = "unanswered"  # it rang out its time
BUSY = "busy"  # this device was in another call, and turned it away as busy
OFFLINE = "offline"  # it came too late to ring: no device of ours was online while it rang
GONE = "gone"  # the caller's device went away while it rang here, without its <retract/>

# How often a call that rings here, or waits for its outcome, asks whether the device that placed
# it is still there (a ping to its full JID, a few hundred bytes each way), and how long one such
# question waits for its answer.
PROBE_INTERVAL = 10.0

# How long after a device was found not there it is asked once more before it counts as gone: a
# caller whose resumable session (XEP-0198) could not be resumed binds its resource again in a
# new session, and a question that comes between the end of the old session and the binding of
# the new one (as one woken by the old session's unavailable presence does) finds nobody there.
# A caller whose device vanished is told as missed PROBE_INTERVAL + GONE_GRACE after it went at
# most, when its presence does not tell it sooner, and GONE_GRACE after its presence did.
GONE_GRACE = 5.0


@dataclass(frozen=True)
class MissedCall:
    """An incoming call no device of this account answered or declined (XEP-0353): who called,
    its JMI id, when it was placed (by the proposal's XEP-0203 stamp, the server's clock) and
    why it was missed (:data:`CANCELLED`, :data:`UNANSWERED`, :data:`BUSY`, :data:`OFFLINE`).
    ``earlier``: it was over before this device first logged in (placed longer than a call
    rings before that), and this device learnt of it only then (its first archive catch-up
    reads back 30 days): the account's past, for the call history, not news to notify of."""

    caller: JID
    id: str
    placed: datetime
    reason: str
    earlier: bool = False


@dataclass
class _Undecided:
    """A call that does not ring here (it came too late, from the archive, or rang out here),
    until it is known whether the account took it: the caller's retract or finish ends it, an
    answer or decline of one of our devices makes it no missed call."""

    caller: JID
    placed: datetime
    reason: str = OFFLINE
    ended: bool = False


class CallFailed(ClientError):
    """A call that did not come about: rejected, not answered, or the media failed."""

    def __init__(self, text: str, reason: Reason | None = None) -> None:
        super().__init__(text)
        self.reason = reason


@dataclass(frozen=True)
class MediaOptions:
    """What a call plays and records (a file, or a live source and sink such as the ones of
    :mod:`.audio`), and how it saves data."""

    data_saver: bool = False
    source: Path | Iterator[bytes] | None = None
    sink: Path | WavSink | None = None
    relay_only: bool = False


class Call:
    """One call on this device, outgoing or incoming."""

    def __init__(self, calls: Calls, session: CallSession) -> None:
        self._calls = calls
        self.session = session
        self.media: MediaSession | None = None
        self.options = MediaOptions()
        self.ringing = asyncio.Event()
        self.answered = asyncio.Event()
        self.connected = asyncio.Event()
        self.ended: asyncio.Future[Ended] = asyncio.get_running_loop().create_future()
        self.stats: CallStats | None = None
        # When the caller placed it (an incoming call's proposal stamp), and whether this device
        # answered it: a call it did not answer may be a missed one.
        self.placed = calls.client.store.now()
        self.answered_here = False
        # Who vouched for the peer's DTLS fingerprint (set once its description arrived).
        self.verification = Verification()
        # The peer's OMEMO device to encrypt our fingerprint for: the one named in <proceed/>
        # (caller), the one that encrypted the caller's (callee); None: plain fingerprints.
        self._seal_for: int | None = None
        # Our description as sent, the base of a description-info.
        self._local: RtpContents | None = None
        # Our server's STUN and TURN (XEP-0215), asked for as the call is placed or answered and
        # waited for only when the media is made.
        self.services: tuple[Service, ...] = ()
        self._fetching: asyncio.Task[tuple[Service, ...]] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._lost: asyncio.TimerHandle | None = None
        # The ids of our JMI messages, to tell an error bounced for one of them (RFC 6120 §8.3).
        self.message_ids: set[str] = set()
        # The peer's trickled candidates that came before its description reached the media,
        # which would drop them (before the offer, the callee's transceiver has no mid to find
        # them by); None once it has.
        self._early_candidates: list[tuple[str, Candidate]] | None = []
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def peer(self) -> JID:
        return self.session.peer

    @property
    def sid(self) -> str:
        return self.session.sid

    @property
    def state(self) -> State:
        return self.session.state

    # -- the application's side --------------------------------------------------------------

    async def hangup(self, reason: Reason | None = None) -> CallStats | None:
        """End the call (retract, reject, or terminate and finish) and return its statistics."""
        self.step(self.session.hang_up(reason))
        return await self.wait_ended()

    async def wait_connected(self, timeout: float) -> None:
        """Until media flows; :class:`CallFailed` if the call ends first."""
        connected = asyncio.ensure_future(self.connected.wait())
        try:
            async with asyncio.timeout(timeout):
                await asyncio.wait((connected, asyncio.shield(self.ended)), return_when=asyncio.FIRST_COMPLETED)
        finally:
            connected.cancel()
        if not self.connected.is_set():
            ended = self.ended.result()
            raise CallFailed(describe(ended), ended.reason)

    async def wait_ended(self) -> CallStats | None:
        await asyncio.shield(self.ended)
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        return self.stats

    def set_data_saver(self, on: bool) -> None:
        """Send with the data saver profile (or the normal one) from the next frame on, and ask
        the peer to send that way too: a description-info with our new Opus parameters
        (XEP-0166 §7.2; RFC 7587 §6.1 ``maxaveragebitrate``, ``usedtx``, ``ptime``). A peer that
        refuses or ignores it keeps sending as before; the call goes on."""
        from .media import DATA_SAVER, NORMAL, with_profile

        profile = DATA_SAVER if on else NORMAL
        self.options = MediaOptions(on, self.options.source, self.options.sink, self.options.relay_only)
        if self.media is not None:
            self.media.set_profile(profile)
        if self._local is not None:
            described = with_profile(self._local, profile)
            self.step(self.session.describe(tuple(replace(c, transport=None) for c in described.contents)))

    @property
    def data_saver(self) -> bool:
        return self.options.data_saver

    # -- driving the machine -----------------------------------------------------------------

    def step(self, step: Step) -> None:
        """Carry out what the machine asked for, in order."""
        for item in step:
            if isinstance(item, SendMessage):
                message = element(_MESSAGE, {"to": str(item.to), "type": "chat"})
                message.append(item.payload.to_xml())
                sub(message, "{urn:xmpp:hints}store")
                self.message_ids.add(self._calls.client.outbox.send_volatile(message))
            elif isinstance(item, SendIq):
                iq = element(_IQ, {"type": "set", "to": str(item.to), "id": item.id}, children=(item.jingle.to_xml(),))
                self._spawn(self._iq(iq, item.id), self._calls.requests)
            elif isinstance(item, Reply):
                continue  # answered by the IQ handler
            elif isinstance(item, Ringing):
                self.ringing.set()
            elif isinstance(item, Proceeded):
                self.answered.set()
                self._seal_for = item.device
                self._spawn(self._offer())
            elif isinstance(item, RemoteDescription):
                self._spawn(self._remote(item))
            elif isinstance(item, RemoteCandidates):
                self._remote_candidates(item)
            elif isinstance(item, DescriptionInfo):
                self._peer_profile(item)
            elif isinstance(item, AnsweredElsewhere):
                log.info("call %s was answered on another device (%s)", self.sid, item.kind)
            elif isinstance(item, Ended):
                elsewhere = any(isinstance(other, AnsweredElsewhere) for other in step)
                if self.session.role == "responder":
                    self._calls.ended_here(self, item, self.answered_here or elsewhere)
                else:
                    self._spawn(self._calls.show_presence(self.peer.bare, False), self._calls.requests)
                self._spawn(self._end(item))
        self._arm()

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deadline = self.session.deadline
        if deadline is not None and not self.session.ended:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_at(deadline, lambda: self.step(self.session.on_timeout(loop.time())))

    def _spawn(self, work: Coroutine[object, object, None], tasks: set[asyncio.Task[None]] | None = None) -> None:
        into = self._tasks if tasks is None else tasks
        task = asyncio.ensure_future(work)
        into.add(task)
        task.add_done_callback(into.discard)

    async def _iq(self, iq: Element, iq_id: str) -> None:
        error: StanzaError | None = None
        try:
            await self._calls.client.iq(iq)
        except XmppError as err:
            error = StanzaError(err.condition, err.text)
        except ClientError as err:
            error = StanzaError("remote-server-timeout", str(err))
        self.step(self.session.on_iq_response(iq_id, error))

    def fetch_services(self) -> None:
        """Ask for our server's STUN and TURN now, without waiting: the link may be down while
        the call is placed or answered, and only the media needs them."""
        self._fetching = asyncio.ensure_future(self._calls.fetch_services())

    async def _services_known(self) -> bool:
        """Wait for the STUN and TURN asked for; False if the call ended meanwhile."""
        if self._fetching is not None and self.media is None:
            self.services = await self._fetching
        return not self.session.ended

    def _media(self) -> MediaSession:
        if self.media is None:
            from .media import DATA_SAVER, NORMAL, MediaSession

            o = self.options
            self.media = MediaSession(services=self.services, relay_only=o.relay_only,
                                      profile=DATA_SAVER if o.data_saver else NORMAL, source=o.source, sink=o.sink,
                                      on_candidate=self._local_candidate)  # fmt: skip
            self.media.pc.on("connectionstatechange", self._media_state)
        return self.media

    def _media_state(self) -> None:
        media = self.media
        if media is None:
            return
        if media.connected.is_set():
            self.connected.set()
        if media.failed.is_set() and not self.session.ended:
            if media.pc.iceConnectionState == "completed":
                # ICE worked, so DTLS failed: RFC 5763 §5, a certificate that does not match the
                # fingerprint in the description (someone in between), or a broken handshake.
                reason = Reason("security-error", "DTLS failed: the peer's certificate does not match its fingerprint")
            else:
                reason = Reason("connectivity-error", "ICE or DTLS failed")
            self.step(self.session.hang_up(reason))
        elif media.lost.is_set() and not self.session.ended and self._lost is None:
            self._lost = asyncio.get_running_loop().call_later(MEDIA_LOST_GRACE, self._media_lost)

    def _media_lost(self) -> None:
        """XEP-0166 §7.4 connectivity-error: the media closed and no session-terminate followed."""
        self.step(self.session.hang_up(Reason("connectivity-error", "the media connection was lost")))

    async def _offer(self) -> None:
        if not await self._services_known():
            return
        try:
            offer = await self._media().offer()
        except Exception as err:
            log.warning("call %s: no offer: %s", self.sid, err)
            self.step(self.session.hang_up(Reason("failed-application", str(err))))
            return
        self._local = offer
        sealed = await self._sealed(offer)
        if not self.session.ended:
            self.step(self.session.initiate(sealed, asyncio.get_running_loop().time()))

    async def _sealed(self, contents: RtpContents) -> RtpContents:
        """Our description with its fingerprint encrypted for the peer's device, when there is
        one; the plain one (and an unverified call) when OMEMO cannot do it."""
        if self._seal_for is None:
            return contents
        try:
            return await seal(contents, self._calls.client.omemo, self.peer, self._seal_for)
        except ClientError as err:
            log.warning("call %s: the DTLS fingerprint goes unencrypted: %s", self.sid, err)
            return contents

    async def _opened(self, contents: RtpContents) -> RtpContents:
        """The peer's description with its fingerprint decrypted; records who vouched for it."""
        if not is_sealed(contents):
            return contents
        expected = self._seal_for if self.session.role == "initiator" else None
        opened, device = await open_sealed(contents, self._calls.client.omemo, self.peer, expected)
        self.verification = Verification(device)
        if self.session.role == "responder":
            self._seal_for = device.id
        return opened

    async def _remote(self, event: RemoteDescription) -> None:
        try:
            contents = await self._opened(event.contents)
        except VerificationFailed as err:
            log.warning("call %s: %s", self.sid, err)
            self.step(self.session.hang_up(Reason("security-error", str(err))))
            return
        if not await self._services_known():
            return
        try:
            if self.session.role == "responder":
                answer = await self._media().answer(contents)
                self._release_candidates()
                self._local = answer
                sealed = await self._sealed(answer)
                if not self.session.ended:
                    self.step(self.session.accept(sealed))
            else:
                await self._media().accepted(contents)
                self._release_candidates()
        except Exception as err:
            log.warning("call %s: the description was refused: %s", self.sid, err)
            self.step(self.session.hang_up(Reason("failed-application", str(err))))

    def _peer_profile(self, event: DescriptionInfo) -> None:
        from .media import opus_of

        opus = next((pt for c in event.contents if (pt := opus_of(c)) is not None), None)
        if opus is not None and self.media is not None:
            log.info("call %s: the peer asks for new Opus parameters", self.sid)
            self.media.peer_asks(opus)

    def _local_candidate(self, found: LocalCandidate) -> None:
        """One of our candidates the media found after our description: a transport-info
        (XEP-0176 §5.3), or held by the machine until the peer knows the session."""
        self.step(self.session.add_candidate(found.content, found.candidate, found.ufrag, found.pwd))

    def _release_candidates(self) -> None:
        """The media has the peer's description: the candidates held back go to it."""
        early, self._early_candidates = self._early_candidates or [], None
        if early:
            self._spawn(self._add_candidates(early))

    def _remote_candidates(self, event: RemoteCandidates) -> None:
        candidates = [(event.content, c) for c in event.transport.candidates]
        if self._early_candidates is not None:
            self._early_candidates += candidates
        else:
            self._spawn(self._add_candidates(candidates))

    async def _add_candidates(self, candidates: list[tuple[str, Candidate]]) -> None:
        if self.media is None:
            return
        for content, candidate in candidates:
            with contextlib.suppress(Exception):
                await self.media.add_candidate(content, candidate)

    def stop(self) -> None:
        """The client closes: no timer or task of this call outlives it, and whoever waits for
        its end hears of it."""
        self._cancel_timers()
        for task in self._tasks:
            task.cancel()
        self._calls.forget(self)
        if not self.ended.done():
            self.ended.set_result(Ended(CLIENT_CLOSED, False))

    def _cancel_timers(self) -> None:
        for timer in (self._timer, self._lost):
            if timer is not None:
                timer.cancel()
        self._timer = self._lost = None
        # A request for STUN and TURN may wait for a link that does not come back.
        if self._fetching is not None:
            self._fetching.cancel()

    async def _end(self, event: Ended) -> None:
        self._cancel_timers()
        self._calls.forget(self)
        if self.media is not None:
            self.stats = await self.media.close()
        if not self.ended.done():
            self.ended.set_result(event)


class IncomingCall:
    """A call ringing on this device: answer or reject it."""

    def __init__(self, call: Call) -> None:
        self.call = call

    @property
    def caller(self) -> JID:
        return self.call.peer

    async def answer(self, *, data_saver: bool = False, source: Path | Iterator[bytes] | None = None,
                     sink: Path | WavSink | None = None, relay_only: bool = False) -> Call:
        """XEP-0353 §3.3: take the call on this device; the session follows from the caller.

        The answer is taken also while the link to the server is down: the ``<proceed/>`` goes
        out once it is back, and the call waits for the session as long as it would have rung.
        :class:`CallFailed` if the call is over (the caller gave up, another device took it)."""
        call = self.call
        self._check_ringing()
        call.options = MediaOptions(data_saver, source, sink, relay_only)
        device = await call._calls.omemo_device()
        self._check_ringing()
        call.fetch_services()
        client = call._calls.client
        call.answered_here = True
        call.step(call.session.proceed(asyncio.get_running_loop().time(), device, link_down=not client.connected))
        return call

    def _check_ringing(self) -> None:
        if self.call.session.ended:
            raise CallFailed("the call is over", (self.call.ended.result().reason if self.call.ended.done() else None))

    async def reject(self) -> None:
        """XEP-0353 §3.5: decline the call (the caller and our other devices stop ringing)."""
        await self.call.hangup()


def _sent_at(stamps: list[Element]) -> datetime | None:
    """When a message was first sent, by the oldest of its XEP-0203 delay stamps; None for one
    without (it comes live). ForwardError for a stamp that does not parse."""
    if not stamps:
        return None
    return min(parse_stamp(d.get("stamp") or "") for d in stamps)


def missed_reason(ended: Ended, answered: bool) -> str | None:
    """Why an incoming call that ended here was missed, or None if it was not: answered (here or
    on another of our devices), declined by us, given up in a tie break (XEP-0353 §4.1), or
    silenced as the client closed."""
    condition = ended.reason.condition
    if answered or ended.reason == ANSWERED_ELSEWHERE or condition == "expired":
        return None
    if not ended.by_peer:
        return {"busy": BUSY, "timeout": UNANSWERED}.get(condition)
    return {"timeout": UNANSWERED, "gone": GONE}.get(condition, CANCELLED)


def _for_another_device(message: Element, own: JID) -> bool:
    """A carbon of a message to another of our devices by its full JID (XEP-0280 §6): the
    caller's ``<finish/>`` to a device whose answer came too late must not end the call this
    device took."""
    try:
        to = JID.parse(message.get("to") or "")
    except ValueError:
        return False
    return to.resource is not None and to.bare == own.bare and to != own


def describe(ended: Ended) -> str:
    """Why a call ended, in a sentence."""
    condition = ended.reason.condition
    if ended.reason.text and (ended.reason == ANSWERED_ELSEWHERE or condition == "connectivity-error"):
        return ended.reason.text
    text = {
        "decline": "the call was rejected",
        "busy": "the callee is busy",
        "timeout": "nobody answered" if ended.by_peer is False else "the call timed out",
        "cancel": "the caller hung up",
        "success": "the call ended",
        "connectivity-error": "no connection",
        "failed-application": "the media could not be set up",
        "gone": "the peer is gone",
        "security-error": "the call failed its security check",
    }.get(condition, f"the call ended ({condition})")
    return text + (f": {ended.reason.text}" if ended.reason.text else "")


def _told_before(kept: str | None) -> list[str]:
    """The ids of the missed calls told last, as :data:`TOLD_SETTING` keeps them; none from a
    value that is not such a list (a damaged store forgets them, it does not stop the client)."""
    try:
        told = json.loads(kept or "[]")
    except ValueError:
        return []
    return [sid for sid in told if isinstance(sid, str)] if isinstance(told, list) else []


def first_login(store: Store) -> datetime:
    """When this device first logged in, as its store keeps it (:data:`FIRST_LOGIN_SETTING`):
    now, for a store first used now; :data:`LONG_AGO` for one that caught up from the archive
    before the setting was kept. A damaged value counts as such a store's."""
    kept = store.setting(FIRST_LOGIN_SETTING)
    if kept is not None:
        with contextlib.suppress(ValueError):
            when = datetime.fromisoformat(kept)
            if when.tzinfo is not None:
                return when
    when = store.now() if kept is None and store.archive_position() is None else LONG_AGO
    store.save_setting(FIRST_LOGIN_SETTING, when.isoformat())
    return when


def describe_missed(reason: str) -> str:
    """Why a call was missed, in a few words."""
    return {
        CANCELLED: "the caller hung up",
        UNANSWERED: "nobody answered",
        BUSY: "busy in another call",
        OFFLINE: "no device was online",
        GONE: "the caller went offline",
    }.get(reason, reason)


class Calls:
    """The client's calls: proposals in and out, Jingle IQs to the session they belong to."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.incoming: Feed[IncomingCall] = Feed(backlog=0)
        # Kept while nobody listens: the calls missed while we were offline come at login.
        self.missed: Feed[MissedCall] = Feed()
        self._calls: dict[str, Call] = {}
        # The calls (by JMI id) this device has had a session for or has told about: a proposal
        # that comes again (from the archive after offline storage, or after a restart) is not
        # another call.
        self._told = _told_before(client.store.setting(TOLD_SETTING))
        self._first_login = first_login(client.store)
        self._known: set[str] = set(self._told)
        self._undecided: dict[str, _Undecided] = {}
        self._settling: asyncio.Task[None] | None = None
        self._settle_timer: asyncio.TimerHandle | None = None
        # The calls (by JMI id) whose caller's device is looked after, each with that full JID and
        # what wakes its probe before the next is due.
        self._probes: dict[str, tuple[JID, asyncio.Event, asyncio.Task[None]]] = {}
        # The Jingle requests of our calls waiting for their answers, which the end of a call
        # does not wait for: a session-terminate written while the link is down waits for it as
        # long as the client waits for any request. The client's closing stops them.
        self.requests: set[asyncio.Task[None]] = set()
        client.on_message(self._on_message)
        client.handle_iq("set", JINGLE, self._on_jingle)
        client.on_archived(self._archived)
        client.on_presence(self._on_presence)

    def forget(self, call: Call) -> None:
        if self._calls.get(call.sid) is call:
            del self._calls[call.sid]

    async def fetch_services(self) -> tuple[Service, ...]:
        """XEP-0215 §3.1: STUN and TURN from our server, fresh credentials each call; none if
        the server offers none. A request the link's loss cut short is made again once the link
        is back, for as long as the client runs (the call cancels it when it ends)."""
        while True:
            request = element(_IQ, {"type": "get", "to": str(self.client.account.domain)},
                              children=(Services().to_xml(),))  # fmt: skip
            try:
                reply = await self.client.iq(request)
                return Services.from_xml(reply[0]).services if len(reply) else ()
            except (NotConnected, RequestTimeout) as err:
                if self.client.stopped:
                    return ()
                log.debug("asking for external services again: %s", err)
                # The request mostly waits for the link itself; this pause only keeps a link that
                # is closing (and refuses at once) from being asked in a busy loop.
                await asyncio.sleep(SERVICES_RETRY)
            except (XmppError, ExtdiscoError) as err:
                log.debug("no external services: %s", err)
                return ()

    async def omemo_device(self) -> int | None:
        """Our legacy OMEMO device, which vouches for our DTLS fingerprint in a verified call
        (named in ``<proceed/>``); None without OMEMO, so the call goes unverified."""
        from ..omemo import OLDMEMO

        omemo = self.client.omemo
        if OLDMEMO not in omemo.settings.namespaces:
            return None
        try:
            return (await omemo.own_device()).id
        except ClientError as err:
            log.info("calls go unverified: %s", err)
            return None

    async def call(self, to: JID, options: MediaOptions, ring_timeout: float = RING_TIMEOUT) -> Call:
        """XEP-0353 §3.1: propose an audio call to every device of ``to``, with our presence if
        ``to`` does not see it (:meth:`show_presence`); while the link to the server is down,
        the proposal goes out once it is back."""
        now = asyncio.get_running_loop().time()
        session, step = CallSession.outgoing(secrets.token_hex(12), self.client.jid, to.bare, now, ring_timeout=ring_timeout)
        call = Call(self, session)
        call.options = options
        call.fetch_services()
        self._calls[session.sid] = call
        call._spawn(self.show_presence(to.bare, True), self.requests)
        call.step(step)
        return call

    async def show_presence(self, to: JID, shown: bool) -> None:
        """XEP-0353 §3.1: a callee that does not see our presence gets it with the proposal,
        ``shown``, until the call is over, so that our server tells it when this device leaves
        (RFC 6121 §4.6.3): its devices then ask at once whether we are still there, instead of
        at their next probe."""
        with contextlib.suppress(ClientError):
            if shown:
                await self.client.direct_presence(to)
            else:
                await self.client.withdraw_presence(to)

    async def hangup_all(self) -> None:
        """End our calls as the client closes, and stop their timers, tasks and requests; a call
        only ringing here falls silent and goes on ringing on the other devices, since rejecting
        it would stop them too (XEP-0353 §3.5)."""
        for call in list(self._calls.values()):
            if call.session.role == "responder" and call.state in (State.PROPOSED, State.RINGING):
                call.step(call.session.fall_silent(CLIENT_CLOSED))
            else:
                call.step(call.session.hang_up())
            with contextlib.suppress(Exception):
                await asyncio.wait_for(call.wait_ended(), 5)
            call.stop()
        for request in self.requests:
            request.cancel()
        for _, _, probing in list(self._probes.values()):
            probing.cancel()
        if self._settling is not None:
            self._settling.cancel()
        if self._settle_timer is not None:
            self._settle_timer.cancel()

    def _on_message(self, el: Element) -> None:
        stamps = el.findall(_DELAY)
        try:
            stanza = Stanza.parse(el)
        except StanzaError:
            return
        sender = stanza.from_
        if stanza.type == "error":
            self._bounced(stanza)
            return
        copied = any(child.tag in (RECEIVED, SENT) for child in el)
        if copied:
            carbon = unwrap(stanza, self.client.account)
            if carbon is None:
                return
            el = carbon.message
            if _for_another_device(el, self.client.jid):
                return
            stamps += el.findall(_DELAY)
            try:
                sender = JID.parse(el.get("from") or "")
            except ValueError:
                return
        try:
            found = jmi.find(el)
        except jmi.JmiError:
            return
        if found is None or sender is None:
            return
        call = self._calls.get(found.id)
        now = asyncio.get_running_loop().time()
        if call is not None and not call.session.ended:
            # However old: a retract or finish held for us while our link was down (XEP-0203
            # stamps what a resumed session or offline storage hands over) still ends the call.
            call.step(call.session.on_message(sender, found, now))
            return
        if found.kind == "proceed" and not copied and stanza.to == self.client.jid:
            self._no_such_call(stanza, found.id)
            return
        undecided = self._undecided.get(found.id)
        if undecided is not None:
            self._news(found, sender, undecided)
            return
        if not self._proposed_to_us(found, sender):
            return
        try:
            placed = _sent_at(stamps) or self.client.store.now()
        except ForwardError:
            placed = self.client.store.now() - timedelta(seconds=RING_TIMEOUT)
        waited = max(0.0, (self.client.store.now() - placed).total_seconds())
        if waited >= RING_TIMEOUT:
            # An old proposal from offline storage or the archive rings no more, but the call
            # was missed unless one of our devices took it.
            self._hold(found.id, _Undecided(sender, placed))
            return
        session, step = CallSession.incoming(self.client.jid, sender, found, now, ring_timeout=RING_TIMEOUT - waited)
        incoming = Call(self, session)
        incoming.placed = placed
        self._calls[session.sid] = incoming
        self._known.add(session.sid)
        incoming.step(step)
        if stamps:
            incoming._spawn(self._ring_when_caught_up(incoming))
        else:
            self._ring(incoming)

    def _proposed_to_us(self, found: jmi.JingleMessage, sender: JID) -> bool:
        """An audio call someone else proposes, for a call we have not had yet."""
        return (found.kind == "propose" and sender.bare != self.client.account and "audio" in found.media
                and found.id not in self._known)  # fmt: skip

    # -- missed calls ------------------------------------------------------------------------

    def ended_here(self, call: Call, ended: Ended, answered: bool) -> None:
        """An incoming call ended on this device: told as missed if it was. One that only rang
        out here is held until the account's other devices and the caller tell what became of
        it (:meth:`_settle`)."""
        reason = missed_reason(ended, answered)
        if reason == UNANSWERED and not ended.by_peer:
            self._undecided[call.sid] = _Undecided(call.peer, call.placed, reason)
            if self._settling is None or self._settling.done():
                self._settle()
        elif reason is not None:
            self._tell(MissedCall(call.peer, call.sid, call.placed, reason))

    def _tell(self, missed: MissedCall) -> None:
        self._known.add(missed.id)
        self._told = [*self._told, missed.id][-TOLD_KEPT:]
        self.client.store.save_setting(TOLD_SETTING, json.dumps(self._told))
        # A call that could still ring when this device first logged in is news, however it came.
        earlier = missed.placed + timedelta(seconds=RING_TIMEOUT) < self._first_login
        self.missed.publish(replace(missed, earlier=earlier))

    def _archived(self, el: Element, stamp: datetime | None) -> None:
        """A message the archive catch-up read (XEP-0313): a proposal this device did not get, or
        what became of one it holds. A call this device has or had is left to its session."""
        try:
            found = jmi.find(el)
            sender = JID.parse(el.get("from") or "")
        except (jmi.JmiError, ValueError):
            return
        if found is None:
            return
        call = self._calls.get(found.id)
        if call is not None and not call.session.ended:
            return
        undecided = self._undecided.get(found.id)
        if undecided is not None:
            self._news(found, sender, undecided)
        elif self._proposed_to_us(found, sender):
            self._hold(found.id, _Undecided(sender, stamp or self.client.store.now()))

    def _hold(self, sid: str, undecided: _Undecided) -> None:
        """Keep a proposal that did not ring until what came with it has been read."""
        self._undecided[sid] = undecided
        if self._settling is None or self._settling.done():
            self._settling = asyncio.ensure_future(self._settle_when_caught_up())

    def _news(self, found: jmi.JingleMessage, sender: JID, undecided: _Undecided) -> None:
        """XEP-0353 §3.3-§3.5 for a call that does not ring here: one of our devices answered or
        declined it (no missed call), or the caller ended it."""
        if sender.bare == self.client.account and found.kind in ("proceed", "accept", "reject"):
            del self._undecided[found.id]
            self._known.add(found.id)
            return
        if sender.bare != undecided.caller.bare or found.kind not in ("retract", "finish"):
            return
        reason = missed_reason(Ended(found.reason or Reason("cancel"), True), False)
        if reason is None:
            del self._undecided[found.id]
            self._known.add(found.id)
            return
        if undecided.reason == OFFLINE and found.kind == "retract":
            undecided.reason = reason
        undecided.ended = True
        if self._settling is None or self._settling.done():
            self._settle()

    async def _settle_when_caught_up(self) -> None:
        """What was held for us comes before the answer to a ping (XEP-0199), and the archive's
        answers to a proposal come by the end of its catch-up: only then is it known whether
        one of our devices took it."""
        ping = element(_IQ, {"type": "get", "to": str(self.client.account.domain)}, children=(element(_PING),))
        with contextlib.suppress(ClientError):
            await self.client.iq(ping)
        await self.client.caught_up()
        self._settle()

    def _settle(self) -> None:
        """Tell the held calls that are over: ended by the caller, or placed at least
        :data:`OUTCOME_WAIT` ago; one that may still ring elsewhere is looked at again when its
        time is up."""
        if self._settle_timer is not None:
            self._settle_timer.cancel()
            self._settle_timer = None
        now = self.client.store.now()
        left: list[float] = []
        for sid, undecided in list(self._undecided.items()):
            waited = (now - undecided.placed).total_seconds()
            if undecided.ended or waited >= OUTCOME_WAIT:
                del self._undecided[sid]
                self._tell(MissedCall(undecided.caller, sid, undecided.placed, undecided.reason))
            else:
                left.append(OUTCOME_WAIT - waited)
                self._probe(sid, undecided.caller)
        if left and not self.client.stopped:
            self._settle_timer = asyncio.get_running_loop().call_later(min(left), self._settle)

    def _ring(self, incoming: Call) -> None:
        if self._crossed(incoming):
            return
        incoming.step(incoming.session.ring())
        self.incoming.publish(IncomingCall(incoming))
        self._probe(incoming.sid, incoming.peer)

    async def _ring_when_caught_up(self, incoming: Call) -> None:
        """A proposal held for us while our link was down rings only once what was held with it
        has arrived: the caller's retract, if it gave up, comes before the answer to a ping
        (XEP-0199), since the server hands over what it held in order and first."""
        ping = element(_IQ, {"type": "get", "to": str(self.client.account.domain)}, children=(element(_PING),))
        with contextlib.suppress(ClientError):
            await self.client.iq(ping)
        if not incoming.session.ended:
            self._ring(incoming)

    # -- the caller's device -----------------------------------------------------------------

    def _waits_on_caller(self, sid: str) -> bool:
        """Whether call ``sid`` still depends on its caller: it rings here, or it is held until
        its outcome is known and the caller has not ended it."""
        call = self._calls.get(sid)
        if call is not None and call.session.role == "responder" and call.state in (State.PROPOSED, State.RINGING):
            return True
        undecided = self._undecided.get(sid)
        return undecided is not None and not undecided.ended

    def _probe(self, sid: str, caller: JID) -> None:
        """Look after the device that placed call ``sid`` for as long as the call waits on it."""
        if sid in self._probes or self.client.stopped:
            return
        wake = asyncio.Event()
        probing = asyncio.ensure_future(self._probing(sid, caller, wake))
        self._probes[sid] = (caller, wake, probing)
        probing.add_done_callback(lambda _: self._probes.pop(sid, None))

    def _probe_now(self, caller: JID) -> None:
        """A sign that ``caller`` (a full JID) went away: its calls' probes ask at once."""
        for probed, wake, _ in self._probes.values():
            if probed == caller:
                wake.set()

    async def _probing(self, sid: str, caller: JID, wake: asyncio.Event) -> None:
        """Ask every :data:`PROBE_INTERVAL`, or when woken, whether ``caller`` is still there; the
        call ends as the caller's once it is gone, found not there twice, :data:`GONE_GRACE`
        apart. A probe that got no answer is followed by the next one at once, so that one whose
        answer the vanishing device took along costs no more than one interval."""
        loop = asyncio.get_running_loop()
        while self._waits_on_caller(sid) and not self.client.stopped:
            wake.clear()
            asked = loop.time()
            if await self._gone(caller) and await self._still_gone(sid, caller) and self._waits_on_caller(sid):
                self._caller_gone(sid)
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, asked + PROBE_INTERVAL - loop.time())):
                    await wake.wait()

    async def _gone(self, caller: JID) -> bool:
        """Whether the device at ``caller`` is known to be gone: a ping to it (XEP-0199 §4.3)
        came back as an error, and disco#info (XEP-0030 §3.1), which also a client without
        XEP-0199 answers (RFC 6120 §8.4 has it refuse the ping with the same service-unavailable
        that its server sends for a resource that is no longer connected), with one of
        :data:`_NOT_THERE`. No answer in time, or our own link down, tells nothing: the caller's
        device may be between networks, its server holding what comes for it (XEP-0198 §5)."""
        try:
            await self.client.iq(self._probe_request(caller, _PING), timeout=PROBE_INTERVAL)
            return False
        except XmppError:
            pass
        except ClientError:
            return False
        try:
            await self.client.iq(self._probe_request(caller, _DISCO_INFO), timeout=PROBE_INTERVAL)
        except XmppError as err:
            return err.condition in _NOT_THERE
        except ClientError:
            pass
        return False

    async def _still_gone(self, sid: str, caller: JID) -> bool:
        """Whether ``caller``, found not there, is still not there :data:`GONE_GRACE` later: a
        device whose session could not be resumed (XEP-0198 §5) binds the same resource again
        (RFC 6120 §7.7), and until then its server answers for it as for a device gone."""
        log.info("call %s: nobody at %s, asking again in %.0f s", sid, caller, GONE_GRACE)
        await asyncio.sleep(GONE_GRACE)
        return self._waits_on_caller(sid) and await self._gone(caller)

    @staticmethod
    def _probe_request(caller: JID, payload: str) -> Element:
        return element(_IQ, {"type": "get", "to": str(caller)}, children=(element(payload),))

    def _caller_gone(self, sid: str) -> None:
        """The device that placed call ``sid`` is gone without its ``<retract/>``: nobody can
        take the call any more. Ringing here, it stops and is missed (:data:`GONE`); held, it is
        told as missed as it is."""
        call = self._calls.get(sid)
        if call is not None and not call.session.ended:
            log.info("call %s: the caller's device %s is gone", sid, call.peer)
            call.step(call.session.caller_gone())
            return
        undecided = self._undecided.get(sid)
        if undecided is not None:
            undecided.ended = True
            if self._settling is None or self._settling.done():
                self._settle()

    def _on_presence(self, el: Element) -> None:
        """RFC 6121 §4.5.2: unavailable presence from a full JID whose call waits on it."""
        if el.get("type") != "unavailable" or not self._probes:
            return
        with contextlib.suppress(ValueError):
            sender = JID.parse(el.get("from") or "")
            if sender.resource is not None:
                self._probe_now(sender)

    def _crossed(self, incoming: Call) -> bool:
        """XEP-0353 §4.1: a proposal from someone we are proposing a call to ourselves. The
        proposal with the lower session id ("i;octet", RFC 4790 §9.3) goes on and the other is
        given up by both sides: ours retracted, or theirs rejected. True if theirs lost."""
        ours = next((c for c in self._calls.values() if c.session.role == "initiator" and c.peer.bare == incoming.peer.bare
                     and c.state in (State.PROPOSED, State.RINGING)), None)  # fmt: skip
        if ours is None:
            return False
        if incoming.sid.encode() < ours.sid.encode():
            ours.step(ours.session.lose_tie_break())
            return False
        incoming.step(incoming.session.lose_tie_break())
        return True

    def _no_such_call(self, stanza: Stanza, sid: str) -> None:
        """A ``<proceed/>`` to this device for a call it no longer has: the call ended here (another
        device of the callee declined it, nobody answered in time, or it is over) before a device
        that answered while its link was down got its answer out. The error (RFC 6120 §8.3, as
        Conversations answers it) ends that answer at once instead of at its setup timer. Only one
        to our full JID is answered: one to our bare JID may be for another of our devices."""
        reply = stanza.error(StanzaError("item-not-found", f"no call {sid} here: it is over"))
        self.client.write(reply)

    def _bounced(self, stanza: Stanza) -> None:
        """An error for one of our JMI messages: the callee's server would not take the call, or
        the caller no longer has the call our answer was for. Our ``<ringing/>`` coming back
        says the caller's device may be gone: it is asked at once (:meth:`_gone`), and the call
        rings on until it is known; a ``<reject/>`` would tell our other devices the call was
        declined, and none would tell it as missed."""
        call = next((c for c in self._calls.values() if stanza.id in c.message_ids), None)
        if call is None:
            return
        if call.session.role == "responder" and call.state in (State.PROPOSED, State.RINGING):
            log.info("call %s: our ringing came back from %s", call.sid, call.peer)
            self._probe_now(call.peer)
            return
        error = XmppError.from_stanza(stanza.el)
        what = "cannot be called" if call.session.role == "initiator" else "no longer has this call"
        text = f"{call.peer} {what}: {error.condition}" + (f" ({error.text})" if error.text else "")
        call.step(call.session.hang_up(Reason("connectivity-error", text)))

    def _on_jingle(self, stanza: Stanza) -> Element | None:
        """XEP-0166 §8: a Jingle IQ for one of our sessions, or unknown-session."""
        payload = stanza.el[0]
        call = self._calls.get(payload.get("sid") or "")
        if call is None or stanza.from_ is None:
            raise jingle_error("unknown-session", "no such session")
        step = call.session.on_iq(stanza.from_, stanza.id or "", payload)
        call.step(step)
        reply = next((item for item in step if isinstance(item, Reply)), None)
        if reply is not None and reply.error is not None:
            raise reply.error
        return None

    def subscribe(self) -> Subscription[IncomingCall]:
        return self.incoming.subscribe()

    def subscribe_missed(self) -> Subscription[MissedCall]:
        return self.missed.subscribe()

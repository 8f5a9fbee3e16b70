"""One call as a sans-IO state machine: XEP-0353 (v0.8) initiation, then a XEP-0166 RTP session.

::

    caller                                     callee (every device rings)
    propose ─────────────── to the bare JID ──▶ Incoming
    Ringing ◀────────────── ringing ─────────── ring()
    Proceeded ◀──────────── proceed ─────────── proceed()   (accept to our own bare JID:
                                                             other devices AnsweredElsewhere)
    initiate(offer) ─────── session-initiate ─▶ RemoteDescription(offer)
    RemoteDescription ◀──── session-accept ──── accept(answer)
    add_candidate() ◀─────▶ transport-info ◀──▶ add_candidate()        (trickle ICE, XEP-0176 §5.3)
    describe() ◀──────────▶ description-info ◀▶ describe()             (new receiving parameters, XEP-0166 §7.2)
    hang_up() ──────────── session-terminate + finish ──▶ Ended

Before proceed the caller may ``retract`` and the callee ``reject`` (XEP-0353 §3.4, §3.5); the
device that proceeded may still reject until its session-accept, as Conversations does. The
machine does no I/O: each method takes what arrived and returns what to send (:class:`SendMessage`,
:class:`SendIq`, :class:`Reply`) and what the application should learn (events). Time is the
caller's: :attr:`CallSession.deadline` says when :meth:`CallSession.on_timeout` is due (nobody
answers, or the session is not set up in time).

Stanzas that do not fit get the Jingle errors of XEP-0166 §8: ``unknown-session`` for another
session id or a sender that is not the peer, ``out-of-order`` for an action the state does not
allow, ``unsupported-info`` for a session-info payload not understood; a session-initiate without
an RTP description over ICE-UDP is acknowledged and terminated with ``unsupported-applications``
or ``unsupported-transports`` (§6.3.2).
"""

from __future__ import annotations

import enum
import itertools
from dataclasses import dataclass, field
from xml.etree.ElementTree import Element

from ...xmpp.errors import StanzaError
from ...xmpp.jid import JID
from ...xmpp.payloads.jingle import Content, Info, Jingle, Reason, jingle_error
from ...xmpp.payloads.jingle_ice import Candidate, IceUdpTransport, JinglePayloadError
from ...xmpp.payloads.jingle_rtp import INFO, RtpDescription
from ...xmpp.payloads.jmi import JingleMessage
from .sdp import RtpContents

RING_TIMEOUT = 60.0
SETUP_TIMEOUT = 30.0
# How a device of the callee ends when another device of the account took the call: it rang and
# learnt of the other's <accept/> or <proceed/> (XEP-0353 §3.3), or it answered too and the
# caller's <finish/> says the call went on with the first answer.
ANSWERED_ELSEWHERE = Reason("cancel", "answered on another device")
# How a device of the callee ends when the device that placed the call went away without its
# <retract/> (XEP-0166 §7.4 gone: the other party is no longer reachable).
CALLER_GONE = Reason("gone", "the caller's device went offline")
# XEP-0167 §7: the session-info payloads of an RTP session.
RTP_INFO = frozenset(f"{{{INFO}}}{name}" for name in ("active", "hold", "unhold", "mute", "unmute", "ringing"))


class State(enum.Enum):
    PROPOSED = "proposed"
    RINGING = "ringing"
    PROCEEDED = "proceeded"
    INITIATED = "initiated"
    ACTIVE = "active"
    ENDED = "ended"


# -- what the machine asks for ------------------------------------------------------------------


@dataclass(frozen=True)
class SendMessage:
    """Send a ``type='chat'`` message with this JMI element and a store hint (XEP-0353 §3)."""

    to: JID
    payload: JingleMessage


@dataclass(frozen=True)
class SendIq:
    """Send ``<iq type='set' id=...>`` with this Jingle element to the peer's full JID."""

    to: JID
    id: str
    jingle: Jingle


@dataclass(frozen=True)
class Reply:
    """Answer the IQ ``id`` from ``to``: a result, or the error."""

    to: JID
    id: str
    error: StanzaError | None = None


# -- what the application learns ----------------------------------------------------------------


@dataclass(frozen=True)
class Incoming:
    """A call is proposed to this device (XEP-0353 §3.1)."""

    caller: JID
    media: tuple[str, ...]


@dataclass(frozen=True)
class Ringing:
    """The callee's device rings (§3.2)."""


@dataclass(frozen=True)
class Proceeded:
    """The callee's device ``device`` will take the call (§3.3); now make the offer."""

    callee: JID
    device: int | None


@dataclass(frozen=True)
class RemoteDescription:
    """The peer's offer (callee) or answer (caller): hand it to the media engine."""

    contents: RtpContents


@dataclass(frozen=True)
class RemoteCandidates:
    """Trickled candidates for one content (XEP-0176 §5.3)."""

    content: str
    transport: IceUdpTransport


@dataclass(frozen=True)
class DescriptionInfo:
    """The peer's new parameters for the media it receives (XEP-0166 §7.2 description-info), e.g.
    a lower Opus bitrate and longer frames once it switched to its data saver."""

    contents: tuple[Content, ...]


@dataclass(frozen=True)
class SessionInfo:
    """A session-info payload of XEP-0167 §7 (``{urn:xmpp:jingle:apps:rtp:info:1}mute`` ...)."""

    tag: str
    attributes: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class AnsweredElsewhere:
    """Another device of this account took (``proceed``, ``accept``) or declined (``reject``) the call."""

    kind: str


@dataclass(frozen=True)
class Ended:
    """The call is over; ``by_peer`` when the other side ended it."""

    reason: Reason
    by_peer: bool


Output = SendMessage | SendIq | Reply
Event = (
    Incoming | Ringing | Proceeded | RemoteDescription | RemoteCandidates | DescriptionInfo | SessionInfo
    | AnsweredElsewhere | Ended
)
Step = list[Output | Event]


class CallError(RuntimeError):
    """A local action the call's state does not allow (a programming error of the caller)."""


@dataclass
class CallSession:
    """One call seen from this device; create it with :meth:`outgoing` or :meth:`incoming`."""

    sid: str
    own: JID
    role: str
    peer: JID
    state: State
    media: tuple[str, ...] = ("audio",)
    deadline: float | None = None
    ring_timeout: float = RING_TIMEOUT
    setup_timeout: float = SETUP_TIMEOUT
    contents: tuple[str, ...] = ()
    _pending: list[tuple[str, IceUdpTransport]] = field(default_factory=list)
    _ids: itertools.count[int] = field(default_factory=itertools.count)
    _sent: dict[str, str] = field(default_factory=dict)

    # -- creating ----------------------------------------------------------------------------

    @classmethod
    def outgoing(cls, sid: str, own: JID, callee: JID, now: float, media: tuple[str, ...] = ("audio",),
                 ring_timeout: float = RING_TIMEOUT, setup_timeout: float = SETUP_TIMEOUT) -> tuple[CallSession, Step]:
        """XEP-0353 §3.1: propose a call to every device of ``callee`` (a bare JID)."""
        call = cls(sid, own, "initiator", callee.bare, State.PROPOSED, media, now + ring_timeout,
                   ring_timeout, setup_timeout)  # fmt: skip
        propose = JingleMessage("propose", sid, tuple(RtpDescription(m) for m in media))
        return call, [SendMessage(callee.bare, propose)]

    @classmethod
    def incoming(cls, own: JID, caller: JID, propose: JingleMessage, now: float,
                 ring_timeout: float = RING_TIMEOUT, setup_timeout: float = SETUP_TIMEOUT) -> tuple[CallSession, Step]:
        """A proposal arrived from ``caller`` (a full JID): this device may ring."""
        if propose.kind != "propose":
            raise CallError(f"a call starts with a proposal, not {propose.kind}")
        call = cls(propose.id, own, "responder", caller, State.PROPOSED, propose.media, now + ring_timeout,
                   ring_timeout, setup_timeout)  # fmt: skip
        return call, [Incoming(caller, propose.media)]

    @property
    def ended(self) -> bool:
        return self.state is State.ENDED

    # -- local actions -----------------------------------------------------------------------

    def ring(self) -> Step:
        """Callee, XEP-0353 §3.2: tell the caller this device rings."""
        self._expect("responder", State.PROPOSED)
        self.state = State.RINGING
        return [SendMessage(self.peer, JingleMessage("ringing", self.sid))]

    def proceed(self, now: float, device: int | None = None, link_down: bool = False) -> Step:
        """Callee, §3.3: take the call on this device, and tell our other devices with
        ``<accept/>`` (v0.3 §3.3); ``device`` names the OMEMO device that will vouch for the
        DTLS fingerprint. With ``link_down`` the ``<proceed/>`` waits for the
        link to the server, which may come back as late as the call would have rung: the session
        may then take the usual setup time after that."""
        self._expect("responder", State.PROPOSED, State.RINGING)
        self.state = State.PROCEEDED
        left = max(now, self.deadline or now) if link_down else now
        self.deadline = left + self.setup_timeout
        # XEP-0353 v0.3 §3.3: <accept/> to our own bare JID stops our other devices ringing,
        # also those that do not learn of the call from the carbon of <proceed/> (a client
        # without carbons, or one that reads only <accept/>). It goes first, as Conversations
        # sends it: a device that gets the <proceed/> carbon has had the <accept/> already.
        accept = SendMessage(self.own.bare, JingleMessage("accept", self.sid))
        return [accept, SendMessage(self.peer, JingleMessage("proceed", self.sid, device=device))]

    def initiate(self, offer: RtpContents, now: float) -> Step:
        """Caller, XEP-0166 §6.2: the session-initiate with the local offer."""
        self._expect("initiator", State.PROCEEDED)
        self.state = State.INITIATED
        self.deadline = now + self.setup_timeout
        self.contents = tuple(c.name for c in offer.contents)
        jingle = Jingle("session-initiate", self.sid, initiator=str(self.own), contents=offer.contents,
                        groups=offer.groups)  # fmt: skip
        return [self._iq(jingle), *self._flush()]

    def accept(self, answer: RtpContents) -> Step:
        """Callee, XEP-0166 §6.4: the session-accept with the local answer."""
        self._expect("responder", State.INITIATED)
        self.state = State.ACTIVE
        self.deadline = None
        jingle = Jingle("session-accept", self.sid, responder=str(self.own), contents=answer.contents,
                        groups=answer.groups)  # fmt: skip
        return [self._iq(jingle), *self._flush()]

    def add_candidate(self, content: str, candidate: Candidate, ufrag: str | None = None,
                      pwd: str | None = None) -> Step:
        """A local candidate (XEP-0176 §5.3): sent as transport-info once the peer knows the
        session (after our session-initiate or session-accept), held until then."""
        if self.ended:
            return []
        self._pending.append((content, IceUdpTransport(ufrag, pwd, (candidate,))))
        return self._flush()

    def info(self, tag: str, attributes: tuple[tuple[str, str], ...] = ()) -> Step:
        """XEP-0167 §7: tell the peer about ringing, hold, mute... (``tag`` in Clark notation)."""
        if self.state not in (State.INITIATED, State.ACTIVE):
            raise CallError(f"no session to inform in state {self.state.value}")
        return [self._iq(Jingle("session-info", self.sid, info=Info(tag, attributes)))]

    def describe(self, contents: tuple[Content, ...]) -> Step:
        """XEP-0166 §7.2 description-info: new parameters for the media we receive (each content
        with only its RTP description). Only a set-up session has parameters to change; before
        that, the next offer or answer carries them anyway, so nothing is sent."""
        if self.state is not State.ACTIVE:
            return []
        return [self._iq(Jingle("description-info", self.sid, contents=contents))]

    def hang_up(self, reason: Reason | None = None) -> Step:
        """End the call: retract (caller) or reject (callee) before proceed (§3.4, §3.5);
        session-terminate and finish after (XEP-0166 §6.7, XEP-0353 §3.6)."""
        if self.ended:
            return []
        if self.state in (State.PROPOSED, State.RINGING):
            kind = "retract" if self.role == "initiator" else "reject"
            reason = reason or Reason("cancel" if kind == "retract" else "decline")
            return [SendMessage(self.peer, JingleMessage(kind, self.sid, reason=reason)), *self._end(reason, False)]
        reason = reason or Reason("success")
        out: Step = []
        if self.state in (State.INITIATED, State.ACTIVE):
            out.append(self._iq(Jingle("session-terminate", self.sid, reason=reason)))
        out.append(SendMessage(self.peer, JingleMessage("finish", self.sid, reason=reason)))
        return [*out, *self._end(reason, False)]

    def lose_tie_break(self) -> Step:
        """Two proposals crossed and this one lost (XEP-0353 §4.1, tie breaking): the caller
        retracts it, the callee rejects it, with ``<tie-break/>`` and reason expired."""
        if self.state not in (State.PROPOSED, State.RINGING):
            raise CallError(f"no proposal to give up in state {self.state.value}")
        kind = "retract" if self.role == "initiator" else "reject"
        reason = Reason("expired", "Tie-Break")
        return [SendMessage(self.peer, JingleMessage(kind, self.sid, reason=reason, tie_break=True)), *self._end(reason, False)]

    def on_timeout(self, now: float) -> Step:
        """Due at :attr:`deadline`: nobody answered, or the session was not set up in time
        (terminate with ``timeout``). A caller nobody answered retracts (XEP-0353 §3.4); a callee
        device that rang long enough falls silent and sends nothing, since a reject would stop
        the account's other devices and tell the caller the call was declined (§3.5): the
        caller's own timeout retracts the call."""
        if self.deadline is None or now < self.deadline or self.ended:
            return []
        if self.role == "responder" and self.state in (State.PROPOSED, State.RINGING):
            return self.fall_silent(Reason("timeout"))
        return self.hang_up(Reason("timeout"))

    def fall_silent(self, reason: Reason) -> Step:
        """Callee: stop ringing on this device alone and tell nobody; a reject would decline the
        call for all of the account's devices (XEP-0353 §3.5)."""
        self._expect("responder", State.PROPOSED, State.RINGING)
        return self._end(reason, False)

    def caller_gone(self) -> Step:
        """Callee: the device that placed the call is gone, and no ``<retract/>`` will come from
        it (its link died, its app was killed). This device stops ringing and tells nobody: a
        ``<reject/>`` would reach only the account's other devices, which would take the call
        for declined (XEP-0353 §3.5) instead of missed."""
        self._expect("responder", State.PROPOSED, State.RINGING)
        return self._end(CALLER_GONE, True)

    # -- what arrived ------------------------------------------------------------------------

    def on_message(self, sender: JID, message: JingleMessage, now: float) -> Step:
        """A JMI element in a message (or a carbon of one this account sent)."""
        if message.id != self.sid or self.ended:
            return []
        if sender.bare == self.own.bare and sender != self.own:
            return self._from_own_device(message)
        if self.role == "initiator":
            return self._to_caller(sender, message, now)
        if sender != self.peer:
            return []
        if message.kind in ("retract", "finish"):
            if message.reason == ANSWERED_ELSEWHERE and self.state is State.PROCEEDED:
                return [AnsweredElsewhere("proceed"), *self._end(ANSWERED_ELSEWHERE, True)]
            return self._end(message.reason or Reason("cancel"), True)
        return []

    def _from_own_device(self, message: JingleMessage) -> Step:
        """XEP-0353 §3.3, §3.5 (and v0.3 §3.3 for ``<accept/>``): another device of our account
        answered (its ``<accept/>`` to our bare JID, or the carbon of its ``<proceed/>``) or
        declined (the carbon of its ``<reject/>``), so this one stops ringing. Only the account's
        devices get here (``sender`` is another resource of ours: the server stamps 'from', and
        a carbon is taken only from our own account), never a stranger nor our own echo."""
        ringing = self.role == "responder" and self.state in (State.PROPOSED, State.RINGING)
        if ringing and message.kind in ("proceed", "accept", "reject"):
            reason = (message.reason or Reason("decline")) if message.kind == "reject" else ANSWERED_ELSEWHERE
            return [AnsweredElsewhere(message.kind), *self._end(reason, True)]
        return []

    def _to_caller(self, sender: JID, message: JingleMessage, now: float) -> Step:
        if sender.bare != self.peer.bare:
            return []
        before_proceed = self.state in (State.PROPOSED, State.RINGING)
        if message.kind == "ringing" and self.state is State.PROPOSED:
            self.state = State.RINGING
            return [Ringing()]
        if message.kind == "proceed" and before_proceed:
            self.peer = sender
            self.state = State.PROCEEDED
            self.deadline = now + self.setup_timeout
            return [Proceeded(sender, message.device)]
        if message.kind == "proceed" and sender != self.peer:
            # Another device answered too, once we had gone on with the first (its link was
            # down, or both answered at once): it must not wait for a session that goes elsewhere.
            return [SendMessage(sender, JingleMessage("finish", self.sid, reason=ANSWERED_ELSEWHERE))]
        if message.kind == "reject" and before_proceed:
            return self._end(message.reason or Reason("decline"), True)
        if message.kind == "reject" and sender == self.peer and self.state in (State.PROCEEDED, State.INITIATED):
            # The device that answered hung up before the session was set up: Conversations
            # then rejects rather than finishes, and the session must not go on without it.
            return self._end(message.reason or Reason("decline"), True)
        if message.kind == "finish" and sender == self.peer and not before_proceed:
            return self._end(message.reason or Reason("success"), True)
        return []

    def on_iq(self, sender: JID, iq_id: str, payload: Element) -> Step:
        """A Jingle IQ set; the step always holds the reply (XEP-0166 §6.3.2, §8)."""
        try:
            jingle = Jingle.from_xml(payload)
        except JinglePayloadError as err:
            return [Reply(sender, iq_id, StanzaError("bad-request", str(err)))]
        if jingle.sid != self.sid or sender != self.peer or self.ended:
            return [Reply(sender, iq_id, jingle_error("unknown-session", f"no session {jingle.sid!r} with you"))]
        handler = {
            "session-initiate": self._on_initiate,
            "session-accept": self._on_accept,
            "transport-info": self._on_transport_info,
            "description-info": self._on_description_info,
            "session-info": self._on_info,
            "session-terminate": self._on_terminate,
        }.get(jingle.action)
        if handler is None:
            return [Reply(sender, iq_id, StanzaError("feature-not-implemented", f"{jingle.action} is not supported"))]
        return handler(iq_id, jingle)

    def on_iq_response(self, iq_id: str, error: StanzaError | None) -> Step:
        """The result or error of an IQ this machine sent; a refused session ends the call, and
        so does one that got no answer (``remote-server-timeout``: the link went down or the
        answer did not come in time), with connectivity-error (XEP-0166 §7.4). The other
        actions are not worth ending a call for."""
        action = self._sent.pop(iq_id, None)
        if error is None or action is None or self.ended:
            return []
        if action in ("session-initiate", "session-accept"):
            if error.condition == "remote-server-timeout":
                reason = Reason("connectivity-error", f"{action} got no answer: {error.text}")
            else:
                reason = Reason("general-error", f"{action} refused: {error.condition}")
            return [SendMessage(self.peer, JingleMessage("finish", self.sid, reason=reason)), *self._end(reason, False)]
        return []

    # -- Jingle actions ----------------------------------------------------------------------

    def _out_of_order(self, iq_id: str, jingle: Jingle) -> Step:
        return [Reply(self.peer, iq_id, jingle_error("out-of-order", f"{jingle.action} in state {self.state.value}"))]

    def _on_initiate(self, iq_id: str, jingle: Jingle) -> Step:
        if self.role != "responder" or self.state is not State.PROCEEDED:
            return self._out_of_order(iq_id, jingle)
        ack = Reply(self.peer, iq_id)
        unsupported = _unsupported(jingle.contents)
        if unsupported is not None:
            reason = Reason(unsupported)
            terminate = self._iq(Jingle("session-terminate", self.sid, reason=reason))
            return [ack, terminate, *self._end(reason, False)]
        self.state = State.INITIATED
        self.contents = tuple(c.name for c in jingle.contents)
        return [ack, RemoteDescription(RtpContents(jingle.contents, jingle.groups))]

    def _on_accept(self, iq_id: str, jingle: Jingle) -> Step:
        if self.role != "initiator" or self.state is not State.INITIATED:
            return self._out_of_order(iq_id, jingle)
        self.state = State.ACTIVE
        self.deadline = None
        return [Reply(self.peer, iq_id), RemoteDescription(RtpContents(jingle.contents, jingle.groups))]

    def _on_transport_info(self, iq_id: str, jingle: Jingle) -> Step:
        if self.state not in (State.INITIATED, State.ACTIVE):
            return self._out_of_order(iq_id, jingle)
        events: Step = [Reply(self.peer, iq_id)]
        for content in jingle.contents:
            if content.name not in self.contents or content.transport is None:
                return [Reply(self.peer, iq_id, StanzaError("bad-request", f"no content {content.name!r} with an ICE-UDP transport"))]
            events.append(RemoteCandidates(content.name, content.transport))
        return events

    def _on_description_info(self, iq_id: str, jingle: Jingle) -> Step:
        if self.state is not State.ACTIVE:
            return self._out_of_order(iq_id, jingle)
        if any(c.name not in self.contents or c.description is None for c in jingle.contents):
            return [Reply(self.peer, iq_id, StanzaError("bad-request", "description-info needs the RTP description of a content of this session"))]
        return [Reply(self.peer, iq_id), DescriptionInfo(jingle.contents)]

    def _on_info(self, iq_id: str, jingle: Jingle) -> Step:
        if self.state not in (State.INITIATED, State.ACTIVE):
            return self._out_of_order(iq_id, jingle)
        if jingle.info is None:
            return [Reply(self.peer, iq_id)]  # §6.8: an empty session-info is a ping
        if jingle.info.tag not in RTP_INFO:
            return [Reply(self.peer, iq_id, jingle_error("unsupported-info", f"{jingle.info.tag} is not understood"))]
        return [Reply(self.peer, iq_id), SessionInfo(jingle.info.tag, jingle.info.attributes)]

    def _on_terminate(self, iq_id: str, jingle: Jingle) -> Step:
        if self.state not in (State.INITIATED, State.ACTIVE):
            return self._out_of_order(iq_id, jingle)
        return [Reply(self.peer, iq_id), *self._end(jingle.reason or Reason("success"), True)]

    # -- helpers -----------------------------------------------------------------------------

    def _expect(self, role: str, *states: State) -> None:
        if self.role != role or self.state not in states:
            raise CallError(f"not allowed for the {self.role} in state {self.state.value}")

    def _iq(self, jingle: Jingle) -> SendIq:
        iq_id = f"{self.sid}-{next(self._ids)}"
        self._sent[iq_id] = jingle.action
        return SendIq(self.peer, iq_id, jingle)

    def _flush(self) -> Step:
        # The peer learns the session from our session-initiate (caller) or accepts it with our
        # session-accept (callee); candidates before that would be unknown-session or out-of-order.
        ready = (self.role == "initiator" and self.state in (State.INITIATED, State.ACTIVE)) or (
            self.role == "responder" and self.state is State.ACTIVE
        )
        if not ready:
            return []
        out: Step = []
        for name, transport in self._pending:
            # Every content here was created by the initiator (XEP-0166 §7.3 'creator').
            content = Content("initiator", name, transport=transport)
            out.append(self._iq(Jingle("transport-info", self.sid, contents=(content,))))
        self._pending.clear()
        return out

    def _end(self, reason: Reason, by_peer: bool) -> Step:
        self.state = State.ENDED
        self.deadline = None
        self._pending.clear()
        return [Ended(reason, by_peer)]


def _unsupported(contents: tuple[Content, ...]) -> str | None:
    """The XEP-0166 §7.4 reason to refuse an offer with these contents, if any."""
    if not contents or any(c.description is None for c in contents):
        return "unsupported-applications"
    if any(c.transport is None for c in contents):
        return "unsupported-transports"
    return None


"""The call state machine: caller and callee devices talking in memory through real XML, with
JMI, Jingle, trickle ICE, timeouts and the Jingle errors of XEP-0166 §8."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schnack.client.calls.sdp import RtpContents
from schnack.client.calls.session import (
    ANSWERED_ELSEWHERE,
    CALLER_GONE,
    AnsweredElsewhere,
    CallError,
    CallSession,
    DescriptionInfo,
    Ended,
    Event,
    Incoming,
    Proceeded,
    RemoteCandidates,
    RemoteDescription,
    Reply,
    Ringing,
    SendIq,
    SendMessage,
    SessionInfo,
    State,
    Step,
)
from schnack.xmpp.errors import StanzaError
from schnack.xmpp.jid import JID
from schnack.xmpp.parser import parse_frame
from schnack.xmpp.payloads.jingle import ACTIONS, Content, Info, Jingle, Reason, error_condition
from schnack.xmpp.payloads.jingle_ice import Candidate, Fingerprint, IceUdpTransport
from schnack.xmpp.payloads.jingle_rtp import INFO, Group, Parameter, PayloadType, RtpDescription
from schnack.xmpp.payloads.jmi import JingleMessage
from schnack.xmpp.xml import serialize

ALICE = JID.parse("alice@example.org/laptop")
BOB_PHONE = JID.parse("bob@example.org/phone")
BOB_DESK = JID.parse("bob@example.org/desk")
SID = "ca3cf894-5325-482f-a412-a6e9f832298d"
OPUS = PayloadType(111, "opus", 48000, 2)


def rtp(setup: str, ufrag: str) -> RtpContents:
    transport = IceUdpTransport(ufrag, ufrag + "-password-xyz", (), (Fingerprint("sha-256", "AB:CD:EF", setup),))
    content = Content("initiator", "0", description=RtpDescription("audio", (OPUS,), rtcp_mux=True), transport=transport)
    return RtpContents((content,), (Group("BUNDLE", ("0",)),))


def candidate(port: int) -> Candidate:
    return Candidate(1, "1", 0, f"c{port}", "192.0.2.10", port, 2130706431, "udp", "host")


def wire(el: Any) -> Any:
    """What the peer reads: the element serialized and parsed again."""
    return parse_frame(serialize(el).encode(), 10**6)


@dataclass
class Network:
    """Delivers what each device's machine asks to send; messages of type chat are also carbon
    copied to the sender's other devices (XEP-0280), as the server does, save those to the
    sender's own account, which reach its devices once (the sender's own included)."""

    devices: tuple[JID, ...]
    calls: dict[JID, CallSession] = field(default_factory=dict)
    events: dict[JID, list[Event]] = field(default_factory=dict)
    sent: list[tuple[JID, Any]] = field(default_factory=list)
    now: float = 0.0

    def run(self, device: JID, step: Step) -> None:
        for item in step:
            self.sent.append((device, item))
            if isinstance(item, SendMessage):
                payload = JingleMessage.from_xml(wire(item.payload.to_xml()))
                targets = [d for d in self.devices if d.bare == item.to.bare and (item.to.resource is None or d == item.to)]
                own = item.to.bare == device.bare
                carbons = [d for d in self.devices if d.bare == device.bare and d != device and not own]
                for target in targets + carbons:
                    self._message(device, target, payload)
            elif isinstance(item, SendIq):
                self.run(item.to, self.calls[item.to].on_iq(device, item.id, wire(item.jingle.to_xml())))
            elif isinstance(item, Reply):
                self.run(item.to, self.calls[item.to].on_iq_response(item.id, item.error))
            else:
                self.events.setdefault(device, []).append(item)

    def _message(self, sender: JID, target: JID, payload: JingleMessage) -> None:
        call = self.calls.get(target)
        if call is None or call.sid != payload.id:
            if payload.kind == "propose" and sender.bare != target.bare:
                call, step = CallSession.incoming(target, sender, payload, self.now)
                self.calls[target] = call
                self.run(target, step)
            return
        self.run(target, call.on_message(sender, payload, self.now))

    def call(self, now: float = 0.0) -> CallSession:
        caller, step = CallSession.outgoing(SID, ALICE, BOB_PHONE.bare, now)
        self.calls[ALICE] = caller
        self.run(ALICE, step)
        return caller

    def of(self, device: JID) -> list[Event]:
        return self.events.pop(device, [])

    def replies(self) -> list[Reply]:
        return [item for _, item in self.sent if isinstance(item, Reply)]


def test_a_whole_call() -> None:
    net = Network((ALICE, BOB_PHONE, BOB_DESK))
    caller = net.call()
    assert net.of(BOB_PHONE) == [Incoming(ALICE, ("audio",))] and net.of(BOB_DESK) == [Incoming(ALICE, ("audio",))]
    phone, desk = net.calls[BOB_PHONE], net.calls[BOB_DESK]

    net.run(BOB_PHONE, phone.ring())
    assert net.of(ALICE) == [Ringing()] and caller.state.value == "ringing"
    net.run(BOB_PHONE, phone.proceed(net.now, device=4711))
    assert net.of(ALICE) == [Proceeded(BOB_PHONE, 4711)]
    # The desk got the phone's accept (and then the carbon of its proceed) and stops ringing.
    assert net.of(BOB_DESK) == [AnsweredElsewhere("accept"), Ended(ANSWERED_ELSEWHERE, True)] and desk.ended

    # A candidate found before the offer went out waits for the session-initiate.
    net.run(ALICE, caller.add_candidate("0", candidate(5000), "alic", "alice-password-xyz"))
    assert not any(isinstance(item, SendIq) for _, item in net.sent)
    offer = rtp("actpass", "alic")
    net.run(ALICE, caller.initiate(offer, net.now))
    assert net.of(BOB_PHONE) == [
        RemoteDescription(offer),
        RemoteCandidates("0", IceUdpTransport("alic", "alice-password-xyz", (candidate(5000),))),
    ]
    assert phone.state.value == caller.state.value == "initiated"

    net.run(BOB_PHONE, phone.add_candidate("0", candidate(6000)))  # held until the session-accept
    answer = rtp("active", "bobp")
    net.run(BOB_PHONE, phone.accept(answer))
    assert net.of(ALICE) == [RemoteDescription(answer), RemoteCandidates("0", IceUdpTransport(None, None, (candidate(6000),)))]
    assert caller.state is State.ACTIVE and phone.state is State.ACTIVE
    assert caller.deadline is None and phone.deadline is None

    net.run(BOB_PHONE, phone.info(f"{{{INFO}}}mute", (("creator", "initiator"), ("name", "0"))))
    assert net.of(ALICE) == [SessionInfo(f"{{{INFO}}}mute", (("creator", "initiator"), ("name", "0")))]

    net.run(ALICE, caller.hang_up())
    assert net.of(ALICE) == [Ended(Reason("success"), False)]
    assert net.of(BOB_PHONE) == [Ended(Reason("success"), True)]
    kinds = [item.payload.kind for _, item in net.sent if isinstance(item, SendMessage)]
    assert kinds == ["propose", "ringing", "accept", "proceed", "finish"]
    assert all(reply.error is None for reply in net.replies())


@pytest.mark.parametrize("link_down", [False, True])
def test_answering_tells_our_other_devices_with_accept(link_down: bool) -> None:
    """XEP-0353 v0.3 §3.3: the answering device sends <accept/> to its own bare JID, before its
    <proceed/>, and also when its link is down (both then wait for the link alike)."""
    net = Network((ALICE, BOB_PHONE, BOB_DESK))
    net.call()
    step = net.calls[BOB_PHONE].proceed(net.now, device=4711, link_down=link_down)
    assert step == [
        SendMessage(BOB_PHONE.bare, JingleMessage("accept", SID)),
        SendMessage(ALICE, JingleMessage("proceed", SID, device=4711)),
    ]


def test_only_an_accept_from_another_of_our_devices_stops_the_ringing() -> None:
    """An <accept/> for the ringing call from a stranger, from the caller or from this device
    itself (its own, back from our bare JID) leaves it ringing; another of our devices' ends it
    as answered on another device, and only for that session."""
    net = Network((ALICE, BOB_PHONE, BOB_DESK))
    net.call()
    desk = net.calls[BOB_DESK]
    net.run(BOB_DESK, desk.ring())
    accept = JingleMessage("accept", SID)
    for sender in (JID.parse("mallory@example.org/phone"), JID.parse("mallory@example.org"), ALICE, BOB_DESK):
        assert desk.on_message(sender, accept, net.now) == [] and desk.state is State.RINGING
    assert desk.on_message(BOB_PHONE, JingleMessage("accept", "another-call"), net.now) == []
    assert desk.on_message(BOB_PHONE, accept, net.now) == [AnsweredElsewhere("accept"), Ended(ANSWERED_ELSEWHERE, True)]
    assert desk.ended


def test_an_answer_that_reaches_the_caller_second_is_told_the_call_went_elsewhere() -> None:
    """XEP-0353 §3.3: both devices answered (the desk's <proceed/> was held by its link), the
    caller goes on with the phone's, which came first, and finishes the desk's alone."""
    net = Network((ALICE, BOB_PHONE, BOB_DESK))
    caller = net.call()
    phone, desk = net.calls[BOB_PHONE], net.calls[BOB_DESK]
    net.of(BOB_DESK)
    late = desk.proceed(net.now, link_down=True)
    net.run(BOB_PHONE, phone.proceed(net.now))
    assert net.of(BOB_DESK) == [] and desk.state is State.PROCEEDED
    net.run(BOB_DESK, late)
    assert net.of(BOB_DESK) == [AnsweredElsewhere("proceed"), Ended(ANSWERED_ELSEWHERE, True)]
    assert caller.peer == BOB_PHONE and caller.state is State.PROCEEDED and phone.state is State.PROCEEDED


@pytest.mark.parametrize("initiated", [False, True])
def test_a_callee_that_reconsiders_after_its_answer_ends_the_call(initiated: bool) -> None:
    """Conversations' callee that hangs up after its <proceed/>, before the session is set up,
    sends <reject/>: the caller ends the call as declined, whether or not its session-initiate
    has gone out, instead of setting up a session nobody takes. A reject from another device of
    the callee, which was only late to decline, changes nothing."""
    net = Network((ALICE, BOB_PHONE, BOB_DESK))
    caller = net.call()
    net.run(BOB_PHONE, net.calls[BOB_PHONE].proceed(net.now))
    if initiated:
        caller.initiate(rtp("actpass", "alic"), net.now)
    state = caller.state
    late = JingleMessage("reject", SID, reason=Reason("decline"))
    assert caller.on_message(BOB_DESK, late, net.now) == [] and caller.state is state
    reconsidered = JingleMessage("reject", SID, reason=Reason("busy"))
    assert caller.on_message(BOB_PHONE, reconsidered, net.now) == [Ended(Reason("busy"), True)]
    assert caller.ended and caller.deadline is None


def test_reject_and_retract() -> None:
    net = Network((ALICE, BOB_PHONE, BOB_DESK))
    caller = net.call()
    net.run(BOB_DESK, net.calls[BOB_DESK].hang_up(Reason("busy")))
    assert net.of(ALICE)[-1] == Ended(Reason("busy"), True) and caller.ended
    # The phone learns from the carbon of the desk's reject.
    assert net.of(BOB_PHONE)[-2:] == [AnsweredElsewhere("reject"), Ended(Reason("busy"), True)]

    net = Network((ALICE, BOB_PHONE))
    caller = net.call()
    net.run(ALICE, caller.hang_up())
    assert net.of(BOB_PHONE)[-1] == Ended(Reason("cancel"), True)
    assert [item.payload.kind for _, item in net.sent if isinstance(item, SendMessage)] == ["propose", "retract"]


def test_nobody_answers() -> None:
    net = Network((ALICE, BOB_PHONE))
    caller = net.call(now=100.0)
    assert caller.deadline == 160.0
    assert caller.on_timeout(159.0) == []
    net.run(ALICE, caller.on_timeout(160.0))
    assert net.of(ALICE) == [Ended(Reason("timeout"), False)]
    assert net.of(BOB_PHONE)[-1] == Ended(Reason("timeout"), True)


def test_a_callee_that_stops_ringing_by_itself_tells_nobody() -> None:
    """Only the user declines for all of the account's devices (XEP-0353 §3.5); a device whose
    ring timer runs out falls silent on its own, and the caller's retract ends the rest."""
    net = Network((ALICE, BOB_PHONE, BOB_DESK))
    caller = net.call(now=100.0)
    phone, desk = net.calls[BOB_PHONE], net.calls[BOB_DESK]
    net.run(BOB_PHONE, phone.ring())
    net.of(BOB_PHONE)
    net.run(BOB_PHONE, phone.on_timeout(160.0))
    assert net.of(BOB_PHONE) == [Ended(Reason("timeout"), False)] and phone.ended
    assert [item.payload.kind for _, item in net.sent if isinstance(item, SendMessage)] == ["propose", "ringing"]
    assert not caller.ended and not desk.ended
    net.run(ALICE, caller.on_timeout(160.0))
    assert net.of(BOB_DESK)[-1] == Ended(Reason("timeout"), True)


def test_a_callee_whose_caller_is_gone_stops_ringing_and_tells_nobody() -> None:
    """The caller's device went away without its retract: the phone ends the call as the
    caller's, with reason gone, and sends no reject (our other devices would take the call for
    declined); the caller cannot be told it is gone."""
    net = Network((ALICE, BOB_PHONE, BOB_DESK))
    caller = net.call(now=100.0)
    phone, desk = net.calls[BOB_PHONE], net.calls[BOB_DESK]
    net.run(BOB_PHONE, phone.ring())
    net.of(BOB_PHONE)
    net.run(BOB_PHONE, phone.caller_gone())
    assert net.of(BOB_PHONE) == [Ended(CALLER_GONE, True)] and phone.ended
    assert [item.payload.kind for _, item in net.sent if isinstance(item, SendMessage)] == ["propose", "ringing"]
    assert not desk.ended
    with pytest.raises(CallError):
        caller.caller_gone()


def test_session_not_set_up_in_time() -> None:
    net = Network((ALICE, BOB_PHONE))
    caller = net.call()
    phone = net.calls[BOB_PHONE]
    net.run(BOB_PHONE, phone.proceed(10.0))
    assert phone.deadline == 40.0
    net.now = 5.0
    net.run(ALICE, caller.initiate(rtp("actpass", "alic"), 5.0))
    # The callee never accepts: the caller gives up.
    assert caller.deadline == 35.0
    net.run(ALICE, caller.on_timeout(35.0))
    assert net.of(ALICE)[-1] == Ended(Reason("timeout"), False)
    assert net.of(BOB_PHONE)[-1] == Ended(Reason("timeout"), True)
    sent = [item.jingle.action for _, item in net.sent if isinstance(item, SendIq)]
    assert sent == ["session-initiate", "session-terminate"]


def test_an_answer_written_while_the_link_is_down_waits_as_long_as_the_call_rings() -> None:
    """The proceed may leave as late as the ring timer runs out (the caller gives up then), and
    the session gets its setup time after that."""
    net = Network((ALICE, BOB_PHONE), now=100.0)
    net.call(now=100.0)
    phone = net.calls[BOB_PHONE]
    assert phone.deadline == 160.0
    phone.proceed(110.0, link_down=True)
    assert phone.deadline == 190.0
    assert phone.on_timeout(189.0) == [] and not phone.ended


def proceeded() -> tuple[Network, CallSession, CallSession]:
    net = Network((ALICE, BOB_PHONE))
    caller = net.call()
    phone = net.calls[BOB_PHONE]
    net.run(BOB_PHONE, phone.proceed(0.0))
    net.of(ALICE)
    net.of(BOB_PHONE)
    return net, caller, phone


def answer(call: CallSession, sender: JID, jingle: Jingle, iq_id: str = "x1") -> Reply:
    step = call.on_iq(sender, iq_id, wire(jingle.to_xml()))
    reply = step[0]
    assert isinstance(reply, Reply) and reply.id == iq_id and reply.to == sender
    return reply


def jingle_condition(reply: Reply) -> tuple[str, str | None]:
    assert reply.error is not None
    return reply.error.condition, error_condition(reply.error.to_xml())


def test_jingle_errors() -> None:
    net, caller, phone = proceeded()
    offer = rtp("actpass", "alic")
    # Another session id, or a stranger using ours: unknown-session.
    assert jingle_condition(answer(phone, ALICE, Jingle("session-initiate", "other", contents=offer.contents))) == (
        "item-not-found", "unknown-session",
    )  # fmt: skip
    stranger = JID.parse("mallory@example.org/x")
    assert jingle_condition(answer(phone, stranger, Jingle("session-terminate", SID))) == ("item-not-found", "unknown-session")
    # Actions the state does not allow: out-of-order.
    for action in ("session-accept", "transport-info", "session-terminate", "session-info"):
        assert jingle_condition(answer(phone, ALICE, Jingle(action, SID))) == ("unexpected-request", "out-of-order")
    assert jingle_condition(answer(caller, BOB_PHONE, Jingle("session-initiate", SID, contents=offer.contents))) == (
        "unexpected-request", "out-of-order",
    )  # fmt: skip
    # Now the session exists.
    net.run(ALICE, caller.initiate(offer, 0.0))
    assert jingle_condition(answer(phone, ALICE, Jingle("session-initiate", SID, contents=offer.contents))) == (
        "unexpected-request", "out-of-order",
    )  # fmt: skip
    assert answer(phone, ALICE, Jingle("session-info", SID)).error is None  # an empty session-info is a ping
    unknown = Jingle("session-info", SID, info=Info("{urn:example:game}checkmate"))
    assert jingle_condition(answer(phone, ALICE, unknown)) == ("feature-not-implemented", "unsupported-info")
    wrong_content = Jingle("transport-info", SID, contents=(Content("initiator", "9", transport=IceUdpTransport()),))
    assert jingle_condition(answer(phone, ALICE, wrong_content)) == ("bad-request", None)
    assert jingle_condition(answer(phone, ALICE, Jingle("content-add", SID))) == ("feature-not-implemented", None)
    malformed = parse_frame(f"<jingle xmlns='urn:xmpp:jingle:1' action='dance' sid='{SID}'/>".encode(), 10**6)
    (reply,) = phone.on_iq(ALICE, "x9", malformed)
    assert isinstance(reply, Reply) and reply.error is not None and reply.error.condition == "bad-request"
    # None of this ended the call.
    assert phone.state.value == caller.state.value == "initiated"


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (Content("initiator", "f", other_description="urn:xmpp:jingle:apps:file-transfer:5", transport=IceUdpTransport()),
         "unsupported-applications"),
        (Content("initiator", "0", description=RtpDescription("audio", (OPUS,)), other_transport="urn:xmpp:jingle:transports:s5b:1"),
         "unsupported-transports"),
    ],
)  # fmt: skip
def test_unsupported_offers_are_terminated(content: Content, reason: str) -> None:
    net, _, _ = proceeded()
    net.run(ALICE, [SendIq(BOB_PHONE, "i1", Jingle("session-initiate", SID, initiator=str(ALICE), contents=(content,)))])
    assert net.of(BOB_PHONE) == [Ended(Reason(reason), False)]
    assert net.replies()[0].error is None  # acknowledged first (XEP-0166 §6.3.2)
    terminate = [item.jingle for _, item in net.sent if isinstance(item, SendIq) and item.jingle.action == "session-terminate"]
    assert terminate and terminate[0].reason == Reason(reason)


def test_refused_session_initiate_ends_the_call() -> None:
    _, caller, _ = proceeded()
    step = caller.initiate(rtp("actpass", "alic"), 0.0)
    (iq,) = [item for item in step if isinstance(item, SendIq)]
    after = caller.on_iq_response(iq.id, StanzaError("service-unavailable"))
    assert isinstance(after[0], SendMessage) and after[0].payload.kind == "finish"
    assert isinstance(after[-1], Ended) and after[-1].reason.condition == "general-error" and caller.ended
    assert caller.on_iq_response(iq.id, StanzaError("service-unavailable")) == []


def test_a_session_initiate_that_got_no_answer_ends_with_connectivity_error() -> None:
    """A Jingle IQ cannot wait for a reconnect (it needs its answer): one lost with the link
    ends the call as the link's failure, not the peer's refusal."""
    _, caller, _ = proceeded()
    (iq,) = [item for item in caller.initiate(rtp("actpass", "alic"), 0.0) if isinstance(item, SendIq)]
    after = caller.on_iq_response(iq.id, StanzaError("remote-server-timeout", "the connection was lost"))
    assert isinstance(after[0], SendMessage) and after[0].payload.kind == "finish"
    assert after[-1] == Ended(Reason("connectivity-error", "session-initiate got no answer: the connection was lost"), False)


def test_messages_that_do_not_fit_are_ignored() -> None:
    net = Network((ALICE, BOB_PHONE))
    caller = net.call()
    assert caller.on_message(JID.parse("eve@example.org/x"), JingleMessage("proceed", SID), 0.0) == []
    assert caller.on_message(BOB_PHONE, JingleMessage("proceed", "another-call"), 0.0) == []
    assert caller.on_message(BOB_PHONE, JingleMessage("finish", SID), 0.0) == []  # no session yet
    assert caller.state is State.PROPOSED


def test_local_misuse_is_refused() -> None:
    net = Network((ALICE, BOB_PHONE))
    caller = net.call()
    with pytest.raises(CallError):
        caller.ring()
    with pytest.raises(CallError):
        caller.initiate(rtp("actpass", "alic"), 0.0)
    with pytest.raises(CallError):
        net.calls[BOB_PHONE].accept(rtp("active", "bobp"))
    with pytest.raises(CallError):
        CallSession.incoming(BOB_PHONE, ALICE, JingleMessage("ringing", SID), 0.0)
    assert caller.hang_up() and caller.hang_up() == [] and caller.add_candidate("0", candidate(1)) == []


# -- whatever a peer sends, the machine answers every IQ once and never raises -----------------

SENDERS = (ALICE, BOB_PHONE, BOB_DESK, JID.parse("mallory@example.org/x"))
MEDIA_CONTENTS = (
    (), rtp("actpass", "alic").contents,
    (Content("initiator", "0", transport=IceUdpTransport(None, None, (candidate(7),))),),
    (Content("initiator", "f", other_description="urn:example:app", transport=IceUdpTransport()),),
)  # fmt: skip
received = st.one_of(
    st.tuples(
        st.just("message"), st.sampled_from(SENDERS),
        st.builds(JingleMessage, st.sampled_from(["propose", "ringing", "proceed", "accept", "reject", "retract", "finish"]),
                  st.sampled_from([SID, "other"]), st.just((RtpDescription("audio"),))),
    ),
    st.tuples(
        st.just("iq"), st.sampled_from(SENDERS),
        st.builds(Jingle, st.sampled_from(sorted(ACTIONS)), st.sampled_from([SID, "other"]),
                  contents=st.sampled_from(MEDIA_CONTENTS),
                  info=st.none() | st.sampled_from([Info(f"{{{INFO}}}mute"), Info("{urn:example}x")])),
    ),
    st.tuples(st.just("response"), st.sampled_from([f"{SID}-{i}" for i in range(4)]),
              st.none() | st.just(StanzaError("service-unavailable"))),
    st.tuples(st.just("time"), st.floats(0, 200)),
    st.tuples(st.just("garbage"), st.sampled_from(SENDERS), st.sampled_from([
        f"<jingle xmlns='urn:xmpp:jingle:1' sid='{SID}'/>",
        f"<jingle xmlns='urn:xmpp:jingle:1' action='session-initiate' sid='{SID}'><content/></jingle>",
        "<query xmlns='jabber:iq:version'/>",
    ])),
)  # fmt: skip
local = st.sampled_from(["ring", "proceed", "initiate", "accept", "candidate", "hang_up", "info"])


@settings(max_examples=300, deadline=None)
@given(st.booleans(), st.lists(st.one_of(received, local), max_size=25))
def test_any_sequence_is_answered_and_never_crashes(as_caller: bool, inputs: list[Any]) -> None:
    if as_caller:
        call, _ = CallSession.outgoing(SID, ALICE, BOB_PHONE.bare, 0.0)
    else:
        call, _ = CallSession.incoming(BOB_PHONE, ALICE, JingleMessage("propose", SID, (RtpDescription("audio"),)), 0.0)
    for n, item in enumerate(inputs):
        if isinstance(item, str):
            try:
                step = {
                    "ring": call.ring, "hang_up": call.hang_up,
                    "proceed": lambda: call.proceed(0.0, 1), "initiate": lambda: call.initiate(rtp("actpass", "a"), 0.0),
                    "accept": lambda: call.accept(rtp("active", "b")), "candidate": lambda: call.add_candidate("0", candidate(9)),
                    "info": lambda: call.info(f"{{{INFO}}}active"),
                }[item]()  # fmt: skip
            except CallError:
                continue
        elif item[0] == "message":
            step = call.on_message(item[1], item[2], 0.0)
        elif item[0] in ("iq", "garbage"):
            payload = wire(item[2].to_xml()) if item[0] == "iq" else parse_frame(item[2].encode(), 10**6)
            step = call.on_iq(item[1], f"in-{n}", payload)
            replies = [r for r in step if isinstance(r, Reply)]
            assert len(replies) == 1 and replies[0].id == f"in-{n}" and replies[0].to == item[1]
        elif item[0] == "response":
            step = call.on_iq_response(item[1], item[2])
        else:
            step = call.on_timeout(item[1])
        for out in step:
            # The callee's accept tells its own account; everything else goes to the peer.
            if isinstance(out, SendMessage) and out.payload.kind == "accept":
                assert not as_caller and out.to == BOB_PHONE.bare
            elif isinstance(out, SendIq | SendMessage):
                assert out.to.bare == (BOB_PHONE.bare if as_caller else ALICE.bare)
        if call.ended:
            assert call.deadline is None


def test_description_info_carries_new_receiving_parameters() -> None:
    """XEP-0166 §7.2: a profile switch mid-call reaches the peer as a description-info with only
    the RTP description; before the session is set up nothing is sent (the answer carries it),
    and one that does not fit is refused."""
    net = Network((ALICE, BOB_PHONE))
    caller = net.call()
    phone = net.calls[BOB_PHONE]
    net.run(BOB_PHONE, phone.proceed(net.now))
    saver = PayloadType(111, "opus", 48000, 2, ptime=60, maxptime=120,
                        parameters=(Parameter("maxaveragebitrate", "10000"), Parameter("usedtx", "1")))  # fmt: skip
    described = (Content("initiator", "0", description=RtpDescription("audio", (saver,))),)
    assert caller.describe(described) == []
    net.run(ALICE, caller.initiate(rtp("actpass", "alic"), net.now))
    net.run(BOB_PHONE, phone.accept(rtp("active", "bobp")))
    net.of(ALICE), net.of(BOB_PHONE)

    net.run(BOB_PHONE, phone.describe(described))
    assert net.of(ALICE) == [DescriptionInfo(described)]
    net.run(ALICE, caller.describe(described))
    assert net.of(BOB_PHONE) == [DescriptionInfo(described)]
    assert all(reply.error is None for reply in net.replies())

    unknown = Jingle("description-info", SID, contents=(Content("initiator", "video", description=RtpDescription("video")),))
    (reply,) = caller.on_iq(BOB_PHONE, "d1", wire(unknown.to_xml()))
    assert isinstance(reply, Reply) and reply.error is not None and reply.error.condition == "bad-request"
    # A refusal of ours by the peer leaves the call as it is.
    assert caller.on_iq_response(f"{SID}-99", StanzaError("feature-not-implemented")) == []
    assert caller.state is State.ACTIVE

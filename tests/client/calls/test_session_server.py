"""Two call machines talking through the real server (in memory): the proposal rings every device
of the callee, the answer reaches the caller, and the callee's other device learns of it by the
answering device's <accept/> to its own bare JID (XEP-0353 v0.3 §3.3), then by the message
carbon of its <proceed/> (XEP-0280), and stops ringing; the Jingle IQs travel between full JIDs."""

from __future__ import annotations

from pathlib import Path
from xml.etree.ElementTree import Element

from schnack.client.calls.sdp import RtpContents
from schnack.client.calls.session import (
    ANSWERED_ELSEWHERE,
    AnsweredElsewhere,
    CallSession,
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
    State,
    Step,
)
from schnack.xmpp import ns
from schnack.xmpp.errors import StanzaError
from schnack.xmpp.jid import JID
from schnack.xmpp.payloads import jmi
from schnack.xmpp.payloads.carbons import NS as CARBONS
from schnack.xmpp.payloads.carbons import Carbon
from schnack.xmpp.payloads.jingle import JINGLE, Content, Jingle, Reason, error_condition
from schnack.xmpp.payloads.jingle_ice import Candidate, Fingerprint, IceUdpTransport
from schnack.xmpp.payloads.jingle_rtp import Group, PayloadType, RtpDescription
from schnack.xmpp.xml import element, qname, sub

from ...harness import Client, running
from ...server.modules.messaging import login

MESSAGE = qname(ns.CLIENT, "message")
IQ = qname(ns.CLIENT, "iq")
SID = "4a1f0e7c-call"


def rtp(setup: str, ufrag: str) -> RtpContents:
    transport = IceUdpTransport(ufrag, ufrag + "-password-xyz", (), (Fingerprint("sha-256", "AB:CD:EF", setup),))
    content = Content(
        "initiator", "0", description=RtpDescription("audio", (PayloadType(111, "opus", 48000, 2),), rtcp_mux=True),
        transport=transport,
    )  # fmt: skip
    return RtpContents((content,), (Group("BUNDLE", ("0",)),))


class Device:
    """A logged-in resource that turns what its call machine asks for into stanzas and back."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.own = JID.parse(client.jid)
        self.call: CallSession | None = None
        self.events: list[Event] = []

    async def do(self, step: Step) -> None:
        for item in step:
            if isinstance(item, SendMessage):
                message = element(MESSAGE, {"to": str(item.to), "type": "chat", "id": f"m-{len(self.events)}-{id(item)}"})
                message.append(item.payload.to_xml())
                sub(message, "{urn:xmpp:hints}store")
                await self.client.send(message)
            elif isinstance(item, SendIq):
                await self.client.send(element(IQ, {"type": "set", "to": str(item.to), "id": item.id}, children=(item.jingle.to_xml(),)))
            elif isinstance(item, Reply):
                iq = element(IQ, {"type": "error" if item.error else "result", "to": str(item.to), "id": item.id})
                if item.error is not None:
                    iq.append(item.error.to_xml())
                await self.client.send(iq)
            else:
                self.events.append(item)

    async def pump(self) -> bool:
        """Handle what arrived; whether anything did."""
        arrived = self.client.take()
        for el in arrived:
            await self.do(self.handle(el))
        return bool(arrived)

    def handle(self, el: Element) -> Step:
        sender = JID.parse(el.get("from") or "")
        if el.tag == MESSAGE:
            carbon = next((c for c in el if c.tag.startswith(f"{{{CARBONS}}}")), None)
            if carbon is not None:
                el = Carbon.from_xml(carbon).message
                sender = JID.parse(el.get("from") or "")
            found = jmi.find(el)
            if found is None:
                return []
            if self.call is None:
                if found.kind != "propose" or sender.bare == self.own.bare:
                    return []
                self.call, step = CallSession.incoming(self.own, sender, found, 0.0)
                return step
            return self.call.on_message(sender, found, 0.0)
        if el.tag == IQ and self.call is not None:
            if el.get("type") == "set" and el.find(JINGLE) is not None:
                return self.call.on_iq(sender, el.get("id") or "", el[0])
            if el.get("type") in ("result", "error"):
                error = el.find(qname(ns.CLIENT, "error"))
                return self.call.on_iq_response(el.get("id") or "", None if error is None else StanzaError.from_xml(error))
        return []


async def settle(*devices: Device) -> None:
    """Deliver until nothing moves (the in-memory server routes as each stanza is sent)."""
    for _ in range(100):
        if not any([await d.pump() for d in devices]):
            return
    raise AssertionError("the devices kept talking")


async def online(client: Client) -> Device:
    await client.send(f"<iq type='set' id='c1'><enable xmlns='{CARBONS}'/></iq>")
    await client.send("<presence/>")
    client.take()
    return Device(client)


async def test_a_call_through_the_server(tmp_path: Path) -> None:
    async with running(tmp_path) as server:
        alice = await online(await login(server, "alice@localhost/laptop"))
        phone = await online(await login(server, "bob@localhost/phone"))
        desk = await online(await login(server, "bob@localhost/desk"))
        everyone = (alice, phone, desk)

        alice.call, step = CallSession.outgoing(SID, alice.own, JID.parse("bob@localhost"), 0.0)
        await alice.do(step)
        await settle(*everyone)
        assert phone.events == [Incoming(alice.own, ("audio",))] and desk.events == [Incoming(alice.own, ("audio",))]
        assert phone.call is not None and desk.call is not None

        await phone.do(phone.call.ring())
        await phone.do(phone.call.proceed(0.0))
        await settle(*everyone)
        assert alice.events == [Ringing(), Proceeded(phone.own, None)]
        # The phone's accept to its bare JID reaches the desk first (and the phone itself, which
        # ignores it); the carbon of its proceed comes after and finds the desk silent.
        assert desk.events[1:] == [AnsweredElsewhere("accept"), Ended(ANSWERED_ELSEWHERE, True)]

        await alice.do(alice.call.initiate(rtp("actpass", "alic"), 0.0))
        await alice.do(alice.call.add_candidate("0", Candidate(1, "1", 0, "c1", "192.0.2.10", 5000, 2130706431, "udp", "host")))
        await settle(*everyone)
        assert [type(e) for e in phone.events[1:]] == [RemoteDescription, RemoteCandidates]
        await phone.do(phone.call.accept(rtp("active", "bobp")))
        await settle(*everyone)
        assert last(alice) == RemoteDescription(rtp("active", "bobp"))
        assert alice.call.state is State.ACTIVE and phone.call.state is State.ACTIVE

        # The desk is out of the call: a Jingle IQ for it gets unknown-session, nothing breaks.
        stray = element(IQ, {"type": "set", "from": str(alice.own), "id": "s1"}, children=(Jingle("session-info", SID).to_xml(),))
        (reply,) = desk.handle(stray)
        assert isinstance(reply, Reply) and reply.error is not None
        assert error_condition(reply.error.to_xml()) == "unknown-session"

        await alice.do(alice.call.hang_up())
        await settle(*everyone)
        assert last(alice) == Ended(Reason("success"), False)
        assert last(phone) == Ended(Reason("success"), True)
        assert alice.call.ended and phone.call.ended


def last(device: Device) -> Event:
    return device.events[-1]

"""Calls with peers that are not our client, through the real server: XEP-0353 initiation between
our call machine (on a raw socket) and slixmpp's XEP-0353 plugin, each side reading what the
other wrote; and a scripted Conversations-style caller (raw socket, real aiortc media) against
our client: trickled candidates are taken, a fingerprint that does not match the certificate
and an encrypted fingerprint that cannot be opened end the call with security-error. And our own
candidates trickled between two of our clients through a real coturn."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any
from xml.etree.ElementTree import Element

import pytest
from slixmpp import JID as SlixJID

from bench.calls import LossProxy
from bench.ports import free_port
from schnack.client import Client
from schnack.client.calls.calls import Call, describe
from schnack.client.calls.media import MediaSession
from schnack.client.calls.sdp import RtpContents
from schnack.client.calls.session import (
    ANSWERED_ELSEWHERE,
    CallSession,
    Ended,
    Event,
    Incoming,
    Proceeded,
    RemoteDescription,
    Reply,
    SendIq,
    SendMessage,
    Step,
)
from schnack.server.app import Server
from schnack.xmpp import ns
from schnack.xmpp.jid import JID
from schnack.xmpp.payloads import jmi
from schnack.xmpp.payloads.jingle import JINGLE, Jingle, Reason
from schnack.xmpp.payloads.jingle_ice import OMEMO_LEGACY, Candidate, EncryptedFingerprint
from schnack.xmpp.payloads.jingle_rtp import NS as RTP
from schnack.xmpp.stanza import Stanza
from schnack.xmpp.xml import element, qname, serialize, sub

from ..client.calls.audio import dominant, loud_part, read_wav, write_tone
from ..harness import add_user, running
from .coturn import ready, require_coturn, turn_config_for, turnserver
from .slix import PASSWORD, SlixClient
from .wire import Wire

MESSAGE = qname(ns.CLIENT, "message")
IQ = qname(ns.CLIENT, "iq")


async def raw_client(server: Server, user: str, resource: str) -> tuple[Wire, JID]:
    wire = await Wire.connect(server)
    await wire.open()
    await wire.login(user, PASSWORD, await wire.starttls())
    jid = JID.parse(await wire.bind(resource))
    wire.send("<presence/>")
    return wire, jid


def send(wire: Wire, step: Step) -> None:
    for item in step:
        if isinstance(item, SendMessage):
            message = element(MESSAGE, {"to": str(item.to), "type": "chat", "id": f"jmi-{item.payload.kind}"})
            message.append(item.payload.to_xml())
            sub(message, "{urn:xmpp:hints}store")
            wire.send(serialize(message))


async def next_jmi(wire: Wire) -> tuple[JID, jmi.JingleMessage]:
    """The next message on ``wire`` that carries a JMI element, and its sender."""
    while True:
        el: Element | None = await wire.next(timeout=30)
        assert el is not None, "the server closed the stream"
        if el.tag == MESSAGE and (found := jmi.find(el)) is not None:
            return JID.parse(el.get("from") or ""), found


async def test_jmi_with_slixmpp(live_server: Server) -> None:
    await add_user(live_server, "alice", PASSWORD)
    await add_user(live_server, "bob", PASSWORD)
    wire, alice = await raw_client(live_server, "alice", "laptop")
    bob = SlixClient(live_server, "bob@localhost/phone")
    bob.xmpp.register_plugin("xep_0030")
    bob.xmpp.register_plugin("xep_0353")
    events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
    for kind in ("propose", "reject", "retract"):
        bob.xmpp.add_event_handler(f"jingle_message_{kind}", lambda msg, kind=kind: events.put_nowait((kind, msg)))
    assert await bob.start()
    try:
        bob.xmpp.send_presence()
        await bob.sync()

        # Ours proposes to the bare JID; slixmpp reads the proposal and proceeds.
        call, step = CallSession.outgoing("call-1", alice, JID.parse("bob@localhost"), 0.0)
        send(wire, step)
        async with asyncio.timeout(30):
            kind, message = await events.get()
        assert kind == "propose" and message["jingle_propose"]["id"] == "call-1"
        assert message["jingle_propose"]["descriptions"] == [(RTP, "audio")]
        bob.xmpp.plugin["xep_0353"].proceed(SlixJID(str(alice)), "call-1")
        sender, found = await next_jmi(wire)
        assert call.on_message(sender, found, 0.0) == [Proceeded(JID.parse("bob@localhost/phone"), None)]

        # slixmpp proposes; ours reads it, then rejects, and slixmpp reads the reject.
        bob.xmpp.plugin["xep_0353"].propose(SlixJID("alice@localhost"), "call-2", [(RTP, "audio")])
        sender, found = await next_jmi(wire)
        incoming, step = CallSession.incoming(alice, sender, found, 0.0)
        assert step == [Incoming(JID.parse("bob@localhost/phone"), ("audio",))]
        step = incoming.hang_up(Reason("busy"))
        assert step[-1] == Ended(Reason("busy"), False)
        send(wire, step)
        async with asyncio.timeout(30):
            kind, message = await events.get()
        assert kind == "reject" and message["jingle_reject"]["id"] == "call-2"
    finally:
        await bob.stop()
        wire.close()


class ScriptedCaller:
    """A caller written out stanza by stanza on a raw socket, the way Conversations behaves: our
    call machine and an aiortc MediaSession, with the test choosing what the offer carries and
    when candidates travel. Jingle IQs from the callee are acknowledged as they come."""

    def __init__(self, wire: Wire, jid: JID) -> None:
        self.wire = wire
        self.jid = jid
        self.media = MediaSession()
        self.call: CallSession | None = None

    def send(self, step: Step) -> None:
        send(self.wire, step)
        for item in step:
            if isinstance(item, SendIq):
                iq = element(IQ, {"type": "set", "to": str(item.to), "id": item.id}, children=(item.jingle.to_xml(),))
                self.wire.send(serialize(iq))

    async def until(self, wanted: type[Event]) -> Event:
        """Feed what arrives to the call machine until it yields a ``wanted`` event."""
        assert self.call is not None
        while True:
            el = await self.wire.next(timeout=30)
            assert el is not None, "the server closed the stream"
            sender = JID.parse(el.get("from") or str(self.jid.domain))
            step: Step = []
            if el.tag == MESSAGE and (found := jmi.find(el)) is not None:
                step = self.call.on_message(sender, found, 0.0)
            elif el.tag == IQ and el.get("type") == "set" and el.find(JINGLE) is not None:
                step = self.call.on_iq(sender, el.get("id") or "", el[0])
                for reply in (i for i in step if isinstance(i, Reply)):
                    self.wire.send(serialize(element(IQ, {"type": "result", "to": str(reply.to), "id": reply.id})))
            self.send(step)
            found_event = next((item for item in step if isinstance(item, wanted)), None)
            if found_event is not None:
                return found_event

    async def terminated(self) -> Reason | None:
        """Until the callee's session-terminate (acknowledged, as every Jingle IQ); its reason.
        The JMI finish may come before it: the IQ still wants its answer."""
        while True:
            el = await self.wire.next(timeout=30)
            assert el is not None, "the server closed the stream"
            jingle = el.find(JINGLE)
            if el.tag == IQ and el.get("type") == "set" and jingle is not None:
                self.wire.send(serialize(element(IQ, {"type": "result", "to": el.get("from"), "id": el.get("id")})))
                if jingle.get("action") == "session-terminate":
                    return Jingle.from_xml(jingle).reason

    async def propose(self) -> Proceeded:
        self.call, step = CallSession.outgoing("scripted-1", self.jid, JID.parse("bob@localhost"), 0.0)
        self.send(step)
        proceeded = await self.until(Proceeded)
        assert isinstance(proceeded, Proceeded)
        return proceeded


async def scripted_call(server: Server, clients: list[Client]) -> tuple[ScriptedCaller, Client]:
    await add_user(server, "alice", PASSWORD)
    await add_user(server, "bob", PASSWORD)
    wire, alice = await raw_client(server, "alice", "laptop")
    host, port = server.bound["c2s"][0]
    bob = Client("bob@localhost/phone", PASSWORD, host=host, port=port, direct_tls=False, verify=False)
    await bob.connect()
    clients.append(bob)
    return ScriptedCaller(wire, alice), bob


async def answer(bob: Client, **options: Any) -> Call:
    async with asyncio.timeout(30):
        async for incoming in bob.incoming_calls():
            return await incoming.answer(**options)
    raise AssertionError("no call rang")


def without_candidates(contents: RtpContents) -> tuple[RtpContents, list[tuple[str, Candidate]]]:
    """The offer as a trickling peer sends it (no candidates yet), and the candidates held back."""
    held = []
    out = []
    for content in contents.contents:
        assert content.transport is not None
        held += [(content.name, c) for c in content.transport.candidates]
        out.append(replace(content, transport=replace(content.transport, candidates=())))
    return RtpContents(tuple(out), contents.groups), held


async def test_candidates_trickled_after_the_offer_are_taken(live_server: Server, clients: list[Client]) -> None:
    """XEP-0176 §5.3: Conversations sends session-initiate without candidates, then each in a
    transport-info as its WebRTC engine finds it; our callee gathers them and media flows."""
    caller, bob = await scripted_call(live_server, clients)
    answering = asyncio.ensure_future(answer(bob))
    try:
        await caller.propose()
        assert caller.call is not None
        offer, held = without_candidates(await caller.media.offer())
        assert held
        caller.send(caller.call.initiate(offer, 0.0))
        ufrag = next(c.transport.ufrag for c in offer.contents if c.transport is not None)
        pwd = next(c.transport.pwd for c in offer.contents if c.transport is not None)
        for name, candidate in held:
            caller.send(caller.call.add_candidate(name, candidate, ufrag, pwd))
        accepted = await caller.until(RemoteDescription)
        assert isinstance(accepted, RemoteDescription)
        await caller.media.accepted(accepted.contents)
        answered = await answering
        await answered.wait_connected(30)
        assert answered.media is not None
        async with asyncio.timeout(30):
            await answered.media.sink.heard(0.5)
        hanging_up = asyncio.ensure_future(answered.hangup())
        reason = await caller.terminated()
        assert reason is not None and reason.condition == "success"
        await hanging_up
    finally:
        await caller.media.close()
        caller.wire.close()


async def test_a_fingerprint_not_matching_the_certificate_ends_with_security_error(
        live_server: Server, clients: list[Client]) -> None:  # fmt: skip
    """RFC 5763 §5: the caller's certificate is not the one its (plain) fingerprint names, as
    when someone in between rewrote the offer: DTLS fails and the callee terminates the session
    with security-error."""
    caller, bob = await scripted_call(live_server, clients)
    answering = asyncio.ensure_future(answer(bob))
    try:
        await caller.propose()
        assert caller.call is not None
        offer = await caller.media.offer()
        tampered = []
        for content in offer.contents:
            assert content.transport is not None
            fingerprints = tuple(replace(f, value=":".join(["AB"] * 32)) for f in content.transport.fingerprints)
            tampered.append(replace(content, transport=replace(content.transport, fingerprints=fingerprints)))
        caller.send(caller.call.initiate(RtpContents(tuple(tampered), offer.groups), 0.0))
        accepted = await caller.until(RemoteDescription)
        assert isinstance(accepted, RemoteDescription)
        await caller.media.accepted(accepted.contents)
        answered = await answering
        ended = await caller.until(Ended)
        assert isinstance(ended, Ended) and ended.reason.condition == "security-error" and ended.by_peer
        # The callee sends its session-terminate first and ends once its media have closed.
        assert (await asyncio.wait_for(asyncio.shield(answered.ended), 30)).reason.condition == "security-error"
        assert describe(answered.ended.result()) == (
            "the call failed its security check: DTLS failed: the peer's certificate does not match its fingerprint")
        assert not answered.connected.is_set()
    finally:
        await caller.media.close()
        caller.wire.close()


async def test_an_encrypted_fingerprint_that_cannot_be_opened_is_refused(
        live_server: Server, clients: list[Client]) -> None:  # fmt: skip
    """The offer's fingerprint claims to be OMEMO-encrypted for the callee's device, but is
    not openable: the callee does not fall back to trusting anything, it ends with security-error."""
    caller, bob = await scripted_call(live_server, clients)
    answering = asyncio.ensure_future(answer(bob))
    try:
        proceeded = await caller.propose()
        assert caller.call is not None and proceeded.device == (await bob.omemo.own_device()).id
        offer = await caller.media.offer()
        forged = (f"<encrypted xmlns='{OMEMO_LEGACY}'><header sid='4242'><key rid='{proceeded.device}'>AAAA</key>"
                  "<iv>AAAAAAAAAAAAAAAA</iv></header><payload>AAAA</payload></encrypted>")  # fmt: skip
        sealed = []
        for content in offer.contents:
            assert content.transport is not None
            encrypted = tuple(EncryptedFingerprint(f.hash, forged, f.setup) for f in content.transport.fingerprints)
            transport = replace(content.transport, fingerprints=(), encrypted_fingerprints=encrypted)
            sealed.append(replace(content, transport=transport))
        caller.send(caller.call.initiate(RtpContents(tuple(sealed), offer.groups), 0.0))
        ended = await caller.until(Ended)
        assert isinstance(ended, Ended) and ended.reason.condition == "security-error"
        assert ended.reason.text is not None and "cannot be opened" in ended.reason.text
        answered = await answering
        assert answered.ended.done() and answered.media is None
    finally:
        await caller.media.close()
        caller.wire.close()



class Gate(LossProxy):
    """A UDP relay in front of coturn that holds what the clients send until it is opened: the
    STUN and TURN servers answer nobody before that."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        super().__init__(upstream)
        self.held: list[tuple[bytes, tuple[str, int]]] | None = []

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.held is not None:
            self.held.append((data, addr))
        else:
            super().datagram_received(data, addr)

    def open(self) -> None:
        held, self.held = self.held or [], None
        for data, addr in held:
            super().datagram_received(data, addr)


def recording_jingle(client: Client, then: Callable[[Jingle], None] = lambda _: None) -> list[Jingle]:
    """Every Jingle IQ the client's calls receive, in order; ``then`` sees each once handled."""
    seen: list[Jingle] = []
    handle = client._calls._on_jingle

    def record(stanza: Stanza) -> Element | None:
        jingle = Jingle.from_xml(stanza.el[0])
        seen.append(jingle)
        try:
            return handle(stanza)
        finally:
            then(jingle)

    client.handle_iq("set", JINGLE, record)
    return seen


def candidate_types(jingle: Jingle) -> list[str]:
    return [c.type for content in jingle.contents if content.transport is not None for c in content.transport.candidates]


@pytest.mark.parametrize("relay_only", [False, True])
async def test_our_candidates_trickle_after_the_description(tmp_path: Path, relay_only: bool) -> None:
    """XEP-0176 §5.3 for our own candidates, through a real coturn that answers no STUN or TURN
    request until the caller has the callee's session-accept: the offer and the answer go out
    with the host candidates (none at all relay-only) without waiting for the servers, the
    server-reflexive and relayed ones follow in transport-info once the servers answer, and
    audio flows both ways; relay-only over the pair of the two relays."""
    require_coturn()
    port = free_port(udp=True)
    secret = secrets.token_urlsafe(24)
    with turnserver(turn_config_for(tmp_path / "schnack.toml", port, secret), tmp_path / "coturn") as process:
        await ready(process, port, tmp_path / "coturn" / "turnserver.log")
        gate = Gate(("127.0.0.1", port))
        await gate.start()
        extdisco = {"stun_host": "127.0.0.1", "stun_port": gate.port, "turn_host": "127.0.0.1",
                    "turn_port": gate.port, "turn_transports": ["udp"], "secret": secret, "lifetime": 600}  # fmt: skip
        try:
            async with running(tmp_path, listen=True, modules={"enable": ["extdisco"], "extdisco": extdisco}) as server:
                await add_user(server, "alice", PASSWORD)
                await add_user(server, "bob", PASSWORD)
                host, c2s = server.bound["c2s"][0]
                alice, bob = (Client(jid, PASSWORD, host=host, port=c2s, direct_tls=False, verify=False)
                              for jid in ("alice@localhost/laptop", "bob@localhost/phone"))  # fmt: skip
                try:
                    await alice.connect()
                    await bob.connect()
                    to_bob = recording_jingle(bob)
                    to_alice = recording_jingle(alice, lambda j: gate.open() if j.action == "session-accept" else None)
                    ringing = asyncio.ensure_future(answer(bob, source=write_tone(tmp_path / "bob.wav", 1000, 3.0),
                                                           sink=tmp_path / "bob-heard.wav", relay_only=relay_only))  # fmt: skip
                    await asyncio.sleep(0)
                    call = await alice.call("bob@localhost", source=write_tone(tmp_path / "alice.wav", 440, 3.0),
                                            sink=tmp_path / "alice-heard.wav", relay_only=relay_only)  # fmt: skip
                    answered = await ringing
                    await call.wait_connected(60)
                    await answered.wait_connected(60)
                    assert call.media is not None and answered.media is not None
                    async with asyncio.timeout(60):
                        await asyncio.gather(call.media.sink.heard(2.0), answered.media.sink.heard(2.0))

                    for seen, first in ((to_bob, "session-initiate"), (to_alice, "session-accept")):
                        assert seen[0].action == first
                        described = candidate_types(seen[0])
                        assert set(described) == (set() if relay_only else {"host"})
                        trickled = [t for j in seen[1:] if j.action == "transport-info" for t in candidate_types(j)]
                        assert set(trickled) == ({"relay"} if relay_only else {"srflx", "relay"})
                    if relay_only:
                        for media in (call.media, answered.media):
                            connection = media.pc.getTransceivers()[0].sender.transport.transport._connection
                            assert [p.local_candidate.type for p in connection._nominated.values()] == ["relay"]

                    await call.hangup()
                    async with asyncio.timeout(60):
                        assert (await answered.ended).reason.condition == "success"
                finally:
                    await alice.close()
                    await bob.close()
        finally:
            gate.close()
    alice_heard = loud_part(read_wav(tmp_path / "alice-heard.wav"))
    bob_heard = loud_part(read_wav(tmp_path / "bob-heard.wav"))
    assert dominant(alice_heard, (440, 1000)) == 1000 and dominant(bob_heard, (440, 1000)) == 440


async def test_an_accept_from_another_device_stops_the_ringing(live_server: Server, clients: list[Client]) -> None:
    """Dino and Conversations answer with ``<accept/>`` to their own bare JID (XEP-0353 v0.3)
    as well as ``<proceed/>`` to the caller; Dino's are of type normal without a body, so no
    carbon of the proceed (XEP-0280 §6.1) tells our device on the same account: the accept must."""
    caller, desk = await scripted_call(live_server, clients)
    dino, dino_jid = await raw_client(live_server, "bob", "dino")
    try:
        ringing = asyncio.ensure_future(anext(aiter(desk.incoming_calls())))
        await asyncio.sleep(0)
        caller.call, step = CallSession.outgoing("answered-on-dino", caller.jid, JID.parse("bob@localhost"), 0.0)
        caller.send(step)
        async with asyncio.timeout(30):
            incoming = await ringing
        for kind, to in (("accept", dino_jid.bare), ("proceed", caller.jid)):
            message = element(MESSAGE, {"to": str(to), "id": f"dino-{kind}"})
            message.append(jmi.JingleMessage(kind, "answered-on-dino").to_xml())
            dino.send(serialize(message))
        async with asyncio.timeout(30):
            ended = await incoming.call.ended
        assert ended == Ended(ANSWERED_ELSEWHERE, True) and incoming.call.media is None
    finally:
        dino.close()
        caller.wire.close()

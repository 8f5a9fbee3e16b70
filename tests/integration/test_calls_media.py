"""Audio calls between two schnack clients through the real server on loopback sockets: every
device of the callee rings, one answers and the other stops, audio flows both ways (the tone
each side hears is the one the other played), and either side hangs up; reject, retract and
timeout; and the same call forced through a real coturn relay."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from xml.etree.ElementTree import Element

import aioice.ice
import pytest
from slixmpp import JID as SlixJID

from bench.ports import free_port
from schnack.client import Client
from schnack.client.calls.calls import Call, CallFailed, IncomingCall, describe
from schnack.client.calls.media import DATA_SAVER, NORMAL, EncoderSettings, MediaSession, ice_transports
from schnack.client.calls.protection import protected
from schnack.client.calls.session import ANSWERED_ELSEWHERE, Ended, State
from schnack.client.errors import XmppError
from schnack.server.app import Server
from schnack.server.sessions import Session
from schnack.xmpp import ns
from schnack.xmpp.payloads import jmi
from schnack.xmpp.payloads.carbons import NS as CARBONS
from schnack.xmpp.payloads.carbons import RECEIVED, SENT, Carbon
from schnack.xmpp.payloads.jingle import NS as JINGLE_NS
from schnack.xmpp.payloads.jingle import Jingle
from schnack.xmpp.payloads.jingle_rtp import NS as RTP_NS
from schnack.xmpp.payloads.jingle_rtp import RtpDescription
from schnack.xmpp.payloads.jmi import JingleMessage
from schnack.xmpp.xml import element, qname

from ..client.calls.audio import dominant, loud_part, read_wav, write_tone
from ..client.proxy import Proxy
from ..harness import add_user, running
from .coturn import ready, require_coturn, turn_config_for, turnserver
from .slix import SlixClient
from .test_calls import raw_client
from .wire import Wire

PASSWORD = "correct horse battery staple"
WAIT = 60
MESSAGE = qname(ns.CLIENT, "message")
STORE = "{urn:xmpp:hints}store"


class Devices:
    """Logged-in clients, closed when the test ends."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.clients: list[Client] = []

    async def login(self, jid: str, via: Proxy | None = None, timeout: float = 30.0) -> Client:
        """A client of ``jid``, connected directly or through ``via`` (reconnecting quickly)."""
        client = self.client(jid, via, timeout)
        await client.connect()
        return client

    def client(self, jid: str, via: Proxy | None = None, timeout: float = 30.0, data_dir: Path | None = None) -> Client:
        """The client :meth:`login` connects (its store in ``data_dir``, else in memory)."""
        host, port = self.server.bound["c2s"][0]
        if via is not None:
            host, port = "127.0.0.1", via.port
        client = Client(jid, PASSWORD, host=host, port=port, direct_tls=False, verify=False, backoff=(0.05, 0.5),
                        timeout=timeout, data_dir=data_dir)  # fmt: skip
        self.clients.append(client)
        return client

    async def close(self) -> None:
        for client in self.clients:
            await client.close()


@pytest.fixture
async def devices(tmp_path: Path) -> AsyncIterator[Devices]:
    async with running(tmp_path, listen=True) as server:
        for user in ("alice", "bob"):
            await add_user(server, user, PASSWORD)
        made = Devices(server)
        yield made
        await made.close()


@contextlib.asynccontextmanager
async def devices_and_proxy(tmp_path: Path, modules: dict[str, Any]) -> AsyncIterator[tuple[Devices, Proxy]]:
    """Devices of alice and bob on a server set up with ``modules``, and a proxy in front of its
    client listener to log in through; the devices are closed and the proxy stopped after."""
    async with running(tmp_path, listen=True, modules=modules) as server:
        for user in ("alice", "bob"):
            await add_user(server, user, PASSWORD)
        devices = Devices(server)
        host, port = server.bound["c2s"][0]
        proxy = await Proxy(host, port).start()
        try:
            yield devices, proxy
        finally:
            await proxy.stop()
            await devices.close()


async def rings(client: Client) -> IncomingCall:
    async with asyncio.timeout(WAIT):
        async for incoming in client.incoming_calls():
            return incoming
    raise AssertionError("no call rang")


async def ended(call: Call) -> str:
    async with asyncio.timeout(WAIT):
        result = await call.ended
    return result.reason.condition


async def talk(tmp_path: Path, alice: Client, bob_devices: tuple[Client, ...], **options: Any) -> tuple[Call, Call]:
    """Alice calls bob with a 440 Hz tone, bob answers on his first device with 1000 Hz; both
    have heard two seconds of the other when this returns."""
    ringing = [asyncio.ensure_future(rings(b)) for b in bob_devices]
    await asyncio.sleep(0)
    call = await alice.call("bob@localhost", source=write_tone(tmp_path / "alice.wav", 440, 3.0),
                            sink=tmp_path / "alice-heard.wav", **options)  # fmt: skip
    incoming = [await r for r in ringing]
    async with asyncio.timeout(WAIT):
        await call.ringing.wait()
    answered = await incoming[0].answer(source=write_tone(tmp_path / "bob.wav", 1000, 3.0),
                                        sink=tmp_path / "bob-heard.wav", **options)  # fmt: skip
    for other in incoming[1:]:
        assert describe(await other.call.ended) == "answered on another device"  # it stops ringing
        assert other.call.media is None
    await call.wait_connected(WAIT)
    await answered.wait_connected(WAIT)
    assert call.media is not None and answered.media is not None
    async with asyncio.timeout(WAIT):
        await asyncio.gather(call.media.sink.heard(2.0), answered.media.sink.heard(2.0))
    return call, answered


def check_audio(tmp_path: Path) -> None:
    alice_heard = loud_part(read_wav(tmp_path / "alice-heard.wav"))
    bob_heard = loud_part(read_wav(tmp_path / "bob-heard.wav"))
    assert len(alice_heard) > 48000 and len(bob_heard) > 48000
    assert dominant(alice_heard, (440, 1000)) == 1000
    assert dominant(bob_heard, (440, 1000)) == 440


@pytest.mark.parametrize("hangs_up", ["caller", "callee"])
async def test_call_rings_everywhere_and_audio_flows(tmp_path: Path, devices: Devices, hangs_up: str) -> None:
    alice = await devices.login("alice@localhost/laptop")
    phone = await devices.login("bob@localhost/phone")
    desk = await devices.login("bob@localhost/desk")
    call, answered = await talk(tmp_path, alice, (phone, desk))
    assert call.peer == phone.jid and answered.peer == alice.jid
    first, second = (call, answered) if hangs_up == "caller" else (answered, call)
    stats = await first.hangup()
    assert await ended(second) == "success"
    assert second.ended.result().by_peer and not first.ended.result().by_peer
    other = await second.wait_ended()
    assert stats is not None and other is not None
    assert stats.bytes_sent > 0 and stats.bytes_received > 0 and stats.duration > 0
    assert stats.packets_received > 0 and 0 <= stats.loss < 0.5
    check_audio(tmp_path)


async def ringing_on_phone_and_desk(devices: Devices) -> tuple[Call, IncomingCall, IncomingCall]:
    """Alice (laptop) calls bob, whose phone and desk ring (the clients in this order in
    ``devices``): alice's call and what rings on the phone and on the desk."""
    alice = await devices.login("alice@localhost/laptop")
    phone = await devices.login("bob@localhost/phone")
    desk = await devices.login("bob@localhost/desk")
    ringing = [asyncio.ensure_future(rings(b)) for b in (phone, desk)]
    await asyncio.sleep(0)
    call = await alice.call("bob@localhost")
    on_phone, on_desk = [await r for r in ringing]
    return call, on_phone, on_desk


async def test_reject(devices: Devices) -> None:
    call, on_phone, on_desk = await ringing_on_phone_and_desk(devices)
    await on_phone.reject()
    assert await ended(call) == "decline"
    assert await ended(on_desk.call) == "decline"  # the carbon of the reject stops the desk
    with pytest.raises(CallFailed, match="rejected"):
        await call.wait_connected(WAIT)
    with pytest.raises(CallFailed):
        await on_desk.answer()


async def test_retract_and_timeout(devices: Devices) -> None:
    alice = await devices.login("alice@localhost/laptop")
    phone = await devices.login("bob@localhost/phone")
    ringing = asyncio.ensure_future(rings(phone))
    await asyncio.sleep(0)
    call = await alice.call("bob@localhost")
    incoming = await ringing
    await call.hangup()
    assert await ended(incoming.call) == "cancel" and incoming.call.state is State.ENDED

    ringing = asyncio.ensure_future(rings(phone))
    await asyncio.sleep(0)
    call = await alice.call("bob@localhost", ring_timeout=1.0)
    incoming = await ringing
    assert await ended(call) == "timeout"
    assert await ended(incoming.call) == "timeout"


async def test_closing_the_client_stops_its_ringing_calls(devices: Devices) -> None:
    """A call still ringing as the client closes keeps no timer or task behind; the callee's
    other devices go on ringing (only the caller's retract stops them)."""
    call, on_phone, on_desk = await ringing_on_phone_and_desk(devices)
    alice, phone, _ = devices.clients
    async with asyncio.timeout(WAIT):
        await call.ringing.wait()
    await phone.close()
    assert on_phone.call.ended.done() and describe(on_phone.call.ended.result()) == "the client was closed"
    assert on_phone.call._timer is None and not on_phone.call._tasks
    assert not call.ended.done() and not on_desk.call.ended.done()
    await alice.close()
    assert await ended(on_desk.call) == "cancel"
    assert call.ended.done() and call._timer is None and not call._tasks


@pytest.mark.parametrize("offline", ["caller", "callee"])
async def test_a_signal_written_during_a_reconnect_reaches_the_peer(devices: Devices, offline: str) -> None:
    """A retract (caller) or reject (callee) written while the link is down goes out once it is
    back (XEP-0353 messages carry a store hint: they must arrive), and ends the call there."""
    host, port = devices.server.bound["c2s"][0]
    proxy = await Proxy(host, port).start()
    try:
        alice = await devices.login("alice@localhost/laptop", via=proxy if offline == "caller" else None)
        phone = await devices.login("bob@localhost/phone", via=proxy if offline == "callee" else None)
        ringing = asyncio.ensure_future(rings(phone))
        await asyncio.sleep(0)
        call = await alice.call("bob@localhost")
        incoming = await ringing
        async with asyncio.timeout(WAIT):
            await call.ringing.wait()
        cut_off = alice if offline == "caller" else phone
        events = cut_off.events()
        proxy.refusing = True
        proxy.cut()
        async with asyncio.timeout(WAIT):
            await anext(aiter(events))
        if offline == "caller":
            await call.hangup()
        else:
            await incoming.reject()
        proxy.refusing = False
        peer = incoming.call if offline == "caller" else call
        assert await ended(peer) == ("cancel" if offline == "caller" else "decline")
    finally:
        await proxy.stop()


async def cut_off(client: Client, proxy: Proxy) -> None:
    """The link of ``client`` (through ``proxy``) drops and stays down until the test lets the
    proxy take connections again; returns once the client noticed."""
    events = client.events()
    proxy.refusing = True
    proxy.cut()
    async with asyncio.timeout(WAIT):
        await anext(aiter(events))


async def ringing_through(devices: Devices, proxy: Proxy, **options: Any) -> tuple[Client, Call, IncomingCall]:
    """Alice (laptop) calls bob, whose phone reaches the server through ``proxy``, and it rings:
    the phone's client, alice's call and what rings on the phone."""
    alice = await devices.login("alice@localhost/laptop")
    phone = await devices.login("bob@localhost/phone", via=proxy)
    ringing = asyncio.ensure_future(rings(phone))
    await asyncio.sleep(0)
    call = await alice.call("bob@localhost", **options)
    incoming = await ringing
    async with asyncio.timeout(WAIT):
        await call.ringing.wait()
    return phone, call, incoming


async def hear_and_hang_up(listener: Call, speaker: Call) -> None:
    """The call connects on both sides, ``listener`` hears a second of the speaker's audio, and
    the speaker hangs up."""
    await listener.wait_connected(WAIT)
    await speaker.wait_connected(WAIT)
    assert listener.media is not None
    async with asyncio.timeout(WAIT):
        await listener.media.sink.heard(1.0)
    await speaker.hangup()
    assert await ended(listener) == "success"


@pytest.mark.parametrize("link", ["down", "dead"])
async def test_a_call_answered_while_the_link_is_down_goes_through_once_it_is_back(
    tmp_path: Path, devices: Devices, link: str
) -> None:
    """A phone loses its link while it rings and the user answers: the answer is taken at once,
    and the call is set up once the link is back (the STUN/TURN credentials of XEP-0215 are
    fetched then, not before the answer). The link is known to be down, or dead without the
    client knowing yet: what it writes then is lost, and the client notices only later."""
    host, port = devices.server.bound["c2s"][0]
    proxy = await Proxy(host, port).start()
    try:
        phone, call, incoming = await ringing_through(devices, proxy, source=write_tone(tmp_path / "alice.wav", 440, 3.0))
        if link == "down":
            await cut_off(phone, proxy)
        else:
            proxy.swallowing = True
        answered = await incoming.answer(sink=tmp_path / "bob-heard.wav")
        assert answered.state is State.PROCEEDED
        if link == "dead":
            await cut_off(phone, proxy)
            proxy.swallowing = False
        proxy.refusing = False
        await hear_and_hang_up(answered, call)
    finally:
        await proxy.stop()


@pytest.mark.parametrize("late", ["phone", "desk"])
async def test_an_answer_after_another_devices_ends_once_the_link_is_back(
    tmp_path: Path, devices: Devices, late: str
) -> None:
    """Bob answers on one device while its link is down, then on the other: the caller goes on
    with the one whose <proceed/> came first (XEP-0353 §3.3), and once the late device is back
    its answer ends at once as answered on another device instead of waiting for a session that
    goes elsewhere; the call on the first device is not touched."""
    host, port = devices.server.bound["c2s"][0]
    proxy = await Proxy(host, port).start()
    try:
        alice = await devices.login("alice@localhost/laptop")
        bob = {name: await devices.login(f"bob@localhost/{name}", via=proxy if name == late else None)
               for name in ("phone", "desk")}  # fmt: skip
        ringing = {name: asyncio.ensure_future(rings(client)) for name, client in bob.items()}
        await asyncio.sleep(0)
        call = await alice.call("bob@localhost", source=write_tone(tmp_path / "alice.wav", 440, 3.0))
        incoming = {name: await ring for name, ring in ringing.items()}
        await cut_off(bob[late], proxy)
        loser = await incoming[late].answer()
        first = "desk" if late == "phone" else "phone"
        winner = await incoming[first].answer(sink=tmp_path / "bob-heard.wav")
        async with asyncio.timeout(WAIT):
            await call.answered.wait()
        proxy.refusing = False
        with pytest.raises(CallFailed, match=r"^answered on another device$"):
            await loser.wait_connected(WAIT)
        assert call.peer == bob[first].jid
        await hear_and_hang_up(winner, call)
    finally:
        await proxy.stop()


async def test_an_answer_while_the_link_is_down_ends_once_back_when_the_call_is_over(devices: Devices) -> None:
    """Bob answers on his phone while its link is down, and declines on his desk meanwhile: the
    call ends for the caller. Once the phone is back, its <proceed/> finds no call there, and the
    caller answers it with item-not-found (RFC 6120 §8.3, as Conversations does), so the phone's
    answer ends at once instead of waiting some 90 s for a session that never comes."""
    host, port = devices.server.bound["c2s"][0]
    proxy = await Proxy(host, port).start()
    try:
        alice = await devices.login("alice@localhost/laptop")
        bob = {"phone": await devices.login("bob@localhost/phone", via=proxy),
               "desk": await devices.login("bob@localhost/desk")}  # fmt: skip
        ringing = {name: asyncio.ensure_future(rings(client)) for name, client in bob.items()}
        await asyncio.sleep(0)
        call = await alice.call("bob@localhost")
        incoming = {name: await ring for name, ring in ringing.items()}
        await cut_off(bob["phone"], proxy)
        late = await incoming["phone"].answer()
        await incoming["desk"].reject()
        assert await ended(call) == "decline"
        proxy.refusing = False
        with pytest.raises(CallFailed, match=r"^alice@localhost/laptop no longer has this call: item-not-found"):
            await late.wait_connected(WAIT)
    finally:
        await proxy.stop()


async def accepts_before_the_proceed(watch: Wire) -> list[tuple[str | None, Element]]:
    """The <accept/> messages a device of bob's gets, directly or as carbons (XEP-0280), until the
    carbon of the <proceed/> that follows them: the sender of each, and the message itself."""
    accepts: list[tuple[str | None, Element]] = []
    while True:
        el = await watch.next(timeout=WAIT)
        assert el is not None, "the server closed the stream"
        carbon = next((c for c in el if c.tag in (RECEIVED, SENT)), None) if el.tag == MESSAGE else None
        message = el if carbon is None else Carbon.from_xml(carbon).message
        found = jmi.find(message) if message.tag == MESSAGE else None
        if found is not None and found.kind == "proceed":
            return accepts
        if found is not None and found.kind == "accept":
            accepts.append((message.get("from"), message))


@pytest.mark.parametrize("link", ["up", "down"])
async def test_an_answer_stops_the_other_devices_ringing_without_the_callers_finish(devices: Devices, link: str) -> None:
    """A caller other than schnack (slixmpp here) sends no <finish/> to the callee's devices that
    did not answer. The answering device tells them with <accept/> to its own bare JID (XEP-0353
    v0.3 §3.3), before its <proceed/>, and also when it answered while its link was down: both
    go out once the link is back. Our desk stops ringing as answered on another device; a device
    of bob's that goes by <accept/> (as clients of v0.3 of the XEP do) gets it once, not doubled by a carbon."""
    host, port = devices.server.bound["c2s"][0]
    proxy = await Proxy(host, port).start()
    caller = SlixClient(devices.server, "alice@localhost/laptop")
    caller.xmpp.register_plugin("xep_0030")
    caller.xmpp.register_plugin("xep_0353")
    proceeded: asyncio.Queue[Any] = asyncio.Queue()
    caller.xmpp.add_event_handler("jingle_message_proceed", proceeded.put_nowait)
    assert await caller.start()
    watch, _ = await raw_client(devices.server, "bob", "watch")
    try:
        watch.send(f"<iq type='set' id='carbons'><enable xmlns='{CARBONS}'/></iq>")
        bob = {"phone": await devices.login("bob@localhost/phone", via=proxy),
               "desk": await devices.login("bob@localhost/desk")}  # fmt: skip
        ringing = {name: asyncio.ensure_future(rings(client)) for name, client in bob.items()}
        await asyncio.sleep(0)
        caller.xmpp.plugin["xep_0353"].propose(SlixJID("bob@localhost"), "from-slixmpp", [(RTP_NS, "audio")])
        incoming = {name: await ring for name, ring in ringing.items()}
        if link == "down":
            await cut_off(bob["phone"], proxy)
        answered = await incoming["phone"].answer()
        proxy.refusing = False
        async with asyncio.timeout(WAIT):
            proceed = await proceeded.get()
            ended = await incoming["desk"].call.ended
        assert str(proceed["from"]) == "bob@localhost/phone"
        assert ended == Ended(ANSWERED_ELSEWHERE, True) and describe(ended) == "answered on another device"
        assert incoming["desk"].call.media is None
        ((sender, accept),) = await accepts_before_the_proceed(watch)
        assert sender == "bob@localhost/phone" and accept.get("to") == "bob@localhost" and accept.get("type") == "chat"
        assert accept.find(STORE) is not None
        assert jmi.find(accept) == JingleMessage("accept", "from-slixmpp")
        assert answered.state is State.PROCEEDED
    finally:
        watch.close()
        await caller.stop()
        await proxy.stop()


async def test_a_call_placed_while_the_link_is_down_rings_once_it_is_back(tmp_path: Path, devices: Devices) -> None:
    """Calling while the link is down: the call is placed at once, its proposal goes out once
    the link is back, and it is answered and set up as any other."""
    host, port = devices.server.bound["c2s"][0]
    proxy = await Proxy(host, port).start()
    try:
        alice = await devices.login("alice@localhost/laptop", via=proxy)
        phone = await devices.login("bob@localhost/phone")
        ringing = asyncio.ensure_future(rings(phone))
        await cut_off(alice, proxy)
        call = await alice.call("bob@localhost", sink=tmp_path / "alice-heard.wav")
        assert call.state is State.PROPOSED and not alice.connected
        proxy.refusing = False
        answered = await (await ringing).answer(source=write_tone(tmp_path / "bob.wav", 1000, 3.0))
        await hear_and_hang_up(call, answered)
    finally:
        await proxy.stop()


async def test_a_call_proposed_while_the_callees_link_is_down_rings_once_it_is_back(
    tmp_path: Path, devices: Devices
) -> None:
    """The phone's link is down as the call comes: the proposal waits in the hibernating session
    and comes with the resumption, with a XEP-0203 delay; the caller still rings, so the phone
    rings too, and the call is answered as any other."""
    host, port = devices.server.bound["c2s"][0]
    proxy = await Proxy(host, port).start()
    try:
        alice = await devices.login("alice@localhost/laptop")
        phone = await devices.login("bob@localhost/phone", via=proxy)
        ringing = asyncio.ensure_future(rings(phone))
        queued = asyncio.Event()

        async def held(_session: Session, el: Element) -> None:
            if el.find(qname(jmi.NS, "propose")) is not None:
                queued.set()

        devices.server.hooks.add("sm/hibernating-stanza", held)
        await phone.roster()  # a round trip: the server has taken the phone's initial presence
        await cut_off(phone, proxy)
        call = await alice.call("bob@localhost", source=write_tone(tmp_path / "alice.wav", 440, 3.0))
        async with asyncio.timeout(WAIT):
            await queued.wait()
        proxy.refusing = False
        answered = await (await ringing).answer(sink=tmp_path / "bob-heard.wav")
        await hear_and_hang_up(answered, call)
        assert phone.sm.resumptions == 1
    finally:
        await proxy.stop()


async def test_a_proposal_older_than_the_ring_time_rings_no_more(devices: Devices) -> None:
    """A proposal whose XEP-0203 stamp says it was sent longer ago than a call rings (from
    offline storage after a long absence) is dropped; the next, live, one rings."""
    alice = await devices.login("alice@localhost/laptop")
    phone = await devices.login("bob@localhost/phone")
    ringing = asyncio.ensure_future(rings(phone))
    await asyncio.sleep(0)
    old = element(qname(ns.CLIENT, "message"), {"to": str(phone.jid), "type": "chat"},
                  children=(JingleMessage("propose", "old-call", (RtpDescription("audio"),)).to_xml(),
                            element(qname(ns.DELAY, "delay"), {"stamp": "2026-01-01T00:00:00Z"})))  # fmt: skip
    await alice.send_element(old)
    call = await alice.call("bob@localhost")
    assert (await ringing).call.sid == call.sid
    await call.hangup()


async def test_a_proposal_from_offline_storage_that_was_retracted_does_not_ring(devices: Devices) -> None:
    """A call to a phone that is off, which the caller gave up: proposal and retract wait in
    offline storage, and the phone, logging in within the ring time, does not ring for it (the
    retract comes before the proposal may ring); the next, live, call rings."""
    alice = await devices.login("alice@localhost/laptop")
    given_up = await alice.call("bob@localhost", ring_timeout=1.0)
    assert await ended(given_up) == "timeout"
    phone = devices.client("bob@localhost/phone")
    calls = phone.incoming_calls()
    await phone.connect()
    await phone.roster()  # a round trip: the phone has read what waited for it
    call = await alice.call("bob@localhost")
    async with asyncio.timeout(WAIT):
        first = await anext(calls)
    assert first.call.sid == call.sid
    await call.hangup()


@pytest.mark.parametrize("resumed", [True, False], ids=["resumed", "new-session"])
async def test_an_answer_to_a_call_given_up_while_the_link_was_down_fails_once_it_is_back(
    tmp_path: Path, resumed: bool
) -> None:
    """The caller hangs up while the callee's link is down, and the callee answers: once the link
    is back, the retract held for it (with a XEP-0203 delay: handed over by the resumed session,
    or from offline storage to a new one once the old one's hibernation ended) fails the answer
    with the caller's reason instead of leaving it to wait for a session that never comes."""
    modules = {} if resumed else {"sm": {"resume_timeout": 1}}
    async with devices_and_proxy(tmp_path, modules) as (devices, proxy):
        server = devices.server
        phone, call, incoming = await ringing_through(devices, proxy)
        hibernating = server.sessions.get(phone.jid)
        gone = asyncio.Event()

        async def closed(session: Session) -> None:
            if session is hibernating:
                gone.set()

        server.hooks.add("session-closed", closed)
        await cut_off(phone, proxy)
        await call.hangup()
        if not resumed:
            async with asyncio.timeout(WAIT):
                await gone.wait()
        answered = await incoming.answer()
        proxy.refusing = False
        with pytest.raises(CallFailed, match="the caller hung up"):
            await answered.wait_connected(WAIT)
        assert phone.sm.resumptions == (1 if resumed else 0)


@pytest.mark.parametrize("then", ["link back", "closed"])
async def test_hanging_up_while_the_link_is_down_does_not_wait_for_it(tmp_path: Path, devices: Devices, then: str) -> None:
    """Hanging up returns the call's statistics at once, though the link is down and the
    session-terminate waits for it (as long as the client waits for any request); the peer
    hears of it once the link is back, and closing the client first stops the request."""
    host, port = devices.server.bound["c2s"][0]
    proxy = await Proxy(host, port).start()
    try:
        alice = await devices.login("alice@localhost/laptop")
        phone = await devices.login("bob@localhost/phone", via=proxy, timeout=10 * WAIT)
        call, answered = await talk(tmp_path, alice, (phone,))
        await cut_off(phone, proxy)
        async with asyncio.timeout(WAIT):
            stats = await answered.hangup()
        assert stats is not None and stats.bytes_received > 0
        if then == "closed":
            await phone.close()
            assert not phone._calls.requests
        else:
            proxy.refusing = False
            assert await ended(call) == "success"
    finally:
        await proxy.stop()


async def test_crossed_proposals_leave_the_one_with_the_lower_id(devices: Devices) -> None:
    """Alice and bob call each other at once: the proposal with the lower session id rings on,
    the other is given up on both sides with reason expired (XEP-0353 §4.1)."""
    alice = await devices.login("alice@localhost/laptop")
    bob = await devices.login("bob@localhost/phone")
    to_bob, to_alice = await asyncio.gather(alice.call("bob@localhost"), bob.call("alice@localhost"))
    winner, loser = sorted((to_bob, to_alice), key=lambda c: c.sid.encode())
    assert await ended(loser) == "expired"
    async with asyncio.timeout(WAIT):
        await winner.ringing.wait()
    assert not winner.ended.done()
    await winner.hangup()


async def test_relay_only_through_coturn(tmp_path: Path) -> None:
    require_coturn()
    port = free_port(udp=True)
    secret = secrets.token_urlsafe(24)
    extdisco = {"turn_host": "127.0.0.1", "turn_port": port, "turn_transports": ["udp", "tcp"], "secret": secret,
                "lifetime": 600}  # fmt: skip
    with turnserver(turn_config_for(tmp_path / "schnack.toml", port, secret), tmp_path / "coturn") as process:
        await ready(process, port, tmp_path / "coturn" / "turnserver.log")
        async with running(tmp_path, listen=True, modules={"enable": ["extdisco"], "extdisco": extdisco}) as server:
            for user in ("alice", "bob"):
                await add_user(server, user, PASSWORD)
            made = Devices(server)
            try:
                alice = await made.login("alice@localhost/laptop")
                bob = await made.login("bob@localhost/phone")
                call, answered = await talk(tmp_path, alice, (bob,), relay_only=True)
                assert call.media is not None
                pair = call.media.pc.getTransceivers()[0].sender.transport.transport.iceGatherer.getLocalCandidates()
                assert pair and all(c.type == "relay" for c in pair)
                await call.hangup()
                assert await ended(answered) == "success"
            finally:
                await made.close()
    check_audio(tmp_path)


async def test_jingle_for_an_unknown_session(devices: Devices) -> None:
    """XEP-0166 §8: a Jingle IQ for no session of ours is refused with unknown-session, and the
    client keeps working."""
    alice = await devices.login("alice@localhost/laptop")
    bob = await devices.login("bob@localhost/phone")
    stray = Jingle("session-info", "no-such-session")
    iq = element(qname(ns.CLIENT, "iq"), {"type": "set", "to": str(bob.jid)}, children=(stray.to_xml(),))
    with pytest.raises(XmppError) as info:
        await alice.iq(iq)
    assert info.value.condition == "item-not-found"
    broken = element(qname(ns.CLIENT, "iq"), {"type": "set", "to": str(bob.jid)},
                     children=(element(qname(JINGLE_NS, "jingle"), {"sid": "x"}),))  # fmt: skip
    with pytest.raises(XmppError):
        await alice.iq(broken)
    ringing = asyncio.ensure_future(rings(bob))
    await asyncio.sleep(0)
    call = await alice.call("bob@localhost")
    await ringing
    await call.hangup()


async def test_data_saver_asked_by_the_caller_binds_both_ways(devices: Devices, tmp_path: Path) -> None:
    """The caller's data saver fmtp/ptime (RFC 7587 §6.1) makes the callee send at 12 kbit/s,
    mediumband, in 120 ms frames with DTX too, though the callee chose the normal profile (whose
    DTX keepalive it keeps: how often to send during silence is the sender's own choice)."""
    alice = await devices.login("alice@localhost/laptop")
    bob = await devices.login("bob@localhost/phone")
    ringing = asyncio.ensure_future(rings(bob))
    await asyncio.sleep(0)
    call = await alice.call("bob@localhost", data_saver=True, source=write_tone(tmp_path / "a.wav", 440, 2.0))
    answered = await (await ringing).answer(sink=tmp_path / "bob-heard.wav")
    await call.wait_connected(WAIT)
    await answered.wait_connected(WAIT)
    assert call.media is not None and answered.media is not None
    saver = EncoderSettings.negotiate(DATA_SAVER, None)
    # The data saver starts protected (RED: both sides offer it) until two receiver reports
    # show no loss; the callee's normal profile does not protect.
    assert call.media.track.settings == protected(saver, red=True)
    assert answered.media.track.settings == replace(saver, keepalive=NORMAL.keepalive)
    async with asyncio.timeout(WAIT):
        await answered.media.sink.heard(1.0)
    await answered.hangup()
    assert await ended(call) == "success"
    assert dominant(loud_part(read_wav(tmp_path / "bob-heard.wav")), (440, 1000)) == 440


class Unplugged:
    """A socket whose datagrams go nowhere; closing it closes the real one."""

    def __init__(self, transport: asyncio.DatagramTransport) -> None:
        self.transport = transport

    def sendto(self, data: bytes, addr: object = None) -> None:
        pass

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


def cut_network(media: MediaSession) -> None:
    """From now on nothing reaches or leaves the call's sockets, as when a phone loses its network."""
    for transport in ice_transports(media.pc):
        for protocol in transport._connection._protocols:
            protocol.transport = Unplugged(protocol.transport)  # type: ignore[assignment]
            protocol.datagram_received = lambda *_: None  # type: ignore[method-assign]


async def test_a_call_that_loses_its_network_ends_with_connectivity_error(
    tmp_path: Path, devices: Devices, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RFC 7675: once consent to send expires, both sides end the call with connectivity-error
    (XEP-0166 §7.4) and release its media, instead of staying in a silent call."""
    monkeypatch.setattr(aioice.ice, "CONSENT_INTERVAL", 0.2)
    alice = await devices.login("alice@localhost/laptop")
    bob = await devices.login("bob@localhost/phone")
    call, answered = await talk(tmp_path, alice, (bob,))
    for side in (call, answered):
        assert side.media is not None
        cut_network(side.media)
    assert await ended(call) == "connectivity-error"
    assert await ended(answered) == "connectivity-error"
    for side, client in ((call, alice), (answered, bob)):
        await side.wait_ended()
        assert side.media is not None and side.media.pc.connectionState == "closed"
        assert side.sid not in client._calls._calls

"""No message lost (DESIGN.md, Delivery guarantee), end to end on real sockets.

A sender with stream management (XEP-0198) sends a burst of 1,000 messages and counts the
server's ``<a h=.../>``: a message the server acknowledged must reach the receiver exactly once,
in order, whatever dies in between:

- the receiver's TCP connection is cut mid-burst (no closing stream, no TLS close_notify), and it
  resumes (§5) or logs in again; or it never comes back, and then every message it did not
  acknowledge waits in offline storage and every message is in its archive (MAM);
- the server is killed with SIGKILL mid-burst and started again, on SQLite and on PostgreSQL:
  an offline receiver then gets from offline storage, and an online one whose queue died with
  the server finds in its archive after the last stanza-id it got, every acknowledged message.

The receiver is slixmpp (xep_0198, the independent peer) or a raw client on wire.py that
acknowledges exactly what the test says. "Exactly once" counts what the receiver acknowledged:
a message it got but did not acknowledge comes again (the server cannot know it arrived), and
clients drop such a copy by its stanza-id.
"""

from __future__ import annotations

import asyncio
import subprocess
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any
from xml.etree.ElementTree import Element

import pytest

from schnack.server.app import Server
from schnack.server.modules.mam import STORE as MAM
from schnack.server.modules.offline import STORE as OFFLINE
from schnack.server.sessions import Session
from schnack.server.storage import Storage, open_storage
from schnack.xmpp import ns
from schnack.xmpp.parser import parse_frame
from schnack.xmpp.payloads.forward import NS as FORWARD
from schnack.xmpp.payloads.mam import NS as MAM_NS
from schnack.xmpp.payloads.rsm import NS as RSM
from schnack.xmpp.payloads.sm import ACK, ENABLED, REQUEST, RESUMED
from schnack.xmpp.payloads.sm import NS as SM
from schnack.xmpp.xml import qname

from ..harness import add_user, running
from ..server.storage.conftest import storage_url
from .slix import PASSWORD, SlixClient
from .test_messages import OMEMO
from .test_restart import Process, served_config
from .wire import Wire

__all__ = ["storage_url"]

pytestmark = pytest.mark.asyncio

BURST = 1000
IDS = [f"m{i:04d}" for i in range(BURST)]
# The receiver acknowledges until it has this many messages, and its connection is cut at CUT.
ACK_UNTIL = 200
CUT = 300
# An online receiver whose network stalls after this many messages.
STALL = 100
GUARD = 120
_MESSAGE = qname(ns.CLIENT, "message")
_STANZAS = frozenset({_MESSAGE, qname(ns.CLIENT, "presence"), qname(ns.CLIENT, "iq")})
_STANZA_ID = qname(ns.SID, "stanza-id")


async def authenticated(server: Any, user: str) -> Wire:
    """A connection secured with STARTTLS and authenticated with SCRAM, not bound."""
    wire = await Wire.connect(server)
    await wire.open()
    await wire.login(user, PASSWORD, await wire.starttls())
    return wire


def message(to: str, id: str) -> str:
    """A chat message as an OMEMO client sends it (the server's default policy wants encryption)."""
    return f"<message to='{to}' type='chat' id='{id}'><body>{id}</body>{OMEMO}</message>"


class SmClient:
    """A raw client with stream management: it counts the stanzas it gets (its ``h``) and the
    server's acks of its own, and answers ``<r/>`` only while ``acking`` says so."""

    def __init__(self, wire: Wire, jid: str) -> None:
        self.wire = wire
        self.jid = jid
        self.handled = 0
        self.sent = 0
        self.server_h = 0
        self.acks = 0
        self.acked: int | None = None
        self.acking: Callable[[SmClient], bool] = lambda _client: True
        self.messages: list[Element] = []
        # The client's h right after each of its messages arrived.
        self.h_at: list[int] = []
        # The other stanzas it got, in order.
        self.others: list[Element] = []
        self.sm_id: str | None = None

    @classmethod
    async def login(cls, server: Any, user: str, resource: str) -> SmClient:
        """Connect, authenticate and bind ``resource``, without stream management yet."""
        wire = await authenticated(server, user)
        return cls(wire, await wire.bind(resource))

    async def enable(self) -> None:
        self.wire.send(f"<enable xmlns='{SM}' resume='true'/>")
        enabled = await self.wire.next()
        assert enabled is not None and enabled.tag == ENABLED, enabled
        self.sm_id = enabled.get("id")

    async def resume(self, previd: str, h: int) -> int:
        """§5 on this (new, authenticated) stream; the server's count of our stanzas."""
        self.wire.send(f"<resume xmlns='{SM}' previd='{previd}' h='{h}'/>")
        resumed = await self.wire.next()
        assert resumed is not None and resumed.tag == RESUMED, resumed
        self.sm_id = previd
        # Our count goes on from the stanzas of the stream before.
        self.sent = self.server_h = int(resumed.get("h", "-1"))
        return self.sent

    def send(self, xml: str) -> None:
        self.wire.send(xml)
        self.sent += 1

    def request(self) -> None:
        self.wire.send(f"<r xmlns='{SM}'/>")

    def ack(self) -> None:
        self.wire.send(f"<a xmlns='{SM}' h='{self.handled}'/>")
        self.acked = self.handled

    def cut(self) -> None:
        """What a phone losing its network looks like to the server: the TCP connection just ends."""
        transport = self.wire.writer.transport
        transport.abort()

    def ids(self) -> list[str]:
        return [el.get("id", "") for el in self.messages]

    def _handle(self, el: Element) -> None:
        if el.tag in _STANZAS:
            self.handled += 1
            if el.tag == _MESSAGE and el.find(qname(ns.CLIENT, "body")) is not None:
                self.messages.append(el)
                self.h_at.append(self.handled)
            else:
                self.others.append(el)
        elif el.tag == REQUEST:
            if self.acking(self):
                self.ack()
        elif el.tag == ACK:
            self.server_h = int(el.get("h", "0"))
            self.acks += 1

    async def read(self, until: Callable[[], bool], timeout: float = GUARD) -> None:
        """Handle what arrives until ``until()`` holds."""
        async with asyncio.timeout(timeout):
            while not until():
                el = await self.wire.next(timeout)
                assert el is not None, f"{self.jid}: the server closed the stream"
                self._handle(el)

    async def sync(self) -> None:
        """Wait until the server handled everything this client sent (an ack asked for now says so)."""
        acks = self.acks
        self.request()
        await self.read(lambda: self.acks > acks and self.server_h == self.sent)

    def close(self) -> None:
        self.wire.close()


async def burst(sender: SmClient, to: str, *, in_flight: int = 200, kill_at: int | None = None,
                kill: Callable[[], None] | None = None) -> None:
    """Send IDS to ``to``, asking for an ack after every 10 and keeping at most ``in_flight``
    unacknowledged; with ``kill_at``, call ``kill`` once the server acknowledged that many."""
    for first in range(0, BURST, 10):
        await sender.read(lambda: sender.sent - sender.server_h < in_flight)
        for id in IDS[first:first + 10]:
            sender.send(message(to, id))
        sender.request()
        if kill_at is not None and sender.server_h >= kill_at:
            assert kill is not None
            kill()
            return
    if kill_at is not None:
        await sender.read(lambda: sender.server_h >= kill_at)
        assert kill is not None
        kill()
        return
    await sender.sync()


async def archived_ids(storage: Storage, user: str, store: str) -> list[str]:
    page = await storage.archive.query("localhost", user, store)
    assert page.complete
    return [parse_frame(item.payload, 10**7).get("id", "") for item in page.items]


# --- the receiver's connection dies: a server in this process ------------------------------------


@pytest.fixture
async def server(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Server]:
    timeout = getattr(request, "param", 300)
    async with running(tmp_path, listen=True, modules={"sm": {"resume_timeout": timeout}}) as srv:
        await add_user(srv, "alice", PASSWORD)
        await add_user(srv, "bob", PASSWORD)
        yield srv


@pytest.fixture
async def closing() -> AsyncIterator[list[SmClient | SlixClient]]:
    """Clients to close when the test ends."""
    made: list[SmClient | SlixClient] = []
    yield made
    for client in made:
        if isinstance(client, SmClient):
            client.close()
        else:
            await client.stop()


async def sender(server: Any, closing: list[SmClient | SlixClient]) -> SmClient:
    alice = await SmClient.login(server, "alice", "desk")
    closing.append(alice)
    await alice.enable()
    return alice


async def receiver(server: Any, closing: list[SmClient | SlixClient], resource: str = "phone") -> SmClient:
    """Bob, available, with resumable stream management; he acknowledges until ACK_UNTIL."""
    bob = await SmClient.login(server, "bob", resource)
    closing.append(bob)
    await bob.enable()
    bob.acking = lambda client: len(client.messages) <= ACK_UNTIL
    bob.send("<presence/>")
    await bob.sync()
    return bob


def session_ended(server: Server, jid: str) -> asyncio.Event:
    """Set once the session of ``jid`` ended, after stream management settled its queue."""
    ended = asyncio.Event()

    async def closed(session: Session) -> None:
        if str(session.jid) == jid:
            ended.set()

    server.hooks.add("session-closed", closed, priority=-1000)
    return ended


async def cut_mid_burst(server: Server, closing: list[SmClient | SlixClient]) -> tuple[SmClient, SmClient]:
    """Alice sends the burst to Bob's bare JID; Bob's connection is cut after CUT messages; the
    burst goes on until the server acknowledged all of it to Alice."""
    alice = await sender(server, closing)
    bob = await receiver(server, closing)
    sending = asyncio.ensure_future(burst(alice, "bob@localhost"))
    await bob.read(lambda: len(bob.messages) >= CUT)
    bob.cut()
    async with asyncio.timeout(GUARD):
        await sending
    assert alice.server_h == alice.sent
    return alice, bob


@pytest.mark.parametrize("lost_on_device", [0, 25], ids=["all-kept", "last-25-lost"])
async def test_raw_receiver_resumes_and_gets_every_message_once_in_order(
    server: Server, closing: list[SmClient | SlixClient], lost_on_device: int
) -> None:
    """§5: the resumed stream sends again exactly what the ``h`` of <resume/> does not cover. With
    ``lost_on_device`` the phone had not stored its last messages when it died, so it resumes
    with a smaller ``h`` than it had reached (never smaller than what it acknowledged)."""
    alice = await sender(server, closing)
    bob = await receiver(server, closing)
    sending = asyncio.ensure_future(burst(alice, "bob@localhost"))
    await bob.read(lambda: len(bob.messages) >= CUT)
    bob.cut()
    assert bob.sm_id is not None and bob.acked is not None
    kept = len(bob.messages) - lost_on_device
    assert bob.h_at[kept - 1] >= bob.acked
    resumed = SmClient(await authenticated(server, "bob"), bob.jid)
    closing.append(resumed)
    resumed.messages, resumed.h_at = bob.messages[:kept], bob.h_at[:kept]
    resumed.handled = bob.h_at[kept - 1]
    resumed.acking = lambda _client: True
    assert await resumed.resume(bob.sm_id, resumed.handled) == bob.sent
    await resumed.read(lambda: len(resumed.messages) >= BURST)
    async with asyncio.timeout(GUARD):
        await sending
    await resumed.sync()
    assert resumed.ids() == IDS
    # Delivered on the stream, nothing went to offline storage.
    assert await server.storage.archive.count("localhost", "bob", OFFLINE) == 0
    assert await archived_ids(server.storage, "bob", MAM) == IDS


async def test_raw_receiver_logs_in_again_and_gets_what_it_did_not_acknowledge(
    server: Server, closing: list[SmClient | SlixClient]
) -> None:
    """A new session on the same resource, without resuming, replaces the hibernating one; what
    that one did not acknowledge, and what came meanwhile, arrives from offline storage, then the
    rest of the burst live, in order."""
    alice = await sender(server, closing)
    bob = await receiver(server, closing)
    sending = asyncio.ensure_future(burst(alice, "bob@localhost"))
    await bob.read(lambda: len(bob.messages) >= CUT)
    bob.cut()
    assert bob.acked is not None
    acknowledged = sum(1 for h in bob.h_at if h <= bob.acked)
    again = await receiver(server, closing)
    await again.read(lambda: len(again.messages) >= BURST - acknowledged)
    async with asyncio.timeout(GUARD):
        await sending
    await again.sync()
    assert again.ids() == IDS[acknowledged:]
    assert await server.storage.archive.count("localhost", "bob", OFFLINE) == 0


@pytest.mark.parametrize("server", [1], indirect=True, ids=["hibernation-1s"])
async def test_raw_receiver_never_back_finds_everything_stored(
    server: Server, closing: list[SmClient | SlixClient]
) -> None:
    """The session is not resumed and ends: every message it did not acknowledge is in offline
    storage, once and in order, and every message is in the archive."""
    ended = session_ended(server, "bob@localhost/phone")
    _alice, bob = await cut_mid_burst(server, closing)
    assert bob.acked is not None
    acknowledged = sum(1 for h in bob.h_at if h <= bob.acked)
    assert 0 < acknowledged <= ACK_UNTIL
    async with asyncio.timeout(GUARD):
        await ended.wait()
    assert await archived_ids(server.storage, "bob", OFFLINE) == IDS[acknowledged:]
    assert await archived_ids(server.storage, "bob", MAM) == IDS
    later = await receiver(server, closing, "laptop")
    await later.read(lambda: len(later.messages) >= BURST - acknowledged)
    await later.sync()
    assert later.ids() == IDS[acknowledged:]
    assert all(el.find(qname(ns.DELAY, "delay")) is not None for el in later.messages)
    assert await server.storage.archive.count("localhost", "bob", OFFLINE) == 0


# --- the same with slixmpp as the receiver -------------------------------------------------------


class SlixReceiver:
    """slixmpp with XEP-0198 (resumable) as Bob: it records each message with its ``h`` then,
    and the ``h`` of every ack it sends while connected; its TCP connection is aborted after CUT
    messages."""

    def __init__(self, server: Server, closing: list[SmClient | SlixClient]) -> None:
        self.client = SlixClient(server, "bob@localhost/phone")
        closing.append(self.client)
        self.xmpp = self.client.xmpp
        self.xmpp.register_plugin("xep_0198")
        self.sm = self.xmpp.plugin["xep_0198"]
        self.ids: list[str] = []
        self.h_at: list[int] = []
        self.acked = 0
        self.arrived = asyncio.Event()
        self.resumed = asyncio.Event()
        self.xmpp.add_event_handler("message", self._message)
        self.xmpp.add_event_handler("session_resumed", lambda _: self.resumed.set())
        answer = self.sm.send_ack

        def send_ack() -> None:
            # An ack slixmpp answers after the abort (to a request read in the same piece of
            # input as the last message) goes nowhere: it does not count.
            transport = self.xmpp.transport
            if transport is not None and not transport.is_closing():
                self.acked = self.sm.handled
            answer()

        # Spies on the acks slixmpp sends, which it writes past its filters.
        self.sm.send_ack = send_ack  # type: ignore[method-assign]

    def _message(self, msg: Any) -> None:
        self.ids.append(msg["id"])
        self.h_at.append(self.sm.handled)
        if len(self.ids) == CUT:
            transport = self.xmpp.transport
            assert transport is not None
            transport.abort()
        self.arrived.set()

    async def wait_for(self, count: int) -> None:
        async with asyncio.timeout(GUARD):
            while len(self.ids) < count:
                self.arrived.clear()
                await self.arrived.wait()

    async def start(self) -> None:
        assert await self.client.start()
        self.xmpp.send_presence()
        await self.client.sync()


async def test_slixmpp_receiver_resumes_and_gets_every_message_once_in_order(
    server: Server, closing: list[SmClient | SlixClient]
) -> None:
    alice = await sender(server, closing)
    bob = SlixReceiver(server, closing)
    await bob.start()
    sending = asyncio.ensure_future(burst(alice, "bob@localhost"))
    async with asyncio.timeout(GUARD):
        await bob.client.disconnected.wait()
    assert len(bob.ids) == CUT
    host, port = server.bound["c2s"][0]
    bob.xmpp.connect(host, port)
    async with asyncio.timeout(GUARD):
        await bob.resumed.wait()
    await bob.wait_for(BURST)
    async with asyncio.timeout(GUARD):
        await sending
    await bob.client.sync()
    assert bob.ids == IDS
    assert await server.storage.archive.count("localhost", "bob", OFFLINE) == 0


@pytest.mark.parametrize("server", [1], indirect=True, ids=["hibernation-1s"])
async def test_slixmpp_receiver_never_back_finds_everything_stored(
    server: Server, closing: list[SmClient | SlixClient]
) -> None:
    ended = session_ended(server, "bob@localhost/phone")
    alice = await sender(server, closing)
    bob = SlixReceiver(server, closing)
    await bob.start()
    sending = asyncio.ensure_future(burst(alice, "bob@localhost"))
    async with asyncio.timeout(GUARD):
        await bob.client.disconnected.wait()
        await sending
        await ended.wait()
    acknowledged = sum(1 for h in bob.h_at if h <= bob.acked)
    assert 0 < acknowledged <= CUT
    assert await archived_ids(server.storage, "bob", OFFLINE) == IDS[acknowledged:]
    assert await archived_ids(server.storage, "bob", MAM) == IDS
    later = SlixClient(server, "bob@localhost/laptop")
    closing.append(later)
    assert await later.start()
    later.xmpp.send_presence()
    await later.sync()
    got = []
    while not later.messages.empty():
        got.append(later.messages.get_nowait()["id"])
    assert got == IDS[acknowledged:]


# --- the server is killed: a real ``schnack serve`` -----------------------------------------------


class ServeProcess(Process):
    """``schnack serve`` whose log is read all along, so that a chatty server never blocks on it."""

    def __init__(self, config: Path) -> None:
        super().__init__(config)
        self.log: list[str] = []

    def start(self) -> None:
        super().start()
        assert self.proc is not None and self.proc.stderr is not None
        threading.Thread(target=self._drain, args=(self.proc.stderr,), daemon=True).start()

    def _drain(self, stream: Any) -> None:
        for line in stream:
            self.log.append(line)

    def stop(self) -> None:
        """SIGTERM; a server that does not exit in time is killed, so that none outlives its test."""
        try:
            super().stop()
        except subprocess.TimeoutExpired:
            self.kill()
            raise


@pytest.fixture
def process(tmp_path: Path, storage_url: str) -> Iterator[ServeProcess]:
    served = ServeProcess(served_config(tmp_path, storage_url))
    try:
        yield served
    finally:
        served.stop()


async def test_killed_server_delivers_every_acknowledged_message(
    process: ServeProcess, storage_url: str, closing: list[SmClient | SlixClient]
) -> None:
    """SIGKILL once the server acknowledged CUT messages of the burst (at most 200 more are on
    their way): after the restart Bob gets, from offline storage, every message Alice saw
    acknowledged, once and in order, and his archive has each once; of the messages not
    acknowledged, those that made it come after them, in order too."""
    process.start()
    alice = await SmClient.login(process, "alice", "desk")
    closing.append(alice)
    await alice.enable()
    await burst(alice, "bob@localhost", kill_at=CUT, kill=process.kill)
    acknowledged = alice.server_h
    assert CUT <= acknowledged < BURST

    process.start()
    bob = await SmClient.login(process, "bob", "phone")
    closing.append(bob)
    await bob.enable()
    bob.send("<presence/>")
    await bob.sync()
    delivered = bob.ids()
    assert delivered == IDS[:len(delivered)] and len(delivered) >= acknowledged
    # Bob confirms what he got, so that none of it goes back to offline storage at the stop.
    bob.ack()
    await bob.sync()
    bob.close()
    process.stop()

    storage = await open_storage(storage_url)
    try:
        archived = await archived_ids(storage, "bob", MAM)
        assert archived == IDS[:len(archived)] and len(archived) >= acknowledged
        assert await storage.archive.count("localhost", "bob", OFFLINE) == 0
    finally:
        await storage.close()


def answered(client: SmClient, iq_id: str) -> bool:
    return any(el.get("id") == iq_id for el in client.others)


async def archive_after(client: SmClient, after: str | None) -> list[Element]:
    """XEP-0313 §4: the messages of the client's archive after the one with stanza-id ``after``,
    every page of them, through its stream."""
    found: list[Element] = []
    page = 0
    while True:
        page += 1
        rsm = f"<set xmlns='{RSM}'><max>100</max>{f'<after>{after}</after>' if after else ''}</set>"
        iq_id = f"mam{page}"
        client.send(f"<iq type='set' id='{iq_id}'><query xmlns='{MAM_NS}' queryid='q{page}'>{rsm}</query></iq>")
        await client.read(partial(answered, client, iq_id))
        (fin,) = [el for el in client.others if el.get("id") == iq_id]
        assert fin.get("type") == "result", fin
        for el in client.others:
            result = el.find(f"{{{MAM_NS}}}result")
            if result is not None and result.get("queryid") == f"q{page}":
                forwarded = result.find(f"{{{FORWARD}}}forwarded/{{{ns.CLIENT}}}message")
                assert forwarded is not None
                found.append(forwarded)
                after = result.get("id")
        client.others.clear()
        if fin.find(f"{{{MAM_NS}}}fin[@complete='true']") is not None:
            return found


async def test_killed_server_leaves_every_acknowledged_message_in_the_archive_of_an_online_receiver(
    process: ServeProcess, storage_url: str, closing: list[SmClient | SlixClient]
) -> None:
    """Bob is online during the burst, but his phone takes in only the first 100 messages (then
    its network stalls); the server dies, and with it his queue. After the restart he catches up
    from his archive, after the last stanza-id he got: together, every message Alice saw
    acknowledged, once and in order."""
    process.start()
    alice = await SmClient.login(process, "alice", "desk")
    closing.append(alice)
    await alice.enable()
    bob = await SmClient.login(process, "bob", "phone")
    closing.append(bob)
    await bob.enable()
    bob.send("<presence/>")
    await bob.sync()
    receiving = asyncio.ensure_future(bob.read(lambda: len(bob.messages) >= STALL))
    await burst(alice, "bob@localhost", kill_at=CUT, kill=process.kill)
    acknowledged = alice.server_h
    async with asyncio.timeout(GUARD):
        await receiving
    bob.close()
    got = bob.ids()
    assert len(got) == STALL
    assert got == IDS[:len(got)]
    last = bob.messages[-1].find(_STANZA_ID) if bob.messages else None
    assert last is None or last.get("by") == "bob@localhost"

    process.start()
    again = await SmClient.login(process, "bob", "phone")
    closing.append(again)
    caught_up = await archive_after(again, last.get("id") if last is not None else None)
    everything = got + [el.get("id", "") for el in caught_up]
    assert everything == IDS[:len(everything)] and len(everything) >= acknowledged
    again.close()
    process.stop()

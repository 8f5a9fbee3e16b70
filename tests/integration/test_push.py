"""XEP-0357 push through a XEP-0114 app server, on real sockets: slixmpp as the phone and as the app server.

The app server is a slixmpp ComponentXMPP connected to the component listener that records the
pubsub publishes it gets and answers them. The phone is a slixmpp client with stream management
(slixmpp has no XEP-0357 plugin, so it sends the §5 enable itself). It goes (a) offline, or
(b) vanishes without closing its stream so that its session hibernates; a message from alice
then brings exactly one notification, which carries no message text.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET
from xml.etree.ElementTree import Element

import pytest
from slixmpp import ComponentXMPP
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from schnack.server.app import Server
from schnack.server.c2s import C2SStream
from schnack.server.component import ACCEPT
from schnack.server.modules.sm import SmState
from schnack.server.sessions import Session
from schnack.xmpp import ns
from schnack.xmpp.jid import JID
from schnack.xmpp.parser import StanzaReceived, StreamClosed, StreamOpened, StreamParser
from schnack.xmpp.payloads.pubsub import PUBLISH_OPTIONS, PUBSUB
from schnack.xmpp.payloads.push import NS, Notification, notification_of
from schnack.xmpp.xml import qname, serialize

from ..harness import add_user, make_config
from .slix import PASSWORD, SlixClient

APP = "push.localhost"
SECRET = "app server secret"
NODE = "yxs32uqsflafdk3iuqo"
TOKEN = "eruio234vzxc2kla-91"
PHONE = "bob@localhost/phone"
TEXT = "meet me at the usual place at nine"
GUARD = 60


@contextlib.asynccontextmanager
async def serving(tmp_path: Path, **limits: Any) -> AsyncIterator[Server]:
    config = make_config(
        tmp_path,
        modules={"e2e": {"policy": "optional"}},
        components={APP: {"secret": SECRET}},
        listen={"component": ["127.0.0.1:0"]},
        limits=limits,
    )
    srv = Server(config)
    await srv.start()
    try:
        await add_user(srv, "alice", PASSWORD)
        await add_user(srv, "bob", PASSWORD)
        yield srv
    finally:
        await srv.stop()


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    async with serving(tmp_path) as srv:
        yield srv


@pytest.fixture
async def peers() -> AsyncIterator[list[Any]]:
    """slixmpp clients and components to disconnect when the test ends."""
    made: list[Any] = []
    yield made
    for peer in made:
        await peer.stop()


class AppServer:
    """A push app server as a slixmpp component: records each publish and answers it."""

    def __init__(self, server: Server) -> None:
        host, port = server.bound["component"][0]
        self.xmpp = ComponentXMPP(APP, SECRET, host, port)
        self.publishes: asyncio.Queue[Element] = asyncio.Queue()
        self.started = asyncio.Event()
        self.xmpp.add_event_handler("session_start", lambda _: self.started.set())
        self.xmpp.register_handler(
            Callback("push publish", MatchXPath(f"{{{ACCEPT}}}iq/{{{PUBSUB}}}pubsub"), self._publish)
        )

    def _publish(self, iq: Any) -> None:
        # A copy as text: slixmpp reuses the element for its reply.
        self.publishes.put_nowait(ET.fromstring(ET.tostring(iq.xml)))
        iq.reply(clear=True).send()

    async def start(self) -> None:
        self.xmpp.connect()
        async with asyncio.timeout(GUARD):
            await self.started.wait()

    async def next(self) -> tuple[Element, Notification]:
        async with asyncio.timeout(GUARD):
            iq = await self.publishes.get()
        pubsub = iq.find(f"{{{PUBSUB}}}pubsub")
        assert pubsub is not None
        request, note = notification_of(pubsub)
        assert request.node == NODE
        assert request.options is not None and request.options.value("secret") == TOKEN
        return iq, note

    async def stop(self) -> None:
        await self.xmpp.disconnect()


async def phone(server: Server, peers: list[Any]) -> SlixClient:
    """bob's phone: logged in with stream management, available, push enabled (§5)."""
    bob = SlixClient(server, PHONE)
    peers.append(bob)
    bob.xmpp.register_plugin("xep_0198")
    assert await bob.start()
    bob.xmpp.send_presence()
    iq = bob.xmpp.make_iq_set()
    iq.append(ET.fromstring(
        f"<enable xmlns='{NS}' jid='{APP}' node='{NODE}'><x xmlns='jabber:x:data' type='submit'>"
        f"<field var='FORM_TYPE'><value>{PUBLISH_OPTIONS}</value></field>"
        f"<field var='secret'><value>{TOKEN}</value></field></x></enable>"
    ))
    result = await iq.send(timeout=GUARD)
    assert result["type"] == "result"
    return bob


async def alice_says(server: Server, peers: list[Any], *texts: str) -> SlixClient:
    alice = SlixClient(server, "alice@localhost/desk")
    peers.append(alice)
    assert await alice.start()
    for i, text in enumerate(texts):
        alice.send("bob@localhost", text, f"m{i}")
    await alice.sync()
    return alice


def ended(server: Server) -> asyncio.Event:
    """Set once the phone's session ended and every module handled that."""
    done = asyncio.Event()

    async def closed(session: Session) -> None:
        if str(session.jid) == PHONE:
            done.set()

    server.hooks.add("session-closed", closed, priority=-1000)
    return done


def connection_lost(server: Server, jid: str = PHONE) -> asyncio.Event:
    """Set once the server noticed that the connection of ``jid`` died and its session hibernates."""
    done = asyncio.Event()

    async def lost(stream: C2SStream) -> None:
        if stream.session is not None and str(stream.session.jid) == jid:
            # Runs before stream management, which takes the session within this same chain;
            # the event is set only after the chain finished.
            asyncio.get_running_loop().call_soon(done.set)

    server.hooks.add("c2s/connection-lost", lost, priority=1000)
    return done


async def wait(event: asyncio.Event) -> None:
    async with asyncio.timeout(GUARD):
        await event.wait()


def check(iq: Element, note: Notification) -> None:
    assert iq.get("from") == "bob@localhost" and iq.get("to") == APP
    assert note == Notification(1, "alice@localhost")
    text = ET.tostring(iq, encoding="unicode")
    assert TEXT not in text and "body" not in text


async def phone_gone(server: Server, peers: list[Any]) -> AppServer:
    """bob's phone enabled push and logged out; the app server, running."""
    app = AppServer(server)
    peers.append(app)
    await app.start()
    await phone_left(server, peers)
    return app


async def phone_left(server: Server, peers: list[Any]) -> None:
    """bob's phone enabled push and logged out: its registration is held by no session."""
    bob = await phone(server, peers)
    gone = ended(server)
    await bob.stop()
    await wait(gone)


async def test_offline_phone_gets_one_notification(server: Server, peers: list[Any]) -> None:
    app = await phone_gone(server, peers)
    await alice_says(server, peers, TEXT, f"{TEXT} (again)")
    iq, note = await app.next()
    check(iq, note)
    assert await server.storage.archive.count("localhost", "bob", "offline") == 2
    # The second message came within the coalescing interval: no second notification.
    assert app.publishes.empty()
    # The registration stands: the app server answered with a result.
    assert len(await server.storage.maps.items("localhost", "bob", "push")) == 1


async def test_vanished_phone_gets_one_notification_and_resumes(server: Server, peers: list[Any]) -> None:
    app = AppServer(server)
    peers.append(app)
    await app.start()
    bob = await phone(server, peers)
    resumed = asyncio.Event()
    bob.xmpp.add_event_handler("session_resumed", lambda _: resumed.set())
    session = server.sessions.get(JID.parse(PHONE))
    assert session is not None
    lost = connection_lost(server)
    # What a phone losing its network looks like: no </stream:stream>, no TLS close_notify.
    transport = bob.xmpp.transport
    assert transport is not None
    transport.abort()
    await wait(lost)
    assert session.slot(SmState).stream is None
    await alice_says(server, peers, TEXT, f"{TEXT} (again)")
    iq, note = await app.next()
    check(iq, note)
    assert app.publishes.empty()
    # The phone wakes up and resumes: both messages arrive, none went to offline storage.
    host, port = server.bound["c2s"][0]
    bob.xmpp.connect(host, port)
    async with asyncio.timeout(GUARD):
        await resumed.wait()
        first = await bob.next_message()
        second = await bob.next_message()
    assert (first["body"], second["body"]) == (TEXT, f"{TEXT} (again)")
    assert await server.storage.archive.count("localhost", "bob", "offline") == 0


async def test_a_device_back_under_a_new_resource_is_woken_for_its_hibernating_session(
    server: Server, peers: list[Any]
) -> None:
    """§7: the phone enabled push once, and came back under another resource (one the server
    chose, say) without enabling it again. Its new session hibernates: the message queued there
    must wake the phone through the registration it has, which no session of the account holds."""
    app = await phone_gone(server, peers)
    again = SlixClient(server, "bob@localhost/phone-2")
    peers.append(again)
    again.xmpp.register_plugin("xep_0198")
    assert await again.start()
    again.xmpp.send_presence()
    await again.sync()
    session = server.sessions.get(JID.parse("bob@localhost/phone-2"))
    assert session is not None
    lost = connection_lost(server, "bob@localhost/phone-2")
    transport = again.xmpp.transport
    assert transport is not None
    transport.abort()
    await wait(lost)
    assert session.slot(SmState).stream is None
    await alice_says(server, peers, TEXT)
    iq, note = await app.next()
    check(iq, note)
    assert await server.storage.archive.count("localhost", "bob", "offline") == 0


class RawComponent:
    """A component connection written by hand, to provoke the handshake's stream errors."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.parser = StreamParser(10**6)
        self.header: dict[str, str] = {}
        self.elements: list[Element] = []
        self.closed = False

    @classmethod
    async def connect(cls, server: Server, to: str) -> RawComponent:
        host, port = server.bound["component"][0]
        raw = cls(*await asyncio.open_connection(host, port))
        raw.writer.write(
            f"<stream:stream xmlns='{ACCEPT}' xmlns:stream='{ns.STREAMS}' to='{to}'>".encode()
        )
        return raw

    async def read(self) -> None:
        async with asyncio.timeout(GUARD):
            data = await self.reader.read(65536)
        if not data:
            self.closed = True
            return
        for event in self.parser.feed(data) + self.parser.flush():
            if isinstance(event, StreamOpened):
                self.header = event.attrs
            elif isinstance(event, StanzaReceived):
                self.elements.append(event.element)
            elif isinstance(event, StreamClosed):
                self.closed = True

    async def handshake(self, secret: str) -> None:
        while "id" not in self.header and not self.closed:
            await self.read()
        digest = hashlib.sha1((self.header.get("id", "") + secret).encode()).hexdigest()
        self.writer.write(f"<handshake>{digest}</handshake>".encode())

    async def stream_error(self) -> str:
        while not self.closed:
            await self.read()
        errors = [el for el in self.elements if el.tag == qname(ns.STREAMS, "error")]
        assert errors, [serialize(el) for el in self.elements]
        return next(c.tag.rpartition("}")[2] for c in errors[0] if c.tag != qname(ns.STREAM_ERRORS, "text"))

    def close(self) -> None:
        self.writer.close()


async def test_wrong_secret_is_not_authorized(server: Server) -> None:
    raw = await RawComponent.connect(server, APP)
    await raw.handshake("not the secret")
    assert await raw.stream_error() == "not-authorized"
    raw.close()


async def test_unconfigured_domain_is_host_unknown(server: Server) -> None:
    raw = await RawComponent.connect(server, "elsewhere.localhost")
    assert await raw.stream_error() == "host-unknown"
    raw.close()


async def test_second_component_is_a_conflict(server: Server, peers: list[Any]) -> None:
    app = AppServer(server)
    peers.append(app)
    await app.start()
    raw = await RawComponent.connect(server, APP)
    await raw.handshake(SECRET)
    assert await raw.stream_error() == "conflict"
    raw.close()
    # The first one still serves the domain.
    bob = await phone(server, peers)
    gone = ended(server)
    await bob.stop()
    await wait(gone)
    await alice_says(server, peers, TEXT)
    check(*await app.next())


async def test_slixmpp_component_with_a_wrong_secret_is_refused(server: Server, peers: list[Any]) -> None:
    host, port = server.bound["component"][0]
    xmpp = ComponentXMPP(APP, "wrong", host, port)
    errors: list[str] = []
    gone = asyncio.Event()
    xmpp.add_event_handler("stream_error", lambda e: errors.append(e["condition"]))
    xmpp.add_event_handler("disconnected", lambda _: gone.set())
    xmpp.connect()
    async with asyncio.timeout(GUARD):
        await gone.wait()
    assert errors == ["not-authorized"]
    assert APP not in server.components.connected


async def test_bad_xml_from_a_component_ends_only_its_stream(server: Server, peers: list[Any]) -> None:
    raw = await RawComponent.connect(server, APP)
    await raw.handshake(SECRET)
    while not raw.elements:
        await raw.read()
    assert raw.elements[0].tag == qname(ACCEPT, "handshake")
    raw.writer.write(f"<message from='{APP}' to='bob@localhost'><body>x</message>".encode())
    assert await raw.stream_error() == "not-well-formed"
    raw.close()
    # The domain is free again and the server serves on.
    app = AppServer(server)
    peers.append(app)
    await app.start()
    assert APP in server.components.connected


async def test_component_without_handshake_times_out(tmp_path: Path) -> None:
    async with serving(tmp_path, auth_timeout=1) as server:
        raw = await RawComponent.connect(server, APP)
        assert await raw.stream_error() == "connection-timeout"
        raw.close()


async def test_silent_component_gets_keepalives_then_times_out(tmp_path: Path) -> None:
    """A component whose host vanished must not hold its domain for ever."""
    async with serving(tmp_path, keepalive_interval=5, idle_timeout=10) as server:
        raw = await RawComponent.connect(server, APP)
        await raw.handshake(SECRET)
        received = b""
        async with asyncio.timeout(GUARD):
            while b"<handshake" not in received:
                received += await raw.reader.read(65536)
            # The keepalive comes before the stream error.
            while b"error" not in received:
                chunk = await raw.reader.read(65536)
                assert chunk, received
                received += chunk
        tail = received.split(b"<handshake", 1)[1].split(b">", 1)[1]
        assert tail.startswith(b" "), tail
        assert b"connection-timeout" in tail
        assert APP not in server.components.connected
        raw.close()

"""The server under bad connections: two good clients keep chatting while a flood of others misbehave.

Each bad connection gets the stream error RFC 6120 §4.9.3 gives for what it did (where the stream
got far enough for one), its connection is closed, and no good message is lost or reordered.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from schnack.server.app import Server
from schnack.server.sessions import Session
from schnack.xmpp import ns
from schnack.xmpp.jid import JID
from schnack.xmpp.sasl import SaslClient, encode_b64
from schnack.xmpp.xml import qname

from ..harness import add_user, running
from .slix import PASSWORD, SlixClient
from .wire import HEADER, Wire, insecure_context
from .ws import WsClient, connect

pytestmark = pytest.mark.asyncio

ALICE = "alice@localhost/phone"
BOB = "bob@localhost/desk"
MESSAGES = 200
BURST = 20
# Each kind of bad connection is made this many times, all at once.
COPIES = 6
# Connections that never finish logging in are cut after this (the watchdog looks every 5 s).
AUTH_TIMEOUT = 3
# A guard against deadlocks only: nothing here is expected to take nearly this long.
GUARD = 120


@pytest.fixture
async def chat_server(tmp_path: Path) -> AsyncIterator[Server]:
    """A listening server where users may send each other plaintext, so a test can read the bodies."""
    async with running(tmp_path, listen=True, modules={"e2e": {"policy": "optional"}},
                       limits={"auth_timeout": AUTH_TIMEOUT}) as server:
        await add_user(server, "alice", PASSWORD)
        await add_user(server, "bob", PASSWORD)
        await add_user(server, "carol", PASSWORD)
        yield server


@pytest.fixture
async def pair(chat_server: Server) -> AsyncIterator[tuple[SlixClient, SlixClient]]:
    """Alice and Bob, logged in with slixmpp before any trouble starts."""
    alice = SlixClient(chat_server, ALICE)
    bob = SlixClient(chat_server, BOB, listener="c2s_tls")
    try:
        assert await alice.start()
        assert await bob.start()
        yield alice, bob
    finally:
        await alice.stop()
        await bob.stop()


# Bad connections: each asserts how the server ended it -------------------------------------------


def client_hello() -> bytes:
    """The first flight of a real TLS handshake, to send where XML is expected."""
    out = ssl.MemoryBIO()
    tls = insecure_context().wrap_bio(ssl.MemoryBIO(), out, server_hostname="localhost")
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    return out.read()


async def error_after(server: Server, data: bytes, *, header: bool = True, listener: str = "c2s") -> str:
    """Send ``data`` (after a stream header if asked); return the stream error that closed the stream."""
    wire = await Wire.connect(server, listener)
    try:
        if header:
            await wire.open()
        wire.send(data)
        return await stream_error(wire)
    finally:
        wire.close()


async def stream_error(wire: Wire) -> str:
    """Read up to the stream error; assert the server then closes the stream and the connection."""
    async with asyncio.timeout(GUARD):
        while True:
            el = await wire.next(GUARD)
            assert el is not None, "the stream closed without a stream error"
            if el.tag == qname(ns.STREAMS, "error"):
                break
        assert await wire.next(GUARD) is None
        assert await wire.reader.read() == b""
    return next(c.tag.rpartition("}")[2] for c in el if c.tag != qname(ns.STREAM_ERRORS, "text"))


async def until_closed(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes the connection."""
    received = b""
    async with asyncio.timeout(GUARD):
        with contextlib.suppress(ConnectionResetError, ssl.SSLError):
            while chunk := await reader.read(65536):
                received += chunk
    return received


async def raw(server: Server, listener: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = server.bound[listener][0]
    return await asyncio.open_connection(host, port)


async def not_well_formed(server: Server) -> None:
    assert await error_after(server, b"<message><body>unclosed</message>") == "not-well-formed"


async def binary_garbage(server: Server) -> None:
    assert await error_after(server, bytes(range(256)), header=False) == "not-well-formed"


async def tls_to_the_starttls_port(server: Server) -> None:
    """What a client sends when it wrongly expects direct TLS on port 5222."""
    assert await error_after(server, client_hello(), header=False) == "not-well-formed"


async def dtd(server: Server) -> None:
    laughs = b"<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol 'lol'><!ENTITY lol2 '&lol;&lol;&lol;'>]>"
    assert await error_after(server, laughs, header=False) == "restricted-xml"


async def comment(server: Server) -> None:
    assert await error_after(server, b"<!-- hidden -->") == "restricted-xml"


async def huge_stanza(server: Server) -> None:
    """Over the limit before login (10,000 bytes), sent in pieces as a slow sender would."""
    wire = await Wire.connect(server)
    try:
        await wire.open()
        wire.send(b"<message to='bob@localhost/desk'><body>")
        for _ in range(40):
            wire.send(b"X" * 1000)
            await wire.writer.drain()
        assert await stream_error(wire) == "policy-violation"
    finally:
        wire.close()


async def deep_nesting(server: Server) -> None:
    assert await error_after(server, b"<message>" + b"<a>" * 100) == "policy-violation"


async def text_between_stanzas(server: Server) -> None:
    assert await error_after(server, b"hello?") == "bad-format"


async def stanza_before_login(server: Server) -> None:
    data = b"<message to='bob@localhost/desk' type='chat'><body>spam</body></message>"
    assert await error_after(server, data) == "not-authorized"


async def silent(server: Server) -> None:
    """Connects and never speaks: cut by the authentication timeout, with a header first (§4.9.1.2)."""
    wire = await Wire.connect(server)
    try:
        assert await stream_error(wire) == "connection-timeout"
        assert wire.opened
    finally:
        wire.close()


async def silent_after_header(server: Server) -> None:
    wire = await Wire.connect(server)
    try:
        await wire.open()
        wire.send(b"<message to='bob@localhost/desk'><bo")
        assert await stream_error(wire) == "connection-timeout"
    finally:
        wire.close()


async def open_and_close(server: Server) -> None:
    _, writer = await raw(server, "c2s")
    writer.close()


async def open_and_reset(server: Server) -> None:
    _, writer = await raw(server, "c2s_tls")
    writer.transport.abort()


async def half_closed(server: Server) -> None:
    """Sends a header and its end of the connection: the server answers and closes its own."""
    reader, writer = await raw(server, "c2s")
    writer.write(HEADER.format(to="localhost").encode())
    writer.write_eof()
    received = await until_closed(reader)
    assert b"<stream:stream" in received
    writer.close()


async def quit_during_sasl(server: Server) -> None:
    wire = await Wire.connect(server, "c2s_tls")
    features = await wire.open()
    offered = [m.text or "" for m in features.iter(qname(ns.SASL, "mechanism"))]
    client = SaslClient("carol", PASSWORD, offered)
    wire.send(f"<auth xmlns='{ns.SASL}' mechanism='{client.mechanism}'>{encode_b64(client.initial())}</auth>")
    challenge = await wire.next()
    assert challenge is not None and challenge.tag == qname(ns.SASL, "challenge")
    wire.writer.transport.abort()


async def garbage_to_the_tls_port(server: Server) -> None:
    reader, writer = await raw(server, "c2s_tls")
    writer.write(b"\x16\x03\x01\x00\x05garbage that is no TLS record" * 4)
    assert b"<stream" not in await until_closed(reader)
    writer.close()


async def xml_to_the_tls_port(server: Server) -> None:
    reader, writer = await raw(server, "c2s_tls")
    writer.write(HEADER.format(to="localhost").encode())
    assert b"<stream" not in await until_closed(reader)
    writer.close()


async def silent_on_the_tls_port(server: Server) -> None:
    """Never starts the handshake: the listener's handshake timeout closes it."""
    reader, writer = await raw(server, "c2s_tls")
    assert await until_closed(reader) == b""
    writer.close()


async def garbage_after_starttls(server: Server) -> None:
    reader, writer = await raw(server, "c2s")
    wire = Wire(reader, writer)
    await wire.open()
    wire.send(f"<starttls xmlns='{ns.TLS}'/>")
    proceed = await wire.next()
    assert proceed is not None and proceed.tag == qname(ns.TLS, "proceed")
    writer.write(b"this is not a TLS ClientHello" * 10)
    assert b"<" not in await until_closed(reader)
    writer.close()


async def not_well_formed_inside_tls(server: Server) -> None:
    assert await error_after(server, b"<presence><x></presence>", listener="c2s_tls") == "not-well-formed"


async def websocket_bad_frame(server: Server) -> None:
    async with aiohttp.ClientSession() as http:
        client = await connect(server, http)
        await client.open()
        await client.send("<presence xmlns='jabber:client'/><presence xmlns='jabber:client'/>")
        assert await client.stream_error() == "not-well-formed"


async def websocket_binary(server: Server) -> None:
    async with aiohttp.ClientSession() as http:
        client: WsClient = await connect(server, http)
        await client.open()
        await client.ws.send_bytes(b"\x00\x01\x02")
        assert await client.stream_error() == "bad-format"


BAD: list[Callable[[Server], Awaitable[None]]] = [
    not_well_formed, binary_garbage, tls_to_the_starttls_port, dtd, comment, huge_stanza, deep_nesting,
    text_between_stanzas, stanza_before_login, silent, silent_after_header, open_and_close,
    open_and_reset, half_closed, quit_during_sasl, garbage_to_the_tls_port, xml_to_the_tls_port,
    silent_on_the_tls_port, garbage_after_starttls, not_well_formed_inside_tls, websocket_bad_frame,
    websocket_binary,
]  # fmt: skip


# Good clients -----------------------------------------------------------------------------------


async def chat(sender: SlixClient, to: str, tag: str) -> None:
    """Send MESSAGES messages in bursts; each ping answered means a burst was routed."""
    for i in range(MESSAGES):
        sender.send(to, f"{tag} says {i}", f"{tag}-{i}")
        if i % BURST == BURST - 1:
            await sender.sync()


async def received(client: SlixClient, count: int) -> list[Any]:
    return [await client.next_message(GUARD) for _ in range(count)]


async def settled(server: Server, connections: int) -> None:
    """Wait until the server holds only ``connections`` connections (the good ones).

    A client that resets its connection learns nothing of the server's side, and the server
    announces no event for it, so this looks until the count drops.
    """
    async with asyncio.timeout(GUARD):
        while len(server.connections) > connections:  # noqa: ASYNC110
            await asyncio.sleep(0.05)


async def test_flood_of_bad_connections_while_two_clients_chat(
    chat_server: Server, pair: tuple[SlixClient, SlixClient]
) -> None:
    alice, bob = pair
    flood = [kind(chat_server) for kind in BAD for _ in range(COPIES)]
    assert len(flood) >= 100
    async with asyncio.timeout(GUARD):
        outcomes = await asyncio.gather(
            chat(alice, BOB, "alice"), chat(bob, ALICE, "bob"), *flood, return_exceptions=True
        )
    failures = [(i, repr(o)) for i, o in enumerate(outcomes) if isinstance(o, BaseException)]
    assert failures == []

    to_bob, to_alice = await received(bob, MESSAGES), await received(alice, MESSAGES)
    assert [m["id"] for m in to_bob] == [f"alice-{i}" for i in range(MESSAGES)]
    assert [m["body"] for m in to_bob] == [f"alice says {i}" for i in range(MESSAGES)]
    assert {str(m["from"]) for m in to_bob} == {ALICE}
    assert [m["id"] for m in to_alice] == [f"bob-{i}" for i in range(MESSAGES)]
    assert {str(m["from"]) for m in to_alice} == {BOB}
    assert alice.stream_errors == bob.stream_errors == []

    # Nothing of the flood is left behind, and the server still lets people in.
    await settled(chat_server, 2)
    late = SlixClient(chat_server, "carol@localhost/late")
    try:
        assert await late.start()
        late.send(ALICE, "still there?", "late-1")
        assert (await alice.next_message(GUARD))["id"] == "late-1"
    finally:
        await late.stop()


@pytest.mark.parametrize("how", ["reset", "close"])
async def test_client_vanishing_mid_stanza(chat_server: Server, pair: tuple[SlixClient, SlixClient],
                                           how: str) -> None:
    """The half-sent stanza is dropped with its session; everyone else is served as before."""
    alice, bob = pair
    carol = JID.parse("carol@localhost/laptop")
    gone = asyncio.Event()

    async def on_closed(session: Session) -> None:
        if session.jid == carol:
            gone.set()

    chat_server.hooks.add("session-closed", on_closed)
    wire = await Wire.connect(chat_server, "c2s_tls")
    await wire.login("carol", PASSWORD, await wire.open())
    assert await wire.bind("laptop") == "carol@localhost/laptop"
    wire.send("<message to='bob@localhost/desk' type='chat' id='half'><body>I was about to say")
    await wire.writer.drain()
    if how == "reset":
        wire.writer.transport.abort()
    else:
        wire.writer.close()
    async with asyncio.timeout(GUARD):
        await gone.wait()
    assert chat_server.sessions.get(carol) is None

    alice.send(BOB, "after the crash", "after-1")
    first = await bob.next_message(GUARD)
    assert first["id"] == "after-1"

    # Carol comes back on the same resource and is heard.
    again = await Wire.connect(chat_server)
    try:
        await again.open()
        await again.login("carol", PASSWORD, await again.starttls())
        assert await again.bind("laptop") == "carol@localhost/laptop"
        again.send("<message to='bob@localhost/desk' type='chat' id='whole'><body>as I was saying</body></message>")
        second = await bob.next_message(GUARD)
        assert second["id"] == "whole" and second["from"] == "carol@localhost/laptop"
    finally:
        again.close()
    await settled(chat_server, 2)
    assert bob.messages.empty()

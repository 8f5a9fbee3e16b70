"""XMPP over WebSocket (RFC 7395) on the real HTTP listener, with a raw aiohttp client.

The WebSocket client logs in (open, SASL SCRAM-SHA-256, re-open, bind), chats with a slixmpp
client on TCP and closes; bad frames get the right stream error before the close.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from schnack.server import app
from schnack.server.app import Server
from schnack.server.sessions import Session
from schnack.server.websocket import WebSocketConnection
from schnack.xmpp import ns
from schnack.xmpp.jid import JID
from schnack.xmpp.payloads.sm import NS as SM
from schnack.xmpp.xml import qname

from ..harness import add_user, running, turns
from .channel import binding_data, client_context
from .slix import PASSWORD, SlixClient
from .ws import CLOSE, CLOSED, OPENED, WsClient, connect, url

pytestmark = pytest.mark.asyncio

TLS12 = ssl.TLSVersion.TLSv1_2
TLS13 = ssl.TLSVersion.TLSv1_3


@pytest.fixture
async def chat_server(tmp_path: Path) -> AsyncIterator[Server]:
    """A listening server where users may send each other plaintext, so a test can read the bodies."""
    async with running(tmp_path, listen=True, modules={"e2e": {"policy": "optional"}}) as server:
        yield server


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_login_chat_and_close(chat_server: Server, http: aiohttp.ClientSession) -> None:
    await add_user(chat_server, "alice", PASSWORD)
    await add_user(chat_server, "bob", PASSWORD)
    bob = SlixClient(chat_server, "bob@localhost/desk")
    try:
        assert await bob.start()
        alice = await connect(chat_server, http)
        features = await alice.login("alice", PASSWORD)
        assert features.find(qname(ns.BIND, "bind")) is not None
        jid = await alice.bind("browser")
        assert jid == "alice@localhost/browser"

        await alice.send(
            f"<message xmlns='{ns.CLIENT}' to='bob@localhost/desk' type='chat' id='w1'><body>from the web</body></message>"
        )
        got = await bob.next_message()
        assert got["id"] == "w1" and got["body"] == "from the web"
        assert got["from"] == "alice@localhost/browser"

        bob.send(jid, "from the desk", "t1")
        reply = await alice.next()
        assert reply is not None and reply.tag == qname(ns.CLIENT, "message")
        assert reply.get("id") == "t1" and reply.get("from") == "bob@localhost/desk" and reply.get("to") == jid
        assert reply.findtext(qname(ns.CLIENT, "body")) == "from the desk"

        # RFC 7395 §3.6.1: the server answers <close/> with <close/> and ends the WebSocket.
        await alice.send(CLOSE)
        closing = await alice.next()
        assert closing is not None and closing.tag == CLOSED
        assert await alice.next() is None
        assert chat_server.sessions.get(JID.parse(jid)) is None
    finally:
        await bob.stop()


async def test_replaced_session_is_told_why(live_server: Server, http: aiohttp.ClientSession) -> None:
    """RFC 6120 §7.7.2.2: binding the same resource again closes the older stream with <conflict/>."""
    await add_user(live_server, "alice", PASSWORD)
    old = await connect(live_server, http)
    await old.login("alice", PASSWORD)
    assert await old.bind("tab") == "alice@localhost/tab"
    new = await connect(live_server, http)
    await new.login("alice", PASSWORD)
    assert await new.bind("tab") == "alice@localhost/tab"
    assert await old.stream_error() == "conflict"
    assert len(live_server.sessions.resources(JID.parse("alice@localhost"))) == 1
    # The new session is the one that stays.
    await new.send(f"<iq xmlns='{ns.CLIENT}' type='get' id='p1'><ping xmlns='{ns.PING}'/></iq>")
    pong = await new.next()
    assert pong is not None and pong.get("id") == "p1" and pong.get("type") == "result"


@pytest.mark.parametrize(
    ("version", "kind"),
    [(TLS13, "tls-exporter"), (TLS13, "tls-server-end-point"), (TLS12, "tls-unique"), (TLS12, "tls-server-end-point")],
    ids=["tls1.3-exporter", "tls1.3-end-point", "tls1.2-unique", "tls1.2-end-point"],
)
async def test_plus_login_over_https(live_server: Server, http: aiohttp.ClientSession, version: ssl.TLSVersion,
                                     kind: str) -> None:
    """SCRAM-SHA-256-PLUS bound to the TLS of the HTTPS listener (RFC 9266, RFC 5929)."""
    await add_user(live_server, "alice", PASSWORD)
    host, port = live_server.bound["https"][0]
    ws = await http.ws_connect(f"wss://{host}:{port}/xmpp-websocket", protocols=("xmpp",), ssl=client_context(version))
    client = WsClient(ws)
    data = binding_data(ws.get_extra_info("ssl_object"), kind, live_server)
    features = await client.login("alice", PASSWORD, "SCRAM-SHA-256-PLUS", (kind, data))
    assert features.find(qname(ns.BIND, "bind")) is not None
    assert await client.bind("secure") == "alice@localhost/secure"
    await ws.close()


@pytest.mark.parametrize(
    ("frame", "condition"),
    [
        ("<message xmlns='jabber:client'><body>x</message>", "not-well-formed"),
        ("<presence xmlns='jabber:client'/><presence xmlns='jabber:client'/>", "not-well-formed"),
        ("<presence xmlns='jabber:client'/>trailing", "not-well-formed"),
        ("<message xmlns='jabber:client'><body>\x00</body></message>", "not-well-formed"),
        ("<!-- c --><presence xmlns='jabber:client'/>", "restricted-xml"),
        ("<!DOCTYPE p [<!ENTITY x 'y'>]><presence xmlns='jabber:client'/>", "restricted-xml"),
        ("<presence xmlns='jabber:client'><a:b/></presence>", "bad-namespace-prefix"),
        (f"<message xmlns='jabber:client' to='bob@localhost'><body>{'A' * 20_000}</body></message>", "policy-violation"),
        ("<message xmlns='jabber:client' to='bob@localhost'><body>early</body></message>", "not-authorized"),
    ],
    ids=["unclosed", "two-elements", "trailing-text", "nul", "comment", "dtd", "unbound-prefix", "too-large",
         "before-login"],
)
async def test_bad_frame_after_open(live_server: Server, http: aiohttp.ClientSession, frame: str,
                                    condition: str) -> None:
    client = await connect(live_server, http)
    await client.open()
    await client.send(frame)
    assert await client.stream_error() == condition


async def test_bad_frame_before_open_gets_a_header_first(live_server: Server, http: aiohttp.ClientSession) -> None:
    """RFC 6120 §4.9.1.2 over RFC 7395: the server opens its stream before the error."""
    client = await connect(live_server, http)
    await client.send("<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='localhost'")
    opened = await client.next()
    assert opened is not None and opened.tag == OPENED
    assert await client.stream_error() == "not-well-formed"


async def test_stanza_before_open(live_server: Server, http: aiohttp.ClientSession) -> None:
    client = await connect(live_server, http)
    await client.send("<presence xmlns='jabber:client'/>")
    opened = await client.next()
    assert opened is not None and opened.tag == OPENED
    assert await client.stream_error() == "not-authorized"


async def test_binary_frame(live_server: Server, http: aiohttp.ClientSession) -> None:
    """RFC 7395 §3.2: XMPP travels in text messages only."""
    client = await connect(live_server, http)
    await client.open()
    await client.ws.send_bytes(b"<presence xmlns='jabber:client'/>")
    assert await client.stream_error() == "bad-format"


async def test_after_a_stream_error_the_server_waits_for_the_clients_close(
    live_server: Server, http: aiohttp.ClientSession
) -> None:
    """RFC 7395 §3.6: after its <close/> the server keeps the WebSocket open until the client
    answers with <close/> (it still reads: a ping is answered), then closes it normally."""
    ws = await http.ws_connect(url(live_server), protocols=("xmpp",), autoping=False)
    client = WsClient(ws)
    await client.open()
    await client.send("<message xmlns='jabber:client' to='bob@localhost'><body>early</body></message>")
    error = await client.next()
    assert error is not None and error.tag == qname(ns.STREAMS, "error")
    closing = await client.next()
    assert closing is not None and closing.tag == CLOSED
    await ws.ping(b"still there?")
    pong = await ws.receive(timeout=30)
    assert (pong.type, pong.data) == (aiohttp.WSMsgType.PONG, b"still there?")
    await client.send(CLOSE)
    closed = await ws.receive(timeout=30)
    assert closed.type == aiohttp.WSMsgType.CLOSE and closed.data == aiohttp.WSCloseCode.OK
    await ws.close()


async def test_a_client_that_never_closes_is_closed_after_a_while(
    live_server: Server, http: aiohttp.ClientSession
) -> None:
    """The wait for the client's <close/> is bounded; what it ignores it still receives first."""
    client = await connect(live_server, http)
    await client.open()
    await client.send("<presence xmlns='jabber:client'/>")
    error = await client.next()
    assert error is not None and error.tag == qname(ns.STREAMS, "error")
    closing = await client.next()
    assert closing is not None and closing.tag == CLOSED
    assert await client.next() is None
    assert client.ws.close_code == aiohttp.WSCloseCode.OK


async def test_shutdown_ends_a_websocket_session_while_storage_is_open(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """A client that does not answer the server's <close/> at shutdown: its session has ended
    before storage closes, and no connection is left."""
    ended: list[str] = []
    async with running(tmp_path, listen=True) as server:
        await add_user(server, "alice", PASSWORD)

        async def closed(session: Session) -> None:
            # Storage must still be open here: the account can be read.
            assert await server.storage.accounts.get(session.host, session.username) is not None
            ended.append(str(session.jid))

        server.hooks.add("session-closed", closed)
        client = await connect(server, http)
        await client.login("alice", PASSWORD)
        jid = await client.bind("browser")
    assert ended == [jid]
    assert not server.connections


async def test_frame_beyond_the_websocket_limit(live_server: Server, http: aiohttp.ClientSession) -> None:
    """Past the largest stanza the WebSocket layer itself refuses the message (RFC 6455 §7.4.1, 1009)."""
    client = await connect(live_server, http)
    await client.open()
    await client.send("<presence xmlns='jabber:client'>" + " " * live_server.config.limits.max_stanza_size + "</presence>")
    assert await client.next() is None
    assert client.ws.close_code == aiohttp.WSCloseCode.MESSAGE_TOO_BIG


async def test_a_frame_beyond_the_limit_ends_the_session(live_server: Server, http: aiohttp.ClientSession) -> None:
    """RFC 6120 §13.12 as on TCP (policy-violation): the stream is ended, not merely lost, so a
    resumable session does not wait for the client to resume and send the same frame again."""
    await add_user(live_server, "alice", PASSWORD)
    client = await connect(live_server, http)
    await client.login("alice", PASSWORD)
    jid = JID.parse(await client.bind("tab"))
    await client.send(f"<enable xmlns='{SM}' resume='true'/>")
    enabled = await client.next()
    assert enabled is not None and enabled.tag == qname(SM, "enabled")
    await client.send(f"<message xmlns='{ns.CLIENT}' to='bob@localhost'><body>"
                      + "x" * live_server.config.limits.max_stanza_size + "</body></message>")
    assert await client.next() is None
    assert client.ws.close_code == aiohttp.WSCloseCode.MESSAGE_TOO_BIG
    await turns()
    assert live_server.sessions.get(jid) is None


async def _online_without_autoping(
    server: Server, http: aiohttp.ClientSession
) -> tuple[aiohttp.ClientWebSocketResponse, WebSocketConnection]:
    """A bound client that sees pings and pongs itself, and the server's side of its connection."""
    await add_user(server, "alice", PASSWORD)
    ws = await http.ws_connect(url(server), protocols=("xmpp",), autoping=False)
    client = WsClient(ws)
    await client.login("alice", PASSWORD)
    await client.bind("tab")
    [conn] = [c for c in server.connections if isinstance(c, WebSocketConnection)]
    return ws, conn


async def test_pings_from_the_client_count_as_traffic(live_server: Server, http: aiohttp.ClientSession) -> None:
    """RFC 7395 §3.3.1 leaves keepalives to WebSocket pings (no whitespace between frames): a client
    that keeps its connection alive with them is not silent (RFC 6120 §4.6)."""
    ws, conn = await _online_without_autoping(live_server, http)
    before = conn.last_read
    await asyncio.sleep(0.05)
    await ws.ping(b"alive")
    pong = await ws.receive(timeout=30)
    assert (pong.type, pong.data) == (aiohttp.WSMsgType.PONG, b"alive")
    assert conn.last_read > before


async def test_an_idle_client_is_pinged_and_its_pong_counts(
    tmp_path: Path, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The WebSocket form of the whitespace keepalive (RFC 6120 §4.6.1): a ping, which a browser
    answers by itself, keeps proxies from dropping an idle connection and shows that it still works."""
    monkeypatch.setattr(app, "_WATCHDOG_PERIOD", 0.01)
    async with running(tmp_path, listen=True) as server:
        ws, conn = await _online_without_autoping(server, http)
        limits = server.config.limits
        conn.last_write = time.monotonic() - limits.keepalive_interval - 1
        ping = await ws.receive(timeout=30)
        assert ping.type == aiohttp.WSMsgType.PING
        # Silent until a second before the idle timeout: only the pong keeps the stream open.
        conn.last_read = time.monotonic() - limits.idle_timeout + 1
        await ws.pong(ping.data)
        await asyncio.sleep(2)
        assert conn.stream is not None and not conn.stream.closed
        await ws.close()


async def test_a_client_gone_before_its_ping_is_answered_ends_the_session_quietly(
    live_server: Server, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    """A client that pings and drops its connection before the pong can go (a tab closed, a
    network lost): the connection ends as a lost one, its session with it, and nothing is
    logged as a server failure."""
    await add_user(live_server, "alice", PASSWORD)
    ws = await http.ws_connect(url(live_server), protocols=("xmpp",), autoping=False)
    await WsClient(ws).login("alice", PASSWORD)
    [conn] = [c for c in live_server.connections if isinstance(c, WebSocketConnection)]
    transport = conn._request.transport
    assert transport is not None
    ended = asyncio.Event()

    async def busy(session: Session) -> None:
        # The server is still binding when the client's ping and the end of its connection
        # arrive; it reads the ping once its side of the connection is closing.
        while not transport.is_closing():  # noqa: ASYNC110
            await asyncio.sleep(0)

    async def closed(session: Session) -> None:
        ended.set()

    live_server.hooks.add("session-bound", busy, priority=-100)
    live_server.hooks.add("session-closed", closed)
    with caplog.at_level(logging.DEBUG, logger="schnack.server"):
        await ws.send_str(f"<iq xmlns='{ns.CLIENT}' type='set' id='b1'><bind xmlns='{ns.BIND}'/></iq>")
        await ws.ping(b"still there?")
        # uvloop lends only a stand-in of its socket, without shutdown(): a duplicate descriptor
        # shuts down the same connection.
        with socket.socket(fileno=os.dup(ws.get_extra_info("socket").fileno())) as own:
            own.shutdown(socket.SHUT_WR)
        await asyncio.wait_for(ended.wait(), 30)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    assert not live_server.sessions.resources(JID.parse("alice@localhost"))


@pytest.mark.parametrize("protocols", [("chat",), ()], ids=["other", "none"])
async def test_without_the_xmpp_subprotocol_the_handshake_is_refused(
    live_server: Server, http: aiohttp.ClientSession, protocols: tuple[str, ...]
) -> None:
    """RFC 7395 §3.1: an XMPP connection exists only when both ends agreed on 'xmpp'."""
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await http.ws_connect(url(live_server), protocols=protocols)
    assert refused.value.status == 400
    assert not live_server.connections


async def test_plain_http_request_is_told_to_upgrade(live_server: Server, http: aiohttp.ClientSession) -> None:
    host, port = live_server.bound["http"][0]
    async with http.get(f"http://{host}:{port}/xmpp-websocket") as response:
        assert response.status == 426

"""The TCP connection (schnack.server.net) on a real socket: an idle connection lets go of its
parser and reads on with a new one; messages are forwarded with their payload as sent and the
sender's address stamped (RFC 6120 §8.1.2.1); what one turn of the event loop writes goes out
in one write."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable
from typing import Any

import pytest

from schnack.server import net
from schnack.server.app import Server
from schnack.xmpp import ns
from schnack.xmpp.errors import StreamError
from schnack.xmpp.jid import JID
from schnack.xmpp.parser import StreamParser
from schnack.xmpp.xml import element, qname

from ..harness import add_user
from ..integration.wire import Wire

pytestmark = pytest.mark.asyncio

PAYLOAD = (
    "<body>a &amp; b &lt;c&gt; \u00e4 &#x1F600;</body>"
    "<encrypted xmlns='eu.siacs.conversations.axolotl'><header sid='1'><key rid='2'>a2V5</key>"
    "<iv>aXY=</iv></header><payload>cGF5</payload></encrypted><x xmlns='urn:example:x' a='1 &gt; 0'/>"
)


async def logged_in(server: Server, user: str) -> tuple[Wire, str]:
    wire = await Wire.connect(server)
    await wire.open()
    features = await wire.starttls()
    await wire.login(user, "secret", features)
    return wire, await wire.bind("phone")


async def alice_and_bob(server: Server) -> list[tuple[Wire, str]]:
    """Two accounts, each logged in over STARTTLS: their wires and full JIDs."""
    for user in ("alice", "bob"):
        await add_user(server, user)
    return [await logged_in(server, user) for user in ("alice", "bob")]


class Recording:
    """A transport that records what is written to it before writing it to the real one."""

    def __init__(self, transport: asyncio.Transport, written: list[bytes]) -> None:
        self._transport = transport
        self._written = written

    def write(self, data: bytes) -> None:
        self._written.append(data)
        self._transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def connection_of(server: Server, jid: str) -> net.TcpConnection:
    for conn in server.connections:
        stream = conn.stream
        if isinstance(conn, net.TcpConnection) and stream is not None and str(stream.session and stream.session.jid) == jid:
            return conn
    raise AssertionError(f"no connection for {jid}")


async def test_idle_connection_releases_its_parser_and_reads_on(
    live_server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(net, "_RELEASE_PARSER_AFTER", 0.05)
    (alice, alice_jid), (bob, bob_jid) = await alice_and_bob(live_server)
    sender = connection_of(live_server, alice_jid)
    for round_ in range(2):
        # Idle long enough: the parser goes, and the next stanza is read by a new one.
        await asyncio.sleep(0.3)
        assert sender.parser is not None and sender.parser._released
        alice.send("".join(
            f"<message to='{bob_jid}' type='chat' id='m{round_}-{i}'>{PAYLOAD}</message>" for i in range(20)
        ))
        for i in range(20):
            got = await bob.next()
            assert got is not None and got.tag == qname(ns.CLIENT, "message")
            assert got.get("id") == f"m{round_}-{i}"
            assert got.get("from") == alice_jid
            assert got.findtext(qname(ns.CLIENT, "body")) == "a & b <c> \u00e4 \U0001F600"
            x = got.find("{urn:example:x}x")
            assert x is not None and x.get("a") == "1 > 0"
            assert got.findtext(
                "{eu.siacs.conversations.axolotl}encrypted/{eu.siacs.conversations.axolotl}header/"
                "{eu.siacs.conversations.axolotl}iv"
            ) == "aXY="
            # The archive's id for bob, added by the server after the payload.
            assert got.find(qname(ns.SID, "stanza-id")) is not None
    alice.close()
    bob.close()


async def _until(check: Callable[[], bool], what: str) -> None:
    """Until ``check`` holds (the server acts on its own clock)."""
    for _ in range(500):
        if check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"not within 10 s: {what}")


async def test_an_idle_connection_parks_its_reader_and_serves_on(
    live_server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a while without input the reader task ends (Link.park): the connection holds no
    task, and the next input is read by a new one, which parks again once idle."""
    monkeypatch.setattr(net, "_RELEASE_PARSER_AFTER", 0.05)
    (alice, alice_jid), (bob, bob_jid) = await alice_and_bob(live_server)
    sender = connection_of(live_server, alice_jid)
    for round_ in range(3):
        await _until(lambda: sender.link._task is None, "alice's reader parked")
        alice.send(f"<message to='{bob_jid}' type='chat' id='m{round_}'>{PAYLOAD}</message>")
        got = await bob.next()
        assert got is not None and got.get("id") == f"m{round_}" and got.get("from") == alice_jid
        # Bob's reader parked too, and what is sent to him does not need it.
        bob.send(f"<iq type='get' id='p{round_}'><ping xmlns='urn:xmpp:ping'/></iq>")
        pong = await bob.next()
        assert pong is not None and pong.get("id") == f"p{round_}" and pong.get("type") == "result"
    alice.close()
    bob.close()


async def test_restarted_and_ended_streams_leave_no_parser_to_the_collector(live_server: Server) -> None:
    """A login restarts the stream twice (after TLS and after SASL, RFC 6120 §4.3.3) and each
    restart makes a new parser; the old ones, and the last once the connection ends, are freed
    at once. Left to the collector, a burst of logins held expat's buffers for minutes."""
    await add_user(live_server, "bob")
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        bob, bob_jid = await logged_in(live_server, "bob")
        conn = connection_of(live_server, bob_jid)
        bob.send("</stream:stream>")
        assert await bob.next() is None
        await _until(lambda: conn not in live_server.connections, "bob's connection ended")
        gc.collect()
        left = [obj for obj in gc.garbage if isinstance(obj, StreamParser)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    bob.close()
    assert left == []


@pytest.mark.parametrize("ending", ["client closes its stream", "client drops the connection", "server kicks"])
async def test_a_parked_connection_still_ends_and_its_session_with_it(
    live_server: Server, monkeypatch: pytest.MonkeyPatch, ending: str
) -> None:
    """A parked reader is what ends a connection (its session, its place among the server's
    connections); whatever ends the connection while it is parked starts it again."""
    monkeypatch.setattr(net, "_RELEASE_PARSER_AFTER", 0.05)
    await add_user(live_server, "bob")
    bob, bob_jid = await logged_in(live_server, "bob")
    conn = connection_of(live_server, bob_jid)
    await _until(lambda: conn.link._task is None, "bob's reader parked")
    if ending == "client closes its stream":
        bob.send("</stream:stream>")
        assert await bob.next() is None
    elif ending == "client drops the connection":
        bob.writer.transport.abort()
    else:
        session = live_server.sessions.get(JID.parse(bob_jid))
        assert session is not None
        session.close(StreamError("policy-violation", "kicked"))
        assert await bob.stream_error() == "policy-violation"
        bob.send("</stream:stream>")
    await _until(lambda: conn not in live_server.connections, "bob's connection ended")
    assert live_server.sessions.get(JID.parse(bob_jid)) is None
    bob.close()


async def test_what_one_turn_writes_goes_out_in_one_write(
    live_server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    await add_user(live_server, "bob")
    bob, bob_jid = await logged_in(live_server, "bob")
    conn = connection_of(live_server, bob_jid)
    session = live_server.sessions.get(JID.parse(bob_jid))
    assert session is not None
    written: list[bytes] = []
    monkeypatch.setattr(conn.link, "transport", Recording(conn.link.transport, written))
    for i in range(10):
        session.send(element(qname(ns.CLIENT, "message"), {"to": bob_jid, "id": f"m{i}"}))
    assert written == []
    for i in range(10):
        got = await bob.next()
        assert got is not None and got.get("id") == f"m{i}"
    assert len(written) == 1
    # Stanzas of later turns go out in writes of their own.
    session.send(element(qname(ns.CLIENT, "message"), {"to": bob_jid, "id": "later"}))
    got = await bob.next()
    assert got is not None and got.get("id") == "later"
    assert len(written) == 2
    bob.close()


async def test_a_closed_connection_sends_what_was_written_before_it_closed(live_server: Server) -> None:
    await add_user(live_server, "bob")
    bob, bob_jid = await logged_in(live_server, "bob")
    conn = connection_of(live_server, bob_jid)
    session = live_server.sessions.get(JID.parse(bob_jid))
    assert session is not None
    session.send(element(qname(ns.CLIENT, "message"), {"to": bob_jid, "id": "last"}))
    conn.close_now()
    got = await bob.next()
    assert got is not None and got.get("id") == "last"
    bob.close()


@pytest.mark.parametrize(("behind", "after_proceed"), [
    (" ", ""), ("\r\n", ""), (" \t\n" * 100, ""),
    # A keepalive sent before <proceed/> reached the client may come once TLS began.
    ("", " "), ("", "\n" * 10),
])
async def test_whitespace_behind_starttls_is_no_injection(live_server: Server, behind: str,
                                                          after_proceed: str) -> None:
    """RFC 6120 §11.7: whitespace may come between top-level elements (a keepalive, a newline);
    behind <starttls/> it is not read as the start of the stream after TLS, and TLS goes on."""
    await add_user(live_server, "alice")
    wire = await Wire.connect(live_server)
    await wire.open()
    features = await wire.starttls(behind=behind, after_proceed=after_proceed)
    await wire.login("alice", "secret", features)
    assert await wire.bind("desk")
    wire.close()

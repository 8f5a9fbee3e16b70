"""Every stream error a client can provoke, on the real server over real sockets (RFC 6120 §4.9)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from schnack.server import net
from schnack.server.app import Server
from schnack.xmpp import ns

from ..harness import add_user, running
from .wire import HEADER, Wire

pytestmark = pytest.mark.asyncio


@pytest.mark.parametrize(
    ("data", "condition"),
    [
        (b"<message><body>x</message>", "not-well-formed"),
        (b"<!-- c -->", "restricted-xml"),
        (b"<?pi data?>", "restricted-xml"),
        (b"<message><body>\xc3\x28</body></message>", "not-well-formed"),
        (b"junk<presence/>", "bad-format"),
        (b"<message to='x@localhost'><body>early</body></message>", "not-authorized"),
        (b"<iq type='get' id='1'><query xmlns='jabber:iq:roster'/></iq>", "not-authorized"),
        (b"<message><body>" + b"A" * 20_000 + b"</body></message>", "policy-violation"),
    ],
)
async def test_bad_input_before_login(live_server: Server, data: bytes, condition: str) -> None:
    wire = await Wire.connect(live_server)
    await wire.open()
    wire.send(data)
    assert await wire.stream_error() == condition


@pytest.mark.parametrize(
    ("header", "condition"),
    [
        ("<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>", "invalid-namespace"),
        ("<stream:stream xmlns='jabber:client' xmlns:stream='urn:wrong' to='localhost' version='1.0'>", "invalid-namespace"),
        ("<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost'>", "unsupported-version"),
        ("<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='elsewhere.example' version='1.0'>", "host-unknown"),
        ("<?xml version='1.0'?><!DOCTYPE stream [<!ENTITY x 'y'>]><stream:stream>", "restricted-xml"),
        ("<?xml version='1.0' encoding='UTF-16'?><stream:stream>", "unsupported-encoding"),
    ],
)
async def test_bad_stream_header(live_server: Server, header: str, condition: str) -> None:
    wire = await Wire.connect(live_server)
    wire.send(header)
    assert await wire.stream_error() == condition
    # RFC 6120 §4.9.1.2: the server sends its own header before the error.
    assert wire.opened


async def test_starttls_is_required_before_authentication(live_server: Server) -> None:
    wire = await Wire.connect(live_server)
    features = await wire.open()
    starttls = features.find(f"{{{ns.TLS}}}starttls")
    assert starttls is not None and starttls.find(f"{{{ns.TLS}}}required") is not None
    assert features.find(f"{{{ns.SASL}}}mechanisms") is None
    wire.send(f"<auth xmlns='{ns.SASL}' mechanism='PLAIN'>AGEAYg==</auth>")
    failure = await wire.next()
    assert failure is not None and failure.find(f"{{{ns.SASL}}}encryption-required") is not None


PING = "<iq type='get' id='i1'><ping xmlns='urn:xmpp:ping'/></iq>"


# An element, one after whitespace, the start of one, the stream's end.
@pytest.mark.parametrize("behind", [PING, f" \n{PING}", PING[:14], "</stream:stream>"])
async def test_input_behind_starttls_ends_the_stream_before_tls(live_server: Server, behind: str) -> None:
    """RFC 6120 §5.4.3.3: the client waits for <proceed/> before it sends anything more; what
    came behind <starttls/> in the clear would pass for the client's after TLS (the injection
    of CVE-2011-0411). The stream ends with policy-violation and no <proceed/>, as on streams
    between servers (whitespace is no such input: tests/server/test_net.py)."""
    wire = await Wire.connect(live_server)
    await wire.open()
    wire.send(f"<starttls xmlns='{ns.TLS}'/>{behind}")
    error = await wire.next()
    assert error is not None and error.tag == f"{{{ns.STREAMS}}}error"
    assert error.find(f"{{{ns.STREAM_ERRORS}}}policy-violation") is not None
    assert await wire.next() is None


async def test_input_behind_starttls_sent_with_the_header_ends_the_stream_after_the_header(
        live_server: Server) -> None:
    """RFC 6120 §4.9.1.1: the stream error of a client that sent its header, <starttls/> and
    more in one go still comes in a stream (our header and features), only <proceed/> is not
    sent."""
    wire = await Wire.connect(live_server)
    wire.send(HEADER.format(to="localhost") + f"<starttls xmlns='{ns.TLS}'/>{PING}")
    features = await wire.next()
    assert wire.opened and features is not None and features.tag == f"{{{ns.STREAMS}}}features"
    error = await wire.next()
    assert error is not None and error.find(f"{{{ns.STREAM_ERRORS}}}policy-violation") is not None
    assert await wire.next() is None


async def test_forged_from_closes_the_stream(live_server: Server) -> None:
    await add_user(live_server, "mallory", "pw-mallory")
    wire = await Wire.connect(live_server)
    await wire.open()
    features = await wire.starttls()
    await wire.login("mallory", "pw-mallory", features)
    await wire.bind()
    wire.send("<message from='alice@localhost/x' to='bob@localhost' type='chat'><body>hi</body></message>")
    assert await wire.stream_error() == "invalid-from"


async def test_unknown_top_level_element_after_login(live_server: Server) -> None:
    await add_user(live_server, "carol", "pw-carol")
    wire = await Wire.connect(live_server, "c2s_tls")
    features = await wire.open()
    await wire.login("carol", "pw-carol", features)
    await wire.bind()
    wire.send("<frobnicate xmlns='urn:example:nothing'/>")
    assert await wire.stream_error() == "unsupported-stanza-type"


async def test_large_stanza_after_login(live_server: Server) -> None:
    await add_user(live_server, "dave", "pw-dave")
    wire = await Wire.connect(live_server, "c2s_tls")
    await wire.login("dave", "pw-dave", await wire.open())
    await wire.bind()
    wire.send(b"<message to='dave@localhost'><body>" + b"B" * 300_000 + b"</body></message>")
    assert await wire.stream_error() == "policy-violation"


# Long enough that a connection which does close was closed because the client closed its stream.
_FOREVER = 3600.0


async def _eof(wire: Wire) -> bytes:
    """What the client still reads until the server closes the connection."""
    rest = b""
    while data := await asyncio.wait_for(wire.reader.read(65536), 10):
        rest += data
    return rest


@pytest.mark.parametrize(
    ("first", "condition"),
    [(b"", "not-authorized"), (b"<presence>" + b" " * 20_000 + b"</presence>", "policy-violation")],
)
async def test_stream_error_arrives_while_the_client_keeps_sending(
    live_server: Server, first: bytes, condition: str
) -> None:
    """RFC 6120 §4.4: the server reads on after its error; closing with input unread would reset
    the connection, and the client would lose the error it has not read yet.

    The first stanza is refused before authentication; the rest, more than the socket buffers
    hold, is still being sent when the server closes the stream. The server must read it faster
    than it could parse it, or the linger ends first.
    """
    wire = await Wire.connect(live_server)
    await wire.open()
    wire.send(first + b"<presence/>" * 2_000_000)
    await wire.writer.drain()
    assert await wire.stream_error() == condition


async def test_many_small_stanzas_read_at_once_are_not_one_large_one(tmp_path: Path) -> None:
    """A server that falls behind a fast client reads many of its stanzas at once; together they
    may exceed the stanza size limit, which bounds each stanza alone (RFC 6120 §13.12)."""
    async with running(tmp_path, listen=True, limits={"max_stanza_size": 10_000}) as server:
        await add_user(server, "fay", "pw-fay")
        wire = await Wire.connect(server, "c2s_tls")
        await wire.login("fay", "pw-fay", await wire.open())
        await wire.bind()
        wire.send("".join(f"<iq type='get' id='p{i}'><ping xmlns='urn:xmpp:ping'/></iq>" for i in range(2_000)))
        answered = [await wire.next() for _ in range(2_000)]
        assert [(el.get("type"), el.get("id")) for el in answered if el is not None] == [
            ("result", f"p{i}") for i in range(2_000)
        ]


async def test_connection_closes_once_the_client_closes_its_stream(
    live_server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(net, "LINGER", _FOREVER)
    wire = await Wire.connect(live_server)
    await wire.open()
    wire.send("<iq type='get' id='1'><query xmlns='jabber:iq:roster'/></iq>")
    assert await wire.stream_error() == "not-authorized"
    wire.send("<presence/></stream:stream>")
    assert await _eof(wire) == b""
    assert not live_server.connections


async def test_silent_client_is_disconnected_after_the_linger(
    live_server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(net, "LINGER", 0.1)
    wire = await Wire.connect(live_server)
    await wire.open()
    wire.send("<frobnicate/>")
    assert await wire.stream_error() == "not-authorized"
    assert await _eof(wire) == b""


async def test_kicked_client_input_is_dropped_until_it_closes(
    live_server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stream closed by another task (here a resource conflict, RFC 6120 §7.7.2.2) reads on,
    but what the client sends after the close is not processed."""
    monkeypatch.setattr(net, "LINGER", _FOREVER)
    await add_user(live_server, "erin", "pw-erin")
    old = await Wire.connect(live_server, "c2s_tls")
    await old.login("erin", "pw-erin", await old.open())
    await old.bind("desk")
    new = await Wire.connect(live_server, "c2s_tls")
    await new.login("erin", "pw-erin", await new.open())
    await new.bind("desk")
    assert await old.stream_error() == "conflict"
    old.send("<iq type='get' id='ghost' to='erin@localhost/desk'><ping xmlns='urn:xmpp:ping'/></iq></stream:stream>")
    assert await _eof(old) == b""
    new.send("<iq type='get' id='live' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
    received = await new.next()
    assert received is not None and received.get("id") == "live"


async def test_shutdown_does_not_wait_for_clients_to_close(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Server.stop gives connections a bounded moment to go; lingering ones must not outlast it."""
    monkeypatch.setattr(net, "LINGER", _FOREVER)
    async with running(tmp_path, listen=True) as server:
        quiet = await Wire.connect(server)
        await quiet.open()
        failed = await Wire.connect(server)
        await failed.open()
        failed.send("<frobnicate/>")
        assert await failed.stream_error() == "not-authorized"
    assert not server.connections
    assert await quiet.stream_error() == "system-shutdown"
    assert await _eof(quiet) == b""
    assert await _eof(failed) == b""

"""Every stream error a client can provoke, on the real server over real sockets (RFC 6120 §4.9)."""

from __future__ import annotations

import pytest

from schnack.server.app import Server
from schnack.xmpp import ns

from ..harness import add_user
from .wire import Wire, insecure_context

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


async def test_bytes_after_starttls_are_discarded(live_server: Server) -> None:
    """RFC 6120 §5.4.3.3: what follows <starttls/> in the clear must not reach the TLS stream.

    Were the injected stanza processed, it would close the stream with not-authorized.
    """
    wire = await Wire.connect(live_server)
    await wire.open()
    wire.send(f"<starttls xmlns='{ns.TLS}'/><message to='x@localhost'><body>injected</body></message>")
    proceed = await wire.next()
    assert proceed is not None and proceed.tag == f"{{{ns.TLS}}}proceed"
    await wire.writer.start_tls(insecure_context(), server_hostname="localhost")
    features = await wire.open()
    assert features.find(f"{{{ns.SASL}}}mechanisms") is not None


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

"""HAProxy's PROXY protocol on the client listeners (proxy-protocol.txt §2.1, §2.2): the header
parser, and a real server behind a trusted proxy on 127.0.0.1 counting failed logins per client."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from xml.etree.ElementTree import Element

import aiohttp
import pytest

from schnack.server.app import Server
from schnack.server.config import ConfigError
from schnack.server.proxy_protocol import V2_MAX_PAYLOAD, V2_SIGNATURE, ProxyHeaderError, parse
from schnack.xmpp import ns
from schnack.xmpp.sasl import SaslClient, decode_b64, encode_b64
from schnack.xmpp.xml import qname

from ..harness import add_user, make_config
from ..integration.cluster_harness import Balancer
from ..integration.slix import PASSWORD
from ..integration.test_login import authenticate, condition
from ..integration.wire import HEADER, Wire, insecure_context
from ..integration.ws import WsClient

Header = Callable[[str, int], bytes]


def v1(client: str, port: int) -> bytes:
    """A version 1 header naming ``client``, as a proxy on 127.0.0.1 sends it."""
    family = "TCP4" if ipaddress.ip_address(client).version == 4 else "TCP6"
    proxy = "127.0.0.1" if family == "TCP4" else "::1"
    return f"PROXY {family} {client} {proxy} {port} 5222\r\n".encode()


def v2(client: str, port: int, *, command: int = 1, tlvs: bytes = b"") -> bytes:
    """A version 2 header naming ``client`` (TCP over IPv4 or IPv6), with ``tlvs`` after the
    addresses."""
    source = ipaddress.ip_address(client)
    proxy = ipaddress.ip_address("127.0.0.1" if source.version == 4 else "::1")
    family = 0x11 if source.version == 4 else 0x21
    block = source.packed + proxy.packed + port.to_bytes(2, "big") + (5222).to_bytes(2, "big") + tlvs
    return V2_SIGNATURE + bytes([0x20 | command, family]) + len(block).to_bytes(2, "big") + block


# The parser ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("header", "client"), [
    (b"PROXY TCP4 192.0.2.7 10.0.0.1 51000 5222\r\n", ("192.0.2.7", 51000)),
    (b"PROXY TCP6 2001:db8::7 2001:db8::1 443 5223\r\n", ("2001:db8::7", 443)),
    (v2("192.0.2.7", 51000), ("192.0.2.7", 51000)),
    (v2("2001:db8::7", 65535), ("2001:db8::7", 65535)),
    # TLVs (here an ALPN, type 0x01) follow the addresses and are skipped.
    (v2("192.0.2.7", 1, tlvs=b"\x01\x00\x02h2"), ("192.0.2.7", 1)),
])
def test_a_header_names_the_client_and_ends_where_the_stream_begins(header: bytes, client: tuple[str, int]) -> None:
    assert parse(header + b"<?xml") == (client, len(header))


@pytest.mark.parametrize("header", [
    b"PROXY UNKNOWN\r\n",
    b"PROXY UNKNOWN 192.0.2.7 10.0.0.1 51000 5222\r\n",
    v2("192.0.2.7", 51000, command=0),  # LOCAL: the proxy's own health check
    V2_SIGNATURE + b"\x21\x00\x00\x00",  # UNSPEC
    V2_SIGNATURE + b"\x21\x31\x00\xd8" + bytes(216),  # AF_UNIX
    V2_SIGNATURE + b"\x21\x12\x00\x0c" + bytes(12),  # a datagram
])
def test_a_header_naming_no_tcp_client_keeps_the_proxy_address(header: bytes) -> None:
    assert parse(header) == (None, len(header))


@pytest.mark.parametrize("header", [
    b"PROXY TCP4 192.0.2.7 10.0.0.1 51000 5222\r\n",
    v2("2001:db8::7", 51000),
    v2("192.0.2.7", 51000, tlvs=b"\x01\x00\x02h2"),
])
def test_a_truncated_header_waits_for_more(header: bytes) -> None:
    for end in range(len(header)):
        assert parse(header[:end]) is None


@pytest.mark.parametrize(("data", "reason"), [
    (b"<?xml version='1.0'?>", "no PROXY header"),
    (b"\x16\x03\x01\x02\x00", "no PROXY header"),  # a TLS ClientHello
    (b"\r\n\r\n\x00\r\nQUIX\n" + bytes(20), "no PROXY header"),
    (b"PROXY TCP4 192.0.2.7 10.0.0.1 51000\r\n", "malformed version 1 header"),
    (b"PROXY UDP4 192.0.2.7 10.0.0.1 51000 5222\r\n", "malformed version 1 header"),
    (b"PROXY TCP4 2001:db8::7 10.0.0.1 51000 5222\r\n", "not TCP4"),
    (b"PROXY TCP4 192.0.2.300 10.0.0.1 51000 5222\r\n", "malformed address"),
    (b"PROXY TCP4 192.0.2.7 10.0.0.1 65536 5222\r\n", "malformed port"),
    (b"PROXY TCP4 192.0.2.7 10.0.0.1 051000 5222\r\n", "malformed port"),
    (b"PROXY TCP4 192.0.2.7 10.0.0.1 -1 5222\r\n", "malformed port"),
    (b"PROXY TCP4 \xc3\xa9 10.0.0.1 1 5222\r\n", "not ASCII"),
    (b"PROXY UNKNOWN " + b"x" * 100, "longer than 107 bytes"),
    (V2_SIGNATURE + b"\x11\x11\x00\x0c" + bytes(12), "unsupported version 1"),
    (V2_SIGNATURE + b"\x22\x11\x00\x0c" + bytes(12), "unknown command 2"),
    (V2_SIGNATURE + b"\x21\x41\x00\x0c" + bytes(12), "unknown address family"),
    (V2_SIGNATURE + b"\x21\x21\x00\x0c" + bytes(12), "too short for its addresses"),
    (V2_SIGNATURE + b"\x21\x11" + (V2_MAX_PAYLOAD + 1).to_bytes(2, "big"), "longer than"),
])
def test_a_bad_header_is_refused(data: bytes, reason: str) -> None:
    with pytest.raises(ProxyHeaderError, match=reason):
        parse(data)


@pytest.mark.parametrize("entry", ["10.0.0.5", "10.0.1.0/24", "2001:db8::/32", "::1"])
def test_proxy_from_takes_addresses_and_networks(tmp_path: Path, entry: str) -> None:
    assert make_config(tmp_path, listen={"proxy_from": [entry]}).listen.proxy_from == [entry]


@pytest.mark.parametrize("entry", ["haproxy.local", "10.0.0.0/33", "10.0.0.1:5222", ""])
def test_proxy_from_refuses_what_is_no_address(tmp_path: Path, entry: str) -> None:
    with pytest.raises(ConfigError, match=r"listen.proxy_from\[1\]: must be an IP address or network"):
        make_config(tmp_path, listen={"proxy_from": ["10.0.0.5", entry]})


# Behind a trusted proxy on a real socket -------------------------------------------------------


@contextlib.asynccontextmanager
async def proxied(tmp_path: Path, proxies: list[str], **overrides: Any) -> AsyncIterator[Server]:
    """A server listening on 127.0.0.1 that trusts ``proxies`` to send PROXY headers."""
    server = Server(make_config(tmp_path, listen={"proxy_from": proxies}, **overrides))
    await server.start(listen=True)
    try:
        yield server
    finally:
        await server.stop()


async def behind_proxy(server: Server, listener: str, header: bytes) -> tuple[Wire, Element]:
    """A connection from the trusted proxy, its PROXY header first, then TLS (direct or by
    STARTTLS); the features offered on TLS."""
    host, port = server.bound[listener][0]
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(header)
    wire = Wire(reader, writer)
    if listener == "c2s_tls":
        await writer.start_tls(insecure_context(), server_hostname="localhost")
        return wire, await wire.open()
    await wire.open()
    return wire, await wire.starttls()


async def login_from(server: Server, listener: str, header: bytes, user: str, password: str) -> Element:
    """One login attempt through the proxy; the element that ended SASL."""
    wire, _features = await behind_proxy(server, listener, header)
    try:
        return await authenticate(wire, SaslClient(user, password, ["SCRAM-SHA-256"]))
    finally:
        wire.close()


@pytest.mark.asyncio
@pytest.mark.parametrize("listener", ["c2s", "c2s_tls"])
@pytest.mark.parametrize("make", [v1, v2], ids=["v1", "v2"])
async def test_failed_logins_count_per_client_the_proxy_names(tmp_path: Path, listener: str, make: Header,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    """Guessing from one client behind the balancer blocks that client, not the others."""
    limits = {"failed_logins_per_account": 100, "failed_logins_per_ip": 2}
    async with proxied(tmp_path, ["127.0.0.1"], limits=limits) as server:
        await add_user(server, "bob", PASSWORD)
        for user in ("ann", "ben"):
            assert condition(await login_from(server, listener, make("192.0.2.7", 40000), user, "guess")) == "not-authorized"
        guesser = await login_from(server, listener, make("192.0.2.7", 40001), "bob", PASSWORD)
        assert condition(guesser) == "temporary-auth-failure"
        with caplog.at_level(logging.INFO, logger="schnack.server.c2s"):
            other = await login_from(server, listener, make("2001:db8::9", 40002), "bob", PASSWORD)
        assert other.tag.endswith("}success")
        assert "bob@localhost authenticated from 2001:db8::9:40002" in caplog.text


@pytest.mark.asyncio
@pytest.mark.parametrize("listener", ["c2s", "c2s_tls"])
async def test_a_proxy_health_check_keeps_the_proxy_address(tmp_path: Path, listener: str,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    """proxy-protocol.txt §2.2: a LOCAL connection is the proxy's own, and served as one."""
    async with proxied(tmp_path, ["127.0.0.1"]) as server:
        await add_user(server, "bob", PASSWORD)
        with caplog.at_level(logging.INFO, logger="schnack.server.c2s"):
            success = await login_from(server, listener, v2("192.0.2.7", 1, command=0), "bob", PASSWORD)
        assert success.tag.endswith("}success")
        assert "bob@localhost authenticated from 127.0.0.1:" in caplog.text


async def closed_at_once(wire: Wire) -> None:
    """The connection ends without a byte: before the stream there is no stream error to send."""
    assert await wire.reader.read() == b""


@pytest.mark.asyncio
@pytest.mark.parametrize("first", [HEADER.format(to="localhost").encode(), b"PROXY TCP4 192.0.2.7\r\n",
                                   V2_SIGNATURE + b"\x21\x11\xff\xff"], ids=["no header", "v1 malformed", "v2 too long"])
async def test_the_trusted_proxy_without_a_valid_header_is_cut(tmp_path: Path, first: bytes,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    async with proxied(tmp_path, ["127.0.0.1"]) as server:
        wire = await Wire.connect(server, "c2s")
        try:
            with caplog.at_level(logging.WARNING, logger="schnack.server.proxy_protocol"):
                wire.send(first)
                await closed_at_once(wire)
        finally:
            wire.close()
        assert "closing connection from proxy 127.0.0.1:" in caplog.text


@pytest.mark.asyncio
async def test_the_trusted_proxy_silent_past_the_login_timeout_is_cut(tmp_path: Path) -> None:
    async with proxied(tmp_path, ["127.0.0.0/8"], limits={"auth_timeout": 1}) as server:
        wire = await Wire.connect(server, "c2s")
        try:
            await closed_at_once(wire)
        finally:
            wire.close()


@pytest.mark.asyncio
async def test_a_header_from_an_untrusted_address_is_bad_xml(tmp_path: Path) -> None:
    """Anyone could claim an address: a header from elsewhere is not read as one."""
    async with proxied(tmp_path, ["10.0.0.5", "2001:db8::/32"]) as server:
        wire = await Wire.connect(server, "c2s")
        try:
            wire.send(v1("192.0.2.7", 40000) + HEADER.format(to="localhost").encode())
            assert await wire.stream_error() == "not-well-formed"
        finally:
            wire.close()


@contextlib.asynccontextmanager
async def proxy_in_front(server: Server, listener: str) -> AsyncIterator[Balancer]:
    """A proxy on 127.0.0.1 in front of ``listener``, as a balancer in TCP mode is one: each
    connection is passed on behind the PROXY header set as its ``header`` (TLS passes through)."""
    balancer = Balancer([server.bound[listener][0][1]])
    await balancer.start()
    try:
        yield balancer
    finally:
        await balancer.stop()


async def ws_login(http: aiohttp.ClientSession, relay: Balancer, scheme: str, user: str, password: str) -> Element:
    """One login attempt over a WebSocket through the relay (RFC 7395); the element that ended SASL."""
    async with http.ws_connect(f"{scheme}://127.0.0.1:{relay.port}/xmpp-websocket", protocols=("xmpp",),
                               ssl=insecure_context() if scheme == "wss" else True) as ws:
        client = WsClient(ws)
        await client.open()
        sasl = SaslClient(user, password, ["SCRAM-SHA-256"])
        await client.send(f"<auth xmlns='{ns.SASL}' mechanism='{sasl.mechanism}'>{encode_b64(sasl.initial())}</auth>")
        challenge = await client.next()
        assert challenge is not None
        if challenge.tag != qname(ns.SASL, "challenge"):
            return challenge
        await client.send(f"<response xmlns='{ns.SASL}'>{encode_b64(sasl.respond(decode_b64(challenge.text or '')))}</response>")
        ended = await client.next()
        assert ended is not None
        return ended


@pytest.mark.asyncio
@pytest.mark.parametrize(("listener", "scheme", "make"), [("http", "ws", v2), ("https", "wss", v1)])
async def test_failed_logins_over_websocket_count_per_client_the_proxy_names(
        tmp_path: Path, listener: str, scheme: str, make: Header, caplog: pytest.LogCaptureFixture) -> None:
    """The HTTP ports take the header too; on the HTTPS port it comes before TLS."""
    limits = {"failed_logins_per_account": 100, "failed_logins_per_ip": 1}
    async with (proxied(tmp_path, ["127.0.0.1"], limits=limits) as server,
                proxy_in_front(server, listener) as relay, aiohttp.ClientSession() as http):
        await add_user(server, "bob", PASSWORD)
        relay.header = make("192.0.2.7", 40000)
        assert condition(await ws_login(http, relay, scheme, "ann", "guess")) == "not-authorized"
        assert condition(await ws_login(http, relay, scheme, "bob", PASSWORD)) == "temporary-auth-failure"
        relay.header = make("192.0.2.8", 40001)
        with caplog.at_level(logging.INFO, logger="schnack.server.c2s"):
            assert (await ws_login(http, relay, scheme, "bob", PASSWORD)).tag == qname(ns.SASL, "success")
        assert "bob@localhost authenticated from 192.0.2.8:40001" in caplog.text


@pytest.mark.asyncio
async def test_plain_websocket_from_a_proxy_on_the_loopback_stays_secure(tmp_path: Path) -> None:
    """A TLS-terminating proxy on this machine makes plain HTTP secure (PLAIN is offered) when it
    names a client elsewhere too."""
    async with (proxied(tmp_path, ["127.0.0.1"]) as server, proxy_in_front(server, "http") as relay,
                aiohttp.ClientSession() as http):
        relay.header = v2("192.0.2.7", 40000)
        async with http.ws_connect(f"ws://127.0.0.1:{relay.port}/xmpp-websocket", protocols=("xmpp",)) as ws:
            features = await WsClient(ws).open()
        assert "PLAIN" in [m.text for m in features.iter(qname(ns.SASL, "mechanism"))]

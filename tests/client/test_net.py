"""Finding the server: DNS SRV order (RFC 2782), XEP-0368 direct TLS records, the fallbacks;
and what the connection takes from the server around STARTTLS (RFC 6120 §5.4.3.3).

The lookups go to a DNS server of the test's own on loopback, through the same resolver the
client uses in production; the STARTTLS exchange is played by a server of the test's own on a
real socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import re
import socket
from collections.abc import AsyncIterator
from xml.etree.ElementTree import Element

import pytest

from schnack.client import Client, ConnectError
from schnack.client.net import Endpoint, _reason, endpoints
from schnack.server.app import Server
from schnack.xmpp import ns
from schnack.xmpp.parser import StanzaReceived, StreamOpened, StreamParser

from .conftest import PASSWORD, WAIT
from .dns import dns_server

ZONE = {
    "_xmpps-client._tcp.example.test": [(5, 10, 5223, "tls.example.test.")],
    "_xmpp-client._tcp.example.test": [(10, 5, 5222, "late.example.test."), (5, 0, 5299, "plain.example.test.")],
    "_xmpp-client._tcp.closed.test": [(0, 0, 0, ".")],
}


async def test_srv_records_of_both_kinds_in_order() -> None:
    async with dns_server(ZONE) as (address, queries):
        found = await endpoints("example.test", host=None, port=None, direct_tls=None, dns_servers=[address])
    assert sorted(queries) == ["_xmpp-client._tcp.example.test", "_xmpps-client._tcp.example.test"]
    assert found[2] == Endpoint("late.example.test", 5222, False)
    assert set(found[:2]) == {Endpoint("tls.example.test", 5223, True), Endpoint("plain.example.test", 5299, False)}


async def test_direct_tls_false_asks_only_for_starttls_records() -> None:
    async with dns_server(ZONE) as (address, queries):
        found = await endpoints("example.test", host=None, port=None, direct_tls=False, dns_servers=[address])
    assert queries == ["_xmpp-client._tcp.example.test"]
    assert [e.host for e in found] == ["plain.example.test", "late.example.test"]


async def test_without_records_the_domain_itself() -> None:
    async with dns_server(ZONE) as (address, _):
        assert await endpoints("none.test", host=None, port=None, direct_tls=None, dns_servers=[address]) == [
            Endpoint("none.test", 5222, False)
        ]
        assert await endpoints("none.test", host=None, port=None, direct_tls=True, dns_servers=[address]) == [
            Endpoint("none.test", 5223, True)
        ]


async def test_target_dot_means_no_service() -> None:
    """RFC 6120 §3.2.1: a single record with the target "." says the domain offers no XMPP."""
    async with dns_server(ZONE) as (address, _):
        with pytest.raises(ConnectError, match="offers no XMPP service"):
            await endpoints("closed.test", host=None, port=None, direct_tls=False, dns_servers=[address])


async def test_a_given_host_skips_dns() -> None:
    assert await endpoints("example.test", host="192.0.2.1", port=None, direct_tls=None) == [
        Endpoint("192.0.2.1", 5222, False)
    ]
    assert await endpoints("example.test", host="192.0.2.1", port=None, direct_tls=True) == [
        Endpoint("192.0.2.1", 5223, True)
    ]


async def test_client_follows_srv_to_the_server(chat_server: Server) -> None:
    """The SRV record names a direct TLS port that is down, then the real STARTTLS port."""
    _, port = chat_server.bound["c2s"][0]
    zone = {
        "_xmpps-client._tcp.localhost": [(0, 0, 1, "localhost.")],
        "_xmpp-client._tcp.localhost": [(10, 0, port, "localhost.")],
    }
    async with dns_server(zone) as (address, _):
        client = Client("alice@localhost", PASSWORD, verify=False, dns_servers=[address])
        async with client:
            assert client.jid.bare == client.account


async def test_nothing_reachable_says_what_was_tried() -> None:
    zone = {"_xmpp-client._tcp.localhost": [(0, 0, 1, "localhost.")]}
    async with dns_server(zone) as (address, _):
        client = Client("alice@localhost", PASSWORD, verify=False, dns_servers=[address], direct_tls=False)
        # localhost has an IPv4 and an IPv6 address, both refusing: one reason for both.
        with pytest.raises(ConnectError, match=r"^cannot reach localhost \(localhost port 1\): connection refused$"):
            await client.connect()


async def test_a_starttls_port_asked_for_direct_tls_says_so(chat_server: Server) -> None:
    host, port = chat_server.bound["c2s"][0]
    client = Client("alice@localhost", PASSWORD, verify=False, host=host, port=port, direct_tls=True)
    with pytest.raises(ConnectError, match=r"\): it does not speak direct TLS \(try direct_tls=False\)$"):
        await client.connect()


def test_a_reason_shared_by_every_address_of_a_host_is_given_once() -> None:
    refused = errno.ECONNREFUSED
    folded = OSError(f"Multiple exceptions: [Errno {refused}] Connect call failed ('::1', 1, 0, 0), "
                     f"[Errno {refused}] Connect call failed ('127.0.0.1', 1)")
    assert _reason(folded) == "connection refused"
    assert _reason(ConnectionRefusedError(refused, "Connect call failed ('127.0.0.1', 1)")) == "connection refused"


async def test_a_host_name_that_does_not_resolve_says_why() -> None:
    """The resolver's codes (EAI_*) are no errno: its own words say why, not "unknown error -2"."""
    with pytest.raises(socket.gaierror) as resolving:
        socket.getaddrinfo("nohost.invalid", 5222)
    client = Client("alice@localhost", PASSWORD, host="nohost.invalid", port=5222, direct_tls=False)
    reason = re.escape(str(resolving.value.strerror).lower())
    with pytest.raises(ConnectError, match=rf"^cannot reach localhost \(nohost\.invalid port 5222\): {reason}$"):
        await client.connect()


SERVER_HEADER = (
    f"<?xml version='1.0'?><stream:stream xmlns='{ns.CLIENT}' xmlns:stream='{ns.STREAMS}' id='s1' "
    "from='localhost' version='1.0'>"
)
OFFER = f"<stream:features><starttls xmlns='{ns.TLS}'><required/></starttls></stream:features>"
# The first byte of a TLS record that carries a handshake message (RFC 8446 §5.1).
HANDSHAKE_RECORD = b"\x16"


@contextlib.asynccontextmanager
async def proceeding_server(behind: str) -> AsyncIterator[tuple[int, asyncio.Future[list[Element] | None]]]:
    """A server on a real socket that offers STARTTLS and answers ``<starttls/>`` with
    ``<proceed/>`` and ``behind`` in one write, as a man in the middle on the plain connection
    can; its port, and what the client sent after that (see :func:`_rest`)."""
    after: asyncio.Future[list[Element] | None] = asyncio.get_running_loop().create_future()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        parser = StreamParser(10**6)
        try:
            while not after.done():
                data = await reader.read(65536)
                if not data:
                    after.set_exception(AssertionError("the client left before <starttls/>"))
                    return
                for event in parser.feed(data):
                    if isinstance(event, StreamOpened):
                        writer.write((SERVER_HEADER + OFFER).encode())
                    elif isinstance(event, StanzaReceived) and event.element.tag == f"{{{ns.TLS}}}starttls":
                        writer.write(f"<proceed xmlns='{ns.TLS}'/>{behind}".encode())
                        after.set_result(await _rest(reader, parser))
                        return
        finally:
            writer.transport.abort()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], after
    finally:
        server.close()
        await server.wait_closed()


async def _rest(reader: asyncio.StreamReader, parser: StreamParser) -> list[Element] | None:
    """What the client sends next: None if it starts TLS (the connection is then cut), else the
    elements it sent on its stream until it hung up."""
    elements: list[Element] = []
    first = True
    while data := await reader.read(65536):
        if first and data.startswith(HANDSHAKE_RECORD):
            return None
        first = False
        elements += [event.element for event in parser.feed(data) if isinstance(event, StanzaReceived)]
    return elements


INJECTED = "<message to='alice@localhost' id='m1'><body>injected</body></message>"


# An element, one after whitespace, the start of one, features, the stream's end.
@pytest.mark.parametrize("behind", [INJECTED, f" \n{INJECTED}", INJECTED[:14], OFFER, "</stream:stream>"])
async def test_input_behind_proceed_ends_the_connection_before_tls(behind: str) -> None:
    """RFC 6120 §5.4.3.3: after <proceed/> the server sends nothing but its TLS handshake; what
    came behind it in the clear may come from anyone on the path, and would pass for the server's
    once TLS runs (the injection of CVE-2011-0411). The login ends with policy-violation, sent in
    the clear, and the client never starts TLS."""
    async with proceeding_server(behind) as (port, after):
        client = Client("alice@localhost", PASSWORD, host="127.0.0.1", port=port, verify=False, direct_tls=False)
        with pytest.raises(ConnectError, match=r"^localhost broke the protocol during login: policy-violation: "
                                               r"input came in the clear behind <proceed/>$"):
            async with asyncio.timeout(WAIT):
                await client.connect()
        async with asyncio.timeout(WAIT):
            sent = await after
    assert sent is not None, "the client started TLS"
    (error,) = sent
    assert error.tag == f"{{{ns.STREAMS}}}error"
    assert error.find(f"{{{ns.STREAM_ERRORS}}}policy-violation") is not None


async def test_whitespace_behind_proceed_is_dropped() -> None:
    """RFC 6120 §11.7: whitespace may come between top-level elements and carries nothing: the
    client goes on to TLS."""
    async with proceeding_server(" \r\n\t") as (port, after):
        client = Client("alice@localhost", PASSWORD, host="127.0.0.1", port=port, verify=False, direct_tls=False)
        # The test's server cuts the connection once the handshake starts.
        with pytest.raises(ConnectError, match="the connection failed during login"):
            async with asyncio.timeout(WAIT):
                await client.connect()
        async with asyncio.timeout(WAIT):
            assert await after is None

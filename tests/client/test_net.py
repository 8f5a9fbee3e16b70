"""Finding the server: DNS SRV order (RFC 2782), XEP-0368 direct TLS records, the fallbacks.

The lookups go to a DNS server of the test's own on loopback, through the same resolver the
client uses in production.
"""

from __future__ import annotations

import errno
import re
import socket

import pytest

from schnack.client import Client, ConnectError
from schnack.client.net import Endpoint, _reason, endpoints
from schnack.server.app import Server

from .conftest import PASSWORD
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

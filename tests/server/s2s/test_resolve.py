"""Finding another server (RFC 6120 §3.2): the hosts table, IP literals, SRV records, the fallback."""

from __future__ import annotations

import pytest

from schnack.server.s2s.resolve import Endpoint, NoService, endpoints, ip_literal

from ...client.dns import dns_server

ZONE = {
    "_xmpp-server._tcp.example.test": [(10, 0, 5270, "xmpp.example.test"), (20, 0, 5269, "backup.example.test")],
    "_xmpps-server._tcp.example.test": [(5, 0, 443, "tls.example.test")],
    "_xmpp-server._tcp.closed.test": [(0, 0, 0, ".")],
}


async def test_hosts_table_comes_first() -> None:
    assert await endpoints("example.test", {"example.test": "127.0.0.7:5999"}) == [Endpoint("127.0.0.7", 5999)]


@pytest.mark.parametrize(("domain", "address"), [("192.0.2.1", "192.0.2.1"), ("[2001:db8::1]", "2001:db8::1")])
async def test_ip_literal_domains_use_port_5269(domain: str, address: str) -> None:
    assert ip_literal(domain) == address
    assert await endpoints(domain, {}) == [Endpoint(address, 5269)]


def test_names_are_not_ip_literals() -> None:
    assert ip_literal("example.org") is None
    assert ip_literal("[example.org]") is None


async def test_srv_records_in_priority_order_direct_tls_included() -> None:
    async with dns_server(ZONE) as (address, queries):
        found = await endpoints("example.test", {}, dns_servers=[address])
    assert found == [
        Endpoint("tls.example.test", 443, True),
        Endpoint("xmpp.example.test", 5270),
        Endpoint("backup.example.test", 5269),
    ]
    assert sorted(queries) == ["_xmpp-server._tcp.example.test", "_xmpps-server._tcp.example.test"]


async def test_no_records_fall_back_to_the_domain_on_5269() -> None:
    async with dns_server(ZONE) as (address, _):
        assert await endpoints("plain.test", {}, dns_servers=[address]) == [Endpoint("plain.test", 5269)]


async def test_dot_target_means_no_service() -> None:
    async with dns_server(ZONE) as (address, _):
        with pytest.raises(NoService):
            await endpoints("closed.test", {}, dns_servers=[address])

"""SRV lookups (RFC 2782) against a DNS server of the test's own on loopback."""

from __future__ import annotations

from schnack.dns import srv_records
from schnack.xmpp.srv import SrvRecord

from .client.dns import dns_server

ZONE = {
    "_xmpps-client._tcp.example.test": [(5, 10, 5223, "tls.example.test.")],
    "_xmpp-client._tcp.example.test": [(10, 5, 5222, "plain.example.test."), (0, 0, 0, ".")],
}


async def test_records_of_every_name_marked_with_their_kind() -> None:
    names = [("_xmpps-client._tcp.example.test", True), ("_xmpp-client._tcp.example.test", False)]
    async with dns_server(ZONE) as (address, queries):
        found = await srv_records(names, [address])
    assert sorted(queries) == sorted(name for name, _ in names)
    # The trailing dot of a target goes; the root target "." is kept, empty, for no_service().
    assert sorted(found, key=lambda r: r.port) == [
        SrvRecord(0, 0, 0, "", False),
        SrvRecord(10, 5, 5222, "plain.example.test", False),
        SrvRecord(5, 10, 5223, "tls.example.test", True),
    ]


async def test_a_name_without_records_adds_none() -> None:
    names = [("_xmpps-client._tcp.unknown.test", True), ("_xmpps-client._tcp.example.test", True)]
    async with dns_server(ZONE) as (address, queries):
        found = await srv_records(names, [address])
    assert len(queries) == 2
    assert found == [SrvRecord(5, 10, 5223, "tls.example.test", True)]

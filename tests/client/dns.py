"""A DNS server on loopback that answers SRV queries from a table (RFC 1035 §4, RFC 2782).

Enough of the wire format for the client's SRV lookup: one question in, its records out, and
NXDOMAIN for names it does not know.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import cast

SRV = 33
IN = 1

# name -> [(priority, weight, port, target)]
Zone = dict[str, list[tuple[int, int, int, str]]]


def _name(text: str) -> bytes:
    labels = [label for label in text.rstrip(".").split(".") if label]
    return b"".join(bytes([len(label)]) + label.encode() for label in labels) + b"\0"


def _question(packet: bytes) -> tuple[str, int, int]:
    """The queried name, the offset after the question, and the query type."""
    offset = 12
    labels = []
    while packet[offset]:
        length = packet[offset]
        labels.append(packet[offset + 1 : offset + 1 + length].decode())
        offset += 1 + length
    qtype, _qclass = struct.unpack("!HH", packet[offset + 1 : offset + 5])
    return ".".join(labels).lower(), offset + 5, qtype


def answer(zone: Zone, query: bytes) -> bytes:
    (id_,) = struct.unpack("!H", query[:2])
    name, end, qtype = _question(query)
    records = zone.get(name, []) if qtype == SRV else []
    rcode = 0 if name in zone else 3
    header = struct.pack("!HHHHHH", id_, 0x8580 | rcode, 1, len(records), 0, 0)
    body = b""
    for priority, weight, port, target in records:
        rdata = struct.pack("!HHH", priority, weight, port) + _name(target)
        # The owner name points back at the question (offset 12).
        body += struct.pack("!HHHIH", 0xC00C, SRV, IN, 60, len(rdata)) + rdata
    return header + query[12:end] + body


class _Responder(asyncio.DatagramProtocol):
    def __init__(self, zone: Zone) -> None:
        self.zone = zone
        self.transport: asyncio.DatagramTransport | None = None
        self.queries: list[str] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        assert self.transport is not None
        self.queries.append(_question(data)[0])
        self.transport.sendto(answer(self.zone, data), addr)


@asynccontextmanager
async def dns_server(zone: Zone) -> AsyncIterator[tuple[str, list[str]]]:
    """Serve ``zone`` on 127.0.0.1; yield the address for the resolver and the names asked for."""
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(lambda: _Responder(zone), local_addr=("127.0.0.1", 0))
    try:
        port = transport.get_extra_info("sockname")[1]
        yield f"127.0.0.1:{port}", protocol.queries
    finally:
        transport.close()

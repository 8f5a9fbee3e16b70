"""HAProxy's PROXY protocol (versions 1 and 2) on the client listeners, behind a TCP balancer.

A balancer in TCP mode hides the client: every connection comes from its own address, and what
the server keeps per address (the failed-login throttle, the registration limit, the logs) would
count everyone as one. A balancer on an address in ``[listen] proxy_from`` sends a PROXY header
naming the client first, before TLS and before the stream header; the client's address then
stands for the connection's peer everywhere.

Only connections from a trusted address are read for a header, and must send one. Any other
connection is handed to its protocol as it is made, so that it costs nothing past the accept.
On the HTTPS port the header comes before TLS too, so there TLS starts once the header is read,
on asyncio's own TLS layer, as ``loop.create_server(ssl=...)`` would have started it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import math
import ssl
from asyncio import sslproto
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any, cast

from aiohttp import web

log = logging.getLogger(__name__)

# proxy-protocol.txt §2.2: the twelve bytes that start a version 2 header.
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
_V1_PREFIX = b"PROXY "
# §2.1: a version 1 header is at most 107 bytes, its CRLF included.
_V1_MAX = 107
# §2.2: the address block and TLVs after the fixed 16 bytes. The spec sizes a header to fit a
# 536-byte TCP segment; a longer one is refused rather than read on without end.
V2_MAX_PAYLOAD = 2048
# §2.2: the length of the addresses of each family (INET, INET6, UNIX).
_V2_ADDRESS_LEN = {0x1: 12, 0x2: 36, 0x3: 216}

Address = tuple[str, int]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class ProxyHeaderError(Exception):
    """The bytes are no valid PROXY header; ``str()`` is the reason for the log."""


def parse(data: bytes) -> tuple[Address | None, int] | None:
    """Parse the PROXY header at the start of ``data`` (proxy-protocol.txt §2.1, §2.2).

    Returns None while ``data`` may still be the start of a header, else the client's address
    with the number of bytes the header takes. The address is None where the header names none
    the server could use (version 1 UNKNOWN; version 2 LOCAL, UNSPEC or UNIX, a datagram): the
    connection then keeps the proxy's own. Raises :class:`ProxyHeaderError` on anything else.
    """
    if data[:12] == V2_SIGNATURE[:len(data)]:
        return _parse_v2(data)
    if data[:6] == _V1_PREFIX[:len(data)]:
        return _parse_v1(data)
    raise ProxyHeaderError("no PROXY header")


def _parse_v1(data: bytes) -> tuple[Address | None, int] | None:
    """proxy-protocol.txt §2.1: ``PROXY TCP4 src dst sport dport\\r\\n`` in ASCII."""
    end = data.find(b"\r\n", 0, _V1_MAX)
    if end < 0:
        if len(data) >= _V1_MAX:
            raise ProxyHeaderError(f"version 1 header longer than {_V1_MAX} bytes")
        return None
    try:
        fields = data[:end].decode("ascii").split(" ")
    except UnicodeDecodeError:
        raise ProxyHeaderError("version 1 header is not ASCII") from None
    if len(fields) >= 2 and fields[1] == "UNKNOWN":
        return None, end + 2
    if len(fields) != 6 or fields[1] not in ("TCP4", "TCP6"):
        raise ProxyHeaderError("malformed version 1 header")
    version = 4 if fields[1] == "TCP4" else 6
    try:
        source = ipaddress.ip_address(fields[2])
        destination = ipaddress.ip_address(fields[3])
    except ValueError:
        raise ProxyHeaderError("version 1 header with a malformed address") from None
    if source.version != version or destination.version != version:
        raise ProxyHeaderError(f"version 1 header with an address that is not {fields[1]}")
    ports = fields[4:6]
    if not all(p.isascii() and p.isdigit() and int(p) <= 65535 and (p == "0" or p[0] != "0") for p in ports):
        raise ProxyHeaderError("version 1 header with a malformed port")
    return (str(source), int(ports[0])), end + 2


def _parse_v2(data: bytes) -> tuple[Address | None, int] | None:
    """proxy-protocol.txt §2.2: the signature, version and command, family and protocol, the
    length of what follows, then the addresses and TLVs (which the server has no use for)."""
    if len(data) < 16:
        return None
    version_command, family_protocol = data[12], data[13]
    if version_command >> 4 != 2:
        raise ProxyHeaderError(f"unsupported version {version_command >> 4} in a version 2 header")
    command = version_command & 0xF
    if command > 1:
        raise ProxyHeaderError(f"unknown command {command} in a version 2 header")
    length = int.from_bytes(data[14:16], "big")
    if length > V2_MAX_PAYLOAD:
        raise ProxyHeaderError(f"version 2 header longer than {16 + V2_MAX_PAYLOAD} bytes")
    if len(data) < 16 + length:
        return None
    family, protocol = family_protocol >> 4, family_protocol & 0xF
    if family > 3 or protocol > 2:
        raise ProxyHeaderError("unknown address family or protocol in a version 2 header")
    if family and length < _V2_ADDRESS_LEN[family]:
        raise ProxyHeaderError("version 2 header too short for its addresses")
    # §2.2: LOCAL is the proxy speaking for itself (a health check); UNSPEC, UNIX and datagrams
    # name nothing a TCP client could be known by.
    if command == 0 or protocol != 1 or family not in (1, 2):
        return None, 16 + length
    if family == 1:
        source: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.IPv4Address(data[16:20])
        port = int.from_bytes(data[24:26], "big")
    else:
        source = ipaddress.IPv6Address(data[16:32])
        port = int.from_bytes(data[48:50], "big")
    return (str(source), port), 16 + length


def networks(entries: Iterable[str]) -> tuple[Network, ...]:
    """The trusted proxies of ``[listen] proxy_from``: addresses and networks (``10.0.1.0/24``)."""
    return tuple(ipaddress.ip_network(entry, strict=False) for entry in entries)


def trusted(peer: Any, proxies: tuple[Network, ...]) -> bool:
    """Whether ``peer`` (a socket's peername) is one of ``proxies``; an IPv4 peer on a dual-stack
    socket counts by its IPv4 address."""
    if not isinstance(peer, tuple):
        return False
    try:
        address = ipaddress.ip_address(peer[0].partition("%")[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in proxies)


class ProxiedTransport(asyncio.Transport):
    """A transport whose peer is the client a PROXY header named, not the proxy; the proxy's own
    address stays at hand as the extra info ``proxy_peername``."""

    __slots__ = ("_peer", "_transport")

    def __init__(self, transport: asyncio.Transport, peer: Address) -> None:
        super().__init__()
        self._transport = transport
        self._peer = peer

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            return self._peer
        if name == "proxy_peername":
            return self._transport.get_extra_info("peername", default)
        return self._transport.get_extra_info(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._transport.write(data)

    def writelines(self, list_of_data: Iterable[bytes | bytearray | memoryview]) -> None:
        self._transport.writelines(list_of_data)

    def write_eof(self) -> None:
        self._transport.write_eof()

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def close(self) -> None:
        self._transport.close()

    def abort(self) -> None:
        self._transport.abort()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._transport.get_write_buffer_limits()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._transport.set_write_buffer_limits(high, low)


class ProxyAcceptor(asyncio.Protocol):
    """Reads the PROXY header of a connection from a trusted proxy, then hands the connection to
    the protocol ``make`` builds, with the client's address as its peer and the bytes after the
    header as its first input. A connection from anywhere else is handed over as it is made.
    With ``tls`` the protocol gets the connection once TLS is on.

    A trusted connection without a valid header within ``timeout`` seconds is closed: before the
    stream there is no way to send a stream error (RFC 6120 §4.9), so one log line says why.
    """

    def __init__(self, make: Callable[[], asyncio.BaseProtocol], proxies: tuple[Network, ...], timeout: float,
                 tls: ssl.SSLContext | None) -> None:
        self._make = make
        self._proxies = proxies
        self._timeout = timeout
        self._tls = tls
        self._buffer = b""
        self._timer: asyncio.TimerHandle | None = None
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream listener's transport; uvloop's is none of asyncio's classes.
        transport = cast(asyncio.Transport, transport)
        if not trusted(transport.get_extra_info("peername"), self._proxies):
            self._hand_over(transport, transport, b"")
            return
        self._transport = transport
        self._timer = asyncio.get_running_loop().call_later(self._timeout, self._refuse, "no PROXY header in time")

    def data_received(self, data: bytes) -> None:
        transport = self._transport
        if transport is None:
            return
        self._buffer += data
        try:
            parsed = parse(self._buffer)
        except ProxyHeaderError as err:
            self._refuse(str(err))
            return
        if parsed is None:
            return
        client, size = parsed
        self._stop_timer()
        self._transport = None
        rest, self._buffer = self._buffer[size:], b""
        self._hand_over(transport, transport if client is None else ProxiedTransport(transport, client), rest)

    def eof_received(self) -> bool:
        # A proxy's plain TCP health check connects and closes without a byte: not worth a warning.
        self._refuse("the connection closed before its PROXY header", logging.WARNING if self._buffer else logging.DEBUG)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_timer()
        self._transport = None

    def _hand_over(self, transport: asyncio.Transport, seen: asyncio.Transport, rest: bytes) -> None:
        protocol = self._make()
        if self._tls is not None:
            loop = asyncio.get_running_loop()
            handshake = loop.create_future()
            handshake.add_done_callback(partial(_handshake_over, _show(seen.get_extra_info("peername"))))
            protocol = sslproto.SSLProtocol(loop, protocol, self._tls, handshake, server_side=True,
                                            ssl_handshake_timeout=math.ceil(self._timeout))
        transport.set_protocol(protocol)
        protocol.connection_made(seen)
        if not rest:
            return
        if isinstance(protocol, asyncio.BufferedProtocol):
            view = memoryview(rest)
            while view:
                buffer = memoryview(protocol.get_buffer(len(view)))
                size = min(len(buffer), len(view))
                buffer[:size] = view[:size]
                protocol.buffer_updated(size)
                view = view[size:]
        else:
            assert isinstance(protocol, asyncio.Protocol)
            protocol.data_received(rest)

    def _refuse(self, reason: str, level: int = logging.WARNING) -> None:
        transport = self._transport
        if transport is None:
            return
        self._stop_timer()
        self._transport = None
        peer = transport.get_extra_info("peername")
        log.log(level, "closing connection from proxy %s: %s", _show(peer), reason)
        transport.abort()

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def _handshake_over(peer: str, handshake: asyncio.Future[None]) -> None:
    if not handshake.cancelled() and (err := handshake.exception()) is not None:
        log.debug("TLS handshake with %s failed: %s", peer, err)


def _show(peer: Any) -> str:
    return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)


def accepting(make: Callable[[], asyncio.Protocol], proxies: tuple[Network, ...],
              timeout: float) -> Callable[[], asyncio.BaseProtocol]:
    """The protocol factory of a client listener: ``make`` itself when no proxy is trusted."""
    if not proxies:
        return make
    return lambda: ProxyAcceptor(make, proxies, timeout, None)


class ProxiedSite(web.BaseSite):
    """An HTTP(S) listener of aiohttp's that reads PROXY headers from ``proxies`` (with ``tls``,
    before TLS starts)."""

    __slots__ = ("_host", "_port", "_proxies", "_timeout", "_tls")

    def __init__(self, runner: web.BaseRunner, host: str, port: int, *, tls: ssl.SSLContext | None,
                 proxies: tuple[Network, ...], timeout: float) -> None:
        super().__init__(runner)
        self._host = host
        self._port = port
        self._tls = tls
        self._proxies = proxies
        self._timeout = timeout

    @property
    def name(self) -> str:
        return f"{'https' if self._tls else 'http'}://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        make = self._runner.server
        assert make is not None
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: ProxyAcceptor(make, self._proxies, self._timeout, self._tls), self._host, self._port,
            reuse_address=True,
        )

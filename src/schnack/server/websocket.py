"""XMPP over WebSocket (RFC 7395) on the server's HTTP listeners, at ``/xmpp-websocket``.

Each text message holds exactly one element: ``<open/>``, ``<close/>``, or a stanza with its own
``xmlns``. TLS comes from the HTTPS listener; plain HTTP counts as secure only for loopback peers
(a TLS-terminating proxy on the same machine, whether or not it sends a PROXY header). A message beyond the stanza size limit is
refused by the WebSocket layer itself (close code 1009) and ends the stream, as an oversized
stanza does on TCP. Keepalives are WebSocket pings, as whitespace may not go between frames:
the server pings a connection it has not written to for ``limits.keepalive_interval``, and the
client's pings and pongs count as traffic for ``limits.idle_timeout``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections.abc import Awaitable, Coroutine
from typing import TYPE_CHECKING, Any

from aiohttp import WebSocketError, WSCloseCode, WSMsgType, web

from ..xmpp import ns
from ..xmpp.errors import StreamError
from ..xmpp.parser import parse_frame
from ..xmpp.xml import qname
from .background import Background
from .c2s import C2SStream
from .net import LINGER, RateLimiter
from .tls import tls_exporter, tls_unique

if TYPE_CHECKING:
    from .app import Server

log = logging.getLogger(__name__)

PATH = "/xmpp-websocket"
_OPEN = qname(ns.FRAMING, "open")
_CLOSE = qname(ns.FRAMING, "close")


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def secure(request: web.Request) -> bool:
    """Whether ``request`` came over TLS, or over plain HTTP from this machine (a TLS-terminating
    proxy on it), which decides by the hop to this server, also when that proxy names its client
    in a PROXY header (proxy_protocol.py)."""
    if request.transport is not None and request.transport.get_extra_info("ssl_object") is not None:
        return True
    hop = request.transport.get_extra_info("proxy_peername") if request.transport else None
    return _is_loopback(hop[0] if isinstance(hop, tuple) else request.remote or "?")


class WebSocketConnection:
    """A client connection over one WebSocket."""

    websocket = True
    can_starttls = False

    def __init__(self, server: Server, request: web.Request, ws: web.WebSocketResponse) -> None:
        self.server = server
        self.ws = ws
        self._request = request
        self._ssl = request.transport.get_extra_info("ssl_object") if request.transport else None
        self.secure = secure(request)
        peer = request.transport.get_extra_info("peername") if request.transport else None
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else request.remote or "?"
        self.last_read = self.last_write = time.monotonic()
        self.stream: C2SStream | None = None
        self._closing = False
        self._close_started = False
        self._linger: asyncio.TimerHandle | None = None
        # Frames queued and not yet handed to the socket.
        self._tasks = Background(log, "writing to a WebSocket failed")

    def write(self, data: str) -> None:
        if self._closing:
            return
        self.last_write = time.monotonic()
        # send_str is a coroutine only to apply back-pressure; the frame is queued at once.
        self._queue(self._send(self.ws.send_str(data)))

    def _queue(self, frame: Coroutine[Any, Any, object]) -> None:
        self._tasks.spawn(frame)

    async def _send(self, frame: Awaitable[object]) -> None:
        try:
            await frame
        except (ConnectionError, RuntimeError):
            self.close_now()

    def keepalive(self) -> None:
        """RFC 6120 §4.6.1 over RFC 7395: a WebSocket ping, as whitespace may not go between frames."""
        if self._closing:
            return
        self.last_write = time.monotonic()
        self._queue(self._send(self.ws.ping()))

    def close_transport(self) -> None:
        """RFC 7395 §3.6: the stream is closed once the client answers with its ``<close/>``;
        the WebSocket closing handshake starts then, or after :data:`~.net.LINGER` without one.

        Until then the handler keeps reading, so the stream error and ``<close/>`` reach a
        client that is still sending.
        """
        if not self._closing:
            self._closing = True
            self._linger = asyncio.get_running_loop().call_later(LINGER, self.close_now)

    def close_now(self) -> None:
        """Start the WebSocket closing handshake without waiting for the client's ``<close/>``;
        the frames queued before go out first. The handshake waits :data:`~.net.LINGER` at most
        for the client's close frame."""
        self._closing = True
        if self._linger is not None:
            self._linger.cancel()
        if not self._close_started:
            self._close_started = True
            self._queue(self.ws.close())

    def abort(self) -> None:
        """Drop the connection at once, unsent frames and all."""
        self.close_now()
        if self._request.transport is not None:
            self._request.transport.abort()

    async def drain(self) -> None:
        """Wait until the queued frames, and a close asked for, have been handed to the socket."""
        await self._tasks.wait()

    def channel_binding(self, kind: str) -> bytes | None:
        if self._ssl is None:
            return None
        if kind == "tls-server-end-point":
            return self.server.tls.end_point
        if kind == "tls-exporter":
            return tls_exporter(self._ssl, self.server.tls.http_context)
        if kind == "tls-unique":
            return tls_unique(self._ssl)
        return None


# The HTTP application's reference to its server (an AppKey, so aiohttp can type-check it).
SERVER_KEY: web.AppKey[Server] = web.AppKey("schnack")


async def handle(request: web.Request) -> web.StreamResponse:
    """Upgrade to a WebSocket with the ``xmpp`` subprotocol and run the stream on it."""
    server = request.app[SERVER_KEY]
    # ``timeout`` bounds the wait for the client's close frame once the server sent its own.
    # Pings and pongs are answered here rather than by aiohttp, so that they count as traffic.
    ws = web.WebSocketResponse(protocols=("xmpp",), max_msg_size=server.config.limits.max_stanza_size,
                               timeout=LINGER, autoping=False)
    ready = ws.can_prepare(request)
    if not ready.ok:
        return web.Response(status=426, text="This endpoint speaks XMPP over WebSocket (RFC 7395).\n")
    if ready.protocol != "xmpp":
        # RFC 7395 §3.1: without the subprotocol agreed there is no XMPP connection; aiohttp
        # would complete the handshake anyway.
        return web.Response(status=400, text="Ask for the WebSocket subprotocol 'xmpp' (RFC 7395 §3.1).\n")
    await ws.prepare(request)
    conn = WebSocketConnection(server, request, ws)
    stream = conn.stream = C2SStream(server, conn)
    server.connections.add(conn)
    limits = server.config.limits
    bucket = RateLimiter(limits.bytes_per_second, limits.burst_bytes)
    try:
        async for msg in ws:
            if msg.type in (WSMsgType.PING, WSMsgType.PONG):
                conn.last_read = time.monotonic()
                if msg.type == WSMsgType.PING and not await _pong(ws, msg.data, conn.peer):
                    break
                continue
            if msg.type == WSMsgType.BINARY:
                stream.close(StreamError("bad-format", "XMPP frames are text frames"))
                continue
            if msg.type == WSMsgType.ERROR and _too_big(msg.data):
                # aiohttp has already closed with 1009, so the stream error cannot go out; the
                # stream still ends as for an oversized stanza on TCP (RFC 6120 §13.12), not as
                # a lost connection that stream management would keep for a resumption.
                stream.close(StreamError("policy-violation", "the frame exceeds the stanza size limit"))
                break
            if msg.type != WSMsgType.TEXT:
                break
            data = msg.data.encode()
            if stream.closed:
                # RFC 7395 §3.6: the server closed the stream; only the client's <close/> still counts.
                if _is_close(data):
                    break
                continue
            conn.last_read = time.monotonic()
            try:
                el = parse_frame(data, stream.max_stanza_bytes)
                if el.tag == _OPEN:
                    await stream.on_open(el.tag, dict(el.attrib), None)
                elif el.tag == _CLOSE:
                    stream.on_close()
                    break
                elif not stream.header_sent:
                    raise StreamError("not-authorized", "send <open/> first")
                else:
                    await stream.on_element(el)
            except StreamError as err:
                stream.close(err)
            if not stream.closed:
                delay = bucket.consume(len(data))
                if delay:
                    await asyncio.sleep(delay)
    except Exception:
        log.exception("unexpected failure on WebSocket %s", conn.peer)
        stream.close(StreamError("internal-server-error"))
    finally:
        # The session ends while the connection is still counted, so that Server.stop() waits
        # for its session-closed handlers before storage goes.
        try:
            await stream.connection_lost()
        finally:
            # The stream error and <close/> are queued before the close frame, so they are not lost.
            conn.close_now()
            await conn.drain()
            server.connection_ended(conn)
    return ws


async def _pong(ws: web.WebSocketResponse, data: bytes, peer: str) -> bool:
    """RFC 6455 §5.5.3: answer a ping; False if the connection is closing already (the client
    left, or the closing handshake began), which ends it as a lost connection, not a failure."""
    try:
        await ws.pong(data)
    except ConnectionError:
        log.debug("WebSocket %s closed before its ping was answered", peer)
        return False
    return True


def _too_big(error: object) -> bool:
    """Whether aiohttp refused a message for its size (RFC 6455 §7.4.1, 1009)."""
    return isinstance(error, WebSocketError) and error.code == WSCloseCode.MESSAGE_TOO_BIG


def _is_close(data: bytes) -> bool:
    """Whether a frame is the client's ``<close/>`` (RFC 7395 §3.6); anything unparsable is not."""
    try:
        # A <close/> is short; longer frames are not worth parsing just to drop them.
        return parse_frame(data, 1024).tag == _CLOSE
    except StreamError:
        return False

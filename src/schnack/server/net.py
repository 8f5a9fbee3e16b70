"""TCP listeners for client streams: STARTTLS on 5222, direct TLS on 5223 (RFC 6120, XEP-0368).

This and the HTTP/WebSocket listener are the only places that touch sockets. Each connection
runs one reader task over its :class:`~.link.Link`: read, rate-limit, feed the sans-IO parser,
hand events to the stream. A connection idle for :data:`_RELEASE_PARSER_AFTER` lets go of its
parser and parks its reader (the task ends), and its next input starts another.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from ..xmpp.errors import StreamError
from ..xmpp.parser import StanzaReceived, StreamClosed, StreamOpened, StreamParser
from .c2s import C2SStream
from .gather import Gathered
from .link import Link
from .tls import tls_exporter, tls_unique

if TYPE_CHECKING:
    from .app import Server

log = logging.getLogger(__name__)

# How long held-back input may wait for more bytes before it is parsed anyway (see StreamParser.flush).
_FLUSH_DELAY = 0.05
# After this long without input a connection lets go of its XML parser until more comes
# (StreamParser.release): about 16 KiB per idle connection, for some tens of µs to build one again.
# Its reader task ends too (Link.park), and the next input starts another: a task waiting to read
# holds some 1.3 KB, and most connections wait idle.
_RELEASE_PARSER_AFTER = 1.0
# What _receive returns when it parked the reader.
_PARKED = -1
# How long a stream the server closed waits for the client to close its own (RFC 6120 §4.4).
LINGER = 2.0
# How long a closed connection may take to go before it is cut: a TLS client that never answers
# close_notify (link.Link waits for it) would otherwise hold the socket and a server shutdown.
SHUTDOWN_GRACE = 2.0


class RateLimiter:
    """A token bucket over bytes read: a client past its rate is read more slowly, not cut."""

    __slots__ = ("_at", "_level", "burst", "rate")

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self._level = burst
        self._at = time.monotonic()

    def consume(self, n: int) -> float:
        """Take ``n`` bytes; return how long to wait before reading more."""
        now = time.monotonic()
        self._level = min(self.burst, self._level + (now - self._at) * self.rate) - n
        self._at = now
        return -self._level / self.rate if self._level < 0 else 0.0


class TcpConnection:
    """A client connection over TCP (plain until STARTTLS, or TLS from the first byte)."""

    websocket = False

    def __init__(self, server: Server, link: Link, *, direct_tls: bool) -> None:
        self.server = server
        self.link = link
        self.secure = direct_tls
        self.can_starttls = not direct_tls
        peer = link.transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.last_read = self.last_write = time.monotonic()
        self.stream: C2SStream | None = None
        self.parser: StreamParser | None = None
        self.bucket = RateLimiter(server.config.limits.bytes_per_second, server.config.limits.burst_bytes)
        self._closing = False
        self._idle: asyncio.TimerHandle | None = None
        self._linger: asyncio.TimerHandle | None = None
        self._cut: asyncio.TimerHandle | None = None
        self._out = Gathered(self._hand_over)

    def write(self, data: str) -> None:
        """Queue ``data``; what is written in one turn of the event loop goes out together
        (gather.py)."""
        if not self._closing:
            self._out.add(data)

    def keepalive(self) -> None:
        """RFC 6120 §4.6.1: whitespace between top-level elements."""
        self.write(" ")

    def flush(self) -> None:
        """Hand what was written to the transport now."""
        self._out.flush()

    def unwrite_last(self) -> None:
        """Forget the last piece written, if it was not handed to the transport yet."""
        self._out.drop_last()

    def _hand_over(self, data: str) -> None:
        link = self.link
        if link.is_closing():
            return
        link.write(data.encode())
        self.last_write = time.monotonic()
        if link.transport.get_write_buffer_size() > self.server.config.limits.max_write_buffer:
            log.warning("closing %s: it does not read what it is sent", self.peer)
            self.close_now()

    def close_transport(self) -> None:
        """Close once the client closed its stream too, or after :data:`LINGER` (RFC 6120 §4.4).

        Until then the reader keeps reading: closing a socket with unread input makes the
        kernel reset the connection, which can destroy the stream error still on its way.
        """
        if not self._closing:
            self._closing = True
            self._linger = asyncio.get_running_loop().call_later(LINGER, self.close_now)

    def close_now(self) -> None:
        """Close without waiting for the client; what was written is still sent first.

        The connection is cut after :data:`SHUTDOWN_GRACE` if it is not closed by then: a TLS
        client did not answer the close_notify, or a client does not read what is left to send.
        """
        self._closing = True
        if self._linger is not None:
            self._linger.cancel()
        self.flush()
        if self.link.is_closing():
            return
        self.link.close()
        if self._cut is None:
            self._cut = asyncio.get_running_loop().call_later(SHUTDOWN_GRACE, self.abort)

    def abort(self) -> None:
        """Drop the connection at once, unsent output and all."""
        self._closing = True
        self._out.drop()
        self.closed()
        self.link.abort()

    def closed(self) -> None:
        """The transport is gone or going: no timer may touch it any more."""
        for timer in (self._linger, self._cut, self._idle):
            if timer is not None:
                timer.cancel()

    def watch_idle(self) -> None:
        """Release the parser and park the reader once no input came for
        :data:`_RELEASE_PARSER_AFTER` seconds.

        One timer per connection, re-armed only when it fires, so that a busy connection does
        not pay for a timer per read.
        """
        if self._idle is None and not self._closing:
            self._idle = asyncio.get_running_loop().call_later(_RELEASE_PARSER_AFTER, self._release_idle)

    def _release_idle(self) -> None:
        self._idle = None
        if self._closing or self.parser is None:
            return
        wait = self.last_read + _RELEASE_PARSER_AFTER - time.monotonic()
        if wait > 0:
            self._idle = asyncio.get_running_loop().call_later(wait, self._release_idle)
        else:
            self.parser.release()
            # The reader parks (_receive); its state stays here, a half-read stanza's too.
            self.link.interrupt()

    def resume(self, _link: Link) -> Coroutine[Any, Any, None]:
        """Serve on after the reader parked (``Link.park``)."""
        return _serve(self)

    def channel_binding(self, kind: str) -> bytes | None:
        if not self.secure:
            return None
        if kind == "tls-server-end-point":
            return self.server.tls.end_point
        if kind == "tls-exporter":
            return tls_exporter(self.link.ssl_object, self.server.tls.context)
        if kind == "tls-unique":
            return tls_unique(self.link.ssl_object)
        return None


async def _receive(conn: TcpConnection, stream: C2SStream, parser: StreamParser) -> int | None:
    """Read once and hand what the input completes to the stream; return the number of bytes
    read (0 when held-back input was flushed), None once the peer closed (end of input or its
    closing tag), or :data:`_PARKED` once the connection was idle long enough that the reader
    parked (:meth:`TcpConnection.watch_idle`).

    A coroutine of its own so that the input and the stanzas parsed from it are let go when it
    returns: the caller then waits for the next read holding none of them, which on an idle
    connection would be kept for as long as it stays idle.
    """
    buffered = parser.buffered()
    # Without a timeout when nothing is held back: a timer per read would cost every message, and
    # the connection's one idle timer ends the wait instead (Link.interrupt).
    data = await conn.link.read(_FLUSH_DELAY if buffered else None)
    if data == b"":
        return None
    if data is None:
        if not buffered:
            conn.link.park(conn.resume)
            return _PARKED
        events = parser.flush()
    else:
        conn.last_read = time.monotonic()
        events = parser.feed(data)
    for event in events:
        if isinstance(event, StreamClosed):
            stream.on_close()
            return None
        if stream.closed:
            # Closed by earlier input or by another task (a kick): only a close still counts.
            continue
        if isinstance(event, StanzaReceived):
            await stream.on_element(event.element)
        elif isinstance(event, StreamOpened):
            await stream.on_open(event.name, event.attrs, event.default_ns)
        if stream.want_tls and (event is not events[-1] or not parser.only_whitespace_after_last_element()):
            _refuse_tls(conn, stream)
            break
        if stream.want_tls or stream.want_restart:
            # RFC 6120 §5.4.3.3, §6.4.6: whatever followed on the old stream is discarded.
            break
        # XEP-0388 authenticates without a restart: the larger limit applies at once.
        parser.max_stanza_bytes = stream.max_stanza_bytes
    return len(data) if data is not None else 0


def _refuse_tls(conn: TcpConnection, stream: C2SStream) -> None:
    """RFC 6120 §5.4.3.3: the client waits for ``<proceed/>`` before it sends anything more, so
    what came behind ``<starttls/>``, other than whitespace (§11.7), came in the clear and would
    pass for the client's after TLS (the injection of CVE-2011-0411). The stream ends with
    policy-violation before TLS, its ``<proceed/>`` unsent, as on streams between servers
    (s2s/wire.py)."""
    stream.want_tls = False
    # The <proceed/> is the stream's last write; what came before it in this turn (the header
    # and features, for a client that sent its header along) still goes.
    conn.unwrite_last()
    stream.close(StreamError("policy-violation", "input came in the clear behind <starttls/>"))


async def _discard_until_closed(conn: TcpConnection, parser: StreamParser) -> None:
    """Read and drop input until the client closes its stream or the connection (RFC 6120 §4.4).

    The linger timer started by :meth:`TcpConnection.close_transport` ends the wait by closing
    the connection, which ends the read. The input is not parsed, only searched for the closing
    tag, so that a client flooding the stream reads fast enough to get its error before the
    linger ends (:meth:`StreamParser.discard`).
    """
    parser.discard()
    while data := await conn.link.read():
        if parser.feed(data):
            return


async def serve_tcp(server: Server, link: Link, direct_tls: bool) -> None:
    """Run one client connection until it closes (or its reader parks, see :func:`_serve`)."""
    conn = TcpConnection(server, link, direct_tls=direct_tls)
    stream = conn.stream = C2SStream(server, conn)
    server.connections.add(conn)
    conn.parser = StreamParser(stream.max_stanza_bytes)
    await _serve(conn)


async def _serve(conn: TcpConnection) -> None:
    """Read and handle the connection's input until it closes, or until it was idle long enough
    that the reader parks: then this returns with everything kept on ``conn``, and the next
    input (or the end of the connection) starts it again (:meth:`TcpConnection.resume`)."""
    server, link, stream, parser = conn.server, conn.link, conn.stream, conn.parser
    assert stream is not None and parser is not None
    peer_closed = parked = False
    cancelled: BaseException | None = None
    try:
        while not stream.closed:
            conn.watch_idle()
            try:
                read = await _receive(conn, stream, parser)
            except StreamError as err:
                stream.close(err)
                break
            if read is None:
                peer_closed = True
                break
            if read == _PARKED:
                parked = True
                return
            if stream.want_tls:
                stream.want_tls = False
                conn.flush()
                await link.start_tls(server.tls.context)
                conn.secure = True
                stream.want_restart = True
            if stream.want_restart:
                stream.want_restart = False
                parser.close()
                parser = conn.parser = StreamParser(stream.max_stanza_bytes)
            elif read and not stream.closed:
                delay = conn.bucket.consume(read)
                if delay:
                    await asyncio.sleep(delay)
        if not peer_closed:
            await _discard_until_closed(conn, parser)
    except (ConnectionError, ssl.SSLError, OSError) as err:
        log.debug("connection %s lost: %s", conn.peer, err)
    except Exception:
        log.exception("unexpected failure on connection %s", conn.peer)
        stream.close(StreamError("internal-server-error"))
    except BaseException as err:
        # Cancelled: the connection still ends. After the try, not in a finally: see
        # tests/test_compiled.py.
        cancelled = err
    if not parked:
        await _end(conn, stream)
    if cancelled is not None:
        raise cancelled


async def _end(conn: TcpConnection, stream: C2SStream) -> None:
    """The connection is over: close it, end its session, and let it go."""
    conn.close_now()
    if conn.parser is not None:
        conn.parser.close()
    # The session ends while the connection is still counted, so that Server.stop() waits for
    # its session-closed handlers before storage goes.
    failed: BaseException | None = None
    try:
        await stream.connection_lost()
    except BaseException as err:
        # Ended after the try, not in a finally: see tests/test_compiled.py.
        failed = err
    with contextlib.suppress(Exception):
        await conn.link.wait_closed()
    conn.closed()
    conn.server.connection_ended(conn)
    if failed is not None:
        raise failed

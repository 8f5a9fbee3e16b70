"""One TCP connection's bytes in and out, for client and component streams: an asyncio protocol
with what the server needs of asyncio's streams and nothing more.

asyncio's ``StreamReader``, ``StreamReaderProtocol`` and ``StreamWriter`` are three objects with
a ``__dict__`` each, two futures made up front and a deque of drain waiters, about 2.5 KB per
connection that waits idle (docs/benchmarks.md, "Connections without asyncio's streams"). A
:class:`Link` is one object with slots; it makes a future only while something waits (a read, a
drain, a close), and hands the bytes the transport gave it to the reader as they are, without
copying them into a buffer first.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable, Coroutine
from typing import Any, cast

# Past this many unread bytes the transport stops reading from the socket until the reader
# catches up: the kernel's buffers then hold the rest back, and a client sending faster than the
# server parses is slowed down instead of filling the server's memory.
PAUSE_AT = 65536


class Link(asyncio.Protocol):
    """Bytes read from one connection, waited for by one reader; writes go to :attr:`transport`.

    ``serve`` is started as a task once the connection is made (for a TLS listener, once the
    handshake is done), with the link as its argument.
    """

    __slots__ = ("_chunks", "_closed", "_drained", "_eof", "_error", "_lost", "_paused", "_read",
                 "_serve", "_size", "_task", "transport")

    transport: asyncio.Transport  # from connection_made on

    def __init__(self, serve: Callable[[Link], Coroutine[Any, Any, None]]) -> None:
        self._serve = serve
        self._chunks: list[bytes] = []
        self._size = 0
        self._eof = False
        self._error: BaseException | None = None
        self._lost = False
        self._paused = False
        self._read: asyncio.Future[None] | None = None
        self._drained: asyncio.Future[None] | None = None
        self._closed: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        if self._task is None:
            # A reference held here keeps the task alive (the loop holds tasks only weakly).
            self._task = asyncio.get_running_loop().create_task(self._serve(self))

    def data_received(self, data: bytes) -> None:
        self._chunks.append(data)
        self._size += len(data)
        if self._size >= PAUSE_AT and not self._paused:
            self._paused = True
            self.transport.pause_reading()
        self._wake_reader()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake_reader()
        # Keep a plain TCP transport open after the client's half-close, so that what is still
        # to be sent (a closing stream tag) goes out; the reader closes it. TLS has no half-close
        # (asyncio warns of a True there).
        return self.transport.get_extra_info("sslcontext") is None

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof = self._lost = True
        self._error = exc
        self._wake_reader()
        for waiter in (self._drained, self._closed):
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
        self._drained = self._closed = None

    def pause_writing(self) -> None:
        if self._drained is None:
            self._drained = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)
        self._drained = None

    def _wake_reader(self) -> None:
        if self._read is not None and not self._read.done():
            self._read.set_result(None)

    async def read(self, timeout: float | None = None) -> bytes | None:
        """The bytes read since the last call, waiting for some if there are none.

        Returns b"" once the peer closed its side, and None if ``timeout`` seconds passed with
        nothing read. Raises the error the connection was lost with, if it was.
        """
        if not self._chunks and not self._eof:
            loop = asyncio.get_running_loop()
            self._read = loop.create_future()
            timer = loop.call_later(timeout, self._wake_reader) if timeout is not None else None
            try:
                await self._read
            finally:
                self._read = None
                if timer is not None:
                    timer.cancel()
        if self._chunks:
            chunks = self._chunks
            data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            self._chunks = []
            self._size = 0
            if self._paused:
                self._paused = False
                self.transport.resume_reading()
            return data
        if self._error is not None:
            raise self._error
        return b"" if self._eof else None

    async def drain(self) -> None:
        """Wait until the transport takes more writes (it paused them) or the connection is lost."""
        if self._drained is not None:
            await asyncio.shield(self._drained)

    async def wait_closed(self) -> None:
        """Wait until the connection is lost."""
        if self._lost:
            return
        if self._closed is None:
            self._closed = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._closed)

    async def start_tls(self, context: ssl.SSLContext, timeout: float | None = None) -> None:
        """Go over to TLS as the server side, once what was written went to the socket (RFC 6120 §5.4)."""
        await self.drain()
        transport = await asyncio.get_running_loop().start_tls(
            self.transport, self, context, server_side=True, ssl_handshake_timeout=timeout)
        if transport is None:
            raise ConnectionError("the connection closed during the TLS handshake")
        self.transport = transport

"""One TCP connection's bytes in and out, for client and component streams: an asyncio protocol
with what the server needs of asyncio's streams and TLS layer, and nothing more.

asyncio's ``StreamReader``, ``StreamReaderProtocol`` and ``StreamWriter`` are three objects with
a ``__dict__`` each, two futures made up front and a deque of drain waiters, about 2.3 KB per
connection that waits idle. uvloop's TLS layer gives each connection a read buffer of its own
(256 KiB of address space, of which the pages its reads touched stay resident) and two more
objects; TLS on memory BIOs over a plain transport, which reads into the loop's one shared
buffer, needs about 8 KiB less per idle connection (docs/benchmarks.md, "Connections without
asyncio's streams, and TLS on memory BIOs"). A :class:`Link` is one object with slots; it makes a
future only while something waits (a read, a close, a STARTTLS handshake), hands the
reader the bytes it got as they are, and runs TLS (RFC 6120 §5, XEP-0368) on an
``ssl.SSLObject`` of its own.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable, Coroutine
from typing import Any, cast

from ..xmpp.xml import WHITESPACE

# Past this many unread bytes the transport stops reading from the socket until the reader
# catches up: the kernel's buffers then hold the rest back, and a client sending faster than the
# server parses is slowed down instead of filling the server's memory.
PAUSE_AT = 65536
# The most plaintext taken from TLS in one call (a TLS record holds at most 16 KiB).
_TLS_READ = 65536


class Link(asyncio.Protocol):
    """Bytes read from one connection, waited for by one reader; written with :meth:`write`.

    ``serve`` is started as a task once the connection is made, with the link as its argument.
    With ``tls`` the connection is TLS from its first byte (XEP-0368) and ``serve`` starts once
    the handshake is done; a handshake that fails or takes longer than ``handshake_timeout``
    closes the connection without ever serving it. A reader with nothing to do may :meth:`park`
    instead of waiting in a task.
    """

    __slots__ = ("_chunks", "_closed", "_direct_tls", "_eof", "_error", "_handshake",
                 "_handshake_timeout", "_handshaking", "_lost", "_parked", "_paused", "_read", "_serve",
                 "_shutting_down", "_size", "_skip_space", "_task", "_timer", "_tls", "_tls_in", "_tls_out",
                 "transport")

    transport: asyncio.Transport  # from connection_made on

    def __init__(self, serve: Callable[[Link], Coroutine[Any, Any, None]], tls: ssl.SSLContext | None = None,
                 handshake_timeout: float | None = None) -> None:
        self._serve = serve
        self._direct_tls = tls
        self._handshake_timeout = handshake_timeout
        self._chunks: list[bytes] = []
        self._size = 0
        self._eof = False
        self._error: BaseException | None = None
        self._lost = False
        self._paused = False
        self._parked = False
        self._read: asyncio.Future[None] | None = None
        self._closed: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._tls: ssl.SSLObject | None = None
        self._tls_in: ssl.MemoryBIO | None = None
        self._tls_out: ssl.MemoryBIO | None = None
        self._handshaking = False
        self._handshake: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._shutting_down = False
        self._skip_space = False

    # -- the transport's side ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        if self._direct_tls is not None:
            self._begin_tls(self._direct_tls, self._handshake_timeout)
            self._direct_tls = None
        else:
            self._start_serving()

    def data_received(self, data: bytes) -> None:
        if self._tls is None:
            self._take(data)
            return
        if self._skip_space:
            self._to_tls(data)
        else:
            assert self._tls_in is not None
            self._tls_in.write(data)
        if self._handshaking and not self._step_handshake():
            return
        if self._shutting_down:
            self._step_shutdown()
        else:
            self._read_tls()

    def eof_received(self) -> bool:
        self._eof = True
        if self._handshaking:
            self._handshake_over(ConnectionResetError("the connection closed during the TLS handshake"))
        elif self._shutting_down:
            self.transport.close()
        self._wake_reader()
        # Keep the transport open after the client's half-close, so that what is still to be
        # sent (a closing stream tag, TLS's close_notify) goes out; the reader closes it.
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof = self._lost = True
        self._error = exc
        if self._handshaking:
            self._handshake_over(exc or ConnectionResetError("the connection closed during the TLS handshake"))
        self._wake_reader()
        if self._closed is not None and not self._closed.done():
            self._closed.set_result(None)
        self._closed = None

    # -- the reader's and writer's side --------------------------------------------------------

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

    def interrupt(self) -> None:
        """End a waiting :meth:`read` now, as if its timeout had passed."""
        if self._read is not None and not self._read.done():
            self._read.set_result(None)

    def park(self, serve: Callable[[Link], Coroutine[Any, Any, None]]) -> None:
        """Serve on later as a new task of ``serve``, started by the next input, the end of the
        input or the loss of the connection; the calling task is to end right after this.

        A task waiting in :meth:`read` holds its coroutines' frames, the read's future and the
        task itself, about 1.3 KB of an idle connection's memory; a parked reader holds none.
        """
        self._serve = serve
        self._task = None
        self._parked = True

    def write(self, data: bytes) -> None:
        """Send ``data``, encrypted once TLS is on. Nothing is sent while the TLS handshake runs
        (before it, a stream has no session that anything could be routed to) or once closing."""
        if self._tls is None:
            self.transport.write(data)
        elif not self._handshaking and not self._shutting_down:
            self._tls.write(data)
            self._flush_tls()

    def is_closing(self) -> bool:
        return self._shutting_down or self.transport.is_closing()

    def close(self) -> None:
        """Close once what was written is sent; over TLS, after a close_notify (RFC 8446 §6.1)."""
        if self._tls is None or self._handshaking:
            self.transport.close()
        elif not self._shutting_down:
            self._shutting_down = True
            self._step_shutdown()

    def abort(self) -> None:
        """Drop the connection at once, unsent output and all."""
        self.transport.abort()

    @property
    def ssl_object(self) -> ssl.SSLObject | None:
        """The TLS connection, once TLS is on (for channel binding)."""
        return self._tls

    async def wait_closed(self) -> None:
        """Wait until the connection is lost."""
        if self._lost:
            return
        if self._closed is None:
            self._closed = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._closed)

    async def start_tls(self, context: ssl.SSLContext, timeout: float | None = None) -> None:
        """Go over to TLS as the server side, after what was written before (RFC 6120 §5.4.3.3);
        return once the handshake is done, or raise why it failed.

        TLS goes over the same transport, whose buffer keeps what was written before (a
        ``<proceed/>``) ahead of the handshake: nothing needs to wait for it to drain.
        """
        if self._eof:
            # No handshake can come any more, and nothing would end the wait for it.
            raise ConnectionResetError("the connection closed before the TLS handshake")
        # Whitespace may come between top-level elements (RFC 6120 §11.7): a keepalive the client
        # sent before <proceed/> reached it comes ahead of its first handshake bytes, and is no
        # TLS record (whose first byte, the content type, is never whitespace).
        self._skip_space = True
        self._handshake = asyncio.get_running_loop().create_future()
        self._begin_tls(context, timeout)
        try:
            await self._handshake
        finally:
            self._handshake = None

    # -- TLS -----------------------------------------------------------------------------------

    def _begin_tls(self, context: ssl.SSLContext, timeout: float | None) -> None:
        self._tls_in = ssl.MemoryBIO()
        self._tls_out = ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._tls_in, self._tls_out, server_side=True)
        self._handshaking = True
        if timeout is not None:
            self._timer = asyncio.get_running_loop().call_later(
                timeout, self._handshake_over, TimeoutError("the TLS handshake took too long"))
        # What came after the request to start TLS, unread, is the client's first handshake bytes.
        chunks, self._chunks, self._size = self._chunks, [], 0
        for chunk in chunks:
            self._to_tls(chunk)
        if chunks:
            self.data_received(b"")

    def _to_tls(self, data: bytes) -> None:
        """Hand input to TLS; after STARTTLS, without the whitespace ahead of its first record."""
        assert self._tls_in is not None
        if self._skip_space:
            data = data.lstrip(WHITESPACE)
            if not data:
                return
            self._skip_space = False
        self._tls_in.write(data)

    def _step_handshake(self) -> bool:
        """Take the handshake as far as the input allows; True once it is done."""
        assert self._tls is not None
        try:
            self._tls.do_handshake()
        except ssl.SSLWantReadError:
            self._flush_tls()
            return False
        except ssl.SSLError as err:
            self._flush_tls()  # the alert that tells the client why
            self._handshake_over(err)
            return False
        self._flush_tls()  # the handshake's last flight and TLS 1.3's session tickets
        self._handshake_over(None)
        return True

    def _handshake_over(self, error: BaseException | None) -> None:
        if not self._handshaking:
            return
        self._handshaking = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        waiter = self._handshake
        if waiter is not None:
            # STARTTLS: the reader waits in start_tls and handles a failure.
            if not waiter.done():
                if error is None:
                    waiter.set_result(None)
                else:
                    waiter.set_exception(error)
        elif error is None:
            self._start_serving()
        else:
            self.transport.close()

    def _read_tls(self) -> None:
        tls, incoming = self._tls, self._tls_in
        assert tls is not None and incoming is not None
        try:
            while chunk := tls.read(_TLS_READ):
                self._take(chunk)
                # Stop once nothing is left, rather than on the SSLWantReadError that one more
                # read would raise: that costs as much again as the read (about 1 µs).
                if not incoming.pending and not tls.pending():
                    break
            else:
                # Nothing read, and no SSLWantReadError: the client's close_notify, the end of
                # its input.
                self._eof = True
                self._wake_reader()
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLError as err:
            self._error = err
            self._eof = True
            self._wake_reader()
            self.transport.abort()
            return
        self._flush_tls()

    def _step_shutdown(self) -> None:
        """Send close_notify, then close once the client's came or its input ended."""
        assert self._tls is not None
        try:
            self._tls.unwrap()
        except ssl.SSLWantReadError:
            self._flush_tls()
            if not self._eof:
                return
        except ssl.SSLError:
            # Input that was not a close_notify (more application data, a broken record): the
            # connection is going anyway.
            pass
        self._flush_tls()
        self.transport.close()

    def _flush_tls(self) -> None:
        assert self._tls_out is not None
        if self._tls_out.pending:
            self.transport.write(self._tls_out.read())

    # -- helpers -------------------------------------------------------------------------------

    def _start_serving(self) -> None:
        if self._task is None:
            # A reference held here keeps the task alive (the loop holds tasks only weakly).
            self._task = asyncio.get_running_loop().create_task(self._serve(self))

    def _take(self, data: bytes) -> None:
        self._chunks.append(data)
        self._size += len(data)
        if self._size >= PAUSE_AT and not self._paused:
            self._paused = True
            self.transport.pause_reading()
        self._wake_reader()

    def _wake_reader(self) -> None:
        if self._read is not None:
            if not self._read.done():
                self._read.set_result(None)
        elif self._parked:
            self._parked = False
            self._start_serving()

"""A connection's bytes in and out (schnack.server.link) on real sockets, under asyncio's own
event loop and under uvloop (the server's)."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import struct
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
import uvloop

from schnack.server import link as link_module
from schnack.server.link import Link
from schnack.server.tls import make_self_signed

LOOPS = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


def run_on(loop: str, main: Coroutine[Any, Any, None]) -> None:
    """Run ``main`` to its end on a new event loop of the kind named, for at most 10 s."""
    with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
        runner.run(asyncio.wait_for(main, 10))


def on_both_loops(test: Callable[[], Coroutine[Any, Any, None]]) -> Callable[[str], None]:
    @pytest.mark.parametrize("loop", sorted(LOOPS))
    def run(loop: str) -> None:
        run_on(loop, test())

    run.__name__ = test.__name__
    run.__doc__ = test.__doc__
    return run


async def serving(serve: Callable[[Link], Awaitable[None]]) -> tuple[asyncio.Server, int]:
    """A listener on a free loopback port whose connections are served by ``serve``."""

    async def run(link: Link) -> None:
        await serve(link)

    server = await asyncio.get_running_loop().create_server(lambda: Link(run), "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


@on_both_loops
async def test_reads_what_was_sent_then_the_end_and_still_writes_after_a_half_close() -> None:
    got: list[bytes | None] = []

    async def serve(link: Link) -> None:
        while data := await link.read():
            got.append(data)
        got.append(await link.read())
        link.transport.write(b"</stream:stream>")
        link.transport.close()

    server, port = await serving(serve)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"<stream>")
    await writer.drain()
    await asyncio.sleep(0.05)
    writer.write(b"<a/>")
    writer.write_eof()
    assert await reader.read() == b"</stream:stream>"
    assert b"".join(d for d in got if d) == b"<stream><a/>"
    assert got[-1] == b""
    writer.close()
    server.close()


@on_both_loops
async def test_a_read_with_a_timeout_returns_none_when_nothing_came() -> None:
    results: asyncio.Queue[bytes | None] = asyncio.Queue()

    async def serve(link: Link) -> None:
        await results.put(await link.read(0.05))
        await results.put(await link.read(5))

    server, port = await serving(serve)
    _reader, writer = await asyncio.open_connection("127.0.0.1", port)
    assert await results.get() is None
    writer.write(b"late")
    assert await results.get() == b"late"
    writer.close()
    server.close()


async def paused(link: Link) -> None:
    """Until ``link``'s transport stops reading. Nothing tells of it, and a Link, compiled
    (setup.py), cannot be subclassed to tell: looked at every few milliseconds."""
    while link.transport.is_reading():  # noqa: ASYNC110
        await asyncio.sleep(0.005)


@on_both_loops
async def test_unread_input_past_the_limit_pauses_reading_until_it_is_read() -> None:
    links: asyncio.Queue[Link] = asyncio.Queue()
    done = asyncio.Event()

    async def serve(link: Link) -> None:
        await links.put(link)
        await done.wait()

    server = await asyncio.get_running_loop().create_server(lambda: Link(serve), "127.0.0.1", 0)
    _reader, writer = await asyncio.open_connection("127.0.0.1", server.sockets[0].getsockname()[1])
    link = await links.get()
    sent = b"x" * (3 * link_module.PAUSE_AT)
    writer.write(sent)
    await asyncio.wait_for(paused(link), 10)
    got = await link.read()
    assert got is not None and link_module.PAUSE_AT <= len(got) < len(sent)
    assert link.transport.is_reading()
    while len(got) < len(sent):
        more = await link.read()
        assert more
        got += more
    assert got == sent
    done.set()
    writer.close()
    server.close()


@on_both_loops
async def test_a_reset_connection_gives_its_error_after_what_was_read_before() -> None:
    outcome: asyncio.Queue[object] = asyncio.Queue()

    async def serve(link: Link) -> None:
        await outcome.put(await link.read())
        try:
            await outcome.put(await link.read())
        except ConnectionError as err:
            await outcome.put(err)
        await link.wait_closed()
        await outcome.put("closed")

    server, port = await serving(serve)
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(b"<presence/>")
    assert await outcome.get() == b"<presence/>"
    # An abortive close: the peer's kernel answers with a reset (RST), not a FIN.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
    assert isinstance(await outcome.get(), ConnectionResetError)
    assert await outcome.get() == "closed"
    server.close()


@on_both_loops
async def test_interrupt_ends_a_waiting_read_with_none() -> None:
    outcome: asyncio.Queue[object] = asyncio.Queue()
    served: asyncio.Queue[Link] = asyncio.Queue()

    async def serve(link: Link) -> None:
        link.interrupt()  # no read waits: nothing happens
        await served.put(link)
        await outcome.put(await link.read())
        await outcome.put(await link.read())

    server, port = await serving(serve)
    _reader, writer = await asyncio.open_connection("127.0.0.1", port)
    link = await served.get()
    await asyncio.sleep(0.05)  # the read waits
    link.interrupt()
    assert await outcome.get() is None
    writer.write(b"<a/>")
    assert await outcome.get() == b"<a/>"
    writer.close()
    server.close()


@on_both_loops
async def test_a_parked_reader_is_started_again_by_input_by_its_end_and_by_a_reset() -> None:
    """After ``park`` the reader's task ends; the next input starts the serve it named as a new
    task, and so do the end of the input and the loss of the connection (or the connection
    would never be seen closed)."""
    outcome: asyncio.Queue[object] = asyncio.Queue()
    tasks: list[asyncio.Task[Any] | None] = []

    async def serve(link: Link) -> None:
        tasks.append(asyncio.current_task())
        try:
            data = await link.read()
        except ConnectionError as err:
            await outcome.put(err)
            return
        await outcome.put(data)
        if data:
            link.park(serve)

    server, port = await serving(serve)
    _reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for data in (b"<one/>", b"<two/>"):
        writer.write(data)
        assert await outcome.get() == data
    writer.write_eof()
    assert await outcome.get() == b""
    assert len(tasks) == 3 and len(set(map(id, tasks))) == 3, "each wake-up runs a task of its own"
    writer.close()

    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(b"<presence/>")
    assert await outcome.get() == b"<presence/>"
    await asyncio.sleep(0.05)  # parked
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
    assert isinstance(await outcome.get(), ConnectionResetError)
    server.close()


@on_both_loops
async def test_wait_closed_returns_once_the_transport_is_gone() -> None:
    states: asyncio.Queue[str] = asyncio.Queue()

    async def serve(link: Link) -> None:
        link.transport.close()
        await link.wait_closed()
        await states.put("closed")
        await link.wait_closed()
        await states.put("closed again")

    server, port = await serving(serve)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    assert await states.get() == "closed"
    assert await states.get() == "closed again"
    assert await reader.read() == b""
    writer.close()
    server.close()


def tls_contexts(directory: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with a self-signed certificate, and a client context that takes it."""
    make_self_signed(["localhost"], directory / "cert.pem", directory / "key.pem")
    server_side = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_side.load_cert_chain(directory / "cert.pem", directory / "key.pem")
    client_side = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_side.check_hostname = False
    client_side.verify_mode = ssl.CERT_NONE
    return server_side, client_side


def test_a_tls_client_closing_ends_the_input_quietly(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    server_side, client_side = tls_contexts(tmp_path)

    async def run() -> None:
        got: asyncio.Queue[bytes | None] = asyncio.Queue()

        async def serve(link: Link) -> None:
            while data := await link.read():
                await got.put(data)
            await got.put(data)

        server = await asyncio.get_running_loop().create_server(
            lambda: Link(serve, server_side), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        _reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_side)
        writer.write(b"<presence/>")
        assert await got.get() == b"<presence/>"
        writer.close()
        assert await got.get() == b""
        server.close()

    for loop in sorted(LOOPS):
        with caplog.at_level(logging.WARNING):
            run_on(loop, run())
        assert not [r for r in caplog.records if "eof_received" in r.getMessage()], loop


@pytest.mark.parametrize("loop", sorted(LOOPS))
def test_tls_from_the_first_byte_serves_after_the_handshake_and_closes_with_close_notify(
    tmp_path: Path, loop: str
) -> None:
    server_side, client_side = tls_contexts(tmp_path)

    async def run() -> None:
        async def serve(link: Link) -> None:
            assert link.ssl_object is not None and link.ssl_object.version() is not None
            data = await link.read()
            assert data is not None
            link.write(data.upper())
            link.close()
            assert link.is_closing()

        def client(port: int) -> list[bytes]:
            # Blocking, with ragged EOFs not suppressed: a TCP close without TLS's close_notify
            # raises SSLEOFError here instead of reading as the end.
            with socket.create_connection(("127.0.0.1", port)) as raw, client_side.wrap_socket(
                raw, suppress_ragged_eofs=False
            ) as sock:
                sock.sendall(b"<presence/>")
                got = [sock.recv(100)]
                got.append(sock.recv(100))
                return got

        server = await asyncio.get_running_loop().create_server(lambda: Link(serve, server_side), "127.0.0.1", 0)
        assert await asyncio.to_thread(client, server.sockets[0].getsockname()[1]) == [b"<PRESENCE/>", b""]
        server.close()

    run_on(loop, run())


@pytest.mark.parametrize("loop", sorted(LOOPS))
def test_a_failed_or_stalled_tls_handshake_closes_without_serving(tmp_path: Path, loop: str) -> None:
    server_side, _client_side = tls_contexts(tmp_path)

    async def run() -> None:
        served: list[Link] = []

        async def serve(link: Link) -> None:
            served.append(link)

        server = await asyncio.get_running_loop().create_server(
            lambda: Link(serve, server_side, 0.2), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        # Not TLS at all: the server answers with an alert and closes.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"<?xml version='1.0'?><stream:stream to='localhost'>")
        answer = await reader.read()
        assert answer[:1] in (b"", b"\x15")  # nothing, or a TLS alert record
        writer.close()
        # Nothing at all: closed once the handshake timeout passes.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await reader.read() == b""
        writer.close()
        assert served == []
        server.close()

    run_on(loop, run())


@pytest.mark.parametrize("loop", sorted(LOOPS))
def test_starttls_goes_over_to_tls_and_reads_on(tmp_path: Path, loop: str) -> None:
    server_side, client_side = tls_contexts(tmp_path)

    async def run() -> None:
        outcome: asyncio.Queue[object] = asyncio.Queue()

        async def serve(link: Link) -> None:
            assert await link.read() == b"<starttls/>"
            assert link.ssl_object is None
            link.write(b"<proceed/>")
            try:
                await link.start_tls(server_side, 5)
            except ConnectionError as err:
                await outcome.put(err)
                return
            data = await link.read()
            assert data is not None and link.ssl_object is not None
            link.write(data.upper())
            await outcome.put(data)

        server = await asyncio.get_running_loop().create_server(lambda: Link(serve), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"<starttls/>")
        assert await reader.readexactly(len(b"<proceed/>")) == b"<proceed/>"
        await writer.start_tls(client_side)
        writer.write(b"<stream/>")
        assert await reader.readexactly(len(b"<STREAM/>")) == b"<STREAM/>"
        assert await outcome.get() == b"<stream/>"
        writer.close()
        # A client that goes after <proceed/>: start_tls fails with a connection error.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"<starttls/>")
        assert await reader.readexactly(len(b"<proceed/>")) == b"<proceed/>"
        writer.close()
        assert isinstance(await outcome.get(), ConnectionError)
        server.close()

    run_on(loop, run())


@pytest.mark.parametrize("loop", sorted(LOOPS))
def test_starttls_after_the_client_left_fails_at_once(tmp_path: Path, loop: str) -> None:
    server_side, _client_side = tls_contexts(tmp_path)

    async def run() -> None:
        outcome: asyncio.Queue[object] = asyncio.Queue()

        async def serve(link: Link) -> None:
            assert await link.read() == b"<starttls/>"
            assert await link.read() == b""
            try:
                await link.start_tls(server_side)
            except ConnectionError as err:
                await outcome.put(err)

        server = await asyncio.get_running_loop().create_server(lambda: Link(serve), "127.0.0.1", 0)
        _reader, writer = await asyncio.open_connection("127.0.0.1", server.sockets[0].getsockname()[1])
        writer.write(b"<starttls/>")
        writer.write_eof()
        assert isinstance(await outcome.get(), ConnectionError)
        writer.close()
        server.close()

    run_on(loop, run())

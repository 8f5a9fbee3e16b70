"""XEP-0199 keepalive: a link that goes silent is dropped and the client reconnects.

A proxy between client and server stops passing bytes, as a dead mobile link or a NAT that
forgot the connection would: the client's ping goes unanswered, and it connects again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from schnack.client import Client, Connected, Disconnected
from schnack.server.app import Server

from ..conftest import PASSWORD, next_of


class Proxy:
    """Forwards TCP connections to ``target``; while frozen, holds every byte back."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.thawed = asyncio.Event()
        self.thawed.set()
        self.port = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                await self.thawed.wait()
                writer.write(data)
        writer.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        for task in (self._pump(reader, up_writer), self._pump(up_reader, writer)):
            running = asyncio.create_task(task)
            self._tasks.add(running)
            running.add_done_callback(self._tasks.discard)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Proxy]:
        server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        try:
            yield self
        finally:
            server.close()
            for task in list(self._tasks):
                task.cancel()
            await server.wait_closed()


async def test_a_silent_link_is_dropped_and_replaced(chat_server: Server) -> None:
    async with Proxy(chat_server.bound["c2s"][0]).running() as proxy:
        client = Client("alice@localhost/phone", PASSWORD, host="127.0.0.1", port=proxy.port, verify=False,
                        keepalive=0.2, backoff=(0.05, 0.2))
        async with client:
            events = client.events()
            proxy.thawed.clear()
            lost = await next_of(events)
            assert lost == Disconnected("no answer to a ping for 0.2 s", reconnecting=True)
            proxy.thawed.set()
            assert await next_of(events) == Connected(client.jid)
            assert client.connected

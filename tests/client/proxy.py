"""A TCP relay between a client and a server whose links a test cuts, silences or refuses.

The client's TLS runs through it untouched (STARTTLS or direct TLS): to both ends it is only a
network that can fail the way real ones do. Given a TLS context it terminates TLS instead, as a
reverse proxy in front of a plain HTTP listener does.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl


class Proxy:
    """Relays 127.0.0.1:``port`` to ``host``:``target``."""

    def __init__(self, host: str, target: int, tls: ssl.SSLContext | None = None) -> None:
        self.host = host
        self.target = target
        self.tls = tls
        self.port = 0
        # New connections are closed at once (the server looks unreachable).
        self.refusing = False
        # What the client sends goes nowhere, as into a link that died without telling anyone.
        self.swallowing = False
        # So many of the next connections are dropped at both ends when the server's first
        # bytes come: its answer is lost, as when a mobile link dies while the answer is on its way.
        self.losing_answers = 0
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._pairs: list[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> Proxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0, ssl=self.tls)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refusing:
            writer.transport.abort()
            return
        try:
            upstream_reader, upstream = await asyncio.open_connection(self.host, self.target)
        except OSError:
            writer.transport.abort()
            return
        self.connections += 1
        self._pairs.append((writer, upstream))
        for task in (self._pump(reader, upstream, from_client=True), self._pump(upstream_reader, writer, from_client=False)):
            running = asyncio.ensure_future(task)
            self._tasks.add(running)
            running.add_done_callback(self._tasks.discard)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, from_client: bool) -> None:
        try:
            while data := await reader.read(65536):
                if from_client and self.swallowing:
                    continue
                if not from_client and self.losing_answers:
                    self.losing_answers -= 1
                    break
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        writer.transport.abort()

    def cut(self) -> None:
        """Drop every relayed connection at both ends, without a word to either."""
        pairs, self._pairs = self._pairs, []
        for client, server in pairs:
            client.transport.abort()
            server.transport.abort()

    async def stop(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

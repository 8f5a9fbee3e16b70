"""An external component (XEP-0114) held in memory: the real ComponentStream without the socket."""

from __future__ import annotations

import asyncio
from xml.etree.ElementTree import Element

from schnack.server.app import Server
from schnack.server.component import ACCEPT, ComponentStream, handshake_digest
from schnack.xmpp import ns
from schnack.xmpp.errors import StreamError
from schnack.xmpp.parser import StanzaReceived, StreamClosed, StreamOpened, StreamParser, parse_frame
from schnack.xmpp.xml import qname

STREAM = qname(ns.STREAMS, "stream")
STREAM_ERROR = qname(ns.STREAMS, "error")


class ComponentConnection:
    """Reads what the server writes to the component as a stream, element by element."""

    peer = "127.0.0.1:50000"

    def __init__(self) -> None:
        self._parser = StreamParser(10**8)
        self.header: dict[str, str] | None = None
        self.out: list[Element] = []
        self.stream_closed = False
        self.closed = False
        self.arrived = asyncio.Event()

    def write(self, data: str) -> None:
        for event in self._parser.feed(data.encode()) + self._parser.flush():
            if isinstance(event, StreamOpened):
                self.header = event.attrs
            elif isinstance(event, StanzaReceived):
                self.out.append(event.element)
            elif isinstance(event, StreamClosed):
                self.stream_closed = True
        self.arrived.set()

    def close_transport(self) -> None:
        self.closed = True


class MemoryComponent:
    """A component stream driven by the test; what it is sent is in the component namespace."""

    def __init__(self, server: Server, conn: ComponentConnection, stream: ComponentStream) -> None:
        self.server = server
        self.conn = conn
        self.stream = stream

    async def send(self, xml: str | Element) -> None:
        """Send an element as the component would; a stream error closes the stream as on a socket."""
        el = xml if isinstance(xml, Element) else parse_frame(xml.encode(), 10**8)
        try:
            await self.stream.on_element(el)
        except StreamError as err:
            self.stream.close(err)

    def take(self) -> list[Element]:
        out, self.conn.out = self.conn.out, []
        self.conn.arrived.clear()
        return out

    async def expect(self, count: int = 1, timeout: float = 10.0) -> list[Element]:
        """Wait until at least ``count`` elements arrived, then take them."""
        async with asyncio.timeout(timeout):
            while len(self.conn.out) < count:
                self.conn.arrived.clear()
                await self.conn.arrived.wait()
        return self.take()

    def stream_error(self) -> str:
        """The condition of the stream error the server closed the stream with."""
        errors = [el for el in self.conn.out if el.tag == STREAM_ERROR]
        assert errors and self.conn.stream_closed and self.conn.closed
        return next(c.tag.rpartition("}")[2] for c in errors[-1] if c.tag != qname(ns.STREAM_ERRORS, "text"))

    def leave(self) -> None:
        """The component closes its stream."""
        self.stream.on_close()


async def open_component(server: Server, domain: str, secret: str | None = None) -> MemoryComponent:
    """Open a component stream for ``domain``; with a secret, also do the handshake (§3)."""
    conn = ComponentConnection()
    stream = ComponentStream(server, server.components, conn)
    component = MemoryComponent(server, conn, stream)
    try:
        await stream.on_open(STREAM, {"to": domain}, ACCEPT)
    except StreamError as err:
        stream.close(err)
        return component
    if secret is not None:
        await component.send(f"<handshake xmlns='{ACCEPT}'>{handshake_digest(stream.id, secret)}</handshake>")
    return component


def accept(kind: str) -> str:
    """The name of a stanza as a component reads it."""
    return qname(ACCEPT, kind)

"""Test helpers: a server with in-memory client streams, and a real server on ephemeral ports.

In-memory streams run the real C2SStream (negotiation after SASL, stanza checks, routing); only
the socket and the SASL exchange are left out, so module tests are XML in, XML out.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from xml.etree.ElementTree import Element

from schnack.server.app import Server
from schnack.server.c2s import C2SStream
from schnack.server.config import build
from schnack.xmpp import ns
from schnack.xmpp.errors import StreamError
from schnack.xmpp.parser import parse_frame
from schnack.xmpp.sasl import derive_credentials
from schnack.xmpp.xml import serialize

DOMAIN = "localhost"


def make_config(tmp_path: Path, **overrides: Any) -> Any:
    """A configuration for tests: everything on 127.0.0.1 ephemeral ports, data in tmp_path."""
    data: dict[str, Any] = {
        "domains": [DOMAIN],
        "data_dir": str(tmp_path / "data"),
        "listen": {
            "c2s": ["127.0.0.1:0"],
            "c2s_tls": ["127.0.0.1:0"],
            "http": ["127.0.0.1:0"],
            "https": ["127.0.0.1:0"],
        },
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return build(data, tmp_path)


class MemoryConnection:
    """A Connection whose output is kept as parsed elements."""

    websocket = True  # one element per write, each with its own xmlns: easy to parse back
    can_starttls = False
    secure = True

    def __init__(self, peer: str = "127.0.0.1:40000") -> None:
        self.peer = peer
        self.out: list[Element] = []
        self.closed = False
        self.arrived = asyncio.Event()

    def write(self, data: str) -> None:
        self.out.append(parse_frame(data.encode(), 10**8))
        self.arrived.set()

    def close_transport(self) -> None:
        self.closed = True

    def channel_binding(self, kind: str) -> bytes | None:
        return None


class Client:
    """An authenticated, bound client stream held in memory."""

    def __init__(self, server: Server, stream: C2SStream, conn: MemoryConnection) -> None:
        self.server = server
        self.stream = stream
        self.conn = conn

    @property
    def jid(self) -> str:
        assert self.stream.session is not None
        return str(self.stream.session.jid)

    async def send(self, xml: str | Element, *, finished: bool = True) -> None:
        """Send a stanza as the client would; stream errors close the stream as on a socket.

        Returns once the stream handled it, and unless ``finished`` is false, once its routing
        finished too (the writes it deferred, such as its archive copies, are done): as for a
        client that waits for each acknowledgement, the tests then see storage as it ends up.
        """
        el = xml if isinstance(xml, Element) else parse_frame(
            xml.encode() if "xmlns=" in xml.split(">", 1)[0] else _with_client_ns(xml).encode(), 10**8
        )
        try:
            await self.stream.on_element(el)
            if finished:
                await self.stream.finished()
        except StreamError as err:
            self.stream.close(err)
            await self.stream.connection_lost()

    def take(self) -> list[Element]:
        """Everything sent to the client since the last take()."""
        out, self.conn.out = self.conn.out, []
        self.conn.arrived.clear()
        return out

    async def expect(self, count: int = 1, timeout: float = 5.0) -> list[Element]:
        """Wait until at least ``count`` elements arrived, then take them."""
        async with asyncio.timeout(timeout):
            while len(self.conn.out) < count:
                self.conn.arrived.clear()
                await self.conn.arrived.wait()
        return self.take()

    async def close(self) -> None:
        """Drop the connection as a vanished client would."""
        self.conn.close_transport()
        await self.stream.connection_lost()


def _with_client_ns(xml: str) -> str:
    head, sep, rest = xml.partition(">")
    if head.endswith("/"):
        return f"{head[:-1]} xmlns='{ns.CLIENT}'/>{rest}"
    return f"{head} xmlns='{ns.CLIENT}'{sep}{rest}"


async def add_user(server: Server, username: str, password: str = "secret", host: str = DOMAIN) -> None:
    """Create an account."""
    await server.storage.accounts.create(host, username, derive_credentials(password))


async def connect(server: Server, jid: str) -> Client:
    """Open an in-memory stream as ``user@host/resource`` (the account must exist) and bind."""
    local, _, rest = jid.partition("@")
    host, _, resource = rest.partition("/")
    conn = MemoryConnection()
    stream = C2SStream(server, conn)
    await stream.on_open(f"{{{ns.FRAMING}}}open", {"to": host, "version": "1.0"}, None)
    stream.username = local
    bind = f"<iq type='set' id='bind' xmlns='{ns.CLIENT}'><bind xmlns='{ns.BIND}'><resource>{resource}</resource></bind></iq>"
    await stream.on_element(parse_frame(bind.encode(), 10**6))
    client = Client(server, stream, conn)
    client.take()
    return client


@contextlib.asynccontextmanager
async def running(tmp_path: Path, *, listen: bool = False, **overrides: Any) -> AsyncIterator[Server]:
    """A started server (storage open, modules running); listening on sockets if asked."""
    server = Server(make_config(tmp_path, **overrides))
    await server.start(listen=listen)
    try:
        yield server
    finally:
        await server.stop()


async def turns(count: int = 10) -> None:
    """Let the event loop run ``count`` turns: what can go on without outside input has, so a
    test can see what still waits."""
    for _ in range(count):
        await asyncio.sleep(0)


def xml(el: Element) -> str:
    """An element as text, for readable assertions."""
    return serialize(el)

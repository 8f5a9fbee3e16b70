"""Another server written out by hand, to send what a correct one never would."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast
from xml.etree import ElementTree as ET

from schnack.server.s2s.dialback import dialback_key
from schnack.server.tls import make_self_signed
from schnack.xmpp import ns
from schnack.xmpp.parser import StanzaReceived, StreamClosed, StreamOpened, StreamParser
from schnack.xmpp.payloads.sm import NS as SM

if TYPE_CHECKING:
    from schnack.server.app import Server

WAIT = 30


class RawPeer:
    """A server-to-server connection driven XML by XML."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.parser = StreamParser(1_000_000)
        self.stream_id = ""
        self.events: list[Any] = []

    @classmethod
    async def connect(cls, host: str, port: int) -> RawPeer:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)

    def send(self, xml: str) -> None:
        self.writer.write(xml.encode())

    async def next(self) -> Any:
        async with asyncio.timeout(WAIT):
            while not self.events:
                data = await self.reader.read(65536)
                assert data, "connection closed"
                self.events += self.parser.feed(data) + self.parser.flush()
        return self.events.pop(0)

    async def element(self) -> ET.Element:
        event = await self.next()
        assert isinstance(event, StanzaReceived), event
        return event.element

    async def open(self, origin: str, to: str) -> ET.Element:
        self.writer.write(
            f"<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:stream='{ns.STREAMS}' "
            f"xmlns:db='jabber:server:dialback' from='{origin}' to='{to}' version='1.0'>".encode()
        )
        header = await self.next()
        assert isinstance(header, StreamOpened)
        self.stream_id = header.attrs["id"]
        return await self.element()

    async def starttls(self, origin: str, to: str, *, certificate: tuple[Path, Path] | None = None,
                       behind: str = "") -> ET.Element:
        """STARTTLS and the stream after it; ``certificate`` (cert, key) is shown to the server,
        ``behind`` (whitespace) goes in the same write as ``<starttls/>``."""
        features = await self.open(origin, to)
        assert features.find(f"{{{ns.TLS}}}starttls/{{{ns.TLS}}}required") is not None
        self.writer.write(f"<starttls xmlns='{ns.TLS}'/>{behind}".encode())
        assert (await self.element()).tag == f"{{{ns.TLS}}}proceed"
        await self.tls(certificate)
        return await self.open(origin, to)

    async def tls(self, certificate: tuple[Path, Path] | None = None) -> None:
        """The TLS handshake after ``<proceed/>``, and a parser for the stream after it."""
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        if certificate is not None:
            ctx.load_cert_chain(*certificate)
        await self.writer.start_tls(ctx)
        self.parser = StreamParser(1_000_000)

    async def stream_error(self) -> str:
        while True:
            event = await self.next()
            if isinstance(event, StreamClosed):
                raise AssertionError("closed without a stream error")
            if isinstance(event, StanzaReceived) and event.element.tag == f"{{{ns.STREAMS}}}error":
                return next(c.tag.partition("}")[2] for c in event.element)


class RawReceiver:
    """A receiving server written out by hand, at 127.0.0.1: it requires STARTTLS, accepts any
    dialback key, offers stream management when ``sm`` is set, and leaves acks to the test.
    ``behind_proceed`` (whitespace) goes in the same write as its ``<proceed/>``."""

    def __init__(self, directory: Path, domain: str, *, sm: bool = True, behind_proceed: str = "") -> None:
        self.domain = domain
        self.sm = sm
        self.behind_proceed = behind_proceed
        self.port = 0
        self.accepted: asyncio.Queue[RawPeer] = asyncio.Queue()
        self._context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        make_self_signed([domain], directory / "raw.crt", directory / "raw.key")
        self._context.load_cert_chain(directory / "raw.crt", directory / "raw.key")
        self._server: asyncio.Server | None = None
        self._peers: list[RawPeer] = []

    async def start(self) -> RawReceiver:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = RawPeer(reader, writer)
        self._peers.append(peer)
        await peer.next()  # the initiating server's stream header
        self._header(peer)
        peer.send(f"<stream:features><starttls xmlns='{ns.TLS}'><required/></starttls></stream:features>")
        assert (await peer.element()).tag == f"{{{ns.TLS}}}starttls"
        await self.proceed(peer)
        peer.parser = StreamParser(1_000_000)
        opened = await peer.next()
        assert isinstance(opened, StreamOpened)
        self._header(peer)
        sm = f"<sm xmlns='{SM}'/>" if self.sm else ""
        peer.send(f"<stream:features><dialback xmlns='urn:xmpp:features:dialback'/>{sm}</stream:features>")
        await self.answer(peer, await peer.element())

    async def proceed(self, peer: RawPeer) -> None:
        """RFC 6120 §5.4.2.3: ``<proceed/>`` (and ``behind_proceed``), then the TLS handshake."""
        peer.send(f"<proceed xmlns='{ns.TLS}'/>{self.behind_proceed}")
        await peer.writer.start_tls(self._context)

    async def answer(self, peer: RawPeer, request: ET.Element) -> None:
        """The first element after the features: a dialback request, which any key passes."""
        assert request.tag == "{jabber:server:dialback}result"
        peer.send(f"<db:result from='{self.domain}' to='{request.get('from')}' type='valid'/>")
        await self.accepted.put(peer)

    def _header(self, peer: RawPeer) -> None:
        peer.stream_id = uuid.uuid4().hex
        peer.send(f"<stream:stream xmlns='jabber:server' xmlns:stream='{ns.STREAMS}' "
                  f"xmlns:db='jabber:server:dialback' from='{self.domain}' id='{peer.stream_id}' version='1.0'>")

    async def next_peer(self) -> RawPeer:
        async with asyncio.timeout(WAIT):
            return await self.accepted.get()

    def vanish(self) -> None:
        """Stop listening; connections stay open and silent, as when a host drops off the network."""
        if self._server is not None:
            self._server.close()
            self._server = None

    def stop(self) -> None:
        self.vanish()
        for peer in self._peers:
            peer.writer.transport.abort()


async def until_input(writer: asyncio.StreamWriter) -> None:
    """Stop reading the connection of ``writer``, and wait until input waits in its socket,
    unread: for TLS to read, not the stream reader."""
    cast(asyncio.Transport, writer.transport).pause_reading()
    # A second descriptor of the same socket, to peek at it: asyncio's and uvloop's own
    # socket objects do not receive.
    sock = socket.socket(fileno=os.dup(writer.get_extra_info("socket").fileno()))
    try:
        async with asyncio.timeout(WAIT):
            while True:
                with contextlib.suppress(BlockingIOError):
                    if sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT):
                        return
                await asyncio.sleep(0.01)
    finally:
        sock.close()


async def dialback(raw: RawPeer, secret: str) -> None:
    """Authenticate b.example to localhost by dialback (XEP-0220) on the stream ``raw`` has open;
    ``secret`` is b.example's."""
    key = dialback_key(secret, "localhost", "b.example", raw.stream_id)
    raw.send(f"<db:result from='b.example' to='localhost'>{key}</db:result>")
    assert (await raw.element()).get("type") == "valid"


async def authenticated_peer(receiving: tuple[Server, str]) -> RawPeer:
    """A peer whose stream to localhost authenticated b.example by dialback (XEP-0220), on the
    ``receiving`` fixture's server."""
    server, secret = receiving
    host, port = server.bound["s2s"][0]
    raw = await RawPeer.connect(host, port)
    await raw.starttls("b.example", "localhost")
    await dialback(raw, secret)
    return raw

"""A raw XMPP client for tests: bytes on a real socket, replies read with the sans-IO parser."""

from __future__ import annotations

import asyncio
import ssl
from xml.etree.ElementTree import Element

from schnack.server.app import Server
from schnack.xmpp import ns
from schnack.xmpp.errors import StreamError
from schnack.xmpp.parser import StanzaReceived, StreamClosed, StreamOpened, StreamParser
from schnack.xmpp.sasl import SaslClient, decode_b64, encode_b64
from schnack.xmpp.xml import qname

HEADER = (
    "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
    "xmlns:stream='http://etherx.jabber.org/streams' to='{to}' version='1.0'>"
)


def insecure_context() -> ssl.SSLContext:
    """Tests trust the server's self-signed certificate."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class Wire:
    """One raw connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.parser = StreamParser(10**8)
        self.opened = False
        self.closed = False
        self._queue: list[Element] = []

    @classmethod
    async def connect(cls, server: Server, listener: str = "c2s") -> Wire:
        host, port = server.bound[listener][0]
        tls = insecure_context() if listener == "c2s_tls" else None
        reader, writer = await asyncio.open_connection(host, port, ssl=tls)
        return cls(reader, writer)

    def send(self, data: str | bytes) -> None:
        self.writer.write(data.encode() if isinstance(data, str) else data)

    async def next(self, timeout: float = 10.0) -> Element | None:
        """The next top-level element, or None once the server closed the stream."""
        async with asyncio.timeout(timeout):
            while not self._queue:
                if self.closed:
                    return None
                data = await self.reader.read(65536)
                if not data:
                    self.closed = True
                    return None
                for event in self.parser.feed(data) + self.parser.flush():
                    if isinstance(event, StreamOpened):
                        self.opened = True
                    elif isinstance(event, StanzaReceived):
                        self._queue.append(event.element)
                    elif isinstance(event, StreamClosed):
                        self.closed = True
        return self._queue.pop(0)

    async def open(self, to: str = "localhost") -> Element:
        """Send a stream header; return the features."""
        self.parser.close()
        self.parser = StreamParser(10**8)
        self.send(HEADER.format(to=to))
        features = await self.next()
        assert features is not None and features.tag == qname(ns.STREAMS, "features")
        return features

    async def stream_error(self) -> str:
        """Read until the stream error; return its condition (asserting the stream then closes)."""
        while True:
            el = await self.next()
            assert el is not None, "stream closed without a stream error"
            if el.tag == qname(ns.STREAMS, "error"):
                condition = next(c.tag.rpartition("}")[2] for c in el if c.tag != qname(ns.STREAM_ERRORS, "text"))
                assert await self.next() is None
                return condition

    async def starttls(self, behind: str = "", after_proceed: str = "") -> Element:
        """STARTTLS and the stream after it; ``behind`` goes in the same write as ``<starttls/>``,
        ``after_proceed`` once ``<proceed/>`` came, before the TLS handshake."""
        self.send(f"<starttls xmlns='{ns.TLS}'/>{behind}")
        proceed = await self.next()
        assert proceed is not None and proceed.tag == qname(ns.TLS, "proceed")
        if after_proceed:
            self.send(after_proceed)
        await self.writer.start_tls(insecure_context(), server_hostname="localhost")
        return await self.open()

    async def login(self, user: str, password: str, features: Element, binding: bytes | None = None,
                    binding_type: str | None = None) -> Element:
        """SASL with our client; return the features after the restart."""
        offered = [m.text or "" for m in features.iter(qname(ns.SASL, "mechanism"))]
        client = SaslClient(user, password, offered, channel_binding=(binding_type, binding) if binding and binding_type else None)
        self.send(f"<auth xmlns='{ns.SASL}' mechanism='{client.mechanism}'>{encode_b64(client.initial())}</auth>")
        while True:
            el = await self.next()
            assert el is not None
            local = el.tag.rpartition("}")[2]
            if local == "challenge":
                self.send(f"<response xmlns='{ns.SASL}'>{encode_b64(client.respond(decode_b64(el.text or '')))}</response>")
            elif local == "success":
                client.success(decode_b64(el.text or "=") if el.text else b"")
                return await self.open()
            else:
                raise StreamError("not-authorized", f"login failed: {el.tag}")

    async def bind(self, resource: str = "test") -> str:
        self.send(f"<iq type='set' id='b1'><bind xmlns='{ns.BIND}'><resource>{resource}</resource></bind></iq>")
        el = await self.next()
        assert el is not None and el.get("type") == "result", el
        jid = el.findtext(f"{{{ns.BIND}}}bind/{{{ns.BIND}}}jid")
        assert jid
        return jid

    def close(self) -> None:
        self.writer.close()

"""A raw XMPP-over-WebSocket client for tests (RFC 7395): one element per text message."""

from __future__ import annotations

import asyncio
from xml.etree.ElementTree import Element

import aiohttp
from aiohttp import WSMsgType

from schnack.server.app import Server
from schnack.xmpp import ns
from schnack.xmpp.parser import parse_frame
from schnack.xmpp.sasl import SaslClient, decode_b64, encode_b64
from schnack.xmpp.xml import qname

OPEN = f"<open xmlns='{ns.FRAMING}' to='localhost' version='1.0'/>"
CLOSE = f"<close xmlns='{ns.FRAMING}'/>"
OPENED = qname(ns.FRAMING, "open")
CLOSED = qname(ns.FRAMING, "close")
_FEATURES = qname(ns.STREAMS, "features")
_ERROR = qname(ns.STREAMS, "error")


class WsClient:
    """One WebSocket with the ``xmpp`` subprotocol; each text message is one element."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws

    async def send(self, frame: str) -> None:
        await self.ws.send_str(frame)

    async def next(self, timeout: float = 30) -> Element | None:
        """The next element, or None once the WebSocket is closed."""
        async with asyncio.timeout(timeout):
            msg = await self.ws.receive()
        if msg.type == WSMsgType.TEXT:
            return parse_frame(msg.data.encode(), 10**8)
        assert msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED), msg
        return None

    async def open(self) -> Element:
        """RFC 7395 §3.4: send <open/>, get the server's <open/> and then the features."""
        await self.send(OPEN)
        opened = await self.next()
        assert opened is not None and opened.tag == OPENED
        assert opened.get("from") == "localhost" and opened.get("version") == "1.0" and opened.get("id")
        features = await self.next()
        assert features is not None and features.tag == _FEATURES
        return features

    async def login(self, user: str, password: str, mechanism: str = "SCRAM-SHA-256",
                    channel_binding: tuple[str, bytes] | None = None) -> Element:
        """SASL with our client, then the stream restart (RFC 7395 §3.5); return the new features."""
        features = await self.open()
        offered = [m.text or "" for m in features.iter(qname(ns.SASL, "mechanism"))]
        assert mechanism in offered
        client = SaslClient(user, password, [mechanism], channel_binding=channel_binding)
        await self.send(f"<auth xmlns='{ns.SASL}' mechanism='{mechanism}'>{encode_b64(client.initial())}</auth>")
        challenge = await self.next()
        assert challenge is not None and challenge.tag == qname(ns.SASL, "challenge")
        reply = encode_b64(client.respond(decode_b64(challenge.text or "")))
        await self.send(f"<response xmlns='{ns.SASL}'>{reply}</response>")
        success = await self.next()
        assert success is not None and success.tag == qname(ns.SASL, "success"), success
        client.success(decode_b64(success.text or "="))
        return await self.open()

    async def bind(self, resource: str) -> str:
        await self.send(
            f"<iq xmlns='{ns.CLIENT}' type='set' id='bind1'>"
            f"<bind xmlns='{ns.BIND}'><resource>{resource}</resource></bind></iq>"
        )
        result = await self.next()
        assert result is not None and result.get("type") == "result" and result.get("id") == "bind1"
        jid = result.findtext(f"{{{ns.BIND}}}bind/{{{ns.BIND}}}jid")
        assert jid is not None
        return jid

    async def stream_error(self) -> str:
        """RFC 7395 §3.6.1: the error, then <close/>, which the client answers with its own; then
        the server closes the WebSocket. Return the condition."""
        while True:
            el = await self.next()
            assert el is not None, "closed without a stream error"
            if el.tag == _ERROR:
                break
        condition = next(c.tag.rpartition("}")[2] for c in el if c.tag != qname(ns.STREAM_ERRORS, "text"))
        closing = await self.next()
        assert closing is not None and closing.tag == CLOSED
        await self.send(CLOSE)
        assert await self.next() is None
        return condition


def url(server: Server) -> str:
    host, port = server.bound["http"][0]
    return f"ws://{host}:{port}/xmpp-websocket"


async def connect(server: Server, http: aiohttp.ClientSession) -> WsClient:
    ws = await http.ws_connect(url(server), protocols=("xmpp",))
    assert ws.protocol == "xmpp"
    return WsClient(ws)

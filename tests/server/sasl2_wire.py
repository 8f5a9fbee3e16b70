"""A client stream driven element by element against the real C2SStream, for SASL2 tests.

The connection writes what the server says into a byte buffer that a real stream parser reads
back, as a socket would; the TLS facts (encrypted, channel-binding data) are set per test.
"""

from __future__ import annotations

import base64
from xml.etree.ElementTree import Element

from schnack.server.app import Server
from schnack.server.c2s import C2SStream
from schnack.xmpp import ht, ns
from schnack.xmpp.errors import StreamError
from schnack.xmpp.parser import StanzaReceived, StreamParser, parse_frame
from schnack.xmpp.payloads import fast
from schnack.xmpp.payloads import sasl2 as payload
from schnack.xmpp.sasl import SaslClient
from schnack.xmpp.xml import element, qname, serialize, sub

PASSWORD = "correct horse"
EXPORTER = b"E" * 32
END_POINT = b"S" * 32
BINDINGS = {"tls-exporter": EXPORTER, "tls-server-end-point": END_POINT}
AGENT = payload.UserAgent("d4565fa7-4d72-4749-b3d3-740edbf87770", "schnack", "phone")
SASL2 = payload.NS
BIND2 = "urn:xmpp:bind:0"
SM = "urn:xmpp:sm:3"


class Connection:
    """Encrypted unless told otherwise, with the given channel bindings."""

    websocket = False

    def __init__(self, *, secure: bool = True, bindings: dict[str, bytes] | None = None) -> None:
        self.peer = "192.0.2.7:40000"
        self.secure = secure
        self.can_starttls = not secure
        self.bindings = BINDINGS if bindings is None else bindings
        self.to_client = bytearray()
        self.closed = False

    def write(self, data: str) -> None:
        self.to_client += data.encode()

    def close_transport(self) -> None:
        self.closed = True

    def channel_binding(self, kind: str) -> bytes | None:
        return self.bindings.get(kind) if self.secure else None


class Wire:
    """One client connection: open the stream, send elements, read back what the server said."""

    def __init__(self, server: Server, **conn: object) -> None:
        self.conn = Connection(**conn)  # type: ignore[arg-type]
        self.stream = C2SStream(server, self.conn)
        self.parser = StreamParser(10**7)
        self.features: Element | None = None

    async def open(self) -> Element:
        """The stream header; the features are returned."""
        await self.stream.on_open(qname(ns.STREAMS, "stream"), {"to": "localhost", "version": "1.0"}, ns.CLIENT)
        self.features = self.take()[0]
        return self.features

    async def send(self, el: Element | str) -> list[Element]:
        """Send an element as the client would; a stream error closes the stream as on a socket."""
        if isinstance(el, str):
            el = parse_frame(el.encode(), 10**7)
        try:
            await self.stream.on_element(el)
        except StreamError as err:
            self.stream.close(err)
        return self.take()

    def take(self) -> list[Element]:
        data = bytes(self.conn.to_client)
        self.conn.to_client.clear()
        return [item.element for item in self.parser.feed(data) + self.parser.flush()
                if isinstance(item, StanzaReceived)]


def authenticate(mechanism: str, initial: bytes | None, *inline: Element,
                 agent: payload.UserAgent | None = AGENT) -> Element:
    return payload.Authenticate(mechanism, initial, agent, inline).to_xml()


def bind(tag: str | None = "schnack", *requests: str) -> Element:
    el = element(qname(BIND2, "bind"))
    if tag is not None:
        sub(el, qname(BIND2, "tag"), text=tag)
    el.extend(parse_frame(r.encode(), 10**6) for r in requests)
    return el


async def scram(wire: Wire, *inline: Element, user: str = "alice", password: str = PASSWORD,
                agent: payload.UserAgent | None = AGENT) -> list[Element]:
    """A SCRAM-SHA-256-PLUS (tls-exporter) login with SASL2; what follows the response is returned."""
    client = SaslClient(user, password, ["SCRAM-SHA-256-PLUS"], channel_binding=("tls-exporter", EXPORTER))
    out = await wire.send(authenticate(client.mechanism, client.initial(), *inline, agent=agent))
    if out[0].tag != payload.CHALLENGE:
        return out
    response = client.respond(payload.Challenge.from_xml(out[0]).data)
    out = await wire.send(payload.Response(response).to_xml())
    if out and out[0].tag == payload.SUCCESS:
        client.success(payload.Success.from_xml(out[0]).additional_data or b"")
    return out


def token_login(token: str, *inline: Element, mechanism: str = "HT-SHA-256-EXPR", count: int | None = 1,
                user: str = "alice", agent: payload.UserAgent | None = AGENT, binding: bytes | None = None,
                invalidate: bool = False) -> Element:
    """A FAST ``<authenticate/>`` with the token's proof over ``binding`` (the mechanism's own by default)."""
    kind = ht.parse_mechanism(mechanism)[1]
    cb = binding if binding is not None else (BINDINGS.get(kind, b"") if kind else b"")
    proof = ht.initiator(ht.key_of(token), cb)
    marker = fast.Fast(count, invalidate).to_xml()
    return authenticate(mechanism, user.encode() + b"\0" + proof, marker, *inline, agent=agent)


def request_token(mechanism: str = "HT-SHA-256-EXPR") -> Element:
    return fast.RequestToken(mechanism).to_xml()


def issued(success: Element) -> fast.Token:
    found = success.find(fast.TOKEN)
    assert found is not None, serialize(success)
    return fast.Token.from_xml(found)


def failure(out: list[Element]) -> tuple[str, str | None]:
    assert out and out[0].tag == payload.FAILURE, [serialize(el) for el in out]
    parsed = payload.Failure.from_xml(out[0])
    return parsed.condition, parsed.text


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()

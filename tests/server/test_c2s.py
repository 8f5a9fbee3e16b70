"""Client stream negotiation in memory: features, SASL, binding and the stream errors on the way.

RFC 6120 §4 (streams), §5 (STARTTLS), §6 (SASL), §7 (binding). The stream is the real
:class:`C2SStream`; the connection below it is kept in memory and parses what the server writes as
a client would. What needs real sockets (TLS itself, parser errors) is in tests/integration.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from xml.etree.ElementTree import Element

import pytest

from schnack.server.app import Server
from schnack.server.c2s import UNFINISHED_MAX, C2SStream
from schnack.server.config import DEFAULT_MODULES
from schnack.server.hooks import HANDLED, Handled
from schnack.server.sessions import Session
from schnack.xmpp import ns
from schnack.xmpp.errors import StreamError
from schnack.xmpp.jid import JID
from schnack.xmpp.parser import StanzaReceived, StreamClosed, StreamOpened, StreamParser, parse_frame
from schnack.xmpp.sasl import SaslClient, decode_b64, encode_b64
from schnack.xmpp.stanza import Stanza
from schnack.xmpp.xml import element, qname

from ..harness import add_user, connect, running, turns, xml

STREAM = qname(ns.STREAMS, "stream")
OPEN = qname(ns.FRAMING, "open")
FEATURES = qname(ns.STREAMS, "features")
ROSTERVER = "{urn:xmpp:features:rosterver}ver"
SASL_CB = "{urn:xmpp:sasl-cb:0}sasl-channel-binding"
PASSWORD = "correct horse"
SM = "urn:xmpp:sm:3"


class TcpMemory:
    """A TCP connection kept in memory: what the server writes is parsed as by a client."""

    websocket = False

    def __init__(self, *, secure: bool = False, can_starttls: bool = True,
                 bindings: dict[str, bytes] | None = None, peer: str = "192.0.2.7:40000") -> None:
        self.secure = secure
        self.can_starttls = can_starttls
        self.peer = peer
        self.bindings = bindings or {}
        self.headers: list[dict[str, str]] = []
        self.out: list[Element] = []
        self.stream_closed = False
        self.closed = False
        self._parser = StreamParser(10**8)

    def write(self, data: str) -> None:
        if data.startswith("<?xml"):
            self._parser = StreamParser(10**8)
        for event in self._parser.feed(data.encode()) + self._parser.flush():
            if isinstance(event, StreamOpened):
                self.headers.append(event.attrs)
            elif isinstance(event, StanzaReceived):
                self.out.append(event.element)
            elif isinstance(event, StreamClosed):
                self.stream_closed = True

    def close_transport(self) -> None:
        self.closed = True

    def channel_binding(self, kind: str) -> bytes | None:
        return self.bindings.get(kind) if self.secure else None


class WsMemory(TcpMemory):
    """A WebSocket connection in memory: one element per frame (RFC 7395)."""

    websocket = True

    def __init__(self) -> None:
        super().__init__(secure=True, can_starttls=False)

    def write(self, data: str) -> None:
        el = parse_frame(data.encode(), 10**8)
        if el.tag == OPEN:
            self.headers.append(dict(el.attrib))
        elif el.tag == qname(ns.FRAMING, "close"):
            self.stream_closed = True
        else:
            self.out.append(el)


class Peer:
    """Drives one C2SStream as a client would, doing what the connection layer does in between."""

    def __init__(self, server: Server, conn: TcpMemory) -> None:
        self.server = server
        self.conn = conn
        self.stream = C2SStream(server, conn)

    async def _run(self, step: Awaitable[None]) -> None:
        try:
            await step
        except StreamError as err:
            # What the connection does with a stream error: close the stream with it.
            self.stream.close(err)

    async def open(self, to: str | None = "localhost", version: str | None = "1.0", *,
                   name: str | None = None, default_ns: str | None = ns.CLIENT) -> Element | None:
        """Send a stream header; return the features, or None if the stream was refused."""
        attrs = {k: v for k, v in (("to", to), ("version", version)) if v is not None}
        if name is None:
            name = OPEN if self.conn.websocket else STREAM
        await self._run(self.stream.on_open(name, attrs, None if self.conn.websocket else default_ns))
        if self.stream.closed:
            return None
        features = self.take()[-1]
        assert features.tag == FEATURES, xml(features)
        return features

    async def send(self, text: str) -> None:
        await self._run(self.stream.on_element(parse_frame(text.encode(), 10**6)))

    def take(self) -> list[Element]:
        out, self.conn.out = self.conn.out, []
        return out

    def stream_error(self) -> str | None:
        """The condition of the stream error sent, asserting the stream was then closed."""
        for el in self.conn.out:
            if el.tag == qname(ns.STREAMS, "error"):
                assert self.stream.closed and self.conn.closed and self.conn.stream_closed
                return next(c.tag.rpartition("}")[2] for c in el if c.tag != qname(ns.STREAM_ERRORS, "text"))
        return None

    async def starttls(self) -> Element:
        await self.send(f"<starttls xmlns='{ns.TLS}'/>")
        (proceed,) = self.take()
        assert proceed.tag == qname(ns.TLS, "proceed")
        assert self.stream.want_tls
        # The connection now runs the TLS handshake and restarts the stream (RFC 6120 §5.4.3.3).
        self.stream.want_tls = False
        self.conn.secure = True
        features = await self.open()
        assert features is not None
        return features

    async def authenticate(self, client: SaslClient) -> Element:
        """Run one SASL exchange; return the server's last word (<success/> or <failure/>)."""
        await self.send(f"<auth xmlns='{ns.SASL}' mechanism='{client.mechanism}'>{encode_b64(client.initial())}</auth>")
        while True:
            reply, *rest = self.take()
            # Whatever followed the reply (a stream error) stays for stream_error() to find.
            self.conn.out[:0] = rest
            if reply.tag != qname(ns.SASL, "challenge"):
                if reply.tag == qname(ns.SASL, "success"):
                    client.success(decode_b64(reply.text) if reply.text else b"")
                return reply
            await self.send(f"<response xmlns='{ns.SASL}'>{encode_b64(client.respond(decode_b64(reply.text or '')))}</response>")

    async def login(self, user: str, password: str, features: Element,
                    channel_binding: tuple[str, bytes] | None = None) -> Element:
        """Authenticate with the best offered mechanism and restart; return the new features."""
        client = SaslClient(user, password, mechanisms(features), channel_binding=channel_binding)
        reply = await self.authenticate(client)
        assert reply.tag == qname(ns.SASL, "success"), xml(reply)
        assert self.stream.want_restart
        self.stream.want_restart = False
        after = await self.open()
        assert after is not None
        return after

    async def bind(self, resource: str | None, id: str = "b1") -> Element:
        inner = f"<resource>{resource}</resource>" if resource is not None else ""
        await self.send(f"<iq xmlns='{ns.CLIENT}' type='set' id='{id}'><bind xmlns='{ns.BIND}'>{inner}</bind></iq>")
        (reply,) = self.take()
        return reply


def mechanisms(features: Element) -> list[str]:
    return [m.text or "" for m in features.iter(qname(ns.SASL, "mechanism"))]


def children(features: Element) -> list[str]:
    return [child.tag for child in features]


def sasl_condition(failure: Element) -> str:
    assert failure.tag == qname(ns.SASL, "failure"), xml(failure)
    return next(c.tag.rpartition("}")[2] for c in failure if c.tag != qname(ns.SASL, "text"))


def stanza_condition(el: Element) -> str:
    assert el.get("type") == "error", xml(el)
    error = el.find(qname(ns.CLIENT, "error"))
    assert error is not None
    return next(c.tag.rpartition("}")[2] for c in error if c.tag != qname(ns.STANZA_ERRORS, "text"))


def bound_jid(reply: Element) -> str:
    assert reply.get("type") == "result", xml(reply)
    jid = reply.findtext(f"{{{ns.BIND}}}bind/{{{ns.BIND}}}jid")
    assert jid is not None
    return jid


async def secure_peer(server: Server, bindings: dict[str, bytes] | None = None) -> tuple[Peer, Element]:
    """A stream on a direct-TLS connection, opened; with its features."""
    peer = Peer(server, TcpMemory(secure=True, can_starttls=False, bindings=bindings))
    features = await peer.open()
    assert features is not None
    return peer, features


async def logged_in(server: Server, user: str = "alice") -> tuple[Peer, Element]:
    peer, features = await secure_peer(server)
    return peer, await peer.login(user, PASSWORD, features)


@pytest.fixture
async def alice(server: Server) -> None:
    await add_user(server, "alice", PASSWORD)


# Features at each stage ------------------------------------------------------------------------


@pytest.mark.usefixtures("alice")
async def test_negotiation_from_plain_tcp_to_a_bound_session(server: Server) -> None:
    peer = Peer(server, TcpMemory())
    before_tls = await peer.open()
    assert before_tls is not None
    (header,) = peer.conn.headers
    assert header["from"] == "localhost" and header["version"] == "1.0" and header["id"] == peer.stream.id
    # RFC 6120 §5.3.1: with TLS mandatory, STARTTLS is the only feature offered.
    assert children(before_tls) == [qname(ns.TLS, "starttls")]
    assert before_tls.find(f"{{{ns.TLS}}}starttls/{{{ns.TLS}}}required") is not None

    after_tls = await peer.starttls()
    assert after_tls.find(qname(ns.TLS, "starttls")) is None
    assert mechanisms(after_tls) == ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"]
    assert after_tls.find(SASL_CB) is None
    assert after_tls.find(qname(ns.BIND, "bind")) is None
    assert after_tls.find(ROSTERVER) is None

    after_auth = await peer.login("alice", PASSWORD, after_tls)
    assert peer.stream.authenticated and peer.stream.username == "alice"
    assert after_auth.find(qname(ns.SASL, "mechanisms")) is None
    assert after_auth.find(qname(ns.TLS, "starttls")) is None
    assert after_auth.find(qname(ns.BIND, "bind")) is not None
    assert after_auth.find(f"{{{ns.SESSION}}}session/{{{ns.SESSION}}}optional") is not None
    # RFC 6121 §2.6 / XEP-0237: the roster module offers versioning once authenticated.
    assert "roster" in server.modules
    assert after_auth.find(ROSTERVER) is not None
    # Each restart sends a fresh header with the same stream id.
    assert len(peer.conn.headers) == 3

    assert bound_jid(await peer.bind("desk")) == "alice@localhost/desk"
    session = server.sessions.get(JID.parse("alice@localhost/desk"))
    assert session is not None and session is peer.stream.session
    assert session.secure and session.peer == "192.0.2.7:40000"
    await peer.send(f"<iq xmlns='{ns.CLIENT}' type='get' id='p1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
    (pong,) = peer.take()
    assert pong.get("type") == "result" and pong.get("id") == "p1"


async def test_tls_optional_offers_starttls_and_scram_but_not_plain(tmp_path: Path) -> None:
    async with running(tmp_path, tls={"require_c2s": False}) as server:
        await add_user(server, "alice", PASSWORD)
        peer = Peer(server, TcpMemory())
        features = await peer.open()
        assert features is not None
        starttls = features.find(qname(ns.TLS, "starttls"))
        assert starttls is not None and starttls.find(qname(ns.TLS, "required")) is None
        # RFC 6120 §13.9.4: PLAIN sends the password itself, so only over TLS.
        assert mechanisms(features) == ["SCRAM-SHA-256", "SCRAM-SHA-1"]
        plain = SaslClient("alice", PASSWORD, ["PLAIN"], allow_plain=True)
        assert sasl_condition(await peer.authenticate(plain)) == "encryption-required"
        after = await peer.login("alice", PASSWORD, features)
        assert after.find(qname(ns.BIND, "bind")) is not None
        assert bound_jid(await peer.bind("plain")) == "alice@localhost/plain"
        session = server.sessions.get(JID.parse("alice@localhost/plain"))
        assert session is not None and not session.secure


async def test_direct_tls_offers_sasl_at_once(server: Server) -> None:
    _, features = await secure_peer(server)
    assert features.find(qname(ns.TLS, "starttls")) is None
    assert mechanisms(features) == ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"]


@pytest.mark.usefixtures("alice")
async def test_channel_binding_offers_plus_mechanisms_and_binds(server: Server) -> None:
    """XEP-0440 lists the binding types; SCRAM-*-PLUS checks the client's binding data (RFC 5802 §6)."""
    bindings = {"tls-exporter": b"E" * 32, "tls-server-end-point": b"S" * 32}
    peer, features = await secure_peer(server, bindings=bindings)
    assert mechanisms(features) == ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-1-PLUS", "SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"]
    cb = features.find(SASL_CB)
    assert cb is not None
    assert {c.get("type") for c in cb} == {"tls-exporter", "tls-server-end-point"}
    forged = SaslClient("alice", PASSWORD, mechanisms(features), channel_binding=("tls-exporter", b"X" * 32))
    assert forged.mechanism == "SCRAM-SHA-256-PLUS"
    assert sasl_condition(await peer.authenticate(forged)) == "not-authorized"
    after = await peer.login("alice", PASSWORD, features, channel_binding=("tls-exporter", b"E" * 32))
    assert after.find(qname(ns.BIND, "bind")) is not None


async def test_websocket_stream_opens_with_open_element(server: Server) -> None:
    peer = Peer(server, WsMemory())
    features = await peer.open()
    assert features is not None
    (header,) = peer.conn.headers
    assert header["from"] == "localhost" and header["version"] == "1.0"
    assert mechanisms(features) == ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"]


# Stream headers (what tests/integration/test_stream_errors.py does not cover) -------------------


@pytest.mark.parametrize(
    ("version", "condition"),
    [
        ("0.9", "unsupported-version"),
        ("2.0", "unsupported-version"),
        ("11.0", "unsupported-version"),
        ("1", "unsupported-version"),
        ("one.zero", "unsupported-version"),
        ("1.0.0", "unsupported-version"),
        ("", "unsupported-version"),
        # Digits of other scripts: int() refuses the superscript two and reads the Arabic-Indic one.
        ("\u00b2.0", "unsupported-version"),
        ("\u0661.\u0660", "unsupported-version"),
    ],
)
async def test_unsupported_versions(server: Server, version: str, condition: str) -> None:
    """RFC 6120 §4.7.5: a different major version cannot interoperate (the §4.9.3.25 example is 11.0)."""
    peer = Peer(server, TcpMemory())
    assert await peer.open(version=version) is None
    assert peer.stream_error() == condition
    # §4.9.1.2: the server sends its own header before the error.
    assert len(peer.conn.headers) == 1


@pytest.mark.parametrize("version", ["1.0", "1.1", "1.12", "01.00"])
async def test_versions_of_xmpp_1_are_accepted(server: Server, version: str) -> None:
    """RFC 6120 §4.7.5: a higher minor version is answered with ours; leading zeros are ignored."""
    peer = Peer(server, TcpMemory())
    assert await peer.open(version=version) is not None
    assert peer.conn.headers[0]["version"] == "1.0"


async def test_unsupported_version_on_websocket(server: Server) -> None:
    peer = Peer(server, WsMemory())
    assert await peer.open(version="2.0") is None
    assert peer.stream_error() == "unsupported-version"


@pytest.mark.parametrize(
    ("name", "default_ns"),
    [
        (qname(ns.STREAMS, "features"), ns.CLIENT),
        (qname(ns.CLIENT, "stream"), ns.CLIENT),
        (STREAM, None),
    ],
)
async def test_wrong_stream_element_or_namespace(server: Server, name: str, default_ns: str | None) -> None:
    peer = Peer(server, TcpMemory())
    assert await peer.open(name=name, default_ns=default_ns) is None
    assert peer.stream_error() == "invalid-namespace"


@pytest.mark.parametrize("name", [STREAM, qname("urn:example:framing", "open"), qname(ns.CLIENT, "open")])
async def test_websocket_open_in_the_wrong_namespace(server: Server, name: str) -> None:
    peer = Peer(server, WsMemory())
    assert await peer.open(name=name) is None
    assert peer.stream_error() == "invalid-namespace"


@pytest.mark.parametrize("to", ["alice@localhost", "localhost/desk", "no such domain", "elsewhere.example"])
@pytest.mark.parametrize("conn", [TcpMemory, WsMemory])
async def test_host_unknown(server: Server, to: str, conn: type[TcpMemory]) -> None:
    peer = Peer(server, conn())
    assert await peer.open(to=to) is None
    assert peer.stream_error() == "host-unknown"
    # The header names the server's own domain, never the one the client asked for.
    assert [h.get("from") for h in peer.conn.headers] == ["localhost"]


async def test_domain_is_normalized_and_defaults_to_the_first(tmp_path: Path) -> None:
    async with running(tmp_path, domains=["example.org", "chat.example.net"]) as server:
        named = Peer(server, TcpMemory())
        assert await named.open(to="Chat.Example.NET") is not None
        assert named.stream.host == "chat.example.net"
        assert named.conn.headers[0]["from"] == "chat.example.net"
        unnamed = Peer(server, TcpMemory())
        assert await unnamed.open(to=None) is not None
        assert unnamed.stream.host == "example.org"


async def test_a_restart_may_not_change_the_domain(tmp_path: Path) -> None:
    async with running(tmp_path, domains=["example.org", "example.net"]) as server:
        peer = Peer(server, TcpMemory())
        assert await peer.open(to="example.org") is not None
        await peer.send(f"<starttls xmlns='{ns.TLS}'/>")
        peer.take()
        peer.stream.want_tls = False
        peer.conn.secure = True
        assert await peer.open(to="example.net") is None
        assert peer.stream_error() == "host-unknown"


# Before authentication and binding ---------------------------------------------------------------


EARLY = [
    f"<message xmlns='{ns.CLIENT}' to='bob@localhost'><body>early</body></message>",
    f"<presence xmlns='{ns.CLIENT}'/>",
    f"<iq xmlns='{ns.CLIENT}' type='get' id='1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>",
]


@pytest.mark.parametrize("stanza", [*EARLY, f"<iq xmlns='{ns.CLIENT}' type='set' id='b'><bind xmlns='{ns.BIND}'/></iq>"])
async def test_stanzas_after_tls_but_before_auth_close_the_stream(server: Server, stanza: str) -> None:
    peer, _ = await secure_peer(server)
    await peer.send(stanza)
    assert peer.stream_error() == "not-authorized"


@pytest.mark.usefixtures("alice")
@pytest.mark.parametrize("stanza", [*EARLY, f"<iq xmlns='{ns.CLIENT}' type='get' id='b'><bind xmlns='{ns.BIND}'/></iq>"])
async def test_stanzas_after_auth_but_before_bind_close_the_stream(server: Server, stanza: str) -> None:
    peer, _ = await logged_in(server)
    await peer.send(stanza)
    assert peer.stream_error() == "not-authorized"
    assert len(server.sessions) == 0


@pytest.mark.usefixtures("alice")
async def test_starttls_where_it_is_not_offered(server: Server) -> None:
    peer, _ = await secure_peer(server)
    await peer.send(f"<starttls xmlns='{ns.TLS}'/>")
    assert peer.stream_error() == "unsupported-feature"


# Binding -----------------------------------------------------------------------------------------


@pytest.mark.usefixtures("alice")
@pytest.mark.parametrize("resource", [None, "", "   "])
async def test_bind_without_a_resource_gets_a_generated_one(server: Server, resource: str | None) -> None:
    first, _ = await logged_in(server)
    second, _ = await logged_in(server)
    jids = [JID.parse(bound_jid(await p.bind(resource))) for p in (first, second)]
    assert all(j.bare == JID.parse("alice@localhost") and j.resource for j in jids)
    assert jids[0] != jids[1]
    assert {s.jid for s in server.sessions} == set(jids)


@pytest.mark.usefixtures("alice")
async def test_bind_keeps_the_requested_resource_as_given(server: Server) -> None:
    peer, _ = await logged_in(server)
    assert bound_jid(await peer.bind("Desk Top")) == "alice@localhost/Desk Top"


@pytest.mark.usefixtures("alice")
@pytest.mark.parametrize("resource", ["x" * 1024, "desk\u200b", "\ue000"], ids=["long", "zero-width", "private-use"])
async def test_bind_with_an_invalid_resource(server: Server, resource: str) -> None:
    """RFC 6120 §7.7.2.1: <bad-request/>, and the client may try again on the same stream."""
    peer, _ = await logged_in(server)
    assert stanza_condition(await peer.bind(resource)) == "bad-request"
    assert not peer.stream.closed and len(server.sessions) == 0
    assert bound_jid(await peer.bind("ok", id="b2")) == "alice@localhost/ok"


@pytest.mark.usefixtures("alice")
async def test_a_bound_resource_is_taken_over_by_the_newer_session(server: Server) -> None:
    """RFC 6120 §7.7.2.2: schnack's policy is that the new session wins; the old gets <conflict/>."""
    old, _ = await logged_in(server)
    assert bound_jid(await old.bind("phone")) == "alice@localhost/phone"
    new, _ = await logged_in(server)
    assert bound_jid(await new.bind("phone")) == "alice@localhost/phone"
    assert old.stream_error() == "conflict"
    assert new.stream_error() is None and not new.stream.closed
    (session,) = server.sessions
    assert session is new.stream.session
    # The old connection going away later does not unregister the new session.
    await old.stream.connection_lost()
    assert list(server.sessions) == [session]


@pytest.mark.usefixtures("alice")
async def test_nothing_routed_to_the_new_session_goes_ahead_of_its_bind_result(server: Server) -> None:
    """RFC 6120 §7: a reply to the session being replaced, routed to the resource while that
    session ends, does not reach the new one ahead of its bind result."""
    old, _ = await logged_in(server)
    assert bound_jid(await old.bind("phone")) == "alice@localhost/phone"

    async def late_reply(session: Session) -> None:
        attrs = {"type": "result", "id": "late", "from": "localhost", "to": str(session.jid)}
        await server.router.send(element(qname(ns.CLIENT, "iq"), attrs))

    server.hooks.add("session-closed", late_reply)
    new, _ = await logged_in(server)
    await new.send(f"<iq xmlns='{ns.CLIENT}' type='set' id='b1'><bind xmlns='{ns.BIND}'><resource>phone</resource></bind></iq>")
    out = new.take()
    assert out[0].get("id") == "b1" and bound_jid(out[0]) == "alice@localhost/phone"
    assert old.stream_error() == "conflict"


async def test_too_many_resources(tmp_path: Path) -> None:
    async with running(tmp_path, limits={"max_resources": 2}) as server:
        await add_user(server, "alice", PASSWORD)
        peers = [(await logged_in(server))[0] for _ in range(4)]
        assert bound_jid(await peers[0].bind("a")) == "alice@localhost/a"
        assert bound_jid(await peers[1].bind("b")) == "alice@localhost/b"
        assert stanza_condition(await peers[2].bind("c")) == "resource-constraint"
        assert not peers[2].stream.closed
        # Taking over a bound resource does not add one, so it is allowed.
        assert bound_jid(await peers[3].bind("a")) == "alice@localhost/a"
        assert len(server.sessions) == 2


@pytest.mark.usefixtures("alice")
async def test_legacy_session_request_before_and_after_bind(server: Server) -> None:
    """RFC 3921 §3 session establishment, marked optional (XEP-0206 era clients such as converse.js).

    Clients send it after binding; the server acknowledges it either way.
    """
    peer, _ = await logged_in(server)
    session_iq = f"<iq xmlns='{ns.CLIENT}' type='set' id='s{{}}'><session xmlns='{ns.SESSION}'/></iq>"
    await peer.send(session_iq.format(1))
    (before,) = peer.take()
    assert before.get("type") == "result" and before.get("id") == "s1"
    bound_jid(await peer.bind("desk"))
    await peer.send(session_iq.format(2))
    (after,) = peer.take()
    assert after.get("type") == "result" and after.get("id") == "s2", xml(after)


# SASL --------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("alice")
async def test_sasl_abort_then_a_new_attempt(server: Server) -> None:
    """RFC 6120 §6.4.4: the client may abort; the server answers <aborted/> and the stream stays."""
    peer, features = await secure_peer(server)
    client = SaslClient("alice", PASSWORD, ["SCRAM-SHA-256"])
    await peer.send(f"<auth xmlns='{ns.SASL}' mechanism='SCRAM-SHA-256'>{encode_b64(client.initial())}</auth>")
    (challenge,) = peer.take()
    assert challenge.tag == qname(ns.SASL, "challenge")
    await peer.send(f"<abort xmlns='{ns.SASL}'/>")
    (aborted,) = peer.take()
    assert sasl_condition(aborted) == "aborted"
    assert not peer.stream.closed and not peer.stream.authenticated
    # The aborted exchange is gone: continuing it is a malformed request.
    proof = client.respond(decode_b64(challenge.text or ""))
    await peer.send(f"<response xmlns='{ns.SASL}'>{encode_b64(proof)}</response>")
    assert sasl_condition(peer.take()[0]) == "malformed-request"
    after = await peer.login("alice", PASSWORD, features)
    assert after.find(qname(ns.BIND, "bind")) is not None


@pytest.mark.usefixtures("alice")
@pytest.mark.parametrize(
    ("auth", "condition"),
    [
        (f"<auth xmlns='{ns.SASL}' mechanism='DIGEST-MD5'/>", "invalid-mechanism"),
        (f"<auth xmlns='{ns.SASL}'/>", "invalid-mechanism"),
        (f"<auth xmlns='{ns.SASL}' mechanism='PLAIN'>not base64!</auth>", "incorrect-encoding"),
        (f"<auth xmlns='{ns.SASL}' mechanism='PLAIN'>{encode_b64(b'no separators')}</auth>", "malformed-request"),
        (f"<response xmlns='{ns.SASL}'>{encode_b64(b'c=biws')}</response>", "malformed-request"),
    ],
)
async def test_bad_sasl_requests_fail_without_closing(server: Server, auth: str, condition: str) -> None:
    peer, features = await secure_peer(server)
    await peer.send(auth)
    (failure,) = peer.take()
    assert sasl_condition(failure) == condition
    assert not peer.stream.closed
    await peer.login("alice", PASSWORD, features)


async def test_too_many_failed_attempts_on_one_stream(tmp_path: Path) -> None:
    """RFC 6120 §6.4.5: a few retries (2 to 5) are allowed; past them, a <policy-violation/> stream error."""
    limits = {"failed_logins_per_account": 100, "failed_logins_per_ip": 100}
    async with running(tmp_path, limits=limits) as server:
        await add_user(server, "alice", PASSWORD)
        peer, _ = await secure_peer(server)
        conditions = []
        for attempt in range(10):
            client = SaslClient("alice", f"guess {attempt}", ["SCRAM-SHA-256", "PLAIN"], allow_plain=attempt % 2 == 1)
            conditions.append(sasl_condition(await peer.authenticate(client)))
            if peer.stream.closed:
                break
        assert 3 <= len(conditions) <= 6
        assert set(conditions) == {"not-authorized"}
        assert peer.stream_error() == "policy-violation"
        assert not peer.stream.authenticated
        # A fresh connection may try again (the account throttle is what limits guessing overall).
        fresh, features = await secure_peer(server)
        assert (await fresh.login("alice", PASSWORD, features)).find(qname(ns.BIND, "bind")) is not None


@pytest.mark.usefixtures("alice")
async def test_retries_within_the_limit_keep_the_stream(server: Server) -> None:
    peer, features = await secure_peer(server)
    for attempt in range(2):
        client = SaslClient("alice", f"typo {attempt}", ["SCRAM-SHA-256"])
        assert sasl_condition(await peer.authenticate(client)) == "not-authorized"
    assert not peer.stream.closed
    await peer.login("alice", PASSWORD, features)


@pytest.mark.usefixtures("alice")
@pytest.mark.parametrize("typed", ["Alice", "ALICE", "alice"])
async def test_the_login_name_is_case_mapped_like_the_jid(server: Server, typed: str) -> None:
    """RFC 7622 §3.3: the localpart is case-mapped, so 'Alice' is the account 'alice'."""
    peer, features = await secure_peer(server)
    await peer.login(typed, PASSWORD, features)
    assert peer.stream.username == "alice"
    assert bound_jid(await peer.bind("desk")) == "alice@localhost/desk"


@pytest.mark.parametrize("typed", ["alice@evil.test", "alice/desk", "al ice", ""])
async def test_a_login_name_that_cannot_be_a_localpart_fails_like_a_wrong_password(server: Server, typed: str) -> None:
    await add_user(server, "alice", PASSWORD)
    peer, features = await secure_peer(server)
    reply = await peer.authenticate(SaslClient(typed, PASSWORD, mechanisms(features)))
    assert sasl_condition(reply) in ("not-authorized", "malformed-request")
    assert not peer.stream.authenticated


# Stanza intake: reading on while earlier stanzas finish ----------------------------------------


# The server, the writes its messages defer by id, and the ids it delivered.
Deferring = tuple[Server, dict[str, asyncio.Future[None]], list[str]]


@pytest.fixture
async def deferring(tmp_path: Path) -> AsyncIterator[Deferring]:
    """A server whose messages with an id in ``writes`` defer that write (as the archive defers
    its copies), and whose delivery records the ids it saw; stream management is on."""
    writes: dict[str, asyncio.Future[None]] = {}
    delivered: list[str] = []

    async def defer(stanza: Stanza, _origin: Session | None) -> None:
        if stanza.id in writes:
            server.router.defer(stanza, writes[stanza.id])

    async def deliver(stanza: Stanza, _origin: Session | None) -> Handled:
        delivered.append(stanza.id or "")
        return HANDLED

    modules = {"disable": [name for name in DEFAULT_MODULES if name != "sm"]}
    async with running(tmp_path, modules=modules) as server:
        server.hooks.add("pre-message/bare", defer)
        server.hooks.add("message/bare", deliver)
        await add_user(server, "alice")
        yield server, writes, delivered


def message(id: str) -> str:
    return f"<message to='bob@localhost' id='{id}' type='chat'><body>{id}</body></message>"


async def test_a_stream_reads_on_and_counts_in_order(deferring: Deferring) -> None:
    server, writes, delivered = deferring
    writes["m1"] = asyncio.get_running_loop().create_future()
    alice = await connect(server, "alice@localhost/desk")
    await alice.send(message("m1"), finished=False)
    await alice.send(message("m2"), finished=False)
    # m2 was routed while m1's write was under way; neither counts as handled before m1's write is done.
    assert delivered == ["m1", "m2"]
    assert alice.stream.stanzas_handled == 0
    writes["m1"].set_result(None)
    await alice.stream.finished()
    assert alice.stream.stanzas_handled == 2


async def test_an_ack_request_is_answered_after_the_stanzas_before_it(deferring: Deferring) -> None:
    server, writes, _delivered = deferring
    writes["m1"] = asyncio.get_running_loop().create_future()
    alice = await connect(server, "alice@localhost/desk")
    await alice.send(f"<enable xmlns='{SM}'/>")
    alice.take()
    await alice.send(message("m1"), finished=False)
    asking = asyncio.create_task(alice.send(f"<r xmlns='{SM}'/>"))
    await turns()
    assert not asking.done() and alice.take() == []
    writes["m1"].set_result(None)
    await asking
    (ack,) = alice.take()
    assert ack.tag == qname(SM, "a") and ack.get("h") == "1"


async def test_a_stream_stops_reading_when_too_many_stanzas_wait(deferring: Deferring) -> None:
    server, writes, delivered = deferring
    stuck: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    ids = [f"m{n}" for n in range(UNFINISHED_MAX + 2)]
    writes.update(dict.fromkeys(ids, stuck))
    alice = await connect(server, "alice@localhost/desk")
    for id in ids[:UNFINISHED_MAX]:
        await alice.send(message(id), finished=False)
    # One more is read, and then the stream waits for storage to catch up before reading on.
    reading = asyncio.create_task(alice.send(message(ids[UNFINISHED_MAX]), finished=False))
    await turns()
    assert not reading.done()
    assert delivered == ids[:UNFINISHED_MAX + 1]
    stuck.set_result(None)
    await reading
    await alice.send(message(ids[-1]))
    assert alice.stream.stanzas_handled == len(ids)


async def test_a_lost_connection_counts_what_it_read_before_it_ends(deferring: Deferring) -> None:
    server, writes, _delivered = deferring
    writes["m1"] = asyncio.get_running_loop().create_future()
    alice = await connect(server, "alice@localhost/desk")
    await alice.send(message("m1"), finished=False)
    closing = asyncio.create_task(alice.close())
    await turns()
    # The session is not announced gone (nor handed to a resumption) before its count is final.
    assert not closing.done() and server.sessions.get(JID.parse("alice@localhost/desk")) is not None
    writes["m1"].set_result(None)
    await closing
    assert alice.stream.stanzas_handled == 1
    assert server.sessions.get(JID.parse("alice@localhost/desk")) is None

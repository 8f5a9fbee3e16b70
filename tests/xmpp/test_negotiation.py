"""Our client's stream negotiation paired with the server's, both ends in memory, no sockets.

RFC 6120 §4 (streams), §5 (STARTTLS), §6 (SASL), §7 (binding); RFC 5802 §6 and XEP-0440 (channel
binding). The client side is the sans-IO :class:`ClientStream`; the server side is the real
:class:`C2SStream` behind a connection that moves bytes as ``server/net.py`` does (a new parser
after STARTTLS and after SASL success). The TLS handshake is the one thing left out: both ends are
told the channel-binding data a real handshake would give them.
"""

from __future__ import annotations

from pathlib import Path
from xml.etree.ElementTree import Element

import pytest

from schnack.server.app import Server
from schnack.server.c2s import C2SStream
from schnack.xmpp import ns
from schnack.xmpp.errors import StreamError
from schnack.xmpp.jid import JID
from schnack.xmpp.negotiation import (
    AuthenticationFailed,
    ClientStream,
    Closed,
    Event,
    NegotiationError,
    Ready,
    Received,
    TlsRequested,
    choose_binding,
)
from schnack.xmpp.parser import StanzaReceived, StreamClosed, StreamOpened, StreamParser
from schnack.xmpp.sasl import Challenge, SaslServer, Success, decode_b64, derive_credentials, encode_b64
from schnack.xmpp.xml import element, qname

from ..harness import add_user, running

PASSWORD = "correct horse"
ALICE = JID.parse("alice@localhost")
EXPORTER = b"E" * 32
END_POINT = b"S" * 32


class Connection:
    """What the server's stream writes goes to the client; TLS facts as a real connection has them."""

    websocket = False

    def __init__(self, *, secure: bool, can_starttls: bool, bindings: dict[str, bytes]) -> None:
        self.peer = "192.0.2.7:40000"
        self.secure = secure
        self.can_starttls = can_starttls
        self.bindings = bindings
        self.to_client = bytearray()
        self.closed = False

    def write(self, data: str) -> None:
        self.to_client += data.encode()

    def close_transport(self) -> None:
        self.closed = True

    def channel_binding(self, kind: str) -> bytes | None:
        return self.bindings.get(kind) if self.secure else None


class Pair:
    """A ClientStream and a C2SStream joined in memory; :meth:`run` moves bytes until both are quiet."""

    def __init__(self, server: Server, client: ClientStream, *, secure: bool = False, can_starttls: bool = True,
                 server_bindings: dict[str, bytes] | None = None, client_bindings: dict[str, bytes] | None = None) -> None:
        self.client = client
        self.conn = Connection(secure=secure, can_starttls=can_starttls, bindings=server_bindings or {})
        self.server_stream = C2SStream(server, self.conn)
        self.client_bindings = client_bindings or {}
        self.parser = StreamParser(10**7)
        self.sent: list[bytes] = []

    async def run(self) -> list[Event]:
        """Start (if not started) and exchange bytes until neither side has anything to say."""
        if self.client.state == "idle":
            self.client.start()
        events: list[Event] = []
        while True:
            out = self.client.data_to_send()
            if out:
                self.sent.append(out)
                await self._to_server(out)
            inbound = bytes(self.conn.to_client)
            self.conn.to_client.clear()
            if inbound:
                for event in self.client.receive(inbound) + self.client.flush():
                    events.append(event)
                    if isinstance(event, TlsRequested):
                        # What the I/O layer does: the handshake, then tell the stream.
                        self.client.tls_established(self.client_bindings)
            if not out and not inbound:
                return events

    async def _to_server(self, data: bytes) -> None:
        stream = self.server_stream
        if stream.closed:
            return
        try:
            for item in self.parser.feed(data) + self.parser.flush():
                if isinstance(item, StreamOpened):
                    await stream.on_open(item.name, item.attrs, item.default_ns)
                elif isinstance(item, StanzaReceived):
                    await stream.on_element(item.element)
                elif isinstance(item, StreamClosed):
                    stream.on_close()
                if stream.want_tls:
                    stream.want_tls = False
                    self.conn.secure = True
                    self.parser = StreamParser(10**7)
                    return
                if stream.want_restart:
                    stream.want_restart = False
                    self.parser = StreamParser(10**7)
                    return
        except StreamError as err:
            stream.close(err)

    def wrote(self, text: str) -> bool:
        """Whether the client ever sent ``text``."""
        return any(text.encode() in chunk for chunk in self.sent)


def ready(events: list[Event]) -> Ready:
    found = [e for e in events if isinstance(e, Ready)]
    assert len(found) == 1, events
    return found[0]


@pytest.fixture
async def alice(server: Server) -> None:
    await add_user(server, "alice", PASSWORD)


# Negotiation that succeeds -----------------------------------------------------------------------


@pytest.mark.usefixtures("alice")
async def test_starttls_scram_and_bind_on_a_plain_connection(server: Server) -> None:
    pair = Pair(server, ClientStream(ALICE, PASSWORD))
    events = await pair.run()
    assert any(isinstance(e, TlsRequested) for e in events)
    done = ready(events)
    assert done.jid.bare == ALICE and done.jid.resource
    # Without channel-binding data nothing is offered with -PLUS: the strongest plain SCRAM.
    assert pair.client.mechanism == "SCRAM-SHA-256"
    assert pair.client.channel_binding is None
    # The server offered PLAIN too (over TLS); our client never sends the password itself.
    assert not pair.wrote("mechanism='PLAIN'")
    session = server.sessions.get(done.jid)
    assert session is not None and session.secure
    assert session is pair.server_stream.session
    assert pair.client.ready and pair.client.stream_id == pair.server_stream.id


@pytest.mark.usefixtures("alice")
async def test_direct_tls_names_the_account_and_binds_the_requested_resource(server: Server) -> None:
    pair = Pair(server, ClientStream(ALICE, PASSWORD, resource="desk", secure=True), secure=True, can_starttls=False)
    done = ready(await pair.run())
    assert done.jid == JID.parse("alice@localhost/desk")
    assert not pair.wrote("<starttls")
    # RFC 6120 §4.7.1: on a secure stream the initiating entity says who it is.
    assert pair.wrote("from=\"alice@localhost\"")
    assert done.features.find(qname(ns.BIND, "bind")) is not None


@pytest.mark.usefixtures("alice")
async def test_channel_binding_prefers_tls_exporter(server: Server) -> None:
    bindings = {"tls-exporter": EXPORTER, "tls-server-end-point": END_POINT}
    pair = Pair(server, ClientStream(ALICE, PASSWORD), server_bindings=bindings, client_bindings=bindings)
    ready(await pair.run())
    assert pair.client.mechanism == "SCRAM-SHA-256-PLUS"
    assert pair.client.channel_binding == "tls-exporter"


@pytest.mark.usefixtures("alice")
async def test_channel_binding_follows_what_the_server_advertises(server: Server) -> None:
    """XEP-0440: the server can check only tls-server-end-point; the client binds to that."""
    pair = Pair(server, ClientStream(ALICE, PASSWORD), server_bindings={"tls-server-end-point": END_POINT},
                client_bindings={"tls-exporter": EXPORTER, "tls-server-end-point": END_POINT})
    ready(await pair.run())
    assert pair.client.mechanism == "SCRAM-SHA-256-PLUS"
    assert pair.client.channel_binding == "tls-server-end-point"


@pytest.mark.usefixtures("alice")
async def test_a_different_tls_channel_fails_authentication(server: Server) -> None:
    """A machine in the middle terminates TLS: the client's channel is not the server's."""
    pair = Pair(server, ClientStream(ALICE, PASSWORD), server_bindings={"tls-exporter": EXPORTER},
                client_bindings={"tls-exporter": b"M" * 32})
    with pytest.raises(AuthenticationFailed) as failed:
        await pair.run()
    assert failed.value.condition == "not-authorized"
    assert server.sessions.get(JID.parse("alice@localhost/x")) is None


@pytest.mark.usefixtures("alice")
async def test_stanzas_flow_both_ways_once_ready(server: Server) -> None:
    pair = Pair(server, ClientStream(ALICE, PASSWORD, resource="r", secure=True), secure=True, can_starttls=False)
    ready(await pair.run())
    pair.client.send(element(qname(ns.CLIENT, "iq"), {"type": "get", "id": "p1", "to": "localhost"},
                             children=[element(qname(ns.PING, "ping"))]))
    (reply,) = [e for e in await pair.run() if isinstance(e, Received)]
    assert reply.element.tag == qname(ns.CLIENT, "iq")
    assert reply.element.get("type") == "result" and reply.element.get("id") == "p1"


# Failures ----------------------------------------------------------------------------------------


@pytest.mark.usefixtures("alice")
async def test_wrong_password_is_an_authentication_failure(server: Server) -> None:
    pair = Pair(server, ClientStream(ALICE, "wrong", secure=True), secure=True, can_starttls=False)
    with pytest.raises(AuthenticationFailed) as failed:
        await pair.run()
    assert failed.value.condition == "not-authorized"
    assert "wrong username or password" in str(failed.value)


async def test_no_login_without_tls(tmp_path: Path) -> None:
    """A server that offers no STARTTLS on a plain connection never sees an authentication attempt."""
    async with running(tmp_path, tls={"require_c2s": False}) as server:
        await add_user(server, "alice", PASSWORD)
        pair = Pair(server, ClientStream(ALICE, PASSWORD), can_starttls=False)
        with pytest.raises(NegotiationError, match="does not offer TLS"):
            await pair.run()
        assert not pair.wrote("<auth")


async def test_unknown_domain_closes_with_the_servers_stream_error(server: Server) -> None:
    pair = Pair(server, ClientStream(JID.parse("alice@elsewhere.example"), PASSWORD))
    events = await pair.run()
    assert events == [Closed("host-unknown", "this server does not serve elsewhere.example")]
    assert pair.client.state == "closed"
    # RFC 6120 §4.4: the client answers the server's end with its own.
    assert pair.sent[-1] == b"</stream:stream>"


@pytest.mark.usefixtures("alice")
async def test_closing_is_answered_by_the_server(server: Server) -> None:
    pair = Pair(server, ClientStream(ALICE, PASSWORD, secure=True), secure=True, can_starttls=False)
    ready(await pair.run())
    pair.client.close()
    assert await pair.run() == [Closed()]
    assert pair.server_stream.closed and pair.conn.closed
    with pytest.raises(RuntimeError):
        pair.client.send(element(qname(ns.CLIENT, "presence")))


@pytest.mark.usefixtures("alice")
async def test_session_replaced_reads_as_conflict(server: Server) -> None:
    first = Pair(server, ClientStream(ALICE, PASSWORD, resource="same", secure=True), secure=True, can_starttls=False)
    ready(await first.run())
    second = Pair(server, ClientStream(ALICE, PASSWORD, resource="same", secure=True), secure=True, can_starttls=False)
    ready(await second.run())
    (closed,) = await first.run()
    assert isinstance(closed, Closed) and closed.condition == "conflict"


# A scripted server, for what schnack's server never does ----------------------------------------

HEADER = (
    "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' "
    "id='s1' from='localhost' version='{version}'>"
)
MECHANISMS = (
    "<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>"
    "<mechanism>SCRAM-SHA-256</mechanism></mechanisms></stream:features>"
)


class Scripted:
    """Plays the server by hand, with the real SCRAM server underneath for the exchange."""

    def __init__(self, verifier: bytes | None = None) -> None:
        self.client = ClientStream(ALICE, PASSWORD, secure=True)
        self.client.start()
        self.parser = StreamParser(10**6)
        self.parser.feed(self.client.data_to_send())
        self.verifier = verifier

    def sent(self) -> list[Element]:
        """The elements the client sent since the last call."""
        data = self.client.data_to_send()
        return [e.element for e in self.parser.feed(data) + self.parser.flush() if isinstance(e, StanzaReceived)]

    def feed(self, text: str) -> list[Event]:
        return self.client.receive(text.encode()) + self.client.flush()

    def authenticate(self) -> None:
        """Run SCRAM-SHA-256 to the server's <success/>; then the client restarts the stream."""
        self.feed(HEADER.format(version="1.0") + MECHANISMS)
        (auth,) = self.sent()
        scram = SaslServer("SCRAM-SHA-256", tls=True, channel_binding=lambda _kind: None, domain="localhost")
        scram.start(decode_b64(auth.text or ""))
        challenge = scram.provide_credentials(derive_credentials(PASSWORD))
        assert isinstance(challenge, Challenge)
        self.feed(f"<challenge xmlns='{ns.SASL}'>{encode_b64(challenge.data)}</challenge>")
        (response,) = self.sent()
        success = scram.respond(decode_b64(response.text or ""))
        assert isinstance(success, Success)
        data = self.verifier if self.verifier is not None else success.data
        self.feed(f"<success xmlns='{ns.SASL}'>{encode_b64(data)}</success>")
        self.parser = StreamParser(10**6)
        self.parser.feed(self.client.data_to_send())


def test_a_server_that_cannot_prove_the_password_is_refused() -> None:
    """RFC 5802 §5.1: the client checks the server signature; a wrong one ends the login."""
    scripted = Scripted(verifier=b"v=" + encode_b64(b"x" * 32).encode())
    with pytest.raises(AuthenticationFailed, match="could not prove"):
        scripted.authenticate()


def test_legacy_session_is_established_when_the_server_requires_it() -> None:
    """RFC 3921 §3: a server offering <session/> without <optional/> gets the request before ready."""
    scripted = Scripted()
    scripted.authenticate()
    assert scripted.client.authenticated and scripted.client.state == "header"
    scripted.feed(HEADER.format(version="1.0") + f"<stream:features><bind xmlns='{ns.BIND}'/>"
                  f"<session xmlns='{ns.SESSION}'/></stream:features>")
    (bind,) = scripted.sent()
    assert bind.find(qname(ns.BIND, "bind")) is not None
    scripted.feed(f"<iq type='result' id='{bind.get('id')}'><bind xmlns='{ns.BIND}'>"
                  "<jid>alice@localhost/x1</jid></bind></iq>")
    (session,) = scripted.sent()
    assert session.find(qname(ns.SESSION, "session")) is not None
    assert not scripted.client.ready
    (done,) = scripted.feed(f"<iq type='result' id='{session.get('id')}'/>")
    assert isinstance(done, Ready) and done.jid == JID.parse("alice@localhost/x1")


def test_stanzas_read_with_the_bind_result_follow_ready() -> None:
    """RFC 6120 §7: what is routed to the session just after its bind result may arrive in the
    same read; it comes out after Ready, as stanzas of the established stream."""
    scripted = Scripted()
    scripted.authenticate()
    scripted.feed(HEADER.format(version="1.0") + f"<stream:features><bind xmlns='{ns.BIND}'/></stream:features>")
    (bind,) = scripted.sent()
    events = scripted.feed(f"<iq type='result' id='{bind.get('id')}'><bind xmlns='{ns.BIND}'>"
                           "<jid>alice@localhost/x1</jid></bind></iq>"
                           "<iq type='result' id='late' to='alice@localhost/x1'/>"
                           "<message from='bob@localhost/desk' id='m1'><body>hi</body></message>")
    assert isinstance(events[0], Ready) and scripted.client.ready
    assert [e.element.get("id") for e in events[1:] if isinstance(e, Received)] == ["late", "m1"]


def test_a_bound_jid_of_another_account_breaks_the_stream() -> None:
    scripted = Scripted()
    scripted.authenticate()
    scripted.feed(HEADER.format(version="1.0") + f"<stream:features><bind xmlns='{ns.BIND}'/></stream:features>")
    (bind,) = scripted.sent()
    with pytest.raises(StreamError) as err:
        scripted.feed(f"<iq type='result' id='{bind.get('id')}'><bind xmlns='{ns.BIND}'>"
                      "<jid>mallory@localhost/x1</jid></bind></iq>")
    assert err.value.condition == "invalid-xml"


def test_a_binding_error_names_its_condition() -> None:
    scripted = Scripted()
    scripted.authenticate()
    scripted.feed(HEADER.format(version="1.0") + f"<stream:features><bind xmlns='{ns.BIND}'/></stream:features>")
    (bind,) = scripted.sent()
    with pytest.raises(NegotiationError) as err:
        scripted.feed(f"<iq type='error' id='{bind.get('id')}'><error type='wait'>"
                      f"<resource-constraint xmlns='{ns.STANZA_ERRORS}'/></error></iq>")
    assert err.value.condition == "resource-constraint"
    assert "resource binding failed" in str(err.value)


@pytest.mark.parametrize("version", ["0.9", "2.0", "x", "\u00b2.0", "\u0661.\u0660"])
def test_a_server_not_speaking_xmpp_1_is_refused(version: str) -> None:
    client = ClientStream(ALICE, PASSWORD, secure=True)
    client.start()
    with pytest.raises(StreamError) as err:
        client.receive(HEADER.format(version=version).encode())
    assert err.value.condition == "unsupported-version"


def test_stream_error_is_an_event_and_is_answered() -> None:
    client = ClientStream(ALICE, PASSWORD, secure=True)
    client.start()
    client.data_to_send()
    events = client.receive((HEADER.format(version="1.0") + "<stream:error><system-shutdown "
                             f"xmlns='{ns.STREAM_ERRORS}'/></stream:error></stream:stream>").encode())
    assert events == [Closed("system-shutdown", None)]
    assert client.data_to_send() == b"</stream:stream>"


def _asked_for_tls() -> ClientStream:
    """A client on a plain connection that sent <starttls/>."""
    client = ClientStream(ALICE, PASSWORD)
    client.start()
    client.receive((HEADER.format(version="1.0") + f"<stream:features><starttls xmlns='{ns.TLS}'/>"
                    "</stream:features>").encode())
    assert client.data_to_send().endswith(f"<starttls xmlns='{ns.TLS}'/>".encode())
    return client


PROCEED = f"<proceed xmlns='{ns.TLS}'/>"


@pytest.mark.parametrize("behind", ["<message id='m1'><body>injected</body></message>", "\n<mess",
                                    "</stream:stream>"])
def test_input_read_with_proceed_is_refused(behind: str) -> None:
    """RFC 6120 §5.4.3.3: nothing but the TLS handshake follows <proceed/>; what came with it
    came in the clear (the injection of CVE-2011-0411) and ends the stream before TLS."""
    client = _asked_for_tls()
    with pytest.raises(StreamError) as err:
        client.receive((PROCEED + behind).encode())
    assert err.value.condition == "policy-violation"


def test_input_read_after_proceed_before_tls_is_refused_unless_whitespace() -> None:
    """What the I/O layer still holds of the plain connection when it starts TLS goes through the
    same check; whitespace (RFC 6120 §11.7) carries nothing and is dropped."""
    client = _asked_for_tls()
    assert client.receive(f"{PROCEED} \r\n".encode()) == [TlsRequested()]
    assert client.receive(b"\t ") == []
    with pytest.raises(StreamError) as err:
        client.receive(b" <message id='m1'/>")
    assert err.value.condition == "policy-violation"


def test_an_account_jid_is_required() -> None:
    with pytest.raises(ValueError, match="not an account"):
        ClientStream(JID.parse("localhost"), PASSWORD)


# Which channel binding ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("offered", "advertised", "available", "expected"),
    [
        # XEP-0440 lists the types: the best one both ends have.
        (["SCRAM-SHA-256-PLUS"], ["tls-server-end-point", "tls-exporter"],
         {"tls-exporter": EXPORTER, "tls-server-end-point": END_POINT}, "tls-exporter"),
        (["SCRAM-SHA-256-PLUS"], ["tls-unique"], {"tls-unique": b"U", "tls-server-end-point": END_POINT}, "tls-unique"),
        (["SCRAM-SHA-256-PLUS"], ["tls-unique"], {"tls-exporter": EXPORTER}, None),
        # No XEP-0440: the defaults of RFC 9266 (TLS 1.3) and RFC 5802 (before); never a guess at end-point.
        (["SCRAM-SHA-1-PLUS"], None, {"tls-exporter": EXPORTER, "tls-server-end-point": END_POINT}, "tls-exporter"),
        (["SCRAM-SHA-1-PLUS"], None, {"tls-unique": b"U"}, "tls-unique"),
        (["SCRAM-SHA-1-PLUS"], None, {"tls-server-end-point": END_POINT}, None),
        # No -PLUS offered: a binding is still named, so that SCRAM says 'y' (downgrade detection).
        (["SCRAM-SHA-256"], None, {"tls-server-end-point": END_POINT}, "tls-server-end-point"),
        (["SCRAM-SHA-256"], None, {}, None),
    ],
)
def test_choose_binding(offered: list[str], advertised: list[str] | None, available: dict[str, bytes],
                        expected: str | None) -> None:
    choice = choose_binding(offered, advertised, available)
    assert (choice[0] if choice else None) == expected
    if choice:
        assert choice[1] == available[choice[0]]

"""Server-to-server streams on a real socket, driven by a hand-written peer: what RFC 6120 and
XEP-0220 require of the receiving and the authoritative server, and bounces of the outgoing side."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import pytest

from schnack.server.app import Server
from schnack.server.s2s.dialback import dialback_key
from schnack.server.s2s.wire import Wire, header
from schnack.server.sessions import Session
from schnack.server.tls import make_self_signed
from schnack.xmpp import ns
from schnack.xmpp.errors import StreamError
from schnack.xmpp.parser import StanzaReceived, StreamClosed, StreamOpened
from schnack.xmpp.stanza import Stanza
from schnack.xmpp.xml import element

from ...client.dns import dns_server
from ...harness import Client, add_user, connect, make_config, running
from ..modules.messaging import condition, error_text
from .raw import WAIT, RawPeer, RawReceiver, authenticated_peer, dialback, until_input

SECRET = "our dialback secret"
DB = "{jabber:server:dialback}"


@contextlib.asynccontextmanager
async def silent_listener() -> AsyncIterator[int]:
    """A port that accepts connections and never says anything."""
    held: list[asyncio.StreamWriter] = []

    async def hold(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    srv = await asyncio.start_server(hold, "127.0.0.1", 0)
    try:
        yield srv.sockets[0].getsockname()[1]
    finally:
        for writer in held:
            writer.close()
        srv.close()


@contextlib.asynccontextmanager
async def beside(tmp_path: Path, raw: RawReceiver) -> AsyncIterator[Server]:
    """Our server, with ``raw`` (started) as the server of raw.example; both stop after."""
    server = Server(make_config(tmp_path, listen={"s2s": ["127.0.0.1:0"]}, s2s={
        "enabled": True, "verify": False, "connect_timeout": 5,
        "hosts": {"raw.example": f"127.0.0.1:{raw.port}"}}))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
        raw.stop()


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    async with silent_listener() as silent:
        srv = Server(make_config(
            tmp_path,
            listen={"s2s": ["127.0.0.1:0"]},
            s2s={"enabled": True, "dialback_secret": SECRET, "connect_timeout": 1,
                 "hosts": {"silent.example": f"127.0.0.1:{silent}", "closed.example": "127.0.0.1:1"}},
        ))
        await srv.start()
        try:
            yield srv
        finally:
            await srv.stop()


async def peer(server: Server) -> RawPeer:
    host, port = server.bound["s2s"][0]
    return await RawPeer.connect(host, port)


async def test_unknown_domain_is_host_unknown(server: Server) -> None:
    raw = await peer(server)
    raw.send(f"<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:stream='{ns.STREAMS}' "
             "from='other.example' to='nothere.example' version='1.0'>")
    assert await raw.stream_error() == "host-unknown"


async def test_tls_is_required_before_stanzas(server: Server) -> None:
    raw = await peer(server)
    features = await raw.open("other.example", "localhost")
    assert features.find(f"{{{ns.TLS}}}starttls/{{{ns.TLS}}}required") is not None
    raw.send("<message from='a@other.example' to='alice@localhost'><body>hi</body></message>")
    assert await raw.stream_error() == "policy-violation"


async def test_stanza_from_an_unauthenticated_domain_is_invalid_from(server: Server) -> None:
    raw = await peer(server)
    await raw.starttls("other.example", "localhost")
    raw.send("<message from='a@other.example' to='alice@localhost'><body>hi</body></message>")
    assert await raw.stream_error() == "invalid-from"


async def test_stanza_without_from_is_improper_addressing(server: Server) -> None:
    raw = await peer(server)
    await raw.starttls("other.example", "localhost")
    raw.send("<message to='alice@localhost'><body>hi</body></message>")
    assert await raw.stream_error() == "improper-addressing"


async def test_authoritative_server_answers_verify(server: Server) -> None:
    """XEP-0220 §2.1.4: a key we made checks out; any other does not."""
    raw = await peer(server)
    await raw.starttls("other.example", "localhost")
    good = dialback_key(SECRET, "other.example", "localhost", "their-stream")
    raw.send(f"<db:verify from='other.example' to='localhost' id='their-stream'>{good}</db:verify>")
    answer = await raw.element()
    assert (answer.tag, answer.get("type"), answer.get("id")) == (f"{DB}verify", "valid", "their-stream")
    assert (answer.get("from"), answer.get("to")) == ("localhost", "other.example")
    raw.send(f"<db:verify from='other.example' to='localhost' id='another-stream'>{good}</db:verify>")
    assert (await raw.element()).get("type") == "invalid"


async def test_dialback_with_an_unreachable_authority_is_an_error(server: Server) -> None:
    raw = await peer(server)
    await raw.starttls("closed.example", "localhost")
    raw.send("<db:result from='closed.example' to='localhost'>0123</db:result>")
    answer = await raw.element()
    assert (answer.tag, answer.get("type")) == (f"{DB}result", "error")
    assert answer.find("{jabber:server:dialback}error/{urn:ietf:params:xml:ns:xmpp-stanzas}remote-server-not-found") is not None


async def test_waiting_stanzas_bounce_by_cause(server: Server) -> None:
    """RFC 6120 §8.3.3: a server that does not answer in time, and one that cannot be reached."""
    await add_user(server, "alice")
    alice = await connect(server, "alice@localhost/desk")
    await alice.send("<message to='bob@silent.example' id='m1' type='chat'><body>hello?</body></message>")
    await alice.send("<message to='bob@closed.example' id='m2' type='chat'><body>hello?</body></message>")
    errors = {el.get("id"): condition(el) for el in await alice.expect(2, timeout=10)}
    assert errors == {"m1": "remote-server-timeout", "m2": "remote-server-not-found"}


async def test_waiting_iq_results_and_errors_do_not_bounce(server: Server) -> None:
    """RFC 6120 §8.2.3, §8.3.1: nothing answers a response; only the request that waited with
    them comes back."""
    await add_user(server, "alice")
    alice = await connect(server, "alice@localhost/desk")
    await alice.send("<iq to='bob@closed.example/x' id='r1' type='result'/>")
    await alice.send("<iq to='bob@closed.example/x' id='e1' type='error'><error type='cancel'>"
                     f"<item-not-found xmlns='{ns.STANZA_ERRORS}'/></error></iq>")
    await alice.send("<iq to='bob@closed.example/x' id='q1' type='get'><ping xmlns='urn:xmpp:ping'/></iq>")
    (error,) = await alice.expect(1, timeout=10)
    assert (error.get("id"), condition(error)) == ("q1", "remote-server-not-found")
    await asyncio.sleep(0.2)
    assert alice.take() == []


async def test_a_domain_dns_cannot_carry_is_not_found_at_once(
        server: Server, caplog: pytest.LogCaptureFixture) -> None:
    """A JID domain that DNS cannot carry (IDNA2008 disallows U+2488, RFC 5892) names no
    server: remote-server-not-found without waiting, and a warning rather than a traceback,
    since nothing is broken here."""
    await add_user(server, "alice")
    alice = await connect(server, "alice@localhost/desk")
    with caplog.at_level(logging.INFO, logger="schnack.server.s2s"):
        await alice.send("<message to='bob@\u2488.example' id='m1' type='chat'><body>hello?</body></message>")
        (error,) = await alice.expect(1, timeout=10)
    assert (error.get("id"), condition(error)) == ("m1", "remote-server-not-found")
    assert [r.levelno for r in caplog.records if r.levelno >= logging.WARNING] == [logging.WARNING]
    assert not any(r.exc_info for r in caplog.records)


async def test_a_stanza_sent_while_a_failed_route_bounces_gets_a_new_attempt(server: Server) -> None:
    """RFC 6120 §8.3.3 is for the stanzas that waited on the failed attempt; one that comes while
    they bounce is not part of it and starts a new connection (here refused again)."""
    await add_user(server, "alice")
    alice = await connect(server, "alice@localhost/desk")
    routes: list[object] = []

    async def send_more_on_first_bounce(stanza: Stanza, _origin: Session | None) -> None:
        if stanza.id == "m1" and stanza.type == "error":
            routes.append(server.s2s.routes.get(("localhost", "closed.example")))
            await server.router.send(element(f"{{{ns.CLIENT}}}message", {
                "from": "alice@localhost/desk", "to": "bob@closed.example", "id": "m2", "type": "chat"}))
            routes.append(server.s2s.routes.get(("localhost", "closed.example")))

    server.hooks.add("message/full", send_more_on_first_bounce, priority=1000)
    await alice.send("<message to='bob@closed.example' id='m1' type='chat'><body>hello?</body></message>")
    errors = {el.get("id"): condition(el) for el in await alice.expect(2, timeout=10)}
    assert errors == {"m1": "remote-server-not-found", "m2": "remote-server-not-found"}
    assert routes[0] is None and routes[1] is not None


async def test_disabled_federation_answers_remote_server_not_found(tmp_path: Path) -> None:
    async with running(tmp_path) as server:
        await add_user(server, "alice")
        alice = await connect(server, "alice@localhost/desk")
        await alice.send("<message to='bob@other.example' id='m1' type='chat'><body>hi</body></message>")
        (error,) = await alice.expect()
        assert condition(error) == "remote-server-not-found"


async def test_sasl_external_needs_a_verified_certificate(server: Server) -> None:
    raw = await peer(server)
    features = await raw.starttls("other.example", "localhost")
    assert features.find(f"{{{ns.SASL}}}mechanisms") is None
    raw.send(f"<auth xmlns='{ns.SASL}' mechanism='EXTERNAL'>=</auth>")
    failure = await raw.element()
    assert failure.tag == f"{{{ns.SASL}}}failure"
    assert failure.find(f"{{{ns.SASL}}}invalid-mechanism") is not None


class GarbledAuthority(RawReceiver):
    """An authoritative server that answers a dialback verification with broken XML."""

    async def answer(self, peer: RawPeer, request: ET.Element) -> None:
        assert request.tag == f"{DB}verify"
        peer.send("<db:verify <<<")


async def test_dialback_with_a_broken_answer_from_the_authority_is_an_error(tmp_path: Path) -> None:
    """XEP-0220 §2.4: however the authoritative server fails, the request gets an answer."""
    authority = await GarbledAuthority(tmp_path, "raw.example", sm=False).start()
    async with beside(tmp_path, authority) as server:
        raw = await peer(server)
        await raw.starttls("raw.example", "localhost")
        raw.send("<db:result from='raw.example' to='localhost'>0123</db:result>")
        async with asyncio.timeout(10):
            answer = await raw.element()
        assert (answer.tag, answer.get("type")) == (f"{DB}result", "error")


class RefusingReceiver(RawReceiver):
    """A receiving server that answers every dialback request with ``condition`` as a dialback
    error (XEP-0220 §2.4), or with 'invalid' when it is None."""

    def __init__(self, directory: Path, domain: str, condition: str | None) -> None:
        super().__init__(directory, domain, sm=False)
        self.condition = condition

    async def answer(self, peer: RawPeer, request: ET.Element) -> None:
        attrs = f"from='{self.domain}' to='{request.get('from')}'"
        if self.condition is None:
            peer.send(f"<db:result {attrs} type='invalid'/>")
        else:
            peer.send(f"<db:result {attrs} type='error'><error type='cancel'>"
                      f"<{self.condition} xmlns='{ns.STANZA_ERRORS}'/></error></db:result>")
        await self.accepted.put(peer)


@pytest.mark.parametrize(("given", "bounce", "meaning"), [
    ("item-not-found", "remote-server-timeout", "does not serve raw.example"),
    ("remote-server-not-found", "remote-server-timeout", "could not find the authoritative server of localhost"),
    ("bad-request", "remote-server-timeout", "bad-request"),
    (None, "internal-server-error", "not valid"),
])
async def test_a_refused_dialback_bounces_the_queue_as_xep_0220_says(
        tmp_path: Path, given: str | None, bounce: str, meaning: str) -> None:
    """XEP-0220 §2.1.1, §2.4: after a dialback error the initiating server returns the queued
    stanzas with remote-server-timeout, whatever the condition (the text says which), and after
    'invalid' with internal-server-error."""
    receiver = await RefusingReceiver(tmp_path, "raw.example", given).start()
    async with beside(tmp_path, receiver) as server:
        await add_user(server, "alice")
        alice = await connect(server, "alice@localhost/desk")
        await alice.send("<message to='bob@raw.example' id='m1' type='chat'><body>hello?</body></message>")
        (error,) = await alice.expect(1, timeout=10)
        assert (error.get("id"), condition(error)) == ("m1", bounce)
        assert meaning in (error_text(error) or "")


async def test_dialback_is_offered_with_error_handling(server: Server) -> None:
    """XEP-0220 §2.4.1: a server that sends and understands dialback errors says so."""
    raw = await peer(server)
    features = await raw.starttls("other.example", "localhost")
    assert features.find("{urn:xmpp:features:dialback}dialback/{urn:xmpp:features:dialback}errors") is not None


class DisowningAuthority(RawReceiver):
    """An authoritative server that answers a verification with a dialback error: it does not
    host the domain it was asked about (XEP-0220 §2.4 item-not-found)."""

    async def answer(self, peer: RawPeer, request: ET.Element) -> None:
        assert request.tag == f"{DB}verify"
        peer.send(f"<db:verify from='{request.get('to')}' to='{request.get('from')}' id='{request.get('id')}' "
                  f"type='error'><error type='cancel'><item-not-found xmlns='{ns.STANZA_ERRORS}'/></error></db:verify>")


async def test_a_dialback_error_from_the_authority_is_a_dialback_error_not_invalid(tmp_path: Path) -> None:
    """XEP-0220 §2.4: an error in step 3 is answered with remote-server-not-found, and the stream
    stays (a dialback error is not fatal to it); 'invalid', which ends the stream, would accuse
    the peer of spoofing when nothing said it was."""
    authority = await DisowningAuthority(tmp_path, "raw.example", sm=False).start()
    async with beside(tmp_path, authority) as server:
        raw = await peer(server)
        await raw.starttls("raw.example", "localhost")
        raw.send("<db:result from='raw.example' to='localhost'>0123</db:result>")
        answer = await raw.element()
        assert (answer.tag, answer.get("type")) == (f"{DB}result", "error")
        assert answer.find(f"{DB}error/{{{ns.STANZA_ERRORS}}}remote-server-not-found") is not None
        raw.send("<db:verify from='raw.example' to='localhost' id='s1'>0123</db:verify>")
        assert (await raw.element()).tag == f"{DB}verify"


async def test_a_forged_dialback_key_ends_the_stream(receiving: tuple[Server, str]) -> None:
    """XEP-0220 §2.1.2: the authoritative server says the key is wrong; the stream is answered
    'invalid' and closed, so that the spoofer cannot go on trying on it."""
    server, secret = receiving
    raw = await peer(server)
    await raw.starttls("b.example", "localhost")
    raw.send("<db:result from='b.example' to='localhost'>0123</db:result>")
    answer = await raw.element()
    assert (answer.tag, answer.get("type")) == (f"{DB}result", "invalid")
    key = dialback_key(secret, "localhost", "b.example", raw.stream_id)
    raw.send(f"<db:result from='b.example' to='localhost'>{key}</db:result>")
    assert isinstance(await raw.next(), StreamClosed)


async def test_dialback_requests_waiting_at_once_are_bounded(server: Server) -> None:
    """Each <db:result/> makes us connect to another server: a peer may not have us open
    connections without bound (RFC 6120 §4.9.3.14 policy-violation)."""
    raw = await peer(server)
    await raw.starttls("silent.example", "localhost")
    raw.send("".join(f"<db:result from='silent.example' to='localhost'>{n:04}</db:result>" for n in range(50)))
    async with asyncio.timeout(5):
        assert await raw.stream_error() == "policy-violation"


async def test_an_iq_result_with_a_bad_address_gets_no_stanza_error(receiving: tuple[Server, str]) -> None:
    """RFC 6120 §8.3.1: an IQ result is not answered; its malformed 'to' ends the stream
    (§4.9.3.12), and nothing before the stream error answers the result."""
    raw = await authenticated_peer(receiving)
    raw.send("<iq type='result' id='r1' from='eve@b.example/x' to='b@d@localhost'/>")
    answer = await raw.element()
    assert answer.tag == f"{{{ns.STREAMS}}}error"
    assert answer.find(f"{{{ns.STREAM_ERRORS}}}improper-addressing") is not None


async def test_a_certificate_for_our_own_domain_authenticates_no_peer_as_it(tmp_path: Path) -> None:
    """RFC 6120 §8.1.2.2, §13.1: a certificate that names one of our domains (a web server's for
    the same name, a wildcard) does not let another server send stanzas from it, as dialback
    does not either: no SASL EXTERNAL for it, and a stanza from it ends the stream."""
    cert, key = tmp_path / "peer.crt", tmp_path / "peer.key"
    make_self_signed(["localhost"], cert, key)
    server = Server(make_config(tmp_path, listen={"s2s": ["127.0.0.1:0"]},
                                s2s={"enabled": True, "ca_file": str(cert)}))
    await server.start()
    try:
        await add_user(server, "alice")
        alice = await connect(server, "alice@localhost/desk")
        raw = await peer(server)
        features = await raw.starttls("localhost", "localhost", certificate=(cert, key))
        assert features.find(f"{{{ns.SASL}}}mechanisms") is None
        raw.send(f"<auth xmlns='{ns.SASL}' mechanism='EXTERNAL'>=</auth>")
        assert (await raw.element()).tag == f"{{{ns.SASL}}}failure"
        raw.send("<message from='bob@localhost/x' to='alice@localhost' type='chat'><body>it is me</body></message>")
        assert await raw.stream_error() == "invalid-from"
        assert alice.take() == []
    finally:
        await server.stop()


LONG_LABEL = "a" * 64


@pytest.mark.parametrize(("from_", "to", "stream_error"), [
    ("eve@b.example/x", f"bob@{LONG_LABEL}.localhost", "improper-addressing"),
    (f"eve@{LONG_LABEL}.b.example", "bob@localhost", "invalid-from"),
])
async def test_a_domain_label_over_63_octets_is_no_address(
        receiving: tuple[Server, str], from_: str, to: str, stream_error: str) -> None:
    """RFC 7622 §3.2, RFC 6120 §4.9.3.12: a domain label longer than 63 octets makes no address;
    the stream ends with the stream error for that attribute rather than with no word."""
    raw = await authenticated_peer(receiving)
    raw.send(f"<message from='{from_}' to='{to}' type='chat' id='m1'><body>hi</body></message>")
    assert await raw.stream_error() == stream_error


@contextlib.asynccontextmanager
async def two_servers(tmp_path: Path) -> AsyncIterator[tuple[Server, Server]]:
    """a.example and b.example, each finding the other through ``[s2s] hosts``, with dialback."""

    def config(name: str, hosts: dict[str, str]) -> Any:
        return make_config(tmp_path / name, domains=[f"{name}.example"], listen={"s2s": ["127.0.0.1:0"]},
                           s2s={"enabled": True, "verify": False, "hosts": hosts})

    def address(server: Server) -> str:
        host, port = server.bound["s2s"][0]
        return f"{host}:{port}"

    a = Server(config("a", {}))
    await a.start()
    b = Server(config("b", {"a.example": address(a)}))
    try:
        await b.start()
        a.s2s.config = dataclasses.replace(a.s2s.config, hosts={"b.example": address(b)})
        yield a, b
    finally:
        await b.stop()
        await a.stop()


@contextlib.asynccontextmanager
async def two_users(tmp_path: Path) -> AsyncIterator[tuple[Server, Client, Client]]:
    """:func:`two_servers` with alice@a.example/desk and bob@b.example/desk online: a.example's
    server and the two clients."""
    async with two_servers(tmp_path) as (a, b):
        await add_user(a, "alice", host="a.example")
        await add_user(b, "bob", host="b.example")
        yield a, await connect(a, "alice@a.example/desk"), await connect(b, "bob@b.example/desk")


async def test_what_ending_sessions_send_goes_out_before_a_shutdown(tmp_path: Path) -> None:
    """RFC 6121 §4.6.3: a session that ends sends unavailable presence to whom it sent directed
    presence, at a shutdown too; the route, still connecting, sends both in order before the
    server stops, rather than being stopped with them waiting in its queue."""
    async with two_users(tmp_path) as (a, alice, bob):
        await alice.send("<presence to='bob@b.example/desk'/>")
        await a.stop()
        presences = await bob.expect(2, timeout=10)
        assert [(p.get("from"), p.get("type")) for p in presences] == [
            ("alice@a.example/desk", None), ("alice@a.example/desk", "unavailable")]


async def test_a_stanza_larger_than_servers_take_is_refused_before_it_holds_up_the_route(tmp_path: Path) -> None:
    """RFC 6120 §13.12: a client's stanza just within the size limit grows on its way (the
    server adds its 'from') beyond what the other server takes, which would end the stream
    (policy-violation) each time stream management sent it again, with what came before it
    and after it. It is refused at once; the messages around it arrive, each once."""
    async with two_users(tmp_path) as (a, alice, bob):

        def chat(id_: str, body: str) -> str:
            return f"<message to='bob@b.example/desk' id='{id_}' type='chat'><body>{body}</body></message>"

        filler = a.config.limits.max_stanza_size - len(chat("big", "")) - 10
        await alice.send(chat("m1", "before"))
        await alice.send(chat("big", "x" * filler))
        await alice.send(chat("m2", "after"))
        (error,) = await alice.expect(1, timeout=10)
        assert (error.get("id"), condition(error)) == ("big", "policy-violation")
        got = await bob.expect(2, timeout=10)
        assert [el.get("id") for el in got] == ["m1", "m2"]
        await asyncio.sleep(0.5)
        assert bob.take() == [] and alice.take() == []


async def test_an_idle_incoming_stream_takes_what_the_peer_sent_before_its_close(
        receiving: tuple[Server, str]) -> None:
    """XEP-0190, RFC 6120 §4.4: a silent stream is closed with connection-timeout, and what the
    peer sent before it saw that close is still handled, up to the peer's own close, rather than
    lost with a connection cut at once."""
    server, _ = receiving
    await add_user(server, "bob")
    # Below the bound an operator may set, so that the test does not wait for ten seconds.
    limits = dataclasses.replace(server.config.limits, idle_timeout=1.0)
    server.config = dataclasses.replace(server.config, limits=limits)
    raw = await authenticated_peer(receiving)
    raw.send("<message from='eve@b.example/x' to='bob@localhost' id='first' type='chat'><body>hi</body></message>")
    assert await raw.stream_error() == "connection-timeout"
    assert isinstance(await raw.next(), StreamClosed)
    raw.send("<message from='eve@b.example/x' to='bob@localhost' id='late' type='chat'><body>in flight</body>"
             "</message></stream:stream>")
    async with asyncio.timeout(10):
        assert await raw.reader.read() == b""
    assert await server.storage.archive.count("localhost", "bob", "offline") == 2


async def test_an_idle_incoming_stream_sends_whitespace_keepalives_until_it_ends(
        receiving: tuple[Server, str]) -> None:
    """RFC 6120 §4.6.1: a peer that stays silent on its stream gets a space after each
    ``limits.keepalive_interval`` without writing, as an outgoing stream's peer does, so that a
    dead connection is found by a failing write; they do not keep the stream open past
    ``limits.idle_timeout`` without input, and none follows the stream's end."""
    server, _ = receiving
    keepalive = 0.3
    # Below the bounds an operator may set, so that the test does not wait for a minute.
    limits = dataclasses.replace(server.config.limits, keepalive_interval=keepalive, idle_timeout=2.0)
    server.config = dataclasses.replace(server.config, limits=limits)
    raw = await authenticated_peer(receiving)
    data = b""
    async with asyncio.timeout(10):
        while data.count(b" ") < 2:
            data += await raw.reader.read(65536)
    assert data.strip() == b""
    async with asyncio.timeout(10):
        while b"</stream:stream>" not in data:
            data += await raw.reader.read(65536)
    end = data.lstrip()
    assert end.startswith(b"<error") and b"connection-timeout" in end and end.endswith(b"</stream:stream>")
    # Three keepalive intervals of silence after the stream's end (it ends only at the peer's close).
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(3 * keepalive):
            data = await raw.reader.read(65536)
            raise AssertionError(f"{data!r} after the stream ended")
    raw.send("</stream:stream>")
    async with asyncio.timeout(10):
        assert await raw.reader.read() == b""


async def test_an_iq_result_too_large_for_other_servers_is_answered_with_an_error(tmp_path: Path) -> None:
    """RFC 6120 §8.2.3: the requester at the other server waits for a response; a result too
    large to go there (a vCard with a big photo, say) reaches it as an error in its place."""
    async with two_users(tmp_path) as (a, alice, bob):
        await bob.send("<iq to='alice@a.example/desk' id='q1' type='get'><query xmlns='jabber:iq:version'/></iq>")
        (request,) = await alice.expect(1, timeout=10)
        assert request.get("id") == "q1"
        head = "<iq to='bob@b.example/desk' id='q1' type='result'><query xmlns='jabber:iq:version'><name>"
        tail = "</name></query></iq>"
        filler = a.config.limits.max_stanza_size - len(head) - len(tail) - 10
        await alice.send(head + "x" * filler + tail)
        (answer,) = await bob.expect(1, timeout=10)
        assert (answer.get("id"), answer.get("type"), answer.get("from")) == ("q1", "error", "alice@a.example/desk")
        assert condition(answer) == "policy-violation"
        assert alice.take() == []


async def test_a_stream_authenticated_while_it_waited_is_not_taken_for_idle(receiving: tuple[Server, str]) -> None:
    """The wait for the peer's next element began before dialback ended, bounded by the time
    to authenticate; when it runs out the stream is authenticated, and only a silence of
    ``limits.idle_timeout`` since the last read ends it, not that earlier bound."""
    server, _ = receiving
    auth_timeout = 3.0
    server.config = dataclasses.replace(server.config,
                                        limits=dataclasses.replace(server.config.limits, auth_timeout=auth_timeout))
    raw = await authenticated_peer(receiving)
    await asyncio.sleep(auth_timeout + 0.5)
    raw.send("<db:verify from='b.example' to='localhost' id='s1'>0123</db:verify>")
    answer = await raw.element()
    assert (answer.tag, answer.get("type")) == (f"{DB}verify", "invalid")


@pytest.mark.parametrize("behind", [
    "<db:verify from='other.example' to='localhost' id='s1'>0123</db:verify>",
    "<db:verify from='other.exa",
    " \n<db:verify from='other.example' to='localhost' id='s1'>0123</db:verify>",
    "</stream:stream>",
])
async def test_input_behind_starttls_ends_the_stream_before_tls(server: Server, behind: str) -> None:
    """RFC 6120 §5.4.3.3: the peer waits for <proceed/> before it sends anything more; what came
    behind <starttls/> came in the clear and would be read after TLS as if it came over it (the
    injection of CVE-2011-0411). The stream ends with policy-violation, without <proceed/>,
    and none of it is answered."""
    raw = await peer(server)
    await raw.open("other.example", "localhost")
    raw.send(f"<starttls xmlns='{ns.TLS}'/>{behind}")
    assert await raw.stream_error() == "policy-violation"
    assert isinstance(await raw.next(), StreamClosed)
    async with asyncio.timeout(10):
        assert await raw.reader.read() == b""


async def test_input_behind_starttls_sent_with_the_header_ends_the_stream_after_the_header(server: Server) -> None:
    """RFC 6120 §4.9.1.1: the stream error of a peer that sent its header, <starttls/> and more
    in one go still comes in a stream (our header and features), only <proceed/> is not sent."""
    raw = await peer(server)
    raw.send(f"<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:stream='{ns.STREAMS}' "
             f"xmlns:db='jabber:server:dialback' from='other.example' to='localhost' version='1.0'>"
             f"<starttls xmlns='{ns.TLS}'/><db:verify from='other.example' to='localhost' id='s1'>0123</db:verify>")
    assert isinstance(await raw.next(), StreamOpened)
    assert (await raw.element()).tag == f"{{{ns.STREAMS}}}features"
    assert await raw.stream_error() == "policy-violation"


async def until(check: Callable[[], bool]) -> None:
    """Until ``check`` holds: the server acts on input still on its way."""
    async with asyncio.timeout(WAIT):
        while True:
            if check():
                return
            await asyncio.sleep(0.01)


async def behind_held_back_proceed(server: Server, origin: str, behind: str) -> tuple[RawPeer, Wire]:
    """A peer that sends ``behind`` after its <starttls/>, while the server's <proceed/> waits to
    go: the peer did not read a large keepalive burst sent before, so the server's transport
    holds more than its high-water mark and ``Wire.start_tls`` waits in ``drain()`` until the
    peer reads. Returned once ``behind`` is in the server's reader."""
    raw = await peer(server)
    await raw.open(origin, "localhost")
    (incoming,) = server.s2s.incoming
    wire = incoming.wire
    # Small socket buffers, so that the kernel does not take the whole burst, and a low
    # high-water mark, so that a small burst is enough (it crawls through the small buffers).
    wire.writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    raw.writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    transport = wire.writer.transport
    transport.set_write_buffer_limits(high=4096)
    wire.write(" " * 150_000)
    wire.flush()
    assert transport.get_write_buffer_size() > 4096
    read = wire.last_read
    raw.send(f"<starttls xmlns='{ns.TLS}'/>")
    # The read that brings <starttls/> runs on, in the same step, to the wait in drain().
    await until(lambda: wire.last_read != read)
    raw.send(behind)
    await until(lambda: bool(wire.reader._buffer))  # type: ignore[attr-defined]
    return raw, wire


async def test_input_behind_starttls_while_proceed_waits_ends_the_stream_before_tls(server: Server) -> None:
    """RFC 6120 §5.4.3.3, CVE-2011-0411: input that arrives while <proceed/> waits for the peer
    to read came in the clear as well; left in the reader it would be read after the handshake
    as if it came over TLS. The <proceed/> is out by then: a stream error follows it in the
    clear, and TLS never starts."""
    raw, wire = await behind_held_back_proceed(
        server, "other.example", "<db:verify from='other.example' to='localhost' id='s1'>0123</db:verify>")
    assert (await raw.element()).tag == f"{{{ns.TLS}}}proceed"
    assert await raw.stream_error() == "policy-violation"
    assert isinstance(await raw.next(), StreamClosed)
    async with asyncio.timeout(WAIT):
        assert await raw.reader.read() == b""
    assert not wire.secure


async def wire_element(wire: Wire) -> ET.Element:
    event = await wire.next_event(WAIT)
    assert isinstance(event, StanzaReceived), event
    return event.element


async def test_input_behind_proceed_while_starttls_waits_ends_the_outgoing_stream_before_tls(server: Server) -> None:
    """RFC 6120 §5.4.3.3, CVE-2011-0411 from the initiating side, as ``outbound._open`` drives
    its wire: input that arrives behind the peer's <proceed/> while ``Wire.start_tls`` waits in
    ``drain()`` (the peer did not read a large keepalive burst sent before) came in the clear
    as well. It is refused once the drain is over, TLS never starts, and the peer gets no
    ClientHello, only what was sent before <proceed/>."""
    accepted: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accepted.put((reader, writer))

    listener = await asyncio.start_server(accept, "127.0.0.1", 0)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", listener.sockets[0].getsockname()[1])
        wire = Wire(reader, writer, server.config.limits)
        async with asyncio.timeout(WAIT):
            peer_reader, peer_writer = await accepted.get()
        # As in behind_held_back_proceed: the burst crawls through small buffers, and stays
        # above a low high-water mark until the peer reads.
        writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        peer_writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        writer.transport.set_write_buffer_limits(high=4096)
        ours = header("localhost", "raw.example")
        starttls = f"<starttls xmlns='{ns.TLS}'/>"
        wire.write(ours)
        peer_writer.write(f"<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:stream='{ns.STREAMS}' "
                          f"from='raw.example' id='s1' version='1.0'><stream:features><starttls xmlns='{ns.TLS}'>"
                          "<required/></starttls></stream:features>".encode())
        assert isinstance(await wire.next_event(WAIT), StreamOpened)
        assert (await wire_element(wire)).tag == f"{{{ns.STREAMS}}}features"
        wire.write(" " * 150_000)
        wire.write(starttls)
        wire.flush()
        assert writer.transport.get_write_buffer_size() > 4096
        peer_writer.write(f"<proceed xmlns='{ns.TLS}'/>".encode())
        assert (await wire_element(wire)).tag == f"{{{ns.TLS}}}proceed"
        starting = asyncio.create_task(wire.start_tls(server.s2s.client_context(False), server_hostname="raw.example"))
        # Its first step checks the input behind <proceed/> (none yet) and waits in drain().
        await asyncio.sleep(0)
        assert not starting.done()
        peer_writer.write(f"<stream:stream xmlns='jabber:server' xmlns:stream='{ns.STREAMS}' from='raw.example' "
                          "id='forged' version='1.0'><stream:features><dialback "
                          "xmlns='urn:xmpp:features:dialback'/></stream:features>".encode())
        await until(lambda: bool(wire.reader._buffer))  # type: ignore[attr-defined]
        received = asyncio.create_task(peer_reader.read())
        with pytest.raises(StreamError) as refused:
            async with asyncio.timeout(WAIT):
                await starting
        assert refused.value.condition == "policy-violation"
        assert not wire.secure
        await wire.aclose()
        async with asyncio.timeout(WAIT):
            assert await received == (ours + " " * 150_000 + starttls).encode()
    finally:
        listener.close()


async def test_whitespace_behind_starttls_while_proceed_waits_is_no_injection(
        receiving: tuple[Server, str]) -> None:
    """RFC 6120 §11.7: a keepalive that arrives while <proceed/> waits to go is dropped before
    TLS, not read as the start of the stream after it."""
    server, secret = receiving
    raw, _ = await behind_held_back_proceed(server, "b.example", " \n")
    assert (await raw.element()).tag == f"{{{ns.TLS}}}proceed"
    await raw.tls()
    features = await raw.open("b.example", "localhost")
    assert features.find("{urn:xmpp:features:dialback}dialback") is not None
    key = dialback_key(secret, "localhost", "b.example", raw.stream_id)
    raw.send(f"<db:result from='b.example' to='localhost'>{key}</db:result>")
    assert (await raw.element()).get("type") == "valid"


@pytest.mark.parametrize("behind", [" ", "\r\n", " \t\n" * 100])
async def test_whitespace_behind_starttls_is_no_injection(receiving: tuple[Server, str], behind: str) -> None:
    """RFC 6120 §11.7: whitespace may come between top-level elements (a keepalive, a newline);
    behind <starttls/> it is not read as the start of the stream after TLS, and TLS goes on."""
    server, secret = receiving
    host, port = server.bound["s2s"][0]
    raw = await RawPeer.connect(host, port)
    features = await raw.starttls("b.example", "localhost", behind=behind)
    assert features.find("{urn:xmpp:features:dialback}dialback") is not None
    key = dialback_key(secret, "localhost", "b.example", raw.stream_id)
    raw.send(f"<db:result from='b.example' to='localhost'>{key}</db:result>")
    assert (await raw.element()).get("type") == "valid"


async def test_whitespace_behind_proceed_is_no_injection(tmp_path: Path) -> None:
    """The initiating side of the same rule: a newline the receiving server writes behind its
    <proceed/> is dropped, TLS goes on, and the message arrives."""
    await delivered(tmp_path, RawReceiver(tmp_path, "raw.example", sm=False, behind_proceed="\n"))


async def proceeded(server: Server) -> RawPeer:
    """A peer for b.example that asked for STARTTLS and read the server's <proceed/>: the
    server's handshake began, and waits for the peer's ClientHello."""
    host, port = server.bound["s2s"][0]
    raw = await RawPeer.connect(host, port)
    await raw.open("b.example", "localhost")
    raw.send(f"<starttls xmlns='{ns.TLS}'/>")
    assert (await raw.element()).tag == f"{{{ns.TLS}}}proceed"
    return raw


@pytest.mark.parametrize("keepalive", [" ", "\n", "  "])
async def test_a_keepalive_between_proceed_and_the_client_hello_is_skipped(
        receiving: tuple[Server, str], keepalive: str) -> None:
    """RFC 6120 §4.6.1: the initiating server's keepalive timer may fire after it asked for
    STARTTLS, and its whitespace reach us behind the <starttls/> once our handshake began
    (§5.4.3.3: the next bytes should be its ClientHello). It is skipped, not taken for the
    first TLS record, and TLS goes on."""
    server, secret = receiving
    raw = await proceeded(server)
    raw.send(keepalive)
    await raw.tls()
    features = await raw.open("b.example", "localhost")
    assert features.find("{urn:xmpp:features:dialback}dialback") is not None
    await dialback(raw, secret)


async def test_plaintext_between_proceed_and_the_client_hello_fails_the_handshake(
        receiving: tuple[Server, str]) -> None:
    """CVE-2011-0411: only whitespace is skipped once the handshake began; anything else that
    comes in the clear there is taken for TLS input, and the handshake fails rather than read
    it as the stream after TLS."""
    server, _ = receiving
    raw = await proceeded(server)
    raw.send(" <db:verify from='b.example' to='localhost' id='s1'>0123</db:verify>")
    async with asyncio.timeout(WAIT):
        with pytest.raises((ssl.SSLError, ConnectionError)):
            await raw.tls()


class KeepaliveBehindProceed(RawReceiver):
    """A receiving server whose keepalive timer fires after its <proceed/> went, while the
    initiating server's ClientHello is on its way: a space comes before its ServerHello."""

    async def proceed(self, peer: RawPeer) -> None:
        peer.send(f"<proceed xmlns='{ns.TLS}'/>")
        await until_input(peer.writer)
        peer.send(" ")
        await peer.writer.start_tls(self._context)


async def delivered(tmp_path: Path, receiver: RawReceiver, keepalive: float | None = None) -> None:
    """A message from our server reaches ``receiver``, as the server of raw.example; with
    ``keepalive``, our server's ``limits.keepalive_interval`` is that."""
    await receiver.start()
    async with beside(tmp_path, receiver) as server:
        if keepalive is not None:
            # Below the bound an operator may set, so that the test does not wait for a minute.
            limits = dataclasses.replace(server.config.limits, keepalive_interval=keepalive)
            server.config = dataclasses.replace(server.config, limits=limits)
        await add_user(server, "alice")
        alice = await connect(server, "alice@localhost/desk")
        await alice.send("<message to='bob@raw.example' id='m1' type='chat'><body>hello</body></message>")
        peer = await receiver.next_peer()
        assert (await peer.element()).get("id") == "m1"
        assert alice.take() == []


async def test_a_keepalive_between_proceed_and_the_server_hello_is_skipped(tmp_path: Path) -> None:
    """RFC 6120 §4.6.1 from the initiating side: a space the receiving server writes after its
    <proceed/>, which reaches us once our handshake began, is skipped, not taken for the first
    TLS record; TLS goes on, and the message arrives."""
    await delivered(tmp_path, KeepaliveBehindProceed(tmp_path, "raw.example", sm=False))


class SlowReceiver(RawReceiver):
    """A receiving server that takes ``delay`` after the initiating server's <starttls/> before
    its <proceed/>, and again after the ClientHello before its answer; ``clear`` gets what came
    in the clear behind the <starttls/> meanwhile. Its TLS skips nothing: a byte in the clear
    after the ClientHello fails its handshake."""

    def __init__(self, directory: Path, domain: str, delay: float) -> None:
        super().__init__(directory, domain, sm=False)
        self.delay = delay
        self.clear = b""

    async def proceed(self, peer: RawPeer) -> None:
        await asyncio.sleep(self.delay)
        # Taken out of the reader, so that the test reports it rather than the stream after TLS.
        unread: bytearray = peer.reader._buffer  # type: ignore[attr-defined]
        self.clear = bytes(unread)
        unread.clear()
        peer.send(f"<proceed xmlns='{ns.TLS}'/>")
        await until_input(peer.writer)
        await asyncio.sleep(self.delay)
        await peer.writer.start_tls(self._context)


async def test_no_keepalive_goes_out_between_starttls_and_the_end_of_the_handshake(tmp_path: Path) -> None:
    """RFC 6120 §5.4.3.3: once the receiving server sent <proceed/> it reads our next bytes as
    TLS, and once our handshake began, as its records; a keepalive (§4.6.1) written in the clear
    there would fail its handshake. However long the peer takes, the outgoing stream writes
    none between <starttls/> and the end of the handshake, and the message arrives."""
    receiver = SlowReceiver(tmp_path, "raw.example", delay=1.0)
    await delivered(tmp_path, receiver, keepalive=0.2)
    assert receiver.clear == b""


async def test_no_keepalive_goes_out_while_an_incoming_stream_starts_tls(receiving: tuple[Server, str]) -> None:
    """RFC 6120 §5.4.3.3, §4.6.1: after <proceed/> the peer reads our next bytes as TLS, and
    after the handshake it waits for our header; however long it takes to send its ClientHello
    and its header, the incoming stream writes no keepalive in between."""
    server, secret = receiving
    keepalive = 0.2
    # Below the bound an operator may set, so that the test does not wait for a minute.
    limits = dataclasses.replace(server.config.limits, keepalive_interval=keepalive)
    server.config = dataclasses.replace(server.config, limits=limits)
    raw = await proceeded(server)
    await asyncio.sleep(5 * keepalive)
    assert raw.reader._buffer == b""  # type: ignore[attr-defined]
    await raw.tls()
    await asyncio.sleep(5 * keepalive)
    assert raw.reader._buffer == b""  # type: ignore[attr-defined]
    features = await raw.open("b.example", "localhost")
    assert features.find("{urn:xmpp:features:dialback}dialback") is not None
    await dialback(raw, secret)


async def test_a_shutdown_writes_no_plaintext_into_a_tls_handshake(receiving: tuple[Server, str]) -> None:
    """RFC 6120 §4.9.3.22, §5.4.3.3: at a shutdown, a stream before STARTTLS ends with
    system-shutdown; on one whose TLS handshake is under way the peer reads our next bytes as
    TLS records, so that nothing is written in the clear: the connection just closes."""
    server, _ = receiving
    host, port = server.bound["s2s"][0]
    before = await RawPeer.connect(host, port)
    await before.open("b.example", "localhost")
    during = await proceeded(server)
    await server.s2s.stop()
    assert await before.stream_error() == "system-shutdown"
    async with asyncio.timeout(WAIT):
        assert await during.reader.read() == b""


class InjectingReceiver(RawReceiver):
    """A receiving server after whose <proceed/> comes, in the same write, what a man in the
    middle would have the initiating server read as the stream after TLS; ``after`` gets what
    the initiating server sent then, until it closed the connection."""

    def __init__(self, directory: Path, domain: str) -> None:
        super().__init__(directory, domain, sm=False)
        self.after: asyncio.Queue[bytes] = asyncio.Queue()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = RawPeer(reader, writer)
        self._peers.append(peer)
        await peer.next()
        self._header(peer)
        peer.send(f"<stream:features><starttls xmlns='{ns.TLS}'><required/></starttls></stream:features>")
        assert (await peer.element()).tag == f"{{{ns.TLS}}}starttls"
        peer.send(f"<proceed xmlns='{ns.TLS}'/><stream:stream xmlns='jabber:server' xmlns:stream='{ns.STREAMS}' "
                  f"from='{self.domain}' id='forged' version='1.0'><stream:features>"
                  "<dialback xmlns='urn:xmpp:features:dialback'/></stream:features>")
        await self.after.put(await reader.read())


async def test_input_behind_proceed_ends_the_outgoing_connection_before_tls(tmp_path: Path) -> None:
    """RFC 6120 §5.4.3.3 from the initiating side: nothing may follow <proceed/> before our TLS
    handshake; what did is not read as the stream after TLS, no handshake starts, and the
    message bounces (remote-server-not-found: the server could not be used)."""
    receiver = InjectingReceiver(tmp_path, "raw.example")
    await receiver.start()
    async with beside(tmp_path, receiver) as server:
        await add_user(server, "alice")
        alice = await connect(server, "alice@localhost/desk")
        await alice.send("<message to='bob@raw.example' id='m1' type='chat'><body>hello?</body></message>")
        (error,) = await alice.expect(1, timeout=10)
        assert (error.get("id"), condition(error)) == ("m1", "remote-server-not-found")
        async with asyncio.timeout(10):
            assert await receiver.after.get() == b""


async def test_a_silent_first_server_of_a_domain_leaves_time_for_the_next(tmp_path: Path) -> None:
    """RFC 6120 §3.2.1: the SRV targets are tried in order until one works. One that takes the
    connection and never speaks costs ``connect_timeout``, not the whole attempt: the next
    target is tried, and the message arrives."""
    b = Server(make_config(tmp_path / "b", domains=["b.example"], listen={"s2s": ["127.0.0.1:0"]},
                           s2s={"enabled": True, "verify": False}))
    await b.start()
    try:
        async with silent_listener() as silent:
            b_port = b.bound["s2s"][0][1]
            zone = {"_xmpp-server._tcp.b.example": [(0, 0, silent, "127.0.0.1"), (10, 0, b_port, "127.0.0.1")]}
            async with dns_server(zone) as (resolver, _):
                a = Server(make_config(tmp_path / "a", domains=["a.example"], listen={"s2s": ["127.0.0.1:0"]},
                                       s2s={"enabled": True, "verify": False, "connect_timeout": 3,
                                            "dns_servers": [resolver]}))
                await a.start()
                try:
                    host, port = a.bound["s2s"][0]
                    b.s2s.config = dataclasses.replace(b.s2s.config, hosts={"a.example": f"{host}:{port}"})
                    await add_user(a, "alice", host="a.example")
                    await add_user(b, "bob", host="b.example")
                    alice = await connect(a, "alice@a.example/desk")
                    bob = await connect(b, "bob@b.example/desk")
                    await alice.send("<message to='bob@b.example/desk' id='m1' type='chat'><body>hi</body></message>")
                    (got,) = await bob.expect(1, timeout=20)
                    assert (got.get("id"), got.get("from")) == ("m1", "alice@a.example/desk")
                    assert alice.take() == []
                finally:
                    await a.stop()
    finally:
        await b.stop()

"""The client on real sockets against the real server: login, certificates, requests, reconnecting.

RFC 6120 §5-§7 and XEP-0368 from the client's side; RFC 9266 (tls-exporter) between our client
and our server; RFC 6120 §8.2.3 and §8.3 for requests and their errors; reconnecting after the
server drops the link or kicks the session.
"""

from __future__ import annotations

import random
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from schnack.client import (
    AuthenticationError,
    CertificateError,
    Client,
    ClientError,
    Connected,
    ConnectionEvent,
    Disconnected,
    NotConnected,
    RequestTimeout,
    XmppError,
)
from schnack.client.client import backoff_delay
from schnack.server import admin
from schnack.server.app import Server
from schnack.xmpp import ns
from schnack.xmpp.jid import JID
from schnack.xmpp.xml import element, qname

from ..integration.wire import Wire
from .conftest import PASSWORD, make_client, next_of, online

FAST = (0.05, 0.5)  # reconnect backoff for tests: first wait and longest wait, in seconds


def cert(server: Server) -> Path:
    return server.config.data_dir / "certs" / "server.crt"


# Logging in ---------------------------------------------------------------------------------------


async def test_login_over_starttls_binds_with_tls_exporter(chat_server: Server, clients: list[Client]) -> None:
    client = await online(chat_server, clients, "alice@localhost")
    assert client.connected
    assert client.jid.bare == JID.parse("alice@localhost") and client.jid.resource
    # Our exporter and the server's agree on the keying material of the same TLS 1.3 connection.
    assert client.mechanism == "SCRAM-SHA-256-PLUS (tls-exporter)"
    session = chat_server.sessions.get(client.jid)
    assert session is not None and session.secure


@pytest.mark.parametrize("listener", ["c2s", "c2s_tls"])
async def test_login_trusting_the_servers_certificate(chat_server: Server, clients: list[Client], listener: str) -> None:
    """The certificate given as CA file is verified, for the account's domain, on both ports."""
    client = await online(chat_server, clients, "alice@localhost/desk", listener=listener, verify=cert(chat_server))
    assert client.jid == JID.parse("alice@localhost/desk")


@pytest.mark.parametrize("listener", ["c2s", "c2s_tls"])
async def test_self_signed_certificate_is_refused_by_default(chat_server: Server, listener: str) -> None:
    client = make_client(chat_server, "alice@localhost", listener=listener, verify=True)
    with pytest.raises(CertificateError) as refused:
        await client.connect()
    message = str(refused.value)
    assert "the certificate of localhost is not trusted: self-signed certificate" in message
    assert "verify=False" in message and "verify=PATH" in message
    assert list(chat_server.sessions) == []
    await client.close()


async def test_a_ca_file_that_does_not_exist_is_named(chat_server: Server, tmp_path: Path) -> None:
    client = make_client(chat_server, "alice@localhost", verify=tmp_path / "missing.pem")
    with pytest.raises(CertificateError, match=r"missing\.pem"):
        await client.connect()


async def test_wrong_password_is_a_clear_error(chat_server: Server) -> None:
    client = make_client(chat_server, "alice@localhost", password="not the password")
    with pytest.raises(AuthenticationError) as refused:
        await client.connect()
    assert refused.value.condition == "not-authorized"
    assert str(refused.value) == "alice@localhost: authentication failed: wrong username or password"
    assert list(chat_server.sessions) == []


async def test_a_client_connects_once(chat_server: Server, clients: list[Client]) -> None:
    client = await online(chat_server, clients, "alice@localhost")
    with pytest.raises(ClientError, match="already been connected"):
        await client.connect()


# Requests ------------------------------------------------------------------------------------------


async def test_iq_result_and_error_with_its_condition(chat_server: Server, clients: list[Client]) -> None:
    client = await online(chat_server, clients, "alice@localhost")
    reply = await client.iq(element(qname(ns.CLIENT, "iq"), {"type": "get", "to": "localhost"},
                                    children=[element(qname(ns.VERSION, "query"))]))
    assert reply.get("type") == "result"
    assert reply.findtext(f"{{{ns.VERSION}}}query/{{{ns.VERSION}}}name") == "schnack"
    with pytest.raises(XmppError) as failed:
        await client.iq(element(qname(ns.CLIENT, "iq"), {"type": "get", "to": "localhost"},
                                children=[element("{urn:example:nothing}query")]))
    assert failed.value.condition == "service-unavailable"
    assert failed.value.type == "cancel"


async def test_requests_to_a_peer_that_never_answers_time_out(chat_server: Server, clients: list[Client]) -> None:
    client = await online(chat_server, clients, "alice@localhost")
    wire = await Wire.connect(chat_server, "c2s_tls")
    try:
        await wire.login("bob", PASSWORD, await wire.open())
        silent = await wire.bind("silent")
        with pytest.raises(RequestTimeout, match=re.escape(f"no answer from {silent}")):
            await client.iq(element(qname(ns.CLIENT, "iq"), {"type": "get", "to": silent},
                                    children=[element(qname(ns.PING, "ping"))]), timeout=0.5)
    finally:
        wire.close()


async def test_requests_to_the_client_are_answered(chat_server: Server, clients: list[Client]) -> None:
    """A ping gets its result (XEP-0199 §4.1); anything unknown service-unavailable (RFC 6120 §8.4)."""
    client = await online(chat_server, clients, "alice@localhost")
    wire = await Wire.connect(chat_server, "c2s_tls")
    try:
        await wire.login("bob", PASSWORD, await wire.open())
        await wire.bind("asker")
        wire.send(f"<iq type='get' id='p1' to='{client.jid}'><ping xmlns='{ns.PING}'/></iq>")
        wire.send(f"<iq type='get' id='q1' to='{client.jid}'><query xmlns='urn:example:nothing'/></iq>")
        pong, refusal = await wire.next(), await wire.next()
        assert pong is not None and refusal is not None
        assert (pong.get("id"), pong.get("type"), pong.get("from")) == ("p1", "result", str(client.jid))
        assert (refusal.get("id"), refusal.get("type")) == ("q1", "error")
        assert refusal.find(f"{{{ns.CLIENT}}}error/{{{ns.STANZA_ERRORS}}}service-unavailable") is not None
    finally:
        wire.close()


# Losing the link and coming back -------------------------------------------------------------------


async def reconnected(events: AsyncIterator[ConnectionEvent], jid: JID) -> Disconnected:
    """Wait for the link to drop and come back bound to the same JID; return the Disconnected."""
    lost = await next_of(events)
    assert isinstance(lost, Disconnected) and lost.reconnecting, lost
    back = await next_of(events)
    assert back == Connected(jid)
    return lost


async def test_reconnects_after_the_administrator_kicks_the_session(chat_server: Server, clients: list[Client]) -> None:
    alice = await online(chat_server, clients, "alice@localhost", backoff=FAST)
    bob = await online(chat_server, clients, "bob@localhost")
    events = alice.events()
    jid = alice.jid
    reply = await admin.request(chat_server.config.data_dir, "kick", jid=str(jid))
    assert reply["closed"] == 1
    lost = await reconnected(events, jid)
    assert "policy-violation" in lost.reason
    assert alice.connected
    # The new session works: presence announced again, messages arrive.
    inbox = alice.messages()
    await bob.send(jid, "still there?", encrypted=False)
    message = await next_of(inbox)
    assert message.text == "still there?" and message.sender == bob.jid


async def test_reconnects_after_the_connection_drops(chat_server: Server, clients: list[Client]) -> None:
    alice = await online(chat_server, clients, "alice@localhost", backoff=FAST)
    events = alice.events()
    jid = alice.jid
    (conn,) = [c for c in chat_server.connections if c.stream.session is not None and c.stream.session.jid == jid]
    conn.link.transport.abort()
    lost = await reconnected(events, jid)
    assert lost.reason.startswith(("connection lost", "the server closed"))
    reply = await alice.iq(element(qname(ns.CLIENT, "iq"), {"type": "get", "to": "localhost"},
                                   children=[element(qname(ns.PING, "ping"))]))
    assert reply.get("type") == "result"


async def test_replaced_by_another_login_it_stays_away(chat_server: Server, clients: list[Client]) -> None:
    """RFC 6120 §7.7.2.2: reconnecting after a conflict would only throw the other session out."""
    first = await online(chat_server, clients, "alice@localhost/same", backoff=FAST)
    events, inbox = first.events(), first.messages()
    await online(chat_server, clients, "alice@localhost/same")
    lost = await next_of(events)
    assert isinstance(lost, Disconnected) and not lost.reconnecting and "conflict" in lost.reason
    assert [m async for m in inbox] == []
    assert not first.connected
    with pytest.raises(NotConnected):
        await first.send("bob@localhost", "hello", encrypted=False)


async def test_close_ends_the_iterators(chat_server: Server) -> None:
    client = make_client(chat_server, "alice@localhost")
    async with client:
        events, inbox, presence = client.events(), client.messages(), client.presence()
    assert [e async for e in events] == [Disconnected("closed by the program", reconnecting=False)]
    assert [m async for m in inbox] == []
    assert [p async for p in presence] == []
    assert list(chat_server.sessions) == []
    with pytest.raises(NotConnected, match="closed"):
        await client.roster()


def test_backoff_grows_to_its_cap_with_jitter() -> None:
    rng = random.Random(1)
    for attempt, step in [(0, 1.0), (1, 2.0), (3, 8.0), (10, 60.0), (5000, 60.0)]:
        delays = [backoff_delay(attempt, 1.0, 60.0, rng) for _ in range(50)]
        assert all(step / 2 <= d <= step for d in delays)
        assert len(set(delays)) == 50  # jittered: clients cut off together come back apart

"""Our client's SASL2 negotiation (XEP-0388 with Bind 2, FAST, inline resumption and XEP-0509
pipelining) paired with the server's, both ends in memory: the flights the client sends are
counted as they leave it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from xml.etree.ElementTree import Element

import pytest

from schnack.server.app import Server
from schnack.xmpp.negotiation import AuthenticationFailed, ClientStream, FastToken, Ready
from schnack.xmpp.payloads import sm
from schnack.xmpp.payloads.sasl2 import CONFIG_VERSION, UserAgent

from ..harness import add_user, running
from .test_negotiation import ALICE, END_POINT, EXPORTER, PASSWORD, Pair

BINDINGS = {"tls-exporter": EXPORTER, "tls-server-end-point": END_POINT}
AGENT = UserAgent("0f9a3c1e-3b1d-4d3e-9c55-2f1d2a6b7c80", "schnack", "phone")


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    async with running(tmp_path) as srv:
        await add_user(srv, "alice", PASSWORD)
        yield srv


def stream(*, password: str = PASSWORD, token: FastToken | None = None, known: Element | None = None,
           resume: sm.Resume | None = None, resource: str | None = None) -> ClientStream:
    return ClientStream(ALICE, password, secure=True, channel_bindings=BINDINGS, user_agent=AGENT, tag="schnack",
                        enable=sm.Enable(resume=True), token=token, known_features=known, resume=resume,
                        resource=resource)


async def login(server: Server, client: ClientStream) -> tuple[Ready, Pair]:
    pair = Pair(server, client, secure=True, can_starttls=False, server_bindings=BINDINGS,
                client_bindings=BINDINGS)
    events = await pair.run()
    ready = [e for e in events if isinstance(e, Ready)]
    assert len(ready) == 1, events
    return ready[0], pair


async def test_password_login_binds_enables_sm_and_brings_a_token(server: Server) -> None:
    client = stream()
    ready, pair = await login(server, client)
    assert client.mechanism == "SCRAM-SHA-256-PLUS" and client.channel_binding == "tls-exporter"
    assert ready.jid.bare == ALICE and (ready.jid.resource or "").startswith("schnack/")
    assert isinstance(ready.enabled, sm.Enabled) and ready.enabled.resume
    assert client.token is not None and client.token.mechanism == "HT-SHA-256-EXPR" and client.token.count == 0
    assert client.sasl2_features is not None and client.sasl2_features.find(CONFIG_VERSION) is not None
    # Header, then <authenticate/> once the features came, then the SCRAM response.
    assert len(pair.sent) == 3


async def test_fast_reconnect_is_one_flight(server: Server) -> None:
    first = stream()
    ready, _ = await login(server, first)
    again = stream(token=first.token, known=first.sasl2_features)
    second, pair = await login(server, again)
    # XEP-0509: header and <authenticate/> leave together; the answer completes the login.
    assert len(pair.sent) == 1 and again.pipelined
    assert b"<fast xmlns=\"urn:xmpp:fast:0\" count=\"1\"/>" in pair.sent[0]
    assert again.mechanism == "HT-SHA-256-EXPR"
    assert second.jid == ready.jid
    assert again.token is not None and again.token.token == (first.token.token if first.token else "")
    assert again.token.count == 1


async def test_resumption_in_the_same_flight(server: Server) -> None:
    first = stream()
    ready, pair = await login(server, first)
    assert isinstance(ready.enabled, sm.Enabled) and ready.enabled.id
    await pair.server_stream.connection_lost()
    again = stream(token=first.token, known=first.sasl2_features, resume=sm.Resume(0, ready.enabled.id),
                   resource=ready.jid.resource)
    resumed, pair = await login(server, again)
    assert len(pair.sent) == 1
    assert isinstance(resumed.resumption, sm.Resumed) and resumed.resumption.previd == ready.enabled.id
    assert resumed.jid == ready.jid and resumed.enabled is None


async def test_a_refused_token_is_dropped_and_the_password_used(server: Server) -> None:
    first = stream()
    await login(server, first)
    assert first.token is not None
    forged = FastToken("f" * 96, first.token.mechanism, first.token.expiry)
    again = stream(token=forged, known=first.sasl2_features)
    ready, _ = await login(server, again)
    assert again.mechanism == "SCRAM-SHA-256-PLUS"
    assert again.token is not None and again.token.token not in (forged.token, first.token.token)
    assert ready.jid.bare == ALICE


async def test_a_stale_configuration_is_retried_on_the_new_features(server: Server) -> None:
    first = stream()
    await login(server, first)
    assert first.sasl2_features is not None
    stale = first.sasl2_features
    version = stale.find(CONFIG_VERSION)
    assert version is not None
    version.set("value", "from-an-older-release")
    again = stream(token=first.token, known=stale)
    ready, pair = await login(server, again)
    assert len(pair.sent) == 2 and not again.pipelined
    assert again.sasl2_features is not None
    current = again.sasl2_features.find(CONFIG_VERSION)
    assert current is not None and current.get("value") != "from-an-older-release"
    assert ready.jid.bare == ALICE


async def test_a_wrong_password_without_a_token_fails(server: Server) -> None:
    client = stream(password="wrong")
    with pytest.raises(AuthenticationFailed) as failed:
        await login(server, client)
    assert failed.value.condition == "not-authorized"


async def test_a_named_resource_is_bound_the_rfc_6120_way(server: Server) -> None:
    client = ClientStream(ALICE, PASSWORD, secure=True, channel_bindings=BINDINGS, user_agent=AGENT,
                          resource="desk")
    ready, _ = await login(server, client)
    assert str(ready.jid) == "alice@localhost/desk"
    assert client.token is not None

"""SASL2, Bind 2, FAST and pipelining on real sockets with TLS (XEP-0388, 0386, 0484, 0509).

A phone that switched networks is back in one round trip: our client's FAST reconnect is
counted where it waits on the socket, and a raw connection shows the server completing a login
from one flight. Resumption inside SASL2 delivers exactly what was missed; ``schnack admin
tokens`` revokes a device (disconnecting it), after which its token fails and the password still
works; slixmpp, which has no SASL2, still logs in with SASL1 on the same server.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from xml.etree.ElementTree import Element

import aiohttp
import pytest

from schnack.client import Client, Connected, Disconnected
from schnack.client.fast import TOKEN_SECRET
from schnack.client.store import load_secret
from schnack.client.tls import channel_bindings
from schnack.server.app import Server
from schnack.xmpp import ht, ns
from schnack.xmpp.jid import JID
from schnack.xmpp.payloads import bind2, fast
from schnack.xmpp.payloads import sasl2 as payload
from schnack.xmpp.sasl import SaslClient, derive_credentials
from schnack.xmpp.xml import qname, serialize

from ..cli.proc import client_env, schnack
from ..client.conftest import next_of
from ..client.proxy import Proxy
from ..harness import add_user, running
from .slix import SlixClient
from .wire import HEADER, Wire
from .ws import connect as ws_connect

PASSWORD = "correct horse battery staple"
ALICE = JID.parse("alice@localhost")
AGENT = payload.UserAgent("7a1c7a0e-5d1e-4c67-a8a5-1f6f3d9b2e11", "raw", "test")
FEATURES = qname(ns.STREAMS, "features")


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    async with running(tmp_path, listen=True, modules={"e2e": {"policy": "optional"}}) as srv:
        for user in ("alice", "bob"):
            await add_user(srv, user, PASSWORD)
        yield srv


def device(server: Server, data_dir: Path, clients: list[Client], *, listener: str = "c2s_tls",
           port: int | None = None) -> Client:
    """Alice's phone: its own data directory (the token and the features are kept there)."""
    host, bound = server.bound[listener][0]
    client = Client(ALICE, PASSWORD, host=host, port=port or bound, direct_tls=listener == "c2s_tls", verify=False,
                    data_dir=data_dir, backoff=(0.05, 0.2))
    clients.append(client)
    return client


@pytest.mark.parametrize("listener", ["c2s_tls", "c2s"])
async def test_a_fast_reconnect_takes_one_round_trip(server: Server, clients: list[Client], tmp_path: Path,
                                                     listener: str) -> None:
    first = device(server, tmp_path / "phone", clients, listener=listener)
    await first.connect()
    assert (first.mechanism or "").startswith("SCRAM-SHA-256-PLUS")
    # Header, then <authenticate/> once the features came, then SCRAM's response.
    assert first.login_round_trips == 3
    jid = first.jid
    await first.close()
    again = device(server, tmp_path / "phone", clients, listener=listener)
    await again.connect()
    assert (again.mechanism or "").startswith("HT-SHA-256-")
    # After TLS: one flight (header, <authenticate/> with the token and Bind 2), one answer.
    assert again.login_round_trips == 1
    # Another client object of the device: its own tag, so it does not take the first one's resource.
    assert again.jid.bare == jid.bare and (again.jid.resource or "").startswith("schnack.")


async def test_the_server_completes_a_login_from_one_flight(server: Server) -> None:
    """On the wire: one write after the TLS handshake, and the server's answer carries everything."""
    first = await Wire.connect(server, "c2s_tls")
    features = await first.open()
    first.send(serialize(payload.Authenticate(
        "PLAIN", f"\0alice\0{PASSWORD}".encode(), AGENT, (fast.RequestToken("HT-SHA-256-NONE").to_xml(),)
    ).to_xml()))
    success = await first.next()
    assert success is not None and success.tag == payload.SUCCESS
    issued = success.find(fast.TOKEN)
    assert issued is not None
    token = fast.Token.from_xml(issued)
    first.close()
    version = features.find(payload.CONFIG_VERSION)
    assert version is not None
    proof = b"alice\0" + ht.initiator(ht.key_of(token.token), b"")
    flight = HEADER.format(to="localhost") + serialize(payload.Authenticate(
        "HT-SHA-256-NONE", proof, AGENT, (fast.Fast(count=1).to_xml(), bind2.Bind("raw").to_xml(), version)
    ).to_xml())
    wire = await Wire.connect(server, "c2s_tls")
    wire.send(flight)
    answers: list[Element] = []
    while len(answers) < 3:
        el = await wire.next()
        assert el is not None
        answers.append(el)
    assert [el.tag for el in answers] == [FEATURES, payload.SUCCESS, FEATURES]
    result = payload.Success.from_xml(answers[1])
    assert result.additional_data == ht.responder(ht.key_of(token.token), b"")
    assert JID.parse(result.authorization_identifier).resource is not None
    wire.close()


async def test_a_password_changed_during_a_scram_login_refuses_it_and_its_token(server: Server) -> None:
    """The keys SCRAM checks were fetched at the first message; once the password changed, the
    old one may not finish the login, nor earn a token that would outlive the change."""
    wire = await Wire.connect(server, "c2s_tls")
    try:
        await wire.open()
        client = SaslClient("alice", PASSWORD, ["SCRAM-SHA-256"])
        wire.send(serialize(payload.Authenticate(
            client.mechanism, client.initial(), AGENT, (fast.RequestToken("HT-SHA-256-NONE").to_xml(),)
        ).to_xml()))
        challenge = await wire.next()
        assert challenge is not None and challenge.tag == payload.CHALLENGE
        await server.storage.accounts.set_credentials("localhost", "alice", derive_credentials("a new secret"))
        wire.send(serialize(payload.Response(client.respond(payload.Challenge.from_xml(challenge).data)).to_xml()))
        failure = await wire.next()
        assert failure is not None and failure.tag == payload.FAILURE
        assert payload.Failure.from_xml(failure).condition == "not-authorized"
        assert await server.storage.maps.items("localhost", "alice", "fast") == {}
    finally:
        wire.close()


async def sasl2_plain(server: Server, password: str, inline: tuple[Element, ...] = ()) -> Element:
    """One SASL2 PLAIN attempt as alice on a fresh connection; the element that ends it."""
    wire = await Wire.connect(server, "c2s_tls")
    try:
        await wire.open()
        wire.send(serialize(payload.Authenticate("PLAIN", f"\0alice\0{password}".encode(), AGENT, inline).to_xml()))
        answer = await wire.next()
    finally:
        wire.close()
    assert answer is not None
    return answer


async def test_guessing_the_password_does_not_keep_a_device_with_a_token_out(tmp_path: Path) -> None:
    """RFC 6120 §13.8 throttles password guessing; a token is no password to guess (and a wrong
    one counts against no account), so a device holding a valid one still gets in while someone
    else's guesses pause password logins to the account."""
    async with running(tmp_path, listen=True, limits={"failed_logins_per_account": 3}) as server:
        await add_user(server, "alice", PASSWORD)
        issued = await sasl2_plain(server, PASSWORD, (fast.RequestToken("HT-SHA-256-NONE").to_xml(),))
        token = issued.find(fast.TOKEN)
        assert token is not None
        for _ in range(3):
            assert payload.Failure.from_xml(await sasl2_plain(server, "guess")).condition == "not-authorized"
        assert payload.Failure.from_xml(await sasl2_plain(server, PASSWORD)).condition == "temporary-auth-failure"
        assert AGENT.id is not None
        answer = await token_login(server, {"mechanism": "HT-SHA-256-NONE", "token": fast.Token.from_xml(token).token},
                                   AGENT.id, 1)
        assert answer.tag == payload.SUCCESS
        assert payload.Failure.from_xml(await sasl2_plain(server, PASSWORD)).condition == "temporary-auth-failure"


async def test_resumption_through_sasl2_delivers_exactly_the_missing_stanzas(
        server: Server, clients: list[Client], tmp_path: Path) -> None:
    host, port = server.bound["c2s"][0]
    proxy = await Proxy(host, port).start()
    try:
        alice = Client(ALICE, PASSWORD, host="127.0.0.1", port=proxy.port, direct_tls=False, verify=False,
                       data_dir=tmp_path / "phone", backoff=(0.05, 0.2))
        clients.append(alice)
        await alice.connect()
        bob = Client("bob@localhost", PASSWORD, host=host, port=port, direct_tls=False, verify=False,
                     data_dir=tmp_path / "bob")
        clients.append(bob)
        await bob.connect()
        events, inbox = alice.events(), alice.messages()
        await bob.send(alice.jid, "m1", encrypted=False)
        assert (await next_of(inbox)).text == "m1"
        proxy.cut()
        assert isinstance(await next_of(events), Disconnected)
        for text in ("m2", "m3"):
            sent = await bob.send(alice.jid, text, encrypted=False)
            await bob.acknowledged(sent)
        assert await next_of(events) == Connected(alice.jid)
        assert alice.sm.resumptions == 1
        assert alice.login_round_trips == 1
        await bob.send(alice.jid, "m4", encrypted=False)
        texts: list[str | None] = []
        while not texts or texts[-1] != "m4":
            texts.append((await next_of(inbox)).text)
        assert texts == ["m2", "m3", "m4"]
    finally:
        await proxy.stop()


async def test_admin_revokes_a_device_then_its_token_fails_and_the_password_works(
        server: Server, clients: list[Client], tmp_path: Path) -> None:
    phone_dir = tmp_path / "phone"
    phone = device(server, phone_dir, clients)
    await phone.connect()
    saved = load_secret(phone_dir, ALICE, TOKEN_SECRET)
    assert saved is not None
    token = json.loads(saved)
    events = phone.events()
    agent = phone_agent(phone_dir)
    # The token works, from another connection too, as long as it is not revoked.
    assert (await token_login(server, token, agent, token["count"] + 1)).tag == payload.SUCCESS
    token["count"] += 1
    config = tmp_path / "cli.toml"
    config.write_text(f'domains = ["localhost"]\ndata_dir = "{server.config.data_dir}"\n')
    env = client_env(tmp_path)
    listing = await schnack(env, "admin", "tokens", "list", "alice@localhost", "--config", str(config), "--json")
    assert listing.returncode == 0, listing.stderr
    rows = json.loads(listing.stdout)
    assert [(row["id"], row["software"], row["mechanism"]) for row in rows] == [
        (agent, "schnack", token["mechanism"])
    ]
    usage = await schnack(env, "admin", "tokens", "revoke", "alice@localhost", "--config", str(config))
    assert usage.returncode == 2 and usage.stderr.strip() == "schnack: name either --device ID or --all"
    unknown = await schnack(env, "admin", "tokens", "revoke", "alice@localhost", "--device", "nope",
                            "--config", str(config))
    assert unknown.returncode == 1 and len(unknown.stderr.strip().splitlines()) == 1
    assert "has no token for device nope" in unknown.stderr
    revoked = await schnack(env, "admin", "tokens", "revoke", "alice@localhost", "--device", agent,
                            "--config", str(config))
    assert revoked.returncode == 0, revoked.stderr
    assert revoked.stdout.strip() == "revoked the tokens of 1 devices of alice@localhost"
    # The device is disconnected ...
    gone = await next_of(events)
    assert isinstance(gone, Disconnected) and "not-authorized" in gone.reason
    # ... and its token fails.
    refused = await token_login(server, token, agent, token["count"] + 1)
    assert refused.tag == payload.FAILURE
    assert (payload.Failure.from_xml(refused).condition, payload.Failure.from_xml(refused).text) == (
        "not-authorized", "unknown or revoked token"
    )
    # ... and the password still logs the device in (our client drops the refused token by itself).
    again = device(server, phone_dir, clients)
    await again.connect()
    assert (again.mechanism or "").startswith("SCRAM-SHA-256-PLUS")
    assert again.jid.bare == ALICE


def phone_agent(data_dir: Path) -> str:
    """The user-agent id our client keeps in its store."""
    from schnack.client.store import Store

    store = Store(data_dir)
    try:
        agent = store.setting("user-agent")
    finally:
        store.close()
    assert agent is not None
    return agent


async def token_login(server: Server, token: dict[str, Any], agent: str, count: int) -> Element:
    """A raw FAST login with a token our client kept, over the channel binding it names."""
    wire = await Wire.connect(server, "c2s_tls")
    await wire.open()
    kind = ht.parse_mechanism(token["mechanism"])[1]
    cb = b"" if kind is None else channel_bindings(wire.writer.get_extra_info("ssl_object"))[kind]
    proof = b"alice\0" + ht.initiator(ht.key_of(token["token"]), cb)
    wire.send(serialize(payload.Authenticate(
        token["mechanism"], proof, payload.UserAgent(agent), (fast.Fast(count=count).to_xml(),)
    ).to_xml()))
    answer = await wire.next()
    wire.close()
    assert answer is not None
    return answer


async def test_tokens_cli_without_a_server_is_one_line(tmp_path: Path) -> None:
    config = tmp_path / "cli.toml"
    config.write_text(f'domains = ["localhost"]\ndata_dir = "{tmp_path / "none"}"\n')
    result = await schnack(client_env(tmp_path), "admin", "tokens", "list", "alice@localhost", "--config", str(config))
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1
    assert "no server is running" in result.stderr


@pytest.mark.parametrize("listener", ["c2s", "c2s_tls"])
async def test_slixmpp_still_logs_in_with_sasl1(server: Server, listener: str) -> None:
    slix = SlixClient(server, "alice@localhost/slix", PASSWORD, listener=listener)
    try:
        assert await slix.start()
        assert slix.auths and slix.auths[0][0].startswith("SCRAM-SHA")
        # It was offered SASL2 next to SASL1, and ignored it.
        assert any(f.find(payload.AUTHENTICATION) is not None for f in slix.features)
        assert server.sessions.get(JID.parse("alice@localhost/slix")) is not None
    finally:
        await slix.stop()


async def test_over_websocket_without_a_restart(server: Server) -> None:
    """RFC 7395 with XEP-0388: the success and the features arrive as frames; no new <open/>."""
    async with aiohttp.ClientSession() as http:
        ws = await ws_connect(server, http)
        features = await ws.open()
        assert features.find(payload.AUTHENTICATION) is not None
        await ws.send(serialize(payload.Authenticate(
            "PLAIN", f"\0alice\0{PASSWORD}".encode(), AGENT, (bind2.Bind("web").to_xml(),)
        ).to_xml()))
        success = await ws.next()
        assert success is not None and success.tag == payload.SUCCESS
        jid = payload.Success.from_xml(success).authorization_identifier
        after = await ws.next()
        assert after is not None and after.tag == FEATURES
        await ws.send(f"<iq xmlns='jabber:client' type='get' id='p1'><ping xmlns='{ns.PING}'/></iq>")
        pong = await ws.next()
        assert pong is not None and pong.get("id") == "p1" and pong.get("type") == "result"
        assert pong.get("to") == jid
        await ws.ws.close()


async def test_two_programs_sharing_a_store_stay_online_together(server: Server, clients: list[Client],
                                                                 tmp_path: Path) -> None:
    """Same user agent (one store), two client objects: two sessions, neither replaces the other."""
    listener = device(server, tmp_path / "phone", clients)
    await listener.connect()
    sender = device(server, tmp_path / "phone", clients)
    await sender.connect()
    assert listener.jid != sender.jid
    assert server.sessions.get(listener.jid) is not None and server.sessions.get(sender.jid) is not None
    inbox = listener.messages()
    await sender.send(listener.jid, "from the other program", encrypted=False)
    assert (await next_of(inbox)).text == "from the other program"
    assert listener.connected and sender.connected

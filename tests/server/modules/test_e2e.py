"""The end-to-end encryption policy: plaintext chat bodies refused, encrypted and body-less pass."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from schnack.server.app import Server
from schnack.server.config import ConfigError
from schnack.server.modules.e2e import REFUSAL
from schnack.xmpp import ns

from ...harness import Client, add_user, running
from .messaging import FALLBACK, OMEMO, announce, body, chat, condition, error_text, login

# Routing, offline storage and the policy; presence is set by the tests (see messaging.announce).
WITH_POLICY = {"disable": ["roster", "presence"]}

OMEMO_2 = (
    f"<encrypted xmlns='{ns.OMEMO_2}'><header sid='7'><keys jid='bob@localhost'><key rid='8'>a2V5</key>"
    "</keys></header><payload>cGF5bG9hZA==</payload></encrypted>"
)
OPENPGP = f"<openpgp xmlns='{ns.OPENPGP}'>b3BlbnBncA==</openpgp>"
OPENPGP_LEGACY = f"<x xmlns='{ns.OPENPGP_LEGACY}'>hQEMA0...</x>"


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    async with running(tmp_path, modules=WITH_POLICY) as srv:
        yield srv


async def pair(server: Server) -> tuple[Client, Client]:
    """Alice, and Bob with one available resource."""
    alice = await login(server, "alice@localhost/phone")
    bob = await login(server, "bob@localhost/laptop")
    announce(bob)
    return alice, bob


async def stored(server: Server, user: str) -> int:
    return await server.storage.archive.count("localhost", user, "offline")


@pytest.mark.parametrize("kind", ["chat", "normal", None, "unknown-type"])
@pytest.mark.parametrize("to", ["bob@localhost", "bob@localhost/laptop", "bob@localhost/gone"])
async def test_plaintext_chat_is_refused(server: Server, kind: str | None, to: str) -> None:
    alice, bob = await pair(server)
    await alice.send(chat(to, "plain words", kind, id="p1"))
    (error,) = alice.take()
    assert condition(error) == "policy-violation"
    assert error_text(error) == REFUSAL
    assert error.get("id") == "p1"
    assert error.get("to") == "alice@localhost/phone"
    assert error.get("from") == to
    assert body(error) is None
    assert bob.take() == []


def test_refusal_tells_the_user_what_to_do() -> None:
    assert "requires end-to-end encryption" in REFUSAL
    assert "Enable OMEMO" in REFUSAL


async def test_plaintext_to_offline_user_is_refused_and_not_stored(server: Server) -> None:
    alice = await login(server, "alice@localhost/phone")
    await add_user(server, "bob")
    await alice.send(chat("bob@localhost", "plain words"))
    (error,) = alice.take()
    assert condition(error) == "policy-violation"
    assert await stored(server, "bob") == 0


@pytest.mark.parametrize("to", [None, "alice@localhost", "alice@localhost/laptop"])
async def test_plaintext_to_self_is_refused(server: Server, to: str | None) -> None:
    phone = await login(server, "alice@localhost/phone")
    laptop = await login(server, "alice@localhost/laptop")
    announce(laptop)
    await phone.send(chat(to, "note to self"))
    (error,) = phone.take()
    assert condition(error) == "policy-violation"
    assert laptop.take() == []


async def test_plaintext_to_unknown_user_is_refused_before_routing(server: Server) -> None:
    alice = await login(server, "alice@localhost/phone")
    await alice.send(chat("nobody@localhost", "plain words"))
    (error,) = alice.take()
    assert condition(error) == "policy-violation"


@pytest.mark.parametrize("payload", [OMEMO, OMEMO_2, OPENPGP, OPENPGP_LEGACY])
@pytest.mark.parametrize("to", ["bob@localhost", "bob@localhost/laptop"])
async def test_encrypted_messages_pass(server: Server, payload: str, to: str) -> None:
    alice, bob = await pair(server)
    await alice.send(f"<message to='{to}' type='chat' id='e1'>{payload}{FALLBACK}</message>")
    assert alice.take() == []
    (got,) = bob.take()
    assert got.get("id") == "e1"
    # The encrypted element and the fallback body, untouched; the archive adds its stanza-id.
    assert len([child for child in got if child.tag != f"{{{ns.SID}}}stanza-id"]) == 2


async def test_encrypted_message_to_offline_user_is_stored(server: Server) -> None:
    alice = await login(server, "alice@localhost/phone")
    await add_user(server, "bob")
    await alice.send(f"<message to='bob@localhost' type='chat'>{OMEMO}{FALLBACK}</message>")
    assert alice.take() == []
    assert await stored(server, "bob") == 1


async def test_encrypted_note_to_self_passes(server: Server) -> None:
    phone = await login(server, "alice@localhost/phone")
    announce(phone)
    await phone.send(f"<message type='chat'>{OMEMO_2}{FALLBACK}</message>")
    (got,) = phone.take()
    assert got.get("type") == "chat"


@pytest.mark.parametrize(
    "payload",
    [
        "<received xmlns='urn:xmpp:receipts' id='e1'/>",
        "<displayed xmlns='urn:xmpp:chat-markers:0' id='e1'/>",
        "<composing xmlns='http://jabber.org/protocol/chatstates'/>",
        "<request xmlns='urn:xmpp:receipts'/>",
    ],
)
async def test_messages_without_body_pass(server: Server, payload: str) -> None:
    alice, bob = await pair(server)
    await alice.send(f"<message to='bob@localhost' type='chat'>{payload}</message>")
    assert alice.take() == []
    assert len(bob.take()) == 1


async def test_headline_with_plaintext_body_passes(server: Server) -> None:
    alice, bob = await pair(server)
    await alice.send(chat("bob@localhost", "news", kind="headline"))
    assert alice.take() == []
    assert [body(el) for el in bob.take()] == ["news"]


async def test_groupchat_is_left_to_routing(server: Server) -> None:
    alice, _bob = await pair(server)
    await alice.send(chat("bob@localhost", "hello room", kind="groupchat"))
    (error,) = alice.take()
    assert condition(error) == "service-unavailable"


async def test_error_with_body_passes(server: Server) -> None:
    alice, bob = await pair(server)
    await alice.send(chat("bob@localhost/laptop", "echoed", kind="error"))
    assert alice.take() == []
    assert len(bob.take()) == 1


async def test_message_to_the_domain_passes(server: Server) -> None:
    alice = await login(server, "alice@localhost/phone")
    await alice.send(chat("localhost", "hello server"))
    # No module takes messages to the domain: dropped, and the policy had nothing to say.
    assert alice.take() == []


async def test_message_to_a_remote_domain_is_not_this_modules_business(server: Server) -> None:
    alice = await login(server, "alice@localhost/phone")
    await alice.send(chat("romeo@example.net", "plain words"))
    (error,) = alice.take()
    assert condition(error) == "remote-server-not-found"


async def test_optional_policy_lets_plaintext_through(tmp_path: Path) -> None:
    async with running(tmp_path, modules={**WITH_POLICY, "e2e": {"policy": "optional"}}) as server:
        alice, bob = await pair(server)
        await alice.send(chat("bob@localhost", "plain words"))
        assert alice.take() == []
        assert [body(el) for el in bob.take()] == ["plain words"]


async def test_bad_policy_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        async with running(tmp_path, modules={**WITH_POLICY, "e2e": {"policy": "sometimes"}}):
            pass
    assert raised.value.key == "modules.e2e.policy"
    assert "'required', 'optional'" in str(raised.value)


async def test_policy_announces_no_disco_feature(tmp_path: Path) -> None:
    query = f"<iq type='get' id='d1' to='localhost'><query xmlns='{ns.DISCO_INFO}'/></iq>"
    features = []
    for modules in (WITH_POLICY, {"disable": [*WITH_POLICY["disable"], "e2e"]}):
        async with running(tmp_path, modules=modules) as server:
            alice = await login(server, "alice@localhost/phone")
            await alice.send(query)
            (reply,) = alice.take()
            features.append({f.get("var") for f in reply.iter(f"{{{ns.DISCO_INFO}}}feature")})
    assert features[0] == features[1]

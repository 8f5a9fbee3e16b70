"""RFC 6121 §8.5 message routing to local accounts: bare JID, full JID, self, unknown users."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from schnack.server.app import Server
from schnack.xmpp import ns

from ...harness import add_user, running, xml
from .messaging import ROUTING_ONLY, announce, body, chat, condition, error_text, login


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    """Routing and offline storage, without presence (tests announce resources themselves)."""
    async with running(tmp_path, modules=ROUTING_ONLY) as srv:
        yield srv


@pytest.fixture
async def no_offline(tmp_path: Path) -> AsyncIterator[Server]:
    """Routing without offline storage."""
    async with running(tmp_path, modules={"disable": [*ROUTING_ONLY["disable"], "offline"]}) as srv:
        yield srv


async def stored(server: Server, user: str) -> int:
    return await server.storage.archive.count("localhost", user, "offline")


# §8.5.2.1.1: chat and normal to the bare JID -------------------------------------------------


@pytest.mark.parametrize("kind", ["chat", "normal", None])
async def test_one_available_resource_gets_it_unchanged(server: Server, kind: str | None) -> None:
    alice = await login(server, "alice@localhost/phone")
    bob = await login(server, "bob@localhost/laptop")
    announce(bob)
    await alice.send(chat("bob@localhost", "hello bob", kind))
    (got,) = bob.take()
    assert body(got) == "hello bob"
    assert got.get("to") == "bob@localhost"  # §8.5.2.1.1: 'to' is not rewritten
    assert got.get("from") == "alice@localhost/phone"
    assert got.get("type") == kind
    assert alice.take() == []
    assert await stored(server, "bob") == 0


@pytest.mark.parametrize("kind", ["chat", "normal", None])
async def test_resources_with_the_highest_priority_get_it(server: Server, kind: str | None) -> None:
    alice = await login(server, "alice@localhost/phone")
    bob = [await login(server, f"bob@localhost/{r}") for r in ("one", "two", "three")]
    announce(bob[0], 5)
    announce(bob[1], 5)
    announce(bob[2], 1)
    await alice.send(chat("bob@localhost", "to the most available", kind))
    assert [body(el) for el in bob[0].take()] == ["to the most available"]
    assert [body(el) for el in bob[1].take()] == ["to the most available"]
    assert bob[2].take() == []


async def test_two_resources_of_equal_priority_both_get_it(server: Server) -> None:
    alice = await login(server, "alice@localhost/phone")
    bob1 = await login(server, "bob@localhost/one")
    bob2 = await login(server, "bob@localhost/two")
    announce(bob1)
    announce(bob2)
    await alice.send(chat("bob@localhost"))
    assert len(bob1.take()) == 1
    assert len(bob2.take()) == 1


@pytest.mark.parametrize("kind", ["chat", "normal", None])
async def test_no_available_resource_stores_offline(server: Server, kind: str | None) -> None:
    alice = await login(server, "alice@localhost/phone")
    await login(server, "bob@localhost/laptop")
    await alice.send(chat("bob@localhost", "later", kind))
    assert alice.take() == []
    assert await stored(server, "bob") == 1


async def test_resources_without_initial_presence_get_nothing(server: Server) -> None:
    """A connected resource that never sent presence is not available (RFC 6121 §4.2)."""
    alice = await login(server, "alice@localhost/phone")
    bob = await login(server, "bob@localhost/laptop")
    await alice.send(chat("bob@localhost"))
    assert bob.take() == []
    assert await stored(server, "bob") == 1


async def test_negative_priority_only_counts_as_no_resource(server: Server) -> None:
    alice = await login(server, "alice@localhost/phone")
    bob = await login(server, "bob@localhost/bot")
    announce(bob, -1)
    await alice.send(chat("bob@localhost"))
    assert bob.take() == []
    assert alice.take() == []
    assert await stored(server, "bob") == 1


async def test_negative_priority_resource_is_skipped(server: Server) -> None:
    alice = await login(server, "alice@localhost/phone")
    bot = await login(server, "bob@localhost/bot")
    laptop = await login(server, "bob@localhost/laptop")
    announce(bot, -5)
    announce(laptop, 0)
    await alice.send(chat("bob@localhost"))
    assert bot.take() == []
    assert len(laptop.take()) == 1


async def test_offline_user_without_offline_storage_bounces(no_offline: Server) -> None:
    alice = await login(no_offline, "alice@localhost/phone")
    await login(no_offline, "bob@localhost/laptop")
    await alice.send(chat("bob@localhost", id="lost"))
    (error,) = alice.take()
    assert condition(error) == "service-unavailable"
    assert error.get("id") == "lost"
    assert error.get("from") == "bob@localhost"
    assert error.get("to") == "alice@localhost/phone"


async def test_never_connected_user_without_offline_storage_bounces(no_offline: Server) -> None:
    alice = await login(no_offline, "alice@localhost/phone")
    await add_user(no_offline, "bob")
    await alice.send(chat("bob@localhost", kind=None))
    (error,) = alice.take()
    assert condition(error) == "service-unavailable"


# §8.5.2.1.1 (3), §8.5.2.2.1 (2): groupchat to the bare JID ------------------------------------


@pytest.mark.parametrize("resources", [0, 1, 2])
async def test_groupchat_to_bare_jid_bounces(server: Server, resources: int) -> None:
    alice = await login(server, "alice@localhost/phone")
    await add_user(server, "bob")
    bobs = [await login(server, f"bob@localhost/r{i}") for i in range(resources)]
    for bob in bobs:
        announce(bob)
    await alice.send(chat("bob@localhost", kind="groupchat", id="g1"))
    (error,) = alice.take()
    assert condition(error) == "service-unavailable"
    assert error.get("id") == "g1"
    assert all(bob.take() == [] for bob in bobs)
    assert await stored(server, "bob") == 0


# §8.5.2.1.1 (4), §8.5.2.2.1 (3): headline to the bare JID -------------------------------------


async def test_headline_goes_to_every_non_negative_resource(server: Server) -> None:
    alice = await login(server, "alice@localhost/phone")
    high = await login(server, "bob@localhost/high")
    low = await login(server, "bob@localhost/low")
    negative = await login(server, "bob@localhost/negative")
    silent = await login(server, "bob@localhost/silent")
    announce(high, 10)
    announce(low, 0)
    announce(negative, -1)
    await alice.send(chat("bob@localhost", "news", kind="headline"))
    assert [body(el) for el in high.take()] == ["news"]
    assert [body(el) for el in low.take()] == ["news"]
    assert negative.take() == []
    assert silent.take() == []


async def test_headline_to_one_resource(server: Server) -> None:
    alice = await login(server, "alice@localhost/phone")
    bob = await login(server, "bob@localhost/laptop")
    announce(bob)
    await alice.send(chat("bob@localhost", "news", kind="headline"))
    assert [body(el) for el in bob.take()] == ["news"]


@pytest.mark.parametrize("priority", [None, -1])
async def test_headline_without_available_resource_is_dropped(server: Server, priority: int | None) -> None:
    alice = await login(server, "alice@localhost/phone")
    bob = await login(server, "bob@localhost/laptop")
    if priority is not None:
        announce(bob, priority)
    await alice.send(chat("bob@localhost", "news", kind="headline"))
    assert alice.take() == []
    assert bob.take() == []
    assert await stored(server, "bob") == 0


async def test_headline_to_offline_user_is_dropped(server: Server) -> None:
    alice = await login(server, "alice@localhost/phone")
    await (await login(server, "bob@localhost/laptop")).close()
    await alice.send(chat("bob@localhost", "news", kind="headline"))
    assert alice.take() == []
    assert await stored(server, "bob") == 0


# §8.5.2.1.1 (5), §8.5.2.2.1 (4): errors are never bounced --------------------------------------


async def test_error_to_bare_jid_is_dropped_even_with_resources(server: Server) -> None:
    alice = await login(server, "alice@localhost/phone")
    bob = await login(server, "bob@localhost/laptop")
    announce(bob)
    await alice.send(chat("bob@localhost", kind="error"))
    assert bob.take() == []
    assert alice.take() == []


async def test_error_to_offline_user_is_neither_stored_nor_bounced(server: Server) -> None:
    alice = await login(server, "alice@localhost/phone")
    await (await login(server, "bob@localhost/laptop")).close()
    await alice.send(chat("bob@localhost", kind="error"))
    assert alice.take() == []
    assert await stored(server, "bob") == 0


@pytest.mark.parametrize("to", ["nobody@localhost", "nobody@localhost/phone"])
async def test_error_to_unknown_user_is_not_bounced(server: Server, to: str) -> None:
    alice = await login(server, "alice@localhost/phone")
    await alice.send(chat(to, kind="error"))
    assert alice.take() == []


# §8.5.3.1: full JID of a connected resource ---------------------------------------------------


@pytest.mark.parametrize("kind", ["chat", "normal", "groupchat", "headline", "error"])
async def test_full_jid_gets_it_whatever_its_presence(server: Server, kind: str) -> None:
    alice = await login(server, "alice@localhost/phone")
    target = await login(server, "bob@localhost/quiet")
    other = await login(server, "bob@localhost/other")
    announce(other, 50)
    # 'quiet' never sent presence: a connected resource still gets what is sent to its full JID.
    await alice.send(chat("bob@localhost/quiet", "just you", kind))
    (got,) = target.take()
    assert body(got) == "just you"
    assert got.get("to") == "bob@localhost/quiet"
    assert other.take() == []
    assert alice.take() == []


async def test_full_jid_with_negative_priority_gets_it(server: Server) -> None:
    alice = await login(server, "alice@localhost/phone")
    bot = await login(server, "bob@localhost/bot")
    announce(bot, -10)
    await alice.send(chat("bob@localhost/bot"))
    assert len(bot.take()) == 1


# §8.5.3.2.1: full JID whose resource is gone --------------------------------------------------


@pytest.mark.parametrize("kind", ["chat", "normal", None])
async def test_gone_resource_falls_back_to_the_bare_jid(server: Server, kind: str | None) -> None:
    alice = await login(server, "alice@localhost/phone")
    laptop = await login(server, "bob@localhost/laptop")
    announce(laptop)
    await alice.send(chat("bob@localhost/gone", "still for bob", kind))
    (got,) = laptop.take()
    assert body(got) == "still for bob"
    assert got.get("to") == "bob@localhost/gone"
    assert alice.take() == []


@pytest.mark.parametrize("kind", ["chat", "normal"])
async def test_gone_resource_of_offline_user_stores_offline(server: Server, kind: str) -> None:
    alice = await login(server, "alice@localhost/phone")
    await (await login(server, "bob@localhost/laptop")).close()
    await alice.send(chat("bob@localhost/laptop", kind=kind))
    assert alice.take() == []
    assert await stored(server, "bob") == 1


async def test_gone_resource_without_offline_storage_bounces(no_offline: Server) -> None:
    alice = await login(no_offline, "alice@localhost/phone")
    await (await login(no_offline, "bob@localhost/laptop")).close()
    await alice.send(chat("bob@localhost/laptop", id="c9"))
    (error,) = alice.take()
    assert condition(error) == "service-unavailable"
    assert error.get("from") == "bob@localhost/laptop"


@pytest.mark.parametrize("online", [True, False])
async def test_groupchat_to_gone_resource_bounces(server: Server, online: bool) -> None:
    alice = await login(server, "alice@localhost/phone")
    laptop = await login(server, "bob@localhost/laptop")
    announce(laptop)
    if not online:
        await laptop.close()
    await alice.send(chat("bob@localhost/gone", kind="groupchat", id="g2"))
    (error,) = alice.take()
    assert condition(error) == "service-unavailable"
    assert error.get("id") == "g2"
    assert laptop.take() == []


@pytest.mark.parametrize("kind", ["headline", "error"])
@pytest.mark.parametrize("online", [True, False])
async def test_headline_or_error_to_gone_resource_is_dropped(server: Server, kind: str, online: bool) -> None:
    alice = await login(server, "alice@localhost/phone")
    laptop = await login(server, "bob@localhost/laptop")
    announce(laptop)
    if not online:
        await laptop.close()
    await alice.send(chat("bob@localhost/gone", kind=kind))
    assert alice.take() == []
    assert laptop.take() == []
    assert await stored(server, "bob") == 0


# §8.5.1: no such user -------------------------------------------------------------------------


@pytest.mark.parametrize("to", ["nobody@localhost", "nobody@localhost/phone"])
@pytest.mark.parametrize("kind", ["chat", "normal", None, "groupchat", "headline"])
async def test_unknown_user_gets_service_unavailable(server: Server, to: str, kind: str | None) -> None:
    alice = await login(server, "alice@localhost/phone")
    await alice.send(chat(to, kind=kind, id="u1"))
    (error,) = alice.take()
    assert condition(error) == "service-unavailable"
    assert error.get("id") == "u1"
    assert error.get("from") == to
    # RFC 6120 §8.3.1: the error does not echo the message's content.
    assert body(error) is None


async def test_online_user_is_not_looked_up_in_storage(server: Server) -> None:
    """An account with a session exists: routing to it does not read the accounts table."""
    alice = await login(server, "alice@localhost/phone")
    bob = await login(server, "bob@localhost/laptop")
    announce(bob)
    await server.storage.accounts.delete("localhost", "bob")
    await alice.send(chat("bob@localhost"))
    assert len(bob.take()) == 1


# RFC 6120 §10.3.1 and messages to one's own account --------------------------------------------


async def test_message_without_to_goes_to_own_bare_jid(server: Server) -> None:
    phone = await login(server, "alice@localhost/phone")
    laptop = await login(server, "alice@localhost/laptop")
    announce(phone)
    announce(laptop)
    await phone.send(chat(None, "note to self"))
    for client in (phone, laptop):
        (got,) = client.take()
        assert body(got) == "note to self"
        assert got.get("to") == "alice@localhost"
        assert got.get("from") == "alice@localhost/phone"


async def test_message_to_own_bare_jid(server: Server) -> None:
    phone = await login(server, "alice@localhost/phone")
    laptop = await login(server, "alice@localhost/laptop")
    announce(phone, 0)
    announce(laptop, 3)
    await phone.send(chat("alice@localhost", "to my best device"))
    assert phone.take() == []
    assert [body(el) for el in laptop.take()] == ["to my best device"]


async def test_message_to_self_while_unavailable_is_stored(server: Server) -> None:
    phone = await login(server, "alice@localhost/phone")
    await phone.send(chat(None, "remember the milk"))
    assert phone.take() == []
    assert await stored(server, "alice") == 1


async def test_groupchat_to_self_bounces(server: Server) -> None:
    phone = await login(server, "alice@localhost/phone")
    announce(phone)
    await phone.send(chat("alice@localhost", kind="groupchat"))
    (error,) = phone.take()
    assert condition(error) == "service-unavailable"


async def test_message_to_own_full_jid(server: Server) -> None:
    phone = await login(server, "alice@localhost/phone")
    laptop = await login(server, "alice@localhost/laptop")
    await phone.send(chat("alice@localhost/laptop", "over here"))
    assert [body(el) for el in laptop.take()] == ["over here"]
    assert phone.take() == []


# Other domains -------------------------------------------------------------------------------


async def test_remote_domain_gets_remote_server_not_found(server: Server) -> None:
    alice = await login(server, "alice@localhost/phone")
    await alice.send(chat("romeo@example.net", id="r1"))
    (error,) = alice.take()
    assert condition(error) == "remote-server-not-found"
    assert error.get("from") == "romeo@example.net"


async def test_error_text_names_the_reason(no_offline: Server) -> None:
    alice = await login(no_offline, "alice@localhost/phone")
    await (await login(no_offline, "bob@localhost/laptop")).close()
    await alice.send(chat("bob@localhost"))
    (error,) = alice.take()
    assert error_text(error) == "the recipient is not online", xml(error)
    assert error.find(f"{{{ns.CLIENT}}}error") is not None

"""XEP-0357 push registrations across nodes: a node that keeps an account's registrations in
memory drops them when another node changes them (ClusterBus.announce), on the in-process hub
and on Redis."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from schnack.server.app import Server
from schnack.server.modules.push import STORE, Push
from schnack.xmpp.jid import JID

from ...harness import add_user
from .conftest import eventually
from .test_node_presence import backend, nodes, online
from .test_recovery import cut_off

__all__ = ["backend"]  # the fixture that runs each test on both bus backends

ENABLE = ("<iq type='set' id='e1'><enable xmlns='urn:xmpp:push:0' jid='push.example.org' node='n1'/></iq>")


async def test_a_device_registered_through_one_node_is_known_on_the_others(tmp_path: Path, backend: str) -> None:
    async with nodes(tmp_path, backend) as (a, b):
        alice = JID.parse("alice@localhost")
        on_b = b.modules["push"]
        assert isinstance(on_b, Push)
        # Node b read alice's registrations (none) for an offline message, say, and keeps them.
        assert await on_b.registrations(alice) == {}
        phone = await online(a, "alice@localhost/phone")
        await phone.send(ENABLE)
        assert phone.take()[-1].get("type") == "result"

        async def on_node_b() -> list[str]:
            return [registration.enable.node for registration in (await on_b.registrations(alice)).values()]

        assert await eventually(on_node_b, bool, timeout=5.0) == ["n1"]


async def test_a_deleted_accounts_devices_are_forgotten_on_every_node(tmp_path: Path, backend: str) -> None:
    """A new account of the deleted one's name must not wake the old owner's phone through a node
    that kept the old registrations in memory."""
    async with nodes(tmp_path, backend) as (a, b):
        on_node_b = await registered_and_kept(a, b)
        assert await a.delete_account("localhost", "alice")
        a.end_account_sessions("localhost", "alice")
        await add_user(a, "alice")
        assert await eventually(on_node_b, lambda found: not found, timeout=5.0) == []


async def test_devices_deleted_while_the_bus_was_away_from_their_node_are_forgotten_once_it_is_back(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Node a could not reach Redis as it deleted alice's account, so the news went nowhere: once a
    reaches Redis again, node b hears it and drops the registrations it kept."""
    async with nodes(tmp_path, "redis") as (a, b):
        on_node_b = await registered_and_kept(a, b)
        with cut_off(a, monkeypatch):
            assert await a.delete_account("localhost", "alice")
            a.end_account_sessions("localhost", "alice")
        await add_user(a, "alice")
        assert await eventually(on_node_b, lambda found: not found, timeout=10.0) == []


async def registered_and_kept(a: Server, b: Server) -> Callable[[], Awaitable[list[str]]]:
    """Alice's phone registers on node a, and node b keeps the registration it read, as for an
    offline message to alice; the probe returns the push nodes b knows for her."""
    alice = JID.parse("alice@localhost")
    on_b = b.modules["push"]
    assert isinstance(on_b, Push)
    heard: list[str] = []
    b.cluster.bus.on_changed(lambda store, _account: heard.append(store))
    phone = await online(a, "alice@localhost/phone")
    await phone.send(ENABLE)
    assert phone.take()[-1].get("type") == "result"

    async def heard_of_it() -> list[str]:
        return heard

    await eventually(heard_of_it, lambda stores: STORE in stores, timeout=5.0)

    async def on_node_b() -> list[str]:
        return [registration.enable.node for registration in (await on_b.registrations(alice)).values()]

    assert await on_node_b() == ["n1"]
    return on_node_b

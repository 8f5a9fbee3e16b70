"""Messages across nodes (RFC 6121 §8.5 over the cluster bus): two servers on one in-process hub.

Both nodes share one database, as cluster nodes share PostgreSQL; the in-process hub stands in
for Redis, whose bus the contract suite checks on its own.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from schnack.server.app import Server
from schnack.server.cluster import LocalBus
from schnack.server.cluster.bus import Entry
from schnack.server.cluster.local import LocalHub

from ...harness import make_config
from ..modules.messaging import ROUTING_ONLY, announce, body, chat, login
from .conftest import eventually


@contextlib.asynccontextmanager
async def two_nodes(tmp_path: Path) -> AsyncIterator[tuple[Server, Server]]:
    hub = LocalHub()
    shared = {"url": f"sqlite:///{tmp_path / 'shared.db'}"}
    servers = [
        Server(make_config(tmp_path / name, storage=shared, modules=ROUTING_ONLY),
               bus=LocalBus(name, hub=hub, heartbeat_interval=0.1, node_ttl=0.6))
        for name in ("a", "b")
    ]
    started: list[Server] = []
    try:
        for server in servers:
            await server.start(listen=False)
            started.append(server)
        yield servers[0], servers[1]
    finally:
        for server in reversed(started):
            await server.stop()


async def offline_count(server: Server, user: str) -> int:
    return await server.storage.archive.count("localhost", user, "offline")


async def test_sessions_are_in_the_directory_while_bound(tmp_path: Path) -> None:
    async with two_nodes(tmp_path) as (a, b):
        await login(a, "alice@localhost/phone")
        bob = await login(b, "bob@localhost/desk")
        assert await a.cluster.bus.lookup("bob@localhost") == {"bob@localhost/desk": "b"}
        assert {n: i.sessions for n, i in (await a.cluster.bus.nodes()).items()} == {"a": 1, "b": 1}
        await bob.close()
        await eventually(lambda: a.cluster.bus.lookup("bob@localhost"), lambda d: d == {})


async def test_a_node_alone_does_not_read_the_directory_for_a_message(tmp_path: Path) -> None:
    """The single-node default: every session is here, so carbons and routing ask no directory."""
    server = Server(make_config(tmp_path, modules=ROUTING_ONLY), bus=LocalBus("a", heartbeat_interval=0.1, node_ttl=0.6))
    await server.start(listen=False)
    try:
        bus = server.cluster.bus
        reads: list[str] = []
        read_lookup, read_entries = bus.lookup, bus.entries

        async def lookup(bare: str) -> dict[str, str]:
            reads.append(bare)
            return await read_lookup(bare)

        async def entries(bare: str) -> dict[str, Entry]:
            reads.append(bare)
            return await read_entries(bare)

        vars(bus).update(lookup=lookup, entries=entries)
        alice = await login(server, "alice@localhost/phone")
        bob = await login(server, "bob@localhost/desk")
        await alice.send(chat("bob@localhost/desk", "hier"))
        await alice.send(chat("bob@localhost/gone", "nicht da"))
        (got,) = await bob.expect()
        assert body(got) == "hier"
        assert await offline_count(server, "bob") == 1
        assert reads == []
    finally:
        await server.stop()


async def test_a_message_to_a_full_jid_on_another_node_arrives(tmp_path: Path) -> None:
    async with two_nodes(tmp_path) as (a, b):
        alice = await login(a, "alice@localhost/phone")
        bob = await login(b, "bob@localhost/desk")
        await alice.send(chat("bob@localhost/desk", "über den Bus"))
        (got,) = await bob.expect(timeout=20)
        assert body(got) == "über den Bus"
        assert got.get("from") == "alice@localhost/phone"
        assert got.get("to") == "bob@localhost/desk"
        assert alice.take() == []


async def test_a_message_to_a_bare_jid_reaches_the_available_resource_on_another_node(tmp_path: Path) -> None:
    async with two_nodes(tmp_path) as (a, b):
        alice = await login(a, "alice@localhost/phone")
        bob = await login(b, "bob@localhost/desk")
        announce(bob)
        await alice.send(chat("bob@localhost", "hello"))
        (got,) = await bob.expect(timeout=20)
        assert body(got) == "hello"
        assert await offline_count(a, "bob") == 0


async def test_a_bare_message_stays_here_when_a_resource_here_is_available(tmp_path: Path) -> None:
    async with two_nodes(tmp_path) as (a, b):
        alice = await login(a, "alice@localhost/phone")
        bob_here = await login(a, "bob@localhost/phone")
        bob_there = await login(b, "bob@localhost/desk")
        announce(bob_here)
        await alice.send(chat("bob@localhost", "local"))
        (got,) = await bob_here.expect(timeout=20)
        assert body(got) == "local"
        assert bob_there.take() == []


async def test_without_an_available_resource_anywhere_the_message_is_stored_once(tmp_path: Path) -> None:
    async with two_nodes(tmp_path) as (a, b):
        alice = await login(a, "alice@localhost/phone")
        bob = await login(b, "bob@localhost/desk")  # bound, but no initial presence
        await alice.send(chat("bob@localhost", "later"))
        await eventually(lambda: offline_count(a, "bob"), lambda n: n == 1)
        assert bob.take() == []


async def test_messages_for_a_dead_node_go_to_offline_storage(tmp_path: Path) -> None:
    async with two_nodes(tmp_path) as (a, b):
        alice = await login(a, "alice@localhost/phone")
        bob = await login(b, "bob@localhost/desk")
        announce(bob)
        await b.cluster.bus.stop(leave=False)  # node b stops heartbeating, as a crashed node would
        await eventually(lambda: a.cluster.bus.lookup("bob@localhost"), lambda d: d == {})
        await alice.send(chat("bob@localhost/desk", "are you there?"))
        await eventually(lambda: offline_count(a, "bob"), lambda n: n == 1)
        assert alice.take() == []

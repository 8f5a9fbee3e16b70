"""Two ``schnack serve`` processes in one cluster, on one PostgreSQL schema and Redis: a client on
node A messages a client on node B, to the full and to the bare JID, and B answers; when node B
is killed, what A's client sends B's goes to offline storage and waits there for the next login."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from ..conftest import require_service
from ..server.cluster.conftest import REDIS_URL, eventually, redis_available
from ..server.storage.conftest import postgres_schema
from .slix import PASSWORD
from .test_messages import FALLBACK, Peer
from .test_restart import SCHNACK, Process, admin


@pytest.fixture
async def cluster_configs(tmp_path: Path) -> AsyncIterator[tuple[list[Path], str]]:
    """The configuration files of nodes a and b, sharing a fresh schema, and their Redis key prefix."""
    reason = await redis_available(REDIS_URL)
    require_service(reason is None, f"Redis not reachable at {REDIS_URL}: {reason}")
    prefix = f"schnack-test-{secrets.token_hex(6)}:"
    async with postgres_schema() as (storage_url, _, _):
        configs = []
        for name in ("a", "b"):
            config = tmp_path / f"{name}.toml"
            config.write_text(
                f'domains = ["localhost"]\ndata_dir = "state-{name}"\n'
                '[listen]\nc2s = ["127.0.0.1:0"]\nc2s_tls = []\nhttp = []\nhttps = []\n'
                f'[storage]\nurl = "{storage_url}"\n'
                f'[cluster]\nredis_url = "{REDIS_URL}"\nnode_name = "{name}"\nkey_prefix = "{prefix}"\n'
                "heartbeat_interval = 0.2\nnode_ttl = 2.0\n"
            )
            configs.append(config)
        try:
            yield configs, prefix
        finally:
            client = aioredis.Redis.from_url(REDIS_URL)
            keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
            if keys:
                await client.delete(*keys)
            await client.aclose()


async def node_gone(prefix: str, node: str) -> None:
    """Wait until the cluster declared ``node`` dead (its heartbeat expired and it was reaped)."""
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        await eventually(lambda: client.hexists(f"{prefix}nodes", node), lambda known: not known, timeout=60)
    finally:
        await client.aclose()


async def test_a_client_on_one_node_messages_a_client_on_another(
    cluster_configs: tuple[list[Path], str],
) -> None:
    configs, prefix = cluster_configs
    for user in ("alice", "bob"):
        admin(configs[0], "user", "add", "--password-stdin", f"{user}@localhost", stdin=f"{PASSWORD}\n")
    node_a, node_b = (Process(config) for config in configs)
    peers: list[Peer] = []
    try:
        node_a.start()
        node_b.start()
        alice = Peer(node_a, "alice@localhost/phone")  # type: ignore[arg-type]
        bob = Peer(node_b, "bob@localhost/laptop")  # type: ignore[arg-type]
        peers += [alice, bob]
        for peer in peers:
            await peer.start()
            await peer.available()

        alice.send("bob@localhost/laptop", FALLBACK, encrypted=True, id="full")
        got = await bob.next_message()
        assert (got["id"], got["from"], got["to"]) == ("full", "alice@localhost/phone", "bob@localhost/laptop")
        assert got["body"] == FALLBACK

        alice.send("bob@localhost", FALLBACK, encrypted=True, id="bare")
        got = await bob.next_message()
        assert (got["id"], got["from"]) == ("bare", "alice@localhost/phone")

        bob.send("alice@localhost", FALLBACK, encrypted=True, id="reply")
        got = await alice.next_message()
        assert (got["id"], got["from"]) == ("reply", "bob@localhost/laptop")
        await alice.sync()
        await bob.sync()
        assert alice.errors.empty() and bob.errors.empty()

        listing = await asyncio.create_subprocess_exec(
            *SCHNACK, "admin", "cluster", "--json", "--config", str(configs[0]),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(listing.communicate(), 60)
        assert listing.returncode == 0, err.decode()
        seen = json.loads(out)
        assert seen["node"] == "a" and [n["name"] for n in seen["nodes"]] == ["a", "b"]

        node_b.kill()
        alice.send("bob@localhost/laptop", FALLBACK, encrypted=True, id="while-dying")
        await alice.sync()
        await node_gone(prefix, "b")
        alice.send("bob@localhost/laptop", FALLBACK, encrypted=True, id="after-death")
        await alice.sync()
        bob_again = Peer(node_a, "bob@localhost/laptop")  # type: ignore[arg-type]
        peers.append(bob_again)
        await bob_again.start()
        await bob_again.available()
        got_ids = [(await bob_again.next_message())["id"] for _ in range(2)]
        assert got_ids == ["while-dying", "after-death"]
        assert alice.errors.empty()
    finally:
        for peer in peers:
            await peer.stop()
        node_a.stop()
        node_b.stop()

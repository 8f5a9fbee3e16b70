"""Two ``schnack serve`` nodes that find their Redis through Sentinel (a primary, a replica and three
sentinels of the test's own, see tests/server/cluster/test_sentinel.py): a message crosses from one
node to the other, the Redis primary is killed (kill -9), and once the sentinels promoted the
replica, messages cross again. The one sent while there was no primary went to offline storage and
reaches its online recipient without a new login, as after a Redis restart."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from ..server.cluster.conftest import eventually
from ..server.cluster.test_sentinel import FAILOVER, PASSWORD, RedisGroup, redis_group
from ..server.storage.conftest import postgres_schema
from .slix import PASSWORD as USER_PASSWORD
from .test_messages import FALLBACK, Peer
from .test_restart import Process, admin


@pytest.fixture
def group(tmp_path: Path) -> Iterator[RedisGroup]:
    """A started Redis group of the test's own."""
    workdir = tmp_path / "redis"
    workdir.mkdir()
    with redis_group(workdir) as made:
        yield made


async def test_messages_cross_nodes_after_a_redis_failover(tmp_path: Path, group: RedisGroup) -> None:
    prefix = f"schnack-test-{secrets.token_hex(6)}:"
    async with postgres_schema() as (storage_url, _, _):
        configs = []
        for name in ("a", "b"):
            config = tmp_path / f"{name}.toml"
            config.write_text(
                f'domains = ["localhost"]\ndata_dir = "state-{name}"\n'
                '[listen]\nc2s = ["127.0.0.1:0"]\nc2s_tls = []\nhttp = []\nhttps = []\n'
                f'[storage]\nurl = "{storage_url}"\n'
                f'[cluster]\nredis_url = "{group.url()}"\nnode_name = "{name}"\nkey_prefix = "{prefix}"\n'
                "heartbeat_interval = 0.2\nnode_ttl = 2.0\n"
            )
            configs.append(config)
        for user in ("alice", "bob"):
            admin(configs[0], "user", "add", "--password-stdin", f"{user}@localhost", stdin=f"{USER_PASSWORD}\n")
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
            alice.send("bob@localhost/laptop", FALLBACK, encrypted=True, id="before")
            assert (await bob.next_message())["id"] == "before"

            group.kill(group.primary)
            alice.send("bob@localhost/laptop", FALLBACK, encrypted=True, id="during")
            await alice.sync()
            await eventually(group.primary_port, lambda port: port == group.replica, timeout=FAILOVER)
            async with aioredis.Redis(port=group.replica, password=PASSWORD, db=2, socket_timeout=2) as promoted:
                # Both nodes listen on the promoted replica and bob's session is in its directory.
                await eventually(lambda: promoted.pubsub_numsub(f"{prefix}to:a", f"{prefix}to:b"),
                                 lambda counts: [count for _, count in counts] == [1, 1], timeout=FAILOVER)
                await eventually(lambda: promoted.hget(f"{prefix}dir:bob@localhost", "bob@localhost/laptop"),
                                 lambda node: node == b"b", timeout=FAILOVER)
            alice.send("bob@localhost/laptop", FALLBACK, encrypted=True, id="after")
            await alice.sync()
            # "during" comes from offline storage when node b recovers, maybe after "after".
            got = {(await bob.next_message())["id"] for _ in range(2)}
            assert got == {"during", "after"}
            assert alice.errors.empty() and bob.errors.empty()
        finally:
            for peer in peers:
                await peer.stop()
            node_a.stop()
            node_b.stop()

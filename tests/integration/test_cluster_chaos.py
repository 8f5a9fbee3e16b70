"""Chaos in a three-node cluster: a node killed, a rolling restart, Redis and PostgreSQL restarted,
all under a steady chat load, and not one message lost or shown twice.

Three ``schnack serve`` processes share one PostgreSQL and one Redis, behind a round-robin
balancer (cluster_harness.py). Six accounts chat in a ring, each one's client (with stream
management, reconnection, the persistent outbox and the archive catch-up) on whichever node the
balancer gave it, and all six write in one group, which lives on one of the nodes. The ledger
checks, per message id: every message the server acknowledged is shown to its recipient (to
every other member, for a group message) exactly once (clients de-duplicate by XEP-0359 ids, as
real ones do); a message refused with a temporary error is sent again by its sender as a new
one, and so is a group message the room refused because its node died and it forgot its sender
(not-acceptable: the client enters again first).

The Redis and PostgreSQL restarts use servers of the test's own (the system ones are never
restarted): ``redis-server`` and ``initdb``/``pg_ctl`` on free ports in temporary directories, and
for the Sentinel failover a primary, a replica and three sentinels (tests/server/cluster/test_sentinel.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from ..conftest import require_service
from ..server.cluster.conftest import REDIS_URL, PrivateRedis, eventually, redis_available
from ..server.cluster.test_sentinel import FAILOVER, redis_group
from ..server.storage.conftest import postgres_schema
from .cluster_harness import (
    Balancer,
    Chatter,
    Ledger,
    Node,
    PrivatePostgres,
    add_accounts,
    add_group,
    admin,
    balanced,
    chat,
    clear_prefix,
    room_owner,
)

ACCOUNTS = 6
# A message from every client every INTERVAL seconds: 30 messages a second in all.
INTERVAL = 0.2


@dataclass
class Cluster:
    nodes: list[Node]
    balancer: Balancer
    chatters: list[Chatter]
    ledger: Ledger
    stop: asyncio.Event
    load: asyncio.Task[None]
    redis_url: str
    prefix: str

    async def settle(self) -> None:
        """Stop the load, wait until the ledger balances, then check it."""
        self.stop.set()
        await self.load
        await balanced(self.ledger)
        assert not self.ledger.duplicated(), self.ledger.summary()
        assert self.ledger.acked & self.ledger.group_sent, self.ledger.summary()

    def refused_chats(self) -> dict[str, str]:
        """The refused 1:1 messages (group messages may be refused while their room moves)."""
        return {i: why for i, why in self.ledger.refused.items() if i not in self.ledger.group_sent}

    async def room_node(self) -> Node:
        """The node the group lives on."""
        owner = await room_owner(self.redis_url, self.prefix)
        (node,) = [node for node in self.nodes if node.name == owner]
        return node


async def _redis_up(url: str) -> None:
    reason = await redis_available(url)
    require_service(reason is None, f"Redis not reachable at {url}: {reason}")


@contextlib.asynccontextmanager
async def running(tmp_path: Path, storage_url: str, redis_url: str) -> AsyncIterator[Cluster]:
    """Three nodes, the balancer, and six clients chatting in a ring."""
    prefix = f"schnack-chaos-{secrets.token_hex(4)}:"
    accounts = [f"user{i}@localhost" for i in range(ACCOUNTS)]
    await add_accounts(storage_url, (account.partition("@")[0] for account in accounts))
    users = [account.partition("@")[0] for account in accounts]
    await add_group(storage_url, users[0], users[1:])
    nodes = [Node(tmp_path, name, storage_url, redis_url, prefix) for name in ("a", "b", "c")]
    balancer = Balancer(node.port for node in nodes)
    ledger = Ledger()
    chatters: list[Chatter] = []
    stop = asyncio.Event()
    try:
        await asyncio.gather(*(node.start() for node in nodes))
        await balancer.start()
        for i, account in enumerate(accounts):
            chatters.append(Chatter(account, accounts[(i + 1) % ACCOUNTS], balancer.port, ledger))
            await chatters[-1].start()
        load = asyncio.create_task(chat(chatters, stop, INTERVAL))
        try:
            yield Cluster(nodes, balancer, chatters, ledger, stop, load, redis_url, prefix)
        finally:
            stop.set()
            with contextlib.suppress(Exception):
                await load
    finally:
        for chatter in chatters:
            await chatter.close()
        await asyncio.gather(*(node.stop() for node in nodes))
        await balancer.stop()
        with contextlib.suppress(Exception):
            await clear_prefix(redis_url, prefix)


async def test_a_node_killed_under_load_loses_nothing(tmp_path: Path) -> None:
    await _redis_up(REDIS_URL)
    async with postgres_schema() as (storage_url, _, _), running(tmp_path, storage_url, REDIS_URL) as cluster:
        await asyncio.sleep(2)
        # The group's node dies: its clients, and the group, move to the other nodes.
        await (await cluster.room_node()).kill()
        await asyncio.sleep(3)
        await cluster.settle()
        assert not cluster.refused_chats(), cluster.ledger.summary()
        assert set(cluster.ledger.refused.values()) <= {"internal-server-error/wait", "not-acceptable/modify"}, \
            cluster.ledger.summary()
        # The clients that were on the dead node lost their link and logged in on the others.
        assert any(chatter.disconnects for chatter in cluster.chatters)
        assert all(chatter.client.connected for chatter in cluster.chatters)


async def test_a_rolling_restart_with_drain_loses_nothing(tmp_path: Path) -> None:
    await _redis_up(REDIS_URL)
    async with postgres_schema() as (storage_url, _, _), running(tmp_path, storage_url, REDIS_URL) as cluster:
        await asyncio.sleep(1)
        for i, node in enumerate(cluster.nodes):
            others = {f"127.0.0.1:{other.port}" for other in cluster.nodes if other is not node}
            # The command line once; then the same request on the admin channel, which is quicker.
            reply = await node.drain(cli=i == 0)
            assert reply["node"] == node.name and set(reply["targets"]) == others, reply
            assert reply["redirected"] >= 1 and reply["shut_down"] == 0, reply
            await node.start()
        await cluster.settle()
        assert not cluster.refused_chats(), cluster.ledger.summary()
        # Clients were sent on with see-other-host (RFC 6120 §4.9.3.19), not cut off.
        reasons = [reason for chatter in cluster.chatters for reason in chatter.disconnects]
        assert any("see-other-host" in reason for reason in reasons), reasons
        listing = json.loads(await admin(cluster.nodes[0].config, "cluster", "--json"))
        assert sorted(n["name"] for n in listing["nodes"]) == ["a", "b", "c"], listing


async def test_a_redis_restart_loses_nothing(tmp_path: Path) -> None:
    require_service(shutil.which("redis-server") is not None, "redis-server is not installed")
    redis = PrivateRedis(tmp_path)
    await redis.start()
    try:
        async with postgres_schema() as (storage_url, _, _), running(tmp_path, storage_url, redis.url) as cluster:
            await asyncio.sleep(1.5)
            await redis.stop()
            await asyncio.sleep(2)
            await redis.start()
            await asyncio.sleep(3)
            await cluster.settle()
            assert not cluster.refused_chats(), cluster.ledger.summary()
            # The nodes noticed, and kept serving their clients meanwhile (nobody was disconnected).
            assert all("lost Redis" in node.log.read_text() for node in cluster.nodes)
            assert not any(chatter.disconnects for chatter in cluster.chatters), \
                [chatter.disconnects for chatter in cluster.chatters]
    finally:
        await redis.stop()


async def test_a_sentinel_failover_loses_nothing(tmp_path: Path) -> None:
    """The nodes find Redis through Sentinel; its primary dies (kill -9) and the sentinels promote
    the replica, which may lack the last writes: the nodes follow it and nothing is lost."""
    workdir = tmp_path / "redis"
    workdir.mkdir()
    with redis_group(workdir) as group:
        async with postgres_schema() as (storage_url, _, _), running(tmp_path, storage_url, group.url()) as cluster:
            await asyncio.sleep(1.5)
            group.kill(group.primary)
            await eventually(group.primary_port, lambda port: port == group.replica, timeout=FAILOVER)
            await asyncio.sleep(3)
            await cluster.settle()
            assert not cluster.refused_chats(), cluster.ledger.summary()
            assert all("Redis failover" in node.log.read_text() or "lost Redis" in node.log.read_text()
                       for node in cluster.nodes)


async def test_a_postgres_restart_loses_nothing(tmp_path: Path) -> None:
    await _redis_up(REDIS_URL)
    reason = PrivatePostgres.available()
    require_service(reason is None, reason or "")
    postgres = PrivatePostgres()
    try:
        await postgres.init()
        await postgres.start()
        async with running(tmp_path, postgres.url, REDIS_URL) as cluster:
            await asyncio.sleep(1.5)
            await postgres.stop()
            await asyncio.sleep(2)
            await postgres.start()
            await asyncio.sleep(3)
            await cluster.settle()
            # What could not be stored was refused with a temporary error, never acknowledged,
            # and sent again once PostgreSQL was back.
            assert cluster.ledger.refused, cluster.ledger.summary()
            assert set(cluster.ledger.refused.values()) == {"internal-server-error/wait"}, cluster.ledger.summary()
    finally:
        await postgres.remove()

"""The shared stream management records (XEP-0198 §5) on the local Redis, and behind Redis Sentinel
across a failover.

For the failover the test starts a Redis group of its own (see test_sentinel.py) and cuts its primary
off from the sentinels while it keeps running and serving the connections it has, as a network
partition would: the sentinels promote the replica, and the records must be written there and the
end requests heard there, not on the old primary that still takes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from schnack.server.cluster.smstate import SmRecord, SmRecords

from .conftest import Cluster, eventually
from .test_sentinel import FAILOVER, PASSWORD, RedisGroup, redis_group

# The old primary's password once it is cut off: the sentinels no longer get in.
CUT_OFF_PASSWORD = "cut off"


class Ended:
    """The SM-IDs a node was asked to end, for :meth:`SmRecords.listen`."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[str] = asyncio.Queue()

    async def __call__(self, sm_id: str) -> None:
        await self.queue.put(sm_id)

    async def next(self) -> str:
        return await asyncio.wait_for(self.queue.get(), FAILOVER)


@pytest.fixture
def group(tmp_path: Path) -> Iterator[RedisGroup]:
    """A started Redis group of the test's own, to fail its primary over."""
    with redis_group(tmp_path) as made:
        yield made


async def test_a_record_is_read_back_as_written(redis_cluster: Cluster) -> None:
    records = SmRecords(redis_cluster.url, redis_cluster.prefix, "a")
    try:
        assert await records.get("sm-1") is None
        await records.put("sm-1", SmRecord("alice@example.org", "a"), 60)
        assert await records.get("sm-1") == SmRecord("alice@example.org", "a")
        await records.put("sm-1", SmRecord("alice@example.org", "a", 12), 60)
        assert await records.get("sm-1") == SmRecord("alice@example.org", "a", 12)
    finally:
        await records.close()


async def test_taking_over_ends_the_session_on_its_owner(redis_cluster: Cluster) -> None:
    prefix = redis_cluster.prefix
    owner = SmRecords(redis_cluster.url, prefix, "a")
    other = SmRecords(redis_cluster.url, prefix, "b")
    ended = Ended()

    async def end(sm_id: str) -> None:
        await owner.put(sm_id, SmRecord("alice@example.org", "a", 5), 60)
        await ended(sm_id)

    try:
        owner.listen(end)
        async with aioredis.Redis.from_url(redis_cluster.url) as client:
            await eventually(lambda: client.pubsub_numsub(f"{prefix}sm-end:a"), lambda counts: counts[0][1] == 1)
        await owner.put("sm-1", SmRecord("alice@example.org", "a"), 60)
        assert await other.take_over("sm-1", "a") == SmRecord("alice@example.org", "a", 5)
        assert await ended.next() == "sm-1"
        # Nobody listens for a node that is gone: the record is taken as it is.
        await owner.put("sm-2", SmRecord("bob@example.org", "c"), 60)
        assert await other.take_over("sm-2", "c") == SmRecord("bob@example.org", "c")
    finally:
        await owner.close()
        await other.close()


async def cut_off(port: int) -> None:
    """Keep the sentinels out of the server on ``port`` while it serves the connections it has, as
    when the network cuts it off from them: a new password, and their own connections closed."""
    async with aioredis.Redis(port=port, password=PASSWORD, socket_timeout=2) as server:
        await server.config_set("requirepass", CUT_OFF_PASSWORD)
        clients = await server.client_list()
        sentinels = [client["id"] for client in clients if client["name"].startswith("sentinel-")]
        assert sentinels
        for sentinel in sentinels:
            # One may be gone by now, reconnecting (and refused).
            with contextlib.suppress(RedisError):
                await server.client_kill_filter(_id=sentinel)


async def test_records_and_end_requests_follow_the_primary_sentinel_promotes(group: RedisGroup) -> None:
    prefix = f"schnack-test-{secrets.token_hex(6)}:"
    channel = f"{prefix}sm-end:a"
    records = SmRecords(group.url(), prefix, "a")
    ended = Ended()
    records.listen(ended)
    try:
        async with aioredis.Redis(port=group.primary, password=PASSWORD, db=2, socket_timeout=2) as primary:
            await eventually(lambda: primary.pubsub_numsub(channel), lambda counts: counts[0][1] == 1)
            # The client keeps this connection to the primary open, idle, for the next write.
            await records.put("before", SmRecord("alice@example.org", "a"), 60)
            assert await primary.get(f"{prefix}sm:before") is not None

        await cut_off(group.primary)
        await eventually(group.primary_port, lambda port: port == group.replica, timeout=FAILOVER)
        async with (aioredis.Redis(port=group.primary, password=CUT_OFF_PASSWORD, db=2, socket_timeout=2) as old,
                    aioredis.Redis(port=group.replica, password=PASSWORD, db=2, socket_timeout=2) as promoted):
            # Both are primaries now; the other nodes use the promoted one.
            assert (await old.info("replication"))["role"] == "master"
            await eventually(lambda: promoted.pubsub_numsub(channel), lambda counts: counts[0][1] == 1,
                             timeout=FAILOVER)
            await records.put("after", SmRecord("alice@example.org", "a", 7), 60)
            stored = await promoted.get(f"{prefix}sm:after")
            assert stored is not None
            assert json.loads(stored) == {"account": "alice@example.org", "node": "a", "h": 7}
            assert await old.get(f"{prefix}sm:after") is None
            assert await records.get("after") == SmRecord("alice@example.org", "a", 7)

            assert await promoted.publish(channel, "after") == 1
            assert await ended.next() == "after"
    finally:
        await records.close()

"""The Redis cluster bus behind Redis Sentinel, against real sentinels.

The tests start Redis groups of their own on free loopback ports: a primary, a replica and three
sentinels (quorum 2), all with passwords. The bus contract suite runs again on one such group,
reached through a ``redis+sentinel://`` URL that lists a dead sentinel first. Then, on a group per
test, the primary is killed (kill -9, along with a hung sentinel, as when its machine goes down),
hung (SIGSTOP, as a primary cut off from the network) or switched by hand: the sentinels promote
the replica, and the nodes must follow it, write their sessions there again (the replica is made
to miss one, as it would miss a write the primary took just before it died) and keep delivering.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
import redis
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from schnack.server.cluster import ClusterUnavailable, RedisBus, open_bus
from schnack.server.cluster.bus import Entry
from schnack.server.cluster.sentinel import SentinelTarget, parse_sentinel_url
from schnack.server.config import ConfigError, build

from ...conftest import require_service
from . import test_bus_contract as contract
from .conftest import Cluster, eventually, free_port
from .test_bus_contract import Inbox, stanza

SERVICE = "schnack"
# Characters that must be escaped in the URL, to check that they are unescaped.
PASSWORD = "p@ss:word/1"
SENTINEL_PASSWORD = "sentinel secret"
PG = "postgresql://schnack@127.0.0.1/schnack"
# Generous bounds for a loaded machine; the tests end as soon as the condition holds.
FAILOVER = 60.0


class RedisGroup:
    """A primary, a replica and three sentinels of the test's own, without persistence."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.primary = free_port()
        self.replica = free_port()
        self.sentinels = [free_port() for _ in range(3)]
        # Listed first in the URL and never started: clients must go on to the next sentinel.
        self.dead_sentinel = free_port()
        self.processes: dict[int, subprocess.Popen[bytes]] = {}

    def url(self, db: int = 2) -> str:
        """The ``redis+sentinel://`` URL of the group."""
        hosts = ",".join(f"127.0.0.1:{port}" for port in (self.dead_sentinel, *self.sentinels))
        return (f"redis+sentinel://:{quote(PASSWORD, safe='')}@{hosts}/{SERVICE}/{db}"
                f"?sentinel_password={quote(SENTINEL_PASSWORD)}")

    def _spawn(self, port: int, *args: str) -> None:
        binary = shutil.which("redis-server")
        assert binary is not None
        workdir = self.workdir / str(port)
        workdir.mkdir()
        self.processes[port] = subprocess.Popen(
            [binary, *args, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir),
             "--logfile", str(workdir / "log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )

    def start(self) -> None:
        """Start every process and wait until the sentinels know the replica and each other."""
        data = ("--save", "", "--appendonly", "no", "--requirepass", PASSWORD, "--masterauth", PASSWORD)
        self._spawn(self.primary, *data)
        # Writable, so that a test can make it miss a write (see diverge()).
        self._spawn(self.replica, *data, "--replicaof", "127.0.0.1", str(self.primary), "--replica-read-only", "no")
        for port in self.sentinels:
            config = self.workdir / f"sentinel-{port}.conf"
            # Sentinel rewrites its configuration file as it learns, so each has its own.
            config.write_text(
                f'requirepass "{SENTINEL_PASSWORD}"\n'
                f"sentinel monitor {SERVICE} 127.0.0.1 {self.primary} 2\n"
                f'sentinel auth-pass {SERVICE} "{PASSWORD}"\n'
                f"sentinel down-after-milliseconds {SERVICE} 1000\n"
                f"sentinel failover-timeout {SERVICE} 3000\n"
            )
            self._spawn(port, str(config), "--sentinel")
        deadline = time.monotonic() + FAILOVER
        while not self._ready():
            if time.monotonic() > deadline:
                raise AssertionError(f"the Redis group did not come up in {FAILOVER} s; logs in {self.workdir}")
            time.sleep(0.1)

    def _ready(self) -> bool:
        try:
            with redis.Redis(port=self.replica, password=PASSWORD, socket_timeout=1) as replica:
                if replica.info("replication").get("master_link_status") != "up":
                    return False
            for port in self.sentinels:
                with redis.Redis(port=port, password=SENTINEL_PASSWORD, socket_timeout=1) as sentinel:
                    replicas = sentinel.sentinel_slaves(SERVICE)
                    if not any(r["port"] == self.replica and not r["is_sdown"] for r in replicas):
                        return False
                    if len(sentinel.sentinel_sentinels(SERVICE)) < len(self.sentinels) - 1:
                        return False
        except (RedisError, OSError):
            return False
        return True

    def kill(self, port: int) -> None:
        """Kill the server on ``port`` (kill -9)."""
        process = self.processes.pop(port)
        process.kill()
        process.wait(30)

    def hang(self, port: int) -> None:
        """Stop the server or sentinel on ``port`` (SIGSTOP): its connections stay open, and
        nothing answers."""
        self.processes[port].send_signal(signal.SIGSTOP)

    def stop(self) -> None:
        """Kill every process (a stopped one too)."""
        for port in list(self.processes):
            self.kill(port)

    async def switch(self) -> None:
        """Fail over by hand (``SENTINEL FAILOVER``): the old primary lives on as a replica."""
        async with aioredis.Redis(port=self.sentinels[-1], password=SENTINEL_PASSWORD, socket_timeout=2) as sentinel:
            assert await sentinel.sentinel_failover(SERVICE)

    async def primary_port(self) -> int | None:
        """The port of the primary the last sentinel names (the tests hang only the first)."""
        async with aioredis.Redis(port=self.sentinels[-1], password=SENTINEL_PASSWORD, socket_timeout=2) as sentinel:
            address = await sentinel.sentinel_get_master_addr_by_name(SERVICE)
        return int(address[1]) if isinstance(address, tuple) else None

    async def diverge(self, key: str, field: str) -> None:
        """Drop ``field`` of the hash ``key`` on the replica only, as a write it never got."""
        async with aioredis.Redis(port=self.replica, password=PASSWORD, db=2, socket_timeout=2) as replica:
            # Replication is asynchronous: the write may not be there yet.
            await eventually(lambda: replica.hexists(key, field), bool)
            assert await replica.hdel(key, field) == 1


@contextlib.contextmanager
def redis_group(workdir: Path) -> Iterator[RedisGroup]:
    """A started :class:`RedisGroup`, killed at the end."""
    require_service(shutil.which("redis-server") is not None, "redis-server is not installed")
    group = RedisGroup(workdir)
    try:
        group.start()
        yield group
    finally:
        group.stop()


@pytest.fixture(scope="module")
def shared_group(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisGroup]:
    """One group for the contract suite (each test has its own key prefix)."""
    with redis_group(tmp_path_factory.mktemp("sentinel")) as group:
        yield group


@pytest.fixture
def group(tmp_path: Path) -> Iterator[RedisGroup]:
    """A group of the test's own, for a test that fails its primary over."""
    with redis_group(tmp_path) as made:
        yield made


@dataclass
class SentinelCluster(Cluster):
    """Bus nodes on a Redis that Sentinel names."""

    backend: str = "redis"

    async def close(self) -> None:
        # The group is private: its keys go with it.
        for bus in self.buses:
            with contextlib.suppress(Exception):
                await bus.stop()


@pytest.fixture
async def cluster(shared_group: RedisGroup) -> AsyncIterator[Cluster]:
    """For the contract suite below: nodes on the shared group, through Sentinel."""
    made = SentinelCluster(url=shared_group.url())
    try:
        yield made
    finally:
        await made.close()


# The bus contract (test_bus_contract.py), run again through Sentinel.
test_publish_reaches_the_node_it_names = contract.test_publish_reaches_the_node_it_names
test_messages_arrive_in_the_order_published = contract.test_messages_arrive_in_the_order_published
test_publish_to_a_node_that_is_not_there_is_refused = contract.test_publish_to_a_node_that_is_not_there_is_refused
test_directory_register_lookup_unregister = contract.test_directory_register_lookup_unregister
test_a_full_jid_taken_over_by_another_node_stays_with_it = contract.test_a_full_jid_taken_over_by_another_node_stays_with_it
test_nodes_lists_live_nodes_and_their_sessions = contract.test_nodes_lists_live_nodes_and_their_sessions
test_a_node_whose_heartbeats_stop_expires = contract.test_a_node_whose_heartbeats_stop_expires
test_a_node_that_leaves_takes_its_sessions_along = contract.test_a_node_that_leaves_takes_its_sessions_along
test_unknown_versions_and_garbage_are_dropped_and_logged = contract.test_unknown_versions_and_garbage_are_dropped_and_logged
test_a_failing_handler_does_not_stop_the_node = contract.test_a_failing_handler_does_not_stop_the_node
test_info_travels_with_the_entry_and_only_its_node_writes_it = (
    contract.test_info_travels_with_the_entry_and_only_its_node_writes_it)
test_the_node_that_reaps_a_dead_one_gets_its_entries_once = contract.test_the_node_that_reaps_a_dead_one_gets_its_entries_once
test_a_claim_stays_with_its_live_owner_and_passes_on_when_it_dies = (
    contract.test_a_claim_stays_with_its_live_owner_and_passes_on_when_it_dies)
test_a_deliver_that_asks_is_answered_with_done = contract.test_a_deliver_that_asks_is_answered_with_done


@pytest.mark.parametrize("fail", ["kill", "hang", "switch"])
async def test_the_bus_follows_the_primary_sentinel_promotes(group: RedisGroup, fail: str) -> None:
    cluster = SentinelCluster(url=group.url())
    try:
        a = await cluster.node("a", heartbeat_interval=0.2, node_ttl=5.0)
        b = await cluster.node("b", heartbeat_interval=0.2, node_ttl=5.0)
        assert isinstance(a, RedisBus)
        inbox_a = Inbox(a)
        await a.register("alice@example.org/phone", "a")
        await a.set_info("alice@example.org/phone", "available")
        await b.register("bob@example.org/desk", "b")
        before = stanza("alice@example.org/phone", "bob@example.org/desk", "before")
        assert await b.publish("a", before)
        await inbox_a.wait(count=1)
        await group.diverge(f"{cluster.prefix}dir:alice@example.org", "alice@example.org/phone")

        if fail == "kill":
            # The primary's machine goes down, with the sentinel the nodes asked so far on it.
            group.hang(group.sentinels[0])
            group.kill(group.primary)
        elif fail == "hang":
            group.hang(group.primary)
        else:
            await group.switch()
        await eventually(group.primary_port, lambda port: port == group.replica, timeout=FAILOVER)

        async with aioredis.Redis(port=group.replica, password=PASSWORD, db=2, socket_timeout=2) as promoted:
            # a wrote its session to the promoted replica, which had missed it, and both listen there.
            await eventually(lambda: promoted.hget(f"{cluster.prefix}dir:alice@example.org", "alice@example.org/phone"),
                             lambda node: node == b"a", timeout=FAILOVER)
            await eventually(lambda: promoted.pubsub_numsub(f"{cluster.prefix}to:a", f"{cluster.prefix}to:b"),
                             lambda counts: [count for _, count in counts] == [1, 1], timeout=FAILOVER)
        after = stanza("alice@example.org/phone", "bob@example.org/desk", "after")
        assert await b.publish("a", after)
        await inbox_a.wait(count=2)
        assert inbox_a.messages[-1] == after
        assert await b.entries("alice@example.org") == {"alice@example.org/phone": Entry("a", "available")}
        assert await a.lookup("bob@example.org") == {"bob@example.org/desk": "b"}
        await a.register("alice@example.org/tablet", "a")
        assert await b.lookup("alice@example.org") == {"alice@example.org/phone": "a", "alice@example.org/tablet": "a"}
        assert set(await b.nodes()) == {"a", "b"}
    finally:
        await cluster.close()


def test_sentinel_urls_name_their_parts() -> None:
    url = "redis+sentinel://user:p%40ss@10.0.0.1,10.0.0.2:26380,[::1]/mymaster/3?sentinel_password=s%20p"
    assert parse_sentinel_url(url) == SentinelTarget(
        (("10.0.0.1", 26379), ("10.0.0.2", 26380), ("::1", 26379)), "mymaster", 3, "user", "p@ss", "s p")
    assert parse_sentinel_url("redis+sentinel://h/m") == SentinelTarget((("h", 26379),), "m")


def test_a_sentinel_url_makes_a_redis_node(tmp_path: Path) -> None:
    config = build({"storage": {"url": PG}, "cluster": {"redis_url": "redis+sentinel://h1,h2/mymaster"}}, tmp_path)
    assert isinstance(open_bus(config.cluster), RedisBus)


@pytest.mark.parametrize(("url", "error"), [
    ("redis+sentinel://:secret@h1:26379", "name the service the sentinels monitor after the hosts: "
     "redis+sentinel://host:26379/mymaster, got 'redis+sentinel://:***@h1:26379'"),
    ("redis+sentinel:///mymaster", "list the sentinels as host:port separated by commas"),
    ("redis+sentinel://h1,,h2/mymaster", "list the sentinels as host:port separated by commas"),
    ("redis+sentinel://h1:70000/mymaster", "'h1:70000' is not a sentinel host:port"),
    ("redis+sentinel://h1/mymaster/zero", "after the service name only a database number may follow (/mymaster/0)"),
    ("redis+sentinel://h1/mymaster?sentinel=x", "unknown parameter 'sentinel' (known: sentinel_password)"),
])
def test_a_bad_sentinel_url_is_a_clear_config_error(tmp_path: Path, url: str, error: str) -> None:
    with pytest.raises(ConfigError) as info:
        build({"storage": {"url": PG}, "cluster": {"redis_url": url}}, tmp_path)
    assert str(info.value).startswith(f"cluster.redis_url: {error}")
    assert "secret" not in str(info.value)


async def test_no_sentinel_at_start_is_a_clear_error_without_the_password() -> None:
    url = f"redis+sentinel://:{quote(PASSWORD, safe='')}@127.0.0.1:{free_port()},127.0.0.1:{free_port()}/{SERVICE}"
    bus = RedisBus(url, "a", op_timeout=1.0)
    with pytest.raises(ClusterUnavailable, match=r"cannot reach Redis at redis\+sentinel://:\*\*\*@127\.0\.0\.1") as info:
        await bus.start()
    assert str(info.value).endswith(f"/{SERVICE}: No master found for '{SERVICE}': no sentinel answers, or they fail over now")
    assert "p@ss" not in str(info.value) and "p%40ss" not in str(info.value)

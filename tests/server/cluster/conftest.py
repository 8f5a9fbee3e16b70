"""Cluster fixtures: every contract test runs on the in-process bus and on Redis.

Redis tests share the local Redis but each uses its own key prefix, removed afterwards; tests that
restart Redis start a private ``redis-server`` of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

import pytest
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from bench.ports import free_port
from schnack.server.cluster import ClusterBus, LocalBus, RedisBus
from schnack.server.cluster.local import LocalHub
from schnack.server.cluster.sentinel import open_redis

from ...client.proxy import Proxy
from ...conftest import require_service

REDIS_URL = os.environ.get("SCHNACK_TEST_REDIS", "redis://127.0.0.1:6379/0")

T = TypeVar("T")


async def eventually(probe: Callable[[], Awaitable[T]], done: Callable[[T], bool], timeout: float = 20.0) -> T:
    """Poll ``probe`` until ``done`` accepts its value; fail after a generous ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await probe()
        if done(value):
            return value
        if loop.time() > deadline:
            raise AssertionError(f"condition not reached in {timeout} s; last value {value!r}")
        await asyncio.sleep(0.05)


async def redis_available(url: str) -> str | None:
    """None when Redis answers at ``url``, else the reason it does not."""
    client = aioredis.Redis.from_url(url, socket_connect_timeout=2)
    try:
        await client.ping()
    except (RedisError, OSError) as err:
        return str(err)
    finally:
        await client.aclose()
    return None


@dataclass
class Cluster:
    """Makes bus nodes of one backend that see each other; stops them all at the end."""

    backend: str
    url: str = REDIS_URL
    prefix: str = field(default_factory=lambda: f"schnack-test-{secrets.token_hex(6)}:")
    hub: LocalHub = field(default_factory=LocalHub)
    buses: list[ClusterBus] = field(default_factory=list)

    async def node(self, name: str, *, heartbeat_interval: float = 0.1, node_ttl: float = 0.6,
                   url: str | None = None) -> ClusterBus:
        """A started node called ``name``; on Redis through ``url`` if given (a proxy in front of it)."""
        bus: ClusterBus
        if self.backend == "local":
            bus = LocalBus(name, hub=self.hub, heartbeat_interval=heartbeat_interval, node_ttl=node_ttl)
        else:
            bus = RedisBus(url or self.url, name, prefix=self.prefix, heartbeat_interval=heartbeat_interval,
                           node_ttl=node_ttl, op_timeout=1.0)
        await bus.start()
        self.buses.append(bus)
        return bus

    async def inject(self, bus: ClusterBus, data: bytes) -> None:
        """Put raw wire bytes on ``bus``'s channel, as another node (of another version) would."""
        if isinstance(bus, LocalBus):
            bus.deliver_raw(data)
            return
        client = open_redis(self.url, 2.0)
        try:
            await client.publish(f"{self.prefix}to:{bus.node}", data)
        finally:
            await client.aclose()

    async def close(self) -> None:
        """Stop every node and remove this cluster's keys."""
        for bus in self.buses:
            with contextlib.suppress(Exception):
                await bus.stop()
        if self.backend == "redis":
            client = aioredis.Redis.from_url(self.url, socket_connect_timeout=2)
            with contextlib.suppress(RedisError, OSError):
                keys = [key async for key in client.scan_iter(match=f"{self.prefix}*")]
                if keys:
                    await client.delete(*keys)
            await client.aclose()


@pytest.fixture(params=["local", "redis"])
async def cluster(request: pytest.FixtureRequest) -> AsyncIterator[Cluster]:
    """Nodes on one backend, once per backend."""
    if request.param == "redis":
        reason = await redis_available(REDIS_URL)
        require_service(reason is None, f"Redis not reachable at {REDIS_URL}: {reason}")
    made = Cluster(request.param)
    try:
        yield made
    finally:
        await made.close()


@pytest.fixture
async def redis_cluster() -> AsyncIterator[Cluster]:
    """Nodes on the local Redis, for what only a shared directory can show."""
    reason = await redis_available(REDIS_URL)
    require_service(reason is None, f"Redis not reachable at {REDIS_URL}: {reason}")
    made = Cluster("redis")
    try:
        yield made
    finally:
        await made.close()


@pytest.fixture
async def redis_proxy() -> AsyncIterator[Proxy]:
    """A TCP proxy in front of the local Redis, whose links a test cuts (a node cut off from it)."""
    parts = urlsplit(REDIS_URL)
    assert parts.hostname is not None and parts.port is not None
    proxy = await Proxy(parts.hostname, parts.port).start()
    try:
        yield proxy
    finally:
        await proxy.stop()


def through(proxy: Proxy) -> str:
    """The URL of the local Redis through ``proxy``."""
    return urlsplit(REDIS_URL)._replace(netloc=f"127.0.0.1:{proxy.port}").geturl()


class PrivateRedis:
    """A ``redis-server`` of the test's own, without persistence, that can be stopped and restarted."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        """Its URL."""
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        """Start it on its port and wait until it answers."""
        binary = shutil.which("redis-server")
        assert binary is not None
        self.process = await asyncio.create_subprocess_exec(
            binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", str(self.workdir), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )
        await eventually(lambda: redis_available(self.url), lambda reason: reason is None)

    async def stop(self) -> None:
        """Kill it, as a crash would."""
        if self.process is not None:
            self.process.kill()
            await asyncio.wait_for(self.process.wait(), 30)
            self.process = None


@pytest.fixture
async def private_redis(tmp_path: Path) -> AsyncIterator[PrivateRedis]:
    """A private Redis (not yet started), stopped at the end."""
    require_service(shutil.which("redis-server") is not None, "redis-server is not installed")
    server = PrivateRedis(tmp_path)
    try:
        yield server
    finally:
        await server.stop()

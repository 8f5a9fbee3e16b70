"""After a bus outage, what offline storage took meanwhile reaches the sessions online (cluster/recovery.py).
Two servers in one process on Redis, sharing PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from xml.etree.ElementTree import Element

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from schnack.server.app import Server
from schnack.server.cluster import RedisBus

from ...harness import Client
from ..modules.messaging import body, chat
from .conftest import eventually
from .test_node_presence import nodes, online


async def offline_count(server: Server, user: str) -> int:
    return await server.storage.archive.count("localhost", user, "offline")


@contextmanager
def cut_off(server: Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The directory reads and publishes of ``server`` fail while the block runs, as when only this
    node cannot reach Redis for a moment (a command timing out under load); its heartbeats pass."""
    bus = server.cluster.bus
    assert isinstance(bus, RedisBus)

    async def unreachable(script: str, keys: list[str], args: list[Any]) -> Any:
        raise RedisConnectionError("Redis is out of reach from this node")

    with monkeypatch.context() as patch:
        patch.setattr(bus, "_queue", unreachable)
        yield


async def test_what_a_node_stored_while_redis_was_out_of_its_reach_reaches_another_nodes_session(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only alice's node lost Redis: her message for bob, online on the other node, went to offline
    storage. Once her node is back it tells the others, and bob gets the message without logging
    in again, once."""
    async with nodes(tmp_path, "redis") as (a, b):
        alice = await online(a, "alice@localhost/phone")
        bob = await online(b, "bob@localhost/desk")
        with cut_off(a, monkeypatch):
            await alice.send(chat("bob@localhost/desk", "while Redis was away"))
            await eventually(lambda: offline_count(a, "bob"), lambda n: n == 1)
        got = [body(el) for el in await received(bob, "while Redis was away")]
        await eventually(lambda: offline_count(b, "bob"), lambda n: n == 0)
        await alice.send(chat("bob@localhost/desk", "after", id="m2"))
        got += [body(el) for el in await received(bob, "after")]
        assert [text for text in got if text is not None] == ["while Redis was away", "after"]


async def received(client: Client, text: str, timeout: float = 20.0) -> list[Element]:
    """What ``client`` gets up to the message with body ``text``."""
    shown: list[Element] = []
    async with asyncio.timeout(timeout):
        while not any(body(el) == text for el in shown):
            shown += await client.expect(timeout=timeout)
    return shown

"""XEP-0012 Last Activity across nodes: an account's last session is its last on any node, and
the node that reaps a dead one records the end of the sessions that were there."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from schnack.server.modules.last import STORE

from ..modules.contacts import presence
from ..modules.test_last import WAIT, away_until_resumed, last, seconds, status
from ..modules.test_sm import enabled
from .conftest import eventually
from .test_node_presence import backend, friends, nodes, online

__all__ = ["backend"]  # the fixture that runs each test on both bus backends


async def test_the_last_session_is_the_last_on_any_node(tmp_path: Path, backend: str) -> None:
    async with nodes(tmp_path, backend) as (a, b):
        phone = await online(a, "alice@localhost/phone")
        desk = await online(b, "alice@localhost/desk")
        bob = await online(b, "bob@localhost/laptop")
        await friends(phone, bob)
        await phone.close()
        # The desk on the other node is still there: nothing is recorded, and it is active now.
        assert await a.storage.kv.get("localhost", "alice", STORE) is None
        assert seconds(await last(bob, "alice@localhost")) == 0
        await desk.send(presence("unavailable", inner="<status>off to bed</status>"))
        await desk.close()
        await asyncio.sleep(WAIT)
        reply = await last(bob, "alice@localhost")
        assert seconds(reply) >= 1 and status(reply) == "off to bed"


async def test_the_node_that_reaps_a_dead_one_records_the_end(tmp_path: Path, backend: str) -> None:
    async with nodes(tmp_path, backend, node_ttl=2.0) as (a, b):
        await online(b, "alice@localhost/phone")
        await b.cluster.bus.stop(leave=False)  # b stops heartbeating, as a crashed node would
        await eventually(lambda: a.storage.kv.get("localhost", "alice", STORE), lambda raw: raw is not None)
        alice = await online(a, "alice@localhost/laptop")
        await alice.send(presence("unavailable"))
        assert seconds(await last(alice, "alice@localhost")) >= 0


async def test_a_session_hibernating_on_another_node_counts_from_when_its_connection_went(
        tmp_path: Path, backend: str) -> None:
    async with nodes(tmp_path, backend) as (a, b):
        phone = await online(b, "alice@localhost/phone")
        bob = await online(a, "bob@localhost/laptop")
        await friends(phone, bob)
        await away_until_resumed(b, phone, bob)


async def test_the_node_that_reaps_a_dead_one_records_a_hibernating_session_as_gone_when_its_connection_went(
        tmp_path: Path, backend: str) -> None:
    async with nodes(tmp_path, backend, node_ttl=2.0) as (a, b):
        phone = await online(b, "alice@localhost/phone")
        assert (await enabled(phone)).id is not None
        went = time.time()
        await phone.close()
        hibernating = time.time()
        await b.cluster.bus.stop(leave=False)  # b stops heartbeating, as a crashed node would
        raw = await eventually(lambda: a.storage.kv.get("localhost", "alice", STORE), lambda raw: raw is not None)
        assert raw is not None
        assert went <= json.loads(raw)["ended"] <= hibernating

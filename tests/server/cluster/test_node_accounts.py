"""Deleting an account in a cluster: the nodes that serve its other sessions end them
(XEP-0077 §3.2), on the in-process hub and on Redis."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from schnack.server.app import Server
from schnack.server.cluster import RedisBus
from schnack.server.cluster.bus import ACCOUNTS
from schnack.server.cluster.messages import Changed, decode
from schnack.server.deletion import DeletionUnderWay
from schnack.xmpp import ns
from schnack.xmpp.sasl import derive_credentials

from ...client.proxy import Proxy
from ...harness import Client, add_user
from ..modules.test_register import can_login
from ..test_deletion import Killed, killed
from .conftest import eventually
from .test_node_presence import backend, nodes, online
from .test_node_upload import cut_off as declared_dead
from .test_node_upload import one_cut_off
from .test_recovery import cut_off

__all__ = ["backend"]  # the fixture that runs each test on both bus backends


def ended_with(client: Client) -> str | None:
    """The condition of the stream error the client got, if any."""
    for el in client.take():
        if el.tag == f"{{{ns.STREAMS}}}error":
            return next(c.tag.rpartition("}")[2] for c in el if c.tag != f"{{{ns.STREAM_ERRORS}}}text")
    return None


async def test_an_account_deleted_through_one_node_loses_its_sessions_on_the_others(
    tmp_path: Path, backend: str
) -> None:
    async with nodes(tmp_path, backend) as (a, b):
        await online(a, "alice@localhost/phone")
        laptop = await online(b, "alice@localhost/laptop")
        assert await a.delete_account("localhost", "alice")
        a.end_account_sessions("localhost", "alice")
        await eventually(lambda: _ended(laptop), lambda condition: condition == "not-authorized", timeout=5.0)
        assert laptop.conn.closed


async def test_an_account_made_anew_meanwhile_keeps_its_sessions(tmp_path: Path, backend: str) -> None:
    """The announcement of a deletion that another node hears late does not end the sessions
    of a new account of that name."""
    async with nodes(tmp_path, backend) as (a, b):
        desk = await online(b, "bob@localhost/desk")
        laptop = await online(b, "alice@localhost/laptop")
        # Node b hears these in this order: news of a deletion of bob's account before the
        # account he is logged in with was made, then alice's deletion.
        await a.cluster.bus.announce(ACCOUNTS, "bob@localhost")
        assert await a.delete_account("localhost", "alice")
        await eventually(lambda: _ended(laptop), lambda condition: condition == "not-authorized", timeout=5.0)
        assert ended_with(desk) is None and not desk.conn.closed


async def _ended(client: Client) -> str | None:
    return ended_with(client)


def break_on_deletion(server: Server, monkeypatch: pytest.MonkeyPatch) -> asyncio.Event:
    """Break the Redis subscription of ``server`` as the first news of a deleted account comes,
    which it then misses; the event is set when it did."""
    bus = server.cluster.bus
    assert isinstance(bus, RedisBus)
    handle = bus._handle
    missed = asyncio.Event()

    async def broken(data: bytes) -> None:
        message = decode(data)
        if isinstance(message, Changed) and message.store == ACCOUNTS and not missed.is_set():
            missed.set()
            raise RedisConnectionError("the subscription broke as this came")
        await handle(data)

    monkeypatch.setattr(bus, "_handle", broken)
    return missed


async def test_a_deletion_its_node_could_not_announce_ends_the_sessions_elsewhere_once_it_can(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Node a alone could not reach Redis as it deleted alice's account, so its announcement went
    nowhere; once a reaches Redis again it announces the deletion anew, and b ends her session."""
    async with nodes(tmp_path, "redis") as (a, b):
        laptop = await online(b, "alice@localhost/laptop")
        with cut_off(a, monkeypatch):
            assert await a.delete_account("localhost", "alice")
        await eventually(lambda: _ended(laptop), lambda condition: condition == "not-authorized", timeout=10.0)
        assert laptop.conn.closed


async def test_a_deletion_a_node_missed_while_its_subscription_was_broken_ends_its_sessions(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Node b's subscription broke as the news of alice's deletion came: once it subscribes again,
    it checks the accounts it serves sessions of, and ends hers."""
    async with nodes(tmp_path, "redis") as (a, b):
        laptop = await online(b, "alice@localhost/laptop")
        desk = await online(b, "bob@localhost/desk")
        missed = break_on_deletion(b, monkeypatch)
        assert await a.delete_account("localhost", "alice")
        await asyncio.wait_for(missed.wait(), 10.0)
        await eventually(lambda: _ended(laptop), lambda condition: condition == "not-authorized", timeout=10.0)
        assert ended_with(desk) is None and not desk.conn.closed


async def test_a_deletion_another_node_is_at_is_left_to_it(tmp_path: Path, backend: str) -> None:
    """The claim of a live node keeps the others from finishing its deletion, or logging in to
    the account meanwhile; the node itself retries it (server/deletion.py)."""
    async with nodes(tmp_path, backend) as (a, b):
        await add_user(a, "alice")
        a.hooks.add("user-deleting", killed, priority=100)
        with pytest.raises(Killed):
            await a.delete_account("localhost", "alice")
        a.hooks.remove("user-deleting", killed)
        with pytest.raises(DeletionUnderWay):
            await b.delete_account("localhost", "alice")
        assert not await can_login(b, "alice", "secret")
        assert await b.storage.accounts.get("localhost", "alice") is not None
        assert await a.delete_account("localhost", "alice")
        assert await b.storage.accounts.get("localhost", "alice") is None
        assert not await b.delete_account("localhost", "alice")


async def test_a_node_cut_off_from_the_cluster_leaves_a_deletion_to_the_one_that_took_it_over(
        tmp_path: Path, redis_proxy: Proxy) -> None:
    """Node a is deleting alice's account when Redis goes out of its reach; node b declares it
    dead, finishes the deletion, and a new alice registers. Node a, going on, deletes nothing of
    hers: the deletion is no longer its own."""
    async with one_cut_off(tmp_path, redis_proxy, {}) as (a, b):
        await add_user(a, "alice")
        entered, go = asyncio.Event(), asyncio.Event()

        async def held(_host: str, _username: str) -> None:
            entered.set()
            await go.wait()

        a.hooks.add("user-deleting", held, priority=100)
        deleting = asyncio.create_task(a.delete_account("localhost", "alice"))
        await entered.wait()
        await declared_dead(redis_proxy, a, b)
        assert await b.delete_account("localhost", "alice")
        await b.create_account("localhost", "alice", derive_credentials("new owner"))
        go.set()
        with pytest.raises(DeletionUnderWay):
            await deleting
        assert await can_login(b, "alice", "new owner")

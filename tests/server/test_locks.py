"""Per-account locks (locks.py): one lock per account, a wait until none is busy, and locks held
against a cluster's other nodes."""

from __future__ import annotations

import asyncio

from schnack.server.cluster.local import LocalBus, LocalHub
from schnack.server.locks import AccountLocks
from schnack.xmpp.jid import JID

ROOM = JID.parse("family@groups.localhost")
OTHER = JID.parse("work@groups.localhost")
ALICE = JID.parse("alice@localhost")
BOB = JID.parse("bob@localhost")


async def test_quiet_waits_for_holders_and_for_those_queued_behind_them() -> None:
    locks = AccountLocks()
    order: list[str] = []
    release = asyncio.Event()

    async def hold(owner: JID, name: str) -> None:
        async with locks.hold(owner):
            await release.wait()
            order.append(name)

    tasks = [asyncio.create_task(hold(ROOM, "first")), asyncio.create_task(hold(ROOM, "second")),
             asyncio.create_task(hold(OTHER, "other"))]
    await asyncio.sleep(0)
    quiet = asyncio.create_task(locks.quiet())
    await asyncio.sleep(0.05)
    assert not quiet.done()

    release.set()
    await quiet
    assert sorted(order) == ["first", "other", "second"]
    assert all(task.done() for task in tasks)


async def test_quiet_returns_at_once_when_no_lock_is_busy() -> None:
    locks = AccountLocks()
    async with locks.hold(ROOM):
        pass
    await asyncio.wait_for(locks.quiet(), 1)


async def test_account_locks_given_a_cluster_bus_keep_other_nodes_out() -> None:
    """Two nodes' locks for one kind of data and one account keep each other out; other
    accounts and other kinds are not held up; a node alone asks nothing of the bus."""
    hub = LocalHub()
    alone = LocalBus("a", hub=hub)
    await alone.start()
    a = AccountLocks(alone, "roster")
    try:
        async with a.hold(ALICE):
            assert not hub.locks._locks
        other = LocalBus("b", hub=hub)
        await other.start()
        try:
            b, b_pep = AccountLocks(other, "roster"), AccountLocks(other, "pep")
            order: list[str] = []
            async with a.hold(ALICE):
                waiting = asyncio.create_task(_enter(b, ALICE, order, "b alice"))
                await _enter(b, BOB, order, "b bob")
                await _enter(b_pep, ALICE, order, "b pep alice")
                await asyncio.sleep(0.05)  # time for b to get in wrongly, not a measure
                order.append("a alice")
            await asyncio.wait_for(waiting, 5)
            assert order == ["b bob", "b pep alice", "a alice", "b alice"]
        finally:
            await other.stop()
    finally:
        await alone.stop()


async def _enter(locks: AccountLocks, owner: JID, order: list[str], name: str) -> None:
    async with locks.hold(owner):
        order.append(name)

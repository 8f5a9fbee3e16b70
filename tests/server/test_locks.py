"""Per-account locks (locks.py): one lock per account, and a wait until none is busy."""

from __future__ import annotations

import asyncio

from schnack.server.locks import AccountLocks
from schnack.xmpp.jid import JID

ROOM = JID.parse("family@groups.localhost")
OTHER = JID.parse("work@groups.localhost")


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

"""The collector's schedule: the oldest generation on the clock or after connections ended, start-up frozen,
all given back."""

from __future__ import annotations

import asyncio
import gc
import weakref

from schnack.server.collector import MIDDLE, Collector


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def old_cycle() -> tuple[weakref.ref[Node], list[Node]]:
    """A cycle that outlived the young generations, and the list that keeps it alive."""
    a, b = Node(), Node()
    a.other, b.other = b, a
    keep = [a, b]
    gc.collect(1)  # survivors of the middle generation go to the oldest
    return weakref.ref(a), keep


def churn() -> None:
    """Enough containers alive at once for many automatic young and middle collections (a
    container freed before the next collection does not count towards it)."""
    held = [[n] for n in range(300_000)]
    assert len(held) == 300_000


def oldest_collections() -> int:
    return int(gc.get_stats()[2]["collections"])


async def test_old_cycles_wait_for_the_clock_and_are_then_freed() -> None:
    before = gc.get_threshold()
    collector = Collector(lambda: 0, lambda: 0, full_every=0.5, check_every=0.05)
    collector.start()
    try:
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold()[0] == before[0]
        freed, keep = old_cycle()
        keep.clear()
        oldest = oldest_collections()
        young, middle = (gc.get_stats()[g]["collections"] for g in (0, 1))
        churn()
        # Many young and some middle collections, none of the oldest generation, where the cycle is.
        young = gc.get_stats()[0]["collections"] - young
        middle = gc.get_stats()[1]["collections"] - middle
        assert young > 2 * MIDDLE
        assert 1 <= middle <= young // MIDDLE + 1
        assert oldest_collections() == oldest
        assert freed() is not None
        assert collector.full_collections == 0
        for _ in range(100):
            if freed() is None:
                break
            await asyncio.sleep(0.05)
        assert freed() is None
        assert collector.full_collections >= 1
    finally:
        await collector.stop()
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


async def test_young_cycles_are_freed_as_before() -> None:
    collector = Collector(lambda: 0, lambda: 0, full_every=3600)
    collector.start()
    try:
        a, b = Node(), Node()
        a.other, b.other = b, a
        freed = weakref.ref(a)
        del a, b
        churn()
        assert freed() is None
    finally:
        await collector.stop()


async def test_ended_connections_bring_the_full_collection_forward() -> None:
    ended, open_now = [0], [8000]
    collector = Collector(lambda: ended[0], lambda: open_now[0], full_every=3600, check_every=0.05)
    collector.start()
    try:
        freed, keep = old_cycle()
        keep.clear()
        # 1,500 ended: fewer than a quarter of the 8,000 open, so the clock still rules.
        ended[0] = 1500
        await asyncio.sleep(0.3)
        assert collector.full_collections == 0
        assert freed() is not None
        ended[0] = 2000
        for _ in range(100):
            if freed() is None:
                break
            await asyncio.sleep(0.05)
        assert freed() is None
        assert collector.full_collections == 1
        # The count starts again from the collection.
        open_now[0], ended[0] = 100, 2999
        await asyncio.sleep(0.3)
        assert collector.full_collections == 1
        ended[0] = 3000
        for _ in range(100):
            if collector.full_collections == 2:
                break
            await asyncio.sleep(0.05)
        assert collector.full_collections == 2
    finally:
        await collector.stop()

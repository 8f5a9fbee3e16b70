"""The collector's schedule: the oldest generation only on the clock, start-up frozen, all given back."""

from __future__ import annotations

import asyncio
import gc
import weakref

from schnack.server.collector import Collector


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
    collector = Collector(full_every=0.5)
    collector.start()
    try:
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold()[:2] == before[:2]
        freed, keep = old_cycle()
        keep.clear()
        oldest = oldest_collections()
        young = gc.get_stats()[0]["collections"]
        churn()
        # Many young and middle collections, none of the oldest generation, where the cycle is.
        assert gc.get_stats()[0]["collections"] > young + 100
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
    collector = Collector(full_every=3600)
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

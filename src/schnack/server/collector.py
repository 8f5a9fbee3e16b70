"""The cyclic garbage collector, set for a process that holds many long-lived sessions.

CPython (3.11) collects its oldest generation whenever the objects that reached it since the last
such collection pass a quarter of those already there, and that collection looks at every object
the process tracks: with 10,000 sessions about a million, 0.7 s in which no connection is served,
and while those sessions log in, or under a steady stream of messages, one every few seconds
(docs/benchmarks.md, "Garbage collection"). Reference counting frees almost everything a server
makes; the collector is needed for cycles, and the young generations find the short-lived ones.

So ``schnack serve`` keeps what start-up made (modules, configuration, tables: never garbage) out
of every collection (``gc.freeze``), leaves the oldest generation out of the automatic
collections, and collects it itself every :data:`FULL_EVERY` seconds: that pause comes once in
that time instead of every few seconds, and cycles that outlived the young generations (those of
a closed connection) wait at most that long to be freed.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc

FULL_EVERY = 300.0
# How many collections of the middle generation an automatic collection of the oldest waits for:
# as many as a C int holds, which is never.
_NEVER = 2**31 - 1


class Collector:
    """Runs the full collections of one process; :meth:`start` once the server has started."""

    def __init__(self, full_every: float = FULL_EVERY) -> None:
        self.full_every = full_every
        self.full_collections = 0
        self._thresholds = gc.get_threshold()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        # Garbage of start-up goes first, so that none of it is frozen for good.
        gc.collect()
        gc.freeze()
        young, middle, _oldest = self._thresholds
        gc.set_threshold(young, middle, _NEVER)
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.full_every)
            gc.collect()
            self.full_collections += 1

    async def stop(self) -> None:
        """Give the collector back its own schedule."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        gc.set_threshold(*self._thresholds)
        gc.unfreeze()

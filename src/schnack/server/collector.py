"""The cyclic garbage collector, set for a process that holds many long-lived sessions.

CPython (3.11) collects its oldest generation whenever the objects that reached it since the last
such collection pass a quarter of those already there, and that collection looks at every object
the process tracks: with 10,000 sessions about a million, 0.7 s in which no connection is served,
and while those sessions log in, or under a steady stream of messages, one every few seconds
(docs/benchmarks.md, "Garbage collection"). Growth and messages in flight set that ratio off, yet
neither leaves garbage that only a full collection frees. What does is a closed connection: about
60 objects in reference cycles (the transport and its protocols, TLS, the parser, the session),
which hold all of its memory until a full collection.

So ``schnack serve`` keeps what start-up made (modules, configuration, tables: never garbage) out
of every collection (``gc.freeze``), leaves the oldest generation out of the automatic
collections, and collects it itself: once the connections ended since the last collection reach a
quarter of those open (at least :data:`MIN_ENDED`), which bounds the garbage waiting as CPython's
ratio did, and at the latest every :data:`FULL_EVERY` seconds. The young generations run as before
and free the cycles that die young, but the middle one ten times less often (:data:`MIDDLE`):
what it looks at under a stream of messages is mostly the messages in flight, the same few
thousand objects whenever it runs, so running it after every tenth young collection cost about
4 µs more per message (docs/benchmarks.md, "Garbage collection: the middle generation less
often"). The price is longer pauses while many clients log in at once: up to 80 ms instead of 10.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import Callable

FULL_EVERY = 300.0
MIN_ENDED = 1000
# Collections of the young generation between two of the middle one (CPython's default: 10).
MIDDLE = 100
CHECK_EVERY = 1.0
# How many collections of the middle generation an automatic collection of the oldest waits for:
# as many as a C int holds, which is never.
_NEVER = 2**31 - 1


class Collector:
    """Runs the full collections of one process; :meth:`start` once the server has started.
    ``ended`` counts the connections that have ended so far, ``open`` those open now."""

    def __init__(self, ended: Callable[[], int], open: Callable[[], int], *, full_every: float = FULL_EVERY,
                 check_every: float = CHECK_EVERY) -> None:  # fmt: skip
        self.full_every = full_every
        self.check_every = check_every
        self.full_collections = 0
        self._ended = ended
        self._open = open
        self._thresholds = gc.get_threshold()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        # Garbage of start-up goes first, so that none of it is frozen for good.
        gc.collect()
        gc.freeze()
        young, _middle, _oldest = self._thresholds
        gc.set_threshold(young, MIDDLE, _NEVER)
        self._task = asyncio.create_task(self._run(time.monotonic(), self._ended()))

    async def _run(self, last: float, ended_before: int) -> None:
        while True:
            await asyncio.sleep(self.check_every)
            ended = self._ended() - ended_before
            if ended >= max(MIN_ENDED, self._open() // 4) or time.monotonic() - last >= self.full_every:
                gc.collect()
                self.full_collections += 1
                last, ended_before = time.monotonic(), self._ended()

    async def stop(self) -> None:
        """Give the collector back its own schedule."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        gc.set_threshold(*self._thresholds)
        gc.unfreeze()

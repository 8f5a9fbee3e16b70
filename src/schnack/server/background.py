"""Work a part of the server starts and does not wait for at once: a notification to send, a
delivery after news from another cluster node, a frame to write."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any, TypeVar

T = TypeVar("T")


class Background:
    """Tasks running in the background, each kept until it ends: the event loop keeps only weak
    references to tasks, so one nobody holds may be collected before it ends. A task that fails
    is logged to ``log`` with ``failure`` (nobody awaits it to see the exception)."""

    def __init__(self, log: logging.Logger, failure: str) -> None:
        self._log = log
        self._failure = failure
        self._tasks: set[asyncio.Future[Any]] = set()

    def spawn(self, work: Awaitable[T]) -> asyncio.Future[T]:
        """Run ``work`` (a coroutine: in a task of its own)."""
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._ended)
        return task

    def _ended(self, task: asyncio.Future[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            self._log.error(self._failure, exc_info=error)

    def __len__(self) -> int:
        """The number of tasks still running."""
        return len(self._tasks)

    def cancel(self) -> None:
        """Cancel every task; each ends at its next await (:meth:`wait` waits for that)."""
        for task in list(self._tasks):
            task.cancel()

    async def wait(self) -> None:
        """Return once every task has ended, those started while it waits too."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def stop(self) -> None:
        """Cancel every task and return once all have ended, cancelling those started meanwhile too."""
        while self._tasks:
            self.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

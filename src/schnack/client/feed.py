"""Fan-out of client events to every open iterator (``messages()``, ``presence()``, ...).

Each iterator has its own queue, so two consumers both see every item. Items that arrive while
nobody listens (offline messages delivered right after login, before the program's ``async for``
has started) are kept, up to a bound, for the first iterator opened next. An iterator that is
dropped unsubscribes by itself: the feed holds it weakly.
"""

from __future__ import annotations

import asyncio
import weakref
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")

_END = object()


class Subscription(Generic[T]):
    """An async iterator over a feed's items, from the moment it was made."""

    def __init__(self, backlog: list[T], ended: bool) -> None:
        self._queue: asyncio.Queue[object] = asyncio.Queue()
        for item in backlog:
            self._queue.put_nowait(item)
        if ended:
            self._queue.put_nowait(_END)

    def _put(self, item: object) -> None:
        self._queue.put_nowait(item)

    def __aiter__(self) -> Subscription[T]:
        return self

    async def __anext__(self) -> T:
        item = await self._queue.get()
        if item is _END:
            self._queue.put_nowait(_END)
            raise StopAsyncIteration
        return item  # type: ignore[return-value]


class Feed(Generic[T]):
    """Publishes items to every live :class:`Subscription`."""

    def __init__(self, backlog: int = 10_000) -> None:
        self._subscriptions: weakref.WeakSet[Subscription[T]] = weakref.WeakSet()
        self._backlog: deque[T] = deque(maxlen=backlog)
        self._ended = False

    def publish(self, item: T) -> None:
        if self._ended:
            return
        subscriptions = list(self._subscriptions)
        if not subscriptions:
            self._backlog.append(item)
        for subscription in subscriptions:
            subscription._put(item)

    def subscribe(self) -> Subscription[T]:
        backlog = list(self._backlog)
        self._backlog.clear()
        subscription: Subscription[T] = Subscription(backlog, self._ended)
        self._subscriptions.add(subscription)
        return subscription

    def end(self) -> None:
        """No more items: every iterator stops once it has taken what it holds."""
        if self._ended:
            return
        self._ended = True
        for subscription in list(self._subscriptions):
            subscription._put(_END)

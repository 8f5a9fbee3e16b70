"""Named events that modules subscribe to, run in priority order (the router's building block)."""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from typing import Any


class Handled(enum.Enum):
    """Returned by a handler that dealt with the event and wants no further handlers run."""

    HANDLED = "handled"


HANDLED = Handled.HANDLED


class Unanswered(Exception):
    """Raised by a handler for a stanza it neither handled nor could answer, because the sending
    session closed while it waited. The stream then does not count the stanza as handled (XEP-0198
    §4, 'h'), so that a client resuming or starting afresh sends it again instead of taking it as
    delivered. Only for a closed session: its stream reads nothing after it."""


Handler = Callable[..., Awaitable[Any]]


class Hooks:
    """A registry of async handlers per event name, called highest priority first.

    A handler returns None to let the next one run; anything else (a reply element, HANDLED)
    stops the chain and is returned by :meth:`fire`.
    """

    def __init__(self) -> None:
        self._handlers: dict[str, list[tuple[int, int, Handler]]] = {}
        self._order = 0

    # add() and remove() build a new list instead of changing the one in place: a chain being fired
    # keeps running over the handlers it started with, so none is skipped or run twice.

    def add(self, event: str, handler: Handler, priority: int = 0) -> None:
        """Subscribe ``handler`` to ``event``; equal priorities run in registration order."""
        self._order += 1
        chain = [*self._handlers.get(event, ()), (-priority, self._order, handler)]
        chain.sort(key=lambda entry: (entry[0], entry[1]))
        self._handlers[event] = chain

    def remove(self, event: str, handler: Handler) -> None:
        """Unsubscribe ``handler`` from ``event``."""
        if event in self._handlers:
            self._handlers[event] = [entry for entry in self._handlers[event] if entry[2] is not handler]

    def has(self, event: str) -> bool:
        """Whether any handler listens to ``event``."""
        return bool(self._handlers.get(event))

    async def fire(self, event: str, *args: Any) -> Any:
        """Run the handlers of ``event`` until one returns something other than None."""
        chain = self._handlers.get(event)
        if not chain:
            return None
        for _, _, handler in chain:
            result = await handler(*args)
            if result is not None:
                return result
        return None

    async def fire_all(self, event: str, *args: Any) -> list[Any]:
        """Run every handler of ``event``; collect what they return (e.g. stream features)."""
        return [await handler(*args) for _, _, handler in self._handlers.get(event, ())]

"""Writes gathered per turn of the event loop, for the server's TCP connections (client and s2s).

A connection that is written several stanzas in one turn (a recipient of ten messages parsed from
one read of a pipelining sender, a remote server receiving a room's message for many occupants)
hands them to its transport together at the end of the turn: one TLS record and one system call
instead of one each (docs/benchmarks.md, "Writes gathered per turn, and what a message costs now").
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class Gathered:
    """What was written in this turn, handed over in one piece by :meth:`flush`, which runs at
    the end of the turn or when the connection needs it sooner (before TLS starts or it closes)."""

    __slots__ = ("_hand_over", "_unsent")

    def __init__(self, hand_over: Callable[[str], None]) -> None:
        self._hand_over = hand_over
        self._unsent: list[str] | None = None

    def add(self, data: str) -> None:
        if self._unsent is None:
            self._unsent = [data]
            asyncio.get_running_loop().call_soon(self.flush)
        else:
            self._unsent.append(data)

    def flush(self) -> None:
        unsent, self._unsent = self._unsent, None
        if unsent is not None:
            self._hand_over("".join(unsent))

    def drop(self) -> None:
        """Forget what was not handed over yet (the connection is cut)."""
        self._unsent = None

    def drop_last(self) -> None:
        """Forget the last piece written, if it was not handed over yet (an answer that is
        not to go, such as a ``<proceed/>`` refused after it was written)."""
        if self._unsent:
            self._unsent.pop()

"""Per-account locks for modules whose read-modify-write steps on one account must not overlap."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from ..xmpp.jid import JID


class AccountLocks:
    """One lock per account, kept only while anyone holds or awaits it."""

    def __init__(self) -> None:
        self._locks: dict[JID, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, owner: JID) -> AsyncIterator[None]:
        lock, users = self._locks.get(owner, (asyncio.Lock(), 0))
        self._locks[owner] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[owner]
            if users == 1:
                del self._locks[owner]
            else:
                self._locks[owner] = (lock, users - 1)

    async def quiet(self) -> None:
        """Return once no lock is held or awaited, counting those taken while it waits."""
        while self._locks:
            lock, _users = next(iter(self._locks.values()))
            # Taken behind its holder and the waiters before it (asyncio locks are fair), then let
            # go at once: whoever queued later goes on as before.
            async with lock:
                pass

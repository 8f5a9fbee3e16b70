"""Per-account locks for modules whose read-modify-write steps on one account must not overlap."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Hashable
from typing import Generic, TypeVar

from ..xmpp.jid import JID
from .cluster.bus import ClusterBus

K = TypeVar("K", bound=Hashable)


class Locks(Generic[K]):
    """One lock per key, kept only while anyone holds or awaits it."""

    def __init__(self) -> None:
        self._locks: dict[K, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: K) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    async def quiet(self) -> None:
        """Return once no lock is held or awaited, counting those taken while it waits."""
        while self._locks:
            lock, _users = next(iter(self._locks.values()))
            # Taken behind its holder and the waiters before it (asyncio locks are fair), then let
            # go at once: whoever queued later goes on as before.
            async with lock:
                pass


class AccountLocks(Locks[JID]):
    """Per-account locks; with a cluster ``bus``, each also held against the other nodes.

    A module's handlers run on the node that routes the stanza, so two nodes may change one
    account's stored data at once (the user approving a contact on the user's node while the
    contact's approval is handled on the contact's). Locks given the bus keep those apart too:
    the account's lock is taken on this node first, so a node asks the bus once at a time per
    account, and then as the bus's ``lock`` named ``kind`` and the account. A node alone (the
    in-process bus of a single server) asks nothing.
    """

    def __init__(self, bus: ClusterBus | None = None, kind: str = "") -> None:
        super().__init__()
        self._bus = bus
        self._kind = kind

    @contextlib.asynccontextmanager
    async def hold(self, key: JID) -> AsyncIterator[None]:
        async with super().hold(key):
            bus = self._bus
            if bus is None or bus.alone():
                yield
            else:
                async with bus.lock(f"{self._kind}:{key}"):
                    yield

"""Account deletion that a stopped process does not leave half done (XEP-0077 §3.2 for every way
an account goes; docs/architecture.md, Storage).

Before anything is deleted, a marker of the deletion is stored under the host (user ``""``,
which the account's own data is not): in the key-value store, holding a claim of the node at it
(cluster/claims.py), and in an index that the start-up sweep reads. It goes only once every
``user-deleted`` hook ran. A node that stops in between leaves it, and whoever next touches the
name finishes the deletion first: a retry, a registration, a login, any node starting. Every
hook drops only what is there, so running one again is harmless; the claim keeps two nodes from
finishing one deletion at once, and a new account of the name from being deleted by a late one.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from .cluster.bus import ACCOUNTS
from .cluster.claims import claimant_lives, no_node_claim, node_claim, still_mine
from .locks import Locks
from .storage import Storage, StorageError

if TYPE_CHECKING:
    from .app import Server

log = logging.getLogger(__name__)

# maps (host, "", INDEX): username -> the claim of a deletion begun; kv (host, "", INDEX/username)
# holds the claim that counts.
INDEX = "account-deletions"


class DeletionUnderWay(StorageError):
    """Another node, alive, is deleting the account right now; or may be, as this node cannot
    tell that the others still take it for alive and the deletion for its own."""


def _marker(username: str) -> str:
    return f"{INDEX}/{username}"


async def pending(storage: Storage, host: str, username: str) -> bool:
    """Whether a deletion of the account is noted and not finished."""
    return await storage.kv.get(host, "", _marker(username)) is not None


async def note_stopped(storage: Storage, host: str, username: str) -> None:
    """Note a deletion that storage alone makes, with the server stopped (``schnack admin user
    delete``): it holds the claim of no node, so the next node to start finishes it, running the
    ``user-deleted`` hooks that drop what the modules keep elsewhere."""
    claim = no_node_claim()
    await storage.maps.set(host, "", INDEX, username, claim)
    await storage.kv.set(host, "", _marker(username), claim)


class Deletions:
    """The deletions of accounts on this node, and those left pending by stopped ones."""

    def __init__(self, server: Server) -> None:
        self.server = server
        # Held for the whole of a deletion here: a claim of this process found under it is one
        # left by a deletion that failed, not one at work.
        self._locks: Locks[tuple[str, str]] = Locks()

    async def delete(self, host: str, username: str) -> bool:
        """Delete the account, or finish its deletion left pending; False if there was neither."""
        server = self.server
        accounts = server.storage.accounts
        async with self._locks.hold((host, username)):
            exists = await accounts.get(host, username) is not None
            held = await server.storage.kv.get(host, "", _marker(username))
            if not exists and held is None:
                return False
            mine = await self._claim(host, username, held)
            if exists:
                try:
                    await server.hooks.fire_all("user-deleting", host, username)
                    self._check(host, username, mine)
                    await accounts.delete(host, username)
                except Exception:
                    # Nothing deleted that a retry could not: the caller says the account stays.
                    await self._release(host, username, mine)
                    raise
            self._check(host, username, mine)
            try:
                await server.hooks.fire_all("user-deleted", host, username)
            finally:
                # The other nodes of a cluster end the account's sessions they serve (the bus
                # announces it again once it is back, should it be away from this node now).
                await server.cluster.bus.announce(ACCOUNTS, f"{username}@{host}")
            await self._release(host, username, mine)
        log.info("deleted the account %s@%s", username, host)
        return True

    async def settle(self, host: str, username: str) -> None:
        """Finish a deletion of the name left pending, before the name is used again (a new
        account, a login). DeletionUnderWay if a live node is at it."""
        if await self.server.storage.kv.get(host, "", _marker(username)) is not None:
            log.info("finishing the deletion of %s@%s left pending", username, host)
            await self.delete(host, username)

    async def sweep(self) -> None:
        """At start-up: finish every deletion left pending by a node that stopped (one whose node
        lives is left to it). A failure is logged; the next sweep or use of the name retries."""
        storage = self.server.storage
        for host in sorted(self.server.hosts):
            for username, noted in (await storage.maps.items(host, "", INDEX)).items():
                if await storage.kv.get(host, "", _marker(username)) is None:
                    # Finished, or begun by a node that lost the claim to another: only the index is left.
                    await storage.maps.delete_if(host, "", INDEX, username, noted)
                    continue
                try:
                    await self.settle(host, username)
                except DeletionUnderWay:
                    pass
                except Exception:
                    log.exception("could not finish the deletion of %s@%s; it stays pending", username, host)

    async def _claim(self, host: str, username: str, held: bytes | None) -> bytes:
        """Note the deletion as this node's, taking over one left by a stopped node or by a failed
        deletion here; DeletionUnderWay if another live node holds it."""
        storage = self.server.storage
        bus = self.server.cluster.bus
        mine = node_claim(bus)
        # The index first, so that no claim is stored that the sweep cannot find.
        await storage.maps.set(host, "", INDEX, username, mine)
        if held is None:
            held = await storage.kv.set_default(host, "", _marker(username), mine)
            if held == mine:
                return mine
        if (still_mine(bus, held) or not await claimant_lives(bus, held)) and \
                await storage.kv.replace(host, "", _marker(username), held, mine):
            return mine
        raise DeletionUnderWay(f"{username}@{host} is being deleted by another node")

    def _check(self, host: str, username: str, mine: bytes) -> None:
        """Right before what could touch a new account of the name: this node, cut off from the
        cluster, may have been declared dead meanwhile, and the deletion finished by another node
        that took the claim over, and the name registered again (cluster/claims.py)."""
        if not still_mine(self.server.cluster.bus, mine):
            raise DeletionUnderWay(f"this node cannot tell that the deletion of {username}@{host} is still its own")

    async def _release(self, host: str, username: str, mine: bytes) -> None:
        storage = self.server.storage
        await storage.kv.delete_if(host, "", _marker(username), mine)
        await storage.maps.delete_if(host, "", INDEX, username, mine)


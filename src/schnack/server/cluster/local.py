"""The in-process cluster bus: the single-node default, and several nodes in one process for tests.

Nodes that share a :class:`LocalHub` form a cluster; messages still pass through the wire
encoding, so the in-process bus checks what the Redis bus would carry.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import time
from collections.abc import AsyncIterator

from ..background import Background
from ..locks import Locks
from .bus import (
    ChangedHandler,
    Entry,
    MessageHandler,
    NodeDownHandler,
    NodeInfo,
    ReapedHandler,
    RecoveredHandler,
    ResubscribedHandler,
    bare_of,
    is_session,
)
from .messages import (
    NODE_MESSAGES,
    BusMessage,
    BusMessageError,
    Changed,
    NodeDown,
    NodeMessage,
    decode,
    encode,
)

log = logging.getLogger(__name__)


class LocalHub:
    """The shared state of the nodes of one process: directory, heartbeats and members."""

    def __init__(self) -> None:
        self.members: dict[str, LocalBus] = {}
        self.seen: dict[str, float] = {}
        self.started: dict[str, float] = {}
        self.addresses: dict[str, str] = {}
        self.directory: dict[str, dict[str, str]] = {}
        self.info: dict[str, str] = {}
        self.claims: dict[str, str] = {}
        # once(): each name's expiry (monotonic), and the same soonest first, to drop them in order.
        self.once: dict[str, float] = {}
        self.once_expiries: list[tuple[float, str]] = []
        # The names held with lock().
        self.locks: Locks[str] = Locks()

    def drop(self, node: str) -> dict[str, str]:
        """Remove ``node`` and its sessions from the directory; return their info (full JID -> info)."""
        dropped: dict[str, str] = {}
        self.members.pop(node, None)
        self.seen.pop(node, None)
        self.started.pop(node, None)
        self.addresses.pop(node, None)
        for bare in list(self.directory):
            entries = self.directory[bare]
            for full in [f for f, n in entries.items() if n == node]:
                del entries[full]
                dropped[full] = self.info.pop(full, "")
            if not entries:
                del self.directory[bare]
        return dropped

    def alive(self, node: str, ttl: float) -> bool:
        """Whether ``node`` heartbeated within ``ttl`` seconds."""
        seen = self.seen.get(node)
        return seen is not None and time.monotonic() - seen <= ttl


class LocalBus:
    """A node on a :class:`LocalHub` (its own hub when none is given)."""

    def __init__(self, node: str, *, hub: LocalHub | None = None, heartbeat_interval: float = 1.0,
                 node_ttl: float = 5.0, address: str = "") -> None:
        self._node = node
        self._address = address
        self._hub = hub if hub is not None else LocalHub()
        self._interval = heartbeat_interval
        self._ttl = node_ttl
        self._started = time.time()
        self._handlers: list[MessageHandler] = []
        self._down_handlers: list[NodeDownHandler] = []
        self._changed_handlers: list[ChangedHandler] = []
        self._reaped_handlers: list[ReapedHandler] = []
        # Reaped handlers run in tasks of their own, so that a long one never delays a heartbeat.
        self._reaped_tasks = Background(log, "a cluster bus handler failed")
        self._heartbeat: asyncio.Task[None] | None = None
        # One consumer keeps the order in which messages to this node were published.
        self._inbox: asyncio.Queue[bytes] = asyncio.Queue()
        self._consumer: asyncio.Task[None] | None = None

    @property
    def node(self) -> str:
        """This node's name."""
        return self._node

    @property
    def started(self) -> float:
        """When this node last joined its hub."""
        return self._started

    async def start(self) -> None:
        """Join the hub and heartbeat."""
        if self._node in self._hub.members:
            raise RuntimeError(f"a node named {self._node!r} is already running")
        self._join()
        self._beat()
        self._heartbeat = asyncio.create_task(self._run())
        self._consumer = asyncio.create_task(self._consume())

    def _join(self) -> None:
        self._hub.members[self._node] = self
        self._started = time.time()
        self._hub.started[self._node] = self._started
        self._hub.addresses[self._node] = self._address

    async def stop(self, *, leave: bool = True) -> None:
        """Stop heartbeating; ``leave`` drops this node's entries at once."""
        for task in (self._heartbeat, self._consumer):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self._reaped_tasks.stop()
        self._heartbeat = self._consumer = None
        if self._hub.members.get(self._node) is self:
            if leave:
                self._hub.drop(self._node)
            else:
                del self._hub.members[self._node]

    def _beat(self) -> None:
        if self._node not in self._hub.members:
            # Declared dead while it lived (its heartbeats were late by node_ttl): it joins again
            # as another process, as on Redis, so that what it claimed before is not its own now.
            log.warning("this node was declared dead; joining again as another process")
            self._join()
        self._hub.seen[self._node] = time.monotonic()

    def is_member(self) -> bool:
        """Whether this node is on its hub and heartbeated within half of ``node_ttl``; always
        while it is alone there, where no other node can declare it dead."""
        if self._hub.members.get(self._node) is not self:
            return False
        return self.alone() or self._hub.alive(self._node, self._ttl / 2)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            self._beat()
            self._reap()

    def _reap(self) -> None:
        """Declare every node whose heartbeats stopped dead, once, and tell the live ones."""
        for node in [n for n in self._hub.seen if not self._hub.alive(n, self._ttl)]:
            dropped = self._hub.drop(node)
            log.warning("cluster node %s stopped heartbeating; its sessions are gone", node)
            for member in list(self._hub.members.values()):
                member._deliver_raw(encode(NodeDown(node)))
            for handler in list(self._reaped_handlers):
                self._reaped_tasks.spawn(handler(node, dropped))

    def _deliver_raw(self, data: bytes) -> None:
        self._inbox.put_nowait(data)

    async def _consume(self) -> None:
        while True:
            data = await self._inbox.get()
            try:
                message = decode(data)
            except BusMessageError as err:
                log.error("dropping a bus message: %s", err)
                continue
            await self._dispatch(message)

    async def _dispatch(self, message: BusMessage) -> None:
        try:
            if isinstance(message, NODE_MESSAGES):
                for handler in list(self._handlers):
                    await handler(message)
            elif isinstance(message, Changed):
                for changed in list(self._changed_handlers):
                    changed(message.store, message.account)
            else:
                for down in list(self._down_handlers):
                    await down(message.node)
        except Exception:
            log.exception("a cluster bus handler failed")

    async def publish(self, node: str, message: NodeMessage) -> bool:
        """Hand ``message`` to ``node`` if it is a live member."""
        target = self._hub.members.get(node)
        if target is None or not self._hub.alive(node, self._ttl):
            return False
        target._deliver_raw(encode(message))
        return True

    async def announce(self, store: str, account: str) -> None:
        """Hand the change to every other live member of the hub (none for a node alone)."""
        others = [m for name, m in self._hub.members.items() if name != self._node and self._hub.alive(name, self._ttl)]
        if others:
            data = encode(Changed(self._node, store, account))
            for member in others:
                member._deliver_raw(data)

    def on_changed(self, handler: ChangedHandler) -> None:
        """Call ``handler`` for every change another member announces."""
        self._changed_handlers.append(handler)

    def deliver_raw(self, data: bytes) -> None:
        """Take wire bytes as if they came over the bus (a message from another version, say)."""
        self._deliver_raw(data)

    def subscribe(self, handler: MessageHandler) -> None:
        """Call ``handler`` for every message to this node."""
        self._handlers.append(handler)

    def on_node_down(self, handler: NodeDownHandler) -> None:
        """Call ``handler`` when another node is declared dead."""
        self._down_handlers.append(handler)

    def on_recovered(self, handler: RecoveredHandler) -> None:
        """The hub lives in this process and is never lost, so ``handler`` is never called."""

    def on_resubscribed(self, handler: ResubscribedHandler) -> None:
        """Delivery through the hub is never interrupted, so ``handler`` is never called."""

    async def register(self, full_jid: str, node: str) -> None:
        """Record ``full_jid`` on ``node``."""
        self._hub.directory.setdefault(bare_of(full_jid), {})[full_jid] = node
        self._hub.info.pop(full_jid, None)

    async def unregister(self, full_jid: str) -> None:
        """Forget ``full_jid`` if this node holds it."""
        bare = bare_of(full_jid)
        entries = self._hub.directory.get(bare)
        if entries is not None and entries.get(full_jid) == self._node:
            del entries[full_jid]
            self._hub.info.pop(full_jid, None)
            if not entries:
                del self._hub.directory[bare]

    async def lookup(self, bare_jid: str) -> dict[str, str]:
        """The live sessions of ``bare_jid``."""
        entries = self._hub.directory.get(bare_jid, {})
        return {full: node for full, node in entries.items() if self._hub.alive(node, self._ttl)}

    async def nodes(self) -> dict[str, NodeInfo]:
        """The live nodes with their counts of sessions and of components' links."""
        sessions: dict[str, int] = {}
        links: dict[str, int] = {}
        for entries in self._hub.directory.values():
            for full_jid, node in entries.items():
                counts = sessions if is_session(full_jid) else links
                counts[node] = counts.get(node, 0) + 1
        return {
            node: NodeInfo(node, sessions.get(node, 0), self._hub.started.get(node, 0.0),
                           self._hub.addresses.get(node, ""), links.get(node, 0))
            for node in self._hub.seen if self._hub.alive(node, self._ttl)
        }

    async def set_info(self, full_jid: str, info: str) -> None:
        """Attach ``info`` to this node's entry for ``full_jid``."""
        if self._hub.directory.get(bare_of(full_jid), {}).get(full_jid) == self._node:
            self._hub.info[full_jid] = info

    async def entries(self, bare_jid: str) -> dict[str, Entry]:
        """The live sessions of ``bare_jid`` with their info."""
        return {full: Entry(node, self._hub.info.get(full, "")) for full, node in (await self.lookup(bare_jid)).items()}

    def alone(self) -> bool:
        """Whether no other node heartbeats on this hub, or did and was not dropped yet."""
        seen = self._hub.seen
        return not seen or (len(seen) == 1 and self._node in seen)

    def away(self) -> bool:
        """Never: the hub lives in this process."""
        return False

    def on_reaped(self, handler: ReapedHandler) -> None:
        """Call ``handler`` when this node drops a dead node's entries."""
        self._reaped_handlers.append(handler)

    async def claim(self, name: str) -> str:
        """The live owner of ``name``, this node if there was none."""
        owner = self._hub.claims.get(name)
        if owner is None or not self._hub.alive(owner, self._ttl):
            owner = self._hub.claims[name] = self._node
        return owner

    async def reclaim(self, name: str) -> str:
        """As :meth:`claim` (the hub has no outages to settle after)."""
        return await self.claim(name)

    async def once(self, name: str, ttl: float) -> bool:
        """Whether ``name`` was not marked on the hub within ``ttl`` seconds; marks it."""
        now = time.monotonic()
        marks, expiries = self._hub.once, self._hub.once_expiries
        while expiries and expiries[0][0] <= now:
            until, gone = heapq.heappop(expiries)
            if marks.get(gone) == until:
                del marks[gone]
        if name in marks:
            return False
        marks[name] = now + ttl
        heapq.heappush(expiries, (now + ttl, name))
        return True

    @contextlib.asynccontextmanager
    async def lock(self, name: str) -> AsyncIterator[None]:
        """Hold ``name`` against the hub's other nodes while the block runs."""
        async with self._hub.locks.hold(name):
            yield

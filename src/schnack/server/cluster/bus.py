"""The cluster bus interface: publish/subscribe between nodes and a directory of full JIDs.

Any node accepts any client; a stanza for a session on another node crosses the bus to that
node. The directory says which node holds which full JID; every node heartbeats, and a node whose
heartbeats stop for ``node_ttl`` seconds is declared dead: its entries are dropped and every node
hears a dead-node event (its sessions' messages then go to offline storage). The bus is only a fast
path: storage stays the source of truth, so a message the bus cannot carry is stored instead.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol, TypeVar

from .messages import NodeMessage

MessageHandler = Callable[[NodeMessage], Awaitable[None]]
NodeDownHandler = Callable[[str], Awaitable[None]]
RecoveredHandler = Callable[[], Awaitable[None]]
ResubscribedHandler = Callable[[], None]
# Called with the store and the account (a bare JID) that another node changed (messages.Changed).
ChangedHandler = Callable[[str, str], None]
# What a node announces (ClusterBus.announce) when it deleted an account.
ACCOUNTS = "accounts"
# Called with a dead node's name and what its sessions had attached: full JID -> info.
ReapedHandler = Callable[[str, dict[str, str]], Awaitable[None]]

T = TypeVar("T")


@dataclass(frozen=True)
class NodeInfo:
    """A live node as the directory sees it: its client sessions and its components' links
    (:func:`is_session`) at its last heartbeat, and the ``host:port`` its clients connect to
    (empty when not configured)."""

    name: str
    sessions: int
    started: float
    address: str = ""
    components: int = 0


@dataclass(frozen=True)
class Entry:
    """A directory entry: the node holding a full JID and the info that node attached to it
    (``set_info``; empty until set). The bus does not read the info."""

    node: str
    info: str


class ClusterBus(Protocol):
    """What the server needs from a cluster backend (in-process or Redis)."""

    @property
    def node(self) -> str:
        """This node's name, unique in the cluster."""
        ...

    @property
    def started(self) -> float:
        """When this node last joined (as :attr:`NodeInfo.started` shows it to every node): a node
        that restarts under its name is another one than before, and so is one that comes back
        after the cluster declared it dead (or lost its heartbeat, as a restarted Redis does)."""
        ...

    def is_member(self) -> bool:
        """Whether this node can tell, without asking anyone, that no other node can have declared
        it dead yet: its last heartbeat that reached the backend was sent less than half of
        ``node_ttl`` ago (the other half is the margin for a write it makes now). A node that
        cannot tell must not start or finish a write under a claim that names it
        (cluster/claims.py): the others may be taking the claim over."""
        ...

    async def start(self) -> None:
        """Join the cluster: heartbeat and listen on this node's channel."""
        ...

    async def stop(self, *, leave: bool = True) -> None:
        """Stop; ``leave`` drops this node and its sessions from the directory at once, otherwise
        they stay until the TTL runs out (as if the node had crashed)."""
        ...

    async def publish(self, node: str, message: NodeMessage) -> bool:
        """Send ``message`` to ``node``; False when no live node took it (the caller stores it)."""
        ...

    def subscribe(self, handler: MessageHandler) -> None:
        """Call ``handler`` for every message published to this node."""
        ...

    def on_node_down(self, handler: NodeDownHandler) -> None:
        """Call ``handler`` with the name of every other node declared dead."""
        ...

    def on_recovered(self, handler: RecoveredHandler) -> None:
        """Call ``handler`` (in a task of its own) each time the bus works again after an outage,
        once this node's sessions are back in the directory."""
        ...

    def on_resubscribed(self, handler: ResubscribedHandler) -> None:
        """Call ``handler`` each time this node listens on its channel again after its subscription
        was interrupted, before it reads anything there: what was on its way to this node when the
        subscription broke may be lost without its publisher knowing."""
        ...

    async def register(self, full_jid: str, node: str) -> None:
        """Record that ``full_jid`` is bound on ``node`` (this node, in practice)."""
        ...

    async def unregister(self, full_jid: str) -> None:
        """Forget ``full_jid`` if this node holds it."""
        ...

    async def lookup(self, bare_jid: str) -> dict[str, str]:
        """The live sessions of an account: full JID -> node."""
        ...

    async def nodes(self) -> dict[str, NodeInfo]:
        """The live nodes of the cluster."""
        ...

    async def set_info(self, full_jid: str, info: str) -> None:
        """Attach ``info`` to this node's entry for ``full_jid`` (ignored when another node holds it)."""
        ...

    async def entries(self, bare_jid: str) -> dict[str, Entry]:
        """The live sessions of an account with their info: full JID -> entry."""
        ...

    def alone(self) -> bool:
        """Whether this node knows, without asking anyone, that no other node is in the cluster
        (the in-process bus of a single node): then the directory holds only sessions the node
        itself has, and it need not be read for every message."""
        ...

    def away(self) -> bool:
        """Whether the backend could not be reached lately and has not answered since: the directory
        then looks empty to this node, so what it routes to other nodes' sessions is stored instead."""
        ...

    def on_reaped(self, handler: ReapedHandler) -> None:
        """Call ``handler`` on the one node that dropped a dead node's entries, with their info, so
        that exactly one node speaks for the dead node's sessions (their unavailable presence)."""
        ...

    async def claim(self, name: str) -> str:
        """The live node that owns ``name`` (a group chat room, say); this node becomes the owner
        when nobody does or the owner is dead. Ownership lasts while the owner heartbeats. Raises
        :class:`BusUnavailable` when the backend cannot say (so that no second owner arises)."""
        ...

    async def reclaim(self, name: str) -> str:
        """After the backend came back from an outage, claim ``name`` again as the node that owned
        it before (the others' claims wait for that); the live owner, as :meth:`claim`."""
        ...

    async def announce(self, store: str, account: str) -> None:
        """Tell every other node that ``store`` of ``account`` changed through this one, so that
        those keeping it in memory drop it. One made while the backend cannot be reached from this
        node is made again once it can. Otherwise at most once: a node that misses it while its
        subscription is broken hears of its resubscription (:meth:`on_resubscribed`) and drops all
        it keeps."""
        ...

    def on_changed(self, handler: ChangedHandler) -> None:
        """Call ``handler`` with the store and the account each time another node announces a change."""
        ...

    async def once(self, name: str, ttl: float) -> bool:
        """Whether this is the first call for ``name`` in the cluster within ``ttl`` seconds: of
        nodes calling at once, one is told True, the others False until ``ttl`` ran out. True
        while the backend cannot be reached: what is meant to be done once is then maybe done
        twice, never not at all."""
        ...

    def lock(self, name: str) -> AbstractAsyncContextManager[None]:
        """Hold ``name`` against every other node while the block runs, waiting while one holds
        it. A node that dies holding it lets go with its heartbeat. While the backend cannot be
        reached the block runs without it (this node's own callers are kept apart by the caller)."""
        ...


class BusUnavailable(Exception):
    """The backend cannot be reached (Redis is away): what only it knows cannot be answered now."""


class NoAnswer(Exception):
    """``node`` did not answer a request (``ClusterNode.ask``), for ``reason``: words an operator
    reads after the node's name."""

    def __init__(self, node: str, reason: str) -> None:
        super().__init__(f"node {node} {reason}")
        self.node = node
        self.reason = reason


def bare_of(full_jid: str) -> str:
    """The bare part of a full JID string (a bare JID never contains '/')."""
    return full_jid.partition("/")[0]


def is_session(full_jid: str) -> bool:
    """Whether a directory entry is a client session (RFC 6120 §7: bound to a JID with a local
    part) rather than a component's link, which is entered under ``{domain}/{node}`` (components.py)."""
    return "@" in bare_of(full_jid)


async def announced(bus: ClusterBus, store: str, account: str, write: Awaitable[T]) -> T:
    """Await ``write`` to ``store`` of ``account``, then announce the change (:meth:`ClusterBus.announce`)
    whether or not it went through: one that failed part way may have changed some of it, so every
    other node drops its copy either way.

    Modules compiled with mypyc await nothing in a finally block (tests/test_compiled.py); this one
    is not compiled, so they write through it."""
    try:
        return await write
    finally:
        await bus.announce(store, account)

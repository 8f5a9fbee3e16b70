"""Claims in shared storage that name the node making them (docs/architecture.md, the bus's
``started``): a claim is made with the key-value store's ``set_default`` and holds while its
node lives; once the cluster knows that node dead (its heartbeat is gone for ``node_ttl``, or it
came back as another process), the next claimant may take it over with ``replace``.

So the node that made a claim writes under it only while it can tell that the others cannot
have declared it dead yet (:func:`still_mine`), checked right before the write that commits what
it claimed: a node cut off from the cluster past ``node_ttl`` is declared dead while it still
lives, and would otherwise write beside the node that took its claim over."""

from __future__ import annotations

import json
import logging
import secrets

from .bus import ClusterBus

log = logging.getLogger(__name__)


def node_claim(bus: ClusterBus, *notes: str) -> bytes:
    """A fresh claim of this node's process, unique to the one claimant, with ``notes`` kept in it."""
    return _claim(bus.node, bus.started, notes)


def no_node_claim() -> bytes:
    """A fresh claim made with no server running (``schnack admin``): it names no live node, so
    every node takes it for a dead one's."""
    return _claim("", 0.0, ())


def _claim(node: str, started: float, notes: tuple[str, ...]) -> bytes:
    return json.dumps([node, started, secrets.token_hex(16), *notes]).encode()


def claim_notes(claim: bytes) -> list[str]:
    """The notes :func:`node_claim` kept in ``claim``; none for a claim it did not make."""
    try:
        _node, _started, _token, *notes = json.loads(claim)
    except (ValueError, TypeError):
        return []
    return [note for note in notes if isinstance(note, str)]


async def claimant_lives(bus: ClusterBus, claim: bytes) -> bool:
    """Whether the node that made ``claim`` may still be at what it claimed: it heartbeats, and
    is the process that made it, not one started again under its name."""
    try:
        node, started, _token, *_notes = json.loads(claim)
    except (ValueError, TypeError):
        return True  # not a claim node_claim makes: nothing says its node is dead
    try:
        nodes = await bus.nodes()
    except Exception as err:
        # The cluster cannot say (Redis is away): as good as alive, or two could go ahead.
        log.warning("cannot tell whether node %s, which holds a claim, lives: %s", node, err)
        return True
    info = nodes.get(node)
    return info is not None and info.started == started


def still_mine(bus: ClusterBus, claim: bytes) -> bool:
    """Whether this node may still write under ``claim``, which it made (:func:`node_claim`): no
    other node can have declared it dead yet (:meth:`ClusterBus.is_member`), and it is still the
    process that made the claim in the cluster's eyes, not one it came back as after it was
    declared dead (whose old claims the others may have taken over meanwhile)."""
    try:
        node, started, _token, *_notes = json.loads(claim)
    except (ValueError, TypeError):
        return False
    return bus.is_member() and node == bus.node and started == bus.started

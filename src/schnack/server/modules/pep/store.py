"""Where PEP nodes and their items live: the map store, one record per node and one map per node's items.

The map ``pep`` of an account holds each node's record under its name: the configuration, a
publish counter that orders the items, how many items are stored and the id of the last one,
so that the last published item (XEP-0060 §6.1.7, sent to every contact coming online) costs
two key reads and ``max_items`` (§16.4.4) is enforced without reading a node's items unless it
overflows. The map ``pep/<node>`` holds the items by id, each with its publish number and
payload. Both SQLite and PostgreSQL serve maps, and the data survives restarts.

What an account's items take, in stored bytes, is kept as a running figure (key-value store
``pep-bytes``) that each change of items updates, so a publish checks the account's bound
(``max_bytes``) without reading its items; an account stored before the figure was kept has
it counted from its items once. A publish that would take the account beyond the bound is
refused with resource-constraint (RFC 6120 §8.3.3.18); one that does not grow the account's
items (a replacement no larger, or one whose node drops as much of its oldest) is accepted,
so an account above a lowered bound can still make room.

Callers serialize the changes to one account (the module holds a lock per account).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any
from xml.etree.ElementTree import Element

from ....xmpp.errors import StanzaError
from ....xmpp.jid import JID
from ....xmpp.parser import parse_frame
from ....xmpp.payloads.pubsub import NodeConfig
from ....xmpp.xml import serialize

if TYPE_CHECKING:
    from ...app import Server
    from ...storage.base import MapStore

NODES = "pep"
USAGE = "pep-bytes"
_CONFIG_FIELDS = frozenset(f.name for f in dataclasses.fields(NodeConfig))


def items_store(node: str) -> str:
    """The map holding the items of ``node``."""
    return f"{NODES}/{node}"


@dataclass(frozen=True)
class Node:
    """A node's record: its configuration, publish counter, number of stored items and last item id."""

    name: str
    config: NodeConfig
    seq: int = 0
    count: int = 0
    last: str | None = None


@dataclass(frozen=True)
class StoredItem:
    """An item as kept: its id, publish number (higher is newer) and payload."""

    id: str
    seq: int
    payload: Element


def _encode_node(node: Node) -> bytes:
    config = dataclasses.asdict(node.config)
    return json.dumps({"config": config, "seq": node.seq, "count": node.count, "last": node.last}).encode()


def _decode_node(name: str, data: bytes) -> Node:
    record = json.loads(data)
    # Options a later version stored and this one does not know are left out.
    config: dict[str, Any] = {k: v for k, v in record["config"].items() if k in _CONFIG_FIELDS}
    if "roster_groups_allowed" in config:
        config["roster_groups_allowed"] = tuple(config["roster_groups_allowed"])
    return Node(name, NodeConfig(**config), record["seq"], record["count"], record["last"])


def _decode_item(item_id: str, data: bytes) -> StoredItem:
    record = json.loads(data)
    payload = record["payload"].encode()
    return StoredItem(item_id, record["seq"], parse_frame(payload, len(payload)))


class NodeStore:
    """Reads and writes the nodes and items of accounts."""

    def __init__(self, server: Server, max_bytes: int) -> None:
        self._server = server
        self.max_bytes = max_bytes
        # Names of the nodes that are whitelist whatever was stored (see Pep.keep_private).
        self.private: set[str] = set()

    def _decode(self, name: str, data: bytes) -> Node:
        node = _decode_node(name, data)
        if name in self.private and node.config.access_model != "whitelist":
            # Stored before the node was kept private: read as it would be made now.
            return replace(node, config=replace(node.config, access_model="whitelist"))
        return node

    @property
    def _maps(self) -> MapStore:
        return self._server.storage.maps

    async def nodes(self, owner: JID) -> dict[str, Node]:
        """Every node of the account ``owner``, by name."""
        assert owner.local is not None
        stored = await self._maps.items(owner.domain, owner.local, NODES)
        return {name: self._decode(name, data) for name, data in stored.items()}

    async def node(self, owner: JID, name: str) -> Node | None:
        assert owner.local is not None
        data = await self._maps.get(owner.domain, owner.local, NODES, name)
        return self._decode(name, data) if data is not None else None

    async def save(self, owner: JID, node: Node) -> None:
        """Create or update the node's record."""
        assert owner.local is not None
        await self._maps.set(owner.domain, owner.local, NODES, node.name, _encode_node(node))

    async def item(self, owner: JID, node: str, item_id: str) -> StoredItem | None:
        assert owner.local is not None
        data = await self._maps.get(owner.domain, owner.local, items_store(node), item_id)
        return _decode_item(item_id, data) if data is not None else None

    async def last(self, owner: JID, node: Node) -> StoredItem | None:
        """The last published item of ``node`` (XEP-0060 §6.1.7)."""
        return await self.item(owner, node.name, node.last) if node.last is not None else None

    async def items(self, owner: JID, node: str) -> list[StoredItem]:
        """The node's items, oldest first."""
        assert owner.local is not None
        stored = await self._maps.items(owner.domain, owner.local, items_store(node))
        return sorted((_decode_item(k, v) for k, v in stored.items()), key=lambda item: item.seq)

    async def usage(self, owner: JID) -> int:
        """The bytes the items of every node of ``owner`` take; the caller holds the owner's lock."""
        assert owner.local is not None
        data = await self._server.storage.kv.get(owner.domain, owner.local, USAGE)
        if data is not None:
            return int(data)
        used = 0
        for name in await self.nodes(owner):
            used += sum(map(len, (await self._maps.items(owner.domain, owner.local, items_store(name))).values()))
        await self._use(owner, used)
        return used

    async def _use(self, owner: JID, used: int) -> None:
        assert owner.local is not None
        await self._server.storage.kv.set(owner.domain, owner.local, USAGE, str(max(0, used)).encode())

    async def _sizes(self, owner: JID, node: str) -> list[tuple[str, int]]:
        """(id, stored bytes) of the node's items, oldest first."""
        assert owner.local is not None
        stored = await self._maps.items(owner.domain, owner.local, items_store(node))
        return [(item.id, len(stored[item.id])) for item in
                sorted((_decode_item(k, v) for k, v in stored.items()), key=lambda item: item.seq)]

    async def publish(self, owner: JID, node: Node, item_id: str, payload: Element) -> Node:
        """Store an item (replacing one with the same id, which becomes the newest) and the record.

        A node that does not persist items (``pubsub#persist_items`` false) keeps only its
        record. The oldest items beyond ``max_items`` are removed (XEP-0060 §7.1.2). An item
        that would take the account's items beyond ``max_bytes`` is refused (resource-constraint).
        """
        assert owner.local is not None
        if not node.config.persist_items:
            await self.save(owner, node)
            return node
        store = items_store(node.name)
        used = await self.usage(owner)
        old = await self._maps.get(owner.domain, owner.local, store, item_id)
        seq = node.seq + 1
        value = json.dumps({"seq": seq, "payload": serialize(payload)}).encode()
        node = replace(node, seq=seq, count=node.count + (0 if old is not None else 1), last=item_id)
        excess: list[tuple[str, int]] = []
        if node.count > node.config.max_items:
            older = [entry for entry in await self._sizes(owner, node.name) if entry[0] != item_id]
            excess = older[: node.count - node.config.max_items]
        grown = len(value) - (len(old) if old is not None else 0) - sum(size for _, size in excess)
        if grown > 0 and used + grown > self.max_bytes:
            raise StanzaError("resource-constraint",
                              f"an account's PEP items may take at most {self.max_bytes} bytes; retract some first")
        await self._maps.set(owner.domain, owner.local, store, item_id, value)
        for gone, _ in excess:
            await self._maps.set(owner.domain, owner.local, store, gone, None)
        node = replace(node, count=node.count - len(excess))
        await self.save(owner, node)
        if grown:
            await self._use(owner, used + grown)
        return node

    async def trim(self, owner: JID, node: Node) -> Node:
        """Remove the oldest items beyond ``max_items``; the record is the caller's to save."""
        assert owner.local is not None
        used = await self.usage(owner)
        items = await self._sizes(owner, node.name)
        excess = items[: max(0, len(items) - node.config.max_items)]
        for item_id, _ in excess:
            await self._maps.set(owner.domain, owner.local, items_store(node.name), item_id, None)
        if excess:
            await self._use(owner, used - sum(size for _, size in excess))
        kept = items[len(excess):]
        return replace(node, count=len(kept), last=kept[-1][0] if kept else None)

    async def retract(self, owner: JID, node: Node, ids: tuple[str, ...]) -> Node:
        """Remove the items ``ids`` (which exist) and save the record."""
        assert owner.local is not None
        used = await self.usage(owner)
        store = items_store(node.name)
        for item_id in set(ids):
            old = await self._maps.get(owner.domain, owner.local, store, item_id)
            await self._maps.set(owner.domain, owner.local, store, item_id, None)
            used -= len(old) if old is not None else 0
        node = replace(node, count=max(0, node.count - len(set(ids))))
        if node.last in ids:
            remaining = await self.items(owner, node.name)
            node = replace(node, last=remaining[-1].id if remaining else None)
        await self.save(owner, node)
        await self._use(owner, used)
        return node

    async def purge(self, owner: JID, node: Node) -> Node:
        """Remove every item of the node and save the record."""
        await self._drop_items(owner, node.name)
        node = replace(node, count=0, last=None)
        await self.save(owner, node)
        return node

    async def delete(self, owner: JID, name: str) -> None:
        """Remove the node with its items."""
        assert owner.local is not None
        await self._drop_items(owner, name)
        await self._maps.set(owner.domain, owner.local, NODES, name, None)

    async def _drop_items(self, owner: JID, name: str) -> None:
        assert owner.local is not None
        used = await self.usage(owner)
        stored = await self._maps.items(owner.domain, owner.local, items_store(name))
        await self._maps.delete_all(owner.domain, owner.local, items_store(name))
        if stored:
            await self._use(owner, used - sum(map(len, stored.values())))

    async def delete_all(self, owner: JID) -> None:
        """Remove every node of the account, and its figure of bytes used."""
        assert owner.local is not None
        for name in await self.nodes(owner):
            await self._maps.delete_all(owner.domain, owner.local, items_store(name))
            await self._maps.set(owner.domain, owner.local, NODES, name, None)
        await self._server.storage.kv.delete(owner.domain, owner.local, USAGE)

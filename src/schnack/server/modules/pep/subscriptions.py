"""XEP-0060 §6.1 explicit subscriptions to PEP nodes, kept in the map store.

The map ``pep-subscriptions`` of the owner holds, under each node's name, the node's
subscriptions: the subscribed JID (bare or full, as the subscriber asked) and its subid. The
subscriber's map ``pep-subscribed`` names every node it is subscribed to (key ``<owner> <node>``),
so that an account that goes is taken off the nodes of others too. Both survive restarts.

Callers serialize the changes to one owner's subscriptions (the module holds the owner's lock).
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ....xmpp.jid import JID

if TYPE_CHECKING:
    from ...app import Server
    from ...storage.base import MapStore

SUBSCRIPTIONS = "pep-subscriptions"
SUBSCRIBED = "pep-subscribed"


@dataclass(frozen=True)
class Subscriber:
    """One subscription to a node: who (as subscribed) and the subscription's id."""

    jid: JID
    subid: str


def _encode(subscribers: list[Subscriber]) -> bytes:
    return json.dumps([{"jid": str(s.jid), "subid": s.subid} for s in subscribers]).encode()


def _decode(data: bytes) -> list[Subscriber]:
    return [Subscriber(JID.parse(entry["jid"]), entry["subid"]) for entry in json.loads(data)]


def _reverse_key(owner: JID, node: str) -> str:
    # A bare JID holds no space, so the first space ends it; node names may hold any.
    return f"{owner} {node}"


class SubscriptionStore:
    """Reads and writes the subscriptions of accounts' nodes."""

    def __init__(self, server: Server) -> None:
        self._server = server

    @property
    def _maps(self) -> MapStore:
        return self._server.storage.maps

    async def of(self, owner: JID, node: str) -> list[Subscriber]:
        """The subscriptions to ``node`` of the account ``owner``."""
        assert owner.local is not None
        data = await self._maps.get(owner.domain, owner.local, SUBSCRIPTIONS, node)
        return _decode(data) if data is not None else []

    async def all(self, owner: JID) -> dict[str, list[Subscriber]]:
        """Every subscription to the nodes of ``owner``, by node name."""
        assert owner.local is not None
        stored = await self._maps.items(owner.domain, owner.local, SUBSCRIPTIONS)
        return {node: _decode(data) for node, data in stored.items()}

    async def add(self, owner: JID, node: str, jid: JID) -> tuple[Subscriber, bool]:
        """Subscribe ``jid``; the subscription and whether it is new (an existing one is kept, §6.1.6)."""
        current = await self.of(owner, node)
        for subscriber in current:
            if subscriber.jid == jid:
                return subscriber, False
        subscriber = Subscriber(jid, secrets.token_hex(8))
        await self._save(owner, node, [*current, subscriber])
        await self._mark(jid.bare, owner, node, True)
        return subscriber, True

    async def remove(self, owner: JID, node: str, jids: set[JID]) -> list[Subscriber]:
        """End the subscriptions of ``jids``; the ones that existed."""
        current = await self.of(owner, node)
        gone = [s for s in current if s.jid in jids]
        if not gone:
            return []
        kept = [s for s in current if s.jid not in jids]
        await self._save(owner, node, kept)
        remaining = {s.jid.bare for s in kept}
        for bare in {s.jid.bare for s in gone} - remaining:
            await self._mark(bare, owner, node, False)
        return gone

    async def drop_node(self, owner: JID, node: str) -> None:
        """A deleted node has no subscribers (XEP-0060 §8.4)."""
        for bare in {s.jid.bare for s in await self.of(owner, node)}:
            await self._mark(bare, owner, node, False)
        await self._save(owner, node, [])

    async def drop_owner(self, owner: JID) -> None:
        """Every subscription to the nodes of ``owner``, whose account goes."""
        for node in await self.all(owner):
            await self.drop_node(owner, node)

    async def subscribed_to(self, subscriber: JID) -> list[tuple[JID, str]]:
        """(owner, node) of every node the account ``subscriber`` (or one of its resources) is subscribed to."""
        assert subscriber.local is not None
        keys = await self._maps.items(subscriber.domain, subscriber.local, SUBSCRIBED)
        found = []
        for key in keys:
            owner, _, node = key.partition(" ")
            found.append((JID.parse(owner), node))
        return found

    async def _save(self, owner: JID, node: str, subscribers: list[Subscriber]) -> None:
        assert owner.local is not None
        value = _encode(subscribers) if subscribers else None
        await self._maps.set(owner.domain, owner.local, SUBSCRIPTIONS, node, value)

    async def _mark(self, subscriber: JID, owner: JID, node: str, subscribed: bool) -> None:
        if subscriber.local is None or subscriber.domain not in self._server.hosts:
            return
        await self._maps.set(subscriber.domain, subscriber.local, SUBSCRIBED, _reverse_key(owner, node),
                             b"1" if subscribed else None)

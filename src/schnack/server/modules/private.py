"""XEP-0049: Private XML Storage, one stored element per qualified name and account.

Clients keep legacy bookmarks (XEP-0048, ``storage:bookmarks``) and preferences here. Only the
account itself reads or writes its data; anyone else gets forbidden (§2.3, "preferable" to
service-unavailable). A set may carry several elements; a get names exactly one and returns it
empty when nothing is stored, so storing an empty element keeps nothing.

What one account keeps is bounded (options ``max_item_size``, ``max_size`` and ``max_items``):
an element too large is not-acceptable, a set that would take the account beyond its total
size or number of elements is resource-constraint (RFC 6120 §8.3.3.11, §8.3.3.18). A set that
does not grow the account's data is accepted, so an account above lowered limits can still
make room.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING
from xml.etree.ElementTree import Element

from ...xmpp import ns
from ...xmpp.errors import StanzaError
from ...xmpp.parser import parse_frame
from ...xmpp.stanza import Stanza
from ...xmpp.xml import element, qname, serialize, split
from ..config import bounded
from ..locks import AccountLocks
from ..module import Module

if TYPE_CHECKING:
    from ..sessions import Session

QUERY = qname(ns.PRIVATE, "query")
STORE = "private"
# Stanza namespaces and this protocol's own cannot name stored data (§2.3: "reserved").
RESERVED = frozenset({ns.CLIENT, ns.SERVER, ns.PRIVATE})


def _check(child: Element) -> None:
    namespace, _ = split(child.tag)
    if not namespace:
        raise StanzaError("not-acceptable", "stored elements need their own namespace")
    if namespace in RESERVED:
        raise StanzaError("not-acceptable", f"the namespace {namespace} is reserved")


def _empty(child: Element) -> bool:
    """Whether ``child`` is what a get of its name returns when nothing is stored."""
    return len(child) == 0 and not child.attrib and not child.text


@dataclass(frozen=True)
class PrivateOptions:
    """How much private XML one account may keep."""

    max_item_size: int = bounded(256 * 1024, min=1024, max=16 * 1024 * 1024, help="bytes of one serialized element")
    max_size: int = bounded(1024 * 1024, min=1024, max=1024 * 1024 * 1024, help="bytes of all of an account's elements")
    max_items: int = bounded(1_000, min=1, max=100_000, help="elements (qualified names) per account")


class PrivateStorage(Module[PrivateOptions]):
    """Stores private XML for each account (XEP-0049 §2)."""

    name = "private"
    account_features = (ns.PRIVATE,)
    Options = PrivateOptions

    def setup(self) -> None:
        self.locks = AccountLocks(self.server.cluster.bus, "private")
        self.iq("self", QUERY, get=self.get, set=self.set)
        self.iq("bare", QUERY, get=self.refuse, set=self.refuse)
        self.hook("user-deleted", self.forget)

    async def get(self, stanza: Stanza, origin: Session | None) -> Element:
        """§2.3: return the stored element named in the query, or that element empty."""
        assert origin is not None and stanza.payload is not None
        children = list(stanza.payload)
        if not children:
            raise StanzaError("not-acceptable", "name the element to retrieve")
        if len(children) > 1:
            raise StanzaError("bad-request", "retrieve one element per request")
        _check(children[0])
        key = children[0].tag
        data = await self.server.storage.maps.get(origin.host, origin.username, STORE, key)
        stored = parse_frame(data, len(data)) if data is not None else element(key)
        return stanza.result(element(QUERY, children=[stored]))

    async def set(self, stanza: Stanza, origin: Session | None) -> Element:
        """§2.3: store each element, replacing what was stored under its name; all of them or,
        on an error, none (RFC 6120 §8.3)."""
        assert origin is not None and stanza.payload is not None
        children = list(stanza.payload)
        if not children:
            raise StanzaError("not-acceptable", "include the elements to store")
        for child in children:
            _check(child)
        # The last of several elements with one name is what stays, as when they are stored in turn.
        changes = {child.tag: None if _empty(child) else serialize(child).encode() for child in children}
        limit = self.options.max_item_size
        if any(data is not None and len(data) > limit for data in changes.values()):
            raise StanzaError("not-acceptable", f"a stored element may be at most {limit} bytes")
        maps = self.server.storage.maps
        async with self.locks.hold(origin.jid.bare):
            before = await maps.items(origin.host, origin.username, STORE)
            self._check_room(before, {**before, **changes})
            await maps.set_many(origin.host, origin.username, STORE, changes)
        return stanza.result()

    def _check_room(self, before: dict[str, bytes], after: dict[str, bytes | None]) -> None:
        """§8.3.3.18 resource-constraint if the account's data would grow beyond its limits."""
        kept = [data for data in after.values() if data is not None]
        size, old_size = sum(map(len, kept)), sum(map(len, before.values()))
        if size > self.options.max_size and size > old_size:
            raise StanzaError("resource-constraint",
                              f"private storage holds at most {self.options.max_size} bytes per account")
        if len(kept) > self.options.max_items and len(kept) > len(before):
            raise StanzaError("resource-constraint",
                              f"private storage holds at most {self.options.max_items} elements per account")

    async def refuse(self, _stanza: Stanza, _origin: Session | None) -> Element:
        """§2.3: another user's private data is off limits."""
        raise StanzaError("forbidden", "private storage belongs to its account alone")

    async def forget(self, host: str, username: str) -> None:
        """A deleted account's private data goes with it."""
        await self.server.storage.maps.delete_all(host, username, STORE)

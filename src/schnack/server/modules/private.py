"""XEP-0049: Private XML Storage, one stored element per qualified name and account.

Clients keep legacy bookmarks (XEP-0048, ``storage:bookmarks``) and preferences here. Only the
account itself reads or writes its data; anyone else gets forbidden (§2.3, "preferable" to
service-unavailable). A set may carry several elements; a get names exactly one and returns it
empty when nothing is stored.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from xml.etree.ElementTree import Element

from ...xmpp import ns
from ...xmpp.errors import StanzaError
from ...xmpp.parser import parse_frame
from ...xmpp.stanza import Stanza
from ...xmpp.xml import element, qname, serialize, split
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


class PrivateStorage(Module[Any]):
    """Stores private XML for each account (XEP-0049 §2)."""

    name = "private"
    account_features = (ns.PRIVATE,)

    def setup(self) -> None:
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
        """§2.3: store each element, replacing what was stored under its name."""
        assert origin is not None and stanza.payload is not None
        children = list(stanza.payload)
        if not children:
            raise StanzaError("not-acceptable", "include the elements to store")
        for child in children:
            _check(child)
        for child in children:
            data = serialize(child).encode()
            await self.server.storage.maps.set(origin.host, origin.username, STORE, child.tag, data)
        return stanza.result()

    async def refuse(self, _stanza: Stanza, _origin: Session | None) -> Element:
        """§2.3: another user's private data is off limits."""
        raise StanzaError("forbidden", "private storage belongs to its account alone")

    async def forget(self, host: str, username: str) -> None:
        """A deleted account's private data goes with it."""
        await self.server.storage.maps.delete_all(host, username, STORE)

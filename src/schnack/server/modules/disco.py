"""XEP-0030: Service Discovery of the server's domains and accounts, with XEP-0115 caps.

A domain answers disco#info with the identity server/im "schnack" and the features of every
loaded module (``Module.features``); an account's bare JID answers with account/registered and
``Module.account_features``. For now any entity may ask an account; PEP will later restrict what
it shows by subscription. The server's capabilities hash (XEP-0115 §5) is announced as a stream
feature once the client authenticated (XEP-0115 §6.3), and a disco#info query to the caps node
``https://schnack.im#<ver>`` gets the domain's answer.

Events this module fires (with ``hooks.fire_all``), for modules that add items:

``disco-items/host`` (host: str)
    On each disco#items query to domain ``host`` (XEP-0030 §4.1). Every handler returns the
    items it adds as an iterable of ``(jid, name)`` pairs (jid a str or JID, name a str or
    None) or of :class:`~schnack.xmpp.payloads.disco.DiscoItem` for items with a node, or None
    to add nothing. The MUC and upload services list themselves this way.
``disco-items/account`` (owner: JID, requester: JID | None)
    Likewise for disco#items to the bare JID ``owner`` of an account, asked by ``requester``
    (None for the server itself); PEP lists the nodes the requester may see (XEP-0163 §7.1).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any
from xml.etree.ElementTree import Element

from ...xmpp import ns
from ...xmpp.errors import StanzaError
from ...xmpp.jid import JID
from ...xmpp.payloads.caps import Caps, compute_ver
from ...xmpp.payloads.disco import INFO, ITEMS, DiscoInfo, DiscoItem, DiscoItems, Identity
from ...xmpp.stanza import Stanza
from ..module import Module

if TYPE_CHECKING:
    from ..c2s import C2SStream
    from ..sessions import Session

CAPS_NODE = "https://schnack.im"
SERVER_IDENTITY = Identity("server", "im", "schnack")
ACCOUNT_IDENTITY = Identity("account", "registered")


def _items(results: list[Any]) -> tuple[DiscoItem, ...]:
    """Flatten what the ``disco-items/*`` handlers returned into disco items."""
    items: list[DiscoItem] = []
    for result in results:
        if result is None:
            continue
        for entry in result:
            if isinstance(entry, DiscoItem):
                items.append(entry)
            else:
                jid, name = entry
                items.append(DiscoItem(str(jid), name))
    return tuple(items)


class Disco(Module[Any]):
    """Answers disco#info and disco#items for domains and accounts (XEP-0030 §3, §4)."""

    name = "disco"
    features = (ns.DISCO_INFO, ns.DISCO_ITEMS)
    account_features = (ns.DISCO_INFO, ns.DISCO_ITEMS)
    host_info: DiscoInfo
    account_info: DiscoInfo
    caps: Caps

    def setup(self) -> None:
        # Every module is constructed before any setup() runs, so the feature sets are final here.
        modules = self.server.modules.values()
        self.host_info = DiscoInfo(
            identities=(SERVER_IDENTITY,),
            features=tuple(sorted({feature for module in modules for feature in module.features})),
        )
        self.account_info = DiscoInfo(
            identities=(ACCOUNT_IDENTITY, *(i for module in modules for i in module.account_identities)),
            features=tuple(sorted({feature for module in modules for feature in module.account_features})),
        )
        self.caps = Caps(CAPS_NODE, compute_ver(self.host_info))
        self.iq("host", INFO, get=self.info_of_host)
        self.iq("host", ITEMS, get=self.items_of_host)
        for target in ("self", "bare"):
            self.iq(target, INFO, get=self.info_of_account)
            self.iq(target, ITEMS, get=self.items_of_account)
        self.hook("stream-features", self.stream_feature)

    async def stream_feature(self, stream: C2SStream) -> Element | None:
        """XEP-0115 §6.3: the server's caps among the features after authentication."""
        return self.caps.to_xml() if stream.authenticated else None

    async def info_of_host(self, stanza: Stanza, _origin: Session | None) -> Element:
        """XEP-0030 §3.1, and the caps node of XEP-0115 §6.2."""
        node = _node(stanza)
        if node is not None and node != self.caps.disco_node:
            raise StanzaError("item-not-found", f"no node {node!r} here")
        return stanza.result(replace(self.host_info, node=node).to_xml())

    async def items_of_host(self, stanza: Stanza, _origin: Session | None) -> Element:
        """XEP-0030 §4.1: the services other modules list for this domain."""
        node = _node(stanza)
        if node is not None:
            raise StanzaError("item-not-found", f"no node {node!r} here")
        host = stanza.to.domain if stanza.to is not None else self.server.config.domains[0]
        items = _items(await self.server.hooks.fire_all("disco-items/host", host))
        return stanza.result(DiscoItems(items).to_xml())

    async def info_of_account(self, stanza: Stanza, origin: Session | None) -> Element:
        """XEP-0030 §3.1 for an account's bare JID (answered by the server, RFC 6121 §8.5.1)."""
        await self._owner(stanza, origin)
        node = _node(stanza)
        if node is not None:
            raise StanzaError("item-not-found", f"no node {node!r} here")
        return stanza.result(self.account_info.to_xml())

    async def items_of_account(self, stanza: Stanza, origin: Session | None) -> Element:
        """XEP-0030 §4.1 for an account's bare JID."""
        owner = await self._owner(stanza, origin)
        node = _node(stanza)
        if node is not None:
            raise StanzaError("item-not-found", f"no node {node!r} here")
        requester = origin.jid if origin is not None else stanza.from_
        items = _items(await self.server.hooks.fire_all("disco-items/account", owner, requester))
        return stanza.result(DiscoItems(items).to_xml())

    async def _owner(self, stanza: Stanza, origin: Session | None) -> JID:
        """The bare JID asked about; RFC 6121 §8.5.1: no such account, service-unavailable."""
        if stanza.to is None:
            assert origin is not None, "the router sends an IQ without 'to' here only from a session"
            return origin.jid.bare
        owner = stanza.to.bare
        if origin is None or owner != origin.jid.bare:
            assert owner.local is not None
            if await self.server.storage.accounts.get(owner.domain, owner.local) is None:
                raise StanzaError("service-unavailable")
        return owner


def _node(stanza: Stanza) -> str | None:
    payload = stanza.payload
    assert payload is not None
    return payload.get("node")


"""XEP-0292: vCard4 Over XMPP (v0.12), on each account's PEP node ``urn:xmpp:vcard4``.

An account's vCard4 is the item ``current`` of its PEP node ``urn:xmpp:vcard4``. Clients that
speak PEP (Gajim, Movim, Dino) publish and read it there; the node's access model decides who
may read it (PEP's default, presence, unless the owner chose another, XEP-0060 §4.5), and
changes notify the contacts whose caps carry ``urn:xmpp:vcard4+notify`` and the node's
subscribers (§4.2).

The IQ forms of §4.1 are served on top of the node, so clients that use them see the same data:
an IQ get with ``<vcard xmlns='urn:ietf:params:xml:ns:vcard-4.0'/>`` to an account returns the
node's last item as the access model allows (§4.1.1), and an IQ set to one's own account
publishes the ``<vcard/>`` as the item ``current``, with the notifications of a publish
(§4.1.2). A node that IQ publication creates is open: §4 describes a self vCard as publicly
accessible, as vcard-temp always was; a node the owner made keeps its own access model. An account without a vCard4 answers an IQ get with the properties that the mapping of
§11 carries over from its vcard-temp (XEP-0054, public anyway): name, nicknames and photo; an
empty ``<vcard/>`` if there are none (§4.1.1). The other way, a vcard-temp request gets the
name, nicknames and photo of the vCard4 that the stored vcard-temp lacks, if the requester may
read the vCard4 node, so apps that read only vcard-temp show the name set in a vCard4 app; the
account's own vcard-temp gets them only from an open node, as apps that edit a vcard-temp set
back what they read and anyone may read it.
The namespace is announced on the account (§7).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from xml.etree.ElementTree import Element

from ...xmpp import ns
from ...xmpp.errors import StanzaError
from ...xmpp.jid import JID
from ...xmpp.payloads.pubsub import NodeConfig
from ...xmpp.payloads.vcard4 import ITEM, NODE, NS, VCARD, Names
from ...xmpp.stanza import Stanza
from ...xmpp.xml import qname
from ..module import Module
from .pep import Pep
from .pep.store import StoredItem
from .vcard import VCARD as TEMP
from .vcard import VCard

if TYPE_CHECKING:
    from ..sessions import Session

# The vcard-temp properties the mapping carries (XEP-0292 §11).
_MAPPED = tuple(qname(ns.VCARD, name) for name in ("FN", "NICKNAME", "PHOTO"))


class VCard4(Module[Any]):
    """vCard4 on PEP, with the IQ retrieval and publication of XEP-0292 §4.1."""

    name = "vcard4"
    depends = ("pep", "vcard")
    account_features = (NS,)

    def setup(self) -> None:
        self.pep = self.required(Pep)
        self.vcard = self.required(VCard)
        self.iq("self", VCARD, get=self.get_own, set=self.set_own)
        self.iq("bare", VCARD, get=self.get_other, set=self.set_other)
        # Before the vcard module, which answers the vcard-temp requests this completes.
        self.route(f"iq/self/{TEMP}", self.temp_own, priority=10)
        self.route(f"iq/bare/{TEMP}", self.temp_other, priority=10)

    async def get_own(self, stanza: Stanza, origin: Session | None) -> Element:
        """§4.1.1: the account's own vCard4."""
        assert origin is not None
        return stanza.result(await self._load(origin.jid.bare, origin.jid))

    async def get_other(self, stanza: Stanza, origin: Session | None) -> Element:
        """§4.1.1: another account's vCard4, as its node's access model allows."""
        assert stanza.to is not None and stanza.to.local is not None
        requester = origin.jid if origin is not None else stanza.from_
        assert requester is not None, "a routed stanza has a sender"
        owner = stanza.to.bare
        if await self.server.storage.accounts.get(owner.domain, stanza.to.local) is None:
            raise StanzaError("service-unavailable")
        return stanza.result(await self._load(owner, requester))

    async def set_own(self, stanza: Stanza, origin: Session | None) -> Element:
        """§4.1.2: publish the whole vCard4 as the node's item ``current``."""
        assert origin is not None and stanza.payload is not None
        await self.pep.publish_item(origin.jid.bare, NODE, ITEM, stanza.payload, NodeConfig(access_model="open"))
        return stanza.result()

    async def set_other(self, _stanza: Stanza, _origin: Session | None) -> Element:
        """§4.1.2: an account publishes its own vCard4 only."""
        raise StanzaError("forbidden", "you can only change your own vCard")

    async def temp_own(self, stanza: Stanza, origin: Session | None) -> Element | None:
        """XEP-0054 §3.1 with what the account's vCard4 adds if anyone may read it.

        Apps that edit the vcard-temp (Psi, Pidgin) set back the whole of what they read, and
        anyone reads a vcard-temp (§3.3): names from a vCard4 for contacts would become public.
        """
        if stanza.type != "get" or origin is None:
            return None
        return await self._completed(await self.vcard.get_own(stanza, origin), origin.jid.bare, None)

    async def temp_other(self, stanza: Stanza, origin: Session | None) -> Element | None:
        """XEP-0054 §3.3 with what the account's vCard4 adds, as its access model allows."""
        requester = origin.jid if origin is not None else stanza.from_
        if stanza.type != "get" or stanza.to is None or requester is None:
            return None
        return await self._completed(await self.vcard.get_other(stanza, origin), stanza.to.bare, requester)

    async def _completed(self, answer: Element, owner: JID, requester: JID | None) -> Element:
        """``answer`` with the vcard-temp in it completed from the vCard4 that ``requester`` may
        read; from an open one only if ``requester`` is None."""
        temp = answer.find(TEMP)
        if temp is None or all(temp.find(name) is not None for name in _MAPPED):
            return answer
        try:
            if requester is None:
                item = await self._public_item(owner)
            else:
                item = await self.pep.readable_item(owner, NODE, None, requester)
        except StanzaError:
            return answer
        if item is not None and item.payload.tag == VCARD:
            Names.from_vcard4(item.payload).fill_vcard_temp(temp)
        return answer

    async def _public_item(self, owner: JID) -> StoredItem | None:
        """The vCard4 of ``owner`` if its node is open (XEP-0060 §4.5)."""
        node = await self.pep.store.node(owner, NODE)
        if node is None or node.config.access_model != "open":
            return None
        return await self.pep.store.last(owner, node)

    async def _load(self, owner: JID, requester: JID) -> Element:
        item = await self.pep.readable_item(owner, NODE, None, requester)
        if item is not None and item.payload.tag == VCARD:
            return item.payload
        assert owner.local is not None
        return Names.from_vcard_temp(await self.vcard.load(owner.domain, owner.local)).to_vcard4()

"""XEP-0402: PEP Native Bookmarks, kept in step with XEP-0048 bookmarks (XEP-0402 §5, XEP-0411).

Native bookmarks are the items of the account's PEP node ``urn:xmpp:bookmarks:1``, one per room
(whitelist, ``max_items`` max, never sent on presence). Clients that still speak XEP-0048 keep a
``<storage xmlns='storage:bookmarks'/>`` either in private XML storage (XEP-0049) or in the PEP
node ``storage:bookmarks`` (XEP-0411). Both PEP nodes are private (:meth:`Pep.keep_private`):
whitelist even when a client publishes without publish-options, and never opened to others. Whatever a client writes to one of the three is carried
over to the others, with the PEP notifications each write causes ("#compat" and "#compat-pep",
and XEP-0411's conversion feature, on the account):

- a legacy write publishes each new or changed room as a native item and retracts the rooms it
  no longer lists; the other legacy store gets the same storage element;
- a native publish, retract, purge or node deletion rewrites both legacy stores from the native
  items, and so does a configuration of the native node, which may drop items (a lower
  ``max_items``, ``persist_items`` off). Web page bookmarks (``<url/>``) have no native form; they stay in the legacy storage.

The legacy PEP node is created by the first legacy write or retrieval, so that accounts whose
clients all speak XEP-0402 get no notifications of it. The handlers run before the PEP and
private storage modules' (priority 10), let those modules store the write as always, and then
convert.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any
from xml.etree.ElementTree import Element

from ...xmpp.errors import StanzaError
from ...xmpp.jid import JID
from ...xmpp.parser import parse_frame
from ...xmpp.payloads.bookmarks import (
    COMPAT,
    COMPAT_PEP,
    CONVERSION,
    LEGACY,
    NS,
    STORAGE,
    BookmarkError,
    Conference,
    Storage,
    Url,
)
from ...xmpp.payloads.pubsub import (
    Configure,
    Delete,
    EventItems,
    Item,
    Items,
    NodeConfig,
    OwnerRequest,
    Publish,
    PubSubError,
    Purge,
    Request,
    Retract,
    parse_request,
    pubsub_error,
)
from ...xmpp.stanza import Stanza
from ...xmpp.xml import serialize
from ..module import Module
from .pep import OWNER_REQUEST, REQUEST, Pep
from .pep.store import Node, StoredItem
from .private import QUERY, STORE, PrivateStorage

if TYPE_CHECKING:
    from ..sessions import Session

# XEP-0048 §3, XEP-0411: the legacy node holds one item, the whole storage element.
LEGACY_ITEM = "current"
LEGACY_CONFIG = NodeConfig(access_model="whitelist")


def _invalid(err: BookmarkError) -> StanzaError:
    return pubsub_error("bad-request", "invalid-payload", str(err))


class Bookmarks(Module[Any]):
    """Native bookmarks with both legacy forms kept in step (XEP-0402 §5, XEP-0411)."""

    name = "bookmarks"
    depends = ("pep", "private")
    account_features = (COMPAT, COMPAT_PEP, CONVERSION)

    def setup(self) -> None:
        self.pep = self.required(Pep)
        self.private = self.required(PrivateStorage)
        self.pep.keep_private(NS, LEGACY)
        # XEP-0402 §4: the options clients give as publish-options, so that their publishes match.
        self.native_config = NodeConfig(
            access_model="whitelist", max_items=self.pep.options.max_items, send_last_published_item="never"
        )
        self.route(f"iq/self/{QUERY}", self.private_write, priority=10)
        self.route(f"iq/self/{REQUEST}", self.pep_request, priority=10)
        self.route(f"iq/self/{OWNER_REQUEST}", self.pep_owner_write, priority=10)

    async def private_write(self, stanza: Stanza, origin: Session | None) -> Element | None:
        """XEP-0402 §5, XEP-0411: legacy bookmarks stored in private XML storage become native items
        and the legacy PEP node's item, with the notifications of both nodes."""
        if stanza.type != "set" or stanza.payload is None or origin is None:
            return None
        written = stanza.payload.find(STORAGE)
        if written is None:
            return None
        try:
            storage = Storage.from_xml(written)
        except BookmarkError as err:
            raise StanzaError("not-acceptable", str(err)) from None
        answer = await self.private.set(stanza, origin)
        await self._from_legacy(origin.jid.bare, storage, create=True)
        return answer

    async def pep_request(self, stanza: Stanza, origin: Session | None) -> Element | None:
        """XEP-0411 legacy publishes become native items; native publishes and retracts
        update the legacy forms (XEP-0402 §5).

        The legacy PEP node exists once a client uses a legacy form, so that accounts whose
        clients all speak XEP-0402 are not sent its notifications; a first retrieval creates it.
        """
        request = self._request(stanza, origin)
        if origin is None or request is None:
            return None
        owner = origin.jid.bare
        if isinstance(request, Items) and request.node == LEGACY:
            if (
                await self.pep.store.node(owner, LEGACY) is None
                and await self.pep.store.node(owner, NS) is not None
            ):
                await self._to_legacy(owner, create=True)
            return None
        if (
            stanza.type != "set"
            or not isinstance(request, Publish | Retract)
            or request.node not in (NS, LEGACY)
        ):
            return None
        storage = None
        if isinstance(request, Publish) and len(request.items) == 1 and request.items[0].payload is not None:
            (item,) = request.items
            assert item.payload is not None
            try:
                if request.node == NS:
                    Conference.from_native(item.id, item.payload)
                else:
                    storage = Storage.from_xml(item.payload)
            except BookmarkError as err:
                raise _invalid(err) from None
        answer = await self.pep.own_set(stanza, origin)
        if storage is not None:
            await self._from_legacy(owner, storage)
        elif request.node == NS:
            await self._to_legacy(owner)
        return answer

    async def pep_owner_write(self, stanza: Stanza, origin: Session | None) -> Element | None:
        """A purge or deletion of the native node empties the legacy forms too, and a
        configuration that drops items drops them there (XEP-0402 §5); otherwise a legacy
        client writing back what it read would bring them back."""
        request = self._request(stanza, origin)
        if (
            origin is None
            or stanza.type != "set"
            or not isinstance(request, Purge | Delete | Configure)
            or request.node != NS
        ):
            return None
        answer = await self.pep.owner_set(stanza, origin)
        await self._to_legacy(origin.jid.bare)
        return answer

    @staticmethod
    def _request(stanza: Stanza, origin: Session | None) -> Request | OwnerRequest | None:
        """The pubsub request from the account itself; malformed ones are PEP's to answer."""
        if stanza.payload is None or origin is None:
            return None
        try:
            return parse_request(stanza.payload)
        except PubSubError:
            return None

    async def _from_legacy(self, owner: JID, storage: Storage, create: bool = False) -> None:
        """Publish the rooms of ``storage`` that are new or changed and retract the ones it lacks;
        then rewrite the legacy forms (``create`` as for :meth:`_to_legacy`)."""
        store, delivery = self.pep.store, self.pep.delivery
        events: list[EventItems] = []
        async with self.pep.locks.hold(owner):
            node = await store.node(owner, NS) or Node(NS, self.native_config)
            existing = {item.id: item for item in await store.items(owner, NS)} if node.count else {}
            wanted = {str(conference.jid): conference for conference in storage.conferences}
            for room, conference in wanted.items():
                known = _native(existing[room]) if room in existing else None
                if known == conference:
                    continue
                # The legacy form has no extensions (§5): those a client stored natively stay.
                extensions = known.extensions if known is not None else ()
                payload = replace(conference, extensions=extensions).to_native()
                node = await store.publish(owner, node, room, payload)
                events.append(EventItems(NS, (Item(room, payload),)))
            gone = tuple(room for room in existing if room not in wanted)
            if gone:
                node = await store.retract(owner, node, gone)
                events.extend(EventItems(NS, retracted=(room,)) for room in gone)
            recipients = await delivery.recipients(owner, node)
            for event in events:
                await delivery.send(owner, recipients, event)
        await self._to_legacy(owner, storage.urls, create)

    async def _to_legacy(self, owner: JID, urls: tuple[Url, ...] | None = None, create: bool = False) -> None:
        """Rewrite both legacy forms from the native items, keeping the legacy ``<url/>`` bookmarks;
        the legacy PEP node only if it exists or ``create`` is set.

        Under the private storage module's lock for the account, which its own writes hold: a
        legacy write cannot land between the read and the write here, and of two rewrites the
        one that read the native items last writes last (both nodes of a cluster hold it).
        """
        assert owner.local is not None
        maps, store = self.server.storage.maps, self.pep.store
        async with self.private.locks.hold(owner):
            data = await maps.get(owner.domain, owner.local, STORE, STORAGE)
            if urls is None:
                urls = _urls(data)
            conferences = [_native(item) for item in await store.items(owner, NS)]
            legacy = Storage(tuple(c for c in conferences if c is not None), urls).to_xml()
            text = serialize(legacy)
            if data is None or data.decode() != text:
                await maps.set(owner.domain, owner.local, STORE, STORAGE, text.encode())
            async with self.pep.locks.hold(owner):
                node = await store.node(owner, LEGACY)
                if node is None:
                    if not create:
                        return
                    node = Node(LEGACY, LEGACY_CONFIG)
                last = await store.last(owner, node)
                if last is not None and serialize(last.payload) == text:
                    return
                node = await store.publish(owner, node, LEGACY_ITEM, legacy)
                event = EventItems(LEGACY, (Item(LEGACY_ITEM, legacy),))
                await self.pep.delivery.send(owner, await self.pep.delivery.recipients(owner, node), event)


def _native(item: StoredItem) -> Conference | None:
    """The bookmark a native item holds; None for an item stored before this module checked them."""
    try:
        return Conference.from_native(item.id, item.payload)
    except BookmarkError:
        return None


def _urls(data: bytes | None) -> tuple[Url, ...]:
    """The web page bookmarks in the private storage's legacy element, if it holds a valid one."""
    if data is None:
        return ()
    try:
        return Storage.from_xml(parse_frame(data, len(data))).urls
    except BookmarkError:
        return ()

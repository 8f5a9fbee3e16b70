"""XEP-0163: Personal Eventing Protocol, on the subset of XEP-0060 Publish-Subscribe that PEP needs.

Every account is a pubsub service at its bare JID (XEP-0163 §2.1), with identity pubsub/pep. This
is what OMEMO device lists and bundles (``eu.siacs.conversations.axolotl.*`` and
``urn:xmpp:omemo:2:*``), avatars (XEP-0084), nicknames (XEP-0172) and bookmarks (XEP-0402) use.

- Publishing to a node that does not exist creates it (XEP-0060 §7.1.4, XEP-0163 §3); the
  publish-options of §7.1.5 configure a new node and are preconditions for an existing one: an
  option that does not match gets conflict with precondition-not-met, and the client then
  reconfigures the node (§8.2) and publishes again. Nodes keep at most ``max_items`` items, the
  oldest going first; "max" means the module's ``max_items`` option. All of an account's items
  take at most ``max_bytes`` (10 MiB unless configured): a publish beyond it is refused with
  resource-constraint (RFC 6120 §8.3.3.18), as private XML storage refuses its writes; OMEMO
  keys, avatars and bookmarks of an account take far less.
- Access models (XEP-0060 §4.5): open (anyone), presence (the default: contacts subscribed to the
  owner's presence), roster (contacts in the allowed roster groups) and whitelist (the owner
  alone). Only the owner publishes, retracts, purges, deletes and configures. Nodes another
  module declares private (:meth:`Pep.keep_private`: bookmarks) are whitelist from creation, and
  no publish-options, creation form or configuration gives them another access model.
- Notifications (XEP-0163 §4.3) are headline messages from the owner's bare JID to the owner's
  available resources and to the available resources of contacts subscribed to the owner's
  presence whom the access model admits, filtered by each resource's "+notify" features
  (:mod:`.interests`) and by blocking (:mod:`.delivery`); contacts at other servers get them
  at their bare JID. The last published item of each node goes to a resource when it sends
  initial presence (``send_last_published_item`` on_sub_and_presence, XEP-0060 §6.1.7), for the
  account's own nodes and those of each contact it is subscribed to, to a contact's resource at
  another server when its first available presence reaches the account, and to the available
  resources of a user whose subscription a contact approves (on_sub), or at the bare JID of a
  contact at another server whose subscription the user approves.
- Explicit subscriptions (XEP-0060 §6.1), beside the ones presence implies: anyone the access
  model admits subscribes a bare or full JID of their own (§6.1.3 errors otherwise) and gets
  the node's notifications whatever its +notify, and its last item at once (on_sub, §6.1.7)
  and, for on_sub_and_presence, when a resource it reaches comes online (at another server:
  when its first available presence reaches the account);
  unsubscribes (§6.2); lists their subscriptions on an account (§5.6). The owner lists and changes a node's subscribers (§8.8). Subscriptions persist
  (:mod:`.subscriptions`); they end with the node, with either account, and when the access
  model stops admitting the subscriber (checked whenever the subscriptions are read, and for
  all of a node's subscribers when its configuration changes). Subscription options (§6.3) and
  affiliations (§8.9) are not offered: a whitelist node belongs to its owner alone.
- Retrieval of all items, the last N, or items by id (§6.5); a missing node is item-not-found
  with the legacy code 404. disco#items of an account lists the nodes the asker may see; a
  disco#info or disco#items query for one node describes it (§5.3, §5.5).

Nodes and items live in the map store (:mod:`.store`) and go with the account. Other modules
publish on an account's behalf with :meth:`Pep.publish_item`, read with
:meth:`Pep.readable_item`, and hear of every publish through the event ``pep/published``
(owner, node, item id, payload), of every configuration change through ``pep/configured``
(owner, node), and of items retracted or purged and nodes deleted through ``pep/removed``
(owner, node).
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING
from xml.etree.ElementTree import Element

from ....xmpp.errors import StanzaError
from ....xmpp.jid import JID, JIDError
from ....xmpp.payloads.dataforms import DataForm, Field
from ....xmpp.payloads.disco import INFO, ITEMS, DiscoInfo, DiscoItem, DiscoItems, Identity
from ....xmpp.payloads.pubsub import (
    META_DATA,
    OWNER,
    PUBLISH_OPTIONS,
    PUBSUB,
    Configure,
    Create,
    Default,
    Delete,
    EventDelete,
    EventItems,
    EventPurge,
    Item,
    Items,
    NodeConfig,
    OwnerRequest,
    OwnerSubscriptions,
    Publish,
    PubSubError,
    Purge,
    Request,
    Retract,
    Subscribe,
    Subscription,
    Subscriptions,
    Unsubscribe,
    parse_request,
    pubsub_error,
)
from ....xmpp.stanza import Stanza
from ....xmpp.xml import qname
from ...background import Background
from ...config import bounded
from ...locks import AccountLocks
from ...module import Module
from ..roster import has_from
from .access import Rosters, denial
from .delivery import ON_SUBSCRIPTION, Delivery, admits, reaches
from .interests import Interests, caps_of
from .store import Node, NodeStore, StoredItem
from .subscriptions import Subscriber, SubscriptionStore

if TYPE_CHECKING:
    from ...sessions import Session

log = logging.getLogger(__name__)

REQUEST = qname(PUBSUB, "pubsub")
PUBLISHED = "pep/published"
CONFIGURED = "pep/configured"
REMOVED = "pep/removed"
OWNER_REQUEST = qname(OWNER, "pubsub")
IDENTITY = Identity("pubsub", "pep")
# XEP-0060 §10: what this service does, as disco features.
FEATURES = (PUBSUB, *(f"{PUBSUB}#{name}" for name in (
    "access-open", "access-presence", "access-roster", "access-whitelist", "auto-create", "config-node",
    "create-and-configure", "create-nodes", "delete-items", "delete-nodes", "filtered-notifications",
    "item-ids", "last-published", "manage-subscriptions", "persistent-items", "presence-notifications",
    "publish", "publish-options", "purge-nodes", "retract-items", "retrieve-default", "retrieve-items",
    "retrieve-subscriptions", "subscribe",
)))  # fmt: skip


@dataclass(frozen=True)
class PepOptions:
    """Limits of each account's PEP service."""

    max_items: int = bounded(1_000, min=1, max=100_000, help="items per node; what pubsub#max_items 'max' means")
    max_nodes: int = bounded(1_000, min=1, max=100_000, help="nodes per account")
    max_bytes: int = bounded(10 * 1024 * 1024, min=64 * 1024, max=1024 * 1024 * 1024,
                             help="bytes of all of an account's stored items")
    caps_timeout: float = bounded(30.0, min=1, max=600, help="seconds to wait for a client's disco#info answer")


@contextlib.contextmanager
def _as_stanza_errors() -> Iterator[None]:
    try:
        yield
    except PubSubError as err:
        raise err.to_stanza_error() from None


# What a private node's configuration starts from (see :meth:`Pep.keep_private`).
_WHITELIST = NodeConfig(access_model="whitelist")


def _not_found(what: str) -> StanzaError:
    return pubsub_error("item-not-found", None, what)


def _precondition_not_met(text: str | None) -> StanzaError:
    """XEP-0060 §7.1.5: the publish-options do not match the node (or cannot be met)."""
    return pubsub_error("conflict", "precondition-not-met", text)


class Pep(Module[PepOptions]):
    """A pubsub service on each account's bare JID (XEP-0163, XEP-0060)."""

    name = "pep"
    # profanity asks for open OMEMO nodes only when the domain lists publish-options.
    features = (f"{PUBSUB}#publish-options",)
    account_features = FEATURES
    account_identities = (IDENTITY,)
    Options = PepOptions

    def setup(self) -> None:
        self.rosters = Rosters(self.server)
        self.store = NodeStore(self.server, self.options.max_bytes)
        self.interests = Interests(self.options.caps_timeout)
        self.locks = AccountLocks(self.server.cluster.bus, "pep")
        self.subscriptions = SubscriptionStore(self.server)
        self.delivery = Delivery(self.server, self.rosters, self.store, self.interests, self.subscriptions)
        self._tasks = Background(log, "sending PEP items failed")
        self.iq("self", REQUEST, get=self.own_get, set=self.own_set)
        self.iq("bare", REQUEST, get=self.foreign_get, set=self.foreign_set)
        self.iq("self", OWNER_REQUEST, get=self.owner_get, set=self.owner_set)
        self.iq("bare", OWNER_REQUEST, get=self.refuse, set=self.refuse)
        # Before the disco module, which answers for the account itself (queries without a node).
        for target in ("self", "bare"):
            self.iq(target, INFO, get=self.node_info, priority=10)
            self.iq(target, ITEMS, get=self.node_items, priority=10)
        self.route("iq/host", self.interests.answer)
        self.route("pre-presence/self", self.presence_update, priority=10)
        self.route("presence/bare", self.subscription_approved, priority=10)
        if self.server.config.s2s.enabled:
            self.route("presence/remote", self.approved_abroad, priority=10)
        for target in ("bare", "full"):
            self.route(f"presence/{target}", self.presence_from_abroad, priority=10)
        self.hook("presence-initial", self.presence_initial)
        self.hook("disco-items/account", self.visible_nodes)
        self.hook("user-deleting", self.unsubscribe_all)
        self.hook("user-deleted", self.forget)

    async def stop(self) -> None:
        self._tasks.cancel()
        await self.settled()
        await self.interests.stop()

    async def settled(self) -> None:
        """Wait until the last items being sent in the background (on presence) have gone out."""
        await self._tasks.wait()

    def keep_private(self, *names: str) -> None:
        """Nodes named ``names`` are for their owner alone (whitelist): created so when the client
        asks for no access model, and refused any other. Bookmarks need it (XEP-0402 §3, XEP-0048
        §3.2): a client that publishes them without publish-options would otherwise get PEP's
        default, presence, and show its rooms to every contact. A node stored before with
        another access model is read as whitelist."""
        self.store.private.update(names)

    def _defaults(self, name: str) -> NodeConfig:
        """The configuration a new node ``name`` starts from (§8.3, or whitelist if it is private)."""
        return _WHITELIST if name in self.store.private else NodeConfig()

    def _check_private(self, name: str, config: NodeConfig) -> None:
        if name in self.store.private and config.access_model != _WHITELIST.access_model:
            raise PubSubError("not-acceptable", None, f"the node {name!r} stays readable by its owner alone")

    # IQ entry points ----------------------------------------------------------------------------

    async def own_get(self, stanza: Stanza, origin: Session | None) -> Element:
        """§6.5 items and §5.6 subscriptions, on the owner's own service."""
        assert origin is not None
        return await self._get(stanza, origin.jid.bare, origin.jid)

    async def foreign_get(self, stanza: Stanza, origin: Session | None) -> Element:
        """§6.5 items, as the access model allows, and §5.6 one's subscriptions, on an account's service."""
        assert stanza.to is not None
        requester = _requester(stanza, origin)
        assert requester is not None, "a routed stanza has a sender"
        return await self._get(stanza, stanza.to.bare, requester)

    async def _get(self, stanza: Stanza, owner: JID, requester: JID) -> Element:
        with _as_stanza_errors():
            request = _request(stanza)
            if isinstance(request, Items):
                return stanza.result(await self._items(owner, request, requester))
            if isinstance(request, Subscriptions):
                return stanza.result(await self._subscriptions_of(owner, request, requester))
            raise StanzaError("bad-request", "only items and subscriptions are retrieved with a get")

    async def own_set(self, stanza: Stanza, origin: Session | None) -> Element:
        """§7.1 publish, §7.2 retract, §8.1 create, §6.1 subscribe, §6.2 unsubscribe, on the owner's own service."""
        assert origin is not None
        owner = origin.jid.bare
        with _as_stanza_errors():
            request = _request(stanza)
            if isinstance(request, Publish):
                return stanza.result(await self._publish(owner, request))
            if isinstance(request, Subscribe):
                return stanza.result(await self._subscribe(owner, request, origin.jid))
            if isinstance(request, Retract):
                await self._retract(owner, request)
                await self._fire(REMOVED, owner, request.node)
            elif isinstance(request, Create):
                await self._create(owner, request)
            elif isinstance(request, Unsubscribe):
                await self._unsubscribe(owner, request, origin.jid)
            else:
                raise StanzaError("bad-request", "items and subscriptions are retrieved with a get")
            return stanza.result()

    async def foreign_set(self, stanza: Stanza, origin: Session | None) -> Element:
        """§6.1 subscribe and §6.2 unsubscribe; everything else is the owner's (§7.1.3.1, §8.2.3)."""
        assert stanza.to is not None
        requester = _requester(stanza, origin)
        assert requester is not None, "a routed stanza has a sender"
        owner = stanza.to.bare
        with _as_stanza_errors():
            request = _request(stanza)
            if isinstance(request, Subscribe):
                return stanza.result(await self._subscribe(owner, request, requester))
            if isinstance(request, Unsubscribe):
                await self._unsubscribe(owner, request, requester)
                return stanza.result()
            raise StanzaError("forbidden", "only the account itself manages its nodes")

    async def owner_get(self, stanza: Stanza, origin: Session | None) -> Element:
        """§8.2.1 a node's configuration form, §8.3 the default one, §8.8.1 its subscribers."""
        assert origin is not None
        with _as_stanza_errors():
            request = _request(stanza)
            if isinstance(request, OwnerSubscriptions):
                return stanza.result(await self._subscribers(origin.jid.bare, request.node))
            if isinstance(request, Configure):
                node = await self._node(origin.jid.bare, request.node)
                return stanza.result(Configure(node.name, node.config.to_form()).to_xml())
            if isinstance(request, Default):
                return stanza.result(Default(NodeConfig().to_form()).to_xml())
            raise StanzaError("bad-request", "this request is a set")

    async def owner_set(self, stanza: Stanza, origin: Session | None) -> Element:
        """§8.2.5 configure, §8.4 delete, §8.5 purge a node, §8.8.2 change its subscriptions."""
        assert origin is not None
        owner = origin.jid.bare
        with _as_stanza_errors():
            request = _request(stanza)
            if isinstance(request, Configure):
                await self._configure(owner, request)
            elif isinstance(request, Delete):
                await self._delete(owner, request.node)
                await self._fire(REMOVED, owner, request.node)
            elif isinstance(request, Purge):
                await self._purge(owner, request.node)
                await self._fire(REMOVED, owner, request.node)
            elif isinstance(request, OwnerSubscriptions):
                await self._change_subscriptions(owner, request)
            else:
                raise StanzaError("bad-request", "this request is a get")
            return stanza.result()

    async def refuse(self, _stanza: Stanza, _origin: Session | None) -> Element:
        """§7.1.3.1, §8.2.3: only the owner changes an account's nodes."""
        raise StanzaError("forbidden", "only the account itself manages its nodes")

    # Operations -----------------------------------------------------------------------------------

    async def _node(self, owner: JID, name: str) -> Node:
        node = await self.store.node(owner, name)
        if node is None:
            raise _not_found(f"no node {name!r}")
        return node

    async def _items(self, owner: JID, request: Items, requester: JID | None) -> Element:
        """§6.5.2 all items, §6.5.7 the most recent ones, §6.5.8 items by id."""
        node = await self.store.node(owner, request.node)
        if node is None:
            await self._require_account(owner, requester)
            raise _not_found(f"no node {request.node!r}")
        if requester is not None and requester.bare != owner:
            refusal = denial(node.config, await self.rosters.item(owner, requester.bare))
            if refusal is not None:
                raise refusal
        if request.ids:
            found = [await self.store.item(owner, node.name, item_id) for item_id in request.ids]
            items = [item for item in found if item is not None]
            if not items:
                raise _not_found("no such item")
        else:
            items = await self.store.items(owner, node.name) if node.count else []
            if request.max_items is not None:
                items = items[-request.max_items:]
        return Items(node.name, tuple(Item(item.id, item.payload) for item in items)).to_xml()

    async def _require_account(self, owner: JID, requester: JID | None) -> None:
        """RFC 6121 §8.5.1: an account that does not exist gets service-unavailable."""
        if requester is not None and requester.bare == owner:
            return
        assert owner.local is not None
        if await self.server.storage.accounts.get(owner.domain, owner.local) is None:
            raise StanzaError("service-unavailable")

    async def _publish(self, owner: JID, request: Publish) -> Element:
        """§7.1 publish one item, creating the node with the publish-options (§7.1.4, §7.1.5)."""
        if not request.items:
            raise pubsub_error("bad-request", "item-required", "publish an item")
        if len(request.items) > 1:
            raise pubsub_error("bad-request", "invalid-payload", "publish one item at a time")
        (item,) = request.items
        if item.payload is None:
            raise pubsub_error("bad-request", "payload-required", "the item needs a payload")
        item_id = item.id or secrets.token_hex(12)
        async with self.locks.hold(owner):
            node = await self.store.node(owner, request.node)
            if node is None:
                await self._check_room(owner)
                config = self._defaults(request.node)
                if request.options is not None:
                    try:
                        config = config.with_form(request.options, self.options.max_items, PUBLISH_OPTIONS)
                        self._check_private(request.node, config)
                    except PubSubError as err:
                        raise _precondition_not_met(err.text) from None
                node = Node(request.node, config)
            elif request.options is not None:
                self._check_preconditions(node.config, request.options)
            node = await self._store_and_notify(owner, node, item_id, item.payload)
        await self._announce(owner, node.name, item_id, item.payload)
        return Publish(node.name, (Item(item_id),)).to_xml()

    async def publish_item(self, owner: JID, name: str, item_id: str, payload: Element,
                           config: NodeConfig | None = None) -> None:
        """Publish on the account's behalf (conversions between formats), with the notifications
        of a publish by the account; a missing node is created with ``config`` (PEP's defaults
        if None), an existing one keeps its own."""
        async with self.locks.hold(owner):
            node = await self.store.node(owner, name)
            if node is None:
                await self._check_room(owner)
                node = Node(name, config or self._defaults(name))
            await self._store_and_notify(owner, node, item_id, payload)
        await self._announce(owner, name, item_id, payload)

    async def readable_item(self, owner: JID, name: str, item_id: str | None, requester: JID) -> StoredItem | None:
        """Item ``item_id`` of a node (its last item if None), if ``requester`` may see the node
        (the §6.5.9 errors otherwise); None if there is no such node or item."""
        node = await self.store.node(owner, name)
        if node is None:
            return None
        if requester.bare != owner:
            refusal = denial(node.config, await self.rosters.item(owner, requester.bare))
            if refusal is not None:
                raise refusal
        if item_id is None:
            return await self.store.last(owner, node)
        return await self.store.item(owner, name, item_id)

    async def _store_and_notify(self, owner: JID, node: Node, item_id: str, payload: Element) -> Node:
        """§7.1.2: store the item and notify; the caller holds the owner's lock."""
        node = await self.store.publish(owner, node, item_id, payload)
        event = EventItems(node.name, (Item(item_id, payload),))
        await self.delivery.send(owner, await self.delivery.recipients(owner, node), event)
        return node

    async def _announce(self, owner: JID, name: str, item_id: str, payload: Element) -> None:
        """Event ``pep/published`` (owner, node name, item id, payload), after the lock is released
        so that a listener may publish in turn."""
        if self.server.hooks.has(PUBLISHED):
            await self.server.hooks.fire_all(PUBLISHED, owner, name, item_id, payload)

    async def _fire(self, event: str, owner: JID, name: str) -> None:
        """Event ``event`` (owner, node name) of a change to a node: ``pep/configured`` or
        ``pep/removed``; after the lock is released, as for ``pep/published``."""
        if self.server.hooks.has(event):
            await self.server.hooks.fire_all(event, owner, name)

    def _check_preconditions(self, config: NodeConfig, options: DataForm) -> None:
        """§7.1.5: every publish option must equal the existing node's configuration."""
        try:
            wanted = config.with_form(options, self.options.max_items, PUBLISH_OPTIONS)
        except PubSubError as err:
            raise _precondition_not_met(err.text) from None
        if wanted != config:
            raise _precondition_not_met("the node's configuration differs from the publish-options")

    async def _check_room(self, owner: JID) -> None:
        if len(await self.store.nodes(owner)) >= self.options.max_nodes:
            raise StanzaError("not-allowed", f"an account may have at most {self.options.max_nodes} nodes")

    async def _retract(self, owner: JID, request: Retract) -> None:
        """§7.2: delete items; notify when asked (§7.2.2.1) or configured (pubsub#notify_retract)."""
        async with self.locks.hold(owner):
            node = await self._node(owner, request.node)
            for item_id in request.ids:
                if await self.store.item(owner, node.name, item_id) is None:
                    raise _not_found(f"no item {item_id!r}")
            node = await self.store.retract(owner, node, request.ids)
            if request.notify or node.config.notify_retract:
                event = EventItems(node.name, retracted=request.ids)
                await self.delivery.send(owner, await self.delivery.recipients(owner, node), event)

    async def _create(self, owner: JID, request: Create) -> None:
        """§8.1.2, §8.1.3: create a node, configured by the form if one came along."""
        if request.node is None:
            raise pubsub_error("not-acceptable", "nodeid-required", "PEP nodes need a name")
        config = self._defaults(request.node)
        if request.config is not None:
            config = config.with_form(request.config, self.options.max_items)
        self._check_private(request.node, config)
        async with self.locks.hold(owner):
            if await self.store.node(owner, request.node) is not None:
                raise StanzaError("conflict", f"the node {request.node!r} exists")
            await self._check_room(owner)
            await self.store.save(owner, Node(request.node, config))

    async def _configure(self, owner: JID, request: Configure) -> None:
        """§8.2.4, §8.2.5: apply a submitted form; a cancelled one changes nothing."""
        if request.form is None:
            raise pubsub_error("bad-request", None, "submit the configuration form")
        async with self.locks.hold(owner):
            node = await self._node(owner, request.node)
            if request.form.type == "cancel":
                return
            node = replace(node, config=node.config.with_form(request.form, self.options.max_items))
            self._check_private(node.name, node.config)
            if not node.config.persist_items and node.count:
                node = await self.store.purge(owner, node)
            elif node.count > node.config.max_items:
                node = await self.store.trim(owner, node)
            await self.store.save(owner, node)
            await self._prune(owner, node)
        await self._fire(CONFIGURED, owner, node.name)

    async def _delete(self, owner: JID, name: str) -> None:
        """§8.4: delete a node and its items, telling who could see it (pubsub#notify_delete)."""
        async with self.locks.hold(owner):
            node = await self._node(owner, name)
            recipients = await self.delivery.recipients(owner, node) if node.config.notify_delete else []
            await self.store.delete(owner, name)
            await self.subscriptions.drop_node(owner, name)
            await self.delivery.send(owner, recipients, EventDelete(name))

    async def _purge(self, owner: JID, name: str) -> None:
        """§8.5: delete every item of a node, telling who could see them (pubsub#notify_retract)."""
        async with self.locks.hold(owner):
            node = await self.store.purge(owner, await self._node(owner, name))
            if node.config.notify_retract:
                await self.delivery.send(owner, await self.delivery.recipients(owner, node), EventPurge(name))

    # Subscriptions ------------------------------------------------------------------------------

    async def _subscribe(self, owner: JID, request: Subscribe, requester: JID) -> Element:
        """§6.1: subscribe the requester's own address if the access model admits it (§6.1.3).

        An address already subscribed keeps its subscription (§6.1.6: one per JID here). The
        node's last item follows the answer (§6.1.7).
        """
        jid = _jid(request.jid)
        if jid.bare != requester.bare:
            raise pubsub_error("bad-request", "invalid-jid", "subscribe an address of your own")  # §6.1.3.1
        async with self.locks.hold(owner):
            node = await self.store.node(owner, request.node)
            if node is None:
                await self._require_account(owner, requester)
                raise _not_found(f"no node {request.node!r}")  # §6.1.3
            if requester.bare != owner:
                refusal = denial(node.config, await self.rosters.item(owner, requester.bare))
                if refusal is not None:
                    raise refusal  # §6.1.3.2 - §6.1.3.4
            subscriber, new = await self.subscriptions.add(owner, node.name, jid)
        if new and node.last is not None and node.config.send_last_published_item in ON_SUBSCRIPTION:
            # Spawned: it runs once the handler returned and the answer went out.
            self._tasks.spawn(self.delivery.send_last_to(owner, node, jid))
        return Subscription(node.name, str(jid), "subscribed", subscriber.subid).result()

    async def _unsubscribe(self, owner: JID, request: Unsubscribe, requester: JID) -> None:
        """§6.2: end a subscription of the requester's own (§6.2.3 errors)."""
        jid = _jid(request.jid)
        if jid.bare != requester.bare:
            raise StanzaError("forbidden", "you can end only your own subscriptions")  # §6.2.3.3
        async with self.locks.hold(owner):
            node = await self.store.node(owner, request.node)
            if node is None:
                await self._require_account(owner, requester)
                raise _not_found(f"no node {request.node!r}")  # §6.2.3.4
            current = [s for s in await self.subscriptions.of(owner, node.name) if s.jid == jid]
            if not current:
                raise pubsub_error("unexpected-request", "not-subscribed", f"{jid} is not subscribed")  # §6.2.3.2
            if request.subid is not None and current[0].subid != request.subid:
                raise pubsub_error("not-acceptable", "invalid-subid", "no subscription with that subid")  # §6.2.3.5
            await self.subscriptions.remove(owner, node.name, {jid})

    async def _subscriptions_of(self, owner: JID, request: Subscriptions, requester: JID) -> Element:
        """§5.6: the requester's subscriptions to the nodes of ``owner`` (to one node if named)."""
        await self._require_account(owner, requester)
        async with self.locks.hold(owner):
            nodes = await self.store.nodes(owner)
            found = []
            for name, subscribers in sorted((await self.subscriptions.all(owner)).items()):
                node = nodes.get(name)
                if node is None or request.node not in (None, name):
                    continue
                kept = await self._prune(owner, node, subscribers)
                found += [Subscription(name, str(s.jid), "subscribed", s.subid)
                          for s in kept if s.jid.bare == requester.bare]
        return Subscriptions(request.node, tuple(found)).to_xml()

    async def _subscribers(self, owner: JID, name: str) -> Element:
        """§8.8.1: the subscribers of a node, for its owner."""
        async with self.locks.hold(owner):
            node = await self._node(owner, name)
            kept = await self._prune(owner, node)
        listed = tuple(Subscription(None, str(s.jid), "subscribed", s.subid) for s in kept)
        return OwnerSubscriptions(name, listed).to_xml()

    async def _change_subscriptions(self, owner: JID, request: OwnerSubscriptions) -> None:
        """§8.8.2: the owner ends subscriptions ('none') or subscribes addresses the access model admits.

        Nothing changes unless every change can be made (§8.8.2.4).
        """
        changes = [(_jid(s.jid), s.subscription) for s in request.subscriptions]
        async with self.locks.hold(owner):
            node = await self._node(owner, request.node)
            for jid, state in changes:
                if state == "subscribed":
                    relation = await self.rosters.item(owner, jid.bare)
                    if not admits(owner, node, Subscriber(jid, ""), relation):
                        raise StanzaError("not-acceptable", f"the access model does not admit {jid}")
                elif state != "none":
                    raise StanzaError("not-acceptable", f"a subscription cannot be set to {state!r} here")
            for jid, state in changes:
                if state == "none":
                    await self.subscriptions.remove(owner, node.name, {jid})
                else:
                    await self.subscriptions.add(owner, node.name, jid)

    async def _prune(self, owner: JID, node: Node, subscribers: list[Subscriber] | None = None) -> list[Subscriber]:
        """End the subscriptions to ``node`` the access model no longer admits; the others."""
        if subscribers is None:
            subscribers = await self.subscriptions.of(owner, node.name)
        kept, lost = [], set()
        for subscriber in subscribers:
            relation = None
            if subscriber.jid.bare != owner and node.config.access_model in ("presence", "roster"):
                relation = await self.rosters.item(owner, subscriber.jid.bare)
            if admits(owner, node, subscriber, relation):
                kept.append(subscriber)
            else:
                lost.add(subscriber.jid)
        if lost:
            await self.subscriptions.remove(owner, node.name, lost)
        return kept

    async def unsubscribe_all(self, host: str, username: str) -> None:
        """An account that goes is no one's subscriber any more, and its nodes have none (event ``user-deleting``)."""
        user = JID(username, host)
        for owner, name in await self.subscriptions.subscribed_to(user):
            async with self.locks.hold(owner):
                subscribers = await self.subscriptions.of(owner, name)
                await self.subscriptions.remove(owner, name, {s.jid for s in subscribers if s.jid.bare == user})
        async with self.locks.hold(user):
            await self.subscriptions.drop_owner(user)

    async def presence_update(self, stanza: Stanza, origin: Session | None) -> None:
        """Learn the +notify features of the caps an available presence announces (XEP-0115 §6.2)."""
        if stanza.type is None and origin is not None:
            self.interests.learn(origin, caps_of(stanza.el))

    async def presence_initial(self, session: Session) -> None:
        """On initial presence, the last items of the account's nodes and its contacts' (XEP-0163 §4.3.4).

        Sent once the resource's +notify features are known, in the background: the answer to
        the disco#info query arrives on the stream whose presence is being handled.
        """
        self._tasks.spawn(self.delivery.welcome(session))

    async def subscription_approved(self, stanza: Stanza, _origin: Session | None) -> None:
        """XEP-0060 §6.1.7 on_sub: a contact approved the user's subscription; send its last items.

        The contact's roster already admits the user when its ``subscribed`` is routed, so the
        access check sees the new subscription.
        """
        contact, user = stanza.from_, stanza.to
        if stanza.type != "subscribed" or contact is None or user is None:
            return
        contact = contact.bare
        if contact.local is None or contact.domain not in self.server.hosts:
            return
        for session in self.delivery.available(user.bare):
            self._tasks.spawn(self.delivery.send_last(contact, session, ON_SUBSCRIPTION))

    async def approved_abroad(self, stanza: Stanza, _origin: Session | None) -> None:
        """XEP-0060 §6.1.7 on_sub for a contact at another server: the user approved its
        subscription, so it gets the last items of the user's nodes it may now see, at its bare
        JID as it gets their notifications (whatever its +notify, as its caps are not known here).

        The user's roster already admits the contact when the ``subscribed`` is routed.
        """
        user, contact = stanza.from_, stanza.to
        if stanza.type != "subscribed" or user is None or contact is None or contact.local is None:
            return
        if user.local is None or user.domain not in self.server.hosts:
            return
        self._tasks.spawn(self.delivery.send_last(user.bare, contact.bare, ON_SUBSCRIPTION))

    async def presence_from_abroad(self, stanza: Stanza, origin: Session | None) -> None:
        """XEP-0163 §4.3.4 for contacts at other servers: the first available presence of a
        contact's resource gets the last items of the account's nodes that the contact may see,
        as a local contact's resource gets them on initial presence (whatever its +notify, as
        its caps are not known here); a resource that one of the account's explicit
        subscriptions reaches gets the last items of those nodes too (XEP-0060 §6.1.7
        on_sub_and_presence). Its later presence gets none until it went unavailable."""
        contact, user = stanza.from_, stanza.to
        if origin is not None or contact is None or user is None or contact.resource is None:
            return
        if contact.domain in self.server.hosts or user.local is None:
            return
        owner = user.bare
        if stanza.type == "unavailable":
            self.delivery.left(owner, contact)
            return
        if stanza.type is not None or self.delivery.seen(owner, contact):
            return
        relation = await self.rosters.item(owner, contact.bare)
        sees = relation is not None and has_from(relation.subscription)
        subscribed = [name for name, subscribers in (await self.subscriptions.all(owner)).items()
                      if any(reaches(subscriber.jid, contact) for subscriber in subscribers)]
        if (sees or subscribed) and self.delivery.arrived(owner, contact):
            self._tasks.spawn(self.delivery.welcome_abroad(owner, contact, sees, subscribed))

    # Discovery ----------------------------------------------------------------------------------

    async def _visible(self, owner: JID, requester: JID | None) -> list[Node]:
        """The nodes of ``owner`` that ``requester`` may see, by name."""
        nodes = sorted((await self.store.nodes(owner)).items())
        if requester is None or requester.bare == owner:
            return [node for _, node in nodes]
        relation = None
        if any(node.config.access_model != "open" for _, node in nodes):
            relation = await self.rosters.item(owner, requester.bare)
        return [node for _, node in nodes if denial(node.config, relation) is None]

    async def visible_nodes(self, owner: JID, requester: JID | None) -> list[DiscoItem]:
        """XEP-0163 §6.2 (event ``disco-items/account``): the nodes listed in disco#items."""
        return [DiscoItem(str(owner), None, node.name) for node in await self._visible(owner, requester)]

    async def _visible_node(self, stanza: Stanza, origin: Session | None) -> tuple[JID, Node] | None:
        payload = stanza.payload
        assert payload is not None
        name = payload.get("node")
        if name is None:
            return None
        owner = stanza.to.bare if stanza.to is not None else _requester(stanza, origin)
        assert owner is not None
        for node in await self._visible(owner.bare, _requester(stanza, origin)):
            if node.name == name:
                return owner.bare, node
        raise _not_found(f"no node {name!r}")

    async def node_info(self, stanza: Stanza, origin: Session | None) -> Element | None:
        """XEP-0060 §5.3: a node's identity and meta-data; queries without a node are the disco module's."""
        found = await self._visible_node(stanza, origin)
        if found is None:
            return None
        _, node = found
        meta = DataForm("result", (
            Field("FORM_TYPE", "hidden", values=(META_DATA,)),
            Field("pubsub#access_model", values=(node.config.access_model,)),
            Field("pubsub#max_items", values=(str(node.config.max_items),)),
            *((Field("pubsub#title", values=(node.config.title,)),) if node.config.title else ()),
        ))  # fmt: skip
        info = DiscoInfo((Identity("pubsub", "leaf"),), (PUBSUB,), (meta,), node.name)
        return stanza.result(info.to_xml())

    async def node_items(self, stanza: Stanza, origin: Session | None) -> Element | None:
        """XEP-0060 §5.5: the ids of a node's items; queries without a node are the disco module's."""
        found = await self._visible_node(stanza, origin)
        if found is None:
            return None
        owner, node = found
        items = await self.store.items(owner, node.name) if node.count else []
        listed = tuple(DiscoItem(str(owner), item.id) for item in items)
        return stanza.result(DiscoItems(listed, node.name).to_xml())

    async def forget(self, host: str, username: str) -> None:
        """A deleted account's nodes and items go with it."""
        owner = JID.parse(f"{username}@{host}")
        self.delivery.forget(owner)
        await self.store.delete_all(owner)


def _request(stanza: Stanza) -> Request | OwnerRequest:
    payload = stanza.payload
    assert payload is not None
    return parse_request(payload)


def _jid(text: str) -> JID:
    try:
        return JID.parse(text)
    except JIDError:
        raise pubsub_error("bad-request", "invalid-jid", f"{text!r} is not a JID") from None


def _requester(stanza: Stanza, origin: Session | None) -> JID | None:
    """Who asks: the local session, or the stanza's sender when the server routes it."""
    return origin.jid if origin is not None else stanza.from_

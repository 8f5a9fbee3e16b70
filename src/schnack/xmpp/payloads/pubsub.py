"""XEP-0060: Publish-Subscribe payloads, the subset a Personal Eventing service (XEP-0163) speaks.

Requests in ``http://jabber.org/protocol/pubsub`` (publish with publish-options, retract, items,
create, subscribe, unsubscribe, subscriptions), owner requests in ``...#owner`` (configure,
default, delete, purge, subscriptions), notifications in
``...#event`` (items with retractions, delete, purge), the node configuration form (§16.4.4)
with the options PEP clients set (XEP-0163 §4.3, XEP-0223), and errors with their
``...#errors`` application condition (§7.1.3, §6.5.9 and so on).

Each request class reads and writes the whole wrapper element (``<pubsub/>`` or the owner's), so
that a result has the same class as its request: a publish result is a :class:`Publish` naming
the item id, an items result an :class:`Items` carrying the items.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from xml.etree.ElementTree import Element

from ..errors import StanzaError
from ..xml import element, qname, sub
from .dataforms import DataForm, DataFormError, Field, Option

PUBSUB = "http://jabber.org/protocol/pubsub"
OWNER = f"{PUBSUB}#owner"
EVENT = f"{PUBSUB}#event"
ERRORS = f"{PUBSUB}#errors"
NODE_CONFIG = f"{PUBSUB}#node_config"
PUBLISH_OPTIONS = f"{PUBSUB}#publish-options"
META_DATA = f"{PUBSUB}#meta-data"

ACCESS_MODELS = ("open", "presence", "roster", "whitelist")
SEND_LAST = ("never", "on_sub", "on_sub_and_presence")
# §4.2: the states of a subscription.
SUBSCRIPTION_STATES = ("none", "pending", "subscribed", "unconfigured")

_TRUE = frozenset({"1", "true"})
_FALSE = frozenset({"0", "false"})
# Options whose value this service does not let change (what PEP does, XEP-0163 §5): clients may
# name them in publish-options or a configuration form, with this value only.
_FIXED: dict[str, bool | str] = {
    "pubsub#deliver_notifications": True,
    "pubsub#deliver_payloads": True,
    "pubsub#purge_offline": False,
    "pubsub#notification_type": "headline",
    "pubsub#publish_model": "publishers",
}


class PubSubError(ValueError):
    """A request XEP-0060 refuses: a stanza error condition and its ``#errors`` condition."""

    def __init__(self, condition: str, app: str | None = None, text: str | None = None,
                 *, feature: str | None = None) -> None:
        super().__init__(text or app or condition)
        self.condition = condition
        self.app = app
        self.text = text
        self.feature = feature

    def to_stanza_error(self) -> StanzaError:
        return pubsub_error(self.condition, self.app, self.text, feature=self.feature)


def pubsub_error(condition: str, app: str | None = None, text: str | None = None, *,
                 feature: str | None = None) -> StanzaError:
    """A stanza error with the XEP-0060 application condition ``app``.

    item-not-found also carries the legacy code 404 (XEP-0086): libstrophe clients such as
    profanity read only that code to tell a missing node from a failure.
    """
    extra = element(qname(ERRORS, app), {"feature": feature}) if app is not None else None
    legacy = "404" if condition == "item-not-found" else None
    return StanzaError(condition, text, extra=extra, legacy_code=legacy)


def _node(el: Element, required: bool = True) -> str | None:
    node = el.get("node")
    if node is None or node == "":
        if required:
            raise PubSubError("bad-request", "nodeid-required", "name the node")
        return None
    return node


def _form(el: Element | None) -> DataForm | None:
    """The data form inside ``el`` (a ``<configure/>`` or ``<publish-options/>``), if any."""
    if el is None:
        return None
    x = el.find(qname("jabber:x:data", "x"))
    if x is None:
        return None
    try:
        return DataForm.from_xml(x)
    except DataFormError as err:
        raise PubSubError("bad-request", None, str(err)) from None


def _boolean(var: str, value: str | None) -> bool:
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise PubSubError("not-acceptable", None, f"{var} must be true or false, got {value!r}")


def _flag(value: str | None) -> bool:
    return value in _TRUE


@dataclass(frozen=True)
class Item:
    """An item (§7.1): its id, its single payload element and, in notifications, the publisher."""

    id: str | None = None
    payload: Element | None = None
    publisher: str | None = None

    @classmethod
    def from_xml(cls, el: Element) -> Item:
        children = list(el)
        if len(children) > 1:
            raise PubSubError("bad-request", "invalid-payload", "an item holds one payload element")
        return cls(el.get("id") or None, children[0] if children else None, el.get("publisher"))

    def to_xml(self, namespace: str = PUBSUB) -> Element:
        item = element(qname(namespace, "item"), {"id": self.id, "publisher": self.publisher})
        if self.payload is not None:
            item.append(self.payload)
        return item


def _wrapper(namespace: str, action: Element) -> Element:
    return element(qname(namespace, "pubsub"), children=[action])


def _action(el: Element, namespace: str, tag: str) -> Element:
    found = el.find(qname(namespace, tag))
    if found is None:
        raise PubSubError("bad-request", None, f"expected <{tag}/>")
    return found


@dataclass(frozen=True)
class Publish:
    """§7.1 publish, with §7.1.5 publish-options; as a result, names the item published."""

    node: str
    items: tuple[Item, ...] = ()
    options: DataForm | None = None

    @classmethod
    def from_xml(cls, el: Element) -> Publish:
        publish = _action(el, PUBSUB, "publish")
        node = _node(publish)
        assert node is not None
        items = tuple(Item.from_xml(i) for i in publish.findall(qname(PUBSUB, "item")))
        return cls(node, items, _form(el.find(qname(PUBSUB, "publish-options"))))

    def to_xml(self) -> Element:
        publish = element(qname(PUBSUB, "publish"), {"node": self.node})
        publish.extend(item.to_xml() for item in self.items)
        wrapper = _wrapper(PUBSUB, publish)
        if self.options is not None:
            sub(wrapper, qname(PUBSUB, "publish-options")).append(self.options.to_xml())
        return wrapper


@dataclass(frozen=True)
class Retract:
    """§7.2 delete an item; ``notify`` asks for retraction notifications (§7.2.2.1)."""

    node: str
    ids: tuple[str, ...]
    notify: bool = False

    @classmethod
    def from_xml(cls, el: Element) -> Retract:
        retract = _action(el, PUBSUB, "retract")
        node = _node(retract)
        assert node is not None
        ids = tuple(i.get("id") or "" for i in retract.findall(qname(PUBSUB, "item")))
        if not ids or not all(ids):
            raise PubSubError("bad-request", "item-required", "name the item to retract")
        return cls(node, ids, _flag(retract.get("notify")))

    def to_xml(self) -> Element:
        retract = element(qname(PUBSUB, "retract"), {"node": self.node, "notify": "true" if self.notify else None})
        retract.extend(element(qname(PUBSUB, "item"), {"id": i}) for i in self.ids)
        return _wrapper(PUBSUB, retract)


@dataclass(frozen=True)
class Items:
    """§6.5 retrieve items (all, the last ``max_items``, or by id); as a result, the items."""

    node: str
    items: tuple[Item, ...] = ()
    max_items: int | None = None

    @classmethod
    def from_xml(cls, el: Element) -> Items:
        request = _action(el, PUBSUB, "items")
        node = _node(request)
        assert node is not None
        limit = request.get("max_items")
        max_items = None
        if limit is not None:
            if not (limit.isascii() and limit.isdigit()) or int(limit) < 1:
                raise PubSubError("bad-request", None, f"max_items must be a positive number, got {limit!r}")
            max_items = int(limit)
        return cls(node, tuple(Item.from_xml(i) for i in request.findall(qname(PUBSUB, "item"))), max_items)

    @property
    def ids(self) -> tuple[str, ...]:
        """The item ids a request names (§6.5.8)."""
        return tuple(item.id for item in self.items if item.id is not None)

    def to_xml(self) -> Element:
        attrs = {"node": self.node, "max_items": str(self.max_items) if self.max_items is not None else None}
        request = element(qname(PUBSUB, "items"), attrs)
        request.extend(item.to_xml() for item in self.items)
        return _wrapper(PUBSUB, request)


@dataclass(frozen=True)
class Create:
    """§8.1 create a node, optionally configured (§8.1.3); ``node`` None asks for an instant node."""

    node: str | None
    config: DataForm | None = None

    @classmethod
    def from_xml(cls, el: Element) -> Create:
        create = _action(el, PUBSUB, "create")
        return cls(_node(create, required=False), _form(el.find(qname(PUBSUB, "configure"))))

    def to_xml(self) -> Element:
        wrapper = _wrapper(PUBSUB, element(qname(PUBSUB, "create"), {"node": self.node}))
        if self.config is not None:
            sub(wrapper, qname(PUBSUB, "configure")).append(self.config.to_xml())
        return wrapper


@dataclass(frozen=True)
class Configure:
    """§8.2 the configuration of a node: a get (no form), the form (result) or the submitted form (set)."""

    node: str
    form: DataForm | None = None

    @classmethod
    def from_xml(cls, el: Element) -> Configure:
        configure = _action(el, OWNER, "configure")
        node = _node(configure)
        assert node is not None
        return cls(node, _form(configure))

    def to_xml(self) -> Element:
        configure = element(qname(OWNER, "configure"), {"node": self.node})
        if self.form is not None:
            configure.append(self.form.to_xml())
        return _wrapper(OWNER, configure)


@dataclass(frozen=True)
class Default:
    """§8.3 the default node configuration; the result carries the form."""

    form: DataForm | None = None

    @classmethod
    def from_xml(cls, el: Element) -> Default:
        return cls(_form(_action(el, OWNER, "default")))

    def to_xml(self) -> Element:
        default = element(qname(OWNER, "default"))
        if self.form is not None:
            default.append(self.form.to_xml())
        return _wrapper(OWNER, default)


@dataclass(frozen=True)
class Delete:
    """§8.4 delete a node."""

    node: str

    @classmethod
    def from_xml(cls, el: Element) -> Delete:
        node = _node(_action(el, OWNER, "delete"))
        assert node is not None
        return cls(node)

    def to_xml(self) -> Element:
        return _wrapper(OWNER, element(qname(OWNER, "delete"), {"node": self.node}))


@dataclass(frozen=True)
class Purge:
    """§8.5 purge all items of a node."""

    node: str

    @classmethod
    def from_xml(cls, el: Element) -> Purge:
        node = _node(_action(el, OWNER, "purge"))
        assert node is not None
        return cls(node)

    def to_xml(self) -> Element:
        return _wrapper(OWNER, element(qname(OWNER, "purge"), {"node": self.node}))


def _jid(el: Element) -> str:
    jid = el.get("jid")
    if not jid:
        raise PubSubError("bad-request", "jid-required", f"<{el.tag.rpartition('}')[2]}/> needs a 'jid'")
    return jid


@dataclass(frozen=True)
class Subscription:
    """A ``<subscription/>`` (§5.6, §6.1.2, §8.8.1): who is subscribed to which node, in which state."""

    node: str | None
    jid: str
    subscription: str = "subscribed"
    subid: str | None = None

    @classmethod
    def from_xml(cls, el: Element) -> Subscription:
        state = el.get("subscription") or "subscribed"
        if state not in SUBSCRIPTION_STATES:
            raise PubSubError("bad-request", None, f"no subscription state {state!r}")
        return cls(el.get("node") or None, _jid(el), state, el.get("subid") or None)

    def to_xml(self, namespace: str = PUBSUB) -> Element:
        attrs = {"node": self.node, "jid": self.jid, "subscription": self.subscription, "subid": self.subid}
        return element(qname(namespace, "subscription"), attrs)

    def result(self) -> Element:
        """The answer to a subscription request (§6.1.2)."""
        return _wrapper(PUBSUB, self.to_xml())


@dataclass(frozen=True)
class Subscribe:
    """§6.1 subscribe ``jid`` to a node."""

    node: str
    jid: str

    @classmethod
    def from_xml(cls, el: Element) -> Subscribe:
        subscribe = _action(el, PUBSUB, "subscribe")
        node = _node(subscribe)
        assert node is not None
        return cls(node, _jid(subscribe))

    def to_xml(self) -> Element:
        return _wrapper(PUBSUB, element(qname(PUBSUB, "subscribe"), {"node": self.node, "jid": self.jid}))


@dataclass(frozen=True)
class Unsubscribe:
    """§6.2 end the subscription of ``jid`` (the one named ``subid``, if given)."""

    node: str
    jid: str
    subid: str | None = None

    @classmethod
    def from_xml(cls, el: Element) -> Unsubscribe:
        unsubscribe = _action(el, PUBSUB, "unsubscribe")
        node = _node(unsubscribe)
        assert node is not None
        return cls(node, _jid(unsubscribe), unsubscribe.get("subid") or None)

    def to_xml(self) -> Element:
        attrs = {"node": self.node, "jid": self.jid, "subid": self.subid}
        return _wrapper(PUBSUB, element(qname(PUBSUB, "unsubscribe"), attrs))


@dataclass(frozen=True)
class Subscriptions:
    """§5.6 the requester's subscriptions (to one node, or all); as a result, the subscriptions."""

    node: str | None = None
    subscriptions: tuple[Subscription, ...] = ()

    @classmethod
    def from_xml(cls, el: Element) -> Subscriptions:
        request = _action(el, PUBSUB, "subscriptions")
        found = tuple(Subscription.from_xml(s) for s in request.findall(qname(PUBSUB, "subscription")))
        return cls(_node(request, required=False), found)

    def to_xml(self) -> Element:
        request = element(qname(PUBSUB, "subscriptions"), {"node": self.node})
        request.extend(s.to_xml() for s in self.subscriptions)
        return _wrapper(PUBSUB, request)


@dataclass(frozen=True)
class OwnerSubscriptions:
    """§8.8 the subscribers of a node: the owner's get (§8.8.1), result, or changes (set, §8.8.2).

    The ``<subscription/>`` children carry no node: the wrapper names it.
    """

    node: str
    subscriptions: tuple[Subscription, ...] = ()

    @classmethod
    def from_xml(cls, el: Element) -> OwnerSubscriptions:
        request = _action(el, OWNER, "subscriptions")
        node = _node(request)
        assert node is not None
        found = tuple(Subscription.from_xml(s) for s in request.findall(qname(OWNER, "subscription")))
        return cls(node, found)

    def to_xml(self) -> Element:
        request = element(qname(OWNER, "subscriptions"), {"node": self.node})
        request.extend(replace(s, node=None).to_xml(OWNER) for s in self.subscriptions)
        return _wrapper(OWNER, request)


Request = Publish | Retract | Items | Create | Subscribe | Unsubscribe | Subscriptions
OwnerRequest = Configure | Default | Delete | Purge | OwnerSubscriptions

_REQUESTS: dict[str, type[Request]] = {
    qname(PUBSUB, "publish"): Publish,
    qname(PUBSUB, "retract"): Retract,
    qname(PUBSUB, "items"): Items,
    qname(PUBSUB, "create"): Create,
    qname(PUBSUB, "subscribe"): Subscribe,
    qname(PUBSUB, "unsubscribe"): Unsubscribe,
    qname(PUBSUB, "subscriptions"): Subscriptions,
}
_OWNER_REQUESTS: dict[str, type[OwnerRequest]] = {
    qname(OWNER, "configure"): Configure,
    qname(OWNER, "default"): Default,
    qname(OWNER, "delete"): Delete,
    qname(OWNER, "purge"): Purge,
    qname(OWNER, "subscriptions"): OwnerSubscriptions,
}
# The XEP-0060 feature of each request this subset leaves out, for the "unsupported" error (§6.1.3.1 etc).
_FEATURES = {
    qname(PUBSUB, "options"): "subscription-options",
    qname(PUBSUB, "affiliations"): "retrieve-affiliations",
    qname(OWNER, "affiliations"): "modify-affiliations",
}


def parse_request(el: Element) -> Request | OwnerRequest:
    """The request in a ``<pubsub/>`` element of either namespace (§5-§8); PubSubError if unsupported."""
    for child in el:
        cls = _REQUESTS.get(child.tag) or _OWNER_REQUESTS.get(child.tag)
        if cls is not None:
            return cls.from_xml(el)
    for child in el:
        feature = _FEATURES.get(child.tag)
        if feature is not None:
            local = child.tag.rpartition("}")[2]
            raise PubSubError("feature-not-implemented", "unsupported", f"{local} is not supported here",
                              feature=feature)
    raise PubSubError("bad-request", None, "the request names no action")


@dataclass(frozen=True)
class EventItems:
    """§7.1.2.1 and §7.2.2.1: published items and retracted ids of a node, as notified."""

    node: str
    items: tuple[Item, ...] = ()
    retracted: tuple[str, ...] = ()

    def to_xml(self) -> Element:
        items = element(qname(EVENT, "items"), {"node": self.node})
        items.extend(item.to_xml(EVENT) for item in self.items)
        items.extend(element(qname(EVENT, "retract"), {"id": i}) for i in self.retracted)
        return element(qname(EVENT, "event"), children=[items])


@dataclass(frozen=True)
class EventDelete:
    """§8.4.2: the node was deleted."""

    node: str

    def to_xml(self) -> Element:
        return element(qname(EVENT, "event"), children=[element(qname(EVENT, "delete"), {"node": self.node})])


@dataclass(frozen=True)
class EventPurge:
    """§8.5.2: the node's items were purged."""

    node: str

    def to_xml(self) -> Element:
        return element(qname(EVENT, "event"), children=[element(qname(EVENT, "purge"), {"node": self.node})])


Event = EventItems | EventDelete | EventPurge


def parse_event(el: Element) -> Event:
    """The notification in an ``<event/>`` element (§7.1.2.1, §7.2.2.1, §8.4.2, §8.5.2)."""
    if el.tag != qname(EVENT, "event") or len(el) != 1:
        raise PubSubError("bad-request", None, "expected an event with one child")
    child = el[0]
    node = _node(child)
    assert node is not None
    if child.tag == qname(EVENT, "items"):
        items = tuple(Item.from_xml(i) for i in child.findall(qname(EVENT, "item")))
        retracted = tuple(r.get("id") or "" for r in child.findall(qname(EVENT, "retract")))
        return EventItems(node, items, retracted)
    if child.tag == qname(EVENT, "delete"):
        return EventDelete(node)
    if child.tag == qname(EVENT, "purge"):
        return EventPurge(node)
    raise PubSubError("bad-request", None, f"unknown event {child.tag}")


@dataclass(frozen=True)
class NodeConfig:
    """The node options of §16.4.4 that this service keeps, with PEP's defaults (XEP-0163 §5).

    ``max_items`` is always a number: the value "max" (§16.4.4, used by XEP-0402 bookmarks and
    OMEMO 2 clients) means the service's limit and is resolved when a form is read.
    """

    access_model: str = "presence"
    max_items: int = 1
    persist_items: bool = True
    send_last_published_item: str = "on_sub_and_presence"
    notify_retract: bool = True
    notify_delete: bool = True
    roster_groups_allowed: tuple[str, ...] = ()
    title: str | None = None

    def with_form(self, form: DataForm, max_limit: int, form_type: str = NODE_CONFIG) -> NodeConfig:
        """This configuration changed by the fields of a submitted form (§8.2.5, §7.1.5).

        Unknown options or values raise not-acceptable; so does a ``max_items`` above
        ``max_limit``.
        """
        if form.form_type not in (None, form_type):
            raise PubSubError("bad-request", None, f"the form type must be {form_type}")
        if form.type not in ("submit", "result"):
            raise PubSubError("bad-request", None, "submit the form")
        config = self
        for field in form.fields:
            var = field.var
            if var is None or var == "FORM_TYPE":
                continue
            value = field.value
            if var == "pubsub#access_model":
                if value not in ACCESS_MODELS:
                    raise PubSubError("not-acceptable", "unsupported-access-model", f"no access model {value!r}")
                config = replace(config, access_model=value)
            elif var == "pubsub#max_items":
                config = replace(config, max_items=_max_items(value, max_limit))
            elif var == "pubsub#persist_items":
                config = replace(config, persist_items=_boolean(var, value))
            elif var == "pubsub#send_last_published_item":
                if value not in SEND_LAST:
                    raise PubSubError("not-acceptable", None, f"{var} cannot be {value!r}")
                config = replace(config, send_last_published_item=value)
            elif var == "pubsub#notify_retract":
                config = replace(config, notify_retract=_boolean(var, value))
            elif var == "pubsub#notify_delete":
                config = replace(config, notify_delete=_boolean(var, value))
            elif var == "pubsub#roster_groups_allowed":
                config = replace(config, roster_groups_allowed=tuple(field.values))
            elif var == "pubsub#title":
                config = replace(config, title=value or None)
            elif var in _FIXED:
                fixed = _FIXED[var]
                if (_boolean(var, value) if isinstance(fixed, bool) else value) != fixed:
                    raise PubSubError("not-acceptable", None, f"{var} is always {_text(fixed)} here")
            else:
                raise PubSubError("not-acceptable", None, f"the option {var} is not supported")
        return config

    def to_form(self, kind: str = "form") -> DataForm:
        """The configuration form (§8.2.1) or its result."""
        fields = (
            Field("FORM_TYPE", "hidden", values=(NODE_CONFIG,)),
            Field("pubsub#title", "text-single", "A friendly name for the node",
                  values=(self.title,) if self.title else ()),
            Field("pubsub#access_model", "list-single", "Who may subscribe and retrieve items",
                  values=(self.access_model,), options=tuple(Option(m) for m in ACCESS_MODELS)),
            Field("pubsub#roster_groups_allowed", "list-multi", "Roster groups allowed to subscribe",
                  values=self.roster_groups_allowed),
            Field("pubsub#max_items", "text-single", "Max number of items to persist",
                  values=(str(self.max_items),)),
            Field("pubsub#persist_items", "boolean", "Persist items to storage", values=(_bit(self.persist_items),)),
            Field("pubsub#send_last_published_item", "list-single", "When to send the last published item",
                  values=(self.send_last_published_item,), options=tuple(Option(s) for s in SEND_LAST)),
            Field("pubsub#notify_retract", "boolean", "Notify subscribers when items are removed",
                  values=(_bit(self.notify_retract),)),
            Field("pubsub#notify_delete", "boolean", "Notify subscribers when the node is deleted",
                  values=(_bit(self.notify_delete),)),
            *(Field(var, "boolean" if isinstance(value, bool) else "list-single", values=(_text(value),))
              for var, value in _FIXED.items()),
        )
        return DataForm(kind, fields)


def _bit(flag: bool) -> str:
    return "1" if flag else "0"


def _text(value: bool | str) -> str:
    return _bit(value) if isinstance(value, bool) else value


def _max_items(value: str | None, max_limit: int) -> int:
    if value == "max":
        return max_limit
    if value is None or not (value.isascii() and value.isdigit()) or int(value) < 1:
        raise PubSubError("not-acceptable", None, f"pubsub#max_items must be a positive number or 'max', got {value!r}")
    if int(value) > max_limit:
        raise PubSubError("not-acceptable", None, f"pubsub#max_items may be at most {max_limit}")
    return int(value)

"""XEP-0030: Service Discovery payloads (disco#info and disco#items queries and results).

Extended information forms (XEP-0128) ride in disco#info results as data forms.
"""

from __future__ import annotations

from dataclasses import dataclass
from xml.etree.ElementTree import Element

from .. import ns
from ..xml import element, qname
from .dataforms import DataForm

INFO = qname(ns.DISCO_INFO, "query")
ITEMS = qname(ns.DISCO_ITEMS, "query")
_IDENTITY = qname(ns.DISCO_INFO, "identity")
_FEATURE = qname(ns.DISCO_INFO, "feature")
_ITEM = qname(ns.DISCO_ITEMS, "item")
_X = qname(ns.DATA_FORMS, "x")
_LANG = qname(ns.XML, "lang")


class DiscoError(ValueError):
    """A disco element that breaks XEP-0030 (§3.1 and §4.1 name the required attributes)."""


@dataclass(frozen=True)
class Identity:
    """An identity of an entity (XEP-0030 §3.1): category and type from the registry."""

    category: str
    type: str
    name: str | None = None
    lang: str | None = None

    @classmethod
    def from_xml(cls, el: Element) -> Identity:
        category, kind = el.get("category"), el.get("type")
        if not category or not kind:
            raise DiscoError("an identity needs a category and a type")
        return cls(category, kind, el.get("name"), el.get(_LANG))

    def to_xml(self) -> Element:
        return element(
            _IDENTITY, {"category": self.category, "type": self.type, "name": self.name, _LANG: self.lang}
        )


@dataclass(frozen=True)
class DiscoInfo:
    """A disco#info query or result (XEP-0030 §3), with XEP-0128 forms."""

    identities: tuple[Identity, ...] = ()
    features: tuple[str, ...] = ()
    forms: tuple[DataForm, ...] = ()
    node: str | None = None

    @classmethod
    def from_xml(cls, el: Element) -> DiscoInfo:
        if el.tag != INFO:
            raise DiscoError(f"expected a disco#info query, got {el.tag}")
        features = []
        for feature in el.findall(_FEATURE):
            var = feature.get("var")
            if not var:
                raise DiscoError("a feature needs a var")
            features.append(var)
        return cls(
            identities=tuple(Identity.from_xml(i) for i in el.findall(_IDENTITY)),
            features=tuple(features),
            forms=tuple(DataForm.from_xml(x) for x in el.findall(_X)),
            node=el.get("node"),
        )

    def to_xml(self) -> Element:
        query = element(INFO, {"node": self.node})
        query.extend(identity.to_xml() for identity in self.identities)
        query.extend(element(_FEATURE, {"var": var}) for var in self.features)
        query.extend(form.to_xml() for form in self.forms)
        return query


@dataclass(frozen=True)
class DiscoItem:
    """An item of an entity (XEP-0030 §4.1): another entity, or a node of one."""

    jid: str
    name: str | None = None
    node: str | None = None

    @classmethod
    def from_xml(cls, el: Element) -> DiscoItem:
        jid = el.get("jid")
        if not jid:
            raise DiscoError("an item needs a jid")
        return cls(jid, el.get("name"), el.get("node"))

    def to_xml(self) -> Element:
        return element(_ITEM, {"jid": self.jid, "name": self.name, "node": self.node})


@dataclass(frozen=True)
class DiscoItems:
    """A disco#items query or result (XEP-0030 §4)."""

    items: tuple[DiscoItem, ...] = ()
    node: str | None = None

    @classmethod
    def from_xml(cls, el: Element) -> DiscoItems:
        if el.tag != ITEMS:
            raise DiscoError(f"expected a disco#items query, got {el.tag}")
        return cls(tuple(DiscoItem.from_xml(i) for i in el.findall(_ITEM)), el.get("node"))

    def to_xml(self) -> Element:
        query = element(ITEMS, {"node": self.node})
        query.extend(item.to_xml() for item in self.items)
        return query

"""XEP-0386: Bind 2 (v1.0.0, ``urn:xmpp:bind:0``): resource binding inside SASL2 authentication.

The server offers ``<bind/>`` among the SASL2 inline features, listing in its own ``<inline/>``
the session features it can enable in the same step (§2.1). The client's ``<bind/>`` carries an
optional ``<tag/>`` naming its software and the requests of those features; the server answers
with ``<bound/>`` holding their results (§2.2). Those requests and results are other
namespaces' elements and stay elements here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from xml.etree.ElementTree import Element

from ..xml import element, qname, sub

NS = "urn:xmpp:bind:0"
BIND = qname(NS, "bind")
BOUND = qname(NS, "bound")
TAG = qname(NS, "tag")
INLINE = qname(NS, "inline")
FEATURE = qname(NS, "feature")


class Bind2Error(ValueError):
    """A Bind 2 element that is not what XEP-0386 defines."""


def _expect(el: Element, tag: str) -> None:
    if el.tag != tag:
        raise Bind2Error(f"expected {tag}, got {el.tag}")


@dataclass(frozen=True)
class BindFeature:
    """§2.1: Bind 2 is offered; ``inline`` are the features it can enable (their 'var's)."""

    inline: tuple[str, ...] = ()

    @classmethod
    def from_xml(cls, el: Element) -> BindFeature:
        _expect(el, BIND)
        inline = el.find(INLINE)
        found = () if inline is None else tuple(f.get("var", "") for f in inline.findall(FEATURE) if f.get("var"))
        return cls(found)

    def to_xml(self) -> Element:
        out = element(BIND)
        if self.inline:
            inline = sub(out, INLINE)
            for var in self.inline:
                sub(inline, FEATURE, {"var": var})
        return out


@dataclass(frozen=True)
class Bind:
    """§2.2: the bind request; ``requests`` ask for session features (carbons, CSI, SM)."""

    tag: str | None = None
    requests: tuple[Element, ...] = field(default=(), compare=False)

    @classmethod
    def from_xml(cls, el: Element) -> Bind:
        _expect(el, BIND)
        tag = (el.findtext(TAG) or "").strip() or None
        return cls(tag, tuple(child for child in el if child.tag != TAG))

    def to_xml(self) -> Element:
        out = element(BIND)
        if self.tag:
            sub(out, TAG, text=self.tag)
        out.extend(self.requests)
        return out

    def find(self, tag: str) -> Element | None:
        """The request ``tag``, if present."""
        return next((el for el in self.requests if el.tag == tag), None)


@dataclass(frozen=True)
class Bound:
    """§2.2: the resource is bound; ``results`` answer the requests that have an answer."""

    results: tuple[Element, ...] = field(default=(), compare=False)

    @classmethod
    def from_xml(cls, el: Element) -> Bound:
        _expect(el, BOUND)
        return cls(tuple(el))

    def to_xml(self) -> Element:
        return element(BOUND, children=self.results)

    def find(self, tag: str) -> Element | None:
        """The result ``tag``, if present."""
        return next((el for el in self.results if el.tag == tag), None)

"""XEP-0333: Chat Markers (``urn:xmpp:chat-markers:0``): markable messages and their markers.

A sender marks a message ``<markable/>`` (§3); the recipient answers with ``<received/>``,
``<displayed/>`` or ``<acknowledged/>`` naming the 'id' of the last message it got that far
(§4). A marker covers every earlier message of the conversation too. ``<markable/>`` is an empty
marker, so it has the constant :data:`MARKABLE` and no class.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from xml.etree.ElementTree import Element

from ..xml import element, qname, split

NS = "urn:xmpp:chat-markers:0"
MARKABLE = qname(NS, "markable")
KINDS = ("received", "displayed", "acknowledged")

Kind = Literal["received", "displayed", "acknowledged"]


class MarkerError(ValueError):
    """A marker that breaks XEP-0333 (an unknown kind, no id)."""


@dataclass(frozen=True)
class Marker:
    """A chat marker: message ``id`` (and those before it) reached state ``kind``."""

    kind: Kind
    id: str

    @classmethod
    def from_xml(cls, el: Element) -> Marker:
        namespace, local = split(el.tag)
        if namespace != NS or local not in KINDS:
            raise MarkerError(f"expected a chat marker, got {el.tag}")
        id = el.get("id")
        if not id:
            raise MarkerError("a chat marker names a message in 'id'")
        kind: Kind = local  # type: ignore[assignment]
        return cls(kind, id)

    def to_xml(self) -> Element:
        return element(qname(NS, self.kind), {"id": self.id})

    @classmethod
    def find(cls, message: Element) -> Marker | None:
        """The marker a message carries, if it carries a well-formed one."""
        for child in message:
            if split(child.tag)[0] == NS and child.tag != MARKABLE:
                try:
                    return cls.from_xml(child)
                except MarkerError:
                    return None
        return None

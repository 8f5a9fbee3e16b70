"""XEP-0184: Message Delivery Receipts (v1.4, ``urn:xmpp:receipts``).

A content message asks for a receipt with ``<request/>`` (§5.1); the recipient's client answers
with a message carrying ``<received id='…'/>``, the 'id' of the message it got (§5.2).
``<request/>`` is an empty marker, so it has the constant :data:`REQUEST` and no class.
"""

from __future__ import annotations

from dataclasses import dataclass
from xml.etree.ElementTree import Element

from ..xml import element, qname

NS = "urn:xmpp:receipts"
REQUEST = qname(NS, "request")
RECEIVED = qname(NS, "received")


class ReceiptError(ValueError):
    """A receipt that breaks XEP-0184 §5.2 (no id of the message it confirms)."""


@dataclass(frozen=True)
class Received:
    """§5.2: the message with 'id' ``id`` reached the recipient's client."""

    id: str

    @classmethod
    def from_xml(cls, el: Element) -> Received:
        if el.tag != RECEIVED:
            raise ReceiptError(f"expected a receipt, got {el.tag}")
        id = el.get("id")
        if not id:
            raise ReceiptError("a receipt names the message it confirms in 'id'")
        return cls(id)

    def to_xml(self) -> Element:
        return element(RECEIVED, {"id": self.id})

    @classmethod
    def find(cls, message: Element) -> Received | None:
        """The receipt a message carries, if it carries a well-formed one."""
        found = message.find(RECEIVED)
        try:
            return cls.from_xml(found) if found is not None else None
        except ReceiptError:
            return None

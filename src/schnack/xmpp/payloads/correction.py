"""XEP-0308: Last Message Correction (v1.2, ``urn:xmpp:message-correct:0``).

A message carrying ``<replace id='…'/>`` replaces the text of an earlier message of the same
sender in the same conversation (§3). The id is always the one of the original message, also
when a correction is corrected again (§4).
"""

from __future__ import annotations

from dataclasses import dataclass
from xml.etree.ElementTree import Element

from ..xml import element, qname

NS = "urn:xmpp:message-correct:0"
REPLACE = qname(NS, "replace")


class CorrectionError(ValueError):
    """A ``<replace/>`` without the id of the message it replaces."""


@dataclass(frozen=True)
class Replace:
    """§3: this message replaces the one whose 'id' is ``id``."""

    id: str

    @classmethod
    def from_xml(cls, el: Element) -> Replace:
        if el.tag != REPLACE:
            raise CorrectionError(f"expected a replace element, got {el.tag}")
        id = el.get("id")
        if not id:
            raise CorrectionError("a correction names the message it replaces in 'id'")
        return cls(id)

    def to_xml(self) -> Element:
        return element(REPLACE, {"id": self.id})

    @classmethod
    def find(cls, message: Element) -> Replace | None:
        """The correction a message carries, if it carries a well-formed one."""
        found = message.find(REPLACE)
        try:
            return cls.from_xml(found) if found is not None else None
        except CorrectionError:
            return None

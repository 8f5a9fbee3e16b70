"""XEP-0359: Unique and Stable Stanza IDs, the ``<stanza-id/>`` an entity assigns to a stanza.

The entity named in 'by' assigns the id ("Unique stanza IDs"). A stanza carries at most one
stanza-id per 'by', and an entity that finds one in its own name overrides it (Business Rules 3
and 4): it removes them with :func:`strip_stanza_ids` before adding its own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final
from xml.etree.ElementTree import Element

from .. import ns
from ..xml import qname

STANZA_ID: Final = qname(ns.SID, "stanza-id")


class SidError(ValueError):
    """A stanza-id without the 'id' or the 'by' that XEP-0359 requires (Business Rule 5)."""


@dataclass(frozen=True)
class StanzaId:
    """The id that the entity ``by`` assigned to the stanza."""

    id: str
    by: str

    @classmethod
    def from_xml(cls, el: Element) -> StanzaId:
        if el.tag != STANZA_ID:
            raise SidError(f"expected a stanza-id, got {el.tag}")
        item_id, by = el.get("id"), el.get("by")
        if not item_id or not by:
            raise SidError("a stanza-id needs an 'id' and a 'by'")
        return cls(item_id, by)

    def to_xml(self) -> Element:
        return stanza_id(self.id, self.by)


def stanza_id(item_id: str, by: str) -> Element:
    """The ``<stanza-id/>`` of :class:`StanzaId` (``item_id``, ``by``), made without the object:
    every archived message gets one, and making the frozen dataclass first costs twice the element."""
    return Element(STANZA_ID, {"id": item_id, "by": by})


def strip_stanza_ids(stanza: Element, claims: Callable[[str], bool]) -> None:
    """Remove the stanza-ids whose 'by' ``claims`` is true for (XEP-0359 Business Rule 3)."""
    forged = [child for child in stanza if child.tag == STANZA_ID and claims(child.get("by", ""))]
    for child in forged:
        stanza.remove(child)

"""XEP-0059: Result Set Management, the ``<set/>`` that pages through long result lists.

A request carries ``max`` (§2.1), ``after`` or ``before`` (§2.2, §2.3; an empty ``<before/>``,
or one holding only white space, asks for the last page, §2.5) or ``index`` (§2.4); white space
around their ids is not part of them. A response carries ``first`` (with its
``index`` attribute), ``last`` and ``count`` (§2.1, §2.6).
"""

from __future__ import annotations

from dataclasses import dataclass
from xml.etree.ElementTree import Element

from ..xml import element, qname, sub

NS = "http://jabber.org/protocol/rsm"
SET = qname(NS, "set")
_MAX = qname(NS, "max")
_AFTER = qname(NS, "after")
_BEFORE = qname(NS, "before")
_INDEX = qname(NS, "index")
_FIRST = qname(NS, "first")
_LAST = qname(NS, "last")
_COUNT = qname(NS, "count")


class RsmError(ValueError):
    """A ``<set/>`` that breaks XEP-0059 §2 (a number that is not a non-negative integer)."""


def _number(text: str | None, what: str) -> int | None:
    if text is None:
        return None
    text = text.strip()
    if not text.isdigit() or not text.isascii():
        raise RsmError(f"{what} must be a non-negative integer, got {text!r}")
    return int(text)


def _paging_id(el: Element | None) -> str | None:
    """The id an ``<after/>`` or ``<before/>`` names, "" for none. Clients that indent their XML
    put white space around it or in place of it (§2.5's empty ``<before/>``); an id has none."""
    if el is None:
        return None
    return (el.text or "").strip()


@dataclass(frozen=True)
class ResultSet:
    """A request or response ``<set/>`` (XEP-0059 §2); ``before == ""`` is the empty ``<before/>``."""

    max: int | None = None
    after: str | None = None
    before: str | None = None
    index: int | None = None
    first: str | None = None
    first_index: int | None = None
    last: str | None = None
    count: int | None = None

    @classmethod
    def from_xml(cls, el: Element) -> ResultSet:
        if el.tag != SET:
            raise RsmError(f"expected an RSM set, got {el.tag}")
        first = el.find(_FIRST)
        after = _paging_id(el.find(_AFTER))
        if after == "":
            raise RsmError("<after/> needs the id of an item")
        return cls(
            max=_number(el.findtext(_MAX), "max"),
            after=after,
            before=_paging_id(el.find(_BEFORE)),
            index=_number(el.findtext(_INDEX), "index"),
            first=(first.text or "") if first is not None else None,
            first_index=_number(first.get("index"), "index of first") if first is not None else None,
            last=el.findtext(_LAST),
            count=_number(el.findtext(_COUNT), "count"),
        )

    def to_xml(self) -> Element:
        rsm = element(SET)
        if self.max is not None:
            sub(rsm, _MAX, text=str(self.max))
        if self.after is not None:
            sub(rsm, _AFTER, text=self.after)
        if self.before is not None:
            sub(rsm, _BEFORE, text=self.before or None)
        if self.index is not None:
            sub(rsm, _INDEX, text=str(self.index))
        if self.first is not None:
            index = str(self.first_index) if self.first_index is not None else None
            sub(rsm, _FIRST, {"index": index}, self.first)
        if self.last is not None:
            sub(rsm, _LAST, text=self.last)
        if self.count is not None:
            sub(rsm, _COUNT, text=str(self.count))
        return rsm

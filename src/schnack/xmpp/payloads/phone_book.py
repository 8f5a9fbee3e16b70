"""Contact discovery by phone number: Quicksy's ``im.quicksy.synchronization:0`` phone book.

A client sends the numbers of its address book (E.164) in ``<phone-book/>`` to its server's
domain in an IQ get; the result names, for each number that has an account, the JIDs it has.
``ver`` carries the hash of the answer the client holds: when the answer is the same, the
result is empty, so a daily synchronization of an address book costs one small round trip.
This is the protocol Quicksy (Conversations' and Monal's Quicksy builds) speaks.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from xml.etree.ElementTree import Element

from ..jid import JID, JIDError
from ..phone import is_e164
from ..xml import element, qname

NS = "im.quicksy.synchronization:0"
PHONE_BOOK = qname(NS, "phone-book")
ENTRY = qname(NS, "entry")
JID_ELEMENT = qname(NS, "jid")


class PhoneBookError(ValueError):
    """A phone book that breaks the protocol; ``condition`` is the stanza error it deserves."""

    def __init__(self, condition: str, text: str) -> None:
        super().__init__(text)
        self.condition = condition
        self.text = text


@dataclass(frozen=True)
class Entry:
    """One number, and in a result the bare JIDs of the accounts it belongs to."""

    number: str
    jids: tuple[JID, ...] = ()

    def to_xml(self) -> Element:
        return element(
            ENTRY,
            {"number": self.number},
            children=(element(JID_ELEMENT, text=str(jid)) for jid in self.jids),
        )


@dataclass(frozen=True)
class PhoneBook:
    """The request (numbers, and the ``ver`` the client holds) or the result (numbers with JIDs)."""

    entries: tuple[Entry, ...] = ()
    ver: str | None = None

    @property
    def numbers(self) -> tuple[str, ...]:
        return tuple(entry.number for entry in self.entries)

    @classmethod
    def from_xml(cls, el: Element) -> PhoneBook:
        if el.tag != PHONE_BOOK:
            raise PhoneBookError("bad-request", f"expected {PHONE_BOOK}, got {el.tag}")
        entries = []
        for item in el.findall(ENTRY):
            number = item.get("number")
            if number is None or not is_e164(number):
                raise PhoneBookError(
                    "bad-request", f"an entry's number must be in E.164 form ('+' and digits), not {number!r}"
                )
            jids = []
            for jid_el in item.findall(JID_ELEMENT):
                try:
                    jids.append(JID.parse(jid_el.text or ""))
                except JIDError as err:
                    raise PhoneBookError("jid-malformed", str(err)) from None
            entries.append(Entry(number, tuple(jids)))
        return cls(tuple(entries), el.get("ver") or None)

    def to_xml(self) -> Element:
        return element(PHONE_BOOK, {"ver": self.ver}, children=(entry.to_xml() for entry in self.entries))


def answer_hash(entries: Iterable[Entry]) -> str:
    """The ``ver`` of an answer: SHA-1 over its numbers and bare JIDs in a fixed order, base64.

    Entries are ordered by number and each entry's JIDs by their text; a number is followed by
    its JIDs, each behind U+001E, and entries are separated by U+001D, as Quicksy's server
    computes it, so that a client may send the ver it got from either.
    """
    parts = []
    for entry in sorted(entries, key=lambda e: e.number):
        parts.append(entry.number + "".join("\x1e" + str(jid.bare) for jid in sorted(entry.jids, key=str)))
    return base64.b64encode(hashlib.sha1("\x1d".join(parts).encode()).digest()).decode("ascii")

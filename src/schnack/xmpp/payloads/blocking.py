"""XEP-0191: Blocking Command payloads (``urn:xmpp:blocking``), and its JID matching rules.

``<blocklist/>`` (§3.2), ``<block/>`` (§3.3) and ``<unblock/>`` (§3.4, §3.5) each carry
``<item jid='...'/>`` children; addresses are normalised as they are read (RFC 7622), so that
``Romeo@Example.NET`` and ``romeo@example.net`` are one entry. A block needs at least one item
(§3.3); an unblock without items means every entry (§3.5).
"""

from __future__ import annotations

from collections.abc import Set
from dataclasses import dataclass
from typing import ClassVar, Self
from xml.etree.ElementTree import Element

from ..jid import JID, JIDError
from ..xml import element, qname

NS = "urn:xmpp:blocking"
ERRORS = "urn:xmpp:blocking:errors"
BLOCKLIST = qname(NS, "blocklist")
BLOCK = qname(NS, "block")
UNBLOCK = qname(NS, "unblock")
ITEM = qname(NS, "item")
BLOCKED = qname(ERRORS, "blocked")


class BlockingError(ValueError):
    """A payload that breaks XEP-0191; ``condition`` is the stanza error it deserves."""

    def __init__(self, condition: str, text: str) -> None:
        super().__init__(text)
        self.condition = condition
        self.text = text


@dataclass(frozen=True)
class _Items:
    """An element of the blocking namespace holding ``<item jid='...'/>`` children."""

    TAG: ClassVar[str]
    items: tuple[JID, ...] = ()

    @classmethod
    def from_xml(cls, el: Element) -> Self:
        if el.tag != cls.TAG:
            raise BlockingError("bad-request", f"expected {cls.TAG}, got {el.tag}")
        items = []
        for item in el.findall(ITEM):
            raw = item.get("jid")
            if raw is None:
                raise BlockingError("bad-request", "an item needs a 'jid'")
            try:
                items.append(JID.parse(raw))
            except JIDError as err:
                raise BlockingError("jid-malformed", str(err)) from None
        return cls(tuple(items))

    def to_xml(self) -> Element:
        return element(self.TAG, children=(element(ITEM, {"jid": str(jid)}) for jid in self.items))


@dataclass(frozen=True)
class Blocklist(_Items):
    """§3.2: the request (empty) and the result listing every blocked JID."""

    TAG = BLOCKLIST


@dataclass(frozen=True)
class Block(_Items):
    """§3.3: block the JIDs listed, as a command or as a push; it lists at least one."""

    TAG = BLOCK

    @classmethod
    def from_xml(cls, el: Element) -> Self:
        block = super().from_xml(el)
        if not block.items:
            raise BlockingError("bad-request", "name at least one JID to block")
        return block


@dataclass(frozen=True)
class Unblock(_Items):
    """§3.4: unblock the JIDs listed; §3.5: without items, unblock every JID."""

    TAG = UNBLOCK


def blocked_condition() -> Element:
    """§3.3: the application condition of the error a user gets for a stanza to a JID it blocks."""
    return element(BLOCKED)


def blocks(blocklist: Set[JID], address: JID) -> bool:
    """Whether an entry of ``blocklist`` covers ``address`` (XEP-0191 §6, as in XEP-0016 §2.1).

    ``user@domain/resource`` and ``domain/resource`` cover only themselves, ``user@domain``
    covers each of its resources, and ``domain`` covers itself, every address at it and every
    address at any of its subdomains.
    """
    if not blocklist:
        return False
    if address in blocklist:
        return True
    if address.local is not None and JID(address.local, address.domain) in blocklist:
        return True
    domain = address.domain
    while True:
        if JID(None, domain) in blocklist:
            return True
        _, dot, domain = domain.partition(".")
        if not dot:
            return False

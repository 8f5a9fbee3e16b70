"""RFC 6121 §2.1: the roster query (``jabber:iq:roster``), with the XEP-0237 version attribute.

Parsing keeps what the element says (groups in order, duplicates and empty ones included), so
that the server can answer each violation of RFC 6121 §2.3.3 with its own error.
"""

from __future__ import annotations

from dataclasses import dataclass
from xml.etree.ElementTree import Element

from .. import ns
from ..jid import JID, JIDError
from ..xml import element, qname, sub

QUERY = qname(ns.ROSTER, "query")
_ITEM = qname(ns.ROSTER, "item")
_GROUP = qname(ns.ROSTER, "group")
# RFC 6121 §2.1.2.5; "remove" only ever appears in a roster set or push.
SUBSCRIPTIONS = frozenset({"none", "to", "from", "both", "remove"})


class RosterError(ValueError):
    """A roster query that breaks RFC 6121 §2.1; ``condition`` is the stanza error it deserves."""

    def __init__(self, condition: str, text: str) -> None:
        super().__init__(text)
        self.condition = condition
        self.text = text


@dataclass(frozen=True)
class RosterItem:
    """One contact (RFC 6121 §2.1.2): 'ask' is the pending-out flag, 'approved' a pre-approval."""

    jid: JID
    name: str | None = None
    subscription: str = "none"
    ask: bool = False
    approved: bool = False
    groups: tuple[str, ...] = ()

    @classmethod
    def from_xml(cls, el: Element) -> RosterItem:
        raw = el.get("jid")
        if raw is None:
            raise RosterError("bad-request", "a roster item needs a 'jid'")
        try:
            jid = JID.parse(raw)
        except JIDError as err:
            raise RosterError("jid-malformed", str(err)) from None
        subscription = el.get("subscription", "none")
        return cls(
            jid=jid,
            name=el.get("name"),
            # §2.1.2.5: a server ignores values it does not know; read them as the default.
            subscription=subscription if subscription in SUBSCRIPTIONS else "none",
            ask=el.get("ask") == "subscribe",
            approved=el.get("approved") in ("true", "1"),
            groups=tuple(group.text or "" for group in el.findall(_GROUP)),
        )

    def to_xml(self) -> Element:
        item = element(
            _ITEM,
            {
                "jid": str(self.jid),
                "name": self.name,
                "subscription": self.subscription,
                "ask": "subscribe" if self.ask else None,
                "approved": "true" if self.approved else None,
            },
        )
        for group in self.groups:
            sub(item, _GROUP, text=group)
        return item


@dataclass(frozen=True)
class RosterQuery:
    """A roster get, result, set or push (RFC 6121 §2.1.3-§2.1.6); ``ver`` per XEP-0237 §4."""

    items: tuple[RosterItem, ...] = ()
    ver: str | None = None

    @classmethod
    def from_xml(cls, el: Element) -> RosterQuery:
        if el.tag != QUERY:
            raise RosterError("bad-request", f"expected a jabber:iq:roster query, got {el.tag}")
        return cls(tuple(RosterItem.from_xml(item) for item in el.findall(_ITEM)), el.get("ver"))

    def to_xml(self) -> Element:
        return element(QUERY, {"ver": self.ver}, children=(item.to_xml() for item in self.items))

"""XEP-0280: Message Carbons (``urn:xmpp:carbons:2``): enabling, disabling, and the copies.

A copy is a ``<received/>`` (XEP-0280 §7) or ``<sent/>`` (§8) element holding a XEP-0297
``<forwarded/>`` message. ``<private/>`` (§9) marks a message that must not be copied; it is an
empty marker, so it has the constant :data:`PRIVATE` and no class.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from xml.etree.ElementTree import Element

from .. import ns
from ..xml import element, qname
from .forward import FORWARDED, Forwarded, ForwardError

NS = "urn:xmpp:carbons:2"
# XEP-0280 §6.2: the server follows every rule of §6.1, as requirements.
RULES = "urn:xmpp:carbons:rules:0"
ENABLE = qname(NS, "enable")
DISABLE = qname(NS, "disable")
PRIVATE = qname(NS, "private")
RECEIVED = qname(NS, "received")
SENT = qname(NS, "sent")
_MESSAGE = qname(ns.CLIENT, "message")

Direction = Literal["received", "sent"]


class CarbonsError(ValueError):
    """A carbons element that breaks XEP-0280."""


@dataclass(frozen=True)
class Toggle:
    """``<enable/>`` (XEP-0280 §4) or ``<disable/>`` (§5), the payload of an IQ set."""

    enable: bool

    @classmethod
    def from_xml(cls, el: Element) -> Toggle:
        if el.tag not in (ENABLE, DISABLE):
            raise CarbonsError(f"expected enable or disable, got {el.tag}")
        return cls(el.tag == ENABLE)

    def to_xml(self) -> Element:
        return element(ENABLE if self.enable else DISABLE)


@dataclass(frozen=True)
class Carbon:
    """A carbon copy of a message the user received (§7) or one of their resources sent (§8)."""

    direction: Direction
    forwarded: Forwarded

    @property
    def message(self) -> Element:
        """The copied message."""
        return self.forwarded.stanza

    @classmethod
    def from_xml(cls, el: Element) -> Carbon:
        if el.tag == RECEIVED:
            direction: Direction = "received"
        elif el.tag == SENT:
            direction = "sent"
        else:
            raise CarbonsError(f"expected received or sent, got {el.tag}")
        wrapped = el.find(FORWARDED)
        if wrapped is None:
            raise CarbonsError(f"a {direction} carbon holds a forwarded element")
        try:
            forwarded = Forwarded.from_xml(wrapped)
        except ForwardError as err:
            raise CarbonsError(str(err)) from None
        if forwarded.stanza.tag != _MESSAGE:
            raise CarbonsError("a carbon copies a message, nothing else")
        return cls(direction, forwarded)

    def to_xml(self) -> Element:
        return element(
            RECEIVED if self.direction == "received" else SENT, children=(self.forwarded.to_xml(),)
        )

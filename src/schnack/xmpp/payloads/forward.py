"""XEP-0297: Stanza Forwarding (the ``<forwarded/>`` wrapper), with its XEP-0203 delay.

The forwarded stanza is kept as its raw element (in ``jabber:client``, XEP-0297 §3), so that
whoever wraps a stanza passes it on unchanged and whoever unwraps one decodes only what it needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from xml.etree.ElementTree import Element

from .. import ns
from ..xml import element, qname

NS = "urn:xmpp:forward:0"
FORWARDED = qname(NS, "forwarded")
_DELAY = qname(ns.DELAY, "delay")
_STANZAS = frozenset(qname(ns.CLIENT, kind) for kind in ("message", "presence", "iq"))


class ForwardError(ValueError):
    """A ``<forwarded/>`` element that breaks XEP-0297 §3 or XEP-0203 §3."""


def format_stamp(moment: datetime) -> str:
    """A XEP-0082 DateTime in UTC; the fraction of a second only when there is one."""
    moment = moment.astimezone(UTC)
    fraction = f".{moment.microsecond:06d}" if moment.microsecond else ""
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + fraction + "Z"


def parse_stamp(text: str) -> datetime:
    """A XEP-0082 DateTime, which must name its time zone (XEP-0082 §3.2)."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ForwardError(f"{text!r} is not a XEP-0082 DateTime") from None
    if moment.tzinfo is None:
        raise ForwardError(f"the time {text!r} names no time zone")
    return moment


@dataclass(frozen=True)
class Forwarded:
    """A forwarded stanza (XEP-0297 §3) and, optionally, when it was first sent (XEP-0203)."""

    stanza: Element
    stamp: datetime | None = None

    @classmethod
    def from_xml(cls, el: Element) -> Forwarded:
        if el.tag != FORWARDED:
            raise ForwardError(f"expected a forwarded element, got {el.tag}")
        stanzas = [child for child in el if child.tag in _STANZAS]
        if len(stanzas) != 1:
            raise ForwardError("a forwarded element holds exactly one stanza in jabber:client")
        delay = el.find(_DELAY)
        stamp = None
        if delay is not None:
            text = delay.get("stamp")
            if not text:
                raise ForwardError("a delay needs a stamp")
            stamp = parse_stamp(text)
        return cls(stanzas[0], stamp)

    def to_xml(self) -> Element:
        forwarded = element(FORWARDED)
        if self.stamp is not None:
            forwarded.append(element(_DELAY, {"stamp": format_stamp(self.stamp)}))
        forwarded.append(self.stanza)
        return forwarded

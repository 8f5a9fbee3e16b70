"""Stanzas: the three kinds of top-level XML elements that carry data (RFC 6120 §8).

A :class:`Stanza` keeps its raw element and parses only what routing needs (kind, type, id and
the addresses); payloads are decoded on demand by whoever handles them.
"""

from __future__ import annotations

from xml.etree.ElementTree import Element

from . import ns
from .errors import StanzaError
from .jid import JID
from .xml import element, split

KINDS = frozenset({"message", "presence", "iq"})
IQ_TYPES = frozenset({"get", "set", "result", "error"})
MESSAGE_TYPES = frozenset({"chat", "error", "groupchat", "headline", "normal"})
PRESENCE_TYPES = frozenset(
    {"error", "probe", "subscribe", "subscribed", "unavailable", "unsubscribe", "unsubscribed"}
)


class Stanza:
    """A parsed stanza: its element and routing attributes (RFC 6120 §8.1)."""

    __slots__ = ("el", "from_", "id", "kind", "namespace", "to", "type")

    def __init__(self, el: Element, to: JID | None, from_: JID | None) -> None:
        self.el = el
        namespace, kind = split(el.tag)
        self.namespace = namespace or ns.CLIENT
        self.kind = kind
        self.type = el.get("type")
        self.id = el.get("id")
        self.to = to
        self.from_ = from_

    @classmethod
    def parse(cls, el: Element) -> Stanza:
        """Wrap an element, parsing its addresses; a bad address raises jid-malformed."""
        to = el.get("to")
        from_ = el.get("from")
        try:
            return cls(el, JID.parse(to) if to else None, JID.parse(from_) if from_ else None)
        except ValueError as err:
            raise StanzaError("jid-malformed", str(err)) from None

    @property
    def payload(self) -> Element | None:
        """The single child of an IQ get/set (RFC 6120 §8.2.3), else the first child."""
        return self.el[0] if len(self.el) else None

    @property
    def is_response(self) -> bool:
        """An error or an IQ result: nothing answers it, not even with an error, since the
        requester would then answer the answer (RFC 6120 §8.2.3, §8.3.1)."""
        return self.type == "error" or (self.kind == "iq" and self.type == "result")

    def shape_error(self) -> StanzaError | None:
        """RFC 6120 §8.2.3 and RFC 6121 §4.7.1: what every IQ and presence must look like to be routed."""
        if self.kind == "iq":
            if not self.id:
                return StanzaError("bad-request", "an iq needs an id")
            if self.type not in IQ_TYPES:
                return StanzaError("bad-request", "iq type must be get, set, result or error")
            if self.type in ("get", "set") and len(self.el) != 1:
                return StanzaError("bad-request", "an iq get or set carries exactly one child element")
        elif self.kind == "presence" and self.type is not None and self.type not in PRESENCE_TYPES:
            return StanzaError("bad-request", f"unknown presence type {self.type!r}")
        return None

    def set_from(self, jid: JID) -> None:
        """Stamp the sender address (RFC 6120 §8.1.2.1)."""
        self.from_ = jid
        self.el.set("from", str(jid))

    def set_to(self, jid: JID) -> None:
        """Address the stanza to ``jid``."""
        self.to = jid
        self.el.set("to", str(jid))

    def result(self, payload: Element | None = None) -> Element:
        """The IQ result for this get/set (RFC 6120 §8.2.3)."""
        reply = element(
            f"{{{self.namespace}}}iq",
            {
                "type": "result",
                "id": self.id,
                "to": self.el.get("from"),
                "from": self.el.get("to"),
            },
        )
        if payload is not None:
            reply.append(payload)
        return reply

    def error(self, err: StanzaError) -> Element:
        """The error reply to this stanza (RFC 6120 §8.3.1): its children are left out except for IQs."""
        reply = element(
            f"{{{self.namespace}}}{self.kind}",
            {"type": "error", "id": self.id, "to": self.el.get("from"), "from": self.el.get("to")},
        )
        if self.kind == "iq" and len(self.el):
            reply.append(self.el[0])
        reply.append(err.to_xml(self.namespace))
        return reply

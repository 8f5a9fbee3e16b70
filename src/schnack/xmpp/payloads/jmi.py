"""XEP-0353: Jingle Message Initiation (v0.8.0): proposing a call in a message stanza.

The caller sends ``<propose/>`` with the RTP description(s) to the callee's bare JID (§3.1),
so every device rings; one device sends ``<ringing/>`` (§3.2) and ``<proceed/>`` (§3.3) or
``<reject/>`` (§3.4), the caller may ``<retract/>`` (§3.5), and either party sends
``<finish/>`` when the session ended (§3.6), optionally saying where it ``<migrated/>``.
Reject and retract may carry ``<tie-break/>`` when two proposals crossed (§4.1). The
``id`` is the Jingle session id the following session-initiate uses.

``<accept/>`` is v0.3's (§3.3 there): sent to the responder's own bare JID so that its other
devices stop ringing. Conversations and Dino still send it besides ``<proceed/>``, and Dino's
messages are of type normal, whose ``<proceed/>`` no carbon copies: ``<accept/>`` is read, and
sent too, so that such a client on the same account stops ringing when we answer.

``<proceed/>`` may also carry the OMEMO device id that will sign the DTLS fingerprint, in the
namespace Conversations uses for verified calls.
"""

from __future__ import annotations

from dataclasses import dataclass
from xml.etree.ElementTree import Element

from ..xml import element, qname, split, sub
from .jingle import REASON as JINGLE_REASON
from .jingle import Reason
from .jingle_ice import VERIFICATION, JinglePayloadError, integer, required
from .jingle_rtp import DESCRIPTION, RtpDescription

NS = "urn:xmpp:jingle-message:0"
KINDS = frozenset({"propose", "ringing", "proceed", "accept", "reject", "retract", "finish"})
TIE_BREAK = qname(NS, "tie-break")
MIGRATED = qname(NS, "migrated")
DEVICE = qname(VERIFICATION, "device")


class JmiError(JinglePayloadError):
    """A JMI element that breaks XEP-0353."""


@dataclass(frozen=True)
class JingleMessage:
    """One JMI element: ``kind`` is its local name, ``id`` the Jingle session id."""

    kind: str
    id: str
    descriptions: tuple[RtpDescription, ...] = ()
    reason: Reason | None = None
    tie_break: bool = False
    migrated_to: str | None = None
    device: int | None = None

    @classmethod
    def from_xml(cls, el: Element) -> JingleMessage:
        namespace, kind = split(el.tag)
        if namespace != NS or kind not in KINDS:
            raise JmiError(f"expected a jingle message, got {el.tag}")
        descriptions = tuple(RtpDescription.from_xml(d) for d in el.findall(DESCRIPTION))
        if kind == "propose" and not descriptions and not len(el):
            raise JmiError("a proposal names at least one description")
        reason = el.find(JINGLE_REASON)
        migrated = el.find(MIGRATED)
        device = el.find(DEVICE)
        return cls(
            kind=kind,
            id=required(el, "id"),
            descriptions=descriptions,
            reason=None if reason is None else Reason.from_xml(reason),
            tie_break=el.find(TIE_BREAK) is not None,
            migrated_to=None if migrated is None else required(migrated, "to"),
            device=None if device is None else integer(device, "id"),
        )

    def to_xml(self) -> Element:
        el = element(qname(NS, self.kind), {"id": self.id})
        el.extend(d.to_xml() for d in self.descriptions)
        if self.reason is not None:
            el.append(self.reason.to_xml())
        if self.tie_break:
            sub(el, TIE_BREAK)
        if self.migrated_to is not None:
            sub(el, MIGRATED, {"to": self.migrated_to})
        if self.device is not None:
            sub(el, DEVICE, {"id": str(self.device)})
        return el

    @property
    def media(self) -> tuple[str, ...]:
        """The media a proposal names (``audio``, ``video``)."""
        return tuple(d.media for d in self.descriptions)


def find(message: Element) -> JingleMessage | None:
    """The JMI element of a message stanza, if it has one."""
    for child in message:
        namespace, local = split(child.tag)
        if namespace == NS and local in KINDS:
            return JingleMessage.from_xml(child)
    return None

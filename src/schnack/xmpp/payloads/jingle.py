"""XEP-0166: Jingle (v1.1.2): the ``<jingle/>`` element, its contents, reasons and errors.

A content holds one application description and one transport (§7.3); this core knows the RTP
description (XEP-0167, :mod:`.jingle_rtp`) and the ICE-UDP transport (XEP-0176,
:mod:`.jingle_ice`). Any other description or transport is kept by namespace only, so a peer
can answer ``unsupported-applications`` / ``unsupported-transports`` (§6.3.1, §7.4).
"""

from __future__ import annotations

from dataclasses import dataclass
from xml.etree.ElementTree import Element

from ..errors import StanzaError
from ..xml import element, qname, split, sub
from .jingle_ice import TRANSPORT, IceUdpTransport, JinglePayloadError, required
from .jingle_rtp import DESCRIPTION, GROUP, Group, RtpDescription

NS = "urn:xmpp:jingle:1"
ERRORS = "urn:xmpp:jingle:errors:1"
JINGLE = qname(NS, "jingle")
CONTENT = qname(NS, "content")
REASON = qname(NS, "reason")
TEXT = qname(NS, "text")
ALTERNATIVE_SID = qname(NS, "sid")

# §7.2: every action; the session-level ones the RTP calls here use are named below.
ACTIONS = frozenset(
    {
        "content-accept", "content-add", "content-modify", "content-reject", "content-remove",
        "description-info", "security-info", "session-accept", "session-info", "session-initiate",
        "session-terminate", "transport-accept", "transport-info", "transport-reject",
        "transport-replace",
    }
)  # fmt: skip
# §7.4: the reason conditions.
REASONS = frozenset(
    {
        "alternative-session", "busy", "cancel", "connectivity-error", "decline", "expired",
        "failed-application", "failed-transport", "general-error", "gone", "incompatible-parameters",
        "media-error", "security-error", "success", "timeout", "unsupported-applications",
        "unsupported-transports",
    }
)  # fmt: skip
CREATORS = frozenset({"initiator", "responder"})
SENDERS = frozenset({"both", "initiator", "none", "responder"})
# §8 and §10: each Jingle error condition with the stanza error it rides in.
ERROR_CONDITIONS: dict[str, str] = {
    "out-of-order": "unexpected-request",
    "tie-break": "conflict",
    "unknown-session": "item-not-found",
    "unsupported-info": "feature-not-implemented",
}


class JingleError(JinglePayloadError):
    """A ``<jingle/>`` element that breaks XEP-0166 (answered with bad-request, §6.3.2)."""


def jingle_error(condition: str, text: str | None = None) -> StanzaError:
    """§8: the stanza error carrying Jingle error ``condition`` (``unknown-session``...)."""
    stanza_condition = ERROR_CONDITIONS[condition]
    # §7.2.10: an unknown session-info payload is a 'modify' error, not the usual 'cancel'.
    kind = "modify" if condition == "unsupported-info" else None
    return StanzaError(stanza_condition, text, type=kind, extra=element(qname(ERRORS, condition)))


def error_condition(error: Element) -> str | None:
    """The Jingle error condition inside an ``<error/>`` element, if any."""
    for el in error:
        namespace, local = split(el.tag)
        if namespace == ERRORS:
            return local
    return None


@dataclass(frozen=True)
class Reason:
    """§7.4: why a session or content ends; ``alternative-session`` names the other session."""

    condition: str
    text: str | None = None
    alternative_sid: str | None = None

    @classmethod
    def from_xml(cls, el: Element) -> Reason:
        condition = None
        alternative = None
        for child in el:
            namespace, local = split(child.tag)
            if namespace == NS and local in REASONS:
                condition = local
                sid = child.find(ALTERNATIVE_SID)
                alternative = None if sid is None else (sid.text or "")
        if condition is None:
            raise JingleError("a reason needs a defined condition")
        text = el.find(TEXT)
        return cls(condition, None if text is None else text.text or "", alternative)

    def to_xml(self) -> Element:
        reason = element(REASON)
        condition = sub(reason, qname(NS, self.condition))
        if self.alternative_sid is not None:
            sub(condition, ALTERNATIVE_SID, text=self.alternative_sid)
        if self.text is not None:
            sub(reason, TEXT, text=self.text)
        return reason


@dataclass(frozen=True)
class Content:
    """§7.3: one content; ``other_description``/``other_transport`` name unsupported ones."""

    creator: str
    name: str
    senders: str = "both"
    disposition: str | None = None
    description: RtpDescription | None = None
    transport: IceUdpTransport | None = None
    other_description: str | None = None
    other_transport: str | None = None

    @classmethod
    def from_xml(cls, el: Element) -> Content:
        creator = required(el, "creator")
        if creator not in CREATORS:
            raise JingleError(f"unknown creator {creator!r}")
        senders = el.get("senders", "both")
        if senders not in SENDERS:
            raise JingleError(f"unknown senders {senders!r}")
        description = transport = None
        other_description = other_transport = None
        for child in el:
            namespace, local = split(child.tag)
            if local == "description":
                if child.tag == DESCRIPTION:
                    description = RtpDescription.from_xml(child)
                else:
                    other_description = namespace or ""
            elif local == "transport":
                if child.tag == TRANSPORT:
                    transport = IceUdpTransport.from_xml(child)
                else:
                    other_transport = namespace or ""
        return cls(
            creator, required(el, "name"), senders, el.get("disposition"),
            description, transport, other_description, other_transport,
        )  # fmt: skip

    def to_xml(self) -> Element:
        content = element(
            CONTENT,
            {
                "creator": self.creator,
                "name": self.name,
                "senders": None if self.senders == "both" else self.senders,
                "disposition": self.disposition,
            },
        )
        if self.description is not None:
            content.append(self.description.to_xml())
        elif self.other_description is not None:
            content.append(element(qname(self.other_description, "description")))
        if self.transport is not None:
            content.append(self.transport.to_xml())
        elif self.other_transport is not None:
            content.append(element(qname(self.other_transport, "transport")))
        return content


@dataclass(frozen=True)
class Info:
    """§7.2.10: the payload of a ``session-info`` (e.g. XEP-0167 §7 ``<ringing/>``, ``<mute/>``)."""

    tag: str
    attributes: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_xml(cls, el: Element) -> Info:
        return cls(el.tag, tuple(sorted(el.attrib.items())))

    def to_xml(self) -> Element:
        return element(self.tag, dict(self.attributes))


@dataclass(frozen=True)
class Jingle:
    """§7.1: the ``<jingle/>`` element of one action on session ``sid``."""

    action: str
    sid: str
    initiator: str | None = None
    responder: str | None = None
    contents: tuple[Content, ...] = ()
    reason: Reason | None = None
    groups: tuple[Group, ...] = ()
    info: Info | None = None

    @classmethod
    def from_xml(cls, el: Element) -> Jingle:
        if el.tag != JINGLE:
            raise JingleError(f"expected a jingle element, got {el.tag}")
        action = required(el, "action")
        if action not in ACTIONS:
            raise JingleError(f"unknown action {action!r}")
        reason = el.find(REASON)
        info = None
        if action == "session-info":
            payloads = [child for child in el if split(child.tag)[0] != NS]
            if len(payloads) > 1:
                raise JingleError("a session-info carries at most one payload")
            info = Info.from_xml(payloads[0]) if payloads else None
        return cls(
            action=action,
            sid=required(el, "sid"),
            initiator=el.get("initiator"),
            responder=el.get("responder"),
            contents=tuple(Content.from_xml(c) for c in el.findall(CONTENT)),
            reason=None if reason is None else Reason.from_xml(reason),
            groups=tuple(Group.from_xml(g) for g in el.findall(GROUP)),
            info=info,
        )

    def to_xml(self) -> Element:
        jingle = element(
            JINGLE,
            {"action": self.action, "sid": self.sid, "initiator": self.initiator, "responder": self.responder},
        )
        jingle.extend(g.to_xml() for g in self.groups)
        jingle.extend(c.to_xml() for c in self.contents)
        if self.reason is not None:
            jingle.append(self.reason.to_xml())
        if self.info is not None:
            jingle.append(self.info.to_xml())
        return jingle

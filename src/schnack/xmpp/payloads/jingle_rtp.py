"""XEP-0167: Jingle RTP Sessions (v1.2) description, with the extensions WebRTC needs.

- XEP-0167 §4: ``<description media=.../>`` with payload types and their parameters, and
  ``<rtcp-mux/>`` (§5.2); the session-info messages of §7 (``ringing``, ``active``, ``hold``,
  ``mute``...) live in :data:`INFO`.
- XEP-0293 (v1.0): ``<rtcp-fb/>`` and ``<rtcp-fb-trr-int/>`` in a payload type or the description.
- XEP-0294 (v1.1): ``<rtp-hdrext/>`` and ``<extmap-allow-mixed/>``.
- XEP-0339 (v1.0): ``<source ssrc=.../>`` with ``<parameter/>`` children and ``<ssrc-group/>``.
- XEP-0338 (v1.0): ``<group semantics='BUNDLE'/>`` naming contents, a child of ``<jingle/>``.
"""

from __future__ import annotations

from dataclasses import dataclass
from xml.etree.ElementTree import Element

from ..xml import element, qname, sub
from .jingle_ice import JinglePayloadError, integer, required

NS = "urn:xmpp:jingle:apps:rtp:1"
INFO = "urn:xmpp:jingle:apps:rtp:info:1"
RTCP_FB = "urn:xmpp:jingle:apps:rtp:rtcp-fb:0"
HDREXT = "urn:xmpp:jingle:apps:rtp:rtp-hdrext:0"
SSMA = "urn:xmpp:jingle:apps:rtp:ssma:0"
GROUPING = "urn:xmpp:jingle:apps:grouping:0"
AUDIO = "urn:xmpp:jingle:apps:rtp:audio"

DESCRIPTION = qname(NS, "description")
PAYLOAD_TYPE = qname(NS, "payload-type")
PARAMETER = qname(NS, "parameter")
RTCP_MUX = qname(NS, "rtcp-mux")
FB = qname(RTCP_FB, "rtcp-fb")
TRR_INT = qname(RTCP_FB, "rtcp-fb-trr-int")
RTP_HDREXT = qname(HDREXT, "rtp-hdrext")
EXTMAP_ALLOW_MIXED = qname(HDREXT, "extmap-allow-mixed")
SOURCE = qname(SSMA, "source")
SOURCE_PARAMETER = qname(SSMA, "parameter")
SSRC_GROUP = qname(SSMA, "ssrc-group")
GROUP = qname(GROUPING, "group")
GROUP_CONTENT = qname(GROUPING, "content")

SENDERS = frozenset({"initiator", "responder", "both", "none"})


class RtpError(JinglePayloadError):
    """A description that breaks XEP-0167 or one of its extensions."""


@dataclass(frozen=True)
class Parameter:
    """A name/value pair: a payload type's format parameter (XEP-0167 §4), or a source's (XEP-0339 §3.1).

    A format parameter that SDP writes without a name (``a=fmtp:63 111/111`` of RFC 2198 §5,
    telephone-event's ``0-15``) has the empty name: ``<parameter name='' value='111/111'/>``, the
    form Conversations reads (it refuses a parameter without a value).
    """

    name: str
    value: str | None = None


def _parameters(el: Element, tag: str) -> tuple[Parameter, ...]:
    return tuple(Parameter(required(p, "name"), p.get("value")) for p in el.findall(tag))


def _format_parameters(el: Element) -> tuple[Parameter, ...]:
    """XEP-0167 §4 format parameters; one without a name (or with an empty one) keeps its value."""
    found = []
    for p in el.findall(PARAMETER):
        name, value = p.get("name") or "", p.get("value")
        if not name and not value:
            raise JinglePayloadError("<parameter> needs 'name' or 'value'")
        found.append(Parameter(name, value))
    return tuple(found)


def _write_parameters(parent: Element, tag: str, parameters: tuple[Parameter, ...]) -> None:
    for p in parameters:
        sub(parent, tag, {"name": p.name, "value": p.value})


@dataclass(frozen=True)
class RtcpFeedback:
    """XEP-0293 §3: one RTCP feedback mechanism, e.g. ``nack`` / ``pli`` or ``transport-cc``."""

    type: str
    subtype: str | None = None

    @classmethod
    def from_xml(cls, el: Element) -> RtcpFeedback:
        return cls(required(el, "type"), el.get("subtype"))

    def to_xml(self) -> Element:
        return element(FB, {"type": self.type, "subtype": self.subtype})


def _feedback(el: Element) -> tuple[tuple[RtcpFeedback, ...], int | None]:
    trr = el.find(TRR_INT)
    return tuple(RtcpFeedback.from_xml(f) for f in el.findall(FB)), None if trr is None else integer(trr, "value")


def _write_feedback(parent: Element, feedback: tuple[RtcpFeedback, ...], trr_int: int | None) -> None:
    parent.extend(f.to_xml() for f in feedback)
    if trr_int is not None:
        sub(parent, TRR_INT, {"value": str(trr_int)})


@dataclass(frozen=True)
class PayloadType:
    """XEP-0167 §4: one codec offered, with its format parameters and (XEP-0293) feedback."""

    id: int
    name: str | None = None
    clockrate: int | None = None
    channels: int = 1
    ptime: int | None = None
    maxptime: int | None = None
    parameters: tuple[Parameter, ...] = ()
    feedback: tuple[RtcpFeedback, ...] = ()
    trr_int: int | None = None

    @classmethod
    def from_xml(cls, el: Element) -> PayloadType:
        clockrate, ptime, maxptime = el.get("clockrate"), el.get("ptime"), el.get("maxptime")
        feedback, trr_int = _feedback(el)
        return cls(
            id=integer(el, "id", high=127),
            name=el.get("name"),
            clockrate=None if clockrate is None else integer(el, "clockrate"),
            channels=integer(el, "channels", default=1, low=1, high=255),
            ptime=None if ptime is None else integer(el, "ptime"),
            maxptime=None if maxptime is None else integer(el, "maxptime"),
            parameters=_format_parameters(el),
            feedback=feedback,
            trr_int=trr_int,
        )

    def to_xml(self) -> Element:
        pt = element(
            PAYLOAD_TYPE,
            {
                "id": str(self.id),
                "name": self.name,
                "clockrate": None if self.clockrate is None else str(self.clockrate),
                "channels": None if self.channels == 1 else str(self.channels),
                "ptime": None if self.ptime is None else str(self.ptime),
                "maxptime": None if self.maxptime is None else str(self.maxptime),
            },
        )
        _write_parameters(pt, PARAMETER, self.parameters)
        _write_feedback(pt, self.feedback, self.trr_int)
        return pt


@dataclass(frozen=True)
class HeaderExtension:
    """XEP-0294 §3: an RTP header extension with its local id and URI."""

    id: int
    uri: str
    senders: str = "both"

    @classmethod
    def from_xml(cls, el: Element) -> HeaderExtension:
        senders = el.get("senders", "both")
        if senders not in SENDERS:
            raise RtpError(f"unknown senders {senders!r}")
        return cls(integer(el, "id", low=1, high=4095), required(el, "uri"), senders)

    def to_xml(self) -> Element:
        return element(
            RTP_HDREXT,
            {"id": str(self.id), "uri": self.uri, "senders": None if self.senders == "both" else self.senders},
        )


@dataclass(frozen=True)
class Source:
    """XEP-0339 §3.1: a synchronisation source and its attributes (``cname``, ``msid``...)."""

    ssrc: int
    parameters: tuple[Parameter, ...] = ()

    @classmethod
    def from_xml(cls, el: Element) -> Source:
        return cls(integer(el, "ssrc"), _parameters(el, SOURCE_PARAMETER))

    def to_xml(self) -> Element:
        source = element(SOURCE, {"ssrc": str(self.ssrc)})
        _write_parameters(source, SOURCE_PARAMETER, self.parameters)
        return source


@dataclass(frozen=True)
class SourceGroup:
    """XEP-0339 §3.2: sources that belong together, e.g. ``FID`` (a stream and its retransmission)."""

    semantics: str
    ssrcs: tuple[int, ...]

    @classmethod
    def from_xml(cls, el: Element) -> SourceGroup:
        return cls(required(el, "semantics"), tuple(integer(s, "ssrc") for s in el.findall(SOURCE)))

    def to_xml(self) -> Element:
        group = element(SSRC_GROUP, {"semantics": self.semantics})
        for ssrc in self.ssrcs:
            sub(group, SOURCE, {"ssrc": str(ssrc)})
        return group


@dataclass(frozen=True)
class RtpDescription:
    """XEP-0167 §4: the media of one content and how it may be sent."""

    media: str
    payload_types: tuple[PayloadType, ...] = ()
    ssrc: int | None = None
    rtcp_mux: bool = False
    feedback: tuple[RtcpFeedback, ...] = ()
    trr_int: int | None = None
    header_extensions: tuple[HeaderExtension, ...] = ()
    extmap_allow_mixed: bool = False
    sources: tuple[Source, ...] = ()
    source_groups: tuple[SourceGroup, ...] = ()

    @classmethod
    def from_xml(cls, el: Element) -> RtpDescription:
        if el.tag != DESCRIPTION:
            raise RtpError(f"expected an RTP description, got {el.tag}")
        ssrc = el.get("ssrc")
        feedback, trr_int = _feedback(el)
        return cls(
            media=required(el, "media"),
            payload_types=tuple(PayloadType.from_xml(p) for p in el.findall(PAYLOAD_TYPE)),
            ssrc=None if ssrc is None else integer(el, "ssrc"),
            rtcp_mux=el.find(RTCP_MUX) is not None,
            feedback=feedback,
            trr_int=trr_int,
            header_extensions=tuple(HeaderExtension.from_xml(h) for h in el.findall(RTP_HDREXT)),
            extmap_allow_mixed=el.find(EXTMAP_ALLOW_MIXED) is not None,
            sources=tuple(Source.from_xml(s) for s in el.findall(SOURCE)),
            source_groups=tuple(SourceGroup.from_xml(g) for g in el.findall(SSRC_GROUP)),
        )

    def to_xml(self) -> Element:
        desc = element(DESCRIPTION, {"media": self.media, "ssrc": None if self.ssrc is None else str(self.ssrc)})
        desc.extend(p.to_xml() for p in self.payload_types)
        _write_feedback(desc, self.feedback, self.trr_int)
        desc.extend(h.to_xml() for h in self.header_extensions)
        if self.extmap_allow_mixed:
            sub(desc, EXTMAP_ALLOW_MIXED)
        desc.extend(s.to_xml() for s in self.sources)
        desc.extend(g.to_xml() for g in self.source_groups)
        if self.rtcp_mux:
            sub(desc, RTCP_MUX)
        return desc


@dataclass(frozen=True)
class Group:
    """XEP-0338 §3: contents grouped under one semantics (``BUNDLE``: one transport for all)."""

    semantics: str
    contents: tuple[str, ...]

    @classmethod
    def from_xml(cls, el: Element) -> Group:
        return cls(required(el, "semantics"), tuple(required(c, "name") for c in el.findall(GROUP_CONTENT)))

    def to_xml(self) -> Element:
        group = element(GROUP, {"semantics": self.semantics})
        for name in self.contents:
            sub(group, GROUP_CONTENT, {"name": name})
        return group

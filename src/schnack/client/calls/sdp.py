"""SDP (RFC 8866) parsing and writing, and the mapping between Jingle RTP sessions and SDP.

WebRTC engines (aiortc, browsers) speak SDP offers and answers; XMPP peers speak Jingle. The
mapping follows what Conversations does, so calls work with it, Monal and Dino:

- one m= section per content; the content name is the ``a=mid`` (RFC 8843 §9.1);
- ``a=group:BUNDLE`` ↔ XEP-0338 ``<group semantics='BUNDLE'/>``;
- ``a=rtpmap``/``a=fmtp``/``a=rtcp-fb``/``a=ptime``/``a=maxptime`` ↔ XEP-0167 payload types
  (with XEP-0293 feedback; ``rtcp-fb:*`` and ``a=rtcp-fb-trr-int`` sit on the description);
- ``a=extmap`` ↔ XEP-0294, ``a=ssrc``/``a=ssrc-group`` ↔ XEP-0339, ``a=rtcp-mux``;
- ``a=ice-ufrag``/``a=ice-pwd``/``a=candidate`` (RFC 8839 §5) ↔ XEP-0176; only UDP candidates
  map, since the Jingle transport is ICE-UDP;
- ``a=fingerprint`` (RFC 8122 §5) and ``a=setup`` (RFC 4145 §4, RFC 5763 §5) ↔ XEP-0320;
- the direction attribute ↔ the content's ``senders``, seen from the party that wrote the SDP.

What SDP holds and Jingle does not (``a=msid``, TCP candidates, the origin line) is dropped; what
Jingle holds and SDP does not (candidate ids) is derived, so a session description read from SDP
maps to Jingle and back to the same Jingle.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace

from ...xmpp.payloads.jingle import Content
from ...xmpp.payloads.jingle_ice import Candidate, Fingerprint, IceUdpTransport
from ...xmpp.payloads.jingle_rtp import (
    Group,
    HeaderExtension,
    Parameter,
    PayloadType,
    RtcpFeedback,
    RtpDescription,
    Source,
    SourceGroup,
)

RTP_MEDIA = frozenset({"audio", "video"})
SECURE_PROFILE = "UDP/TLS/RTP/SAVPF"
PLAIN_PROFILE = "RTP/AVPF"
DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
# Line types of RFC 8866 §5 that carry nothing the mapping uses; they are read and dropped.
IGNORED_LINES = frozenset("iuepzkr")


class SdpError(ValueError):
    """SDP that breaks RFC 8866 or cannot be mapped to a Jingle RTP session."""


@dataclass(frozen=True)
class Attribute:
    """``a=name:value``, or the flag ``a=name`` (RFC 8866 §5.13)."""

    name: str
    value: str | None = None

    def __str__(self) -> str:
        return self.name if self.value is None else f"{self.name}:{self.value}"

    @classmethod
    def parse(cls, text: str) -> Attribute:
        name, colon, value = text.partition(":")
        if not name or any(c.isspace() for c in name):
            raise SdpError(f"bad attribute {text!r}")
        return cls(name, value if colon else None)


@dataclass(frozen=True)
class Media:
    """One media description (RFC 8866 §5.14): the m= line and its c=, b= and a= lines."""

    kind: str
    port: int
    protocol: str
    formats: tuple[str, ...]
    connection: str | None = None
    bandwidths: tuple[str, ...] = ()
    attributes: tuple[Attribute, ...] = ()

    def get(self, name: str) -> str | None:
        """The value of the first attribute ``name`` ('' for a flag), or None."""
        for a in self.attributes:
            if a.name == name:
                return a.value if a.value is not None else ""
        return None

    def all(self, name: str) -> list[str]:
        """The values of every attribute ``name``."""
        return [a.value or "" for a in self.attributes if a.name == name]


@dataclass(frozen=True)
class SessionDescription:
    """A whole SDP (RFC 8866 §5): session-level lines, then the media descriptions."""

    origin: str = "- 0 0 IN IP4 127.0.0.1"
    name: str = "-"
    timing: str = "0 0"
    connection: str | None = None
    bandwidths: tuple[str, ...] = ()
    attributes: tuple[Attribute, ...] = ()
    media: tuple[Media, ...] = field(default_factory=tuple)

    @classmethod
    def parse(cls, text: str) -> SessionDescription:
        """Read SDP; lines end in CRLF (RFC 8866 §5) but a bare LF is accepted too."""
        lines = [line.rstrip("\r") for line in text.split("\n")]
        while lines and not lines[-1]:
            lines.pop()
        if not lines or lines[0] != "v=0":
            raise SdpError("SDP starts with v=0")
        session: dict[str, str] = {}
        session_bandwidths: list[str] = []
        session_attributes: list[Attribute] = []
        media: list[_MediaLines] = []
        for line in lines[1:]:
            if len(line) < 2 or line[1] != "=":
                raise SdpError(f"bad SDP line {line!r}")
            kind, value = line[0], line[2:]
            if kind == "m":
                media.append(_MediaLines.of(value))
            elif kind in IGNORED_LINES:
                continue
            elif media:
                media[-1].add(kind, value)
            elif kind == "a":
                session_attributes.append(Attribute.parse(value))
            elif kind == "b":
                session_bandwidths.append(value)
            elif kind in "ostc":
                if kind in session:
                    raise SdpError(f"more than one {kind}= line")
                session[kind] = value
            else:
                raise SdpError(f"unknown SDP line type {kind!r}")
        for required in "ost":
            if required not in session:
                raise SdpError(f"SDP needs an {required}= line")
        return cls(
            origin=session["o"], name=session["s"], timing=session["t"], connection=session.get("c"),
            bandwidths=tuple(session_bandwidths), attributes=tuple(session_attributes),
            media=tuple(m.build() for m in media),
        )

    def __str__(self) -> str:
        out = ["v=0", f"o={self.origin}", f"s={self.name}"]
        if self.connection is not None:
            out.append(f"c={self.connection}")
        out += [f"b={b}" for b in self.bandwidths]
        out.append(f"t={self.timing}")
        out += [f"a={a}" for a in self.attributes]
        for m in self.media:
            out.append(f"m={m.kind} {m.port} {m.protocol} {' '.join(m.formats)}".rstrip())
            if m.connection is not None:
                out.append(f"c={m.connection}")
            out += [f"b={b}" for b in m.bandwidths]
            out += [f"a={a}" for a in m.attributes]
        return "\r\n".join(out) + "\r\n"

    def get(self, name: str) -> str | None:
        """The value of the first session-level attribute ``name`` ('' for a flag), or None."""
        for a in self.attributes:
            if a.name == name:
                return a.value if a.value is not None else ""
        return None


@dataclass
class _MediaLines:
    """A media description while it is read."""

    kind: str
    port: int
    protocol: str
    formats: tuple[str, ...]
    connection: str | None = None
    bandwidths: list[str] = field(default_factory=list)
    attributes: list[Attribute] = field(default_factory=list)

    @classmethod
    def of(cls, value: str) -> _MediaLines:
        parts = value.split()
        if len(parts) < 3:
            raise SdpError(f"bad m= line {value!r}")
        port = parts[1].partition("/")[0]
        if not (port.isascii() and port.isdigit()) or int(port) > 65535:
            raise SdpError(f"bad port in m= line {value!r}")
        return cls(parts[0], int(port), parts[2], tuple(parts[3:]))

    def add(self, kind: str, value: str) -> None:
        if kind == "a":
            self.attributes.append(Attribute.parse(value))
        elif kind == "b":
            self.bandwidths.append(value)
        elif kind == "c":
            self.connection = value
        else:
            raise SdpError(f"{kind}= is not allowed in a media description")

    def build(self) -> Media:
        return Media(self.kind, self.port, self.protocol, self.formats, self.connection,
                     tuple(self.bandwidths), tuple(self.attributes))  # fmt: skip


# -- candidates (RFC 8839 §5.1) -------------------------------------------------------------------


def parse_candidate(value: str) -> Candidate | None:
    """An ``a=candidate`` value as a Jingle candidate; None for a non-UDP candidate."""
    parts = value.split()
    if len(parts) < 8 or parts[6] != "typ":
        raise SdpError(f"bad candidate {value!r}")
    foundation, component, protocol, priority, ip, port, _, kind = parts[:8]
    if protocol.lower() != "udp":
        return None
    extensions = dict(zip(parts[8::2], parts[9::2], strict=False))
    try:
        rel_port = extensions.get("rport")
        candidate = Candidate(
            component=int(component),
            foundation=foundation,
            generation=int(extensions.get("generation", "0")),
            id="",
            ip=ip,
            port=int(port),
            priority=int(priority),
            protocol="udp",
            type=kind,
            network=int(extensions.get("network-id", "0")),
            rel_addr=extensions.get("raddr"),
            rel_port=None if rel_port is None else int(rel_port),
        )
    except ValueError:
        raise SdpError(f"bad number in candidate {value!r}") from None
    if not 1 <= candidate.component <= 256 or not 0 <= candidate.port <= 65535:
        raise SdpError(f"bad component or port in candidate {value!r}")
    return replace(candidate, id=candidate_id(candidate))


def candidate_id(candidate: Candidate) -> str:
    """XEP-0176 §5.2 wants an id SDP does not have: derive a stable one from what identifies it."""
    key = f"{candidate.foundation} {candidate.component} {candidate.ip} {candidate.port} {candidate.type}"
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def write_candidate(candidate: Candidate) -> str:
    """A Jingle candidate as an ``a=candidate`` value."""
    parts = [
        candidate.foundation, str(candidate.component), candidate.protocol, str(candidate.priority),
        candidate.ip, str(candidate.port), "typ", candidate.type,
    ]  # fmt: skip
    if candidate.rel_addr is not None:
        parts += ["raddr", candidate.rel_addr]
    if candidate.rel_port is not None:
        parts += ["rport", str(candidate.rel_port)]
    parts += ["generation", str(candidate.generation)]
    if candidate.network:
        parts += ["network-id", str(candidate.network)]
    return " ".join(parts)


# -- direction ----------------------------------------------------------------------------------


def senders_of(direction: str, writer: str) -> str:
    """The Jingle ``senders`` for an SDP direction written by ``writer`` (initiator/responder)."""
    other = "responder" if writer == "initiator" else "initiator"
    return {"sendrecv": "both", "sendonly": writer, "recvonly": other, "inactive": "none"}[direction]


def direction_of(senders: str, writer: str) -> str:
    """The SDP direction for Jingle ``senders``, written by ``writer``."""
    if senders == "both":
        return "sendrecv"
    if senders == "none":
        return "inactive"
    return "sendonly" if senders == writer else "recvonly"


# -- SDP -> Jingle --------------------------------------------------------------------------------


@dataclass(frozen=True)
class RtpContents:
    """What a Jingle session-initiate/accept carries of an SDP: the contents and their groups."""

    contents: tuple[Content, ...]
    groups: tuple[Group, ...] = ()


def _int(text: str, what: str) -> int:
    if not (text.isascii() and text.isdigit()):
        raise SdpError(f"bad {what} {text!r}")
    return int(text)


def _fmtp(value: str) -> tuple[Parameter, ...]:
    params = []
    for raw in value.split(";"):
        item = raw.strip()
        if not item:
            continue
        name, eq, val = item.partition("=")
        # A value without a name (telephone-event's "0-15", red's "111/111") has the empty name.
        params.append(Parameter(name.strip(), val.strip()) if eq else Parameter("", item))
    return tuple(params)


def _description(m: Media, writer: str) -> RtpDescription:
    rtpmaps: dict[str, tuple[str | None, int | None, int]] = {}
    fmtps: dict[str, tuple[Parameter, ...]] = {}
    feedback: dict[str, list[RtcpFeedback]] = {}
    trr_int: dict[str, int] = {}
    for value in m.all("rtpmap"):
        pt, _, codec = value.partition(" ")
        encoding, _, rest = codec.partition("/")
        clock, _, count = rest.partition("/")
        rtpmaps[pt] = (encoding, _int(clock, "clock rate"), _int(count, "channel count") if count else 1)
    for value in m.all("fmtp"):
        pt, _, params = value.partition(" ")
        fmtps[pt] = _fmtp(params)
    for value in m.all("rtcp-fb"):
        pt, _, fb = value.partition(" ")
        kind, _, subtype = fb.strip().partition(" ")
        if kind == "trr-int":
            trr_int[pt] = _int(subtype, "trr-int")
        else:
            feedback.setdefault(pt, []).append(RtcpFeedback(kind, subtype or None))
    ptime, maxptime = m.get("ptime"), m.get("maxptime")
    payload_types = []
    for pt in m.formats:
        name, rate, channels = rtpmaps.get(pt, (None, None, 1))
        payload_types.append(
            PayloadType(
                id=_int(pt, "payload type"),
                name=name,
                clockrate=rate,
                channels=channels,
                ptime=None if ptime is None else _int(ptime, "ptime"),
                maxptime=None if maxptime is None else _int(maxptime, "maxptime"),
                parameters=fmtps.get(pt, ()),
                feedback=tuple(feedback.get(pt, ())),
                trr_int=trr_int.get(pt),
            )
        )
    extensions = []
    for value in m.all("extmap"):
        ident, _, rest = value.partition(" ")
        number, _, direction = ident.partition("/")
        uri = rest.split()[0] if rest.split() else ""
        if not uri:
            raise SdpError(f"bad extmap {value!r}")
        extensions.append(HeaderExtension(_int(number, "extmap id"), uri, senders_of(direction or "sendrecv", writer)))
    sources: dict[int, list[Parameter]] = {}
    for value in m.all("ssrc"):
        ssrc, _, attribute = value.partition(" ")
        name, colon, val = attribute.partition(":")
        sources.setdefault(_int(ssrc, "ssrc"), []).append(Parameter(name, val if colon else None))
    groups = []
    for value in m.all("ssrc-group"):
        semantics, *ssrcs = value.split()
        groups.append(SourceGroup(semantics, tuple(_int(s, "ssrc") for s in ssrcs)))
    return RtpDescription(
        media=m.kind,
        payload_types=tuple(payload_types),
        rtcp_mux=m.get("rtcp-mux") is not None,
        feedback=tuple(feedback.get("*", ())),
        trr_int=trr_int.get("*"),
        header_extensions=tuple(extensions),
        extmap_allow_mixed=m.get("extmap-allow-mixed") is not None,
        sources=tuple(Source(ssrc, tuple(params)) for ssrc, params in sources.items()),
        source_groups=tuple(groups),
    )


def _transport(m: Media, session: SessionDescription) -> IceUdpTransport:
    def pick(name: str) -> str | None:
        value = m.get(name)
        return session.get(name) if value is None else value

    fingerprints = []
    fingerprint, setup = pick("fingerprint"), pick("setup")
    if fingerprint is not None:
        algorithm, _, value = fingerprint.partition(" ")
        if not value.strip():
            raise SdpError(f"bad fingerprint {fingerprint!r}")
        fingerprints.append(Fingerprint(algorithm.lower(), value.strip().upper(), setup))
    candidates = tuple(c for c in (parse_candidate(v) for v in m.all("candidate")) if c is not None)
    return IceUdpTransport(pick("ice-ufrag"), pick("ice-pwd"), candidates, tuple(fingerprints))


def to_jingle(sdp: SessionDescription, writer: str = "initiator") -> RtpContents:
    """RFC 8866 → XEP-0166/0167/0176: the contents an offer (``writer`` initiator) or answer holds."""
    contents = []
    allow_mixed = sdp.get("extmap-allow-mixed") is not None
    for m in sdp.media:
        if m.kind not in RTP_MEDIA or "RTP" not in m.protocol:
            raise SdpError(f"m={m.kind} {m.protocol} is not an RTP session")
        mid = m.get("mid")
        if not mid:
            raise SdpError("every m= section needs a=mid (RFC 8843 §9.1)")
        direction = next((a.name for a in m.attributes if a.name in DIRECTIONS), "sendrecv")
        description = _description(m, writer)
        if allow_mixed:
            description = replace(description, extmap_allow_mixed=True)
        # The initiator creates every content of an RTP call; an answer names the offer's (§7.3).
        contents.append(
            Content("initiator", mid, senders_of(direction, writer), description=description, transport=_transport(m, sdp))
        )
    groups = []
    for value in (a.value or "" for a in sdp.attributes if a.name == "group"):
        semantics, *mids = value.split()
        groups.append(Group(semantics, tuple(mids)))
    return RtpContents(tuple(contents), tuple(groups))


# -- Jingle -> SDP --------------------------------------------------------------------------------


def _fmtp_value(params: tuple[Parameter, ...]) -> str:
    return ";".join(p.name if p.value is None else p.value if not p.name else f"{p.name}={p.value}" for p in params)


def _media(content: Content, writer: str) -> Media:
    desc, transport = content.description, content.transport
    if desc is None or transport is None:
        raise SdpError(f"content {content.name!r} is not an RTP session over ICE-UDP")
    fingerprint = transport.fingerprint
    if fingerprint is None and transport.encrypted_fingerprints:
        raise SdpError(f"content {content.name!r} has only an OMEMO-encrypted fingerprint: decrypt it first")
    attrs = [Attribute("rtcp", "9 IN IP4 0.0.0.0")]
    if transport.ufrag is not None:
        attrs.append(Attribute("ice-ufrag", transport.ufrag))
    if transport.pwd is not None:
        attrs.append(Attribute("ice-pwd", transport.pwd))
    attrs.append(Attribute("ice-options", "trickle"))
    if fingerprint is not None:
        attrs.append(Attribute("fingerprint", f"{fingerprint.hash} {fingerprint.value}"))
        if fingerprint.setup is not None:
            attrs.append(Attribute("setup", fingerprint.setup))
    attrs.append(Attribute("mid", content.name))
    for ext in desc.header_extensions:
        direction = "" if ext.senders == "both" else "/" + direction_of(ext.senders, writer)
        attrs.append(Attribute("extmap", f"{ext.id}{direction} {ext.uri}"))
    if desc.extmap_allow_mixed:
        attrs.append(Attribute("extmap-allow-mixed"))
    attrs.append(Attribute(direction_of(content.senders, writer)))
    if desc.rtcp_mux:
        attrs.append(Attribute("rtcp-mux"))
    attrs += [Attribute("rtcp-fb", f"* {fb.type}" + (f" {fb.subtype}" if fb.subtype else "")) for fb in desc.feedback]
    if desc.trr_int is not None:
        attrs.append(Attribute("rtcp-fb", f"* trr-int {desc.trr_int}"))
    for pt in desc.payload_types:
        if pt.name is not None and pt.clockrate is not None:
            if "/" in pt.name or not pt.name.isprintable() or " " in pt.name:
                raise SdpError(f"payload type name {pt.name!r} cannot be written as an rtpmap")
            channels = f"/{pt.channels}" if pt.channels != 1 else ""
            attrs.append(Attribute("rtpmap", f"{pt.id} {pt.name}/{pt.clockrate}{channels}"))
        attrs += [
            Attribute("rtcp-fb", f"{pt.id} {fb.type}" + (f" {fb.subtype}" if fb.subtype else "")) for fb in pt.feedback
        ]
        if pt.trr_int is not None:
            attrs.append(Attribute("rtcp-fb", f"{pt.id} trr-int {pt.trr_int}"))
        if pt.parameters:
            attrs.append(Attribute("fmtp", f"{pt.id} {_fmtp_value(pt.parameters)}"))
    for name, values in (("ptime", {pt.ptime for pt in desc.payload_types}),
                         ("maxptime", {pt.maxptime for pt in desc.payload_types})):  # fmt: skip
        if len(values) > 1:
            raise SdpError(f"SDP has one {name} per media; content {content.name!r} has several")
        (value,) = values or {None}
        if value is not None:
            attrs.append(Attribute(name, str(value)))
    for group in desc.source_groups:
        attrs.append(Attribute("ssrc-group", " ".join((group.semantics, *map(str, group.ssrcs)))))
    for source in desc.sources:
        attrs += [
            Attribute("ssrc", f"{source.ssrc} {p.name}" + ("" if p.value is None else f":{p.value}"))
            for p in source.parameters
        ]
    attrs += [Attribute("candidate", write_candidate(c)) for c in transport.candidates]
    return Media(
        kind=desc.media,
        port=9,
        protocol=SECURE_PROFILE if fingerprint is not None else PLAIN_PROFILE,
        formats=tuple(str(pt.id) for pt in desc.payload_types),
        connection="IN IP4 0.0.0.0",
        attributes=tuple(attrs),
    )


def to_sdp(contents: RtpContents, writer: str = "initiator", session_id: int = 0) -> SessionDescription:
    """XEP-0166/0167/0176 → RFC 8866: the SDP offer (``writer`` initiator) or answer of a session."""
    attrs = [Attribute("group", " ".join((g.semantics, *g.contents))) for g in contents.groups]
    attrs.append(Attribute("msid-semantic", " WMS *"))
    return SessionDescription(
        origin=f"- {session_id} 2 IN IP4 127.0.0.1",
        attributes=tuple(attrs),
        media=tuple(_media(c, writer) for c in contents.contents),
    )


def candidate_to_sdp(candidate: Candidate) -> str:
    """A trickled candidate (XEP-0176 §5.3 ``transport-info``) as an SDP ``candidate:`` line."""
    return "candidate:" + write_candidate(candidate)


def candidate_from_sdp(line: str) -> Candidate | None:
    """A trickled SDP candidate (``candidate:...``, with or without ``a=``) for a transport-info."""
    text = line.removeprefix("a=").removeprefix("candidate:")
    return parse_candidate(text)

"""XEP-0176: Jingle ICE-UDP Transport Method (v1.1), with XEP-0320 DTLS-SRTP fingerprints (v1.0).

A ``<transport xmlns='urn:xmpp:jingle:transports:ice-udp:1'/>`` carries the ICE credentials
(§5.1), zero or more candidates (§5.2: all at once, or trickled one by one in
``transport-info``), and the DTLS certificate fingerprint with the DTLS role (XEP-0320 §3).

For verified calls, Conversations and Dino replace the XEP-0320 fingerprint by one in
``http://gultsch.de/xmpp/drafts/omemo/dlts-srtp-verification`` whose value is OMEMO-encrypted
for the answering device (named in the JMI ``<proceed/>``), so a server cannot swap in its own
certificate; :class:`EncryptedFingerprint` keeps that ``<encrypted/>`` element for the OMEMO
layer to open.
"""

from __future__ import annotations

from dataclasses import dataclass
from xml.etree.ElementTree import Element

from ..parser import parse_frame
from ..xml import element, qname, serialize

NS = "urn:xmpp:jingle:transports:ice-udp:1"
DTLS = "urn:xmpp:jingle:apps:dtls:0"
TRANSPORT = qname(NS, "transport")
CANDIDATE = qname(NS, "candidate")
FINGERPRINT = qname(DTLS, "fingerprint")
VERIFICATION = "http://gultsch.de/xmpp/drafts/omemo/dlts-srtp-verification"
ENCRYPTED_FINGERPRINT = qname(VERIFICATION, "fingerprint")
OMEMO_LEGACY = "eu.siacs.conversations.axolotl"

CANDIDATE_TYPES = frozenset({"host", "prflx", "relay", "srflx"})
SETUP_ROLES = frozenset({"active", "passive", "actpass", "holdconn"})


class JinglePayloadError(ValueError):
    """A Jingle payload (XEP-0166 and its applications and transports) that breaks its XEP."""


class IceError(JinglePayloadError):
    """A transport element that breaks XEP-0176 or XEP-0320."""


def integer(el: Element, name: str, *, default: int | None = None, low: int = 0, high: int = 2**32 - 1) -> int:
    """Attribute ``name`` of ``el`` as a whole number in [low, high]; ``default`` when absent."""
    raw = el.get(name)
    if raw is None:
        if default is None:
            raise JinglePayloadError(f"<{el.tag}> needs '{name}'")
        return default
    try:
        value = int(raw, 10)
    except ValueError:
        raise JinglePayloadError(f"'{name}' must be a whole number, got {raw!r}") from None
    if not low <= value <= high:
        raise JinglePayloadError(f"'{name}' must be in [{low}, {high}], got {value}")
    return value


def required(el: Element, name: str) -> str:
    """Attribute ``name`` of ``el``, which must be present and not empty."""
    value = el.get(name)
    if not value:
        raise JinglePayloadError(f"<{el.tag}> needs '{name}'")
    return value


@dataclass(frozen=True)
class Candidate:
    """An ICE candidate (XEP-0176 §5.2, RFC 8445 §5.1): where the peer can reach this party."""

    component: int
    foundation: str
    generation: int
    id: str
    ip: str
    port: int
    priority: int
    protocol: str
    type: str
    network: int = 0
    rel_addr: str | None = None
    rel_port: int | None = None

    @classmethod
    def from_xml(cls, el: Element) -> Candidate:
        kind = required(el, "type")
        if kind not in CANDIDATE_TYPES:
            raise IceError(f"unknown candidate type {kind!r}")
        rel_port = el.get("rel-port")
        return cls(
            component=integer(el, "component", low=1, high=256),
            foundation=required(el, "foundation"),
            generation=integer(el, "generation", default=0),
            id=el.get("id") or "",
            ip=required(el, "ip"),
            port=integer(el, "port", high=65535),
            priority=integer(el, "priority"),
            protocol=required(el, "protocol").lower(),
            type=kind,
            network=integer(el, "network", default=0),
            rel_addr=el.get("rel-addr"),
            rel_port=None if rel_port is None else integer(el, "rel-port", high=65535),
        )

    def to_xml(self) -> Element:
        return element(
            CANDIDATE,
            {
                "component": str(self.component),
                "foundation": self.foundation,
                "generation": str(self.generation),
                "id": self.id or None,
                "ip": self.ip,
                "network": str(self.network),
                "port": str(self.port),
                "priority": str(self.priority),
                "protocol": self.protocol,
                "rel-addr": self.rel_addr,
                "rel-port": None if self.rel_port is None else str(self.rel_port),
                "type": self.type,
            },
        )


@dataclass(frozen=True)
class Fingerprint:
    """XEP-0320 §3: the hash of the DTLS certificate (colon-separated hex) and the DTLS role."""

    hash: str
    value: str
    setup: str | None = None

    @classmethod
    def from_xml(cls, el: Element) -> Fingerprint:
        setup = el.get("setup")
        if setup is not None and setup not in SETUP_ROLES:
            raise IceError(f"unknown setup role {setup!r}")
        value = (el.text or "").strip()
        if not value:
            raise IceError("a fingerprint needs its value")
        return cls(required(el, "hash").lower(), value.upper(), setup)

    def to_xml(self) -> Element:
        return element(FINGERPRINT, {"hash": self.hash, "setup": self.setup}, self.value)


@dataclass(frozen=True)
class EncryptedFingerprint:
    """A fingerprint whose value is an OMEMO ``<encrypted/>`` element (kept serialized)."""

    hash: str
    encrypted: str
    setup: str | None = None

    @classmethod
    def from_xml(cls, el: Element) -> EncryptedFingerprint:
        setup = el.get("setup")
        if setup is not None and setup not in SETUP_ROLES:
            raise IceError(f"unknown setup role {setup!r}")
        encrypted = el.find(qname(OMEMO_LEGACY, "encrypted"))
        if encrypted is None:
            raise IceError("an encrypted fingerprint holds an OMEMO <encrypted/> element")
        return cls(required(el, "hash").lower(), serialize(encrypted), setup)

    def to_xml(self) -> Element:
        el = element(ENCRYPTED_FINGERPRINT, {"hash": self.hash, "setup": self.setup})
        el.append(parse_frame(self.encrypted.encode(), len(self.encrypted.encode()) + 1))
        return el


@dataclass(frozen=True)
class IceUdpTransport:
    """XEP-0176 §5.1: ICE credentials, candidates and (XEP-0320) the DTLS fingerprints."""

    ufrag: str | None = None
    pwd: str | None = None
    candidates: tuple[Candidate, ...] = ()
    fingerprints: tuple[Fingerprint, ...] = ()
    encrypted_fingerprints: tuple[EncryptedFingerprint, ...] = ()

    @classmethod
    def from_xml(cls, el: Element) -> IceUdpTransport:
        if el.tag != TRANSPORT:
            raise IceError(f"expected an ICE-UDP transport, got {el.tag}")
        return cls(
            ufrag=el.get("ufrag"),
            pwd=el.get("pwd"),
            candidates=tuple(Candidate.from_xml(c) for c in el.findall(CANDIDATE)),
            fingerprints=tuple(Fingerprint.from_xml(f) for f in el.findall(FINGERPRINT)),
            encrypted_fingerprints=tuple(EncryptedFingerprint.from_xml(f) for f in el.findall(ENCRYPTED_FINGERPRINT)),
        )

    def to_xml(self) -> Element:
        transport = element(TRANSPORT, {"ufrag": self.ufrag, "pwd": self.pwd})
        transport.extend(f.to_xml() for f in self.fingerprints)
        transport.extend(f.to_xml() for f in self.encrypted_fingerprints)
        transport.extend(c.to_xml() for c in self.candidates)
        return transport

    @property
    def fingerprint(self) -> Fingerprint | None:
        """The first fingerprint, the one WebRTC peers use."""
        return self.fingerprints[0] if self.fingerprints else None

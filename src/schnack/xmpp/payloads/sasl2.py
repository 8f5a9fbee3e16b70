"""XEP-0388: Extensible SASL Profile (v1.0.4, ``urn:xmpp:sasl:2``), with XEP-0509 Initial
Authentication Pipelining (v0.1.0, ``urn:xmpp:iap:0``).

The stream feature lists the mechanisms and, in ``<inline/>``, what may be negotiated inside
``<authenticate/>`` (§2.1); ``<authenticate/>`` carries the initial response, the
``<user-agent/>`` and those inline requests (§2.3); the outcome is ``<success/>`` or
``<failure/>`` (§2.6). SASL data is base64 in element text; an empty payload is an empty
element, and a missing one an absent element (§2.2). Inline requests and results are other
namespaces' elements: they are kept as elements here and decoded by their own payloads.

XEP-0509 §2: ``<config-version/>`` as a stream feature names the server's configuration; a client
that pipelines its ``<authenticate/>`` with the stream header sends the value it cached.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from dataclasses import dataclass, field
from xml.etree.ElementTree import Element

from .. import ns
from ..xml import element, qname, sub

NS = "urn:xmpp:sasl:2"
AUTHENTICATION = qname(NS, "authentication")
MECHANISM = qname(NS, "mechanism")
INLINE = qname(NS, "inline")
AUTHENTICATE = qname(NS, "authenticate")
INITIAL_RESPONSE = qname(NS, "initial-response")
USER_AGENT = qname(NS, "user-agent")
SOFTWARE = qname(NS, "software")
DEVICE = qname(NS, "device")
CHALLENGE = qname(NS, "challenge")
RESPONSE = qname(NS, "response")
ABORT = qname(NS, "abort")
SUCCESS = qname(NS, "success")
FAILURE = qname(NS, "failure")
CONTINUE = qname(NS, "continue")
TEXT = qname(NS, "text")
ADDITIONAL_DATA = qname(NS, "additional-data")
AUTHORIZATION_IDENTIFIER = qname(NS, "authorization-identifier")
# XEP-0386 and XEP-0484 spell it so in their examples; a client accepts either.
AUTHORIZATION_IDENTITY = qname(NS, "authorization-identity")

IAP_NS = "urn:xmpp:iap:0"
CONFIG_VERSION = qname(IAP_NS, "config-version")
CONFIG_VERSION_MISMATCH = qname(IAP_NS, "config-version-mismatch")

# The elements a client sends during SASL2 negotiation.
CLIENT_ELEMENTS = frozenset({AUTHENTICATE, RESPONSE, ABORT})


class Sasl2Error(ValueError):
    """A SASL2 element that is not what XEP-0388 defines."""


def _b64(text: str | None) -> bytes:
    """§2.2: base64 SASL data; whitespace around it is allowed."""
    value = "".join((text or "").split())
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise Sasl2Error("SASL data is not valid base64") from None


def _b64_text(data: bytes) -> str | None:
    return base64.b64encode(data).decode() if data else None


def _expect(el: Element, tag: str) -> None:
    if el.tag != tag:
        raise Sasl2Error(f"expected {tag}, got {el.tag}")


def _data_child(el: Element, tag: str) -> bytes | None:
    found = el.find(tag)
    return None if found is None else _b64(found.text)


def _others(el: Element, known: Iterable[str]) -> tuple[Element, ...]:
    skip = set(known)
    return tuple(child for child in el if child.tag not in skip)


@dataclass(frozen=True)
class ConfigVersion:
    """XEP-0509 §2.1: an opaque name of the server's configuration."""

    value: str
    scheme: str | None = None

    @classmethod
    def from_xml(cls, el: Element) -> ConfigVersion:
        _expect(el, CONFIG_VERSION)
        value = el.get("value")
        if not value:
            raise Sasl2Error("<config-version/> needs 'value'")
        # The XEP's own example spells the attribute 'schema' once; both are read.
        return cls(value, el.get("scheme") or el.get("schema"))

    def to_xml(self) -> Element:
        return element(CONFIG_VERSION, {"scheme": self.scheme, "value": self.value})


@dataclass(frozen=True)
class Authentication:
    """§2.1: the stream feature: mechanisms, best first, and the inline features."""

    mechanisms: tuple[str, ...]
    inline: tuple[Element, ...] = field(default=(), compare=False)

    @classmethod
    def from_xml(cls, el: Element) -> Authentication:
        _expect(el, AUTHENTICATION)
        mechanisms = tuple((m.text or "").strip() for m in el.findall(MECHANISM) if (m.text or "").strip())
        inline = el.find(INLINE)
        return cls(mechanisms, tuple(inline) if inline is not None else ())

    def to_xml(self) -> Element:
        out = element(AUTHENTICATION)
        for mechanism in self.mechanisms:
            sub(out, MECHANISM, text=mechanism)
        if self.inline:
            sub(out, INLINE).extend(self.inline)
        return out

    def find(self, tag: str) -> Element | None:
        """The inline feature ``tag``, if offered."""
        return next((el for el in self.inline if el.tag == tag), None)


@dataclass(frozen=True)
class UserAgent:
    """§2.3: the client's stable ``id`` (a UUID) and, for people, its software and device names."""

    id: str | None = None
    software: str | None = None
    device: str | None = None

    @classmethod
    def from_xml(cls, el: Element) -> UserAgent:
        _expect(el, USER_AGENT)
        return cls(el.get("id") or None, el.findtext(SOFTWARE) or None, el.findtext(DEVICE) or None)

    def to_xml(self) -> Element:
        out = element(USER_AGENT, {"id": self.id})
        if self.software:
            sub(out, SOFTWARE, text=self.software)
        if self.device:
            sub(out, DEVICE, text=self.device)
        return out


@dataclass(frozen=True)
class Authenticate:
    """§2.3: start authenticating with ``mechanism``; ``inline`` holds the inline requests."""

    mechanism: str
    initial_response: bytes | None = None
    user_agent: UserAgent | None = None
    inline: tuple[Element, ...] = field(default=(), compare=False)

    @classmethod
    def from_xml(cls, el: Element) -> Authenticate:
        _expect(el, AUTHENTICATE)
        mechanism = el.get("mechanism", "").strip()
        if not mechanism:
            raise Sasl2Error("<authenticate/> needs 'mechanism'")
        agent = el.find(USER_AGENT)
        return cls(
            mechanism,
            _data_child(el, INITIAL_RESPONSE),
            UserAgent.from_xml(agent) if agent is not None else None,
            _others(el, (INITIAL_RESPONSE, USER_AGENT)),
        )

    def to_xml(self) -> Element:
        out = element(AUTHENTICATE, {"mechanism": self.mechanism})
        if self.initial_response is not None:
            sub(out, INITIAL_RESPONSE, text=_b64_text(self.initial_response))
        if self.user_agent is not None:
            out.append(self.user_agent.to_xml())
        out.extend(self.inline)
        return out

    def find(self, tag: str) -> Element | None:
        """The inline request ``tag``, if present."""
        return next((el for el in self.inline if el.tag == tag), None)


@dataclass(frozen=True)
class Challenge:
    """§2.4: a server challenge."""

    data: bytes

    @classmethod
    def from_xml(cls, el: Element) -> Challenge:
        _expect(el, CHALLENGE)
        return cls(_b64(el.text))

    def to_xml(self) -> Element:
        return element(CHALLENGE, text=_b64_text(self.data))


@dataclass(frozen=True)
class Response:
    """§2.4: the client's response to a challenge."""

    data: bytes

    @classmethod
    def from_xml(cls, el: Element) -> Response:
        _expect(el, RESPONSE)
        return cls(_b64(el.text))

    def to_xml(self) -> Element:
        return element(RESPONSE, text=_b64_text(self.data))


@dataclass(frozen=True)
class Abort:
    """§3.5: the client gives up the exchange."""

    text: str | None = None

    @classmethod
    def from_xml(cls, el: Element) -> Abort:
        _expect(el, ABORT)
        return cls(el.findtext(TEXT) or None)

    def to_xml(self) -> Element:
        out = element(ABORT)
        if self.text:
            sub(out, TEXT, text=self.text)
        return out


@dataclass(frozen=True)
class Success:
    """§2.6.1: authenticated as ``authorization_identifier`` (a full JID once a resource is
    bound); ``additional_data`` completes the mechanism; ``inline`` holds the inline results."""

    authorization_identifier: str
    additional_data: bytes | None = None
    inline: tuple[Element, ...] = field(default=(), compare=False)

    @classmethod
    def from_xml(cls, el: Element) -> Success:
        _expect(el, SUCCESS)
        identifier = el.findtext(AUTHORIZATION_IDENTIFIER) or el.findtext(AUTHORIZATION_IDENTITY)
        if not identifier:
            raise Sasl2Error("<success/> needs <authorization-identifier/>")
        return cls(
            identifier.strip(),
            _data_child(el, ADDITIONAL_DATA),
            _others(el, (ADDITIONAL_DATA, AUTHORIZATION_IDENTIFIER, AUTHORIZATION_IDENTITY)),
        )

    def to_xml(self) -> Element:
        out = element(SUCCESS)
        if self.additional_data is not None:
            sub(out, ADDITIONAL_DATA, text=_b64_text(self.additional_data))
        sub(out, AUTHORIZATION_IDENTIFIER, text=self.authorization_identifier)
        out.extend(self.inline)
        return out

    def find(self, tag: str) -> Element | None:
        """The inline result ``tag``, if present."""
        return next((el for el in self.inline if el.tag == tag), None)


@dataclass(frozen=True)
class Failure:
    """§2.6.2: an RFC 6120 §6.5 condition, a text, and application-specific conditions."""

    condition: str
    text: str | None = None
    extra: tuple[Element, ...] = field(default=(), compare=False)

    @classmethod
    def from_xml(cls, el: Element) -> Failure:
        _expect(el, FAILURE)
        condition = next((child.tag.rpartition("}")[2] for child in el if child.tag.startswith(f"{{{ns.SASL}}}")),
                         "not-authorized")
        extra = tuple(child for child in el if not child.tag.startswith(f"{{{ns.SASL}}}") and child.tag != TEXT)
        return cls(condition, el.findtext(TEXT) or None, extra)

    def to_xml(self) -> Element:
        out = element(FAILURE)
        sub(out, qname(ns.SASL, self.condition))
        out.extend(self.extra)
        if self.text:
            sub(out, TEXT, text=self.text)
        return out

    def has(self, tag: str) -> bool:
        """Whether the application-specific condition ``tag`` is given."""
        return any(el.tag == tag for el in self.extra)

"""XEP-0198: Stream Management (v1.6, ``urn:xmpp:sm:3``), the nonzas of acks and resumption.

Counters are unsigned 32-bit integers that wrap around (§4); an ``h`` outside that range, or not
a number, is a :class:`SmError`; an ``h`` above what was sent is a :class:`HandledCountError`. Booleans are XML Schema booleans (``true``/``1``,
``false``/``0``).
"""

from __future__ import annotations

from dataclasses import dataclass
from xml.etree.ElementTree import Element

from .. import ns
from ..errors import StreamError
from ..xml import element, qname, split, sub

NS = "urn:xmpp:sm:3"
FEATURE = qname(NS, "sm")
ENABLE = qname(NS, "enable")
ENABLED = qname(NS, "enabled")
RESUME = qname(NS, "resume")
RESUMED = qname(NS, "resumed")
FAILED = qname(NS, "failed")
REQUEST = qname(NS, "r")
ACK = qname(NS, "a")
HANDLED_COUNT_TOO_HIGH = qname(NS, "handled-count-too-high")
# §4: h is an xs:unsignedInt and wraps to 0 after 2^32 - 1.
MODULUS = 2**32


class SmError(ValueError):
    """A stream management element that is not what XEP-0198 §7 defines."""


def newly_acknowledged(h: int, sent: int, unacked: int) -> int | None:
    """§4: how many of the ``unacked`` oldest stanzas an ``<a h='…'/>`` acknowledges, when
    ``sent`` stanzas were sent in all (mod 2^32); None when ``h`` is more than was sent."""
    count = (h - (sent - unacked)) % MODULUS
    return count if count <= unacked else None


def _expect(el: Element, tag: str) -> None:
    if el.tag != tag:
        raise SmError(f"expected {tag}, got {el.tag}")


def _counter(el: Element, name: str) -> int:
    value = el.get(name)
    if value is None:
        raise SmError(f"<{split(el.tag)[1]}/> needs '{name}'")
    if not (value.isascii() and value.isdigit()) or int(value) >= MODULUS:
        raise SmError(f"'{name}' must be a number from 0 to {MODULUS - 1}, got {value!r}")
    return int(value)


def _boolean(el: Element, name: str) -> bool:
    value = el.get(name, "false")
    if value in ("true", "1"):
        return True
    if value in ("false", "0"):
        return False
    raise SmError(f"'{name}' must be true or false, got {value!r}")


def _seconds(el: Element) -> int | None:
    value = el.get("max")
    if value is None:
        return None
    if not (value.isascii() and value.isdigit()) or int(value) == 0:
        raise SmError(f"'max' must be a positive number of seconds, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class Enable:
    """§3: the client turns stream management on; ``max`` is its preferred resumption time."""

    resume: bool = False
    max: int | None = None

    @classmethod
    def from_xml(cls, el: Element) -> Enable:
        _expect(el, ENABLE)
        return cls(resume=_boolean(el, "resume"), max=_seconds(el))

    def to_xml(self) -> Element:
        return element(ENABLE, {"resume": "true" if self.resume else None,
                                "max": str(self.max) if self.max is not None else None})


@dataclass(frozen=True)
class Enabled:
    """§3, §5: the server's answer; ``id`` and ``max`` only when the session may be resumed,
    ``location`` where the client should reconnect to resume."""

    id: str | None = None
    resume: bool = False
    max: int | None = None
    location: str | None = None

    @classmethod
    def from_xml(cls, el: Element) -> Enabled:
        _expect(el, ENABLED)
        return cls(id=el.get("id"), resume=_boolean(el, "resume"), max=_seconds(el), location=el.get("location"))

    def to_xml(self) -> Element:
        return element(ENABLED, {
            "id": self.id,
            "resume": "true" if self.resume else None,
            "max": str(self.max) if self.max is not None else None,
            "location": self.location,
        })


@dataclass(frozen=True)
class Resume:
    """§5: resume the session ``previd``; ``h`` counts the stanzas the client handled."""

    h: int
    previd: str

    @classmethod
    def from_xml(cls, el: Element) -> Resume:
        _expect(el, RESUME)
        previd = el.get("previd")
        if not previd:
            raise SmError("<resume/> needs 'previd'")
        return cls(h=_counter(el, "h"), previd=previd)

    def to_xml(self) -> Element:
        return element(RESUME, {"h": str(self.h), "previd": self.previd})


@dataclass(frozen=True)
class Resumed:
    """§5: the session was resumed; ``h`` counts the stanzas the server handled."""

    h: int
    previd: str

    @classmethod
    def from_xml(cls, el: Element) -> Resumed:
        _expect(el, RESUMED)
        return cls(h=_counter(el, "h"), previd=el.get("previd", ""))

    def to_xml(self) -> Element:
        return element(RESUMED, {"h": str(self.h), "previd": self.previd})


@dataclass(frozen=True)
class Failed:
    """§6: enabling or resuming failed, for a stanza error ``condition`` (RFC 6120 §8.3.3);
    ``h`` tells a client whose session could not be resumed which of its stanzas arrived."""

    condition: str | None = None
    h: int | None = None

    @classmethod
    def from_xml(cls, el: Element) -> Failed:
        _expect(el, FAILED)
        condition = next(
            (split(child.tag)[1] for child in el if split(child.tag)[0] == ns.STANZA_ERRORS
             and split(child.tag)[1] != "text"),
            None,
        )
        return cls(condition=condition, h=_counter(el, "h") if el.get("h") is not None else None)

    def to_xml(self) -> Element:
        failed = element(FAILED, {"h": str(self.h) if self.h is not None else None})
        if self.condition is not None:
            sub(failed, qname(ns.STANZA_ERRORS, self.condition))
        return failed


@dataclass(frozen=True)
class Request:
    """§4: ``<r/>``, asking the peer how many stanzas it handled."""

    @classmethod
    def from_xml(cls, el: Element) -> Request:
        _expect(el, REQUEST)
        return cls()

    def to_xml(self) -> Element:
        return element(REQUEST)


@dataclass(frozen=True)
class Ack:
    """§4: ``<a h='…'/>``, the number of stanzas handled so far (modulo 2^32)."""

    h: int

    @classmethod
    def from_xml(cls, el: Element) -> Ack:
        _expect(el, ACK)
        return cls(h=_counter(el, "h"))

    def to_xml(self) -> Element:
        return element(ACK, {"h": str(self.h)})


@dataclass(frozen=True)
class HandledCountTooHigh:
    """§4: the application condition of the stream error for an ``h`` above the stanzas sent."""

    h: int
    send_count: int

    @classmethod
    def from_xml(cls, el: Element) -> HandledCountTooHigh:
        _expect(el, HANDLED_COUNT_TOO_HIGH)
        return cls(h=_counter(el, "h"), send_count=_counter(el, "send-count"))

    def to_xml(self) -> Element:
        return element(HANDLED_COUNT_TOO_HIGH, {"h": str(self.h), "send-count": str(self.send_count)})


class HandledCountError(StreamError):
    """§4: the peer acknowledged more stanzas than were sent, an undefined-condition stream error
    that carries :class:`HandledCountTooHigh`."""

    def __init__(self, h: int, sent: int) -> None:
        super().__init__("undefined-condition", f"you acknowledged {h} stanzas but {sent} were sent")
        self.h = h
        self.sent = sent

    def to_xml(self) -> Element:
        el = super().to_xml()
        el.append(HandledCountTooHigh(self.h, self.sent).to_xml())
        return el

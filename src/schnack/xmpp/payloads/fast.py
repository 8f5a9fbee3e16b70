"""XEP-0484: Fast Authentication Streamlining Tokens (v0.2.0, ``urn:xmpp:fast:0``).

The SASL2 inline feature lists the token mechanisms (§3.1); a client asks for a token with
``<request-token/>`` (§3.2), the server hands it out in ``<token/>`` inside ``<success/>``
(§3.3, also unasked, to rotate it: §3.5), and a client authenticating with a token says so with
``<fast/>``, counting its attempts in 'count' (§3.4) or invalidating the token (§3.6).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from xml.etree.ElementTree import Element

from ..xml import element, qname, sub

NS = "urn:xmpp:fast:0"
FAST = qname(NS, "fast")
MECHANISM = qname(NS, "mechanism")
REQUEST_TOKEN = qname(NS, "request-token")
TOKEN = qname(NS, "token")


class FastError(ValueError):
    """A FAST element that is not what XEP-0484 defines."""


def _expect(el: Element, tag: str) -> None:
    if el.tag != tag:
        raise FastError(f"expected {tag}, got {el.tag}")


def _boolean(el: Element, name: str) -> bool:
    value = el.get(name, "false")
    if value in ("true", "1"):
        return True
    if value in ("false", "0"):
        return False
    raise FastError(f"'{name}' must be true or false, got {value!r}")


def format_expiry(moment: datetime) -> str:
    """A XEP-0082 DateTime in UTC, to the second."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_expiry(text: str) -> datetime:
    """A XEP-0082 DateTime; one without a zone is taken as UTC."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise FastError(f"bad expiry {text!r}") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@dataclass(frozen=True)
class FastFeature:
    """§3.1: the token mechanisms the server accepts; ``tls_0rtt`` if it takes them in TLS early data."""

    mechanisms: tuple[str, ...]
    tls_0rtt: bool = False

    @classmethod
    def from_xml(cls, el: Element) -> FastFeature:
        _expect(el, FAST)
        mechanisms = tuple((m.text or "").strip() for m in el.findall(MECHANISM) if (m.text or "").strip())
        return cls(mechanisms, _boolean(el, "tls-0rtt"))

    def to_xml(self) -> Element:
        out = element(FAST, {"tls-0rtt": "true" if self.tls_0rtt else None})
        for mechanism in self.mechanisms:
            sub(out, MECHANISM, text=mechanism)
        return out


@dataclass(frozen=True)
class RequestToken:
    """§3.2: issue a token for ``mechanism`` when this authentication succeeds."""

    mechanism: str

    @classmethod
    def from_xml(cls, el: Element) -> RequestToken:
        _expect(el, REQUEST_TOKEN)
        mechanism = el.get("mechanism", "").strip()
        if not mechanism:
            raise FastError("<request-token/> needs 'mechanism'")
        return cls(mechanism)

    def to_xml(self) -> Element:
        return element(REQUEST_TOKEN, {"mechanism": self.mechanism})


@dataclass(frozen=True)
class Fast:
    """§3.4, §3.6: this authentication uses a token; ``count`` numbers the attempts with it,
    ``invalidate`` ends the token once it succeeded."""

    count: int | None = None
    invalidate: bool = False

    @classmethod
    def from_xml(cls, el: Element) -> Fast:
        _expect(el, FAST)
        raw = el.get("count")
        count = None
        if raw is not None:
            if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:
                raise FastError(f"'count' must be a non-negative integer, got {raw!r}")
            count = int(raw)
        return cls(count, _boolean(el, "invalidate"))

    def to_xml(self) -> Element:
        return element(FAST, {
            "count": str(self.count) if self.count is not None else None,
            "invalidate": "true" if self.invalidate else None,
        })


@dataclass(frozen=True)
class Token:
    """§3.3: a new token and when it expires."""

    token: str
    expiry: datetime

    @classmethod
    def from_xml(cls, el: Element) -> Token:
        _expect(el, TOKEN)
        token = el.get("token")
        expiry = el.get("expiry")
        if not token or not expiry:
            raise FastError("<token/> needs 'token' and 'expiry'")
        return cls(token, parse_expiry(expiry))

    def to_xml(self) -> Element:
        return element(TOKEN, {"expiry": format_expiry(self.expiry), "token": self.token})

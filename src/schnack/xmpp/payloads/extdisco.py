"""XEP-0215: External Service Discovery (v1.0) payloads (``urn:xmpp:extdisco:2``).

``<services/>`` asks for the services (§3.1; only those of one ``type``, §3.2) and lists them;
a ``<credentials/>`` request names one service by type, host (and port) and gets its
credentials back (§3.3). Each ``<service/>`` has the attributes of §2: a type, a host and, for
TURN, short-lived credentials with their expiry and ``restricted`` when they must be asked for.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from xml.etree.ElementTree import Element

from ..xml import element, qname

NS = "urn:xmpp:extdisco:2"
SERVICES = qname(NS, "services")
CREDENTIALS = qname(NS, "credentials")
SERVICE = qname(NS, "service")
TRANSPORTS = frozenset({"tcp", "udp"})


class ExtdiscoError(ValueError):
    """A payload that breaks XEP-0215; ``condition`` is the stanza error it deserves."""

    def __init__(self, text: str, condition: str = "bad-request") -> None:
        super().__init__(text)
        self.condition = condition


def _int(el: Element, name: str) -> int | None:
    raw = el.get(name)
    if raw is None:
        return None
    if not (raw.isascii() and raw.isdigit()) or int(raw) > 65535:
        raise ExtdiscoError(f"'{name}' must be a port number, got {raw!r}")
    return int(raw)


def _bool(raw: str | None) -> bool:
    if raw in (None, "false", "0"):
        return False
    if raw in ("true", "1"):
        return True
    raise ExtdiscoError(f"'restricted' must be a boolean, got {raw!r}")


def format_time(when: datetime) -> str:
    """XEP-0082 §3.2 DateTime in UTC, to the second."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(raw: str) -> datetime:
    """A XEP-0082 DateTime (with zone) as an aware datetime."""
    try:
        when = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise ExtdiscoError(f"'expires' must be a XEP-0082 DateTime, got {raw!r}") from None
    if when.tzinfo is None:
        raise ExtdiscoError(f"'expires' needs a time zone, got {raw!r}")
    return when


@dataclass(frozen=True)
class Service:
    """§2: one external service; in a credentials request, only what identifies it (type, host, port)."""

    type: str
    host: str
    port: int | None = None
    transport: str | None = None
    username: str | None = None
    password: str | None = None
    expires: datetime | None = None
    restricted: bool = False
    name: str | None = None

    @classmethod
    def from_xml(cls, el: Element) -> Service:
        kind, host = el.get("type"), el.get("host")
        if not kind or not host:
            raise ExtdiscoError("a service needs a 'type' and a 'host'")
        transport = el.get("transport")
        if transport is not None and transport not in TRANSPORTS:
            raise ExtdiscoError(f"unknown transport {transport!r}")
        expires = el.get("expires")
        return cls(
            type=kind,
            host=host,
            port=_int(el, "port"),
            transport=transport,
            username=el.get("username"),
            password=el.get("password"),
            expires=None if expires is None else parse_time(expires),
            restricted=_bool(el.get("restricted")),
            name=el.get("name"),
        )

    def to_xml(self) -> Element:
        return element(
            SERVICE,
            {
                "type": self.type,
                "host": self.host,
                "port": None if self.port is None else str(self.port),
                "transport": self.transport,
                "username": self.username,
                "password": self.password,
                "expires": None if self.expires is None else format_time(self.expires),
                "restricted": "1" if self.restricted else None,
                "name": self.name,
            },
        )


@dataclass(frozen=True)
class Services:
    """§3.1, §3.2: the request (empty, maybe one ``type``) and the result listing the services."""

    services: tuple[Service, ...] = ()
    type: str | None = None

    @classmethod
    def from_xml(cls, el: Element) -> Services:
        if el.tag != SERVICES:
            raise ExtdiscoError(f"expected {SERVICES}, got {el.tag}")
        return cls(tuple(Service.from_xml(s) for s in el.findall(SERVICE)), el.get("type") or None)

    def to_xml(self) -> Element:
        return element(SERVICES, {"type": self.type}, children=(s.to_xml() for s in self.services))


@dataclass(frozen=True)
class Credentials:
    """§3.3: the request naming one service, and the result with the credentials of each match."""

    services: tuple[Service, ...]

    @classmethod
    def from_xml(cls, el: Element) -> Credentials:
        if el.tag != CREDENTIALS:
            raise ExtdiscoError(f"expected {CREDENTIALS}, got {el.tag}")
        return cls(tuple(Service.from_xml(s) for s in el.findall(SERVICE)))

    def to_xml(self) -> Element:
        return element(CREDENTIALS, children=(s.to_xml() for s in self.services))

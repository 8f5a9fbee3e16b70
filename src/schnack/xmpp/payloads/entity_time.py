"""XEP-0202: Entity Time (``urn:xmpp:time``): the ``<time/>`` element of a query and its result.

A result carries ``<tzo/>`` (the zone's offset from UTC, "+hh:mm" or "Z") and ``<utc/>`` (the
time in UTC, XEP-0082 DateTime profile); the request is the empty element (§3).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from xml.etree.ElementTree import Element

from ..xml import element, qname, text_of

NS = "urn:xmpp:time"
TIME = qname(NS, "time")
TZO = qname(NS, "tzo")
UTC_ELEMENT = qname(NS, "utc")

# XEP-0082 §3.2 DateTime in UTC; fractions of a second are optional and of any length.
_UTC = re.compile(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d+))?Z")
_TZO = re.compile(r"([+-])(\d\d):(\d\d)")


class EntityTimeError(ValueError):
    """A time result that XEP-0202 does not allow."""


@dataclass(frozen=True)
class EntityTime:
    """The entity's time, aware; its ``tzinfo`` is the zone the entity reported (§3)."""

    when: datetime

    @classmethod
    def from_xml(cls, el: Element) -> EntityTime:
        if el.tag != TIME:
            raise EntityTimeError(f"expected {TIME}, got {el.tag}")
        utc, tzo = text_of(el, UTC_ELEMENT), text_of(el, TZO)
        match = _UTC.fullmatch((utc or "").strip())
        if match is None:
            raise EntityTimeError(f"the time needs <utc/> as YYYY-MM-DDThh:mm:ss[.sss]Z, not {utc!r}")
        year, month, day, hour, minute, second, fraction = match.groups()
        try:
            when = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second), tzinfo=UTC)
        except ValueError as err:
            raise EntityTimeError(f"no such time: {utc!r} ({err})") from None
        if fraction:
            when += timedelta(microseconds=int(fraction[:6].ljust(6, "0")))
        return cls(when.astimezone(_zone(tzo)))

    def to_xml(self) -> Element:
        offset = self.when.utcoffset() or timedelta()
        minutes = int(offset.total_seconds()) // 60
        sign = "-" if minutes < 0 else "+"
        tzo = f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
        utc = self.when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        return element(TIME, children=(element(TZO, text=tzo), element(UTC_ELEMENT, text=utc)))


def _zone(tzo: str | None) -> timezone:
    """The zone of ``<tzo/>``; a missing or unreadable one is UTC (the time itself is what counts)."""
    text = (tzo or "").strip()
    match = _TZO.fullmatch(text)
    if match is None:
        return UTC
    sign, hours, minutes = match.groups()
    offset = timedelta(hours=int(hours), minutes=int(minutes))
    if offset >= timedelta(hours=24):
        return UTC
    return timezone(-offset if sign == "-" else offset)


def query() -> Element:
    """The request (§3): an empty ``<time/>``."""
    return element(TIME)

"""XEP-0202 entity time: reading results as apps send them, and writing our own."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from schnack.xmpp.parser import parse_frame
from schnack.xmpp.payloads.entity_time import EntityTime, EntityTimeError, query
from schnack.xmpp.xml import serialize


def parse(inner: str) -> EntityTime:
    return EntityTime.from_xml(parse_frame(f"<time xmlns='urn:xmpp:time'>{inner}</time>".encode(), 10**6))


def test_the_example_of_the_spec() -> None:
    """XEP-0202 §3, example 2."""
    got = parse("<tzo>-06:00</tzo><utc>2006-12-19T17:58:35Z</utc>")
    assert got.when == datetime(2006, 12, 19, 17, 58, 35, tzinfo=UTC)
    assert got.when.utcoffset() == timedelta(hours=-6)


@pytest.mark.parametrize(
    ("utc", "micro"), [("2026-12-07T01:02:03.5Z", 500000), ("2026-12-07T01:02:03.123456789Z", 123456)]
)
def test_fractions(utc: str, micro: int) -> None:
    assert parse(f"<tzo>Z</tzo><utc>{utc}</utc>").when.microsecond == micro


def test_a_zone_it_cannot_read_leaves_the_time_in_utc() -> None:
    got = parse("<tzo>CET</tzo><utc>2026-12-07T01:02:03Z</utc>")
    assert got.when == datetime(2026, 12, 7, 1, 2, 3, tzinfo=UTC) and got.when.utcoffset() == timedelta()


@pytest.mark.parametrize("utc", ["", "2026-12-07 01:02:03", "2026-12-07T01:02:03+01:00", "2026-13-07T01:02:03Z"])
def test_refused(utc: str) -> None:
    with pytest.raises(EntityTimeError):
        parse(f"<tzo>Z</tzo><utc>{utc}</utc>")


@pytest.mark.parametrize("zone", [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-3))])
def test_round_trip(zone: timezone) -> None:
    when = datetime(2026, 12, 7, 1, 2, 3, 456000, tzinfo=zone)
    text = serialize(EntityTime(when).to_xml())
    assert EntityTime.from_xml(parse_frame(text.encode(), 10**6)) == EntityTime(when)


def test_query_is_empty() -> None:
    assert serialize(query()) == '<time xmlns="urn:xmpp:time"/>'

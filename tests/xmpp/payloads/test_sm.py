"""XEP-0198 stream management nonzas: parsing, building, round trips and the 32-bit counters."""

from __future__ import annotations

from typing import Any

import pytest

from schnack.xmpp.parser import parse_frame
from schnack.xmpp.payloads.sm import (
    MODULUS,
    Ack,
    Enable,
    Enabled,
    Failed,
    HandledCountTooHigh,
    Request,
    Resume,
    Resumed,
    SmError,
)
from schnack.xmpp.xml import serialize

SM = "urn:xmpp:sm:3"


def parse(xml: str) -> Any:
    return parse_frame(xml.encode(), 10**6)


@pytest.mark.parametrize(
    "payload",
    [
        Enable(),
        Enable(resume=True),
        Enable(resume=True, max=600),
        Enabled(),
        Enabled(id="c2lk", resume=True, max=300, location="[2001:db8::1]:5222"),
        Resume(h=0, previd="some-long-sm-id"),
        Resume(h=MODULUS - 1, previd="x"),
        Resumed(h=42, previd="some-long-sm-id"),
        Failed(),
        Failed("item-not-found"),
        Failed("item-not-found", h=7),
        Request(),
        Ack(0),
        Ack(MODULUS - 1),
        HandledCountTooHigh(h=10, send_count=8),
    ],
)
def test_round_trip(payload: Any) -> None:
    again = type(payload).from_xml(parse(serialize(payload.to_xml())))
    assert again == payload


def test_enable_reads_xml_booleans_and_max() -> None:
    assert Enable.from_xml(parse(f"<enable xmlns='{SM}' resume='1' max='60'/>")) == Enable(resume=True, max=60)
    assert Enable.from_xml(parse(f"<enable xmlns='{SM}' resume='false'/>")) == Enable()
    assert Enable.from_xml(parse(f"<enable xmlns='{SM}'/>")) == Enable()


def test_what_goes_on_the_wire() -> None:
    assert serialize(Ack(5).to_xml()) == f'<a xmlns="{SM}" h="5"/>'
    assert serialize(Request().to_xml()) == f'<r xmlns="{SM}"/>'
    assert serialize(Enabled(id="abc", resume=True, max=300).to_xml()) == (
        f'<enabled xmlns="{SM}" id="abc" resume="true" max="300"/>'
    )
    assert serialize(Failed("item-not-found", h=3).to_xml()) == (
        f'<failed xmlns="{SM}" h="3"><item-not-found xmlns="urn:ietf:params:xml:ns:xmpp-stanzas"/></failed>'
    )


def test_failed_condition_ignores_text() -> None:
    failed = Failed.from_xml(parse(
        f"<failed xmlns='{SM}'><text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>gone</text>"
        "<unexpected-request xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></failed>"
    ))
    assert failed == Failed("unexpected-request")


@pytest.mark.parametrize(
    ("cls", "xml"),
    [
        (Ack, f"<a xmlns='{SM}'/>"),
        (Ack, f"<a xmlns='{SM}' h='-1'/>"),
        (Ack, f"<a xmlns='{SM}' h='4294967296'/>"),
        (Ack, f"<a xmlns='{SM}' h='12x'/>"),
        (Ack, f"<a xmlns='{SM}' h='٣'/>"),
        (Resume, f"<resume xmlns='{SM}' h='1'/>"),
        (Resume, f"<resume xmlns='{SM}' previd='abc'/>"),
        (Enable, f"<enable xmlns='{SM}' resume='yes'/>"),
        (Enable, f"<enable xmlns='{SM}' max='0'/>"),
        (Enable, f"<enable xmlns='{SM}' max='soon'/>"),
        (Ack, f"<r xmlns='{SM}'/>"),
        (Enable, "<enable xmlns='urn:xmpp:sm:2'/>"),
    ],
)
def test_malformed(cls: Any, xml: str) -> None:
    with pytest.raises(SmError):
        cls.from_xml(parse(xml))

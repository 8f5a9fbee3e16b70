"""XEP-0386 Bind 2 elements: round trips and the XEP's examples."""

from __future__ import annotations

from typing import Any

import pytest

from schnack.xmpp.parser import parse_frame
from schnack.xmpp.payloads.bind2 import Bind, Bind2Error, BindFeature, Bound
from schnack.xmpp.xml import element, serialize

BIND2 = "urn:xmpp:bind:0"


def parse(xml: str) -> Any:
    return parse_frame(xml.encode(), 10**6)


@pytest.mark.parametrize(
    "payload",
    [
        BindFeature(),
        BindFeature(("urn:xmpp:carbons:2", "urn:xmpp:csi:0", "urn:xmpp:sm:3")),
        Bind(),
        Bind("AwesomeXMPP"),
        Bind("schnack", (element("{urn:xmpp:carbons:2}enable"), element("{urn:xmpp:sm:3}enable", {"resume": "true"}))),
        Bound(),
        Bound((element("{urn:xmpp:sm:3}enabled", {"id": "x", "resume": "true"}),)),
    ],
)
def test_round_trip(payload: Any) -> None:
    again = type(payload).from_xml(parse(serialize(payload.to_xml())))
    assert again == payload
    assert serialize(again.to_xml()) == serialize(payload.to_xml())


def test_parses_the_xep_example() -> None:
    bind = Bind.from_xml(parse(
        f"<bind xmlns='{BIND2}'><tag>AwesomeXMPP</tag><enable xmlns='urn:xmpp:carbons:2'/>"
        "<enable xmlns='urn:xmpp:sm:3'/><inactive xmlns='urn:xmpp:csi:0'/></bind>"
    ))
    assert bind.tag == "AwesomeXMPP"
    assert [r.tag for r in bind.requests] == [
        "{urn:xmpp:carbons:2}enable", "{urn:xmpp:sm:3}enable", "{urn:xmpp:csi:0}inactive"
    ]
    assert bind.find("{urn:xmpp:csi:0}inactive") is not None
    feature = BindFeature.from_xml(parse(
        f"<bind xmlns='{BIND2}'><inline><feature var='urn:xmpp:carbons:2'/><feature/></inline></bind>"
    ))
    assert feature.inline == ("urn:xmpp:carbons:2",)


def test_refuses_other_elements() -> None:
    with pytest.raises(Bind2Error):
        Bind.from_xml(parse(f"<bound xmlns='{BIND2}'/>"))

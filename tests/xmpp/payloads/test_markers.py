"""XEP-0333 chat markers: round trips of every kind, a marker as the XEP shows one, and what is not one."""

from __future__ import annotations

import pytest

from schnack.xmpp.parser import parse_frame
from schnack.xmpp.payloads.markers import KINDS, MARKABLE, NS, Marker, MarkerError
from schnack.xmpp.xml import Element, element, qname, serialize


def parse(xml: str) -> Element:
    return parse_frame(xml.encode(), 10**5)


@pytest.mark.parametrize("kind", KINDS)
def test_round_trip(kind: str) -> None:
    marker = Marker(kind, "message-1")  # type: ignore[arg-type]
    assert Marker.from_xml(marker.to_xml()) == marker
    assert serialize(marker.to_xml()) == f'<{kind} xmlns="{NS}" id="message-1"/>'


def test_found_in_a_message_and_markable() -> None:
    # A displayed marker in the shape of the XEP's examples.
    displayed = parse("<message xmlns='jabber:client' from='juliet@capulet.lit/balcony'"
                      " to='romeo@montague.lit/orchard' id='message-2'><displayed xmlns='urn:xmpp:chat-markers:0'"
                      " id='message-1'/></message>")
    assert Marker.find(displayed) == Marker("displayed", "message-1")
    markable = parse("<message xmlns='jabber:client'><body>hi</body><markable xmlns='urn:xmpp:chat-markers:0'/>"
                     "</message>")
    assert markable.find(MARKABLE) is not None and Marker.find(markable) is None


def test_what_is_not_a_marker() -> None:
    with pytest.raises(MarkerError, match="names a message"):
        Marker.from_xml(element(qname(NS, "displayed")))
    with pytest.raises(MarkerError, match="expected a chat marker"):
        Marker.from_xml(element(qname(NS, "seen"), {"id": "x"}))
    assert Marker.find(parse(f"<message xmlns='jabber:client'><read xmlns='{NS}' id='x'/></message>")) is None

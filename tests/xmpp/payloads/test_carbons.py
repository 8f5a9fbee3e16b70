"""XEP-0280 carbons and XEP-0297 forwarding payloads: round trips and the XEPs' own examples."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from schnack.xmpp import ns
from schnack.xmpp.parser import parse_frame
from schnack.xmpp.payloads.carbons import DISABLE, ENABLE, RECEIVED, SENT, Carbon, CarbonsError, Toggle
from schnack.xmpp.payloads.forward import FORWARDED, Forwarded, ForwardError, format_stamp, parse_stamp
from schnack.xmpp.xml import Element, serialize

# XEP-0280 Example 6, the carbon Romeo's other client receives.
RECEIVED_EXAMPLE = """<received xmlns='urn:xmpp:carbons:2'>
  <forwarded xmlns='urn:xmpp:forward:0'>
    <message xmlns='jabber:client' from='juliet@capulet.example/balcony'
             to='romeo@montague.example/garden' type='chat'>
      <body>What man art thou that, thus bescreen'd in night, so stumblest on my counsel?</body>
      <thread>0e3141cd80894871a68e6fe6b1ec56fa</thread>
    </message>
  </forwarded>
</received>"""
# XEP-0297 Example 2, a forwarded message with its delay.
FORWARDED_EXAMPLE = """<forwarded xmlns='urn:xmpp:forward:0'>
  <delay xmlns='urn:xmpp:delay' stamp='2010-07-10T23:08:25Z'/>
  <message from='romeo@montague.lit/orchard' id='0202197' to='juliet@capulet.lit' type='chat'
           xmlns='jabber:client'>
    <body>Yet I should kill thee with much cherishing.</body>
  </message>
</forwarded>"""


def parse(xml: str) -> Element:
    return parse_frame(xml.encode(), 10**6)


def message(body: str = "hi") -> Element:
    return parse(f"<message xmlns='{ns.CLIENT}' to='a@b' type='chat'><body>{body}</body></message>")


@pytest.mark.parametrize("enable", [True, False])
def test_toggle_round_trip(enable: bool) -> None:
    el = Toggle(enable).to_xml()
    assert el.tag == (ENABLE if enable else DISABLE)
    assert len(el) == 0 and not el.attrib
    assert Toggle.from_xml(el) == Toggle(enable)


def test_toggle_rejects_other_elements() -> None:
    with pytest.raises(CarbonsError):
        Toggle.from_xml(parse("<enable xmlns='urn:xmpp:carbons:1'/>"))


def test_received_example_parses() -> None:
    carbon = Carbon.from_xml(parse(RECEIVED_EXAMPLE))
    assert carbon.direction == "received"
    assert carbon.forwarded.stamp is None
    assert carbon.message.get("from") == "juliet@capulet.example/balcony"
    assert carbon.message.findtext(f"{{{ns.CLIENT}}}thread") == "0e3141cd80894871a68e6fe6b1ec56fa"


@pytest.mark.parametrize(("direction", "tag"), [("received", RECEIVED), ("sent", SENT)])
def test_carbon_round_trip(direction: str, tag: str) -> None:
    original = message("round trip")
    carbon = Carbon("received" if direction == "received" else "sent", Forwarded(original))
    el = carbon.to_xml()
    assert el.tag == tag
    assert serialize(el) == (
        f'<{direction} xmlns="urn:xmpp:carbons:2"><forwarded xmlns="urn:xmpp:forward:0">'
        '<message xmlns="jabber:client" to="a@b" type="chat"><body>round trip</body></message>'
        f"</forwarded></{direction}>"
    )
    again = Carbon.from_xml(parse(serialize(el)))
    assert again.direction == carbon.direction
    assert serialize(again.to_xml()) == serialize(el)


@pytest.mark.parametrize(
    "xml",
    [
        "<private xmlns='urn:xmpp:carbons:2'/>",
        "<received xmlns='urn:xmpp:carbons:2'/>",
        "<sent xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'/></sent>",
        # A carbon copies messages only.
        "<sent xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'>"
        "<iq xmlns='jabber:client' type='get' id='1'/></forwarded></sent>",
    ],
)
def test_malformed_carbons_are_refused(xml: str) -> None:
    with pytest.raises(CarbonsError):
        Carbon.from_xml(parse(xml))


def test_forwarded_example_with_delay() -> None:
    forwarded = Forwarded.from_xml(parse(FORWARDED_EXAMPLE))
    assert forwarded.stamp == datetime(2010, 7, 10, 23, 8, 25, tzinfo=UTC)
    assert forwarded.stanza.get("id") == "0202197"
    again = Forwarded.from_xml(parse(serialize(forwarded.to_xml())))
    assert again.stamp == forwarded.stamp
    assert serialize(again.stanza) == serialize(forwarded.stanza)


def test_forwarded_round_trip_keeps_the_delay_first() -> None:
    stamp = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    el = Forwarded(message(), stamp).to_xml()
    assert el.tag == FORWARDED
    assert [child.tag for child in el] == [f"{{{ns.DELAY}}}delay", f"{{{ns.CLIENT}}}message"]
    assert el[0].get("stamp") == "2026-01-02T03:04:05.678000Z"
    assert Forwarded.from_xml(parse(serialize(el))).stamp == stamp


@pytest.mark.parametrize(
    "xml",
    [
        "<forwarded xmlns='urn:xmpp:forward:1'><message xmlns='jabber:client'/></forwarded>",
        "<forwarded xmlns='urn:xmpp:forward:0'/>",
        "<forwarded xmlns='urn:xmpp:forward:0'><message xmlns='jabber:server'/></forwarded>",
        "<forwarded xmlns='urn:xmpp:forward:0'><message xmlns='jabber:client'/>"
        "<message xmlns='jabber:client'/></forwarded>",
        "<forwarded xmlns='urn:xmpp:forward:0'><delay xmlns='urn:xmpp:delay'/>"
        "<message xmlns='jabber:client'/></forwarded>",
        "<forwarded xmlns='urn:xmpp:forward:0'><delay xmlns='urn:xmpp:delay' stamp='yesterday'/>"
        "<message xmlns='jabber:client'/></forwarded>",
    ],
)
def test_malformed_forwarded_is_refused(xml: str) -> None:
    with pytest.raises(ForwardError):
        Forwarded.from_xml(parse(xml))


def test_stamps_name_their_time_zone() -> None:
    assert parse_stamp("2002-09-10T23:08:25-08:00") == datetime(2002, 9, 11, 7, 8, 25, tzinfo=UTC)
    assert format_stamp(datetime(2002, 9, 10, 23, 8, 25, tzinfo=timezone(timedelta(hours=-8)))) == (
        "2002-09-11T07:08:25Z"
    )
    with pytest.raises(ForwardError):
        parse_stamp("2002-09-10T23:08:25")

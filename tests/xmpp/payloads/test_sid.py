"""XEP-0359 stanza-ids: parsing, round trips, and removing the ones an entity must override."""

from __future__ import annotations

import pytest

from schnack.xmpp.parser import parse_frame
from schnack.xmpp.payloads.sid import SidError, StanzaId, stanza_id, strip_stanza_ids
from schnack.xmpp.xml import serialize

SID = "urn:xmpp:sid:0"


def test_parse_and_round_trip() -> None:
    el = parse_frame(f"<stanza-id xmlns='{SID}' id='de305d54' by='room@muc.example.org'/>".encode(), 10**6)
    sid = StanzaId.from_xml(el)
    assert sid == StanzaId("de305d54", "room@muc.example.org")
    assert StanzaId.from_xml(parse_frame(serialize(sid.to_xml()).encode(), 10**6)) == sid


def test_an_archive_stamps_the_element_of_the_stanza_id() -> None:
    assert serialize(stanza_id("de305d54", "juliet@example.com")) == serialize(StanzaId("de305d54", "juliet@example.com").to_xml())
    assert StanzaId.from_xml(stanza_id("de305d54", "juliet@example.com")) == StanzaId("de305d54", "juliet@example.com")


@pytest.mark.parametrize("xml", [
    f"<stanza-id xmlns='{SID}' by='a@b'/>",
    f"<stanza-id xmlns='{SID}' id='x'/>",
    f"<stanza-id xmlns='{SID}' id='' by='a@b'/>",
    f"<origin-id xmlns='{SID}' id='x'/>",
])  # fmt: skip
def test_bad_stanza_ids(xml: str) -> None:
    with pytest.raises(SidError):
        StanzaId.from_xml(parse_frame(xml.encode(), 10**6))


def test_strip_removes_only_the_claimed_ones() -> None:
    message = parse_frame(
        f"<message xmlns='jabber:client'><body>hi</body>"
        f"<stanza-id xmlns='{SID}' id='1' by='juliet@capulet.lit'/>"
        f"<stanza-id xmlns='{SID}' id='2' by='room@muc.example.org'/>"
        f"<origin-id xmlns='{SID}' id='3'/>"
        f"<stanza-id xmlns='{SID}' id='4' by='juliet@capulet.lit'/></message>".encode(),
        10**6,
    )
    strip_stanza_ids(message, lambda by: by == "juliet@capulet.lit")
    assert [(child.tag.rpartition("}")[2], child.get("id")) for child in message] == [
        ("body", None), ("stanza-id", "2"), ("origin-id", "3"),
    ]  # fmt: skip

"""XEP-0402 native bookmarks and XEP-0048 legacy storage: round trips, mapping, and bad input."""

from __future__ import annotations

import pytest

from schnack.xmpp.jid import JID
from schnack.xmpp.parser import parse_frame
from schnack.xmpp.payloads.bookmarks import BookmarkError, Conference, Storage, Url
from schnack.xmpp.xml import serialize

ROOM = JID.parse("council@conference.example.org")


def test_native_round_trip_keeps_extensions() -> None:
    el = parse_frame(
        b"<conference xmlns='urn:xmpp:bookmarks:1' name='Council' autojoin='true'><nick>alice</nick>"
        b"<password>s3cret</password><extensions><state xmlns='urn:example'/></extensions></conference>",
        10**6,
    )
    conference = Conference.from_native("council@conference.example.org", el)
    assert conference == Conference(ROOM, "Council", True, "alice", "s3cret")
    assert [serialize(e) for e in conference.extensions] == ['<state xmlns="urn:example"/>']
    again = Conference.from_native(str(ROOM), conference.to_native())
    assert again == conference
    assert serialize(again.to_native()) == serialize(conference.to_native())


def test_legacy_round_trip_and_mapping() -> None:
    el = parse_frame(
        b"<storage xmlns='storage:bookmarks'>"
        b"<conference jid='council@conference.example.org' name='Council' autojoin='1'><nick>alice</nick></conference>"
        b"<conference jid='lobby@conference.example.org'/>"
        b"<url name='Home' url='https://example.org/'/></storage>",
        10**6,
    )
    storage = Storage.from_xml(el)
    assert storage == Storage(
        (Conference(ROOM, "Council", True, "alice"), Conference(JID.parse("lobby@conference.example.org"))),
        (Url("https://example.org/", "Home"),),
    )
    assert Storage.from_xml(storage.to_xml()) == storage
    # The same room read from either form is the same bookmark (XEP-0402 §5).
    native = storage.conferences[0].to_native()
    assert serialize(native) == (
        '<conference xmlns="urn:xmpp:bookmarks:1" name="Council" autojoin="true"><nick>alice</nick></conference>'
    )
    assert Conference.from_native(str(ROOM), native) == storage.conferences[0]
    assert Storage.from_xml(Storage().to_xml()) == Storage()


@pytest.mark.parametrize(
    "text",
    [
        "<storage xmlns='storage:bookmarks'><conference name='no jid'/></storage>",
        "<storage xmlns='storage:bookmarks'><conference jid='room@muc/nick'/></storage>",
        "<storage xmlns='storage:bookmarks'><conference jid='@bad'/></storage>",
        "<storage xmlns='storage:bookmarks'><conference jid='room@muc' autojoin='maybe'/></storage>",
        "<storage xmlns='storage:bookmarks'><url name='no address'/></storage>",
        "<storage xmlns='urn:example'/>",
    ],
)
def test_bad_legacy_storage(text: str) -> None:
    with pytest.raises(BookmarkError):
        Storage.from_xml(parse_frame(text.encode(), 10**6))


def test_bad_native_items() -> None:
    conference = parse_frame(b"<conference xmlns='urn:xmpp:bookmarks:1'/>", 10**6)
    with pytest.raises(BookmarkError):
        Conference.from_native(None, conference)
    with pytest.raises(BookmarkError):
        Conference.from_native("room@muc/resource", conference)
    with pytest.raises(BookmarkError):
        Conference.from_native("room@muc", parse_frame(b"<conference xmlns='storage:bookmarks'/>", 10**6))

"""XEP-0420 envelopes as OMEMO 2 encrypts them: round trip, padding, and the checks of sender and
conversation."""

from __future__ import annotations

import re

import pytest

from schnack.client.omemo.sce import MAX_PADDING, SCE, SceError, open_envelope, seal
from schnack.xmpp.jid import JID
from schnack.xmpp.parser import parse_frame
from schnack.xmpp.xml import element

ALICE = JID.parse("alice@example.org/phone")
BOB = JID.parse("bob@example.org")
ROOM = JID.parse("family@groups.example.org")
BODY = "{jabber:client}body"


def test_round_trip_keeps_the_content() -> None:
    data = seal([element(BODY, text="hi <there> & 'you'")], ALICE, BOB)
    opened = open_envelope(data, JID.parse("alice@example.org/laptop"), JID.parse("bob@example.org/desk"))
    assert [(el.tag, el.text) for el in opened.content] == [(BODY, "hi <there> & 'you'")]


def test_padding_sender_and_conversation_are_in_the_envelope() -> None:
    envelope = parse_frame(seal([element(BODY, text="x")], ALICE, ROOM), 10_000)
    sender, conversation = envelope.find(f"{{{SCE}}}from"), envelope.find(f"{{{SCE}}}to")
    assert sender is not None and sender.get("jid") == "alice@example.org"
    assert conversation is not None and conversation.get("jid") == str(ROOM)
    lengths = {len(parse_frame(seal([], ALICE, BOB), 10_000).findtext(f"{{{SCE}}}rpad") or "") for _ in range(50)}
    assert max(lengths) <= MAX_PADDING and len(lengths) > 1


def test_an_envelope_from_someone_else_is_refused() -> None:
    data = seal([element(BODY, text="x")], JID.parse("mallory@example.org"), BOB)
    with pytest.raises(SceError, match=re.escape("from mallory@example.org")):
        open_envelope(data, ALICE, BOB)


def test_a_group_message_cannot_pass_for_a_private_one_nor_back() -> None:
    """XEP-0384's SCE profile: the <to/> affix stops a server from turning one into the other."""
    with pytest.raises(SceError, match=re.escape(f"for {ROOM}, the message came for {BOB}")):
        open_envelope(seal([element(BODY, text="x")], ALICE, ROOM), ALICE, BOB)
    with pytest.raises(SceError, match=re.escape(f"for {BOB}, the message came for {ROOM}")):
        open_envelope(seal([element(BODY, text="x")], ALICE, BOB), ALICE, ROOM)


def test_an_envelope_without_sender_or_conversation_is_read() -> None:
    data = f"<envelope xmlns='{SCE}'><content><body xmlns='jabber:client'>x</body></content></envelope>"
    assert len(open_envelope(data.encode(), ALICE, BOB).content) == 1


@pytest.mark.parametrize("data", [
    b"not xml",
    b"<!DOCTYPE x [<!ENTITY a 'b'>]><envelope xmlns='urn:xmpp:sce:1'/>",
    b"<other xmlns='urn:xmpp:sce:1'/>",
    b"<envelope xmlns='urn:xmpp:sce:1'><rpad/></envelope>",
])
def test_what_is_not_an_envelope_is_refused(data: bytes) -> None:
    with pytest.raises(SceError):
        open_envelope(data, ALICE, BOB)

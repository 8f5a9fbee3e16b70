"""Quicksy's phone book (im.quicksy.synchronization:0): parsing, round trips and the answer's hash."""

from __future__ import annotations

import base64
import hashlib

import pytest

from schnack.xmpp.jid import JID
from schnack.xmpp.parser import parse_frame
from schnack.xmpp.payloads.phone_book import Entry, PhoneBook, PhoneBookError, answer_hash
from schnack.xmpp.xml import serialize

REQUEST = b"""<phone-book xmlns='im.quicksy.synchronization:0' ver='ZkGaTLM5frg0OH+LESQYJUZK1FA='>
  <entry number='+442079460100'/>
  <entry number='+4915146788794'/>
</phone-book>"""

RESULT = b"""<phone-book xmlns='im.quicksy.synchronization:0'>
  <entry number='+442079460100'><jid>+442079460100@example.org</jid></entry>
  <entry number='+4915146788794'><jid>+4915146788794@example.org</jid><jid>anna@example.net</jid></entry>
</phone-book>"""


def test_parse_request() -> None:
    book = PhoneBook.from_xml(parse_frame(REQUEST, 10**6))
    assert book.numbers == ("+442079460100", "+4915146788794")
    assert book.ver == "ZkGaTLM5frg0OH+LESQYJUZK1FA="
    assert all(not entry.jids for entry in book.entries)


def test_parse_result() -> None:
    book = PhoneBook.from_xml(parse_frame(RESULT, 10**6))
    assert book.ver is None
    assert book.entries[1].jids == (JID.parse("+4915146788794@example.org"), JID.parse("anna@example.net"))


@pytest.mark.parametrize(
    "book",
    [
        PhoneBook(),
        PhoneBook((Entry("+442079460100"),), ver="abc="),
        PhoneBook((Entry("+442079460100", (JID.parse("+442079460100@example.org"),)),)),
    ],
)
def test_round_trip(book: PhoneBook) -> None:
    assert PhoneBook.from_xml(parse_frame(serialize(book.to_xml()).encode(), 10**6)) == book


@pytest.mark.parametrize(
    ("xml", "condition"),
    [
        (b"<phone-book xmlns='im.quicksy.synchronization:0'><entry/></phone-book>", "bad-request"),
        (b"<phone-book xmlns='im.quicksy.synchronization:0'><entry number='0151234'/></phone-book>", "bad-request"),
        (
            b"<phone-book xmlns='im.quicksy.synchronization:0'><entry number='+4915146788794'><jid>@x</jid></entry>"
            b"</phone-book>",
            "jid-malformed",
        ),
        (b"<phone-book xmlns='urn:other'/>", "bad-request"),
    ],
)
def test_refused(xml: bytes, condition: str) -> None:
    with pytest.raises(PhoneBookError) as err:
        PhoneBook.from_xml(parse_frame(xml, 10**6))
    assert err.value.condition == condition


def test_answer_hash_is_quicksys() -> None:
    """Numbers in order, each followed by its sorted bare JIDs behind U+001E, joined by U+001D."""
    entries = [
        Entry("+4915146788794", (JID.parse("zoe@example.net/phone"), JID.parse("+4915146788794@example.org"))),
        Entry("+442079460100", (JID.parse("+442079460100@example.org"),)),
    ]
    text = "+442079460100\x1e+442079460100@example.org\x1d+4915146788794\x1e+4915146788794@example.org\x1ezoe@example.net"
    assert answer_hash(entries) == base64.b64encode(hashlib.sha1(text.encode()).digest()).decode()
    assert answer_hash(reversed(entries)) == answer_hash(entries)
    assert answer_hash([]) == base64.b64encode(hashlib.sha1(b"").digest()).decode()

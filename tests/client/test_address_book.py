"""Address books as phones export them: vCard files and number[,name] lines, brought to E.164."""

from __future__ import annotations

from pathlib import Path

import pytest

from schnack.client.address_book import (
    AddressBookError,
    Card,
    known_region,
    needs_region,
    parse,
    read,
    resolve,
)

# As Android's contacts app exports: vCard 2.1, names beyond ASCII in quoted-printable, which
# breaks long values with a soft line break ("=" at the end).
ANDROID = """BEGIN:VCARD\r
VERSION:2.1\r
N;CHARSET=UTF-8;ENCODING=QUOTED-PRINTABLE:M=C3=BCller;J=C3=BCrgen;;;\r
FN;CHARSET=UTF-8;ENCODING=QUOTED-PRINTABLE:J=C3=BCrgen M=C3=BCller-L=C3=BCdenscheid-=\r
Sch=C3=A4fer\r
TEL;CELL;PREF:0151 2345 6789\r
TEL;HOME:+49 30 901820\r
END:VCARD\r
BEGIN:VCARD\r
VERSION:2.1\r
N:;Pizza;;;\r
TEL;WORK:112\r
END:VCARD\r
"""

# As Apple's Contacts exports: vCard 3.0, grouped properties, several TYPE parameters, escapes,
# and a line folded at 75 octets (RFC 6350 §3.2) in the middle of the number.
APPLE = """BEGIN:VCARD
VERSION:3.0
PRODID:-//Apple Inc.//iPhone OS 17.0//EN
N:Doe;Anna\\, Maria;;;
FN:Anna\\, Maria Doe
item1.TEL;type=CELL;type=VOICE;type=pref:+49 (151) 2345-
 6780
item1.X-ABLabel:mobile
END:VCARD
BEGIN:VCARD
VERSION:4.0
N:Smith;Bob;;;
TEL;VALUE=uri;TYPE="voice,cell":tel:+1-202-555-0143;ext=12
END:VCARD
"""


def test_android_vcards() -> None:
    cards = parse(ANDROID)
    assert cards == [
        Card("0151 2345 6789", "Jürgen Müller-Lüdenscheid-Schäfer", 6),
        Card("+49 30 901820", "Jürgen Müller-Lüdenscheid-Schäfer", 7),
        # No FN: the given and family names of N.
        Card("112", "Pizza", 12),
    ]
    book = resolve(cards, "DE")
    assert book.names == {"+4915123456789": "Jürgen Müller-Lüdenscheid-Schäfer",
                          "+4930901820": "Jürgen Müller-Lüdenscheid-Schäfer"}
    # An emergency number is no account's number: skipped, with the reason.
    assert [(card.number, reason) for card, reason in book.skipped] == [("112", "'112' is not a valid phone number")]


def test_apple_and_vcard_4() -> None:
    cards = parse(APPLE)
    assert cards == [Card("+49 (151) 2345-6780", "Anna, Maria Doe", 6), Card("+1-202-555-0143", "Bob Smith", 13)]
    # Numbers with their country code need no region.
    assert resolve(cards, None).names == {"+4915123456780": "Anna, Maria Doe", "+12025550143": "Bob Smith"}


def test_number_lines() -> None:
    text = "0151 23456789,Anna\n\n+33 6 12 34 56 78, Jean, Pierre \n  030 901820  \nnot a number,Nobody\n"
    cards = parse(text)
    assert cards == [Card("0151 23456789", "Anna", 1), Card("+33 6 12 34 56 78", "Jean, Pierre", 3),
                     Card("030 901820", None, 4), Card("not a number", "Nobody", 5)]
    book = resolve(cards, "DE")
    assert book.names == {"+4915123456789": "Anna", "+33612345678": "Jean, Pierre", "+4930901820": None}
    assert [card.line for card, _ in book.skipped] == [5]


def test_the_first_name_found_for_a_number_counts() -> None:
    book = resolve(parse("+4915123456789\n0151 23456789,Anna\n+49 151 23456789,Anni\n"), "DE")
    assert book.names == {"+4915123456789": "Anna"}


def test_national_forms_need_a_region() -> None:
    assert needs_region("0151 23456789") and not needs_region(" +49 151 23456789")
    book = resolve([Card("0151 23456789", None, 1)], None)
    assert book.names == {} and "has no country code" in book.skipped[0][1]
    # The same digits are another number in another region.
    assert resolve([Card("020 7946 0958", None, 1)], "GB").names == {"+442079460958": None}
    assert known_region("de") and known_region("GB") and not known_region("XX")


def test_reading_files(tmp_path: Path) -> None:
    vcf = tmp_path / "contacts.vcf"
    vcf.write_bytes(b"\xef\xbb\xbf" + APPLE.encode())
    assert [card.name for card in read(vcf)] == ["Anna, Maria Doe", "Bob Smith"]
    latin = tmp_path / "latin.txt"
    latin.write_bytes("+4915123456789,J\xfcrgen".encode("latin-1"))
    with pytest.raises(AddressBookError, match=r"is not UTF-8 text"):
        read(latin)
    with pytest.raises(AddressBookError, match=r"cannot read .*missing.vcf: No such file or directory"):
        read(tmp_path / "missing.vcf")

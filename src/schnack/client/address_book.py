"""Address books as phones export them, read for contact discovery by phone number.

Two forms are read: vCard files (RFC 6350 vCard 4.0, RFC 2426 3.0 and the 2.1 that Android and
older phones write), of which each card's name (FN, else N) and its telephone numbers (TEL)
count; and plain text with one ``number[,name]`` per line. Numbers are written as people write
them ("0151 2345 6789", "+49 (151) 2345-6789", "tel:+49-151-23456789"); :func:`resolve` brings
them to E.164 (schnack.xmpp.phone), reading national forms in the region given.
"""

from __future__ import annotations

import quopri
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import phonenumbers

from ..xmpp.phone import PhoneNumberError, normalize

# RFC 6350 §3.3: a property is [group "."] name *(";" param) ":" value.
_PROPERTY = re.compile(r"(?:[A-Za-z0-9-]+\.)?(?P<name>[A-Za-z0-9-]+)(?P<params>(?:;[^:]*)?):(?P<value>.*)", )
_ESCAPES = {"n": "\n", "N": "\n", ",": ",", ";": ";", "\\": "\\"}


class AddressBookError(ValueError):
    """An address book that cannot be read at all (not text, not a file)."""


@dataclass(frozen=True)
class Card:
    """One number as the address book writes it, the name it has there, and where it was found."""

    number: str
    name: str | None
    line: int


@dataclass
class Resolved:
    """The numbers of an address book in E.164 form, each with the first name found for it, and
    the cards whose number is not one (a service code, a typo), with the reason."""

    names: dict[str, str | None] = field(default_factory=dict)
    skipped: list[tuple[Card, str]] = field(default_factory=list)


def known_region(region: str) -> bool:
    """Whether ``region`` is an ISO 3166 alpha-2 code that numbering plans are known for."""
    return region.upper() in phonenumbers.SUPPORTED_REGIONS


def read(path: Path) -> list[Card]:
    """The numbers of the address book in ``path``: a vCard file, or text with ``number[,name]`` lines."""
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as err:
        raise AddressBookError(f"cannot read {path}: {err.strerror or err}") from None
    except UnicodeDecodeError:
        raise AddressBookError(f"{path} is not UTF-8 text (a vCard file or number[,name] lines)") from None
    return parse(text)


def parse(text: str) -> list[Card]:
    """The numbers of an address book given as text, in either form."""
    if text.lstrip().upper().startswith("BEGIN:VCARD"):
        return parse_vcards(text)
    return parse_lines(text)


def parse_lines(text: str) -> list[Card]:
    """One ``number[,name]`` per line; empty lines are skipped."""
    cards = []
    for number, line in enumerate(text.splitlines(), 1):
        written, _, name = line.partition(",")
        if written.strip():
            cards.append(Card(written.strip(), name.strip() or None, number))
    return cards


def parse_vcards(text: str) -> list[Card]:
    """RFC 6350 §3.2 (folded lines), §3.3 (properties), §6.2.1 FN, §6.2.2 N, §6.4.1 TEL.

    Each card's TEL numbers are named by its FN, or by the given and family names of its N; a
    ``tel:`` URI (vCard 4.0) counts by its number. vCard 2.1 values in QUOTED-PRINTABLE (names
    with letters beyond ASCII, as Android writes them) are decoded.
    """
    cards: list[Card] = []
    numbers: list[tuple[str, int]] = []
    full_name: str | None = None
    name: str | None = None
    for line_number, name_, params, value in _properties(text):
        if name_ == "BEGIN" and value.strip().upper() == "VCARD":
            numbers, full_name, name = [], None, None
        elif name_ == "END" and value.strip().upper() == "VCARD":
            cards.extend(Card(number, full_name or name, line) for number, line in numbers)
            numbers = []
        elif name_ == "TEL":
            number = _decoded(params, value).strip()
            if number.lower().startswith("tel:"):
                # RFC 3966: parameters such as ";ext=" follow the number.
                number = number[4:].partition(";")[0]
            if number:
                numbers.append((number, line_number))
        elif name_ == "FN":
            full_name = _unescape(_decoded(params, value)).strip() or None
        elif name_ == "N":
            family, given = [*_split(_decoded(params, value)), "", ""][:2]
            name = " ".join(part for part in (given, family) if part) or None
    return cards


def _properties(text: str) -> Iterable[tuple[int, str, str, str]]:
    """The content lines, unfolded, as (line number, upper-case name, parameters, value)."""
    logical: list[tuple[int, str]] = []
    for number, line in enumerate(text.splitlines(), 1):
        if line[:1] in (" ", "\t") and logical:
            # §3.2: a line that starts with white space continues the one before, without it.
            logical[-1] = (logical[-1][0], logical[-1][1] + line[1:])
        elif logical and _soft_break(logical[-1][1]):
            # vCard 2.1: a quoted-printable value that ends in "=" (a soft line break) goes on in the next line.
            logical[-1] = (logical[-1][0], logical[-1][1][:-1] + line)
        elif line.strip():
            logical.append((number, line))
    for number, line in logical:
        match = _PROPERTY.fullmatch(line)
        if match is not None:
            yield number, match["name"].upper(), match["params"].upper(), match["value"]


def _soft_break(line: str) -> bool:
    head, _, value = line.partition(":")
    return "QUOTED-PRINTABLE" in head.upper() and value.endswith("=")


def _decoded(params: str, value: str) -> str:
    if "QUOTED-PRINTABLE" not in params:
        return value
    charset = re.search(r"CHARSET=([A-Z0-9_-]+)", params)
    raw = quopri.decodestring(value.encode("ascii", "replace"))
    try:
        return raw.decode(charset[1].lower() if charset else "utf-8")
    except (LookupError, UnicodeDecodeError):
        return raw.decode("utf-8", "replace")


def _unescape(value: str) -> str:
    """§3.4: backslash escapes in a text value."""
    return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m[1], m[1]), value)


def _split(value: str) -> list[str]:
    """The components of a structured value (N), split at unescaped semicolons."""
    return [_unescape(part).strip() for part in re.split(r"(?<!\\);", value)]


def resolve(cards: Iterable[Card], region: str | None) -> Resolved:
    """The cards' numbers in E.164 form, national forms read in ``region``; the others are skipped."""
    resolved = Resolved()
    for card in cards:
        try:
            number = normalize(card.number, region)
        except PhoneNumberError as err:
            resolved.skipped.append((card, str(err)))
            continue
        if resolved.names.get(number) is None:
            resolved.names[number] = card.name
    return resolved


def needs_region(written: str) -> bool:
    """Whether a number is written in a national form, which only a region makes a number."""
    return not written.lstrip().startswith("+")

"""E.164 phone numbers: the form accounts are named by, and reading address books' forms."""

from __future__ import annotations

import pytest

from schnack.xmpp.phone import PhoneNumberError, is_e164, normalize, region_of


@pytest.mark.parametrize("text", ["+4915123456789", "+18005222443", "+12"])
def test_e164_form(text: str) -> None:
    assert is_e164(text)


@pytest.mark.parametrize("text", ["4915123456789", "+04915123456789", "+49 151 23456789", "+1234567890123456", "+", ""])
def test_not_e164_form(text: str) -> None:
    assert not is_e164(text)


@pytest.mark.parametrize(
    ("text", "region", "e164"),
    [
        ("+49 151 23456789", None, "+4915123456789"),
        ("0151 / 234 567 89", "DE", "+4915123456789"),
        ("0151 23456789", "de", "+4915123456789"),
        ("(800) 522-2443", "US", "+18005222443"),
        ("00 49 151 23456789", "DE", "+4915123456789"),
    ],
)
def test_normalize(text: str, region: str | None, e164: str) -> None:
    assert normalize(text, region) == e164


def test_a_national_form_needs_a_region() -> None:
    with pytest.raises(PhoneNumberError, match="no country code"):
        normalize("0151 23456789")


@pytest.mark.parametrize("text", ["hello", "+49 1", "+999 123456"])
def test_not_a_valid_number(text: str) -> None:
    with pytest.raises(PhoneNumberError):
        normalize(text, "DE")


def test_region_of() -> None:
    assert region_of("+4915123456789") == "DE"
    assert region_of("+18005222443") == "US"
    assert region_of("+999123") is None

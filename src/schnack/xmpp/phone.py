"""Phone numbers as account names: E.164 (ITU-T E.164, with its leading '+').

Phone-number accounts are named by the number in E.164 form (``+4915123456789@example.org``,
as Quicksy names them), and contact discovery matches numbers in that form only, so every
number is brought to it before it is stored or sent. Address books hold national forms
("0151 2345 6789"): those need the region they were written in, which a client takes from its
own number.
"""

from __future__ import annotations

import re

import phonenumbers

# ITU-T E.164 §6: a country code that does not start with 0, at most 15 digits in all.
_E164 = re.compile(r"\+[1-9][0-9]{1,14}")


class PhoneNumberError(ValueError):
    """A text that is not a phone number one can send a message to."""


def is_e164(text: str) -> bool:
    """Whether ``text`` is written in E.164 form (it says nothing of the number being in use)."""
    return _E164.fullmatch(text) is not None


def normalize(text: str, region: str | None = None) -> str:
    """``text`` as a valid number in E.164 form; ``region`` (ISO 3166 alpha-2) reads national forms.

    Raises PhoneNumberError naming what is wrong: not a number, a national form without a
    region, or a number no plan assigns (too short, an unknown country code).
    """
    try:
        number = phonenumbers.parse(text, region.upper() if region else None)
    except phonenumbers.NumberParseException as err:
        if err.error_type == phonenumbers.NumberParseException.INVALID_COUNTRY_CODE:
            raise PhoneNumberError(
                f"{text!r} has no country code: write it with '+' and the country code"
                + ("" if region is None else f" (the region {region!r} is unknown)")
            ) from None
        raise PhoneNumberError(f"{text!r} is not a phone number") from None
    if not phonenumbers.is_valid_number(number):
        raise PhoneNumberError(f"{text!r} is not a valid phone number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def region_of(e164: str) -> str | None:
    """The region (ISO 3166 alpha-2) an E.164 number belongs to, to read its owner's address book."""
    try:
        region = phonenumbers.region_code_for_number(phonenumbers.parse(e164, None))
    except phonenumbers.NumberParseException:
        return None
    return region if region and region != "ZZ" else None

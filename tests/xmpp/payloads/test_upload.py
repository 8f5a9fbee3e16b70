"""XEP-0363 payloads: slot requests, slots, the §5 errors and the disco form, parsed and round-tripped."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from schnack.xmpp.parser import parse_frame
from schnack.xmpp.payloads.dataforms import DataForm
from schnack.xmpp.payloads.upload import (
    FileTooLarge,
    Retry,
    Slot,
    SlotRequest,
    UploadError,
    max_file_size,
    service_form,
)
from schnack.xmpp.xml import serialize

NS = "urn:xmpp:http:upload:0"


def parse(text: str) -> object:
    return parse_frame(text.encode(), 10**6)


def test_parse_request_of_the_xep() -> None:
    """§4, example 4."""
    el = parse(f"<request xmlns='{NS}' filename='très cool.jpg' size='23456' content-type='image/jpeg'/>")
    assert SlotRequest.from_xml(el) == SlotRequest("très cool.jpg", 23456, "image/jpeg")  # type: ignore[arg-type]


def test_content_type_is_optional() -> None:
    el = parse(f"<request xmlns='{NS}' filename='a.bin' size='1'/>")
    assert SlotRequest.from_xml(el).content_type is None  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "attrs",
    ["size='1'", "filename='' size='1'", "filename='a'", "filename='a' size='-1'", "filename='a' size='1e3'",
     "filename='a' size='٣'"],
)
def test_bad_requests(attrs: str) -> None:
    with pytest.raises(UploadError) as err:
        SlotRequest.from_xml(parse(f"<request xmlns='{NS}' {attrs}/>"))  # type: ignore[arg-type]
    assert err.value.condition == "bad-request"


def test_parse_slot_keeps_only_the_allowed_headers() -> None:
    """§4: Authorization, Cookie and Expires only, and none with a line break."""
    el = parse(
        f"<slot xmlns='{NS}'><put url='https://up.example/put'>"
        "<header name='Authorization'>Basic Base64String==</header><header name='Cookie'>foo=bar</header>"
        "<header name='X-Evil'>1</header><header name='Expires'>a&#10;Host: x</header></put>"
        "<get url='https://up.example/get'/></slot>"
    )
    slot = Slot.from_xml(el)  # type: ignore[arg-type]
    assert slot == Slot("https://up.example/put", "https://up.example/get",
                        (("Authorization", "Basic Base64String=="), ("Cookie", "foo=bar")))


def test_slot_needs_both_urls() -> None:
    with pytest.raises(UploadError):
        Slot.from_xml(parse(f"<slot xmlns='{NS}'><put url='https://x/'/></slot>"))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "payload",
    [
        SlotRequest("photo.jpg", 1234, "image/jpeg"),
        SlotRequest("voice message.ogg", 1, None),
        Slot("https://h/put?e=1&s=x", "https://h/get"),
        Slot("https://h/put", "https://h/get", (("Authorization", "Bearer t"), ("Expires", "Thu, 01 Dec 1994"))),
        FileTooLarge(20_000_000),
        Retry(datetime(2026, 12, 2, 18, 30, 5, tzinfo=UTC)),
    ],
)
def test_round_trip(payload: SlotRequest | Slot | FileTooLarge | Retry) -> None:
    again = type(payload).from_xml(parse_frame(serialize(payload.to_xml()).encode(), 10**6))
    assert again == payload


def test_error_elements_as_the_xep_shows_them() -> None:
    """§5, examples 7 and 8."""
    assert serialize(FileTooLarge(20000).to_xml()) == (
        f'<file-too-large xmlns="{NS}"><max-file-size>20000</max-file-size></file-too-large>'
    )
    assert serialize(Retry(datetime(2017, 12, 3, 23, 42, 1, tzinfo=UTC)).to_xml()) == (
        f'<retry xmlns="{NS}" stamp="2017-12-03T23:42:01Z"/>'
    )


def test_retry_needs_a_zoned_stamp() -> None:
    with pytest.raises(UploadError):
        Retry.from_xml(parse(f"<retry xmlns='{NS}' stamp='2017-12-03T23:42:01'/>"))  # type: ignore[arg-type]
    with pytest.raises(UploadError):
        Retry.from_xml(parse(f"<retry xmlns='{NS}' stamp='soon'/>"))  # type: ignore[arg-type]


def test_service_form() -> None:
    """§3, example 2: the form and the limit read back from it."""
    form = service_form(5242880)
    again = DataForm.from_xml(parse_frame(serialize(form.to_xml()).encode(), 10**6))
    assert again.form_type == NS
    assert max_file_size(again) == 5242880
    assert max_file_size(service_form(None)) is None
    assert max_file_size(DataForm("result")) is None

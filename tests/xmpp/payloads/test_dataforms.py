"""XEP-0004 data forms: parsing, building and round trips."""

from __future__ import annotations

import pytest

from schnack.xmpp.parser import parse_frame
from schnack.xmpp.payloads.dataforms import DataForm, DataFormError, Field, Option
from schnack.xmpp.xml import serialize

# XEP-0004 §3.1 and XEP-0077 §4, trimmed.
FORM = b"""<x xmlns='jabber:x:data' type='form'>
  <title>Contest Registration</title>
  <instructions>Please provide the following information</instructions>
  <instructions>to sign up for our special contests!</instructions>
  <field type='hidden' var='FORM_TYPE'><value>jabber:iq:register</value></field>
  <field type='text-single' label='Given Name' var='first'><desc>Your first name</desc><required/></field>
  <field type='list-single' label='Gender' var='x-gender'>
    <option label='Male'><value>M</value></option>
    <option label='Female'><value>F</value></option>
  </field>
  <field type='text-multi' var='lines'><value>one</value><value>two</value></field>
</x>"""


def test_parse_form() -> None:
    form = DataForm.from_xml(parse_frame(FORM, 10**6))
    assert form.type == "form"
    assert form.title == "Contest Registration"
    assert form.instructions == (
        "Please provide the following information",
        "to sign up for our special contests!",
    )
    assert form.form_type == "jabber:iq:register"
    first = form.field("first")
    assert first == Field("first", "text-single", "Given Name", (), True, "Your first name")
    gender = form.field("x-gender")
    assert gender is not None
    assert gender.options == (Option("M", "Male"), Option("F", "Female"))
    assert form.value("lines") == "one"
    lines = form.field("lines")
    assert lines is not None and lines.values == ("one", "two")
    assert form.field("missing") is None
    assert form.value("missing") is None


def test_round_trip() -> None:
    form = DataForm.from_xml(parse_frame(FORM, 10**6))
    again = DataForm.from_xml(parse_frame(serialize(form.to_xml()).encode(), 10**6))
    assert again == form


def test_built_form_round_trips() -> None:
    form = DataForm(
        "submit",
        (
            Field("FORM_TYPE", "hidden", values=("urn:x",)),
            Field("a", values=("1", "2")),
            Field(None, "fixed"),
        ),
    )
    assert DataForm.from_xml(form.to_xml()) == form
    assert form.form_type == "urn:x"


def test_form_type_must_be_hidden() -> None:
    form = DataForm("result", (Field("FORM_TYPE", "text-single", values=("urn:x",)),))
    assert form.form_type is None
    assert DataForm("result", (Field("FORM_TYPE", values=("urn:x",)),)).form_type == "urn:x"


@pytest.mark.parametrize(
    "xml",
    [
        b"<x xmlns='jabber:x:data' type='weird'/>",
        b"<x xmlns='jabber:x:data'/>",
        b"<x xmlns='jabber:x:data' type='form'><field var='a' type='bogus'/></x>",
        b"<y xmlns='jabber:x:data' type='form'/>",
    ],
)
def test_invalid_forms(xml: bytes) -> None:
    with pytest.raises(DataFormError):
        DataForm.from_xml(parse_frame(xml, 10**6))

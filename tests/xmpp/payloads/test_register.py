"""XEP-0077 registration query: parsing, building and round trips."""

from __future__ import annotations

import pytest

from schnack.xmpp.parser import parse_frame
from schnack.xmpp.payloads.dataforms import DataForm, Field
from schnack.xmpp.payloads.register import RegisterError, RegisterQuery
from schnack.xmpp.xml import serialize


def test_request_fields_keep_empty_elements() -> None:
    query = RegisterQuery.from_xml(
        parse_frame(
            b"<query xmlns='jabber:iq:register'><instructions>Choose</instructions>"
            b"<username/><password/></query>",
            10**6,
        )
    )
    assert query == RegisterQuery(instructions="Choose", username="", password="")
    assert "<username/>" in serialize(query.to_xml())


def test_round_trips() -> None:
    cases = [
        RegisterQuery(username="bill", password="Calliope"),
        RegisterQuery(registered=True, username="bill", password=""),
        RegisterQuery(remove=True),
        RegisterQuery(
            instructions="Use the form",
            form=DataForm("form", (Field("FORM_TYPE", "hidden", values=("jabber:iq:register",)),)),
        ),
        RegisterQuery(),
    ]
    for query in cases:
        again = RegisterQuery.from_xml(parse_frame(serialize(query.to_xml()).encode(), 10**6))
        assert again == query


def test_remove_and_registered() -> None:
    query = RegisterQuery.from_xml(
        parse_frame(b"<query xmlns='jabber:iq:register'><registered/><remove/></query>", 10**6)
    )
    assert query.remove and query.registered
    assert query.username is None and query.password is None


def test_wrong_element() -> None:
    with pytest.raises(RegisterError):
        RegisterQuery.from_xml(parse_frame(b"<query xmlns='jabber:iq:roster'/>", 10**6))

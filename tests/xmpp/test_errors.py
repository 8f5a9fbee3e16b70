"""Stream errors (RFC 6120 §4.9) and stanza errors (RFC 6120 §8.3)."""

from __future__ import annotations

import pytest

from schnack.xmpp import ns
from schnack.xmpp.errors import STANZA_CONDITIONS, StanzaError, StreamError
from schnack.xmpp.xml import element, qname, serialize


def test_stream_error_element() -> None:
    err = StreamError("policy-violation", "too big")
    assert serialize(err.to_xml()) == (
        f'<error xmlns="{ns.STREAMS}"><policy-violation xmlns="{ns.STREAM_ERRORS}"/>'
        f'<text xmlns="{ns.STREAM_ERRORS}" xml:lang="en">too big</text></error>'
    )


def test_unknown_conditions_are_programming_errors() -> None:
    with pytest.raises(ValueError):
        StreamError("oops")
    with pytest.raises(ValueError):
        StanzaError("oops")


@pytest.mark.parametrize("condition", sorted(STANZA_CONDITIONS))
def test_stanza_error_round_trip(condition: str) -> None:
    err = StanzaError(condition, "why")
    back = StanzaError.from_xml(err.to_xml())
    assert (back.condition, back.text, back.type) == (condition, "why", STANZA_CONDITIONS[condition])


def test_stanza_error_extras() -> None:
    """Application-specific conditions, 'by' and the XEP-0086 legacy code some clients still need."""
    extra = element(qname("urn:xmpp:app", "too-many"))
    el = StanzaError("item-not-found", type="cancel", by="localhost", extra=extra, legacy_code="404").to_xml()
    assert el.get("code") == "404"
    assert el.get("by") == "localhost"
    assert el[-1] is extra
    assert el[0].tag == qname(ns.STANZA_ERRORS, "item-not-found")


def test_unknown_condition_from_a_peer_reads_as_undefined() -> None:
    el = element(qname(ns.CLIENT, "error"), {"type": "cancel"},
                 children=[element(qname(ns.STANZA_ERRORS, "made-up"))])
    assert StanzaError.from_xml(el).condition == "undefined-condition"

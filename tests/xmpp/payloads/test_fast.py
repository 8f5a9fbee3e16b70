"""XEP-0484 FAST elements: round trips, the XEP's examples, and bad attributes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from schnack.xmpp.parser import parse_frame
from schnack.xmpp.payloads.fast import Fast, FastError, FastFeature, RequestToken, Token
from schnack.xmpp.xml import serialize

FAST = "urn:xmpp:fast:0"


def parse(xml: str) -> Any:
    return parse_frame(xml.encode(), 10**6)


@pytest.mark.parametrize(
    "payload",
    [
        FastFeature(("HT-SHA-256-EXPR", "HT-SHA-256-NONE")),
        FastFeature(("HT-SHA-256-NONE",), tls_0rtt=True),
        RequestToken("HT-SHA-256-ENDP"),
        Fast(),
        Fast(count=123),
        Fast(count=0, invalidate=True),
        Token("WXZzciBwYmFmdmZnZiBqdmd1IGp2eXFhcmZm", datetime(2020, 3, 12, 14, 36, 15, tzinfo=UTC)),
    ],
)
def test_round_trip(payload: Any) -> None:
    assert type(payload).from_xml(parse(serialize(payload.to_xml()))) == payload


def test_parses_the_xep_examples() -> None:
    feature = FastFeature.from_xml(parse(
        f"<fast xmlns='{FAST}' tls-0rtt='true'><mechanism>HT-SHA-256-ENDP</mechanism>"
        "<mechanism>HT-SHA-256-NONE</mechanism></fast>"
    ))
    assert feature == FastFeature(("HT-SHA-256-ENDP", "HT-SHA-256-NONE"), True)
    token = Token.from_xml(parse(f"<token xmlns='{FAST}' expiry='2020-03-12T14:36:15Z' token='abc'/>"))
    assert token.expiry == datetime(2020, 3, 12, 14, 36, 15, tzinfo=UTC)
    assert Fast.from_xml(parse(f"<fast xmlns='{FAST}' count='123' invalidate='1'/>")) == Fast(123, True)


@pytest.mark.parametrize(
    ("cls", "xml"),
    [
        (Fast, f"<fast xmlns='{FAST}' count='-1'/>"),
        (Fast, f"<fast xmlns='{FAST}' count='1e3'/>"),
        (Fast, f"<fast xmlns='{FAST}' invalidate='maybe'/>"),
        (RequestToken, f"<request-token xmlns='{FAST}'/>"),
        (Token, f"<token xmlns='{FAST}' token='abc'/>"),
        (Token, f"<token xmlns='{FAST}' token='abc' expiry='tomorrow'/>"),
    ],
)
def test_refuses_malformed(cls: Any, xml: str) -> None:
    with pytest.raises(FastError):
        cls.from_xml(parse(xml))

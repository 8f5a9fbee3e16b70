"""XEP-0388 SASL2 and XEP-0509 config-version elements: round trips, parsing, refusals."""

from __future__ import annotations

from typing import Any

import pytest

from schnack.xmpp.parser import parse_frame
from schnack.xmpp.payloads.sasl2 import (
    CONFIG_VERSION_MISMATCH,
    Abort,
    Authenticate,
    Authentication,
    Challenge,
    ConfigVersion,
    Failure,
    Response,
    Sasl2Error,
    Success,
    UserAgent,
)
from schnack.xmpp.xml import element, serialize

SASL2 = "urn:xmpp:sasl:2"
BIND = element("{urn:xmpp:bind:0}bind")


def parse(xml: str) -> Any:
    return parse_frame(xml.encode(), 10**6)


@pytest.mark.parametrize(
    "payload",
    [
        Authentication(("SCRAM-SHA-256-PLUS", "SCRAM-SHA-256")),
        Authentication(("PLAIN",), (element("{urn:xmpp:sm:3}sm"), BIND)),
        Authenticate("SCRAM-SHA-256"),
        Authenticate("PLAIN", b"\0alice\0pw", UserAgent("d4565fa7", "schnack", "phone"), (BIND,)),
        Authenticate("HT-SHA-256-NONE", b"", UserAgent("x")),
        UserAgent(),
        UserAgent("id-only"),
        Challenge(b"r=abc,s=c2FsdA==,i=4096"),
        Challenge(b""),
        Response(b"c=biws,r=abc,p=cHJvb2Y="),
        Abort(),
        Abort("changed my mind"),
        Success("alice@example.org"),
        Success("alice@example.org/schnack/x1", b"v=c2lnbmF0dXJl", (element("{urn:xmpp:bind:0}bound"),)),
        Failure("not-authorized"),
        Failure("aborted", "configuration version mismatch", (element(CONFIG_VERSION_MISMATCH),)),
        ConfigVersion("0crMQYyO9lFh5om1", "opaque"),
        ConfigVersion("v"),
    ],
)
def test_round_trip(payload: Any) -> None:
    again = type(payload).from_xml(parse(serialize(payload.to_xml())))
    assert again == payload
    # Inline elements are compared as XML: they are other namespaces' elements.
    assert serialize(again.to_xml()) == serialize(payload.to_xml())


def test_parses_the_xep_examples() -> None:
    request = Authenticate.from_xml(parse(
        f"<authenticate xmlns='{SASL2}' mechanism='SCRAM-SHA-1-PLUS'>"
        "<initial-response>\n  cD10bHMtZXhwb3J0ZXIsLG49dXNlcixyPTEy\n</initial-response>"
        "<user-agent id='d4565fa7-4d72-4749-b3d3-740edbf87770'><software>AwesomeXMPP</software>"
        "<device>Kiva's Phone</device></user-agent>"
        "<bind xmlns='urn:xmpp:bind:0'><tag>AwesomeXMPP</tag></bind></authenticate>"
    ))
    assert request.initial_response == b"p=tls-exporter,,n=user,r=12"
    assert request.user_agent == UserAgent("d4565fa7-4d72-4749-b3d3-740edbf87770", "AwesomeXMPP", "Kiva's Phone")
    assert request.find("{urn:xmpp:bind:0}bind") is not None
    # XEP-0386's examples call it authorization-identity.
    success = Success.from_xml(parse(
        f"<success xmlns='{SASL2}'><authorization-identity>user@example.com/A.1</authorization-identity></success>"
    ))
    assert success.authorization_identifier == "user@example.com/A.1"
    failure = Failure.from_xml(parse(
        f"<failure xmlns='{SASL2}'><aborted xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>"
        "<config-version-mismatch xmlns='urn:xmpp:iap:0'/><text>Configuration version mismatch</text></failure>"
    ))
    assert (failure.condition, failure.text) == ("aborted", "Configuration version mismatch")
    assert failure.has(CONFIG_VERSION_MISMATCH)
    assert ConfigVersion.from_xml(parse("<config-version xmlns='urn:xmpp:iap:0' schema='opaque' value='V2'/>")) == \
        ConfigVersion("V2", "opaque")


def test_empty_initial_response_differs_from_none() -> None:
    assert Authenticate.from_xml(parse(
        f"<authenticate xmlns='{SASL2}' mechanism='X'><initial-response/></authenticate>"
    )).initial_response == b""
    assert Authenticate.from_xml(parse(f"<authenticate xmlns='{SASL2}' mechanism='X'/>")).initial_response is None


@pytest.mark.parametrize(
    ("cls", "xml"),
    [
        (Authenticate, f"<authenticate xmlns='{SASL2}'/>"),
        (Authenticate, f"<authenticate xmlns='{SASL2}' mechanism='X'><initial-response>%%%</initial-response></authenticate>"),
        (Success, f"<success xmlns='{SASL2}'/>"),
        (Challenge, f"<challenge xmlns='{SASL2}'>not base64!</challenge>"),
        (ConfigVersion, "<config-version xmlns='urn:xmpp:iap:0'/>"),
        (Response, f"<challenge xmlns='{SASL2}'/>"),
    ],
)
def test_refuses_malformed(cls: Any, xml: str) -> None:
    with pytest.raises(Sasl2Error):
        cls.from_xml(parse(xml))

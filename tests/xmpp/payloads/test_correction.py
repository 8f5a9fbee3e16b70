"""XEP-0308 corrections: round trip, a correction as the XEP shows one, and a replace without an id."""

from __future__ import annotations

import pytest

from schnack.xmpp.parser import parse_frame
from schnack.xmpp.payloads.correction import REPLACE, CorrectionError, Replace
from schnack.xmpp.xml import element, serialize


def test_round_trip_and_found_in_a_message() -> None:
    # A correction in the shape of the XEP's examples.
    message = parse_frame(b"<message xmlns='jabber:client' to='juliet@capulet.net/balcony' id='good1'>"
                          b"<body>But soft, what light through yonder window breaks?</body>"
                          b"<replace id='bad1' xmlns='urn:xmpp:message-correct:0'/></message>", 10**5)
    found = Replace.find(message)
    assert found == Replace("bad1")
    assert Replace.from_xml(found.to_xml()) == found
    assert serialize(found.to_xml()) == '<replace xmlns="urn:xmpp:message-correct:0" id="bad1"/>'


def test_a_replace_names_the_message() -> None:
    with pytest.raises(CorrectionError, match="names the message"):
        Replace.from_xml(element(REPLACE))
    assert Replace.find(element("{jabber:client}message", children=[element(REPLACE)])) is None

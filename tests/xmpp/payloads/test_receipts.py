"""XEP-0184 receipts: round trip, a receipt as the XEP shows one, and what is not one."""

from __future__ import annotations

import pytest

from schnack.xmpp.parser import parse_frame
from schnack.xmpp.payloads.receipts import RECEIVED, REQUEST, ReceiptError, Received
from schnack.xmpp.xml import Element, element, serialize


def parse(xml: str) -> Element:
    return parse_frame(xml.encode(), 10**5)


def test_round_trip_and_found_in_a_message() -> None:
    # A receipt in the shape of the XEP's examples.
    receipt = parse("<message xmlns='jabber:client' from='kingrichard@royalty.england.lit/throne'"
                    " id='bi29sg183b4v' to='northumberland@shakespeare.lit/westminster'>"
                    "<received xmlns='urn:xmpp:receipts' id='richard2-4.1.247'/></message>")
    found = Received.find(receipt)
    assert found == Received("richard2-4.1.247")
    assert Received.from_xml(found.to_xml()) == found
    assert serialize(found.to_xml()) == '<received xmlns="urn:xmpp:receipts" id="richard2-4.1.247"/>'
    assert REQUEST == "{urn:xmpp:receipts}request"


def test_a_receipt_names_its_message() -> None:
    with pytest.raises(ReceiptError, match="names the message"):
        Received.from_xml(element(RECEIVED))
    with pytest.raises(ReceiptError, match="expected a receipt"):
        Received.from_xml(element(REQUEST))
    assert Received.find(parse("<message xmlns='jabber:client'><received xmlns='urn:xmpp:receipts'/></message>")) is None
    assert Received.find(parse("<message xmlns='jabber:client'><body>hi</body></message>")) is None

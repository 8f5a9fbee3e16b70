"""XEP-0352 §4.2 client state nonzas: parsing, building and round trips."""

from __future__ import annotations

import pytest

from schnack.xmpp.parser import parse_frame
from schnack.xmpp.payloads.csi import ClientState
from schnack.xmpp.xml import serialize


@pytest.mark.parametrize(
    ("text", "active"),
    [("<active xmlns='urn:xmpp:csi:0'/>", True), ("<inactive xmlns='urn:xmpp:csi:0'/>", False)],
)
def test_round_trip(text: str, active: bool) -> None:
    state = ClientState.from_xml(parse_frame(text.encode(), 10**6))
    assert state == ClientState(active=active)
    assert serialize(state.to_xml()) == text.replace("'", '"')
    assert ClientState.from_xml(state.to_xml()) == state


def test_a_stream_begins_active() -> None:
    assert ClientState().active


@pytest.mark.parametrize("text", ["<active xmlns='urn:xmpp:csi:1'/>", "<csi xmlns='urn:xmpp:csi:0'/>"])
def test_other_elements_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        ClientState.from_xml(parse_frame(text.encode(), 10**6))

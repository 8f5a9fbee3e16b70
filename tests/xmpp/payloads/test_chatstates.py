"""XEP-0085 chat states: round trip of the five states, and what is not one."""

from __future__ import annotations

import pytest

from schnack.xmpp.parser import parse_frame
from schnack.xmpp.payloads.chatstates import NS, STATES, ChatState, ChatStateError
from schnack.xmpp.xml import element, qname, serialize


@pytest.mark.parametrize("state", STATES)
def test_round_trip(state: str) -> None:
    chat_state = ChatState(state)  # type: ignore[arg-type]
    assert ChatState.from_xml(chat_state.to_xml()) == chat_state
    assert serialize(chat_state.to_xml()) == f'<{state} xmlns="{NS}"/>'


def test_found_in_a_message_and_refused_otherwise() -> None:
    # A standalone notification in the shape of the XEP's examples.
    message = parse_frame(b"<message xmlns='jabber:client' from='bernardo@shakespeare.lit/pda'"
                          b" to='francisco@shakespeare.lit' type='chat'>"
                          b"<composing xmlns='http://jabber.org/protocol/chatstates'/></message>", 10**5)
    assert ChatState.find(message) == ChatState("composing")
    with pytest.raises(ChatStateError, match="'typing' is not a chat state"):
        ChatState("typing")  # type: ignore[arg-type]
    with pytest.raises(ChatStateError, match="expected a chat state"):
        ChatState.from_xml(element(qname(NS, "typing")))
    assert ChatState.find(element(qname("jabber:client", "message"))) is None

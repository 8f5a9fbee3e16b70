"""Chat states (XEP-0085) between two of our clients through the real server: discovered as §5.1
allows (a content message carries <active/>; standalone states only once the contact showed it
takes them), never repeated (§5.3), and surfaced to the program."""

from __future__ import annotations

import pytest

from schnack.client import ChatStateChange, Client
from schnack.server.app import Server

from ..conftest import next_of, online


async def test_typing_reaches_a_contact_that_takes_chat_states(chat_server: Server, clients: list[Client]) -> None:
    alice = await online(chat_server, clients, "alice@localhost/phone")
    bob = await online(chat_server, clients, "bob@localhost/laptop")
    alice_states, bob_states, bob_inbox = alice.chat_states(), bob.chat_states(), bob.messages()
    # Nothing is known about bob yet: no standalone notification goes out (§5.1).
    assert not await alice.typing("bob@localhost", "composing")
    await alice.send("bob@localhost", "hello", encrypted=False)
    got = await next_of(bob_inbox)
    assert got.element.find("{http://jabber.org/protocol/chatstates}active") is not None
    assert await next_of(bob_states) == ChatStateChange(alice.jid, "active")
    # alice's message showed bob that she takes them; bob's reply shows it to alice.
    assert await bob.typing(alice.jid, "composing")
    assert await next_of(alice_states) == ChatStateChange(bob.jid, "composing")
    assert not await bob.typing(alice.jid, "composing")  # §5.3: not twice in a row
    assert await bob.typing(alice.jid, "paused")
    assert await next_of(alice_states) == ChatStateChange(bob.jid, "paused")
    assert await alice.typing("bob@localhost", "composing")
    assert await next_of(bob_states) == ChatStateChange(alice.jid, "composing")
    with pytest.raises(ValueError, match="'typing' is not a chat state"):
        await alice.typing("bob@localhost", "typing")

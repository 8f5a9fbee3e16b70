"""Chat messages between two of our clients through the real server (RFC 6121 §5).

Messages are OMEMO encrypted by default (tests/client/omemo/ covers that); plaintext leaves only
with ``encrypted=False``; with the server's e2e policy "required" (the
default) even that is refused by the server, and the refusal reaches the sender as an error
message carrying the condition.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from schnack.client import Client, EncryptionRequired
from schnack.server.app import Server
from schnack.server.modules.e2e import REFUSAL
from schnack.xmpp import ns
from schnack.xmpp.xml import element, qname, sub

from ...harness import add_user
from ...integration.wire import Wire
from ..conftest import PASSWORD, WAIT, make_client, next_of, online

_PRESENCE = qname(ns.CLIENT, "presence")
_MESSAGE = qname(ns.CLIENT, "message")
_BODY = qname(ns.CLIENT, "body")


async def test_two_clients_exchange_messages(chat_server: Server, clients: list[Client]) -> None:
    alice = await online(chat_server, clients, "alice@localhost/phone")
    bob = await online(chat_server, clients, "bob@localhost/laptop")
    alice_inbox, bob_inbox = alice.messages(), bob.messages()
    sent = await alice.send("bob@localhost", "hello bob", encrypted=False)
    got = await next_of(bob_inbox)
    assert (got.sender, got.to, got.text, got.id, got.type) == (alice.jid, bob.jid.bare, "hello bob", sent, "chat")
    assert got.stamp is None and got.error is None
    await bob.send(got.sender, "hi alice", encrypted=False)
    reply = await next_of(alice_inbox)
    assert (reply.sender, reply.text) == (bob.jid, "hi alice")


async def test_plaintext_needs_to_be_asked_for(chat_server: Server, clients: list[Client]) -> None:
    """Encrypted by default: to a peer without OMEMO devices nothing leaves unless asked for."""
    alice = await online(chat_server, clients, "alice@localhost")
    wire = await Wire.connect(chat_server, "c2s_tls")
    try:
        await wire.login("bob", PASSWORD, await wire.open())
        await wire.bind("plain")
        wire.send("<presence/>")
        while (el := await wire.next()) is not None and el.tag != _PRESENCE:
            pass
        with pytest.raises(EncryptionRequired) as refused:
            await alice.send("bob@localhost", "secret", encrypted=True)
        assert str(refused.value) == "bob@localhost has no OMEMO devices; pass encrypted=False to send unencrypted"
        with pytest.raises(EncryptionRequired):
            await alice.send("bob@localhost", "secret")
        await alice.send("bob@localhost", "on purpose", encrypted=False)
        # Messages between two parties keep their order: the refused ones never left.
        while (el := await wire.next()) is not None and el.tag != _MESSAGE:
            pass
        assert el is not None and el.findtext(_BODY) == "on purpose"
    finally:
        wire.close()


async def test_a_server_requiring_encryption_refuses_plaintext(live_server: Server, clients: list[Client]) -> None:
    """The e2e policy "required": the refusal carries policy-violation and the server's sentence."""
    for user in ("alice", "bob"):
        await add_user(live_server, user, PASSWORD)
    alice = await online(live_server, clients, "alice@localhost")
    await online(live_server, clients, "bob@localhost")
    inbox = alice.messages()
    sent = await alice.send("bob@localhost", "plain words", encrypted=False)
    bounced = await next_of(inbox)
    assert bounced.id == sent and bounced.type == "error"
    assert bounced.error is not None
    assert (bounced.error.condition, bounced.error.type, bounced.error.text) == ("policy-violation", "modify", REFUSAL)


async def test_an_error_for_a_call_s_signalling_is_no_message_error(chat_server: Server, clients: list[Client]) -> None:
    """An error reply to a call's XEP-0353 message (here: there is no such account) ends the call;
    it is no failure of a chat message, so the message feed does not carry it."""
    alice = await online(chat_server, clients, "alice@localhost/phone")
    bob = await online(chat_server, clients, "bob@localhost/laptop")
    inbox = alice.messages()
    call = await alice.call("nobody@localhost")
    async with asyncio.timeout(WAIT):
        ended = await asyncio.shield(call.ended)
    assert ended.reason.text == "nobody@localhost cannot be called: service-unavailable"
    # Everything the bounce brought was handled before the call ended: next is bob's message.
    await bob.send(alice.account, "after the call", encrypted=False)
    got = await next_of(inbox)
    assert (got.text, got.error) == ("after the call", None)


async def test_messages_sent_while_offline_arrive_at_login(chat_server: Server, clients: list[Client]) -> None:
    """Offline messages come right after login, before the program iterates: none is lost."""
    alice = await online(chat_server, clients, "alice@localhost")
    before = datetime.now(UTC)
    for text in ("first", "second"):
        await alice.send("bob@localhost", text, encrypted=False)
    await alice.roster()  # answered after both messages were routed
    bob = make_client(chat_server, "bob@localhost")
    clients.append(bob)
    await bob.connect()
    inbox = bob.messages()
    first, second = await next_of(inbox), await next_of(inbox)
    assert [first.text, second.text] == ["first", "second"]
    for message in (first, second):
        assert message.sender == alice.jid
        assert message.stamp is not None and before - timedelta(seconds=1) <= message.stamp


async def test_a_stanza_id_nested_in_a_message_does_not_make_it_a_copy(chat_server: Server,
                                                                      clients: list[Client]) -> None:
    """XEP-0359 §3: a stanza-id is a child of the message; one deeper inside (a forwarded
    message, any extension) is the sender's text, and must not make the message a copy of
    another one with that id, which would drop it."""
    alice = await online(chat_server, clients, "alice@localhost")
    bob = await online(chat_server, clients, "bob@localhost")
    inbox = bob.messages()
    await alice.send(bob.jid, "first", encrypted=False)
    await next_of(inbox)
    (first,) = bob.store.history(alice.account)
    assert first.stanza_id is not None
    second = element(_MESSAGE, {"to": str(bob.jid), "type": "chat", "id": "second"})
    sub(second, _BODY, text="second")
    quoted = sub(second, qname("urn:example:quote", "quote"))
    sub(quoted, qname(ns.SID, "stanza-id"), {"by": "bob@localhost", "id": first.stanza_id})
    await alice.send_element(second)
    await alice.acknowledged(await alice.send(bob.jid, "third", encrypted=False))
    assert [(await next_of(inbox)).text for _ in range(2)] == ["second", "third"]
    assert [m.text for m in bob.store.history(alice.account)] == ["first", "second", "third"]

"""Chat messages between two of our clients through the real server (RFC 6121 §5).

Messages are OMEMO encrypted by default (tests/client/omemo/ covers that); plaintext leaves only
with ``encrypted=False``; with the server's e2e policy "required" (the
default) even that is refused by the server, and the refusal reaches the sender as an error
message carrying the condition.
"""

from __future__ import annotations

import asyncio
import copy
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from schnack.client import Client, EncryptionRequired
from schnack.client.features import messages
from schnack.client.outbox import ORIGIN_ID
from schnack.server.app import Server
from schnack.server.modules.e2e import REFUSAL
from schnack.xmpp import ns
from schnack.xmpp.xml import element, qname, sub

from ...harness import add_user
from ...integration.wire import Wire
from ..conftest import PASSWORD, WAIT, make_client, next_of, online
from ..omemo.test_schnack import set_key_access

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


async def test_a_live_message_is_read_once_the_sender_s_keys_can_be_fetched(
        chat_server: Server, clients: list[Client], tmp_path: Path) -> None:
    """Messages that arrive while their sender's keys cannot be fetched (only her contacts may)
    are told as undecryptable, kept, and read as soon as the keys can be: in the order they came,
    in their place in the conversation, and only once, also at the next login."""
    bob = await online(chat_server, clients, "bob@localhost", data_dir=tmp_path / "bob")
    alice = await online(chat_server, clients, "alice@localhost")
    await set_key_access(alice, "presence")
    inbox = bob.messages()
    told = []
    for text in ("first", "second"):
        sent = await alice.send("bob@localhost", text)
        got = await next_of(inbox)
        assert (got.id, got.text) == (sent, None) and "SenderNotFound" in (got.undecryptable or "")
        told.append(got)
    await set_key_access(alice, "open")
    await bob.omemo.devices("alice@localhost")
    late = [await next_of(inbox) for _ in told]
    assert [(m.id, m.text, m.undecryptable, m.history) for m in late] == [
        (told[0].id, "first", None, True), (told[1].id, "second", None, True)]
    assert all(m.stamp is not None for m in late)
    await alice.send("bob@localhost", "third")
    latest = await next_of(inbox)
    assert (latest.text, latest.history) == ("third", False)
    await bob.close()
    again = make_client(chat_server, "bob@localhost", data_dir=tmp_path / "bob")
    clients.append(again)
    inbox = again.messages()
    await again.connect()
    await again.caught_up()
    await alice.send("bob@localhost", "fourth")
    latest = await next_of(inbox)
    assert (latest.text, latest.history) == ("fourth", False)
    assert [m.text for m in again.store.history(alice.account)] == ["first", "second", "third", "fourth"]


async def test_a_copy_of_a_message_not_decrypted_yet_is_not_told_again(
        chat_server: Server, clients: list[Client]) -> None:
    """alice's client sends a message again (as after a lost link: the same origin-id, a new
    stanza-id from the server) while bob cannot decrypt it yet: it is told as undecryptable once,
    and once the keys come it is read once, as a late arrival."""
    bob = await online(chat_server, clients, "bob@localhost")
    alice = await online(chat_server, clients, "alice@localhost")
    await set_key_access(alice, "presence")
    inbox = bob.messages()
    el = element(_MESSAGE, {"type": "chat", "to": "bob@localhost", "id": "resent"},
                 children=await alice.omemo.encrypt(bob.account, "can you read me?"))
    sub(el, ORIGIN_ID, {"id": "resent"})
    for _ in range(2):
        await alice.send_element(copy.deepcopy(el))
    await alice.send("bob@localhost", "news", encrypted=False)
    told, news = await next_of(inbox), await next_of(inbox)
    assert (told.id, told.text, told.undecryptable is not None) == ("resent", None, True)
    assert news.text == "news"
    await set_key_access(alice, "open")
    await bob.omemo.devices("alice@localhost")
    late = await next_of(inbox)
    assert (late.id, late.text, late.history) == ("resent", "can you read me?", True)
    await alice.send("bob@localhost", "latest", encrypted=False)
    assert (await next_of(inbox)).text == "latest"
    assert [m.text for m in bob.store.history(alice.account)] == ["can you read me?", "news", "latest"]


async def test_only_so_many_live_messages_wait_to_be_decrypted(
        chat_server: Server, clients: list[Client], monkeypatch: pytest.MonkeyPatch) -> None:
    """Beyond messages.PENDING of them, the oldest is given up: not tried again."""
    monkeypatch.setattr(messages, "PENDING", 1)
    bob = await online(chat_server, clients, "bob@localhost")
    alice = await online(chat_server, clients, "alice@localhost")
    await set_key_access(alice, "presence")
    inbox = bob.messages()
    for text in ("given up", "kept"):
        await alice.send("bob@localhost", text)
        assert (await next_of(inbox)).text is None
    await set_key_access(alice, "open")
    await bob.omemo.devices("alice@localhost")
    assert (await next_of(inbox)).text == "kept"
    await alice.send("bob@localhost", "news")
    assert (await next_of(inbox)).text == "news"
    assert [m.text for m in bob.store.history(alice.account)] == ["kept", "news"]

"""Delivery receipts (XEP-0184) and chat markers (XEP-0333) between two of our clients, through
the real server on real sockets: a message acknowledged by the server moves on to delivered and
read in the sender's store, the receiver's copy becomes read, and every change is announced on
``receipts()``."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from schnack.client import Client, ClientError, Disconnected, Message, Receipt
from schnack.client.feed import Subscription
from schnack.client.store import Store, account_dir
from schnack.server.app import Server
from schnack.xmpp.jid import JID
from schnack.xmpp.payloads.markers import Marker
from schnack.xmpp.payloads.receipts import Received
from schnack.xmpp.stanza import Stanza

from ...cli.proc import client_env, line_of, schnack, start
from ..conftest import PASSWORD, WAIT, make_client, next_of, online
from ..held_client import held_client
from ..proxy import Proxy
from ..test_outbox import next_message

ALICE = JID.parse("alice@localhost")
BOB = JID.parse("bob@localhost")


def states(client: Client, peer: str) -> list[tuple[str, str, str]]:
    return [(m.direction, m.text, m.state) for m in client.store.history(JID.parse(peer))]


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "omemo"])
async def test_receipts_and_markers_advance_both_stores(chat_server: Server, clients: list[Client],
                                                        encrypted: bool) -> None:
    alice = await online(chat_server, clients, "alice@localhost/phone")
    bob = await online(chat_server, clients, "bob@localhost/laptop")
    alice_receipts, bob_inbox = alice.receipts(), bob.messages()
    first = await alice.send("bob@localhost", "first", encrypted=encrypted)
    second = await alice.send("bob@localhost", "second", encrypted=encrypted)
    await alice.acknowledged(second)
    # The receipt request and the markable flag travel in clear next to the OMEMO payload.
    got = await next_of(bob_inbox)
    assert got.element.find("{urn:xmpp:receipts}request") is not None
    assert got.element.find("{urn:xmpp:chat-markers:0}markable") is not None
    assert (got.text, got.id) == ("first", first)
    assert (await next_of(bob_inbox)).id == second
    # bob's client answered both with receipts of its own accord.
    delivered = {await next_of(alice_receipts), await next_of(alice_receipts)}
    assert delivered == {Receipt(bob.jid.bare, first, "delivered"), Receipt(bob.jid.bare, second, "delivered")}
    assert states(alice, "bob@localhost") == [("out", "first", "delivered"), ("out", "second", "delivered")]
    assert states(bob, "alice@localhost") == [("in", "first", "delivered"), ("in", "second", "delivered")]
    # Reading the second marks the first read too, on both sides.
    bob_receipts = bob.receipts()
    await bob.mark_read("alice@localhost", second)
    assert [await next_of(bob_receipts) for _ in range(2)] == [
        Receipt(alice.jid.bare, first, "read", outgoing=False), Receipt(alice.jid.bare, second, "read", outgoing=False)]
    read = [await next_of(alice_receipts) for _ in range(2)]
    assert read == [Receipt(bob.jid.bare, first, "read"), Receipt(bob.jid.bare, second, "read")]
    assert states(alice, "bob@localhost") == [("out", "first", "read"), ("out", "second", "read")]
    assert states(bob, "alice@localhost") == [("in", "first", "read"), ("in", "second", "read")]


async def test_no_receipt_for_our_own_messages_nor_unknown_ids(chat_server: Server, clients: list[Client]) -> None:
    """A note to self reaches the other device, which does not answer it; the sending device
    keeps it once, as sent."""
    phone = await online(chat_server, clients, "alice@localhost/phone")
    desk = await online(chat_server, clients, "alice@localhost/desk")
    bob = await online(chat_server, clients, "bob@localhost/laptop")
    desk_inbox, phone_inbox = desk.messages(), phone.messages()
    sent = await phone.send("alice@localhost", "note to self", encrypted=False)
    note = await next_of(desk_inbox)
    assert (note.text, note.id, note.outgoing) == ("note to self", sent, False)
    # bob's message comes after anything the note could have brought back to the phone.
    await bob.send(phone.jid, "later", encrypted=False)
    assert (await next_of(phone_inbox)).text == "later"
    assert [(m.direction, m.text, m.state) for m in phone.store.history(JID.parse("alice@localhost"))] == [
        ("out", "note to self", "acked")]
    with pytest.raises(ClientError, match="no message 'nope' from bob@localhost is stored"):
        await phone.mark_read("bob@localhost", "nope")


async def test_a_receipt_for_a_message_sent_while_the_receiver_was_offline(chat_server: Server,
                                                                           clients: list[Client]) -> None:
    """Offline storage delivers the message at bob's login; his receipt then reaches alice."""
    alice = await online(chat_server, clients, "alice@localhost/phone")
    receipts = alice.receipts()
    sent = await alice.send("bob@localhost", "while you were away", encrypted=False)
    await alice.acknowledged(sent)
    assert alice.store.sent_message(sent).state == "acked"  # type: ignore[union-attr]
    bob = make_client(chat_server, "bob@localhost/laptop")
    clients.append(bob)
    await bob.connect()
    assert await next_of(receipts) == Receipt(bob.jid.bare, sent, "delivered")


async def test_a_receipt_owed_by_a_killed_receiver_goes_after_its_restart(chat_server: Server, clients: list[Client],
                                                                          tmp_path: Path) -> None:
    """bob's ``schnack listen`` stored alice's message, and its link died with the receipt before
    the server had it; the process is then killed (SIGKILL). The next client on bob's store sends
    the receipt, though the message itself, stored already, is not news to it any more."""
    env = client_env(tmp_path)
    host, port = chat_server.bound["c2s"][0]
    proxy = await Proxy(host, port).start()
    alice = await online(chat_server, clients, "alice@localhost/phone")
    alice_inbox = alice.messages()
    try:
        logged_in = await schnack(env, "login", "bob@localhost", "--password-stdin", "--host", "127.0.0.1",
                                  "--port", str(proxy.port), "--insecure", input=PASSWORD + "\n")
        assert logged_in.returncode == 0, logged_in.stderr
        listener = await start(env, "listen", "--json", "--account", "bob@localhost")
        try:
            assert (await line_of(listener.stderr)).startswith("schnack: listening as bob@localhost/")
            # From here on what bob's client sends is lost, as in a link that died unnoticed.
            proxy.swallowing = True
            sent = await alice.send(BOB, "are you there?", encrypted=False)
            # Printed once stored.
            assert (await next_message(listener))["id"] == sent
        finally:
            listener.kill()
            assert await listener.wait() == -signal.SIGKILL
    finally:
        await proxy.stop()
    await told_after_restart(chat_server, clients, account_dir(BOB, tmp_path / "client"), BOB, alice, alice_inbox,
                             sent, "delivered")


async def told_after_restart(server: Server, clients: list[Client], directory: Path, reader: JID, writer: Client,
                             inbox: Subscription[Message], sent: str, state: str) -> None:
    """The killed client of ``reader`` left ``writer``'s message ``sent`` in ``state`` in its
    store, in ``directory``, and ``writer`` heard only that the server had it. The next client on
    that store tells ``writer`` (whose messages come to ``inbox``)."""
    store = Store(directory)
    try:
        assert [(m.text, m.state) for m in store.history(writer.account)] == [("are you there?", state)]
    finally:
        store.close()
    assert writer.store.sent_message(sent).state == "acked"  # type: ignore[union-attr]
    again = await online(server, clients, f"{reader}/desk", data_dir=directory)
    await again.send(writer.account, "back", encrypted=False)
    # What the client sends keeps its order: what it told at all came before this.
    assert (await next_of(inbox, lambda m: m.text == "back")).sender.bare == reader
    assert writer.store.sent_message(sent).state == state  # type: ignore[union-attr]


async def test_a_receipt_and_a_marker_go_once_also_across_a_restart(chat_server: Server, clients: list[Client],
                                                                    tmp_path: Path) -> None:
    """The receipt kept with the message, and the marker kept with its being read, leave the
    store once the server acknowledged them: the next client on bob's store does not send them
    again."""
    receipts: list[str] = []
    markers: list[str] = []

    async def count(stanza: Stanza, _origin: object) -> None:
        if stanza.from_ is None or stanza.from_.bare != BOB:
            return
        received, marker = Received.find(stanza.el), Marker.find(stanza.el)
        if received is not None:
            receipts.append(received.id)
        if marker is not None:
            markers.append(marker.id)

    # The receipt goes to the full JID of the message's sender, the marker to the bare JID.
    chat_server.hooks.add("pre-message/full", count)
    chat_server.hooks.add("pre-message/bare", count)
    alice = await online(chat_server, clients, "alice@localhost/phone")
    alice_inbox, alice_receipts = alice.messages(), alice.receipts()
    first = make_client(chat_server, "bob@localhost/laptop", data_dir=tmp_path / "bob")
    await first.connect()
    try:
        bob_inbox = first.messages()
        sent = await alice.send(BOB, "hello", encrypted=False)
        assert (await next_of(bob_inbox)).id == sent
        assert await next_of(alice_receipts) == Receipt(BOB, sent, "delivered")
        await first.mark_read(ALICE, sent)
        assert await next_of(alice_receipts) == Receipt(BOB, sent, "read")
        # The server's acknowledgement of a later message covers both too (XEP-0198 §4).
        await first.acknowledged(await first.send(ALICE, "bye", encrypted=False))
    finally:
        await first.close()
    second = await online(chat_server, clients, "bob@localhost/laptop", data_dir=tmp_path / "bob")
    await second.send(ALICE, "again", encrypted=False)
    assert (await next_of(alice_inbox, lambda m: m.text == "again")).sender.bare == BOB
    assert receipts == [sent]
    assert markers == [sent]


async def test_reading_while_the_link_is_down_reaches_the_other_devices_and_the_sender(
        chat_server: Server, clients: list[Client], tmp_path: Path) -> None:
    """alice reads bob's message on her phone while its link is down: once it is back, her desk
    no longer counts the message unread, and bob sees it read."""
    desk = await online(chat_server, clients, "alice@localhost/desk")
    host, port = chat_server.bound["c2s"][0]
    proxy = await Proxy(host, port).start()
    try:
        phone = Client("alice@localhost/phone", PASSWORD, host="127.0.0.1", port=proxy.port, verify=False,
                       data_dir=tmp_path / "phone", backoff=(0.05, 0.5))
        clients.append(phone)
        await phone.connect()
        bob = await online(chat_server, clients, "bob@localhost/laptop")
        desk_inbox, phone_inbox, desk_receipts, bob_receipts = (
            desk.messages(), phone.messages(), desk.receipts(), bob.receipts())
        sent = await bob.send(ALICE, "are you there?", encrypted=False)
        assert (await next_of(desk_inbox)).id == (await next_of(phone_inbox)).id == sent
        events = phone.events()
        proxy.refusing = True
        proxy.cut()
        await next_of(events, lambda e: isinstance(e, Disconnected))
        await phone.mark_read(BOB, sent)
        proxy.refusing = False
        assert await next_of(desk_receipts) == Receipt(BOB, sent, "read", outgoing=False)
        assert await next_of(bob_receipts, lambda r: r.state == "read") == Receipt(ALICE, sent, "read")
        assert [c.unread for c in desk.store.conversations()] == [0]
    finally:
        await proxy.stop()


async def test_a_marker_owed_by_a_killed_reader_goes_after_its_restart(chat_server: Server, clients: list[Client],
                                                                       tmp_path: Path) -> None:
    """alice's client, in a process of its own, marked bob's message read, and its link died with
    the marker before the server had it; the process is then killed (SIGKILL). The next client on
    alice's store tells bob, though the conversation, read already, has nothing new to mark."""
    host, port = chat_server.bound["c2s"][0]
    proxy = await Proxy(host, port).start()
    directory = tmp_path / "alice"
    bob = await online(chat_server, clients, "bob@localhost/laptop")
    bob_inbox = bob.messages()
    try:
        async with held_client(chat_server, "alice@localhost/phone", directory, hold="read", via=proxy.port) as held:
            # From here on what alice's client sends is lost, as in a link that died unnoticed.
            proxy.swallowing = True
            sent = await bob.send(ALICE, "are you there?", encrypted=False)
            async with asyncio.timeout(WAIT):
                assert await held.readline() == b"read\n"
    finally:
        await proxy.stop()
    await told_after_restart(chat_server, clients, directory, ALICE, bob, bob_inbox, sent, "read")


async def test_reading_what_another_device_read_sends_no_second_marker(chat_server: Server,
                                                                       clients: list[Client]) -> None:
    """bob's message was read on alice's phone, and her desk learnt that from the copy of the
    phone's marker: reading it on the desk tells bob nothing new, so no second marker goes."""
    markers: list[str] = []

    async def count(stanza: Stanza, _origin: object) -> None:
        marker = Marker.find(stanza.el)
        if marker is not None and marker.kind == "displayed" and stanza.to == BOB:
            markers.append(marker.id)

    chat_server.hooks.add("pre-message/bare", count)
    desk = await online(chat_server, clients, "alice@localhost/desk")
    phone = await online(chat_server, clients, "alice@localhost/phone")
    bob = await online(chat_server, clients, "bob@localhost/laptop")
    desk_inbox, phone_inbox, desk_receipts, bob_inbox = (
        desk.messages(), phone.messages(), desk.receipts(), bob.messages())
    sent = await bob.send(ALICE, "hello", encrypted=False)
    assert (await next_of(desk_inbox)).id == (await next_of(phone_inbox)).id == sent
    await phone.mark_read(BOB, sent)
    assert await next_of(desk_receipts) == Receipt(BOB, sent, "read", outgoing=False)
    await desk.mark_read(BOB, sent)
    # What the desk sends next comes after any marker it sent.
    await desk.send(BOB, "after", encrypted=False)
    assert (await next_of(bob_inbox)).text == "after"
    assert markers == [sent]

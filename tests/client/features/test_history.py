"""Catching up from the archive (XEP-0313) after a login, through the real server: a device
offline during a conversation gets it in order, decrypted, without duplicates, also when
messages arrive live while it catches up; the next login goes on from where it stopped."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from schnack.client import Client, Connected, Message
from schnack.client.features import history
from schnack.server.app import Server
from schnack.server.modules.mam import STORE
from schnack.xmpp.jid import JID

from ...harness import add_user
from ..conftest import PASSWORD, WAIT, hold_catch_up, make_client, next_of, online
from ..omemo.test_schnack import set_key_access

ALICE = JID.parse("alice@localhost")
BOB = JID.parse("bob@localhost")
CAROL = JID.parse("carol@localhost")


async def test_a_device_offline_during_the_conversation_catches_up(
        chat_server: Server, clients: list[Client], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Small pages, so that the catch-up takes many queries and live messages arrive in between.
    monkeypatch.setattr(history, "PAGE", 2)
    phone = await online(chat_server, clients, "alice@localhost/phone", data_dir=tmp_path / "phone")
    bob = await online(chat_server, clients, "bob@localhost/laptop")
    bob_inbox, phone_inbox = bob.messages(), phone.messages()
    # The tablet existed before (its OMEMO device is known), then went offline. It started the
    # OMEMO sessions with bob and the phone itself: had both started one with it while it was
    # away, each would have picked one of its one-time pre keys at random, now and then the
    # same, and the tablet could never have read the messages of the second.
    tablet = make_client(chat_server, "alice@localhost/tablet", data_dir=tmp_path / "tablet")
    await tablet.connect()
    await tablet.caught_up(timeout=WAIT)
    delivered = tablet.receipts()
    first = await tablet.send(BOB, "from the tablet")
    assert (await next_of(bob_inbox)).text == (await next_of(phone_inbox)).text == "from the tablet"
    await next_of(delivered, lambda r: r.id == first)
    await tablet.close()
    conversation: list[tuple[str, str]] = []
    for n in range(5):
        sent = await phone.send(BOB, f"alice {n}")
        await phone.acknowledged(sent)
        await next_of(bob_inbox)
        await bob.send(ALICE, f"bob {n}")
        await next_of(phone_inbox)
        conversation += [("out", f"alice {n}"), ("in", f"bob {n}")]
    # The tablet comes back; bob goes on writing while it catches up.
    tablet = make_client(chat_server, "alice@localhost/tablet", data_dir=tmp_path / "tablet")
    clients.append(tablet)
    tablet_inbox = tablet.messages()
    await tablet.connect()
    for n in range(5, 8):
        await bob.send(ALICE, f"bob {n}")
        conversation.append(("in", f"bob {n}"))
    await tablet.caught_up(timeout=WAIT)
    seen = [await next_of(tablet_inbox) for _ in range(len(conversation))]
    assert sorted(m.text or "" for m in seen) == sorted(text for _, text in conversation)
    assert all(m.encrypted and m.undecryptable is None for m in seen)
    assert {m.text for m in seen if m.history} >= {text for _, text in conversation[:10]}
    stored = tablet.store.history(BOB)
    assert [(m.direction, m.text) for m in stored] == [("out", "from the tablet"), *conversation]
    # bob's receipts were archived too (they carry a store hint): alice's messages are delivered.
    assert all(m.state == "delivered" for m in stored)
    # Logging in again goes on from the last archived message: nothing new, nothing twice.
    position = tablet.store.archive_position()
    assert position is not None
    await tablet.close()
    again = make_client(chat_server, "alice@localhost/tablet", data_dir=tmp_path / "tablet")
    clients.append(again)
    inbox = again.messages()
    await again.connect()
    await again.caught_up(timeout=WAIT)
    assert [(m.direction, m.text) for m in again.store.history(BOB)] == [("out", "from the tablet"), *conversation]
    await bob.send(ALICE, "after all that")
    latest = await next_of(inbox)
    assert (latest.text, latest.history) == ("after all that", False)


async def test_markers_in_the_archive_bring_the_read_state(chat_server: Server, clients: list[Client],
                                                          tmp_path: Path) -> None:
    """What bob read while the tablet was away shows as read there after the catch-up."""
    tablet = make_client(chat_server, "alice@localhost/tablet", data_dir=tmp_path / "tablet")
    await tablet.connect()
    await tablet.close()
    phone = await online(chat_server, clients, "alice@localhost/phone", data_dir=tmp_path / "phone")
    bob = await online(chat_server, clients, "bob@localhost/laptop")
    bob_inbox, receipts = bob.messages(), phone.receipts()
    sent = await phone.send(BOB, "read me", encrypted=False)
    await next_of(bob_inbox)
    await bob.mark_read(ALICE, sent)
    await next_of(receipts, lambda r: r.state == "read")
    tablet = make_client(chat_server, "alice@localhost/tablet", data_dir=tmp_path / "tablet")
    clients.append(tablet)
    await tablet.connect()
    await tablet.caught_up(timeout=WAIT)
    assert [(m.text, m.state) for m in tablet.store.history(BOB)] == [("read me", "read")]


async def test_a_first_login_reaches_back_a_bounded_time(chat_server: Server, clients: list[Client]) -> None:
    """A new device finds what its account got before it existed; a program that only sends
    (no presence) does not catch up."""
    alice = await online(chat_server, clients, "alice@localhost/phone")
    # bob's laptop is online: the message goes to the archive, not to offline storage.
    laptop = await online(chat_server, clients, "bob@localhost/laptop")
    inbox = laptop.messages()
    sent = await alice.send(BOB, "before the new device", encrypted=False)
    await next_of(inbox)
    # Something archived longer ago than the first catch-up reaches.
    old = time.time() - (history.FIRST_CATCH_UP + timedelta(days=1)).total_seconds()
    await chat_server.storage.archive.append(
        "localhost", "bob", STORE, old, "alice@localhost",
        b"<message xmlns='jabber:client' from='alice@localhost/phone' to='bob@localhost' type='chat'>"
        b"<body>long ago</body></message>")
    sender = make_client(chat_server, "bob@localhost/script", available=False)
    clients.append(sender)
    await sender.connect()
    await sender.caught_up(timeout=WAIT)
    assert sender.store.history(ALICE) == []
    tablet = make_client(chat_server, "bob@localhost/tablet")
    clients.append(tablet)
    await tablet.connect()
    await tablet.caught_up(timeout=WAIT)
    assert [(m.text, m.message_id) for m in tablet.store.history(ALICE)] == [("before the new device", sent)]


async def test_a_catch_up_cut_short_is_taken_up_after_a_resumption(chat_server: Server, clients: list[Client],
                                                                   tmp_path: Path) -> None:
    tablet = make_client(chat_server, "alice@localhost/tablet", data_dir=tmp_path / "tablet", backoff=(0.05, 0.2))
    await tablet.connect()
    await tablet.caught_up(timeout=WAIT)
    await tablet.close()
    # The phone is online, so bob's message goes to the archive and not to offline storage.
    await online(chat_server, clients, "alice@localhost/phone")
    bob = await online(chat_server, clients, "bob@localhost/laptop")
    sent = await bob.send(ALICE, "only in the archive", encrypted=False)
    await bob.acknowledged(sent)
    held, release = hold_catch_up(chat_server)
    tablet = make_client(chat_server, "alice@localhost/tablet", data_dir=tmp_path / "tablet", backoff=(0.05, 0.2))
    clients.append(tablet)
    inbox = tablet.messages()
    await tablet.connect()
    events = tablet.events()
    async with asyncio.timeout(WAIT):
        await held.wait()
    jid = tablet.jid
    (conn,) = [c for c in chat_server.connections if c.stream.session is not None and c.stream.session.jid == jid]
    conn.link.transport.abort()
    release.set()
    await next_of(events, lambda e: isinstance(e, Connected))
    assert tablet.sm.resumptions == 1
    caught = await next_of(inbox)
    assert (caught.text, caught.history) == ("only in the archive", True)
    assert [m.text for m in tablet.store.history(BOB)] == ["only in the archive"]


async def while_alice_hides_her_keys(server: Server, clients: list[Client], directory: Path, after: list[str]
                                    ) -> tuple[Client, Client, Client, AsyncIterator[Message], str]:
    """bob's tablet (state in ``directory``) is away while alice, her keys hidden from him (only
    her contacts may fetch them), sends him a message, and carol then sends ``after``; the tablet
    logs in and is told alice's message cannot be decrypted. alice, carol, the tablet, its
    messages, and the id of alice's message."""
    await add_user(server, "carol", PASSWORD)
    tablet = await online(server, clients, "bob@localhost/tablet", data_dir=directory)
    await tablet.close()
    # bob's phone is online, so what he gets goes to the archive and not to offline storage.
    await online(server, clients, "bob@localhost/phone")
    alice = await online(server, clients, "alice@localhost")
    carol = await online(server, clients, "carol@localhost")
    await set_key_access(alice, "presence")
    hidden = await alice.send(BOB, "can you read me?")
    await alice.acknowledged(hidden)
    # carol writes in plaintext: a key exchange of hers could pick the one-time pre key of bob's
    # tablet that alice's message uses (each sender picks one at random from the same bundle), and
    # the tablet, having used it up for carol, could then never read alice's message.
    for text in after:
        await carol.acknowledged(await carol.send(BOB, text, encrypted=False))
    tablet = make_client(server, "bob@localhost/tablet", data_dir=directory)
    clients.append(tablet)
    inbox = tablet.messages()
    await tablet.connect()
    told = await next_of(inbox)
    assert (told.id, told.text) == (hidden, None) and "SenderNotFound" in (told.undecryptable or "")
    return alice, carol, tablet, inbox, hidden


async def reads_hers_then_news(tablet: Client, inbox: AsyncIterator[Message], carol: Client, hidden: str) -> None:
    """The tablet reads alice's message ``hidden``, which waited, as history, then what carol
    writes now as news."""
    got = await next_of(inbox)
    assert (got.id, got.text, got.undecryptable, got.history) == (hidden, "can you read me?", None, True)
    await tablet.caught_up(timeout=WAIT)
    await carol.send(BOB, "news", encrypted=False)
    latest = await next_of(inbox)
    assert (latest.text, latest.history) == ("news", False)


async def test_the_catch_up_reads_on_past_a_message_it_cannot_decrypt_yet(
        chat_server: Server, clients: list[Client], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """alice's keys cannot be fetched yet (only her contacts may): her message does not hold back
    what came after it (on later pages), which is read in the same login; the next login, once
    her keys can be fetched, reads her message again, and nothing twice."""
    monkeypatch.setattr(history, "PAGE", 1)
    directory = tmp_path / "tablet"
    alice, carol, tablet, inbox, hidden = await while_alice_hides_her_keys(
        chat_server, clients, directory, ["after 1", "after 2"])
    after = [await next_of(inbox) for _ in range(2)]
    assert [(m.sender.bare, m.text, m.history) for m in after] == [(CAROL, "after 1", True), (CAROL, "after 2", True)]
    await tablet.caught_up(timeout=WAIT)
    await tablet.close()
    await set_key_access(alice, "open")
    again = make_client(chat_server, "bob@localhost/tablet", data_dir=directory)
    clients.append(again)
    inbox = again.messages()
    await again.connect()
    await reads_hers_then_news(again, inbox, carol, hidden)
    assert [m.text for m in again.store.history(CAROL)] == ["after 1", "after 2", "news"]


async def test_a_message_not_decrypted_yet_is_read_in_the_same_login_once_the_keys_come(
        chat_server: Server, clients: list[Client], tmp_path: Path) -> None:
    """alice's keys cannot be fetched at first (only her contacts may), so her archived message
    waits; once they can be and are fetched, it is read in the same login, in its place and
    once, and what came after it is not shown again."""
    alice, carol, tablet, inbox, hidden = await while_alice_hides_her_keys(
        chat_server, clients, tmp_path / "tablet", ["after"])
    assert (await next_of(inbox)).text == "after"
    await tablet.caught_up(timeout=WAIT)
    await tablet.omemo.devices(CAROL)  # someone else's keys: nothing of hers waits
    await set_key_access(alice, "open")
    await tablet.omemo.devices(ALICE)
    await reads_hers_then_news(tablet, inbox, carol, hidden)
    assert [m.text for m in tablet.store.history(ALICE)] == ["can you read me?"]
    assert [m.text for m in tablet.store.history(CAROL)] == ["after", "news"]


async def test_reading_the_archive_again_tells_a_message_it_still_cannot_decrypt_once(
        chat_server: Server, clients: list[Client], tmp_path: Path) -> None:
    """alice's keys come while her archived message still cannot be decrypted: the catch-up reads
    the archive again from before it, and does not tell it as undecryptable a second time."""
    _, carol, tablet, inbox, _ = await while_alice_hides_her_keys(chat_server, clients, tmp_path / "tablet", ["after"])
    assert (await next_of(inbox)).text == "after"
    await tablet.caught_up(timeout=WAIT)
    tablet.omemo._keys_arrived(ALICE)
    await tablet.caught_up(timeout=WAIT)
    await carol.send(BOB, "news", encrypted=False)
    latest = await next_of(inbox)
    assert (latest.text, latest.history) == ("news", False)


async def test_a_live_message_not_decrypted_yet_is_not_told_again_by_the_catch_up(
        chat_server: Server, clients: list[Client], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """alice's keys cannot be fetched yet (only her contacts may); her message arrives live before
    the tablet's catch-up reads the archive: it is told as not decrypted once, not a second time
    when the catch-up reads its archived copy."""
    tablet = await online(chat_server, clients, "bob@localhost/tablet", data_dir=tmp_path / "tablet")
    await tablet.caught_up(timeout=WAIT)
    await tablet.close()
    alice = await online(chat_server, clients, "alice@localhost")
    await set_key_access(alice, "presence")
    release = asyncio.Event()
    read = history.History._page

    async def held(self: history.History, after: str | None) -> tuple[bool, str | None]:
        await release.wait()
        return await read(self, after)

    monkeypatch.setattr(history.History, "_page", held)
    tablet = await online(chat_server, clients, "bob@localhost/tablet", data_dir=tmp_path / "tablet")
    inbox = tablet.messages()
    hidden = await alice.send(BOB, "can you read me?")
    told = await next_of(inbox)
    assert (told.id, told.text, told.history) == (hidden, None, False)
    release.set()
    await tablet.caught_up(timeout=WAIT)
    await alice.send(BOB, "news", encrypted=False)
    latest = await next_of(inbox)
    assert (latest.text, latest.history) == ("news", False)

"""Last message correction (XEP-0308) between two of our clients through the real server: the
new text replaces the stored one on both sides, encrypted like any message; only the sender's
own message can be corrected."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from schnack.client import Client, ClientError, EncryptionRequired
from schnack.server.app import Server
from schnack.xmpp import ns
from schnack.xmpp.jid import JID
from schnack.xmpp.payloads.correction import Replace
from schnack.xmpp.xml import element, qname, sub

from ..conftest import WAIT, hold_catch_up, next_of, online

BOB = JID.parse("bob@localhost")
ALICE = JID.parse("alice@localhost")


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "omemo"])
async def test_a_correction_replaces_the_text_on_both_sides(chat_server: Server, clients: list[Client],
                                                            encrypted: bool) -> None:
    alice = await online(chat_server, clients, "alice@localhost/phone")
    bob = await online(chat_server, clients, "bob@localhost/laptop")
    inbox = bob.messages()
    original = await alice.send(BOB, "helo bob", encrypted=encrypted)
    assert (await next_of(inbox)).text == "helo bob"
    correction = await alice.correct(BOB, original, "hello bob", encrypted=encrypted)
    await alice.acknowledged(correction)
    corrected = await next_of(inbox)
    assert (corrected.text, corrected.replaces, corrected.id, corrected.encrypted) == (
        "hello bob", original, correction, encrypted)
    if encrypted:
        assert "hello bob" not in (corrected.element.findtext("{jabber:client}body") or "")
    for client, peer, direction in ((alice, BOB, "out"), (bob, ALICE, "in")):
        [message] = client.store.history(peer)
        assert (message.direction, message.text, message.message_id) == (direction, "hello bob", original)
        assert message.edited is not None
    # A second correction names the original again (§4).
    again = await alice.correct(BOB, original, "hello, bob", encrypted=encrypted)
    assert (await next_of(inbox)).replaces == original
    await alice.acknowledged(again)
    assert [m.text for m in bob.store.history(ALICE)] == ["hello, bob"]


async def test_only_the_senders_own_message_is_corrected(chat_server: Server, clients: list[Client]) -> None:
    alice = await online(chat_server, clients, "alice@localhost/phone")
    bob = await online(chat_server, clients, "bob@localhost/laptop")
    alice_inbox, bob_inbox = alice.messages(), bob.messages()
    mine = await alice.send(BOB, "alice's words", encrypted=False)
    await next_of(bob_inbox)
    with pytest.raises(ClientError, match="no message 'nonsense' to bob@localhost was sent"):
        await alice.correct(BOB, "nonsense", "x", encrypted=False)
    # bob claims to correct alice's message: it is not his, so it stays a message of its own.
    forged = element(qname(ns.CLIENT, "message"), {"to": "alice@localhost", "type": "chat", "id": "forged"})
    sub(forged, qname(ns.CLIENT, "body"), text="changed by bob")
    forged.append(Replace(mine).to_xml())
    await bob.send_element(forged)
    got = await next_of(alice_inbox)
    assert (got.text, got.id, got.replaces) == ("changed by bob", "forged", None)
    assert [(m.direction, m.text) for m in alice.store.history(BOB)] == [
        ("out", "alice's words"), ("in", "changed by bob")]


async def test_an_encrypted_message_is_corrected_only_by_an_encrypted_one(chat_server: Server,
                                                                          clients: list[Client]) -> None:
    """A plaintext correction of an OMEMO message is a message of its own: anyone on the path
    could have written it, and the original keeps its encrypted text."""
    alice = await online(chat_server, clients, "alice@localhost/phone")
    bob = await online(chat_server, clients, "bob@localhost/laptop")
    inbox = bob.messages()
    original = await alice.send(BOB, "meet at noon")
    assert (await next_of(inbox)).text == "meet at noon"
    with pytest.raises(EncryptionRequired, match="encrypted"):
        await alice.correct(BOB, original, "meet at midnight", encrypted=False)
    forged = element(qname(ns.CLIENT, "message"), {"to": "bob@localhost", "type": "chat", "id": "forged"})
    sub(forged, qname(ns.CLIENT, "body"), text="meet at midnight")
    forged.append(Replace(original).to_xml())
    await alice.send_element(forged)
    got = await next_of(inbox)
    assert (got.text, got.encrypted, got.replaces) == ("meet at midnight", False, None)
    assert [(m.text, m.encrypted) for m in bob.store.history(ALICE)] == [
        ("meet at noon", True), ("meet at midnight", False)]


async def while_the_tablet_is_away(server: Server, clients: list[Client], directory: Path, *,
                                   seen: bool) -> tuple[Client, str]:
    """bob writes to alice, and corrects his message while her tablet (state in ``directory``)
    is away; the tablet was there for the message itself if ``seen``. Her phone is online, so
    what the tablet misses goes to the archive and not to offline storage. bob and the id of
    his message."""
    phone = await online(server, clients, "alice@localhost/phone")
    tablet = await online(server, clients, "alice@localhost/tablet", data_dir=directory)
    bob = await online(server, clients, "bob@localhost/laptop")
    phone_inbox, tablet_inbox = phone.messages(), tablet.messages()
    await phone.caught_up(timeout=WAIT)
    await tablet.caught_up(timeout=WAIT)
    if not seen:
        await tablet.close()
    original = await bob.send(ALICE, "lunch at 12", encrypted=False)
    assert (await next_of(phone_inbox)).id == original
    if seen:
        assert (await next_of(tablet_inbox)).id == original
        await tablet.close()
    await bob.acknowledged(await bob.correct(ALICE, original, "lunch at 1", encrypted=False))
    assert (await next_of(phone_inbox)).text == "lunch at 1"
    return bob, original


@pytest.mark.parametrize("seen", [True, False], ids=["original-seen", "original-in-the-archive"])
async def test_a_correction_that_comes_live_before_the_catch_up_keeps_its_text(
        chat_server: Server, clients: list[Client], tmp_path: Path, seen: bool) -> None:
    """alice's tablet was away while bob wrote or corrected his message; back, it gets his
    second correction live before its catch-up reads the earlier ones from the archive. The
    message ends with the second correction's text: an older correction does not undo it, and
    an original that comes after its correction takes its text."""
    bob, original = await while_the_tablet_is_away(chat_server, clients, tmp_path / "tablet", seen=seen)
    held, release = hold_catch_up(chat_server)
    tablet = await online(chat_server, clients, "alice@localhost/tablet", data_dir=tmp_path / "tablet")
    inbox = tablet.messages()
    async with asyncio.timeout(WAIT):
        await held.wait()
    await bob.correct(ALICE, original, "lunch at 2", encrypted=False)
    live = await next_of(inbox)
    # Without the original it is a message of its own, until the original comes.
    assert (live.text, live.replaces, live.history) == ("lunch at 2", original if seen else None, False)
    release.set()
    if not seen:
        caught = await next_of(inbox)
        assert (caught.id, caught.text, caught.history) == (original, "lunch at 2", True)
    await tablet.caught_up(timeout=WAIT)
    [message] = tablet.store.history(BOB)
    assert (message.message_id, message.text) == (original, "lunch at 2")

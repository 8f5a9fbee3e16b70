"""Groups (XEP-0045) from our client on the real server over real sockets: private groups encrypted
with OMEMO to every member, bookmarks (XEP-0402), the room's archive (XEP-0313), removal, and
slixmpp with slixmpp-omemo as a member that speaks the same OMEMO.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from omemo.types import OMEMOException
from slixmpp import JID as SlixJID
from slixmpp import ClientXMPP

from schnack.client import Client, Connected, EncryptionRequired, XmppError
from schnack.client.features import groups
from schnack.client.features.groups import BOOKMARK_OPTIONS, Group, GroupError, GroupMessage, Invited, Removed
from schnack.client.feed import Subscription
from schnack.client.omemo import OLDMEMO, TWOMEMO, Omemo, OmemoSettings, Undecryptable
from schnack.server.app import Server
from schnack.server.modules.muc import Muc
from schnack.xmpp import ns
from schnack.xmpp.errors import StanzaError
from schnack.xmpp.jid import JID
from schnack.xmpp.payloads.bookmarks import NS as BOOKMARKS
from schnack.xmpp.payloads.bookmarks import Conference
from schnack.xmpp.payloads.disco import INFO
from schnack.xmpp.payloads.forward import NS as FORWARD
from schnack.xmpp.payloads.mam import QUERY as MAM_QUERY
from schnack.xmpp.payloads.muc import ADMIN_QUERY, Destroy
from schnack.xmpp.stanza import Stanza
from schnack.xmpp.xml import element, qname

from ...harness import add_user, running
from ..conftest import PASSWORD, WAIT, make_client, next_of, online
from ..held_client import held_client
from ..omemo.test_schnack import set_key_access
from ..omemo.test_slixmpp import Peer
from .test_sm import all_handled

USERS = ("alice", "bob", "carol", "dave", "mallory")


@pytest.fixture
async def group_server(tmp_path: Path) -> AsyncIterator[Server]:
    """A listening server with its default policy (plaintext refused in private groups)."""
    async with running(tmp_path, listen=True) as server:
        for user in USERS:
            await add_user(server, user, PASSWORD)
        yield server


async def in_group(client: Client, group: JID) -> None:
    """Wait until ``client`` entered ``group`` (after an invitation, or on connecting)."""
    assert (await client.groups.entered(group, WAIT)).joined


async def from_group(feed: AsyncIterator[GroupMessage], group: JID) -> GroupMessage:
    return await next_of(feed, lambda m: m.group == group)


def archived(server: Server, group: JID) -> Any:
    assert group.local is not None
    return server.storage.archive.query(group.domain, group.local, "muc")


async def test_three_members_read_each_other_and_the_archive_holds_ciphertext(
        group_server: Server, clients: list[Client]) -> None:
    alice, bob, carol = [await online(group_server, clients, f"{u}@localhost/phone") for u in USERS[:3]]
    feeds = {c.account: c.groups.messages() for c in (alice, bob, carol)}
    updates = bob.groups.updates()
    group = await alice.groups.create("Family", ["bob@localhost", "carol@localhost"])
    assert (group.name, group.private, group.joined, group.jid.domain) == ("Family", True, True, "groups.localhost")
    invited = await next_of(updates)
    assert isinstance(invited, Invited) and (invited.group, invited.inviter) == (group.jid, alice.account)
    await in_group(bob, group.jid)
    await in_group(carol, group.jid)
    members = await bob.groups.members(group.jid)
    assert [(str(m.jid), m.affiliation) for m in members] == [
        ("alice@localhost", "owner"), ("bob@localhost", "member"), ("carol@localhost", "member")]
    secrets = {}
    for sender in (alice, bob, carol):
        text = f"a secret from {sender.account.local}"
        secrets[sender.account] = text
        await sender.groups.send(group.jid, text)
        for receiver in (alice, bob, carol):
            if receiver is sender:
                continue
            got = await from_group(feeds[receiver.account], group.jid)
            assert (got.sender, got.nick, got.text, got.encrypted, got.undecryptable) == (
                sender.account, sender.account.local, text, True, None)
            assert got.device is not None and got.stanza_id is not None and not got.history
            assert got.element.find(f"{{{OLDMEMO}}}encrypted") is not None
    page = await archived(group_server, group.jid)
    assert len(page.items) == 3
    for item in page.items:
        assert b"eu.siacs.conversations.axolotl" in item.payload
        for text in secrets.values():
            assert text.encode() not in item.payload
    # The group's conversation is in alice's store (peer: the group), each message once: hers as
    # sent (not read back from the room), the others' with who wrote them.
    assert [(m.direction, m.nick, m.sender, m.text) for m in alice.store.history(group.jid)] == [
        ("out", None, None, secrets[alice.account]),
        ("in", "bob", bob.account, secrets[bob.account]),
        ("in", "carol", carol.account, secrets[carol.account])]


async def test_omemo_2_group_messages_name_their_room(group_server: Server, clients: list[Client]) -> None:
    """XEP-0384's SCE profile: an OMEMO 2 group message names its room in the envelope (apps on
    QXmpp drop one that does not), so that its payload cannot be passed off as a private message."""
    settings = OmemoSettings(namespaces=(TWOMEMO,))
    alice, bob = [await online(group_server, clients, f"{u}@localhost/phone", omemo=settings) for u in USERS[:2]]
    feed = bob.groups.messages()
    group = await alice.groups.create("Pair", ["bob@localhost"])
    await in_group(bob, group.jid)
    await alice.groups.send(group.jid, "to the group")
    got = await from_group(feed, group.jid)
    assert (got.text, got.undecryptable) == ("to the group", None)
    assert got.element.find(f"{{{TWOMEMO}}}encrypted") is not None
    children = await alice.omemo.encrypt_to_all([bob.account], "meet at noon", to=group.jid)
    private = element(qname(ns.CLIENT, "message"), {"from": str(alice.jid), "to": str(bob.jid), "type": "chat"},
                      children=children)
    with pytest.raises(Undecryptable, match=f"for {group.jid}, the message came for bob@localhost"):
        await bob.omemo.decrypt(alice.jid, private)


async def test_plaintext_is_refused_unless_asked_for(group_server: Server, clients: list[Client]) -> None:
    alice = await online(group_server, clients, "alice@localhost/phone")
    group = await alice.groups.create("Alone")
    with pytest.raises(EncryptionRequired) as alone:
        await alice.groups.send(group.jid, "nobody reads this")
    assert str(alone.value) == f"not sent to the group {group.jid}: it has no other member yet to read it"
    failed = await alice.groups.send(group.jid, "in the clear", encrypted=False)
    with pytest.raises(XmppError) as refused:
        await alice.acknowledged(failed)
    assert refused.value.condition == "policy-violation"
    # Without OMEMO keys a member cannot read: nothing is sent rather than something unreadable.
    bob_without_keys = JID.parse("dave@localhost")
    warnings = await alice.groups.invite(group.jid, [bob_without_keys])
    assert warnings.members == ((bob_without_keys, "no-keys"),)
    with pytest.raises(EncryptionRequired) as lacking:
        await alice.groups.send(group.jid, "secret")
    assert str(lacking.value).startswith(f"not sent to the group {group.jid}: dave@localhost has no OMEMO devices")


async def test_a_later_member_reads_the_archive(group_server: Server, clients: list[Client], tmp_path: Path) -> None:
    alice, bob = [await online(group_server, clients, f"{u}@localhost/phone") for u in USERS[:2]]
    # carol has used OMEMO before (her keys are published) but is not in the group yet.
    carol_before = await online(group_server, clients, "carol@localhost/laptop", data_dir=tmp_path / "carol")
    await carol_before.close()
    group = await alice.groups.create("Club", ["bob@localhost"])
    await in_group(bob, group.jid)
    await alice.groups.send(group.jid, "before carol")
    warnings = await alice.groups.invite(group.jid, ["carol@localhost"])
    assert warnings.members == ()
    for text in ("welcome carol", "see you"):
        await alice.groups.send(group.jid, text)
    alice_sent = [m.origin_id for m in alice.store.history(group.jid)]
    for id in alice_sent:
        assert id is not None
        await alice.acknowledged(id)
    carol = make_client(group_server, "carol@localhost/laptop", data_dir=tmp_path / "carol")
    inbox = carol.groups.messages()
    clients.append(carol)
    await carol.connect()
    # The invitation waited in offline storage; carol enters and reads the archive.
    got = [await from_group(inbox, group.jid) for _ in range(3)]
    assert all(m.history and m.sender == alice.account for m in got)
    assert got[0].text is None and got[0].undecryptable == "the message is not encrypted for this device"
    assert [m.text for m in got[1:]] == ["welcome carol", "see you"]
    # On the next login nothing is shown twice: the archive is read from where this device got to.
    await carol.close()
    again = make_client(group_server, "carol@localhost/laptop", data_dir=tmp_path / "carol")
    clients.append(again)
    later = again.groups.messages()
    await again.connect()
    await in_group(again, group.jid)
    await alice.groups.send(group.jid, "only this")
    assert (await from_group(later, group.jid)).text == "only this"


async def _sent_while_away(server: Server, clients: list[Client], tmp_path: Path) -> tuple[Client, Group]:
    """alice's group with bob, and a message to it while bob's device (its data in
    ``tmp_path / "bob"``) is away."""
    alice = await online(server, clients, "alice@localhost/phone")
    bob = await online(server, clients, "bob@localhost/phone", data_dir=tmp_path / "bob")
    group = await alice.groups.create("Club", ["bob@localhost"])
    await in_group(bob, group.jid)
    await bob.close()
    sent = await alice.groups.send(group.jid, "while you were away")
    await alice.acknowledged(sent)
    return alice, group


async def _refused(self: Omemo) -> None:
    """OMEMO's set-up after a login, failing."""
    raise OMEMOException("the server refused to store our keys")


@contextlib.asynccontextmanager
async def _without_omemo(server: Server, clients: list[Client], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                         ) -> AsyncIterator[tuple[Client, Subscription[GroupMessage]]]:
    """bob's device logged in while OMEMO cannot be set up, and its group messages; it is
    closed at the end."""
    with monkeypatch.context() as patched:
        patched.setattr(Omemo, "_set_up", _refused)
        failing = make_client(server, "bob@localhost/phone", data_dir=tmp_path / "bob")
        clients.append(failing)
        feed = failing.groups.messages()
        await failing.connect()
        yield failing, feed
        await failing.close()


async def test_a_group_message_that_could_not_be_decrypted_yet_is_read_at_the_next_login(
        group_server: Server, clients: list[Client], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As with chat messages: the room's archive is not caught up past a message that could not
    be decrypted for a reason that may pass (here OMEMO not set up on that login)."""
    _, group = await _sent_while_away(group_server, clients, tmp_path)
    async with _without_omemo(group_server, clients, tmp_path, monkeypatch) as (_, feed):
        told = await from_group(feed, group.jid)
        assert told.text is None and told.undecryptable is not None
    again = make_client(group_server, "bob@localhost/phone", data_dir=tmp_path / "bob")
    clients.append(again)
    feed = again.groups.messages()
    await again.connect()
    got = await from_group(feed, group.jid)
    assert (got.text, got.undecryptable, got.history) == ("while you were away", None, True)


async def test_a_live_group_message_does_not_move_the_position_past_one_to_read_again(
        group_server: Server, clients: list[Client], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """After the room's catch-up stopped before a message it could not decrypt yet, a message
    that arrives live leaves the position where it is: the next login reads both from the archive."""
    alice, group = await _sent_while_away(group_server, clients, tmp_path)
    async with _without_omemo(group_server, clients, tmp_path, monkeypatch) as (failing, feed):
        assert (await from_group(feed, group.jid)).history
        await in_group(failing, group.jid)
        await alice.groups.send(group.jid, "meanwhile")
        live = await from_group(feed, group.jid)
        assert (live.text, live.history) == (None, False)
    again = make_client(group_server, "bob@localhost/phone", data_dir=tmp_path / "bob")
    clients.append(again)
    feed = again.groups.messages()
    await again.connect()
    assert [(await from_group(feed, group.jid)).text for _ in range(2)] == ["while you were away", "meanwhile"]


async def test_a_live_group_message_not_stored_yet_is_read_at_the_next_login(
        group_server: Server, clients: list[Client], tmp_path: Path) -> None:
    """bob's client, in a process of its own, is killed while alice's group message is still being
    decrypted, after it answered the server's <r/>: neither that answer (XEP-0198 §4) nor the
    group's position covered the message, so bob's next login reads it from the room's archive."""
    alice = await online(group_server, clients, "alice@localhost/phone")
    bob = await online(group_server, clients, "bob@localhost/phone", data_dir=tmp_path / "bob")
    group = await alice.groups.create("Club", ["bob@localhost"])
    await in_group(bob, group.jid)
    await bob.close()
    async with held_client(group_server, "bob@localhost/phone", tmp_path / "bob", group.jid) as held:
        await alice.groups.send(group.jid, "are you there?")
        async with asyncio.timeout(WAIT):
            assert await held.readline() == b"answered\n"
    _, feed = await bob_again(group_server, clients, tmp_path)
    got = await from_group(feed, group.jid)
    assert (got.text, got.undecryptable, got.history) == ("are you there?", None, True)


async def test_an_invitation_not_taken_up_yet_comes_again_at_the_next_login(
        group_server: Server, clients: list[Client], tmp_path: Path) -> None:
    """bob's client, in a process of its own, is killed while it enters the group alice's
    invitation (§7.8.2) is for, after it answered the server's <r/>: the answer did not count the
    invitation, so the server still holds it, and bob's next login gets it (from offline storage)
    and enters the group; then the invitation counts."""
    alice = await online(group_server, clients, "alice@localhost/phone")
    async with held_client(group_server, "bob@localhost/phone", tmp_path / "bob", hold="join") as held:
        group = await alice.groups.create("Club", ["bob@localhost"])
        async with asyncio.timeout(WAIT):
            assert await held.readline() == b"answered\n"
    again, _ = await bob_again(group_server, clients, tmp_path)
    await in_group(again, group.jid)
    await all_handled(group_server, again)


async def club(server: Server, clients: list[Client], tmp_path: Path) -> tuple[Client, Client, Client, JID]:
    """alice's group with bob (state in tmp_path/bob) and carol."""
    alice = await online(server, clients, "alice@localhost/phone")
    bob = await online(server, clients, "bob@localhost/phone", data_dir=tmp_path / "bob")
    carol = await online(server, clients, "carol@localhost/phone")
    group = await alice.groups.create("Club", ["bob@localhost", "carol@localhost"])
    await in_group(bob, group.jid)
    await in_group(carol, group.jid)
    return alice, bob, carol, group.jid


async def hidden_keys_group(server: Server, clients: list[Client], tmp_path: Path) -> tuple[Client, Client, Client, JID]:
    """:func:`club`, where carol's OMEMO device lists only her contacts may fetch from now on: bob cannot.

    bob started his OMEMO session with alice himself: had both she and carol started one with him
    while he cannot read carol's messages, each would have picked one of his one-time pre keys at
    random from the same bundle, now and then the same, and having used it up on alice's message,
    bob could never have read carol's."""
    alice, bob, carol, group = await club(server, clients, tmp_path)
    inbox, delivered = alice.messages(), bob.receipts()
    sent = await bob.send(alice.account, "hello alice")
    assert (await next_of(inbox)).text == "hello alice"
    await next_of(delivered, lambda r: r.id == sent)
    await alice.omemo.devices("carol@localhost")  # fetched before: alice still writes to carol
    await set_key_access(carol, "presence")
    return alice, bob, carol, group


async def bob_again(server: Server, clients: list[Client], tmp_path: Path) -> tuple[Client, Subscription[GroupMessage]]:
    """bob's next login, with the group messages it announces."""
    again = make_client(server, "bob@localhost/phone", data_dir=tmp_path / "bob")
    clients.append(again)
    feed = again.groups.messages()
    await again.connect()
    return again, feed


def runs_over(monkeypatch: pytest.MonkeyPatch, step: str = "_catch_up") -> asyncio.Queue[None]:
    """A queue that gets an item whenever a run of ``step`` of a room is over (by default its
    catch-up)."""
    over, run = asyncio.Queue[None](), getattr(groups.Groups, step)

    async def counted(self: groups.Groups, *args: Any) -> None:
        try:
            await run(self, *args)
        finally:
            over.put_nowait(None)

    monkeypatch.setattr(groups.Groups, step, counted)
    return over


async def only_news_next(bob: Client, feed: AsyncIterator[GroupMessage], carol: Client, group: JID,
                         stored: list[str]) -> None:
    """In the group again, bob reads next what carol writes now (nothing from before again), and
    his store holds the texts ``stored`` before it."""
    await in_group(bob, group)
    await carol.groups.send(group, "third")
    got = await from_group(feed, group)
    assert (got.text, got.history) == ("third", False)
    assert [m.text for m in bob.store.history(group)] == [*stored, "third"]


async def test_a_live_group_message_is_read_once_the_sender_s_keys_can_be_fetched(
        group_server: Server, clients: list[Client], tmp_path: Path) -> None:
    """A message that arrives while its sender's keys cannot be fetched is told as undecryptable,
    kept, and read as soon as they can be: in its place in the conversation, and only once."""
    alice, bob, carol, group = await hidden_keys_group(group_server, clients, tmp_path)
    feed = bob.groups.messages()
    await carol.groups.send(group, "first")
    told = await from_group(feed, group)
    assert (told.sender, told.text) == (carol.account, None) and "SenderNotFound" in (told.undecryptable or "")
    await alice.groups.send(group, "second")
    assert (await from_group(feed, group)).text == "second"
    await set_key_access(carol, "open")
    await bob.omemo.devices("carol@localhost")
    late = await from_group(feed, group)
    assert (late.sender, late.text, late.undecryptable, late.history, late.stanza_id) == (
        carol.account, "first", None, True, told.stanza_id)
    assert [m.text for m in bob.store.history(group)] == ["first", "second"]
    await bob.close()
    again, feed = await bob_again(group_server, clients, tmp_path)
    await only_news_next(again, feed, carol, group, ["first", "second"])


async def test_a_live_group_message_not_decrypted_yet_is_read_at_the_next_login(
        group_server: Server, clients: list[Client], tmp_path: Path) -> None:
    """Not read before the client closed: the position stays before it, so the next login reads
    it from the room's archive, and not what came after it and was read already."""
    alice, bob, carol, group = await hidden_keys_group(group_server, clients, tmp_path)
    feed = bob.groups.messages()
    await carol.groups.send(group, "first")
    assert (await from_group(feed, group)).text is None
    await alice.groups.send(group, "second")
    assert (await from_group(feed, group)).text == "second"
    await bob.close()
    await set_key_access(carol, "open")
    again, feed = await bob_again(group_server, clients, tmp_path)
    got = await from_group(feed, group)
    assert (got.sender, got.text, got.undecryptable, got.history) == (carol.account, "first", None, True)
    await only_news_next(again, feed, carol, group, ["first", "second"])


async def test_a_live_group_message_whose_writer_is_not_shown_yet_is_read_once_they_are(
        group_server: Server, clients: list[Client], tmp_path: Path) -> None:
    """A message that arrives while the group does not show its writer's address (§7.2.3: here
    the group was semi-anonymous when bob entered it) cannot be decrypted, as whose keys to use is
    unknown: it is kept and read once the group shows who wrote it (§10.2.1: it became
    non-anonymous, and her presence came with her address), in its place and only once."""
    alice, bob, _, group = await club(group_server, clients, tmp_path)
    room = alice.groups._rooms[group]
    await alice.groups._configure(room, "Club", private=False)
    await bob.close()
    again, feed = await bob_again(group_server, clients, tmp_path)
    await in_group(again, group)
    await alice.groups.send(group, "guess who")
    told = await from_group(feed, group)
    assert (told.nick, told.sender, told.text) == ("alice", None, None)
    # Kept to be read later, it holds the count (XEP-0198 §4) no longer.
    await all_handled(group_server, again)
    await alice.groups._configure(room, "Club", private=True)
    assert alice.write(element(qname(ns.CLIENT, "presence"), {"to": f"{group}/alice"}))
    late = await from_group(feed, group)
    assert (late.sender, late.text, late.undecryptable, late.history, late.stanza_id) == (
        alice.account, "guess who", None, True, told.stanza_id)
    assert [m.text for m in again.store.history(group)] == ["guess who"]

async def test_only_so_many_live_group_messages_wait_to_be_decrypted(
        group_server: Server, clients: list[Client], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Beyond groups._PENDING of them, the oldest is given up: not tried again, nor read again at
    the next login."""
    monkeypatch.setattr(groups, "_PENDING", 1)
    _, bob, carol, group = await hidden_keys_group(group_server, clients, tmp_path)
    feed = bob.groups.messages()
    for text in ("given up", "kept"):
        await carol.groups.send(group, text)
        assert (await from_group(feed, group)).text is None
    await set_key_access(carol, "open")
    await bob.omemo.devices("carol@localhost")
    assert (await from_group(feed, group)).text == "kept"
    await bob.close()
    again, feed = await bob_again(group_server, clients, tmp_path)
    await only_news_next(again, feed, carol, group, ["kept"])


async def test_giving_up_the_message_a_room_s_catch_up_stopped_at_takes_it_up_again(
        group_server: Server, clients: list[Client], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A live message that could not be decrypted yet, which the room's catch-up then found in the
    archive, holds the position before it; once it is given up (beyond groups._PENDING), the
    catch-up is taken up again and the next login does not read it again."""
    monkeypatch.setattr(groups, "_PENDING", 1)
    _, bob, carol, group = await hidden_keys_group(group_server, clients, tmp_path)
    await bob.close()
    release, page = asyncio.Event(), groups.Groups._page

    async def held_page(self: groups.Groups, room: Any, after: str | None) -> tuple[bool, str | None]:
        await release.wait()
        return await page(self, room, after)

    monkeypatch.setattr(groups.Groups, "_page", held_page)
    read = runs_over(monkeypatch)
    entered = asyncio.Event()
    carol.on_presence(lambda el: entered.set() if el.get("from") == f"{group}/bob" and el.get("type") is None
                      else None)
    bob, feed = await bob_again(group_server, clients, tmp_path)
    async with asyncio.timeout(WAIT):
        await entered.wait()
    await carol.groups.send(group, "given up")
    assert (await from_group(feed, group)).text is None
    release.set()
    async with asyncio.timeout(WAIT):
        await read.get()
    await carol.groups.send(group, "kept")
    assert (await from_group(feed, group)).text is None
    async with asyncio.timeout(WAIT):
        await read.get()
    await bob.close()
    await set_key_access(carol, "open")
    again, feed = await bob_again(group_server, clients, tmp_path)
    got = await from_group(feed, group)
    assert (got.text, got.history) == ("kept", True)
    await only_news_next(again, feed, carol, group, ["kept"])


async def test_a_live_message_before_the_catch_up_does_not_skip_the_archive(
        group_server: Server, clients: list[Client], tmp_path: Path) -> None:
    """After a login the groups are entered at once and their archives read one after the other
    (slowly here: the first group's service does not answer). A message that arrives live in a
    group whose archive is not read yet does not move its position past what the archive holds
    for this device."""
    _, bob, carol, group = await club(group_server, clients, tmp_path)
    await bob.close()
    await carol.acknowledged(await carol.groups.send(group, "while you were away"))
    again = make_client(group_server, "bob@localhost/phone", data_dir=tmp_path / "bob", timeout=3)
    clients.append(again)
    silent = {"jid": "dave@localhost", "name": "Silent", "nick": "bob", "private": True, "position": None}
    again.store.save_setting("groups", json.dumps([silent, *json.loads(again.store.setting("groups") or "[]")]))
    entered = asyncio.Event()
    carol.on_presence(lambda el: entered.set() if el.get("from") == f"{group}/bob" and el.get("type") is None
                      else None)
    feed = again.groups.messages()
    await again.connect()
    async with asyncio.timeout(WAIT):
        await entered.wait()
    await carol.groups.send(group, "now")
    got = [await from_group(feed, group) for _ in range(2)]
    assert [(m.text, m.history) for m in got] == [("now", False), ("while you were away", True)]


async def test_a_live_message_before_a_bookmarked_group_s_catch_up_does_not_skip_its_archive(
        group_server: Server, clients: list[Client], tmp_path: Path) -> None:
    """A group that only the bookmarks name (another device of the account entered it) is entered
    after the login and set up (slowly here: the service holds the request for its members): a
    message that arrives live meanwhile does not move its position past what its archive holds."""
    alice = await online(group_server, clients, "alice@localhost/phone")
    laptop = await online(group_server, clients, "bob@localhost/laptop")
    channel = await alice.groups.create("Lobby", encrypted=False)
    await laptop.groups.join(channel.jid)
    await alice.acknowledged(await alice.groups.send(channel.jid, "before this device came", encrypted=False))
    held, release = asyncio.Event(), asyncio.Event()

    async def hold(stanza: Stanza, _origin: object) -> None:
        if stanza.to == channel.jid and stanza.from_ is not None and stanza.from_.resource == "phone" \
                and stanza.el.find(ADMIN_QUERY) is not None and not release.is_set():
            held.set()
            await release.wait()

    group_server.hooks.add("pre-iq/service", hold, priority=1000)
    phone = make_client(group_server, "bob@localhost/phone", data_dir=tmp_path / "bob")
    clients.append(phone)
    feed = phone.groups.messages()
    await phone.connect()
    async with asyncio.timeout(WAIT):
        await held.wait()
    await alice.groups.send(channel.jid, "now", encrypted=False)
    assert ((live := await from_group(feed, channel.jid)).text, live.history) == ("now", False)
    release.set()
    got = await from_group(feed, channel.jid)
    assert (got.text, got.history) == ("before this device came", True)

async def _resumed_after_a_held_request(server: Server, clients: list[Client], tmp_path: Path, tag: str) -> None:
    """bob's login after a message to his public channel; the link drops while the channel's
    service holds his request carrying ``tag`` and the session is resumed (XEP-0198 §5), which
    enters no group again. He reads the message from the archive, and one sent after the break
    live: nothing is skipped."""
    alice = await online(server, clients, "alice@localhost/phone")
    bob = await online(server, clients, "bob@localhost/phone", data_dir=tmp_path / "bob")
    channel = await alice.groups.create("Lobby", encrypted=False)
    await bob.groups.join(channel.jid)
    await bob.close()
    sent = await alice.groups.send(channel.jid, "while you were away", encrypted=False)
    await alice.acknowledged(sent)
    held, release = asyncio.Event(), asyncio.Event()

    async def hold(stanza: Stanza, _origin: object) -> None:
        if stanza.to == channel.jid and stanza.el.find(tag) is not None and not release.is_set():
            held.set()
            await release.wait()

    server.hooks.add("pre-iq/service", hold, priority=1000)
    bob = make_client(server, "bob@localhost/phone", data_dir=tmp_path / "bob", backoff=(0.05, 0.2))
    clients.append(bob)
    feed = bob.groups.messages()
    await bob.connect()
    events = bob.events()
    async with asyncio.timeout(WAIT):
        await held.wait()
    (conn,) = [c for c in server.connections if c.stream.session is not None and c.stream.session.jid == bob.jid]
    conn.link.transport.abort()
    release.set()
    await next_of(events, lambda e: isinstance(e, Connected))
    assert bob.sm.resumptions == 1
    await alice.groups.send(channel.jid, "after the break", encrypted=False)
    got = {((m := await from_group(feed, channel.jid)).text, m.history) for _ in range(2)}
    assert got == {("while you were away", True), ("after the break", False)}
    await in_group(bob, channel.jid)


async def test_a_room_catch_up_cut_short_is_taken_up_after_a_resumption(group_server: Server, clients: list[Client],
                                                                        tmp_path: Path) -> None:
    """The room's catch-up that the lost link cut short is taken up once the link is back; a
    live message meanwhile moves no position past what it has not read."""
    await _resumed_after_a_held_request(group_server, clients, tmp_path, MAM_QUERY)


async def test_a_room_set_up_cut_short_is_taken_up_after_a_resumption(group_server: Server, clients: list[Client],
                                                                      tmp_path: Path) -> None:
    """The link drops after a stored group was entered again but before its archive is read (here
    while its disco#info is asked for): once the session is resumed, the group's set-up is taken
    up and its archive read; a live message meanwhile moves no position past what it has not read."""
    await _resumed_after_a_held_request(group_server, clients, tmp_path, INFO)


async def test_keys_that_come_after_a_room_s_set_up_was_cut_short_set_it_up(
        group_server: Server, clients: list[Client], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stored group's set-up after the login stopped before its archive was read (the request
    for its members went unanswered): when keys come, the group is set up again, not only its
    archive read, so that it ends up entered with its members and archive."""
    alice = await online(group_server, clients, "alice@localhost/phone")
    bob = await online(group_server, clients, "bob@localhost/phone", data_dir=tmp_path / "bob")
    channel = await alice.groups.create("Lobby", encrypted=False)
    await bob.groups.join(channel.jid)
    await bob.close()
    await alice.acknowledged(await alice.groups.send(channel.jid, "while you were away", encrypted=False))
    release = asyncio.Event()

    async def hold(stanza: Stanza, _origin: object) -> None:
        if stanza.to == channel.jid and stanza.el.find(ADMIN_QUERY) is not None and not release.is_set():
            await release.wait()

    group_server.hooks.add("pre-iq/service", hold, priority=1000)
    done = runs_over(monkeypatch, "_set_up")
    bob = make_client(group_server, "bob@localhost/phone", data_dir=tmp_path / "bob", timeout=2)
    clients.append(bob)
    feed = bob.groups.messages()
    await bob.connect()
    async with asyncio.timeout(WAIT):
        await done.get()
    release.set()
    bob.omemo._keys_arrived(alice.account)
    got = await from_group(feed, channel.jid)
    assert (got.text, got.history) == ("while you were away", True)
    await in_group(bob, channel.jid)

async def test_bookmarks_and_rejoining(group_server: Server, clients: list[Client], tmp_path: Path) -> None:
    alice = await online(group_server, clients, "alice@localhost/phone", data_dir=tmp_path / "alice")
    group = await alice.groups.create("Work")
    items = await alice.groups._pep.items(alice.account, BOOKMARKS)
    assert items is not None and [(i.id, i.payload is not None) for i in items] == [(str(group.jid), True)]
    assert items[0].payload is not None and items[0].payload.get("autojoin") == "true"
    await alice.close()
    # Another device of the account finds the group through the bookmark and enters it.
    tablet = await online(group_server, clients, "alice@localhost/tablet")
    await in_group(tablet, group.jid)
    assert [(g.jid, g.name) for g in tablet.groups.known()] == [(group.jid, "Work")]
    await tablet.groups.leave(group.jid)
    assert tablet.groups.known() == [] and await tablet.groups._pep.items(alice.account, BOOKMARKS) == ()
    with pytest.raises(GroupError) as unknown:
        await tablet.groups.send("Work", "hello")
    assert str(unknown.value) == "Work is not a group of alice@localhost"


async def test_a_bookmark_with_a_nickname_no_address_can_carry_is_entered(group_server: Server,
                                                                         clients: list[Client]) -> None:
    """XEP-0402 §3: the nick another app bookmarked is used to enter the group, but one that is
    no resourcepart (RFC 7622 §3.4: longer than 1023 bytes) makes no occupant address the room
    could answer (§7.2.1): the group is entered with the account's own nickname instead of not
    at all."""
    alice = await online(group_server, clients, "alice@localhost/phone")
    group = await alice.groups.create("Work")
    bad = Conference(group.jid, "Work", autojoin=True, nick="n" * 1100)
    await alice.groups._pep.publish(BOOKMARKS, str(group.jid), bad.to_native(), BOOKMARK_OPTIONS)
    await alice.close()
    tablet = await online(group_server, clients, "alice@localhost/tablet")
    await in_group(tablet, group.jid)
    assert [(g.jid, g.nick) for g in tablet.groups.known()] == [(group.jid, "alice")]


async def test_a_group_destroyed_while_away_is_forgotten_at_the_next_login(group_server: Server,
                                                                         clients: list[Client],
                                                                         tmp_path: Path) -> None:
    """Entering the stored groups after a login creates a room that no longer exists (XEP-0045
    §10.1.1): that room is discarded, and the group forgotten with its bookmark, not made again."""
    directory = tmp_path / "alice"
    phone = await online(group_server, clients, "alice@localhost/phone", data_dir=directory)
    group = await phone.groups.create("Work")
    await phone.close()
    muc = group_server.modules["muc"]
    assert isinstance(muc, Muc)
    room = await muc.rooms.get(group.jid)
    assert room is not None
    await muc.owner.destroy(room, Destroy(reason="the project is over"))
    phone = make_client(group_server, "alice@localhost/phone", data_dir=directory)
    clients.append(phone)
    updates = phone.groups.updates()
    await phone.connect()
    assert await next_of(updates, lambda e: isinstance(e, Removed)) == Removed(group.jid, None)
    assert phone.groups.known() == []
    assert await phone.groups._pep.items(phone.account, BOOKMARKS) == ()
    assert await muc.rooms.get(group.jid) is None


async def test_a_stanza_id_quoted_inside_a_group_message_is_not_its_own(group_server: Server,
                                                                        clients: list[Client]) -> None:
    """XEP-0359 §3: the room's stanza-id is a child of the message; one nested deeper (here in a
    forwarded message, XEP-0297) is the sender's text and does not make the message a copy."""
    alice = await online(group_server, clients, "alice@localhost/phone")
    bob = await online(group_server, clients, "bob@localhost/phone")
    channel = await alice.groups.create("Lobby", encrypted=False)
    await bob.groups.join(channel.jid)
    inbox = bob.groups.messages()
    await alice.groups.send(channel.jid, "first", encrypted=False)
    first = await from_group(inbox, channel.jid)
    assert first.text == "first" and first.stanza_id is not None
    quoted = element(qname(ns.CLIENT, "message"), {"type": "groupchat", "from": f"{channel.jid}/alice"})
    quoted.append(element(qname(ns.CLIENT, "body"), text="first"))
    quoted.append(element(qname(ns.SID, "stanza-id"), {"by": str(channel.jid), "id": first.stanza_id}))
    forwarding = element(qname(ns.CLIENT, "message"), {"type": "groupchat", "to": str(channel.jid)})
    forwarding.append(element(qname(ns.CLIENT, "body"), text="look at this"))
    forwarding.append(element(qname(FORWARD, "forwarded"), children=[quoted]))
    await alice.send_element(forwarding)
    got = await from_group(inbox, channel.jid)
    assert got.text == "look at this" and got.stanza_id not in (None, first.stanza_id)


async def test_a_name_two_groups_share_names_neither(group_server: Server, clients: list[Client]) -> None:
    alice = await online(group_server, clients, "alice@localhost/phone")
    first, second = [await alice.groups.create("Work") for _ in range(2)]
    addresses = ", ".join(sorted((str(first.jid), str(second.jid))))
    with pytest.raises(GroupError) as ambiguous:
        await alice.groups.send("Work", "hello")
    assert str(ambiguous.value) == f"2 groups are called 'Work' ({addresses}); name one by its address"


async def test_leaving_ends_the_membership(group_server: Server, clients: list[Client]) -> None:
    """Whoever leaves is off the member list, so the others no longer encrypt to them."""
    alice, bob = [await online(group_server, clients, f"{u}@localhost/phone") for u in USERS[:2]]
    group = await alice.groups.create("Club", ["bob@localhost"])
    await in_group(bob, group.jid)
    await bob.groups.leave(group.jid)
    assert bob.groups.known() == []
    assert [str(m.jid) for m in await alice.groups.members(group.jid)] == ["alice@localhost"]
    with pytest.raises(GroupError):
        await bob.groups.join(group.jid)
    # The last owner leaving keeps the group owned.
    await alice.groups.leave(group.jid)
    affiliations = await group_server.storage.muc.affiliations(group.jid.domain, group.jid.local or "")
    assert {jid: record.affiliation for jid, record in affiliations.items()} == {"alice@localhost": "owner"}


async def test_a_non_member_is_refused(group_server: Server, clients: list[Client]) -> None:
    alice = await online(group_server, clients, "alice@localhost/phone")
    mallory = await online(group_server, clients, "mallory@localhost/phone")
    group = await alice.groups.create("Secret")
    with pytest.raises(GroupError) as refused:
        await mallory.groups.join(group.jid)
    assert str(refused.value) == (f"{group.jid} is a group for its members only, and this account is not one"
                                  " (registration-required)")
    assert mallory.groups.known() == []


async def test_a_removed_member_receives_nothing_more(group_server: Server, clients: list[Client]) -> None:
    alice, bob, carol = [await online(group_server, clients, f"{u}@localhost/phone") for u in USERS[:3]]
    bob_chats = bob.messages()
    group = await alice.groups.create("Team", ["bob@localhost", "carol@localhost"])
    await in_group(bob, group.jid)
    await in_group(carol, group.jid)
    bob_feed, carol_feed, bob_updates = bob.groups.messages(), carol.groups.messages(), bob.groups.updates()
    await alice.groups.remove(group.jid, "bob@localhost", reason="bye")
    removed = await next_of(bob_updates, lambda u: isinstance(u, Removed))
    assert removed == Removed(group.jid, 321, "bye")
    await alice.groups.send(group.jid, "after bob")
    got = await from_group(carol_feed, group.jid)
    assert got.text == "after bob"
    # Not encrypted to bob's device either: his client could not read it even from the archive.
    bob_device = await bob.omemo.own_device()
    rids = {key.get("rid") for key in got.element.iter(f"{{{OLDMEMO}}}key")}
    assert rids and str(bob_device.id) not in rids
    # The room sent carol's copy and any for bob together; bob's stream has all before this answer.
    await bob.iq(element(qname(ns.CLIENT, "iq"), {"type": "get", "to": "localhost"}, children=[element(INFO)]))
    await bob.groups.settled()
    assert bob.groups.known() == []
    await bob.close()
    assert [m async for m in bob_feed] == []
    # The invitation and the group's notes were the group feature's, not chat messages.
    assert [m async for m in bob_chats] == []


def refuse_member_lists(server: Server, account: str) -> asyncio.Event:
    """Make the server answer ``account``'s reads of a group's affiliation lists (§9.5, §10.5) as a
    cluster node does while the group's node cannot be reached (internal-server-error, wait),
    until the event is set."""
    back = asyncio.Event()

    async def refuse(stanza: Stanza, _origin: object) -> None:
        if stanza.type == "get" and stanza.el.find(ADMIN_QUERY) is not None and stanza.from_ is not None \
                and str(stanza.from_.bare) == account and not back.is_set():
            raise StanzaError("internal-server-error", "the group's server is not reachable right now", type="wait")

    server.hooks.add("pre-iq/service", refuse, priority=1000)
    return back


async def test_a_group_message_is_not_encrypted_to_a_member_list_that_could_not_be_read(
        group_server: Server, clients: list[Client], tmp_path: Path) -> None:
    """carol became a member while bob's device was away and offline. At bob's next login the
    member list cannot be read: sending to what bob's device knows (alice, the one in the group)
    would leave carol unable ever to read it, so the message is refused and nothing goes out; the
    next send reads the list again and encrypts to carol too."""
    carol = await online(group_server, clients, "carol@localhost/phone")
    carol_device = await carol.omemo.own_device()
    await carol.close()
    alice = await online(group_server, clients, "alice@localhost/phone")
    bob = await online(group_server, clients, "bob@localhost/phone", data_dir=tmp_path / "bob")
    group = await alice.groups.create("Club", ["bob@localhost"])
    await in_group(bob, group.jid)
    await bob.close()
    await alice.groups.invite(group.jid, ["carol@localhost"])
    back = refuse_member_lists(group_server, "bob@localhost")
    again, _ = await bob_again(group_server, clients, tmp_path)
    await in_group(again, group.jid)
    feed = alice.groups.messages()
    with pytest.raises(groups.MembersUnknown) as refused:
        await again.groups.send(group.jid, "who reads this?")
    assert str(refused.value).startswith(f"not sent to the group {group.jid}: its member list could not be read")
    assert len((await archived(group_server, group.jid)).items) == 0
    back.set()
    await again.groups.send(group.jid, "now carol reads it too")
    got = await from_group(feed, group.jid)
    assert got.text == "now carol reads it too"
    rids = {key.get("rid") for key in got.element.iter(f"{{{OLDMEMO}}}key")}
    assert str(carol_device.id) in rids
    assert [(str(m.jid), m.affiliation) for m in await again.groups.members(group.jid)] == [
        ("alice@localhost", "owner"), ("bob@localhost", "member"), ("carol@localhost", "member")]


class SlixMember(Peer):
    """slixmpp with slixmpp-omemo and the MUC plugin, as a member of a private group."""

    def __init__(self, server: Server, jid: str) -> None:
        super().__init__(server, jid)
        self.xmpp.register_plugin("xep_0045")
        self.muc: Any = self.xmpp.plugin["xep_0045"]
        self.groupchat: asyncio.Queue[tuple[str, str]] = asyncio.Queue()

    async def _message(self, stanza: Any) -> None:
        if stanza["type"] != "groupchat" or not self.omemo.is_encrypted(stanza):
            return
        decrypted, _ = await self.omemo.decrypt_message(stanza)
        if decrypted["body"]:
            await self.groupchat.put((str(stanza["from"].resource), decrypted["body"]))

    async def say(self, room: JID, text: str, members: list[str]) -> None:
        message = self.xmpp.make_message(mto=SlixJID(str(room)), mtype="groupchat")
        message["body"] = text
        encrypted, problems = await self.omemo.encrypt_message(message, {SlixJID(m) for m in members})
        assert not problems
        encrypted.send()


async def test_slixmpp_omemo_as_a_member(group_server: Server, clients: list[Client]) -> None:
    peer = SlixMember(group_server, "bob@localhost/slixmpp")
    await peer.start()
    try:
        alice = await online(group_server, clients, "alice@localhost/phone")
        inbox = alice.groups.messages()
        group = await alice.groups.create("Mixed", ["bob@localhost"])
        async with asyncio.timeout(WAIT):
            await peer.muc.join_muc_wait(SlixJID(str(group.jid)), "bob", maxstanzas=0, timeout=WAIT)
        await alice.groups.send(group.jid, "hello slixmpp")
        async with asyncio.timeout(WAIT):
            assert await peer.groupchat.get() == ("alice", "hello slixmpp")
        await peer.say(group.jid, "hello schnack", ["alice@localhost", "bob@localhost"])
        got = await from_group(inbox, group.jid)
        assert (got.sender, got.nick, got.text, got.encrypted) == (JID.parse("bob@localhost"), "bob",
                                                                   "hello schnack", True)
    finally:
        await peer.stop()


async def test_a_public_channel_in_plaintext_with_slixmpp(tmp_path: Path, clients: list[Client]) -> None:
    async with running(tmp_path, listen=True) as server:
        for user in ("alice", "bob"):
            await add_user(server, user, PASSWORD)
        alice = await online(server, clients, "alice@localhost/phone")
        inbox = alice.groups.messages()
        channel = await alice.groups.create("Lobby", encrypted=False)
        assert not channel.private
        with pytest.raises(EncryptionRequired):
            await alice.groups.send(channel.jid, "secret")
        bob = ClientXMPP("bob@localhost/slixmpp", PASSWORD)
        bob.ssl_context.check_hostname = False
        bob.ssl_context.verify_mode = ssl.CERT_NONE
        for plugin in ("xep_0030", "xep_0045"):
            bob.register_plugin(plugin)
        started = asyncio.Event()
        said: asyncio.Queue[str] = asyncio.Queue()
        bob.add_event_handler("session_start", lambda _: started.set())
        bob.add_event_handler("groupchat_message", lambda m: said.put_nowait(m["body"]) if m["body"] else None)
        host, port = server.bound["c2s"][0]
        bob.connect(host, port)
        try:
            async with asyncio.timeout(WAIT):
                await started.wait()
                await bob.plugin["xep_0045"].join_muc_wait(SlixJID(str(channel.jid)), "Bob", maxstanzas=0,
                                                           timeout=WAIT)
            id = await alice.groups.send(channel.jid, "hello channel", encrypted=False)
            await alice.acknowledged(id)
            async with asyncio.timeout(WAIT):
                assert await said.get() == "hello channel"
            bob.send_message(mto=SlixJID(str(channel.jid)), mbody="hi alice", mtype="groupchat")
            got = await from_group(inbox, channel.jid)
            assert (got.nick, got.text, got.encrypted) == ("Bob", "hi alice", False)
        finally:
            await bob.disconnect()
        for client in clients:
            await client.close()


async def test_the_catch_up_reads_on_past_a_message_it_cannot_decrypt_yet(
        group_server: Server, clients: list[Client], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """carol's message, whose keys bob cannot fetch yet, does not hold back what came after it (on
    later pages of the room's archive): read in the same login. The position stays before hers,
    so that the next login reads it, once her keys can be fetched, and nothing twice."""
    monkeypatch.setattr(groups, "PAGE", 1)
    alice, bob, carol, group = await hidden_keys_group(group_server, clients, tmp_path)
    await bob.close()
    await carol.acknowledged(await carol.groups.send(group, "first"))
    await alice.acknowledged(await alice.groups.send(group, "second"))
    hidden, feed = await bob_again(group_server, clients, tmp_path)
    told = await from_group(feed, group)
    assert (told.sender, told.text) == (carol.account, None)
    after = await from_group(feed, group)
    assert (after.sender, after.text, after.history) == (alice.account, "second", True)
    await hidden.close()
    await set_key_access(carol, "open")
    again, feed = await bob_again(group_server, clients, tmp_path)
    got = await from_group(feed, group)
    assert (got.sender, got.text, got.history, got.stanza_id) == (carol.account, "first", True, told.stanza_id)
    await only_news_next(again, feed, carol, group, ["first", "second"])


async def test_keys_that_come_during_the_catch_up_read_what_it_could_not_decrypt(
        group_server: Server, clients: list[Client], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """carol's keys are fetched while the room's catch-up still reads on past her message, which
    it could not decrypt: once that catch-up is over, her message is read in the same login, by
    reading the archive again (the group is not set up again: its members are asked for once)."""
    monkeypatch.setattr(groups, "PAGE", 1)
    alice, bob, carol, group = await hidden_keys_group(group_server, clients, tmp_path)
    await bob.close()
    await carol.acknowledged(await carol.groups.send(group, "first"))
    await alice.acknowledged(await alice.groups.send(group, "second"))
    queries: list[Stanza] = []
    lists: list[Stanza] = []
    held, release = asyncio.Event(), asyncio.Event()

    async def hold(stanza: Stanza, _origin: object) -> None:
        if stanza.to == group and stanza.from_ == bob.jid and stanza.el.find(ADMIN_QUERY) is not None:
            lists.append(stanza)
        if stanza.to == group and stanza.el.find(MAM_QUERY) is not None:
            queries.append(stanza)
            if len(queries) == 2:  # the page after carol's message
                held.set()
                await release.wait()

    group_server.hooks.add("pre-iq/service", hold, priority=1000)
    again, feed = await bob_again(group_server, clients, tmp_path)
    told = await from_group(feed, group)
    assert (told.sender, told.text) == (carol.account, None)
    async with asyncio.timeout(WAIT):
        await held.wait()
    await set_key_access(carol, "open")
    # As a notification of her device list would (the held query holds what bob asks meanwhile).
    again.omemo._keys_arrived(carol.account)
    release.set()
    assert (await from_group(feed, group)).text == "second"
    got = await from_group(feed, group)
    assert (got.sender, got.text, got.history, got.stanza_id) == (carol.account, "first", True, told.stanza_id)
    await only_news_next(again, feed, carol, group, ["first", "second"])
    assert len(lists) == len(groups.MEMBER_AFFILIATIONS)


async def test_reading_the_archive_again_tells_a_message_it_still_cannot_decrypt_once(
        group_server: Server, clients: list[Client], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Someone's keys come while carol's archived message still cannot be decrypted (hers are
    still hidden): the room's archive is read again from before it, and it is not told as
    undecryptable a second time."""
    _, bob, carol, group = await hidden_keys_group(group_server, clients, tmp_path)
    await bob.close()
    await carol.acknowledged(await carol.groups.send(group, "first"))
    read = runs_over(monkeypatch)
    again, feed = await bob_again(group_server, clients, tmp_path)
    told = await from_group(feed, group)
    assert (told.sender, told.text, told.history) == (carol.account, None, True)
    async with asyncio.timeout(WAIT):
        await read.get()
    again.omemo._keys_arrived(JID.parse("alice@localhost"))
    async with asyncio.timeout(WAIT):
        await read.get()
    await carol.groups.send(group, "second")
    got = await from_group(feed, group)
    assert (got.text, got.undecryptable is not None, got.history) == (None, True, False)
    assert got.stanza_id != told.stanza_id


async def test_a_live_message_does_not_move_the_position_past_an_archived_one_not_decrypted_yet(
        group_server: Server, clients: list[Client], tmp_path: Path) -> None:
    """The catch-up stopped before a message it could not decrypt yet: what arrives live after it
    leaves the position there, so that the next login still reads that message."""
    alice, bob, carol, group = await hidden_keys_group(group_server, clients, tmp_path)
    await bob.close()
    await carol.acknowledged(await carol.groups.send(group, "first"))
    hidden, feed = await bob_again(group_server, clients, tmp_path)
    assert (await from_group(feed, group)).text is None
    await in_group(hidden, group)
    await alice.groups.send(group, "second")
    assert (await from_group(feed, group)).text == "second"
    await hidden.close()
    await set_key_access(carol, "open")
    again, feed = await bob_again(group_server, clients, tmp_path)
    got = await from_group(feed, group)
    assert (got.sender, got.text, got.history) == (carol.account, "first", True)
    await only_news_next(again, feed, carol, group, ["first", "second"])

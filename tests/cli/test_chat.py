"""``schnack chat``, the Textual app, driven by Textual's pilot against the real server: alice's
client runs inside the app, bob's (and his second device's) are driven by the test.

Typed messages leave encrypted and bob reads them; the check marks move on as bob's client
answers with a receipt and marks them read; unread counts grow and go when the conversation
is opened; a change of bob's keys raises the banner; a contact without OMEMO devices gets
nothing until the conversation is switched to unencrypted; a group is listed, shows who wrote
each message, and what is typed reaches its members encrypted.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TypeVar

import pytest
from textual.pilot import Pilot
from textual.widgets import Input, OptionList, Static

from bench.ports import free_port
from schnack.cli.chat.app import ChatApp, MessageLine
from schnack.client import Client, Receipt
from schnack.client.store import Settings, Store, account_dir
from schnack.server.app import Server
from schnack.xmpp.jid import JID

from ..harness import add_user, running
from .proc import client_env, login, schnack

PASSWORD = "correct horse battery staple"
ALICE, BOB, CAROL = (JID.parse(f"{user}@localhost") for user in ("alice", "bob", "carol"))
WAIT = 60
SIZE = (140, 40)

T = TypeVar("T")


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    async with running(tmp_path, listen=True, modules={"e2e": {"policy": "optional"}}) as srv:
        for user in ("alice", "bob", "carol"):
            await add_user(srv, user, PASSWORD)
        yield srv


async def online(server: Server, clients: list[Client], jid: str, data_dir: Path | None = None) -> Client:
    host, port = server.bound["c2s"][0]
    client = Client(jid, PASSWORD, host=host, port=port, verify=False, data_dir=data_dir)
    await client.connect()
    clients.append(client)
    return client


async def until(pilot: Pilot[None], check: Callable[[], bool], what: str) -> None:
    """Let the app run until ``check`` holds."""
    try:
        async with asyncio.timeout(WAIT):
            while not check():
                await pilot.pause(0.05)
    except TimeoutError:
        raise AssertionError(f"still not: {what}") from None


async def next_of(items: AsyncIterator[T], check: Callable[[T], bool] = lambda _: True) -> T:
    async with asyncio.timeout(WAIT):
        async for item in items:
            if check(item):
                return item
    raise AssertionError("the iteration ended")


async def type_text(pilot: Pilot[None], text: str) -> None:
    await pilot.press(*("space" if c == " " else c for c in text))


def shown(app: ChatApp, selector: str) -> str:
    return str(app.query_one(selector, Static).content)


def pane(app: ChatApp) -> list[str]:
    return [str(line.content) for line in app.query(MessageLine)]


def rows(app: ChatApp) -> list[str]:
    return [str(option.prompt) for option in app.query_one("#conversations", OptionList).options]


async def test_type_send_and_see_the_check_marks(server: Server, clients: list[Client], tmp_path: Path) -> None:
    alice = await online(server, clients, "alice@localhost", tmp_path / "alice")
    bob = await online(server, clients, "bob@localhost")
    inbox, receipts = bob.messages(), bob.receipts()
    app = ChatApp(alice, peer=BOB)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: "🔒 encrypted (OMEMO, 1 device, not verified yet)" in shown(app, "#status"),
                    "the header says the conversation is encrypted")
        assert shown(app, "#status").startswith("alice@localhost · connected · bob@localhost: ")
        await type_text(pilot, "hello bob")
        await pilot.press("enter")
        got = await next_of(inbox)
        assert (got.text, got.encrypted) == ("hello bob", True)
        assert app.query_one("#composer", Input).value == ""
        # bob's client answered with a receipt: delivered.
        await until(pilot, lambda: pane(app)[-1].endswith("me: hello bob  ✓✓"), "✓✓ delivered")
        time = pane(app)[-1].split(" ", 1)[0]
        assert len(time) == 5 and time[2] == ":"
        # bob read it: the marker turns it to read.
        assert got.id is not None
        await bob.mark_read(ALICE, got.id)
        await until(pilot, lambda: pane(app)[-1].endswith("me: hello bob  ✓✓ read"), "✓✓ read")
        # bob answers; it appears live and, being on screen, is marked read for bob to see.
        answer = await bob.send(ALICE, "hi alice")
        await until(pilot, lambda: pane(app)[-1].endswith("bob@localhost: hi alice"), "bob's answer shown")
        read = await next_of(receipts, lambda r: r.id == answer and r.state == "read")
        assert read == Receipt(ALICE, answer, "read")
        # A correction changes the line it corrects.
        await bob.correct(ALICE, answer, "hi alice!")
        await until(pilot, lambda: pane(app)[-1].endswith("bob@localhost: hi alice! (edited)"), "the correction")
        assert len(pane(app)) == 2
        assert rows(app)[0].startswith("bob@localhost  ")
    # What the app showed is in the store, for the next start.
    assert [(m.direction, m.text, m.state) for m in alice.store.history(BOB)] == [
        ("out", "hello bob", "read"), ("in", "hi alice!", "read")]


async def test_unread_counts_go_when_the_conversation_is_opened(server: Server, clients: list[Client],
                                                                tmp_path: Path) -> None:
    alice = await online(server, clients, "alice@localhost", tmp_path / "alice")
    bob = await online(server, clients, "bob@localhost")
    receipts = bob.receipts()
    app = ChatApp(alice)
    async with app.run_test(size=SIZE) as pilot:
        assert rows(app) == [] and pane(app) == []
        assert app.query_one("#composer", Input).disabled
        first = await bob.send(ALICE, "are you there?")
        await until(pilot, lambda: any("(1 unread)" in row for row in rows(app)), "one unread")
        second = await bob.send(ALICE, "hello?")
        await until(pilot, lambda: rows(app)[0].endswith("  (2 unread)\n  hello?"), "two unread")
        assert rows(app)[0].startswith("bob@localhost  ") and len(rows(app)) == 1
        assert pane(app) == []  # no conversation is open
        listing = app.query_one("#conversations", OptionList)
        listing.focus()
        listing.highlighted = 0
        await pilot.press("enter")
        await until(pilot, lambda: len(pane(app)) == 2, "the conversation shown")
        assert [line.split(" ", 1)[1] for line in pane(app)] == [
            "bob@localhost: are you there?", "bob@localhost: hello?"]
        await until(pilot, lambda: "unread" not in rows(app)[0], "no more unread")
        # One displayed marker for the last message tells bob both were read.
        read = {(await next_of(receipts, lambda r: r.state == "read")).id for _ in range(2)}
        assert read == {first, second}
        assert app.focused is app.query_one("#composer", Input)


async def test_a_change_of_keys_raises_the_banner(server: Server, clients: list[Client], tmp_path: Path) -> None:
    alice = await online(server, clients, "alice@localhost", tmp_path / "alice")
    await online(server, clients, "bob@localhost/one")
    app = ChatApp(alice, peer=BOB)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: "1 device" in shown(app, "#status"), "bob's keys known")
        assert not app.query_one("#banner").has_class("shown")
        # bob writes from a new device: alice learns its key from the message.
        two = await online(server, clients, "bob@localhost/two")
        new = await two.omemo.own_device()
        await two.send(ALICE, "my new phone")
        await until(pilot, lambda: app.query_one("#banner").has_class("shown"), "the banner")
        banner = shown(app, "#banner")
        assert banner.startswith(f"⚠ The OMEMO keys of bob@localhost changed: new device {new.id} ({new.fingerprint})")
        assert "schnack verify bob@localhost" in banner
        await until(pilot, lambda: "2 devices" in shown(app, "#status"), "the header counts the new device")
        await until(pilot, lambda: bool(pane(app)) and pane(app)[-1].endswith("bob@localhost: my new phone"),
                    "the message from the new device")
        assert "⚠ keys changed" in rows(app)[0]
        await pilot.press("ctrl+o")
        assert not app.query_one("#banner").has_class("shown")
        assert "keys changed" not in rows(app)[0]


async def test_a_contact_without_devices_gets_nothing_unless_switched_to_unencrypted(
        server: Server, clients: list[Client], tmp_path: Path) -> None:
    alice = await online(server, clients, "alice@localhost", tmp_path / "alice")
    app = ChatApp(alice)
    async with app.run_test(size=SIZE) as pilot:
        assert app.focused is app.query_one("#to", Input)
        await type_text(pilot, "not@@valid")
        await pilot.press("enter")
        assert shown(app, "#notice").startswith("invalid address 'not@@valid'")
        app.query_one("#to", Input).value = ""
        await type_text(pilot, "carol@localhost")
        await pilot.press("enter")
        await until(pilot, lambda: "✗ cannot encrypt" in shown(app, "#status"), "the header says why")
        assert shown(app, "#notice") == ("carol@localhost has no OMEMO devices; press Ctrl+T to send unencrypted "
                                         "(the servers can then read it)")
        assert rows(app)[0] == "carol@localhost\n  no messages yet"
        await type_text(pilot, "secret")
        await pilot.press("enter")
        assert shown(app, "#notice").startswith("Not sent: carol@localhost has no OMEMO devices")
        assert app.query_one("#composer", Input).value == "secret"
        assert alice.store.history(CAROL) == [] and pane(app) == []
        await pilot.press("ctrl+t")
        assert "⚠ UNENCRYPTED" in shown(app, "#status")
        assert app.query_one("#status").has_class("plain")
        assert shown(app, "#notice").startswith("⚠ Unencrypted: what you send to carol@localhost now can be read")
        await pilot.press("enter")
        await until(pilot, lambda: pane(app) != [] and pane(app)[-1].endswith("me: secret [unencrypted]  ✓"),
                    "sent unencrypted, on the server")
        assert await server.storage.archive.count("localhost", "carol", "offline") == 1
        # Switched back, encryption is refused again.
        await pilot.press("ctrl+t")
        assert "⚠ UNENCRYPTED" not in shown(app, "#status")
        await type_text(pilot, "more")
        await pilot.press("enter")
        assert shown(app, "#notice").startswith("Not sent: ")
        assert len(pane(app)) == 1


async def test_the_command_fails_with_one_line(server: Server, tmp_path: Path) -> None:
    env = client_env(tmp_path)
    none = await schnack(env, "chat")
    assert none.returncode == 1
    assert none.stderr.strip() == "schnack: no account stored; log in first with: schnack login JID"
    assert (await login(server, env, "alice@localhost", PASSWORD)).returncode == 0
    bad = await schnack(env, "chat", "carol@@localhost")
    assert bad.returncode == 2 and bad.stderr.strip().startswith("schnack: invalid JID 'carol@@localhost'")
    store = Store(account_dir(ALICE, tmp_path / "client"))
    try:
        store.save_settings(Settings("127.0.0.1", free_port(), False, False))
    finally:
        store.close()
    gone = await schnack(env, "chat", "bob@localhost")
    assert gone.returncode == 1 and "Traceback" not in gone.stderr
    assert gone.stderr.strip().splitlines() == [
        "schnack: connecting as alice@localhost…", gone.stderr.strip().splitlines()[-1]]
    assert gone.stderr.strip().splitlines()[-1].startswith("schnack: cannot reach localhost (127.0.0.1 port ")


async def test_a_group_in_the_app(server: Server, clients: list[Client], tmp_path: Path) -> None:
    alice = await online(server, clients, "alice@localhost", tmp_path / "alice")
    bob = await online(server, clients, "bob@localhost")
    carol = await online(server, clients, "carol@localhost")
    bob_feed, carol_feed = bob.groups.messages(), carol.groups.messages()
    app = ChatApp(alice)
    async with app.run_test(size=SIZE) as pilot:
        # bob makes a private group with alice and carol: it appears in alice's list as a group.
        group = (await bob.groups.create("Family", [ALICE, CAROL])).jid
        await alice.groups.entered(group, WAIT)
        await carol.groups.entered(group, WAIT)
        await until(pilot, lambda: any(row.startswith(f"👥 Family ({group})") for row in rows(app)),
                    "the group listed")
        await bob.groups.send(group, "hello family")
        await until(pilot, lambda: rows(app)[0].startswith(f"👥 Family ({group})")
                    and rows(app)[0].endswith("  (1 unread)\n  hello family"), "bob's message unread")
        listing = app.query_one("#conversations", OptionList)
        listing.focus()
        listing.highlighted = 0
        await pilot.press("enter")
        await until(pilot, lambda: [line.split(" ", 1)[1] for line in pane(app)] == ["bob: hello family"],
                    "bob's message shown under his name")
        await until(pilot, lambda: "unread" not in rows(app)[0], "the group read")
        assert "🔒 encrypted group" in shown(app, "#status")
        # alice answers from the composer: bob and carol read it decrypted.
        await type_text(pilot, "hi both")
        await pilot.press("enter")
        for feed in (bob_feed, carol_feed):
            got = await next_of(feed, lambda m: m.text == "hi both")
            assert (got.group, got.sender, got.encrypted) == (group, ALICE, True)
        assert app.query_one("#composer", Input).value == ""
        await until(pilot, lambda: pane(app)[-1].endswith("me: hi both  ✓"), "alice's message acknowledged")
        # carol writes while the group is open: it appears live under her name.
        await carol.groups.send(group, "hi alice")
        await until(pilot, lambda: pane(app)[-1].endswith("carol: hi alice"), "carol's message shown live")
        # A group nobody else can read yet: the refusal is shown and the draft stays.
        alone = (await alice.groups.create("Alone")).jid
        app.query_one("#to", Input).focus()
        await type_text(pilot, str(alone))
        await pilot.press("enter")
        await until(pilot, lambda: pane(app) == [] and app.focused is app.query_one("#composer", Input),
                    "the empty group opened")
        await type_text(pilot, "anyone?")
        await pilot.press("enter")
        await until(pilot, lambda: shown(app, "#notice").startswith("Not sent: "), "the refusal shown")
        assert shown(app, "#notice") == f"Not sent: not sent to the group {alone}: it has no other member yet to read it"
        assert app.query_one("#composer", Input).value == "anyone?"
        assert alice.store.history(alone) == []
        assert any(row.startswith(f"👥 Alone ({alone})") for row in rows(app))
    assert [(m.direction, m.nick, m.sender, m.text, m.encrypted) for m in alice.store.history(group)] == [
        ("in", "bob", BOB, "hello family", True), ("out", None, None, "hi both", True),
        ("in", "carol", CAROL, "hi alice", True)]

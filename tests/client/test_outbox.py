"""The persistent outbox: a message survives its sender's death and arrives exactly once.

The sender is a real ``schnack send`` process, killed with SIGKILL after its message reached the
server and before the server's acknowledgement reached it (the server holds the message in
routing until the process is dead, and it counts a stanza as handled only once routed). Run
again, the command sends the stored message again with the same origin-id; the receiver, a
``schnack listen`` process, shows it once.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from schnack.client import Client, ClientError, XmppError
from schnack.client.store import Store, account_dir
from schnack.server.app import Server
from schnack.server.modules.e2e import REFUSAL
from schnack.xmpp import ns
from schnack.xmpp.errors import StanzaError
from schnack.xmpp.jid import JID
from schnack.xmpp.stanza import Stanza
from schnack.xmpp.xml import element, qname, sub

from ..cli.proc import client_env, line_of, login, schnack, start, stop
from ..harness import add_user
from .conftest import PASSWORD, WAIT, make_client, next_of, online
from .proxy import Proxy

TEXT = "meet me at the station at noon"


async def next_message(listener: asyncio.subprocess.Process) -> dict[str, Any]:
    """The next message ``listen --json`` prints (it prints chat states and receipts too)."""
    while True:
        line: dict[str, Any] = json.loads(await line_of(listener.stdout))
        if line["event"] == "message":
            return line


async def test_a_killed_sender_delivers_exactly_once(chat_server: Server, tmp_path: Path) -> None:
    env = client_env(tmp_path)
    for user in ("alice", "bob"):
        logged_in = await login(chat_server, env, f"{user}@localhost", PASSWORD)
        assert logged_in.returncode == 0, logged_in.stderr
    arrived, release = asyncio.Event(), asyncio.Event()

    async def hold(stanza: Stanza, _origin: object) -> None:
        # Only the first copy waits: routed, it is counted, and the ack would go out.
        if stanza.el.findtext(f"{{{ns.CLIENT}}}body") == TEXT and not release.is_set():
            arrived.set()
            await release.wait()

    chat_server.hooks.add("pre-message/bare", hold, priority=1000)
    listener = await start(env, "listen", "--json", "--account", "bob@localhost")
    try:
        assert (await line_of(listener.stderr)).startswith("schnack: listening as bob@localhost/")
        sender = await start(env, "send", "--unencrypted", "--account", "alice@localhost", "bob@localhost", TEXT)
        async with asyncio.timeout(WAIT):
            await arrived.wait()
        sender.kill()
        assert await sender.wait() == -signal.SIGKILL
        store = Store(account_dir(JID.parse("alice@localhost"), tmp_path / "client"))
        try:
            (entry,) = store.outbox()
            message = store.sent_message(entry.origin_id)
            # Killed right after writing it, the process may not have recorded that it did.
            assert message is not None and message.text == TEXT and message.state in ("pending", "sent")
        finally:
            store.close()
        release.set()
        first = await next_message(listener)
        assert (first["text"], first["origin_id"], first["id"]) == (TEXT, entry.origin_id, entry.origin_id)
        assert first["from"].startswith("alice@localhost/") and first["encrypted"] is False

        # The same command again: the server gets the same message a second time and acknowledges it.
        again = await schnack(env, "send", "--unencrypted", "--account", "alice@localhost", "bob@localhost", TEXT)
        assert again.returncode == 0, again.stderr
        assert again.stdout.strip() == entry.origin_id
        assert "sending again the same message" in again.stderr
        marker = await schnack(env, "send", "--unencrypted", "--account", "alice@localhost", "bob@localhost", "marker")
        assert marker.returncode == 0, marker.stderr
        # Messages between two parties keep their order: a second copy would have come before the marker.
        assert (await next_message(listener))["text"] == "marker"
    finally:
        assert await stop(listener) == 0
    history = await schnack(env, "history", "bob@localhost", "--json", "--account", "alice@localhost")
    # Acknowledged, and delivered if a later command of alice's caught up with bob's receipts.
    assert [(m["text"], m["direction"], m["state"] in ("acked", "delivered"))
            for m in map(json.loads, history.stdout.splitlines())] == [(TEXT, "out", True), ("marker", "out", True)]
    received = await schnack(env, "history", "alice@localhost", "--json", "--account", "bob@localhost")
    assert [m["text"] for m in map(json.loads, received.stdout.splitlines())] == [TEXT, "marker"]


async def test_a_message_written_while_offline_goes_out_after_a_restart(chat_server: Server, tmp_path: Path,
                                                                        clients: list[Client]) -> None:
    """Stored while the server was unreachable, the message is sent by the next client on that store."""
    directory = tmp_path / "alice"
    host, port = chat_server.bound["c2s"][0]
    proxy = await Proxy(host, port).start()
    try:
        first = Client("alice@localhost", PASSWORD, host="127.0.0.1", port=proxy.port, verify=False,
                       data_dir=directory, backoff=(0.05, 0.5))
        await first.connect()
        events = first.events()
        proxy.refusing = True
        proxy.cut()
        await next_of(events)
        id = await first.send("bob@localhost", "written on the train", encrypted=False)
        await first.close()
    finally:
        await proxy.stop()
    bob = await online(chat_server, clients, "bob@localhost")
    inbox = bob.messages()
    second = make_client(chat_server, "alice@localhost", data_dir=directory)
    clients.append(second)
    await second.connect()
    await second.acknowledged(id)
    got = await next_of(inbox)
    assert (got.text, got.id) == ("written on the train", id)
    assert second.store.outbox() == []


@pytest.fixture
async def strict_server(live_server: Server) -> AsyncIterator[Server]:
    """The default policy: plaintext chat is refused (e2e "required")."""
    for user in ("alice", "bob"):
        await add_user(live_server, user, PASSWORD)
    yield live_server


async def test_a_refused_message_fails_and_is_not_sent_again(strict_server: Server, clients: list[Client]) -> None:
    alice = await online(strict_server, clients, "alice@localhost")
    id = await alice.send("bob@localhost", "plain words", encrypted=False)
    with pytest.raises(XmppError) as refused:
        await alice.acknowledged(id)
    assert (refused.value.condition, refused.value.text) == ("policy-violation", REFUSAL)
    stored = alice.store.sent_message(id)
    assert stored is not None and (stored.state, stored.error) == ("failed", "policy-violation")
    assert alice.store.outbox() == []
    # Asked again later, the store answers.
    with pytest.raises(XmppError, match="policy-violation"):
        await alice.acknowledged(id)


async def test_text_that_xml_cannot_carry_is_refused_and_holds_nothing_back(chat_server: Server,
                                                                             clients: list[Client]) -> None:
    """A terminal's escape sequence pasted into a message: XML 1.0 cannot carry it, so it is
    refused at once, nothing is stored, and the messages after it go."""
    alice = await online(chat_server, clients, "alice@localhost")
    bob = await online(chat_server, clients, "bob@localhost")
    inbox = bob.messages()
    with pytest.raises(ClientError, match="U\\+001B"):
        await alice.send("bob@localhost", "\x1b[31mred\x1b[0m", encrypted=False)
    assert alice.store.outbox() == [] and alice.store.history(JID.parse("bob@localhost")) == []
    sent = await alice.send("bob@localhost", "plain red", encrypted=False)
    await alice.acknowledged(sent)
    assert (await next_of(inbox)).text == "plain red"


async def test_a_stored_message_that_cannot_be_read_again_fails_and_holds_nothing_back(
        chat_server: Server, clients: list[Client], tmp_path: Path) -> None:
    """An outbox entry that no longer parses (an earlier version stored text XML cannot carry)
    is marked failed, and the messages after it go."""
    directory = tmp_path / "alice"
    store = Store(directory)
    try:
        broken = element(qname(ns.CLIENT, "message"), {"type": "chat", "to": "bob@localhost", "id": "o1"})
        sub(broken, qname(ns.CLIENT, "body"), text="\x1b[31mred")
        store.queue(JID.parse("bob@localhost"), "\x1b[31mred", "o1", broken, encrypted=False)
    finally:
        store.close()
    bob = await online(chat_server, clients, "bob@localhost")
    inbox = bob.messages()
    alice = await online(chat_server, clients, "alice@localhost", data_dir=directory)
    sent = await alice.send("bob@localhost", "plain red", encrypted=False)
    await alice.acknowledged(sent)
    assert (await next_of(inbox)).text == "plain red"
    failed = alice.store.sent_message("o1")
    assert failed is not None and (failed.state, failed.error) == ("failed", "bad-request")
    assert alice.store.outbox() == []


async def test_an_error_after_the_receipt_leaves_the_message_delivered(chat_server: Server,
                                                                       clients: list[Client]) -> None:
    """The message reached bob's device (his receipt says so); an error that comes for it later
    (the bounce of a copy sent again) does not turn it into a failed one."""
    alice = await online(chat_server, clients, "alice@localhost")
    bob = await online(chat_server, clients, "bob@localhost")
    alice_inbox, receipts, bob_inbox = alice.messages(), alice.receipts(), bob.messages()
    sent = await alice.send("bob@localhost", "hello", encrypted=False)
    got = await next_of(bob_inbox)
    await next_of(receipts, lambda r: r.id == sent and r.state == "delivered")
    bounce = element(qname(ns.CLIENT, "message"), {"to": str(got.sender), "type": "error", "id": sent})
    bounce.append(StanzaError("service-unavailable").to_xml())
    await bob.send_element(bounce)
    await bob.send(alice.jid, "after", encrypted=False)
    assert (await next_of(alice_inbox)).text == "after"
    stored = alice.store.sent_message(sent)
    assert stored is not None and (stored.state, stored.error) == ("delivered", None)

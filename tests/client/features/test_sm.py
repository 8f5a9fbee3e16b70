"""XEP-0198 from the client's side, against the real server and against Prosody (mod_smacks).

Acks both ways (§4), resumption after the link drops (§5), and what slixmpp does not do: when
resumption fails, the messages the server never acknowledged are sent again from the outbox.
A server without stream management still confirms messages, through pings.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from xml.etree.ElementTree import Element

import pytest

from bench.servers import DOMAIN, ProsodyDriver, Target
from schnack.client import Client, Connected, Disconnected, Message, Receipt
from schnack.client.features.groups import GroupMessage
from schnack.client.feed import Subscription
from schnack.client.omemo import Omemo, Undecryptable
from schnack.client.omemo.adapter import Decrypted
from schnack.client.outbox import ORIGIN_ID
from schnack.server.app import Server
from schnack.server.modules.sm import SmState
from schnack.server.sessions import Session
from schnack.xmpp import ns
from schnack.xmpp.jid import JID
from schnack.xmpp.stanza import Stanza

from ...conftest import require_service
from ...harness import add_user, running
from ..conftest import PASSWORD, WAIT, make_client, next_of, online, ping
from ..held_client import held_client
from ..proxy import Proxy

FAST = (0.05, 0.5)
BOB = JID.parse("bob@localhost")


def _sm_available() -> bool:
    from schnack.server.modules import BUILTIN

    return "sm" in BUILTIN


@pytest.fixture
async def short_hibernation(tmp_path: Path) -> AsyncIterator[Server]:
    """Sessions whose connection died may be resumed for one second only."""
    require_service(_sm_available(), "the server's stream management module is not there yet")
    async with running(tmp_path, listen=True, modules={"e2e": {"policy": "optional"}, "sm": {"resume_timeout": 1}}
                       ) as server:
        for user in ("alice", "bob"):
            await add_user(server, user, PASSWORD)
        yield server


@pytest.fixture
async def without_sm(tmp_path: Path) -> AsyncIterator[Server]:
    async with running(tmp_path, listen=True, modules={"e2e": {"policy": "optional"}, "disable": ["sm"]}) as server:
        for user in ("alice", "bob"):
            await add_user(server, user, PASSWORD)
        yield server


@pytest.fixture
async def proxies() -> AsyncIterator[list[Proxy]]:
    made: list[Proxy] = []
    yield made
    for proxy in made:
        await proxy.stop()


async def behind_proxy(server: Server, proxies: list[Proxy], clients: list[Client], jid: str) -> tuple[Client, Proxy]:
    """A connected client whose link runs through a proxy the test controls."""
    host, port = server.bound["c2s"][0]
    proxy = await Proxy(host, port).start()
    proxies.append(proxy)
    client = Client(jid, PASSWORD, host="127.0.0.1", port=proxy.port, verify=False, direct_tls=False, backoff=FAST)
    clients.append(client)
    await client.connect()
    return client, proxy


def session_of(server: Server, jid: JID) -> Session:
    session = server.sessions.get(jid)
    assert session is not None
    return session


def state_of(client: Client, id: str) -> str:
    stored = client.store.sent_message(id)
    assert stored is not None
    return stored.state


async def texts_until(inbox: AsyncIterator[Message], last: str) -> list[str | None]:
    """The texts that arrive, up to and including ``last``."""
    seen: list[str | None] = []
    while not seen or seen[-1] != last:
        seen.append((await next_of(inbox)).text)
    return seen


# Against schnack's server ---------------------------------------------------------------------------


async def test_enabled_with_resumption_and_counted_both_ways(chat_server: Server, clients: list[Client]) -> None:
    require_service(_sm_available(), "the server's stream management module is not there yet")
    alice = await online(chat_server, clients, "alice@localhost/desk")
    bob = await online(chat_server, clients, "bob@localhost/phone")
    assert alice.sm.enabled and alice.sm.id is not None
    inbox, receipts = bob.messages(), alice.receipts()
    acked: asyncio.Queue[str | None] = asyncio.Queue()

    def on_ack(el: Element) -> None:
        if el.find(ORIGIN_ID) is not None:
            acked.put_nowait(el.get("id"))

    alice.sm.on_acknowledged(on_ack)
    sent = [await alice.send(bob.jid, f"message {n}", encrypted=False) for n in range(7)]
    async with asyncio.timeout(WAIT):
        assert [await acked.get() for _ in sent] == sent
    # The ack of the last message covers every stanza before it too (presence, roster request).
    assert alice.sm.unacknowledged == 0
    for id in sent:
        await alice.acknowledged(id)
        stored = alice.store.sent_message(id)
        # Bob's receipt may overtake the ack: the server routes a message at once but counts it
        # handled only once its archive has it.
        assert stored is not None and stored.state in ("acked", "delivered") and stored.origin_id == id
    assert alice.store.outbox() == []
    assert [(await next_of(inbox)).text for _ in sent] == [f"message {n}" for n in range(7)]
    assert sorted([(await next_of(receipts)).id for _ in sent]) == sorted(sent)
    assert {state_of(alice, id) for id in sent} == {"delivered"}
    # Once bob has the answer to a ping, the last stanza the server sent him, he has handled as
    # many stanzas as the server sent him since stream management was enabled.
    await ping(bob)
    assert bob.sm.handled == session_of(chat_server, bob.jid).slot(SmState).sent > 7


async def test_resumes_after_the_link_drops(chat_server: Server, clients: list[Client], proxies: list[Proxy]) -> None:
    require_service(_sm_available(), "the server's stream management module is not there yet")
    alice, proxy = await behind_proxy(chat_server, proxies, clients, "alice@localhost/desk")
    bob = await online(chat_server, clients, "bob@localhost/phone")
    session, previd = session_of(chat_server, alice.jid), alice.sm.id
    events, inbox = alice.events(), alice.messages()
    proxy.cut()
    await bob.send(alice.jid, "while you were away", encrypted=False)
    assert isinstance(await next_of(events), Disconnected)
    assert await next_of(events) == Connected(alice.jid)
    assert alice.sm.resumptions == 1 and alice.sm.id == previd
    # The same session went on: the server did not end it and bind another.
    assert session_of(chat_server, alice.jid) is session and not session.closed
    await bob.send(alice.jid, "and now", encrypted=False)
    assert await texts_until(inbox, "and now") == ["while you were away", "and now"]
    sent = await alice.send(bob.jid, "after the resumption", encrypted=False)
    await alice.acknowledged(sent)


@pytest.fixture
async def without_archive(tmp_path: Path) -> AsyncIterator[Server]:
    """Without an archive, what the server took as delivered is nowhere to catch up from."""
    require_service(_sm_available(), "the server's stream management module is not there yet")
    async with running(tmp_path, listen=True, modules={"e2e": {"policy": "optional"}, "disable": ["mam"]}) as server:
        for user in ("alice", "bob"):
            await add_user(server, user, PASSWORD)
        yield server


async def test_a_message_not_stored_yet_is_not_acknowledged(
        without_archive: Server, clients: list[Client], tmp_path: Path) -> None:
    """bob's client, in a process of its own, is killed while alice's encrypted message is still
    being decrypted, after it answered the server's <r/>: the answer did not count the message,
    so the server still holds it, and bob's next login gets it (from offline storage)."""
    directory = tmp_path / "bob"
    async with held_client(without_archive, "bob@localhost/phone", directory) as bob:
        alice = await online(without_archive, clients, "alice@localhost")
        await alice.send(BOB, "are you there?")
        async with asyncio.timeout(WAIT):
            assert await bob.readline() == b"answered\n"
    again = make_client(without_archive, "bob@localhost/phone", data_dir=directory)
    clients.append(again)
    inbox = again.messages()
    await again.connect()
    await alice.send(BOB, "news", encrypted=False)
    assert await texts_until(inbox, "news") == ["are you there?", "news"]


async def alice_s_group(server: Server, clients: list[Client], bob: Client) -> tuple[Client, JID]:
    """alice, and her group with ``bob`` in it."""
    alice = await online(server, clients, "alice@localhost/desk")
    group = await alice.groups.create("Club", ["bob@localhost"])
    assert (await bob.groups.entered(group.jid, WAIT)).joined
    return alice, group.jid


async def decrypting(server: Server, clients: list[Client], bob: Client, monkeypatch: pytest.MonkeyPatch, text: str
                     ) -> tuple[Client, JID, Subscription[GroupMessage], asyncio.Event]:
    """alice's group with ``bob`` in it, where bob's client decrypts her message ``text`` until
    the event returned is set; alice, the group and bob's group messages."""
    alice, group = await alice_s_group(server, clients, bob)
    waiting, go_on = asyncio.Event(), asyncio.Event()
    decrypt = Omemo.decrypt

    async def paused(self: Omemo, sender: JID, el: Element) -> Decrypted:
        waiting.set()
        await go_on.wait()
        return await decrypt(self, sender, el)

    monkeypatch.setattr(Omemo, "decrypt", paused)
    feed = bob.groups.messages()
    await alice.groups.send(group, text)
    async with asyncio.timeout(WAIT):
        await waiting.wait()
    return alice, group, feed, go_on


async def all_handled(server: Server, client: Client) -> None:
    """Once ``client`` has the answer to a ping, the last stanza the server sent it, the h it
    answers with covers every stanza the server sent it: no stanza is held any more."""
    await ping(client)
    assert client.sm.handled == session_of(server, client.jid).slot(SmState).sent


async def test_a_group_message_not_stored_yet_is_not_acknowledged(
        chat_server: Server, clients: list[Client], monkeypatch: pytest.MonkeyPatch) -> None:
    """While alice's group message is decrypted, the h bob answers the server with stops before
    it (§4); once it is stored, h covers it and what came after it."""
    require_service(_sm_available(), "the server's stream management module is not there yet")
    bob = await online(chat_server, clients, "bob@localhost/phone")
    _, _, feed, go_on = await decrypting(chat_server, clients, bob, monkeypatch, "slowly")
    await ping(bob)
    assert bob.sm.handled < session_of(chat_server, bob.jid).slot(SmState).sent
    go_on.set()
    assert (await next_of(feed)).text == "slowly"
    await all_handled(chat_server, bob)


async def test_a_group_message_that_fails_or_cannot_be_decrypted_is_acknowledged(
        chat_server: Server, clients: list[Client], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """A group message whose handling fails, and one that cannot be decrypted, hold the count no
    longer once that is over: h goes on."""
    require_service(_sm_available(), "the server's stream management module is not there yet")
    bob = await online(chat_server, clients, "bob@localhost/phone")
    alice, group = await alice_s_group(chat_server, clients, bob)
    failures = iter([RuntimeError("the store is broken"), Undecryptable("not for this device")])

    async def failing(self: Omemo, sender: JID, el: Element) -> Decrypted:
        raise next(failures)

    monkeypatch.setattr(Omemo, "decrypt", failing)
    feed = bob.groups.messages()
    with caplog.at_level(logging.ERROR):
        await alice.groups.send(group, "breaks it")
        await alice.groups.send(group, "unreadable")
        told = await next_of(feed)
    assert (told.text, told.undecryptable) == (None, "not for this device")
    assert "failed to handle a group message" in caplog.text
    await all_handled(chat_server, bob)


async def test_a_group_message_of_a_group_left_meanwhile_is_acknowledged(
        chat_server: Server, clients: list[Client], monkeypatch: pytest.MonkeyPatch) -> None:
    """bob leaves the group while its message is decrypted: the message holds the count until
    its handling is over, and no longer."""
    require_service(_sm_available(), "the server's stream management module is not there yet")
    bob = await online(chat_server, clients, "bob@localhost/phone")
    _, group, feed, go_on = await decrypting(chat_server, clients, bob, monkeypatch, "goodbye")
    await bob.groups.leave(group)
    assert bob.groups.known() == []
    go_on.set()
    assert (await next_of(feed)).text == "goodbye"
    await all_handled(chat_server, bob)


async def test_a_group_message_sent_again_on_resumption_is_acknowledged_once_stored(
        chat_server: Server, clients: list[Client], proxies: list[Proxy], monkeypatch: pytest.MonkeyPatch) -> None:
    """The link drops while bob's client decrypts a group message: the resumption (§5) asks for it
    again, and the copy the server sends is dropped as one, but counted only once the message is
    stored, which is shown once."""
    require_service(_sm_available(), "the server's stream management module is not there yet")
    bob, proxy = await behind_proxy(chat_server, proxies, clients, "bob@localhost/phone")
    alice, group, feed, go_on = await decrypting(chat_server, clients, bob, monkeypatch, "slowly")
    events = bob.events()
    proxy.cut()
    assert isinstance(await next_of(events), Disconnected)
    assert await next_of(events) == Connected(bob.jid)
    assert bob.sm.resumptions == 1
    await ping(bob)
    assert bob.sm.handled < session_of(chat_server, bob.jid).slot(SmState).sent
    go_on.set()
    await alice.groups.send(group, "then this")
    assert [(await next_of(feed)).text for _ in range(2)] == ["slowly", "then this"]
    await all_handled(chat_server, bob)


async def cut_until_ended(server: Server, proxy: Proxy, old: Session) -> None:
    """Cut the link through ``proxy`` and keep the server out of reach until it ended the session
    ``old``, not resumed in time; then let the client in again."""
    ended = asyncio.Event()

    async def closed(session: Session) -> None:
        if session is old:
            ended.set()

    server.hooks.add("session-closed", closed)
    proxy.refusing = True
    proxy.cut()
    proxy.swallowing = False
    async with asyncio.timeout(WAIT):
        await ended.wait()
    proxy.refusing = False


async def test_a_message_lost_on_a_dead_link_is_sent_again_when_resumption_fails(
    short_hibernation: Server, clients: list[Client], proxies: list[Proxy]
) -> None:
    server = short_hibernation
    alice, proxy = await behind_proxy(server, proxies, clients, "alice@localhost/desk")
    bob = await online(server, clients, "bob@localhost/phone")
    inbox = bob.messages()
    old = session_of(server, alice.jid)
    previd = alice.sm.id
    # The link dies silently: what alice writes now never reaches the server.
    proxy.swallowing = True
    id = await alice.send(bob.jid, "lost in transit", encrypted=False)
    await cut_until_ended(server, proxy, old)
    await alice.acknowledged(id, timeout=WAIT)
    # A new session: the resumption of the old one was refused.
    assert alice.sm.resumptions == 0 and alice.sm.id not in (None, previd)
    await alice.acknowledged(await alice.send(bob.jid, "last", encrypted=False))
    assert await texts_until(inbox, "last") == ["lost in transit", "last"]
    assert alice.store.outbox() == []


async def test_a_receipt_lost_on_a_dead_link_is_sent_again_when_resumption_fails(
    short_hibernation: Server, clients: list[Client], proxies: list[Proxy]
) -> None:
    """bob's receipt (XEP-0184) goes into a link that died unnoticed, and his session is not
    resumed: the new one sends it, and alice learns that her message was delivered."""
    server = short_hibernation
    bob, proxy = await behind_proxy(server, proxies, clients, "bob@localhost/laptop")
    alice = await online(server, clients, "alice@localhost/desk")
    inbox, receipts = bob.messages(), alice.receipts()
    old = session_of(server, bob.jid)
    proxy.swallowing = True
    sent = await alice.send(BOB, "did you get this?", encrypted=False)
    assert (await next_of(inbox)).id == sent
    await cut_until_ended(server, proxy, old)
    assert await next_of(receipts) == Receipt(BOB, sent, "delivered")


async def test_an_ack_above_what_was_sent_ends_the_stream_with_an_error(
    short_hibernation: Server, clients: list[Client], caplog: pytest.LogCaptureFixture
) -> None:
    """§4: an <a/> whose h counts more stanzas than were sent is an undefined-condition stream
    error with <handled-count-too-high/>; the client then goes on in a new session."""
    server = short_hibernation
    caplog.set_level(logging.INFO, logger="schnack.server.c2s")
    alice = await online(server, clients, "alice@localhost/desk", backoff=FAST)
    bob = await online(server, clients, "bob@localhost/phone")
    inbox, events = bob.messages(), alice.events()
    old = session_of(server, alice.jid)
    (conn,) = [c for c in server.connections if c.stream is not None and c.stream.session is old]
    conn.write("<a xmlns='urn:xmpp:sm:3' h='1000'/>")
    assert isinstance(await next_of(events), Disconnected)
    assert await next_of(events) == Connected(alice.jid)
    (error,) = [r.getMessage() for r in caplog.records if "sent a stream error" in r.getMessage()]
    assert "undefined-condition" in error and "handled-count-too-high" in error and "h=\"1000\"" in error
    assert old.closed and alice.sm.resumptions == 0
    await alice.acknowledged(await alice.send(bob.jid, "in the new session", encrypted=False))
    assert (await next_of(inbox)).text == "in the new session"


async def test_acks_that_arrive_while_closing_empty_the_outbox(chat_server: Server, clients: list[Client],
                                                               tmp_path: Path) -> None:
    """§4: an <a/> that answers while the client closes its stream still acknowledges, so that the
    next start does not send the message again."""
    require_service(_sm_available(), "the server's stream management module is not there yet")
    directory = tmp_path / "alice"
    alice = await online(chat_server, clients, "alice@localhost/desk", data_dir=directory)
    bob = await online(chat_server, clients, "bob@localhost/phone")
    arrived, release = asyncio.Event(), asyncio.Event()

    async def hold(stanza: Stanza, _origin: Session | None) -> None:
        # Held in routing, the message is not counted, and its ack waits until the client closes.
        if stanza.el.findtext(f"{{{ns.CLIENT}}}body") == "just before closing":
            arrived.set()
            await release.wait()

    chat_server.hooks.add("pre-message/bare", hold, priority=1000)
    await alice.send(bob.jid.bare, "just before closing", encrypted=False)
    async with asyncio.timeout(WAIT):
        await arrived.wait()
    closing = asyncio.create_task(alice.close())
    # Meanwhile the client stops reading as usual and writes the end of its stream.
    await asyncio.sleep(0.2)
    assert not alice.connected
    release.set()
    await closing
    later = make_client(chat_server, "alice@localhost/desk", data_dir=directory)
    clients.append(later)
    assert later.store.outbox() == []


async def test_without_stream_management_pings_confirm_messages(without_sm: Server, clients: list[Client]) -> None:
    alice = await online(without_sm, clients, "alice@localhost")
    bob = await online(without_sm, clients, "bob@localhost")
    inbox = bob.messages()
    assert not alice.sm.enabled and alice.sm.id is None
    ids = [await alice.send(bob.jid, text, encrypted=False) for text in ("one", "two")]
    for id in ids:
        await alice.acknowledged(id)
        stored = alice.store.sent_message(id)
        assert stored is not None and stored.state == "acked"
    assert [(await next_of(inbox)).text for _ in ids] == ["one", "two"]
    assert alice.store.outbox() == []


# Against Prosody ----------------------------------------------------------------------------------------


@pytest.fixture
def prosody() -> Iterator[tuple[Target, Path]]:
    """A running Prosody with mod_smacks, alice and bob; its address and its certificate."""
    require_service(ProsodyDriver.available(), "Prosody is not installed (Debian package prosody)")
    driver = ProsodyDriver()
    target = driver.start(["alice", "bob"], PASSWORD)
    try:
        yield target, driver.dir / "certs" / f"{DOMAIN}.crt"
    finally:
        driver.stop()


async def test_resumption_and_acks_with_prosody(prosody: tuple[Target, Path], clients: list[Client],
                                                proxies: list[Proxy]) -> None:
    target, cert = prosody
    proxy = await Proxy(target.host, target.port).start()
    proxies.append(proxy)
    alice = Client(f"alice@{target.domain}/desk", PASSWORD, host="127.0.0.1", port=proxy.port, verify=cert,
                   backoff=FAST)
    bob = Client(f"bob@{target.domain}/phone", PASSWORD, host=target.host, port=target.port, verify=cert)
    clients += [alice, bob]
    await alice.connect()
    await bob.connect()
    assert alice.sm.enabled and alice.sm.id is not None
    events, inbox, bob_inbox = alice.events(), alice.messages(), bob.messages()
    id = await alice.send(bob.jid, "hello prosody", encrypted=False)
    await alice.acknowledged(id)
    assert (await next_of(bob_inbox)).text == "hello prosody"
    proxy.cut()
    await bob.send(alice.jid, "while you were away", encrypted=False)
    assert isinstance(await next_of(events), Disconnected)
    assert await next_of(events) == Connected(alice.jid)
    assert alice.sm.resumptions == 1
    await bob.send(alice.jid, "and now", encrypted=False)
    assert await texts_until(inbox, "and now") == ["while you were away", "and now"]
    again = await alice.send(bob.jid, "after the resumption", encrypted=False)
    await alice.acknowledged(again)
    assert (await next_of(bob_inbox)).text == "after the resumption"

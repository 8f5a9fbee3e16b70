"""XEP-0160 offline messages with XEP-0203 delay stamps: store, quota, delivery, deletion, restart."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from xml.etree.ElementTree import Element

import pytest

from schnack.server.app import Server
from schnack.server.c2s import C2SStream
from schnack.server.config import ConfigError
from schnack.server.modules import offline
from schnack.server.sessions import Session
from schnack.xmpp import ns
from schnack.xmpp.parser import parse_frame
from schnack.xmpp.payloads import sm
from schnack.xmpp.stanza import Stanza

from ...harness import Client, MemoryConnection, add_user, connect, running, xml
from .messaging import ROUTING_ONLY, announce, body, chat, condition, error_text, login

DELAY = f"{{{ns.DELAY}}}delay"
MESSAGE = f"{{{ns.CLIENT}}}message"
IQ = f"{{{ns.CLIENT}}}iq"


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    """Routing and offline storage, without presence: tests fire ``presence-initial`` themselves."""
    async with running(tmp_path, modules=ROUTING_ONLY) as srv:
        yield srv


async def come_online(server: Server, client: Client, priority: int = 0) -> list[Element]:
    """Initial presence as the presence module reports it; returns what the client then got."""
    session = announce(client, priority)
    await server.hooks.fire_all("presence-initial", session)
    return client.take()


async def stored(server: Server, user: str = "bob") -> int:
    return await server.storage.archive.count("localhost", user, "offline")


async def sender_and_absent_bob(server: Server) -> Client:
    await add_user(server, "bob")
    return await login(server, "alice@localhost/phone")


def parse_stamp(stamp: str) -> datetime:
    assert stamp.endswith("Z"), stamp
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


async def test_stored_message_arrives_with_delay_stamp(server: Server) -> None:
    alice = await sender_and_absent_bob(server)
    before = datetime.now(UTC)
    await alice.send(chat("bob@localhost", "while you were out", id="o1"))
    after = datetime.now(UTC)
    assert alice.take() == []  # stored, not bounced
    bob = await connect(server, "bob@localhost/laptop")
    (got,) = await come_online(server, bob)
    assert body(got) == "while you were out"
    assert got.get("id") == "o1"
    assert got.get("from") == "alice@localhost/phone"
    assert got.get("to") == "bob@localhost"
    assert got.get("type") == "chat"
    (delay,) = got.findall(DELAY)
    assert delay.get("from") == "localhost"
    stamp = parse_stamp(delay.get("stamp", ""))
    assert before - timedelta(milliseconds=1) <= stamp <= after, xml(got)


async def test_delivered_in_order_then_deleted(server: Server) -> None:
    alice = await sender_and_absent_bob(server)
    texts = [f"message {i}" for i in range(5)]
    for i, text in enumerate(texts):
        await alice.send(chat("bob@localhost", text, kind="chat" if i % 2 else None, id=f"m{i}"))
    assert await stored(server) == 5
    bob = await connect(server, "bob@localhost/laptop")
    got = await come_online(server, bob)
    assert [body(el) for el in got] == texts
    assert [el.get("id") for el in got] == [f"m{i}" for i in range(5)]
    assert await stored(server) == 0
    # Delivered once: the next resource to come online finds nothing.
    tablet = await connect(server, "bob@localhost/tablet")
    assert await come_online(server, tablet) == []


async def test_more_than_one_batch_arrives_whole_and_in_order(server: Server) -> None:
    alice = await sender_and_absent_bob(server)
    for i in range(250):
        await alice.send(chat("bob@localhost", f"n{i}", id=f"n{i}"))
    bob = await connect(server, "bob@localhost/laptop")
    got = await come_online(server, bob)
    assert [body(el) for el in got] == [f"n{i}" for i in range(250)]
    assert await stored(server) == 0


async def test_negative_priority_gets_nothing_and_keeps_it(server: Server) -> None:
    alice = await sender_and_absent_bob(server)
    await alice.send(chat("bob@localhost", "for a real device"))
    bot = await connect(server, "bob@localhost/bot")
    assert await come_online(server, bot, priority=-1) == []
    assert await stored(server) == 1
    laptop = await connect(server, "bob@localhost/laptop")
    assert [body(el) for el in await come_online(server, laptop, priority=0)] == ["for a real device"]


async def test_stored_for_connected_resource_without_presence(server: Server) -> None:
    alice = await sender_and_absent_bob(server)
    bob = await connect(server, "bob@localhost/laptop")
    await alice.send(chat("bob@localhost", "held until you show up"))
    assert bob.take() == []
    assert [body(el) for el in await come_online(server, bob)] == ["held until you show up"]


async def test_quota_bounces_with_mailbox_full(tmp_path: Path) -> None:
    modules = {**ROUTING_ONLY, "offline": {"max_messages": 2}}
    async with running(tmp_path, modules=modules) as server:
        alice = await sender_and_absent_bob(server)
        await alice.send(chat("bob@localhost", "one", id="q1"))
        await alice.send(chat("bob@localhost", "two", id="q2"))
        assert alice.take() == []
        await alice.send(chat("bob@localhost", "three", id="q3"))
        (error,) = alice.take()
        assert condition(error) == "service-unavailable"
        assert error.get("id") == "q3"
        assert "mailbox is full" in (error_text(error) or "")
        assert await stored(server) == 2
        bob = await connect(server, "bob@localhost/laptop")
        assert [body(el) for el in await come_online(server, bob)] == ["one", "two"]
        # Delivered messages free the mailbox.
        await alice.send(chat("bob@localhost", "four", id="q4"))
        assert alice.take() == []


async def test_delivery_survives_a_restart(tmp_path: Path) -> None:
    async with running(tmp_path, modules=ROUTING_ONLY) as server:
        alice = await sender_and_absent_bob(server)
        await alice.send(chat("bob@localhost", "across the restart", id="r1"))
        assert alice.take() == []
    async with running(tmp_path, modules=ROUTING_ONLY) as server:
        bob = await connect(server, "bob@localhost/laptop")
        (got,) = await come_online(server, bob)
        assert body(got) == "across the restart"
        assert got.find(DELAY) is not None
        assert await stored(server) == 0


class VanishingConnection(MemoryConnection):
    """A connection whose client loses its network after receiving ``keep`` messages."""

    def __init__(self, keep: int) -> None:
        super().__init__()
        self.keep = keep
        self.stream: C2SStream | None = None
        self.vanished = False

    def write(self, data: str) -> None:
        super().write(data)
        messages = sum(1 for el in self.out if el.tag == MESSAGE)
        if self.stream is not None and messages >= self.keep and not self.vanished:
            self.vanished = True
            self.stream.close()


async def vanishing_client(server: Server, keep: int) -> Client:
    """Like harness.connect for bob@localhost/laptop, on a connection that vanishes."""
    conn = VanishingConnection(keep)
    stream = C2SStream(server, conn)
    await stream.on_open(f"{{{ns.FRAMING}}}open", {"to": "localhost", "version": "1.0"}, None)
    stream.username = "bob"
    bind = (
        f"<iq type='set' id='bind' xmlns='{ns.CLIENT}'><bind xmlns='{ns.BIND}'>"
        "<resource>laptop</resource></bind></iq>"
    )
    await stream.on_element(parse_frame(bind.encode(), 10**6))
    conn.stream = stream
    client = Client(server, stream, conn)
    client.take()
    return client


async def test_session_closing_midway_keeps_the_rest(server: Server) -> None:
    alice = await sender_and_absent_bob(server)
    for i in range(5):
        await alice.send(chat("bob@localhost", f"part {i}"))
    flaky = await vanishing_client(server, keep=2)
    got = [el for el in await come_online(server, flaky) if el.tag == MESSAGE]
    assert [body(el) for el in got] == ["part 0", "part 1"]
    await flaky.close()
    assert await stored(server) == 3
    bob = await connect(server, "bob@localhost/laptop")
    assert [body(el) for el in await come_online(server, bob)] == ["part 2", "part 3", "part 4"]


async def test_what_a_session_ending_midway_did_not_acknowledge_keeps_its_place(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Small batches, so that the session ends with some messages sent and others still stored.
    monkeypatch.setattr(offline, "_BATCH", 2)
    alice = await sender_and_absent_bob(server)
    for i in range(6):
        await alice.send(chat("bob@localhost", f"part {i}"))
    flaky = await vanishing_client(server, keep=3)
    # Stream management without resumption: the session ends with the stream, and what the
    # client did not acknowledge goes back to storage (XEP-0198 §4).
    await flaky.send(f"<enable xmlns='{sm.NS}'/>")
    flaky.take()
    await come_online(server, flaky)
    bob = await connect(server, "bob@localhost/laptop")
    assert [body(el) for el in await come_online(server, bob)] == [f"part {i}" for i in range(6)]
    assert await stored(server) == 0


async def test_two_resources_at_once_get_each_message_once(server: Server) -> None:
    alice = await sender_and_absent_bob(server)
    texts = [f"once {i}" for i in range(20)]
    for text in texts:
        await alice.send(chat("bob@localhost", text))
    laptop = await connect(server, "bob@localhost/laptop")
    phone = await connect(server, "bob@localhost/phone")
    await asyncio.gather(
        server.hooks.fire_all("presence-initial", announce(laptop)),
        server.hooks.fire_all("presence-initial", announce(phone)),
    )
    got = [body(el) for el in laptop.take()] + [body(el) for el in phone.take()]
    assert sorted(map(str, got)) == sorted(texts)
    assert await stored(server) == 0


async def test_unreadable_stored_message_does_not_block_the_rest(server: Server) -> None:
    alice = await sender_and_absent_bob(server)
    await server.storage.archive.append(
        "localhost", "bob", "offline", time.time(), "alice@localhost", b"<message xmlns='jabber:client'"
    )
    await alice.send(chat("bob@localhost", "readable"))
    bob = await connect(server, "bob@localhost/laptop")
    assert [body(el) for el in await come_online(server, bob)] == ["readable"]
    assert await stored(server) == 0


# What is worth storing (XEP-0334 hints, XEP-0085 chat states) --------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        "<composing xmlns='http://jabber.org/protocol/chatstates'/>",
        "<body>secret</body><no-store xmlns='urn:xmpp:hints'/>",
    ],
)
async def test_not_stored_and_not_bounced(server: Server, payload: str) -> None:
    alice = await sender_and_absent_bob(server)
    await alice.send(f"<message to='bob@localhost' type='chat' id='x'>{payload}</message>")
    assert alice.take() == []
    assert await stored(server) == 0


@pytest.mark.parametrize(
    "payload",
    [
        "<received xmlns='urn:xmpp:receipts' id='m1'/>",
        "<displayed xmlns='urn:xmpp:chat-markers:0' id='m1'/>",
        "<active xmlns='http://jabber.org/protocol/chatstates'/><store xmlns='urn:xmpp:hints'/>",
        "<body>hi</body><active xmlns='http://jabber.org/protocol/chatstates'/>",
    ],
)
async def test_stored_without_body_or_with_chat_state(server: Server, payload: str) -> None:
    alice = await sender_and_absent_bob(server)
    await alice.send(f"<message to='bob@localhost' type='chat' id='x'>{payload}</message>")
    assert alice.take() == []
    assert await stored(server) == 1


# Order against live messages -------------------------------------------------------------------


@pytest.fixture
async def with_presence(tmp_path: Path) -> AsyncIterator[Server]:
    """Every default module: initial presence goes through the presence module."""
    async with running(tmp_path, modules={"e2e": {"policy": "optional"}}) as srv:
        yield srv


async def test_message_routed_while_stored_ones_go_out_comes_after_them(with_presence: Server) -> None:
    server = with_presence
    alice = await sender_and_absent_bob(server)
    for i in range(3):
        await alice.send(chat("bob@localhost", f"stored {i}", id=f"s{i}"))

    async def live(session: Session) -> None:
        # Bob is available now, and the stored messages have not gone out yet.
        if session.jid.local == "bob":
            await alice.send(chat("bob@localhost", "live", id="live"))

    server.hooks.add("presence-initial", live, priority=100)
    bob = await connect(server, "bob@localhost/laptop")
    await bob.send("<presence/>")
    got = [body(el) for el in bob.take() if el.tag == MESSAGE]
    assert got == ["stored 0", "stored 1", "stored 2", "live"]
    assert await stored(server) == 0


async def test_what_follows_a_held_message_waits_behind_it_whatever_it_is(with_presence: Server) -> None:
    """While the stored messages go out, a live message is held behind them; anything sent to the
    session after it waits behind it too (here an IQ, as the end of an archive query follows its
    results), or it would overtake it and the client would see the end of a query before the
    results it closes."""
    server = with_presence
    alice = await sender_and_absent_bob(server)
    await alice.send(chat("bob@localhost", "stored", id="s0"))

    async def live(session: Session) -> None:
        if session.jid.local == "bob":
            await alice.send(chat("bob@localhost", "live", id="live"))
            await alice.send(f"<iq type='get' id='after' to='{session.jid}'><ping xmlns='urn:xmpp:ping'/></iq>")

    server.hooks.add("presence-initial", live, priority=100)
    bob = await connect(server, "bob@localhost/laptop")
    await bob.send("<presence/>")
    got = [body(el) if el.tag == MESSAGE else el.get("id") for el in bob.take() if el.tag in (MESSAGE, IQ)]
    assert got == ["stored", "live", "after"]


async def test_message_stored_as_its_recipient_comes_online_still_reaches_it(with_presence: Server) -> None:
    """Routed offline while Bob had no available resource, but stored only after his delivery
    was over: it must not wait in storage for his next login."""
    server = with_presence
    alice = await sender_and_absent_bob(server)
    bob = await connect(server, "bob@localhost/laptop")
    await stored_late(server, alice, bob, "<presence/>")


async def stored_late(server: Server, alice: Client, bob: Client, meanwhile: str) -> None:
    """Alice's message to Bob is routed offline, and Bob sends ``meanwhile`` before it is
    stored; once stored, it reaches Bob and leaves storage."""
    entered, go = asyncio.Event(), asyncio.Event()

    async def slow(stanza: Stanza) -> None:
        entered.set()
        await go.wait()

    server.hooks.add("message/offline", slow, priority=200)
    sending = asyncio.ensure_future(alice.send(chat("bob@localhost", "late", id="late")))
    async with asyncio.timeout(10):
        await entered.wait()
    await bob.send(meanwhile)
    assert [el for el in bob.take() if el.tag == MESSAGE] == []
    go.set()
    await sending
    (late,) = [el for el in await bob.expect() if el.tag == MESSAGE]
    assert body(late) == "late"
    assert await stored(server) == 0


async def test_stored_messages_follow_a_priority_raised_from_negative(with_presence: Server) -> None:
    """XEP-0160 §2: a message stored while the only resource had a negative priority (RFC 6121
    §8.5.2.1.1) reaches it once it sends non-negative presence, not only at its next login."""
    server = with_presence
    alice = await sender_and_absent_bob(server)
    bob = await connect(server, "bob@localhost/laptop")
    await bob.send("<presence><priority>-1</priority></presence>")
    await alice.send(chat("bob@localhost", "stored", id="s0"))
    assert [el for el in bob.take() if el.tag == MESSAGE] == []
    await bob.send("<presence><priority>1</priority></presence>")
    assert [body(el) for el in bob.take() if el.tag == MESSAGE] == ["stored"]
    assert await stored(server) == 0
    await alice.send(chat("bob@localhost", "live", id="l0"))
    await bob.send("<presence><priority>2</priority></presence>")
    assert [body(el) for el in bob.take() if el.tag == MESSAGE] == ["live"]


async def test_message_stored_as_its_recipient_raises_its_priority_still_reaches_it(
    with_presence: Server,
) -> None:
    """Routed offline while Bob's priority was negative, but stored only after the delivery that
    raising it brought: it must not wait in storage for his next login."""
    server = with_presence
    alice = await sender_and_absent_bob(server)
    bob = await connect(server, "bob@localhost/laptop")
    await bob.send("<presence><priority>-1</priority></presence>")
    await stored_late(server, alice, bob, "<presence><priority>0</priority></presence>")


async def test_what_a_session_gave_back_reaches_a_resource_online_meanwhile(with_presence: Server) -> None:
    """Bob's phone got the stored message and ended without acknowledging it, so stream management
    gave it back to storage (XEP-0198 §4); his laptop, online since, gets it then, not at its next
    login."""
    server = with_presence
    alice = await sender_and_absent_bob(server)
    await alice.send(chat("bob@localhost", "stored", id="s0"))
    phone = await connect(server, "bob@localhost/phone")
    await phone.send(f"<enable xmlns='{sm.NS}'/>")
    await phone.send("<presence/>")
    assert [body(el) for el in phone.take() if el.tag == MESSAGE] == ["stored"]
    laptop = await connect(server, "bob@localhost/laptop")
    await laptop.send("<presence/>")
    assert [el for el in laptop.take() if el.tag == MESSAGE] == []
    await phone.close()
    got: list[Element] = []
    while not got:
        got = [el for el in await laptop.expect() if el.tag == MESSAGE]
    assert [body(el) for el in got] == ["stored"]
    assert await stored(server) == 0


# Configuration and discovery ------------------------------------------------------------------


async def test_domain_announces_msgoffline(server: Server) -> None:
    alice = await login(server, "alice@localhost/phone")
    await alice.send(f"<iq type='get' id='d1' to='localhost'><query xmlns='{ns.DISCO_INFO}'/></iq>")
    (reply,) = alice.take()
    features = {f.get("var") for f in reply.iter(f"{{{ns.DISCO_INFO}}}feature")}
    assert "msgoffline" in features


@pytest.mark.parametrize("value", [0, -3])
async def test_quota_must_be_positive(tmp_path: Path, value: int) -> None:
    with pytest.raises(ConfigError) as raised:
        async with running(tmp_path, modules={**ROUTING_ONLY, "offline": {"max_messages": value}}):
            pass
    assert raised.value.key == "modules.offline.max_messages"

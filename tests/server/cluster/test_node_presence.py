"""Presence, IQs, carbons, groups and CSI across nodes: two or three servers in one process, on the
in-process hub and on Redis, with every module loaded, sharing one PostgreSQL schema."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any
from xml.etree.ElementTree import Element

import pytest

from schnack.server.app import Server
from schnack.server.cluster import LocalBus, RedisBus
from schnack.server.cluster.local import LocalHub
from schnack.server.hooks import HANDLED, Handled
from schnack.server.modules.csi import ClientStateIndication, Saved
from schnack.server.modules.directed import Directed
from schnack.server.sessions import Session
from schnack.server.storage import RosterItem
from schnack.xmpp import ns
from schnack.xmpp.jid import JID
from schnack.xmpp.stanza import Stanza
from schnack.xmpp.xml import serialize

from ...client.proxy import Proxy
from ...conftest import require_service
from ...harness import Client, make_config
from ..modules.contacts import presence
from ..modules.groups import ADMIN, MESSAGE, PRESENCE, ROOM, create, join_xml, set_affiliation, statuses
from ..modules.messaging import body, chat, login
from ..storage.conftest import postgres_schema
from .conftest import Cluster, eventually, redis_available
from .test_node_upload import cut_off, one_cut_off

IQ = f"{{{ns.CLIENT}}}iq"
CARBONS = "urn:xmpp:carbons:2"
INACTIVE = "<inactive xmlns='urn:xmpp:csi:0'/>"
ACTIVE = "<active xmlns='urn:xmpp:csi:0'/>"


@pytest.fixture(params=["local", "redis"])
def backend(request: pytest.FixtureRequest) -> str:
    """Every test runs on the in-process hub and on Redis."""
    return str(request.param)


@contextlib.asynccontextmanager
async def nodes(tmp_path: Path, backend: str, count: int = 2, node_ttl: float = 10.0, *, s2s: bool = False,
                modules: dict[str, Any] | None = None) -> AsyncIterator[list[Server]]:
    """``count`` started servers; ``node_ttl`` long enough that a busy machine declares none dead,
    short for the tests that stop one; with ``s2s``, federation is on; ``modules`` sets modules' options."""
    cluster = Cluster(backend)
    if backend == "redis":
        reason = await redis_available(cluster.url)
        require_service(reason is None, f"Redis not reachable at {cluster.url}: {reason}")
    hub = LocalHub()
    async with postgres_schema() as (storage_url, _, _):
        servers = [
            Server(make_config(tmp_path / name, storage={"url": storage_url}, modules={"disable": ["e2e"], **(modules or {})},
                               s2s={"enabled": s2s}), bus=(
                LocalBus(name, hub=hub, heartbeat_interval=0.2, node_ttl=node_ttl) if backend == "local" else
                RedisBus(cluster.url, name, prefix=cluster.prefix, heartbeat_interval=0.2, node_ttl=node_ttl)))
            for name in "abc"[:count]
        ]
        started: list[Server] = []
        try:
            for server in servers:
                await server.start(listen=False)
                started.append(server)
            yield servers
        finally:
            for server in reversed(started):
                await server.stop()
            await cluster.close()


async def until(client: Client, match: Callable[[Element], bool], timeout: float = 20.0) -> Element:
    """The first stanza the client gets that ``match`` accepts; what comes before is dropped."""
    async with asyncio.timeout(timeout):
        while True:
            for el in client.take():
                if match(el):
                    return el
            await asyncio.sleep(0.02)


def presence_from(jid: str, kind: str | None = None, show: str | None = None) -> Callable[[Element], bool]:
    return lambda el: (el.tag == PRESENCE and el.get("from") == jid and el.get("type") == kind
                       and (show is None or el.findtext(f"{{{ns.CLIENT}}}show") == show))


async def presence_from_each(client: Client, fulls: set[str], kind: str | None = None) -> None:
    """Wait until ``client`` got presence of type ``kind`` from each of ``fulls``, in any order."""
    waiting = set(fulls)
    async with asyncio.timeout(20):
        while waiting:
            waiting -= {el.get("from") or "" for el in client.take() if el.tag == PRESENCE and el.get("type") == kind}
            await asyncio.sleep(0.02)


async def friends(a: Client, b: Client) -> None:
    """Mutual subscription between the two accounts (state Both), whichever nodes they are on."""
    a_bare, b_bare = a.jid.partition("/")[0], b.jid.partition("/")[0]
    await a.send(presence("subscribe", b_bare))
    await until(b, lambda el: el.get("type") == "subscribe")
    await b.send(presence("subscribed", a_bare))
    await b.send(presence("subscribe", a_bare))
    await until(a, lambda el: el.get("type") == "subscribe")
    await a.send(presence("subscribed", b_bare))
    a.take()
    b.take()


async def online(server: Server, jid: str, inner: str = "") -> Client:
    client = await login(server, jid)
    await client.send(f"<iq type='get' id='roster'><query xmlns='{ns.ROSTER}'/></iq>")
    await client.send(presence(inner=inner))
    client.take()
    return client


async def saved_of(csi: ClientStateIndication, session: Session) -> Saved:
    """What client state indication dropped for ``session`` so far."""
    return csi.saved(session)


async def test_presence_subscription_probe_and_broadcast_cross_nodes(tmp_path: Path, backend: str) -> None:
    async with nodes(tmp_path, backend) as (a, b):
        alice = await online(a, "alice@localhost/phone")
        bob = await online(b, "bob@localhost/desk")
        await friends(alice, bob)
        # §4.4: a later presence is broadcast to the contact on the other node.
        await alice.send(presence(inner="<show>away</show>"))
        await until(bob, presence_from("alice@localhost/phone", show="away"))

        # §4.3: a new resource's probe is answered with the presence of a contact on another node.
        laptop = await login(a, "alice@localhost/laptop")
        await laptop.send(presence())
        got = await until(laptop, presence_from("bob@localhost/desk"))
        assert got.get("to") == "alice@localhost/laptop"

        # §4.5: unavailable presence reaches the contact on the other node.
        await bob.send(presence("unavailable"))
        await until(alice, presence_from("bob@localhost/desk", "unavailable"))
        await until(laptop, presence_from("bob@localhost/desk", "unavailable"))


async def test_a_blocked_resource_misses_broadcasts_that_its_siblings_get(tmp_path: Path, backend: str) -> None:
    """XEP-0191 §3.3: a full JID in the blocklist concerns that resource alone, on any node."""
    async with nodes(tmp_path, backend) as (a, b):
        alice = await online(a, "alice@localhost/phone")
        laptop = await online(a, "bob@localhost/laptop")
        desk = await online(b, "bob@localhost/desk")
        await friends(alice, laptop)
        item = "<item jid='bob@localhost/desk'/>"
        await alice.send(f"<iq type='set' id='b1'><block xmlns='urn:xmpp:blocking'>{item}</block></iq>")
        await alice.send(presence(inner="<show>dnd</show>"))
        await until(laptop, presence_from("alice@localhost/phone", show="dnd"))
        # Unblocked, the desk is shown her presence, and then gets her next broadcast; after the
        # unavailable presence of the block, nothing before them.
        await alice.send(f"<iq type='set' id='u1'><unblock xmlns='urn:xmpp:blocking'>{item}</unblock></iq>")
        await alice.send(presence(inner="<show>away</show>"))
        seen: list[tuple[str | None, str | None, str | None]] = []

        def record(el: Element) -> bool:
            if el.tag == PRESENCE and el.get("from") == "alice@localhost/phone":
                seen.append((el.get("type"), el.findtext(f"{{{ns.CLIENT}}}show"), el.get("to")))
            return el.findtext(f"{{{ns.CLIENT}}}show") == "away"

        await until(desk, record)
        assert seen[-3:] == [
            ("unavailable", None, "bob@localhost/desk"),
            (None, "dnd", "bob@localhost/desk"),
            (None, "away", "bob@localhost"),
        ]
        assert [kind for kind in seen if kind[1] == "dnd"] == [(None, "dnd", "bob@localhost/desk")]


async def test_block_and_unblock_tell_the_contact_of_the_resources_on_every_node(tmp_path: Path, backend: str) -> None:
    """XEP-0191 §3.3, §3.4: the blocked contact sees every resource of the user go, wherever it
    is connected, and comes back; the resources on other nodes see the contact again too."""
    async with nodes(tmp_path, backend) as (a, b):
        phone = await online(a, "alice@localhost/phone")
        desk = await online(b, "alice@localhost/desk")
        bob = await online(a, "bob@localhost/laptop")
        await friends(phone, bob)
        await until(desk, presence_from("bob@localhost/laptop"))
        await phone.send("<iq type='set' id='b1'><block xmlns='urn:xmpp:blocking'><item jid='bob@localhost'/></block></iq>")
        await presence_from_each(bob, {"alice@localhost/phone", "alice@localhost/desk"}, "unavailable")
        await phone.send("<iq type='set' id='u1'><unblock xmlns='urn:xmpp:blocking'><item jid='bob@localhost'/></unblock></iq>")
        await presence_from_each(bob, {"alice@localhost/phone", "alice@localhost/desk"})
        # The desk probes bob again: it gets his presence, which it missed while he was blocked.
        await until(desk, presence_from("bob@localhost/laptop"))


async def test_a_block_withdraws_directed_presence_on_every_node(tmp_path: Path, backend: str) -> None:
    """XEP-0191 §3.3, RFC 6121 §4.6: the user's resource on another node sent mallory directed
    presence; the block made through this node withdraws it there too."""
    async with nodes(tmp_path, backend) as (a, b):
        phone = await online(a, "alice@localhost/phone")
        desk = await online(b, "alice@localhost/desk")
        mallory = await online(a, "mallory@localhost/pc")
        await desk.send(presence(to="mallory@localhost"))
        await until(mallory, presence_from("alice@localhost/desk"))
        await phone.send("<iq type='set' id='b1'><block xmlns='urn:xmpp:blocking'><item jid='mallory@localhost'/>"
                         "</block></iq>")
        await until(mallory, presence_from("alice@localhost/desk", "unavailable"))
        # Forgotten there, so that the desk going offline tells mallory nothing more.
        session = b.sessions.get(JID.parse("alice@localhost/desk"))
        assert session is not None and session.slot(Directed).to == frozenset()


async def test_a_block_made_through_one_node_holds_on_the_others(tmp_path: Path, backend: str) -> None:
    """XEP-0191 §3.3 in a cluster: the node that routes mallory's messages had read alice's
    blocklist before she blocked him through another node; it must not go on with that copy."""
    async with nodes(tmp_path, backend) as (a, b):
        alice = await online(a, "alice@localhost/phone")
        mallory = await online(b, "mallory@localhost/pc")
        await mallory.send("<message to='alice@localhost/phone' type='chat' id='m1'><body>hi</body></message>")
        await until(alice, lambda el: el.get("id") == "m1")
        await alice.send("<iq type='set' id='b1'><block xmlns='urn:xmpp:blocking'><item jid='mallory@localhost'/>"
                         "</block></iq>")
        # Node b hears of the change a moment later: its next messages meet the new list.
        sent = 0

        async def refused() -> bool:
            nonlocal sent
            sent += 1
            await mallory.send(f"<message to='alice@localhost/phone' type='chat' id='m{sent + 1}'><body>hi</body>"
                               "</message>")
            return any(el.get("type") == "error" for el in mallory.take())

        await eventually(refused, bool, timeout=5.0)
        await mallory.send("<message to='alice@localhost/phone' type='chat' id='last'><body>hi</body></message>")
        (error,) = mallory.take()
        assert error.get("type") == "error"
        assert "last" not in [el.get("id") for el in alice.take()]


async def test_block_pushes_reach_interested_resources_on_other_nodes(tmp_path: Path, backend: str) -> None:
    """XEP-0191 §3.3, §3.4: every resource that asked for the list hears of a change, wherever it is."""
    async with nodes(tmp_path, backend) as (a, b):
        phone = await online(a, "alice@localhost/phone")
        laptop = await online(b, "alice@localhost/laptop")
        await laptop.send("<iq type='get' id='l1'><blocklist xmlns='urn:xmpp:blocking'/></iq>")
        laptop.take()

        def pushed(command: str) -> Callable[[Element], bool]:
            return lambda el: el.get("type") == "set" and el.find(f"{{urn:xmpp:blocking}}{command}") is not None

        await phone.send("<iq type='set' id='b1'><block xmlns='urn:xmpp:blocking'><item jid='mallory@localhost'/>"
                         "<item jid='eve@localhost'/></block></iq>")
        block = await until(laptop, pushed("block"))
        assert sorted(i.get("jid", "") for i in block.iter("{urn:xmpp:blocking}item")) == [
            "eve@localhost", "mallory@localhost"]
        await phone.send("<iq type='set' id='u1'><unblock xmlns='urn:xmpp:blocking'><item jid='eve@localhost'/>"
                         "</unblock></iq>")
        unblock = await until(laptop, pushed("unblock"))
        assert [i.get("jid") for i in unblock.iter("{urn:xmpp:blocking}item")] == ["eve@localhost"]


async def test_a_new_resource_sees_its_siblings_on_other_nodes(tmp_path: Path, backend: str) -> None:
    async with nodes(tmp_path, backend) as (a, b):
        phone = await online(a, "carol@localhost/phone", "<status>on the train</status>")
        desk = await login(b, "carol@localhost/desk")
        await desk.send(presence())
        got = await until(desk, presence_from("carol@localhost/phone"))
        assert got.findtext(f"{{{ns.CLIENT}}}status") == "on the train"
        # §4.2.2: and the sibling hears about the new resource.
        await until(phone, presence_from("carol@localhost/desk"))


async def test_contacts_hear_unavailable_when_a_node_dies(tmp_path: Path, backend: str) -> None:
    async with nodes(tmp_path, backend, node_ttl=2.0) as (a, b):
        alice = await online(a, "alice@localhost/phone")
        bob = await online(b, "bob@localhost/desk")
        await friends(alice, bob)
        await b.cluster.bus.stop(leave=False)  # b stops heartbeating, as a crashed node would
        got = await until(alice, presence_from("bob@localhost/desk", "unavailable"), timeout=20)
        assert got.get("to") in ("alice@localhost", "alice@localhost/phone")


async def test_contacts_at_other_servers_hear_unavailable_when_a_node_dies(tmp_path: Path, backend: str) -> None:
    """RFC 6121 §4.5.2 with federation on: the node that reaps a dead one tells contacts at
    other servers too."""
    async with nodes(tmp_path, backend, node_ttl=2.0, s2s=True) as (a, b):
        await a.storage.roster.set_item("localhost", "bob", RosterItem("romeo@remote.example", subscription="both"))
        sent: list[Element] = []

        async def capture(stanza: Stanza, _origin: Session | None) -> Handled:
            sent.append(stanza.el)
            return HANDLED

        for server in (a, b):
            server.hooks.add("presence/remote", capture, -999)
        await online(b, "bob@localhost/desk")
        sent.clear()
        await b.cluster.bus.stop(leave=False)  # b stops heartbeating, as a crashed node would

        async def told() -> list[tuple[str | None, str | None, str | None]]:
            return [(el.get("type"), el.get("from"), el.get("to")) for el in sent]

        assert await eventually(told, bool, timeout=20) == [("unavailable", "bob@localhost/desk", "romeo@remote.example")]


async def test_a_bare_message_goes_to_the_highest_priority_resource_cluster_wide(tmp_path: Path, backend: str) -> None:
    async with nodes(tmp_path, backend) as (a, b):
        alice = await online(a, "alice@localhost/phone")
        low = await online(a, "bob@localhost/phone", "<priority>1</priority>")
        high = await online(b, "bob@localhost/desk", "<priority>5</priority>")
        await alice.send(chat("bob@localhost", "to the desk"))
        got = await until(high, lambda el: el.tag == MESSAGE)
        assert body(got) == "to the desk"
        assert [el for el in low.take() if el.tag == MESSAGE] == []
        # Equal priorities on both nodes: both get it (§8.5.2.1.1), and nothing is stored offline.
        await low.send(presence(inner="<priority>5</priority>"))
        await alice.send(chat("bob@localhost", "both", id="m2"))
        assert body(await until(high, lambda el: el.tag == MESSAGE)) == "both"
        assert body(await until(low, lambda el: el.tag == MESSAGE)) == "both"
        assert await a.storage.archive.count("localhost", "bob", "offline") == 0


async def test_a_message_stored_on_another_node_as_a_priority_rises_reaches_the_raised_resource(
        tmp_path: Path, backend: str) -> None:
    """XEP-0160 §2: bob's phone (node a) raises its priority from -1 to 0 while a message for him,
    routed when none of his resources took messages to the bare JID, is on its way to his desk's
    node b, which stores it offline only after the phone's delivery of what waited is over. The
    phone must get it now, not at its next login."""
    async with nodes(tmp_path, backend) as (a, b):
        alice = await online(a, "alice@localhost/phone")
        phone = await online(a, "bob@localhost/phone", "<priority>-1</priority>")
        await online(b, "bob@localhost/desk", "<priority>-1</priority>")
        arrived, release = asyncio.Event(), asyncio.Event()

        async def held(_stanza: Stanza) -> None:
            arrived.set()
            await release.wait()

        b.hooks.add("message/offline", held, 1000)
        await alice.send(chat("bob@localhost", "as the phone comes back"))
        await asyncio.wait_for(arrived.wait(), 20)
        await phone.send(presence(inner="<priority>0</priority>"))
        # Its own presence comes back once the delivery that the raised priority brings is over.
        await until(phone, presence_from("bob@localhost/phone"))
        release.set()
        got = await until(phone, lambda el: el.tag == MESSAGE, timeout=10)
        assert body(got) == "as the phone comes back"
        assert await eventually(lambda: a.storage.archive.count("localhost", "bob", "offline"),
                                lambda n: n == 0) == 0


async def test_a_chat_for_a_resource_on_a_dead_node_reaches_the_accounts_resource_on_a_live_one(
        tmp_path: Path, backend: str) -> None:
    """RFC 6121 §8.5.3.2.1: bob's desk is gone with its node (not yet declared dead, the directory
    still names it), so a chat message for it goes on as one to his bare JID, to his phone on a
    third node, which is online, and not to offline storage until his next login."""
    async with nodes(tmp_path, backend, count=3) as (a, b, c):
        alice = await online(a, "alice@localhost/phone")
        await online(b, "bob@localhost/desk", "<priority>5</priority>")
        phone = await online(c, "bob@localhost/phone")
        await b.cluster.bus.stop(leave=False)  # b stops listening, as a crashed node would
        await alice.send(chat("bob@localhost/desk", "are you there?"))
        assert body(await until(phone, lambda el: el.tag == MESSAGE)) == "are you there?"
        assert await a.storage.archive.count("localhost", "bob", "offline") == 0


async def test_an_iq_between_full_jids_on_two_nodes_is_answered(tmp_path: Path, backend: str) -> None:
    async with nodes(tmp_path, backend) as (a, b):
        caller = await online(a, "alice@localhost/phone")
        callee = await online(b, "bob@localhost/desk")
        jingle = ("<iq type='set' id='j1' to='bob@localhost/desk'>"
                  "<jingle xmlns='urn:xmpp:jingle:1' action='session-initiate' sid='s1'/></iq>")
        await caller.send(jingle)
        got = await until(callee, lambda el: el.tag == IQ)
        assert (got.get("type"), got.get("from"), got.get("id")) == ("set", "alice@localhost/phone", "j1")
        await callee.send("<iq type='result' id='j1' to='alice@localhost/phone'/>")
        answer = await until(caller, lambda el: el.tag == IQ)
        assert (answer.get("type"), answer.get("from")) == ("result", "bob@localhost/desk")

        # A resource that went away in between: the caller gets service-unavailable back.
        await callee.close()
        await caller.send("<iq type='get' id='p1' to='bob@localhost/desk'><ping xmlns='urn:xmpp:ping'/></iq>")
        answer = await until(caller, lambda el: el.tag == IQ)
        assert answer.get("type") == "error" and answer.get("id") == "p1"


async def test_carbons_reach_resources_on_other_nodes(tmp_path: Path, backend: str) -> None:
    async with nodes(tmp_path, backend) as (a, b):
        alice = await online(a, "alice@localhost/phone")
        bob_phone = await online(a, "bob@localhost/phone")
        bob_desk = await login(b, "bob@localhost/desk")
        await bob_desk.send(f"<iq type='set' id='c1'><enable xmlns='{CARBONS}'/></iq>")
        await bob_desk.send(presence(inner="<priority>-1</priority>"))
        bob_desk.take()
        # XEP-0280 §7: received, copied to the enabled resource on the other node.
        await alice.send(chat("bob@localhost/phone", "for the phone"))
        assert body(await until(bob_phone, lambda el: el.tag == MESSAGE)) == "for the phone"
        carbon = await until(bob_desk, lambda el: el.tag == MESSAGE)
        received = carbon.find(f"{{{CARBONS}}}received")
        assert received is not None, serialize(carbon)
        assert carbon.get("from") == "bob@localhost"
        # §8: sent, copied the same way.
        await bob_phone.send(chat("alice@localhost", "from the phone", id="s1"))
        carbon = await until(bob_desk, lambda el: el.tag == MESSAGE)
        assert carbon.find(f"{{{CARBONS}}}sent") is not None, serialize(carbon)
        # And the other way round: a message delivered on the other node is copied to an enabled
        # resource here.
        await bob_phone.send(f"<iq type='set' id='c2'><enable xmlns='{CARBONS}'/></iq>")
        bob_phone.take()
        await alice.send(chat("bob@localhost/desk", "for the desk", id="m3"))
        assert body(await until(bob_desk, lambda el: el.tag == MESSAGE)) == "for the desk"
        carbon = await until(bob_phone, lambda el: el.tag == MESSAGE)
        assert carbon.find(f"{{{CARBONS}}}received") is not None, serialize(carbon)


async def test_an_error_answering_a_copied_message_reaches_resources_on_other_nodes(tmp_path: Path, backend: str) -> None:
    """XEP-0280 §6.1: the other devices learn that a message they saw go out failed, wherever they are."""
    async with nodes(tmp_path, backend) as (a, b):
        phone = await online(a, "alice@localhost/phone")
        desk = await online(b, "alice@localhost/desk")
        await desk.send(f"<iq type='set' id='c1'><enable xmlns='{CARBONS}'/></iq>")
        await until(desk, lambda el: el.tag == IQ and el.get("id") == "c1")
        await phone.send(chat("nobody@localhost", "into the void", id="lost"))
        error = await until(phone, lambda el: el.tag == MESSAGE)
        assert (error.get("type"), error.get("id")) == ("error", "lost")
        # The sent copy crosses the bus first, the error's after it: both may arrive at once.
        got: list[Element] = []
        async with asyncio.timeout(20):
            while len(got) < 2:
                got += [el for el in desk.take() if el.tag == MESSAGE]
                await asyncio.sleep(0.02)
        sent, carbon = got
        assert sent.find(f"{{{CARBONS}}}sent") is not None, serialize(sent)
        inner = carbon.find(f"{{{CARBONS}}}received/{{urn:xmpp:forward:0}}forwarded/{{{ns.CLIENT}}}message")
        assert inner is not None, serialize(carbon)
        assert (inner.get("type"), inner.get("id"), inner.get("from")) == ("error", "lost", "nobody@localhost")
        assert (carbon.get("from"), carbon.get("to")) == ("alice@localhost", "alice@localhost/desk")

        # The phone's node has no enabled resource, yet remembers the message while the phone is
        # there: a change of the phone's presence in between does not make it forget.
        bob = await online(a, "bob@localhost/phone")
        await phone.send(chat("bob@localhost/phone", "are you there?", id="later"))
        await until(desk, lambda el: el.tag == MESSAGE and el.find(f"{{{CARBONS}}}sent") is not None)
        await phone.send(presence(inner="<show>away</show>"))
        await bob.send("<message type='error' id='later' to='alice@localhost/phone'><error type='cancel'>"
                       f"<item-not-found xmlns='{ns.STANZA_ERRORS}'/></error></message>")
        carbon = await until(desk, lambda el: el.tag == MESSAGE)
        inner = carbon.find(f"{{{CARBONS}}}received/{{urn:xmpp:forward:0}}forwarded/{{{ns.CLIENT}}}message")
        assert inner is not None, serialize(carbon)
        assert (inner.get("type"), inner.get("id"), inner.get("from")) == ("error", "later", "bob@localhost/phone")


def carbon_of(direction: str, id_: str, kind: str = "chat") -> Callable[[Element], bool]:
    """A carbon (XEP-0280) in ``direction`` of the message of type ``kind`` with that id."""
    path = (f"{{{CARBONS}}}{direction}/{{urn:xmpp:forward:0}}forwarded/"
            f"{{{ns.CLIENT}}}message[@id='{id_}'][@type='{kind}']")
    return lambda el: el.tag == MESSAGE and el.find(path) is not None


async def group_on_node_a(a: Server, b: Server, joined: Sequence[str], apart: Sequence[str]) -> list[Client]:
    """alice's phone on node a creates the group under the nick alice, bob's phone on node a joins
    it as a member; alice's resources ``joined`` on node b join it under the nick alice, those
    ``apart`` on node b do not; every resource of alice's enables carbons. Returns the phone, bob's
    phone, then alice's resources on node b in that order."""
    phone = await online(a, "alice@localhost/phone")
    await create(phone, nick="alice")
    assert (await set_affiliation(phone, "bob@localhost", "member")).get("type") == "result"
    bob = await online(a, "bob@localhost/phone")
    on_b = [await online(b, f"alice@localhost/{resource}") for resource in (*joined, *apart)]
    for client, nick in ((bob, "bob"), *((each, "alice") for each in on_b[:len(joined)])):
        await client.send(join_xml(ROOM, nick, "<history maxstanzas='0'/>"))
        await until(client, presence_from(f"{ROOM}/{nick}"))
    for client in (phone, *on_b):
        await client.send(f"<iq type='set' id='c1'><enable xmlns='{CARBONS}'/></iq>")
        await until(client, lambda el: el.tag == IQ and el.get("id") == "c1")
    return [phone, bob, *on_b]


async def test_private_messages_in_a_group_reach_the_resources_sharing_the_nick_on_other_nodes(
    tmp_path: Path, backend: str
) -> None:
    """XEP-0280 §6.1: the room (on node a) names the sender's resources joined under its nick,
    wherever they are; a resource of the account that is not in the room gets no copy."""
    async with nodes(tmp_path, backend) as (a, b):
        phone, bob, desk, tablet = await group_on_node_a(a, b, ["desk"], ["tablet"])
        # Sent here, the room here: the desk on the other node gets the copy.
        await phone.send(f"<message to='{ROOM}/bob' type='chat' id='pm1'><body>from the phone</body></message>")
        await until(desk, carbon_of("sent", "pm1"))
        # Sent on the other node, to the room here: the phone gets the copy.
        await desk.send(f"<message to='{ROOM}/bob' type='chat' id='pm2'><body>from the desk</body></message>")
        await until(phone, carbon_of("sent", "pm2"))
        # The tablet, not in the room, got neither: the first message it gets is the next one for it.
        await bob.send(chat("alice@localhost/tablet", "after the private messages", id="after"))
        assert (await until(tablet, lambda el: el.tag == MESSAGE)).get("id") == "after"


async def test_an_error_answering_a_private_message_to_a_group_on_another_node_reaches_the_resources_sharing_the_nick(
    tmp_path: Path, backend: str
) -> None:
    """XEP-0280 §6.1: the group (on node a) passes back the recipient's error to a sender on node
    b; the sender's other resources joined under its nick, on either node, see it fail too."""
    async with nodes(tmp_path, backend) as (a, b):
        phone, bob, desk, laptop, tablet = await group_on_node_a(a, b, ["desk", "laptop"], ["tablet"])
        await desk.send(f"<message to='{ROOM}/bob' type='chat' id='pm3'><body>from the desk</body></message>")
        for client in (phone, laptop):
            await until(client, carbon_of("sent", "pm3"))
        await until(bob, lambda el: el.tag == MESSAGE and el.get("id") == "pm3")
        await bob.send(f"<message type='error' id='pm3' to='{ROOM}/alice'><error type='cancel'>"
                       f"<item-not-found xmlns='{ns.STANZA_ERRORS}'/></error></message>")
        error = await until(desk, lambda el: el.tag == MESSAGE)
        assert (error.get("type"), error.get("id"), error.get("from")) == ("error", "pm3", f"{ROOM}/bob")
        for client in (phone, laptop):
            carbon = await until(client, carbon_of("received", "pm3", "error"))
            assert (carbon.get("from"), carbon.get("to")) == ("alice@localhost", client.jid)
        # The tablet, not in the group, got neither: the first message it gets is the next one for
        # it; nor did the desk get a copy of the error it got itself: the next it gets is the copy.
        await bob.send(chat("alice@localhost/tablet", "after the error", id="after"))
        assert (await until(tablet, lambda el: el.tag == MESSAGE)).get("id") == "after"
        assert carbon_of("received", "after")(await until(desk, lambda el: el.tag == MESSAGE))


async def test_a_group_with_occupants_on_two_nodes(tmp_path: Path, backend: str) -> None:
    async with nodes(tmp_path, backend, 3, node_ttl=2.0) as (a, b, c):
        owner = await online(a, "alice@localhost/phone")
        await create(owner, nick="alice")
        assert (await set_affiliation(owner, "bob@localhost", "member")).get("type") == "result"
        bob = await online(b, "bob@localhost/desk")
        await bob.send(join_xml(ROOM, "bob", "<history maxstanzas='0'/>"))
        own = await until(bob, lambda el: el.tag == PRESENCE and el.get("from") == f"{ROOM}/bob")
        assert 110 in statuses(own)
        await until(owner, lambda el: el.tag == PRESENCE and el.get("from") == f"{ROOM}/bob")
        await bob.send(f"<message to='{ROOM}' type='groupchat' id='g1'><body>hallo</body></message>")
        for client in (owner, bob):
            got = await until(client, lambda el: el.tag == MESSAGE and el.get("id") == "g1")
            assert (got.get("type"), body(got), got.get("from")) == ("groupchat", "hallo", f"{ROOM}/bob")
        # The room lives on the node that claimed it; the others forward to it.
        assert await c.cluster.bus.claim(f"room:{ROOM}") == "a"
        # An IQ to the room from another node is answered by the room's node, and the answer comes back.
        await bob.send(f"<iq type='get' id='who' to='{ROOM}'><query xmlns='{ADMIN}'><item affiliation='member'/></query></iq>")
        answer = await until(bob, lambda el: el.tag == IQ and el.get("id") == "who")
        assert answer.get("type") == "result", serialize(answer)
        assert [i.get("jid") for i in answer.iter(f"{{{ADMIN}}}item")] == ["bob@localhost"]
        # A member whose node dies is removed from the room (§7.14) by its owner node.
        await b.cluster.bus.stop(leave=False)
        gone = await until(owner, lambda el: el.tag == PRESENCE and el.get("type") == "unavailable", timeout=20)
        assert gone.get("from") == f"{ROOM}/bob"


async def test_an_inactive_session_holds_presence_from_other_nodes(tmp_path: Path, backend: str) -> None:
    async with nodes(tmp_path, backend) as (a, b):
        alice = await online(a, "alice@localhost/phone")
        bob = await online(b, "bob@localhost/desk")
        await friends(alice, bob)
        # Everything alice's node sent bob's before is in once this presence is (one channel, in order).
        await alice.send(presence(inner="<status>ready</status>"))
        await until(bob, lambda el: el.tag == PRESENCE and el.findtext(f"{{{ns.CLIENT}}}status") == "ready")
        await bob.send(INACTIVE)
        await alice.send(presence(inner="<show>away</show>"))
        await alice.send(presence(inner="<show>dnd</show>"))
        csi = b.modules["csi"]
        assert isinstance(csi, ClientStateIndication)
        session = bob.stream.session
        assert session is not None
        # XEP-0352: the first update is superseded while held; nothing reached the client.
        saved = await eventually(lambda: saved_of(csi, session), lambda s: s.stanzas == 1)
        assert saved.stanzas == 1
        assert [el for el in bob.take() if el.tag == PRESENCE] == []
        await bob.send(ACTIVE)
        (got,) = [el for el in bob.take() if el.tag == PRESENCE]
        assert got.findtext(f"{{{ns.CLIENT}}}show") == "dnd"


async def test_messages_of_every_type_reach_a_full_jid_on_another_node(tmp_path: Path, backend: str) -> None:
    async with nodes(tmp_path, backend) as (a, b):
        alice = await online(a, "alice@localhost/phone")
        bob = await online(b, "bob@localhost/desk")
        for kind in ("chat", "normal", "headline", "groupchat", "error"):
            await alice.send(chat("bob@localhost/desk", kind, kind=kind, id=kind))
            got = await until(bob, lambda el: el.tag == MESSAGE)
            assert (got.get("id"), got.get("type"), body(got)) == (kind, kind, kind)


async def test_contacts_hear_again_of_the_sessions_of_a_node_back_after_it_was_declared_dead(
        tmp_path: Path, redis_proxy: Proxy) -> None:
    """RFC 6121 §4.5.2, §4.4.2: node a, cut off from Redis, is declared dead, and the node that
    reaped it tells bob that alice's phone is gone; the phone's session lived on, so once node a
    reaches Redis again (as another process), bob hears the phone's presence again."""
    async with one_cut_off(tmp_path, redis_proxy, {"disable": ["e2e"]}) as (a, b):
        alice = await online(a, "alice@localhost/phone", "<show>away</show>")
        bob = await online(b, "bob@localhost/desk")
        await friends(alice, bob)
        await cut_off(redis_proxy, a, b)
        await until(bob, presence_from("alice@localhost/phone", "unavailable"))
        redis_proxy.refusing = False
        await until(bob, presence_from("alice@localhost/phone", show="away"))

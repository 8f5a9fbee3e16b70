"""Two ``schnack serve`` processes in one cluster (one PostgreSQL schema, Redis), with slixmpp clients
on both: presence, probes and subscriptions across nodes, unavailable presence when a node is
killed, an IQ ping and a Jingle-like IQ between full JIDs on two nodes, message carbons, a bare JID
message to the highest-priority resource on the other node, a group with occupants on both, and
roster pushes and PEP notifications reaching resources on the other node."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import pytest
from slixmpp import JID, ClientXMPP
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from .slix import PASSWORD
from .test_cluster import cluster_configs, node_gone
from .test_messages import OMEMO
from .test_restart import Process, admin

# The two-node configuration fixture of test_cluster.py, used here by name.
__all__ = ["cluster_configs"]

JINGLE = "urn:xmpp:jingle:1"
CARBONS = "urn:xmpp:carbons:2"
MUC = "http://jabber.org/protocol/muc"
ROOM = "crew@groups.localhost"
NICK_EVENT = "http://jabber.org/protocol/nick"


class Device:
    """A slixmpp client that records every message and presence it gets and answers Jingle IQs."""

    def __init__(self, node: Process, jid: str) -> None:
        self.node = node
        self.xmpp = ClientXMPP(jid, PASSWORD)
        self.xmpp.ssl_context.check_hostname = False
        self.xmpp.ssl_context.verify_mode = ssl.CERT_NONE
        self.xmpp.register_plugin("xep_0199")
        self.stanzas: asyncio.Queue[Any] = asyncio.Queue()
        self.jingles: list[Any] = []
        self.started = asyncio.Event()
        self.xmpp.add_event_handler("session_start", lambda _: self.started.set())
        # Every message, also those without a body (slixmpp's "message" event wants one), e.g. carbons.
        self.xmpp.register_handler(Callback("all messages", MatchXPath("{jabber:client}message"),
                                            self.stanzas.put_nowait))
        self.xmpp.add_event_handler("presence", self.stanzas.put_nowait)
        self.xmpp.register_handler(Callback("jingle", MatchXPath(f"{{jabber:client}}iq/{{{JINGLE}}}jingle"),
                                            self._jingle))

    def _jingle(self, iq: Any) -> None:
        self.jingles.append(iq)
        iq.reply().send()

    async def start(self, priority: int | None = None) -> None:
        host, port = self.node.bound["c2s"][0]
        self.xmpp.connect(host, port)
        async with asyncio.timeout(30):
            await self.started.wait()
        self.xmpp.send_presence(ppriority=priority)
        await self.sync()

    async def sync(self) -> None:
        """Everything sent before has been routed once the server answers a ping."""
        await self.xmpp.plugin["xep_0199"].send_ping(JID("localhost"), timeout=30)

    async def until(self, match: Callable[[Any], bool], timeout: float = 30) -> Any:
        """The first message or presence ``match`` accepts; earlier ones are dropped."""
        async with asyncio.timeout(timeout):
            while True:
                stanza = await self.stanzas.get()
                if match(stanza):
                    return stanza

    def drain(self) -> list[Any]:
        """What arrived and was not looked at yet."""
        out = []
        while not self.stanzas.empty():
            out.append(self.stanzas.get_nowait())
        return out

    def chat(self, to: str, id: str) -> None:
        msg = self.xmpp.make_message(mto=to, mbody="OMEMO", mtype="chat")
        msg["id"] = id
        msg.xml.append(ET.fromstring(OMEMO))
        msg.send()

    async def stop(self) -> None:
        await self.xmpp.disconnect()


SHOWS = frozenset({"available", "away", "chat", "dnd", "xa"})


def presence_from(jid: str, kind: str = "available") -> Callable[[Any], bool]:
    """Presence from ``jid``; slixmpp reports an available presence's type as its show."""
    kinds = SHOWS if kind == "available" else {kind}
    return lambda s: s.name == "presence" and s["from"] == JID(jid) and s["type"] in kinds


def message(id: str) -> Callable[[Any], bool]:
    return lambda s: s.name == "message" and s["id"] == id


@pytest.fixture
async def two_nodes(cluster_configs: tuple[list[Path], str]) -> AsyncIterator[tuple[Process, Process, str]]:
    """Nodes a and b running, with the accounts alice and bob; their Redis key prefix."""
    configs, prefix = cluster_configs
    for user in ("alice", "bob"):
        admin(configs[0], "user", "add", "--password-stdin", f"{user}@localhost", stdin=f"{PASSWORD}\n")
    node_a, node_b = Process(configs[0]), Process(configs[1])
    try:
        node_a.start()
        node_b.start()
        yield node_a, node_b, prefix
    finally:
        node_a.stop()
        node_b.stop()


@pytest.fixture
async def devices() -> AsyncIterator[list[Device]]:
    """Clients to disconnect at the end."""
    made: list[Device] = []
    yield made
    for device in made:
        await device.stop()


async def online(devices: list[Device], node: Process, jid: str, priority: int | None = None) -> Device:
    device = Device(node, jid)
    devices.append(device)
    await device.start(priority)
    return device


async def test_presence_probes_and_a_killed_node(two_nodes: tuple[Process, Process, str],
                                                 devices: list[Device]) -> None:
    node_a, node_b, prefix = two_nodes
    alice = await online(devices, node_a, "alice@localhost/phone")
    bob = await online(devices, node_b, "bob@localhost/desk")
    # RFC 6121 §3.1: subscription requests and answers cross nodes (slixmpp approves and
    # subscribes back on its own), and each side then gets the other's presence.
    alice.xmpp.send_presence_subscription(pto="bob@localhost")
    await bob.until(presence_from("alice@localhost/phone"))
    await alice.until(presence_from("bob@localhost/desk"))

    # §4.4: a later presence reaches the contact on the other node.
    alice.xmpp.send_presence(pshow="away")
    await bob.until(lambda s: presence_from("alice@localhost/phone")(s) and s["show"] == "away")

    # §4.3: a new resource's probe is answered with the presence of the contact on the other node.
    laptop = await online(devices, node_a, "alice@localhost/laptop")
    await laptop.until(presence_from("bob@localhost/desk"))

    # §4.5: when bob's node dies, alice's resources hear that he is gone.
    node_b.kill()
    await node_gone(prefix, "b")
    await alice.until(presence_from("bob@localhost/desk", "unavailable"))
    await laptop.until(presence_from("bob@localhost/desk", "unavailable"))


async def test_iqs_carbons_and_priority_across_nodes(two_nodes: tuple[Process, Process, str],
                                                     devices: list[Device]) -> None:
    node_a, node_b, _ = two_nodes
    alice = await online(devices, node_a, "alice@localhost/phone")
    bob_phone = await online(devices, node_a, "bob@localhost/phone", priority=1)
    bob_desk = await online(devices, node_b, "bob@localhost/desk", priority=5)

    # RFC 6120 §8.2.3: an IQ ping to a full JID on the other node, and its result back.
    assert (await alice.xmpp.plugin["xep_0199"].send_ping(JID("bob@localhost/desk"), timeout=30)) is not None
    # XEP-0166: call signalling is IQs between full JIDs on two nodes.
    initiate = alice.xmpp.make_iq_set(ET.fromstring(f"<jingle xmlns='{JINGLE}' action='session-initiate' sid='s1'/>"),
                                      ito="bob@localhost/desk")
    answer = await initiate.send(timeout=30)
    assert answer["type"] == "result" and answer["from"] == JID("bob@localhost/desk")
    assert [iq["from"] for iq in bob_desk.jingles] == [JID("alice@localhost/phone")]

    # RFC 6121 §8.5.2.1.1: the highest priority resource is on the other node.
    alice.chat("bob@localhost", "prio")
    await bob_desk.until(message("prio"))
    await bob_phone.sync()
    assert not any(message("prio")(s) for s in bob_phone.drain())

    # XEP-0280: bob's phone enables carbons; a message delivered to the desk on node b is copied
    # to it on node a, and what the desk sends is copied too.
    await bob_phone.xmpp.make_iq_set(ET.fromstring(f"<enable xmlns='{CARBONS}'/>")).send(timeout=30)
    alice.chat("bob@localhost/desk", "to-desk")
    await bob_desk.until(message("to-desk"))
    carbon = await bob_phone.until(lambda s: s.name == "message" and s.xml.find(f"{{{CARBONS}}}received") is not None)
    assert carbon["from"] == JID("bob@localhost")
    bob_desk.chat("alice@localhost", "from-desk")
    await alice.until(message("from-desk"))
    sent = await bob_phone.until(lambda s: s.name == "message" and s.xml.find(f"{{{CARBONS}}}sent") is not None)
    assert sent.xml.find(".//{jabber:client}message[@id='from-desk']") is not None


async def test_a_group_with_occupants_on_two_nodes(two_nodes: tuple[Process, Process, str],
                                                   devices: list[Device]) -> None:
    node_a, node_b, _ = two_nodes
    alice = await online(devices, node_a, "alice@localhost/phone")
    bob = await online(devices, node_b, "bob@localhost/desk")
    # XEP-0045 §10.1: alice creates an instant group and makes bob a member.
    join = alice.xmpp.make_presence(pto=f"{ROOM}/alice")
    join.append(ET.fromstring(f"<x xmlns='{MUC}'><history maxstanzas='0'/></x>"))
    join.send()
    await alice.until(presence_from(f"{ROOM}/alice"))
    form = ET.fromstring(f"<query xmlns='{MUC}#owner'><x xmlns='jabber:x:data' type='submit'/></query>")
    await alice.xmpp.make_iq_set(form, ito=ROOM).send(timeout=30)
    member = ET.fromstring(f"<query xmlns='{MUC}#admin'><item jid='bob@localhost' affiliation='member'/></query>")
    await alice.xmpp.make_iq_set(member, ito=ROOM).send(timeout=30)

    # bob joins through node b; the room lives on node a.
    join = bob.xmpp.make_presence(pto=f"{ROOM}/bob")
    join.append(ET.fromstring(f"<x xmlns='{MUC}'><history maxstanzas='0'/></x>"))
    join.send()
    own = await bob.until(presence_from(f"{ROOM}/bob"))
    assert "110" in ET.tostring(own.xml, encoding="unicode")
    await alice.until(presence_from(f"{ROOM}/bob"))

    for sender, nick, id in ((bob, "bob", "g1"), (alice, "alice", "g2")):
        msg = sender.xmpp.make_message(mto=ROOM, mbody="hallo", mtype="groupchat")
        msg["id"] = id
        msg.xml.append(ET.fromstring(OMEMO))  # a private group takes encrypted messages only
        msg.send()
        for device in (alice, bob):
            got = await device.until(message(id))
            assert (got["from"], got["body"]) == (JID(f"{ROOM}/{nick}"), "hallo")

    # bob leaves from node b: alice sees it on node a.
    bob.xmpp.send_presence(pto=f"{ROOM}/bob", ptype="unavailable")
    await alice.until(presence_from(f"{ROOM}/bob", "unavailable"))


async def test_roster_pushes_and_pep_notifications_across_nodes(two_nodes: tuple[Process, Process, str],
                                                                 devices: list[Device]) -> None:
    node_a, node_b, _ = two_nodes
    alice = await online(devices, node_a, "alice@localhost/phone")
    desk = await online(devices, node_b, "alice@localhost/desk")
    bob = await online(devices, node_b, "bob@localhost/desk")
    pushed: asyncio.Queue[Any] = asyncio.Queue()
    desk.xmpp.add_event_handler("roster_update", pushed.put_nowait)
    for device in (alice, desk, bob):
        await device.xmpp.get_roster(timeout=30)  # RFC 6121 §2.1.6: now interested in pushes

    # A roster change made on node a is pushed to the interested resource on node b.
    update = alice.xmpp.update_roster(JID("carol@localhost"), name="Carol", timeout=30)
    assert update is not None
    await update
    async with asyncio.timeout(30):
        while "carol@localhost" not in desk.xmpp.client_roster:
            await pushed.get()
    assert desk.xmpp.client_roster["carol@localhost"]["name"] == "Carol"

    # XEP-0163: a contact on node b and the owner's own resource there get a PEP notification
    # of an item published on node a (without caps, every notification).
    alice.xmpp.send_presence_subscription(pto="bob@localhost")
    await alice.until(presence_from("bob@localhost/desk"))
    publish = ET.fromstring("<pubsub xmlns='http://jabber.org/protocol/pubsub'>"
                            "<publish node='http://jabber.org/protocol/nick'><item id='current'>"
                            "<nick xmlns='http://jabber.org/protocol/nick'>Alice</nick></item></publish></pubsub>")
    await alice.xmpp.make_iq_set(publish).send(timeout=30)
    for device in (bob, desk):
        event = await device.until(lambda s: s.name == "message" and s.xml.find(f".//{{{NICK_EVENT}}}nick") is not None)
        assert event["from"] == JID("alice@localhost") and event["type"] == "headline"

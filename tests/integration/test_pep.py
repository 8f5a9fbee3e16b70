"""PEP with slixmpp on real sockets: an OMEMO device list published with open access, fetched by a
stranger; a contact's client with caps (XEP-0115) gets only the nodes it asks for (+notify); a
stranger's explicit subscription (XEP-0060 §6.1); vCard4 (XEP-0292) on its node."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from slixmpp import JID
from slixmpp.xmlstream import ET

from schnack.server.app import Server
from schnack.server.storage.base import RosterItem
from schnack.xmpp.payloads.pubsub import PUBLISH_OPTIONS

from ..harness import add_user
from .slix import PASSWORD, SlixClient

pytestmark = pytest.mark.asyncio

DEVICES = "eu.siacs.conversations.axolotl.devicelist"
AXOLOTL = "eu.siacs.conversations.axolotl"
NICK = "http://jabber.org/protocol/nick"
PLUGINS = ("xep_0004", "xep_0030", "xep_0060", "xep_0115", "xep_0163")


class PepPeer(SlixClient):
    """A slixmpp client with the pubsub, PEP and caps plugins; it keeps the PEP events it gets."""

    def __init__(self, server: Server, jid: str, interests: tuple[str, ...] = ()) -> None:
        super().__init__(server, jid)
        for plugin in PLUGINS:
            self.xmpp.register_plugin(plugin)
        for namespace in interests:
            self.xmpp.plugin["xep_0030"].add_feature(f"{namespace}+notify")
        self.events: asyncio.Queue[tuple[str, str, Any]] = asyncio.Queue()
        self.xmpp.add_event_handler("pubsub_publish", self._published)

    def _published(self, msg: Any) -> None:
        items = msg["pubsub_event"]["items"]
        self.events.put_nowait((str(msg["from"]), items["node"], items["item"]))

    async def online(self) -> None:
        """Log in, announce caps for the current features and send initial presence."""
        assert await self.start()
        await self.xmpp.plugin["xep_0115"].update_caps(broadcast=False)
        self.xmpp.send_presence()

    async def next_event(self) -> tuple[str, str, Any]:
        async with asyncio.timeout(30):
            return await self.events.get()


@pytest.fixture
async def peers() -> AsyncIterator[list[PepPeer]]:
    made: list[PepPeer] = []
    yield made
    for peer in made:
        await peer.stop()


async def peer(server: Server, peers: list[PepPeer], user: str, interests: tuple[str, ...] = ()) -> PepPeer:
    await add_user(server, user, PASSWORD)
    made = PepPeer(server, f"{user}@localhost/test", interests)
    peers.append(made)
    return made


def device_list(*ids: int) -> ET.Element:
    devices = ET.Element(f"{{{AXOLOTL}}}list")
    for device_id in ids:
        ET.SubElement(devices, f"{{{AXOLOTL}}}device", {"id": str(device_id)})
    return devices


def open_access(client: SlixClient) -> Any:
    """Publish-options for a node anyone may read."""
    form = client.xmpp.plugin["xep_0004"].make_form(ftype="submit")
    form.add_field(var="FORM_TYPE", ftype="hidden", value=PUBLISH_OPTIONS)
    form.add_field(var="pubsub#access_model", value="open")
    return form


async def test_open_device_list_and_notifications(live_server: Server, peers: list[PepPeer]) -> None:
    alice = await peer(live_server, peers, "alice")
    bob = await peer(live_server, peers, "bob")
    carol = await peer(live_server, peers, "carol", interests=(DEVICES,))
    for a, b in (("alice", "carol"), ("carol", "alice")):
        await live_server.storage.roster.set_item("localhost", a, RosterItem(f"{b}@localhost", subscription="both"))
    await alice.online()
    await bob.online()

    # What profanity and Conversations check before asking for open OMEMO nodes.
    domain = await bob.xmpp.plugin["xep_0030"].get_info(JID("localhost"))
    assert PUBLISH_OPTIONS in domain["disco_info"]["features"]
    account = await bob.xmpp.plugin["xep_0030"].get_info(JID("alice@localhost"))
    assert ("pubsub", "pep", None, None) in account["disco_info"]["identities"]

    pubsub = alice.xmpp.plugin["xep_0060"]
    await pubsub.publish(None, DEVICES, id="current", payload=device_list(1111), options=open_access(alice))
    nick = ET.Element(f"{{{NICK}}}nick")
    nick.text = "Alice"
    await pubsub.publish(None, NICK, id="current", payload=nick)

    # bob has no subscription to alice, and may fetch her open device list.
    result = await bob.xmpp.plugin["xep_0060"].get_items(JID("alice@localhost"), DEVICES)
    (item,) = result["pubsub"]["items"]["substanzas"]
    assert item["id"] == "current"
    assert [d.get("id") for d in item.xml.iter(f"{{{AXOLOTL}}}device")] == ["1111"]

    # carol, a contact who wants device lists only, gets the last one when she comes online...
    await carol.online()
    sender, node, got = await carol.next_event()
    assert (sender, node, got["id"]) == ("alice@localhost", DEVICES, "current")
    # ... and a notification when alice publishes a new one, and never the nickname.
    await pubsub.publish(None, DEVICES, id="current", payload=device_list(1111, 2222), options=open_access(alice))
    sender, node, got = await carol.next_event()
    assert (sender, node) == ("alice@localhost", DEVICES)
    assert [d.get("id") for d in got.xml.iter(f"{{{AXOLOTL}}}device")] == ["1111", "2222"]
    assert carol.events.empty()
    await bob.sync()
    assert bob.events.empty()


VCARD4_NODE = "urn:xmpp:vcard4"
VCARD4 = "urn:ietf:params:xml:ns:vcard-4.0"


async def test_explicit_subscription(live_server: Server, peers: list[PepPeer]) -> None:
    """XEP-0060 §6.1, §6.2, §5.6, §8.8.1: a stranger subscribes to an open node, is notified
    without asking for it in caps, lists its subscription, and unsubscribes."""
    alice = await peer(live_server, peers, "alice")
    bob = await peer(live_server, peers, "bob")
    await alice.online()
    await bob.online()
    pubsub = alice.xmpp.plugin["xep_0060"]
    await pubsub.publish(None, DEVICES, id="current", payload=device_list(1111), options=open_access(alice))
    await bob.sync()
    assert bob.events.empty()

    answer = await bob.xmpp.plugin["xep_0060"].subscribe(JID("alice@localhost"), DEVICES)
    subscription = answer["pubsub"]["subscription"]
    assert (subscription["node"], str(subscription["jid"]), subscription["subscription"]) == (
        DEVICES, "bob@localhost", "subscribed")
    # §6.1.7: the last item comes at once, and then every new one.
    sender, node, got = await bob.next_event()
    assert (sender, node, got["id"]) == ("alice@localhost", DEVICES, "current")
    await pubsub.publish(None, DEVICES, id="current", payload=device_list(1111, 3333), options=open_access(alice))
    sender, node, got = await bob.next_event()
    assert [d.get("id") for d in got.xml.iter(f"{{{AXOLOTL}}}device")] == ["1111", "3333"]

    mine = await bob.xmpp.plugin["xep_0060"].get_subscriptions(JID("alice@localhost"))
    listed = [(s["node"], str(s["jid"])) for s in mine["pubsub"]["subscriptions"]]
    assert listed == [(DEVICES, "bob@localhost")]
    owners_view = await pubsub.get_node_subscriptions(JID("alice@localhost"), DEVICES)
    assert [str(s["jid"]) for s in owners_view["pubsub_owner"]["subscriptions"]] == ["bob@localhost"]

    await bob.xmpp.plugin["xep_0060"].unsubscribe(JID("alice@localhost"), DEVICES, subid=subscription["subid"])
    await pubsub.publish(None, DEVICES, id="current", payload=device_list(4444), options=open_access(alice))
    await alice.sync()
    await bob.sync()
    assert bob.events.empty()


async def test_vcard4_over_pep(live_server: Server, peers: list[PepPeer]) -> None:
    """XEP-0292 with slixmpp's plugin: published to urn:xmpp:vcard4, notified to a contact that
    wants it, read back as a PEP item and with the IQ get of §4.1.1."""
    alice = await peer(live_server, peers, "alice")
    bob = await peer(live_server, peers, "bob", interests=(VCARD4_NODE,))
    for a, b in (("alice", "bob"), ("bob", "alice")):
        await live_server.storage.roster.set_item("localhost", a, RosterItem(f"{b}@localhost", subscription="both"))
    for client in (alice, bob):
        client.xmpp.register_plugin("xep_0292")
    await alice.online()
    await bob.online()
    account = await bob.xmpp.plugin["xep_0030"].get_info(JID("alice@localhost"))
    assert VCARD4 in account["disco_info"]["features"]
    await alice.xmpp.plugin["xep_0292"].publish_vcard(full_name="Alice Liddell", nickname="alice", node=VCARD4_NODE)
    sender, node, got = await bob.next_event()
    assert (sender, node, got["id"]) == ("alice@localhost", VCARD4_NODE, "current")
    assert got["vcard"]["full_name"] == "Alice Liddell"
    fetched = await bob.xmpp.plugin["xep_0060"].get_item(JID("alice@localhost"), VCARD4_NODE, "current")
    (item,) = fetched["pubsub"]["items"]["substanzas"]
    assert item["vcard"]["full_name"] == "Alice Liddell"
    iq = bob.xmpp.make_iq_get(ito=JID("alice@localhost"))
    iq.append(ET.Element(f"{{{VCARD4}}}vcard"))
    answer = await iq.send(timeout=30)
    texts = [el.text for el in answer.xml.iter(f"{{{VCARD4}}}text")]
    assert sorted(texts) == ["Alice Liddell", "alice"]

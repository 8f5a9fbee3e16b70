"""Roster pushes (RFC 6121 §2.1.6), PEP notifications (XEP-0163) and directed presence (§4.6.3)
across nodes: two servers in one process, on the in-process hub and on Redis, sharing PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any
from xml.etree.ElementTree import Element

from schnack.server.app import Server
from schnack.server.cluster.directory import SessionInfo
from schnack.server.storage import RosterItem
from schnack.xmpp import ns
from schnack.xmpp.jid import JID
from schnack.xmpp.payloads.disco import INFO, DiscoInfo
from schnack.xmpp.payloads.pubsub import EventItems
from schnack.xmpp.xml import serialize

from ...harness import Client
from ..modules.contacts import presence
from ..modules.messaging import chat, login
from ..modules.test_avatar_conversion import PNG, PNG_ID, photo_hashes, photo_vcard, set_vcard
from ..modules.test_pep import DEVICE_LIST, DEVICES, NICK, caps_for, events, nick, publish_xml
from .conftest import eventually
from .test_node_presence import IQ, backend, friends, nodes, online, presence_from, until

__all__ = ["backend"]  # the fixture that runs each test on both bus backends

MESSAGE = f"{{{ns.CLIENT}}}message"
ROSTER_QUERY = f"{{{ns.ROSTER}}}query"
ROSTER_ITEM = f"{ROSTER_QUERY}/{{{ns.ROSTER}}}item"


def roster_push(el: Element) -> bool:
    return el.tag == IQ and el.get("type") == "set" and el.find(ROSTER_QUERY) is not None


async def remote_sessions(server: Server, bare: str) -> list[SessionInfo]:
    """The sessions of ``bare`` on other nodes, as ``server`` sees them in the directory."""
    return await server.cluster.remote(JID.parse(bare))


async def test_roster_pushes_reach_interested_resources_on_other_nodes(tmp_path: Path, backend: str) -> None:
    async with nodes(tmp_path, backend) as (a, b):
        phone = await online(a, "alice@localhost/phone")
        desk = await online(b, "alice@localhost/desk")
        quiet = await login(b, "alice@localhost/quiet")  # never asks for the roster: not interested
        await eventually(lambda: remote_sessions(a, "alice@localhost"),
                         lambda infos: [i.jid for i in infos if i.interested] == ["alice@localhost/desk"])
        await phone.send(f"<iq type='set' id='r1'><query xmlns='{ns.ROSTER}'>"
                         "<item jid='bob@localhost' name='Bob'/></query></iq>")
        here = await until(phone, roster_push)
        there = await until(desk, roster_push)
        assert there.get("to") == "alice@localhost/desk" and there.get("from") is None
        item = there.find(ROSTER_ITEM)
        assert item is not None and (item.get("jid"), item.get("name")) == ("bob@localhost", "Bob")
        # XEP-0237: the same roster version on both nodes.
        versions = [query.get("ver") for query in (here.find(ROSTER_QUERY), there.find(ROSTER_QUERY))
                    if query is not None]
        assert len(versions) == 2 and versions[0] and versions[0] == versions[1]
        await desk.send(f"<iq type='result' id='{there.get('id')}'/>")
        # §2.5: a removal made on the other node is pushed here too.
        await desk.send(f"<iq type='set' id='r2'><query xmlns='{ns.ROSTER}'>"
                        "<item jid='bob@localhost' subscription='remove'/></query></iq>")
        removed = (await until(phone, roster_push)).find(ROSTER_ITEM)
        assert removed is not None and removed.get("subscription") == "remove"
        assert [el for el in quiet.take() if roster_push(el)] == []


async def test_removing_a_contact_hides_the_resources_on_every_node(tmp_path: Path, backend: str) -> None:
    """RFC 6121 §2.5.2: a contact removed through one node gets unavailable presence from each
    available resource of the user, those on the other nodes too."""
    async with nodes(tmp_path, backend) as (a, b):
        phone = await online(a, "alice@localhost/phone")
        bob = await online(a, "bob@localhost/desk")
        await friends(phone, bob)
        laptop = await online(b, "alice@localhost/laptop")
        await until(bob, presence_from("alice@localhost/laptop"))
        await eventually(lambda: remote_sessions(b, "alice@localhost"),
                         lambda infos: [i.jid for i in infos if i.available] == ["alice@localhost/phone"])
        await laptop.send(f"<iq type='set' id='r1'><query xmlns='{ns.ROSTER}'>"
                          "<item jid='bob@localhost' subscription='remove'/></query></iq>")
        gone: set[str | None] = set()

        def unavailable(el: Element) -> bool:
            if el.get("type") == "unavailable":
                gone.add(el.get("from"))
            return gone == {"alice@localhost/phone", "alice@localhost/laptop"}

        await until(bob, unavailable)


async def test_a_subscription_request_waits_for_the_initial_presence_of_resources_on_other_nodes(
        tmp_path: Path, backend: str) -> None:
    """RFC 6121 §3.1.3: a request goes to the available resources; one that only asked for the
    roster gets it, once, with its initial presence, wherever it is connected."""
    async with nodes(tmp_path, backend) as (a, b):
        phone = await online(a, "alice@localhost/phone")
        quiet = await login(b, "alice@localhost/quiet")
        await quiet.send(f"<iq type='get' id='roster'><query xmlns='{ns.ROSTER}'/></iq>")
        await eventually(lambda: remote_sessions(a, "alice@localhost"),
                         lambda infos: [i.jid for i in infos if i.interested] == ["alice@localhost/quiet"])
        bob = await online(a, "bob@localhost/desk")
        await bob.send(presence("subscribe", "alice@localhost"))
        await until(phone, lambda el: el.get("type") == "subscribe")
        # Sent after the request over the same way between the nodes, so it comes after it.
        await bob.send(chat("alice@localhost/quiet", "after the request"))
        before = await up_to(quiet, lambda el: el.tag == MESSAGE)
        assert [el for el in before if el.get("type") == "subscribe"] == []
        await quiet.send(presence())
        await until(quiet, lambda el: el.get("type") == "subscribe" and el.get("from") == "bob@localhost")


async def test_two_nodes_changing_one_roster_item_at_once_both_count(tmp_path: Path, backend: str) -> None:
    """Alice and Bob approve each other's requests at the same moment: Alice's approval changes
    her item for Bob on her node, Bob's approval of her request changes the same item on his.
    Each step reads the item and writes it back; the two must not overlap, or the later write
    drops what the earlier one changed (Both would end up From or To)."""
    async with nodes(tmp_path, backend) as (a, b):
        alice = await online(a, "alice@localhost/phone")
        bob = await online(b, "bob@localhost/desk")
        await alice.send(presence("subscribe", "bob@localhost"))
        await until(bob, lambda el: el.get("type") == "subscribe")
        await bob.send(presence("subscribe", "alice@localhost"))
        await until(alice, lambda el: el.get("type") == "subscribe")
        # Each node, having read Alice's item for Bob, waits a while for the other to read it too,
        # so that steps that may overlap do: both read the item before either writes it.
        read = {a: asyncio.Event(), b: asyncio.Event()}
        written: list[RosterItem] = []
        for server, other in ((a, b), (b, a)):
            storage = server.storage.roster

            async def stalled(host: str, username: str, jid: str, *, get_item: Any = storage.get_item,
                              mine: asyncio.Event = read[server], theirs: asyncio.Event = read[other]) -> Any:
                item = await get_item(host, username, jid)
                if (username, jid) == ("alice", "bob@localhost"):
                    mine.set()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(theirs.wait(), 1.5)
                return item

            async def noted(host: str, username: str, item: RosterItem, *, set_item: Any = storage.set_item) -> Any:
                version = await set_item(host, username, item)
                if (username, item.jid) == ("alice", "bob@localhost"):
                    written.append(item)
                return version

            storage.get_item = stalled  # type: ignore[method-assign]
            storage.set_item = noted  # type: ignore[method-assign]
        await asyncio.gather(alice.send(presence("subscribed", "bob@localhost")),
                             bob.send(presence("subscribed", "alice@localhost")))
        await eventually(lambda: _listed(written), lambda items: len(items) == 2)
        item = await a.storage.roster.get_item("localhost", "alice", "bob@localhost")
        assert item is not None and (item.subscription, item.ask) == ("both", False)


async def _listed(items: list[RosterItem]) -> list[RosterItem]:
    return list(items)


def notified(node: str) -> Callable[[Element], bool]:
    """Matches a PEP notification of ``node``."""
    return lambda el: any(isinstance(e, EventItems) and e.node == node for _, e in events([el]))


async def up_to(client: Client, match: Callable[[Element], bool]) -> list[Element]:
    """What the client gets up to and including the first stanza ``match`` accepts."""
    seen: list[Element] = []

    def keep(el: Element) -> bool:
        seen.append(el)
        return match(el)

    await until(client, keep)
    return seen


async def answer_caps(client: Client, info: DiscoInfo) -> None:
    """Answer the server's XEP-0115 disco#info query for the client's caps node."""
    query = await until(client, lambda el: el.tag == IQ and el.get("type") == "get" and el.find(INFO) is not None)
    asked = query.find(INFO)
    assert asked is not None
    result = DiscoInfo(info.identities, info.features, node=asked.get("node")).to_xml()
    await client.send(f"<iq type='result' to='{query.get('from')}' id='{query.get('id')}'>{serialize(result)}</iq>")


async def test_pep_notifications_reach_resources_on_other_nodes_by_their_caps(tmp_path: Path, backend: str) -> None:
    async with nodes(tmp_path, backend) as (a, b):
        alice = await online(a, "alice@localhost/phone")
        alice_desk = await online(b, "alice@localhost/desk")  # without caps: every notification
        bob = await online(b, "bob@localhost/desk")
        await friends(alice, bob)
        # Bob's laptop on alice's node teaches that node what its client version wants (only the
        # OMEMO device list); his tablet on the other node runs the same version.
        c, info = caps_for(f"{DEVICES}+notify")
        laptop = await login(a, "bob@localhost/laptop")
        await laptop.send(f"<presence>{c}</presence>")
        await answer_caps(laptop, info)
        tablet = await login(b, "bob@localhost/tablet")
        await tablet.send(f"<presence>{c}</presence>")
        await answer_caps(tablet, info)
        await eventually(lambda: remote_sessions(a, "bob@localhost"),
                         lambda infos: sum(i.available for i in infos) == 2)
        tablet.take()

        await alice.send(publish_xml(NICK, nick("Alice"), iq_id="nick"))
        await until(alice, lambda el: el.tag == IQ and el.get("id") == "nick")
        await alice.send(publish_xml(DEVICES, DEVICE_LIST, iq_id="devices"))
        await until(alice, lambda el: el.tag == IQ and el.get("id") == "devices")

        for client in (alice_desk, bob):  # no caps: both nodes' notifications, in order
            got = events(await up_to(client, notified(DEVICES)))
            assert [(sender, e.node) for sender, e in got] == [("alice@localhost", NICK), ("alice@localhost", DEVICES)]
        # The tablet's caps filter out the nickname (XEP-0163 §4.2), on the other node too.
        seen = await up_to(tablet, notified(DEVICES))
        assert [e.node for _, e in events(seen)] == [DEVICES]


async def test_directed_presence_is_retracted_when_its_node_dies(tmp_path: Path, backend: str) -> None:
    async with nodes(tmp_path, backend, node_ttl=2.0) as (a, b):
        alice = await online(a, "alice@localhost/phone")
        bob = await online(b, "bob@localhost/desk")  # no subscription between them
        await bob.send("<presence to='alice@localhost/phone'><status>a word</status></presence>")
        await until(alice, presence_from("bob@localhost/desk"))
        await eventually(lambda: remote_sessions(a, "bob@localhost"),
                         lambda infos: [i.directed for i in infos] == [("alice@localhost/phone",)])
        await b.cluster.bus.stop(leave=False)  # b stops heartbeating, as a crashed node would
        gone = await until(alice, presence_from("bob@localhost/desk", "unavailable"), timeout=20)
        assert gone.get("to") == "alice@localhost/phone"


async def test_a_photo_changed_through_one_node_is_stamped_by_the_others(tmp_path: Path, backend: str) -> None:
    """XEP-0153 §4 in a cluster: node b stamps alice's presence with the hash of her new photo,
    set through node a, not the one it had kept."""
    async with nodes(tmp_path, backend) as (a, b):
        phone = await online(a, "alice@localhost/phone")
        laptop = await online(b, "alice@localhost/laptop")

        async def stamped() -> list[str | None]:
            await laptop.send(presence())
            return photo_hashes([await until(phone, presence_from("alice@localhost/laptop"))])

        assert await stamped() == [""]
        await set_vcard(phone, photo_vcard(PNG))
        assert await eventually(stamped, lambda hashes: hashes == [PNG_ID], timeout=5.0) == [PNG_ID]



async def test_a_deleted_accounts_photo_is_forgotten_on_every_node(tmp_path: Path, backend: str) -> None:
    """A new account of the deleted one's name has no photo: node b, which kept the hash of the
    old owner's, must not stamp the new account's presence with it (XEP-0153 §4), or the
    contacts' clients would show the old owner's picture from their caches."""
    async with nodes(tmp_path, backend) as (a, b):
        heard: list[str] = []
        b.cluster.bus.on_changed(lambda store, _account: heard.append(store))

        async def heard_so_far() -> list[str]:
            return heard

        phone = await online(a, "alice@localhost/phone")
        await set_vcard(phone, photo_vcard(PNG))
        await eventually(heard_so_far, lambda stores: "avatar-hash" in stores, timeout=5.0)
        laptop = await online(b, "alice@localhost/laptop")

        async def stamped(phone: Client, laptop: Client) -> list[str | None]:
            await laptop.send(presence())
            return photo_hashes([await until(phone, presence_from("alice@localhost/laptop"))])

        assert await stamped(phone, laptop) == [PNG_ID]
        assert await a.delete_account("localhost", "alice")
        a.end_account_sessions("localhost", "alice")

        async def closed() -> bool:
            return laptop.conn.closed

        await eventually(closed, bool, timeout=5.0)
        await laptop.stream.connection_lost()
        phone = await online(a, "alice@localhost/phone")
        laptop = await online(b, "alice@localhost/laptop")
        assert await stamped(phone, laptop) == [""]

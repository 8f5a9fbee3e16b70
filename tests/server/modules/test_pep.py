"""XEP-0163 PEP on the XEP-0060 subset: publish, auto-create, publish-options, access models,
notifications with +notify filtering, last items on presence, retract, items, owner operations,
errors, discovery and persistence."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from xml.etree.ElementTree import Element

import pytest

from schnack.server.app import Server
from schnack.server.modules.pep import Pep
from schnack.server.modules.pep.store import USAGE
from schnack.server.storage.base import RosterItem
from schnack.xmpp import ns
from schnack.xmpp.payloads.caps import Caps, compute_ver
from schnack.xmpp.payloads.dataforms import DataForm
from schnack.xmpp.payloads.disco import INFO, DiscoInfo, DiscoItems, Identity
from schnack.xmpp.payloads.pubsub import (
    ERRORS,
    EVENT,
    OWNER,
    PUBLISH_OPTIONS,
    PUBSUB,
    Event,
    EventDelete,
    EventItems,
    EventPurge,
    Items,
    NodeConfig,
    Publish,
    parse_event,
    parse_request,
)
from schnack.xmpp.xml import serialize

from ...harness import Client, running, xml
from ..s2s.raw import RawReceiver
from ..storage.conftest import postgres_schema
from .contacts import arrive, federated
from .messaging import condition, error_text, login

IQ = f"{{{ns.CLIENT}}}iq"
MESSAGE = f"{{{ns.CLIENT}}}message"
DEVICES = "eu.siacs.conversations.axolotl.devicelist"
DEVICES_2 = "urn:xmpp:omemo:2:devices"
NICK = "http://jabber.org/protocol/nick"
BOOKMARKS = "urn:xmpp:bookmarks:1"
# A node of many items that nothing but PEP handles (bookmarks stay private, see test_bookmarks).
LIST = "urn:example:list"
DEVICE_LIST = "<list xmlns='eu.siacs.conversations.axolotl'><device id='1234'/></list>"


def nick(name: str) -> str:
    return f"<nick xmlns='{NICK}'>{name}</nick>"


def form(*fields: tuple[str, str], form_type: str = PUBLISH_OPTIONS) -> str:
    inner = "".join(f"<field var='{var}'><value>{value}</value></field>" for var, value in fields)
    return (
        f"<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'>"
        f"<value>{form_type}</value></field>{inner}</x>"
    )


def publish_xml(node: str, payload: str, item_id: str | None = "current", to: str | None = None,
                options: tuple[tuple[str, str], ...] = (), iq_id: str = "pub") -> str:
    to_attr = f" to='{to}'" if to else ""
    id_attr = f" id='{item_id}'" if item_id is not None else ""
    publish_options = f"<publish-options>{form(*options)}</publish-options>" if options else ""
    return (
        f"<iq type='set' id='{iq_id}'{to_attr}><pubsub xmlns='{PUBSUB}'><publish node='{node}'>"
        f"<item{id_attr}>{payload}</item></publish>{publish_options}</pubsub></iq>"
    )


def reply(elements: list[Element], iq_id: str) -> Element:
    """The IQ answer with ``iq_id`` among ``elements``."""
    (found,) = [el for el in elements if el.tag == IQ and el.get("id") == iq_id]
    return found


def events(elements: list[Element]) -> list[tuple[str | None, Event]]:
    """(from, event) of each PEP notification among ``elements``, checked for their shape."""
    found = []
    for el in elements:
        event = el.find(f"{{{EVENT}}}event")
        if el.tag == MESSAGE and event is not None:
            assert el.get("type") == "headline", xml(el)
            found.append((el.get("from"), parse_event(event)))
    return found


def item_ids(event: Event) -> tuple[str | None, ...]:
    assert isinstance(event, EventItems)
    return tuple(item.id for item in event.items)


def app_condition(el: Element) -> str:
    """The pubsub#errors condition of an error stanza."""
    error = el.find(f"{{{ns.CLIENT}}}error")
    assert error is not None, xml(el)
    (app,) = [child.tag.rpartition("}")[2] for child in error if child.tag.startswith(f"{{{ERRORS}}}")]
    return app


async def publish(client: Client, node: str, payload: str, item_id: str | None = "current", to: str | None = None,
                  options: tuple[tuple[str, str], ...] = (), iq_id: str = "pub") -> tuple[Element, list[Element]]:
    """Publish; return the IQ answer and whatever else the publisher got (its own notification)."""
    await client.send(publish_xml(node, payload, item_id, to, options, iq_id))
    got = client.take()
    answer = reply(got, iq_id)
    return answer, [el for el in got if el is not answer]


async def items(client: Client, node: str, to: str | None = None, inner: str = "", attrs: str = "") -> Element:
    to_attr = f" to='{to}'" if to else ""
    await client.send(
        f"<iq type='get' id='items'{to_attr}><pubsub xmlns='{PUBSUB}'><items node='{node}'{attrs}>{inner}</items>"
        "</pubsub></iq>"
    )
    return reply(client.take(), "items")


def fetched(answer: Element) -> Items:
    assert answer.get("type") == "result", xml(answer)
    pubsub = answer.find(f"{{{PUBSUB}}}pubsub")
    assert pubsub is not None
    request = parse_request(pubsub)
    assert isinstance(request, Items)
    return request


async def owner(client: Client, action: str, kind: str = "set") -> Element:
    await client.send(f"<iq type='{kind}' id='own'><pubsub xmlns='{OWNER}'>{action}</pubsub></iq>")
    return reply(client.take(), "own")


async def befriend(server: Server, a: str, b: str, a_sees_b: str = "both", b_sees_a: str = "both",
                   groups: tuple[str, ...] = ()) -> None:
    """Roster items both ways, as the presence module leaves them after subscriptions."""
    await server.storage.roster.set_item("localhost", a, RosterItem(f"{b}@localhost", subscription=a_sees_b,
                                                                    groups=groups))
    await server.storage.roster.set_item("localhost", b, RosterItem(f"{a}@localhost", subscription=b_sees_a))


async def settled(server: Server) -> None:
    pep = server.modules["pep"]
    assert isinstance(pep, Pep)
    await pep.settled()


async def available(server: Server, client: Client, inner: str = "") -> list[Element]:
    """Send initial presence; return what arrived once the last items went out."""
    await client.send(f"<presence>{inner}</presence>")
    await settled(server)
    return client.take()


async def online(server: Server, jid: str, inner: str = "") -> Client:
    client = await login(server, jid)
    await available(server, client, inner)
    return client


def caps_for(*features: str) -> tuple[str, DiscoInfo]:
    """A client's <c/> and the disco#info behind it (XEP-0115 §5)."""
    info = DiscoInfo((Identity("client", "phone", "Test"),), (ns.DISCO_INFO, ns.CAPS, *features))
    caps = Caps("https://example.org/client", compute_ver(info))
    return serialize(caps.to_xml()), info


async def answer_caps_query(server: Server, client: Client, got: list[Element], info: DiscoInfo) -> list[Element]:
    """Answer the server's disco#info query for the caps node; return what then arrived."""
    (query,) = [el for el in got if el.tag == IQ and el.get("type") == "get"]
    assert query.get("from") == "localhost" and query.get("to") == client.jid
    asked = query.find(INFO)
    assert asked is not None and asked.get("node", "").startswith("https://example.org/client#")
    result = DiscoInfo(info.identities, info.features, node=asked.get("node")).to_xml()
    await client.send(
        f"<iq type='result' to='localhost' id='{query.get('id')}'>{serialize(result)}</iq>"
    )
    await settled(server)
    return client.take()


# Publishing and retrieving ---------------------------------------------------------------------


async def test_publish_creates_the_node_and_notifies_the_owner(server: Server) -> None:
    phone = await online(server, "alice@localhost/phone")
    laptop = await online(server, "alice@localhost/laptop")
    answer, rest = await publish(phone, NICK, nick("Alice"))
    assert answer.get("type") == "result", xml(answer)
    pubsub = answer.find(f"{{{PUBSUB}}}pubsub")
    assert pubsub is not None
    result = parse_request(pubsub)
    assert isinstance(result, Publish) and result.node == NICK and result.items[0].id == "current"
    for got in (rest, laptop.take()):
        ((sender, event),) = events(got)
        assert sender == "alice@localhost"
        assert item_ids(event) == ("current",)
        assert isinstance(event, EventItems) and event.items[0].payload is not None
        assert event.items[0].payload.text == "Alice"
    stored = fetched(await items(phone, NICK))
    assert [item.id for item in stored.items] == ["current"]


async def test_an_item_without_id_gets_one(server: Server) -> None:
    alice = await online(server, "alice@localhost/phone")
    answer, _ = await publish(alice, "urn:example:status", "<s xmlns='urn:example'/>", item_id=None)
    pubsub = answer.find(f"{{{PUBSUB}}}pubsub")
    assert pubsub is not None
    result = parse_request(pubsub)
    assert isinstance(result, Publish)
    (item,) = result.items
    assert item.id
    assert [i.id for i in fetched(await items(alice, "urn:example:status")).items] == [item.id]


async def test_missing_node_is_item_not_found_with_code_404(server: Server) -> None:
    alice = await online(server, "alice@localhost/phone")
    bob = await online(server, "bob@localhost/phone")
    for client, to in ((alice, None), (alice, "alice@localhost"), (bob, "alice@localhost")):
        answer = await items(client, DEVICES, to=to)
        assert condition(answer) == "item-not-found"
        error = answer.find(f"{{{ns.CLIENT}}}error")
        assert error is not None and error.get("code") == "404", xml(answer)
    answer = await items(bob, DEVICES, to="nobody@localhost")
    assert condition(answer) == "service-unavailable"


async def test_open_access_via_publish_options_lets_anyone_fetch(server: Server) -> None:
    alice = await online(server, "alice@localhost/phone")
    bob = await online(server, "bob@localhost/phone")
    answer, _ = await publish(alice, DEVICES, DEVICE_LIST, options=(("pubsub#access_model", "open"),))
    assert answer.get("type") == "result", xml(answer)
    assert bob.take() == []  # no subscription, no notification
    got = fetched(await items(bob, DEVICES, to="alice@localhost"))
    (item,) = got.items
    assert item.id == "current" and item.payload is not None
    assert item.payload.find("{eu.siacs.conversations.axolotl}device") is not None


async def test_presence_access_needs_a_subscription(server: Server) -> None:
    alice = await online(server, "alice@localhost/phone")
    stranger = await online(server, "mallory@localhost/phone")
    await publish(alice, NICK, nick("Alice"))
    answer = await items(stranger, NICK, to="alice@localhost")
    assert condition(answer) == "not-authorized"
    assert app_condition(answer) == "presence-subscription-required"
    await befriend(server, "alice", "bob", a_sees_b="from", b_sees_a="to")
    bob = await login(server, "bob@localhost/phone")
    assert [i.id for i in fetched(await items(bob, NICK, to="alice@localhost")).items] == ["current"]


async def test_roster_access_needs_an_allowed_group(server: Server) -> None:
    alice = await online(server, "alice@localhost/phone")
    options = (("pubsub#access_model", "roster"),)
    await alice.send(
        f"<iq type='set' id='create'><pubsub xmlns='{PUBSUB}'><create node='urn:example:family'/><configure>"
        f"{form(('pubsub#access_model', 'roster'), ('pubsub#roster_groups_allowed', 'Family'), form_type=f'{PUBSUB}#node_config')}"
        "</configure></pubsub></iq>"
    )
    assert reply(alice.take(), "create").get("type") == "result"
    answer, _ = await publish(alice, "urn:example:family", "<p xmlns='urn:example'/>", options=options)
    assert answer.get("type") == "result", xml(answer)
    await befriend(server, "alice", "bob", groups=("Family",))
    await befriend(server, "alice", "carol", groups=("Work",))
    bob = await login(server, "bob@localhost/phone")
    carol = await login(server, "carol@localhost/phone")
    assert len(fetched(await items(bob, "urn:example:family", to="alice@localhost")).items) == 1
    answer = await items(carol, "urn:example:family", to="alice@localhost")
    assert condition(answer) == "not-authorized"
    assert app_condition(answer) == "not-in-roster-group"


async def test_whitelist_is_for_the_owner_alone(server: Server) -> None:
    alice = await online(server, "alice@localhost/phone")
    await befriend(server, "alice", "bob")
    bob = await online(server, "bob@localhost/phone")
    bookmark = "<conference xmlns='urn:xmpp:bookmarks:1' autojoin='true'/>"
    options = (("pubsub#access_model", "whitelist"), ("pubsub#persist_items", "true"),
               ("pubsub#max_items", "max"), ("pubsub#send_last_published_item", "never"))
    answer, own = await publish(alice, BOOKMARKS, bookmark, item_id="room@muc.localhost", options=options)
    assert answer.get("type") == "result", xml(answer)
    assert len(events(own)) == 1
    assert bob.take() == []
    answer = await items(bob, BOOKMARKS, to="alice@localhost")
    assert condition(answer) == "not-allowed"
    assert app_condition(answer) == "closed-node"


async def test_only_the_owner_changes_nodes(server: Server) -> None:
    await online(server, "alice@localhost/phone")
    bob = await online(server, "bob@localhost/phone")
    answer, _ = await publish(bob, NICK, nick("Not Alice"), to="alice@localhost")
    assert condition(answer) == "forbidden"
    await bob.send(f"<iq type='set' id='own' to='alice@localhost'><pubsub xmlns='{OWNER}'><delete node='{NICK}'/>"
                   "</pubsub></iq>")
    assert condition(reply(bob.take(), "own")) == "forbidden"


async def test_items_by_id_and_most_recent(server: Server) -> None:
    alice = await online(server, "alice@localhost/phone")
    node = "urn:example:log"
    for i in range(4):
        answer, _ = await publish(alice, node, f"<e xmlns='urn:example'>{i}</e>", item_id=f"i{i}",
                                  options=(("pubsub#max_items", "3"),))
        assert answer.get("type") == "result", xml(answer)
    # max_items 3: the oldest went; retrieval is oldest first.
    assert [i.id for i in fetched(await items(alice, node)).items] == ["i1", "i2", "i3"]
    assert [i.id for i in fetched(await items(alice, node, attrs=" max_items='2'")).items] == ["i2", "i3"]
    by_id = fetched(await items(alice, node, inner="<item id='i2'/><item id='i0'/>"))
    assert [i.id for i in by_id.items] == ["i2"]
    assert condition(await items(alice, node, inner="<item id='i0'/>")) == "item-not-found"
    # Publishing an existing id replaces it and makes it the newest.
    await publish(alice, node, "<e xmlns='urn:example'>again</e>", item_id="i1")
    assert [i.id for i in fetched(await items(alice, node)).items] == ["i2", "i3", "i1"]


async def test_publish_checks_the_request(server: Server) -> None:
    alice = await online(server, "alice@localhost/phone")
    await alice.send(f"<iq type='set' id='pub'><pubsub xmlns='{PUBSUB}'><publish node='n'/></pubsub></iq>")
    answer = reply(alice.take(), "pub")
    assert condition(answer) == "bad-request" and app_condition(answer) == "item-required"
    await alice.send(f"<iq type='set' id='pub'><pubsub xmlns='{PUBSUB}'><publish node='n'><item id='a'/>"
                     "</publish></pubsub></iq>")
    answer = reply(alice.take(), "pub")
    assert condition(answer) == "bad-request" and app_condition(answer) == "payload-required"
    await alice.send(f"<iq type='set' id='pub'><pubsub xmlns='{PUBSUB}'><options node='n' jid='alice@localhost'/>"
                     "</pubsub></iq>")
    answer = reply(alice.take(), "pub")
    assert condition(answer) == "feature-not-implemented" and app_condition(answer) == "unsupported"


# Publish-options ------------------------------------------------------------------------------


async def test_precondition_mismatch_is_a_conflict_until_reconfigured(server: Server) -> None:
    alice = await online(server, "alice@localhost/phone")
    await publish(alice, DEVICES, DEVICE_LIST)  # presence access, as by default
    answer, _ = await publish(alice, DEVICES, DEVICE_LIST, options=(("pubsub#access_model", "open"),))
    assert condition(answer) == "conflict"
    assert app_condition(answer) == "precondition-not-met"
    # What Conversations then does: reconfigure the node (XEP-0060 §8.2), and publish again.
    answer = await owner(alice, f"<configure node='{DEVICES}'/>", kind="get")
    x = answer.find(f"{{{OWNER}}}pubsub/{{{OWNER}}}configure/{{jabber:x:data}}x")
    assert x is not None
    current = DataForm.from_xml(x)
    assert current.value("pubsub#access_model") == "presence"
    answer = await owner(alice, f"<configure node='{DEVICES}'>"
                                f"{form(('pubsub#access_model', 'open'), form_type=f'{PUBSUB}#node_config')}</configure>")
    assert answer.get("type") == "result", xml(answer)
    answer, _ = await publish(alice, DEVICES, DEVICE_LIST, options=(("pubsub#access_model", "open"),))
    assert answer.get("type") == "result", xml(answer)


async def test_max_items_max_matches_as_a_precondition(tmp_path: Path) -> None:
    async with running(tmp_path, modules={"pep": {"max_items": 50}}) as server:
        alice = await online(server, "alice@localhost/phone")
        options = (("pubsub#max_items", "max"), ("pubsub#access_model", "open"))
        for iq_id in ("first", "second"):
            answer, _ = await publish(alice, DEVICES_2, "<devices xmlns='urn:xmpp:omemo:2'/>", options=options,
                                      iq_id=iq_id)
            assert answer.get("type") == "result", xml(answer)
        answer = await owner(alice, f"<configure node='{DEVICES_2}'/>", kind="get")
        x = answer.find(f"{{{OWNER}}}pubsub/{{{OWNER}}}configure/{{jabber:x:data}}x")
        assert x is not None and DataForm.from_xml(x).value("pubsub#max_items") == "50"
        answer, _ = await publish(alice, DEVICES_2, "<devices xmlns='urn:xmpp:omemo:2'/>",
                                  options=(("pubsub#max_items", "51"),))
        assert app_condition(answer) == "precondition-not-met"


async def test_unknown_publish_option_is_not_met(server: Server) -> None:
    alice = await online(server, "alice@localhost/phone")
    answer, _ = await publish(alice, NICK, nick("A"), options=(("pubsub#deliver_payloads", "false"),))
    assert condition(answer) == "conflict" and app_condition(answer) == "precondition-not-met"
    assert condition(await items(alice, NICK)) == "item-not-found"


# Notifications --------------------------------------------------------------------------------


async def test_notifications_reach_subscribed_contacts_only(server: Server) -> None:
    await befriend(server, "alice", "bob")
    await befriend(server, "alice", "dave", a_sees_b="to", b_sees_a="from")  # alice follows dave, not back
    alice = await online(server, "alice@localhost/phone")
    bob_phone = await online(server, "bob@localhost/phone")
    bob_laptop = await online(server, "bob@localhost/laptop")
    bob_idle = await login(server, "bob@localhost/idle")  # connected, no presence
    carol = await online(server, "carol@localhost/phone")
    dave = await online(server, "dave@localhost/phone")
    for client in (alice, bob_phone, bob_laptop, dave):
        client.take()
    await publish(alice, NICK, nick("Alice"))
    for client in (bob_phone, bob_laptop):
        ((sender, event),) = events(client.take())
        assert sender == "alice@localhost" and item_ids(event) == ("current",)
    # The notifications went out before the publish was answered.
    assert bob_idle.take() == []
    assert carol.take() == []
    assert dave.take() == []


async def test_blocking_stops_notifications_both_ways(server: Server) -> None:
    await befriend(server, "alice", "bob")
    await befriend(server, "alice", "carol")
    alice = await online(server, "alice@localhost/phone")
    bob = await online(server, "bob@localhost/phone")
    carol = await online(server, "carol@localhost/phone")
    await bob.send("<iq type='set' id='b'><block xmlns='urn:xmpp:blocking'><item jid='alice@localhost'/></block></iq>")
    await alice.send("<iq type='set' id='b'><block xmlns='urn:xmpp:blocking'><item jid='carol@localhost'/></block></iq>")
    for client in (alice, bob, carol):
        client.take()
    answer, own = await publish(alice, NICK, nick("Alice"))
    assert answer.get("type") == "result", xml(answer)
    assert len(events(own)) == 1
    assert bob.take() == []
    assert carol.take() == []


async def test_open_nodes_notify_subscribed_contacts_too(server: Server) -> None:
    await befriend(server, "alice", "bob")
    alice = await online(server, "alice@localhost/phone")
    bob = await online(server, "bob@localhost/phone")
    stranger = await online(server, "mallory@localhost/phone")
    bob.take()
    await publish(alice, DEVICES, DEVICE_LIST, options=(("pubsub#access_model", "open"),))
    assert len(events(bob.take())) == 1
    assert stranger.take() == []


async def test_contacts_and_subscribers_at_other_servers_are_notified(tmp_path: Path) -> None:
    remote = await RawReceiver(tmp_path, "b.example", sm=False).start()
    s2s = {"enabled": True, "verify": False, "hosts": {"b.example": f"127.0.0.1:{remote.port}"}}
    try:
        async with running(tmp_path, s2s=s2s) as server:
            roster = server.storage.roster
            await roster.set_item("localhost", "alice", RosterItem("bob@b.example", subscription="both"))
            await roster.set_item("localhost", "alice", RosterItem("dave@b.example", subscription="to"))
            alice = await online(server, "alice@localhost/phone")
            answer, _ = await publish(alice, DEVICES, DEVICE_LIST)
            assert answer.get("type") == "result", xml(answer)
            # A subscriber elsewhere (XEP-0060 §6.1), whom the open access model admits.
            await owner(alice, f"<configure node='{DEVICES}'>"
                               f"{form(('pubsub#access_model', 'open'), form_type=f'{PUBSUB}#node_config')}</configure>")
            await alice.send(f"<iq type='set' id='own'><pubsub xmlns='{OWNER}'><subscriptions node='{DEVICES}'>"
                             "<subscription jid='carol@b.example/desk' subscription='subscribed'/>"
                             "</subscriptions></pubsub></iq>")
            assert reply(alice.take(), "own").get("type") == "result"
            await publish(alice, DEVICES, DEVICE_LIST, item_id="second")
            # Sent after the notifications, on the same route: what came before it is all there is.
            await alice.send("<message to='bob@b.example' id='last' type='chat'><body>done</body></message>")
            peer = await remote.next_peer()
            notified = []
            while (el := await peer.element()).get("id") != "last":
                event = el.find(f"{{{EVENT}}}event")
                if event is not None:
                    assert el.get("type") == "headline" and el.get("from") == "alice@localhost", xml(el)
                    notified.append((el.get("to"), item_ids(parse_event(event))))
            assert notified == [
                ("bob@b.example", ("current",)),
                ("bob@b.example", ("second",)),
                ("carol@b.example/desk", ("second",)),
            ]
    finally:
        remote.stop()


def notified_abroad(sent: list[Element]) -> list[tuple[str | None, str, tuple[str | None, ...]]]:
    """(to, node, item ids) of each PEP notification among the stanzas sent to other servers."""
    found = []
    for el in sent:
        event = el.find(f"{{{EVENT}}}event")
        if event is not None:
            assert el.get("type") == "headline" and el.get("from") == "alice@localhost", xml(el)
            parsed = parse_event(event)
            found.append((el.get("to"), parsed.node, item_ids(parsed)))
    return found


async def test_a_contact_at_another_server_coming_online_gets_the_last_items(tmp_path: Path) -> None:
    async with federated(tmp_path) as (server, sent):
        roster = server.storage.roster
        await roster.set_item("localhost", "alice", RosterItem("bob@b.example", subscription="both"))
        await roster.set_item("localhost", "alice", RosterItem("dave@b.example", subscription="to"))
        alice = await online(server, "alice@localhost/phone")
        await publish(alice, DEVICES, DEVICE_LIST)
        await publish(alice, LIST, "<e xmlns='urn:example'/>", options=(("pubsub#access_model", "whitelist"),))
        sent.clear()
        for contact in ("bob", "dave"):
            await arrive(server, f"<presence from='{contact}@b.example/phone' to='alice@localhost'/>")
        await settled(server)
        assert notified_abroad(sent) == [("bob@b.example/phone", DEVICES, ("current",))]
        # Another presence of a resource that got them is a change of status, not a new resource.
        sent.clear()
        await arrive(server, "<presence from='bob@b.example/phone' to='alice@localhost'><show>away</show></presence>")
        await settled(server)
        assert notified_abroad(sent) == []
        await arrive(server, "<presence from='bob@b.example/phone' to='alice@localhost' type='unavailable'/>")
        await arrive(server, "<presence from='bob@b.example/phone' to='alice@localhost'/>")
        await settled(server)
        assert notified_abroad(sent) == [("bob@b.example/phone", DEVICES, ("current",))]


async def test_a_contact_at_another_server_whose_server_crashed_gets_the_last_items_again(tmp_path: Path) -> None:
    """The contact's server crashed and sent no unavailable presence: once the note that its
    resource had the last items is old, its next presence gets them again (a device back under
    the same resource, which would otherwise never hear of a new OMEMO device)."""
    async with federated(tmp_path) as (server, sent):
        await server.storage.roster.set_item("localhost", "alice", RosterItem("bob@b.example", subscription="both"))
        alice = await online(server, "alice@localhost/phone")
        await publish(alice, DEVICES, DEVICE_LIST)
        await arrive(server, "<presence from='bob@b.example/phone' to='alice@localhost'/>")
        await settled(server)
        sent.clear()
        pep = server.modules[Pep.name]
        assert isinstance(pep, Pep)
        pep.delivery.seen_for = 0.0
        await arrive(server, "<presence from='bob@b.example/phone' to='alice@localhost'/>")
        await settled(server)
        assert notified_abroad(sent) == [("bob@b.example/phone", DEVICES, ("current",))]


async def test_a_contact_at_another_server_gets_the_last_items_when_approved(tmp_path: Path) -> None:
    """XEP-0060 §6.1.7 on_sub for a contact elsewhere: the user's approval of its subscription."""
    async with federated(tmp_path) as (server, sent):
        alice = await online(server, "alice@localhost/phone")
        await publish(alice, DEVICES, DEVICE_LIST)
        await publish(alice, LIST, "<e xmlns='urn:example'/>", options=(("pubsub#access_model", "whitelist"),))
        await arrive(server, "<presence type='subscribe' from='bob@b.example/phone' to='alice@localhost'/>")
        alice.take()
        sent.clear()
        await alice.send("<presence type='subscribed' to='bob@b.example'/>")
        await settled(server)
        assert notified_abroad(sent) == [("bob@b.example", DEVICES, ("current",))]
        # A request that comes again once approved is approved at once, and gets them again (§3.1.3).
        sent.clear()
        await arrive(server, "<presence type='subscribe' from='bob@b.example/phone' to='alice@localhost'/>")
        await settled(server)
        assert notified_abroad(sent) == [("bob@b.example", DEVICES, ("current",))]


async def test_a_subscriber_at_another_server_coming_online_gets_the_last_items(tmp_path: Path) -> None:
    """XEP-0060 §6.1.7 on_sub_and_presence for explicit subscribers elsewhere, contacts or not."""
    async with federated(tmp_path) as (server, sent):
        roster = server.storage.roster
        await roster.set_item("localhost", "alice", RosterItem("bob@b.example", subscription="both"))
        for contact in ("carol", "erin"):
            await roster.set_item("localhost", "alice", RosterItem(f"{contact}@b.example", subscription="to"))
        alice = await online(server, "alice@localhost/phone")
        await publish(alice, DEVICES, DEVICE_LIST, options=(("pubsub#access_model", "open"),))
        await publish(alice, NICK, nick("Alice"), options=(("pubsub#access_model", "open"),))
        # Subscribed: bob (a contact, who gets every node's last item anyway), carol at her bare
        # JID, erin at one of her resources.
        for node, jid in ((DEVICES, "bob@b.example"), (DEVICES, "carol@b.example"), (NICK, "erin@b.example/desk")):
            answer = await owner(alice, f"<subscriptions node='{node}'>"
                                        f"<subscription jid='{jid}' subscription='subscribed'/></subscriptions>")
            assert answer.get("type") == "result", xml(answer)
        sent.clear()
        for resource in ("bob@b.example/phone", "carol@b.example/phone", "erin@b.example/phone",
                         "erin@b.example/desk"):
            await arrive(server, f"<presence from='{resource}' to='alice@localhost'/>")
        await settled(server)
        assert sorted(notified_abroad(sent)) == [
            ("bob@b.example/phone", DEVICES, ("current",)),
            ("bob@b.example/phone", NICK, ("current",)),
            ("carol@b.example/phone", DEVICES, ("current",)),
            ("erin@b.example/desk", NICK, ("current",)),
        ]
        # A change of status gets nothing; coming back after going offline does.
        sent.clear()
        await arrive(server, "<presence from='carol@b.example/phone' to='alice@localhost'><show>away</show></presence>")
        await settled(server)
        assert notified_abroad(sent) == []
        await arrive(server, "<presence from='carol@b.example/phone' to='alice@localhost' type='unavailable'/>")
        await arrive(server, "<presence from='carol@b.example/phone' to='alice@localhost'/>")
        await settled(server)
        assert notified_abroad(sent) == [("carol@b.example/phone", DEVICES, ("current",))]


async def test_notify_filter_follows_caps(server: Server) -> None:
    await befriend(server, "alice", "bob")
    alice = await online(server, "alice@localhost/phone")
    bob = await login(server, "bob@localhost/phone")
    c, info = caps_for(f"{DEVICES}+notify")
    await bob.send(f"<presence>{c}</presence>")
    await answer_caps_query(server, bob, bob.take(), info)
    alice.take()
    await publish(alice, NICK, nick("Alice"))
    assert events(bob.take()) == []
    await publish(alice, DEVICES, DEVICE_LIST)
    ((_, event),) = events(bob.take())
    assert isinstance(event, EventItems) and event.node == DEVICES
    # Another resource with the same caps is not asked again.
    laptop = await login(server, "bob@localhost/laptop")
    await laptop.send(f"<presence>{c}</presence>")
    await settled(server)
    got = laptop.take()
    assert [el for el in got if el.tag == IQ] == []
    assert [e.node for _, e in events(got) if isinstance(e, EventItems)] == [DEVICES]


async def test_caps_that_do_not_verify_filter_nothing(server: Server) -> None:
    await befriend(server, "alice", "bob")
    alice = await online(server, "alice@localhost/phone")
    bob = await login(server, "bob@localhost/phone")
    c, info = caps_for(f"{DEVICES}+notify")
    lying = DiscoInfo(info.identities, (*info.features, "urn:example:extra"))
    await bob.send(f"<presence>{c}</presence>")
    await answer_caps_query(server, bob, bob.take(), lying)
    alice.take()
    await publish(alice, NICK, nick("Alice"))
    assert len(events(bob.take())) == 1


async def test_last_items_on_initial_presence(server: Server) -> None:
    await befriend(server, "alice", "bob")
    alice = await online(server, "alice@localhost/phone")
    await publish(alice, NICK, nick("Alice"))
    await publish(alice, DEVICES, DEVICE_LIST, item_id="current")
    await publish(alice, "urn:example:quiet", "<q xmlns='urn:example'/>",
                  options=(("pubsub#send_last_published_item", "never"),))
    bob = await login(server, "bob@localhost/phone")
    answer, _ = await publish(bob, NICK, nick("Bob"))
    assert answer.get("type") == "result"
    got = events(await available(server, bob))
    assert sorted((sender, e.node) for sender, e in got if isinstance(e, EventItems)) == [
        ("alice@localhost", DEVICES), ("alice@localhost", NICK), ("bob@localhost", NICK),
    ]
    # With caps, only the nodes the client wants.
    tablet = await login(server, "bob@localhost/tablet")
    c, info = caps_for(f"{NICK}+notify")
    await tablet.send(f"<presence>{c}</presence>")
    got = events(await answer_caps_query(server, tablet, tablet.take(), info))
    assert sorted((sender, e.node) for sender, e in got if isinstance(e, EventItems)) == [
        ("alice@localhost", NICK), ("bob@localhost", NICK),
    ]


async def test_approving_a_subscription_sends_the_last_items(server: Server) -> None:
    alice = await online(server, "alice@localhost/phone")
    bob = await online(server, "bob@localhost/phone")
    await publish(alice, NICK, nick("Alice"))
    await bob.send("<presence type='subscribe' to='alice@localhost'/>")
    alice.take()
    await alice.send("<presence type='subscribed' to='bob@localhost'/>")
    await settled(server)
    got = events(bob.take())
    assert [(sender, item_ids(e)) for sender, e in got] == [("alice@localhost", ("current",))]


async def test_retract_notifies_and_removes(server: Server) -> None:
    await befriend(server, "alice", "bob")
    alice = await online(server, "alice@localhost/phone")
    bob = await online(server, "bob@localhost/phone")
    await publish(alice, LIST, "<entry xmlns='urn:example:list'/>", item_id="a@muc",
                  options=(("pubsub#max_items", "max"),))
    await publish(alice, LIST, "<entry xmlns='urn:example:list'/>", item_id="b@muc")
    bob.take()
    await alice.send(f"<iq type='set' id='ret'><pubsub xmlns='{PUBSUB}'><retract node='{LIST}' notify='true'>"
                     "<item id='b@muc'/></retract></pubsub></iq>")
    got = alice.take()
    assert reply(got, "ret").get("type") == "result"
    for received in (got, bob.take()):
        ((_, event),) = events(received)
        assert event == EventItems(LIST, retracted=("b@muc",))
    assert [i.id for i in fetched(await items(alice, LIST)).items] == ["a@muc"]
    await alice.send(f"<iq type='set' id='ret'><pubsub xmlns='{PUBSUB}'><retract node='{LIST}'>"
                     "<item id='b@muc'/></retract></pubsub></iq>")
    assert condition(reply(alice.take(), "ret")) == "item-not-found"
    # The last item is now the remaining one.
    tablet = await login(server, "alice@localhost/tablet")
    got_events = events(await available(server, tablet))
    assert [item_ids(e) for _, e in got_events] == [("a@muc",)]


# Owner operations -----------------------------------------------------------------------------


async def test_configure_purge_and_delete(server: Server) -> None:
    await befriend(server, "alice", "bob")
    alice = await online(server, "alice@localhost/phone")
    bob = await online(server, "bob@localhost/phone")
    node = "urn:example:log"
    for i in range(3):
        await publish(alice, node, f"<e xmlns='urn:example'>{i}</e>", item_id=f"i{i}",
                      options=(("pubsub#max_items", "10"),))
    answer = await owner(alice, f"<configure node='{node}'>"
                                f"{form(('pubsub#max_items', '1'), form_type=f'{PUBSUB}#node_config')}</configure>")
    assert answer.get("type") == "result", xml(answer)
    assert [i.id for i in fetched(await items(alice, node)).items] == ["i2"]
    answer = await owner(alice, f"<configure node='{node}'>"
                                f"{form(('pubsub#access_model', 'sometimes'), form_type=f'{PUBSUB}#node_config')}"
                                "</configure>")
    assert condition(answer) == "not-acceptable"
    bob.take()
    alice.take()
    assert (await owner(alice, f"<purge node='{node}'/>")).get("type") == "result"
    assert events(bob.take()) == [("alice@localhost", EventPurge(node))]
    assert fetched(await items(alice, node)).items == ()
    assert (await owner(alice, f"<delete node='{node}'/>")).get("type") == "result"
    assert events(bob.take()) == [("alice@localhost", EventDelete(node))]
    assert condition(await items(alice, node)) == "item-not-found"
    assert condition(await owner(alice, f"<delete node='{node}'/>")) == "item-not-found"
    answer = await owner(alice, "<default/>", kind="get")
    x = answer.find(f"{{{OWNER}}}pubsub/{{{OWNER}}}default/{{jabber:x:data}}x")
    assert x is not None
    assert NodeConfig().with_form(DataForm("submit", DataForm.from_xml(x).fields), 1000) == NodeConfig()


async def test_create_refuses_an_existing_node(server: Server) -> None:
    alice = await online(server, "alice@localhost/phone")
    for expected in ("result", "error"):
        await alice.send(f"<iq type='set' id='create'><pubsub xmlns='{PUBSUB}'><create node='urn:example:x'/>"
                         "</pubsub></iq>")
        answer = reply(alice.take(), "create")
        assert answer.get("type") == expected
    assert condition(answer) == "conflict"
    assert fetched(await items(alice, "urn:example:x")).items == ()


async def test_node_limit(tmp_path: Path) -> None:
    async with running(tmp_path, modules={"pep": {"max_nodes": 2}}) as server:
        alice = await online(server, "alice@localhost/phone")
        for i, expected in enumerate(("result", "result", "error")):
            answer, _ = await publish(alice, f"urn:example:{i}", "<e xmlns='urn:example'/>")
            assert answer.get("type") == expected
        assert condition(answer) == "not-allowed"


def blob(size: int, mark: str = "x") -> str:
    return f"<e xmlns='urn:example'>{mark * size}</e>"


async def test_account_bytes_limit(tmp_path: Path, storage_url: str) -> None:
    """What all of an account's items take is bounded (``max_bytes``): a publish beyond it is
    refused; one that does not grow the account's items, or after a retraction, goes through."""
    config: dict[str, Any] = {"storage": {"url": storage_url}, "modules": {"pep": {"max_bytes": 65536}}}
    async with running(tmp_path, **config) as server:
        alice = await online(server, "alice@localhost/phone")
        for i, expected in enumerate(("result", "result", "result", "error")):
            answer, _ = await publish(alice, LIST, blob(20_000), item_id=f"i{i}", options=(("pubsub#max_items", "max"),))
            assert answer.get("type") == expected, xml(answer)
        assert condition(answer) == "resource-constraint"
        assert "65536 bytes" in (error_text(answer) or "")
        # Other nodes count too.
        answer, _ = await publish(alice, NICK, blob(10_000))
        assert condition(answer) == "resource-constraint"
        assert [i.id for i in fetched(await items(alice, LIST)).items] == ["i0", "i1", "i2"]
        # A replacement no larger is accepted.
        answer, _ = await publish(alice, LIST, blob(20_000, "y"), item_id="i1")
        assert answer.get("type") == "result", xml(answer)
    async with running(tmp_path, **config) as server:
        alice = await online(server, "alice@localhost/phone")
        answer, _ = await publish(alice, NICK, blob(10_000))
        assert condition(answer) == "resource-constraint"
        await alice.send(f"<iq type='set' id='ret'><pubsub xmlns='{PUBSUB}'><retract node='{LIST}'>"
                         "<item id='i0'/></retract></pubsub></iq>")
        assert reply(alice.take(), "ret").get("type") == "result"
        answer, _ = await publish(alice, NICK, blob(10_000))
        assert answer.get("type") == "result", xml(answer)
        # A node that drops its oldest item for the new one does not grow.
        await owner(alice, f"<configure node='{LIST}'>"
                           f"{form(('pubsub#max_items', '2'), form_type=f'{PUBSUB}#node_config')}</configure>")
        answer, _ = await publish(alice, LIST, blob(20_000), item_id="i3")
        assert answer.get("type") == "result", xml(answer)
        assert [i.id for i in fetched(await items(alice, LIST)).items] == ["i1", "i3"]
        # An account stored before the figure was kept has it counted from its items.
        await server.storage.kv.delete("localhost", "alice", USAGE)
        answer, _ = await publish(alice, "urn:example:more", blob(20_000))
        assert condition(answer) == "resource-constraint"
        await owner(alice, f"<purge node='{LIST}'/>")
        answer, _ = await publish(alice, "urn:example:more", blob(20_000))
        assert answer.get("type") == "result", xml(answer)


# Discovery ------------------------------------------------------------------------------------


async def disco(client: Client, query: str, to: str | None, node: str | None = None) -> Element:
    attrs = (f" to='{to}'" if to else "")
    node_attr = f" node='{node}'" if node else ""
    await client.send(f"<iq type='get' id='disco'{attrs}><query xmlns='{query}'{node_attr}/></iq>")
    return reply(client.take(), "disco")


async def test_discovery(server: Server) -> None:
    await befriend(server, "alice", "bob")
    alice = await online(server, "alice@localhost/phone")
    bob = await online(server, "bob@localhost/phone")
    mallory = await online(server, "mallory@localhost/phone")
    domain = await disco(mallory, ns.DISCO_INFO, "localhost")
    features = DiscoInfo.from_xml(domain[0]).features
    assert PUBLISH_OPTIONS in features
    account = DiscoInfo.from_xml((await disco(mallory, ns.DISCO_INFO, "alice@localhost"))[0])
    assert Identity("pubsub", "pep") in account.identities
    assert Identity("account", "registered") in account.identities
    assert PUBLISH_OPTIONS in account.features and f"{PUBSUB}#auto-create" in account.features
    await publish(alice, NICK, nick("Alice"))
    await publish(alice, DEVICES, DEVICE_LIST, options=(("pubsub#access_model", "open"),))
    await publish(alice, BOOKMARKS, "<conference xmlns='urn:xmpp:bookmarks:1'/>", item_id="r@muc",
                  options=(("pubsub#access_model", "whitelist"),))

    def nodes(answer: Element) -> list[str | None]:
        return [item.node for item in DiscoItems.from_xml(answer[0]).items]

    assert nodes(await disco(alice, ns.DISCO_ITEMS, None)) == [DEVICES, NICK, BOOKMARKS]
    assert nodes(await disco(bob, ns.DISCO_ITEMS, "alice@localhost")) == [DEVICES, NICK]
    assert nodes(await disco(mallory, ns.DISCO_ITEMS, "alice@localhost")) == [DEVICES]
    info = DiscoInfo.from_xml((await disco(mallory, ns.DISCO_INFO, "alice@localhost", DEVICES))[0])
    assert info.identities == (Identity("pubsub", "leaf"),)
    assert info.forms[0].value("pubsub#access_model") == "open"
    answer = await disco(mallory, ns.DISCO_INFO, "alice@localhost", NICK)
    assert condition(answer) == "item-not-found"
    listed = DiscoItems.from_xml((await disco(alice, ns.DISCO_ITEMS, None, BOOKMARKS))[0])
    assert [(i.jid, i.name) for i in listed.items] == [("alice@localhost", "r@muc")]
    assert listed.node == BOOKMARKS


# Storage --------------------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
async def storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
    else:
        async with postgres_schema() as (url, _, _):
            yield url


async def test_nodes_survive_a_restart(tmp_path: Path, storage_url: str) -> None:
    async with running(tmp_path, storage={"url": storage_url}) as server:
        alice = await online(server, "alice@localhost/phone")
        await publish(alice, DEVICES, DEVICE_LIST, options=(("pubsub#access_model", "open"),))
        await publish(alice, NICK, nick("Alice"))
        await publish(alice, NICK, nick("Alice Liddell"), item_id="second")
    async with running(tmp_path, storage={"url": storage_url}) as server:
        bob = await online(server, "bob@localhost/phone")
        got = fetched(await items(bob, DEVICES, to="alice@localhost"))
        assert [i.id for i in got.items] == ["current"]
        alice = await login(server, "alice@localhost/phone")
        arrived = events(await available(server, alice))
        assert sorted((e.node, item_ids(e)) for _, e in arrived) == [(DEVICES, ("current",)), (NICK, ("second",))]
        answer, _ = await publish(alice, DEVICES, DEVICE_LIST, options=(("pubsub#access_model", "open"),))
        assert answer.get("type") == "result", xml(answer)


async def test_deleted_account_loses_its_nodes(server: Server) -> None:
    alice = await online(server, "alice@localhost/phone")
    await publish(alice, NICK, nick("Alice"))
    await alice.close()
    assert await server.delete_account("localhost", "alice")
    assert await server.storage.maps.items("localhost", "alice", "pep") == {}
    again = await online(server, "alice@localhost/phone")
    assert condition(await items(again, NICK)) == "item-not-found"

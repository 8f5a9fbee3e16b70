"""XEP-0402 native bookmarks kept in step with XEP-0048 bookmarks in private XML storage (XEP-0049)
and in the legacy PEP node (XEP-0411): both directions, retraction, notifications, bad input."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from xml.etree.ElementTree import Element

from schnack.server.app import Server
from schnack.server.modules.pep import Pep
from schnack.server.modules.pep.store import Node
from schnack.xmpp import ns
from schnack.xmpp.jid import JID
from schnack.xmpp.parser import parse_frame
from schnack.xmpp.payloads.bookmarks import (
    COMPAT,
    COMPAT_PEP,
    CONVERSION,
    LEGACY,
    NS,
    Conference,
    Storage,
    Url,
)
from schnack.xmpp.payloads.disco import INFO, DiscoInfo
from schnack.xmpp.payloads.pubsub import OWNER, PUBSUB, EventItems, NodeConfig
from schnack.xmpp.xml import serialize

from ...harness import Client, running, xml
from .messaging import condition
from .test_pep import (
    app_condition,
    befriend,
    events,
    fetched,
    items,
    online,
    owner,
    publish,
    publish_xml,
    reply,
    storage_url,  # noqa: F401 (a fixture)
)

COUNCIL = "council@conference.localhost"
LOBBY = "lobby@conference.localhost"
# XEP-0402 §4: the publish-options clients send with each native bookmark.
NATIVE_OPTIONS = (
    ("pubsub#persist_items", "true"),
    ("pubsub#max_items", "max"),
    ("pubsub#send_last_published_item", "never"),
    ("pubsub#access_model", "whitelist"),
)
LEGACY_TWO = (
    "<storage xmlns='storage:bookmarks'>"
    f"<conference jid='{COUNCIL}' name='Council' autojoin='true'><nick>alice</nick></conference>"
    f"<conference jid='{LOBBY}' name='Lobby'/>"
    "<url name='Home' url='https://example.org/'/></storage>"
)


def parse(text: str) -> Element:
    return parse_frame(text.encode(), 10**6)


def native(name: str, autojoin: bool = False, nick: str | None = None) -> str:
    join = " autojoin='true'" if autojoin else ""
    inner = f"<nick>{nick}</nick>" if nick else ""
    return f"<conference xmlns='{NS}' name='{name}'{join}>{inner}</conference>"


async def private(client: Client, kind: str, content: str, iq_id: str = "p") -> tuple[Element, list[Element]]:
    """A private-storage IQ; the answer and the other elements the client got meanwhile."""
    await client.send(f"<iq type='{kind}' id='{iq_id}'><query xmlns='{ns.PRIVATE}'>{content}</query></iq>")
    got = client.take()
    answer = reply(got, iq_id)
    return answer, [el for el in got if el is not answer]


async def legacy_view(client: Client) -> Storage:
    """What a XEP-0048 client reads from private XML storage."""
    answer, _ = await private(client, "get", f"<storage xmlns='{LEGACY}'/>", "get")
    assert answer.get("type") == "result", xml(answer)
    query = answer.find(f"{{{ns.PRIVATE}}}query")
    assert query is not None
    (storage,) = list(query)
    return Storage.from_xml(storage)


async def native_view(client: Client) -> dict[str | None, Conference]:
    """The native items, as bookmarks by room."""
    result = fetched(await items(client, NS))
    return {
        item.id: Conference.from_native(item.id, item.payload)
        for item in result.items
        if item.payload is not None
    }


def pep_of(server: Server) -> Pep:
    pep = server.modules["pep"]
    assert isinstance(pep, Pep)
    return pep


async def legacy_node(server: Server) -> Node | None:
    return await pep_of(server).store.node(JID.parse("alice@localhost"), LEGACY)


def native_events(got: list[Element]) -> list[EventItems]:
    found = []
    for sender, event in events(got):
        assert sender == "alice@localhost"
        if isinstance(event, EventItems) and event.node == NS:
            found.append(event)
    return found


async def test_private_storage_write_becomes_native_items(server: Server) -> None:
    await befriend(server, "alice", "bob")
    phone = await online(server, "alice@localhost/phone")
    laptop = await online(server, "alice@localhost/laptop")
    bob = await online(server, "bob@localhost/phone")
    answer, rest = await private(phone, "set", LEGACY_TWO)
    assert answer.get("type") == "result", xml(answer)
    # Each new room is notified to every resource of the owner, and to no one else (whitelist).
    for got in (rest, laptop.take()):
        published = sorted(
            item.id or "" for e in native_events(got) for item in e.items if item.payload is not None
        )
        assert published == [COUNCIL, LOBBY]
        # XEP-0411: subscribers of the legacy PEP node hear of a private storage write too.
        (legacy,) = [e for _, e in events(got) if isinstance(e, EventItems) and e.node == LEGACY]
        (item,) = legacy.items
        assert item.payload is not None and Storage.from_xml(item.payload) == Storage.from_xml(
            parse(LEGACY_TWO)
        )
    assert bob.take() == []
    assert await native_view(phone) == {
        COUNCIL: Conference(JID.parse(COUNCIL), "Council", True, "alice"),
        LOBBY: Conference(JID.parse(LOBBY), "Lobby"),
    }
    await phone.send(
        f"<iq type='get' id='cfg'><pubsub xmlns='{OWNER}'><configure node='{NS}'/></pubsub></iq>"
    )
    form = reply(phone.take(), "cfg").find(f"{{{OWNER}}}pubsub/{{{OWNER}}}configure/{{jabber:x:data}}x")
    assert form is not None
    values = {f.get("var"): f.findtext("{jabber:x:data}value") for f in form}
    assert values["pubsub#access_model"] == "whitelist"
    assert values["pubsub#max_items"] == "1000"
    assert values["pubsub#send_last_published_item"] == "never"
    # A client following XEP-0402 §4 publishes to the node with matching publish-options.
    answer, _ = await publish(
        phone, NS, native("Side"), item_id="side@conference.localhost", options=NATIVE_OPTIONS
    )
    assert answer.get("type") == "result", xml(answer)
    assert [tuple(i.id for i in e.items) for e in native_events(laptop.take())] == [
        ("side@conference.localhost",)
    ]

    # Storing the list again without the lobby retracts its item; an unchanged room is not republished.
    without_lobby = LEGACY_TWO.replace(f"<conference jid='{LOBBY}' name='Lobby'/>", "")
    answer, rest = await private(laptop, "set", without_lobby, "p2")
    assert answer.get("type") == "result", xml(answer)
    changes = native_events(rest)
    assert [(e.items, e.retracted) for e in changes] == [((), (LOBBY,)), ((), ("side@conference.localhost",))]
    assert list(await native_view(laptop)) == [COUNCIL]


async def test_native_publish_and_retract_show_in_private_storage(server: Server) -> None:
    phone = await online(server, "alice@localhost/phone")
    answer, _ = await private(
        phone, "set", "<storage xmlns='storage:bookmarks'><url url='https://example.org/'/></storage>"
    )
    assert answer.get("type") == "result"
    for room, name in ((COUNCIL, "Council"), (LOBBY, "Lobby")):
        answer, rest = await publish(
            phone, NS, native(name, True, "al"), item_id=room, options=NATIVE_OPTIONS
        )
        assert answer.get("type") == "result", xml(answer)
        assert [tuple(item.id for item in e.items) for e in native_events(rest)] == [(room,)]
    assert await legacy_view(phone) == Storage(
        (
            Conference(JID.parse(COUNCIL), "Council", True, "al"),
            Conference(JID.parse(LOBBY), "Lobby", True, "al"),
        ),
        (Url("https://example.org/"),),
    )
    await phone.send(
        f"<iq type='set' id='ret'><pubsub xmlns='{PUBSUB}'><retract node='{NS}' notify='true'>"
        f"<item id='{COUNCIL}'/></retract></pubsub></iq>"
    )
    got = phone.take()
    assert reply(got, "ret").get("type") == "result"
    assert [e.retracted for e in native_events(got)] == [(COUNCIL,)]
    view = await legacy_view(phone)
    assert [str(c.jid) for c in view.conferences] == [LOBBY]
    assert view.urls == (Url("https://example.org/"),)
    # Purging the native node empties the legacy list too.
    await phone.send(f"<iq type='set' id='purge'><pubsub xmlns='{OWNER}'><purge node='{NS}'/></pubsub></iq>")
    assert reply(phone.take(), "purge").get("type") == "result"
    assert (await legacy_view(phone)).conferences == ()


async def test_native_and_legacy_writes_at_once_leave_both_forms_alike(
    tmp_path: Path, storage_url: str  # noqa: F811
) -> None:
    """Native publishes on two devices and a private storage write on a third, at the same
    time: whichever wins, the legacy copy ends up listing what the native node holds."""
    async with running(tmp_path, storage={"url": storage_url}) as server:
        phone = await online(server, "alice@localhost/phone")
        tablet = await online(server, "alice@localhost/tablet")
        laptop = await online(server, "alice@localhost/laptop")
        for turn in range(30):
            legacy = f"<storage xmlns='storage:bookmarks'><conference jid='legacy{turn}@conference.localhost'/></storage>"
            await asyncio.gather(
                phone.send(publish_xml(NS, native("N"), f"phone{turn}@conference.localhost", None, NATIVE_OPTIONS)),
                tablet.send(publish_xml(NS, native("N"), f"tablet{turn}@conference.localhost", None, NATIVE_OPTIONS)),
                laptop.send(f"<iq type='set' id='p'><query xmlns='{ns.PRIVATE}'>{legacy}</query></iq>"),
            )
            for client, iq_id in ((phone, "pub"), (tablet, "pub"), (laptop, "p")):
                assert reply(client.take(), iq_id).get("type") == "result"
            natives = sorted(str(room) for room in await native_view(phone))
            assert sorted(str(c.jid) for c in (await legacy_view(phone)).conferences) == natives, turn
            (item,) = fetched(await items(phone, LEGACY)).items
            assert item.payload is not None
            assert sorted(str(c.jid) for c in Storage.from_xml(item.payload).conferences) == natives, turn


def node_config(*fields: tuple[str, str]) -> str:
    """An owner's configure request (XEP-0060 §8.2.4) of the native node."""
    values = "".join(f"<field var='{var}'><value>{value}</value></field>" for var, value in fields)
    return (
        f"<configure node='{NS}'><x xmlns='jabber:x:data' type='submit'>"
        f"<field var='FORM_TYPE' type='hidden'><value>{PUBSUB}#node_config</value></field>{values}</x></configure>"
    )


async def test_configuration_that_drops_native_items_drops_their_legacy_copies(server: Server) -> None:
    """Lowering max_items or turning persistence off removes native items (XEP-0060 §8.2.4), as
    a purge does: the legacy forms lose them too, so a legacy client does not bring them back."""
    phone = await online(server, "alice@localhost/phone")
    await publish(phone, LEGACY, LEGACY_TWO)
    await publish(phone, NS, native("Side"), item_id="side@conference.localhost", options=NATIVE_OPTIONS)
    assert len((await legacy_view(phone)).conferences) == 3
    answer = await owner(phone, node_config(("pubsub#max_items", "1")))
    assert answer.get("type") == "result", xml(answer)
    assert list(await native_view(phone)) == ["side@conference.localhost"]
    for stored in ((await legacy_view(phone)), Storage.from_xml(_legacy_item(await items(phone, LEGACY)))):
        assert [str(c.jid) for c in stored.conferences] == ["side@conference.localhost"]
        assert stored.urls == (Url("https://example.org/", "Home"),)
    # What a legacy client reads and writes back keeps the native node as it is.
    view = await legacy_view(phone)
    answer, _ = await private(phone, "set", serialize(view.to_xml()))
    assert answer.get("type") == "result", xml(answer)
    assert list(await native_view(phone)) == ["side@conference.localhost"]
    answer = await owner(phone, node_config(("pubsub#persist_items", "false")))
    assert answer.get("type") == "result", xml(answer)
    assert (await legacy_view(phone)).conferences == ()


def _legacy_item(answer: Element) -> Element:
    (item,) = fetched(answer).items
    assert item.payload is not None
    return item.payload


async def test_legacy_pep_node_in_both_directions(server: Server) -> None:
    phone = await online(server, "alice@localhost/phone")
    laptop = await online(server, "alice@localhost/laptop")
    # XEP-0411 §3: a legacy client publishes its whole list to storage:bookmarks.
    answer, rest = await publish(phone, LEGACY, LEGACY_TWO, options=(("pubsub#access_model", "whitelist"),))
    assert answer.get("type") == "result", xml(answer)
    for got in (rest, laptop.take()):
        rooms = sorted(item.id or "" for e in native_events(got) for item in e.items)
        assert rooms == [COUNCIL, LOBBY]
    assert sorted(str(room) for room in await native_view(phone)) == [COUNCIL, LOBBY]
    assert [str(c.jid) for c in (await legacy_view(phone)).conferences] == [COUNCIL, LOBBY]
    # A native publish updates the legacy node, with its notification.
    answer, rest = await publish(
        phone, NS, native("Side"), item_id="side@conference.localhost", options=NATIVE_OPTIONS
    )
    assert answer.get("type") == "result", xml(answer)
    legacy_events = [e for _, e in events(rest) if isinstance(e, EventItems) and e.node == LEGACY]
    ((item,),) = [e.items for e in legacy_events]
    assert item.payload is not None
    assert [str(c.jid) for c in Storage.from_xml(item.payload).conferences] == [
        COUNCIL,
        LOBBY,
        "side@conference.localhost",
    ]
    (stored,) = fetched(await items(laptop, LEGACY)).items
    assert stored.payload is not None and serialize(stored.payload) == serialize(item.payload)


async def test_legacy_pep_node_appears_when_first_read(server: Server) -> None:
    phone = await online(server, "alice@localhost/phone")
    await publish(phone, NS, native("Council", True), item_id=COUNCIL, options=NATIVE_OPTIONS)
    # Nobody used the legacy node yet, so nothing was published there.
    assert await legacy_node(server) is None
    (stored,) = fetched(await items(phone, LEGACY)).items
    assert stored.payload is not None
    assert Storage.from_xml(stored.payload) == Storage((Conference(JID.parse(COUNCIL), "Council", True),))
    node = await legacy_node(server)
    assert node is not None and node.config == NodeConfig(access_model="whitelist")


async def test_bookmark_nodes_stay_private_without_publish_options(server: Server) -> None:
    """XEP-0402 §3, XEP-0048 §3.2: bookmarks are for the owner alone, even from a client that
    publishes without publish-options (PEP's default would show them to every contact)."""
    await befriend(server, "alice", "bob")
    phone = await online(server, "alice@localhost/phone")
    bob = await online(server, "bob@localhost/phone")
    answer, _ = await publish(phone, NS, native("Council", True), item_id=COUNCIL)
    assert answer.get("type") == "result", xml(answer)
    answer, _ = await publish(phone, LEGACY, LEGACY_TWO)
    assert answer.get("type") == "result", xml(answer)
    assert bob.take() == []
    for node in (NS, LEGACY):
        refused = await items(bob, node, to="alice@localhost")
        assert condition(refused) == "not-allowed" and app_condition(refused) == "closed-node"
        # Neither can the owner open them up.
        opened = await owner(
            phone,
            f"<configure node='{node}'><x xmlns='jabber:x:data' type='submit'>"
            f"<field var='FORM_TYPE' type='hidden'><value>{PUBSUB}#node_config</value></field>"
            "<field var='pubsub#access_model'><value>presence</value></field></x></configure>",
        )
        assert condition(opened) == "not-acceptable"
        assert condition(await items(bob, node, to="alice@localhost")) == "not-allowed"
    answer, _ = await publish(
        phone, NS, native("Lobby"), item_id=LOBBY, options=(("pubsub#access_model", "open"),)
    )
    assert condition(answer) == "conflict" and app_condition(answer) == "precondition-not-met"
    await owner(phone, f"<delete node='{NS}'/>")
    await phone.send(f"<iq type='set' id='create'><pubsub xmlns='{PUBSUB}'><create node='{NS}'/></pubsub></iq>")
    created = reply(phone.take(), "create")
    assert created.get("type") == "result", xml(created)
    assert condition(await items(bob, NS, to="alice@localhost")) == "not-allowed"


async def test_bookmark_nodes_stored_open_are_private_all_the_same(server: Server) -> None:
    """A bookmarks node stored with another access model (as one made before nodes were kept
    private could be) is read as whitelist."""
    await befriend(server, "alice", "bob")
    phone = await online(server, "alice@localhost/phone")
    bob = await online(server, "bob@localhost/phone")
    answer, _ = await publish(phone, NS, native("Council", True), item_id=COUNCIL)
    assert answer.get("type") == "result", xml(answer)
    store = pep_of(server).store
    alice = JID.parse("alice@localhost")
    stored = await store.node(alice, NS)
    assert stored is not None
    await store.save(alice, replace(stored, config=replace(stored.config, access_model="presence")))
    refused = await items(bob, NS, to="alice@localhost")
    assert condition(refused) == "not-allowed" and app_condition(refused) == "closed-node"
    await publish(phone, NS, native("Lobby"), item_id=LOBBY)
    assert bob.take() == []


async def test_bad_bookmarks_are_refused_and_not_stored(server: Server) -> None:
    phone = await online(server, "alice@localhost/phone")
    answer, _ = await private(
        phone, "set", "<storage xmlns='storage:bookmarks'><conference name='no room'/></storage>"
    )
    assert condition(answer) == "not-acceptable"
    assert await legacy_view(phone) == Storage()
    answer, _ = await publish(phone, NS, native("Council"), item_id=None)
    assert condition(answer) == "bad-request" and app_condition(answer) == "invalid-payload"
    answer, _ = await publish(phone, NS, "<conference xmlns='storage:bookmarks'/>", item_id=COUNCIL)
    assert condition(answer) == "bad-request" and app_condition(answer) == "invalid-payload"
    answer, _ = await publish(phone, LEGACY, "<storage xmlns='storage:bookmarks'><url/></storage>")
    assert condition(answer) == "bad-request" and app_condition(answer) == "invalid-payload"
    await phone.send(f"<iq type='get' id='items'><pubsub xmlns='{PUBSUB}'><items node='{NS}'/></pubsub></iq>")
    assert condition(reply(phone.take(), "items")) == "item-not-found"


async def test_account_advertises_compatibility(server: Server) -> None:
    phone = await online(server, "alice@localhost/phone")
    await phone.send(f"<iq type='get' id='disco' to='alice@localhost'><query xmlns='{ns.DISCO_INFO}'/></iq>")
    query = reply(phone.take(), "disco").find(INFO)
    assert query is not None
    features = DiscoInfo.from_xml(query).features
    assert {COMPAT, COMPAT_PEP, CONVERSION} <= set(features)

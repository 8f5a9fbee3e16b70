"""XEP-0280 message carbons: enabling, received and sent copies, eligibility and the private hints."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from xml.etree.ElementTree import Element

import pytest

from bench.ports import free_port
from schnack.server.app import Server
from schnack.server.component import ACCEPT
from schnack.server.modules.carbons import SENT_REMEMBERED, copy_of
from schnack.server.modules.e2e import REFUSAL
from schnack.xmpp import ns
from schnack.xmpp.jid import JID
from schnack.xmpp.parser import parse_frame
from schnack.xmpp.payloads.carbons import NS, PRIVATE, RULES, Carbon
from schnack.xmpp.payloads.disco import DiscoInfo
from schnack.xmpp.stanza import Stanza

from ...harness import Client, running, xml
from ..components import MemoryComponent, open_component
from .contacts import presences
from .groups import MODULES, ROOM, USER, join, join_xml, online, private_group
from .messaging import OMEMO, ROUTING_ONLY, announce, body, chat, condition, error_text, login

MESSAGE = f"{{{ns.CLIENT}}}message"
NO_COPY = "{urn:xmpp:hints}no-copy"


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    """Routing, offline storage and carbons; tests announce resources themselves."""
    async with running(tmp_path, modules=ROUTING_ONLY) as srv:
        yield srv


async def toggle(client: Client, enable: bool = True, to: str | None = None) -> Element:
    """Send <enable/> or <disable/>; return the reply."""
    address = f" to='{to}'" if to else ""
    await client.send(
        f"<iq type='set' id='c1'{address}><{'enable' if enable else 'disable'} xmlns='{NS}'/></iq>"
    )
    (reply,) = client.take()
    return reply


async def device(
    server: Server, jid: str, priority: int = 0, *, carbons: bool = True, available: bool = True
) -> Client:
    """A resource that logged in, maybe enabled carbons, and maybe sent initial presence."""
    client = await login(server, jid)
    if carbons:
        reply = await toggle(client)
        assert reply.get("type") == "result", xml(reply)
    if available:
        announce(client, priority)
    return client


def copies(client: Client, direction: str) -> list[Element]:
    """The messages inside the carbons ``client`` got; everything it got must be such a carbon.

    Each wrapper is checked against XEP-0280 §7 and §8: from the account's bare JID, to the
    resource's full JID, of the original's type, with exactly the carbon inside.
    """
    return [unwrap(el, client.jid, direction) for el in client.take()]


def unwrap(el: Element, jid: str, direction: str) -> Element:
    """The message inside the carbon ``el`` that resource ``jid`` got, checked as in :func:`copies`."""
    assert el.tag == MESSAGE, xml(el)
    assert el.get("from") == jid.partition("/")[0], xml(el)
    assert el.get("to") == jid, xml(el)
    (inner,) = el
    carbon = Carbon.from_xml(inner)
    assert carbon.direction == direction, xml(el)
    assert el.get("type") == carbon.message.get("type"), xml(el)
    return carbon.message


def ids(elements: list[Element]) -> list[str | None]:
    return [el.get("id") for el in elements]


# Enabling and disabling (§4, §5, §10.1) ----------------------------------------------------------


async def test_enable_and_disable_again_are_no_errors(server: Server) -> None:
    client = await login(server, "alice@localhost/phone")
    for enable, to in [(True, None), (True, "alice@localhost"), (False, None), (False, "alice@localhost")]:
        reply = await toggle(client, enable, to)
        assert reply.get("type") == "result", xml(reply)
        assert reply.get("id") == "c1" and reply.get("to") == "alice@localhost/phone"
        assert len(reply) == 0


async def test_enabling_for_another_account_is_not_allowed(server: Server) -> None:
    await login(server, "bob@localhost/laptop")
    alice = await login(server, "alice@localhost/phone")
    for enable in (True, False):
        reply = await toggle(alice, enable, "bob@localhost")
        assert condition(reply) == "not-allowed"
        assert error_text(reply) == "carbons are enabled by each client for itself"


async def test_get_is_refused(server: Server) -> None:
    client = await login(server, "alice@localhost/phone")
    await client.send(f"<iq type='get' id='g1'><enable xmlns='{NS}'/></iq>")
    (reply,) = client.take()
    assert condition(reply) == "feature-not-implemented"


async def test_domain_announces_carbons(tmp_path: Path) -> None:
    async with running(tmp_path) as server:
        client = await login(server, "alice@localhost/phone")
        await client.send(f"<iq type='get' id='d1' to='localhost'><query xmlns='{ns.DISCO_INFO}'/></iq>")
        (reply,) = client.take()
    query = reply.find(f"{{{ns.DISCO_INFO}}}query")
    assert query is not None
    features = DiscoInfo.from_xml(query).features
    # §6.2: every rule of §6.1 is followed, group private messages included.
    assert {NS, RULES} <= set(features)


async def test_disabled_resources_get_no_copies(server: Server) -> None:
    alice = await login(server, "alice@localhost/phone")
    bob = await device(server, "bob@localhost/one")
    other = await device(server, "bob@localhost/two")
    assert (await toggle(other, enable=False)).get("type") == "result"
    await alice.send(chat("bob@localhost/one"))
    assert ids(bob.take()) == ["m1"]
    assert other.take() == []


# Received copies (§7) --------------------------------------------------------------------------


async def test_message_to_a_full_jid_is_copied_to_the_other_enabled_resources(server: Server) -> None:
    alice = await login(server, "alice@localhost/phone")
    one = await device(server, "bob@localhost/one")
    two = await device(server, "bob@localhost/two")
    three = await device(server, "bob@localhost/three", carbons=False)
    await alice.send(chat("bob@localhost/one", "to one", extra="<thread>t1</thread>"))
    (original,) = one.take()
    assert original.tag == MESSAGE and body(original) == "to one"
    (copy,) = copies(two, "received")
    assert xml(copy) == xml(original)
    assert copy.get("from") == "alice@localhost/phone" and copy.get("to") == "bob@localhost/one"
    assert copy.findtext(f"{{{ns.CLIENT}}}thread") == "t1"
    assert three.take() == []
    assert alice.take() == []


async def test_message_to_the_bare_jid_is_copied_below_the_top_priority(server: Server) -> None:
    alice = await login(server, "alice@localhost/phone")
    top = [await device(server, f"bob@localhost/top{i}", 5) for i in (1, 2)]
    low = await device(server, "bob@localhost/low", 1)
    plain = await device(server, "bob@localhost/plain", 1, carbons=False)
    await alice.send(chat("bob@localhost", "to the top"))
    for client in top:
        # The original only: RFC 6121 delivery already reached these resources.
        assert [body(el) for el in client.take()] == ["to the top"]
    assert [body(el) for el in copies(low, "received")] == ["to the top"]
    assert plain.take() == []


async def test_resources_without_presence_get_no_copies(server: Server) -> None:
    alice = await login(server, "alice@localhost/phone")
    await device(server, "bob@localhost/one")
    silent = await device(server, "bob@localhost/silent", available=False)
    await alice.send(chat("bob@localhost"))
    assert silent.take() == []


async def test_message_stored_offline_is_copied_to_negative_priority_resources(server: Server) -> None:
    alice = await login(server, "alice@localhost/phone")
    bot = await device(server, "bob@localhost/bot", -1)
    await alice.send(chat("bob@localhost", "for later"))
    assert alice.take() == []
    assert await server.storage.archive.count("localhost", "bob", "offline") == 1
    assert [body(el) for el in copies(bot, "received")] == ["for later"]


async def test_refused_message_is_not_copied(tmp_path: Path) -> None:
    async with running(
        tmp_path, modules={"disable": ROUTING_ONLY["disable"], "offline": {"max_messages": 1}}
    ) as server:
        alice = await login(server, "alice@localhost/phone")
        bot = await device(server, "bob@localhost/bot", -1)
        await alice.send(chat("bob@localhost", "first", id="m1"))
        await alice.send(chat("bob@localhost", "second", id="m2"))
        (error,) = alice.take()
        assert error.get("id") == "m2" and condition(error) == "service-unavailable"
        assert ids(copies(bot, "received")) == ["m1"]


# Sent copies (§8) ----------------------------------------------------------------------------------


@pytest.mark.parametrize("sender_enabled", [True, False])
async def test_sent_message_is_copied_to_the_other_enabled_resources(
    server: Server, sender_enabled: bool
) -> None:
    phone = await device(server, "alice@localhost/phone", carbons=sender_enabled)
    laptop = await device(server, "alice@localhost/laptop")
    tablet = await device(server, "alice@localhost/tablet", carbons=False)
    watch = await device(server, "alice@localhost/watch", available=False)
    bob = await device(server, "bob@localhost/one", carbons=False)
    await phone.send(chat("bob@localhost", "sent from the phone"))
    (copy,) = copies(laptop, "sent")
    assert copy.get("from") == "alice@localhost/phone" and copy.get("to") == "bob@localhost"
    assert body(copy) == "sent from the phone"
    assert [body(el) for el in bob.take()] == ["sent from the phone"]
    for client in (phone, tablet, watch):
        assert client.take() == []


async def test_conversation_reaches_every_device_in_order(server: Server) -> None:
    alice = await device(server, "alice@localhost/phone")
    alice_laptop = await device(server, "alice@localhost/laptop")
    bob = await device(server, "bob@localhost/phone", 5)
    bob_laptop = await device(server, "bob@localhost/laptop", 0)
    await alice.send(chat("bob@localhost", "hello", id="a1"))
    await bob.send(chat("alice@localhost/phone", "hello back", id="b1"))
    wrapped = alice_laptop.take() + bob_laptop.take()
    directions = [(el.get("to"), el[0].tag.rpartition("}")[2], el[0][0][0].get("id")) for el in wrapped]
    assert directions == [
        ("alice@localhost/laptop", "sent", "a1"),
        ("alice@localhost/laptop", "received", "b1"),
        ("bob@localhost/laptop", "received", "a1"),
        ("bob@localhost/laptop", "sent", "b1"),
    ]
    assert ids(alice.take()) == ["b1"]
    assert ids(bob.take()) == ["a1"]


async def test_message_to_another_server_is_copied(server: Server) -> None:
    phone = await device(server, "alice@localhost/phone")
    laptop = await device(server, "alice@localhost/laptop")
    await phone.send(chat("juliet@capulet.example/balcony", "far away"))
    sent, bounced = laptop.take()
    assert unwrap(sent, laptop.jid, "sent").get("to") == "juliet@capulet.example/balcony"
    # Until there are server-to-server links the sender learns that it did not go out.
    (error,) = phone.take()
    assert condition(error) == "remote-server-not-found"
    assert condition(unwrap(bounced, laptop.jid, "received")) == "remote-server-not-found"


# Errors (§6.1) -------------------------------------------------------------------------------------


async def test_error_answering_a_copied_message_is_copied_as_received(server: Server) -> None:
    """§6.1: the other devices learn that a message they saw go out failed."""
    phone = await device(server, "alice@localhost/phone", carbons=False)
    laptop = await device(server, "alice@localhost/laptop")
    tablet = await device(server, "alice@localhost/tablet", carbons=False)
    await phone.send(chat("nobody@localhost", "into the void", id="lost"))
    (error,) = phone.take()
    assert condition(error) == "service-unavailable"
    sent, bounced = laptop.take()
    assert unwrap(sent, laptop.jid, "sent").get("id") == "lost"
    copy = unwrap(bounced, laptop.jid, "received")
    assert (copy.get("id"), copy.get("from"), copy.get("to")) == ("lost", "nobody@localhost", "alice@localhost/phone")
    assert condition(copy) == "service-unavailable"
    assert tablet.take() == []


def bounce(id_: str, to: str) -> str:
    return (f"<message type='error' id='{id_}' to='{to}'>"
            f"<error type='cancel'><item-not-found xmlns='{ns.STANZA_ERRORS}'/></error></message>")


async def test_errors_are_matched_among_the_last_messages_while_carbons_are_on(server: Server) -> None:
    """The messages that errors are matched against are bounded per account, and forgotten
    once none of its resources has carbons enabled."""
    phone = await device(server, "alice@localhost/phone")
    laptop = await device(server, "alice@localhost/laptop")
    bob = await device(server, "bob@localhost/one", carbons=False)
    for n in range(SENT_REMEMBERED + 1):
        await phone.send(chat("bob@localhost", f"number {n}", id=f"m{n}"))
    assert len(copies(laptop, "sent")) == SENT_REMEMBERED + 1
    await bob.send(bounce("m0", "alice@localhost/phone"))
    await bob.send(bounce(f"m{SENT_REMEMBERED}", "alice@localhost/phone"))
    assert ids(copies(laptop, "received")) == [f"m{SENT_REMEMBERED}"]
    assert len(phone.take()) == 2
    await phone.send(chat("bob@localhost", "one more", id="last"))
    assert ids(copies(laptop, "sent")) == ["last"]
    for client in (laptop, phone):
        assert (await toggle(client, False)).get("type") == "result"
    assert (await toggle(laptop)).get("type") == "result"
    await bob.send(bounce("last", "alice@localhost/phone"))
    assert laptop.take() == []
    assert ids(phone.take()) == ["last"]


async def test_errors_answering_no_copied_message_are_not_copied(server: Server) -> None:
    """Only an error from the recipient of a message that was copied as sent is copied (§6.1)."""
    phone = await device(server, "alice@localhost/phone")
    laptop = await device(server, "alice@localhost/laptop")
    await device(server, "bob@localhost/one", carbons=False)
    await phone.send(chat("bob@localhost", "hello", id="m1"))
    assert ids(copies(laptop, "sent")) == ["m1"]
    eve = await device(server, "eve@localhost/one", carbons=False)
    for id_ in ("m1", "other"):
        await eve.send(bounce(id_, "alice@localhost/phone"))
    assert len(phone.take()) == 2
    assert laptop.take() == []


async def test_message_refused_by_the_policy_is_not_copied(tmp_path: Path) -> None:
    with_policy = [name for name in ROUTING_ONLY["disable"] if name != "e2e"]
    async with running(tmp_path, modules={"disable": with_policy}) as server:
        phone = await device(server, "alice@localhost/phone")
        laptop = await device(server, "alice@localhost/laptop")
        await device(server, "bob@localhost/one")
        await phone.send(chat("bob@localhost", "plain words", id="plain"))
        (error,) = phone.take()
        assert error_text(error) == REFUSAL
        assert laptop.take() == []
        await phone.send(chat("bob@localhost", "see the OMEMO element", id="omemo", extra=OMEMO))
        (copy,) = copies(laptop, "sent")
        assert copy.get("id") == "omemo"
        assert copy.find(f"{{{ns.OMEMO_LEGACY}}}encrypted") is not None


# Messages to one's own account ---------------------------------------------------------------------


@pytest.mark.parametrize("to", ["alice@localhost", None])
async def test_message_to_own_bare_jid_is_copied_as_received(server: Server, to: str | None) -> None:
    phone = await device(server, "alice@localhost/phone", 0)
    laptop = await device(server, "alice@localhost/laptop", 5)
    tablet = await device(server, "alice@localhost/tablet", 0)
    await phone.send(chat(to, "note to self"))
    (original,) = laptop.take()
    assert original.get("to") == "alice@localhost"
    (copy,) = copies(tablet, "received")
    assert xml(copy) == xml(original)
    assert phone.take() == []


async def test_message_to_own_other_resource_is_copied_as_received(server: Server) -> None:
    phone = await device(server, "alice@localhost/phone")
    laptop = await device(server, "alice@localhost/laptop")
    tablet = await device(server, "alice@localhost/tablet")
    await phone.send(chat("alice@localhost/tablet", "move this to the tablet"))
    assert [body(el) for el in tablet.take()] == ["move this to the tablet"]
    assert [body(el) for el in copies(laptop, "received")] == ["move this to the tablet"]
    assert phone.take() == []


# Which messages are copied (§6.1, §9, XEP-0334) ----------------------------------------------------


RECEIPT = "<received xmlns='urn:xmpp:receipts' id='m0'/>"
COMPOSING = "<composing xmlns='http://jabber.org/protocol/chatstates'/>"
DISPLAYED = "<displayed xmlns='urn:xmpp:chat-markers:0' id='m0'/>"
DIRECT_INVITE = "<x xmlns='jabber:x:conference' jid='room@groups.localhost'/>"
MEDIATED_INVITE = "<x xmlns='http://jabber.org/protocol/muc#user'><invite from='carol@localhost'/></x>"
GROUP_PM = "<body>psst</body><x xmlns='http://jabber.org/protocol/muc#user'/>"


@pytest.mark.parametrize(
    ("kind", "payload", "copied"),
    [
        ("chat", "<body>hi</body>", True),
        ("chat", COMPOSING, True),
        (None, "<body>hi</body>", True),
        ("normal", "<body>hi</body>", True),
        ("normal", "<subject>no body</subject>", False),
        (None, RECEIPT, True),
        ("normal", DISPLAYED, True),
        (None, DIRECT_INVITE, True),
        (None, MEDIATED_INVITE, True),
        ("chat", GROUP_PM, False),
        ("headline", "<body>news</body>", False),
        ("groupchat", "<body>to the room</body>", False),
        (
            "error",
            "<error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>",
            False,
        ),
    ],
)
async def test_eligible_messages(server: Server, kind: str | None, payload: str, copied: bool) -> None:
    phone = await device(server, "alice@localhost/phone")
    laptop = await device(server, "alice@localhost/laptop")
    bob = await device(server, "bob@localhost/one")
    other = await device(server, "bob@localhost/two")
    type_attr = f" type='{kind}'" if kind else ""
    await phone.send(f"<message id='e1' to='bob@localhost/one'{type_attr}>{payload}</message>")
    assert ids(bob.take()) == ["e1"]
    assert ids(copies(laptop, "sent")) == (["e1"] if copied else [])
    assert ids(copies(other, "received")) == (["e1"] if copied else [])
    assert phone.take() == []


@pytest.mark.parametrize(
    "hint",
    [
        f"<private xmlns='{NS}'/>",
        "<no-copy xmlns='urn:xmpp:hints'/>",
        f"<private xmlns='{NS}'/><no-copy xmlns='urn:xmpp:hints'/>",
    ],
)
@pytest.mark.parametrize("to", ["bob@localhost", "bob@localhost/one"])
async def test_private_messages_are_not_copied(server: Server, hint: str, to: str) -> None:
    phone = await device(server, "alice@localhost/phone")
    laptop = await device(server, "alice@localhost/laptop")
    bob = await device(server, "bob@localhost/one", 5)
    other = await device(server, "bob@localhost/two", 0)
    await phone.send(chat(to, "just here", extra=hint))
    (original,) = bob.take()
    # §9: the hints stay in the delivered message (the requirement to strip <private/> was lifted).
    assert (original.find(PRIVATE) is not None) == ("private" in hint)
    assert (original.find(NO_COPY) is not None) == ("no-copy" in hint)
    assert laptop.take() == []
    assert other.take() == []


@pytest.mark.parametrize("direction", ["sent", "received"])
async def test_messages_carrying_a_carbon_are_not_copied(server: Server, direction: str) -> None:
    """A copy of a carbon would be a carbon inside a carbon: forged, or a loop (XEP-0280 §11)."""
    phone = await device(server, "alice@localhost/phone")
    laptop = await device(server, "alice@localhost/laptop")
    bob = await device(server, "bob@localhost/one")
    other = await device(server, "bob@localhost/two")
    inner = (
        "<message xmlns='jabber:client' from='bob@localhost/two' to='carol@localhost' type='chat'>"
        "<body>x</body></message>"
    )
    carbon = f"<{direction} xmlns='{NS}'><forwarded xmlns='urn:xmpp:forward:0'>{inner}</forwarded></{direction}>"
    await phone.send(f"<message id='f1' to='bob@localhost/one' type='chat'>{carbon}</message>")
    assert ids(bob.take()) == ["f1"]
    assert laptop.take() == []
    assert other.take() == []


# With the presence module ---------------------------------------------------------------------------


async def test_with_real_presence(tmp_path: Path) -> None:
    """Availability and priority come from the resources' own initial presence (RFC 6121 §4.2)."""
    async with running(tmp_path, modules={"e2e": {"policy": "optional"}}) as server:
        alice = await login(server, "alice@localhost/phone")
        one = await login(server, "bob@localhost/one")
        two = await login(server, "bob@localhost/two")
        for client, priority in ((one, 5), (two, 0)):
            assert (await toggle(client)).get("type") == "result"
            await client.send(f"<presence><priority>{priority}</priority></presence>")
        for client in (one, two):
            assert presences(client.take())
        await alice.send(chat("bob@localhost", "over real presence"))
        assert [body(el) for el in one.take()] == ["over real presence"]
        assert [body(el) for el in copies(two, "received")] == ["over real presence"]


def test_a_carbon_is_a_snapshot_of_the_original() -> None:
    """The original is stamped for its recipient afterwards; a queued carbon must not change."""
    original = Stanza.parse(parse_frame(
        b"<message xmlns='jabber:client' type='chat' from='alice@localhost/desk' to='bob@localhost'>"
        b"<body>hi</body></message>", 10_000))
    carbon = copy_of(original, "sent", JID.parse("alice@localhost"), JID.parse("alice@localhost/phone"))
    before = xml(carbon)
    original.el.append(Element("{urn:xmpp:sid:0}stanza-id", {"by": "bob@localhost", "id": "x"}))
    assert xml(carbon) == before


# With the archive (XEP-0313 §3.5, XEP-0359) ---------------------------------------------------------

SID = f"{{{ns.SID}}}stanza-id"
MAM = "urn:xmpp:mam:2"


def stanza_ids(el: Element) -> list[tuple[str | None, str | None]]:
    return [(sid.get("by"), sid.get("id")) for sid in el.findall(SID)]


async def test_sent_carbon_carries_the_id_the_second_device_finds_in_the_archive(tmp_path: Path) -> None:
    async with running(tmp_path, modules={"e2e": {"policy": "optional"}}) as server:
        phone = await device(server, "alice@localhost/phone")
        laptop = await device(server, "alice@localhost/laptop")
        bob = await device(server, "bob@localhost/one", carbons=False)
        await phone.send(chat("bob@localhost", "archived and copied", id="s1"))
        (copy,) = copies(laptop, "sent")
        ((by, sent_id),) = stanza_ids(copy)
        assert by == "alice@localhost" and sent_id
        # The contact sees only the id of its own archive.
        (got,) = bob.take()
        assert [by for by, _ in stanza_ids(got)] == ["bob@localhost"]
        assert phone.take() == []
        await laptop.send(f"<iq type='set' id='q'><query xmlns='{MAM}' queryid='all'/></iq>")
        *results, fin = laptop.take()
        assert fin.get("type") == "result", xml(fin)
        (result,) = (el.find(f"{{{MAM}}}result") for el in results)
        assert result is not None and result.get("id") == sent_id
        assert body(result[0][-1]) == "archived and copied"


async def test_sent_carbon_of_a_message_not_archived_has_no_id(tmp_path: Path) -> None:
    async with running(tmp_path, modules={"e2e": {"policy": "optional"}}) as server:
        phone = await device(server, "alice@localhost/phone")
        laptop = await device(server, "alice@localhost/laptop")
        bob = await device(server, "bob@localhost/one", carbons=False)
        state = "<composing xmlns='http://jabber.org/protocol/chatstates'/>"
        await phone.send(f"<message to='bob@localhost' type='chat' id='c1'>{state}</message>")
        (copy,) = copies(laptop, "sent")
        assert copy.get("id") == "c1" and stanza_ids(copy) == []
        (got,) = bob.take()
        assert stanza_ids(got) == []


async def test_sent_carbon_to_another_server_carries_the_id(tmp_path: Path) -> None:
    async with running(tmp_path, modules={"e2e": {"policy": "optional"}}) as server:
        phone = await device(server, "alice@localhost/phone")
        laptop = await device(server, "alice@localhost/laptop")
        await phone.send(chat("juliet@capulet.example", "far away"))
        sent, _bounced = laptop.take()  # the bounce is copied too (§6.1), as tested above
        ((by, _),) = stanza_ids(unwrap(sent, laptop.jid, "sent"))
        assert by == "alice@localhost"


# Private messages through a group (§6.1, what urn:xmpp:carbons:rules:0 requires) -------------------


MUC_MARK = f"{{{USER}}}x"


async def enabled(*clients: Client) -> None:
    for client in clients:
        client.take()
        assert (await toggle(client)).get("type") == "result"


async def group_with_two_phones(tmp_path: Path) -> AsyncIterator[tuple[Server, list[Client]]]:
    """alice's phone and laptop in the group under the nick alice, her tablet not in it; bob's phone
    in it, his laptop not; every resource with carbons enabled."""
    async with running(tmp_path, modules=MODULES) as server:
        phone, bob = await private_group(server, "alice", "bob")
        laptop = await online(server, "alice@localhost/laptop")
        await join(laptop, ROOM, "alice")
        tablet = await online(server, "alice@localhost/tablet")
        bob_laptop = await online(server, "bob@localhost/laptop")
        clients = [phone, laptop, tablet, bob, bob_laptop]
        await enabled(*clients)
        yield server, clients


@pytest.fixture
async def group(tmp_path: Path) -> AsyncIterator[tuple[Server, list[Client]]]:
    async for each in group_with_two_phones(tmp_path):
        yield each


@pytest.mark.parametrize("mark", ["", "<x xmlns='http://jabber.org/protocol/muc#user'/>"])
async def test_private_message_in_a_group_is_copied_to_the_resources_sharing_the_nick(
    group: tuple[Server, list[Client]], mark: str
) -> None:
    """Sent: copied to the sender's resources joined under its nick, marked as a group's private
    message even when the client left the mark out; received: not copied, the group gave it to
    every resource joined under the recipient's nick already."""
    _server, (phone, laptop, tablet, bob, bob_laptop) = group
    await phone.send(f"<message to='{ROOM}/bob' type='chat' id='pm1'><body>psst</body>{mark}</message>")
    (original,) = bob.take()
    assert original.get("from") == f"{ROOM}/alice" and body(original) == "psst"
    (copy,) = copies(laptop, "sent")
    assert (copy.get("id"), copy.get("to"), body(copy)) == ("pm1", f"{ROOM}/bob", "psst")
    assert copy.find(MUC_MARK) is not None
    for client in (phone, tablet, bob_laptop):
        assert client.take() == []


async def test_refused_private_message_in_a_group_is_not_copied(group: tuple[Server, list[Client]]) -> None:
    _server, (phone, laptop, tablet, _bob, _bob_laptop) = group
    await phone.send(f"<message to='{ROOM}/nobody' type='chat' id='pm1'><body>psst</body></message>")
    (error,) = phone.take()
    assert condition(error) == "item-not-found"
    assert laptop.take() == [] and tablet.take() == []


async def test_error_answering_a_private_message_in_a_group_reaches_the_resources_sharing_the_nick(
    group: tuple[Server, list[Client]],
) -> None:
    _server, (phone, laptop, tablet, bob, _bob_laptop) = group
    await phone.send(f"<message to='{ROOM}/bob' type='chat' id='pm1'><body>psst</body></message>")
    assert ids(copies(laptop, "sent")) == ["pm1"]
    assert ids(bob.take()) == ["pm1"]
    await bob.send(bounce("pm1", f"{ROOM}/alice"))
    (error,) = phone.take()
    assert (error.get("id"), error.get("from")) == ("pm1", f"{ROOM}/bob")
    (copy,) = copies(laptop, "received")
    assert (copy.get("id"), copy.get("from"), condition(copy)) == ("pm1", f"{ROOM}/bob", "item-not-found")
    assert tablet.take() == []


async def test_invitation_through_a_group_is_copied_to_every_resource(group: tuple[Server, list[Client]]) -> None:
    server, (phone, laptop, tablet, _bob, _bob_laptop) = group
    await login(server, "carol@localhost/phone")
    await phone.send(f"<message to='{ROOM}' id='inv1'><x xmlns='{USER}'><invite to='carol@localhost'/></x></message>")
    for client in (laptop, tablet):
        # The laptop, in the group, also sees the group make carol a member (§9.3).
        (carbon,) = [el for el in client.take() if el.get("from") != ROOM]
        copy = unwrap(carbon, client.jid, "sent")
        assert copy.get("id") == "inv1" and copy.get("to") == ROOM


async def test_private_message_in_a_group_elsewhere_is_copied_to_the_resources_in_it(tmp_path: Path) -> None:
    """A group at another server: the resources sharing the sender's nick are those that sent
    their presence to the same occupant JID (directed presence, RFC 6121 §4.6). The other server
    is not reachable here, so the message comes back with an error, which reaches those alone too."""
    far_room = "family@groups.b.example"
    nowhere = f"127.0.0.1:{free_port()}"
    async with running(tmp_path, modules=MODULES, s2s={"enabled": True, "hosts": {"groups.b.example": nowhere}}) as server:
        phone = await online(server, "alice@localhost/phone")
        laptop = await online(server, "alice@localhost/laptop")
        tablet = await online(server, "alice@localhost/tablet")
        for client in (phone, laptop):
            await client.send(join_xml(far_room, "alice"))
            # Until the presence error: the group's server is not reachable.
            while not any(el.get("type") == "error" for el in await client.expect()):
                pass
        await enabled(phone, laptop, tablet)
        await phone.send(f"<message to='{far_room}/bob' type='chat' id='pm1'><body>psst</body><x xmlns='{USER}'/></message>")
        (error,) = await phone.expect()
        assert error.get("id") == "pm1" and condition(error) == "remote-server-not-found"
        sent, bounced = laptop.take()
        copy = unwrap(sent, laptop.jid, "sent")
        assert (copy.get("id"), copy.get("to")) == ("pm1", f"{far_room}/bob")
        copy = unwrap(bounced, laptop.jid, "received")
        assert copy.get("id") == "pm1" and condition(copy) == "remote-server-not-found"
        assert tablet.take() == []


# A component's conversations (XEP-0114): the rules of §6.1 hold whoever the peer is ---------------


GATEWAY = "irc.localhost"


async def present(server: Server, jid: str, priority: int = 0) -> Client:
    """A resource that enabled carbons, then sent initial presence (RFC 6121 §4.2)."""
    client = await device(server, jid, available=False)
    await client.send(f"<presence><priority>{priority}</priority></presence>")
    return client


async def settled(*clients: Client) -> None:
    """Each resource saw the others' presence (RFC 6121 §4.2.2); what follows is the test's."""
    for client in clients:
        client.take()


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[tuple[Server, MemoryComponent]]:
    """Every module, with a gateway connected as an external component."""
    async with running(tmp_path, modules=MODULES, components={GATEWAY: {"secret": "s"}}) as server:
        component = await open_component(server, GATEWAY, "s")
        component.take()
        yield server, component


@pytest.mark.parametrize("to", [f"nick@{GATEWAY}", f"nick@{GATEWAY}/client", GATEWAY])
async def test_message_to_a_component_is_copied_as_sent(
    gateway: tuple[Server, MemoryComponent], to: str
) -> None:
    server, component = gateway
    phone = await present(server, "alice@localhost/phone")
    laptop = await present(server, "alice@localhost/laptop")
    await settled(phone, laptop)
    await phone.send(chat(to, "through the gateway", id="g1"))
    (original,) = component.take()
    assert original.get("id") == "g1"
    (copy,) = copies(laptop, "sent")
    assert (copy.get("id"), copy.get("to"), body(copy)) == ("g1", to, "through the gateway")
    assert phone.take() == []


@pytest.mark.parametrize("to", ["alice@localhost", "alice@localhost/phone"])
async def test_message_from_a_component_is_copied_as_received(
    gateway: tuple[Server, MemoryComponent], to: str
) -> None:
    server, component = gateway
    phone = await present(server, "alice@localhost/phone", 5)
    laptop = await present(server, "alice@localhost/laptop", 0)
    await settled(phone, laptop)
    await component.send(
        f"<message xmlns='{ACCEPT}' from='nick@{GATEWAY}/client' to='{to}' type='chat' id='g2'>"
        "<body>from the gateway</body></message>"
    )
    assert ids(phone.take()) == ["g2"]
    (copy,) = copies(laptop, "received")
    assert (copy.get("id"), copy.get("from"), body(copy)) == ("g2", f"nick@{GATEWAY}/client", "from the gateway")


async def test_error_from_a_component_answering_a_copied_message_is_copied(
    gateway: tuple[Server, MemoryComponent],
) -> None:
    server, component = gateway
    phone = await present(server, "alice@localhost/phone")
    laptop = await present(server, "alice@localhost/laptop")
    await settled(phone, laptop)
    await phone.send(chat(f"nobody@{GATEWAY}", "lost in the gateway", id="g3"))
    component.take()
    assert ids(copies(laptop, "sent")) == ["g3"]
    await component.send(
        f"<message xmlns='{ACCEPT}' from='nobody@{GATEWAY}' to='alice@localhost/phone' type='error' id='g3'>"
        f"<error type='cancel'><item-not-found xmlns='{ns.STANZA_ERRORS}'/></error></message>"
    )
    assert ids(phone.take()) == ["g3"]
    (copy,) = copies(laptop, "received")
    assert copy.get("id") == "g3" and condition(copy) == "item-not-found"


async def test_private_message_through_a_gateway_group_is_copied_to_the_resources_in_it(
    gateway: tuple[Server, MemoryComponent],
) -> None:
    """A group a gateway offers is told by the mark, as one at another server (§6.1)."""
    server, component = gateway
    room = f"#chan@{GATEWAY}"
    phone = await present(server, "alice@localhost/phone")
    laptop = await present(server, "alice@localhost/laptop")
    tablet = await present(server, "alice@localhost/tablet")
    for client in (phone, laptop):
        await client.send(f"<presence to='{room}/alice'/>")
    component.take()
    await settled(phone, laptop, tablet)
    await phone.send(f"<message to='{room}/bob' type='chat' id='g4'><body>psst</body><x xmlns='{USER}'/></message>")
    (original,) = component.take()
    assert original.get("id") == "g4"
    (copy,) = copies(laptop, "sent")
    assert (copy.get("id"), copy.get("to")) == ("g4", f"{room}/bob")
    assert tablet.take() == [] and phone.take() == []

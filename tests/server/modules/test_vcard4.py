"""XEP-0292 vCard4: the PEP node ``urn:xmpp:vcard4``, the IQ retrieval and publication on top of
it, access models, notifications and the mapping from vcard-temp."""

from __future__ import annotations

from xml.etree.ElementTree import Element

from schnack.server.app import Server
from schnack.xmpp import ns
from schnack.xmpp.payloads.disco import DiscoInfo
from schnack.xmpp.payloads.pubsub import EventItems
from schnack.xmpp.payloads.vcard4 import NODE, NS, Names

from ...harness import Client, xml
from .messaging import condition, login
from .test_pep import answer_caps_query, befriend, caps_for, events, fetched, items, online, publish, reply

CARD = f"<vcard xmlns='{NS}'><fn><text>Alice Liddell</text></fn><nickname><text>alice</text></nickname></vcard>"


async def vcard4(client: Client, to: str | None = None) -> Element:
    """An IQ get of a vCard4 (§4.1.1): the answer."""
    address = f" to='{to}'" if to else ""
    await client.send(f"<iq type='get' id='v4'{address}><vcard xmlns='{NS}'/></iq>")
    return reply(client.take(), "v4")


def card(answer: Element) -> Names:
    assert answer.get("type") == "result", xml(answer)
    (vcard,) = answer
    assert vcard.tag == f"{{{NS}}}vcard"
    return Names.from_vcard4(vcard)


async def test_account_announces_vcard4(server: Server) -> None:
    alice = await online(server, "alice@localhost/phone")
    await alice.send(f"<iq type='get' id='d' to='alice@localhost'><query xmlns='{ns.DISCO_INFO}'/></iq>")
    (answer,) = alice.take()
    assert NS in DiscoInfo.from_xml(answer[0]).features


async def test_pep_publication_is_read_by_iq_and_notifies(server: Server) -> None:
    await befriend(server, "alice", "bob")
    alice = await online(server, "alice@localhost/phone")
    bob = await login(server, "bob@localhost/phone")
    c, info = caps_for(f"{NODE}+notify")
    await bob.send(f"<presence>{c}</presence>")
    await answer_caps_query(server, bob, bob.take(), info)
    bob.take()
    assert card(await vcard4(alice)) == Names()
    answer, _ = await publish(alice, NODE, CARD)
    assert answer.get("type") == "result", xml(answer)
    ((sender, event),) = events(bob.take())
    assert sender == "alice@localhost" and isinstance(event, EventItems) and event.node == NODE
    assert card(await vcard4(bob, "alice@localhost")) == Names("Alice Liddell", ("alice",))
    assert card(await vcard4(alice)) == Names("Alice Liddell", ("alice",))


async def test_iq_publication_is_the_pep_item(server: Server) -> None:
    """§4.1.2: an IQ set publishes the item 'current', with notifications."""
    await befriend(server, "alice", "bob")
    alice = await online(server, "alice@localhost/phone")
    bob = await online(server, "bob@localhost/phone")
    await alice.send(f"<iq type='set' id='s'>{CARD}</iq>")
    got = alice.take()
    assert [el.get("type") for el in got if el.get("id") == "s"] == ["result"]
    ((_, event),) = events(bob.take())
    assert isinstance(event, EventItems) and [i.id for i in event.items] == ["current"]
    (item,) = fetched(await items(bob, NODE, to="alice@localhost")).items
    assert item.payload is not None and Names.from_vcard4(item.payload).full_name == "Alice Liddell"
    # The node it created is open, as a self vCard is public (§4).
    stranger = await online(server, "mallory@localhost/phone")
    assert card(await vcard4(stranger, "alice@localhost")).full_name == "Alice Liddell"
    await bob.send(f"<iq type='set' id='s' to='alice@localhost'>{CARD}</iq>")
    assert condition(bob.take()[0]) == "forbidden"


async def test_access_model_applies_to_iq_retrieval(server: Server) -> None:
    await befriend(server, "alice", "bob")
    alice = await online(server, "alice@localhost/phone")
    bob = await online(server, "bob@localhost/phone")
    stranger = await online(server, "mallory@localhost/phone")
    await publish(alice, NODE, CARD)
    assert card(await vcard4(bob, "alice@localhost")).full_name == "Alice Liddell"
    assert condition(await vcard4(stranger, "alice@localhost")) == "not-authorized"


async def test_open_node_is_public(server: Server) -> None:
    alice = await online(server, "alice@localhost/phone")
    stranger = await online(server, "mallory@localhost/phone")
    answer, _ = await publish(alice, NODE, CARD, options=(("pubsub#access_model", "open"),))
    assert answer.get("type") == "result", xml(answer)
    assert card(await vcard4(stranger, "alice@localhost")).nicknames == ("alice",)


async def test_mapped_from_vcard_temp_until_a_vcard4_exists(server: Server) -> None:
    """§11: name, nicknames and photo of the vcard-temp, for an account without a vCard4."""
    alice = await online(server, "alice@localhost/phone")
    stranger = await online(server, "mallory@localhost/phone")
    await alice.send(f"<iq type='set' id='t'><vCard xmlns='{ns.VCARD}'><FN>Alice</FN><NICKNAME>al</NICKNAME>"
                     "<PHOTO><EXTVAL>https://example.org/alice.png</EXTVAL></PHOTO></vCard></iq>")
    alice.take()
    assert card(await vcard4(stranger, "alice@localhost")) == Names("Alice", ("al",), "https://example.org/alice.png")
    await publish(alice, NODE, CARD, options=(("pubsub#access_model", "open"),))
    assert card(await vcard4(stranger, "alice@localhost")) == Names("Alice Liddell", ("alice",))


async def test_unknown_account(server: Server) -> None:
    alice = await online(server, "alice@localhost/phone")
    assert condition(await vcard4(alice, "nobody@localhost")) == "service-unavailable"


async def temp_of(client: Client, to: str | None = None) -> Element:
    address = f" to='{to}'" if to else ""
    await client.send(f"<iq type='get' id='t4'{address}><vCard xmlns='{ns.VCARD}'/></iq>")
    answer = reply(client.take(), "t4")
    assert answer.get("type") == "result", xml(answer)
    (card,) = answer
    return card


async def test_vcard_temp_readers_see_the_vcard4_names(server: Server) -> None:
    """§11 backwards: what the stored vcard-temp lacks, for those who may read the vCard4."""
    await befriend(server, "alice", "bob")
    alice = await online(server, "alice@localhost/phone")
    bob = await online(server, "bob@localhost/phone")
    stranger = await online(server, "mallory@localhost/phone")
    await publish(alice, NODE, CARD, options=(("pubsub#access_model", "open"),))
    fn, nickname = f"{{{ns.VCARD}}}FN", f"{{{ns.VCARD}}}NICKNAME"
    for client, to in ((alice, None), (bob, "alice@localhost"), (stranger, "alice@localhost")):
        card_el = await temp_of(client, to)
        assert (card_el.findtext(fn), card_el.findtext(nickname)) == ("Alice Liddell", "alice")
    # What the vcard-temp has wins.
    await alice.send(f"<iq type='set' id='s'><vCard xmlns='{ns.VCARD}'><FN>A. L.</FN></vCard></iq>")
    alice.take()
    card_el = await temp_of(bob, "alice@localhost")
    assert (card_el.findtext(fn), card_el.findtext(nickname)) == ("A. L.", "alice")
    await bob.send("<iq type='get' id='t4' to='nobody@localhost'><vCard xmlns='vcard-temp'/></iq>")
    assert condition(reply(bob.take(), "t4")) == "service-unavailable"


async def test_contacts_only_vcard4_stays_out_of_the_owners_vcard_temp(server: Server) -> None:
    """An app that reads its own vcard-temp and sets it back whole (Psi, Pidgin) must not make
    the names of a vCard4 for contacts public: the owner's own vcard-temp lacks them."""
    await befriend(server, "alice", "bob")
    alice = await online(server, "alice@localhost/phone")
    bob = await online(server, "bob@localhost/phone")
    stranger = await online(server, "mallory@localhost/phone")
    photo = "<photo><uri>https://example.org/alice.png</uri></photo>"
    await publish(alice, NODE, CARD.replace("</vcard>", f"{photo}</vcard>"))
    fn = f"{{{ns.VCARD}}}FN"
    # Contacts, who may read the vCard4, see its names in the vcard-temp; a stranger does not.
    assert (await temp_of(bob, "alice@localhost")).findtext(fn) == "Alice Liddell"
    assert len(await temp_of(stranger, "alice@localhost")) == 0
    own = await temp_of(alice)
    assert len(own) == 0, xml(own)
    await alice.send(f"<iq type='set' id='w'>{xml(own)}</iq>")
    assert reply(alice.take(), "w").get("type") == "result"
    assert len(await temp_of(stranger, "alice@localhost")) == 0

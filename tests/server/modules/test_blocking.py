"""XEP-0191 Blocking Command: list, block, unblock, pushes, storage, and the stanzas a block stops."""

from __future__ import annotations

from pathlib import Path
from xml.etree.ElementTree import Element

import pytest

from schnack.server.app import Server
from schnack.server.storage.base import RosterItem
from schnack.xmpp import ns
from schnack.xmpp.payloads.blocking import BLOCK, BLOCKED, BLOCKLIST, NS, Block, Blocklist, Unblock
from schnack.xmpp.payloads.disco import INFO

from ...harness import Client, running, xml
from .contacts import IQ, PRESENCE, arrive, federated, kinds, presence, roster
from .messaging import OMEMO, body, chat, condition, login

MESSAGE = f"{{{ns.CLIENT}}}message"


def items(*jids: str) -> str:
    return "".join(f"<item jid='{jid}'/>" for jid in jids)


def block(*jids: str, id: str = "b1") -> str:
    return f"<iq type='set' id='{id}'><block xmlns='{NS}'>{items(*jids)}</block></iq>"


def unblock(*jids: str, id: str = "u1") -> str:
    return f"<iq type='set' id='{id}'><unblock xmlns='{NS}'>{items(*jids)}</unblock></iq>"


def reply(elements: list[Element], id: str) -> Element:
    (found,) = [el for el in elements if el.tag == IQ and el.get("id") == id]
    return found


async def blocklist(client: Client) -> list[str]:
    """Ask for the blocklist (§3.2); the client becomes interested in pushes."""
    await client.send(f"<iq type='get' id='list'><blocklist xmlns='{NS}'/></iq>")
    result = reply(client.take(), "list")
    assert result.get("type") == "result", xml(result)
    payload = result.find(BLOCKLIST)
    assert payload is not None
    return [str(jid) for jid in Blocklist.from_xml(payload).items]


async def command(client: Client, stanza: str, id: str) -> tuple[Element, list[Element]]:
    """Send a block or unblock; return the reply and the pushes the sender got."""
    await client.send(stanza)
    got = client.take()
    return reply(got, id), [el for el in got if el.get("id") != id]


def push_of(elements: list[Element]) -> Block | Unblock:
    (push,) = elements
    assert push.tag == IQ and push.get("type") == "set", xml(push)
    assert push.get("from") is None and push.get("id")
    (payload,) = push
    return Block.from_xml(payload) if payload.tag == BLOCK else Unblock.from_xml(payload)


def blocked_error(el: Element) -> None:
    """§3.3: not-acceptable with the blocked application condition."""
    assert condition(el) == "not-acceptable"
    error = el.find(f"{{{ns.CLIENT}}}error")
    assert error is not None and error.get("type") == "cancel"
    assert error.find(BLOCKED) is not None, xml(el)


async def online(server: Server, jid: str) -> Client:
    client = await login(server, jid)
    await roster(client)
    await client.send(presence())
    client.take()
    return client


async def befriend(a: Client, b: Client) -> None:
    """Mutual presence subscription."""
    a_bare, b_bare = a.jid.partition("/")[0], b.jid.partition("/")[0]
    await a.send(presence("subscribe", b_bare))
    await b.send(presence("subscribed", a_bare))
    await b.send(presence("subscribe", a_bare))
    await a.send(presence("subscribed", b_bare))
    a.take()
    b.take()


# §3.1-§3.5 the commands --------------------------------------------------------------------


async def test_feature_on_domain_and_account(server: Server) -> None:
    alice = await login(server, "alice@localhost/phone")
    for to in ("localhost", "alice@localhost"):
        await alice.send(f"<iq type='get' id='d' to='{to}'><query xmlns='{ns.DISCO_INFO}'/></iq>")
        (result,) = alice.take()
        features = {f.get("var") for f in result.iter(f"{{{ns.DISCO_INFO}}}feature")}
        assert result.find(INFO) is not None and NS in features, to


async def test_empty_list(server: Server) -> None:
    alice = await login(server, "alice@localhost/phone")
    await alice.send(f"<iq type='get' id='list'><blocklist xmlns='{NS}'/></iq>")
    (result,) = alice.take()
    assert xml(result) == f'<iq xmlns="{ns.CLIENT}" type="result" id="list" to="alice@localhost/phone"><blocklist xmlns="{NS}"/></iq>'


async def test_block_pushes_to_interested_resources_only(server: Server) -> None:
    phone = await login(server, "alice@localhost/phone")
    laptop = await login(server, "alice@localhost/laptop")
    quiet = await login(server, "alice@localhost/quiet")
    assert await blocklist(phone) == []
    assert await blocklist(laptop) == []
    result, own = await command(phone, block("Romeo@Montague.NET", "spam.example", "romeo@montague.net"), "b1")
    assert result.get("type") == "result" and len(result) == 0
    pushed = push_of(own)
    assert [str(jid) for jid in pushed.items] == ["romeo@montague.net", "spam.example"]
    (other,) = laptop.take()
    assert other.get("to") == "alice@localhost/laptop"
    assert push_of([other]) == pushed
    assert quiet.take() == []
    assert await blocklist(quiet) == ["romeo@montague.net", "spam.example"]


async def test_unblock_some_then_all(server: Server) -> None:
    phone = await login(server, "alice@localhost/phone")
    laptop = await login(server, "alice@localhost/laptop")
    await blocklist(phone)
    await blocklist(laptop)
    await command(phone, block("a@example.org", "b@example.org", "c@example.org"), "b1")
    laptop.take()
    result, own = await command(phone, unblock("B@example.org", "nobody@example.org"), "u1")
    assert result.get("type") == "result"
    assert [str(jid) for jid in push_of(own).items] == ["b@example.org", "nobody@example.org"]
    assert [str(jid) for jid in push_of(laptop.take()).items] == ["b@example.org", "nobody@example.org"]
    assert await blocklist(phone) == ["a@example.org", "c@example.org"]
    result, own = await command(phone, unblock(id="u2"), "u2")
    assert result.get("type") == "result"
    assert push_of(own) == Unblock()
    assert push_of(laptop.take()) == Unblock()
    assert await blocklist(laptop) == []


@pytest.mark.parametrize(
    ("stanza", "expected"),
    [
        (block(), "bad-request"),
        (f"<iq type='set' id='b1'><block xmlns='{NS}'><item/></block></iq>", "bad-request"),
        (block("@nobody"), "jid-malformed"),
        (unblock("a@b/", id="b1"), "jid-malformed"),
        (block("alice@localhost"), "not-acceptable"),
        (block("Alice@localhost/tablet"), "not-acceptable"),
    ],
)
async def test_bad_commands_change_nothing(server: Server, stanza: str, expected: str) -> None:
    alice = await login(server, "alice@localhost/phone")
    await blocklist(alice)
    await alice.send(stanza)
    (error,) = alice.take()
    assert error.get("id") == "b1" and condition(error) == expected
    assert await blocklist(alice) == []


async def test_a_full_list_refuses_more(tmp_path: Path) -> None:
    async with running(tmp_path, modules={"blocking": {"max_items": 2}}) as server:
        alice = await login(server, "alice@localhost/phone")
        await alice.send(block("a@example.org", "b@example.org"))
        assert alice.take()[0].get("type") == "result"
        await alice.send(block("b@example.org", "c@example.org", id="b2"))
        (error,) = alice.take()
        assert condition(error) == "not-allowed"
        # Entries blocked already take no more room.
        await alice.send(block("a@example.org", id="b3"))
        assert alice.take()[0].get("type") == "result"
        assert await blocklist(alice) == ["a@example.org", "b@example.org"]


async def test_the_list_survives_a_restart(tmp_path: Path) -> None:
    async with running(tmp_path) as server:
        alice = await login(server, "alice@localhost/phone")
        await alice.send(block("romeo@montague.net", "spam.example/bot"))
        alice.take()
    async with running(tmp_path) as server:
        alice = await login(server, "alice@localhost/phone")
        assert await blocklist(alice) == ["romeo@montague.net", "spam.example/bot"]
        mallory = await login(server, "mallory@localhost/pc")
        await alice.send(block("mallory@localhost", id="b2"))
        alice.take()
    async with running(tmp_path) as server:
        mallory = await login(server, "mallory@localhost/pc")
        await mallory.send(chat("alice@localhost", "let me in", extra=OMEMO))
        (error,) = mallory.take()
        assert condition(error) == "service-unavailable"


async def test_the_list_goes_with_the_account(server: Server) -> None:
    alice = await login(server, "alice@localhost/phone")
    await alice.send(block("romeo@montague.net"))
    alice.take()
    assert await server.delete_account("localhost", "alice")
    assert await server.storage.maps.items("localhost", "alice", "blocklist") == {}
    again = await login(server, "alice@localhost/phone")
    assert await blocklist(again) == []


async def test_someone_elses_list_is_not_served(server: Server) -> None:
    await login(server, "alice@localhost/phone")
    mallory = await login(server, "mallory@localhost/pc")
    await mallory.send(f"<iq type='get' id='peek' to='alice@localhost'><blocklist xmlns='{NS}'/></iq>")
    (error,) = mallory.take()
    assert condition(error) == "service-unavailable"


# §3.3 inbound: what a blocked address sends ----------------------------------------------------


async def test_messages_from_a_blocked_user_bounce_until_unblocked(server: Server) -> None:
    alice = await online(server, "alice@localhost/phone")
    mallory = await online(server, "mallory@localhost/pc")
    await alice.send(block("mallory@localhost"))
    alice.take()
    await mallory.send(chat("alice@localhost", "hello?", id="m1", extra=OMEMO))
    await mallory.send(chat("alice@localhost/phone", "hello?", id="m2", extra=OMEMO))
    errors = mallory.take()
    assert [(e.get("id"), condition(e)) for e in errors] == [("m1", "service-unavailable"), ("m2", "service-unavailable")]
    assert alice.take() == []
    await alice.send(unblock("mallory@localhost"))
    alice.take()
    mallory.take()
    await mallory.send(chat("alice@localhost", "now?", id="m3", extra=OMEMO))
    (got,) = alice.take()
    assert got.tag == MESSAGE and body(got) == "now?"


async def test_blocked_messages_are_not_stored_offline(server: Server) -> None:
    alice = await login(server, "alice@localhost/phone")
    await alice.send(block("mallory@localhost"))
    await alice.close()
    mallory = await online(server, "mallory@localhost/pc")
    await mallory.send(chat("alice@localhost", "while you are away", extra=OMEMO))
    (error,) = mallory.take()
    assert condition(error) == "service-unavailable"
    assert await server.storage.archive.count("localhost", "alice", "offline") == 0


async def test_messages_kept_offline_before_the_block_are_not_delivered(server: Server) -> None:
    """§3.3: once the user blocked a contact, nothing from it reaches the user, not even what
    waited in offline storage from before (the user's archive still has it)."""
    alice = await login(server, "alice@localhost/phone")
    await alice.close()
    mallory = await online(server, "mallory@localhost/pc")
    bob = await online(server, "bob@localhost/pc")
    await mallory.send(chat("alice@localhost", "while you are away", id="m1", extra=OMEMO))
    await bob.send(chat("alice@localhost", "from bob", id="b1", extra=OMEMO))
    await mallory.send(chat("alice@localhost", "and again", id="m2", extra=OMEMO))
    assert mallory.take() == [] and bob.take() == []
    assert await server.storage.archive.count("localhost", "alice", "offline") == 3
    alice = await login(server, "alice@localhost/phone")
    await alice.send(block("mallory@localhost/pc"))
    alice.take()
    await alice.send(presence())
    assert [el.get("id") for el in alice.take() if el.tag == MESSAGE] == ["b1"]
    assert await server.storage.archive.count("localhost", "alice", "offline") == 0
    assert await server.storage.archive.count("localhost", "alice", "mam") == 3


async def test_a_blocked_domain_holds_back_no_offline_message_of_the_account_itself(server: Server) -> None:
    """The user's own account is never blocked, not even by its domain: a note to self that
    waited offline is delivered."""
    desk = await login(server, "alice@localhost/desk")
    await desk.send(presence(inner="<priority>-1</priority>"))
    await desk.send(chat("alice@localhost", "note to self", id="n1", extra=OMEMO))
    await desk.send(block("localhost"))
    desk.take()
    assert await server.storage.archive.count("localhost", "alice", "offline") == 1
    phone = await login(server, "alice@localhost/phone")
    await phone.send(presence())
    assert [el.get("id") for el in phone.take() if el.tag == MESSAGE] == ["n1"]


async def test_error_messages_from_a_blocked_user_vanish(server: Server) -> None:
    alice = await online(server, "alice@localhost/phone")
    mallory = await online(server, "mallory@localhost/pc")
    await alice.send(block("mallory@localhost"))
    alice.take()
    await mallory.send("<message type='error' to='alice@localhost/phone' id='e1'><error type='cancel'>"
                       f"<item-not-found xmlns='{ns.STANZA_ERRORS}'/></error></message>")
    assert mallory.take() == [] and alice.take() == []


async def test_presence_from_a_blocked_user_is_dropped_silently(server: Server) -> None:
    alice = await online(server, "alice@localhost/phone")
    mallory = await online(server, "mallory@localhost/pc")
    await alice.send(block("mallory@localhost"))
    alice.take()
    for kind in (None, "subscribe", "probe", "unavailable"):
        await mallory.send(presence(kind, "alice@localhost"))
        await mallory.send(presence(kind, "alice@localhost/phone"))
    assert alice.take() == []
    assert presences(mallory.take()) == []
    # Her request waits nowhere: unblocking does not bring it back.
    assert await server.storage.maps.items("localhost", "alice", "roster-pending") == {}


async def test_iqs_from_a_blocked_user(server: Server) -> None:
    alice = await online(server, "alice@localhost/phone")
    mallory = await online(server, "mallory@localhost/pc")
    await alice.send(block("mallory@localhost"))
    alice.take()
    # To the resource, and to the account, which the server answers for (vCard, disco).
    for to, payload in (
        ("alice@localhost/phone", f"<ping xmlns='{ns.PING}'/>"),
        ("alice@localhost", f"<vCard xmlns='{ns.VCARD}'/>"),
        ("alice@localhost", f"<query xmlns='{ns.DISCO_INFO}'/>"),
    ):
        await mallory.send(f"<iq type='get' id='q' to='{to}'>{payload}</iq>")
        (error,) = mallory.take()
        assert condition(error) == "service-unavailable", to
    await mallory.send("<iq type='result' id='r1' to='alice@localhost/phone'/>")
    assert mallory.take() == [] and alice.take() == []


async def test_a_full_jid_blocks_only_that_resource(server: Server) -> None:
    alice = await online(server, "alice@localhost/phone")
    pc = await online(server, "mallory@localhost/pc")
    tablet = await online(server, "mallory@localhost/tablet")
    pc.take()
    await alice.send(block("mallory@localhost/pc"))
    alice.take()
    await pc.send(chat("alice@localhost", "from the pc", extra=OMEMO))
    assert condition(pc.take()[0]) == "service-unavailable"
    await tablet.send(chat("alice@localhost", "from the tablet", extra=OMEMO))
    (got,) = alice.take()
    assert body(got) == "from the tablet"


async def test_a_domain_blocks_everyone_there_but_oneself_and_the_server(server: Server) -> None:
    alice = await online(server, "alice@localhost/phone")
    tablet = await online(server, "alice@localhost/tablet")
    bob = await online(server, "bob@localhost/laptop")
    alice.take()
    await alice.send(block("localhost"))
    alice.take()
    await bob.send(chat("alice@localhost", "hi", extra=OMEMO))
    assert condition(bob.take()[0]) == "service-unavailable"
    # Her own resources still talk to each other, and the server still answers her.
    await tablet.send(chat("alice@localhost/phone", "note to self", extra=OMEMO))
    assert body(alice.take()[0]) == "note to self"
    await alice.send(f"<iq type='get' id='p' to='localhost'><ping xmlns='{ns.PING}'/></iq>")
    assert alice.take()[0].get("type") == "result"
    # What she sends to the domain's users is refused.
    await alice.send(chat("bob@localhost", "hi", extra=OMEMO))
    blocked_error(alice.take()[0])
    assert bob.take() == []


# §3.3 outbound: what the user sends to a blocked address ----------------------------------------


async def test_stanzas_to_a_blocked_address_are_refused(server: Server) -> None:
    alice = await online(server, "alice@localhost/phone")
    bob = await online(server, "bob@localhost/laptop")
    await alice.send(block("bob@localhost", "spam.example"))
    alice.take()
    bob.take()
    for stanza in (
        chat("bob@localhost", "hi", extra=OMEMO),
        chat("bob@localhost/laptop", "hi", extra=OMEMO),
        presence(to="bob@localhost"),
        presence("subscribe", "bob@localhost"),
        f"<iq type='get' id='v' to='bob@localhost/laptop'><ping xmlns='{ns.PING}'/></iq>",
        f"<iq type='get' id='v' to='bob@localhost'><vCard xmlns='{ns.VCARD}'/></iq>",
        # Another server's users: refused as blocked, not as unreachable.
        chat("eve@spam.example", "hi", extra=OMEMO),
        chat("eve@chat.spam.example", "hi", extra=OMEMO),
    ):
        await alice.send(stanza)
        (error,) = alice.take()
        blocked_error(error)
    assert bob.take() == []
    # An error from her is not answered with another error.
    await alice.send("<message type='error' to='bob@localhost/laptop'><error type='cancel'>"
                     f"<item-not-found xmlns='{ns.STANZA_ERRORS}'/></error></message>")
    assert alice.take() == [] and bob.take() == []


async def test_the_error_keeps_the_stanza_id_and_addresses(server: Server) -> None:
    alice = await online(server, "alice@localhost/phone")
    await alice.send(block("romeo@montague.net"))
    alice.take()
    await alice.send(chat("romeo@montague.net", "Can you hear me now?", id="x1", extra=OMEMO))
    (error,) = alice.take()
    assert (error.tag, error.get("id"), error.get("from"), error.get("to")) == (
        MESSAGE, "x1", "romeo@montague.net", "alice@localhost/phone"
    )
    blocked_error(error)


# §3.3, §3.4 presence on block and unblock -------------------------------------------------------


def presences(elements: list[Element]) -> list[Element]:
    return [el for el in elements if el.tag == PRESENCE]


async def test_block_hides_and_unblock_shows_presence(server: Server) -> None:
    alice = await online(server, "alice@localhost/phone")
    tablet = await online(server, "alice@localhost/tablet")
    bob = await online(server, "bob@localhost/laptop")
    await befriend(alice, bob)
    tablet.take()
    await alice.send(block("bob@localhost"))
    alice.take()
    assert sorted(kinds(bob.take())) == [
        ("unavailable", "alice@localhost/phone", "bob@localhost"),
        ("unavailable", "alice@localhost/tablet", "bob@localhost"),
    ]
    # While blocked, neither sees the other's presence.
    await alice.send(presence(inner="<show>dnd</show>"))
    await bob.send(presence(inner="<show>away</show>"))
    assert [el.get("from") for el in presences(bob.take())] == ["bob@localhost/laptop"]
    assert [el.get("from") for el in presences(alice.take())] == ["alice@localhost/phone"]
    tablet.take()
    await alice.send(unblock("bob@localhost"))
    got = alice.take()
    shown = presences(bob.take())
    assert sorted((el.get("type"), el.get("from"), el.get("to")) for el in shown) == [
        (None, "alice@localhost/phone", "bob@localhost"),
        (None, "alice@localhost/tablet", "bob@localhost"),
    ]
    phone_presence = next(el for el in shown if el.get("from") == "alice@localhost/phone")
    assert phone_presence.findtext(f"{{{ns.CLIENT}}}show") == "dnd"
    # The probes bring Bob's current presence back to each of her resources.
    back = [el for el in presences(got) if el.get("from") == "bob@localhost/laptop"]
    assert [(el.get("to"), el.findtext(f"{{{ns.CLIENT}}}show")) for el in back] == [("alice@localhost/phone", "away")]
    assert [el.get("to") for el in presences(tablet.take()) if el.get("from") == "bob@localhost/laptop"] == [
        "alice@localhost/tablet"
    ]


async def test_block_withdraws_directed_presence(server: Server) -> None:
    """§3.3 and RFC 6121 §4.6: a contact the user sent directed presence to sees the user's
    presence, roster or not; blocking it sends it unavailable presence, once, from that resource."""
    alice = await online(server, "alice@localhost/phone")
    tablet = await online(server, "alice@localhost/tablet")
    mallory = await online(server, "mallory@localhost/pc")
    await alice.send(presence(to="mallory@localhost"))
    assert kinds(mallory.take()) == [(None, "alice@localhost/phone", "mallory@localhost")]
    tablet.take()
    await alice.send(block("mallory@localhost"))
    alice.take()
    assert kinds(mallory.take()) == [("unavailable", "alice@localhost/phone", "mallory@localhost")]
    # Withdrawn: going offline later tells it nothing more.
    await alice.close()
    assert mallory.take() == []


async def test_only_contacts_that_see_the_user_hear_of_the_block(server: Server) -> None:
    alice = await online(server, "alice@localhost/phone")
    bob = await online(server, "bob@localhost/laptop")
    # Alice sees Bob, Bob does not see Alice.
    await alice.send(presence("subscribe", "bob@localhost"))
    await bob.send(presence("subscribed", "alice@localhost"))
    alice.take()
    bob.take()
    await alice.send(block("bob@localhost"))
    alice.take()
    assert bob.take() == []


async def desk_blocked(server: Server) -> tuple[Client, Client, Client]:
    """Alice, a friend of bob's, blocks his desk alone, which sees her go offline; alice, bob's
    laptop and his desk."""
    alice = await online(server, "alice@localhost/phone")
    laptop = await online(server, "bob@localhost/laptop")
    desk = await online(server, "bob@localhost/desk")
    await befriend(alice, laptop)
    desk.take()
    await alice.send(block("bob@localhost/desk"))
    alice.take()
    assert kinds(desk.take()) == [("unavailable", "alice@localhost/phone", "bob@localhost/desk")]
    return alice, laptop, desk


async def test_a_blocked_resource_alone_gets_unavailable(server: Server) -> None:
    alice, laptop, desk = await desk_blocked(server)
    assert laptop.take() == []
    # What is addressed to that resource alone stays away from it; the laptop is not concerned.
    await alice.send(chat("bob@localhost/desk", "hi", extra=OMEMO))
    blocked_error(alice.take()[0])
    await alice.send(chat("bob@localhost/laptop", "hi", extra=OMEMO))
    assert body(laptop.take()[0]) == "hi"
    await desk.send(presence(to="alice@localhost/phone"))
    assert alice.take() == []


async def test_unblocking_all_shows_presence_to_each_contact(server: Server) -> None:
    alice = await online(server, "alice@localhost/phone")
    bob = await online(server, "bob@localhost/laptop")
    carol = await online(server, "carol@localhost/desk")
    await befriend(alice, bob)
    await befriend(alice, carol)
    await alice.send(block("bob@localhost", "carol@localhost"))
    alice.take()
    bob.take()
    carol.take()
    await alice.send(unblock())
    assert kinds(bob.take()) == [(None, "alice@localhost/phone", "bob@localhost")]
    assert kinds(carol.take()) == [(None, "alice@localhost/phone", "carol@localhost")]


async def test_a_blocked_resource_gets_no_later_broadcasts(server: Server) -> None:
    """§3.3: a full JID concerns that resource alone, for the broadcasts after the block too."""
    alice, laptop, desk = await desk_blocked(server)
    await alice.send(presence(inner="<show>dnd</show>"))
    # The other resource gets it, addressed to it; the blocked one goes on seeing her offline.
    assert kinds(laptop.take()) == [(None, "alice@localhost/phone", "bob@localhost/laptop")]
    assert desk.take() == []
    await alice.send(unblock("bob@localhost/desk"))
    alice.take()
    assert kinds(desk.take()) == [(None, "alice@localhost/phone", "bob@localhost/desk")]
    await alice.send(presence(inner="<show>away</show>"))
    for resource in (laptop, desk):
        assert kinds(resource.take()) == [(None, "alice@localhost/phone", "bob@localhost")]


# §3.3, §3.4 with other servers ([s2s] enabled) ---------------------------------------------------

ROMEO = "romeo@montague.example"


async def remote_contact(server: Server, subscription: str = "both") -> None:
    await server.storage.roster.set_item("localhost", "alice", RosterItem(ROMEO, None, subscription))


async def test_a_blocked_remote_contact_hears_of_the_block_and_nothing_after(tmp_path: Path) -> None:
    async with federated(tmp_path) as (server, sent):
        await remote_contact(server)
        alice = await online(server, "alice@localhost/phone")
        sent.clear()
        await alice.send(block(ROMEO))
        alice.take()
        assert kinds(sent) == [("unavailable", "alice@localhost/phone", ROMEO)]
        sent.clear()
        await alice.send(presence(inner="<show>dnd</show>"))
        alice.take()
        assert sent == []
        await alice.send(unblock(ROMEO))
        alice.take()
        assert kinds(sent) == [(None, "alice@localhost/phone", ROMEO), ("probe", "alice@localhost/phone", ROMEO)]
        sent.clear()
        await alice.send(presence())
        alice.take()
        assert kinds(sent) == [(None, "alice@localhost/phone", ROMEO)]


async def test_a_blocked_remote_contact_gets_service_unavailable_for_every_request(tmp_path: Path) -> None:
    """§3.3: modules that answer for the account (vCard, disco) never see the request."""
    async with federated(tmp_path) as (server, sent):
        alice = await online(server, "alice@localhost/phone")
        await alice.send(f"<iq type='set' id='v1'><vCard xmlns='{ns.VCARD}'><FN>Alice</FN></vCard></iq>")
        alice.take()
        await alice.send(block(ROMEO))
        alice.take()
        for to, payload in (
            ("alice@localhost", f"<vCard xmlns='{ns.VCARD}'/>"),
            ("alice@localhost", f"<query xmlns='{ns.DISCO_INFO}'/>"),
            ("alice@localhost/phone", f"<ping xmlns='{ns.PING}'/>"),
        ):
            await arrive(server, f"<iq type='get' id='q1' from='{ROMEO}/orchard' to='{to}'>{payload}</iq>")
            (error,) = sent
            assert (error.get("type"), error.get("to"), condition(error)) == (
                "error", f"{ROMEO}/orchard", "service-unavailable"
            ), to
            sent.clear()
        # A message bounces too (the error goes out although it is from her to him), presence vanishes.
        await arrive(server, f"<message type='chat' id='m1' from='{ROMEO}/orchard' to='alice@localhost'><body>hi</body></message>")
        assert [(el.get("type"), condition(el)) for el in sent] == [("error", "service-unavailable")]
        sent.clear()
        await arrive(server, f"<presence from='{ROMEO}/orchard' to='alice@localhost'/>")
        assert sent == [] and alice.take() == []
        # Whom she does not block still gets her vCard.
        await arrive(server, f"<iq type='get' id='q2' from='juliet@capulet.example/balcony' to='alice@localhost'>"
                             f"<vCard xmlns='{ns.VCARD}'/></iq>")
        (result,) = sent
        assert result.get("type") == "result" and result.findtext(f"{{{ns.VCARD}}}vCard/{{{ns.VCARD}}}FN") == "Alice"


async def test_stanzas_to_a_blocked_service_address_are_refused(tmp_path: Path) -> None:
    """§3.3: a room of a service here is an address like any other; the room never sees them."""
    from .groups import MODULES, ROOM, join, join_xml

    async with running(tmp_path, modules=MODULES) as server:
        bob = await online(server, "bob@localhost/laptop")
        await join(bob, ROOM, "bob")
        alice = await online(server, "alice@localhost/phone")
        await alice.send(block(ROOM))
        alice.take()
        for stanza in (
            join_xml(ROOM, "alice"),
            chat(ROOM, "hi", kind="groupchat"),
            f"<iq type='get' id='d1' to='{ROOM}'><query xmlns='{ns.DISCO_INFO}'/></iq>",
        ):
            await alice.send(stanza)
            (error,) = alice.take()
            blocked_error(error)
        assert bob.take() == []


"""RFC 6121 §2 roster get, set, remove and pushes, with XEP-0237 versioning."""

from __future__ import annotations

from pathlib import Path

import pytest

from schnack.server.app import Server
from schnack.server.c2s import C2SStream
from schnack.server.storage.base import RosterItem as StoredItem
from schnack.xmpp import ns
from schnack.xmpp.jid import JID
from schnack.xmpp.payloads.roster import QUERY, RosterItem

from ...harness import MemoryConnection, connect, running, xml
from .contacts import federated, items_of, kinds, only_item, presence, pushes, remove_item, roster, set_item
from .messaging import condition, error_text, login

IQ = f"{{{ns.CLIENT}}}iq"


async def test_empty_roster_has_a_version_and_makes_the_session_interested(server: Server) -> None:
    alice = await login(server, "alice@localhost/phone")
    session = alice.stream.session
    assert session is not None and not session.interested
    result = await roster(alice)
    query = result.find(QUERY)
    assert query is not None and len(query) == 0
    assert query.get("ver")
    assert result.get("to") == "alice@localhost/phone"
    assert session.interested


async def test_add_pushes_to_every_interested_resource(server: Server) -> None:
    phone = await login(server, "alice@localhost/phone")
    laptop = await login(server, "alice@localhost/laptop")
    quiet = await login(server, "alice@localhost/quiet")  # never asked for the roster
    await roster(phone)
    await roster(laptop)
    await phone.send(set_item("bob@localhost", "Bob", ("Friends", "Work")))
    got = phone.take()
    result = got[-1]
    assert result.tag == IQ and result.get("type") == "result" and result.get("id") == "set1"
    (push,) = pushes(got)
    assert push[1] == RosterItem(JID.parse("bob@localhost"), "Bob", "none", groups=("Friends", "Work"))
    assert pushes(laptop.take()) == [push]
    assert quiet.take() == []
    items = await items_of(laptop)
    assert items == {"bob@localhost": push[1]}


async def test_push_is_addressed_to_each_resource(server: Server) -> None:
    phone = await login(server, "alice@localhost/phone")
    laptop = await login(server, "alice@localhost/laptop")
    await roster(phone)
    await roster(laptop)
    await phone.send(set_item("bob@localhost"))
    (phone_push,) = [el for el in phone.take() if el.get("type") == "set"]
    (laptop_push,) = laptop.take()
    assert phone_push.get("to") == "alice@localhost/phone"
    assert laptop_push.get("to") == "alice@localhost/laptop"
    assert phone_push.get("id") != laptop_push.get("id")
    # The client's answer to a push is taken without reply.
    await laptop.send(f"<iq type='result' id='{laptop_push.get('id')}'/>")
    assert laptop.take() == []


async def test_update_replaces_name_and_groups_and_keeps_the_subscription(server: Server) -> None:
    alice = await login(server, "alice@localhost/phone")
    await login(server, "bob@localhost/laptop")
    await roster(alice)
    await alice.send(presence("subscribe", "bob@localhost"))
    alice.take()
    await alice.send(set_item("bob@localhost", "Robert", ("Family",)))
    item = only_item(alice.take())
    assert (item.name, item.groups, item.ask) == ("Robert", ("Family",), True)
    await alice.send(set_item("bob@localhost"))
    item = only_item(alice.take())
    assert (item.name, item.groups, item.ask) == (None, (), True)


async def test_client_cannot_set_subscription_ask_or_approved(server: Server) -> None:
    alice = await login(server, "alice@localhost/phone")
    await roster(alice)
    await alice.send(set_item("bob@localhost", extra=" subscription='both' ask='subscribe' approved='true'"))
    item = only_item(alice.take())
    assert (item.subscription, item.ask, item.approved) == ("none", False, False)


async def test_contact_jid_is_normalised(server: Server) -> None:
    alice = await login(server, "alice@localhost/phone")
    await alice.send(set_item("Bob@LocalHost"))
    assert alice.take()[-1].get("type") == "result"
    assert list(await items_of(alice)) == ["bob@localhost"]


# XEP-0237 versioning --------------------------------------------------------------------------


async def test_current_version_gets_an_empty_result(server: Server) -> None:
    alice = await login(server, "alice@localhost/phone")
    await alice.send(set_item("bob@localhost"))
    alice.take()
    ver = (await roster(alice)).find(QUERY).get("ver")  # type: ignore[union-attr]
    result = await roster(alice, ver=ver)
    assert len(result) == 0


async def test_stale_or_empty_version_gets_the_whole_roster_and_pushes_carry_the_new_one(
    server: Server,
) -> None:
    alice = await login(server, "alice@localhost/phone")
    first = (await roster(alice, ver="")).find(QUERY)
    assert first is not None
    old = first.get("ver")
    await alice.send(set_item("bob@localhost"))
    ((pushed_ver, _),) = pushes(alice.take())
    assert pushed_ver != old
    result = (await roster(alice, ver=old)).find(QUERY)
    assert result is not None
    assert result.get("ver") == pushed_ver
    assert [item.get("jid") for item in result] == ["bob@localhost"]
    assert len(await roster(alice, ver=pushed_ver)) == 0


async def test_version_of_a_recreated_account_differs(server: Server) -> None:
    alice = await login(server, "alice@localhost/phone")
    await alice.send(set_item("bob@localhost"))
    alice.take()
    ver = (await roster(alice)).find(QUERY).get("ver")  # type: ignore[union-attr]
    await alice.close()
    await server.storage.accounts.delete("localhost", "alice")
    again = await login(server, "alice@localhost/phone")
    await again.send(set_item("carol@localhost"))
    again.take()
    result = await roster(again, ver=ver)
    query = result.find(QUERY)
    assert query is not None and query.get("ver") != ver
    assert [item.get("jid") for item in query] == ["carol@localhost"]


async def test_stream_features_offer_versioning_after_authentication(server: Server) -> None:
    conn = MemoryConnection()
    stream = C2SStream(server, conn)
    await stream.on_open(f"{{{ns.FRAMING}}}open", {"to": "localhost", "version": "1.0"}, None)
    before = conn.out[-1]
    assert before.tag == f"{{{ns.STREAMS}}}features"
    assert before.find(f"{{{ns.ROSTER_VER}}}ver") is None
    stream.username = "alice"
    conn.out.clear()
    await stream.on_open(f"{{{ns.FRAMING}}}open", {"to": "localhost", "version": "1.0"}, None)
    after = conn.out[-1]
    assert after.tag == f"{{{ns.STREAMS}}}features"
    assert after.find(f"{{{ns.ROSTER_VER}}}ver") is not None


# §2.3.3 and §2.5.3 errors ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("<item jid='bob@localhost'/><item jid='carol@localhost'/>", "bad-request"),
        ("", "bad-request"),
        ("<item name='nobody'/>", "bad-request"),
        ("<item jid='bob@localhost'><group>A</group><group>A</group></item>", "bad-request"),
        ("<item jid='bob@localhost'><group/></item>", "not-acceptable"),
        ("<item jid='bob@localhost'><group>A</group><group></group></item>", "not-acceptable"),
        (f"<item jid='bob@localhost' name='{'n' * 1024}'/>", "not-acceptable"),
        (f"<item jid='bob@localhost'><group>{'g' * 1024}</group></item>", "not-acceptable"),
        ("<item jid='bob@localhost/phone'/>", "bad-request"),
        ("<item jid='@localhost'/>", "jid-malformed"),
        ("<item jid='alice@localhost'/>", "not-allowed"),
        ("<item jid='nobody@localhost' subscription='remove'/>", "item-not-found"),
    ],
)
async def test_bad_roster_set(server: Server, query: str, expected: str) -> None:
    alice = await login(server, "alice@localhost/phone")
    await roster(alice)
    await alice.send(f"<iq type='set' id='bad'><query xmlns='{ns.ROSTER}'>{query}</query></iq>")
    (error,) = alice.take()
    assert error.get("id") == "bad"
    assert condition(error) == expected, xml(error)
    assert await items_of(alice) == {}


@pytest.mark.parametrize("kind", ["get", "set"])
async def test_another_accounts_roster_is_forbidden(server: Server, kind: str) -> None:
    alice = await login(server, "alice@localhost/phone")
    await login(server, "bob@localhost/laptop")
    item = "<item jid='carol@localhost'/>" if kind == "set" else ""
    await alice.send(
        f"<iq type='{kind}' id='x' to='bob@localhost'><query xmlns='{ns.ROSTER}'>{item}</query></iq>"
    )
    (error,) = alice.take()
    assert condition(error) == "forbidden"


async def test_full_roster_refuses_new_items_but_updates_old_ones(tmp_path: Path) -> None:
    async with running(tmp_path, modules={"roster": {"max_items": 1}}) as server:
        alice = await login(server, "alice@localhost/phone")
        await alice.send(set_item("bob@localhost"))
        assert alice.take()[-1].get("type") == "result"
        await alice.send(set_item("carol@localhost"))
        (error,) = alice.take()
        assert condition(error) == "not-allowed"
        assert "full" in (error_text(error) or "")
        await alice.send(set_item("bob@localhost", "Bob"))
        assert alice.take()[-1].get("type") == "result"
        # A subscription request needs an item too.
        await alice.send(presence("subscribe", "carol@localhost"))
        (error,) = alice.take()
        assert condition(error) == "not-allowed"


async def test_limits_are_options(tmp_path: Path) -> None:
    async with running(tmp_path, modules={"roster": {"max_text": 64, "max_groups": 2}}) as server:
        alice = await login(server, "alice@localhost/phone")
        await alice.send(set_item("bob@localhost", "n" * 65))
        assert condition(alice.take()[-1]) == "not-acceptable"
        await alice.send(set_item("bob@localhost", "n" * 64, ("a", "b", "c")))
        assert condition(alice.take()[-1]) == "not-acceptable"
        await alice.send(set_item("bob@localhost", "n" * 64, ("a", "b")))
        assert alice.take()[-1].get("type") == "result"


# §2.5 removal ---------------------------------------------------------------------------------


async def test_remove_pushes_removal(server: Server) -> None:
    phone = await login(server, "alice@localhost/phone")
    laptop = await login(server, "alice@localhost/laptop")
    await roster(laptop)
    await phone.send(set_item("bob@localhost", "Bob"))
    phone.take()
    laptop.take()
    await phone.send(remove_item("bob@localhost"))
    assert phone.take()[-1].get("type") == "result"
    (push,) = laptop.take()
    query = push.find(QUERY)
    assert query is not None
    (item,) = query
    assert item.attrib == {"jid": "bob@localhost", "subscription": "remove"}
    assert len(item) == 0
    assert await items_of(laptop) == {}


async def test_remove_ends_subscriptions_both_ways(server: Server) -> None:
    alice = await login(server, "alice@localhost/phone")
    bob = await login(server, "bob@localhost/laptop")
    for client in (alice, bob):
        await roster(client)
        await client.send(presence())
    for first, second in ((alice, bob), (bob, alice)):
        await first.send(presence("subscribe", second.jid.partition("/")[0]))
        await second.send(presence("subscribed", first.jid.partition("/")[0]))
    alice.take()
    bob.take()
    assert (await items_of(bob))["alice@localhost"].subscription == "both"
    await alice.send(remove_item("bob@localhost"))
    got = bob.take()
    assert kinds(got) == [
        ("unsubscribe", "alice@localhost", "bob@localhost"),
        ("unsubscribed", "alice@localhost", "bob@localhost"),
        ("unavailable", "alice@localhost/phone", "bob@localhost"),
    ]
    assert [item.subscription for _, item in pushes(got)] == ["to", "none"]
    assert (await items_of(bob))["alice@localhost"].subscription == "none"
    assert kinds(alice.take()) == [("unavailable", "bob@localhost/laptop", "alice@localhost")]
    assert await items_of(alice) == {}


async def test_remove_declines_a_waiting_request(server: Server) -> None:
    alice = await login(server, "alice@localhost/phone")
    bob = await login(server, "bob@localhost/laptop")
    await roster(alice)
    await alice.send(presence("subscribe", "bob@localhost"))
    alice.take()
    # Bob has no item for Alice, only her request: removing her declines it.
    await bob.send(remove_item("alice@localhost"))
    assert bob.take()[-1].get("type") == "result"
    got = alice.take()
    assert kinds(got) == [("unsubscribed", "bob@localhost", "alice@localhost")]
    item = only_item(got)
    assert (item.subscription, item.ask) == ("none", False)
    assert await server.storage.maps.items("localhost", "bob", "roster-pending") == {}
    await bob.send(remove_item("alice@localhost"))
    assert condition(bob.take()[-1]) == "item-not-found"


async def test_deleting_an_account_ends_its_subscriptions(server: Server) -> None:
    """XEP-0077 §3.2: contacts are told, so their rosters do not point at a dead account."""
    alice = await login(server, "alice@localhost/phone")
    bob = await login(server, "bob@localhost/laptop")
    carol = await login(server, "carol@localhost/desk")
    for client in (alice, bob, carol):
        await roster(client)
        await client.send(presence())
    for first, second in ((alice, bob), (bob, alice)):
        await first.send(presence("subscribe", second.jid.partition("/")[0]))
        await second.send(presence("subscribed", first.jid.partition("/")[0]))
    await carol.send(presence("subscribe", "alice@localhost"))
    for client in (alice, bob, carol):
        client.take()
    assert await server.delete_account("localhost", "alice")
    assert kinds(bob.take()) == [
        ("unsubscribe", "alice@localhost", "bob@localhost"),
        ("unsubscribed", "alice@localhost", "bob@localhost"),
        ("unavailable", "alice@localhost/phone", "bob@localhost"),
    ]
    assert (await items_of(bob))["alice@localhost"].subscription == "none"
    assert kinds(carol.take()) == [("unsubscribed", "alice@localhost", "carol@localhost")]
    item = (await items_of(carol))["alice@localhost"]
    assert (item.subscription, item.ask) == ("none", False)
    assert (await server.storage.roster.get("localhost", "alice"))[1] == {}
    assert not await server.delete_account("localhost", "alice")


async def test_contacts_at_other_servers_hear_of_the_removal(tmp_path: Path) -> None:
    """§2.5.2 and XEP-0077 §3.2 with [s2s] enabled: a contact elsewhere is told as one here is."""
    async with federated(tmp_path) as (server, sent):
        alice = await login(server, "alice@localhost/phone")
        await roster(alice)
        await alice.send(presence())
        for contact in ("romeo@montague.example", "juliet@capulet.example"):
            await server.storage.roster.set_item("localhost", "alice", StoredItem(contact, None, "both"))
        alice.take()
        sent.clear()
        await alice.send(remove_item("romeo@montague.example"))
        assert [item.subscription for _, item in pushes(alice.take())] == ["remove"]
        assert kinds(sent) == [
            ("unsubscribe", "alice@localhost", "romeo@montague.example"),
            ("unsubscribed", "alice@localhost", "romeo@montague.example"),
            ("unavailable", "alice@localhost/phone", "romeo@montague.example"),
        ]
        sent.clear()
        assert await server.delete_account("localhost", "alice")
        assert kinds(sent) == [
            ("unsubscribe", "alice@localhost", "juliet@capulet.example"),
            ("unsubscribed", "alice@localhost", "juliet@capulet.example"),
            ("unavailable", "alice@localhost/phone", "juliet@capulet.example"),
        ]


async def test_roster_survives_reconnect(server: Server) -> None:
    alice = await login(server, "alice@localhost/phone")
    await alice.send(set_item("bob@localhost", "Bob", ("Friends",)))
    await alice.close()
    again = await connect(server, "alice@localhost/tablet")
    item = (await items_of(again))["bob@localhost"]
    assert (item.name, item.groups) == ("Bob", ("Friends",))

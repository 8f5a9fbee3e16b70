"""XEP-0060 explicit subscriptions on PEP nodes: subscribe (§6.1), unsubscribe (§6.2), the
requester's subscriptions (§5.6), the owner's view and changes (§8.8), notifications and the
last item (§6.1.7), access checks and when subscriptions end, persistence."""

from __future__ import annotations

from pathlib import Path
from xml.etree.ElementTree import Element

from schnack.server.app import Server
from schnack.server.storage.base import RosterItem
from schnack.xmpp.payloads.pubsub import (
    OWNER,
    PUBSUB,
    EventDelete,
    OwnerSubscriptions,
    Subscription,
    Subscriptions,
    parse_request,
)

from ...harness import Client, running, xml
from .messaging import condition, login
from .test_pep import (
    IQ,
    NICK,
    answer_caps_query,
    app_condition,
    befriend,
    caps_for,
    events,
    item_ids,
    nick,
    online,
    owner,
    publish,
    reply,
    settled,
    storage_url,  # noqa: F401 (a fixture)
)

VCARD4 = "urn:xmpp:vcard4"


async def subscribe(client: Client, to: str, node: str = NICK, jid: str | None = None, verb: str = "subscribe",
                    extra: str = "") -> Element:
    """Send a subscribe (or unsubscribe) request; return the answer."""
    jid = jid if jid is not None else client.jid.partition("/")[0]
    await client.send(f"<iq type='set' id='sub' to='{to}'><pubsub xmlns='{PUBSUB}'>"
                      f"<{verb} node='{node}' jid='{jid}'{extra}/></pubsub></iq>")
    return reply(client.take(), "sub")


def subscription(answer: Element) -> Subscription:
    assert answer.get("type") == "result", xml(answer)
    pubsub = answer.find(f"{{{PUBSUB}}}pubsub")
    assert pubsub is not None
    (sub,) = pubsub
    return Subscription.from_xml(sub)


async def subscriptions(client: Client, to: str, node: str | None = None) -> list[tuple[str | None, str]]:
    node_attr = f" node='{node}'" if node else ""
    await client.send(f"<iq type='get' id='subs' to='{to}'><pubsub xmlns='{PUBSUB}'><subscriptions{node_attr}/>"
                      "</pubsub></iq>")
    answer = reply(client.take(), "subs")
    assert answer.get("type") == "result", xml(answer)
    pubsub = answer.find(f"{{{PUBSUB}}}pubsub")
    assert pubsub is not None
    request = parse_request(pubsub)
    assert isinstance(request, Subscriptions)
    return [(s.node, s.jid) for s in request.subscriptions]


async def subscribers(client: Client, node: str = NICK) -> list[str]:
    answer = await owner(client, f"<subscriptions node='{node}'/>", kind="get")
    assert answer.get("type") == "result", xml(answer)
    pubsub = answer.find(f"{{{OWNER}}}pubsub")
    assert pubsub is not None
    request = parse_request(pubsub)
    assert isinstance(request, OwnerSubscriptions)
    return [s.jid for s in request.subscriptions]


async def with_caps(server: Server, client: Client, *features: str) -> list[Element]:
    """Send initial presence with caps for ``features``, answering the server's query if it asks;
    return what arrived once the last items went out."""
    c, info = caps_for(*features)
    await client.send(f"<presence>{c}</presence>")
    got = client.take()
    if any(el.tag == IQ and el.get("type") == "get" for el in got):
        return await answer_caps_query(server, client, got, info)
    await settled(server)
    return got + client.take()


async def test_subscribe_then_notified_without_notify_interest(server: Server) -> None:
    """§6.1: an explicit subscriber gets notifications even if its caps do not ask for the node."""
    await befriend(server, "alice", "bob")
    alice = await online(server, "alice@localhost/phone")
    await publish(alice, NICK, nick("Alice"))
    bob = await login(server, "bob@localhost/phone")
    c, info = caps_for("urn:example:other+notify")
    await bob.send(f"<presence>{c}</presence>")
    await answer_caps_query(server, bob, bob.take(), info)
    bob.take()
    await publish(alice, NICK, nick("Alice 2"), item_id="two")
    assert events(bob.take()) == []
    answer = await subscribe(bob, "alice@localhost")
    sub = subscription(answer)
    assert (sub.node, sub.jid, sub.subscription) == (NICK, "bob@localhost", "subscribed") and sub.subid
    # §6.1.7: the last item follows the answer.
    await settled(server)
    ((sender, event),) = events(bob.take())
    assert sender == "alice@localhost" and item_ids(event) == ("two",)
    await publish(alice, NICK, nick("Alice 3"), item_id="three")
    ((_, event),) = events(bob.take())
    assert item_ids(event) == ("three",)
    # Subscribing again keeps the one subscription (and sends nothing).
    assert subscription(await subscribe(bob, "alice@localhost")).subid == sub.subid
    await settled(server)
    assert events(bob.take()) == []
    assert await subscriptions(bob, "alice@localhost") == [(NICK, "bob@localhost")]
    assert await subscribers(alice) == ["bob@localhost"]


async def test_subscriber_coming_online_gets_the_last_item_once(server: Server) -> None:
    """§6.1.7 on_sub_and_presence: for a subscriber that is no contact, and once for one that is."""
    await befriend(server, "alice", "bob")
    alice = await online(server, "alice@localhost/phone")
    await publish(alice, "urn:example:open", "<e xmlns='urn:example'/>", options=(("pubsub#access_model", "open"),))
    await publish(alice, "urn:example:quiet", "<e xmlns='urn:example'/>",
                  options=(("pubsub#access_model", "open"), ("pubsub#send_last_published_item", "on_sub")))
    for user in ("bob", "mallory"):
        client = await online(server, f"{user}@localhost/phone")
        for node in ("urn:example:open", "urn:example:quiet"):
            subscription(await subscribe(client, "alice@localhost", node))
        await client.close()
    for user in ("bob", "mallory"):
        client = await login(server, f"{user}@localhost/laptop")
        got = await with_caps(server, client, "urn:example:other+notify")
        assert [e.node for _, e in events(got)] == ["urn:example:open"], user
    # With +notify for the node, bob gets it as a contact: once.
    tablet = await login(server, "bob@localhost/tablet")
    got = await with_caps(server, tablet, "urn:example:open+notify")
    assert [e.node for _, e in events(got)] == ["urn:example:open"]


async def test_explicit_and_implied_interest_notify_once(server: Server) -> None:
    await befriend(server, "alice", "bob")
    alice = await online(server, "alice@localhost/phone")
    bob = await online(server, "bob@localhost/phone")
    laptop = await online(server, "bob@localhost/laptop")
    await publish(alice, NICK, nick("Alice"))
    subscription(await subscribe(bob, "alice@localhost"))
    await settled(server)
    for client in (bob, laptop):
        client.take()
    await publish(alice, NICK, nick("Alice 2"), item_id="two")
    for client in (bob, laptop):
        assert [item_ids(e) for _, e in events(client.take())] == [("two",)]


async def test_full_jid_subscription_reaches_that_resource_only(server: Server) -> None:
    alice = await online(server, "alice@localhost/phone")
    await publish(alice, "urn:example:open", "<e xmlns='urn:example'>1</e>",
                  options=(("pubsub#access_model", "open"),))
    phone = await online(server, "bob@localhost/phone")
    laptop = await online(server, "bob@localhost/laptop")
    sub = subscription(await subscribe(phone, "alice@localhost", "urn:example:open", jid="bob@localhost/phone"))
    assert sub.jid == "bob@localhost/phone"
    await settled(server)
    assert len(events(phone.take())) == 1
    await publish(alice, "urn:example:open", "<e xmlns='urn:example'>2</e>", item_id="two")
    assert [item_ids(e) for _, e in events(phone.take())] == [("two",)]
    assert laptop.take() == []


async def test_subscribe_errors(server: Server) -> None:
    """§6.1.3: wrong JID, missing node or account, and each access model's refusal."""
    await befriend(server, "alice", "bob")
    await befriend(server, "alice", "carol", a_sees_b="to", b_sees_a="from")  # carol does not see alice
    await server.storage.roster.set_item("localhost", "alice", RosterItem("dave@localhost", subscription="both",
                                                                          groups=("work",)))
    alice = await online(server, "alice@localhost/phone")
    await publish(alice, NICK, nick("Alice"))
    await publish(alice, "urn:example:friends", "<e xmlns='urn:example'/>",
                  options=(("pubsub#access_model", "roster"), ("pubsub#roster_groups_allowed", "friends")))
    await publish(alice, "urn:example:mine", "<e xmlns='urn:example'/>",
                  options=(("pubsub#access_model", "whitelist"),))
    bob = await online(server, "bob@localhost/phone")
    carol = await online(server, "carol@localhost/phone")
    dave = await online(server, "dave@localhost/phone")
    answer = await subscribe(bob, "alice@localhost", jid="carol@localhost")
    assert condition(answer) == "bad-request" and app_condition(answer) == "invalid-jid"
    answer = await subscribe(bob, "alice@localhost", jid="not a jid@")
    assert condition(answer) == "bad-request" and app_condition(answer) == "invalid-jid"
    answer = await subscribe(bob, "alice@localhost", node="urn:example:none")
    assert condition(answer) == "item-not-found"
    assert condition(await subscribe(bob, "nobody@localhost")) == "service-unavailable"
    answer = await subscribe(carol, "alice@localhost")
    assert condition(answer) == "not-authorized" and app_condition(answer) == "presence-subscription-required"
    answer = await subscribe(dave, "alice@localhost", node="urn:example:friends")
    assert condition(answer) == "not-authorized" and app_condition(answer) == "not-in-roster-group"
    answer = await subscribe(bob, "alice@localhost", node="urn:example:mine")
    assert condition(answer) == "not-allowed" and app_condition(answer) == "closed-node"
    # The owner may subscribe to any node of its own.
    assert subscription(await subscribe(alice, "alice@localhost", node="urn:example:mine")).jid == "alice@localhost"
    await settled(server)
    assert await subscribers(alice, "urn:example:mine") == ["alice@localhost"]
    assert await subscribers(alice) == []


async def test_unsubscribe_and_its_errors(server: Server) -> None:
    """§6.2 and §6.2.3."""
    await befriend(server, "alice", "bob")
    alice = await online(server, "alice@localhost/phone")
    await publish(alice, NICK, nick("Alice"))
    bob = await online(server, "bob@localhost/phone")
    sub = subscription(await subscribe(bob, "alice@localhost"))
    await settled(server)
    bob.take()
    answer = await subscribe(bob, "alice@localhost", jid="carol@localhost", verb="unsubscribe")
    assert condition(answer) == "forbidden"
    answer = await subscribe(bob, "alice@localhost", verb="unsubscribe", extra=" subid='wrong'")
    assert condition(answer) == "not-acceptable" and app_condition(answer) == "invalid-subid"
    answer = await subscribe(bob, "alice@localhost", node="urn:example:none", verb="unsubscribe")
    assert condition(answer) == "item-not-found"
    answer = await subscribe(bob, "alice@localhost", verb="unsubscribe", extra=f" subid='{sub.subid}'")
    assert answer.get("type") == "result", xml(answer)
    answer = await subscribe(bob, "alice@localhost", verb="unsubscribe")
    assert condition(answer) == "unexpected-request" and app_condition(answer) == "not-subscribed"
    assert await subscriptions(bob, "alice@localhost") == []
    assert await subscribers(alice) == []


async def test_subscriptions_list_is_the_requesters_own(server: Server) -> None:
    """§5.6: all of one's subscriptions on a service, or those to one node."""
    await befriend(server, "alice", "bob")
    await befriend(server, "alice", "carol")
    alice = await online(server, "alice@localhost/phone")
    await publish(alice, NICK, nick("Alice"))
    await publish(alice, VCARD4, "<vcard xmlns='urn:ietf:params:xml:ns:vcard-4.0'/>")
    bob = await online(server, "bob@localhost/phone")
    carol = await online(server, "carol@localhost/phone")
    for node in (NICK, VCARD4):
        subscription(await subscribe(bob, "alice@localhost", node))
    subscription(await subscribe(carol, "alice@localhost", NICK))
    await settled(server)
    assert await subscriptions(bob, "alice@localhost") == [(NICK, "bob@localhost"), (VCARD4, "bob@localhost")]
    assert await subscriptions(bob, "alice@localhost", VCARD4) == [(VCARD4, "bob@localhost")]
    assert await subscriptions(carol, "alice@localhost") == [(NICK, "carol@localhost")]
    assert await subscriptions(alice, "alice@localhost") == []
    assert sorted(await subscribers(alice)) == ["bob@localhost", "carol@localhost"]
    await bob.send(f"<iq type='get' id='subs' to='nobody@localhost'><pubsub xmlns='{PUBSUB}'><subscriptions/>"
                   "</pubsub></iq>")
    assert condition(reply(bob.take(), "subs")) == "service-unavailable"


async def test_owner_changes_subscriptions(server: Server) -> None:
    """§8.8.2: 'none' ends a subscription, 'subscribed' adds one the access model admits; all or nothing."""
    await befriend(server, "alice", "bob")
    await befriend(server, "alice", "carol")
    alice = await online(server, "alice@localhost/phone")
    await publish(alice, NICK, nick("Alice"))
    bob = await online(server, "bob@localhost/phone")
    subscription(await subscribe(bob, "alice@localhost"))
    await settled(server)
    answer = await owner(alice, "<subscriptions node='" + NICK + "'><subscription jid='bob@localhost' "
                         "subscription='none'/><subscription jid='mallory@localhost' subscription='subscribed'/>"
                         "</subscriptions>")
    assert condition(answer) == "not-acceptable"
    assert await subscribers(alice) == ["bob@localhost"]
    answer = await owner(alice, "<subscriptions node='" + NICK + "'><subscription jid='bob@localhost' "
                         "subscription='none'/><subscription jid='carol@localhost' subscription='subscribed'/>"
                         "</subscriptions>")
    assert answer.get("type") == "result", xml(answer)
    assert await subscribers(alice) == ["carol@localhost"]
    assert condition(await owner(alice, "<subscriptions node='urn:example:none'/>", kind="get")) == "item-not-found"
    await bob.send(f"<iq type='get' id='own' to='alice@localhost'><pubsub xmlns='{OWNER}'>"
                   f"<subscriptions node='{NICK}'/></pubsub></iq>")
    assert condition(reply(bob.take(), "own")) == "forbidden"


async def test_losing_access_ends_the_subscription(server: Server) -> None:
    """§4.5: the access model is checked again at each notification and on reconfiguration."""
    await befriend(server, "alice", "bob")
    await befriend(server, "alice", "carol")
    alice = await online(server, "alice@localhost/phone")
    await publish(alice, NICK, nick("Alice"))
    bob = await online(server, "bob@localhost/phone")
    carol = await online(server, "carol@localhost/phone")
    for client in (bob, carol):
        subscription(await subscribe(client, "alice@localhost"))
    await settled(server)
    # Alice stops sharing her presence with bob.
    await server.storage.roster.set_item("localhost", "alice", RosterItem("bob@localhost", subscription="to"))
    for client in (bob, carol):
        client.take()
    await publish(alice, NICK, nick("Alice 2"), item_id="two")
    assert bob.take() == []
    assert [item_ids(e) for _, e in events(carol.take())] == [("two",)]
    assert await subscriptions(bob, "alice@localhost") == []
    # A whitelist leaves no one but the owner.
    answer = await owner(alice, f"<configure node='{NICK}'><x xmlns='jabber:x:data' type='submit'>"
                         "<field var='pubsub#access_model'><value>whitelist</value></field></x></configure>")
    assert answer.get("type") == "result", xml(answer)
    assert await subscribers(alice) == []


async def test_node_deletion_ends_subscriptions(server: Server) -> None:
    await befriend(server, "alice", "bob")
    alice = await online(server, "alice@localhost/phone")
    await publish(alice, NICK, nick("Alice"))
    bob = await online(server, "bob@localhost/phone")
    subscription(await subscribe(bob, "alice@localhost"))
    await settled(server)
    bob.take()
    assert (await owner(alice, f"<delete node='{NICK}'/>")).get("type") == "result"
    assert [e for _, e in events(bob.take())] == [EventDelete(NICK)]
    await publish(alice, NICK, nick("Alice again"))
    assert await subscriptions(bob, "alice@localhost") == []
    assert await subscribers(alice) == []


async def test_deleted_accounts_end_subscriptions_both_ways(server: Server) -> None:
    await befriend(server, "alice", "bob")
    alice = await online(server, "alice@localhost/phone")
    bob = await online(server, "bob@localhost/phone")
    await publish(alice, NICK, nick("Alice"))
    await publish(bob, NICK, nick("Bob"))
    subscription(await subscribe(bob, "alice@localhost"))
    subscription(await subscribe(alice, "bob@localhost"))
    await settled(server)
    await bob.close()
    assert await server.delete_account("localhost", "bob")
    assert await subscribers(alice) == []
    assert await server.storage.maps.items("localhost", "alice", "pep-subscribed") == {}
    assert await server.storage.maps.items("localhost", "bob", "pep-subscriptions") == {}


async def test_subscriptions_survive_a_restart(tmp_path: Path, storage_url: str) -> None:  # noqa: F811
    async with running(tmp_path, storage={"url": storage_url}) as server:
        await befriend(server, "alice", "bob")
        alice = await online(server, "alice@localhost/phone")
        await publish(alice, NICK, nick("Alice"))
        bob = await online(server, "bob@localhost/phone")
        subscription(await subscribe(bob, "alice@localhost"))
        await settled(server)
    async with running(tmp_path, storage={"url": storage_url}) as server:
        alice = await online(server, "alice@localhost/phone")
        bob = await login(server, "bob@localhost/phone")
        c, info = caps_for("urn:example:other+notify")
        await bob.send(f"<presence>{c}</presence>")
        await answer_caps_query(server, bob, bob.take(), info)
        bob.take()
        await publish(alice, NICK, nick("Alice 2"), item_id="two")
        assert [item_ids(e) for _, e in events(bob.take())] == [("two",)]
        assert await subscriptions(bob, "alice@localhost") == [(NICK, "bob@localhost")]


async def test_account_announces_subscriptions(server: Server) -> None:
    alice = await online(server, "alice@localhost/phone")
    await alice.send("<iq type='get' id='d' to='alice@localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
    (answer,) = alice.take()
    features = {f.get("var") for f in answer.iter() if f.tag.endswith("}feature")}
    for name in ("subscribe", "retrieve-subscriptions", "manage-subscriptions"):
        assert f"{PUBSUB}#{name}" in features

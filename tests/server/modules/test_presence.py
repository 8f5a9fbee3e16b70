"""RFC 6121 §3 subscriptions (Appendix A states) and §4 presence: broadcast, probes, directed, unavailable."""

from __future__ import annotations

from pathlib import Path
from xml.etree.ElementTree import Element

from schnack.server.app import Server
from schnack.server.c2s import C2SStream
from schnack.server.hooks import HANDLED, Handled
from schnack.server.module import Module, NoOptions
from schnack.server.sessions import Session
from schnack.server.storage.base import RosterItem as StoredItem
from schnack.xmpp import ns
from schnack.xmpp.stanza import Stanza

from ...harness import Client, MemoryConnection, add_user, connect, running, xml
from .contacts import PRESENCE, federated, items_of, kinds, presence, presences, pushes, roster
from .messaging import OMEMO, body, chat, condition, error_text, login, session_of

MESSAGE = f"{{{ns.CLIENT}}}message"
PENDING = "roster-pending"


def bare(client: Client) -> str:
    return client.jid.partition("/")[0]


async def online(server: Server, jid: str, inner: str = "") -> Client:
    """Log in, ask for the roster and send initial presence; what arrived meanwhile is dropped."""
    client = await login(server, jid)
    await roster(client)
    await client.send(presence(inner=inner))
    client.take()
    return client


async def befriend(a: Client, b: Client) -> None:
    """Mutual subscription (state Both on both sides)."""
    await a.send(presence("subscribe", bare(b)))
    await b.send(presence("subscribed", bare(a)))
    await b.send(presence("subscribe", bare(a)))
    await a.send(presence("subscribed", bare(b)))
    a.take()
    b.take()


def states(elements: list[Element]) -> list[tuple[str, bool, bool]]:
    """(subscription, ask, approved) of each roster push among ``elements``."""
    return [(item.subscription, item.ask, item.approved) for _, item in pushes(elements)]


# §4.2 initial presence ------------------------------------------------------------------------


async def test_initial_presence_sets_the_session_and_comes_back(server: Server) -> None:
    alice = await login(server, "alice@localhost/phone")
    session = session_of(alice)
    assert not session.available
    await alice.send("<presence><show>away</show><priority>5</priority></presence>")
    (echo,) = alice.take()
    assert (echo.get("from"), echo.get("to"), echo.get("type")) == (
        "alice@localhost/phone",
        "alice@localhost/phone",
        None,
    )
    assert echo.findtext(f"{{{ns.CLIENT}}}show") == "away"
    assert session.available and session.priority == 5
    assert session.presence is not None and session.presence.get("to") is None
    await alice.send("<presence><priority>-3</priority></presence>")
    alice.take()
    assert session.priority == -3


async def test_initial_presence_delivers_offline_messages(server: Server) -> None:
    alice = await online(server, "alice@localhost/phone")
    await add_user(server, "bob")
    await alice.send(chat("bob@localhost", "while you were away", extra=OMEMO))
    assert alice.take() == []
    bob = await connect(server, "bob@localhost/laptop")
    await bob.send(presence())
    echo, message = bob.take()
    assert echo.tag == PRESENCE
    assert message.tag == MESSAGE and body(message) == "while you were away"
    assert await server.storage.archive.count("localhost", "bob", "offline") == 0


async def test_available_resource_gets_messages_to_the_bare_jid(server: Server) -> None:
    alice = await online(server, "alice@localhost/phone")
    bob = await online(server, "bob@localhost/laptop")
    await alice.send(chat("bob@localhost", "live", extra=OMEMO))
    (message,) = bob.take()
    assert body(message) == "live"
    await bob.send(presence("unavailable"))
    bob.take()
    await alice.send(chat("bob@localhost", "stored", extra=OMEMO))
    assert bob.take() == []
    assert await server.storage.archive.count("localhost", "bob", "offline") == 1


async def test_new_resource_sees_its_siblings_and_they_see_it(server: Server) -> None:
    phone = await online(server, "alice@localhost/phone", "<status>on the phone</status>")
    tablet = await login(server, "alice@localhost/tablet")
    await tablet.send(presence())
    got = tablet.take()
    assert kinds(got) == [
        (None, "alice@localhost/tablet", "alice@localhost/tablet"),
        (None, "alice@localhost/phone", "alice@localhost/tablet"),
    ]
    sibling = next(el for el in got if el.get("from") == "alice@localhost/phone")
    assert sibling.findtext(f"{{{ns.CLIENT}}}status") == "on the phone"
    assert kinds(phone.take()) == [(None, "alice@localhost/tablet", "alice@localhost/phone")]


async def test_bad_priority_is_refused_and_changes_nothing(server: Server) -> None:
    alice = await login(server, "alice@localhost/phone")
    for value in ("high", "128", "-129", "1.5"):
        await alice.send(f"<presence id='p'><priority>{value}</priority></presence>")
        (error,) = alice.take()
        assert error.tag == PRESENCE and condition(error) == "bad-request", value
    assert not session_of(alice).available


async def test_unknown_presence_type_is_a_bad_request(server: Server) -> None:
    alice = await login(server, "alice@localhost/phone")
    await alice.send("<presence type='invisible' id='p'/>")
    (error,) = alice.take()
    assert condition(error) == "bad-request"


async def test_pre_approval_is_offered_after_authentication(server: Server) -> None:
    conn = MemoryConnection()
    stream = C2SStream(server, conn)
    stream.username = "alice"
    await stream.on_open(f"{{{ns.FRAMING}}}open", {"to": "localhost", "version": "1.0"}, None)
    features = conn.out[-1]
    assert features.find(f"{{{ns.PRE_APPROVAL}}}sub") is not None


# §3 subscriptions, Appendix A -----------------------------------------------------------------


async def test_handshake_from_none_to_both(server: Server) -> None:
    alice = await online(server, "alice@localhost/phone")
    bob = await online(server, "bob@localhost/laptop", "<status>here</status>")

    # None -> None + Pending Out; Bob's server keeps and delivers the request (None + Pending In).
    await alice.send(presence("subscribe", "bob@localhost", "<status>it is Alice</status>"))
    assert states(alice.take()) == [("none", True, False)]
    (request,) = bob.take()
    assert (request.get("type"), request.get("from"), request.get("to")) == (
        "subscribe",
        "alice@localhost",
        "bob@localhost",
    )
    assert request.findtext(f"{{{ns.CLIENT}}}status") == "it is Alice"
    assert list(await server.storage.maps.items("localhost", "bob", PENDING)) == ["alice@localhost"]

    # Bob approves: From for him, To for her, and she gets his presence.
    await bob.send(presence("subscribed", "alice@localhost"))
    assert states(bob.take()) == [("from", False, False)]
    got = alice.take()
    assert states(got) == [("to", False, False)]
    assert kinds(got) == [
        ("subscribed", "bob@localhost", "alice@localhost"),
        (None, "bob@localhost/laptop", "alice@localhost"),
    ]
    assert presences(got)[1].findtext(f"{{{ns.CLIENT}}}status") == "here"
    assert await server.storage.maps.items("localhost", "bob", PENDING) == {}

    # And back: Both on both sides.
    await bob.send(presence("subscribe", "alice@localhost"))
    assert states(bob.take()) == [("from", True, False)]
    assert kinds(alice.take()) == [("subscribe", "bob@localhost", "alice@localhost")]
    await alice.send(presence("subscribed", "bob@localhost"))
    assert states(alice.take()) == [("both", False, False)]
    got = bob.take()
    assert states(got) == [("both", False, False)]
    assert kinds(got) == [
        ("subscribed", "alice@localhost", "bob@localhost"),
        (None, "alice@localhost/phone", "bob@localhost"),
    ]
    assert (await items_of(alice))["bob@localhost"].subscription == "both"
    assert (await items_of(bob))["alice@localhost"].subscription == "both"


async def test_subscription_stanzas_carry_bare_jids(server: Server) -> None:
    alice = await online(server, "alice@localhost/phone")
    bob = await online(server, "bob@localhost/laptop")
    await alice.send(presence("subscribe", "bob@localhost/laptop"))
    assert kinds(bob.take()) == [("subscribe", "alice@localhost", "bob@localhost")]
    alice.take()
    assert list(await items_of(alice)) == ["bob@localhost"]


async def test_presence_flows_both_ways_with_both(server: Server) -> None:
    alice = await online(server, "alice@localhost/phone")
    bob = await online(server, "bob@localhost/laptop")
    await befriend(alice, bob)
    await alice.send("<presence><show>dnd</show></presence>")
    got = bob.take()
    assert kinds(got) == [(None, "alice@localhost/phone", "bob@localhost")]
    assert got[0].findtext(f"{{{ns.CLIENT}}}show") == "dnd"
    await bob.send("<presence><show>chat</show></presence>")
    assert kinds(alice.take()) == [
        (None, "alice@localhost/phone", "alice@localhost/phone"),
        (None, "bob@localhost/laptop", "alice@localhost"),
    ]


async def test_a_raised_priority_reaches_the_contacts_when_a_module_fails_on_it(server: Server) -> None:
    """presence-raised comes before the broadcast (the offline module delivers what waited then);
    a module failing on it, as offline storage out of reach does, must not keep the new presence
    from the contacts, nor from the session's own echo (§4.4.2)."""
    async def failing(session: Session) -> None:
        raise RuntimeError("offline storage could not be read")

    server.hooks.add("presence-raised", failing)
    alice = await online(server, "alice@localhost/phone")
    bob = await online(server, "bob@localhost/laptop", inner="<priority>-1</priority>")
    await befriend(alice, bob)
    await bob.send("<presence><priority>1</priority></presence>")
    assert kinds(alice.take()) == [(None, "bob@localhost/laptop", "alice@localhost")]
    assert kinds(bob.take()) == [(None, "bob@localhost/laptop", "bob@localhost/laptop")]
    assert session_of(bob).priority == 1


async def test_one_way_subscription_shows_presence_one_way(server: Server) -> None:
    alice = await online(server, "alice@localhost/phone")
    bob = await online(server, "bob@localhost/laptop")
    await alice.send(presence("subscribe", "bob@localhost"))
    await bob.send(presence("subscribed", "alice@localhost"))
    alice.take()
    bob.take()
    await bob.send("<presence><show>away</show></presence>")
    assert kinds(alice.take()) == [(None, "bob@localhost/laptop", "alice@localhost")]
    assert kinds(bob.take()) == [(None, "bob@localhost/laptop", "bob@localhost/laptop")]
    await alice.send("<presence><show>away</show></presence>")
    assert kinds(bob.take()) == []
    assert kinds(alice.take()) == [(None, "alice@localhost/phone", "alice@localhost/phone")]


async def test_repeated_request_is_kept_once_and_not_delivered_again(server: Server) -> None:
    alice = await online(server, "alice@localhost/phone")
    bob = await online(server, "bob@localhost/laptop")
    await alice.send(presence("subscribe", "bob@localhost", "<status>first</status>"))
    await alice.send(presence("subscribe", "bob@localhost", "<status>second</status>"))
    assert len(presences(bob.take())) == 1
    assert states(alice.take()) == [("none", True, False)]
    tablet = await login(server, "bob@localhost/tablet")
    await tablet.send(presence())
    (kept,) = [el for el in tablet.take() if el.get("type") == "subscribe"]
    assert kept.findtext(f"{{{ns.CLIENT}}}status") == "second"


async def test_waiting_request_is_delivered_at_each_login_until_answered(tmp_path: Path) -> None:
    async with running(tmp_path) as server:
        alice = await online(server, "alice@localhost/phone")
        await add_user(server, "bob")
        await alice.send(presence("subscribe", "bob@localhost", "<status>please</status>"))
        assert states(alice.take()) == [("none", True, False)]
    # The request outlives a restart of the server.
    async with running(tmp_path) as server:
        for resource in ("laptop", "tablet"):
            bob = await connect(server, f"bob@localhost/{resource}")
            await bob.send(presence())
            requests = [el for el in bob.take() if el.get("type") == "subscribe"]
            assert [(el.get("from"), el.findtext(f"{{{ns.CLIENT}}}status")) for el in requests] == [
                ("alice@localhost", "please")
            ]
            await bob.close()
        bob = await connect(server, "bob@localhost/laptop")
        await bob.send(presence("subscribed", "alice@localhost"))
        await bob.close()
        bob = await connect(server, "bob@localhost/laptop")
        await bob.send(presence())
        assert [el.get("type") for el in bob.take()] == [None]
        alice = await online(server, "alice@localhost/phone")
        assert (await items_of(alice))["bob@localhost"].subscription == "to"


async def test_requests_waiting_for_an_answer_are_as_many_as_a_roster_holds(tmp_path: Path) -> None:
    """§3.1.3 keeps a request until the user answers; a sender beyond the roster's size gets a
    resource-constraint error, nothing is kept for it, and it may ask again once there is room."""
    async with running(tmp_path, modules={"roster": {"max_items": 1}}) as server:
        bob = await online(server, "bob@localhost/laptop")
        carol = await online(server, "carol@localhost/pc")
        dave = await online(server, "dave@localhost/pc")
        await carol.send(presence("subscribe", "bob@localhost"))
        await dave.send(presence("subscribe", "bob@localhost"))
        (error,) = [el for el in presences(dave.take()) if el.get("type") == "error"]
        assert (error.get("from"), condition(error)) == ("bob@localhost", "resource-constraint")
        assert "bob@localhost" in (error_text(error) or "")
        await carol.send(presence("subscribe", "bob@localhost", "<status>again</status>"))
        assert presences(carol.take()) == []
        assert kinds(bob.take()) == [("subscribe", "carol@localhost", "bob@localhost")]
        assert list(await server.storage.maps.items("localhost", "bob", PENDING)) == ["carol@localhost"]
        await bob.send(presence("unsubscribed", "carol@localhost"))
        await dave.send(presence("subscribe", "bob@localhost"))
        assert kinds(bob.take()) == [("subscribe", "dave@localhost", "bob@localhost")]


async def test_a_waiting_request_of_a_blocked_sender_is_kept_unseen(server: Server) -> None:
    """XEP-0191 §3.3: nothing from a blocked contact is delivered, a request kept from before the
    block neither; it stays kept (the contact still waits), and shows again once unblocked."""
    from .test_blocking import block, unblock

    alice = await online(server, "alice@localhost/phone")
    mallory = await online(server, "mallory@localhost/pc")
    await mallory.send(presence("subscribe", "alice@localhost"))
    assert kinds(alice.take()) == [("subscribe", "mallory@localhost", "alice@localhost")]
    await alice.send(block("mallory@localhost"))
    alice.take()
    await alice.close()
    laptop = await login(server, "alice@localhost/laptop")
    await laptop.send(presence())
    assert kinds(laptop.take()) == [(None, "alice@localhost/laptop", "alice@localhost/laptop")]
    assert list(await server.storage.maps.items("localhost", "alice", PENDING)) == ["mallory@localhost"]
    await laptop.send(unblock("mallory@localhost"))
    await laptop.close()
    tablet = await login(server, "alice@localhost/tablet")
    await tablet.send(presence())
    assert ("subscribe", "mallory@localhost", "alice@localhost") in kinds(tablet.take())


async def test_pre_approval_approves_the_later_request(server: Server) -> None:
    alice = await online(server, "alice@localhost/phone")
    bob = await online(server, "bob@localhost/laptop")
    # Bob pre-approves Alice (§3.4): only his roster changes, nothing is sent to her.
    await bob.send(presence("subscribed", "alice@localhost"))
    assert states(bob.take()) == [("none", False, True)]
    assert alice.take() == []
    await alice.send(presence("subscribe", "bob@localhost"))
    got = alice.take()
    assert states(got) == [("none", True, False), ("to", False, False)]
    assert kinds(got) == [
        ("subscribed", "bob@localhost", "alice@localhost"),
        (None, "bob@localhost/laptop", "alice@localhost"),
    ]
    got = bob.take()
    assert states(got) == [("from", False, False)]
    assert presences(got) == []  # approved already: no request to answer
    assert await server.storage.maps.items("localhost", "bob", PENDING) == {}


async def test_pre_approval_can_be_cancelled(server: Server) -> None:
    alice = await online(server, "alice@localhost/phone")
    bob = await online(server, "bob@localhost/laptop")
    await bob.send(presence("subscribed", "alice@localhost"))
    await bob.send(presence("unsubscribed", "alice@localhost"))
    assert states(bob.take()) == [("none", False, True), ("none", False, False)]
    assert alice.take() == []  # her server had nothing to change
    await alice.send(presence("subscribe", "bob@localhost"))
    assert kinds(bob.take()) == [("subscribe", "alice@localhost", "bob@localhost")]


async def test_approvals_and_refusals_that_change_nothing_stay_home(tmp_path: Path) -> None:
    """Appendix A.2: subscribed or unsubscribed that changes no subscription state is not routed
    (a pre-approval, made or cancelled, neither); subscribe always is."""
    async with federated(tmp_path) as (server, sent):
        alice = await online(server, "alice@localhost/phone")
        await server.storage.roster.set_item("localhost", "alice", StoredItem("romeo@montague.example", None, "from"))
        sent.clear()
        await alice.send(presence("subscribed", "romeo@montague.example"))
        await alice.send(presence("unsubscribed", "juliet@capulet.example"))
        await alice.send(presence("subscribed", "juliet@capulet.example"))
        await alice.send(presence("unsubscribed", "juliet@capulet.example"))
        assert states(alice.take()) == [("none", False, True), ("none", False, False)]
        await alice.send(presence("subscribe", "juliet@capulet.example"))
        assert kinds(sent) == [("subscribe", "alice@localhost", "juliet@capulet.example")]


async def test_denied_request(server: Server) -> None:
    alice = await online(server, "alice@localhost/phone")
    bob = await online(server, "bob@localhost/laptop")
    await alice.send(presence("subscribe", "bob@localhost"))
    alice.take()
    bob.take()
    await bob.send(presence("unsubscribed", "alice@localhost"))
    assert bob.take() == []  # no item was made for her, so nothing to push
    got = alice.take()
    assert states(got) == [("none", False, False)]
    assert kinds(got) == [("unsubscribed", "bob@localhost", "alice@localhost")]
    assert await server.storage.maps.items("localhost", "bob", PENDING) == {}


async def test_request_withdrawn_before_the_answer(server: Server) -> None:
    alice = await online(server, "alice@localhost/phone")
    bob = await online(server, "bob@localhost/laptop")
    await alice.send(presence("subscribe", "bob@localhost"))
    bob.take()
    await alice.send(presence("unsubscribe", "bob@localhost"))
    assert states(alice.take()) == [("none", True, False), ("none", False, False)]
    assert kinds(bob.take()) == [("unsubscribe", "alice@localhost", "bob@localhost")]
    assert await server.storage.maps.items("localhost", "bob", PENDING) == {}


async def test_unsubscribe_from_both(server: Server) -> None:
    alice = await online(server, "alice@localhost/phone")
    bob = await online(server, "bob@localhost/laptop")
    await befriend(alice, bob)
    await alice.send(presence("unsubscribe", "bob@localhost"))
    got = alice.take()
    assert states(got) == [("from", False, False)]
    # Bob's server takes his presence back from her.
    assert kinds(got) == [("unavailable", "bob@localhost/laptop", "alice@localhost")]
    got = bob.take()
    assert states(got) == [("to", False, False)]
    assert kinds(got) == [("unsubscribe", "alice@localhost", "bob@localhost")]
    await bob.send(presence())
    assert kinds(alice.take()) == []
    bob.take()
    await alice.send(presence())
    assert kinds(bob.take()) == [(None, "alice@localhost/phone", "bob@localhost")]


async def test_cancelled_subscription_from_both(server: Server) -> None:
    alice = await online(server, "alice@localhost/phone")
    bob = await online(server, "bob@localhost/laptop")
    await befriend(alice, bob)
    await bob.send(presence("unsubscribed", "alice@localhost"))
    assert states(bob.take()) == [("to", False, False)]
    got = alice.take()
    assert states(got) == [("from", False, False)]
    assert kinds(got) == [
        ("unsubscribed", "bob@localhost", "alice@localhost"),
        ("unavailable", "bob@localhost/laptop", "alice@localhost"),
    ]
    await bob.send(presence())
    assert kinds(alice.take()) == []


async def test_stanzas_that_change_nothing_are_not_delivered(server: Server) -> None:
    alice = await online(server, "alice@localhost/phone")
    bob = await online(server, "bob@localhost/laptop")
    for kind in ("subscribed", "unsubscribe"):
        await alice.send(presence(kind, "bob@localhost"))
    # "subscribed" without a request is a pre-approval, kept by her server alone.
    assert states(alice.take()) == [("none", False, True)]
    assert bob.take() == []
    await bob.send(presence("unsubscribed", "alice@localhost"))
    assert bob.take() == [] and alice.take() == []


async def test_request_to_a_missing_account_is_answered_unsubscribed(server: Server) -> None:
    alice = await online(server, "alice@localhost/phone")
    await alice.send(presence("subscribe", "nobody@localhost"))
    got = alice.take()
    assert states(got) == [("none", True, False), ("none", False, False)]
    assert kinds(got) == [("unsubscribed", "nobody@localhost", "alice@localhost")]


async def test_subscribing_to_oneself_is_dropped(server: Server) -> None:
    alice = await online(server, "alice@localhost/phone")
    await login(server, "alice@localhost/tablet")
    for to in ("alice@localhost", "alice@localhost/tablet"):
        await alice.send(presence("subscribe", to))
    assert alice.take() == []
    assert await items_of(alice) == {}


# §4.3 probes ---------------------------------------------------------------------------------


async def test_initial_presence_probes_contacts(server: Server) -> None:
    phone = await online(server, "alice@localhost/phone")
    bob = await online(server, "bob@localhost/laptop", "<status>at work</status>")
    await befriend(phone, bob)
    tablet = await login(server, "alice@localhost/tablet")
    await tablet.send(presence())
    got = tablet.take()
    answer = next(el for el in got if el.get("from") == "bob@localhost/laptop")
    assert answer.get("to") == "alice@localhost/tablet"  # only the new resource is answered
    assert answer.findtext(f"{{{ns.CLIENT}}}status") == "at work"
    assert kinds(bob.take()) == [(None, "alice@localhost/tablet", "bob@localhost")]
    assert kinds(phone.take()) == [(None, "alice@localhost/tablet", "alice@localhost/phone")]


async def test_probe_of_an_offline_contact_gets_unavailable(server: Server) -> None:
    alice = await online(server, "alice@localhost/phone")
    bob = await online(server, "bob@localhost/laptop")
    await befriend(alice, bob)
    await bob.close()
    await alice.close()
    again = await login(server, "alice@localhost/phone")
    await again.send(presence())
    assert ("unavailable", "bob@localhost", "alice@localhost/phone") in kinds(again.take())


async def test_probe_without_subscription_cleans_the_roster(server: Server) -> None:
    await add_user(server, "bob")
    await add_user(server, "alice")
    # Alice's roster claims a subscription Bob's roster knows nothing of.
    await server.storage.roster.set_item("localhost", "alice", StoredItem("bob@localhost", subscription="to"))
    alice = await connect(server, "alice@localhost/phone")
    await roster(alice)
    bob = await online(server, "bob@localhost/laptop")
    await alice.send(presence())
    got = alice.take()
    assert ("unsubscribed", "bob@localhost", "alice@localhost") in kinds(got)
    assert not any(el.get("from") == "bob@localhost/laptop" for el in got)
    assert states(got) == [("none", False, False)]
    assert bob.take() == []


async def test_no_presence_without_subscription(server: Server) -> None:
    alice = await online(server, "alice@localhost/phone")
    mallory = await online(server, "mallory@localhost/pc")
    await alice.send(presence(inner="<status>secret</status>"))
    assert mallory.take() == []
    # A probe from a client is answered only for subscribers.
    await mallory.send(presence("probe", "alice@localhost"))
    assert mallory.take() == []


# §4.5 unavailable ----------------------------------------------------------------------------


async def test_unavailable_is_broadcast(server: Server) -> None:
    alice = await online(server, "alice@localhost/phone")
    tablet = await online(server, "alice@localhost/tablet")
    bob = await online(server, "bob@localhost/laptop")
    await befriend(alice, bob)
    tablet.take()
    await alice.send(presence("unavailable", inner="<status>gone</status>"))
    got = bob.take()
    assert kinds(got) == [("unavailable", "alice@localhost/phone", "bob@localhost")]
    assert got[0].findtext(f"{{{ns.CLIENT}}}status") == "gone"
    assert kinds(tablet.take()) == [("unavailable", "alice@localhost/phone", "alice@localhost/tablet")]
    assert kinds(alice.take()) == [("unavailable", "alice@localhost/phone", "alice@localhost/phone")]
    session = session_of(alice)
    assert not session.available and session.presence is None
    # Gone already: leaving sends nothing more.
    await alice.close()
    assert bob.take() == [] and tablet.take() == []


async def test_unavailable_when_a_session_ends_without_it(server: Server) -> None:
    alice = await online(server, "alice@localhost/phone")
    tablet = await online(server, "alice@localhost/tablet")
    bob = await online(server, "bob@localhost/laptop")
    await befriend(alice, bob)
    tablet.take()
    await alice.close()
    assert kinds(bob.take()) == [("unavailable", "alice@localhost/phone", "bob@localhost")]
    assert kinds(tablet.take()) == [("unavailable", "alice@localhost/phone", "alice@localhost/tablet")]


async def test_session_without_presence_ends_quietly(server: Server) -> None:
    alice = await online(server, "alice@localhost/phone")
    bob = await online(server, "bob@localhost/laptop")
    await befriend(alice, bob)
    lurker = await login(server, "alice@localhost/lurker")
    await lurker.close()
    assert bob.take() == [] and alice.take() == []


# §4.6 directed presence ----------------------------------------------------------------------


async def test_directed_presence_is_followed_by_unavailable(server: Server) -> None:
    alice = await online(server, "alice@localhost/phone")
    carol = await online(server, "carol@localhost/desk")
    await alice.send(presence(to="carol@localhost", inner="<status>just for you</status>"))
    got = carol.take()
    assert kinds(got) == [(None, "alice@localhost/phone", "carol@localhost")]
    assert alice.take() == []  # directed presence is not broadcast
    await alice.close()
    assert kinds(carol.take()) == [("unavailable", "alice@localhost/phone", "carol@localhost")]


async def test_a_replaced_session_says_unavailable_to_its_directed_recipients(server: Server) -> None:
    """RFC 6120 §7.7.2.2: the old session is gone when a new login takes its resource."""
    alice = await online(server, "alice@localhost/phone")
    carol = await online(server, "carol@localhost/desk")
    await alice.send(presence(to="carol@localhost"))
    carol.take()
    await login(server, "alice@localhost/phone")
    assert alice.stream.closed
    assert kinds(carol.take()) == [("unavailable", "alice@localhost/phone", "carol@localhost")]


async def test_a_service_gets_unavailable_after_directed_presence(server: Server) -> None:
    """§4.6.3 for a room at a service of this server: leaving by disconnecting must reach it."""
    got: list[tuple[str | None, str]] = []

    class Rooms(Module[NoOptions]):
        name = "rooms"

        def setup(self) -> None:
            self.service("rooms.localhost")
            self.route("presence/service/rooms.localhost", self.presence)

        async def presence(self, stanza: Stanza, _origin: Session | None) -> Handled:
            got.append((stanza.type, str(stanza.from_)))
            return HANDLED

    Rooms(server, NoOptions()).setup()
    alice = await online(server, "alice@localhost/phone")
    await alice.send(presence(to="room@rooms.localhost/al"))
    await alice.send(presence("subscribe", "rooms.localhost"))
    await alice.close()
    assert got == [(None, "alice@localhost/phone"), ("subscribe", "alice@localhost"),
                   ("unavailable", "alice@localhost/phone")]


async def test_directed_unavailable_ends_the_tracking(server: Server) -> None:
    alice = await online(server, "alice@localhost/phone")
    carol = await online(server, "carol@localhost/desk")
    await alice.send(presence(to="carol@localhost/desk"))
    await alice.send(presence("unavailable", "carol@localhost/desk"))
    assert kinds(carol.take()) == [
        (None, "alice@localhost/phone", "carol@localhost/desk"),
        ("unavailable", "alice@localhost/phone", "carol@localhost/desk"),
    ]
    await alice.close()
    assert carol.take() == []


async def test_directed_recipient_who_is_also_a_contact_gets_one_unavailable(server: Server) -> None:
    alice = await online(server, "alice@localhost/phone")
    bob = await online(server, "bob@localhost/laptop")
    await befriend(alice, bob)
    await alice.send(presence(to="bob@localhost/laptop"))
    bob.take()
    await alice.close()
    assert kinds(bob.take()) == [("unavailable", "alice@localhost/phone", "bob@localhost")]


async def test_presence_to_a_connected_resource_without_presence(server: Server) -> None:
    alice = await online(server, "alice@localhost/phone")
    carol = await login(server, "carol@localhost/desk")
    await alice.send(presence(to="carol@localhost"))
    assert carol.take() == []  # no available resource: dropped (§8.5.2.2.2)
    await alice.send(presence(to="carol@localhost/desk"))
    assert kinds(carol.take()) == [(None, "alice@localhost/phone", "carol@localhost/desk")]
    assert alice.take() == []


async def test_presence_to_a_missing_account_is_dropped(server: Server) -> None:
    alice = await online(server, "alice@localhost/phone")
    for kind in (None, "unavailable", "subscribed", "unsubscribe", "probe"):
        await alice.send(presence(kind, "nobody@localhost"))
    got = alice.take()
    assert states(got) == [("none", False, True)]  # only the pre-approval she made herself
    assert presences(got) == []


async def test_presence_to_another_domain_bounces(server: Server) -> None:
    alice = await online(server, "alice@localhost/phone")
    await alice.send("<presence to='bob@elsewhere.example' id='r1'/>")
    (error,) = alice.take()
    assert error.tag == PRESENCE and error.get("id") == "r1"
    assert condition(error) == "remote-server-not-found", xml(error)

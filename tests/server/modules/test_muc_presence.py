"""XEP-0045 §7.1 to §7.7, §7.14: entering (and each refusal), history on entering, nick and status
changes, leaving and disconnecting, several resources under one nick, occupant ids (XEP-0421),
self-ping (XEP-0410) and the rate limits on presence and entering."""

from __future__ import annotations

from pathlib import Path

from schnack.server.app import Server
from schnack.xmpp import ns
from schnack.xmpp.xml import serialize

from ...harness import running
from .groups import (
    MESSAGE,
    MODULES,
    OCCUPANT_ID,
    PRESENCE,
    ROOM,
    SERVICE,
    STANZA_ID,
    create,
    field,
    iq_reply,
    item,
    join,
    join_xml,
    of_kind,
    online,
    private_group,
    server,
    set_affiliation,
    statuses,
)  # fmt: skip
from .messaging import condition

__all__ = ["server"]

BODY = f"{{{ns.CLIENT}}}body"


async def test_entering_shows_occupants_then_self_then_subject(server: Server) -> None:
    alice, bob = await private_group(server, "alice", "bob")
    await set_affiliation(alice, "carol@localhost", "member")
    # §9.3: the others learn of a new member who is not in the room yet (OMEMO clients encrypt to them).
    (note,) = bob.take()
    assert note.tag == MESSAGE and note.get("from") == ROOM
    assert (item(note).get("jid"), item(note).get("affiliation")) == ("carol@localhost", "member")
    carol = await online(server, "carol@localhost/tablet")
    await carol.send(join_xml(ROOM, "carol").replace("<x ", "<show>away</show><x ", 1))
    out = carol.take()
    kinds = [(el.tag, el.get("from")) for el in out]
    assert kinds == [(PRESENCE, f"{ROOM}/alice"), (PRESENCE, f"{ROOM}/bob"), (PRESENCE, f"{ROOM}/carol"),
                     (MESSAGE, ROOM)]
    own = out[2]
    assert statuses(own) == {100, 110, 170}
    assert own.findtext(f"{{{ns.CLIENT}}}show") == "away"
    # Non-anonymous: everyone's real address; every presence with an occupant id.
    assert [item(p).get("jid") for p in out[:3]] == ["alice@localhost/phone", "bob@localhost/phone",
                                                    "carol@localhost/tablet"]
    assert all(p.find(OCCUPANT_ID) is not None for p in out[:3])
    assert out[3].find(f"{{{ns.CLIENT}}}subject") is not None
    for other in (alice, bob):
        (seen,) = other.take()
        assert seen.get("from") == f"{ROOM}/carol" and statuses(seen) == set()
        assert seen.findtext(f"{{{ns.CLIENT}}}show") == "away"


async def test_refusals(server: Server) -> None:
    alice = await online(server, "alice@localhost/phone")
    await create(alice, nick="Alice")
    await set_affiliation(alice, "eve@localhost", "outcast")
    await set_affiliation(alice, "bob@localhost", "member")
    eve = await online(server, "eve@localhost/phone")
    await eve.send(join_xml(ROOM, "Eve"))
    assert condition(eve.take()[0]) == "forbidden"
    carol = await online(server, "carol@localhost/phone")
    await carol.send(join_xml(ROOM, "Carol"))
    assert condition(carol.take()[0]) == "registration-required"
    bob = await online(server, "bob@localhost/phone")
    await bob.send(join_xml(ROOM, "Alice"))
    assert condition(bob.take()[0]) == "conflict"
    await bob.send(f"<presence to='{ROOM}'/>")
    assert condition(bob.take()[0]) == "jid-malformed"
    await bob.send(f"<presence to='{ROOM}/Bob'><x xmlns='http://jabber.org/protocol/muc'><history maxstanzas='x'/></x></presence>")
    assert condition(bob.take()[0]) == "bad-request"
    # The room is still serving: Bob gets in with a proper request.
    out = await join(bob, ROOM, "Bob")
    assert 110 in statuses(of_kind(out, PRESENCE)[-1])


async def test_nicks_of_blanks_or_with_blanks_around_are_refused(server: Server) -> None:
    """A nick that is blank, or another's with a space added at an end, shows as that one in every
    client: the room refuses it (jid-malformed, §7.2.1), on entering and on changing nick (§7.6)."""
    alice, bob, mallory = await private_group(server, "alice", "bob", "mallory")
    for nick in ("bob ", " bob", "   ", "\u00a0bob"):
        await mallory.send(f"<presence to='{ROOM}/{nick}'/>")
        (refused,) = mallory.take()
        assert refused.get("type") == "error" and condition(refused) == "jid-malformed", serialize(refused)
    newcomer = await online(server, "carol@localhost/phone")
    for nick in ("bob ", "   "):
        await newcomer.send(join_xml(ROOM, nick))
        (refused,) = newcomer.take()
        assert condition(refused) == "jid-malformed", serialize(refused)
    # Nobody heard of a change: mallory is still in the room under its nick.
    assert alice.take() == [] and bob.take() == []
    await mallory.send(f"<message to='{ROOM}' type='groupchat'><body>still here</body></message>")
    assert [el.get("from") for el in bob.take()] == [f"{ROOM}/mallory"]


async def test_a_nick_that_differs_from_another_only_in_case_or_width_is_taken(server: Server) -> None:
    """RFC 8266 §2.4 compares nicks after case mapping and NFKC: "Bob" or "bob" in full-width letters
    is bob's nick to everyone reading it, so another user gets conflict for it (§7.2.9, §7.6)."""
    alice, bob, mallory = await private_group(server, "alice", "bob", "mallory")
    for nick in ("Bob", "BOB", "\uff42\uff4f\uff42"):
        await mallory.send(f"<presence to='{ROOM}/{nick}'/>")
        (refused,) = mallory.take()
        assert refused.get("type") == "error" and condition(refused) == "conflict", serialize(refused)
    newcomer = await online(server, "dave@localhost/phone")
    assert (await set_affiliation(alice, "dave@localhost", "member")).get("type") == "result"
    await newcomer.send(join_xml(ROOM, "Bob"))
    (refused,) = newcomer.take()
    assert condition(refused) == "conflict", serialize(refused)
    assert [el for el in bob.take() if el.tag == PRESENCE] == []
    # The same user may still enter a second time under a nick of another case.
    phone = await online(server, "bob@localhost/laptop")
    out = await join(phone, ROOM, "Bob")
    assert 110 in statuses(of_kind(out, PRESENCE)[-1])


async def test_password_and_full_room(server: Server) -> None:
    alice = await online(server, "alice@localhost/phone")
    await create(alice, nick="Alice", form=(
        field("muc#roomconfig_membersonly", "0") + field("muc#roomconfig_passwordprotectedroom", "1")
        + field("muc#roomconfig_roomsecret", "s3cret") + field("muc#roomconfig_maxusers", "2")))
    bob = await online(server, "bob@localhost/phone")
    await bob.send(join_xml(ROOM, "Bob"))
    assert condition(bob.take()[0]) == "not-authorized"
    await bob.send(join_xml(ROOM, "Bob", password="wrong"))
    assert condition(bob.take()[0]) == "not-authorized"
    await bob.send(join_xml(ROOM, "Bob", password="s3cret"))
    assert 110 in statuses(of_kind(bob.take(), PRESENCE)[-1])
    carol = await online(server, "carol@localhost/phone")
    await carol.send(join_xml(ROOM, "Carol", password="s3cret"))
    assert condition(carol.take()[0]) == "service-unavailable"


async def test_reserved_nicks_are_their_owners(server: Server) -> None:
    alice = await online(server, "alice@localhost/phone")
    await create(alice, nick="Alice", form=field("muc#roomconfig_membersonly", "0"))
    muc = server.modules["muc"]
    room = next(iter(muc.rooms.live.values()))  # type: ignore[attr-defined]
    from schnack.server.storage.base import RoomAffiliation
    from schnack.xmpp.jid import JID
    await muc.rooms.set_affiliation(room, JID.parse("bob@localhost"),  # type: ignore[attr-defined]
                                    RoomAffiliation("bob@localhost", "member", "Bobby"))
    carol = await online(server, "carol@localhost/phone")
    for nick in ("Bobby", "bobby", "BOBBY"):  # compared as RFC 8266 §2.4 does
        await carol.send(join_xml(ROOM, nick))
        assert condition(carol.take()[0]) == "conflict"
    bob = await online(server, "bob@localhost/phone")
    assert 110 in statuses(of_kind(await join(bob, ROOM, "Bobby"), PRESENCE)[-1])


async def test_nick_change(server: Server) -> None:
    alice, bob = await private_group(server, "alice", "bob")
    await bob.send(f"<presence to='{ROOM}/alice'/>")
    assert condition(bob.take()[0]) == "conflict"
    await bob.send(f"<presence to='{ROOM}/Robert'/>")
    gone, back = bob.take()
    assert (gone.get("from"), gone.get("type"), statuses(gone)) == (f"{ROOM}/bob", "unavailable", {303, 110})
    assert item(gone).get("nick") == "Robert"
    assert (back.get("from"), back.get("type"), statuses(back)) == (f"{ROOM}/Robert", None, {110})
    gone, back = alice.take()
    assert statuses(gone) == {303} and back.get("from") == f"{ROOM}/Robert"
    assert gone.find(OCCUPANT_ID).get("id") == back.find(OCCUPANT_ID).get("id")  # type: ignore[union-attr]
    await bob.send(f"<message to='{ROOM}' type='groupchat'><body>it's me</body></message>")
    assert alice.take()[0].get("from") == f"{ROOM}/Robert"


async def test_status_change_and_leaving(server: Server) -> None:
    alice, bob = await private_group(server, "alice", "bob")
    await bob.send(f"<presence to='{ROOM}/bob'><show>dnd</show><status>busy</status></presence>")
    (seen,) = alice.take()
    assert seen.findtext(f"{{{ns.CLIENT}}}show") == "dnd" and seen.findtext(f"{{{ns.CLIENT}}}status") == "busy"
    assert 110 in statuses(bob.take()[0])
    await bob.send(f"<presence to='{ROOM}/bob' type='unavailable'/>")
    (own,) = bob.take()
    assert own.get("type") == "unavailable" and statuses(own) == {110}
    assert item(own).get("jid") == "bob@localhost/phone"  # §7.14: the resource that left, as itself
    (seen,) = alice.take()
    assert seen.get("type") == "unavailable" and item(seen).get("role") == "none"
    assert item(seen).get("jid") == "bob@localhost/phone"
    await alice.send(f"<message to='{ROOM}' type='groupchat'><body>gone?</body></message>")
    assert bob.take() == []


async def test_a_session_that_ends_leaves_the_room(server: Server) -> None:
    alice, bob = await private_group(server, "alice", "bob")
    await bob.close()
    (seen,) = alice.take()
    assert seen.get("from") == f"{ROOM}/bob" and seen.get("type") == "unavailable"
    muc = server.modules["muc"]
    room = next(iter(muc.rooms.live.values()))  # type: ignore[attr-defined]
    assert list(room.occupants) == ["alice"]


async def test_persistent_room_leaves_memory_when_empty_and_comes_back(server: Server) -> None:
    (alice,) = await private_group(server, "alice")
    await alice.send(f"<presence to='{ROOM}/alice' type='unavailable'/>")
    muc = server.modules["muc"]
    assert not muc.rooms.live  # type: ignore[attr-defined]
    out = await join(alice, ROOM, "alice")
    assert statuses(of_kind(out, PRESENCE)[-1]) == {100, 110, 170}


async def test_two_resources_under_one_nick(server: Server) -> None:
    alice, bob = await private_group(server, "alice", "bob")
    laptop = await online(server, "bob@localhost/laptop")
    bob.take()  # the laptop's own presence
    out = await join(laptop, ROOM, "bob")
    assert [p.get("from") for p in of_kind(out, PRESENCE)] == [f"{ROOM}/alice", f"{ROOM}/bob"]
    # The occupant was there already; the others are shown the laptop now, as newcomers are.
    (seen,) = alice.take()
    assert seen.get("type") is None and item(seen).get("jid") == "bob@localhost/laptop"
    (own,) = bob.take()
    assert 110 in statuses(own) and item(own).get("jid") == "bob@localhost/laptop"
    await alice.send(f"<message to='{ROOM}' type='groupchat'><body>both of you</body></message>")
    assert bob.take()[0].findtext(BODY) == "both of you"
    assert laptop.take()[0].findtext(BODY) == "both of you"
    assert alice.take()[0].findtext(BODY) == "both of you"
    # One resource leaving keeps the occupant in.
    await laptop.send(f"<presence to='{ROOM}/bob' type='unavailable'/>")
    assert statuses(laptop.take()[0]) == {110}
    (seen,) = alice.take()
    assert seen.get("type") is None and item(seen).get("jid") == "bob@localhost/phone"
    bob.take()
    await alice.send(f"<message to='{ROOM}' type='groupchat'><body>still there?</body></message>")
    assert bob.take()[0].findtext(BODY) == "still there?" and laptop.take() == []


async def test_the_others_see_a_resource_still_in_when_one_of_two_leaves(server: Server) -> None:
    alice, bob = await private_group(server, "alice", "bob")
    laptop = await online(server, "bob@localhost/laptop")
    bob.take()
    await join(laptop, ROOM, "bob")
    alice.take()
    await laptop.send(f"<presence to='{ROOM}/bob'><show>away</show></presence>")
    (seen,) = alice.take()
    assert item(seen).get("jid") == "bob@localhost/laptop"
    bob.take()
    laptop.take()
    await laptop.send(f"<presence to='{ROOM}/bob' type='unavailable'/>")
    (own,) = laptop.take()
    assert own.get("type") == "unavailable" and statuses(own) == {110}
    # §7.14: the leaving resource is told of its own departure, not of the phone that stays.
    assert item(own).get("jid") == "bob@localhost/laptop" and item(own).get("role") == "none"
    (seen,) = alice.take()
    assert seen.get("type") is None and item(seen).get("jid") == "bob@localhost/phone"
    assert seen.findtext(f"{{{ns.CLIENT}}}show") is None  # the phone's presence, not the laptop's
    (still,) = bob.take()
    assert statuses(still) == {110} and item(still).get("jid") == "bob@localhost/phone"


async def test_entering_again_from_a_joined_resource_gives_the_room_again(server: Server) -> None:
    alice, bob = await private_group(server, "alice", "bob")
    await alice.send(f"<message to='{ROOM}' type='groupchat'><body>while you were away</body></message>")
    bob.take()
    alice.take()
    # A client that lost track of the room (its stream not resumed) sends its join again.
    out = await join(bob, ROOM, "bob", history="<history maxstanzas='5'/>")
    presences = of_kind(out, PRESENCE)
    assert [p.get("from") for p in presences] == [f"{ROOM}/alice", f"{ROOM}/bob"]
    assert statuses(presences[-1]) == {100, 110, 170}
    messages = of_kind(out, MESSAGE)
    assert [m.findtext(BODY) for m in messages[:-1]] == ["while you were away"]
    assert messages[-1].find(f"{{{ns.CLIENT}}}subject") is not None
    (seen,) = alice.take()
    assert seen.get("from") == f"{ROOM}/bob" and seen.get("type") is None and statuses(seen) == set()
    muc = server.modules["muc"]
    room = next(iter(muc.rooms.live.values()))  # type: ignore[attr-defined]
    assert list(room.occupants) == ["alice", "bob"] and len(room.by_session) == 2


async def test_history_on_entering(server: Server) -> None:
    alice, _bob = await private_group(server, "alice", "bob")
    for n in range(30):
        await alice.send(f"<message to='{ROOM}' type='groupchat' id='m{n}'><body>message {n}</body></message>")
    await set_affiliation(alice, "carol@localhost", "member")
    carol = await online(server, "carol@localhost/phone")

    async def history(request: str) -> list[str]:
        out = await join(carol, ROOM, "carol", history=request)
        await carol.send(f"<presence to='{ROOM}/carol' type='unavailable'/>")
        carol.take()
        messages = [m for m in out if m.tag == MESSAGE and m.findtext(BODY)]
        for m in messages:
            delay = m.find(f"{{{ns.DELAY}}}delay")
            assert delay is not None and delay.get("from") == ROOM
            assert m.find(STANZA_ID) is not None and m.get("to") == "carol@localhost/phone"
        return [m.findtext(BODY) or "" for m in messages]

    assert await history("") == [f"message {n}" for n in range(10, 30)]  # the default, 20
    assert await history("<history maxstanzas='3'/>") == ["message 27", "message 28", "message 29"]
    assert await history("<history maxstanzas='0'/>") == []
    assert await history("<history seconds='0'/>") == []
    assert await history("<history since='1970-01-01T00:00:00Z' maxstanzas='2'/>") == ["message 28", "message 29"]
    one = len(serialize((await join(carol, ROOM, "carol", history="<history maxstanzas='1'/>"))[-2]))
    await carol.send(f"<presence to='{ROOM}/carol' type='unavailable'/>")
    carol.take()
    assert await history(f"<history maxchars='{one * 2 + 5}'/>") == ["message 28", "message 29"]


async def test_self_ping(server: Server) -> None:
    _alice, bob = await private_group(server, "alice", "bob")
    ping = "<ping xmlns='urn:xmpp:ping'/>"
    await bob.send(f"<iq type='get' id='p' to='{ROOM}/bob'>{ping}</iq>")
    assert iq_reply(bob.take(), "p").get("type") == "result"
    await bob.send(f"<presence to='{ROOM}/bob' type='unavailable'/>")
    bob.take()
    await bob.send(f"<iq type='get' id='p' to='{ROOM}/bob'>{ping}</iq>")
    assert condition(iq_reply(bob.take(), "p")) == "not-acceptable"
    await bob.send(f"<iq type='get' id='p' to='nowhere@{SERVICE}/bob'>{ping}</iq>")
    assert condition(iq_reply(bob.take(), "p")) == "item-not-found"
    await bob.send(f"<iq type='get' id='p' to='{SERVICE}'>{ping}</iq>")
    assert iq_reply(bob.take(), "p").get("type") == "result"


async def test_occupant_ids_are_stable_and_not_forgeable(server: Server) -> None:
    alice, bob = await private_group(server, "alice", "bob")
    forged = "<occupant-id xmlns='urn:xmpp:occupant-id:0' id='alice-id'/>"
    await bob.send(f"<message to='{ROOM}' type='groupchat'><body>hi</body>{forged}</message>")
    (message,) = alice.take()
    ids = [el.get("id") for el in message.findall(OCCUPANT_ID)]
    assert len(ids) == 1 and ids != ["alice-id"]
    await bob.send(f"<presence to='{ROOM}/bob' type='unavailable'/>")
    alice.take()
    await join(bob, ROOM, "bobby")
    (seen,) = alice.take()
    assert seen.find(OCCUPANT_ID).get("id") == ids[0]  # type: ignore[union-attr]


async def test_presence_floods_and_join_storms_are_limited(tmp_path: Path) -> None:
    modules = {**MODULES, "muc": {"presence_burst": 3, "presence_per_second": 0.01, "joins_burst": 3,
                                   "joins_per_second": 0.1}}
    async with running(tmp_path, modules=modules) as srv:
        alice = await online(srv, "alice@localhost/phone")
        await create(alice, nick="alice", form=field("muc#roomconfig_membersonly", "0"))
        for _ in range(2):
            await alice.send(f"<presence to='{ROOM}/alice'><status>again</status></presence>")
        alice.take()
        await alice.send(f"<presence to='{ROOM}/alice'><status>once more</status></presence>")
        assert condition(alice.take()[0]) == "policy-violation"
        # Leaving is never limited.
        bob = await online(srv, "bob@localhost/phone")
        await join(bob, ROOM, "bob")
        await bob.send(f"<presence to='{ROOM}/bob' type='unavailable'/>")
        await join(bob, ROOM, "bob")
        await bob.send(f"<presence to='{ROOM}/bob' type='unavailable'/>")
        bob.take()
        await bob.send(join_xml(ROOM, "bob"))
        assert condition(bob.take()[0]) == "policy-violation"
        # Other rooms are not affected.
        out = await join(bob, f"other@{SERVICE}", "bob")
        assert 201 in statuses(of_kind(out, PRESENCE)[-1])


async def test_the_service_caps_every_room(tmp_path: Path) -> None:
    async with running(tmp_path, modules={**MODULES, "muc": {"max_occupants": 3}}) as srv:
        alice = await online(srv, "alice@localhost/phone")
        await create(alice, nick="alice", form=field("muc#roomconfig_membersonly", "0"))
        await alice.send(f"<iq type='set' id='big' to='{ROOM}'><query xmlns='http://jabber.org/protocol/muc#owner'>"
                         f"<x xmlns='jabber:x:data' type='submit'>{field('muc#roomconfig_maxusers', '4')}</x></query></iq>")
        assert condition(iq_reply(alice.take(), "big")) == "not-acceptable"
        for user in ("bob", "carol"):
            client = await online(srv, f"{user}@localhost/phone")
            assert 110 in statuses(of_kind(await join(client, ROOM, user), PRESENCE)[-1])
        dave = await online(srv, "dave@localhost/phone")
        await dave.send(join_xml(ROOM, "dave"))
        assert condition(dave.take()[0]) == "service-unavailable"
        # Owners and admins still get in (XEP-0045 §7.2.10).
        await alice.send(f"<presence to='{ROOM}/alice' type='unavailable'/>")
        await join(dave, ROOM, "dave")
        assert 110 in statuses(of_kind(await join(alice, ROOM, "alice"), PRESENCE)[-1])


async def test_iqs_between_occupants_go_through_the_room(server: Server) -> None:
    alice, bob, carol = await private_group(server, "alice", "bob", "carol")
    await alice.send("<iq type='set' id='v'><vCard xmlns='vcard-temp'><FN>Alice</FN></vCard></iq>")
    alice.take()
    # vCards: to the account, answered by the server for it.
    await bob.send(f"<iq type='get' id='card' to='{ROOM}/alice'><vCard xmlns='vcard-temp'/></iq>")
    (card,) = bob.take()
    assert (card.get("type"), card.get("id"), card.get("from")) == ("result", "card", f"{ROOM}/alice")
    assert card.findtext("{vcard-temp}vCard/{vcard-temp}FN") == "Alice"
    assert alice.take() == []
    # Anything else: to the occupant's resource, from the asker's occupant JID.
    await bob.send(f"<iq type='get' id='ver' to='{ROOM}/alice'><query xmlns='jabber:iq:version'/></iq>")
    (request,) = alice.take()
    assert (request.get("from"), request.get("to")) == (f"{ROOM}/bob", "alice@localhost/phone")
    forwarded_id = request.get("id")
    assert forwarded_id != "ver"
    # Someone else cannot answer in Alice's place.
    await carol.send(f"<iq type='result' id='{forwarded_id}' to='{ROOM}/bob'/>")
    assert bob.take() == []
    await alice.send(f"<iq type='result' id='{forwarded_id}' to='{ROOM}/bob'><query xmlns='jabber:iq:version'>"
                     "<name>phone</name></query></iq>")
    (answer,) = bob.take()
    assert (answer.get("type"), answer.get("id"), answer.get("from"), answer.get("to")) == (
        "result", "ver", f"{ROOM}/alice", "bob@localhost/phone")
    assert "alice@localhost" not in serialize(answer)
    await bob.send(f"<iq type='get' id='x' to='{ROOM}/nobody'><query xmlns='jabber:iq:version'/></iq>")
    assert condition(bob.take()[0]) == "item-not-found"
    stranger = await online(server, "dave@localhost/phone")
    await stranger.send(f"<iq type='get' id='x' to='{ROOM}/alice'><query xmlns='jabber:iq:version'/></iq>")
    assert condition(stranger.take()[0]) == "not-acceptable"
    await bob.send(f"<iq type='get' id='d' to='{ROOM}/alice'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
    assert alice.take()[0].get("from") == f"{ROOM}/bob"


async def test_refused_outsiders_do_not_use_up_a_groups_entries(tmp_path: Path) -> None:
    modules = {**MODULES, "muc": {"joins_burst": 2, "joins_per_second": 0.1}}
    async with running(tmp_path, modules=modules) as srv:
        alice = await online(srv, "alice@localhost/phone")
        await create(alice, nick="alice")
        await set_affiliation(alice, "bob@localhost", "member")
        for n in range(5):
            stranger = await online(srv, f"stranger{n}@localhost/phone")
            await stranger.send(join_xml(ROOM, f"s{n}"))
            assert condition(stranger.take()[0]) == "registration-required"
        bob = await online(srv, "bob@localhost/phone")
        assert 110 in statuses(of_kind(await join(bob, ROOM, "bob"), PRESENCE)[-1])

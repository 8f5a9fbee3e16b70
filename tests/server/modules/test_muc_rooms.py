"""XEP-0045 rooms: creation and locking (§10.1), configuration (§10.2), destruction (§10.9),
discovery (§6), room vCards, the service in the domain's items, and persistence in storage."""

from __future__ import annotations

from pathlib import Path

import pytest

from schnack.server.app import Server
from schnack.server.config import ConfigError
from schnack.server.modules.muc import Muc
from schnack.server.storage.base import RoomAffiliation
from schnack.xmpp import ns
from schnack.xmpp.payloads.dataforms import DataForm
from schnack.xmpp.payloads.disco import DiscoInfo, DiscoItems

from ...harness import make_config, running
from ..storage.conftest import postgres_schema
from .groups import (
    MESSAGE,
    MODULES,
    OWNER,
    PRESENCE,
    ROOM,
    SERVICE,
    USER,
    create,
    field,
    iq_reply,
    item,
    join,
    join_xml,
    of_kind,
    online,
    server,
    set_affiliation,
    statuses,
)  # fmt: skip
from .messaging import condition

__all__ = ["server"]

CONFIG = "http://jabber.org/protocol/muc#roomconfig"


def muc(server: Server) -> Muc:
    module = server.modules["muc"]
    assert isinstance(module, Muc)
    return module


async def test_join_creates_a_locked_room_owned_by_its_creator(server: Server) -> None:
    alice = await online(server, "alice@localhost/phone")
    out = await join(alice, ROOM, "Alice")
    (own,) = of_kind(out, PRESENCE)
    assert own.get("from") == f"{ROOM}/Alice"
    assert statuses(own) == {100, 110, 170, 201}
    assert (item(own).get("affiliation"), item(own).get("role"), item(own).get("jid")) == (
        "owner", "moderator", "alice@localhost/phone")
    # §10.1.1: locked, so nobody else gets in until the owner configured it.
    bob = await online(server, "bob@localhost/phone")
    await bob.send(join_xml(ROOM, "Bob"))
    (refusal,) = bob.take()
    assert condition(refusal) == "item-not-found" and refusal.get("from") == f"{ROOM}/Bob"
    # Not stored before it is configured.
    assert await server.storage.muc.get_room(SERVICE, "family") is None


async def test_the_default_configuration_is_the_private_group(server: Server) -> None:
    alice = await online(server, "alice@localhost/phone")
    await join(alice, ROOM, "Alice")
    await alice.send(f"<iq type='get' id='form' to='{ROOM}'><query xmlns='{OWNER}'/></iq>")
    answer = iq_reply(alice.take(), "form")
    x = answer.find(f"{{{OWNER}}}query/{{jabber:x:data}}x")
    assert x is not None
    form = DataForm.from_xml(x)
    assert form.form_type == CONFIG
    values = {var: form.value(var) for var in (
        "muc#roomconfig_membersonly", "muc#roomconfig_whois", "muc#roomconfig_persistentroom",
        "muc#roomconfig_publicroom", "muc#roomconfig_allowinvites")}
    assert values == {"muc#roomconfig_membersonly": "1", "muc#roomconfig_whois": "anyone",
                      "muc#roomconfig_persistentroom": "1", "muc#roomconfig_publicroom": "0",
                      "muc#roomconfig_allowinvites": "1"}
    field_ = form.field("muc#roomconfig_roomowners")
    assert field_ is not None and field_.values == ("alice@localhost",)
    # An empty submitted form accepts the defaults (§10.1.2) and unlocks the room.
    await alice.send(f"<iq type='set' id='ok' to='{ROOM}'><query xmlns='{OWNER}'>"
                     "<x xmlns='jabber:x:data' type='submit'/></query></iq>")
    assert iq_reply(alice.take(), "ok").get("type") == "result"
    stored = await server.storage.muc.get_room(SERVICE, "family")
    assert stored is not None
    stored_affiliations = await server.storage.muc.affiliations(SERVICE, "family")
    assert {jid: record.affiliation for jid, record in stored_affiliations.items()} == {"alice@localhost": "owner"}


async def test_a_public_channel_by_configuration(server: Server) -> None:
    alice = await online(server, "alice@localhost/phone")
    await create(alice, f"lobby@{SERVICE}", "Alice", form=(
        field("FORM_TYPE", CONFIG) + field("muc#roomconfig_publicroom", "1") + field("muc#roomconfig_membersonly", "0")
        + field("muc#roomconfig_whois", "moderators") + field("muc#roomconfig_roomname", "The Lobby")))
    bob = await online(server, "bob@localhost/laptop")
    out = await join(bob, f"lobby@{SERVICE}", "Bob")
    own = of_kind(out, PRESENCE)[-1]
    assert statuses(own) == {110, 170}
    assert item(own).get("role") == "participant" and item(own).get("affiliation") == "none"
    # Semi-anonymous: Bob sees Alice without her address.
    alice_seen = of_kind(out, PRESENCE)[0]
    assert alice_seen.get("from") == f"lobby@{SERVICE}/Alice" and item(alice_seen).get("jid") is None
    # Alice, a moderator, sees Bob's.
    (bob_seen,) = of_kind(alice.take(), PRESENCE)
    assert item(bob_seen).get("jid") == "bob@localhost/laptop"
    # The public channel is listed; the private one is not.
    await create(alice, ROOM, "Alice")
    await bob.send(f"<iq type='get' id='items' to='{SERVICE}'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>")
    items = DiscoItems.from_xml(iq_reply(bob.take(), "items")[0])
    assert [(i.jid, i.name) for i in items.items] == [(f"lobby@{SERVICE}", "The Lobby")]


async def test_bad_configuration_values_change_nothing(server: Server) -> None:
    alice = await online(server, "alice@localhost/phone")
    await create(alice)
    for var, value, wanted in (
        ("muc#roomconfig_whois", "everybody", "not-acceptable"),
        ("muc#roomconfig_membersonly", "maybe", "not-acceptable"),
        ("muc#roomconfig_maxusers", "1000000", "not-acceptable"),
        # A digit int() does not read.
        ("muc#roomconfig_maxusers", "\u00b2", "not-acceptable"),
        ("muc#roomconfig_roomowners", "not a jid@@", "jid-malformed"),
    ):
        await alice.send(f"<iq type='set' id='bad' to='{ROOM}'><query xmlns='{OWNER}'>"
                         f"<x xmlns='jabber:x:data' type='submit'>{field(var, value)}</x></query></iq>")
        assert condition(iq_reply(alice.take(), "bad")) == wanted
    assert muc(server).rooms.live[next(iter(muc(server).rooms.live))].config.whois == "anyone"


async def test_only_owners_configure(server: Server) -> None:
    alice = await online(server, "alice@localhost/phone")
    await create(alice)
    await set_affiliation(alice, "bob@localhost", "admin")
    bob = await online(server, "bob@localhost/phone")
    for kind, body in (("get", ""), ("set", "<x xmlns='jabber:x:data' type='submit'/>")):
        await bob.send(f"<iq type='{kind}' id='c' to='{ROOM}'><query xmlns='{OWNER}'>{body}</query></iq>")
        assert condition(iq_reply(bob.take(), "c")) == "forbidden"
    await bob.send(f"<iq type='get' id='c' to='nothing@{SERVICE}'><query xmlns='{OWNER}'/></iq>")
    assert condition(iq_reply(bob.take(), "c")) == "item-not-found"


async def test_config_change_is_announced_and_members_only_removes_strangers(server: Server) -> None:
    alice = await online(server, "alice@localhost/phone")
    await create(alice, form=field("muc#roomconfig_membersonly", "0"))
    bob = await online(server, "bob@localhost/phone")
    await join(bob, ROOM, "Bob")
    alice.take()
    await alice.send(f"<iq type='set' id='c' to='{ROOM}'><query xmlns='{OWNER}'><x xmlns='jabber:x:data' "
                     f"type='submit'>{field('muc#roomconfig_membersonly', '1')}</x></query></iq>")
    out = alice.take()
    assert iq_reply(out, "c").get("type") == "result"
    (gone,) = [p for p in of_kind(out, PRESENCE) if p.get("type") == "unavailable"]
    assert gone.get("from") == f"{ROOM}/Bob" and statuses(gone) == {322}
    (note,) = [m for m in out if m.tag.endswith("message")]
    assert statuses(note) == {104}
    (own,) = of_kind(bob.take(), PRESENCE)
    assert statuses(own) == {322, 110}


async def test_the_form_never_leaves_the_room_without_an_owner(server: Server) -> None:
    """§10.6: the owner and admin lists are checked together, before the form changes anything."""
    alice = await online(server, "alice@localhost/phone")
    await create(alice, nick="alice")
    name = field("muc#roomconfig_roomname", "Renamed")
    for lists, wanted in (
        (field("muc#roomconfig_roomadmins", "alice@localhost"), "conflict"),
        (field("muc#roomconfig_roomowners"), "conflict"),
        (field("muc#roomconfig_roomowners", "bob@localhost") + field("muc#roomconfig_roomadmins", "bob@localhost"),
         "bad-request"),
    ):
        await alice.send(f"<iq type='set' id='c' to='{ROOM}'><query xmlns='{OWNER}'><x xmlns='jabber:x:data' "
                         f"type='submit'>{name}{lists}</x></query></iq>")
        assert condition(iq_reply(alice.take(), "c")) == wanted
    room = muc(server).rooms.live[next(iter(muc(server).rooms.live))]
    assert room.config.name == ""
    affiliations = await server.storage.muc.affiliations(SERVICE, "family")
    assert {jid: record.affiliation for jid, record in affiliations.items()} == {"alice@localhost": "owner"}
    # Handing the room over: the new owner listed, the old one among the admins.
    await alice.send(f"<iq type='set' id='c' to='{ROOM}'><query xmlns='{OWNER}'><x xmlns='jabber:x:data' "
                     f"type='submit'>{field('muc#roomconfig_roomowners', 'bob@localhost')}"
                     f"{field('muc#roomconfig_roomadmins', 'alice@localhost')}</x></query></iq>")
    assert iq_reply(alice.take(), "c").get("type") == "result"
    affiliations = await server.storage.muc.affiliations(SERVICE, "family")
    assert {jid: record.affiliation for jid, record in affiliations.items()} == {
        "alice@localhost": "admin", "bob@localhost": "owner"}

async def test_the_last_owners_deleted_account_hands_the_room_to_its_admins(tmp_path: Path) -> None:
    """XEP-0077 §3.2 cancellation of the only owner's account: a room without an owner could be
    configured or destroyed by nobody, so its admins become its owners (§10.6), announced to the
    occupants as any change of affiliation is (§9.3: presence for those in the room, a message
    from the room about those who are not), and the deleted account leaves the member list."""
    async with running(tmp_path, modules={**MODULES, "enable": ["register"]}) as server:
        await _admins_take_over(server)


async def _admins_take_over(server: Server) -> None:
    alice = await online(server, "alice@localhost/phone")
    await create(alice, nick="alice")
    for jid, affiliation in (("bob@localhost", "member"), ("carol@localhost", "admin"), ("dave@localhost", "admin")):
        assert (await set_affiliation(alice, jid, affiliation)).get("type") == "result"
    bob = await online(server, "bob@localhost/phone")
    await join(bob, ROOM, "bob")
    carol = await online(server, "carol@localhost/phone")
    await join(carol, ROOM, "carol")
    bob.take()
    await alice.send(f"<iq type='set' id='bye'><query xmlns='{ns.REGISTER}'><remove/></query></iq>")
    assert await server.storage.accounts.get("localhost", "alice") is None
    seen = bob.take()
    (promoted,) = [p for p in of_kind(seen, PRESENCE) if p.get("from") == f"{ROOM}/carol"]
    assert item(promoted).get("affiliation") == "owner" and item(promoted).get("role") == "moderator"
    told = {i.get("jid"): i.get("affiliation") for m in of_kind(seen, MESSAGE)
            for i in m.iter(f"{{{USER}}}item")}
    assert told == {"dave@localhost": "owner"}
    (alice_left,) = [p for p in of_kind(seen, PRESENCE) if p.get("from") == f"{ROOM}/alice"]
    assert alice_left.get("type") == "unavailable"
    affiliations = await server.storage.muc.affiliations(SERVICE, "family")
    assert {jid: record.affiliation for jid, record in affiliations.items()} == {
        "bob@localhost": "member", "carol@localhost": "owner", "dave@localhost": "owner"}
    (own,) = [p for p in of_kind(carol.take(), PRESENCE) if p.get("from") == f"{ROOM}/carol"]
    assert item(own).get("affiliation") == "owner" and 110 in statuses(own)
    await carol.send(f"<iq type='get' id='c' to='{ROOM}'><query xmlns='{OWNER}'/></iq>")
    assert iq_reply(carol.take(), "c").get("type") == "result"


async def test_a_deleted_account_hears_nothing_of_the_groups_it_leaves(tmp_path: Path) -> None:
    """XEP-0077 §3.2: once an account is being deleted its own sessions are told nothing about it
    by the groups they were in, neither their own removal (status 321 with 110) nor who takes the
    group over; they get the IQ result and the end of their streams. The others see the deleted
    user leave because of an affiliation change (§9.4: unavailable, affiliation none, status 321),
    in a members-only group and in an open one alike, and the new owner's presence."""
    async with running(tmp_path, modules={**MODULES, "enable": ["register"]}) as server:
        alice = await online(server, "alice@localhost/phone")
        await create(alice, nick="alice")
        open_room = f"open@{SERVICE}"
        await create(alice, room=open_room, nick="alice", form=field("muc#roomconfig_membersonly", "0"))
        assert (await set_affiliation(alice, "bob@localhost", "member")).get("type") == "result"
        assert (await set_affiliation(alice, "carol@localhost", "admin")).get("type") == "result"
        carol = await online(server, "carol@localhost/phone")
        for room in (ROOM, open_room):
            await join(carol, room, "carol")
        alice.take()
        carol.take()
        await alice.send(f"<iq type='set' id='bye'><query xmlns='{ns.REGISTER}'><remove/></query></iq>")
        assert await server.storage.accounts.get("localhost", "alice") is None
        heard = alice.take()
        assert [el for el in heard if el.tag in (PRESENCE, MESSAGE)] == []
        assert iq_reply(heard, "bye").get("type") == "result"
        seen = carol.take()
        for room in (ROOM, open_room):
            (left,) = [p for p in of_kind(seen, PRESENCE) if p.get("from") == f"{room}/alice"]
            assert left.get("type") == "unavailable" and statuses(left) == {321}
            assert (item(left).get("affiliation"), item(left).get("role")) == ("none", "none")
        (promoted,) = [p for p in of_kind(seen, PRESENCE) if p.get("from") == f"{ROOM}/carol"]
        assert item(promoted).get("affiliation") == "owner" and 110 in statuses(promoted)


async def test_the_last_owners_deleted_account_hands_an_empty_room_to_a_member(server: Server) -> None:
    """Without admins the longest-standing member becomes the owner, in a stored room nobody is in
    too; a room with nobody else affiliated but an outcast keeps no owner, and the outcast stays
    banned."""
    alice = await online(server, "alice@localhost/phone")
    await create(alice, nick="alice")
    for jid in ("zoe@localhost", "bob@localhost"):
        assert (await set_affiliation(alice, jid, "member")).get("type") == "result"
    lonely = f"lonely@{SERVICE}"
    await create(alice, room=lonely, nick="alice")
    assert (await set_affiliation(alice, "eve@localhost", "outcast", room=lonely)).get("type") == "result"
    for room in (ROOM, lonely):
        await alice.send(f"<presence to='{room}/alice' type='unavailable'/>")
    alice.take()
    assert not muc(server).rooms.live
    assert await server.delete_account("localhost", "alice")
    affiliations = await server.storage.muc.affiliations(SERVICE, "family")
    assert {jid: record.affiliation for jid, record in affiliations.items()} == {
        "bob@localhost": "member", "zoe@localhost": "owner"}
    affiliations = await server.storage.muc.affiliations(SERVICE, "lonely")
    assert {jid: record.affiliation for jid, record in affiliations.items()} == {"eve@localhost": "outcast"}
    assert await server.storage.muc.get_room(SERVICE, "lonely") is not None
    assert not muc(server).rooms.live
    zoe = await online(server, "zoe@localhost/phone")
    own = of_kind(await join(zoe, ROOM, "zoe"), PRESENCE)[-1]
    assert item(own).get("affiliation") == "owner"
    await zoe.send(f"<iq type='get' id='c' to='{ROOM}'><query xmlns='{OWNER}'/></iq>")
    assert iq_reply(zoe.take(), "c").get("type") == "result"


async def test_members_stored_without_their_time_are_the_longest_standing(server: Server) -> None:
    """Affiliations stored before storage kept when they were granted count as older than any
    that has its time, and among themselves go by bare JID; a member promoted to admin and back
    keeps the time it joined."""
    alice = await online(server, "alice@localhost/phone")
    await create(alice, nick="alice")
    for jid in ("carl@localhost", "bob@localhost"):
        assert (await set_affiliation(alice, jid, "member")).get("type") == "result"
    await alice.send(f"<presence to='{ROOM}/alice' type='unavailable'/>")
    alice.take()
    assert not muc(server).rooms.live
    for jid in ("yann@localhost", "xavier@localhost"):
        await server.storage.muc.set_affiliation(SERVICE, "family", RoomAffiliation(jid, "member"))
    assert await server.delete_account("localhost", "alice")
    affiliations = await server.storage.muc.affiliations(SERVICE, "family")
    assert {jid: record.affiliation for jid, record in affiliations.items()} == {
        "bob@localhost": "member", "carl@localhost": "member", "xavier@localhost": "owner",
        "yann@localhost": "member"}
    xavier = await online(server, "xavier@localhost/phone")
    await join(xavier, ROOM, "xavier")
    assert (await set_affiliation(xavier, "yann@localhost", "none")).get("type") == "result"
    for affiliation in ("admin", "member"):
        assert (await set_affiliation(xavier, "carl@localhost", affiliation)).get("type") == "result"
    await xavier.send(f"<presence to='{ROOM}/xavier' type='unavailable'/>")
    xavier.take()
    assert await server.delete_account("localhost", "xavier")
    affiliations = await server.storage.muc.affiliations(SERVICE, "family")
    assert {jid: record.affiliation for jid, record in affiliations.items()} == {
        "bob@localhost": "member", "carl@localhost": "owner"}


async def test_cancelling_the_form_of_a_new_room_destroys_it(server: Server) -> None:
    alice = await online(server, "alice@localhost/phone")
    await join(alice, ROOM, "Alice")
    await alice.send(f"<iq type='set' id='c' to='{ROOM}'><query xmlns='{OWNER}'><x xmlns='jabber:x:data' "
                     "type='cancel'/></query></iq>")
    out = alice.take()
    assert iq_reply(out, "c").get("type") == "result"
    assert of_kind(out, PRESENCE)[0].get("type") == "unavailable"
    assert not muc(server).rooms.live


async def test_destroy_tells_everyone_and_forgets_the_room(server: Server) -> None:
    alice = await online(server, "alice@localhost/phone")
    await create(alice)
    await set_affiliation(alice, "bob@localhost", "member")
    bob = await online(server, "bob@localhost/phone")
    await join(bob, ROOM, "Bob")
    await bob.send(f"<message to='{ROOM}' type='groupchat'><body>hi</body></message>")
    await alice.send(f"<iq type='set' id='d' to='{ROOM}'><query xmlns='{OWNER}'><destroy jid='new@{SERVICE}'>"
                     "<reason>moving</reason></destroy></query></iq>")
    assert iq_reply(alice.take(), "d").get("type") == "result"
    (gone,) = [p for p in of_kind(bob.take(), PRESENCE) if p.get("type") == "unavailable"]
    destroy = gone.find(f"{{{USER}}}x/{{{USER}}}destroy")
    assert destroy is not None and destroy.get("jid") == f"new@{SERVICE}"
    assert destroy.findtext(f"{{{USER}}}reason") == "moving"
    assert await server.storage.muc.get_room(SERVICE, "family") is None
    assert await server.storage.archive.count(SERVICE, "family", "muc") == 0
    # The name is free again: entering creates a new room.
    out = await join(bob, ROOM, "Bob")
    assert 201 in statuses(of_kind(out, PRESENCE)[-1])


async def test_disco_of_service_room_and_domain(server: Server) -> None:
    alice = await online(server, "alice@localhost/phone")
    await alice.send("<iq type='get' id='h' to='localhost'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>")
    items = DiscoItems.from_xml(iq_reply(alice.take(), "h")[0])
    assert (SERVICE, "Groups") in [(i.jid, i.name) for i in items.items]
    await alice.send(f"<iq type='get' id='s' to='{SERVICE}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
    info = DiscoInfo.from_xml(iq_reply(alice.take(), "s")[0])
    assert [(i.category, i.type) for i in info.identities] == [("conference", "text")]
    assert {"http://jabber.org/protocol/muc", "http://jabber.org/protocol/muc#stable_id"} <= set(info.features)
    await alice.send(f"<iq type='get' id='r' to='{ROOM}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
    assert condition(iq_reply(alice.take(), "r")) == "item-not-found"
    await create(alice, form=field("muc#roomconfig_roomname", "Family"))
    await alice.send(f"<message to='{ROOM}' type='groupchat'><subject>Holidays</subject></message>")
    alice.take()
    await alice.send(f"<iq type='get' id='r' to='{ROOM}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
    info = DiscoInfo.from_xml(iq_reply(alice.take(), "r")[0])
    assert [(i.category, i.type, i.name) for i in info.identities] == [("conference", "text", "Family")]
    for feature in ("muc_membersonly", "muc_nonanonymous", "muc_persistent", "muc_hidden", "muc_unmoderated",
                    "muc_unsecured", "urn:xmpp:mam:2", "urn:xmpp:occupant-id:0", "urn:xmpp:message-moderate:1",
                    "http://jabber.org/protocol/muc#self-ping-optimization", "http://jabber.org/protocol/muc#stable_id"):
        assert feature in info.features, feature
    (roominfo,) = info.forms
    assert roominfo.form_type == "http://jabber.org/protocol/muc#roominfo"
    assert roominfo.value("muc#roominfo_subject") == "Holidays"
    assert roominfo.value("muc#roominfo_occupants") == "1"
    await alice.send(f"<iq type='get' id='i' to='{ROOM}'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>")
    assert DiscoItems.from_xml(iq_reply(alice.take(), "i")[0]).items == ()


async def test_room_vcard_set_by_owners_read_by_anyone(server: Server) -> None:
    alice = await online(server, "alice@localhost/phone")
    await create(alice)
    vcard = "<vCard xmlns='vcard-temp'><PHOTO><TYPE>image/png</TYPE><BINVAL>aGVsbG8=</BINVAL></PHOTO></vCard>"
    await alice.send(f"<iq type='set' id='v' to='{ROOM}'>{vcard}</iq>")
    assert iq_reply(alice.take(), "v").get("type") == "result"
    bob = await online(server, "bob@localhost/phone")
    await bob.send(f"<iq type='set' id='v' to='{ROOM}'>{vcard}</iq>")
    assert condition(iq_reply(bob.take(), "v")) == "forbidden"
    await bob.send(f"<iq type='get' id='g' to='{ROOM}'><vCard xmlns='vcard-temp'/></iq>")
    answer = iq_reply(bob.take(), "g")
    assert answer.findtext("{vcard-temp}vCard/{vcard-temp}PHOTO/{vcard-temp}BINVAL") == "aGVsbG8="
    await bob.send(f"<iq type='get' id='r' to='{ROOM}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
    (roominfo,) = DiscoInfo.from_xml(iq_reply(bob.take(), "r")[0]).forms
    # SHA-1 of b"hello".
    assert roominfo.value("muc#roominfo_avatarhash") == "aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d"
    await alice.send(f"<iq type='set' id='v' to='{ROOM}'><vCard xmlns='vcard-temp'><PHOTO><BINVAL>!!</BINVAL>"
                     "</PHOTO></vCard></iq>")
    assert condition(iq_reply(alice.take(), "v")) == "bad-request"


async def test_temporary_rooms_go_with_their_last_occupant(server: Server) -> None:
    alice = await online(server, "alice@localhost/phone")
    await create(alice, form=field("muc#roomconfig_persistentroom", "0"))
    assert await server.storage.muc.get_room(SERVICE, "family") is None
    await alice.send(f"<presence to='{ROOM}/owner' type='unavailable'/>")
    (gone,) = alice.take()
    assert gone.get("type") == "unavailable" and 110 in statuses(gone)
    assert not muc(server).rooms.live


async def test_asking_about_a_room_nobody_is_in_does_not_keep_it_in_memory(server: Server) -> None:
    alice = await online(server, "alice@localhost/phone")
    await create(alice)
    await alice.send(f"<presence to='{ROOM}/owner' type='unavailable'/>")
    alice.take()
    assert not muc(server).rooms.live
    bob = await online(server, "bob@localhost/phone")
    for iq_id, payload in (("info", f"<query xmlns='{ns.DISCO_INFO}'/>"), ("items", f"<query xmlns='{ns.DISCO_ITEMS}'/>"),
                           ("ping", f"<ping xmlns='{ns.PING}'/>"), ("vcard", "<vCard xmlns='vcard-temp'/>"),
                           ("mam", "<query xmlns='urn:xmpp:mam:2'/>")):
        await bob.send(f"<iq type='{'set' if iq_id == 'mam' else 'get'}' id='{iq_id}' to='{ROOM}'>{payload}</iq>")
        assert iq_reply(bob.take(), iq_id).get("type") in ("result", "error"), iq_id
    await bob.send(f"<message to='{ROOM}' type='groupchat'><body>anyone here?</body></message>")
    assert condition(of_kind(bob.take(), MESSAGE)[0]) == "not-acceptable"
    assert not muc(server).rooms.live


async def _persistence(tmp_path: Path, url: str) -> None:
    async with running(tmp_path, modules=MODULES, storage={"url": url}) as first:
        alice = await online(first, "alice@localhost/phone")
        await create(alice, form=field("muc#roomconfig_roomname", "Family"))
        await set_affiliation(alice, "bob@localhost", "member")
        await set_affiliation(alice, "eve@localhost", "outcast")
        await alice.send(f"<message to='{ROOM}' type='groupchat'><subject>Holidays</subject></message>")
        await alice.send(f"<message to='{ROOM}' type='groupchat' id='m1'><body>before the restart</body></message>")
    async with running(tmp_path, modules=MODULES, storage={"url": url}) as second:
        assert not muc(second).rooms.live
        bob = await online(second, "bob@localhost/phone")
        out = await join(bob, ROOM, "Bob", history="")
        own = of_kind(out, PRESENCE)[-1]
        assert 201 not in statuses(own) and item(own).get("affiliation") == "member"
        history = [m for m in out if m.tag.endswith("message") and m.findtext("{jabber:client}body")]
        assert [m.findtext("{jabber:client}body") for m in history] == ["before the restart"]
        subject = out[-1]
        assert subject.findtext("{jabber:client}subject") == "Holidays"
        eve = await online(second, "eve@localhost/phone")
        await eve.send(join_xml(ROOM, "Eve"))
        assert condition(eve.take()[0]) == "forbidden"
        carol = await online(second, "carol@localhost/phone")
        await carol.send(join_xml(ROOM, "Carol"))
        assert condition(carol.take()[0]) == "registration-required"


async def test_rooms_survive_a_restart_on_sqlite(tmp_path: Path) -> None:
    await _persistence(tmp_path, f"sqlite:///{tmp_path / 'groups.db'}")


async def test_rooms_survive_a_restart_on_postgres(tmp_path: Path) -> None:
    async with postgres_schema() as (url, _, _):
        await _persistence(tmp_path, url)


async def test_service_subdomain_is_configurable(tmp_path: Path) -> None:
    async with running(tmp_path, modules={**MODULES, "muc": {"subdomain": "chat"}}) as srv:
        alice = await online(srv, "alice@localhost/phone")
        out = await join(alice, "room@chat.localhost", "Alice")
        assert 201 in statuses(of_kind(out, PRESENCE)[-1])
        await alice.send(f"<presence to='room@{SERVICE}/Alice'/>")
        assert condition(alice.take()[0]) == "remote-server-not-found"


@pytest.mark.parametrize("subdomain", ["bad name", "a@b", "x/y", ""])
async def test_a_bad_subdomain_is_a_configuration_error(tmp_path: Path, subdomain: str) -> None:
    with pytest.raises(ConfigError) as raised:
        Server(make_config(tmp_path, modules={"muc": {"subdomain": subdomain}}))
    assert raised.value.key == "modules.muc.subdomain"


async def test_one_user_owns_a_bounded_number_of_rooms(tmp_path: Path) -> None:
    async with running(tmp_path, modules={**MODULES, "muc": {"max_owned_rooms": 2}}) as srv:
        alice = await online(srv, "alice@localhost/phone")
        await create(alice, f"one@{SERVICE}", "alice")
        await join(alice, f"two@{SERVICE}", "alice")  # not configured yet: counts too
        await alice.send(join_xml(f"three@{SERVICE}", "alice"))
        assert condition(alice.take()[0]) == "policy-violation"
        await alice.send(f"<iq type='set' id='d' to='one@{SERVICE}'><query xmlns='{OWNER}'><destroy/></query></iq>")
        alice.take()
        out = await join(alice, f"three@{SERVICE}", "alice")
        assert 201 in statuses(of_kind(out, PRESENCE)[-1])

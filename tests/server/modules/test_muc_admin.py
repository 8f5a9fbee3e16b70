"""XEP-0045 §8, §9, §10.3 to §10.7 and §7.8: kicks, bans, voice, affiliation changes and their
limits, affiliation and role lists, mediated invitations, and the OMEMO key check on new members."""

from __future__ import annotations

from schnack.server.app import Server
from schnack.server.modules.pep import Pep
from schnack.server.storage.base import RosterItem
from schnack.xmpp import ns
from schnack.xmpp.payloads.muc import KEY_WARNINGS, AdminQuery, KeyWarnings
from schnack.xmpp.xml import Element, serialize

from ...harness import Client, add_user
from .groups import (
    ADMIN,
    MESSAGE,
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
    private_group,
    server,
    set_affiliation,
    statuses,
)  # fmt: skip
from .messaging import condition, error_text, login

__all__ = ["server"]

BODY = f"{{{ns.CLIENT}}}body"
DEVICE_LIST = "<list xmlns='eu.siacs.conversations.axolotl'><device id='1234'/></list>"


async def set_role(client: Client, nick: str, role: str, iq_id: str = "role", reason: str = "") -> None:
    why = f"<reason>{reason}</reason>" if reason else ""
    await client.send(f"<iq type='set' id='{iq_id}' to='{ROOM}'><query xmlns='{ADMIN}'>"
                      f"<item nick='{nick}' role='{role}'>{why}</item></query></iq>")


async def test_a_kicked_member_is_told_and_gets_nothing_more(server: Server) -> None:
    alice, bob, carol = await private_group(server, "alice", "bob", "carol")
    await set_role(alice, "bob", "none", reason="calm down")
    out = alice.take()
    assert iq_reply(out, "role").get("type") == "result"
    (seen,) = of_kind(out, PRESENCE)
    assert seen.get("type") == "unavailable" and statuses(seen) == {307}
    assert item(seen).findtext(f"{{{USER}}}reason") == "calm down"
    assert item(seen).find(f"{{{USER}}}actor").get("nick") == "alice"  # type: ignore[union-attr]
    (own,) = bob.take()
    assert statuses(own) == {307, 110}
    assert statuses(carol.take()[0]) == {307}
    await carol.send(f"<message to='{ROOM}' type='groupchat'><body>after the kick</body></message>")
    assert bob.take() == []
    await bob.send(f"<message to='{ROOM}' type='groupchat'><body>hello?</body></message>")
    assert condition(bob.take()[0]) == "not-acceptable"
    # Still a member: may come back.
    out = await join(bob, ROOM, "bob")
    assert 110 in statuses(of_kind(out, PRESENCE)[-1])


async def test_a_banned_user_is_removed_and_stays_out(server: Server) -> None:
    alice, bob = await private_group(server, "alice", "bob")
    answer = await set_affiliation(alice, "bob@localhost", "outcast")
    assert answer.get("type") == "result"
    (own,) = bob.take()
    assert statuses(own) == {301, 110} and item(own).get("affiliation") == "outcast"
    await bob.send(join_xml(ROOM, "bob"))
    assert condition(bob.take()[0]) == "forbidden"
    await bob.send(f"<iq type='set' id='q' to='{ROOM}'><query xmlns='urn:xmpp:mam:2'/></iq>")
    assert condition(iq_reply(bob.take(), "q")) == "forbidden"
    await bob.send(f"<message to='{ROOM}'><x xmlns='{USER}'><invite to='carol@localhost'/></x></message>")
    assert condition(bob.take()[0]) == "not-acceptable"


async def test_membership_revoked_in_a_members_only_room(server: Server) -> None:
    alice, bob = await private_group(server, "alice", "bob")
    await set_affiliation(alice, "bob@localhost", "none")
    (own,) = bob.take()
    assert statuses(own) == {321, 110}
    await bob.send(join_xml(ROOM, "bob"))
    assert condition(bob.take()[0]) == "registration-required"


async def test_a_member_gives_up_the_membership(server: Server) -> None:
    """Leaving a private group for good: the others' member lists (and encryption) drop the leaver."""
    alice, bob, carol = await private_group(server, "alice", "bob", "carol")
    for client in (alice, carol):
        client.take()
    assert condition(await set_affiliation(bob, "carol@localhost", "none")) == "forbidden"
    assert condition(await set_affiliation(bob, "bob@localhost", "admin")) == "forbidden"
    assert (await set_affiliation(bob, "bob@localhost", "none")).get("type") == "result"
    gone = [p for p in of_kind(alice.take(), PRESENCE) if p.get("from") == f"{ROOM}/bob"]
    assert [(p.get("type"), statuses(p)) for p in gone] == [("unavailable", {321})]
    affiliations = await server.storage.muc.affiliations(SERVICE, "family")
    assert {jid: record.affiliation for jid, record in affiliations.items()} == {
        "alice@localhost": "owner", "carol@localhost": "member"}
    await bob.send(join_xml(ROOM, "bob"))
    assert condition(bob.take()[0]) == "registration-required"


async def test_members_change_no_affiliations_and_admins_only_lower_ones(server: Server) -> None:
    alice, bob, _carol = await private_group(server, "alice", "bob", "carol")
    assert condition(await set_affiliation(bob, "dave@localhost", "member")) == "forbidden"
    assert condition(await set_affiliation(bob, "carol@localhost", "outcast")) == "forbidden"
    await set_role(bob, "carol", "none")
    assert condition(iq_reply(bob.take(), "role")) == "forbidden"
    assert (await set_affiliation(alice, "bob@localhost", "admin")).get("type") == "result"
    assert (await set_affiliation(bob, "dave@localhost", "member")).get("type") == "result"
    assert condition(await set_affiliation(bob, "alice@localhost", "outcast")) == "not-allowed"
    assert condition(await set_affiliation(bob, "carol@localhost", "owner")) == "not-allowed"
    await set_role(bob, "alice", "none")
    assert condition(iq_reply(bob.take(), "role")) == "not-allowed"
    # The last owner stays.
    assert condition(await set_affiliation(alice, "alice@localhost", "member")) == "conflict"
    affiliations = await server.storage.muc.affiliations(SERVICE, "family")
    assert {jid: record.affiliation for jid, record in affiliations.items()} == {
        "alice@localhost": "owner", "bob@localhost": "admin", "carol@localhost": "member",
        "dave@localhost": "member"}
    await alice.send(f"<iq type='set' id='bad' to='{ROOM}'><query xmlns='{ADMIN}'><item affiliation='king' "
                     "jid='carol@localhost'/></query></iq>")
    assert condition(iq_reply(alice.take(), "bad")) == "bad-request"
    await alice.send(f"<iq type='set' id='bad' to='{ROOM}'><query xmlns='{ADMIN}'/></iq>")
    assert condition(iq_reply(alice.take(), "bad")) == "bad-request"


async def test_an_admin_becomes_moderator_and_voice_is_managed(server: Server) -> None:
    alice, bob, carol = await private_group(server, "alice", "bob", "carol")
    await set_affiliation(alice, "bob@localhost", "admin")
    (promoted,) = carol.take()
    assert (item(promoted).get("affiliation"), item(promoted).get("role")) == ("admin", "moderator")
    await set_role(bob, "carol", "visitor")
    assert iq_reply(bob.take(), "role").get("type") == "result"
    assert item(carol.take()[0]).get("role") == "visitor"
    await carol.send(f"<message to='{ROOM}' type='groupchat'><body>muted?</body></message>")
    assert condition(carol.take()[0]) == "forbidden"
    await set_role(bob, "carol", "participant")
    bob.take()
    assert item(carol.take()[0]).get("role") == "participant"


async def test_lists(server: Server) -> None:
    alice, bob = await private_group(server, "alice", "bob")
    await set_affiliation(alice, "eve@localhost", "outcast")
    bob.take()

    async def ask(client: Client, query: str) -> Element:
        await client.send(f"<iq type='get' id='l' to='{ROOM}'><query xmlns='{ADMIN}'>{query}</query></iq>")
        return iq_reply(client.take(), "l")

    answer = await ask(bob, "<item affiliation='member'/>")
    assert [(str(i.jid), i.affiliation) for i in AdminQuery.from_xml(answer[0]).items] == [
        ("bob@localhost", "member")]
    answer = await ask(bob, "<item affiliation='owner'/>")
    assert [str(i.jid) for i in AdminQuery.from_xml(answer[0]).items] == ["alice@localhost"]
    assert condition(await ask(bob, "<item affiliation='outcast'/>")) == "forbidden"
    assert condition(await ask(bob, "<item role='moderator'/>")) == "forbidden"
    answer = await ask(alice, "<item affiliation='outcast'/>")
    assert [str(i.jid) for i in AdminQuery.from_xml(answer[0]).items] == ["eve@localhost"]
    answer = await ask(alice, "<item role='participant'/>")
    assert [(i.nick, str(i.jid)) for i in AdminQuery.from_xml(answer[0]).items] == [
        ("bob", "bob@localhost/phone")]
    stranger = await online(server, "carol@localhost/phone")
    assert condition(await ask(stranger, "<item affiliation='member'/>")) == "forbidden"


async def publish_devices(server: Server, user: str, access: str | None = None) -> None:
    client = await online(server, f"{user}@localhost/keys")
    options = ""
    if access is not None:
        options = (f"<publish-options><x xmlns='jabber:x:data' type='submit'>"
                   f"{field('FORM_TYPE', 'http://jabber.org/protocol/pubsub#publish-options')}"
                   f"{field('pubsub#access_model', access)}</x></publish-options>")
    await client.send(f"<iq type='set' id='pub'><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish "
                      f"node='eu.siacs.conversations.axolotl.devicelist'><item id='current'>{DEVICE_LIST}</item>"
                      f"</publish>{options}</pubsub></iq>")
    assert iq_reply(client.take(), "pub").get("type") == "result"
    await client.close()


async def test_adding_members_checks_their_omemo_keys(server: Server) -> None:
    pep = server.modules["pep"]
    assert isinstance(pep, Pep)
    await publish_devices(server, "alice", "open")
    await publish_devices(server, "bob", "open")
    await publish_devices(server, "carol")  # presence access: only contacts see it
    alice = await online(server, "alice@localhost/phone")
    await create(alice, nick="alice")
    answer = await set_affiliation(alice, "bob@localhost", "member")
    assert answer.get("type") == "result" and answer.find(KEY_WARNINGS) is None
    answer = await set_affiliation(alice, "dave@localhost", "member", iq_id="dave")
    warnings = answer.find(KEY_WARNINGS)
    assert warnings is not None, serialize(answer)
    assert [(str(j), p) for j, p in KeyWarnings.from_xml(warnings).members] == [("dave@localhost", "no-keys")]
    answer = await set_affiliation(alice, "carol@localhost", "member", iq_id="carol")
    warnings = answer.find(KEY_WARNINGS)
    assert warnings is not None
    problems = dict((str(j), p) for j, p in KeyWarnings.from_xml(warnings).members)
    assert problems == {"carol@localhost": "hidden-keys", "dave@localhost": "no-keys"}
    # Once every member is Carol's contact, her list is visible to them all.
    for other in ("alice", "bob", "dave"):
        await server.storage.roster.set_item("localhost", "carol", RosterItem(f"{other}@localhost", subscription="both"))
    await set_affiliation(alice, "carol@localhost", "none", iq_id="out")
    answer = await set_affiliation(alice, "carol@localhost", "member", iq_id="again")
    warnings = answer.find(KEY_WARNINGS)
    assert warnings is not None
    assert [(str(j), p) for j, p in KeyWarnings.from_xml(warnings).members] == [("dave@localhost", "no-keys")]


async def test_mediated_invitation_makes_a_member_and_reaches_an_offline_invitee(server: Server) -> None:
    await publish_devices(server, "alice", "open")
    _alice, bob = await private_group(server, "alice", "bob")
    await add_user(server, "carol")
    await bob.send(f"<message to='{ROOM}'><x xmlns='{USER}'><invite to='carol@localhost'>"
                   "<reason>join us</reason></invite></x></message>")
    out = bob.take()
    (warnings,) = [w for m in out if m.tag == MESSAGE and (w := m.find(KEY_WARNINGS)) is not None]
    problems = dict((str(j), p) for j, p in KeyWarnings.from_xml(warnings).members)
    assert problems == {"carol@localhost": "no-keys", "bob@localhost": "no-keys"}
    affiliations = await server.storage.muc.affiliations(SERVICE, "family")
    assert affiliations["carol@localhost"].affiliation == "member"
    carol = await login(server, "carol@localhost/phone")
    await carol.send("<presence/>")
    (invitation,) = [m for m in carol.take() if m.tag == MESSAGE]
    assert invitation.find(f"{{{ns.DELAY}}}delay") is not None  # kept by offline storage
    invite = invitation.find(f"{{{USER}}}x/{{{USER}}}invite")
    assert invite is not None and invite.get("from") == "bob@localhost"
    assert invite.findtext(f"{{{USER}}}reason") == "join us"
    direct = invitation.find("{jabber:x:conference}x")
    assert direct is not None and direct.get("jid") == ROOM
    out = await join(carol, ROOM, "carol")
    assert 110 in statuses(of_kind(out, PRESENCE)[-1])
    await carol.send(f"<message to='{ROOM}'><x xmlns='{USER}'><decline to='bob@localhost'><reason>no thanks</reason>"
                     "</decline></x></message>")
    (declined,) = [m for m in bob.take() if m.tag == MESSAGE]
    assert declined.find(f"{{{USER}}}x/{{{USER}}}decline").get("from") == "carol@localhost"  # type: ignore[union-attr]


async def test_invitations_need_permission_when_members_may_not_invite(server: Server) -> None:
    alice = await online(server, "alice@localhost/phone")
    await create(alice, nick="alice", form=field("muc#roomconfig_allowinvites", "0"))
    await set_affiliation(alice, "bob@localhost", "member")
    bob = await online(server, "bob@localhost/phone")
    await join(bob, ROOM, "bob")
    await bob.send(f"<message to='{ROOM}'><x xmlns='{USER}'><invite to='carol@localhost'/></x></message>")
    assert condition(bob.take()[0]) == "forbidden"
    await bob.send(f"<message to='{ROOM}'><x xmlns='{USER}'><invite/></x></message>")
    assert condition(bob.take()[0]) == "forbidden"
    await alice.send(f"<message to='{ROOM}'><x xmlns='{USER}'><invite/></x></message>")
    assert condition(alice.take()[-1]) == "bad-request"


async def test_an_invitation_to_no_such_account_comes_back_without_blocking_the_group(server: Server) -> None:
    alice, bob = await private_group(server, "alice", "bob")
    await alice.send(f"<message to='{ROOM}'><x xmlns='{USER}'><invite to='nobody@localhost'/></x></message>")
    alice.take()
    # The error for the invitation reached the group, which goes on serving its members.
    await bob.send(f"<message to='{ROOM}' type='groupchat'><body>still here</body></message>")
    assert alice.take()[0].findtext(BODY) == "still here"


async def test_an_invitation_to_a_group_or_a_server_is_refused(server: Server) -> None:
    """§7.8.2: one invites a person. Inviting the group itself (or another group, or a server)
    made that address a member, announced to everyone and counted in the key check, and the
    group passed an invitation to itself."""
    alice, bob = await private_group(server, "alice", "bob")
    for invitee in (ROOM, f"other@{SERVICE}", SERVICE, "localhost", f"{ROOM}/bob"):
        await alice.send(f"<message to='{ROOM}' id='inv'><x xmlns='{USER}'><invite to='{invitee}'/></x></message>")
        (refused,) = alice.take()
        assert refused.get("type") == "error" and condition(refused) == "bad-request", serialize(refused)
    assert bob.take() == []
    affiliations = await server.storage.muc.affiliations(SERVICE, "family")
    assert sorted(affiliations) == ["alice@localhost", "bob@localhost"]


async def test_a_banned_user_sends_no_declines_through_the_group(server: Server) -> None:
    """§7.8.2 passes an invitee's decline on to whoever it names; a banned user, or in a private
    group anyone not a member (invitees are), reached the members through the group that way."""
    alice, bob = await private_group(server, "alice", "bob")
    assert (await set_affiliation(alice, "eve@localhost", "outcast")).get("type") == "result"
    bob.take()
    for user in ("eve", "carol"):
        outsider = await online(server, f"{user}@localhost/phone")
        await outsider.send(f"<message to='{ROOM}' id='no'><x xmlns='{USER}'><decline to='bob@localhost'>"
                            "<reason>you will hear from me</reason></decline></x></message>")
        (refused,) = outsider.take()
        assert refused.get("type") == "error" and condition(refused) == "forbidden", serialize(refused)
    assert bob.take() == []


async def test_a_banned_user_cannot_lift_the_own_ban(server: Server) -> None:
    """§9.1, §9.2: only admins and owners take someone off the outcast list; giving up one's own
    affiliation is for those who have one above none."""
    alice, _bob = await private_group(server, "alice", "bob")
    assert (await set_affiliation(alice, "eve@localhost", "outcast")).get("type") == "result"
    eve = await online(server, "eve@localhost/phone")
    assert condition(await set_affiliation(eve, "eve@localhost", "none")) == "forbidden"
    affiliations = await server.storage.muc.affiliations(SERVICE, "family")
    assert affiliations["eve@localhost"].affiliation == "outcast"
    await eve.send(join_xml(ROOM, "eve"))
    assert condition(eve.take()[0]) == "forbidden"


async def test_an_admins_invitation_leaves_a_ban_in_place(server: Server) -> None:
    """§9.2: a ban is lifted by an affiliation change alone. An invitation to a private group makes
    its invitee a member (§7.8.2), so the owner's invitation of a banned user is refused whole, and
    an invitee named before the banned one in the same message is not made a member either."""
    alice, bob = await private_group(server, "alice", "bob")
    assert (await set_affiliation(alice, "eve@localhost", "outcast")).get("type") == "result"
    bob.take()
    await alice.send(f"<message to='{ROOM}' id='inv'><x xmlns='{USER}'><invite to='carol@localhost'/>"
                     "<invite to='eve@localhost'/></x></message>")
    (refused,) = alice.take()
    assert refused.get("type") == "error" and condition(refused) == "not-allowed", serialize(refused)
    assert "eve@localhost is banned" in (error_text(refused) or ""), serialize(refused)
    affiliations = await server.storage.muc.affiliations(SERVICE, "family")
    assert affiliations["eve@localhost"].affiliation == "outcast"
    assert "carol@localhost" not in affiliations
    assert bob.take() == []
    eve = await online(server, "eve@localhost/phone")
    assert [m for m in eve.take() if m.tag == MESSAGE] == []
    await eve.send(join_xml(ROOM, "eve"))
    assert condition(eve.take()[0]) == "forbidden"


async def test_a_request_naming_one_occupant_twice_changes_nothing(server: Server) -> None:
    """A kick and a role change of the same occupant in one request: refused whole, so that no
    presence brings the kicked occupant back."""
    alice, bob, carol = await private_group(server, "alice", "bob", "carol")
    for items in ("<item nick='bob' role='none'/><item nick='bob' role='visitor'/>",
                  "<item jid='bob@localhost' affiliation='outcast'/><item nick='bob' role='visitor'/>"):
        await alice.send(f"<iq type='set' id='twice' to='{ROOM}'><query xmlns='{ADMIN}'>{items}</query></iq>")
        out = alice.take()
        assert condition(iq_reply(out, "twice")) == "bad-request"
        assert of_kind(out, PRESENCE) == [] and bob.take() == [] and carol.take() == []
    affiliations = await server.storage.muc.affiliations(SERVICE, "family")
    assert affiliations["bob@localhost"].affiliation == "member"
    await bob.send(f"<message to='{ROOM}' type='groupchat'><body>still here</body></message>")
    assert carol.take()[0].findtext(BODY) == "still here"

"""XEP-0045 §7.4, §7.5, §7.13, §8.1: groupchat fan-out with stanza-ids and the room archive,
OMEMO payloads, the subject, private messages, voice requests, and the errors of each."""

from __future__ import annotations

from pathlib import Path

from schnack.server.app import Server
from schnack.xmpp import ns
from schnack.xmpp.parser import parse_frame
from schnack.xmpp.payloads.dataforms import DataForm

from ...harness import running
from .groups import (
    OCCUPANT_ID,
    OMEMO,
    PRESENCE,
    ROOM,
    SERVICE,
    STANZA_ID,
    USER,
    create,
    field,
    item,
    join,
    online,
    private_group,
    server,
    set_affiliation,
    statuses,
)  # fmt: skip
from .messaging import condition, error_text

__all__ = ["server"]

BODY = f"{{{ns.CLIENT}}}body"
SUBJECT = f"{{{ns.CLIENT}}}subject"


async def archived(server: Server) -> list[bytes]:
    page = await server.storage.archive.query(SERVICE, "family", "muc")
    return [i.payload for i in page.items]


async def test_a_message_reaches_every_occupant_once_with_the_archive_id(server: Server) -> None:
    alice, bob, carol = await private_group(server, "alice", "bob", "carol")
    await bob.send(f"<message to='{ROOM}' type='groupchat' id='m1'><body>hello group</body>"
                   f"<stanza-id xmlns='{ns.SID}' by='{ROOM}' id='forged'/></message>")
    got = [c.take() for c in (alice, bob, carol)]
    assert all(len(out) == 1 for out in got)
    messages = [out[0] for out in got]
    assert [m.get("to") for m in messages] == ["alice@localhost/phone", "bob@localhost/phone", "carol@localhost/phone"]
    for m in messages:
        assert (m.get("from"), m.get("type"), m.get("id"), m.findtext(BODY)) == (
            f"{ROOM}/bob", "groupchat", "m1", "hello group")
    ids = {m.find(STANZA_ID).get("id") for m in messages}  # type: ignore[union-attr]
    assert len(ids) == 1 and "forged" not in ids
    assert all(len(m.findall(STANZA_ID)) == 1 and m.find(STANZA_ID).get("by") == ROOM for m in messages)  # type: ignore[union-attr]
    page = await server.storage.archive.query(SERVICE, "family", "muc")
    assert [i.id for i in page.items] == list(ids)
    assert page.items[0].with_jid == "bob@localhost"
    stored = parse_frame(page.items[0].payload, 10**6)
    assert stored.get("to") is None and stored.get("from") == f"{ROOM}/bob"
    assert stored.find(OCCUPANT_ID) is not None
    # The archive names the sender's real JID (a non-anonymous room); the live copies need not.
    assert item(stored).get("jid") == "bob@localhost"
    assert all(m.find(f"{{{USER}}}x") is None for m in messages)


async def test_an_omemo_message_without_body_is_archived_as_ciphertext_and_delivered(server: Server) -> None:
    alice, bob = await private_group(server, "alice", "bob")
    await alice.send(f"<message to='{ROOM}' type='groupchat' id='e1'>{OMEMO}<store xmlns='urn:xmpp:hints'/></message>")
    (received,) = bob.take()
    assert received.find(f"{{{ns.OMEMO_LEGACY}}}encrypted") is not None and received.find(STANZA_ID) is not None
    (payload,) = await archived(server)
    assert b"Y2lwaGVydGV4dA==" in payload and b"<body" not in payload


async def test_what_is_not_archived(server: Server) -> None:
    alice, bob = await private_group(server, "alice", "bob")
    await alice.send(f"<message to='{ROOM}' type='groupchat'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>")
    (state,) = bob.take()
    assert state.find(STANZA_ID) is None
    await alice.send(f"<message to='{ROOM}' type='groupchat'><subject>Plans</subject></message>")
    (subject,) = bob.take()
    assert subject.findtext(SUBJECT) == "Plans" and subject.get("from") == f"{ROOM}/alice"
    assert await archived(server) == []


async def test_logging_off_keeps_no_archive(server: Server) -> None:
    alice = await online(server, "alice@localhost/phone")
    await create(alice, nick="alice", form=field("muc#roomconfig_enablelogging", "0"))
    await alice.send(f"<message to='{ROOM}' type='groupchat'><body>off the record</body></message>")
    (message,) = alice.take()
    assert message.find(STANZA_ID) is None
    assert await archived(server) == []


async def test_non_occupants_and_visitors_cannot_speak(server: Server) -> None:
    alice, bob = await private_group(server, "alice", "bob")
    carol = await online(server, "carol@localhost/phone")
    await carol.send(f"<message to='{ROOM}' type='groupchat' id='x'><body>let me in</body></message>")
    (refusal,) = carol.take()
    assert condition(refusal) == "not-acceptable" and refusal.get("from") == ROOM
    await carol.send(f"<message to='nowhere@{SERVICE}' type='groupchat'><body>?</body></message>")
    assert condition(carol.take()[0]) == "item-not-found"
    await carol.send(f"<message to='{SERVICE}' type='chat'><body>?</body></message>")
    assert condition(carol.take()[0]) == "service-unavailable"
    await bob.send(f"<message to='{ROOM}/alice' type='groupchat'><body>wrong</body></message>")
    assert condition(bob.take()[0]) == "bad-request"
    await bob.send(f"<message to='{ROOM}'><body>no type</body></message>")
    assert condition(bob.take()[0]) == "bad-request"
    assert alice.take() == []
    assert await archived(server) == []


async def test_subject_changes_follow_the_configuration(server: Server) -> None:
    alice = await online(server, "alice@localhost/phone")
    await create(alice, nick="alice", form=field("muc#roomconfig_changesubject", "0"))
    await set_affiliation(alice, "bob@localhost", "member")
    bob = await online(server, "bob@localhost/phone")
    await join(bob, ROOM, "bob")
    await bob.send(f"<message to='{ROOM}' type='groupchat'><subject>mine</subject></message>")
    assert condition(bob.take()[0]) == "forbidden"
    await alice.send(f"<message to='{ROOM}' type='groupchat'><subject>Family news</subject></message>")
    assert bob.take()[0].findtext(SUBJECT) == "Family news"
    await bob.send(f"<presence to='{ROOM}/bob' type='unavailable'/>")
    bob.take()
    out = await join(bob, ROOM, "bob")
    assert out[-1].findtext(SUBJECT) == "Family news" and out[-1].get("from") == f"{ROOM}/alice"


async def test_the_subject_carries_its_setters_occupant_id(server: Server) -> None:
    alice, bob = await private_group(server, "alice", "bob")
    await bob.send(f"<presence to='{ROOM}/bob' type='unavailable'/>")
    bob.take()
    out = await join(bob, ROOM, "bob")
    assert out[-1].get("from") == ROOM and out[-1].find(OCCUPANT_ID) is None  # from the room, no occupant's
    alice.take()
    await alice.send(f"<message to='{ROOM}' type='groupchat'><subject>Plans</subject></message>")
    (changed,) = bob.take()
    setter = changed.find(OCCUPANT_ID)
    assert setter is not None
    for client, nick in ((bob, "bob"), (alice, "alice")):
        await client.send(f"<presence to='{ROOM}/{nick}' type='unavailable'/>")
    alice.take()
    bob.take()
    muc = server.modules["muc"]
    assert not muc.rooms.live  # type: ignore[attr-defined]
    # Read back from storage: the subject sent on entering names the same occupant.
    out = await join(bob, ROOM, "bob")
    assert out[-1].findtext(SUBJECT) == "Plans" and out[-1].get("from") == f"{ROOM}/alice"
    ids = [el.get("id") for el in out[-1].findall(OCCUPANT_ID)]
    assert ids == [setter.get("id")]


async def test_private_messages(server: Server) -> None:
    alice, bob = await private_group(server, "alice", "bob")
    await bob.send(f"<message to='{ROOM}/alice' type='chat' id='pm'><body>psst</body></message>")
    (pm,) = alice.take()
    assert (pm.get("from"), pm.get("type"), pm.findtext(BODY)) == (f"{ROOM}/bob", "chat", "psst")
    assert pm.find(f"{{{USER}}}x") is not None and pm.find(OCCUPANT_ID) is not None
    assert bob.take() == []
    await bob.send(f"<message to='{ROOM}/nobody' type='chat'><body>?</body></message>")
    assert condition(bob.take()[0]) == "item-not-found"
    carol = await online(server, "carol@localhost/phone")
    await carol.send(f"<message to='{ROOM}/alice' type='chat'><body>hi</body></message>")
    assert condition(carol.take()[0]) == "not-acceptable"
    await alice.send(f"<iq type='set' id='c' to='{ROOM}'><query xmlns='http://jabber.org/protocol/muc#owner'>"
                     f"<x xmlns='jabber:x:data' type='submit'>{field('muc#roomconfig_allowpm', 'moderators')}</x>"
                     "</query></iq>")
    alice.take()
    bob.take()
    await bob.send(f"<message to='{ROOM}/alice' type='chat'><body>again</body></message>")
    assert condition(bob.take()[0]) == "forbidden"
    await alice.send(f"<message to='{ROOM}/bob' type='chat'><body>moderators may</body></message>")
    assert bob.take()[0].findtext(BODY) == "moderators may"


async def test_a_private_message_is_kept_in_the_recipients_archive(server: Server) -> None:
    """A private message goes to the occupant's real JID like any message: the recipient's own
    archive keeps it, so another device of theirs (or the same one after a lost link) reads it."""
    alice, bob = await private_group(server, "alice", "bob")
    await bob.send(f"<message to='{ROOM}/alice' type='chat' id='pm'><body>psst</body></message>")
    (pm,) = alice.take()
    stamps = [el.get("id") for el in pm.iter(STANZA_ID) if el.get("by") == "alice@localhost"]
    page = await server.storage.archive.query("localhost", "alice", "mam")
    assert [item.id for item in page.items] == stamps
    (kept,) = [parse_frame(item.payload, 1 << 16) for item in page.items]
    assert (kept.get("from"), kept.findtext(BODY)) == (f"{ROOM}/bob", "psst")
    # Not in the room's archive: it is private.
    assert await archived(server) == []


async def test_voice_requests_in_a_moderated_room(server: Server) -> None:
    alice = await online(server, "alice@localhost/phone")
    await create(alice, nick="alice", form=field("muc#roomconfig_moderatedroom", "1")
                 + field("muc#roomconfig_membersonly", "0"))
    bob = await online(server, "bob@localhost/phone")
    out = await join(bob, ROOM, "bob")
    assert item([p for p in out if p.tag == PRESENCE][-1]).get("role") == "visitor"
    alice.take()
    await bob.send(f"<message to='{ROOM}' type='groupchat'><body>can I talk?</body></message>")
    assert condition(bob.take()[0]) == "forbidden"
    request = (f"<message to='{ROOM}'><x xmlns='jabber:x:data' type='submit'>"
               f"{field('FORM_TYPE', 'http://jabber.org/protocol/muc#request')}{field('muc#role', 'participant')}</x></message>")
    await bob.send(request)
    (forwarded,) = alice.take()
    x = forwarded.find("{jabber:x:data}x")
    assert x is not None
    form = DataForm.from_xml(x)
    assert (form.value("muc#roomnick"), form.value("muc#jid")) == ("bob", "bob@localhost/phone")
    approval = (f"<message to='{ROOM}'><x xmlns='jabber:x:data' type='submit'>"
                f"{field('FORM_TYPE', 'http://jabber.org/protocol/muc#request')}{field('muc#roomnick', 'bob')}"
                f"{field('muc#request_allow', 'true')}</x></message>")
    await alice.send(approval)
    (voiced,) = bob.take()
    assert item(voiced).get("role") == "participant" and item(voiced).get("nick") is None
    await bob.send(f"<message to='{ROOM}' type='groupchat'><body>thanks</body></message>")
    assert alice.take()[-1].findtext(BODY) == "thanks"


async def test_an_occupant_whose_client_bounces_is_removed(server: Server) -> None:
    alice, bob = await private_group(server, "alice", "bob")
    await bob.send(f"<message to='{ROOM}' type='error'><error type='cancel'>"
                   f"<service-unavailable xmlns='{ns.STANZA_ERRORS}'/></error></message>")
    (gone,) = alice.take()
    assert gone.get("type") == "unavailable" and statuses(gone) == {333}


async def test_a_private_message_bounced_by_blocking_goes_back_to_its_sender(server: Server) -> None:
    """§7.5 with XEP-0191: bob blocked carol's occupant JID, his server answers her private message
    with an error. That is bob refusing carol, not bob's client failing the room: he stays in."""
    alice, bob, carol = await private_group(server, "alice", "bob", "carol")
    await bob.send(f"<iq type='set' id='b'><block xmlns='urn:xmpp:blocking'><item jid='{ROOM}/carol'/></block></iq>")
    bob.take()
    await carol.send(f"<message to='{ROOM}/bob' type='chat' id='pm'><body>psst</body></message>")
    (bounced,) = carol.take()
    assert (bounced.get("from"), bounced.get("id"), condition(bounced)) == (f"{ROOM}/bob", "pm", "service-unavailable")
    assert alice.take() == [] and bob.take() == []
    await bob.send(f"<message to='{ROOM}' type='groupchat'><body>still here</body></message>")
    assert alice.take()[0].findtext(BODY) == "still here"
    # An error answering the room's own traffic still removes the one who sent it.
    await bob.send(f"<message to='{ROOM}/alice' type='error' id='pm'><error type='cancel'>"
                   f"<service-unavailable xmlns='{ns.STANZA_ERRORS}'/></error></message>")
    (gone,) = alice.take()
    assert gone.get("from") == f"{ROOM}/bob" and statuses(gone) == {333}


async def test_the_encryption_policy_covers_private_groups(tmp_path: Path) -> None:
    async with running(tmp_path) as srv:  # the default: e2e policy "required"
        alice, bob = await private_group(srv, "alice", "bob")
        await bob.send(f"<message to='{ROOM}' type='groupchat' id='p'><body>plaintext</body></message>")
        (refusal,) = bob.take()
        assert condition(refusal) == "policy-violation" and "end-to-end encryption" in (error_text(refusal) or "")
        await bob.send(f"<message to='{ROOM}/alice' type='chat'><body>plaintext</body></message>")
        assert condition(bob.take()[0]) == "policy-violation"
        assert alice.take() == []
        await bob.send(f"<message to='{ROOM}' type='groupchat'>{OMEMO}<body>fallback</body></message>")
        assert alice.take()[0].find(f"{{{ns.OMEMO_LEGACY}}}encrypted") is not None
        # A public channel cannot use OMEMO, so plaintext is its normal case.
        await create(alice, f"lobby@{SERVICE}", "alice", form=field("muc#roomconfig_membersonly", "0")
                     + field("muc#roomconfig_whois", "moderators") + field("muc#roomconfig_publicroom", "1"))
        await alice.send(f"<message to='lobby@{SERVICE}' type='groupchat'><body>welcome</body></message>")
        assert alice.take()[0].findtext(BODY) == "welcome"
        (public,) = (await srv.storage.archive.query(SERVICE, "lobby", "muc")).items
        assert b"alice@localhost" not in public.payload  # semi-anonymous: no real JID kept with it

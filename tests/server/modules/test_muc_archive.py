"""The room archive (XEP-0313 for MUC): queries with paging and filters, who may read it, and
moderated retraction (XEP-0425) with its tombstone."""

from __future__ import annotations

import asyncio
from xml.etree.ElementTree import Element

import pytest

from schnack.server.app import Server
from schnack.server.modules.mam import SCAN_MOST
from schnack.xmpp import ns
from schnack.xmpp.parser import parse_frame
from schnack.xmpp.payloads.forward import format_stamp
from schnack.xmpp.payloads.mam import Fin, Result

from ...harness import Client
from .groups import (
    MESSAGE,
    OCCUPANT_ID,
    ROOM,
    SERVICE,
    STANZA_ID,
    USER,
    create,
    field,
    iq_reply,
    join,
    join_xml,
    of_kind,
    online,
    private_group,
    server,
)  # fmt: skip
from .messaging import condition, unresourced

__all__ = ["server"]

MAM = "urn:xmpp:mam:2"
BODY = f"{{{ns.CLIENT}}}body"
RETRACT = "urn:xmpp:message-retract:1"
MODERATE = "urn:xmpp:message-moderate:1"


async def query(client: Client, rsm: str = "", form: str = "", to: str = ROOM, qid: str = "q") -> tuple[list[Result], Element]:
    await client.send(f"<iq type='set' id='{qid}' to='{to}'><query xmlns='{MAM}' queryid='{qid}'>{form}"
                      f"<set xmlns='http://jabber.org/protocol/rsm'>{rsm}</set></query></iq>")
    out = client.take()
    results = [Result.from_xml(m[0]) for m in out if m.tag == MESSAGE and m.find(f"{{{MAM}}}result") is not None]
    return results, iq_reply(out, qid)


def bodies(results: list[Result]) -> list[str | None]:
    return [r.forwarded.stanza.findtext(BODY) for r in results]


async def test_members_page_through_the_archive(server: Server) -> None:
    alice, bob = await private_group(server, "alice", "bob")
    for n in range(7):
        await (alice if n % 2 else bob).send(f"<message to='{ROOM}' type='groupchat'><body>m{n}</body></message>")
    alice.take()
    ids = [m.find(STANZA_ID).get("id") for m in bob.take()]  # type: ignore[union-attr]
    results, answer = await query(bob, "<max>3</max>")
    assert bodies(results) == ["m0", "m1", "m2"] and [r.id for r in results] == ids[:3]
    fin = Fin.from_xml(answer[0])
    assert not fin.complete and fin.rsm.last == ids[2]
    for r in results:
        assert r.queryid == "q" and r.forwarded.stamp is not None
        assert r.forwarded.stanza.get("from") in (f"{ROOM}/alice", f"{ROOM}/bob")
        assert r.forwarded.stanza.find(OCCUPANT_ID) is not None
    results, answer = await query(bob, f"<max>10</max><after>{ids[2]}</after>")
    assert bodies(results) == ["m3", "m4", "m5", "m6"] and Fin.from_xml(answer[0]).complete
    results, _ = await query(bob, "<max>2</max><before/>")
    assert bodies(results) == ["m5", "m6"]
    results, _ = await query(bob, "<max>10</max>", form=(
        f"<x xmlns='jabber:x:data' type='submit'>{field('FORM_TYPE', MAM)}{field('with', 'alice@localhost')}</x>"))
    assert bodies(results) == ["m1", "m3", "m5"]
    _, answer = await query(bob, "<after>no-such-id</after>")
    assert condition(answer) == "item-not-found"
    await bob.send(f"<iq type='get' id='f' to='{ROOM}'><query xmlns='{MAM}'/></iq>")
    assert iq_reply(bob.take(), "f").find(f"{{{MAM}}}query/{{jabber:x:data}}x") is not None


async def test_who_reads_the_archive(server: Server) -> None:
    alice, _bob = await private_group(server, "alice", "bob")
    await alice.send(f"<message to='{ROOM}' type='groupchat'><body>members only</body></message>")
    stranger = await online(server, "carol@localhost/phone")
    _, answer = await query(stranger)
    assert condition(answer) == "forbidden"
    _, answer = await query(stranger, to=f"nowhere@{SERVICE}")
    assert condition(answer) == "item-not-found"
    # A public channel's archive is open to anyone; a hidden open room's to those in it.
    await create(alice, f"lobby@{SERVICE}", "alice", form=field("muc#roomconfig_membersonly", "0")
                 + field("muc#roomconfig_publicroom", "1"))
    await alice.send(f"<message to='lobby@{SERVICE}' type='groupchat'><body>welcome</body></message>")
    results, _ = await query(stranger, to=f"lobby@{SERVICE}")
    assert bodies(results) == ["welcome"]
    await create(alice, f"hidden@{SERVICE}", "alice", form=field("muc#roomconfig_membersonly", "0"))
    _, answer = await query(stranger, to=f"hidden@{SERVICE}")
    assert condition(answer) == "forbidden"
    await join(stranger, f"hidden@{SERVICE}", "carol")
    results, answer = await query(stranger, to=f"hidden@{SERVICE}")
    assert answer.get("type") == "result" and results == []



async def test_a_password_keeps_a_public_archive_to_those_who_may_enter(server: Server) -> None:
    """XEP-0313 §6.1.2: reading a room's archive takes the right to enter it, here the password."""
    alice = await online(server, "alice@localhost/phone")
    await create(alice, nick="alice", form=(
        field("muc#roomconfig_membersonly", "0") + field("muc#roomconfig_publicroom", "1")
        + field("muc#roomconfig_passwordprotectedroom", "1") + field("muc#roomconfig_roomsecret", "s3cret")))
    await alice.send(f"<message to='{ROOM}' type='groupchat'><body>for those who know it</body></message>")
    stranger = await online(server, "carol@localhost/phone")
    _, answer = await query(stranger)
    assert condition(answer) == "forbidden"
    await stranger.send(f"<iq type='get' id='f' to='{ROOM}'><query xmlns='{MAM}'/></iq>")
    assert condition(iq_reply(stranger.take(), "f")) == "forbidden"
    await stranger.send(join_xml(ROOM, "carol", password="s3cret"))
    stranger.take()
    results, _ = await query(stranger)
    assert bodies(results) == ["for those who know it"]

async def test_a_moderator_retracts_a_message_for_everyone(server: Server) -> None:
    alice, bob, carol = await private_group(server, "alice", "bob", "carol")
    await bob.send(f"<message to='{ROOM}' type='groupchat' id='bad'><body>something rude</body></message>")
    await bob.send(f"<message to='{ROOM}' type='groupchat' id='ok'><body>something fine</body></message>")
    alice.take()
    carol.take()
    first, _second = [m.find(STANZA_ID).get("id") for m in bob.take()]  # type: ignore[union-attr]
    moderate = (f"<moderate xmlns='{MODERATE}' id='{first}'><retract xmlns='{RETRACT}'/>"
                "<reason>not here</reason></moderate>")
    await bob.send(f"<iq type='set' id='mod' to='{ROOM}'>{moderate}</iq>")
    assert condition(iq_reply(bob.take(), "mod")) == "forbidden"
    await alice.send(f"<iq type='set' id='mod' to='{ROOM}'>{moderate.replace(first or '', 'unknown')}</iq>")
    assert condition(iq_reply(alice.take(), "mod")) == "item-not-found"
    await alice.send(f"<iq type='set' id='mod' to='{ROOM}'>{moderate}</iq>")
    assert iq_reply(alice.take(), "mod").get("type") == "result"
    (notice,) = carol.take()
    retract = notice.find(f"{{{RETRACT}}}retract")
    assert notice.get("from") == ROOM and retract is not None and retract.get("id") == first
    assert retract.find(f"{{{MODERATE}}}moderated").get("by") == f"{ROOM}/alice"  # type: ignore[union-attr]
    assert retract.findtext(f"{{{RETRACT}}}reason") == "not here"
    page = await server.storage.archive.query(SERVICE, "family", "muc")
    stored = [parse_frame(i.payload, 10**6) for i in page.items]
    assert page.items[0].id == first
    tombstone = stored[0]
    assert tombstone.find(BODY) is None and tombstone.find(f"{{{RETRACT}}}retracted") is not None
    assert tombstone.get("from") == f"{ROOM}/bob" and tombstone.find(OCCUPANT_ID) is not None
    assert stored[1].findtext(BODY) == "something fine"
    assert stored[2].find(f"{{{RETRACT}}}retract") is not None  # the notice, for those catching up
    results, _ = await query(carol)
    assert bodies(results) == [None, "something fine", None]


def real_jids(message: Element) -> list[str | None]:
    return [i.get("jid") for i in message.findall(f"{{{USER}}}x/{{{USER}}}item")]


async def test_a_room_turned_semi_anonymous_keeps_real_jids_out_of_its_history(server: Server) -> None:
    """XEP-0045 §7.2.3, XEP-0313 §5.1.2: what the archive noted while the room was non-anonymous
    reaches only those the room shows real JIDs to now."""
    alice = await online(server, "alice@localhost/phone")
    await create(alice, nick="alice", form=field("muc#roomconfig_membersonly", "0"))
    await alice.send(f"<message to='{ROOM}' type='groupchat' id='m1'><body>who am I</body></message>")
    await alice.send(f"<iq type='set' id='c' to='{ROOM}'><query xmlns='http://jabber.org/protocol/muc#owner'>"
                     f"<x xmlns='jabber:x:data' type='submit'>{field('muc#roomconfig_whois', 'moderators')}</x>"
                     "</query></iq>")
    assert iq_reply(alice.take(), "c").get("type") == "result"
    bob = await online(server, "bob@localhost/phone")
    (history,) = [m for m in of_kind(await join(bob, ROOM, "bob", history=""), MESSAGE) if m.find(BODY) is not None]
    assert history.findtext(BODY) == "who am I" and real_jids(history) == []
    results, _ = await query(bob)
    assert bodies(results) == ["who am I"] and real_jids(results[0].forwarded.stanza) == []
    # The moderator still sees who wrote it.
    results, _ = await query(alice)
    assert real_jids(results[0].forwarded.stanza) == ["alice@localhost"]


def with_(jid: str) -> str:
    """A query form (XEP-0313 §4.1.1) filtering by ``jid``."""
    return f"<x xmlns='jabber:x:data' type='submit'>{field('FORM_TYPE', MAM)}{field('with', jid)}</x>"


async def semi_anonymous(server: Server) -> Client:
    """Alice, owner of ROOM, an open room that shows real JIDs to its moderators only."""
    alice = await online(server, "alice@localhost/phone")
    await create(alice, nick="alice", form=(
        field("muc#roomconfig_membersonly", "0") + field("muc#roomconfig_whois", "moderators")))
    return alice


async def test_only_those_shown_real_jids_filter_by_them(server: Server) -> None:
    """XEP-0313 §4.1.1: a participant of a semi-anonymous room cannot learn who is behind a nick
    by filtering the archive by real JIDs."""
    alice = await semi_anonymous(server)
    carol = await online(server, "carol@localhost/phone")
    await join(carol, ROOM, "masked")
    await carol.send(f"<message to='{ROOM}' type='groupchat'><body>guess who</body></message>")
    bob = await online(server, "bob@localhost/phone")
    await join(bob, ROOM, "bob")
    await bob.send(f"<message to='{ROOM}' type='groupchat'><body>not me</body></message>")

    for jid in ("carol@localhost", "carol@localhost/phone"):
        _, answer = await query(bob, form=with_(jid))
        assert condition(answer) == "forbidden"
    results, _ = await query(bob, form=with_("bob@localhost"))
    assert bodies(results) == ["not me"]
    results, _ = await query(alice, form=with_("carol@localhost"))
    assert bodies(results) == ["guess who"]


async def test_an_unknown_id_is_not_found(server: Server) -> None:
    """XEP-0313 §4.1.3: every id the 'ids' field names must be in the archive."""
    alice, bob = await private_group(server, "alice", "bob")
    await alice.send(f"<message to='{ROOM}' type='groupchat'><body>kept</body></message>")
    alice.take()
    (known,) = [m.find(STANZA_ID).get("id") for m in bob.take()]  # type: ignore[union-attr]
    ids = f"<x xmlns='jabber:x:data' type='submit'>{field('FORM_TYPE', MAM)}{field('ids', known or '', 'gone')}</x>"
    _, answer = await query(bob, form=ids)
    assert condition(answer) == "item-not-found"
    results, _ = await query(bob, form=ids.replace("<value>gone</value>", ""))
    assert bodies(results) == ["kept"]


async def test_more_ids_than_a_page_holds_are_a_policy_violation(server: Server) -> None:
    """XEP-0313 §4.1.3 'ids': a query to a group's archive may name at most max_page_size (250)
    ids, as one to a user archive; more are policy-violation (RFC 6120 §8.3.3.12)."""
    alice, bob = await private_group(server, "alice", "bob")
    await alice.send(f"<message to='{ROOM}' type='groupchat'><body>kept</body></message>")
    alice.take()
    (known,) = [m.find(STANZA_ID).get("id") for m in bob.take()]  # type: ignore[union-attr]
    assert known is not None
    for named, kept in ((250, True), (251, False)):
        ids = f"<x xmlns='jabber:x:data' type='submit'>{field('FORM_TYPE', MAM)}{field('ids', *[known] * named)}</x>"
        results, answer = await query(bob, form=ids)
        if kept:
            assert bodies(results) == ["kept"]
        else:
            assert condition(answer) == "policy-violation"


async def test_hints_keep_a_message_out_of_the_archive(server: Server) -> None:
    """XEP-0334 §4: a message with a no-store or no-permanent-store hint reaches the occupants
    but not the archive, so it carries no stanza-id."""
    alice, bob = await private_group(server, "alice", "bob")
    for n, hint in enumerate(("no-store", "no-permanent-store", "")):
        extra = f"<{hint} xmlns='urn:xmpp:hints'/>" if hint else ""
        await alice.send(f"<message to='{ROOM}' type='groupchat'><body>m{n}</body>{extra}</message>")
    alice.take()
    got = bob.take()
    assert [m.findtext(BODY) for m in got] == ["m0", "m1", "m2"]
    assert [m.find(STANZA_ID) is not None for m in got] == [False, False, True]
    results, _ = await query(bob)
    assert bodies(results) == ["m2"]


def window(**bounds: str) -> str:
    """A query form (XEP-0313 §4.1) with these time bounds."""
    fields = "".join(field(var, value) for var, value in bounds.items())
    return f"<x xmlns='jabber:x:data' type='submit'>{field('FORM_TYPE', MAM)}{fields}</x>"


@pytest.mark.parametrize("kept", [1714521600.1234567, 1714521600.1234563])
async def test_a_message_is_found_by_the_stamp_it_is_shown_with(server: Server, kept: float) -> None:
    """XEP-0313 §4.1.2 and XEP-0045 §7.2.14: start, end and since compare with the stamp a message
    is shown with, to the microsecond, also for a message kept at a finer time (as archived before
    times were kept to the microsecond)."""
    alice, bob = await private_group(server, "alice", "bob")
    ids = []
    for n, offset in enumerate((-1e-6, 0.0, 1e-6)):
        message = f"<message xmlns='{ns.CLIENT}' from='{ROOM}/alice' type='groupchat'><body>m{n}</body></message>"
        ids.append(await server.storage.archive.append(
            SERVICE, "family", "muc", kept + offset, "alice@localhost", message.encode()))
    results, _ = await query(bob)
    assert [r.id for r in results] == ids and len({r.forwarded.stamp for r in results}) == 3
    for i, result in enumerate(results):
        assert result.forwarded.stamp is not None
        shown = format_stamp(result.forwarded.stamp)
        assert [r.id for r in (await query(bob, form=window(start=shown, end=shown)))[0]] == [ids[i]], shown
        assert [r.id for r in (await query(bob, form=window(start=shown)))[0]] == ids[i:], shown
        assert [r.id for r in (await query(bob, form=window(end=shown)))[0]] == ids[: i + 1], shown
        laptop = await online(server, f"bob@localhost/laptop{i}")
        out = await join(laptop, ROOM, "bob", history=f"<history since='{shown}'/>")
        assert [m.findtext(BODY) for m in of_kind(out, MESSAGE) if m.find(BODY) is not None] == [
            f"m{n}" for n in range(i, 3)], shown
    # What the room archives now is kept at the time it is shown with.
    await alice.send(f"<message to='{ROOM}' type='groupchat'><body>now</body></message>")
    results, _ = await query(bob)
    page = await server.storage.archive.query(SERVICE, "family", "muc")
    stamp = results[-1].forwarded.stamp
    assert stamp is not None and stamp.timestamp() == page.items[-1].timestamp


async def test_after_id_and_before_id_bound_the_set_and_its_count(server: Server) -> None:
    """XEP-0313 §4.1.3: after-id and before-id bound the result set, and so its count (XEP-0059
    §2.6); RSM's after and before page through it, and may come with them."""
    alice, bob = await private_group(server, "alice", "bob")
    for n in range(6):
        await alice.send(f"<message to='{ROOM}' type='groupchat'><body>m{n}</body></message>")
    alice.take()
    ids = [m.find(STANZA_ID).get("id") or "" for m in bob.take()]  # type: ignore[union-attr]
    bounded = window(**{"after-id": ids[0], "before-id": ids[5]})
    _, answer = await query(bob, "<max>0</max>", form=bounded)
    assert Fin.from_xml(answer[0]).rsm.count == 4
    results, answer = await query(bob, f"<max>2</max><after>{ids[2]}</after>", form=bounded)
    assert bodies(results) == ["m3", "m4"] and Fin.from_xml(answer[0]).complete
    results, _ = await query(bob, f"<max>2</max><before>{ids[3]}</before>", form=bounded)
    assert bodies(results) == ["m1", "m2"]


async def test_an_occupant_jid_finds_the_messages_sent_under_that_nick(server: Server) -> None:
    """XEP-0313 §4.1.1 and §5.1.2: an item of a group's archive is published by the occupant JID
    its 'from' shows, so 'with' room@service/nick finds the messages sent under that nick (as the
    archive has them: a nick changed later does not move them), to any reader, since the nick tells
    nothing about who is behind it."""
    alice = await semi_anonymous(server)
    bob = await online(server, "bob@localhost/phone")
    await join(bob, ROOM, "bob")
    await alice.send(f"<message to='{ROOM}' type='groupchat'><body>m0</body></message>")
    await bob.send(f"<message to='{ROOM}' type='groupchat'><body>m1</body></message>")
    await alice.send(f"<presence to='{ROOM}/ally'/>")
    await alice.send(f"<message to='{ROOM}' type='groupchat'><body>m2</body></message>")
    await bob.send(f"<message to='{ROOM}' type='groupchat'><body>m3</body></message>")
    alice.take()
    bob.take()
    for reader in (alice, bob):
        for nick, expected in (("alice", ["m0"]), ("ally", ["m2"]), ("bob", ["m1", "m3"]), ("nobody", [])):
            results, answer = await query(reader, form=with_(f"{ROOM}/{nick}"))
            assert bodies(results) == expected, nick
            assert [r.forwarded.stanza.get("from") for r in results] == [f"{ROOM}/{nick}"] * len(expected)
            assert Fin.from_xml(answer[0]).complete
    # The last page of one nick's messages, and their number alone (XEP-0059 §2.7).
    results, _ = await query(bob, "<max>1</max><before/>", form=with_(f"{ROOM}/bob"))
    assert bodies(results) == ["m3"]
    _, answer = await query(bob, "<max>0</max>", form=with_(f"{ROOM}/bob"))
    assert Fin.from_xml(answer[0]).rsm.count == 2


async def rare_nick_among_many(server: Server) -> str:
    """The group's archive: one message from carol, then SCAN_MOST + 50 from alice; carol's id."""
    rare = await server.storage.archive.append(SERVICE, "family", "muc", 50.0, "carol@localhost", (
        f"<message xmlns='{ns.CLIENT}' from='{ROOM}/carol' type='groupchat'><body>rare</body></message>").encode(),
        resource="carol")
    others = f"<message xmlns='{ns.CLIENT}' from='{ROOM}/alice' type='groupchat'><body>m</body></message>".encode()
    await asyncio.gather(*(server.storage.archive.append(SERVICE, "family", "muc", 100.0 + i, "alice@localhost", others,
                                                         resource="alice")
                           for i in range(SCAN_MOST + 50)))  # fmt: skip
    return rare


async def test_a_nicks_messages_are_found_among_any_number(server: Server) -> None:
    """XEP-0313 §4.1.1: the archive keeps the nick each message was sent under, so a nick's
    messages are found by it, however many others come between, and their number is exact."""
    _alice, bob = await private_group(server, "alice", "bob")
    rare = await rare_nick_among_many(server)
    results, answer = await query(bob, "<max>5</max><before/>", form=with_(f"{ROOM}/carol"))
    assert [r.id for r in results] == [rare] and bodies(results) == ["rare"] and Fin.from_xml(answer[0]).complete
    _, answer = await query(bob, "<max>0</max>", form=with_(f"{ROOM}/alice"))
    assert Fin.from_xml(answer[0]).rsm.count == SCAN_MOST + 50


async def test_a_nick_is_looked_for_among_a_bounded_number_of_messages(server: Server) -> None:
    """XEP-0313 §4.1.1: of the messages archived before nicks were kept, those of a nick are
    looked for among at most SCAN_MOST a query, as those of one device in a user archive; none
    found by then is policy-violation (RFC 6120 §8.3.3.12), which narrowing the query by time
    avoids."""
    _alice, bob = await private_group(server, "alice", "bob")
    rare = await rare_nick_among_many(server)
    unresourced(server)
    _, answer = await query(bob, "<max>5</max><before/>", form=with_(f"{ROOM}/carol"))
    assert condition(answer) == "policy-violation"
    assert answer.findtext(f"{{{ns.CLIENT}}}error/{{{ns.STANZA_ERRORS}}}text") == (
        f"the archive reads at most {SCAN_MOST} messages for a query with a full JID: narrow it by time (start, end)")
    narrowed = window(end="1970-01-01T00:01:00Z").replace("</x>", f"{field('with', f'{ROOM}/carol')}</x>")
    results, answer = await query(bob, "<before/>", form=narrowed)
    assert [r.id for r in results] == [rare] and bodies(results) == ["rare"] and Fin.from_xml(answer[0]).complete


async def test_the_rooms_bare_jid_finds_every_message(server: Server) -> None:
    """XEP-0313 §4.1.1: a bare JID matches the messages whose 'from' has it as its bare JID, and
    every message of a group's archive is from an occupant of that group."""
    alice, bob = await private_group(server, "alice", "bob")
    await alice.send(f"<message to='{ROOM}' type='groupchat'><body>m0</body></message>")
    await bob.send(f"<message to='{ROOM}' type='groupchat'><body>m1</body></message>")
    alice.take()
    bob.take()
    results, answer = await query(bob, "<max>1</max>", form=with_(ROOM))
    assert bodies(results) == ["m0"] and not Fin.from_xml(answer[0]).complete
    _, answer = await query(bob, "<max>0</max>", form=with_(ROOM))
    assert Fin.from_xml(answer[0]).rsm.count == 2

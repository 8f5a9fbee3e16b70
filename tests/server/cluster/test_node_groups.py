"""Group chat rooms across nodes when a room's node dies: nothing acknowledged is lost, the room
comes back with its state on another node, and a message sent twice is stored once. Two servers in
one process, on the in-process hub and on Redis, sharing PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from xml.etree.ElementTree import Element

import pytest
import redis.asyncio as aioredis

from schnack.server.app import Server
from schnack.server.c2s import C2SStream
from schnack.server.cluster import RedisBus, messages
from schnack.server.cluster.messages import NodeMessage
from schnack.server.modules.muc import Muc, operator
from schnack.server.modules.muc.room import Room
from schnack.xmpp import ns
from schnack.xmpp.jid import JID
from schnack.xmpp.stanza import Stanza
from schnack.xmpp.xml import element, serialize

from ...harness import Client
from ..modules.groups import (
    ADMIN,
    MESSAGE,
    OWNER,
    PRESENCE,
    ROOM,
    USER,
    create,
    field,
    join_xml,
    set_affiliation,
    statuses,
)
from ..modules.messaging import body
from .conftest import REDIS_URL, eventually
from .test_node_accounts import break_on_deletion
from .test_node_presence import IQ, backend, nodes, online, until

__all__ = ["backend"]  # the fixture that runs each test on both bus backends

STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"


def error_of(el: Element) -> tuple[str | None, str | None]:
    """(type, condition) of a stanza error."""
    error = el.find(f"{{{ns.CLIENT}}}error")
    assert error is not None, serialize(error if error is not None else el)
    condition = next((child.tag.partition("}")[2] for child in error if child.tag.startswith(f"{{{STANZAS}}}")), None)
    return error.get("type"), condition


def groupchat(text: str, message_id: str, origin_id: str | None = None) -> str:
    origin = f"<origin-id xmlns='urn:xmpp:sid:0' id='{origin_id}'/>" if origin_id else ""
    return f"<message to='{ROOM}' type='groupchat' id='{message_id}'><body>{text}</body>{origin}</message>"


async def _owner_and_member(a: Server, b: Server) -> tuple[Client, Client]:
    """alice creates the room on ``a``; bob, a member, enters it from ``b``."""
    owner = await online(a, "alice@localhost/phone")
    await create(owner, nick="alice")
    assert (await set_affiliation(owner, "bob@localhost", "member")).get("type") == "result"
    bob = await online(b, "bob@localhost/desk")
    await bob.send(join_xml(ROOM, "bob", "<history maxstanzas='0'/>"))
    await until(bob, lambda el: el.tag == PRESENCE and 110 in statuses(el))
    return owner, bob


async def test_a_group_outlives_its_node_and_loses_nothing(tmp_path: Path, backend: str) -> None:
    async with nodes(tmp_path, backend, node_ttl=2.0) as (a, b):
        owner, bob = await _owner_and_member(a, b)
        # Acknowledged only once the room's node stored and sent it: it is in the room's archive.
        await bob.send(groupchat("stored first", "g1", "o-1"))
        await until(owner, lambda el: el.tag == MESSAGE and el.get("id") == "g1")
        assert await a.storage.archive.count("groups.localhost", "family", "muc") == 1

        # The room's node dies: a message to the room is refused with a wait error, not dropped.
        await a.cluster.bus.stop(leave=False)
        await bob.send(groupchat("while the room is away", "g2"))
        refused = await until(bob, lambda el: el.tag == MESSAGE and el.get("id") == "g2")
        assert error_of(refused) == ("wait", "internal-server-error")

        # Once the dead node is reaped, the room starts on bob's node without occupants: a
        # self-ping (XEP-0410) says so, and bob enters again; the room kept its affiliations.
        async def pinged() -> Element:
            await bob.send(f"<iq type='get' id='sp' to='{ROOM}/bob'><ping xmlns='urn:xmpp:ping'/></iq>")
            return await until(bob, lambda el: el.tag == IQ and el.get("id") == "sp")

        answer = await pinged()
        while error_of(answer)[1] != "not-acceptable":
            answer = await pinged()
        await bob.send(join_xml(ROOM, "bob", "<history maxstanzas='0'/>"))
        await until(bob, lambda el: el.tag == PRESENCE and 110 in statuses(el))
        await bob.send(f"<iq type='get' id='who' to='{ROOM}'><query xmlns='{ADMIN}'><item affiliation='member'/>"
                       "</query></iq>")
        members = await until(bob, lambda el: el.tag == IQ and el.get("id") == "who")
        assert [i.get("jid") for i in members.iter(f"{{{ADMIN}}}item")] == ["bob@localhost"]

        # XEP-0359: the first message sent again (its acknowledgement was lost) is not stored twice.
        await bob.send(groupchat("stored first", "g1", "o-1"))
        await bob.send(groupchat("new", "g3", "o-3"))
        got = await until(bob, lambda el: el.tag == MESSAGE and el.get("id") in ("g1", "g3"))
        assert body(got) == "new"
        assert await b.storage.archive.count("groups.localhost", "family", "muc") == 2


async def test_the_last_owners_account_deleted_on_another_node_hands_the_room_on(
        tmp_path: Path, backend: str) -> None:
    """The room lives on ``a``; its only owner's account is deleted through ``b``. Storage is changed
    there, the room on ``a`` hears of the deletion: bob, the only member, becomes owner in the
    room's memory too (he is told, and may configure it), and the deleted owner left the room."""
    async with nodes(tmp_path, backend) as (a, b):
        _owner, bob = await _owner_and_member(a, b)
        assert await b.delete_account("localhost", "alice")
        promoted = await until(bob, lambda el: el.tag == PRESENCE and el.get("from") == f"{ROOM}/bob")
        assert 110 in statuses(promoted)
        found = promoted.find(f"{{{USER}}}x/{{{USER}}}item")
        assert found is not None and found.get("affiliation") == "owner", serialize(promoted)
        affiliations = await a.storage.muc.affiliations("groups.localhost", "family")
        assert {jid: record.affiliation for jid, record in affiliations.items()} == {"bob@localhost": "owner"}
        room = await _live_room(a)
        assert {str(jid): record.affiliation for jid, record in room.affiliations.items()} == {"bob@localhost": "owner"}
        assert [o.nick for o in room.occupants.values()] == ["bob"]
        await bob.send(f"<iq type='get' id='c' to='{ROOM}'><query xmlns='{OWNER}'/></iq>")
        answer = await until(bob, lambda el: el.tag == IQ and el.get("id") == "c")
        assert answer.get("type") == "result", serialize(answer)


async def test_the_operator_changes_a_group_from_any_node(tmp_path: Path, backend: str) -> None:
    """``schnack admin room`` on ``b`` for a room that lives on ``a`` is carried out on ``a`` (a
    change on ``b`` would be a second copy of the room), which answers through ``b``: the change
    reaches bob as an owner's would, and ``show`` counts the occupants ``a`` holds."""
    async with nodes(tmp_path, backend) as (a, b):
        _owner, bob = await _owner_and_member(a, b)
        change = {"action": "set-affiliation", "room": ROOM, "jid": "bob@localhost", "affiliation": "admin"}
        assert await b.hooks.fire("admin/rooms", change) == {
            "ok": True, "room": ROOM, "jid": "bob@localhost", "affiliation": "admin", "key_problems": {}}
        promoted = await until(bob, lambda el: el.tag == PRESENCE and el.get("from") == f"{ROOM}/bob")
        assert 110 in statuses(promoted)
        found = promoted.find(f"{{{USER}}}x/{{{USER}}}item")
        assert found is not None and found.get("affiliation") == "admin", serialize(promoted)
        assert (await _live_room(a)).affiliation(JID.parse("bob@localhost")) == "admin"
        assert JID.parse(ROOM) not in _muc(b).rooms.live

        shown = await b.hooks.fire("admin/rooms", {"action": "show", "room": ROOM})
        assert (shown["occupants"], shown["affiliations"]) == (2, [
            {"jid": "alice@localhost", "affiliation": "owner", "reason": None},
            {"jid": "bob@localhost", "affiliation": "admin", "reason": None}])

        assert await b.hooks.fire("admin/rooms", {"action": "destroy", "room": ROOM, "reason": "closed"}) == {
            "ok": True, "room": ROOM, "occupants": 2}
        out = await until(bob, lambda el: el.tag == PRESENCE and el.get("type") == "unavailable")
        assert out.findtext(f"{{{USER}}}x/{{{USER}}}destroy/{{{USER}}}reason") == "closed"
        assert await b.storage.muc.get_room("groups.localhost", "family") is None


async def test_a_deletion_the_rooms_node_missed_while_its_subscription_was_broken_counts_there_too(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The room lives on ``b``, whose subscription broke as the news of alice's deletion through
    ``a`` came. ``a`` changed the room in storage; once ``b`` subscribes again, the rooms it holds
    read their affiliations again: the deleted owner stops counting there too, and bob, the only
    member, becomes owner in the room's memory and is told."""
    async with nodes(tmp_path, "redis") as (a, b):
        alice, bob = await _owner_and_member(b, b)
        await alice.send(f"<presence to='{ROOM}/alice' type='unavailable'/>")
        room = await _live_room(b)
        assert [o.nick for o in room.occupants.values()] == ["bob"]
        missed = break_on_deletion(b, monkeypatch)
        assert await a.delete_account("localhost", "alice")
        await asyncio.wait_for(missed.wait(), 10.0)
        promoted = await until(bob, lambda el: el.tag == PRESENCE and el.get("from") == f"{ROOM}/bob")
        assert 110 in statuses(promoted)
        found = promoted.find(f"{{{USER}}}x/{{{USER}}}item")
        assert found is not None and found.get("affiliation") == "owner", serialize(promoted)
        assert {str(jid): record.affiliation for jid, record in room.affiliations.items()} == {"bob@localhost": "owner"}


async def test_an_occupant_whose_deletion_the_rooms_node_missed_leaves_once_it_subscribes_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """In bob's open room on ``b``, carol (no affiliation) is in from ``a``, through which her
    account is deleted while ``b``'s subscription is broken. Once ``b`` subscribes again, the room
    finds her account gone: she leaves, the others told as of a member removed (status 321)."""
    async with nodes(tmp_path, "redis") as (a, b):
        bob = await online(b, "bob@localhost/desk")
        await create(bob, nick="bob", form="<field var='muc#roomconfig_membersonly'><value>0</value></field>")
        carol = await online(a, "carol@localhost/phone")
        await carol.send(join_xml(ROOM, "carol", "<history maxstanzas='0'/>"))
        await until(carol, lambda el: el.tag == PRESENCE and 110 in statuses(el))
        room = await _live_room(b)
        missed = break_on_deletion(b, monkeypatch)
        assert await a.delete_account("localhost", "carol")
        await asyncio.wait_for(missed.wait(), 10.0)
        left = await until(bob, lambda el: el.tag == PRESENCE and el.get("from") == f"{ROOM}/carol"
                           and el.get("type") == "unavailable")
        assert statuses(left) == {321}
        assert [o.nick for o in room.occupants.values()] == ["bob"]


async def test_a_room_command_for_a_node_of_before_requests_times_out_naming_it(
        tmp_path: Path, backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A node of a version before bus requests drops one as of an unknown kind: the node asked
    waits no longer than its timeout and names the room's node; nothing was changed."""
    monkeypatch.setattr(operator, "FORWARD_TIMEOUT", 0.5)
    async with nodes(tmp_path, backend) as (a, b):
        await _owner_and_member(a, b)
        monkeypatch.delitem(messages._KINDS, messages.Request.kind)
        change = {"action": "set-affiliation", "room": ROOM, "jid": "bob@localhost", "affiliation": "admin"}
        assert await b.hooks.fire("admin/rooms", change) == {"ok": False, "error": (
            f"{ROOM} is served by node a, which did not answer within 0.5 s (it may run a version that "
            "does not know the request, or be busy: what was asked may be done yet)")}
        assert (await _live_room(a)).affiliation(JID.parse("bob@localhost")) == "member"


async def test_a_room_command_for_a_node_that_is_gone_is_refused_naming_it(tmp_path: Path, backend: str) -> None:
    """The room's node stopped (its claim on the room stands until its heartbeats time out): the
    command is refused at once, naming it, rather than carried out on a second copy of the room."""
    async with nodes(tmp_path, backend) as (a, b):
        await _owner_and_member(a, b)
        await a.cluster.bus.stop(leave=False)
        assert await b.hooks.fire("admin/rooms", {"action": "destroy", "room": ROOM}) == {"ok": False, "error": (
            f"{ROOM} is served by node a, which did not take the request (it is gone, or the cluster bus is away)")}
        assert await b.storage.muc.get_room("groups.localhost", "family") is not None


PARTY = "party@groups.localhost"


async def test_a_listing_gathers_the_temporary_rooms_of_every_node(tmp_path: Path, backend: str) -> None:
    """A temporary room lives only in the memory of its node: the listing on ``b`` asks every
    node for the rooms it serves, with their occupants, and lists each room once."""
    async with nodes(tmp_path, backend) as (a, b):
        owner, _bob = await _owner_and_member(a, b)
        await create(owner, PARTY, "alice", field("muc#roomconfig_persistentroom", "0"))
        assert await b.storage.muc.get_room("groups.localhost", "party") is None
        assert await b.hooks.fire("admin/rooms", {"action": "list"}) == {"ok": True, "unanswered": {}, "rooms": [
            {"room": ROOM, "name": "", "occupants": 2, "owners": ["alice@localhost"]},
            {"room": PARTY, "name": "", "occupants": 1, "owners": ["alice@localhost"]}]}
        assert (await b.hooks.fire("admin/rooms", {"action": "list", "domain": "localhost"}))["rooms"] == (
            await a.hooks.fire("admin/rooms", {"action": "list"}))["rooms"]


async def test_a_listing_names_the_nodes_that_did_not_answer(
        tmp_path: Path, backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A node of a version before bus requests does not answer: the listing has what storage
    holds, the occupants of its rooms unknown, and names the node."""
    monkeypatch.setattr(operator, "GATHER_TIMEOUT", 0.5)
    async with nodes(tmp_path, backend) as (a, b):
        owner, _bob = await _owner_and_member(a, b)
        await create(owner, PARTY, "alice", field("muc#roomconfig_persistentroom", "0"))
        monkeypatch.delitem(messages._KINDS, messages.Request.kind)
        assert await b.hooks.fire("admin/rooms", {"action": "list"}) == {"ok": True, "rooms": [
            {"room": ROOM, "name": "", "occupants": None, "owners": ["alice@localhost"]}], "unanswered": {
            "a": "node a did not answer within 0.5 s (it may run a version that does not know the request, "
                 "or be busy: what was asked may be done yet)"}}


def _muc(server: Server) -> Muc:
    muc = server.modules["muc"]
    assert isinstance(muc, Muc)
    return muc


async def _live_room(server: Server) -> Room:
    return _muc(server).rooms.live[JID.parse(ROOM)]


async def test_a_refusal_reaches_a_sender_the_directory_forgot(tmp_path: Path, backend: str) -> None:
    """The directory lost bob's session (Redis restarted; his node has not written it back yet):
    the room's fan-out cannot reach him, so he leaves the room, and his next message is refused.
    The refusal travels inside the answer his node waits for, not as a stanza of its own that
    would need the directory: he is told, rather than his message taken as sent."""
    async with nodes(tmp_path, backend) as (a, b):
        owner, bob = await _owner_and_member(a, b)
        await b.cluster.bus.unregister("bob@localhost/desk")

        await owner.send(groupchat("bob cannot get this", "g1"))
        muc = a.modules.get("muc")
        assert isinstance(muc, Muc)
        room = muc.rooms.live[JID.parse(ROOM)]
        await eventually(lambda: _occupants(room), lambda sessions: "bob@localhost/desk" not in sessions)

        await bob.send(groupchat("sent after the room let bob go", "g2"))
        refused = await until(bob, lambda el: el.tag == MESSAGE and el.get("id") == "g2")
        assert error_of(refused) == ("modify", "not-acceptable")
        assert refused.get("from") == ROOM
        assert await a.storage.archive.count("groups.localhost", "family", "muc") == 1


async def _occupants(room: Room) -> set[str]:
    return {str(full) for full in room.by_session}


async def test_what_the_room_sent_before_letting_an_occupant_go_stays_behind(tmp_path: Path, backend: str) -> None:
    """The room's fan-out could not reach bob, so it let him go; its messages to him posted
    before that are still on their way. They stay behind until he joins again: one reaching
    him while he still takes himself for an occupant would move his place in the archive past
    the message he missed. His unavailable presence goes on, to tell him to join again."""
    async with nodes(tmp_path, backend) as (a, b):
        _, bob = await _owner_and_member(a, b)
        groups = a.cluster.groups
        desk = JID.parse("bob@localhost/desk")

        def from_room(message_id: str) -> Element:
            return element(MESSAGE, {"from": f"{ROOM}/alice", "to": str(desk), "type": "groupchat", "id": message_id})

        await groups.lost(desk, from_room("missed"))
        muc = a.modules.get("muc")
        assert isinstance(muc, Muc)
        assert str(desk) not in await _occupants(muc.rooms.live[JID.parse(ROOM)])
        assert groups.cut_off(desk, from_room("posted before he left"))
        left = element(PRESENCE, {"from": f"{ROOM}/bob", "to": str(desk), "type": "unavailable"})
        assert not groups.cut_off(desk, left)
        await until(bob, lambda el: el.tag == PRESENCE and el.get("type") == "unavailable" and 110 in statuses(el))

        await bob.send(join_xml(ROOM, "bob", "<history maxstanzas='0'/>"))
        await until(bob, lambda el: el.tag == PRESENCE and 110 in statuses(el) and el.get("type") is None)
        assert not groups.cut_off(desk, from_room("after he joined again"))


async def test_a_room_keeps_one_node_when_redis_forgets_everything(tmp_path: Path) -> None:
    """Redis emptied under a running cluster (a restart without persistence that no node saw as
    an outage): the room's node claims it again, and the other node, settling meanwhile, starts
    no second copy: bob, who stayed in the room, still gets his messages through it."""
    async with nodes(tmp_path, "redis", node_ttl=1.0) as (a, b):
        owner, bob = await _owner_and_member(a, b)
        bus = a.cluster.bus
        assert isinstance(bus, RedisBus)
        claim = f"{bus.prefix}claim:room:{ROOM}"
        store = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)
        try:
            assert await store.get(claim) == "a"
            keys = [key async for key in store.scan_iter(match=f"{bus.prefix}*")]
            await store.delete(*keys)
            await eventually(lambda: store.get(claim), lambda owner_now: owner_now == "a")
            # Past the other node's settling time: it would have claimed the room by now.
            await asyncio.sleep(1.0 + 2 * 2.0 + 0.2 + 0.5)
            for n in range(3):
                message_id = f"r{n}"
                await bob.send(groupchat(f"after {n}", message_id))
                echoed = await until(bob, lambda el: el.tag == MESSAGE and el.get("id") == message_id)  # noqa: B023
                assert echoed.get("type") == "groupchat", serialize(echoed)
                got = await until(owner, lambda el: el.tag == MESSAGE and el.get("id") == message_id)  # noqa: B023
                assert body(got) == f"after {n}"
            assert await store.get(claim) == "a"
        finally:
            await store.aclose()


async def test_a_message_whose_sender_left_while_the_room_was_silent_is_not_counted(
        tmp_path: Path, backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The room's node takes a message but stalls before its answer; meanwhile the sender's stream
    closes (a drain). The timeout's wait error can reach no one, so the stream must not count the
    message (XEP-0198 'h'), or a client resuming with that count takes it as sent."""
    async with nodes(tmp_path, backend) as (a, b):
        _, bob = await _owner_and_member(a, b)
        session = b.sessions.get(JID.parse("bob@localhost/desk"))
        assert session is not None and isinstance(session.transport, C2SStream)
        stream = session.transport
        counted = stream.stanzas_handled

        async def stall(stanza: Stanza, ask: str) -> None:
            await asyncio.Event().wait()

        monkeypatch.setattr(a.cluster.groups, "arrived", stall)
        # The test client hands its stanza to the stream and returns once the stream handled it.
        sending = asyncio.create_task(bob.send(groupchat("never answered", "g1")))
        await eventually(lambda: _asking(b), lambda asking: asking > 0)
        stream.close()
        await sending
        assert stream.stanzas_handled == counted


async def _asking(server: Server) -> int:
    return len(server.cluster.groups._asked)


def _keeping(shown: list[Element], match: Callable[[Element], bool]) -> Callable[[Element], bool]:
    """``match``, keeping every stanza it is asked about in ``shown``."""
    def check(el: Element) -> bool:
        shown.append(el)
        return match(el)
    return check


async def test_a_copy_lost_on_the_bus_takes_its_occupant_out_before_anything_after_it(
        tmp_path: Path, backend: str) -> None:
    """A copy of the room's to bob vanished on the bus (Redis went down with it, say), and nobody
    was told. The copy after it shows the gap on bob's node: it does not reach bob, whose place in
    the archive would move past the lost one, and bob leaves the room; he joins again and reads
    what he missed."""
    async with nodes(tmp_path, backend) as (a, b):
        owner, bob = await _owner_and_member(a, b)
        desk = JID.parse("bob@localhost/desk")
        assert a.cluster.groups.mark(desk, element(MESSAGE, {"from": f"{ROOM}/alice", "type": "groupchat"}))

        await owner.send(groupchat("after the lost copy", "g1"))
        shown: list[Element] = []
        await until(bob, _keeping(shown, lambda el: el.tag == PRESENCE and el.get("type") == "unavailable"
                                  and 110 in statuses(el)))
        assert not [el for el in shown if el.tag == MESSAGE and el.get("id") == "g1"]
        muc = a.modules.get("muc")
        assert isinstance(muc, Muc)
        room = muc.rooms.live[JID.parse(ROOM)]
        await eventually(lambda: _occupants(room), lambda sessions: str(desk) not in sessions)

        # Back in the room, with a new numbering: what comes next reaches him.
        await bob.send(join_xml(ROOM, "bob", "<history maxstanzas='0'/>"))
        await until(bob, lambda el: el.tag == PRESENCE and 110 in statuses(el) and el.get("type") is None)
        await owner.send(groupchat("after he joined again", "g2"))
        got = await until(bob, lambda el: el.tag == MESSAGE and el.get("id") == "g2")
        assert body(got) == "after he joined again"


async def test_entering_again_while_still_in_the_room_is_no_gap(tmp_path: Path, backend: str) -> None:
    """A client that enters again while the room still holds its session (it reconnected with the
    same resource before the room heard it had gone) starts a new numbering, which its node takes
    as such: it stays in the room and gets what follows."""
    async with nodes(tmp_path, backend) as (a, b):
        owner, bob = await _owner_and_member(a, b)
        for n in range(3):
            await owner.send(groupchat(f"before {n}", f"b{n}"))
            await until(bob, lambda el: el.tag == MESSAGE and el.get("id") == f"b{n}")  # noqa: B023
        await bob.send(join_xml(ROOM, "bob", "<history maxstanzas='0'/>"))
        await until(bob, lambda el: el.tag == PRESENCE and 110 in statuses(el) and el.get("type") is None)
        await owner.send(groupchat("after entering again", "g1"))
        shown: list[Element] = []
        await until(bob, _keeping(shown, lambda el: el.tag == MESSAGE and el.get("id") == "g1"))
        assert not [el for el in shown if el.tag == PRESENCE and el.get("type") == "unavailable"]


async def test_after_the_bus_was_interrupted_occupants_leave_the_rooms_elsewhere(
        tmp_path: Path, backend: str) -> None:
    """bob's node lost its subscription to the bus for a moment: the room's last copy to him may
    have gone with it, with nothing after it to show the gap. His node takes him out of the room,
    and nothing more of his old stay reaches him; he joins again and reads what he missed."""
    async with nodes(tmp_path, backend) as (a, b):
        owner, bob = await _owner_and_member(a, b)
        await owner.send(groupchat("seen", "g1"))
        await until(bob, lambda el: el.tag == MESSAGE and el.get("id") == "g1")

        b.cluster.groups.interrupted()  # what the bus calls once it listens again
        await until(bob, lambda el: el.tag == PRESENCE and el.get("type") == "unavailable" and 110 in statuses(el))
        muc = a.modules.get("muc")
        assert isinstance(muc, Muc)
        room = muc.rooms.live[JID.parse(ROOM)]
        await eventually(lambda: _occupants(room), lambda sessions: "bob@localhost/desk" not in sessions)

        await bob.send(join_xml(ROOM, "bob", "<history maxstanzas='0'/>"))
        await until(bob, lambda el: el.tag == PRESENCE and 110 in statuses(el) and el.get("type") is None)
        await owner.send(groupchat("after he joined again", "g2"))
        await until(bob, lambda el: el.tag == MESSAGE and el.get("id") == "g2")


async def test_a_request_to_leave_lost_on_the_bus_is_sent_again(
        tmp_path: Path, backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """bob's node takes him out of a room elsewhere, and the bus loses that request too: without
    an answer his node asks again, or he would stay in the room with its copies held back and
    never hear that he should join again."""
    async with nodes(tmp_path, backend) as (a, b):
        _, bob = await _owner_and_member(a, b)
        arrived = a.cluster.groups.arrived
        lost: list[Stanza] = []

        async def lose_the_first_leave(stanza: Stanza, ask: str) -> None:
            if stanza.kind == "presence" and stanza.type == "unavailable" and not lost:
                lost.append(stanza)
                return
            await arrived(stanza, ask)

        monkeypatch.setattr(a.cluster.groups, "arrived", lose_the_first_leave)
        b.cluster.groups.interrupted()
        await until(bob, lambda el: el.tag == PRESENCE and el.get("type") == "unavailable" and 110 in statuses(el))
        assert [stanza.from_ for stanza in lost] == [JID.parse("bob@localhost/desk")]


async def test_a_draining_node_lets_the_message_its_room_handles_finish(tmp_path: Path, backend: str) -> None:
    """The room's node drains while it handles bob's message: the room moves on only once the
    message is stored and sent out, so that it reaches its members and is in the archive before
    another node can start the room."""
    async with nodes(tmp_path, backend) as (a, b):
        _, bob = await _owner_and_member(a, b)
        muc = a.modules.get("muc")
        assert isinstance(muc, Muc)
        held, release = asyncio.Event(), asyncio.Event()

        async def busy_room() -> None:
            async with muc.locks.hold(JID.parse(ROOM)):
                held.set()
                await release.wait()

        holding = asyncio.create_task(busy_room())
        await held.wait()
        sending = asyncio.create_task(bob.send(groupchat("in flight", "g1")))
        await eventually(lambda: _arriving(a), lambda arriving: arriving > 0)
        draining = asyncio.create_task(a.drain())
        await asyncio.sleep(0.5)
        assert not draining.done()
        assert JID.parse(ROOM) in muc.rooms.live

        release.set()
        await holding
        await draining
        await sending
        got = await until(bob, lambda el: el.tag == MESSAGE and el.get("id") == "g1")
        assert body(got) == "in flight" and got.find(f"{{{ns.CLIENT}}}error") is None
        assert await b.storage.archive.count("groups.localhost", "family", "muc") == 1
        assert JID.parse(ROOM) not in muc.rooms.live


async def test_a_room_handed_over_sends_what_it_posted_numbered_first(tmp_path: Path, backend: str) -> None:
    """A copy the room posted is numbered as it goes out, from the room's occupants: handed over
    before it went, it would go out unnumbered and could reach bob after a lost copy before it,
    a gap he would never learn of."""
    async with nodes(tmp_path, backend) as (a, b):
        _, bob = await _owner_and_member(a, b)
        full = JID.parse("bob@localhost/desk")
        numbered = _numbered(b, full)
        for n in range(3):
            a.cluster.post(full, element(MESSAGE, {"from": f"{ROOM}/alice", "to": str(full), "type": "groupchat",
                                                   "id": f"posted-{n}"}))
        await a.cluster.groups.hand_over()
        await until(bob, lambda el: el.tag == MESSAGE and el.get("id") == "posted-2")
        assert _numbered(b, full) == numbered + 3


def _numbered(server: Server, full: JID) -> int:
    """How many numbered copies of the room the session ``full`` on ``server`` has taken."""
    received = server.cluster.groups._received.get(full, {}).get(JID.parse(ROOM))
    return received.count if received is not None else 0



async def _arriving(server: Server) -> int:
    return server.cluster.groups._arriving


async def test_a_posted_copy_counts_as_posting_until_it_is_out(
        tmp_path: Path, backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """What a room sends without posting (the end of an archive query, after its results) queues
    behind what it posted while anything posted is still on its way; were a copy no longer
    counted once taken from the outbox, the end could overtake the last result on the bus, and
    the client would close its query before that result came."""
    async with nodes(tmp_path, backend) as (a, b):
        _, bob = await _owner_and_member(a, b)
        full = JID.parse("bob@localhost/desk")
        posting_once_out: list[bool] = []
        publish = a.cluster.bus.publish

        async def publish_and_look(node: str, message: NodeMessage) -> bool:
            published = await publish(node, message)
            posting_once_out.append(a.cluster.posting)
            return published

        monkeypatch.setattr(a.cluster.bus, "publish", publish_and_look)
        a.cluster.post(full, element(MESSAGE, {"from": f"{ROOM}/alice", "to": str(full), "type": "groupchat",
                                               "id": "posted"}))
        await a.cluster.sent()
        assert posting_once_out == [True]
        assert not a.cluster.posting
        await until(bob, lambda el: el.tag == MESSAGE and el.get("id") == "posted")

"""The admin socket of a started server, with in-memory clients connected."""

from __future__ import annotations

import asyncio
import json
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from schnack.server.admin import SOCKET_NAME, AdminError, request
from schnack.server.app import Server
from schnack.xmpp import ns
from schnack.xmpp.jid import JID

from ..harness import Client, add_user, connect, running
from .modules.groups import (
    MODULES,
    OWNER,
    PRESENCE,
    ROOM,
    SERVICE,
    USER,
    create,
    iq_reply,
    item,
    join,
    of_kind,
    online,
    private_group,
    statuses,
)  # fmt: skip


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    async with running(tmp_path, listen=True) as srv:
        yield srv


async def raw(server: Server, line: bytes) -> dict[str, Any]:
    """Send ``line`` as it is and read the one-line reply."""
    reader, writer = await asyncio.open_unix_connection(str(server.config.data_dir / SOCKET_NAME))
    try:
        writer.write(line)
        await writer.drain()
        reply: dict[str, Any] = json.loads(await asyncio.wait_for(reader.readline(), 10))
    finally:
        writer.close()
    return reply


def stream_error(client: Client) -> str | None:
    """The condition of the stream error the client got, if any."""
    for el in client.conn.out:
        if el.tag == f"{{{ns.STREAMS}}}error":
            return next(c.tag.rpartition("}")[2] for c in el if c.tag != f"{{{ns.STREAM_ERRORS}}}text")
    return None


async def gone(client: Client) -> None:
    """What the connection does once its stream is closed: report the transport lost."""
    assert client.conn.closed
    await client.stream.connection_lost()


def test_socket_is_for_the_owner_only(server: Server) -> None:
    path = server.config.data_dir / SOCKET_NAME
    mode = path.stat().st_mode
    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) == 0o600


async def test_sessions(server: Server) -> None:
    assert (await request(server.config.data_dir, "sessions"))["sessions"] == []
    desk = await connect(server, "alice@localhost/desk")
    await connect(server, "bob@localhost/phone")
    assert desk.stream.session is not None
    desk.stream.session.available = True
    desk.stream.session.priority = 5
    reply = await request(server.config.data_dir, "sessions")
    assert reply["ok"] is True
    by_jid = {s["jid"]: s for s in reply["sessions"]}
    assert set(by_jid) == {"alice@localhost/desk", "bob@localhost/phone"}
    assert by_jid["alice@localhost/desk"] == {
        "jid": "alice@localhost/desk", "peer": "127.0.0.1:40000", "secure": True, "available": True, "priority": 5,
    }
    assert by_jid["bob@localhost/phone"]["available"] is False


async def test_kick_a_bare_jid_closes_every_resource(server: Server) -> None:
    desk = await connect(server, "alice@localhost/desk")
    phone = await connect(server, "alice@localhost/phone")
    bob = await connect(server, "bob@localhost/desk")
    reply = await request(server.config.data_dir, "kick", jid="alice@localhost")
    assert reply == {"ok": True, "closed": 2}
    for client in (desk, phone):
        assert stream_error(client) == "policy-violation"
        await gone(client)
    assert stream_error(bob) is None and not bob.conn.closed
    sessions = (await request(server.config.data_dir, "sessions"))["sessions"]
    assert [s["jid"] for s in sessions] == ["bob@localhost/desk"]


async def test_delete_user_tells_contacts_and_closes_sessions(server: Server) -> None:
    await add_user(server, "alice")
    await add_user(server, "bob")
    alice = await connect(server, "alice@localhost/desk")
    bob = await connect(server, "bob@localhost/desk")
    await bob.send("<iq type='get' id='r1'><query xmlns='jabber:iq:roster'/></iq>")
    for first, second in ((alice, bob), (bob, alice)):
        await first.send(f"<presence type='subscribe' to='{second.jid.partition('/')[0]}'/>")
        await second.send(f"<presence type='subscribed' to='{first.jid.partition('/')[0]}'/>")
    bob.take()
    assert await request(server.config.data_dir, "delete-user", jid="Alice@localhost") == {"ok": True}
    assert stream_error(alice) == "not-authorized"
    await gone(alice)
    assert await server.storage.accounts.get("localhost", "alice") is None
    assert {el.get("type") for el in bob.take() if el.tag == f"{{{ns.CLIENT}}}presence"} == {"unsubscribe", "unsubscribed"}
    _, items = await server.storage.roster.get("localhost", "bob")
    assert items["alice@localhost"].subscription == "none"


async def test_delete_user_whose_data_a_module_failed_to_drop_still_closes_sessions(server: Server) -> None:
    """The account is gone once storage forgot it: its sessions end, as in-band removal and the
    other nodes of a cluster end theirs, and the answer says it is deleted."""
    async def failing(host: str, username: str) -> None:
        raise RuntimeError("the upload directory could not be read")

    server.hooks.add("user-deleted", failing)
    await add_user(server, "alice")
    alice = await connect(server, "alice@localhost/desk")
    assert await request(server.config.data_dir, "delete-user", jid="alice@localhost") == {"ok": True}
    assert await server.storage.accounts.get("localhost", "alice") is None
    assert stream_error(alice) == "not-authorized"
    await gone(alice)


async def test_delete_user_that_fails_says_so_and_keeps_sessions(server: Server) -> None:
    async def failing(host: str, username: str) -> None:
        raise RuntimeError("the roster could not be read")

    server.hooks.add("user-deleting", failing)
    await add_user(server, "alice")
    alice = await connect(server, "alice@localhost/desk")
    with pytest.raises(AdminError, match="not deleted"):
        await request(server.config.data_dir, "delete-user", jid="alice@localhost")
    assert await server.storage.accounts.get("localhost", "alice") is not None
    assert stream_error(alice) is None and not alice.conn.closed


@pytest.mark.parametrize(
    ("jid", "message"),
    [("alice@localhost", "no such account"), ("alice@other.test", "not an account of this server"),
     ("alice@localhost/desk", "not an account"), ("@@", "invalid JID")],
)
async def test_delete_user_refusals(server: Server, jid: str, message: str) -> None:
    with pytest.raises(AdminError) as err:
        await request(server.config.data_dir, "delete-user", jid=jid)
    assert message in str(err.value)


async def test_kick_a_full_jid_closes_that_resource_only(server: Server) -> None:
    desk = await connect(server, "alice@localhost/desk")
    phone = await connect(server, "alice@localhost/phone")
    reply = await request(server.config.data_dir, "kick", jid="Alice@LocalHost/phone")
    assert reply == {"ok": True, "closed": 1}
    assert stream_error(phone) == "policy-violation"
    assert stream_error(desk) is None
    await gone(phone)
    sessions = (await request(server.config.data_dir, "sessions"))["sessions"]
    assert [s["jid"] for s in sessions] == ["alice@localhost/desk"]


async def test_kick_nobody(server: Server) -> None:
    await connect(server, "alice@localhost/desk")
    assert await request(server.config.data_dir, "kick", jid="alice@localhost/laptop") == {"ok": True, "closed": 0}
    assert await request(server.config.data_dir, "kick", jid="carol@localhost") == {"ok": True, "closed": 0}


@pytest.mark.parametrize("jid", ["", "a@b@c", "alice@"])
async def test_kick_an_invalid_jid(server: Server, jid: str) -> None:
    with pytest.raises(AdminError, match="invalid JID"):
        await request(server.config.data_dir, "kick", jid=jid)


async def test_unknown_command(server: Server) -> None:
    with pytest.raises(AdminError, match="unknown command 'reboot'"):
        await request(server.config.data_dir, "reboot")
    assert await raw(server, b'{"jid": "alice@localhost"}\n') == {"ok": False, "error": "unknown command None"}


@pytest.mark.parametrize(
    "line",
    [b"not json\n", b"{\"command\": \n", b"[\"sessions\"]\n", b"\"sessions\"\n", b"\xff\xfe\n", b"\n",
     b"{\"command\": \"" + b"x" * 100_000 + b"\"}\n"],
    ids=["text", "truncated", "list", "string", "not-utf8", "empty", "oversized"],
)
async def test_bad_requests_get_an_error_and_the_server_goes_on(server: Server, line: bytes) -> None:
    reply = await raw(server, line)
    assert reply["ok"] is False
    assert reply["error"].startswith("bad request: ")
    assert (await request(server.config.data_dir, "sessions"))["ok"] is True


async def test_no_socket_once_stopped(tmp_path: Path) -> None:
    async with running(tmp_path, listen=True) as srv:
        data_dir = srv.config.data_dir
        assert (data_dir / SOCKET_NAME).exists()
    assert not (data_dir / SOCKET_NAME).exists()
    with pytest.raises(AdminError, match="no server is running"):
        await request(data_dir, "sessions")


async def test_a_stale_socket_file_is_replaced(tmp_path: Path) -> None:
    """A server that died without cleaning up leaves its socket; the next start takes the path over."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / SOCKET_NAME).write_text("stale")
    async with running(tmp_path, listen=True) as srv:
        assert (await request(srv.config.data_dir, "sessions"))["sessions"] == []


@pytest.fixture
async def groups(tmp_path: Path) -> AsyncIterator[Server]:
    async with running(tmp_path, listen=True, modules=MODULES) as srv:
        yield srv


async def rooms(server: Server, action: str, **args: Any) -> dict[str, Any]:
    return await request(server.config.data_dir, "rooms", action=action, **args)


async def test_rooms_are_listed_and_shown_with_occupants_and_affiliations(groups: Server) -> None:
    alice, bob = await private_group(groups, "alice", "bob")
    await online(groups, "carol@localhost/desk")
    await create(alice, f"quiet@{SERVICE}", nick="alice")
    listing = (await rooms(groups, "list"))["rooms"]
    assert listing == [
        {"room": ROOM, "name": "", "occupants": 2, "owners": ["alice@localhost"]},
        {"room": f"quiet@{SERVICE}", "name": "", "occupants": 1, "owners": ["alice@localhost"]},
    ]
    # The served domain or its group service; both name the same rooms.
    assert (await rooms(groups, "list", domain="localhost"))["rooms"] == listing
    assert (await rooms(groups, "list", domain=SERVICE))["rooms"] == listing
    for client in (alice, bob):
        await client.send(f"<presence type='unavailable' to='{ROOM}/x'/>")
    # A stored room nobody is in is read from storage, and not kept in memory for the look.
    assert (await rooms(groups, "list"))["rooms"][0] == {
        "room": ROOM, "name": "", "occupants": 0, "owners": ["alice@localhost"]}
    shown = await rooms(groups, "show", room="Family@Groups.LocalHost")
    assert shown["room"] == ROOM and shown["occupants"] == 0 and shown["locked"] is False
    assert shown["config"]["members_only"] is True and shown["config"]["password_protected"] is False
    assert shown["affiliations"] == [
        {"jid": "alice@localhost", "affiliation": "owner", "reason": None},
        {"jid": "bob@localhost", "affiliation": "member", "reason": None},
    ]
    assert groups.modules["muc"].rooms.live.get(JID.parse(ROOM)) is None  # type: ignore[attr-defined]


async def test_a_group_whose_owner_is_gone_gets_a_new_owner_from_the_operator(groups: Server) -> None:
    """The only owner's account is deleted with nobody to pass the group to: nobody could
    configure it. The operator names an owner, as an owner's §10.3 request would."""
    (alice,) = await private_group(groups, "alice")
    await alice.send(f"<presence type='unavailable' to='{ROOM}/alice'/>")
    assert await request(groups.config.data_dir, "delete-user", jid="alice@localhost") == {"ok": True}
    assert (await rooms(groups, "list"))["rooms"] == [{"room": ROOM, "name": "", "occupants": 0, "owners": []}]
    reply = await rooms(groups, "set-affiliation", room=ROOM, jid="Carol@localhost/phone", affiliation="owner")
    # As an owner's request does, the answer names new members whose OMEMO keys nobody can fetch.
    assert reply == {"ok": True, "room": ROOM, "jid": "carol@localhost", "affiliation": "owner",
                     "key_problems": {"carol@localhost": "no-keys"}}
    stored = await groups.storage.muc.affiliations(SERVICE, "family")
    assert {k: v.affiliation for k, v in stored.items()} == {"carol@localhost": "owner"}
    carol = await online(groups, "carol@localhost/phone")
    await carol.send(f"<iq type='get' id='form' to='{ROOM}'><query xmlns='{OWNER}'/></iq>")
    assert iq_reply(carol.take(), "form").get("type") == "result"


async def test_occupants_hear_of_the_operators_affiliation_changes(groups: Server) -> None:
    alice, bob, carol = await private_group(groups, "alice", "bob", "carol")
    await rooms(groups, "set-affiliation", room=ROOM, jid="bob@localhost", affiliation="admin", reason="helps out")
    (own,) = of_kind(bob.take(), PRESENCE)
    assert statuses(own) == {110}
    assert item(own).get("affiliation") == "admin" and item(own).get("role") == "moderator"
    assert item(own).findtext(f"{{{USER}}}reason") == "helps out"
    (seen,) = of_kind(alice.take(), PRESENCE)
    assert item(seen).get("affiliation") == "admin" and item(seen).get("jid") == "bob@localhost/phone"
    assert item(of_kind(carol.take(), PRESENCE)[0]).get("affiliation") == "admin"
    # §9.1: a ban removes the occupant (301), and the others see it go.
    await rooms(groups, "set-affiliation", room=ROOM, jid="carol@localhost", affiliation="outcast")
    (gone_self,) = of_kind(carol.take(), PRESENCE)
    assert gone_self.get("type") == "unavailable" and statuses(gone_self) == {301, 110}
    assert statuses(of_kind(alice.take(), PRESENCE)[0]) == {301}
    await carol.send(f"<presence to='{ROOM}/carol'><x xmlns='http://jabber.org/protocol/muc'/></presence>")
    refused = of_kind(carol.take(), PRESENCE)[-1]
    assert refused.get("type") == "error"
    stored = await groups.storage.muc.affiliations(SERVICE, "family")
    assert {k: v.affiliation for k, v in stored.items()} == {
        "alice@localhost": "owner", "bob@localhost": "admin", "carol@localhost": "outcast"}


async def test_the_operator_leaves_no_group_without_an_owner(groups: Server) -> None:
    """§10.6: as for an owner's own request, the last owner is not removed (conflict)."""
    await private_group(groups, "alice", "bob")
    with pytest.raises(AdminError, match=f"^{ROOM}: a group needs at least one owner$"):
        await rooms(groups, "set-affiliation", room=ROOM, jid="alice@localhost", affiliation="member")
    shown = await rooms(groups, "show", room=ROOM)
    assert [row["affiliation"] for row in shown["affiliations"]] == ["owner", "member"]


async def test_the_operator_destroys_a_group(groups: Server) -> None:
    alice, bob = await private_group(groups, "alice", "bob")
    await alice.send(f"<message to='{ROOM}' type='groupchat'><body>archived</body></message>")
    assert await groups.storage.archive.count(SERVICE, "family", "muc") == 1
    reply = await rooms(groups, "destroy", room=ROOM, reason="spam")
    assert reply == {"ok": True, "room": ROOM, "occupants": 2}
    for client in (alice, bob):
        (out,) = of_kind(client.take(), PRESENCE)
        assert out.get("type") == "unavailable"
        assert out.findtext(f"{{{USER}}}x/{{{USER}}}destroy/{{{USER}}}reason") == "spam"
    assert await groups.storage.muc.get_room(SERVICE, "family") is None
    assert await groups.storage.muc.affiliations(SERVICE, "family") == {}
    assert await groups.storage.archive.count(SERVICE, "family", "muc") == 0
    assert (await rooms(groups, "list"))["rooms"] == []
    with pytest.raises(AdminError, match=f"^no such group: {ROOM}$"):
        await rooms(groups, "show", room=ROOM)
    # The name is free again: whoever enters it creates a new group.
    entered = await join(bob, ROOM, "bob")
    assert 201 in statuses(of_kind(entered, PRESENCE)[-1])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"action": "show", "room": f"nobody@{SERVICE}"}, f"no such group: nobody@{SERVICE}"),
        ({"action": "destroy", "room": f"nobody@{SERVICE}"}, f"no such group: nobody@{SERVICE}"),
        ({"action": "set-affiliation", "room": f"nobody@{SERVICE}", "jid": "bob@localhost", "affiliation": "member"},
         f"no such group: nobody@{SERVICE}"),
        ({"action": "show", "room": "a@b@c"}, "invalid group address 'a@b@c'"),
        ({"action": "show", "room": SERVICE}, f"'{SERVICE}' is not a group address"),
        ({"action": "show", "room": f"{ROOM}/nick"}, f"'{ROOM}/nick' is not a group address (name@{SERVICE})"),
        ({"action": "show", "room": "family@localhost"}, f"localhost is no group service of this server (services: {SERVICE})"),
        ({"action": "set-affiliation", "room": ROOM, "jid": "a@b@c", "affiliation": "member"}, "invalid JID 'a@b@c'"),
        ({"action": "set-affiliation", "room": ROOM, "jid": "bob@localhost", "affiliation": "king"},
         "unknown affiliation 'king'"),
        ({"action": "destroy", "room": ROOM, "reason": 5}, "the reason must be text"),
        ({"action": "list", "domain": "other.test"}, "this server has no group service for other.test"),
        ({"action": "reboot"}, "unknown rooms action 'reboot'"),
    ],
)
async def test_room_refusals(groups: Server, args: dict[str, Any], message: str) -> None:
    await private_group(groups, "alice")
    with pytest.raises(AdminError) as err:
        await request(groups.config.data_dir, "rooms", **args)
    assert str(err.value).startswith(message)
    assert (await rooms(groups, "show", room=ROOM))["affiliations"] == [
        {"jid": "alice@localhost", "affiliation": "owner", "reason": None}]

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

from ..harness import Client, add_user, connect, running


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

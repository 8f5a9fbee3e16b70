"""Account deletion cut short (the process stopped part-way) is finished by whoever comes next:
a retry, the server starting again, a registration or a login under the name."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from schnack.server.app import Server
from schnack.server.modules.upload import STORE, Record

from ..harness import running
from .modules.groups import MODULES as GROUPS
from .modules.groups import ROOM, SERVICE, create, online, set_affiliation
from .modules.test_register import can_login, guest
from .modules.test_upload import alice, ask, request, slot_of

MODULES = {"enable": ["register"], "upload": {"public_url": "https://files.example.org/up"}, **GROUPS}


class Killed(BaseException):
    """The process stopping where it stands: no handler of errors runs."""


async def killed(_host: str, _username: str) -> None:
    raise Killed


@contextlib.asynccontextmanager
async def running_server(tmp_path: Path) -> AsyncIterator[Server]:
    """A server with registration and uploads; started again on ``tmp_path``, it keeps its data."""
    async with running(tmp_path, modules=MODULES) as server:
        yield server


async def uploaders(server: Server) -> set[str]:
    """The owners of the upload slots and files the server keeps."""
    return {Record.from_json(data).owner for data in (await server.storage.maps.items("localhost", "", STORE)).values()}


async def cut_short(server: Server, event: str) -> None:
    """Alice, who has an upload, deletes her account, and the process stops at ``event``."""
    slot_of(await ask(await alice(server), request()))
    server.hooks.add(event, killed, priority=100)
    with pytest.raises(Killed):
        await server.delete_account("localhost", "alice")
    server.hooks.remove(event, killed)
    assert await uploaders(server) == {"alice"}


async def affiliated(server: Server) -> dict[str, str]:
    """Who is affiliated with the group, and how."""
    return {jid: record.affiliation for jid, record in (await server.storage.muc.affiliations(SERVICE, "family")).items()}


async def test_a_restart_finishes_a_deletion_cut_short(tmp_path: Path) -> None:
    async with running_server(tmp_path) as server:
        bob = await online(server, "bob@localhost/desk")
        await create(bob, nick="bob")
        assert (await set_affiliation(bob, "alice@localhost", "member")).get("type") == "result"
        await bob.send(f"<presence to='{ROOM}/bob' type='unavailable'/>")
        await cut_short(server, "user-deleted")
        assert await server.storage.accounts.get("localhost", "alice") is None
        assert await affiliated(server) == {"alice@localhost": "member", "bob@localhost": "owner"}
    async with running_server(tmp_path) as server:
        assert await uploaders(server) == set()
        assert await affiliated(server) == {"bob@localhost": "owner"}


async def test_a_retry_finishes_it(tmp_path: Path) -> None:
    async with running_server(tmp_path) as server:
        await cut_short(server, "user-deleted")
        assert await server.delete_account("localhost", "alice")
        assert await uploaders(server) == set()
        assert not await server.delete_account("localhost", "alice")


async def test_the_name_registered_again_starts_empty(tmp_path: Path) -> None:
    async with running_server(tmp_path) as server:
        await cut_short(server, "user-deleted")
        reply = await (await guest(server)).register("alice", "correct horse")
        assert reply.get("type") == "result"
        assert await uploaders(server) == set()
        assert await can_login(server, "alice", "correct horse")


async def test_a_login_finishes_a_deletion_cut_short_before_storage(tmp_path: Path) -> None:
    async with running_server(tmp_path) as server:
        await cut_short(server, "user-deleting")
        assert await server.storage.accounts.get("localhost", "alice") is not None
        assert not await can_login(server, "alice", "secret")
        assert await server.storage.accounts.get("localhost", "alice") is None
        assert await uploaders(server) == set()


async def test_a_deletion_that_fails_before_storage_is_not_left_pending(tmp_path: Path) -> None:
    async def failing(_host: str, _username: str) -> None:
        raise RuntimeError("the roster could not be read")

    async with running_server(tmp_path) as server:
        slot_of(await ask(await alice(server), request()))
        server.hooks.add("user-deleting", failing, priority=100)
        with pytest.raises(RuntimeError):
            await server.delete_account("localhost", "alice")
        server.hooks.remove("user-deleting", failing)
        assert await can_login(server, "alice", "secret")
        assert await uploaders(server) == {"alice"}

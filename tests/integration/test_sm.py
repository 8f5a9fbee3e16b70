"""XEP-0198 on real sockets with slixmpp: the receiver's connection dies in the middle of a burst.

With resumption every message arrives exactly once and in order; without it, every message the
client did not acknowledge reaches it from offline storage at its next login.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from schnack.server.app import Server
from schnack.server.sessions import Session
from schnack.xmpp import ns

from ..harness import add_user, running
from .slix import PASSWORD, SlixClient

pytestmark = pytest.mark.asyncio

BURST = 1000
# The receiver's connection is cut once it has handled this many messages.
CUT_AT = 300
SENDER = "alice@localhost/desk"
RECEIVER = "bob@localhost/phone"
GUARD = 90


async def serve(tmp_path: Path, **sm: Any) -> AsyncIterator[Server]:
    async with running(tmp_path, listen=True, modules={"e2e": {"policy": "optional"}, "sm": sm}) as server:
        await add_user(server, "alice", PASSWORD)
        await add_user(server, "bob", PASSWORD)
        yield server


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    async for srv in serve(tmp_path):
        yield srv


@pytest.fixture
async def short_hibernation(tmp_path: Path) -> AsyncIterator[Server]:
    async for srv in serve(tmp_path, resume_timeout=1):
        yield srv


@pytest.fixture
async def clients() -> AsyncIterator[list[SlixClient]]:
    """Clients to disconnect when the test ends."""
    made: list[SlixClient] = []
    yield made
    for client in made:
        await client.stop()


class Receiver:
    """A slixmpp client with stream management that records the id of every message it handles
    and cuts its own TCP connection, without closing the stream, after ``cut_at`` of them."""

    def __init__(self, server: Server, clients: list[SlixClient], cut_at: int) -> None:
        self.client = SlixClient(server, RECEIVER)
        clients.append(self.client)
        self.xmpp = self.client.xmpp
        self.xmpp.register_plugin("xep_0198")
        self.ids: list[str] = []
        self.cut_at = cut_at
        self.complete = asyncio.Event()
        self.resumed = asyncio.Event()
        self.xmpp.add_event_handler("message", self._message)
        self.xmpp.add_event_handler("session_resumed", lambda _: self.resumed.set())

    def _message(self, msg: Any) -> None:
        self.ids.append(msg["id"])
        if len(self.ids) == self.cut_at:
            # What a phone losing its network looks like: no </stream:stream>, no TLS close_notify.
            transport = self.xmpp.transport
            assert transport is not None
            transport.abort()
        if len(self.ids) >= BURST:
            self.complete.set()

    async def start(self) -> None:
        assert await self.client.start()

    async def cut(self) -> None:
        async with asyncio.timeout(GUARD):
            await self.client.disconnected.wait()


async def burst(sender: SlixClient) -> list[str]:
    ids = [f"m{i:04d}" for i in range(BURST)]
    for id in ids:
        sender.send(RECEIVER, f"message {id}", id)
    return ids


async def stored(server: Server) -> int:
    return await server.storage.archive.count("localhost", "bob", "offline")


async def test_resumed_session_gets_every_message_once_in_order(server: Server, clients: list[SlixClient]) -> None:
    alice = SlixClient(server, SENDER)
    clients.append(alice)
    assert await alice.start()
    bob = Receiver(server, clients, cut_at=CUT_AT)
    await bob.start()
    ids = await burst(alice)
    await bob.cut()
    assert len(bob.ids) >= CUT_AT
    host, port = server.bound["c2s"][0]
    bob.xmpp.connect(host, port)
    async with asyncio.timeout(GUARD):
        await bob.resumed.wait()
        await bob.complete.wait()
    await alice.sync()
    await bob.client.sync()
    assert bob.ids == ids
    assert await stored(server) == 0


async def test_without_resumption_offline_storage_has_every_message_once(
    short_hibernation: Server, clients: list[SlixClient]
) -> None:
    server = short_hibernation
    alice = SlixClient(server, SENDER)
    clients.append(alice)
    assert await alice.start()
    bob = Receiver(server, clients, cut_at=CUT_AT)
    # This phone never answers the server's requests for acks: nothing it got counts as delivered.
    bob.xmpp.remove_handler("Stream Management Request Ack")
    await bob.start()
    ended = asyncio.Event()

    async def session_closed(session: Session) -> None:
        if str(session.jid) == RECEIVER:
            ended.set()

    # Runs after the stream management module handled the end of the session.
    server.hooks.add("session-closed", session_closed, priority=-1000)
    ids = await burst(alice)
    await bob.cut()
    # The session hibernates, is not resumed, and ends: its queue goes to offline storage,
    # and so does what is sent after it ended.
    async with asyncio.timeout(GUARD):
        await ended.wait()
    await alice.sync()
    assert await stored(server) == BURST
    later = SlixClient(server, RECEIVER)
    clients.append(later)
    assert await later.start()
    later.xmpp.send_presence()
    await later.sync()
    got = []
    while not later.messages.empty():
        got.append(later.messages.get_nowait())
    assert [msg["id"] for msg in got] == ids
    assert all(msg.xml.find(f"{{{ns.DELAY}}}delay") is not None for msg in got)

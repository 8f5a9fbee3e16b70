"""XEP-0357 §7 in a cluster: one message wakes a device once, whichever nodes decide to wake it.

Two nodes on the local PostgreSQL and Redis, on real sockets, each with the app server (a slixmpp
component) connected to it, as an app server serving a cluster is. bob's phone enabled push and
left; two other devices of bob's hibernate, one on each node, neither with push enabled. The
phone's registration is held by no session, so for a message to bob both nodes, each with a
hibernating session that got the message, choose it (it may be the device of either session):
the phone must be woken once, not once per node. And every node decides alike: when the phone
is back and online under another resource on one node, the other node, whose session
hibernates, sees it there and wakes nobody.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from xml.etree.ElementTree import Element

from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from schnack.server.app import Server
from schnack.server.cluster import RedisBus
from schnack.server.component import ACCEPT
from schnack.server.modules.push import Push
from schnack.server.modules.sm import HIBERNATING_STANZA
from schnack.server.sessions import Session
from schnack.xmpp.xml import element, qname

from ..conftest import require_service
from ..harness import add_user, make_config
from ..server.cluster.conftest import Cluster, redis_available
from ..server.storage.conftest import postgres_schema
from .slix import PASSWORD, SlixClient
from .test_push import (
    APP,
    GUARD,
    SECRET,
    TEXT,
    AppServer,
    alice_says,
    check,
    connection_lost,
    peers,
    phone_left,
    wait,
)

__all__ = ["peers"]  # the fixture that stops the slixmpp peers

MARK = "all-sent"


class LinkedAppServer(AppServer):
    """The app server on one node's component listener; it also notes the test's mark, which
    comes after everything the node sent it before."""

    def __init__(self, server: Server) -> None:
        super().__init__(server)
        self.marked = asyncio.Event()
        self.xmpp.register_handler(
            Callback("mark", MatchXPath(f"{{{ACCEPT}}}message[@id='{MARK}']"), lambda _: self.marked.set())
        )

    async def marked_after_all(self, server: Server) -> None:
        """Return once everything ``server`` sent this app server so far has arrived."""
        await server.router.send(element(qname(ACCEPT, "message"), {"id": MARK, "from": "localhost", "to": APP}))
        async with asyncio.timeout(GUARD):
            await self.marked.wait()


@contextlib.asynccontextmanager
async def two_nodes(tmp_path: Path) -> AsyncIterator[tuple[Server, Server]]:
    cluster = Cluster("redis")
    reason = await redis_available(cluster.url)
    require_service(reason is None, f"Redis not reachable at {cluster.url}: {reason}")
    async with postgres_schema() as (storage_url, _, _):
        servers = [
            Server(make_config(tmp_path / name, storage={"url": storage_url}, modules={"e2e": {"policy": "optional"}},
                               components={APP: {"secret": SECRET}}, listen={"component": ["127.0.0.1:0"]}),
                   bus=RedisBus(cluster.url, name, prefix=cluster.prefix, heartbeat_interval=0.2, node_ttl=10.0))
            for name in ("a", "b")
        ]  # fmt: skip
        started: list[Server] = []
        try:
            for server in servers:
                await server.start()
                started.append(server)
            await add_user(servers[0], "alice", PASSWORD)
            await add_user(servers[0], "bob", PASSWORD)
            yield servers[0], servers[1]
        finally:
            for server in reversed(started):
                await server.stop()
            await cluster.close()


def handled(server: Server) -> asyncio.Event:
    """Set once a stanza queued for a hibernating session on ``server`` went through every
    handler (push starts its notification then)."""
    done = asyncio.Event()

    async def queued(_session: Session, _el: Element) -> None:
        done.set()

    server.hooks.add(HIBERNATING_STANZA, queued, priority=-1000)
    return done


async def hibernating(server: Server, jid: str, peers: list[Any]) -> None:
    """A device of bob's on ``server``, with stream management and available, that loses its
    connection: its session hibernates."""
    device = SlixClient(server, jid)
    peers.append(device)
    device.xmpp.register_plugin("xep_0198")
    assert await device.start()
    device.xmpp.send_presence()
    await device.sync()
    lost = connection_lost(server, jid)
    transport = device.xmpp.transport
    assert transport is not None
    transport.abort()
    await wait(lost)


async def app_servers(a: Server, b: Server, peers: list[Any]) -> list[LinkedAppServer]:
    """The app server, connected to both nodes."""
    apps = [LinkedAppServer(a), LinkedAppServer(b)]
    for app in apps:
        peers.append(app)
        await app.start()
    return apps


async def publishes(apps: list[LinkedAppServer], servers: tuple[Server, Server],
                    queued: list[asyncio.Event]) -> list[int]:
    """How many notifications each link brought, once the stanzas ``queued`` for hibernating
    sessions went through their handlers and every notification they started arrived."""
    for done in queued:
        await wait(done)
    for server in servers:
        push = server.modules["push"]
        assert isinstance(push, Push)
        await push.notifications_sent()
    for app, server in zip(apps, servers, strict=True):
        await app.marked_after_all(server)
    return [app.publishes.qsize() for app in apps]


async def test_a_device_no_session_holds_is_woken_once_by_two_nodes(tmp_path: Path, peers: list[Any]) -> None:
    async with two_nodes(tmp_path) as (a, b):
        apps = await app_servers(a, b, peers)
        await phone_left(a, peers)
        await hibernating(a, "bob@localhost/phone-2", peers)
        await hibernating(b, "bob@localhost/tablet", peers)
        queued = [handled(a), handled(b)]
        await alice_says(b, peers, TEXT)
        assert await publishes(apps, (a, b), queued) in ([1, 0], [0, 1])
        (app,) = [app for app in apps if not app.publishes.empty()]
        check(*await app.next())


async def test_a_device_back_and_online_on_another_node_is_not_woken(tmp_path: Path, peers: list[Any]) -> None:
    """As on one node: bob's phone came back under another resource on node b without enabling
    push again, and is online there; his tablet hibernates on node a. The phone's registration,
    held by no session, may be that online session's: node a wakes nobody for the tablet."""
    async with two_nodes(tmp_path) as (a, b):
        apps = await app_servers(a, b, peers)
        await phone_left(a, peers)
        back = SlixClient(b, "bob@localhost/phone-2")
        peers.append(back)
        assert await back.start()
        back.xmpp.send_presence()
        await back.sync()
        await hibernating(a, "bob@localhost/tablet", peers)
        queued = [handled(a)]
        await alice_says(b, peers, TEXT)
        async with asyncio.timeout(GUARD):
            assert (await back.messages.get())["body"] == TEXT
        assert await publishes(apps, (a, b), queued) == [0, 0]

"""Draining a node (cluster/drain.py): its clients are sent to another live node with
see-other-host (RFC 6120 §4.9.3.19), what they had not acknowledged goes to offline storage, and
the node leaves the directory. Two in-process nodes on one hub and one SQLite file, listening on
real sockets, with a raw client."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from schnack.server.app import Server
from schnack.server.cluster import LocalBus
from schnack.server.cluster.drain import SeeOtherHost
from schnack.server.cluster.local import LocalHub
from schnack.server.config import ConfigError, build
from schnack.xmpp import ns
from schnack.xmpp.payloads.sm import ACK, ENABLED, REQUEST
from schnack.xmpp.payloads.sm import NS as SM
from schnack.xmpp.xml import qname

from ...harness import add_user, make_config
from ...integration.wire import Wire

PASSWORD = "secret"


@contextlib.asynccontextmanager
async def two_nodes(tmp_path: Path, *, addresses: tuple[str, str]) -> AsyncIterator[tuple[Server, Server]]:
    hub = LocalHub()
    shared = {"url": f"sqlite:///{tmp_path / 'shared.db'}"}
    servers = [
        Server(make_config(tmp_path / name, storage=shared, modules={"e2e": {"policy": "optional"}}),
               bus=LocalBus(name, hub=hub, heartbeat_interval=0.1, node_ttl=0.6, address=address))
        for name, address in zip(("a", "b"), addresses, strict=True)
    ]
    started: list[Server] = []
    try:
        for server in servers:
            await server.start(listen=True)
            started.append(server)
        yield servers[0], servers[1]
    finally:
        for server in reversed(started):
            await server.stop()


async def logged_in(server: Server, user: str) -> Wire:
    wire = await Wire.connect(server)
    await wire.open()
    await wire.login(user, PASSWORD, await wire.starttls())
    await wire.bind("phone")
    return wire


async def test_a_drained_node_sends_its_clients_to_another_node(tmp_path: Path) -> None:
    async with two_nodes(tmp_path, addresses=("a.example:5222", "b.example:5222")) as (a, b):
        for user in ("alice", "bob"):
            await add_user(a, user, PASSWORD)
        alice = await logged_in(a, "alice")
        alice.send(f"<enable xmlns='{SM}' resume='true'/>")
        enabled = await alice.next()
        assert enabled is not None and enabled.tag == ENABLED
        # Offline bob's message waits in alice's queue, unacknowledged, when the node drains.
        bob = await logged_in(a, "bob")
        bob.send("<presence/>")
        bob.send("<message to='alice@localhost/phone' type='chat' id='late'><body>late</body></message>")
        while (el := await alice.next()) is not None and el.tag != qname(ns.CLIENT, "message"):
            pass
        assert el is not None and el.get("id") == "late"

        done = await a.drain()

        assert (done.redirected, done.shut_down, done.targets) == (2, 0, ["b.example:5222"])
        error = None
        while (el := await alice.next()) is not None:
            if el.tag not in (ACK, REQUEST):
                error = el
        assert error is not None and error.tag == qname(ns.STREAMS, "error")
        assert error.findtext(qname(ns.STREAM_ERRORS, "see-other-host")) == "b.example:5222"
        assert set(await b.cluster.bus.nodes()) == {"b"}
        assert not list(a.sessions)
        # What alice had not acknowledged waits for her in offline storage.
        assert await b.storage.archive.count("localhost", "alice", "offline") == 1
        host, port = a.bound["c2s"][0]
        with pytest.raises(OSError):
            await asyncio.open_connection(host, port)


async def test_with_no_other_node_clients_hear_the_service_shuts_down(tmp_path: Path) -> None:
    async with two_nodes(tmp_path, addresses=("a.example:5222", "")) as (a, _b):
        await add_user(a, "alice", PASSWORD)
        alice = await logged_in(a, "alice")
        done = await a.drain()
        assert (done.redirected, done.shut_down, done.targets) == (0, 1, [])
        assert await alice.stream_error() == "system-shutdown"


def test_see_other_host_names_the_address_in_the_condition() -> None:
    el = SeeOtherHost("[2001:db8::1]:5222").to_xml()
    assert el.findtext(qname(ns.STREAM_ERRORS, "see-other-host")) == "[2001:db8::1]:5222"


def test_public_address_must_be_host_and_port(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cluster\.public_address"):
        build({"cluster": {"public_address": "node-a.example"}}, tmp_path)
    config = build({"cluster": {"public_address": "node-a.example:5222"}}, tmp_path)
    assert config.cluster.public_address == "node-a.example:5222"

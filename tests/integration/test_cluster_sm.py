"""Stream management in a cluster (XEP-0198 §5): a session lives on its node; another node asked
to resume it answers ``<failed/>`` with item-not-found and the ``h`` the session ended with, from
the records the nodes share in Redis, so the client sends again only what was not handled.

Two ``schnack serve`` processes on the local PostgreSQL and Redis, and raw clients. When node a is
drained, its client is sent to node b with ``see-other-host``, where resuming fails cleanly and
what it sent waits in offline storage for its recipient. When a client's connection to node a
dies and it comes back on node b while a still holds the session, a ends it first: b answers with
its final ``h``, and what a had not delivered is in offline storage for the new session.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import cast
from xml.etree.ElementTree import Element

from schnack.server import admin as admin_channel
from schnack.xmpp import ns
from schnack.xmpp.payloads.sm import ACK, ENABLED, FAILED
from schnack.xmpp.payloads.sm import NS as SM
from schnack.xmpp.xml import qname

from ..conftest import require_service
from ..server.cluster.conftest import REDIS_URL, eventually, redis_available
from ..server.storage.conftest import postgres_schema
from .cluster_harness import PASSWORD, Node, add_accounts, clear_prefix
from .wire import Wire

MESSAGE = qname(ns.CLIENT, "message")


@contextlib.asynccontextmanager
async def two_nodes(tmp_path: Path) -> AsyncIterator[tuple[Node, Node]]:
    """Nodes a and b, started, with the accounts alice, bob and mallory."""
    reason = await redis_available(REDIS_URL)
    require_service(reason is None, f"Redis not reachable at {REDIS_URL}: {reason}")
    prefix = f"schnack-sm-{secrets.token_hex(4)}:"
    async with postgres_schema() as (storage_url, _, _):
        await add_accounts(storage_url, ["alice", "bob", "mallory"])
        a, b = (Node(tmp_path, name, storage_url, REDIS_URL, prefix) for name in ("a", "b"))
        try:
            await a.start()
            await b.start()
            yield a, b
        finally:
            await a.stop()
            await b.stop()
            await clear_prefix(REDIS_URL, prefix)


async def login(node: Node, user: str) -> Wire:
    """A raw connection to ``node``, secured and authenticated, not bound."""
    wire = await Wire.connect(node)  # type: ignore[arg-type]
    await wire.open()
    await wire.login(user, PASSWORD, await wire.starttls())
    return wire


async def resumable(node: Node, user: str) -> tuple[Wire, str]:
    """A bound connection with resumable stream management; its SM-ID."""
    wire = await login(node, user)
    await wire.bind("phone")
    wire.send(f"<enable xmlns='{SM}' resume='true'/>")
    enabled = await wire.next()
    assert enabled is not None and enabled.tag == ENABLED, enabled
    # §5: come back to this node to resume.
    assert enabled.get("location") == f"127.0.0.1:{node.port}"
    return wire, enabled.get("id", "")


async def send_acknowledged(wire: Wire, to: str, ids: list[str], *, handled: int | None = None) -> None:
    """Send messages and wait for the ack, which must count ``handled`` stanzas (default: these)."""
    for message_id in ids:
        wire.send(f"<message to='{to}' type='chat' id='{message_id}'><body>{message_id}</body></message>")
    wire.send(f"<r xmlns='{SM}'/>")
    while (ack := await wire.next()) is not None and ack.tag != ACK:
        pass
    assert ack is not None and ack.get("h") == str(len(ids) if handled is None else handled), ack


async def next_message(wire: Wire) -> Element:
    while (el := await wire.next()) is not None:
        if el.tag == MESSAGE:
            return el
    raise AssertionError("the stream closed before a message came")


async def resume_fails(node: Node, user: str, previd: str) -> Element:
    """Ask ``node`` to resume ``previd`` as ``user``: the ``<failed/>`` it answers."""
    wire = await login(node, user)
    wire.send(f"<resume xmlns='{SM}' previd='{previd}' h='0'/>")
    failed = await wire.next()
    assert failed is not None and failed.tag == FAILED, failed
    assert failed.find(qname(ns.STANZA_ERRORS, "item-not-found")) is not None
    return failed


async def messages_at_login(node: Node, user: str, count: int) -> list[str | None]:
    """Bind on ``node`` and announce presence: the ids of the first ``count`` messages delivered."""
    wire = await login(node, user)
    await wire.bind("laptop")
    wire.send("<presence/>")
    return [(await next_message(wire)).get("id") for _ in range(count)]


async def test_a_drained_node_s_session_is_refused_elsewhere_with_its_h(tmp_path: Path) -> None:
    async with two_nodes(tmp_path) as (a, b):
        alice, previd = await resumable(a, "alice")
        sent = ["m0", "m1", "m2"]
        await send_acknowledged(alice, "bob@localhost", sent)

        reply = await a.drain(cli=False)
        assert reply["targets"] == [f"127.0.0.1:{b.port}"]
        error = await alice.next()
        assert error is not None and error.tag == qname(ns.STREAMS, "error")
        # RFC 6120 §4.9.3.19: the condition element names where to go.
        assert error.findtext(qname(ns.STREAM_ERRORS, "see-other-host")) == f"127.0.0.1:{b.port}"

        # Another account learns nothing about the session; its own account learns its h.
        assert (await resume_fails(b, "mallory", previd)).get("h") is None
        assert (await resume_fails(b, "alice", previd)).get("h") == str(len(sent))
        # Nothing was lost: bob, offline all along, finds alice's messages on node b.
        assert await messages_at_login(b, "bob", len(sent)) == sent


async def test_a_session_held_by_a_live_node_ends_there_when_resumed_elsewhere(tmp_path: Path) -> None:
    async with two_nodes(tmp_path) as (a, b):
        alice, previd = await resumable(a, "alice")
        alice.send("<presence/>")
        await send_acknowledged(alice, "bob@localhost", ["hello"], handled=2)
        bob = await login(b, "bob")
        await bob.bind("desk")
        bob.send("<message to='alice@localhost/phone' type='chat' id='unacked'><body>hi</body></message>")
        # alice gets it and dies before acknowledging it: node a keeps her session hibernating.
        assert (await next_message(alice)).get("id") == "unacked"
        alice.writer.transport.abort()

        # Back on node b: a ends the session, and b knows how far it got.
        assert (await resume_fails(b, "alice", previd)).get("h") == "2"

        async def on_a() -> list[str]:
            reply = await admin_channel.request(a.config.parent / "state-a", "sessions")
            return [row["jid"] for row in reply["sessions"]]

        await eventually(on_a, lambda jids: "alice@localhost/phone" not in jids)
        # What a had not delivered waited in offline storage for the new session.
        assert await messages_at_login(b, "alice", 1) == ["unacked"]


async def test_a_session_whose_connection_is_still_open_ends_at_once_when_resumed_elsewhere(tmp_path: Path) -> None:
    """The client comes back on node b while its connection to node a is still open (a does not
    know it is dead): a ends the session at once, and b answers with its final h."""
    async with two_nodes(tmp_path) as (a, b):
        alice, previd = await resumable(a, "alice")
        alice.send("<presence/>")
        await send_acknowledged(alice, "bob@localhost", ["hello"], handled=2)
        # What a phone that lost its network looks like to node a: nothing more comes back, not
        # the end of the stream, not TLS's close_notify.
        # uvloop's transports are none of asyncio's classes, but read the same way.
        transport = cast(asyncio.ReadTransport, alice.writer.transport)
        transport.pause_reading()
        assert (await resume_fails(b, "alice", previd)).get("h") == "2"

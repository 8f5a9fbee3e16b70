"""XEP-0198 stream management across nodes: what sessions on two nodes did not acknowledge
reaches offline storage once, on the in-process hub and on Redis."""

from __future__ import annotations

from pathlib import Path

from schnack.server.app import Server

from ...harness import Client
from ..modules.contacts import presence
from ..modules.messaging import chat, login
from ..modules.test_sm import all_ended, bodies, comes_online, sm_login
from .test_node_presence import backend, nodes

__all__ = ["backend"]  # the fixture that runs each test on both bus backends


async def shared_then_unacknowledged(a: Server, b: Server) -> Client:
    """Alice (on ``a``) sends a message to bob's bare JID; his phone on ``a`` and his tablet on
    ``b`` get it and end without acknowledging it. Returns alice."""
    alice = await login(a, "alice@localhost/phone")
    phone, _ = await sm_login(a, "bob@localhost/phone")
    tablet, _ = await sm_login(b, "bob@localhost/tablet")
    for client in (phone, tablet):
        await client.send(presence())
    await alice.send(chat("bob@localhost", "shared", id="m1"))
    assert bodies(phone.take()) == ["shared"]
    assert bodies(tablet.take()) == ["shared"]
    await all_ended((a, phone), (b, tablet))
    return alice


async def test_two_dying_resources_on_two_nodes_store_a_shared_message_once(tmp_path: Path, backend: str) -> None:
    """RFC 6121 §8.5.2.1.1 with XEP-0198 §4: a message to bob's bare JID reached his phone on one
    node and his tablet on the other, and neither acknowledged it; each node hands it to offline
    storage when its session ends, and his desk gets it once."""
    async with nodes(tmp_path, backend, modules={"sm": {"resume_timeout": 1}}) as (a, b):
        await shared_then_unacknowledged(a, b)
        assert bodies(await comes_online(a, "bob@localhost/desk")) == ["shared"]


async def test_a_shared_message_that_fills_the_mailbox_is_not_bounced(tmp_path: Path, backend: str) -> None:
    """XEP-0160 §2 with XEP-0198 §4: as above, and the message takes the last place in bob's
    mailbox; the copy the second node hands over is the one stored already, not one too many,
    so alice gets no error for a message that was kept."""
    modules = {"sm": {"resume_timeout": 1}, "offline": {"max_messages": 1}}
    async with nodes(tmp_path, backend, modules=modules) as (a, b):
        alice = await shared_then_unacknowledged(a, b)
        assert await a.storage.archive.count("localhost", "bob", "offline") == 1
        assert bodies(await comes_online(a, "bob@localhost/desk")) == ["shared"]
        assert alice.take() == []

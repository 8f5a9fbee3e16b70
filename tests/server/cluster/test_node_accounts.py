"""Deleting an account in a cluster: the nodes that serve its other sessions end them
(XEP-0077 §3.2), on the in-process hub and on Redis."""

from __future__ import annotations

from pathlib import Path

from schnack.server.app import ACCOUNTS
from schnack.xmpp import ns

from ...harness import Client
from .conftest import eventually
from .test_node_presence import backend, nodes, online

__all__ = ["backend"]  # the fixture that runs each test on both bus backends


def ended_with(client: Client) -> str | None:
    """The condition of the stream error the client got, if any."""
    for el in client.take():
        if el.tag == f"{{{ns.STREAMS}}}error":
            return next(c.tag.rpartition("}")[2] for c in el if c.tag != f"{{{ns.STREAM_ERRORS}}}text")
    return None


async def test_an_account_deleted_through_one_node_loses_its_sessions_on_the_others(
    tmp_path: Path, backend: str
) -> None:
    async with nodes(tmp_path, backend) as (a, b):
        await online(a, "alice@localhost/phone")
        laptop = await online(b, "alice@localhost/laptop")
        assert await a.delete_account("localhost", "alice")
        a.end_account_sessions("localhost", "alice")
        await eventually(lambda: _ended(laptop), lambda condition: condition == "not-authorized", timeout=5.0)
        assert laptop.conn.closed


async def test_an_account_made_anew_meanwhile_keeps_its_sessions(tmp_path: Path, backend: str) -> None:
    """The announcement of a deletion that another node hears late does not end the sessions
    of a new account of that name."""
    async with nodes(tmp_path, backend) as (a, b):
        desk = await online(b, "bob@localhost/desk")
        laptop = await online(b, "alice@localhost/laptop")
        # Node b hears these in this order: news of a deletion of bob's account before the
        # account he is logged in with was made, then alice's deletion.
        await a.cluster.bus.announce(ACCOUNTS, "bob@localhost")
        assert await a.delete_account("localhost", "alice")
        await eventually(lambda: _ended(laptop), lambda condition: condition == "not-authorized", timeout=5.0)
        assert ended_with(desk) is None and not desk.conn.closed


async def _ended(client: Client) -> str | None:
    return ended_with(client)

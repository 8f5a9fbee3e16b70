"""XEP-0313 archive preferences across nodes: a node that keeps an account's preferences in
memory drops them when another node changes them or deletes the account (ClusterBus.announce),
on the in-process hub and on Redis."""

from __future__ import annotations

from pathlib import Path

from schnack.server.modules.mam import STORE

from ...harness import add_user
from ..modules.messaging import chat
from .conftest import eventually
from .test_node_presence import backend, nodes, online

__all__ = ["backend"]  # the fixture that runs each test on both bus backends

MAM = "urn:xmpp:mam:2"


async def test_preferences_set_through_one_node_hold_on_the_others(tmp_path: Path, backend: str) -> None:
    """XEP-0441 §2.1: once alice's phone was told her new preferences apply, her laptop, on
    another node that had read the old ones, archives by the new ones within moments."""
    async with nodes(tmp_path, backend) as (a, b):
        phone = await online(a, "alice@localhost/phone")
        laptop = await online(b, "alice@localhost/laptop")
        await online(a, "bob@localhost/pc")
        # Node b reads alice's preferences (the default: always) for her laptop's message.
        await laptop.send(chat("bob@localhost", "kept", id="m0"))
        archive = a.storage.archive
        assert await archive.count("localhost", "alice", STORE) == 1
        await phone.send(f"<iq type='set' id='p1'><prefs xmlns='{MAM}' default='never'/></iq>")
        assert phone.take()[-1].get("type") == "result"
        sent = 0

        async def archived_again() -> bool:
            nonlocal sent
            sent += 1
            before = await archive.count("localhost", "alice", STORE)
            await laptop.send(chat("bob@localhost", "not kept", id=f"m{sent}"))
            return await archive.count("localhost", "alice", STORE) > before

        await eventually(archived_again, lambda archived: not archived, timeout=5.0)


async def test_an_account_made_anew_after_one_deleted_elsewhere_has_the_default_preferences(
    tmp_path: Path, backend: str
) -> None:
    """The preferences of a deleted account went with it: a node that kept them, while the
    account was deleted through another node, does not apply them to a new account of that name."""
    async with nodes(tmp_path, backend) as (a, b):
        phone = await online(a, "bob@localhost/phone")
        carol = await online(b, "carol@localhost/pc")
        await phone.send(f"<iq type='set' id='p1'><prefs xmlns='{MAM}' default='never'/></iq>")
        assert phone.take()[-1].get("type") == "result"
        await phone.close()
        # Node b reads bob's preferences for carol's message, which they keep out of his archive.
        await carol.send(chat("bob@localhost", "not kept", id="m0"))
        archive = a.storage.archive
        assert await archive.count("localhost", "bob", STORE) == 0
        assert await a.delete_account("localhost", "bob")
        await add_user(a, "bob")
        sent = 0

        async def archived() -> int:
            nonlocal sent
            sent += 1
            await carol.send(chat("bob@localhost", "kept", id=f"m{sent}"))
            return await archive.count("localhost", "bob", STORE)

        await eventually(archived, bool, timeout=5.0)

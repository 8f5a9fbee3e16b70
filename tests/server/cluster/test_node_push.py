"""XEP-0357 push registrations across nodes: a node that keeps an account's registrations in
memory drops them when another node changes them (ClusterBus.announce), on the in-process hub
and on Redis."""

from __future__ import annotations

from pathlib import Path

from schnack.server.modules.push import Push
from schnack.xmpp.jid import JID

from .conftest import eventually
from .test_node_presence import backend, nodes, online

__all__ = ["backend"]  # the fixture that runs each test on both bus backends

ENABLE = ("<iq type='set' id='e1'><enable xmlns='urn:xmpp:push:0' jid='push.example.org' node='n1'/></iq>")


async def test_a_device_registered_through_one_node_is_known_on_the_others(tmp_path: Path, backend: str) -> None:
    async with nodes(tmp_path, backend) as (a, b):
        alice = JID.parse("alice@localhost")
        on_b = b.modules["push"]
        assert isinstance(on_b, Push)
        # Node b read alice's registrations (none) for an offline message, say, and keeps them.
        assert await on_b.registrations(alice) == {}
        phone = await online(a, "alice@localhost/phone")
        await phone.send(ENABLE)
        assert phone.take()[-1].get("type") == "result"

        async def on_node_b() -> list[str]:
            return [registration.enable.node for registration in (await on_b.registrations(alice)).values()]

        assert await eventually(on_node_b, bool, timeout=5.0) == ["n1"]

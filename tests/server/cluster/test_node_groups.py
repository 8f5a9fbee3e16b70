"""Group chat rooms across nodes when a room's node dies: nothing acknowledged is lost, the room
comes back with its state on another node, and a message sent twice is stored once. Two servers in
one process, on the in-process hub and on Redis, sharing PostgreSQL."""

from __future__ import annotations

import asyncio
from pathlib import Path
from xml.etree.ElementTree import Element

import redis.asyncio as aioredis

from schnack.server.cluster import RedisBus
from schnack.xmpp import ns
from schnack.xmpp.xml import serialize

from ..modules.groups import ADMIN, MESSAGE, PRESENCE, ROOM, create, join_xml, set_affiliation, statuses
from ..modules.messaging import body
from .conftest import REDIS_URL, eventually
from .test_node_presence import IQ, backend, nodes, online, until

__all__ = ["backend"]  # the fixture that runs each test on both bus backends

STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"


def error_of(el: Element) -> tuple[str | None, str | None]:
    """(type, condition) of a stanza error."""
    error = el.find(f"{{{ns.CLIENT}}}error")
    assert error is not None, serialize(error if error is not None else el)
    condition = next((child.tag.partition("}")[2] for child in error if child.tag.startswith(f"{{{STANZAS}}}")), None)
    return error.get("type"), condition


def groupchat(text: str, message_id: str, origin_id: str | None = None) -> str:
    origin = f"<origin-id xmlns='urn:xmpp:sid:0' id='{origin_id}'/>" if origin_id else ""
    return f"<message to='{ROOM}' type='groupchat' id='{message_id}'><body>{text}</body>{origin}</message>"


async def test_a_group_outlives_its_node_and_loses_nothing(tmp_path: Path, backend: str) -> None:
    async with nodes(tmp_path, backend, node_ttl=2.0) as (a, b):
        owner = await online(a, "alice@localhost/phone")
        await create(owner, nick="alice")
        assert (await set_affiliation(owner, "bob@localhost", "member")).get("type") == "result"
        bob = await online(b, "bob@localhost/desk")
        await bob.send(join_xml(ROOM, "bob", "<history maxstanzas='0'/>"))
        await until(bob, lambda el: el.tag == PRESENCE and 110 in statuses(el))
        # Acknowledged only once the room's node stored and sent it: it is in the room's archive.
        await bob.send(groupchat("stored first", "g1", "o-1"))
        await until(owner, lambda el: el.tag == MESSAGE and el.get("id") == "g1")
        assert await a.storage.archive.count("groups.localhost", "family", "muc") == 1

        # The room's node dies: a message to the room is refused with a wait error, not dropped.
        await a.cluster.bus.stop(leave=False)
        await bob.send(groupchat("while the room is away", "g2"))
        refused = await until(bob, lambda el: el.tag == MESSAGE and el.get("id") == "g2")
        assert error_of(refused) == ("wait", "internal-server-error")

        # Once the dead node is reaped, the room starts on bob's node without occupants: a
        # self-ping (XEP-0410) says so, and bob enters again; the room kept its affiliations.
        async def pinged() -> Element:
            await bob.send(f"<iq type='get' id='sp' to='{ROOM}/bob'><ping xmlns='urn:xmpp:ping'/></iq>")
            return await until(bob, lambda el: el.tag == IQ and el.get("id") == "sp")

        answer = await pinged()
        while error_of(answer)[1] != "not-acceptable":
            answer = await pinged()
        await bob.send(join_xml(ROOM, "bob", "<history maxstanzas='0'/>"))
        await until(bob, lambda el: el.tag == PRESENCE and 110 in statuses(el))
        await bob.send(f"<iq type='get' id='who' to='{ROOM}'><query xmlns='{ADMIN}'><item affiliation='member'/>"
                       "</query></iq>")
        members = await until(bob, lambda el: el.tag == IQ and el.get("id") == "who")
        assert [i.get("jid") for i in members.iter(f"{{{ADMIN}}}item")] == ["bob@localhost"]

        # XEP-0359: the first message sent again (its acknowledgement was lost) is not stored twice.
        await bob.send(groupchat("stored first", "g1", "o-1"))
        await bob.send(groupchat("new", "g3", "o-3"))
        got = await until(bob, lambda el: el.tag == MESSAGE and el.get("id") in ("g1", "g3"))
        assert body(got) == "new"
        assert await b.storage.archive.count("groups.localhost", "family", "muc") == 2


async def test_a_room_keeps_one_node_when_redis_forgets_everything(tmp_path: Path) -> None:
    """Redis emptied under a running cluster (a restart without persistence that no node saw as
    an outage): the room's node claims it again, and the other node, settling meanwhile, starts
    no second copy: bob, who stayed in the room, still gets his messages through it."""
    async with nodes(tmp_path, "redis", node_ttl=1.0) as (a, b):
        owner = await online(a, "alice@localhost/phone")
        await create(owner, nick="alice")
        assert (await set_affiliation(owner, "bob@localhost", "member")).get("type") == "result"
        bob = await online(b, "bob@localhost/desk")
        await bob.send(join_xml(ROOM, "bob", "<history maxstanzas='0'/>"))
        await until(bob, lambda el: el.tag == PRESENCE and 110 in statuses(el))
        bus = a.cluster.bus
        assert isinstance(bus, RedisBus)
        claim = f"{bus.prefix}claim:room:{ROOM}"
        store = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)
        try:
            assert await store.get(claim) == "a"
            keys = [key async for key in store.scan_iter(match=f"{bus.prefix}*")]
            await store.delete(*keys)
            await eventually(lambda: store.get(claim), lambda owner_now: owner_now == "a")
            # Past the other node's settling time: it would have claimed the room by now.
            await asyncio.sleep(1.0 + 2 * 2.0 + 0.2 + 0.5)
            for n in range(3):
                message_id = f"r{n}"
                await bob.send(groupchat(f"after {n}", message_id))
                echoed = await until(bob, lambda el: el.tag == MESSAGE and el.get("id") == message_id)  # noqa: B023
                assert echoed.get("type") == "groupchat", serialize(echoed)
                got = await until(owner, lambda el: el.tag == MESSAGE and el.get("id") == message_id)  # noqa: B023
                assert body(got) == f"after {n}"
            assert await store.get(claim) == "a"
        finally:
            await store.aclose()

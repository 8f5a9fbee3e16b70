"""The cluster bus contract, on the in-process bus and on Redis: messages, directory, dead nodes."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable

import pytest
import redis.asyncio as aioredis

from schnack.server.cluster import ClusterBus, ClusterUnavailable, RedisBus
from schnack.server.cluster.bus import Entry
from schnack.server.cluster.messages import Deliver, Done, NodeMessage, encode

from ...client.proxy import Proxy
from .conftest import Cluster, PrivateRedis, eventually, through


class Inbox:
    """Collects what a node receives."""

    def __init__(self, bus: ClusterBus) -> None:
        self.messages: list[Deliver] = []
        self.answers: list[Done] = []
        self.down: list[str] = []
        self.changed = asyncio.Event()
        bus.subscribe(self._message)
        bus.on_node_down(self._down)

    async def _message(self, message: NodeMessage) -> None:
        if isinstance(message, Deliver):
            self.messages.append(message)
        elif isinstance(message, Done):
            self.answers.append(message)
        self.changed.set()

    async def _down(self, node: str) -> None:
        self.down.append(node)
        self.changed.set()

    async def wait(self, done: bool | None = None, *, count: int = 0, node_down: str = "",
                   timeout: float = 20.0) -> None:
        """Wait until ``count`` messages arrived or ``node_down`` was announced."""
        async def reached() -> None:
            while not (len(self.messages) >= count and (not node_down or node_down in self.down)):
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(reached(), timeout)


def stanza(to: str, sender: str, body: str) -> Deliver:
    xml = f"<message xmlns='jabber:client' to='{to}' from='{sender}' type='chat'><body>{body}</body></message>"
    return Deliver(to, sender, xml)


async def test_publish_reaches_the_node_it_names(cluster: Cluster) -> None:
    a = await cluster.node("a")
    b = await cluster.node("b")
    inbox_a, inbox_b = Inbox(a), Inbox(b)
    message = stanza("bob@example.org/desk", "alice@example.org/phone", "grüß dich <&>")
    assert await a.publish("b", message)
    await inbox_b.wait(count=1)
    assert inbox_b.messages == [message]
    assert inbox_a.messages == []


async def test_messages_arrive_in_the_order_published(cluster: Cluster) -> None:
    a = await cluster.node("a")
    b = await cluster.node("b")
    inbox = Inbox(b)
    sent = [stanza("bob@example.org/desk", "alice@example.org/phone", str(i)) for i in range(100)]
    for message in sent:
        assert await a.publish("b", message)
    await inbox.wait(count=len(sent))
    assert inbox.messages == sent


async def test_publish_to_a_node_that_is_not_there_is_refused(cluster: Cluster) -> None:
    a = await cluster.node("a")
    assert not await a.publish("nobody", stanza("bob@example.org/desk", "alice@example.org/phone", "hi"))


async def test_directory_register_lookup_unregister(cluster: Cluster) -> None:
    a = await cluster.node("a")
    b = await cluster.node("b")
    await a.register("alice@example.org/phone", "a")
    await b.register("alice@example.org/desk", "b")
    await b.register("bob@example.org/desk", "b")
    expected = {"alice@example.org/phone": "a", "alice@example.org/desk": "b"}
    assert await a.lookup("alice@example.org") == expected
    assert await b.lookup("alice@example.org") == expected
    assert await a.lookup("carol@example.org") == {}
    # Only the node that holds a session removes it.
    await b.unregister("alice@example.org/phone")
    assert await a.lookup("alice@example.org") == expected
    await a.unregister("alice@example.org/phone")
    assert await b.lookup("alice@example.org") == {"alice@example.org/desk": "b"}
    await b.unregister("alice@example.org/desk")
    assert await a.lookup("alice@example.org") == {}
    assert await a.lookup("bob@example.org") == {"bob@example.org/desk": "b"}


async def test_directory_reads_issued_together_each_get_their_own_answer(cluster: Cluster) -> None:
    """Many lookups and entries at once (on Redis they share round trips): each answers for its
    own account, as one alone would, and a read asked for after a write sees it."""
    a = await cluster.node("a")
    b = await cluster.node("b")
    for i in range(20):
        await (a if i % 2 else b).register(f"user{i}@example.org/r", "a" if i % 2 else "b")
    await a.set_info("user1@example.org/r", "one")
    lookups = [a.lookup(f"user{i % 25}@example.org") for i in range(50)]
    entries = [b.entries(f"user{i % 25}@example.org") for i in range(50)]
    answers = await asyncio.gather(*lookups, *entries)
    for i in range(50):
        node = "a" if i % 25 % 2 else "b"
        expected = {f"user{i % 25}@example.org/r": node} if i % 25 < 20 else {}
        assert answers[i] == expected
        info = "one" if i % 25 == 1 else ""
        assert answers[50 + i] == {full: Entry(where, info) for full, where in expected.items()}
    reads = [asyncio.ensure_future(a.lookup("user1@example.org")) for _ in range(10)]
    await a.unregister("user1@example.org/r")
    assert await a.lookup("user1@example.org") == {}
    assert all(r in ({"user1@example.org/r": "a"}, {}) for r in await asyncio.gather(*reads))


async def test_directory_reads_after_redis_forgot_the_scripts(private_redis: PrivateRedis) -> None:
    """SCRIPT FLUSH (as a restarted Redis has): the reads load their scripts again and answer."""
    await private_redis.start()
    cluster = Cluster("redis", url=private_redis.url)
    try:
        a = await cluster.node("a")
        await a.register("alice@example.org/phone", "a")
        await a.set_info("alice@example.org/phone", "available")
        client = aioredis.Redis.from_url(private_redis.url)
        try:
            await client.script_flush()
        finally:
            await client.aclose()
        lookups = await asyncio.gather(*(a.lookup("alice@example.org") for _ in range(5)))
        assert lookups == [{"alice@example.org/phone": "a"}] * 5
        entries = await asyncio.gather(*(a.entries("alice@example.org") for _ in range(5)))
        assert entries == [{"alice@example.org/phone": Entry("a", "available")}] * 5
    finally:
        await cluster.close()


async def test_a_full_jid_taken_over_by_another_node_stays_with_it(cluster: Cluster) -> None:
    a = await cluster.node("a")
    b = await cluster.node("b")
    await a.register("alice@example.org/phone", "a")
    await b.register("alice@example.org/phone", "b")
    await a.unregister("alice@example.org/phone")
    assert await a.lookup("alice@example.org") == {"alice@example.org/phone": "b"}


async def test_nodes_lists_live_nodes_and_their_sessions(cluster: Cluster) -> None:
    a = await cluster.node("a")
    b = await cluster.node("b")
    await a.register("alice@example.org/phone", "a")
    await a.register("alice@example.org/desk", "a")
    await b.register("bob@example.org/desk", "b")
    nodes = await eventually(a.nodes, lambda n: {k: v.sessions for k, v in n.items()} == {"a": 2, "b": 1})
    assert set(nodes) == {"a", "b"}
    assert all(info.started > 0 for info in nodes.values())


async def test_a_node_whose_heartbeats_stop_expires(cluster: Cluster) -> None:
    a = await cluster.node("a")
    b = await cluster.node("b")
    c = await cluster.node("c")
    inbox_a, inbox_c = Inbox(a), Inbox(c)
    await b.register("bob@example.org/desk", "b")
    await a.register("bob@example.org/phone", "a")
    await b.stop(leave=False)
    await inbox_a.wait(node_down="b")
    await inbox_c.wait(node_down="b")
    assert inbox_a.down == ["b"] and inbox_c.down == ["b"]
    assert await a.lookup("bob@example.org") == {"bob@example.org/phone": "a"}
    assert set(await c.nodes()) == {"a", "c"}
    assert not await a.publish("b", stanza("bob@example.org/desk", "alice@example.org/phone", "lost?"))


async def test_a_components_link_is_counted_apart_from_the_sessions(cluster: Cluster) -> None:
    """A component's link is in the directory as a full JID without a local part
    (``{domain}/{node}``, components.py), so that every node reaches it; it is no client
    session, and each node's count shows it apart (``schnack admin cluster``, and the session
    counts a drain picks its target by)."""
    a = await cluster.node("a")
    b = await cluster.node("b")
    await a.register("alice@example.org/desk", "a")
    await a.register("push.example.org/a", "a")
    await b.register("push.example.org/b", "b")
    await b.register("bob@example.org/push.example.org", "b")
    await b.register("carol@example.org/phone", "b")

    async def counts() -> dict[str, tuple[int, int]]:
        return {name: (info.sessions, info.components) for name, info in (await a.nodes()).items()}

    await eventually(counts, lambda found: found == {"a": (1, 1), "b": (2, 1)})
    await b.unregister("push.example.org/b")
    await eventually(counts, lambda found: found == {"a": (1, 1), "b": (2, 0)})


async def test_a_change_announced_reaches_every_other_node(cluster: Cluster) -> None:
    a = await cluster.node("a")
    b = await cluster.node("b")
    c = await cluster.node("c")
    heard: dict[str, list[tuple[str, str]]] = {"a": [], "b": [], "c": []}

    def hear(name: str, store: str, account: str) -> None:
        heard[name].append((store, account))

    for name, bus in (("a", a), ("b", b), ("c", c)):
        bus.on_changed(functools.partial(hear, name))

    async def all_heard() -> dict[str, list[tuple[str, str]]]:
        return heard

    await a.announce("blocklist", "bob@example.org")
    await b.announce("push", "carol@example.org")
    # The announcing node changed its own copy already, and hears nothing back.
    await eventually(all_heard, lambda h: len(h["a"]) + len(h["b"]) + len(h["c"]) == 4)
    assert heard == {
        "a": [("push", "carol@example.org")],
        "b": [("blocklist", "bob@example.org")],
        "c": [("blocklist", "bob@example.org"), ("push", "carol@example.org")],
    }


async def test_a_node_that_leaves_takes_its_sessions_along(cluster: Cluster) -> None:
    a = await cluster.node("a")
    b = await cluster.node("b")
    await b.register("bob@example.org/desk", "b")
    await b.stop()
    assert await a.lookup("bob@example.org") == {}
    assert set(await a.nodes()) == {"a"}


async def test_only_a_node_alone_on_its_in_process_hub_knows_it_is_alone(cluster: Cluster) -> None:
    """Then the directory holds only the node's own sessions and is not read per message; a
    Redis node never knows that without asking."""
    local = cluster.backend == "local"
    a = await cluster.node("a")
    assert a.alone() == local
    b = await cluster.node("b")
    assert not a.alone() and not b.alone()
    await b.stop()
    assert a.alone() == local
    c = await cluster.node("c")
    inbox = Inbox(a)
    await c.register("carol@example.org/desk", "c")
    await c.stop(leave=False)
    # Crashed, c is still in the directory until a reaps it.
    assert not a.alone()
    await inbox.wait(node_down="c")
    assert a.alone() == local


async def test_unknown_versions_and_garbage_are_dropped_and_logged(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    a = await cluster.node("a")
    b = await cluster.node("b")
    inbox = Inbox(b)
    caplog.set_level(logging.ERROR)
    await cluster.inject(b, encode(stanza("bob@example.org/desk", "alice@example.org/phone", "v2"), version=2))
    await cluster.inject(b, b'[1, "teleport", "x"]')
    await cluster.inject(b, b"\xff not json")
    good = stanza("bob@example.org/desk", "alice@example.org/phone", "v1")
    assert await a.publish("b", good)
    await inbox.wait(count=1)
    assert inbox.messages == [good]
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any("unsupported bus message version 2" in e for e in errors)
    assert any("unknown bus message kind 'teleport'" in e for e in errors)
    assert any("not a bus message" in e for e in errors)


async def test_a_failing_handler_does_not_stop_the_node(cluster: Cluster) -> None:
    a = await cluster.node("a")
    b = await cluster.node("b")

    async def broken(message: NodeMessage) -> None:
        if isinstance(message, Deliver) and message.xml.endswith("<body>boom</body></message>"):
            raise RuntimeError("handler bug")

    b.subscribe(broken)
    inbox = Inbox(b)
    assert await a.publish("b", stanza("bob@example.org/desk", "alice@example.org/phone", "boom"))
    after = stanza("bob@example.org/desk", "alice@example.org/phone", "after")
    assert await a.publish("b", after)
    await inbox.wait(count=1)
    assert inbox.messages == [after]


async def test_redis_restart_keeps_local_state_and_resyncs(private_redis: PrivateRedis) -> None:
    await private_redis.start()
    cluster = Cluster("redis", url=private_redis.url)
    try:
        a = await cluster.node("a", heartbeat_interval=0.2, node_ttl=2.0)
        b = await cluster.node("b", heartbeat_interval=0.2, node_ttl=2.0)
        assert isinstance(a, RedisBus)
        inbox = Inbox(b)
        # What was on its way to b when its subscription broke may be lost: b is told, once.
        resubscribed: list[str] = []
        b.on_resubscribed(lambda: resubscribed.append("b"))
        await a.register("alice@example.org/phone", "a")
        await b.register("bob@example.org/desk", "b")
        await private_redis.stop()
        # Redis is gone: nothing crosses, nothing raises, and new sessions are remembered locally.
        assert not await a.publish("b", stanza("bob@example.org/desk", "alice@example.org/phone", "down"))
        await a.register("alice@example.org/desk", "a")
        await a.set_info("alice@example.org/desk", "available")
        await a.unregister("alice@example.org/phone")
        assert await a.lookup("bob@example.org") == {}
        resyncs = a.resyncs
        await private_redis.start()  # empty: no persistence
        await eventually(lambda: b.lookup("alice@example.org"), lambda d: d == {"alice@example.org/desk": "a"})
        await eventually(lambda: a.lookup("bob@example.org"), lambda d: d == {"bob@example.org/desk": "b"})
        assert a.resyncs > resyncs
        # What the node attached to its sessions comes back with them.
        assert await b.entries("alice@example.org") == {"alice@example.org/desk": Entry("a", "available")}
        back = stanza("bob@example.org/desk", "alice@example.org/desk", "back")
        await eventually(lambda: a.publish("b", back), bool)
        await inbox.wait(count=1)
        assert inbox.messages[-1] == back
        assert resubscribed == ["b"]
    finally:
        await cluster.close()


async def test_redis_unreachable_at_start_is_a_clear_error(private_redis: PrivateRedis) -> None:
    bus = RedisBus(private_redis.url, "a", op_timeout=1.0)
    with pytest.raises(ClusterUnavailable, match="cannot reach Redis"):
        await bus.start()


async def test_a_node_dropped_from_the_directory_writes_its_sessions_back(redis_cluster: Cluster) -> None:
    cluster = redis_cluster

    a = await cluster.node("a", heartbeat_interval=0.1, node_ttl=5.0)
    b = await cluster.node("b", heartbeat_interval=0.1, node_ttl=5.0)
    await a.register("alice@example.org/phone", "a")
    client = aioredis.Redis.from_url(cluster.url)
    try:
        # What another node does to a node it believes dead: heartbeat and entries gone.
        await client.delete(f"{cluster.prefix}hb:a", f"{cluster.prefix}sess:a", f"{cluster.prefix}dir:alice@example.org")
    finally:
        await client.aclose()
    await eventually(lambda: b.lookup("alice@example.org"), lambda d: d == {"alice@example.org/phone": "a"})


async def test_info_travels_with_the_entry_and_only_its_node_writes_it(cluster: Cluster) -> None:
    a = await cluster.node("a")
    b = await cluster.node("b")
    await a.register("alice@example.org/phone", "a")
    await b.register("alice@example.org/desk", "b")
    assert await b.entries("alice@example.org") == {
        "alice@example.org/phone": Entry("a", ""), "alice@example.org/desk": Entry("b", "")}
    await a.set_info("alice@example.org/phone", '{"a":true,"p":5}')
    await a.set_info("alice@example.org/desk", "not mine")  # b holds it: ignored
    entries = await b.entries("alice@example.org")
    assert entries["alice@example.org/phone"] == Entry("a", '{"a":true,"p":5}')
    assert entries["alice@example.org/desk"] == Entry("b", "")
    # A new registration starts without info, and unregistering drops it.
    await a.register("alice@example.org/phone", "a")
    assert (await b.entries("alice@example.org"))["alice@example.org/phone"].info == ""
    await a.set_info("alice@example.org/phone", "again")
    await a.unregister("alice@example.org/phone")
    await a.register("alice@example.org/phone", "a")
    assert (await b.entries("alice@example.org"))["alice@example.org/phone"].info == ""
    assert await a.entries("carol@example.org") == {}


async def test_the_node_that_reaps_a_dead_one_gets_its_entries_once(cluster: Cluster) -> None:
    a = await cluster.node("a")
    b = await cluster.node("b")
    c = await cluster.node("c")
    reaped: list[tuple[str, str, dict[str, str]]] = []
    for bus in (a, c):
        async def record(node: str, dropped: dict[str, str], by: str = bus.node) -> None:
            reaped.append((by, node, dropped))
        bus.on_reaped(record)
    await b.register("bob@example.org/desk", "b")
    await b.register("bob@example.org/phone", "b")
    await b.set_info("bob@example.org/desk", "available")
    await b.stop(leave=False)
    await eventually(lambda: a.lookup("bob@example.org"), lambda d: d == {})
    await eventually(lambda: _value(reaped), lambda r: len(r) >= 1)
    (by, node, dropped), *more = reaped
    assert more == [] and by in ("a", "c") and node == "b"
    assert dropped == {"bob@example.org/desk": "available", "bob@example.org/phone": ""}


async def test_a_claim_stays_with_its_live_owner_and_passes_on_when_it_dies(cluster: Cluster) -> None:
    a = await cluster.node("a")
    b = await cluster.node("b")
    assert await b.claim("room:crew@groups.example.org") == "b"
    assert await a.claim("room:crew@groups.example.org") == "b"
    assert await a.claim("room:other@groups.example.org") == "a"
    await b.stop(leave=False)
    await eventually(lambda: a.claim("room:crew@groups.example.org"), lambda owner: owner == "a")


async def test_once_is_first_on_one_node_only_until_its_time_runs_out(cluster: Cluster) -> None:
    a = await cluster.node("a")
    b = await cluster.node("b")
    told = await asyncio.gather(*(bus.once("push:event", 60) for bus in (a, b, a, b)))
    assert told.count(True) == 1
    assert not await a.once("push:event", 60) and not await b.once("push:event", 60)
    assert await b.once("push:other", 60)
    assert await a.once("push:brief", 0.2)
    await eventually(lambda: b.once("push:brief", 0.2), bool)


async def test_once_while_redis_is_away_is_always_first(private_redis: PrivateRedis) -> None:
    """Better twice than never: what is to be done once is done while nobody can say whether it was."""
    await private_redis.start()
    cluster = Cluster("redis", url=private_redis.url)
    try:
        a = await cluster.node("a", heartbeat_interval=0.2, node_ttl=2.0)
        assert await a.once("push:event", 60)
        await private_redis.stop()
        assert await a.once("push:event", 60)
    finally:
        await cluster.close()


async def _hold(bus: ClusterBus, name: str, order: list[str], entered: asyncio.Event | None = None,
                leave: asyncio.Event | None = None) -> None:
    """Hold ``name`` on ``bus``: note the node in ``order`` on entering, stay until ``leave``."""
    async with bus.lock(name):
        order.append(bus.node)
        if entered is not None:
            entered.set()
        if leave is not None:
            await leave.wait()


async def _holding(bus: ClusterBus, name: str, order: list[str]) -> tuple[asyncio.Future[None], asyncio.Event]:
    """``bus`` holding ``name`` in a task of its own, once it does; the event lets go."""
    entered, leave = asyncio.Event(), asyncio.Event()
    task = asyncio.ensure_future(_hold(bus, name, order, entered, leave))
    await asyncio.wait_for(entered.wait(), 20)
    return task, leave


async def test_a_lock_keeps_other_nodes_out_until_let_go(cluster: Cluster) -> None:
    a = await cluster.node("a")
    b = await cluster.node("b")
    order: list[str] = []
    holding, leave = await _holding(a, "roster:alice@example.org", order)
    waiting = asyncio.ensure_future(_hold(b, "roster:alice@example.org", order))
    # Another name is free meanwhile.
    await _hold(b, "roster:bob@example.org", order)
    await asyncio.sleep(0.3)  # time for b to get in wrongly, not a measure
    assert order == ["a", "b"] and not waiting.done()
    leave.set()
    await asyncio.wait_for(asyncio.gather(holding, waiting), 20)
    assert order == ["a", "b", "b"]
    # Let go, the name is free for anyone.
    await asyncio.wait_for(_hold(a, "roster:alice@example.org", order), 20)


async def test_a_dead_nodes_lock_passes_on_and_its_late_letting_go_frees_nothing(redis_cluster: Cluster) -> None:
    """A node that stops heartbeating lets go of its locks; when its block ends after all, it
    does not take the lock from whoever holds it by then."""
    a = await redis_cluster.node("a")
    b = await redis_cluster.node("b")
    c = await redis_cluster.node("c")
    order: list[str] = []
    dead, leave = await _holding(a, "roster:alice@example.org", order)
    await a.stop(leave=False)
    taking, b_leave = await _holding(b, "roster:alice@example.org", order)
    leave.set()
    await dead
    third = asyncio.ensure_future(_hold(c, "roster:alice@example.org", order))
    await asyncio.sleep(0.3)  # time for c to get in wrongly, not a measure
    assert order == ["a", "b"] and not third.done()
    b_leave.set()
    await asyncio.wait_for(asyncio.gather(taking, third), 20)
    assert order == ["a", "b", "c"]


async def test_a_lock_while_redis_is_away_holds_nothing_and_raises_nothing(private_redis: PrivateRedis) -> None:
    await private_redis.start()
    cluster = Cluster("redis", url=private_redis.url)
    try:
        a = await cluster.node("a", heartbeat_interval=0.2, node_ttl=2.0)
        await private_redis.stop()
        order: list[str] = []
        await asyncio.wait_for(_hold(a, "roster:alice@example.org", order), 20)
        assert order == ["a"]
    finally:
        await cluster.close()


async def _value(items: list[tuple[str, str, dict[str, str]]]) -> list[tuple[str, str, dict[str, str]]]:
    return list(items)


async def test_a_deliver_that_asks_is_answered_with_done(cluster: Cluster) -> None:
    a = await cluster.node("a")
    b = await cluster.node("b")
    inbox_a, inbox_b = Inbox(a), Inbox(b)
    asking = Deliver("room@groups.example.org", "alice@example.org/phone", "<message/>", ask="a:t1")
    assert await a.publish("b", asking)
    await eventually(lambda: _count(inbox_b.messages), lambda n: n == 1)
    assert inbox_b.messages == [asking] and inbox_b.messages[0].asker == "a"
    assert await b.publish(inbox_b.messages[0].asker, Done(asking.ask))
    await eventually(lambda: _count(inbox_a.answers), lambda n: n == 1)
    assert inbox_a.answers == [Done("a:t1")]
    # A refusal rides inside the answer, whole.
    refusal = "<message xmlns='jabber:client' type='error' to='alice@example.org/phone'/>"
    assert await b.publish("a", Done("a:t2", refusal))
    await eventually(lambda: _count(inbox_a.answers), lambda n: n == 2)
    assert inbox_a.answers[1] == Done("a:t2", refusal)


async def _count(items: list[Deliver] | list[Done]) -> int:
    return len(items)


def membership(bus: ClusterBus) -> Callable[[], Awaitable[bool]]:
    """A probe of ``bus.is_member()`` for :func:`eventually`."""
    async def probe() -> bool:
        return bus.is_member()

    return probe


async def test_a_node_cut_off_from_redis_stops_being_a_member_before_it_is_declared_dead(
        redis_cluster: Cluster, redis_proxy: Proxy) -> None:
    """A node that cannot reach Redis cannot tell after half of ``node_ttl`` that the others do not
    take it for dead, before they do after ``node_ttl``; when it reaches Redis again, it is a
    member again, as another process (its ``started`` is new), since the others declared it dead."""
    a = await redis_cluster.node("a", url=through(redis_proxy))
    b = await redis_cluster.node("b")
    assert a.is_member() and b.is_member()
    before = a.started
    assert (await b.nodes())["a"].started == before
    redis_proxy.refusing = True
    redis_proxy.cut()
    await eventually(membership(a), lambda member: not member)
    await eventually(b.nodes, lambda nodes: "a" not in nodes)
    assert not a.is_member()
    redis_proxy.refusing = False
    await eventually(membership(a), bool)
    assert a.started > before
    assert (await b.nodes())["a"].started == a.started


async def test_a_node_dropped_from_its_hub_while_it_lived_joins_again_as_another_process() -> None:
    """The in-process bus alike: a node another one dropped (its heartbeats were late) is no member
    until its next heartbeat, and from then on another process."""
    cluster = Cluster("local")
    try:
        a = await cluster.node("a", heartbeat_interval=0.05)
        b = await cluster.node("b", heartbeat_interval=0.05)
        before = a.started
        cluster.hub.drop("a")
        assert not a.is_member()
        await eventually(membership(a), bool)
        assert a.started > before
        assert (await b.nodes())["a"].started == a.started
    finally:
        await cluster.close()


async def test_a_node_alone_on_its_hub_is_a_member(cluster: Cluster) -> None:
    a = await cluster.node("a")
    assert a.is_member()
    await a.stop()
    assert not a.is_member()

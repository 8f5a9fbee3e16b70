"""XEP-0198 on server-to-server streams, with hand-written peers: the sending side sends again
what a broken connection did not get acknowledged, and bounces it when the peer stays away; the
receiving side acknowledges only what it stored."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from xml.etree.ElementTree import Element

import pytest

from schnack.server.app import Server
from schnack.server.s2s.dialback import dialback_key
from schnack.xmpp import ns
from schnack.xmpp.parser import StreamClosed
from schnack.xmpp.payloads.sm import NS as SM

from ...harness import Client, add_user, connect, make_config
from ..modules.messaging import condition
from .raw import RawPeer, RawReceiver, authenticated_peer

REMOTE = "raw.example"


@pytest.fixture
async def receiver(tmp_path: Path) -> AsyncIterator[RawReceiver]:
    raw = await RawReceiver(tmp_path, REMOTE).start()
    try:
        yield raw
    finally:
        raw.stop()


async def sender(tmp_path: Path, receiver: RawReceiver, **s2s: Any) -> tuple[Server, Client]:
    server = Server(make_config(tmp_path, listen={"s2s": ["127.0.0.1:0"]}, s2s={
        "enabled": True, "verify": False, "connect_timeout": 5, "ack_after_stanzas": 2,
        "hosts": {REMOTE: f"127.0.0.1:{receiver.port}"}, **s2s,
    }))
    await server.start()
    await add_user(server, "alice")
    return server, await connect(server, "alice@localhost/desk")


def message(n: int) -> str:
    return f"<message to='bob@{REMOTE}' id='m{n}' type='chat'><body>number {n}</body></message>"


def messages(*ids: str) -> list[str]:
    return [f"<message to='bob@{REMOTE}' id='{id_}' type='chat'><body>{id_}</body></message>" for id_ in ids]


async def enable(peer: RawPeer) -> None:
    assert (await peer.element()).tag == f"{{{SM}}}enable"
    peer.send(f"<enabled xmlns='{SM}'/>")


async def received(peer: RawPeer, count: int) -> tuple[list[str], int]:
    """The ids of the next ``count`` messages, and how many <r/> came with them."""
    ids: list[str] = []
    requests = 0
    while len(ids) < count:
        el = await peer.element()
        if el.tag == f"{{{SM}}}r":
            requests += 1
        else:
            assert el.tag == "{jabber:server}message", el.tag
            ids.append(el.get("id", ""))
    return ids, requests


async def test_unacknowledged_stanzas_go_again_on_a_new_connection(tmp_path: Path, receiver: RawReceiver) -> None:
    server, alice = await sender(tmp_path, receiver)
    try:
        for n in (1, 2, 3):
            await alice.send(message(n))
        first = await receiver.next_peer()
        await enable(first)
        ids, requests = await received(first, 3)
        assert ids == ["m1", "m2", "m3"] and requests == 1
        first.send(f"<a xmlns='{SM}' h='1'/>")
        # m1 is acknowledged; the link dies with m2 and m3 unacknowledged.
        await asyncio.sleep(0.2)
        first.writer.transport.abort()
        second = await receiver.next_peer()
        await enable(second)
        # The first goes alone, in case the peer cut the link over it; m3 follows its ack.
        assert (await received(second, 1))[0] == ["m2"]
        second.send(f"<a xmlns='{SM}' h='1'/>")
        assert (await received(second, 1))[0] == ["m3"]
        await alice.send(message(4))
        assert (await received(second, 1))[0] == ["m4"]
        second.send(f"<a xmlns='{SM}' h='3'/>")
        route = server.s2s.routes[("localhost", REMOTE)]
        assert route.connections == 2
        assert alice.take() == []
    finally:
        await server.stop()


async def test_a_peer_that_never_acknowledges_and_vanishes_bounces(tmp_path: Path, receiver: RawReceiver) -> None:
    """RFC 6120 §8.3.3: after the retry window, each unacknowledged message goes back to its
    sender with remote-server-timeout; none is dropped silently."""
    server, alice = await sender(tmp_path, receiver, ack_timeout=0.5, retry_window=1.5)
    try:
        await alice.send(message(1))
        await alice.send(message(2))
        peer = await receiver.next_peer()
        await enable(peer)
        assert (await received(peer, 2))[0] == ["m1", "m2"]
        receiver.vanish()
        errors = await alice.expect(2, timeout=10)
        assert {el.get("id"): condition(el) for el in errors} == {"m1": "remote-server-timeout",
                                                                 "m2": "remote-server-timeout"}
    finally:
        await server.stop()


async def test_peer_without_stream_management_gets_no_enable(tmp_path: Path) -> None:
    raw = await RawReceiver(tmp_path, REMOTE, sm=False).start()
    server, alice = await sender(tmp_path, raw)
    try:
        await alice.send(message(1))
        peer = await raw.next_peer()
        assert (await peer.element()).get("id") == "m1"
        assert server.s2s.routes[("localhost", REMOTE)].acks is None
    finally:
        await server.stop()
        raw.stop()


async def test_incoming_acks_count_stored_messages(receiving: tuple[Server, str]) -> None:
    """§4: h covers a message only once it is in offline storage; enabling needs a domain."""
    server, secret = receiving
    await add_user(server, "bob")
    host, port = server.bound["s2s"][0]
    peer = await RawPeer.connect(host, port)
    features = await peer.starttls("b.example", "localhost")
    assert features.find(f"{{{SM}}}sm") is not None
    peer.send(f"<enable xmlns='{SM}'/>")
    failed = await peer.element()
    assert failed.tag == f"{{{SM}}}failed" and failed.find(f"{{{ns.STANZA_ERRORS}}}unexpected-request") is not None
    key = dialback_key(secret, "localhost", "b.example", peer.stream_id)
    peer.send(f"<db:result from='b.example' to='localhost'>{key}</db:result>")
    assert (await peer.element()).get("type") == "valid"
    peer.send(f"<enable xmlns='{SM}'/>")
    assert (await peer.element()).tag == f"{{{SM}}}enabled"
    peer.send("".join(f"<message from='eve@b.example/x' to='bob@localhost' id='o{n}' type='chat'>"
                      f"<body>offline {n}</body></message>" for n in range(3)) + f"<r xmlns='{SM}'/>")
    ack = await peer.element()
    assert (ack.tag, ack.get("h")) == (f"{{{SM}}}a", "3")
    assert await server.storage.archive.count("localhost", "bob", "offline") == 3
    peer.send(f"<a xmlns='{SM}' h='1'/>")
    assert await peer.stream_error() == "undefined-condition"


async def test_without_stream_management_a_closed_stream_is_replaced(tmp_path: Path) -> None:
    """RFC 6120 §4.4: the peer closes its stream; we close ours, and the next stanza opens a new one."""
    raw = await RawReceiver(tmp_path, REMOTE, sm=False).start()
    server, alice = await sender(tmp_path, raw)
    try:
        await alice.send(message(1))
        first = await raw.next_peer()
        assert (await first.element()).get("id") == "m1"
        first.send("</stream:stream>")
        assert isinstance(await first.next(), StreamClosed)
        await alice.send(message(2))
        second = await raw.next_peer()
        assert (await second.element()).get("id") == "m2"
        assert alice.take() == []
    finally:
        await server.stop()
        raw.stop()


async def test_keepalives_from_the_peer_do_not_keep_an_idle_route_open(tmp_path: Path) -> None:
    """Idle means no stanzas either way: the peer's whitespace keepalives (RFC 6120 §4.6.1) keep
    the connection from looking dead, not the route in use."""
    raw = await RawReceiver(tmp_path, REMOTE, sm=False).start()
    server, alice = await sender(tmp_path, raw)
    # Below the bound an operator may set, so that the test does not wait for ten seconds.
    server.s2s.config = dataclasses.replace(server.s2s.config, idle_timeout=1.0)

    async def keep_alive(peer: RawPeer) -> None:
        while True:
            peer.send(" ")
            await asyncio.sleep(0.2)

    try:
        await alice.send(message(1))
        peer = await raw.next_peer()
        assert (await peer.element()).get("id") == "m1"
        keeping = asyncio.create_task(keep_alive(peer))
        try:
            async with asyncio.timeout(5):
                assert isinstance(await peer.next(), StreamClosed)
        finally:
            keeping.cancel()
    finally:
        await server.stop()
        raw.stop()


async def test_a_peer_that_takes_stanzas_but_never_acknowledges_is_not_retried_forever(
        tmp_path: Path, receiver: RawReceiver) -> None:
    """Each new connection comes up and takes the stanza, and the peer never answers <r/>, so
    that each is cut for it: the retry window keeps running. (A peer that cuts connections over
    the stanza itself is another case, below.)"""
    server, alice = await sender(tmp_path, receiver, ack_timeout=0.5, retry_window=1.5)
    connections = 0

    async def take_each() -> None:
        nonlocal connections
        while True:
            peer = await receiver.next_peer()
            connections += 1
            await enable(peer)
            assert (await received(peer, 1))[0] == ["m1"]

    breaking = asyncio.create_task(take_each())
    try:
        await alice.send(message(1))
        (error,) = await alice.expect(1, timeout=10)
        assert (error.get("id"), condition(error)) == ("m1", "remote-server-timeout")
        assert 2 <= connections <= 4
    finally:
        breaking.cancel()
        await server.stop()


async def test_an_incoming_stream_closed_at_a_shutdown_tells_what_it_handled(receiving: tuple[Server, str]) -> None:
    """XEP-0198 §4: the stream's last word before the shutdown's stream error is an ack of what
    was handled, so that the peer does not send it again to the restarted server."""
    server, _ = receiving
    await add_user(server, "bob")
    peer = await authenticated_peer(receiving)
    peer.send(f"<enable xmlns='{SM}'/>")
    assert (await peer.element()).tag == f"{{{SM}}}enabled"
    peer.send("".join(f"<message from='eve@b.example/x' to='bob@localhost' id='o{n}' type='chat'>"
                      f"<body>offline {n}</body></message>" for n in range(3)))
    async with asyncio.timeout(10):
        while await server.storage.archive.count("localhost", "bob", "offline") < 3:  # noqa: ASYNC110 (in storage)
            await asyncio.sleep(0.05)
    await server.s2s.stop()
    ack = await peer.element()
    assert (ack.tag, ack.get("h")) == (f"{{{SM}}}a", "3")
    assert await peer.stream_error() == "system-shutdown"


async def test_an_idle_outgoing_stream_sends_whitespace_keepalives(tmp_path: Path) -> None:
    """RFC 6120 §4.6.1: a route that has nothing to send writes a space after
    ``limits.keepalive_interval`` of silence, so that a NAT or firewall on the way keeps the
    connection, or a dead one is found before the next stanza is written into it."""
    raw = await RawReceiver(tmp_path, REMOTE, sm=False).start()
    server, alice = await sender(tmp_path, raw)
    # Below the bound an operator may set, so that the test does not wait for five seconds.
    server.config = dataclasses.replace(server.config,
                                        limits=dataclasses.replace(server.config.limits, keepalive_interval=0.3))
    try:
        await alice.send(message(1))
        peer = await raw.next_peer()
        assert (await peer.element()).get("id") == "m1"
        for _ in range(2):
            async with asyncio.timeout(10):
                assert await peer.reader.read(65536) == b" "
        assert server.s2s.routes[("localhost", REMOTE)].ready
    finally:
        await server.stop()
        raw.stop()


async def serve_peers(receiver: RawReceiver, delivered: asyncio.Queue[str],
                      refuse: Callable[[int, Element, int], str | None], *, reset: bool = False) -> None:
    """A peer server with stream management that acknowledges what it is asked to and hands each
    stanza to ``delivered``, unless ``refuse`` (given the connection's number, the stanza and the
    count handled on it) returns what to send before closing the connection over it (with
    ``reset``, a TCP reset instead of a close)."""
    for attempt in itertools.count():
        peer = await receiver.next_peer()
        await enable(peer)
        handled = 0
        with contextlib.suppress(AssertionError):  # the connection closed
            while True:
                el = await peer.element()
                if el.tag == f"{{{SM}}}r":
                    peer.send(f"<a xmlns='{SM}' h='{handled}'/>")
                elif (last_words := refuse(attempt, el, handled)) is not None:
                    peer.send(last_words)
                    if reset:
                        peer.writer.transport.abort()
                    else:
                        peer.writer.close()
                    break
                else:
                    handled += 1
                    await delivered.put(el.get("id", ""))


async def delivered_until(delivered: asyncio.Queue[str], last: str, timeout: float) -> list[str]:
    """The ids handed to ``delivered`` (by :func:`serve_peers`), up to and with ``last``."""
    got: list[str] = []
    async with asyncio.timeout(timeout):
        while last not in got:
            got.append(await delivered.get())
    return got


@pytest.mark.parametrize(("refusal", "bounced_with"), [
    ("stream error after an ack", "policy-violation"),
    ("stream error", "policy-violation"),
    ("close", "not-acceptable"),
    ("reset", "not-acceptable"),
])
async def test_a_stanza_the_peer_ends_the_connection_over_bounces_and_the_rest_arrives(
        tmp_path: Path, receiver: RawReceiver, refusal: str, bounced_with: str) -> None:
    """A peer that refuses one stanza by ending the stream (here policy-violation, for a reason
    of its own), or by cutting the connection without a word (closed or reset), would refuse it
    on every new connection. Sent alone and refused again with a stream error, it goes back to
    its sender at once; sent alone and cut over until the retry window has run out (a cut may
    be the network's), it goes back then. Its condition is the stream error's or else
    not-acceptable (RFC 6120 §8.3), it bounces once, and the messages behind it arrive, rather
    than all of them bouncing. Without a last ack from the peer, what it handled before it comes
    again (receivers drop copies by id), and is not taken for the stanza it refuses."""
    cut = refusal in ("close", "reset")
    server, alice = await sender(tmp_path, receiver, retry_window=2 if cut else 120)
    delivered: asyncio.Queue[str] = asyncio.Queue()

    def refuse_poison(_attempt: int, el: Element, handled: int) -> str | None:
        if el.get("id") != "poison":
            return None
        if cut:
            return ""
        ack = f"<a xmlns='{SM}' h='{handled}'/>" if refusal == "stream error after an ack" else ""
        return f"{ack}<stream:error><policy-violation xmlns='{ns.STREAM_ERRORS}'/></stream:error></stream:stream>"

    peering = asyncio.create_task(serve_peers(receiver, delivered, refuse_poison, reset=refusal == "reset"))
    try:
        for stanza in messages("m1", "poison", "m2"):
            await alice.send(stanza)
        (error,) = await alice.expect(1, timeout=20)
        assert (error.get("id"), condition(error)) == ("poison", bounced_with)
        got = await delivered_until(delivered, "m2", 20)
        assert list(dict.fromkeys(got)) == ["m1", "m2"]
        await alice.send(message(3))
        async with asyncio.timeout(20):
            assert await delivered.get() == "m3"
        assert alice.take() == []
    finally:
        peering.cancel()
        await server.stop()


async def test_a_peer_failing_for_a_while_bounces_nothing(tmp_path: Path, receiver: RawReceiver) -> None:
    """internal-server-error speaks of the peer, not of what we sent (RFC 6120 §4.9.3.8): a peer
    that fails twice and then works gets every message, none goes back to its sender."""
    server, alice = await sender(tmp_path, receiver, retry_window=120)
    delivered: asyncio.Queue[str] = asyncio.Queue()

    def fail_twice(attempt: int, _el: Element, _handled: int) -> str | None:
        if attempt >= 2:
            return None
        return f"<stream:error><internal-server-error xmlns='{ns.STREAM_ERRORS}'/></stream:error></stream:stream>"

    peering = asyncio.create_task(serve_peers(receiver, delivered, fail_twice))
    try:
        for stanza in messages("m1", "m2"):
            await alice.send(stanza)
        got = await delivered_until(delivered, "m2", 60)
        assert got == ["m1", "m2"]
        assert alice.take() == []
    finally:
        peering.cancel()
        await server.stop()


async def test_a_link_cut_once_over_a_stanza_bounces_nothing(tmp_path: Path, receiver: RawReceiver) -> None:
    """A connection that breaks just after a stanza was written is what a flaky network does
    too: the stanza is only suspected, goes again alone on the next connection, and arrives with
    everything behind it when that one carries it."""
    server, alice = await sender(tmp_path, receiver, retry_window=120)
    delivered: asyncio.Queue[str] = asyncio.Queue()

    def cut_first(attempt: int, el: Element, _handled: int) -> str | None:
        return "" if attempt == 0 and el.get("id") == "m2" else None

    peering = asyncio.create_task(serve_peers(receiver, delivered, cut_first, reset=True))
    try:
        for stanza in messages("m1", "m2", "m3"):
            await alice.send(stanza)
        got = await delivered_until(delivered, "m3", 20)
        assert list(dict.fromkeys(got)) == ["m1", "m2", "m3"]
        assert alice.take() == []
    finally:
        peering.cancel()
        await server.stop()


async def test_a_link_cut_twice_over_a_stanza_bounces_nothing_and_sends_nothing_acknowledged_again(
        tmp_path: Path, receiver: RawReceiver) -> None:
    """Two cuts in a row, the second while the suspected stanza went alone on a connection that
    had just come up, are still what a flaky network may do: the route tries again after a
    pause, within the retry window, and the stanza arrives with everything behind it. What the
    peer acknowledged before each cut (its last words) does not go again."""
    server, alice = await sender(tmp_path, receiver, retry_window=120)
    delivered: asyncio.Queue[str] = asyncio.Queue()

    def ack_and_cut_twice(attempt: int, el: Element, handled: int) -> str | None:
        return f"<a xmlns='{SM}' h='{handled}'/>" if attempt < 2 and el.get("id") == "m2" else None

    peering = asyncio.create_task(serve_peers(receiver, delivered, ack_and_cut_twice))
    try:
        for stanza in messages("m1", "m2", "m3"):
            await alice.send(stanza)
        got = await delivered_until(delivered, "m3", 30)
        assert got == ["m1", "m2", "m3"]
        assert server.s2s.routes[("localhost", REMOTE)].connections == 3
        assert alice.take() == []
    finally:
        peering.cancel()
        await server.stop()


async def test_a_peer_gone_after_two_cuts_bounces_each_stanza_once_at_the_end_of_the_window(
        tmp_path: Path, receiver: RawReceiver) -> None:
    """The link is cut twice over a stanza, and then the peer cannot be reached at all: the
    route keeps trying until the retry window has run out, then each waiting stanza goes back
    to its sender once, with remote-server-timeout (RFC 6120 §8.3.3.17), the one cut over
    included: nothing says the peer refused it."""
    server, alice = await sender(tmp_path, receiver, retry_window=2)
    delivered: asyncio.Queue[str] = asyncio.Queue()

    def cut_twice_and_vanish(attempt: int, el: Element, _handled: int) -> str | None:
        if attempt == 1:
            receiver.vanish()
        return "" if el.get("id") == "m1" else None

    peering = asyncio.create_task(serve_peers(receiver, delivered, cut_twice_and_vanish, reset=True))
    try:
        for stanza in messages("m1", "m2"):
            await alice.send(stanza)
        route = server.s2s.routes[("localhost", REMOTE)]
        errors = await alice.expect(2, timeout=20)
        assert {el.get("id"): condition(el) for el in errors} == {"m1": "remote-server-timeout",
                                                                 "m2": "remote-server-timeout"}
        await route.task
        assert alice.take() == []
        assert route.connections == 2
    finally:
        peering.cancel()
        await server.stop()

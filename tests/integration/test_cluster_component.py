"""XEP-0114 components in a cluster: a component connected to one node is reached from every node.

Two nodes on the local PostgreSQL and Redis, on real sockets. The component (a slixmpp
ComponentXMPP, the push app server of test_push.py that also answers chat messages, as a bot or
a gateway does) connects to node a only; alice logs in on node b. Her message to the component
crosses to node a, and the component's answer comes back to her. A push notification that node
b publishes for bob's hibernating session reaches the component on node a (XEP-0357 §7), and
the app server's answer reaches node b, which waits for it (§8). When
the component is connected nowhere, or its node died, the sender gets service-unavailable as on
one node (RFC 6120 §8.3.3.19).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

from slixmpp import JID
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from schnack.server.admin import request
from schnack.server.app import Server
from schnack.server.component import ACCEPT

from ..server.cluster.conftest import eventually
from .slix import SlixClient
from .test_cluster_push import handled, hibernating, two_nodes
from .test_push import APP, GUARD, TEXT, AppServer, alice_says, check, peers, phone_left, wait

__all__ = ["peers"]  # the fixture that stops the slixmpp peers

QUESTION = "are you there?"


class Bot(AppServer):
    """The app server, answering every chat message with its body in capitals."""

    def __init__(self, server: Server) -> None:
        super().__init__(server)
        self.asked: asyncio.Queue[str] = asyncio.Queue()
        self.xmpp.register_handler(Callback("chat", MatchXPath(f"{{{ACCEPT}}}message/{{{ACCEPT}}}body"), self._chat))

    def _chat(self, msg: Any) -> None:
        self.asked.put_nowait(msg["body"])
        self.xmpp.make_message(mto=msg["from"], mfrom=APP, mbody=msg["body"].upper(), mtype="chat").send()


class Refusing(Bot):
    """An app server that no longer knows the device: every publish gets item-not-found (§8)."""

    def _publish(self, iq: Any) -> None:
        self.publishes.put_nowait(ET.fromstring(ET.tostring(iq.xml)))
        reply = iq.reply(clear=True)
        reply["error"]["type"] = "cancel"
        reply["error"]["condition"] = "item-not-found"
        reply.send()


async def bot_on(server: Server, peers: list[Any], kind: type[Bot] = Bot) -> Bot:
    bot = kind(server)
    peers.append(bot)
    await bot.start()
    return bot


async def alice_on(server: Server, peers: list[Any]) -> SlixClient:
    alice = SlixClient(server, "alice@localhost/desk")
    # An error reply repeats no body, and slixmpp's message event needs one.
    alice.xmpp.add_event_handler("message_error", alice.messages.put_nowait)
    peers.append(alice)
    assert await alice.start()
    return alice


async def refused(alice: SlixClient) -> None:
    """alice asks the component and gets service-unavailable back."""
    alice.send(APP, QUESTION, "q")
    answer = await alice.next_message(GUARD)
    assert answer["type"] == "error" and answer["error"]["condition"] == "service-unavailable"


async def test_a_component_on_another_node_is_reached_and_answers(tmp_path: Path, peers: list[Any]) -> None:
    async with two_nodes(tmp_path) as (a, b):
        bot = await bot_on(a, peers)
        alice = await alice_on(b, peers)
        alice.send(APP, QUESTION, "q")
        answer = await alice.next_message(GUARD)
        assert answer["type"] == "chat", answer
        assert answer["from"] == APP and answer["body"] == QUESTION.upper()
        assert bot.asked.get_nowait() == QUESTION


async def test_a_component_on_another_node_is_a_disco_item_of_the_host(tmp_path: Path, peers: list[Any]) -> None:
    """XEP-0030 §4.1: the host lists the component wherever it is connected, and only then."""
    async with two_nodes(tmp_path) as (a, b):
        alice = await alice_on(b, peers)
        alice.xmpp.register_plugin("xep_0030")

        async def items() -> list[str]:
            found = await alice.xmpp.plugin["xep_0030"].get_items(jid=JID("localhost"), timeout=GUARD)
            return [jid for jid, _node, _name in found["disco_items"]["items"]]

        assert APP not in await items()
        await bot_on(a, peers)
        assert APP in await items()


async def test_a_component_is_no_session_in_the_cluster_listing(tmp_path: Path, peers: list[Any]) -> None:
    """What ``schnack admin cluster`` shows: the component's link counts apart from the client
    sessions of its node, so a drain, which sends clients to the node with the fewest sessions,
    is not steered off a node by its components."""
    async with two_nodes(tmp_path) as (a, b):
        await bot_on(a, peers)
        await alice_on(b, peers)

        async def listed() -> dict[str, tuple[int, int]]:
            reply = await request(b.config.data_dir, "cluster")
            return {row["name"]: (row["sessions"], row["components"]) for row in reply["nodes"]}

        await eventually(listed, lambda rows: rows == {"a": (0, 1), "b": (1, 0)}, GUARD)


async def test_a_push_published_on_another_node_reaches_the_app_server(tmp_path: Path, peers: list[Any]) -> None:
    """bob's phone enabled push and left; his tablet hibernates on node b, which publishes."""
    async with two_nodes(tmp_path) as (a, b):
        app = await bot_on(a, peers)
        await phone_left(b, peers)
        await hibernating(b, "bob@localhost/tablet", peers)
        queued = handled(b)
        await alice_says(b, peers, TEXT)
        await wait(queued)
        check(*await app.next())


async def test_an_app_server_on_another_node_disables_a_registration(tmp_path: Path, peers: list[Any]) -> None:
    """The app server's error answers the publish of node b: node b drops the registration."""
    async with two_nodes(tmp_path) as (a, b):
        app = await bot_on(a, peers, Refusing)
        await phone_left(b, peers)
        await hibernating(b, "bob@localhost/tablet", peers)
        await alice_says(b, peers, TEXT)
        check(*await app.next())
        await eventually(lambda: b.storage.maps.items("localhost", "bob", "push"), lambda found: not found, GUARD)


async def test_a_component_gone_from_its_node_is_unavailable_everywhere(tmp_path: Path, peers: list[Any]) -> None:
    async with two_nodes(tmp_path) as (a, b):
        bot = await bot_on(a, peers)
        alice = await alice_on(b, peers)
        await bot.stop()
        await eventually(lambda: b.cluster.bus.lookup(APP), lambda found: not found, GUARD)
        await refused(alice)


async def test_a_component_whose_node_died_is_unavailable(tmp_path: Path, peers: list[Any]) -> None:
    async with two_nodes(tmp_path) as (a, b):
        await bot_on(a, peers)
        alice = await alice_on(b, peers)
        await a.cluster.bus.stop(leave=False)  # a stops heartbeating, as a crashed node would
        await eventually(lambda: b.cluster.bus.lookup(APP), lambda found: not found, GUARD)
        await refused(alice)


async def test_a_component_on_both_nodes_is_reached_on_each(tmp_path: Path, peers: list[Any]) -> None:
    """A component may connect to every node (one link per node, XEP-0114 §3): each node sends
    to its own link, so what one node sends arrives in order."""
    async with two_nodes(tmp_path) as (a, b):
        bots = [await bot_on(a, peers), await bot_on(b, peers)]
        for server, bot in zip((a, b), bots, strict=True):
            alice = await alice_on(server, peers)
            alice.send(APP, QUESTION, "q")
            answer = await alice.next_message(GUARD)
            assert answer["body"] == QUESTION.upper()
            assert bot.asked.get_nowait() == QUESTION
            await alice.stop()

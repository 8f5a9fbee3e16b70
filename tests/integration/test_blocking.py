"""XEP-0191 with slixmpp's xep_0191 plugin on real sockets: block, bounce, push, unblock."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from typing import Any
from xml.etree import ElementTree as ET

import pytest
from slixmpp import JID, ClientXMPP

from schnack.server.app import Server
from schnack.xmpp import ns
from schnack.xmpp.payloads.blocking import BLOCKED, NS

from ..harness import add_user

pytestmark = pytest.mark.asyncio

PASSWORD = "correct horse battery staple"
# A syntactically plausible OMEMO element, so that the default end-to-end policy lets it pass.
OMEMO = (
    f"<encrypted xmlns='{ns.OMEMO_LEGACY}'><header sid='1001'><key rid='2002'>a2V5</key>"
    "<iv>aXZpdml2aXZpdml2</iv></header><payload>Y2lwaGVydGV4dA==</payload></encrypted>"
)


class Peer:
    """A slixmpp client with the blocking plugin; it collects messages, errors and pushes."""

    def __init__(self, server: Server, jid: str) -> None:
        self.server = server
        self.xmpp = ClientXMPP(jid, PASSWORD)
        # The test server's certificate is self-signed.
        self.xmpp.ssl_context.check_hostname = False
        self.xmpp.ssl_context.verify_mode = ssl.CERT_NONE
        for plugin in ("xep_0030", "xep_0191", "xep_0199"):
            self.xmpp.register_plugin(plugin)
        self.messages: asyncio.Queue[Any] = asyncio.Queue()
        self.errors: asyncio.Queue[Any] = asyncio.Queue()
        self.pushes: asyncio.Queue[Any] = asyncio.Queue()
        self.started = asyncio.Event()
        self.xmpp.add_event_handler("session_start", lambda _: self.started.set())
        self.xmpp.add_event_handler("message", self.messages.put_nowait)
        self.xmpp.add_event_handler("message_error", self.errors.put_nowait)
        self.xmpp.add_event_handler("blocked", self.pushes.put_nowait)
        self.xmpp.add_event_handler("unblocked", self.pushes.put_nowait)

    async def start(self) -> None:
        host, port = self.server.bound["c2s"][0]
        self.xmpp.connect(host, port)
        async with asyncio.timeout(30):
            await self.started.wait()
        self.xmpp.send_presence()
        await self.sync()

    async def sync(self) -> None:
        """Everything sent before on this stream has been routed once the server answers a ping."""
        await self.xmpp.plugin["xep_0199"].send_ping(JID("localhost"), timeout=30)

    def send(self, to: str, body: str, id: str) -> None:
        msg = self.xmpp.make_message(mto=to, mbody=body, mtype="chat")
        msg["id"] = id
        msg.xml.append(ET.fromstring(OMEMO))
        msg.send()

    async def next(self, queue: asyncio.Queue[Any]) -> Any:
        async with asyncio.timeout(30):
            return await queue.get()

    async def stop(self) -> None:
        await self.xmpp.disconnect()


@pytest.fixture
async def peers() -> AsyncIterator[list[Peer]]:
    """Clients to disconnect when the test ends."""
    made: list[Peer] = []
    yield made
    for peer in made:
        await peer.stop()


async def online(server: Server, peers: list[Peer], jid: str) -> Peer:
    await add_user(server, jid.partition("@")[0], PASSWORD)
    peer = Peer(server, jid)
    peers.append(peer)
    await peer.start()
    return peer


def error_condition(msg: Any, condition: str) -> ET.Element | None:
    return msg.xml.find(f"{{{ns.CLIENT}}}error/{{{ns.STANZA_ERRORS}}}{condition}")  # type: ignore[no-any-return]


async def test_block_bounce_unblock(live_server: Server, peers: list[Peer]) -> None:
    alice = await online(live_server, peers, "alice@localhost/phone")
    mallory = await online(live_server, peers, "mallory@localhost/pc")

    info = await alice.xmpp.plugin["xep_0030"].get_info(jid=JID("localhost"), timeout=30)
    assert NS in info["disco_info"]["features"]
    assert await alice.xmpp.plugin["xep_0191"].get_blocked_jids(timeout=30) == set()

    await alice.xmpp.plugin["xep_0191"].block(JID("mallory@localhost"), timeout=30)
    push = await alice.next(alice.pushes)
    assert [item["jid"] for item in push["block"]] == [JID("mallory@localhost")]
    assert await alice.xmpp.plugin["xep_0191"].get_blocked_jids(timeout=30) == {JID("mallory@localhost")}

    # Mallory's messages bounce as if Alice were not there.
    mallory.send("alice@localhost", "let me in", id="m1")
    bounced = await mallory.next(mallory.errors)
    assert bounced["id"] == "m1"
    assert error_condition(bounced, "service-unavailable") is not None

    # Alice cannot write to Mallory either: not-acceptable with the blocked condition.
    alice.send("mallory@localhost", "go away", id="a1")
    refused = await alice.next(alice.errors)
    assert refused["id"] == "a1"
    assert error_condition(refused, "not-acceptable") is not None
    assert refused.xml.find(f"{{{ns.CLIENT}}}error/{BLOCKED}") is not None

    await alice.xmpp.plugin["xep_0191"].unblock(JID("mallory@localhost"), timeout=30)
    push = await alice.next(alice.pushes)
    assert [item["jid"] for item in push["unblock"]] == [JID("mallory@localhost")]
    assert await alice.xmpp.plugin["xep_0191"].get_blocked_jids(timeout=30) == set()

    mallory.send("alice@localhost", "friends again?", id="m2")
    msg = await alice.next(alice.messages)
    assert (msg["id"], msg["from"], msg["body"]) == ("m2", JID("mallory@localhost/pc"), "friends again?")
    # Nothing Alice sent while she blocked Mallory reached him, and nothing else bounced.
    await mallory.sync()
    assert mallory.messages.empty() and mallory.errors.empty()
    assert alice.errors.empty()

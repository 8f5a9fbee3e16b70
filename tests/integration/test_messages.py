"""Messages between slixmpp clients on real sockets (STARTTLS + SCRAM): online, refused, offline."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from xml.etree import ElementTree as ET

import pytest
from slixmpp import JID, ClientXMPP

from schnack.server.app import Server
from schnack.server.modules.e2e import REFUSAL
from schnack.xmpp import ns

from ..harness import add_user

pytestmark = pytest.mark.asyncio

PASSWORD = "correct horse battery staple"
PLUGINS = ("xep_0199", "xep_0203")
# A syntactically plausible OMEMO element: the server routes it without decrypting anything.
OMEMO = (
    f"<encrypted xmlns='{ns.OMEMO_LEGACY}'><header sid='1001'><key rid='2002' prekey='true'>a2V5</key>"
    "<iv>aXZpdml2aXZpdml2</iv></header><payload>Y2lwaGVydGV4dA==</payload></encrypted>"
)
FALLBACK = "I sent you an OMEMO encrypted message but your client doesn't seem to support that."


class Peer:
    """A slixmpp client on the server's STARTTLS port that collects the messages it gets."""

    def __init__(self, server: Server, jid: str) -> None:
        self.server = server
        self.xmpp = ClientXMPP(jid, PASSWORD)
        # The test server's certificate is self-signed.
        self.xmpp.ssl_context.check_hostname = False
        self.xmpp.ssl_context.verify_mode = ssl.CERT_NONE
        for plugin in PLUGINS:
            self.xmpp.register_plugin(plugin)
        self.messages: asyncio.Queue[Any] = asyncio.Queue()
        self.errors: asyncio.Queue[Any] = asyncio.Queue()
        self.started = asyncio.Event()
        self.xmpp.add_event_handler("session_start", lambda _: self.started.set())
        self.xmpp.add_event_handler("message", self.messages.put_nowait)
        self.xmpp.add_event_handler("message_error", self.errors.put_nowait)

    async def start(self) -> None:
        host, port = self.server.bound["c2s"][0]
        self.xmpp.connect(host, port)
        async with asyncio.timeout(30):
            await self.started.wait()

    async def available(self) -> None:
        """Send initial presence; the ping's answer means the server has processed it."""
        self.xmpp.send_presence()
        await self.sync()

    async def sync(self) -> None:
        """Everything sent before on this stream has been routed once the server answers a ping."""
        await self.xmpp.plugin["xep_0199"].send_ping(JID("localhost"), timeout=30)

    def send(self, to: str, body: str, *, encrypted: bool, id: str) -> None:
        msg = self.xmpp.make_message(mto=to, mbody=body, mtype="chat")
        msg["id"] = id
        if encrypted:
            msg.xml.append(ET.fromstring(OMEMO))
        msg.send()

    async def next_message(self) -> Any:
        async with asyncio.timeout(30):
            return await self.messages.get()

    async def next_error(self) -> Any:
        async with asyncio.timeout(30):
            return await self.errors.get()

    async def stop(self) -> None:
        await self.xmpp.disconnect()


@pytest.fixture
async def peers() -> AsyncIterator[list[Peer]]:
    """Clients to disconnect when the test ends."""
    made: list[Peer] = []
    yield made
    for peer in made:
        await peer.stop()


async def account(server: Server, user: str) -> None:
    await add_user(server, user, PASSWORD)


async def online(server: Server, peers: list[Peer], jid: str) -> Peer:
    peer = Peer(server, jid)
    peers.append(peer)
    await peer.start()
    await peer.available()
    return peer


def encrypted_element(msg: Any) -> ET.Element | None:
    return msg.xml.find(f"{{{ns.OMEMO_LEGACY}}}encrypted")  # type: ignore[no-any-return]


async def test_encrypted_message_delivered_online(live_server: Server, peers: list[Peer]) -> None:
    await account(live_server, "alice")
    await account(live_server, "bob")
    alice = await online(live_server, peers, "alice@localhost/phone")
    bob = await online(live_server, peers, "bob@localhost/laptop")
    alice.send("bob@localhost", FALLBACK, encrypted=True, id="online-1")
    msg = await bob.next_message()
    assert msg["id"] == "online-1"
    assert msg["from"] == "alice@localhost/phone"
    assert msg["to"] == "bob@localhost"
    assert msg["body"] == FALLBACK
    payload = encrypted_element(msg)
    assert payload is not None
    assert payload.findtext(f"{{{ns.OMEMO_LEGACY}}}payload") == "Y2lwaGVydGV4dA=="
    assert msg["delay"]["stamp"] is None  # delivered live, not from storage


async def test_plaintext_refused_with_policy_violation(live_server: Server, peers: list[Peer]) -> None:
    await account(live_server, "alice")
    await account(live_server, "bob")
    alice = await online(live_server, peers, "alice@localhost/phone")
    bob = await online(live_server, peers, "bob@localhost/laptop")
    alice.send("bob@localhost", "plain words", encrypted=False, id="plain-1")
    error = await alice.next_error()
    assert error["id"] == "plain-1"
    assert error["type"] == "error"
    # slixmpp 1.17 knows only RFC 3920's conditions, so its ["condition"] reads '' for
    # policy-violation (RFC 6120 §8.3.3.12): look at the element itself.
    assert error.xml.find(f"{{{ns.CLIENT}}}error/{{{ns.STANZA_ERRORS}}}policy-violation") is not None
    assert error["error"]["type"] == "modify"
    assert error["error"]["text"] == REFUSAL
    # Messages between two parties stay in order: the first one Bob gets is the encrypted one sent
    # after the refused plaintext, so the plaintext never reached him.
    alice.send("bob@localhost", FALLBACK, encrypted=True, id="after-1")
    msg = await bob.next_message()
    assert msg["id"] == "after-1"


async def test_offline_message_delivered_at_next_login(live_server: Server, peers: list[Peer]) -> None:
    await account(live_server, "alice")
    await account(live_server, "bob")
    alice = await online(live_server, peers, "alice@localhost/phone")
    before = datetime.now(UTC)
    alice.send("bob@localhost", FALLBACK, encrypted=True, id="offline-1")
    alice.send("bob@localhost/gone", FALLBACK, encrypted=True, id="offline-2")
    await alice.sync()
    after = datetime.now(UTC)
    assert alice.errors.empty()
    bob = await online(live_server, peers, "bob@localhost/laptop")
    first, second = await bob.next_message(), await bob.next_message()
    assert [first["id"], second["id"]] == ["offline-1", "offline-2"]
    for msg in (first, second):
        assert msg["from"] == "alice@localhost/phone"
        assert encrypted_element(msg) is not None
        assert msg["delay"]["from"] == "localhost"
        stamp = msg["delay"]["stamp"]
        assert before - timedelta(seconds=1) <= stamp <= after
    assert await live_server.storage.archive.count("localhost", "bob", "offline") == 0


"""Roster and presence between slixmpp clients on real sockets: pushes, subscriptions, presence, leaving."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from slixmpp import JID, ClientXMPP
from slixmpp.types import PresenceTypes

from schnack.server.app import Server

from ..harness import add_user

pytestmark = pytest.mark.asyncio

PASSWORD = "correct horse battery staple"
WAIT = 30


class Peer:
    """A slixmpp client that answers nothing by itself and records every presence and roster change."""

    def __init__(self, server: Server, jid: str) -> None:
        self.server = server
        self.xmpp = ClientXMPP(jid, PASSWORD)
        # The test server's certificate is self-signed.
        self.xmpp.ssl_context.check_hostname = False
        self.xmpp.ssl_context.verify_mode = ssl.CERT_NONE
        self.xmpp.register_plugin("xep_0199")
        # Subscription requests wait for the test to answer them.
        self.xmpp.auto_authorize = None
        self.xmpp.auto_subscribe = False
        self.presences: asyncio.Queue[Any] = asyncio.Queue()
        self.roster_changed = asyncio.Event()
        self.started = asyncio.Event()
        self.xmpp.add_event_handler("session_start", lambda _: self.started.set())
        self.xmpp.add_event_handler("presence", self.presences.put_nowait)
        self.xmpp.add_event_handler("roster_update", lambda _: self.roster_changed.set())

    @property
    def features(self) -> set[str]:
        return set(self.xmpp.features)

    async def start(self) -> None:
        host, port = self.server.bound["c2s"][0]
        self.xmpp.connect(host, port)
        async with asyncio.timeout(WAIT):
            await self.started.wait()
        await self.xmpp.get_roster(timeout=WAIT)

    async def sync(self) -> None:
        """Everything sent before on this stream has been routed once the server answers a ping."""
        await self.xmpp.plugin["xep_0199"].send_ping(JID("localhost"), timeout=WAIT)

    def send(self, to: str | None = None, kind: PresenceTypes | None = None, **kwargs: Any) -> None:
        self.xmpp.send_presence(pto=to, ptype=kind, **kwargs)

    async def presence(self, kind: str, sender: str) -> Any:
        """The next presence of ``kind`` ('available', 'subscribe', ...) from ``sender``; others are skipped."""
        async with asyncio.timeout(WAIT):
            while True:
                stanza = await self.presences.get()
                if stanza["type"] == kind and str(stanza["from"]) == sender:
                    return stanza

    async def roster_until(self, check: Callable[[Any], bool]) -> None:
        """Wait until the client's roster, updated by pushes, passes ``check``."""
        async with asyncio.timeout(WAIT):
            while not check(self.xmpp.client_roster):
                self.roster_changed.clear()
                await self.roster_changed.wait()

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
    user = jid.partition("@")[0]
    if await server.storage.accounts.get("localhost", user) is None:
        await add_user(server, user, PASSWORD)
    peer = Peer(server, jid)
    peers.append(peer)
    await peer.start()
    peer.send()
    await peer.sync()
    return peer


async def subscribe(user: Peer, user_jid: str, contact: Peer, contact_jid: str) -> None:
    """``user`` asks for ``contact``'s presence and ``contact`` approves (RFC 6121 §3.1)."""
    user.send(contact_jid, "subscribe")
    request = await contact.presence("subscribe", user_jid)
    assert str(request["to"]) == contact_jid
    contact.send(user_jid, "subscribed")
    await user.presence("subscribed", contact_jid)


async def test_features_roster_push_and_handshake(live_server: Server, peers: list[Peer]) -> None:
    alice = await online(live_server, peers, "alice@localhost/phone")
    bob = await online(live_server, peers, "bob@localhost/laptop")
    assert {"rosterver", "preapproval"} <= alice.features

    sent = alice.xmpp.update_roster(JID("bob@localhost"), name="Bob", groups=["Friends"], timeout=WAIT)
    assert sent is not None
    await sent
    await alice.roster_until(lambda r: r["bob@localhost"]["name"] == "Bob")
    assert alice.xmpp.client_roster["bob@localhost"]["groups"] == ["Friends"]

    alice.send("bob@localhost", "subscribe")
    await alice.roster_until(lambda r: r["bob@localhost"]["pending_out"])
    await bob.presence("subscribe", "alice@localhost")
    bob.send("alice@localhost", "subscribed")
    await alice.presence("subscribed", "bob@localhost")
    # Approval brings Bob's presence to Alice at once.
    await alice.presence("available", "bob@localhost/laptop")
    await alice.roster_until(lambda r: r["bob@localhost"]["subscription"] == "to")
    await bob.roster_until(lambda r: r["alice@localhost"]["subscription"] == "from")

    await subscribe(bob, "bob@localhost", alice, "alice@localhost")
    await bob.presence("available", "alice@localhost/phone")
    await alice.roster_until(lambda r: r["bob@localhost"]["subscription"] == "both")
    await bob.roster_until(lambda r: r["alice@localhost"]["subscription"] == "both")
    assert alice.xmpp.client_roster["bob@localhost"]["name"] == "Bob"


async def test_presence_both_ways_then_unavailable_on_disconnect(
    live_server: Server, peers: list[Peer]
) -> None:
    alice = await online(live_server, peers, "alice@localhost/phone")
    bob = await online(live_server, peers, "bob@localhost/laptop")
    await subscribe(alice, "alice@localhost", bob, "bob@localhost")
    await subscribe(bob, "bob@localhost", alice, "alice@localhost")

    alice.send(pshow="dnd", pstatus="in a meeting")
    seen = await bob.presence("dnd", "alice@localhost/phone")
    assert seen["status"] == "in a meeting"
    bob.send(pshow="away", pstatus="lunch")
    seen = await alice.presence("away", "bob@localhost/laptop")
    assert seen["status"] == "lunch"

    await alice.stop()
    peers.remove(alice)
    await bob.presence("unavailable", "alice@localhost/phone")
    assert not bob.xmpp.client_roster["alice@localhost"].resources


async def test_new_login_gets_contacts_presence_and_waiting_requests(
    live_server: Server, peers: list[Peer]
) -> None:
    alice = await online(live_server, peers, "alice@localhost/phone")
    bob = await online(live_server, peers, "bob@localhost/laptop")
    await subscribe(alice, "alice@localhost", bob, "bob@localhost")
    await add_user(live_server, "carol", PASSWORD)
    # Carol is offline: her server keeps Alice's request for her.
    alice.send("carol@localhost", "subscribe")
    await alice.sync()

    tablet = await online(live_server, peers, "alice@localhost/tablet")
    await tablet.presence("available", "bob@localhost/laptop")  # answered probe (§4.3)
    await tablet.roster_until(lambda r: r["bob@localhost"]["subscription"] == "to")

    carol = await online(live_server, peers, "carol@localhost/desk")
    await carol.presence("subscribe", "alice@localhost")

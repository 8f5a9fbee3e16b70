"""XEP-0352 Client State Indication with slixmpp on real sockets: 20 contacts, an inactive phone."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from typing import Any
from xml.etree import ElementTree as ET

import pytest
from slixmpp import JID, ClientXMPP

from schnack.server.app import Server
from schnack.server.modules.csi import ClientStateIndication
from schnack.server.storage.base import RosterItem
from schnack.xmpp import ns
from schnack.xmpp.jid import JID as ServerJID

from ..harness import add_user

pytestmark = pytest.mark.asyncio

PASSWORD = "correct horse battery staple"
WAIT = 30
PHONE = "phone@localhost/mobile"
CONTACTS = [f"contact{i}@localhost/desk" for i in range(20)]
PRESENCE = f"{{{ns.CLIENT}}}presence"
MESSAGE = f"{{{ns.CLIENT}}}message"
# A syntactically plausible OMEMO element: the server routes it without decrypting anything.
OMEMO = (
    f"<encrypted xmlns='{ns.OMEMO_LEGACY}'><header sid='1001'><key rid='2002'>a2V5</key>"
    "<iv>aXZpdml2aXZpdml2</iv></header><payload>Y2lwaGVydGV4dA==</payload></encrypted>"
)


class Peer:
    """A slixmpp client that records every presence and message it receives, in arrival order."""

    def __init__(self, server: Server, jid: str) -> None:
        self.server = server
        self.jid = jid
        self.xmpp = ClientXMPP(jid, PASSWORD)
        # The test server's certificate is self-signed.
        self.xmpp.ssl_context.check_hostname = False
        self.xmpp.ssl_context.verify_mode = ssl.CERT_NONE
        self.xmpp.register_plugin("xep_0199")
        self.xmpp.register_plugin("xep_0352")
        self.received: list[ET.Element] = []
        self.arrived = asyncio.Event()
        self.started = asyncio.Event()
        self.xmpp.add_event_handler("session_start", lambda _: self.started.set())
        self.xmpp.add_filter("in", self._incoming)

    def _incoming(self, stanza: Any) -> Any:
        el = stanza.xml
        if el.tag in (PRESENCE, MESSAGE) and el.get("from") != self.jid:
            self.received.append(el)
            self.arrived.set()
        return stanza

    async def start(self) -> None:
        host, port = self.server.bound["c2s"][0]
        self.xmpp.connect(host, port)
        async with asyncio.timeout(WAIT):
            await self.started.wait()

    async def sync(self) -> None:
        """Everything sent before on this stream has been routed once the server answers a ping."""
        await self.xmpp.plugin["xep_0199"].send_ping(JID("localhost"), timeout=WAIT)

    def take(self) -> list[ET.Element]:
        received, self.received = self.received, []
        return received

    async def until(self, count: int) -> None:
        async with asyncio.timeout(WAIT):
            while len(self.received) < count:
                self.arrived.clear()
                await self.arrived.wait()

    async def stop(self) -> None:
        await self.xmpp.disconnect()


@pytest.fixture
async def peers() -> AsyncIterator[list[Peer]]:
    """Clients to disconnect when the test ends."""
    made: list[Peer] = []
    yield made
    for peer in made:
        await peer.stop()


async def befriend(server: Server, user: str, contacts: list[str]) -> None:
    """Mutual subscriptions between ``user`` and each contact, written as the roster module would."""
    for jid in [user, *contacts]:
        await add_user(server, jid.partition("@")[0], PASSWORD)
    for contact in contacts:
        bare_user, bare_contact = user.partition("/")[0], contact.partition("/")[0]
        await server.storage.roster.set_item(
            "localhost", bare_user.partition("@")[0], RosterItem(bare_contact, subscription="both")
        )
        await server.storage.roster.set_item(
            "localhost", bare_contact.partition("@")[0], RosterItem(bare_user, subscription="both")
        )


async def online(server: Server, peers: list[Peer], jids: list[str]) -> list[Peer]:
    """Log in and send initial presence."""
    made = [Peer(server, jid) for jid in jids]
    peers.extend(made)
    await asyncio.gather(*(peer.start() for peer in made))
    for peer in made:
        peer.xmpp.send_presence()
    await asyncio.gather(*(peer.sync() for peer in made))
    return made


def show(el: ET.Element) -> tuple[str | None, str | None, str | None]:
    return el.get("from"), el.findtext(f"{{{ns.CLIENT}}}show"), el.findtext(f"{{{ns.CLIENT}}}status")


async def test_inactive_phone_sees_only_the_latest_presence_and_messages_at_once(
    live_server: Server, peers: list[Peer]
) -> None:
    await befriend(live_server, PHONE, CONTACTS)
    contacts = await online(live_server, peers, CONTACTS)
    (phone,) = await online(live_server, peers, [PHONE])
    await phone.until(len(CONTACTS))  # the contacts' presence, answering the phone's probes
    phone.take()
    assert phone.xmpp.plugin["xep_0352"].enabled  # the stream feature was offered

    phone.xmpp.plugin["xep_0352"].send_inactive()
    await phone.sync()
    for round_, state in enumerate(("away", "xa", "dnd")):
        for contact in contacts:
            contact.xmpp.send_presence(pshow=state, pstatus=f"round {round_}")
    await asyncio.gather(*(contact.sync() for contact in contacts))
    # Every update has reached the phone's session; the server kept back all but one per contact.
    session = live_server.sessions.get(ServerJID.parse(PHONE))
    assert session is not None
    module = live_server.modules["csi"]
    assert isinstance(module, ClientStateIndication)
    assert module.saved(session).stanzas == 2 * len(CONTACTS)

    phone.xmpp.plugin["xep_0352"].send_active()
    await phone.sync()  # answered after what was held (XEP-0352 §5.1)
    latest = phone.take()
    assert sorted(show(el) for el in latest) == sorted((jid, "dnd", "round 2") for jid in CONTACTS)

    # Inactive again: presence waits, a chat message does not, and brings what waited before it.
    phone.xmpp.plugin["xep_0352"].send_inactive()
    await phone.sync()
    for contact in contacts[:5]:
        contact.xmpp.send_presence(pshow="chat", pstatus="back")
    await asyncio.gather(*(contact.sync() for contact in contacts[:5]))
    message = contacts[7].xmpp.make_message(mto=JID(PHONE), mbody="are you there?", mtype="chat")
    message.xml.append(ET.fromstring(OMEMO))
    message["id"] = "m1"
    message.send()
    await phone.until(6)
    got = phone.take()
    assert sorted(show(el) for el in got[:5]) == [(jid, "chat", "back") for jid in sorted(CONTACTS[:5])]
    assert got[5].tag == MESSAGE
    assert (got[5].get("from"), got[5].findtext(f"{{{ns.CLIENT}}}body")) == (CONTACTS[7], "are you there?")

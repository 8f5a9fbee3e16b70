"""XEP-0280 message carbons between slixmpp clients on real sockets: each user has two devices."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from typing import Any
from xml.etree import ElementTree as ET

import pytest
from slixmpp import JID, ClientXMPP
from slixmpp.stanza import Message

from schnack.server.app import Server
from schnack.xmpp import ns
from schnack.xmpp.payloads.carbons import Carbon

from ..harness import add_user

pytestmark = pytest.mark.asyncio

PASSWORD = "correct horse battery staple"
# OMEMO-shaped: the default policy refuses plaintext chat bodies; the server never looks inside.
OMEMO = (
    f"<encrypted xmlns='{ns.OMEMO_LEGACY}'><header sid='1001'><key rid='2002'>a2V5</key>"
    "<iv>aXZpdml2aXZpdml2</iv></header><payload>Y2lwaGVydGV4dA==</payload></encrypted>"
)
SID = f"{{{ns.SID}}}stanza-id"
FALLBACK = "I sent you an OMEMO encrypted message but your client doesn't seem to support that."


class Device:
    """A slixmpp client with carbons (its xep_0280 plugin) that keeps every message it receives."""

    def __init__(self, server: Server, jid: str) -> None:
        self.server = server
        self.xmpp = ClientXMPP(jid, PASSWORD)
        # The test server's certificate is self-signed.
        self.xmpp.ssl_context.check_hostname = False
        self.xmpp.ssl_context.verify_mode = ssl.CERT_NONE
        for plugin in ("xep_0199", "xep_0280"):
            self.xmpp.register_plugin(plugin)
        self.stanzas: asyncio.Queue[Message] = asyncio.Queue()
        self.carbons: asyncio.Queue[tuple[str, Message]] = asyncio.Queue()
        self.started = asyncio.Event()
        self.xmpp.add_event_handler("session_start", lambda _: self.started.set())
        self.xmpp.add_filter("in", self._incoming)
        # slixmpp raises these only for carbons from its own account (XEP-0280 §11).
        self.xmpp.add_event_handler("carbon_received", lambda msg: self.carbons.put_nowait(("received", msg)))
        self.xmpp.add_event_handler("carbon_sent", lambda msg: self.carbons.put_nowait(("sent", msg)))

    def _incoming(self, stanza: Any) -> Any:
        if isinstance(stanza, Message):
            self.stanzas.put_nowait(stanza)
        return stanza

    async def start(self, priority: int) -> None:
        """Log in, enable carbons, then send initial presence with ``priority``."""
        host, port = self.server.bound["c2s"][0]
        self.xmpp.connect(host, port)
        async with asyncio.timeout(30):
            await self.started.wait()
            await self.xmpp.plugin["xep_0280"].enable()
        self.xmpp.send_presence(ppriority=priority)
        # The ping's answer means the server has processed everything sent before it.
        await self.xmpp.plugin["xep_0199"].send_ping(JID("localhost"), timeout=30)

    def send(self, to: str, id: str) -> None:
        msg = self.xmpp.make_message(mto=JID(to), mbody=FALLBACK, mtype="chat")
        msg["id"] = id
        msg.xml.append(ET.fromstring(OMEMO))
        msg.send()

    async def next(self) -> ET.Element:
        """The next message stanza this device received, as XML."""
        async with asyncio.timeout(30):
            stanza = await self.stanzas.get()
        return stanza.xml

    async def next_carbon(self) -> tuple[str, Any]:
        """The next carbon slixmpp accepted: its direction and the message."""
        async with asyncio.timeout(30):
            return await self.carbons.get()

    async def stop(self) -> None:
        await self.xmpp.disconnect()


@pytest.fixture
async def devices() -> AsyncIterator[list[Device]]:
    """Clients to disconnect when the test ends."""
    made: list[Device] = []
    yield made
    for device in made:
        await device.stop()


async def online(server: Server, devices: list[Device], jid: str, priority: int) -> Device:
    device = Device(server, jid)
    devices.append(device)
    await device.start(priority)
    return device


def unwrap(el: ET.Element, direction: str, owner: str) -> ET.Element:
    """The message inside a carbon, checking the wrapper (XEP-0280 §7, §8)."""
    assert el.get("from") == owner, ET.tostring(el)
    assert el.get("type") == "chat"
    (inner,) = el
    carbon = Carbon.from_xml(inner)
    assert carbon.direction == direction
    return carbon.message


def encrypted(el: ET.Element) -> bool:
    payload = el.find(f"{{{ns.OMEMO_LEGACY}}}encrypted/{{{ns.OMEMO_LEGACY}}}payload")
    return payload is not None and payload.text == "Y2lwaGVydGV4dA=="


async def test_conversation_shows_on_both_devices_of_each_user(
    live_server: Server, devices: list[Device]
) -> None:
    for user in ("alice", "bob"):
        await add_user(live_server, user, PASSWORD)
    alice_phone = await online(live_server, devices, "alice@localhost/phone", 0)
    alice_laptop = await online(live_server, devices, "alice@localhost/laptop", 0)
    bob_phone = await online(live_server, devices, "bob@localhost/phone", 5)
    bob_laptop = await online(live_server, devices, "bob@localhost/laptop", 0)

    # To Bob's bare JID: his top-priority phone gets the message, his laptop a received carbon;
    # Alice's laptop gets a sent carbon.
    alice_phone.send("bob@localhost", "c1")
    original = await bob_phone.next()
    assert original.get("id") == "c1" and original.get("from") == "alice@localhost/phone"
    assert encrypted(original)
    copy = unwrap(await bob_laptop.next(), "received", "bob@localhost")
    assert copy.get("id") == "c1" and copy.get("to") == "bob@localhost" and encrypted(copy)
    copy = unwrap(await alice_laptop.next(), "sent", "alice@localhost")
    assert copy.get("id") == "c1" and copy.get("from") == "alice@localhost/phone" and encrypted(copy)

    # Bob answers from his phone to Alice's phone: the other two devices get carbons of it.
    bob_phone.send("alice@localhost/phone", "r1")
    # The sender's own message never comes back to it: the first thing Alice's phone sees is the answer.
    answer = await alice_phone.next()
    assert answer.get("id") == "r1" and answer.get("from") == "bob@localhost/phone"
    copy = unwrap(await alice_laptop.next(), "received", "alice@localhost")
    assert copy.get("id") == "r1" and copy.get("to") == "alice@localhost/phone"
    copy = unwrap(await bob_laptop.next(), "sent", "bob@localhost")
    assert copy.get("id") == "r1" and copy.get("to") == "alice@localhost/phone"

    # slixmpp's own carbons support accepted every copy, in order.
    for device, expected in (
        (alice_laptop, [("sent", "c1"), ("received", "r1")]),
        (bob_laptop, [("received", "c1"), ("sent", "r1")]),
    ):
        for direction, id in expected:
            kind, msg = await device.next_carbon()
            assert (kind, msg[f"carbon_{kind}"]["id"]) == (direction, id)


async def test_sent_carbon_carries_the_id_the_archive_keeps(live_server: Server, devices: list[Device]) -> None:
    """XEP-0313 §3.5 with XEP-0280 §8: the laptop knows the message the phone sent by the id under
    which the archive keeps it; the contact sees only its own archive's id."""
    for user in ("alice", "bob"):
        await add_user(live_server, user, PASSWORD)
    alice_phone = await online(live_server, devices, "alice@localhost/phone", 0)
    alice_laptop = await online(live_server, devices, "alice@localhost/laptop", 0)
    bob_phone = await online(live_server, devices, "bob@localhost/phone", 0)
    alice_phone.send("bob@localhost", "s1")
    original = await bob_phone.next()
    assert [sid.get("by") for sid in original.findall(SID)] == ["bob@localhost"]
    copy = unwrap(await alice_laptop.next(), "sent", "alice@localhost")
    (sid,) = copy.findall(SID)
    assert sid.get("by") == "alice@localhost" and sid.get("id")

    query = alice_laptop.xmpp.make_iq_set()
    query.append(ET.fromstring("<query xmlns='urn:xmpp:mam:2' queryid='q1'/>"))
    await query.send(timeout=30)
    result = (await alice_laptop.next()).find("{urn:xmpp:mam:2}result")
    assert result is not None and result.get("queryid") == "q1"
    assert result.get("id") == sid.get("id")
    archived = result.find(f"{{urn:xmpp:forward:0}}forwarded/{{{ns.CLIENT}}}message")
    assert archived is not None and archived.get("id") == "s1"

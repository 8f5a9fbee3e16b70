"""The message archive on real sockets, driven by slixmpp's XEP-0313 and XEP-0059 plugins.

Alice writes to Bob while he is offline; the device Bob logs in with gets the messages from
offline storage, each with the archive's stanza-id; a second device pages through the archive
both ways and finds the same ids; a device that logs in later finds the whole conversation.
"""

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

from ..harness import add_user

pytestmark = pytest.mark.asyncio

PASSWORD = "correct horse battery staple"
PLUGINS = ("xep_0030", "xep_0059", "xep_0199", "xep_0203", "xep_0297", "xep_0313", "xep_0359")
# OMEMO-shaped (the server's default policy refuses plaintext); the server never looks inside.
OMEMO = (
    f"<encrypted xmlns='{ns.OMEMO_LEGACY}'><header sid='1001'><key rid='2002'>a2V5</key>"
    "<iv>aXZpdml2aXZpdml2</iv></header><payload>{payload}</payload></encrypted>"
)
FALLBACK = "I sent you an OMEMO encrypted message but your client doesn't seem to support that."


class Device:
    """A slixmpp client on the STARTTLS port that keeps the messages it gets."""

    def __init__(self, server: Server, jid: str) -> None:
        self.server = server
        self.xmpp = ClientXMPP(jid, PASSWORD)
        self.xmpp.ssl_context.check_hostname = False
        self.xmpp.ssl_context.verify_mode = ssl.CERT_NONE
        for plugin in PLUGINS:
            self.xmpp.register_plugin(plugin)
        self.messages: asyncio.Queue[Any] = asyncio.Queue()
        self.started = asyncio.Event()
        self.xmpp.add_event_handler("session_start", lambda _: self.started.set())
        self.xmpp.add_event_handler("message", self._message)

    def _message(self, msg: Any) -> None:
        # Archive results are messages too; they are collected by the MAM plugin instead.
        if msg.xml.find("{urn:xmpp:mam:2}result") is None:
            self.messages.put_nowait(msg)

    async def start(self, *, available: bool) -> None:
        host, port = self.server.bound["c2s"][0]
        self.xmpp.connect(host, port)
        async with asyncio.timeout(30):
            await self.started.wait()
        if available:
            self.xmpp.send_presence()
        await self.sync()

    async def sync(self) -> None:
        """Everything sent before on this stream has been routed once the server answers a ping."""
        await self.xmpp.plugin["xep_0199"].send_ping(JID("localhost"), timeout=30)

    def send(self, to: str, secret: str, id: str) -> None:
        msg = self.xmpp.make_message(mto=to, mbody=FALLBACK, mtype="chat")
        msg["id"] = id
        msg.xml.append(ET.fromstring(OMEMO.format(payload=secret)))
        msg.send()

    async def next_message(self) -> Any:
        async with asyncio.timeout(30):
            return await self.messages.get()

    async def archive(self, *, reverse: bool = False, page: int = 2, with_jid: str | None = None) -> list[Any]:
        """Every archived message, paged through with RSM; newest first when ``reverse``."""
        mam = self.xmpp.plugin["xep_0313"]
        found = []
        async with asyncio.timeout(60):
            async for result in mam.iterate(with_jid=JID(with_jid) if with_jid else None, reverse=reverse,
                                            rsm={"max": page}):
                found.append(result)
        return found

    async def stop(self) -> None:
        await self.xmpp.disconnect()


@pytest.fixture
async def devices() -> AsyncIterator[list[Device]]:
    made: list[Device] = []
    yield made
    for device in made:
        await device.stop()


async def device(server: Server, made: list[Device], jid: str, *, available: bool = True) -> Device:
    each = Device(server, jid)
    made.append(each)
    await each.start(available=available)
    return each


def secret_of(msg: Any) -> str | None:
    return msg.xml.findtext(f"{{{ns.OMEMO_LEGACY}}}encrypted/{{{ns.OMEMO_LEGACY}}}payload")  # type: ignore[no-any-return]


def summary(results: list[Any]) -> list[tuple[str, str, str | None]]:
    """(archive id, sender, encrypted payload) of MAM results."""
    out = []
    for result in results:
        forwarded = result["mam_result"]["forwarded"]
        message = forwarded["stanza"]
        assert forwarded["delay"]["stamp"] is not None
        out.append((result["mam_result"]["id"], str(message["from"]), secret_of(message)))
    return out


async def test_offline_then_every_device_finds_the_conversation(live_server: Server, devices: list[Device]) -> None:
    for user in ("alice", "bob"):
        await add_user(live_server, user, PASSWORD)
    alice = await device(live_server, devices, "alice@localhost/phone")
    for i in range(5):
        alice.send("bob@localhost", f"c2VjcmV0{i}", id=f"a{i}")
    await alice.sync()

    # Bob's phone logs in: offline storage delivers, each message carrying its archive id.
    phone = await device(live_server, devices, "bob@localhost/phone")
    delivered = [await phone.next_message() for _ in range(5)]
    assert [msg["id"] for msg in delivered] == [f"a{i}" for i in range(5)]
    assert all(msg["stanza_id"]["by"] == "bob@localhost" for msg in delivered)
    incoming = [msg["stanza_id"]["id"] for msg in delivered]
    assert len(set(incoming)) == 5 and all(incoming)
    phone.send("alice@localhost", "cmVwbHk=", id="b0")
    reply = await alice.next_message()
    assert reply["id"] == "b0" and reply["stanza_id"]["by"] == "alice@localhost"

    # A second device pages through Bob's archive forwards, two at a time, then backwards.
    laptop = await device(live_server, devices, "bob@localhost/laptop", available=False)
    forwards = summary(await laptop.archive(page=2))
    assert [entry[0] for entry in forwards[:5]] == incoming
    assert [entry[1:] for entry in forwards] == [
        *(("alice@localhost/phone", f"c2VjcmV0{i}") for i in range(5)),
        ("bob@localhost/phone", "cmVwbHk="),
    ]
    backwards = summary(await laptop.archive(page=2, reverse=True))
    assert backwards == list(reversed(forwards))

    # A device that logs in later finds the conversation with Alice, and so does Alice.
    await phone.stop()
    tablet = await device(live_server, devices, "bob@localhost/tablet")
    assert summary(await tablet.archive(page=4, with_jid="alice@localhost")) == forwards
    assert tablet.messages.empty()  # offline storage was emptied by the phone; the archive kept it all
    alices = summary(await alice.archive(page=3))
    assert [entry[1:] for entry in alices] == [entry[1:] for entry in forwards]
    assert alices[-1][0] == reply["stanza_id"]["id"]


async def test_archive_features_and_query_form(live_server: Server, devices: list[Device]) -> None:
    await add_user(live_server, "bob", PASSWORD)
    bob = await device(live_server, devices, "bob@localhost/laptop", available=False)
    info = await bob.xmpp.plugin["xep_0030"].get_info(jid=JID("bob@localhost"), timeout=30)
    features = info["disco_info"]["features"]
    assert {"urn:xmpp:mam:2", "urn:xmpp:mam:2#extended", "urn:xmpp:sid:0"} <= set(features)
    form = await bob.xmpp.plugin["xep_0313"].get_fields(timeout=30)
    assert {"with", "start", "end", "before-id", "after-id", "ids"} <= set(form.get_fields())

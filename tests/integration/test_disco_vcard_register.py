"""Disco with caps, vCard, private storage and in-band registration, driven by slixmpp on real sockets."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import pytest
from slixmpp import JID, ClientXMPP
from slixmpp.stanza import StreamFeatures

from schnack.server.app import Server
from schnack.xmpp import ns
from schnack.xmpp.payloads.caps import Caps, compute_ver
from schnack.xmpp.payloads.disco import DiscoInfo

from ..harness import add_user, running
from .wire import Wire

pytestmark = pytest.mark.asyncio

PLUGINS = ("xep_0030", "xep_0049", "xep_0054", "xep_0115")
REGISTER_PLUGINS = (*PLUGINS, "xep_0004", "xep_0066", "xep_0077")
BOOKMARKS = "storage:bookmarks"


class Peer:
    """A slixmpp client on the server's STARTTLS port."""

    def __init__(self, server: Server, jid: str, password: str, plugins: tuple[str, ...] = PLUGINS) -> None:
        self.server = server
        self.xmpp = ClientXMPP(jid, password)
        # The test server's certificate is self-signed.
        self.xmpp.ssl_context.check_hostname = False
        self.xmpp.ssl_context.verify_mode = ssl.CERT_NONE
        for plugin in plugins:
            self.xmpp.register_plugin(plugin)
        self.features: list[ET.Element] = []
        self.started = asyncio.Event()
        self.failed = asyncio.Event()
        self.xmpp.add_event_handler("session_start", lambda _: self.started.set())
        self.xmpp.add_event_handler("failed_all_auth", lambda _: self.failed.set())
        self.xmpp.add_filter("in", self._capture)

    def _capture(self, stanza: Any) -> Any:
        if isinstance(stanza, StreamFeatures):
            self.features.append(stanza.xml)
        return stanza

    async def start(self) -> bool:
        """Connect and log in; False when authentication failed."""
        host, port = self.server.bound["c2s"][0]
        self.xmpp.connect(host, port)
        started = asyncio.ensure_future(self.started.wait())
        failed = asyncio.ensure_future(self.failed.wait())
        async with asyncio.timeout(30):
            await asyncio.wait({started, failed}, return_when=asyncio.FIRST_COMPLETED)
        started.cancel()
        failed.cancel()
        return self.started.is_set()

    async def stop(self) -> None:
        await self.xmpp.disconnect()


@pytest.fixture
async def peers() -> AsyncIterator[list[Peer]]:
    """Clients to disconnect when the test ends."""
    made: list[Peer] = []
    yield made
    for peer in made:
        await peer.stop()


async def online(server: Server, peers: list[Peer], user: str, password: str = "pencil-sharpener") -> Peer:
    if await server.storage.accounts.get("localhost", user) is None:
        await add_user(server, user, password)
    peer = Peer(server, f"{user}@localhost/test", password)
    peers.append(peer)
    assert await peer.start()
    return peer


async def test_domain_disco_and_caps(live_server: Server, peers: list[Peer]) -> None:
    alice = await online(live_server, peers, "alice")
    iq = await alice.xmpp.plugin["xep_0030"].get_info(jid=JID("localhost"))
    features = set(iq["disco_info"]["features"])
    assert {ns.DISCO_INFO, ns.DISCO_ITEMS, ns.PING, ns.VERSION, ns.VCARD} <= features
    assert ("server", "im", None, "schnack") in iq["disco_info"]["identities"]
    # The caps in the stream features after login match the hash of that answer, computed by us
    # and by slixmpp's own implementation of XEP-0115 §5.
    caps_el = alice.features[-1].find(f"{{{ns.CAPS}}}c")
    assert caps_el is not None
    caps = Caps.from_xml(caps_el)
    info = DiscoInfo.from_xml(iq["disco_info"].xml)
    assert caps.ver == compute_ver(info)
    assert caps.ver == alice.xmpp.plugin["xep_0115"].generate_verstring(iq["disco_info"], "sha-1")
    node = await alice.xmpp.plugin["xep_0030"].get_info(jid=JID("localhost"), node=caps.disco_node)
    assert set(node["disco_info"]["features"]) == features


async def test_vcard_round_trip(live_server: Server, peers: list[Peer]) -> None:
    alice = await online(live_server, peers, "alice")
    vcard = alice.xmpp.plugin["xep_0054"].make_vcard()
    vcard["FN"] = "Alice Liddell"
    vcard["NICKNAME"] = "alice"
    await alice.xmpp.plugin["xep_0054"].publish_vcard(vcard)
    own = await alice.xmpp.plugin["xep_0054"].get_vcard(JID("alice@localhost"), local=False)
    assert own["vcard_temp"]["FN"] == "Alice Liddell"
    bob = await online(live_server, peers, "bob")
    seen = await bob.xmpp.plugin["xep_0054"].get_vcard(JID("alice@localhost"), local=False)
    assert seen["vcard_temp"]["NICKNAME"] == ["alice"]


async def test_private_storage_round_trip(live_server: Server, peers: list[Peer]) -> None:
    alice = await online(live_server, peers, "alice")
    store = alice.xmpp.make_iq_set()
    store.set_payload(
        ET.fromstring(
            f"<query xmlns='{ns.PRIVATE}'><storage xmlns='storage:bookmarks'>"
            "<conference jid='council@conference.localhost' autojoin='true'><nick>alice</nick></conference>"
            "</storage></query>"
        )
    )
    await store.send()
    fetch = alice.xmpp.make_iq_get()
    fetch.set_payload(ET.fromstring(f"<query xmlns='{ns.PRIVATE}'><storage xmlns='{BOOKMARKS}'/></query>"))
    result = await fetch.send()
    conference = result.xml.find(f"{{{ns.PRIVATE}}}query/{{{BOOKMARKS}}}storage/{{{BOOKMARKS}}}conference")
    assert conference is not None
    assert conference.get("jid") == "council@conference.localhost"


async def test_register_then_log_in(tmp_path: Path, peers: list[Peer]) -> None:
    async with running(tmp_path, listen=True, modules={"enable": ["register"]}) as server:
        newbie = Peer(server, "newbie@localhost/test", "a fine password", REGISTER_PLUGINS)
        peers.append(newbie)
        forms: list[Any] = []

        async def register(form: Any) -> None:
            forms.append(form)
            iq = newbie.xmpp.Iq()
            iq["type"] = "set"
            iq["register"]["username"] = newbie.xmpp.boundjid.user
            iq["register"]["password"] = newbie.xmpp.password
            await iq.send()

        newbie.xmpp.add_event_handler("register", register)
        assert await newbie.start()
        (form,) = forms
        assert "username" in form["register"]["fields"] and "password" in form["register"]["fields"]
        assert await server.storage.accounts.get("localhost", "newbie") is not None
        await newbie.stop()
        # A client without the registration plugin logs in with the new account.
        again = Peer(server, "newbie@localhost/again", "a fine password")
        peers.append(again)
        assert await again.start()
        iq = await again.xmpp.plugin["xep_0030"].get_info(jid=JID("localhost"))
        assert ns.REGISTER in iq["disco_info"]["features"]
        await again.stop()
        peers.clear()


# Arabic letters and Latin ones in one string: SASLprep refuses it (RFC 4013 §6, RFC 3454 §6).
MIXED_DIRECTIONS = "\u0643\u0644\u0645\u0629 secret 2024"


def register_iq(id: str, username: str, password: str) -> str:
    return (f"<iq type='set' id='{id}'><query xmlns='{ns.REGISTER}'><username>{username}</username>"
            f"<password>{password}</password></query></iq>")


def error_condition(reply: ET.Element | None) -> str:
    assert reply is not None and reply.get("type") == "error", reply
    error = reply.find(f"{{{ns.CLIENT}}}error")
    assert error is not None
    return next(c.tag.rpartition("}")[2] for c in error if c.tag.startswith(f"{{{ns.STANZA_ERRORS}}}") and not c.tag.endswith("}text"))


async def test_a_password_scram_cannot_take_is_refused_on_registration(tmp_path: Path) -> None:
    """XEP-0077 §3.1: a password that SASLprep refuses (RFC 4013) could never log in; the
    client is told not-acceptable and may choose another on the same stream."""
    async with running(tmp_path, listen=True, modules={"enable": ["register"]}) as server:
        wire = await Wire.connect(server, "c2s_tls")
        try:
            await wire.open()
            wire.send(register_iq("r1", "carol", MIXED_DIRECTIONS))
            assert error_condition(await wire.next()) == "not-acceptable"
            assert await server.storage.accounts.get("localhost", "carol") is None
            wire.send(register_iq("r2", "carol", "a fine password"))
            reply = await wire.next()
            assert reply is not None and reply.get("type") == "result", reply
        finally:
            wire.close()


async def test_a_password_scram_cannot_take_is_refused_as_a_new_password(tmp_path: Path) -> None:
    """XEP-0077 §3.3: the change is refused with not-acceptable and the old password stays."""
    async with running(tmp_path, listen=True, modules={"enable": ["register"]}) as server:
        await add_user(server, "alice", "the old password")
        wire = await Wire.connect(server, "c2s_tls")
        try:
            await wire.login("alice", "the old password", await wire.open())
            await wire.bind("desk")
            wire.send(register_iq("p1", "alice", MIXED_DIRECTIONS))
            assert error_condition(await wire.next()) == "not-acceptable"
        finally:
            wire.close()
        again = await Wire.connect(server, "c2s_tls")
        try:
            await again.login("alice", "the old password", await again.open())
        finally:
            again.close()

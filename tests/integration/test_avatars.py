"""Avatars with slixmpp on real sockets: a XEP-0084 client and a XEP-0153 (vCard) client see the
same picture whichever of them set it (XEP-0398), and presence carries its hash."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from slixmpp import JID
from slixmpp.plugins.xep_0084.avatar import AvatarMetadataItem

from schnack.server.app import Server
from schnack.server.modules.avatar_conversion import NS
from schnack.server.storage.base import RosterItem
from schnack.xmpp.payloads.avatar import PHOTO, UPDATE

from ..harness import add_user
from .slix import PASSWORD, SlixClient
from .test_pep import open_access

pytestmark = pytest.mark.asyncio

PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")
PNG_ID = hashlib.sha1(PNG).hexdigest()
GIF = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\xff\xff\xff\x00\x00\x00!\xf9\x04\x00\x00\x00\x00\x00,\x00\x00\x00\x00"
GIF_ID = hashlib.sha1(GIF).hexdigest()


class AvatarPeer(SlixClient):
    """slixmpp with the PEP avatar (XEP-0084) or the vCard avatar (XEP-0153) plugins; it keeps
    the avatar metadata notifications and the photo hashes in the presences it gets."""

    def __init__(self, server: Server, jid: str, plugins: tuple[str, ...]) -> None:
        super().__init__(server, jid)
        for plugin in ("xep_0030", "xep_0115", *plugins):
            self.xmpp.register_plugin(plugin)
        self.metadata: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self.hashes: asyncio.Queue[tuple[str, str | None]] = asyncio.Queue()
        self.xmpp.add_event_handler("avatar_metadata_publish", self._metadata)
        for show in ("available", "away", "chat", "dnd", "xa"):
            self.xmpp.add_event_handler(f"presence_{show}", self._presence)

    def _metadata(self, msg: Any) -> None:
        item = msg["pubsub_event"]["items"]["item"]
        self.metadata.put_nowait((str(msg["from"]), item))

    def _presence(self, presence: Any) -> None:
        update = presence.xml.find(UPDATE)
        photo = update.find(PHOTO) if update is not None else None
        photo_hash = None if photo is None else (photo.text or "")
        self.hashes.put_nowait((str(presence["from"]), photo_hash))

    async def online(self) -> None:
        assert await self.start()
        await self.xmpp.plugin["xep_0115"].update_caps(broadcast=False)
        self.xmpp.send_presence()

    async def next_metadata(self) -> tuple[str, Any]:
        async with asyncio.timeout(30):
            return await self.metadata.get()

    async def next_hash(self, sender: str) -> str | None:
        async with asyncio.timeout(30):
            while True:
                jid, photo_hash = await self.hashes.get()
                if jid == sender:
                    return photo_hash

    async def hash_becomes(self, sender: str, expected: str, before: str) -> None:
        """Presences of ``sender`` carry the hash ``before`` until one carries ``expected``."""
        while (photo_hash := await self.next_hash(sender)) != expected:
            assert photo_hash == before


@pytest.fixture
async def peers() -> AsyncIterator[list[AvatarPeer]]:
    made: list[AvatarPeer] = []
    yield made
    for peer in made:
        await peer.stop()


async def peer(server: Server, peers: list[AvatarPeer], user: str, *plugins: str) -> AvatarPeer:
    await add_user(server, user, PASSWORD)
    made = AvatarPeer(server, f"{user}@localhost/test", plugins)
    peers.append(made)
    return made


async def friends(server: Server, *users: str) -> None:
    for a in users:
        for b in users:
            if a != b:
                await server.storage.roster.set_item("localhost", a, RosterItem(f"{b}@localhost", subscription="both"))


async def test_pep_avatar_reaches_vcard_clients(live_server: Server, peers: list[AvatarPeer]) -> None:
    alice = await peer(live_server, peers, "alice", "xep_0084")
    bob = await peer(live_server, peers, "bob", "xep_0084")
    carol = await peer(live_server, peers, "carol", "xep_0054", "xep_0153")
    await friends(live_server, "alice", "bob", "carol")
    await bob.online()
    await carol.online()
    await alice.online()
    account = await bob.xmpp.plugin["xep_0030"].get_info(JID("alice@localhost"))
    assert NS in account["disco_info"]["features"]
    # Before any avatar, the server says alice has none (XEP-0153 §3.2: an empty photo).
    assert await bob.next_hash("alice@localhost/test") == ""

    avatars = alice.xmpp.plugin["xep_0084"]
    # Open, as Conversations publishes it: an avatar for contacts only stays out of the vCard.
    await avatars.publish_avatar(PNG, options=open_access(alice), timeout=30)
    # Without width and height, which slixmpp then sends empty.
    await avatars.publish_avatar_metadata(AvatarMetadataItem(id=PNG_ID, type="image/png", bytes=len(PNG)),
                                          options=open_access(alice), timeout=30)
    sender, item = await bob.next_metadata()
    assert sender == "alice@localhost" and item["id"] == PNG_ID
    (info,) = item["avatar_metadata"]["items"]
    assert (info["id"], info["type"], int(info["bytes"])) == (PNG_ID, "image/png", len(PNG))
    fetched = await bob.xmpp.plugin["xep_0084"].retrieve_avatar(JID("alice@localhost"), PNG_ID)
    (data,) = fetched["pubsub"]["items"]["substanzas"]
    assert data["avatar_data"]["value"] == PNG

    # The vCard client sees the same picture, and its hash in alice's next presence.
    vcard = await carol.xmpp.plugin["xep_0054"].get_vcard(JID("alice@localhost"), local=False)
    assert vcard["vcard_temp"]["PHOTO"]["BINVAL"] == PNG
    assert vcard["vcard_temp"]["PHOTO"]["TYPE"] == "image/png"
    alice.xmpp.send_presence(pshow="away")
    await carol.hash_becomes("alice@localhost/test", PNG_ID, before="")


async def test_vcard_avatar_reaches_pep_clients(live_server: Server, peers: list[AvatarPeer]) -> None:
    alice = await peer(live_server, peers, "alice", "xep_0054", "xep_0153")
    bob = await peer(live_server, peers, "bob", "xep_0084")
    await friends(live_server, "alice", "bob")
    await bob.online()
    await alice.online()
    await alice.xmpp.plugin["xep_0153"].set_avatar(avatar=GIF, mtype="image/gif")
    sender, item = await bob.next_metadata()
    assert sender == "alice@localhost" and item["id"] == GIF_ID
    (info,) = item["avatar_metadata"]["items"]
    assert (info["id"], info["type"], int(info["bytes"])) == (GIF_ID, "image/gif", len(GIF))
    fetched = await bob.xmpp.plugin["xep_0084"].retrieve_avatar(JID("alice@localhost"), GIF_ID)
    (data,) = fetched["pubsub"]["items"]["substanzas"]
    assert data["avatar_data"]["value"] == GIF
    # slixmpp resends presence after setting the avatar; the hash is the image's.
    await bob.hash_becomes("alice@localhost/test", GIF_ID, before="")

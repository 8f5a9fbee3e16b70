"""OMEMO interop with an implementation nobody here wrote: slixmpp with slixmpp-omemo, both directions.

slixmpp-omemo encrypts only in the legacy version (``eu.siacs.conversations.axolotl``) and cannot
open OMEMO 2 envelopes; our client's default preference (the legacy version for devices that
publish both) is what lets the two talk, as it lets today's apps.
"""

from __future__ import annotations

import asyncio
import copy
import ssl
from collections.abc import AsyncIterator
from typing import Any

import pytest
from omemo.session_manager import TrustDecisionFailed
from omemo.storage import Just, Maybe, Nothing, Storage
from omemo.types import DeviceInformation, JSONType
from slixmpp import JID, ClientXMPP
from slixmpp.plugins import register_plugin
from slixmpp_omemo import XEP_0384

from schnack.client import Client
from schnack.client.omemo import OLDMEMO
from schnack.server.app import Server

from ..conftest import PASSWORD, WAIT, next_of, online


class MemoryStorage(Storage):
    """python-omemo's state of the slixmpp peer, for the length of a test."""

    def __init__(self) -> None:
        super().__init__()
        self.data: dict[str, JSONType] = {}

    async def _load(self, key: str) -> Maybe[JSONType]:
        return Just(copy.deepcopy(self.data[key])) if key in self.data else Nothing()

    async def _store(self, key: str, value: JSONType) -> None:
        self.data[key] = copy.deepcopy(value)

    async def _delete(self, key: str) -> None:
        self.data.pop(key, None)


class OmemoPlugin(XEP_0384):
    """slixmpp-omemo with blind trust before verification, as its documentation shows."""

    default_config = {"fallback_message": "This message is OMEMO encrypted."}

    def plugin_init(self) -> None:
        self._memory = MemoryStorage()
        super().plugin_init()

    @property
    def storage(self) -> Storage:
        return self._memory

    @property
    def _btbv_enabled(self) -> bool:
        return True

    async def _devices_blindly_trusted(self, blindly_trusted: frozenset[DeviceInformation],
                                       identifier: str | None) -> None:
        return None

    async def _prompt_manual_trust(self, manually_trusted: frozenset[DeviceInformation],
                                   identifier: str | None) -> None:
        raise TrustDecisionFailed("this peer never asks")


register_plugin(OmemoPlugin)


class Peer:
    """A slixmpp client with slixmpp-omemo on the server's STARTTLS port."""

    def __init__(self, server: Server, jid: str) -> None:
        self.server = server
        self.xmpp = ClientXMPP(jid, PASSWORD)
        # The test server's certificate is self-signed.
        self.xmpp.ssl_context.check_hostname = False
        self.xmpp.ssl_context.verify_mode = ssl.CERT_NONE
        for plugin in ("xep_0030", "xep_0060", "xep_0163", "xep_0280", "xep_0334", "xep_0384"):
            self.xmpp.register_plugin(plugin)
        # slixmpp's typed table of plugins lists only its own.
        self.omemo: Any = self.xmpp.plugin["xep_0384"]  # type: ignore[typeddict-item]
        self.started = asyncio.Event()
        self.inbox: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self.xmpp.add_event_handler("session_start", self._session_start)
        self.xmpp.add_event_handler("message", self._message)

    async def _session_start(self, _event: Any) -> None:
        self.xmpp.send_presence()
        await self.omemo.get_session_manager()  # published its device list and bundles
        self.started.set()

    async def _message(self, stanza: Any) -> None:
        if self.omemo.is_encrypted(stanza):
            decrypted, device = await self.omemo.decrypt_message(stanza)
            if decrypted["body"]:
                await self.inbox.put((decrypted["body"], device))

    async def start(self) -> None:
        host, port = self.server.bound["c2s"][0]
        self.xmpp.connect(host, port)
        async with asyncio.timeout(WAIT):
            await self.started.wait()

    async def send(self, to: str, text: str) -> None:
        message = self.xmpp.make_message(mto=JID(to), mtype="chat")
        message["body"] = text
        encrypted, problems = await self.omemo.encrypt_message(message, JID(to))
        assert not problems
        encrypted.send()

    async def received(self) -> tuple[str, Any]:
        async with asyncio.timeout(WAIT):
            return await self.inbox.get()

    async def stop(self) -> None:
        await self.xmpp.disconnect()


@pytest.fixture
async def slixmpp_bob(chat_server: Server) -> AsyncIterator[Peer]:
    peer = Peer(chat_server, "bob@localhost/slixmpp")
    await peer.start()
    yield peer
    await peer.stop()


async def test_our_client_and_slixmpp_omemo_talk_both_ways(chat_server: Server, clients: list[Client],
                                                            slixmpp_bob: Peer) -> None:
    alice = await online(chat_server, clients, "alice@localhost/schnack")
    inbox = alice.messages()
    await alice.send("bob@localhost", "hello from schnack")
    text, device = await slixmpp_bob.received()
    ours = await alice.omemo.own_device()
    assert (text, device.bare_jid, device.device_id) == ("hello from schnack", "alice@localhost", ours.id)
    sm = await slixmpp_bob.omemo.get_session_manager()
    assert " ".join(sm.format_identity_key(device.identity_key)) == ours.fingerprint

    await slixmpp_bob.send("alice@localhost", "hello from slixmpp")
    got = await next_of(inbox)
    assert (str(got.sender), got.text, got.encrypted) == ("bob@localhost/slixmpp", "hello from slixmpp", True)
    assert got.element.find(f"{{{OLDMEMO}}}encrypted") is not None
    theirs, _ = await sm.get_own_device_information()
    assert got.device is not None and (got.device.id, got.device.fingerprint) == (
        theirs.device_id, " ".join(sm.format_identity_key(theirs.identity_key)))

    # A conversation, not just a first message: the sessions go on in both directions.
    await alice.send("bob@localhost", "second from schnack")
    assert (await slixmpp_bob.received())[0] == "second from schnack"
    await slixmpp_bob.send("alice@localhost", "second from slixmpp")
    assert (await next_of(inbox)).text == "second from slixmpp"

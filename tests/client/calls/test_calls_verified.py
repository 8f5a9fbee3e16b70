"""Verified calls and the signalled profile switch between two schnack clients, through the real
server on loopback sockets: the callee names its OMEMO device in <proceed/>, both DTLS
fingerprints travel OMEMO-encrypted for the other side's device (Conversations' scheme), and each
side says who vouched for the peer's; verified once the keys are verified, unverified without
OMEMO. Toggling the data saver mid-call makes the peer switch its encoder too (description-info)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from schnack.client import Client
from schnack.client.calls.calls import Call, IncomingCall
from schnack.client.calls.media import DATA_SAVER, EncoderSettings
from schnack.client.omemo import OLDMEMO, TWOMEMO, OmemoSettings, Trust
from schnack.server.app import Server

from ...harness import add_user, running
from .audio import write_tone

PASSWORD = "correct horse battery staple"
WAIT = 60
SAVER = EncoderSettings.negotiate(DATA_SAVER, None)
NORMAL = EncoderSettings(48000, 40, True, True)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    async with running(tmp_path, listen=True) as server:
        for user in ("alice", "bob"):
            await add_user(server, user, PASSWORD)
        yield server


async def login(server: Server, clients: list[Client], jid: str, **options: Any) -> Client:
    host, port = server.bound["c2s"][0]
    client = Client(jid, PASSWORD, host=host, port=port, direct_tls=False, verify=False, **options)
    await client.connect()
    clients.append(client)
    return client


async def rings(client: Client) -> IncomingCall:
    async with asyncio.timeout(WAIT):
        async for incoming in client.incoming_calls():
            return incoming
    raise AssertionError("no call rang")


async def eventually(check: Callable[[], bool]) -> None:
    """Until ``check`` holds (the peer acts on a stanza that is still on its way)."""
    for _ in range(WAIT * 20):
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("it never happened")


async def connect(tmp_path: Path, alice: Client, bob: Client) -> tuple[Call, Call]:
    ringing = asyncio.ensure_future(rings(bob))
    await asyncio.sleep(0)
    call = await alice.call("bob@localhost", source=write_tone(tmp_path / "a.wav", 440, 6.0))
    answered = await (await ringing).answer(source=write_tone(tmp_path / "b.wav", 1000, 6.0))
    await call.wait_connected(WAIT)
    await answered.wait_connected(WAIT)
    return call, answered


async def test_fingerprints_travel_encrypted_and_verified_keys_make_it_verified(
        tmp_path: Path, server: Server, clients: list[Client]) -> None:  # fmt: skip
    alice = await login(server, clients, "alice@localhost/laptop")
    bob = await login(server, clients, "bob@localhost/phone")
    alice_device, bob_device = await alice.omemo.own_device(), await bob.omemo.own_device()

    call, answered = await connect(tmp_path, alice, bob)
    assert call.verification.device is not None and answered.verification.device is not None
    assert (call.verification.device.id, answered.verification.device.id) == (bob_device.id, alice_device.id)
    # Blind trust is not verification.
    assert (call.verification.state, answered.verification.state) == ("unverified", "unverified")
    assert "whose key you have not verified" in call.verification.describe()
    await call.hangup()

    await alice.omemo.trust("bob@localhost", bob_device.fingerprint)
    await bob.omemo.trust("alice@localhost", alice_device.fingerprint)
    call, answered = await connect(tmp_path, alice, bob)
    assert (call.verification.state, answered.verification.state) == ("verified", "verified")
    assert call.verification.device is not None and call.verification.device.trust is Trust.VERIFIED
    await answered.hangup()


async def test_a_peer_without_legacy_omemo_gets_plain_fingerprints(
        tmp_path: Path, server: Server, clients: list[Client]) -> None:  # fmt: skip
    alice = await login(server, clients, "alice@localhost/laptop")
    bob = await login(server, clients, "bob@localhost/phone", omemo=OmemoSettings(namespaces=(TWOMEMO,)))
    call, answered = await connect(tmp_path, alice, bob)
    assert call.verification.device is None and answered.verification.device is None
    assert call.verification.describe() == "unverified: the peer's DTLS fingerprint came without OMEMO"
    await call.hangup()
    assert OLDMEMO in alice.omemo.settings.namespaces


async def test_data_saver_switch_mid_call_reaches_the_peer(
        tmp_path: Path, server: Server, clients: list[Client]) -> None:  # fmt: skip
    alice = await login(server, clients, "alice@localhost/laptop")
    bob = await login(server, clients, "bob@localhost/phone")
    call, answered = await connect(tmp_path, alice, bob)
    assert call.media is not None and answered.media is not None
    assert call.media.track.settings == NORMAL and answered.media.track.settings == NORMAL

    # Two receiver reports without loss: the data saver need not protect the call.
    call.media.peer_lost(0.0)
    call.media.peer_lost(0.0)
    call.set_data_saver(True)
    assert call.media.track.settings == SAVER and call.data_saver
    # The peer sends within what the data saver asks for; how often it sends during silence is its own.
    asked = replace(SAVER, keepalive=NORMAL.keepalive)
    await eventually(lambda: answered.media is not None and answered.media.track.settings == asked)

    call.set_data_saver(False)
    await eventually(lambda: answered.media is not None and answered.media.track.settings == NORMAL)
    assert call.media.track.settings == NORMAL
    assert not call.ended.done() and not answered.ended.done()
    await call.hangup()

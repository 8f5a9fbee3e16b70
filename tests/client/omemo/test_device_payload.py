"""A payload OMEMO-encrypted for one device of a contact (what a verified call's DTLS fingerprint
is, XEP-0384 in the legacy version), between our clients through schnack's server on real sockets:
only that device opens it, the sender's device and its trust come with the plaintext, and a
distrusted or unknown device is refused."""

from __future__ import annotations

import pytest

from schnack.client import Client
from schnack.client.omemo import OLDMEMO, DeviceNotUsable, Trust, Undecryptable
from schnack.server.app import Server

from ..conftest import online


async def test_only_the_chosen_device_opens_it(chat_server: Server, clients: list[Client]) -> None:
    alice = await online(chat_server, clients, "alice@localhost/phone")
    phone = await online(chat_server, clients, "bob@localhost/phone")
    desk = await online(chat_server, clients, "bob@localhost/desk")
    target = await phone.omemo.own_device()
    await desk.omemo.own_device()
    sealed = await alice.omemo.encrypt_for_device(phone.jid, target.id, b"AB:CD:EF")
    assert sealed.tag == f"{{{OLDMEMO}}}encrypted"
    assert [key.get("rid") for key in sealed.iter(f"{{{OLDMEMO}}}key")] == [str(target.id)]
    plaintext, device = await phone.omemo.open_payload(alice.jid, sealed)
    own = await alice.omemo.own_device()
    assert (plaintext, device.id, device.fingerprint, device.trust) == (b"AB:CD:EF", own.id, own.fingerprint, Trust.BLIND)
    with pytest.raises(Undecryptable, match="not encrypted for this device"):
        await desk.omemo.open_payload(alice.jid, sealed)
    # The session is now established both ways: a second payload and an answer work too.
    again = await alice.omemo.encrypt_for_device(phone.jid, target.id, b"second")
    assert (await phone.omemo.open_payload(alice.jid, again))[0] == b"second"
    answer = await phone.omemo.encrypt_for_device(alice.jid, own.id, b"answer")
    assert (await alice.omemo.open_payload(phone.jid, answer))[0] == b"answer"


async def test_verified_trust_comes_with_the_plaintext(chat_server: Server, clients: list[Client]) -> None:
    alice = await online(chat_server, clients, "alice@localhost/phone")
    bob = await online(chat_server, clients, "bob@localhost/phone")
    own = await alice.omemo.own_device()
    await bob.omemo.trust("alice@localhost", own.fingerprint)
    target = await bob.omemo.own_device()
    sealed = await alice.omemo.encrypt_for_device(bob.jid, target.id, b"fingerprint")
    _, device = await bob.omemo.open_payload(alice.jid, sealed)
    assert device.trust is Trust.VERIFIED


async def test_unknown_and_distrusted_devices_are_refused(chat_server: Server, clients: list[Client]) -> None:
    alice = await online(chat_server, clients, "alice@localhost/phone")
    bob = await online(chat_server, clients, "bob@localhost/phone")
    target = await bob.omemo.own_device()
    with pytest.raises(DeviceNotUsable, match=r"has no eu\.siacs\.conversations\.axolotl device 12345"):
        await alice.omemo.encrypt_for_device(bob.jid, 12345, b"x")
    await alice.omemo.distrust("bob@localhost", target.fingerprint)
    with pytest.raises(DeviceNotUsable, match="distrusted"):
        await alice.omemo.encrypt_for_device(bob.jid, target.id, b"x")

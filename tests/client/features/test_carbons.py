"""Message carbons (XEP-0280) between our clients through the real server: what one device of
an account sends or gets lands in the store of its other device too, decrypted, once."""

from __future__ import annotations

from pathlib import Path

import pytest

from schnack.client import Client
from schnack.server.app import Server
from schnack.xmpp.jid import JID

from ..conftest import next_of, online

BOB = JID.parse("bob@localhost")


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "omemo"])
async def test_the_other_device_sees_both_directions(chat_server: Server, clients: list[Client], tmp_path: Path,
                                                     encrypted: bool) -> None:
    # The desk comes first, so that the phone encrypts to it as to any own device.
    desk = await online(chat_server, clients, "alice@localhost/desk", data_dir=tmp_path / "desk")
    phone = await online(chat_server, clients, "alice@localhost/phone", data_dir=tmp_path / "phone")
    bob = await online(chat_server, clients, "bob@localhost/laptop")
    desk_inbox, bob_inbox = desk.messages(), bob.messages()
    sent = await phone.send(BOB, "from my phone", encrypted=encrypted)
    copy = await next_of(desk_inbox)
    assert (copy.outgoing, copy.sender, copy.to, copy.text, copy.id, copy.encrypted, copy.history) == (
        True, phone.jid, BOB, "from my phone", sent, encrypted, False)
    assert copy.peer == BOB
    got = await next_of(bob_inbox)
    # To the phone alone: the desk gets a received carbon.
    await bob.send(got.sender, "to your phone", encrypted=encrypted)
    received = await next_of(desk_inbox)
    assert (received.outgoing, received.sender, received.text, received.encrypted) == (
        False, bob.jid, "to your phone", encrypted)
    # bob's receipt to the phone came before his answer, and a copy of it to the desk: the
    # message is delivered on both devices.
    stored = desk.store.history(BOB)
    assert [(m.direction, m.text, m.state) for m in stored] == [
        ("out", "from my phone", "delivered"), ("in", "to your phone", "delivered")]
    assert stored[0].origin_id == sent


async def test_carbons_from_anyone_else_are_ignored(chat_server: Server, clients: list[Client]) -> None:
    """§11: a carbon copy counts only from our own bare JID."""
    from schnack.xmpp import ns
    from schnack.xmpp.payloads.carbons import Carbon
    from schnack.xmpp.payloads.forward import Forwarded
    from schnack.xmpp.xml import element, qname, sub

    alice = await online(chat_server, clients, "alice@localhost/phone")
    bob = await online(chat_server, clients, "bob@localhost/laptop")
    inbox = alice.messages()
    inner = element(qname(ns.CLIENT, "message"), {"from": "carol@localhost/x", "to": "alice@localhost",
                                                   "type": "chat", "id": "fake"})
    sub(inner, qname(ns.CLIENT, "body"), text="forged by bob")
    forged = element(qname(ns.CLIENT, "message"), {"to": str(alice.jid), "type": "chat", "id": "c1"},
                     children=[Carbon("received", Forwarded(inner)).to_xml()])
    await bob.send_element(forged)
    honest = await bob.send(alice.jid, "honest", encrypted=False)
    got = await next_of(inbox)
    assert (got.id, got.text) == (honest, "honest")
    assert [m.text for m in alice.store.history(JID.parse("carol@localhost"))] == []

"""Subscriptions and presence between two of our clients (RFC 6121 §3, §4)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from schnack.client import Client, PresenceUpdate
from schnack.server import admin
from schnack.server.app import Server
from schnack.xmpp.jid import JID

from ..conftest import next_of, online

ALICE = JID.parse("alice@localhost")
BOB = JID.parse("bob@localhost")


def from_(jid: JID, kind: str) -> Callable[[PresenceUpdate], bool]:
    return lambda update: update.jid.bare == jid and update.kind == kind


async def test_subscription_handshake_and_presence(chat_server: Server, clients: list[Client]) -> None:
    alice = await online(chat_server, clients, "alice@localhost/phone")
    bob = await online(chat_server, clients, "bob@localhost/laptop")
    alice_sees, bob_sees = alice.presence(), bob.presence()
    alice_roster = alice.roster_updates()

    # §3.1: Alice adds Bob and asks; Bob is asked, with Alice's bare JID.
    await alice.add_contact(BOB, name="Bob")
    request = await next_of(bob_sees, from_(ALICE, "subscribe"))
    assert request.jid == ALICE
    pending = await next_of(alice_roster, lambda c: c.pending)
    assert (pending.jid, pending.subscription) == (BOB, "none")

    # §3.1.5: Bob approves; Alice's roster says "to" and she sees Bob online.
    await bob.approve(ALICE)
    approved = await next_of(alice_roster, lambda c: c.subscription == "to")
    assert approved.jid == BOB and not approved.pending
    online_bob = await next_of(alice_sees, from_(BOB, "available"))
    assert online_bob.jid == bob.jid

    # Bob subscribes back; Alice approves: both ways.
    await bob.add_contact(ALICE)
    await next_of(alice_sees, from_(BOB, "subscribe"))
    await alice.approve(BOB)
    await next_of(bob_sees, from_(ALICE, "available"))
    assert [(c.jid, c.subscription) for c in await alice.roster()] == [(BOB, "both")]
    assert [(c.jid, c.subscription) for c in await bob.roster()] == [(ALICE, "both")]

    # §4.4: a change of presence reaches the contact.
    await alice.set_presence(show="away", status="at lunch", priority=5)
    away = await next_of(bob_sees, lambda u: u.jid == alice.jid and u.show == "away")
    assert (away.kind, away.status, away.priority) == ("available", "at lunch", 5)

    # §4.5: going offline is seen as unavailable.
    await alice.close()
    gone = await next_of(bob_sees, from_(ALICE, "unavailable"))
    assert gone.jid == alice.jid


async def test_a_denied_request_leaves_no_subscription(chat_server: Server, clients: list[Client]) -> None:
    alice = await online(chat_server, clients, "alice@localhost")
    bob = await online(chat_server, clients, "bob@localhost")
    bob_sees, alice_roster = bob.presence(), alice.roster_updates()
    await alice.add_contact(BOB)
    await next_of(bob_sees, from_(ALICE, "subscribe"))
    await bob.deny(ALICE)
    refused = await next_of(alice_roster, lambda c: not c.pending)
    assert (refused.jid, refused.subscription) == (BOB, "none")


async def test_show_and_priority_are_checked(chat_server: Server, clients: list[Client]) -> None:
    alice = await online(chat_server, clients, "alice@localhost")
    with pytest.raises(ValueError, match="show must be one of"):
        await alice.set_presence(show="busy")
    with pytest.raises(ValueError, match="priority"):
        await alice.set_presence(priority=128)


async def test_directed_presence_stays_until_its_last_withdrawal(chat_server: Server, clients: list[Client]) -> None:
    """§4.6: alice shows bob, who does not see her presence, her presence for two reasons (two
    calls, say): he gets it once, again after she logged into a new session (her server told him
    she left the old one, §4.6.3), and her unavailable presence with the second withdrawal only."""
    alice = await online(chat_server, clients, "alice@localhost/phone", backoff=(0.05, 0.5))
    bob = await online(chat_server, clients, "bob@localhost/laptop")
    from_alice = (update async for update in bob.presence() if update.jid.bare == ALICE)
    await alice.direct_presence(BOB)
    await alice.direct_presence("bob@localhost/laptop")  # to his bare JID too
    shown = await next_of(from_alice)
    assert (shown.jid, shown.kind) == (alice.jid, "available")
    await alice.withdraw_presence(BOB)
    await alice.subscribe(BOB)  # what she sends next comes next: no unavailable presence before it
    assert (await next_of(from_alice)).kind == "subscribe"
    await admin.request(chat_server.config.data_dir, "kick", jid=str(alice.jid))
    assert [(u.jid, u.kind) for u in (await next_of(from_alice), await next_of(from_alice))] == [
        (alice.jid, "unavailable"),
        (alice.jid, "available"),
    ]
    await alice.withdraw_presence(BOB)
    withdrawn = await next_of(from_alice)
    assert (withdrawn.jid, withdrawn.kind) == (alice.jid, "unavailable")

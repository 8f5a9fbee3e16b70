"""The roster from the client (RFC 6121 §2): get, set, remove, and the pushes that follow."""

from __future__ import annotations

from schnack.client import Client, Contact
from schnack.server.app import Server
from schnack.xmpp.jid import JID

from ..conftest import next_of, online

BOB = JID.parse("bob@localhost")


async def test_add_update_and_remove_a_contact(chat_server: Server, clients: list[Client]) -> None:
    alice = await online(chat_server, clients, "alice@localhost")
    updates = alice.roster_updates()
    assert await alice.roster() == []
    await alice.add_contact("bob@localhost/ignored", name="Bob", groups=["Friends", "Work"], subscribe=False)
    added = Contact(BOB, "Bob", "none", pending=False, approved=False, groups=("Friends", "Work"))
    assert await next_of(updates) == added
    assert await alice.roster() == [added]
    await alice.add_contact(BOB, name="Robert", subscribe=False)
    renamed = await next_of(updates)
    assert (renamed.name, renamed.groups) == ("Robert", ())
    await alice.remove_contact(BOB)
    assert await next_of(updates) == Contact(BOB, subscription="remove")
    assert await alice.roster() == []


async def test_pushes_reach_every_resource(chat_server: Server, clients: list[Client]) -> None:
    """RFC 6121 §2.1.6: a change made on one device is pushed to the others."""
    phone = await online(chat_server, clients, "alice@localhost/phone")
    desk = await online(chat_server, clients, "alice@localhost/desk")
    updates = desk.roster_updates()
    await phone.add_contact(BOB, name="Bob", subscribe=False)
    assert (await next_of(updates)).jid == BOB
    assert [c.name for c in await desk.roster()] == ["Bob"]

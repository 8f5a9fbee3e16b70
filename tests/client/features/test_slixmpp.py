"""Receipts (XEP-0184), markers (XEP-0333), chat states (XEP-0085) and corrections (XEP-0308)
between our client and slixmpp, the independent peer, through the real server, both ways."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from slixmpp import JID as SlixJID

from schnack.client import ChatStateChange, Client, Receipt
from schnack.server.app import Server
from schnack.xmpp.jid import JID

from ...integration.slix import SlixClient
from ..conftest import WAIT, next_of, online

PLUGINS = ("xep_0030", "xep_0085", "xep_0184", "xep_0308", "xep_0333")
EVENTS = ("receipt_received", "marker_displayed", "chatstate", "message_correction")


class Peer:
    """slixmpp with the four plugins; each event it raises lands in a queue of its own."""

    def __init__(self, server: Server, jid: str) -> None:
        self.slix = SlixClient(server, jid)
        for plugin in PLUGINS:
            self.slix.xmpp.register_plugin(plugin)
        self.events: dict[str, asyncio.Queue[Any]] = {name: asyncio.Queue() for name in EVENTS}
        for name, queue in self.events.items():
            self.slix.xmpp.add_event_handler(name, queue.put_nowait)

    @property
    def jid(self) -> JID:
        return JID.parse(str(self.slix.xmpp.boundjid))

    async def next(self, event: str) -> Any:
        async with asyncio.timeout(WAIT):
            return await self.events[event].get()


@pytest.fixture
async def bob(chat_server: Server) -> AsyncIterator[Peer]:
    peer = Peer(chat_server, "bob@localhost/slix")
    assert await peer.slix.start()
    peer.slix.xmpp.send_presence()
    try:
        yield peer
    finally:
        await peer.slix.stop()


async def test_our_messages_to_slixmpp(chat_server: Server, clients: list[Client], bob: Peer) -> None:
    alice = await online(chat_server, clients, "alice@localhost/phone")
    receipts = alice.receipts()
    sent = await alice.send(bob.jid, "hello slixmpp", encrypted=False)
    # slixmpp answers the receipt request by itself, and sees our chat state.
    assert await next_of(receipts) == Receipt(bob.jid.bare, sent, "delivered")
    state = await bob.next("chatstate")
    assert (state["chat_state"], state["id"]) == ("active", sent)
    # It displays the message (it was markable): ours is read.
    bob.slix.xmpp.plugin["xep_0333"].send_marker(SlixJID(str(alice.jid)), sent, "displayed", mtype="chat")
    assert await next_of(receipts) == Receipt(bob.jid.bare, sent, "read")
    assert [(m.text, m.state) for m in alice.store.history(bob.jid)] == [("hello slixmpp", "read")]
    correction = await alice.correct(bob.jid, sent, "hello, slixmpp", encrypted=False)
    corrected = await bob.next("message_correction")
    assert (corrected["replace"]["id"], corrected["body"], corrected["id"]) == (sent, "hello, slixmpp", correction)


async def test_slixmpp_messages_to_us(chat_server: Server, clients: list[Client], bob: Peer) -> None:
    alice = await online(chat_server, clients, "alice@localhost/phone")
    inbox, states = alice.messages(), alice.chat_states()
    xmpp = bob.slix.xmpp
    msg = xmpp.make_message(mto=SlixJID(str(alice.jid)), mbody="hi from slixmpp", mtype="chat")
    msg["id"] = "slix-1"
    msg["request_receipt"] = True
    msg["markable"] = True
    msg["chat_state"] = "active"
    msg.send()
    got = await next_of(inbox)
    assert (got.text, got.id) == ("hi from slixmpp", "slix-1")
    # Our client answers the receipt request on its own.
    receipt = await bob.next("receipt_received")
    assert receipt["receipt"] == "slix-1"
    assert await next_of(states) == ChatStateChange(bob.jid, "active")
    # bob showed that he takes chat states: typing goes out to him.
    assert await alice.typing(bob.jid, "composing")
    assert (await bob.next("chatstate"))["chat_state"] == "composing"
    await alice.mark_read(bob.jid, "slix-1")
    displayed = await bob.next("marker_displayed")
    assert displayed["displayed"]["id"] == "slix-1"
    xmpp.plugin["xep_0308"].build_correction("slix-1", SlixJID(str(alice.jid)), mbody="hi again").send()
    corrected = await next_of(inbox)
    assert (corrected.text, corrected.replaces) == ("hi again", "slix-1")
    composing = xmpp.make_message(mto=SlixJID(str(alice.jid)), mtype="chat")
    composing["chat_state"] = "composing"
    composing.send()
    assert await next_of(states) == ChatStateChange(bob.jid, "composing")
    assert [(m.text, m.state, m.message_id) for m in alice.store.history(bob.jid)] == [
        ("hi again", "read", "slix-1")]

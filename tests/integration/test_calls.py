"""XEP-0353 call initiation between our call machine (on a raw socket) and slixmpp's XEP-0353
plugin, through the real server: each side reads what the other wrote."""

from __future__ import annotations

import asyncio
from typing import Any
from xml.etree.ElementTree import Element

from slixmpp import JID as SlixJID

from schnack.client.calls.session import CallSession, Ended, Incoming, Proceeded, SendMessage, Step
from schnack.server.app import Server
from schnack.xmpp import ns
from schnack.xmpp.jid import JID
from schnack.xmpp.payloads import jmi
from schnack.xmpp.payloads.jingle import Reason
from schnack.xmpp.payloads.jingle_rtp import NS as RTP
from schnack.xmpp.xml import element, qname, serialize, sub

from ..harness import add_user
from .slix import PASSWORD, SlixClient
from .wire import Wire

MESSAGE = qname(ns.CLIENT, "message")


async def raw_client(server: Server, user: str, resource: str) -> tuple[Wire, JID]:
    wire = await Wire.connect(server)
    await wire.open()
    await wire.login(user, PASSWORD, await wire.starttls())
    jid = JID.parse(await wire.bind(resource))
    wire.send("<presence/>")
    return wire, jid


def send(wire: Wire, step: Step) -> None:
    for item in step:
        if isinstance(item, SendMessage):
            message = element(MESSAGE, {"to": str(item.to), "type": "chat", "id": f"jmi-{item.payload.kind}"})
            message.append(item.payload.to_xml())
            sub(message, "{urn:xmpp:hints}store")
            wire.send(serialize(message))


async def next_jmi(wire: Wire) -> tuple[JID, jmi.JingleMessage]:
    """The next message on ``wire`` that carries a JMI element, and its sender."""
    while True:
        el: Element | None = await wire.next(timeout=30)
        assert el is not None, "the server closed the stream"
        if el.tag == MESSAGE and (found := jmi.find(el)) is not None:
            return JID.parse(el.get("from") or ""), found


async def test_jmi_with_slixmpp(live_server: Server) -> None:
    await add_user(live_server, "alice", PASSWORD)
    await add_user(live_server, "bob", PASSWORD)
    wire, alice = await raw_client(live_server, "alice", "laptop")
    bob = SlixClient(live_server, "bob@localhost/phone")
    bob.xmpp.register_plugin("xep_0030")
    bob.xmpp.register_plugin("xep_0353")
    events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
    for kind in ("propose", "reject", "retract"):
        bob.xmpp.add_event_handler(f"jingle_message_{kind}", lambda msg, kind=kind: events.put_nowait((kind, msg)))
    assert await bob.start()
    try:
        bob.xmpp.send_presence()
        await bob.sync()

        # Ours proposes to the bare JID; slixmpp reads the proposal and proceeds.
        call, step = CallSession.outgoing("call-1", alice, JID.parse("bob@localhost"), 0.0)
        send(wire, step)
        async with asyncio.timeout(30):
            kind, message = await events.get()
        assert kind == "propose" and message["jingle_propose"]["id"] == "call-1"
        assert message["jingle_propose"]["descriptions"] == [(RTP, "audio")]
        bob.xmpp.plugin["xep_0353"].proceed(SlixJID(str(alice)), "call-1")
        sender, found = await next_jmi(wire)
        assert call.on_message(sender, found, 0.0) == [Proceeded(JID.parse("bob@localhost/phone"), None)]

        # slixmpp proposes; ours reads it, then rejects, and slixmpp reads the reject.
        bob.xmpp.plugin["xep_0353"].propose(SlixJID("alice@localhost"), "call-2", [(RTP, "audio")])
        sender, found = await next_jmi(wire)
        incoming, step = CallSession.incoming(alice, sender, found, 0.0)
        assert step == [Incoming(JID.parse("bob@localhost/phone"), ("audio",))]
        step = incoming.hang_up(Reason("busy"))
        assert step[-1] == Ended(Reason("busy"), False)
        send(wire, step)
        async with asyncio.timeout(30):
            kind, message = await events.get()
        assert kind == "reject" and message["jingle_reject"]["id"] == "call-2"
    finally:
        await bob.stop()
        wire.close()

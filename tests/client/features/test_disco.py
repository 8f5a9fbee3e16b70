"""What our client says it speaks (XEP-0030) and the caps hash in its presence (XEP-0115),
checked by our other device and by slixmpp, which computes the hash on its own."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from slixmpp import JID as SlixJID

from schnack.client import Client, XmppError
from schnack.server.app import Server
from schnack.xmpp import ns
from schnack.xmpp.payloads.caps import C, Caps, compute_ver
from schnack.xmpp.payloads.disco import INFO, DiscoInfo
from schnack.xmpp.xml import Element, element, qname

from ...integration.slix import SlixClient
from ..conftest import next_of, online

IM = {"urn:xmpp:receipts", "urn:xmpp:chat-markers:0", "http://jabber.org/protocol/chatstates",
      "urn:xmpp:message-correct:0"}


def query(to: str, node: str | None = None) -> Element:
    return element(qname(ns.CLIENT, "iq"), {"type": "get", "to": to}, children=[element(INFO, {"node": node})])


async def test_the_features_and_the_caps_in_presence(chat_server: Server, clients: list[Client]) -> None:
    desk = await online(chat_server, clients, "alice@localhost/desk")
    presences = desk.presence()
    phone = await online(chat_server, clients, "alice@localhost/phone")
    info = DiscoInfo.from_xml((await desk.iq(query(str(phone.jid))))[0])
    assert set(info.features) >= IM and ns.DISCO_INFO in info.features
    assert [(i.category, i.type) for i in info.identities] == [("client", "pc")]
    # PEP services send our contacts' OMEMO device list changes to those who announce +notify.
    assert {"eu.siacs.conversations.axolotl.devicelist+notify", "urn:xmpp:omemo:2:devices+notify"} <= set(
        info.features)
    # The phone's presence reaches the desk with the hash of that answer.
    update = await next_of(presences, lambda p: p.jid == phone.jid)
    caps = Caps.from_xml(update.element.find(C))  # type: ignore[arg-type]
    assert (caps.node, caps.hash, caps.ver) == ("https://schnack.im", "sha-1", compute_ver(info))
    by_node = DiscoInfo.from_xml((await desk.iq(query(str(phone.jid), caps.disco_node)))[0])
    assert (by_node.node, by_node.features) == (caps.disco_node, info.features)
    with pytest.raises(XmppError) as unknown:
        await desk.iq(query(str(phone.jid), "elsewhere"))
    assert unknown.value.condition == "item-not-found"


@pytest.fixture
async def slix(chat_server: Server) -> AsyncIterator[SlixClient]:
    peer = SlixClient(chat_server, "bob@localhost/slix")
    for plugin in ("xep_0030", "xep_0115"):
        peer.xmpp.register_plugin(plugin)
    assert await peer.start()
    try:
        yield peer
    finally:
        await peer.stop()


async def test_slixmpp_agrees_with_the_hash(chat_server: Server, clients: list[Client], slix: SlixClient) -> None:
    alice = await online(chat_server, clients, "alice@localhost/phone")
    reply = await slix.xmpp.plugin["xep_0030"].get_info(jid=SlixJID(str(alice.jid)), timeout=30)
    features = set(reply["disco_info"]["features"])
    assert features >= IM
    # slixmpp's own hash of our answer is the one our presence carries (the first test ties the two).
    ver = slix.xmpp.plugin["xep_0115"].generate_verstring(reply["disco_info"], "sha-1")
    assert ver == compute_ver(DiscoInfo.from_xml(reply["disco_info"].xml))

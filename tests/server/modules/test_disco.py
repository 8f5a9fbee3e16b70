"""XEP-0030 service discovery of domains and accounts, and the server's XEP-0115 caps."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from xml.etree.ElementTree import Element

import pytest

from schnack.server.app import Server
from schnack.server.c2s import C2SStream
from schnack.server.modules.disco import CAPS_NODE, Disco
from schnack.xmpp import ns
from schnack.xmpp.jid import JID
from schnack.xmpp.payloads.caps import Caps, compute_ver
from schnack.xmpp.payloads.disco import DiscoInfo, DiscoItem, DiscoItems, Identity

from ...harness import MemoryConnection, add_user, connect, make_config, running

INFO = f"{{{ns.DISCO_INFO}}}query"
ITEMS = f"{{{ns.DISCO_ITEMS}}}query"


def condition(el: Element) -> str:
    """The defined condition of an error stanza."""
    assert el.get("type") == "error", el
    error = el.find(f"{{{ns.CLIENT}}}error")
    assert error is not None
    return next(c.tag.rpartition("}")[2] for c in error if c.tag != f"{{{ns.STANZA_ERRORS}}}text")


def disco(payload: str, to: str | None = "localhost", node: str | None = None, kind: str = "get") -> str:
    """A disco IQ (payload is the disco#info or disco#items namespace)."""
    address = f" to='{to}'" if to else ""
    node_attr = f" node='{node}'" if node else ""
    return f"<iq type='{kind}' id='d'{address}><query xmlns='{payload}'{node_attr}/></iq>"


async def ask(server: Server, iq: str) -> Element:
    """Send ``iq`` as alice (created if needed); return the reply."""
    if await server.storage.accounts.get("localhost", "alice") is None:
        await add_user(server, "alice")
    client = await connect(server, "alice@localhost/phone")
    await client.send(iq)
    (reply,) = await client.expect()
    await client.close()
    return reply


def info_of(reply: Element) -> DiscoInfo:
    assert reply.get("type") == "result", reply
    query = reply.find(INFO)
    assert query is not None
    return DiscoInfo.from_xml(query)


async def test_domain_info(server: Server) -> None:
    reply = await ask(server, disco(ns.DISCO_INFO))
    assert reply.get("from") == "localhost" and reply.get("to") == "alice@localhost/phone"
    info = info_of(reply)
    assert info.identities == (Identity("server", "im", "schnack"),)
    for feature in (ns.DISCO_INFO, ns.DISCO_ITEMS, ns.PING, ns.VERSION, ns.VCARD):
        assert feature in info.features
    # Registration is off by default, and account-only features stay off the domain.
    assert ns.REGISTER not in info.features
    assert ns.PRIVATE not in info.features
    assert list(info.features) == sorted(set(info.features))
    assert info.node is None


async def test_features_follow_the_loaded_modules(tmp_path: Path) -> None:
    modules = {"enable": ["register"], "disable": ["version"]}
    async with running(tmp_path, modules=modules) as server:
        info = info_of(await ask(server, disco(ns.DISCO_INFO)))
    assert ns.REGISTER in info.features
    assert ns.VERSION not in info.features


async def test_caps_stream_feature_after_login(server: Server) -> None:
    conn = MemoryConnection()
    stream = C2SStream(server, conn)
    await stream.on_open(f"{{{ns.FRAMING}}}open", {"to": "localhost", "version": "1.0"}, None)
    before = conn.out[-1]
    assert before.find(f"{{{ns.CAPS}}}c") is None
    stream.username = "alice"
    await stream.on_open(f"{{{ns.FRAMING}}}open", {"to": "localhost", "version": "1.0"}, None)
    after = conn.out[-1]
    c = after.find(f"{{{ns.CAPS}}}c")
    assert c is not None
    caps = Caps.from_xml(c)
    assert caps.node == CAPS_NODE and caps.hash == "sha-1"
    # The announced hash is the XEP-0115 §5 hash of what the domain answers to disco#info.
    info = info_of(await ask(server, disco(ns.DISCO_INFO)))
    assert caps.ver == compute_ver(info)


async def test_caps_node_answers_like_the_domain(server: Server) -> None:
    module = server.modules["disco"]
    assert isinstance(module, Disco)
    caps = module.caps
    node = f"{CAPS_NODE}#{caps.ver}"
    reply = await ask(server, disco(ns.DISCO_INFO, node=node))
    info = info_of(reply)
    assert info.node == node
    assert compute_ver(info) == caps.ver


async def test_unknown_node_of_domain(server: Server) -> None:
    reply = await ask(server, disco(ns.DISCO_INFO, node="nope"))
    assert condition(reply) == "item-not-found"


async def test_unknown_items_node_of_domain(server: Server) -> None:
    reply = await ask(server, disco(ns.DISCO_ITEMS, node="nope"))
    assert condition(reply) == "item-not-found"


async def test_disco_set_is_refused(server: Server) -> None:
    reply = await ask(server, disco(ns.DISCO_INFO, kind="set"))
    assert condition(reply) == "feature-not-implemented"


@pytest.fixture
async def without_services(tmp_path: Path) -> AsyncIterator[Server]:
    """A server without the default modules that serve a subdomain (and list it), such as upload."""
    serving = sorted(set(Server(make_config(tmp_path)).services.values()))
    async with running(tmp_path, modules={"disable": serving}) as srv:
        yield srv


async def test_domain_items_come_from_the_hook(without_services: Server) -> None:
    server = without_services
    asked: list[str] = []

    async def rooms(host: str) -> list[tuple[str | JID, str | None]]:
        asked.append(host)
        return [(JID.parse(f"conference.{host}"), "Rooms"), (f"upload.{host}", None)]

    async def nothing(_host: str) -> None:
        return None

    async def with_node(host: str) -> list[DiscoItem]:
        return [DiscoItem(host, "Announcements", "news")]

    server.hooks.add("disco-items/host", rooms)
    server.hooks.add("disco-items/host", nothing)
    server.hooks.add("disco-items/host", with_node)
    reply = await ask(server, disco(ns.DISCO_ITEMS))
    assert reply.get("type") == "result"
    query = reply.find(ITEMS)
    assert query is not None
    assert DiscoItems.from_xml(query).items == (
        DiscoItem("conference.localhost", "Rooms"),
        DiscoItem("upload.localhost"),
        DiscoItem("localhost", "Announcements", "news"),
    )
    assert asked == ["localhost"]


async def test_domain_items_empty_without_services(without_services: Server) -> None:
    server = without_services
    reply = await ask(server, disco(ns.DISCO_ITEMS))
    query = reply.find(ITEMS)
    assert query is not None and len(query) == 0


async def test_own_account_info(server: Server) -> None:
    await add_user(server, "alice")
    client = await connect(server, "alice@localhost/phone")
    for to in (None, "alice@localhost"):
        await client.send(disco(ns.DISCO_INFO, to))
        (reply,) = await client.expect()
        info = info_of(reply)
        # Modules add their own identities after it (pubsub/pep, XEP-0163 §6.1).
        assert info.identities[0] == Identity("account", "registered")
        for feature in (ns.DISCO_INFO, ns.DISCO_ITEMS, ns.PING, ns.VCARD, ns.PRIVATE):
            assert feature in info.features
        assert ns.VERSION not in info.features


async def test_other_account_info(server: Server) -> None:
    await add_user(server, "bob")
    info = info_of(await ask(server, disco(ns.DISCO_INFO, "bob@localhost")))
    assert info.identities[0] == Identity("account", "registered")
    assert ns.VCARD in info.features


async def test_missing_account(server: Server) -> None:
    for payload in (ns.DISCO_INFO, ns.DISCO_ITEMS):
        reply = await ask(server, disco(payload, "nobody@localhost"))
        assert condition(reply) == "service-unavailable"


async def test_unknown_node_of_account(server: Server) -> None:
    for payload in (ns.DISCO_INFO, ns.DISCO_ITEMS):
        reply = await ask(server, disco(payload, None, node="x"))
        assert condition(reply) == "item-not-found"


async def test_account_items_come_from_the_hook(server: Server) -> None:
    calls: list[tuple[JID, JID | None]] = []

    async def nodes(owner: JID, requester: JID | None) -> list[DiscoItem]:
        calls.append((owner, requester))
        return [DiscoItem(str(owner), None, "urn:xmpp:avatar:metadata")]

    server.hooks.add("disco-items/account", nodes)
    await add_user(server, "bob")
    reply = await ask(server, disco(ns.DISCO_ITEMS, "bob@localhost"))
    query = reply.find(ITEMS)
    assert query is not None
    assert DiscoItems.from_xml(query).items == (DiscoItem("bob@localhost", None, "urn:xmpp:avatar:metadata"),)
    assert calls == [(JID.parse("bob@localhost"), JID.parse("alice@localhost/phone"))]

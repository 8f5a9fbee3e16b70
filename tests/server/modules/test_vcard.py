"""XEP-0054 vcard-temp: the owner sets, anyone reads, strangers get errors."""

from __future__ import annotations

from pathlib import Path
from xml.etree.ElementTree import Element

from schnack.server.app import Server
from schnack.xmpp import ns
from schnack.xmpp.xml import serialize

from ...harness import Client, add_user, connect, running

VCARD = f"{{{ns.VCARD}}}vCard"
CARD = (
    f"<vCard xmlns='{ns.VCARD}'><FN>Alice Liddell</FN><N><FAMILY>Liddell</FAMILY><GIVEN>Alice</GIVEN></N>"
    "<NICKNAME>alice</NICKNAME><PHOTO><TYPE>image/png</TYPE><BINVAL>iVBORw0KGgo=</BINVAL></PHOTO></vCard>"
)


def condition(el: Element) -> str:
    """The defined condition of an error stanza."""
    assert el.get("type") == "error", el
    error = el.find(f"{{{ns.CLIENT}}}error")
    assert error is not None
    return next(c.tag.rpartition("}")[2] for c in error if c.tag != f"{{{ns.STANZA_ERRORS}}}text")


async def alice(server: Server) -> Client:
    await add_user(server, "alice")
    return await connect(server, "alice@localhost/phone")


async def request(client: Client, iq: str) -> Element:
    await client.send(iq)
    (reply,) = await client.expect()
    return reply


def get(to: str | None = None) -> str:
    """A vCard request, to ``to`` or (without it) for one's own."""
    address = f" to='{to}'" if to else ""
    return f"<iq type='get' id='g'{address}><vCard xmlns='{ns.VCARD}'/></iq>"


def card_of(reply: Element) -> Element:
    assert reply.get("type") == "result", serialize(reply)
    card = reply.find(VCARD)
    assert card is not None
    return card


async def test_own_vcard_is_empty_at_first(server: Server) -> None:
    client = await alice(server)
    card = card_of(await request(client, get()))
    assert len(card) == 0


async def test_set_then_get(server: Server) -> None:
    client = await alice(server)
    reply = await request(client, f"<iq type='set' id='v2'>{CARD}</iq>")
    assert reply.get("type") == "result" and len(reply) == 0
    card = card_of(await request(client, get()))
    assert card.findtext(f"{{{ns.VCARD}}}FN") == "Alice Liddell"
    assert card.findtext(f"{{{ns.VCARD}}}PHOTO/{{{ns.VCARD}}}BINVAL") == "iVBORw0KGgo="
    assert serialize(card) == serialize(card_of(await request(client, get("alice@localhost"))))


async def test_set_addressed_to_own_bare_jid(server: Server) -> None:
    client = await alice(server)
    reply = await request(client, f"<iq type='set' id='v2' to='alice@localhost'>{CARD}</iq>")
    assert reply.get("type") == "result"
    card = card_of(await request(client, get()))
    assert card.findtext(f"{{{ns.VCARD}}}NICKNAME") == "alice"


async def test_set_replaces_the_whole_card(server: Server) -> None:
    client = await alice(server)
    await request(client, f"<iq type='set' id='v1'>{CARD}</iq>")
    nickname_only = f"<vCard xmlns='{ns.VCARD}'><NICKNAME>al</NICKNAME></vCard>"
    await request(client, f"<iq type='set' id='v2'>{nickname_only}</iq>")
    card = card_of(await request(client, get()))
    assert [child.tag for child in card] == [f"{{{ns.VCARD}}}NICKNAME"]


async def test_read_another_users_vcard(server: Server) -> None:
    client = await alice(server)
    await request(client, f"<iq type='set' id='v1'>{CARD}</iq>")
    await add_user(server, "bob")
    bob = await connect(server, "bob@localhost/desk")
    reply = await request(bob, get("alice@localhost"))
    assert reply.get("from") == "alice@localhost"
    assert card_of(reply).findtext(f"{{{ns.VCARD}}}FN") == "Alice Liddell"
    # bob has no vCard: an existing account answers with an empty one.
    empty = card_of(await request(client, get("bob@localhost")))
    assert len(empty) == 0


async def test_vcard_of_missing_account(server: Server) -> None:
    client = await alice(server)
    reply = await request(client, get("nobody@localhost"))
    assert condition(reply) == "service-unavailable"


async def test_cannot_set_another_users_vcard(server: Server) -> None:
    client = await alice(server)
    await add_user(server, "bob")
    reply = await request(client, f"<iq type='set' id='v1' to='bob@localhost'>{CARD}</iq>")
    assert condition(reply) == "forbidden"
    bob = await connect(server, "bob@localhost/desk")
    card = card_of(await request(bob, get()))
    assert len(card) == 0


async def test_size_limit(tmp_path: Path) -> None:
    async with running(tmp_path, modules={"vcard": {"max_size": 1024}}) as server:
        client = await alice(server)
        big = f"<vCard xmlns='{ns.VCARD}'><PHOTO><BINVAL>{'A' * 1100}</BINVAL></PHOTO></vCard>"
        reply = await request(client, f"<iq type='set' id='v1'>{big}</iq>")
        assert condition(reply) == "not-acceptable"
        error = reply.find(f"{{{ns.CLIENT}}}error")
        assert error is not None
        assert "1024" in (error.findtext(f"{{{ns.STANZA_ERRORS}}}text") or "")
        small = f"<vCard xmlns='{ns.VCARD}'><PHOTO><BINVAL>{'A' * 900}</BINVAL></PHOTO></vCard>"
        assert (await request(client, f"<iq type='set' id='v2'>{small}</iq>")).get("type") == "result"


async def test_deleted_account_loses_its_vcard(server: Server) -> None:
    client = await alice(server)
    await request(client, f"<iq type='set' id='v1'>{CARD}</iq>")
    await server.hooks.fire_all("user-deleted", "localhost", "alice")
    card = card_of(await request(client, get()))
    assert len(card) == 0


async def test_vcard_feature_on_domain_and_account(server: Server) -> None:
    client = await alice(server)
    for to in ("localhost", "alice@localhost"):
        reply = await request(client, f"<iq type='get' id='d' to='{to}'><query xmlns='{ns.DISCO_INFO}'/></iq>")
        query = reply.find(f"{{{ns.DISCO_INFO}}}query")
        assert query is not None
        assert ns.VCARD in [f.get("var") for f in query.findall(f"{{{ns.DISCO_INFO}}}feature")]

"""XEP-0049 private XML storage: per account, per qualified name, owner only."""

from __future__ import annotations

from pathlib import Path
from xml.etree.ElementTree import Element

import pytest

from schnack.server.app import Server
from schnack.server.storage.base import NAME_BYTES
from schnack.xmpp import ns
from schnack.xmpp.xml import serialize

from ...harness import Client, add_user, connect, running

QUERY = f"{{{ns.PRIVATE}}}query"
BOOKMARKS = (
    "<storage xmlns='storage:bookmarks'>"
    "<conference name='Council' autojoin='true' jid='council@conference.localhost'>"
    "<nick>alice</nick></conference></storage>"
)
EMPTY_BOOKMARKS = "<storage xmlns='storage:bookmarks'/>"


def condition(el: Element) -> str:
    """The defined condition of an error stanza."""
    assert el.get("type") == "error", el
    error = el.find(f"{{{ns.CLIENT}}}error")
    assert error is not None
    return next(c.tag.rpartition("}")[2] for c in error if c.tag != f"{{{ns.STANZA_ERRORS}}}text")


async def alice(server: Server, resource: str = "phone") -> Client:
    if await server.storage.accounts.get("localhost", "alice") is None:
        await add_user(server, "alice")
    return await connect(server, f"alice@localhost/{resource}")


async def request(client: Client, kind: str, content: str, to: str | None = None) -> Element:
    """Send a private-storage IQ with ``content`` inside its query; return the reply."""
    address = f" to='{to}'" if to else ""
    await client.send(f"<iq type='{kind}' id='p'{address}><query xmlns='{ns.PRIVATE}'>{content}</query></iq>")
    (reply,) = await client.expect()
    return reply


def text(el: Element) -> str:
    """The text of an error stanza."""
    return el.findtext(f"{{{ns.CLIENT}}}error/{{{ns.STANZA_ERRORS}}}text") or ""


def sized(name: str, size: int) -> str:
    """An element ``<name xmlns='urn:example:name'>`` of ``size`` bytes as stored."""
    empty = f"<{name} xmlns='urn:example:{name}'></{name}>"
    return empty.replace("></", ">" + "x" * (size - len(empty)) + "</")


def stored(reply: Element) -> list[Element]:
    assert reply.get("type") == "result", serialize(reply)
    query = reply.find(QUERY)
    assert query is not None
    return list(query)


async def test_round_trip(server: Server) -> None:
    client = await alice(server)
    reply = await request(client, "set", BOOKMARKS)
    assert reply.get("type") == "result" and len(reply) == 0
    # Another session of the same account reads what the first stored.
    other = await alice(server, "desk")
    (storage,) = stored(await request(other, "get", EMPTY_BOOKMARKS))
    conference = storage.find("{storage:bookmarks}conference")
    assert conference is not None
    assert conference.get("jid") == "council@conference.localhost"
    assert conference.findtext("{storage:bookmarks}nick") == "alice"


async def test_get_of_nothing_returns_the_empty_element(server: Server) -> None:
    client = await alice(server)
    (el,) = stored(await request(client, "get", "<prefs xmlns='exodus:prefs'/>"))
    assert el.tag == "{exodus:prefs}prefs" and len(el) == 0 and not el.text


async def test_several_elements_in_one_set(server: Server) -> None:
    client = await alice(server)
    both = (
        "<prefs xmlns='exodus:prefs'><defaultnick>Hamlet</defaultnick></prefs>"
        "<roster xmlns='storage:rosternotes'><note jid='bob@localhost'>met</note></roster>"
    )
    assert (await request(client, "set", both, to="alice@localhost")).get("type") == "result"
    (prefs,) = stored(await request(client, "get", "<prefs xmlns='exodus:prefs'/>"))
    assert prefs.findtext("{exodus:prefs}defaultnick") == "Hamlet"
    (notes,) = stored(await request(client, "get", "<roster xmlns='storage:rosternotes'/>"))
    assert notes.findtext("{storage:rosternotes}note") == "met"


async def test_a_name_too_long_to_store_is_not_acceptable(server: Server) -> None:
    """A qualified name longer than storage keeps is refused for what it is, not as storage down
    (sending it again would not help); nothing of it is stored."""
    client = await alice(server)
    namespace = "urn:example:" + "n" * NAME_BYTES
    reply = await request(client, "set", f"<prefs xmlns='{namespace}'>kept?</prefs>")
    assert condition(reply) == "not-acceptable" and "too long" in text(reply), serialize(reply)
    assert await server.storage.maps.items("localhost", "alice", "private") == {}


async def test_a_set_refused_for_one_element_changes_nothing(server: Server) -> None:
    """RFC 6120 §8.3: an IQ set that gets an error changes nothing, so a set of several elements
    of which storage refuses one stores none of the others, nor removes what they replace."""
    client = await alice(server)
    await request(client, "set", BOOKMARKS)
    before = await server.storage.maps.items("localhost", "alice", "private")
    namespace = "urn:example:" + "n" * NAME_BYTES
    reply = await request(client, "set", f"<prefs xmlns='urn:example:prefs'>dark</prefs>{EMPTY_BOOKMARKS}"
                                         f"<prefs xmlns='{namespace}'>kept?</prefs>")
    assert condition(reply) == "not-acceptable" and "too long" in text(reply), serialize(reply)
    assert await server.storage.maps.items("localhost", "alice", "private") == before


async def test_set_replaces(server: Server) -> None:
    client = await alice(server)
    await request(client, "set", BOOKMARKS)
    await request(client, "set", EMPTY_BOOKMARKS)
    (storage,) = stored(await request(client, "get", EMPTY_BOOKMARKS))
    assert len(storage) == 0


@pytest.mark.parametrize(
    ("kind", "content", "expected"),
    [
        ("get", "", "not-acceptable"),
        ("set", "", "not-acceptable"),
        ("get", "<a xmlns='urn:a'/><b xmlns='urn:b'/>", "bad-request"),
        ("set", "<x/>", "not-acceptable"),
        ("set", "<x xmlns='jabber:client'/>", "not-acceptable"),
        ("set", "<x xmlns='jabber:server'/>", "not-acceptable"),
        ("get", "<x xmlns='jabber:client'/>", "not-acceptable"),
        ("set", "<ok xmlns='urn:ok'><v>1</v></ok><x xmlns=''/>", "not-acceptable"),
    ],
)
async def test_bad_requests(server: Server, kind: str, content: str, expected: str) -> None:
    client = await alice(server)
    assert condition(await request(client, kind, content)) == expected
    # A refused set stores nothing, not even its acceptable elements.
    (ok,) = stored(await request(client, "get", "<ok xmlns='urn:ok'/>"))
    assert len(ok) == 0


@pytest.mark.parametrize("kind", ["get", "set"])
async def test_other_accounts_are_forbidden(server: Server, kind: str) -> None:
    client = await alice(server)
    await add_user(server, "bob")
    assert condition(await request(client, kind, BOOKMARKS, to="bob@localhost")) == "forbidden"


async def test_deleted_account_loses_its_data(server: Server) -> None:
    client = await alice(server)
    await request(client, "set", BOOKMARKS)
    await server.hooks.fire_all("user-deleted", "localhost", "alice")
    (storage,) = stored(await request(client, "get", EMPTY_BOOKMARKS))
    assert len(storage) == 0


async def test_storage_per_account_is_bounded(tmp_path: Path) -> None:
    """RFC 6120 §8.3.3.11: an element too large is not acceptable; more than an account may keep
    is a resource constraint. Nothing of a refused set is stored."""
    limits = {"max_item_size": 1024, "max_size": 2048, "max_items": 3}
    async with running(tmp_path, modules={"private": limits}) as server:
        client = await alice(server)
        too_large = await request(client, "set", sized("a", 1025))
        assert condition(too_large) == "not-acceptable" and "1024 bytes" in text(too_large)
        assert (await request(client, "set", sized("a", 900) + sized("b", 900))).get("type") == "result"
        full = await request(client, "set", sized("c", 300))
        assert condition(full) == "resource-constraint" and "2048 bytes" in text(full)
        assert (await request(client, "set", sized("c", 100))).get("type") == "result"
        (c,) = stored(await request(client, "get", "<c xmlns='urn:example:c'/>"))
        assert len(serialize(c).encode()) == 100
        many = await request(client, "set", sized("d", 50))
        assert condition(many) == "resource-constraint" and "3 elements" in text(many)
        # Replacing with less, or with an empty element (which stores nothing), makes room.
        assert (await request(client, "set", sized("a", 100) + "<c xmlns='urn:example:c'/>")).get("type") == "result"
        assert (await request(client, "set", sized("d", 800))).get("type") == "result"


async def test_default_limits(server: Server) -> None:
    client = await alice(server)
    for name in "abcd":
        assert (await request(client, "set", sized(name, 250_000))).get("type") == "result"
    assert condition(await request(client, "set", sized("e", 250_000))) == "resource-constraint"

"""XEP-0363 upload service in memory: discovery, slot requests and their §5 errors, quota,
expiry of unused slots, account deletion, and the range and name rules of the HTTP side.

The HTTP side itself (PUT, GET, CORS, timeouts) runs on real sockets in
tests/integration/test_upload.py.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit
from xml.etree.ElementTree import Element

import pytest

from schnack.server.app import Server
from schnack.server.config import ConfigError
from schnack.server.modules.upload import STORE, Record, Upload, _range, _Unsatisfiable, safe_name
from schnack.xmpp import ns
from schnack.xmpp.payloads.disco import DiscoInfo, DiscoItem, DiscoItems, Identity
from schnack.xmpp.payloads.upload import NS, FileTooLarge, Retry, Slot, max_file_size
from schnack.xmpp.xml import serialize

from ...harness import Client, add_user, connect, make_config, running

SERVICE = "upload.localhost"
PUBLIC = "https://files.example.org/up"


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    options = {"public_url": PUBLIC, "max_file_size": 10_000, "quota": 25_000}
    async with running(tmp_path, domains=["localhost", "other.test"], modules={"upload": options}) as srv:
        yield srv


def module(server: Server) -> Upload:
    upload = server.modules["upload"]
    assert isinstance(upload, Upload)
    return upload


async def alice(server: Server, resource: str = "phone") -> Client:
    if await server.storage.accounts.get("localhost", "alice") is None:
        await add_user(server, "alice")
    return await connect(server, f"alice@localhost/{resource}")


def request(name: str = "photo.jpg", size: int = 1000, kind: str | None = "image/jpeg", to: str = SERVICE) -> str:
    content_type = f" content-type='{kind}'" if kind is not None else ""
    return (f"<iq type='get' id='s' to='{to}'><request xmlns='{NS}' filename='{name}' size='{size}'"
            f"{content_type}/></iq>")


async def ask(client: Client, iq: str) -> Element:
    await client.send(iq)
    (reply,) = await client.expect()
    return reply


def error_of(reply: Element) -> tuple[str, str, Element]:
    """(type, condition, error element) of an error reply."""
    assert reply.get("type") == "error", serialize(reply)
    error = reply.find(f"{{{ns.CLIENT}}}error")
    assert error is not None
    condition = next(c.tag.rpartition("}")[2] for c in error if c.tag.startswith(f"{{{ns.STANZA_ERRORS}}}")
                     and not c.tag.endswith("}text"))
    return error.get("type", ""), condition, error


def slot_of(reply: Element, service: str = SERVICE) -> Slot:
    assert reply.get("type") == "result", serialize(reply)
    assert reply.get("from") == service
    el = reply.find(f"{{{NS}}}slot")
    assert el is not None
    return Slot.from_xml(el)


async def test_domain_lists_the_service(server: Server) -> None:
    client = await alice(server)
    reply = await ask(client, f"<iq type='get' id='i' to='localhost'><query xmlns='{ns.DISCO_ITEMS}'/></iq>")
    query = reply.find(f"{{{ns.DISCO_ITEMS}}}query")
    assert query is not None
    assert DiscoItem(SERVICE, "HTTP File Upload") in DiscoItems.from_xml(query).items


async def test_service_info_announces_the_limit(server: Server) -> None:
    """§3: identity store/file, the feature, and max-file-size in the form."""
    client = await alice(server)
    reply = await ask(client, f"<iq type='get' id='i' to='{SERVICE}'><query xmlns='{ns.DISCO_INFO}'/></iq>")
    query = reply.find(f"{{{ns.DISCO_INFO}}}query")
    assert query is not None
    info = DiscoInfo.from_xml(query)
    assert Identity("store", "file", "HTTP File Upload") in info.identities
    assert NS in info.features
    assert [max_file_size(form) for form in info.forms] == [10_000]
    nodes = await ask(client, f"<iq type='get' id='n' to='{SERVICE}'><query xmlns='{ns.DISCO_INFO}' node='x'/></iq>")
    assert error_of(nodes)[1] == "item-not-found"


async def test_slot_urls_and_record(server: Server) -> None:
    """§4: PUT and GET URLs under the public URL; the PUT one signed with its expiry."""
    client = await alice(server)
    before = time.time()
    slot = slot_of(await ask(client, request("très cool.jpg", 1234)))
    assert slot.headers == ()
    put, get = urlsplit(slot.put), urlsplit(slot.get)
    assert slot.get.startswith(f"{PUBLIC}/localhost/")
    assert get.path.endswith("/tr%C3%A8s%20cool.jpg")
    assert (put.scheme, put.netloc, put.path) == (get.scheme, get.netloc, get.path)
    query = parse_qs(put.query)
    assert set(query) == {"e", "s"}
    assert before + 300 - 1 <= int(query["e"][0]) <= time.time() + 300
    slot_id = get.path.split("/")[-2]
    index = await server.storage.maps.get("localhost", "", STORE, slot_id)
    assert index is not None
    record = Record.from_json(index)
    assert (record.owner, record.name, record.size, record.type, record.stored) == (
        "alice", "très cool.jpg", 1234, "image/jpeg", None)
    assert await server.storage.maps.get("localhost", "alice", STORE, slot_id) is not None
    expected = module(server).sign("localhost", slot_id, "très cool.jpg", 1234, "image/jpeg", int(query["e"][0]))
    assert query["s"] == [expected]


async def test_each_slot_is_new(server: Server) -> None:
    client = await alice(server)
    first = slot_of(await ask(client, request(size=10)))
    second = slot_of(await ask(client, request(size=10)))
    assert first.get != second.get and first.put != second.put


async def test_file_too_large(server: Server) -> None:
    """§5, example 7: not-acceptable with the limit."""
    client = await alice(server)
    kind, condition, error = error_of(await ask(client, request(size=10_001)))
    assert (kind, condition) == ("modify", "not-acceptable")
    too_large = error.find(f"{{{NS}}}file-too-large")
    assert too_large is not None and FileTooLarge.from_xml(too_large) == FileTooLarge(10_000)


async def test_a_smaller_quota_is_the_limit(tmp_path: Path) -> None:
    """A file larger than the whole quota could never be stored: it is too large, not a wait."""
    options = {"public_url": PUBLIC, "max_file_size": 10_000, "quota": 4_000}
    async with running(tmp_path, modules={"upload": options}) as server:
        client = await alice(server)
        info = await ask(client, f"<iq type='get' id='i' to='{SERVICE}'><query xmlns='{ns.DISCO_INFO}'/></iq>")
        query = info.find(f"{{{ns.DISCO_INFO}}}query")
        assert query is not None
        assert [max_file_size(form) for form in DiscoInfo.from_xml(query).forms] == [4_000]
        kind, condition, error = error_of(await ask(client, request(size=4_001)))
        assert (kind, condition) == ("modify", "not-acceptable")
        too_large = error.find(f"{{{NS}}}file-too-large")
        assert too_large is not None and FileTooLarge.from_xml(too_large) == FileTooLarge(4_000)
        slot_of(await ask(client, request(size=4_000)))


@pytest.mark.parametrize(
    "name",
    ["../../etc/passwd", "a/b.jpg", "..", ".", "dir\\file.txt", "evil\u202egpj.exe", "x" * 256],
)
async def test_names_that_could_be_paths_are_refused(server: Server, name: str) -> None:
    client = await alice(server)
    assert error_of(await ask(client, request(name=name)))[:2] == ("modify", "bad-request")


@pytest.mark.parametrize(
    ("name", "in_url"),
    [
        (
            "\u0646\u0627\u0645\u0647\u200c\u06cc \u0645\u0646.pdf",
            "%D9%86%D8%A7%D9%85%D9%87%E2%80%8C%DB%8C%20%D9%85%D9%86.pdf",
        ),
        ("\u0915\u094d\u200d\u0937.txt", "%E0%A4%95%E0%A5%8D%E2%80%8D%E0%A4%B7.txt"),
        ("\U0001f469\u200d\U0001f4bb.png", "%F0%9F%91%A9%E2%80%8D%F0%9F%92%BB.png"),
    ],
)
async def test_names_with_joiners_get_a_slot(server: Server, name: str, in_url: str) -> None:
    """Persian and Indic words and emoji sequences hold zero-width (non-)joiners; only the
    characters that reorder how a name is shown are refused."""
    client = await alice(server)
    slot = slot_of(await ask(client, request(name=name)))
    assert slot.get.endswith(f"/{in_url}")


@pytest.mark.parametrize(
    "iq",
    [
        request(size=0),
        request(kind="not a type"),
        request(kind="text/html; charset"),
        f"<iq type='get' id='s' to='{SERVICE}'><request xmlns='{NS}' size='10'/></iq>",
        f"<iq type='get' id='s' to='{SERVICE}'><request xmlns='{NS}' filename='a' size='ten'/></iq>",
    ],
)
async def test_malformed_requests(server: Server, iq: str) -> None:
    client = await alice(server)
    assert error_of(await ask(client, iq))[1] == "bad-request"


async def test_quota_counts_files_and_open_slots(server: Server) -> None:
    """§5, example 8: resource-constraint with a retry stamp once the quota is taken."""
    client = await alice(server)
    for _ in range(2):
        slot_of(await ask(client, request(size=10_000)))
    kind, condition, error = error_of(await ask(client, request(size=5_001)))
    assert (kind, condition) == ("wait", "resource-constraint")
    retry = error.find(f"{{{NS}}}retry")
    assert retry is not None
    assert Retry.from_xml(retry).stamp.timestamp() > time.time()
    slot_of(await ask(client, request(size=5_000)))
    # Another account has its own quota.
    await add_user(server, "bob")
    bob = await connect(server, "bob@localhost/desk")
    slot_of(await ask(bob, request(size=10_000)))


async def test_unused_slots_expire_and_free_the_quota(server: Server) -> None:
    client = await alice(server)
    for _ in range(2):
        slot_of(await ask(client, request(size=10_000)))
    assert error_of(await ask(client, request(size=10_000)))[1] == "resource-constraint"
    assert await module(server).sweep(now=time.time() + 3600) == 0
    assert await server.storage.maps.items("localhost", "", STORE) == {}
    assert await server.storage.maps.items("localhost", "alice", STORE) == {}
    slot_of(await ask(client, request(size=10_000)))


async def test_only_accounts_of_the_domain(server: Server) -> None:
    await add_user(server, "carol", host="other.test")
    carol = await connect(server, "carol@other.test/desk")
    assert error_of(await ask(carol, request()))[1] == "not-allowed"
    slot = slot_of(await ask(carol, request(to="upload.other.test")), "upload.other.test")
    assert "/other.test/" in slot.get


async def test_other_addresses_and_methods(server: Server) -> None:
    client = await alice(server)
    assert error_of(await ask(client, request(to=f"someone@{SERVICE}")))[1] == "service-unavailable"
    set_iq = request().replace("type='get'", "type='set'")
    assert error_of(await ask(client, set_iq))[1] == "feature-not-implemented"
    ping = await ask(client, f"<iq type='get' id='p' to='{SERVICE}'><ping xmlns='{ns.PING}'/></iq>")
    assert error_of(ping)[1] == "service-unavailable"


async def test_deleted_account_loses_its_slots(server: Server) -> None:
    client = await alice(server)
    slot_of(await ask(client, request(size=10)))
    await add_user(server, "bob")
    bob = await connect(server, "bob@localhost/desk")
    slot_of(await ask(bob, request(size=10)))
    assert await server.delete_account("localhost", "alice")
    owners = {Record.from_json(data).owner for data in (await server.storage.maps.items("localhost", "", STORE)).values()}
    assert owners == {"bob"}


async def test_usage_and_purge_through_the_admin_events(server: Server) -> None:
    reply = await server.hooks.fire("admin/uploads", {"command": "uploads"})
    assert reply == {"ok": True, "usage": []}
    reply = await server.hooks.fire("admin/uploads", {"command": "uploads", "jid": "alice@localhost"})
    assert reply == {"ok": True, "usage": [{"jid": "alice@localhost", "files": 0, "bytes": 0}]}
    for bad in ({"jid": "nobody@elsewhere.test"}, {"jid": "@@"}, {"older_than_days": -1}, {"older_than_days": "x"},
                {"older_than_days": float("nan")}, {}):
        reply = await server.hooks.fire("admin/uploads-purge", {"command": "uploads-purge", **bad})
        assert reply["ok"] is False and reply["error"], bad


def test_default_url_uses_the_https_listener(tmp_path: Path) -> None:
    config = make_config(tmp_path, listen={"https": ["127.0.0.1:5999"]})
    server = Server(config)
    assert module(server).base_url("localhost") == "https://localhost:5999/upload"
    config = make_config(tmp_path, listen={"https": [], "http": ["127.0.0.1:5888"]}, modules={"upload": {"path": "/f"}})
    assert module(Server(config)).base_url("localhost") == "http://localhost:5888/f"


@pytest.mark.parametrize(
    ("options", "key"),
    [({"public_url": "ftp://x/"}, "public_url"), ({"public_url": "files"}, "public_url"),
     ({"path": "upload"}, "path"), ({"path": "/a/../b"}, "path"), ({"path": "/"}, "path"),
     ({"max_file_size": 0}, "max_file_size"), ({"stall_timeout": 0}, "stall_timeout")],
)
def test_bad_options(tmp_path: Path, options: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        Server(make_config(tmp_path, modules={"upload": options}))
    assert err.value.key == f"modules.upload.{key}"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None), ("bytes=0-99", (0, 100)), ("bytes=100-", (100, 900)), ("bytes=-100", (900, 100)),
        ("bytes=990-2000", (990, 10)), ("bytes=-5000", (0, 1000)), ("bytes=999-999", (999, 1)),
        # Not one well-formed byte range: ignored, the whole file is sent (RFC 9110 §14.2).
        ("bytes=0-1,5-6", None), ("items=0-1", None), ("bytes=5-1", None), ("bytes=-", None), ("bytes=a-b", None),
        ("bytes=\u0661-\u0662", None),  # digits, but not ASCII ones
    ],
)
def test_ranges(header: str | None, expected: tuple[int, int] | None) -> None:
    assert _range(header, 1000) == expected


@pytest.mark.parametrize("header", ["bytes=1000-", "bytes=5000-6000", "bytes=-0"])
def test_unsatisfiable_ranges(header: str) -> None:
    with pytest.raises(_Unsatisfiable):
        _range(header, 1000)


def test_safe_names() -> None:
    for name in ("photo.jpg", "très cool.jpg", "Voice message 2026-12-02.ogg", ".hidden", "a..b"):
        assert safe_name(name), name
    for name in ("", "..", "a/b", "a\\b", "a\x00b", "line\nbreak", "a\u202eb", "a\u2067b"):
        assert not safe_name(name), name
